/*
 * bench_ssd: kvcache-bench ssd, the SSD tier of one kvcachefs daemon, through its mount,
 * against fio doing the same I/O straight on the same filesystem; and the recovery of a
 * restarted daemon.
 *
 * One run makes everything under one temporary directory in --dir (default /var/tmp): the SSD
 * file of the daemon (--ssd DIR/kvcache-bench-ssd.XXXXXX/ssd.img:SIZE, formatted by the
 * daemon), fio's file next to it, the mountpoint and the daemon's log; the DRAM pool object is
 * /dev/shm/kvcache-bench-ssd-pool.XXXXXX (the same suffix). The daemon runs in the foreground as
 * our child with a small DRAM pool (--pool-size, default 64M), so that nearly every block
 * written lives on SSD only. For each size (--sizes, default 2M and 256K), --total bytes of
 * blocks (default 1G):
 *   - fio, one job: write then read of a file of --total bytes, O_DIRECT, io_uring, block size
 *     the size, at iodepth 1 (the baseline: one thread reads or writes through the mount) and
 *     at iodepth 32 (for information);
 *   - write: every block written through the mount (open, write, close; a write refused with
 *     ENOSPC while the daemon makes room is retried, and counted), then until the daemon's
 *     status shows the demotions done: every block sealed and still there (so each is in DRAM
 *     or on SSD), DRAM under its high watermark (no eviction due) and the demotion counter
 *     still. Throughput = bytes / (writes + that wait);
 *   - read: every block once, oldest first, one open/read/close each: after writing --total
 *     >> the pool, the oldest blocks are on SSD only, and reading them promotes them into DRAM
 *     at the expense of the next-oldest in DRAM order, so every block is still on SSD only
 *     when its turn comes. The block's user.kvcachefs.tier xattr is read (outside the clock)
 *     before each read; only reads of blocks whose tier was "ssd" count in the throughput,
 *     and how many they were is reported;
 *   - the blocks are deleted (untimed), so that the next size starts with an empty pool;
 *   - the same writes and reads (without the settle or the tier xattr) on kvcache-memfs, a
 *     trivial in-memory libfuse filesystem mounted next to it, reported beside fio: what one
 *     open/write|read/close per block through FUSE costs on this machine without a device.
 * Content: every block carries a pattern (tools/pattern.h) with its index at both ends; the
 * ends are checked inside the timed loop, a few blocks per size are read again and checked
 * whole outside the clock.
 *
 * Recovery (--recovery-blocks N, default 100000, 0 to skip): N blocks of 4 KiB are written
 * through the mount by two threads; once all are sealed the daemon is unmounted cleanly and
 * started again with the same pool object and SSD file; reported: its recovery_ns and
 * recovered count (recovery_ns and recovered of `kvcachectl status --json`) and the wall
 * time from its start until the mount answers; then a sample of the blocks is read back and
 * checked whole. Then the same after kill -9 of that daemon (and fusermount3 -u of the dead
 * mount). Lost blocks or wrong bytes make the exit status 1 (the figures are still printed).
 *
 * The daemon's counters are read from `kvcachectl status --json` (found next to kvcachefs), by
 * key: its JSON keys are the interface, not the ioctl structs behind them. A poll costs a
 * process (about a millisecond), which the wait after the writes includes.
 *
 * sb_teardown, on every exit path (a SIGINT only sets `stop`; every loop checks it), stops fio
 * and the daemon, unmounts, removes the pool object and the temporary directory.
 *
 * KVC_BENCH_SSD_DRAM_ONLY=1 is for testing the bench itself against a daemon without the SSD
 * tier: no --ssd, a pool large enough for every block, every read counted; its figures are
 * not the benchmark's.
 */
#include "tools/bench_ssd.h"
#include "tools/bench_util.h"
#include "tools/pattern.h"
#include "fs/options.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MIB ((uint64_t)1 << 20)

#define SB_FUSE_MAGIC	  0x65735546
#define SB_MAX_SIZES	  8
#define SB_DEFAULT_DIR	  "/var/tmp"
#define SB_DEFAULT_SIZES  "2M,256K"
#define SB_DEFAULT_TOTAL  (1024 * MIB)
#define SB_DEFAULT_POOL	  (64 * MIB)
#define SB_DEFAULT_REC	  100000
#define SB_DEFAULT_REPS	  3
#define SB_MAX_BLOCK	  (64 * MIB) /* the daemon's default --max-block-size */
#define SB_REC_SIZE	  4096	     /* bytes of a recovery block */
#define SB_REC_THREADS	  2
#define SB_REC_VERIFY	  1000	      /* recovery blocks read back and checked whole per restart */
#define SB_VERIFY_SAMPLES 8	      /* blocks per size read again and checked whole */
#define SB_QD_INFO	  32	      /* fio's second iodepth, for information */
#define SB_TARGET	  0.8	      /* kvcachefs / fio at iodepth 1, write and read, every size */
#define SB_UNIT		  4096u	      /* the SSD tier's unit: each block takes one more, its meta */
#define SB_START_MS	  120000      /* for a daemon's mount to answer (its recovery included) */
#define SB_STOP_MS	  60000	      /* for a daemon to exit once unmounted */
#define SB_SETTLE_MS	  120000      /* for the demotions to be done after the writes */
#define SB_DROPPED_MS	  5000	      /* blocks missing this long after the last seal: dropped */
#define SB_ENOSPC_MS	  30000	      /* a block refused for lack of room is retried this long */
#define SB_SEED		  0x737364ull /* "ssd" */
#define SB_TIER_XATTR	  "user.kvcachefs.tier"
#define SB_POOL_PREFIX	  "kvcache-bench-ssd-pool."
#define SB_DRAM_ONLY_ENV  "KVC_BENCH_SSD_DRAM_ONLY"
#define SB_FIO_OUT_MAX	  (16 * MIB)

enum { SB_WRITE, SB_READ, SB_NDIRS };
enum { SB_QD1, SB_QDN, SB_NQDS };
enum { SB_CLEAN, SB_KILL9, SB_NRESTARTS };

/* One block size: its figures. GB/s are 10^9 bytes/s; 0 where not measured. */
struct sb_size {
	uint64_t size, count;
	double fio[SB_NDIRS][SB_NQDS];
	double kvc[SB_NDIRS];	     /* writes + settle; SSD-tier reads only */
	double memfs[SB_NDIRS];	     /* the same loops on kvcache-memfs (no device at all) */
	double write_only, read_all; /* the writes without the settle; every read */
	uint64_t write_ns, settle_ns, enospc;
	uint64_t demotions, ssd_evictions; /* during the writes and the settle */
	uint64_t dram_blocks, ssd_only;	   /* after the settle */
	uint64_t ssd_reads, dram_reads, other_reads, promotions;
	uint64_t verified, bad; /* whole checks of SB_VERIFY_SAMPLES blocks */
};

/* One restart of the daemon on the recovery blocks. */
struct sb_restart {
	bool done;
	uint64_t stop_ns;  /* unmount + exit (clean), or SIGKILL + unmount of the dead mount */
	uint64_t mount_ns; /* from the start of the daemon until its mount answers */
	uint64_t recovery_ns, recovered, dropped, blocks;
	uint64_t verified, bad;
};

struct sb_run {
	/* options */
	char dir[PATH_MAX];
	struct sb_size sz[SB_MAX_SIZES];
	int nsizes;
	uint64_t total, pool_size, nrec;
	int reps; /* rounds of fio and kvcachefs per size; the best of each is kept */
	bool json, dram_only;
	const char *plot; /* --plot FILE.png, NULL without */
	/* what was made: sb_teardown undoes whatever is set */
	char bin[PATH_MAX + 16], ctl[PATH_MAX + 16]; /* kvcachefs, kvcachectl */
	char memfs_bin[PATH_MAX + 16];
	char memfs_mnt[PATH_MAX + 16]; /* "" before it exists */
	char tmp[PATH_MAX];	       /* the run's directory in dir, "" when there is none */
	char mnt[PATH_MAX + 16];       /* "" before it exists */
	char pool[PATH_MAX + 64];
	char ssd[PATH_MAX + 16], ssd_arg[PATH_MAX + 48];
	char log[PATH_MAX + 16];
	char fio_file[PATH_MAX + 16], fio_out[PATH_MAX + 16], fio_log[PATH_MAX + 16];
	uint64_t ssd_size;
	pid_t daemon;		    /* 0 when not running (or reaped) */
	unsigned char *wbuf, *rbuf; /* one block of the largest size each, page-aligned */
	char fstype[16], fio_version[32];
	char phase[32]; /* of the progress line: "2M:" */
	/* the figures */
	uint64_t rec_write_ns, rec_enospc;
	struct sb_restart rec[SB_NRESTARTS];
	bool bad_blocks; /* a size's whole check or a recovery found wrong or missing blocks */
};

/* A progress line is open on stderr: an error starts a line of its own. */
static bool sb_midline;

static void sb_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sb_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sb_progress(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	sb_midline = fmt[0] && fmt[strlen(fmt) - 1] != '\n';
}

/* One step of a phase on the progress line: " step", after "kvcache-bench: ssd: phase"
 * when an error ended the line. */
static void sb_step(const char *phase, const char *step)
{
	if (!sb_midline)
		sb_progress("kvcache-bench: ssd: %s", phase);
	sb_progress(" %s", step);
}

