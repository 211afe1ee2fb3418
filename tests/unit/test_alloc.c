/*
 * Unit tests of engine/alloc.c: whole-pool allocation, exhaustion, coalescing, in-place
 * extend and shrink, the exact-class fallback, bad arguments, and a randomized stress run
 * checked against a shadow map of the pages.
 */
#include "engine/alloc.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void test_create_args(void)
{
	struct alloc *a;

	CHECK(alloc_create(0) == NULL);
	CHECK(alloc_create(1ull << 32) == NULL);
	a = alloc_create(1);
	REQUIRE(a);
	CHECK(alloc_total_pages(a) == 1 && alloc_free_pages(a) == 1);
	CHECK(alloc_get(a, 1) == 0);
	CHECK(alloc_get(a, 1) == -ENOSPC);
	alloc_put(a, 0, 1);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);
	alloc_destroy(NULL);
}

static void test_bad_get(void)
{
	struct alloc *a = alloc_create(100);

	REQUIRE(a);
	CHECK(alloc_get(a, 0) == -EINVAL);
	CHECK(alloc_get(a, 101) < 0);
	CHECK(alloc_get(a, 1ull << 32) < 0);
	CHECK(alloc_get(a, UINT64_MAX) < 0);
	CHECK(alloc_free_pages(a) == 100);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);
}

static void test_whole_pool(void)
{
	struct alloc *a = alloc_create(1000);

	REQUIRE(a);
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_get(a, 1000) == 0);
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_get(a, 1) == -ENOSPC);
	CHECK(alloc_check(a) == 0);
	alloc_put(a, 0, 1000);
	CHECK(alloc_free_pages(a) == 1000);
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_get(a, 1000) == 0);
	alloc_destroy(a);
}

static void test_exhaustion(void)
{
	struct alloc *a = alloc_create(64);
	bool used[64] = {false};

	REQUIRE(a);
	for (int i = 0; i < 64; i++) {
		int64_t p = alloc_get(a, 1);

		REQUIRE(p >= 0 && p < 64 && !used[p]);
		used[p] = true;
	}
	CHECK(alloc_get(a, 1) == -ENOSPC);
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_check(a) == 0);
	/* Free every other page: 32 free pages but no run of 2. */
	for (int i = 0; i < 64; i += 2)
		alloc_put(a, (uint64_t)i, 1);
	CHECK(alloc_free_pages(a) == 32);
	CHECK(alloc_get(a, 2) == -ENOSPC);
	CHECK(alloc_check(a) == 0);
	for (int i = 1; i < 64; i += 2)
		alloc_put(a, (uint64_t)i, 1);
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_get(a, 64) == 0);
	alloc_destroy(a);
}

/* Ten extents freed in an order that exercises merges left, right and both ways. */
static void test_coalesce(void)
{
	static const int order[10] = {1, 3, 5, 7, 9, 0, 4, 2, 8, 6};
	struct alloc *a = alloc_create(1000);
	int64_t p[10];

	REQUIRE(a);
	for (int i = 0; i < 10; i++) {
		p[i] = alloc_get(a, 100);
		REQUIRE(p[i] >= 0);
	}
	CHECK(alloc_free_pages(a) == 0);
	for (int i = 0; i < 10; i++) {
		alloc_put(a, (uint64_t)p[order[i]], 100);
		CHECK(alloc_check(a) == 0);
		CHECK(alloc_free_pages(a) == (uint64_t)(i + 1) * 100);
	}
	CHECK(alloc_get(a, 1000) == 0);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);
}

