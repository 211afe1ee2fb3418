/*
 * Unit tests of engine/ssd.c, on files under /var/tmp (ext4 here: O_DIRECT works).
 *
 * Round trips of every awkward size with the content checked, caller buffers at odd
 * addresses, partial reads, a full device (ENOSPC, then free and reuse), four threads
 * writing, reading and freeing at once, recovery after reopen (names, metadata, bytes; the
 * allocator rebuilt around the recovered extents), corrupt records and garbage header entries
 * dropped, a damaged payload caught by ssd_verify, kill -9 of a writing process at random
 * moments (everything it reported complete comes back byte-exact, nothing half-written does),
 * refusals with their messages: memory filesystems (tmpfs, which takes O_DIRECT since Linux
 * 6.6, and ramfs in a private mount namespace), no such device, foreign content, another
 * size, a second opener.
 * A loop device, when one can be set up, stands in for a block device.
 *
 * KVC_SSD_BENCH=1 adds a throughput loop (ssd_write_block / ssd_read of 2 MiB and 256 KiB
 * blocks, 1 and 4 threads) printing GB/s.
 */
#include "engine/ssd.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

static char path[128];
static char err[512];

static void make_path(const char *tag)
{
	snprintf(path, sizeof(path), "/var/tmp/kvcachefs-test-ssd-%s.%d", tag, (int)getpid());
	unlink(path);
}

static int open_file(struct ssd **s, uint64_t size)
{
	struct ssd_config cfg = {.path = path, .size = size, .create = true};
	int ret = ssd_open(s, &cfg, err, sizeof(err));

	if (ret)
		fprintf(stderr, "ssd_open %s: %d %s\n", path, ret, err);
	return ret;
}

/* Deterministic bytes of a block from its seed. */
static void fill(uint8_t *p, uint64_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (uint64_t i = 0; i < len; i++) {
		if (i % 8 == 0) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		p[i] = (uint8_t)(x >> (8 * (i % 8)));
	}
}

static bool same(const uint8_t *p, uint64_t len, uint64_t seed)
{
	uint8_t *q = malloc(len ? len : 1);
	bool ok;

	fill(q, len, seed);
	ok = memcmp(p, q, len) == 0;
	free(q);
	return ok;
}

static void set_meta(struct ssd_meta *m, const char *dir, const char *name, uint64_t gen)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->dir, sizeof(m->dir), "%s", dir);
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->generation = gen;
	m->version = gen * 1000 + 7;
	m->mtime_ns = 1700000000000000000ll + (int64_t)gen;
	m->mode = 0644;
}

/* Allocate and write a block of len bytes seeded by gen, from a buffer at offset mis of an
 * aligned allocation. */
static int put_block(struct ssd *s, uint64_t len, uint64_t gen, size_t mis, uint64_t *unit)
{
	struct ssd_meta m;
	uint8_t *buf;
	char name[64];
	int ret;

	if (posix_memalign((void **)&buf, 4096, len + mis + 1))
		return -ENOMEM;
	fill(buf + mis, len, gen);
	snprintf(name, sizeof(name), "b%llu.bin", (unsigned long long)gen);
	set_meta(&m, "model/cfg/rank_0", name, gen);
	ret = ssd_alloc(s, len, unit);
	if (!ret) {
		ret = ssd_write_block(s, *unit, &m, buf + mis, len);
		if (ret)
			ssd_free(s, *unit);
	}
	free(buf);
	return ret;
}

/* Read the whole block into a buffer at offset mis and compare. */
static bool check_block(struct ssd *s, uint64_t unit, uint64_t len, uint64_t gen, size_t mis)
{
	uint8_t *buf;
	bool ok;

	if (posix_memalign((void **)&buf, 4096, len + mis + 1))
		return false;
	ok = ssd_read(s, unit, 0, buf + mis, len) == 0 && same(buf + mis, len, gen);
	free(buf);
	return ok;
}

