package loader

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/squibvm/squib/memory"
)

// fakeImage builds an Image header followed by a recognizable body.
func fakeImage(textOffset, imageSize, flags uint64, bodyLen int) []byte {
	b := make([]byte, headerSize+bodyLen)
	binary.LittleEndian.PutUint64(b[offTextOffset:], textOffset)
	binary.LittleEndian.PutUint64(b[offImageSize:], imageSize)
	binary.LittleEndian.PutUint64(b[offFlags:], flags)
	binary.LittleEndian.PutUint32(b[offMagic:], imageMagic)
	for i := headerSize; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.Bytes()
}

func zboot(payload []byte, comp string) []byte {
	const off = 64
	b := make([]byte, off+len(payload))
	copy(b, "MZ")
	copy(b[4:], "zimg")
	binary.LittleEndian.PutUint32(b[8:], off)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(payload)))
	copy(b[24:], comp)
	copy(b[off:], payload)
	return b
}

func TestParseImageFormats(t *testing.T) {
	raw := fakeImage(0, 0x2000, 2<<1, 4096)
	efi := append([]byte(nil), raw...)
	copy(efi, "MZ") // EFI stub kernels start with MZ but keep the arm64 header
	for name, file := range map[string][]byte{
		"raw":        raw,
		"efi-stub":   efi,
		"gzip":       gz(t, raw),
		"zboot-gzip": zboot(gz(t, raw), "gzip"),
	} {
		img, err := ParseImage(Bytes(file))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if img.TextOffset != 0 || img.Size != 0x2000 {
			t.Errorf("%s: text_offset %#x size %#x", name, img.TextOffset, img.Size)
		}
		dst := bytes.Repeat([]byte{0xee}, int(img.Size))
		if err := img.load(dst); err != nil {
			t.Errorf("%s: load: %v", name, err)
			continue
		}
		if !bytes.Equal(dst[headerSize:len(raw)], raw[headerSize:]) || !bytes.Equal(dst[len(raw):], make([]byte, len(dst)-len(raw))) {
			t.Errorf("%s: loaded bytes differ from the Image, or BSS is not zeroed", name)
		}
	}
}

func TestParseImageLegacyAndSmallSize(t *testing.T) {
	img, err := ParseImage(Bytes(fakeImage(0x1234, 0, 0, 100)))
	if err != nil {
		t.Fatal(err)
	}
	if img.TextOffset != 0x80000 || img.Size != 164 {
		t.Errorf("legacy image: text_offset %#x size %d, want 0x80000 and the file size", img.TextOffset, img.Size)
	}
	if _, err := ParseImage(Bytes(gz(t, fakeImage(0, 0, 0, 100)))); err == nil || !strings.Contains(err.Error(), "without image_size") {
		t.Errorf("compressed legacy image: %v", err)
	}
}

func TestParseImageRejects(t *testing.T) {
	bad := fakeImage(0, 0x1000, 0, 16)
	bad[offMagic] = 'X'
	for name, c := range map[string]struct {
		file []byte
		msg  string
	}{
		"empty":        {nil, "shorter than"},
		"elf":          {[]byte("\x7fELF\x02\x01\x01" + strings.Repeat("\x00", 100)), "no ARM\\x64 magic"},
		"bad-magic":    {bad, "no ARM\\x64 magic"},
		"big-endian":   {fakeImage(0, 0x1000, flagBigEndian, 16), "big-endian"},
		"bad-gzip":     {[]byte{0x1f, 0x8b, 8, 0, 1, 2, 3}, "bad gzip"},
		"zboot-zstd":   {zboot([]byte("xx"), "zstd"), `"zstd"`},
		"zboot-short":  {zboot(nil, "gzip")[:40], "past the end"},
		"huge-offset":  {fakeImage(4<<20, 0x1000, 0, 16), "implausible"},
		"huge-size":    {fakeImage(0, 1<<40, 0, 16), "implausible"},
		"gzip-garbage": {gz(t, bytes.Repeat([]byte("not a kernel "), 10)), "no ARM\\x64 magic"},
	} {
		_, err := ParseImage(Bytes(c.file))
		if !errors.Is(err, ErrNotImage) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want ErrNotImage mentioning %q", name, err, c.msg)
		}
	}
}

