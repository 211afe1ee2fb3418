/*
 * bench: kvcache-bench, the benchmarks of kvcachefs, each reported against a baseline run in
 * the same process (these machines have 2 cores: absolute figures alone mean little).
 *
 *   kvcache-bench fs      write, stat and read blocks through kvcachefs, tmpfs and
 *                         kvcache-memfs (a trivial in-memory libfuse filesystem with the same
 *                         FUSE settings) and print the ratios;
 *   kvcache-bench memory  the daemon's anonymous memory per stored block, beyond the pool.
 *
 * Every filesystem is mounted on a fresh directory made with mkdtemp under /tmp and is
 * unmounted and removed before exit, on errors and on SIGINT/SIGTERM too: the signal handler
 * only sets `stop`; every loop checks it and unwinds through the same cleanup. Daemons are
 * started in their own process group, so a Ctrl-C on the terminal reaches only the bench,
 * which then unmounts them.
 *
 * Blocks of kvcachefs are immutable once closed, so every repetition writes fresh names (a
 * directory per repetition) and deletes them afterwards, which also keeps the pool from
 * filling up and evicting blocks under the benchmark.
 */
#include "fs/options.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1ull << 20)

#define FUSE_SUPER_MAGIC 0x65735546
#define TMPFS_MAGIC	 0x01021994

/* Default number of blocks per size: ~512 MiB per phase, between these bounds. */
#define FS_BYTES_PER_PHASE (512 * MIB)
#define FS_MIN_COUNT	   16
#define FS_MAX_COUNT	   4096
#define FS_DEFAULT_SIZES   "2M,256K,64K"
#define FS_DEFAULT_REPS	   3
#define FS_MAX_SIZES	   16
#define FS_VERIFY_SAMPLES  8 /* blocks whose content is checked per read phase */
#define MIN_POOL	   (256 * MIB)

#define MEM_DEFAULT_BLOCKS   1000000ull
#define MEM_DEFAULT_NAME_LEN 32
#define MEM_NDIRS	     256
#define MEM_TARGET_BASE	     256 /* bytes per block allowed beyond the name */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* No SA_RESTART: a blocked syscall returns EINTR and the loop around it sees `stop`. */
static void install_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* "2M", "256K", "1536K", "4097": the shortest exact form that opt_parse_size reads back. */
static void fmt_size(uint64_t v, char *buf, size_t cap)
{
	static const char units[] = "KMGT";
	int k = -1;

	while (v && v % 1024 == 0 && k < 3) {
		v /= 1024;
		k++;
	}
	if (k < 0)
		snprintf(buf, cap, "%" PRIu64, v);
	else
		snprintf(buf, cap, "%" PRIu64 "%c", v, units[k]);
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

/* Option values. Each parser prints the one error line and returns -EINVAL for a bad value;
 * the caller then exits 2. */
static int arg_positive(const char *opt, const char *arg, uint64_t *out)
{
	*out = strtoull(arg, NULL, 10);
	if (!*out) {
		fprintf(stderr, "kvcache-bench: %s: a positive number\n", opt);
		return -EINVAL;
	}
	return 0;
}

static int arg_int(const char *opt, const char *arg, int lo, int hi, int *out)
{
	*out = atoi(arg);
	if (*out < lo || *out > hi) {
		fprintf(stderr, "kvcache-bench: %s: %d to %d\n", opt, lo, hi);
		return -EINVAL;
	}
	return 0;
}

/* The options every command takes (--pool-size, --json, --help) and unknown ones, for the
 * default case of its getopt switch. Returns -1 to go on parsing, else the exit status. */
static int arg_common(int c, uint64_t *pool, bool *json, void (*usage)(FILE *out))
{
	switch (c) {
	case 'p':
		if (opt_parse_size(optarg, pool) < 0 || !*pool) {
			fprintf(stderr, "kvcache-bench: --pool-size: bad size '%s'\n", optarg);
			return 2;
		}
		return -1;
	case 'j':
		*json = true;
		return -1;
	case 'h':
		usage(stdout);
		return 0;
	default:
		usage(stderr);
		return 2;
	}
}

/* ---- processes and mounts -------------------------------------------------------------- */

/* Directory of our own binary, or $KVC_BIN_DIR. Prints the error. */
static int bin_dir(char *out, size_t cap)
{
	const char *env = getenv("KVC_BIN_DIR");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(out, cap, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0) {
		n = -errno;
		fprintf(stderr, "kvcache-bench: cannot find my own directory\n");
		return (int)n;
	}
	self[n] = '\0';
	snprintf(out, cap, "%s", dirname(self));
	return 0;
}

/* Run argv (searched in PATH) in its own process group, wait, return its exit status (0..255),
 * 128 + signal if killed, or -errno if it could not be started. */
static int run_cmd(char *const argv[], bool quiet)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		setpgid(0, 0);
		if (quiet) {
			int null = open("/dev/null", O_WRONLY);

			if (null >= 0) {
				dup2(null, 1);
				dup2(null, 2);
			}
		}
		execvp(argv[0], argv);
		fprintf(stderr, "kvcache-bench: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

/* Is dir the mount point of a mount in our namespace? */
static bool is_mounted(const char *dir)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096], mp[PATH_MAX];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && !strcmp(mp, dir))
			found = true;
	fclose(f);
	return found;
}

