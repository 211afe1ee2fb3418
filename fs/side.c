/*
 * side: the side channel's ioctls (see side.h and fs/uapi/kvcachefs.h for the contract).
 *
 * Every request is validated whole before anything changes: the ABI version, the counts, the
 * encoding of every name. Then one call into the namespace does the work. A reservation is
 * filled either by the client in place (a trusted writer that mapped the pool read-write) or
 * here, from the caller's own memory with process_vm_readv: one copy, hashed as it lands
 * while the bytes are still in cache. The pid comes from the kernel's request header, never
 * from the client, so a client can only make the daemon read its own memory.
 *
 * Locking: side->lock guards the slot table and every owner's list; it is never held across
 * a namespace call that can wait (ns_open_name waits for a pending seal) or a copy. A slot
 * that a request is using is marked busy, and unpin/abort/unregister of a busy slot is EBUSY.
 */
#include "fs/side.h"
#include "engine/checksum.h"
#include "engine/pool.h"
#include "fs/cudart.h"
#include "fs/log.h"
#include "fs/metrics.h"
#include "fs/uapi/kvcachefs.h"
#include "meta/htable.h"
#include "meta/namespace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

enum slot_kind { SLOT_PIN = 1, SLOT_RESV, SLOT_GPU };

struct side_slot {
	struct hnode node; /* in side->slots */
	uint64_t id;
	enum slot_kind kind;
	unsigned busy; /* requests using the slot right now */
	struct side_owner *owner;
	struct side_slot *prev, *next; /* owner->slots */
	struct ns_handle *h;	       /* PIN, RESV */
	void *dev;		       /* GPU: the buffer, opened from its IPC handle */
	uint64_t size;		       /* GPU: its size */
	int device;		       /* GPU: its device */
};

struct side {
	pthread_mutex_t lock;
	struct htable slots; /* every live slot, by id */
	uint64_t next_id;
	uint64_t pins, resvs; /* live counts, for status */
	/* Totals for side_stats (side.h), added to without the lock. */
	_Atomic uint64_t lookups, loads, load_bytes, commits, commit_bytes;
	struct side_config cfg;
	struct fuse_session *se;
	struct cudart cuda;
};

/* Copy granule of a commit: small enough to hash while still in cache. */
#define COMMIT_CHUNK (256u << 10)

static uint64_t id_hash(uint64_t id)
{
	id ^= id >> 31;
	id *= 0x9e3779b97f4a7c15ull;
	return id ^ (id >> 29);
}

static bool slot_eq(const struct hnode *n, const void *key)
{
	return ((const struct side_slot *)n)->id == *(const uint64_t *)key;
}

int side_create(struct side **out, const struct side_config *cfg)
{
	struct side *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	htable_init(&s->slots);
	s->next_id = 1;
	s->cfg = *cfg;
	cudart_init(&s->cuda);
	*out = s;
	return 0;
}

void side_set_session(struct side *s, struct fuse_session *se)
{
	s->se = se;
}

void side_stats(struct side *s, struct side_stats *out)
{
	pthread_mutex_lock(&s->lock);
	out->pins = s->pins;
	out->reservations = s->resvs;
	pthread_mutex_unlock(&s->lock);
	out->lookups = atomic_load(&s->lookups);
	out->loads = atomic_load(&s->loads);
	out->load_bytes = atomic_load(&s->load_bytes);
	out->commits = atomic_load(&s->commits);
	out->commit_bytes = atomic_load(&s->commit_bytes);
}

/* ---- slots ------------------------------------------------------------------------------- */

/* Caller holds s->lock. */
static struct side_slot *slot_new(struct side *s, struct side_owner *o, enum slot_kind kind)
{
	struct side_slot *sl = calloc(1, sizeof(*sl));

	if (!sl)
		return NULL;
	sl->id = s->next_id++;
	sl->kind = kind;
	sl->node.hash = id_hash(sl->id);
	if (htable_insert(&s->slots, &sl->node) < 0) {
		free(sl);
		return NULL;
	}
	sl->owner = o;
	sl->next = o->slots;
	if (o->slots)
		o->slots->prev = sl;
	o->slots = sl;
	s->pins += kind == SLOT_PIN;
	s->resvs += kind == SLOT_RESV;
	return sl;
}

/* Unlink a slot from the table and its owner (caller holds s->lock; frees nothing else). */
static void slot_unlink(struct side *s, struct side_slot *sl)
{
	htable_remove(&s->slots, &sl->node);
	if (sl->prev)
		sl->prev->next = sl->next;
	else
		sl->owner->slots = sl->next;
	if (sl->next)
		sl->next->prev = sl->prev;
	s->pins -= sl->kind == SLOT_PIN;
	s->resvs -= sl->kind == SLOT_RESV;
}

