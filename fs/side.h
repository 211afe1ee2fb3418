/*
 * side: the side channel of a kvcachefs mount — the ioctls of fs/uapi/kvcachefs.h that give
 * engines zero-copy access to the pool (pool info, batch lookup, pins, reservations, GPU).
 *
 * Pins, reservations and GPU buffers are "slots": each has a 64-bit id from a counter that is
 * never reused, sits in one table keyed by id (so a stale or foreign id is recognised) and on
 * the list of the open directory it was made through (struct side_owner), which releases
 * them all when the kernel releases that directory (last close, or the process dying).
 */
#ifndef KVC_FS_SIDE_H
#define KVC_FS_SIDE_H

#include "fs/fuse_conf.h"

#include <stddef.h>
#include <stdint.h>

struct ns;
struct pool;
struct side;
struct side_slot;

/* The slots of one open directory; embedded in ops.c's directory handle. */
struct side_owner {
	struct side_slot *slots; /* under side->lock */
};

/* Fills the member list for KVCACHEFS_IOC_NODES (cluster mode); NULL: single node. */
struct kvcachefs_nodes;
typedef void (*side_nodes_fn)(void *arg, struct kvcachefs_nodes *out);

/* Makes block name of directory parent local if another node holds it (cluster mode):
 * 0, or a negative errno (ENOENT: nowhere). */
typedef int (*side_prefetch_fn)(void *arg, uint64_t parent, const char *name);

struct side_config {
	struct ns *ns;
	struct pool *pool;
	uint64_t max_block_size;
	side_nodes_fn nodes;
	void *nodes_arg;
	side_prefetch_fn prefetch; /* NULL: single node */
	/* Fetch, in parallel, the blocks among names [from, n) held only elsewhere; NULL: none */
	int (*prefetch_batch)(void *arg, uint64_t parent, size_t from, size_t n,
			      const char *(*name_at)(void *arg, size_t k, char *buf),
			      void *name_arg);
	void *prefetch_arg;
};

int side_create(struct side **out, const struct side_config *cfg);
/* Free every slot still open (after the session's threads are gone) and the table. */
void side_destroy(struct side *s);
/* The kernel connection, for invalidating replaced names (set once mounted). */
void side_set_session(struct side *s, struct fuse_session *se);

/* Release every slot of an owner (releasedir). */
void side_owner_release(struct side *s, struct side_owner *o);

/* Serve one ioctl (owner is NULL for a regular file's descriptor). Replies to req. */
void side_ioctl(struct side *s, fuse_req_t req, fuse_ino_t ino, unsigned cmd,
		struct side_owner *owner, const void *in, size_t in_size, size_t out_size);

/* Side-channel figures for the metrics endpoint (fs/metrics.c). Any thread. */
struct side_stats {
	uint64_t pins, reservations;	/* live now */
	uint64_t lookups;		/* LOOKUP requests (batch longest-prefix lookups) */
	uint64_t loads, load_bytes;	/* blocks pinned or located (PIN, LOCATE), payload bytes */
	uint64_t commits, commit_bytes; /* reservations committed, payload bytes */
};
void side_stats(struct side *s, struct side_stats *out);

#endif
