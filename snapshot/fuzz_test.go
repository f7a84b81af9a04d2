package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
)

// FuzzDecodeState runs the whole state-file path (envelope, checksums,
// version, checkBody, decoding, validation) on hostile input. Each input is
// tried as a whole file and, so that the checksums are not all that stands
// between a mutation and the decoder, as a CBOR body sealed in a valid
// envelope. The properties:
//   - nothing panics, and every refusal is a one-line *FormatError;
//   - checkBody leaves nothing for the decoder or the re-encoding check to
//     find (their messages would not name the field);
//   - whatever is accepted re-encodes to exactly the body it was read from,
//     so what the reader accepts is what the format describes and
//     EncodeState writes.
//
// The seed corpus (valid files, their bodies, and bodies that break one rule
// each, as TestStrictDecode builds them) runs with every go test.
func FuzzDecodeState(f *testing.F) {
	good := encode(f, testState(f))
	f.Add(good)
	for _, path := range append([]string{goldenState}, oldGoldens...) {
		golden, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(golden)
	}
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

	// Other valid shapes: one vCPU, a full hvf snapshot with 64 KiB pages
	// and no optional fields; bodies and files.
	small := testState(f)
	small.Header.Backend, small.Header.HostPageSize, small.Header.Type, small.Header.Parent = gic.BackendHVF, 64<<10, Full, ""
	small.Header.Memory.BlockSize = 64 << 10
	small.Machine.GIC = gic.State{Backend: gic.BackendHVF, BackendVersion: "15.4", Blob: []byte{9}, ICC: []gic.ICCRegs{{}}}
	small.Machine.Config.VCPUs, small.Machine.Config.Extra, small.Machine.Devices = 1, nil, nil
	small.Machine.VCPUs = small.Machine.VCPUs[:1]
	small.Machine.VCPUs[0].Sys, small.Machine.VCPUs[0].Backend = nil, nil
	f.Add(encode(f, small))
	f.Add([]byte(encode(f, small)[prefixLen : len(encode(f, small))-trailerLen]))

	// Bodies that break one rule each: the checks behind them are what a
	// mutation has to get past.
	mutations := []func(tree map[any]any){
		func(tree map[any]any) {
			stSet(f, tree, stAt(f, tree, stPath(stVCPU1, 1)...).([]any)[:30], stPath(stVCPU1, 1)...)
		},
		func(tree map[any]any) { stSet(f, tree, nil, stVCPU1...) },
		func(tree map[any]any) { stSet(f, tree, nil, stPath(stHdr, 4)...) },
		func(tree map[any]any) { stSet(f, tree, cbor.SimpleValue(16), stPath(stVCPU0, 4)...) },
		func(tree map[any]any) { stSet(f, tree, []any{uint64(1), uint64(2)}, stPath(stGIC, 3)...) },
		func(tree map[any]any) { stSet(f, tree, stRaw([]byte{0x1a, 0, 0, 0, 1}), stPath(stVCPU0, 13)...) },
		func(tree map[any]any) { stSet(f, tree, 1.5, stPath(stHdr, 10)...) },
		func(tree map[any]any) { stSet(f, tree, math.NaN(), stPath(stHdr, 10)...) },
		func(tree map[any]any) { stSet(f, tree, uint32(8192), stPath(stHdr, 4)...) },
		func(tree map[any]any) { stSet(f, tree, uint64(MaxRAMSize+1<<20), stPath(stHdr, 6)...) },
		func(tree map[any]any) {
			stSet(f, tree, stRaw([]byte{0xa2, 0x02, 0x00, 0x01, 0x00}), stPath(stVCPU0, 14)...)
		},
		func(tree map[any]any) { stSet(f, tree, stRaw([]byte{0x9f, 0x01, 0xff}), 2, 4, "pl011") },
		func(tree map[any]any) { delete(stAt(f, tree, stVCPU0...).(map[any]any), uint64(4)) },
		func(tree map[any]any) { stSet(f, tree, map[any]any{}, stPath(stVCPU0, 11)...) },
	}
	for _, m := range mutations {
		tree := stTree(f, testState(f))
		m(tree)
		b, err := stEncMode.Marshal(tree)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	// Messages that mean checkBody let through something the decoder or
	// the re-encoding found: not a refusal naming the field.
	leaks := []string{"decoding: ", "decoding the header: ", "re-encoding: ", "not in the format's deterministic encoding"}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, file := range [][]byte{b, seal(stateMagic, formatVersion, b)} {
			s, err := DecodeState(file)
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("DecodeState() = %v; want a *FormatError", err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("DecodeState() = %q; want one line", err)
				}
				for _, l := range leaks {
					if strings.Contains(fe.Problem, l) {
						t.Fatalf("checkBody let through what the decoder refused: %v", err)
					}
				}
				continue
			}
			enc := encode(t, s)
			if got, want := enc[prefixLen:len(enc)-trailerLen], file[prefixLen:len(file)-trailerLen]; !bytes.Equal(got, want) {
				t.Fatalf("an accepted state re-encodes differently:\n got %x\nwant %x", got, want)
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
