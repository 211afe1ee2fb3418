/*
 * remote: blocks shared across a cluster (see remote.h).
 *
 * Threads: the engine's RPC handler (remote_rpc) runs on an engine thread and never waits on
 * the network: what needs the network (dropping superseded copies, making replicas) goes to
 * the worker as a job. Callers of remote_lookup/fetch/unlink/readdir are FUSE threads and
 * make RPCs themselves. Locks: r->mlock (members and peers), r->qlock (the queue of
 * publications and jobs), r->drain_mu (one drain at a time, so announcements keep their
 * order); never two at once, never across an RPC.
 */
#include "fs/remote.h"
#include "engine/checksum.h"
#include "engine/pool.h"
#include "engine/xfer.h"
#include "fs/log.h"
#include "meta/entries.h"
#include "meta/members.h"
#include "meta/mrpc.h"
#include "meta/namespace.h"
#include "meta/placement.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

#define RPC_TIMEOUT_MS	 3000
#define FETCH_TIMEOUT_MS 5000
#define RESCAN_MS	 3000	      /* owners check replica counts this often */
#define CHECK_NS	 1000000000ll /* a stub's entry is trusted this long */
#define PEER_RETRY_NS	 100000000ull /* after a failed connect */
#define LIST_PAGE	 1024
#define OWNERS		 2 /* an entry lives on its owner and one stand-in */
#define DIR_MAX		 (MR_DIR_MAX + 1)
#define RETRIES		 10	      /* announcements to an owner that could not be told */
#define RETRY_NS	 200000000ull /* 200 ms, times the try */
#define CALL_RETRIES	 3
#define CALL_RETRY_NS	 20000000 /* 20 ms */
#define SCAN_MAX	 65536	  /* entries one scan of the store collects */
#define PREFETCH_CHUNK	 64	  /* blocks fetched in one batch */
#define SEEN_SLOTS	 1024
#define STREAMS_IDLE	 8 /* idle streams kept per member */
#define STREAM_AHEAD	 4 /* chunks of a streamed block requested ahead of its reads */
/* An entry announced at the writer's close(), before its seal: mode bit, and a version older
 * than any real one (so the sealed block replaces it). */
#define PENDING_MODE	0x80000000u
#define PENDING_VERSION 1
#define PENDING_WAIT_NS 2000000000ll

struct rnode {
	uint64_t id;
	char addr[MEMBER_ADDR_MAX];
	struct xfer_peer *peer; /* opened on first use; closed at destroy */
	uint64_t retry_at;	/* monotonic ns: no connect before */
	bool live;
	bool unreachable;	    /* the last connect failed (logged once, until one works) */
	bool sb;		    /* hdr_off/data_off known */
	uint64_t hdr_off, data_off; /* of its pool, from its superblock */
	struct xfer_stream *idle[STREAMS_IDLE]; /* streams to its peer, not in use */
	unsigned nidle;
};

/* A publication or forget from the namespace hooks, or a job for the worker. */
enum qkind { Q_PUBLISH = 1, Q_FORGET, J_DROP, J_REPLICATE, J_FORGET, J_FORGET_NODE };
struct qrec {
	struct qrec *next;
	enum qkind kind;
	uint64_t parent; /* Q_*: directory inode */
	uint64_t node;	 /* J_DROP: whom to tell */
	uint64_t generation;
	struct ent_info info; /* Q_PUBLISH: one holder (this node); J_REPLICATE: the holders */
	bool again;	      /* Q_PUBLISH: a re-announcement or a replica (no replica requests) */
	uint64_t due;	      /* J_FORGET: monotonic ns before which it is not sent */
	bool routed;	      /* Q_*: dir is set and the owners were sent it */
	bool failed;	      /* Q_*: an owner could not be told: try again later */
	unsigned tries;
	char dir[DIR_MAX]; /* J_* */
	char name[MR_NAME_MAX + 1];
};

struct remote {
	struct remote_config cfg;
	struct ents *ents;

	pthread_mutex_t mlock;
	struct rnode *nodes; /* every member ever seen */
	size_t nnodes, cap;
	/* peers of nodes that moved (restarted elsewhere): another thread may still be using
	 * one, so they are closed at destroy */
	struct xfer_peer **grave;
	size_t ngrave;
	uint64_t *live; /* live member ids, sorted */
	size_t nlive;

	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct qrec *qhead, *qtail; /* publications, in order */
	struct qrec *rhead;	    /* publications to send again at retry_at */
	uint64_t retry_at;
	struct qrec *jhead, *jtail; /* jobs */
	struct qrec *fhead, *ftail; /* J_FORGET jobs, in order of their due times */
	bool reannounce;	    /* the members changed: announce everything again */
	uint64_t rescan_at;	    /* monotonic ns of the next replica check */
	bool stop;
	pthread_t worker;
	bool started;
	pthread_mutex_t drain_mu;

	/* the entries of the stubs most recently made, so that the open that follows a lookup
	 * fetches without asking the owner again (direct-mapped by inode number) */
	pthread_mutex_t seen_mu;
	struct seen {
		uint64_t ino;
		struct ent_info info;
		unsigned streams; /* opens of that version streamed */
	} seen[SEEN_SLOTS];
};

struct remote_dir {
	char path[DIR_MAX];
	uint64_t *members; /* whom to ask, in turn */
	size_t nmembers, cur;
	uint64_t cursor;
	bool member_done;
	/* the page in hand: positions base .. base + count - 1 */
	uint64_t base;
	size_t count;
	struct mr_list_item *items;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- members and peers -------------------------------------------------------------------- */

static struct rnode *node_find(struct remote *r, uint64_t id)
{
	for (size_t k = 0; k < r->nnodes; k++)
		if (r->nodes[k].id == id)
			return &r->nodes[k];
	return NULL;
}

/* Close d's idle streams (they lead to a peer no longer used). */
static void idle_close(struct rnode *d)
{
	while (d->nidle)
		xfer_stream_close(d->idle[--d->nidle]);
}

static bool is_live_locked(struct remote *r, uint64_t id)
{
	for (size_t k = 0; k < r->nlive; k++)
		if (r->live[k] == id)
			return true;
	return false;
}

static bool is_live(struct remote *r, uint64_t id)
{
	bool live;

	pthread_mutex_lock(&r->mlock);
	live = is_live_locked(r, id);
	pthread_mutex_unlock(&r->mlock);
	return live;
}

void remote_members(struct remote *r, const struct member *list, size_t n)
{
	uint64_t *live = calloc(n ? n : 1, sizeof(*live));
	bool changed;

	if (!live)
		return;
	pthread_mutex_lock(&r->mlock);
	for (size_t k = 0; k < r->nnodes; k++)
		r->nodes[k].live = false;
	for (size_t k = 0; k < n; k++) {
		struct rnode *d = node_find(r, list[k].node_id);

		live[k] = list[k].node_id;
		if (!d && r->nnodes == r->cap) {
			size_t cap = r->cap ? 2 * r->cap : 8;
			struct rnode *v = realloc(r->nodes, cap * sizeof(*v));

			if (!v)
				continue;
			r->nodes = v;
			r->cap = cap;
		}
		if (!d) {
			d = &r->nodes[r->nnodes++];
			memset(d, 0, sizeof(*d));
			d->id = list[k].node_id;
		}
		if (strcmp(d->addr, list[k].addr)) {
			/* a new address (a restart): the old peer stays until destroy, unused */
			snprintf(d->addr, sizeof(d->addr), "%s", list[k].addr);
			if (d->peer) {
				struct xfer_peer **g =
				    realloc(r->grave, (r->ngrave + 1) * sizeof(*g));

				if (g) {
					r->grave = g;
					g[r->ngrave++] = d->peer;
				}
				d->peer = NULL;
			}
			idle_close(d);
			d->sb = false;
			d->retry_at = 0;
			d->unreachable = false;
		}
		d->live = true;
	}
	changed = n != r->nlive || memcmp(live, r->live, n * sizeof(*live));
	free(r->live);
	r->live = live;
	r->nlive = n;
	pthread_mutex_unlock(&r->mlock);
	if (changed) {
		pthread_mutex_lock(&r->qlock);
		r->reannounce = true;
		r->rescan_at = mono_ns() + 1000000000ull; /* after the announcements settle */
		pthread_cond_signal(&r->qcond);
		pthread_mutex_unlock(&r->qlock);
	}
}

/* The OWNERS best live members for (dir, name): count. */
static size_t owners_of(struct remote *r, const char *dir, const char *name, uint64_t *out,
			size_t k)
{
	size_t n;

	pthread_mutex_lock(&r->mlock);
	n = placement_owners(r->live, r->nlive, dir, name, out, k);
	pthread_mutex_unlock(&r->mlock);
	return n;
}

/* The peer of node id, connecting when needed; NULL when it cannot be reached now. */
static struct xfer_peer *peer_get(struct remote *r, uint64_t id)
{
	struct xfer_peer *p = NULL;
	char addr[MEMBER_ADDR_MAX];
	struct rnode *d;
	bool back;
	int ret;

	pthread_mutex_lock(&r->mlock);
	d = node_find(r, id);
	if (d && d->peer)
		p = d->peer;
	if (p || !d || !d->live || mono_ns() < d->retry_at) {
		pthread_mutex_unlock(&r->mlock);
		return p;
	}
	snprintf(addr, sizeof(addr), "%s", d->addr);
	pthread_mutex_unlock(&r->mlock);

