/*
 * memfs: kvcache-memfs, a trivial in-memory libfuse filesystem, the baseline that
 * kvcache-bench compares kvcachefs against.
 *
 * It runs with exactly the FUSE settings of kvcachefs (fs/fuse_conf.h: request sizes, direct
 * I/O, thread loop, timeouts), so that the difference between the two measures what the
 * kvcachefs store costs and nothing else. Everything here is as simple as it can be while
 * staying fast enough not to be the bottleneck of the benchmark:
 *
 *  - every file and directory is a struct mnode; its FUSE node id is its address (the root is
 *    FUSE_ROOT_ID), as in libfuse's passthrough_ll. A node lives while it is linked in the
 *    tree, known to the kernel (nlookup > 0) or open, so an id is never reused while the
 *    kernel may still use it;
 *  - names sit in one global hash table keyed by (parent, name); each directory also keeps a
 *    list of its children for readdir (offset = position in that list);
 *  - file data is one malloc'ed buffer per file that doubles when a write goes past its end
 *    (malloc keeps freed buffers for reuse, see memfs_setup); read replies straight from it
 *    (fuse_reply_buf), the only copy is the kernel's;
 *  - one global rwlock (`lock`) protects everything: read, getattr, readdir and statfs take
 *    it shared, so concurrent reads do not serialize; every other operation takes it
 *    exclusively.
 *
 * Usage: kvcache-memfs [-f] [-d] [-o opt,...] MOUNTPOINT. Without -f the process forks
 * before mounting and the parent exits 0 only once the child reports that the mount is
 * ready (non-zero if it failed). SIGINT/SIGTERM unmount.
 */
#include "fs/daemonize.h"
#include "fs/fuse_conf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define MEMFS_MIN_CAP 64

struct mnode {
	struct mnode *parent;		   /* NULL once unlinked */
	char *name;			   /* NULL for the root and once unlinked */
	struct mnode *hnext;		   /* chain in the name hash table */
	struct mnode *sib_prev, *sib_next; /* in the parent's list of children */
	struct mnode *all_prev, *all_next; /* every live node, freed at exit */
	struct mnode *children;		   /* directories: first child */
	uint64_t nchildren;
	uint64_t nlookup; /* references the kernel holds (entries replied, not forgotten) */
	uint64_t nopen;	  /* open file handles */
	bool linked;	  /* reachable by name (the root always is) */
	mode_t mode;
	nlink_t nlink;
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime, ctime;
	char *data; /* regular files: cap bytes, the first size of them valid */
	size_t size, cap;
};

struct memfs {
	pthread_rwlock_t lock; /* protects everything below and every mnode */
	struct mnode root;
	struct mnode **buckets; /* name hash table, nbuckets a power of two */
	size_t nbuckets, nnames;
	uint64_t nnodes;
	uint64_t bytes; /* sum of the data buffers' capacities */
};

static struct memfs memfs;

/* ---- nodes and names ------------------------------------------------------------------- */

static struct mnode *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &memfs.root : (struct mnode *)(uintptr_t)ino;
}

static fuse_ino_t ino_of(const struct mnode *n)
{
	return n == &memfs.root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static size_t name_hash(const struct mnode *parent, const char *name)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)parent;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (size_t)(h ^ (h >> 29));
}

static struct mnode *name_find(const struct mnode *parent, const char *name)
{
	struct mnode *n = memfs.buckets[name_hash(parent, name) & (memfs.nbuckets - 1)];

	for (; n; n = n->hnext)
		if (n->parent == parent && !strcmp(n->name, name))
			return n;
	return NULL;
}

/* Double the table when it holds more names than buckets. Failure to grow is harmless. */
static void name_table_grow(void)
{
	size_t nb = memfs.nbuckets * 2;
	struct mnode **b = calloc(nb, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < memfs.nbuckets; i++) {
		struct mnode *n = memfs.buckets[i], *next;

		for (; n; n = next) {
			size_t h = name_hash(n->parent, n->name) & (nb - 1);

			next = n->hnext;
			n->hnext = b[h];
			b[h] = n;
		}
	}
	free(memfs.buckets);
	memfs.buckets = b;
	memfs.nbuckets = nb;
}

static void name_link(struct mnode *parent, struct mnode *n)
{
	size_t h;

	if (memfs.nnames >= memfs.nbuckets)
		name_table_grow();
	h = name_hash(parent, n->name) & (memfs.nbuckets - 1);
	n->parent = parent;
	n->hnext = memfs.buckets[h];
	memfs.buckets[h] = n;
	n->sib_prev = NULL;
	n->sib_next = parent->children;
	if (parent->children)
		parent->children->sib_prev = n;
	parent->children = n;
	parent->nchildren++;
	n->linked = true;
	memfs.nnames++;
}

