#!/usr/bin/env bash
# Builds the lab's L2 guest initramfs: busybox-static (arm64) with guest-init
# as /init, and the static programs some workloads run (/bin/hostile from
# hostile.c, /bin/iobench from iobench.c, /bin/vsock from vsock.c,
# /bin/netbench from netbench.c), as a gzip'd newc cpio. Prints its path;
# cached by content.
. "$(dirname "$0")/lib.sh"

command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc missing (run lab/setup.sh)"
bb=$(deb busybox-static ./bin/busybox)
hash=$(cat "$LAB/guest-init" "$LAB/prog/hostile.c" "$LAB/prog/iobench.c" "$LAB/prog/vsock.c" "$LAB/prog/netbench.c" "$LAB/build-initrd.sh" "$LAB/lib.sh" \
	<(echo "$bb"; aarch64-linux-gnu-gcc --version | head -1) | key)

build() {
	local root=$out/root
	mkdir -p "$root/bin" "$root/proc" "$root/sys"
	cp "$bb/bin/busybox" "$root/bin/"
	ln -s busybox "$root/bin/sh"
	cross_static "$LAB/prog/hostile.c" "$root/bin/hostile"
	cross_static "$LAB/prog/iobench.c" "$root/bin/iobench"
	cross_static "$LAB/prog/vsock.c" "$root/bin/vsock"
	cross_static "$LAB/prog/netbench.c" "$root/bin/netbench"
	install -m 0755 "$LAB/guest-init" "$root/init"
	newc_tree "$root" | gzip -9n >"$out/initrd.gz"
	rm -rf "$root"
	log "guest initramfs $hash: built"
}
cached "guest-initrd-$hash" build
echo "$CACHE/guest-initrd-$hash/initrd.gz"
