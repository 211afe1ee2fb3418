/*
 * namespace: the single-node index — directories, block entries and the life of every block
 * (writing → sealed → evicted/unlinked/replaced → freed) over one DRAM pool.
 *
 * Inode numbers are handed out from a 64-bit counter and never reused, so the kernel never
 * sees one id for two different sets of bytes. Every function returns 0 (or a count) on
 * success and a negative errno on failure; nothing here knows about FUSE. The kernel's lookup
 * count is mirrored by ns_lookup/…/ns_forget: an inode that lost its name is freed when the
 * kernel has forgotten it and nobody has it open.
 *
 * Thread-safe: one mutex (ns->lock) guards the tree, every inode's metadata, the LRU and the
 * pool allocator; it is held only for O(1) bookkeeping. Payload bytes move outside it: a
 * sealed block's bytes are immutable and pinned by its open count; a writing block's bytes
 * belong to its single writer handle, whose own lock orders concurrent requests on it.
 * Lock order: writer handle lock, then ns->lock.
 */
#ifndef KVC_META_NAMESPACE_H
#define KVC_META_NAMESPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fs/uapi/kvcachefs.h"

struct pool;
struct ssd;
struct ns;
struct ns_handle;

#define NS_ROOT_INO 1

/* Called, under ns->lock, for every name that vanishes without the kernel having asked
 * (eviction, a block discarded after ENOSPC). It must only queue the work: it may not block
 * or call back into the namespace. */
typedef void (*ns_vanish_fn)(void *arg, uint64_t parent_ino, const char *name);

/* A block whose bytes are here became visible under a name: sealed by its writer, committed,
 * or renamed (a new version). What a cluster announces to the block's entry owners. */
struct ns_pub {
	uint64_t parent; /* directory inode */
	const char *name;
	uint64_t offset; /* of the payload in the pool object (0 for an empty block) */
	uint64_t length, generation;
	uint64_t version; /* orders versions of one name across nodes (see ns_config) */
	int64_t mtime_ns;
	uint32_t mode, uid, gid;
	bool replica; /* a copy of another node's block (ns_handle_set_version) */
};
/* Called under ns->lock: it must only queue the work. */
typedef void (*ns_publish_fn)(void *arg, const struct ns_pub *p);

struct ns_config {
	uint64_t max_block_size;
	unsigned evict_high; /* percent of capacity that wakes the evictor */
	unsigned evict_low;  /* percent it evicts down to */
	/* With an SSD tier: percent of capacity that blocks with no SSD copy may fill before
	 * the evictor writes the oldest of them to SSD, keeping them in DRAM (0: 100, demotion at
	 * eviction only). */
	unsigned demote_above;
	ns_vanish_fn vanish;
	void *vanish_arg;
	ns_publish_fn publish; /* NULL: single node (see ns_set_hooks) */
	ns_vanish_fn forget;
	void *publish_arg;
	/* A block's version is its publication time in ns with the low 16 bits replaced by this
	 * tag (the node id's low bits), so two nodes never publish equal versions of a name. It
	 * is kept in the block header's seal_time_ns. */
	uint16_t version_tag;
	/* The SSD tier (engine/ssd.h; NULL, 0: none): DRAM eviction demotes sealed blocks to
	 * these devices instead of dropping them, and opening one promotes it back. */
	struct ssd **ssd;
	unsigned nssd;
	/* Notable events, one line each, level a syslog level: a record dropped at recovery
	 * (LOG_WARNING), a corrupt block dropped (LOG_ERR), an eviction burst (LOG_INFO: more
	 * than 64 blocks or 10% of the pool evicted in one wake-up of the evictor, at most one
	 * line per 10 s). It may be called with the namespace's lock held: it must only write
	 * the line, never call back into the namespace. NULL: stderr. */
	void (*log)(void *arg, int level, const char *msg);
	void *log_arg;
};

/* What ns_recover found. */
struct ns_recovery {
	uint64_t recovered; /* blocks kept, both tiers (one with a copy in each counts once) */
	uint64_t bytes;	    /* their payload bytes */
	uint64_t dirs;	    /* directories recovered */
	uint64_t dropped;   /* records that did not check out, or lost their directory */
	uint64_t elapsed_ns;
};

struct ns_attr {
	uint64_t ino;
	uint64_t generation;
	uint32_t mode;
	uint32_t nlink;
	uint32_t uid, gid;
	uint64_t size;
	uint64_t alloc_bytes;
	int64_t atime_ns, mtime_ns, ctime_ns;
	bool writing; /* a block not sealed yet: its attributes still change */
	bool remote;  /* the bytes are on other nodes (a stub) or this is a cached copy of them */
	uint64_t version;
	int64_t checked_ns; /* a remote block: when its entry was last confirmed */
};

