/*
 * ssd: one device of the SSD tier (see ssd.h for the on-media format and the guarantees).
 *
 * The structures at its heart:
 *   - the ring: one io_uring per device. ring_lock guards the submission queue, `inflight`
 *     (SQEs queued and not reaped, never more than qd, so the SQ never overflows and the CQ,
 *     twice as large, neither), `reaping` and every request's counters. A thread waiting for
 *     its I/O either becomes the reaper (it alone touches the CQ, sleeping in the kernel
 *     without the lock, then hands out every completion it finds and wakes everyone) or
 *     sleeps on ring_cond until a reaper wakes it. Requests live on their callers' stacks.
 *   - staging buffers: small ones (one unit: meta records, header granules) and big ones
 *     (SSD_STAGE_BIG: bounce buffers for unaligned payloads and partial last units, packed at
 *     unit boundaries), one allocation registered with the ring as fixed buffers when the
 *     kernel allows it. A call blocks for a buffer of a class only while it holds none of
 *     that class, and takes small before big, so buffer waits cannot deadlock.
 *   - the allocator (engine/alloc.c, TLSF over data units) under alloc_lock, and ext[u]: the
 *     units of the extent headed by u (0: u heads none), written under alloc_lock, read
 *     without it by the data paths (atomics).
 *   - sealed: one bit per data unit, set while u's header entry may be on the device. The
 *     entries are written a granule at a time (the filesystem's block or the device's
 *     physical sector, 512 B to 4 KiB); one of hdr_lock[] (by granule) serializes the writes
 *     of a granule, and a granule whose other units hold no sealed entry is written without
 *     reading it first (its other entries are zero or stale: zeroing them is right).
 *   - writes in two phases (ssd_write_blocks): payloads and meta units of a whole batch in
 *     flight together, then, once all are complete, the header granules of those that made
 *     it. That order is the crash guarantee; batching is what keeps it from costing a device
 *     round trip per block.
 */
#include "engine/ssd.h"
#include "engine/alloc.h"
#include "engine/checksum.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the on-media format is little-endian");
_Static_assert(SSD_ENTRIES_PER_UNIT == 64, "64 header entries per unit");

#ifndef FALLOC_FL_WRITE_ZEROES
#define FALLOC_FL_WRITE_ZEROES 0x80 /* linux/falloc.h of Linux 6.17 */
#endif

#define SSD_STAGE_BIG	  (512u << 10) /* bytes of a bounce buffer */
#define SSD_OP_BIG	  4u	       /* bounce buffers one call uses at most */
#define SSD_IO_MAX	  (4u << 20)   /* bytes of one SQE reading/writing a caller's buffer */
#define SSD_HDR_LOCKS	  64u
#define SSD_GROUP	  32u	     /* blocks ssd_write_blocks writes together */
#define SSD_ROUND_PIECES  256u	     /* bounce pieces queued per round */
#define SSD_RECOVER_CHUNK (1u << 20) /* bytes of header table read at once */
#define SSD_RECOVER_BATCH 256u	     /* meta units read at once */
#define SSD_LOCK_WAIT_MS  1000	     /* how long open waits for a dying owner's flock */
#define SSD_SMALL	  0
#define SSD_BIG		  1

struct ssd_bufs {
	unsigned *free; /* stack of free buffer indices (buf_lock) */
	unsigned nfree;
};

struct ssd {
	int fd;
	char *path;
	bool blockdev;
	bool fresh;
	bool zeroed;   /* formatted a new file with written zeroes (FALLOC_FL_WRITE_ZEROES) */
	uint64_t size; /* formatted size */
	uint64_t nunits;
	uint64_t table_off, data_off;
	uint8_t uuid[16];
	uint32_t stamp;
	unsigned sect;	    /* O_DIRECT offset/length alignment */
	unsigned mem_align; /* O_DIRECT buffer alignment */
	unsigned granule;   /* bytes of header table written at once: a multiple of sect */
	unsigned per_granule;

	struct io_uring ring;
	bool ring_ok;
	unsigned qd;
	pthread_mutex_t ring_lock;
	pthread_cond_t ring_cond;
	unsigned inflight; /* ring_lock */
	bool reaping;	   /* ring_lock: a thread is reaping the CQ */

	void *cfg_mem; /* ssd_config.mem */
	uint64_t cfg_mem_len;
	uint8_t *stage; /* nsmall units, then nbig big buffers */
	size_t stage_bytes;
	unsigned nsmall, nbig;
	bool fixed; /* stage is registered with the ring */
	/* Caller memory registered after the stage (ssd_config.mem, cut into <= 1 GiB pieces):
	 * I/O to or from it skips pinning the pages each time. */
	struct iovec mem[SSD_MEM_MAX];
	unsigned nmem, mem_first;
	pthread_mutex_t buf_lock;
	pthread_cond_t buf_cond;
	struct ssd_bufs bufs[2];

	pthread_mutex_t alloc_lock;
	struct alloc *alloc;   /* alloc_lock */
	bool need_recover;     /* alloc_lock: holds blocks not recovered yet */
	bool recovered;	       /* alloc_lock */
	_Atomic uint32_t *ext; /* writes under alloc_lock */
	_Atomic uint64_t *sealed;
	pthread_mutex_t hdr_lock[SSD_HDR_LOCKS];
};

/* One batch of SQEs a caller waits for; on its stack. Fields under ring_lock. */
struct ssd_req {
	unsigned pending;
	int err; /* the first failed SQE's -errno */
	uint64_t expected, done;
};

static void ssd_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int64_t ssd_now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the ring ---------------------------------------------------------------------------- */

/* Push every queued SQE to the kernel; ring_lock held. */
static void ssd_submit_locked(struct ssd *s)
{
	int ret;

	while (io_uring_sq_ready(&s->ring)) {
		ret = io_uring_submit(&s->ring);
		if (ret >= 0 || ret == -EINTR)
			continue;
		if (ret != -EAGAIN && ret != -EBUSY) {
			/* The queued SQEs point into callers' stacks: they cannot be abandoned. */
			fprintf(stderr, "kvcachefs ssd %s: io_uring_submit: %s\n", s->path,
				strerror(-ret));
			abort();
		}
		/* The kernel is short of resources: let some I/O complete first. */
		pthread_mutex_unlock(&s->ring_lock);
		usleep(100);
		pthread_mutex_lock(&s->ring_lock);
	}
}

/* Wait until some completions were handed out; ring_lock held (released while sleeping). */
static void ssd_progress(struct ssd *s)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	if (s->reaping) {
		pthread_cond_wait(&s->ring_cond, &s->ring_lock);
		return;
	}
	s->reaping = true;
	pthread_mutex_unlock(&s->ring_lock);
	(void)io_uring_wait_cqe(&s->ring, &cqe); /* -EINTR and the like: look again */
	pthread_mutex_lock(&s->ring_lock);
	io_uring_for_each_cqe(&s->ring, head, cqe)
	{
		struct ssd_req *r = io_uring_cqe_get_data(cqe);

		if (cqe->res < 0) {
			if (!r->err)
				r->err = cqe->res;
		} else {
			r->done += (unsigned)cqe->res;
		}
		r->pending--;
		n++;
	}
	io_uring_cq_advance(&s->ring, n);
	s->inflight -= n;
	s->reaping = false;
	pthread_cond_broadcast(&s->ring_cond);
}

/* Queue one read or write for r, waiting for room in the ring; ring_lock held. bi is the
 * staging buffer index of buf, or -1 for memory that is not registered. */
/* The fixed buffer index of registered caller memory holding [buf, buf + len), or -1. */
static int ssd_mem_index(const struct ssd *s, const void *buf, uint32_t len)
{
	const uint8_t *b = buf;

	for (unsigned k = 0; k < s->nmem; k++) {
		const uint8_t *m = s->mem[k].iov_base;

		if (b >= m && b + len <= m + s->mem[k].iov_len)
			return (int)(s->mem_first + k);
	}
	return -1;
}

static void ssd_queue(struct ssd *s, struct ssd_req *r, bool write, void *buf, uint32_t len,
		      uint64_t off, int bi)
{
	struct io_uring_sqe *sqe;

	while (s->inflight >= s->qd) {
		ssd_submit_locked(s);
		ssd_progress(s);
	}
	while (!(sqe = io_uring_get_sqe(&s->ring)))
		ssd_submit_locked(s);
	if (bi < 0)
		bi = ssd_mem_index(s, buf, len);
	if (bi >= 0 && s->fixed) {
		if (write)
			io_uring_prep_write_fixed(sqe, s->fd, buf, len, off, bi);
		else
			io_uring_prep_read_fixed(sqe, s->fd, buf, len, off, bi);
	} else {
		if (write)
			io_uring_prep_write(sqe, s->fd, buf, len, off);
		else
			io_uring_prep_read(sqe, s->fd, buf, len, off);
	}
	io_uring_sqe_set_data(sqe, r);
	r->pending++;
	r->expected += len;
	s->inflight++;
}