static void sb_err(const char *fmt, ...)
{
	va_list ap;

	if (sb_midline)
		fputc('\n', stderr);
	sb_midline = false;
	fputs("kvcache-bench: ssd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- blocks: names and content ------------------------------------------------------------ */

static uint64_t sb_seed(uint64_t size)
{
	return pattern_word(SB_SEED, size);
}

/* Block i's tag, at both ends of its bytes (the rest is its size's pattern). */
static uint64_t sb_tag(uint64_t size, uint64_t i)
{
	return pattern_word(SB_SEED ^ size, i + 1);
}

static void sb_stamp(unsigned char *buf, uint64_t size, uint64_t i)
{
	uint64_t t = sb_tag(size, i);

	memcpy(buf, &t, 8);
	memcpy(buf + size - 8, &t, 8);
}

/* Cheap enough for the timed loop. */
static bool sb_ends_ok(const unsigned char *buf, uint64_t size, uint64_t i)
{
	uint64_t t = sb_tag(size, i);

	return !memcmp(buf, &t, 8) && !memcmp(buf + size - 8, &t, 8);
}

static bool sb_whole_ok(const unsigned char *buf, uint64_t size, uint64_t i)
{
	return sb_ends_ok(buf, size, i) &&
	       pattern_mismatch(buf + 8, size - 16, sb_seed(size), 8) == size - 16;
}

static void sb_block_path(char *out, size_t cap, const char *mnt, const char *dir, uint64_t i)
{
	if (snprintf(out, cap, "%s/%s/b%07" PRIu64, mnt, dir, i) >= (int)cap)
		out[0] = '\0'; /* never happens: cap has room for the longest mountpoint */
}

/* Write one block: open (O_EXCL), write, close. A write refused with ENOSPC (the daemon is
 * making room: the block is discarded at its close) is tried again, the name taken again once
 * the discard is done, for up to SB_ENOSPC_MS; each refusal counts in *enospc. 0 or -errno. */
static int sb_write_block(const char *path, const unsigned char *buf, uint64_t size,
			  uint64_t *enospc)
{
	uint64_t since = 0;
	bool retrying = false;

	for (;;) {
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), ret;

		if (fd >= 0) {
			ret = bench_write_full(fd, buf, size);
			if (close(fd) < 0 && !ret)
				ret = -errno;
		} else {
			ret = -errno;
		}
		if (!ret)
			return 0;
		if (ret != -ENOSPC && !(ret == -EEXIST && retrying))
			return ret;
		if (!retrying)
			since = bench_now_ns();
		retrying = true;
		*enospc += ret == -ENOSPC;
		if (stop)
			return -EINTR;
		if (bench_now_ns() - since > SB_ENOSPC_MS * 1000000ull)
			return -ENOSPC;
		usleep(100);
	}
}

/* Open, read up to size bytes into buf, close: the bytes read, or -errno. */
static int64_t sb_read_block(const char *path, unsigned char *buf, uint64_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = bench_read_full(fd, buf, size);
	close(fd);
	return n;
}

/* ---- the daemon --------------------------------------------------------------------------- */

/* What the bench reads of `kvcachectl status --json`; 0 where the daemon has no such key. */
struct sb_stat {
	uint64_t capacity, used, blocks, writing, evictions, evict_high_pct;
	uint64_t ssd_devices, ssd_blocks, dram_blocks, demotions, promotions, ssd_evictions;
	uint64_t recovered, recovery_dropped, recovery_ns;
};

/* The keys, by name; those that every daemon prints are required. */
static const struct sb_key {
	const char *key;
	size_t off;
	bool required;
} sb_stat_keys[] = {
    {"capacity", offsetof(struct sb_stat, capacity), true},
    {"used", offsetof(struct sb_stat, used), true},
    {"blocks", offsetof(struct sb_stat, blocks), true},
    {"writing", offsetof(struct sb_stat, writing), true},
    {"evictions", offsetof(struct sb_stat, evictions), true},
    {"evict_high_pct", offsetof(struct sb_stat, evict_high_pct), true},
    {"ssd_devices", offsetof(struct sb_stat, ssd_devices), false},
    {"ssd_blocks", offsetof(struct sb_stat, ssd_blocks), false},
    {"dram_blocks", offsetof(struct sb_stat, dram_blocks), false},
    {"demotions", offsetof(struct sb_stat, demotions), false},
    {"promotions", offsetof(struct sb_stat, promotions), false},
    {"ssd_evictions", offsetof(struct sb_stat, ssd_evictions), false},
    {"recovered", offsetof(struct sb_stat, recovered), false},
    {"recovery_dropped", offsetof(struct sb_stat, recovery_dropped), false},
    {"recovery_ns", offsetof(struct sb_stat, recovery_ns), false},
};

static int sb_stat_parse(const char *text, struct sb_stat *st)
{
	cJSON *root = cJSON_Parse(text);
	int ret = 0;

	if (!root) {
		sb_err("kvcachectl status --json printed no JSON");
		return -EPROTO;
	}
	memset(st, 0, sizeof(*st));
	for (size_t k = 0; k < sizeof(sb_stat_keys) / sizeof(sb_stat_keys[0]); k++) {
		cJSON *v = cJSON_GetObjectItemCaseSensitive(root, sb_stat_keys[k].key);

		if (cJSON_IsNumber(v) && v->valuedouble >= 0)
			*(uint64_t *)((char *)st + sb_stat_keys[k].off) = (uint64_t)v->valuedouble;
		else if (sb_stat_keys[k].required && !ret) {
			sb_err("kvcachectl status --json has no number \"%s\"",
			       sb_stat_keys[k].key);
			ret = -EPROTO;
		}
	}
	cJSON_Delete(root);
	return ret;
}

/* `kvcachectl status --json` of the mount (the tool's error line, if any, on our stderr).
 * 0 or -errno. */
static int sb_status(const struct sb_run *r, struct sb_stat *st)
{
	char buf[8192];
	size_t got = 0;
	int fds[2], ret = 0, status = -1;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		ret = -errno;
		sb_err("pipe: %s", strerror(errno));
		return ret;
	}
	pid = bench_spawn((char *const[]){(char *)r->ctl, "status", "--json", (char *)r->mnt, NULL},
			  fds[1], STDERR_FILENO);
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		sb_err("cannot start %s: %s", r->ctl, strerror((int)-pid));
		return (int)pid;
	}
	for (;;) {
		ssize_t n = read(fds[0], buf + got, sizeof(buf) - 1 - got);

		if (n < 0 && errno == EINTR && !stop)
			continue;
		if (n <= 0 || (got += (size_t)n) == sizeof(buf) - 1)
			break;
	}
	close(fds[0]);
	buf[got] = '\0';
	if (stop) {
		bench_kill(pid, 5000, &status);
		return -EINTR;
	}
	if (bench_reap(pid, SB_STOP_MS, &status) < 0) {
		bench_kill(pid, 5000, &status);
		sb_err("kvcachectl status %s does not answer", r->mnt);
		return -ETIMEDOUT;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char why[64];

		sb_err("kvcachectl status --json %s failed (%s)", r->mnt,
		       bench_status_str(status, why, sizeof(why)));
		return -EIO;
	}
	return sb_stat_parse(buf, st);
}

static bool sb_mount_answers(const char *mnt)
{
	struct statfs sf;

	return statfs(mnt, &sf) == 0 && (long)sf.f_type == SB_FUSE_MAGIC;
}

/* Start the daemon in the foreground (our child), its output appended to the run's log, and
 * wait until its mount answers; *wall_ns from just before the fork until then. */
static int sb_daemon_start(struct sb_run *r, uint64_t *wall_ns)
{
	char size[32], *argv[12];
	int n = 0, fd;
	uint64_t t0;
	pid_t pid;

	bench_fmt_size(r->pool_size, size, sizeof(size));
	argv[n++] = r->bin;
	argv[n++] = "-f";
	argv[n++] = "--pool-size";
	argv[n++] = size;
	argv[n++] = "--pool-path";
	argv[n++] = r->pool;
	if (!r->dram_only) {
		argv[n++] = "--ssd";
		argv[n++] = r->ssd_arg;
	}
	argv[n++] = r->mnt;
	argv[n] = NULL;
	fd = open(r->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		int ret = -errno;

		sb_err("%s: %s", r->log, strerror(errno));
		return ret;
	}
	t0 = bench_now_ns();
	pid = bench_spawn(argv, fd, fd);
	close(fd);
	if (pid < 0) {
		sb_err("cannot start %s: %s", r->bin, strerror((int)-pid));
		return (int)pid;
	}
	r->daemon = pid;
	while (!sb_mount_answers(r->mnt)) {
		char why[64];
		int st = -1;

		if (stop)
			return -EINTR;
		if (bench_reap(pid, 0, &st) == 0) {
			r->daemon = 0;
			sb_err("kvcachefs exited before its mount was up (%s)",
			       bench_status_str(st, why, sizeof(why)));
			bench_log_tail("ssd", "kvcachefs's log", r->log);
			return -EIO;
		}
		if (bench_now_ns() - t0 > SB_START_MS * 1000000ull) {
			sb_err("kvcachefs's mount does not answer after %d s", SB_START_MS / 1000);
			bench_log_tail("ssd", "kvcachefs's log", r->log);
			return -ETIMEDOUT;
		}
		usleep(200);
	}
	*wall_ns = bench_now_ns() - t0;
	return 0;
}

/* fusermount3 -u, or -uz if that fails. */
static void sb_unmount(const char *mnt)
{
	if (bench_run((char *const[]){"fusermount3", "-u", (char *)mnt, NULL}, true) != 0 &&
	    bench_mounted(mnt)) {
		sb_err("fusermount3 -u %s failed: unmounting it lazily", mnt);
		bench_run((char *const[]){"fusermount3", "-uz", (char *)mnt, NULL}, true);
	}
}

/* Stop the daemon: unmount and wait for its exit (clean), or SIGKILL it and then unmount the
 * dead mount (kill9). *ns: how long that took. A daemon that does not exit after its unmount
 * is killed and that is an error; one that exits non-zero is said and is not. */