/* What user.kvcachefs.* shows about a block. */
struct ns_block_info {
	bool is_dir;
	bool sealed;
	uint32_t refs;
	int64_t last_access_ns;
	uint64_t generation;
	uint64_t version;
	bool remote;	   /* no bytes here: a stub of a block held by other nodes */
	bool cached;	   /* a local copy of a block held by other nodes */
	bool on_ssd;	   /* its bytes are only on the SSD tier (opening it promotes it) */
	bool ssd_copy;	   /* it has a copy on the SSD tier */
	unsigned replicas; /* of the directory (of a block: its directory's) */
};

struct ns_dirent {
	char *name;
	uint64_t ino;
	uint32_t mode;
};

/* A snapshot of a directory's visible entries ("." and ".." first) for readdir. */
struct ns_dir {
	struct ns_dirent *ents;
	size_t count;
};

/* Create the namespace over pool (which it does not own) and start the evictor thread. */
int ns_create(struct ns **out, struct pool *pool, const struct ns_config *cfg);
/*
 * Rebuild the namespace from what an earlier daemon left: the records and sealed headers of
 * the pool (when pool_open kept it) and the blocks of every SSD device (ssd_recover), in one
 * pass over the headers without reading payloads: a recovered block's checksum is verified at
 * its first open (a mismatch: EIO, the block is dropped). Call once, after ns_create and before
 * the namespace serves anything. 0 or -errno (an SSD device error, ENOMEM).
 */
int ns_recover(struct ns *ns, struct ns_recovery *r);
/* Stop the evictor and free every inode and handle record (not the pool). */
void ns_destroy(struct ns *ns);

/* Name operations. Those that return an entry (lookup, mkdir, create) add one kernel
 * reference to it, which ns_forget drops. */
int ns_lookup(struct ns *ns, uint64_t parent, const char *name, struct ns_attr *attr);
void ns_forget(struct ns *ns, uint64_t ino, uint64_t nlookup);
int ns_getattr(struct ns *ns, uint64_t ino, struct ns_attr *attr);
int ns_mkdir(struct ns *ns, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	     uint32_t gid, struct ns_attr *attr);
int ns_rmdir(struct ns *ns, uint64_t parent, const char *name);
int ns_unlink(struct ns *ns, uint64_t parent, const char *name);
/* flags: 0 or RENAME_NOREPLACE (EEXIST); RENAME_EXCHANGE is refused with EINVAL. */
int ns_rename(struct ns *ns, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags);

/* Change metadata. valid: bitmask of NS_SET_*; a size change is allowed only through the
 * writer's own handle h (EPERM on a sealed block, EBUSY by path on a writing one, EFBIG past
 * the maximum block size). */
#define NS_SET_MODE  (1u << 0)
#define NS_SET_UID   (1u << 1)
#define NS_SET_GID   (1u << 2)
#define NS_SET_SIZE  (1u << 3)
#define NS_SET_ATIME (1u << 4)
#define NS_SET_MTIME (1u << 5)
int ns_setattr(struct ns *ns, uint64_t ino, struct ns_handle *h, unsigned valid,
	       const struct ns_attr *in, struct ns_attr *out);

/* Blocks. ns_create_block makes a new writing block under a name that must not exist
 * (EEXIST for a sealed one, EBUSY while another writer has it) and opens it for writing.
 * ns_open opens an existing block: for reading only when sealed (EBUSY while written),
 * never for writing (EPERM when sealed, EBUSY while written). */
int ns_create_block(struct ns *ns, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
		    uint32_t gid, struct ns_attr *attr, struct ns_handle **h);
int ns_open(struct ns *ns, uint64_t ino, int flags, struct ns_handle **h);
/* Read up to len bytes at off. For a sealed block *ptr points into the pool (valid until
 * ns_release); for the writer's own handle the bytes are copied into buf (len bytes).
 * Returns the byte count (0 at end of block). */
ssize_t ns_read(struct ns_handle *h, uint64_t off, size_t len, void *buf, const void **ptr);
/* Write len bytes at off through the writer handle: EFBIG past the maximum block size,
 * ENOSPC when the pool cannot make room (the block is then discarded at close), EPERM after
 * the block was sealed. Returns len. */
ssize_t ns_write(struct ns_handle *h, uint64_t off, const void *buf, size_t len);
/* ns_write with the bytes put in place by fill(arg, dst, len) (0 or -errno), e.g. straight
 * from a pipe: the bytes at dst are final when it returns. */
