// Package benchmarks compares github.com/imbus/eventbus with other ways of
// running events asynchronously in one process: a hand-written channel
// baseline, kelindar/event, asaskevich/EventBus, watermill's GoChannel and
// the goroutine pools ants and pond used as executors.
//
// It is its own module so that the root module does not depend on any peer.
// Everything lives in the test files; see README.md for what is measured
// and how to run it.
package benchmarks
