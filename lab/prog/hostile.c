// hostile: the lab's hostile guest. It drives one virtio device from user
// space, after guest-init has taken it from Linux's driver, and feeds it
// malformed input, so the lab can show that squibd stays up and answers
// each case as virtio asks. One line per case:
//
//	SQUIB-GUEST-HOSTILE case=NAME devstatus=0xSS ...
//
// devstatus is the device status register when the answer came; the rest
// depends on the device.
//
// blk: malformed descriptor chains and rings, one case per device reset:
// a malformed chain given back unused (used len 0), a corrupt ring with
// DEVICE_NEEDS_RESET. A well-formed read after a reset shows the device
// recovers. The rest of the line is "used=LEN|- result=R": the used
// element's len (- when there is none); R is needs-reset,
// "answered reqstatus=N" (N the request's status byte, 255 if the device
// never wrote it) or no-answer (nothing within 2 s). Last, it times 2000
// reads of the magic register, each an MMIO exit to squibd:
//
//	SQUIB-GUEST-HOSTILE-EXITCOST reads=2000 us_per_read=X
//
// net (virtio-net on squibd's user-mode network, §5.1): malformed frames
// on the transmit queue, each an ARP request for the network's gateway
// unless it is too short to be one, and a receive buffer too short for
// the gateway's ARP reply; last, a well-formed ARP request, whose reply
// must arrive; all on one set-up of the device, as a driver runs it (and
// so for vsock). The rest of the line is "tx=LEN|- rx=R": the transmitted
// chain's used len (- if the device did not give it back within 2 s); R
// is none (no frame within 2.5 s), or the received chain's used len, then
// what the frame is: "arp=reply sender=MAC/IP" or "ethertype=0xTTTT".
//
// vsock (virtio-vsock, §5.10, to the host's CID 2): packets with bad
// lengths, addresses, types, ops and credit, on no connection and on
// connections it opens to host ports 5001 and 5002, where the host must
// listen, and a connection request to port 5003, where it must not. The
// rest of the line is "tx=LEN|- rx=R": R is none (no packet within
// 2.5 s), or the first packet the device sent in answer, "OP used=N
// from=CID:PORT to=CID:PORT len=N buf_alloc=N fwd_cnt=N" (OP rst,
// response, credit_update, ... or op<N>), with "more=K" if K more came.
// The stream to port 5001 carries "hello from the hostile guest\n".
//
// Usage: hostile blk|net|vsock ADDR, the kind of device and the
// guest-physical address of its virtio-mmio window. The guest kernel must
// have /dev/mem, its device windows not filtered (no IO_STRICT_DEVMEM),
// and /proc/PID/pagemap (lab/guest.config); hostile must run as root, for
// the PFNs.
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
	CONFIG = 0x100,
};

// Device status bits (§2.1), descriptor flags (§2.7.5), feature bits (§6).
enum { ACKNOWLEDGE = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, NEEDS_RESET = 0x40 };
enum { NEXT = 1, WRITE = 2, INDIRECT = 4 };
#define F_NET_MAC (1ull << 5)
#define F_INDIRECT_DESC (1ull << 28)
#define F_VERSION_1 (1ull << 32)

// Device IDs (§5).
enum { ID_NET = 1, ID_BLK = 2, ID_VSOCK = 19 };

#define QSIZE 16 // small, so that a loop or a jump past the queue is cheap to make
#define SECTOR 512
#define WAIT 2.0    // seconds for the device to answer, or to reset
#define RX_WAIT 2.5 // seconds for a frame or packet the device may send in answer

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
static uint64_t addr, offered; // the window's address; the features offered

// A page of guest RAM: where this process sees it, and where the device does.
struct page { uint8_t *va; uint64_t pa; };
// req holds what the driver sends (a block request, a frame, a packet) and
// indirect tables; data what the device writes (a sector, received frames
// and packets); bulk a long frame's buffer.
static struct page req, data, bulk;

// A queue: its rings, the next avail index the driver publishes, and the
// used index it has read up to.
struct vq {
	unsigned index;
	struct page rings;
	struct desc *table;
	volatile struct avail *avail;
	volatile struct used *used;
	uint16_t next, seen;
};
static struct vq vqs[2]; // blk: 0; net and vsock: rx 0, tx 1 (the event queue is not set up)

static struct desc *table, *ind_a, *ind_b; // blk's
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