static void name_unlink(struct mnode *n)
{
	struct mnode *parent = n->parent;
	struct mnode **pp = &memfs.buckets[name_hash(parent, n->name) & (memfs.nbuckets - 1)];

	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	if (n->sib_prev)
		n->sib_prev->sib_next = n->sib_next;
	else
		parent->children = n->sib_next;
	if (n->sib_next)
		n->sib_next->sib_prev = n->sib_prev;
	parent->nchildren--;
	n->parent = NULL;
	n->linked = false;
	free(n->name);
	n->name = NULL;
	memfs.nnames--;
}

static void node_free(struct mnode *n)
{
	if (n->all_prev)
		n->all_prev->all_next = n->all_next;
	if (n->all_next)
		n->all_next->all_prev = n->all_prev;
	memfs.bytes -= n->cap;
	memfs.nnodes--;
	free(n->data);
	free(n->name);
	free(n);
}

/* Free n once nothing can reach it: no name, no kernel reference, no open handle. */
static void node_maybe_free(struct mnode *n)
{
	if (n != &memfs.root && !n->linked && !n->nlookup && !n->nopen)
		node_free(n);
}

static struct mnode *node_new(fuse_req_t req, const char *name, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct mnode *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->mode = mode;
	n->nlink = S_ISDIR(mode) ? 2 : 1;
	n->uid = ctx->uid;
	n->gid = ctx->gid;
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	n->atime = n->ctime = n->mtime;
	n->all_prev = &memfs.root;
	n->all_next = memfs.root.all_next;
	if (n->all_next)
		n->all_next->all_prev = n;
	memfs.root.all_next = n;
	memfs.nnodes++;
	return n;
}

/* Make room for at least `need` bytes, doubling; new bytes beyond size are zero. */
static int node_reserve(struct mnode *n, size_t need)
{
	size_t cap = n->cap ? n->cap : MEMFS_MIN_CAP;
	char *d;

	if (need <= n->cap)
		return 0;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			return -EFBIG;
		cap *= 2;
	}
	d = realloc(n->data, cap);
	if (!d)
		return -ENOSPC;
	memfs.bytes += cap - n->cap;
	n->data = d;
	n->cap = cap;
	return 0;
}

/* Set the file size, zero-filling when it grows. */
static int node_resize(struct mnode *n, size_t size)
{
	int ret;

	if (size > n->size) {
		ret = node_reserve(n, size);
		if (ret)
			return ret;
		memset(n->data + n->size, 0, size - n->size);
	}
	n->size = size;
	return 0;
}

static void node_stat(const struct mnode *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino_of(n);
	st->st_mode = n->mode;
	st->st_nlink = n->nlink;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_size = (off_t)n->size;
	st->st_blocks = (blkcnt_t)(n->cap / 512);
	st->st_blksize = KVC_FUSE_MAX_IO;
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
}

/* Fill an entry for n and count the kernel's new reference. Called with the lock held. */
static void node_entry(struct mnode *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = ino_of(n);
	e->generation = 1;
	e->attr_timeout = KVC_FUSE_ATTR_TIMEOUT;
	e->entry_timeout = KVC_FUSE_ENTRY_TIMEOUT;
	node_stat(n, &e->attr);
	n->nlookup++;
}

static void touch(struct timespec *a, struct timespec *b)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	*a = now;
	if (b)
		*b = now;
}

/* ---- FUSE operations ------------------------------------------------------------------- */

static void memfs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	kvc_fuse_conn_init(conn);
}

static void memfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct mnode *n;

	pthread_rwlock_wrlock(&memfs.lock);
	n = name_find(node_of(parent), name);
	if (n)
		node_entry(n, &e);
	pthread_rwlock_unlock(&memfs.lock);
	if (n)
		fuse_reply_entry(req, &e);
	else
		fuse_reply_err(req, ENOENT);
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct mnode *n = node_of(ino);

	n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
	node_maybe_free(n);
}

static void memfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	pthread_rwlock_wrlock(&memfs.lock);
	forget_one(ino, nlookup);
	pthread_rwlock_unlock(&memfs.lock);
	fuse_reply_none(req);
}

static void memfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	pthread_rwlock_wrlock(&memfs.lock);
	for (size_t i = 0; i < count; i++)
		forget_one(forgets[i].ino, forgets[i].nlookup);
	pthread_rwlock_unlock(&memfs.lock);
	fuse_reply_none(req);
}

