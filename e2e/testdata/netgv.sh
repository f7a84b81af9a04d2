# virtio-net through a unixgram peer: gvproxy itself (gvisor-tap-vsock's
# command, built from the module go.mod names), listening in vfkit's
# protocol, serves a guest whose interface has "unixgram_path" and
# "vfkit_magic". The guest runs guest-init's test_net against it: its DHCP
# lease (gvproxy's static one, for the MAC the configuration gives), the
# gateway's name, and 1 MiB fetched from L1's loopback through gvproxy's
# NAT.
. /e2e/lib.sh
printf '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=net squib.fetch=8002/gvblob"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
 "network-interfaces": [{"iface_id": "eth0", "guest_mac": "5a:94:ef:e4:0c:ee",
   "unixgram_path": "/tmp/gv.sock", "vfkit_magic": true}]}\n' >/tmp/gv.json
mkdir -p /www
dd if=/dev/urandom of=/www/gvblob bs=1M count=1 2>/dev/null
echo "BLOB sum=$(md5sum </www/gvblob | cut -c1-32)"
httpd -p 127.0.0.1:8002 -h /www
/gvproxy -listen-vfkit unixgram:///tmp/gv.sock -ssh-port 2223 >/tmp/gv.log 2>&1 &
bg="$bg $!"
i=0
until [ -S /tmp/gv.sock ] || [ $i -ge 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
[ -S /tmp/gv.sock ] || { cat /tmp/gv.log; exit 90; }
start g --config-file /tmp/gv.json
waitfor 'SQUIB-GUEST-NET-FETCH|SQUIB-GUEST-NET-FAIL' /tmp/g.out 300 || { tail -5 /tmp/gv.log; fail 100 g; }
for what in MAC ADDR DNS FETCH; do
	echo "$what g $(grep -o "SQUIB-GUEST-NET-$what.*" /tmp/g.out | head -1 | tr -d '\r' | sed 's/^SQUIB-GUEST-NET-[A-Z]*[= ]//')"
done
grep -o 'SQUIB-GUEST-NET-FAIL.*' /tmp/g.out && { tail -5 /tmp/gv.log; fail 101 g; }
kill $pid_g
wait $pid_g
echo "STOPPED g status=$?"
