// ringpoke: a hostile virtio driver for the kit guest (tests/e2e/hostile_test.go).
//
// It maps a virtio-pci function's BAR through /sys/bus/pci/devices/<bdf>/resourceN, finds the
// common configuration and notify structures by walking the capability list in the function's
// config file, and misuses the device the way a buggy or malicious guest driver could:
//
//   ringpoke BDF status        print the device status byte
//   ringpoke BDF live          scribble over the live queue 0 configuration (size 3, addresses
//                              outside RAM, enable 0, a queue that does not exist) while the
//                              kernel driver runs it, and kick; the device must ignore all of
//                              it, so queue 0 must read back unchanged and NEEDS_RESET stay clear
//   ringpoke BDF outside       re-initialise the device with rings outside guest RAM
//   ringpoke BDF size3         ... with a queue size that is not a power of two
//   ringpoke BDF head          ... with rings in a page of ours whose avail ring names a head
//                              descriptor beyond the table
//   ringpoke BDF loop          ... whose descriptor chain loops (0 -> 1 -> 0 via NEXT)
//   ringpoke BDF idx           ... whose avail index runs 1000 entries ahead of the device
//   ringpoke BDF bufaddr       ... whose descriptor points at a buffer outside guest RAM
//
// The re-initialising attacks take the device away from its kernel driver (status 0 resets
// it), then drive it like a driver would, with one corrupt element; the page's physical
// address comes from /proc/self/pagemap (root), so no /dev/mem access to RAM is needed
// (STRICT_DEVMEM forbids it). Every attack but live expects the device to answer with
// DEVICE_NEEDS_RESET within 5 s. Output, one line:
//   RINGPOKE <bdf> <attack> status=0x<hex> needs_reset=<0|1> [result]
// Exit status 0 when the device behaved as expected, 1 when it did not, 2 on usage or
// system errors.
//
// Freestanding (no libc): the kit initrd is unpacked by emulated kernel code, so every
// kilobyte counts. Build: gcc -static -nostdlib -ffreestanding -O2 (firmware/kit/build.sh).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long s64;

// --- system calls ---------------------------------------------------------------------------
#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_fstat 5
#define SYS_mmap 9
#define SYS_pread64 17
#define SYS_nanosleep 35
#define SYS_exit_group 231
#define SYS_openat 257

