/*
 * Unit tests of engine/pool.c: layout, reservation, the in-use lock, headers, and pool_open
 * across restarts: an object of the same size is kept with its sealed headers and payloads;
 * another size holding sealed blocks is refused (-EEXIST, the size it was made with, nothing
 * changed); fresh, an object without sealed blocks, and junk are started anew.
 */
#include "engine/pool.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64];

static void make_path(void)
{
	snprintf(path, sizeof(path), "/dev/shm/kvcachefs-test-pool.%d", (int)getpid());
}

static void test_layout(void)
{
	struct pool *p;
	struct stat st;
	struct pool_super *sb;

	make_path();
	REQUIRE(pool_create(&p, path, 8 << 20, 0600) == 0);
	CHECK(p->size <= 8 << 20);
	CHECK(p->npages > 0);
	/* headers + data fit and the data is page-aligned after the header table */
	CHECK((uint64_t)(p->data - p->base) % POOL_PAGE_SIZE == 0);
	CHECK((uint64_t)((uint8_t *)p->hdrs - p->base) == POOL_PAGE_SIZE);
	CHECK((uint8_t *)(p->hdrs + p->npages) <= p->data);
	CHECK(p->data + p->npages * POOL_PAGE_SIZE <= p->base + p->size);
	/* almost everything is capacity: overhead is one page plus 64 bytes per page */
	CHECK(pool_capacity(p) > (8u << 20) * 95 / 100);
	sb = (struct pool_super *)p->base;
	CHECK(sb->magic == POOL_SUPER_MAGIC && sb->npages == p->npages);
	REQUIRE(stat(path, &st) == 0);
	CHECK((st.st_mode & 0777) == 0600);
	CHECK((uint64_t)st.st_blocks * 512 >= p->size); /* reserved up front */
	pool_destroy(p, true);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
}

static void test_in_use(void)
{
	struct pool *p, *q;

	make_path();
	REQUIRE(pool_create(&p, path, 4 << 20, 0600) == 0);
	CHECK(pool_create(&q, path, 4 << 20, 0600) == -EBUSY);
	CHECK(access(path, F_OK) == 0); /* the refused second daemon removed nothing */
	pool_destroy(p, true);
}

static void test_too_small(void)
{
	struct pool *p;

	make_path();
	CHECK(pool_create(&p, path, 4096, 0600) == -EINVAL);
}

static void test_alloc_and_headers(void)
{
	struct pool *p;
	int64_t a, b;

	make_path();
	REQUIRE(pool_create(&p, path, 4 << 20, 0600) == 0);
	CHECK(pool_used_pages(p) == 0);
	a = pool_alloc(p, 3);
	b = pool_alloc(p, 5);
	REQUIRE(a >= 0 && b >= 0);
	CHECK(pool_used_pages(p) == 8);
	memset(pool_page_addr(p, (uint64_t)a), 0xab, 3 * POOL_PAGE_SIZE); /* writable */
	pool_hdr(p, (uint64_t)a)->magic = POOL_HDR_MAGIC;
	pool_free(p, (uint64_t)a, 3);
	CHECK(pool_hdr(p, (uint64_t)a)->magic == 0); /* a freed block leaves no header */
	CHECK(pool_used_pages(p) == 5);
	int ext = pool_extend(p, (uint64_t)b, 5, 7);
	CHECK(ext == 0 || ext == -ENOSPC);
	CHECK(pool_used_pages(p) == (ext == 0 ? 7u : 5u));
	CHECK(pool_alloc(p, p->npages + 1) < 0);
	pool_destroy(p, true);
}

/* A path of its own for each restart test, removed before use. */
static void make_open_path(const char *tag)
{
	snprintf(path, sizeof(path), "/dev/shm/kvcachefs-test-pool-%s.%d", tag, (int)getpid());
	unlink(path);
}