	ret = xfer_open_peer(r->cfg.xe, addr, &p);
	pthread_mutex_lock(&r->mlock);
	d = node_find(r, id);
	if (ret) {
		/* retried every PEER_RETRY_NS while it is needed: said once per outage */
		bool say = d && !d->unreachable;

		if (d) {
			d->retry_at = mono_ns() + PEER_RETRY_NS;
			d->unreachable = true;
		}
		pthread_mutex_unlock(&r->mlock);
		if (say)
			log_msg(LOG_WARNING, "member %016" PRIx64 " (%s) unreachable: %s", id, addr,
				strerror(-ret));
		return NULL;
	}
	back = d && d->unreachable;
	if (back)
		d->unreachable = false;
	if (d && !d->peer && !strcmp(d->addr, addr)) {
		d->peer = p;
		pthread_mutex_unlock(&r->mlock);
	} else { /* someone else connected first, or the node moved */
		struct xfer_peer *mine = p;

		p = d ? d->peer : NULL;
		pthread_mutex_unlock(&r->mlock);
		xfer_close_peer(mine);
	}
	if (back)
		log_msg(LOG_INFO, "member %016" PRIx64 " (%s) reachable again", id, addr);
	return p;
}

/* One metadata RPC to node (to ourselves without the network): 0 with *resp, or -errno. */
static int call(struct remote *r, uint64_t node, const struct mr_buf *req, void **resp,
		size_t *resp_len)
{
	struct xfer_peer *p;
	int ret;

	*resp = NULL;
	*resp_len = 0;
	if (node == r->cfg.node_id) {
		ret = remote_rpc(r, node, req->data, req->len, resp, resp_len);
		return -ret;
	}
	/* -ENOTCONN: no connection to it is up right now (being re-established): try again a
	 * few times while it is a member */
	for (int tries = 0;; tries++) {
		p = peer_get(r, node);
		ret = p ? xfer_call(p, req->data, req->len, resp, resp_len, RPC_TIMEOUT_MS)
			: -ENOTCONN;
		if (ret != -ENOTCONN || tries == CALL_RETRIES || !is_live(r, node))
			return ret;
		nanosleep(&(struct timespec){0, CALL_RETRY_NS}, NULL);
	}
}

/* ---- fetching a block's bytes --------------------------------------------------------------- */

static int read_remote(struct remote *r, struct xfer_peer *p, void *dst, uint64_t off, uint64_t len)
{
	struct xfer_req q = {.op = XFER_READ,
			     .local = dst,
			     .len = len,
			     .peer = p,
			     .remote_seg = r->cfg.pool_seg,
			     .remote_off = off};
	struct xfer_batch *b;
	int ret = xfer_submit(r->cfg.xe, &q, 1, &b);

	if (ret)
		return ret;
	if (xfer_wait(b, FETCH_TIMEOUT_MS) < 1)
		xfer_cancel(b);
	ret = atomic_load(&q.status) == XFER_DONE ? 0 : q.error ? -q.error : -ETIMEDOUT;
	xfer_batch_free(b);
	return ret;
}

/* Where holder id's block headers are: read its pool superblock once. */
static int holder_layout(struct remote *r, uint64_t id, struct xfer_peer *p, uint64_t *hdr_off,
			 uint64_t *data_off)
{
	struct pool_super sb;
	struct rnode *d;
	int ret;

	pthread_mutex_lock(&r->mlock);
	d = node_find(r, id);
	if (d && d->sb) {
		*hdr_off = d->hdr_off;
		*data_off = d->data_off;
		pthread_mutex_unlock(&r->mlock);
		return 0;
	}
	pthread_mutex_unlock(&r->mlock);
	ret = read_remote(r, p, &sb, 0, sizeof(sb));
	if (ret)
		return ret;
	if (sb.magic != POOL_SUPER_MAGIC || sb.page_size != POOL_PAGE_SIZE ||
	    sb.data_off <= sb.hdr_off)
		return -EPROTO;
	pthread_mutex_lock(&r->mlock);
	d = node_find(r, id);
	if (d) {
		d->hdr_off = sb.hdr_off;
		d->data_off = sb.data_off;
		d->sb = true;
	}
	pthread_mutex_unlock(&r->mlock);
	*hdr_off = sb.hdr_off;
	*data_off = sb.data_off;
	return 0;
}

/* Where the header of holder h's block is in its pool object: 0, -EPROTO for an offset that
 * is no data page of that pool, or the error of reading its superblock. */
static int holder_hdr_off(struct remote *r, const struct ent_holder *h, struct xfer_peer *p,
			  uint64_t *hdr_off)
{
	uint64_t data_off;
	int ret = holder_layout(r, h->node, p, hdr_off, &data_off);

	if (ret)
		return ret;
	if (h->offset < data_off || (h->offset - data_off) % POOL_PAGE_SIZE)
		return -EPROTO;
	*hdr_off += sizeof(struct pool_hdr) * ((h->offset - data_off) / POOL_PAGE_SIZE);
	return 0;
}

static int job_push(struct remote *r, enum qkind kind, const char *dir, const char *name,
		    uint64_t node, uint64_t generation, const struct ent_info *info);

/* Does a holder's block header, read after the bytes, say they were version info->version of
 * the block (name hash nh) at its generation, sealed and whole? */
static bool hdr_vouches(const struct pool_hdr *hdr, const struct ent_holder *h,
			const struct ent_info *info, const XXH128_hash_t *nh)
{
	return hdr->magic == POOL_HDR_MAGIC && (hdr->flags & POOL_HDR_SEALED) &&
	       hdr->generation == h->generation && hdr->length == info->size &&
	       hdr->name_hash[0] == nh->low64 && hdr->name_hash[1] == nh->high64 &&
	       hdr->seal_time_ns == info->version;
}

/* hdr_vouches, for a read of name from holder h; when it does not (evicted or replaced there
 * since the entry was made, or the node restarted), its owners are told to forget that
 * holder (and restore the replica count). */
static bool holder_vouches(struct remote *r, const char *dir, const char *name,
			   const struct pool_hdr *hdr, const struct ent_holder *h,
			   const struct ent_info *info, const XXH128_hash_t *nh)
{
	if (hdr_vouches(hdr, h, info, nh))
		return true;
	(void)job_push(r, J_FORGET, dir, name, h->node, h->generation, NULL);
	return false;
}

/* Can holder h serve this node (not this node, live, its peer open, its header located)? 0
 * with *p and *hdr_off, or -errno. */
static int holder_reach(struct remote *r, const struct ent_holder *h, struct xfer_peer **p,
			uint64_t *hdr_off)
{
	if (h->node == r->cfg.node_id || !is_live(r, h->node) || !(*p = peer_get(r, h->node)))
		return -ENOENT;
	return holder_hdr_off(r, h, *p, hdr_off);
}

/* Copy [off, off + len) of version info->version of name from one of its live holders into
 * dst, checked against the holder's block header: 0 with *hdr, or -ENOENT when no holder
 * could give it. */
static int fetch_range(struct remote *r, const char *dir, const char *name,
		       const struct ent_info *info, uint64_t off, uint64_t len, void *dst,
		       struct pool_hdr *hdr)
{
	XXH128_hash_t nh = XXH3_128bits(name, strlen(name));

	for (unsigned k = 0; k < info->nholders; k++) {
		const struct ent_holder *h = &info->holders[k];
		uint64_t hdr_off;
		struct xfer_peer *p;
		int ret = holder_reach(r, h, &p, &hdr_off);

		if (ret == -ENOENT)
			continue;
		if (!ret)
			ret = read_remote(r, p, dst, h->offset + off, len);
		/* the header after the bytes: unchanged means the bytes were that block's */
		if (!ret)
			ret = read_remote(r, p, hdr, hdr_off, sizeof(*hdr));
		if (ret) {
			/* per block: the peer's outage itself is said once (engine/tcp.c) */
			log_msg(LOG_DEBUG, "fetch of %s from node %016" PRIx64 ": %s", name,
				h->node, strerror(-ret));
			continue;
		}
		if (holder_vouches(r, dir, name, hdr, h, info, &nh))
			return 0;
	}
	return -ENOENT;
}

/* The whole block (fetch_range) with its checksum. */
static int fetch_bytes(struct remote *r, const char *dir, const char *name,
		       const struct ent_info *info, void *dst, uint64_t *sum)
{
	struct pool_hdr hdr;
	int ret;

	if (info->size == 0) {
		*sum = checksum(NULL, 0);
		return 0;
	}
	ret = fetch_range(r, dir, name, info, 0, info->size, dst, &hdr);
	/* The header was read after the bytes and is unchanged: the holder clears a header
	 * before its pages can be reused, so the bytes were that block's, and its checksum is
	 * theirs (the cached copy keeps it). */
	if (!ret)
		*sum = hdr.checksum;
	return ret;
}

/* ---- entries: asking the owners ----------------------------------------------------------- */

/* Keep only the live holders of info (never this node's copies: they are local). */
static void live_holders(struct remote *r, struct ent_info *info)
{
	unsigned n = 0;

	pthread_mutex_lock(&r->mlock);
	for (unsigned k = 0; k < info->nholders; k++)
		if (is_live_locked(r, info->holders[k].node))
			info->holders[n++] = info->holders[k];
	pthread_mutex_unlock(&r->mlock);
	info->nholders = (uint8_t)n;
}

/* The entry of (dir, name) from its owner, else its stand-in: 0, or -ENOENT. */
static int get_entry(struct remote *r, const char *dir, const char *name, struct ent_info *info)
{
	uint64_t owners[OWNERS];
	size_t n = owners_of(r, dir, name, owners, OWNERS);
	struct mr_buf b;
	int ret = -ENOENT;

	mr_buf_init(&b);
	if (mr_get_encode(&b, dir, name) < 0) {
		mr_buf_free(&b);
		return -ENOENT;
	}
	for (size_t k = 0; k < n; k++) {
		void *resp;
		size_t len;

		ret = call(r, owners[k], &b, &resp, &len);
		if (!ret)
			ret = mr_info_decode(resp, len, info) < 0 ? -EIO : 0;
		free(resp);
		if (!ret)
			break;
	}
	mr_buf_free(&b);
	return ret ? -ENOENT : 0;
}

/* get_entry, waiting for the seal of an entry its writer has closed (announced pending). */
static int get_sealed_entry(struct remote *r, const char *dir, const char *name,
			    struct ent_info *info)
{
	int ret = get_entry(r, dir, name, info);

