/*
 * ops: the FUSE low-level operations table, the spine of the filesystem (see ops.h).
 *
 * Blocks are opened with direct I/O: every read and write reaches the daemon whole, so an
 * error (EFBIG, ENOSPC) is returned by the write() that caused it, never later. Reads of a
 * sealed block reply straight from the pool mapping: the only copy is the kernel's into the
 * reader's buffer. Attributes of a block being written are never cached by the kernel
 * (timeout 0): they change with every write and at the seal.
 */
#include "fs/ops.h"
#include "fs/cluster.h"
#include "fs/log.h"
#include "fs/remote.h"
#include "fs/side.h"
#include "fs/uapi/kvcachefs.h"
#include "meta/namespace.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define XATTR_PREFIX "user.kvcachefs."

/* An open directory: the readdir snapshot and the side-channel slots made through it. */
struct dirh {
	struct ns_dir dir;
	struct remote_dir *rdir; /* cluster: the blocks, listed across members */
	size_t nlocal;		 /* cluster: entries of dir listed before them (directories) */
	struct side_owner owner;
	struct dirh *prev, *next; /* kvc_fs.dirs, under kvc_fs.dirs_lock */
};

/* Open directories are listed so that shutdown frees those whose RELEASEDIR the kernel never
 * sent (an unmount right after a close() races with the asynchronous release). */
static void dirh_link(struct kvc_fs *fs, struct dirh *d)
{
	pthread_mutex_lock(&fs->dirs_lock);
	d->prev = NULL;
	d->next = fs->dirs;
	if (fs->dirs)
		fs->dirs->prev = d;
	fs->dirs = d;
	pthread_mutex_unlock(&fs->dirs_lock);
}

static void dirh_free(struct kvc_fs *fs, struct dirh *d)
{
	pthread_mutex_lock(&fs->dirs_lock);
	if (d->prev)
		d->prev->next = d->next;
	else
		fs->dirs = d->next;
	if (d->next)
		d->next->prev = d->prev;
	pthread_mutex_unlock(&fs->dirs_lock);
	ns_dir_free(&d->dir);
	remote_closedir(d->rdir);
	free(d);
}

static struct ns *req_ns(fuse_req_t req)
{
	return ((struct kvc_fs *)fuse_req_userdata(req))->ns;
}

static struct timespec ns_to_ts(int64_t t)
{
	return (struct timespec){.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
}

static void attr_to_stat(const struct ns_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)(a->alloc_bytes / 512);
	st->st_blksize = KVC_FUSE_MAX_IO;
	st->st_atim = ns_to_ts(a->atime_ns);
	st->st_mtim = ns_to_ts(a->mtime_ns);
	st->st_ctim = ns_to_ts(a->ctime_ns);
}

static double attr_timeout(const struct ns_attr *a)
{
	return a->writing ? 0.0 : KVC_FUSE_ATTR_TIMEOUT;
}

static void entry_from_attr(const struct ns_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->generation = a->generation;
	attr_to_stat(a, &e->attr);
	e->attr_timeout = attr_timeout(a);
	e->entry_timeout = KVC_FUSE_ENTRY_TIMEOUT;
}

static void reply_entry_or_err(fuse_req_t req, int ret, const struct ns_attr *a)
{
	struct fuse_entry_param e;

	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	entry_from_attr(a, &e);
	if (fuse_reply_entry(req, &e) == -ENOENT) /* interrupted: the kernel took no ref */
		ns_forget(req_ns(req), a->ino, 1);
}

/* ---- open files: local blocks, and other nodes' blocks streamed ------------------------- */

/* fi->fh: a struct ns_handle, or a struct remote_stream tagged with FH_STREAM. */
#define FH_STREAM ((uint64_t)1)
/* A streamed read's pipe: the most a process may make without CAP_SYS_RESOURCE by default
 * (pipe-max-size), and as large as the replies (KVC_FUSE_STREAM_READ). */
#define STREAM_PIPE_SIZE KVC_FUSE_MAX_IO

static struct remote_stream *fh_remote(const struct fuse_file_info *fi)
{
	return fi->fh & FH_STREAM ? (struct remote_stream *)(uintptr_t)(fi->fh & ~FH_STREAM) : NULL;
}

