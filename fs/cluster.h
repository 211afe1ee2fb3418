/*
 * cluster: the daemon's part in a kvcachefs cluster — its transfer engine, serving the pool
 * to other nodes, and its membership in etcd (register under a lease, follow the others).
 *
 * Started after the namespace and before the mount is ready, so a daemon that cannot join
 * (etcd unreachable at start, a bad secret file, a node id already live) prints one line and
 * mounts nothing. Later etcd outages leave the last known membership in place (see
 * meta/members.h).
 */
#ifndef KVC_FS_CLUSTER_H
#define KVC_FS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "fs/remote.h"

struct cluster;
struct kvc_options;
struct kvcachefs_nodes;
struct ns;
struct pool;
struct xfer_counters;
struct xfer_peer_info;

/* Join the cluster the options name. On failure, err holds the one line to print. */
int cluster_start(struct cluster **out, const struct kvc_options *o, const char *mountpoint,
		  struct pool *pool, struct ns *ns, remote_inval_fn inval, void *inval_arg,
		  char *err, size_t errlen);
/* The blocks shared across the cluster (fs/remote.h); NULL for NULL. */
struct remote *cluster_remote(struct cluster *c);
/* Set the replica count of directory ino (user.kvcachefs.replicas) in etcd, then here. */
int cluster_set_replicas(struct cluster *c, uint64_t ino, unsigned replicas);
/* Leave (revoke the lease: the others see this node go at once) and stop serving. */
void cluster_stop(struct cluster *c);
/* side_nodes_fn: the member list for KVCACHEFS_IOC_NODES. */
void cluster_nodes(void *c, struct kvcachefs_nodes *out);

/* For metrics (any thread, until cluster_stop): the transfer engine's counters per transport
 * (engine/xfer.h; valid as long as c), and its open peers' figures into out[0..max) —
 * returns how many peers there are. */
const struct xfer_counters *cluster_xfer_counters(struct cluster *c);
size_t cluster_xfer_peers(struct cluster *c, struct xfer_peer_info *out, size_t max);

/*
 * Directories live in etcd (/kvcachefs/<cluster>/dirs/<path>, value: the mode in octal):
 * the daemon lists them at start and follows them by watch, so a mkdir on one node appears
 * on every node. The ops call these after the local change succeeded; an error (etcd
 * unreachable) makes the op undo its local change and fail with EIO.
 */
int cluster_mkdir(struct cluster *c, uint64_t ino, uint32_t mode);
int cluster_rmdir(struct cluster *c, uint64_t parent, const char *name);
int cluster_rename_dir(struct cluster *c, uint64_t oldparent, const char *oldname,
		       uint64_t newparent, const char *newname);

/* The default node id: a hash of the host name and the mountpoint (stable across restarts,
 * different for two daemons of one host), never 0. */
uint64_t cluster_default_node_id(const char *mountpoint);
/* The default transfer address: the first non-loopback IPv4 address, any port ("IP:0"), or
 * 127.0.0.1:0 when there is none. */
void cluster_default_listen(char *buf, size_t len);

#endif