	for (int64_t t0 = real_ns(); !ret && (info->mode & PENDING_MODE);) {
		struct timespec ts = {0, 2000000};

		if (real_ns() - t0 > PENDING_WAIT_NS)
			return -ENOENT;
		nanosleep(&ts, NULL);
		ret = get_entry(r, dir, name, info);
	}
	return ret;
}

static int dir_path(struct remote *r, uint64_t ino, char *buf)
{
	int ret = ns_path(r->cfg.ns, ino, buf, DIR_MAX);

	return ret == -ENAMETOOLONG ? -ENOENT : ret;
}

/* Remember the entry a lookup (or an open) found for stub ino; its count of opens carries
 * over when it is that same version, else starts at opens. */
static void seen_put(struct remote *r, uint64_t ino, const struct ent_info *info, unsigned opens)
{
	struct seen *sl = &r->seen[ino % SEEN_SLOTS];

	pthread_mutex_lock(&r->seen_mu);
	if (sl->ino != ino || sl->info.version != info->version)
		sl->streams = opens;
	sl->ino = ino;
	sl->info = *info;
	pthread_mutex_unlock(&r->seen_mu);
}

int remote_lookup(struct remote *r, uint64_t parent, const char *name, struct ns_attr *attr)
{
	struct ns *ns = r->cfg.ns;
	struct ent_info info;
	char dir[DIR_MAX];
	int ret = ns_lookup(ns, parent, name, attr);

	if (ret != -ENOENT && ret)
		return ret;
	if (!ret && (!attr->remote || real_ns() - attr->checked_ns < CHECK_NS))
		return 0;
	if (!ret)
		ns_forget(ns, attr->ino, 1); /* asked again below */
	if (!mr_name_ok(name) || dir_path(r, parent, dir) || get_sealed_entry(r, dir, name, &info))
		goto gone;
	live_holders(r, &info);
	if (!info.nholders)
		goto gone;
	ret = ns_add_remote(ns, parent, name,
			    &(struct ns_remote){.size = info.size,
						.version = info.version,
						.mtime_ns = info.mtime_ns,
						.mode = info.mode,
						.uid = info.uid,
						.gid = info.gid},
			    attr);
	if (!ret && attr->remote) {
		seen_put(r, attr->ino, &info, 0);
	}
	return ret;
gone:
	if (!ret) /* a stub or cached copy of a block the cluster no longer has */
		(void)ns_remove_remote(ns, attr->ino);
	return -ENOENT;
}

/* The entry of stub ino at version as its lookup found it, if still remembered (counting an
 * open of it when opens is set): true with *info. */
static bool seen_get(struct remote *r, uint64_t ino, uint64_t version, struct ent_info *info,
		     unsigned *opens)
{
	struct seen *sl = &r->seen[ino % SEEN_SLOTS];
	bool known;

	pthread_mutex_lock(&r->seen_mu);
	known = ino && sl->ino == ino && sl->info.version == version;
	if (known) {
		*info = sl->info;
		if (opens)
			*opens = sl->streams++;
	}
	pthread_mutex_unlock(&r->seen_mu);
	return known;
}

/* Fetch version `version` of name in parent (size bytes) into a reservation. */
static int fetch_into(struct remote *r, uint64_t ino, uint64_t parent, const char *name,
		      const char *dir, uint64_t version, struct ns_handle **hp,
		      struct ent_info *info, uint64_t *sum)
{
	bool known = seen_get(r, ino, version, info, NULL);
	int ret = 0;

