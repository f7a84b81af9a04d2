// netbench: stream throughput over TCP, Unix or AF_VSOCK sockets, the same
// binary in the L2 guest and in L1 (for the floor under squibd's devices).
//
// Usage: netbench recv [-n] ADDR            listen, read one stream to EOF
//        netbench send [-n] ADDR BYTES      connect, write BYTES
//        netbench recv -r [-n] ADDR BYTES   listen, write BYTES
//        netbench send -r [-n] ADDR         connect, read to EOF
//
// recv listens on ADDR and serves one connection; send connects to ADDR.
// Without -r the data flows from send to recv: send writes BYTES of the
// lab's pattern (xorshift32 from 2463534242, the low byte of each step;
// lab/prog/vsock.c and e2e/labtool make the same), shuts its sending and
// waits for recv to close; recv reads until EOF, then closes. -r on both
// sides turns the flow around, so that one listener (say, in the guest)
// measures either direction. BYTES goes to the side that writes.
//
// The pattern and the checksum cost a few cycles a byte, which under
// emulation can bound the figure more than the path measured does: -n (on
// either side) skips them there, writing zeros, printing sum=-.
//
// ADDR is one of
//
//	tcp:IP:PORT     IPv4; recv takes tcp:0.0.0.0:PORT (PORT 0: any free one)
//	unix:PATH       recv replaces a socket left at PATH, and removes its own
//	vsock:CID:PORT  recv takes vsock:ANY:PORT (VMADDR_CID_ANY)
//
// recv prints SQUIB-NETBENCH-READY ADDR once it listens (with the port it
// got, for tcp:...:0). When the stream ends, the side that read prints
//
//	SQUIB-NETBENCH-RECV bytes=N sum=FNV secs=S mbps=M
//
// and the side that wrote
//
//	SQUIB-NETBENCH-SEND bytes=N sum=FNV secs=S mbps=M
//
// where FNV is the 64-bit FNV-1a of the N bytes, in hex, S the seconds
// (CLOCK_MONOTONIC) from the connection's start (connect or accept
// returning) to the end of the stream (the reader's EOF, the writer's
// seeing its peer close) and M = N * 8 / S / 10^6. Both sides' sums match
// when the bytes arrived intact. Failures print SQUIB-NETBENCH-FAIL REASON
// and exit 1; bad usage exits 2.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK 65536

static void __attribute__((noreturn)) fail(const char *what, const char *detail)
{
	printf("SQUIB-NETBENCH-FAIL %s: %s\n", what, detail);
	exit(1);
}

static void __attribute__((noreturn)) syserr(const char *what)
{
	fail(what, strerror(errno));
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: netbench recv [-n] ADDR            listen, read to EOF\n"
			"       netbench send [-n] ADDR BYTES      connect, write BYTES\n"
			"       netbench recv -r [-n] ADDR BYTES   listen, write BYTES\n"
			"       netbench send -r [-n] ADDR         connect, read to EOF\n"
			"ADDR: tcp:IP:PORT, unix:PATH or vsock:CID:PORT (recv: tcp:0.0.0.0:PORT, vsock:ANY:PORT)\n"
			"-n: zeros instead of the pattern, no checksum\n");
	exit(2);
}

// number parses a decimal in [0, max].
static unsigned long long number(const char *s, unsigned long long max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *s < '0' || *s > '9' || *end != '\0' || v > max) {
		printf("SQUIB-NETBENCH-FAIL bad number %s\n", s);
		exit(2);
	}
	return v;
}

// An ADDR, parsed.
struct addr {
	int family;
	socklen_t len;
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_un un;
		struct sockaddr_vm vm;
	} u;
};

static void parse(const char *s, struct addr *a)
{
	memset(a, 0, sizeof *a);
	char buf[256];
	if (strlen(s) >= sizeof buf)
		fail("bad address", s);
	strcpy(buf, s);
	if (strncmp(buf, "unix:", 5) == 0) {
		const char *path = buf + 5;
		if (*path == '\0' || strlen(path) >= sizeof a->u.un.sun_path)
			fail("bad address", s);
		a->family = AF_UNIX;
		a->u.un.sun_family = AF_UNIX;
		strcpy(a->u.un.sun_path, path);
		a->len = sizeof a->u.un;
		return;
	}
	// tcp:IP:PORT, vsock:CID:PORT: the port follows the last colon.
	char *colon = strrchr(buf, ':');
	char *first = strchr(buf, ':');
	if (colon == NULL || colon == first)
		fail("bad address", s);
	*colon = '\0';
	unsigned long long port = number(colon + 1, UINT32_MAX);
	const char *host = first + 1;
	*first = '\0';
	if (strcmp(buf, "tcp") == 0) {
		if (port > 65535)
			fail("bad port", colon + 1);
		a->family = AF_INET;
		a->u.in.sin_family = AF_INET;
		a->u.in.sin_port = htons(port);
		if (inet_pton(AF_INET, host, &a->u.in.sin_addr) != 1)
			fail("bad IPv4 address", host);
		a->len = sizeof a->u.in;
	} else if (strcmp(buf, "vsock") == 0) {
		a->family = AF_VSOCK;
		a->u.vm.svm_family = AF_VSOCK;
		a->u.vm.svm_cid = strcmp(host, "ANY") == 0 ? VMADDR_CID_ANY : number(host, UINT32_MAX);
		a->u.vm.svm_port = port;
		a->len = sizeof a->u.vm;
	} else {
		fail("bad address", s);
	}
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int nocheck; // -n

static void report(const char *what, unsigned long long bytes, uint64_t sum, double t0)
{
	double secs = now() - t0;
	char hex[17] = "-";
	if (!nocheck)
		snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
	printf("SQUIB-NETBENCH-%s bytes=%llu sum=%s secs=%.6f mbps=%.2f\n", what, bytes, hex, secs,
	       secs > 0 ? bytes * 8 / secs / 1e6 : 0);
}

static unsigned char buf[CHUNK];

// drain reads fd to EOF and returns the bytes read, folding them into the
// FNV-1a sum *sum if sum is not NULL (and checks are on); a read error
// fails with what.
static unsigned long long drain(int fd, uint64_t *sum, const char *what)
{
	unsigned long long got = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			syserr(what);
		if (n == 0)
			return got;
		for (ssize_t i = 0; sum && i < n && !nocheck; i++)
			*sum = (*sum ^ buf[i]) * 1099511628211ull;
		got += n;
	}
}