typedef int (*ns_fill_fn)(void *arg, void *dst, size_t len);
ssize_t ns_write_fill(struct ns_handle *h, uint64_t off, size_t len, ns_fill_fn fill, void *arg);
/* Seal the block now if h is its writer (fsync); a discarded block reports ENOSPC. */
int ns_seal(struct ns_handle *h);
/* One close() of an fd on h (FUSE flush): the writer may still write through a dup, so the
 * block is only marked as closing (see ns_open), and recorded as it is, so that a crash
 * before the release finds it sealed (a later write takes that back); ENOSPC if the block
 * is being discarded. */
int ns_flush(struct ns_handle *h);
/* The last close of the handle: seals a still-writing block, unpins, frees what nothing
 * needs anymore. */
void ns_release(struct ns_handle *h);

/* Is h the writer's handle (reads through it copy, see ns_read)? */
bool ns_handle_is_writer(const struct ns_handle *h);

int ns_opendir(struct ns *ns, uint64_t ino, struct ns_dir *dir);
void ns_dir_free(struct ns_dir *dir);

int ns_block_info(struct ns *ns, uint64_t ino, struct ns_block_info *info);
void ns_status(struct ns *ns, struct kvcachefs_status *st);
/* The tiers' figures (every field but version and flags). */
void ns_tiers(struct ns *ns, struct kvcachefs_tiers *t);
/* Evict least-recently-used blocks until usage is at most target_pct of capacity.
 * Returns the number evicted. (The evictor thread calls it; tests may too.) */
uint64_t ns_evict(struct ns *ns, unsigned target_pct);

/* ---- directories shared with a cluster (fs/cluster.c) ---- */

/* The path of directory ino from the root ("" for the root; names joined by '/'). ENOENT
 * when it has no name anymore, ENAMETOOLONG. */
int ns_path(struct ns *ns, uint64_t ino, char *buf, size_t len);
/* Create the directory at path and any missing parent (another node made it); an existing
 * one is fine. ENOTDIR when a component is a block, EINVAL for an empty component. */
int ns_mkdir_path(struct ns *ns, const char *path, uint32_t mode);
/* Remove the directory at path (another node removed it) if it is empty here: ENOTEMPTY,
 * ENOENT, ENOTDIR otherwise. The kernel is told its entry vanished. */
int ns_rmdir_path(struct ns *ns, const char *path);

/* ---- the side channel (fs/side.c) ---- */

/* Where a block's bytes are: offset from the start of the pool object. */
struct ns_loc {
	uint64_t offset, length, generation, checksum;
};

/* Open the sealed block `name` of directory parent for reading, without a kernel reference
 * (a side-channel pin: it keeps the bytes until ns_release). ENOENT, EBUSY (being written),
 * EISDIR. */
int ns_open_name(struct ns *ns, uint64_t parent, const char *name, struct ns_handle **h);
/* Where the bytes of h's block are (h is a reader's handle, or a reservation). */
void ns_handle_loc(const struct ns_handle *h, struct ns_loc *loc);

/* The k-th name of a batch, decoded into buf (NS_NAME_MAX + 1 bytes), or NULL if malformed. */
typedef const char *(*ns_name_at_fn)(void *arg, size_t k, char *buf);
/* How many leading names of the batch are sealed blocks of parent: 0..n, or -ENOENT/-ENOTDIR
 * for the directory, -EINVAL for a malformed name. One lock hold for the batch. */
int ns_lookup_prefix(struct ns *ns, uint64_t parent, size_t n, ns_name_at_fn name_at, void *arg);

/* Where each of a batch of sealed blocks is, without keeping them (kvc_load_batch validates
 * against the block headers): errs[k] is 0 with locs[k] filled (checksum not read: 0), or
 * ENOENT, EISDIR, EBUSY (being written), EAGAIN (its writer has closed it: the seal is
 * imminent, ask again with ns_open_name, which waits). Counts as an access for the LRU.
 * One lock hold for the batch. 0, or -ENOENT/-ENOTDIR for the directory, -EINVAL for a
 * malformed name. */
int ns_locate_batch(struct ns *ns, uint64_t parent, size_t n, ns_name_at_fn name_at, void *arg,
		    struct ns_loc *locs, int *errs);

/* Reserve len bytes for a block that a commit will publish as `name` in parent; until then it
 * is invisible (counted as being written). EFBIG past the maximum block size, ENOSPC when
 * evicting everything evictable is not enough. h is a writer handle. */
int ns_reserve(struct ns *ns, uint64_t parent, const char *name, uint64_t len, uint32_t mode,
	       uint32_t uid, uint32_t gid, struct ns_handle **h);
/* The reservation's bytes (NULL for an empty block): the caller fills them before commit. */
void *ns_handle_data(struct ns_handle *h);
/* Seal the reservation (with *sum as its checksum when given, else computed) and publish it
 * under its name, replacing an existing block (*replaced says so: the kernel must then forget
 * its cached entry for the name) or EEXIST with RENAME_NOREPLACE. On success
 * h is released and loc says where the block is; on failure (ENOENT: directory gone, EEXIST,
 * EISDIR) the reservation stays, sealed, and may be committed again or aborted. */
