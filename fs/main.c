/*
 * main: the kvcachefs daemon — parse options, create the pool and the namespace, mount, and
 * serve FUSE requests until unmounted or signalled.
 *
 * Start-up is all-or-nothing: every error before the mount is ready prints one line and
 * exits non-zero with nothing mounted and no pool object left behind. Without -f the process
 * forks first, and the parent exits 0 only when the child reports that the mount is ready, so
 * `kvcachefs /mnt/x && ls /mnt/x` never races.
 *
 * What happens is logged (fs/log.h, --log-level, --log-target): the mount, the tiers and the
 * recovery once the mount is ready, why the daemon stops (a signal, an unmount, a failed
 * session), and "stopped" last; the namespace, the transfer engine and libfuse feed the same
 * log through callbacks.
 */
#include "engine/pool.h"
#include "engine/ssd.h"
#include "fs/cluster.h"
#include "fs/daemonize.h"
#include "fs/inval.h"
#include "fs/log.h"
#include "fs/metrics.h"
#include "fs/ops.h"
#include "fs/options.h"
#include "fs/side.h"
#include "fs/uapi/kvcachefs.h"
#include "meta/etcd.h"
#include "meta/namespace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mntent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>
#include <xxhash.h>

/* Physical memory in bytes, 0 if unknown. */
static uint64_t mem_total(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);

	return pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
}

static void human(uint64_t v, char *buf, size_t cap)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	int k = 0;

	while (d >= 1024 && k < 5) {
		d /= 1024;
		k++;
	}
	snprintf(buf, cap, k ? "%.1f %s" : "%.0f %s", d, u[k]);
}

/* /dev/shm/kvcachefs.<mountpoint with '/' as '.'>, or a hash of it when too long. */
static void default_pool_path(const char *mnt, char *out, size_t cap)
{
	char name[NAME_MAX + 1];
	size_t n = 0;

	for (const char *p = mnt; *p && n < sizeof(name) - 1; p++)
		name[n++] = *p == '/' ? '.' : *p;
	name[n] = '\0';
	if (strlen(mnt) > 200)
		snprintf(out, cap, "/dev/shm/kvcachefs.%016llx",
			 (unsigned long long)XXH3_64bits(mnt, strlen(mnt)));
	else
		snprintf(out, cap, "/dev/shm/kvcachefs%s", strcmp(mnt, "/") ? name : ".root");
}

/*
 * The FUSE context: the ops' kvc_fs first (it is what they get as userdata), then what only
 * the daemon knows. libfuse ends the session at INIT when the filesystem's init() announces a
 * max_read other than the -o max_read=N the session was created with (0 when none), so
 * init() is wrapped to announce that same value.
 */
struct daemon_fs {
	struct kvc_fs fs;
	uint32_t max_read;
};

static void daemon_init(void *userdata, struct fuse_conn_info *conn)
{
	struct daemon_fs *d = userdata; /* fs is its first member */

	kvc_fs_ops.init(userdata, conn);
	conn->max_read = d->max_read;
}

/* fuse_session_new prints its own complaint about a bad -o option; ours is the one line. */
static struct fuse_session *session_new_quiet(struct fuse_args *args, struct daemon_fs *d)
{
	struct fuse_lowlevel_ops ops = kvc_fs_ops; /* libfuse keeps a copy */
	struct fuse_session *se;
	int saved = dup(2), null = open("/dev/null", O_WRONLY);

	ops.init = daemon_init;
	if (saved >= 0 && null >= 0)
		dup2(null, 2);
	se = fuse_session_new(args, &ops, sizeof(ops), d);
	if (saved >= 0) {
		dup2(saved, 2);
		close(saved);
	}
	if (null >= 0)
		close(null);
	return se;
}

/* libfuse's own messages ("fuse: ..."), into the log: its levels are syslog's. */
static void fuse_log_fn(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_msg((int)level, "%s", msg);
}

/* Why the session loop ended (its return value): a signal, an unmount, or an error. */
static void stop_reason(int ret, char *buf, size_t cap)
{
	const char *sig = ret == SIGINT ? "SIGINT" : ret == SIGTERM ? "SIGTERM" : "SIGHUP";

	if (ret == SIGINT || ret == SIGTERM || ret == SIGHUP)
		snprintf(buf, cap, "%s received", sig);
	else if (ret == 0)
		snprintf(buf, cap, "unmount requested (umount or fusermount3 -u)");
	else
		snprintf(buf, cap, "the FUSE session failed: %s",
			 ret < 0 ? strerror(-ret) : "unknown error");
}

