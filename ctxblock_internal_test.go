package eventbus

import (
	"testing"
	"unsafe"
)

// TestCtxBlockFitsItsSizeClass pins the layout ctxBlockSize was chosen for:
// a block just under 8 KiB, so that the allocator's size classes waste
// nothing, and pointer-free 32-byte contexts.
func TestCtxBlockFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(callCtx{}); got != 32 {
		t.Errorf("callCtx is %d bytes, want 32: change ctxBlockSize to fit 8 KiB", got)
	}
	if got := unsafe.Sizeof(ctxBlock{}); got > 8192 || got+unsafe.Sizeof(callCtx{}) <= 8192 {
		t.Errorf("ctxBlock is %d bytes, want the most contexts that fit in 8192", got)
	}
}