/* r's outcome once complete: 0, its first error, or -EIO for a short transfer (none is
 * expected inside the device). */
static int ssd_req_result(const struct ssd_req *r)
{
	if (r->err)
		return r->err;
	return r->done == r->expected ? 0 : -EIO;
}

/* Submit and wait for every SQE of r; ring_lock held. */
static int ssd_run(struct ssd *s, struct ssd_req *r)
{
	ssd_submit_locked(s);
	while (r->pending)
		ssd_progress(s);
	return ssd_req_result(r);
}

/* One I/O, start to end. */
static int ssd_io(struct ssd *s, bool write, void *buf, uint32_t len, uint64_t off, int bi)
{
	struct ssd_req r = {0};
	int ret;

	pthread_mutex_lock(&s->ring_lock);
	ssd_queue(s, &r, write, buf, len, off, bi);
	ret = ssd_run(s, &r);
	pthread_mutex_unlock(&s->ring_lock);
	return ret;
}

/* ---- staging buffers --------------------------------------------------------------------- */

static int ssd_buf_get(struct ssd *s, int cls, bool wait)
{
	struct ssd_bufs *b = &s->bufs[cls];
	int bi = -1;

	pthread_mutex_lock(&s->buf_lock);
	while (!b->nfree && wait)
		pthread_cond_wait(&s->buf_cond, &s->buf_lock);
	if (b->nfree)
		bi = (int)b->free[--b->nfree];
	pthread_mutex_unlock(&s->buf_lock);
	return bi;
}

static void ssd_buf_put(struct ssd *s, int bi)
{
	struct ssd_bufs *b = &s->bufs[(unsigned)bi < s->nsmall ? SSD_SMALL : SSD_BIG];

	pthread_mutex_lock(&s->buf_lock);
	b->free[b->nfree++] = (unsigned)bi;
	pthread_cond_broadcast(&s->buf_cond);
	pthread_mutex_unlock(&s->buf_lock);
}

static uint8_t *ssd_buf(const struct ssd *s, int bi)
{
	if ((unsigned)bi < s->nsmall)
		return s->stage + (size_t)bi * SSD_UNIT;
	return s->stage + (size_t)s->nsmall * SSD_UNIT +
	       (size_t)(bi - (int)s->nsmall) * SSD_STAGE_BIG;
}

/* Take 1..want big buffers: the first may wait (the caller holds none), the others not. */
static unsigned ssd_bigs_get(struct ssd *s, int *held, uint64_t want)
{
	unsigned n = 1;
	int bi;

	held[0] = ssd_buf_get(s, SSD_BIG, true);
	while (n < want && n < SSD_OP_BIG && (bi = ssd_buf_get(s, SSD_BIG, false)) >= 0)
		held[n++] = bi;
	return n;
}

static void ssd_bigs_put(struct ssd *s, const int *held, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		ssd_buf_put(s, held[i]);
}

/* ---- header entries ---------------------------------------------------------------------- */

static bool ssd_is_sealed(const struct ssd *s, uint64_t u)
{
	return (atomic_load_explicit(&s->sealed[u / 64], memory_order_relaxed) >> (u % 64)) & 1;
}

static void ssd_set_sealed(struct ssd *s, uint64_t u, bool on)
{
	uint64_t bit = 1ull << (u % 64);

	if (on)
		atomic_fetch_or_explicit(&s->sealed[u / 64], bit, memory_order_relaxed);
	else
		atomic_fetch_and_explicit(&s->sealed[u / 64], ~bit, memory_order_relaxed);
}

/* Do units of u's granule other than u have a sealed entry? per_granule divides 64. */
static bool ssd_granule_busy(const struct ssd *s, uint64_t u)
{
	uint64_t first = u / s->per_granule * s->per_granule;
	uint64_t mask = (s->per_granule == 64 ? ~0ull : (1ull << s->per_granule) - 1)
			<< (first % 64);

	mask &= ~(1ull << (u % 64));
	return atomic_load_explicit(&s->sealed[u / 64], memory_order_relaxed) & mask;
}

/* Clear u's header entry with small buffer bi, and wait. The sealed bit drops only once the
 * write is complete. */
static int ssd_hdr_clear(struct ssd *s, uint64_t u, int bi)
{
	uint64_t g = u / s->per_granule, off = s->table_off + g * s->granule;
	pthread_mutex_t *lk = &s->hdr_lock[g % SSD_HDR_LOCKS];
	uint8_t *buf = ssd_buf(s, bi);
	int ret = 0;

	pthread_mutex_lock(lk);
	if (ssd_granule_busy(s, u))
		ret = ssd_io(s, false, buf, s->granule, off, bi);
	else
		memset(buf, 0, s->granule);
	if (!ret) {
		memset((struct pool_hdr *)buf + u % s->per_granule, 0, sizeof(struct pool_hdr));
		ret = ssd_io(s, true, buf, s->granule, off, bi);
	}
	if (!ret)
		ssd_set_sealed(s, u, false);
	pthread_mutex_unlock(lk);
	return ret;
}

/* ---- layout and superblock --------------------------------------------------------------- */

/* Data units for a device of size bytes: superblock + table of ceil(n / 64) units + n. */
static uint64_t ssd_layout(uint64_t size, uint64_t *table_off, uint64_t *data_off)
{
	uint64_t avail = size / SSD_UNIT, n;

	if (avail < 4)
		return 0;
	avail--;
	n = avail * SSD_ENTRIES_PER_UNIT / (SSD_ENTRIES_PER_UNIT + 1);
	while (n && n + (n + SSD_ENTRIES_PER_UNIT - 1) / SSD_ENTRIES_PER_UNIT > avail)
		n--;
	if (n > SSD_MAX_UNITS)
		n = SSD_MAX_UNITS;
	*table_off = SSD_UNIT;
	*data_off = SSD_UNIT * (1 + (n + SSD_ENTRIES_PER_UNIT - 1) / SSD_ENTRIES_PER_UNIT);
	return n;
}

static uint64_t ssd_super_sum(const struct ssd_super *sb)
{
	return checksum(sb, offsetof(struct ssd_super, checksum));
}

static bool ssd_all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* What unit 0 (in buf) says: 1 our valid superblock, 0 all zeros (format it), -errno. */
static int ssd_super_check(const struct ssd *s, const uint8_t *buf, struct ssd_super *sb, char *err,
			   size_t errlen)
{
	uint64_t toff, doff, n;

	memcpy(sb, buf, sizeof(*sb));
	if (ssd_all_zero(buf, SSD_UNIT))
		return 0;
	if (sb->magic != SSD_SUPER_MAGIC) {
		ssd_err(err, errlen,
			"%s holds data that is not a kvcachefs SSD tier; refusing to overwrite it "
			"(format it explicitly to discard that data)",
			s->path);
		return -EEXIST;
	}
	if (sb->checksum != ssd_super_sum(sb)) {
		ssd_err(err, errlen, "%s: the SSD tier's superblock is damaged (checksum)",
			s->path);
		return -EUCLEAN;
	}
	if (sb->format > SSD_FORMAT) {
		ssd_err(err, errlen,
			"%s: SSD tier format %u is newer than this program's (%u); refusing it",
			s->path, sb->format, SSD_FORMAT);
		return -EPROTONOSUPPORT;
	}
	n = ssd_layout(sb->size, &toff, &doff);
	if (sb->format != SSD_FORMAT || sb->unit_size != SSD_UNIT || n == 0 || n != sb->nunits ||
	    toff != sb->table_off || doff != sb->data_off) {
		ssd_err(err, errlen,
			"%s: the SSD tier's superblock is inconsistent (format %u, "
			"unit %u, %llu units for %llu bytes)",
			s->path, sb->format, sb->unit_size, (unsigned long long)sb->nunits,
			(unsigned long long)sb->size);
		return -EUCLEAN;
	}
	return 1;
}

static void ssd_make_uuid(uint8_t uuid[16])
{
	uint64_t x[2];

	if (getrandom(uuid, 16, 0) == 16)
		return;
	x[0] = (uint64_t)ssd_now_ns(CLOCK_REALTIME);
	x[1] = (uint64_t)ssd_now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32);
	x[0] = XXH3_64bits(x, sizeof(x));
	x[1] = XXH3_64bits_withSeed(x, sizeof(x), x[0]);
	memcpy(uuid, x, 16);
}