/* The cluster's line at start: which node this is and how many members there are. */
static void log_cluster(struct cluster *c, const char *congestion)
{
	struct kvcachefs_nodes *nd = calloc(1, sizeof(*nd));
	const struct kvcachefs_node *self = NULL;
	char tr[96];

	if (!nd)
		return;
	cluster_nodes(c, nd);
	for (uint32_t k = 0; k < nd->count; k++)
		if (nd->node[k].state & KVCACHEFS_NODE_SELF)
			self = &nd->node[k];
	snprintf(tr, sizeof(tr), "%s%s%s", self && self->transports & 0x2u ? "TCP, RDMA" : "TCP",
		 congestion ? "; TCP congestion control " : "", congestion ? congestion : "");
	if (self)
		log_msg(LOG_INFO,
			"joined cluster %s as node %016llx, transfers on %s (%s), %u member%s",
			nd->cluster, (unsigned long long)self->node_id, self->addr, tr, nd->total,
			nd->total == 1 ? "" : "s");
	free(nd);
}

/* side_prefetch_fn: a block held by another node, fetched into the local pool. */
static int prefetch(void *r, uint64_t parent, const char *name)
{
	return remote_prefetch(r, parent, name);
}

/* side_config.prefetch_batch: blocks held by other nodes, fetched in parallel batches. */
static int prefetch_batch(void *r, uint64_t parent, size_t from, size_t n,
			  const char *(*name_at)(void *arg, size_t k, char *buf), void *arg)
{
	return remote_prefetch_batch(r, parent, from, n, name_at, arg);
}

/* Is a kvcachefs mounted on mnt (whatever its pool)? Mounting a second one over it would hide
 * the first. */
static bool kvcachefs_mounted(const char *mnt)
{
	FILE *f = setmntent("/proc/self/mounts", "r");
	struct mntent *e;
	bool found = false;

	if (!f)
		return false;
	while (!found && (e = getmntent(f)))
		found = !strcmp(e->mnt_dir, mnt) && !strcmp(e->mnt_type, "fuse.kvcachefs");
	endmntent(f);
	return found;
}

