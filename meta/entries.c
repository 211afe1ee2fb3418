/*
 * entries: the entry store (see entries.h).
 *
 * Two levels, both under s->lock:
 *  - directories: struct edir, found by path in s->dirs (an htable keyed by XXH3 of the path)
 *    and also linked on s->dir_list so that drop and rename can walk them while removing;
 *    a directory exists here only while it has entries.
 *  - entries of one directory: a table of 1 << bits chains where an entry of hash h sits on
 *    chain h >> (64 - bits) — the TOP bits — and every chain is sorted by hash. Bucket order
 *    is therefore hash order whatever the table size, so a listing resumes from a hash
 *    cursor by jumping straight to its bucket, and resizing (doubling when count > buckets,
 *    halving when count < buckets / 4) splits or concatenates chains without reordering.
 *    The load stays between 1/4 and 1, so a page skips O(page) empty buckets on average.
 *
 * An entry is one allocation: the fixed fields, hcap holder slots (nholders <= hcap used) and
 * the name with its NUL after them. A new holder beyond hcap reallocates the entry (rare:
 * replicas are few), which is why lookups hand back the link that points at it.
 * Invariants: every entry has 1..ENT_MAX_HOLDERS holders, and its holders are distinct nodes;
 * d->count is the number of entries on d's chains and is never 0 for a listed directory;
 * s->count is the sum over directories.
 */
#include "meta/entries.h"
#include "meta/htable.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define EDIR_MIN_BITS 3u

struct ent {
	struct ent *next; /* on its chain, in increasing hash order */
	uint64_t hash;
	uint64_t size, version;
	int64_t mtime_ns;
	uint32_t mode;
	uint32_t uid, gid;
	uint8_t replicas;
	uint8_t nholders; /* 1..hcap */
	uint8_t hcap;
	uint8_t pad;
	struct ent_holder h[]; /* hcap slots, then the name */
};

struct edir {
	struct hnode node;	  /* in s->dirs; first, so a struct hnode * is a struct edir * */
	struct edir *prev, *next; /* s->dir_list */
	struct ent **b;		  /* 1 << bits chains; NULL only before the first insert */
	unsigned bits;
	uint64_t count;
	size_t pathlen;
	char path[];
};

struct ents {
	pthread_mutex_t lock; /* guards everything below and every edir and ent */
	struct htable dirs;
	struct edir *dir_list;
	uint64_t count;
	uint64_t (*hash)(const char *name);
};

uint64_t ents_name_hash(const char *name)
{
	return XXH3_64bits(name, strlen(name));
}

static char *ent_name(const struct ent *e)
{
	return (char *)(e->h + e->hcap);
}

static struct ent *ent_alloc(unsigned hcap, const char *name, size_t len)
{
	struct ent *e = malloc(sizeof(*e) + hcap * sizeof(struct ent_holder) + len + 1);

	if (!e)
		return NULL;
	e->hcap = (uint8_t)hcap;
	memcpy(ent_name(e), name, len + 1);
	return e;
}

/* Make e version info->version, held by h alone (a new entry, or a newer version). */
static void ent_set(struct ent *e, const struct ent_info *info, const struct ent_holder *h)
{
	e->size = info->size;
	e->version = info->version;
	e->mtime_ns = info->mtime_ns;
	e->mode = info->mode;
	e->uid = info->uid;
	e->gid = info->gid;
	e->replicas = info->replicas;
	e->nholders = 1;
	e->h[0] = *h;
}

static void ent_to_info(const struct ent *e, struct ent_info *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	out->size = e->size;
	out->version = e->version;
	out->mtime_ns = e->mtime_ns;
	out->mode = e->mode;
	out->uid = e->uid;
	out->gid = e->gid;
	out->replicas = e->replicas;
	out->nholders = e->nholders;
	memcpy(out->holders, e->h, e->nholders * sizeof(e->h[0]));
}

