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

// TestArchitectureReferencesResolve: every "ARCHITECTURE.md, <section>" in
// the repository's code and documents names a section of ARCHITECTURE.md,
// and every test ARCHITECTURE.md cites exists, so the map stays true as
// code moves.
func TestArchitectureReferencesResolve(t *testing.T) {
	arch, err := os.ReadFile("ARCHITECTURE.md")
	require.NoError(t, err)
	var sections []string
	for _, line := range strings.Split(string(arch), "\n") {
		if title, ok := strings.CutPrefix(line, "## "); ok {
			sections = append(sections, title)
		}
	}
	require.NotEmpty(t, sections)

	testFuncs := map[string]bool{}
	var refs []string
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || path == "ARCHITECTURE.md" || path == "comments_test.go" || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".md")) {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range testFunc.FindAllStringSubmatch(string(src), -1) {
			testFuncs[m[1]] = true
		}
		// A reference may wrap across comment lines: join them first.
		flat := strings.Join(strings.Fields(strings.ReplaceAll(string(src), "//", " ")), " ")
		for rest := flat; ; {
			i := strings.Index(rest, "ARCHITECTURE.md, ")
			if i < 0 {
				break
			}
			rest = rest[i+len("ARCHITECTURE.md, "):]
			refs = append(refs, path+": "+rest[:min(len(rest), 60)])
			found := false
			for _, s := range sections {
				if strings.HasPrefix(rest, s) {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("%s: ARCHITECTURE.md has no section %q", path, rest[:min(len(rest), 60)])
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, refs, "the code cites ARCHITECTURE.md")
	for _, m := range regexp.MustCompile("`(Test[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(arch), -1) {
		if !testFuncs[m[1]] {
			t.Errorf("ARCHITECTURE.md cites %s, which no test file defines", m[1])
		}
	}
}

var testFunc = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
