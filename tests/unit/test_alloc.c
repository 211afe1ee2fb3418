/*
 * Unit tests of engine/alloc.c: whole-pool allocation, exhaustion, coalescing, in-place
 * extend and shrink, the exact-class fallback, bad arguments, a randomized stress run
 * checked against a shadow map of the pages, and alloc_claim_tail (a restart rebuilding its
 * allocations in ascending order: gaps stay usable, bad claims change nothing, claimed
 * extents free and merge like any other).
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

/* Claims in ascending order with gaps: the gaps stay free and usable, the rest is one tail. */
static void test_claim_tail(void)
{
	struct alloc *a = alloc_create(100);

	REQUIRE(a);
	CHECK(alloc_claim_tail(a, 0, 5) == 0);	 /* at the very start: no gap */
	CHECK(alloc_claim_tail(a, 10, 5) == 0);	 /* gap [5, 10) */
	CHECK(alloc_claim_tail(a, 30, 20) == 0); /* gap [15, 30) */
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_free_pages(a) == 70);
	CHECK(alloc_claim_tail(a, 90, 10) == 0); /* up to the end: gap [50, 90), no tail left */
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_free_pages(a) == 60);
	CHECK(alloc_claim_tail(a, 50, 1) == -EINVAL); /* the last page is taken: no tail */
	CHECK(alloc_claim_tail(a, 99, 1) == -EINVAL);
	CHECK(alloc_free_pages(a) == 60);

	/* A claimed extent is freed like any other: [10, 15) merges with both gaps around it. */
	alloc_put(a, 10, 5);
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_free_pages(a) == 65);
	CHECK(alloc_get(a, 25) == 5);
	/* The gap [50, 90) serves gets; freeing [90, 100) merges with what is left of it. */
	CHECK(alloc_get(a, 39) == 50);
	CHECK(alloc_get(a, 2) == -ENOSPC); /* only page 89 is free */
	alloc_put(a, 90, 10);
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_free_pages(a) == 11);
	CHECK(alloc_get(a, 11) == 89);
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_check(a) == 0);
	alloc_destroy(a);

	/* The whole range in one claim; a one-page range. */
	a = alloc_create(1000);
	REQUIRE(a);
	CHECK(alloc_claim_tail(a, 0, 1000) == 0);
	CHECK(alloc_free_pages(a) == 0 && alloc_check(a) == 0);
	CHECK(alloc_get(a, 1) == -ENOSPC);
	alloc_put(a, 0, 1000);
	CHECK(alloc_free_pages(a) == 1000 && alloc_check(a) == 0);
	alloc_destroy(a);
	a = alloc_create(1);
	REQUIRE(a);
	CHECK(alloc_claim_tail(a, 0, 1) == 0);
	CHECK(alloc_claim_tail(a, 0, 1) == -EINVAL);
	CHECK(alloc_free_pages(a) == 0 && alloc_check(a) == 0);
	alloc_destroy(a);
}

/* Each gap after the claims is served by alloc_get in full, the largest request first. */
static void test_claim_tail_gets_fill_gaps(void)
{
	struct alloc *a = alloc_create(4096);
	static const uint64_t claims[][2] = {{3, 1}, {20, 17}, {100, 300}, {1000, 1}, {3000, 96}};
	bool used[4096] = {false};

	REQUIRE(a);
	for (unsigned k = 0; k < sizeof(claims) / sizeof(claims[0]); k++) {
		CHECK(alloc_claim_tail(a, claims[k][0], claims[k][1]) == 0);
		range_set(used, claims[k][0], claims[k][1], true);
	}
	CHECK(alloc_check(a) == 0);
	CHECK(alloc_free_pages(a) == 4096 - (1 + 17 + 300 + 1 + 96));
	/* Gaps of 3, 16, 63, 600 and 1999 pages and a tail of 1000, asked for largest first:
	 * each request fits exactly one free extent, so the pool ends up full. */
	static const uint64_t gets[] = {1999, 1000, 600, 63, 16, 3};
	for (unsigned k = 0; k < sizeof(gets) / sizeof(gets[0]); k++) {
		int64_t p = alloc_get(a, gets[k]);

		CHECK(p >= 0 && range_is(used, (uint64_t)p, gets[k], false));
		if (p >= 0)
			range_set(used, (uint64_t)p, gets[k], true);
	}
	CHECK(alloc_free_pages(a) == 0);
	CHECK(alloc_check(a) == 0);
	CHECK(range_is(used, 0, 4096, true));
	alloc_destroy(a);
}

/* Claims that are out of order, overlap, run past the end or are empty: -EINVAL, and nothing
 * changes. */
