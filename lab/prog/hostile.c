// hostile: the lab's hostile guest. It drives one virtio-blk device from
// user space, after guest-init has taken it from Linux's driver, and feeds
// it malformed descriptor chains and rings, one case per device reset, so
// the lab can show that squibd stays up and answers each as virtio asks: a
// malformed chain given back unused (used len 0), a corrupt ring with
// DEVICE_NEEDS_RESET. A well-formed read after a reset shows the device
// recovers. One line per case:
//
//	SQUIB-GUEST-HOSTILE case=NAME devstatus=0xSS used=LEN|- result=R
//
// devstatus is the device status register when the answer came; used the
// used element's len (- when there is none); R is needs-reset,
// "answered reqstatus=N" (N the request's status byte, 255 if the device
// never wrote it) or no-answer (nothing within 2 s). Last, it times 2000
// reads of the magic register, each an MMIO exit to squibd:
//
//	SQUIB-GUEST-HOSTILE-EXITCOST reads=2000 us_per_read=X
//
// Usage: hostile ADDR, the guest-physical address of the device's
// virtio-mmio window. The guest kernel must have /dev/mem, its device
// windows not filtered (no IO_STRICT_DEVMEM), and /proc/PID/pagemap
// (lab/guest.config); hostile must run as root, for the PFNs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_READS = 2000 };

// virtio-mmio registers (virtio 1.2 §4.2.2).
enum {
	MAGIC = 0x000, VERSION = 0x004, DEVICE_ID = 0x008,
	DEVICE_FEATURES = 0x010, DEVICE_FEATURES_SEL = 0x014,
	DRIVER_FEATURES = 0x020, DRIVER_FEATURES_SEL = 0x024,
	QUEUE_SEL = 0x030, QUEUE_NUM_MAX = 0x034, QUEUE_NUM = 0x038,
	QUEUE_READY = 0x044, QUEUE_NOTIFY = 0x050, STATUS = 0x070,
	QUEUE_DESC = 0x080, QUEUE_DRIVER = 0x090, QUEUE_DEVICE = 0x0a0,
};

// Device status bits (§2.1), descriptor flags (§2.7.5), feature bits (§6).
enum { ACKNOWLEDGE = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, NEEDS_RESET = 0x40 };
enum { NEXT = 1, WRITE = 2, INDIRECT = 4 };
#define F_INDIRECT_DESC (1ull << 28)
#define F_VERSION_1 (1ull << 32)

#define QSIZE 16 // small, so that a loop or a jump past the queue is cheap to make
#define SECTOR 512
#define WAIT 2.0 // seconds for the device to answer, or to reset

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
_Static_assert(sizeof(struct desc) == 16, "a descriptor is 16 bytes");

// The rings share one page: physical memory is contiguous only within a
// page. used.ring is 4-aligned after flags and idx, as §2.7.8 has it.
struct avail {
	uint16_t flags, idx, ring[QSIZE];
};
struct used {
	uint16_t flags, idx;
	struct { uint32_t id, len; } ring[QSIZE];
};
enum { DESC_OFF = 0, AVAIL_OFF = 256, USED_OFF = 512 }; // in the rings' page
_Static_assert(QSIZE * 16 <= AVAIL_OFF && AVAIL_OFF + sizeof(struct avail) + 2 <= USED_OFF, "rings overlap");
enum { HDR_OFF = 0, STATUS_OFF = 16, IND_A_OFF = 64, IND_B_OFF = 128 }; // in the request's

struct blkhdr { uint32_t type, reserved; uint64_t sector; };

static volatile uint32_t *mmio;
static long pagesz;
static uint64_t offered;

// A page of guest RAM: where this process sees it, and where the device does.
struct page { uint8_t *va; uint64_t pa; };
static struct page rings, req, data;

static struct desc *table, *ind_a, *ind_b;
static volatile struct avail *avail;
static volatile struct used *used;
static struct blkhdr *hdr;
static volatile uint8_t *status;

static void fail(const char *what)
{
	printf("SQUIB-GUEST-HOSTILE-FAIL %s\n", what);
	exit(1);
}

// syserr fails with errno's reason.
static void syserr(const char *what)
{
	printf("SQUIB-GUEST-HOSTILE-FAIL %s: %s\n", what, strerror(errno));
	exit(1);
}

// Register accesses are single 32-bit ldr and str, as Linux's readl and
// writel are: KVM can hand a trapped access to squibd only when the
// syndrome describes it (ISV), which loads and stores with writeback or in
// pairs, such as a compiler may emit, do not give.
static uint32_t rd(unsigned off)
{
	uint32_t v;
	__asm__ volatile("ldr %w0, [%1]" : "=r"(v) : "r"(mmio + off / 4) : "memory");
	return v;
}

static void wr(unsigned off, uint32_t v)
{
	__asm__ volatile("str %w0, [%1]" : : "rZ"(v), "r"(mmio + off / 4) : "memory");
}