/* The pid of the running process whose argv[0] ends in `prog` and whose argv holds `arg`;
 * 0 if none. */
static pid_t find_daemon(const char *prog, const char *arg)
{
	DIR *d = opendir("/proc");
	const char *base = strrchr(prog, '/') ? strrchr(prog, '/') + 1 : prog;
	struct dirent *de;
	pid_t found = 0;

	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		char path[300], buf[8192], *p, *end;
		ssize_t n;
		int fd;
		bool prog_ok = false;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		end = buf + n;
		for (p = buf; p < end; p += strlen(p) + 1) {
			const char *b = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;

			if (p == buf)
				prog_ok = !strcmp(b, base);
			else if (prog_ok && !strcmp(p, arg))
				found = (pid_t)atoi(de->d_name);
		}
	}
	closedir(d);
	return found;
}

/* A field of /proc/<pid>/status in bytes (the kernel prints kB), or -errno. */
static int64_t proc_status_bytes(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t flen = strlen(field);
	int64_t v = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, flen) && line[flen] == ':') {
			v = strtoll(line + flen + 1, NULL, 10) * 1024;
			break;
		}
	fclose(f);
	return v;
}

enum target_kind { TARGET_KVCACHEFS, TARGET_TMPFS, TARGET_MEMFS, TARGET_NKINDS };

static const char *const target_names[TARGET_NKINDS] = {"kvcachefs", "tmpfs", "memfs"};

/* One mounted filesystem under test. */
struct target {
	enum target_kind kind;
	char bin[PATH_MAX]; /* FUSE daemons: the binary started */
	char dir[PATH_MAX]; /* the mkdtemp mount point; "" before it exists */
	pid_t pid;	    /* FUSE daemons: found after the mount, 0 if unknown */
};

/* Every target with a directory, for cleanup on any exit path. */
static struct target *live[TARGET_NKINDS];

/* The binary behind a target: $KVC_BENCH_FS_BIN may replace kvcachefs (for testing the bench
 * itself); it then gets --pool-size only if it is called kvcachefs. */
static int target_bin(struct target *t, const char *bindir)
{
	const char *env = getenv("KVC_BENCH_FS_BIN");

	if (t->kind == TARGET_KVCACHEFS && env && *env)
		snprintf(t->bin, sizeof(t->bin), "%s", env);
	else
		snprintf(t->bin, sizeof(t->bin), "%s/%s", bindir,
			 t->kind == TARGET_KVCACHEFS ? "kvcachefs" : "kvcache-memfs");
	if (access(t->bin, X_OK) < 0) {
		fprintf(stderr, "kvcache-bench: %s: %s (set KVC_BIN_DIR to the build's bin/)\n",
			t->bin, strerror(errno));
		return -ENOENT;
	}
	return 0;
}

/* Is the target's filesystem really mounted and answering? A FUSE daemon that died after
 * mounting leaves the bare directory behind, and the benchmark must not measure that. */
static int target_check(const struct target *t)
{
	struct statfs sf;
	long want = t->kind == TARGET_TMPFS ? TMPFS_MAGIC : FUSE_SUPER_MAGIC;

	if (statfs(t->dir, &sf) < 0) {
		fprintf(stderr, "kvcache-bench: %s: statfs %s: %s\n", target_names[t->kind], t->dir,
			strerror(errno));
		return -errno;
	}
	if ((long)sf.f_type != want) {
		fprintf(stderr, "kvcache-bench: %s: %s is no longer mounted (did %s die?)\n",
			target_names[t->kind], t->dir, t->kind == TARGET_TMPFS ? "tmpfs" : t->bin);
		return -ENOTCONN;
	}
	return 0;
}

