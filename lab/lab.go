// Package lab runs squibd for real on an x86_64 Linux machine, for tests.
//
// The lab has three layers:
//
//   - L0: qemu-system-aarch64 with TCG, emulating an arm64 machine with EL2;
//   - L1: Debian's arm64 6.12 kernel (KVM built in, 4 or 16 KiB pages) with
//     a busybox userland, where squibd runs against /dev/kvm;
//   - L2: the guest squibd boots, a minimal kernel built from guest.config
//     with a busybox initramfs whose /init is guest-init.
//
// The shell scripts in this directory build and cache every part (see
// README.md); this package calls them, boots L1 with boot-l1.sh and reads
// the results from the L1 console. Parts are cached in Cache(), shared by
// test processes.
package lab

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Cache returns the lab cache directory: $SQUIB_LAB_CACHE, or else
// ~/.cache/squib-lab.
func Cache() string {
	if d := os.Getenv("SQUIB_LAB_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "squib-lab")
	}
	return filepath.Join(home, ".cache", "squib-lab")
}

// Available reports whether the lab can run here: a Linux host with
// qemu-system-aarch64, the arm64 cross compiler, cpio and the kernel source
// that lab/setup.sh installs.
func Available() bool {
	return len(missing()) == 0
}

func missing() []string {
	if runtime.GOOS != "linux" {
		return []string{"a Linux host"}
	}
	var m []string
	for _, cmd := range []string{"qemu-system-aarch64", "aarch64-linux-gnu-gcc", "cpio", "apt-get"} {
		if _, err := exec.LookPath(cmd); err != nil {
			m = append(m, cmd)
		}
	}
	if _, err := os.Stat("/usr/src/linux-source-6.12.tar.xz"); err != nil {
		m = append(m, "linux-source-6.12")
	}
	return m
}

var setup = sync.OnceValues(func() ([]byte, error) {
	cmd := exec.Command("bash", filepath.Join(Dir(), "setup.sh"))
	return cmd.CombinedOutput()
})

// Require skips the test when the lab cannot run here, or in -short mode.
// When the CI environment variable is "true", it first runs lab/setup.sh to
// install what is missing, and fails the test instead of skipping it.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab: skipped in -short mode")
	}
	ci := os.Getenv("CI") == "true"
	if ci && runtime.GOOS == "linux" {
		if out, err := setup(); err != nil {
			t.Fatalf("lab: setup.sh: %v\n%s", err, out)
		}
	}
	if m := missing(); len(m) > 0 {
		if ci {
			t.Fatalf("lab: missing %s after lab/setup.sh", strings.Join(m, ", "))
		}
		t.Skipf("lab: missing %s; run lab/setup.sh", strings.Join(m, ", "))
	}
}

// Dir returns the lab directory of the source tree, found from the working
// directory (go test runs in the package directory).
func Dir() string {
	return filepath.Join(moduleRoot(), "lab")
}

func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if d == filepath.Dir(d) {
			panic("lab: no go.mod above " + dir)
		}
	}
}

// script runs a lab script and returns the last line of its standard output
// (the scripts print the path they built there). Progress lines, which the
// scripts print on standard error, go to the test log.
func script(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(Dir(), name)}, args...)...)
	cmd.Env = append(os.Environ(), "SQUIB_LAB_CACHE="+Cache())
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	log := &lineLogger{t: t}
	cmd.Stderr = log
	err := cmd.Run()
	log.flush()
	if err != nil {
		t.Fatalf("lab: %s: %v", name, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1]
}

// lineLogger passes whole lines to t.Log.
type lineLogger struct {
	t   testing.TB
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) flush() {
	if len(l.buf) > 0 {
		l.t.Log(string(l.buf))
	}
}

// GuestFiles are the host paths of the L2 guest's boot files. Inside L1 the
// same files are /guest/Image, /guest/Image.gz and /guest/initrd.gz.
type GuestFiles struct {
	Image   string // raw arm64 Image
	ImageGz string // the same Image, gzip'd
	Initrd  string // gzip'd newc initramfs, guest-init as /init
}

// Guest returns the guest kernel and initramfs, building them on first use
// (the kernel takes minutes). Concurrent test processes wait for one build
// through lock files in Cache().
func Guest(t testing.TB) GuestFiles {
	t.Helper()
	kernel := script(t, "build-kernel.sh")
	return GuestFiles{
		Image:   filepath.Join(kernel, "Image"),
		ImageGz: filepath.Join(kernel, "Image.gz"),
		Initrd:  script(t, "build-initrd.sh"),
	}
}

var (
	squibdMu   sync.Mutex
	squibdPath string
	squibdErr  error
)

// Squibd cross-compiles ./cmd/squibd for linux/arm64 (CGO_ENABLED=0) once
// per test process and returns the binary's path. The binary is replaced
// atomically, so parallel test processes never see a partial file.
func Squibd(t testing.TB) string {
	t.Helper()
	squibdMu.Lock()
	defer squibdMu.Unlock()
	if squibdPath == "" && squibdErr == nil {
		squibdPath, squibdErr = buildSquibd()
	}
	if squibdErr != nil {
		t.Fatalf("lab: building squibd: %v", squibdErr)
	}
	return squibdPath
}

func buildSquibd() (string, error) {
	root := moduleRoot()
	// One binary per checkout, so that two worktrees sharing a cache do
	// not swap binaries.
	h := fnv.New64a()
	h.Write([]byte(root))
	dir := filepath.Join(Cache(), fmt.Sprintf("squibd-%x", h.Sum64()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "squibd.tmp*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "./cmd/squibd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	path := filepath.Join(dir, "squibd")
	return path, os.Rename(tmp.Name(), path)
}

// copyFile copies a regular file, keeping its permission bits.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New(src + " is not a regular file")
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
