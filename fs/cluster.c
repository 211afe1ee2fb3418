/*
 * cluster: joining a kvcachefs cluster (see cluster.h).
 *
 * What the daemon owns in cluster mode: a transfer engine listening on --listen and
 * exporting the whole pool as one segment (other nodes will READ blocks from it at the
 * offsets block entries give), an etcd client, and its membership (meta/members.h), whose
 * table answers `kvcachectl nodes`. The secret is read once, handed to the engine and wiped.
 */
#include "fs/cluster.h"
#include "engine/auth.h"
#include "engine/pool.h"
#include "engine/xfer.h"
#include "fs/log.h"
#include "fs/options.h"
#include "fs/remote.h"
#include "fs/uapi/kvcachefs.h"
#include "meta/etcd.h"
#include "meta/members.h"
#include "meta/namespace.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define CLUSTER_ETCD_TIMEOUT_MS 3000

struct cluster {
	char name[MEMBER_CLUSTER_MAX];
	uint64_t node_id;
	struct ns *ns;
	struct pool *pool;
	struct xfer_engine *xe;
	struct xfer_counters xc; /* the engine adds to them (cluster_xfer_counters) */
	uint32_t pool_seg;
	struct etcd *etcd;
	struct members *members;
	struct remote *remote;	   /* blocks shared across the cluster */
	pthread_rwlock_t rpc_lock; /* the RPC handler (read) against cluster_stop (write) */
	struct etcd_watch *dirs_watch;
	char dirs_prefix[MEMBER_CLUSTER_MAX + 32]; /* /kvcachefs/<cluster>/dirs/ */
	/* Publishes the pool's use to the member record every CLUSTER_REPORT_MS. */
	pthread_t reporter;
	bool reporting;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop; /* under lock */
	/* What the log last said about the membership, to say what changed (log_lock): the
	 * members (sorted by id, as snapshots are), and whether etcd was unreachable. The first
	 * table seen is the baseline, logged by the daemon as its member count; etcd counts as
	 * reachable until the table has been fresh once (the watch starts after the join). */
	pthread_mutex_t log_lock;
	struct member *known;
	size_t nknown;
	bool known_set, seen_fresh, etcd_down;
};

#define CLUSTER_REPORT_MS 2000

uint64_t cluster_default_node_id(const char *mountpoint)
{
	char host[256] = "", key[4352];
	uint64_t id;

	(void)gethostname(host, sizeof(host) - 1);
	snprintf(key, sizeof(key), "%s:%s", host, mountpoint);
	id = XXH3_64bits(key, strlen(key));
	return id ? id : 1;
}

/* Why --tcp-congestion name was refused (err from xfer_tcp_congestion_check), with the
 * names that would do. */
static void congestion_refused(const char *name, int err, char *out, size_t len)
{
	const char *list = err == -ENOENT ? "available" : err == -EPERM ? "allowed" : NULL;
	char names[256];

	if (!list) {
		snprintf(out, len, "--tcp-congestion %s: %s", name,
			 xfer_tcp_congestion_strerror(err));
		return;
	}
	xfer_tcp_congestion_sysctl(list, names, sizeof(names));
	snprintf(out, len, "--tcp-congestion %s: %s (%s: %s)", name,
		 xfer_tcp_congestion_strerror(err), list, names[0] ? names : "unknown");
}

void cluster_default_listen(char *buf, size_t len)
{
	struct ifaddrs *ifs, *i;
	char ip[INET_ADDRSTRLEN] = "127.0.0.1";

	if (getifaddrs(&ifs) == 0) {
		for (i = ifs; i; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET ||
			    (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
				continue;
			inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip,
				  sizeof(ip));
			break;
		}
		freeifaddrs(ifs);
	}
	snprintf(buf, len, "%s:0", ip);
}

/* Our pool figures for the member record. */
static void pool_figures(struct ns *ns, uint64_t *size, uint64_t *used)
{
	struct kvcachefs_status st;

	memset(&st, 0, sizeof(st));
	ns_status(ns, &st);
	*size = st.capacity;
	*used = st.used;
}