static int sb_daemon_stop(struct sb_run *r, bool kill9, uint64_t *ns)
{
	uint64_t t0 = bench_now_ns();
	char why[64];
	int st = -1, ret = 0;

	if (kill9 && r->daemon > 0) {
		kill(r->daemon, SIGKILL);
		bench_reap(r->daemon, SB_STOP_MS, &st);
		r->daemon = 0;
	}
	if (bench_mounted(r->mnt))
		sb_unmount(r->mnt);
	if (r->daemon > 0) {
		if (bench_reap(r->daemon, SB_STOP_MS, &st) < 0) {
			sb_err("kvcachefs (pid %d) did not exit %d s after its unmount: killing it",
			       (int)r->daemon, SB_STOP_MS / 1000);
			bench_kill(r->daemon, 5000, &st);
			ret = -ETIMEDOUT;
		} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			sb_err("kvcachefs ended with %s after a clean unmount",
			       bench_status_str(st, why, sizeof(why)));
			bench_log_tail("ssd", "kvcachefs's log", r->log);
		}
		r->daemon = 0;
	}
	*ns = bench_now_ns() - t0;
	if (bench_mounted(r->mnt)) {
		sb_err("%s is still mounted", r->mnt);
		return -EBUSY;
	}
	return ret;
}

static int sb_rm_one(const char *path, const struct stat *sb, int type, struct FTW *f)
{
	bool dir = type == FTW_DP || type == FTW_D || type == FTW_DNR;

	(void)sb;
	(void)f;
	if ((dir ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		sb_err("cannot remove %s: %s", path, strerror(errno));
	return 0;
}

/* Undo whatever was made, whatever state the run is in. */
static void sb_teardown(struct sb_run *r)
{
	bool was_mounted;
	char why[64];
	int st = -1;

	if (r->daemon > 0 && bench_reap(r->daemon, 0, &st) == 0) {
		r->daemon = 0;
		sb_err("kvcachefs had exited (%s)", bench_status_str(st, why, sizeof(why)));
		bench_log_tail("ssd", "kvcachefs's log", r->log);
	}
	was_mounted = r->mnt[0] && bench_mounted(r->mnt);
	if (was_mounted)
		sb_unmount(r->mnt);
	if (r->daemon > 0) {
		/* One whose mount never came up is asked with SIGTERM; the others exit once
		 * unmounted. */
		if (!was_mounted)
			bench_kill(r->daemon, 5000, &st);
		else if (bench_reap(r->daemon, SB_STOP_MS, &st) < 0) {
			sb_err("kvcachefs (pid %d) did not exit after the unmount: killing it",
			       (int)r->daemon);
			bench_kill(r->daemon, 5000, &st);
		}
		r->daemon = 0;
	}
	/* A daemon stopped while it was starting may have mounted meanwhile, or died leaving
	 * its mount behind. */
	if (r->mnt[0] && bench_mounted(r->mnt))
		sb_unmount(r->mnt);
	if (r->pool[0] && unlink(r->pool) < 0 && errno != ENOENT)
		sb_err("cannot remove %s: %s", r->pool, strerror(errno));
	r->pool[0] = '\0';
	if (r->memfs_mnt[0] && bench_mounted(r->memfs_mnt))
		sb_unmount(r->memfs_mnt); /* kvcache-memfs exits once unmounted */
	if (!r->tmp[0])
		return;
	if (r->mnt[0] && bench_mounted(r->mnt))
		sb_err("%s left in place: %s is still mounted", r->tmp, r->mnt);
	else if (r->memfs_mnt[0] && bench_mounted(r->memfs_mnt))
		sb_err("%s left in place: %s is still mounted", r->tmp, r->memfs_mnt);
	else
		nftw(r->tmp, sb_rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	r->tmp[0] = '\0';
	r->mnt[0] = '\0';
	r->memfs_mnt[0] = '\0';
}

/* ---- fio ---------------------------------------------------------------------------------- */

/* bw_bytes of the direction of jobs[0] in fio's JSON output, in GB/s; the version too. */
static int sb_fio_parse(struct sb_run *r, const char *text, bool write, double *gbps)
{
	const char *start = strchr(text, '{');
	cJSON *root = start ? cJSON_Parse(start) : NULL, *jobs, *job, *dir, *bw, *err, *ver;
	int ret = 0;

	if (!root) {
		sb_err("fio printed no JSON (see %s)", r->fio_out);
		return -EPROTO;
	}
	ver = cJSON_GetObjectItemCaseSensitive(root, "fio version");
	if (cJSON_IsString(ver) && !r->fio_version[0])
		snprintf(r->fio_version, sizeof(r->fio_version), "%s", ver->valuestring);
	jobs = cJSON_GetObjectItemCaseSensitive(root, "jobs");
	job = cJSON_GetArrayItem(jobs, 0);
	err = cJSON_GetObjectItemCaseSensitive(job, "error");
	dir = cJSON_GetObjectItemCaseSensitive(job, write ? "write" : "read");
	bw = cJSON_GetObjectItemCaseSensitive(dir, "bw_bytes");
	if (cJSON_IsNumber(err) && err->valuedouble != 0) {
		sb_err("fio's job failed: error %d (%s)", (int)err->valuedouble,
		       strerror((int)err->valuedouble));
		ret = -EIO;
	} else if (!cJSON_IsNumber(bw) || bw->valuedouble <= 0) {
		sb_err("fio's JSON has no %s bw_bytes", write ? "write" : "read");
		ret = -EPROTO;
	} else {
		*gbps = bw->valuedouble / 1e9;
	}
	cJSON_Delete(root);
	return ret;
}

/* One fio job on the run's fio file: `bytes` written or read in blocks of `size`, O_DIRECT,
 * io_uring, one job at iodepth qd. Reading needs the file written before. */
static int sb_fio(struct sb_run *r, bool write, uint64_t size, uint64_t bytes, int qd, double *gbps)
{
	char file[PATH_MAX + 32], bs[48], total[48], depth[32], *text = NULL;
	int out, err, st = -1, ret = 0;
	struct stat sbuf;
	pid_t pid;

	snprintf(file, sizeof(file), "--filename=%s", r->fio_file);
	snprintf(bs, sizeof(bs), "--bs=%" PRIu64, size);
	snprintf(total, sizeof(total), "--size=%" PRIu64, bytes);
	snprintf(depth, sizeof(depth), "--iodepth=%d", qd);
	out = open(r->fio_out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	err = open(r->fio_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0 || err < 0) {
		ret = -errno;
		sb_err("%s: %s", out < 0 ? r->fio_out : r->fio_log, strerror(errno));
		goto out;
	}
	pid = bench_spawn((char *const[]){"fio", "--name=kvcache-bench", file,
					  write ? "--rw=write" : "--rw=read", bs, total,
					  "--direct=1", "--ioengine=io_uring", depth, "--numjobs=1",
					  "--output-format=json", NULL},
			  out, err);
	if (pid < 0) {
		ret = (int)pid;
		sb_err("cannot start fio: %s", strerror(-ret));
		goto out;
	}
	while (bench_reap(pid, 50, &st) < 0)
		if (stop) {
			bench_kill(pid, 5000, &st);
			ret = -EINTR;
			goto out;
		}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char why[64];

		sb_err("fio %s bs=%" PRIu64 " iodepth=%d failed (%s)", write ? "write" : "read",
		       size, qd, bench_status_str(st, why, sizeof(why)));
		bench_log_tail("ssd", "fio's output", r->fio_log);
		ret = -EIO;
		goto out;
	}
	if (fstat(out, &sbuf) < 0 || sbuf.st_size <= 0 || sbuf.st_size > (off_t)SB_FIO_OUT_MAX ||
	    !(text = calloc(1, (size_t)sbuf.st_size + 1)) ||
	    pread(out, text, (size_t)sbuf.st_size, 0) != sbuf.st_size) {
		ret = -EIO;
		sb_err("cannot read fio's output %s", r->fio_out);
		goto out;
	}
	ret = sb_fio_parse(r, text, write, gbps);
	if (ret)
		bench_log_tail("ssd", "fio's output", r->fio_log);
out:
	free(text);
	if (out >= 0)
		close(out);
	if (err >= 0)
		close(err);
	return ret;
}

/* fio at both iodepths, write before read (the read needs the file). */
static int sb_fio_size(struct sb_run *r, struct sb_size *z)
{
	static const int qds[SB_NQDS] = {1, SB_QD_INFO};
	int ret = 0;

	for (int q = 0; q < SB_NQDS && !ret; q++)
		for (int d = 0; d < SB_NDIRS && !ret; d++) {
			char step[32];

			snprintf(step, sizeof(step), "fio-%s-qd%d",
				 d == SB_WRITE ? "write" : "read", qds[q]);
			sb_step(r->phase, step);
			ret = sb_fio(r, d == SB_WRITE, z->size, z->size * z->count, qds[q],
				     &z->fio[d][q]);
		}
	return ret;
}

/* ---- kvcachefs: one size ------------------------------------------------------------------ */

/* Wait until the daemon is done with the blocks just written: want sealed blocks (none being
 * written, so none was dropped: each is in DRAM or on SSD), DRAM at most at its high watermark
 * (no eviction due) and the demotion counter unchanged since the previous poll. */
static int sb_settle(struct sb_run *r, uint64_t want, struct sb_stat *s)
{
	uint64_t t0 = bench_now_ns(), last_demotions = UINT64_MAX, short_since = 0;

	for (;;) {
		uint64_t now, high;
		int ret = sb_status(r, s);

		if (ret)
			return ret;
		now = bench_now_ns();
		high = s->capacity / 100 * s->evict_high_pct;
		if (!s->writing && s->blocks >= want &&
		    (r->dram_only || (s->used <= high && s->demotions == last_demotions)))
			return 0;
		last_demotions = s->demotions;
		/* Everything sealed and blocks missing: they were dropped, not demoted. */
		if (!s->writing && s->blocks < want) {
			if (!short_since)
				short_since = now;
			if (now - short_since > SB_DROPPED_MS * 1000000ull) {
				sb_err("%" PRIu64 " of the %" PRIu64
				       " blocks written are left: the others were dropped, not "
				       "demoted (SSD devices %" PRIu64 ", demotions %" PRIu64
				       ", SSD evictions %" PRIu64 ", evictions %" PRIu64 ")",
				       s->blocks, want, s->ssd_devices, s->demotions,
				       s->ssd_evictions, s->evictions);
				return -EIO;
			}
		} else {
			short_since = 0;
		}
		if (stop)
			return -EINTR;
		if (now - t0 > SB_SETTLE_MS * 1000000ull) {
			sb_err("the daemon is not done %d s after the writes: blocks %" PRIu64
			       " of %" PRIu64 ", writing %" PRIu64 ", DRAM used %" PRIu64
			       " of %" PRIu64 " (high watermark %" PRIu64 "%%), demotions %" PRIu64,
			       SB_SETTLE_MS / 1000, s->blocks, want, s->writing, s->used,
			       s->capacity, s->evict_high_pct, s->demotions);
			return -ETIMEDOUT;
		}
		usleep(200);
	}
}

static int sb_write_phase(struct sb_run *r, struct sb_size *z, const char *dir)
{
	struct sb_stat s0, s1;
	char path[PATH_MAX + 64];
	uint64_t t0, t1, t2;
	int ret;

	pattern_fill(r->wbuf, z->size, sb_seed(z->size), 0);
	ret = sb_status(r, &s0);
	if (ret)
		return ret;
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < z->count; i++) {
		sb_block_path(path, sizeof(path), r->mnt, dir, i);
		sb_stamp(r->wbuf, z->size, i);
		ret = sb_write_block(path, r->wbuf, z->size, &z->enospc);
		if (ret) {
			if (!(ret == -EINTR && stop))
				sb_err("write %s: %s", path, strerror(-ret));
			return ret;
		}
	}
	t1 = bench_now_ns();
	ret = sb_settle(r, s0.blocks + z->count, &s1);
	if (ret)
		return ret;
	t2 = bench_now_ns();
	z->write_ns = t1 - t0;
	z->settle_ns = t2 - t1;
	z->kvc[SB_WRITE] = (double)(z->size * z->count) / (double)(t2 - t0);
	z->write_only = (double)(z->size * z->count) / (double)(t1 - t0);
	z->demotions = s1.demotions - s0.demotions;
	z->ssd_evictions = s1.ssd_evictions - s0.ssd_evictions;
	z->dram_blocks = s1.dram_blocks;
	z->ssd_only = s1.blocks > s1.dram_blocks ? s1.blocks - s1.dram_blocks : 0;
	return 0;
}

/* Every block once, oldest first; only those whose tier was "ssd" just before count in
 * kvc[SB_READ] (every one in DRAM-only mode). */
static int sb_read_phase(struct sb_run *r, struct sb_size *z, const char *dir)
{
	uint64_t ssd_ns = 0, all_ns = 0;
	struct sb_stat s0, s1;
	char path[PATH_MAX + 64];
	int ret = sb_status(r, &s0);

	if (ret)
		return ret;
	for (uint64_t i = 0; i < z->count; i++) {
		char tier[16] = "";
		ssize_t tl;
		int64_t n;
		uint64_t t0, t1;

		if (stop)
			return -EINTR;
		sb_block_path(path, sizeof(path), r->mnt, dir, i);
		tl = getxattr(path, SB_TIER_XATTR, tier, sizeof(tier) - 1);
		tier[tl > 0 ? tl : 0] = '\0';
		t0 = bench_now_ns();
		n = sb_read_block(path, r->rbuf, z->size);
		t1 = bench_now_ns();
		if (n < 0) {
			if (!(n == -EINTR && stop))
				sb_err("read %s: %s", path, strerror((int)-n));
			return (int)n;
		}
		if ((uint64_t)n != z->size || !sb_ends_ok(r->rbuf, z->size, i)) {
			sb_err("read %s: %s", path,
			       (uint64_t)n != z->size ? "short" : "wrong bytes at its ends");
			return -EIO;
		}
		all_ns += t1 - t0;
		if (!strcmp(tier, "ssd") || r->dram_only) {
			z->ssd_reads++;
			ssd_ns += t1 - t0;
		} else if (!strcmp(tier, "dram")) {
			z->dram_reads++;
		} else {
			z->other_reads++;
		}
	}
	ret = sb_status(r, &s1);
	if (ret)
		return ret;
	z->promotions = s1.promotions - s0.promotions;
	if (ssd_ns)
		z->kvc[SB_READ] = (double)(z->size * z->ssd_reads) / (double)ssd_ns;
	if (all_ns)
		z->read_all = (double)(z->size * z->count) / (double)all_ns;
	/* a few again, whole, outside the clock */
	for (uint64_t k = 0; k < SB_VERIFY_SAMPLES && k < z->count; k++) {
		uint64_t i =
		    k * z->count / (SB_VERIFY_SAMPLES < z->count ? SB_VERIFY_SAMPLES : z->count);
		int64_t n;

		sb_block_path(path, sizeof(path), r->mnt, dir, i);
		n = sb_read_block(path, r->rbuf, z->size);
		if (n == (int64_t)z->size && sb_whole_ok(r->rbuf, z->size, i)) {
			z->verified++;
			continue;
		}
		z->bad++;
		sb_err("read %s again: %s", path,
		       n < 0 ? strerror((int)-n) : "wrong bytes (checked whole)");
	}
	return 0;
}

/* Make the directory of size's blocks under mnt; its name (the size) in dir. */
static int sb_size_dir(const char *mnt, uint64_t size, char *dir, size_t cap)
{
	char path[PATH_MAX + 64];
	int ret;

	bench_fmt_size(size, dir, cap);
	snprintf(path, sizeof(path), "%s/%s", mnt, dir);
	if (mkdir(path, 0755) < 0) {
		ret = -errno;
		sb_err("mkdir %s: %s", path, strerror(errno));
		return ret;
	}
	return 0;
}

/* Delete the blocks 0..count-1 of directory dir under mnt, and the directory. */
static int sb_delete(const char *mnt, const char *dir, uint64_t count)
{
	char path[PATH_MAX + 64];

	for (uint64_t i = 0; i < count; i++) {
		sb_block_path(path, sizeof(path), mnt, dir, i);
		if (unlink(path) < 0 && errno != ENOENT) {
			int ret = -errno;

			sb_err("unlink %s: %s", path, strerror(errno));
			return ret;
		}
	}
	snprintf(path, sizeof(path), "%s/%s", mnt, dir);
	if (rmdir(path) < 0) {
		int ret = -errno;

		sb_err("rmdir %s: %s", path, strerror(errno));
		return ret;
	}
	return 0;
}

static int sb_size_phase(struct sb_run *r, struct sb_size *z)
{
	char dir[32];
	int ret = sb_size_dir(r->mnt, z->size, dir, sizeof(dir));

	if (ret)
		return ret;
	sb_step(r->phase, "kvcachefs-write");
	ret = sb_write_phase(r, z, dir);
	if (!ret) {
		sb_step(r->phase, "kvcachefs-read");
		ret = sb_read_phase(r, z, dir);
	}
	if (!ret)
		ret = sb_delete(r->mnt, dir, z->count);
	r->bad_blocks |= z->bad > 0;
	return ret;
}

/* The same loops as sb_write_phase (without the settle) and sb_read_phase on kvcache-memfs,
 * which keeps blocks in malloc'ed memory and does nothing else: what FUSE costs this
 * machine for one open/write|read/close per block. */
static int sb_memfs_phase(struct sb_run *r, struct sb_size *z)
{
	char dir[32], path[PATH_MAX + 64];
	uint64_t t0, t1, t2, enospc = 0;
	int ret;

	sb_step(r->phase, "memfs");
	ret = sb_size_dir(r->memfs_mnt, z->size, dir, sizeof(dir));
	if (ret)
		return ret;
	pattern_fill(r->wbuf, z->size, sb_seed(z->size), 0);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < z->count && !ret; i++) {
		sb_block_path(path, sizeof(path), r->memfs_mnt, dir, i);
		sb_stamp(r->wbuf, z->size, i);
		ret = sb_write_block(path, r->wbuf, z->size, &enospc);
	}
	t1 = bench_now_ns();
	for (uint64_t i = 0; i < z->count && !ret; i++) {
		int64_t n;

		sb_block_path(path, sizeof(path), r->memfs_mnt, dir, i);
		n = sb_read_block(path, r->rbuf, z->size);
		if (n < 0)
			ret = (int)n;
		else if ((uint64_t)n != z->size || !sb_ends_ok(r->rbuf, z->size, i))
			ret = -EIO;
	}
	t2 = bench_now_ns();
	if (ret) {
		if (!(ret == -EINTR && stop))
			sb_err("kvcache-memfs: %s: %s", path, strerror(-ret));
		return ret;
	}
	z->memfs[SB_WRITE] = (double)(z->size * z->count) / (double)(t1 - t0);
	z->memfs[SB_READ] = (double)(z->size * z->count) / (double)(t2 - t1);
	return sb_delete(r->memfs_mnt, dir, z->count);
}

/* ---- recovery ----------------------------------------------------------------------------- */

struct sb_rec_job {
	struct sb_run *r;
	atomic_uint_fast64_t next;
	atomic_int err; /* the first failure, said by the thread that set it */
};

struct sb_rec_worker {
	struct sb_rec_job *job;
	unsigned char *buf;
	uint64_t enospc;
	pthread_t th;
};

static void *sb_rec_worker_main(void *arg)
{
	struct sb_rec_worker *w = arg;
	struct sb_rec_job *j = w->job;
	char path[PATH_MAX + 64];

	pattern_fill(w->buf, SB_REC_SIZE, sb_seed(SB_REC_SIZE), 0);
	while (!atomic_load(&j->err)) {
		uint64_t i = atomic_fetch_add(&j->next, 1);
		int ret, zero = 0;

		if (i >= j->r->nrec)
			break;
		if (stop) {
			atomic_compare_exchange_strong(&j->err, &zero, -EINTR);
			break;
		}
		sb_block_path(path, sizeof(path), j->r->mnt, "rec", i);
		sb_stamp(w->buf, SB_REC_SIZE, i);
		ret = sb_write_block(path, w->buf, SB_REC_SIZE, &w->enospc);
		if (ret && atomic_compare_exchange_strong(&j->err, &zero, ret) &&
		    !(ret == -EINTR && stop))
			sb_err("write %s: %s", path, strerror(-ret));
	}
	return NULL;
}

/* Write the recovery blocks with SB_REC_THREADS threads and wait until all are sealed. */
static int sb_rec_write(struct sb_run *r)
{
	struct sb_rec_job job = {.r = r};
	struct sb_rec_worker w[SB_REC_THREADS] = {0};
	struct sb_stat s;
	char path[PATH_MAX + 64];
	int started = 0, ret;
	uint64_t t0;

	snprintf(path, sizeof(path), "%s/rec", r->mnt);
	if (mkdir(path, 0755) < 0) {
		ret = -errno;
		sb_err("mkdir %s: %s", path, strerror(errno));
		return ret;
	}
	for (int t = 0; t < SB_REC_THREADS; t++)
		if (posix_memalign((void **)&w[t].buf, 4096, SB_REC_SIZE)) {
			sb_err("out of memory");
			ret = -ENOMEM;
			goto out;
		}
	t0 = bench_now_ns();
	for (; started < SB_REC_THREADS; started++) {
		w[started].job = &job;
		ret = pthread_create(&w[started].th, NULL, sb_rec_worker_main, &w[started]);
		if (ret) {
			sb_err("pthread_create: %s", strerror(ret));
			atomic_store(&job.err, -ret);
			break;
		}
	}
	for (int t = 0; t < started; t++) {
		pthread_join(w[t].th, NULL);
		r->rec_enospc += w[t].enospc;
	}
	ret = atomic_load(&job.err);
	if (!ret)
		ret = sb_settle(r, r->nrec, &s);
	r->rec_write_ns = bench_now_ns() - t0;
out:
	for (int t = 0; t < SB_REC_THREADS; t++)
		free(w[t].buf);
	return ret;
}

/* Read SB_REC_VERIFY recovery blocks (evenly spaced, from `first`) and check them whole. */
static int sb_rec_verify(struct sb_run *r, struct sb_restart *z, uint64_t first)
{
	uint64_t n = r->nrec < SB_REC_VERIFY ? r->nrec : SB_REC_VERIFY;
	char path[PATH_MAX + 64];

	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = (first + k * (r->nrec / n)) % r->nrec;
		int64_t got;

		if (stop)
			return -EINTR;
		sb_block_path(path, sizeof(path), r->mnt, "rec", i);
		got = sb_read_block(path, r->rbuf, SB_REC_SIZE);
		if (got == SB_REC_SIZE && sb_whole_ok(r->rbuf, SB_REC_SIZE, i)) {
			z->verified++;
			continue;
		}
		if (!z->bad++)
			sb_err("read back %s: %s", path,
			       got < 0 ? strerror((int)-got) : "wrong bytes (checked whole)");
	}
	if (z->bad > 1)
		sb_err("%" PRIu64 " of %" PRIu64 " recovered blocks read back wrong or missing",
		       z->bad, n);
	return 0;
}

