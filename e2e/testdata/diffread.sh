# Diff snapshots and device writes: a guest with dirty-page tracking and a
# read-only drive of random bytes is snapshotted in full; then it reads the
# whole drive into its page cache (fresh memory, written by squibd's
# virtio-blk, not by the vCPUs) and a diff snapshot follows. The base and
# the diff merged, restored, must hold those pages. To show that the
# restored guest's read comes from them, the guest holds the drive open (the
# kernel drops a block device's cache at its last close) and the restored
# drive's medium is a zeroed image (PATCH /drives before it resumes): only
# the page cache can give the random bytes back; a read after the guest
# flushes that cache sees the zeros.
. /e2e/lib.sh
sums() { grep -Eo 'SQUIB-GUEST-RUN [0-9a-f]{32}' /tmp/$1.out | cut -d' ' -f2; }
dd if=/dev/urandom of=/tmp/data.img bs=1M count=32 2>/dev/null
truncate -s 32M /tmp/zero.img
vmconfig /tmp/d.json 1 true 128 '"drives": [{"drive_id": "data", "path_on_host": "/tmp/data.img", "is_root_device": false, "is_read_only": true}]'
start a --config-file /tmp/d.json
waitfor 'SQUIB-GUEST-COUNTER=3 ' /tmp/a.out || fail 50 a
/squibd pause --socket /tmp/a.sock >/dev/null || fail 51 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/base.state --mem /tmp/base.mem >/dev/null || fail 52 a
/squibd resume --socket /tmp/a.sock >/dev/null || fail 53 a
say a "run sleep 1000000 </dev/vda >/dev/null 2>&1 & echo held"
waitfor 'SQUIB-GUEST-RUN held' /tmp/a.out || fail 54 a
say a "run md5sum </dev/vda"
waitfor 'SQUIB-GUEST-RUN [0-9a-f]{32}' /tmp/a.out || fail 54 a
/squibd pause --socket /tmp/a.sock >/dev/null || fail 55 a
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/d1.state --mem /tmp/d1.mem --diff >/dev/null || fail 56 a
kill -9 $pid_a
/squibd snapshot merge --snapshot /tmp/base.state --mem /tmp/base.mem --diff /tmp/d1.state:/tmp/d1.mem \
	--out-snapshot /tmp/m.state --out-mem /tmp/m.mem >/dev/null || fail 57
echo "DIFF $(blocks d1)"
start b
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/m.state --mem /tmp/m.mem >/dev/null || fail 58 b
/squibd drive --socket /tmp/b.sock --id data --path /tmp/zero.img >/dev/null || fail 58 b
/squibd resume --socket /tmp/b.sock >/dev/null || fail 58 b
say b "run md5sum </dev/vda"
waitfor 'SQUIB-GUEST-RUN [0-9a-f]{32}' /tmp/b.out || fail 59 b
say b "run blockdev --flushbufs /dev/vda && md5sum </dev/vda"
i=0
until [ "$(sums b | wc -l)" -ge 2 ] || [ $i -ge 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
echo "HOST image=$(md5sum </tmp/data.img | cut -c1-32) zero=$(md5sum </tmp/zero.img | cut -c1-32) before=$(sums a | tail -1) restored=$(sums b | sed -n 1p) flushed=$(sums b | sed -n 2p)"