/* The live slot id of kind, owned by o: EINVAL when there is none, EPERM when it belongs to
 * another descriptor. Caller holds s->lock. */
static int slot_get(struct side *s, struct side_owner *o, uint64_t id, enum slot_kind kind,
		    struct side_slot **out)
{
	struct hnode *n = htable_find(&s->slots, id_hash(id), slot_eq, &id);
	struct side_slot *sl = (struct side_slot *)n;

	if (!sl || sl->kind != kind)
		return -EINVAL;
	if (sl->owner != o)
		return -EPERM;
	*out = sl;
	return 0;
}

/* Drop what a slot holds (no lock held: ns calls and CUDA may take time). */
static void slot_free(struct side *s, struct side_slot *sl)
{
	if (sl->kind == SLOT_PIN)
		ns_release(sl->h);
	else if (sl->kind == SLOT_RESV)
		ns_abort(sl->h);
	else if (sl->kind == SLOT_GPU && sl->dev)
		(void)s->cuda.ipc_close(sl->dev);
	free(sl);
}

void side_owner_release(struct side *s, struct side_owner *o)
{
	struct side_slot *list, *sl;

	pthread_mutex_lock(&s->lock);
	list = o->slots;
	for (sl = list; sl; sl = sl->next) {
		htable_remove(&s->slots, &sl->node);
		s->pins -= sl->kind == SLOT_PIN;
		s->resvs -= sl->kind == SLOT_RESV;
	}
	o->slots = NULL;
	pthread_mutex_unlock(&s->lock);
	while ((sl = list)) {
		list = sl->next;
		slot_free(s, sl);
	}
}

