package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// stamp runs a shell command inside L1 and prefixes every line it prints
// with L1's uptime (10 ms resolution) at the moment the line arrived. Only
// shell builtins run per line, so stamping costs no process creation.
const stamp = `read t _ </proc/uptime; echo "T $t START"; %s 2>&1 |
while IFS= read -r l; do read t _ </proc/uptime; echo "T $t $l"; done`

// rssScript boots a guest that waits at a shell, then sums the resident
// memory of squibd's mappings other than guest RAM (the one mapping whose
// size is the guest's memory) from /proc/PID/smaps, and the anonymous part
// of it: what is left is the squibd binary's pages, which the page cache
// shares between all squibd processes. It runs twice: as is, and with
// GODEBUG=disablethp=1, which keeps the Go heap out of the transparent huge
// pages L1's kernel gives all anonymous memory (guest RAM keeps them).
const rssScript = `mkfifo /tmp/in
env $SQUIBD_ENV /squibd run --memory 256 --kernel /guest/Image --initrd /guest/initrd.gz \
  --cmdline "console=ttyAMA0 earlycon quiet squib.test=shell" </tmp/in >/tmp/out 2>&1 &
pid=$!
exec 3>/tmp/in
i=0; until grep -q SQUIB-GUEST-INIT /tmp/out || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
awk '/^Size:/ {s=$2} /^Rss:/ {if (s == 262144) g += $2; else r += $2}
  /^Anonymous:/ {if (s != 262144) a += $2}
  END {print "RSS-EXCL-GUEST-KB=" r; print "ANON-EXCL-GUEST-KB=" a; print "RSS-GUEST-KB=" g}' /proc/$pid/smaps
echo "exit" >&3
exec 3>&-
wait $pid`

var stampLine = regexp.MustCompile(`(?m)^T ([0-9.]+) (.*)$`)

// stamps returns the uptime of the first line containing each marker.
func stamps(out string, markers ...string) ([]float64, error) {
	got := make([]float64, len(markers))
	for i, m := range markers {
		got[i] = -1
		for _, l := range stampLine.FindAllStringSubmatch(out, -1) {
			if strings.Contains(l[2], m) {
				got[i], _ = strconv.ParseFloat(l[1], 64)
				break
			}
		}
		if got[i] < 0 {
			return nil, fmt.Errorf("no line with %q", m)
		}
	}
	return got, nil
}