/* ---- directories ---------------------------------------------------------------------- */

/* A directory event from etcd: make the local tree agree. Errors only mean the local tree
 * cannot follow (a block where a directory goes, a directory that holds local blocks). */
static void apply_dir(struct cluster *c, enum etcd_event ev, const struct etcd_kv *kv)
{
	const char *path;
	unsigned long mode = 0755;
	int ret;

	if (!kv || strncmp(kv->key, c->dirs_prefix, strlen(c->dirs_prefix)))
		return;
	path = kv->key + strlen(c->dirs_prefix);
	if (ev == ETCD_EV_PUT) {
		unsigned long replicas = 0;
		uint64_t ino;
		char *end = NULL;

		if (kv->len) {
			mode = strtoul(kv->value, &end, 8) & 07777;
			if (end && *end == ' ')
				replicas = strtoul(end + 1, NULL, 10);
		}
		ret = ns_mkdir_path(c->ns, path, (uint32_t)mode);
		if (!ret && replicas >= 1 && replicas <= 8 && ns_dir_ino(c->ns, path, &ino) == 0)
			(void)ns_replicas(c->ns, ino, (unsigned)replicas);
	} else if (ev == ETCD_EV_DELETE) {
		ret = ns_rmdir_path(c->ns, path);
		if (ret == -ENOENT)
			ret = 0;
	} else {
		return;
	}
	if (ret)
		log_msg(LOG_WARNING, "directory %s from the cluster: %s here", path,
			strerror(-ret));
}

static void dirs_event(void *arg, enum etcd_event ev, const struct etcd_kv *kv)
{
	apply_dir(arg, ev, kv);
}

/* List every directory of the cluster into the local tree, then follow them. */
static int dirs_follow(struct cluster *c)
{
	struct etcd_kv *kvs = NULL;
	char after[4352] = "";
	int64_t rev = 0;
	size_t n = 0;
	bool more = true;
	int ret;

	while (more) {
		ret = etcd_range(c->etcd, c->dirs_prefix, after[0] ? after : NULL, 500, &kvs, &n,
				 &more, &rev);
		if (ret)
			return ret;
		for (size_t i = 0; i < n; i++)
			apply_dir(c, ETCD_EV_PUT, &kvs[i]);
		if (n)
			snprintf(after, sizeof(after), "%s", kvs[n - 1].key);
		etcd_kvs_free(kvs, n);
		if (!n)
			break;
	}
	return etcd_watch_start(c->etcd, c->dirs_prefix, rev + 1, dirs_event, c, &c->dirs_watch);
}

int cluster_mkdir(struct cluster *c, uint64_t ino, uint32_t mode)
{
	char path[4096], key[4352], val[16];
	int ret = ns_path(c->ns, ino, path, sizeof(path));

	if (ret)
		return ret;
	snprintf(key, sizeof(key), "%s%s", c->dirs_prefix, path);
	snprintf(val, sizeof(val), "%04o", mode & 07777);
	ret = etcd_put(c->etcd, key, val, strlen(val), 0, NULL);
	if (ret)
		log_msg(LOG_ERR, "mkdir %s: cannot publish it in etcd: %s", path, strerror(-ret));
	return ret;
}

int cluster_set_replicas(struct cluster *c, uint64_t ino, unsigned replicas)
{
	char path[4096], key[4352], val[32];
	struct ns_attr a;
	int ret = ns_path(c->ns, ino, path, sizeof(path));

	if (!ret)
		ret = ns_getattr(c->ns, ino, &a);
	if (ret)
		return ret;
	if (!path[0])
		return -EPERM; /* the root is not in etcd */
	snprintf(key, sizeof(key), "%s%s", c->dirs_prefix, path);
	snprintf(val, sizeof(val), "%04o %u", a.mode & 07777, replicas);
	ret = etcd_put(c->etcd, key, val, strlen(val), 0, NULL);
	if (ret)
		log_msg(LOG_ERR, "replicas of %s: cannot publish them in etcd: %s", path,
			strerror(-ret));
	else
		(void)ns_replicas(c->ns, ino, replicas);
	return ret;
}