/* Make the mount point and mount the target on it, with `size` bytes of capacity. */
static int target_mount(struct target *t, uint64_t size)
{
	char dirtmpl[] = "/tmp/kvcache-bench.XXXXXX", sz[32], opts[64];
	const char *base = strrchr(t->bin, '/') ? strrchr(t->bin, '/') + 1 : t->bin;
	int ret;

	if (!mkdtemp(dirtmpl)) {
		ret = -errno;
		fprintf(stderr, "kvcache-bench: mkdtemp: %s\n", strerror(errno));
		return ret;
	}
	snprintf(t->dir, sizeof(t->dir), "%s", dirtmpl);
	live[t->kind] = t;
	fmt_size(size, sz, sizeof(sz));
	if (t->kind == TARGET_TMPFS) {
		snprintf(opts, sizeof(opts), "size=%s,mode=0755", sz);
		if (mount("tmpfs", t->dir, "tmpfs", 0, opts) < 0) {
			ret = -errno;
			fprintf(stderr, "kvcache-bench: mount tmpfs on %s: %s\n", t->dir,
				strerror(errno));
			return ret;
		}
		return target_check(t);
	}
	if (t->kind == TARGET_KVCACHEFS && !strcmp(base, "kvcachefs"))
		ret = run_cmd((char *const[]){t->bin, "--pool-size", sz, t->dir, NULL}, false);
	else
		ret = run_cmd((char *const[]){t->bin, t->dir, NULL}, false);
	if (ret != 0 || !is_mounted(t->dir)) {
		fprintf(stderr, "kvcache-bench: %s %s failed (exit status %d)\n", t->bin, t->dir,
			ret);
		return ret < 0 ? ret : -EIO;
	}
	t->pid = find_daemon(t->bin, t->dir);
	return target_check(t);
}

/* Unmount (if mounted) and remove the mount point; wait a little for a FUSE daemon to exit so
 * that its pool is gone when we return. Safe to call twice. */
static void target_cleanup(struct target *t)
{
	if (!t->dir[0])
		return;
	if (is_mounted(t->dir)) {
		int ret;

		if (t->kind == TARGET_TMPFS) {
			ret = umount2(t->dir, 0) < 0 ? -errno : 0;
			if (ret)
				ret = umount2(t->dir, MNT_DETACH) < 0 ? -errno : 0;
		} else {
			ret = run_cmd((char *const[]){"fusermount3", "-u", t->dir, NULL}, true);
			if (ret)
				ret = run_cmd((char *const[]){"fusermount3", "-uz", t->dir, NULL},
					      false);
		}
		if (ret)
			fprintf(stderr, "kvcache-bench: cannot unmount %s (%d)\n", t->dir, ret);
	}
	for (int i = 0; t->pid && i < 500 && kill(t->pid, 0) == 0; i++)
		usleep(10000);
	if (rmdir(t->dir) < 0 && errno != ENOENT)
		fprintf(stderr, "kvcache-bench: rmdir %s: %s\n", t->dir, strerror(errno));
	live[t->kind] = NULL;
	t->dir[0] = '\0';
	t->pid = 0;
}

static void cleanup_all(void)
{
	for (int k = 0; k < TARGET_NKINDS; k++)
		if (live[k])
			target_cleanup(live[k]);
}

/* The end of every command, however it ends: say so if a signal stopped it, unmount all. */
static void finish(int ret)
{
	if (ret == -EINTR && stop)
		fprintf(stderr, "\nkvcache-bench: interrupted, cleaning up\n");
	cleanup_all();
}

/* ---- block I/O ------------------------------------------------------------------------- */

static int write_full(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR && !stop)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read up to len bytes; returns the count read (short only at EOF) or -errno. */
static ssize_t read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n < 0) {
			if (errno == EINTR && !stop)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Non-trivial content: a xorshift stream, shared by every block of a size. */
static void fill_pattern(char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed | 1;

	for (size_t i = 0; i < len; i += sizeof(x)) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(buf + i, &x, len - i < sizeof(x) ? len - i : sizeof(x));
	}
}

/* Make the pattern block `id`'s: its id at both ends, so misplaced data is detected. */
static void stamp(char *buf, size_t len, uint64_t id)
{
	size_t n = len < sizeof(id) ? len : sizeof(id);

	memcpy(buf, &id, n);
	memcpy(buf + len - n, &id, n);
}

/* ---- kvcache-bench fs ------------------------------------------------------------------ */

struct fs_result {
	double write_mbps, create_ops, stat_ops, read_mbps; /* best over the repetitions */
};

struct fs_run {
	uint64_t size, count;
	char *wbuf, *rbuf; /* size bytes each */
	char *path;	   /* scratch for block names */
	size_t path_cap;
};

static void block_path(struct fs_run *r, const struct target *t, int rep, uint64_t i)
{
	if (i == UINT64_MAX)
		snprintf(r->path, r->path_cap, "%s/s%" PRIu64 "-r%d", t->dir, r->size, rep);
	else
		snprintf(r->path, r->path_cap, "%s/s%" PRIu64 "-r%d/b%06" PRIu64, t->dir, r->size,
			 rep, i);
}