static void test_roundtrip(void)
{
	static const uint64_t sizes[] = {0,	  1,	    4095,	    4096,
					 4097,	  8191,	    256 << 10,	    (2 << 20) + 17,
					 1 << 20, 3u << 20, (256 << 10) + 1};
	struct ssd *s;
	uint64_t units[sizeof(sizes) / sizeof(sizes[0])];
	struct ssd_meta m;
	uint8_t *p, *q;

	make_path("rt");
	REQUIRE(open_file(&s, 64 << 20) == 0);
	CHECK(ssd_fresh(s));
	CHECK(ssd_capacity(s) > (64u << 20) * 97 / 100 && ssd_capacity(s) < 64u << 20);
	CHECK(ssd_used(s) == 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* even sizes from an aligned buffer, odd ones from an odd address */
		CHECK(put_block(s, sizes[i], 100 + i, i % 2 ? 1 + i : 0, &units[i]) == 0);
		CHECK(check_block(s, units[i], sizes[i], 100 + i, 0));
		CHECK(check_block(s, units[i], sizes[i], 100 + i, 3));
		CHECK(ssd_verify(s, units[i]) == 0);
	}
	CHECK(ssd_check(s) == 0);

	/* partial reads at odd offsets and lengths, into aligned and unaligned buffers */
	uint64_t big = sizes[7], u = units[7];
	REQUIRE(posix_memalign((void **)&p, 4096, big + 64) == 0);
	q = malloc(big);
	REQUIRE(q);
	fill(q, big, 107);
	const uint64_t offs[][2] = {{0, 1},	     {1, 1},	      {4095, 2},      {4096, 4096},
				    {512, 512},	     {100, 70000},    {big - 17, 17}, {big - 1, 1},
				    {8192, 1 << 20}, {513, big - 513}};
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		for (size_t mis = 0; mis < 2; mis++) {
			memset(p, 0xee, big + 64);
			CHECK(ssd_read(s, u, offs[i][0], p + mis * 7, offs[i][1]) == 0);
			CHECK(memcmp(p + mis * 7, q + offs[i][0], offs[i][1]) == 0);
			CHECK(p[mis * 7 + offs[i][1]] == 0xee); /* nothing written past the end */
		}
	}
	/* the padding of the last unit is readable (zeros), nothing beyond the extent is */
	uint64_t cap = (ssd_units_for(big) - 1) * SSD_UNIT;
	CHECK(ssd_read(s, u, big, p, cap - big) == 0);
	for (uint64_t i = 0; i < cap - big; i++)
		if (p[i]) {
			CHECK(p[i] == 0);
			break;
		}
	CHECK(ssd_read(s, u, 0, p, cap + 1) == -EINVAL);
	CHECK(ssd_read(s, u, cap + 1, p, 0) == -EINVAL);
	CHECK(ssd_read(s, u + 1, 0, p, 1) == -EINVAL); /* not the head of an extent */
	free(p);
	free(q);

	/* what ssd_write_block reports and refuses */
	uint64_t w;
	uint8_t one = 'x';
	REQUIRE(ssd_alloc(s, 1, &w) == 0);
	set_meta(&m, "d", "n", 1);
	CHECK(ssd_write_block(s, w, &m, &one, 2 * SSD_UNIT) == -EINVAL); /* does not fit */
	set_meta(&m, "d", "a/b", 1);
	CHECK(ssd_write_block(s, w, &m, &one, 1) == -EINVAL);
	set_meta(&m, "d", "", 1);
	CHECK(ssd_write_block(s, w, &m, &one, 1) == -EINVAL);
	set_meta(&m, "d", "n", 1);
	memset(m.name, 'n', sizeof(m.name)); /* no NUL within 256 bytes */
	CHECK(ssd_write_block(s, w, &m, &one, 1) == -ENAMETOOLONG);
	set_meta(&m, "d", "n", 1);
	CHECK(ssd_write_block(s, w, &m, &one, 1) == 0);
	CHECK(m.length == 1 && m.checksum == XXH3_64bits(&one, 1));
	CHECK(ssd_write_block(s, w, &m, &one, 1) == -EEXIST);
	CHECK(ssd_free(s, w) == 0);
	CHECK(ssd_free(s, w) == -EINVAL);
	CHECK(ssd_alloc(s, ssd_capacity(s), &w) == -EFBIG);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		CHECK(ssd_free(s, units[i]) == 0);
	CHECK(ssd_used(s) == 0);
	CHECK(ssd_check(s) == 0);
	ssd_close(s);
	unlink(path);
}

static void test_enospc(void)
{
	struct ssd *s;
	uint64_t units[64], u;
	unsigned n = 0;
	int ret;

	make_path("full");
	REQUIRE(open_file(&s, 2 << 20) == 0);
	while (n < 64 && (ret = put_block(s, 64 << 10, n, 0, &units[n])) == 0)
		n++;
	CHECK(ret == -ENOSPC);
	CHECK(n >= 25 && n < 64);
	CHECK(ssd_alloc(s, 64 << 10, &u) == -ENOSPC);
	CHECK(ssd_check(s) == 0);
	/* free one in the middle: exactly that room comes back */
	CHECK(ssd_free(s, units[n / 2]) == 0);
	CHECK(put_block(s, 64 << 10, 1000, 0, &u) == 0);
	CHECK(u == units[n / 2]);
	units[n / 2] = u;
	CHECK(check_block(s, u, 64 << 10, 1000, 0));
	for (unsigned i = 0; i < n; i++)
		if (i != n / 2)
			CHECK(check_block(s, units[i], 64 << 10, i, 0));
	for (unsigned i = 0; i < n; i++)
		CHECK(ssd_free(s, units[i]) == 0);
	CHECK(ssd_used(s) == 0);
	CHECK(ssd_check(s) == 0);
	ssd_close(s);
	unlink(path);
}

#define NBATCH 70

