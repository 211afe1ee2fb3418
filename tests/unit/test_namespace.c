/*
 * Unit tests of meta/namespace.c without FUSE: the directory tree, the block life cycle,
 * headers and checksums, the LRU order of eviction, pinning by open handles, ENOSPC, and
 * restarts (ns_recover): what a stopped namespace left in the pool object comes back (names,
 * sizes, modes, owners, bytes) and nothing else does (unlinked, replaced, being written);
 * damaged records and payloads are dropped; with an SSD tier (a file under /var/tmp), blocks
 * demoted to it read back exact and come back from it after a restart.
 * The evictor thread is kept asleep (high watermark 100%) so eviction here is synchronous
 * and deterministic, except in the SSD tests, where a writer waits for it to demote; the
 * watermark thread is otherwise exercised by the integration tests.
 */
#include "engine/pool.h"
#include "engine/ssd.h"
#include "meta/namespace.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1
#endif

static struct pool *pool;
static struct ns *ns;
static char path[64];
static int vanished;

static void on_vanish(void *arg, uint64_t parent, const char *name)
{
	(void)arg, (void)parent, (void)name;
	vanished++;
}

static int setup(uint64_t pool_size, uint64_t max_block, unsigned high, unsigned low)
{
	snprintf(path, sizeof(path), "/dev/shm/kvcachefs-test-ns.%d", (int)getpid());
	if (pool_create(&pool, path, pool_size, 0600) < 0)
		return -1;
	vanished = 0;
	return ns_create(&ns, pool,
			 &(struct ns_config){.max_block_size = max_block,
					     .evict_high = high,
					     .evict_low = low,
					     .vanish = on_vanish});
}

static void teardown(void)
{
	ns_destroy(ns);
	pool_destroy(pool, true);
	ns = NULL;
	pool = NULL;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 12));
}

/* Create, write and seal a block; returns its inode number or 0. */
static uint64_t put(uint64_t dir, const char *name, size_t len, unsigned seed)
{
	struct ns_handle *h;
	struct ns_attr a;
	uint8_t *buf = malloc(len ? len : 1);
	ssize_t n;

	fill(buf, len, seed);
	if (ns_create_block(ns, dir, name, 0644, 0, 0, &a, &h) < 0) {
		free(buf);
		return 0;
	}
	n = ns_write(h, 0, buf, len);
	free(buf);
	if (n != (ssize_t)len || ns_seal(h) < 0) {
		ns_release(h);
		return 0;
	}
	ns_release(h);
	return a.ino;
}

/* Does block ino read back as fill(len, seed)? */
static bool verify(uint64_t ino, size_t len, unsigned seed)
{
	struct ns_handle *h;
	const void *p;
	uint8_t *want = malloc(len ? len : 1);
	bool ok;

	fill(want, len, seed);
	if (ns_open(ns, ino, O_RDONLY, &h) < 0) {
		free(want);
		return false;
	}
	/* an empty block's *p is the NULL buffer passed in: memcmp may not see it */
	ok = ns_read(h, 0, len + 100, NULL, &p) == (ssize_t)len &&
	     (len == 0 || memcmp(p, want, len) == 0);
	ns_release(h);
	free(want);
	return ok;
}

/* The page of block records (engine/pool.h, struct pool_rec) the first block creates. */
#define RECS 4096

static void test_dirs(void)
{
	struct ns_attr a, b, c;
	struct ns_dir d;

	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "a", 0755, 0, 0, &a) == 0);
	REQUIRE(ns_mkdir(ns, a.ino, "b", 0755, 0, 0, &b) == 0);
	CHECK(ns_mkdir(ns, NS_ROOT_INO, "a", 0755, 0, 0, &c) == -EEXIST);
	CHECK(ns_rmdir(ns, NS_ROOT_INO, "a") == -ENOTEMPTY);
	CHECK(ns_rename(ns, NS_ROOT_INO, "a", b.ino, "x", 0) == -EINVAL); /* into itself */
	CHECK(ns_rename(ns, NS_ROOT_INO, "a", NS_ROOT_INO, "z", 0) == 0);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "a", &c) == -ENOENT);
	REQUIRE(ns_lookup(ns, NS_ROOT_INO, "z", &c) == 0);
	CHECK(c.ino == a.ino && c.nlink == 3);
	REQUIRE(ns_opendir(ns, a.ino, &d) == 0);
	CHECK(d.count == 3 && !strcmp(d.ents[2].name, "b"));
	ns_dir_free(&d);
	CHECK(ns_rmdir(ns, a.ino, "b") == 0);
	CHECK(ns_rmdir(ns, NS_ROOT_INO, "z") == 0);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "z", &c) == -ENOENT);
	CHECK(ns_mkdir(ns, NS_ROOT_INO, "", 0755, 0, 0, &c) == -EINVAL);
	char longname[300];
	memset(longname, 'n', 299);
	longname[299] = '\0';
	CHECK(ns_mkdir(ns, NS_ROOT_INO, longname, 0755, 0, 0, &c) == -ENAMETOOLONG);
	teardown();
}

static void test_block_lifecycle(void)
{
	struct ns_handle *w, *r, *r2;
	struct ns_attr a, b;
	struct ns_dir d;
	uint8_t buf[10000], out[10000];
	const void *p;

	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	fill(buf, sizeof(buf), 7);
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "blk", 0644, 0, 0, &a, &w) == 0);
	CHECK(a.writing);
	CHECK(ns_create_block(ns, NS_ROOT_INO, "blk", 0644, 0, 0, &b, &r) == -EBUSY);
	CHECK(ns_open(ns, a.ino, O_RDONLY, &r) == -EBUSY);
	CHECK(ns_open(ns, a.ino, O_WRONLY, &r) == -EBUSY);
	/* out-of-order writes with a hole */
	CHECK(ns_write(w, 5000, buf + 5000, 5000) == 5000);
	CHECK(ns_write(w, 0, buf, 3000) == 3000);
	CHECK(ns_write(w, (1 << 20) - 10, buf, 11) == -EFBIG);
	REQUIRE(ns_opendir(ns, NS_ROOT_INO, &d) == 0);
	CHECK(d.count == 2); /* not listed before the seal */
	ns_dir_free(&d);
	CHECK(ns_read(w, 0, sizeof(out), out, &p) == 10000); /* the writer reads its own bytes */
	CHECK(memcmp(p, buf, 3000) == 0 &&
	      memcmp((const uint8_t *)p + 5000, buf + 5000, 5000) == 0);
	for (int i = 3000; i < 5000; i++)
		CHECK(((const uint8_t *)p)[i] == 0);
	CHECK(ns_write(w, 3000, buf + 3000, 2000) == 2000);
	CHECK(ns_seal(w) == 0);
	CHECK(ns_write(w, 0, buf, 1) == -EPERM);
	ns_release(w);

	REQUIRE(ns_getattr(ns, a.ino, &b) == 0);
	CHECK(b.size == 10000 && !b.writing && b.alloc_bytes == 3 * 4096);
	CHECK(ns_open(ns, a.ino, O_WRONLY, &r) == -EPERM);
	CHECK(ns_open(ns, a.ino, O_RDONLY | O_TRUNC, &r) == -EPERM);
	CHECK(ns_setattr(ns, a.ino, NULL, NS_SET_SIZE, &(struct ns_attr){.size = 0}, &b) == -EPERM);
	CHECK(ns_create_block(ns, NS_ROOT_INO, "blk", 0644, 0, 0, &b, &r) == -EEXIST);
	REQUIRE(ns_open(ns, a.ino, O_RDONLY, &r) == 0);
	REQUIRE(ns_open(ns, a.ino, O_RDONLY, &r2) == 0);
	CHECK(ns_read(r, 9000, 5000, NULL, &p) == 1000 && memcmp(p, buf + 9000, 1000) == 0);
	CHECK(ns_read(r, 10000, 10, NULL, &p) == 0);
	struct ns_block_info bi;
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(bi.sealed && bi.refs == 2);
	ns_release(r2);
	ns_release(r);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(bi.refs == 0);
	CHECK(verify(a.ino, 0, 0) == false); /* wrong length */
	teardown();
}

