/*
 * kvcachectl: inspect a kvcachefs mount from the command line.
 *
 *   kvcachectl status [--json] MOUNTPOINT
 *   kvcachectl nodes [--json] MOUNTPOINT
 *   kvcachectl top [--interval SECONDS] [--once] MOUNTPOINT
 *   kvcachectl hash --block-tokens N [--seed S] [TOKENS...]
 *   kvcachectl lookup DIR NAME...
 *
 * It talks to the daemon only through the mount's ioctl ABI (fs/uapi/kvcachefs.h) and
 * libkvcache (fs/uapi/kvcache.h), as any application may: no private socket, no root needed
 * beyond read access to the mountpoint. `hash` needs no mount at all: it prints the block
 * names kvc_prefix_hash gives a token sequence, so scripts and other languages can check their
 * own naming against the library's; `lookup` then says how many of those blocks are cached.
 * `top` redraws the mount's figures in the terminal until told to stop (see its section).
 *
 * Exit status: 0 on success, 1 when the operation failed, 2 for a usage error (bad option or
 * value), with one line on stderr naming what was wrong.
 */
#include "fs/uapi/kvcachefs.h"
#include "fs/uapi/kvcache.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define FUSE_SUPER_MAGIC 0x65735546

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: kvcachectl COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  status [--json] MOUNTPOINT   capacity and usage of the DRAM pool and the\n"
		"                               SSD tier, block and directory counts, reads,\n"
		"                               writes, hits, misses, evictions, demotions to\n"
		"                               and promotions from SSD, and what the start\n"
		"                               recovered from a previous daemon\n"
		"  nodes [--json] MOUNTPOINT    the cluster's members: id, transfer address,\n"
		"                               pool used and free, state\n"
		"  top [--interval SECONDS] [--once] MOUNTPOINT\n"
		"                               a live view, redrawn every SECONDS (default 1,\n"
		"                               0.1 to 3600): DRAM and SSD usage bars, read and\n"
		"                               write MB/s (10^6 bytes) and requests/s, the hit\n"
		"                               rate, evictions, demotions and promotions per\n"
		"                               second, pins and reservations, and in a cluster\n"
		"                               its members; q or Ctrl-C quits. With --once, or\n"
		"                               when stdout is not a terminal, it prints one\n"
		"                               frame, rates over one interval, and exits\n"
		"  hash --block-tokens N [--seed S] [TOKENS...]\n"
		"                               the name of each full block of N tokens, one\n"
		"                               per line (kvc_prefix_hash); TOKENS are decimal\n"
		"                               u32, read from stdin (separated by blanks or\n"
		"                               commas) when none are given; the seed S is a\n"
		"                               decimal or 0x-hex u64 (default 0)\n"
		"  lookup DIR NAME...           how many of the NAMEs, from the first on, are\n"
		"                               sealed blocks in DIR (the cached prefix)\n"
		"  help                         show this help\n"
		"  version                      show the version\n"
		"\n"
		"Options: -h/--help, -V/--version.\n");
}

/* One ioctl on the mount; arg starts with the ABI version. 0, or -errno with the line that
 * says why (no "kvcachectl: " prefix, no newline) in msg. The mount is opened for this one
 * call only, so that a long-running caller (top) never keeps it busy. */
static int mount_ioctl_msg(const char *mnt, unsigned long cmd, void *arg, const char *what,
			   char *msg, size_t cap)
{
	struct statfs sfs;
	int fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0) {
		ret = -errno;
		snprintf(msg, cap, "%s: %s", mnt, strerror(-ret));
		return ret;
	}
	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != FUSE_SUPER_MAGIC) {
		snprintf(msg, cap, "%s: not a kvcachefs mount", mnt);
		ret = -ENOTTY;
		goto out;
	}
	*(uint32_t *)arg = KVCACHEFS_ABI_VERSION;
	if (ioctl(fd, cmd, arg) < 0) {
		ret = -errno;
		if (errno == ENOTTY || errno == ENOSYS || errno == EINVAL)
			snprintf(msg, cap, "%s: not a kvcachefs mount", mnt);
		else if (errno == EPROTO)
			snprintf(msg, cap, "%s: the daemon speaks another ABI version", mnt);
		else
			snprintf(msg, cap, "%s: %s: %s", mnt, what, strerror(errno));
	}
out:
	close(fd);
	return ret;
}

/* mount_ioctl_msg, printing the error line on stderr. */
static int mount_ioctl(const char *mnt, unsigned long cmd, void *arg, const char *what)
{
	char msg[PATH_MAX + 128];
	int ret = mount_ioctl_msg(mnt, cmd, arg, what, msg, sizeof(msg));

	if (ret < 0)
		fprintf(stderr, "kvcachectl: %s\n", msg);
	return ret;
}

static int get_status(const char *mnt, struct kvcachefs_status *st)
{
	memset(st, 0, sizeof(*st));
	return mount_ioctl(mnt, KVCACHEFS_IOC_STATUS, st, "status");
}

static int get_tiers(const char *mnt, struct kvcachefs_tiers *t)
{
	memset(t, 0, sizeof(*t));
	return mount_ioctl(mnt, KVCACHEFS_IOC_TIERS, t, "status");
}

static const char *human(uint64_t v, char *buf, size_t cap)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	int k = 0;

	while (d >= 1024 && k < 5) {
		d /= 1024;
		k++;
	}
	snprintf(buf, cap, k ? "%.2f %s" : "%.0f %s", d, u[k]);
	return buf;
}