void side_destroy(struct side *s)
{
	struct hnode *n;
	uint64_t cursor;

	if (!s)
		return;
	/* Owners are gone with the session; free what they left. */
	for (;;) {
		cursor = 0;
		n = htable_next(&s->slots, &cursor, NULL);
		if (!n)
			break;
		htable_remove(&s->slots, n);
		slot_free(s, (struct side_slot *)n);
	}
	htable_fini(&s->slots);
	cudart_fini(&s->cuda);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- names ------------------------------------------------------------------------------- */

/* A batch of names as the ABI encodes them (see kvcachefs.h). */
struct names {
	const uint8_t *buf;
	size_t size;
	uint32_t count;
	bool hex;
	const char *suffix;
	size_t suffix_len;
	size_t pos; /* packed: where name `next` starts */
	size_t next;
};

static bool name_bytes_ok(const uint8_t *p, size_t len)
{
	return len > 0 && len <= 255 && !memchr(p, '/', len) && !memchr(p, '\0', len) &&
	       !(len == 1 && p[0] == '.') && !(len == 2 && p[0] == '.' && p[1] == '.');
}

/* Check the whole list; 0 or -EINVAL. */
static int names_init(struct names *nm, uint32_t flags, const char *suffix, const uint8_t *buf,
		      size_t size, uint32_t count)
{
	*nm = (struct names){.buf = buf, .size = size, .count = count};
	if (flags & ~KVCACHEFS_NAMES_HEX)
		return -EINVAL;
	if (flags & KVCACHEFS_NAMES_HEX) {
		nm->hex = true;
		nm->suffix = suffix;
		nm->suffix_len = strnlen(suffix, KVCACHEFS_SUFFIX_MAX);
		if (nm->suffix_len == KVCACHEFS_SUFFIX_MAX || memchr(suffix, '/', nm->suffix_len))
			return -EINVAL;
		return (size_t)count * 16 <= size ? 0 : -EINVAL;
	}
	for (size_t k = 0, pos = 0; k < count; k++) {
		size_t len;

		if (pos >= size)
			return -EINVAL;
		len = buf[pos];
		if (pos + 1 + len > size || !name_bytes_ok(buf + pos + 1, len))
			return -EINVAL;
		pos += 1 + len;
	}
	return 0;
}

/* ns_name_at_fn over a checked list; names are asked for in order 0, 1, 2... */
static const char *names_at(void *arg, size_t k, char *out)
{
	static const char hexd[] = "0123456789abcdef";
	struct names *nm = arg;

	if (k >= nm->count)
		return NULL;
	if (nm->hex) {
		const uint8_t *b = nm->buf + k * 16;

		for (int j = 0; j < 16; j++) {
			out[2 * j] = hexd[b[j] >> 4];
			out[2 * j + 1] = hexd[b[j] & 15];
		}
		memcpy(out + 32, nm->suffix, nm->suffix_len);
		out[32 + nm->suffix_len] = '\0';
		return out;
	}
	if (k != nm->next) { /* restart: walk from the first name */
		nm->pos = 0;
		for (nm->next = 0; nm->next < k; nm->next++)
			nm->pos += 1 + nm->buf[nm->pos];
	}
	memcpy(out, nm->buf + nm->pos + 1, nm->buf[nm->pos]);
	out[nm->buf[nm->pos]] = '\0';
	nm->pos += 1 + nm->buf[nm->pos];
	nm->next++;
	return out;
}

/* ---- commands ---------------------------------------------------------------------------- */

static int do_pool_info(struct side *s, struct kvcachefs_pool_info *pi)
{
	const struct pool *p = s->cfg.pool;
	struct stat st;

	if (fstat(p->fd, &st) < 0)
		return -errno;
	memset(pi, 0, sizeof(*pi));
	pi->version = KVCACHEFS_ABI_VERSION;
	pi->page_size = POOL_PAGE_SIZE;
	pi->pool_size = p->size;
	pi->data_offset = (uint64_t)(p->data - p->base);
	pi->capacity = pool_capacity(p);
	pi->pool_dev = st.st_dev;
	pi->pool_ino = st.st_ino;
	pi->max_block_size = s->cfg.max_block_size;
	pi->pool_mode = st.st_mode & 07777;
	pi->pool_gid = st.st_gid;
	pi->daemon_pid = (uint32_t)getpid();
	pi->header_offset = (uint64_t)((const uint8_t *)p->hdrs - p->base);
	if (strlen(p->path) >= sizeof(pi->path))
		return -ENAMETOOLONG;
	strcpy(pi->path, p->path);
	return 0;
}

static int do_nodes(struct side *s, struct kvcachefs_nodes *nd);

/* The cluster totals of STATUS, from the member list (this node alone when single). */
static void status_cluster(struct side *s, struct kvcachefs_status *st)
{
	static _Thread_local struct kvcachefs_nodes nd;

	st->members = 1;
	st->cluster_capacity = st->capacity;
	st->cluster_used = st->used;
	if (!s->cfg.nodes)
		return;
	st->flags |= KVCACHEFS_STATUS_CLUSTER;
	do_nodes(s, &nd);
	st->members = nd.total;
	st->cluster_capacity = st->cluster_used = 0;
	for (uint32_t i = 0; i < nd.count; i++) {
		st->cluster_capacity += nd.node[i].pool_size;
		st->cluster_used += nd.node[i].pool_used;
	}
}

static int do_nodes(struct side *s, struct kvcachefs_nodes *nd)
{
	struct kvcachefs_status st;

	memset(nd, 0, sizeof(*nd));
	nd->version = KVCACHEFS_ABI_VERSION;
	if (s->cfg.nodes) {
		s->cfg.nodes(s->cfg.nodes_arg, nd);
		nd->flags |= KVCACHEFS_NODES_CLUSTER;
		return 0;
	}
	memset(&st, 0, sizeof(st));
	ns_status(s->cfg.ns, &st);
	nd->count = nd->total = 1;
	nd->node[0] = (struct kvcachefs_node){
	    .pool_size = st.capacity,
	    .pool_used = st.used,
	    .started = st.start_time_ns / 1000000000ull,
	    .state = KVCACHEFS_NODE_SELF | KVCACHEFS_NODE_UP,
	};
	return 0;
}

static int do_lookup(struct side *s, fuse_ino_t ino, struct kvcachefs_lookup *lk)
{
	struct names nm;
	int ret;

	if (lk->count > KVCACHEFS_LOOKUP_MAX)
		return -E2BIG;
	ret = names_init(&nm, lk->flags, lk->suffix, lk->names, sizeof(lk->names), lk->count);
	if (ret)
		return ret;
	ret = ns_lookup_prefix(s->cfg.ns, ino, lk->count, names_at, &nm);
	/* in a cluster, names held by other nodes are fetched here (in parallel, then one by
	 * one for what a batch could not get) and the lookup goes on */
	if (ret >= 0 && (uint32_t)ret < lk->count && s->cfg.prefetch_batch &&
	    s->cfg.prefetch_batch(s->cfg.prefetch_arg, ino, (size_t)ret, lk->count, names_at, &nm) >
		0)
		ret = ns_lookup_prefix(s->cfg.ns, ino, lk->count, names_at, &nm);
	while (ret >= 0 && (uint32_t)ret < lk->count && s->cfg.prefetch) {
		char buf[256];
		const char *name = names_at(&nm, (size_t)ret, buf);

		if (!name || s->cfg.prefetch(s->cfg.prefetch_arg, ino, name))
			break;
		ret = ns_lookup_prefix(s->cfg.ns, ino, lk->count, names_at, &nm);
	}
	atomic_fetch_add_explicit(&s->lookups, 1, memory_order_relaxed);
	if (ret < 0)
		return ret;
	lk->found = (uint32_t)ret;
	return 0;
}

/* Open name of directory ino for a pin, fetching it first when another node holds it. */
static int open_name(struct side *s, fuse_ino_t ino, const char *name, struct ns_handle **h)
{
	int ret = ns_open_name(s->cfg.ns, ino, name, h);

	if (ret == -ENOENT && name && s->cfg.prefetch &&
	    s->cfg.prefetch(s->cfg.prefetch_arg, ino, name) == 0)
		ret = ns_open_name(s->cfg.ns, ino, name, h);
	return ret;
}

static int do_pin(struct side *s, fuse_ino_t ino, struct side_owner *o, struct kvcachefs_pin *pn)
{
	char buf[256];
	struct names nm;
	uint64_t bytes = 0;
	int ret;

	if (pn->count == 0)
		return -EINVAL;
	if (pn->count > KVCACHEFS_PIN_MAX)
		return -E2BIG;
	ret = names_init(&nm, pn->flags, pn->suffix, pn->names, sizeof(pn->names), pn->count);
	if (ret)
		return ret;
	memset(pn->out, 0, sizeof(pn->out));
	pn->pinned = 0;
	for (uint32_t k = 0; k < pn->count; k++) {
		struct kvcachefs_pinned *r = &pn->out[k];
		struct side_slot *sl;
		struct ns_handle *h;
		struct ns_loc loc;

		ret = open_name(s, ino, names_at(&nm, k, buf), &h);
		if (ret) {
			r->error = -ret;
			continue;
		}
		pthread_mutex_lock(&s->lock);
		sl = slot_new(s, o, SLOT_PIN);
		if (sl)
			sl->h = h;
		pthread_mutex_unlock(&s->lock);
		if (!sl) {
			ns_release(h);
			r->error = ENOMEM;
			continue;
		}
		ns_handle_loc(h, &loc);
		*r = (struct kvcachefs_pinned){
		    .pin = sl->id,
		    .offset = loc.offset,
		    .length = loc.length,
		    .generation = loc.generation,
		    .checksum = loc.checksum,
		};
		pn->pinned++;
		bytes += loc.length;
	}
	atomic_fetch_add_explicit(&s->loads, pn->pinned, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->load_bytes, bytes, memory_order_relaxed);
	return 0;
}

/* PIN's answer without the pins: one pass under the namespace lock. */
static int do_locate(struct side *s, fuse_ino_t ino, struct kvcachefs_locate *lc)
{
	struct ns_loc locs[KVCACHEFS_LOCATE_MAX];
	int errs[KVCACHEFS_LOCATE_MAX];
	char buf[256];
	struct names nm;
	uint64_t bytes = 0;
	int ret;

	if (lc->count == 0)
		return -EINVAL;
	if (lc->count > KVCACHEFS_LOCATE_MAX)
		return -E2BIG;
	ret = names_init(&nm, lc->flags, lc->suffix, lc->names, sizeof(lc->names), lc->count);
	if (!ret)
		ret = ns_locate_batch(s->cfg.ns, ino, lc->count, names_at, &nm, locs, errs);
	if (ret)
		return ret;
	if (s->cfg.prefetch_batch) {
		uint32_t missing = 0;

		for (uint32_t k = 0; k < lc->count; k++)
			missing += errs[k] == ENOENT;
		if (missing > 1) /* fetch them in parallel; the loop below then finds them */
			(void)s->cfg.prefetch_batch(s->cfg.prefetch_arg, ino, 0, lc->count,
						    names_at, &nm);
	}
	for (uint32_t k = 0; k < lc->count; k++) {
		/* about to be sealed: wait for it as an open would; held elsewhere: fetch it */
		if (errs[k] == EAGAIN || (errs[k] == ENOENT && s->cfg.prefetch)) {
			struct ns_handle *h;

			errs[k] = -open_name(s, ino, names_at(&nm, k, buf), &h);
			if (!errs[k]) {
				ns_handle_loc(h, &locs[k]);
				ns_release(h);
			}
		}
	}
	/* The names are consumed: the answer goes over them. */
	lc->found = 0;
	for (uint32_t k = 0; k < lc->count; k++) {
		lc->out[k] = (struct kvcachefs_located){
		    .offset = locs[k].offset,
		    .length = locs[k].length,
		    .generation = locs[k].generation,
		};
		lc->error[k] = (uint8_t)(errs[k] < 256 ? errs[k] : EIO);
		lc->found += errs[k] == 0;
		bytes += errs[k] == 0 ? locs[k].length : 0;
	}
	atomic_fetch_add_explicit(&s->loads, lc->found, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->load_bytes, bytes, memory_order_relaxed);
	return 0;
}

static int do_unpin(struct side *s, struct side_owner *o, const struct kvcachefs_unpin *up)
{
	struct side_slot *found[KVCACHEFS_UNPIN_MAX];
	int ret = 0;

	if (up->count == 0)
		return -EINVAL;
	if (up->count > KVCACHEFS_UNPIN_MAX)
		return -E2BIG;
	pthread_mutex_lock(&s->lock);
	for (uint32_t k = 0; k < up->count && !ret; k++) {
		ret = slot_get(s, o, up->pins[k], SLOT_PIN, &found[k]);
		if (!ret && found[k]->busy)
			ret = -EBUSY;
		/* The same id twice in one call is a double release too. */
		for (uint32_t j = 0; !ret && j < k; j++)
			if (found[j] == found[k])
				ret = -EINVAL;
	}
	if (!ret)
		for (uint32_t k = 0; k < up->count; k++)
			slot_unlink(s, found[k]);
	pthread_mutex_unlock(&s->lock);
	if (ret)
		return ret;
	for (uint32_t k = 0; k < up->count; k++)
		slot_free(s, found[k]);
	return 0;
}

/* Does the caller have the permission bits `want` (a combination of R_OK, W_OK, X_OK) on an
 * object of this owner, group and mode, as the kernel would decide? Root always has. */
static bool caller_may(fuse_req_t req, uint32_t uid, uint32_t gid, uint32_t mode, unsigned want)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[64];
	unsigned shift;
	int n;

	if (ctx->uid == 0)
		return true;
	if (ctx->uid == uid) {
		shift = 6;
	} else {
		bool member = ctx->gid == gid;

		n = fuse_req_getgroups(req, 64, groups);
		for (int k = 0; !member && k < n && k < 64; k++)
			member = groups[k] == gid;
		shift = member ? 3 : 0;
	}
	return ((mode >> shift) & want) == want;
}