struct remote *cluster_remote(struct cluster *c)
{
	return c ? c->remote : NULL;
}

static int cluster_rpc(void *arg, uint64_t from, const void *req, size_t len, void **resp,
		       size_t *resp_len)
{
	struct cluster *c = arg;
	int ret = EAGAIN; /* not ready yet, or going away */

	pthread_rwlock_rdlock(&c->rpc_lock);
	if (c->remote)
		ret = remote_rpc(c->remote, from, req, len, resp, resp_len);
	pthread_rwlock_unlock(&c->rpc_lock);
	return ret;
}

/* One line per member that joined, left or came back at another address since the last
 * table, compared by node id (both sorted); the local member never changes. */
static void log_member_changes(const struct cluster *c, const struct member *old, size_t nold,
			       const struct member *cur, size_t ncur)
{
	size_t i = 0, j = 0;

	while (i < nold || j < ncur) {
		if (j == ncur || (i < nold && old[i].node_id < cur[j].node_id)) {
			log_msg(LOG_INFO, "member %016llx (%s) left cluster %s",
				(unsigned long long)old[i].node_id, old[i].addr, c->name);
			i++;
		} else if (i == nold || cur[j].node_id < old[i].node_id) {
			log_msg(LOG_INFO, "member %016llx (%s) joined cluster %s",
				(unsigned long long)cur[j].node_id, cur[j].addr, c->name);
			j++;
		} else {
			if (strcmp(old[i].addr, cur[j].addr))
				log_msg(
				    LOG_INFO,
				    "member %016llx of cluster %s restarted: now at %s (was %s)",
				    (unsigned long long)cur[j].node_id, c->name, cur[j].addr,
				    old[i].addr);
			i++, j++;
		}
	}
}

/* Log what changed in the membership and in etcd's reachability; keeps list as the new
 * known table (or frees it). */
static void log_membership(struct cluster *c, struct members *m, struct member *list, size_t n)
{
	bool stale = members_stale(m);

	pthread_mutex_lock(&c->log_lock);
	if (c->known_set)
		log_member_changes(c, c->known, c->nknown, list, n);
	free(c->known);
	c->known = list;
	c->nknown = n;
	c->known_set = true;
	if (!stale)
		c->seen_fresh = true;
	if (stale && c->seen_fresh && !c->etcd_down)
		log_msg(
		    LOG_WARNING,
		    "etcd unreachable: the membership of cluster %s may be out of date (%zu "
		    "member%s known); directories cannot be created or removed until it is back",
		    c->name, n, n == 1 ? "" : "s");
	else if (!stale && c->etcd_down)
		log_msg(LOG_INFO, "etcd reachable again: cluster %s has %zu member%s", c->name, n,
			n == 1 ? "" : "s");
	c->etcd_down = stale && c->seen_fresh;
	pthread_mutex_unlock(&c->log_lock);
}

/* The member table changed, or etcd's reachability: the block layer follows, the log says
 * what happened. */
static void members_changed(void *arg, struct members *m)
{
	struct cluster *c = arg;
	struct member *list = NULL;
	size_t n = 0;

	if (members_snapshot(m, &list, &n) < 0)
		return;
	if (c->remote)
		remote_members(c->remote, list, n);
	log_membership(c, m, list, n);
}

int cluster_rmdir(struct cluster *c, uint64_t parent, const char *name)
{
	char path[4096], key[4352];
	int ret = ns_path(c->ns, parent, path, sizeof(path));

	if (ret)
		return ret;
	snprintf(key, sizeof(key), "%s%s%s%s", c->dirs_prefix, path, path[0] ? "/" : "", name);
	ret = etcd_delete(c->etcd, key, false);
	if (ret < 0)
		log_msg(LOG_ERR, "rmdir %s: cannot remove it from etcd: %s", key, strerror(-ret));
	return ret < 0 ? ret : 0;
}