static void json_string(const char *s)
{
	putchar('"');
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		if ((unsigned char)*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void print_json(const char *mnt, const struct kvcachefs_status *s,
		       const struct kvcachefs_tiers *t)
{
	printf("{\"mountpoint\": ");
	json_string(mnt);
	printf(", \"capacity\": %llu, \"used\": %llu, \"free\": %llu"
	       ", \"blocks\": %llu, \"writing\": %llu, \"directories\": %llu"
	       ", \"reads\": %llu, \"writes\": %llu, \"bytes_read\": %llu"
	       ", \"bytes_written\": %llu, \"hits\": %llu, \"misses\": %llu"
	       ", \"evictions\": %llu, \"enospc\": %llu, \"max_block_size\": %llu"
	       ", \"evict_high_pct\": %u, \"evict_low_pct\": %u, \"pool_size\": %llu"
	       ", \"pinned\": %llu, \"reservations\": %llu, \"cluster\": %s, \"members\": %llu"
	       ", \"cluster_capacity\": %llu, \"cluster_used\": %llu",
	       s->capacity, s->used, s->free, s->blocks, s->writing, s->directories, s->reads,
	       s->writes, s->bytes_read, s->bytes_written, s->hits, s->misses, s->evictions,
	       s->enospc, s->max_block_size, s->evict_high_pct, s->evict_low_pct, s->pool_size,
	       s->pinned, s->reservations, s->flags & KVCACHEFS_STATUS_CLUSTER ? "true" : "false",
	       s->members, s->cluster_capacity, s->cluster_used);
	printf(", \"ssd_capacity\": %llu, \"ssd_used\": %llu, \"ssd_blocks\": %llu"
	       ", \"ssd_devices\": %llu, \"dram_blocks\": %llu, \"demotions\": %llu"
	       ", \"promotions\": %llu, \"ssd_evictions\": %llu, \"recovered\": %llu"
	       ", \"recovery_dropped\": %llu, \"recovery_ns\": %llu}\n",
	       t->ssd_capacity, t->ssd_used, t->ssd_blocks, t->ssd_devices, t->dram_blocks,
	       t->demotions, t->promotions, t->ssd_evictions, t->recovered, t->recovery_dropped,
	       t->recovery_ns);
}

static void print_text(const char *mnt, const struct kvcachefs_status *s,
		       const struct kvcachefs_tiers *t)
{
	char a[32], b[32], c[32];
	double pct = s->capacity ? 100.0 * (double)s->used / (double)s->capacity : 0;

	if (s->flags & KVCACHEFS_STATUS_CLUSTER)
		printf("kvcachefs at %s (cluster member, %llu members)\n", mnt, s->members);
	else
		printf("kvcachefs at %s (single node)\n", mnt);
	printf("  dram:        %s capacity, %s used (%.1f%%), %s free; %llu blocks\n",
	       human(s->capacity, a, sizeof(a)), human(s->used, b, sizeof(b)), pct,
	       human(s->free, c, sizeof(c)), t->dram_blocks);
	if (t->ssd_devices) {
		uint64_t ssd_free =
		    t->ssd_capacity > t->ssd_used ? t->ssd_capacity - t->ssd_used : 0;

		pct = t->ssd_capacity ? 100.0 * (double)t->ssd_used / (double)t->ssd_capacity : 0;
		printf("  ssd:         %s capacity, %s used (%.1f%%), %s free; %llu blocks, "
		       "%llu device%s\n",
		       human(t->ssd_capacity, a, sizeof(a)), human(t->ssd_used, b, sizeof(b)), pct,
		       human(ssd_free, c, sizeof(c)), t->ssd_blocks, t->ssd_devices,
		       t->ssd_devices == 1 ? "" : "s");
		printf("  tiers:       %llu demoted to SSD, %llu promoted to DRAM, %llu dropped "
		       "from SSD\n",
		       t->demotions, t->promotions, t->ssd_evictions);
	}
	printf("  eviction:    above %u%% down to %u%%; max block %s\n", s->evict_high_pct,
	       s->evict_low_pct, human(s->max_block_size, a, sizeof(a)));
	printf("  blocks:      %llu sealed, %llu being written\n", s->blocks, s->writing);
	printf("  directories: %llu\n", s->directories);
	printf("  reads:       %llu (%s)\n", s->reads, human(s->bytes_read, a, sizeof(a)));
	printf("  writes:      %llu (%s)\n", s->writes, human(s->bytes_written, a, sizeof(a)));
	printf("  hits:        %llu\n", s->hits);
	printf("  misses:      %llu\n", s->misses);
	printf("  evictions:   %llu (blocks that left DRAM, demoted or dropped)\n", s->evictions);
	printf("  ENOSPC:      %llu\n", s->enospc);
	printf("  pinned:      %llu (side channel), %llu reservations open\n", s->pinned,
	       s->reservations);
	if (s->flags & KVCACHEFS_STATUS_CLUSTER)
		printf("  cluster:     %llu members, %s capacity, %s used\n", s->members,
		       human(s->cluster_capacity, a, sizeof(a)),
		       human(s->cluster_used, b, sizeof(b)));
	printf("  recovery:    %llu blocks recovered, %llu dropped, in %.1f ms\n", t->recovered,
	       t->recovery_dropped, (double)t->recovery_ns / 1e6);
}

/* "[--json] MOUNTPOINT" of command cmd: 0 parsed, 1 help shown, 2 usage error (printed). */
static int mount_args(const char *cmd, int argc, char **argv, const char **mnt, int *json)
{
	*mnt = NULL;
	*json = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			*json = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 1;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "kvcachectl: %s: unknown option '%s'\n", cmd, argv[i]);
			return 2;
		} else if (*mnt) {
			fprintf(stderr, "kvcachectl: %s: unexpected argument '%s'\n", cmd, argv[i]);
			return 2;
		} else {
			*mnt = argv[i];
		}
	}
	if (!*mnt) {
		fprintf(stderr, "kvcachectl: %s: missing MOUNTPOINT\n", cmd);
		return 2;
	}
	return 0;
}