static void test_claim_tail_bad(void)
{
	struct alloc *a = alloc_create(100);

	REQUIRE(a);
	CHECK(alloc_claim_tail(a, 0, 0) == -EINVAL);
	CHECK(alloc_claim_tail(a, 100, 1) == -EINVAL);
	CHECK(alloc_claim_tail(a, 98, 3) == -EINVAL);
	CHECK(alloc_claim_tail(a, 0, 101) == -EINVAL);
	CHECK(alloc_claim_tail(a, 1, UINT64_MAX) == -EINVAL);
	CHECK(alloc_claim_tail(a, UINT64_MAX, 1) == -EINVAL);
	CHECK(alloc_free_pages(a) == 100 && alloc_check(a) == 0);
	REQUIRE(alloc_claim_tail(a, 50, 10) == 0);
	CHECK(alloc_claim_tail(a, 10, 5) == -EINVAL);  /* out of order: below the tail */
	CHECK(alloc_claim_tail(a, 45, 10) == -EINVAL); /* overlaps the claim from below */
	CHECK(alloc_claim_tail(a, 55, 10) == -EINVAL); /* starts inside it */
	CHECK(alloc_claim_tail(a, 50, 10) == -EINVAL); /* the same claim again */
	CHECK(alloc_claim_tail(a, 59, 1) == -EINVAL);  /* its last page */
	CHECK(alloc_claim_tail(a, 60, 41) == -EINVAL); /* past the end */
	CHECK(alloc_free_pages(a) == 90 && alloc_check(a) == 0);
	/* The tail after the failed claims is intact: all of it can still be claimed. */
	CHECK(alloc_claim_tail(a, 60, 40) == 0);
	CHECK(alloc_free_pages(a) == 50 && alloc_check(a) == 0);
	/* A get that takes the tail's first page leaves a tail that starts later. */
	alloc_put(a, 60, 40);
	CHECK(alloc_get(a, 50) == 0); /* the gap [0, 50) exactly */
	CHECK(alloc_get(a, 1) == 60); /* from the tail */
	CHECK(alloc_claim_tail(a, 60, 1) == -EINVAL);
	CHECK(alloc_claim_tail(a, 61, 39) == 0);
	CHECK(alloc_free_pages(a) == 0 && alloc_check(a) == 0);
	alloc_destroy(a);
}

#define CLAIM_PAGES 65536

/* A restart's worth of random ascending claims with random gaps, checked against a shadow
 * map; then everything is freed in random order and merges back into one extent. */
static void test_claim_tail_random(void)
{
	struct alloc *a = alloc_create(CLAIM_PAGES);
	struct ext *ext = calloc(CLAIM_PAGES, sizeof(*ext));
	bool *used = calloc(CLAIM_PAGES, sizeof(*used));
	uint64_t next = 0, n, nused = 0;
	size_t count = 0;

	rng_state = 0x2545f4914f6cdd1dull;
	REQUIRE(a && ext && used);
	for (;;) {
		next += rng() % 3 == 0 ? rng() % 20 : 0; /* a gap now and then */
		if (next >= CLAIM_PAGES)
			break;
		n = rand_size();
		if (n > CLAIM_PAGES - next)
			n = CLAIM_PAGES - next;
		REQUIRE(alloc_claim_tail(a, next, n) == 0);
		range_set(used, next, n, true);
		ext[count++] = (struct ext){next, n};
		nused += n;
		/* Claiming below what was just claimed is refused. */
		if (next > 0)
			CHECK(alloc_claim_tail(a, next - 1, 1) == -EINVAL);
		next += n;
		CHECK(alloc_free_pages(a) == CLAIM_PAGES - nused);
	}
	CHECK(alloc_check(a) == 0);
	CHECK(count > 500);
	/* The free space is usable: a get of the longest free run succeeds where it is free. */
	n = longest_free_run(used, CLAIM_PAGES);
	if (n) {
		int64_t p = alloc_get(a, n);

		REQUIRE(p >= 0 && range_is(used, (uint64_t)p, n, false));
		range_set(used, (uint64_t)p, n, true);
		ext[count++] = (struct ext){(uint64_t)p, n};
		nused += n;
	}
	CHECK(alloc_free_pages(a) == CLAIM_PAGES - nused);
	while (count) {
		size_t k = rng() % count;

		alloc_put(a, ext[k].start, ext[k].n);
		ext[k] = ext[--count];
		if (count % 64 == 0)
			REQUIRE(alloc_check(a) == 0);
	}
	CHECK(alloc_free_pages(a) == CLAIM_PAGES && alloc_check(a) == 0);
	CHECK(alloc_get(a, CLAIM_PAGES) == 0);
	free(ext);
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
	RUN(test_claim_tail);
	RUN(test_claim_tail_gets_fill_gaps);
	RUN(test_claim_tail_bad);
	RUN(test_claim_tail_random);
	return check_summary();
}
