# The hostile guest: a guest booted with a writable 8 MiB drive (vda) and
# a 1 MiB one of random bytes (vdb) runs guest-init's test_hostile, which
# takes vdb from Linux and feeds it malformed chains and rings from user
# space (lab/prog/hostile.c), then writes and reads back vda; squibd must stay
# up throughout. L1 then prints the hostile image's first 16 bytes (what
# the guest's last, well-formed read must have seen), the md5 of vda's first
# MiB (what the guest wrote) and the number of WARN lines squibd logged
# (each kind of misbehaviour once per device: no log flood). The log goes
# to a file of its own, so that no log line lands inside a console line.
dd if=/dev/zero of=/tmp/disk.img bs=1M count=8 2>/dev/null
dd if=/dev/urandom of=/tmp/hostile.img bs=1M count=1 2>/dev/null
timeout 300 /squibd run --kernel /guest/Image --initrd /guest/initrd.gz \
	--cmdline "console=ttyAMA0 earlycon panic=-1 squib.test=hostile" \
	--disk /tmp/disk.img --disk /tmp/hostile.img </dev/null >/tmp/hostile.out 2>/tmp/hostile.log
status=$?
cat /tmp/hostile.out /tmp/hostile.log
echo "EXIT status=$status"
echo "HOST warns=$(grep -c 'level=WARN' /tmp/hostile.log) hostile_head=$(xxd -p -l 16 /tmp/hostile.img) vda_head=$(head -c 1048576 /tmp/disk.img | md5sum | cut -c1-32)"
[ $status -eq 0 ] || { echo "FAIL 90: squibd exited $status; last line: $(cat /tmp/hostile.out /tmp/hostile.log | grep -v '^[[:space:]]*$' | tail -1)"; exit 90; }