static int cmd_nodes(int argc, char **argv)
{
	static struct kvcachefs_nodes nd;
	const char *mnt;
	char a[32], b[32];
	int json, ret = mount_args("nodes", argc, argv, &mnt, &json);

	if (ret)
		return ret == 1 ? 0 : 2;
	memset(&nd, 0, sizeof(nd));
	if (mount_ioctl(mnt, KVCACHEFS_IOC_NODES, &nd, "nodes") < 0)
		return 1;
	if (json) {
		printf("{\"cluster\": ");
		json_string(nd.flags & KVCACHEFS_NODES_CLUSTER ? nd.cluster : "");
		printf(", \"stale\": %s, \"total\": %u, \"nodes\": [",
		       nd.flags & KVCACHEFS_NODES_STALE ? "true" : "false", nd.total);
		for (uint32_t i = 0; i < nd.count && i < KVCACHEFS_NODES_MAX; i++) {
			const struct kvcachefs_node *n = &nd.node[i];

			nd.node[i].addr[sizeof(n->addr) - 1] = '\0';
			printf("%s{\"node_id\": \"%016llx\", \"addr\": ", i ? ", " : "",
			       (unsigned long long)n->node_id);
			json_string(n->addr);
			printf(", \"pool_size\": %llu, \"pool_used\": %llu, \"pool_free\": %llu, "
			       "\"state\": \"%s\", \"self\": %s, \"rdma\": %s}",
			       n->pool_size, n->pool_used,
			       n->pool_size > n->pool_used ? n->pool_size - n->pool_used : 0,
			       n->state & KVCACHEFS_NODE_UP ? "up" : "down",
			       n->state & KVCACHEFS_NODE_SELF ? "true" : "false",
			       n->transports & 0x2 ? "true" : "false");
		}
		printf("]}\n");
		return 0;
	}
	if (!(nd.flags & KVCACHEFS_NODES_CLUSTER))
		printf("%s: single node (no --etcd)\n", mnt);
	else
		printf("cluster %.*s: %u member%s%s\n", (int)sizeof(nd.cluster), nd.cluster,
		       nd.total, nd.total == 1 ? "" : "s",
		       nd.flags & KVCACHEFS_NODES_STALE
			   ? " (etcd unreachable: last known membership)"
			   : "");
	printf("%-18s %-24s %12s %12s  %s\n", "NODE", "ADDRESS", "POOL USED", "POOL FREE", "STATE");
	for (uint32_t i = 0; i < nd.count && i < KVCACHEFS_NODES_MAX; i++) {
		const struct kvcachefs_node *n = &nd.node[i];

		nd.node[i].addr[sizeof(n->addr) - 1] = '\0';
		printf("%016llx   %-24s %12s %12s  %s%s\n", (unsigned long long)n->node_id,
		       n->addr[0] ? n->addr : "-", human(n->pool_used, a, sizeof(a)),
		       human(n->pool_size > n->pool_used ? n->pool_size - n->pool_used : 0, b,
			     sizeof(b)),
		       n->state & KVCACHEFS_NODE_UP ? "up" : "down",
		       n->state & KVCACHEFS_NODE_SELF ? " (this node)" : "");
	}
	if (nd.total > nd.count)
		printf("... and %u more\n", nd.total - nd.count);
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	struct kvcachefs_status st;
	struct kvcachefs_tiers t;
	const char *mnt;
	int json, ret = mount_args("status", argc, argv, &mnt, &json);

	if (ret)
		return ret == 1 ? 0 : 2;
	if (get_status(mnt, &st) < 0 || get_tiers(mnt, &t) < 0)
		return 1;
	if (json)
		print_json(mnt, &st, &t);
	else
		print_text(mnt, &st, &t);
	return 0;
}

/*
 * ---- top: a live view of the mount --------------------------------------------------------
 *
 * Every interval, one sample: KVCACHEFS_IOC_STATUS, KVCACHEFS_IOC_TIERS and, in cluster mode,
 * KVCACHEFS_IOC_NODES, each through a fresh open of the mountpoint (an fd held open would keep
 * the mount busy). Rates are the differences of the counters between the last two samples
 * over the time between them (CLOCK_MONOTONIC), never averages since the daemon's start.
 *
 * The screen is drawn with plain ANSI/xterm sequences (alternate screen, cursor positioning,
 * erase to end of line), one frame at a time: a frame is the terminal's rows of at most its
 * columns of printable ASCII (so a byte is a column and no line wraps; strings from the
 * daemon or the command line are sanitized first), and only the rows that changed since the
 * frame shown are rewritten. Input is read non-canonically without echo; ISIG stays on, so
 * Ctrl-C arrives as SIGINT like any other. The signals top handles are blocked except while it
 * waits in ppoll(), so a handler only ever sets a flag and the loop acts on it, and nothing
 * else is interrupted half-way. However the loop ends (q, SIGINT, SIGTERM, SIGHUP, the mount
 * going away), the terminal is given back as it was found: cursor shown, main screen, the
 * saved termios.
 */
#define TOP_MAX_COLS	 512
#define TOP_MAX_ROWS	 256
#define TOP_DEFAULT_COLS 80
#define TOP_DEFAULT_ROWS 24

struct top_sample {
	struct kvcachefs_status st;
	struct kvcachefs_tiers t;
	struct kvcachefs_nodes nd; /* cluster mode only (count 0 otherwise) */
	struct timespec at;	   /* CLOCK_MONOTONIC, once the ioctls answered */
};

/* rows lines of at most cols bytes each, printable ASCII only */
struct top_frame {
	int rows, cols, n;
	char line[TOP_MAX_ROWS][TOP_MAX_COLS + 1];
};

struct top {
	const char *mnt;
	double interval;      /* seconds between samples */
	int once;	      /* one frame on stdout, no terminal handling */
	int keys;	      /* stdin is a terminal whose keys top reads (mode saved in saved) */
	int screen;	      /* the terminal is in top's mode */
	struct termios saved; /* stdin's mode before top changed it */
	struct top_sample s[2];
	struct top_sample *cur, *prev; /* prev is NULL until there are two samples */
	struct top_frame frame;	       /* the frame to show */
	struct top_frame shown;	       /* what the terminal shows; rows 0 when unknown */
	char out[TOP_MAX_ROWS * (TOP_MAX_COLS + 16) + 16]; /* the bytes of one redraw */
};

