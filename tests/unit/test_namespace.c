/*
 * Unit tests of meta/namespace.c without FUSE: the directory tree, the block life cycle,
 * headers and checksums, the LRU order of eviction, pinning by open handles, ENOSPC.
 * The evictor thread is kept asleep (high watermark 100%) so eviction here is synchronous
 * and deterministic; the watermark thread is exercised by the integration tests.
 */
#include "engine/pool.h"
#include "meta/namespace.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
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
	ok = ns_read(h, 0, len + 100, NULL, &p) == (ssize_t)len && memcmp(p, want, len) == 0;
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
	return check_summary();
}
