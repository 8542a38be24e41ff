package goid

import (
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestGetDiffersPerGoroutine checks that identities are non-zero, stable
// within a goroutine and different across goroutines running at once.
func TestGetDiffersPerGoroutine(t *testing.T) {
	mine := Get()
	if mine == 0 || Get() != mine {
		t.Fatalf("id %d not stable or zero", mine)
	}
	// The eight goroutines stay alive until all have read theirs: one that
	// has exited may pass its identity on to the next.
	ids := make([]int64, 8)
	var recorded, exited sync.WaitGroup
	release := make(chan struct{})
	for i := range ids {
		recorded.Add(1)
		exited.Go(func() {
			ids[i] = Get()
			recorded.Done()
			<-release
		})
	}
	recorded.Wait()
	close(release)
	exited.Wait()
	seen := map[int64]bool{mine: true}
	for _, id := range ids {
		if id == 0 || seen[id] {
			t.Fatalf("id %d zero or repeated in %v (main %d)", id, ids, mine)
		}
		seen[id] = true
	}
}

// TestGetSurvivesStackGrowthAndRescheduling: a goroutine's identity must not
// change when its stack is copied to a larger one or when it blocks and
// resumes, possibly on another thread.
func TestGetSurvivesStackGrowthAndRescheduling(t *testing.T) {
	before := Get()
	if got := deep(2000); got != before {
		t.Fatalf("identity %d after the stack grew, %d before", got, before)
	}
	ch := make(chan int64)
	for range 100 {
		go func() { ch <- 0 }()
		<-ch
		if got := Get(); got != before {
			t.Fatalf("identity %d after blocking, %d before", got, before)
		}
	}
}

// deep recurses n levels with a frame big enough to grow the stack, then
// reads the identity.
func deep(n int) int64 {
	var pad [128]byte
	if n == 0 {
		return Get() + int64(pad[0])
	}
	pad[n%128] = 0
	return deep(n - 1)
}

func BenchmarkGet(b *testing.B) {
	for range b.N {
		if Get() == 0 {
			b.Fatal("unreadable")
		}
	}
}