/* Set by the signal handlers only (they run inside ppoll(), see above). */
static volatile sig_atomic_t top_quit, top_winch, top_tstp, top_cont;

static void top_on_signal(int sig)
{
	if (sig == SIGWINCH)
		top_winch = 1;
	else if (sig == SIGTSTP)
		top_tstp = 1;
	else if (sig == SIGCONT)
		top_cont = 1;
	else
		top_quit = 1;
}

static const int top_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP, SIGCONT};

/* a - b in seconds */
static double ts_diff(const struct timespec *a, const struct timespec *b)
{
	return (double)(a->tv_sec - b->tv_sec) + (double)(a->tv_nsec - b->tv_nsec) / 1e9;
}

static void timespec_add(struct timespec *t, double seconds)
{
	t->tv_sec += (time_t)seconds;
	t->tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

/* s with every byte that is not printable ASCII replaced by '?', into buf. */
static const char *printable(const char *s, size_t len, char *buf, size_t cap)
{
	size_t i;

	for (i = 0; i + 1 < cap && i < len && s[i]; i++)
		buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

/* Take a sample into the older slot and make it current. 0, or -errno with msg filled. */
static int top_sample(struct top *tp, char *msg, size_t cap)
{
	struct top_sample *s = tp->cur == &tp->s[0] ? &tp->s[1] : &tp->s[0];
	int ret;

	memset(s, 0, sizeof(*s));
	ret = mount_ioctl_msg(tp->mnt, KVCACHEFS_IOC_STATUS, &s->st, "status", msg, cap);
	if (!ret)
		ret = mount_ioctl_msg(tp->mnt, KVCACHEFS_IOC_TIERS, &s->t, "status", msg, cap);
	if (!ret && (s->st.flags & KVCACHEFS_STATUS_CLUSTER))
		ret = mount_ioctl_msg(tp->mnt, KVCACHEFS_IOC_NODES, &s->nd, "nodes", msg, cap);
	if (ret)
		return ret;
	if (s->nd.count > KVCACHEFS_NODES_MAX)
		s->nd.count = KVCACHEFS_NODES_MAX;
	clock_gettime(CLOCK_MONOTONIC, &s->at);
	tp->prev = tp->cur;
	tp->cur = s;
	/* a daemon restarted on the same mountpoint counts from 0 again */
	if (tp->prev && tp->prev->st.start_time_ns != s->st.start_time_ns)
		tp->prev = NULL;
	return 0;
}

/* The terminal's size, or 80x24 when stdout is not one, clamped to what a frame holds. */
static void top_size(int *rows, int *cols)
{
	struct winsize ws;

	*rows = TOP_DEFAULT_ROWS;
	*cols = TOP_DEFAULT_COLS;
	if (isatty(STDOUT_FILENO) && !ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) && ws.ws_row &&
	    ws.ws_col) {
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
	if (*rows > TOP_MAX_ROWS)
		*rows = TOP_MAX_ROWS;
	if (*cols > TOP_MAX_COLS)
		*cols = TOP_MAX_COLS;
}

/* Append a line, cut at the frame's width; nothing once the frame is full. */
__attribute__((format(printf, 2, 3))) static void frame_add(struct top_frame *f, const char *fmt,
							    ...)
{
	va_list ap;

	if (f->n >= f->rows)
		return;
	va_start(ap, fmt);
	vsnprintf(f->line[f->n++], (size_t)f->cols + 1, fmt, ap);
	va_end(ap);
}

/* A line with left at the left edge and right at the right edge; left is cut short (ending
 * in "...") to make room for right as long as 16 columns of it remain, else right is left
 * out. */
static void frame_lr(struct top_frame *f, const char *left, const char *right)
{
	int ll = (int)strlen(left), rl = (int)strlen(right), room = f->cols - rl - 2;

	if (!rl || room < 16)
		frame_add(f, "%s", left);
	else if (ll <= room)
		frame_add(f, "%s%*s%s", left, f->cols - ll - rl, "", right);
	else
		frame_add(f, "%.*s...  %s", room - 3, left, right);
}

/* "LABEL [#####.....]  USED / CAPACITY  PCT%", the bar as wide as the line leaves room for. */
static void frame_bar(struct top_frame *f, const char *label, uint64_t used, uint64_t cap)
{
	char a[32], b[32], both[80], right[96], bar[TOP_MAX_COLS + 1];
	double frac = cap ? (double)used / (double)cap : 0;
	int width, fill;

	if (frac > 1)
		frac = 1;
	snprintf(both, sizeof(both), "%s / %s", human(used, a, sizeof(a)),
		 human(cap, b, sizeof(b)));
	snprintf(right, sizeof(right), "%23s %5.1f%%", both, 100 * frac);
	width = f->cols - 5 - 2 - 2 - (int)strlen(right); /* "LABEL", "[]", "  " */
	if (width < 4) {
		frame_add(f, "%-4s %s", label, right);
		return;
	}
	fill = (int)(frac * width + 0.5);
	if (used && !fill)
		fill = 1; /* something is there */
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '.', (size_t)(width - fill));
	bar[width] = '\0';
	frame_add(f, "%-4s [%s]  %s", label, bar, right);
}

/* now - before per second between the last two samples, divided by scale, formatted with fmt
 * into buf; "-" until there are two samples. */
static const char *top_rate(const struct top *tp, uint64_t now, uint64_t before, double scale,
			    const char *fmt, char *buf, size_t cap)
{
	double dt = tp->prev ? ts_diff(&tp->cur->at, &tp->prev->at) : 0;

	if (dt <= 0)
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, fmt, (double)(now >= before ? now - before : 0) / dt / scale);
	return buf;
}

