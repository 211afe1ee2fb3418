/*
 * alloc: a page-extent allocator for the DRAM pool (TLSF: two-level segregated fits).
 *
 * It hands out runs of contiguous pages from a range [0, npages). Allocation, free, in-place
 * growth and shrinking are O(1): free extents sit in segregated lists indexed by a two-level
 * bitmap, and boundary tags (length at the first and last page of every extent) let a freed
 * extent merge with its neighbours at once. All metadata lives in arrays owned by the daemon,
 * never inside the pool, so a client that maps the pool cannot corrupt the allocator.
 *
 * Not thread-safe: the caller serializes every call (the store's lock).
 * Page indices are 32-bit: a pool of up to 2^32 pages (16 TiB with 4 KiB pages).
 */
#ifndef KVC_ENGINE_ALLOC_H
#define KVC_ENGINE_ALLOC_H

#include <stdint.h>

struct alloc;

/* Create an allocator for npages pages (1 <= npages < 2^32), all free. NULL on ENOMEM/EINVAL. */
struct alloc *alloc_create(uint64_t npages);
void alloc_destroy(struct alloc *a);

/* Allocate n >= 1 contiguous pages; returns the first page index, or -ENOSPC / -EINVAL. */
int64_t alloc_get(struct alloc *a, uint64_t n);

/* Free the extent [start, start + n) that alloc_get/alloc_extend/alloc_shrink last left
 * allocated with exactly that length. */
void alloc_put(struct alloc *a, uint64_t start, uint64_t n);

/* Allocate exactly [start, start + n), which must lie in the free extent that ends the range:
 * a restart rebuilds the allocations it finds in ascending order. 0 or -EINVAL. */
int alloc_claim_tail(struct alloc *a, uint64_t start, uint64_t n);

/* Grow the allocated extent [start, start + old_n) in place to new_n > old_n pages when the
 * pages right after it are free. 0 on success, -ENOSPC when they are not (nothing changes). */
int alloc_extend(struct alloc *a, uint64_t start, uint64_t old_n, uint64_t new_n);

/* Shrink the allocated extent [start, start + old_n) to 1 <= new_n <= old_n pages, freeing
 * the tail. */
void alloc_shrink(struct alloc *a, uint64_t start, uint64_t old_n, uint64_t new_n);

uint64_t alloc_total_pages(const struct alloc *a);
uint64_t alloc_free_pages(const struct alloc *a);

/* Walk every extent and check the invariants (tags, lists, bitmaps, free count).
 * 0 if consistent, -EUCLEAN otherwise. O(npages): for tests. */
int alloc_check(const struct alloc *a);

#endif
