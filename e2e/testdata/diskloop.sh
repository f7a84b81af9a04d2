# A guest booted from the ext4 root drive runs a disk loop (files written,
# synced, the page cache dropped, every file checked against its checksum).
# It is paused and snapshotted; while it is paused its image is copied
# twice; squibd is killed. Two clones restore the snapshot, each moved to
# its own copy of the image (squibd drive, PATCH /drives, before it
# resumes): each loop goes on from where it stopped with every checksum
# right, and the image the snapshot named stays as it was.
. /e2e/lib.sh
gunzip -c /guest/rootfs.ext4.gz >/tmp/loop.img
printf '{"boot-source": {"kernel_image_path": "/guest/Image", "boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=diskloop"},
 "drives": [{"drive_id": "rootfs", "path_on_host": "/tmp/loop.img", "is_root_device": true, "is_read_only": false}],
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}\n' >/tmp/loop.json
start a --config-file /tmp/loop.json
waitfor 'SQUIB-GUEST-DISKLOOP n=4 ' /tmp/a.out 300 || fail 40 a
/squibd pause --socket /tmp/a.sock >/dev/null || fail 41 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/loop.state --mem /tmp/loop.mem >/dev/null || fail 42 a
cp /tmp/loop.img /tmp/b.img
cp /tmp/loop.img /tmp/c.img
kill -9 $pid_a
n=$(grep -Eo 'SQUIB-GUEST-DISKLOOP n=[0-9]+ ok=[0-9]+ bad=[0-9]+' /tmp/a.out | tail -1 | sed 's/.*n=\([0-9]*\) .*/\1/')
at_snapshot=$(md5sum </tmp/loop.img | cut -c1-32)
echo "BEFORE n=$n image=$at_snapshot"
for x in b c; do
	start $x
	/squibd snapshot load --socket /tmp/$x.sock --snapshot /tmp/loop.state --mem /tmp/loop.mem >/dev/null || fail 43 $x
	/squibd drive --socket /tmp/$x.sock --id rootfs --path /tmp/$x.img >/dev/null || fail 44 $x
	/squibd resume --socket /tmp/$x.sock >/dev/null || fail 45 $x
done
for x in b c; do
	waitfor "SQUIB-GUEST-DISKLOOP n=$((n + 5)) " /tmp/$x.out 300 || fail 46 $x
done
kill -0 $pid_b $pid_c || fail 47 b c # both ran side by side to the end
for x in b c; do
	echo "AFTER $x rounds=$(grep -Eo 'SQUIB-GUEST-DISKLOOP n=[0-9]+ ok=[0-9]+ bad=[0-9]+' /tmp/$x.out | head -5 | cut -d' ' -f2- | tr ' \n' ':,')"
done
kill $pid_b $pid_c
echo "HOST snapshot_image=$(md5sum </tmp/loop.img | cut -c1-32) at_snapshot=$at_snapshot b=$(md5sum </tmp/b.img | cut -c1-32) c=$(md5sum </tmp/c.img | cut -c1-32)"