#define TOP_RATE(tp, field, scale, fmt, buf)                                                       \
	top_rate(tp, (tp)->cur->field, (tp)->prev ? (tp)->prev->field : 0, scale, fmt, buf,        \
		 sizeof(buf))

static void top_members(const struct top *tp, struct top_frame *f, int last)
{
	const struct kvcachefs_nodes *nd = &tp->cur->nd;
	const struct kvcachefs_status *s = &tp->cur->st;
	char a[32], b[32], addr[80];
	int addrw = f->cols - 51, room;
	uint32_t shown;

	frame_add(f, "%s", "");
	frame_add(f, "Members      %u: %s capacity, %s used%s", nd->total,
		  human(s->cluster_capacity, a, sizeof(a)), human(s->cluster_used, b, sizeof(b)),
		  nd->flags & KVCACHEFS_NODES_STALE ? "; etcd unreachable, last known" : "");
	if (addrw < 12)
		addrw = 12;
	if (addrw > 63)
		addrw = 63;
	room = last - f->n - 1; /* rows for members below the column titles */
	if (room < 1 || !nd->count)
		return;
	frame_add(f, "%-17s %-*s %11s %11s  %s", "NODE (* this)", addrw, "ADDRESS", "POOL USED",
		  "POOL FREE", "STATE");
	shown = nd->count;
	if ((uint32_t)room < nd->total)
		shown = (uint32_t)room - 1 < nd->count ? (uint32_t)room - 1 : nd->count;
	for (uint32_t i = 0; i < shown; i++) {
		const struct kvcachefs_node *n = &nd->node[i];

		frame_add(f, "%016llx%c %-*.*s %11s %11s  %s", (unsigned long long)n->node_id,
			  n->state & KVCACHEFS_NODE_SELF ? '*' : ' ', addrw, addrw,
			  n->addr[0] ? printable(n->addr, sizeof(n->addr), addr, sizeof(addr))
				     : "-",
			  human(n->pool_used, a, sizeof(a)),
			  human(n->pool_size > n->pool_used ? n->pool_size - n->pool_used : 0, b,
				sizeof(b)),
			  n->state & KVCACHEFS_NODE_UP ? "up" : "down");
	}
	if (shown < nd->total)
		frame_add(f, "... and %u more (kvcachectl nodes lists them all)",
			  nd->total - shown);
}

/* Compose the frame of the latest samples for a terminal of rows x cols. */
static void top_compose(const struct top *tp, struct top_frame *f, int rows, int cols)
{
	const struct kvcachefs_status *s = &tp->cur->st;
	const struct kvcachefs_tiers *t = &tp->cur->t;
	char left[TOP_MAX_COLS + 32], right[160], mnt[TOP_MAX_COLS + 1], name[80], clock[16];
	char r1[32], r2[32], r3[32], r4[32], hit[96];
	int last = tp->once ? rows : rows - 1; /* the footer's row, when not once */
	uint64_t dh, dm;
	struct timespec now;
	struct tm tm;

	f->rows = rows;
	f->cols = cols;
	f->n = 0;
	clock_gettime(CLOCK_REALTIME, &now);
	localtime_r(&now.tv_sec, &tm);
	strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
	snprintf(left, sizeof(left), "kvcachefs top: %s",
		 printable(tp->mnt, SIZE_MAX, mnt, sizeof(mnt)));
	if (s->flags & KVCACHEFS_STATUS_CLUSTER)
		snprintf(
		    right, sizeof(right), "cluster %s, %llu member%s  %s",
		    printable(tp->cur->nd.cluster, sizeof(tp->cur->nd.cluster), name, sizeof(name)),
		    s->members, s->members == 1 ? "" : "s", clock);
	else
		snprintf(right, sizeof(right), "single node  %s", clock);
	frame_lr(f, left, right);
	frame_add(f, "%s", "");

	frame_bar(f, "DRAM", s->used, s->capacity);
	frame_add(f, "     %llu block%s in DRAM; evicts above %u%% down to %u%%", t->dram_blocks,
		  t->dram_blocks == 1 ? "" : "s", s->evict_high_pct, s->evict_low_pct);
	if (t->ssd_devices) {
		frame_bar(f, "SSD", t->ssd_used, t->ssd_capacity);
		frame_add(f, "     %llu block%s with a copy on SSD, %llu device%s; %s dropped/s",
			  t->ssd_blocks, t->ssd_blocks == 1 ? "" : "s", t->ssd_devices,
			  t->ssd_devices == 1 ? "" : "s",
			  TOP_RATE(tp, t.ssd_evictions, 1, "%.1f", r1));
	}
	frame_add(f, "%s", "");

	frame_add(f, "Blocks       %llu sealed, %llu being written, %llu director%s", s->blocks,
		  s->writing, s->directories, s->directories == 1 ? "y" : "ies");
	frame_add(f, "Throughput   read %9s MB/s   write %9s MB/s",
		  TOP_RATE(tp, st.bytes_read, 1e6, "%.2f", r1),
		  TOP_RATE(tp, st.bytes_written, 1e6, "%.2f", r2));
	frame_add(f, "Requests/s   read %9s        write %9s",
		  TOP_RATE(tp, st.reads, 1, "%.1f", r1), TOP_RATE(tp, st.writes, 1, "%.1f", r2));
	dh = tp->prev ? s->hits - tp->prev->st.hits : 0;
	dm = tp->prev ? s->misses - tp->prev->st.misses : 0;
	if (!tp->prev)
		snprintf(hit, sizeof(hit), "-");
	else if (!dh && !dm)
		snprintf(hit, sizeof(hit), "- (no opens, no misses)");
	else
		snprintf(hit, sizeof(hit), "%.1f%% (%llu of %llu)",
			 100.0 * (double)dh / (double)(dh + dm), (unsigned long long)dh,
			 (unsigned long long)(dh + dm));
	frame_add(f, "Hit rate     %s; since start %llu hits, %llu misses", hit, s->hits,
		  s->misses);
	frame_add(f, "Per second   %s evictions, %s demotions, %s promotions",
		  TOP_RATE(tp, st.evictions, 1, "%.1f", r2),
		  TOP_RATE(tp, t.demotions, 1, "%.1f", r3),
		  TOP_RATE(tp, t.promotions, 1, "%.1f", r4));
	frame_add(f, "Side channel %llu pinned, %llu reservation%s open; %llu ENOSPC since start",
		  s->pinned, s->reservations, s->reservations == 1 ? "" : "s", s->enospc);
	if (s->flags & KVCACHEFS_STATUS_CLUSTER)
		top_members(tp, f, last);

	if (tp->once) {
		while (f->n && !f->line[f->n - 1][0])
			f->n--;
		return;
	}
	while (f->n < last)
		frame_add(f, "%s", "");
	f->n = last;
	snprintf(left, sizeof(left), "q: quit");
	snprintf(right, sizeof(right), "every %gs, rates over the last %.1fs", tp->interval,
		 tp->prev ? ts_diff(&tp->cur->at, &tp->prev->at) : 0);
	frame_lr(f, left, tp->prev ? right : "");
}