/* May the caller create entries in directory ino (write and search permission)? */
static int may_write_dir(struct side *s, fuse_req_t req, fuse_ino_t ino)
{
	struct ns_attr a;
	int ret = ns_getattr(s->cfg.ns, ino, &a);

	if (ret)
		return ret;
	return caller_may(req, a.uid, a.gid, a.mode, W_OK | X_OK) ? 0 : -EACCES;
}

/* A commit in place publishes whatever the pool holds there: only a trusted writer, one that
 * may write the pool object and so could have filled it, may ask for it. */
static int may_write_pool(struct side *s, fuse_req_t req)
{
	struct stat st;

	if (fstat(s->cfg.pool->fd, &st) < 0)
		return -errno;
	return caller_may(req, st.st_uid, st.st_gid, st.st_mode, W_OK) ? 0 : -EPERM;
}

static int do_reserve(struct side *s, fuse_req_t req, fuse_ino_t ino, struct side_owner *o,
		      struct kvcachefs_reserve *rv)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	size_t len = strnlen(rv->name, sizeof(rv->name));
	struct side_slot *sl;
	struct ns_handle *h;
	struct ns_loc loc;
	int ret;

	if (len == sizeof(rv->name) || !name_bytes_ok((const uint8_t *)rv->name, len))
		return -EINVAL;
	ret = may_write_dir(s, req, ino);
	if (ret)
		return ret;
	ret = ns_reserve(s->cfg.ns, ino, rv->name, rv->length,
			 rv->mode ? rv->mode & 07777 & ~ctx->umask : 0644, ctx->uid, ctx->gid, &h);
	if (ret)
		return ret;
	pthread_mutex_lock(&s->lock);
	sl = slot_new(s, o, SLOT_RESV);
	if (sl)
		sl->h = h;
	pthread_mutex_unlock(&s->lock);
	if (!sl) {
		ns_abort(h);
		return -ENOMEM;
	}
	ns_handle_loc(h, &loc);
	rv->id = sl->id;
	rv->offset = loc.offset;
	return 0;
}

