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

// DecodeEventsInSlab decodes every data as a replay does: the events'
// memory taken from one slab.
func DecodeEventsInSlab(b *Bus, t []EventType, data [][]byte) ([]Event, error) {
	var sl slab
	out := make([]Event, len(data))
	for i := range data {
		ev, err := b.decodeEvent(t[i], data[i], &sl)
		if err != nil {
			return nil, err
		}
		out[i] = ev
	}
	return out, nil
}

// SetBeforeCall makes f run on the worker at the moment it commits to a
// handler call, for buses with a HandlerTimeout. Call it before Start.
func SetBeforeCall(b *Bus, f func()) { b.beforeCall = f }
