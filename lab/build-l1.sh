#!/usr/bin/env bash
# Prepares the lab's L1 host: Debian's arm64 6.12 kernels (4 KiB and 16 KiB
# pages), its 6.1 kernel (4 KiB), and a base initramfs with busybox, l1-init
# as /init and the L2 guest files. Prints the directory holding vmlinuz-4k,
# vmlinuz-16k, vmlinuz-4k-6.1 and base.cpio
# (uncompressed newc; boot-l1.sh appends a per-run archive). Cached by content.
#
# Layout of L1's root, from base.cpio:
#   /init               l1-init
#   /bin/iobench        iobench.c, static: the block benchmark the guest
#                       runs too, for the floor under squibd's drives
#   /bin/netbench       netbench.c, static: the stream benchmark, likewise
#                       for squibd's network devices
#   /lib/modules/RELEASE/  tun, bridge and what bridge needs (stp, llc),
#                       decompressed, from each 6.12 kernel's package
#                       (RELEASE: its uname -r), and the file load naming
#                       them in the order l1-init loads them
#   /guest/Image        the L2 guest kernel, raw
#   /guest/Image.gz     the same, gzip'd
#   /guest/initrd.gz    the L2 guest initramfs (guest-init as /init)
#   /guest/rootfs.ext4.gz  the L2 ext4 root filesystem (build-rootfs.sh)
#   /sbin/debugfs, /sbin/e2fsck  Debian's arm64 e2fsprogs with the libraries
#                       they need under /lib: a guest-written ext4 image is
#                       checked and read in L1, outside the guest
. "$(dirname "$0")/lib.sh"

# The L1 kernel: Debian's own 6.12 arm64 build (KVM built in), from
# bookworm-backports or bookworm-security. Debian keeps only the last few
# builds there, so the newest one apt knows in both page sizes is used (the
# cache keeps the one already fetched until the archive moves on).
l1_kernel=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-arm64-16k-unsigned$' |
	sed -n 's/^linux-image-\(6\.12\.[0-9]*+deb12\)-arm64-16k-unsigned .*/\1/p' |
	while read -r v; do
		apt-cache show --no-all-versions "linux-image-$v-arm64-unsigned:arm64" >/dev/null 2>&1 && echo "$v"
	done | sort -V | tail -n 1)
[ -n "$l1_kernel" ] || die "no Debian linux-image-6.12 arm64 kernel in both page sizes known to apt (run lab/setup.sh)"
log "L1 kernel: Debian $l1_kernel"
# And bookworm's own Linux 6.1 (4 KiB pages): its KVM has no SMCCC filter
# (Linux 6.4+), so squibd falls back to KVM's in-kernel PSCI there.
old_kernel=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-arm64-unsigned$' |
	sed -n 's/^linux-image-\(6\.1\.0-[0-9]*\)-arm64-unsigned .*/\1/p' | sort -V | tail -n 1)
[ -n "$old_kernel" ] || die "no Debian linux-image-6.1 arm64 kernel known to apt (run lab/setup.sh)"

k4=$(deb "linux-image-$l1_kernel-arm64-unsigned" './boot/vmlinuz-*')
k16=$(deb "linux-image-$l1_kernel-arm64-16k-unsigned" './boot/vmlinuz-*')
k61=$(deb "linux-image-$old_kernel-arm64-unsigned" './boot/vmlinuz-*')
# Debian builds tun and bridge as modules; stp and llc are what bridge
# depends on (the package has no modules.dep, depmod runs on install, so
# modules() below checks each one's depends= against these and orders them).
netmods=('./lib/modules/*/kernel/drivers/net/tun.ko*' './lib/modules/*/kernel/net/bridge/bridge.ko*'
	'./lib/modules/*/kernel/net/802/stp.ko*' './lib/modules/*/kernel/net/llc/llc.ko*')
