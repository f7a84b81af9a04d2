# Round trip: a snapshot restored paused and at once snapshotted again must
# give the same snapshot (labtool same: equal state files but for IDs,
# times and what the counters' advance changes, and the same RAM image), for
# 1 and 2 vCPUs, the memory file mapped (b) and copied in (c). Each restored
# guest then resumes and runs on, the 2-vCPU one with both CPUs online (on
# Linux 6.1, KVM's in-kernel PSCI: the secondary comes back from its saved
# MP state). The guest kernel uses pointer authentication, so every restore
# carries keys in use; the guest says which it has (pauth=).
. /e2e/lib.sh
for n in 1 2; do
	cpus=0
	[ $n -eq 2 ] && cpus=0-1
	vmconfig /tmp/rt$n.json $n
	start a$n --config-file /tmp/rt$n.json
	waitfor "SQUIB-GUEST-COUNTER=3 CPUS=$cpus " /tmp/a$n.out || fail 70 a$n
	/squibd pause --socket /tmp/a$n.sock >/dev/null || fail 71 a$n
	/squibd snapshot create --socket /tmp/a$n.sock --snapshot /tmp/s$n.state --mem /tmp/s$n.mem >/dev/null || fail 72 a$n
	kill -9 $(eval echo \$pid_a$n)
	c=$(counter a$n)
	pauth=$(grep -o 'SQUIB-GUEST-PAUTH=[a-z,]*' /tmp/a$n.out | cut -d= -f2)
	for mode in b c; do
		x=$mode$n
		start $x
		flag=
		[ $mode = c ] && flag=--copy-memory
		/squibd snapshot load --socket /tmp/$x.sock --snapshot /tmp/s$n.state --mem /tmp/s$n.mem $flag >/dev/null || fail 73 $x
		/squibd snapshot create --socket /tmp/$x.sock --snapshot /tmp/r$x.state --mem /tmp/r$x.mem >/dev/null || fail 74 $x
		same=$(/labtool same /tmp/s$n.state /tmp/s$n.mem /tmp/r$x.state /tmp/r$x.mem 2>&1) || { echo "$same"; fail 75 $x; }
		/squibd resume --socket /tmp/$x.sock >/dev/null || fail 76 $x
		waitfor "SQUIB-GUEST-COUNTER=$((c + 2)) CPUS=$cpus " /tmp/$x.out || fail 77 $x
		echo "ROUNDTRIP vcpus=$n memory=$mode result=$same from=$c last=$(counter $x) cpus=$cpus pauth=$pauth"
		kill $(eval echo \$pid_$x)
	done
done
