#!/usr/bin/env bash
# The lab end to end: installs what is missing (setup.sh), builds the guest
# and L1 parts (cached after the first run), cross-compiles squibd, boots L1
# and runs squibd on the guest there, with the console live on this terminal.
#
#   lab/demo.sh [-p 4|16] [TEST]
#
# -p picks the L1 page size in KiB (default 4). Without TEST, the demo
# boots a guest that counts, pauses it, snapshots it, kills squibd, and
# restores the snapshot in a new squibd, where the count goes on. With TEST,
# squibd boots the guest with squib.test=TEST (see guest-init): cpus,
# poweroff, shell (an interactive shell in the guest), ... Ctrl-A X leaves
# QEMU at any time.
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
test=${1:-snapshot}
case $test in *[!a-z0-9_]* | '') usage ;; esac

. "$lab/go-env.sh"
"$lab/setup.sh"
"$lab/build-l1.sh" >/dev/null
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "lab: cross-compiling squibd" >&2
(cd "$lab/.." && GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o "$dir/squibd" ./cmd/squibd)
if [ "$test" = snapshot ]; then
	cat >"$dir/scenario.sh" <<'EOF'
say() { echo; echo "demo: $*"; }
printf '%s' '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 earlycon quiet squib.test=counter"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 256}}' >/tmp/vm.json
say "booting a guest that counts (squibd --api-sock /tmp/a.sock --config-file /tmp/vm.json)"
/squibd --api-sock /tmp/a.sock --config-file /tmp/vm.json &
a=$!
i=0; until [ -S /tmp/a.sock ] && /squibd status --socket /tmp/a.sock >/dev/null 2>&1; do sleep 0.1; done
sleep 8
say "pausing it: squibd pause"; /squibd pause --socket /tmp/a.sock
say "snapshotting it: squibd snapshot create"
/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem
ls -ls /tmp/vm.state /tmp/vm.mem
say "killing that squibd (SIGKILL)"; kill -9 $a; wait $a 2>/dev/null
say "restoring the snapshot in a new squibd: squibd snapshot load --resume"
/squibd --api-sock /tmp/b.sock &
b=$!
until [ -S /tmp/b.sock ]; do sleep 0.1; done
/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/vm.state --mem /tmp/vm.mem --resume
sleep 5
say "stopping it"; kill $b; wait $b
EOF
else
	cat >"$dir/scenario.sh" <<EOF
/squibd run --kernel /guest/Image --initrd /guest/initrd.gz --cmdline "console=ttyAMA0 earlycon squib.test=$test"
echo "squibd exited with status \$?"
EOF
fi
"$lab/boot-l1.sh" -p "$page" -t 3600 "$dir"
