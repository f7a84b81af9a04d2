# The entropy device across a snapshot: a workload guest configured with
# "entropy": {} (PUT /entropy's body) reads 4 KiB from /dev/hwrng; paused
# and snapshotted (describe names the device), it is killed, and the
# snapshot restored paused into b and at once snapshotted again, which must
# give the same snapshot (labtool same: the device and its queue came back
# as saved). b then resumes, and its guest reads 4 KiB from /dev/hwrng
# again.
. /e2e/lib.sh
rngline='SQUIB-GUEST-RUN SQUIB-GUEST-RNG(=[0-9a-f]{32} bytes=[0-9]+ sum=[0-9a-f]{32}|-FAIL=.*)'
# rng NAME: NAME's guest runs rngread; prints "RNG NAME" and what it said.
rng() {
	local k
	k=$(grep -Ec "$rngline" /tmp/$1.out)
	say $1 "run rngread"
	waitn "$rngline" /tmp/$1.out $((k + 1)) || fail 81 $1
	echo "RNG $1 $(grep -Eo "$rngline" /tmp/$1.out | tail -1 | tr -d '\r' | sed 's/^SQUIB-GUEST-RUN //')"
}
entropy() { /labtool get /tmp/$1.sock /vm/config | grep -o '"entropy":[^}]*}'; }

vmconfig /tmp/rng.json 1 false 128 '"entropy": {}'
start a --config-file /tmp/rng.json
waitfor 'SQUIB-GUEST-COUNTER=2 ' /tmp/a.out || fail 80 a
echo "CONFIG a $(entropy a)"
rng a
/squibd pause --socket /tmp/a.sock >/dev/null || fail 82 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/rng.state --mem /tmp/rng.mem >/dev/null || fail 83 a
n=$(counter a)
kill -9 $pid_a
echo "DESCRIBE $(/squibd snapshot describe --snapshot /tmp/rng.state | grep -o '"virtio-rng" *[0-9]* bytes')"
start b
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/rng.state --mem /tmp/rng.mem >/dev/null || fail 84 b
/squibd snapshot create --socket /tmp/b.sock --snapshot /tmp/rb.state --mem /tmp/rb.mem >/dev/null || fail 85 b
same=$(/labtool same /tmp/rng.state /tmp/rng.mem /tmp/rb.state /tmp/rb.mem 2>&1) || { echo "$same"; fail 86 b; }
echo "ROUNDTRIP result=$same"
/squibd resume --socket /tmp/b.sock >/dev/null || fail 87 b
waitfor "SQUIB-GUEST-COUNTER=$((n + 1)) " /tmp/b.out || fail 88 b
echo "CONFIG b $(entropy b)"
rng b