/* Copy len bytes from the calling process at src into dst, hashing them as they land. */
static int copy_from_caller(pid_t pid, uint64_t src, uint8_t *dst, uint64_t len, uint64_t *sum)
{
	XXH3_state_t st;
	uint64_t done = 0;

	XXH3_64bits_reset(&st);
	while (done < len) {
		size_t n = len - done < COMMIT_CHUNK ? (size_t)(len - done) : COMMIT_CHUNK;
		struct iovec local = {.iov_base = dst + done, .iov_len = n};
		struct iovec remote = {.iov_base = (void *)(uintptr_t)(src + done), .iov_len = n};
		ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);

		if (got < 0)
			return errno == ESRCH ? -ESRCH : errno == EPERM ? -EPERM : -EFAULT;
		if (got == 0)
			return -EFAULT;
		checksum_update(&st, dst + done, (size_t)got);
		done += (uint64_t)got;
	}
	*sum = XXH3_64bits_digest(&st);
	return 0;
}

static int do_commit(struct side *s, fuse_req_t req, fuse_ino_t ino, struct side_owner *o,
		     struct kvcachefs_commit *cm)
{
	struct side_slot *sl;
	struct ns_loc loc;
	uint64_t sum;
	bool replaced = false;
	char name[256];
	int ret;

