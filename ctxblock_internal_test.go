package eventbus

import (
	"testing"
	"unsafe"
)

// TestCtxBlockFitsItsSizeClass pins the layout ctxBlockSize was chosen for:
// a block that, with the allocator's 8-byte header of an object holding
// pointers, fills the 8 KiB size class, and pointer-free 4-byte contexts.
func TestCtxBlockFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(callCtx{}); got != 4 {
		t.Errorf("callCtx is %d bytes, want 4: change ctxBlockSize to fit 8 KiB", got)
	}
	if got := unsafe.Sizeof(ctxBlock{}); got != 8192-8 {
		t.Errorf("ctxBlock is %d bytes, want 8184 (8 KiB less the allocator's header)", got)
	}
	if got := unsafe.Sizeof(ctxSlab{}); got != 128 {
		t.Errorf("ctxSlab is %d bytes, want 128: its fields and padding keep workers' slabs a cache line apart", got)
	}
	if ctxBlockSize >= 1<<ctxSlotBits || ctxBlockSize > ctxGroups*ctxGroup {
		t.Errorf("ctxBlockSize %d does not fit callCtx.word's %d slot bits or %d groups", ctxBlockSize, ctxSlotBits, ctxGroups)
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
