/*
 * kvcachefs.h: the ioctl ABI of a kvcachefs mount.
 *
 * This header is the contract between the daemon and applications; it includes only kernel
 * headers and fixed-width types. Every command is a fixed-size _IOR/_IOW/_IOWR: FUSE copies
 * exactly the size encoded in the command and follows no pointer inside an argument. Every
 * argument begins with a u32 ABI version that the caller sets to KVCACHEFS_ABI_VERSION; a
 * daemon answers an unknown version with EPROTO and an unknown command with ENOTTY.
 * Struct layouts are the ABI: fields are only ever appended, with the static size checks
 * below updated in the same change.
 */
#ifndef KVCACHEFS_UAPI_H
#define KVCACHEFS_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KVCACHEFS_ABI_VERSION 1
#define KVCACHEFS_IOC_MAGIC   0xCF

/* Pool and activity counters of the whole mount (ioctl on any directory of it). */
struct kvcachefs_status {
	__u32 version;	      /* in: KVCACHEFS_ABI_VERSION; out: the daemon's */
	__u32 flags;	      /* out: 0 for now */
	__u64 capacity;	      /* bytes of block storage in the DRAM pool */
	__u64 used;	      /* bytes allocated to blocks (page granularity) */
	__u64 free;	      /* capacity - used */
	__u64 blocks;	      /* sealed blocks reachable by a name */
	__u64 writing;	      /* blocks being written (not yet sealed) */
	__u64 directories;    /* directories, the root excluded */
	__u64 reads;	      /* read requests served */
	__u64 writes;	      /* write requests served */
	__u64 bytes_read;     /* payload bytes returned by reads */
	__u64 bytes_written;  /* payload bytes accepted by writes */
	__u64 hits;	      /* opens of a sealed block for reading */
	__u64 misses;	      /* lookups of a name that does not exist */
	__u64 evictions;      /* blocks evicted to stay under the watermarks */
	__u64 enospc;	      /* writes refused for lack of space */
	__u64 max_block_size; /* --max-block-size */
	__u32 evict_high_pct; /* --evict-high */
	__u32 evict_low_pct;  /* --evict-low */
	__u64 pool_size;      /* bytes of the pool object, headers included */
	__u64 start_time_ns;  /* CLOCK_REALTIME of the daemon's start */
	__u64 reserved[8];
};

#define KVCACHEFS_IOC_STATUS _IOWR(KVCACHEFS_IOC_MAGIC, 1, struct kvcachefs_status)

#ifdef __cplusplus
static_assert(sizeof(struct kvcachefs_status) == 216, "kvcachefs_status is ABI");
#else
_Static_assert(sizeof(struct kvcachefs_status) == 216, "kvcachefs_status is ABI");
#endif

#endif