static struct ns_handle *fh_handle(const struct fuse_file_info *fi)
{
	return fi->fh & FH_STREAM ? NULL : (struct ns_handle *)(uintptr_t)fi->fh;
}

struct kvc_pipe {
	int fd[2];
};

static void pipe_free(void *arg)
{
	struct kvc_pipe *p = arg;

	close(p->fd[0]);
	close(p->fd[1]);
	free(p);
}

/* A non-blocking pipe of STREAM_PIPE_SIZE: 0 or -errno (EPERM: beyond pipe-max-size). */
static int pipe_make(struct kvc_pipe *p)
{
	if (pipe2(p->fd, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	/* twice the replies where allowed: the socket may fill pipe slots with less than a page */
	if (fcntl(p->fd[1], F_SETPIPE_SZ, 2 * STREAM_PIPE_SIZE) < (int)(2 * STREAM_PIPE_SIZE) &&
	    fcntl(p->fd[1], F_SETPIPE_SZ, STREAM_PIPE_SIZE) < (int)STREAM_PIPE_SIZE) {
		int err = errno ? errno : ENOBUFS;

		close(p->fd[0]);
		close(p->fd[1]);
		return -err;
	}
	return 0;
}

/* This thread's pipe for streamed reads, made at its first use. */
static struct kvc_pipe *thread_pipe(struct kvc_fs *fs)
{
	struct kvc_pipe *p = pthread_getspecific(fs->pipe_key);

	if (p)
		return p;
	if (!(p = malloc(sizeof(*p))))
		return NULL;
	if (pipe_make(p) < 0) {
		free(p);
		return NULL;
	}
	pthread_setspecific(fs->pipe_key, p);
	return p;
}

static void kvc_init(void *userdata, struct fuse_conn_info *conn)
{
	struct kvc_fs *fs = userdata;
	struct kvc_pipe probe;
	bool splice = getenv("KVC_NO_SPLICE") == NULL;

	kvc_fuse_conn_init(conn);
	/* WRITE requests spliced into a pipe, then read from it straight into the block
	 * (kvc_write_buf): one copy of the payload in the daemon instead of two. */
	if (splice && (conn->capable & FUSE_CAP_SPLICE_READ))
		conn->want |= FUSE_CAP_SPLICE_READ;
	/* Replies spliced from a pipe: a read of another node's block goes from the socket to
	 * the reader with one copy (remote_stream_read). Off when a pipe of STREAM_PIPE_SIZE
	 * cannot be made. */
	fs->stream_reads = false;
	if (splice && (conn->capable & FUSE_CAP_SPLICE_WRITE) && pipe_make(&probe) == 0) {
		close(probe.fd[0]);
		close(probe.fd[1]);
		conn->want |= FUSE_CAP_SPLICE_WRITE;
		fs->stream_reads = true;
	}
}

static struct remote *req_remote(fuse_req_t req)
{
	return cluster_remote(((struct kvc_fs *)fuse_req_userdata(req))->cluster);
}

/* Latency of a request (kvc_fs.lat): two vDSO clock reads and two relaxed atomic adds, only
 * when the metrics endpoint is on. The context is taken before the reply, which frees req. */
static uint64_t op_start(const struct kvc_fs *fs)
{
	return fs->timed ? metrics_now_ns() : 0;
}

static void op_done(struct kvc_fs *fs, enum kvc_op op, uint64_t t0)
{
	if (t0)
		metrics_observe(&fs->lat[op], metrics_now_ns() - t0);
}

static void kvc_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kvc_fs *fs = fuse_req_userdata(req);
	uint64_t t0 = op_start(fs);
	struct remote *r = req_remote(req);
	struct ns_attr a;

	reply_entry_or_err(
	    req, r ? remote_lookup(r, parent, name, &a) : ns_lookup(req_ns(req), parent, name, &a),
	    &a);
	op_done(fs, KVC_OP_LOOKUP, t0);
}

static void kvc_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	ns_forget(req_ns(req), ino, nlookup);
	fuse_reply_none(req);
}

