package journal

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// TestLinkIsCRC32COfItsFields pins the chained checksum to its documented
// definition: CRC-32C of the previous checksum, the length and the body's
// checksum, 4 little-endian bytes each.
func TestLinkIsCRC32COfItsFields(t *testing.T) {
	for _, c := range [][3]uint32{{0, 0, 0}, {1, 2, 3}, {0xffffffff, 1 << 20, 0xdeadbeef}, {0x12345678, 17, 0x9abcdef0}} {
		var b [12]byte
		binary.LittleEndian.PutUint32(b[0:], c[0])
		binary.LittleEndian.PutUint32(b[4:], c[1])
		binary.LittleEndian.PutUint32(b[8:], c[2])
		if got, want := link(c[0], int(c[1]), c[2]), crc32.Checksum(b[:], castagnoli); got != want {
			t.Errorf("link(%x) = %x, want %x", c, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { link(1, 2, 3) }); n != 0 {
		t.Errorf("link allocates %v times", n)
	}
}
