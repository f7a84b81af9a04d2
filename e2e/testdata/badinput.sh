# Bad snapshots, against squibd's real loader: each is refused with one
# clear message, no VM starts, nothing is written; the same squibd then
# loads a good snapshot. Uses diff.sh's snapshots (run it first): base, and
# ref for a memory file of another snapshot. midr is a snapshot from another
# CPU model (its MIDR_EL1 differs from this host's), refused by the
# ID-register rule.
. /e2e/lib.sh
mkdir -p /tmp/bad
for k in truncate flip version arch backend pagesize midr; do
	/labtool mangle $k /tmp/base.state /tmp/bad/$k.state || exit 60
done
# listing: every file name in /tmp, and the size and time of the snapshots.
listing() {
	{ ls -a /tmp /tmp/bad; stat -c '%n %s %Y' /tmp/*.state /tmp/*.mem /tmp/bad/*; } | md5sum | cut -c1-32
}
start x
: >/tmp/try.err
before=$(listing)
try() { # try NAME STATE MEM
	/squibd snapshot load --socket /tmp/x.sock --snapshot "$2" --mem "$3" --resume >/tmp/try.err 2>&1
	echo "BAD $1 exit=$? state=$(/squibd status --socket /tmp/x.sock | awk '/^state:/ {print $2" "$3}') lines=$(wc -l </tmp/try.err) msg=$(cat /tmp/try.err)"
}
for k in truncate flip version arch backend pagesize midr; do
	try $k /tmp/bad/$k.state /tmp/base.mem
done
try missing-memory /tmp/base.state /tmp/nonexistent.mem
try wrong-memory /tmp/base.state /tmp/ref.mem
try diff-as-memory /tmp/base.state /tmp/d1.mem
head -c 4096 /tmp/base.mem >/tmp/bad/short.mem
try short-memory /tmp/base.state /tmp/bad/short.mem
rm /tmp/bad/short.mem
[ "$(listing)" = "$before" ] && echo "NOTHING-WRITTEN"
# and the refused loads left squibd's machine configuration at its defaults
[ "$(/labtool get /tmp/x.sock /machine-config)" = \
	'{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}' ] || fail 63 x
/squibd snapshot load --socket /tmp/x.sock --snapshot /tmp/base.state --mem /tmp/base.mem --resume >/dev/null || fail 61 x
waitfor 'SQUIB-GUEST-COUNTER=[0-9]+ ' /tmp/x.out || fail 62 x
echo "GOOD-AFTER-BAD state=$(/squibd status --socket /tmp/x.sock | awk '/^state:/ {print $2}')"