/* Stop the daemon (cleanly or with SIGKILL), start it again on the same pool object and SSD
 * file, and take its recovery figures. */
static int sb_restart(struct sb_run *r, struct sb_restart *z, bool kill9, uint64_t first)
{
	struct sb_stat s;
	int ret = sb_daemon_stop(r, kill9, &z->stop_ns);

	if (!ret)
		ret = sb_daemon_start(r, &z->mount_ns);
	if (!ret)
		ret = sb_status(r, &s);
	if (ret)
		return ret;
	z->recovery_ns = s.recovery_ns;
	z->recovered = s.recovered;
	z->dropped = s.recovery_dropped;
	z->blocks = s.blocks;
	ret = sb_rec_verify(r, z, first);
	if (ret)
		return ret;
	z->done = true;
	if (z->recovered != r->nrec || z->blocks != r->nrec || z->bad) {
		sb_err("after %s: %" PRIu64 " blocks recovered, %" PRIu64 " there, %" PRIu64
		       " expected; %" PRIu64 " read back wrong or missing",
		       kill9 ? "kill -9" : "a clean unmount", z->recovered, z->blocks, r->nrec,
		       z->bad);
		r->bad_blocks = true;
	}
	return 0;
}

static int sb_recovery(struct sb_run *r)
{
	int ret;

	sb_step("recovery:", "write");
	ret = sb_rec_write(r);
	if (!ret) {
		sb_step("recovery:", "clean-restart");
		ret = sb_restart(r, &r->rec[SB_CLEAN], false, 0);
	}
	if (!ret) {
		sb_step("recovery:", "kill-9-restart");
		ret = sb_restart(r, &r->rec[SB_KILL9], true, r->nrec / SB_REC_VERIFY / 2);
	}
	if (sb_midline)
		sb_progress("\n");
	return ret;
}

