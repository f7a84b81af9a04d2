#!/usr/bin/env bash
# Boots the lab's L1 host in QEMU (TCG, emulated arm64 with EL2, so KVM works
# inside it) and runs a scenario there.
#
#   boot-l1.sh [-p 4|16|4-6.1] [-t SECONDS] DIR
#
# The files under DIR are added to L1's root (DIR/squibd becomes /squibd) and
# L1's /init sources DIR/scenario.sh, then powers off; see build-l1.sh for the
# rest of L1's root. -p picks the L1 kernel by its page size in KiB (default
# 4; 4-6.1 is Debian's Linux 6.1, older than KVM's SMCCC filter); -t bounds
# the QEMU run (default 600 s; exit status 124 when it expires). The L1
# console is this script's stdin and stdout; type Ctrl-A X to leave QEMU.
# SQUIB_LAB_QEMU names the qemu-system-aarch64 binary to run (default: the
# one on PATH), e.g. a newer QEMU unpacked beside the installed one.
. "$(dirname "$0")/lib.sh"

usage() { die "usage: boot-l1.sh [-p 4|16|4-6.1] [-t SECONDS] DIR (DIR holds scenario.sh)"; }
page=4 limit=600
while getopts p:t: opt; do
	case $opt in
	p) page=$OPTARG ;;
	t) limit=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] && [ -f "$1/scenario.sh" ] || usage
case $page in
4 | 16) kernel=vmlinuz-${page}k ;;
4-6.1) kernel=vmlinuz-4k-6.1 ;;
*) usage ;;
esac

l1=$("$LAB/build-l1.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
	cat "$l1/base.cpio"
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
} >"$tmp/initrd"

log "booting L1 ($kernel, at most $limit s)"
# -nic none: no default NIC (it would need QEMU's iPXE ROM, and L1 has no use
# for it). pauth-impdef: a cheap pointer-authentication hash instead of the
# architected QARMA, which TCG emulates slowly. panic=-1 with -no-reboot: a
# panicking L1 ends QEMU at once.
timeout --foreground -k 10 "$limit" "${SQUIB_LAB_QEMU:-qemu-system-aarch64}" \
	-M virt,virtualization=on,gic-version=3 -cpu max,pauth-impdef=on \
	-smp 2 -m 2048 -nographic -nic none -no-reboot \
	-kernel "$l1/$kernel" -initrd "$tmp/initrd" \
	-append "console=ttyAMA0 quiet panic=-1"
