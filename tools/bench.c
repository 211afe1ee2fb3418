/*
 * bench: kvcache-bench, the benchmarks of kvcachefs, each reported against a baseline run in
 * the same process (these machines have 2 cores: absolute figures alone mean little).
 *
 *   kvcache-bench fs      write, stat and read blocks through kvcachefs, tmpfs and
 *                         kvcache-memfs (a trivial in-memory libfuse filesystem with the same
 *                         FUSE settings) and print the ratios;
 *   kvcache-bench memory  the daemon's anonymous memory per stored block, beyond the pool;
 *   kvcache-bench zerocopy  libkvcache (pin + memcpy, batch lookup, kvc_put, in-place
 *                         commit) against read(), stat() and write() on the same mount and
 *                         against memcpy from private memory;
 *   kvcache-bench transfer  the transfer engine's READ and WRITE throughput and latency over
 *                         loopback TCP against a kvcache-xfer serve process, with iperf3 on
 *                         the same loopback as the baseline (no mount);
 *   kvcache-bench cluster  remote reads and stat between two nodes of a cluster against Redis
 *                         GET/EXISTS and iperf3, all on loopback (bench_cluster.c);
 *   kvcache-bench ssd     write and read throughput of the SSD tier through the mount
 *                         against fio on the same filesystem, and the recovery time of a
 *                         restarted daemon (bench_ssd.c).
 * What every command uses (the signals, the clock, children, full reads and writes, option
 * values, probes of the machine, the bar charts of --plot FILE.png) is in bench_util.c. A
 * command checks --plot before it measures (gnuplot in PATH, the file writable) and draws
 * after it printed its figures, targets met or not.
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
#include "engine/wire.h"
#include "engine/xfer.h"
#include "tools/bench_cluster.h"
#include "tools/bench_ssd.h"
#include "tools/bench_util.h"
#include "tools/pattern.h"
#include "fs/options.h"
#include "fs/uapi/kvcache.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

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

/* The options every command of this file takes (--pool-size, --json, --plot, --help) and
 * unknown ones, for the default case of its getopt switch. Returns -1 to go on parsing, else
 * the exit status. */
static int arg_common(int c, uint64_t *pool, bool *json, const char **plot,
		      void (*usage)(FILE *out))
{
	switch (c) {
	case 'P':
		*plot = optarg;
		return -1;
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
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	return bench_proc_kb(path, field);
}

enum target_kind { TARGET_KVCACHEFS, TARGET_TMPFS, TARGET_MEMFS, TARGET_NKINDS };

static const char *const target_names[TARGET_NKINDS] = {"kvcachefs", "tmpfs", "memfs"};

/* One mounted filesystem under test. */
struct target {
	enum target_kind kind;
	char bin[PATH_MAX];  /* FUSE daemons: the binary started */
	char dir[PATH_MAX];  /* the mkdtemp mount point; "" before it exists */
	char pool[PATH_MAX]; /* kvcachefs: its pool object, removed at cleanup ("": none) */
	pid_t pid;	     /* FUSE daemons: found after the mount, 0 if unknown */
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
	bench_fmt_size(size, sz, sizeof(sz));
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
	if (t->kind == TARGET_KVCACHEFS && !strcmp(base, "kvcachefs")) {
		/* the pool outlives the daemon: ours, named after the mount point, goes at cleanup
		 */
		snprintf(t->pool, sizeof(t->pool), "/dev/shm/kvcache-bench.%s",
			 dirtmpl + sizeof("/tmp/kvcache-bench.") - 1);
		ret = bench_run((char *const[]){t->bin, "--pool-size", sz, "--pool-path", t->pool,
						"--fresh", t->dir, NULL},
				false);
	} else
		ret = bench_run((char *const[]){t->bin, t->dir, NULL}, false);
	if (ret != 0 || !bench_mounted(t->dir)) {
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
	if (bench_mounted(t->dir)) {
		int ret;

		if (t->kind == TARGET_TMPFS) {
			ret = umount2(t->dir, 0) < 0 ? -errno : 0;
			if (ret)
				ret = umount2(t->dir, MNT_DETACH) < 0 ? -errno : 0;
		} else {
			ret = bench_run((char *const[]){"fusermount3", "-u", t->dir, NULL}, true);
			if (ret)
				ret = bench_run((char *const[]){"fusermount3", "-uz", t->dir, NULL},
						false);
		}
		if (ret)
			fprintf(stderr, "kvcache-bench: cannot unmount %s (%d)\n", t->dir, ret);
	}
	for (int i = 0; t->pid && i < 500 && kill(t->pid, 0) == 0; i++)
		usleep(10000);
	if (rmdir(t->dir) < 0 && errno != ENOENT)
		fprintf(stderr, "kvcache-bench: rmdir %s: %s\n", t->dir, strerror(errno));
	if (t->pool[0] && unlink(t->pool) < 0 && errno != ENOENT)
		fprintf(stderr, "kvcache-bench: unlink %s: %s\n", t->pool, strerror(errno));
	t->pool[0] = '\0';
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
	t0 = bench_now_ns();
	for (i = 0; i < r->count && !stop; i++) {
		block_path(r, t, rep, i);
		stamp(r->wbuf, r->size, block_id(rep, i));
		fd = open(r->path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			ret = fs_fail(t, "create", r->path, -errno);
			goto out;
		}
		made = i + 1;
		ret = bench_write_full(fd, r->wbuf, r->size);
		if (close(fd) < 0 && !ret)
			ret = -errno;
		if (ret) {
			fs_fail(t, "write", r->path, ret);
			goto out;
		}
	}
	if (stop)
		goto out;
	secs = (double)(bench_now_ns() - t0) / 1e9;
	bench_keep_best(&res->write_mbps, mb / secs);
	bench_keep_best(&res->create_ops, (double)r->count / secs);

	/* stat every block */
	t0 = bench_now_ns();
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
	secs = (double)(bench_now_ns() - t0) / 1e9;
	bench_keep_best(&res->stat_ops, (double)r->count / secs);

	/* read: open + read the whole block + close; the clock stops while a sample is checked */
	elapsed = 0;
	for (i = 0; i < r->count && !stop; i++) {
		block_path(r, t, rep, i);
		t0 = bench_now_ns();
		fd = open(r->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = fs_fail(t, "open", r->path, -errno);
			goto out;
		}
		n = bench_read_full(fd, r->rbuf, r->size);
		close(fd);
		elapsed += bench_now_ns() - t0;
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
	bench_keep_best(&res->read_mbps, mb / ((double)elapsed / 1e9));

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
		"                        [--targets LIST] [--json] [--plot FILE.png]\n"
		"Write, stat and read N blocks of each size through kvcachefs, tmpfs and\n"
		"kvcache-memfs (a trivial in-memory libfuse filesystem with the same FUSE\n"
		"settings), each on a fresh mount, and print the best of R repetitions.\n"
		"  --count N         blocks per size (default: 512 MiB worth, %d to %d)\n"
		"  --sizes LIST      block sizes (default %s)\n"
		"  --reps R          repetitions of every phase (default %d)\n"
		"  --pool-size SIZE  kvcachefs pool and tmpfs size (default: 1.3 x the largest\n"
		"                    size x count, at least 256M)\n"
		"  --targets LIST    any of kvcachefs,tmpfs,memfs (default: all three)\n"
		"  --json            print the results as JSON\n"
		"  --plot FILE.png   also draw them with gnuplot (Debian package gnuplot-nox):\n"
		"                    read and write GB/s and stat() per second of every target\n"
		"                    per size, and the ratios of kvcachefs to the baselines\n"
		"                    against 1.0 (there is no target); checked before the run\n"
		"Exit status: 0 done, 1 error (the plot could not be drawn included: the\n"
		"figures are still printed), 2 usage.\n",
		FS_MIN_COUNT, FS_MAX_COUNT, FS_DEFAULT_SIZES, FS_DEFAULT_REPS);
}

/* The baselines kvcachefs is compared with, in the order their ratios are printed. */
#define FS_NBASELINES 2
static const enum target_kind fs_baselines[FS_NBASELINES] = {TARGET_MEMFS, TARGET_TMPFS};

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
					       bench_ratio(r[K].read_mbps, r[k].read_mbps),
					       target_names[k],
					       bench_ratio(r[K].write_mbps, r[k].write_mbps));
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
		bench_fmt_size(sizes[s], sz, sizeof(sz));
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

		bench_fmt_size(sizes[s], sz, sizeof(sz));
		printf("%-6s", sz);
		for (int b = 0; b < FS_NBASELINES; b++) {
			const int k = fs_baselines[b];

			if (use[k])
				printf(" %12.2f %12.2f",
				       bench_ratio(r[K].read_mbps, r[k].read_mbps),
				       bench_ratio(r[K].write_mbps, r[k].write_mbps));
			else
				printf(" %12s %12s", "-", "-");
		}
		printf("\n");
	}
}

/* --plot: read and write GB/s and stat() per second of every target per size (kvcachefs
 * first, then its baselines in the order of their ratios), and the ratios against 1.0. */
static int fs_plot(const char *path, const uint64_t *sizes, int nsizes, const bool *use,
		   struct fs_result res[][TARGET_NKINDS], int reps)
{
	static const char *const ylabels[3] = {"GB/s (10^9 bytes/s)", "GB/s (10^9 bytes/s)",
					       "thousand stat() per second"};
	static const char *const titles[3] = {"read: open + read() + close of every block",
					      "write: create + write() + close of every block",
					      "stat() of every block"};
	const char *names[TARGET_NKINDS + 1] = {NULL}, *rnames[2 * FS_NBASELINES + 1] = {NULL};
	int order[TARGET_NKINDS], n = 0, nr = 0;
	char ratio[2 * FS_NBASELINES][32], sz[32], base[64] = "";
	struct bench_plot *p;
	int ret;

	for (int b = -1; b < FS_NBASELINES; b++) {
		int k = b < 0 ? TARGET_KVCACHEFS : fs_baselines[b];

		if (use[k]) {
			order[n] = k;
			names[n++] = target_names[k];
		}
	}
	for (int b = 0; use[TARGET_KVCACHEFS] && b < FS_NBASELINES; b++) {
		const char *bn = target_names[fs_baselines[b]];

		if (!use[fs_baselines[b]])
			continue;
		snprintf(ratio[nr], sizeof(ratio[0]), "read / %s", bn);
		rnames[nr] = ratio[nr];
		nr++;
		snprintf(ratio[nr], sizeof(ratio[0]), "write / %s", bn);
		rnames[nr] = ratio[nr];
		nr++;
		snprintf(base + strlen(base), sizeof(base) - strlen(base), "%s%s",
			 base[0] ? " and " : "", bn);
	}
	if (nr)
		p = bench_plot_begin(
		    "fs",
		    "kvcachefs vs %s (kvcache-memfs: a trivial libfuse filesystem), "
		    "through the mount; best of %d; no target",
		    base, reps);
	else
		p = bench_plot_begin("fs", "through the mount; best of %d", reps);
	for (int ph = 0; ph < 3; ph++) {
		bench_plot_panel(p, titles[ph], "block size", ylabels[ph], names);
		for (int s = 0; s < nsizes; s++) {
			double v[TARGET_NKINDS];

			for (int i = 0; i < n; i++) {
				const struct fs_result *r = &res[s][order[i]];

				v[i] = ph == 0	 ? r->read_mbps / 1e3
				       : ph == 1 ? r->write_mbps / 1e3
						 : r->stat_ops / 1e3;
			}
			bench_plot_row(p, bench_fmt_size(sizes[s], sz, sizeof(sz)), v);
		}
	}
	if (nr) {
		bench_plot_panel(p, "kvcachefs relative to the baselines", "block size",
				 "kvcachefs / baseline (throughput)", rnames);
		for (int s = 0; s < nsizes; s++) {
			const struct fs_result *r = res[s];
			double v[2 * FS_NBASELINES];
			int i = 0;

			for (int b = 0; b < FS_NBASELINES; b++) {
				const int k = fs_baselines[b];

				if (!use[k])
					continue;
				v[i++] = bench_ratio(r[TARGET_KVCACHEFS].read_mbps, r[k].read_mbps);
				v[i++] =
				    bench_ratio(r[TARGET_KVCACHEFS].write_mbps, r[k].write_mbps);
			}
			bench_plot_row(p, bench_fmt_size(sizes[s], sz, sizeof(sz)), v);
		}
		bench_plot_line(p, -1, 1.0, "1.00 = as fast");
	}
	ret = bench_plot_write(p, path);
	bench_plot_free(p);
	return ret;
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
	    {"count", required_argument, NULL, 'n'},
	    {"sizes", required_argument, NULL, 's'},
	    {"reps", required_argument, NULL, 'r'},
	    {"pool-size", required_argument, NULL, 'p'},
	    {"targets", required_argument, NULL, 't'},
	    {"json", no_argument, NULL, 'j'},
	    {"plot", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t sizes[FS_MAX_SIZES], counts[FS_MAX_SIZES], count = 0, pool = 0, need = 0, maxsz;
	struct fs_result res[FS_MAX_SIZES][TARGET_NKINDS];
	struct target targets[TARGET_NKINDS];
	bool use[TARGET_NKINDS] = {true, true, true}, json = false, printed = false;
	struct fs_run run = {0};
	char bindir[PATH_MAX], sz[32];
	int nsizes = 0, reps = FS_DEFAULT_REPS, c, st, ret = 0;
	const char *plot = NULL;

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
			if (bench_arg_int("--reps", optarg, 1, 100, &reps) < 0)
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
			st = arg_common(c, &pool, &json, &plot, fs_usage);
			if (st >= 0)
				return st;
		}
	}
	if (optind != argc) {
		fs_usage(stderr);
		return 2;
	}
	if (plot && bench_plot_check(plot) < 0)
		return 1;

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

	if (bench_bin_dir(bindir, sizeof(bindir)) < 0)
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
	bench_fmt_size(pool, sz, sizeof(sz));
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
		bench_fmt_size(run.size, sz, sizeof(sz));
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
	printed = true;
