package natsbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Ownership of partitions (see README "Who consumes a partition").
//
// Each partition has a durable pull consumer and a lease: the key
// "p.<n>" in a memory KV bucket "<Stream>_bridge" whose TTL is LeaseTTL.
// The owner renews it every LeaseTTL/3 with a compare-and-set on its
// revision, so at most one node holds it; a node that dies loses it when
// the key expires. Live nodes announce themselves with "n.<node>" keys in
// the same bucket, and every node computes the same owner for each
// partition by rendezvous hashing over the live nodes: a node takes the
// free partitions that hash to it and hands back, after draining them,
// those that hash to a newer node.
//
// The lease value says how its last owner left: "free" (everything it was
// given is acked) or "dirty" (it may have left events unacked: it died,
// lost its lease, hit a deadline, or the consumer delivered events that
// never reached it). A key that expired counts as dirty.
// A node that takes a dirty partition whose consumer has unacked events
// rewinds the consumer to its ack floor (ResetConsumer) before fetching,
// so those events come again, in stream order, ahead of any later one.
const (
	leaseFree  = "free"
	leaseDirty = "dirty"
)

// coordinator owns the leases and the fetchers of one bridge. Its run
// goroutine is the only one that takes, renews and releases leases.
type coordinator struct {
	br *Bridge
	kv jetstream.KeyValue
	// runs holds, per partition taken over with unfinished events, the
	// event being redelivered and its count of unfinished deliveries
	// (see partition.careful). Set once: fetchers read it.
	runs jetstream.KeyValue
	// carefulSlot is held while a careful redelivery runs (see
	// partition.careful): one at a time on the node.
	carefulSlot chan struct{}
	ctx         context.Context
	cancel      context.CancelFunc
	kick        chan struct{}
	period      time.Duration
	// connStatus receives the connection's CLOSED status.
	connStatus chan nats.Status

	closing atomic.Bool
	left    int // events unfinished at an aborted Close; set by run before it returns

	mu    sync.Mutex // guards owned for readers other than run
	owned map[int]*partition

	lastMaintain time.Time
	members      []string
}

