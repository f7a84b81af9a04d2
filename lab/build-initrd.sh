#!/usr/bin/env bash
# Builds the lab's L2 guest initramfs: busybox-static (arm64) with guest-init
# as /init, as a gzip'd newc cpio. Prints its path; cached by content.
. "$(dirname "$0")/lib.sh"

bb=$(deb busybox-static ./bin/busybox)
hash=$(cat "$LAB/guest-init" "$LAB/build-initrd.sh" "$LAB/lib.sh" <(echo "$bb") | key)

build() {
	local root=$out/root
	mkdir -p "$root/bin" "$root/proc" "$root/sys"
	cp "$bb/bin/busybox" "$root/bin/"
	ln -s busybox "$root/bin/sh"
	install -m 0755 "$LAB/guest-init" "$root/init"
	newc_tree "$root" | gzip -9n >"$out/initrd.gz"
	rm -rf "$root"
	log "guest initramfs $hash: built"
}
cached "guest-initrd-$hash" build
echo "$CACHE/guest-initrd-$hash/initrd.gz"
