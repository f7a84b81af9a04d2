# virtio-blk: a guest booted with a writable 8 MiB image (zeros) and a
# read-only 4 MiB one (random bytes) runs guest-init's test_blk and powers
# off; then L1 prints its images' checksums next to what the guest saw.
dd if=/dev/zero of=/tmp/disk.img bs=1M count=8 2>/dev/null
dd if=/dev/urandom of=/tmp/ro.img bs=1M count=4 2>/dev/null
ro_before=$(md5sum </tmp/ro.img | cut -c1-32)
timeout 300 /squibd run --kernel /guest/Image --initrd /guest/initrd.gz \
	--cmdline "console=ttyAMA0 earlycon panic=-1 squib.test=blk" \
	--disk /tmp/disk.img --disk /tmp/ro.img,ro </dev/null >/tmp/blk.out 2>&1
status=$?
cat /tmp/blk.out
echo "EXIT status=$status"
echo "HOST disk=$(md5sum </tmp/disk.img | cut -c1-32) head=$(head -c 1048576 /tmp/disk.img | md5sum | cut -c1-32) size=$(wc -c </tmp/disk.img) ro_before=$ro_before ro_after=$(md5sum </tmp/ro.img | cut -c1-32)"
[ $status -eq 0 ] || { echo "FAIL 90: squibd exited $status; last line: $(grep -v '^[[:space:]]*$' /tmp/blk.out | tail -1)"; exit 90; }
