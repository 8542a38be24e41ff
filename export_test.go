package eventbus

// ShardOf returns the pool and shard ev maps to, so that tests can tell
// keys that share a shard (and so may wait behind each other) apart.
func ShardOf(b *Bus, ev Event) (Pool, int) {
	p, _, err := b.route(ev)
	if err != nil {
		panic(err)
	}
	key, err := p.key(ev)
	if err != nil {
		panic(err)
	}
	return p.kind, p.eng.ShardIndex(key)
}

// SetBeforeCall makes f run on the worker at the moment it commits to a
// handler call, for buses with a HandlerTimeout. Call it before Start.
func SetBeforeCall(b *Bus, f func()) { b.beforeCall = f }