static void kvc_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		ns_forget(req_ns(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void kvc_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ns_attr a;
	struct stat st;
	int ret = ns_getattr(req_ns(req), ino, &a);

	(void)fi;
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	attr_to_stat(&a, &st);
	fuse_reply_attr(req, &st, attr_timeout(&a));
}

static int64_t ts_to_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts_to_ns(&ts);
}

static void kvc_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	struct ns_attr in = {0}, out;
	struct stat st;
	unsigned valid = 0;
	int ret;

	if (to_set & FUSE_SET_ATTR_MODE) {
		valid |= NS_SET_MODE;
		in.mode = attr->st_mode;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		valid |= NS_SET_UID;
		in.uid = attr->st_uid;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		valid |= NS_SET_GID;
		in.gid = attr->st_gid;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		valid |= NS_SET_SIZE;
		in.size = (uint64_t)attr->st_size;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
		valid |= NS_SET_ATIME;
		in.atime_ns =
		    (to_set & FUSE_SET_ATTR_ATIME_NOW) ? now_ns() : ts_to_ns(&attr->st_atim);
	}
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		valid |= NS_SET_MTIME;
		in.mtime_ns =
		    (to_set & FUSE_SET_ATTR_MTIME_NOW) ? now_ns() : ts_to_ns(&attr->st_mtim);
	}
	ret = ns_setattr(req_ns(req), ino, fi ? fh_handle(fi) : NULL, valid, &in, &out);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	attr_to_stat(&out, &st);
	fuse_reply_attr(req, &st, attr_timeout(&out));
}

static struct cluster *req_cluster(fuse_req_t req)
{
	return ((struct kvc_fs *)fuse_req_userdata(req))->cluster;
}

/* In a cluster, directories are published in etcd after the local change; if that fails the
 * local change is undone and the op fails with EIO (see fs/cluster.h). */
static void kvc_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct ns *ns = req_ns(req);
	struct ns_attr a;
	int ret = ns_mkdir(ns, parent, name, mode & ~ctx->umask, ctx->uid, ctx->gid, &a);

	if (!ret && req_cluster(req) && cluster_mkdir(req_cluster(req), a.ino, a.mode) < 0) {
		(void)ns_rmdir(ns, parent, name);
		ns_forget(ns, a.ino, 1);
		ret = -EIO;
	}
	reply_entry_or_err(req, ret, &a);
}

static void kvc_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ns *ns = req_ns(req);
	struct ns_attr a;
	char path[4096];
	int ret = req_cluster(req) ? ns_path(ns, parent, path, sizeof(path)) : 0;

	/* blocks held by other nodes keep a directory from being removed, as local ones do */
	if (!ret && req_remote(req) && ns_lookup(ns, parent, name, &a) == 0) {
		ns_forget(ns, a.ino, 1);
		if ((a.mode & S_IFMT) == S_IFDIR)
			ret = -remote_dir_empty(req_remote(req), a.ino);
	}

	if (!ret)
		ret = ns_rmdir(ns, parent, name);
	if (!ret && req_cluster(req) && cluster_rmdir(req_cluster(req), parent, name) < 0) {
		/* still in etcd: put it back here too */
		size_t n = strlen(path);

		snprintf(path + n, sizeof(path) - n, "%s%s", n ? "/" : "", name);
		(void)ns_mkdir_path(ns, path, 0755);
		ret = -EIO;
	}
	fuse_reply_err(req, -ret);
}

static void kvc_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int ret = ns_unlink(req_ns(req), parent, name);

	if (req_remote(req) && (ret == 0 || ret == -ENOENT))
		ret = remote_unlink(req_remote(req), parent, name, ret == 0);
	fuse_reply_err(req, -ret);
}