/* Allocate n pages, fill them from seed and give them a sealed header; the first page. */
static int64_t put_sealed(struct pool *p, uint64_t n, uint64_t length, unsigned seed)
{
	int64_t pg = pool_alloc(p, n);
	uint8_t *d;

	if (pg < 0)
		return pg;
	d = pool_page_addr(p, (uint64_t)pg);
	for (uint64_t i = 0; i < n * POOL_PAGE_SIZE; i++)
		d[i] = (uint8_t)(seed + i * 13);
	*pool_hdr(p, (uint64_t)pg) = (struct pool_hdr){
	    .magic = POOL_HDR_MAGIC,
	    .flags = POOL_HDR_SEALED,
	    .generation = 1000 + seed,
	    .name_hash = {seed, ~(uint64_t)seed},
	    .length = length,
	    .checksum = 0x1234567800000000ull + seed,
	    .seal_time_ns = 42,
	    .npages = (uint32_t)n,
	};
	return pg;
}

/* Is the block put_sealed left at page pg (n pages) still there, header and bytes? */
static bool has_sealed(const struct pool *p, uint64_t pg, uint64_t n, uint64_t length,
		       unsigned seed)
{
	const struct pool_hdr *h = pool_hdr(p, pg);
	const uint8_t *d = pool_page_addr(p, pg);

	if (h->magic != POOL_HDR_MAGIC || h->flags != POOL_HDR_SEALED ||
	    h->generation != 1000 + seed || h->length != length || h->npages != n ||
	    h->checksum != 0x1234567800000000ull + seed || h->name_hash[0] != seed)
		return false;
	for (uint64_t i = 0; i < n * POOL_PAGE_SIZE; i++)
		if (d[i] != (uint8_t)(seed + i * 13))
			return false;
	return true;
}

static bool super_ok(const struct pool *p, uint64_t asked)
{
	const struct pool_super *sb = (const struct pool_super *)p->base;

	return sb->magic == POOL_SUPER_MAGIC && sb->format == POOL_FORMAT &&
	       sb->page_size == POOL_PAGE_SIZE && sb->size == p->size && sb->npages == p->npages &&
	       sb->asked == asked && sb->data_off == (uint64_t)(p->data - p->base);
}

static off_t file_size(void)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_open_keeps_same_size(void)
{
	struct pool *p;
	uint64_t old = 0, size;
	int64_t a, b;

	make_open_path("keep");
	REQUIRE(pool_open(&p, path, 4 << 20, 0600, false, &old) == 0);
	CHECK(!p->reopened);
	CHECK(super_ok(p, 4 << 20));
	CHECK(pool_sealed_pages(p) == 0);
	size = p->size;
	a = put_sealed(p, 3, 3 * POOL_PAGE_SIZE - 100, 1);
	b = put_sealed(p, 1, 1, 2);
	REQUIRE(a >= 0 && b >= 0);
	/* A header that was never sealed (a block being written) is not counted. */
	int64_t c = pool_alloc(p, 2);
	REQUIRE(c >= 0);
	*pool_hdr(p, (uint64_t)c) = (struct pool_hdr){.magic = POOL_HDR_MAGIC, .npages = 2};
	CHECK(pool_sealed_pages(p) == 2);
	pool_destroy(p, false);
	CHECK(file_size() == (off_t)size); /* the object outlives the daemon */

	REQUIRE(pool_open(&p, path, 4 << 20, 0600, false, &old) == 0);
	CHECK(p->reopened);
	CHECK(p->size == size && super_ok(p, 4 << 20));
	CHECK(pool_sealed_pages(p) == 2);
	CHECK(has_sealed(p, (uint64_t)a, 3, 3 * POOL_PAGE_SIZE - 100, 1));
	CHECK(has_sealed(p, (uint64_t)b, 1, 1, 2));
	/* The allocator starts all free: recovery claims what it keeps, in ascending order. */
	CHECK(pool_used_pages(p) == 0);
	CHECK(pool_claim(p, (uint64_t)a, 3) == 0);
	CHECK(pool_claim(p, (uint64_t)a, 3) == -EINVAL); /* not ascending */
	CHECK(pool_claim(p, (uint64_t)a + 3, p->npages) == -EINVAL);
	CHECK(pool_claim(p, (uint64_t)b, 1) == 0);
	CHECK(pool_used_pages(p) == 4);
	int64_t d = pool_alloc(p, 1); /* from the gaps or the tail, never a claimed page */
	CHECK(d >= 0 && (uint64_t)d != (uint64_t)b &&
	      !((uint64_t)d >= (uint64_t)a && (uint64_t)d < (uint64_t)a + 3));
	pool_destroy(p, true);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
}

