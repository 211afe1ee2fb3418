/*
 * alloc: a TLSF (two-level segregated fits) allocator of page extents (see alloc.h).
 *
 * The range [0, npages) is always cut into extents, each either allocated or free. Every
 * extent carries a boundary tag at its first (head) and last (tail) page: its length in len[]
 * and its state in the free bitmap (bit set = free). Pages inside an extent hold stale tags
 * that are never read: the only pages ever looked up are heads (given by the caller or found
 * in a list) and the tail just before a head.
 *
 * Free extents are threaded through doubly-linked lists (next[]/prev[] at their head page,
 * ALLOC_NIL ends a list). The list of an extent is its size class: sizes below 16 pages get a
 * class each; above, every power-of-two range [2^k, 2^(k+1)) is split into 16 equal classes.
 * fl_map has bit f set iff some class of first level f is non-empty, and sl_map[f] bit s iff
 * list heads[f][s] is non-empty, so a non-empty class >= some class is found with two
 * find-first-set operations.
 *
 * Invariants (alloc_check verifies them all):
 *   - extents tile [0, npages) exactly and their head and tail tags agree;
 *   - no two free extents are adjacent (a freed extent merges with its free neighbours);
 *   - every free extent is on the list of its class, and nothing else is on any list;
 *   - the bitmaps mirror which lists are non-empty; nfree is the sum of free lengths.
 *
 * alloc_get rounds the request up to the next class boundary, so that any extent of the class
 * found by the bitmaps fits without looking at it (O(1), TLSF's good fit). Only when that
 * fails does it walk the request's own class, so an allocation fails only when no single free
 * extent is large enough. Metadata costs 12 bytes and one bit per page, all outside the pool.
 */
#include "engine/alloc.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define ALLOC_SL_BITS  4
#define ALLOC_SL_COUNT (1u << ALLOC_SL_BITS)
/* First levels: 0 for sizes < 16, then one per power of two from 2^4 up to 2^31. */
#define ALLOC_FL_COUNT (32 - ALLOC_SL_BITS + 1)
#define ALLOC_NIL      UINT32_MAX /* npages < 2^32, so no page has this index */

struct alloc {
	uint64_t npages;
	uint64_t nfree;
	uint32_t *len;	/* extent length, valid at its head and tail page */
	uint32_t *next; /* free-list links, valid at the head of a free extent */
	uint32_t *prev;
	uint64_t *freebit; /* bit p: extent whose head or tail is p is free */
	uint32_t fl_map;
	uint32_t sl_map[ALLOC_FL_COUNT];
	uint32_t heads[ALLOC_FL_COUNT][ALLOC_SL_COUNT];
};

static unsigned alloc_log2(uint64_t n)
{
	return 63u - (unsigned)__builtin_clzll(n);
}

/* The class (fl, sl) holding extents of n >= 1 pages. fl may reach ALLOC_FL_COUNT for a
 * rounded-up size beyond the largest class. */
static void alloc_class(uint64_t n, unsigned *fl, unsigned *sl)
{
	unsigned lg;

	if (n < ALLOC_SL_COUNT) {
		*fl = 0;
		*sl = (unsigned)n;
		return;
	}
	lg = alloc_log2(n);
	*fl = lg - ALLOC_SL_BITS + 1;
	*sl = (unsigned)(n >> (lg - ALLOC_SL_BITS)) - ALLOC_SL_COUNT;
}

static bool alloc_isfree(const struct alloc *a, uint64_t p)
{
	return (a->freebit[p / 64] >> (p % 64)) & 1;
}

static void alloc_setbit(struct alloc *a, uint64_t p, bool free)
{
	if (free)
		a->freebit[p / 64] |= 1ull << (p % 64);
	else
		a->freebit[p / 64] &= ~(1ull << (p % 64));
}

/* Write the boundary tags of the extent [p, p + n). */
static void alloc_tag(struct alloc *a, uint64_t p, uint64_t n, bool free)
{
	a->len[p] = (uint32_t)n;
	a->len[p + n - 1] = (uint32_t)n;
	alloc_setbit(a, p, free);
	alloc_setbit(a, p + n - 1, free);
}

static void alloc_list_insert(struct alloc *a, uint32_t p)
{
	unsigned fl, sl;
	uint32_t head;

	alloc_class(a->len[p], &fl, &sl);
	head = a->heads[fl][sl];
	a->next[p] = head;
	a->prev[p] = ALLOC_NIL;
	if (head != ALLOC_NIL)
		a->prev[head] = p;
	a->heads[fl][sl] = p;
	a->sl_map[fl] |= 1u << sl;
	a->fl_map |= 1u << fl;
}

