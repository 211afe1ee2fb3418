/*
 * remote: blocks shared across a cluster — the entry shard this node owns, announcing the
 * blocks written here, finding and fetching blocks held elsewhere, listing a directory
 * across nodes, replicas and re-replication.
 *
 * Entries: the entry of (directory, name) — size, version, mode, mtime, replica count and
 * holders (node, offset of the payload in its pool, generation of its block there) — lives on
 * the two members with the highest rendezvous score for it (meta/placement.h), the owner and
 * its stand-in. Entries are soft state rebuilt from the holders: a block is announced to its
 * owners when it is published here (seal, commit, rename), forgotten when it loses its bytes
 * here (eviction), and every block held here is announced again whenever the member list
 * changes, so a new owner learns what it owns and an owner that died is replaced.
 *
 * Versions: a block's version is its publication time tagged with the publishing node's id
 * (meta/namespace.h); the owner keeps the highest version of a name and tells the holders of
 * the one it replaces to drop their copies, so two nodes writing one name converge on one
 * whole version.
 *
 * Reads: a lookup that misses here asks the owner (then its stand-in) and makes a stub; an
 * open of a stub fetches the bytes from a live holder through the transfer engine into a
 * cached copy (evicted first, never announced), then checks them against the holder's block
 * header — magic, sealed, generation, length, name hash, version and payload checksum — so
 * bytes of a block that was evicted or replaced meanwhile are never served: the next holder
 * is tried, and with none left the read is a clean ENOENT.
 *
 * Replicas: a directory's replica count (user.kvcachefs.replicas, default 1) asks for that
 * many copies on distinct nodes. The writer asks the next nodes by rendezvous order to copy
 * the block right after the seal (the copy is made asynchronously, from the writer's pool);
 * the owner of each entry checks every few seconds and after membership changes that the
 * live holders are as many as asked, and has new copies made when they are not.
 */
#ifndef KVC_FS_REMOTE_H
#define KVC_FS_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct member;
struct ns;
struct ns_attr;
struct pool;
struct remote;
struct remote_dir;
struct xfer_engine;

/* Tell the kernel that name in parent changed behind its back. */
typedef void (*remote_inval_fn)(void *arg, uint64_t parent, const char *name);

struct remote_config {
	uint64_t node_id;
	struct ns *ns;
	struct pool *pool;
	struct xfer_engine *xe; /* its RPC handler must be remote_rpc(r) */
	uint32_t pool_seg;	/* the pool's segment id (the same on every node) */
	remote_inval_fn inval;
	void *inval_arg;
};

int remote_create(struct remote **out, const struct remote_config *cfg);
/* Start the background worker and install the namespace hooks. */
int remote_start(struct remote *r);
void remote_destroy(struct remote *r);

/* This node has just joined with an empty pool: tell every member to forget it as a holder
 * of blocks an earlier run of this node id held. */
void remote_joined(struct remote *r);
/* The live members changed (list sorted by node id, self included). */
void remote_members(struct remote *r, const struct member *list, size_t n);
/* The transfer engine's RPC handler (xfer_rpc_fn); arg is the struct remote. */
int remote_rpc(void *arg, uint64_t from_node, const void *req, size_t len, void **resp,
	       size_t *resp_len);

/* Send what was published or forgotten here until now to the owners (the worker does it
 * too; a release calls it so a close() is followed by a visible block everywhere). */
void remote_flush(struct remote *r);

/* The writer of name in parent closed an fd (FUSE flush): its release, which seals and
 * announces the block, follows within moments. Tell the owners now, so that a reader on
 * another node that comes after the writer's close() waits for it (up to 2 s) instead of
 * missing it. */
void remote_pending(struct remote *r, uint64_t parent, const char *name);

/* Lookup of name in parent across the cluster: a local block, or a stub of a remote one
 * (with a kernel reference, as ns_lookup). ENOENT when no live node holds it. */