static void test_open_other_size(void)
{
	struct pool *p, *q;
	uint64_t old = 0, size;
	int64_t a;

	make_open_path("size");
	REQUIRE(pool_open(&p, path, 4 << 20, 0640, false, &old) == 0);
	size = p->size;
	a = put_sealed(p, 5, 5 * POOL_PAGE_SIZE, 7);
	REQUIRE(a >= 0);
	pool_destroy(p, false);

	/* Bigger, smaller, and a size that rounds to the same layout: all refused, the size the
	 * object was made with reported, the object untouched (size, mode, content). */
	static const uint64_t others[] = {8 << 20, 2 << 20, (4 << 20) + 100};
	for (unsigned k = 0; k < sizeof(others) / sizeof(others[0]); k++) {
		struct stat st;

		old = 0;
		CHECK(pool_open(&q, path, others[k], 0600, false, &old) == -EEXIST);
		CHECK(old == 4 << 20);
		REQUIRE(stat(path, &st) == 0);
		CHECK(st.st_size == (off_t)size && (st.st_mode & 0777) == 0640);
	}
	REQUIRE(pool_open(&p, path, 4 << 20, 0600, false, &old) == 0);
	CHECK(p->reopened);
	CHECK(has_sealed(p, (uint64_t)a, 5, 5 * POOL_PAGE_SIZE, 7));
	/* While a daemon holds it, even a fresh start is refused and removes nothing. */
	CHECK(pool_open(&q, path, 4 << 20, 0600, true, &old) == -EBUSY);
	CHECK(pool_open(&q, path, 8 << 20, 0600, false, &old) == -EBUSY);
	CHECK(has_sealed(p, (uint64_t)a, 5, 5 * POOL_PAGE_SIZE, 7));
	pool_destroy(p, false);

	/* fresh: started anew, whatever it held. */
	REQUIRE(pool_open(&p, path, 4 << 20, 0600, true, &old) == 0);
	CHECK(!p->reopened);
	CHECK(pool_sealed_pages(p) == 0);
	CHECK(pool_hdr(p, (uint64_t)a)->magic == 0);
	CHECK(super_ok(p, 4 << 20));
	pool_destroy(p, false);

	/* Now it holds no sealed block: another size is accepted and the object remade. */
	REQUIRE(pool_open(&p, path, 8 << 20, 0600, false, &old) == 0);
	CHECK(!p->reopened);
	CHECK(super_ok(p, 8 << 20));
	CHECK(file_size() == (off_t)p->size && p->size > size);
	pool_destroy(p, false);
	/* ... and back to the first size (the 8 MiB object holds nothing either). */
	REQUIRE(pool_open(&p, path, 4 << 20, 0600, false, &old) == 0);
	CHECK(!p->reopened && p->size == size && file_size() == (off_t)size);
	pool_destroy(p, true);
}