static void test_batch(void)
{
	static struct ssd_meta m[NBATCH];
	struct ssd_write w[NBATCH];
	struct ssd_config cfg = {0};
	struct ssd_recovery res;
	uint8_t *bufs[NBATCH];
	uint64_t u0, len[NBATCH];
	struct ssd *s;

	make_path("batch");
	REQUIRE(open_file(&s, 64 << 20) == 0);
	/* a sealed block first: the batch's first granule holds another entry */
	REQUIRE(put_block(s, 100, 999, 0, &u0) == 0);
	for (unsigned i = 0; i < NBATCH; i++) {
		char name[32];

		len[i] = i % 7 == 0 ? (300 << 10) + i : (uint64_t)i * 37;
		bufs[i] = malloc(len[i] + 8);
		REQUIRE(bufs[i]);
		fill(bufs[i] + i % 3, len[i], i);
		snprintf(name, sizeof(name), "b%u.bin", i);
		set_meta(&m[i], "model/cfg/rank_0", name, i);
		w[i] = (struct ssd_write){.meta = &m[i], .payload = bufs[i] + i % 3, .len = len[i]};
		REQUIRE(ssd_alloc(s, len[i], &w[i].unit) == 0);
	}
	m[10].name[0] = 0;	  /* bad name */
	w[20].len = 3 * SSD_UNIT; /* does not fit its extent */
	CHECK(ssd_free(s, w[30].unit) == 0);
	w[30].unit = u0; /* sealed already */
	CHECK(ssd_write_blocks(s, w, NBATCH) == -EINVAL);
	CHECK(w[10].ret == -EINVAL && w[20].ret == -EINVAL && w[30].ret == -EEXIST);
	CHECK(check_block(s, u0, 100, 999, 0));
	for (unsigned i = 0; i < NBATCH; i++) {
		if (i == 10 || i == 20 || i == 30)
			continue;
		CHECK(w[i].ret == 0 && m[i].length == len[i]);
		CHECK(check_block(s, w[i].unit, len[i], i, 1));
		CHECK(ssd_verify(s, w[i].unit) == 0);
	}
	CHECK(ssd_verify(s, w[10].unit) == -ENOENT); /* not sealed */
	CHECK(ssd_free(s, w[10].unit) == 0 && ssd_free(s, w[20].unit) == 0);
	CHECK(ssd_check(s) == 0);
	ssd_close(s);

	cfg.path = path;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	CHECK(ssd_recover(s, NULL, NULL, NULL, &res) == 0);
	CHECK(res.recovered == NBATCH - 3 + 1 && res.dropped == 0);
	for (unsigned i = 0; i < NBATCH; i++) {
		if (i != 10 && i != 20 && i != 30)
			CHECK(check_block(s, w[i].unit, len[i], i, 0));
		free(bufs[i]);
	}
	ssd_close(s);
	unlink(path);
}

/* ---- threads ---- */

struct worker {
	struct ssd *s;
	unsigned id;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t units[8], lens[8], gens[8];
	unsigned live = 0, seed = w->id * 7919u + 1;

	for (unsigned i = 0; i < 60; i++) {
		uint64_t len = (uint64_t)(rand_r(&seed) % (600 << 10));
		uint64_t gen = (uint64_t)w->id * 1000000 + i;

		if (i % 5 == 0)
			len = 2 << 20;
		if (live == 8 || (live && rand_r(&seed) % 3 == 0)) {
			unsigned k = (unsigned)rand_r(&seed) % live;

			if (!check_block(w->s, units[k], lens[k], gens[k], k % 2 ? 5 : 0))
				w->failures++;
			if (ssd_free(w->s, units[k]))
				w->failures++;
			units[k] = units[--live];
			lens[k] = lens[live];
			gens[k] = gens[live];
		}
		if (put_block(w->s, len, gen, i % 3, &units[live]))
			w->failures++;
		else if (!check_block(w->s, units[live], len, gen, 0))
			w->failures++;
		else {
			lens[live] = len;
			gens[live++] = gen;
		}
	}
	while (live--) {
		if (!check_block(w->s, units[live], lens[live], gens[live], 1))
			w->failures++;
		if (ssd_free(w->s, units[live]))
			w->failures++;
	}
	return NULL;
}

