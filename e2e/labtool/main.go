// Command labtool does, inside the lab's L1, what its busybox cannot.
//
//	labtool mangle KIND IN OUT
//
// writes a damaged copy of a squib state file, for the bad-input scenario:
// squibd must refuse each with a clear message. KIND is truncate (the first
// half), flip (one bit of the CBOR body), or a resealed file with valid
// checksums whose content is wrong: version (the next major format
// version), arch, backend or pagesize (header fields). It works from the
// envelope layout in docs/snapshot-format.md, not through the snapshot
// package, so that a resealed file is built independently of the code that
// checks it.
//
//	labtool nonzero FILE SIZE
//
// prints the bytes of the 4 KiB pages among FILE's first SIZE bytes that
// are not all zero: the guest data a memory file must hold.
//
//	labtool seqwrite FILE BYTES
//
// writes BYTES of non-zero data to a new FILE sequentially in 1 MiB writes,
// syncs it, and prints the seconds taken: the plain write a snapshot's
// memory file is compared with.
//
//	labtool get SOCKET PATH
//
// prints the body of GET PATH from the squibd API at SOCKET, as sent (busybox
// has no HTTP client for Unix sockets); a fault fails.
//
//	labtool same STATE1 MEM1 STATE2 MEM2
//
// compares two snapshots of one guest moment, the second taken of the first
// restored paused: their state files must be equal except for the header's
// ID, parent and time and the memory file's ID, and for what time alone
// changes (the guest's counters, which may only have gone forward, and
// their timers' ISTATUS bits, which follow the counters); their memory files
// must hold the same RAM image. It prints SAME, or each difference and
// fails. Like mangle, it reads the files by the format doc's layout.
//
// The mangle kind midr (of a resealed file) changes the low bit of every
// vCPU's saved MIDR_EL1, as a snapshot from another CPU model would have.
//
//	labtool vsock-echo UDS PORT STREAMS BYTES
//
// opens STREAMS streams at once to the guest's vsock port PORT through
// squibd's vsock socket UDS (CONNECT PORT, answered OK), sends BYTES of a
// pattern of its own on each while reading the guest's echo, and prints
// VSOCK streams=N ok=K bytes=TOTAL ms=ELAPSED; it fails unless every echo
// came back whole.
//
//	labtool vsock-listen PATH
//
// accepts one stream on the Unix socket PATH (UDS_PORT, where squibd takes
// the guest's connections to host port PORT), reads it to EOF and prints
// VSOCK-LISTEN bytes=N sum=FNV pattern=yes|no: the 64-bit FNV-1a of what
// it read, in hex, and whether that is what lab/prog/vsock.c sends.
//
//	labtool vsock-stall UDS PORT
//
// opens an echo stream whose reader stops: it sends 8 MiB without reading,
// and after 3 s (its writes stuck) echoes 1 MiB through a second stream,
// then reads the first's echo. It prints VSOCK-STALL stalled_sent=N
// total=8388608 other=ok|ERROR stalled=ok|ERROR, and fails unless the
// first stalled, the second got its echo meanwhile, and the first then got
// all of its own.
//
//	labtool vsock-hold UDS PORT
//
// opens an echo stream, checks it with 4 bytes (VSOCK-HOLD open
// host_port=N) and holds it until it ends (VSOCK-HOLD end err=...).
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/api"
)

const prefixLen, trailerLen = 24, 8

// Header fields, by their CBOR keys (snapshot-format.md).
const (
	keyHeader   = 1
	keyArch     = 1
	keyBackend  = 2
	keyPageSize = 4
	keyID       = 7
	keyParent   = 8
	keyCreated  = 10
	keyMemory   = 11 // {1: FileID, 2: Size, ...}
	keyRAMSize  = 6
	keyMachine  = 2
	keyVCPUs    = 2
	keySys      = 11
	keyTimer    = 14 // {1: CTL, 2: CVAL, 3: Counter}
	encMIDR     = 0xC000
	encCNTPCT   = 0xDF01 // KVM's PTIMER_CNT
	encCNTPCTL  = 0xDF11
	istatus     = 1 << 2 // CNT*_CTL_EL0.ISTATUS
)

