# Helpers shared by the lab scripts. Sourced, never run.
#
# Every built artifact lives in its own directory under $CACHE, named after
# a hash of its inputs. A directory appears only when complete (built in a
# temporary directory, then renamed), and a lock file per artifact makes
# concurrent builders (parallel test processes) wait for each other.
set -euo pipefail

LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SQUIB_LAB_CACHE:-$HOME/.cache/squib-lab}
mkdir -p "$CACHE"

log() { echo "lab: $*" >&2; }
die() { log "$*"; exit 1; }

# key: a short hash of stdin, used in cache directory names.
key() { sha256sum | cut -c1-16; }

# cached NAME FUNC ARGS...: makes sure $CACHE/NAME exists. If it does not,
# runs FUNC ARGS... with $out set to an empty directory that becomes
# $CACHE/NAME when FUNC succeeds.
cached() {
	local dir=$CACHE/$1 fd
	shift
	[ -d "$dir" ] && return
	exec {fd}>"$dir.lock"
	flock "$fd"
	if [ ! -d "$dir" ]; then
		out=$(mktemp -d "$dir.tmp.XXXXXX")
		chmod 755 "$out"
		trap 'rm -rf "$out"' EXIT
		"$@" >&2
		mv "$out" "$dir"
		trap - EXIT
	fi
	exec {fd}>&-
}

# deb PKG PATH...: extracts PATH... (tar patterns such as ./bin/busybox)
# from the Debian arm64 package PKG and prints the directory holding the
# extracted tree. The first call downloads apt's candidate version; later
# calls reuse it without asking apt (slow here: about 1 s a query). Remove
# $CACHE/deb to pick up newer versions.
deb() {
	local pkg=$1 sum have ver
	sum=$(echo "$*" | key)
	shift
	have=$(compgen -G "$CACHE/deb/${pkg}_*-$sum" | sort -V | tail -n 1 || true)
	if [ -n "$have" ]; then
		echo "$have"
		return
	fi
	ver=$(apt-cache show --no-all-versions "$pkg:arm64" 2>/dev/null | sed -n 's/^Version: //p')
	[ -n "$ver" ] || die "no package $pkg:arm64 known to apt (run lab/setup.sh)"
	mkdir -p "$CACHE/deb"
	cached "deb/${pkg}_${ver//:/_}-$sum" fetch_deb "$pkg" "$ver" "$@"
	echo "$CACHE/deb/${pkg}_${ver//:/_}-$sum"
}

# fetch_deb PKG VERSION PATH...: deb's builder, run by cached.
fetch_deb() {
	local pkg=$1 ver=$2
	shift 2
	log "downloading $pkg:arm64 $ver"
	(cd "$out" && apt-get download -q -o APT::Sandbox::User=root "$pkg:arm64=$ver" >&2)
	dpkg-deb --fsys-tarfile "$out"/*.deb | tar -x -C "$out" --wildcards "$@"
	rm "$out"/*.deb
}

# newc_tree DIR: writes to stdout a newc cpio archive (uncompressed) of the
# files under DIR, owned by root, preceded by a tiny archive holding /dev and
# the /dev/console node (5,1) so that the kernel can give /init a console.
# That node is written by hand because creating it with mknod needs root;
# Linux reads concatenated archives as one.
newc_tree() {
	newc_entry 1 dev 040755
	newc_entry 2 dev/console 020600 5 1
	newc_entry 3 'TRAILER!!!' 0
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet)
}

# newc_entry INO NAME MODE [RDEVMAJOR RDEVMINOR]: one data-less newc entry.
newc_entry() {
	local n=$((${#2} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
		"$1" "$((8#$3))" 0 0 1 0 0 0 0 "${4:-0}" "${5:-0}" "$n" 0 "$2"
	head -c $(((4 - (110 + n) % 4) % 4)) /dev/zero
}

# cross_static SRC OUT: compiles the lab's C program SRC into OUT, a static
# arm64 binary (the L2 guest and the L1 host both run it), stripped if
# binutils' arm64 strip is there.
cross_static() {
	command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc missing (run lab/setup.sh)"
	aarch64-linux-gnu-gcc -static -Os -Wall -Wextra -Werror -o "$2" "$1"
	if command -v aarch64-linux-gnu-strip >/dev/null; then
		aarch64-linux-gnu-strip "$2"
	fi
}