static void kvc_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	struct ns *ns = req_ns(req);
	struct ns_attr a;
	int ret = 0;

	/* Entries are filed by directory path on their owners: a directory whose tree holds
	 * blocks is not renamed in a cluster (EXDEV: mv copies it instead). */
	if (req_remote(req) && ns_lookup(ns, parent, name, &a) == 0) {
		ns_forget(ns, a.ino, 1);
		if ((a.mode & S_IFMT) == S_IFDIR && remote_tree_empty(req_remote(req), a.ino))
			ret = -EXDEV;
	}
	if (!ret)
		ret = ns_rename(ns, parent, name, newparent, newname, flags);

	if (!ret && req_cluster(req) && ns_lookup(ns, newparent, newname, &a) == 0) {
		ns_forget(ns, a.ino, 1);
		if ((a.mode & S_IFMT) == S_IFDIR &&
		    cluster_rename_dir(req_cluster(req), parent, name, newparent, newname) < 0) {
			(void)ns_rename(ns, newparent, newname, parent, name, 0);
			ret = -EIO;
		} else if ((a.mode & S_IFMT) != S_IFDIR) {
			/* published under the new name (a new version), gone under the old */
			remote_flush(req_remote(req));
			(void)remote_unlink(req_remote(req), parent, name, true);
		}
	}
	fuse_reply_err(req, -ret);
}

/* A request refused because it misuses the store (debug level only): who asked, for what. */
static void misuse(fuse_req_t req, const char *what, const char *name, int err)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "%s%s%s refused (pid %d, uid %u): %s", what, name ? " " : "",
			name ? name : "", (int)ctx->pid, (unsigned)ctx->uid, strerror(err));
}

/* Blocks are immutable data addressed by name: links and special files have no meaning. */
static void kvc_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent;
	misuse(req, "symlink", name, EPERM);
	fuse_reply_err(req, EPERM);
}

static void kvc_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent;
	misuse(req, "hard link", newname, EPERM);
	fuse_reply_err(req, EPERM);
}

static void kvc_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent, (void)mode, (void)rdev;
	misuse(req, "mknod", name, EPERM);
	fuse_reply_err(req, EPERM);
}

static void kvc_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct ns *ns = req_ns(req);
	struct ns_handle *h;
	struct ns_attr a;
	struct fuse_entry_param e;
	int ret;

	ret = ns_create_block(ns, parent, name, mode & ~ctx->umask, ctx->uid, ctx->gid, &a, &h);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)h;
	kvc_fuse_file_info_init(fi);
	entry_from_attr(&a, &e);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) { /* interrupted */
		ns_release(h);
		ns_forget(ns, a.ino, 1);
	}
}

static void kvc_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ns_handle *h;
	int ret = ns_open(req_ns(req), ino, fi->flags, &h);

	/* a block held by other nodes: read it streamed from them, or fetch it here first */
	if (ret == -EREMOTE && req_remote(req)) {
		struct kvc_fs *fs = fuse_req_userdata(req);
		struct remote_stream *rs;

		ret = fs->stream_reads
			  ? remote_stream_open(req_remote(req), ino,
					       fs->read_max ? fs->read_max : KVC_FUSE_MAX_IO, &rs)
			  : -EAGAIN;
		if (!ret) {
			fi->fh = (uintptr_t)rs | FH_STREAM;
			kvc_fuse_file_info_init(fi);
			if (fuse_reply_open(req, fi) == -ENOENT)
				remote_stream_close(rs);
			return;
		}
		if (ret == -EAGAIN)
			ret = remote_fetch(req_remote(req), ino);
		if (!ret || ret == -EEXIST)
			ret = ns_open(req_ns(req), ino, fi->flags, &h);
		if (ret == -EREMOTE)
			ret = -ENOENT;
	}

	if (ret) {
		if (ret == -EPERM) /* blocks are immutable once sealed */
			misuse(req, "open for writing of a sealed block", NULL, EPERM);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)h;
	kvc_fuse_file_info_init(fi);
	if (fuse_reply_open(req, fi) == -ENOENT)
		ns_release(h);
}

/*
 * The reply to a read of a sealed block is staged through a per-thread buffer. Measured on
 * Linux 6.18 (2 cores), the kernel copies a reply into the reader's pages about 30% slower
 * when its source is the shared-memory pool mapping than when it is private anonymous memory
 * (2 MiB reads: 3.3 GB/s direct from the pool, 4.2-4.7 GB/s through a bounce buffer, the
 * user-space copy itself running at ~20 GB/s). Zero-copy readers use the mmap side channel.
 */
static void *read_bounce(struct kvc_fs *fs)
{
	void *b = pthread_getspecific(fs->bounce_key);

	if (!b && posix_memalign(&b, 4096, KVC_FUSE_MAX_IO) == 0)
		pthread_setspecific(fs->bounce_key, b);
	return b;
}