func main() {
	var err error
	switch {
	case len(os.Args) == 5 && os.Args[1] == "mangle":
		var in, out []byte
		if in, err = os.ReadFile(os.Args[3]); err == nil {
			if out, err = mangle(os.Args[2], in); err == nil {
				err = os.WriteFile(os.Args[4], out, 0o644)
			}
		}
	case len(os.Args) == 4 && os.Args[1] == "nonzero":
		err = nonzero(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "seqwrite":
		err = seqwrite(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "get":
		err = get(os.Args[2], os.Args[3])
	case len(os.Args) == 6 && os.Args[1] == "same":
		err = same(os.Args[2:])
	case len(os.Args) == 6 && os.Args[1] == "vsock-echo":
		err = vsockEcho(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	case len(os.Args) == 3 && os.Args[1] == "vsock-listen":
		err = vsockListen(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "vsock-stall":
		err = vsockStall(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "vsock-hold":
		err = vsockHold(os.Args[2], os.Args[3])
	default:
		fmt.Fprintln(os.Stderr, "usage: labtool mangle truncate|flip|version|arch|backend|pagesize|midr IN OUT\n"+
			"       labtool nonzero FILE SIZE\n       labtool seqwrite FILE BYTES\n       labtool get SOCKET PATH\n"+
			"       labtool same STATE1 MEM1 STATE2 MEM2\n"+
			"       labtool vsock-echo UDS PORT STREAMS BYTES\n       labtool vsock-listen PATH\n"+
			"       labtool vsock-stall UDS PORT\n       labtool vsock-hold UDS PORT")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "labtool:", err)
		os.Exit(1)
	}
}

func nonzero(path, size string) error {
	n, err := strconv.ParseInt(size, 0, 64)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	page, zero := make([]byte, 4096), make([]byte, 4096)
	var total int64
	r := io.LimitReader(f, n)
	for {
		_, err := io.ReadFull(r, page)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		if !bytes.Equal(page, zero) {
			total += int64(len(page))
		}
	}
	fmt.Println(total)
	return nil
}

func seqwrite(path, size string) error {
	n, err := strconv.ParseInt(size, 0, 64)
	if err != nil {
		return err
	}
	buf := bytes.Repeat([]byte{0xa5}, 1<<20)
	start := time.Now()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	for left := n; left > 0 && err == nil; left -= int64(len(buf)) {
		_, err = f.Write(buf[:min(left, int64(len(buf)))])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	fmt.Printf("%.6f\n", time.Since(start).Seconds())
	return err
}

func mangle(kind string, b []byte) ([]byte, error) {
	if len(b) < prefixLen+trailerLen {
		return nil, fmt.Errorf("%d bytes: not a state file", len(b))
	}
	major, minor := binary.LittleEndian.Uint16(b[8:]), binary.LittleEndian.Uint16(b[10:])
	body := b[prefixLen : len(b)-trailerLen]
	switch kind {
	case "truncate":
		return b[:len(b)/2], nil
	case "flip":
		out := append([]byte(nil), b...)
		out[prefixLen+len(body)/2] ^= 0x10
		return out, nil
	case "version":
		return seal(b[:8], major+1, minor, body), nil
	}
	var st map[any]any
	if err := cbor.Unmarshal(body, &st); err != nil {
		return nil, err
	}
	h, ok := st[uint64(keyHeader)].(map[any]any)
	if !ok {
		return nil, fmt.Errorf("no header map")
	}
	switch kind {
	case "arch":
		h[uint64(keyArch)] = "riscv64"
	case "backend":
		if h[uint64(keyBackend)] == "kvm" {
			h[uint64(keyBackend)] = "hvf"
		} else {
			h[uint64(keyBackend)] = "kvm"
		}
	case "pagesize": // the other page size of the lab, which the 16 KiB blocks suit
		if h[uint64(keyPageSize)] == uint64(4096) {
			h[uint64(keyPageSize)] = uint64(16384)
		} else {
			h[uint64(keyPageSize)] = uint64(4096)
		}
	case "midr":
		for _, c := range vcpus(st) {
			if sys, ok := c[uint64(keySys)].(map[any]any); ok {
				if x, ok := sys[uint64(encMIDR)].(uint64); ok {
					sys[uint64(encMIDR)] = x ^ 1
					continue
				}
			}
			return nil, fmt.Errorf("a vCPU without MIDR_EL1")
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	// The format's deterministic encoding (sorted keys, shortest forms), or
	// squibd would refuse the file for that before reaching what changed.
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		return nil, err
	}
	nb, err := em.Marshal(st)
	if err != nil {
		return nil, err
	}
	return seal(b[:8], major, minor, nb), nil
}

// seal builds an envelope: magic, version, body length, CRC-32C of the
// prefix, the body, CRC-64/ECMA of everything before it.
func seal(magic []byte, major, minor uint16, body []byte) []byte {
	b := append([]byte(nil), magic...)
	b = binary.LittleEndian.AppendUint16(b, major)
	b = binary.LittleEndian.AppendUint16(b, minor)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(body)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint64(b, crc64.Checksum(b, crc64.MakeTable(crc64.ECMA)))
}

func get(socket, path string) error {
	var body json.RawMessage
	if err := api.NewClient(socket).Do(context.Background(), http.MethodGet, path, nil, &body); err != nil {
		return err
	}
	_, err := os.Stdout.Write(body)
	return err
}

// vcpus returns the vCPU maps of a decoded state body.
func vcpus(st map[any]any) []map[any]any {
	m, _ := st[uint64(keyMachine)].(map[any]any)
	list, _ := m[uint64(keyVCPUs)].([]any)
	var out []map[any]any
	for _, c := range list {
		if cm, ok := c.(map[any]any); ok {
			out = append(out, cm)
		}
	}
	return out
}

// decodeState returns a state file's decoded body.
func decodeState(path string) (map[any]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < prefixLen+trailerLen {
		return nil, fmt.Errorf("%s: %d bytes: not a state file", path, len(b))
	}
	var st map[any]any
	if err := cbor.Unmarshal(b[prefixLen:len(b)-trailerLen], &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// same is labtool same (see the package doc).
func same(args []string) error {
	a, err := decodeState(args[0])
	if err != nil {
		return err
	}
	b, err := decodeState(args[2])
	if err != nil {
		return err
	}
	var diffs []string
	// What time alone changes: counters may only go forward.
	ca, cb := vcpus(a), vcpus(b)
	if len(ca) != len(cb) {
		return fmt.Errorf("%d vCPUs, then %d", len(ca), len(cb))
	}
	for i := range ca {
		ta, _ := ca[i][uint64(keyTimer)].(map[any]any)
		tb, _ := cb[i][uint64(keyTimer)].(map[any]any)
		sa, _ := ca[i][uint64(keySys)].(map[any]any)
		sb, _ := cb[i][uint64(keySys)].(map[any]any)
		for _, c := range []struct {
			name   string
			ma, mb map[any]any
			cnt    uint64
			ctl    uint64
		}{{"virtual", ta, tb, 3, 1}, {"physical", sa, sb, encCNTPCT, encCNTPCTL}} {
			if c.ma == nil || c.mb == nil {
				continue
			}
			x, _ := c.ma[c.cnt].(uint64)
			y, _ := c.mb[c.cnt].(uint64)
			if y < x {
				diffs = append(diffs, fmt.Sprintf("vCPU %d: %s counter went back from %d to %d", i, c.name, x, y))
			}
			delete(c.ma, c.cnt)
			delete(c.mb, c.cnt)
			for _, m := range []map[any]any{c.ma, c.mb} {
				if v, ok := m[c.ctl].(uint64); ok {
					m[c.ctl] = v &^ istatus
				}
			}
		}
	}
	var size uint64
	for _, st := range []map[any]any{a, b} {
		h, _ := st[uint64(keyHeader)].(map[any]any)
		size, _ = h[uint64(keyRAMSize)].(uint64)
		for _, k := range []uint64{keyID, keyParent, keyCreated} {
			delete(h, k)
		}
		if mem, ok := h[uint64(keyMemory)].(map[any]any); ok {
			delete(mem, uint64(1))
		}
	}
	diffs = append(diffs, compare("state", a, b)...)
	if err := sameRAM(args[1], args[3], int64(size)); err != nil {
		diffs = append(diffs, err.Error())
	}
	if len(diffs) > 0 {
		for _, d := range diffs {
			fmt.Println("DIFF", d)
		}
		return fmt.Errorf("%d differences", len(diffs))
	}
	fmt.Println("SAME")
	return nil
}

// compare lists where two decoded CBOR values differ, by path.
func compare(path string, a, b any) []string {
	ma, oka := a.(map[any]any)
	mb, okb := b.(map[any]any)
	if oka && okb {
		var d []string
		for k, va := range ma {
			vb, ok := mb[k]
			if !ok {
				d = append(d, fmt.Sprintf("%s/%v: only in the first", path, k))
				continue
			}
			d = append(d, compare(fmt.Sprintf("%s/%v", path, k), va, vb)...)
		}
		for k := range mb {
			if _, ok := ma[k]; !ok {
				d = append(d, fmt.Sprintf("%s/%v: only in the second", path, k))
			}
		}
		return d
	}
	la, oka := a.([]any)
	lb, okb := b.([]any)
	if oka && okb && len(la) == len(lb) {
		var d []string
		for i := range la {
			d = append(d, compare(fmt.Sprintf("%s/%d", path, i), la[i], lb[i])...)
		}
		return d
	}
	if fmt.Sprintf("%#v", a) != fmt.Sprintf("%#v", b) {
		return []string{fmt.Sprintf("%s: %x, then %x", path, a, b)}
	}
	return nil
}

// sameRAM compares the RAM images, the first size bytes, of two memory files.
func sameRAM(p1, p2 string, size int64) error {
	f1, err := os.Open(p1)
	if err != nil {
		return err
	}
	defer f1.Close()
	f2, err := os.Open(p2)
	if err != nil {
		return err
	}
	defer f2.Close()
	b1, b2 := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(b1)) {
		n := min(int64(len(b1)), size-off)
		if _, err := f1.ReadAt(b1[:n], off); err != nil {
			return err
		}
		if _, err := f2.ReadAt(b2[:n], off); err != nil {
			return err
		}
		if !bytes.Equal(b1[:n], b2[:n]) {
			return fmt.Errorf("RAM differs in the MiB at offset %#x", off)
		}
	}
	if size == 0 {
		return errors.New("no RAM size in the header")
	}
	return nil
}