int ns_commit(struct ns_handle *h, unsigned flags, const uint64_t *sum, bool *replaced,
	      struct ns_loc *loc);
/* The directory of h's block (0 when it has none: a reservation, a detached block). */
uint64_t ns_handle_parent(const struct ns_handle *h);
/* The name a reservation will be published under. */
const char *ns_handle_name(const struct ns_handle *h);
/* Give a reservation up (its space is freed) and release h. */
void ns_abort(struct ns_handle *h);

/* ---- blocks shared with a cluster (fs/remote.c) ---- */

/* Install the cluster's hooks (before the mount serves requests): publish (see ns_pub),
 * forget — called under ns->lock when a block published here loses its bytes here
 * (eviction, ns_drop) — and the version tag (see ns_config). */
void ns_set_hooks(struct ns *ns, ns_publish_fn publish, ns_vanish_fn forget, void *arg,
		  uint16_t version_tag);

/* A block known from its entry in the cluster, whose bytes are on other nodes. */
struct ns_remote {
	uint64_t size, version;
	int64_t mtime_ns;
	uint32_t mode, uid, gid;
};
/*
 * Make name in parent stand for a remote block (a stub: no bytes here) and return its
 * attributes with one kernel reference, as ns_lookup does. An existing local block (written
 * here, a replica) is returned as it is; a stub or cached copy of the same version is
 * refreshed (checked_ns); one of another version is replaced. EISDIR, ENOENT/ENOTDIR for
 * the directory. A stub goes when the kernel forgets it.
 */
int ns_add_remote(struct ns *ns, uint64_t parent, const char *name, const struct ns_remote *r,
		  struct ns_attr *attr);
/* Remove the stub or cached copy ino of name if it is still there (its entry is gone or
 * changed): 0, or ENOENT. A local block is never removed by this. */
int ns_remove_remote(struct ns *ns, uint64_t ino);
/* Where a stub is and what it stands for: its directory, name (buf: 256 bytes), size and
 * version. ENOENT; EEXIST when ino has bytes here (nothing to fetch). */
int ns_remote_info(struct ns *ns, uint64_t ino, uint64_t *parent, char *name, uint64_t *size,
		   uint64_t *version);
/* Give the bytes of reservation h (made by ns_reserve for the stub's name and size, filled,
 * with checksum sum) to stub ino, which becomes a cached copy (evicted first, never
 * announced). h is released in every case. ESTALE when the stub is gone or stands for
 * another version now. */
int ns_fill_remote(struct ns_handle *h, uint64_t ino, uint64_t version, uint64_t sum);
/* A reservation that is a replica of another node's block: publish it with this version
 * (rather than a new one) when committed. */
void ns_handle_set_version(struct ns_handle *h, uint64_t version);

/* Every block whose bytes are here and that is published under a name (not stubs, not
 * cached copies, not blocks being written): *out (free with ns_pubs_free), *n. */
int ns_local_blocks(struct ns *ns, struct ns_pub **out, size_t *n);
void ns_pubs_free(struct ns_pub *p, size_t n);
/* Drop the local block name of parent if its generation is generation (0: any): another
 * version replaced it elsewhere, or it was unlinked on another node. The kernel is told.
 * 0, ENOENT, ESTALE (another generation), EBUSY (being written). */
int ns_drop(struct ns *ns, uint64_t parent, const char *name, uint64_t generation);
/* Look a directory up by path: its inode number. ENOENT, ENOTDIR. */
int ns_dir_ino(struct ns *ns, const char *path, uint64_t *ino);
/* Copies of each block of directory ino that a cluster keeps (1..8; default 1): set it when
 * set > 0. Returns the value (after the change), or ENOENT/ENOTDIR. */
int ns_replicas(struct ns *ns, uint64_t ino, unsigned set);

/* Blocks whose bytes came here from other nodes since the start, with their payload bytes:
 * stubs filled into cached copies (ns_fill_remote), blocks read streamed without a copy
 * (ns_note_fetched) and replicas committed (ns_commit of a reservation given a version by
 * ns_handle_set_version). Lock-free counters, for metrics. */
struct ns_remote_stats {
	uint64_t fetched, fetched_bytes;
	uint64_t replicas, replica_bytes;
};
void ns_remote_stats(struct ns *ns, struct ns_remote_stats *out);
/* Count blocks and bytes that came from other nodes without becoming local copies. */
void ns_note_fetched(struct ns *ns, uint64_t blocks, uint64_t bytes);

#endif
