// Package natsbridge runs the handlers of an eventbus.Bus across
// processes and machines, through a NATS JetStream stream.
//
// On every node, an AddEvent of a bridged type is published to the stream
// (subject <Stream>.<type>.<partition>, the partition being the event's
// eventbus StableKey modulo Config.Partitions) instead of going to the
// local pool, and returns once JetStream has stored it. Each partition is
// consumed by exactly one live node at a time, which adds its events to
// its own bus in stream order (eventbus.Bus.Deliver) and acks each one
// when its chain and subscribers have finished. Nodes share the
// partitions through leases in a JetStream key-value bucket: a node that
// joins takes its share, a node that leaves hands its share back, and the
// share of a node that dies is taken over after Config.LeaseTTL, its
// unacked events redelivered in order. Delivery is at-least-once; per-key
// order holds across nodes.
//
//	bus, _ := eventbus.New(eventbus.WithCodec(eventbus.EventOnSend, codec))
//	// Register the handlers of every bridged type, on every node.
//	br, err := natsbridge.New(bus, js, natsbridge.Config{Stream: "EVENTS",
//		Types: []eventbus.EventType{eventbus.EventOnSend, eventbus.EventChannelDistribute}})
//	err = bus.Start()
//	err = br.Start(ctx) // after bus.Start
//	...
//	err = br.Close(ctx) // before bus.Close
//	err = bus.Close(ctx)
//
// See README.md for the design, the guarantees and measured figures.
package natsbridge
