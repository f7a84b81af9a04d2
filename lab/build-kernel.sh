#!/usr/bin/env bash
# Builds the lab's L2 guest kernel: Debian's linux-source-6.12, tinyconfig plus
# guest.config, cross-compiled for arm64. Prints the directory holding Image
# (raw), Image.gz and the final .config (as config). The result is cached by
# a hash of guest.config, the linux-source version and the compiler version,
# so a second run with the same inputs returns at once.
. "$(dirname "$0")/lib.sh"

src=/usr/src/linux-source-6.12.tar.xz
[ -e "$src" ] || die "$src missing (run lab/setup.sh)"
cc=aarch64-linux-gnu-gcc
command -v "$cc" >/dev/null || die "$cc missing (run lab/setup.sh)"

hash=$({
	cat "$LAB/guest.config"
	dpkg-query -W -f='${Version}\n' linux-source-6.12
	"$cc" --version | head -1
} | key)

build() {
	local work=$out/work t0=$SECONDS
	mkdir "$work"
	log "kernel $hash: unpacking $src"
	tar -xJf "$src" -C "$work" --strip-components=1
	local mk=(make -C "$work" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -j"$(nproc)")
	log "kernel $hash: configuring (tinyconfig + guest.config)"
	"${mk[@]}" tinyconfig >"$out/build.log" 2>&1
	(cd "$work" && ARCH=arm64 scripts/kconfig/merge_config.sh -m .config "$LAB/guest.config") >>"$out/build.log" 2>&1
	"${mk[@]}" olddefconfig >>"$out/build.log" 2>&1
	local bad
	bad=$({
		grep '^CONFIG_' "$LAB/guest.config" | grep -vxFf "$work/.config"
		sed -n 's/^# \(CONFIG_[A-Z0-9_]*\) is not set$/^\1=/p' "$LAB/guest.config" | grep -f - "$work/.config"
	} || true)
	[ -z "$bad" ] || die "olddefconfig overrode guest.config: $(echo $bad)"
	log "kernel $hash: compiling with $(nproc) jobs (about 4 min on 2 cores)"
	if ! "${mk[@]}" Image.gz >>"$out/build.log" 2>&1; then
		tail -n 30 "$out/build.log" >&2
		die "kernel build failed"
	fi
	cp "$work/arch/arm64/boot/Image" "$work/arch/arm64/boot/Image.gz" "$out/"
	cp "$work/.config" "$out/config"
	rm -rf "$work"
	log "kernel $hash: built in $((SECONDS - t0)) s"
}
cached "kernel-$hash" build
echo "$CACHE/kernel-$hash"
