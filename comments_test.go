package eventbus_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommentsSpellPossessiveIts: the possessive is "its". Comments here spell
// "it is" out, so the contraction in a comment is always a typo.
func TestCommentsSpellPossessiveIts(t *testing.T) {
	for _, dir := range []string{".", "eventbustest", "internal/goid"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			src, err := os.ReadFile(f)
			require.NoError(t, err)
			for i, line := range strings.Split(string(src), "\n") {
				if c := strings.Index(line, "//"); c >= 0 && itsTypo.MatchString(line[c:]) {
					t.Errorf("%s:%d: %s", f, i+1, strings.TrimSpace(line))
				}
			}
		}
	}
}

var itsTypo = regexp.MustCompile(`(?i)\bit's\b`)