static uint64_t block_id(int rep, uint64_t i)
{
	return 0x6b76630000000000ull ^ ((uint64_t)rep << 32) ^ i;
}

static int fs_fail(const struct target *t, const char *what, const char *path, int err)
{
	if (err == -EINTR && stop)
		return err;
	fprintf(stderr, "kvcache-bench: %s: %s %s: %s\n", target_names[t->kind], what, path,
		strerror(-err));
	return err;
}

static void keep_best(double *best, double v)
{
	if (v > *best)
		*best = v;
}

/* One repetition on one target: write, stat, read the blocks of rep into a fresh directory,
 * then delete them (not timed). */
static int fs_rep(struct fs_run *r, const struct target *t, int rep, struct fs_result *res)
{
	uint64_t t0, elapsed,
	    sample = r->count / FS_VERIFY_SAMPLES ? r->count / FS_VERIFY_SAMPLES : 1;
	double secs, mb = (double)r->size * (double)r->count / 1e6;
	struct stat st;
	int fd, ret = 0;
	uint64_t i, made = 0;
	ssize_t n;

	ret = target_check(t);
	if (ret)
		return ret;
	block_path(r, t, rep, UINT64_MAX);
	if (mkdir(r->path, 0755) < 0)
		return fs_fail(t, "mkdir", r->path, -errno);

	/* write: create + one write() + close per block */
	t0 = now_ns();
	for (i = 0; i < r->count && !stop; i++) {
		block_path(r, t, rep, i);
		stamp(r->wbuf, r->size, block_id(rep, i));
		fd = open(r->path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			ret = fs_fail(t, "create", r->path, -errno);
			goto out;
		}
		made = i + 1;
		ret = write_full(fd, r->wbuf, r->size);
		if (close(fd) < 0 && !ret)
			ret = -errno;
		if (ret) {
			fs_fail(t, "write", r->path, ret);
			goto out;
		}
	}
	if (stop)
		goto out;
	secs = (double)(now_ns() - t0) / 1e9;
	keep_best(&res->write_mbps, mb / secs);
	keep_best(&res->create_ops, (double)r->count / secs);

	/* stat every block */
	t0 = now_ns();
	for (i = 0; i < r->count && !stop; i++) {
		block_path(r, t, rep, i);
		if (stat(r->path, &st) < 0) {
			ret = fs_fail(t, "stat", r->path, -errno);
			goto out;
		}
		if ((uint64_t)st.st_size != r->size) {
			fprintf(stderr, "kvcache-bench: %s: %s has %jd bytes, wrote %" PRIu64 "\n",
				target_names[t->kind], r->path, (intmax_t)st.st_size, r->size);
			ret = -EIO;
			goto out;
		}
	}
	if (stop)
		goto out;
	secs = (double)(now_ns() - t0) / 1e9;
	keep_best(&res->stat_ops, (double)r->count / secs);

	/* read: open + read the whole block + close; the clock stops while a sample is checked */
	elapsed = 0;
	for (i = 0; i < r->count && !stop; i++) {
		block_path(r, t, rep, i);
		t0 = now_ns();
		fd = open(r->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = fs_fail(t, "open", r->path, -errno);
			goto out;
		}
		n = read_full(fd, r->rbuf, r->size);
		close(fd);
		elapsed += now_ns() - t0;
		if (n < 0) {
			ret = fs_fail(t, "read", r->path, (int)n);
			goto out;
		}
		if ((uint64_t)n != r->size) {
			fprintf(stderr,
				"kvcache-bench: %s: read %zd bytes of %s, wrote %" PRIu64 "\n",
				target_names[t->kind], n, r->path, r->size);
			ret = -EIO;
			goto out;
		}
		if (i % sample == 0 || i == r->count - 1) {
			stamp(r->wbuf, r->size, block_id(rep, i));
			if (memcmp(r->wbuf, r->rbuf, r->size)) {
				fprintf(stderr, "kvcache-bench: %s: %s: content differs\n",
					target_names[t->kind], r->path);
				ret = -EIO;
				goto out;
			}
		}
	}
	if (stop)
		goto out;
	keep_best(&res->read_mbps, mb / ((double)elapsed / 1e9));

out:
	for (i = 0; i < made; i++) {
		block_path(r, t, rep, i);
		if (unlink(r->path) < 0 && !ret && !stop)
			ret = fs_fail(t, "unlink", r->path, -errno);
	}
	block_path(r, t, rep, UINT64_MAX);
	if (rmdir(r->path) < 0 && !ret && !stop)
		ret = fs_fail(t, "rmdir", r->path, -errno);
	return stop ? -EINTR : ret;
}