	if (!known)
		ret = get_entry(r, dir, name, info);
	if (ret)
		return ret;
	if (info->version != version && version)
		return -ENOENT; /* replaced meanwhile: the caller looks it up again */
	ret = ns_reserve(r->cfg.ns, parent, name, info->size, info->mode & 07777, 0, 0, hp);
	if (ret)
		return ret;
	ret = fetch_bytes(r, dir, name, info, ns_handle_data(*hp), sum);
	if (ret == -ENOENT && known) { /* the holders we knew are gone: ask the owner */
		ret = get_entry(r, dir, name, info);
		if (!ret && info->version == version)
			ret = fetch_bytes(r, dir, name, info, ns_handle_data(*hp), sum);
		else if (!ret)
			ret = -ENOENT;
	}
	if (ret) {
		ns_abort(*hp);
		*hp = NULL;
	}
	return ret;
}

int remote_fetch(struct remote *r, uint64_t ino)
{
	char name[MR_NAME_MAX + 1], dir[DIR_MAX];
	struct ns_handle *h;
	struct ent_info info;
	uint64_t parent, size, version, sum;
	int ret = ns_remote_info(r->cfg.ns, ino, &parent, name, &size, &version);

	if (ret == -EEXIST)
		return 0;
	if (!ret)
		ret = dir_path(r, parent, dir);
	if (!ret)
		ret = fetch_into(r, ino, parent, name, dir, version, &h, &info, &sum);
	if (!ret)
		ret = ns_fill_remote(h, ino, version, sum);
	if (ret == -ESTALE)
		return 0; /* filled by another reader meanwhile, or gone: ns_open tells */
	if (ret == -ENOENT)
		(void)ns_remove_remote(r->cfg.ns, ino);
	return ret;
}

/* ---- streamed reads ----------------------------------------------------------------------- */

struct remote_stream {
	struct remote *r;
	char dir[DIR_MAX];
	char name[MR_NAME_MAX + 1];
	XXH128_hash_t nh;
	struct ent_info info;
	unsigned cur; /* the holder that served the last read */
	/* Reads in order (a whole block read with a large buffer: the kernel's READs come one
	 * after the other, each of the same size but the last) are requested ahead, so that the
	 * holder sends the next chunk while this node passes one on: [next, ahead) is in flight
	 * on s, from holder at, in chunks of chunk bytes. */
	pthread_mutex_t mu;
	struct xfer_stream *s;
	unsigned at;
	uint64_t hdr_off, chunk, next, ahead;
	bool no_ahead;	/* a read out of that order came: one request per read from then on */
	bool refreshed; /* the entry was asked for again after the holders failed */
	bool counted;	/* in the fetched blocks (ns_note_fetched) */
};

/* The length of the chunk at off. */
static uint64_t chunk_len(const struct remote_stream *rs, uint64_t off)
{
	return rs->info.size - off < rs->chunk ? rs->info.size - off : rs->chunk;
}

/* A stream to node id's peer p: an idle one, or a new one. */
static int stream_get(struct remote *r, uint64_t id, struct xfer_peer *p, struct xfer_stream **s)
{
	struct rnode *d;

	for (;;) {
		pthread_mutex_lock(&r->mlock);
		d = node_find(r, id);
		*s = d && d->peer == p && d->nidle ? d->idle[--d->nidle] : NULL;
		pthread_mutex_unlock(&r->mlock);
		if (!*s)
			return xfer_stream_open(p, s);
		if (xfer_stream_alive(*s))
			return 0;
		xfer_stream_close(*s); /* the member went away (or restarted) meanwhile */
	}
}

/* Keep a stream for the next read, or close it (broken, too many, or its peer replaced). */
static void stream_put(struct remote *r, uint64_t id, struct xfer_stream *s, bool broken)
{
	struct rnode *d;

	if (!broken) {
		pthread_mutex_lock(&r->mlock);
		d = node_find(r, id);
		if (d && d->peer == xfer_stream_peer(s) && d->nidle < STREAMS_IDLE) {
			d->idle[d->nidle++] = s;
			s = NULL;
		}
		pthread_mutex_unlock(&r->mlock);
	}
	xfer_stream_close(s);
}

/* Request chunks ahead, up to STREAM_AHEAD in flight. */
static int ahead_fill(struct remote_stream *rs)
{
	const struct ent_holder *h = &rs->info.holders[rs->at];
	uint64_t n;
	int ret;

	while (rs->ahead < rs->info.size && rs->ahead - rs->next < STREAM_AHEAD * rs->chunk) {
		n = chunk_len(rs, rs->ahead);
		ret = xfer_stream_send(rs->s, rs->r->cfg.pool_seg, h->offset + rs->ahead, n,
				       rs->hdr_off, sizeof(struct pool_hdr));
		if (ret)
			return ret;
		rs->ahead += n;
	}
	return 0;
}

/* No more reads ahead: the stream goes back (nothing in flight) or is closed. */
static void ahead_stop(struct remote_stream *rs)
{
	if (rs->s)
		stream_put(rs->r, rs->info.holders[rs->at].node, rs->s, rs->next != rs->ahead);
	rs->s = NULL;
	rs->no_ahead = true;
}

/* The first read, at 0, of chunk bytes: start reading ahead from the first holder that can. */
static void ahead_start(struct remote_stream *rs, uint64_t chunk)
{
	struct remote *r = rs->r;
	unsigned n = rs->info.nholders;

	rs->no_ahead = true; /* one try */
	for (unsigned k = 0; k < n && !rs->s; k++) {
		unsigned at = (rs->cur + k) % n;
		const struct ent_holder *h = &rs->info.holders[at];
		struct xfer_peer *p;

		if (holder_reach(r, h, &p, &rs->hdr_off) || stream_get(r, h->node, p, &rs->s))
			continue;
		rs->at = at;
		rs->chunk = chunk;
		rs->next = rs->ahead = 0;
		rs->no_ahead = false;
		if (ahead_fill(rs))
			ahead_stop(rs);
	}
}

/* The read of the chunk at rs->next (len bytes) from the stream: len, or -errno. */
static ssize_t ahead_take(struct remote_stream *rs, uint64_t len, int pipe_wr)
{
	const struct ent_holder *h = &rs->info.holders[rs->at];
	struct pool_hdr hdr;
	int broken, ret = xfer_stream_recv(rs->s, len, pipe_wr, &hdr, sizeof(hdr), &broken);

	if (ret)
		return ret;
	rs->next += len;
	if (!holder_vouches(rs->r, rs->dir, rs->name, &hdr, h, &rs->info, &rs->nh))
		return -ESTALE;
	rs->cur = rs->at;
	if (ahead_fill(rs))
		ahead_stop(rs); /* this chunk is good; the next reads ask one by one */
	return (ssize_t)len;
}

int remote_stream_open(struct remote *r, uint64_t ino, uint64_t chunk, struct remote_stream **out)
{
	struct remote_stream *rs;
	uint64_t parent, size, version;
	bool known, again;
	unsigned opens = 0;
	int ret;

	if (!(rs = calloc(1, sizeof(*rs))))
		return -ENOMEM;
	ret = ns_remote_info(r->cfg.ns, ino, &parent, rs->name, &size, &version);
	if (!ret && !size)
		ret = -EAGAIN;
	if (!ret)
		ret = dir_path(r, parent, rs->dir);
	if (ret) {
		free(rs);
		return ret;
	}
	known = seen_get(r, ino, version, &rs->info, &opens);
	again = known && opens > 0;
	/* the first open after a lookup uses its entry; a second one asks again, since it may
	 * keep a copy */
	if ((!known || again) && !(ret = get_sealed_entry(r, rs->dir, rs->name, &rs->info))) {
		live_holders(r, &rs->info);
		if (!rs->info.nholders)
			ret = -ENOENT;
	}
	if (!ret && !known && rs->info.version == version)
		seen_put(r, ino, &rs->info, 1);
	/* Replaced since the kernel looked the name up (it keeps a name up to a second): what
	 * an open of the name gives is the version the name has now, read through this stub
	 * (the next lookup makes a stub of it). Only the version the stub stands for is kept
	 * as a copy. */
	if (!ret && rs->info.version != version)
		again = false;
	if (!ret && again)
		ret = -EAGAIN; /* read before: keep a copy this time */
	if (ret) {
		free(rs);
		return ret;
	}
	rs->r = r;
	rs->nh = XXH3_128bits(rs->name, strlen(rs->name));
	pthread_mutex_init(&rs->mu, NULL);
	if (chunk) {
		ahead_start(rs, chunk < rs->info.size ? chunk : rs->info.size);
		if (!rs->s) { /* no holder answers: a miss now rather than at the first read */
			remote_stream_close(rs);
			return -ENOENT;
		}
	}
	*out = rs;
	return 0;
}

void remote_pipe_drain(int pipe_rd)
{
	char buf[16384];

	while (read(pipe_rd, buf, sizeof(buf)) > 0)
		;
}

/* One try of holder h: len (the bytes spliced and vouched for), or -errno. */
static ssize_t stream_try(struct remote_stream *rs, const struct ent_holder *h, uint64_t off,
			  size_t len, int pipe_wr)
{
	struct remote *r = rs->r;
	struct xfer_stream *s;
	struct xfer_peer *p;
	struct pool_hdr hdr;
	uint64_t hdr_off;
	int ret, broken;

	ret = holder_reach(r, h, &p, &hdr_off);
	if (!ret)
		ret = stream_get(r, h->node, p, &s);
	if (ret)
		return ret;
	ret = xfer_stream_read(s, r->cfg.pool_seg, h->offset + off, len, pipe_wr, hdr_off, &hdr,
			       sizeof(hdr), &broken);
	stream_put(r, h->node, s, broken);
	if (ret)
		return ret;
	if (!holder_vouches(r, rs->dir, rs->name, &hdr, h, &rs->info, &rs->nh))
		return -ESTALE;
	return (ssize_t)len;
}

/* Read [off, off + len) from the stream ahead, if it is the next chunk of it: len, or -errno
 * (then the stream is stopped and the pipe is empty). */
static ssize_t read_ahead(struct remote_stream *rs, uint64_t off, size_t len, const int pipe[2])
{
	ssize_t ret = -EAGAIN;

	if (off == rs->next && len == chunk_len(rs, off))
		ret = ahead_take(rs, len, pipe[1]);
	if (ret < 0) {
		remote_pipe_drain(pipe[0]);
		log_msg(LOG_DEBUG, "streamed read of %s ahead: %s", rs->name, strerror((int)-ret));
		ahead_stop(rs);
	}
	return ret;
}

/* Read [off, off + len) with one request, from the first holder that vouches for it. */
static ssize_t read_once(struct remote_stream *rs, uint64_t off, size_t len, const int pipe[2])
{
	unsigned n = rs->info.nholders;
	ssize_t ret;

	for (unsigned k = 0; k < n; k++) {
		unsigned at = (rs->cur + k) % n;

		ret = stream_try(rs, &rs->info.holders[at], off, len, pipe[1]);
		if (ret >= 0) {
			rs->cur = at;
			return ret;
		}
		remote_pipe_drain(pipe[0]);
		if (ret == -ENOBUFS)
			return ret; /* not the holder's fault */
		log_msg(LOG_DEBUG, "streamed read of %s from node %016" PRIx64 ": %s", rs->name,
			rs->info.holders[at].node, strerror((int)-ret));
	}
	return -ENOENT;
}

static ssize_t stream_read_locked(struct remote_stream *rs, uint64_t off, size_t len,
				  const int pipe[2])
{
	ssize_t ret;

	if (off >= rs->info.size)
		return 0;
	if (len > rs->info.size - off)
		len = (size_t)(rs->info.size - off);
	if (!rs->s && !off && !rs->no_ahead && len < rs->info.size)
		ahead_start(rs, len);
	if (rs->s && (ret = read_ahead(rs, off, len, pipe)) >= 0)
		return ret;
	ret = read_once(rs, off, len, pipe);
	/* Nothing served yet and the holders no longer have that version: the name may have
	 * another one now, which is what an open of it gives (once). */
	if (ret == -ENOENT && !off && !rs->refreshed) {
		rs->refreshed = true;
		rs->no_ahead = true;
		if (get_sealed_entry(rs->r, rs->dir, rs->name, &rs->info))
			return -ENOENT;
		live_holders(rs->r, &rs->info);
		rs->cur = 0;
		return stream_read_locked(rs, off, len, pipe);
	}
	return ret;
}

ssize_t remote_stream_read(struct remote_stream *rs, uint64_t off, size_t len, const int pipe[2])
{
	ssize_t ret;
	bool first;

	pthread_mutex_lock(&rs->mu);
	ret = stream_read_locked(rs, off, len, pipe);
	first = ret > 0 && !rs->counted;
	rs->counted |= first;
	pthread_mutex_unlock(&rs->mu);
	if (ret > 0) /* a block counts once per open, at its first bytes */
		ns_note_fetched(rs->r->cfg.ns, first, (uint64_t)ret);
	return ret;
}

ssize_t remote_stream_read_buf(struct remote_stream *rs, uint64_t off, size_t len, void *buf)
{
	struct pool_hdr hdr;
	ssize_t ret = 0;

	pthread_mutex_lock(&rs->mu);
	ahead_stop(rs); /* what is in flight would come first */
	if (off < rs->info.size) {
		if (len > rs->info.size - off)
			len = (size_t)(rs->info.size - off);
		ret = fetch_range(rs->r, rs->dir, rs->name, &rs->info, off, len, buf, &hdr)
			  ? -ENOENT
			  : (ssize_t)len;
	}
	pthread_mutex_unlock(&rs->mu);
	return ret;
}

void remote_stream_close(struct remote_stream *rs)
{
	ahead_stop(rs);
	pthread_mutex_destroy(&rs->mu);
	free(rs);
}

int remote_prefetch(struct remote *r, uint64_t parent, const char *name)
{
	struct ns_attr a;
	int ret = remote_lookup(r, parent, name, &a);

	if (ret)
		return ret;
	ret = a.remote ? remote_fetch(r, a.ino) : 0;
	ns_forget(r->cfg.ns, a.ino, 1);
	return ret;
}

/* One block of a batch prefetch. */
struct pf {
	char name[MR_NAME_MAX + 1];
	struct ent_info info;
	struct ns_handle *h;
	uint64_t ino;
	struct pool_hdr hdr;
	const struct ent_holder *holder;
	struct xfer_peer *peer;
	uint64_t hdr_off;
};

/* Fetch the chunk v[0..n) (entries known, stubs made): data in one batch, then the headers
 * in another, then the checks. Returns how many were filled. */
static size_t prefetch_chunk(struct remote *r, struct pf *v, size_t n)
{
	struct xfer_req q[PREFETCH_CHUNK];
	struct xfer_batch *b;
	size_t m = 0, done = 0;

	for (size_t k = 0; k < n; k++) {
		struct pf *p = &v[k];

		p->peer = NULL;
		for (unsigned j = 0; j < p->info.nholders && !p->peer; j++) {
			const struct ent_holder *h = &p->info.holders[j];
			struct xfer_peer *peer;

			if (h->node == r->cfg.node_id || !(peer = peer_get(r, h->node)) ||
			    holder_hdr_off(r, h, peer, &p->hdr_off))
				continue;
			p->peer = peer;
			p->holder = h;
		}
		if (p->peer && p->info.size)
			q[m++] = (struct xfer_req){.op = XFER_READ,
						   .local = ns_handle_data(p->h),
						   .len = p->info.size,
						   .peer = p->peer,
						   .remote_seg = r->cfg.pool_seg,
						   .remote_off = p->holder->offset};
	}
	/* the bytes, then (what arrived whole) the headers that vouch for them */
	for (int pass = 0; pass < 2 && m; pass++) {
		size_t j = 0, keep = 0;

		if (xfer_submit(r->cfg.xe, q, m, &b)) {
			for (size_t k = 0; k < n; k++)
				v[k].peer = NULL; /* all given up below */
			break;
		}
		if (xfer_wait(b, FETCH_TIMEOUT_MS) < m)
			xfer_cancel(b);
		for (size_t k = 0; k < n; k++) {
			struct pf *p = &v[k];

			if (!p->peer || !p->info.size)
				continue;
			if (atomic_load(&q[j].status) != XFER_DONE)
				p->peer = NULL;
			else if (pass == 0)
				q[keep++] = (struct xfer_req){.op = XFER_READ,
							      .local = &p->hdr,
							      .len = sizeof(p->hdr),
							      .peer = p->peer,
							      .remote_seg = r->cfg.pool_seg,
							      .remote_off = p->hdr_off};
			j++;
		}
		xfer_batch_free(b);
		m = keep;
	}
	for (size_t k = 0; k < n; k++) {
		struct pf *p = &v[k];
		XXH128_hash_t nh = XXH3_128bits(p->name, strlen(p->name));
		uint64_t sum = checksum(NULL, 0);

		if (p->info.size && (!p->peer || !hdr_vouches(&p->hdr, p->holder, &p->info, &nh))) {
			ns_abort(p->h); /* left to remote_prefetch, which tries every holder */
		} else {
			if (p->info.size)
				sum = p->hdr.checksum;
			done += ns_fill_remote(p->h, p->ino, p->info.version, sum) == 0;
		}
		ns_forget(r->cfg.ns, p->ino, 1); /* a stub given up goes with it */
	}
	return done;
}

int remote_prefetch_batch(struct remote *r, uint64_t parent, size_t from, size_t n,
			  remote_name_fn name_at, void *arg)
{
	struct ns *ns = r->cfg.ns;
	char dir[DIR_MAX], buf[MR_NAME_MAX + 1];
	struct pf *v = calloc(PREFETCH_CHUNK, sizeof(*v));
	size_t m = 0, done = 0;
	int ret = dir_path(r, parent, dir);

	if (!v || ret) {
		free(v);
		return ret ? ret : -ENOMEM;
	}
	for (size_t k = from; k <= n; k++) {
		struct pf *p = &v[m];
		const char *name = k < n ? name_at(arg, k, buf) : NULL;
		struct ns_attr a;

		if (name && mr_name_ok(name) && remote_lookup(r, parent, name, &a) == 0) {
			if (a.remote &&
			    ns_remote_info(ns, a.ino, &(uint64_t){0}, p->name, &(uint64_t){0},
					   &(uint64_t){0}) == 0 &&
			    (seen_get(r, a.ino, a.version, &p->info, NULL) ||
			     get_entry(r, dir, name, &p->info) == 0) &&
			    p->info.version == a.version &&
			    ns_reserve(ns, parent, name, p->info.size, p->info.mode & 07777, 0, 0,
				       &p->h) == 0) {
				live_holders(r, &p->info);
				p->ino = a.ino; /* its lookup reference is dropped after the fill */
				m++;
			} else {
				ns_forget(ns, a.ino, 1);
			}
		}
		if (m == PREFETCH_CHUNK || (k == n && m)) {
			done += prefetch_chunk(r, v, m);
			m = 0;
		}
	}
	free(v);
	return (int)done;
}

int remote_holders(struct remote *r, uint64_t ino, char *buf, size_t len)
{
	struct ent_info info;
	char path[DIR_MAX + MR_NAME_MAX + 2], *name;
	size_t used = 0;

	if (ns_path(r->cfg.ns, ino, path, sizeof(path)))
		return -ENODATA;
	name = strrchr(path, '/');
	if (name)
		*name++ = '\0';
	else
		name = path;
	if (get_entry(r, name == path ? "" : path, name, &info))
		return -ENODATA;
	live_holders(r, &info);
	buf[0] = '\0';
	for (unsigned k = 0; k < info.nholders; k++) {
		int n = snprintf(buf + used, len - used, "%s%016" PRIx64, k ? "," : "",
				 info.holders[k].node);

		if (n < 0 || (size_t)n >= len - used)
			return -ERANGE;
		used += (size_t)n;
	}
	return (int)used;
}

/* Tell node to drop its copy of (dir, name) at generation. */
static void send_drop(struct remote *r, uint64_t node, const char *dir, const char *name,
		      uint64_t generation)
{
	struct mr_buf b;
	void *resp;
	size_t len;

	mr_buf_init(&b);
	if (!mr_drop_encode(&b, dir, name, generation)) {
		(void)call(r, node, &b, &resp, &len);
		free(resp);
	}
	mr_buf_free(&b);
}

int remote_unlink(struct remote *r, uint64_t parent, const char *name, bool local)
{
	uint64_t owners[OWNERS];
	char dir[DIR_MAX];
	struct ent_info info;
	bool found = local;
	struct mr_buf b;
	size_t n;

	if (!mr_name_ok(name) || dir_path(r, parent, dir))
		return local ? 0 : -ENOENT;
	n = owners_of(r, dir, name, owners, OWNERS);
	mr_buf_init(&b);
	if (mr_unlink_encode(&b, dir, name, UINT64_MAX) < 0)
		n = 0;
	for (size_t k = 0; k < n; k++) {
		void *resp;
		size_t len;

		if (call(r, owners[k], &b, &resp, &len) == 0 &&
		    mr_info_decode(resp, len, &info) == 0) {
			found = true;
			for (unsigned j = 0; j < info.nholders; j++)
				if (info.holders[j].node != r->cfg.node_id)
					send_drop(r, info.holders[j].node, dir, name,
						  info.holders[j].generation);
		}
		free(resp);
	}
	mr_buf_free(&b);
	return found ? 0 : -ENOENT;
}

/* ---- announcing what is published here ----------------------------------------------------- */

/*
 * A reader that found a holder no longer vouching for an entry (J_FORGET) tells the owners
 * only this long after: the holder may have replaced the block (rename over it), and its
 * publication of the new version may not have reached the owners yet; a forget that came
 * first would leave the name with no holder, a miss on every node, until it does. Once the
 * new version is there, the forget (of the old generation) changes nothing. A holder that
 * drops a block tells the owners itself, at once.
 */
#define FORGET_DELAY_NS 1000000000ull

/* Append q to the list [*head, *tail]. */
static void fifo_push(struct qrec **head, struct qrec **tail, struct qrec *q)
{
	q->next = NULL;
	if (*tail)
		(*tail)->next = q;
	else
		*head = q;
	*tail = q;
}

/* Take the first of the list [*head, *tail] (not empty). */
static struct qrec *fifo_pop(struct qrec **head, struct qrec **tail)
{
	struct qrec *q = *head;