func newCoordinator(ctx context.Context, br *Bridge) (*coordinator, error) {
	if err := br.ensureStream(ctx); err != nil {
		return nil, err
	}
	kv, err := br.ensureBucket(ctx)
	if err != nil {
		return nil, err
	}
	runs, err := br.ensureRunsBucket(ctx)
	if err != nil {
		return nil, err
	}
	c := &coordinator{br: br, kv: kv, runs: runs, kick: make(chan struct{}, 1), carefulSlot: make(chan struct{}, 1),
		period: br.cfg.LeaseTTL / 3, owned: map[int]*partition{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	// Hear of the connection closing for good; a close before this is
	// seen by run's first check (the channel has a pending value then).
	nc := br.js.Conn()
	c.connStatus = nc.StatusChanged(nats.CLOSED)
	if nc.IsClosed() {
		nc.RemoveStatusListener(c.connStatus)
		c.cancel()
		return nil, fmt.Errorf("natsbridge: start: %w", nats.ErrConnectionClosed)
	}
	return c, nil
}

// ensureStream creates the stream, or checks it and adds our subjects
// when they are missing. An unchanged stream is not updated.
func (br *Bridge) ensureStream(ctx context.Context) error {
	name := br.cfg.Stream
	subject := name + ".*.*"
	parts := strconv.Itoa(br.cfg.Partitions)
	want := jetstream.StreamConfig{
		Name:        name,
		Description: "eventbus events (github.com/imbus/eventbus/bridge/nats)",
		Subjects:    []string{subject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Metadata:    map[string]string{"eventbus.partitions": parts},
	}
	if br.cfg.Retention == Limits {
		want.Retention, want.MaxAge, want.MaxBytes, want.Discard =
			jetstream.LimitsPolicy, br.cfg.MaxAge, br.cfg.MaxBytes, jetstream.DiscardNew
	}
	for attempt := 0; ; attempt++ {
		s, err := br.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = br.js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt == 0 {
				continue // another node made it first: check it
			}
			if err != nil {
				return fmt.Errorf("natsbridge: create stream %s: %w", name, err)
			}
			br.ackAll = want.Retention == jetstream.LimitsPolicy
			br.log.Info("natsbridge: stream created", "subjects", subject, "partitions", br.cfg.Partitions)
			return nil
		}
		if err != nil {
			return fmt.Errorf("natsbridge: stream %s: %w", name, err)
		}
		cfg := s.CachedInfo().Config
		// A work-queue stream requires an ack per message.
		br.ackAll = cfg.Retention == jetstream.LimitsPolicy
		if got, ok := cfg.Metadata["eventbus.partitions"]; ok && got != parts {
			return fmt.Errorf("%w: stream %s has %s partitions, Config.Partitions is %s", ErrPartitions, name, got, parts)
		}
		if slices.Contains(cfg.Subjects, subject) {
			return nil // unchanged: leave it alone
		}
		cfg.Subjects = append(cfg.Subjects, subject)
		if cfg.Metadata == nil {
			cfg.Metadata = map[string]string{}
		}
		cfg.Metadata["eventbus.partitions"] = parts
		if _, err := br.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("natsbridge: update stream %s (adding subjects %s): %w", name, subject, err)
		}
		br.log.Info("natsbridge: stream updated", "subjects", cfg.Subjects)
		return nil
	}
}

// ensureBucket opens or creates the lease bucket.
func (br *Bridge) ensureBucket(ctx context.Context) (jetstream.KeyValue, error) {
	return br.openBucket(ctx, "lease bucket", jetstream.KeyValueConfig{Bucket: br.cfg.Stream + "_bridge", History: 1,
		TTL: br.cfg.LeaseTTL, Storage: jetstream.FileStorage,
		Description: "eventbus bridge: partition leases and live nodes"})
}

// ensureRunsBucket opens or creates the bucket of unfinished-delivery
// counts. Unlike the leases, its keys do not expire: a count must outlive
// the node that wrote it and the lease TTL of the takeover after it.
func (br *Bridge) ensureRunsBucket(ctx context.Context) (jetstream.KeyValue, error) {
	return br.openBucket(ctx, "bucket", jetstream.KeyValueConfig{Bucket: br.cfg.Stream + "_bridge_unfinished", History: 1,
		Storage:     jetstream.FileStorage,
		Description: "eventbus bridge: deliveries that never finished, per partition taken over"})
}

// openBucket opens cfg's bucket, creating it with cfg if it does not exist
// (another node may create it at the same time); what names the bucket in
// the error.
func (br *Bridge) openBucket(ctx context.Context, what string, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := br.js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = br.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = br.js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsbridge: %s %s: %w", what, cfg.Bucket, err)
	}
	return kv, nil
}

// run is the coordinator's goroutine: it keeps leases alive, follows the
// live nodes and settles hand-overs, until Close is done or aborted.
func (c *coordinator) run() {
	t := time.NewTicker(c.period)
	defer t.Stop()
	nc := c.br.js.Conn()
	defer nc.RemoveStatusListener(c.connStatus)
	busClosing := c.br.bus.Closing()
	for {
		select {
		case <-c.ctx.Done():
			c.shutdown()
			return
		case <-c.connStatus:
			if nc.IsClosed() {
				c.br.log.Warn("natsbridge: connection closed: stopped consuming; unacked events go to the next owner")
				c.cancel()
				c.shutdown()
				return
			}
			continue
		case <-busClosing:
			busClosing = nil // as Close: drain, hand back, leave
			c.beginClose()
		case <-t.C:
		case <-c.kick:
		}
		if c.tick(c.ctx) {
			c.cancel()
			return
		}
	}
}

// poke wakes the coordinator (never blocks).
func (c *coordinator) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *coordinator) beginClose() {
	c.closing.Store(true)
	c.poke()
}

// abort cancels a Close in progress: fetchers stop at once, leases are
// left to expire. It returns once run has returned, with the number of
// events still unfinished.
func (c *coordinator) abort() int {
	c.cancel()
	<-c.br.stopped
	return c.left
}