static int write_all_fd(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Enter top's terminal mode (again: after SIGCONT it is set anew). */
static void top_enter(struct top *tp)
{
	static const char seq[] = "\033[?1049h\033[?25l\033[H\033[2J";

	if (tp->keys) {
		struct termios t = tp->saved;

		t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		t.c_cc[VMIN] = 1;
		t.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &t);
	}
	write_all_fd(STDOUT_FILENO, seq, sizeof(seq) - 1);
	tp->screen = 1;
	tp->shown.rows = 0; /* redraw all */
}

/* Give the terminal back as top found it. Errors are ignored: it may be gone. */
static void top_leave(struct top *tp)
{
	static const char seq[] = "\033[?25h\033[?1049l";

	if (!tp->screen)
		return;
	write_all_fd(STDOUT_FILENO, seq, sizeof(seq) - 1);
	if (tp->keys)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &tp->saved);
	tp->screen = 0;
}

/* Draw tp->frame: the rows that differ from the frame shown, all after a clear when the size
 * changed. 0, or -1 when the terminal cannot be written. */
static int top_draw(struct top *tp)
{
	const struct top_frame *f = &tp->frame;
	char *out = tp->out;
	int full = tp->shown.rows != f->rows || tp->shown.cols != f->cols;
	size_t len = 0;

	if (full)
		len += (size_t)sprintf(out, "\033[H\033[2J");
	for (int r = 0; r < f->n; r++) {
		size_t n = strlen(f->line[r]);

		if (!full && !strcmp(f->line[r], tp->shown.line[r]))
			continue;
		len += (size_t)sprintf(out + len, "\033[%d;1H", r + 1);
		memcpy(out + len, f->line[r], n);
		len += n;
		/* a full row leaves the cursor in the last column, where erasing to the end of
		 * the line would take the last character too */
		if ((int)n < f->cols)
			len += (size_t)sprintf(out + len, "\033[K");
	}
	memcpy(&tp->shown, f, sizeof(*f));
	if (!len)
		return 0;
	return write_all_fd(STDOUT_FILENO, out, len);
}

/* Stop as the shell asked (Ctrl-Z), with the terminal given back meanwhile. */
static void top_suspend(struct top *tp, const struct sigaction *sa)
{
	sigset_t tstp;

	top_leave(tp);
	signal(SIGTSTP, SIG_DFL);
	raise(SIGTSTP); /* blocked: pending until the unblock below, which stops here */
	sigemptyset(&tstp);
	sigaddset(&tstp, SIGTSTP);
	sigprocmask(SIG_UNBLOCK, &tstp, NULL);
	sigprocmask(SIG_BLOCK, &tstp, NULL);
	sigaction(SIGTSTP, sa, NULL);
	top_enter(tp);
}

/* The interactive loop. 0 when asked to quit, 1 when the mount went away or the terminal
 * could not be written (the message is printed once the terminal is restored). */