out:
	finish(ret);
	if (printed && plot)
		ret = fs_plot(plot, sizes, nsizes, use, res, reps);
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
		"                            [--plot FILE.png]\n"
		"Mount kvcachefs, create N one-byte blocks with names of L hex digits spread over\n"
		"%d directories, and report the daemon's anonymous memory (RssAnon) per block,\n"
		"beyond the pool. The target is at most %d + L bytes per block.\n"
		"  --blocks N        blocks to create (default %llu)\n"
		"  --name-len L      name length in hex digits (default %d)\n"
		"  --pool-size SIZE  pool size (default: N x 4 KiB x 1.1 + 64M)\n"
		"  --json            print the result as JSON\n"
		"  --plot FILE.png   also draw it with gnuplot (Debian package gnuplot-nox): the\n"
		"                    bytes per block as a bar against the target line (drawn\n"
		"                    also when the target is missed); checked before the run\n"
		"Exit status: 0 target met, 3 target missed, 1 error (the plot could not be\n"
		"drawn included: the figures are still printed), 2 usage.\n",
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

/* --plot: the bytes per block beyond the pool, as a bar, against the target line. */
static int mem_plot(const char *path, uint64_t blocks, int name_len, double per_block,
		    double target, bool met)
{
	struct bench_plot *p = bench_plot_begin(
	    "memory",
	    "the daemon's anonymous memory (RssAnon) per stored block, beyond the pool; "
	    "target %s",
	    met ? "met" : "MISSED");
	char row[64], line[64];
	int ret;

	snprintf(row, sizeof(row), "%" PRIu64 " blocks of 1 byte, %d-digit names", blocks,
		 name_len);
	snprintf(line, sizeof(line), "target <= %.0f (%d + name length)", target, MEM_TARGET_BASE);
	bench_plot_panel(p, "RssAnon growth / blocks created", "", "bytes per block",
			 (const char *const[]){"kvcachefs", NULL});
	bench_plot_row(p, row, &per_block);
	bench_plot_line(p, -1, target, line);
	ret = bench_plot_write(p, path);
	bench_plot_free(p);
	return ret;
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
	    {"plot", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t blocks = MEM_DEFAULT_BLOCKS, pool = 0, i, next_report, t0;
	int name_len = MEM_DEFAULT_NAME_LEN, c, st, ret = 0, fd;
	struct target t = {.kind = TARGET_KVCACHEFS};
	int64_t before, after, shm;
	char bindir[PATH_MAX], path[PATH_MAX + 600], name[520], sz[32];
	double per_block, target;
	bool json = false, met, printed = false;
	const char *plot = NULL;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (arg_positive("--blocks", optarg, &blocks) < 0)
				return 2;
			break;
		case 'l':
			if (bench_arg_int("--name-len", optarg, 2, 255, &name_len) < 0)
				return 2;
			break;
		default:
			st = arg_common(c, &pool, &json, &plot, mem_usage);
			if (st >= 0)
				return st;
		}
	}
	if (optind != argc) {
		mem_usage(stderr);
		return 2;
	}
	if (plot && bench_plot_check(plot) < 0)
		return 1;
	if (!pool)
		pool = round_up(blocks * 4096 + blocks * 4096 / 10 + 64 * MIB, 64 * MIB);
	if (bench_bin_dir(bindir, sizeof(bindir)) < 0)
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
	bench_fmt_size(pool, sz, sizeof(sz));
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

	t0 = bench_now_ns();
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
		ret = bench_write_full(fd, "k", 1);
		if (close(fd) < 0 && !ret)
			ret = -errno;
		if (ret) {
			if (!stop)
				fprintf(stderr, "kvcache-bench: write %s: %s\n", path,
					strerror(-ret));
			goto out;
		}
		if (i + 1 == next_report || i + 1 == blocks) {
			double secs = (double)(bench_now_ns() - t0) / 1e9;
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
	printed = true;
out:
	finish(ret);
	if (printed && plot && mem_plot(plot, blocks, name_len, per_block, target, met) < 0)
		ret = 1;
	return ret < 0 ? 1 : ret;
}

/* ---- kvcache-bench zerocopy ------------------------------------------------------------ */

/*
 * libkvcache against the file interface of the same mount and against plain memory, on one
 * mount: loading blocks into a user buffer (pin + memcpy from the pool mapping + unpin, vs
 * read(), vs memcpy from a private buffer as large as the data set), finding the cached
 * prefix of a list of names (one kvc_lookup vs a stat() per name), and storing blocks
 * (kvc_put, and reserve + fill in place + commit for a trusted writer, vs
 * open(O_CREAT) + write() + close). The load data set is written once, up front; the other
 * phases write fresh directories every repetition and delete them afterwards.
 */

#define ZC_DEFAULT_SIZES  "2M,256K"
#define ZC_BYTES_PER_SIZE (256 * MIB)
#define ZC_MIN_COUNT	  16
#define ZC_MAX_COUNT	  512
#define ZC_DEFAULT_LOOKUP 1000
#define ZC_LOOKUP_BLOCK	  64	       /* payload bytes of each block of the lookup phase */
#define ZC_LOOKUP_MIN_NS  200000000ull /* kvc_lookup is repeated for at least this long */
#define ZC_NAME_SIZE	  64	       /* 32 hex digits + a suffix of up to 15 bytes + NUL */
#define ZC_SUFFIX_MAX	  (KVCACHEFS_SUFFIX_MAX - 1)
#define ZC_DEFAULT_REPS	  5    /* the load ratios need more than 3 on a noisy VM */
#define ZC_TARGET_LOAD	  0.9  /* libkvcache load / memcpy */
#define ZC_TARGET_LOOKUP  10.0 /* kvc_lookup names/s / stat names/s */
#define ZC_TARGET_PUT	  1.5  /* kvc_put / write() */

/* Name sets: every phase, size and repetition gets names of its own. */
enum zc_set { ZC_SET_LOAD = 1, ZC_SET_LOOKUP, ZC_SET_PUT, ZC_SET_INPLACE, ZC_SET_WRITE };

/* MB/s, best over the repetitions; 0 = not measured. */
struct zc_load_result {
	double kvc_load, kvc_get, kvc_batch, read, memcpy;
};

struct zc_put_result {
	double kvc_put, write, inplace;
};

struct zc_lookup_result {
	double kvc_names, stat_names, stat_cached_names; /* names per second */
};

struct zc_run {
	struct target t;
	struct kvc *k;	/* read-only mapping */
	struct kvc *kw; /* trusted writer (read-write mapping), NULL when refused */
	int kw_err;	/* why kw is NULL */
	uint64_t size;	/* of the blocks of the current phase */
	uint64_t count; /* how many */
	char (*names)[ZC_NAME_SIZE];
	const char **nameptrs;
	struct kvc_block *blocks; /* KVC_BATCH of them */
	int *errs;
	char *wbuf; /* the block being stored / the expected content, maxsz bytes */
	char *dst;  /* the user buffer loads land in, maxsz bytes */
	char *src;  /* the memcpy baseline's data set, count x size bytes */
	char suffix[KVCACHEFS_SUFFIX_MAX];
	char path[PATH_MAX + 2 * ZC_NAME_SIZE];
};

#define ZC_BATCH      KVCACHEFS_PIN_MAX
#define ZC_LOAD_BATCH KVCACHEFS_LOCATE_MAX

/* Keep the compiler from dropping copies into a buffer nobody reads. */
static void zc_clobber(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

static int zc_fail(const char *what, const char *name, int err)
{
	if (err == -EINTR && stop)
		return err;
	fprintf(stderr, "kvcache-bench: zerocopy: %s %s: %s\n", what, name, strerror(-err));
	return err;
}

static uint64_t zc_id(enum zc_set set, uint64_t size, int rep, uint64_t i)
{
	return ((uint64_t)set << 56) ^ (size << 16) ^ ((uint64_t)rep << 48) ^ i;
}

/* Names of blocks 0..n of a set: 32 hex digits, then the suffix for the lookup phase. */
static void zc_names(struct zc_run *r, enum zc_set set, int rep, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		mem_name(zc_id(set, r->size, rep, i), 32, r->names[i]);
		if (set == ZC_SET_LOOKUP)
			strcat(r->names[i], r->suffix);
		r->nameptrs[i] = r->names[i];
	}
}

static void zc_dirname(char *out, size_t cap, const char *phase, uint64_t size, int rep)
{
	char sz[32];

	bench_fmt_size(size, sz, sizeof(sz));
	snprintf(out, cap, "%s-%s-r%d", phase, sz, rep);
}

static const char *zc_path(struct zc_run *r, const char *dir, const char *name)
{
	if (name)
		snprintf(r->path, sizeof(r->path), "%s/%s/%s", r->t.dir, dir, name);
	else
		snprintf(r->path, sizeof(r->path), "%s/%s", r->t.dir, dir);
	return r->path;
}

/* mkdir dir on the mount and open it through k (when k). */
static int zc_mkdir(struct zc_run *r, struct kvc *k, const char *dir, struct kvc_dir **d)
{
	int ret;

	if (mkdir(zc_path(r, dir, NULL), 0755) < 0)
		return zc_fail("mkdir", r->path, -errno);
	if (!k)
		return 0;
	ret = kvc_dir_open(k, dir, d);
	if (ret < 0)
		return zc_fail("kvc_dir_open", dir, ret);
	return 0;
}

/* Close d, unlink blocks 0..n of dir through the mount, remove dir (never timed). Returns
 * ret, or the first error of the cleanup when ret is 0 (after a failure, cleanup errors such
 * as ENOENT for a block that was never stored are ignored). */
static int zc_rmdir(struct zc_run *r, struct kvc_dir *d, const char *dir, uint64_t n, int ret)
{
	if (d)
		kvc_dir_close(d);
	for (uint64_t i = 0; i < n; i++)
		if (unlink(zc_path(r, dir, r->names[i])) < 0 && !ret && !stop)
			ret = zc_fail("unlink", r->path, -errno);
	if (rmdir(zc_path(r, dir, NULL)) < 0 && !ret && !stop)
		ret = zc_fail("rmdir", r->path, -errno);
	return stop ? -EINTR : ret;
}

static bool zc_sample(const struct zc_run *r, uint64_t i)
{
	uint64_t every = r->count / FS_VERIFY_SAMPLES ? r->count / FS_VERIFY_SAMPLES : 1;

	return i % every == 0 || i == r->count - 1;
}

/* Does buf hold block id of the current size? wbuf is the pattern, restamped here. */
static int zc_check(struct zc_run *r, const void *buf, size_t len, uint64_t id, const char *how,
		    const char *name)
{
	if (len != r->size) {
		fprintf(stderr, "kvcache-bench: zerocopy: %s %s: %zu bytes, expected %" PRIu64 "\n",
			how, name, len, r->size);
		return -EIO;
	}
	stamp(r->wbuf, r->size, id);
	if (memcmp(buf, r->wbuf, r->size)) {
		fprintf(stderr, "kvcache-bench: zerocopy: %s %s: content differs\n", how, name);
		return -EIO;
	}
	return 0;
}

/* A pinned block: the length and content the load phase wrote, and the daemon's checksum. */
static int zc_check_block(struct zc_run *r, const struct kvc_block *b, uint64_t i, const char *how)
{
	int ret = zc_check(r, b->data, b->len, zc_id(ZC_SET_LOAD, r->size, 0, i), how, r->names[i]);

	if (!ret && XXH3_64bits(b->data, b->len) != b->checksum) {
		fprintf(stderr,
			"kvcache-bench: zerocopy: %s %s: checksum %016" PRIx64
			" but the payload hashes to %016" PRIx64 "\n",
			how, r->names[i], b->checksum, (uint64_t)XXH3_64bits(b->data, b->len));
		ret = -EIO;
	}
	return ret;
}

