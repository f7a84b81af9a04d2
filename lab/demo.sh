#!/usr/bin/env bash
# The lab end to end: installs what is missing (setup.sh), builds the guest
# and L1 parts (cached after the first run), cross-compiles squibd, boots L1
# and runs squibd on the guest there, with the console live on this terminal.
#
#   lab/demo.sh [-p 4|16] [TEST]
#
# -p picks the L1 page size in KiB (default 4). TEST is the guest workload,
# passed as squib.test=TEST (see guest-init): cpus by default; shell gives an
# interactive shell in the guest. Ctrl-A X leaves QEMU at any time.
set -euo pipefail
lab=$(cd "$(dirname "$0")" && pwd)

usage() {
	echo "usage: lab/demo.sh [-p 4|16] [TEST]" >&2
	exit 2
}
page=4
while getopts p: opt; do
	case $opt in
	p) page=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
test=${1:-cpus}
case $test in *[!a-z0-9_]* | '') usage ;; esac

"$lab/setup.sh"
"$lab/build-l1.sh" >/dev/null
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "lab: cross-compiling squibd" >&2
(cd "$lab/.." && GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o "$dir/squibd" ./cmd/squibd)
cat >"$dir/scenario.sh" <<EOF
/squibd run --kernel /guest/Image --initrd /guest/initrd.gz --cmdline "console=ttyAMA0 squib.test=$test"
echo "squibd exited with status \$?"
EOF
"$lab/boot-l1.sh" -p "$page" -t 3600 "$dir"
