// Package loader prepares an arm64 Linux kernel for booting: it decodes the
// Image (raw, gzip-compressed, with an EFI stub, or wrapped in EFI zboot),
// checks its header, and places kernel, initrd and device tree in guest RAM
// following Documentation/arch/arm64/booting.rst. Files are streamed into
// guest RAM, never held in the VMM's own heap.
package loader

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Image header fields (booting.rst; little-endian, first 64 bytes).
const (
	headerSize       = 64
	offTextOffset    = 0x08
	offImageSize     = 0x10
	offFlags         = 0x18
	offMagic         = 0x38
	imageMagic       = 0x644D5241 // "ARM\x64"
	flagBigEndian    = 1 << 0
	legacyTextOffset = 0x80000 // text_offset to assume when image_size is 0 (pre-3.17)

	// MaxImageSize bounds a decompressed Image, so that a hostile or broken
	// file cannot make squibd write without limit.
	MaxImageSize = 256 << 20
)

// ErrNotImage is wrapped by every error that means "this is not a bootable
// arm64 Linux Image".
var ErrNotImage = errors.New("not an arm64 Linux Image")

// File is a boot input (kernel or initrd) read in place.
type File struct {
	io.ReaderAt
	Size int64
}

// Bytes makes a File of b.
func Bytes(b []byte) File { return File{bytes.NewReader(b), int64(len(b))} }

// Image is an arm64 Linux kernel Image, inspected but not yet loaded.
type Image struct {
	TextOffset uint64 // load offset above a 2 MiB-aligned base
	Size       uint64 // bytes the kernel needs from its load address, including BSS

	payload  File // the raw or gzip'd Image inside the file
	gzipped  bool
	fileSize int64
}

// ParseImage inspects a kernel file: a raw Image (EFI stub or not), a
// gzip-compressed Image, or an EFI zboot image with a gzip payload. It reads
// only what it needs to check the header.
func ParseImage(f File) (*Image, error) {
	img := &Image{payload: f, fileSize: f.Size}
	var magic [28]byte
	n, _ := f.ReadAt(magic[:], 0)
	switch m := magic[:n]; {
	case len(m) >= 2 && m[0] == 0x1f && m[1] == 0x8b:
		img.gzipped = true
	case len(m) >= 28 && string(m[0:2]) == "MZ" && string(m[4:8]) == "zimg":
		// EFI zboot (Linux 6.1+): a PE wrapper around a compressed Image.
		off := int64(binary.LittleEndian.Uint32(m[8:]))
		size := int64(binary.LittleEndian.Uint32(m[12:]))
		comp := string(bytes.TrimRight(m[24:28], "\x00"))
		if off+size > f.Size {
			return nil, fmt.Errorf("%w: EFI zboot payload [%#x, +%#x) lies past the end of the file", ErrNotImage, off, size)
		}
		if comp != "gzip" {
			return nil, fmt.Errorf("%w: EFI zboot payload compressed with %q; squib reads gzip (use a raw Image or Image.gz)", ErrNotImage, comp)
		}
		img.payload = File{io.NewSectionReader(f, off, size), size}
		img.gzipped = true
	}
	r, err := img.open()
	if err != nil {
		return nil, err
	}
	var hdr [headerSize]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %d bytes is shorter than the 64-byte Image header", ErrNotImage, n)
		}
		return nil, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if m := binary.LittleEndian.Uint32(hdr[offMagic:]); m != imageMagic {
		return nil, fmt.Errorf("%w: no ARM\\x64 magic at offset 0x38 (found %#08x)", ErrNotImage, m)
	}
	if binary.LittleEndian.Uint64(hdr[offFlags:])&flagBigEndian != 0 {
		return nil, fmt.Errorf("%w: the kernel is big-endian; squib runs little-endian guests", ErrNotImage)
	}
	img.TextOffset = binary.LittleEndian.Uint64(hdr[offTextOffset:])
	img.Size = binary.LittleEndian.Uint64(hdr[offImageSize:])
	if img.Size == 0 {
		img.TextOffset = legacyTextOffset
	}
	if img.gzipped && img.Size == 0 {
		return nil, fmt.Errorf("%w: a compressed Image without image_size (pre-3.17 kernel): decompress it first", ErrNotImage)
	}
	if !img.gzipped && img.Size < uint64(f.Size) {
		img.Size = uint64(f.Size)
	}
	if img.TextOffset >= 2<<20 || img.Size > MaxImageSize {
		return nil, fmt.Errorf("%w: implausible header (text_offset %#x, image_size %#x)", ErrNotImage, img.TextOffset, img.Size)
	}
	return img, nil
}

// open returns a reader of the uncompressed Image from its start.
func (img *Image) open() (io.Reader, error) {
	r := io.NewSectionReader(img.payload, 0, img.payload.Size)
	if !img.gzipped {
		return r, nil
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: bad gzip data: %v", ErrNotImage, err)
	}
	return zr, nil
}

// load writes the uncompressed Image into dst, which spans the kernel's
// footprint (Size bytes); an Image that does not fit is an error.
func (img *Image) load(dst []byte) error {
	r, err := img.open()
	if err != nil {
		return err
	}
	w := &fixedWriter{buf: dst}
	if _, err := io.Copy(w, r); err != nil {
		if errors.Is(err, errFull) {
			return fmt.Errorf("%w: decompresses to more than its image_size (%d bytes)", ErrNotImage, len(dst))
		}
		return fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	clear(dst[w.n:]) // BSS, and whatever an earlier boot left
	return nil
}

var errFull = errors.New("buffer full")

// fixedWriter fills buf and refuses to write past its end.
type fixedWriter struct {
	buf []byte
	n   int
}

func (w *fixedWriter) Write(p []byte) (int, error) {
	if len(p) > len(w.buf)-w.n {
		return 0, errFull
	}
	w.n += copy(w.buf[w.n:], p)
	return len(p), nil
}

// OpenFile opens a boot input for reading in place. Close the returned
// *os.File once the VM is loaded. O_NONBLOCK keeps the open of a FIFO from
// waiting for a writer; anything but a regular file is then refused.
func OpenFile(path string) (File, *os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return File{}, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", path)
	}
	if err != nil {
		f.Close()
		return File{}, nil, err
	}
	return File{f, st.Size()}, f, nil
}
