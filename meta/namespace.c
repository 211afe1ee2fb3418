/*
 * namespace: the single-node index and the life of every block (see namespace.h).
 *
 * Data structures:
 *   - every inode (directory or block) sits in ns->inodes, keyed by its never-reused number;
 *   - a directory holds its children in its own htable, keyed by name;
 *   - sealed blocks that nobody has open sit on ns->lru, most recently closed first;
 *   - a block's bytes are one run of pool pages [page, page + npages), its header the pool's
 *     header slot of `page`.
 *
 * Invariants (all under ns->lock):
 *   - a name in a directory maps to exactly one attached inode; a detached inode
 *     (F_DETACHED: unlinked, replaced, evicted, discarded, removed) has parent == NULL;
 *   - a block is on the LRU iff it is sealed, attached and open == 0; only those are evicted;
 *   - a block's pages are freed once it is detached and open == 0, the inode itself once also
 *     nlookup == 0 (the kernel forgot it); inode numbers and generations only grow;
 *   - ns->blocks counts sealed attached blocks, ns->writing unsealed ones, ns->dirs attached
 *     directories other than the root.
 */
#include "meta/namespace.h"
#include "engine/checksum.h"
#include "engine/lru.h"
#include "engine/pool.h"
#include "engine/ssd.h"
#include "meta/htable.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#define NS_NAME_MAX 255
#define NS_MAX_SSD  8

enum { KIND_DIR = 1, KIND_FILE = 2 };
#define F_DETACHED 0x1u	 /* no name leads to it anymore */
#define F_EVICTED  0x2u	 /* its name vanished behind the kernel's back: ENOENT everywhere */
#define F_REMOTE   0x4u	 /* a stub: the bytes are on other nodes (cluster) */
#define F_CACHED   0x8u	 /* a local copy of another node's block: evicted first, not announced */
#define F_REPLICA  0x10u /* a replica made for another node's block (announced) */

struct inode {
	struct hnode ino_node;	/* in ns->inodes */
	struct hnode name_node; /* in parent->dir.children */
	uint64_t ino;
	struct inode *parent; /* NULL once detached (and for the root) */
	char *name;
	uint64_t nlookup; /* references the kernel holds */
	uint32_t mode, uid, gid;
	uint16_t kind, flags;
	_Atomic int64_t mtime_ns; /* writer updates it under its handle lock */
	int64_t ctime_ns;
	_Atomic int64_t atime_ns; /* readers update it without a lock */
	union {
		struct {
			struct htable children;
			uint64_t nentries; /* children, blocks being written included */
			uint32_t nsubdirs;
			uint8_t replicas; /* 0: the default, 1 */
			uint64_t id;	  /* persistent id (pool_rec), kept across restarts */
			uint64_t rec;	  /* record slot + 1, 0: none */
		} dir;
		struct {
			_Atomic uint64_t size; /* final once sealed */
			uint64_t page, npages; /* npages == 0: nothing allocated */
			uint64_t generation;
			uint64_t version;   /* see ns_config.version_tag; 0 until sealed */
			int64_t checked_ns; /* F_REMOTE/F_CACHED: entry last confirmed */
			uint32_t open;	    /* open handles; > 0 pins the pages */
			bool sealed;
			bool closing;	 /* the writer closed an fd and wrote nothing since */
			bool recorded;	 /* not sealed, but recorded as it was at that close */
			bool referenced; /* read without an open since it was last put on the LRU */
			uint8_t list;	 /* the DRAM list file.lru is on (when linked): LIST_* */
			bool unverified; /* recovered: the checksum is checked at the first open */
			int8_t dev;	 /* SSD device holding a copy, -1: none */
			uint32_t busy;	 /* demotion or promotion I/O in flight: pages stay */
			uint64_t unit;	 /* the copy's first unit on dev */
			uint64_t sum;	 /* payload checksum, once sealed */
			uint64_t rec;	 /* record slot + 1 of the DRAM copy, 0: none */
			struct lru_node lru;
			struct lru_node slru; /* on ns->slru while it has an SSD copy */
		} file;
	};
};

struct ns_handle {
	struct ns *ns;
	struct inode *ino;
	struct ns_handle *prev, *next; /* ns->handles, so shutdown can free them */
	bool writer;
	/* Writer only, under lock: orders concurrent requests on this handle. */
	pthread_mutex_t lock;
	XXH3_state_t *xxh;  /* running checksum while writes are sequential, else NULL */
	uint64_t hashed;    /* bytes already folded into xxh */
	bool failed;	    /* a write got ENOSPC: the block is discarded at close */
	bool flushed;	    /* the writer closed an fd (flush) and wrote nothing since: flush_sum */
	bool aborted;	    /* a reservation given up: discard at release, not an ENOSPC */
	bool has_sum;	    /* sum is the payload's checksum, computed by whoever filled it */
	uint64_t flush_sum; /* the payload's checksum as that flush recorded it */
	uint64_t sum;
	uint64_t target;  /* a reservation: the directory its commit publishes into */
	uint64_t version; /* a replica's version, kept at the seal (0: a new one) */
};

struct ns {
	pthread_mutex_t lock;
	struct pool *pool;
	struct ns_config cfg;
	struct htable inodes;
	struct inode *root;
	uint64_t next_ino, next_gen;
	/* Sealed blocks in DRAM that nobody has open, each on one list, least recently used
	 * last: ns->cached, the copies of other nodes' blocks (evicted first); ns->clean, the
	 * oldest of this node's that were demoted ahead of eviction (older than all on ns->lru,
	 * evicted next, without I/O); ns->lru, the others. clean_pages: the pages of the first
	 * two lists, which eviction frees without writing anything. */
	struct lru lru, clean, cached;
	uint64_t clean_pages;
	int64_t predemote_retry_ns; /* monotonic: a failed demotion ahead of eviction waits */
	struct ns_handle handles;   /* sentinel of the list of open handles */
	uint64_t blocks, writing, dirs;
	int64_t start_ns;
	/* Counters updated without the lock. */
	_Atomic uint64_t reads, writes, bytes_read, bytes_written, hits, misses, evictions, enospc;
	_Atomic uint64_t demotions, promotions, ssd_evictions;
	_Atomic uint64_t fetched, fetched_bytes, replicas, replica_bytes; /* ns_remote_stats */
	/* Records (pool_rec): free slots, and the next seq and directory id to hand out. */
	uint64_t *slots;
	size_t nslots, capslots;
	uint8_t *rec_used; /* per pool page: slots of that record page in use */
	uint64_t next_seq, next_dir_id;
	/* The SSD tier: per device, blocks with a copy there, least recently used first. */
	struct lru slru[NS_MAX_SSD];
	uint64_t ssd_blocks; /* blocks with an SSD copy */
	uint64_t ssd_only_n; /* of which with no DRAM copy */
	unsigned next_dev;
	uint32_t demoting;	   /* blocks being demoted now */
	uint32_t space_wanted;	   /* writers waiting for the evictor to make room */
	pthread_cond_t space_cond; /* broadcast when demotion or promotion I/O ends */
	struct ns_recovery recovery;
	/* The evictor thread. */
	pthread_t evictor;
	pthread_cond_t evict_cond;
	pthread_cond_t seal_cond; /* broadcast when a block is sealed or discarded */
	bool evict_stop;
	/* Eviction bursts, for the log: DRAM pages freed by eviction so far (ns->lock), and the
	 * rate limit of the burst lines (evictor thread only). */
	uint64_t evicted_pages;
	int64_t burst_logged_ns; /* monotonic; 0: never */
	unsigned bursts_unlogged;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t ino_hash(uint64_t ino)
{
	ino ^= ino >> 33;
	ino *= 0xff51afd7ed558ccdull;
	ino ^= ino >> 33;
	return ino;
}

static bool ino_eq(const struct hnode *n, const void *key)
{
	const struct inode *i =
	    (const struct inode *)((const char *)n - offsetof(struct inode, ino_node));

	return i->ino == *(const uint64_t *)key;
}

static bool name_eq(const struct hnode *n, const void *key)
{
	const struct inode *i =
	    (const struct inode *)((const char *)n - offsetof(struct inode, name_node));

	return strcmp(i->name, key) == 0;
}

#define INODE_OF(node, member) ((struct inode *)((char *)(node)-offsetof(struct inode, member)))
#define LRU_INODE(n)	       ((struct inode *)((char *)(n)-offsetof(struct inode, file.lru)))

static struct inode *get_inode(const struct ns *ns, uint64_t ino)
{
	struct hnode *n = htable_find(&ns->inodes, ino_hash(ino), ino_eq, &ino);

	return n ? INODE_OF(n, ino_node) : NULL;
}

static struct inode *find_child(const struct inode *dir, const char *name)
{
	struct hnode *n =
	    htable_find(&dir->dir.children, XXH3_64bits(name, strlen(name)), name_eq, name);