static void memfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	pthread_rwlock_rdlock(&memfs.lock);
	node_stat(node_of(ino), &st);
	pthread_rwlock_unlock(&memfs.lock);
	fuse_reply_attr(req, &st, KVC_FUSE_ATTR_TIMEOUT);
}

static void memfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			  struct fuse_file_info *fi)
{
	struct mnode *n = node_of(ino);
	struct stat st;
	int ret = 0;

	(void)fi;
	pthread_rwlock_wrlock(&memfs.lock);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (S_ISDIR(n->mode))
			ret = -EISDIR;
		else if (attr->st_size < 0)
			ret = -EINVAL;
		else
			ret = node_resize(n, (size_t)attr->st_size);
		if (!ret)
			touch(&n->mtime, &n->ctime);
	}
	if (!ret) {
		if (to_set & FUSE_SET_ATTR_MODE)
			n->mode = (n->mode & S_IFMT) | (attr->st_mode & 07777);
		if (to_set & FUSE_SET_ATTR_UID)
			n->uid = attr->st_uid;
		if (to_set & FUSE_SET_ATTR_GID)
			n->gid = attr->st_gid;
		if (to_set & FUSE_SET_ATTR_ATIME)
			n->atime = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			touch(&n->atime, NULL);
		if (to_set & FUSE_SET_ATTR_MTIME)
			n->mtime = attr->st_mtim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			touch(&n->mtime, NULL);
		if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
			touch(&n->ctime, NULL);
		node_stat(n, &st);
	}
	pthread_rwlock_unlock(&memfs.lock);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, KVC_FUSE_ATTR_TIMEOUT);
}

/* Create a named node under parent; on success *out holds a kernel reference. */
static int make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     struct fuse_entry_param *e, struct mnode **out)
{
	struct mnode *p = node_of(parent), *n;

	if (!S_ISDIR(p->mode) || !p->linked)
		return -ENOENT;
	if (name_find(p, name))
		return -EEXIST;
	n = node_new(req, name, mode);
	if (!n)
		return -ENOMEM;
	name_link(p, n);
	if (S_ISDIR(mode))
		p->nlink++;
	touch(&p->mtime, &p->ctime);
	node_entry(n, e);
	if (out)
		*out = n;
	return 0;
}

static void memfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	int ret;

	pthread_rwlock_wrlock(&memfs.lock);
	ret = make_node(req, parent, name, S_IFDIR | (mode & 07777), &e, NULL);
	pthread_rwlock_unlock(&memfs.lock);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

static void memfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct mnode *n = NULL;
	int ret;

	pthread_rwlock_wrlock(&memfs.lock);
	ret = make_node(req, parent, name, S_IFREG | (mode & 07777), &e, &n);
	if (!ret)
		n->nopen++;
	pthread_rwlock_unlock(&memfs.lock);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	kvc_fuse_file_info_init(fi);
	if (fuse_reply_create(req, &e, fi)) {
		/* the request was interrupted: the kernel holds neither the entry nor the file */
		pthread_rwlock_wrlock(&memfs.lock);
		n->nopen--;
		forget_one(e.ino, 1);
		pthread_rwlock_unlock(&memfs.lock);
	}
}

static void memfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mnode *n = node_of(ino);
	int ret = 0;

	pthread_rwlock_wrlock(&memfs.lock);
	if (S_ISDIR(n->mode)) {
		ret = -EISDIR;
	} else {
		if (fi->flags & O_TRUNC) {
			n->size = 0;
			touch(&n->mtime, &n->ctime);
		}
		n->nopen++;
	}
	pthread_rwlock_unlock(&memfs.lock);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	kvc_fuse_file_info_init(fi);
	if (fuse_reply_open(req, fi)) {
		pthread_rwlock_wrlock(&memfs.lock);
		n->nopen--;
		node_maybe_free(n);
		pthread_rwlock_unlock(&memfs.lock);
	}
}

/* Reply from the file's buffer under the shared lock: a concurrent write cannot move it. */
static void memfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct mnode *n = node_of(ino);

	(void)fi;
	pthread_rwlock_rdlock(&memfs.lock);
	if (off < 0 || (size_t)off >= n->size)
		size = 0;
	else if (size > n->size - (size_t)off)
		size = n->size - (size_t)off;
	fuse_reply_buf(req, size ? n->data + off : NULL, size);
	pthread_rwlock_unlock(&memfs.lock);
}