int cluster_rename_dir(struct cluster *c, uint64_t oldparent, const char *oldname,
		       uint64_t newparent, const char *newname)
{
	char op[4096], np[4096], okey[4352], nkey[4352];
	struct etcd_kv *kvs = NULL;
	size_t n = 0;
	bool more = false;
	int64_t rev = 0;
	int ret;

	ret = ns_path(c->ns, oldparent, op, sizeof(op));
	if (!ret)
		ret = ns_path(c->ns, newparent, np, sizeof(np));
	if (ret)
		return ret;
	snprintf(okey, sizeof(okey), "%s%s%s%s", c->dirs_prefix, op, op[0] ? "/" : "", oldname);
	snprintf(nkey, sizeof(nkey), "%s%s%s%s", c->dirs_prefix, np, np[0] ? "/" : "", newname);
	/* the directory and its subdirectories: copy them under the new name, then delete the
	 * old keys deepest first, so other nodes can follow one event at a time */
	ret = etcd_range(c->etcd, okey, NULL, 100000, &kvs, &n, &more, &rev);
	if (ret)
		return ret;
	for (size_t i = 0; i < n && !ret; i++) {
		const char *rest = kvs[i].key + strlen(okey);
		char key[8704];

		if (*rest && *rest != '/')
			continue; /* "a/bc" under the prefix "a/b" */
		snprintf(key, sizeof(key), "%s%s", nkey, rest);
		ret = etcd_put(c->etcd, key, kvs[i].value, kvs[i].len, 0, NULL);
	}
	for (size_t i = n; i-- > 0 && !ret;) {
		const char *rest = kvs[i].key + strlen(okey);

		if (*rest && *rest != '/')
			continue;
		ret = etcd_delete(c->etcd, kvs[i].key, false);
		ret = ret < 0 ? ret : 0;
	}
	etcd_kvs_free(kvs, n);
	if (ret)
		log_msg(LOG_ERR, "rename of directory %s: etcd: %s", okey, strerror(-ret));
	return ret;
}

/* A node whose secret differs from the others' would be listed as a member but refused by
 * every peer, leaving the entries it owns unreachable: connect to a few members first and
 * refuse to join when they refuse us (EACCES) or speak another protocol (EPROTO). Members
 * that cannot be reached say nothing about the secret and are skipped. */
static int check_secret(struct cluster *c, char *err, size_t errlen)
{
	struct member *list = NULL;
	size_t n = 0, tried = 0;
	int ret = 0;

	if (members_snapshot(c->members, &list, &n) < 0)
		return 0;
	for (size_t k = 0; k < n && tried < 3 && !ret; k++) {
		struct xfer_peer *p;
		int r;

		if (list[k].self)
			continue;
		tried++;
		r = xfer_open_peer(c->xe, list[k].addr, &p);
		if (r == 0) {
			xfer_close_peer(p);
			break; /* one member accepted us: the secret is the cluster's */
		}
		if (r == -EACCES)
			snprintf(
			    err, errlen,
			    "node %016llx at %s refused this node: the secret in the secret file "
			    "is not cluster %s's",
			    (unsigned long long)list[k].node_id, list[k].addr, c->name);
		else if (r == -EPROTO)
			snprintf(err, errlen,
				 "node %016llx at %s speaks another protocol version (version %s "
				 "here)",
				 (unsigned long long)list[k].node_id, list[k].addr, KVC_VERSION);
		if (r == -EACCES || r == -EPROTO)
			ret = r;
	}
	free(list);
	return ret;
}