/* A read of another node's block: spliced from the holder's socket into this thread's pipe,
 * checked, then spliced on into the reply. */
static void read_stream(fuse_req_t req, struct kvc_fs *fs, struct remote_stream *rs, size_t size,
			off_t off)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(0);
	struct kvc_pipe *p = thread_pipe(fs);
	ssize_t n;

	n = p ? remote_stream_read(rs, (uint64_t)off, size, p->fd) : -ENOBUFS;
	if (n == -ENOBUFS) { /* no pipe, or too small for what the socket gave: copy it */
		void *buf = malloc(size);

		n = buf ? remote_stream_read_buf(rs, (uint64_t)off, size, buf) : -ENOMEM;
		if (n >= 0)
			fuse_reply_buf(req, buf, (size_t)n);
		else
			fuse_reply_err(req, (int)-n);
		free(buf);
		return;
	}
	if (n <= 0) {
		if (n < 0)
			fuse_reply_err(req, (int)-n);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	bv.buf[0].size = (size_t)n;
	bv.buf[0].flags = FUSE_BUF_IS_FD;
	bv.buf[0].fd = p->fd[0];
	if (fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE) != 0)
		remote_pipe_drain(p->fd[0]); /* not sent (interrupted): empty for the next read */
}

static void kvc_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ns_handle *h = fh_handle(fi);
	struct kvc_fs *fs = fuse_req_userdata(req);
	uint64_t t0 = op_start(fs);
	void *buf = NULL, *bounce;
	const void *ptr;
	ssize_t n;

	(void)ino;
	if (!h) {
		read_stream(req, fs, fh_remote(fi), size, off);
		op_done(fs, KVC_OP_READ, t0);
		return;
	}
	/* Only the writer's own handle copies; readers of sealed blocks get a pool pointer. */
	if (ns_handle_is_writer(h) && !(buf = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		op_done(fs, KVC_OP_READ, t0);
		return;
	}
	n = ns_read(h, (uint64_t)off, size, buf, &ptr);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
	} else {
		if (!buf && n > 0 && (size_t)n <= KVC_FUSE_MAX_IO && (bounce = read_bounce(fs))) {
			memcpy(bounce, ptr, (size_t)n);
			ptr = bounce;
		}
		fuse_reply_buf(req, ptr, (size_t)n);
	}
	free(buf);
	op_done(fs, KVC_OP_READ, t0);
}

static void kvc_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct kvc_fs *fs = fuse_req_userdata(req);
	uint64_t t0 = op_start(fs);
	struct ns_handle *h = fh_handle(fi);
	ssize_t n = h ? ns_write(h, (uint64_t)off, buf, size) : -EBADF;

	(void)ino;
	if (n == -EFBIG)
		misuse(req, "write beyond --max-block-size", NULL, EFBIG);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
	op_done(fs, KVC_OP_WRITE, t0);
}

/* The bytes of a WRITE request, wherever libfuse has them (memory, or a pipe when the kernel
 * spliced the request): one copy into the block. */
static int copy_bufv(void *arg, void *dst, size_t len)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(len);
	ssize_t n;

	out.buf[0].mem = dst;
	n = fuse_buf_copy(&out, arg, 0);
	return n < 0 ? (int)n : (size_t)n == len ? 0 : -EIO;
}

static void kvc_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off,
			  struct fuse_file_info *fi)
{
	struct kvc_fs *fs = fuse_req_userdata(req);
	uint64_t t0 = op_start(fs);
	struct ns_handle *h = fh_handle(fi);
	ssize_t n =
	    h ? ns_write_fill(h, (uint64_t)off, fuse_buf_size(bufv), copy_bufv, bufv) : -EBADF;

	(void)ino;
	if (n == -EFBIG)
		misuse(req, "write beyond --max-block-size", NULL, EFBIG);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
	op_done(fs, KVC_OP_WRITE, t0);
}

/* One close() of an fd: the writer may go on through a dup (dd, shell redirections), so
 * the block is sealed at release, the last close; flush records it as it is (it survives a
 * crash before that release) and reports a discarded block. */
