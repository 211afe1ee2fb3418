/*
 * ssd: one SSD device of the SSD tier (a preallocated file or a whole block device), with
 * blocks stored at unit-aligned offsets, written and read with O_DIRECT through io_uring, and
 * a header table from which a restarted daemon recovers every sealed block in one pass.
 *
 * On-media format (version SSD_FORMAT; integers little-endian; a unit is 4 KiB):
 *
 *   unit 0                 superblock: struct ssd_super, zero to the end of the unit
 *   units 1 .. T           header table: one 64-byte struct pool_hdr per data unit, the entry
 *                          of data unit u at byte table_off + 64 u; T = ceil(nunits / 64)
 *   units T+1 ..           data units 0 .. nunits-1, data unit u at byte data_off + 4096 u
 *
 * A block occupies an extent of data units [u, u + npages): unit u is its meta unit (a struct
 * ssd_rec, zero-padded to 4096 bytes: directory, name, length, generation, version, mode,
 * owner, mtime, checksums), units u+1 .. hold the payload, the last one zero-padded. Its header is
 * table entry u, in the DRAM pool's format (engine/pool.h):
 *   magic POOL_HDR_MAGIC, flags POOL_HDR_SEALED, generation, name_hash = XXH3-128 of the
 *   name, length = payload bytes, checksum = XXH3-64 of the payload, seal_time_ns = the
 *   block's version (as the namespace keeps it in the DRAM pool), npages = units of the extent
 *   (meta unit included), reserved = the device stamp (the first 4 bytes of the superblock's
 *   uuid, little-endian).
 * Every other table entry is zero, or stale: an entry whose stamp is not this device's was
 * written under an earlier format and means nothing (so formatting never rewrites the table).
 *
 * Crash consistency (a process killed at any moment): a header entry is written only after
 * the block's payload and meta unit are complete on the device, and is cleared (that write
 * complete) before any of its units may be reused. So a sealed entry with this device's stamp
 * whose meta record checks out (record checksum, uuid, own unit, and generation, length,
 * version, payload checksum, name hash and npages equal to the header's) always describes a
 * complete block. Completed O_DIRECT writes survive the death of the process, not a power
 * loss: nothing here calls fdatasync (ssd_sync does, for callers that want it).
 *
 * Threads: every call may be made from any number of threads at once, except ssd_recover
 * (alone, before any ssd_alloc) and ssd_close. The device has one ring of queue_depth entries
 * shared by all threads: submissions take a mutex for the few instructions that fill SQEs;
 * completions are reaped by whichever waiting thread gets there first, which wakes the others
 * (leader/follower), so no thread sleeps holding the ring. Staging buffers (meta units,
 * header granules, bounce buffers for unaligned payloads) come from a pool registered with
 * the ring (fixed buffers) when the kernel allows it; nothing is allocated per request.
 * Concurrent calls on one block are the caller's to exclude (e.g. ssd_free during ssd_read).
 *
 * Memory: 12 bytes (the allocator) + 4 bytes (extent lengths) + 1 bit (sealed) per data unit,
 * 1/256 of the device; headers and meta records stay on the device.
 */
#ifndef KVC_ENGINE_SSD_H
#define KVC_ENGINE_SSD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/pool.h"

#define SSD_UNIT	     4096u
#define SSD_SUPER_MAGIC	     0x31445353434b564bull /* "KVCKSSD1" */
#define SSD_REC_MAGIC	     0x4154454d434b564bull /* "KVCKMETA" */
#define SSD_FORMAT	     1u
#define SSD_DIR_MAX	     1023u /* bytes of a block's directory path */
#define SSD_NAME_MAX	     255u  /* bytes of a block's name */
#define SSD_QUEUE_DEFAULT    32u
#define SSD_QUEUE_MAX	     4096u
#define SSD_MIN_SIZE	     (64u * SSD_UNIT)
#define SSD_MAX_UNITS	     0xffffffffull /* the allocator's limit: 16 TiB of data units */
#define SSD_MEM_MAX	     64u	   /* 1 GiB pieces of ssd_config.mem registered at most */
#define SSD_ENTRIES_PER_UNIT (SSD_UNIT / sizeof(struct pool_hdr))

/* Unit 0. checksum is XXH3-64 of the bytes before it. */
struct ssd_super {
	uint64_t magic;	    /* SSD_SUPER_MAGIC */
	uint32_t format;    /* SSD_FORMAT */
	uint32_t unit_size; /* SSD_UNIT */
	uint64_t size;	    /* bytes the device was formatted with (the layout follows from it) */
	uint64_t nunits;    /* data units */
	uint64_t table_off; /* byte offset of the header table (SSD_UNIT) */
	uint64_t data_off;  /* byte offset of data unit 0 */
	uint8_t uuid[16];   /* random, made at format; its first 4 bytes are the stamp */
	int64_t created_ns; /* CLOCK_REALTIME at format */
	uint64_t checksum;
};
_Static_assert(sizeof(struct ssd_super) == 80, "ssd_super is an on-media format");