/* Read block name of dir through the mount and compare it with block id (not timed). */
static int zc_check_file(struct zc_run *r, const char *dir, uint64_t i, uint64_t id)
{
	ssize_t n;
	int fd = open(zc_path(r, dir, r->names[i]), O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return zc_fail("open", r->path, -errno);
	n = bench_read_full(fd, r->dst, r->size);
	close(fd);
	if (n < 0)
		return zc_fail("read", r->path, (int)n);
	return zc_check(r, r->dst, (size_t)n, id, "read back", r->path);
}

/* ---- load ---- */

/* Store the load data set of the current size in dir (kvc_put, not timed) and its copy in
 * src for the memcpy baseline. */
static int zc_load_setup(struct zc_run *r, struct kvc_dir *d)
{
	for (uint64_t i = 0; i < r->count && !stop; i++) {
		uint64_t id = zc_id(ZC_SET_LOAD, r->size, 0, i);
		int ret;

		stamp(r->wbuf, r->size, id);
		memcpy(r->src + i * r->size, r->wbuf, r->size);
		ret = kvc_put(d, r->names[i], r->wbuf, r->size, 0);
		if (ret < 0)
			return zc_fail("kvc_put", r->names[i], ret);
	}
	return stop ? -EINTR : 0;
}

static double zc_mbps(const struct zc_run *r, uint64_t ns)
{
	return ns ? (double)r->size * (double)r->count / 1e6 / ((double)ns / 1e9) : 0;
}

/* kvc_get + memcpy + kvc_release, one block at a time. */
static int zc_load_get(struct zc_run *r, struct kvc_dir *d, double *best)
{
	uint64_t elapsed = 0, t0;
	struct kvc_block b;
	int ret;

	for (uint64_t i = 0; i < r->count && !stop; i++) {
		t0 = bench_now_ns();
		ret = kvc_get(d, r->names[i], &b);
		if (ret < 0)
			return zc_fail("kvc_get", r->names[i], ret);
		memcpy(r->dst, b.data, b.len < r->size ? b.len : r->size);
		zc_clobber(r->dst);
		elapsed += bench_now_ns() - t0;
		if (zc_sample(r, i) && (ret = zc_check_block(r, &b, i, "kvc_get")) < 0) {
			kvc_release(&b);
			return ret;
		}
		t0 = bench_now_ns();
		ret = kvc_release(&b);
		elapsed += bench_now_ns() - t0;
		if (ret < 0)
			return zc_fail("kvc_release", r->names[i], ret);
	}
	if (stop)
		return -EINTR;
	bench_keep_best(best, zc_mbps(r, elapsed));
	return 0;
}

/* kvc_get_batch of up to ZC_BATCH blocks + memcpy of each + kvc_release_batch. */
static int zc_load_batch(struct zc_run *r, struct kvc_dir *d, double *best)
{
	uint64_t elapsed = 0, t0;
	int ret = 0;

	for (uint64_t i = 0; i < r->count && !stop; i += ZC_BATCH) {
		size_t n = r->count - i < ZC_BATCH ? (size_t)(r->count - i) : ZC_BATCH, j;

		t0 = bench_now_ns();
		ret = kvc_get_batch(d, r->nameptrs + i, n, r->blocks, r->errs);
		if (ret < 0)
			return zc_fail("kvc_get_batch", r->names[i], ret);
		for (j = 0; j < n; j++) {
			const struct kvc_block *b = &r->blocks[j];

			if (!b->data) {
				elapsed += bench_now_ns() - t0;
				ret = zc_fail("kvc_get_batch", r->names[i + j],
					      r->errs[j] ? -r->errs[j] : -EIO);
				break;
			}
			memcpy(r->dst, b->data, b->len < r->size ? b->len : r->size);
			zc_clobber(r->dst);
			if (zc_sample(r, i + j)) {
				elapsed += bench_now_ns() - t0;
				ret = zc_check_block(r, b, i + j, "kvc_get_batch");
				if (ret < 0)
					break;
				t0 = bench_now_ns();
			}
		}
		if (j < n) {
			kvc_release_batch(r->blocks, n);
			return ret;
		}
		ret = kvc_release_batch(r->blocks, n);
		elapsed += bench_now_ns() - t0;
		if (ret < 0)
			return zc_fail("kvc_release_batch", r->names[i], ret);
	}
	if (stop)
		return -EINTR;
	bench_keep_best(best, zc_mbps(r, elapsed));
	return 0;
}

/* kvc_load_batch: locate ZC_BATCH blocks in one request, copy each straight into the user
 * buffer, check its header (no pin, no unpin). */
static int zc_load_locate(struct zc_run *r, struct kvc_dir *d, double *best)
{
	static size_t len[ZC_LOAD_BATCH], cap[ZC_LOAD_BATCH];
	static void *dst[ZC_LOAD_BATCH];
	static int errs[ZC_LOAD_BATCH];
	uint64_t elapsed = 0, t0;
	int ret;

	for (size_t j = 0; j < ZC_LOAD_BATCH; j++) {
		dst[j] = r->dst; /* one user buffer, as the other loaders */
		cap[j] = r->size;
	}
	for (uint64_t i = 0; i < r->count && !stop; i += ZC_LOAD_BATCH) {
		size_t n = r->count - i < ZC_LOAD_BATCH ? (size_t)(r->count - i) : ZC_LOAD_BATCH;

		t0 = bench_now_ns();
		ret = kvc_load_batch(d, r->nameptrs + i, n, dst, cap, len, errs);
		zc_clobber(r->dst);
		elapsed += bench_now_ns() - t0;
		if (ret < 0)
			return zc_fail("kvc_load_batch", r->names[i], ret);
		for (size_t j = 0; j < n; j++)
			if (errs[j])
				return zc_fail("kvc_load_batch", r->names[i + j], -errs[j]);
		/* The buffer holds the batch's last block: check it. */
		ret = zc_check(r, r->dst, len[n - 1], zc_id(ZC_SET_LOAD, r->size, 0, i + n - 1),
			       "kvc_load_batch", r->names[i + n - 1]);
		if (ret < 0)
			return ret;
	}
	if (stop)
		return -EINTR;
	bench_keep_best(best, zc_mbps(r, elapsed));
	return 0;
}

/* open + read() + close through the mount, as kvcache-bench fs reads. */
static int zc_load_read(struct zc_run *r, const char *dir, double *best)
{
	uint64_t elapsed = 0, t0;
	ssize_t n;
	int fd, ret;

	for (uint64_t i = 0; i < r->count && !stop; i++) {
		zc_path(r, dir, r->names[i]);
		t0 = bench_now_ns();
		fd = open(r->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return zc_fail("open", r->path, -errno);
		n = bench_read_full(fd, r->dst, r->size);
		close(fd);
		elapsed += bench_now_ns() - t0;
		if (n < 0)
			return zc_fail("read", r->path, (int)n);
		if (zc_sample(r, i) || (uint64_t)n != r->size) {
			ret = zc_check(r, r->dst, (size_t)n, zc_id(ZC_SET_LOAD, r->size, 0, i),
				       "read", r->path);
			if (ret < 0)
				return ret;
		}
	}
	if (stop)
		return -EINTR;
	bench_keep_best(best, zc_mbps(r, elapsed));
	return 0;
}

/* The baseline: memcpy from private memory as large as the data set. */
static int zc_load_memcpy(struct zc_run *r, double *best)
{
	uint64_t elapsed = 0, t0;
	int ret;

	for (uint64_t i = 0; i < r->count && !stop; i++) {
		t0 = bench_now_ns();
		memcpy(r->dst, r->src + i * r->size, r->size);
		zc_clobber(r->dst);
		elapsed += bench_now_ns() - t0;
		if (zc_sample(r, i)) {
			ret = zc_check(r, r->dst, r->size, zc_id(ZC_SET_LOAD, r->size, 0, i),
				       "memcpy", r->names[i]);
			if (ret < 0)
				return ret;
		}
	}
	if (stop)
		return -EINTR;
	bench_keep_best(best, zc_mbps(r, elapsed));
	return 0;
}

/* ---- lookup ---- */

/* One repetition: n fresh blocks stored with kvc_put (so the kernel has no dentry for them,
 * as for blocks another process stored), then a stat() of each name as an application would
 * (one FUSE LOOKUP each), the same again within the attribute timeout (answered by the
 * kernel's caches), and kvc_lookup of the whole list, repeated for ZC_LOOKUP_MIN_NS. */
static int zc_lookup_rep(struct zc_run *r, uint64_t n, int rep, struct zc_lookup_result *res)
{
	struct kvc_dir *d = NULL;
	char dir[64];
	uint64_t t0, elapsed, calls = 0;
	struct stat st;
	int ret, found;

	r->size = ZC_LOOKUP_BLOCK;
	zc_names(r, ZC_SET_LOOKUP, rep, n);
	zc_dirname(dir, sizeof(dir), "lookup", n, rep);
	ret = zc_mkdir(r, r->k, dir, &d);
	if (ret < 0)
		return ret;
	for (uint64_t i = 0; i < n && !stop && !ret; i++)
		if ((ret = kvc_put(d, r->names[i], r->wbuf, ZC_LOOKUP_BLOCK, 0)) < 0)
			zc_fail("kvc_put", r->names[i], ret);
	if (ret || stop)
		goto out;

	t0 = bench_now_ns();
	do {
		found = kvc_lookup(d, r->nameptrs, n);
		calls++;
		elapsed = bench_now_ns() - t0;
	} while (found == (int)n && elapsed < ZC_LOOKUP_MIN_NS && !stop);
	if (found != (int)n) {
		if (found < 0)
			ret = zc_fail("kvc_lookup", dir, found);
		else {
			fprintf(stderr,
				"kvcache-bench: zerocopy: kvc_lookup %s: %d of %" PRIu64
				" names found, all exist\n",
				dir, found, n);
			ret = -EIO;
		}
		goto out;
	}
	bench_keep_best(&res->kvc_names, (double)(calls * n) / ((double)elapsed / 1e9));

	for (int pass = 0; pass < 2 && !stop; pass++) {
		t0 = bench_now_ns();
		for (uint64_t i = 0; i < n && !stop; i++) {
			if (stat(zc_path(r, dir, r->names[i]), &st) < 0) {
				ret = zc_fail("stat", r->path, -errno);
				goto out;
			}
			if (st.st_size != ZC_LOOKUP_BLOCK) {
				ret = zc_fail("stat", r->path, -EIO);
				goto out;
			}
		}
		elapsed = bench_now_ns() - t0;
		bench_keep_best(pass ? &res->stat_cached_names : &res->stat_names,
				(double)n / ((double)elapsed / 1e9));
	}
out:
	return zc_rmdir(r, d, dir, n, ret);
}

/* ---- put ---- */

enum zc_put_how { ZC_PUT_KVC, ZC_PUT_WRITE, ZC_PUT_INPLACE, ZC_PUT_NHOW };

static const char *const zc_put_names[ZC_PUT_NHOW] = {"kvc", "write", "inplace"};
static const enum zc_set zc_put_sets[ZC_PUT_NHOW] = {ZC_SET_PUT, ZC_SET_WRITE, ZC_SET_INPLACE};

static int zc_put_one(struct zc_run *r, struct kvc_dir *d, enum zc_put_how how, const char *dir,
		      uint64_t i)
{
	struct kvc_put p;
	int fd, ret;

	switch (how) {
	case ZC_PUT_KVC:
		ret = kvc_put(d, r->names[i], r->wbuf, r->size, 0);
		return ret < 0 ? zc_fail("kvc_put", r->names[i], ret) : 0;
	case ZC_PUT_INPLACE:
		ret = kvc_reserve(d, r->names[i], r->size, &p);
		if (ret < 0)
			return zc_fail("kvc_reserve", r->names[i], ret);
		if (!p.inplace) {
			kvc_abort(&p);
			fprintf(stderr,
				"kvcache-bench: zerocopy: kvc_reserve %s: not in place on a "
				"KVC_TRUSTED_WRITER handle\n",
				r->names[i]);
			return -EIO;
		}
		memcpy(p.data, r->wbuf, r->size);
		ret = kvc_commit(&p, 0);
		if (ret < 0) {
			kvc_abort(&p);
			return zc_fail("kvc_commit", r->names[i], ret);
		}
		return 0;
	default:
		fd = open(zc_path(r, dir, r->names[i]), O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC,
			  0644);
		if (fd < 0)
			return zc_fail("create", r->path, -errno);
		ret = bench_write_full(fd, r->wbuf, r->size);
		if (close(fd) < 0 && !ret)
			ret = -errno;
		return ret ? zc_fail("write", r->path, ret) : 0;
	}
}

/* One repetition of one way of storing: count fresh blocks into a fresh directory, then a
 * sample is read back through the mount and everything is deleted (not timed). */
static int zc_put_rep(struct zc_run *r, enum zc_put_how how, int rep, double *best)
{
	struct kvc *k = how == ZC_PUT_WRITE ? NULL : how == ZC_PUT_INPLACE ? r->kw : r->k;
	struct kvc_dir *d = NULL;
	uint64_t t0, elapsed = 0, made = 0;
	char dir[64], phase[16];
	int ret;

	snprintf(phase, sizeof(phase), "put%s", zc_put_names[how]);
	zc_dirname(dir, sizeof(dir), phase, r->size, rep);
	zc_names(r, zc_put_sets[how], rep, r->count);
	ret = zc_mkdir(r, k, dir, &d);
	if (ret < 0)
		return ret;
	for (uint64_t i = 0; i < r->count && !stop; i++) {
		stamp(r->wbuf, r->size, zc_id(zc_put_sets[how], r->size, rep, i));
		made = i + 1; /* a failed put may leave the block behind */
		t0 = bench_now_ns();
		ret = zc_put_one(r, d, how, dir, i);
		elapsed += bench_now_ns() - t0;
		if (ret < 0)
			goto out;
	}
	if (stop)
		goto out;
	bench_keep_best(best, zc_mbps(r, elapsed));
	for (uint64_t i = 0; i < r->count && !ret && !stop; i++)
		if (zc_sample(r, i))
			ret = zc_check_file(r, dir, i, zc_id(zc_put_sets[how], r->size, rep, i));
out:
	return zc_rmdir(r, d, dir, made, ret);
}

/* ---- driver ---- */

static void zc_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: kvcache-bench zerocopy [--sizes LIST] [--count N] [--reps R]\n"
	    "                              [--lookup-blocks N] [--suffix S] [--pool-size SIZE]\n"
	    "                              [--json] [--plot FILE.png]\n"
	    "On one kvcachefs mount, compare libkvcache with the file interface and with\n"
	    "plain memory, best of R repetitions:\n"
	    "  load    kvc_load_batch (up to 600 names a call: locate, copy into a user buffer,\n"
	    "          check the header), kvc_get_batch + memcpy + kvc_release_batch (pins),\n"
	    "          the same with kvc_get/kvc_release one block at a time,\n"
	    "          open+read()+close into the same buffer, and memcpy from a page-aligned\n"
	    "          private buffer as large as the data set (target: kvc_load >= %.1f x\n"
	    "          memcpy)\n"
	    "  lookup  kvc_lookup of N existing names vs a stat() of each, uncached (the\n"
	    "          blocks were stored with kvc_put: the kernel has no dentry for them) and\n"
	    "          again within the attribute timeout (target: >= %.0f x uncached stat)\n"
	    "  put     kvc_put vs open(O_CREAT)+write()+close, and kvc_reserve + memcpy in\n"
	    "          place + kvc_commit when KVC_TRUSTED_WRITER is granted (target: kvc_put\n"
	    "          >= %.1f x write)\n"
	    "  --sizes LIST         block sizes (default %s)\n"
	    "  --count N            blocks per size (default: 256 MiB worth, %d to %d)\n"
	    "  --reps R             repetitions (default %d)\n"
	    "  --lookup-blocks N    names in the prefix looked up (default and at most %d)\n"
	    "  --suffix S           appended to the 32 hex digits of the lookup names (at\n"
	    "                       most %d bytes; default none)\n"
	    "  --pool-size SIZE     pool size (default: 1.5 x the data of all phases, at\n"
	    "                       least 256M)\n"
	    "  --json               print the results as JSON\n"
	    "  --plot FILE.png      also draw them with gnuplot (Debian package gnuplot-nox):\n"
	    "                       for load, put and lookup, the GB/s (names/s) of each way\n"
	    "                       per size and its ratios against the target line (drawn\n"
	    "                       also when a target is missed); checked before the run\n"
	    "Exit status: 0 targets met, 3 a target missed, 1 error (the plot could not be\n"
	    "drawn included: the figures are still printed), 2 usage.\n",
	    ZC_TARGET_LOAD, ZC_TARGET_LOOKUP, ZC_TARGET_PUT, ZC_DEFAULT_SIZES, ZC_MIN_COUNT,
	    ZC_MAX_COUNT, ZC_DEFAULT_REPS, KVC_LOOKUP_MAX, ZC_SUFFIX_MAX);
}