static void threads_at(unsigned qd)
{
	struct ssd_config cfg = {.size = 96 << 20, .create = true, .queue_depth = qd};
	struct worker w[4];
	pthread_t t[4];
	struct ssd *s;

	make_path("mt");
	cfg.path = path;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	for (unsigned i = 0; i < 4; i++) {
		w[i] = (struct worker){.s = s, .id = i + 1};
		REQUIRE(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK(w[i].failures == 0);
	}
	CHECK(ssd_used(s) == 0);
	CHECK(ssd_check(s) == 0);
	ssd_close(s);
	unlink(path);
}

/* Four threads, with the default ring and with a ring of one entry (every call waits for
 * room, and completions of one thread's I/O are reaped by another). */
static void test_threads(void)
{
	threads_at(0);
	threads_at(1);
}

/* ---- recovery ---- */

#define NREC 300

struct found {
	uint64_t unit[NREC];
	uint64_t len[NREC];
	uint64_t version[NREC];
	int64_t mtime[NREC];
	unsigned count, bad, reject_every;
	unsigned drops;
	char why[8][64];
};

/* Blocks are named b<gen>.bin; gen indexes the table. */
static bool on_block(void *arg, uint64_t unit, const struct ssd_meta *m)
{
	struct found *f = arg;
	unsigned long long g;

	if (sscanf(m->name, "b%llu.bin", &g) != 1 || g >= NREC || g != m->generation ||
	    strcmp(m->dir, "model/cfg/rank_0") || m->mode != 0644) {
		f->bad++;
		return true;
	}
	f->unit[g] = unit;
	f->len[g] = m->length;
	f->version[g] = m->version;
	f->mtime[g] = m->mtime_ns;
	f->count++;
	return !(f->reject_every && g % f->reject_every == 0);
}

static void on_drop(void *arg, uint64_t unit, const char *why)
{
	struct found *f = arg;

	(void)unit;
	if (f->drops < 8)
		snprintf(f->why[f->drops], sizeof(f->why[0]), "%s", why);
	f->drops++;
}

static uint64_t rec_len(unsigned g)
{
	return g % 10 == 0 ? (1 << 20) + g : (uint64_t)(g * 977) % (70 << 10);
}

static void test_recover(void)
{
	static struct found f;
	struct ssd_recovery res;
	struct ssd_config cfg = {0};
	uint64_t units[NREC], u, used;
	struct ssd *s;

	make_path("rec");
	REQUIRE(open_file(&s, 128 << 20) == 0);
	for (unsigned g = 0; g < NREC; g++)
		REQUIRE(put_block(s, rec_len(g), g, 0, &units[g]) == 0);
	/* a hole: freed blocks must not come back */
	for (unsigned g = 1; g < NREC; g += 7)
		CHECK(ssd_free(s, units[g]) == 0);
	used = ssd_used(s);
	ssd_close(s);

	cfg.path = path;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0); /* size 0: as formatted */
	CHECK(!ssd_fresh(s));
	CHECK(ssd_alloc(s, 1, &u) == -EBUSY); /* not before recovery */
	memset(&f, 0, sizeof(f));
	CHECK(ssd_recover(s, on_block, on_drop, &f, &res) == 0);
	CHECK(f.bad == 0 && f.drops == 0);
	CHECK(res.recovered == NREC - (NREC + 5) / 7 && res.dropped == 0 && res.stale == 0);
	CHECK(f.count == res.recovered);
	printf("     recovered %llu blocks (%llu MB) in %.1f ms\n",
	       (unsigned long long)res.recovered, (unsigned long long)(res.bytes >> 20),
	       (double)res.elapsed_ns / 1e6);
	for (unsigned g = 0; g < NREC; g++) {
		if (g % 7 == 1) {
			CHECK(f.len[g] == 0 && f.unit[g] == 0);
			continue;
		}
		CHECK(f.unit[g] == units[g] && f.len[g] == rec_len(g));
		CHECK(f.version[g] == g * 1000 + 7);
		CHECK(f.mtime[g] == 1700000000000000000ll + (int64_t)g);
	}
	CHECK(ssd_used(s) == used);
	CHECK(ssd_check(s) == 0);
	CHECK(ssd_recover(s, on_block, on_drop, &f, &res) == -EBUSY); /* once */
	/* new blocks land around the recovered ones, which stay intact */
	uint64_t nu[40];
	for (unsigned i = 0; i < 40; i++)
		CHECK(put_block(s, 300 << 10, 5000 + i, 0, &nu[i]) == 0);
	for (unsigned g = 0; g < NREC; g++)
		if (g % 7 != 1)
			CHECK(check_block(s, units[g], rec_len(g), g, 0));
	for (unsigned i = 0; i < 40; i++)
		CHECK(check_block(s, nu[i], 300 << 10, 5000 + i, 0));
	for (unsigned i = 0; i < 40; i++)
		CHECK(ssd_free(s, nu[i]) == 0);
	CHECK(ssd_check(s) == 0);
	ssd_close(s);

	/* fn may refuse blocks: they are cleared for good */
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	memset(&f, 0, sizeof(f));
	f.reject_every = 5;
	CHECK(ssd_recover(s, on_block, on_drop, &f, &res) == 0);
	unsigned kept = (unsigned)res.recovered;
	CHECK(res.rejected > 0 && res.rejected + res.recovered == f.count);
	ssd_close(s);
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	memset(&f, 0, sizeof(f));
	CHECK(ssd_recover(s, on_block, NULL, &f, &res) == 0);
	CHECK(res.recovered == kept && res.rejected == 0 && res.dropped == 0);
	ssd_close(s);

	/* another size: refused with a message, nothing lost */
	cfg.size = 64 << 20;
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -EEXIST);
	CHECK(strstr(err, path) && strstr(err, "134217728"));
	printf("     %s\n", err);
	/* a second opener */
	cfg.size = 0;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	struct ssd *s2;
	CHECK(ssd_open(&s2, &cfg, err, sizeof(err)) == -EBUSY);
	CHECK(strstr(err, "in use"));
	ssd_close(s);
	/* format discards: every old entry is stale, none recovered */
	cfg.format = true;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	CHECK(ssd_fresh(s));
	memset(&f, 0, sizeof(f));
	CHECK(ssd_recover(s, on_block, on_drop, &f, &res) == 0);
	CHECK(res.recovered == 0 && res.dropped == 0 && res.stale == kept && f.count == 0);
	ssd_close(s);
	unlink(path);
}

/* ---- corruption ---- */

