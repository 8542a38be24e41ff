package natsbridge

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestOwnerSpreadsPartitions: rendezvous hashing gives every node a fair
// share and moves only the newcomer's share when a node joins.
func TestOwnerSpreadsPartitions(t *testing.T) {
	count := func(nodes []string, parts int) map[string]int {
		c := map[string]int{}
		for p := range parts {
			c[owner(nodes, p)]++
		}
		return c
	}
	c := count([]string{"a", "b", "c"}, 16)
	assert.Len(t, c, 3, "%v", c)
	for n, k := range count([]string{"a", "b", "c"}, 3000) {
		assert.InDelta(t, 1000, k, 150, n)
	}
	for p := range 64 {
		before, after := owner([]string{"a", "b"}, p), owner([]string{"a", "b", "c"}, p)
		if after != "c" {
			assert.Equal(t, before, after, "partition %d moved between old nodes", p)
		}
	}
}