static void test_header_and_checksum(void)
{
	struct ns_attr a;
	struct ns_handle *h;
	uint8_t buf[20000];

	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	fill(buf, sizeof(buf), 3);
	/* sequential: running checksum */
	uint64_t ino = put(NS_ROOT_INO, "seq", sizeof(buf), 3);
	REQUIRE(ino);
	/* out of order: checksum at seal */
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "ooo", 0644, 0, 0, &a, &h) == 0);
	CHECK(ns_write(h, 10000, buf + 10000, 10000) == 10000);
	CHECK(ns_write(h, 0, buf, 10000) == 10000);
	CHECK(ns_seal(h) == 0);
	ns_release(h);
	int sealed = 0;
	for (uint64_t pg = 0; pg < pool->npages; pg++) {
		struct pool_hdr *hd = pool_hdr(pool, pg);

		if (hd->magic != POOL_HDR_MAGIC || (hd->flags & POOL_HDR_RECS))
			continue; /* a page of records (what a restart reads) */
		CHECK(hd->flags & POOL_HDR_SEALED);
		CHECK(hd->length == sizeof(buf));
		CHECK(hd->npages == 5);
		CHECK(hd->checksum == XXH3_64bits(pool_page_addr(pool, pg), hd->length));
		CHECK(hd->checksum == XXH3_64bits(buf, sizeof(buf)));
		sealed++;
	}
	CHECK(sealed == 2);
	teardown();
}

static void test_unlink_and_replace_keep_readers(void)
{
	struct ns_handle *r;
	struct ns_attr a;
	struct kvcachefs_status st;
	const void *p;
	uint8_t want[8192];

	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	uint64_t old = put(NS_ROOT_INO, "final", 8192, 1);
	REQUIRE(old);
	REQUIRE(put(NS_ROOT_INO, "tmp", 8192, 2));
	REQUIRE(ns_open(ns, old, O_RDONLY, &r) == 0);
	CHECK(ns_rename(ns, NS_ROOT_INO, "tmp", NS_ROOT_INO, "final", RENAME_NOREPLACE) == -EEXIST);
	CHECK(ns_rename(ns, NS_ROOT_INO, "tmp", NS_ROOT_INO, "final", 2 /* EXCHANGE */) == -EINVAL);
	CHECK(ns_rename(ns, NS_ROOT_INO, "tmp", NS_ROOT_INO, "final", 0) == 0);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "tmp", &a) == -ENOENT);
	REQUIRE(ns_lookup(ns, NS_ROOT_INO, "final", &a) == 0);
	CHECK(a.ino != old);
	CHECK(verify(a.ino, 8192, 2));
	fill(want, sizeof(want), 1);
	CHECK(ns_read(r, 0, 8192, NULL, &p) == 8192 && memcmp(p, want, 8192) == 0);
	ns_status(ns, &st);
	CHECK(st.used == 4 * 4096 + RECS && st.blocks == 1);
	ns_release(r); /* last close of the replaced block frees it */
	ns_status(ns, &st);
	CHECK(st.used == 2 * 4096 + RECS);

	REQUIRE(ns_open(ns, a.ino, O_RDONLY, &r) == 0);
	CHECK(ns_unlink(ns, NS_ROOT_INO, "final") == 0);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "final", &a) == -ENOENT);
	fill(want, sizeof(want), 2);
	CHECK(ns_read(r, 0, 8192, NULL, &p) == 8192 && memcmp(p, want, 8192) == 0);
	ns_release(r);
	ns_status(ns, &st);
	CHECK(st.used == 0 && st.blocks == 0); /* the empty page of records too */
	teardown();
}

static void test_eviction_lru_and_pins(void)
{
	struct kvcachefs_status st;
	struct ns_handle *pin, *r;
	struct ns_attr a;
	uint64_t ino[64];
	char name[16];
	int n;

	/* 4 MiB pool: about 990 pages; blocks of 64 pages fill it after ~15 */
	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	for (n = 0; n < 12; n++) {
		snprintf(name, sizeof(name), "b%d", n);
		ino[n] = put(NS_ROOT_INO, name, 64 * 4096, (unsigned)n);
		REQUIRE(ino[n]);
	}
	REQUIRE(ns_open(ns, ino[0], O_RDONLY, &pin) == 0); /* b0: oldest, but pinned */
	REQUIRE(ns_open(ns, ino[1], O_RDONLY, &r) == 0);   /* b1: used again: most recent */
	ns_release(r);
	ns_status(ns, &st);
	CHECK(st.evictions == 0);
	for (; n < 20; n++) { /* force synchronous eviction by allocation */
		snprintf(name, sizeof(name), "b%d", n);
		ino[n] = put(NS_ROOT_INO, name, 64 * 4096, (unsigned)n);
		REQUIRE(ino[n]);
	}
	ns_status(ns, &st);
	CHECK(st.evictions > 0);
	CHECK(vanished == (int)st.evictions);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "b2", &a) == -ENOENT); /* oldest unpinned: gone first */
	CHECK(ns_lookup(ns, NS_ROOT_INO, "b0", &a) == 0);	/* pinned */
	CHECK(ns_lookup(ns, NS_ROOT_INO, "b1", &a) == 0);	/* recently used */
	CHECK(ns_getattr(ns, ino[2], &a) == -ENOENT);
	CHECK(ns_open(ns, ino[2], O_RDONLY, &r) == -ENOENT);
	CHECK(verify(ino[19], 64 * 4096, 19));
	ns_release(pin);
	/* watermark eviction down to 50% */
	ns_evict(ns, 50);
	ns_status(ns, &st);
	CHECK(st.used * 100 <= st.capacity * 50);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "b19", &a) == 0); /* newest survive */
	CHECK(verify(ino[19], 64 * 4096, 19));
	teardown();
}