	if (cm->flags & ~(KVCACHEFS_COMMIT_NOREPLACE | KVCACHEFS_COMMIT_INPLACE))
		return -EINVAL;
	if (cm->flags & KVCACHEFS_COMMIT_INPLACE) {
		ret = may_write_pool(s, req);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&s->lock);
	ret = slot_get(s, o, cm->id, SLOT_RESV, &sl);
	if (!ret && sl->busy)
		ret = -EBUSY;
	if (!ret)
		sl->busy++;
	pthread_mutex_unlock(&s->lock);
	if (ret)
		return ret;

	snprintf(name, sizeof(name), "%s", ns_handle_name(sl->h));
	if (!(cm->flags & KVCACHEFS_COMMIT_INPLACE)) {
		struct ns_loc r;

		ns_handle_loc(sl->h, &r);
		ret = copy_from_caller(fuse_req_ctx(req)->pid, cm->src_addr, ns_handle_data(sl->h),
				       r.length, &sum);
	}
	if (!ret)
		ret = ns_commit(
		    sl->h, (cm->flags & KVCACHEFS_COMMIT_NOREPLACE) ? RENAME_NOREPLACE : 0,
		    (cm->flags & KVCACHEFS_COMMIT_INPLACE) ? NULL : &sum, &replaced, &loc);
	pthread_mutex_lock(&s->lock);
	sl->busy--;
	if (!ret)
		slot_unlink(s, sl); /* ns_commit released the handle */
	pthread_mutex_unlock(&s->lock);
	if (ret)
		return ret;
	free(sl);
	atomic_fetch_add_explicit(&s->commits, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->commit_bytes, loc.length, memory_order_relaxed);
	/* The kernel may hold the old block's entry: make it look the name up again before this
	 * call returns, so the committer's next open() finds the new block. ioctl holds no
	 * directory lock, so this cannot deadlock with the kernel. */
	if (replaced && s->se)
		(void)fuse_lowlevel_notify_inval_entry(s->se, ino, name, strlen(name));
	cm->generation = loc.generation;
	cm->checksum = loc.checksum;
	return 0;
}

/* End one slot of o: EINVAL/EPERM as slot_get, EBUSY while a request uses it. */
static int slot_drop(struct side *s, struct side_owner *o, uint64_t id, enum slot_kind kind)
{
	struct side_slot *sl;
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = slot_get(s, o, id, kind, &sl);
	if (!ret && sl->busy)
		ret = -EBUSY;
	if (!ret)
		slot_unlink(s, sl);
	pthread_mutex_unlock(&s->lock);
	if (!ret)
		slot_free(s, sl);
	return ret;
}

static int do_abort(struct side *s, struct side_owner *o, const struct kvcachefs_abort *ab)
{
	return slot_drop(s, o, ab->id, SLOT_RESV);
}

static int do_gpu_register(struct side *s, struct side_owner *o, struct kvcachefs_gpu_register *g)
{
	struct cudart_ipc_handle handle;
	struct side_slot *sl;
	void *dev = NULL;
	int ret = cudart_load(&s->cuda), err;

	if (ret) {
		log_msg(LOG_INFO, "GPU buffer refused: %s", s->cuda.why);
		return ret;
	}
	if (g->size == 0)
		return -EINVAL;
	memcpy(handle.reserved, g->handle, sizeof(handle.reserved));
	err = s->cuda.set_device((int)g->device);
	if (!err)
		err = s->cuda.ipc_open(&dev, handle, CUDART_IPC_LAZY_PEER_ACCESS);
	if (err) {
		log_msg(LOG_WARNING, "cannot open GPU buffer on device %u: %s", g->device,
			s->cuda.error_string(err));
		return cudart_errno(err);
	}
	pthread_mutex_lock(&s->lock);
	sl = slot_new(s, o, SLOT_GPU);
	if (sl) {
		sl->dev = dev;
		sl->size = g->size;
		sl->device = (int)g->device;
		g->id = sl->id;
	}
	pthread_mutex_unlock(&s->lock);
	if (!sl) {
		(void)s->cuda.ipc_close(dev);
		return -ENOMEM;
	}
	return 0;
}

