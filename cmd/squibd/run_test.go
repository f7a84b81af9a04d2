package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/squibvm/squib/fdt"
)

var squibdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "squibd-test")
	if err != nil {
		panic(err)
	}
	squibdBin = filepath.Join(dir, "squibd")
	if out, err := exec.Command("go", "build", "-o", squibdBin, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runSquibd runs the real binary and returns its exit status and stderr.
func runSquibd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(squibdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// writeKernel writes a file with a valid arm64 Image header of the given
// image_size (the body is zeros: enough to be placed, not to boot).
func writeKernel(t testing.TB, imageSize uint64) string {
	b := make([]byte, 64<<10)
	binary.LittleEndian.PutUint64(b[0x10:], imageSize)
	binary.LittleEndian.PutUint32(b[0x38:], 0x644D5241)
	path := filepath.Join(t.TempDir(), "Image")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	kernel := writeKernel(t, 16<<20)
	script := filepath.Join(dir, "script.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho not a kernel\n"+strings.Repeat("#\n", 64)), 0o755)
	initrd := filepath.Join(dir, "initrd")
	os.WriteFile(initrd, make([]byte, 40<<20), 0o644)

	cases := []struct {
		name   string
		args   []string
		status int
		msg    string
	}{
		{"no kernel flag", []string{"run"}, exitUsage, "--kernel is required"},
		{"unknown flag", []string{"run", "--kernel", kernel, "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{"bad flag value", []string{"run", "--kernel", kernel, "--memory", "-1"}, exitUsage, `invalid value "-1" for flag -memory`},
		{"unknown command", []string{"launch"}, exitUsage, `unknown command "launch"`},
		{"bad console", []string{"run", "--kernel", kernel, "--console", "tcp:1"}, exitUsage, "use stdio or file:PATH"},
		{"missing kernel", []string{"run", "--kernel", filepath.Join(dir, "nope")}, exitError, "no such file or directory"},
		{"kernel is a directory", []string{"run", "--kernel", dir}, exitError, "not a regular file"},
		{"not an Image", []string{"run", "--kernel", script}, exitError, "not an arm64 Linux Image: no ARM\\x64 magic"},
		{"missing initrd", []string{"run", "--kernel", kernel, "--initrd", filepath.Join(dir, "nope")}, exitError, "--initrd: open"},
		{"memory too small", []string{"run", "--kernel", kernel, "--memory", "16"}, exitError, "memory too small"},
		{"initrd larger than memory", []string{"run", "--kernel", kernel, "--initrd", initrd, "--memory", "32"}, exitError, "memory too small"},
		{"initrd does not fit", []string{"run", "--kernel", kernel, "--initrd", initrd, "--memory", "50"}, exitError, "memory too small"},
		{"zero cpus", []string{"run", "--kernel", kernel, "--cpus", "0"}, exitError, "--cpus 0: a VM needs at least one vCPU"},
		{"too many cpus", []string{"run", "--kernel", kernel, "--cpus", "500"}, exitError, "at most 123"},
		{"bad disk option", []string{"run", "--kernel", kernel, "--disk", "a.img,rw"}, exitUsage, `invalid value "a.img,rw" for flag -disk: unknown option "rw"`},
		{"disk without a path", []string{"run", "--kernel", kernel, "--disk", ",ro"}, exitUsage, "no image path"},
		{"two root disks", []string{"run", "--kernel", kernel, "--disk", "a.img,root", "--disk", "b.img,ro,root"}, exitError,
			"drive disk1: drive disk0 is already the root device"},
		{"net of no kind", []string{"run", "--kernel", kernel, "--net", "slirp"}, exitUsage, `invalid value "slirp" for flag -net: "slirp": use user, tap:NAME or unixgram:PATH`},
		{"net bad MAC", []string{"run", "--kernel", kernel, "--net", "user,mac=01:02"}, exitUsage, "mac=01:02 is not a MAC address"},
		{"net multicast MAC", []string{"run", "--kernel", kernel, "--net", "tap:t0,mac=01:00:00:00:00:01"}, exitUsage, "not a unicast Ethernet address"},
		{"net vfkit on tap", []string{"run", "--kernel", kernel, "--net", "tap:t0,vfkit"}, exitUsage, `unknown option "vfkit"`},
		{"publish without user", []string{"run", "--kernel", kernel, "--net", "tap:t0", "--publish", "8080:80"}, exitUsage, "--publish needs --net user"},
		{"publish bad", []string{"run", "--kernel", kernel, "--net", "user", "--publish", "80"}, exitUsage, "HOST_PORT:GUEST_PORT"},
		{"vsock without a path", []string{"run", "--kernel", kernel, "--vsock", "3"}, exitUsage, `invalid value "3" for flag -vsock: use CID,PATH`},
		{"vsock CID not a number", []string{"run", "--kernel", kernel, "--vsock", "three,v.sock"}, exitUsage, `guest CID "three" is not a number`},
		{"vsock reserved CID", []string{"run", "--kernel", kernel, "--vsock", "2,v.sock"}, exitUsage, "guest CID 2 is reserved"},
		{"vsock path not a socket", []string{"run", "--kernel", kernel, "--vsock", "3," + initrd}, exitError, "--vsock: " + initrd + " exists and is not a socket"},
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "arm64" {
		cases = append(cases, struct {
			name   string
			args   []string
			status int
			msg    string
		}{"no hypervisor", []string{"run", "--kernel", kernel}, exitError, "no usable hypervisor"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, stderr := runSquibd(t, c.args...)
			if status != c.status || !strings.Contains(stderr, c.msg) {
				t.Fatalf("status %d, stderr %q; want status %d and %q", status, stderr, c.status, c.msg)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic:") {
				t.Fatalf("stack trace on stderr: %s", stderr)
			}
			// Every mistake, of usage or input, is exactly one line.
			if strings.Count(stderr, "\n") != 1 {
				t.Fatalf("want one line on stderr, got %q", stderr)
			}
		})
	}
}

func TestDumpDTB(t *testing.T) {
	kernel := writeKernel(t, 16<<20)
	out := filepath.Join(t.TempDir(), "board.dtb")
	status, stderr := runSquibd(t, "run", "--kernel", kernel, "--cpus", "4", "--memory", "512",
		"--cmdline", "console=ttyAMA0 quiet", "--dump-dtb", out)
	if status != 0 {
		t.Fatalf("status %d: %s", status, stderr)
	}
	blob, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	root, _, err := fdt.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	if root.Find("/cpus/cpu@3") == nil || root.Find("/cpus/cpu@4") != nil {
		t.Error("the DTB does not describe exactly 4 CPUs")
	}
	if args, _ := root.Find("/chosen").Strings("bootargs"); len(args) != 1 || args[0] != "console=ttyAMA0 quiet" {
		t.Errorf("bootargs %q", args)
	}
	if reg, _ := root.Find("/memory@40000000").U64("reg"); len(reg) != 2 || reg[1] != 512<<20 {
		t.Errorf("memory reg %#x", reg)
	}
	if root.Find("/virtio_mmio@a000000") != nil {
		t.Error("a virtio-mmio node without --rng")
	}
	if status, stderr := runSquibd(t, "run", "--kernel", kernel, "--rng", "--dump-dtb", out); status != 0 {
		t.Fatalf("--rng: status %d: %s", status, stderr)
	}
	if blob, err = os.ReadFile(out); err == nil {
		root, _, err = fdt.Parse(blob)
	}
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := root.Find("/virtio_mmio@a000000").Strings("compatible"); len(c) != 1 || c[0] != "virtio,mmio" {
		t.Errorf("--rng: the virtio-mmio node's compatible is %q", c)
	}
	// Drives: a virtio-mmio node each, the root drive named on the
	// command line.
	if status, stderr := runSquibd(t, "run", "--kernel", kernel, "--disk", "data.img", "--disk", "root.img,ro,root", "--dump-dtb", out); status != 0 {
		t.Fatalf("--disk: status %d: %s", status, stderr)
	}
	if blob, err = os.ReadFile(out); err == nil {
		root, _, err = fdt.Parse(blob)
	}
	if err != nil {
		t.Fatal(err)
	}
	if args, _ := root.Find("/chosen").Strings("bootargs"); len(args) != 1 || args[0] != "console=ttyAMA0 panic=-1 root=/dev/vda ro" {
		t.Errorf("--disk: bootargs %q", args)
	}
	if root.Find("/virtio_mmio@a000000") == nil || root.Find("/virtio_mmio@a001000") == nil || root.Find("/virtio_mmio@a002000") != nil {
		t.Error("--disk twice: want two virtio-mmio nodes")
	}
	// vsock: a node after the drives'; the dump binds no socket.
	sock := filepath.Join(t.TempDir(), "v.sock")
	if status, stderr := runSquibd(t, "run", "--kernel", kernel, "--disk", "data.img", "--vsock", "3,"+sock, "--dump-dtb", out); status != 0 {
		t.Fatalf("--vsock: status %d: %s", status, stderr)
	}
	if blob, err = os.ReadFile(out); err == nil {
		root, _, err = fdt.Parse(blob)
	}
	if err != nil {
		t.Fatal(err)
	}
	if root.Find("/virtio_mmio@a001000") == nil {
		t.Error("--vsock: no virtio-mmio node after the drive's")
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Error("--dump-dtb bound the vsock socket")
	}
	// A dump that fails after writing (its path is a directory, so the final
	// rename fails) leaves no temporary file behind.
	dir := t.TempDir()
	bad := filepath.Join(dir, "x.dtb")
	if err := os.Mkdir(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	if status, stderr := runSquibd(t, "run", "--kernel", kernel, "--dump-dtb", bad); status != 1 {
		t.Errorf("dump onto a directory: status %d, want 1: %s", status, stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "x.dtb" {
		t.Errorf("leftover files: %v", entries)
	}
}
