# Block throughput: iobench (lab/prog/iobench.c) in L1 on a 256 MiB image in
# /tmp, the floor under squibd's drive, for each op (HOST SQUIB-IOBENCH
# lines; a SQUIB-IOBENCH-NOTE says when L1's /tmp refuses O_DIRECT and the
# figures are buffered); then a guest booted with that image as vda runs
# the same three through squibd's virtio-blk (guest-init's test_blkbench),
# with a ticker (SQUIB-GUEST-TICK) whose gaps would show a stalled vCPU.
# The guest runs in three rounds, each once with queue notifications
# through KVM's ioeventfd (SQUIB_KVM_IOEVENTFD=on; lines marked IOEVENTFD) and
# once with them as MMIO exits (squibd's default; marked EXITS);
# squibd's last log line counts the vCPUs' exits.
dd if=/dev/zero of=/tmp/bench.img bs=1M count=256 2>/dev/null
for op in seqwrite seqread randread; do
	/bin/iobench $op /tmp/bench.img 256 | sed 's/^/HOST /'
done
guest() {
	timeout 900 env "$@" /squibd run --log-level info --kernel /guest/Image --initrd /guest/initrd.gz \
		--cmdline "console=ttyAMA0 earlycon panic=-1 squib.test=blkbench" \
		--disk /tmp/bench.img </dev/null >/tmp/blkbench.out 2>&1
	status=$?
	echo "EXIT status=$status"
	[ $status -eq 0 ] || { echo "FAIL 90: squibd exited $status; last line: $(grep -v '^[[:space:]]*$' /tmp/blkbench.out | tail -1)"; exit 90; }
}
for round in 1 2 3; do
	guest SQUIB_KVM_IOEVENTFD=on
	sed 's/^/IOEVENTFD /' /tmp/blkbench.out
	guest SQUIB_KVM_IOEVENTFD=off
	sed 's/^/EXITS /' /tmp/blkbench.out
done