static void test_extend(void)
{
	struct alloc *a = alloc_create(100);
	int64_t x, y, z;

	REQUIRE(a);
	x = alloc_get(a, 10);
	y = alloc_get(a, 10);
	REQUIRE(x == 0 && y == 10); /* the remainder of a split stays where it was */
	CHECK(alloc_extend(a, 0, 10, 11) == -ENOSPC); /* y is in the way */
	CHECK(alloc_extend(a, 0, 10, 10) == -EINVAL);
	CHECK(alloc_free_pages(a) == 80);
	alloc_put(a, 10, 10);
	/* Now [10, 100) is free. */
	CHECK(alloc_extend(a, 0, 10, 15) == 0);
	CHECK(alloc_free_pages(a) == 85);
	CHECK(alloc_check(a) == 0);
	/* Pin [20, 100) so that exactly [15, 20) is free after x. */
	z = alloc_get(a, 5);
	y = alloc_get(a, 80);
	REQUIRE(z == 15 && y == 20);
	alloc_put(a, 15, 5);
	CHECK(alloc_free_pages(a) == 5);
	CHECK(alloc_extend(a, 0, 15, 21) == -ENOSPC); /* only 5 free after x */
	CHECK(alloc_extend(a, 0, 15, 20) == 0);	      /* exact fit, no remainder */
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_check(a) == 0);
	alloc_put(a, 20, 80);
	CHECK(alloc_extend(a, 0, 20, 100) == 0); /* to the end of the pool */
	CHECK(alloc_extend(a, 0, 100, 101) == -ENOSPC);
	CHECK(alloc_extend(a, 0, 100, UINT64_MAX) == -ENOSPC);
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);
}

static void test_shrink(void)
{
	struct alloc *a = alloc_create(100);
	int64_t x;

	REQUIRE(a);
	x = alloc_get(a, 50);
	REQUIRE(x == 0);
	alloc_shrink(a, 0, 50, 50); /* no-op */
	CHECK(alloc_free_pages(a) == 50);
	alloc_shrink(a, 0, 50, 20);
	CHECK(alloc_free_pages(a) == 80);
	CHECK(alloc_check(a) == 0);
	/* The freed tail merged with the free extent after it. */
	CHECK(alloc_get(a, 80) == 20);
	alloc_put(a, 20, 80);
	alloc_shrink(a, 0, 20, 1);
	CHECK(alloc_free_pages(a) == 99);
	CHECK(alloc_check(a) == 0);
	alloc_put(a, 0, 1);
	CHECK(alloc_get(a, 100) == 0);
	alloc_destroy(a);
}

/* A fit that only the request's own class holds must still be found. The class of 100..103
 * pages (sizes 64..127 are split into classes of 4) is skipped by the rounded-up search. */
static void test_exact_class_fallback(void)
{
	struct alloc *a = alloc_create(103);

	REQUIRE(a);
	CHECK(alloc_get(a, 101) == 0);
	alloc_destroy(a);

	/* Extents of 100 and 103 pages in the same class: 102 takes the 103 one. */
	a = alloc_create(300);
	REQUIRE(a);
	REQUIRE(alloc_get(a, 100) == 0);
	REQUIRE(alloc_get(a, 1) == 100);
	REQUIRE(alloc_get(a, 103) == 101);
	REQUIRE(alloc_get(a, 96) == 204);
	CHECK(alloc_free_pages(a) == 0);
	alloc_put(a, 101, 103);
	alloc_put(a, 0, 100); /* listed first: the walk must skip it for 102 */
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_get(a, 104) == -ENOSPC);
	CHECK(alloc_get(a, 102) == 101);
	CHECK(alloc_get(a, 100) == 0);
	CHECK(alloc_get(a, 1) == 203);
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);
}

/* A daemon-sized pool (16 GiB of 4 KiB pages): creation is cheap and the metadata small. */
static void test_big_pool(void)
{
	const uint64_t n = 4ull << 20;
	struct timespec t0, t1;
	struct alloc *a;
	double ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	a = alloc_create(n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	REQUIRE(a);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	CHECK(ms < 200);
	CHECK(alloc_get(a, n) == 0);
	alloc_put(a, 0, n);
	CHECK(alloc_get(a, 1) == 0);
	CHECK(alloc_get(a, n - 1) == 1);
	CHECK(alloc_free_pages(a) == 0);
	alloc_put(a, 0, 1);
	alloc_put(a, 1, n - 1);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);
}

/* ---- randomized stress ------------------------------------------------------------------ */

#define STRESS_PAGES 4096
#define STRESS_OPS   200000
#define STRESS_CHECK 1000