/* Will the pool (in /dev/shm) and our private copy of the data set fit? Prints why not. */
static int zc_check_memory(uint64_t pool, uint64_t private_bytes)
{
	uint64_t avail = bench_meminfo("MemAvailable"), shm = 0;
	struct statvfs sv;
	char a[32], b[32];

	if (statvfs("/dev/shm", &sv) == 0)
		shm = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (shm && shm < pool) {
		bench_fmt_size(round_up(pool, MIB), a, sizeof(a));
		bench_fmt_size(round_up(shm, MIB) - MIB, b, sizeof(b));
		fprintf(stderr,
			"kvcache-bench: zerocopy: a pool of %s does not fit in /dev/shm (%s "
			"free); lower --count\n",
			a, b);
		return -ENOSPC;
	}
	if (avail && avail < pool + private_bytes + 64 * MIB) {
		bench_fmt_size(round_up(pool + private_bytes, MIB), a, sizeof(a));
		bench_fmt_size(round_up(avail, MIB) - MIB, b, sizeof(b));
		fprintf(stderr,
			"kvcache-bench: zerocopy: needs %s of memory, %s available; lower "
			"--count\n",
			a, b);
		return -ENOMEM;
	}
	return 0;
}

/* The evictions counter of the mount (the phases must not evict), or -errno. */
static int64_t zc_evictions(const struct zc_run *r)
{
	struct kvcachefs_status st = {.version = KVCACHEFS_ABI_VERSION};
	int fd = open(r->t.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, KVCACHEFS_IOC_STATUS, &st) < 0)
		ret = -errno;
	close(fd);
	return ret ? ret : (int64_t)st.evictions;
}

struct zc_results {
	int nsizes, reps;
	uint64_t sizes[FS_MAX_SIZES], counts[FS_MAX_SIZES], pool, lookup_n;
	struct zc_load_result load[FS_MAX_SIZES];
	struct zc_put_result put[FS_MAX_SIZES];
	struct zc_lookup_result lookup;
	const char *suffix;
	int inplace_err; /* 0, or why the in-place line is missing */
	int64_t evictions;
};

/* Are the targets met? Each ratio is checked where both sides were measured. */
static bool zc_met(const struct zc_results *z)
{
	bool met = bench_ratio(z->lookup.kvc_names, z->lookup.stat_names) >= ZC_TARGET_LOOKUP;

	for (int s = 0; s < z->nsizes; s++) {
		met = met && bench_ratio(z->load[s].kvc_load, z->load[s].memcpy) >= ZC_TARGET_LOAD;
		met = met && bench_ratio(z->put[s].kvc_put, z->put[s].write) >= ZC_TARGET_PUT;
	}
	return met;
}

static void zc_print_json(const struct zc_results *z)
{
	const struct zc_lookup_result *l = &z->lookup;
	double n = (double)z->lookup_n;

	printf("{\"bench\": \"zerocopy\", \"reps\": %d, \"stat\": \"best\", \"pool_size\": %" PRIu64
	       ", \"batch\": %d,\n \"load\": [",
	       z->reps, z->pool, ZC_BATCH);
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_load_result *r = &z->load[s];

		printf("%s\n  {\"size\": %" PRIu64 ", \"count\": %" PRIu64
		       ", \"kvc_load_MBps\": %.1f, \"kvc_get_MBps\": %.1f, \"kvc_batch_MBps\": %.1f"
		       ", \"read_MBps\": %.1f, \"memcpy_MBps\": %.1f, \"kvc_load_memcpy\": %.3f"
		       ", \"kvc_batch_memcpy\": %.3f, \"kvc_load_read\": %.3f, \"kvc_get_memcpy\": "
		       "%.3f}",
		       s ? "," : "", z->sizes[s], z->counts[s], r->kvc_load, r->kvc_get,
		       r->kvc_batch, r->read, r->memcpy, bench_ratio(r->kvc_load, r->memcpy),
		       bench_ratio(r->kvc_batch, r->memcpy), bench_ratio(r->kvc_load, r->read),
		       bench_ratio(r->kvc_get, r->memcpy));
	}
	printf("],\n \"lookup\": {\"names\": %" PRIu64 ", \"suffix\": \"%s\", "
	       "\"kvc_lookup_per_s\": %.1f, \"kvc_lookup_names_per_s\": %.0f, "
	       "\"stat_prefixes_per_s\": %.1f, \"stat_names_per_s\": %.0f, "
	       "\"stat_cached_prefixes_per_s\": %.1f, \"stat_cached_names_per_s\": %.0f, "
	       "\"kvc_stat\": %.2f, \"kvc_stat_cached\": %.2f},\n \"put\": [",
	       z->lookup_n, z->suffix, l->kvc_names / n, l->kvc_names, l->stat_names / n,
	       l->stat_names, l->stat_cached_names / n, l->stat_cached_names,
	       bench_ratio(l->kvc_names, l->stat_names),
	       bench_ratio(l->kvc_names, l->stat_cached_names));
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_put_result *r = &z->put[s];

		printf("%s\n  {\"size\": %" PRIu64 ", \"count\": %" PRIu64
		       ", \"kvc_put_MBps\": %.1f, \"write_MBps\": %.1f, ",
		       s ? "," : "", z->sizes[s], z->counts[s], r->kvc_put, r->write);
		if (z->inplace_err)
			printf("\"inplace_MBps\": null, ");
		else
			printf("\"inplace_MBps\": %.1f, ", r->inplace);
		printf("\"kvc_put_write\": %.3f, \"inplace_write\": %.3f}",
		       bench_ratio(r->kvc_put, r->write), bench_ratio(r->inplace, r->write));
	}
	printf("],\n \"inplace_error\": %s%s%s, \"evictions\": %" PRId64
	       ",\n \"targets\": {\"load_kvc_load_memcpy\": %.1f, \"lookup_kvc_stat\": %.0f, "
	       "\"put_kvc_put_write\": %.1f}, \"target_met\": %s}\n",
	       z->inplace_err ? "\"" : "", z->inplace_err ? strerror(z->inplace_err) : "null",
	       z->inplace_err ? "\"" : "", z->evictions, ZC_TARGET_LOAD, ZC_TARGET_LOOKUP,
	       ZC_TARGET_PUT, zc_met(z) ? "true" : "false");
}

/* The mark after a ratio that has a target: '*' when missed. */
static char zc_mark(double v, double target)
{
	return v >= target ? ' ' : '*';
}

static void zc_print(const struct zc_results *z)
{
	const struct zc_lookup_result *l = &z->lookup;
	double n = (double)z->lookup_n;
	char sz[32];

	printf("best of %d; MB/s = 10^6 bytes/s; batches of %d names\n", z->reps, ZC_BATCH);
	printf("\nload into a user buffer (MB/s)\n");
	printf("%-6s %6s %12s %12s %12s %12s %12s\n", "size", "count", "kvc_load", "kvc_batch",
	       "kvc_get", "read()", "memcpy");
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_load_result *r = &z->load[s];

		bench_fmt_size(z->sizes[s], sz, sizeof(sz));
		printf("%-6s %6" PRIu64 " %12.1f %12.1f %12.1f %12.1f %12.1f\n", sz, z->counts[s],
		       r->kvc_load, r->kvc_batch, r->kvc_get, r->read, r->memcpy);
	}
	printf("\nlookup of a %" PRIu64 "-block prefix%s%s%s\n", z->lookup_n,
	       z->suffix[0] ? " (names <32 hex>" : "", z->suffix, z->suffix[0] ? ")" : "");
	printf("%-22s %12s %12s\n", "", "prefixes/s", "names/s");
	printf("%-22s %12.1f %12.0f\n", "kvc_lookup", l->kvc_names / n, l->kvc_names);
	printf("%-22s %12.1f %12.0f\n", "stat() uncached", l->stat_names / n, l->stat_names);
	printf("%-22s %12.1f %12.0f\n", "stat() cached", l->stat_cached_names / n,
	       l->stat_cached_names);
	printf("\nput from a user buffer (MB/s)\n");
	printf("%-6s %6s %12s %12s %12s\n", "size", "count", "kvc_put", "write()", "in place");
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_put_result *r = &z->put[s];

		bench_fmt_size(z->sizes[s], sz, sizeof(sz));
		printf("%-6s %6" PRIu64 " %12.1f %12.1f", sz, z->counts[s], r->kvc_put, r->write);
		if (z->inplace_err)
			printf(" %12s\n", "-");
		else
			printf(" %12.1f\n", r->inplace);
	}
	if (z->inplace_err)
		printf("(in place: kvc_open with KVC_TRUSTED_WRITER: %s)\n",
		       strerror(z->inplace_err));

	printf("\nratios (1.00 = as fast; targets: load kvc_load/memcpy >= %.1f, "
	       "put kvc_put/write >= %.1f)\n",
	       ZC_TARGET_LOAD, ZC_TARGET_PUT);
	printf("%-6s %14s  %12s %14s %14s %14s  %16s\n", "size", "load/memcpy", "load/read",
	       "batch/memcpy", "get/memcpy", "kvc_put/write", "in place/write");
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_load_result *r = &z->load[s];
		const struct zc_put_result *p = &z->put[s];
		double lr = bench_ratio(r->kvc_load, r->memcpy),
		       pr = bench_ratio(p->kvc_put, p->write);

		bench_fmt_size(z->sizes[s], sz, sizeof(sz));
		printf("%-6s %14.2f%c %12.2f %14.2f %14.2f %14.2f%c", sz, lr,
		       zc_mark(lr, ZC_TARGET_LOAD), bench_ratio(r->kvc_load, r->read),
		       bench_ratio(r->kvc_batch, r->memcpy), bench_ratio(r->kvc_get, r->memcpy), pr,
		       zc_mark(pr, ZC_TARGET_PUT));
		if (z->inplace_err)
			printf(" %16s\n", "-");
		else
			printf(" %16.2f\n", bench_ratio(p->inplace, p->write));
	}
	printf("lookup kvc_lookup/stat(): %.1f%c uncached (target >= %.0f), %.1f cached\n",
	       bench_ratio(l->kvc_names, l->stat_names),
	       zc_mark(bench_ratio(l->kvc_names, l->stat_names), ZC_TARGET_LOOKUP),
	       ZC_TARGET_LOOKUP, bench_ratio(l->kvc_names, l->stat_cached_names));
	if (!zc_met(z))
		printf("* below its target\n");
	if (z->evictions)
		printf("warning: the pool evicted %" PRId64 " blocks during the run\n",
		       z->evictions);
}

/* --plot: for load, put and lookup, a panel of the figures (GB/s, names/s) and one of their
 * ratios with the target line of the ratio that has one. */
static int zc_plot(const char *path, const struct zc_results *z)
{
	const struct zc_lookup_result *l = &z->lookup;
	const char *gbps = "GB/s (10^9 bytes/s)", *ratio = "ratio (1.00 = as fast)";
	char sz[32], line[64];
	struct bench_plot *p;
	int ret;

	p = bench_plot_begin("zerocopy",
			     "libkvcache vs the file interface of the same mount and vs memcpy; "
			     "best of %d; targets %s",
			     z->reps, zc_met(z) ? "met" : "MISSED");
	bench_plot_panel(
	    p, "load into a user buffer", "block size", gbps,
	    (const char *const[]){"kvc_load", "kvc_batch", "kvc_get", "read()", "memcpy", NULL});
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_load_result *r = &z->load[s];

		bench_plot_row(p, bench_fmt_size(z->sizes[s], sz, sizeof(sz)),
			       (const double[]){r->kvc_load / 1e3, r->kvc_batch / 1e3,
						r->kvc_get / 1e3, r->read / 1e3, r->memcpy / 1e3});
	}
	bench_plot_panel(p, "load, ratios", "block size", ratio,
			 (const char *const[]){"kvc_load / memcpy", "kvc_load / read()",
					       "kvc_batch / memcpy", "kvc_get / memcpy", NULL});
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_load_result *r = &z->load[s];

		bench_plot_row(p, bench_fmt_size(z->sizes[s], sz, sizeof(sz)),
			       (const double[]){bench_ratio(r->kvc_load, r->memcpy),
						bench_ratio(r->kvc_load, r->read),
						bench_ratio(r->kvc_batch, r->memcpy),
						bench_ratio(r->kvc_get, r->memcpy)});
	}
	snprintf(line, sizeof(line), "target: kvc_load / memcpy >= %.1f", ZC_TARGET_LOAD);
	bench_plot_line(p, 0, ZC_TARGET_LOAD, line);

	bench_plot_panel(p, "put from a user buffer", "block size", gbps,
			 z->inplace_err
			     ? (const char *const[]){"kvc_put", "write()", NULL}
			     : (const char *const[]){"kvc_put", "write()", "in place", NULL});
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_put_result *r = &z->put[s];

		bench_plot_row(
		    p, bench_fmt_size(z->sizes[s], sz, sizeof(sz)),
		    (const double[]){r->kvc_put / 1e3, r->write / 1e3, r->inplace / 1e3});
	}
	bench_plot_panel(p, "put, ratios", "block size", ratio,
			 z->inplace_err ? (const char *const[]){"kvc_put / write()", NULL}
					: (const char *const[]){"kvc_put / write()",
								"in place / write()", NULL});
	for (int s = 0; s < z->nsizes; s++) {
		const struct zc_put_result *r = &z->put[s];

		bench_plot_row(p, bench_fmt_size(z->sizes[s], sz, sizeof(sz)),
			       (const double[]){bench_ratio(r->kvc_put, r->write),
						bench_ratio(r->inplace, r->write)});
	}
	snprintf(line, sizeof(line), "target: kvc_put / write() >= %.1f", ZC_TARGET_PUT);
	bench_plot_line(p, 0, ZC_TARGET_PUT, line);

	snprintf(line, sizeof(line), "%" PRIu64 " names", z->lookup_n);
	bench_plot_panel(
	    p, "lookup of a prefix of existing blocks", "names per call", "names per second",
	    (const char *const[]){"kvc_lookup", "stat() uncached", "stat() cached", NULL});
	bench_plot_row(p, line,
		       (const double[]){l->kvc_names, l->stat_names, l->stat_cached_names});
	bench_plot_panel(p, "lookup, ratios", "names per call", ratio,
			 (const char *const[]){"kvc_lookup / stat() uncached",
					       "kvc_lookup / stat() cached", NULL});
	bench_plot_row(p, line,
		       (const double[]){bench_ratio(l->kvc_names, l->stat_names),
					bench_ratio(l->kvc_names, l->stat_cached_names)});
	snprintf(line, sizeof(line), "target: kvc_lookup / stat() uncached >= %.0f",
		 ZC_TARGET_LOOKUP);
	bench_plot_line(p, 0, ZC_TARGET_LOOKUP, line);
	ret = bench_plot_write(p, path);
	bench_plot_free(p);
	return ret;
}