static void test_corrupt(void)
{
	static struct found f;
	struct ssd_config cfg = {0};
	struct ssd_recovery res;
	struct ssd_super sb;
	uint64_t units[20], garbage, tail;
	struct ssd *s;
	uint8_t junk[4096];
	int fd;

	make_path("bad");
	REQUIRE(open_file(&s, 16 << 20) == 0);
	for (unsigned g = 0; g < 20; g++)
		REQUIRE(put_block(s, 20000 + g, g, 0, &units[g]) == 0);
	REQUIRE(ssd_alloc(s, 3 * SSD_UNIT, &garbage) == 0);
	REQUIRE(ssd_alloc(s, 0, &tail) == 0);
	ssd_close(s);

	fd = open(path, O_RDWR);
	REQUIRE(fd >= 0);
	REQUIRE(pread(fd, &sb, sizeof(sb), 0) == sizeof(sb));
	/* 1: one byte of block 3's name in its meta record */
	uint64_t at = sb.data_off + units[3] * SSD_UNIT + offsetof(struct ssd_rec, name) + 1;
	uint8_t c;
	REQUIRE(pread(fd, &c, 1, (off_t)at) == 1);
	c ^= 0x20;
	REQUIRE(pwrite(fd, &c, 1, (off_t)at) == 1);
	/* 2: a sealed, well-formed header entry over units holding garbage */
	struct pool_hdr h = {.magic = POOL_HDR_MAGIC,
			     .flags = POOL_HDR_SEALED,
			     .generation = 77,
			     .length = 5000,
			     .npages = 4};
	memcpy(&h.reserved, sb.uuid, 4);
	fill(junk, sizeof(junk), 4242);
	REQUIRE(pwrite(fd, junk, sizeof(junk), (off_t)(sb.data_off + garbage * SSD_UNIT)) ==
		sizeof(junk));
	REQUIRE(pwrite(fd, &h, sizeof(h), (off_t)(sb.table_off + garbage * sizeof(h))) ==
		sizeof(h));
	/* 3: a malformed entry (npages 0) */
	h.npages = 0;
	REQUIRE(pwrite(fd, &h, sizeof(h), (off_t)(sb.table_off + tail * sizeof(h))) == sizeof(h));
	/* 4: block 5's header says another generation than its record */
	struct pool_hdr h5;
	REQUIRE(pread(fd, &h5, sizeof(h5), (off_t)(sb.table_off + units[5] * sizeof(h5))) ==
		sizeof(h5));
	CHECK(h5.magic == POOL_HDR_MAGIC && h5.generation == 5 && h5.npages == 6);
	h5.generation++;
	REQUIRE(pwrite(fd, &h5, sizeof(h5), (off_t)(sb.table_off + units[5] * sizeof(h5))) ==
		sizeof(h5));
	/* 5: one payload byte of block 8 (recovery reads no payload: ssd_verify catches it) */
	at = sb.data_off + (units[8] + 1) * SSD_UNIT + 12345;
	REQUIRE(pread(fd, &c, 1, (off_t)at) == 1);
	c ^= 1;
	REQUIRE(pwrite(fd, &c, 1, (off_t)at) == 1);
	fsync(fd);
	close(fd);

	cfg.path = path;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	memset(&f, 0, sizeof(f));
	CHECK(ssd_recover(s, on_block, on_drop, &f, &res) == 0);
	CHECK(res.recovered == 18 && res.dropped == 4 && f.drops == 4 && f.bad == 0);
	for (unsigned i = 0; i < f.drops && i < 8; i++)
		printf("     dropped: %s\n", f.why[i]);
	for (unsigned g = 0; g < 20; g++) {
		if (g == 3 || g == 5) {
			CHECK(f.len[g] == 0);
			continue;
		}
		CHECK(f.unit[g] == units[g] && f.len[g] == 20000 + g);
		CHECK(ssd_verify(s, units[g]) == (g == 8 ? -EBADMSG : 0));
		if (g != 8)
			CHECK(check_block(s, units[g], 20000 + g, g, 0));
	}
	CHECK(ssd_check(s) == 0);
	ssd_close(s);
	/* the dropped entries were cleared: a second recovery finds nothing to drop */
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	memset(&f, 0, sizeof(f));
	CHECK(ssd_recover(s, on_block, on_drop, &f, &res) == 0);
	CHECK(res.recovered == 18 && res.dropped == 0);
	ssd_close(s);

	/* a damaged superblock is refused, not reformatted */
	fd = open(path, O_RDWR);
	REQUIRE(fd >= 0);
	c = 0xff;
	REQUIRE(pwrite(fd, &c, 1, offsetof(struct ssd_super, nunits)) == 1);
	fsync(fd);
	close(fd);
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -EUCLEAN);
	CHECK(strstr(err, path) != NULL);
	printf("     %s\n", err);
	unlink(path);

	/* foreign content is refused unless asked to format */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	REQUIRE(fd >= 0);
	REQUIRE(pwrite(fd, junk, sizeof(junk), 0) == sizeof(junk));
	REQUIRE(ftruncate(fd, 1 << 20) == 0);
	close(fd);
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -EEXIST);
	CHECK(strstr(err, "not a kvcachefs SSD tier") != NULL);
	cfg.format = true;
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	CHECK(ssd_fresh(s) && ssd_capacity(s) > 900 << 10);
	ssd_close(s);
	unlink(path);
}

/* ---- kill -9 in the middle of writes ---- */

enum { REP_READY = 1, REP_WRITE, REP_FREE };
struct report {
	uint64_t op, unit, gen, len;
};

#define CRASH_MAX 4096

struct model {
	uint64_t gen[CRASH_MAX], unit[CRASH_MAX], len[CRASH_MAX];
	unsigned n;
};

static int model_find(const struct model *m, uint64_t gen)
{
	for (unsigned i = 0; i < m->n; i++)
		if (m->gen[i] == gen)
			return (int)i;
	return -1;
}

static void model_del(struct model *m, unsigned i)
{
	m->n--;
	m->gen[i] = m->gen[m->n];
	m->unit[i] = m->unit[m->n];
	m->len[i] = m->len[m->n];
}

