/*
 * pool: the node's DRAM segment, one shared-memory file mapped by the daemon (and, later,
 * by clients for zero-copy access), with an allocator of page-aligned blocks.
 *
 * Layout of the pool object (the on-media format; a later restart reads it back):
 *   [superblock: one page][header table: one struct pool_hdr per data page][data pages]
 * A block occupies a run of data pages; its header is the table entry of its first page, so
 * headers need no allocator of their own and the data stays page-aligned.
 *
 * The pool is not thread-safe: the store's lock serializes allocation and header updates.
 * Block payload bytes are read and written without that lock by whoever owns the block.
 */
#ifndef KVC_ENGINE_POOL_H
#define KVC_ENGINE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POOL_PAGE_SIZE	 4096u
#define POOL_SUPER_MAGIC 0x4c4f4f50434b564bull /* "KVCKPOOL" */
#define POOL_FORMAT	 1u
#define POOL_HDR_MAGIC	 0x4b4c424bu /* "KBLK" */
#define POOL_HDR_SEALED	 1u

/* Per-block header, 64 bytes. magic is POOL_HDR_MAGIC while the slot heads a block. */
struct pool_hdr {
	uint32_t magic;
	uint32_t flags;	       /* POOL_HDR_SEALED once the payload is final */
	uint64_t generation;   /* unique per block version, never reused */
	uint64_t name_hash[2]; /* XXH3-128 of the block's file name (low, high) */
	uint64_t length;       /* payload bytes */
	uint64_t checksum;     /* XXH3-64 of the payload; valid when sealed */
	uint64_t seal_time_ns; /* CLOCK_REALTIME at seal */
	uint32_t npages;       /* pages allocated to the block */
	uint32_t reserved;
};
_Static_assert(sizeof(struct pool_hdr) == 64, "pool_hdr is an on-media format");
/* Clients read headers through the ABI's view of them (fs/uapi/kvcachefs.h). */
_Static_assert(offsetof(struct pool_hdr, generation) == 8 &&
		   offsetof(struct pool_hdr, length) == 32,
	       "pool_hdr must match struct kvcachefs_block_header");

struct pool_super {
	uint64_t magic;	    /* POOL_SUPER_MAGIC */
	uint32_t format;    /* POOL_FORMAT */
	uint32_t page_size; /* POOL_PAGE_SIZE */
	uint64_t size;	    /* bytes of the object */
	uint64_t npages;    /* data pages */
	uint64_t hdr_off;   /* byte offset of the header table */
	uint64_t data_off;  /* byte offset of data page 0 */
};

struct pool {
	int fd;
	char *path;
	uint8_t *base; /* the whole object, mapped shared */
	uint64_t size;
	uint64_t npages;
	struct pool_hdr *hdrs;
	uint8_t *data;
	struct alloc *alloc;
};

/* Create (or take over a stale) pool object at path, size bytes, mode for the file.
 * The space is reserved up front (fallocate), so the mapping can never fault for lack of
 * memory later. Errors: -EBUSY another daemon holds the pool (flock), -ENOSPC not enough
 * shared memory, -EINVAL size too small, others from open/mmap. */
int pool_create(struct pool **out, const char *path, uint64_t size, unsigned mode);
/* Unmap and close; remove the object when remove_file. */
void pool_destroy(struct pool *p, bool remove_file);

/* Capacity for blocks in bytes (data pages only). */
static inline uint64_t pool_capacity(const struct pool *p)
{
	return p->npages * POOL_PAGE_SIZE;
}
static inline void *pool_page_addr(const struct pool *p, uint64_t page)
{
	return p->data + page * POOL_PAGE_SIZE;
}
static inline uint64_t pool_pages_for(uint64_t bytes)
{
	return (bytes + POOL_PAGE_SIZE - 1) / POOL_PAGE_SIZE;
}

/* Allocation (see engine/alloc.h), caller locked. Return the first page or -ENOSPC. */
int64_t pool_alloc(struct pool *p, uint64_t npages);
int pool_extend(struct pool *p, uint64_t page, uint64_t old_n, uint64_t new_n);
void pool_shrink(struct pool *p, uint64_t page, uint64_t old_n, uint64_t new_n);
/* Free a block's pages and clear its header. */
void pool_free(struct pool *p, uint64_t page, uint64_t npages);
uint64_t pool_used_pages(const struct pool *p);

/* The header of the block starting at page. */
static inline struct pool_hdr *pool_hdr(const struct pool *p, uint64_t page)
{
	return &p->hdrs[page];
}

#endif