static bool name_ok(const char *name)
{
	size_t len;

	if (!name)
		return false;
	len = strnlen(name, ENT_NAME_MAX + 1);
	return len >= 1 && len <= ENT_NAME_MAX;
}

/* Directories */

static uint64_t path_hash(const char *path, size_t len)
{
	return XXH3_64bits(path, len);
}

static bool edir_eq(const struct hnode *n, const void *key)
{
	return strcmp(((const struct edir *)n)->path, key) == 0;
}

static struct edir *dir_find(struct ents *s, const char *path)
{
	return (struct edir *)htable_find(&s->dirs, path_hash(path, strlen(path)), edir_eq, path);
}

/* A new, empty directory, not yet linked anywhere. */
static struct edir *edir_alloc(const char *path, size_t len)
{
	struct edir *d = calloc(1, sizeof(*d) + len + 1);

	if (!d)
		return NULL;
	d->node.hash = path_hash(path, len);
	d->pathlen = len;
	memcpy(d->path, path, len);
	d->path[len] = '\0';
	return d;
}

static int edir_link(struct ents *s, struct edir *d)
{
	int rc = htable_insert(&s->dirs, &d->node);

	if (rc)
		return rc;
	d->prev = NULL;
	d->next = s->dir_list;
	if (d->next)
		d->next->prev = d;
	s->dir_list = d;
	return 0;
}

static void edir_unlink(struct ents *s, struct edir *d)
{
	htable_remove(&s->dirs, &d->node);
	if (d->prev)
		d->prev->next = d->next;
	else
		s->dir_list = d->next;
	if (d->next)
		d->next->prev = d->prev;
}

static uint64_t edir_nb(const struct edir *d)
{
	return d->b ? (uint64_t)1 << d->bits : 0;
}

static uint64_t edir_idx(const struct edir *d, uint64_t hash)
{
	return hash >> (64 - d->bits);
}

/* Move every entry to a table of 1 << nbits chains. Chains are visited in bucket order and
 * each in hash order, so the target bucket index never decreases: appending at one moving
 * tail keeps every new chain sorted. On ENOMEM the table stays as it is. */
static void edir_resize(struct edir *d, unsigned nbits)
{
	struct ent **nb = calloc((size_t)1 << nbits, sizeof(*nb));
	struct ent **tail = NULL, *e, *next;
	uint64_t cur = UINT64_MAX;

	if (!nb)
		return;
	for (uint64_t i = 0; i < edir_nb(d); i++) {
		for (e = d->b[i]; e; e = next) {
			uint64_t j = e->hash >> (64 - nbits);

			next = e->next;
			if (j != cur) {
				cur = j;
				tail = &nb[j];
			}
			e->next = NULL;
			*tail = e;
			tail = &e->next;
		}
	}
	free(d->b);
	d->b = nb;
	d->bits = nbits;
}

/* The link that points at (hash, name) in d, or NULL. */
static struct ent **edir_find(struct edir *d, uint64_t hash, const char *name)
{
	struct ent **pp;

	if (!d || !d->b)
		return NULL;
	for (pp = &d->b[edir_idx(d, hash)]; *pp && (*pp)->hash <= hash; pp = &(*pp)->next)
		if ((*pp)->hash == hash && strcmp(ent_name(*pp), name) == 0)
			return pp;
	return NULL;
}

/* Insert e (not in d) after the entries of smaller or equal hash. 0 or -ENOMEM (only when the
 * first bucket array cannot be had). */
static int edir_insert(struct ents *s, struct edir *d, struct ent *e)
{
	struct ent **pp;

	if (!d->b) {
		d->b = calloc((size_t)1 << EDIR_MIN_BITS, sizeof(*d->b));
		if (!d->b)
			return -ENOMEM;
		d->bits = EDIR_MIN_BITS;
	}
	for (pp = &d->b[edir_idx(d, e->hash)]; *pp && (*pp)->hash <= e->hash; pp = &(*pp)->next)
		;
	e->next = *pp;
	*pp = e;
	d->count++;
	s->count++;
	if (d->count > edir_nb(d) && d->bits < 63)
		edir_resize(d, d->bits + 1);
	return 0;
}

