# virtio-net on the built-in user-mode network: a guest configured with a
# "network-interfaces" entry holding "user" runs guest-init's test_net. In
# L1, with no root needed by squibd and no helper process:
#   - the guest leases its address by DHCP and resolves the gateway's name;
#   - it fetches 1 MiB over HTTP from a server on L1's loopback
#     (127.0.0.1:8000, 192.168.127.254 to the guest) through the NAT;
#   - the published port 127.0.0.1:8080 reaches the guest's httpd;
#   - 64 MiB go each way between the guest and L1 (netbench), and the same
#     64 MiB between two L1 processes over loopback TCP, the floor;
#   - after a snapshot, a restore into b with another published port
#     (--net eth0=publish:...) has a fresh network: the guest keeps its
#     address, fetches again and answers on b's port.
. /e2e/lib.sh
mib64=67108864
printf '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=net squib.fetch=8000/blob"},
 "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
 "network-interfaces": [{"iface_id": "eth0", "user": {"publish": ["8080:80"]}}]}\n' >/tmp/net.json
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=1 2>/dev/null
echo "BLOB sum=$(md5sum </www/blob | cut -c1-32)"
httpd -p 127.0.0.1:8000 -h /www

# get PORT: the body of GET /hello from 127.0.0.1:PORT.
get() { printf 'GET /hello HTTP/1.0\r\n\r\n' | nc 127.0.0.1 "$1" | tail -1; }

start a --config-file /tmp/net.json
waitfor 'SQUIB-GUEST-NET-(ADDR|FAIL)' /tmp/a.out 300 || fail 100 a
waitfor 'SQUIB-GUEST-NET-FETCH' /tmp/a.out 300 || fail 101 a
waitfor 'SQUIB-GUEST-COUNTER=1 ' /tmp/a.out || fail 102 a
for what in MAC ADDR DNS FETCH; do
	echo "$what a $(grep -o "SQUIB-GUEST-NET-$what.*" /tmp/a.out | head -1 | tr -d '\r' | sed 's/^SQUIB-GUEST-NET-[A-Z]*[= ]//')"
done
echo "PUBLISHED a $(get 8080)"
stream a UP "recv -n tcp:0.0.0.0:9000" "send -n tcp:192.168.127.254:9000 $mib64"
stream a DOWN "recv -r -n tcp:0.0.0.0:9001 $mib64" "send -r -n tcp:192.168.127.254:9001"
/bin/netbench recv -n tcp:0.0.0.0:9002 >/tmp/floor.out 2>&1 &
bg="$bg $!"
waitfor 'SQUIB-NETBENCH-READY' /tmp/floor.out 30 || fail 113 a
echo "FLOOR $(/bin/netbench send -n tcp:127.0.0.1:9002 $mib64 | grep -o 'SQUIB-NETBENCH-.*')"

/squibd pause --socket /tmp/a.sock >/dev/null || fail 120 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/net.state --mem /tmp/net.mem >/dev/null || fail 121 a
echo "DESCRIBE $(/squibd snapshot describe --snapshot /tmp/net.state | grep -o '"virtio-net-eth0" *[0-9]* bytes')"
start b
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/net.state --mem /tmp/net.mem \
	--net 'eth0=publish:8081:80' --resume >/dev/null || fail 122 b
k=$(grep -c 'SQUIB-GUEST-RUN' /tmp/b.out)
say b 'run wget -q -O /again http://192.168.127.254:8000/blob && echo AGAIN sum=$(md5sum </again | cut -c1-32) addr=$(ip -4 -o addr show dev eth0 | grep -o "inet [0-9./]*" | cut -d" " -f2)'
waitn "SQUIB-GUEST-RUN .*$eol" /tmp/b.out $((k + 1)) || fail 123 b
echo "AGAIN b $(grep -o 'SQUIB-GUEST-RUN AGAIN .*' /tmp/b.out | tail -1 | tr -d '\r' | cut -d' ' -f3-)"
echo "PUBLISHED b $(get 8081)"
echo "CONFIG b $(/labtool get /tmp/b.sock /vm/config | grep -o '"network-interfaces":\[[^]]*\]')"
kill $pid_a $pid_b
wait $pid_b
echo "STOPPED b status=$?"