func TestLoadRefusesImagesLargerThanTheirHeader(t *testing.T) {
	// A gzip'd Image that inflates past its image_size (a gzip bomb among
	// them) must not write past the kernel's footprint.
	bomb := gz(t, append(fakeImage(0, 0x1000, 0, 0), make([]byte, 64<<20)...))
	img, err := ParseImage(Bytes(bomb))
	if err != nil {
		t.Fatal(err)
	}
	if err := img.load(make([]byte, img.Size)); err == nil || !strings.Contains(err.Error(), "more than its image_size") {
		t.Fatalf("oversized gzip: %v", err)
	}
	// A truncated gzip stream is refused at load time.
	good := gz(t, fakeImage(0, 0x100000, 0, 0x10000))
	img, err = ParseImage(Bytes(good[:len(good)/2]))
	if err != nil {
		t.Fatal(err)
	}
	if err := img.load(make([]byte, img.Size)); err == nil {
		t.Fatal("truncated gzip loaded")
	}
}

func TestPlace(t *testing.T) {
	const base = 0x4000_0000
	img := &Image{TextOffset: 0, Size: 20 * mib}
	l, err := Place(base, 128*mib, img, 3*mib+5)
	if err != nil {
		t.Fatal(err)
	}
	if l.Kernel != base || l.KernelEnd != base+20*mib {
		t.Errorf("kernel at %#x-%#x", l.Kernel, l.KernelEnd)
	}
	if l.DTB != base+126*mib || l.DTB%8 != 0 {
		t.Errorf("DTB at %#x", l.DTB)
	}
	if l.Initrd%initrdAlign != 0 || l.InitrdEnd-l.Initrd != 3*mib+5 || l.InitrdEnd > l.DTB || l.Initrd < l.KernelEnd {
		t.Errorf("initrd at %#x-%#x", l.Initrd, l.InitrdEnd)
	}
	// Without an initrd nothing is placed for it.
	if l, _ := Place(base, 128*mib, img, 0); l.Initrd != 0 || l.InitrdEnd != 0 {
		t.Errorf("no initrd, yet placed at %#x", l.Initrd)
	}
	// The smallest RAM that fits works, one MiB less does not.
	if _, err := Place(base, 24*mib, img, 2*mib); err != nil {
		t.Errorf("exact fit: %v", err)
	}
	_, err = Place(base, 23*mib, img, 2*mib)
	if err == nil || !strings.Contains(err.Error(), "memory too small") || !strings.Contains(err.Error(), "at least 24 MiB") {
		t.Errorf("too small: %v", err)
	}
	if _, err := Place(base+4096, 128*mib, img, 0); err == nil {
		t.Error("unaligned RAM base accepted")
	}
}

func TestLoad(t *testing.T) {
	ram, err := memory.New(0x4000_0000, 8*mib)
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	kernel := fakeImage(0, 0x10000, 0, 1000)
	img, err := ParseImage(Bytes(gz(t, kernel)))
	if err != nil {
		t.Fatal(err)
	}
	initrd := []byte("initrd contents")
	l, err := Place(ram.Base(), ram.Size(), img, uint64(len(initrd)))
	if err != nil {
		t.Fatal(err)
	}
	if err := Load(ram, l, img, Bytes(initrd)); err != nil {
		t.Fatal(err)
	}
	k, _ := ram.Slice(l.Kernel, uint64(len(kernel)))
	r, _ := ram.Slice(l.Initrd, uint64(len(initrd)))
	if !bytes.Equal(k, kernel) || !bytes.Equal(r, initrd) {
		t.Fatal("RAM does not hold the kernel and initrd at their places")
	}
}