static void alloc_list_remove(struct alloc *a, uint32_t p)
{
	unsigned fl, sl;
	uint32_t next = a->next[p], prev = a->prev[p];

	alloc_class(a->len[p], &fl, &sl);
	if (next != ALLOC_NIL)
		a->prev[next] = prev;
	if (prev != ALLOC_NIL) {
		a->next[prev] = next;
		return;
	}
	a->heads[fl][sl] = next;
	if (next == ALLOC_NIL) {
		a->sl_map[fl] &= ~(1u << sl);
		if (!a->sl_map[fl])
			a->fl_map &= ~(1u << fl);
	}
}

/* Head of a free extent of at least n pages, or ALLOC_NIL. */
static uint32_t alloc_find(const struct alloc *a, uint64_t n)
{
	uint64_t r = n;
	unsigned fl, sl;
	uint32_t m, p;

	if (n >= ALLOC_SL_COUNT)
		r += (1ull << (alloc_log2(n) - ALLOC_SL_BITS)) - 1;
	alloc_class(r, &fl, &sl);
	if (fl < ALLOC_FL_COUNT) {
		m = a->sl_map[fl] & (~0u << sl);
		if (!m) {
			m = a->fl_map & (~0u << (fl + 1));
			if (m) {
				fl = (unsigned)__builtin_ctz(m);
				m = a->sl_map[fl];
			}
		}
		if (m)
			return a->heads[fl][__builtin_ctz(m)];
	}
	/* Only n's own class may still hold a fit: look at its extents one by one. */
	alloc_class(n, &fl, &sl);
	for (p = a->heads[fl][sl]; p != ALLOC_NIL; p = a->next[p])
		if (a->len[p] >= n)
			return p;
	return ALLOC_NIL;
}

/* Make [p, p + n) free, merging it with the free extents on either side. */
static void alloc_free_range(struct alloc *a, uint64_t p, uint64_t n)
{
	uint64_t end = p + n, l;

	a->nfree += n;
	if (p > 0 && alloc_isfree(a, p - 1)) {
		l = a->len[p - 1];
		p -= l;
		n += l;
		alloc_list_remove(a, (uint32_t)p);
	}
	if (end < a->npages && alloc_isfree(a, end)) {
		n += a->len[end];
		alloc_list_remove(a, (uint32_t)end);
	}
	alloc_tag(a, p, n, true);
	alloc_list_insert(a, (uint32_t)p);
}

#ifndef NDEBUG
/* Is [start, start + n) an allocated extent? For assertions. */
static bool alloc_is_extent(const struct alloc *a, uint64_t start, uint64_t n)
{
	return n >= 1 && start < a->npages && n <= a->npages - start && a->len[start] == n &&
	       a->len[start + n - 1] == n && !alloc_isfree(a, start);
}
#endif

struct alloc *alloc_create(uint64_t npages)
{
	struct alloc *a;

