/*
 * bench_cluster: kvcache-bench cluster, reading blocks that another node of the cluster
 * holds, against what an engine would use instead: a Redis GET of a value of the same size,
 * and the bare TCP throughput of the same loopback (iperf3).
 *
 * One run starts everything it measures, on loopback, under one temporary directory: an
 * etcd (one member, free ports), two kvcachefs daemons A and B in the foreground joined to
 * one cluster (each with its own mountpoint and pool, one 32-byte secret file), and a
 * redis-server without persistence. Blocks of 2 MiB and 256 KiB are written through A's
 * mount; then, best of --reps, at each size, with one thread and with --threads threads, one
 * block per open/read/close into a page-aligned buffer:
 *   - A reads them through its own mount (local, for reference);
 *   - B reads them through its mount: B holds none of them, so every read is a remote one,
 *     fetched from A over the transfer engine. B may keep a copy after the first read, so
 *     every pass reads names that B never saw: each repetition writes a fresh set of blocks
 *     per thread count on A (and deletes them afterwards, untimed);
 *   - B loads them through its side channel (libkvcache), one thread, as an inference
 *     engine loads a prefix that another node holds: a fresh set per repetition written on
 *     A, then, timed, kvc_dir_open on B, kvc_lookup of the whole list (at most
 *     KVC_LOOKUP_MAX names a call: B fetches the blocks from A into its pool, in parallel
 *     batches) and kvc_load_batch of all of them into one private page-aligned buffer.
 *     Reported next to the mount figures, with its ratios to Redis GET and iperf3, for
 *     information: the targets are those of the mount;
 *   - the same number of values of the same size are read from Redis with GET, one
 *     connection per thread, through the minimal RESP client below (SET once, before).
 * iperf3 runs between the repetitions with -P 1 and -P --threads: the best is the baseline.
 * Then latencies, each over --stat-count names that nobody looked up before: stat() on B of
 * blocks held by A (the remote lookup), stat() on A of its own blocks (stored through
 * libkvcache, so that A's kernel never saw their names either), and Redis EXISTS.
 *
 * Content: every block or value read is checked inside the timed loop at its first and last
 * 8 bytes (every block has its own seed of tools/pattern.h, so misplaced data shows), and a
 * few of every pass are read again outside the clock and checked whole (those of the side
 * channel are checked whole in its buffer, which holds them all).
 *
 * A remote read, side-channel load or stat that fails does not stop the run: it is said
 * once, with the name, the rest is measured and printed with its figures as "failed", and
 * the exit status is 1. Any other failure stops the run.
 *
 * Children run in their own process groups with PR_SET_PDEATHSIG SIGTERM: a Ctrl-C reaches
 * only the bench (the signal only sets `stop`), and a bench killed outright still takes them
 * down (kvcachefs unmounts itself on SIGTERM). cl_teardown, on every exit path, closes the
 * side channel, unmounts (fusermount3 -u), waits for the daemons or kills them, stops redis
 * and etcd, removes the pool objects and the temporary directory.
 */
#include "tools/bench_cluster.h"
#include "tools/bench_util.h"
#include "fs/uapi/kvcache.h"
#include "fs/uapi/kvcachefs.h"
#include "tools/pattern.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

#define CL_FUSE_MAGIC 0x65735546

#define CL_NSIZES	   2
#define CL_DEFAULT_MIB	   256 /* per size and per pass */
#define CL_DEFAULT_REPS	   3
#define CL_DEFAULT_THREADS 4
#define CL_DEFAULT_SECONDS 1
#define CL_DEFAULT_STATS   1000
#define CL_MAX_THREADS	   64
#define CL_STAT_SIZE	   4096 /* blocks of the stat latencies */
#define CL_STAT_CHUNK	   100	/* names per kind in a row, the kinds taken in turn */
#define CL_VERIFY_SAMPLES  8	/* blocks per pass read again and checked whole */
#define CL_SEED		   0x636c7573746572ull /* "cluster" */
#define CL_TARGET_SIZE	   (2 * MIB)
#define CL_TARGET_REDIS	   1.0	 /* remote read / Redis GET at CL_TARGET_SIZE, at least */
#define CL_TARGET_IPERF	   0.6	 /* remote read / iperf3 at CL_TARGET_SIZE, at least */
#define CL_TARGET_STAT	   2.0	 /* remote stat p50 / Redis EXISTS p50, at most */
#define CL_START_MS	   30000 /* for etcd, a daemon or redis to be ready */
#define CL_JOIN_MS	   20000 /* for both nodes to list both members */
#define CL_DIR_MS	   10000 /* for a directory made on A to show on B */
#define CL_STOP_MS	   10000 /* for a child to exit once asked to */
#define CL_POOL_SLACK	   (64 * MIB)

static const uint64_t cl_sizes[CL_NSIZES] = {2 * MIB, 256 * KIB};

enum { CL_A, CL_B, CL_NNODES };
/* Sets of blocks, of one size and repetition: one per pass through the mounts (one thread,
 * --threads threads), and the side channel's. */
enum { CL_T1, CL_TN, CL_NPASSES, CL_SIDE = CL_NPASSES, CL_NSETS };

/* A progress line is open on stderr ("run 1: iperf3 2M"): an error starts a line of its own. */
static bool cl_midline;

static void cl_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void cl_progress(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	cl_midline = fmt[0] && fmt[strlen(fmt) - 1] != '\n';
}

