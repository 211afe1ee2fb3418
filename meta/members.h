/*
 * members: cluster membership in etcd.
 *
 * Each daemon registers itself under /kvcachefs/<cluster>/members/<node id, 16 hex digits>
 * with a JSON value {"node_id": "<16 hex>", "addr": "HOST:PORT", "transports": ["tcp", ...],
 * "pool_size": N, "pool_used": N, "started": unix seconds, "version": "x.y.z"}, put under a
 * lease that a thread keeps alive; a member that stops refreshing it (killed, cut off) is
 * deleted by etcd when the lease expires. The member list is read once and then followed by
 * a watch, into an in-memory table that snapshots copy.
 *
 * When etcd cannot be reached the last known table stays and members_stale() says so; the
 * keepalive retries, the watch reconnects, and when etcd is back the table catches up (a
 * re-list if the history it missed was compacted) and a lease that expired meanwhile is
 * replaced and the member put again.
 *
 * The local member is always in the table, whatever etcd says about it.
 */
#ifndef KVC_META_MEMBERS_H
#define KVC_META_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct etcd;
struct members;

#define MEMBER_ADDR_MAX	    64
#define MEMBER_VERSION_MAX  32
#define MEMBER_CLUSTER_MAX  64
#define MEMBERS_TTL_DEFAULT 10 /* seconds */

/* transports, as a bit set ("tcp", "rdma" in the JSON; unknown names are ignored) */
#define MEMBER_TCP  (1u << 0)
#define MEMBER_RDMA (1u << 1)

struct member {
	uint64_t node_id;
	char addr[MEMBER_ADDR_MAX]; /* the transfer engine's HOST:PORT */
	unsigned transports;	    /* MEMBER_TCP | MEMBER_RDMA */
	uint64_t pool_size;	    /* bytes */
	uint64_t pool_used;	    /* bytes */
	int64_t started;	    /* unix time, seconds */
	char version[MEMBER_VERSION_MAX];
	bool self; /* in snapshots: this is the local member */
};

/* Called after the table changed (a member joined, left, or updated its pool figures) and
 * when members_stale() changes. Calls are serialised, come from the module's threads, hold
 * no lock of it, and may begin before members_join has returned (hence m): the callback may
 * call members_snapshot(m) or members_stale(m), not members_leave. */
typedef void (*members_fn)(void *arg, struct members *m);

/*
 * Register self (node_id, addr, transports, pool_size, pool_used, started, version; self->self
 * is ignored) in cluster (letters, digits, '.', '_', '-'; at most MEMBER_CLUSTER_MAX - 1)
 * under a lease of ttl_s seconds (0: MEMBERS_TTL_DEFAULT), list the members and follow them.
 * c must outlive the membership. on_change may be NULL.
 *
 * Returns 0 with *out set; -EEXIST when a live member already has this node id; -EINVAL
 * for a bad cluster name or address; the etcd error (etcd.h) when etcd cannot be reached;
 * -ENOMEM.
 */
int members_join(struct members **out, struct etcd *c, const char *cluster,
		 const struct member *self, unsigned ttl_s, members_fn on_change, void *arg);

/* Copy the table, sorted by node id, into a new array (*list, free() it; NULL when *n is
 * 0). Returns 0 or -ENOMEM. */
int members_snapshot(struct members *m, struct member **list, size_t *n);

/* Whether the table may be out of date: etcd did not answer the last keepalive, or the
 * watch is reconnecting. */
bool members_stale(struct members *m);

/* Record the local pool's use. It reaches etcd from the keepalive thread, at most once a
 * second; the caller never waits for etcd. */
void members_update(struct members *m, uint64_t pool_used);

/* Leave: stop the threads, revoke the lease (the member's key goes at once when etcd is
 * reachable; otherwise it expires after the TTL) and free m. NULL is a no-op. */
void members_leave(struct members *m);

#endif
