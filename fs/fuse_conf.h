/*
 * fuse_conf.h: the FUSE settings of kvcachefs, in one place, so that the trivial in-memory
 * filesystem the benchmarks compare against (tools/memfs.c) runs with exactly the same ones.
 */
#ifndef KVC_FS_FUSE_CONF_H
#define KVC_FS_FUSE_CONF_H

#define FUSE_USE_VERSION 314
#include <fcntl.h>
#include <fuse_lowlevel.h>

/* Largest READ/WRITE request the kernel sends us (needs max_pages support: Linux >= 4.20). */
#define KVC_FUSE_MAX_IO (1u << 20)
/* READ requests of a cluster node, unless -o max_read says otherwise: a reply streamed from
 * another node must fit the pipe libfuse splices it through, which it wants as large as the
 * reply plus three pages and which cannot exceed the default pipe-max-size (1 MiB) without
 * CAP_SYS_RESOURCE. It also keeps every READ of a large read() that size whatever the
 * alignment of the reader's buffer (max_read plus a page within the kernel's 1 MiB), so that
 * the chunks asked for ahead at the open match the READs. */
#define KVC_FUSE_STREAM_READ (KVC_FUSE_MAX_IO - 4 * 4096)
/* How long the kernel may cache a name or attributes without asking (seconds). Names that
 * disappear behind the kernel's back (eviction) are also invalidated explicitly. */
#define KVC_FUSE_ENTRY_TIMEOUT 1.0
#define KVC_FUSE_ATTR_TIMEOUT  1.0
/* Worker threads kept idle by the multi-threaded loop. */
#define KVC_FUSE_IDLE_THREADS 8

/* Negotiate the connection: large requests, asynchronous direct I/O, directory ioctls. */
static inline void kvc_fuse_conn_init(struct fuse_conn_info *conn)
{
	conn->max_write = KVC_FUSE_MAX_IO;
	conn->max_readahead = KVC_FUSE_MAX_IO;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_IOCTL_DIR)
		conn->want |= FUSE_CAP_IOCTL_DIR;
	/* Blocks are opened with direct_io: no page-cache writeback, errors reach write(). */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

/* Every open of a regular file: direct I/O, whole requests straight to the daemon. A
 * read-only open has nothing to flush: its close() sends no FLUSH (one round trip fewer per
 * block read). */
static inline void kvc_fuse_file_info_init(struct fuse_file_info *fi)
{
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
}

/* Run the session loop with the project's thread settings. */
static inline int kvc_fuse_loop(struct fuse_session *se)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int ret;

	if (!cfg)
		return -1;
	fuse_loop_cfg_set_idle_threads(cfg, KVC_FUSE_IDLE_THREADS);
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	ret = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return ret;
}

#endif
