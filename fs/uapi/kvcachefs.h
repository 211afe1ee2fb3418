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
	__u32 version;		/* in: KVCACHEFS_ABI_VERSION; out: the daemon's */
	__u32 flags;		/* out: KVCACHEFS_STATUS_CLUSTER in cluster mode */
	__u64 capacity;		/* bytes of block storage in the DRAM pool */
	__u64 used;		/* bytes allocated to blocks (page granularity) */
	__u64 free;		/* capacity - used */
	__u64 blocks;		/* sealed blocks reachable by a name */
	__u64 writing;		/* blocks being written (not yet sealed) */
	__u64 directories;	/* directories, the root excluded */
	__u64 reads;		/* read requests served */
	__u64 writes;		/* write requests served */
	__u64 bytes_read;	/* payload bytes returned by reads */
	__u64 bytes_written;	/* payload bytes accepted by writes */
	__u64 hits;		/* opens of a sealed block for reading */
	__u64 misses;		/* lookups of a name that does not exist */
	__u64 evictions;	/* blocks evicted to stay under the watermarks */
	__u64 enospc;		/* writes refused for lack of space */
	__u64 max_block_size;	/* --max-block-size */
	__u32 evict_high_pct;	/* --evict-high */
	__u32 evict_low_pct;	/* --evict-low */
	__u64 pool_size;	/* bytes of the pool object, headers included */
	__u64 start_time_ns;	/* CLOCK_REALTIME of the daemon's start */
	__u64 pinned;		/* live side-channel pins */
	__u64 reservations;	/* live side-channel reservations */
	__u64 members;		/* cluster members known (1 for a single node) */
	__u64 cluster_capacity; /* block storage of all members, bytes */
	__u64 cluster_used;	/* of which used */
	__u64 reserved[3];
};

#define KVCACHEFS_STATUS_CLUSTER 0x1u

#define KVCACHEFS_IOC_STATUS _IOWR(KVCACHEFS_IOC_MAGIC, 1, struct kvcachefs_status)

/* The storage tiers of the mount and the recovery at the daemon's start (ioctl on any
 * directory of it). dram_blocks + ssd-only blocks = status.blocks. */
struct kvcachefs_tiers {
	__u32 version;		/* in: KVCACHEFS_ABI_VERSION; out: the daemon's */
	__u32 flags;		/* 0 */
	__u64 dram_capacity;	/* bytes of block storage in the DRAM pool (= status.capacity) */
	__u64 dram_used;	/* of which allocated (block records included) */
	__u64 dram_blocks;	/* sealed blocks with their bytes in DRAM */
	__u64 ssd_capacity;	/* bytes of the SSD tier's data units, all devices (0: no --ssd) */
	__u64 ssd_used;		/* of which allocated to blocks (their meta units included) */
	__u64 ssd_blocks;	/* blocks with a copy on SSD */
	__u64 ssd_devices;	/* --ssd paths in use */
	__u64 demotions;	/* blocks copied from DRAM to SSD by eviction */
	__u64 promotions;	/* blocks copied from SSD back to DRAM to be read */
	__u64 ssd_evictions;	/* SSD copies dropped to make room (LRU) */
	__u64 recovered;	/* blocks recovered at start, both tiers */
	__u64 recovery_dropped; /* records found at start and dropped (incomplete, corrupt) */
	__u64 recovery_ns;	/* how long that recovery took */
	__u64 reserved[8];
};

#define KVCACHEFS_IOC_TIERS _IOWR(KVCACHEFS_IOC_MAGIC, 14, struct kvcachefs_tiers)

