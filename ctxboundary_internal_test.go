package eventbus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// cloneSlab deep-copies s and its block, so that one prefix of calls can
// be extended many ways; rec's contexts in s's block are remapped to the
// copy.
func cloneSlab(s *ctxSlab, rec []handedOut) (*ctxSlab, []handedOut) {
	ns := *s
	if b := s.block; b != nil {
		nb := &ctxBlock{pool: b.pool, marks: b.marks, ctxs: b.ctxs}
		if hs := b.handlers.Load(); hs != nil {
			nb.handlers.Store(hs) // find grows it by copy
		}
		if ex := b.exceptions.Load(); ex != nil {
			cp := append([]ctxException(nil), *ex...) // except writes in place
			nb.exceptions.Store(&cp)
		}
		nb.nexc.Store(b.nexc.Load())
		for g := range b.values {
			if vs := b.values[g].Load(); vs != nil {
				cp := *vs
				nb.values[g].Store(&cp)
			}
		}
		ns.block = nb
	}
	out := append([]handedOut(nil), rec...)
	for i := range out {
		if out[i].c.block() == s.block {
			out[i].c = &ns.block.ctxs[out[i].c.slot()]
		}
	}
	return &ns, out
}

// TestContextsAtBlockAndGroupBoundaries: from prefixes that end just
// before, at and after group and block boundaries, with a block handler
// list of 1, 255 and 256 entries, every call (event ID the same, next, a
// jump, back; attempts 1, 0, the word's limit and one past it; the same
// handler, a new one, an older one; values or none) followed by a call
// that quick may take or that is an exception must leave every context
// telling its own call.
func TestContextsAtBlockAndGroupBoundaries(t *testing.T) {
	p := &pool{}
	entries := make([]handlerEntry, ctxMaxHandlers+8)
	ref := func(i int) handlerRef {
		return handlerRef{entry: &entries[i], typ: EventType(i%7 + 1), index: int32(i % 5)}
	}
	type valueKey struct{}
	type call struct{ idMove, attempt, handler, values int }
	var calls, seconds []call
	for idMove := range 4 {
		for _, attempt := range []int{1, 0, ctxMaxAttempt, ctxMaxAttempt + 1} {
			for handler := range 3 {
				for values := range 2 {
					calls = append(calls, call{idMove, attempt, handler, values})
					if idMove != 2 && attempt != 0 && attempt != ctxMaxAttempt && handler < 2 && values == 0 {
						seconds = append(seconds, call{idMove, attempt, handler, values})
					}
				}
			}
		}
	}
	for _, nh := range []int{1, ctxMaxHandlers - 1, ctxMaxHandlers} {
		for _, pos := range []int{1, ctxGroup - 1, ctxGroup, ctxGroup + 1, ctxMaxHandlers, ctxBlockSize - 1, ctxBlockSize} {
			if pos < nh {
				continue
			}
			var s ctxSlab
			var prefix []handedOut
			id := uint64(1000)
			for i := range pos {
				r := ref(0)
				if i < nh {
					r = ref(i)
				}
				id += uint64(i % 2)
				c := handOut(&s, p, r, id, 1, nil)
				prefix = append(prefix, handedOut{c: c, id: id, attempt: 1, ref: r})
			}
			for _, first := range calls {
				for _, second := range seconds {
					cs, rec := cloneSlab(&s, prefix)
					id, h := id, 0
					for k, cl := range []call{first, second} {
						id += []uint64{0, 1, 2, ^uint64(0)}[cl.idMove]
						h = []int{h, ctxMaxHandlers + k, nh - 1}[cl.handler]
						var v context.Context
						if cl.values == 1 {
							v = context.WithValue(context.Background(), valueKey{}, k)
						}
						c := handOut(cs, p, ref(h), id, cl.attempt, v)
						rec = append(rec, handedOut{c: c, id: id, attempt: cl.attempt, ref: ref(h), values: v})
					}
					for _, j := range []int{pos / ctxGroup * ctxGroup, pos - 1, pos, pos + 1} {
						if err := checkHandedOut(rec[j]); err != nil {
							t.Fatalf("%d handlers, %d calls, then %+v %+v: context %d: %v", nh, pos, first, second, j, err)
						}
					}
				}
			}
		}
	}
}

// TestNewestContextsReadWhileHandingOut: readers read the context handed
// out last (its neighbours are being written, its exceptions list grown)
// while the worker goes on, across blocks. Run with -race.
func TestNewestContextsReadWhileHandingOut(t *testing.T) {
	p := &pool{}
	entries := make([]handlerEntry, ctxMaxHandlers+100)
	type valueKey struct{}
	var latest atomic.Pointer[handedOut]
	var stop atomic.Bool
	var readers sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		readers.Go(func() {
			for !stop.Load() {
				if h := latest.Load(); h != nil {
					if err := checkHandedOut(*h); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	var s ctxSlab
	rng := rand.New(rand.NewPCG(3, 5))
	id, handler := uint64(1), 0
	for i := range 10 * ctxBlockSize {
		switch r := rng.IntN(100); {
		case r < 55:
			id++
		case r < 75:
		case r < 90:
			id += uint64(rng.IntN(100)) + 2
		default:
			id -= uint64(rng.IntN(100))
		}
		if rng.IntN(8) == 0 {
			handler = rng.IntN(len(entries))
		}
		attempt := 1
		if rng.IntN(6) == 0 {
			attempt = []int{0, 2, ctxMaxAttempt, ctxMaxAttempt + 1, -3}[rng.IntN(5)]
		}
		var values context.Context
		if rng.IntN(5) == 0 {
			values = context.WithValue(context.Background(), valueKey{}, i)
		}
		ref := handlerRef{entry: &entries[handler], typ: EventType(handler%9 + 1), index: int32(handler % 4)}
		c := handOut(&s, p, ref, id, attempt, values)
		latest.Store(&handedOut{c: c, id: id, attempt: attempt, ref: ref, values: values})
		c.markReturned()
		if rng.IntN(500) == 0 {
			s.release()
		}
	}
	stop.Store(true)
	readers.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(fmt.Errorf("while handing out: %w", err))
	}
}
