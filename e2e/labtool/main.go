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
	default:
		fmt.Fprintln(os.Stderr, "usage: labtool mangle truncate|flip|version|arch|backend|pagesize IN OUT\n"+
			"       labtool nonzero FILE SIZE\n       labtool seqwrite FILE BYTES\n       labtool get SOCKET PATH")
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
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	nb, err := cbor.Marshal(st)
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