static void fs_usage(FILE *out)
{
	fprintf(out,
		"usage: kvcache-bench fs [--count N] [--sizes LIST] [--reps R] [--pool-size SIZE]\n"
		"                        [--targets LIST] [--json]\n"
		"Write, stat and read N blocks of each size through kvcachefs, tmpfs and\n"
		"kvcache-memfs (a trivial in-memory libfuse filesystem with the same FUSE\n"
		"settings), each on a fresh mount, and print the best of R repetitions.\n"
		"  --count N         blocks per size (default: 512 MiB worth, %d to %d)\n"
		"  --sizes LIST      block sizes (default %s)\n"
		"  --reps R          repetitions of every phase (default %d)\n"
		"  --pool-size SIZE  kvcachefs pool and tmpfs size (default: 1.3 x the largest\n"
		"                    size x count, at least 256M)\n"
		"  --targets LIST    any of kvcachefs,tmpfs,memfs (default: all three)\n"
		"  --json            print the results as JSON\n",
		FS_MIN_COUNT, FS_MAX_COUNT, FS_DEFAULT_SIZES, FS_DEFAULT_REPS);
}

/* The baselines kvcachefs is compared with, in the order their ratios are printed. */
#define FS_NBASELINES 2
static const enum target_kind fs_baselines[FS_NBASELINES] = {TARGET_MEMFS, TARGET_TMPFS};

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static void fs_print(const uint64_t *sizes, const uint64_t *counts, int nsizes, const bool *use,
		     struct fs_result res[][TARGET_NKINDS], int reps, uint64_t pool, bool json)
{
	const int K = TARGET_KVCACHEFS, T = TARGET_TMPFS, M = TARGET_MEMFS;
	bool ratios = use[K] && (use[T] || use[M]);
	char sz[32];

	if (json) {
		printf(
		    "{\"bench\": \"fs\", \"reps\": %d, \"stat\": \"best\", \"pool_size\": %" PRIu64
		    ",\n \"results\": [",
		    reps, pool);
		for (int s = 0, first = 1; s < nsizes; s++)
			for (int k = 0; k < TARGET_NKINDS; k++) {
				const struct fs_result *r = &res[s][k];

				if (!use[k])
					continue;
				printf("%s\n  {\"target\": \"%s\", \"size\": %" PRIu64
				       ", \"count\": %" PRIu64 ", \"write_MBps\": %.1f, "
				       "\"create_ops\": %.0f, \"stat_ops\": %.0f, "
				       "\"read_MBps\": %.1f}",
				       first ? "" : ",", target_names[k], sizes[s], counts[s],
				       r->write_mbps, r->create_ops, r->stat_ops, r->read_mbps);
				first = 0;
			}
		printf("],\n \"ratios\": [");
		for (int s = 0; ratios && s < nsizes; s++) {
			const struct fs_result *r = res[s];

			printf("%s\n  {\"size\": %" PRIu64, s ? "," : "", sizes[s]);
			for (int b = 0; b < FS_NBASELINES; b++) {
				const int k = fs_baselines[b];

				if (use[k])
					printf(", \"read_kvcachefs_%s\": %.3f, "
					       "\"write_kvcachefs_%s\": %.3f",
					       target_names[k],
					       ratio(r[K].read_mbps, r[k].read_mbps),
					       target_names[k],
					       ratio(r[K].write_mbps, r[k].write_mbps));
			}
			printf("}");
		}
		printf("]}\n");
		return;
	}
	printf("best of %d; MB/s = 10^6 bytes/s; create = open(O_CREAT)+write+close\n", reps);
	printf("%-6s %6s  %-10s %12s %10s %10s %12s\n", "size", "count", "target", "write MB/s",
	       "create/s", "stat/s", "read MB/s");
	for (int s = 0; s < nsizes; s++) {
		fmt_size(sizes[s], sz, sizeof(sz));
		for (int k = 0; k < TARGET_NKINDS; k++) {
			const struct fs_result *r = &res[s][k];

			if (use[k])
				printf("%-6s %6" PRIu64 "  %-10s %12.1f %10.0f %10.0f %12.1f\n", sz,
				       counts[s], target_names[k], r->write_mbps, r->create_ops,
				       r->stat_ops, r->read_mbps);
		}
	}
	if (!ratios)
		return;
	printf("\nkvcachefs relative to the baselines (1.00 = as fast)\n");
	printf("%-6s %12s %12s %12s %12s\n", "size", "read/memfs", "write/memfs", "read/tmpfs",
	       "write/tmpfs");
	for (int s = 0; s < nsizes; s++) {
		const struct fs_result *r = res[s];

		fmt_size(sizes[s], sz, sizeof(sz));
		printf("%-6s", sz);
		for (int b = 0; b < FS_NBASELINES; b++) {
			const int k = fs_baselines[b];

			if (use[k])
				printf(" %12.2f %12.2f", ratio(r[K].read_mbps, r[k].read_mbps),
				       ratio(r[K].write_mbps, r[k].write_mbps));
			else
				printf(" %12s %12s", "-", "-");
		}
		printf("\n");
	}
}