static void cl_err(const char *fmt, ...)
{
	va_list ap;

	if (cl_midline)
		fputc('\n', stderr);
	cl_midline = false;
	fputs("kvcache-bench: cluster: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A failure that is only the consequence of a Ctrl-C: said once, by the caller of all. */
static bool cl_quiet(int err)
{
	return err == -EINTR && stop;
}

/* ---- children ---------------------------------------------------------------------------- */

/* Stop a child: SIGTERM, SIGKILL after CL_STOP_MS; *pid becomes 0. */
static void cl_kill(pid_t *pid)
{
	int st = -1;

	if (*pid > 0)
		bench_kill(*pid, CL_STOP_MS, &st);
	*pid = 0;
}

/* The last lines of a child's log, which goes away with the run's directory. */
static void cl_log_tail(const char *what, const char *path)
{
	char w[64];

	snprintf(w, sizeof(w), "%s's log", what);
	bench_log_tail("cluster", w, path);
}

/* ---- sockets and a minimal RESP (Redis) client ------------------------------------------ */

/* A connected TCP socket to 127.0.0.1:port (TCP_NODELAY), or -errno. */
static int cl_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/*
 * One connection to Redis, one command at a time. Replies are read through `in`; a bulk
 * reply's body goes straight into the caller's buffer (what is already in `in` is copied,
 * the rest is received in place), so a GET costs one copy, as a read() on a mount does.
 */
#define RESP_IN	      16384
#define RESP_MAX_ARGS 4

struct resp {
	int fd;		 /* -1 when closed */
	size_t off, len; /* unread reply bytes: in[off, len) */
	char err[128];	 /* the last error reply, without its '-' */
	char in[RESP_IN];
};

static int resp_connect(struct resp *c, int port)
{
	c->fd = cl_connect(port);
	c->off = c->len = 0;
	c->err[0] = '\0';
	return c->fd < 0 ? c->fd : 0;
}

static void resp_close(struct resp *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int resp_send_iov(int fd, struct iovec *iov, int cnt)
{
	while (cnt) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
		ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR && !stop)
				continue;
			return -errno;
		}
		while (cnt && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Send one command of argc arguments, each sent from where it is (no copy of a value). */
static int resp_send(struct resp *c, int argc, const char *const *argv, const size_t *lens)
{
	char hdr[RESP_MAX_ARGS + 1][48];
	struct iovec iov[2 * RESP_MAX_ARGS + 1];
	int n = 0;

	for (int k = 0; k < argc; k++) {
		int l = k ? snprintf(hdr[k], sizeof(hdr[k]), "\r\n$%zu\r\n", lens[k])
			  : snprintf(hdr[k], sizeof(hdr[k]), "*%d\r\n$%zu\r\n", argc, lens[k]);

		iov[n++] = (struct iovec){.iov_base = hdr[k], .iov_len = (size_t)l};
		iov[n++] = (struct iovec){.iov_base = (void *)argv[k], .iov_len = lens[k]};
	}
	iov[n++] = (struct iovec){.iov_base = "\r\n", .iov_len = 2};
	return resp_send_iov(c->fd, iov, n);
}

/* One recv() of up to len bytes: the count (> 0), -ECONNRESET at EOF, -EINTR on stop or
 * -errno. */
static ssize_t resp_recv(struct resp *c, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(c->fd, buf, len, 0);

		if (n > 0)
			return n;
		if (n == 0)
			return -ECONNRESET;
		if (errno != EINTR)
			return -errno;
		if (stop)
			return -EINTR;
	}
}

/* Receive more reply bytes into `in`. */
static int resp_fill(struct resp *c)
{
	ssize_t n;

	if (c->off == c->len) {
		c->off = c->len = 0;
	} else if (c->len == sizeof(c->in)) {
		memmove(c->in, c->in + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len == sizeof(c->in))
		return -EPROTO; /* a line longer than the buffer */
	n = resp_recv(c, c->in + c->len, sizeof(c->in) - c->len);
	if (n < 0)
		return (int)n;
	c->len += (size_t)n;
	return 0;
}

/* The next reply line, its CRLF replaced by NUL, in place. An error reply ("-ERR ...") is
 * kept in c->err and returns -EPROTO. */
static int resp_line(struct resp *c, char **line)
{
	for (;;) {
		char *s = c->in + c->off, *nl = memchr(s, '\n', c->len - c->off);
		int ret;

		if (nl) {
			*nl = '\0';
			if (nl > s && nl[-1] == '\r')
				nl[-1] = '\0';
			c->off += (size_t)(nl - s) + 1;
			*line = s;
			if (*s != '-')
				return 0;
			snprintf(c->err, sizeof(c->err), "%s", s + 1);
			return -EPROTO;
		}
		ret = resp_fill(c);
		if (ret)
			return ret;
	}
}

/* A simple-string reply that must be `want` ("OK", "PONG"). */
static int resp_simple(struct resp *c, const char *want)
{
	char *line;
	int ret = resp_line(c, &line);

	if (ret)
		return ret;
	if (line[0] != '+' || strcmp(line + 1, want)) {
		snprintf(c->err, sizeof(c->err), "unexpected reply '%.64s'", line);
		return -EPROTO;
	}
	return 0;
}

/* A bulk reply into dst (cap bytes), its length in *len. A nil reply: -ENOENT; longer than
 * cap: -EMSGSIZE (the connection is then out of step: close it). */
static int resp_bulk(struct resp *c, void *dst, size_t cap, uint64_t *len)
{
	char *line, *end, *p = dst;
	long long n;
	size_t have, k;
	int ret = resp_line(c, &line);

	if (ret)
		return ret;
	if (line[0] != '$') {
		snprintf(c->err, sizeof(c->err), "unexpected reply '%.64s'", line);
		return -EPROTO;
	}
	n = strtoll(line + 1, &end, 10);
	if (n < 0)
		return -ENOENT;
	if ((uint64_t)n > cap)
		return -EMSGSIZE;
	have = c->len - c->off;
	k = have < (size_t)n ? have : (size_t)n;
	memcpy(p, c->in + c->off, k);
	c->off += k;
	while (k < (size_t)n) {
		ssize_t r = resp_recv(c, p + k, (size_t)n - k);

		if (r < 0)
			return (int)r;
		k += (size_t)r;
	}
	while (c->len - c->off < 2)
		if ((ret = resp_fill(c)))
			return ret;
	if (memcmp(c->in + c->off, "\r\n", 2))
		return -EPROTO;
	c->off += 2;
	*len = (uint64_t)n;
	return 0;
}

static int resp_ping(struct resp *c)
{
	static const char *const argv[] = {"PING"};
	static const size_t lens[] = {4};
	int ret = resp_send(c, 1, argv, lens);

	return ret ? ret : resp_simple(c, "PONG");
}

static int resp_set(struct resp *c, const char *key, const void *val, size_t len)
{
	const char *argv[] = {"SET", key, val};
	size_t lens[] = {3, strlen(key), len};
	int ret = resp_send(c, 3, argv, lens);

	return ret ? ret : resp_simple(c, "OK");
}

static int resp_get(struct resp *c, const char *key, void *dst, size_t cap, uint64_t *len)
{
	const char *argv[] = {"GET", key};
	size_t lens[] = {3, strlen(key)};
	int ret = resp_send(c, 2, argv, lens);

	return ret ? ret : resp_bulk(c, dst, cap, len);
}

/* EXISTS key: 1 or 0 in *n. */
static int resp_exists(struct resp *c, const char *key, long long *n)
{
	const char *argv[] = {"EXISTS", key};
	size_t lens[] = {6, strlen(key)};
	char *line;
	int ret = resp_send(c, 2, argv, lens);

	if (!ret)
		ret = resp_line(c, &line);
	if (ret)
		return ret;
	if (line[0] != ':') {
		snprintf(c->err, sizeof(c->err), "unexpected reply '%.64s'", line);
		return -EPROTO;
	}
	*n = strtoll(line + 1, NULL, 10);
	return 0;
}

/* The redis_version line of INFO server. */
static void resp_version(struct resp *c, char *out, size_t cap)
{
	static const char *const argv[] = {"INFO", "server"};
	static const size_t lens[] = {4, 6};
	char info[8192], *v;
	uint64_t len = 0;

	snprintf(out, cap, "?");
	if (resp_send(c, 2, argv, lens) || resp_bulk(c, info, sizeof(info) - 1, &len))
		return;
	info[len] = '\0';
	v = strstr(info, "redis_version:");
	if (v)
		snprintf(out, cap, "%.*s", (int)strcspn(v + 14, "\r\n"), v + 14);
}

/* ---- the run: what it started, what it measured ----------------------------------------- */

struct cl_node {
	char letter;		  /* 'A' or 'B' */
	char dir[PATH_MAX + 16];  /* its mountpoint, "" before it exists */
	char pool[PATH_MAX + 64]; /* its pool object on /dev/shm, "" before it is named */
	char log[PATH_MAX + 32];  /* its stderr: it runs in the foreground */
	uint64_t pool_size;
	pid_t pid; /* 0 when not running (or reaped) */
	uint64_t id;
	char addr[sizeof(((struct kvcachefs_node *)0)->addr)]; /* its transfer engine */
};

struct cl_results {
	uint64_t count[CL_NSIZES]; /* blocks (and Redis values) per pass */
	/* GB/s, best over the repetitions; 0 where not measured */
	double local[CL_NSIZES][CL_NPASSES], remote[CL_NSIZES][CL_NPASSES],
	    redis[CL_NSIZES][CL_NPASSES];
	double side[CL_NSIZES]; /* B's side channel, one thread: lookup + load */
	double iperf_p1, iperf_pn;
	bool remote_failed, rstat_failed, side_failed;
	double stat_a[2], stat_b[2], exists[2]; /* p50, p99 in microseconds */
	char redis_version[32];
};

enum cl_op { CL_READ, CL_GET };

/* One timed pass: n blocks (or Redis values) taken in turn by the worker threads. */
struct cl_job {
	enum cl_op op;
	const struct cl_node *node; /* CL_READ: the reader */
	bool remote;		    /* CL_READ: the blocks are held by the other node */
	char dir[64];		    /* CL_READ: their directory */
	uint64_t size, n;
	int rep, set;		   /* of their seeds (cl_seed) */
	atomic_uint_fast64_t next; /* the next block to take */
	atomic_int err;		   /* the first failure (-errno); its text in msg */
	pthread_mutex_t lock;	   /* protects go */
	pthread_cond_t cond;
	bool go;
	char msg[PATH_MAX + 256]; /* written by the thread that set err, read after the joins */
};

struct cl_worker {
	struct cl_job *job;
	unsigned char *buf; /* one block of the largest size, page-aligned */
	struct resp *conn;  /* its Redis connection */
	pthread_t th;
};

struct cl_run {
	/* options */
	uint64_t mib, nstat;
	int reps, threads, seconds, npasses;
	bool json;
	const char *plot;	/* --plot FILE.png, NULL without */
	const char *congestion; /* --tcp-congestion: the nodes' and iperf3's, NULL: the system's */
	char system_cc[32];	/* the system's (net.ipv4.tcp_congestion_control): Redis's */
	/* what was started: cl_teardown undoes whatever is set */
	char bindir[PATH_MAX];
	char tmp[PATH_MAX];	    /* the run's directory, "" when there is none */
	char secret[PATH_MAX + 16]; /* 32 random bytes, 0600 */
	char cluster[64];
	pid_t etcd;
	int etcd_port;
	char etcd_log[PATH_MAX + 16];
	struct cl_node node[CL_NNODES];
	pid_t redis;
	int redis_port;
	char redis_log[PATH_MAX + 16];
	struct resp *conns;  /* threads of them */
	struct cl_worker *w; /* threads of them */
	unsigned char *wbuf; /* a block being written */
	/* the side channel: B's pool mapped (opened at its first pass), the engine's buffer
	 * (a whole set, page-aligned, faulted in before any timing) and the set's names */
	struct kvc *kvc_b;
	unsigned char *sbuf;
	uint64_t sbuf_size;
	char (*snames)[KVC_HASH_NAME_SIZE];
	const char **snameptrs;
	struct cl_results z;
};

/* The pattern seed of block i of a set (rep -1: the Redis values). */
static uint64_t cl_seed(uint64_t size, int rep, int set, uint64_t i)
{
	return pattern_word(CL_SEED ^ size,
			    ((uint64_t)(rep + 1) << 40) ^ ((uint64_t)set << 32) ^ i);
}

/* Cheap enough for the timed loop: the block's first and last 8 bytes. */
static bool cl_ends_ok(const unsigned char *buf, uint64_t len, uint64_t seed)
{
	unsigned char w[8];

	pattern_fill(w, 8, seed, 0);
	if (memcmp(buf, w, 8))
		return false;
	pattern_fill(w, 8, seed, len - 8);
	return !memcmp(buf + len - 8, w, 8);
}

/* Directory of the blocks of (size, rep, set), under the mount. */
static void cl_set_dir(const struct cl_run *r, char *out, size_t cap, int s, int rep, int set)
{
	char sz[24];

	bench_fmt_size(cl_sizes[s], sz, sizeof(sz));
	if (set == CL_SIDE)
		snprintf(out, cap, "%s-r%d-side", sz, rep);
	else
		snprintf(out, cap, "%s-r%d-t%d", sz, rep, set == CL_T1 ? 1 : r->threads);
}

/* Is set (CL_T1, CL_TN, CL_SIDE) written and read in this run? */
static bool cl_set_used(const struct cl_run *r, int set)
{
	return set < r->npasses || set == CL_SIDE;
}

/* Name of block i of a set. The side channel's are what an engine uses (kvc_prefix_hash):
 * 32 lowercase hex digits, which libkvcache sends as 16 bytes each, so that a lookup of
 * KVC_LOOKUP_MAX names is one request. */
static void cl_block_name(char *out, size_t cap, uint64_t size, int rep, int set, uint64_t i)
{
	if (set == CL_SIDE)
		snprintf(out, cap, "%016" PRIx64 "%016" PRIx64, cl_seed(size, rep, set, i), i);
	else
		snprintf(out, cap, "b%06" PRIu64, i);
}

static void cl_key(char *out, size_t cap, uint64_t size, uint64_t i)
{
	char sz[24];

	snprintf(out, cap, "kvc:%s:%06" PRIu64, bench_fmt_size(size, sz, sizeof(sz)), i);
}

/* ---- start-up and teardown --------------------------------------------------------------- */

static int cl_secret(struct cl_run *r)
{
	unsigned char raw[32];
	int fd, ret = 0;

	snprintf(r->secret, sizeof(r->secret), "%s/secret", r->tmp);
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		ret = -errno;
		cl_err("getrandom: %s", strerror(errno));
		return ret;
	}
	fd = open(r->secret, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || bench_write_full(fd, raw, sizeof(raw)) < 0 || close(fd) < 0) {
		ret = -errno;
		cl_err("%s: %s", r->secret, strerror(errno));
	}
	explicit_bzero(raw, sizeof(raw));
	return ret;
}

/* Wait until ready(arg) for a child started a moment ago; fail when it exits, after
 * CL_START_MS, or on stop. */
static int cl_wait_ready(pid_t *pid, const char *what, const char *log, bool (*ready)(void *),
			 void *arg)
{
	char why[64];

	for (int waited = 0;; waited += 20) {
		int st = -1;

		if (stop)
			return -EINTR;
		if (ready(arg))
			return 0;
		if (bench_reap(*pid, 0, &st) == 0) {
			*pid = 0;
			cl_err("%s exited before it was ready (%s)", what,
			       bench_status_str(st, why, sizeof(why)));
			cl_log_tail(what, log);
			return -EIO;
		}
		if (waited >= CL_START_MS) {
			cl_err("%s is not ready after %d s", what, CL_START_MS / 1000);
			cl_log_tail(what, log);
			return -ETIMEDOUT;
		}
		usleep(20000);
	}
}

/* Start argv with its stdout and stderr in the file log (made here), its pid in *pid, and
 * wait as cl_wait_ready; `what` names it in the messages that follow its start. */
static int cl_start(char *const argv[], const char *what, const char *log, pid_t *pid,
		    bool (*ready)(void *), void *arg)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	pid_t child;

	if (fd < 0) {
		int ret = -errno;

		cl_err("%s: %s", log, strerror(errno));
		return ret;
	}
	child = bench_spawn(argv, fd, fd);
	close(fd);
	if (child < 0) {
		cl_err("cannot start %s: %s", argv[0], strerror((int)-child));
		return (int)child;
	}
	*pid = child;
	return cl_wait_ready(pid, what, log, ready, arg);
}

static bool cl_etcd_ready(void *arg)
{
	static const char req[] = "GET /health HTTP/1.0\r\n\r\n";
	struct timeval tv = {.tv_sec = 1};
	char buf[4096];
	size_t got = 0;
	int fd = cl_connect(*(int *)arg);

	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)sizeof(req) - 1)
		while (got < sizeof(buf) - 1) {
			ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);

			if (n <= 0)
				break;
			got += (size_t)n;
		}
	close(fd);
	buf[got] = '\0';
	return strstr(buf, "\"health\":\"true\"") != NULL;
}

