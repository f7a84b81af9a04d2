# virtio-net on Linux taps with offloads: taps tap0, tap1 and tap2 on the
# bridge br0 in L1 (10.0.77.1/24), guests a (10.0.77.2, on tap0) and b
# (10.0.77.3, on tap1) run guest-init's test_nettap. Then:
#   - each guest prints the virtio features its driver accepted;
#   - b sends 16 MiB to a across the bridge (netbench), and a fetches
#     L1's 1 MiB blob over HTTP; L1 reaches both guests' httpd;
#   - a is snapshotted and stopped, and its clone c, restored with
#     --net eth0=tap:tap2, answers on a's address through tap2 and fetches
#     the blob again.
. /e2e/lib.sh
ip link add br0 type bridge || exit 90
for tap in tap0 tap1 tap2; do
	tunctl -t $tap >/dev/null || exit 91
	ip link set $tap master br0 || exit 92
	ip link set $tap up
done
ip addr add 10.0.77.1/24 dev br0
ip link set br0 up
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=1 2>/dev/null
echo "BLOB sum=$(md5sum </www/blob | cut -c1-32)"
httpd -p 10.0.77.1:8000 -h /www

# tapconfig NAME TAP IP MAC: the --config-file of guest NAME on TAP.
tapconfig() {
	printf '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=nettap squib.ip=%s/24"},
 "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
 "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "%s", "guest_mac": "%s"}]}\n' "$3" "$2" "$4" >/tmp/$1.json
}

# get IP: the body of GET /hello from IP:80.
get() { printf 'GET /hello HTTP/1.0\r\n\r\n' | timeout 30 nc "$1" 80 | tail -1; }

# run NAME MARK CMD: type CMD to NAME's guest and print "MARK NAME <its
# first line of output>".
run() {
	local k
	k=$(grep -c 'SQUIB-GUEST-RUN' /tmp/$1.out)
	say $1 "run $3"
	waitn "SQUIB-GUEST-RUN .*$eol" /tmp/$1.out $((k + 1)) || fail 100 $1
	echo "$2 $1 $(grep -o 'SQUIB-GUEST-RUN .*' /tmp/$1.out | sed -n "$((k + 1))p" | tr -d '\r' | cut -d' ' -f2-)"
}

fetch='wget -q -O /fetched http://10.0.77.1:8000/blob && echo bytes=$(wc -c </fetched) sum=$(md5sum </fetched | cut -c1-32)'
tapconfig a tap0 10.0.77.2 02:00:00:00:77:02
tapconfig b tap1 10.0.77.3 02:00:00:00:77:03
start a --config-file /tmp/a.json
start b --config-file /tmp/b.json
for n in a:2 b:3; do
	waitfor 'SQUIB-GUEST-COUNTER=1 ' /tmp/${n%:*}.out 300 || fail 101 ${n%:*}
	echo "ADDR ${n%:*} $(grep -o 'SQUIB-GUEST-NET-ADDR=.*' /tmp/${n%:*}.out | head -1 | tr -d '\r' | cut -d= -f2-)"
	echo "HELLO ${n%:*} $(get 10.0.77.${n#*:})"
done
# a's receiver runs in the background, straight onto its console.
say a "run netbench recv -n tcp:0.0.0.0:9000 >/dev/console 2>&1 &"
waitfor 'SQUIB-NETBENCH-READY' /tmp/a.out 60 || fail 102 a
run b SEND "netbench send -n tcp:10.0.77.2:9000 16777216"
waitfor "SQUIB-NETBENCH-RECV .*$eol" /tmp/a.out 60 || fail 103 a
echo "RECV a $(grep -o 'SQUIB-NETBENCH-RECV .*' /tmp/a.out | tail -1 | tr -d '\r' | cut -d' ' -f2-)"
run a FETCH "$fetch"

/squibd pause --socket /tmp/a.sock >/dev/null || fail 110 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/tap.state --mem /tmp/tap.mem >/dev/null || fail 111 a
kill $pid_a
wait $pid_a
start c
/squibd snapshot load --socket /tmp/c.sock --snapshot /tmp/tap.state --mem /tmp/tap.mem \
	--net eth0=tap:tap2 --resume >/dev/null || fail 112 c
echo "CONFIG c $(/labtool get /tmp/c.sock /vm/config | grep -o '"network-interfaces":\[[^]]*\]')"
run c FETCH "$fetch"
echo "HELLO c $(get 10.0.77.2)"
kill $pid_b $pid_c
wait $pid_c
echo "STOPPED c status=$?"