/* Another size with headers that are not sealed (blocks being written): nothing to keep. */
static void test_open_other_size_unsealed(void)
{
	struct pool *p;
	uint64_t old = 0;
	int64_t a;

	make_open_path("unsealed");
	REQUIRE(pool_open(&p, path, 4 << 20, 0600, false, &old) == 0);
	a = pool_alloc(p, 4);
	REQUIRE(a >= 0);
	*pool_hdr(p, (uint64_t)a) = (struct pool_hdr){.magic = POOL_HDR_MAGIC, .npages = 4};
	memset(pool_page_addr(p, (uint64_t)a), 0x5a, 4 * POOL_PAGE_SIZE);
	/* a sealed flag without the magic is no block either */
	pool_hdr(p, (uint64_t)a + 4)->flags = POOL_HDR_SEALED;
	pool_destroy(p, false);
	REQUIRE(pool_open(&p, path, 6 << 20, 0600, false, &old) == 0);
	CHECK(!p->reopened);
	CHECK(super_ok(p, 6 << 20));
	CHECK(pool_sealed_pages(p) == 0);
	CHECK(pool_hdr(p, (uint64_t)a)->magic == 0);
	CHECK(((uint8_t *)pool_page_addr(p, (uint64_t)a))[0] == 0); /* remade: zeros */
	pool_destroy(p, true);
}

/* Write len bytes of junk (or a damaged copy of a real superblock) at path. */
static void write_file(const void *buf, size_t len, unsigned mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	if (fd < 0)
		return;
	if (write(fd, buf, len) != (ssize_t)len)
		perror("write");
	close(fd);
}

static void test_open_junk(void)
{
	static uint8_t junk[3 * POOL_PAGE_SIZE];
	struct pool *p;
	struct stat st;
	uint64_t old = 0;

	make_open_path("junk");
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7 + 3);
	/* Junk, a file shorter than a superblock, an empty file. */
	static const size_t lens[] = {sizeof(junk), 10, 0};
	for (unsigned k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		write_file(junk, lens[k], 0644);
		old = 0;
		REQUIRE(pool_open(&p, path, 4 << 20, 0600, false, &old) == 0);
		CHECK(!p->reopened);
		CHECK(super_ok(p, 4 << 20));
		CHECK(pool_sealed_pages(p) == 0);
		CHECK(pool_hdr(p, 0)->magic == 0);
		REQUIRE(stat(path, &st) == 0);
		CHECK(st.st_size == (off_t)p->size);
		CHECK((uint64_t)st.st_blocks * 512 >= p->size); /* reserved up front */
		CHECK((st.st_mode & 0777) == 0600);		/* the mode asked for */
		pool_destroy(p, false);
	}

	/* A real object whose superblock is damaged (format, page size, size, magic): its
	 * sealed blocks cannot be trusted, and it is remade even with another size. */
	for (unsigned k = 0; k < 4; k++) {
		struct pool_super *sb;
		int64_t a;

		REQUIRE(pool_open(&p, path, 4 << 20, 0600, true, &old) == 0);
		a = put_sealed(p, 2, 100, 3);
		REQUIRE(a >= 0);
		sb = (struct pool_super *)p->base;
		if (k == 0)
			sb->format = POOL_FORMAT + 1;
		else if (k == 1)
			sb->page_size = 2 * POOL_PAGE_SIZE;
		else if (k == 2)
			sb->size += POOL_PAGE_SIZE;
		else
			sb->magic ^= 1;
		pool_destroy(p, false);
		old = 0;
		REQUIRE(pool_open(&p, path, k % 2 ? 4 << 20 : 8 << 20, 0600, false, &old) == 0);
		CHECK(!p->reopened);
		CHECK(old == 0);
		CHECK(pool_sealed_pages(p) == 0);
		CHECK(super_ok(p, k % 2 ? 4 << 20 : 8 << 20));
		pool_destroy(p, false);
	}
	CHECK(unlink(path) == 0);
}

int main(void)
{
	RUN(test_layout);
	RUN(test_in_use);
	RUN(test_too_small);
	RUN(test_alloc_and_headers);
	RUN(test_open_keeps_same_size);
	RUN(test_open_other_size);
	RUN(test_open_other_size_unsealed);
	RUN(test_open_junk);
	return check_summary();
}
