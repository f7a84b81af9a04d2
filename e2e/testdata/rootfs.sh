# The guest boots from the ext4 root drive alone (no initramfs; squibd
# puts root=/dev/vda rw on its command line), writes /written, syncs and
# powers off. L1 then checks the image with e2fsck and copies /written out
# of it with debugfs, outside the guest.
gunzip -c /guest/rootfs.ext4.gz >/tmp/root.img
timeout 300 /squibd run --kernel /guest/Image --cmdline "console=ttyAMA0 earlycon panic=-1 squib.test=rootfs" \
	--disk /tmp/root.img,root </dev/null >/tmp/rootfs.out 2>&1
status=$?
cat /tmp/rootfs.out
echo "EXIT status=$status"
e2fsck -fy /tmp/root.img >/tmp/fsck.out 2>&1
fsck=$?
sed 's/^/FSCK /' /tmp/fsck.out
debugfs -R 'dump /written /tmp/written' /tmp/root.img >/dev/null 2>&1
echo "HOST fsck=$fsck written=$(md5sum </tmp/written 2>&1 | cut -c1-32) size=$(wc -c </tmp/written 2>&1)"
[ $status -eq 0 ] || { echo "FAIL 90: squibd exited $status; last line: $(grep -v '^[[:space:]]*$' /tmp/rootfs.out | tail -1)"; exit 90; }