/*
 * ---- The side channel --------------------------------------------------------------------
 *
 * Pool info (any file or directory of the mount) says how to map the node's DRAM pool: open
 * `path` (read-only, or read-write for a trusted writer, see the README's trust model), check
 * that fstat() gives pool_dev/pool_ino, and mmap pool_size bytes MAP_SHARED. Every offset the
 * other commands return is a byte offset into that mapping.
 *
 * The other commands are issued on a directory fd and act on names in that directory. Pins,
 * reservations and GPU buffers belong to the open file description they were made through:
 * closing it (or the process dying) releases every pin, aborts every reservation and drops
 * every GPU buffer it holds. Their ids are 64-bit, never reused by a daemon; an id that is not
 * live (never issued, or already released, committed or aborted) gets EINVAL, a live id made
 * through another descriptor gets EPERM.
 *
 * Name lists (lookup, pin, GPU load) come in one of two encodings, chosen by flags:
 *   packed (default): for each name, one byte of length (1..255) then the name's bytes;
 *   KVCACHEFS_NAMES_HEX: 16 bytes per name, the binary form of 32 lowercase hex digits, to
 *   which `suffix` (NUL-terminated, may be empty) is appended: "<32 hex digits><suffix>".
 * A name containing '/' or NUL, a length of 0 or a list running past the names area: EINVAL;
 * count above the command's maximum: E2BIG.
 */
#define KVCACHEFS_NAMES_HEX  0x1u
#define KVCACHEFS_SUFFIX_MAX 16 /* bytes of suffix, the NUL included */
#define KVCACHEFS_PATH_MAX   256

struct kvcachefs_pool_info {
	__u32 version;	      /* in: KVCACHEFS_ABI_VERSION; out: the daemon's */
	__u32 page_size;      /* allocation unit; every block starts on a page boundary */
	__u64 pool_size;      /* bytes to map */
	__u64 data_offset;    /* offset of the first data page */
	__u64 capacity;	      /* bytes of data pages */
	__u64 pool_dev;	      /* st_dev of the pool object */
	__u64 pool_ino;	      /* st_ino of the pool object */
	__u64 max_block_size; /* --max-block-size */
	__u32 pool_mode;      /* permission bits of the pool object */
	__u32 pool_gid;	      /* its group */
	__u32 daemon_pid;     /* in the daemon's pid namespace */
	__u32 flags;	      /* 0 for now */
	__u64 header_offset;  /* offset of the block header table (see below) */
	__u64 reserved[3];
	char path[KVCACHEFS_PATH_MAX]; /* absolute path of the pool object, NUL-terminated */
};

/*
 * Block headers, readable in the pool mapping: the block whose payload starts at offset O has
 * its header at header_offset + sizeof(struct kvcachefs_block_header) * (O - data_offset) /
 * page_size. The daemon clears a header (magic 0) when it frees the block, before the pages
 * can be reused, and generations are never reused: a reader that copied a block without a pin
 * and finds magic, KVCACHEFS_HDR_SEALED and generation unchanged after the copy (read with
 * acquire ordering) copied the block as sealed. This is how kvc_load_batch reads.
 */
#define KVCACHEFS_HDR_MAGIC  0x4b4c424bu /* "KBLK" */
#define KVCACHEFS_HDR_SEALED 0x1u
struct kvcachefs_block_header {
	__u32 magic;	    /* KVCACHEFS_HDR_MAGIC while the slot heads a block */
	__u32 flags;	    /* KVCACHEFS_HDR_SEALED once the payload is final */
	__u64 generation;   /* unique per block version, never reused */
	__u64 name_hash[2]; /* XXH3-128 of the block's file name (low, high) */
	__u64 length;	    /* payload bytes */
	__u64 checksum;	    /* XXH3-64 of the payload, once sealed */
	__u64 seal_time_ns; /* CLOCK_REALTIME at the seal */
	__u32 npages;	    /* pages allocated to the block */
	__u32 reserved;
};