static s64 sys6(s64 n, s64 a, s64 b, s64 c, s64 d, s64 e, s64 f) {
	s64 ret;
	register s64 r10 __asm__("r10") = d;
	register s64 r8 __asm__("r8") = e;
	register s64 r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define AT_FDCWD -100
#define O_RDONLY 0
#define O_RDWR 2
#define O_SYNC 04010000
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_SHARED 1
#define MAP_PRIVATE 2
#define MAP_ANONYMOUS 0x20
#define MAP_LOCKED 0x2000
#define MAP_POPULATE 0x8000

void *memset(void *s, int c, unsigned long n) {
	u8 *p = s;
	while (n--)
		*p++ = (u8)c;
	return s;
}

void *memcpy(void *d, const void *s, unsigned long n) {
	u8 *a = d;
	const u8 *b = s;
	while (n--)
		*a++ = *b++;
	return d;
}

static unsigned long slen(const char *s) {
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static int seq(const char *a, const char *b) {
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

// --- output ---------------------------------------------------------------------------------
static char out[512];
static unsigned long outn;

static void puts_(const char *s) {
	while (*s && outn < sizeof(out) - 1)
		out[outn++] = *s++;
}

static void putnum(u64 v, int base) {
	char b[24];
	int i = 0;
	do {
		b[i++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (i--)
		if (outn < sizeof(out) - 1)
			out[outn++] = b[i];
}

static void flush(int fd) {
	sys6(SYS_write, fd, (s64)out, outn, 0, 0, 0);
	outn = 0;
}

static void die(const char *what, s64 err) __attribute__((noreturn));
static void die(const char *what, s64 err) {
	outn = 0;
	puts_("ringpoke: ");
	puts_(what);
	if (err) {
		puts_(": errno ");
		putnum(-err, 10);
	}
	puts_("\n");
	flush(2);
	sys6(SYS_exit_group, 2, 0, 0, 0, 0, 0);
	__builtin_unreachable();
}

static void sleep_ms(long ms) {
	long ts[2] = {ms / 1000, (ms % 1000) * 1000000};
	sys6(SYS_nanosleep, (s64)ts, 0, 0, 0, 0, 0);
}

// --- the device -----------------------------------------------------------------------------
// struct virtio_pci_common_cfg offsets (virtio 1.2 4.1.4.3).
enum {
	CC_DFSELECT = 0x00,
	CC_DF = 0x04,
	CC_GFSELECT = 0x08,
	CC_GF = 0x0C,
	CC_MSIX = 0x10,
	CC_NUMQ = 0x12,
	CC_STATUS = 0x14,
	CC_Q_SELECT = 0x16,
	CC_Q_SIZE = 0x18,
	CC_Q_MSIX = 0x1A,
	CC_Q_ENABLE = 0x1C,
	CC_Q_NOFF = 0x1E,
	CC_Q_DESC = 0x20,
	CC_Q_AVAIL = 0x28,
	CC_Q_USED = 0x30,
};

enum {
	S_ACK = 1,
	S_DRIVER = 2,
	S_DRIVER_OK = 4,
	S_FEATURES_OK = 8,
	S_NEEDS_RESET = 0x40,
};

static volatile u8 *common, *notify;
static u32 notify_mult;

static u8 rd8(u32 o) { return common[o]; }
static u16 rd16(u32 o) { return *(volatile u16 *)(common + o); }
static u32 rd32(u32 o) { return *(volatile u32 *)(common + o); }
static u64 rd64(u32 o) { return rd32(o) | (u64)rd32(o + 4) << 32; }
static void wr8(u32 o, u8 v) { common[o] = v; }
static void wr16(u32 o, u16 v) { *(volatile u16 *)(common + o) = v; }
static void wr32(u32 o, u32 v) { *(volatile u32 *)(common + o) = v; }
// 64-bit fields as two 32-bit writes, low half first, as Linux's vp_iowrite64_twopart does.
static void wr64(u32 o, u64 v) {
	wr32(o, (u32)v);
	wr32(o + 4, (u32)(v >> 32));
}

static void kick(u16 queue) {
	wr16(CC_Q_SELECT, queue);
	u16 off = rd16(CC_Q_NOFF);
	*(volatile u16 *)(notify + (u32)off * notify_mult) = queue;
}

// open_device maps the BAR that holds the common configuration and finds notify in it.
static void open_device(const char *bdf) {
	char path[160];
	u8 cfg[256];
	outn = 0;
	puts_("/sys/bus/pci/devices/");
	puts_(bdf);
	puts_("/config");
	memcpy(path, out, outn);
	path[outn] = 0;
	unsigned long base = outn - 6; // where "config" starts
	outn = 0;
	s64 fd = sys6(SYS_openat, AT_FDCWD, (s64)path, O_RDONLY, 0, 0, 0);
	if (fd < 0)
		die("open config", fd);
	s64 n = sys6(SYS_pread64, fd, (s64)cfg, sizeof(cfg), 0, 0, 0);
	if (n < 64)
		die("read config (need root for the capability list)", n < 0 ? n : 0);
	sys6(SYS_close, fd, 0, 0, 0, 0, 0);
	if (*(u16 *)cfg != 0x1af4)
		die("not a virtio function", 0);
	if (!(cfg[6] & 0x10))
		die("no capability list", 0);
	int cbar = -1, nbar = -1;
	u32 coff = 0, noff = 0;
	u8 p = cfg[0x34] & 0xfc;
	for (int hops = 0; p && hops < 48; hops++) {
		if (p > n - 20)
			die("capability outside config space", 0);
		if (cfg[p] == 0x09) { // vendor-specific: struct virtio_pci_cap
			u8 type = cfg[p + 3], bar = cfg[p + 4];
			u32 off = *(u32 *)(cfg + p + 8);
			if (type == 1 && cbar < 0)
				cbar = bar, coff = off;
			if (type == 2 && nbar < 0) {
				nbar = bar, noff = off;
				notify_mult = *(u32 *)(cfg + p + 16);
			}
		}
		p = cfg[p + 1] & 0xfc;
	}
	if (cbar < 0 || nbar < 0)
		die("no common or notify capability", 0);
	if (cbar != nbar || cbar > 5)
		die("common and notify in different BARs (unsupported here)", 0);
	memcpy(path + base, "resource", 8);
	path[base + 8] = (char)('0' + cbar);
	path[base + 9] = 0;
	fd = sys6(SYS_openat, AT_FDCWD, (s64)path, O_RDWR | O_SYNC, 0, 0, 0);
	if (fd < 0)
		die("open resource", fd);
	u64 st[18];
	s64 err = sys6(SYS_fstat, fd, (s64)st, 0, 0, 0, 0);
	if (err < 0)
		die("fstat resource", err);
	u64 size = st[6]; // st_size
	if (size < coff + 0x40 || size <= noff)
		die("BAR smaller than its capabilities say", 0);
	s64 m = sys6(SYS_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m < 0 && m > -4096)
		die("mmap resource", m);
	common = (volatile u8 *)m + coff;
	notify = (volatile u8 *)m + noff;
}

// dma_page returns a locked page of ours and its guest-physical address.
static u8 *dma_page(u64 *phys) {
	s64 m = sys6(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
	if (m < 0 && m > -4096)
		die("mmap page", m);
	u8 *pg = (u8 *)m;
	memset(pg, 0, 4096);
	s64 fd = sys6(SYS_openat, AT_FDCWD, (s64) "/proc/self/pagemap", O_RDONLY, 0, 0, 0);
	if (fd < 0)
		die("open pagemap", fd);
	u64 e = 0;
	s64 n = sys6(SYS_pread64, fd, (s64)&e, 8, (s64)((u64)m / 4096 * 8), 0, 0);
	if (n != 8)
		die("read pagemap", n < 0 ? n : 0);
	sys6(SYS_close, fd, 0, 0, 0, 0, 0);
	u64 pfn = e & ((1UL << 55) - 1);
	if (!(e >> 63) || pfn == 0)
		die("page not present or PFN hidden (not root?)", 0);
	*phys = pfn * 4096;
	return pg;
}

// Ring layout inside the page for a queue of QN entries.
#define QN 8
#define DESC_OFF 0x000
#define AVAIL_OFF 0x200
#define USED_OFF 0x400
#define BUF_OFF 0x800
#define F_NEXT 1
#define F_WRITE 2

static void put_desc(u8 *pg, int i, u64 addr, u32 len, u16 flags, u16 next) {
	u8 *d = pg + DESC_OFF + 16 * i;
	*(u64 *)d = addr;
	*(u32 *)(d + 8) = len;
	*(u16 *)(d + 12) = flags;
	*(u16 *)(d + 14) = next;
}

static void put_avail(u8 *pg, u16 idx, u16 head) {
	*(u16 *)(pg + AVAIL_OFF + 4) = head; // ring[0]
	__atomic_thread_fence(__ATOMIC_RELEASE);
	*(u16 *)(pg + AVAIL_OFF + 2) = idx;
}

// takeover resets the device and drives it to DRIVER_OK with queue 0 as given.
static void takeover(u16 size, u64 desc, u64 avail, u64 used) {
	wr8(CC_STATUS, 0);
	for (int i = 0; rd8(CC_STATUS) != 0; i++) {
		if (i > 500)
			die("device did not reset", 0);
		sleep_ms(10);
	}
	wr8(CC_STATUS, S_ACK);
	wr8(CC_STATUS, S_ACK | S_DRIVER);
	wr32(CC_GFSELECT, 0);
	wr32(CC_GF, 0);
	wr32(CC_GFSELECT, 1);
	wr32(CC_GF, 1); // VIRTIO_F_VERSION_1 (bit 32)
	wr8(CC_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
	if (!(rd8(CC_STATUS) & S_FEATURES_OK))
		die("device refused VERSION_1 alone", 0);
	wr16(CC_Q_SELECT, 0);
	wr16(CC_Q_SIZE, size);
	wr64(CC_Q_DESC, desc);
	wr64(CC_Q_AVAIL, avail);
	wr64(CC_Q_USED, used);
	wr16(CC_Q_ENABLE, 1);
	wr8(CC_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
}

// wait_needs_reset polls the status for DEVICE_NEEDS_RESET, kicking queue 0 now and then.
static int wait_needs_reset(void) {
	for (int i = 0; i < 500; i++) {
		if (rd8(CC_STATUS) & S_NEEDS_RESET)
			return 1;
		if (i % 50 == 0)
			kick(0);
		sleep_ms(10);
	}
	return 0;
}

static void report(const char *bdf, const char *attack, const char *result) {
	outn = 0;
	puts_("RINGPOKE ");
	puts_(bdf);
	puts_(" ");
	puts_(attack);
	puts_(" status=0x");
	putnum(rd8(CC_STATUS), 16);
	puts_(" needs_reset=");
	putnum(!!(rd8(CC_STATUS) & S_NEEDS_RESET), 10);
	if (result) {
		puts_(" ");
		puts_(result);
	}
	puts_("\n");
	flush(1);
}

// live scribbles over queue 0's configuration while the kernel driver owns it.
static int live(void) {
	wr16(CC_Q_SELECT, 0);
	u16 size = rd16(CC_Q_SIZE), en = rd16(CC_Q_ENABLE);
	u64 desc = rd64(CC_Q_DESC), avail = rd64(CC_Q_AVAIL), used = rd64(CC_Q_USED);
	if (!en || !(rd8(CC_STATUS) & S_DRIVER_OK))
		die("queue 0 is not live (no driver bound?)", 0);
	wr16(CC_Q_SIZE, 3);
	wr64(CC_Q_DESC, 0xfffffffffffff000UL);
	wr64(CC_Q_AVAIL, 0xfee00000UL); // the local APIC
	wr64(CC_Q_USED, desc);          // overlapping the descriptor table
	wr16(CC_Q_ENABLE, 0);
	wr16(CC_Q_SELECT, 0x7fff); // no such queue
	wr16(CC_Q_SIZE, 0x7fff);
	wr64(CC_Q_DESC, 0x1000);
	wr16(CC_Q_ENABLE, 1);
	for (u32 i = 0; i < 4096 / notify_mult; i += 64) // notify addresses of queues that do not exist
		*(volatile u16 *)(notify + i * notify_mult) = (u16)(i * 7);
	kick(0);
	wr16(CC_Q_SELECT, 0);
	int same = rd16(CC_Q_SIZE) == size && rd16(CC_Q_ENABLE) == en && rd64(CC_Q_DESC) == desc &&
		   rd64(CC_Q_AVAIL) == avail && rd64(CC_Q_USED) == used;
	sleep_ms(100);
	return same && !(rd8(CC_STATUS) & S_NEEDS_RESET);
}

static int attack(const char *a) {
	if (seq(a, "outside")) {
		takeover(QN, 0xfffffffffff00000UL, 0x7ffffffff000UL, 0xe0000000UL);
		return wait_needs_reset();
	}
	if (seq(a, "size3")) {
		u64 pa;
		dma_page(&pa);
		takeover(3, pa + DESC_OFF, pa + AVAIL_OFF, pa + USED_OFF);
		return wait_needs_reset();
	}
	u64 pa;
	u8 *pg = dma_page(&pa);
	if (seq(a, "head")) {
		put_desc(pg, 0, pa + BUF_OFF, 64, F_WRITE, 0);
		put_avail(pg, 1, QN + 5);
	} else if (seq(a, "loop")) {
		// Both device-readable, so that only the loop is wrong.
		put_desc(pg, 0, pa + BUF_OFF, 16, F_NEXT, 1);
		put_desc(pg, 1, pa + BUF_OFF + 16, 16, F_NEXT, 0);
		put_avail(pg, 1, 0);
	} else if (seq(a, "idx")) {
		put_desc(pg, 0, pa + BUF_OFF, 64, F_WRITE, 0);
		put_avail(pg, 1000, 0);
	} else if (seq(a, "bufaddr")) {
		put_desc(pg, 0, 0xfffffffffffff000UL, 64, F_WRITE, 0);
		put_avail(pg, 1, 0);
	} else {
		die("unknown attack (status live outside size3 head loop idx bufaddr)", 0);
	}
	takeover(QN, pa + DESC_OFF, pa + AVAIL_OFF, pa + USED_OFF);
	kick(0);
	return wait_needs_reset();
}

static int run(int argc, char **argv) {
	if (argc != 3)
		die("usage: ringpoke BDF status|live|outside|size3|head|loop|idx|bufaddr", 0);
	const char *bdf = argv[1], *a = argv[2];
	if (slen(bdf) > 64)
		die("BDF too long", 0);
	open_device(bdf);
	if (seq(a, "status")) {
		report(bdf, a, 0);
		return 0;
	}
	if (seq(a, "live")) {
		int ok = live();
		report(bdf, a, ok ? "ignored" : "NOT-IGNORED");
		return ok ? 0 : 1;
	}
	int ok = attack(a);
	report(bdf, a, ok ? "broken" : "NOT-BROKEN");
	return ok ? 0 : 1;
}

// _start: the kernel leaves argc at (%rsp), argv after it.
__attribute__((used)) static void cstart(long *sp) {
	sys6(SYS_exit_group, run((int)sp[0], (char **)(sp + 1)), 0, 0, 0, 0, 0);
}

__asm__(".globl _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call cstart\n"
	"	hlt\n");