	*head = q->next;
	if (!*head)
		*tail = NULL;
	return q;
}

static void queue_push(struct remote *r, struct qrec *q)
{
	pthread_mutex_lock(&r->qlock);
	if (q->kind == J_FORGET) {
		q->due = mono_ns() + FORGET_DELAY_NS;
		fifo_push(&r->fhead, &r->ftail, q);
	} else if (q->kind == Q_PUBLISH || q->kind == Q_FORGET) {
		fifo_push(&r->qhead, &r->qtail, q);
	} else {
		fifo_push(&r->jhead, &r->jtail, q);
	}
	pthread_cond_signal(&r->qcond);
	pthread_mutex_unlock(&r->qlock);
}

static struct qrec *qrec_pub(struct remote *r, const struct ns_pub *p)
{
	struct qrec *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->kind = Q_PUBLISH;
	q->parent = p->parent;
	snprintf(q->name, sizeof(q->name), "%s", p->name);
	q->info = (struct ent_info){.size = p->length,
				    .version = p->version,
				    .mtime_ns = p->mtime_ns,
				    .mode = p->mode,
				    .uid = p->uid,
				    .gid = p->gid,
				    .replicas = 1,
				    .nholders = 1};
	q->info.holders[0] = (struct ent_holder){r->cfg.node_id, p->offset, p->generation};
	q->again = p->replica; /* a replica asks for no more copies */
	return q;
}

/* ns hooks, under ns->lock: only queue. */
static void on_publish(void *arg, const struct ns_pub *p)
{
	struct remote *r = arg;
	struct qrec *q = qrec_pub(r, p);

	if (q) /* else: announced at the next membership change */
		queue_push(r, q);
}

static void on_forget(void *arg, uint64_t parent, const char *name)
{
	struct remote *r = arg;
	struct qrec *q = calloc(1, sizeof(*q));

	if (!q)
		return;
	q->kind = Q_FORGET;
	q->parent = parent;
	snprintf(q->name, sizeof(q->name), "%s", name);
	queue_push(r, q);
}

/* A batch for one owner. */
struct obatch {
	uint64_t node;
	struct mr_buf ann, fgt;
	struct qrec **recs; /* the announced records, in order */
	size_t nrecs;
	struct qrec **frecs; /* the forgotten ones */
	size_t nfrecs;
};

/* Send and empty the batches; superseded local blocks are dropped. */
static void obatch_send(struct remote *r, struct obatch *ob, size_t nob)
{
	for (size_t k = 0; k < nob; k++) {
		struct mr_status *st;
		void *resp;
		size_t len;
		int n;

		if (ob[k].ann.count && call(r, ob[k].node, &ob[k].ann, &resp, &len) < 0)
			for (size_t j = 0; j < ob[k].nrecs; j++)
				ob[k].recs[j]->failed = true;
		else if (ob[k].ann.count && (st = calloc(ob[k].nrecs, sizeof(*st)))) {
			n = mr_status_decode(resp, len, st, (unsigned)ob[k].nrecs);
			for (int j = 0; j < n; j++)
				if (st[j].status == ESTALE) /* a newer version exists elsewhere */
					(void)ns_drop(r->cfg.ns, ob[k].recs[j]->parent,
						      ob[k].recs[j]->name,
						      ob[k].recs[j]->info.holders[0].generation);
			free(st);
			free(resp);
		}
		if (ob[k].fgt.count && call(r, ob[k].node, &ob[k].fgt, &resp, &len) == 0)
			free(resp);
		else
			for (size_t j = 0; j < ob[k].nfrecs; j++)
				ob[k].frecs[j]->failed = true;
		mr_announce_start(&ob[k].ann);
		mr_forget_start(&ob[k].fgt);
		ob[k].ann.count = ob[k].fgt.count = 0;
		ob[k].nrecs = ob[k].nfrecs = 0;
	}
}

/* Add q (with its directory path) to the batches of its owners. */
static void obatch_add(struct remote *r, struct obatch **obp, size_t *nob, size_t *cap,
		       struct qrec *q, const char *dir, size_t maxrecs)
{
	uint64_t owners[OWNERS];
	size_t n = owners_of(r, dir, q->name, owners, OWNERS);

