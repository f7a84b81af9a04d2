# Stream throughput through squibd's socket devices against the same
# stream between two L1 processes (netbench, lab/prog/netbench.c, no
# pattern: -n), in one L1: a guest with a vsock device and an interface on
# the user-mode network sends 64 MiB each way
#   - over vsock to L1 (guest-initiated, to the hybrid socket's
#     UDS_PORT), against L1's Unix socket (FLOOR-UNIX);
#   - over TCP to L1's loopback through the NAT, against L1's loopback
#     TCP (FLOOR-TCP),
# ROUNDS times (default 1), each round the floors first. squibd's last log
# line (EXITS) counts its vCPUs' exits. $SQUIBD names another squibd
# binary than /squibd, for a side-by-side run.
. /e2e/lib.sh
mib64=67108864
launch p "${SQUIBD:-/squibd}" run --log-level info --cpus 2 --kernel /guest/Image --initrd /guest/initrd.gz \
	--cmdline "console=ttyAMA0 earlycon panic=-1 squib.test=net" \
	--net user --vsock 3,/tmp/p.vsock
waitfor 'SQUIB-GUEST-COUNTER=1 ' /tmp/p.out 300 || fail 100 p
grep -q 'SQUIB-GUEST-NET-ADDR' /tmp/p.out || fail 101 p
for round in $(seq "${ROUNDS:-1}"); do
	/bin/netbench recv -n unix:/tmp/floor.sock >/tmp/floor.out 2>&1 &
	waitfor 'SQUIB-NETBENCH-READY' /tmp/floor.out 30 || fail 102 p
	echo "FLOOR-UNIX $(/bin/netbench send -n unix:/tmp/floor.sock $mib64 | grep -o 'SQUIB-NETBENCH-.*')"
	/bin/netbench recv -n tcp:0.0.0.0:9002 >/tmp/floor.out 2>&1 &
	waitfor 'SQUIB-NETBENCH-READY' /tmp/floor.out 30 || fail 103 p
	echo "FLOOR-TCP $(/bin/netbench send -n tcp:127.0.0.1:9002 $mib64 | grep -o 'SQUIB-NETBENCH-.*')"
	stream p VSOCK-UP "recv -n unix:/tmp/p.vsock_9100" "send -n vsock:2:9100 $mib64"
	stream p VSOCK-DOWN "recv -r -n unix:/tmp/p.vsock_9101 $mib64" "send -r -n vsock:2:9101"
	stream p TCP-UP "recv -n tcp:0.0.0.0:9000" "send -n tcp:192.168.127.254:9000 $mib64"
	stream p TCP-DOWN "recv -r -n tcp:0.0.0.0:9001 $mib64" "send -r -n tcp:192.168.127.254:9001"
done
say p "run poweroff -f"
wait $pid_p
echo "EXITS $(grep -o 'msg="VM ended".*' /tmp/p.out | tail -1)"