static void test_enospc(void)
{
	struct kvcachefs_status st;
	struct ns_handle *h, *pins[8];
	struct ns_attr a;
	uint8_t *buf = calloc(1, 8 << 20);
	char name[16];

	REQUIRE(buf);
	REQUIRE(setup(4 << 20, 16 << 20, 100, 50) == 0);
	uint64_t keep = put(NS_ROOT_INO, "keep", 4096, 9);
	REQUIRE(keep);
	/* one block larger than the pool */
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "huge", 0644, 0, 0, &a, &h) == 0);
	CHECK(ns_write(h, 0, buf, 1 << 20) == 1 << 20);
	CHECK(ns_write(h, 1 << 20, buf, 4 << 20) == -ENOSPC);
	CHECK(ns_write(h, 5 << 20, buf, 1) == -ENOSPC); /* doomed */
	CHECK(ns_seal(h) == -ENOSPC);
	ns_release(h);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "huge", &a) == -ENOENT); /* discarded */
	CHECK(verify(keep, 4096, 9));				  /* nothing else harmed */
	ns_status(ns, &st);
	CHECK(st.enospc == 1);
	CHECK(st.used == 4096 + RECS);
	CHECK(st.writing == 0);
	/* pool full of pinned blocks: nothing may be evicted */
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		uint64_t ino = put(NS_ROOT_INO, name, 1 << 20, (unsigned)i);
		REQUIRE(ino);
		REQUIRE(ns_open(ns, ino, O_RDONLY, &pins[i]) == 0);
	}
	REQUIRE(ns_open(ns, keep, O_RDONLY, &pins[3]) == 0);
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "late", 0644, 0, 0, &a, &h) == 0);
	CHECK(ns_write(h, 0, buf, 1 << 20) == -ENOSPC);
	ns_release(h);
	for (int i = 0; i < 4; i++)
		ns_release(pins[i]);
	CHECK(verify(keep, 4096, 9));
	CHECK(put(NS_ROOT_INO, "after", 1 << 20, 5) != 0); /* evicts now that nothing is pinned */
	free(buf);
	teardown();
}

static void test_inode_numbers_never_reused(void)
{
	uint64_t prev = 0;
	struct ns_attr a;

	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	for (int i = 0; i < 100; i++) {
		uint64_t ino = put(NS_ROOT_INO, "same", 10, (unsigned)i);

		REQUIRE(ino);
		CHECK(ino > prev);
		prev = ino;
		REQUIRE(ns_lookup(ns, NS_ROOT_INO, "same", &a) == 0);
		ns_forget(ns, a.ino, 2); /* create's reference and this lookup's */
		CHECK(ns_unlink(ns, NS_ROOT_INO, "same") == 0);
	}
	teardown();
}

static void test_truncate_through_writer(void)
{
	struct ns_handle *h;
	struct ns_attr a, out;
	const void *p;
	uint8_t buf[100];

	REQUIRE(setup(4 << 20, 1 << 20, 100, 50) == 0);
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "t", 0644, 0, 0, &a, &h) == 0);
	memset(buf, 0xee, sizeof(buf));
	CHECK(ns_write(h, 0, buf, 100) == 100);
	CHECK(ns_setattr(ns, a.ino, NULL, NS_SET_SIZE, &(struct ns_attr){.size = 0}, &out) ==
	      -EBUSY);
	CHECK(ns_setattr(ns, a.ino, h, NS_SET_SIZE, &(struct ns_attr){.size = 2 << 20}, &out) ==
	      -EFBIG);
	REQUIRE(ns_setattr(ns, a.ino, h, NS_SET_SIZE, &(struct ns_attr){.size = 50}, &out) == 0);
	REQUIRE(ns_setattr(ns, a.ino, h, NS_SET_SIZE, &(struct ns_attr){.size = 8000}, &out) == 0);
	CHECK(out.size == 8000);
	CHECK(ns_seal(h) == 0);
	ns_release(h);
	REQUIRE(ns_open(ns, a.ino, O_RDONLY, &h) == 0);
	REQUIRE(ns_read(h, 0, 8000, NULL, &p) == 8000);
	CHECK(((const uint8_t *)p)[49] == 0xee && ((const uint8_t *)p)[50] == 0 &&
	      ((const uint8_t *)p)[7999] == 0);
	ns_release(h);
	teardown();
}

static const char *names_of(void *arg, size_t k, char *buf)
{
	const char *const *names = arg;

	strcpy(buf, names[k]);
	return names[k][0] == '!' ? NULL : buf;
}

static void test_lookup_prefix(void)
{
	const char *names[] = {"a", "b", "c", "missing", "e"};
	const char *bad[] = {"a", "!"};
	struct ns_handle *w;
	struct ns_attr a;

	REQUIRE(setup(8 << 20, 1 << 20, 100, 99) == 0);
	CHECK(put(NS_ROOT_INO, "a", 10, 1) && put(NS_ROOT_INO, "b", 10, 2));
	CHECK(put(NS_ROOT_INO, "c", 0, 3) && put(NS_ROOT_INO, "e", 10, 4));
	CHECK(ns_lookup_prefix(ns, NS_ROOT_INO, 5, names_of, names) == 3);
	CHECK(ns_lookup_prefix(ns, NS_ROOT_INO, 2, names_of, names) == 2);
	CHECK(ns_lookup_prefix(ns, NS_ROOT_INO, 0, names_of, names) == 0);
	CHECK(ns_lookup_prefix(ns, NS_ROOT_INO, 2, names_of, bad) == -EINVAL);
	CHECK(ns_lookup_prefix(ns, 12345, 2, names_of, names) == -ENOENT);
	/* A block being written is not part of the prefix. */
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "missing", 0644, 0, 0, &a, &w) == 0);
	CHECK(ns_lookup_prefix(ns, NS_ROOT_INO, 5, names_of, names) == 3);
	ns_release(w);
	CHECK(ns_lookup_prefix(ns, NS_ROOT_INO, 5, names_of, names) == 5);
	teardown();
}

static void test_reserve_commit_abort(void)
{
	struct ns_handle *r, *r2, *pin;
	struct kvcachefs_status st;
	struct ns_loc loc, ploc;
	struct ns_attr a;
	bool replaced = true;
	uint8_t buf[10000];
	uint64_t used0;

	REQUIRE(setup(8 << 20, 1 << 20, 100, 99) == 0);
	ns_status(ns, &st);
	used0 = st.used;
	CHECK(ns_reserve(ns, NS_ROOT_INO, "x", (1 << 20) + 1, 0644, 0, 0, &r) == -EFBIG);
	CHECK(ns_reserve(ns, NS_ROOT_INO, "a/b", 10, 0644, 0, 0, &r) == -EINVAL);
	CHECK(ns_reserve(ns, NS_ROOT_INO, "", 10, 0644, 0, 0, &r) == -EINVAL);
	REQUIRE(ns_reserve(ns, NS_ROOT_INO, "x", sizeof(buf), 0644, 0, 0, &r) == 0);
	/* Invisible until committed, counted as being written. */
	CHECK(ns_lookup(ns, NS_ROOT_INO, "x", &a) == -ENOENT);
	ns_status(ns, &st);
	CHECK(st.writing == 1 && st.used > used0);
	fill(buf, sizeof(buf), 7);
	memcpy(ns_handle_data(r), buf, sizeof(buf));
	CHECK(strcmp(ns_handle_name(r), "x") == 0);
	REQUIRE(ns_commit(r, 0, NULL, &replaced, &loc) == 0);
	CHECK(!replaced && loc.length == sizeof(buf));
	CHECK(loc.checksum == XXH3_64bits(buf, sizeof(buf)));
	CHECK(memcmp((uint8_t *)pool->base + loc.offset, buf, sizeof(buf)) == 0);
	REQUIRE(ns_lookup(ns, NS_ROOT_INO, "x", &a) == 0);
	CHECK(a.size == sizeof(buf));
	ns_forget(ns, a.ino, 1);

	/* Pin the block, then replace it by a commit: the pin keeps the old bytes. */
	REQUIRE(ns_open_name(ns, NS_ROOT_INO, "x", &pin) == 0);
	ns_handle_loc(pin, &ploc);
	REQUIRE(ns_reserve(ns, NS_ROOT_INO, "x", 5, 0644, 0, 0, &r) == 0);
	memcpy(ns_handle_data(r), "hello", 5);
	CHECK(ns_commit(r, RENAME_NOREPLACE, NULL, &replaced, &loc) == -EEXIST);
	/* A failed commit leaves the reservation: commit it again, replacing. */
	REQUIRE(ns_commit(r, 0, NULL, &replaced, &loc) == 0);
	CHECK(replaced && loc.length == 5);
	CHECK(memcmp((uint8_t *)pool->base + ploc.offset, buf, sizeof(buf)) == 0);
	ns_release(pin);

	/* Abort frees the space and publishes nothing. */
	ns_status(ns, &st);
	used0 = st.used;
	REQUIRE(ns_reserve(ns, NS_ROOT_INO, "y", 100000, 0644, 0, 0, &r) == 0);
	REQUIRE(ns_reserve(ns, NS_ROOT_INO, "z", 0, 0644, 0, 0, &r2) == 0);
	ns_abort(r);
	ns_status(ns, &st);
	CHECK(st.used == used0 && st.writing == 1);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "y", &a) == -ENOENT);
	/* An empty block commits too. */
	REQUIRE(ns_commit(r2, 0, NULL, &replaced, &loc) == 0);
	CHECK(loc.length == 0);
	ns_status(ns, &st);
	CHECK(st.writing == 0 && st.blocks == 2);
	teardown();
}

