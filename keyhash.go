package eventbus

import (
	"math/bits"
	"math/rand/v2"
)

// keyHash hashes an ordering key (a UID, a channel id) with the bus's
// seed. It is a short multiply-mix hash written for the keys an IM server
// has, a few to a few dozen bytes: inlined loads and two or three 64×64
// multiplications, where hash/maphash's call chain cost as much again on
// every add. The seed is random per bus, so which keys share a shard
// cannot be chosen from outside. It is not a cryptographic hash and need
// not be stable across processes: keys are never stored.
func keyHash(seed uint64, s string) uint64 {
	n := uint64(len(s))
	h := seed ^ hashK0
	for len(s) > 16 {
		h = mum(load64(s)^hashK1, load64(s[8:])^h)
		s = s[16:]
	}
	var a, b uint64
	switch {
	case len(s) >= 8:
		a, b = load64(s), load64(s[len(s)-8:])
	case len(s) >= 4:
		a, b = uint64(load32(s)), uint64(load32(s[len(s)-4:]))
	case len(s) > 0:
		a = uint64(s[0])<<16 | uint64(s[len(s)>>1])<<8 | uint64(s[len(s)-1])
	}
	return mum(hashK1^n, mum(a^hashK1, b^h))
}

// Odd constants with well-spread bits (those of wyhash).
const (
	hashK0 = 0xa0761d6478bd642f
	hashK1 = 0xe7037ed1a0b428db
)

// newHashSeed returns a random seed for keyHash.
func newHashSeed() uint64 { return rand.Uint64() }

// mum multiplies a and b into 128 bits and folds the halves together.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// load64 reads the first 8 bytes of s, little-endian (one load: the
// compiler merges the byte reads).
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// load32 reads the first 4 bytes of s, little-endian.
func load32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
