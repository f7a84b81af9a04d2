package snapshot

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/gic"
)

// realisticState is about what a 2-vCPU KVM guest saves: 60 system registers
// per vCPU, a 64 KiB GIC blob, two small devices.
func realisticState(b *testing.B) *State {
	s := newState(b, "")
	for i := range s.Machine.VCPUs {
		c := &s.Machine.VCPUs[i]
		c.Sys = map[uint16]uint64{}
		for enc := SysReg(3, 0, 1, 0, 0); len(c.Sys) < 60; enc += 3 {
			if _, ok := dedicatedSysRegs[enc]; !ok {
				c.Sys[enc] = uint64(enc) * 0x0123_4567_89ab
			}
		}
	}
	blob := make([]byte, 64<<10)
	fillRandom(rand.New(rand.NewPCG(1, 1)), blob)
	s.Machine.GIC = gic.State{Backend: gic.BackendKVM, BackendVersion: "6.8.0", Blob: blob, ICC: []gic.ICCRegs{{}, {}}}
	s.Machine.Devices = map[string]cbor.RawMessage{}
	for _, name := range []string{"pl011", "pl031"} {
		s.Machine.Devices[name] = encodeRaw(b, map[string]uint64{"cr": 0x301, "lcr_h": 0x70, "imsc": 0x50})
	}
	s.Header.ID, s.Header.Type, s.Header.Arch, s.Header.HostPageSize = NewID(), Full, Arch, 4096
	s.Header.Memory = MemoryRef{FileID: NewID(), Size: 1 << 20, BlockSize: 16 << 10}
	s.Header.Created = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	return s
}