static int top_loop(struct top *tp)
{
	struct sigaction sa = {.sa_handler = top_on_signal}, old[6];
	char msg[PATH_MAX + 160] = "", err[PATH_MAX + 128], keys[64];
	struct timespec deadline, now, wait;
	sigset_t block, orig;
	int ret = 0, rows, cols;

	sigfillset(&sa.sa_mask);
	sigemptyset(&block);
	for (size_t i = 0; i < sizeof(top_signals) / sizeof(top_signals[0]); i++)
		sigaddset(&block, top_signals[i]);
	sigprocmask(SIG_BLOCK, &block, &orig);
	for (size_t i = 0; i < sizeof(top_signals) / sizeof(top_signals[0]); i++)
		sigaction(top_signals[i], &sa, &old[i]);
	tp->keys = isatty(STDIN_FILENO) && !tcgetattr(STDIN_FILENO, &tp->saved);

	top_enter(tp);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	timespec_add(&deadline, tp->interval);
	for (;;) {
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		int redraw = 0;

		if (top_quit)
			break;
		if (top_tstp) {
			top_tstp = 0;
			top_suspend(tp, &sa);
		}
		if (top_cont) {
			top_cont = 0;
			top_enter(tp);
		}
		if (top_winch) {
			top_winch = 0;
			tp->shown.rows = 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (ts_diff(&now, &deadline) >= 0) {
			if (top_sample(tp, err, sizeof(err)) < 0) {
				snprintf(msg, sizeof(msg), "the mount went away: %s", err);
				ret = 1;
				break;
			}
			timespec_add(&deadline, tp->interval);
			/* fell behind (stopped, a slow daemon): no bursts to catch up */
			if (ts_diff(&now, &deadline) >= 0) {
				deadline = now;
				timespec_add(&deadline, tp->interval);
			}
			redraw = 1;
		}
		top_size(&rows, &cols);
		if (redraw || rows != tp->shown.rows || cols != tp->shown.cols) {
			top_compose(tp, &tp->frame, rows, cols);
			if (top_draw(tp) < 0) {
				snprintf(msg, sizeof(msg), "writing the terminal: %s",
					 strerror(errno));
				ret = 1;
				break;
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		wait.tv_sec = deadline.tv_sec - now.tv_sec;
		wait.tv_nsec = deadline.tv_nsec - now.tv_nsec;
		if (wait.tv_nsec < 0) {
			wait.tv_sec--;
			wait.tv_nsec += 1000000000L;
		}
		if (wait.tv_sec < 0)
			wait.tv_sec = wait.tv_nsec = 0;
		if (ppoll(&pfd, tp->keys ? 1 : 0, &wait, &orig) <= 0)
			continue; /* the deadline, or a signal: its flag is looked at above */
		if (pfd.revents & POLLIN) {
			ssize_t n = read(STDIN_FILENO, keys, sizeof(keys));

			for (ssize_t i = 0; i < n; i++)
				if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 3 /* ^C */)
					top_quit = 1;
			if (n == 0)
				tp->keys = 0; /* no more input: signals only */
			else if (n < 0 && errno != EINTR && errno != EAGAIN)
				top_quit = 1; /* the terminal went away */
		} else if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) {
			top_quit = 1; /* the terminal went away */
		}
	}
	top_leave(tp);
	for (size_t i = 0; i < sizeof(top_signals) / sizeof(top_signals[0]); i++)
		sigaction(top_signals[i], &old[i], NULL);
	sigprocmask(SIG_SETMASK, &orig, NULL);
	if (ret)
		fprintf(stderr, "kvcachectl: top: %s\n", msg);
	return ret;
}

/* One frame on stdout, rates over one interval, no terminal handling (scripts, pipes). */
static int top_once(struct top *tp)
{
	char msg[PATH_MAX + 128];
	struct timespec d = {.tv_sec = (time_t)tp->interval};
	int rows, cols;

	d.tv_nsec = (long)((tp->interval - (double)d.tv_sec) * 1e9);
	while (nanosleep(&d, &d) < 0 && errno == EINTR)
		;
	if (top_sample(tp, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "kvcachectl: %s\n", msg);
		return 1;
	}
	top_size(&rows, &cols);
	top_compose(tp, &tp->frame, rows, cols);
	for (int r = 0; r < tp->frame.n; r++)
		printf("%s\n", tp->frame.line[r]);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "kvcachectl: top: writing stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

/* SECONDS for --interval: a decimal number from 0.1 to 3600. 0, or -1. */
static int parse_interval(const char *s, double *out)
{
	char *end;
	double v;

	if (!isdigit((unsigned char)s[0]) && s[0] != '.')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v >= 0.1 && v <= 3600))
		return -1;
	*out = v;
	return 0;
}

static int cmd_top(int argc, char **argv)
{
	const char *ival = NULL;
	struct top *tp;
	char msg[PATH_MAX + 128];
	int ret = 2;

	tp = calloc(1, sizeof(*tp));
	if (!tp) {
		fprintf(stderr, "kvcachectl: top: out of memory\n");
		return 1;
	}
	tp->interval = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--once")) {
			tp->once = 1;
		} else if (!strcmp(a, "--interval")) {
			if (i + 1 == argc) {
				fprintf(stderr, "kvcachectl: top: --interval needs a value\n");
				goto out;
			}
			ival = argv[++i];
		} else if (!strncmp(a, "--interval=", 11)) {
			ival = a + 11;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			ret = 0;
			goto out;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kvcachectl: top: unknown option '%s'\n", a);
			goto out;
		} else if (tp->mnt) {
			fprintf(stderr, "kvcachectl: top: unexpected argument '%s'\n", a);
			goto out;
		} else {
			tp->mnt = a;
		}
	}
	if (ival && parse_interval(ival, &tp->interval) < 0) {
		fprintf(stderr,
			"kvcachectl: top: bad --interval '%s' (want seconds, 0.1 to 3600)\n", ival);
		goto out;
	}
	if (!tp->mnt) {
		fprintf(stderr, "kvcachectl: top: missing MOUNTPOINT\n");
		goto out;
	}
	ret = 1;
	if (top_sample(tp, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "kvcachectl: %s\n", msg);
		goto out;
	}
	if (!isatty(STDOUT_FILENO))
		tp->once = 1;
	ret = tp->once ? top_once(tp) : top_loop(tp);
out:
	free(tp);
	return ret;
}

/* Digits only (no sign, no blanks), base 10 or 16, at most max. 0, or -1 when s is not one. */
static int parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -1;
		if (v > (max - d) / (unsigned)base)
			return -1;
		v = v * (unsigned)base + d;
	}
	*out = v;
	return 0;
}

static int parse_seed(const char *s, uint64_t *out)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		return parse_u64(s + 2, 16, UINT64_MAX, out);
	return parse_u64(s, 10, UINT64_MAX, out);
}

/* A growing array of tokens. */
struct tokens {
	uint32_t *v;
	size_t n, cap;
};

/* Append the token spelled s. 0; 2 (message printed) for a bad token; 1 when out of memory. */
static int tokens_add(struct tokens *t, const char *s)
{
	uint64_t v;

	if (parse_u64(s, 10, UINT32_MAX, &v) < 0) {
		fprintf(stderr, "kvcachectl: hash: bad token '%s' (not a decimal u32)\n", s);
		return 2;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 1024;
		uint32_t *nv = realloc(t->v, cap * sizeof(*nv));

		if (!nv) {
			fprintf(stderr, "kvcachectl: hash: out of memory\n");
			return 1;
		}
		t->v = nv;
		t->cap = cap;
	}
	t->v[t->n++] = (uint32_t)v;
	return 0;
}

