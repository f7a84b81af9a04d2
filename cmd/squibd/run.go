package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/vmm"
)

// runFlags are the flags of "squibd run".
type runFlags struct {
	kernel, initrd, cmdline string
	cpus                    int
	memory                  uint64
	console, dumpDTB        string
	rng                     bool
	drives                  []blk.Config
	vsock                   *vsock.Config
	nets                    []netdev.Config
	publish                 []netdev.Forward
	logLevel                slog.Level
}

func parseRunFlags(args []string, stderr io.Writer) (*runFlags, error) {
	f := &runFlags{}
	fs := flag.NewFlagSet("squibd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.kernel, "kernel", "", "arm64 Linux `Image` to boot (raw or gzip-compressed)")
	fs.StringVar(&f.initrd, "initrd", "", "initial ramdisk `file`")
	fs.StringVar(&f.cmdline, "cmdline", vmm.DefaultCmdline, "kernel command line")
	fs.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fs.Uint64Var(&f.memory, "memory", 256, "guest RAM in `MiB`")
	fs.StringVar(&f.console, "console", "stdio", "where the guest console goes: stdio, or file:`PATH`")
	fs.BoolVar(&f.rng, "rng", false, "give the guest a virtio-rng device (its /dev/hwrng), fed from the host's CSPRNG")
	fs.Func("disk", "give the guest a virtio-blk drive over the raw image `PATH[,ro][,root]` (repeatable: vda, vdb, ... with the root drive first)", func(v string) error {
		d, err := parseDisk(v, len(f.drives))
		f.drives = append(f.drives, d)
		return err
	})
	fs.Func("vsock", "give the guest a virtio-vsock device: `CID,PATH`, the guest's CID and the Unix socket of its host side (Firecracker's hybrid vsock)", func(v string) (err error) {
		f.vsock, err = parseVsock(v)
		return err
	})
	fs.Func("net", "give the guest a virtio-net interface (repeatable: eth0, eth1, ...): `user` (the built-in user-mode network: DHCP, DNS, NAT, no root), tap:NAME (a Linux tap) or unixgram:PATH[,vfkit] (a gvproxy-style peer's socket; vfkit sends \"VFKT\" first); ,mac=MAC sets the guest's MAC", func(v string) error {
		n, err := parseNet(v, len(f.nets))
		f.nets = append(f.nets, n)
		return err
	})
	fs.Func("publish", "forward a host port to the guest on its user-mode network: `[tcp:|udp:][HOST_IP:]HOST_PORT:GUEST_PORT` (repeatable; host IP 127.0.0.1 by default)", func(v string) error {
		p, err := netdev.ParseForward(v)
		f.publish = append(f.publish, p)
		return err
	})
	fs.StringVar(&f.dumpDTB, "dump-dtb", "", "write the device tree squibd would boot with to `PATH` and exit")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelWarn, "log `level`: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if f.kernel == "" {
		return nil, usageError{"--kernel is required"}
	}
	if len(f.publish) > 0 {
		i := slices.IndexFunc(f.nets, func(n netdev.Config) bool { return n.User })
		if i < 0 {
			return nil, usageError{"--publish needs --net user"}
		}
		f.nets[i].Publish = f.publish
	}
	if f.console != "stdio" && !strings.HasPrefix(f.console, "file:") {
		return nil, usageError{fmt.Sprintf("--console %q: use stdio or file:PATH", f.console)}
	}
	return f, nil
}

func runCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	f, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK, nil
	}
	if err != nil {
		return 0, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: f.logLevel}))
	log.Info("squibd starting", "pid", os.Getpid())

	cfg := vmm.Config{Cmdline: f.cmdline, VCPUs: f.cpus, MemoryMiB: f.memory, RNG: f.rng, Drives: f.drives, Vsock: f.vsock, Nets: f.nets}
	release, err := cfg.OpenFiles("--kernel", f.kernel, "--initrd", f.initrd)
	if err != nil {
		return 0, err
	}
	defer release()
	plan, err := vmm.Prepare(cfg)
	if err != nil {
		return 0, err
	}
	if f.dumpDTB != "" {
		return exitOK, writeFileAtomic(f.dumpDTB, plan.DTB)
	}

	if f.vsock != nil { // on any host, before the hypervisor is opened
		if err := vsock.CheckPath(f.vsock.UDSPath); err != nil {
			return 0, fmt.Errorf("--vsock: %w", err)
		}
	}

	console, input := stdout, stdin
	if path, ok := strings.CutPrefix(f.console, "file:"); ok {
		file, err := os.Create(path)
		if err != nil {
			return 0, fmt.Errorf("--console: %w", err)
		}
		defer file.Close()
		console, input = file, nil
	}

	h, err := openHypervisor()
	if err != nil {
		return 0, err
	}
	m, err := vmm.New(h, plan, console, log)
	if err != nil {
		return 0, err
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	var caught os.Signal
	go func() {
		caught = <-signals
		m.Stop()
	}()
	m.Start(input)
	outcome, err := m.Wait()
	log.Info("VM ended", "outcome", outcome, "exits", m.Exits())
	return exitStatus(outcome, err, caught)
}

// parseDisk parses a --disk value, the n-th (its drive id is diskN): an
// image's path, then ro (a read-only drive) and root (the root device)
// in any order. The drive's cache type is Unsafe, Firecracker's default.
func parseDisk(v string, n int) (blk.Config, error) {
	path, opts, _ := strings.Cut(v, ",")
	d := blk.Config{ID: fmt.Sprintf("disk%d", n), Path: path}
	if path == "" {
		return d, errors.New("no image path")
	}
	for o := range strings.SplitSeq(opts, ",") {
		switch o {
		case "":
		case "ro":
			d.ReadOnly = true
		case "root":
			d.Root = true
		default:
			return d, fmt.Errorf("unknown option %q: use PATH[,ro][,root]", o)
		}
	}
	return d, nil
}

// parseNet parses a --net value into interface eth<i>.
func parseNet(v string, i int) (netdev.Config, error) {
	c := netdev.Config{ID: fmt.Sprintf("eth%d", i)}
	spec, opts, _ := strings.Cut(v, ",")
	kind, arg, _ := strings.Cut(spec, ":")
	switch {
	case kind == "user" && arg == "":
		c.User = true
	case kind == "tap" && arg != "":
		c.Tap = arg
	case kind == "unixgram" && arg != "":
		c.Unixgram = arg
	default:
		return c, fmt.Errorf("%q: use user, tap:NAME or unixgram:PATH", spec)
	}
	for o := range strings.SplitSeq(opts, ",") {
		switch mac, isMAC := strings.CutPrefix(o, "mac="); {
		case o == "":
		case o == "vfkit" && c.Unixgram != "":
			c.VfkitMagic = true
		case isMAC:
			m, err := net.ParseMAC(mac)
			if err != nil || len(m) != 6 {
				return c, fmt.Errorf("mac=%s is not a MAC address like 06:00:ac:10:00:02", mac)
			}
			c.MAC = m
		default:
			return c, fmt.Errorf("unknown option %q: use mac=MAC, and vfkit with unixgram", o)
		}
	}
	return c, c.Check()
}

// parseVsock parses a --vsock value: the guest's CID (3 to 2^32-2), a
// comma, the host socket's path.
func parseVsock(v string) (*vsock.Config, error) {
	cid, path, ok := strings.Cut(v, ",")
	if !ok || path == "" {
		return nil, errors.New("use CID,PATH")
	}
	n, err := strconv.ParseUint(cid, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("guest CID %q is not a number", cid)
	}
	if err := vsock.CheckCID(n); err != nil {
		return nil, err
	}
	return &vsock.Config{CID: n, UDSPath: path}, nil
}

// exitStatus maps how a VM ended to squibd's exit status; sig is the
// signal that stopped it, if one did.
func exitStatus(outcome vmm.Outcome, err error, sig os.Signal) (int, error) {
	switch outcome {
	case vmm.PowerOff:
		return exitOK, nil
	case vmm.Reset:
		return exitReset, nil
	case vmm.Stopped:
		return exitSignaled + int(sig.(syscall.Signal)), nil
	}
	return 0, err
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so path holds either its old contents or all of data.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