static void test_commit_into_removed_dir(void)
{
	struct ns_handle *r;
	struct ns_attr a;
	struct ns_loc loc;
	bool replaced;
	uint64_t sum = 42;

	REQUIRE(setup(8 << 20, 1 << 20, 100, 99) == 0);
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "d", 0755, 0, 0, &a) == 0);
	REQUIRE(ns_reserve(ns, a.ino, "x", 100, 0644, 0, 0, &r) == 0);
	/* The reservation is invisible: the directory is empty and may go. */
	CHECK(ns_rmdir(ns, NS_ROOT_INO, "d") == 0);
	CHECK(ns_commit(r, 0, &sum, &replaced, &loc) == -ENOENT);
	ns_abort(r);
	ns_forget(ns, a.ino, 1);
	teardown();
}

static void test_pins_survive(void)
{
	struct ns_handle *pin, *w;
	struct ns_loc loc;
	struct ns_attr a;
	uint8_t buf[8192];

	REQUIRE(setup(1 << 20, 1 << 20, 100, 99) == 0);
	REQUIRE(put(NS_ROOT_INO, "p", sizeof(buf), 9));
	REQUIRE(ns_open_name(ns, NS_ROOT_INO, "p", &pin) == 0);
	CHECK(ns_open_name(ns, NS_ROOT_INO, "nope", &w) == -ENOENT);
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "w", 0644, 0, 0, &a, &w) == 0);
	CHECK(ns_open_name(ns, NS_ROOT_INO, "w", &w) == -EBUSY);
	ns_handle_loc(pin, &loc);
	/* Evicting everything, then unlinking, leaves the pinned bytes alone. */
	ns_evict(ns, 0);
	CHECK(ns_unlink(ns, NS_ROOT_INO, "p") == 0);
	fill(buf, sizeof(buf), 9);
	CHECK(memcmp((uint8_t *)pool->base + loc.offset, buf, sizeof(buf)) == 0);
	ns_release(pin);
	teardown();
}

static void test_locate_batch(void)
{
	const char *names[] = {"a", "b", "missing", "w", "d"};
	struct ns_loc locs[5];
	struct ns_handle *w;
	struct ns_attr a;
	int errs[5];

	REQUIRE(setup(1 << 20, 1 << 20, 100, 99) == 0);
	REQUIRE(put(NS_ROOT_INO, "a", 8192, 1) && put(NS_ROOT_INO, "b", 8192, 2));
	REQUIRE(put(NS_ROOT_INO, "c", 8192, 3));
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "d", 0755, 0, 0, &a) == 0);
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "w", 0644, 0, 0, &a, &w) == 0);
	REQUIRE(ns_locate_batch(ns, NS_ROOT_INO, 5, names_of, names, locs, errs) == 0);
	CHECK(errs[0] == 0 && errs[1] == 0 && errs[2] == ENOENT && errs[3] == EBUSY &&
	      errs[4] == EISDIR);
	CHECK(locs[0].length == 8192 && locs[0].offset != locs[1].offset);
	ns_flush(w); /* closed by its writer: the seal is imminent */
	REQUIRE(ns_locate_batch(ns, NS_ROOT_INO, 5, names_of, names, locs, errs) == 0);
	CHECK(errs[3] == EAGAIN);
	ns_release(w);
	/* "a" is the oldest but was just read: the second chance evicts "b" first, then "c". */
	names[0] = "a";
	REQUIRE(ns_locate_batch(ns, NS_ROOT_INO, 1, names_of, names, locs, errs) == 0);
	CHECK(ns_evict(ns, 0) >= 3);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "a", &a) == -ENOENT);
	teardown();
	/* Three blocks of a quarter of the pool; evicting down to 60% takes exactly one. */
	REQUIRE(setup(1 << 20, 1 << 20, 100, 99) == 0);
	REQUIRE(put(NS_ROOT_INO, "a", 256 << 10, 1) && put(NS_ROOT_INO, "b", 256 << 10, 2));
	REQUIRE(put(NS_ROOT_INO, "c", 256 << 10, 3));
	REQUIRE(ns_locate_batch(ns, NS_ROOT_INO, 1, names_of, names, locs, errs) == 0);
	CHECK(ns_evict(ns, 60) == 1);
	CHECK(ns_lookup(ns, NS_ROOT_INO, "b", &a) == -ENOENT);
	REQUIRE(ns_lookup(ns, NS_ROOT_INO, "a", &a) == 0);
	ns_forget(ns, a.ino, 1);
	teardown();
}

static void test_paths(void)
{
	struct ns_attr a, b;
	char path[64];

	REQUIRE(setup(1 << 20, 1 << 20, 100, 99) == 0);
	CHECK(ns_path(ns, NS_ROOT_INO, path, sizeof(path)) == 0 && !strcmp(path, ""));
	CHECK(ns_mkdir_path(ns, "a/b/c", 0755) == 0);
	CHECK(ns_mkdir_path(ns, "a/b/c", 0755) == 0); /* existing: fine */
	REQUIRE(ns_lookup(ns, NS_ROOT_INO, "a", &a) == 0);
	REQUIRE(ns_lookup(ns, a.ino, "b", &b) == 0);
	CHECK(ns_path(ns, b.ino, path, sizeof(path)) == 0 && !strcmp(path, "a/b"));
	CHECK(ns_path(ns, b.ino, path, 3) == -ENAMETOOLONG);
	CHECK(ns_mkdir_path(ns, "a//x", 0755) == -EINVAL);
	REQUIRE(put(b.ino, "blk", 10, 1));
	CHECK(ns_mkdir_path(ns, "a/b/blk/x", 0755) == -ENOTDIR);
	CHECK(ns_rmdir_path(ns, "a/b") == -ENOTEMPTY);
	CHECK(ns_rmdir_path(ns, "a/b/c") == 0);
	CHECK(ns_rmdir_path(ns, "a/b/c") == -ENOENT);
	CHECK(ns_rmdir_path(ns, "") == -EBUSY);
	CHECK(vanished == 1); /* the kernel is told about the removed directory */
	CHECK(ns_unlink(ns, b.ino, "blk") == 0);
	CHECK(ns_rmdir_path(ns, "a/b") == 0);
	CHECK(ns_path(ns, b.ino, path, sizeof(path)) == -ENOENT);
	ns_forget(ns, b.ino, 1);
	ns_forget(ns, a.ino, 1);
	teardown();
}