func (c *coordinator) ownedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.owned)
}

// opCtx bounds one KV or API request.
func (c *coordinator) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(c.period, time.Second))
}

// tick renews, rebalances and settles. It returns true when Close has
// finished: every partition released and this node gone from the group.
func (c *coordinator) tick(ctx context.Context) bool {
	closing := c.closing.Load()
	if closing || time.Since(c.lastMaintain) >= c.period*9/10 {
		c.lastMaintain = time.Now()
		c.renew(ctx)
		if !closing {
			c.announce(ctx)
		}
	}
	// Which partitions should be ours.
	want := map[int]bool{}
	if !closing {
		if m, err := c.liveNodes(ctx); err == nil {
			c.members = m
		} else {
			c.br.log.Warn("natsbridge: listing live nodes failed", "err", err)
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
				// The bucket is gone (deleted, or a server that lost it):
				// make it again; leases start over, as after expiry.
				octx, cancel := c.opCtx(ctx)
				if kv, err := c.br.ensureBucket(octx); err == nil {
					c.kv = kv
				}
				cancel()
			}
		}
		members := c.members
		if !slices.Contains(members, c.br.node) {
			members = append(slices.Clone(members), c.br.node)
		}
		for p := range c.br.cfg.Partitions {
			if owner(members, p) == c.br.node {
				want[p] = true
			}
		}
	}
	// Hand back what is no longer ours, once drained; and what is ours
	// but whose fetcher gave up (it is taken again, dirty, next tick).
	for _, id := range slices.Sorted(maps.Keys(c.owned)) {
		p := c.owned[id]
		if want[id] && !p.exited() {
			continue
		}
		p.stopFetching()
		if p.drained() {
			c.release(ctx, p)
		}
	}
	// Take what is ours and free, all at once: a takeover of a dead
	// node's share costs a few round trips per partition, which on a
	// loaded machine add up to seconds one after another.
	var free []int
	for p := range c.br.cfg.Partitions {
		if want[p] && c.owned[p] == nil {
			free = append(free, p)
		}
	}
	var taking sync.WaitGroup
	for _, p := range free {
		taking.Go(func() {
			if err := c.acquire(ctx, p); err != nil {
				c.br.log.Warn("natsbridge: taking partition failed", "partition", p, "err", err)
			}
		})
	}
	taking.Wait()
	if closing && len(c.owned) == 0 {
		octx, cancel := c.opCtx(ctx)
		defer cancel()
		if err := c.kv.Delete(octx, "n."+c.br.node); err != nil {
			c.br.log.Warn("natsbridge: leaving the group failed (the key expires)", "err", err)
		}
		return true
	}
	return false
}