static void memfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct mnode *n = node_of(ino);
	size_t end;
	int ret = 0;

	pthread_rwlock_wrlock(&memfs.lock);
	if (off < 0 || (size_t)off > SIZE_MAX - size) {
		ret = -EFBIG;
		goto out;
	}
	if (fi->flags & O_APPEND)
		off = (off_t)n->size;
	end = (size_t)off + size;
	if (end > n->size) {
		ret = node_resize(n, end);
		if (ret)
			goto out;
	}
	if (size)
		memcpy(n->data + off, buf, size);
	touch(&n->mtime, &n->ctime);
out:
	pthread_rwlock_unlock(&memfs.lock);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_write(req, size);
}

static void memfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mnode *n = node_of(ino);

	(void)fi;
	pthread_rwlock_wrlock(&memfs.lock);
	n->nopen--;
	node_maybe_free(n);
	pthread_rwlock_unlock(&memfs.lock);
	fuse_reply_err(req, 0);
}

static int remove_name(fuse_ino_t parent, const char *name, bool dir)
{
	struct mnode *p = node_of(parent), *n = name_find(p, name);

	if (!n)
		return -ENOENT;
	if (dir && !S_ISDIR(n->mode))
		return -ENOTDIR;
	if (!dir && S_ISDIR(n->mode))
		return -EISDIR;
	if (dir && n->nchildren)
		return -ENOTEMPTY;
	name_unlink(n);
	if (dir)
		p->nlink--;
	n->nlink = 0;
	touch(&p->mtime, &p->ctime);
	touch(&n->ctime, NULL);
	node_maybe_free(n);
	return 0;
}

static void remove_reply(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
	int ret;

	pthread_rwlock_wrlock(&memfs.lock);
	ret = remove_name(parent, name, dir);
	pthread_rwlock_unlock(&memfs.lock);
	fuse_reply_err(req, -ret);
}

static void memfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_reply(req, parent, name, false);
}

static void memfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_reply(req, parent, name, true);
}