/* ---- restarts: the pool object (and the SSD tier) outlive the namespace ------------------ */

static struct ssd *ssd;
static char ssd_path[128];
static int logged;

static void on_log(void *arg, int level, const char *msg)
{
	(void)arg, (void)level, (void)msg;
	logged++;
}

/* Open the SSD device at ssd_path over the current pool (64 MiB, created when missing). */
static int open_ssd(void)
{
	char err[512];
	int ret = ssd_open(&ssd,
			   &(struct ssd_config){.path = ssd_path,
						.size = 64 << 20,
						.create = true,
						.mem = pool->base,
						.mem_len = pool->size},
			   err, sizeof(err));

	if (ret)
		printf("     ssd_open: %d %s\n", ret, err);
	return ret;
}

/* What a daemon does at start: open the pool object (kept unless fresh), the SSD device
 * (with_ssd), create the namespace and recover what an earlier one left. */
static int start(uint64_t pool_size, bool fresh, bool with_ssd, struct ns_recovery *r)
{
	uint64_t old = 0;
	int ret;

	snprintf(path, sizeof(path), "/dev/shm/kvcachefs-test-ns.%d", (int)getpid());
	ret = pool_open(&pool, path, pool_size, 0600, fresh, &old);
	if (ret)
		return ret;
	ssd = NULL;
	if (with_ssd && (ret = open_ssd()) < 0) {
		pool_destroy(pool, true);
		pool = NULL;
		return ret;
	}
	vanished = 0;
	logged = 0;
	ret = ns_create(&ns, pool,
			&(struct ns_config){.max_block_size = 1 << 20,
					    .evict_high = with_ssd ? 90 : 100,
					    .evict_low = 50,
					    .vanish = on_vanish,
					    .ssd = with_ssd ? &ssd : NULL,
					    .nssd = with_ssd ? 1 : 0,
					    .log = on_log});
	if (ret)
		return ret;
	return ns_recover(ns, r);
}

/* What a killed daemon leaves: the pool object and the SSD device as they are. Handles still
 * open (a writer, a reader) just go away. */
static void stop(void)
{
	ns_destroy(ns);
	ns = NULL;
	if (ssd)
		ssd_close(ssd);
	ssd = NULL;
	pool_destroy(pool, false);
	pool = NULL;
}

/* Reopen the pool object stop() left without a namespace (to damage it); 0 when kept. */
static int reopen(uint64_t pool_size)
{
	uint64_t old = 0;
	int ret = pool_open(&pool, path, pool_size, 0600, false, &old);

	if (ret == 0 && !pool->reopened)
		ret = -ESTALE;
	return ret;
}

/* The rest of start() after reopen(). */
static int recover(struct ns_recovery *r)
{
	int ret;

	vanished = 0;
	logged = 0;
	ret = ns_create(&ns, pool,
			&(struct ns_config){.max_block_size = 1 << 20,
					    .evict_high = 100,
					    .evict_low = 50,
					    .vanish = on_vanish,
					    .log = on_log});
	return ret ? ret : ns_recover(ns, r);
}

/* The attributes of name in parent, without keeping a kernel reference. */
static int get(uint64_t parent, const char *name, struct ns_attr *a)
{
	int ret = ns_lookup(ns, parent, name, a);

	if (ret == 0)
		ns_forget(ns, a->ino, 1);
	return ret;
}

/* Does name in parent read back as fill(len, seed), with this mode? */
static bool has_block(uint64_t parent, const char *name, size_t len, unsigned seed, uint32_t mode)
{
	struct ns_attr a;

	return get(parent, name, &a) == 0 && a.size == len && a.mode == (S_IFREG | mode) &&
	       !a.writing && verify(a.ino, len, seed);
}

/* Is there a pool page of records at page? */
static bool is_rec_page(uint64_t page)
{
	const struct pool_hdr *h = pool_hdr(pool, page);

	return h->magic == POOL_HDR_MAGIC &&
	       (h->flags & (POOL_HDR_SEALED | POOL_HDR_RECS)) == (POOL_HDR_SEALED | POOL_HDR_RECS);
}

/* The record (of kind) named name in the pool, found the way a restart reads them. */
static struct pool_rec *find_rec(uint16_t kind, const char *name)
{
	size_t nl = strlen(name);

	for (uint64_t p = 0; p < pool->npages; p++) {
		struct pool_rec *r = pool_page_addr(pool, p);

		if (!is_rec_page(p))
			continue;
		for (unsigned k = 0; k < POOL_RECS_PER_PAGE; k++)
			if (r[k].magic == POOL_REC_MAGIC && r[k].kind == kind &&
			    r[k].name_len == nl && memcmp(r[k].name, name, nl) == 0)
				return &r[k];
	}
	return NULL;
}

/* Pages of records that hold at least one record (a restart keeps exactly those). */
static uint64_t live_rec_pages(void)
{
	uint64_t n = 0;

	for (uint64_t p = 0; p < pool->npages; p++) {
		const struct pool_rec *r = pool_page_addr(pool, p);
		bool live = false;

		if (!is_rec_page(p))
			continue;
		for (unsigned k = 0; k < POOL_RECS_PER_PAGE; k++)
			live |= r[k].magic != 0;
		n += live;
	}
	return n;
}

static uint64_t used_pages(void)
{
	struct kvcachefs_status st;

	ns_status(ns, &st);
	return st.used / POOL_PAGE_SIZE;
}

