#!/usr/bin/env bash
# Builds the lab's L2 root filesystem: a 32 MiB ext4 image holding busybox
# and guest-init as /sbin/init, made without root by e2fsprogs' mke2fs -d
# from a directory tree, gzip'd. Prints the path of rootfs.ext4.gz; cached
# by content. The guest boots from it as /dev/vda with no initramfs
# (squibd run --disk rootfs.ext4,root), and guest-init's workloads run
# there as from the initramfs.
. "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin:/sbin

command -v mke2fs >/dev/null || die "mke2fs missing (run lab/setup.sh)"
bb=$(deb busybox-static ./bin/busybox)
hash=$(cat "$LAB/guest-init" "$LAB/build-rootfs.sh" "$LAB/lib.sh" <(echo "$bb"; mke2fs -V 2>&1 | head -1) | key)

build() {
	local root=$out/root
	mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
	cp "$bb/bin/busybox" "$root/bin/"
	ln -s busybox "$root/bin/sh"
	install -m 0755 "$LAB/guest-init" "$root/sbin/init"
	# Fixed UUID, hash seed and time: the same inputs give the same image.
	E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -L squib-root \
		-U 5c1b0000-0000-4000-8000-000000000001 -E root_owner=0:0,hash_seed=5c1b0000-0000-4000-8000-000000000002 \
		-d "$root" "$out/rootfs.ext4" 32M
	gzip -9n "$out/rootfs.ext4"
	rm -rf "$root"
	log "guest root filesystem $hash: built"
}
cached "guest-rootfs-$hash" build
echo "$CACHE/guest-rootfs-$hash/rootfs.ext4.gz"
