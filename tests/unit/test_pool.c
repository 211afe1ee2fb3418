/* Unit tests of engine/pool.c: layout, reservation, the in-use lock, headers. */
#include "engine/pool.h"
#include "tests/unit/check.h"

#include <errno.h>
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

int main(void)
{
	RUN(test_layout);
	RUN(test_in_use);
	RUN(test_too_small);
	RUN(test_alloc_and_headers);
	return check_summary();
}