static void kvc_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ns_handle *h = fh_handle(fi);
	int ret = h ? ns_flush(h) : 0;

	(void)ino;
	if (!ret && h && req_remote(req) && ns_handle_is_writer(h))
		remote_pending(req_remote(req), ns_handle_parent(h), ns_handle_name(h));
	fuse_reply_err(req, -ret);
}

static void kvc_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync;
	fuse_reply_err(req, fh_remote(fi) ? 0 : -ns_seal(fh_handle(fi)));
}

static void kvc_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ns_handle *h = fh_handle(fi);
	bool writer;

	(void)ino;
	if (!h) {
		remote_stream_close(fh_remote(fi));
		fuse_reply_err(req, 0);
		return;
	}
	writer = ns_handle_is_writer(h);
	ns_release(h);
	/* the block is sealed: its owners learn of it before the release is answered */
	if (writer && req_remote(req))
		remote_flush(req_remote(req));
	fuse_reply_err(req, 0);
}

static void kvc_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirh *d = calloc(1, sizeof(*d));
	int ret;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = ns_opendir(req_ns(req), ino, &d->dir);
	if (!ret && req_remote(req)) {
		ret = remote_opendir(req_remote(req), ino, &d->rdir);
		if (ret)
			ns_dir_free(&d->dir);
	}
	if (ret) {
		free(d);
		fuse_reply_err(req, -ret);
		return;
	}
	if (d->rdir) { /* the directories from here, the blocks from the members */
		size_t k = 0;

		for (size_t j = 0; j < d->dir.count; j++)
			if ((d->dir.ents[j].mode & S_IFMT) == S_IFDIR)
				d->dir.ents[k++] = d->dir.ents[j];
		d->dir.count = k;
	}
	fi->fh = (uintptr_t)d;
	dirh_link(fuse_req_userdata(req), d);
	if (fuse_reply_open(req, fi) == -ENOENT)
		dirh_free(fuse_req_userdata(req), d);
}

/* A readdir reply being filled. */
struct dirfill {
	fuse_req_t req;
	char *p;
	size_t left;
	uint64_t base; /* FUSE offset of remote position 0 */
};

static int dirfill_add(void *arg, const char *name, uint64_t ino, uint32_t mode, uint64_t next)
{
	struct dirfill *f = arg;
	struct stat st = {.st_ino = ino, .st_mode = mode};
	size_t need = fuse_add_direntry(f->req, f->p, f->left, name, &st, (off_t)(f->base + next));

	if (need > f->left)
		return 1;
	f->p += need;
	f->left -= need;
	return 0;
}

static void kvc_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct dirh *dh = (struct dirh *)(uintptr_t)fi->fh;
	struct ns_dir *d = &dh->dir;
	char *buf, *p;
	size_t left = size, k;
	int ret;

	if (off == 0 && d->ents && !dh->rdir) { /* rewinddir: take a fresh snapshot */
		struct ns_dir fresh;

		ret = ns_opendir(req_ns(req), ino, &fresh);
		if (ret) {
			fuse_reply_err(req, -ret);
			return;
		}
		ns_dir_free(d);
		*d = fresh;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p = buf;
	for (k = (size_t)off; k < d->count; k++) {
		struct stat st = {.st_ino = d->ents[k].ino, .st_mode = d->ents[k].mode};
		size_t need = fuse_add_direntry(req, p, left, d->ents[k].name, &st, (off_t)(k + 1));

		if (need > left)
			break;
		p += need;
		left -= need;
	}
	if (dh->rdir && k >= d->count) {
		/* then the blocks, page by page from each member */
		struct dirfill f = {req, p, left, d->count};
		uint64_t pos = (uint64_t)off > d->count ? (uint64_t)off - d->count : 0;

		ret = remote_readdir(req_remote(req), dh->rdir, pos, dirfill_add, &f);
		if (ret < 0 && f.left == left) {
			free(buf);
			fuse_reply_err(req, -ret);
			return;
		}
		left = f.left;
	}
	fuse_reply_buf(req, buf, size - left);
	free(buf);
}

static void kvc_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;

	(void)ino;
	side_owner_release(((struct kvc_fs *)fuse_req_userdata(req))->side, &d->owner);
	dirh_free(fuse_req_userdata(req), d);
	fuse_reply_err(req, 0);
}

