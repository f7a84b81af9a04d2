# Diff snapshots: a guest with dirty-page tracking gets a full snapshot
# (base) and two diffs, each after it rewrote part of its memory pattern;
# between them, a diff onto a full disk fails and the VM stays paused and
# unharmed, its dirty pages kept for the next diff. At the second diff's
# moment a full snapshot (ref) is also taken: base + diffs merged must hold
# exactly ref's RAM, and restore to a guest that continues.
. /e2e/lib.sh
vmconfig /tmp/d.json 1 true
start a --config-file /tmp/d.json
waitfor 'SQUIB-GUEST-COUNTER=3 ' /tmp/a.out || fail 20 a
snap() { # snap NAME [--diff]: pause a and snapshot it to /tmp/NAME.*
	/squibd pause --socket /tmp/a.sock >/dev/null || fail 21 a
	/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/$1.state --mem /tmp/$1.mem $2 >/dev/null || fail 22 a
}
resume() { /squibd resume --socket /tmp/a.sock >/dev/null || fail 23 a; }

snap base
resume
dirty a 1 2
snap d1 --diff
resume
dirty a 2 3
/squibd pause --socket /tmp/a.sock >/dev/null || fail 24 a
mkdir -p /tmp/full && mount -t tmpfs -o size=64k tmpfs /tmp/full
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/full/x.state --mem /tmp/full/x.mem --diff >/tmp/full.err 2>&1
echo "FULLDISK exit=$? files=$(ls /tmp/full | wc -l) state=$(/squibd status --socket /tmp/a.sock | awk '/^state:/ {print $2}') msg=$(head -1 /tmp/full.err)"
m=$(counter a)
resume
waitfor "SQUIB-GUEST-COUNTER=$((m + 2)) " /tmp/a.out && echo "FULLDISK-RESUMED from=$m"
dirty a 1 4
snap d2 --diff
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/ref.state --mem /tmp/ref.mem >/dev/null || fail 25 a
n=$(counter a)
echo "BEFORE counter=$n pattern=$(pattern a)"
kill -9 $pid_a
for s in base d1 d2 ref; do
	echo "SNAPSHOT $s $(blocks $s) $(ls -l /tmp/$s.mem | awk '{print "file=" $5}')"
done
/squibd snapshot merge --snapshot /tmp/base.state --mem /tmp/base.mem --diff /tmp/d1.state:/tmp/d1.mem \
	--diff /tmp/d2.state:/tmp/d2.mem --out-snapshot /tmp/m.state --out-mem /tmp/m.mem >/dev/null || fail 26
/squibd snapshot verify --snapshot /tmp/m.state --mem /tmp/m.mem >/dev/null || fail 27
ram=$((128 << 20))
cmp -n $ram /tmp/m.mem /tmp/ref.mem && echo "RAM-EQUAL merged=ref"
cmp -n $ram /tmp/base.mem /tmp/ref.mem >/dev/null || echo "RAM-DIFFERS base!=ref"
start b
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/d2.state --mem /tmp/d2.mem >/tmp/direct.err 2>&1
echo "DIRECT-DIFF exit=$? msg=$(head -1 /tmp/direct.err)"
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/m.state --mem /tmp/m.mem --resume >/dev/null || fail 28 b
waitfor "SQUIB-GUEST-COUNTER=$((n + 3)) " /tmp/b.out || fail 29 b
echo "AFTER b counters=$(grep -o 'SQUIB-GUEST-COUNTER=[0-9]*' /tmp/b.out | cut -d= -f2 | head -3 | tr '\n' ,)" \
	"sums=$(sums b $((n + 1)) | tr '\n' ,)"