static int do_gpu_load(struct side *s, struct side_owner *o, const struct kvcachefs_gpu_load *gl)
{
	struct side_slot *pins[KVCACHEFS_GPU_LOAD_MAX], *gpu = NULL;
	uint32_t held = 0;
	bool gpu_held = false;
	int ret = cudart_load(&s->cuda), err = 0;

	if (ret)
		return ret;
	if (gl->count == 0)
		return -EINVAL;
	if (gl->count > KVCACHEFS_GPU_LOAD_MAX)
		return -E2BIG;
	/* Check every entry and mark what the copy uses busy, so nobody frees it meanwhile. */
	pthread_mutex_lock(&s->lock);
	ret = slot_get(s, o, gl->id, SLOT_GPU, &gpu);
	while (!ret && held < gl->count) {
		struct ns_loc loc;
		struct side_slot *pin;

		ret = slot_get(s, o, gl->ent[held].pin, SLOT_PIN, &pin);
		if (ret)
			break;
		ns_handle_loc(pin->h, &loc);
		if (gl->ent[held].offset > gpu->size ||
		    loc.length > gpu->size - gl->ent[held].offset) {
			ret = -EINVAL;
			break;
		}
		pin->busy++;
		pins[held++] = pin;
	}
	if (!ret) {
		gpu->busy++;
		gpu_held = true;
	}
	pthread_mutex_unlock(&s->lock);

	if (!ret)
		err = s->cuda.set_device(gpu->device);
	for (uint32_t k = 0; !ret && !err && k < gl->count; k++) {
		struct ns_loc loc;

		ns_handle_loc(pins[k]->h, &loc);
		if (loc.length)
			err = s->cuda.memcpy((uint8_t *)gpu->dev + gl->ent[k].offset,
					     s->cfg.pool->base + loc.offset, loc.length,
					     CUDART_MEMCPY_HOST_TO_DEVICE);
	}
	if (!ret && err)
		ret = cudart_errno(err);

	pthread_mutex_lock(&s->lock);
	if (gpu_held)
		gpu->busy--;
	for (uint32_t k = 0; k < held; k++)
		pins[k]->busy--;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int do_gpu_unregister(struct side *s, struct side_owner *o,
			     const struct kvcachefs_gpu_unregister *gu)
{
	return slot_drop(s, o, gu->id, SLOT_GPU);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* One buffer per worker thread for the request being answered (up to 16 KiB): no
 * allocation per request. */
static _Thread_local union {
	struct kvcachefs_status status;
	struct kvcachefs_tiers tiers;
	struct kvcachefs_pool_info pool_info;
	struct kvcachefs_nodes nodes;
	struct kvcachefs_lookup lookup;
	struct kvcachefs_pin pin;
	struct kvcachefs_locate locate;
	struct kvcachefs_unpin unpin;
	struct kvcachefs_reserve reserve;
	struct kvcachefs_commit commit;
	struct kvcachefs_abort abort;
	struct kvcachefs_gpu_register gpu_register;
	struct kvcachefs_gpu_load gpu_load;
	struct kvcachefs_gpu_unregister gpu_unregister;
} arg;

/* The command's name for the debug log; NULL for one that is not ours. */
static const char *ioc_name(unsigned cmd)
{
	switch (cmd) {
	case KVCACHEFS_IOC_STATUS:
		return "STATUS";
	case KVCACHEFS_IOC_TIERS:
		return "TIERS";
	case KVCACHEFS_IOC_POOL_INFO:
		return "POOL_INFO";
	case KVCACHEFS_IOC_NODES:
		return "NODES";
	case KVCACHEFS_IOC_LOOKUP:
		return "LOOKUP";
	case KVCACHEFS_IOC_PIN:
		return "PIN";
	case KVCACHEFS_IOC_LOCATE:
		return "LOCATE";
	case KVCACHEFS_IOC_UNPIN:
		return "UNPIN";
	case KVCACHEFS_IOC_RESERVE:
		return "RESERVE";
	case KVCACHEFS_IOC_COMMIT:
		return "COMMIT";
	case KVCACHEFS_IOC_ABORT:
		return "ABORT";
	case KVCACHEFS_IOC_GPU_REGISTER:
		return "GPU_REGISTER";
	case KVCACHEFS_IOC_GPU_LOAD:
		return "GPU_LOAD";
	case KVCACHEFS_IOC_GPU_UNREGISTER:
		return "GPU_UNREGISTER";
	default:
		return NULL;
	}
}

/* A request refused before it reached its command: a client built against another ABI, or
 * one that misuses the interface. Said at debug level only. */
static void refuse(fuse_req_t req, fuse_ino_t ino, unsigned cmd, int err, const char *why)
{
	const char *name = ioc_name(cmd);
	char num[16];

	if (log_enabled(LOG_DEBUG)) {
		if (!name) {
			snprintf(num, sizeof(num), "0x%x", cmd);
			name = num;
		}
		log_msg(LOG_DEBUG, "ioctl %s on inode %llu refused: %s (%s)", name,
			(unsigned long long)ino, why, strerror(err));
	}
	fuse_reply_err(req, err);
}

void side_ioctl(struct side *s, fuse_req_t req, fuse_ino_t ino, unsigned cmd,
		struct side_owner *owner, const void *in, size_t in_size, size_t out_size)
{
	size_t size = _IOC_SIZE(cmd);
	bool needs_dir = true;
	int ret;

	switch (cmd) {
	case KVCACHEFS_IOC_STATUS:
	case KVCACHEFS_IOC_TIERS:
	case KVCACHEFS_IOC_POOL_INFO:
	case KVCACHEFS_IOC_NODES:
		needs_dir = false;
		break;
	case KVCACHEFS_IOC_LOOKUP:
	case KVCACHEFS_IOC_PIN:
	case KVCACHEFS_IOC_LOCATE:
	case KVCACHEFS_IOC_UNPIN:
	case KVCACHEFS_IOC_RESERVE:
	case KVCACHEFS_IOC_COMMIT:
	case KVCACHEFS_IOC_ABORT:
	case KVCACHEFS_IOC_GPU_REGISTER:
	case KVCACHEFS_IOC_GPU_LOAD:
	case KVCACHEFS_IOC_GPU_UNREGISTER:
		break;
	default:
		refuse(req, ino, cmd, ENOTTY, "not a kvcachefs command");
		return;
	}
	/* The kernel copies exactly the size the command encodes. */
	if (in_size != size || (out_size != 0 && out_size != size) || size > sizeof(arg)) {
		refuse(req, ino, cmd, EINVAL, "argument size");
		return;
	}
	memcpy(&arg, in, size);
	if (arg.status.version != KVCACHEFS_ABI_VERSION) {
		refuse(req, ino, cmd, EPROTO, "another ABI version");
		return;
	}
	if (needs_dir && !owner) {
		refuse(req, ino, cmd, ENOTDIR, "needs an open directory");
		return;
	}
	switch (cmd) {
	case KVCACHEFS_IOC_STATUS:
		memset(&arg.status, 0, sizeof(arg.status));
		arg.status.version = KVCACHEFS_ABI_VERSION;
		ns_status(s->cfg.ns, &arg.status);
		pthread_mutex_lock(&s->lock);
		arg.status.pinned = s->pins;
		arg.status.reservations = s->resvs;
		pthread_mutex_unlock(&s->lock);
		status_cluster(s, &arg.status);
		ret = 0;
		break;
	case KVCACHEFS_IOC_TIERS:
		memset(&arg.tiers, 0, sizeof(arg.tiers));
		arg.tiers.version = KVCACHEFS_ABI_VERSION;
		ns_tiers(s->cfg.ns, &arg.tiers);
		ret = 0;
		break;
	case KVCACHEFS_IOC_POOL_INFO:
		ret = do_pool_info(s, &arg.pool_info);
		break;
	case KVCACHEFS_IOC_NODES:
		ret = do_nodes(s, &arg.nodes);
		break;
	case KVCACHEFS_IOC_LOOKUP:
		ret = do_lookup(s, ino, &arg.lookup);
		break;
	case KVCACHEFS_IOC_PIN:
		ret = do_pin(s, ino, owner, &arg.pin);
		break;
	case KVCACHEFS_IOC_LOCATE:
		ret = do_locate(s, ino, &arg.locate);
		break;
	case KVCACHEFS_IOC_UNPIN:
		ret = do_unpin(s, owner, &arg.unpin);
		break;
	case KVCACHEFS_IOC_RESERVE:
		ret = do_reserve(s, req, ino, owner, &arg.reserve);
		break;
	case KVCACHEFS_IOC_COMMIT:
		ret = do_commit(s, req, ino, owner, &arg.commit);
		break;
	case KVCACHEFS_IOC_ABORT:
		ret = do_abort(s, owner, &arg.abort);
		break;
	case KVCACHEFS_IOC_GPU_REGISTER:
		ret = do_gpu_register(s, owner, &arg.gpu_register);
		break;
	case KVCACHEFS_IOC_GPU_LOAD:
		ret = do_gpu_load(s, owner, &arg.gpu_load);
		break;
	default: /* KVCACHEFS_IOC_GPU_UNREGISTER */
		ret = do_gpu_unregister(s, owner, &arg.gpu_unregister);
		break;
	}
	/* a hot path of the side channel: one relaxed load when the level is above debug */
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "ioctl %s on inode %llu: %s", ioc_name(cmd),
			(unsigned long long)ino, ret ? strerror(-ret) : "ok");
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_ioctl(req, 0, out_size ? (const void *)&arg : NULL, out_size);
}