struct ext {
	uint64_t start, n;
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Mostly small requests, sometimes large ones. */
static uint64_t rand_size(void)
{
	switch (rng() % 8) {
	case 0:
		return 1 + rng() % 512;
	case 1:
	case 2:
		return 1 + rng() % 64;
	default:
		return 1 + rng() % 8;
	}
}

static uint64_t longest_free_run(const bool *used, uint64_t npages)
{
	uint64_t best = 0, run = 0;

	for (uint64_t i = 0; i < npages; i++) {
		run = used[i] ? 0 : run + 1;
		if (run > best)
			best = run;
	}
	return best;
}

static bool range_is(const bool *used, uint64_t start, uint64_t n, bool v)
{
	for (uint64_t i = start; i < start + n; i++)
		if (used[i] != v)
			return false;
	return true;
}

static void range_set(bool *used, uint64_t start, uint64_t n, bool v)
{
	memset(used + start, v, n);
}

static void test_stress(void)
{
	struct alloc *a = alloc_create(STRESS_PAGES);
	struct ext *live = calloc(STRESS_PAGES, sizeof(*live));
	bool *used = calloc(STRESS_PAGES, sizeof(*used));
	uint64_t nlive = 0, nused = 0, fails = 0, extends = 0;

	rng_state = 0x9e3779b97f4a7c15ull;
	REQUIRE(a && live && used);
	for (long op = 0; op < STRESS_OPS; op++) {
		uint64_t k = rng() % 16, i = nlive ? rng() % nlive : 0;
		struct ext *e = &live[i];

		if (k < 7 || nlive == 0) {
			uint64_t n = rand_size();
			int64_t p = alloc_get(a, n);

			if (p == -ENOSPC) {
				/* Only when no free run is long enough (checked now and then). */
				if (fails++ % 8 == 0)
					CHECK(longest_free_run(used, STRESS_PAGES) < n);
				continue;
			}
			REQUIRE(p >= 0 && (uint64_t)p + n <= STRESS_PAGES);
			REQUIRE(range_is(used, (uint64_t)p, n, false));
			range_set(used, (uint64_t)p, n, true);
			live[nlive++] = (struct ext){(uint64_t)p, n};
			nused += n;
		} else if (k < 13) {
			alloc_put(a, e->start, e->n);
			range_set(used, e->start, e->n, false);
			nused -= e->n;
			*e = live[--nlive];
		} else if (k < 15) {
			uint64_t more = 1 + rng() % 32, end = e->start + e->n;
			bool room = end + more <= STRESS_PAGES && range_is(used, end, more, false);
			int ret = alloc_extend(a, e->start, e->n, e->n + more);

			/* In place succeeds exactly when the pages after the extent are free. */
			REQUIRE(ret == (room ? 0 : -ENOSPC));
			if (ret == 0) {
				range_set(used, end, more, true);
				e->n += more;
				nused += more;
				extends++;
			}
		} else {
			uint64_t n = 1 + rng() % e->n;

			alloc_shrink(a, e->start, e->n, n);
			range_set(used, e->start + n, e->n - n, false);
			nused -= e->n - n;
			e->n = n;
		}
		REQUIRE(alloc_free_pages(a) == STRESS_PAGES - nused);
		if (op % STRESS_CHECK == 0)
			REQUIRE(alloc_check(a) == 0);
	}
	REQUIRE(alloc_check(a) == 0);
	CHECK(fails > 0 && extends > 0); /* the mix reached both edges */
	while (nlive)
		alloc_put(a, live[nlive - 1].start, live[nlive - 1].n), nlive--;
	CHECK(alloc_free_pages(a) == STRESS_PAGES);
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_get(a, STRESS_PAGES) == 0);
	free(live);
	free(used);
	alloc_destroy(a);
}

int main(void)
{
	RUN(test_create_args);
	RUN(test_bad_get);
	RUN(test_whole_pool);
	RUN(test_exhaustion);
	RUN(test_coalesce);
	RUN(test_extend);
	RUN(test_shrink);
	RUN(test_exact_class_fallback);
	RUN(test_big_pool);
	RUN(test_stress);
	return check_summary();
}