	return n ? INODE_OF(n, name_node) : NULL;
}

/* The live directory `parent`, or an errno. */
static int get_dir(const struct ns *ns, uint64_t parent, struct inode **out)
{
	struct inode *d = get_inode(ns, parent);

	if (!d || (d->flags & F_DETACHED))
		return -ENOENT;
	if (d->kind != KIND_DIR)
		return -ENOTDIR;
	*out = d;
	return 0;
}

static int check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || strchr(name, '/'))
		return -EINVAL;
	if (len > NS_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

static struct inode *inode_new(struct ns *ns, int kind, const char *name, uint32_t mode,
			       uint32_t uid, uint32_t gid)
{
	struct inode *i = calloc(1, sizeof(*i));
	int64_t now = now_ns();

	if (!i)
		return NULL;
	i->name = strdup(name);
	if (!i->name) {
		free(i);
		return NULL;
	}
	i->ino = ns->next_ino++;
	i->kind = (uint16_t)kind;
	i->mode = (kind == KIND_DIR ? S_IFDIR : S_IFREG) | (mode & 07777);
	i->uid = uid;
	i->gid = gid;
	i->mtime_ns = now;
	i->ctime_ns = now;
	i->atime_ns = now;
	if (kind == KIND_DIR) {
		htable_init(&i->dir.children);
		i->dir.id = ns->next_dir_id++;
	} else {
		i->file.generation = ns->next_gen++;
		i->file.dev = -1;
	}
	i->ino_node.hash = ino_hash(i->ino);
	if (htable_insert(&ns->inodes, &i->ino_node) < 0) {
		free(i->name);
		free(i);
		return NULL;
	}
	return i;
}

/* Give child (not in any directory) the name it carries in parent. */
static int attach(struct ns *ns, struct inode *parent, struct inode *child)
{
	int ret;

	child->name_node.hash = XXH3_64bits(child->name, strlen(child->name));
	ret = htable_insert(&parent->dir.children, &child->name_node);
	if (ret < 0)
		return ret;
	child->parent = parent;
	child->flags &= (uint16_t)~F_DETACHED;
	parent->dir.nentries++;
	if (child->kind == KIND_DIR) {
		parent->dir.nsubdirs++;
		ns->dirs++;
	} else if (child->file.sealed && !(child->flags & F_REMOTE)) {
		ns->blocks++; /* a stub has no bytes here: not a block of this node */
	}
	parent->mtime_ns = parent->ctime_ns = now_ns();
	return 0;
}

static void unpersist(struct ns *ns, struct inode *i);
static struct pool_rec *slot_rec(const struct ns *ns, uint64_t slot);

enum { LIST_LRU, LIST_CLEAN, LIST_CACHED };

static struct lru *dram_list(struct ns *ns, unsigned list)
{
	return list == LIST_CLEAN ? &ns->clean : list == LIST_CACHED ? &ns->cached : &ns->lru;
}

/* Take block i off the DRAM list it is on, if any. */
static void dram_unlink(struct ns *ns, struct inode *i)
{
	if (!lru_linked(&i->file.lru))
		return;
	lru_remove(dram_list(ns, i->file.list), &i->file.lru);
	if (i->file.list != LIST_LRU)
		ns->clean_pages -= i->file.npages;
	i->file.list = LIST_LRU;
}

/* Put block i (on no list) at the recent end of list (a LIST_*). */
static void dram_push(struct ns *ns, struct inode *i, unsigned list)
{
	lru_push(dram_list(ns, list), &i->file.lru);
	if (list != LIST_LRU)
		ns->clean_pages += i->file.npages;
	i->file.list = (uint8_t)list;
}

/* Put block i (on no list, its DRAM copy evictable without I/O) at the recent end of
 * ns->clean: every block there is older than those on ns->lru. */
static void clean_push(struct ns *ns, struct inode *i)
{
	dram_push(ns, i, LIST_CLEAN);
}

/* The last close of sealed block i (or its fill, for a copy of another node's block): the
 * recent end of its list. */
static void dram_release(struct ns *ns, struct inode *i)
{
	dram_push(ns, i, (i->flags & F_CACHED) ? LIST_CACHED : LIST_LRU);
}

/* Take child's name away, keeping its record (a rename writes the new one). */
static void detach_keep(struct ns *ns, struct inode *child)
{
	struct inode *parent = child->parent;

	htable_remove(&parent->dir.children, &child->name_node);
	parent->dir.nentries--;
	if (child->kind == KIND_DIR) {
		parent->dir.nsubdirs--;
		ns->dirs--;
	} else {
		if (child->file.sealed && !(child->flags & F_REMOTE))
			ns->blocks--;
		dram_unlink(ns, child);
	}
	parent->mtime_ns = parent->ctime_ns = now_ns();
	child->parent = NULL;
	child->flags |= F_DETACHED;
	child->ctime_ns = now_ns();
}

/* Take child's name away (it stays allocated; see release_data and maybe_free): a restart
 * will not bring it back. */
static void detach(struct ns *ns, struct inode *child)
{
	detach_keep(ns, child);
	if (child->kind == KIND_DIR)
		unpersist(ns, child);
	else if (child->file.rec) /* the slot goes with the pages (readers may hold them) */
		memset(slot_rec(ns, child->file.rec - 1), 0, sizeof(struct pool_rec));
}

static void drop_dram(struct ns *ns, struct inode *i);
static void drop_ssd(struct ns *ns, struct inode *i);

/* Free a block's bytes, both tiers, and its record. */
static void release_data(struct ns *ns, struct inode *i)
{
	drop_dram(ns, i);
	drop_ssd(ns, i);
}

static void inode_free(struct ns *ns, struct inode *i)
{
	htable_remove(&ns->inodes, &i->ino_node);
	if (i->kind == KIND_DIR) {
		htable_fini(&i->dir.children);
		unpersist(ns, i);
	} else {
		release_data(ns, i);
	}
	free(i->name);
	free(i);
}

/* Free what a detached inode no longer needs: its pages when nobody has it open, the inode
 * when the kernel has also forgotten it. */
static void maybe_free(struct ns *ns, struct inode *i)
{
	if (!(i->flags & F_DETACHED) || i == ns->root)
		return;
	if (i->kind == KIND_FILE) {
		if (i->file.open || i->file.busy)
			return;
		release_data(ns, i);
	}
	if (i->nlookup == 0)
		inode_free(ns, i);
}

static void fill_attr(const struct ns *ns, const struct inode *i, struct ns_attr *a)
{
	(void)ns;
	*a = (struct ns_attr){
	    .ino = i->ino,
	    .mode = i->mode,
	    .uid = i->uid,
	    .gid = i->gid,
	    .atime_ns = atomic_load_explicit(&i->atime_ns, memory_order_relaxed),
	    .mtime_ns = atomic_load_explicit(&i->mtime_ns, memory_order_relaxed),
	    .ctime_ns = i->ctime_ns,
	};
	if (i->kind == KIND_DIR) {
		a->nlink = 2 + i->dir.nsubdirs;
		a->size = POOL_PAGE_SIZE;
	} else {
		a->nlink = (i->flags & F_DETACHED) ? 0 : 1;
		a->size = atomic_load_explicit(&i->file.size, memory_order_relaxed);
		a->alloc_bytes = i->file.npages * POOL_PAGE_SIZE;
		a->generation = i->file.generation;
		a->writing = !i->file.sealed;
		a->remote = (i->flags & (F_REMOTE | F_CACHED)) != 0;
		a->version = i->file.version;
		a->checked_ns = i->file.checked_ns;
	}
}

/* A block's payload offset in the pool object (0 for an empty block). */
static uint64_t block_offset(const struct pool *pool, const struct inode *i);

/* Tell the cluster that block i (sealed, with its bytes here, attached) is visible under its
 * name. Caller holds ns->lock. */
static void publish(struct ns *ns, struct inode *i)
{
	struct ns_pub p;

	if (!ns->cfg.publish || (i->flags & (F_DETACHED | F_REMOTE | F_CACHED)))
		return;
	p = (struct ns_pub){
	    .parent = i->parent->ino,
	    .name = i->name,
	    .offset = block_offset(ns->pool, i),
	    .length = atomic_load_explicit(&i->file.size, memory_order_relaxed),
	    .generation = i->file.generation,
	    .version = i->file.version,
	    .mtime_ns = atomic_load_explicit(&i->mtime_ns, memory_order_relaxed),
	    .mode = i->mode,
	    .uid = i->uid,
	    .gid = i->gid,
	    .replica = (i->flags & F_REPLICA) != 0,
	};
	ns->cfg.publish(ns->cfg.publish_arg, &p);
}

/* Block i (attached) loses its name behind the kernel's back: tell the kernel, and the
 * cluster when the bytes were published from here. Caller holds ns->lock. */
static void vanish(struct ns *ns, struct inode *i)
{
	if (ns->cfg.vanish)
		ns->cfg.vanish(ns->cfg.vanish_arg, i->parent->ino, i->name);
	if (ns->cfg.forget && i->kind == KIND_FILE && i->file.sealed &&
	    !(i->flags & (F_REMOTE | F_CACHED)))
		ns->cfg.forget(ns->cfg.publish_arg, i->parent->ino, i->name);
}

void ns_set_hooks(struct ns *ns, ns_publish_fn publish, ns_vanish_fn forget, void *arg,
		  uint16_t version_tag)
{
	pthread_mutex_lock(&ns->lock);
	ns->cfg.publish = publish;
	ns->cfg.forget = forget;
	ns->cfg.publish_arg = arg;
	ns->cfg.version_tag = version_tag;
	pthread_mutex_unlock(&ns->lock);
}

static uint64_t new_version(const struct ns *ns, int64_t now)
{
	return ((uint64_t)now & ~0xffffull) | ns->cfg.version_tag;
}

/* ---- records: what a restart needs (engine/pool.h, struct pool_rec) ---------------------- */

static void ns_log(struct ns *ns, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ns_log(struct ns *ns, int level, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ns->cfg.log)
		ns->cfg.log(ns->cfg.log_arg, level, msg);
	else
		fprintf(stderr, "kvcachefs: %s\n", msg);
}

static struct pool_rec *slot_rec(const struct ns *ns, uint64_t slot)
{
	return (struct pool_rec *)pool_page_addr(ns->pool, slot / POOL_RECS_PER_PAGE) +
	       slot % POOL_RECS_PER_PAGE;
}

static int slots_reserve(struct ns *ns, size_t more)
{
	uint64_t *v;
	size_t cap;

	if (ns->nslots + more <= ns->capslots)
		return 0;
	cap = ns->capslots ? 2 * ns->capslots : 64;
	while (cap < ns->nslots + more)
		cap *= 2;
	v = realloc(ns->slots, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	ns->slots = v;
	ns->capslots = cap;
	return 0;
}

/* Clear record slot rec (slot + 1) and make it free; a page of records left empty goes
 * back to the pool. Caller holds ns->lock. */
static void slot_put(struct ns *ns, uint64_t rec)
{
	uint64_t page = (rec - 1) / POOL_RECS_PER_PAGE;
	size_t k = 0;

	memset(slot_rec(ns, rec - 1), 0, sizeof(struct pool_rec));
	if (--ns->rec_used[page]) {
		if (slots_reserve(ns, 1) == 0) /* else lost until the next restart */
			ns->slots[ns->nslots++] = rec - 1;
		return;
	}
	for (size_t j = 0; j < ns->nslots; j++)
		if (ns->slots[j] / POOL_RECS_PER_PAGE != page)
			ns->slots[k++] = ns->slots[j];
	ns->nslots = k;
	pool_free(ns->pool, page, 1);
}

static int64_t alloc_evicting(struct ns *ns, uint64_t n);

/* A free record slot + 1 (its record zero), carving a new page of records when none is left;
 * with evict, eviction may make room for it (and the lock may be dropped meanwhile). 0 when
 * there is no room. Caller holds ns->lock. */
static uint64_t slot_get(struct ns *ns, bool evict)
{
	int64_t p;

	if (!ns->nslots) {
		if (slots_reserve(ns, POOL_RECS_PER_PAGE) < 0)
			return 0;
		p = evict ? alloc_evicting(ns, 1) : pool_alloc(ns->pool, 1);
		if (p < 0)
			return 0;
		if (ns->nslots) { /* someone else carved a page while we waited */
			pool_free(ns->pool, (uint64_t)p, 1);
		} else {
			memset(pool_page_addr(ns->pool, (uint64_t)p), 0, POOL_PAGE_SIZE);
			*pool_hdr(ns->pool, (uint64_t)p) = (struct pool_hdr){
			    .magic = POOL_HDR_MAGIC,
			    .flags = POOL_HDR_SEALED | POOL_HDR_RECS,
			    .npages = 1,
			};
			for (unsigned k = POOL_RECS_PER_PAGE; k-- > 0;)
				ns->slots[ns->nslots++] = (uint64_t)p * POOL_RECS_PER_PAGE + k;
		}
	}
	ns->nslots--;
	ns->rec_used[ns->slots[ns->nslots] / POOL_RECS_PER_PAGE]++;
	return ns->slots[ns->nslots] + 1;
}

static uint64_t *rec_of(struct inode *i)
{
	return i->kind == KIND_DIR ? &i->dir.rec : &i->file.rec;
}

static uint64_t dir_id_of(const struct ns *ns, const struct inode *d)
{
	return d == ns->root ? POOL_ROOT_ID : d->dir.id;
}

static bool ssd_only(const struct inode *i);

/* Write i's record into slot rec (+ 1). Caller holds ns->lock. */
static void rec_store(struct ns *ns, struct inode *i, uint64_t rec)
{
	struct pool_rec r;
	size_t nl = strlen(i->name);

	memset(&r, 0, sizeof(r));
	r.magic = POOL_REC_MAGIC;
	r.name_len = (uint16_t)nl;
	r.seq = ns->next_seq++;
	r.parent = dir_id_of(ns, i->parent);
	r.mode = i->mode;
	r.uid = i->uid;
	r.gid = i->gid;
	r.mtime_ns = atomic_load_explicit(&i->mtime_ns, memory_order_relaxed);
	memcpy(r.name, i->name, nl);
	if (i->kind == KIND_DIR) {
		r.kind = POOL_REC_DIR;
		r.id = i->dir.id;
		r.flags = i->dir.replicas;
	} else {
		r.kind = POOL_REC_BLOCK;
		r.page = i->file.npages ? i->file.page : POOL_REC_NOPAGE;
		r.generation = i->file.generation;
		r.version = i->file.version;
		r.length = atomic_load_explicit(&i->file.size, memory_order_relaxed);
		r.checksum = i->file.sum;
		r.flags = (i->flags & F_REPLICA) ? POOL_REC_REPLICA : 0;
		if (ssd_only(i))
			r.flags |= POOL_REC_ONSSD;
	}
	r.rec_checksum = XXH3_64bits(&r, sizeof(r));
	memcpy(slot_rec(ns, rec - 1), &r, sizeof(r));
}

/* Record what i is now (a directory, or a sealed block with its bytes in DRAM): a new record,
 * then the old one cleared, so a crash leaves one or the other. Caller holds ns->lock. */
static void persist(struct ns *ns, struct inode *i)
{
	uint64_t *cur = rec_of(i), rec;

	if (i->flags & (F_DETACHED | F_REMOTE | F_CACHED))
		return;
	if (i->kind == KIND_FILE && !i->file.sealed && !i->file.recorded)
		return;					  /* being written */
	if (*cur && slot_rec(ns, *cur - 1)->magic == 0) { /* reserved, not written yet */
		rec_store(ns, i, *cur);
		return;
	}
	rec = slot_get(ns, false);
	if (!rec) { /* no room for a new one: rewrite in place */
		if (*cur)
			rec_store(ns, i, *cur);
		return;
	}
	rec_store(ns, i, rec);
	if (*cur)
		slot_put(ns, *cur);
	*cur = rec;
}

static void unpersist(struct ns *ns, struct inode *i)
{
	uint64_t *cur = rec_of(i);

	if (*cur) {
		slot_put(ns, *cur);
		*cur = 0;
	}
}

/* ---- eviction and the SSD tier ------------------------------------------------------------ */

static bool over_pct(const struct ns *ns, unsigned pct)
{
	return pool_used_pages(ns->pool) * 100 > (uint64_t)pct * ns->pool->npages;
}

static uint64_t size_of(const struct inode *i)
{
	return atomic_load_explicit(&i->file.size, memory_order_relaxed);
}

/* The sealed header of block i's DRAM copy (its bytes final, i->file.sum and version set);
 * nothing for a block without pages. Caller holds ns->lock. */
static void write_sealed_hdr(struct ns *ns, const struct inode *i)
{
	XXH128_hash_t nh;

	if (!i->file.npages)
		return;
	nh = XXH3_128bits(i->name, strlen(i->name));
	*pool_hdr(ns->pool, i->file.page) = (struct pool_hdr){
	    .magic = POOL_HDR_MAGIC,
	    .flags = POOL_HDR_SEALED,
	    .generation = i->file.generation,
	    .name_hash = {nh.low64, nh.high64},
	    .length = size_of(i),
	    .checksum = i->file.sum,
	    .seal_time_ns = i->file.version,
	    .npages = (uint32_t)i->file.npages,
	};
}

/* Only on SSD: no bytes in DRAM. */
static bool ssd_only(const struct inode *i)
{
	return i->file.dev >= 0 && !i->file.npages && size_of(i);
}

/* Free the DRAM copy of block i (its record first; a block that stays on SSD keeps one for
 * its name and attributes). Caller holds ns->lock. */
static void drop_dram(struct ns *ns, struct inode *i)
{
	bool stays = i->file.dev >= 0 && size_of(i) && i->file.npages &&
		     !(i->flags & (F_DETACHED | F_CACHED));

	dram_unlink(ns, i);
	if (!stays)
		unpersist(ns, i);
	if (i->file.npages) {
		pool_free(ns->pool, i->file.page, i->file.npages);
		i->file.npages = 0;
		if (stays)
			persist(ns, i);
		if (i->file.dev >= 0 && size_of(i)) {
			ns->ssd_only_n++;
			/* other nodes read from the DRAM pool: not from here until promoted */
			if (ns->cfg.forget && !(i->flags & (F_DETACHED | F_CACHED)))
				ns->cfg.forget(ns->cfg.publish_arg, i->parent->ino, i->name);
		}
	}
}

/* Free the SSD copy of block i. Caller holds ns->lock (the header clear is one small write). */
static void drop_ssd(struct ns *ns, struct inode *i)
{
	if (i->file.dev < 0)
		return;
	if (ssd_only(i))
		ns->ssd_only_n--;
	if (lru_linked(&i->file.lru) && i->file.list == LIST_CLEAN) {
		dram_unlink(ns, i); /* its DRAM copy is the only one now: back in line */
		lru_push_old(&ns->lru, &i->file.lru);
	}
	lru_remove(&ns->slru[i->file.dev], &i->file.slru);
	(void)ssd_free(ns->cfg.ssd[i->file.dev], i->file.unit);
	i->file.dev = -1;
	ns->ssd_blocks--;
}

/* Name i (attached) gone for good behind the kernel's back (eviction, corruption). */
static void lose(struct ns *ns, struct inode *i)
{
	vanish(ns, i);
	detach(ns, i);
	i->flags |= F_EVICTED;
}

/* Does evicting i from DRAM need a demotion (an SSD write) first? */
static bool needs_demotion(const struct ns *ns, const struct inode *i)
{
	return ns->cfg.nssd && i->file.dev < 0 && i->file.npages && size_of(i) &&
	       !(i->flags & F_CACHED);
}

/* Evict the least recently used unopened sealed block from DRAM when that needs no I/O: its
 * DRAM copy goes (an SSD copy stays), or the whole block without an SSD tier. 1 done, 0 nothing
 * to evict, -EAGAIN the oldest must be demoted first (the evictor thread does that). */
static int evict_one(struct ns *ns)
{
	static const unsigned order[] = {LIST_CACHED, LIST_CLEAN, LIST_LRU};
	struct lru_node *n = NULL;
	struct inode *i;

	/* The oldest of the first list that has one. Second chance: a block read through
	 * kvc_load_batch since it was queued moves to the recent end of its list (a clean one
	 * to ns->lru) instead (bounded: each pass clears one bit). */
	for (unsigned k = 0; k < sizeof(order) / sizeof(order[0]) && !n; k++) {
		while ((n = lru_oldest(dram_list(ns, order[k]))) && LRU_INODE(n)->file.referenced) {
			i = LRU_INODE(n);
			i->file.referenced = false;
			dram_unlink(ns, i);
			dram_release(ns, i);
		}
	}
	if (!n)
		return 0;
	i = LRU_INODE(n);
	if (needs_demotion(ns, i))
		return -EAGAIN;
	dram_unlink(ns, i);
	atomic_fetch_add_explicit(&ns->evictions, 1, memory_order_relaxed);
	ns->evicted_pages += i->file.npages;
	if (ns->cfg.nssd && !(i->flags & F_CACHED) && (i->file.dev >= 0 || !size_of(i))) {
		drop_dram(ns, i); /* on SSD (or empty): it stays */
		return 1;
	}
	lose(ns, i);
	maybe_free(ns, i);
	return 1;
}

/* Drop the least recently used SSD copy on device dev that no I/O or reader holds; with
 * only_lone, the least recently used of those that are their block's only copy (a block also
 * in DRAM keeps its SSD copy), looking at 64 at most. False when there is none. Caller holds
 * ns->lock. */
static bool ssd_evict_one(struct ns *ns, unsigned dev, bool only_lone)
{
	struct lru_node *n = lru_oldest(&ns->slru[dev]);
	struct inode *i;

	for (unsigned tries = 0; tries < 64 && n && n != &ns->slru[dev].head; tries++) {
		i = (struct inode *)((char *)n - offsetof(struct inode, file.slru));
		if (only_lone && (i->file.busy || i->file.open || !ssd_only(i))) {
			n = n->prev; /* the next older one, left where it is */
			continue;
		}
		if (i->file.busy || i->file.open) {
			lru_touch(&ns->slru[dev], n);
			n = lru_oldest(&ns->slru[dev]);
			continue;
		}
		atomic_fetch_add_explicit(&ns->ssd_evictions, 1, memory_order_relaxed);
		if (ssd_only(i)) { /* its only copy: the block goes */
			drop_ssd(ns, i);
			if (!(i->flags & F_DETACHED))
				lose(ns, i);
			maybe_free(ns, i);
		} else {
			drop_ssd(ns, i);
		}
		return true;
	}
	return false;
}

/* The path of directory d ("" for the root) into buf. Caller holds ns->lock. */
static int dir_path(const struct ns *ns, const struct inode *d, char *buf, size_t len);

#define DEMOTE_BATCH 8

struct demotion {
	struct inode *i;
	struct ssd_meta meta;
	struct ssd_write w;
	unsigned dev;
	bool allocated;
};

/* Allocate an SSD extent for d, dropping SSD copies (LRU) for room; ahead of eviction (keep)
 * only blocks whose SSD copy is their only one go, so that writing ahead never undoes itself.
 * Called without the lock. */
static int demotion_alloc(struct ns *ns, struct demotion *d, bool keep)
{
	struct ssd *s;
	int ret;

	for (unsigned k = 0; k < ns->cfg.nssd; k++) {
		d->dev = ns->next_dev++ % ns->cfg.nssd;
		s = ns->cfg.ssd[d->dev];
		while ((ret = ssd_alloc(s, d->w.len, &d->w.unit)) == -ENOSPC) {
			bool dropped;

			pthread_mutex_lock(&ns->lock);
			dropped = ssd_evict_one(ns, d->dev, keep);
			pthread_mutex_unlock(&ns->lock);
			if (!dropped)
				break;
		}
		if (ret == 0) {
			d->allocated = true;
			return 0;
		}
	}
	return -ENOSPC;
}

/* DRAM pages beyond cfg.demote_above of the pool held by blocks not on ns->clean (0: none,
 * or no SSD tier). Caller holds ns->lock. */
static uint64_t predemote_excess(const struct ns *ns)
{
	uint64_t used = pool_used_pages(ns->pool), limit;

	if (!ns->cfg.nssd || ns->cfg.demote_above >= 100)
		return 0;
	limit = ns->pool->npages * ns->cfg.demote_above / 100;
	return used > ns->clean_pages + limit ? used - ns->clean_pages - limit : 0;
}

/* Demote up to DEMOTE_BATCH of the oldest DRAM blocks to SSD. Caller holds ns->lock, which is
 * dropped during the I/O. To evict (keep false): their DRAM copies go; returns how many blocks
 * left DRAM or were dropped (0: none to do). Ahead of eviction (keep true): their DRAM copies
 * stay, on ns->clean, as do blocks that need no demotion found on the way; returns how many
 * went to ns->clean (0: none to do, or the SSD refused them all). */
static unsigned demote_batch(struct ns *ns, bool keep)
{
	struct demotion *d = calloc(DEMOTE_BATCH, sizeof(*d));
	uint64_t excess = keep ? predemote_excess(ns) : UINT64_MAX;
	struct lru_node *node;
	unsigned n = 0, done = 0;

	if (!d)
		return 0;
	while (n < DEMOTE_BATCH && excess && (node = lru_oldest(&ns->lru))) {
		struct inode *i = LRU_INODE(node);

		if (!needs_demotion(ns, i)) {
			if (!keep)
				break;
			dram_unlink(ns, i); /* already on SSD, or cached: nothing to write */
			clean_push(ns, i);
			done++;
			continue;
		}

		if (dir_path(ns, i->parent, d[n].meta.dir, sizeof(d[n].meta.dir)) < 0)
			d[n].meta.dir[0] = '\0'; /* too deep to record: restored at the root */
		snprintf(d[n].meta.name, sizeof(d[n].meta.name), "%s", i->name);
		d[n].meta.generation = i->file.generation;
		d[n].meta.version = i->file.version;
		d[n].meta.mtime_ns = atomic_load_explicit(&i->mtime_ns, memory_order_relaxed);
		d[n].meta.mode = i->mode;
		d[n].meta.uid = i->uid;
		d[n].meta.gid = i->gid;
		/* written in this run: its checksum is known; a recovered block is hashed anew,
		 * and checked against its record below */
		d[n].meta.checksum = i->file.sum;
		d[n].meta.checksum_known = !i->file.unverified;
		d[n].w.meta = &d[n].meta;
		d[n].w.payload = pool_page_addr(ns->pool, i->file.page);
		d[n].w.len = size_of(i);
		d[n].i = i;
		lru_remove(&ns->lru, node);
		excess = excess > i->file.npages ? excess - i->file.npages : 0;
		i->file.busy++;
		ns->demoting++;
		n++;
	}
	if (!n) {
		free(d);
		return 0;
	}
	pthread_mutex_unlock(&ns->lock);
	for (unsigned k = 0; k < n; k++)
		d[k].w.ret = demotion_alloc(ns, &d[k], keep);
	for (unsigned dev = 0; dev < ns->cfg.nssd; dev++) {
		struct ssd_write w[DEMOTE_BATCH];
		unsigned m = 0;

		for (unsigned k = 0; k < n; k++)
			if (d[k].allocated && d[k].dev == dev)
				w[m++] = d[k].w;
		if (m)
			(void)ssd_write_blocks(ns->cfg.ssd[dev], w, m);
		for (unsigned k = 0, j = 0; k < n; k++)
			if (d[k].allocated && d[k].dev == dev)
				d[k].w.ret = w[j++].ret;
	}
	pthread_mutex_lock(&ns->lock);
	for (unsigned k = 0; k < n; k++) {
		struct inode *i = d[k].i;
		int ret = d[k].w.ret;

		i->file.busy--;
		ns->demoting--;
		if (!ret && d[k].meta.checksum != i->file.sum) {
			ns_log(ns, LOG_ERR,
			       "block %s: its DRAM bytes do not match its checksum: dropped",
			       i->name);
			ret = -EBADMSG;
		}
		if (!ret && !(i->flags & F_DETACHED)) {
			i->file.dev = (int8_t)d[k].dev;
			i->file.unit = d[k].w.unit;
			ns->ssd_blocks++;
			lru_push(&ns->slru[d[k].dev], &i->file.slru);
			atomic_fetch_add_explicit(&ns->demotions, 1, memory_order_relaxed);
			if (!i->file.open && !lru_linked(&i->file.lru)) {
				if (keep) {
					clean_push(ns, i);
				} else {
					atomic_fetch_add_explicit(&ns->evictions, 1,
								  memory_order_relaxed);
					ns->evicted_pages += i->file.npages;
					drop_dram(ns, i);
				}
				done++;
			} /* else read meanwhile: both copies stay, the DRAM one on the LRU */
			continue;
		}
		if (d[k].allocated)
			(void)ssd_free(ns->cfg.ssd[d[k].dev], d[k].w.unit);
		if (keep && ret != -EBADMSG && !(i->flags & F_DETACHED) && !i->file.open &&
		    !lru_linked(&i->file.lru)) {
			lru_push_old(&ns->lru, &i->file.lru); /* not evicted: it waits its turn */
		} else if (!(i->flags & F_DETACHED) && !i->file.open && !lru_linked(&i->file.lru)) {
			/* no room on SSD (or a device error): dropped as without an SSD tier */
			atomic_fetch_add_explicit(&ns->evictions, 1, memory_order_relaxed);
			ns->evicted_pages += i->file.npages;
			lose(ns, i);
			done++;
		}
		maybe_free(ns, i);
	}
	pthread_cond_broadcast(&ns->space_cond);
	free(d);
	if (keep)
		return done;
	return done ? done : n;
}

uint64_t ns_evict(struct ns *ns, unsigned target_pct)
{
	uint64_t n = 0;
	int r;

	pthread_mutex_lock(&ns->lock);
	while (over_pct(ns, target_pct)) {
		r = evict_one(ns);
		if (r == -EAGAIN)
			r = demote_batch(ns, false) ? 1 : 0;
		if (r <= 0)
			break;
		n++;
	}
	pthread_mutex_unlock(&ns->lock);
	return n;
}

/*
 * Eviction bursts: what one wake-up of the evictor (from its wake to its next wait) freed,
 * writers' own evictions meanwhile included. One that evicts more than BURST_BLOCKS blocks
 * or more than BURST_PCT percent of the pool is logged, at most one line per BURST_LOG_NS
 * (the bursts in between are counted in the next line): a line says that the cache is
 * churning, not each block it dropped.
 */
#define BURST_BLOCKS 64
#define BURST_PCT    10
#define BURST_LOG_NS (10 * 1000000000ll)

struct burst {
	bool open;
	int64_t t0; /* monotonic */
	uint64_t evictions, demotions, ssd_evictions, pages;
};

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void burst_begin(struct ns *ns, struct burst *b)
{
	if (b->open)
		return;
	*b = (struct burst){
	    .open = true,
	    .t0 = mono_ns(),
	    .evictions = atomic_load_explicit(&ns->evictions, memory_order_relaxed),
	    .demotions = atomic_load_explicit(&ns->demotions, memory_order_relaxed),
	    .ssd_evictions = atomic_load_explicit(&ns->ssd_evictions, memory_order_relaxed),
	    .pages = ns->evicted_pages,
	};
}

/* The evictor is about to wait (ns->lock held): end the wake-up b, logging it when it was a
 * burst. True when a line was written: the lock was dropped meanwhile, so the caller must
 * look at the pool again before it waits. */
static bool burst_end(struct ns *ns, struct burst *b)
{
	uint64_t ev, dem, ssd_ev, pages, npages = ns->pool->npages;
	int64_t now = mono_ns();
	unsigned quiet;
	char more[64] = "", tier[96] = "";

	if (!b->open)
		return false;
	b->open = false;
	ev = atomic_load_explicit(&ns->evictions, memory_order_relaxed) - b->evictions;
	dem = atomic_load_explicit(&ns->demotions, memory_order_relaxed) - b->demotions;
	ssd_ev = atomic_load_explicit(&ns->ssd_evictions, memory_order_relaxed) - b->ssd_evictions;
	pages = ns->evicted_pages - b->pages;
	if (ev <= BURST_BLOCKS && pages * 100 <= (uint64_t)BURST_PCT * npages)
		return false;
	if (ns->burst_logged_ns && now - ns->burst_logged_ns < BURST_LOG_NS) {
		ns->bursts_unlogged++;
		return false;
	}
	quiet = ns->bursts_unlogged;
	ns->bursts_unlogged = 0;
	ns->burst_logged_ns = now;
	if (quiet)
		snprintf(more, sizeof(more), " (%u more burst%s since the last line)", quiet,
			 quiet == 1 ? "" : "s");
	if (ns->cfg.nssd)
		snprintf(tier, sizeof(tier),
			 ", %llu of them demoted to SSD, %llu SSD copies dropped",
			 (unsigned long long)dem, (unsigned long long)ssd_ev);
	pthread_mutex_unlock(&ns->lock);
	ns_log(ns, LOG_INFO,
	       "eviction burst in %.1f ms: %llu blocks evicted from DRAM (%.1f MiB, %llu%% of the "
	       "pool)%s; pool %llu%% used%s",
	       (double)(now - b->t0) / 1e6, (unsigned long long)ev,
	       (double)pages * POOL_PAGE_SIZE / (1 << 20),
	       (unsigned long long)(npages ? pages * 100 / npages : 0), tier,
	       (unsigned long long)(npages ? pool_used_pages(ns->pool) * 100 / npages : 0), more);
	pthread_mutex_lock(&ns->lock);
	return true;
}

/* Should the evictor demote the oldest blocks with no SSD copy ahead of eviction, because
 * they fill more than cfg.demote_above of the pool? (Pages of open blocks and of blocks being
 * written count too; demote_batch finds none of those.) Caller holds ns->lock. */
static bool predemote_due(const struct ns *ns)
{
	if (!predemote_excess(ns) || !lru_oldest(&ns->lru))
		return false;
	return !ns->predemote_retry_ns || mono_ns() >= ns->predemote_retry_ns;
}

#define PREDEMOTE_RETRY_NS 1000000000ll /* after the SSD refused a whole batch */

static void *evictor_main(void *arg)
{
	struct ns *ns = arg;
	struct burst b = {.open = false};

	pthread_mutex_lock(&ns->lock);
	while (!ns->evict_stop) {
		bool progress = false;
		bool evict = over_pct(ns, ns->cfg.evict_high) || ns->space_wanted;

		if (!evict && !predemote_due(ns)) {
			if (!burst_end(ns, &b))
				pthread_cond_wait(&ns->evict_cond, &ns->lock);
			continue;
		}
		if (evict) {
			burst_begin(ns, &b);
			while (!ns->evict_stop &&
			       (over_pct(ns, ns->cfg.evict_low) || ns->space_wanted)) {
				int r = evict_one(ns);

				if (r == -EAGAIN)
					r = demote_batch(ns, false) ? 1 : 0;
				if (r <= 0)
					break;
				progress = true;
			}
			pthread_cond_broadcast(&ns->space_cond);
			/* Writers that keep the pool above the high mark keep the evictor from
			 * waiting: such a wake-up is cut into periods of one line each. */
			if (progress && mono_ns() - b.t0 >= BURST_LOG_NS)
				(void)burst_end(ns, &b);
		}
		/* One batch ahead of eviction, then eviction is looked at again. */
		if (!ns->evict_stop && !ns->space_wanted && predemote_due(ns)) {
			if (demote_batch(ns, true))
				progress = true;
			else
				ns->predemote_retry_ns = mono_ns() + PREDEMOTE_RETRY_NS;
		}
		/* Nothing (more) to do: wait for the next kick. */
		if (!progress && !ns->evict_stop && !burst_end(ns, &b))
			pthread_cond_wait(&ns->evict_cond, &ns->lock);
	}
	pthread_mutex_unlock(&ns->lock);
	return NULL;
}

/* Allocate n pages, evicting as much as needed (caller holds ns->lock). With an SSD tier a
 * block must be demoted before its pages are free: the evictor thread does that while this
 * waits (the lock is dropped meanwhile). */
static int64_t alloc_evicting(struct ns *ns, uint64_t n)
{
	struct timespec t;
	unsigned waits = 0;
	int64_t p;
	int r;

	if (n > ns->pool->npages)
		return -ENOSPC;
	while ((p = pool_alloc(ns->pool, n)) < 0) {
		r = evict_one(ns);
		if (r > 0)
			continue;
		if ((r == 0 && !ns->demoting) || ++waits > 300)
			return -ENOSPC;
		ns->space_wanted++;
		pthread_cond_signal(&ns->evict_cond);
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_nsec += 100000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		(void)pthread_cond_timedwait(&ns->space_cond, &ns->lock, &t);
		ns->space_wanted--;
	}
	if (over_pct(ns, ns->cfg.evict_high) || predemote_due(ns))
		pthread_cond_signal(&ns->evict_cond);
	return p;
}

/*
 * Make the bytes of sealed block i readable in DRAM: promote it from SSD (checksum verified),
 * or verify a recovered DRAM copy at its first open. Caller holds ns->lock, which is dropped
 * during the I/O, and a reference that keeps i allocated. 0, -ENOENT (gone meanwhile), -EIO
 * (corrupt or unreadable: the block is dropped), -ENOSPC.
 */
static int ensure_resident(struct ns *ns, struct inode *i)
{
	uint64_t size = size_of(i), npages = pool_pages_for(size), sum;
	int64_t p;
	int ret = 0;

	while (i->file.busy && !(i->flags & F_DETACHED))
		pthread_cond_wait(&ns->space_cond, &ns->lock); /* someone else's I/O on it */
	if (i->flags & F_DETACHED)
		return -ENOENT;
	if (!size || (i->file.npages && !i->file.unverified))
		return 0;
	i->file.busy++;
	if (i->file.npages) { /* recovered: check it once */
		p = (int64_t)i->file.page;
		pthread_mutex_unlock(&ns->lock);
		sum = checksum(pool_page_addr(ns->pool, (uint64_t)p), size);
		pthread_mutex_lock(&ns->lock);
		i->file.busy--;
		if (sum == i->file.sum) {
			i->file.unverified = false;
		} else {
			ns_log(ns, LOG_ERR,
			       "block %s: its bytes in the pool do not match its checksum: "
			       "dropped",
			       i->name);
			if (!(i->flags & F_DETACHED))
				lose(ns, i);
			ret = -EIO;
		}
		goto out;
	}
	if (i->file.dev < 0) {
		i->file.busy--;
		ret = -ENOENT;
		goto out;
	}
	p = alloc_evicting(ns, npages);
	if (p < 0) {
		i->file.busy--;
		ret = (int)p;
		goto out;
	}
	*pool_hdr(ns->pool, (uint64_t)p) = (struct pool_hdr){
	    .magic = POOL_HDR_MAGIC,
	    .generation = i->file.generation,
	    .npages = (uint32_t)npages,
	};
	pthread_mutex_unlock(&ns->lock);
	ret = ssd_read(ns->cfg.ssd[i->file.dev], i->file.unit, 0,
		       pool_page_addr(ns->pool, (uint64_t)p), size);
	if (!ret && checksum(pool_page_addr(ns->pool, (uint64_t)p), size) != i->file.sum)
		ret = -EBADMSG;
	pthread_mutex_lock(&ns->lock);
	i->file.busy--;
	if (ret || (i->flags & F_DETACHED)) {
		pool_free(ns->pool, (uint64_t)p, npages);
		if (ret) {
			ns_log(ns, LOG_ERR, "block %s: cannot read it back from SSD (%s): dropped",
			       i->name, strerror(-ret));
			if (!(i->flags & F_DETACHED))
				lose(ns, i);
			ret = -EIO;
		} else {
			ret = -ENOENT;
		}
		goto out;
	}
	i->file.page = (uint64_t)p;
	i->file.npages = npages;
	write_sealed_hdr(ns, i);
	ns->ssd_only_n--;
	lru_touch(&ns->slru[i->file.dev], &i->file.slru);
	atomic_fetch_add_explicit(&ns->promotions, 1, memory_order_relaxed);
	persist(ns, i);
	publish(ns, i);
out:
	pthread_cond_broadcast(&ns->space_cond);
	if (i->flags & F_DETACHED)
		maybe_free(ns, i);
	return ret;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int ns_create(struct ns **out, struct pool *pool, const struct ns_config *cfg)
{
	struct ns *ns = calloc(1, sizeof(*ns));
	int ret;

	if (!ns)
		return -ENOMEM;
	ns->pool = pool;
	ns->cfg = *cfg;
	if (!ns->cfg.demote_above)
		ns->cfg.demote_above = 100;
	ns->next_ino = NS_ROOT_INO;
	ns->next_gen = 1;
	ns->next_seq = 1;
	ns->next_dir_id = POOL_ROOT_ID; /* the root takes it */
	if (cfg->nssd > NS_MAX_SSD) {
		free(ns);
		return -EINVAL;
	}
	for (unsigned k = 0; k < NS_MAX_SSD; k++)
		lru_init(&ns->slru[k]);
	ns->rec_used = calloc(pool->npages, 1);
	if (!ns->rec_used) {
		free(ns);
		return -ENOMEM;
	}
	pthread_cond_init(&ns->space_cond, NULL);
	ns->start_ns = now_ns();
	pthread_mutex_init(&ns->lock, NULL);
	pthread_cond_init(&ns->evict_cond, NULL);
	pthread_cond_init(&ns->seal_cond, NULL);
	htable_init(&ns->inodes);
	lru_init(&ns->lru);
	lru_init(&ns->clean);
	lru_init(&ns->cached);
	ns->handles.next = ns->handles.prev = &ns->handles;
	ns->root = inode_new(ns, KIND_DIR, "", 0755, 0, 0);
	if (!ns->root) {
		ret = -ENOMEM;
		goto out_free;
	}
	ns->root->nlookup = 1;
	ret = -pthread_create(&ns->evictor, NULL, evictor_main, ns);
	if (ret)
		goto out_free;
	*out = ns;
	return 0;

out_free:
	if (ns->root)
		inode_free(ns, ns->root);
	htable_fini(&ns->inodes);
	free(ns);
	return ret;
}

static void handle_free(struct ns_handle *h)
{
	if (h->writer) {
		pthread_mutex_destroy(&h->lock);
		if (h->xxh)
			XXH3_freeState(h->xxh);
	}
	free(h);
}

void ns_destroy(struct ns *ns)
{
	uint64_t cursor = 0;
	struct hnode *n, *next;

	if (!ns)
		return;
	pthread_mutex_lock(&ns->lock);
	ns->evict_stop = true;
	pthread_cond_signal(&ns->evict_cond);
	pthread_mutex_unlock(&ns->lock);
	pthread_join(ns->evictor, NULL);

	/* A directory's mtime moves with its children, and is recorded here, at a clean stop
	 * (rewriting its record at every create and unlink cost 5-8% of small-block creates).
	 * After a crash a directory has the mtime of the last clean stop, or of its own last
	 * change (mkdir, chmod, chown, rename). */
	pthread_mutex_lock(&ns->lock);
	for (n = htable_next(&ns->inodes, &cursor, NULL); n;
	     n = htable_next(&ns->inodes, &cursor, n)) {
		struct inode *i = INODE_OF(n, ino_node);

		if (i->kind == KIND_DIR && i != ns->root && !(i->flags & F_DETACHED))
			persist(ns, i);
	}
	pthread_mutex_unlock(&ns->lock);
	cursor = 0;
	while (ns->handles.next != &ns->handles) {
		struct ns_handle *h = ns->handles.next;

		ns->handles.next = h->next;
		handle_free(h);
	}
	/* Free every inode; the walk must not see the table change, so collect first. */
	n = htable_next(&ns->inodes, &cursor, NULL);
	while (n) {
		struct inode *i = INODE_OF(n, ino_node);

		next = htable_next(&ns->inodes, &cursor, n);
		if (i->kind == KIND_DIR)
			htable_fini(&i->dir.children);
		free(i->name);
		free(i);
		n = next;
	}
	htable_fini(&ns->inodes);
	pthread_cond_destroy(&ns->evict_cond);
	pthread_cond_destroy(&ns->seal_cond);
	pthread_cond_destroy(&ns->space_cond);
	free(ns->slots);
	free(ns->rec_used);
	pthread_mutex_destroy(&ns->lock);
	free(ns);
}

/* ---- names -------------------------------------------------------------------------------- */

int ns_lookup(struct ns *ns, uint64_t parent, const char *name, struct ns_attr *attr)
{
	struct inode *d, *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (!i) {
		atomic_fetch_add_explicit(&ns->misses, 1, memory_order_relaxed);
		ret = -ENOENT;
		goto out;
	}
	i->nlookup++;
	fill_attr(ns, i, attr);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

void ns_forget(struct ns *ns, uint64_t ino, uint64_t nlookup)
{
	struct inode *i;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (i && i != ns->root) {
		i->nlookup = nlookup > i->nlookup ? 0 : i->nlookup - nlookup;
		if (i->nlookup == 0 && (i->flags & F_REMOTE) && !(i->flags & F_DETACHED))
			detach(ns, i); /* a stub lives as long as the kernel knows it */
		maybe_free(ns, i);
	}
	pthread_mutex_unlock(&ns->lock);
}

int ns_getattr(struct ns *ns, uint64_t ino, struct ns_attr *attr)
{
	struct inode *i;
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (!i || (i->flags & F_EVICTED))
		ret = -ENOENT;
	else
		fill_attr(ns, i, attr);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_mkdir(struct ns *ns, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	     uint32_t gid, struct ns_attr *attr)
{
	struct inode *d, *i;
	uint64_t rec;
	int ret = check_name(name);

	if (ret)
		return ret;
	pthread_mutex_lock(&ns->lock);
	rec = slot_get(ns, true);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	if (find_child(d, name)) {
		ret = -EEXIST;
		goto out;
	}
	i = inode_new(ns, KIND_DIR, name, mode, uid, gid);
	if (!i) {
		ret = -ENOMEM;
		goto out;
	}
	ret = attach(ns, d, i);
	if (ret) {
		inode_free(ns, i);
		goto out;
	}
	i->dir.rec = rec;
	rec = 0;
	persist(ns, i);
	i->nlookup = 1;
	fill_attr(ns, i, attr);
out:
	if (rec)
		slot_put(ns, rec);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_rmdir(struct ns *ns, uint64_t parent, const char *name)
{
	struct inode *d, *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (!i)
		ret = -ENOENT;
	else if (i->kind != KIND_DIR)
		ret = -ENOTDIR;
	else if (i->dir.nentries)
		ret = -ENOTEMPTY;
	if (ret)
		goto out;
	detach(ns, i);
	maybe_free(ns, i);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_unlink(struct ns *ns, uint64_t parent, const char *name)
{
	struct inode *d, *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (!i)
		ret = -ENOENT;
	else if (i->kind == KIND_DIR)
		ret = -EISDIR;
	if (ret)
		goto out;
	detach(ns, i);
	maybe_free(ns, i);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* Is d the directory a or below it? */
static bool is_within(const struct inode *d, const struct inode *a)
{
	for (; d; d = d->parent)
		if (d == a)
			return true;
	return false;
}

int ns_rename(struct ns *ns, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags)
{
	struct inode *sd, *dd, *src, *dst;
	char *nname = NULL;
	int ret;

	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL; /* RENAME_EXCHANGE, RENAME_WHITEOUT */
	ret = check_name(newname);
	if (ret)
		return ret;
	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &sd);
	if (!ret)
		ret = get_dir(ns, newparent, &dd);
	if (ret)
		goto out;
	src = find_child(sd, name);
	if (!src) {
		ret = -ENOENT;
		goto out;
	}
	dst = find_child(dd, newname);
	if (dst == src)
		goto out;
	if (dst && (flags & RENAME_NOREPLACE)) {
		ret = -EEXIST;
		goto out;
	}
	if (src->kind == KIND_DIR) {
		if (is_within(dd, src))
			ret = -EINVAL;
		else if (dst && dst->kind != KIND_DIR)
			ret = -ENOTDIR;
		else if (dst && dst->dir.nentries)
			ret = -ENOTEMPTY;
	} else if (dst && dst->kind == KIND_DIR) {
		ret = -EISDIR;
	} else if (src->flags & (F_REMOTE | F_CACHED)) {
		ret = -EXDEV; /* its bytes are held by another node: copy it (mv does) */
	}
	if (ret)
		goto out;
	nname = strdup(newname);
	if (!nname) {
		ret = -ENOMEM;
		goto out;
	}
	if (dst) {
		detach(ns, dst);
		maybe_free(ns, dst);
	}
	detach_keep(ns, src);
	free(src->name);
	src->name = nname;
	ret = attach(ns, dd, src);
	if (ret) { /* only the first bucket array of an empty directory can fail */
		maybe_free(ns, src);
		goto out;
	}
	src->ctime_ns = now_ns();
	if (src->kind == KIND_FILE && !lru_linked(&src->file.lru) && src->file.sealed &&
	    src->file.open == 0)
		lru_push(&ns->lru, &src->file.lru);
	if (src->kind == KIND_FILE && src->file.sealed) {
		/* published anew under this name: a new version, which replaces older ones */
		src->file.version = new_version(ns, src->ctime_ns);
		if (src->file.npages) {
			struct pool_hdr *hdr = pool_hdr(ns->pool, src->file.page);
			XXH128_hash_t nh = XXH3_128bits(nname, strlen(nname));

			hdr->seal_time_ns = src->file.version;
			hdr->name_hash[0] = nh.low64;
			hdr->name_hash[1] = nh.high64;
		}
		publish(ns, src);
	}
	persist(ns, src);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* ---- blocks ------------------------------------------------------------------------------- */

static struct ns_handle *handle_new(struct ns *ns, struct inode *i, bool writer)
{
	struct ns_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->ns = ns;
	h->ino = i;
	h->writer = writer;
	if (writer) {
		pthread_mutex_init(&h->lock, NULL);
		h->xxh = XXH3_createState(); /* NULL only costs a checksum pass at seal */
		if (h->xxh)
			XXH3_64bits_reset(h->xxh);
	}
	h->next = ns->handles.next;
	h->prev = &ns->handles;
	ns->handles.next->prev = h;
	ns->handles.next = h;
	return h;
}

int ns_create_block(struct ns *ns, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
		    uint32_t gid, struct ns_attr *attr, struct ns_handle **hp)
{
	struct inode *d, *i;
	struct ns_handle *h;
	uint64_t rec;
	int ret = check_name(name);

	if (ret)
		return ret;
	pthread_mutex_lock(&ns->lock);
	rec = slot_get(ns, true); /* its record's place, made before anything is looked at */
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (i) {
		ret = i->kind == KIND_DIR ? -EISDIR : i->file.sealed ? -EEXIST : -EBUSY;
		goto out;
	}
	i = inode_new(ns, KIND_FILE, name, mode, uid, gid);
	if (!i) {
		ret = -ENOMEM;
		goto out;
	}
	i->file.rec = rec;
	rec = 0;
	h = handle_new(ns, i, true);
	if (!h || attach(ns, d, i) < 0) {
		if (h) {
			h->prev->next = h->next;
			h->next->prev = h->prev;
			handle_free(h);
		}
		inode_free(ns, i);
		ret = -ENOMEM;
		goto out;
	}
	ns->writing++;
	i->file.open = 1;
	i->nlookup = 1;
	fill_attr(ns, i, attr);
	*hp = h;
out:
	if (rec)
		slot_put(ns, rec);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/*
 * The kernel sends RELEASE (where the block is sealed) asynchronously after the writer's last
 * close() has returned, and it may reach another worker thread after a reader's OPEN. A block
 * whose writer has closed an fd and written nothing since is about to be sealed: wait for it
 * (bounded), so that a reader started after the writer's close() sees the sealed block.
 * Caller holds ns->lock; the kernel's reference keeps i alive.
 */
#define NS_SEAL_WAIT_NS 2000000000ll

static void wait_sealed(struct ns *ns, struct inode *i)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += NS_SEAL_WAIT_NS / 1000000000;
	while (i->kind == KIND_FILE && !i->file.sealed && i->file.closing &&
	       !(i->flags & F_DETACHED))
		if (pthread_cond_timedwait(&ns->seal_cond, &ns->lock, &deadline) == ETIMEDOUT)
			break;
}

/* wait_sealed for a block found by name, which no kernel reference keeps alive: returns i,
 * or NULL when it lost its name meanwhile (and is freed if nothing else holds it). */
static struct inode *wait_sealed_by_name(struct ns *ns, struct inode *i)
{
	i->nlookup++; /* keeps i alive across wait_sealed, which drops the lock */
	wait_sealed(ns, i);
	i->nlookup--;
	if (i->flags & F_DETACHED) {
		maybe_free(ns, i);
		return NULL;
	}
	return i;
}

/* Open sealed block i for reading: a reader's handle pins it (off the LRU). Caller holds
 * ns->lock. */
static int open_sealed(struct ns *ns, struct inode *i, struct ns_handle **hp)
{
	struct ns_handle *h = handle_new(ns, i, false);

	if (!h)
		return -ENOMEM;
	dram_unlink(ns, i);
	i->file.open++;
	atomic_fetch_add_explicit(&ns->hits, 1, memory_order_relaxed);
	*hp = h;
	return 0;
}

int ns_open(struct ns *ns, uint64_t ino, int flags, struct ns_handle **hp)
{
	struct inode *i;
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (i)
		wait_sealed(ns, i);
	if (!i || (i->flags & F_DETACHED))
		ret = -ENOENT;
	else if (i->kind == KIND_DIR)
		ret = -EISDIR;
	else if (!i->file.sealed)
		ret = -EBUSY;
	else if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		ret = -EPERM;
	else if (i->flags & F_REMOTE)
		ret = -EREMOTE; /* fetch it first (fs/remote.c) */
	if (!ret)
		ret = ensure_resident(ns, i); /* the kernel's reference keeps i */
	if (!ret)
		ret = open_sealed(ns, i, hp);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

ssize_t ns_read(struct ns_handle *h, uint64_t off, size_t len, void *buf, const void **ptr)
{
	struct inode *i = h->ino;
	struct ns *ns = h->ns;
	uint64_t size;
	size_t n;

	if (h->writer)
		pthread_mutex_lock(&h->lock);
	size = atomic_load_explicit(&i->file.size, memory_order_relaxed);
	n = off >= size ? 0 : (size - off < len ? (size_t)(size - off) : len);
	if (n == 0) {
		*ptr = buf;
	} else if (h->writer) {
		/* The writer's pages may move when the block grows: copy under its lock. */
		memcpy(buf, (uint8_t *)pool_page_addr(ns->pool, i->file.page) + off, n);
		*ptr = buf;
	} else {
		/* Sealed: immutable and pinned by our open count, no lock needed. */
		*ptr = (uint8_t *)pool_page_addr(ns->pool, i->file.page) + off;
	}
	if (h->writer)
		pthread_mutex_unlock(&h->lock);
	atomic_store_explicit(&i->atime_ns, now_ns(), memory_order_relaxed);
	atomic_fetch_add_explicit(&ns->reads, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ns->bytes_read, n, memory_order_relaxed);
	return (ssize_t)n;
}

bool ns_handle_is_writer(const struct ns_handle *h)
{
	return h->writer;
}

/* Make room for need_pages in the writer's block, growing geometrically so a block written
 * in many requests is moved O(log n) times at most. Caller holds h->lock. */
static int grow(struct ns_handle *h, uint64_t need_pages)
{
	struct ns *ns = h->ns;
	struct inode *i = h->ino;
	uint64_t old = i->file.npages, old_page = i->file.page;
	uint64_t max_pages = pool_pages_for(ns->cfg.max_block_size);
	uint64_t want = old ? (2 * old > max_pages ? max_pages : 2 * old) : need_pages;
	uint64_t size = atomic_load_explicit(&i->file.size, memory_order_relaxed);
	struct pool_hdr *hdr;
	int64_t p;

	if (want < need_pages)
		want = need_pages;
	pthread_mutex_lock(&ns->lock);
	if (old &&
	    (pool_extend(ns->pool, old_page, old, want) == 0 ||
	     (want > need_pages && pool_extend(ns->pool, old_page, old, want = need_pages) == 0))) {
		i->file.npages = want;
		pool_hdr(ns->pool, old_page)->npages = (uint32_t)want;
		if (over_pct(ns, ns->cfg.evict_high))
			pthread_cond_signal(&ns->evict_cond);
		pthread_mutex_unlock(&ns->lock);
		return 0;
	}
	p = alloc_evicting(ns, want);
	if (p < 0 && want > need_pages)
		p = alloc_evicting(ns, want = need_pages);
	if (p < 0) {
		pthread_mutex_unlock(&ns->lock);
		return (int)p;
	}
	hdr = pool_hdr(ns->pool, (uint64_t)p);
	*hdr = (struct pool_hdr){
	    .magic = POOL_HDR_MAGIC,
	    .generation = i->file.generation,
	    .npages = (uint32_t)want,
	};
	pthread_mutex_unlock(&ns->lock);

	/* Both runs are ours: copy without the store lock. */
	if (old)
		memcpy(pool_page_addr(ns->pool, (uint64_t)p), pool_page_addr(ns->pool, old_page),
		       size);

	pthread_mutex_lock(&ns->lock);
	if (old)
		pool_free(ns->pool, old_page, old);
	i->file.page = (uint64_t)p;
	i->file.npages = want;
	pthread_mutex_unlock(&ns->lock);
	return 0;
}

/* The writer writes again after closing an fd (through a dup): not about to be sealed, and
 * what flush_record wrote no longer holds (its header first: a record without a sealed
 * header is dropped at recovery; the record's slot stays reserved for the seal). Caller
 * holds h->lock. */
static void clear_flushed(struct ns_handle *h)
{
	struct inode *i = h->ino;
	struct ns *ns = h->ns;

	if (!h->flushed)
		return;
	h->flushed = false;
	pthread_mutex_lock(&ns->lock);
	i->file.closing = false;
	if (i->file.recorded) {
		if (i->file.npages)
			pool_hdr(ns->pool, i->file.page)->flags &= (uint32_t)~POOL_HDR_SEALED;
		if (i->file.rec)
			memset(slot_rec(ns, i->file.rec - 1), 0, sizeof(struct pool_rec));
		i->file.recorded = false;
		i->file.version = 0;
	}
	pthread_mutex_unlock(&ns->lock);
}

/* Writes that do not extend the running checksum in order drop it: seal hashes instead. */
static void checksum_write(struct ns_handle *h, uint64_t off, const void *buf, size_t len)
{
	if (!h->xxh)
		return;
	if (off == h->hashed) {
		checksum_update(h->xxh, buf, len);
		h->hashed += len;
	} else {
		XXH3_freeState(h->xxh);
		h->xxh = NULL;
	}
}

static int copy_from(void *arg, void *dst, size_t len)
{
	memcpy(dst, arg, len);
	return 0;
}

ssize_t ns_write(struct ns_handle *h, uint64_t off, const void *buf, size_t len)
{
	return ns_write_fill(h, off, len, copy_from, (void *)buf);
}

ssize_t ns_write_fill(struct ns_handle *h, uint64_t off, size_t len, ns_fill_fn fill, void *arg)
{
	struct ns *ns = h->ns;
	struct inode *i = h->ino;
	uint64_t end = off + len, size;
	uint8_t *data;
	ssize_t ret = (ssize_t)len;

	if (!h->writer)
		return -EBADF;
	if (end < off || end > ns->cfg.max_block_size)
		return -EFBIG;
	pthread_mutex_lock(&h->lock);
	if (i->file.sealed) {
		ret = -EPERM;
		goto out;
	}
	if (h->failed) {
		ret = -ENOSPC;
		goto out;
	}
	clear_flushed(h);
	if (len == 0)
		goto out;
	if (pool_pages_for(end) > i->file.npages) {
		int err = grow(h, pool_pages_for(end));

		if (err) {
			h->failed = true;
			atomic_fetch_add_explicit(&ns->enospc, 1, memory_order_relaxed);
			ret = err;
			goto out;
		}
	}
	data = pool_page_addr(ns->pool, i->file.page);
	size = atomic_load_explicit(&i->file.size, memory_order_relaxed);
	if (off > size) /* recycled pages: a hole must read as zeros */
		memset(data + size, 0, off - size);
	ret = fill(arg, data + off, len);
	if (ret < 0)
		goto out;
	ret = (ssize_t)len;
	checksum_write(h, off, data + off, len);
	if (end > size)
		atomic_store_explicit(&i->file.size, end, memory_order_relaxed);
	atomic_store_explicit(&i->mtime_ns, now_ns(), memory_order_relaxed);
	atomic_fetch_add_explicit(&ns->writes, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ns->bytes_written, len, memory_order_relaxed);
out:
	pthread_mutex_unlock(&h->lock);
	return ret;
}

/* The checksum of the writer's payload as it is now. Caller holds h->lock. */
static uint64_t payload_sum(struct ns_handle *h)
{
	uint64_t size = atomic_load_explicit(&h->ino->file.size, memory_order_relaxed);

	if (h->has_sum)
		return h->sum;
	if (!size)
		return 0;
	if (h->xxh && h->hashed == size)
		return XXH3_64bits_digest(h->xxh);
	return checksum(pool_page_addr(h->ns->pool, h->ino->file.page), size);
}

/*
 * At a close of one of the writer's descriptors (flush): record the block as it is, with a
 * sealed header, as the seal will, so that a crash (kill -9) between that close and the
 * release that seals it finds it sealed at the restart. It stays unsealed here: a write
 * through another descriptor takes the record back first (clear_flushed). Caller holds
 * h->lock.
 */
static void flush_record(struct ns_handle *h)
{
	struct inode *i = h->ino;
	struct ns *ns = h->ns;
	uint64_t sum = payload_sum(h);

	h->flush_sum = sum;
	pthread_mutex_lock(&ns->lock);
	if (!(i->flags & (F_DETACHED | F_REMOTE | F_CACHED)) && !i->file.sealed) {
		int64_t now = now_ns();

		i->file.version = h->version ? h->version : new_version(ns, now);
		atomic_store_explicit(&i->mtime_ns, now, memory_order_relaxed); /* the seal's */
		i->file.sum = sum;
		i->file.recorded = true;
		persist(ns, i); /* the record first: a sealed header always has one */
		write_sealed_hdr(ns, i);
	}
	pthread_mutex_unlock(&ns->lock);
}

/* Seal or discard the writer's block. Caller holds h->lock. */
static int seal_locked(struct ns_handle *h)
{
	struct ns *ns = h->ns;
	struct inode *i = h->ino;
	uint64_t size = atomic_load_explicit(&i->file.size, memory_order_relaxed);
	uint64_t sum = 0, keep = pool_pages_for(size);
	int64_t now = now_ns();

	if (i->file.sealed)
		return 0;
	if (h->failed || h->aborted) {
		pthread_mutex_lock(&ns->lock);
		if (!(i->flags & F_DETACHED)) {
			if (ns->cfg.vanish)
				ns->cfg.vanish(ns->cfg.vanish_arg, i->parent->ino, i->name);
			if (ns->cfg.forget) /* its writer may have announced it as pending */
				ns->cfg.forget(ns->cfg.publish_arg, i->parent->ino, i->name);
			detach(ns, i);
			i->flags |= F_EVICTED;
		}
		i->file.closing = false;
		pthread_cond_broadcast(&ns->seal_cond);
		pthread_mutex_unlock(&ns->lock);
		return h->failed ? -ENOSPC : 0;
	}
	sum = h->flushed ? h->flush_sum : payload_sum(h);

	pthread_mutex_lock(&ns->lock);
	if (i->file.npages > keep) {
		if (keep)
			pool_shrink(ns->pool, i->file.page, i->file.npages, keep);
		else
			pool_free(ns->pool, i->file.page, i->file.npages);
		i->file.npages = keep;
	}
	if (!i->file.recorded) { /* else the version and mtime flush_record gave it */
		i->file.version = h->version ? h->version : new_version(ns, now);
		atomic_store_explicit(&i->mtime_ns, now, memory_order_relaxed);
	}
	i->file.recorded = false;
	i->file.sum = sum;
	if (h->version)
		i->flags |= F_REPLICA;
	i->file.sealed = true;
	persist(ns, i); /* the record first: a sealed header always has one */
	write_sealed_hdr(ns, i);
	i->file.closing = false;
	pthread_cond_broadcast(&ns->seal_cond);
	i->ctime_ns = now;
	ns->writing--;
	if (!(i->flags & F_DETACHED))
		ns->blocks++;
	publish(ns, i);
	pthread_mutex_unlock(&ns->lock);
	return 0;
}

int ns_seal(struct ns_handle *h)
{
	int ret;

	if (!h->writer)
		return 0;
	pthread_mutex_lock(&h->lock);
	ret = seal_locked(h);
	pthread_mutex_unlock(&h->lock);
	return ret;
}

int ns_flush(struct ns_handle *h)
{
	int ret = 0;

	if (!h->writer)
		return 0;
	pthread_mutex_lock(&h->lock);
	if (h->failed) {
		ret = -ENOSPC;
	} else if (!h->ino->file.sealed && !h->flushed) { /* else recorded, unchanged since */
		h->flushed = true;
		pthread_mutex_lock(&h->ns->lock);
		h->ino->file.closing = true;
		pthread_mutex_unlock(&h->ns->lock);
		flush_record(h);
	}
	pthread_mutex_unlock(&h->lock);
	return ret;
}

void ns_release(struct ns_handle *h)
{
	struct ns *ns = h->ns;
	struct inode *i = h->ino;

	if (h->writer) {
		pthread_mutex_lock(&h->lock);
		if (!i->file.sealed)
			(void)seal_locked(h); /* seals, or discards after ENOSPC */
		pthread_mutex_unlock(&h->lock);
	}
	pthread_mutex_lock(&ns->lock);
	if (h->writer && !i->file.sealed)
		ns->writing--; /* discarded */
	h->prev->next = h->next;
	h->next->prev = h->prev;
	i->file.open--;
	if (i->file.open == 0) {
		if (i->flags & F_DETACHED)
			maybe_free(ns, i);
		else if (i->file.sealed)
			dram_release(ns, i);
	}
	pthread_mutex_unlock(&ns->lock);
	handle_free(h);
}

int ns_setattr(struct ns *ns, uint64_t ino, struct ns_handle *h, unsigned valid,
	       const struct ns_attr *in, struct ns_attr *out)
{
	struct inode *i;
	int ret = 0;

	if (valid & NS_SET_SIZE) {
		if (!h || !h->writer || h->ino->ino != ino) {
			pthread_mutex_lock(&ns->lock);
			i = get_inode(ns, ino);
			ret = !i || (i->flags & F_EVICTED) ? -ENOENT
			      : i->kind == KIND_DIR	   ? -EISDIR
			      : i->file.sealed		   ? -EPERM
							   : -EBUSY;
			pthread_mutex_unlock(&ns->lock);
			return ret;
		}
		if (in->size > ns->cfg.max_block_size)
			return -EFBIG;
		pthread_mutex_lock(&h->lock);
		i = h->ino;
		if (i->file.sealed)
			ret = -EPERM;
		else if (h->failed)
			ret = -ENOSPC;
		if (!ret)
			clear_flushed(h); /* before grow moves the pages its record names */
		if (!ret && pool_pages_for(in->size) > i->file.npages)
			ret = grow(h, pool_pages_for(in->size));
		if (!ret) {
			uint64_t size = atomic_load_explicit(&i->file.size, memory_order_relaxed);

			if (in->size > size)
				memset((uint8_t *)pool_page_addr(ns->pool, i->file.page) + size, 0,
				       in->size - size);
			if (in->size != h->hashed && h->xxh) {
				XXH3_freeState(h->xxh);
				h->xxh = NULL;
			}
			atomic_store_explicit(&i->file.size, in->size, memory_order_relaxed);
			atomic_store_explicit(&i->mtime_ns, now_ns(), memory_order_relaxed);
		} else if (ret == -ENOSPC) {
			h->failed = true;
		}
		pthread_mutex_unlock(&h->lock);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (!i || (i->flags & F_EVICTED)) {
		ret = -ENOENT;
		goto out;
	}
	if (valid & NS_SET_MODE)
		i->mode = (i->mode & S_IFMT) | (in->mode & 07777);
	if (valid & NS_SET_UID)
		i->uid = in->uid;
	if (valid & NS_SET_GID)
		i->gid = in->gid;
	if (valid & NS_SET_ATIME)
		atomic_store_explicit(&i->atime_ns, in->atime_ns, memory_order_relaxed);
	if (valid & NS_SET_MTIME)
		atomic_store_explicit(&i->mtime_ns, in->mtime_ns, memory_order_relaxed);
	i->ctime_ns = now_ns();
	if (valid & (NS_SET_MODE | NS_SET_UID | NS_SET_GID | NS_SET_MTIME))
		persist(ns, i);
	fill_attr(ns, i, out);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* ---- inspection --------------------------------------------------------------------------- */

int ns_opendir(struct ns *ns, uint64_t ino, struct ns_dir *dir)
{
	struct inode *d, *i;
	struct hnode *n = NULL;
	uint64_t cursor = 0;
	size_t names = 0, k = 2;
	char *p;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, ino, &d);
	if (ret)
		goto out;
	while ((n = htable_next(&d->dir.children, &cursor, n)))
		names += strlen(INODE_OF(n, name_node)->name) + 1;
	/* One allocation: the entry array followed by every name. */
	dir->ents = malloc((2 + d->dir.nentries) * sizeof(struct ns_dirent) + names + 5);
	if (!dir->ents) {
		ret = -ENOMEM;
		goto out;
	}
	p = (char *)(dir->ents + 2 + d->dir.nentries);
	dir->ents[0] = (struct ns_dirent){.name = strcpy(p, "."), .ino = d->ino, .mode = S_IFDIR};
	p += 2;
	dir->ents[1] = (struct ns_dirent){
	    .name = strcpy(p, ".."), .ino = d->parent ? d->parent->ino : d->ino, .mode = S_IFDIR};
	p += 3;
	cursor = 0;
	n = NULL;
	while ((n = htable_next(&d->dir.children, &cursor, n))) {
		i = INODE_OF(n, name_node);
		if (i->kind == KIND_FILE && !i->file.sealed && !i->file.closing)
			continue; /* not visible until sealed (or about to be: see wait_sealed) */
		dir->ents[k++] =
		    (struct ns_dirent){.name = strcpy(p, i->name), .ino = i->ino, .mode = i->mode};
		p += strlen(i->name) + 1;
	}
	dir->count = k;
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

void ns_dir_free(struct ns_dir *dir)
{
	free(dir->ents);
	dir->ents = NULL;
	dir->count = 0;
}

int ns_block_info(struct ns *ns, uint64_t ino, struct ns_block_info *info)
{
	struct inode *i;
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (i)
		wait_sealed(ns, i);
	if (!i || (i->flags & F_EVICTED)) {
		ret = -ENOENT;
	} else {
		*info = (struct ns_block_info){
		    .is_dir = i->kind == KIND_DIR,
		    .last_access_ns = atomic_load_explicit(&i->atime_ns, memory_order_relaxed),
		};
		if (i->kind == KIND_FILE) {
			info->sealed = i->file.sealed;
			info->refs = i->file.open;
			info->generation = i->file.generation;
			info->version = i->file.version;
			info->remote = (i->flags & F_REMOTE) != 0;
			info->cached = (i->flags & F_CACHED) != 0;
			info->on_ssd = ssd_only(i);
			info->ssd_copy = i->file.dev >= 0;
		}
		if (i->kind == KIND_DIR)
			info->replicas = i->dir.replicas ? i->dir.replicas : 1;
		else if (i->parent)
			info->replicas = i->parent->dir.replicas ? i->parent->dir.replicas : 1;
		else
			info->replicas = 1;
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

void ns_status(struct ns *ns, struct kvcachefs_status *st)
{
	uint64_t cap = pool_capacity(ns->pool);

	pthread_mutex_lock(&ns->lock);
	st->capacity = cap;
	st->used = pool_used_pages(ns->pool) * POOL_PAGE_SIZE;
	st->free = cap - st->used;
	st->blocks = ns->blocks;
	st->writing = ns->writing;
	st->directories = ns->dirs;
	pthread_mutex_unlock(&ns->lock);
	st->reads = atomic_load(&ns->reads);
	st->writes = atomic_load(&ns->writes);
	st->bytes_read = atomic_load(&ns->bytes_read);
	st->bytes_written = atomic_load(&ns->bytes_written);
	st->hits = atomic_load(&ns->hits);
	st->misses = atomic_load(&ns->misses);
	st->evictions = atomic_load(&ns->evictions);
	st->enospc = atomic_load(&ns->enospc);
	st->max_block_size = ns->cfg.max_block_size;
	st->evict_high_pct = ns->cfg.evict_high;
	st->evict_low_pct = ns->cfg.evict_low;
	st->pool_size = ns->pool->size;
	st->start_time_ns = (uint64_t)ns->start_ns;
}

void ns_tiers(struct ns *ns, struct kvcachefs_tiers *t)
{
	uint64_t cap = pool_capacity(ns->pool);

	pthread_mutex_lock(&ns->lock);
	t->dram_capacity = cap;
	t->dram_used = pool_used_pages(ns->pool) * POOL_PAGE_SIZE;
	t->dram_blocks = ns->blocks > ns->ssd_only_n ? ns->blocks - ns->ssd_only_n : 0;
	t->ssd_blocks = ns->ssd_blocks;
	t->recovered = ns->recovery.recovered;
	t->recovery_dropped = ns->recovery.dropped;
	t->recovery_ns = ns->recovery.elapsed_ns;
	pthread_mutex_unlock(&ns->lock);
	t->ssd_devices = ns->cfg.nssd;
	t->ssd_capacity = t->ssd_used = 0;
	for (unsigned k = 0; k < ns->cfg.nssd; k++) {
		t->ssd_capacity += ssd_capacity(ns->cfg.ssd[k]);
		t->ssd_used += ssd_used(ns->cfg.ssd[k]);
	}
	t->demotions = atomic_load(&ns->demotions);
	t->promotions = atomic_load(&ns->promotions);
	t->ssd_evictions = atomic_load(&ns->ssd_evictions);
}

void ns_remote_stats(struct ns *ns, struct ns_remote_stats *out)
{
	out->fetched = atomic_load(&ns->fetched);
	out->fetched_bytes = atomic_load(&ns->fetched_bytes);
	out->replicas = atomic_load(&ns->replicas);
	out->replica_bytes = atomic_load(&ns->replica_bytes);
}

void ns_note_fetched(struct ns *ns, uint64_t blocks, uint64_t bytes)
{
	atomic_fetch_add_explicit(&ns->fetched, blocks, memory_order_relaxed);
	atomic_fetch_add_explicit(&ns->fetched_bytes, bytes, memory_order_relaxed);
}

/* ---- the side channel ---------------------------------------------------------------------- */

int ns_open_name(struct ns *ns, uint64_t parent, const char *name, struct ns_handle **hp)
{
	struct inode *d, *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (!i) {
		atomic_fetch_add_explicit(&ns->misses, 1, memory_order_relaxed);
		ret = -ENOENT;
		goto out;
	}
	if (i->kind == KIND_DIR) {
		ret = -EISDIR;
		goto out;
	}
	i = wait_sealed_by_name(ns, i);
	if (!i || (i->flags & F_REMOTE)) {
		ret = -ENOENT;
	} else if (!i->file.sealed) {
		ret = -EBUSY;
	} else {
		i->nlookup++; /* keeps i across the promotion, which drops the lock */
		ret = ensure_resident(ns, i);
		i->nlookup--;
		if (!ret)
			ret = open_sealed(ns, i, hp);
		else
			maybe_free(ns, i);
	}
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

static uint64_t block_offset(const struct pool *pool, const struct inode *i)
{
	return i->file.npages
		   ? (uint64_t)((const uint8_t *)pool_page_addr(pool, i->file.page) - pool->base)
		   : 0;
}

void ns_handle_loc(const struct ns_handle *h, struct ns_loc *loc)
{
	const struct inode *i = h->ino;
	const struct pool *pool = h->ns->pool;

	*loc = (struct ns_loc){
	    .offset = block_offset(pool, i),
	    .length = atomic_load_explicit(&i->file.size, memory_order_relaxed),
	    .generation = i->file.generation,
	};
	if (i->file.npages && i->file.sealed)
		loc->checksum = pool_hdr(pool, i->file.page)->checksum;
	else if (!i->file.npages)
		loc->checksum = checksum(NULL, 0);
}

int ns_lookup_prefix(struct ns *ns, uint64_t parent, size_t n, ns_name_at_fn name_at, void *arg)
{
	char buf[NS_NAME_MAX + 1];
	struct inode *d, *i;
	size_t k;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	for (k = 0; !ret && k < n; k++) {
		const char *name = name_at(arg, k, buf);

		if (!name) {
			ret = -EINVAL;
			break;
		}
		i = find_child(d, name);
		if (i && i->kind == KIND_FILE && !i->file.sealed && i->file.closing) {
			/* Its writer has closed it: the seal is on its way (see wait_sealed). */
			i = wait_sealed_by_name(ns, i);
			ret = get_dir(ns, parent, &d); /* the lock was dropped */
			if (ret)
				break;
		}
		if (!i || i->kind != KIND_FILE || !i->file.sealed || (i->flags & F_REMOTE))
			break;
	}
	pthread_mutex_unlock(&ns->lock);
	return ret ? ret : (int)k;
}

int ns_reserve(struct ns *ns, uint64_t parent, const char *name, uint64_t len, uint32_t mode,
	       uint32_t uid, uint32_t gid, struct ns_handle **hp)
{
	struct inode *d, *i;
	struct ns_handle *h;
	int64_t page = 0;
	uint64_t rec;
	int ret = check_name(name);

	if (ret)
		return ret;
	if (len > ns->cfg.max_block_size)
		return -EFBIG;
	pthread_mutex_lock(&ns->lock);
	rec = slot_get(ns, true);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	if (len) {
		page = alloc_evicting(ns, pool_pages_for(len));
		if (page < 0) {
			atomic_fetch_add_explicit(&ns->enospc, 1, memory_order_relaxed);
			ret = (int)page;
			goto out;
		}
	}
	i = inode_new(ns, KIND_FILE, name, mode, uid, gid);
	h = i ? handle_new(ns, i, true) : NULL;
	if (!h) {
		if (i)
			inode_free(ns, i);
		if (len)
			pool_free(ns->pool, (uint64_t)page, pool_pages_for(len));
		ret = -ENOMEM;
		goto out;
	}
	i->flags |= F_DETACHED; /* invisible until committed */
	if (len) {
		i->file.page = (uint64_t)page;
		i->file.npages = pool_pages_for(len);
		*pool_hdr(ns->pool, i->file.page) = (struct pool_hdr){
		    .magic = POOL_HDR_MAGIC,
		    .generation = i->file.generation,
		    .npages = (uint32_t)i->file.npages,
		};
	}
	atomic_store_explicit(&i->file.size, len, memory_order_relaxed);
	i->file.open = 1;
	i->file.rec = rec;
	rec = 0;
	h->target = parent;
	ns->writing++;
	*hp = h;
out:
	if (rec)
		slot_put(ns, rec);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

void *ns_handle_data(struct ns_handle *h)
{
	return h->ino->file.npages ? pool_page_addr(h->ns->pool, h->ino->file.page) : NULL;
}

int ns_commit(struct ns_handle *h, unsigned flags, const uint64_t *sum, bool *replaced,
	      struct ns_loc *loc)
{
	struct ns *ns = h->ns;
	struct inode *i = h->ino, *d, *dst;
	bool replica = h->version != 0;
	int ret;

	if (!h->writer || !h->target)
		return -EINVAL;
	pthread_mutex_lock(&h->lock);
	if (sum && !i->file.sealed) {
		h->has_sum = true;
		h->sum = *sum;
	}
	ret = seal_locked(h); /* idempotent: a commit that failed below may be retried */
	pthread_mutex_unlock(&h->lock);
	if (ret)
		return ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, h->target, &d);
	if (ret)
		goto out;
	dst = find_child(d, i->name);
	if (dst && (flags & RENAME_NOREPLACE))
		ret = -EEXIST;
	else if (dst && dst->kind == KIND_DIR)
		ret = -EISDIR;
	if (ret)
		goto out;
	*replaced = dst != NULL;
	if (dst) {
		detach(ns, dst);
		maybe_free(ns, dst);
	}
	ret = attach(ns, d, i);
	if (ret)
		goto out;
	persist(ns, i);
	i->nlookup = 0;
	h->target = 0;
	ns_handle_loc(h, loc);
	publish(ns, i);
out:
	pthread_mutex_unlock(&ns->lock);
	if (!ret && replica) {
		atomic_fetch_add_explicit(&ns->replicas, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&ns->replica_bytes, loc->length, memory_order_relaxed);
	}
	if (!ret)
		ns_release(h); /* the reservation is over; an unopened block joins the LRU */
	return ret;
}

void ns_abort(struct ns_handle *h)
{
	if (h->writer) {
		pthread_mutex_lock(&h->lock);
		if (!h->ino->file.sealed)
			h->aborted = true;
		pthread_mutex_unlock(&h->lock);
	}
	ns_release(h);
}

uint64_t ns_handle_parent(const struct ns_handle *h)
{
	uint64_t parent;

	pthread_mutex_lock(&h->ns->lock);
	parent = h->ino->parent && !(h->ino->flags & F_DETACHED) ? h->ino->parent->ino : 0;
	pthread_mutex_unlock(&h->ns->lock);
	return parent;
}

const char *ns_handle_name(const struct ns_handle *h)
{
	return h->ino->name;
}

int ns_locate_batch(struct ns *ns, uint64_t parent, size_t n, ns_name_at_fn name_at, void *arg,
		    struct ns_loc *locs, int *errs)
{
	char buf[NS_NAME_MAX + 1];
	struct inode *d, *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	for (size_t k = 0; !ret && k < n; k++) {
		const char *name = name_at(arg, k, buf);

		memset(&locs[k], 0, sizeof(locs[k]));
		if (!name) {
			ret = -EINVAL;
			break;
		}
		i = find_child(d, name);
		if (!i || (i->flags & F_REMOTE)) {
			atomic_fetch_add_explicit(&ns->misses, 1, memory_order_relaxed);
			errs[k] = ENOENT;
		} else if (i->kind == KIND_DIR) {
			errs[k] = EISDIR;
		} else if (!i->file.sealed) {
			errs[k] = i->file.closing ? EAGAIN : EBUSY;
		} else if (ssd_only(i) || i->file.unverified || i->file.busy) {
			errs[k] = EAGAIN; /* on SSD: pinning it (ns_open_name) promotes it */
		} else {
			errs[k] = 0;
			locs[k] = (struct ns_loc){
			    .offset = block_offset(ns->pool, i),
			    .length = atomic_load_explicit(&i->file.size, memory_order_relaxed),
			    .generation = i->file.generation,
			};
			/* An access for the LRU, without touching the list's neighbours. */
			i->file.referenced = true;
			atomic_store_explicit(&i->atime_ns, now_ns(), memory_order_relaxed);
			atomic_fetch_add_explicit(&ns->hits, 1, memory_order_relaxed);
		}
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* ---- directories shared with a cluster (fs/cluster.c) ------------------------------------- */

static int dir_path(const struct ns *ns, const struct inode *i, char *buf, size_t len)
{
	const struct inode *chain[256];
	size_t depth = 0, used = 0;

	for (; i && i != ns->root; i = i->parent) {
		if (depth == sizeof(chain) / sizeof(chain[0]))
			return -ENAMETOOLONG;
		chain[depth++] = i;
	}
	buf[0] = '\0';
	while (depth--) {
		int n =
		    snprintf(buf + used, len - used, "%s%s", used ? "/" : "", chain[depth]->name);

		if (n < 0 || (size_t)n >= len - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	return 0;
}

int ns_path(struct ns *ns, uint64_t ino, char *buf, size_t len)
{
	struct inode *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (!i || (i->flags & F_DETACHED && i != ns->root))
		ret = -ENOENT;
	else
		ret = dir_path(ns, i, buf, len);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* The directory at path (components separated by '/'), creating the missing ones when
 * create. Caller holds ns->lock. */
static int walk_dirs(struct ns *ns, const char *path, bool create, uint32_t mode,
		     struct inode **out)
{
	char name[NS_NAME_MAX + 1];
	struct inode *d = ns->root, *i;
	const char *p = path;

	while (*p) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == 0 || n > NS_NAME_MAX)
			return -EINVAL;
		memcpy(name, p, n);
		name[n] = '\0';
		i = find_child(d, name);
		if (!i && create) {
			i = inode_new(ns, KIND_DIR, name, mode, 0, 0);
			if (!i)
				return -ENOMEM;
			if (attach(ns, d, i) < 0) {
				inode_free(ns, i);
				return -ENOMEM;
			}
			persist(ns, i);
		}
		if (!i)
			return -ENOENT;
		if (i->kind != KIND_DIR)
			return -ENOTDIR;
		d = i;
		p += n + (end ? 1 : 0);
	}
	*out = d;
	return 0;
}

int ns_mkdir_path(struct ns *ns, const char *path, uint32_t mode)
{
	struct inode *d;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = walk_dirs(ns, path, true, mode, &d);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_rmdir_path(struct ns *ns, const char *path)
{
	struct inode *d;
	int ret;

	if (!*path)
		return -EBUSY; /* the root */
	pthread_mutex_lock(&ns->lock);
	ret = walk_dirs(ns, path, false, 0, &d);
	if (!ret && d->dir.nentries)
		ret = -ENOTEMPTY;
	if (!ret) {
		if (ns->cfg.vanish) /* the kernel may hold an entry for it */
			ns->cfg.vanish(ns->cfg.vanish_arg, d->parent->ino, d->name);
		detach(ns, d);
		maybe_free(ns, d);
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* ---- blocks shared with a cluster (fs/remote.c) ------------------------------------------- */

int ns_add_remote(struct ns *ns, uint64_t parent, const char *name, const struct ns_remote *r,
		  struct ns_attr *attr)
{
	struct inode *d, *i;
	int ret = check_name(name);

	if (ret)
		return ret;
	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (i && i->kind == KIND_DIR) {
		ret = -EISDIR;
		goto out;
	}
	if (i && (!(i->flags & (F_REMOTE | F_CACHED)) || i->file.version == r->version)) {
		/* ours, or the same version: keep it */
		if (i->flags & (F_REMOTE | F_CACHED))
			i->file.checked_ns = now_ns();
		goto found;
	}
	if (i) { /* a stub or copy of another version */
		if (ns->cfg.vanish)
			ns->cfg.vanish(ns->cfg.vanish_arg, d->ino, i->name);
		detach(ns, i);
		maybe_free(ns, i);
	}
	i = inode_new(ns, KIND_FILE, name, r->mode, 0, 0);
	if (i) {
		i->file.sealed = true;
		i->flags |= F_REMOTE;
	}
	if (!i || attach(ns, d, i) < 0) {
		if (i)
			inode_free(ns, i);
		ret = -ENOMEM;
		goto out;
	}
	i->mode = S_IFREG | (r->mode & 07777);
	i->uid = r->uid;
	i->gid = r->gid;
	atomic_store_explicit(&i->file.size, r->size, memory_order_relaxed);
	atomic_store_explicit(&i->mtime_ns, r->mtime_ns, memory_order_relaxed);
	i->ctime_ns = r->mtime_ns;
	i->file.version = r->version;
	i->file.checked_ns = now_ns();
found:
	i->nlookup++;
	fill_attr(ns, i, attr);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_remove_remote(struct ns *ns, uint64_t ino)
{
	struct inode *i;
	int ret = -ENOENT;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (i && i->kind == KIND_FILE && (i->flags & (F_REMOTE | F_CACHED)) &&
	    !(i->flags & F_DETACHED)) {
		if (ns->cfg.vanish)
			ns->cfg.vanish(ns->cfg.vanish_arg, i->parent->ino, i->name);
		detach(ns, i);
		maybe_free(ns, i);
		ret = 0;
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_remote_info(struct ns *ns, uint64_t ino, uint64_t *parent, char *name, uint64_t *size,
		   uint64_t *version)
{
	struct inode *i;
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (!i || (i->flags & F_DETACHED) || i->kind != KIND_FILE)
		ret = -ENOENT;
	else if (!(i->flags & F_REMOTE))
		ret = -EEXIST;
	if (!ret) {
		*parent = i->parent->ino;
		snprintf(name, NS_NAME_MAX + 1, "%s", i->name);
		*size = atomic_load_explicit(&i->file.size, memory_order_relaxed);
		*version = i->file.version;
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_fill_remote(struct ns_handle *h, uint64_t ino, uint64_t version, uint64_t sum)
{
	struct ns *ns = h->ns;
	struct inode *r = h->ino, *i;
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	i = get_inode(ns, ino);
	if (!i || (i->flags & F_DETACHED) || !(i->flags & F_REMOTE) || i->file.version != version ||
	    atomic_load_explicit(&i->file.size, memory_order_relaxed) !=
		atomic_load_explicit(&r->file.size, memory_order_relaxed)) {
		ret = -ESTALE;
		goto out;
	}
	/* the reservation's pages become the stub's */
	i->file.page = r->file.page;
	i->file.npages = r->file.npages;
	r->file.npages = 0;
	i->file.sum = sum; /* i->file.version is version (checked above) */
	write_sealed_hdr(ns, i);
	i->flags = (uint16_t)((i->flags & ~F_REMOTE) | F_CACHED);
	ns->blocks++; /* now it has bytes here */
	i->file.checked_ns = now_ns();
	if (i->file.open == 0 && !lru_linked(&i->file.lru))
		dram_release(ns, i); /* the recent end: the batch it belongs to is being loaded */
	ns_note_fetched(ns, 1, size_of(i));
out:
	pthread_mutex_unlock(&ns->lock);
	ns_abort(h); /* an empty reservation now, or the fetched bytes nobody wants */
	return ret;
}

void ns_handle_set_version(struct ns_handle *h, uint64_t version)
{
	h->version = version;
}

int ns_local_blocks(struct ns *ns, struct ns_pub **out, size_t *n)
{
	struct ns_pub *v = NULL;
	struct hnode *node = NULL;
	uint64_t cursor = 0;
	size_t k = 0, cap;
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	cap = ns->blocks + 1;
	v = calloc(cap, sizeof(*v));
	if (!v) {
		ret = -ENOMEM;
		goto out;
	}
	while ((node = htable_next(&ns->inodes, &cursor, node))) {
		struct inode *i = INODE_OF(node, ino_node);

		if (i->kind != KIND_FILE || !i->file.sealed ||
		    (i->flags & (F_DETACHED | F_REMOTE | F_CACHED)) || ssd_only(i) || k == cap)
			continue; /* (an SSD-only block is served to other nodes once promoted) */
		v[k] = (struct ns_pub){
		    .parent = i->parent->ino,
		    .name = strdup(i->name),
		    .offset = block_offset(ns->pool, i),
		    .length = atomic_load_explicit(&i->file.size, memory_order_relaxed),
		    .generation = i->file.generation,
		    .version = i->file.version,
		    .mtime_ns = atomic_load_explicit(&i->mtime_ns, memory_order_relaxed),
		    .mode = i->mode,
		    .uid = i->uid,
		    .gid = i->gid,
		};
		if (!v[k].name) {
			ret = -ENOMEM;
			break;
		}
		k++;
	}
out:
	pthread_mutex_unlock(&ns->lock);
	if (ret) {
		ns_pubs_free(v, k);
		return ret;
	}
	*out = v;
	*n = k;
	return 0;
}

void ns_pubs_free(struct ns_pub *p, size_t n)
{
	for (size_t k = 0; p && k < n; k++)
		free((char *)p[k].name);
	free(p);
}

int ns_drop(struct ns *ns, uint64_t parent, const char *name, uint64_t generation)
{
	struct inode *d, *i;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, parent, &d);
	if (ret)
		goto out;
	i = find_child(d, name);
	if (!i || i->kind != KIND_FILE)
		ret = -ENOENT;
	else if (!i->file.sealed)
		ret = -EBUSY;
	else if (generation && i->file.generation != generation)
		ret = -ESTALE;
	if (ret)
		goto out;
	vanish(ns, i);
	detach(ns, i);
	i->flags |= F_EVICTED;
	maybe_free(ns, i);
out:
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_dir_ino(struct ns *ns, const char *path, uint64_t *ino)
{
	struct inode *d;
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = walk_dirs(ns, path, false, 0, &d);
	if (!ret)
		*ino = d->ino;
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int ns_replicas(struct ns *ns, uint64_t ino, unsigned set)
{
	struct inode *d;
	int ret;

	if (set > 8)
		return -EINVAL;
	pthread_mutex_lock(&ns->lock);
	ret = get_dir(ns, ino, &d);
	if (!ret) {
		if (set) {
			d->dir.replicas = (uint8_t)set;
			persist(ns, d);
		}
		ret = d->dir.replicas ? d->dir.replicas : 1;
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

/* ---- recovery at start -------------------------------------------------------------------- */

struct rcv_rec {
	uint64_t slot;
	struct pool_rec r;
	struct inode *i; /* what it became */
};

struct rcv_claim {
	uint64_t page, n;
	struct inode *i; /* NULL: a page of records */
};

struct rcv {
	struct ns *ns;
	struct ns_recovery *res;
	struct rcv_rec *dirs, *blocks, *onssd;
	size_t ndirs, nblocks, capdirs, capblocks, nonssd, caponssd;
	struct rcv_claim *claims;
	size_t nclaims, capclaims;
	struct rcv_gen {
		uint64_t gen;
		struct inode *i;
	} * gens; /* the blocks recovered from the pool, by generation */
	size_t ngens;
	uint64_t max_gen;
	unsigned dev;
};

static int grow_array(void **v, size_t *cap, size_t n, size_t size)
{
	void *p;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? 2 * *cap : 256;
	p = realloc(*v, c * size);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = c;
	return 0;
}

static int cmp_dir_rec(const void *a, const void *b)
{
	const struct rcv_rec *x = a, *y = b;

	if (x->r.id != y->r.id)
		return x->r.id < y->r.id ? -1 : 1;
	return x->r.seq > y->r.seq ? -1 : x->r.seq < y->r.seq; /* highest seq first */
}

static int cmp_claim(const void *a, const void *b)
{
	const struct rcv_claim *x = a, *y = b;

	return x->page < y->page ? -1 : x->page > y->page;
}

static struct inode *rcv_dir(const struct rcv *c, uint64_t id)
{
	size_t lo = 0, hi = c->ndirs;

	if (id == POOL_ROOT_ID)
		return c->ns->root;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (c->dirs[mid].r.id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->ndirs && c->dirs[lo].r.id == id ? c->dirs[lo].i : NULL;
}

/* A record that checks out: magic, checksum, kind, name. */
static bool rec_valid(const struct pool_rec *r)
{
	struct pool_rec t = *r;

	t.rec_checksum = 0;
	return r->magic == POOL_REC_MAGIC && XXH3_64bits(&t, sizeof(t)) == r->rec_checksum &&
	       (r->kind == POOL_REC_BLOCK || r->kind == POOL_REC_DIR) && r->name_len &&
	       r->name_len <= NS_NAME_MAX && !memchr(r->name, '/', r->name_len) &&
	       !memchr(r->name, 0, r->name_len);
}

static void rcv_drop(struct rcv *c, struct rcv_rec *x, const char *why)
{
	ns_log(c->ns, LOG_WARNING, "recovery: record of %.*s dropped: %s", (int)x->r.name_len,
	       x->r.name, why);
	memset(slot_rec(c->ns, x->slot), 0, sizeof(struct pool_rec));
	c->res->dropped++;
}

/* Pages of records: collect what they hold. */
static int rcv_scan(struct rcv *c)
{
	struct pool *pool = c->ns->pool;

	for (uint64_t p = 0; p < pool->npages; p++) {
		struct pool_hdr *h = pool_hdr(pool, p);

		if (h->magic != POOL_HDR_MAGIC || (h->flags & (POOL_HDR_SEALED | POOL_HDR_RECS)) !=
						      (POOL_HDR_SEALED | POOL_HDR_RECS))
			continue;
		if (grow_array((void **)&c->claims, &c->capclaims, c->nclaims, sizeof(*c->claims)))
			return -ENOMEM;
		c->claims[c->nclaims++] = (struct rcv_claim){p, 1, NULL};
		for (unsigned k = 0; k < POOL_RECS_PER_PAGE; k++) {
			uint64_t slot = p * POOL_RECS_PER_PAGE + k;
			struct pool_rec *r = slot_rec(c->ns, slot);
			struct rcv_rec **v;
			size_t *n, *cap;

			if (r->magic == 0)
				continue;
			if (!rec_valid(r)) {
				ns_log(c->ns, LOG_WARNING,
				       "recovery: a damaged record in pool page %llu dropped",
				       (unsigned long long)p);
				memset(r, 0, sizeof(*r));
				c->res->dropped++;
				continue;
			}
			if (r->seq >= c->ns->next_seq)
				c->ns->next_seq = r->seq + 1;
			v = r->kind == POOL_REC_DIR ? &c->dirs : &c->blocks;
			n = r->kind == POOL_REC_DIR ? &c->ndirs : &c->nblocks;
			cap = r->kind == POOL_REC_DIR ? &c->capdirs : &c->capblocks;
			if (grow_array((void **)v, cap, *n, sizeof(**v)))
				return -ENOMEM;
			(*v)[(*n)++] = (struct rcv_rec){.slot = slot, .r = *r};
		}
	}
	return 0;
}

static struct inode *rcv_inode(struct ns *ns, int kind, const struct pool_rec *r,
			       struct inode *parent)
{
	char name[NS_NAME_MAX + 1];
	struct inode *i;

	memcpy(name, r->name, r->name_len);
	name[r->name_len] = '\0';
	if (find_child(parent, name))
		return NULL;
	i = inode_new(ns, kind, name, r->mode, r->uid, r->gid);
	if (!i)
		return NULL;
	if (attach(ns, parent, i) < 0) {
		inode_free(ns, i);
		return NULL;
	}
	atomic_store_explicit(&i->mtime_ns, r->mtime_ns, memory_order_relaxed);
	i->ctime_ns = r->mtime_ns;
	return i;
}

/* Directories: the newest record of each id, created parent first; orphans dropped. */
static void rcv_dirs(struct rcv *c)
{
	bool progress = true;

	if (c->ndirs)
		qsort(c->dirs, c->ndirs, sizeof(*c->dirs), cmp_dir_rec);
	for (size_t k = 0; k < c->ndirs; k++)
		if (k && c->dirs[k].r.id == c->dirs[k - 1].r.id) {
			memset(slot_rec(c->ns, c->dirs[k].slot), 0, sizeof(struct pool_rec));
			c->dirs[k].slot = UINT64_MAX; /* an older record of the same directory */
		}
	while (progress) {
		progress = false;
		for (size_t k = 0; k < c->ndirs; k++) {
			struct rcv_rec *x = &c->dirs[k];
			struct inode *parent;

			if (x->i || x->slot == UINT64_MAX || !(parent = rcv_dir(c, x->r.parent)))
				continue;
			x->i = rcv_inode(c->ns, KIND_DIR, &x->r, parent);
			if (!x->i) {
				rcv_drop(c, x, "its name is taken");
				x->slot = UINT64_MAX;
				continue;
			}
			x->i->dir.id = x->r.id;
			x->i->dir.rec = x->slot + 1;
			x->i->dir.replicas = (uint8_t)(x->r.flags <= 8 ? x->r.flags : 0);
			if (x->r.id >= c->ns->next_dir_id)
				c->ns->next_dir_id = x->r.id + 1;
			c->res->dirs++;
			progress = true;
		}
	}
	for (size_t k = 0; k < c->ndirs; k++)
		if (!c->dirs[k].i && c->dirs[k].slot != UINT64_MAX)
			rcv_drop(c, &c->dirs[k], "its parent directory is gone");
}

/* Why block record r does not match the pool, or NULL. */
static const char *rcv_check_block(const struct ns *ns, const struct pool_rec *r)
{
	const struct pool_hdr *h;
	XXH128_hash_t nh;

	if (r->page == POOL_REC_NOPAGE)
		return r->length ? "no pages for a non-empty block" : NULL;
	if (r->page >= ns->pool->npages)
		return "page outside the pool";
	h = pool_hdr(ns->pool, r->page);
	nh = XXH3_128bits(r->name, r->name_len);
	if (h->magic != POOL_HDR_MAGIC || !(h->flags & POOL_HDR_SEALED) ||
	    (h->flags & POOL_HDR_RECS))
		return "its block was never sealed";
	if (h->generation != r->generation || h->length != r->length ||
	    h->checksum != r->checksum || h->name_hash[0] != nh.low64 ||
	    h->name_hash[1] != nh.high64)
		return "it does not match its block header";
	if (h->npages < pool_pages_for(r->length) || h->npages > ns->pool->npages - r->page)
		return "bad extent";
	return NULL;
}

static int cmp_gen_rec(const void *a, const void *b)
{
	const struct rcv_rec *x = a, *y = b;

	if (x->r.generation != y->r.generation)
		return x->r.generation < y->r.generation ? -1 : 1;
	return x->r.seq > y->r.seq ? -1 : x->r.seq < y->r.seq;
}

/* The newest record of an SSD-only block of this generation, not matched yet, or NULL. */
static struct rcv_rec *rcv_onssd(struct rcv *c, uint64_t generation)
{
	size_t lo = 0, hi = c->nonssd;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (c->onssd[mid].r.generation < generation)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->nonssd && c->onssd[lo].r.generation == generation && !c->onssd[lo].i
		   ? &c->onssd[lo]
		   : NULL;
}

static void rcv_blocks(struct rcv *c)
{
	struct ns *ns = c->ns;

	for (size_t k = 0; k < c->nblocks; k++) {
		struct rcv_rec *x = &c->blocks[k];
		const char *why;

		if (x->r.flags & POOL_REC_ONSSD) { /* matched with its SSD copy later */
			if (!grow_array((void **)&c->onssd, &c->caponssd, c->nonssd,
					sizeof(*c->onssd)))
				c->onssd[c->nonssd++] = *x;
			continue;
		}
		why = rcv_check_block(ns, &x->r);
		struct inode *parent = rcv_dir(c, x->r.parent), *old, *i;
		char name[NS_NAME_MAX + 1];

		if (!why && !parent)
			why = "its directory is gone";
		if (why) {
			rcv_drop(c, x, why);
			continue;
		}
		memcpy(name, x->r.name, x->r.name_len);
		name[x->r.name_len] = '\0';
		old = find_child(parent, name);
		if (old && (old->kind == KIND_DIR || old->file.version >= x->r.version)) {
			memset(slot_rec(ns, x->slot), 0, sizeof(struct pool_rec)); /* superseded */
			continue;
		}
		if (old) { /* an older version of the name, recovered just before */
			old->file.npages = 0; /* not claimed yet */
			detach(ns, old);
			c->res->recovered--;
			c->res->bytes -= size_of(old);
			inode_free(ns, old);
		}
		i = inode_new(ns, KIND_FILE, name, x->r.mode, x->r.uid, x->r.gid);
		if (!i) {
			rcv_drop(c, x, "out of memory");
			continue;
		}
		i->file.sealed = true;
		i->file.generation = x->r.generation;
		i->file.version = x->r.version;
		i->file.sum = x->r.checksum;
		atomic_store_explicit(&i->file.size, x->r.length, memory_order_relaxed);
		if (x->r.page != POOL_REC_NOPAGE) {
			struct pool_hdr *h = pool_hdr(ns->pool, x->r.page);
			uint64_t need = pool_pages_for(x->r.length);

			/* recorded at its writer's close, before the seal trimmed it: it still has
			 * the room it grew while written, which is not claimed */
			if (need && h->npages > need)
				h->npages = (uint32_t)need;
			i->file.page = x->r.page;
			i->file.npages = h->npages;
			i->file.unverified = true;
		}
		i->file.rec = x->slot + 1;
		if (x->r.flags & POOL_REC_REPLICA)
			i->flags |= F_REPLICA;
		if (attach(ns, parent, i) < 0) {
			i->file.npages = 0;
			i->file.rec = 0;
			inode_free(ns, i);
			rcv_drop(c, x, "out of memory");
			continue;
		}
		atomic_store_explicit(&i->mtime_ns, x->r.mtime_ns, memory_order_relaxed);
		i->ctime_ns = x->r.mtime_ns;
		if (x->r.generation > c->max_gen)
			c->max_gen = x->r.generation;
		x->i = i;
		c->res->recovered++;
		c->res->bytes += x->r.length;
	}
}

/* Give every kept block its pages (in ascending order), and free slots back to the list. */
static void rcv_claim_all(struct rcv *c)
{
	struct ns *ns = c->ns;

	for (size_t k = 0; k < c->nblocks; k++) {
		struct inode *i = c->blocks[k].i;

		if (!i || (i->flags & F_DETACHED) || !i->file.npages)
			continue;
		if (grow_array((void **)&c->claims, &c->capclaims, c->nclaims, sizeof(*c->claims)))
			break; /* out of memory: the rest are dropped below */
		c->claims[c->nclaims++] = (struct rcv_claim){i->file.page, i->file.npages, i};
	}
	if (c->nclaims)
		qsort(c->claims, c->nclaims, sizeof(*c->claims), cmp_claim);
	for (size_t k = 0; k < c->nclaims; k++) {
		struct rcv_claim *x = &c->claims[k];

		if (pool_claim(ns->pool, x->page, x->n) == 0) {
			if (x->i)
				lru_push(&ns->lru, &x->i->file.lru);
			continue;
		}
		if (x->i) {
			ns_log(ns, LOG_WARNING, "recovery: block %s overlaps another: dropped",
			       x->i->name);
			x->i->file.npages = 0;
			detach(ns, x->i);
			c->res->recovered--;
			c->res->bytes -= size_of(x->i);
			c->res->dropped++;
			inode_free(ns, x->i);
		}
	}
	/* The free slots of the record pages, those cleared above included, make the list;
	 * pages left without records go back to the pool. */
	ns->nslots = 0;
	for (size_t k = 0; k < c->nclaims; k++) {
		uint64_t page = c->claims[k].page;

		if (c->claims[k].i)
			continue;
		ns->rec_used[page] = 0;
		for (unsigned s = 0; s < POOL_RECS_PER_PAGE; s++)
			ns->rec_used[page] +=
			    slot_rec(ns, page * POOL_RECS_PER_PAGE + s)->magic != 0;
		if (!ns->rec_used[page]) {
			pool_free(ns->pool, page, 1);
			continue;
		}
		for (unsigned s = 0; s < POOL_RECS_PER_PAGE; s++) {
			uint64_t slot = page * POOL_RECS_PER_PAGE + s;

			if (slot_rec(ns, slot)->magic == 0 && slots_reserve(ns, 1) == 0)
				ns->slots[ns->nslots++] = slot;
		}
	}
}

static int cmp_gen(const void *a, const void *b)
{
	const struct rcv_gen *x = a, *y = b;

	return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* Index the blocks recovered from the pool by generation (unique per block): an SSD copy is
 * matched with its DRAM copy whatever names they were written under. */
static void rcv_index(struct rcv *c)
{
	struct hnode *node = NULL;
	uint64_t cursor = 0;
	size_t cap = 0;

	while ((node = htable_next(&c->ns->inodes, &cursor, node))) {
		struct inode *i = INODE_OF(node, ino_node);

		if (i->kind != KIND_FILE || (i->flags & F_DETACHED))
			continue;
		if (grow_array((void **)&c->gens, &cap, c->ngens, sizeof(*c->gens)))
			break; /* out of memory: unmatched copies are recovered by name */
		c->gens[c->ngens++] = (struct rcv_gen){i->file.generation, i};
	}
	if (c->ngens)
		qsort(c->gens, c->ngens, sizeof(*c->gens), cmp_gen);
}

/* The index entry of generation gen, or NULL. */
static struct rcv_gen *rcv_gen_at(const struct rcv *c, uint64_t gen)
{
	size_t lo = 0, hi = c->ngens;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (c->gens[mid].gen < gen)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->ngens && c->gens[lo].gen == gen ? &c->gens[lo] : NULL;
}

static struct inode *rcv_by_gen(const struct rcv *c, uint64_t gen)
{
	struct rcv_gen *g = rcv_gen_at(c, gen);

	return g ? g->i : NULL;
}

static bool rcv_ssd_block(void *arg, uint64_t unit, const struct ssd_meta *m)
{
	struct rcv *c = arg;
	struct ns *ns = c->ns;
	struct rcv_rec *x = rcv_onssd(c, m->generation);
	struct ssd_meta renamed;
	struct inode *d = NULL, *i = rcv_by_gen(c, m->generation);

	if (i && !(i->flags & F_DETACHED) && i->file.dev < 0 && m->length) {
		/* the same block, also in DRAM (under the name it has now) */
		i->file.dev = (int8_t)c->dev;
		i->file.unit = unit;
		ns->ssd_blocks++;
		lru_push(&ns->slru[c->dev], &i->file.slru);
		return true;
	}
	/* Renamed, chmod-ed... while on SSD: the pool's record has its name and attributes
	 * (a rename gave it a newer version). */
	if (x && x->r.version >= m->version && (d = rcv_dir(c, x->r.parent))) {
		renamed = *m;
		memcpy(renamed.name, x->r.name, x->r.name_len);
		renamed.name[x->r.name_len] = '\0';
		renamed.mode = x->r.mode;
		renamed.uid = x->r.uid;
		renamed.gid = x->r.gid;
		renamed.mtime_ns = x->r.mtime_ns;
		renamed.version = x->r.version;
		m = &renamed;
	} else {
		x = NULL;
		d = NULL;
	}
	if ((!d && walk_dirs(ns, m->dir, true, 0755, &d) < 0) || check_name(m->name) < 0) {
		ns_log(ns, LOG_WARNING, "recovery: SSD block %s/%s dropped: bad path", m->dir,
		       m->name);
		c->res->dropped++;
		return false;
	}
	i = find_child(d, m->name);
	if (i && (i->kind == KIND_DIR || i->file.version >= m->version || !m->length))
		return false; /* superseded */
	if (i) {
		struct rcv_gen *g = rcv_gen_at(c, i->file.generation);

		if (g && g->i == i) /* no dangling pointer in the index */
			g->i = NULL;
		c->res->recovered--;
		c->res->bytes -= size_of(i);
		detach(ns, i);
		maybe_free(ns, i);
	}
	i = inode_new(ns, KIND_FILE, m->name, m->mode, m->uid, m->gid);
	if (!i)
		return false;
	i->file.sealed = true;
	i->file.generation = m->generation;
	i->file.version = m->version;
	i->file.sum = m->checksum;
	atomic_store_explicit(&i->file.size, m->length, memory_order_relaxed);
	i->file.dev = (int8_t)c->dev;
	i->file.unit = unit;
	if (attach(ns, d, i) < 0) {
		i->file.dev = -1;
		inode_free(ns, i);
		return false;
	}
	atomic_store_explicit(&i->mtime_ns, m->mtime_ns, memory_order_relaxed);
	i->ctime_ns = m->mtime_ns;
	if (x) {
		i->file.rec = x->slot + 1;
		x->i = i;
	}
	ns->ssd_blocks++;
	ns->ssd_only_n++;
	lru_push(&ns->slru[c->dev], &i->file.slru);
	if (m->generation > c->max_gen)
		c->max_gen = m->generation;
	c->res->recovered++;
	c->res->bytes += m->length;
	return true;
}

static void rcv_ssd_drop(void *arg, uint64_t unit, const char *why)
{
	struct rcv *c = arg;

	ns_log(c->ns, LOG_WARNING, "recovery: SSD %u unit %llu dropped: %s", c->dev,
	       (unsigned long long)unit, why);
}

int ns_recover(struct ns *ns, struct ns_recovery *res)
{
	struct rcv c = {.ns = ns, .res = res};
	struct timespec t0, t1;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&ns->lock);
	if (ns->pool->reopened) {
		ret = rcv_scan(&c);
		if (!ret) {
			rcv_dirs(&c);
			rcv_blocks(&c);
			rcv_claim_all(&c);
		}
	}
	if (c.nonssd)
		qsort(c.onssd, c.nonssd, sizeof(*c.onssd), cmp_gen_rec);
	rcv_index(&c);
	for (unsigned k = 0; !ret && k < ns->cfg.nssd; k++) {
		struct ssd_recovery sr;

		c.dev = k;
		ret = ssd_recover(ns->cfg.ssd[k], rcv_ssd_block, rcv_ssd_drop, &c, &sr);
		res->dropped += sr.dropped;
	}
	for (size_t k = 0; k < c.nonssd; k++) /* SSD copies gone, or superseded */
		if (!c.onssd[k].i)
			slot_put(ns, c.onssd[k].slot + 1);
	/* attaching their children moved the directories' mtimes: back to their records' */
	for (size_t k = 0; k < c.ndirs; k++)
		if (c.dirs[k].i) {
			atomic_store_explicit(&c.dirs[k].i->mtime_ns, c.dirs[k].r.mtime_ns,
					      memory_order_relaxed);
			c.dirs[k].i->ctime_ns = c.dirs[k].r.mtime_ns;
		}
	if (c.max_gen >= ns->next_gen)
		ns->next_gen = c.max_gen + 1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	res->elapsed_ns =
	    (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
	ns->recovery = *res;
	if (over_pct(ns, ns->cfg.evict_high))
		pthread_cond_signal(&ns->evict_cond);
	pthread_mutex_unlock(&ns->lock);
	free(c.dirs);
	free(c.blocks);
	free(c.onssd);
	free(c.gens);
	free(c.claims);
	return ret;
}
