# A running workload guest is snapshotted, its squibd killed with SIGKILL,
# and the snapshot restored into two new squibds side by side: clone b maps
# the memory file copy-on-write, clone c copies it in. Each must continue
# the guest's counter from where it stopped, with its memory pattern intact.
. /e2e/lib.sh
vmconfig /tmp/vm.json 1
start a --config-file /tmp/vm.json
waitfor 'SQUIB-GUEST-COUNTER=3 ' /tmp/a.out || fail 10 a
/squibd pause --socket /tmp/a.sock >/dev/null || fail 11 a
sleep 1
n=$(counter a)
echo "BEFORE counter=$n pattern=$(pattern a)"
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem >/dev/null || fail 12 a
kill -9 $pid_a
echo "MEMORY-FILE apparent=$(stat -c %s /tmp/vm.mem) allocated=$(($(stat -c %b /tmp/vm.mem) * 512))"
start b
start c
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem --resume >/dev/null || fail 13 b
/squibd snapshot load --socket /tmp/c.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem --copy-memory --resume >/dev/null || fail 14 c
for x in b c; do
	waitfor "SQUIB-GUEST-COUNTER=$((n + 3)) " /tmp/$x.out || fail 15 $x
done
kill -0 $pid_b $pid_c || fail 16 b c # both ran side by side to the end
for x in b c; do
	echo "AFTER $x counters=$(grep -o 'SQUIB-GUEST-COUNTER=[0-9]*' /tmp/$x.out | cut -d= -f2 | head -3 | tr '\n' ,)" \
		"sums=$(sums $x $((n + 1)) | tr '\n' ,) state=$(/squibd status --socket /tmp/$x.sock | awk '/^state:/ {print $2}')"
done
