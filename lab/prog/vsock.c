// vsock: the lab guest's AF_VSOCK streams, which busybox has none of.
//
// Usage: vsock echo PORT
//        vsock connect CID PORT BYTES
//
// echo accepts stream connections on PORT, any number at once, each served
// by a child process that writes back every byte it reads until the peer
// shuts its sending; the child then shuts its own sending and exits. It
// prints SQUIB-VSOCK-ECHO-READY port=PORT once it listens. A connection
// that ends in an error (the reset a restored guest's connections get)
// prints
//
//	SQUIB-VSOCK-ECHO-END peer=CID:PORT bytes=N error=REASON
//
// connect sends BYTES of the lab's pattern (xorshift32 from 2463534242,
// the low byte of each step; e2e/labtool makes the same) to CID:PORT, shuts
// its sending, reads whatever comes back until EOF and prints
//
//	SQUIB-VSOCK-CONNECT sent=BYTES sum=FNV received=N
//
// where FNV is the 64-bit FNV-1a of the bytes sent, in hex. Failures print
// SQUIB-VSOCK-FAIL and exit 1.
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK 65536

static void syserr(const char *what)
{
	printf("SQUIB-VSOCK-FAIL %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned long number(const char *s, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v > max) {
		printf("SQUIB-VSOCK-FAIL bad number %s\n", s);
		exit(2);
	}
	return v;
}

// writeall writes n bytes of p to fd; it fails on an error.
static int writeall(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= k;
	}
	return 0;
}

// serve echoes one connection, in its child.
static void __attribute__((noreturn)) serve(int fd, struct sockaddr_vm *peer)
{
	static unsigned char buf[CHUNK];
	unsigned long long total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			break;
		if (n < 0 || writeall(fd, buf, n) < 0) {
			printf("SQUIB-VSOCK-ECHO-END peer=%u:%u bytes=%llu error=%s\n", peer->svm_cid, peer->svm_port, total, strerror(errno));
			exit(1);
		}
		total += n;
	}
	shutdown(fd, SHUT_WR);
	exit(0);
}

static void __attribute__((noreturn)) echo(unsigned port)
{
	int l = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (l < 0)
		syserr("socket");
	struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
	if (bind(l, (struct sockaddr *)&a, sizeof a) < 0)
		syserr("bind");
	if (listen(l, 128) < 0)
		syserr("listen");
	signal(SIGCHLD, SIG_IGN); // children reap themselves
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("SQUIB-VSOCK-ECHO-READY port=%u\n", port);
	for (;;) {
		struct sockaddr_vm peer;
		socklen_t len = sizeof peer;
		int fd = accept(l, (struct sockaddr *)&peer, &len);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			syserr("accept");
		}
		pid_t pid = fork();
		if (pid < 0)
			syserr("fork");
		if (pid == 0) {
			close(l);
			serve(fd, &peer);
		}
		close(fd);
	}
}

static int connectto(unsigned cid, unsigned port, unsigned long long bytes)
{
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0)
		syserr("socket");
	struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
		syserr("connect");
	static unsigned char buf[CHUNK];
	uint32_t x = 2463534242u;
	uint64_t sum = 14695981039346656037ull;
	for (unsigned long long left = bytes; left > 0;) {
		size_t n = left < CHUNK ? left : CHUNK;
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = x;
			sum = (sum ^ buf[i]) * 1099511628211ull;
		}
		if (writeall(fd, buf, n) < 0)
			syserr("write");
		left -= n;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		syserr("shutdown");
	unsigned long long got = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			syserr("read");
		if (n == 0)
			break;
		got += n;
	}
	printf("SQUIB-VSOCK-CONNECT sent=%llu sum=%016llx received=%llu\n", bytes, (unsigned long long)sum, got);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "echo") == 0)
		echo(number(argv[2], UINT32_MAX)); // does not return
	if (argc == 5 && strcmp(argv[1], "connect") == 0)
		return connectto(number(argv[2], UINT32_MAX), number(argv[3], UINT32_MAX), number(argv[4], 1ull << 40));
	fprintf(stderr, "usage: vsock echo PORT\n       vsock connect CID PORT BYTES\n");
	return 2;
}
