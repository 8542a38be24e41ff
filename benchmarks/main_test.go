package benchmarks

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// ants starts a default pool when imported; its scavenger and clock
		// goroutines run for the life of the process, by design.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		// kelindar/event leaks its consumers by design: one parks in Listen
		// on a sync.Cond that only the dispatcher's ticker broadcasts, and
		// neither Unsubscribe nor Close wakes it. The top of its stack is
		// sync's, hence IgnoreAnyFunction.
		goleak.IgnoreAnyFunction("github.com/kelindar/event.(*consumer[...]).Listen"),
		// TestReemitFromHandler leaves asaskevich/EventBus deadlocked on
		// purpose, inside these two functions (blocked on a sync.Mutex):
		// nothing can unblock them.
		goleak.IgnoreAnyFunction("github.com/imbus/eventbus/benchmarks.asaskevichPublishInSyncHandler"),
		goleak.IgnoreAnyFunction("github.com/imbus/eventbus/benchmarks.asaskevichRepublishInTxHandler"),
	)
}
