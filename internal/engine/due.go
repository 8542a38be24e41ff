package engine

import "time"

// dueHeap is a min-heap of retry times, one entry per parked key waiting.
// It is touched only by its worker and only when something failed.
type dueHeap []dueEntry

type dueEntry struct {
	at  time.Time
	key uint64
}

func (h *dueHeap) push(at time.Time, key uint64) {
	*h = append(*h, dueEntry{at, key})
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].at.Before(s[p].at) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *dueHeap) pop() uint64 {
	s := *h
	key := s[0].key
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].at.Before(s[m].at) {
			m = l
		}
		if r < len(s) && s[r].at.Before(s[m].at) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return key
}
