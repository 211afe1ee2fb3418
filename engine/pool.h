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
#define POOL_FORMAT	 2u
#define POOL_HDR_MAGIC	 0x4b4c424bu /* "KBLK" */
#define POOL_HDR_SEALED	 1u
#define POOL_HDR_RECS	 2u /* the page holds block and directory records (struct pool_rec) */
#define POOL_REC_MAGIC	 0x4345524bu /* "KREC" */

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
	uint64_t asked;	    /* the size asked for (--pool-size), from which the layout follows */
};

/*
 * What a restarted daemon needs to give its blocks their names back: one record per sealed
 * block and per directory, 512 bytes, eight to a page whose header has POOL_HDR_RECS. A block's
 * record is written before its header is sealed and cleared before its pages are freed, so a
 * sealed header whose record matches it (page, generation, length, name hash) is a complete
 * block. A change (rename, chmod) writes a new record with a higher seq and then clears the
 * old one: of two records of one object the higher seq wins. rec_checksum (XXH3-64 of the
 * record with rec_checksum zero) catches a record torn by a crash or damaged.
 */
#define POOL_REC_BLOCK	 1u
#define POOL_REC_DIR	 2u
#define POOL_REC_REPLICA 1u /* flags: a block: a replica kept for another node */
#define POOL_REC_ONSSD                                                                             \
	2u			      /* flags: a block whose bytes are on the SSD tier only: the  \
					 record keeps its name and attributes (page is NOPAGE) */
#define POOL_ROOT_ID	   1u	      /* the id of the root directory */
#define POOL_REC_NOPAGE	   UINT64_MAX /* page of an empty block */
#define POOL_RECS_PER_PAGE (POOL_PAGE_SIZE / 512)

struct pool_rec {
	uint32_t magic; /* POOL_REC_MAGIC; 0: a free slot */
	uint16_t kind;	/* POOL_REC_BLOCK or POOL_REC_DIR */
	uint16_t name_len;
	uint64_t seq;
	uint64_t id;	 /* a directory's id (> POOL_ROOT_ID); 0 for a block */
	uint64_t parent; /* the id of the directory it is in */
	uint64_t page;	 /* a block's first data page, POOL_REC_NOPAGE when it has none */
	uint64_t generation;
	uint64_t version;
	uint64_t length;
	uint64_t checksum; /* of the payload */
	int64_t mtime_ns;
	uint32_t mode, uid, gid;
	uint32_t flags; /* POOL_REC_REPLICA; a directory: its replica count */
	uint64_t rec_checksum;
	char name[256]; /* name_len bytes, zero-padded */
	uint8_t pad[152];
};
_Static_assert(sizeof(struct pool_rec) == 512, "pool_rec is an on-media format");

struct pool {
	int fd;
	char *path;
	bool reopened; /* pool_open kept what an earlier daemon left in the object */
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

/*
 * Open the pool object at path as pool_create does, but keep what an earlier daemon left in
 * it when it has this format and was made with the same size (p->reopened is then true: its
 * sealed blocks are to be recovered, see pool_sealed_pages; the allocator starts all free).
 * An object of this format made with another size that still holds sealed blocks gives
 * -EEXIST with the size it was made with in *old_size (nothing is changed); one holding none,
 * or any other content, or fresh, is started anew.
 */
int pool_open(struct pool **out, const char *path, uint64_t size, unsigned mode, bool fresh,
	      uint64_t *old_size);
/* Count the pages whose header is sealed (a block or a record page). */
uint64_t pool_sealed_pages(const struct pool *p);
/* Recovery: allocate exactly [page, page + n); calls in ascending page order. 0 or -EINVAL. */
int pool_claim(struct pool *p, uint64_t page, uint64_t n);
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