/* Load phase of one size: store the data set, then every repetition runs the four ways. */
static int zc_load_size(struct zc_run *r, struct zc_results *z, int s)
{
	struct kvc_dir *d = NULL;
	char dir[64];
	int ret;

	zc_names(r, ZC_SET_LOAD, 0, r->count);
	zc_dirname(dir, sizeof(dir), "load", r->size, 0);
	ret = zc_mkdir(r, r->k, dir, &d);
	if (ret < 0)
		return ret;
	ret = zc_load_setup(r, d);
	for (int rep = 0; rep < z->reps && !ret && !stop; rep++) {
		struct zc_load_result *res = &z->load[s];

		ret = target_check(&r->t);
		if (!ret)
			ret = zc_load_locate(r, d, &res->kvc_load);
		if (!ret)
			ret = zc_load_batch(r, d, &res->kvc_batch);
		if (!ret)
			ret = zc_load_get(r, d, &res->kvc_get);
		if (!ret)
			ret = zc_load_read(r, dir, &res->read);
		if (!ret)
			ret = zc_load_memcpy(r, &res->memcpy);
		if (!ret)
			fprintf(stderr, " %d", rep + 1);
	}
	return zc_rmdir(r, d, dir, r->count, ret);
}

static int zc_put_size(struct zc_run *r, struct zc_results *z, int s)
{
	int ret = 0;

	for (int rep = 0; rep < z->reps && !ret && !stop; rep++) {
		struct zc_put_result *res = &z->put[s];

		ret = target_check(&r->t);
		if (!ret)
			ret = zc_put_rep(r, ZC_PUT_KVC, rep, &res->kvc_put);
		if (!ret)
			ret = zc_put_rep(r, ZC_PUT_WRITE, rep, &res->write);
		if (!ret && r->kw)
			ret = zc_put_rep(r, ZC_PUT_INPLACE, rep, &res->inplace);
		if (!ret)
			fprintf(stderr, " %d", rep + 1);
	}
	return stop ? -EINTR : ret;
}

static int cmd_zerocopy(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"count", required_argument, NULL, 'n'},
	    {"sizes", required_argument, NULL, 's'},
	    {"reps", required_argument, NULL, 'r'},
	    {"lookup-blocks", required_argument, NULL, 'l'},
	    {"suffix", required_argument, NULL, 'x'},
	    {"pool-size", required_argument, NULL, 'p'},
	    {"json", no_argument, NULL, 'j'},
	    {"plot", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct zc_results z = {
	    .reps = ZC_DEFAULT_REPS, .lookup_n = ZC_DEFAULT_LOOKUP, .suffix = ""};
	struct zc_run r = {.t = {.kind = TARGET_KVCACHEFS}};
	uint64_t count = 0, maxsz = ZC_LOOKUP_BLOCK, maxcount = 0, maxset = 0, need = 0;
	char bindir[PATH_MAX], sz[32];
	bool json = false, printed = false;
	int c, st, ret = 0, lookup_n;
	const char *plot = NULL;

	parse_sizes(ZC_DEFAULT_SIZES, z.sizes, &z.nsizes);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (arg_positive("--count", optarg, &count) < 0)
				return 2;
			break;
		case 's':
			if (parse_sizes(optarg, z.sizes, &z.nsizes) < 0) {
				fprintf(stderr, "kvcache-bench: --sizes: bad list '%s'\n", optarg);
				return 2;
			}
			break;
		case 'r':
			if (bench_arg_int("--reps", optarg, 1, 100, &z.reps) < 0)
				return 2;
			break;
		case 'l':
			if (bench_arg_int("--lookup-blocks", optarg, 1, KVC_LOOKUP_MAX, &lookup_n) <
			    0)
				return 2;
			z.lookup_n = (uint64_t)lookup_n;
			break;
		case 'x':
			if (strlen(optarg) > ZC_SUFFIX_MAX || strpbrk(optarg, "/\"\\")) {
				fprintf(stderr,
					"kvcache-bench: --suffix: at most %d bytes, no '/', "
					"'\"' or '\\'\n",
					ZC_SUFFIX_MAX);
				return 2;
			}
			snprintf(r.suffix, sizeof(r.suffix), "%s", optarg);
			z.suffix = r.suffix;
			break;
		default:
			st = arg_common(c, &z.pool, &json, &plot, zc_usage);
			if (st >= 0)
				return st;
		}
	}
	if (optind != argc) {
		zc_usage(stderr);
		return 2;
	}
	if (plot && bench_plot_check(plot) < 0)
		return 1;

	/* The pool holds every load data set at once, plus one put set and the lookup set. */
	for (int s = 0; s < z.nsizes; s++) {
		uint64_t bytes;

		z.counts[s] = count ? count : ZC_BYTES_PER_SIZE / z.sizes[s];
		if (!count && z.counts[s] < ZC_MIN_COUNT)
			z.counts[s] = ZC_MIN_COUNT;
		if (!count && z.counts[s] > ZC_MAX_COUNT)
			z.counts[s] = ZC_MAX_COUNT;
		bytes = z.counts[s] * round_up(z.sizes[s], 4096);
		need += bytes;
		if (bytes > maxset)
			maxset = bytes;
		if (z.sizes[s] > maxsz)
			maxsz = z.sizes[s];
		if (z.counts[s] > maxcount)
			maxcount = z.counts[s];
	}
	if (z.lookup_n > maxcount)
		maxcount = z.lookup_n;
	need += maxset + z.lookup_n * 4096;
	if (!z.pool) {
		z.pool = round_up(need + need / 2, 64 * MIB);
		if (z.pool < MIN_POOL)
			z.pool = MIN_POOL;
	}
	if (zc_check_memory(z.pool, maxset) < 0)
		return 1;

	if (bench_bin_dir(bindir, sizeof(bindir)) < 0 || target_bin(&r.t, bindir) < 0)
		return 1;
	r.names = calloc(maxcount, sizeof(*r.names));
	r.nameptrs = calloc(maxcount, sizeof(*r.nameptrs));
	r.blocks = calloc(ZC_BATCH, sizeof(*r.blocks));
	r.errs = calloc(ZC_BATCH, sizeof(*r.errs));
	/* Page-aligned buffers, as an engine's (pinned, page-aligned) KV buffers are. With
	 * malloc's 16-byte offset the private baseline would copy between equally misaligned
	 * buffers while pool blocks (page-aligned) would copy into a misaligned destination:
	 * measured 10-15% apart for that reason alone. */
	r.wbuf = aligned_alloc(4096, (maxsz + 4095) / 4096 * 4096);
	r.dst = bench_buffer(maxsz); /* faulted in before any timing, kept out of forks */
	r.src = aligned_alloc(4096, (maxset + 4095) / 4096 * 4096);
	if (!r.names || !r.nameptrs || !r.blocks || !r.errs || !r.wbuf || !r.dst || !r.src) {
		fprintf(stderr, "kvcache-bench: out of memory\n");
		ret = -ENOMEM;
		goto out;
	}
	install_signals();
	ret = target_mount(&r.t, z.pool);
	if (ret < 0)
		goto out;
	bench_fmt_size(z.pool, sz, sizeof(sz));
	fprintf(stderr, "kvcache-bench: kvcachefs mounted on %s (%s)\n", r.t.dir, sz);
	ret = kvc_open(r.t.dir, 0, &r.k);
	if (ret < 0) {
		zc_fail("kvc_open", r.t.dir, ret);
		goto out;
	}
	ret = kvc_open(r.t.dir, KVC_TRUSTED_WRITER, &r.kw);
	if (ret < 0) {
		r.kw = NULL;
		z.inplace_err = -ret;
		fprintf(stderr,
			"kvcache-bench: kvc_open(KVC_TRUSTED_WRITER): %s; no in-place puts\n",
			strerror(-ret));
	}
	ret = 0;

	for (int s = 0; s < z.nsizes && !ret; s++) {
		r.size = z.sizes[s];
		r.count = z.counts[s];
		fill_pattern(r.wbuf, r.size, 0x9e3779b97f4a7c15ull ^ r.size);
		bench_fmt_size(r.size, sz, sizeof(sz));
		fprintf(stderr, "kvcache-bench: load %s x %" PRIu64 ":", sz, r.count);
		ret = zc_load_size(&r, &z, s);
		fprintf(stderr, "\n");
	}
	if (!ret) {
		fprintf(stderr, "kvcache-bench: lookup %" PRIu64 " names:", z.lookup_n);
		fill_pattern(r.wbuf, ZC_LOOKUP_BLOCK, 1);
		for (int rep = 0; rep < z.reps && !ret; rep++) {
			ret = target_check(&r.t);
			if (!ret)
				ret = zc_lookup_rep(&r, z.lookup_n, rep, &z.lookup);
			if (!ret)
				fprintf(stderr, " %d", rep + 1);
		}
		fprintf(stderr, "\n");
	}
	for (int s = 0; s < z.nsizes && !ret; s++) {
		r.size = z.sizes[s];
		r.count = z.counts[s];
		fill_pattern(r.wbuf, r.size, 0x9e3779b97f4a7c15ull ^ r.size);
		bench_fmt_size(r.size, sz, sizeof(sz));
		fprintf(stderr, "kvcache-bench: put %s x %" PRIu64 ":", sz, r.count);
		ret = zc_put_size(&r, &z, s);
		fprintf(stderr, "\n");
	}
	if (ret)
		goto out;
	z.evictions = zc_evictions(&r);
	if (z.evictions < 0) {
		ret = zc_fail("KVCACHEFS_IOC_STATUS", r.t.dir, (int)z.evictions);
		goto out;
	}
	if (json)
		zc_print_json(&z);
	else
		zc_print(&z);
	ret = zc_met(&z) ? 0 : 3;
	printed = true;
out:
	if (r.kw)
		kvc_close(r.kw);
	if (r.k)
		kvc_close(r.k);
	finish(ret);
	if (printed && plot && zc_plot(plot, &z) < 0)
		ret = 1;
	free(r.names);
	free(r.nameptrs);
	free(r.blocks);
	free(r.errs);
	free(r.wbuf);
	bench_buffer_free(r.dst, maxsz);
	free(r.src);
	return ret < 0 ? 1 : ret;
}

/* ---- kvcache-bench transfer ------------------------------------------------------------ */

/*
 * The transfer engine over loopback TCP against iperf3 on the same loopback. A
 * `kvcache-xfer serve` process (found next to this binary) exports one segment filled with
 * its pattern; an engine in this process opens it and times batches of READs and WRITEs of
 * each size: batch B = B requests submitted at once and waited together, repeated for
 * --seconds. Requests of a batch use distinct local and remote ranges while they fit in
 * TR_SPAN_MAX, then wrap around (the same bytes again, never a different layout).
 *
 * The baseline is iperf3 (one-off server, -P equal to the engine's connections per peer, and
 * -P 1), run between the repetitions so that drift on a busy machine hits both; the best
 * iperf3 figure is the baseline. Content is checked outside the clock: the first READ of
 * each size against the server's pattern (before any WRITE changed it), and every WRITE
 * phase by reading its first range back.
 *
 * Children (the server, iperf3) run in their own process groups, so a Ctrl-C reaches only
 * the bench, which then stops them; PR_SET_PDEATHSIG stops them if the bench itself is
 * killed. The secret file and the children go away on every exit path.
 */

#define TR_DEFAULT_SIZES   "64K,256K,2M,16M"
#define TR_DEFAULT_BATCHES "1,32"
#define TR_DEFAULT_SECONDS 1
#define TR_DEFAULT_REPS	   3
#define TR_MAX_BATCHES	   8
#define TR_MAX_BATCH	   1024
#define TR_SPAN_MAX	   (512 * MIB) /* bytes of distinct ranges per batch, each side */
#define TR_TARGET	   0.8	       /* TR_TARGET_SIZE READ and WRITE / iperf3 */
#define TR_TARGET_SIZE	   (2 * MIB)
#define TR_LAT_SIZE	   (64 * 1024ull)
#define TR_LAT_MAX	   200000		  /* latency samples kept per op */
#define TR_SEED		   0x7472616e73666572ull  /* the server's pattern ("transfer") */
#define TR_TIMEOUT_MS	   5000			  /* the engine's request timeout */
#define TR_WAIT_MS	   (TR_TIMEOUT_MS + 5000) /* our bound on a batch, never forever */
#define TR_START_MS	   30000		  /* for a child to start listening */
#define TR_JSON_MAX	   (4 * MIB)		  /* of iperf3's output */

