package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/squibvm/squib/lab"
)

// stamp runs a shell command inside L1 and prefixes every line it prints
// with L1's uptime (10 ms resolution) at the moment the line arrived. Only
// shell builtins run per line, so stamping costs no process creation.
const stamp = `read t _ </proc/uptime; echo "T $t START"; %s 2>&1 |
while IFS= read -r l; do read t _ </proc/uptime; echo "T $t $l"; done`

// rssScript boots a guest that waits at a shell, then sums the resident
// memory of squibd's mappings other than guest RAM (the one mapping whose
// size is the guest's memory) from /proc/PID/smaps.
const rssScript = `mkfifo /tmp/in
/squibd run --memory 256 --kernel /guest/Image --initrd /guest/initrd.gz \
  --cmdline "console=ttyAMA0 quiet squib.test=shell" </tmp/in >/tmp/out 2>&1 &
pid=$!
exec 3>/tmp/in
i=0; until grep -q SQUIB-GUEST-INIT /tmp/out || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
awk '/^Size:/ {s=$2} /^Rss:/ {if (s == 262144) g += $2; else r += $2}
  END {print "RSS-EXCL-GUEST-KB=" r; print "RSS-GUEST-KB=" g}' /proc/$pid/smaps
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
		`--cmdline "console=ttyAMA0 quiet panic=-1 squib.test=poweroff"`)
	var cmds []lab.Command
	for i := range boots {
		cmds = append(cmds, lab.Command{Name: fmt.Sprintf("boot-%d", i), Args: []string{"/bin/sh", "-c", boot}})
	}
	cmds = append(cmds, lab.Command{Name: "rss", Args: []string{"/bin/sh", "-c", rssScript}})
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
		rss := results[boots]
		m := regexp.MustCompile(`RSS-EXCL-GUEST-KB=(\d+)`).FindStringSubmatch(rss.Output)
		if rss.ExitCode != 0 || m == nil {
			b.Fatalf("rss: exit %d\n%s", rss.ExitCode, rss.Output)
		}
		kb, _ := strconv.ParseFloat(m[1], 64)
		entry, init := median(toEntry), median(toInit)
		b.ReportMetric(entry, "ms-start-to-entry")
		b.ReportMetric(init, "ms-entry-to-init")
		b.ReportMetric(entry/(entry+init), "start-share")
		b.ReportMetric(kb/1024, "MiB-rss-excl-guest")
		b.Logf("emulated lab, median of %d boots: squibd start -> vCPU 0 entry %.0f ms, entry -> guest init %.0f ms "+
			"(squibd's share of start-to-init: %.1f%%); squibd RSS without guest RAM %.1f MiB (Firecracker's bar: 5 MiB)",
			boots, entry, init, 100*entry/(entry+init), kb/1024)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