	for (size_t k = 0; k < n; k++) {
		struct obatch *ob = NULL;
		int ret;

		for (size_t j = 0; j < *nob; j++)
			if ((*obp)[j].node == owners[k])
				ob = &(*obp)[j];
		if (!ob) {
			if (*nob == *cap) {
				size_t c = *cap ? 2 * *cap : 4;
				struct obatch *v = realloc(*obp, c * sizeof(*v));

				if (!v)
					continue;
				*obp = v;
				*cap = c;
			}
			ob = &(*obp)[(*nob)++];
			memset(ob, 0, sizeof(*ob));
			ob->node = owners[k];
			ob->recs = calloc(maxrecs, sizeof(*ob->recs));
			ob->frecs = calloc(maxrecs, sizeof(*ob->frecs));
			mr_announce_start(&ob->ann);
			mr_forget_start(&ob->fgt);
			if (!ob->recs || !ob->frecs) {
				free(ob->recs);
				free(ob->frecs);
				(*nob)--;
				q->failed = true;
				continue;
			}
		}
		if (q->kind == Q_PUBLISH) {
			ret =
			    mr_announce_add(&ob->ann, dir, q->name, &q->info, &q->info.holders[0]);
			if (ret == -E2BIG) {
				obatch_send(r, *obp, *nob);
				ret = mr_announce_add(&ob->ann, dir, q->name, &q->info,
						      &q->info.holders[0]);
			}
			if (!ret)
				ob->recs[ob->nrecs++] = q;
		} else {
			ret = mr_forget_add(&ob->fgt, dir, q->name, r->cfg.node_id, 0);
			if (ret == -E2BIG) {
				obatch_send(r, *obp, *nob);
				ret = mr_forget_add(&ob->fgt, dir, q->name, r->cfg.node_id, 0);
			}
			if (!ret)
				ob->frecs[ob->nfrecs++] = q;
		}
	}
}

void remote_pending(struct remote *r, uint64_t parent, const char *name)
{
	struct qrec q = {.kind = Q_PUBLISH, .parent = parent, .routed = true};
	struct obatch *ob = NULL;
	size_t nob = 0, cap = 0;

	if (!parent || !mr_name_ok(name) || dir_path(r, parent, q.dir))
		return;
	snprintf(q.name, sizeof(q.name), "%s", name);
	q.info = (struct ent_info){.version = PENDING_VERSION,
				   .mtime_ns = real_ns(),
				   .mode = PENDING_MODE | 0644,
				   .replicas = 1,
				   .nholders = 1};
	q.info.holders[0] = (struct ent_holder){r->cfg.node_id, 0, 0};
	obatch_add(r, &ob, &nob, &cap, &q, q.dir, 1);
	/* statuses are ignored: a sealed version already there is fine (ESTALE) */
	for (size_t k = 0; k < nob; k++) {
		void *resp;
		size_t len;

		if (call(r, ob[k].node, &ob[k].ann, &resp, &len) == 0)
			free(resp);
		mr_buf_free(&ob[k].ann);
		mr_buf_free(&ob[k].fgt);
		free(ob[k].recs);
		free(ob[k].frecs);
	}
	free(ob);
}

/* Ask the next nodes by rendezvous order for copies of a block published here. */
static void ask_replicas(struct remote *r, const char *dir, struct qrec *q, unsigned want)
{
	uint64_t order[ENT_MAX_HOLDERS + 1];
	size_t n = owners_of(r, dir, q->name, order, ENT_MAX_HOLDERS + 1);
	struct mr_buf b;

	mr_buf_init(&b);
	q->info.replicas = (uint8_t)want;
	if (mr_replicate_encode(&b, dir, q->name, &q->info) == 0)
		for (size_t k = 0; k < n && want > 1; k++) {
			void *resp;
			size_t len;

			if (order[k] == r->cfg.node_id)
				continue;
			if (call(r, order[k], &b, &resp, &len) == 0)
				want--;
			free(resp);
		}
	mr_buf_free(&b);
}

static void retry_later(struct remote *r, struct qrec *q)
{
	struct qrec **tail;

	q->tries++;
	q->failed = q->routed = false;
	q->next = NULL;
	pthread_mutex_lock(&r->qlock);
	for (tail = &r->rhead; *tail; tail = &(*tail)->next)
		;
	*tail = q;
	if (!r->retry_at)
		r->retry_at = mono_ns() + RETRY_NS * q->tries;
	pthread_mutex_unlock(&r->qlock);
}

/* Announce and forget what the hooks queued, in order; then ask for replicas. */
static void drain(struct remote *r, struct qrec *list)
{
	struct obatch *ob = NULL;
	size_t nob = 0, cap = 0, count = 0;
	uint64_t cached_parent = 0;
	char dir[DIR_MAX] = "";
	bool dir_ok = false;
	struct qrec *q, *next;

	for (q = list; q; q = q->next)
		count++;
	for (q = list; q; q = q->next) {
		if (q->parent != cached_parent || !cached_parent) {
			cached_parent = q->parent;
			dir_ok = dir_path(r, q->parent, dir) == 0 && mr_name_ok(q->name);
		}
		if (!dir_ok)
			continue;
		snprintf(q->dir, sizeof(q->dir), "%s", dir);
		q->routed = true;
		if (q->kind == Q_PUBLISH) {
			int rep = ns_replicas(r->cfg.ns, q->parent, 0);

			q->info.replicas = (uint8_t)(rep > 0 ? rep : 1);
		}
		obatch_add(r, &ob, &nob, &cap, q, dir, count);
	}
	obatch_send(r, ob, nob);
	for (size_t k = 0; k < nob; k++) {
		mr_buf_free(&ob[k].ann);
		mr_buf_free(&ob[k].fgt);
		free(ob[k].recs);
		free(ob[k].frecs);
	}
	free(ob);
	for (q = list; q; q = next) {
		next = q->next;
		if (q->kind == Q_PUBLISH && q->failed && q->tries < RETRIES) {
			/* an owner was not told: again later (a lost forget is left to the
			 * readers, who find the copy gone and tell the owners) */
			retry_later(r, q);
			continue;
		}
		if (q->kind == Q_PUBLISH && q->routed && !q->again && q->info.replicas > 1)
			ask_replicas(r, q->dir, q, q->info.replicas);
		free(q);
	}
}

void remote_flush(struct remote *r)
{
	struct qrec *list;

	pthread_mutex_lock(&r->drain_mu);
	pthread_mutex_lock(&r->qlock);
	list = r->qhead;
	r->qhead = r->qtail = NULL;
	pthread_mutex_unlock(&r->qlock);
	if (list)
		drain(r, list);
	pthread_mutex_unlock(&r->drain_mu);
}

/* Announce every block held here again (the members changed): no replica requests, the
 * owners' checks see to those. */
static void reannounce(struct remote *r)
{
	struct qrec *head = NULL, **tail = &head;
	struct ns_pub *v;
	size_t n;

	remote_flush(r); /* what was queued before goes first */
	if (ns_local_blocks(r->cfg.ns, &v, &n))
		return;
	for (size_t k = 0; k < n; k++) {
		struct qrec *q = qrec_pub(r, &v[k]);

		if (!q)
			break;
		q->again = true;
		*tail = q;
		tail = &q->next;
	}
	ns_pubs_free(v, n);
	if (head) {
		pthread_mutex_lock(&r->drain_mu);
		drain(r, head);
		pthread_mutex_unlock(&r->drain_mu);
	}
}

/* ---- the owner's replica check ----------------------------------------------------------------
 */

struct scan_item {
	char dir[DIR_MAX];
	char name[MR_NAME_MAX + 1];
	struct ent_info info;
};

/* Entries collected under the store's lock, to act on after it. */
struct scan {
	struct remote *r;
	uint64_t node; /* holder_visit: whose entries */
	struct scan_item *items;
	size_t n, cap;
};

/* Collect one entry: 0, or 1 to stop the walk (memory, or enough for one pass). */
static int scan_push(struct scan *s, const char *dir, const char *name, const struct ent_info *info)
{
	if (s->n == s->cap) {
		size_t c = s->cap ? 2 * s->cap : 64;
		struct scan_item *v;

		if (c > SCAN_MAX)
			return 1;
		v = realloc(s->items, c * sizeof(*v));
		if (!v)
			return 1;
		s->items = v;
		s->cap = c;
	}
	snprintf(s->items[s->n].dir, DIR_MAX, "%s", dir);
	snprintf(s->items[s->n].name, MR_NAME_MAX + 1, "%s", name);
	s->items[s->n++].info = *info;
	return 0;
}

static int scan_visit(void *arg, const char *dir, const char *name, const struct ent_info *info)
{
	struct scan *s = arg;
	struct remote *r = s->r;
	uint64_t owner;
	unsigned live = 0;

	if ((info->mode & PENDING_MODE) ||
	    placement_owners(r->live, r->nlive, dir, name, &owner, 1) != 1 ||
	    owner != r->cfg.node_id)
		return 0;
	for (unsigned k = 0; k < info->nholders; k++)
		live += is_live_locked(r, info->holders[k].node);
	if (live == info->nholders && live >= info->replicas)
		return 0;
	return scan_push(s, dir, name, info);
}

/* Entries this node owns: forget dead holders, and have copies made where too few live. */
static void rescan(struct remote *r)
{
	struct scan s = {.r = r};

	pthread_mutex_lock(&r->mlock); /* scan_visit reads the live list */
	(void)ents_foreach(r->ents, scan_visit, &s);
	pthread_mutex_unlock(&r->mlock);
	for (size_t k = 0; k < s.n; k++) {
		struct scan_item *it = &s.items[k];
		struct ent_info live = it->info;
		uint64_t order[ENT_MAX_HOLDERS * 2];
		unsigned want;
		size_t n;
		struct mr_buf b;

		for (unsigned j = 0; j < it->info.nholders; j++)
			if (!is_live(r, it->info.holders[j].node))
				(void)ents_forget(r->ents, it->dir, it->name,
						  it->info.holders[j].node, 0);
		live_holders(r, &live);
		if (!live.nholders || live.nholders >= live.replicas)
			continue; /* lost (a clean miss), or enough */
		want = live.replicas - live.nholders;
		n = owners_of(r, it->dir, it->name, order, ENT_MAX_HOLDERS * 2);
		mr_buf_init(&b);
		if (mr_replicate_encode(&b, it->dir, it->name, &live) == 0)
			for (size_t j = 0; j < n && want; j++) {
				bool holds = false;
				void *resp;
				size_t len;

				for (unsigned h = 0; h < live.nholders; h++)
					holds |= live.holders[h].node == order[j];
				if (holds)
					continue;
				if (call(r, order[j], &b, &resp, &len) == 0)
					want--;
				free(resp);
			}
		mr_buf_free(&b);
	}
	free(s.items);
}

/* Make a replica of a block held elsewhere (a REPLICATE job). */
static void replicate(struct remote *r, struct qrec *q)
{
	struct ns *ns = r->cfg.ns;
	struct ns_handle *h;
	struct ns_attr a;
	struct ns_loc loc;
	uint64_t parent, sum;
	bool replaced = false;
	int ret;

	if (ns_dir_ino(ns, q->dir, &parent))
		return;
	if (ns_lookup(ns, parent, q->name, &a) == 0) {
		ns_forget(ns, a.ino, 1);
		if (!a.remote && a.version >= q->info.version)
			return; /* a copy of it, or of a newer version, is here already */
	}
	ret = ns_reserve(ns, parent, q->name, q->info.size, q->info.mode & 07777, q->info.uid,
			 q->info.gid, &h);
	if (ret) {
		log_msg(LOG_WARNING, "replica of %s/%s: %s", q->dir, q->name, strerror(-ret));
		return;
	}
	ret = fetch_bytes(r, q->dir, q->name, &q->info, ns_handle_data(h), &sum);
	if (!ret) {
		ns_handle_set_version(h, q->info.version);
		ret = ns_commit(h, 0, &sum, &replaced, &loc);
	}
	if (ret) {
		ns_abort(h);
		log_msg(LOG_WARNING, "replica of %s/%s: %s", q->dir, q->name, strerror(-ret));
		return;
	}
	if (replaced && r->cfg.inval)
		r->cfg.inval(r->cfg.inval_arg, parent, q->name);
	remote_flush(r); /* announce this node as a holder */
}

static int holder_visit(void *arg, const char *dir, const char *name, const struct ent_info *info)
{
	struct scan *s = arg;
	bool holds = false;

	for (unsigned k = 0; k < info->nholders; k++)
		holds |= info->holders[k].node == s->node;
	return holds ? scan_push(s, dir, name, info) : 0;
}

/* Node restarted with an empty pool: it holds none of what the entries here say it holds
 * (J_FORGET_NODE). The owners' checks then restore the replica counts. */
static void forget_node(struct remote *r, uint64_t node)
{
	size_t total = 0, n;

	do { /* a pass collects at most SCAN_MAX entries */
		struct scan s = {.r = r, .node = node};

		(void)ents_foreach(r->ents, holder_visit, &s);
		for (size_t k = 0; k < s.n; k++)
			(void)ents_forget(r->ents, s.items[k].dir, s.items[k].name, node, 0);
		free(s.items);
		n = s.n;
		total += n;
	} while (n == SCAN_MAX);
	if (total) {
		pthread_mutex_lock(&r->qlock);
		r->rescan_at = mono_ns();
		pthread_mutex_unlock(&r->qlock);
	}
}

void remote_joined(struct remote *r)
{
	uint64_t *ids;
	size_t n;
	struct mr_buf b;

	pthread_mutex_lock(&r->mlock);
	n = r->nlive;
	ids = malloc((n ? n : 1) * sizeof(*ids));
	if (ids)
		memcpy(ids, r->live, n * sizeof(*ids));
	pthread_mutex_unlock(&r->mlock);
	mr_buf_init(&b);
	if (ids && mr_forget_node_encode(&b, r->cfg.node_id) == 0)
		for (size_t k = 0; k < n; k++) {
			void *resp;
			size_t len;

			if (ids[k] != r->cfg.node_id && call(r, ids[k], &b, &resp, &len) == 0)
				free(resp);
		}
	mr_buf_free(&b);
	free(ids);
	reannounce(r); /* what the pool kept across the restart (ns_recover) */
}

/* Tell the owners of job's block that holder job->node no longer has it (J_FORGET). */
static void send_forget(struct remote *r, const struct qrec *job)
{
	uint64_t owners[OWNERS];
	size_t n = owners_of(r, job->dir, job->name, owners, OWNERS);
	struct mr_buf b;

	mr_buf_init(&b);
	if (mr_forget_start(&b) == 0 &&
	    mr_forget_add(&b, job->dir, job->name, job->node, job->generation) == 0)
		for (size_t k = 0; k < n; k++) {
			void *resp;
			size_t len;

			if (call(r, owners[k], &b, &resp, &len) == 0)
				free(resp);
		}
	mr_buf_free(&b);
}

static void *worker_main(void *arg)
{
	struct remote *r = arg;

	pthread_mutex_lock(&r->qlock);
	while (!r->stop) {
		uint64_t now = mono_ns();
		struct qrec *job = r->jhead;

		if (r->qhead) {
			pthread_mutex_unlock(&r->qlock);
			remote_flush(r);
		} else if (r->reannounce) {
			r->reannounce = false;
			pthread_mutex_unlock(&r->qlock);
			reannounce(r);
		} else if (job || (r->fhead && now >= r->fhead->due)) {
			job = job ? fifo_pop(&r->jhead, &r->jtail) : fifo_pop(&r->fhead, &r->ftail);
			pthread_mutex_unlock(&r->qlock);
			if (job->kind == J_DROP)
				send_drop(r, job->node, job->dir, job->name, job->generation);
			else if (job->kind == J_FORGET)
				send_forget(r, job);
			else if (job->kind == J_FORGET_NODE)
				forget_node(r, job->node);
			else
				replicate(r, job);
			free(job);
		} else if (r->rhead && now >= r->retry_at) {
			struct qrec *list = r->rhead;

			r->rhead = NULL;
			r->retry_at = 0;
			pthread_mutex_unlock(&r->qlock);
			pthread_mutex_lock(&r->drain_mu);
			drain(r, list);
			pthread_mutex_unlock(&r->drain_mu);
		} else if (now >= r->rescan_at) {
			r->rescan_at = now + RESCAN_MS * 1000000ull;
			pthread_mutex_unlock(&r->qlock);
			rescan(r);
		} else {
			struct timespec ts;
			uint64_t wait = r->rescan_at - now;

			if (r->rhead && r->retry_at - now < wait)
				wait = r->retry_at - now;
			if (r->fhead && r->fhead->due - now < wait)
				wait = r->fhead->due - now;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)(wait / 1000000000ull);
			ts.tv_nsec += (long)(wait % 1000000000ull);
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&r->qcond, &r->qlock, &ts);
			continue;
		}
		pthread_mutex_lock(&r->qlock);
	}
	pthread_mutex_unlock(&r->qlock);
	return NULL;
}