/* ---- results ------------------------------------------------------------------------------ */

static bool sb_size_met(const struct sb_size *z)
{
	return bench_ratio(z->kvc[SB_WRITE], z->fio[SB_WRITE][SB_QD1]) >= SB_TARGET &&
	       bench_ratio(z->kvc[SB_READ], z->fio[SB_READ][SB_QD1]) >= SB_TARGET;
}

static bool sb_met(const struct sb_run *r)
{
	for (int s = 0; s < r->nsizes; s++)
		if (!sb_size_met(&r->sz[s]))
			return false;
	return true;
}

/* A figure, or `none` when it was not measured. */
static const char *sb_fig(double v, const char *fmt, const char *none, char *buf, size_t cap)
{
	if (v <= 0)
		return none;
	snprintf(buf, cap, fmt, v);
	return buf;
}

static const char *sb_ratio_fig(double v, char *buf, size_t cap)
{
	if (v <= 0)
		return "-";
	snprintf(buf, cap, "%.2f%s", v, v < SB_TARGET ? "*" : "");
	return buf;
}

/* 3 decimals are enough, and the JSON stays readable. */
static double sb_round3(double v)
{
	return (double)(int64_t)(v * 1000 + (v < 0 ? -0.5 : 0.5)) / 1000;
}

static void sb_json_num(cJSON *o, const char *key, double v)
{
	if (v > 0)
		cJSON_AddNumberToObject(o, key, sb_round3(v));
	else
		cJSON_AddNullToObject(o, key);
}

static void sb_json_u64(cJSON *o, const char *key, uint64_t v)
{
	cJSON_AddNumberToObject(o, key, (double)v);
}

static cJSON *sb_json_restart(const struct sb_restart *z)
{
	cJSON *o = cJSON_CreateObject();

	if (!z->done) {
		cJSON_AddNullToObject(o, "recovered");
		return o;
	}
	sb_json_u64(o, "recovered", z->recovered);
	sb_json_u64(o, "dropped", z->dropped);
	sb_json_u64(o, "blocks", z->blocks);
	sb_json_u64(o, "recovery_ns", z->recovery_ns);
	sb_json_u64(o, "start_to_mount_ns", z->mount_ns);
	sb_json_u64(o, "stop_ns", z->stop_ns);
	sb_json_u64(o, "verified", z->verified);
	sb_json_u64(o, "bad", z->bad);
	return o;
}

static void sb_print_json(const struct sb_run *r)
{
	cJSON *root = cJSON_CreateObject(), *arr, *o;
	char *text;

	cJSON_AddStringToObject(root, "bench", "ssd");
	cJSON_AddStringToObject(root, "dir", r->dir);
	cJSON_AddStringToObject(root, "fstype", r->fstype);
	cJSON_AddStringToObject(root, "fio_version", r->fio_version);
	cJSON_AddBoolToObject(root, "dram_only", r->dram_only);
	sb_json_u64(root, "pool_size", r->pool_size);
	sb_json_u64(root, "ssd_size", r->dram_only ? 0 : r->ssd_size);
	sb_json_u64(root, "total", r->total);
	cJSON_AddNumberToObject(root, "target", SB_TARGET);
	cJSON_AddNumberToObject(root, "fio_iodepth_info", SB_QD_INFO);
	arr = cJSON_AddArrayToObject(root, "results");
	for (int s = 0; s < r->nsizes; s++) {
		const struct sb_size *z = &r->sz[s];

		o = cJSON_CreateObject();
		sb_json_u64(o, "size", z->size);
		sb_json_u64(o, "blocks", z->count);
		sb_json_num(o, "write_GBps", z->kvc[SB_WRITE]);
		sb_json_num(o, "write_only_GBps", z->write_only);
		sb_json_u64(o, "write_ns", z->write_ns);
		sb_json_u64(o, "settle_ns", z->settle_ns);
		sb_json_u64(o, "enospc_retries", z->enospc);
		sb_json_u64(o, "demotions", z->demotions);
		sb_json_u64(o, "ssd_evictions", z->ssd_evictions);
		sb_json_u64(o, "dram_blocks", z->dram_blocks);
		sb_json_u64(o, "ssd_only_blocks", z->ssd_only);
		sb_json_num(o, "read_GBps", z->kvc[SB_READ]);
		sb_json_num(o, "read_all_GBps", z->read_all);
		sb_json_u64(o, "ssd_reads", z->ssd_reads);
		sb_json_u64(o, "dram_reads", z->dram_reads);
		sb_json_u64(o, "other_reads", z->other_reads);
		sb_json_u64(o, "promotions", z->promotions);
		sb_json_u64(o, "verified", z->verified);
		sb_json_u64(o, "bad", z->bad);
		sb_json_num(o, "fio_write_GBps", z->fio[SB_WRITE][SB_QD1]);
		sb_json_num(o, "fio_read_GBps", z->fio[SB_READ][SB_QD1]);
		sb_json_num(o, "memfs_write_GBps", z->memfs[SB_WRITE]);
		sb_json_num(o, "memfs_read_GBps", z->memfs[SB_READ]);
		sb_json_num(o, "fio_write_qd32_GBps", z->fio[SB_WRITE][SB_QDN]);
		sb_json_num(o, "fio_read_qd32_GBps", z->fio[SB_READ][SB_QDN]);
		sb_json_num(o, "write_ratio", bench_ratio(z->kvc[SB_WRITE], z->fio[SB_WRITE][0]));
		sb_json_num(o, "read_ratio", bench_ratio(z->kvc[SB_READ], z->fio[SB_READ][0]));
		cJSON_AddBoolToObject(o, "target_met", sb_size_met(z));
		cJSON_AddItemToArray(arr, o);
	}
	if (r->nrec) {
		o = cJSON_AddObjectToObject(root, "recovery");
		sb_json_u64(o, "blocks", r->nrec);
		sb_json_u64(o, "block_size", SB_REC_SIZE);
		sb_json_u64(o, "write_ns", r->rec_write_ns);
		sb_json_u64(o, "enospc_retries", r->rec_enospc);
		cJSON_AddItemToObject(o, "clean", sb_json_restart(&r->rec[SB_CLEAN]));
		cJSON_AddItemToObject(o, "kill9", sb_json_restart(&r->rec[SB_KILL9]));
	} else {
		cJSON_AddNullToObject(root, "recovery");
	}
	cJSON_AddBoolToObject(root, "blocks_ok", !r->bad_blocks);
	cJSON_AddBoolToObject(root, "target_met", sb_met(r));
	text = cJSON_PrintUnformatted(root);
	if (text)
		printf("%s\n", text);
	free(text);
	cJSON_Delete(root);
}