static int cl_etcd_start(struct cl_run *r)
{
	char url[64], peer[64], init[96], data[PATH_MAX + 16];
	int peer_port;

	r->etcd_port = bench_free_port();
	do
		peer_port = bench_free_port();
	while (peer_port == r->etcd_port && peer_port > 0);
	if (r->etcd_port < 0 || peer_port < 0) {
		cl_err("no free port for etcd: %s",
		       strerror(-(r->etcd_port < 0 ? r->etcd_port : peer_port)));
		return -EADDRINUSE;
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", r->etcd_port);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", peer_port);
	snprintf(init, sizeof(init), "bench=%s", peer);
	snprintf(data, sizeof(data), "%s/etcd", r->tmp);
	snprintf(r->etcd_log, sizeof(r->etcd_log), "%s/etcd.log", r->tmp);
	return cl_start((char *const[]){"etcd", "--name", "bench", "--data-dir", data,
					"--listen-client-urls", url, "--advertise-client-urls", url,
					"--listen-peer-urls", peer, "--initial-advertise-peer-urls",
					peer, "--initial-cluster", init, NULL},
			"etcd", r->etcd_log, &r->etcd, cl_etcd_ready, &r->etcd_port);
}

static bool cl_node_ready(void *arg)
{
	const struct cl_node *n = arg;
	struct statfs sf;

	return bench_mounted(n->dir) && statfs(n->dir, &sf) == 0 &&
	       (long)sf.f_type == CL_FUSE_MAGIC;
}

/* Start one daemon in the foreground (our child) and wait for its mount. */
static int cl_node_start(struct cl_run *r, struct cl_node *n)
{
	char bin[PATH_MAX + 16], size[32], url[64], what[16];
	const char *suffix = strrchr(r->tmp, '.') + 1;

	snprintf(bin, sizeof(bin), "%s/kvcachefs", r->bindir);
	snprintf(n->dir, sizeof(n->dir), "%s/%c", r->tmp, n->letter - 'A' + 'a');
	snprintf(n->log, sizeof(n->log), "%s/kvcachefs-%c.log", r->tmp, n->letter - 'A' + 'a');
	snprintf(size, sizeof(size), "%" PRIu64 "M", n->pool_size / MIB);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", r->etcd_port);
	snprintf(what, sizeof(what), "node %c", n->letter);
	if (mkdir(n->dir, 0755) < 0) {
		int ret = -errno;

		cl_err("mkdir %s: %s", n->dir, strerror(errno));
		n->dir[0] = '\0';
		return ret;
	}
	snprintf(n->pool, sizeof(n->pool), "/dev/shm/kvcache-bench-cluster.%s.%c", suffix,
		 n->letter - 'A' + 'a');
	return cl_start((char *const[]){bin, "-f", "--pool-size", size, "--pool-path", n->pool,
					"--etcd", url, "--cluster", r->cluster, "--listen",
					"127.0.0.1:0", "--secret-file", r->secret, n->dir,
					r->congestion ? "--tcp-congestion" : NULL,
					(char *)r->congestion, NULL},
			what, n->log, &n->pid, cl_node_ready, n);
}

