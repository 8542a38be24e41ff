package eventbus

import (
	"fmt"
	"strings"
	"testing"
)

// TestKeyHashDependsOnEveryByte flips each byte of keys of every length up
// to 40 (across the short cases and the 16-byte loop): the hash changes
// each time, and so does it with the seed or the length.
func TestKeyHashDependsOnEveryByte(t *testing.T) {
	seed := newHashSeed()
	for n := range 41 {
		key := []byte(strings.Repeat("u", n))
		base := keyHash(seed, string(key))
		if n > 0 && keyHash(seed^1, string(key)) == base {
			t.Errorf("length %d: the seed changes nothing", n)
		}
		if keyHash(seed, string(key)+"u") == base {
			t.Errorf("length %d: one more byte changes nothing", n)
		}
		for i := range key {
			key[i] ^= 0x20
			if keyHash(seed, string(key)) == base {
				t.Errorf("length %d: byte %d changes nothing", n, i)
			}
			key[i] ^= 0x20
		}
	}
}

// TestKeyHashSpreadsKeysOverShards hashes 100 000 UIDs that differ only in
// their last digits, as an IM server's often do, onto 1 024 shards the way
// the engine picks them: no shard gets more than twice its share.
func TestKeyHashSpreadsKeysOverShards(t *testing.T) {
	const keys, shards = 100_000, 1024
	for _, format := range []string{"user-%d", "%d", "group:%08d", "a-rather-long-organisation-prefix/member/%d"} {
		seed := newHashSeed()
		var load [shards]int
		for i := range keys {
			h := keyHash(seed, fmt.Sprintf(format, i))
			load[shardOf(h, shards)]++
		}
		most := 0
		for _, n := range load {
			most = max(most, n)
		}
		if share := keys / shards; most > 2*share {
			t.Errorf("%q: the fullest shard holds %d keys, %.1f× its share", format, most, float64(most)/float64(share))
		}
	}
}

// shardOf picks a shard from the hash's low bits alone, without the mix
// the engine adds: a stricter test of the hash itself.
func shardOf(key uint64, shards int) int { return int(key % uint64(shards)) }