int remote_lookup(struct remote *r, uint64_t parent, const char *name, struct ns_attr *attr);
/* Fetch the bytes of stub ino into a local cached copy: 0 (also when there is nothing to
 * fetch), ENOENT (no live holder has that version anymore), ENOSPC. */
int remote_fetch(struct remote *r, uint64_t ino);
/*
 * Reads of a block held elsewhere, streamed from a holder without a local copy: each read is
 * spliced from the holder's socket into a pipe, checked against the holder's block header
 * (sent after the bytes), and goes on from the pipe to the reader (fs/ops.c), so the bytes
 * are copied once on this node. The first open of a version streams; an open of a version
 * streamed before fetches a cached copy (remote_fetch): a block read twice is kept.
 *
 * remote_stream_open: 0 with *out; -EEXIST: the block is local now (open it); -EAGAIN: fetch
 * it instead (read before, or empty); -ENOENT, -ENOMEM. chunk: the size of the READ requests
 * a whole-block read is expected to come in (the mount's largest): the first chunks are
 * requested at once, before the reads come (0: at the first read).
 * remote_stream_read: splice the bytes [off, off + len) of the block (cut at its end) into the
 * pipe (both ends non-blocking, empty): their count (0 at the end), -ENOENT when no live
 * holder has that version any more, -ENOBUFS when the pipe has no room. On an error the
 * pipe is left empty.
 */
struct remote_stream;
int remote_stream_open(struct remote *r, uint64_t ino, uint64_t chunk, struct remote_stream **out);
ssize_t remote_stream_read(struct remote_stream *rs, uint64_t off, size_t len, const int pipe[2]);
/* Empty a pipe (its read end non-blocking), e.g. one whose reply could not be sent. */
void remote_pipe_drain(int pipe_rd);
/* The same bytes copied into buf (len bytes), for a reader with no usable pipe. */
ssize_t remote_stream_read_buf(struct remote_stream *rs, uint64_t off, size_t len, void *buf);
void remote_stream_close(struct remote_stream *rs);
/* Make name in parent a local block (cached copy) if a remote node holds it: 0, ENOENT. */
int remote_prefetch(struct remote *r, uint64_t parent, const char *name);
/* Make local the blocks among names[from, n) of directory parent that other nodes hold and
 * this node does not: entries asked for one by one, bytes fetched in parallel batches and
 * checked as remote_fetch does. Names that fail here are left to remote_prefetch. Returns
 * how many were fetched, or -errno for the directory. */
typedef const char *(*remote_name_fn)(void *arg, size_t k, char *buf);
int remote_prefetch_batch(struct remote *r, uint64_t parent, size_t from, size_t n,
			  remote_name_fn name_at, void *arg);
/* Remove name from the cluster (entry and every holder's copy); local is whether it was
 * removed here already. 0, or ENOENT when it existed nowhere. */
int remote_unlink(struct remote *r, uint64_t parent, const char *name, bool local);
/* The live holders of block ino, as "NODEID,NODEID" (16 hex digits each): length, -ENODATA
 * (no entry), -ERANGE. */
int remote_holders(struct remote *r, uint64_t ino, char *buf, size_t len);
/* Is the directory empty across the cluster (no entry on any member)? 0, ENOTEMPTY, EIO. */
int remote_dir_empty(struct remote *r, uint64_t dir);

/* Is the tree under directory dir free of blocks on every member (subdirectories included)?
 * 0, ENOTEMPTY, EIO. */
int remote_tree_empty(struct remote *r, uint64_t dir);

/* Listing a directory across the cluster, page by page from each member. */
int remote_opendir(struct remote *r, uint64_t dir, struct remote_dir **out);
void remote_closedir(struct remote_dir *d);
/* Emit entries from position pos (0: the first remote entry) until add returns nonzero;
 * add gets the entry's position + 1 as its next position. 0 or -errno. */
typedef int (*remote_add_fn)(void *arg, const char *name, uint64_t ino, uint32_t mode,
			     uint64_t next);
int remote_readdir(struct remote *r, struct remote_dir *d, uint64_t pos, remote_add_fn add,
		   void *arg);

#endif