/* The meta unit of a block (the rest of the unit is zero). rec_checksum is XXH3-64 of the
 * whole 4096-byte unit with rec_checksum set to zero. dir and name are not NUL-terminated
 * on media (dir_len, name_len bytes; the rest zero). */
struct ssd_rec {
	uint64_t magic;	 /* SSD_REC_MAGIC */
	uint32_t format; /* SSD_FORMAT */
	uint32_t mode;
	uint8_t uuid[16]; /* the device's: a record of an earlier format never matches */
	uint64_t unit;	  /* the data unit this record was written to */
	uint64_t nunits;  /* = header npages */
	uint64_t generation;
	uint64_t version; /* = header seal_time_ns */
	uint64_t length;
	uint64_t checksum; /* XXH3-64 of the payload, = header checksum */
	int64_t mtime_ns;
	uint64_t name_hash[2]; /* XXH3-128 of the name (low, high) */
	uint16_t dir_len;
	uint16_t name_len;
	uint32_t reserved[3]; /* the block's uid, gid, then zero */
	uint64_t rec_checksum;
	char dir[SSD_DIR_MAX + 1];
	char name[SSD_NAME_MAX + 1];
};
_Static_assert(offsetof(struct ssd_rec, dir) == 128 && sizeof(struct ssd_rec) == 128 + 1024 + 256,
	       "ssd_rec is an on-media format");

/* What a block is, in memory. */
struct ssd_meta {
	char dir[SSD_DIR_MAX + 1];   /* NUL-terminated; may be empty */
	char name[SSD_NAME_MAX + 1]; /* NUL-terminated, 1..255 bytes, no '/' */
	uint64_t generation;
	uint64_t version;
	int64_t mtime_ns;
	uint32_t mode, uid, gid;
	/* Input of ssd_write_block: checksum below is already the payload's (the caller hashed
	 * it as it was written), so the payload is not read once more to hash it. */
	bool checksum_known;
	/* Outputs: set by ssd_write_block from what it stored, filled by ssd_recover. */
	uint64_t length;
	uint64_t checksum;     /* XXH3-64 of the payload */
	uint64_t name_hash[2]; /* XXH3-128 of name */
};

struct ssd_config {
	const char *path;     /* a regular file or a block device */
	uint64_t size;	      /* bytes to use; 0: the file's size / the whole device, or the
				 size it was formatted with */
	unsigned queue_depth; /* ring entries and I/Os in flight; 0: SSD_QUEUE_DEFAULT */
	bool create;	      /* create a missing file (size required) */
	bool format;	      /* discard whatever the device holds and format it anew */
	/* Memory that blocks are written from and read into (the DRAM pool): registered with
	 * the ring when the kernel allows, so its pages are not pinned again for every I/O.
	 * NULL: none. It must stay mapped until ssd_close. */
	void *mem;
	uint64_t mem_len;
};

struct ssd;

/*
 * Open (and if needed create, preallocate and format) the device at cfg->path and lock it
 * for this process (flock; a block device is also opened O_EXCL). A device that already
 * holds this format is kept as it is: call ssd_recover before allocating anything. One whose
 * first unit is all zeros is formatted. Anything else is refused unless cfg->format.
 * On failure err holds one line naming the path and saying why; returns -errno:
 *   -ENOENT   no such file or device (and !create), -EINVAL O_DIRECT not supported by the
 *   filesystem, size missing, too small or larger than the device, a path that is neither a
 *   regular file nor a block device; -EEXIST the device holds something else, or this format
 *   with another size (cfg->size must be 0 or that size); -EUCLEAN a damaged superblock or a
 *   file shorter than it says; -EPROTONOSUPPORT a newer format; -EBUSY another process has
 *   it; -ENOSPC no room to preallocate the file; others from open/io_uring.
 */
int ssd_open(struct ssd **out, const struct ssd_config *cfg, char *err, size_t errlen);
/* Wait for nothing (every call is synchronous), release the ring and close. */
void ssd_close(struct ssd *s);

/* True when ssd_open formatted the device (it held no blocks). */
bool ssd_fresh(const struct ssd *s);
/* True when ssd_open made a new file's space with written zeroes, which the device does
 * cheaply (FALLOC_FL_WRITE_ZEROES, Linux 6.17 and a device that zeroes by unmapping); else a
 * new file is preallocated with unwritten extents, slower at the first write of each. */
