/*
 * ops: the FUSE low-level operations of kvcachefs. Each op translates one kernel request
 * into one call of the namespace (meta/namespace.h) and one fuse_reply_*.
 */
#ifndef KVC_FS_OPS_H
#define KVC_FS_OPS_H

#include "fs/fuse_conf.h"

struct ns;

/* The daemon's context, handed to fuse_session_new as userdata. */
struct kvc_fs {
	struct ns *ns;
};

extern const struct fuse_lowlevel_ops kvc_fs_ops;

#endif