static bool on_crash_block(void *arg, uint64_t unit, const struct ssd_meta *meta)
{
	struct model *m = arg;
	unsigned long long g;

	if (m->n < CRASH_MAX && sscanf(meta->name, "b%llu.bin", &g) == 1) {
		m->gen[m->n] = g;
		m->unit[m->n] = unit;
		m->len[m->n++] = meta->length;
	}
	return true;
}

static void crash_child(int wfd, uint64_t base)
{
	static struct model m;
	struct ssd_config cfg = {.path = path};
	struct report r = {.op = REP_READY};
	struct ssd *s;
	unsigned seed = (unsigned)base;

	if (ssd_open(&s, &cfg, err, sizeof(err)) || ssd_recover(s, on_crash_block, NULL, &m, NULL))
		_exit(2);
	if (write(wfd, &r, sizeof(r)) != sizeof(r))
		_exit(3);
	for (uint64_t gen = base;; gen++) {
		uint64_t len = (uint64_t)(rand_r(&seed) % (300 << 10)), unit;
		int ret;

		if (m.n && rand_r(&seed) % 4 == 0) {
			unsigned k = (unsigned)rand_r(&seed) % m.n;

			if (ssd_free(s, m.unit[k]))
				_exit(4);
			r = (struct report){.op = REP_FREE, .gen = m.gen[k]};
			model_del(&m, k);
			if (write(wfd, &r, sizeof(r)) != sizeof(r))
				_exit(3);
		}
		ret = put_block(s, len, gen, gen % 2, &unit);
		if (ret == -ENOSPC)
			continue;
		if (ret || m.n == CRASH_MAX)
			_exit(5);
		m.gen[m.n] = gen;
		m.unit[m.n] = unit;
		m.len[m.n++] = len;
		r = (struct report){.op = REP_WRITE, .unit = unit, .gen = gen, .len = len};
		if (write(wfd, &r, sizeof(r)) != sizeof(r))
			_exit(3);
	}
}

static void test_crash(void)
{
	static struct model live, got;
	struct ssd_config cfg = {0};
	struct ssd_recovery res;
	struct ssd *s;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid(), writes = 0, frees = 0;
	unsigned inflight_writes = 0, inflight_frees = 0;

	make_path("crash");
	REQUIRE(open_file(&s, 24 << 20) == 0);
	ssd_close(s);
	cfg.path = path;
	live.n = 0;
	for (unsigned round = 0; round < 10; round++) {
		uint64_t base = (round + 1) * 1000000ull, maxgen = 0;
		struct report r;
		int pfd[2], st;
		bool ready = false;
		pid_t pid;

		REQUIRE(pipe(pfd) == 0);
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			crash_child(pfd[1], base + round);
		}
		close(pfd[1]);
		/* let it recover and start writing, then kill it at a random moment */
		if (read(pfd[0], &r, sizeof(r)) == sizeof(r) && r.op == REP_READY)
			ready = true;
		usleep(2000 + (useconds_t)(rand_r(&seed) % 40000));
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		CHECK(ready);
		CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		while (read(pfd[0], &r, sizeof(r)) == sizeof(r)) {
			int i;

			if (r.op == REP_WRITE) {
				REQUIRE(live.n < CRASH_MAX);
				live.gen[live.n] = r.gen;
				live.unit[live.n] = r.unit;
				live.len[live.n++] = r.len;
				maxgen = r.gen > maxgen ? r.gen : maxgen;
				writes++;
			} else if (r.op == REP_FREE && (i = model_find(&live, r.gen)) >= 0) {
				model_del(&live, (unsigned)i);
				frees++;
			}
		}
		close(pfd[0]);

		/* Every block reported complete is back, byte-exact; at most one other change
		 * (the operation in flight when the kill came): a block written but not reported
		 * yet (gen past the last reported one), or one freed but not reported. */
		REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
		got.n = 0;
		CHECK(ssd_recover(s, on_crash_block, NULL, &got, &res) == 0);
		CHECK(res.dropped == 0);
		unsigned missing = 0, extra = 0;
		for (unsigned i = 0; i < live.n; i++) {
			int j = model_find(&got, live.gen[i]);

			if (j < 0)
				missing++;
			else
				CHECK(got.unit[j] == live.unit[i] && got.len[j] == live.len[i]);
		}
		for (unsigned j = 0; j < got.n; j++) {
			if (model_find(&live, got.gen[j]) < 0) {
				extra++;
				CHECK(got.gen[j] > maxgen && got.gen[j] >= base);
			}
			CHECK(ssd_verify(s, got.unit[j]) == 0);
			CHECK(check_block(s, got.unit[j], got.len[j], got.gen[j], 0));
		}
		CHECK(missing + extra <= 1);
		inflight_writes += extra;
		inflight_frees += missing;
		CHECK(ssd_check(s) == 0);
		ssd_close(s);
		live = got; /* what the next child starts from */
	}
	printf("     10 kills: %u writes and %u frees reported, %u blocks at the end; caught "
	       "in flight: %u sealed writes, %u cleared headers\n",
	       writes, frees, live.n, inflight_writes, inflight_frees);
	unlink(path);
}

/* ---- refusals ---- */

/* ssd_open of a new file in dir, which refuses O_DIRECT: 1 if refused as expected, 0 if the
 * filesystem took O_DIRECT, -1 on a wrong answer. */