static void kvc_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct kvcachefs_status s;
	struct kvcachefs_tiers t;
	struct statvfs v;

	(void)ino;
	ns_status(req_ns(req), &s);
	ns_tiers(req_ns(req), &t);
	memset(&v, 0, sizeof(v));
	v.f_bsize = 4096;
	v.f_frsize = 4096;
	/* both tiers: DRAM and SSD */
	v.f_blocks = (s.capacity + t.ssd_capacity) / 4096;
	v.f_bfree = (s.free + t.ssd_capacity - t.ssd_used) / 4096;
	v.f_bavail = v.f_bfree;
	v.f_files = s.capacity / 4096; /* a block takes at least one page */
	v.f_ffree = v.f_files > s.blocks + s.writing ? v.f_files - s.blocks - s.writing : 0;
	v.f_favail = v.f_ffree;
	v.f_namemax = 255;
	fuse_reply_statfs(req, &v);
}

/* ---- extended attributes: read-only views of a block's state ------------------------------ */

static const char *const xattr_names[] = {
    XATTR_PREFIX "tier",	XATTR_PREFIX "state",	 XATTR_PREFIX "refs",
    XATTR_PREFIX "last_access", XATTR_PREFIX "replicas", XATTR_PREFIX "holders",
};
#define XATTR_DIR_FIRST	  4 /* a directory has replicas only */
#define XATTR_CLUSTER_END 6 /* holders: cluster only */

/* Format attribute `name` of a block into val; length, or -ENODATA. */
static int xattr_value(const struct ns_block_info *bi, const char *name, char *val, size_t cap)
{
	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0)
		return -ENODATA;
	name += strlen(XATTR_PREFIX);
	if (!strcmp(name, "replicas"))
		return snprintf(val, cap, "%u", bi->replicas);
	if (bi->is_dir)
		return -ENODATA;
	if (!strcmp(name, "tier"))
		return snprintf(val, cap, "%s",
				bi->remote   ? "remote"
				: bi->on_ssd ? "ssd"
					     : "dram");
	if (!strcmp(name, "state"))
		return snprintf(val, cap, "%s", bi->sealed ? "sealed" : "writing");
	if (!strcmp(name, "refs"))
		return snprintf(val, cap, "%" PRIu32, bi->refs);
	if (!strcmp(name, "last_access"))
		return snprintf(val, cap, "%" PRId64 ".%09" PRId64, bi->last_access_ns / 1000000000,
				bi->last_access_ns % 1000000000);
	return -ENODATA;
}

static void reply_xattr_buf(fuse_req_t req, const char *val, size_t len, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, len);
}

static void kvc_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ns_block_info bi;
	char val[256];
	int ret = ns_block_info(req_ns(req), ino, &bi);

	if (!ret && !strcmp(name, XATTR_PREFIX "holders"))
		ret = !req_remote(req) || bi.is_dir
			  ? -ENODATA
			  : remote_holders(req_remote(req), ino, val, sizeof(val));
	else if (!ret)
		ret = xattr_value(&bi, name, val, sizeof(val));
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		reply_xattr_buf(req, val, (size_t)ret, size);
}

static void kvc_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ns_block_info bi;
	char list[256];
	size_t len = 0;
	int ret = ns_block_info(req_ns(req), ino, &bi);

	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	for (size_t k = bi.is_dir ? XATTR_DIR_FIRST : 0;
	     k < (bi.is_dir || !req_remote(req) ? XATTR_DIR_FIRST + 1 : XATTR_CLUSTER_END); k++) {
		memcpy(list + len, xattr_names[k], strlen(xattr_names[k]) + 1);
		len += strlen(xattr_names[k]) + 1;
	}
	reply_xattr_buf(req, list, len, size);
}

/* Our attributes are views of the store's state: never writable. Others are unsupported. */
static int xattr_refuse(const char *name)
{
	return strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) == 0 ? EPERM : ENOTSUP;
}