static void test_restart_round_trip(void)
{
	struct ns_attr d, e, a, m, f;
	struct ns_handle *w, *held;
	struct ns_recovery r;
	struct kvcachefs_status st;
	struct ns_dir dir;
	uint8_t buf[50000];
	uint64_t keep_pages, max_gen = 0;
	int64_t mtime_a;

	REQUIRE(start(8 << 20, true, false, &r) == 0);
	CHECK(!pool->reopened);
	CHECK(r.recovered == 0 && r.dirs == 0 && r.dropped == 0);
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "d", 0700, 1000, 1001, &d) == 0);
	REQUIRE(ns_mkdir(ns, d.ino, "e", 0750, 7, 8, &e) == 0);
	REQUIRE(put(NS_ROOT_INO, "a", 10000, 1));
	REQUIRE(put(d.ino, "b", 3 * 4096, 2));
	REQUIRE(put(e.ino, "c", 100000, 3));
	REQUIRE(put(NS_ROOT_INO, "empty", 0, 4));
	REQUIRE(put(NS_ROOT_INO, "old", 5000, 5));
	REQUIRE(ns_rename(ns, NS_ROOT_INO, "old", d.ino, "renamed", 0) == 0);
	uint64_t ino = put(NS_ROOT_INO, "mode", 2 * 4096 + 1, 6);
	REQUIRE(ino);
	REQUIRE(ns_setattr(ns, ino, NULL, NS_SET_MODE | NS_SET_UID | NS_SET_GID,
			   &(struct ns_attr){.mode = 0600, .uid = 42, .gid = 43}, &m) == 0);
	REQUIRE(put(NS_ROOT_INO, "gone", 777, 7));
	REQUIRE(ns_unlink(ns, NS_ROOT_INO, "gone") == 0);
	REQUIRE(put(NS_ROOT_INO, "x", 100, 8) && put(NS_ROOT_INO, "y", 200, 9));
	REQUIRE(ns_rename(ns, NS_ROOT_INO, "y", NS_ROOT_INO, "x", 0) == 0); /* replaces x */
	/* Unlinked while a reader has it: its sealed header is still in the pool at the crash. */
	ino = put(NS_ROOT_INO, "held", 3000, 10);
	REQUIRE(ino && ns_open(ns, ino, O_RDONLY, &held) == 0);
	REQUIRE(ns_unlink(ns, NS_ROOT_INO, "held") == 0);
	/* Being written at the crash: never sealed, never comes back. */
	fill(buf, sizeof(buf), 11);
	REQUIRE(ns_create_block(ns, NS_ROOT_INO, "partial", 0644, 0, 0, &a, &w) == 0);
	CHECK(ns_write(w, 0, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
	REQUIRE(get(NS_ROOT_INO, "a", &a) == 0);
	mtime_a = a.mtime_ns;
	/* What comes back: the pages of the 7 surviving blocks and the record pages in use. */
	keep_pages = 3 + 3 + 25 + 0 + 2 + 3 + 1 + live_rec_pages();
	CHECK(used_pages() == keep_pages + 13 /* partial */ + 1 /* held */);
	stop();

	REQUIRE(start(8 << 20, false, false, &r) == 0);
	CHECK(pool->reopened);
	CHECK(r.recovered == 7);
	CHECK(r.dirs == 2);
	CHECK(r.dropped == 0);
	CHECK(r.bytes == 10000 + 3 * 4096 + 100000 + 0 + 5000 + 2 * 4096 + 1 + 200);
	CHECK(logged == 0);
	CHECK(used_pages() == keep_pages);
	ns_status(ns, &st);
	CHECK(st.blocks == 7 && st.directories == 2 && st.writing == 0);
	/* Directories: modes and owners. */
	REQUIRE(get(NS_ROOT_INO, "d", &d) == 0);
	CHECK(d.mode == (S_IFDIR | 0700) && d.uid == 1000 && d.gid == 1001 && d.nlink == 3);
	REQUIRE(get(d.ino, "e", &e) == 0);
	CHECK(e.mode == (S_IFDIR | 0750) && e.uid == 7 && e.gid == 8 && e.nlink == 2);
	/* Blocks: sizes, modes, content (the first open of each checks its checksum). */
	CHECK(has_block(NS_ROOT_INO, "a", 10000, 1, 0644));
	CHECK(has_block(d.ino, "b", 3 * 4096, 2, 0644));
	CHECK(has_block(e.ino, "c", 100000, 3, 0644));
	CHECK(has_block(NS_ROOT_INO, "empty", 0, 4, 0644));
	CHECK(has_block(d.ino, "renamed", 5000, 5, 0644));
	CHECK(has_block(NS_ROOT_INO, "mode", 2 * 4096 + 1, 6, 0600));
	CHECK(has_block(NS_ROOT_INO, "x", 200, 9, 0644));
	REQUIRE(get(NS_ROOT_INO, "mode", &m) == 0);
	CHECK(m.uid == 42 && m.gid == 43);
	REQUIRE(get(NS_ROOT_INO, "a", &a) == 0);
	CHECK(a.mtime_ns == mtime_a);
	/* Unlinked, renamed away, replaced, held or being written at the crash: gone. */
	CHECK(get(NS_ROOT_INO, "gone", &a) == -ENOENT);
	CHECK(get(NS_ROOT_INO, "old", &a) == -ENOENT);
	CHECK(get(NS_ROOT_INO, "y", &a) == -ENOENT);
	CHECK(get(NS_ROOT_INO, "held", &a) == -ENOENT);
	CHECK(get(NS_ROOT_INO, "partial", &a) == -ENOENT);
	REQUIRE(ns_opendir(ns, NS_ROOT_INO, &dir) == 0);
	CHECK(dir.count == 2 + 5); /* d a empty mode x */
	ns_dir_free(&dir);
	REQUIRE(ns_opendir(ns, d.ino, &dir) == 0);
	CHECK(dir.count == 2 + 3); /* e b renamed */
	ns_dir_free(&dir);
	static const char *const names[] = {"a", "empty", "mode", "x"};
	for (unsigned k = 0; k < 4; k++)
		if (get(NS_ROOT_INO, names[k], &a) == 0 && a.generation > max_gen)
			max_gen = a.generation;

	/* New work next to the recovered blocks: new generations and directory ids. */
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "f", 0711, 5, 6, &f) == 0);
	REQUIRE(put(f.ino, "n", 4097, 12));
	REQUIRE(get(f.ino, "n", &a) == 0);
	CHECK(a.generation > max_gen);
	CHECK(ns_unlink(ns, NS_ROOT_INO, "a") == 0);
	CHECK(ns_rename(ns, NS_ROOT_INO, "x", d.ino, "x2", 0) == 0);
	stop();

	REQUIRE(start(8 << 20, false, false, &r) == 0);
	CHECK(r.recovered == 7 && r.dirs == 3 && r.dropped == 0);
	REQUIRE(get(NS_ROOT_INO, "d", &d) == 0);
	REQUIRE(get(d.ino, "e", &e) == 0);
	REQUIRE(get(NS_ROOT_INO, "f", &f) == 0);
	CHECK(f.mode == (S_IFDIR | 0711) && f.uid == 5 && f.gid == 6);
	CHECK(has_block(f.ino, "n", 4097, 12, 0644));
	CHECK(has_block(d.ino, "x2", 200, 9, 0644));
	CHECK(has_block(d.ino, "b", 3 * 4096, 2, 0644));
	CHECK(has_block(e.ino, "c", 100000, 3, 0644));
	CHECK(has_block(d.ino, "renamed", 5000, 5, 0644));
	CHECK(has_block(NS_ROOT_INO, "mode", 2 * 4096 + 1, 6, 0600));
	CHECK(has_block(NS_ROOT_INO, "empty", 0, 4, 0644));
	CHECK(get(NS_ROOT_INO, "a", &a) == -ENOENT);
	CHECK(get(NS_ROOT_INO, "x", &a) == -ENOENT);
	teardown();
}

/* A damaged record (its checksum) is dropped and so is its block; a record that checks out
 * but does not match its block's header too; a lost directory takes its blocks with it. */