static void sb_print_restart(const char *what, const struct sb_run *r, const struct sb_restart *z)
{
	char v[32];

	if (!z->done) {
		printf("%-14s %10s\n", what, "-");
		return;
	}
	snprintf(v, sizeof(v), "%" PRIu64 "/%" PRIu64, z->verified, z->verified + z->bad);
	printf("%-14s %10.1f %12.1f %15.1f %10" PRIu64 "%s %8" PRIu64 " %10s\n", what,
	       (double)z->stop_ns / 1e6, (double)z->recovery_ns / 1e6, (double)z->mount_ns / 1e6,
	       z->recovered, z->recovered != r->nrec ? "*" : " ", z->dropped, v);
}

static void sb_print(const struct sb_run *r)
{
	char sz[24], pool[24], ssd[24], b[8][32];

	bench_fmt_size(r->pool_size, pool, sizeof(pool));
	if (r->dram_only)
		printf("kvcachefs with a %s DRAM pool and no SSD tier, fio on %s (%s)\n"
		       "DRAM-ONLY TEST MODE (%s): these are not the benchmark's figures\n",
		       pool, r->dir, r->fstype, SB_DRAM_ONLY_ENV);
	else
		printf("kvcachefs with a %s DRAM pool and a %s SSD file on %s (%s)\n", pool,
		       bench_fmt_size(r->ssd_size, ssd, sizeof(ssd)), r->dir, r->fstype);
	printf("%s: O_DIRECT, io_uring, one job, on a file of the same filesystem\n"
	       "write: open/write/close of every block + the wait until the demotions are done\n"
	       "read: open/read/close of every block, oldest first; only those whose tier was\n"
	       "  \"ssd\" just before count (\"SSD reads\"); GB/s = 10^9 bytes/s\n\n",
	       r->fio_version[0] ? r->fio_version : "fio");
	printf("%-5s %6s %9s %8s %6s %9s %8s %6s %11s %13s\n", "size", "blocks", "write", "fio",
	       "ratio", "read", "fio", "ratio", "SSD reads", "fio qd32 w/r");
	for (int s = 0; s < r->nsizes; s++) {
		const struct sb_size *z = &r->sz[s];
		char reads[48], qd[80];

		snprintf(reads, sizeof(reads), "%" PRIu64 "/%" PRIu64, z->ssd_reads, z->count);
		snprintf(qd, sizeof(qd), "%s/%s",
			 sb_fig(z->fio[SB_WRITE][SB_QDN], "%.2f", "-", b[6], sizeof(b[6])),
			 sb_fig(z->fio[SB_READ][SB_QDN], "%.2f", "-", b[7], sizeof(b[7])));
		printf("%-5s %6" PRIu64 " %9s %8s %6s %9s %8s %6s %11s %13s\n",
		       bench_fmt_size(z->size, sz, sizeof(sz)), z->count,
		       sb_fig(z->kvc[SB_WRITE], "%.2f", "-", b[0], sizeof(b[0])),
		       sb_fig(z->fio[SB_WRITE][SB_QD1], "%.2f", "-", b[1], sizeof(b[1])),
		       sb_ratio_fig(bench_ratio(z->kvc[SB_WRITE], z->fio[SB_WRITE][SB_QD1]), b[2],
				    sizeof(b[2])),
		       sb_fig(z->kvc[SB_READ], "%.2f", "-", b[3], sizeof(b[3])),
		       sb_fig(z->fio[SB_READ][SB_QD1], "%.2f", "-", b[4], sizeof(b[4])),
		       sb_ratio_fig(bench_ratio(z->kvc[SB_READ], z->fio[SB_READ][SB_QD1]), b[5],
				    sizeof(b[5])),
		       reads, qd);
	}
	printf("\nreference, no device at all: kvcache-memfs (a trivial in-memory libfuse\n"
	       "filesystem), the same open/write/close and open/read/close of every block\n");
	printf("%-5s %12s %6s %11s %6s\n", "size", "memfs write", "/fio", "memfs read", "/fio");
	for (int s = 0; s < r->nsizes; s++) {
		const struct sb_size *z = &r->sz[s];

		printf("%-5s %12s %6s %11s %6s\n", bench_fmt_size(z->size, sz, sizeof(sz)),
		       sb_fig(z->memfs[SB_WRITE], "%.2f", "-", b[0], sizeof(b[0])),
		       sb_fig(bench_ratio(z->memfs[SB_WRITE], z->fio[SB_WRITE][SB_QD1]), "%.2f",
			      "-", b[1], sizeof(b[1])),
		       sb_fig(z->memfs[SB_READ], "%.2f", "-", b[2], sizeof(b[2])),
		       sb_fig(bench_ratio(z->memfs[SB_READ], z->fio[SB_READ][SB_QD1]), "%.2f", "-",
			      b[3], sizeof(b[3])));
	}
	printf("\n%-5s %11s %9s %7s %10s %12s %9s %10s %10s\n", "size", "writes only", "settle",
	       "ENOSPC", "demotions", "DRAM/SSD-only", "all reads", "promotions", "checked");
	for (int s = 0; s < r->nsizes; s++) {
		const struct sb_size *z = &r->sz[s];
		char split[48], chk[40];

		snprintf(split, sizeof(split), "%" PRIu64 "/%" PRIu64, z->dram_blocks, z->ssd_only);
		snprintf(chk, sizeof(chk), "%" PRIu64 "/%" PRIu64 "%s", z->verified,
			 z->verified + z->bad, z->bad ? "*" : "");
		printf("%-5s %11s %7.1fms %7" PRIu64 " %10" PRIu64 " %13s %9s %10" PRIu64 " %10s\n",
		       bench_fmt_size(z->size, sz, sizeof(sz)),
		       sb_fig(z->write_only, "%.2f", "-", b[0], sizeof(b[0])),
		       (double)z->settle_ns / 1e6, z->enospc, z->demotions, split,
		       sb_fig(z->read_all, "%.2f", "-", b[1], sizeof(b[1])), z->promotions, chk);
	}
	if (r->nrec) {
		printf("\nrecovery of %" PRIu64
		       " blocks of %s (written by %d threads in %.2f s, %" PRIu64
		       " ENOSPC retries)\n",
		       r->nrec, bench_fmt_size(SB_REC_SIZE, sz, sizeof(sz)), SB_REC_THREADS,
		       (double)r->rec_write_ns / 1e9, r->rec_enospc);
		printf("%-14s %10s %12s %15s %11s %8s %10s\n", "restart after", "stop ms",
		       "recovery ms", "start-mount ms", "recovered", "dropped", "read back");
		sb_print_restart("clean unmount", r, &r->rec[SB_CLEAN]);
		sb_print_restart("kill -9", r, &r->rec[SB_KILL9]);
	}
	printf("\ntarget: kvcachefs >= %.2f x fio at iodepth 1, write and read, every size: %s\n",
	       SB_TARGET, sb_met(r) ? "met" : "missed (* below)");
	if (r->bad_blocks)
		printf("blocks lost or read back wrong (see above)\n");
}

/* --plot: write and read GB/s per size of kvcachefs next to fio, their ratios against the
 * target line, and the restarts' times when the recovery test ran. */