/* Offsets: 1 after ".", 2 after "..", 2 + k after the k-th child in list order. */
static void memfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	struct mnode *d = node_of(ino), *c;
	char *buf;
	size_t used = 0, len;
	struct stat st = {0};
	off_t pos;

	(void)fi;
	if (!S_ISDIR(d->mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_rwlock_rdlock(&memfs.lock);
	for (pos = off; pos < 2; pos++) {
		const struct mnode *t = pos == 0 || !d->parent ? d : d->parent;

		st.st_ino = ino_of(t);
		st.st_mode = S_IFDIR;
		len =
		    fuse_add_direntry(req, buf + used, size - used, pos ? ".." : ".", &st, pos + 1);
		if (len > size - used)
			goto full;
		used += len;
	}
	c = d->children;
	for (off_t k = 2; c && k < pos; k++)
		c = c->sib_next;
	for (; c; c = c->sib_next, pos++) {
		st.st_ino = ino_of(c);
		st.st_mode = c->mode;
		len = fuse_add_direntry(req, buf + used, size - used, c->name, &st, pos + 1);
		if (len > size - used)
			break;
		used += len;
	}
full:
	pthread_rwlock_unlock(&memfs.lock);
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void memfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	struct statvfs v;
	uint64_t used;

	(void)ino;
	memset(&v, 0, sizeof(v));
	pthread_rwlock_rdlock(&memfs.lock);
	used = memfs.bytes / 4096;
	v.f_files = memfs.nnodes + 1;
	pthread_rwlock_unlock(&memfs.lock);
	v.f_bsize = 4096;
	v.f_frsize = 4096;
	v.f_blocks = pages > 0 ? (fsblkcnt_t)pages : used;
	v.f_bfree = v.f_blocks > used ? v.f_blocks - used : 0;
	v.f_bavail = v.f_bfree;
	v.f_files += v.f_bfree;
	v.f_ffree = v.f_bfree;
	v.f_favail = v.f_ffree;
	v.f_namemax = 255;
	fuse_reply_statfs(req, &v);
}

static const struct fuse_lowlevel_ops memfs_ops = {
    .init = memfs_init,
    .lookup = memfs_lookup,
    .forget = memfs_forget,
    .forget_multi = memfs_forget_multi,
    .getattr = memfs_getattr,
    .setattr = memfs_setattr,
    .mkdir = memfs_mkdir,
    .unlink = memfs_unlink,
    .rmdir = memfs_rmdir,
    .create = memfs_create,
    .open = memfs_open,
    .read = memfs_read,
    .write = memfs_write,
    .release = memfs_release,
    .readdir = memfs_readdir,
    .statfs = memfs_statfs,
};

/* ---- start-up -------------------------------------------------------------------------- */

static int memfs_setup(void)
{
	/* Keep freed file buffers (up to 32 MiB each, 1 GiB in all) for the next files instead
	 * of handing them back to the kernel: otherwise every block written pays for faulting in
	 * fresh zeroed pages, a cost kvcachefs's preallocated pool does not have, and the write
	 * figures would measure glibc's trimming rather than FUSE. */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
	memfs.nbuckets = 1024;
	memfs.buckets = calloc(memfs.nbuckets, sizeof(*memfs.buckets));
	if (!memfs.buckets)
		return -ENOMEM;
	if (pthread_rwlock_init(&memfs.lock, NULL)) {
		free(memfs.buckets);
		return -ENOMEM;
	}
	memfs.root.mode = S_IFDIR | 0755;
	memfs.root.nlink = 2;
	memfs.root.uid = getuid();
	memfs.root.gid = getgid();
	memfs.root.linked = true;
	clock_gettime(CLOCK_REALTIME, &memfs.root.mtime);
	memfs.root.atime = memfs.root.ctime = memfs.root.mtime;
	return 0;
}

static void memfs_teardown(void)
{
	while (memfs.root.all_next)
		node_free(memfs.root.all_next);
	free(memfs.buckets);
	pthread_rwlock_destroy(&memfs.lock);
}

static void usage(const char *prog, FILE *out)
{
	fprintf(out,
		"usage: %s [-f] [-d] [-o opt,...] MOUNTPOINT\n"
		"A trivial in-memory FUSE filesystem with the FUSE settings of kvcachefs,\n"
		"the baseline of kvcache-bench.\n"
		"  -f         stay in the foreground\n"
		"  -d         FUSE debug output (implies -f)\n"
		"  -o OPTS    extra mount options, passed to FUSE\n"
		"  -h         this help\n",
		prog);
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	const char *user_opts = NULL;
	struct fuse_conn_info probe = {0};
	char mnt[PATH_MAX], opts[1200], max_read[32] = "";
	bool foreground = false, debug = false;
	int ready_fd = -1, status = 1, c;

	while ((c = getopt(argc, argv, "+fdo:h")) != -1) {
		switch (c) {
		case 'f':
			foreground = true;
			break;
		case 'd':
			debug = foreground = true;
			break;
		case 'o':
			user_opts = optarg;
			break;
		case 'h':
			usage(argv[0], stdout);
			return 0;
		default:
			usage(argv[0], stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(argv[0], stderr);
		return 2;
	}
	if (!realpath(argv[optind], mnt)) {
		fprintf(stderr, "kvcache-memfs: mountpoint %s: %s\n", argv[optind],
			strerror(errno));
		return 1;
	}
	/* libfuse >= 3.14 refuses an init() whose max_read differs from the max_read mount
	 * option, so pass the one the shared settings negotiate (if any). */
	kvc_fuse_conn_init(&probe);
	if (probe.max_read)
		snprintf(max_read, sizeof(max_read), ",max_read=%u", probe.max_read);
	snprintf(opts, sizeof(opts),
		 "fsname=kvcache-memfs,subtype=kvcache-memfs,default_permissions%s%s%s", max_read,
		 user_opts ? "," : "", user_opts ? user_opts : "");

	if (!foreground && (c = daemonize_start(&ready_fd)) < 0) {
		fprintf(stderr, "kvcache-memfs: cannot fork: %s\n", strerror(-c));
		return 1;
	}
	if (memfs_setup() < 0) {
		fprintf(stderr, "kvcache-memfs: out of memory\n");
		goto out;
	}
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, opts) || (debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, "kvcache-memfs: out of memory\n");
		goto out_fs;
	}
	se = fuse_session_new(&args, &memfs_ops, sizeof(memfs_ops), NULL);
	if (!se) {
		fprintf(stderr, "kvcache-memfs: invalid mount options '%s'\n", opts);
		goto out_fs;
	}
	if (fuse_set_signal_handlers(se) != 0) {
		fprintf(stderr, "kvcache-memfs: cannot install signal handlers\n");
		goto out_fs;
	}
	if (fuse_session_mount(se, mnt) != 0) {
		fprintf(stderr, "kvcache-memfs: cannot mount on %s\n", mnt);
		goto out_signals;
	}
	if (ready_fd >= 0) {
		daemonize_ready(ready_fd);
		ready_fd = -1;
	}
	status = kvc_fuse_loop(se) == 0 ? 0 : 1;
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_fs:
	if (se)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	memfs_teardown();
out:
	if (ready_fd >= 0)
		daemonize_fail(ready_fd);
	return status;
}