enum tr_op { TR_READ, TR_WRITE, TR_NOPS };

static const char *const tr_op_names[TR_NOPS] = {"READ", "WRITE"};

struct tr_results {
	uint64_t sizes[FS_MAX_SIZES], batches[TR_MAX_BATCHES];
	int nsizes, nbatches, reps, seconds;
	unsigned conns;		/* TCP connections per peer, as in use */
	const char *congestion; /* --tcp-congestion: the engines' and iperf3's; NULL: system's */
	char system_cc[32];	/* net.ipv4.tcp_congestion_control */
	double gbps[FS_MAX_SIZES][TR_MAX_BATCHES][TR_NOPS]; /* best over the repetitions */
	double iperf_p1, iperf_pn;			    /* GB/s, best over the repetitions */
	uint64_t *lat[TR_NOPS];				    /* ns samples of 64 KiB requests */
	size_t nlat[TR_NOPS];
};

/* Children to stop on every exit path. */
#define TR_NKIDS 4
static pid_t tr_kids[TR_NKIDS];

struct tr_run {
	char bindir[PATH_MAX];
	char secret_path[64]; /* "" when there is none to remove */
	char secret[65];      /* 64 hex digits */
	pid_t server;
	char addr[128];
	uint32_t seg;
	uint64_t seg_size;
	struct xfer_engine *e;
	struct xfer_peer *peer;
	const char *congestion; /* both engines' TCP congestion control, NULL: the system's */
	unsigned char *buf;	/* seg_size bytes, registered */
	uint32_t local_seg;
	bool registered;
	struct xfer_req *reqs; /* TR_MAX_BATCH */
};

static int tr_fail(const char *what, int err)
{
	if (err == -EINTR && stop)
		return err;
	fprintf(stderr, "kvcache-bench: transfer: %s: %s\n", what, strerror(-err));
	return err;
}

static void tr_kid_track(pid_t pid, bool add)
{
	for (int i = 0; i < TR_NKIDS; i++)
		if (add ? !tr_kids[i] : tr_kids[i] == pid) {
			tr_kids[i] = add ? pid : 0;
			return;
		}
}

/* bench_spawn with stdout on out_fd (-1: /dev/null) and stderr on /dev/null when quiet,
 * tracked in tr_kids. */
static pid_t tr_spawn(char *const argv[], int out_fd, bool quiet)
{
	pid_t pid = bench_spawn(argv, out_fd, quiet ? -1 : STDERR_FILENO);

	if (pid > 0)
		tr_kid_track(pid, true);
	return pid;
}

/* bench_reap, and a child reaped is no longer tracked. */
static int tr_reap(pid_t pid, int timeout_ms, int *st)
{
	int ret = bench_reap(pid, timeout_ms, st);

	if (!ret)
		tr_kid_track(pid, false);
	return ret;
}

/* Stop a child: SIGTERM, then SIGKILL after 5 s. Returns its wait status, -1 if unknown. */
static int tr_stop(pid_t pid)
{
	int st = -1;

	if (pid > 0 && bench_kill(pid, 5000, &st) == 0)
		tr_kid_track(pid, false);
	return st;
}

static void tr_stop_all(void)
{
	for (int i = 0; i < TR_NKIDS; i++)
		if (tr_kids[i])
			tr_stop(tr_kids[i]);
}

/* Read from fd into buf (cap bytes, NUL-terminated) until EOF, or until a newline when
 * line, within timeout_ms. Returns the length, -ETIMEDOUT, -EINTR (stop) or -errno. */
static ssize_t tr_read_until(int fd, char *buf, size_t cap, bool line, int timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	size_t got = 0;

	buf[0] = '\0';
	while (!stop) {
		uint64_t now = bench_now_ns();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			continue;
		n = read(fd, buf + got, cap - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
		buf[got] = '\0';
		if (n == 0 || got == cap - 1 || (line && strchr(buf, '\n')))
			return (ssize_t)got;
	}
	return -EINTR;
}

/* ---- the server ---- */

/* A 0600 temp file with a fresh random secret. */
static int tr_secret(struct tr_run *r)
{
	unsigned char raw[32];
	int fd, ret = 0;

	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return tr_fail("getrandom", -errno);
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(r->secret + 2 * i, 3, "%02x", raw[i]);
	explicit_bzero(raw, sizeof(raw));
	snprintf(r->secret_path, sizeof(r->secret_path), "/tmp/kvcache-bench-secret.XXXXXX");
	fd = mkstemp(r->secret_path); /* mode 0600 */
	if (fd < 0) {
		ret = -errno;
		r->secret_path[0] = '\0';
		return tr_fail("mkstemp", ret);
	}
	if (bench_write_full(fd, r->secret, strlen(r->secret)) < 0 || close(fd) < 0)
		ret = tr_fail(r->secret_path, -errno);
	return ret;
}

/* Start kvcache-xfer serve and read its "listening ADDR segment ID size SIZE" line. */
static int tr_server_start(struct tr_run *r)
{
	char bin[PATH_MAX + 32], size[32], seed[32], line[512];
	int pfd[2], ret;
	uint64_t got_size = 0;
	ssize_t n;

	snprintf(bin, sizeof(bin), "%s/kvcache-xfer", r->bindir);
	if (access(bin, X_OK) < 0) {
		ret = -errno;
		fprintf(stderr, "kvcache-bench: %s: %s (set KVC_BIN_DIR to the build's bin/)\n",
			bin, strerror(errno));
		return ret;
	}
	snprintf(size, sizeof(size), "%" PRIu64, r->seg_size);
	snprintf(seed, sizeof(seed), "0x%" PRIx64, (uint64_t)TR_SEED);
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return tr_fail("pipe", -errno);
	r->server = tr_spawn((char *const[]){bin, "serve", "--listen", "127.0.0.1:0",
					     "--secret-file", r->secret_path, "--size", size,
					     "--pattern", seed, "--transports", "tcp",
					     r->congestion ? "--tcp-congestion" : NULL,
					     (char *)r->congestion, NULL},
			     pfd[1], false);
	close(pfd[1]);
	if (r->server < 0) {
		close(pfd[0]);
		ret = (int)r->server;
		r->server = 0;
		return tr_fail("fork", ret);
	}
	n = tr_read_until(pfd[0], line, sizeof(line), true, TR_START_MS);
	close(pfd[0]);
	if (n == -EINTR)
		return -EINTR;
	if (n < 0)
		return tr_fail("waiting for kvcache-xfer serve to listen", (int)n);
	if (sscanf(line, "listening %127s segment %" SCNu32 " size %" SCNu64, r->addr, &r->seg,
		   &got_size) != 3 ||
	    got_size != r->seg_size) {
		if (n == 0)
			fprintf(stderr,
				"kvcache-bench: transfer: %s serve exited without "
				"listening\n",
				bin);
		else
			fprintf(stderr,
				"kvcache-bench: transfer: %s serve printed '%.*s', not "
				"'listening ADDR segment ID size %" PRIu64 "'\n",
				bin, (int)strcspn(line, "\n"), line, r->seg_size);
		return -EIO;
	}
	return 0;
}

/* ---- iperf3 ---- */

/* Does something listen on 127.0.0.1:port (IPv4)? */
static bool tr_listening(int port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	char line[512];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned lport, state;

		if (sscanf(line, " %*d: %*x:%x %*x:%*x %x", &lport, &state) == 2 &&
		    (int)lport == port && state == 0x0A)
			found = true;
	}
	fclose(f);
	return found;
}

/* end.sum_received.bits_per_second of iperf3's JSON, in GB/s; -EIO with the reason. */
static int tr_iperf3_parse(const char *json, double *gbps)
{
	cJSON *root = cJSON_Parse(json), *end, *sum, *bps, *err;
	int ret = -EIO;

	if (!root) {
		fprintf(stderr, "kvcache-bench: transfer: iperf3 printed no JSON\n");
		return -EIO;
	}
	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	end = cJSON_GetObjectItemCaseSensitive(root, "end");
	sum = cJSON_GetObjectItemCaseSensitive(end, "sum_received");
	bps = cJSON_GetObjectItemCaseSensitive(sum, "bits_per_second");
	if (cJSON_IsString(err))
		fprintf(stderr, "kvcache-bench: transfer: iperf3: %s\n", err->valuestring);
	else if (!cJSON_IsNumber(bps) || bps->valuedouble <= 0)
		fprintf(stderr, "kvcache-bench: transfer: iperf3's JSON has no "
				"end.sum_received.bits_per_second\n");
	else {
		*gbps = bps->valuedouble / 8e9;
		ret = 0;
	}
	cJSON_Delete(root);
	return ret;
}

/* One iperf3 run over loopback with `parallel` streams for `seconds`, with TCP congestion
 * control `congestion` (NULL: the system's): GB/s received. */