/* Longest-prefix lookup: how many leading names are sealed blocks of the directory. */
#define KVCACHEFS_LOOKUP_MAX   1000
#define KVCACHEFS_LOOKUP_BYTES 16000
struct kvcachefs_lookup {
	__u32 version;
	__u32 flags;			   /* KVCACHEFS_NAMES_HEX or 0 */
	__u32 count;			   /* in: names in the list, 0..KVCACHEFS_LOOKUP_MAX */
	__u32 found;			   /* out: length of the present prefix, 0..count */
	char suffix[KVCACHEFS_SUFFIX_MAX]; /* KVCACHEFS_NAMES_HEX only */
	__u8 names[KVCACHEFS_LOOKUP_BYTES];
};

/* Pin a batch of sealed blocks: each one stays in the pool, unchanged, until unpinned, even if
 * it is unlinked, replaced or the pool is under pressure. Every name gets its own result:
 * error 0 and a pin, or ENOENT (no such block), EBUSY (still being written), EISDIR. The
 * ioctl itself fails only for a malformed request. */
#define KVCACHEFS_PIN_MAX   128
#define KVCACHEFS_PIN_BYTES 8192
struct kvcachefs_pinned {
	__u64 pin;	  /* pin id, for unpin and GPU loads */
	__u64 offset;	  /* of the payload in the pool mapping (0 for an empty block) */
	__u64 length;	  /* payload bytes */
	__u64 generation; /* unique to this version of the block */
	__u64 checksum;	  /* XXH3-64 of the payload */
	__s32 error;	  /* 0 or a positive errno; the other fields are then 0 */
	__u32 pad;
};
struct kvcachefs_pin {
	__u32 version;
	__u32 flags;			   /* KVCACHEFS_NAMES_HEX or 0 */
	__u32 count;			   /* in: 1..KVCACHEFS_PIN_MAX */
	__u32 pinned;			   /* out: entries with error 0 */
	char suffix[KVCACHEFS_SUFFIX_MAX]; /* KVCACHEFS_NAMES_HEX only */
	__u8 names[KVCACHEFS_PIN_BYTES];
	struct kvcachefs_pinned out[KVCACHEFS_PIN_MAX];
};

/* Locate a batch of sealed blocks without pinning them (up to KVCACHEFS_LOCATE_MAX, so a
 * whole prefix usually takes one request). The names are read whole before the answer is
 * written over them: out[k] and error[k] (0 or a positive errno: ENOENT, EBUSY, EISDIR)
 * answer name k. The answer is only a hint: the blocks may be freed at any moment, so readers
 * validate against the block header (see above). */
#define KVCACHEFS_LOCATE_MAX 600
struct kvcachefs_located {
	__u64 offset; /* of the payload in the pool mapping (0 for an empty block) */
	__u64 length;
	__u64 generation;
};
struct kvcachefs_locate {
	__u32 version;
	__u32 flags;			   /* KVCACHEFS_NAMES_HEX or 0 */
	__u32 count;			   /* in: 1..KVCACHEFS_LOCATE_MAX */
	__u32 found;			   /* out: entries with error 0 */
	char suffix[KVCACHEFS_SUFFIX_MAX]; /* KVCACHEFS_NAMES_HEX only */
	union {
		__u8 names[KVCACHEFS_LOCATE_MAX * 24];		    /* in */
		struct kvcachefs_located out[KVCACHEFS_LOCATE_MAX]; /* out */
	};
	__u8 error[KVCACHEFS_LOCATE_MAX]; /* out */
};

/* Unpin: all ids are checked first; one bad id fails the call (EINVAL/EPERM) with nothing
 * unpinned. */
#define KVCACHEFS_UNPIN_MAX 256
struct kvcachefs_unpin {
	__u32 version;
	__u32 count; /* 1..KVCACHEFS_UNPIN_MAX */
	__u64 pins[KVCACHEFS_UNPIN_MAX];
};

/* Reserve length bytes of pool for a new block to be called `name` in the directory. The
 * block is invisible until committed. EFBIG above --max-block-size, ENOSPC when nothing more
 * can be evicted, EINVAL for a bad name. */