func encodeRaw(b *testing.B, v any) cbor.RawMessage {
	raw, err := Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

func BenchmarkEncodeState(b *testing.B) {
	s := realisticState(b)
	b.SetBytes(int64(len(encode(b, s))))
	for b.Loop() {
		if _, err := EncodeState(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeState(b *testing.B) {
	file := encode(b, realisticState(b))
	b.SetBytes(int64(len(file)))
	for b.Loop() {
		if _, err := DecodeState(file); err != nil {
			b.Fatal(err)
		}
	}
}

// syntheticRAM maps size bytes of untouched anonymous memory and fills a
// quarter of its 16 KiB blocks, chosen at random, with random data.
func syntheticRAM(b *testing.B, size int) (ram []byte, data int) {
	if testing.Short() {
		b.Skip("maps gigabytes")
	}
	ram, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(ram) })
	const bs = 16 << 10
	rng := rand.New(rand.NewPCG(4, 4))
	src := rand.NewChaCha8([32]byte{4})
	for off := 0; off < size; off += bs {
		if rng.IntN(4) == 0 {
			src.Read(ram[off : off+bs])
			data += bs
		}
	}
	return ram, data
}

// untouch drops the host pages behind ram's zero blocks, so each run scans
// never-touched memory, as a guest's unused RAM is.
func untouch(b *testing.B, ram []byte, bs int) {
	zero := make([]byte, bs)
	for off := 0; off < len(ram); {
		end := off
		for end < len(ram) && bytes.Equal(ram[end:end+bs], zero) {
			end += bs
		}
		if end > off {
			if err := unix.Madvise(ram[off:end], unix.MADV_DONTNEED); err != nil {
				b.Fatal(err)
			}
			off = end
		} else {
			off += bs
		}
	}
}

// sequentialWrite writes n bytes to a new file in 1 MiB writes and syncs it:
// the baseline for the sparse writer.
func sequentialWrite(b *testing.B, path string, n int) time.Duration {
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{5}).Read(buf)
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	for w := 0; w < n; w += len(buf) {
		if _, err := f.Write(buf[:min(len(buf), n-w)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkWriteMemory4G writes a full memory file of a 4 GiB guest whose
// RAM is 25% random data, synced and published, and in the same run a plain
// sequential write (synced) of as many bytes as the guest has non-zero.
func BenchmarkWriteMemory4G(b *testing.B) {
	const bs = 16 << 10
	ram, data := syntheticRAM(b, 4<<30)
	dir := b.TempDir()
	mem, seq := filepath.Join(dir, "mem"), filepath.Join(dir, "seq")
	var sparseTime, seqTime time.Duration
	var written int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		untouch(b, ram, bs)
		b.StartTimer()
		start := time.Now()
		if _, err := WriteMemory(mem, ram, MemoryOptions{Snapshot: NewID(), BlockSize: bs}); err != nil {
			b.Fatal(err)
		}
		sparseTime += time.Since(start)
		written += allocated(b, mem)
		seqTime += sequentialWrite(b, seq, data)
		b.StopTimer()
		os.Remove(mem)
		os.Remove(seq)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(data)*n/sparseTime.Seconds()/1e6, "sparse-MB/s")
	b.ReportMetric(float64(data)*n/seqTime.Seconds()/1e6, "seq-MB/s")
	b.ReportMetric(seqTime.Seconds()/sparseTime.Seconds(), "sparse/seq")
	b.ReportMetric(float64(written)/n/float64(data), "written/nonzero")
}

// BenchmarkMapMemory opens and maps memory files of 256 MiB to 4 GiB and
// touches the first page: the time should not grow with the size.
func BenchmarkMapMemory(b *testing.B) {
	for _, size := range []int{256 << 20, 1 << 30, 4 << 30} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			if testing.Short() {
				b.Skip("writes gigabyte files")
			}
			ram, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Munmap(ram)
			for off := 0; off < size; off += 64 << 20 {
				copy(ram[off:], "a kernel page here and there")
			}
			path := filepath.Join(b.TempDir(), "mem")
			if _, err := WriteMemory(path, ram, MemoryOptions{Snapshot: NewID()}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				m, err := MapMemory(path)
				if err != nil {
					b.Fatal(err)
				}
				_ = m[0] // the first page the guest touches
				b.StopTimer()
				if err := Unmap(m); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCreateUntouched1G takes full snapshots (Create, synced and
// published) of a 1 GiB guest that touched 1/32 of its RAM, 16 KiB blocks
// of random data at random places, and never the rest; in the same run, a
// plain sequential write (synced) of as many non-zero bytes. read-all reads
// every block, as the writer did before it asked the host which pages were
// never touched; probe asks (pagemap on Linux, mincore on macOS).
func BenchmarkCreateUntouched1G(b *testing.B) {
	const size, bs = 1 << 30, 16 << 10
	if testing.Short() {
		b.Skip("maps a gigabyte")
	}
	ram, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(ram)
	rng, src, data := rand.New(rand.NewPCG(6, 6)), rand.NewChaCha8([32]byte{6}), 0
	for off := 0; off < size; off += bs {
		if rng.IntN(32) == 0 {
			src.Read(ram[off : off+bs])
			data += bs
		}
	}
	for _, mode := range []string{"read-all", "probe"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "read-all" {
				defer func(p func([]byte) pageProbe) { openProbe = p }(openProbe)
				openProbe = func([]byte) pageProbe { return nil }
			}
			dir := b.TempDir()
			f, seq := files(dir, "vm"), filepath.Join(dir, "seq")
			var createTime, seqTime time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				untouch(b, ram, bs)
				st := newState(b, "")
				st.Header.RAMSize, st.Machine.Config.MemoryMiB = size, size>>20
				b.StartTimer()
				start := time.Now()
				if err := Create(f, st, ram, CreateOptions{BlockSize: bs}); err != nil {
					b.Fatal(err)
				}
				createTime += time.Since(start)
				seqTime += sequentialWrite(b, seq, data)
				b.StopTimer()
				os.Remove(f.Memory)
				os.Remove(f.State)
				os.Remove(seq)
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(size*n/createTime.Seconds()/1e6, "RAM-MB/s")
			b.ReportMetric(float64(data)*n/createTime.Seconds()/1e6, "data-MB/s")
			b.ReportMetric(float64(data)*n/seqTime.Seconds()/1e6, "seq-MB/s")
			b.ReportMetric(createTime.Seconds()/seqTime.Seconds(), "create/seq")
			b.ReportMetric(createTime.Seconds()/n*1e3, "create-ms")
		})
	}
}