int tr_iperf3(int parallel, int seconds, const char *congestion, double *gbps)
{
	char port_s[16], par_s[16], secs_s[16], *json = NULL;
	pid_t srv = 0, cli = 0;
	int port, pfd[2] = {-1, -1}, st, ret;
	ssize_t n;

	port = bench_free_port();
	if (port < 0)
		return tr_fail("a free port for iperf3", port);
	snprintf(port_s, sizeof(port_s), "%d", port);
	snprintf(par_s, sizeof(par_s), "%d", parallel);
	snprintf(secs_s, sizeof(secs_s), "%d", seconds);
	srv = tr_spawn((char *const[]){"iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", port_s, NULL},
		       -1, true);
	if (srv < 0)
		return tr_fail("fork", (int)srv);
	for (int waited = 0; !tr_listening(port); waited += 10) {
		if (stop) {
			ret = -EINTR;
			goto out;
		}
		if (tr_reap(srv, 0, &st) == 0) {
			srv = 0;
			fprintf(stderr, "kvcache-bench: transfer: iperf3 -s -p %d exited\n", port);
			ret = -EIO;
			goto out;
		}
		if (waited >= TR_START_MS) {
			fprintf(stderr,
				"kvcache-bench: transfer: iperf3 -s -p %d does not listen\n", port);
			ret = -EIO;
			goto out;
		}
		usleep(10000);
	}
	json = malloc(TR_JSON_MAX);
	if (!json || pipe2(pfd, O_CLOEXEC) < 0) {
		ret = tr_fail("iperf3", -ENOMEM);
		goto out;
	}
	cli = tr_spawn((char *const[]){"iperf3", "-c", "127.0.0.1", "-p", port_s, "-t", secs_s,
				       "-P", par_s, "-J", congestion ? "-C" : NULL,
				       (char *)congestion, NULL},
		       pfd[1], false);
	close(pfd[1]);
	pfd[1] = -1;
	if (cli < 0) {
		ret = tr_fail("fork", (int)cli);
		cli = 0;
		goto out;
	}
	n = tr_read_until(pfd[0], json, TR_JSON_MAX, false, (seconds + 30) * 1000);
	if (n < 0) {
		ret = n == -EINTR ? -EINTR : tr_fail("reading iperf3's output", (int)n);
		goto out;
	}
	if (tr_reap(cli, 10000, &st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		tr_iperf3_parse(json, gbps); /* says why, if iperf3 did */
		fprintf(stderr, "kvcache-bench: transfer: iperf3 -c -P %d failed\n", parallel);
		ret = -EIO;
		goto out;
	}
	cli = 0;
	ret = tr_iperf3_parse(json, gbps);
out:
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (cli > 0)
		tr_stop(cli);
	/* -s -1 exits after one test: reap it, stop it only if it lingers. */
	if (srv > 0 && (ret || tr_reap(srv, 2000, &st) < 0))
		tr_stop(srv);
	free(json);
	return ret;
}

/* ---- the engine ---- */

static int tr_engine_open(struct tr_run *r, unsigned conns)
{
	struct xfer_config cfg = {
	    .secret = r->secret,
	    .secret_len = strlen(r->secret),
	    .transports = XFER_TCP,
	    .conns_per_peer = conns,
	    .timeout_ms = TR_TIMEOUT_MS,
	    .tcp_congestion = r->congestion,
	};
	sigset_t block, old;
	int ret;

	/* The engine's threads inherit a mask that keeps SIGINT/SIGTERM for this thread, the
	 * one that checks `stop`. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	ret = xfer_create(&r->e, &cfg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0) {
		r->e = NULL;
		return tr_fail("xfer_create", ret);
	}
	ret = xfer_register(r->e, r->buf, r->seg_size, &r->local_seg);
	if (ret < 0)
		return tr_fail("xfer_register", ret);
	r->registered = true;
	ret = xfer_open_peer(r->e, r->addr, &r->peer);
	if (ret < 0) {
		r->peer = NULL;
		fprintf(stderr, "kvcache-bench: transfer: xfer_open_peer %s: %s\n", r->addr,
			strerror(-ret));
		return ret;
	}
	return 0;
}

static void tr_engine_close(struct tr_run *r)
{
	if (r->peer)
		xfer_close_peer(r->peer);
	if (r->registered)
		xfer_unregister(r->e, r->local_seg);
	if (r->e)
		xfer_destroy(r->e);
	r->peer = NULL;
	r->registered = false;
	r->e = NULL;
}

/* One batch: n requests of size bytes, request i at local and remote offset
 * (i mod the ranges that fit in the segment) x size. 0 or -EIO (reported). */
static int tr_batch(struct tr_run *r, enum tr_op op, uint64_t size, size_t n)
{
	uint64_t slots = r->seg_size / size;
	struct xfer_batch *b;
	size_t done;
	int ret;

	for (size_t i = 0; i < n; i++) {
		uint64_t off = (i % slots) * size;

		r->reqs[i] = (struct xfer_req){
		    .op = op == TR_READ ? XFER_READ : XFER_WRITE,
		    .local = r->buf + off,
		    .len = size,
		    .peer = r->peer,
		    .remote_seg = r->seg,
		    .remote_off = off,
		};
		atomic_init(&r->reqs[i].status, XFER_PENDING);
	}
	ret = xfer_submit(r->e, r->reqs, n, &b);
	if (ret < 0)
		return tr_fail("xfer_submit", ret);
	done = xfer_wait(b, TR_WAIT_MS);
	if (done < n) {
		xfer_cancel(b);
		xfer_batch_free(b);
		fprintf(stderr,
			"kvcache-bench: transfer: %s: %zu of %zu requests of %" PRIu64
			" bytes not completed after %d ms\n",
			tr_op_names[op], n - done, n, size, TR_WAIT_MS);
		return -EIO;
	}
	ret = 0;
	for (size_t i = 0; i < n && !ret; i++) {
		int st = atomic_load_explicit(&r->reqs[i].status, memory_order_acquire);

		if (st != XFER_DONE) {
			fprintf(stderr,
				"kvcache-bench: transfer: %s of %" PRIu64
				" bytes at offset %" PRIu64 ": %s%s%s\n",
				tr_op_names[op], size, r->reqs[i].remote_off,
				st == XFER_TIMEDOUT    ? "timed out"
				: st == XFER_CANCELLED ? "cancelled"
						       : "failed",
				st == XFER_FAILED ? ": " : "",
				st == XFER_FAILED ? strerror(r->reqs[i].error) : "");
			ret = -EIO;
		}
	}
	xfer_batch_free(b);
	return ret;
}

/* Batches of n for `seconds` after one untimed warm-up batch: GB/s into *best. */
static int tr_throughput(struct tr_run *r, enum tr_op op, uint64_t size, size_t n, int seconds,
			 double *best)
{
	uint64_t t0, elapsed, bytes = 0, limit = (uint64_t)seconds * 1000000000ull;
	int ret = tr_batch(r, op, size, n);

	t0 = bench_now_ns();
	do {
		if (!ret)
			ret = tr_batch(r, op, size, n);
		bytes += size * n;
		elapsed = bench_now_ns() - t0;
	} while (!ret && !stop && elapsed < limit);
	if (stop)
		return -EINTR;
	if (ret)
		return ret;
	bench_keep_best(best, (double)bytes / ((double)elapsed / 1e9) / 1e9);
	return 0;
}

/* Single 64 KiB requests for `seconds`: their latencies appended to the samples. */
static int tr_latency(struct tr_run *r, struct tr_results *z, enum tr_op op, int seconds)
{
	uint64_t t0 = bench_now_ns(), limit = (uint64_t)seconds * 1000000000ull;
	int ret = tr_batch(r, op, TR_LAT_SIZE, 1); /* warm-up */

	while (!ret && !stop && bench_now_ns() - t0 < limit) {
		uint64_t t = bench_now_ns();

		ret = tr_batch(r, op, TR_LAT_SIZE, 1);
		if (!ret && z->nlat[op] < TR_LAT_MAX)
			z->lat[op][z->nlat[op]++] = bench_now_ns() - t;
	}
	return stop ? -EINTR : ret;
}

/* Content checks, outside the clock: the first range against `seed`'s pattern, read back
 * first when `readback` (after a WRITE phase). */
static int tr_check(struct tr_run *r, enum tr_op op, uint64_t size, uint64_t seed)
{
	uint64_t at;
	int ret;

	if (op == TR_WRITE) {
		memset(r->buf, 0, size);
		ret = tr_batch(r, TR_READ, size, 1);
		if (ret)
			return ret;
	}
	at = pattern_mismatch(r->buf, size, seed, 0);
	if (at == size)
		return 0;
	fprintf(stderr,
		"kvcache-bench: transfer: %s of %" PRIu64
		" bytes: content differs at offset %" PRIu64 "%s\n",
		tr_op_names[op], size, at, op == TR_WRITE ? " (read back after the writes)" : "");
	return -EIO;
}

static uint64_t tr_write_seed(uint64_t size)
{
	return TR_SEED ^ 0x5752495445ull ^ size;
}

/* One repetition: READs of every size and batch, then WRITEs, then latencies. */
static int tr_rep(struct tr_run *r, struct tr_results *z, int rep)
{
	char sz[32];
	int ret = 0;

	for (int op = 0; op < TR_NOPS; op++) {
		for (int s = 0; s < z->nsizes && !ret; s++) {
			uint64_t size = z->sizes[s];

			if (op == TR_WRITE)
				pattern_fill(r->buf, r->seg_size, tr_write_seed(size), 0);
			for (int b = 0; b < z->nbatches && !ret; b++) {
				ret = tr_throughput(r, op, size, z->batches[b], z->seconds,
						    &z->gbps[s][b][op]);
				if (!ret && b == 0 && (op == TR_WRITE || rep == 0))
					ret =
					    tr_check(r, op, size,
						     op == TR_READ ? TR_SEED : tr_write_seed(size));
			}
			bench_fmt_size(size, sz, sizeof(sz));
			if (!ret)
				fprintf(stderr, " %s %s", tr_op_names[op], sz);
		}
	}
	for (int op = 0; op < TR_NOPS && !ret; op++)
		ret = tr_latency(r, z, op, z->seconds);
	return ret;
}

/* ---- results ---- */

static double tr_baseline(const struct tr_results *z)
{
	return z->iperf_pn > z->iperf_p1 ? z->iperf_pn : z->iperf_p1;
}

/* The best figure over the batch sizes for one size and op. */
static double tr_best(const struct tr_results *z, int s, int op)
{
	double best = 0;

	for (int b = 0; b < z->nbatches; b++)
		bench_keep_best(&best, z->gbps[s][b][op]);
	return best;
}

/* Index of the target size among the sizes, -1 when it was not measured. */
static int tr_target_index(const struct tr_results *z)
{
	for (int s = 0; s < z->nsizes; s++)
		if (z->sizes[s] == TR_TARGET_SIZE)
			return s;
	return -1;
}

static bool tr_met(const struct tr_results *z)
{
	int s = tr_target_index(z);
	double base = tr_baseline(z);

	return s < 0 || (bench_ratio(tr_best(z, s, TR_READ), base) >= TR_TARGET &&
			 bench_ratio(tr_best(z, s, TR_WRITE), base) >= TR_TARGET);
}

static void tr_print_json(const struct tr_results *z)
{
	double base = tr_baseline(z);
	int t = tr_target_index(z);

	printf("{\"bench\": \"transfer\", \"reps\": %d, \"seconds\": %d, \"stat\": \"best\", "
	       "\"transport\": \"tcp\", \"conns\": %u, \"tcp_congestion\": \"%s\",\n"
	       " \"iperf3\": {\"P1_GBps\": %.3f, \"parallel\": %u, \"PN_GBps\": ",
	       z->reps, z->seconds, z->conns, z->congestion ? z->congestion : z->system_cc,
	       z->iperf_p1, z->conns);
	if (z->conns != 1)
		printf("%.3f", z->iperf_pn);
	else
		printf("null");
	printf(", \"baseline_GBps\": %.3f},\n \"results\": [", base);
	for (int s = 0, first = 1; s < z->nsizes; s++)
		for (int b = 0; b < z->nbatches; b++, first = 0)
			printf("%s\n  {\"size\": %" PRIu64 ", \"batch\": %" PRIu64
			       ", \"read_GBps\": %.3f, \"write_GBps\": %.3f}",
			       first ? "" : ",", z->sizes[s], z->batches[b], z->gbps[s][b][TR_READ],
			       z->gbps[s][b][TR_WRITE]);
	printf("],\n \"latency_us\": {\"size\": %" PRIu64 ", \"read_samples\": %zu, "
	       "\"read_p50\": %.1f, \"read_p99\": %.1f, \"write_samples\": %zu, "
	       "\"write_p50\": %.1f, \"write_p99\": %.1f},\n \"ratios\": [",
	       (uint64_t)TR_LAT_SIZE, z->nlat[TR_READ],
	       bench_pct(z->lat[TR_READ], z->nlat[TR_READ], 50),
	       bench_pct(z->lat[TR_READ], z->nlat[TR_READ], 99), z->nlat[TR_WRITE],
	       bench_pct(z->lat[TR_WRITE], z->nlat[TR_WRITE], 50),
	       bench_pct(z->lat[TR_WRITE], z->nlat[TR_WRITE], 99));
	for (int s = 0; s < z->nsizes; s++) {
		printf("%s\n  {\"size\": %" PRIu64, s ? "," : "", z->sizes[s]);
		for (int b = 0; b < z->nbatches; b++)
			printf(", \"read_iperf3_b%" PRIu64 "\": %.3f, \"write_iperf3_b%" PRIu64
			       "\": %.3f",
			       z->batches[b], bench_ratio(z->gbps[s][b][TR_READ], base),
			       z->batches[b], bench_ratio(z->gbps[s][b][TR_WRITE], base));
		printf(", \"read_iperf3\": %.3f, \"write_iperf3\": %.3f}",
		       bench_ratio(tr_best(z, s, TR_READ), base),
		       bench_ratio(tr_best(z, s, TR_WRITE), base));
	}
	printf("],\n \"targets\": {\"size\": %" PRIu64 ", \"read_iperf3\": %.2f, "
	       "\"write_iperf3\": %.2f}, \"target_met\": %s}\n",
	       (uint64_t)TR_TARGET_SIZE, TR_TARGET, TR_TARGET,
	       t < 0	   ? "null"
	       : tr_met(z) ? "true"
			   : "false");
}

static void tr_print(const struct tr_results *z)
{
	double base = tr_baseline(z);
	int t = tr_target_index(z);
	char sz[32];

	printf("loopback TCP, %u connections per peer; best of %d runs of %d s; "
	       "GB/s = 10^9 bytes/s\n",
	       z->conns, z->reps, z->seconds);
	if (z->congestion)
		printf(
		    "TCP congestion control: %s for both engines and iperf3 (the system's: %s)\n",
		    z->congestion, z->system_cc);
	else
		printf("TCP congestion control: the system's (%s)\n", z->system_cc);
	if (z->conns != 1)
		printf("iperf3 -P %u: %.2f GB/s   ", z->conns, z->iperf_pn);
	printf("iperf3 -P 1: %.2f GB/s   baseline (the best): %.2f GB/s\n\n", z->iperf_p1, base);
	printf("%-6s %6s %11s %11s %13s %13s\n", "size", "batch", "READ GB/s", "WRITE GB/s",
	       "READ/iperf3", "WRITE/iperf3");
	for (int s = 0; s < z->nsizes; s++) {
		bench_fmt_size(z->sizes[s], sz, sizeof(sz));
		for (int b = 0; b < z->nbatches; b++)
			printf("%-6s %6" PRIu64 " %11.2f %11.2f %13.2f %13.2f\n", sz, z->batches[b],
			       z->gbps[s][b][TR_READ], z->gbps[s][b][TR_WRITE],
			       bench_ratio(z->gbps[s][b][TR_READ], base),
			       bench_ratio(z->gbps[s][b][TR_WRITE], base));
	}
	bench_fmt_size(TR_LAT_SIZE, sz, sizeof(sz));
	printf("\nlatency of one %s request (us): READ p50 %.1f p99 %.1f (%zu samples), "
	       "WRITE p50 %.1f p99 %.1f (%zu samples)\n",
	       sz, bench_pct(z->lat[TR_READ], z->nlat[TR_READ], 50),
	       bench_pct(z->lat[TR_READ], z->nlat[TR_READ], 99), z->nlat[TR_READ],
	       bench_pct(z->lat[TR_WRITE], z->nlat[TR_WRITE], 50),
	       bench_pct(z->lat[TR_WRITE], z->nlat[TR_WRITE], 99), z->nlat[TR_WRITE]);
	bench_fmt_size(TR_TARGET_SIZE, sz, sizeof(sz));
	printf("\nratios to iperf3, the best batch (1.00 = as fast; target: %s READ and WRITE "
	       ">= %.2f)\n",
	       sz, TR_TARGET);
	printf("%-6s %13s %13s\n", "size", "READ/iperf3", "WRITE/iperf3");
	for (int s = 0; s < z->nsizes; s++) {
		double rr = bench_ratio(tr_best(z, s, TR_READ), base),
		       wr = bench_ratio(tr_best(z, s, TR_WRITE), base);
		bool tgt = s == t;

		bench_fmt_size(z->sizes[s], sz, sizeof(sz));
		printf("%-6s %12.2f%c %12.2f%c\n", sz, rr, tgt && rr < TR_TARGET ? '*' : ' ', wr,
		       tgt && wr < TR_TARGET ? '*' : ' ');
	}
	if (t < 0)
		printf("(the target size was not measured)\n");
	else if (!tr_met(z))
		printf("* below its target\n");
	else
		printf("target met\n");
}

/* --plot: READ and WRITE GB/s per size, a bar per batch size and iperf3's; the ratios of the
 * best batch to iperf3 against the target line; the latencies of single requests. */
static int tr_plot(const char *path, const struct tr_results *z)
{
	const char *names[TR_MAX_BATCHES + 2] = {NULL};
	char bnames[TR_MAX_BATCHES][32], sz[32], line[64], base[32];
	double base_gbps = tr_baseline(z);
	struct bench_plot *p;
	int t = tr_target_index(z), ret;

	for (int b = 0; b < z->nbatches; b++) {
		snprintf(bnames[b], sizeof(bnames[b]), "batch %" PRIu64, z->batches[b]);
		names[b] = bnames[b];
	}
	names[z->nbatches] = "iperf3 (baseline)";
	if (z->conns != 1)
		snprintf(base, sizeof(base), "the best of -P 1 and -P %u", z->conns);
	else
		snprintf(base, sizeof(base), "-P 1");
	p = bench_plot_begin(
	    "transfer",
	    "transfer engine over loopback TCP, %u connections per peer, vs iperf3 "
	    "(%s); best of %d runs of %d s; target %s",
	    z->conns, base, z->reps, z->seconds,
	    t < 0	? "not measured"
	    : tr_met(z) ? "met"
			: "MISSED");
	for (int op = 0; op < TR_NOPS; op++) {
		char title[64];

		snprintf(title, sizeof(title), "%s: batches of requests submitted at once",
			 tr_op_names[op]);
		bench_plot_panel(p, title, "request size", "GB/s (10^9 bytes/s)", names);
		for (int s = 0; s < z->nsizes; s++) {
			double v[TR_MAX_BATCHES + 1];

			for (int b = 0; b < z->nbatches; b++)
				v[b] = z->gbps[s][b][op];
			v[z->nbatches] = base_gbps;
			bench_plot_row(p, bench_fmt_size(z->sizes[s], sz, sizeof(sz)), v);
		}
	}
	bench_plot_panel(p, "ratios to iperf3, the best batch", "request size",
			 "transfer engine / iperf3",
			 (const char *const[]){"READ / iperf3", "WRITE / iperf3", NULL});
	for (int s = 0; s < z->nsizes; s++)
		bench_plot_row(p, bench_fmt_size(z->sizes[s], sz, sizeof(sz)),
			       (const double[]){bench_ratio(tr_best(z, s, TR_READ), base_gbps),
						bench_ratio(tr_best(z, s, TR_WRITE), base_gbps)});
	snprintf(line, sizeof(line), "target: %s READ and WRITE >= %.2f",
		 bench_fmt_size(TR_TARGET_SIZE, sz, sizeof(sz)), TR_TARGET);
	bench_plot_line(p, -1, TR_TARGET, line);
	snprintf(line, sizeof(line), "latency of one %s request",
		 bench_fmt_size(TR_LAT_SIZE, sz, sizeof(sz)));
	bench_plot_panel(p, line, "percentile", "microseconds",
			 (const char *const[]){"READ", "WRITE", NULL});
	for (int i = 0; i < 2; i++) {
		const unsigned pct = i ? 99 : 50;

		snprintf(sz, sizeof(sz), "p%u", pct);
		bench_plot_row(
		    p, sz,
		    (const double[]){bench_pct(z->lat[TR_READ], z->nlat[TR_READ], pct),
				     bench_pct(z->lat[TR_WRITE], z->nlat[TR_WRITE], pct)});
	}
	ret = bench_plot_write(p, path);
	bench_plot_free(p);
	return ret;
}

static void tr_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: kvcache-bench transfer [--sizes LIST] [--batches LIST] [--seconds S]\n"
	    "                              [--reps R] [--conns N] [--tcp-congestion NAME]\n"
	    "                              [--json] [--plot FILE.png]\n"
	    "READ and WRITE throughput of the transfer engine over loopback TCP, against a\n"
	    "kvcache-xfer serve process (found next to this binary), at each request size and\n"
	    "batch size (B requests submitted at once and waited together), plus the p50/p99\n"
	    "latency of single 64 KiB requests; the baseline is iperf3 over loopback in the same\n"
	    "run, with -P equal to the engine's connections per peer and with -P 1 (the best of\n"
	    "the two counts). Target: 2M READ and WRITE (the best batch) >= %.1f x iperf3.\n"
	    "  --sizes LIST    request sizes (default %s)\n"
	    "  --batches LIST  batch sizes, 1 to %d (default %s)\n"
	    "  --seconds S     seconds per measurement and per iperf3 run (default %d)\n"
	    "  --reps R        repetitions, best kept (default %d)\n"
	    "  --conns N       TCP connections per peer (default: the engine's)\n"
	    "  --tcp-congestion NAME\n"
	    "                  TCP congestion control of both engines and of iperf3 (-C)\n"
	    "                  (default: the system's)\n"
	    "  --json          print the results as JSON\n"
	    "  --plot FILE.png also draw them with gnuplot (Debian package gnuplot-nox):\n"
	    "                  READ and WRITE GB/s of every batch size per request size next\n"
	    "                  to iperf3, the ratios to iperf3 against the target line (drawn\n"
	    "                  also when the target is missed), and the latencies; checked\n"
	    "                  before the run\n"
	    "Needs iperf3 (Debian package iperf3). Exit status: 0 target met, 3 target\n"
	    "missed, 1 error (the plot could not be drawn included: the figures are still\n"
	    "printed), 2 usage.\n",
	    TR_TARGET, TR_DEFAULT_SIZES, TR_MAX_BATCH, TR_DEFAULT_BATCHES, TR_DEFAULT_SECONDS,
	    TR_DEFAULT_REPS);
}