/* ---- the RPC handler ------------------------------------------------------------------------ */

struct list_ctx {
	struct remote *r;
	struct mr_buf *b;
	const char *dir;
};

/* LIST: only the entries this node owns under the current members, so that each name is
 * listed by one node; pending ones too (their writer has closed them: a stat waits for the
 * seal), as a local listing shows a block whose writer has closed it. Called with r->mlock
 * held. */
static void list_fill(void *arg, const char *name, const struct ent_info *info)
{
	struct list_ctx *c = arg;
	uint64_t owner;
	bool held = false; /* by a live member: else a clean miss, not listed */

	for (unsigned k = 0; k < info->nholders && !held; k++)
		held = is_live_locked(c->r, info->holders[k].node);
	if (held && placement_owners(c->r->live, c->r->nlive, c->dir, name, &owner, 1) == 1 &&
	    owner == c->r->cfg.node_id)
		(void)mr_list_reply_add(c->b, name, info->size, info->mtime_ns, info->mode);
}

static int job_push(struct remote *r, enum qkind kind, const char *dir, const char *name,
		    uint64_t node, uint64_t generation, const struct ent_info *info)
{
	struct qrec *q = calloc(1, sizeof(*q));

	if (!q)
		return ENOMEM;
	q->kind = kind;
	q->node = node;
	q->generation = generation;
	if (info)
		q->info = *info;
	snprintf(q->dir, sizeof(q->dir), "%s", dir);
	snprintf(q->name, sizeof(q->name), "%s", name);
	queue_push(r, q);
	return 0;
}

