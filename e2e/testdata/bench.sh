# Snapshot figures, for BenchmarkSnapshotLab. For each guest memory size
# given (MiB): boot the workload guest, snapshot it 3 times (create time and
# its parts from squibd's log, bytes written, non-zero guest bytes, and after
# each a plain sequential write of as many bytes for comparison), let it rewrite 1, 2 and 4 MiB
# with a diff snapshot after each (its data blocks), then restore the full
# snapshot 5 times (load request to vCPU 0 running, from squibd's log).
. /e2e/lib.sh
took() { # took FILE MESSAGE KEY: the duration KEY on FILE's last MESSAGE line
	grep "msg=\"$2\"" "$1" | tail -1 | grep -o "$3=[^ ]*" | cut -d= -f2
}
for mib in "$@"; do
	rm -f /tmp/bench.* /tmp/seq.out
	vmconfig /tmp/bench.json 1 true "$mib"
	start a --config-file /tmp/bench.json --level Info
	waitfor 'SQUIB-GUEST-COUNTER=2 ' /tmp/a.out 300 || fail 70 a
	/squibd pause --socket /tmp/a.sock >/dev/null || fail 71 a
	for run in 1 2 3; do # the emulated figures vary from run to run: the test takes medians
		rm -f /tmp/bench.state /tmp/bench.mem
		/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/bench.state --mem /tmp/bench.mem >/dev/null || fail 72 a
		alloc=$(($(stat -c %b /tmp/bench.mem) * 512))
		echo "CREATE mib=$mib run=$run took=$(took /tmp/a.out 'snapshot created' took) allocated=$alloc" \
			"$(for k in save scan write sync; do printf '%s=%s ' $k "$(took /tmp/a.out 'snapshot created' $k)"; done)" \
			"nonzero=$(/labtool nonzero /tmp/bench.mem $((mib << 20)))" \
			"seqwrite=$(/labtool seqwrite /tmp/seq.out $alloc)s"
		rm -f /tmp/seq.out
	done
	/squibd resume --socket /tmp/a.sock >/dev/null || fail 73 a
	k=2
	for d in 1 2 4; do
		dirty a $d $k
		k=$((k + 1))
		/squibd pause --socket /tmp/a.sock >/dev/null || fail 74 a
		/squibd snapshot create --socket /tmp/a.sock --snapshot /tmp/bench.d$d.state --mem /tmp/bench.d$d.mem --diff >/dev/null || fail 75 a
		/squibd resume --socket /tmp/a.sock >/dev/null || fail 76 a
		echo "DIFF mib=$mib dirtied=$((d << 20)) took=$(took /tmp/a.out 'snapshot created' took)" \
			"$(/squibd snapshot verify --snapshot /tmp/bench.d$d.state --mem /tmp/bench.d$d.mem --json | tr ',{}' '\n\n\n' |
				awk -F: '/"data_blocks"/ {d=$2} /"block_size"/ {b=$2} END {print "data_blocks=" d " block_size=" b}')"
	done
	kill -9 $pid_a
	for i in 1 2 3 4 5; do
		start b --level Info
		/squibd snapshot load --socket /tmp/b.sock --snapshot /tmp/bench.state --mem /tmp/bench.mem --resume >/dev/null || fail 77 b
		waitfor 'restored microVM running' /tmp/b.out || fail 78 b
		echo "RESTORE mib=$mib run=$i load=$(took /tmp/b.out 'snapshot loaded' took) to_vcpu0=$(took /tmp/b.out 'restored microVM running' since_request)"
		kill -9 $pid_b
	done
done