static int odirect_refused(const char *dir)
{
	struct ssd_config cfg = {.size = 1 << 20, .create = true};
	char p[256];
	struct ssd *s;
	int ret;

	snprintf(p, sizeof(p), "%s/kvcachefs-test-ssd-odirect.%d", dir, (int)getpid());
	cfg.path = p;
	ret = ssd_open(&s, &cfg, err, sizeof(err));
	if (ret == 0) {
		ssd_close(s);
		unlink(p);
		return 0;
	}
	if (ret != -EINVAL || !strstr(err, p) || !strstr(err, "O_DIRECT") || access(p, F_OK) == 0) {
		fprintf(stderr, "%s: %d %s\n", p, ret, err);
		unlink(p);
		return -1;
	}
	printf("     %s\n", err);
	return 1;
}

static void test_odirect(void)
{
	char dir[] = "/var/tmp/kvcachefs-test-ramfs.XXXXXX";
	pid_t pid;
	int st, r;

	/* tmpfs is memory: refused whether or not this kernel takes O_DIRECT there (>= 6.6) */
	r = odirect_refused("/dev/shm");
	CHECK(r == 1);
	fflush(stdout);
	/* ramfs never supports O_DIRECT: mount one in a private mount namespace */
	REQUIRE(mkdtemp(dir));
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
		    mount("ramfs", dir, "ramfs", 0, NULL))
			_exit(77);
		r = odirect_refused(dir);
		fflush(stdout);
		_exit(r == 1 ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	rmdir(dir);
	CHECK(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 77));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		printf("     skipped the ramfs case: cannot mount here (needs CAP_SYS_ADMIN)\n");
}

/* Extents of fd from FIEMAP: how many, and how many are unwritten (preallocated only). -1 when
 * the filesystem has no FIEMAP. */
static int extents(int fd, unsigned *unwritten)
{
	enum { N = 512 };
	struct fiemap *fm = calloc(1, sizeof(*fm) + N * sizeof(struct fiemap_extent));
	int n = -1;

	*unwritten = 0;
	if (!fm)
		return -1;
	fm->fm_length = FIEMAP_MAX_OFFSET;
	fm->fm_extent_count = N;
	if (ioctl(fd, FS_IOC_FIEMAP, fm) == 0) {
		n = (int)fm->fm_mapped_extents;
		for (int i = 0; i < n; i++)
			*unwritten += !!(fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN);
	}
	free(fm);
	return n;
}

/* A new file's space: written zeroes where the device zeroes cheaply (no unwritten extent),
 * else preallocated; either way all of it is reserved and reads as zeros. */
static void test_new_file_space(void)
{
	uint64_t size = 64 << 20;
	struct ssd *s;
	struct stat st;
	unsigned unwritten;
	int fd, n;

	make_path("space");
	REQUIRE(open_file(&s, size) == 0);
	fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0);
	CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == size);
	CHECK((uint64_t)st.st_blocks * 512 >= size); /* reserved whole */
	n = extents(fd, &unwritten);
	if (ssd_zeroed(s)) {
		printf("     a new file: written zeroes (FALLOC_FL_WRITE_ZEROES), %d extents\n", n);
		CHECK(n < 0 || unwritten == 0);
	} else {
		printf(
		    "     a new file: preallocated, %d of %d extents unwritten (this filesystem or "
		    "device cannot write zeroes cheaply: FALLOC_FL_WRITE_ZEROES needs Linux "
		    "6.17 and unmap-zeroing)\n",
		    (int)unwritten, n);
	}
	close(fd);
	ssd_close(s);
	/* an existing file with content is never zeroed, only formatted */
	REQUIRE(open_file(&s, 0) == 0);
	CHECK(!ssd_zeroed(s));
	ssd_close(s);
	unlink(path);
}

static void test_missing(void)
{
	struct ssd_config cfg = {.path = "/dev/kvcachefs-test-no-such-device"};
	struct ssd *s;

	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, cfg.path) && strstr(err, "no such"));
	printf("     %s\n", err);
	cfg.path = "/var/tmp/kvcachefs-test-no-such-dir/ssd";
	cfg.size = 1 << 20;
	cfg.create = true;
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, cfg.path) != NULL);
	make_path("nosize");
	cfg.path = path;
	cfg.size = 0;
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -EINVAL);
	CHECK(access(path, F_OK) < 0);
	cfg.size = 8192;
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "too small") && access(path, F_OK) < 0); /* nothing left behind */
	cfg.path = "/var/tmp";
	cfg.size = 1 << 20;
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) < 0);
}