/* Adopt sb's geometry. */
static void ssd_geometry(struct ssd *s, const struct ssd_super *sb)
{
	s->size = sb->size;
	s->nunits = sb->nunits;
	s->table_off = sb->table_off;
	s->data_off = sb->data_off;
	memcpy(s->uuid, sb->uuid, 16);
	memcpy(&s->stamp, sb->uuid, 4);
}

/* ---- open and close ---------------------------------------------------------------------- */

/* 1 when fd is on tmpfs, 2 on ramfs, 0 otherwise (or when fstatfs fails). */
static int ssd_memory_fs(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return 0;
	if ((unsigned long)sf.f_type == TMPFS_MAGIC)
		return 1;
	return (unsigned long)sf.f_type == RAMFS_MAGIC ? 2 : 0;
}

/* Open cfg->path read-write with O_DIRECT; sets s->fd, s->blockdev, *created. */
static int ssd_open_fd(struct ssd *s, const struct ssd_config *cfg, bool *created, char *err,
		       size_t errlen)
{
	struct stat st;
	int ret;

	*created = false;
	if (stat(cfg->path, &st) == 0 && S_ISBLK(st.st_mode)) {
		s->blockdev = true;
		s->fd = open(cfg->path, O_RDWR | O_CLOEXEC | O_DIRECT | O_EXCL);
		if (s->fd < 0) {
			ret = -errno;
			if (ret == -EBUSY)
				ssd_err(
				    err, errlen,
				    "%s: block device in use (mounted, or opened exclusively by "
				    "another program)",
				    cfg->path);
			else
				ssd_err(err, errlen, "%s: cannot open the block device: %s",
					cfg->path, strerror(-ret));
			return ret;
		}
		return 0;
	}
	s->fd = open(cfg->path, O_RDWR | O_CLOEXEC);
	if (s->fd < 0 && errno == ENOENT && cfg->create) {
		if (!cfg->size) {
			ssd_err(err, errlen, "%s: no such file, and no size given to create it",
				cfg->path);
			return -EINVAL;
		}
		s->fd = open(cfg->path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
		if (s->fd >= 0)
			*created = true;
		else if (errno == EEXIST) /* someone else made it meanwhile */
			s->fd = open(cfg->path, O_RDWR | O_CLOEXEC);
	}
	if (s->fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			ssd_err(err, errlen, "%s: no such file or block device%s", cfg->path,
				cfg->create ? " (and its directory is missing)" : "");
		else
			ssd_err(err, errlen, "%s: cannot open: %s", cfg->path, strerror(-ret));
		return ret;
	}
	if (fstat(s->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		ssd_err(err, errlen, "%s: not a regular file or a block device", cfg->path);
		return -EINVAL;
	}
	ret = ssd_memory_fs(s->fd);
	if (ret) {
		/* tmpfs takes O_DIRECT since Linux 6.6, but a tier there is more of the memory the
		 * DRAM pool already uses, and it is gone at a reboot */
		ssd_err(err, errlen,
			"%s: the filesystem is %s, which is memory: the SSD tier needs direct I/O "
			"(O_DIRECT) to a disk; put the file on ext4, xfs or btrfs, or give a block "
			"device",
			cfg->path, ret == 1 ? "tmpfs" : "ramfs");
		return -EINVAL;
	}
	if (fcntl(s->fd, F_SETFL, O_DIRECT) < 0) {
		ret = -errno;
		if (ret == -EINVAL)
			ssd_err(err, errlen,
				"%s: the filesystem does not support O_DIRECT (direct I/O), which "
				"the SSD tier needs; put the file on a filesystem that does (ext4, "
				"xfs, btrfs) or give a block device",
				cfg->path);
		else
			ssd_err(err, errlen, "%s: cannot enable O_DIRECT: %s", cfg->path,
				strerror(-ret));
		return ret;
	}
	return 0;
}

/* The direct-I/O alignments: the device's logical sector, or what statx says of the file.
 * Header granules are the physical sector of a device and the block of a filesystem: ext4
 * serializes every direct write smaller than its block against all others in flight on the
 * file, and a drive rewrites a whole physical sector for a part of one. */
static int ssd_dio_align(struct ssd *s, char *err, size_t errlen)
{
	unsigned sect = SSD_UNIT, mem = SSD_UNIT, gran = SSD_UNIT;
	struct statx stx;
	int bs;

	if (s->blockdev) {
		if (ioctl(s->fd, BLKSSZGET, &bs) == 0 && bs > 0)
			sect = mem = (unsigned)bs;
		gran = sect;
		if (ioctl(s->fd, BLKPBSZGET, &bs) == 0 && bs > 0)
			gran = (unsigned)bs;
	} else if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN | STATX_BASIC_STATS, &stx) == 0 &&
		   (stx.stx_mask & STATX_DIOALIGN)) {
		if (!stx.stx_dio_offset_align) {
			ssd_err(err, errlen,
				"%s: the filesystem does not support O_DIRECT (direct I/O) for "
				"this file, which the SSD tier needs",
				s->path);
			return -EINVAL;
		}
		sect = stx.stx_dio_offset_align;
		mem = stx.stx_dio_mem_align ? stx.stx_dio_mem_align : sect;
		gran = stx.stx_blksize;
	}
	if (sect < 512)
		sect = 512;
	if (sect > SSD_UNIT || (sect & (sect - 1))) {
		ssd_err(err, errlen,
			"%s: direct I/O needs %u-byte alignment; the SSD tier works "
			"in 4096-byte units",
			s->path, sect);
		return -EINVAL;
	}
	if (gran < sect || gran > SSD_UNIT || (gran & (gran - 1)))
		gran = gran > SSD_UNIT ? SSD_UNIT : sect;
	s->sect = sect;
	s->mem_align = mem && !(mem & (mem - 1)) && mem <= SSD_UNIT ? mem : SSD_UNIT;
	s->granule = gran;
	s->per_granule = gran / sizeof(struct pool_hdr);
	return 0;
}