struct kvcachefs_reserve {
	__u32 version;
	__u32 mode;   /* permission bits of the block (0644 when 0) */
	__u64 length; /* in: payload bytes */
	__u64 id;     /* out: reservation id */
	__u64 offset; /* out: of the reserved bytes in the pool mapping (trusted writers) */
	char name[KVCACHEFS_PATH_MAX];
};

/* Commit a reservation: seal it and publish it under its name at once, replacing an existing
 * block as rename() would (or EEXIST with KVCACHEFS_COMMIT_NOREPLACE). The payload is either
 * copied by the daemon from the caller's memory [src_addr, src_addr + length) (one copy, read
 * from the calling process; EFAULT when that memory is not readable), or, with
 * KVCACHEFS_COMMIT_INPLACE, already written in place by a trusted writer (a caller without
 * write permission on the pool object gets EPERM: it could not have filled it). A failed
 * commit leaves the reservation open (commit again or abort). ENOENT: the directory was
 * removed. */
#define KVCACHEFS_COMMIT_NOREPLACE 0x1u
#define KVCACHEFS_COMMIT_INPLACE   0x2u
struct kvcachefs_commit {
	__u32 version;
	__u32 flags;
	__u64 id;
	__u64 src_addr;	  /* ignored with KVCACHEFS_COMMIT_INPLACE */
	__u64 generation; /* out */
	__u64 checksum;	  /* out: XXH3-64 of the payload */
};

/* Abort a reservation: its space is freed, nothing is published. */
struct kvcachefs_abort {
	__u32 version;
	__u32 pad;
	__u64 id;
};

/* GPU: register a buffer of the calling process by its CUDA IPC memory handle (opened by the
 * daemon through the CUDA runtime, loaded with dlopen), then copy pinned blocks into it.
 * ENODEV when the daemon has no CUDA runtime or no GPU. */
#define KVCACHEFS_CUDA_IPC_HANDLE_SIZE 64
struct kvcachefs_gpu_register {
	__u32 version;
	__u32 device; /* CUDA device ordinal the handle belongs to */
	__u64 size;   /* bytes of the buffer */
	__u8 handle[KVCACHEFS_CUDA_IPC_HANDLE_SIZE];
	__u64 id; /* out */
};

#define KVCACHEFS_GPU_LOAD_MAX 256
struct kvcachefs_gpu_load {
	__u32 version;
	__u32 count; /* 1..KVCACHEFS_GPU_LOAD_MAX */
	__u64 id;    /* GPU buffer */
	struct {
		__u64 pin;    /* a pin of this descriptor */
		__u64 offset; /* where the block lands in the GPU buffer */
	} ent[KVCACHEFS_GPU_LOAD_MAX];
};

struct kvcachefs_gpu_unregister {
	__u32 version;
	__u32 pad;
	__u64 id;
};

/* The cluster's members as this daemon knows them (any file or directory of the mount). A
 * single-node daemon lists itself only, without KVCACHEFS_NODES_CLUSTER. */
#define KVCACHEFS_NODES_MAX	64
#define KVCACHEFS_NODES_CLUSTER 0x1u /* flags: the daemon is in cluster mode */
#define KVCACHEFS_NODES_STALE	0x2u /* flags: etcd unreachable, the list is the last known */
#define KVCACHEFS_NODE_SELF	0x1u /* node state bits */
#define KVCACHEFS_NODE_UP	0x2u
struct kvcachefs_node {
	__u64 node_id;
	__u64 pool_size; /* bytes of block storage */
	__u64 pool_used;
	__u64 started;	  /* Unix time the daemon started */
	__u32 state;	  /* KVCACHEFS_NODE_* */
	__u32 transports; /* 0x1 TCP, 0x2 RDMA */
	char addr[64];	  /* its transfer engine, HOST:PORT */
};
struct kvcachefs_nodes {
	__u32 version;
	__u32 count; /* out: entries in node[] */
	__u32 total; /* out: members known (may exceed KVCACHEFS_NODES_MAX) */
	__u32 flags; /* out: KVCACHEFS_NODES_* */
	char cluster[64];
	struct kvcachefs_node node[KVCACHEFS_NODES_MAX];
};