bool ssd_zeroed(const struct ssd *s);
/* Bytes of data units (meta units included), and of those allocated now. */
uint64_t ssd_capacity(const struct ssd *s);
uint64_t ssd_used(const struct ssd *s);
/* Units an extent for a payload of len bytes takes: its meta unit and the payload's. */
static inline uint64_t ssd_units_for(uint64_t len)
{
	return 1 + (len + SSD_UNIT - 1) / SSD_UNIT;
}

/*
 * Allocate an extent for a block of payload_len bytes; its first data unit in *unit.
 * -ENOSPC when no free extent is large enough, -EFBIG beyond the device, -EBUSY while a
 * device that holds blocks has not been recovered yet.
 */
int ssd_alloc(struct ssd *s, uint64_t payload_len, uint64_t *unit);
/*
 * Free the extent at unit. A sealed block's header entry is cleared first, and the units
 * return to the allocator only once that write is complete (so a crash never leaves a header
 * over reused units); if that write fails, the extent stays allocated and the error is
 * returned. -EINVAL if unit heads no extent.
 */
int ssd_free(struct ssd *s, uint64_t unit);

/*
 * Write a block into the extent at unit (from ssd_alloc, not sealed): payload units and the
 * meta unit, then, once both are complete, the sealed header entry. payload may have any
 * alignment (unaligned bytes go through bounce buffers). meta->dir, name, generation, version,
 * mtime_ns and mode are stored; length, checksum and name_hash are set on return.
 * -EINVAL unit heads no extent or len does not fit it, -EEXIST already sealed,
 * -ENAMETOOLONG / -EINVAL a bad dir or name, -EIO a device error or short write (the block
 * stays unsealed: free it).
 */
int ssd_write_block(struct ssd *s, uint64_t unit, struct ssd_meta *meta, const void *payload,
		    uint64_t len);

/* One block of a batch for ssd_write_blocks. */
struct ssd_write {
	uint64_t unit;
	struct ssd_meta *meta;
	const void *payload;
	uint64_t len;
	int ret; /* out: what ssd_write_block would have returned for this block */
};

/*
 * ssd_write_block for n blocks at once: every payload and meta unit of the batch in flight
 * together, then every header entry (one write per table granule, however many entries of
 * the batch it holds). A thread writing blocks one by one waits for two device round trips
 * per block; a batch waits for two in all. Returns 0 when every block was sealed, else the
 * first error; each w[i].ret says for its block.
 */
int ssd_write_blocks(struct ssd *s, struct ssd_write *w, unsigned n);

/*
 * Read len payload bytes from offset off of the block at unit into dst (any alignment; dst
 * aligned to the device's direct-I/O alignment and off to its sector is read into directly).
 * -EINVAL when [off, off + len) is outside the extent, -EIO a device error.
 */
int ssd_read(struct ssd *s, uint64_t unit, uint64_t off, void *dst, uint64_t len);

/* Read the whole payload of the sealed block at unit and check it against the checksum of
 * its header. 0, -EBADMSG on a mismatch, -ENOENT not sealed, -EIO. */
int ssd_verify(struct ssd *s, uint64_t unit);

/* fdatasync: every write completed before it is durable against power loss too. */
int ssd_sync(struct ssd *s);

struct ssd_recovery {
	uint64_t recovered; /* blocks handed to fn and kept */
	uint64_t bytes;	    /* their payload bytes */
	uint64_t dropped;   /* sealed-looking entries that did not check out, cleared */
	uint64_t rejected;  /* blocks fn refused, cleared */
	uint64_t stale;	    /* entries of an earlier format, cleared */
	uint64_t elapsed_ns;
};

/* Return true to keep the block, false to have it cleared and freed. meta lives until the
 * call returns. */
typedef bool (*ssd_recover_fn)(void *arg, uint64_t unit, const struct ssd_meta *meta);
/* Called for each dropped entry with a reason ("meta record checksum", ...), may be NULL. */
typedef void (*ssd_drop_fn)(void *arg, uint64_t unit, const char *why);

/*
 * One pass over the header table (read in large chunks), with the meta units of sealed
 * entries read in batches through the ring: each block that checks out goes to fn (in unit
 * order) and, kept, holds its extent in the allocator; entries that do not check out are
 * cleared and counted, none reaches fn. Payloads are not read (ssd_verify does). Must run
 * alone, before any ssd_alloc; once only. -EBUSY otherwise, -EIO, -ENOMEM (after a failure
 * nothing can be allocated: close the device).
 */
int ssd_recover(struct ssd *s, ssd_recover_fn fn, ssd_drop_fn drop, void *arg,
		struct ssd_recovery *res);

/* Tests: check the allocator and the extent table against each other. 0 or -EUCLEAN. */
int ssd_check(struct ssd *s);

#endif