static int ssd_lock(struct ssd *s, char *err, size_t errlen)
{
	/* A process killed a moment ago holds its lock until its last I/O has drained. */
	for (int i = 0;; i++) {
		if (flock(s->fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK || i * 10 >= SSD_LOCK_WAIT_MS)
			break;
		usleep(10000);
	}
	if (errno == EWOULDBLOCK) {
		ssd_err(err, errlen, "%s: in use by another process (flock)", s->path);
		return -EBUSY;
	}
	ssd_err(err, errlen, "%s: flock: %s", s->path, strerror(errno));
	return -errno;
}

/* Decide the size, read unit 0, keep or format. */
static int ssd_setup(struct ssd *s, const struct ssd_config *cfg, uint8_t *unit0, char *err,
		     size_t errlen)
{
	struct ssd_super sb;
	uint64_t devsize, size, toff, doff, n;
	struct stat st;
	ssize_t got;
	int ret;

	if (s->blockdev) {
		if (ioctl(s->fd, BLKGETSIZE64, &devsize) < 0) {
			ret = -errno;
			ssd_err(err, errlen, "%s: BLKGETSIZE64: %s", s->path, strerror(-ret));
			return ret;
		}
	} else {
		if (fstat(s->fd, &st) < 0)
			return -errno;
		devsize = (uint64_t)st.st_size;
	}
	if (s->blockdev && cfg->size > devsize) {
		ssd_err(err, errlen, "%s: size %llu is larger than the device (%llu bytes)",
			s->path, (unsigned long long)cfg->size, (unsigned long long)devsize);
		return -EINVAL;
	}

	got = devsize >= SSD_UNIT ? pread(s->fd, unit0, SSD_UNIT, 0) : 0;
	if (got < 0) {
		ret = -errno;
		ssd_err(err, errlen, "%s: cannot read the superblock: %s", s->path, strerror(-ret));
		return ret;
	}
	memset(unit0 + got, 0, SSD_UNIT - (size_t)got);
	ret = ssd_super_check(s, unit0, &sb, err, errlen);
	if (ret < 0 && !cfg->format)
		return ret;
	if (ret == 1 && !cfg->format) {
		if (cfg->size && cfg->size != sb.size) {
			ssd_err(err, errlen,
				"%s holds an SSD tier of %llu bytes; open it with that size (or "
				"0) to keep its blocks, or format it to discard them (asked for "
				"%llu bytes)",
				s->path, (unsigned long long)sb.size,
				(unsigned long long)cfg->size);
			return -EEXIST;
		}
		if (sb.size > devsize) {
			ssd_err(err, errlen,
				"%s is %llu bytes, shorter than its SSD tier's %llu: truncated?",
				s->path, (unsigned long long)devsize, (unsigned long long)sb.size);
			return -EUCLEAN;
		}
		ssd_geometry(s, &sb);
		s->need_recover = true;
		return 0;
	}

	/* Format. */
	size = cfg->size ? cfg->size : devsize;
	if (!size) {
		ssd_err(err, errlen, "%s: no size given for a new SSD tier", s->path);
		return -EINVAL;
	}
	n = ssd_layout(size, &toff, &doff);
	if (size < SSD_MIN_SIZE || n == 0) {
		ssd_err(err, errlen, "%s: %llu bytes is too small for an SSD tier (at least %u)",
			s->path, (unsigned long long)size, SSD_MIN_SIZE);
		return -EINVAL;
	}
	if (!s->blockdev) {
		/* An empty file: written, zeroed extents where the device zeroes cheaply (Linux
		 * 6.17, with write-zeroes-unmap support), so that the first write of each region
		 * does not also convert an unwritten extent (ext4: 40% slower here); else the
		 * usual preallocation. */
		s->zeroed =
		    devsize == 0 && fallocate(s->fd, FALLOC_FL_WRITE_ZEROES, 0, (off_t)size) == 0;
		ret = s->zeroed ? 0 : posix_fallocate(s->fd, 0, (off_t)size);
		if (ret) {
			ssd_err(err, errlen, "%s: cannot preallocate %llu bytes: %s", s->path,
				(unsigned long long)size, strerror(ret));
			return -ret;
		}
	}
	sb = (struct ssd_super){
	    .magic = SSD_SUPER_MAGIC,
	    .format = SSD_FORMAT,
	    .unit_size = SSD_UNIT,
	    .size = size,
	    .nunits = n,
	    .table_off = toff,
	    .data_off = doff,
	    .created_ns = ssd_now_ns(CLOCK_REALTIME),
	};
	ssd_make_uuid(sb.uuid);
	sb.checksum = ssd_super_sum(&sb);
	memset(unit0, 0, SSD_UNIT);
	memcpy(unit0, &sb, sizeof(sb));
	/* The table may hold entries of an earlier format: their stamp differs, nothing to do. */
	if (pwrite(s->fd, unit0, SSD_UNIT, 0) != SSD_UNIT) {
		ret = errno ? -errno : -EIO;
		ssd_err(err, errlen, "%s: cannot write the superblock: %s", s->path,
			strerror(-ret));
		return ret;
	}
	if (fdatasync(s->fd) < 0) {
		ret = -errno;
		ssd_err(err, errlen, "%s: fdatasync: %s", s->path, strerror(-ret));
		return ret;
	}
	ssd_geometry(s, &sb);
	s->fresh = true;
	return 0;
}

static int ssd_setup_ring(struct ssd *s, char *err, size_t errlen)
{
	struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE, .cq_entries = 2 * s->qd};
	struct iovec *iov;
	unsigned n, i;
	int ret;

	ret = io_uring_queue_init_params(s->qd, &s->ring, &p);
	if (ret < 0) {
		ssd_err(err, errlen, "%s: io_uring_queue_init (%u entries): %s", s->path, s->qd,
			strerror(-ret));
		return ret;
	}
	s->ring_ok = true;

	/* About a buffer per ring entry, within bounds: a deep ring must not cost a fortune. */
	s->nsmall = s->qd < 8 ? 8 : s->qd > 256 ? 256 : s->qd;
	s->nbig = s->qd / 4 < SSD_OP_BIG ? SSD_OP_BIG : s->qd / 4 > 16 ? 16 : s->qd / 4;
	n = s->nsmall + s->nbig;
	s->stage_bytes = (size_t)s->nsmall * SSD_UNIT + (size_t)s->nbig * SSD_STAGE_BIG;
	if (posix_memalign((void **)&s->stage, SSD_UNIT, s->stage_bytes))
		return -ENOMEM;
	s->bufs[SSD_SMALL].free = calloc(s->nsmall, sizeof(unsigned));
	s->bufs[SSD_BIG].free = calloc(s->nbig, sizeof(unsigned));
	iov = calloc(n + SSD_MEM_MAX, sizeof(*iov));
	if (!s->bufs[SSD_SMALL].free || !s->bufs[SSD_BIG].free || !iov) {
		free(iov);
		return -ENOMEM;
	}
	for (i = 0; i < s->nsmall; i++)
		s->bufs[SSD_SMALL].free[s->bufs[SSD_SMALL].nfree++] = s->nsmall - 1 - i;
	for (i = 0; i < s->nbig; i++)
		s->bufs[SSD_BIG].free[s->bufs[SSD_BIG].nfree++] = n - 1 - i;
	for (i = 0; i < n; i++) {
		iov[i].iov_base = ssd_buf(s, (int)i);
		iov[i].iov_len = i < s->nsmall ? SSD_UNIT : SSD_STAGE_BIG;
	}
	/* Caller memory in pieces of at most 1 GiB (the kernel's limit per buffer). */
	for (uint64_t off = 0; s->cfg_mem_len && off < s->cfg_mem_len && s->nmem < SSD_MEM_MAX;
	     off += 1ull << 30) {
		uint64_t l =
		    s->cfg_mem_len - off < (1ull << 30) ? s->cfg_mem_len - off : 1ull << 30;

		s->mem[s->nmem++] = (struct iovec){(uint8_t *)s->cfg_mem + off, (size_t)l};
	}
	s->mem_first = n;
	memcpy(iov + n, s->mem, s->nmem * sizeof(*iov));
	/* Best effort: without registration (memlock limits) the same buffers work unpinned. */
	s->fixed = s->nmem && io_uring_register_buffers(&s->ring, iov, n + s->nmem) == 0;
	if (!s->fixed) {
		s->nmem = 0;
		s->fixed = io_uring_register_buffers(&s->ring, iov, n) == 0;
	}
	free(iov);
	return 0;
}