// BenchmarkBoot measures, in the lab, squibd's start to the boot vCPU's
// first entry, that entry to the guest's init, and squibd's resident memory
// apart from guest RAM. Everything is emulated (TCG): read the ratio of
// squibd's own start-up to the guest's boot, not the absolute times.
func BenchmarkBoot(b *testing.B) {
	lab.Require(b)
	const boots = 5
	boot := fmt.Sprintf(stamp, "/squibd run --log-level info --kernel /guest/Image --initrd /guest/initrd.gz "+
		`--cmdline "console=ttyAMA0 earlycon quiet panic=-1 squib.test=poweroff"`)
	var cmds []lab.Command
	for i := range boots {
		cmds = append(cmds, lab.Command{Name: fmt.Sprintf("boot-%d", i), Args: []string{"/bin/sh", "-c", boot}})
	}
	cmds = append(cmds,
		lab.Command{Name: "rss", Args: []string{"/bin/sh", "-c", "SQUIBD_ENV= ; " + rssScript}},
		lab.Command{Name: "rss-nothp", Args: []string{"/bin/sh", "-c", "SQUIBD_ENV=GODEBUG=disablethp=1; " + rssScript}})
	b.ResetTimer()
	for range b.N {
		results := lab.Run(b, lab.Options{PageSize: 4, Commands: cmds})
		var toEntry, toInit []float64
		for _, r := range results[:boots] {
			if r.ExitCode != 0 {
				b.Fatalf("%s: exit %d\n%s", r.Name, r.ExitCode, r.Output)
			}
			t, err := stamps(r.Output, "START", `msg="vCPU powered on" vcpu=0`, "SQUIB-GUEST-INIT")
			if err != nil {
				b.Fatalf("%s: %v\n%s", r.Name, err, r.Output)
			}
			toEntry = append(toEntry, 1000*(t[1]-t[0]))
			toInit = append(toInit, 1000*(t[2]-t[1]))
		}
		var kb, anon [2]float64 // KiB as is, and with disablethp
		for i, rss := range results[boots:] {
			m := regexp.MustCompile(`RSS-EXCL-GUEST-KB=(\d+)\s+ANON-EXCL-GUEST-KB=(\d+)`).FindStringSubmatch(rss.Output)
			if rss.ExitCode != 0 || m == nil {
				b.Fatalf("%s: exit %d\n%s", rss.Name, rss.ExitCode, rss.Output)
			}
			kb[i], _ = strconv.ParseFloat(m[1], 64)
			anon[i], _ = strconv.ParseFloat(m[2], 64)
		}
		entry, init := median(toEntry), median(toInit)
		b.ReportMetric(entry, "ms-start-to-entry")
		b.ReportMetric(init, "ms-entry-to-init")
		b.ReportMetric(entry/(entry+init), "start-share")
		b.ReportMetric(kb[0]/1024, "MiB-rss-excl-guest")
		b.ReportMetric(anon[0]/1024, "MiB-anon-excl-guest")
		b.ReportMetric(anon[1]/1024, "MiB-anon-excl-guest-nothp")
		b.Logf("emulated lab, median of %d boots: squibd start -> vCPU 0 entry %.0f ms, entry -> guest init %.0f ms "+
			"(squibd's share of start-to-init: %.1f%%)", boots, entry, init, 100*entry/(entry+init))
		b.Logf("squibd RSS without guest RAM %.1f MiB (Firecracker's bar: 5 MiB): %.1f MiB anonymous, %.1f MiB the binary's "+
			"shared pages; with GODEBUG=disablethp=1 %.1f MiB: %.1f MiB anonymous",
			kb[0]/1024, anon[0]/1024, (kb[0]-anon[0])/1024, kb[1]/1024, anon[1]/1024)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkSnapshotLab measures snapshots in the lab (testdata/bench.sh),
// with 256 MiB, 1 GiB and 4 GiB guests in one L1: restore latency (load
// request to vCPU 0 running, median of 5), bytes a full snapshot writes
// against the guest's non-zero bytes, its throughput against a plain
// sequential write of as many bytes, and diff size against the memory the
// guest rewrote. Times are emulated: read the ratios.
func BenchmarkSnapshotLab(b *testing.B) {
	lab.Require(b)
	files := labFiles(b)
	sizes := []int{256, 1024, 4096}
	args := []string{"/bin/sh", "/e2e/bench.sh"}
	for _, s := range sizes {
		args = append(args, strconv.Itoa(s))
	}
	b.ResetTimer()
	for range b.N {
		r := lab.Run(b, lab.Options{PageSize: 4, Files: files, Timeout: 40 * time.Minute,
			Commands: []lab.Command{{Name: "bench", Args: args}}})[0]
		if r.ExitCode != 0 {
			b.Fatalf("bench.sh exited %d\n%s", r.ExitCode, r.Output)
		}
		// go test keeps 10 lines of a benchmark's log: one per size.
		restore, lines, creates := map[int][]float64{}, map[int][]string{}, map[int]*createRuns{}
		for _, line := range strings.Split(r.Output, "\n") {
			kind, _, _ := strings.Cut(line, " ")
			f := fields(line, kind)
			mib, _ := strconv.Atoi(f["mib"])
			ms := func(key string) float64 {
				d, err := time.ParseDuration(f[key])
				if err != nil {
					b.Fatalf("%s in %q\n%s", key, line, r.Output)
				}
				return float64(d) / float64(time.Millisecond)
			}
			switch kind {
			case "RESTORE":
				restore[mib] = append(restore[mib], ms("to_vcpu0"))
			case "CREATE":
				c := creates[mib]
				if c == nil {
					c = &createRuns{alloc: num(f["allocated"]), nonzero: num(f["nonzero"])}
					creates[mib] = c
				}
				c.took, c.seq = append(c.took, ms("took")), append(c.seq, ms("seqwrite"))
				for i, k := range []string{"save", "scan", "write", "sync"} {
					c.parts[i] = append(c.parts[i], ms(k))
				}
			case "DIFF":
				data := num(f["data_blocks"]) * num(f["block_size"])
				lines[mib] = append(lines[mib], fmt.Sprintf("diff after rewriting %.0f MiB: %.2f MiB (%d blocks) in %.0f ms",
					num(f["dirtied"])/(1<<20), data/(1<<20), int(num(f["data_blocks"])), ms("took")))
			}
		}
		for _, s := range sizes {
			if c := creates[s]; c != nil {
				lines[s] = append([]string{c.String()}, lines[s]...)
			}
			if len(restore[s]) == 0 {
				b.Fatalf("no restore figures for %d MiB\n%s", s, r.Output)
			}
			b.Logf("%4d MiB guest: restore (load request -> vCPU 0 running) median of %d %.1f ms, %.2fx the 256 MiB figure, runs %.0f ms; %s",
				s, len(restore[s]), median(restore[s]), median(restore[s])/median(restore[sizes[0]]), restore[s], strings.Join(lines[s], "; "))
			b.ReportMetric(median(restore[s]), fmt.Sprintf("ms-restore-%dM", s))
		}
	}
}

// createRuns are one guest's full snapshots and the plain writes after each.
type createRuns struct {
	alloc, nonzero float64
	took, seq      []float64
	parts          [4][]float64 // save, scan, write, sync
}

func (c *createRuns) String() string {
	took, seq := median(c.took), median(c.seq)
	return fmt.Sprintf("full snapshot %.1f MiB written for %.1f MiB non-zero (%.3fx), median of %d: %.0f ms "+
		"(saving state %.0f; scanning RAM %.0f and writing it %.0f, summed over parallel goroutines; syncing %.0f), "+
		"a plain write of as much %.0f ms (throughput %.2fx; runs %.0f ms against %.0f ms)",
		c.alloc/(1<<20), c.nonzero/(1<<20), c.alloc/c.nonzero, len(c.took), took,
		median(c.parts[0]), median(c.parts[1]), median(c.parts[2]), median(c.parts[3]), seq, seq/took, c.took, c.seq)
}

func num(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// BenchmarkBlkLab measures virtio-blk in the lab (testdata/blkbench.sh),
// on each L1 page size: sequential write and read (1 MiB blocks, 256 MiB)
// and 4 KiB random reads, by the same program (lab/prog/iobench.c) in the
// guest on a squibd drive and in L1 on the image file behind it, and the
// longest gap between the guest's once-a-second ticks during the guest's
// I/O (a stalled vCPU shows as a gap well over a second). The guest runs
// three rounds, each with queue notifications through KVM's ioeventfd
// (SQUIB_KVM_IOEVENTFD=on) and as MMIO exits (the default); the figures
// are medians. L1's /tmp is
// a RAM filesystem without O_DIRECT, so L1's figures are its page cache's:
// the floor is memory speed, not a disk's. Emulated: read the ratios.
func BenchmarkBlkLab(b *testing.B) {
	lab.Require(b)
	files := labFiles(b)
	for range b.N {
		for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
			r := lab.Run(b, lab.Options{PageSize: ps, Files: files, Timeout: 40 * time.Minute,
				Commands: []lab.Command{{Name: "blkbench", Args: []string{"/bin/sh", "/e2e/blkbench.sh"}}}})[0]
			if r.ExitCode != 0 {
				b.Fatalf("%dK: blkbench.sh exited %d (%s)\n%s", ps, r.ExitCode, why(r.Output), r.Output)
			}
			host := map[string]float64{}
			guest := map[string]map[string][]float64{"IOEVENTFD": {}, "EXITS": {}}
			ticks := map[string][]float64{}
			gaps := map[string]float64{}
			writes := map[string][]float64{} // MMIO write exits of each guest run
			for _, line := range strings.Split(r.Output, "\n") {
				line = strings.TrimRight(line, "\r")
				run, rest, _ := strings.Cut(line, " ")
				if f := fields(line, "HOST SQUIB-IOBENCH"); f != nil {
					host[f["op"]] = num(f[blkUnit(f["op"])])
				} else if f := fields(rest, "SQUIB-IOBENCH"); f != nil && guest[run] != nil {
					guest[run][f["op"]] = append(guest[run][f["op"]], num(f[blkUnit(f["op"])]))
				} else if m := mmioWrites.FindStringSubmatch(rest); m != nil && guest[run] != nil {
					writes[run] = append(writes[run], num(m[1]))
				} else if f := fields(rest, "SQUIB-GUEST-TICK"); f != nil {
					if f["n"] == "1" {
						ticks[run] = nil // a new guest
					}
					if t := ticks[run]; len(t) > 0 {
						gaps[run] = max(gaps[run], num(f["t"])-t[len(t)-1])
					}
					ticks[run] = append(ticks[run], num(f["t"]))
				}
			}
			for _, op := range []string{"seqwrite", "seqread", "randread"} {
				h, g, e := host[op], guest["IOEVENTFD"][op], guest["EXITS"][op]
				if h == 0 || len(g) != 3 || len(e) != 3 {
					b.Fatalf("%dK: %s: L1 %v, the guest %v, without ioeventfd %v; want 1, 3 and 3 figures\n%s", ps, op, h, g, e, r.Output)
				}
				ratio := median(g) / h
				b.ReportMetric(ratio, fmt.Sprintf("x-L1-%s-%dK", op, ps))
				b.Logf("%2dK %-8s L1 %8.1f %s; guest median %7.1f (%.3fx L1; rounds %.1f), without ioeventfd %7.1f (%.3fx; %.1f): ioeventfd %.2fx",
					ps, op, h, blkUnit(op), median(g), ratio, g, median(e), median(e)/h, e, median(g)/median(e))
			}
			for _, run := range []string{"IOEVENTFD", "EXITS"} {
				b.ReportMetric(gaps[run], fmt.Sprintf("s-max-tick-gap-%s-%dK", strings.ToLower(run), ps))
			}
			if len(writes["IOEVENTFD"]) != 3 || len(writes["EXITS"]) != 3 {
				b.Fatalf("%dK: MMIO write exits %v; want 3 runs each way\n%s", ps, writes, r.Output)
			}
			b.Logf("%2dK MMIO write exits per guest run, median: %.0f with ioeventfd, %.0f without", ps, median(writes["IOEVENTFD"]), median(writes["EXITS"]))
			b.Logf("%2dK longest gap between the guest's 1 s ticks during its I/O: %.2f s with ioeventfd, %.2f s without", ps, gaps["IOEVENTFD"], gaps["EXITS"])
		}
	}
}

// mmioWrites finds the MMIO write exits in squibd's "VM ended" log line.
var mmioWrites = regexp.MustCompile(`msg="VM ended".*MMIOWrite:(\d+)`)

// blkUnit is the iobench figure of op that the benchmark compares.
func blkUnit(op string) string {
	if op == "randread" {
		return "iops"
	}
	return "mib_per_s"
}

// BenchmarkNetLab runs testdata/netperf.sh (ROUNDS=3) in one L1 per page
// size: 64 MiB streams between a guest and L1 over vsock and over TCP
// through the user-mode network, each way, against the same stream between
// two L1 processes over a Unix socket and over loopback TCP. It prints
// each figure's median over the rounds and its ratio to the floor's, and
// the vCPUs' exits for the whole run.
func BenchmarkNetLab(b *testing.B) {
	lab.Require(b)
	files := labFiles(b)
	for range b.N {
		for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
			r := lab.Run(b, lab.Options{PageSize: ps, Files: files, Timeout: 60 * time.Minute,
				Commands: []lab.Command{{Name: "netperf", Args: []string{"/bin/sh", "-c", "ROUNDS=3 . /e2e/netperf.sh"}}}})[0]
			if r.ExitCode != 0 {
				b.Fatalf("%dK: netperf.sh exited %d (%s)\n%s", ps, r.ExitCode, why(r.Output), r.Output)
			}
			mbps := map[string][]float64{}
			for _, line := range strings.Split(r.Output, "\n") {
				what, rest, _ := strings.Cut(strings.TrimRight(line, "\r"), " ")
				// L1's side of each stream: the reader for the floors and
				// the uploads, the writer for the downloads.
				if f := fields(rest, "SQUIB-NETBENCH-RECV"); f != nil && !strings.HasSuffix(what, "-GUEST") {
					mbps[what] = append(mbps[what], num(f["mbps"]))
				} else if f := fields(rest, "SQUIB-NETBENCH-SEND"); f != nil && (strings.HasPrefix(what, "FLOOR") || strings.HasSuffix(what, "-DOWN")) {
					mbps[what] = append(mbps[what], num(f["mbps"]))
				}
			}
			for _, s := range []struct{ what, floor string }{
				{"VSOCK-UP", "FLOOR-UNIX"}, {"VSOCK-DOWN", "FLOOR-UNIX"}, {"TCP-UP", "FLOOR-TCP"}, {"TCP-DOWN", "FLOOR-TCP"},
			} {
				g, f := mbps[s.what], mbps[s.floor]
				if len(g) == 0 || len(f) != len(g) {
					b.Fatalf("%dK: %s %v, %s %v: want a figure of each per round\n%s", ps, s.what, g, s.floor, f, r.Output)
				}
				ratio := median(g) / median(f)
				b.ReportMetric(ratio, fmt.Sprintf("x-%s-%dK", strings.ToLower(s.what), ps))
				b.Logf("%2dK %-10s median %8.1f Mbit/s (rounds %.1f), %s %8.1f (%.1f): %.3fx", ps, s.what, median(g), g, s.floor, median(f), f, ratio)
			}
			b.Logf("%2dK %s", ps, lineAfter(r.Output, "EXITS"))
		}
	}
}