int main(int argc, char **argv)
{
	struct kvc_options o;
	char mnt[PATH_MAX], pool_path[PATH_MAX + 32], a[32], b[32];
	char fuse_opts[1200], mr[32];
	uint32_t max_read;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	struct pool *pool = NULL;
	struct ssd *ssd[KVC_MAX_SSD] = {0};
	struct ns_recovery rec = {0};
	bool keep_pool = false;
	uint64_t old_size = 0;
	struct inval *iv = NULL;
	struct ns *ns = NULL;
	struct side *side = NULL;
	struct cluster *cluster = NULL;
	struct metrics *metrics = NULL;
	char cerr[512];
	struct daemon_fs dfs;
	struct kvc_fs *fs = &dfs.fs;
	bool fs_ready = false, served = false;
	struct stat st;
	int ready_fd = -1, ret, status = 1;
	uint64_t mem;

	if (opt_parse(argc, argv, &o) < 0) {
		log_msg(LOG_ERR, "%s", o.err);
		return 2;
	}
	log_init(o.log_level, o.log_target);
	etcd_set_log(log_line, NULL); /* the etcd client and the member list */
	if (o.help) {
		opt_usage(argv[0], stdout);
		return 0;
	}
	if (o.version) {
		printf("kvcachefs %s (FUSE %d)\n", KVC_VERSION, fuse_version());
		return 0;
	}
	if (!realpath(o.mountpoint, mnt) || stat(mnt, &st) < 0) {
		log_msg(LOG_ERR, "mountpoint %s: %s", o.mountpoint, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_msg(LOG_ERR, "mountpoint %s: not a directory", o.mountpoint);
		return 1;
	}
	if (kvcachefs_mounted(mnt)) {
		log_msg(LOG_ERR, "mountpoint %s: a kvcachefs is already mounted there", mnt);
		return 1;
	}
	mem = mem_total();
	if (mem && o.pool_size > mem) {
		human(o.pool_size, a, sizeof(a));
		human(mem, b, sizeof(b));
		log_msg(LOG_ERR, "--pool-size %s is larger than physical memory (%s)", a, b);
		return 1;
	}
	if (o.pool_path)
		snprintf(pool_path, sizeof(pool_path), "%s", o.pool_path);
	else
		default_pool_path(mnt, pool_path, sizeof(pool_path));

	if (!o.foreground && (ret = daemonize_start(&ready_fd)) < 0) {
		log_msg(LOG_ERR, "cannot fork: %s", strerror(-ret));
		return 1;
	}

	ret = pool_open(&pool, pool_path, o.pool_size, o.pool_mode, o.fresh, &old_size);
	if (ret) {
		human(o.pool_size, a, sizeof(a));
		human(old_size, b, sizeof(b));
		if (ret == -EEXIST)
			log_msg(
			    LOG_ERR,
			    "pool %s holds the blocks of a %s pool (--pool-size %llu): start with "
			    "that size to recover them, or with --fresh to discard them",
			    pool_path, b, (unsigned long long)old_size);
		else if (ret == -EBUSY)
			log_msg(LOG_ERR, "pool %s is in use by another kvcachefs daemon",
				pool_path);
		else if (ret == -ENOSPC)
			log_msg(LOG_ERR, "not enough shared memory for a %s pool at %s", a,
				pool_path);
		else
			log_msg(LOG_ERR, "cannot create the %s pool at %s: %s", a, pool_path,
				strerror(-ret));
		goto out;
	}
	if (o.pool_gid >= 0 && fchown(pool->fd, (uid_t)-1, (gid_t)o.pool_gid) < 0) {
		log_msg(LOG_ERR, "cannot give the pool %s to group %ld: %s", pool_path, o.pool_gid,
			strerror(errno));
		goto out;
	}
	keep_pool = pool->reopened; /* never remove what an earlier daemon left */
	for (unsigned k = 0; k < o.nssd; k++) {
		ret = ssd_open(&ssd[k],
			       &(struct ssd_config){
				   .path = o.ssd[k].path,
				   .size = o.ssd[k].size,
				   .queue_depth = o.ssd_queue_depth,
				   .create = true,
				   .format = o.fresh,
				   .mem = pool->base,
				   .mem_len = pool->size,
			       },
			       cerr, sizeof(cerr));
		if (ret) {
			log_msg(LOG_ERR, "--ssd %s", cerr);
			goto out;
		}
	}
	if (inval_create(&iv) < 0) {
		log_msg(LOG_ERR, "out of memory");
		goto out;
	}
	ret = ns_create(&ns, pool,
			&(struct ns_config){
			    .max_block_size = o.max_block_size,
			    .evict_high = o.evict_high,
			    .evict_low = o.evict_low,
			    .demote_above = o.demote_above,
			    .vanish = inval_push,
			    .vanish_arg = iv,
			    .ssd = ssd,
			    .nssd = o.nssd,
			    .log = log_line,
			});
	if (ret) {
		log_msg(LOG_ERR, "cannot create the namespace: %s", strerror(-ret));
		goto out;
	}
	ret = ns_recover(ns, &rec);
	if (ret) {
		log_msg(LOG_ERR, "cannot recover the blocks of %s: %s", pool_path, strerror(-ret));
		goto out;
	}

	max_read = o.max_read ? o.max_read : o.etcd ? KVC_FUSE_STREAM_READ : 0;
	snprintf(mr, sizeof(mr), ",max_read=%u", max_read);
	snprintf(fuse_opts, sizeof(fuse_opts),
		 "fsname=kvcachefs,subtype=kvcachefs,default_permissions%s%s%s",
		 o.fuse_opts[0] ? "," : "", o.fuse_opts, max_read && !o.max_read ? mr : "");
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, fuse_opts) || (o.debug && fuse_opt_add_arg(&args, "-d"))) {
		log_msg(LOG_ERR, "out of memory");
		goto out;
	}
	if (o.etcd &&
	    cluster_start(&cluster, &o, mnt, pool, ns, inval_push, iv, cerr, sizeof(cerr)) < 0) {
		log_msg(LOG_ERR, "%s", cerr);
		goto out;
	}
	ret = side_create(&side, &(struct side_config){
				     .ns = ns,
				     .pool = pool,
				     .max_block_size = o.max_block_size,
				     .nodes = cluster ? cluster_nodes : NULL,
				     .nodes_arg = cluster,
				     .prefetch = cluster ? prefetch : NULL,
				     .prefetch_batch = cluster ? prefetch_batch : NULL,
				     .prefetch_arg = cluster_remote(cluster),
				 });
	if (ret || kvc_fs_init(fs, ns, side) < 0) {
		log_msg(LOG_ERR, "out of memory");
		goto out;
	}
	fs->cluster = cluster;
	dfs.max_read = max_read;
	fs->read_max = max_read;
	fs_ready = true;
	/* The endpoint listens from here, answering /health with 503 until the mount is ready:
	 * a port in use is a start-up error like any other. */
	if (o.metrics) {
		fs->timed = true;
		ret = metrics_start(&metrics,
				    &(struct metrics_config){
					.addr = (const struct sockaddr *)&o.metrics_addr,
					.addrlen = o.metrics_addr.ss_family == AF_INET6
						       ? sizeof(struct sockaddr_in6)
						       : sizeof(struct sockaddr_in),
					.spec = o.metrics,
					.mountpoint = mnt,
					.ns = ns,
					.side = side,
					.cluster = cluster,
					.fs = fs,
				    },
				    cerr, sizeof(cerr));
		if (ret) {
			log_msg(LOG_ERR, "%s", cerr);
			goto out;
		}
	}
	se = session_new_quiet(&args, &dfs);
	if (!se) {
		log_msg(LOG_ERR, "invalid mount options '%s'", o.fuse_opts);
		goto out;
	}
	if (!o.debug) /* -d: libfuse traces every request to stderr itself */
		fuse_set_log_func(fuse_log_fn);
	if (fuse_set_signal_handlers(se) != 0) {
		log_msg(LOG_ERR, "cannot install signal handlers");
		goto out;
	}
	if (fuse_session_mount(se, mnt) != 0) {
		log_msg(LOG_ERR,
			"cannot mount on %s (is /dev/fuse available? are you root or is "
			"fusermount3 installed?)",
			mnt);
		goto out_signals;
	}
	side_set_session(side, se);
	if (inval_start(iv, se) < 0) {
		log_msg(LOG_ERR, "cannot start the invalidation thread");
		goto out_unmount;
	}
	human(pool_capacity(pool), a, sizeof(a));
	if (ready_fd >= 0) {
		daemonize_ready(ready_fd);
		ready_fd = -1;
	}
	log_ready(!o.foreground);
	keep_pool = true;
	metrics_set_state(metrics, METRICS_SERVING);
	log_msg(LOG_INFO, "mounted on %s: pool %s (%s), max block %llu bytes", mnt, pool_path, a,
		(unsigned long long)o.max_block_size);
	if (o.max_read)
		log_msg(LOG_INFO, "FUSE reads of at most %u bytes (-o max_read)", o.max_read);
	if (metrics)
		log_msg(LOG_INFO, "metrics on http://%s/metrics", o.metrics);
	for (unsigned k = 0; k < o.nssd; k++) {
		human(ssd_capacity(ssd[k]), a, sizeof(a));
		log_msg(LOG_INFO, "SSD tier: %s (%s)", o.ssd[k].path, a);
	}
	human(rec.bytes, a, sizeof(a));
	log_msg(LOG_INFO, "recovered %llu blocks (%s), %llu directories, %llu dropped, in %.1f ms",
		(unsigned long long)rec.recovered, a, (unsigned long long)rec.dirs,
		(unsigned long long)rec.dropped, (double)rec.elapsed_ns / 1e6);
	if (cluster)
		log_cluster(cluster, o.tcp_congestion);
	log_msg(LOG_DEBUG, "FUSE mount options: %s", fuse_opts);

	/* The loop returns the signal number when SIGINT/SIGTERM/SIGHUP ended it: a clean stop. */
	served = true;
	ret = kvc_fuse_loop(se);
	status = ret == 0 || ret == SIGINT || ret == SIGTERM || ret == SIGHUP ? 0 : 1;
	metrics_set_state(metrics, METRICS_STOPPING);
	stop_reason(ret, cerr, sizeof(cerr));
	log_msg(status ? LOG_ERR : LOG_INFO, "unmounting %s: %s", mnt, cerr);

out_unmount:
	inval_destroy(iv);
	iv = NULL;
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	/* before what it reads goes */
	metrics_stop(metrics);
	if (se)
		fuse_session_destroy(se);
	if (fs_ready)
		kvc_fs_fini(fs);
	fuse_opt_free_args(&args);
	inval_destroy(iv);
	side_destroy(side);
	cluster_stop(cluster);
	ns_destroy(ns);
	for (unsigned k = 0; k < o.nssd; k++)
		ssd_close(ssd[k]);
	/* The pool outlives the daemon: the next start recovers its blocks. */
	pool_destroy(pool, !keep_pool);
	if (ready_fd >= 0)
		daemonize_fail(ready_fd);
	if (served)
		log_msg(status ? LOG_ERR : LOG_INFO, status ? "stopped after an error" : "stopped");
	return status;
}