// setup initializes the device as §3.1.1 orders it, with fresh rings and
// buffers: VERSION_1, INDIRECT_DESC if offered (for nested-indirect to
// break the nesting rule rather than the feature's, and for net's long
// frame) and those of features offered; queues 0 to nq-1 of QSIZE entries.
static void setup(unsigned nq, uint64_t features)
{
	reset();
	memset(req.va, 0, pagesz);
	memset(data.va, 0, pagesz);
	wr(STATUS, ACKNOWLEDGE);
	wr(STATUS, ACKNOWLEDGE | DRIVER);
	wr(DEVICE_FEATURES_SEL, 1);
	offered = (uint64_t)rd(DEVICE_FEATURES) << 32;
	wr(DEVICE_FEATURES_SEL, 0);
	offered |= rd(DEVICE_FEATURES);
	uint64_t want = F_VERSION_1 | (offered & (F_INDIRECT_DESC | features));
	wr(DRIVER_FEATURES_SEL, 0);
	wr(DRIVER_FEATURES, (uint32_t)want);
	wr(DRIVER_FEATURES_SEL, 1);
	wr(DRIVER_FEATURES, want >> 32);
	wr(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
	if (!(rd(STATUS) & FEATURES_OK))
		fail("device refused VERSION_1 (FEATURES_OK did not stick)");
	for (unsigned i = 0; i < nq; i++) {
		struct vq *q = &vqs[i];
		memset(q->rings.va, 0, pagesz);
		q->next = q->seen = 0;
		// Linux's driver let go of the device's interrupt; ask for none.
		q->avail->flags = 1;
		wr(QUEUE_SEL, i);
		if (rd(QUEUE_NUM_MAX) < QSIZE)
			fail("a queue is smaller than 16");
		wr(QUEUE_NUM, QSIZE);
		wr64(QUEUE_DESC, q->rings.pa + DESC_OFF);
		wr64(QUEUE_DRIVER, q->rings.pa + AVAIL_OFF);
		wr64(QUEUE_DEVICE, q->rings.pa + USED_OFF);
		wr(QUEUE_READY, 1);
	}
	wr(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
	if ((rd(STATUS) & (DRIVER_OK | NEEDS_RESET)) != DRIVER_OK)
		fail("device refused DRIVER_OK");
}

// post makes the chain whose first descriptor is head available on q and
// notifies the queue: the descriptors and the ring entry before the index
// that publishes them (§2.7.13), and all of it before the notification.
static void post(struct vq *q, uint16_t head)
{
	q->avail->ring[q->next % QSIZE] = head;
	__sync_synchronize();
	q->avail->idx = ++q->next;
	__sync_synchronize();
	wr(QUEUE_NOTIFY, q->index);
}

// take waits up to secs for q's next used element and returns 1 with it,
// or 0 if none came.
static int take(struct vq *q, double secs, uint32_t *id, uint32_t *len)
{
	for (double t0 = now(); q->used->idx == q->seen; nap()) {
		if (now() - t0 > secs)
			return 0;
	}
	__sync_synchronize(); // the element and the buffers, written before used.idx
	*id = q->used->ring[q->seen % QSIZE].id;
	*len = q->used->ring[q->seen % QSIZE].len;
	q->seen++;
	return 1;
}

// sent waits for the transmitted chain to come back and prints the
// case's start and the tx field.
static void sent(const char *name)
{
	uint32_t id, len;
	int back = take(&vqs[1], WAIT, &id, &len);
	printf("SQUIB-GUEST-HOSTILE case=%s devstatus=0x%02x tx=", name, rd(STATUS));
	if (back)
		printf("%u", len);
	else
		printf("-");
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

// blk_case makes one case on a freshly set-up block device: a request
// whose chain or ring entry name breaks as it says, made available and
// notified; then it prints how the device answered.
static void blk_case(const char *name)
{
	setup(1, 0);
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
	__sync_synchronize(); // as post does, with idx perhaps wrong
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

static void blk_main(void)
{
	static const char *cases[] = {"loop", "outside", "huge", "nested-indirect", "readonly-write", "badhead", "badidx"};

	table = vqs[0].table;
	avail = vqs[0].avail;
	used = vqs[0].used;
	hdr = (struct blkhdr *)(req.va + HDR_OFF);
	status = req.va + STATUS_OFF;
	ind_a = (struct desc *)(req.va + IND_A_OFF);
	ind_b = (struct desc *)(req.va + IND_B_OFF);

	setup(1, 0); // for the features offered
	printf("SQUIB-GUEST-HOSTILE device=0x%llx features=0x%016llx indirect=%s\n",
	       (unsigned long long)addr, (unsigned long long)offered, offered & F_INDIRECT_DESC ? "yes" : "no");
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		blk_case(cases[i]);
	blk_case("good"); // after the reset setup does, as every case
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
}

// virtio-net (§5.1.6): the header before every frame, under VERSION_1
// (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
// num_buffers); Ethernet and ARP (RFC 826) for IPv4.
enum { NET_HDR = 12, ETH_HDR = 14, ARP_LEN = 28 };
enum { NEEDS_CSUM = 1, GSO_TCPV4 = 1 };
static const uint8_t guest_ip[4] = {192, 168, 127, 2}, gateway_ip[4] = {192, 168, 127, 1};
static uint8_t mac[6] = {2, 0, 0, 0, 0, 1}; // the device's, if it has one

// arp writes at p an Ethernet frame from mac asking who has the user-mode
// network's gateway address, as the guest's address would ask it, and
// returns its length.
static uint32_t arp(uint8_t *p)
{
	static const uint8_t ask[8] = {0, 1, 8, 0, 6, 4, 0, 1}; // Ethernet, IPv4, address lengths, request
	memset(p, 0xff, 6); // broadcast
	memcpy(p + 6, mac, 6);
	p[12] = 0x08, p[13] = 0x06; // ARP
	uint8_t *a = p + ETH_HDR;
	memcpy(a, ask, 8);
	memcpy(a + 8, mac, 6);
	memcpy(a + 14, guest_ip, 4);
	memset(a + 18, 0, 6);
	memcpy(a + 24, gateway_ip, 4);
	return ETH_HDR + ARP_LEN;
}

// received prints the rx field of a net case: the frame the device put in
// the receive buffer at buf, if one came.
static void received(const uint8_t *buf)
{
	uint32_t id, len;
	if (!take(&vqs[0], RX_WAIT, &id, &len)) {
		printf(" rx=none\n");
		return;
	}
	printf(" rx=%u", len);
	const uint8_t *f = buf + NET_HDR, *a = f + ETH_HDR;
	if (len < NET_HDR + ETH_HDR) {
		printf("\n");
		return;
	}
	if (f[12] == 0x08 && f[13] == 0x06 && len >= NET_HDR + ETH_HDR + ARP_LEN && a[6] == 0 && a[7] == 2)
		printf(" arp=reply sender=%02x:%02x:%02x:%02x:%02x:%02x/%u.%u.%u.%u\n",
		       a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], a[17]);
	else
		printf(" ethertype=0x%02x%02x\n", f[12], f[13]);
}

// net_case transmits one frame, malformed as name says, and prints what
// the device answered; rxbuf is the receive buffer made available.
static void net_case(const char *name, const uint8_t *rxbuf)
{
	struct vq *tx = &vqs[1];
	uint8_t *h = req.va;
	memset(req.va, 0, pagesz);
	uint32_t len = NET_HDR + arp(req.va + NET_HDR);
	tx->table[0] = (struct desc){req.pa, len, 0, 0};
	if (!strcmp(name, "tx-short")) {
		tx->table[0].len = NET_HDR - 4; // not even the header
	} else if (!strcmp(name, "tx-header-only")) {
		tx->table[0].len = NET_HDR; // a header and no frame
	} else if (!strcmp(name, "tx-arp-truncated")) {
		tx->table[0].len = NET_HDR + ETH_HDR + 10; // the ARP message cut short
	} else if (!strcmp(name, "tx-csum")) {
		h[0] = NEEDS_CSUM; // the device offered no CSUM
		h[6] = ETH_HDR;    // csum_start
		h[8] = 16;         // csum_offset
	} else if (!strcmp(name, "tx-gso")) {
		h[1] = GSO_TCPV4; // nor HOST_TSO4
		h[2] = ETH_HDR + ARP_LEN;          // hdr_len
		h[4] = 1000 & 0xff, h[5] = 1000 >> 8; // gso_size
	} else if (!strcmp(name, "tx-long")) {
		// An indirect table of whole pages of bulk, which begins with the
		// ARP request: more than the 65562 bytes a frame may have.
		unsigned n = 65562 / pagesz + 2;
		struct desc *t = (struct desc *)(req.va + pagesz / 2);
		memcpy(bulk.va, req.va, len);
		for (unsigned i = 0; i < n; i++)
			t[i] = (struct desc){bulk.pa, pagesz, i + 1 < n ? NEXT : 0, i + 1};
		tx->table[0] = (struct desc){req.pa + pagesz / 2, n * sizeof *t, INDIRECT, 0};
	}
	post(tx, 0);
	sent(name);
	received(rxbuf);
}

// net_main: a receive buffer too short for the ARP reply, given back
// unused; then, with a long enough buffer made available, each malformed
// frame, which must bring no answer; then a good ARP request, whose reply
// must come into that buffer.
static void net_main(void)
{
	static const char *cases[] = {"tx-short", "tx-header-only", "tx-arp-truncated", "tx-csum", "tx-gso", "tx-long"};
	struct vq *rx = &vqs[0];

	setup(2, F_NET_MAC);
	if (offered & F_NET_MAC) {
		uint32_t lo = rd(CONFIG), hi = rd(CONFIG + 4);
		memcpy(mac, &lo, 4);
		memcpy(mac + 4, &hi, 2);
	}
	printf("SQUIB-GUEST-HOSTILE device=net features=0x%016llx mac=%02x:%02x:%02x:%02x:%02x:%02x\n",
	       (unsigned long long)offered, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	if (!(offered & F_INDIRECT_DESC))
		fail("the device does not offer INDIRECT_DESC, which tx-long uses");

	rx->table[0] = (struct desc){data.pa, NET_HDR + 8, WRITE, 0};
	post(rx, 0);
	net_case("rx-short", data.va);

	uint8_t *big = data.va + pagesz / 2;
	rx->table[1] = (struct desc){data.pa + pagesz / 2, pagesz / 2, WRITE, 0};
	post(rx, 1);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		net_case(cases[i], big);
	net_case("good", big);
	reset();
}

// virtio-vsock (§5.10.6): the packet header, little-endian and packed.
struct vhdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdr) == 44, "a vsock header is 44 bytes");
enum { STREAM = 1, SEQPACKET = 2 };
enum { REQUEST = 1, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST };
enum { HOST_CID = 2, VBUF = 256 }; // VBUF: each receive buffer's bytes
static const char hello[] = "hello from the hostile guest\n";
static uint64_t cid; // the guest's

static const char *opname(uint16_t op)
{
	static const char *names[] = {"op0", "request", "response", "rst", "shutdown", "rw", "credit_update", "credit_request"};
	static char other[16];
	if (op < sizeof names / sizeof *names)
		return names[op];
	snprintf(other, sizeof other, "op%u", op);
	return other;
}

// answered prints the rx field of a vsock case: the first packet the
// device sent within RX_WAIT, and how many more came right after it; the
// receive buffers they used are made available again.
static void answered(void)
{
	struct vq *rx = &vqs[0];
	uint32_t id, len, more = 0;
	if (!take(rx, RX_WAIT, &id, &len)) {
		printf(" rx=none\n");
		return;
	}
	struct vhdr h;
	memcpy(&h, data.va + id * VBUF, sizeof h);
	printf(" rx=%s used=%u from=%llu:%u to=%llu:%u len=%u buf_alloc=%u fwd_cnt=%u", opname(h.op), len,
	       (unsigned long long)h.src_cid, h.src_port, (unsigned long long)h.dst_cid, h.dst_port, h.len, h.buf_alloc, h.fwd_cnt);
	post(rx, id);
	while (take(rx, 0.3, &id, &len)) {
		more++;
		post(rx, id);
	}
	if (more)
		printf(" more=%u", more);
	printf("\n");
}

// vsock_main sends each case's packet, from guest port gport to host port
// hport, a well-formed one but for what its name says, and prints what
// the device answered.
static void vsock_main(void)
{
	static const struct {
		const char *name;
		uint16_t op;
		uint32_t gport, hport;
	} cases[] = {
		// No connection: dropped, or answered RST.
		{"short-header", REQUEST, 1024, 5001},
		{"len-beyond-chain", RW, 1024, 5001},
		{"len-over-64k", RW, 1024, 5001},
		{"wrong-src-cid", REQUEST, 1024, 5001},
		{"wrong-dst-cid", REQUEST, 1024, 5001},
		{"not-stream", REQUEST, 1024, 5001},
		{"unknown-op", 99, 1024, 5001},
		{"rw-unopened", RW, 1024, 5001},
		{"request-fwd-cnt", REQUEST, 1024, 5001},
		// A connection to a listener, lied to, then used and shut down.
		{"connect", REQUEST, 1025, 5001},
		{"unknown-op-open", 99, 1025, 5001},
		{"buf-alloc-lie", CREDIT_UPDATE, 1025, 5001},
		{"credit-request", CREDIT_REQUEST, 1025, 5001},
		{"rw", RW, 1025, 5001},
		{"shutdown", SHUTDOWN, 1025, 5001},
		// Another, which claims data it was never sent.
		{"connect2", REQUEST, 1026, 5002},
		{"fwd-cnt-lie", CREDIT_UPDATE, 1026, 5002},
		// A port nobody listens on.
		{"no-listener", REQUEST, 1027, 5003},
	};
	struct vq *rx = &vqs[0], *tx = &vqs[1];

	setup(2, 0);
	uint32_t lo = rd(CONFIG), hi = rd(CONFIG + 4);
	cid = (uint64_t)hi << 32 | lo;
	printf("SQUIB-GUEST-HOSTILE device=vsock features=0x%016llx cid=%llu\n",
	       (unsigned long long)offered, (unsigned long long)cid);
	if ((unsigned long)pagesz < QSIZE * VBUF)
		fail("pages too small for the receive buffers");
	for (uint16_t i = 0; i < QSIZE; i++) {
		rx->table[i] = (struct desc){data.pa + i * VBUF, VBUF, WRITE, 0};
		post(rx, i);
	}

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *name = cases[i].name;
		struct vhdr h = {
			.src_cid = cid, .dst_cid = HOST_CID, .src_port = cases[i].gport, .dst_port = cases[i].hport,
			.type = STREAM, .op = cases[i].op, .buf_alloc = 65536,
		};
		uint32_t chain = 0; // the chain's bytes, if not the header and len
		if (!strcmp(name, "short-header")) {
			chain = 20;
		} else if (!strcmp(name, "len-beyond-chain")) {
			h.len = 100, chain = sizeof h;
		} else if (!strcmp(name, "len-over-64k")) {
			h.len = 65537, chain = sizeof h;
		} else if (!strcmp(name, "wrong-src-cid")) {
			h.src_cid = HOST_CID; // the host's own
		} else if (!strcmp(name, "wrong-dst-cid")) {
			h.dst_cid = cid; // to the guest itself
		} else if (!strcmp(name, "not-stream")) {
			h.type = SEQPACKET;
		} else if (!strcmp(name, "rw-unopened") || !strcmp(name, "rw")) {
			h.len = sizeof hello - 1;
		} else if (!strcmp(name, "request-fwd-cnt")) {
			h.fwd_cnt = 4096; // a new connection has received nothing
		} else if (!strcmp(name, "buf-alloc-lie")) {
			h.buf_alloc = 0xffffffff;
		} else if (!strcmp(name, "shutdown")) {
			h.flags = 3; // neither receive nor send
		} else if (!strcmp(name, "fwd-cnt-lie")) {
			h.fwd_cnt = 65536; // the device sent nothing on it
		}
		memset(req.va, 0, pagesz);
		memcpy(req.va, &h, sizeof h);
		if (h.len <= sizeof hello)
			memcpy(req.va + sizeof h, hello, h.len);
		tx->table[0] = (struct desc){req.pa, chain ? chain : sizeof h + h.len, 0, 0};
		post(tx, 0);
		sent(name);
		answered();
	}
	reset();
}

int main(int argc, char **argv)
{
	static const struct { const char *name; uint32_t id; void (*run)(void); } kinds[] = {
		{"blk", ID_BLK, blk_main}, {"net", ID_NET, net_main}, {"vsock", ID_VSOCK, vsock_main},
	};
	const char *usage = "usage: hostile blk|net|vsock ADDR (the device's virtio-mmio window)";
	char *end;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 3)
		fail(usage);
	size_t k = 0;
	while (k < sizeof kinds / sizeof *kinds && strcmp(argv[1], kinds[k].name))
		k++;
	if (k == sizeof kinds / sizeof *kinds)
		fail(usage);
	addr = strtoull(argv[2], &end, 0);
	if (*argv[2] == '\0' || *end != '\0' || addr % 4 != 0)
		fail(usage);
	if ((pagesz = sysconf(_SC_PAGESIZE)) <= 0)
		syserr("sysconf(_SC_PAGESIZE)");

	map_window(addr);
	if (rd(MAGIC) != 0x74726976 || rd(VERSION) != 2 || rd(DEVICE_ID) != kinds[k].id) {
		printf("SQUIB-GUEST-HOSTILE-FAIL no virtio-mmio version 2 %s device at 0x%llx (device ID %u)\n",
		       kinds[k].name, (unsigned long long)addr, rd(DEVICE_ID));
		return 1;
	}

	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap < 0)
		syserr("open /proc/self/pagemap");
	for (unsigned i = 0; i < 2; i++) {
		struct vq *q = &vqs[i];
		q->index = i;
		q->rings = dma_page(pagemap);
		q->table = (struct desc *)(q->rings.va + DESC_OFF);
		q->avail = (volatile struct avail *)(q->rings.va + AVAIL_OFF);
		q->used = (volatile struct used *)(q->rings.va + USED_OFF);
	}
	req = dma_page(pagemap);
	data = dma_page(pagemap);
	bulk = dma_page(pagemap);
	close(pagemap);

	kinds[k].run();
	return 0;
}