static int handle_announce(struct remote *r, struct mr_req *m, struct mr_buf *b)
{
	struct mr_announce_item it;
	struct ent_holder old[ENT_MAX_HOLDERS];
	struct ent_info cur;

	mr_status_start(b);
	while (mr_announce_next(m, &it)) {
		unsigned nold = 0;
		int ret =
		    ents_add(r->ents, it.dir, it.name, &it.info, &it.holder, old, &nold, &cur);

		/* a newer version replaced theirs (a node replacing its own did so already) */
		for (unsigned k = 0; k < nold; k++)
			if (old[k].node != it.holder.node && old[k].generation) /* 0: pending */
				(void)job_push(r, J_DROP, it.dir, it.name, old[k].node,
					       old[k].generation, NULL);
		if (mr_status_add(b,
				  ret == -ESTALE ? ESTALE
				  : ret < 0	 ? (uint32_t)-ret
						 : 0,
				  ret == -ESTALE ? cur.version : it.info.version) < 0)
			return EMSGSIZE;
	}
	return 0;
}

int remote_rpc(void *arg, uint64_t from_node, const void *req, size_t len, void **resp,
	       size_t *resp_len)
{
	struct remote *r = arg;
	struct mr_req *m = malloc(sizeof(*m));
	struct mr_forget_item fi;
	struct ent_info info;
	struct mr_buf b;
	uint64_t parent;
	bool done;
	int ret = 0;

	(void)from_node;
	if (!m)
		return ENOMEM;
	mr_buf_init(&b);
	if (mr_req_decode(req, len, m) < 0) {
		free(m);
		return EBADMSG;
	}
	switch (m->op) {
	case MR_ANNOUNCE:
		ret = handle_announce(r, m, &b);
		break;
	case MR_FORGET:
		while (mr_forget_next(m, &fi))
			(void)ents_forget(r->ents, fi.dir, fi.name, fi.node, fi.generation);
		break;
	case MR_GET:
		ret = -ents_get(r->ents, m->dir, m->name, &info);
		if (!ret)
			ret = -mr_info_encode(&b, &info);
		break;
	case MR_UNLINK:
		ret = -ents_remove(r->ents, m->dir, m->name, m->version, &info);
		if (!ret)
			ret = -mr_info_encode(&b, &info);
		break;
	case MR_LIST: {
		struct list_ctx c = {r, &b, m->dir};

		mr_list_reply_start(&b);
		pthread_mutex_lock(&r->mlock);
		ret = ents_list(r->ents, m->dir, &m->cursor, m->max, &done, list_fill, &c);
		pthread_mutex_unlock(&r->mlock);
		if (ret == -ENOENT) {
			m->cursor = 0;
			done = true;
		}
		ret = -mr_list_reply_finish(&b, m->cursor, done);
		break;
	}
	case MR_REPLICATE:
		ret = job_push(r, J_REPLICATE, m->dir, m->name, 0, 0, &m->info);
		break;
	case MR_FORGET_NODE:
		ret = job_push(r, J_FORGET_NODE, "", "", m->node, 0, NULL);
		break;
	case MR_DROP: /* generation 0 (a pending record) names no block */
		if (m->generation && ns_dir_ino(r->cfg.ns, m->dir, &parent) == 0)
			(void)ns_drop(r->cfg.ns, parent, m->name, m->generation);
		break;
	}
	free(m);
	if (ret) {
		mr_buf_free(&b);
		return ret;
	}
	*resp = b.data;
	*resp_len = b.len;
	return 0;
}

/* ---- listing -------------------------------------------------------------------------------- */

int remote_dir_empty(struct remote *r, uint64_t dir)
{
	struct remote_dir *d;
	int ret = remote_opendir(r, dir, &d), found = 0;

	if (ret)
		return -ret;
	ret = remote_readdir(r, d, 0, NULL, &found);
	remote_closedir(d);
	if (ret)
		return EIO;
	return found ? ENOTEMPTY : 0;
}

int remote_tree_empty(struct remote *r, uint64_t dir)
{
	struct ns_dir d;
	int ret = remote_dir_empty(r, dir);

	if (ret || ns_opendir(r->cfg.ns, dir, &d))
		return ret;
	for (size_t k = 2; k < d.count && !ret; k++) /* after "." and ".." */
		if ((d.ents[k].mode & S_IFMT) == S_IFDIR)
			ret = remote_tree_empty(r, d.ents[k].ino);
		else
			ret = ENOTEMPTY; /* a block here, being written or not */
	ns_dir_free(&d);
	return ret;
}

int remote_opendir(struct remote *r, uint64_t dir, struct remote_dir **out)
{
	struct remote_dir *d = calloc(1, sizeof(*d));
	int ret;

	if (!d)
		return -ENOMEM;
	ret = dir_path(r, dir, d->path);
	if (ret) {
		free(d);
		return ret;
	}
	pthread_mutex_lock(&r->mlock);
	d->members = calloc(r->nlive ? r->nlive : 1, sizeof(*d->members));
	if (d->members) {
		memcpy(d->members, r->live, r->nlive * sizeof(*d->members));
		d->nmembers = r->nlive;
	}
	pthread_mutex_unlock(&r->mlock);
	if (!d->members) {
		free(d);
		return -ENOMEM;
	}
	*out = d;
	return 0;
}

void remote_closedir(struct remote_dir *d)
{
	if (!d)
		return;
	free(d->items);
	free(d->members);
	free(d);
}

/* The next page into d->items: 1, or 0 at the end of the listing. */
static int next_page(struct remote *r, struct remote_dir *d)
{
	d->base += d->count;
	d->count = 0;
	while (d->cur < d->nmembers) {
		struct mr_list_reply lr;
		struct mr_buf b;
		void *resp;
		size_t len;
		int ret;

		mr_buf_init(&b);
		ret = mr_list_encode(&b, d->path, d->cursor, LIST_PAGE);
		if (!ret)
			ret = call(r, d->members[d->cur], &b, &resp, &len);
		mr_buf_free(&b);
		if (!ret && mr_list_reply_decode(resp, len, &lr) == 0) {
			if (!d->items)
				d->items = calloc(LIST_PAGE, sizeof(*d->items));
			while (d->items && d->count < LIST_PAGE &&
			       mr_list_next(&lr, &d->items[d->count]))
				d->count++;
			d->cursor = lr.next_cursor;
			if (lr.done) {
				d->cur++;
				d->cursor = 0;
			}
		} else {
			/* a member that does not answer: its entries are missed this time */
			d->cur++;
			d->cursor = 0;
		}
		free(ret ? NULL : resp);
		if (d->count)
			return 1;
	}
	return 0;
}

static void rewind_dir(struct remote_dir *d)
{
	d->cur = 0;
	d->cursor = 0;
	d->base = 0;
	d->count = 0;
}

int remote_readdir(struct remote *r, struct remote_dir *d, uint64_t pos, remote_add_fn add,
		   void *arg)
{
	if (pos < d->base)
		rewind_dir(d);
	for (;;) {
		while (pos >= d->base + d->count)
			if (!next_page(r, d))
				return 0;
		if (!add) { /* remote_dir_empty */
			*(int *)arg = 1;
			return 0;
		}
		for (; pos < d->base + d->count; pos++) {
			const struct mr_list_item *it = &d->items[pos - d->base];
			uint64_t ino = XXH3_64bits(it->name, strlen(it->name)) | 1;

			if (add(arg, it->name, ino, S_IFREG | (it->mode & 07777), pos + 1))
				return 0;
		}
	}
}

/* ---- life ----------------------------------------------------------------------------------- */

int remote_create(struct remote **out, const struct remote_config *cfg)
{
	struct remote *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	ret = ents_create(&r->ents);
	if (ret) {
		free(r);
		return ret;
	}
	pthread_mutex_init(&r->mlock, NULL);
	pthread_mutex_init(&r->qlock, NULL);
	pthread_mutex_init(&r->drain_mu, NULL);
	pthread_mutex_init(&r->seen_mu, NULL);
	pthread_cond_init(&r->qcond, NULL);
	r->rescan_at = mono_ns() + RESCAN_MS * 1000000ull;
	*out = r;
	return 0;
}

int remote_start(struct remote *r)
{
	int ret = pthread_create(&r->worker, NULL, worker_main, r);

	if (ret)
		return -ret;
	r->started = true;
	ns_set_hooks(r->cfg.ns, on_publish, on_forget, r, (uint16_t)r->cfg.node_id);
	return 0;
}

static void qlist_free(struct qrec *q)
{
	while (q) {
		struct qrec *next = q->next;

		free(q);
		q = next;
	}
}

void remote_destroy(struct remote *r)
{
	if (!r)
		return;
	ns_set_hooks(r->cfg.ns, NULL, NULL, NULL, 0);
	if (r->started) {
		pthread_mutex_lock(&r->qlock);
		r->stop = true;
		pthread_cond_signal(&r->qcond);
		pthread_mutex_unlock(&r->qlock);
		pthread_join(r->worker, NULL);
	}
	qlist_free(r->qhead);
	qlist_free(r->jhead);
	qlist_free(r->fhead);
	qlist_free(r->rhead);
	for (size_t k = 0; k < r->nnodes; k++) {
		idle_close(&r->nodes[k]);
		if (r->nodes[k].peer)
			xfer_close_peer(r->nodes[k].peer);
	}
	for (size_t k = 0; k < r->ngrave; k++)
		xfer_close_peer(r->grave[k]);
	free(r->grave);
	free(r->nodes);
	free(r->live);
	ents_destroy(r->ents);
	pthread_cond_destroy(&r->qcond);
	pthread_mutex_destroy(&r->drain_mu);
	pthread_mutex_destroy(&r->seen_mu);
	pthread_mutex_destroy(&r->qlock);
	pthread_mutex_destroy(&r->mlock);
	free(r);
}