static void edir_free(struct edir *d)
{
	struct ent *e, *next;

	for (uint64_t i = 0; i < edir_nb(d); i++) {
		for (e = d->b[i]; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(d->b);
	free(d);
}

/* Unlink *pp from d and free it; d goes too when it was its last entry (d may be dangling
 * after this). */
static void edir_delete(struct ents *s, struct edir *d, struct ent **pp)
{
	struct ent *e = *pp;

	*pp = e->next;
	free(e);
	d->count--;
	s->count--;
	if (d->count == 0) {
		edir_unlink(s, d);
		edir_free(d);
	} else if (d->bits > EDIR_MIN_BITS && d->count < edir_nb(d) / 4) {
		edir_resize(d, d->bits - 1);
	}
}

/* Store */

int ents_create(struct ents **out)
{
	struct ents *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return -ENOMEM;
	rc = pthread_mutex_init(&s->lock, NULL);
	if (rc) {
		free(s);
		return -rc;
	}
	htable_init(&s->dirs);
	s->hash = ents_name_hash;
	*out = s;
	return 0;
}

void ents_destroy(struct ents *s)
{
	struct edir *d, *next;

	if (!s)
		return;
	for (d = s->dir_list; d; d = next) {
		next = d->next;
		edir_free(d);
	}
	htable_fini(&s->dirs);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void ents_set_hash_for_test(struct ents *s, uint64_t (*hash)(const char *name))
{
	s->hash = hash;
}

/* Create (dir, name) from info with h as its only holder. */
static int ents_add_new(struct ents *s, struct edir *d, const char *dir, const char *name,
			uint64_t hash, const struct ent_info *info, const struct ent_holder *h,
			struct ent_info *cur)
{
	struct ent *e = ent_alloc(1, name, strlen(name));
	bool new_dir = !d;
	int rc = -ENOMEM;

	if (!e)
		return -ENOMEM;
	e->hash = hash;
	e->pad = 0;
	ent_set(e, info, h);
	if (new_dir) {
		d = edir_alloc(dir, strlen(dir));
		if (!d)
			goto out_free;
		rc = edir_link(s, d);
		if (rc)
			goto out_free_dir;
	}
	rc = edir_insert(s, d, e);
	if (rc)
		goto out_unlink;
	ent_to_info(e, cur);
	return 0;

out_unlink:
	if (new_dir)
		edir_unlink(s, d);
out_free_dir:
	if (new_dir)
		edir_free(d);
out_free:
	free(e);
	return rc;
}

/* Add or refresh holder h in the entry *pp (same version). */
static int ents_add_holder(struct ent **pp, const struct ent_holder *h)
{
	struct ent *e = *pp;
	size_t namesz;

	for (unsigned i = 0; i < e->nholders; i++) {
		if (e->h[i].node == h->node) {
			e->h[i] = *h;
			return 0;
		}
	}
	if (e->nholders == ENT_MAX_HOLDERS)
		return -ENOSPC;
	if (e->nholders == e->hcap) {
		namesz = strlen(ent_name(e)) + 1;
		e = realloc(e, sizeof(*e) + (e->hcap + 1u) * sizeof(e->h[0]) + namesz);
		if (!e)
			return -ENOMEM;
		memmove(e->h + e->hcap + 1, e->h + e->hcap, namesz);
		e->hcap++;
		*pp = e;
	}
	e->h[e->nholders++] = *h;
	return 0;
}

int ents_add(struct ents *s, const char *dir, const char *name, const struct ent_info *info,
	     const struct ent_holder *h, struct ent_holder *old, unsigned *nold,
	     struct ent_info *cur)
{
	struct edir *d;
	struct ent **pp, *e;
	uint64_t hash;
	int rc = 0;

	if (nold)
		*nold = 0;
	if (!dir || !name_ok(name) || !info || !h || info->replicas < 1 ||
	    info->replicas > ENT_MAX_HOLDERS)
		return -EINVAL;
	hash = s->hash(name);
	pthread_mutex_lock(&s->lock);
	d = dir_find(s, dir);
	pp = edir_find(d, hash, name);
	if (!pp) {
		rc = ents_add_new(s, d, dir, name, hash, info, h, cur);
		goto out;
	}
	e = *pp;
	if (info->version < e->version) {
		rc = -ESTALE;
	} else if (info->version == e->version) {
		rc = ents_add_holder(pp, h);
		e = *pp;
	} else {
		if (old)
			memcpy(old, e->h, e->nholders * sizeof(e->h[0]));
		if (nold)
			*nold = e->nholders;
		ent_set(e, info, h);
	}
	if (rc == 0 || rc == -ESTALE)
		ent_to_info(e, cur);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int ents_get(struct ents *s, const char *dir, const char *name, struct ent_info *out)
{
	struct ent **pp;
	int rc = -ENOENT;

	if (!dir || !name_ok(name))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	pp = edir_find(dir_find(s, dir), s->hash(name), name);
	if (pp) {
		ent_to_info(*pp, out);
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int ents_forget(struct ents *s, const char *dir, const char *name, uint64_t node,
		uint64_t generation)
{
	struct edir *d;
	struct ent **pp, *e;
	int rc = -ENOENT;

	if (!dir || !name_ok(name))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	d = dir_find(s, dir);
	pp = edir_find(d, s->hash(name), name);
	if (!pp)
		goto out;
	e = *pp;
	for (unsigned i = 0; i < e->nholders; i++) {
		if (e->h[i].node != node)
			continue;
		if (generation && e->h[i].generation != generation)
			break;
		/* keep the order: the first holders are the oldest copies */
		memmove(e->h + i, e->h + i + 1, (e->nholders - i - 1) * sizeof(e->h[0]));
		if (--e->nholders == 0)
			edir_delete(s, d, pp);
		rc = 0;
		break;
	}
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int ents_remove(struct ents *s, const char *dir, const char *name, uint64_t version,
		struct ent_info *out)
{
	struct edir *d;
	struct ent **pp;
	int rc = -ENOENT;

	if (!dir || !name_ok(name))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	d = dir_find(s, dir);
	pp = edir_find(d, s->hash(name), name);
	if (pp) {
		ent_to_info(*pp, out);
		if ((*pp)->version > version) {
			rc = -ESTALE;
		} else {
			edir_delete(s, d, pp);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int ents_list(struct ents *s, const char *dir, uint64_t *cursor, unsigned max, bool *done,
	      ents_fill_fn fill, void *arg)
{
	struct ent_info info;
	struct edir *d;
	struct ent *e, *f;
	uint64_t c = *cursor;
	unsigned n = 0;

	if (!dir || !max)
		return -EINVAL;
	*done = true;
	pthread_mutex_lock(&s->lock);
	d = dir_find(s, dir);
	if (!d || !d->b)
		goto out;
	for (uint64_t i = edir_idx(d, c); i < edir_nb(d); i++) {
		/* only the first chain can hold names below the cursor */
		for (e = d->b[i]; e;) {
			unsigned g = 0;

			if (e->hash < c) {
				e = e->next;
				continue;
			}
			/* e starts a group of equal hashes (contiguous): all of it or none */
			for (f = e; f && f->hash == e->hash; f = f->next)
				g++;
			if (n > 0 && (uint64_t)n + g > max) {
				*cursor = e->hash;
				*done = false;
				goto out;
			}
			for (; e != f; e = e->next) {
				ent_to_info(e, &info);
				fill(arg, ent_name(e), &info);
				n++;
			}
		}
	}
out:
	if (*done)
		*cursor = UINT64_MAX;
	pthread_mutex_unlock(&s->lock);
	return (int)n;
}

int ents_foreach(struct ents *s, ents_visit_fn fn, void *arg)
{
	struct ent_info info;
	struct edir *d;
	struct ent *e;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	for (d = s->dir_list; d && !rc; d = d->next) {
		for (uint64_t i = 0; i < edir_nb(d) && !rc; i++) {
			for (e = d->b[i]; e && !rc; e = e->next) {
				ent_to_info(e, &info);
				rc = fn(arg, d->path, ent_name(e), &info);
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* Is path dir itself or below it? */
static bool path_under(const char *path, size_t plen, const char *dir, size_t dlen)
{
	if (dlen == 0)
		return true;
	return plen >= dlen && memcmp(path, dir, dlen) == 0 && (plen == dlen || path[dlen] == '/');
}

void ents_drop_dir(struct ents *s, const char *dir)
{
	struct edir *d, *next;
	size_t dlen;

	if (!dir)
		return;
	dlen = strlen(dir);
	pthread_mutex_lock(&s->lock);
	for (d = s->dir_list; d; d = next) {
		next = d->next;
		if (path_under(d->path, d->pathlen, dir, dlen)) {
			s->count -= d->count;
			edir_unlink(s, d);
			edir_free(d);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/* Move every entry of src into dst (both linked): on a name in both, the higher version stays.
 * src is emptied, unlinked and freed. */
static void edir_merge(struct ents *s, struct edir *dst, struct edir *src)
{
	struct ent *e, *next, **pp;

	for (uint64_t i = 0; i < edir_nb(src); i++) {
		for (e = src->b[i]; e; e = next) {
			next = e->next;
			src->count--;
			s->count--;
			pp = edir_find(dst, e->hash, ent_name(e));
			if (pp && (*pp)->version >= e->version) {
				free(e);
			} else if (pp) {
				/* in place of the older one: dst keeps its count */
				e->next = (*pp)->next;
				free(*pp);
				*pp = e;
			} else if (edir_insert(s, dst, e)) {
				free(e); /* cannot happen: dst has a bucket array */
			}
		}
		src->b[i] = NULL;
	}
	edir_unlink(s, src);
	edir_free(src);
}

void ents_rename_dir(struct ents *s, const char *from, const char *to)
{
	struct edir *d, *next, *nd, *dst;
	size_t flen, tlen;
	char *path;

	if (!from || !to)
		return;
	flen = strlen(from);
	tlen = strlen(to);
	/* either one inside the other: not a rename the filesystem allows */
	if (path_under(to, tlen, from, flen) || path_under(from, flen, to, tlen))
		return;
	pthread_mutex_lock(&s->lock);
	for (d = s->dir_list; d; d = next) {
		size_t rest;

		next = d->next;
		if (!path_under(d->path, d->pathlen, from, flen))
			continue;
		/* New directories go to the head of the list, behind the walk: none is under from
		 * anyway, since to is not. */
		rest = d->pathlen - flen;
		path = malloc(tlen + rest + 1);
		if (!path)
			continue;
		memcpy(path, to, tlen);
		memcpy(path + tlen, d->path + flen, rest + 1);
		dst = dir_find(s, path);
		if (dst) {
			edir_merge(s, dst, d);
		} else {
			nd = edir_alloc(path, tlen + rest);
			if (nd && edir_link(s, nd) == 0) {
				nd->b = d->b;
				nd->bits = d->bits;
				nd->count = d->count;
				d->b = NULL;
				d->count = 0;
				edir_unlink(s, d);
				edir_free(d);
			} else {
				free(nd);
			}
		}
		free(path);
	}
	pthread_mutex_unlock(&s->lock);
}

uint64_t ents_count(struct ents *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->count;
	pthread_mutex_unlock(&s->lock);
	return n;
}