/* Parse a comma-separated list of sizes. */
static int parse_sizes(const char *arg, uint64_t *sizes, int *n)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*n == FS_MAX_SIZES || opt_parse_size(tok, &sizes[*n]) < 0 || !sizes[*n])
			return -EINVAL;
		(*n)++;
	}
	return *n ? 0 : -EINVAL;
}

static int parse_targets(const char *arg, bool *use)
{
	char buf[128], *save = NULL, *tok;
	int n = 0;

	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	for (int k = 0; k < TARGET_NKINDS; k++)
		use[k] = false;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int k = 0;

		while (k < TARGET_NKINDS && strcmp(tok, target_names[k]))
			k++;
		if (k == TARGET_NKINDS)
			return -EINVAL;
		use[k] = true;
		n++;
	}
	return n ? 0 : -EINVAL;
}

static int cmd_fs(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"count", required_argument, NULL, 'n'},   {"sizes", required_argument, NULL, 's'},
	    {"reps", required_argument, NULL, 'r'},    {"pool-size", required_argument, NULL, 'p'},
	    {"targets", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},	       {NULL, 0, NULL, 0},
	};
	uint64_t sizes[FS_MAX_SIZES], counts[FS_MAX_SIZES], count = 0, pool = 0, need = 0, maxsz;
	struct fs_result res[FS_MAX_SIZES][TARGET_NKINDS];
	struct target targets[TARGET_NKINDS];
	bool use[TARGET_NKINDS] = {true, true, true}, json = false;
	struct fs_run run = {0};
	char bindir[PATH_MAX], sz[32];
	int nsizes = 0, reps = FS_DEFAULT_REPS, c, st, ret = 0;

	parse_sizes(FS_DEFAULT_SIZES, sizes, &nsizes);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (arg_positive("--count", optarg, &count) < 0)
				return 2;
			break;
		case 's':
			if (parse_sizes(optarg, sizes, &nsizes) < 0) {
				fprintf(stderr, "kvcache-bench: --sizes: bad list '%s'\n", optarg);
				return 2;
			}
			break;
		case 'r':
			if (arg_int("--reps", optarg, 1, 100, &reps) < 0)
				return 2;
			break;
		case 't':
			if (parse_targets(optarg, use) < 0) {
				fprintf(stderr, "kvcache-bench: --targets: bad list '%s'\n",
					optarg);
				return 2;
			}
			break;
		default:
			st = arg_common(c, &pool, &json, fs_usage);
			if (st >= 0)
				return st;
		}
	}
	if (optind != argc) {
		fs_usage(stderr);
		return 2;
	}

	maxsz = 0;
	for (int s = 0; s < nsizes; s++) {
		counts[s] = count ? count : FS_BYTES_PER_PHASE / sizes[s];
		if (!count && counts[s] < FS_MIN_COUNT)
			counts[s] = FS_MIN_COUNT;
		if (!count && counts[s] > FS_MAX_COUNT)
			counts[s] = FS_MAX_COUNT;
		if (counts[s] * sizes[s] > need)
			need = counts[s] * sizes[s];
		if (sizes[s] > maxsz)
			maxsz = sizes[s];
	}
	if (!pool) {
		pool = round_up(need + need * 3 / 10, 64 * MIB);
		if (pool < MIN_POOL)
			pool = MIN_POOL;
	}
	memset(res, 0, sizeof(res));

	if (bin_dir(bindir, sizeof(bindir)) < 0)
		return 1;
	run.path_cap = PATH_MAX;
	run.path = malloc(run.path_cap);
	run.wbuf = malloc(maxsz);
	run.rbuf = malloc(maxsz);
	if (!run.path || !run.wbuf || !run.rbuf) {
		fprintf(stderr, "kvcache-bench: out of memory\n");
		ret = -ENOMEM;
		goto out;
	}
	install_signals();
	fmt_size(pool, sz, sizeof(sz));
	for (int k = 0; k < TARGET_NKINDS; k++) {
		struct target *t = &targets[k];

		memset(t, 0, sizeof(*t));
		t->kind = (enum target_kind)k;
		if (!use[k])
			continue;
		if (k != TARGET_TMPFS && (ret = target_bin(t, bindir)) < 0)
			goto out;
		ret = target_mount(t, pool);
		if (ret < 0)
			goto out;
		fprintf(stderr, "kvcache-bench: %s mounted on %s (%s)\n", target_names[k], t->dir,
			sz);
	}

	/* Repetitions interleave the targets, so that drift on a busy machine hits them all. */
	for (int s = 0; s < nsizes; s++) {
		run.size = sizes[s];
		run.count = counts[s];
		fill_pattern(run.wbuf, run.size, 0x9e3779b97f4a7c15ull ^ run.size);
		fmt_size(run.size, sz, sizeof(sz));
		fprintf(stderr, "kvcache-bench: %s x %" PRIu64 ":", sz, run.count);
		for (int rep = 0; rep < reps; rep++) {
			for (int k = 0; k < TARGET_NKINDS; k++) {
				if (!use[k])
					continue;
				ret = fs_rep(&run, &targets[k], rep, &res[s][k]);
				if (ret < 0)
					goto out;
			}
			fprintf(stderr, " %d", rep + 1);
		}
		fprintf(stderr, "\n");
	}
	fs_print(sizes, counts, nsizes, use, res, reps, pool, json);
