package eventbus

// fnv64 is FNV-1a, inline so that hashing allocates nothing. KeyByReceiver
// and Bus.StableKey use it: their keys must be the same in every process
// (transports partition events across nodes by them), so no per-process
// seed.
type fnv64 uint64

const (
	fnvOffset fnv64 = 14695981039346656037
	fnvPrime  fnv64 = 1099511628211
)

func (h fnv64) byte(b byte) fnv64 { return (h ^ fnv64(b)) * fnvPrime }

func (h fnv64) string(s string) fnv64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ fnv64(s[i])) * fnvPrime
	}
	return h
}