static int sb_plot(const struct sb_run *r)
{
	static const char *const titles[SB_NDIRS] = {
	    "write: open/write/close of every block + the wait for the demotions",
	    "read of every block from SSD: open/read/close, oldest first"};
	static const char *const kvc_names[SB_NDIRS][2] = {
	    {"kvcachefs", "kvcachefs, writes only"},
	    {"kvcachefs, SSD reads", "kvcachefs, all reads"}};
	char sz[24], line[64], qd[32];
	struct bench_plot *p;
	int ret;

	snprintf(qd, sizeof(qd), "fio iodepth %d", SB_QD_INFO);
	p = bench_plot_begin(
	    "ssd",
	    "%sSSD tier through the mount vs fio (O_DIRECT, io_uring, one job) on %s "
	    "(%s); best of %d; target %s%s",
	    r->dram_only ? "DRAM-ONLY TEST MODE, not the benchmark's figures: " : "", r->dir,
	    r->fstype, r->reps, sb_met(r) ? "met" : "MISSED",
	    r->bad_blocks ? "; blocks lost or read back wrong" : "");
	for (int d = 0; d < SB_NDIRS; d++) {
		bench_plot_panel(p, titles[d], "block size", "GB/s (10^9 bytes/s)",
				 (const char *const[]){kvc_names[d][0], kvc_names[d][1],
						       "fio iodepth 1 (baseline)", qd, NULL});
		for (int s = 0; s < r->nsizes; s++) {
			const struct sb_size *z = &r->sz[s];

			bench_plot_row(p, bench_fmt_size(z->size, sz, sizeof(sz)),
				       (const double[]){z->kvc[d],
							d == SB_WRITE ? z->write_only : z->read_all,
							z->fio[d][SB_QD1], z->fio[d][SB_QDN]});
		}
	}
	bench_plot_panel(p, "kvcachefs / fio at iodepth 1", "block size", "ratio (1.00 = as fast)",
			 (const char *const[]){"write / fio", "read / fio", NULL});
	for (int s = 0; s < r->nsizes; s++) {
		const struct sb_size *z = &r->sz[s];

		bench_plot_row(
		    p, bench_fmt_size(z->size, sz, sizeof(sz)),
		    (const double[]){bench_ratio(z->kvc[SB_WRITE], z->fio[SB_WRITE][SB_QD1]),
				     bench_ratio(z->kvc[SB_READ], z->fio[SB_READ][SB_QD1])});
	}
	snprintf(line, sizeof(line), "target >= %.2f, write and read, every size", SB_TARGET);
	bench_plot_line(p, -1, SB_TARGET, line);
	if (r->nrec) {
		char title[96];

		snprintf(title, sizeof(title), "restart on %" PRIu64 " blocks of %s", r->nrec,
			 bench_fmt_size(SB_REC_SIZE, sz, sizeof(sz)));
		bench_plot_panel(p, title, "restart after", "milliseconds",
				 (const char *const[]){"stop", "recovery (the daemon's)",
						       "start to mount answering", NULL});
		for (int k = 0; k < SB_NRESTARTS; k++) {
			const struct sb_restart *z = &r->rec[k];

			bench_plot_row(p, k == SB_CLEAN ? "clean unmount" : "kill -9",
				       (const double[]){(double)z->stop_ns / 1e6,
							(double)z->recovery_ns / 1e6,
							(double)z->mount_ns / 1e6});
		}
	}
	ret = bench_plot_write(p, r->plot);
	bench_plot_free(p);
	return ret;
}

/* ---- the command -------------------------------------------------------------------------- */

static void sb_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: kvcache-bench ssd [--dir DIR] [--sizes 2M,256K] [--total SIZE]\n"
	    "                         [--pool-size SIZE] [--recovery-blocks N] [--reps R]\n"
	    "                         [--json] [--plot FILE.png]\n"
	    "Starts kvcachefs (found next to this binary) with a small DRAM pool and an SSD\n"
	    "file in a temporary directory in DIR, writes --total bytes of blocks of each size\n"
	    "through the mount (they are demoted to SSD) and reads each back once from SSD,\n"
	    "one open/write|read/close per block, one thread; against fio (O_DIRECT, io_uring,\n"
	    "one job, iodepth 1; iodepth %d for information) on a file in the same directory.\n"
	    "The same loops on kvcache-memfs (a trivial in-memory libfuse filesystem, next\n"
	    "to this binary) show what FUSE costs on this machine without any device.\n"
	    "Then writes N blocks of 4K, restarts the daemon after a clean unmount and after\n"
	    "kill -9, and reports its recovery time and count, and checks a sample.\n"
	    "Target: kvcachefs >= %.1f x fio (iodepth 1), write and read, every size.\n"
	    "  --dir DIR            where the SSD and fio files go (default %s)\n"
	    "  --sizes LIST         block sizes, multiples of 4K (default %s)\n"
	    "  --total SIZE         bytes of blocks per size (default %" PRIu64 "M)\n"
	    "  --pool-size SIZE     the daemon's DRAM pool (default %" PRIu64 "M)\n"
	    "  --recovery-blocks N  blocks of the recovery test, 0 to skip (default %d)\n"
	    "  --reps R             rounds of fio and kvcachefs per size, alternating; the best\n"
	    "                       of each is compared (default %d)\n"
	    "  --json               print the results as one JSON line\n"
	    "  --plot FILE.png      also draw them with gnuplot (Debian package gnuplot-nox):\n"
	    "                       write and read GB/s per size next to fio, the ratios\n"
	    "                       against the target line (drawn also when the target is\n"
	    "                       missed) and the restart times; checked before the run\n"
	    "Needs root (mounts), fio (Debian package fio) and fusermount3. DIR needs room for\n"
	    "the SSD file (about 1.25 x the sizes' totals + 10K per recovery block) and for\n"
	    "--total more. Exit status: 0 target met, 3 missed, 1 error (blocks lost or read\n"
	    "back wrong, or a plot that could not be drawn, included; the figures are still\n"
	    "printed), 2 usage.\n",
	    SB_QD_INFO, SB_TARGET, SB_DEFAULT_DIR, SB_DEFAULT_SIZES, SB_DEFAULT_TOTAL / MIB,
	    SB_DEFAULT_POOL / MIB, SB_DEFAULT_REC, SB_DEFAULT_REPS);
}

static int sb_parse_sizes(struct sb_run *r, const char *list)
{
	char buf[256], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	r->nsizes = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (r->nsizes == SB_MAX_SIZES) {
			fprintf(stderr, "kvcache-bench: --sizes: at most %d sizes\n", SB_MAX_SIZES);
			return -EINVAL;
		}
		if (opt_parse_size(tok, &v) < 0 || v < SB_UNIT || v % SB_UNIT || v > SB_MAX_BLOCK) {
			fprintf(stderr,
				"kvcache-bench: --sizes: '%s' is not a multiple of 4K from 4K to "
				"%" PRIu64 "M\n",
				tok, SB_MAX_BLOCK / MIB);
			return -EINVAL;
		}
		r->sz[r->nsizes++].size = v;
	}
	if (!r->nsizes) {
		fprintf(stderr, "kvcache-bench: --sizes: empty list\n");
		return -EINVAL;
	}
	return 0;
}

static const char *sb_fstype_name(long type)
{
	static const struct {
		long magic;
		const char *name;
	} known[] = {{0xEF53, "ext4"},	     {0x58465342, "xfs"},	{0x9123683E, "btrfs"},
		     {0x01021994, "tmpfs"},  {0x858458f6, "ramfs"},	{0x2FC12FC1, "zfs"},
		     {0xF2F52010, "f2fs"},   {0x794c7630, "overlayfs"}, {0x6969, "nfs"},
		     {SB_FUSE_MAGIC, "fuse"}};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (known[i].magic == type)
			return known[i].name;
	return NULL;
}

/* Sizes: the SSD file holds every size's blocks and the recovery blocks (each with its meta
 * unit) with a quarter more and 64M of slack; checks the room in DIR and /dev/shm. */