#define KVCACHEFS_IOC_POOL_INFO	     _IOWR(KVCACHEFS_IOC_MAGIC, 2, struct kvcachefs_pool_info)
#define KVCACHEFS_IOC_LOOKUP	     _IOWR(KVCACHEFS_IOC_MAGIC, 3, struct kvcachefs_lookup)
#define KVCACHEFS_IOC_PIN	     _IOWR(KVCACHEFS_IOC_MAGIC, 4, struct kvcachefs_pin)
#define KVCACHEFS_IOC_UNPIN	     _IOW(KVCACHEFS_IOC_MAGIC, 5, struct kvcachefs_unpin)
#define KVCACHEFS_IOC_RESERVE	     _IOWR(KVCACHEFS_IOC_MAGIC, 6, struct kvcachefs_reserve)
#define KVCACHEFS_IOC_COMMIT	     _IOWR(KVCACHEFS_IOC_MAGIC, 7, struct kvcachefs_commit)
#define KVCACHEFS_IOC_ABORT	     _IOW(KVCACHEFS_IOC_MAGIC, 8, struct kvcachefs_abort)
#define KVCACHEFS_IOC_GPU_REGISTER   _IOWR(KVCACHEFS_IOC_MAGIC, 9, struct kvcachefs_gpu_register)
#define KVCACHEFS_IOC_GPU_LOAD	     _IOW(KVCACHEFS_IOC_MAGIC, 10, struct kvcachefs_gpu_load)
#define KVCACHEFS_IOC_GPU_UNREGISTER _IOW(KVCACHEFS_IOC_MAGIC, 11, struct kvcachefs_gpu_unregister)
#define KVCACHEFS_IOC_LOCATE	     _IOWR(KVCACHEFS_IOC_MAGIC, 12, struct kvcachefs_locate)
#define KVCACHEFS_IOC_NODES	     _IOWR(KVCACHEFS_IOC_MAGIC, 13, struct kvcachefs_nodes)

#ifdef __cplusplus
#define KVCACHEFS_ABI_CHECK(t, n) static_assert(sizeof(struct t) == (n), #t " is ABI")
#else
#define KVCACHEFS_ABI_CHECK(t, n) _Static_assert(sizeof(struct t) == (n), #t " is ABI")
#endif
KVCACHEFS_ABI_CHECK(kvcachefs_status, 216);
KVCACHEFS_ABI_CHECK(kvcachefs_tiers, 176);
KVCACHEFS_ABI_CHECK(kvcachefs_pool_info, 360);
KVCACHEFS_ABI_CHECK(kvcachefs_lookup, 16032);
KVCACHEFS_ABI_CHECK(kvcachefs_pinned, 48);
KVCACHEFS_ABI_CHECK(kvcachefs_pin, 14368);
KVCACHEFS_ABI_CHECK(kvcachefs_unpin, 2056);
KVCACHEFS_ABI_CHECK(kvcachefs_reserve, 288);
KVCACHEFS_ABI_CHECK(kvcachefs_commit, 40);
KVCACHEFS_ABI_CHECK(kvcachefs_abort, 16);
KVCACHEFS_ABI_CHECK(kvcachefs_gpu_register, 88);
KVCACHEFS_ABI_CHECK(kvcachefs_gpu_load, 4112);
KVCACHEFS_ABI_CHECK(kvcachefs_gpu_unregister, 16);
KVCACHEFS_ABI_CHECK(kvcachefs_block_header, 64);
KVCACHEFS_ABI_CHECK(kvcachefs_located, 24);
KVCACHEFS_ABI_CHECK(kvcachefs_locate, 15032);
KVCACHEFS_ABI_CHECK(kvcachefs_node, 104);
KVCACHEFS_ABI_CHECK(kvcachefs_nodes, 6736);

#endif
