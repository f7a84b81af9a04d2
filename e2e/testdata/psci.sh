# PSCI on restore, 2 vCPUs. Snapshot s1 has CPU 1 online: restored with the
# default policy, saved (b), both vCPUs run on; a load asking boot_vcpu (c)
# is refused with one line, and the squibd stays unstarted. Snapshot s2 is
# taken after the guest took CPU 1 offline (PSCI CPU_OFF): restored with
# boot_vcpu (e) the guest continues and brings CPU 1 back with PSCI CPU_ON. Each restored squibd's GET /machine-config describes the
# snapshot's machine (2 vCPUs, 192 MiB: not Firecracker's defaults) with the
# load's dirty-page tracking.
. /e2e/lib.sh
vmconfig /tmp/p.json 2 false 192
machine() { # NAME TRACK: GET /machine-config of squibd NAME is the restored one
	[ "$(/labtool get /tmp/$1.sock /machine-config)" = \
		'{"vcpu_count":2,"mem_size_mib":192,"smt":false,"track_dirty_pages":'$2',"huge_pages":"None"}' ]
}
state() { /squibd status --socket /tmp/$1.sock | awk '/^state:/ {print $2}'; }
cpus() { grep -o 'CPUS=[0-9,-]*' /tmp/$1.out | tail -1 | cut -d= -f2; }

start a --config-file /tmp/p.json
waitfor 'SQUIB-GUEST-COUNTER=3 CPUS=0-1 ' /tmp/a.out || fail 40 a
/squibd pause --socket /tmp/a.sock >/dev/null || fail 41 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/s1.state --mem /tmp/s1.mem >/dev/null || fail 42 a
kill -9 $pid_a
n=$(counter a)
/squibd snapshot describe --snapshot /tmp/s1.state --restore-shape | grep -i -A3 'restore' | sed 's/^/S1-SHAPE /'

start b
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/s1.state --mem /tmp/s1.mem --resume >/dev/null || fail 43 b
machine b false || fail 64 b
waitfor "SQUIB-GUEST-COUNTER=$((n + 3)) " /tmp/b.out || fail 44 b
say b "cpu1 0"
waitfor 'SQUIB-GUEST-CPU1=0' /tmp/b.out || fail 45 b
say b "cpu1 1"
waitfor 'SQUIB-GUEST-CPU1=1' /tmp/b.out || fail 46 b
waitfor "SQUIB-GUEST-COUNTER=$(($(counter b) + 1)) CPUS=0-1 " /tmp/b.out || fail 47 b
echo "SAVED from=$n last=$(counter b) cpus=$(cpus b) state=$(state b)"
kill $pid_b

start c
if /squibd snapshot load --socket /tmp/c.sock --snapshot /tmp/s1.state --mem /tmp/s1.mem --vcpu-power boot_vcpu --resume 2>/tmp/c.err >/dev/null; then
	fail 48 c
fi
echo "BSP-ONLINE-ERROR $(cat /tmp/c.err)"
echo "BSP-ONLINE lines=$(wc -l </tmp/c.err) state=$(state c)"
kill $pid_c

start d --config-file /tmp/p.json
waitfor 'SQUIB-GUEST-COUNTER=2 ' /tmp/d.out || fail 50 d
say d "cpu1 0"
waitfor 'SQUIB-GUEST-CPU1=0' /tmp/d.out || fail 51 d
waitfor "SQUIB-GUEST-COUNTER=$(($(counter d) + 1)) CPUS=0 " /tmp/d.out || fail 52 d
/squibd pause --socket /tmp/d.sock >/dev/null || fail 53 d
/squibd snapshot create --socket /tmp/d.sock --snapshot /tmp/s2.state --mem /tmp/s2.mem >/dev/null || fail 54 d
kill -9 $pid_d
n=$(counter d)
start e
/squibd snapshot load --socket /tmp/e.sock --snapshot /tmp/s2.state --mem /tmp/s2.mem --vcpu-power boot_vcpu --track-dirty-pages --resume >/dev/null || fail 55 e
machine e true || fail 65 e
waitfor "SQUIB-GUEST-COUNTER=$((n + 2)) CPUS=0 " /tmp/e.out || fail 56 e
say e "cpu1 1"
waitfor 'SQUIB-GUEST-CPU1=1' /tmp/e.out || fail 57 e
waitfor "SQUIB-GUEST-COUNTER=$(($(counter e) + 1)) CPUS=0-1 " /tmp/e.out || fail 58 e
echo "BSP-OFFLINE from=$n last=$(counter e) cpus=$(cpus e) state=$(state e)"
