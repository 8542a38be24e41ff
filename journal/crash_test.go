package journal_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imbus/eventbus/journal"
)

const crashEnv = "JOURNAL_CRASH_CHILD_DIR"

// TestCrash runs this test binary again as a child that appends from
// several goroutines and prints each id once its Append (or AppendAsync
// then Sync) returned; it is killed with SIGKILL mid-run. Every printed
// record must be pending after a reopen, with its payload.
func TestCrash(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	t.Cleanup(kill)
	timer := time.AfterFunc(60*time.Second, kill) // a safety net, never expected to fire
	defer timer.Stop()

	want := map[uint64]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "rec" {
			continue
		}
		id, err := strconv.ParseUint(f[1], 10, 64)
		require.NoError(t, err)
		_, dup := want[id]
		require.False(t, dup, "ids are unique")
		want[id] = f[2]
		if len(want) == 3000 {
			kill() // lines already in the pipe are still read below
		}
	}
	err = cmd.Wait()
	require.Error(t, err)
	require.Contains(t, err.Error(), "killed", "the child ran until killed")
	require.GreaterOrEqual(t, len(want), 3000)

	j, err := journal.Open(dir, quiet)
	require.NoError(t, err)
	defer j.Close()
	got := map[uint64]string{}
	var maxID uint64
	for _, r := range pending(t, j) {
		got[r.ID] = string(r.Payload)
		maxID = max(maxID, r.ID)
	}
	for id, p := range want {
		if got[id] != p {
			t.Fatalf("record %d printed by the child: payload %q after reopen, want %q", id, got[id], p)
		}
	}
	id, err := j.Append(rec(0))
	require.NoError(t, err)
	require.Greater(t, id, maxID)
	t.Logf("child printed %d records before it was killed; %d pending after reopen", len(want), len(got))
}

func crashChild(dir string) {
	j, err := journal.Open(dir, journal.WithSegmentSize(32<<10))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	print := func(id uint64, p string) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, "rec %d %s\n", id, p) // one write: whole lines only
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				p := fmt.Sprintf("g%d-%d", g, i)
				r := journal.Record{Type: uint8(g), Key: uint64(g), Payload: []byte(p)}
				var id uint64
				var err error
				if i%4 == 3 {
					id, err = j.AppendAsync(r)
					if err == nil {
						err = j.Sync()
					}
				} else {
					id, err = j.Append(r)
				}
				if err == nil && i%2 == 1 {
					err = j.Ack(id) // acked records get reclaimed as the child runs
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				if i%2 == 0 {
					print(id, p)
				}
			}
		})
	}
	wg.Wait()
}
