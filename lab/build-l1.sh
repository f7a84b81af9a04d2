#!/usr/bin/env bash
# Prepares the lab's L1 host: Debian's arm64 6.12 kernels (4 KiB and 16 KiB
# pages), its 6.1 kernel (4 KiB), and a base initramfs with busybox, l1-init
# as /init and the L2 guest files. Prints the directory holding vmlinuz-4k,
# vmlinuz-16k, vmlinuz-4k-6.1 and base.cpio
# (uncompressed newc; boot-l1.sh appends a per-run archive). Cached by content.
#
# Layout of L1's root, from base.cpio:
#   /init               l1-init
#   /guest/Image        the L2 guest kernel, raw
#   /guest/Image.gz     the same, gzip'd
#   /guest/initrd.gz    the L2 guest initramfs (guest-init as /init)
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
bb=$(deb busybox-static ./bin/busybox)
kernel=$("$LAB/build-kernel.sh")
initrd=$("$LAB/build-initrd.sh")
hash=$(cat "$LAB/l1-init" "$LAB/build-l1.sh" "$LAB/lib.sh" <(echo "$k4 $k16 $k61 $bb $kernel $initrd") | key)

build() {
	local root=$out/root
	mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/tmp" "$root/guest"
	cp "$bb/bin/busybox" "$root/bin/"
	ln -s busybox "$root/bin/sh"
	install -m 0755 "$LAB/l1-init" "$root/init"
	cp "$kernel/Image" "$kernel/Image.gz" "$initrd" "$root/guest/"
	newc_tree "$root" >"$out/base.cpio"
	rm -rf "$root"
	ln "$k4"/boot/vmlinuz-* "$out/vmlinuz-4k"
	ln "$k16"/boot/vmlinuz-* "$out/vmlinuz-16k"
	ln "$k61"/boot/vmlinuz-* "$out/vmlinuz-4k-6.1"
	log "L1 $hash: built"
}
cached "l1-$hash" build
echo "$CACHE/l1-$hash"
