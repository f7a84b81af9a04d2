# Shell helpers for the lab's snapshot scenarios, sourced by each in L1.
# Every squibd NAME listens on /tmp/NAME.sock, writes its console and log to
# /tmp/NAME.out and reads console input from the FIFO /tmp/NAME.in.

# Every background process, killed when the scenario exits: any left would
# hold the harness's output pipe open.
bg=
trap 'kill $bg 2>/dev/null' EXIT

# vmconfig FILE VCPUS [TRACK_DIRTY] [MEM_MIB] [SECTIONS]: a --config-file
# booting the guest's snapshot workload; SECTIONS are more of its
# top-level JSON, e.g. '"entropy": {}'.
vmconfig() {
	printf '{"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
  "boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=workload"},
 "machine-config": {"vcpu_count": %d, "mem_size_mib": %d, "track_dirty_pages": %s}%s}\n' \
		"$2" "${4:-128}" "${3:-false}" "${5:+, $5}" >"$1"
}

# waitfor PATTERN FILE [SECONDS]: wait (default 120 s) until a line of FILE
# matches the extended regexp PATTERN.
waitfor() {
	local i=0
	until grep -Eq "$1" "$2" || [ $i -ge $((${3:-120} * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	grep -Eq "$1" "$2"
}

# launch NAME CMD...: run CMD in the background, its console input the
# FIFO /tmp/NAME.in, its output /tmp/NAME.out; $pid_NAME is its PID.
launch() {
	local name=$1
	shift
	rm -f /tmp/$name.in
	mkfifo /tmp/$name.in
	: >/tmp/$name.out
	"$@" </tmp/$name.in >/tmp/$name.out 2>&1 &
	eval "pid_$name=$!"
	bg="$bg $!"
	sleep 1000000 </dev/null 2>/dev/null >/tmp/$name.in & # holds the FIFO open between inputs
	bg="$bg $!"
}

# start NAME [ARGS...]: launch squibd NAME with ARGS, serving its API on
# /tmp/NAME.sock, and wait for the socket.
start() {
	local name=$1
	shift
	rm -f /tmp/$name.sock
	launch $name /squibd --api-sock /tmp/$name.sock "$@"
	local i=0
	until [ -S /tmp/$name.sock ] || [ $i -ge 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

# say NAME TEXT: type TEXT and Enter on NAME's console.
say() { echo "$2" >/tmp/$1.in; }

# counter NAME: the last counter value NAME's guest printed in full. A
# console paused mid-line may end in "SQUIB-GUEST-COUNTER=" or in the first
# digits of a number: only a number followed by something (a space, the
# console's \r) counts.
counter() { grep -Eo 'SQUIB-GUEST-COUNTER=[0-9]+[^0-9]' /tmp/$1.out | tail -1 | cut -d= -f2 | tr -dc 0-9; }

# pattern NAME: the last pattern checksum NAME's guest announced.
pattern() { grep -o 'SQUIB-GUEST-PATTERN=[0-9a-f]*' /tmp/$1.out | tail -1 | cut -d= -f2; }

# sums NAME FROM: the checksums on NAME's counter lines numbered FROM on,
# complete lines only (the console may be mid-line when this reads it).
sums() {
	grep -Eo 'SQUIB-GUEST-COUNTER=[0-9]+ .*SUM=[0-9a-f]{32}' /tmp/$1.out |
		awk -v from="$2" -F'[= ]' '$2 >= from { print $NF }' | sort -u
}

# fail CODE NAME...: exit with CODE after printing, for each named squibd,
# one line saying how it stands (the test puts the first on its first line,
# which is what a CI summary shows), then the tail of its output. The guest
# trouble it looks for is e2e's guestTrouble (boot_test.go).
fail() {
	code=$1
	shift
	local n pid how trouble
	for n in "$@"; do
		pid=$(eval echo "\$pid_$n")
		if kill -0 "$pid" 2>/dev/null; then how=running; else wait "$pid"; how="exited $?"; fi
		trouble=$(grep -m1 -E 'Kernel panic|Oops|Unable to handle|failed to come online|rcu.*stall' /tmp/$n.out)
		echo "FAIL $code: squibd $n $how; last line: $(grep -v '^[[:space:]]*$' /tmp/$n.out | tail -1)${trouble:+; guest: $trouble}"
	done
	for n in "$@"; do
		echo "--- /tmp/$n.out"
		tail -40 /tmp/$n.out
	done
	exit "$code"
}

# eol ends a guest's console line (the tty's \r\n): a pattern ending in it
# matches only a line printed whole, not one the console is still writing.
eol=$(printf '\r')

# waitn PATTERN FILE N [SECONDS]: wait (default 120 s) until N lines of
# FILE match PATTERN.
waitn() {
	local i=0
	until [ "$(grep -Ec "$1" "$2")" -ge "$3" ] || [ $i -ge $((${4:-120} * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ "$(grep -Ec "$1" "$2")" -ge "$3" ]
}

# dirty NAME MIB K: make NAME's guest rewrite MIB MiB of its pattern, the
# K-th pattern it announces, and print one more counter line after.
dirty() {
	say $1 "dirty $2"
	waitn 'SQUIB-GUEST-PATTERN=' /tmp/$1.out $3 || fail 30 $1
	waitfor "SQUIB-GUEST-COUNTER=$(($(counter $1) + 1)) " /tmp/$1.out || fail 31 $1
}

# blocks NAME: "data_blocks=N allocated=BYTES" of /tmp/NAME.mem, verified.
blocks() {
	/squibd snapshot verify --snapshot /tmp/$1.state --mem /tmp/$1.mem --json | tr ',{}' '\n\n\n' |
		awk -F: '/"data_blocks"/ {d=$2} /"allocated_bytes"/ {a=$2} END {print "data_blocks=" d " allocated=" a}'
}

# stream NAME WHAT RECV SEND: one netbench stream (lab/prog/netbench.c),
# "netbench RECV" run in L1 in the background, "netbench SEND" typed to
# NAME's guest, given 300 s; prints "WHAT <L1's line>" and "WHAT-GUEST
# <the guest's line>".
stream() {
	local k
	/bin/netbench $3 >/tmp/bench.out 2>&1 &
	bg="$bg $!"
	waitfor 'SQUIB-NETBENCH-READY' /tmp/bench.out 30 || { cat /tmp/bench.out; fail 60 $1; }
	k=$(grep -c 'SQUIB-GUEST-RUN SQUIB-NETBENCH-' /tmp/$1.out)
	say $1 "run netbench $4"
	waitn "SQUIB-GUEST-RUN SQUIB-NETBENCH-.*$eol" /tmp/$1.out $((k + 1)) 300 || { echo "$2 $(tail -1 /tmp/bench.out)"; fail 61 $1; }
	waitfor 'SQUIB-NETBENCH-(RECV|SEND|FAIL)' /tmp/bench.out 60 || { cat /tmp/bench.out; fail 62 $1; }
	echo "$2 $(grep -o 'SQUIB-NETBENCH-[A-Z]* .*' /tmp/bench.out | tail -1)"
	echo "$2-GUEST $(grep -o 'SQUIB-GUEST-RUN SQUIB-NETBENCH-[A-Z]* .*' /tmp/$1.out | tail -1 | tr -d '\r' | cut -d' ' -f2-)"
}