static int cl_nodes(const char *mnt, struct kvcachefs_nodes *nd)
{
	int fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	memset(nd, 0, sizeof(*nd));
	nd->version = KVCACHEFS_ABI_VERSION;
	if (ioctl(fd, KVCACHEFS_IOC_NODES, nd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Both nodes list both members, up, with etcd reachable. */
static int cl_wait_members(struct cl_run *r)
{
	static struct kvcachefs_nodes nd; /* 7 KiB */
	uint64_t deadline = bench_now_ns() + CL_JOIN_MS * 1000000ull;

	for (int k = 0; k < CL_NNODES; k++) {
		struct cl_node *n = &r->node[k];

		for (;;) {
			unsigned up = 0;
			int ret = cl_nodes(n->dir, &nd);

			if (stop)
				return -EINTR;
			if (ret < 0) {
				cl_err("KVCACHEFS_IOC_NODES on node %c (%s): %s", n->letter, n->dir,
				       strerror(-ret));
				return ret;
			}
			for (uint32_t i = 0; i < nd.count && i < KVCACHEFS_NODES_MAX; i++) {
				const struct kvcachefs_node *e = &nd.node[i];

				up += !!(e->state & KVCACHEFS_NODE_UP);
				if (e->state & KVCACHEFS_NODE_SELF) {
					n->id = e->node_id;
					memcpy(n->addr, e->addr, sizeof(n->addr));
					n->addr[sizeof(n->addr) - 1] = '\0';
				}
			}
			if ((nd.flags & KVCACHEFS_NODES_CLUSTER) &&
			    !(nd.flags & KVCACHEFS_NODES_STALE) && nd.total == CL_NNODES &&
			    up == CL_NNODES)
				break;
			if (bench_now_ns() > deadline) {
				cl_err(
				    "node %c lists %u member(s), %u up%s, after %d s; expected %d",
				    n->letter, nd.total, up,
				    nd.flags & KVCACHEFS_NODES_STALE ? " (etcd unreachable)" : "",
				    CL_JOIN_MS / 1000, CL_NNODES);
				cl_log_tail(n->letter == 'A' ? "node A" : "node B", n->log);
				return -ETIMEDOUT;
			}
			usleep(50000);
		}
	}
	return 0;
}

static bool cl_redis_ready(void *arg)
{
	struct cl_run *r = arg;

	if (resp_connect(&r->conns[0], r->redis_port) < 0)
		return false;
	if (resp_ping(&r->conns[0]) == 0)
		return true;
	resp_close(&r->conns[0]);
	return false;
}

/* redis-server on a free loopback port, no persistence, and one connection per thread. */
static int cl_redis_start(struct cl_run *r)
{
	char port[16], dir[PATH_MAX + 16];
	int ret;

	r->redis_port = bench_free_port();
	if (r->redis_port < 0) {
		cl_err("no free port for redis-server: %s", strerror(-r->redis_port));
		return r->redis_port;
	}
	snprintf(port, sizeof(port), "%d", r->redis_port);
	snprintf(dir, sizeof(dir), "%s/redis", r->tmp);
	snprintf(r->redis_log, sizeof(r->redis_log), "%s/redis.log", r->tmp);
	if (mkdir(dir, 0700) < 0) {
		ret = -errno;
		cl_err("mkdir %s: %s", dir, strerror(errno));
		return ret;
	}
	ret = cl_start((char *const[]){"redis-server", "--port", port, "--bind", "127.0.0.1",
				       "--save", "", "--appendonly", "no", "--dir", dir,
				       "--daemonize", "no", "--logfile", "", NULL},
		       "redis-server", r->redis_log, &r->redis, cl_redis_ready, r);
	if (ret)
		return ret;
	resp_version(&r->conns[0], r->z.redis_version, sizeof(r->z.redis_version));
	for (int t = 1; t < r->threads; t++)
		if ((ret = resp_connect(&r->conns[t], r->redis_port)) < 0) {
			cl_err("connect to redis-server on port %d: %s", r->redis_port,
			       strerror(-ret));
			return ret;
		}
	return 0;
}

static int cl_rm_one(const char *path, const struct stat *sb, int type, struct FTW *f)
{
	bool dir = type == FTW_DP || type == FTW_D || type == FTW_DNR;

	(void)sb;
	(void)f;
	if ((dir ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		cl_err("cannot remove %s: %s", path, strerror(errno));
	return 0;
}

/* Undo whatever was started, in the reverse order, whatever state the run is in. */
static void cl_teardown(struct cl_run *r)
{
	bool mounted = false;
	char why[64];

	for (int t = 0; r->conns && t < r->threads; t++)
		resp_close(&r->conns[t]);
	if (r->kvc_b) /* before B's unmount: it holds the mount open */
		kvc_close(r->kvc_b);
	r->kvc_b = NULL;
	for (int k = CL_NNODES - 1; k >= 0; k--) {
		struct cl_node *n = &r->node[k];
		bool was_mounted;
		char what[16];
		int st = -1;

		if (!n->dir[0])
			continue;
		snprintf(what, sizeof(what), "node %c", n->letter);
		if (n->pid > 0 && bench_reap(n->pid, 0, &st) == 0) {
			n->pid = 0;
			cl_err("node %c's kvcachefs had exited (%s)", n->letter,
			       bench_status_str(st, why, sizeof(why)));
			cl_log_tail(what, n->log);
		}
		was_mounted = bench_mounted(n->dir);
		if (was_mounted &&
		    bench_run((char *const[]){"fusermount3", "-u", n->dir, NULL}, true) != 0 &&
		    bench_mounted(n->dir)) {
			cl_err("fusermount3 -u %s failed: unmounting it lazily", n->dir);
			bench_run((char *const[]){"fusermount3", "-uz", n->dir, NULL}, true);
		}
		/* The daemon exits once unmounted and removes its pool object; one stopped
		 * before its mount was up is asked with SIGTERM. */
		if (n->pid > 0 && !was_mounted)
			cl_kill(&n->pid);
		if (n->pid > 0 && bench_reap(n->pid, CL_STOP_MS, &st) < 0) {
			cl_err("node %c's kvcachefs (pid %d) did not exit after the unmount: "
			       "killing it",
			       n->letter, (int)n->pid);
			cl_kill(&n->pid);
		}
		n->pid = 0;
		if (n->pool[0] && unlink(n->pool) == 0)
			cl_err("removed %s, left behind by node %c", n->pool, n->letter);
		mounted |= bench_mounted(n->dir);
	}
	cl_kill(&r->redis);
	cl_kill(&r->etcd);
	if (!r->tmp[0])
		return;
	if (mounted)
		cl_err("%s left in place: a mount in it is still there", r->tmp);
	else
		nftw(r->tmp, cl_rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	r->tmp[0] = '\0';
}

/* Make every directory of the run on A and wait until B sees them (directories are shared
 * through etcd, asynchronously). */
static int cl_mkdirs(struct cl_run *r)
{
	char dirs[CL_NSIZES * 100 * CL_NSETS + 2][64], path[2 * PATH_MAX];
	int nd = 0;
	uint64_t deadline;

	for (int s = 0; s < CL_NSIZES; s++)
		for (int rep = 0; rep < r->reps; rep++)
			for (int set = 0; set < CL_NSETS; set++)
				if (cl_set_used(r, set))
					cl_set_dir(r, dirs[nd++], sizeof(dirs[0]), s, rep, set);
	snprintf(dirs[nd++], sizeof(dirs[0]), "stat-a");
	snprintf(dirs[nd++], sizeof(dirs[0]), "stat-b");
	for (int i = 0; i < nd; i++) {
		snprintf(path, sizeof(path), "%s/%.63s", r->node[CL_A].dir, dirs[i]);
		if (mkdir(path, 0755) < 0) {
			int ret = -errno;

			cl_err("mkdir %s on node A: %s", dirs[i], strerror(errno));
			return ret;
		}
	}
	deadline = bench_now_ns() + CL_DIR_MS * 1000000ull;
	for (int i = 0; i < nd; i++) {
		struct stat st;

		snprintf(path, sizeof(path), "%s/%.63s", r->node[CL_B].dir, dirs[i]);
		while (stat(path, &st) < 0) {
			int ret = -errno;

			if (stop)
				return -EINTR;
			if (ret != -ENOENT) {
				cl_err("stat of directory %s on node B: %s", dirs[i],
				       strerror(-ret));
				return ret;
			}
			if (bench_now_ns() > deadline) {
				cl_err("directory %s made on node A is not seen on node B after "
				       "%d s",
				       dirs[i], CL_DIR_MS / 1000);
				return -ETIMEDOUT;
			}
			usleep(10000);
		}
	}
	return 0;
}

/* ---- timed passes ------------------------------------------------------------------------ */

static int cl_job_fail(struct cl_job *j, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the job's first failure (the others are consequences). Returns err. */
static int cl_job_fail(struct cl_job *j, int err, const char *fmt, ...)
{
	int none = 0;

	if (atomic_compare_exchange_strong(&j->err, &none, err)) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

static int cl_one_fail(struct cl_job *j, const char *name, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record a failure of cl_one: "remote read of NAME on node B" (or "Redis GET of KEY") and
 * then what went wrong. Formatted here, off the path of the reads that succeed. */
static int cl_one_fail(struct cl_job *j, const char *name, int err, const char *fmt, ...)
{
	char rest[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rest, sizeof(rest), fmt, ap);
	va_end(ap);
	if (j->op == CL_GET)
		return cl_job_fail(j, err, "Redis GET of %s%s", name, rest);
	return cl_job_fail(j, err, "%s read of %s on node %c%s", j->remote ? "remote" : "local",
			   name, j->node->letter, rest);
}

/* Read block (or GET value) i into w->buf and check it: its ends, or whole. */
static int cl_one(struct cl_job *j, struct cl_worker *w, uint64_t i, bool whole)
{
	uint64_t seed = cl_seed(j->size, j->rep, j->set, i), got = 0, bad;
	char name[128], path[2 * PATH_MAX];
	int ret, fd;

	if (j->op == CL_READ) {
		snprintf(name, sizeof(name), "%s/b%06" PRIu64, j->dir, i);
		snprintf(path, sizeof(path), "%s/%s", j->node->dir, name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
		} else {
			ssize_t n = bench_read_full(fd, w->buf, j->size);

			ret = n < 0 ? (int)n : 0;
			got = n < 0 ? 0 : (uint64_t)n;
			close(fd);
		}
	} else {
		cl_key(name, sizeof(name), j->size, i);
		ret = resp_get(w->conn, name, w->buf, j->size, &got);
	}
	if (cl_quiet(ret))
		return ret;
	if (ret == -EPROTO && j->op == CL_GET)
		return cl_one_fail(j, name, ret, " failed: %s", w->conn->err);
	if (ret)
		return cl_one_fail(j, name, ret, " failed: %s", strerror(-ret));
	if (got != j->size)
		return cl_one_fail(j, name, -EIO, " returned %" PRIu64 " bytes, expected %" PRIu64,
				   got, j->size);
	if (whole) {
		bad = pattern_mismatch(w->buf, j->size, seed, 0);
		if (bad != j->size)
			return cl_one_fail(j, name, -EIO,
					   ": byte %" PRIu64 " is not what was written", bad);
	} else if (!cl_ends_ok(w->buf, j->size, seed)) {
		return cl_one_fail(j, name, -EIO, ": wrong content (first or last 8 bytes)");
	}
	return 0;
}

static void *cl_worker_main(void *arg)
{
	struct cl_worker *w = arg;
	struct cl_job *j = w->job;

	pthread_mutex_lock(&j->lock);
	while (!j->go)
		pthread_cond_wait(&j->cond, &j->lock);
	pthread_mutex_unlock(&j->lock);
	while (!stop && !atomic_load(&j->err)) {
		uint64_t i = atomic_fetch_add(&j->next, 1);

		if (i >= j->n || cl_one(j, w, i, false))
			break;
	}
	return NULL;
}

/* Run the job with nthreads threads (the clock runs from their release to the last join),
 * then check CL_VERIFY_SAMPLES of its blocks whole, untimed. GB/s in *gbps. A failure is
 * printed (once) and returned. */
static int cl_job_run(struct cl_run *r, struct cl_job *j, int nthreads, double *gbps)
{
	uint64_t t0, elapsed;
	int created = 0, ret;

	atomic_store(&j->next, 0);
	atomic_store(&j->err, 0);
	j->go = false;
	j->msg[0] = '\0';
	for (; created < nthreads; created++) {
		r->w[created].job = j;
		ret = pthread_create(&r->w[created].th, NULL, cl_worker_main, &r->w[created]);
		if (ret) {
			cl_job_fail(j, -ret, "pthread_create: %s", strerror(ret));
			break;
		}
	}
	pthread_mutex_lock(&j->lock);
	j->go = true;
	t0 = bench_now_ns();
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	for (int t = 0; t < created; t++)
		pthread_join(r->w[t].th, NULL);
	elapsed = bench_now_ns() - t0;
	ret = atomic_load(&j->err);
	for (int k = 0; k < CL_VERIFY_SAMPLES && !ret && !stop; k++)
		ret = cl_one(j, &r->w[0], (uint64_t)k * j->n / CL_VERIFY_SAMPLES, true);
	if (stop)
		return -EINTR;
	if (ret) {
		cl_err("%s", j->msg);
		return ret;
	}
	*gbps = (double)(j->n * j->size) / (double)elapsed; /* bytes per ns */
	return 0;
}

/* Write, or delete, the blocks of one set through A's mount. */
static int cl_set_io(struct cl_run *r, int s, int rep, int set, bool write)
{
	uint64_t size = cl_sizes[s];
	char dir[64], name[KVC_HASH_NAME_SIZE], path[2 * PATH_MAX];
	int ret = 0;

	cl_set_dir(r, dir, sizeof(dir), s, rep, set);
	for (uint64_t i = 0; i < r->z.count[s] && !ret; i++) {
		int fd;

		if (stop)
			return -EINTR;
		cl_block_name(name, sizeof(name), size, rep, set, i);
		snprintf(path, sizeof(path), "%s/%s/%s", r->node[CL_A].dir, dir, name);
		if (!write) {
			if (unlink(path) < 0)
				ret = -errno;
		} else if ((fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644)) < 0) {
			ret = -errno;
		} else {
			pattern_fill(r->wbuf, size, cl_seed(size, rep, set, i), 0);
			ret = bench_write_full(fd, r->wbuf, size);
			if (close(fd) < 0 && !ret) /* the seal */
				ret = -errno;
		}
		if (ret && !cl_quiet(ret))
			cl_err("%s of %s/%s on node A failed: %s", write ? "write" : "unlink", dir,
			       name, strerror(-ret));
	}
	return ret;
}

/* The Redis values GET reads: as many as blocks per pass, of each size. */
static int cl_redis_load(struct cl_run *r)
{
	char key[64];

	for (int s = 0; s < CL_NSIZES; s++)
		for (uint64_t i = 0; i < r->z.count[s]; i++) {
			int ret;

			if (stop)
				return -EINTR;
			cl_key(key, sizeof(key), cl_sizes[s], i);
			pattern_fill(r->wbuf, cl_sizes[s], cl_seed(cl_sizes[s], -1, 0, i), 0);
			ret = resp_set(&r->conns[0], key, r->wbuf, cl_sizes[s]);
			if (ret && !cl_quiet(ret)) {
				cl_err("Redis SET of %s failed: %s", key,
				       ret == -EPROTO ? r->conns[0].err : strerror(-ret));
				return ret;
			}
		}
	return 0;
}

/* ---- the side channel -------------------------------------------------------------------- */

/* The side set's names of (size s, rep) in r->snames, pointed to by r->snameptrs. */
static void cl_side_names(struct cl_run *r, int s, int rep)
{
	for (uint64_t i = 0; i < r->z.count[s]; i++) {
		cl_block_name(r->snames[i], sizeof(r->snames[i]), cl_sizes[s], rep, CL_SIDE, i);
		r->snameptrs[i] = r->snames[i];
	}
}

/*
 * B loads the side set of (s, rep), which A holds, as an engine loads a prefix: timed from
 * kvc_dir_open to kvc_dir_close, one thread. kvc_lookup asks KVC_LOOKUP_MAX names a call at
 * most: B fetches what it lacks from A (in parallel batches) before it answers. kvc_load_batch
 * then copies KVCACHEFS_LOCATE_MAX blocks a call at most, each to its place in r->sbuf, and
 * the ends of each are checked inside the clock; CL_VERIFY_SAMPLES of them are checked whole
 * after. GB/s in *gbps. A failure is said once, with the name, and returned.
 */
static int cl_side_pass(struct cl_run *r, int s, int rep, double *gbps)
{
	void *dst[KVCACHEFS_LOCATE_MAX];
	size_t cap[KVCACHEFS_LOCATE_MAX], len[KVCACHEFS_LOCATE_MAX];
	int errs[KVCACHEFS_LOCATE_MAX], ret;
	uint64_t size = cl_sizes[s], n = r->z.count[s], at = 0, t0, elapsed;
	const char *what = "kvc_dir_open";
	struct kvc_dir *d = NULL;
	char dir[64], why[128] = "";

	if (!r->kvc_b && (ret = kvc_open(r->node[CL_B].dir, 0, &r->kvc_b)) < 0) {
		cl_err("libkvcache on node B (%s): %s", r->node[CL_B].dir, strerror(-ret));
		return ret;
	}
	cl_set_dir(r, dir, sizeof(dir), s, rep, CL_SIDE);
	cl_side_names(r, s, rep);

	t0 = bench_now_ns();
	ret = kvc_dir_open(r->kvc_b, dir, &d);
	for (uint64_t i = 0; i < n && !ret; i += KVC_LOOKUP_MAX) {
		size_t k = n - i < KVC_LOOKUP_MAX ? (size_t)(n - i) : KVC_LOOKUP_MAX;
		int found = kvc_lookup(d, r->snameptrs + i, k);

		what = "kvc_lookup";
		at = i;
		if (found < 0) {
			ret = found;
		} else if ((size_t)found < k) {
			at = i + (uint64_t)found;
			snprintf(why, sizeof(why),
				 "not found (the %" PRIu64 " names before it were)", at);
			ret = -ENOENT;
		}
	}
	for (uint64_t i = 0; i < n && !ret; i += KVCACHEFS_LOCATE_MAX) {
		size_t k = n - i < KVCACHEFS_LOCATE_MAX ? (size_t)(n - i) : KVCACHEFS_LOCATE_MAX;
		int got;

		what = "kvc_load_batch";
		for (size_t j = 0; j < k; j++) {
			dst[j] = r->sbuf + (i + j) * size;
			cap[j] = size;
		}
		got = kvc_load_batch(d, r->snameptrs + i, k, dst, cap, len, errs);
		at = i;
		if (got < 0)
			ret = got;
		for (size_t j = 0; j < k && !ret; j++) {
			at = i + j;
			if (errs[j])
				ret = -errs[j];
			else if (len[j] != size)
				snprintf(why, sizeof(why), "%zu bytes, expected %" PRIu64, len[j],
					 size);
			else if (!cl_ends_ok(dst[j], size, cl_seed(size, rep, CL_SIDE, i + j)))
				snprintf(why, sizeof(why), "wrong content (first or last 8 bytes)");
			if (why[0])
				ret = -EIO;
		}
	}
	if (d)
		kvc_dir_close(d);
	elapsed = bench_now_ns() - t0;

	for (int v = 0; v < CL_VERIFY_SAMPLES && !ret; v++) {
		uint64_t i = (uint64_t)v * n / CL_VERIFY_SAMPLES,
			 bad = pattern_mismatch(r->sbuf + i * size, size,
						cl_seed(size, rep, CL_SIDE, i), 0);

		if (bad != size) {
			at = i;
			snprintf(why, sizeof(why), "byte %" PRIu64 " is not what was written", bad);
			ret = -EIO;
		}
	}
	if (stop)
		return -EINTR;
	if (ret) {
		if (!d)
			cl_err("side channel on node B: kvc_dir_open of %s: %s", dir,
			       strerror(-ret));
		else
			cl_err("side channel on node B: %s of %s/%s: %s", what, dir, r->snames[at],
			       why[0] ? why : strerror(-ret));
		return ret;
	}
	*gbps = (double)(n * size) / (double)elapsed; /* bytes per ns */
	return 0;
}

/* One repetition at one size: write the sets on A, read them on A then on B, load the side
 * set on B, GET the Redis values, delete the sets. A remote failure is recorded and the rest
 * goes on. */
static int cl_size_rep(struct cl_run *r, int s, int rep)
{
	struct cl_results *z = &r->z;
	int ret = 0;

	for (int set = 0; set < CL_NSETS && !ret; set++)
		if (cl_set_used(r, set))
			ret = cl_set_io(r, s, rep, set, true);
	for (int node = CL_A; node < CL_NNODES; node++)
		for (int p = 0; p < r->npasses && !ret; p++) {
			struct cl_job j = {.op = CL_READ,
					   .node = &r->node[node],
					   .remote = node != CL_A,
					   .size = cl_sizes[s],
					   .n = z->count[s],
					   .rep = rep,
					   .set = p,
					   .lock = PTHREAD_MUTEX_INITIALIZER,
					   .cond = PTHREAD_COND_INITIALIZER};
			double g = 0;

			if (j.remote && z->remote_failed)
				break;
			cl_set_dir(r, j.dir, sizeof(j.dir), s, rep, p);
			ret = cl_job_run(r, &j, p == CL_T1 ? 1 : r->threads, &g);
			if (ret == -EINTR)
				break;
			if (ret && j.remote) {
				z->remote_failed = true;
				cl_log_tail("node B", r->node[CL_B].log);
				ret = 0;
				break;
			}
			bench_keep_best(node == CL_A ? &z->local[s][p] : &z->remote[s][p], g);
		}
	if (!ret && !z->side_failed) {
		double g = 0;

		ret = cl_side_pass(r, s, rep, &g);
		if (!ret) {
			bench_keep_best(&z->side[s], g);
		} else if (ret != -EINTR) {
			z->side_failed = true;
			cl_log_tail("node B", r->node[CL_B].log);
			ret = 0;
		}
	}
	for (int p = 0; p < r->npasses && !ret; p++) {
		struct cl_job j = {.op = CL_GET,
				   .size = cl_sizes[s],
				   .n = z->count[s],
				   .rep = -1,
				   .lock = PTHREAD_MUTEX_INITIALIZER,
				   .cond = PTHREAD_COND_INITIALIZER};
		double g = 0;

		ret = cl_job_run(r, &j, p == CL_T1 ? 1 : r->threads, &g);
		if (!ret)
			bench_keep_best(&z->redis[s][p], g);
	}
	for (int set = 0; set < CL_NSETS && !ret; set++)
		if (cl_set_used(r, set))
			ret = cl_set_io(r, s, rep, set, false);
	return ret;
}

/* ---- latencies --------------------------------------------------------------------------- */

/* p50 and p99 of n samples (ns, sorted here) in microseconds. */
static void cl_pcts(uint64_t *v, size_t n, double out[2])
{
	qsort(v, n, sizeof(*v), bench_cmp_u64);
	out[0] = bench_pct(v, n, 50);
	out[1] = bench_pct(v, n, 99);
}

/* stat() of name i under node's dir, timed; a failure is said, not recorded. */
static int cl_stat_one(const struct cl_node *node, const char *dir, uint64_t i, bool remote,
		       uint64_t *ns)
{
	char path[2 * PATH_MAX];
	struct stat st;
	uint64_t t0;
	int ret;

	snprintf(path, sizeof(path), "%s/%s/s%06" PRIu64, node->dir, dir, i);
	t0 = bench_now_ns();
	ret = stat(path, &st) < 0 ? -errno : 0;
	*ns = bench_now_ns() - t0;
	if (ret == -EINTR && stop)
		return ret;
	if (ret) {
		cl_err("%s stat of %s/s%06" PRIu64 " on node %c failed: %s",
		       remote ? "remote" : "local", dir, i, node->letter, strerror(-ret));
		return ret;
	}
	if (!S_ISREG(st.st_mode) || st.st_size != CL_STAT_SIZE) {
		cl_err("%s stat of %s/s%06" PRIu64 " on node %c: mode 0%o, size %lld; expected a "
		       "block of %d bytes",
		       remote ? "remote" : "local", dir, i, node->letter, (unsigned)st.st_mode,
		       (long long)st.st_size, CL_STAT_SIZE);
		return -EIO;
	}
	return 0;
}

/* EXISTS of key i, timed. */
static int cl_exists_one(struct resp *c, uint64_t i, uint64_t *ns)
{
	char key[64];
	long long n = 0;
	uint64_t t0;
	int ret;

	snprintf(key, sizeof(key), "kvc:stat:%06" PRIu64, i);
	t0 = bench_now_ns();
	ret = resp_exists(c, key, &n);
	*ns = bench_now_ns() - t0;
	if (ret == -EINTR && stop)
		return ret;
	if (ret)
		cl_err("Redis EXISTS %s failed: %s", key, ret == -EPROTO ? c->err : strerror(-ret));
	else if (n != 1) {
		cl_err("Redis EXISTS %s: %lld, expected 1", key, n);
		ret = -EIO;
	}
	return ret;
}

/* Store the stat blocks on A: stat-a through libkvcache (A's kernel never sees the names),
 * stat-b through A's mount (B never saw them); and as many Redis keys. */
static int cl_stat_setup(struct cl_run *r)
{
	struct kvc *k = NULL;
	struct kvc_dir *d = NULL;
	char name[64], path[2 * PATH_MAX];
	int ret;

	pattern_fill(r->wbuf, CL_STAT_SIZE, CL_SEED, 0);
	ret = kvc_open(r->node[CL_A].dir, 0, &k);
	if (!ret)
		ret = kvc_dir_open(k, "stat-a", &d);
	if (ret)
		cl_err("libkvcache on node A (%s): %s", r->node[CL_A].dir, strerror(-ret));
	for (uint64_t i = 0; i < r->nstat && !ret; i++) {
		snprintf(name, sizeof(name), "s%06" PRIu64, i);
		ret = stop ? -EINTR : kvc_put(d, name, r->wbuf, CL_STAT_SIZE, 0);
		if (ret && !cl_quiet(ret))
			cl_err("kvc_put of stat-a/%s on node A: %s", name, strerror(-ret));
	}
	if (d)
		kvc_dir_close(d);
	if (k)
		kvc_close(k);
	for (uint64_t i = 0; i < r->nstat && !ret; i++) {
		int fd;

		if (stop)
			return -EINTR;
		snprintf(path, sizeof(path), "%s/stat-b/s%06" PRIu64, r->node[CL_A].dir, i);
		fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
		ret = fd < 0 ? -errno : bench_write_full(fd, r->wbuf, CL_STAT_SIZE);
		if (fd >= 0 && close(fd) < 0 && !ret)
			ret = -errno;
		if (ret && !cl_quiet(ret))
			cl_err("write of stat-b/s%06" PRIu64 " on node A failed: %s", i,
			       strerror(-ret));
	}
	for (uint64_t i = 0; i < r->nstat && !ret; i++) {
		if (stop)
			return -EINTR;
		snprintf(name, sizeof(name), "kvc:stat:%06" PRIu64, i);
		ret = resp_set(&r->conns[0], name, r->wbuf, 64);
		if (ret && !cl_quiet(ret))
			cl_err("Redis SET of %s failed: %s", name,
			       ret == -EPROTO ? r->conns[0].err : strerror(-ret));
	}
	return ret;
}

/* The three latencies, each in a tight loop (as an engine asking many names in a row would
 * see them) but over chunks of CL_STAT_CHUNK names taken in turn, so that drift on a busy
 * machine hits them alike. On a small VM a request and its reply between two processes cost
 * about three times more when they run on different CPUs (the wake-ups): these figures move
 * with where the scheduler puts the servers, and every kind is exposed to it. */
static int cl_stat_phase(struct cl_run *r)
{
	struct cl_results *z = &r->z;
	uint64_t *lat = calloc(3 * r->nstat, sizeof(*lat));
	uint64_t *la = lat, *lb = lat + r->nstat, *le = lat + 2 * r->nstat;
	int ret;

	if (!lat) {
		cl_err("memory for %" PRIu64 " latencies", 3 * r->nstat);
		return -ENOMEM;
	}
	ret = cl_stat_setup(r);
	for (uint64_t c = 0; c < r->nstat && !ret; c += CL_STAT_CHUNK) {
		uint64_t end = c + CL_STAT_CHUNK < r->nstat ? c + CL_STAT_CHUNK : r->nstat;

		for (uint64_t i = c; i < end && !ret; i++)
			ret =
			    stop ? -EINTR : cl_stat_one(&r->node[CL_A], "stat-a", i, false, &la[i]);
		for (uint64_t i = c; i < end && !ret && !z->rstat_failed; i++) {
			ret =
			    stop ? -EINTR : cl_stat_one(&r->node[CL_B], "stat-b", i, true, &lb[i]);
			if (ret && ret != -EINTR) {
				z->rstat_failed = true; /* said once; the others go on */
				ret = 0;
			}
		}
		for (uint64_t i = c; i < end && !ret; i++)
			ret = stop ? -EINTR : cl_exists_one(&r->conns[0], i, &le[i]);
	}
	if (!ret) {
		cl_pcts(la, r->nstat, z->stat_a);
		if (!z->rstat_failed)
			cl_pcts(lb, r->nstat, z->stat_b);
		cl_pcts(le, r->nstat, z->exists);
	}
	free(lat);
	return ret;
}

/* ---- results ----------------------------------------------------------------------------- */

static double cl_best(const double v[CL_NPASSES])
{
	return v[CL_T1] > v[CL_TN] ? v[CL_T1] : v[CL_TN];
}

static double cl_iperf(const struct cl_results *z)
{
	return z->iperf_pn > z->iperf_p1 ? z->iperf_pn : z->iperf_p1;
}

static int cl_target_index(void)
{
	for (int s = 0; s < CL_NSIZES; s++)
		if (cl_sizes[s] == CL_TARGET_SIZE)
			return s;
	return 0;
}

static bool cl_met(const struct cl_results *z)
{
	int t = cl_target_index();
	double rr = bench_ratio(cl_best(z->remote[t]), cl_best(z->redis[t])),
	       ri = bench_ratio(cl_best(z->remote[t]), cl_iperf(z));

	return !z->remote_failed && !z->rstat_failed && rr >= CL_TARGET_REDIS &&
	       ri >= CL_TARGET_IPERF && bench_ratio(z->stat_b[0], z->exists[0]) <= CL_TARGET_STAT;
}

/* A figure, or `none` when it was not measured. */
static const char *cl_fig(double v, const char *fmt, const char *none, char *buf, size_t cap)
{
	if (v <= 0)
		return none;
	snprintf(buf, cap, fmt, v);
	return buf;
}

static void cl_json_num(const char *key, double v, bool last)
{
	if (v > 0)
		printf("\"%s\": %.3f%s", key, v, last ? "" : ", ");
	else
		printf("\"%s\": null%s", key, last ? "" : ", ");
}

static void cl_print_json(const struct cl_run *r)
{
	const struct cl_results *z = &r->z;
	int t = cl_target_index();

	printf("{\"bench\": \"cluster\", \"reps\": %d, \"threads\": %d, \"mib\": %" PRIu64
	       ", \"stat\": \"best\", \"nodes\": %d, \"redis_version\": \"%s\",\n"
	       " \"tcp_congestion\": \"%s\", \"tcp_congestion_system\": \"%s\",\n"
	       " \"iperf3\": {",
	       r->reps, r->threads, r->mib, CL_NNODES, z->redis_version,
	       r->congestion ? r->congestion : r->system_cc, r->system_cc);
	cl_json_num("P1_GBps", z->iperf_p1, false);
	printf("\"parallel\": %d, ", r->threads);
	cl_json_num("PN_GBps", r->threads > 1 ? z->iperf_pn : 0, false);
	cl_json_num("baseline_GBps", cl_iperf(z), true);
	printf("},\n \"results\": [");
	for (int s = 0, first = 1; s < CL_NSIZES; s++)
		for (int p = 0; p < r->npasses; p++, first = 0) {
			printf("%s\n  {\"size\": %" PRIu64 ", \"blocks\": %" PRIu64
			       ", \"threads\": %d, ",
			       first ? "" : ",", cl_sizes[s], z->count[s],
			       p == CL_T1 ? 1 : r->threads);
			cl_json_num("local_GBps", z->local[s][p], false);
			cl_json_num("remote_GBps", z->remote[s][p], false);
			/* the side channel runs one thread: it shows in the 1-thread entry */
			cl_json_num("side_GBps", p == CL_T1 ? z->side[s] : 0, false);
			cl_json_num("redis_GBps", z->redis[s][p], true);
			printf("}");
		}
	printf("],\n \"ratios\": [");
	for (int s = 0; s < CL_NSIZES; s++) {
		double rem = cl_best(z->remote[s]), loc = cl_best(z->local[s]),
		       red = cl_best(z->redis[s]);

		printf("%s\n  {\"size\": %" PRIu64 ", ", s ? "," : "", cl_sizes[s]);
		cl_json_num("remote_redis", bench_ratio(rem, red), false);
		cl_json_num("remote_iperf3", bench_ratio(rem, cl_iperf(z)), false);
		cl_json_num("local_redis", bench_ratio(loc, red), false);
		cl_json_num("local_iperf3", bench_ratio(loc, cl_iperf(z)), false);
		cl_json_num("side_redis", bench_ratio(z->side[s], red), false);
		cl_json_num("side_iperf3", bench_ratio(z->side[s], cl_iperf(z)), false);
		cl_json_num("side_remote", bench_ratio(z->side[s], rem), true);
		printf("}");
	}
	printf("],\n \"latency_us\": {\"samples\": %" PRIu64 ", ", r->nstat);
	cl_json_num("stat_local_p50", z->stat_a[0], false);
	cl_json_num("stat_local_p99", z->stat_a[1], false);
	cl_json_num("stat_remote_p50", z->stat_b[0], false);
	cl_json_num("stat_remote_p99", z->stat_b[1], false);
	cl_json_num("exists_p50", z->exists[0], false);
	cl_json_num("exists_p99", z->exists[1], false);
	cl_json_num("stat_remote_exists_p50", bench_ratio(z->stat_b[0], z->exists[0]), true);
	printf("},\n \"targets\": {\"size\": %" PRIu64
	       ", \"remote_redis\": %.2f, \"remote_iperf3\": %.2f, "
	       "\"stat_remote_exists_p50\": %.2f},\n"
	       " \"remote_ok\": %s, \"side_ok\": %s, \"target_met\": %s}\n",
	       cl_sizes[t], CL_TARGET_REDIS, CL_TARGET_IPERF, CL_TARGET_STAT,
	       z->remote_failed || z->rstat_failed ? "false" : "true",
	       z->side_failed ? "false" : "true", cl_met(z) ? "true" : "false");
}

static void cl_print(const struct cl_run *r)
{
	const struct cl_results *z = &r->z;
	const char *rem_none = z->remote_failed ? "failed" : "-",
		   *side_none = z->side_failed ? "failed" : "-";
	char sz[24], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], title[64];
	double base = cl_iperf(z);
	int t = cl_target_index();

	printf("etcd + kvcachefs nodes A and B (one cluster) + redis-server %s, on loopback\n",
	       z->redis_version);
	if (r->congestion)
		printf("TCP congestion control: %s for the nodes and iperf3, the system's (%s) for "
		       "Redis\n",
		       r->congestion, r->system_cc);
	else
		printf("TCP congestion control: the system's (%s) for all\n", r->system_cc);
	printf("best of %d; GB/s = 10^9 bytes/s\n"
	       "local A, remote B: one block per open/read/close (Redis: one GET per value)\n"
	       "side B: B's side channel (lookup + load), one thread: kvc_lookup of the whole\n"
	       "  list (B fetches the blocks from A) + kvc_load_batch of all into one buffer\n",
	       r->reps);
	if (r->threads > 1)
		printf("iperf3 -P %d: %.2f GB/s   ", r->threads, z->iperf_pn);
	printf("iperf3 -P 1: %.2f GB/s   baseline (the best): %.2f GB/s\n\n", z->iperf_p1, base);
	printf("%-5s %7s %7s %10s %10s %10s %10s %13s\n", "size", "blocks", "threads", "local A",
	       "remote B", "side B", "Redis GET", "remote/Redis");
	for (int s = 0; s < CL_NSIZES; s++)
		for (int p = 0; p < r->npasses; p++)
			printf("%-5s %7" PRIu64 " %7d %10s %10s %10s %10s %13s\n",
			       bench_fmt_size(cl_sizes[s], sz, sizeof(sz)), z->count[s],
			       p == CL_T1 ? 1 : r->threads,
			       cl_fig(z->local[s][p], "%.2f", "-", b1, sizeof(b1)),
			       cl_fig(z->remote[s][p], "%.2f", rem_none, b2, sizeof(b2)),
			       p == CL_T1 ? cl_fig(z->side[s], "%.2f", side_none, b5, sizeof(b5))
					  : "", /* one thread only */
			       cl_fig(z->redis[s][p], "%.2f", "-", b3, sizeof(b3)),
			       cl_fig(bench_ratio(z->remote[s][p], z->redis[s][p]), "%.2f", "-", b4,
				      sizeof(b4)));
	printf("\nratios, the better thread count of each (through the mount; targets:\n"
	       "%s remote/Redis >= %.2f, remote/iperf3 >= %.2f)\n",
	       bench_fmt_size(cl_sizes[t], sz, sizeof(sz)), CL_TARGET_REDIS, CL_TARGET_IPERF);
	printf("%-5s %13s %14s %12s %13s\n", "size", "remote/Redis", "remote/iperf3", "local/Redis",
	       "local/iperf3");
	for (int s = 0; s < CL_NSIZES; s++) {
		double rem = cl_best(z->remote[s]), loc = cl_best(z->local[s]),
		       red = cl_best(z->redis[s]), rr = bench_ratio(rem, red),
		       ri = bench_ratio(rem, base);

		snprintf(b1, sizeof(b1), "%.24s%c", cl_fig(rr, "%.2f", rem_none, b3, sizeof(b3)),
			 s == t && rr < CL_TARGET_REDIS ? '*' : ' ');
		snprintf(b2, sizeof(b2), "%.24s%c", cl_fig(ri, "%.2f", rem_none, b4, sizeof(b4)),
			 s == t && ri < CL_TARGET_IPERF ? '*' : ' ');
		printf("%-5s %13s %14s %12s %13s\n", bench_fmt_size(cl_sizes[s], sz, sizeof(sz)),
		       b1, b2, cl_fig(bench_ratio(loc, red), "%.2f", "-", b3, sizeof(b3)),
		       cl_fig(bench_ratio(loc, base), "%.2f", "-", b5, sizeof(b5)));
	}
	printf("\nside channel (lookup + load) on B, for information (no target)\n");
	printf("%-5s %12s %13s %13s\n", "size", "side/Redis", "side/iperf3", "side/remote");
	for (int s = 0; s < CL_NSIZES; s++)
		printf("%-5s %12s %13s %13s\n", bench_fmt_size(cl_sizes[s], sz, sizeof(sz)),
		       cl_fig(bench_ratio(z->side[s], cl_best(z->redis[s])), "%.2f", side_none, b1,
			      sizeof(b1)),
		       cl_fig(bench_ratio(z->side[s], base), "%.2f", side_none, b2, sizeof(b2)),
		       cl_fig(bench_ratio(z->side[s], cl_best(z->remote[s])), "%.2f", side_none, b6,
			      sizeof(b6)));
	rem_none = z->rstat_failed ? "failed" : "-";
	snprintf(title, sizeof(title), "latency (us), %" PRIu64 " names each, never looked up",
		 r->nstat);
	printf("\n%-50s %8s %8s\n", title, "p50", "p99");
	printf("%-50s %8s %8s\n", "stat() on A of a block of A (local)",
	       cl_fig(z->stat_a[0], "%.1f", "-", b1, sizeof(b1)),
	       cl_fig(z->stat_a[1], "%.1f", "-", b2, sizeof(b2)));
	printf("%-50s %8s %8s\n", "stat() on B of a block of A (remote)",
	       cl_fig(z->stat_b[0], "%.1f", rem_none, b1, sizeof(b1)),
	       cl_fig(z->stat_b[1], "%.1f", rem_none, b2, sizeof(b2)));
	printf("%-50s %8s %8s\n", "Redis EXISTS (one connection)",
	       cl_fig(z->exists[0], "%.1f", "-", b1, sizeof(b1)),
	       cl_fig(z->exists[1], "%.1f", "-", b2, sizeof(b2)));
	{
		double sr = bench_ratio(z->stat_b[0], z->exists[0]);

		printf("remote stat p50 / Redis EXISTS p50: %s%s (target <= %.2f)\n",
		       cl_fig(sr, "%.2f", rem_none, b1, sizeof(b1)), sr > CL_TARGET_STAT ? "*" : "",
		       CL_TARGET_STAT);
	}
	if (z->side_failed)
		printf("\nside-channel loads on node B failed (see above)\n");
	if (z->remote_failed || z->rstat_failed)
		printf("\nremote %s on node B failed (see above): the targets cannot be met\n",
		       z->remote_failed && z->rstat_failed ? "reads and stat"
		       : z->remote_failed		   ? "reads"
							   : "stat");
	else if (!cl_met(z))
		printf("* below its target\n");
	else
		printf("targets met\n");
}

/* --plot: GB/s of every pass (size x thread count) next to Redis GET and iperf3; the ratios
 * of the better thread count against the two target lines; the stat/EXISTS latencies with
 * the line that remote stat p50 must stay under. */
static int cl_plot(const struct cl_run *r)
{
	const struct cl_results *z = &r->z;
	double base = cl_iperf(z);
	char row[48], sz[24], line[80];
	struct bench_plot *p;
	int t = cl_target_index(), ret;

	p = bench_plot_begin("cluster",
			     "reads of blocks held by another node (two kvcachefs nodes + etcd on "
			     "loopback) vs redis-server %s and iperf3; best of %d; %s",
			     z->redis_version, r->reps,
			     z->remote_failed || z->rstat_failed ? "remote reads or stat FAILED"
			     : cl_met(z)			 ? "targets met"
								 : "targets MISSED");
	bench_plot_panel(p, "one block per open/read/close (Redis: one GET per value)",
			 "block size, threads", "GB/s (10^9 bytes/s)",
			 (const char *const[]){"local A", "remote B", "side channel B", "Redis GET",
					       "iperf3 (baseline)", NULL});
	for (int s = 0; s < CL_NSIZES; s++)
		for (int pass = 0; pass < r->npasses; pass++) {
			int th = pass == CL_T1 ? 1 : r->threads;

			snprintf(row, sizeof(row), "%s, %d thread%s",
				 bench_fmt_size(cl_sizes[s], sz, sizeof(sz)), th,
				 th > 1 ? "s" : "");
			/* the side channel runs one thread */
			bench_plot_row(p, row,
				       (const double[]){z->local[s][pass], z->remote[s][pass],
							pass == CL_T1 ? z->side[s] : 0,
							z->redis[s][pass], base});
		}
	bench_plot_panel(p, "ratios, the better thread count of each", "block size",
			 "ratio (1.00 = as fast)",
			 (const char *const[]){"remote / Redis GET", "remote / iperf3",
					       "side / Redis GET", "side / iperf3", NULL});
	for (int s = 0; s < CL_NSIZES; s++) {
		double rem = cl_best(z->remote[s]), red = cl_best(z->redis[s]);

		bench_plot_row(p, bench_fmt_size(cl_sizes[s], sz, sizeof(sz)),
			       (const double[]){bench_ratio(rem, red), bench_ratio(rem, base),
						bench_ratio(z->side[s], red),
						bench_ratio(z->side[s], base)});
	}
	bench_fmt_size(cl_sizes[t], sz, sizeof(sz));
	snprintf(line, sizeof(line), "target: %s remote / Redis GET >= %.1f", sz, CL_TARGET_REDIS);
	bench_plot_line(p, 0, CL_TARGET_REDIS, line);
	snprintf(line, sizeof(line), "target: %s remote / iperf3 >= %.1f", sz, CL_TARGET_IPERF);
	bench_plot_line(p, 1, CL_TARGET_IPERF, line);
	snprintf(line, sizeof(line), "latency, %" PRIu64 " names each, never looked up", r->nstat);
	bench_plot_panel(p, line, "percentile", "microseconds",
			 (const char *const[]){"stat() on A (local)", "stat() on B (remote)",
					       "Redis EXISTS", NULL});
	bench_plot_row(p, "p50", (const double[]){z->stat_a[0], z->stat_b[0], z->exists[0]});
	bench_plot_row(p, "p99", (const double[]){z->stat_a[1], z->stat_b[1], z->exists[1]});
	if (z->exists[0] > 0) {
		snprintf(line, sizeof(line), "target: remote p50 <= %.1f x EXISTS p50",
			 CL_TARGET_STAT);
		bench_plot_line(p, 1, CL_TARGET_STAT * z->exists[0], line);
	}
	ret = bench_plot_write(p, r->plot);
	bench_plot_free(p);
	return ret;
}

/* ---- the command ------------------------------------------------------------------------- */

static void cl_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: kvcache-bench cluster [--mib M] [--reps R] [--threads T] [--seconds S]\n"
	    "                             [--stat-count N] [--tcp-congestion NAME] [--json]\n"
	    "                             [--plot FILE.png]\n"
	    "Starts an etcd, two kvcachefs nodes A and B joined to one cluster and a\n"
	    "redis-server, all on loopback (kvcachefs is found next to this binary), writes\n"
	    "blocks of 2M and 256K through A's mount and reads them, one block per\n"
	    "open/read/close, on A (local) and on B (remote: fetched from A; fresh names for\n"
	    "every pass), with 1 and T threads; and on B through its side channel, one thread,\n"
	    "as an engine loads a remote prefix: kvc_lookup of a fresh set written on A (B\n"
	    "fetches the blocks) + kvc_load_batch of all of it into one buffer. Against Redis\n"
	    "GET of as many values of the same size over 1 and T connections, and iperf3 over\n"
	    "loopback (-P 1 and -P T). Then the p50/p99 latency of stat() on B of blocks held\n"
	    "by A, of stat() on A of its own blocks, and of Redis EXISTS, each on names never\n"
	    "looked up before.\n"
	    "Targets (through the mount): 2M remote/Redis GET >= %.1f, remote/iperf3 >= %.1f\n"
	    "(the better thread count of each); remote stat p50 <= %.1f x Redis EXISTS p50.\n"
	    "The side channel's ratios are printed for information.\n"
	    "  --mib M         MiB per size and per pass (default %d: %d blocks of 2M)\n"
	    "  --reps R        repetitions, best kept (default %d)\n"
	    "  --threads T     threads and Redis connections of the parallel pass (default %d)\n"
	    "  --seconds S     seconds per iperf3 run (default %d)\n"
	    "  --stat-count N  names per latency measurement (default %d)\n"
	    "  --tcp-congestion NAME\n"
	    "                  TCP congestion control of both nodes (their --tcp-congestion)\n"
	    "                  and of iperf3 (-C); Redis keeps the system's, which is printed\n"
	    "                  (default: the system's for all)\n"
	    "  --json          print the results as JSON\n"
	    "  --plot FILE.png also draw them with gnuplot (Debian package gnuplot-nox): GB/s\n"
	    "                  of every size and thread count next to Redis GET and iperf3,\n"
	    "                  the ratios against the target lines (drawn also when a target\n"
	    "                  is missed) and the latencies; checked before the run\n"
	    "Needs root (mounts), etcd (Debian package etcd-server), redis-server, iperf3 and\n"
	    "fusermount3. Memory: A's pool holds one repetition, B's every block it reads\n"
	    "(it may keep copies), the side channel's buffer one set of M MiB. Exit status:\n"
	    "0 targets met, 3 a target missed, 1 error (a remote read, side-channel load or\n"
	    "stat that failed, or a plot that could not be drawn, included; the rest is still\n"
	    "printed), 2 usage.\n",
	    CL_TARGET_REDIS, CL_TARGET_IPERF, CL_TARGET_STAT, CL_DEFAULT_MIB,
	    (int)(CL_DEFAULT_MIB * MIB / CL_TARGET_SIZE), CL_DEFAULT_REPS, CL_DEFAULT_THREADS,
	    CL_DEFAULT_SECONDS, CL_DEFAULT_STATS);
}

/* Pools: A holds one repetition's sets of a size (the side channel's included) and the stat
 * blocks; B every block it reads or loads, in case it keeps a copy of each. Both with a
 * quarter more, below eviction's watermark. The side channel's buffer holds a whole set. */
static int cl_size_pools(struct cl_run *r)
{
	uint64_t a = 0, b = 0, stat = 2 * r->nstat * 2 * CL_STAT_SIZE, redis, need, avail, shm;
	struct statvfs sv;

	r->sbuf_size = 0;
	for (int s = 0; s < CL_NSIZES; s++) {
		uint64_t one = r->z.count[s] * cl_sizes[s], set = one * (uint64_t)(r->npasses + 1);

		if (set > a)
			a = set;
		if (one > r->sbuf_size)
			r->sbuf_size = one;
		b += set * (uint64_t)r->reps;
	}
	a = ((a + stat) * 5 / 4 + CL_POOL_SLACK + MIB - 1) / MIB * MIB;
	b = ((b + stat) * 5 / 4 + CL_POOL_SLACK + MIB - 1) / MIB * MIB;
	r->node[CL_A].pool_size = a;
	r->node[CL_B].pool_size = b;
	redis = (r->z.count[0] * cl_sizes[0] + r->z.count[1] * cl_sizes[1]) * 5 / 4 + 64 * MIB;
	need = a + b + redis + r->sbuf_size + (uint64_t)(r->threads + 1) * CL_TARGET_SIZE;
	avail = bench_meminfo("MemAvailable");
	if (avail && need > avail) {
		cl_err("needs about %" PRIu64 " MiB of memory (pools of %" PRIu64 " and %" PRIu64
		       " MiB, Redis %" PRIu64 " MiB), %" PRIu64
		       " MiB available: lower --mib or --reps",
		       need / MIB, a / MIB, b / MIB, redis / MIB, avail / MIB);
		return -ENOMEM;
	}
	if (statvfs("/dev/shm", &sv) == 0 && (shm = (uint64_t)sv.f_bavail * sv.f_frsize) < a + b) {
		cl_err("the pools need %" PRIu64 " MiB on /dev/shm, %" PRIu64
		       " MiB free: lower --mib or --reps",
		       (a + b) / MIB, shm / MIB);
		return -ENOSPC;
	}
	return 0;
}

/* Everything up to the first measurement. */
static int cl_setup(struct cl_run *r)
{
	char tmpl[] = "/tmp/kvcache-bench-cluster.XXXXXX", ids[2][20];
	unsigned char rnd[4];
	int ret;

	if (!mkdtemp(tmpl)) {
		ret = -errno;
		cl_err("mkdtemp: %s", strerror(errno));
		return ret;
	}
	snprintf(r->tmp, sizeof(r->tmp), "%s", tmpl);
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(r->cluster, sizeof(r->cluster), "bench-%d-%02x%02x%02x%02x", (int)getpid(), rnd[0],
		 rnd[1], rnd[2], rnd[3]);
	ret = cl_secret(r);
	if (!ret)
		ret = cl_etcd_start(r);
	for (int k = 0; k < CL_NNODES && !ret; k++)
		ret = cl_node_start(r, &r->node[k]);
	if (!ret)
		ret = cl_wait_members(r);
	if (!ret)
		ret = cl_redis_start(r);
	if (!ret)
		ret = cl_mkdirs(r);
	if (ret)
		return ret;
	for (int k = 0; k < CL_NNODES; k++)
		snprintf(ids[k], sizeof(ids[k]), "%016" PRIx64, r->node[k].id);
	fprintf(stderr,
		"kvcache-bench: cluster: etcd on 127.0.0.1:%d; cluster %s: node A %s on %s (pool "
		"%" PRIu64 " MiB), node B %s on %s (pool %" PRIu64
		" MiB); redis-server %s on 127.0.0.1:%d\n",
		r->etcd_port, r->cluster, ids[CL_A], r->node[CL_A].addr,
		r->node[CL_A].pool_size / MIB, ids[CL_B], r->node[CL_B].addr,
		r->node[CL_B].pool_size / MIB, r->z.redis_version, r->redis_port);
	return 0;
}

static int cl_measure(struct cl_run *r)
{
	char sz[24];
	int ret = cl_redis_load(r);

	for (int rep = 0; rep < r->reps && !ret; rep++) {
		double g = 0;

		cl_progress("kvcache-bench: cluster: run %d: iperf3", rep + 1);
		ret = tr_iperf3(1, r->seconds, r->congestion, &g);
		if (!ret)
			bench_keep_best(&r->z.iperf_p1, g);
		if (!ret && r->threads > 1) {
			ret = tr_iperf3(r->threads, r->seconds, r->congestion, &g);
			if (!ret)
				bench_keep_best(&r->z.iperf_pn, g);
		}
		for (int s = 0; s < CL_NSIZES && !ret; s++) {
			if (!cl_midline) /* an error ended the line */
				cl_progress("kvcache-bench: cluster: run %d:", rep + 1);
			cl_progress(" %s", bench_fmt_size(cl_sizes[s], sz, sizeof(sz)));
			ret = cl_size_rep(r, s, rep);
		}
		if (cl_midline)
			cl_progress("\n");
	}
	if (!ret) {
		cl_progress("kvcache-bench: cluster: latencies\n");
		ret = cl_stat_phase(r);
	}
	return ret;
}

int cmd_cluster(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"mib", required_argument, NULL, 'm'},
	    {"reps", required_argument, NULL, 'r'},
	    {"threads", required_argument, NULL, 't'},
	    {"seconds", required_argument, NULL, 's'},
	    {"stat-count", required_argument, NULL, 'n'},
	    {"json", no_argument, NULL, 'j'},
	    {"plot", required_argument, NULL, 'P'},
	    {"tcp-congestion", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static const char *const progs[] = {"etcd", "redis-server", "iperf3", "fusermount3"};
	static const char *const pkgs[] = {"etcd-server", "redis-server", "iperf3", "fuse3"};
	struct cl_run r = {.mib = CL_DEFAULT_MIB,
			   .nstat = CL_DEFAULT_STATS,
			   .reps = CL_DEFAULT_REPS,
			   .threads = CL_DEFAULT_THREADS,
			   .seconds = CL_DEFAULT_SECONDS,
			   .node = {{.letter = 'A'}, {.letter = 'B'}}};
	char bin[PATH_MAX + 16];
	uint64_t most = 0; /* blocks of the largest set */
	int c, v, ret = 0;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (bench_arg_int("--mib", optarg, 2, 1 << 20, &v) < 0)
				return 2;
			r.mib = (uint64_t)v;
			break;
		case 'r':
			if (bench_arg_int("--reps", optarg, 1, 100, &r.reps) < 0)
				return 2;
			break;
		case 't':
			if (bench_arg_int("--threads", optarg, 1, CL_MAX_THREADS, &r.threads) < 0)
				return 2;
			break;
		case 's':
			if (bench_arg_int("--seconds", optarg, 1, 600, &r.seconds) < 0)
				return 2;
			break;
		case 'n':
			if (bench_arg_int("--stat-count", optarg, 1, 1000000, &v) < 0)
				return 2;
			r.nstat = (uint64_t)v;
			break;
		case 'j':
			r.json = true;
			break;
		case 'P':
			r.plot = optarg;
			break;
		case 'C':
			r.congestion = optarg;
			break;
		case 'h':
			cl_usage(stdout);
			return 0;
		default:
			cl_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		cl_usage(stderr);
		return 2;
	}
	ret = bench_congestion("cluster", r.congestion, r.system_cc, sizeof(r.system_cc));
	if (ret < 0)
		return ret == -EINVAL ? 2 : 1;
	r.npasses = r.threads > 1 ? CL_NPASSES : 1;
	for (int s = 0; s < CL_NSIZES; s++)
		r.z.count[s] = r.mib * MIB / cl_sizes[s];
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++)
		if (!bench_in_path(progs[i])) {
			cl_err("%s not found in PATH (Debian package %s)", progs[i], pkgs[i]);
			return 1;
		}
	if (r.plot && bench_plot_check(r.plot) < 0)
		return 1;
	if (bench_bin_dir(r.bindir, sizeof(r.bindir)) < 0)
		return 1;
	snprintf(bin, sizeof(bin), "%s/kvcachefs", r.bindir);
	if (access(bin, X_OK) < 0) {
		cl_err("%s: %s (set KVC_BIN_DIR to the build's bin/)", bin, strerror(errno));
		return 1;
	}
	if (cl_size_pools(&r) < 0)
		return 1;

	r.conns = calloc((size_t)r.threads, sizeof(*r.conns));
	r.w = calloc((size_t)r.threads, sizeof(*r.w));
	if (!r.conns || !r.w || !(r.wbuf = bench_buffer(CL_TARGET_SIZE))) {
		cl_err("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	for (int t = 0; t < r.threads; t++) {
		r.conns[t].fd = -1;
		r.w[t].conn = &r.conns[t];
		if (!(r.w[t].buf = bench_buffer(CL_TARGET_SIZE))) {
			cl_err("out of memory");
			ret = -ENOMEM;
			goto out;
		}
	}
	for (int s = 0; s < CL_NSIZES; s++)
		if (r.z.count[s] > most)
			most = r.z.count[s];
	r.snames = calloc(most, sizeof(*r.snames));
	r.snameptrs = calloc(most, sizeof(*r.snameptrs));
	if (!r.snames || !r.snameptrs || !(r.sbuf = bench_buffer(r.sbuf_size))) {
		cl_err("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	install_signals();
	signal(SIGPIPE, SIG_IGN);
	ret = cl_setup(&r);
	if (!ret)
		ret = cl_measure(&r);
out:
	if (ret == -EINTR && stop)
		fprintf(stderr, "\nkvcache-bench: interrupted, cleaning up\n");
	cl_teardown(&r);
	if (!ret) {
		if (r.json)
			cl_print_json(&r);
		else
			cl_print(&r);
		ret = r.z.remote_failed || r.z.rstat_failed || r.z.side_failed ? 1
		      : cl_met(&r.z)					       ? 0
									       : 3;
		if (r.plot && cl_plot(&r) < 0)
			ret = 1;
	}
	for (int t = 0; r.w && t < r.threads; t++)
		bench_buffer_free(r.w[t].buf, CL_TARGET_SIZE);
	free(r.w);
	free(r.conns);
	bench_buffer_free(r.wbuf, CL_TARGET_SIZE);
	bench_buffer_free(r.sbuf, r.sbuf_size);
	free(r.snames);
	free(r.snameptrs);
	return ret < 0 ? 1 : ret;
}
