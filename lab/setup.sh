#!/usr/bin/env bash
# Installs what the arm64 lab needs on a Debian 12 (bookworm) x86_64 machine.
# Idempotent: a second run installs nothing new. Needs root (or sudo).
# With --go, also installs Go 1.23 from bookworm-backports (go-env.sh uses it
# on machines without a Go toolchain; it fetches the one go.mod asks for).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
# QEMU: bookworm's 7.2, pinned. Measured against bookworm-backports' 10.0
# (lab/README.md, "Which QEMU"): no fewer lab failures, and 1.05-1.4x slower.
qemu_version=7.2
command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm/bookworm)
for cmd in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
           dtc:device-tree-compiler cpio:cpio flex:flex bison:bison bc:bc xz:xz-utils \
           make:make perl:perl gcc:gcc; do
	command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -e /usr/include/libelf.h ] || need+=(libelf-dev)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
[ -e /usr/aarch64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-arm64-cross) # static guest programs
command -v mke2fs >/dev/null 2>&1 || need+=(e2fsprogs) # the guest's ext4 root drive
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates) # Go modules and toolchains over HTTPS

# bookworm-backports carries linux 6.12 (source for the guest kernel, arm64
# images for the L1 host). Add it next to the existing sources, with the same
# mirror and keyring, so no host name is written here.
src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/squib-backports.sources
if [ ! -e "$bp" ]; then
	if [ -e "$src" ]; then
		uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$src")
		key=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
	else # one-line style, /etc/apt/sources.list
		uri=$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
		key=/usr/share/keyrings/debian-archive-keyring.gpg
	fi
	[ -n "$uri" ] || { echo "lab: no Debian mirror found in apt's sources" >&2; exit 1; }
	printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$key" | $SUDO tee "$bp" >/dev/null
	updated=no
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	$SUDO dpkg --add-architecture arm64
	updated=no
fi
[ -e /usr/src/linux-source-6.12.tar.xz ] || need+=(linux-source-6.12/bookworm-backports)
if [ "${1:-}" = --go ] && [ ! -x /usr/lib/go-1.23/bin/go ]; then
	need+=(golang-1.23-go/bookworm-backports)
fi

if [ "${#need[@]}" -gt 0 ] || [ "${updated:-yes}" = no ]; then
	$SUDO apt-get update -q
fi
if [ "${#need[@]}" -gt 0 ]; then
	echo "lab: installing ${need[*]}" >&2
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

case "$(qemu-system-aarch64 --version | head -1)" in
*" version $qemu_version."*) ;;
*) echo "lab: qemu-system-aarch64 is $(qemu-system-aarch64 --version | head -1), the lab wants $qemu_version (bookworm's)" >&2
	exit 1 ;;
esac
