/*
 * ops: the FUSE low-level operations of kvcachefs. Each op translates one kernel request
 * into one call of the namespace (meta/namespace.h) and one fuse_reply_*.
 */
#ifndef KVC_FS_OPS_H
#define KVC_FS_OPS_H

#include "fs/fuse_conf.h"
#include "fs/metrics.h"

#include <pthread.h>
#include <stdbool.h>

struct ns;
struct side;
struct cluster;
struct dirh;

/* The requests whose latency is measured (kvc_fs.lat). */
enum kvc_op { KVC_OP_LOOKUP, KVC_OP_READ, KVC_OP_WRITE, KVC_OP_COUNT };

/* The daemon's context, handed to fuse_session_new as userdata. */
struct kvc_fs {
	struct ns *ns;
	struct side *side;	  /* the ioctl side channel */
	struct cluster *cluster;  /* NULL on a single node */
	pthread_key_t bounce_key; /* per-thread staging buffer for read replies */
	pthread_key_t pipe_key;	  /* per-thread pipe for streamed reads (struct kvc_pipe) */
	bool stream_reads;	  /* reads of other nodes' blocks streamed (spliced replies) */
	uint32_t read_max;	  /* the largest READ request (max_read); 0: KVC_FUSE_MAX_IO */
	pthread_mutex_t dirs_lock;
	struct dirh *dirs; /* open directories (ops.c), under dirs_lock */
	/* Latency of each request of enum kvc_op, from its arrival to its reply; measured only
	 * when timed (set before the session starts, with --metrics). Lock-free. */
	bool timed;
	struct metrics_hist lat[KVC_OP_COUNT];
};

/* Set up / tear down the context (after the worker threads are gone). 0 or -errno. */
int kvc_fs_init(struct kvc_fs *fs, struct ns *ns, struct side *side);
void kvc_fs_fini(struct kvc_fs *fs);

extern const struct fuse_lowlevel_ops kvc_fs_ops;

#endif