static void wr64(unsigned off, uint64_t v)
{
	wr(off, (uint32_t)v);
	wr(off + 4, v >> 32);
}

static double now(void)
{
	struct timespec t;
	if (clock_gettime(CLOCK_MONOTONIC, &t))
		syserr("clock_gettime");
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void nap(void)
{
	struct timespec t = {0, 1000000};
	nanosleep(&t, NULL);
}

// map_window maps the device's registers from /dev/mem; O_SYNC makes the
// mapping uncached (Device memory), as MMIO needs.
static void map_window(uint64_t addr)
{
	int fd = open("/dev/mem", O_RDWR | O_SYNC);
	if (fd < 0)
		syserr("open /dev/mem");
	uint64_t base = addr & ~(uint64_t)(pagesz - 1);
	void *p = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, base);
	if (p == MAP_FAILED)
		syserr("mmap /dev/mem");
	mmio = (volatile uint32_t *)((uint8_t *)p + (addr - base));
	close(fd);
}

// dma_page allocates a page the device can use: locked, so its frame stays
// put, and touched, so it has one; its address from /proc/self/pagemap
// (bits 0-54 the PFN, bit 63 present; the PFN reads 0 without
// CAP_SYS_ADMIN).
static struct page dma_page(int pagemap)
{
	struct page pg;
	pg.va = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pg.va == MAP_FAILED)
		syserr("mmap a buffer page");
	if (mlock(pg.va, pagesz))
		syserr("mlock a buffer page");
	memset(pg.va, 0, pagesz);
	uint64_t e;
	if (pread(pagemap, &e, 8, (uintptr_t)pg.va / pagesz * 8) != 8)
		syserr("read /proc/self/pagemap");
	if (!(e >> 63) || !(e & ((1ull << 55) - 1)))
		fail("/proc/self/pagemap gives no frame (not root?)");
	pg.pa = (e & ((1ull << 55) - 1)) * pagesz;
	return pg;
}

// reset writes 0 to the status and waits until it reads 0 (§2.4.2).
static void reset(void)
{
	wr(STATUS, 0);
	for (double t0 = now(); rd(STATUS) != 0; nap()) {
		if (now() - t0 > WAIT)
			fail("device reset did not complete in 2 s");
	}
}

