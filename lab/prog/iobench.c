// iobench: the lab's tiny block benchmark. The same static binary runs in
// the guest, on a squibd drive, and in L1, on the image file behind it, so
// a test can set squibd's throughput against the floor its host gives.
//
// Usage: iobench seqread|seqwrite|randread FILE SIZE_MIB [SECONDS]
//
// seqread and seqwrite move the first SIZE_MIB MiB of FILE in 1 MiB
// blocks (seqwrite then fdatasyncs, inside the time); randread reads 4 KiB
// at random aligned offsets within them for SECONDS (default 10), from a
// fixed seed, so every run reads the same blocks. FILE is opened O_DIRECT,
// so the page cache neither helps nor hides the device; where that is
// refused (EINVAL: a filesystem without direct I/O) iobench says so and
// goes on buffered. It prints one line:
//
//	SQUIB-IOBENCH op=OP bytes=N seconds=S mib_per_s=X iops=Y
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEQ_BLOCK (1 << 20)
#define RAND_BLOCK 4096

static const char *op, *path;
static int fd, direct = 1;

static void fail(const char *what)
{
	printf("SQUIB-IOBENCH-FAIL op=%s %s\n", op ? op : "-", what);
	exit(1);
}

// syserr fails with errno's reason.
static void syserr(const char *what)
{
	printf("SQUIB-IOBENCH-FAIL op=%s file=%s %s: %s\n", op, path, what, strerror(errno));
	exit(1);
}

static void buffered(int err)
{
	direct = 0;
	printf("SQUIB-IOBENCH-NOTE op=%s file=%s O_DIRECT refused (%s): buffered I/O\n", op, path, strerror(err));
}

static double now(void)
{
	struct timespec t;
	if (clock_gettime(CLOCK_MONOTONIC, &t))
		syserr("clock_gettime");
	return t.tv_sec + t.tv_nsec / 1e9;
}

// xfer reads or writes n bytes at off, all of them. Some filesystems take
// O_DIRECT at open and refuse it only at the first transfer: then iobench
// drops it and tries again.
static void xfer(int write, void *buf, size_t n, off_t off)
{
	ssize_t k = write ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
	if (k < 0 && errno == EINVAL && direct) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
			syserr("fcntl");
		buffered(EINVAL);
		k = write ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
	}
	if (k < 0)
		syserr(write ? "writing" : "reading");
	if ((size_t)k != n) {
		char why[96];
		snprintf(why, sizeof why, "short %s at offset %lld: FILE smaller than SIZE_MIB?",
			 write ? "write" : "read", (long long)off);
		fail(why);
	}
}

// number parses a positive decimal argument.
static unsigned long number(const char *s, const char *name)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v == 0 || *s == '-') {
		char why[64];
		snprintf(why, sizeof why, "%s %s: not a positive number", name, s);
		fail(why);
	}
	return v;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 4 || argc > 5)
		fail("usage: iobench seqread|seqwrite|randread FILE SIZE_MIB [SECONDS]");
	op = argv[1], path = argv[2];
	int write = !strcmp(op, "seqwrite");
	if (!write && strcmp(op, "seqread") && strcmp(op, "randread"))
		fail("usage: iobench seqread|seqwrite|randread FILE SIZE_MIB [SECONDS]");
	unsigned long mib = number(argv[3], "SIZE_MIB");
	if (mib > (unsigned long)INT64_MAX >> 20)
		fail("SIZE_MIB too large");
	unsigned long secs = argc == 5 ? number(argv[4], "SECONDS") : 10;
	uint64_t size = (uint64_t)mib << 20;

	int flags = write ? O_WRONLY | O_CREAT : O_RDONLY;
	fd = open(path, flags | O_DIRECT, 0644);
	if (fd < 0 && errno == EINVAL) {
		buffered(EINVAL);
		fd = open(path, flags, 0644);
	}
	if (fd < 0)
		syserr("opening");
	// O_DIRECT wants the buffer aligned to the device's logical block;
	// 4096 covers every block size Linux has.
	void *p;
	int err = posix_memalign(&p, 4096, SEQ_BLOCK);
	if (err) {
		errno = err;
		syserr("posix_memalign");
	}
	uint8_t *buf = p;
	for (size_t i = 0; i < SEQ_BLOCK; i++)
		buf[i] = (uint8_t)(i * 31 + 7);

	uint64_t bytes = 0, ops = 0;
	double t0 = now(), t;
	if (!strcmp(op, "randread")) {
		uint64_t x = 0x5eed5eed5eed5eedull, blocks = size / RAND_BLOCK;
		do {
			// xorshift64: cheap and the same sequence on every run.
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			xfer(0, buf, RAND_BLOCK, (off_t)(x % blocks * RAND_BLOCK));
			bytes += RAND_BLOCK, ops++;
		} while ((t = now() - t0) < secs);
	} else {
		for (uint64_t off = 0; off < size; off += SEQ_BLOCK) {
			if (write)
				memcpy(buf, &off, sizeof off); // every block different
			xfer(write, buf, SEQ_BLOCK, (off_t)off);
			bytes += SEQ_BLOCK, ops++;
		}
		if (write && fdatasync(fd))
			syserr("fdatasync");
		t = now() - t0;
	}
	if (close(fd))
		syserr("closing");
	if (t <= 0)
		t = 1e-9;
	printf("SQUIB-IOBENCH op=%s bytes=%llu seconds=%.3f mib_per_s=%.1f iops=%.1f\n",
	       op, (unsigned long long)bytes, t, bytes / t / (1 << 20), ops / t);
	return 0;
}