m4=$(deb "linux-image-$l1_kernel-arm64-unsigned" "${netmods[@]}")
m16=$(deb "linux-image-$l1_kernel-arm64-16k-unsigned" "${netmods[@]}")
bb=$(deb busybox-static ./bin/busybox)
e2fs=$(deb e2fsprogs ./sbin/debugfs ./sbin/e2fsck)
libs=("$(deb libc6 '*/ld-linux-aarch64.so.1' '*/libc.so.6')")
for p in "libext2fs2 */libext2fs.so.2* */libe2p.so.2*" "libss2 */libss.so.2*" "libcom-err2 */libcom_err.so.2*" \
	"libblkid1 */libblkid.so.1*" "libuuid1 */libuuid.so.1*"; do
	read -ra pkg <<<"$p" # no globbing: the patterns are tar's
	libs+=("$(deb "${pkg[@]}")")
done
kernel=$("$LAB/build-kernel.sh")
initrd=$("$LAB/build-initrd.sh")
rootfs=$("$LAB/build-rootfs.sh")
hash=$(cat "$LAB/l1-init" "$LAB/prog/iobench.c" "$LAB/prog/netbench.c" "$LAB/build-l1.sh" "$LAB/lib.sh" \
	<(echo "$k4 $k16 $k61 $m4 $m16 $bb $e2fs ${libs[*]} $kernel $initrd $rootfs"; aarch64-linux-gnu-gcc --version | head -1) | key)

# modules TREE DIR: the modules under TREE/lib/modules/RELEASE, decompressed
# into DIR/RELEASE (busybox insmod then needs no decompressor), with
# DIR/RELEASE/load listing them so that each follows what it depends on.
modules() {
	local rel dir f m dep
	for rel in "$1"/lib/modules/*; do
		dir=$2/${rel##*/}
		mkdir -p "$dir"
		find "$rel" -name '*.ko*' | while read -r f; do
			m=${f##*/}
			case $m in
			*.ko.xz) xz -dc "$f" >"$dir/${m%.xz}" ;;
			*.ko.zst) zstd -qdc "$f" >"$dir/${m%.zst}" ;;
			*.ko) cp "$f" "$dir/" ;;
			*) die "$f: not a module" ;;
			esac
		done
		for f in "$dir"/*.ko; do
			m=$(basename "$f" .ko)
			echo "$m $m"
			for dep in $(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | tr , ' '); do
				[ -f "$dir/$dep.ko" ] || die "${rel##*/}: $m needs $dep, not taken from the package"
				echo "$dep $m"
			done
		done | tsort >"$dir/load"
	done
}

build() {
	local root=$out/root
	mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/tmp" "$root/guest"
	cp "$bb/bin/busybox" "$root/bin/"
	ln -s busybox "$root/bin/sh"
	cross_static "$LAB/prog/iobench.c" "$root/bin/iobench"
	cross_static "$LAB/prog/netbench.c" "$root/bin/netbench"
	modules "$m4" "$root/lib/modules"
	modules "$m16" "$root/lib/modules"
	install -m 0755 "$LAB/l1-init" "$root/init"
	cp "$kernel/Image" "$kernel/Image.gz" "$initrd" "$rootfs" "$root/guest/"
	mkdir -p "$root/sbin" "$root/lib/aarch64-linux-gnu"
	cp "$e2fs/sbin/debugfs" "$e2fs/sbin/e2fsck" "$root/sbin/"
	cp -a "${libs[0]}/lib/ld-linux-aarch64.so.1" "$root/lib/"
	find "${libs[@]}" -path '*/aarch64-linux-gnu/*' -exec cp -a -t "$root/lib/aarch64-linux-gnu/" {} +
	newc_tree "$root" >"$out/base.cpio"
	rm -rf "$root"
	ln "$k4"/boot/vmlinuz-* "$out/vmlinuz-4k"
	ln "$k16"/boot/vmlinuz-* "$out/vmlinuz-16k"
	ln "$k61"/boot/vmlinuz-* "$out/vmlinuz-4k-6.1"
	log "L1 $hash: built"
}
cached "l1-$hash" build
echo "$CACHE/l1-$hash"
