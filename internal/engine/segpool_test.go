package engine

import (
	"sync"
	"testing"
)

// TestSegPoolNeverHandsOutASegmentTwice hammers the free list from both
// sides at once, as producers (get, under the lock) and workers (put,
// lock-free) do: no segment may be held by two goroutines at a time, and
// once everything is back the pool counts every segment, and a trim leaves
// what New made.
func TestSegPoolNeverHandsOutASegmentTwice(t *testing.T) {
	const goroutines, rounds, hold = 8, 2000, 3
	var p segPool[int]
	p.fill(16)
	var owners sync.Map // *segment[int] -> goroutine holding it
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var held [hold]*segment[int]
			for range rounds {
				for i := range held {
					s := p.get()
					if s.n != 0 || s.next != nil {
						t.Errorf("segment handed out dirty: n=%d next=%p", s.n, s.next)
					}
					if prev, dup := owners.LoadOrStore(s, g); dup {
						t.Errorf("segment %p held by goroutines %v and %d at once", s, prev, g)
					}
					s.items[0].Event, s.n = g, 1
					held[i] = s
				}
				// Give back as a worker does: a list of several at once.
				for i := range held {
					owners.Delete(held[i])
					if i+1 < hold {
						held[i].next = held[i+1]
					}
				}
				p.put(held[0], held[hold-1], hold)
			}
		})
	}
	wg.Wait()
	total := int64(0)
	owners.Range(func(any, any) bool { total++; return true })
	if total != 0 {
		t.Fatalf("%d segments still marked held", total)
	}
	if n := p.count(); n < 16 {
		t.Fatalf("pool counts %d free segments, fewer than the 16 it was filled with", n)
	}
	p.trim()
	if n := p.count(); n != 16 {
		t.Fatalf("after trim the pool counts %d segments, want 16", n)
	}
	count := 0
	for s := p.free; s != nil; s = s.next {
		count++
	}
	if count != 16 || p.incoming.Load() != nil {
		t.Fatalf("after trim: %d segments on the free list (want 16), incoming empty: %v", count, p.incoming.Load() == nil)
	}
}
