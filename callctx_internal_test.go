package eventbus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// handedOut is a context as a slab handed it out, with what it was made
// for.
type handedOut struct {
	c       *callCtx
	id      uint64
	attempt int
	ref     handlerRef
	values  context.Context
}

// handOut gets the next context from s as the dispatcher does: quick when
// the producer passed no values, nextSlow otherwise or when quick cannot.
func handOut(s *ctxSlab, p *pool, ref handlerRef, id uint64, attempt int, values context.Context) *callCtx {
	var c *callCtx
	if values == nil {
		c = s.quick(ref.entry, id, attempt)
	}
	if c == nil {
		c = s.nextSlow(p, ref, id, attempt, values)
	}
	return c
}

// checkHandedOut reports the first way in which a kept context no longer
// tells the call it was made for, or nil.
func checkHandedOut(h handedOut) error {
	if id, attempt := h.c.call(); id != h.id || attempt != h.attempt {
		return fmt.Errorf("slot %d: EventID %d attempt %d, want %d and %d", h.c.slot(), id, attempt, h.id, h.attempt)
	}
	if got := *h.c.ref(); got != h.ref {
		return fmt.Errorf("slot %d: handler %+v, want %+v", h.c.slot(), got, h.ref)
	}
	if got := h.c.values(); got != h.values {
		return fmt.Errorf("slot %d: values %v, want %v", h.c.slot(), got, h.values)
	}
	return nil
}

// TestContextsKeepTheirCallInfoWhateverTheSequence hands out contexts for a
// random sequence of calls, mostly the next unit's or the same unit's
// next handler, with jumps of the event ID (forward and back), retries,
// attempts too large for a context's word, producers' values, and more
// handlers than a block lists, while other goroutines read the contexts
// already handed out (run with -race). Every context must tell its own
// event ID, attempt, handler and values, during the run and after it,
// across blocks.
func TestContextsKeepTheirCallInfoWhateverTheSequence(t *testing.T) {
	const calls = 5 * ctxBlockSize
	p := &pool{}
	var s ctxSlab
	entries := make([]handlerEntry, 2*ctxMaxHandlers)
	rng := rand.New(rand.NewPCG(7, 11))
	type valueKey struct{}

	out := make(chan handedOut, 64)
	var readers sync.WaitGroup
	for range 3 {
		readers.Go(func() {
			failed := false
			for h := range out {
				if err := checkHandedOut(h); err != nil && !failed {
					t.Error("while handing out:", err)
					failed = true
				}
			}
		})
	}
	all := make([]handedOut, 0, calls)
	id, handler := uint64(1), 0
	for i := range calls {
		switch r := rng.IntN(100); {
		case r < 60:
			id++ // the next unit
		case r < 80: // the same unit's next handler, or a retry
		case r < 85:
			id += 2 + uint64(rng.IntN(1<<20)) // a new block of IDs
		case r < 87:
			id = rng.Uint64() // a durable event's own ID, maybe lower
		}
		// Another handler now and then; often for a while, so that a block
		// sees more handlers than its list holds.
		if rng.IntN(10) == 0 || (i/ctxBlockSize == 2 && rng.IntN(2) == 0) {
			handler = rng.IntN(len(entries))
		}
		attempt := 1
		switch r := rng.IntN(200); {
		case r < 10:
			attempt = 2 + rng.IntN(3)
		case r < 12:
			attempt = ctxMaxAttempt - 1 + rng.IntN(3) // around the word's limit
		case r < 13:
			attempt = 1 << 20
		}
		var values context.Context
		if rng.IntN(40) == 0 {
			values = context.WithValue(context.Background(), valueKey{}, i)
		}
		ref := handlerRef{entry: &entries[handler], typ: EventType(handler%200 + 1), index: int32(handler % 3)}
		c := handOut(&s, p, ref, id, attempt, values)
		if !c.running() {
			t.Fatalf("call %d: a fresh context does not count as running", i)
		}
		c.markReturned()
		h := handedOut{c: c, id: id, attempt: attempt, ref: ref, values: values}
		all = append(all, h)
		out <- h
	}
	close(out)
	readers.Wait()
	blocks := map[*ctxBlock]bool{}
	for _, h := range all {
		if err := checkHandedOut(h); err != nil {
			t.Fatal(err)
		}
		if h.c.running() {
			t.Fatalf("slot %d: a returned call's context counts as running", h.c.slot())
		}
		blocks[h.c.block()] = true
	}
	if len(blocks) < 5 {
		t.Fatalf("%d calls used %d blocks, want at least 5", calls, len(blocks))
	}
}

// TestContextBlockKeepsNoValuesOnceIdle: a worker that goes idle drops a
// block whose contexts hold producers' values, and keeps one that holds
// none for its next calls.
func TestContextBlockKeepsNoValuesOnceIdle(t *testing.T) {
	p := &pool{}
	var s ctxSlab
	ref := handlerRef{entry: &handlerEntry{}}
	first := handOut(&s, p, ref, 1, 1, nil)
	s.release()
	if s.block != first.block() {
		t.Fatal("a block without values was dropped at idle")
	}
	type valueKey struct{}
	kept := handOut(&s, p, ref, 2, 1, context.WithValue(context.Background(), valueKey{}, 1))
	s.release()
	if s.block != nil {
		t.Fatal("a block holding a producer's values was kept at idle")
	}
	if kept.Value(valueKey{}) != 1 {
		t.Fatal("a kept context lost its values when its block was dropped")
	}
	if next := handOut(&s, p, ref, 3, 1, nil); next.block() == kept.block() {
		t.Fatal("the next call reused the dropped block")
	}
}