out:
	finish(ret);
	free(run.path);
	free(run.wbuf);
	free(run.rbuf);
	return ret < 0 ? 1 : 0;
}

/* ---- kvcache-bench memory -------------------------------------------------------------- */

static void mem_usage(FILE *out)
{
	fprintf(out,
		"usage: kvcache-bench memory [--blocks N] [--name-len L] [--pool-size SIZE] "
		"[--json]\n"
		"Mount kvcachefs, create N one-byte blocks with names of L hex digits spread over\n"
		"%d directories, and report the daemon's anonymous memory (RssAnon) per block,\n"
		"beyond the pool. The target is at most %d + L bytes per block.\n"
		"  --blocks N        blocks to create (default %llu)\n"
		"  --name-len L      name length in hex digits (default %d)\n"
		"  --pool-size SIZE  pool size (default: N x 4 KiB x 1.1 + 64M)\n"
		"  --json            print the result as JSON\n"
		"Exit status: 0 target met, 3 target missed, 1 error.\n",
		MEM_NDIRS, MEM_TARGET_BASE, MEM_DEFAULT_BLOCKS, MEM_DEFAULT_NAME_LEN);
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Block i's name: len hex digits from a hash of i; the directory is its first two. */
static void mem_name(uint64_t i, int len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t x = i * 0x2545f4914f6cdd1dull, v = 0;

	for (int k = 0; k < len; k++) {
		if (k % 16 == 0)
			v = splitmix64(&x);
		out[k] = hex[v & 15];
		v >>= 4;
	}
	out[len] = '\0';
}

/* Report a failed read of pid's RssAnon (err: -errno); returns err. */
static int rss_anon_fail(pid_t pid, int64_t err)
{
	fprintf(stderr, "kvcache-bench: RssAnon of pid %d: %s\n", (int)pid, strerror((int)-err));
	return (int)err;
}

static int cmd_memory(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"blocks", required_argument, NULL, 'n'},
	    {"name-len", required_argument, NULL, 'l'},
	    {"pool-size", required_argument, NULL, 'p'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t blocks = MEM_DEFAULT_BLOCKS, pool = 0, i, next_report, t0;
	int name_len = MEM_DEFAULT_NAME_LEN, c, st, ret = 0, fd;
	struct target t = {.kind = TARGET_KVCACHEFS};
	int64_t before, after, shm;
	char bindir[PATH_MAX], path[PATH_MAX + 600], name[520], sz[32];
	double per_block, target;
	bool json = false, met;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (arg_positive("--blocks", optarg, &blocks) < 0)
				return 2;
			break;
		case 'l':
			if (arg_int("--name-len", optarg, 2, 255, &name_len) < 0)
				return 2;
			break;
		default:
			st = arg_common(c, &pool, &json, mem_usage);
			if (st >= 0)
				return st;
		}
	}
	if (optind != argc) {
		mem_usage(stderr);
		return 2;
	}
	if (!pool)
		pool = round_up(blocks * 4096 + blocks * 4096 / 10 + 64 * MIB, 64 * MIB);
	if (bin_dir(bindir, sizeof(bindir)) < 0)
		return 1;
	if (target_bin(&t, bindir) < 0)
		return 1;
	install_signals();
	ret = target_mount(&t, pool);
	if (ret < 0)
		goto out;
	if (!t.pid) {
		fprintf(stderr, "kvcache-bench: cannot find the %s process serving %s\n", t.bin,
			t.dir);
		ret = -ESRCH;
		goto out;
	}
	fmt_size(pool, sz, sizeof(sz));
	fprintf(stderr, "kvcache-bench: %s (pid %d) mounted on %s, pool %s\n", t.bin, (int)t.pid,
		t.dir, sz);
	for (int d = 0; d < MEM_NDIRS; d++) {
		snprintf(path, sizeof(path), "%s/%02x", t.dir, d);
		if (mkdir(path, 0755) < 0) {
			ret = -errno;
			fprintf(stderr, "kvcache-bench: mkdir %s: %s\n", path, strerror(errno));
			goto out;
		}
	}
	before = proc_status_bytes(t.pid, "RssAnon");
	if (before < 0) {
		ret = rss_anon_fail(t.pid, before);
		goto out;
	}

	t0 = now_ns();
	next_report = blocks / 10 ? blocks / 10 : 1;
	for (i = 0; i < blocks && !stop; i++) {
		mem_name(i, name_len, name);
		snprintf(path, sizeof(path), "%s/%.2s/%s", t.dir, name, name);
		fd = open(path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			ret = -errno;
			fprintf(stderr, "kvcache-bench: create %s (block %" PRIu64 "): %s\n", path,
				i, strerror(errno));
			goto out;
		}
		ret = write_full(fd, "k", 1);
		if (close(fd) < 0 && !ret)
			ret = -errno;
		if (ret) {
			if (!stop)
				fprintf(stderr, "kvcache-bench: write %s: %s\n", path,
					strerror(-ret));
			goto out;
		}
		if (i + 1 == next_report || i + 1 == blocks) {
			double secs = (double)(now_ns() - t0) / 1e9;
			int64_t rss = proc_status_bytes(t.pid, "RssAnon");

			fprintf(stderr,
				"kvcache-bench: %3.0f%%  %" PRIu64 " blocks  %.0f blocks/s  "
				"RssAnon %+.1f MiB\n",
				100.0 * (double)(i + 1) / (double)blocks, i + 1,
				(double)(i + 1) / secs, (double)(rss - before) / (double)MIB);
			next_report += blocks / 10 ? blocks / 10 : 1;
		}
	}
	if (stop) {
		ret = -EINTR;
		goto out;
	}
	after = proc_status_bytes(t.pid, "RssAnon");
	ret = target_check(&t);
	if (ret)
		goto out;
	shm = proc_status_bytes(t.pid, "RssShmem");
	if (after < 0) {
		ret = rss_anon_fail(t.pid, after);
		goto out;
	}
	per_block = (double)(after - before) / (double)blocks;
	target = MEM_TARGET_BASE + name_len;
	met = per_block <= target;
	if (json) {
		printf("{\"bench\": \"memory\", \"blocks\": %" PRIu64 ", \"name_len\": %d, "
		       "\"pool_size\": %" PRIu64 ", \"rss_anon_before\": %" PRId64
		       ", \"rss_anon_after\": %" PRId64 ", \"rss_shmem_after\": %" PRId64
		       ", \"bytes_per_block\": %.1f, \"target_bytes_per_block\": %.0f, "
		       "\"target_met\": %s}\n",
		       blocks, name_len, pool, before, after, shm, per_block, target,
		       met ? "true" : "false");
	} else {
		printf("blocks              %" PRIu64 " (1 byte each, %d directories)\n", blocks,
		       MEM_NDIRS);
		printf("name length         %d\n", name_len);
		printf("RssAnon before      %.1f MiB\n", (double)before / (double)MIB);
		printf("RssAnon after       %.1f MiB\n", (double)after / (double)MIB);
		printf("RssShmem (pool)     %.1f MiB\n", (double)(shm > 0 ? shm : 0) / (double)MIB);
		printf("bytes per block     %.1f beyond the pool\n", per_block);
		printf("target              <= %.0f (%d + name length): %s\n", target,
		       MEM_TARGET_BASE, met ? "met" : "MISSED");
	}
	ret = met ? 0 : 3;
out:
	finish(ret);
	return ret < 0 ? 1 : ret;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fprintf(out, "usage: kvcache-bench COMMAND [OPTIONS]\n"
		     "Benchmarks of kvcachefs, each against a baseline measured in the same run.\n"
		     "Commands:\n"
		     "  fs       write/stat/read throughput: kvcachefs vs tmpfs vs kvcache-memfs\n"
		     "  memory   daemon memory per stored block, beyond the pool\n"
		     "Run 'kvcache-bench COMMAND --help' for its options. Needs root (mounts).\n"
		     "Environment: KVC_BIN_DIR, the directory of kvcachefs and kvcache-memfs\n"
		     "(default: this binary's directory).\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "fs"))
		return cmd_fs(argc - 1, argv + 1);
	if (!strcmp(argv[1], "memory"))
		return cmd_memory(argc - 1, argv + 1);
	fprintf(stderr, "kvcache-bench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