static void test_restart_corrupt_record(void)
{
	struct ns_recovery r;
	struct ns_attr a, d;
	struct pool_rec *rec;

	REQUIRE(start(4 << 20, true, false, &r) == 0);
	REQUIRE(put(NS_ROOT_INO, "a", 10000, 1) && put(NS_ROOT_INO, "b", 10000, 2));
	REQUIRE(put(NS_ROOT_INO, "c", 10000, 3));
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "d", 0755, 0, 0, &d) == 0);
	REQUIRE(put(d.ino, "k", 5000, 4));
	stop();

	/* One byte of b's name: the record's checksum no longer matches. */
	REQUIRE(reopen(4 << 20) == 0);
	rec = find_rec(POOL_REC_BLOCK, "b");
	REQUIRE(rec);
	rec->name[0] ^= 0x20;
	REQUIRE(recover(&r) == 0);
	CHECK(r.dropped == 1 && r.recovered == 3 && r.dirs == 1);
	CHECK(logged >= 1);
	CHECK(get(NS_ROOT_INO, "b", &a) == -ENOENT && get(NS_ROOT_INO, "B", &a) == -ENOENT);
	CHECK(has_block(NS_ROOT_INO, "a", 10000, 1, 0644));
	CHECK(has_block(NS_ROOT_INO, "c", 10000, 3, 0644));
	CHECK(used_pages() == 3 + 3 + 2 + 1); /* b's pages are free again */
	stop();
	/* The damaged record was cleared: the next restart finds nothing to drop. */
	REQUIRE(start(4 << 20, false, false, &r) == 0);
	CHECK(r.dropped == 0 && r.recovered == 3);
	stop();

	/* c's record renamed consistently (checksum recomputed): its block header disagrees. */
	REQUIRE(reopen(4 << 20) == 0);
	rec = find_rec(POOL_REC_BLOCK, "c");
	REQUIRE(rec);
	rec->name[0] = 'z';
	rec->rec_checksum = 0;
	rec->rec_checksum = XXH3_64bits(rec, sizeof(*rec));
	REQUIRE(recover(&r) == 0);
	CHECK(r.dropped == 1 && r.recovered == 2);
	CHECK(get(NS_ROOT_INO, "c", &a) == -ENOENT && get(NS_ROOT_INO, "z", &a) == -ENOENT);
	CHECK(has_block(NS_ROOT_INO, "a", 10000, 1, 0644));
	stop();

	/* The directory's record: the directory and the block in it are dropped. */
	REQUIRE(reopen(4 << 20) == 0);
	rec = find_rec(POOL_REC_DIR, "d");
	REQUIRE(rec);
	rec->mode ^= 1;
	REQUIRE(recover(&r) == 0);
	CHECK(r.dropped == 2 && r.recovered == 1 && r.dirs == 0);
	CHECK(get(NS_ROOT_INO, "d", &a) == -ENOENT);
	CHECK(has_block(NS_ROOT_INO, "a", 10000, 1, 0644));
	CHECK(used_pages() == 3 + 1);
	teardown();
}

/* A damaged payload is found at the block's first open: EIO, and the block is gone. */
static void test_restart_corrupt_payload(void)
{
	struct ns_recovery r;
	struct ns_handle *h;
	struct ns_attr a, b;
	struct pool_rec *rec;

	REQUIRE(start(4 << 20, true, false, &r) == 0);
	REQUIRE(put(NS_ROOT_INO, "a", 10000, 1) && put(NS_ROOT_INO, "b", 10000, 2));
	REQUIRE(put(NS_ROOT_INO, "c", 10000, 3));
	stop();

	REQUIRE(reopen(4 << 20) == 0);
	rec = find_rec(POOL_REC_BLOCK, "b");
	REQUIRE(rec && rec->page < pool->npages);
	((uint8_t *)pool_page_addr(pool, rec->page))[5000] ^= 1;
	rec = find_rec(POOL_REC_BLOCK, "c"); /* past c's end, in its last page: harmless */
	REQUIRE(rec && rec->page < pool->npages);
	((uint8_t *)pool_page_addr(pool, rec->page))[11000] ^= 1;
	REQUIRE(recover(&r) == 0);
	CHECK(r.recovered == 3 && r.dropped == 0); /* payloads are not read at recovery */
	REQUIRE(ns_lookup(ns, NS_ROOT_INO, "b", &b) == 0);
	CHECK(ns_open(ns, b.ino, O_RDONLY, &h) == -EIO);
	CHECK(vanished == 1 && logged == 1);
	CHECK(ns_open(ns, b.ino, O_RDONLY, &h) == -ENOENT);
	CHECK(ns_getattr(ns, b.ino, &a) == -ENOENT);
	CHECK(get(NS_ROOT_INO, "b", &a) == -ENOENT);
	ns_forget(ns, b.ino, 1);
	CHECK(has_block(NS_ROOT_INO, "a", 10000, 1, 0644));
	CHECK(has_block(NS_ROOT_INO, "c", 10000, 3, 0644));
	CHECK(used_pages() == 3 + 3 + 1);
	stop();
	/* Dropped for good: the next restart does not bring it back. */
	REQUIRE(start(4 << 20, false, false, &r) == 0);
	CHECK(r.recovered == 2 && r.dropped == 0);
	CHECK(get(NS_ROOT_INO, "b", &a) == -ENOENT);
	CHECK(has_block(NS_ROOT_INO, "a", 10000, 1, 0644));
	teardown();
}

/* Evict from DRAM down to pct of the pool, demoting to SSD: the evictor thread may have a batch
 * of demotions in flight that ns_evict does not wait for, so try again until done (10 s). */
static bool evict_to(unsigned pct)
{
	struct kvcachefs_tiers t;

	for (int k = 0; k < 1000; k++) {
		ns_evict(ns, pct);
		ns_tiers(ns, &t);
		if (pct ? t.dram_used * 100 <= t.dram_capacity * pct : t.dram_blocks == 0)
			return true;
		usleep(10000);
	}
	return false;
}

/* The SSD tier: a pool smaller than what is written demotes to SSD, a demoted block reads back
 * exact (promoted), and a restart brings back both tiers, with attribute changes and unlinks
 * made while blocks were on SSD. */
#define SSD_BLOCKS 40
#define SSD_LEN	   60000 /* 15 pages: 40 of them are more than a 2 MiB pool */