/* A loop device over a file stands in for a block device, when one can be set up. */
static void test_blockdev(void)
{
	struct ssd_config cfg = {0};
	struct ssd_recovery res;
	struct ssd *s, *s2;
	char dev[64];
	uint64_t u1, u2;
	int ctl, lfd = -1, ffd = -1, n;

	make_path("loop");
	ffd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	REQUIRE(ffd >= 0);
	REQUIRE(ftruncate(ffd, 8 << 20) == 0);
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	n = ctl >= 0 ? ioctl(ctl, LOOP_CTL_GET_FREE) : -1;
	if (n >= 0) {
		snprintf(dev, sizeof(dev), "/dev/loop%d", n);
		lfd = open(dev, O_RDWR | O_CLOEXEC);
		if (lfd >= 0 && ioctl(lfd, LOOP_SET_FD, ffd) < 0) {
			close(lfd);
			lfd = -1;
		}
	}
	if (ctl >= 0)
		close(ctl);
	close(ffd);
	if (lfd < 0) {
		printf("     skipped: no loop device can be set up here\n");
		unlink(path);
		return;
	}
	cfg.path = dev;
	if (ssd_open(&s, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		CHECK(0);
		goto out;
	}
	CHECK(ssd_fresh(s) && ssd_capacity(s) > (8u << 20) * 95 / 100);
	CHECK(ssd_open(&s2, &cfg, err, sizeof(err)) == -EBUSY); /* O_EXCL */
	CHECK(put_block(s, 100000, 1, 1, &u1) == 0);
	CHECK(put_block(s, 1 << 20, 2, 0, &u2) == 0);
	ssd_close(s);
	REQUIRE(ssd_open(&s, &cfg, err, sizeof(err)) == 0);
	CHECK(!ssd_fresh(s));
	CHECK(ssd_recover(s, NULL, NULL, NULL, &res) == 0 && res.recovered == 2);
	CHECK(check_block(s, u1, 100000, 1, 3) && check_block(s, u2, 1 << 20, 2, 0));
	ssd_close(s);
	cfg.size = 16 << 20; /* larger than the device */
	CHECK(ssd_open(&s, &cfg, err, sizeof(err)) == -EINVAL);
out:
	ioctl(lfd, LOOP_CLR_FD, 0);
	close(lfd);
	unlink(path);
}

/* ---- KVC_SSD_BENCH=1 ---- */

struct bench_arg {
	struct ssd *s;
	uint64_t size;
	unsigned nblocks;
	uint64_t *units;
	uint8_t *buf;
	bool write;
	unsigned batch;
};

static void *bench_main(void *p)
{
	struct bench_arg *a = p;
	struct ssd_meta m[8];
	struct ssd_write w[8];

	for (unsigned j = 0; j < a->batch; j++)
		set_meta(&m[j], "bench", "x", 1);
	for (unsigned i = 0; i < a->nblocks; i += a->batch) {
		if (a->write) {
			for (unsigned j = 0; j < a->batch; j++) {
				if (ssd_alloc(a->s, a->size, &a->units[i + j]))
					abort();
				w[j] = (struct ssd_write){.unit = a->units[i + j],
							  .meta = &m[j],
							  .payload = a->buf,
							  .len = a->size};
			}
			if (ssd_write_blocks(a->s, w, a->batch))
				abort();
		} else {
			for (unsigned j = 0; j < a->batch; j++)
				if (ssd_read(a->s, a->units[i + j], 0, a->buf, a->size))
					abort();
		}
	}
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench(void)
{
	static const uint64_t sizes[] = {2 << 20, 256 << 10};
	struct ssd *s;

	make_path("bench");
	REQUIRE(open_file(&s, 2ull << 30) == 0);
	static const unsigned conf[][2] = {{1, 1}, {4, 1}, {1, 8}, {4, 8}}; /* threads, batch */
	for (unsigned z = 0; z < 2; z++) {
		for (unsigned c = 0; c < 4; c++) {
			uint64_t total = 1ull << 30, size = sizes[z];
			unsigned nt = conf[c][0], batch = conf[c][1];
			unsigned per = (unsigned)(total / size / nt) / batch * batch;
			struct bench_arg a[4];
			pthread_t t[4];
			double t0, tw, tr;

			for (unsigned i = 0; i < nt; i++) {
				a[i] = (struct bench_arg){.s = s,
							  .size = size,
							  .nblocks = per,
							  .write = true,
							  .batch = batch};
				a[i].units = calloc(per, sizeof(uint64_t));
				REQUIRE(posix_memalign((void **)&a[i].buf, 4096, size) == 0);
				fill(a[i].buf, size, i);
			}
			t0 = now_s();
			for (unsigned i = 0; i < nt; i++)
				pthread_create(&t[i], NULL, bench_main, &a[i]);
			for (unsigned i = 0; i < nt; i++)
				pthread_join(t[i], NULL);
			tw = now_s() - t0;
			for (unsigned i = 0; i < nt; i++)
				a[i].write = false;
			t0 = now_s();
			for (unsigned i = 0; i < nt; i++)
				pthread_create(&t[i], NULL, bench_main, &a[i]);
			for (unsigned i = 0; i < nt; i++)
				pthread_join(t[i], NULL);
			tr = now_s() - t0;
			printf("     %4llu KiB, %u thread(s), batches of %u: write %.2f GB/s, read "
			       "%.2f GB/s\n",
			       (unsigned long long)(size >> 10), nt, batch,
			       (double)per * nt * size / tw / 1e9,
			       (double)per * nt * size / tr / 1e9);
			for (unsigned i = 0; i < nt; i++) {
				for (unsigned k = 0; k < per; k++)
					ssd_free(s, a[i].units[k]);
				free(a[i].units);
				free(a[i].buf);
			}
		}
	}
	ssd_close(s);
	unlink(path);
}

int main(void)
{
	RUN(test_roundtrip);
	RUN(test_enospc);
	RUN(test_batch);
	RUN(test_threads);
	RUN(test_recover);
	RUN(test_corrupt);
	RUN(test_crash);
	RUN(test_odirect);
	RUN(test_new_file_space);
	RUN(test_missing);
	RUN(test_blockdev);
	if (getenv("KVC_SSD_BENCH"))
		RUN(bench);
	return check_summary();
}
