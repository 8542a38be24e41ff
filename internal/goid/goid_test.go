package goid

import (
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestGetDiffersPerGoroutine checks that ids are non-zero, stable within a
// goroutine and different across goroutines.
func TestGetDiffersPerGoroutine(t *testing.T) {
	mine := Get()
	if mine == 0 || Get() != mine {
		t.Fatalf("id %d not stable or zero", mine)
	}
	ids := make([]int64, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i] = Get() })
	}
	wg.Wait()
	seen := map[int64]bool{mine: true}
	for _, id := range ids {
		if id == 0 || seen[id] {
			t.Fatalf("id %d zero or repeated in %v (main %d)", id, ids, mine)
		}
		seen[id] = true
	}
}