static void test_restart_ssd_tier(void)
{
	struct kvcachefs_tiers t;
	struct ns_block_info bi;
	struct ns_recovery r;
	struct ns_attr kv, a;
	char name[32];
	int ret;

	snprintf(ssd_path, sizeof(ssd_path), "/var/tmp/kvcachefs-test-ns-ssd.%d", (int)getpid());
	unlink(ssd_path);
	ret = start(2 << 20, true, true, &r);
	if (ret == -EINVAL) {
		printf("     skipped: /var/tmp does not take O_DIRECT\n");
		unlink(ssd_path);
		return;
	}
	REQUIRE(ret == 0);
	CHECK(r.recovered == 0 && r.dropped == 0);
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "kv", 0700, 1000, 1001, &kv) == 0);
	for (unsigned k = 0; k < SSD_BLOCKS; k++) {
		snprintf(name, sizeof(name), "b%02u", k);
		REQUIRE(put(kv.ino, name, SSD_LEN, k));
	}
	CHECK(evict_to(50));
	ns_tiers(ns, &t);
	CHECK(t.demotions > 0 && t.ssd_blocks > 0 && t.ssd_devices == 1);
	CHECK(t.ssd_used > 0 && t.ssd_capacity > t.ssd_used);
	CHECK(t.dram_used * 100 <= t.dram_capacity * 50);
	CHECK(t.promotions == 0);
	CHECK(vanished == 0); /* nothing was lost */
	/* The oldest block is only on SSD now; reading it promotes it, byte-exact. */
	REQUIRE(get(kv.ino, "b00", &a) == 0);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(bi.on_ssd && bi.ssd_copy);
	CHECK(has_block(kv.ino, "b00", SSD_LEN, 0, 0644));
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(!bi.on_ssd && bi.ssd_copy);
	ns_tiers(ns, &t);
	CHECK(t.promotions == 1);
	/* Every block reads back, promoting (and demoting others) as needed. */
	for (unsigned k = 0; k < SSD_BLOCKS; k++) {
		snprintf(name, sizeof(name), "b%02u", k);
		CHECK(has_block(kv.ino, name, SSD_LEN, k, 0644));
	}
	ns_tiers(ns, &t);
	CHECK(t.promotions > 1);

	/* Everything only on SSD, then the states a restart must bring back. */
	CHECK(evict_to(0));
	ns_tiers(ns, &t);
	CHECK(t.dram_blocks == 0 && t.ssd_blocks == SSD_BLOCKS);
	REQUIRE(get(kv.ino, "b00", &a) == 0); /* SSD only: chmod, chown */
	CHECK(ns_setattr(ns, a.ino, NULL, NS_SET_MODE | NS_SET_UID | NS_SET_GID,
			 &(struct ns_attr){.mode = 0600, .uid = 11, .gid = 12}, &a) == 0);
	CHECK(ns_unlink(ns, kv.ino, "b02") == 0);	   /* SSD only: unlinked */
	CHECK(has_block(kv.ino, "b04", SSD_LEN, 4, 0644)); /* both tiers */
	CHECK(has_block(kv.ino, "b05", SSD_LEN, 5, 0644)); /* both tiers: unlinked */
	CHECK(ns_unlink(ns, kv.ino, "b05") == 0);
	REQUIRE(put(kv.ino, "fresh", SSD_LEN, 100)); /* DRAM only */
	REQUIRE(put(kv.ino, "empty", 0, 101));
	REQUIRE(get(kv.ino, "b04", &a) == 0);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(!bi.on_ssd && bi.ssd_copy);
	REQUIRE(get(kv.ino, "b06", &a) == 0);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(bi.on_ssd);
	stop();

	REQUIRE(start(2 << 20, false, true, &r) == 0);
	CHECK(pool->reopened);
	CHECK(r.recovered == SSD_BLOCKS - 2 + 2);
	CHECK(r.dirs == 1 && r.dropped == 0);
	REQUIRE(get(NS_ROOT_INO, "kv", &kv) == 0);
	CHECK(kv.mode == (S_IFDIR | 0700) && kv.uid == 1000 && kv.gid == 1001);
	CHECK(has_block(kv.ino, "b00", SSD_LEN, 0, 0600));
	REQUIRE(get(kv.ino, "b00", &a) == 0);
	CHECK(a.uid == 11 && a.gid == 12);
	CHECK(get(kv.ino, "b02", &a) == -ENOENT);
	CHECK(get(kv.ino, "b05", &a) == -ENOENT);
	/* b04 comes back in DRAM with its SSD copy, b06 on SSD only. */
	REQUIRE(get(kv.ino, "b04", &a) == 0);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(!bi.on_ssd && bi.ssd_copy);
	REQUIRE(get(kv.ino, "b06", &a) == 0);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	CHECK(bi.on_ssd);
	CHECK(has_block(kv.ino, "fresh", SSD_LEN, 100, 0644));
	CHECK(has_block(kv.ino, "empty", 0, 101, 0644));
	for (unsigned k = 1; k < SSD_BLOCKS; k++) {
		snprintf(name, sizeof(name), "b%02u", k);
		if (k != 2 && k != 5)
			CHECK(has_block(kv.ino, name, SSD_LEN, k, 0644));
	}
	ns_tiers(ns, &t);
	CHECK(t.recovered == r.recovered && t.recovery_dropped == 0);
	CHECK(t.promotions > 0);
	ns_destroy(ns);
	ns = NULL;
	ssd_close(ssd);
	ssd = NULL;
	pool_destroy(pool, true);
	pool = NULL;
	CHECK(unlink(ssd_path) == 0);
}

/* A rename while a block is on SSD, only there or in both tiers, survives a restart: the
 * block comes back under its new name only. */
static void test_restart_ssd_rename(void)
{
	struct ns_block_info bi;
	struct pool_rec *rec;
	struct ns_recovery r;
	struct ns_attr kv, a;
	int ret;

	snprintf(ssd_path, sizeof(ssd_path), "/var/tmp/kvcachefs-test-ns-ssd.%d", (int)getpid());
	unlink(ssd_path);
	ret = start(2 << 20, true, true, &r);
	if (ret == -EINVAL) {
		printf("     skipped: /var/tmp does not take O_DIRECT\n");
		unlink(ssd_path);
		return;
	}
	REQUIRE(ret == 0);
	REQUIRE(ns_mkdir(ns, NS_ROOT_INO, "kv", 0755, 0, 0, &kv) == 0);
	REQUIRE(put(kv.ino, "s", SSD_LEN, 1) && put(kv.ino, "t", SSD_LEN, 2));
	REQUIRE(put(kv.ino, "u", SSD_LEN, 3));
	CHECK(evict_to(0)); /* all three only on SSD */
	REQUIRE(get(kv.ino, "s", &a) == 0);
	REQUIRE(ns_block_info(ns, a.ino, &bi) == 0);
	REQUIRE(bi.on_ssd);
	CHECK(ns_rename(ns, kv.ino, "s", kv.ino, "s2", 0) == 0);
	rec = find_rec(POOL_REC_BLOCK, "s2"); /* the pool records the new name */
	CHECK(rec && (rec->flags & POOL_REC_ONSSD) && find_rec(POOL_REC_BLOCK, "s") == NULL);
	CHECK(has_block(kv.ino, "t", SSD_LEN, 2, 0644)); /* promoted: in both tiers */
	CHECK(ns_rename(ns, kv.ino, "t", NS_ROOT_INO, "t2", 0) == 0);
	stop();

	REQUIRE(start(2 << 20, false, true, &r) == 0);
	CHECK(r.recovered == 3 && r.dropped == 0);
	REQUIRE(get(NS_ROOT_INO, "kv", &kv) == 0);
	CHECK(has_block(kv.ino, "u", SSD_LEN, 3, 0644));
	/* renamed while only on SSD */
	CHECK(has_block(kv.ino, "s2", SSD_LEN, 1, 0644));
	CHECK(get(kv.ino, "s", &a) == -ENOENT);
	/* renamed while in DRAM with a copy on SSD */
	CHECK(has_block(NS_ROOT_INO, "t2", SSD_LEN, 2, 0644));
	CHECK(get(kv.ino, "t", &a) == -ENOENT);
	ns_destroy(ns);
	ns = NULL;
	ssd_close(ssd);
	ssd = NULL;
	pool_destroy(pool, true);
	pool = NULL;
	CHECK(unlink(ssd_path) == 0);
}

int main(void)
{
	RUN(test_dirs);
	RUN(test_block_lifecycle);
	RUN(test_header_and_checksum);
	RUN(test_unlink_and_replace_keep_readers);
	RUN(test_eviction_lru_and_pins);
	RUN(test_enospc);
	RUN(test_inode_numbers_never_reused);
	RUN(test_truncate_through_writer);
	RUN(test_lookup_prefix);
	RUN(test_reserve_commit_abort);
	RUN(test_commit_into_removed_dir);
	RUN(test_pins_survive);
	RUN(test_locate_batch);
	RUN(test_paths);
	RUN(test_restart_round_trip);
	RUN(test_restart_corrupt_record);
	RUN(test_restart_corrupt_payload);
	RUN(test_restart_ssd_tier);
	RUN(test_restart_ssd_rename);
	return check_summary();
}