int ssd_open(struct ssd **out, const struct ssd_config *cfg, char *err, size_t errlen)
{
	struct ssd *s;
	uint8_t *unit0 = NULL;
	bool created = false;
	unsigned i;
	int ret;

	if (err && errlen)
		err[0] = 0;
	if (!cfg || !cfg->path || !cfg->path[0]) {
		ssd_err(err, errlen, "SSD tier: no path given");
		return -EINVAL;
	}
	if (cfg->queue_depth > SSD_QUEUE_MAX) {
		ssd_err(err, errlen, "%s: queue depth %u is more than %u", cfg->path,
			cfg->queue_depth, SSD_QUEUE_MAX);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = -1;
	s->qd = cfg->queue_depth ? cfg->queue_depth : SSD_QUEUE_DEFAULT;
	s->cfg_mem = cfg->mem;
	s->cfg_mem_len = cfg->mem ? cfg->mem_len : 0;
	pthread_mutex_init(&s->ring_lock, NULL);
	pthread_cond_init(&s->ring_cond, NULL);
	pthread_mutex_init(&s->buf_lock, NULL);
	pthread_cond_init(&s->buf_cond, NULL);
	pthread_mutex_init(&s->alloc_lock, NULL);
	for (i = 0; i < SSD_HDR_LOCKS; i++)
		pthread_mutex_init(&s->hdr_lock[i], NULL);
	s->path = strdup(cfg->path);
	if (!s->path || posix_memalign((void **)&unit0, SSD_UNIT, SSD_UNIT)) {
		ret = -ENOMEM;
		goto out_close;
	}

	ret = ssd_open_fd(s, cfg, &created, err, errlen);
	if (ret)
		goto out_close;
	ret = ssd_lock(s, err, errlen);
	if (ret)
		goto out_close;
	ret = ssd_dio_align(s, err, errlen);
	if (ret)
		goto out_close;
	ret = ssd_setup(s, cfg, unit0, err, errlen);
	if (ret)
		goto out_close;
	ret = ssd_setup_ring(s, err, errlen);
	if (ret) {
		if (ret == -ENOMEM)
			ssd_err(err, errlen, "%s: out of memory", s->path);
		goto out_close;
	}
	s->alloc = alloc_create(s->nunits);
	s->ext = calloc(s->nunits, sizeof(*s->ext));
	s->sealed = calloc((s->nunits + 63) / 64, sizeof(*s->sealed));
	if (!s->alloc || !s->ext || !s->sealed) {
		ret = -ENOMEM;
		ssd_err(err, errlen, "%s: out of memory for %llu units", s->path,
			(unsigned long long)s->nunits);
		goto out_close;
	}
	free(unit0);
	*out = s;
	return 0;

out_close:
	free(unit0);
	if (created)
		unlink(cfg->path);
	ssd_close(s);
	return ret;
}

void ssd_close(struct ssd *s)
{
	if (!s)
		return;
	if (s->ring_ok)
		io_uring_queue_exit(&s->ring); /* unregisters the buffers */
	if (s->fd >= 0)
		close(s->fd);
	alloc_destroy(s->alloc);
	free(s->ext);
	free(s->sealed);
	free(s->stage);
	free(s->bufs[SSD_SMALL].free);
	free(s->bufs[SSD_BIG].free);
	for (unsigned i = 0; i < SSD_HDR_LOCKS; i++)
		pthread_mutex_destroy(&s->hdr_lock[i]);
	pthread_mutex_destroy(&s->alloc_lock);
	pthread_cond_destroy(&s->buf_cond);
	pthread_mutex_destroy(&s->buf_lock);
	pthread_cond_destroy(&s->ring_cond);
	pthread_mutex_destroy(&s->ring_lock);
	free(s->path);
	free(s);
}

bool ssd_zeroed(const struct ssd *s)
{
	return s->zeroed;
}

bool ssd_fresh(const struct ssd *s)
{
	return s->fresh;
}

uint64_t ssd_capacity(const struct ssd *s)
{
	return s->nunits * SSD_UNIT;
}

uint64_t ssd_used(const struct ssd *s)
{
	struct ssd *m = (struct ssd *)s; /* the lock, not the state, changes */
	uint64_t used;

	pthread_mutex_lock(&m->alloc_lock);
	used = alloc_total_pages(s->alloc) - alloc_free_pages(s->alloc);
	pthread_mutex_unlock(&m->alloc_lock);
	return used * SSD_UNIT;
}

int ssd_sync(struct ssd *s)
{
	return fdatasync(s->fd) < 0 ? -errno : 0;
}

/* ---- allocation -------------------------------------------------------------------------- */

int ssd_alloc(struct ssd *s, uint64_t payload_len, uint64_t *unit)
{
	uint64_t n;
	int64_t p;

	if (payload_len > (s->nunits - 1) * SSD_UNIT)
		return -EFBIG;
	n = ssd_units_for(payload_len);
	pthread_mutex_lock(&s->alloc_lock);
	if (s->need_recover) {
		pthread_mutex_unlock(&s->alloc_lock);
		return -EBUSY;
	}
	p = alloc_get(s->alloc, n);
	if (p >= 0)
		atomic_store_explicit(&s->ext[p], (uint32_t)n, memory_order_relaxed);
	pthread_mutex_unlock(&s->alloc_lock);
	if (p < 0)
		return (int)p;
	*unit = (uint64_t)p;
	return 0;
}

static uint64_t ssd_ext(const struct ssd *s, uint64_t unit)
{
	return unit < s->nunits ? atomic_load_explicit(&s->ext[unit], memory_order_relaxed) : 0;
}

int ssd_free(struct ssd *s, uint64_t unit)
{
	uint64_t n = ssd_ext(s, unit);
	int bi, ret;

	if (!n)
		return -EINVAL;
	if (ssd_is_sealed(s, unit)) {
		bi = ssd_buf_get(s, SSD_SMALL, true);
		ret = ssd_hdr_clear(s, unit, bi);
		ssd_buf_put(s, bi);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&s->alloc_lock);
	atomic_store_explicit(&s->ext[unit], 0, memory_order_relaxed);
	alloc_put(s->alloc, unit, n);
	pthread_mutex_unlock(&s->alloc_lock);
	return 0;
}

/* ---- blocks ------------------------------------------------------------------------------ */

static uint64_t ssd_unit_off(const struct ssd *s, uint64_t unit)
{
	return s->data_off + unit * SSD_UNIT;
}

static bool ssd_aligned(const void *p, unsigned align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

static uint64_t ssd_rec_sum(struct ssd_rec *rec)
{
	uint64_t saved = rec->rec_checksum, sum;

	rec->rec_checksum = 0;
	sum = checksum(rec, SSD_UNIT);
	rec->rec_checksum = saved;
	return sum;
}

/* One block of a group being written (ssd_write_blocks). */
struct ssd_wblk {
	struct ssd_write *w;
	struct ssd_req r;
	int mi;	       /* small buffer: the meta record, then maybe a header granule */
	uint64_t n;    /* units of the extent */
	uint64_t body; /* payload bytes the device takes from the caller's buffer */
	uint64_t pos;  /* next payload byte to stage in a bounce buffer */
};

/* Check w, and fill its meta's outputs. */
static int ssd_write_prep(struct ssd *s, struct ssd_write *w, uint64_t *n)
{
	struct ssd_meta *meta = w->meta;
	XXH128_hash_t nh;
	size_t dl, nl;

	*n = ssd_ext(s, w->unit);
	if (!*n || !meta || w->len > (*n - 1) * SSD_UNIT || (w->len && !w->payload))
		return -EINVAL;
	if (ssd_is_sealed(s, w->unit))
		return -EEXIST;
	dl = strnlen(meta->dir, SSD_DIR_MAX + 1);
	nl = strnlen(meta->name, SSD_NAME_MAX + 1);
	if (dl > SSD_DIR_MAX || nl > SSD_NAME_MAX)
		return -ENAMETOOLONG;
	if (!nl || memchr(meta->name, '/', nl))
		return -EINVAL;
	meta->length = w->len;
	if (!meta->checksum_known)
		meta->checksum = checksum(w->payload, w->len);
	nh = XXH3_128bits(meta->name, nl);
	meta->name_hash[0] = nh.low64;
	meta->name_hash[1] = nh.high64;
	return 0;
}

static void ssd_write_rec(struct ssd *s, const struct ssd_wblk *b)
{
	const struct ssd_meta *meta = b->w->meta;
	struct ssd_rec *rec = (struct ssd_rec *)ssd_buf(s, b->mi);
	size_t dl = strlen(meta->dir), nl = strlen(meta->name);

	memset(rec, 0, SSD_UNIT);
	*rec = (struct ssd_rec){
	    .magic = SSD_REC_MAGIC,
	    .format = SSD_FORMAT,
	    .mode = meta->mode,
	    .unit = b->w->unit,
	    .nunits = b->n,
	    .generation = meta->generation,
	    .version = meta->version,
	    .length = b->w->len,
	    .checksum = meta->checksum,
	    .mtime_ns = meta->mtime_ns,
	    .name_hash = {meta->name_hash[0], meta->name_hash[1]},
	    .dir_len = (uint16_t)dl,
	    .name_len = (uint16_t)nl,
	    .reserved = {meta->uid, meta->gid},
	};
	memcpy(rec->uuid, s->uuid, 16);
	memcpy(rec->dir, meta->dir, dl);
	memcpy(rec->name, meta->name, nl);
	rec->rec_checksum = ssd_rec_sum(rec);
}

/* Phase 1: the payloads and meta units of the group, all in flight together. A payload the
 * device can take from the caller's buffer goes as it is, but for its partial last unit;
 * the rest is packed into the held bounce buffers at unit boundaries, round after round. */
static void ssd_write_data(struct ssd *s, struct ssd_wblk *b, unsigned nb)
{
	struct {
		struct ssd_wblk *b;
		uint8_t *buf;
		int bi;
		uint32_t len;
		uint64_t off;
	} pc[SSD_ROUND_PIECES];
	int held[SSD_OP_BIG];
	unsigned nheld = 0, cur = 0, i, k;
	uint64_t bounce = 0;
	bool first = true;

	for (i = 0; i < nb; i++) {
		const struct ssd_write *w = b[i].w;

		b[i].body =
		    ssd_aligned(w->payload, s->mem_align) ? w->len & ~(uint64_t)(SSD_UNIT - 1) : 0;
		b[i].pos = b[i].body;
		bounce += (w->len - b[i].body + SSD_UNIT - 1) & ~(uint64_t)(SSD_UNIT - 1);
		ssd_write_rec(s, &b[i]);
	}
	if (bounce)
		nheld = ssd_bigs_get(s, held, (bounce + SSD_STAGE_BIG - 1) / SSD_STAGE_BIG);
	do {
		k = 0;
		for (unsigned h = 0; h < nheld && cur < nb && k < SSD_ROUND_PIECES; h++) {
			uint8_t *base = ssd_buf(s, held[h]);
			uint64_t used = 0;

			while (used < SSD_STAGE_BIG && cur < nb && k < SSD_ROUND_PIECES) {
				struct ssd_wblk *x = &b[cur];
				uint64_t left = x->w->len - x->pos, c, cio;

				if (!left) {
					cur++;
					continue;
				}
				c = left < SSD_STAGE_BIG - used ? left : SSD_STAGE_BIG - used;
				cio = (c + SSD_UNIT - 1) & ~(uint64_t)(SSD_UNIT - 1);
				memcpy(base + used, (const uint8_t *)x->w->payload + x->pos, c);
				memset(base + used + c, 0, cio - c);
				pc[k].b = x;
				pc[k].buf = base + used;
				pc[k].bi = held[h];
				pc[k].len = (uint32_t)cio;
				pc[k++].off = ssd_unit_off(s, x->w->unit + 1) + x->pos;
				x->pos += c;
				used += cio;
			}
		}
		while (cur < nb && b[cur].pos == b[cur].w->len)
			cur++;

		pthread_mutex_lock(&s->ring_lock);
		for (i = 0; first && i < nb; i++) {
			const uint8_t *src = b[i].w->payload;
			uint64_t base = ssd_unit_off(s, b[i].w->unit + 1);

			ssd_queue(s, &b[i].r, true, ssd_buf(s, b[i].mi), SSD_UNIT,
				  ssd_unit_off(s, b[i].w->unit), b[i].mi);
			for (uint64_t o = 0; o < b[i].body; o += SSD_IO_MAX)
				ssd_queue(s, &b[i].r, true, (void *)(src + o),
					  (uint32_t)(b[i].body - o < SSD_IO_MAX ? b[i].body - o
										: SSD_IO_MAX),
					  base + o, -1);
		}
		first = false;
		for (i = 0; i < k; i++)
			ssd_queue(s, &pc[i].b->r, true, pc[i].buf, pc[i].len, pc[i].off, pc[i].bi);
		ssd_submit_locked(s);
		for (i = 0; i < nb; i++)
			while (b[i].r.pending)
				ssd_progress(s);
		pthread_mutex_unlock(&s->ring_lock);
	} while (cur < nb);
	ssd_bigs_put(s, held, nheld);
	for (i = 0; i < nb; i++)
		b[i].w->ret = ssd_req_result(&b[i].r);
}

static int ssd_cmp_uint(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

/* Phase 2, once phase 1 is complete: the sealed header entries of the blocks whose data made
 * it, a granule at a time, each granule written once with every entry the group has in it.
 * The granules' locks are taken in increasing order (ssd_hdr_clear takes one). */
static void ssd_write_hdrs(struct ssd *s, struct ssd_wblk *b, unsigned nb)
{
	struct {
		uint64_t g;
		unsigned first; /* its blocks are b[order[first]] .. b[order[end - 1]] */
		unsigned end;
		bool busy;  /* holds other sealed entries: read it first */
		bool wrote; /* its write was issued */
		struct ssd_req r;
	} gr[SSD_GROUP];
	unsigned order[SSD_GROUP], stripes[SSD_GROUP], ng = 0, no = 0, ns = 0, i, j;

	for (i = 0; i < nb; i++)
		if (!b[i].w->ret)
			order[no++] = i;
	if (!no)
		return;
	/* by unit: the blocks of a granule become neighbours */
	for (i = 1; i < no; i++)
		for (j = i; j > 0 && b[order[j - 1]].w->unit > b[order[j]].w->unit; j--) {
			unsigned t = order[j];

			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (i = 0; i < no; i++) {
		uint64_t g = b[order[i]].w->unit / s->per_granule;

		if (ng && gr[ng - 1].g == g) {
			gr[ng - 1].end = i + 1;
			continue;
		}
		gr[ng].g = g;
		gr[ng].first = i;
		gr[ng].end = i + 1;
		gr[ng].wrote = false;
		gr[ng].r = (struct ssd_req){0};
		stripes[ns++] = (unsigned)(g % SSD_HDR_LOCKS);
		ng++;
	}
	qsort(stripes, ns, sizeof(stripes[0]), ssd_cmp_uint);
	for (i = 0; i < ns; i++)
		if (!i || stripes[i] != stripes[i - 1])
			pthread_mutex_lock(&s->hdr_lock[stripes[i]]);
	/* Granules holding other sealed entries are read first; the others are all ours. */
	for (i = 0; i < ng; i++)
		gr[i].busy = ssd_granule_busy(s, b[order[gr[i].first]].w->unit);
	pthread_mutex_lock(&s->ring_lock);
	for (i = 0; i < ng; i++)
		if (gr[i].busy)
			ssd_queue(s, &gr[i].r, false, ssd_buf(s, b[order[gr[i].first]].mi),
				  s->granule, s->table_off + gr[i].g * s->granule,
				  b[order[gr[i].first]].mi);
	ssd_submit_locked(s);
	for (i = 0; i < ng; i++)
		while (gr[i].r.pending)
			ssd_progress(s);
	pthread_mutex_unlock(&s->ring_lock);

	for (i = 0; i < ng; i++) {
		int bi = b[order[gr[i].first]].mi;
		uint8_t *buf = ssd_buf(s, bi);

		if (gr[i].busy && ssd_req_result(&gr[i].r))
			continue;
		if (!gr[i].busy)
			memset(buf, 0, s->granule);
		for (j = gr[i].first; j < gr[i].end; j++) {
			const struct ssd_write *w = b[order[j]].w;

			((struct pool_hdr *)buf)[w->unit % s->per_granule] = (struct pool_hdr){
			    .magic = POOL_HDR_MAGIC,
			    .flags = POOL_HDR_SEALED,
			    .generation = w->meta->generation,
			    .name_hash = {w->meta->name_hash[0], w->meta->name_hash[1]},
			    .length = w->len,
			    .checksum = w->meta->checksum,
			    .seal_time_ns = w->meta->version,
			    .npages = (uint32_t)b[order[j]].n,
			    .reserved = s->stamp,
			};
		}
	}
	pthread_mutex_lock(&s->ring_lock);
	for (i = 0; i < ng; i++) {
		int bi = b[order[gr[i].first]].mi;

		if (gr[i].busy && ssd_req_result(&gr[i].r))
			continue; /* the read failed: nothing was written */
		gr[i].r = (struct ssd_req){0};
		ssd_queue(s, &gr[i].r, true, ssd_buf(s, bi), s->granule,
			  s->table_off + gr[i].g * s->granule, bi);
		gr[i].wrote = true;
	}
	ssd_submit_locked(s);
	for (i = 0; i < ng; i++)
		while (gr[i].r.pending)
			ssd_progress(s);
	pthread_mutex_unlock(&s->ring_lock);

	/* A failed write may still have reached the device: such blocks count as sealed too,
	 * so that freeing them clears their entries first (ssd_hdr_clear). */
	for (i = 0; i < ng; i++) {
		int ret = ssd_req_result(&gr[i].r);

		for (j = gr[i].first; j < gr[i].end; j++) {
			b[order[j]].w->ret = ret;
			if (gr[i].wrote)
				ssd_set_sealed(s, b[order[j]].w->unit, true);
		}
	}
	for (i = ns; i-- > 0;)
		if (!i || stripes[i] != stripes[i - 1])
			pthread_mutex_unlock(&s->hdr_lock[stripes[i]]);
}

int ssd_write_blocks(struct ssd *s, struct ssd_write *w, unsigned n)
{
	struct ssd_wblk b[SSD_GROUP];
	int bufs[SSD_GROUP], first_err = 0;
	unsigned i = 0, nbuf, nb, want;

	while (i < n) {
		/* One small buffer per block of the group: the first may wait, the others not. */
		want = n - i < SSD_GROUP ? n - i : SSD_GROUP;
		bufs[0] = ssd_buf_get(s, SSD_SMALL, true);
		for (nbuf = 1; nbuf < want && (bufs[nbuf] = ssd_buf_get(s, SSD_SMALL, false)) >= 0;
		     nbuf++)
			;
		for (nb = 0; i < n && nb < nbuf; i++) {
			uint64_t units;

			w[i].ret = ssd_write_prep(s, &w[i], &units);
			if (!w[i].ret) {
				b[nb] = (struct ssd_wblk){.w = &w[i], .mi = bufs[nb], .n = units};
				nb++;
			} else if (!first_err)
				first_err = w[i].ret;
		}
		if (nb) {
			ssd_write_data(s, b, nb);
			ssd_write_hdrs(s, b, nb);
		}
		for (unsigned j = 0; j < nbuf; j++)
			ssd_buf_put(s, bufs[j]);
		for (unsigned j = 0; j < nb; j++)
			if (b[j].w->ret && !first_err)
				first_err = b[j].w->ret;
	}
	return first_err;
}

int ssd_write_block(struct ssd *s, uint64_t unit, struct ssd_meta *meta, const void *payload,
		    uint64_t len)
{
	struct ssd_write w = {.unit = unit, .meta = meta, .payload = payload, .len = len};

	return ssd_write_blocks(s, &w, 1);
}

/* Read [off, off + len) of the device range starting at base (unit-aligned, inside one
 * extent) into dst; with sum, fold the bytes into it instead of copying (dst unused). */
static int ssd_read_range(struct ssd *s, uint64_t base, uint64_t off, uint8_t *dst, uint64_t len,
			  XXH3_state_t *sum)
{
	struct ssd_req r = {0};
	uint64_t body = 0, pos, o, at = base + off;
	int held[SSD_OP_BIG], ret = 0;
	unsigned nheld = 0;
	bool first = true;

	if (!sum && ssd_aligned(dst, s->mem_align) && at % s->sect == 0)
		body = len & ~(uint64_t)(s->sect - 1);
	pos = body;
	if (len > body)
		nheld = ssd_bigs_get(s, held, (len - body + SSD_STAGE_BIG - 1) / SSD_STAGE_BIG);
	do {
		struct {
			uint64_t pos;
			uint32_t skip, len;
		} io[SSD_OP_BIG];
		unsigned k = 0;

		pthread_mutex_lock(&s->ring_lock);
		if (first) {
			for (o = 0; o < body; o += SSD_IO_MAX)
				ssd_queue(s, &r, false, dst + o,
					  (uint32_t)(body - o < SSD_IO_MAX ? body - o : SSD_IO_MAX),
					  at + o, -1);
			first = false;
		}
		for (; k < nheld && pos < len; k++) {
			uint64_t a = (at + pos) & ~(uint64_t)(s->sect - 1), skip = at + pos - a;
			uint64_t c =
			    len - pos < SSD_STAGE_BIG - skip ? len - pos : SSD_STAGE_BIG - skip;
			uint64_t rl = (skip + c + s->sect - 1) & ~(uint64_t)(s->sect - 1);

			ssd_queue(s, &r, false, ssd_buf(s, held[k]), (uint32_t)rl, a, held[k]);
			io[k].pos = pos;
			io[k].skip = (uint32_t)skip;
			io[k].len = (uint32_t)c;
			pos += c;
		}
		ret = ssd_run(s, &r);
		pthread_mutex_unlock(&s->ring_lock);
		for (unsigned i = 0; !ret && i < k; i++) {
			const uint8_t *b = ssd_buf(s, held[i]) + io[i].skip;

			if (sum)
				checksum_update(sum, b, io[i].len);
			else
				memcpy(dst + io[i].pos, b, io[i].len);
		}
	} while (!ret && pos < len);
	ssd_bigs_put(s, held, nheld);
	return ret;
}

int ssd_read(struct ssd *s, uint64_t unit, uint64_t off, void *dst, uint64_t len)
{
	uint64_t n = ssd_ext(s, unit), cap;

	if (!n)
		return -EINVAL;
	cap = (n - 1) * SSD_UNIT;
	if (off > cap || len > cap - off || (len && !dst))
		return -EINVAL;
	if (!len)
		return 0;
	return ssd_read_range(s, ssd_unit_off(s, unit + 1), off, dst, len, NULL);
}

/* u's header entry as the device has it. */
static int ssd_hdr_read(struct ssd *s, uint64_t u, struct pool_hdr *h)
{
	uint64_t g = u / s->per_granule;
	int bi = ssd_buf_get(s, SSD_SMALL, true), ret;

	ret = ssd_io(s, false, ssd_buf(s, bi), s->granule, s->table_off + g * s->granule, bi);
	if (!ret)
		*h = ((const struct pool_hdr *)ssd_buf(s, bi))[u % s->per_granule];
	ssd_buf_put(s, bi);
	return ret;
}

int ssd_verify(struct ssd *s, uint64_t unit)
{
	uint64_t n = ssd_ext(s, unit);
	XXH3_state_t st;
	struct pool_hdr h;
	int ret;

	if (!n || !ssd_is_sealed(s, unit))
		return -ENOENT;
	ret = ssd_hdr_read(s, unit, &h);
	if (ret)
		return ret;
	if (h.magic != POOL_HDR_MAGIC || !(h.flags & POOL_HDR_SEALED) || h.reserved != s->stamp)
		return -ENOENT;
	if (h.npages != n || ssd_units_for(h.length) > n)
		return -EBADMSG;
	XXH3_64bits_reset(&st);
	if (h.length) {
		ret = ssd_read_range(s, ssd_unit_off(s, unit + 1), 0, NULL, h.length, &st);
		if (ret)
			return ret;
	}
	return XXH3_64bits_digest(&st) == h.checksum ? 0 : -EBADMSG;
}

/* ---- recovery ---------------------------------------------------------------------------- */

/* Why the record in u's meta unit does not vouch for header h, or NULL if it does. */
static const char *ssd_rec_check(const struct ssd *s, uint64_t u, const struct pool_hdr *h,
				 struct ssd_rec *rec)
{
	XXH128_hash_t nh;

	if (rec->magic != SSD_REC_MAGIC)
		return "no meta record in the block's first unit";
	if (rec->rec_checksum != ssd_rec_sum(rec))
		return "meta record checksum mismatch";
	if (rec->format != SSD_FORMAT || memcmp(rec->uuid, s->uuid, 16))
		return "meta record of another format";
	if (rec->unit != u)
		return "meta record of another unit";
	if (rec->nunits != h->npages || rec->generation != h->generation ||
	    rec->length != h->length || rec->version != h->seal_time_ns ||
	    rec->checksum != h->checksum || rec->name_hash[0] != h->name_hash[0] ||
	    rec->name_hash[1] != h->name_hash[1])
		return "meta record disagrees with the header";
	if (rec->dir_len > SSD_DIR_MAX || !rec->name_len || rec->name_len > SSD_NAME_MAX ||
	    memchr(rec->dir, 0, rec->dir_len) || memchr(rec->name, 0, rec->name_len) ||
	    memchr(rec->name, '/', rec->name_len))
		return "meta record holds a bad name";
	nh = XXH3_128bits(rec->name, rec->name_len);
	if (nh.low64 != rec->name_hash[0] || nh.high64 != rec->name_hash[1])
		return "name hash mismatch";
	return NULL;
}

struct ssd_span {
	uint64_t start, n;
};

/* Recovery's state across table chunks. */
struct ssd_rcv {
	struct ssd *s;
	ssd_recover_fn fn;
	ssd_drop_fn drop;
	void *arg;
	struct ssd_recovery *res;
	uint8_t *tbl;	 /* the chunk of the table being looked at */
	uint64_t first;	 /* data unit of tbl's entry 0 */
	uint64_t *dirty; /* granules of tbl to write back */
	uint8_t *metas;	 /* SSD_RECOVER_BATCH meta units */
	uint64_t end;	 /* units before it are covered by kept extents or fillers */
	struct ssd_span *fill;
	size_t nfill, capfill;
	struct ssd_meta meta;
};

static void ssd_rcv_clear(struct ssd_rcv *c, unsigned i)
{
	unsigned g = (unsigned)(i * sizeof(struct pool_hdr) / c->s->granule);

	memset(c->tbl + (size_t)i * sizeof(struct pool_hdr), 0, sizeof(struct pool_hdr));
	c->dirty[g / 64] |= 1ull << (g % 64);
}

/* Make [start, start + n) allocated: the allocator's only free extent begins at c->end, and
 * alloc_get carves from the head of the extent it takes, so a gap becomes a filler extent
 * (freed at the end) and the block's extent lands exactly where it is. */
static int ssd_rcv_take(struct ssd_rcv *c, uint64_t start, uint64_t n)
{
	struct ssd *s = c->s;
	int64_t p;

	if (start > c->end) {
		if (c->nfill == c->capfill) {
			size_t cap = c->capfill ? 2 * c->capfill : 256;
			struct ssd_span *f = realloc(c->fill, cap * sizeof(*f));

			if (!f)
				return -ENOMEM;
			c->fill = f;
			c->capfill = cap;
		}
		p = alloc_get(s->alloc, start - c->end);
		if (p != (int64_t)c->end)
			return -EUCLEAN;
		c->fill[c->nfill++] = (struct ssd_span){c->end, start - c->end};
	}
	p = alloc_get(s->alloc, n);
	if (p != (int64_t)start)
		return -EUCLEAN;
	atomic_store_explicit(&s->ext[start], (uint32_t)n, memory_order_relaxed);
	ssd_set_sealed(s, start, true);
	c->end = start + n;
	return 0;
}

/* Read the meta units of the candidate entries idx[0..n) of the chunk and judge them. */
static int ssd_rcv_batch(struct ssd_rcv *c, const unsigned *idx, unsigned n)
{
	struct ssd *s = c->s;
	struct ssd_req r = {0};
	int ret;

	pthread_mutex_lock(&s->ring_lock);
	for (unsigned j = 0; j < n; j++)
		ssd_queue(s, &r, false, c->metas + (size_t)j * SSD_UNIT, SSD_UNIT,
			  ssd_unit_off(s, c->first + idx[j]), -1);
	ret = ssd_run(s, &r);
	pthread_mutex_unlock(&s->ring_lock);
	if (ret)
		return ret;

	for (unsigned j = 0; j < n; j++) {
		const struct pool_hdr *h =
		    (const struct pool_hdr *)(c->tbl + (size_t)idx[j] * sizeof(*h));
		struct ssd_rec *rec = (struct ssd_rec *)(c->metas + (size_t)j * SSD_UNIT);
		uint64_t u = c->first + idx[j];
		const char *why = ssd_rec_check(s, u, h, rec);

		if (!why && u < c->end)
			why = "extent overlaps the block before it";
		if (why) {
			c->res->dropped++;
			if (c->drop)
				c->drop(c->arg, u, why);
			ssd_rcv_clear(c, idx[j]);
			continue;
		}
		memcpy(c->meta.dir, rec->dir, rec->dir_len);
		c->meta.dir[rec->dir_len] = 0;
		memcpy(c->meta.name, rec->name, rec->name_len);
		c->meta.name[rec->name_len] = 0;
		c->meta.generation = rec->generation;
		c->meta.version = rec->version;
		c->meta.mtime_ns = rec->mtime_ns;
		c->meta.mode = rec->mode;
		c->meta.uid = rec->reserved[0];
		c->meta.gid = rec->reserved[1];
		c->meta.length = rec->length;
		c->meta.checksum = rec->checksum;
		c->meta.name_hash[0] = rec->name_hash[0];
		c->meta.name_hash[1] = rec->name_hash[1];
		if (c->fn && !c->fn(c->arg, u, &c->meta)) {
			c->res->rejected++;
			ssd_rcv_clear(c, idx[j]);
			continue;
		}
		ret = ssd_rcv_take(c, u, h->npages);
		if (ret)
			return ret;
		c->res->recovered++;
		c->res->bytes += rec->length;
	}
	return 0;
}

/* One chunk of the table at byte coff of it, clen bytes. */
static int ssd_rcv_chunk(struct ssd_rcv *c, unsigned *idx, uint64_t coff, uint32_t clen)
{
	struct ssd *s = c->s;
	struct ssd_req r = {0};
	unsigned nent = clen / sizeof(struct pool_hdr), ncand = 0, ngran = clen / s->granule;
	int ret;

	ret = ssd_io(s, false, c->tbl, clen, s->table_off + coff, -1);
	if (ret)
		return ret;
	c->first = coff / sizeof(struct pool_hdr);
	memset(c->dirty, 0, (SSD_RECOVER_CHUNK / 512 / 64) * sizeof(uint64_t));
	for (unsigned i = 0; i < nent; i++) {
		const struct pool_hdr *h =
		    (const struct pool_hdr *)(c->tbl + (size_t)i * sizeof(*h));
		uint64_t u = c->first + i;

		if (ssd_all_zero((const uint8_t *)h, sizeof(*h)))
			continue;
		if (u >= s->nunits || h->reserved != s->stamp) {
			c->res->stale++;
			ssd_rcv_clear(c, i);
		} else if (h->magic != POOL_HDR_MAGIC || h->flags != POOL_HDR_SEALED ||
			   !h->npages || h->npages > s->nunits - u ||
			   ssd_units_for(h->length) > h->npages) {
			c->res->dropped++;
			if (c->drop)
				c->drop(c->arg, u, "malformed header entry");
			ssd_rcv_clear(c, i);
		} else {
			idx[ncand++] = i;
		}
	}
	for (unsigned j = 0; j < ncand; j += SSD_RECOVER_BATCH) {
		ret = ssd_rcv_batch(c, idx + j,
				    ncand - j < SSD_RECOVER_BATCH ? ncand - j : SSD_RECOVER_BATCH);
		if (ret)
			return ret;
	}

	/* Write back the granules with cleared entries. */
	pthread_mutex_lock(&s->ring_lock);
	for (unsigned g = 0; g < ngran; g++)
		if ((c->dirty[g / 64] >> (g % 64)) & 1)
			ssd_queue(s, &r, true, c->tbl + (size_t)g * s->granule, s->granule,
				  s->table_off + coff + (uint64_t)g * s->granule, -1);
	ret = ssd_run(s, &r);
	pthread_mutex_unlock(&s->ring_lock);
	return ret;
}

int ssd_recover(struct ssd *s, ssd_recover_fn fn, ssd_drop_fn drop, void *arg,
		struct ssd_recovery *res)
{
	int64_t t0 = ssd_now_ns(CLOCK_MONOTONIC);
	uint64_t table_bytes = s->data_off - s->table_off, coff;
	struct ssd_recovery dummy;
	struct ssd_rcv c = {.s = s, .fn = fn, .drop = drop, .arg = arg, .res = res ? res : &dummy};
	unsigned *idx = NULL;
	int ret = -ENOMEM;

	memset(c.res, 0, sizeof(*c.res));
	pthread_mutex_lock(&s->alloc_lock);
	if (s->recovered || alloc_free_pages(s->alloc) != s->nunits) {
		pthread_mutex_unlock(&s->alloc_lock);
		return -EBUSY;
	}
	s->recovered = true;
	pthread_mutex_unlock(&s->alloc_lock);

	if (posix_memalign((void **)&c.tbl, SSD_UNIT, SSD_RECOVER_CHUNK) ||
	    posix_memalign((void **)&c.metas, SSD_UNIT, (size_t)SSD_RECOVER_BATCH * SSD_UNIT))
		goto out;
	c.dirty = calloc(SSD_RECOVER_CHUNK / 512 / 64, sizeof(uint64_t));
	idx = malloc(SSD_RECOVER_CHUNK / sizeof(struct pool_hdr) * sizeof(*idx));
	if (!c.dirty || !idx)
		goto out;

	/* The allocator is touched by this thread alone until need_recover drops. */
	for (coff = 0; coff < table_bytes; coff += SSD_RECOVER_CHUNK) {
		uint64_t clen = table_bytes - coff;

		ret = ssd_rcv_chunk(&c, idx, coff,
				    clen < SSD_RECOVER_CHUNK ? (uint32_t)clen : SSD_RECOVER_CHUNK);
		if (ret)
			goto out;
	}
	for (size_t i = 0; i < c.nfill; i++)
		alloc_put(s->alloc, c.fill[i].start, c.fill[i].n);
	c.nfill = 0;
	pthread_mutex_lock(&s->alloc_lock);
	s->need_recover = false;
	pthread_mutex_unlock(&s->alloc_lock);
	ret = 0;
out:
	/* After a failure need_recover stays set: nothing can be allocated until a reopen. */
	c.res->elapsed_ns = (uint64_t)(ssd_now_ns(CLOCK_MONOTONIC) - t0);
	free(c.fill);
	free(idx);
	free(c.dirty);
	free(c.metas);
	free(c.tbl);
	return ret;
}

int ssd_check(struct ssd *s)
{
	uint64_t u, n, used = 0;
	int ret;

	pthread_mutex_lock(&s->alloc_lock);
	ret = alloc_check(s->alloc);
	for (u = 0; !ret && u < s->nunits; u += n ? n : 1) {
		n = atomic_load_explicit(&s->ext[u], memory_order_relaxed);
		if (n > s->nunits - u)
			ret = -EUCLEAN;
		used += n;
		if (!n && ssd_is_sealed(s, u))
			ret = -EUCLEAN;
	}
	if (!ret && used != alloc_total_pages(s->alloc) - alloc_free_pages(s->alloc))
		ret = -EUCLEAN;
	pthread_mutex_unlock(&s->alloc_lock);
	return ret;
}