// readall reads fd to EOF and prints the RECV line.
static void readall(int fd, double t0)
{
	uint64_t sum = 14695981039346656037ull;
	unsigned long long got = drain(fd, &sum, "read");
	report("RECV", got, sum, t0);
	close(fd);
}

// writeall writes bytes of the pattern to fd, shuts its sending, waits for
// the peer to close and prints the SEND line.
static void writeall(int fd, unsigned long long bytes, double t0)
{
	uint32_t x = 2463534242u;
	uint64_t sum = 14695981039346656037ull;
	for (unsigned long long left = bytes; left > 0;) {
		size_t n = left < CHUNK ? left : CHUNK;
		for (size_t i = 0; i < n && !nocheck; i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = x;
			sum = (sum ^ buf[i]) * 1099511628211ull;
		}
		for (size_t off = 0; off < n;) {
			ssize_t k = write(fd, buf + off, n - off);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				syserr("write");
			off += k;
		}
		left -= n;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		syserr("shutdown");
	drain(fd, NULL, "read after shutdown"); // the peer sends nothing; EOF is its close
	report("SEND", bytes, sum, t0);
	close(fd);
}

static int listenon(struct addr *a, const char *spec)
{
	int l = socket(a->family, SOCK_STREAM, 0);
	if (l < 0)
		syserr("socket");
	if (a->family == AF_INET) {
		int one = 1;
		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	}
	struct stat st;
	if (a->family == AF_UNIX && lstat(a->u.un.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(a->u.un.sun_path);
	if (bind(l, &a->u.sa, a->len) < 0)
		syserr("bind");
	if (listen(l, 1) < 0)
		syserr("listen");
	if (a->family == AF_INET) {
		socklen_t len = sizeof a->u.in;
		if (getsockname(l, &a->u.sa, &len) < 0)
			syserr("getsockname");
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof ip);
		printf("SQUIB-NETBENCH-READY tcp:%s:%u\n", ip, ntohs(a->u.in.sin_port));
	} else {
		printf("SQUIB-NETBENCH-READY %s\n", spec);
	}
	return l;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	int listening = strcmp(argv[1], "recv") == 0;
	if (!listening && strcmp(argv[1], "send") != 0)
		usage();
	int reverse = 0, opt;
	while ((opt = getopt(argc - 1, argv + 1, "rn")) != -1) {
		if (opt == 'r')
			reverse = 1;
		else if (opt == 'n')
			nocheck = 1;
		else
			usage();
	}
	int i = optind + 1;
	// The side that writes: send, or recv -r.
	int writes = listening == reverse;
	if (argc != i + 1 + writes)
		usage();
	unsigned long long bytes = writes ? number(argv[i + 1], 1ull << 50) : 0;
	struct addr a;
	parse(argv[i], &a);
	signal(SIGPIPE, SIG_IGN); // a peer gone shows as a write error
	setvbuf(stdout, NULL, _IOLBF, 0);

	int fd;
	if (listening) {
		int l = listenon(&a, argv[i]);
		for (;;) {
			fd = accept(l, NULL, NULL);
			if (fd >= 0)
				break;
			if (errno != EINTR && errno != ECONNABORTED)
				syserr("accept");
		}
		close(l);
		if (a.family == AF_UNIX)
			unlink(a.u.un.sun_path);
	} else {
		fd = socket(a.family, SOCK_STREAM, 0);
		if (fd < 0)
			syserr("socket");
		if (connect(fd, &a.u.sa, a.len) < 0)
			syserr("connect");
	}
	double t0 = now();
	if (writes)
		writeall(fd, bytes, t0);
	else
		readall(fd, t0);
	return 0;
}
