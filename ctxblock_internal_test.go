package eventbus

import (
	"testing"
	"unsafe"
)

// TestCtxBlockFitsItsSizeClass pins the layout ctxBlockSize was chosen for:
// a block just under 8 KiB, so that the allocator's size classes waste
// nothing, and pointer-free 16-byte contexts.
func TestCtxBlockFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(callCtx{}); got != 16 {
		t.Errorf("callCtx is %d bytes, want 16: change ctxBlockSize to fit 8 KiB", got)
	}
	if got := unsafe.Sizeof(ctxBlock{}); got > 8192 || got+unsafe.Sizeof(callCtx{}) <= 8192 {
		t.Errorf("ctxBlock is %d bytes, want the most contexts that fit in 8192", got)
	}
	if got := unsafe.Sizeof(ctxSlab{}); got != 128 {
		t.Errorf("ctxSlab is %d bytes, want 128: its fields and padding keep workers' slabs a cache line apart", got)
	}
	if ctxBlockSize >= 1<<15 {
		t.Errorf("ctxBlockSize %d does not fit callCtx.word's 15 slot bits", ctxBlockSize)
	}
}

// TestStdContextLayoutKnown checks that detachValues can see through the
// context package's own contexts in this Go release: if their layout
// changes, follow-on events fall back to keeping their parent's context.
func TestStdContextLayoutKnown(t *testing.T) {
	if !stdCtx.ok {
		t.Fatalf("context package layout not recognised: %+v", stdCtx)
	}
}