// owner returns the node that should own partition p (rendezvous hash:
// the node with the highest score for p; every node computes the same).
func owner(nodes []string, p int) string {
	var best string
	var bestScore uint64
	for _, n := range nodes {
		h := fnv.New64a()
		h.Write([]byte(n))
		if s := mix64(h.Sum64() ^ (uint64(p)+1)*0x9e3779b97f4a7c15); best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

// mix64 is the splitmix64 finalizer: FNV alone leaves the high bits of
// similar inputs alike.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// announce puts this node's liveness key.
func (c *coordinator) announce(ctx context.Context) {
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	if _, err := c.kv.Put(octx, "n."+c.br.node, []byte(c.br.node)); err != nil {
		c.br.log.Warn("natsbridge: announcing this node failed", "err", err)
	}
}

// liveNodes lists the nodes whose liveness key has not expired.
func (c *coordinator) liveNodes(ctx context.Context) ([]string, error) {
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	l, err := c.kv.ListKeysFiltered(octx, "n.*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var nodes []string
	for k := range l.Keys() {
		nodes = append(nodes, k[2:])
	}
	slices.Sort(nodes)
	return nodes, nil
}

// renew renews every owned lease; a lease that cannot be renewed before it
// may have expired is given up (the fetcher stops, the partition is
// dropped without release).
func (c *coordinator) renew(ctx context.Context) {
	// All at once: one after another, a slow server would let the last
	// leases expire while the first are renewed.
	var renewing sync.WaitGroup
	for _, p := range slices.Collect(maps.Values(c.owned)) {
		renewing.Go(func() { c.renewOne(ctx, p) })
	}
	renewing.Wait()
}

func (c *coordinator) renewOne(ctx context.Context, p *partition) {
	start := time.Now()
	octx, cancel := c.opCtx(ctx)
	rev, err := c.kv.Update(octx, p.key, []byte("o:"+c.br.node), p.rev)
	cancel()
	if err == nil {
		p.rev = rev
		p.extend(start.Add(c.br.cfg.LeaseTTL * 5 / 6))
		return
	}
	lost := errors.Is(err, jetstream.ErrKeyExists) || time.Now().After(p.validUntilTime())
	if !lost {
		c.br.log.Warn("natsbridge: renewing lease failed, will retry", "partition", p.id, "err", err)
		return
	}
	c.br.stats.lost.Add(1)
	c.br.log.Error("natsbridge: partition lease lost: stopped consuming it; its unacked events go to the next owner",
		"partition", p.id, "err", err)
	p.cancel()
	<-p.done
	c.drop(p.id)
}

// acquire takes partition id if its lease is free, dirty or expired.
func (c *coordinator) acquire(ctx context.Context, id int) error {
	key := "p." + strconv.Itoa(id)
	own := []byte("o:" + c.br.node)
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	start := time.Now()
	var rev uint64
	dirty := true
	e, err := c.kv.Get(octx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = c.kv.Create(octx, key, own)
	case err != nil:
		return err
	case bytes.Equal(e.Value(), []byte(leaseFree)), bytes.Equal(e.Value(), []byte(leaseDirty)),
		bytes.Equal(e.Value(), own): // the last one: this node's name, before a restart
		dirty = string(e.Value()) != leaseFree
		rev, err = c.kv.Update(octx, key, own, e.Revision())
	default:
		return nil // another node holds it; it hands it over when it sees us
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil // another node was faster
	}
	if err != nil {
		return err
	}
	p := newPartition(c, id, key, rev)
	p.extend(start.Add(c.br.cfg.LeaseTTL * 5 / 6))
	if err := c.prepare(octx, p, dirty); err != nil {
		c.br.log.Warn("natsbridge: preparing partition failed, handing it back", "partition", id, "err", err)
		if _, uerr := c.kv.Update(octx, key, []byte(leaseDirty), rev); uerr != nil {
			c.br.log.Warn("natsbridge: handing back failed (the lease expires)", "partition", id, "err", uerr)
		}
		return err
	}
	c.br.stats.acquired.Add(1)
	c.mu.Lock()
	c.owned[id] = p
	c.mu.Unlock()
	go p.fetch()
	return nil
}

// prepare makes or checks the partition's consumer and, after a dirty
// hand-over, rewinds it so unacked events come first.
func (c *coordinator) prepare(ctx context.Context, p *partition, dirty bool) error {
	cfg := c.br.cfg
	want := jetstream.ConsumerConfig{
		Durable:       p.name,
		Description:   "eventbus partition " + strconv.Itoa(p.id),
		FilterSubject: cfg.Stream + ".*." + strconv.Itoa(p.id),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // the bridge dead-letters after Config.MaxDeliver itself
		MaxAckPending: cfg.MaxAckPending,
		MaxWaiting:    64,
	}
	if c.br.ackAll {
		want.AckPolicy = jetstream.AckAllPolicy // see acks.go
	}
	js := c.br.js
	cons, err := js.Consumer(ctx, cfg.Stream, p.name)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err = js.CreateConsumer(ctx, cfg.Stream, want)
	case err == nil:
		got := cons.CachedInfo().Config
		want.AckPolicy = got.AckPolicy // cannot change; an older consumer acks each event
		if got.AckWait != want.AckWait || got.MaxAckPending != want.MaxAckPending ||
			got.FilterSubject != want.FilterSubject || got.MaxDeliver != want.MaxDeliver {
			cons, err = js.UpdateConsumer(ctx, cfg.Stream, want)
		}
	}
	if err != nil {
		return fmt.Errorf("consumer %s: %w", p.name, err)
	}
	p.cons = cons
	p.ackAll = cons.CachedInfo().Config.AckPolicy == jetstream.AckAllPolicy
	// Where the consumer's delivery count stands: the fetcher checks that
	// each delivery it receives is the next one (see missedDelivery).
	p.lastDelivery = cons.CachedInfo().Delivered.Consumer
	if !dirty {
		return nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", p.name, err)
	}
	p.lastDelivery = info.Delivered.Consumer
	if info.NumAckPending == 0 {
		return nil
	}
	// The events above the ack floor up to the last delivered one may have
	// been running when the last owner stopped: redeliver them one at a
	// time, counting each delivery first (see careful).
	p.carefulTo = info.Delivered.Stream
	p.runKey = "c." + strconv.Itoa(p.id)
	if e, err := c.runs.Get(ctx, p.runKey); err == nil {
		if seq, n, ok := parseRun(e.Value()); ok && seq > info.AckFloor.Stream && seq <= info.Delivered.Stream {
			p.runSeq, p.runCount = seq, n
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("unfinished-delivery count of partition %d: %w", p.id, err)
	}
	if _, err := js.ResetConsumer(ctx, cfg.Stream, p.name); err != nil {
		return fmt.Errorf("consumer %s: rewind to ack floor: %w", p.name, err)
	}
	p.lastDelivery = 0 // the next delivery is the first again
	c.br.stats.resets.Add(1)
	c.br.log.Info("natsbridge: partition taken over with unacked events: redelivering from the ack floor",
		"partition", p.id, "unacked", info.NumAckPending, "from_seq", info.AckFloor.Stream+1)
	return nil
}

// release hands a drained partition back.
func (c *coordinator) release(ctx context.Context, p *partition) {
	value := leaseFree
	if p.dirty.Load() {
		value = leaseDirty
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	// Acks are fire-and-forget: make sure the server has them before the
	// next owner looks at the consumer (and, for cumulative acks, has
	// processed them: a next owner that rewinds must not see one applied
	// after its reset, see acks.go).
	if p.ackAll {
		if err := p.syncAcks(octx, false); err != nil {
			value = leaseDirty
		}
	} else {
		p.flushAcks()
	}
	if err := c.br.js.Conn().FlushWithContext(octx); err != nil {
		value = leaseDirty
	}
	// A delivery that never reached this node and was not followed by one
	// that did (which would have shown the gap) is pending on the server:
	// the next owner must rewind, or it would take the consumer's count
	// as its start and handle later events first.
	if value == leaseFree {
		if all, err := p.receivedAll(octx); err != nil {
			c.br.log.Warn("natsbridge: checking the partition's deliveries failed; handing it back dirty", "partition", p.id, "err", err)
			value = leaseDirty
		} else if !all {
			c.br.log.Warn("natsbridge: the consumer delivered events this node never received or could not ack; handing the partition back dirty",
				"partition", p.id)
			value = leaseDirty
		}
	}
	if _, err := c.kv.Update(octx, p.key, []byte(value), p.rev); err != nil {
		c.br.log.Warn("natsbridge: handing back partition failed (the lease expires)", "partition", p.id, "err", err)
	} else {
		c.br.stats.released.Add(1)
	}
	p.cancel()
	c.drop(p.id)
}

func (c *coordinator) drop(id int) {
	c.mu.Lock()
	delete(c.owned, id)
	c.mu.Unlock()
}

// shutdown runs when Close gives up: fetchers stop at once, leases are not
// released (they expire), unfinished events are counted.
func (c *coordinator) shutdown() {
	for _, p := range c.owned {
		p.cancel()
	}
	left := 0
	for id, p := range c.owned {
		<-p.done
		left += p.inflightLen()
		c.drop(id)
	}
	c.left = left
}