	if (npages == 0 || npages >= (1ull << 32)) {
		errno = EINVAL;
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->npages = npages;
	/* calloc of large arrays maps zero pages lazily: creation costs no per-page work. */
	a->len = calloc(npages, sizeof(*a->len));
	a->next = calloc(npages, sizeof(*a->next));
	a->prev = calloc(npages, sizeof(*a->prev));
	a->freebit = calloc((npages + 63) / 64, sizeof(*a->freebit));
	if (!a->len || !a->next || !a->prev || !a->freebit) {
		alloc_destroy(a);
		errno = ENOMEM;
		return NULL;
	}
	for (unsigned f = 0; f < ALLOC_FL_COUNT; f++)
		for (unsigned s = 0; s < ALLOC_SL_COUNT; s++)
			a->heads[f][s] = ALLOC_NIL;
	alloc_free_range(a, 0, npages);
	return a;
}

void alloc_destroy(struct alloc *a)
{
	if (!a)
		return;
	free(a->len);
	free(a->next);
	free(a->prev);
	free(a->freebit);
	free(a);
}

/* -EINVAL for n == 0 and for n > npages (it could never succeed); -ENOSPC when no free
 * extent of n pages exists now. */
int64_t alloc_get(struct alloc *a, uint64_t n)
{
	uint32_t p;
	uint64_t m;

	if (n == 0 || n > a->npages)
		return -EINVAL;
	if (n > a->nfree)
		return -ENOSPC;
	p = alloc_find(a, n);
	if (p == ALLOC_NIL)
		return -ENOSPC;
	m = a->len[p];
	alloc_list_remove(a, p);
	alloc_tag(a, p, n, false);
	if (m > n) {
		/* The page after the remainder is allocated (or the end): no merge to do. */
		alloc_tag(a, p + n, m - n, true);
		alloc_list_insert(a, (uint32_t)(p + n));
	}
	a->nfree -= n;
	return p;
}

void alloc_put(struct alloc *a, uint64_t start, uint64_t n)
{
	assert(alloc_is_extent(a, start, n));
	alloc_free_range(a, start, n);
}

/* -EINVAL unless [start, start + n) lies in the free extent that ends the range. */
int alloc_claim_tail(struct alloc *a, uint64_t start, uint64_t n)
{
	uint64_t last = a->npages - 1, head;

	if (n == 0 || start >= a->npages || n > a->npages - start || !alloc_isfree(a, last))
		return -EINVAL;
	head = a->npages - a->len[last];
	if (start < head)
		return -EINVAL;
	alloc_list_remove(a, (uint32_t)head);
	if (start > head) {
		alloc_tag(a, head, start - head, true);
		alloc_list_insert(a, (uint32_t)head);
	}
	alloc_tag(a, start, n, false);
	if (start + n < a->npages) {
		alloc_tag(a, start + n, a->npages - start - n, true);
		alloc_list_insert(a, (uint32_t)(start + n));
	}
	a->nfree -= n;
	return 0;
}

/* -EINVAL when new_n <= old_n. */
int alloc_extend(struct alloc *a, uint64_t start, uint64_t old_n, uint64_t new_n)
{
	uint64_t r = start + old_n, need, m;

	assert(alloc_is_extent(a, start, old_n));
	if (new_n <= old_n)
		return -EINVAL;
	need = new_n - old_n;
	if (r >= a->npages || !alloc_isfree(a, r) || a->len[r] < need)
		return -ENOSPC;
	m = a->len[r];
	alloc_list_remove(a, (uint32_t)r);
	alloc_tag(a, start, new_n, false);
	if (m > need) {
		alloc_tag(a, start + new_n, m - need, true);
		alloc_list_insert(a, (uint32_t)(start + new_n));
	}
	a->nfree -= need;
	return 0;
}

void alloc_shrink(struct alloc *a, uint64_t start, uint64_t old_n, uint64_t new_n)
{
	assert(alloc_is_extent(a, start, old_n));
	assert(new_n >= 1 && new_n <= old_n);
	if (new_n >= old_n || new_n == 0)
		return;
	alloc_tag(a, start, new_n, false);
	alloc_free_range(a, start + new_n, old_n - new_n);
}

uint64_t alloc_total_pages(const struct alloc *a)
{
	return a->npages;
}

uint64_t alloc_free_pages(const struct alloc *a)
{
	return a->nfree;
}

/* Returns -ENOMEM if the scratch bitmap of listed heads cannot be allocated. */
int alloc_check(const struct alloc *a)
{
	uint64_t *listed, nlisted = 0, nfree_ext = 0, free_pages = 0, p, l;
	unsigned fl, sl;
	bool prev_free = false;
	int ret = -EUCLEAN;

	listed = calloc((a->npages + 63) / 64, sizeof(*listed));
	if (!listed)
		return -ENOMEM;

	/* Lists and bitmaps: each listed page is a distinct free head of the right class. */
	if (a->fl_map >> ALLOC_FL_COUNT)
		goto out;
	for (unsigned f = 0; f < ALLOC_FL_COUNT; f++) {
		if (a->sl_map[f] >> ALLOC_SL_COUNT)
			goto out;
		if (!!((a->fl_map >> f) & 1) != !!a->sl_map[f])
			goto out;
		for (unsigned s = 0; s < ALLOC_SL_COUNT; s++) {
			uint32_t back = ALLOC_NIL;

			p = a->heads[f][s];
			if (!!((a->sl_map[f] >> s) & 1) != (p != ALLOC_NIL))
				goto out;
			for (; p != ALLOC_NIL; back = (uint32_t)p, p = a->next[p]) {
				if (p >= a->npages || (listed[p / 64] >> (p % 64)) & 1)
					goto out;
				if (a->prev[p] != back || !alloc_isfree(a, p))
					goto out;
				l = a->len[p];
				if (l == 0 || l > a->npages - p)
					goto out;
				alloc_class(l, &fl, &sl);
				if (fl != f || sl != s)
					goto out;
				listed[p / 64] |= 1ull << (p % 64);
				nlisted++;
			}
		}
	}

	/* Extents: they tile the range, tags agree, free ones are listed and never adjacent. */
	for (p = 0; p < a->npages; p += l) {
		bool f = alloc_isfree(a, p);

		l = a->len[p];
		if (l == 0 || l > a->npages - p || a->len[p + l - 1] != l)
			goto out;
		if (alloc_isfree(a, p + l - 1) != f)
			goto out;
		if (f) {
			if (prev_free || !((listed[p / 64] >> (p % 64)) & 1))
				goto out;
			nfree_ext++;
			free_pages += l;
		}
		prev_free = f;
	}
	if (nfree_ext != nlisted || free_pages != a->nfree)
		goto out;
	ret = 0;
out:
	free(listed);
	return ret;
}
