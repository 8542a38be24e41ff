package journal_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/imbus/eventbus/journal"
	"github.com/stretchr/testify/require"
)

// TestHandlerAttemptsSurviveReopenAndReclaim: attempts counted per handler
// keep every handler's count (one update never erases another's), survive
// a reopen, and survive reclamation copying the record forward, whether
// the attempts frame lies with the record or in a later segment; a plain
// SetAttempts keeps them too.
func TestHandlerAttemptsSurviveReopenAndReclaim(t *testing.T) {
	dir := t.TempDir()
	const segSize = 16 << 10
	opts := []journal.Option{journal.WithSegmentSize(segSize)}
	j := open(t, dir, opts...)
	a, err := j.Append(journal.Record{Type: 1, Key: 1, Payload: []byte("a")})
	require.NoError(t, err)
	b, err := j.Append(journal.Record{Type: 2, Key: 2, Payload: []byte("b")})
	require.NoError(t, err)
	require.NoError(t, j.SetHandlerAttempts(a, "store", 1))
	require.NoError(t, j.SetHandlerAttempts(a, "store", 2))
	require.NoError(t, j.SetHandlerAttempts(a, "webhook", 1))
	require.NoError(t, j.SetAttempts(a, 5))
	require.NoError(t, j.SetHandlerAttempts(999, "store", 1)) // unknown: ignored
	require.Error(t, j.SetHandlerAttempts(a, "", 1), "a handler has a name")
	require.Error(t, j.SetHandlerAttempts(a, strings.Repeat("x", 1<<16), 1))
	want := map[string]int{"store": 2, "webhook": 1}
	check := func(j *journal.Journal, wantB map[string]int) {
		t.Helper()
		got := pending(t, j)
		require.Equal(t, []uint64{a, b}, ids(got))
		require.Equal(t, want, got[0].HandlerAttempts)
		require.Equal(t, 5, got[0].Attempts, "the plain count is kept beside them")
		require.Equal(t, wantB, got[1].HandlerAttempts)
		require.Equal(t, "a", string(got[0].Payload))
	}
	require.NoError(t, j.Sync())
	check(j, nil)
	require.NoError(t, j.Close())
	j = open(t, dir, opts...)
	check(j, nil)

	// Fill segments with acked records until both pending records have been
	// copied forward several times; b's attempts are set midway, so its
	// frame lies in a later segment than its record when that is copied.
	payload := bytes.Repeat([]byte("x"), 200)
	batch := slices.Repeat([]journal.Record{{Payload: payload}}, 10)
	for i := 0; i < 20*segSize/(10*200); i++ {
		if i == 5*segSize/(10*200) {
			require.NoError(t, j.SetHandlerAttempts(b, "store", 3))
		}
		first, err := j.Append(batch...)
		require.NoError(t, err)
		for id := first; id < first+uint64(len(batch)); id++ {
			require.NoError(t, j.Ack(id))
		}
	}
	require.NoError(t, j.Sync())
	require.Less(t, j.Stats().Segments, 8, "segments were reclaimed, the records copied forward")
	check(j, map[string]int{"store": 3})
	require.NoError(t, j.Close())
	j = open(t, dir, opts...)
	defer j.Close()
	check(j, map[string]int{"store": 3})
}