static int sb_plan(struct sb_run *r)
{
	uint64_t need = 0, most = 0, avail;
	struct statvfs sv;
	struct statfs sf;
	const char *name;

	for (int s = 0; s < r->nsizes; s++) {
		struct sb_size *z = &r->sz[s];

		z->count = r->total / z->size;
		if (!z->count) {
			fprintf(stderr, "kvcache-bench: --total is below the size %" PRIu64 "\n",
				z->size);
			return 2;
		}
		need += z->count * (z->size + SB_UNIT);
		if (z->count * z->size > most)
			most = z->count * z->size;
	}
	if (!r->dram_only && r->total < 4 * r->pool_size)
		fprintf(stderr,
			"kvcache-bench: ssd: warning: --total is not well above the pool (%" PRIu64
			"M): few blocks will be read from SSD\n",
			r->pool_size / MIB);
	need += r->nrec * 2 * SB_UNIT;
	r->ssd_size = (need * 5 / 4 + 64 * MIB + MIB - 1) / MIB * MIB;
	if (r->dram_only) { /* every block of a size, and the recovery's, in DRAM */
		uint64_t rec = r->nrec * SB_UNIT;

		r->pool_size = ((most > rec ? most : rec) * 5 / 4 + 64 * MIB) / MIB * MIB;
	}
	if (statfs(r->dir, &sf) < 0)
		snprintf(r->fstype, sizeof(r->fstype), "?");
	else if ((name = sb_fstype_name((long)sf.f_type)))
		snprintf(r->fstype, sizeof(r->fstype), "%s", name);
	else
		snprintf(r->fstype, sizeof(r->fstype), "0x%lx", (long)sf.f_type);
	if (statvfs(r->dir, &sv) < 0) {
		sb_err("%s: %s", r->dir, strerror(errno));
		return 1;
	}
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (avail < (r->dram_only ? 0 : r->ssd_size) + most + 64 * MIB) {
		sb_err("%s has %" PRIu64 " MiB free; the SSD file (%" PRIu64
		       " MiB) and fio's file (%" PRIu64 " MiB) need more: lower --total or "
		       "--recovery-blocks",
		       r->dir, avail / MIB, r->dram_only ? 0 : r->ssd_size / MIB, most / MIB);
		return 1;
	}
	if (statvfs("/dev/shm", &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < r->pool_size + 16 * MIB) {
		sb_err("the pool needs %" PRIu64 " MiB on /dev/shm, %" PRIu64 " MiB free",
		       r->pool_size / MIB, (uint64_t)sv.f_bavail * sv.f_frsize / MIB);
		return 1;
	}
	return 0;
}

/* The run's directory, the names in it, the daemon up with its SSD tier. */
/* Make the mount point tmp/leaf, its path in mnt ("" when it could not be made). */
static int sb_mountpoint(char *mnt, size_t cap, const char *tmp, const char *leaf)
{
	int ret;

	snprintf(mnt, cap, "%s/%s", tmp, leaf);
	if (mkdir(mnt, 0755) == 0)
		return 0;
	ret = -errno;
	sb_err("mkdir %s: %s", mnt, strerror(errno));
	mnt[0] = '\0';
	return ret;
}

static int sb_setup(struct sb_run *r)
{
	char tmpl[PATH_MAX];
	struct sb_stat s;
	uint64_t ns;
	int ret;

	if (snprintf(tmpl, sizeof(tmpl), "%s/kvcache-bench-ssd.XXXXXX", r->dir) >=
	    (int)sizeof(tmpl) - 32) { /* room for the names in it */
		sb_err("--dir %s: too long a path", r->dir);
		return -ENAMETOOLONG;
	}
	if (!mkdtemp(tmpl)) {
		ret = -errno;
		sb_err("mkdtemp %s: %s", tmpl, strerror(errno));
		return ret;
	}
	snprintf(r->tmp, sizeof(r->tmp), "%s", tmpl);
	snprintf(r->pool, sizeof(r->pool), "/dev/shm/" SB_POOL_PREFIX "%s",
		 strrchr(r->tmp, '.') + 1);
	snprintf(r->ssd, sizeof(r->ssd), "%s/ssd.img", r->tmp);
	snprintf(r->ssd_arg, sizeof(r->ssd_arg), "%s:%" PRIu64 "M", r->ssd, r->ssd_size / MIB);
	snprintf(r->log, sizeof(r->log), "%s/kvcachefs.log", r->tmp);
	snprintf(r->fio_file, sizeof(r->fio_file), "%s/fio.dat", r->tmp);
	snprintf(r->fio_out, sizeof(r->fio_out), "%s/fio.json", r->tmp);
	snprintf(r->fio_log, sizeof(r->fio_log), "%s/fio.log", r->tmp);
	ret = sb_mountpoint(r->mnt, sizeof(r->mnt), r->tmp, "mnt");
	if (ret)
		return ret;
	ret = sb_daemon_start(r, &ns);
	if (!ret)
		ret = sb_status(r, &s);
	if (ret)
		return ret;
	if (!r->dram_only && !s.ssd_devices) {
		sb_err("the daemon reports no SSD device (ssd_devices 0) although started with "
		       "--ssd %s",
		       r->ssd_arg);
		return -ENODEV;
	}
	sb_progress("kvcache-bench: ssd: kvcachefs on %s: pool %" PRIu64 " MiB (%s)%s%s, "
		    "started in %.1f ms\n",
		    r->mnt, r->pool_size / MIB, r->pool, r->dram_only ? "" : ", SSD ",
		    r->dram_only ? ", no SSD (DRAM-only test mode)" : r->ssd_arg, (double)ns / 1e6);
	ret = sb_mountpoint(r->memfs_mnt, sizeof(r->memfs_mnt), r->tmp, "memfs");
	if (ret)
		return ret;
	ret = bench_run((char *const[]){r->memfs_bin, r->memfs_mnt, NULL}, false);
	if (ret != 0 || !sb_mount_answers(r->memfs_mnt)) {
		sb_err("%s %s failed (exit status %d)", r->memfs_bin, r->memfs_mnt, ret);
		return ret < 0 ? ret : -EIO;
	}
	return 0;
}

static int sb_measure(struct sb_run *r)
{
	char sz[24];
	int ret = 0;

	for (int s = 0; s < r->nsizes && !ret; s++) {
		/* Rounds alternate fio and kvcachefs, so that both see the same spells of a
		 * noisy machine; the best figure of each is kept, the counts of the last round. */
		for (int k = 0; k < r->reps && !ret; k++) {
			struct sb_size z = {.size = r->sz[s].size, .count = r->sz[s].count};

			snprintf(r->phase, sizeof(r->phase),
				 "%s (round %d/%d):", bench_fmt_size(z.size, sz, sizeof(sz)), k + 1,
				 r->reps);
			ret = sb_fio_size(r, &z);
			if (!ret)
				ret = sb_size_phase(r, &z);
			if (!ret)
				ret = sb_memfs_phase(r, &z);
			if (sb_midline)
				sb_progress("\n");
			if (ret)
				break;
			if (k) {
				for (int d = 0; d < SB_NDIRS; d++) {
					for (int q = 0; q < SB_NQDS; q++)
						bench_keep_best(&z.fio[d][q], r->sz[s].fio[d][q]);
					bench_keep_best(&z.kvc[d], r->sz[s].kvc[d]);
					bench_keep_best(&z.memfs[d], r->sz[s].memfs[d]);
				}
				bench_keep_best(&z.write_only, r->sz[s].write_only);
				bench_keep_best(&z.read_all, r->sz[s].read_all);
				z.bad += r->sz[s].bad;
			}
			r->sz[s] = z;
		}
	}
	if (!ret && unlink(r->fio_file) < 0 && errno != ENOENT)
		sb_err("unlink %s: %s", r->fio_file, strerror(errno));
	if (!ret && r->nrec)
		ret = sb_recovery(r);
	return ret;
}

int cmd_ssd(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"sizes", required_argument, NULL, 's'},
	    {"total", required_argument, NULL, 't'},
	    {"pool-size", required_argument, NULL, 'p'},
	    {"recovery-blocks", required_argument, NULL, 'n'},
	    {"reps", required_argument, NULL, 'r'},
	    {"json", no_argument, NULL, 'j'},
	    {"plot", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static const char *const progs[] = {"fio", "fusermount3"};
	static const char *const pkgs[] = {"fio", "fuse3"};
	struct sb_run r = {.total = SB_DEFAULT_TOTAL,
			   .pool_size = SB_DEFAULT_POOL,
			   .nrec = SB_DEFAULT_REC,
			   .reps = SB_DEFAULT_REPS};
	const char *dir = SB_DEFAULT_DIR, *env = getenv(SB_DRAM_ONLY_ENV);
	char bindir[PATH_MAX];
	uint64_t largest = 0;
	struct stat st;
	int c, v, ret;

	if (sb_parse_sizes(&r, SB_DEFAULT_SIZES) < 0)
		return 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 's':
			if (sb_parse_sizes(&r, optarg) < 0)
				return 2;
			break;
		case 't':
			if (opt_parse_size(optarg, &r.total) < 0 || !r.total) {
				fprintf(stderr, "kvcache-bench: --total: bad size '%s'\n", optarg);
				return 2;
			}
			break;
		case 'p':
			if (opt_parse_size(optarg, &r.pool_size) < 0 || r.pool_size < 4 * MIB) {
				fprintf(stderr,
					"kvcache-bench: --pool-size: a size of 4M or more\n");
				return 2;
			}
			break;
		case 'n':
			if (bench_arg_int("--recovery-blocks", optarg, 0, 10000000, &v) < 0)
				return 2;
			r.nrec = (uint64_t)v;
			break;
		case 'r':
			if (bench_arg_int("--reps", optarg, 1, 100, &r.reps) < 0)
				return 2;
			break;
		case 'j':
			r.json = true;
			break;
		case 'P':
			r.plot = optarg;
			break;
		case 'h':
			sb_usage(stdout);
			return 0;
		default:
			sb_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		sb_usage(stderr);
		return 2;
	}
	for (int s = 0; s < r.nsizes; s++)
		if (r.sz[s].size > largest)
			largest = r.sz[s].size;
	if (r.pool_size < 2 * largest) {
		fprintf(stderr, "kvcache-bench: --pool-size: at least twice the largest size\n");
		return 2;
	}
	r.dram_only = env && *env && strcmp(env, "0");
	if (!realpath(dir, r.dir) || stat(r.dir, &st) < 0) {
		sb_err("--dir %s: %s", dir, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		sb_err("--dir %s: not a directory", dir);
		return 1;
	}
	if (geteuid() != 0) {
		sb_err("needs root (it mounts kvcachefs)");
		return 1;
	}
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++)
		if (!bench_in_path(progs[i])) {
			sb_err("%s not found in PATH (Debian package %s)", progs[i], pkgs[i]);
			return 1;
		}
	if (r.plot && bench_plot_check(r.plot) < 0)
		return 1;
	if (bench_bin_dir(bindir, sizeof(bindir)) < 0)
		return 1;
	snprintf(r.bin, sizeof(r.bin), "%s/kvcachefs", bindir);
	snprintf(r.ctl, sizeof(r.ctl), "%s/kvcachectl", bindir);
	snprintf(r.memfs_bin, sizeof(r.memfs_bin), "%s/kvcache-memfs", bindir);
	for (const char *b = r.bin; b; b = b == r.bin ? r.ctl : b == r.ctl ? r.memfs_bin : NULL)
		if (access(b, X_OK) < 0) {
			sb_err("%s: %s (set KVC_BIN_DIR to the build's bin/)", b, strerror(errno));
			return 1;
		}
	ret = sb_plan(&r);
	if (ret)
		return ret;
	if (!(r.wbuf = bench_buffer(largest)) || !(r.rbuf = bench_buffer(largest))) {
		sb_err("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	install_signals();
	signal(SIGPIPE, SIG_IGN);
	ret = sb_setup(&r);
	if (!ret)
		ret = sb_measure(&r);
out:
	if (ret == -EINTR && stop)
		fprintf(stderr, "\nkvcache-bench: interrupted, cleaning up\n");
	sb_teardown(&r);
	if (!ret) {
		if (r.json)
			sb_print_json(&r);
		else
			sb_print(&r);
		ret = r.bad_blocks ? 1 : sb_met(&r) ? 0 : 3;
		if (r.plot && sb_plot(&r) < 0)
			ret = 1;
	}
	bench_buffer_free(r.wbuf, largest);
	bench_buffer_free(r.rbuf, largest);
	return ret < 0 ? 1 : ret;
}
