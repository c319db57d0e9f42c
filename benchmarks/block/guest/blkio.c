// blkio: the guest side of the virtio-blk benchmark. It runs four bounded
// phases on a raw block device with O_DIRECT (so the guest page cache is not
// measured): sequential 1 MiB writes and reads over SIZE MiB, then 4 KiB
// random reads and writes for SECONDS each. Each phase is framed by console
// lines the host watches to sample its KVM exit counter:
//   BENCH BEGIN <phase>
//   BENCH END <phase> bytes=<n> ns=<n> ops=<n>
// Built static on the host (busybox has no fio).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void) {
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void begin(const char *phase) {
	printf("BENCH BEGIN %s\n", phase);
	fflush(stdout);
}

static void end(const char *phase, int64_t bytes, int64_t ns, int64_t ops) {
	printf("BENCH END %s bytes=%lld ns=%lld ops=%lld\n", phase, (long long)bytes, (long long)ns, (long long)ops);
	fflush(stdout);
}

// seq moves size bytes in 1 MiB requests, stopping early after limit ns.
static int seq(int fd, char *buf, int64_t size, int64_t limit, int write_) {
	const char *phase = write_ ? "seqwrite" : "seqread";
	const int64_t bs = 1 << 20;
	begin(phase);
	int64_t t0 = now_ns(), done = 0, ops = 0;
	while (done < size && now_ns() - t0 < limit) {
		ssize_t n = write_ ? pwrite(fd, buf, bs, done) : pread(fd, buf, bs, done);
		if (n != bs) {
			perror(phase);
			return 1;
		}
		done += n;
		ops++;
	}
	if (write_ && fdatasync(fd) != 0) {
		perror("fdatasync");
		return 1;
	}
	end(phase, done, now_ns() - t0, ops);
	return 0;
}

// rnd does 4 KiB requests at random aligned offsets for limit ns.
static int rnd(int fd, char *buf, int64_t size, int64_t limit, int write_) {
	const char *phase = write_ ? "randwrite" : "randread";
	const int64_t bs = 4096, blocks = size / bs;
	begin(phase);
	int64_t t0 = now_ns(), ops = 0;
	while (now_ns() - t0 < limit) {
		// Check the clock every 16 requests: clock_gettime is a vDSO call
		// but still not free under emulation.
		for (int i = 0; i < 16; i++) {
			off_t off = (off_t)(next_rand() % blocks) * bs;
			ssize_t n = write_ ? pwrite(fd, buf, bs, off) : pread(fd, buf, bs, off);
			if (n != bs) {
				perror(phase);
				return 1;
			}
			ops++;
		}
	}
	end(phase, ops * bs, now_ns() - t0, ops);
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: blkio DEV SIZE_MIB SECONDS\n");
		return 2;
	}
	int64_t size = atoll(argv[2]) << 20, limit = atoll(argv[3]) * 1000000000LL;
	int fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	char *buf;
	if (posix_memalign((void **)&buf, 4096, 1 << 20) != 0) {
		return 1;
	}
	memset(buf, 0x5a, 1 << 20);
	if (seq(fd, buf, size, limit, 1) || seq(fd, buf, size, limit, 0) ||
	    rnd(fd, buf, size, limit, 0) || rnd(fd, buf, size, limit, 1)) {
		return 1;
	}
	return 0;
}
