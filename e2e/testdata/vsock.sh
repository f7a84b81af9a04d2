# virtio-vsock, Firecracker's hybrid vsock: a guest configured with
# "vsock" in --config-file runs guest-init's test_vsock (an echo server on
# port 5000, then the workload). From L1, through squibd's socket:
#   - 50 host-initiated streams at once echo 1 MiB each (labtool vsock-echo);
#   - the guest connects to host port 5001, squibd's socket's _5001 (labtool
#     vsock-listen), and sends 1 MiB, which arrives whole;
#   - a stream whose host reader stops does not hold up another (labtool
#     vsock-stall);
#   - a stream held open (labtool vsock-hold) while the guest is paused and
#     snapshotted. A restore into b onto the socket a still holds is
#     refused, naming vsock_override; one with --vsock-uds /tmp/b.vsock
#     runs, the guest's old connections reset (the held one's echo child
#     ends in an error), and a new stream and a guest-initiated one work at
#     once on the new socket, which b removes when it ends.
. /e2e/lib.sh
printf '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=vsock"},
 "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
 "vsock": {"guest_cid": 3, "uds_path": "/tmp/a.vsock"}}\n' >/tmp/vsock.json
vsockcfg() { /labtool get /tmp/$1.sock /vm/config | grep -o '"vsock":{[^}]*}'; }
resets() { grep -c 'SQUIB-VSOCK-ECHO-END' /tmp/$1.out; }

# guestconnect NAME BYTES: NAME's guest sends BYTES to host port 5001,
# where labtool listens; prints "GUEST NAME <its line>" and "LISTEN NAME
# <labtool's line>".
guestconnect() {
	local k
	rm -f /tmp/$1.vsock_5001 /tmp/listen-$1.out
	/labtool vsock-listen /tmp/$1.vsock_5001 >/tmp/listen-$1.out 2>&1 &
	bg="$bg $!"
	k=0
	until [ -S /tmp/$1.vsock_5001 ] || [ $k -ge 100 ]; do
		sleep 0.1
		k=$((k + 1))
	done
	k=$(grep -c 'SQUIB-GUEST-RUN SQUIB-VSOCK-' /tmp/$1.out)
	say $1 "run vsock connect 2 5001 $2"
	waitn "SQUIB-GUEST-RUN SQUIB-VSOCK-.*$eol" /tmp/$1.out $((k + 1)) || fail 103 $1
	waitfor 'VSOCK-LISTEN' /tmp/listen-$1.out 120 || { cat /tmp/listen-$1.out; fail 104 $1; }
	echo "GUEST $1 $(grep -o 'SQUIB-VSOCK-[A-Z]* .*' /tmp/$1.out | grep -v ECHO | tail -1 | tr -d '\r' | cut -d' ' -f2-)"
	echo "LISTEN $1 $(cut -d' ' -f2- /tmp/listen-$1.out)"
}

start a --config-file /tmp/vsock.json
waitfor 'SQUIB-VSOCK-ECHO-READY port=5000' /tmp/a.out 300 || fail 100 a
waitfor 'SQUIB-GUEST-COUNTER=1 ' /tmp/a.out || fail 101 a
echo "CONFIG a $(vsockcfg a)"
out=$(/labtool vsock-echo /tmp/a.vsock 5000 50 1048576 2>&1) || { echo "ECHO $out"; fail 102 a; }
echo "ECHO $out"
guestconnect a 1048576
out=$(/labtool vsock-stall /tmp/a.vsock 5000 2>&1) || { echo "STALL $out"; fail 105 a; }
echo "STALL $out"
/labtool vsock-hold /tmp/a.vsock 5000 >/tmp/hold.out 2>&1 &
bg="$bg $!"
waitfor 'VSOCK-HOLD open' /tmp/hold.out 60 || { cat /tmp/hold.out; fail 106 a; }
echo "HOLD a $(head -1 /tmp/hold.out | cut -d' ' -f2-)"
echo "RESETS a before=$(resets a)"

/squibd pause --socket /tmp/a.sock >/dev/null || fail 107 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/vsock.state --mem /tmp/vsock.mem >/dev/null || fail 108 a
echo "DESCRIBE $(/squibd snapshot describe --snapshot /tmp/vsock.state | grep -o '"virtio-vsock" *[0-9]* bytes')"
start b
if msg=$(/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/vsock.state --mem /tmp/vsock.mem 2>&1); then
	echo "SAME-UDS loaded"
	fail 109 b
fi
echo "SAME-UDS $msg"
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/vsock.state --mem /tmp/vsock.mem \
	--vsock-uds /tmp/b.vsock --resume >/dev/null || fail 110 b
out=$(/labtool vsock-echo /tmp/b.vsock 5000 1 1048576 2>&1) || { echo "AFTER $out"; fail 111 b; }
echo "AFTER $out"
kill -9 $pid_a
waitfor 'SQUIB-VSOCK-ECHO-END' /tmp/b.out 60 || fail 112 b
echo "RESET b $(grep -o 'SQUIB-VSOCK-ECHO-END .*' /tmp/b.out | head -1 | tr -d '\r' | cut -d' ' -f2-)"
guestconnect b 65536
echo "CONFIG b $(vsockcfg b)"
kill $pid_b
wait $pid_b
echo "GONE b=$([ -e /tmp/b.vsock ] && echo no || echo yes) a_stale=$([ -S /tmp/a.vsock ] && echo yes || echo no)"