static int tr_parse_batches(const char *arg, uint64_t *out, int *n)
{
	char buf[128], *save = NULL, *tok, *end;

	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned long v = strtoul(tok, &end, 10);

		if (*n == TR_MAX_BATCHES || *end || !v || v > TR_MAX_BATCH)
			return -EINVAL;
		out[(*n)++] = v;
	}
	return *n ? 0 : -EINVAL;
}

static int cmd_transfer(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"sizes", required_argument, NULL, 's'},
	    {"batches", required_argument, NULL, 'b'},
	    {"seconds", required_argument, NULL, 't'},
	    {"reps", required_argument, NULL, 'r'},
	    {"conns", required_argument, NULL, 'c'},
	    {"tcp-congestion", required_argument, NULL, 'C'},
	    {"json", no_argument, NULL, 'j'},
	    {"plot", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct tr_results z = {.reps = TR_DEFAULT_REPS, .seconds = TR_DEFAULT_SECONDS};
	struct tr_run r = {0};
	uint64_t maxsize = 0, maxbatch = 0, unused = 0;
	struct xfer_peer_info info;
	int c, st, conns = 0, ret = 0;
	bool json = false, printed = false;
	const char *plot = NULL;

	parse_sizes(TR_DEFAULT_SIZES, z.sizes, &z.nsizes);
	tr_parse_batches(TR_DEFAULT_BATCHES, z.batches, &z.nbatches);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_sizes(optarg, z.sizes, &z.nsizes) < 0) {
				fprintf(stderr, "kvcache-bench: --sizes: bad list '%s'\n", optarg);
				return 2;
			}
			break;
		case 'b':
			if (tr_parse_batches(optarg, z.batches, &z.nbatches) < 0) {
				fprintf(stderr,
					"kvcache-bench: --batches: bad list '%s' (up to %d numbers "
					"from 1 to %d)\n",
					optarg, TR_MAX_BATCHES, TR_MAX_BATCH);
				return 2;
			}
			break;
		case 't':
			if (bench_arg_int("--seconds", optarg, 1, 600, &z.seconds) < 0)
				return 2;
			break;
		case 'r':
			if (bench_arg_int("--reps", optarg, 1, 100, &z.reps) < 0)
				return 2;
			break;
		case 'c':
			if (bench_arg_int("--conns", optarg, 1, 64, &conns) < 0)
				return 2;
			break;
		case 'C':
			z.congestion = r.congestion = optarg;
			break;
		default:
			st = arg_common(c, &unused, &json, &plot, tr_usage);
			if (st >= 0)
				return st;
		}
	}
	if (optind != argc) {
		tr_usage(stderr);
		return 2;
	}
	for (int s = 0; s < z.nsizes; s++) {
		if (z.sizes[s] > WIRE_MAX_DATA * 16ull) {
			fprintf(stderr, "kvcache-bench: --sizes: at most %uM per request\n",
				WIRE_MAX_DATA * 16 / (unsigned)MIB);
			return 2;
		}
		if (z.sizes[s] % 8) {
			fprintf(stderr, "kvcache-bench: --sizes: multiples of 8 bytes\n");
			return 2;
		}
		if (z.sizes[s] > maxsize)
			maxsize = z.sizes[s];
	}
	for (int b = 0; b < z.nbatches; b++)
		if (z.batches[b] > maxbatch)
			maxbatch = z.batches[b];
	if (!bench_in_path("iperf3")) {
		fprintf(stderr, "kvcache-bench: transfer: iperf3 not found in PATH: it is the "
				"baseline (Debian package iperf3)\n");
		return 1;
	}
	if (bench_congestion("transfer", z.congestion, z.system_cc, sizeof(z.system_cc)) < 0)
		return 1;
	if (plot && bench_plot_check(plot) < 0)
		return 1;
	if (bench_bin_dir(r.bindir, sizeof(r.bindir)) < 0)
		return 1;
	/* Every batch's ranges side by side while they fit in TR_SPAN_MAX (rounded to the
	 * largest size, so that every size's ranges tile it). */
	r.seg_size = maxsize * maxbatch;
	if (r.seg_size > TR_SPAN_MAX)
		r.seg_size = TR_SPAN_MAX / maxsize * maxsize;
	if (r.seg_size < maxsize)
		r.seg_size = maxsize;
	if (r.seg_size < TR_LAT_SIZE)
		r.seg_size = TR_LAT_SIZE;
	r.buf = mmap(NULL, r.seg_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r.reqs = calloc(TR_MAX_BATCH, sizeof(*r.reqs));
	z.lat[TR_READ] = calloc(TR_LAT_MAX, sizeof(uint64_t));
	z.lat[TR_WRITE] = calloc(TR_LAT_MAX, sizeof(uint64_t));
	if (r.buf == MAP_FAILED || !r.reqs || !z.lat[TR_READ] || !z.lat[TR_WRITE]) {
		if (r.buf == MAP_FAILED)
			r.buf = NULL;
		ret = tr_fail("memory for the buffers", -ENOMEM);
		goto out;
	}
	memset(r.buf, 0, r.seg_size); /* fault it in before any timing */
	install_signals();
	signal(SIGPIPE, SIG_IGN);
	ret = tr_secret(&r);
	if (!ret)
		ret = tr_server_start(&r);
	if (!ret)
		ret = tr_engine_open(&r, (unsigned)conns);
	if (ret)
		goto out;
	xfer_peer_info(r.peer, &info);
	z.conns = info.paths ? info.paths : conns ? (unsigned)conns : 4;
	fprintf(stderr,
		"kvcache-bench: transfer: kvcache-xfer serve (pid %d) on %s, segment of %" PRIu64
		" MiB; %u paths\n",
		(int)r.server, r.addr, (uint64_t)(r.seg_size / MIB), info.paths);

	for (int rep = 0; rep < z.reps && !ret; rep++) {
		double g;

		fprintf(stderr, "kvcache-bench: transfer: run %d: iperf3", rep + 1);
		ret = tr_iperf3(1, z.seconds, z.congestion, &g);
		if (!ret)
			bench_keep_best(&z.iperf_p1, g);
		if (!ret && z.conns != 1) {
			ret = tr_iperf3((int)z.conns, z.seconds, z.congestion, &g);
			if (!ret)
				bench_keep_best(&z.iperf_pn, g);
		}
		if (!ret)
			ret = tr_rep(&r, &z, rep);
		fprintf(stderr, "%s\n", ret ? "" : " latency");
	}
	if (ret)
		goto out;
	qsort(z.lat[TR_READ], z.nlat[TR_READ], sizeof(uint64_t), bench_cmp_u64);
	qsort(z.lat[TR_WRITE], z.nlat[TR_WRITE], sizeof(uint64_t), bench_cmp_u64);
	if (json)
		tr_print_json(&z);
	else
		tr_print(&z);
	ret = tr_met(&z) ? 0 : 3;
	printed = true;
out:
	if (ret == -EINTR && stop)
		fprintf(stderr, "\nkvcache-bench: interrupted, cleaning up\n");
	tr_engine_close(&r);
	if (r.server > 0) {
		/* A server that died says why the requests failed. */
		if (tr_reap(r.server, 0, &st) < 0)
			st = tr_stop(r.server);
		if (st != -1 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
			if (WIFSIGNALED(st))
				fprintf(stderr,
					"kvcache-bench: transfer: kvcache-xfer serve (pid %d) was "
					"killed by signal %d\n",
					(int)r.server, WTERMSIG(st));
			else
				fprintf(
				    stderr,
				    "kvcache-bench: transfer: kvcache-xfer serve (pid %d) exited "
				    "%d\n",
				    (int)r.server, WEXITSTATUS(st));
			if (ret >= 0)
				ret = -EIO;
		}
	}
	tr_stop_all();
	if (r.secret_path[0])
		unlink(r.secret_path);
	explicit_bzero(r.secret, sizeof(r.secret));
	if (printed && plot && tr_plot(plot, &z) < 0)
		ret = 1;
	if (r.buf)
		munmap(r.buf, r.seg_size);
	free(r.reqs);
	free(z.lat[TR_READ]);
	free(z.lat[TR_WRITE]);
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
		     "  zerocopy libkvcache load/lookup/put vs read()/stat()/write() and memcpy\n"
		     "  transfer transfer engine READ/WRITE over loopback TCP vs iperf3\n"
		     "  cluster  remote reads/stat between two nodes vs Redis GET/EXISTS, iperf3\n"
		     "  ssd      SSD tier write/read throughput vs fio; recovery after a restart\n"
		     "Run 'kvcache-bench COMMAND --help' for its options. fs, memory, zerocopy,\n"
		     "cluster and ssd need root (mounts). Every command takes --plot FILE.png:\n"
		     "its figures, kvcachefs against its baselines and the ratios against the\n"
		     "targets, drawn as bar charts by gnuplot (Debian package gnuplot-nox).\n"
		     "Environment: KVC_BIN_DIR, the directory of kvcachefs, kvcache-memfs and\n"
		     "kvcache-xfer (default: this binary's directory).\n");
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
	if (!strcmp(argv[1], "zerocopy"))
		return cmd_zerocopy(argc - 1, argv + 1);
	if (!strcmp(argv[1], "transfer"))
		return cmd_transfer(argc - 1, argv + 1);
	if (!strcmp(argv[1], "cluster"))
		return cmd_cluster(argc - 1, argv + 1);
	if (!strcmp(argv[1], "ssd"))
		return cmd_ssd(argc - 1, argv + 1);
	fprintf(stderr, "kvcache-bench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
