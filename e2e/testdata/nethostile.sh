# The hostile guest on the network and socket devices: a guest booted with
# two user-mode network interfaces (eth0, and eth1 with a MAC of its own)
# and a vsock device runs guest-init's test_hostilenet, which takes eth1's
# device and the vsock device from Linux and feeds them malformed frames
# and packets from user space (lab/prog/hostile.c), then leases eth0's
# address and fetches 1 MiB from L1 through it; squibd must stay up
# throughout. L1 listens for the guest's vsock streams to host ports 5001
# and 5002 (labtool vsock-listen: LISTEN PORT <its line>, what each stream
# carried) and prints the blob's md5, squibd's exit status and its log,
# after the console (a file of its own, so that no log line lands inside
# a console line): WARN lines, each kind of misbehaviour once per device,
# no log flood.
. /e2e/lib.sh
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=1 2>/dev/null
httpd -p 127.0.0.1:8000 -h /www
for port in 5001 5002; do
	rm -f /tmp/h.vsock_$port
	/labtool vsock-listen /tmp/h.vsock_$port >/tmp/listen-$port.out 2>&1 &
	bg="$bg $!"
done
timeout 300 /squibd run --kernel /guest/Image --initrd /guest/initrd.gz --memory 256 \
	--cmdline "console=ttyAMA0 earlycon panic=-1 squib.test=hostilenet squib.fetch=8000/blob" \
	--net user --net user,mac=06:00:ac:10:00:02 --vsock 3,/tmp/h.vsock </dev/null >/tmp/nethostile.out 2>/tmp/nethostile.log
status=$?
cat /tmp/nethostile.out /tmp/nethostile.log
echo "EXIT status=$status"
for port in 5001 5002; do
	waitfor 'VSOCK-LISTEN' /tmp/listen-$port.out 10
	echo "LISTEN $port $(head -1 /tmp/listen-$port.out)"
done
echo "HOST warns=$(grep -c 'level=WARN' /tmp/nethostile.log) blob=$(md5sum </www/blob | cut -c1-32)"
[ $status -eq 0 ] || { echo "FAIL 90: squibd exited $status; last line: $(cat /tmp/nethostile.out /tmp/nethostile.log | grep -v '^[[:space:]]*$' | tail -1)"; exit 90; }
