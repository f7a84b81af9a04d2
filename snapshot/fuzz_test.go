package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeState: decoding never panics, refuses with a *FormatError, and
// whatever it accepts encodes to a file that decodes to a state with the same
// encoding (nil and empty maps, for one, encode alike). Each input
// is tried as a whole file and, so that mutations get past the checksums, as
// a CBOR body in a valid envelope. The seed corpus (a valid file, its body,
// and mutations) runs with every go test.
func FuzzDecodeState(f *testing.F) {
	good := encode(f, testState(f))
	golden, err := os.ReadFile(goldenState)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(golden)
	f.Add([]byte{})
	f.Add(good[:prefixLen])
	f.Add(good[:len(good)/2])
	for _, i := range []int{0, 9, 13, 21, prefixLen + 1, len(good) / 2, len(good) - 1} {
		b := bytes.Clone(good)
		b[i] ^= 0x20
		f.Add(b)
	}
	body, err := Marshal(testState(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(body))
	f.Add([]byte(body[:len(body)-1]))
	f.Add(append([]byte{0xa3, 0x18, 0x63, 0x00}, body[1:]...)) // an unknown field
	f.Add(seal(stateMagic, Version{1, 9}, body))

	f.Fuzz(func(t *testing.T, b []byte) {
		for _, file := range [][]byte{b, seal(stateMagic, formatVersion, b)} {
			s, err := DecodeState(file)
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("DecodeState() = %v; want a *FormatError", err)
				}
				continue
			}
			enc := encode(t, s)
			again, err := DecodeState(enc)
			if err != nil || !bytes.Equal(encode(t, again), enc) {
				t.Fatalf("re-encoding an accepted state: %v, or it changed", err)
			}
		}
	})
}

// FuzzMemoryFile feeds hostile memory files to the reader. Each input is
// tried as a whole file, and, to get past the checksums, as the block table
// of a 32 KiB file and as the body of a valid footer envelope. Opening never
// panics and refuses with a *FormatError; walking the blocks of a file it
// accepts may only find checksum mismatches and undeclared data.
func FuzzMemoryFile(f *testing.F) {
	ram := make([]byte, 32<<10)
	copy(ram[5000:], "some data")
	dir := f.TempDir()
	path := filepath.Join(dir, "mem")
	o := MemoryOptions{Snapshot: NewID(), BlockSize: 4096}
	for _, dirty := range []Bitmap{nil, {0x0a}} {
		o.Dirty, o.Parent = dirty, ""
		if dirty != nil {
			o.Parent = NewID()
		}
		if _, err := WriteMemory(path, ram, o); err != nil {
			f.Fatal(err)
		}
		good, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		ft := footerOf(f, path)
		table := good[len(ram) : len(ram)+int(ft.TableLen)]
		body := good[len(ram)+len(table)+prefixLen : len(good)-locatorLen-trailerLen]
		f.Add(good)
		f.Add(good[:len(good)-1])
		f.Add(table)
		f.Add(bytes.Repeat([]byte{0xff}, len(table)))
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tail := func(ft *footer, table []byte) []byte {
			ft.TableLen, ft.TableSum = uint64(len(table)), crc32c(table)
			body, err := Marshal(ft)
			if err != nil {
				t.Fatal(err)
			}
			env := seal(footerMagic, formatVersion, body)
			return binary.LittleEndian.AppendUint64(append(table, env...), uint64(len(env)))
		}
		image := bytes.Repeat([]byte{1, 0, 0, 0}, len(ram)/4)
		files := [][]byte{b, append(bytes.Clone(image), tail(&footer{FileID: NewID(), Snapshot: NewID(),
			Type: Full, Size: uint64(len(ram)), BlockSize: 4096}, bytes.Clone(b))...)}
		if ft := new(footer); Unmarshal(b, ft) == nil && ft.Size <= 1<<20 && ft.TableLen <= 1<<20 {
			env := seal(footerMagic, formatVersion, b)
			file := append(make([]byte, ft.Size+ft.TableLen), env...)
			files = append(files, binary.LittleEndian.AppendUint64(file, uint64(len(env))))
		}
		for _, file := range files {
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := openMemory(path, true)
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("openMemory() = %v; want a *FormatError", err)
				}
				continue
			}
			err = m.scan()
			m.Close()
			if err != nil && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("scanning an accepted file: %v", err)
			}
			if err := LoadMemory(path, make([]byte, m.ft.Size)); err != nil && !errors.Is(err, ErrChecksum) {
				t.Fatalf("LoadMemory of an accepted file: %v", err)
			}
		}
	})
}