static void *reporter_main(void *arg)
{
	struct cluster *c = arg;
	struct timespec deadline;
	uint64_t size, used;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += CLUSTER_REPORT_MS / 1000;
		pthread_cond_timedwait(&c->cond, &c->lock, &deadline);
		if (c->stop)
			break;
		pthread_mutex_unlock(&c->lock);
		pool_figures(c->ns, &size, &used);
		members_update(c->members, used);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int cluster_start(struct cluster **out, const struct kvc_options *o, const char *mountpoint,
		  struct pool *pool, struct ns *ns, remote_inval_fn inval, void *inval_arg,
		  char *err, size_t errlen)
{
	uint8_t secret[AUTH_SECRET_MAX + 1];
	char listen[128];
	struct member self;
	struct cluster *c;
	size_t secret_len = 0;
	int ret, waited;

	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->ns = ns;
	c->pool = pool;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	pthread_rwlock_init(&c->rpc_lock, NULL);
	pthread_mutex_init(&c->log_lock, NULL);
	snprintf(c->name, sizeof(c->name), "%s", o->cluster);
	c->node_id = o->node_id ? o->node_id : cluster_default_node_id(mountpoint);

	ret = auth_secret_load(o->secret_file, secret, &secret_len, err, errlen);
	if (ret)
		goto fail;
	if (o->listen)
		snprintf(listen, sizeof(listen), "%s", o->listen);
	else
		cluster_default_listen(listen, sizeof(listen));
	if (o->tcp_congestion && (ret = xfer_tcp_congestion_check(o->tcp_congestion)) < 0) {
		congestion_refused(o->tcp_congestion, ret, err, errlen);
		goto fail;
	}
	ret = xfer_create(&c->xe, &(struct xfer_config){
				      .listen = listen,
				      .tcp_congestion = o->tcp_congestion,
				      .node_id = c->node_id,
				      .secret = secret,
				      .secret_len = secret_len,
				      .rpc = cluster_rpc,
				      .rpc_arg = c,
				      .counters = &c->xc,
				      .log = log_line,
				  });
	explicit_bzero(secret, sizeof(secret));
	if (ret) {
		snprintf(err, errlen, "cannot start the transfer engine on %s: %s", listen,
			 strerror(-ret));
		goto fail;
	}
	ret = xfer_register(c->xe, pool->base, pool->size, &c->pool_seg);
	if (ret) {
		snprintf(err, errlen, "cannot export the pool: %s", strerror(-ret));
		goto fail;
	}
	{
		struct remote *r;

		ret = remote_create(&r, &(struct remote_config){.node_id = c->node_id,
								.ns = ns,
								.pool = pool,
								.xe = c->xe,
								.pool_seg = c->pool_seg,
								.inval = inval,
								.inval_arg = inval_arg});
		if (!ret)
			ret = remote_start(r);
		if (ret) {
			remote_destroy(r);
			snprintf(err, errlen, "cannot start the block layer: %s", strerror(-ret));
			goto fail;
		}
		pthread_rwlock_wrlock(&c->rpc_lock);
		c->remote = r;
		pthread_rwlock_unlock(&c->rpc_lock);
	}

	ret = etcd_create(&c->etcd, o->etcd, CLUSTER_ETCD_TIMEOUT_MS);
	if (ret) {
		snprintf(err, errlen, "--etcd %s: %s", o->etcd, strerror(-ret));
		goto fail;
	}
	memset(&self, 0, sizeof(self));
	self.node_id = c->node_id;
	ret = xfer_listen_addr(c->xe, self.addr, sizeof(self.addr));
	if (ret) {
		snprintf(err, errlen, "transfer engine address: %s", strerror(-ret));
		goto fail;
	}
	self.transports = MEMBER_TCP | (xfer_transports(c->xe, NULL) & XFER_RDMA ? MEMBER_RDMA : 0);
	pool_figures(ns, &self.pool_size, &self.pool_used);
	self.started = (int64_t)time(NULL);
	snprintf(self.version, sizeof(self.version), "%s", KVC_VERSION);
	/* A live member with our id is, most often, our own previous incarnation, killed less
	 * than a lease ago (a restart): wait for its lease to run out before calling it a
	 * duplicate. Said once it is known how the wait ended: a refused start prints one line. */
	for (waited = 0;; waited++) {
		ret = members_join(&c->members, c->etcd, c->name, &self, 0, members_changed, c);
		if (ret != -EEXIST || waited > MEMBERS_TTL_DEFAULT + 2)
			break;
		sleep(1);
	}
	if (ret == -EEXIST) {
		snprintf(err, errlen,
			 "node id %016llx is already a live member of cluster %s, still after %d s "
			 "(another daemon with the same --node-id?)",
			 (unsigned long long)c->node_id, c->name, waited);
		goto fail;
	}
	if (!ret && waited)
		log_msg(LOG_INFO,
			"node %016llx was still registered in cluster %s (a previous run?): joined "
			"after %d s, once that registration expired",
			(unsigned long long)c->node_id, c->name, waited);
	if (ret) {
		snprintf(err, errlen, "cannot join cluster %s through etcd %s: %s", c->name,
			 o->etcd, strerror(-ret));
		goto fail;
	}
	ret = check_secret(c, err, errlen);
	if (ret)
		goto fail;
	members_changed(c, c->members); /* the block layer knows the members from here on */
	remote_joined(c->remote); /* what this id held before is forgotten, then re-announced */
	snprintf(c->dirs_prefix, sizeof(c->dirs_prefix), "/kvcachefs/%s/dirs/", c->name);
	ret = dirs_follow(c);
	if (ret) {
		snprintf(err, errlen, "cannot read the directories of cluster %s from etcd: %s",
			 c->name, strerror(-ret));
		goto fail;
	}
	c->reporting = pthread_create(&c->reporter, NULL, reporter_main, c) == 0;
	*out = c; /* the daemon logs the join once the mount is ready */
	return 0;
fail:
	cluster_stop(c);
	return ret;
}

void cluster_stop(struct cluster *c)
{
	if (!c)
		return;
	if (c->reporting) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->reporter, NULL);
	}
	if (c->dirs_watch)
		etcd_watch_stop(c->dirs_watch);
	members_leave(c->members);
	etcd_destroy(c->etcd);
	if (c->remote) {
		struct remote *r = c->remote;

		pthread_rwlock_wrlock(&c->rpc_lock);
		c->remote = NULL;
		pthread_rwlock_unlock(&c->rpc_lock);
		remote_destroy(r);
	}
	xfer_destroy(c->xe);
	pthread_rwlock_destroy(&c->rpc_lock);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->log_lock);
	free(c->known);
	free(c);
}

