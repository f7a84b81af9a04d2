package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/squibvm/squib/lab"
)

// snapshotRestore boots a counter guest from a config file with the API on,
// pauses it, snapshots it, kills squibd with SIGKILL, loads the snapshot
// into a new squibd and lets it run: the guest's counter must continue
// from where it stopped.
const snapshotRestore = `printf '%s' '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 panic=-1 squib.test=counter"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}' >/tmp/vm.json
waitfor() { i=0; until grep -q "$1" "$2" || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done; grep -q "$1" "$2"; }
/squibd --api-sock /tmp/a.sock --config-file /tmp/vm.json >/tmp/a.out 2>&1 &
a=$!
waitfor SQUIB-GUEST-COUNTER=3 /tmp/a.out || { cat /tmp/a.out; exit 10; }
/squibd pause --socket /tmp/a.sock >/dev/null || exit 11
sleep 1
echo "BEFORE $(grep -o 'SQUIB-GUEST-COUNTER=[0-9]*' /tmp/a.out | tail -1)"
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem >/dev/null || { cat /tmp/a.out; exit 12; }
kill -9 $a
ls -ls /tmp/vm.state /tmp/vm.mem
/squibd --api-sock /tmp/b.sock >/tmp/b.out 2>&1 &
b=$!
i=0; until [ -S /tmp/b.sock ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem --resume || { cat /tmp/b.out; exit 13; }
n=$(( $(grep -o 'SQUIB-GUEST-COUNTER=[0-9]*' /tmp/a.out | tail -1 | cut -d= -f2) + 3 ))
waitfor "SQUIB-GUEST-COUNTER=$n" /tmp/b.out || { cat /tmp/b.out; exit 14; }
/squibd status --socket /tmp/b.sock
kill $b; wait $b
grep -o 'SQUIB-GUEST-COUNTER=[0-9]*' /tmp/b.out | sed 's/^/AFTER /'`

var counterLine = regexp.MustCompile(`(BEFORE|AFTER) SQUIB-GUEST-COUNTER=(\d+)`)

// TestSnapshotRestore: a snapshot of a running guest, restored in a new
// squibd after the first was killed, continues where it was.
func TestSnapshotRestore(t *testing.T) {
	lab.Require(t)
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			r := lab.Run(t, lab.Options{PageSize: ps, Commands: []lab.Command{
				{Name: "snapshot-restore", Args: []string{"/bin/sh", "-c", snapshotRestore}}}})[0]
			if r.ExitCode != 0 {
				t.Fatalf("scenario exited %d\n%s", r.ExitCode, r.Output)
			}
			before, after := -1, []int{}
			for _, m := range counterLine.FindAllStringSubmatch(r.Output, -1) {
				n, _ := strconv.Atoi(m[2])
				if m[1] == "BEFORE" {
					before = n
				} else {
					after = append(after, n)
				}
			}
			if before < 3 || len(after) < 3 {
				t.Fatalf("counter before %d, after %v\n%s", before, after, r.Output)
			}
			for i, n := range after {
				if n != before+1+i {
					t.Fatalf("after restore the counter reads %v; want it to continue from %d\n%s", after, before, r.Output)
				}
			}
			if !strings.Contains(r.Output, "state:   Running") {
				t.Errorf("the restored squibd does not report Running\n%s", r.Output)
			}
		})
	}
}