/* user.kvcachefs.replicas of a directory is the one attribute that can be set: 1..8. */
static void kvc_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	struct ns_block_info bi;
	char buf[8];
	char *end;
	unsigned long n;
	int ret;

	(void)flags;
	if (strcmp(name, XATTR_PREFIX "replicas")) {
		fuse_reply_err(req, xattr_refuse(name));
		return;
	}
	ret = ns_block_info(req_ns(req), ino, &bi);
	if (!ret && !bi.is_dir)
		ret = -EPERM; /* a block's copies follow its directory */
	if (!ret && (size == 0 || size >= sizeof(buf)))
		ret = -EINVAL;
	if (!ret) {
		memcpy(buf, value, size);
		buf[size] = '\0';
		n = strtoul(buf, &end, 10);
		if (end == buf || (*end && *end != '\n') || n < 1 || n > 8)
			ret = -EINVAL;
	}
	if (!ret)
		ret = req_cluster(req) ? cluster_set_replicas(req_cluster(req), ino, (unsigned)n)
				       : ns_replicas(req_ns(req), ino, (unsigned)n);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void kvc_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino;
	fuse_reply_err(req, xattr_refuse(name));
}

/* ---- the side channel -------------------------------------------------------------------- */

static void kvc_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		      struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		      size_t in_bufsz, size_t out_bufsz)
{
	struct side_owner *owner = NULL;

	(void)arg;
	if (flags & FUSE_IOCTL_COMPAT) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (flags & FUSE_IOCTL_DIR)
		owner = &((struct dirh *)(uintptr_t)fi->fh)->owner;
	side_ioctl(((struct kvc_fs *)fuse_req_userdata(req))->side, req, ino, cmd, owner, in_buf,
		   in_bufsz, out_bufsz);
}

int kvc_fs_init(struct kvc_fs *fs, struct ns *ns, struct side *side)
{
	fs->ns = ns;
	fs->side = side;
	fs->cluster = NULL; /* set by the daemon in cluster mode */
	fs->dirs = NULL;
	fs->timed = false; /* set by the daemon with --metrics */
	memset(fs->lat, 0, sizeof(fs->lat));
	fs->stream_reads = false; /* set at the session's init */
	fs->read_max = 0;	  /* set by the daemon */
	pthread_mutex_init(&fs->dirs_lock, NULL);
	if (pthread_key_create(&fs->pipe_key, pipe_free))
		return -EAGAIN;
	if (pthread_key_create(&fs->bounce_key, free)) {
		pthread_key_delete(fs->pipe_key);
		return -EAGAIN;
	}
	return 0;
}

void kvc_fs_fini(struct kvc_fs *fs)
{
	free(pthread_getspecific(fs->bounce_key));
	pthread_key_delete(fs->bounce_key);
	if (pthread_getspecific(fs->pipe_key))
		pipe_free(pthread_getspecific(fs->pipe_key));
	pthread_key_delete(fs->pipe_key);
	/* Directories the kernel never released: their side-channel slots go with side_destroy. */
	while (fs->dirs) {
		struct dirh *d = fs->dirs;

		fs->dirs = d->next;
		ns_dir_free(&d->dir);
		free(d);
	}
	pthread_mutex_destroy(&fs->dirs_lock);
}

const struct fuse_lowlevel_ops kvc_fs_ops = {
    .init = kvc_init,
    .lookup = kvc_lookup,
    .forget = kvc_forget,
    .forget_multi = kvc_forget_multi,
    .getattr = kvc_getattr,
    .setattr = kvc_setattr,
    .mknod = kvc_mknod,
    .mkdir = kvc_mkdir,
    .unlink = kvc_unlink,
    .rmdir = kvc_rmdir,
    .symlink = kvc_symlink,
    .rename = kvc_rename,
    .link = kvc_link,
    .create = kvc_create,
    .open = kvc_open,
    .read = kvc_read,
    .write = kvc_write,
    .flush = kvc_flush,
    .fsync = kvc_fsync,
    .release = kvc_release,
    .write_buf = kvc_write_buf,
    .opendir = kvc_opendir,
    .readdir = kvc_readdir,
    .releasedir = kvc_releasedir,
    .statfs = kvc_statfs,
    .setxattr = kvc_setxattr,
    .getxattr = kvc_getxattr,
    .listxattr = kvc_listxattr,
    .removexattr = kvc_removexattr,
    .ioctl = kvc_ioctl,
};