const struct xfer_counters *cluster_xfer_counters(struct cluster *c)
{
	return &c->xc;
}

size_t cluster_xfer_peers(struct cluster *c, struct xfer_peer_info *out, size_t max)
{
	return xfer_peers_info(c->xe, out, max);
}

void cluster_nodes(void *arg, struct kvcachefs_nodes *out)
{
	struct cluster *c = arg;
	struct member *list = NULL;
	uint64_t size, used;
	size_t n = 0;

	snprintf(out->cluster, sizeof(out->cluster), "%s", c->name);
	if (members_stale(c->members))
		out->flags |= KVCACHEFS_NODES_STALE;
	/* Our own figures as they are now (the reporter publishes them to the others). */
	pool_figures(c->ns, &size, &used);
	if (members_snapshot(c->members, &list, &n) < 0)
		n = 0;
	out->total = (uint32_t)n;
	for (size_t i = 0; i < n && out->count < KVCACHEFS_NODES_MAX; i++) {
		struct kvcachefs_node *d = &out->node[out->count++];

		d->node_id = list[i].node_id;
		d->pool_size = list[i].pool_size;
		d->pool_used = list[i].self ? used : list[i].pool_used;
		d->started = (uint64_t)list[i].started;
		d->state = KVCACHEFS_NODE_UP | (list[i].self ? KVCACHEFS_NODE_SELF : 0);
		d->transports = (list[i].transports & MEMBER_TCP ? 0x1u : 0) |
				(list[i].transports & MEMBER_RDMA ? 0x2u : 0);
		snprintf(d->addr, sizeof(d->addr), "%s", list[i].addr);
	}
	free(list);
}
