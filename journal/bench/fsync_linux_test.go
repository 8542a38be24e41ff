package bench

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFsync is the device's floor, in the same run: one 8 KiB write
// (about 64 encoded events) and one fdatasync, as a group commit does.
// Reports the mean, p50 and p99 of one write+sync.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8<<10)
	timeSyncs(b, f, func(int) error { _, err := f.Write(buf); return err })
}

// timeSyncs times b.N rounds of write(i) then fdatasync of f and reports
// the mean, p50 and p99 of one round.
func timeSyncs(b *testing.B, f *os.File, write func(i int) error) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		t := time.Now()
		if err := write(i); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	el := time.Since(start)
	slices.Sort(lat)
	b.ReportMetric(float64(el.Microseconds())/float64(b.N), "mean-µs")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFsyncPrealloc measures what preallocating a segment would buy:
// 128 records' worth (about 8 KiB) written and fdatasync'd at the end of
// a file that grows with each write ("append", what the journal does), in
// a file whose blocks were reserved with fallocate ("fallocate": the size
// does not change, but the blocks are unwritten extents the sync must
// convert), and over blocks written with zeros and fsync'd beforehand
// ("overwrite": nothing but data changes). Reports the mean, p50 and p99.
func BenchmarkFsyncPrealloc(b *testing.B) {
	const chunk = 8 << 10
	for _, mode := range []string{"append", "fallocate", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "f"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			size := int64(b.N) * chunk
			switch mode {
			case "fallocate":
				if err := syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, size); err != nil {
					b.Skip("fallocate:", err)
				}
			case "overwrite":
				if _, err := f.Write(make([]byte, size)); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			buf := make([]byte, chunk)
			timeSyncs(b, f, func(i int) error { _, err := f.WriteAt(buf, int64(i)*chunk); return err })
		})
	}
}