/* Read tokens separated by whitespace and commas from f. 0, or the exit status (message
 * printed). */
static int tokens_read(struct tokens *t, FILE *f)
{
	char *word = NULL;
	size_t len = 0, cap = 0;
	int c, ret = 0;

	do {
		c = getc(f);
		if (c == EOF || isspace(c) || c == ',') {
			if (!len)
				continue;
			word[len] = '\0';
			len = 0;
			ret = tokens_add(t, word);
		} else {
			if (len + 1 >= cap) {
				size_t ncap = cap ? 2 * cap : 32;
				char *nw = realloc(word, ncap);

				if (!nw) {
					fprintf(stderr, "kvcachectl: hash: out of memory\n");
					ret = 1;
					break;
				}
				word = nw;
				cap = ncap;
			}
			word[len++] = (char)c;
		}
	} while (c != EOF && !ret);
	if (!ret && ferror(f)) {
		fprintf(stderr, "kvcachectl: hash: reading stdin: %s\n", strerror(errno));
		ret = 1;
	}
	free(word);
	return ret;
}

static int cmd_hash(int argc, char **argv)
{
	struct tokens t = {0};
	char(*names)[KVC_HASH_NAME_SIZE] = NULL;
	const char *bt_arg = NULL, *seed_arg = NULL;
	uint64_t bt = 0, seed = 0;
	int ntok_args = 0, opts = 1, ret = 2, n;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int r;

		/* "-1" is not an option but a bad token, and is reported as such */
		if (!opts || a[0] != '-' || isdigit((unsigned char)a[1])) {
			r = tokens_add(&t, a);
			if (r) {
				ret = r;
				goto out;
			}
			ntok_args++;
		} else if (!strcmp(a, "--")) {
			opts = 0;
		} else if (!strcmp(a, "--block-tokens") || !strcmp(a, "--seed")) {
			if (i + 1 == argc) {
				fprintf(stderr, "kvcachectl: hash: %s needs a value\n", a);
				goto out;
			}
			if (!strcmp(a, "--seed"))
				seed_arg = argv[++i];
			else
				bt_arg = argv[++i];
		} else if (!strncmp(a, "--block-tokens=", 15)) {
			bt_arg = a + 15;
		} else if (!strncmp(a, "--seed=", 7)) {
			seed_arg = a + 7;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			ret = 0;
			goto out;
		} else {
			fprintf(stderr, "kvcachectl: hash: unknown option '%s'\n", a);
			goto out;
		}
	}
	if (!bt_arg) {
		fprintf(stderr, "kvcachectl: hash: missing --block-tokens\n");
		goto out;
	}
	if (parse_u64(bt_arg, 10, UINT32_MAX, &bt) < 0 || bt == 0) {
		fprintf(stderr,
			"kvcachectl: hash: bad --block-tokens '%s' (want a decimal u32 > 0)\n",
			bt_arg);
		goto out;
	}
	if (seed_arg && parse_seed(seed_arg, &seed) < 0) {
		fprintf(stderr,
			"kvcachectl: hash: bad --seed '%s' (want a decimal or 0x-hex u64)\n",
			seed_arg);
		goto out;
	}
	if (!ntok_args) {
		ret = tokens_read(&t, stdin);
		if (ret)
			goto out;
	}

	ret = 1;
	if (t.n / bt) {
		names = calloc(t.n / bt, sizeof(*names));
		if (!names) {
			fprintf(stderr, "kvcachectl: hash: out of memory\n");
			goto out;
		}
	}
	n = kvc_prefix_hash(seed, (uint32_t)bt, t.v, t.n, names, t.n / bt);
	if (n < 0) {
		fprintf(stderr, "kvcachectl: hash: %s\n", strerror(-n));
		goto out;
	}
	for (int i = 0; i < n; i++)
		puts(names[i]);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "kvcachectl: hash: writing stdout: %s\n", strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(names);
	free(t.v);
	return ret;
}

static int cmd_lookup(int argc, char **argv)
{
	const char *dir = NULL;
	const char **names;
	size_t n = 0;
	int opts = 1, r;

	names = calloc((size_t)argc, sizeof(*names));
	if (!names) {
		fprintf(stderr, "kvcachectl: lookup: out of memory\n");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opts && !strcmp(a, "--")) {
			opts = 0;
		} else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
			usage(stdout);
			free(names);
			return 0;
		} else if (opts && a[0] == '-' && a[1]) {
			fprintf(stderr, "kvcachectl: lookup: unknown option '%s'\n", a);
			free(names);
			return 2;
		} else if (!dir) {
			dir = a;
		} else {
			names[n++] = a;
		}
	}
	if (!dir || !n) {
		fprintf(stderr, "kvcachectl: lookup: missing %s\n", dir ? "NAME" : "DIR");
		free(names);
		return 2;
	}
	r = kvc_lookup_path(dir, names, n);
	free(names);
	if (r < 0) {
		fprintf(stderr, "kvcachectl: lookup: %s: %s\n", dir, strerror(-r));
		return 1;
	}
	printf("%d\n", r);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1);
	if (!strcmp(argv[1], "nodes"))
		return cmd_nodes(argc - 1, argv + 1);
	if (!strcmp(argv[1], "top"))
		return cmd_top(argc - 1, argv + 1);
	if (!strcmp(argv[1], "hash"))
		return cmd_hash(argc - 1, argv + 1);
	if (!strcmp(argv[1], "lookup"))
		return cmd_lookup(argc - 1, argv + 1);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version") ||
	    !strcmp(argv[1], "version")) {
		printf("kvcachectl %s\n", KVC_VERSION);
		return 0;
	}
	fprintf(stderr, "kvcachectl: unknown command '%s' (see kvcachectl --help)\n", argv[1]);
	return 2;
}
