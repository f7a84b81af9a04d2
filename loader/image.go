// Package loader prepares an arm64 Linux kernel for booting: it decodes the
// Image (raw, gzip-compressed, with an EFI stub, or wrapped in EFI zboot),
// checks its header, and places kernel, initrd and device tree in guest RAM
// following Documentation/arch/arm64/booting.rst.
package loader

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Image header fields (booting.rst; little-endian, first 64 bytes).
const (
	headerSize      = 64
	offTextOffset   = 0x08
	offImageSize    = 0x10
	offFlags        = 0x18
	offMagic        = 0x38
	imageMagic      = 0x644D5241 // "ARM\x64"
	flagBigEndian   = 1 << 0
	legacyTextOfset = 0x80000 // text_offset to assume when image_size is 0 (pre-3.17)

	// MaxImageSize bounds a decompressed Image, so that a hostile or broken
	// file cannot make squibd allocate without limit.
	MaxImageSize = 256 << 20
)

// ErrNotImage is wrapped by every error that means "this is not a bootable
// arm64 Linux Image".
var ErrNotImage = errors.New("not an arm64 Linux Image")

// Image is a decoded arm64 Linux kernel Image.
type Image struct {
	Data       []byte // the uncompressed Image, loaded verbatim
	TextOffset uint64 // load offset above a 2 MiB-aligned base
	Size       uint64 // bytes the kernel needs from its load address, including BSS
}

// ParseImage decodes a kernel file's contents: a raw Image (EFI stub or not),
// a gzip-compressed Image, or an EFI zboot image with a gzip payload.
func ParseImage(file []byte) (*Image, error) {
	data, err := decompress(file)
	if err != nil {
		return nil, err
	}
	if len(data) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the 64-byte Image header", ErrNotImage, len(data))
	}
	if m := binary.LittleEndian.Uint32(data[offMagic:]); m != imageMagic {
		return nil, fmt.Errorf("%w: no ARM\\x64 magic at offset 0x38 (found %#08x)", ErrNotImage, m)
	}
	flags := binary.LittleEndian.Uint64(data[offFlags:])
	if flags&flagBigEndian != 0 {
		return nil, fmt.Errorf("%w: the kernel is big-endian; squib runs little-endian guests", ErrNotImage)
	}
	img := &Image{
		Data:       data,
		TextOffset: binary.LittleEndian.Uint64(data[offTextOffset:]),
		Size:       binary.LittleEndian.Uint64(data[offImageSize:]),
	}
	if img.Size == 0 {
		img.TextOffset = legacyTextOfset
	}
	if img.Size < uint64(len(data)) {
		img.Size = uint64(len(data))
	}
	if img.TextOffset >= 2<<20 || img.Size > MaxImageSize {
		return nil, fmt.Errorf("%w: implausible header (text_offset %#x, image_size %#x)", ErrNotImage, img.TextOffset, img.Size)
	}
	return img, nil
}

// decompress returns the raw Image inside file.
func decompress(file []byte) ([]byte, error) {
	switch {
	case len(file) >= 2 && file[0] == 0x1f && file[1] == 0x8b:
		return gunzip(file)
	case len(file) >= 28 && string(file[0:2]) == "MZ" && string(file[4:8]) == "zimg":
		// EFI zboot (Linux 6.1+): a PE wrapper around a compressed Image.
		off := binary.LittleEndian.Uint32(file[8:])
		size := binary.LittleEndian.Uint32(file[12:])
		comp := string(bytes.TrimRight(file[24:28], "\x00"))
		if uint64(off)+uint64(size) > uint64(len(file)) {
			return nil, fmt.Errorf("%w: EFI zboot payload [%#x, +%#x) lies past the end of the file", ErrNotImage, off, size)
		}
		if comp != "gzip" {
			return nil, fmt.Errorf("%w: EFI zboot payload compressed with %q; squib reads gzip (use a raw Image or Image.gz)", ErrNotImage, comp)
		}
		return gunzip(file[off : off+size])
	}
	return file, nil
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: bad gzip data: %v", ErrNotImage, err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, MaxImageSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: bad gzip data: %v", ErrNotImage, err)
	}
	if len(out) > MaxImageSize {
		return nil, fmt.Errorf("%w: decompresses to more than %d MiB", ErrNotImage, MaxImageSize>>20)
	}
	return out, nil
}