// setup initializes the device as §3.1.1 orders it, with fresh rings:
// VERSION_1 and, if offered, INDIRECT_DESC (for nested-indirect to break
// the nesting rule rather than the feature's); queue 0 of QSIZE entries.
static void setup(void)
{
	reset();
	memset(rings.va, 0, pagesz);
	memset(req.va, 0, pagesz);
	// Linux's driver let go of the device's interrupt; ask for none.
	avail->flags = 1;
	wr(STATUS, ACKNOWLEDGE);
	wr(STATUS, ACKNOWLEDGE | DRIVER);
	wr(DEVICE_FEATURES_SEL, 1);
	offered = (uint64_t)rd(DEVICE_FEATURES) << 32;
	wr(DEVICE_FEATURES_SEL, 0);
	offered |= rd(DEVICE_FEATURES);
	uint64_t want = F_VERSION_1 | (offered & F_INDIRECT_DESC);
	wr(DRIVER_FEATURES_SEL, 0);
	wr(DRIVER_FEATURES, (uint32_t)want);
	wr(DRIVER_FEATURES_SEL, 1);
	wr(DRIVER_FEATURES, want >> 32);
	wr(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
	if (!(rd(STATUS) & FEATURES_OK))
		fail("device refused VERSION_1 (FEATURES_OK did not stick)");
	wr(QUEUE_SEL, 0);
	if (rd(QUEUE_NUM_MAX) < QSIZE)
		fail("queue 0 is smaller than 16");
	wr(QUEUE_NUM, QSIZE);
	wr64(QUEUE_DESC, rings.pa + DESC_OFF);
	wr64(QUEUE_DRIVER, rings.pa + AVAIL_OFF);
	wr64(QUEUE_DEVICE, rings.pa + USED_OFF);
	wr(QUEUE_READY, 1);
	wr(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
	if ((rd(STATUS) & (DRIVER_OK | NEEDS_RESET)) != DRIVER_OK)
		fail("device refused DRIVER_OK");
}

// request writes a well-formed IN request of sector 0 into descriptors
// 0-2 of t (the queue's table, or an indirect one): header, one sector of
// data, status byte, the last two device-writable. The status byte starts
// at 0xff, so a device that never writes it shows.
static void request(struct desc *t)
{
	hdr->type = 0; // VIRTIO_BLK_T_IN
	hdr->sector = 0;
	*status = 0xff;
	t[0] = (struct desc){req.pa + HDR_OFF, sizeof *hdr, NEXT, 1};
	t[1] = (struct desc){data.pa, SECTOR, WRITE | NEXT, 2};
	t[2] = (struct desc){req.pa + STATUS_OFF, 1, WRITE, 0};
}

// run makes one case on a freshly set-up device: a request whose chain or
// ring entry name breaks as it says, made available and notified; then it
// prints how the device answered.
static void run(const char *name)
{
	setup();
	request(table);
	uint16_t head = 0, idx = 1;
	if (!strcmp(name, "loop")) {
		table[2].flags |= NEXT; // status -> data -> status ...
		table[2].next = 1;
	} else if (!strcmp(name, "outside")) {
		table[1].addr = 0x1000000000ull; // 64 GiB: far beyond the guest's RAM
	} else if (!strcmp(name, "huge")) {
		table[1].len = 0xffffffff;
	} else if (!strcmp(name, "nested-indirect")) {
		request(ind_b);
		ind_a[0] = (struct desc){req.pa + IND_B_OFF, 3 * sizeof(struct desc), INDIRECT, 0};
		table[0] = (struct desc){req.pa + IND_A_OFF, 3 * sizeof(struct desc), INDIRECT, 0};
	} else if (!strcmp(name, "readonly-write")) {
		table[1].flags = NEXT; // the device would have to write a buffer it may only read
	} else if (!strcmp(name, "badhead")) {
		head = QSIZE;
	} else if (!strcmp(name, "badidx")) {
		idx = QSIZE + 1;
	}
	avail->ring[0] = head;
	// The descriptors and the ring entry before the index that publishes
	// them (§2.7.13), and all of it before the notification.
	__sync_synchronize();
	avail->idx = idx;
	__sync_synchronize();
	wr(QUEUE_NOTIFY, 0);

	for (double t0 = now();; nap()) {
		uint32_t s;
		if (used->idx != 0) {
			__sync_synchronize(); // the element and the status byte, written before used.idx
			s = rd(STATUS);
			printf("SQUIB-GUEST-HOSTILE case=%s devstatus=0x%02x used=%u result=answered reqstatus=%u",
			       name, s, used->ring[0].len, *status);
			if (!strcmp(name, "good")) {
				printf(" data=");
				for (int i = 0; i < 16; i++)
					printf("%02x", data.va[i]);
			}
			printf("\n");
			return;
		}
		if ((s = rd(STATUS)) & NEEDS_RESET) {
			printf("SQUIB-GUEST-HOSTILE case=%s devstatus=0x%02x used=- result=needs-reset\n", name, s);
			return;
		}
		if (now() - t0 > WAIT) {
			printf("SQUIB-GUEST-HOSTILE case=%s devstatus=0x%02x used=- result=no-answer\n", name, s);
			return;
		}
	}
}

int main(int argc, char **argv)
{
	static const char *cases[] = {"loop", "outside", "huge", "nested-indirect", "readonly-write", "badhead", "badidx"};
	char *end;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2)
		fail("usage: hostile ADDR (the device's virtio-mmio window)");
	uint64_t addr = strtoull(argv[1], &end, 0);
	if (*argv[1] == '\0' || *end != '\0' || addr % 4 != 0)
		fail("usage: hostile ADDR (the device's virtio-mmio window)");
	if ((pagesz = sysconf(_SC_PAGESIZE)) <= 0)
		syserr("sysconf(_SC_PAGESIZE)");

	map_window(addr);
	if (rd(MAGIC) != 0x74726976 || rd(VERSION) != 2 || rd(DEVICE_ID) != 2)
		fail("no virtio-mmio version 2 block device at ADDR");

	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap < 0)
		syserr("open /proc/self/pagemap");
	rings = dma_page(pagemap);
	req = dma_page(pagemap);
	data = dma_page(pagemap);
	close(pagemap);
	table = (struct desc *)(rings.va + DESC_OFF);
	avail = (volatile struct avail *)(rings.va + AVAIL_OFF);
	used = (volatile struct used *)(rings.va + USED_OFF);
	hdr = (struct blkhdr *)(req.va + HDR_OFF);
	status = req.va + STATUS_OFF;
	ind_a = (struct desc *)(req.va + IND_A_OFF);
	ind_b = (struct desc *)(req.va + IND_B_OFF);

	setup(); // for the features offered
	printf("SQUIB-GUEST-HOSTILE device=0x%llx features=0x%016llx indirect=%s\n",
	       (unsigned long long)addr, (unsigned long long)offered, offered & F_INDIRECT_DESC ? "yes" : "no");

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		run(cases[i]);
	run("good"); // after the reset setup does, as every case
	reset();

	// What one MMIO exit costs here (a read squibd answers): the unit of
	// every virtio request's price in this lab.
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < EXIT_READS; i++)
		(void)rd(MAGIC);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3;
	printf("SQUIB-GUEST-HOSTILE-EXITCOST reads=%d us_per_read=%.1f\n", EXIT_READS, us / EXIT_READS);
	return 0;
}
