/*
 * bench_util: the helpers every command of kvcache-bench uses (see bench_util.h). The only
 * state is `stop`, which the signal handler sets and every loop of the bench reads: a signal
 * never ends the bench by itself, so that what it started is always stopped and removed.
 *
 * The plots of --plot are a struct bench_plot, one allocation holding every panel (fixed
 * limits: a run has a handful of sizes and series), turned into a gnuplot script and a data
 * file only by bench_plot_write. The bars are boxes at x positions computed here (group r at
 * x = r, its bars side by side within 0.8 of it), not gnuplot's histogram style, so that the
 * value labels above them sit at the same x without reproducing gnuplot's layout rules.
 */
#include "tools/bench_util.h"
#include "engine/xfer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- signals and time ---- */

volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* No SA_RESTART: a blocked syscall returns EINTR and the loop around it sees `stop`. */
void install_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- I/O ---- */

int bench_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR && !stop)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t bench_read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);

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

/* ---- figures ---- */

const char *bench_fmt_size(uint64_t v, char *buf, size_t cap)
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
	return buf;
}

void bench_keep_best(double *best, double v)
{
	if (v > *best)
		*best = v;
}

double bench_ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

double bench_pct(const uint64_t *v, size_t n, unsigned p)
{
	size_t i = n * p / 100;

	if (!n)
		return 0;
	return (double)v[i < n ? i : n - 1] / 1e3;
}

int bench_arg_int(const char *opt, const char *arg, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < lo || v > hi) {
		fprintf(stderr, "kvcache-bench: %s: %d to %d\n", opt, lo, hi);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

/* ---- children ---- */

void *bench_buffer(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, len, MADV_DONTFORK); /* without it, only slower */
	memset(p, 0, len);		      /* faulted in, whatever MAP_POPULATE did */
	return p;
}

void bench_buffer_free(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

pid_t bench_spawn(char *const argv[], int out_fd, int err_fd)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent) /* we died before the prctl */
			_exit(127);
		signal(SIGPIPE, SIG_DFL); /* the bench may ignore it, its children do not */
		if (null >= 0)
			dup2(null, 0);
		if (out_fd < 0)
			out_fd = null;
		if (err_fd < 0)
			err_fd = null;
		if (out_fd >= 0)
			dup2(out_fd, 1);
		if (err_fd >= 0)
			dup2(err_fd, 2);
		execvp(argv[0], argv);
		fprintf(stderr, "kvcache-bench: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid); /* also here: no window where a Ctrl-C would reach it */
	return pid;
}

int bench_reap(pid_t pid, int timeout_ms, int *st)
{
	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(pid, st, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD))
			return 0;
		if (waited >= timeout_ms)
			return -ETIMEDOUT;
		usleep(10000);
	}
}

int bench_kill(pid_t pid, int timeout_ms, int *st)
{
	if (bench_reap(pid, 0, st) == 0)
		return 0;
	kill(pid, SIGTERM);
	if (bench_reap(pid, timeout_ms, st) == 0)
		return 0;
	kill(pid, SIGKILL);
	return bench_reap(pid, timeout_ms, st);
}

const char *bench_status_str(int st, char *buf, size_t cap)
{
	if (st == -1)
		snprintf(buf, cap, "status unknown");
	else if (WIFSIGNALED(st))
		snprintf(buf, cap, "killed by signal %d", WTERMSIG(st));
	else
		snprintf(buf, cap, "exit status %d", WEXITSTATUS(st));
	return buf;
}

void bench_log_tail(const char *cmd, const char *what, const char *path)
{
	char buf[2048], *line, *nl;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t end;
	ssize_t n;

	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	lseek(fd, end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	line = buf;
	if (end > (off_t)sizeof(buf) - 1 && (nl = strchr(line, '\n'))) /* a partial first line */
		line = nl + 1;
	fprintf(stderr, "kvcache-bench: %s: the end of %s:\n", cmd, what);
	for (; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			nl = line + strlen(line) - 1;
		fprintf(stderr, "  | %.*s\n", (int)(nl - line + (*nl != '\n')), line);
	}
}

int bench_run(char *const argv[], bool quiet)
{
	pid_t pid = bench_spawn(argv, quiet ? -1 : STDOUT_FILENO, quiet ? -1 : STDERR_FILENO);
	int st = -1;

	if (pid < 0)
		return (int)pid;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- the machine ---- */

int bench_bin_dir(char *out, size_t cap)
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

bool bench_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char file[PATH_MAX + 64];

	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(file, sizeof(file), "%.*s/%s", (int)n, n ? path : ".", prog);
		if (access(file, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

bool bench_mounted(const char *dir)
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

int64_t bench_proc_kb(const char *path, const char *field)
{
	FILE *f = fopen(path, "r");
	size_t flen = strlen(field);
	char line[256];
	int64_t v = -ENOENT;

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

uint64_t bench_meminfo(const char *field)
{
	int64_t v = bench_proc_kb("/proc/meminfo", field);

	return v > 0 ? (uint64_t)v : 0;
}

int bench_congestion(const char *cmd, const char *name, char *system, size_t cap)
{
	int ret = name ? xfer_tcp_congestion_check(name) : 0;

	if (ret < 0) {
		fprintf(stderr, "kvcache-bench: %s: --tcp-congestion %s: %s\n", cmd, name,
			xfer_tcp_congestion_strerror(ret));
		return ret;
	}
	xfer_tcp_congestion_sysctl(NULL, system, cap);
	if (!system[0])
		snprintf(system, cap, "?");
	return 0;
}

int bench_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ret;

	if (fd < 0)
		return -errno;
	ret = bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
		      getsockname(fd, (struct sockaddr *)&a, &len) < 0
		  ? -errno
		  : ntohs(a.sin_port);
	close(fd);
	return ret;
}

/* ---- plots ---- */

#define PLOT_GNUPLOT	"gnuplot"
#define PLOT_PACKAGE	"gnuplot-nox"
#define PLOT_TIMEOUT_MS 60000
#define PLOT_COL_W	760 /* pixels per panel */
#define PLOT_ROW_H	440
#define PLOT_TITLE_H	80
#define PLOT_GROUP_W	0.8 /* of the 1.0 between two groups, at most */
#define PLOT_BAR_W	0.3 /* a bar, at most: one or two bars stay bars, not walls */
#define PLOT_AREA_W	(PLOT_COL_W - 140) /* pixels between the axes of a panel, about */
#define PLOT_LABEL_W	34		   /* pixels of a value label lying down, about */
#define PLOT_LOG_TAIL	2048

static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* Tableau's ten, and two more: the first series (kvcachefs, by convention) is blue. */
static const char *const plot_colors[BENCH_PLOT_MAX_SERIES] = {
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};

struct plot_line {
	double value;
	int series; /* its colour; -1: black */
	char label[96];
};

struct plot_panel {
	char title[128], xlabel[64], ylabel[96];
	char series[BENCH_PLOT_MAX_SERIES][48];
	char rows[BENCH_PLOT_MAX_ROWS][40];
	double v[BENCH_PLOT_MAX_ROWS][BENCH_PLOT_MAX_SERIES]; /* NAN: not measured */
	struct plot_line lines[BENCH_PLOT_MAX_LINES];
	int nseries, nrows, nlines;
};

struct bench_plot {
	char title[720];
	int err; /* the first error of the building calls, -errno */
	int npanels;
	struct plot_panel panel[BENCH_PLOT_MAX_PANELS];
};

int bench_plot_check(const char *path)
{
	bool made = true;
	struct stat st;
	int fd, ret = 0;

	if (!bench_in_path(PLOT_GNUPLOT)) {
		fprintf(stderr,
			"kvcache-bench: --plot: gnuplot not found in PATH (Debian package %s)\n",
			PLOT_PACKAGE);
		return -ENOENT;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST) {
		made = false; /* not truncated: a plot that fails leaves it as it was */
		fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	}
	if (fd < 0) {
		ret = -errno;
		fprintf(stderr, "kvcache-bench: --plot %s: %s\n", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0)
		ret = -errno;
	else if (!S_ISREG(st.st_mode))
		ret = -EINVAL;
	if (ret)
		fprintf(stderr, "kvcache-bench: --plot %s: %s\n", path,
			ret == -EINVAL ? "not a regular file" : strerror(-ret));
	close(fd);
	if (made)
		unlink(path);
	return ret;
}

/* The CPUs we may run on, as nproc(1) counts them. */
static long plot_nproc(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		return CPU_COUNT(&set);
	return sysconf(_SC_NPROCESSORS_ONLN);
}

struct bench_plot *bench_plot_begin(const char *command, const char *fmt, ...)
{
	struct bench_plot *p = calloc(1, sizeof(*p));
	char host[256] = "?", date[64] = "?", sub[400];
	time_t now = time(NULL);
	struct tm tm;
	va_list ap;

	if (!p)
		return NULL;
	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "?");
	host[sizeof(host) - 1] = '\0';
	if (localtime_r(&now, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M %Z", &tm);
	va_start(ap, fmt);
	vsnprintf(sub, sizeof(sub), fmt, ap);
	va_end(ap);
	/* bounded pieces: a title always fits (and the compiler can tell) */
	snprintf(p->title, sizeof(p->title),
		 "kvcache-bench %.24s on %.64s (%ld CPUs), %.40s\n%.399s", command, host,
		 plot_nproc(), date, sub);
	return p;
}

static void plot_fail(struct bench_plot *p, int err)
{
	if (!p->err)
		p->err = err;
}

void bench_plot_panel(struct bench_plot *p, const char *title, const char *xlabel,
		      const char *ylabel, const char *const *series)
{
	struct plot_panel *q;

	if (!p)
		return;
	if (p->npanels == BENCH_PLOT_MAX_PANELS) {
		plot_fail(p, -E2BIG);
		return;
	}
	q = &p->panel[p->npanels++];
	snprintf(q->title, sizeof(q->title), "%s", title);
	snprintf(q->xlabel, sizeof(q->xlabel), "%s", xlabel);
	snprintf(q->ylabel, sizeof(q->ylabel), "%s", ylabel);
	for (; series && series[q->nseries]; q->nseries++) {
		if (q->nseries == BENCH_PLOT_MAX_SERIES) {
			plot_fail(p, -E2BIG);
			break;
		}
		snprintf(q->series[q->nseries], sizeof(q->series[0]), "%s", series[q->nseries]);
	}
}

/* The panel rows and lines go to, or NULL (the plot then fails) when none was begun. */
static struct plot_panel *cur_panel(struct bench_plot *p)
{
	if (!p)
		return NULL;
	if (!p->npanels) {
		plot_fail(p, -EINVAL);
		return NULL;
	}
	return &p->panel[p->npanels - 1];
}

void bench_plot_row(struct bench_plot *p, const char *label, const double *values)
{
	struct plot_panel *q = cur_panel(p);

	if (!q)
		return;
	if (q->nrows == BENCH_PLOT_MAX_ROWS) {
		plot_fail(p, -E2BIG);
		return;
	}
	snprintf(q->rows[q->nrows], sizeof(q->rows[0]), "%s", label);
	for (int i = 0; i < q->nseries; i++)
		q->v[q->nrows][i] = isfinite(values[i]) && values[i] > 0 ? values[i] : NAN;
	q->nrows++;
}

void bench_plot_line(struct bench_plot *p, int series, double value, const char *label)
{
	struct plot_panel *q = cur_panel(p);

	if (!q)
		return;
	if (q->nlines == BENCH_PLOT_MAX_LINES) {
		plot_fail(p, -E2BIG);
		return;
	}
	q->lines[q->nlines].value = value;
	q->lines[q->nlines].series = series >= 0 && series < q->nseries ? series : -1;
	snprintf(q->lines[q->nlines].label, sizeof(q->lines[0].label), "%s", label);
	q->nlines++;
}

void bench_plot_free(struct bench_plot *p)
{
	free(p);
}

/* s as a gnuplot double-quoted string (noenhanced text: only \ " and newlines matter). */
static void plot_quote(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else if ((unsigned char)*s >= ' ')
			fputc(*s, f);
	}
	fputc('"', f);
}

/* The label above a bar: 3 significant figures or so, k and M for large counts. */
static void plot_fmt(double v, char *buf, size_t cap)
{
	if (isnan(v))
		snprintf(buf, cap, "n/a");
	else if (v >= 1e6)
		snprintf(buf, cap, "%.2fM", v / 1e6);
	else if (v >= 1e4)
		snprintf(buf, cap, "%.0fk", v / 1e3);
	else if (v >= 100)
		snprintf(buf, cap, "%.0f", v);
	else if (v >= 10)
		snprintf(buf, cap, "%.1f", v);
	else
		snprintf(buf, cap, "%.2f", v);
}

static double plot_bar_w(const struct plot_panel *q)
{
	double w = PLOT_GROUP_W / q->nseries;

	return w < PLOT_BAR_W ? w : PLOT_BAR_W;
}

static double plot_bar_x(const struct plot_panel *q, int row, int series)
{
	return row - plot_bar_w(q) * q->nseries / 2 + plot_bar_w(q) * (series + 0.5);
}

static bool plot_drawn(const struct plot_panel *q)
{
	return q->nseries && q->nrows;
}

/* The data: one block per series of every panel drawn, in order (gnuplot's `index`):
 * x, the bar's height ('?' when not measured), the label's height, the label. */
static void plot_data(FILE *f, const struct bench_plot *p)
{
	char lab[32];

	for (int k = 0; k < p->npanels; k++) {
		const struct plot_panel *q = &p->panel[k];

		if (!plot_drawn(q))
			continue;
		for (int i = 0; i < q->nseries; i++) {
			for (int r = 0; r < q->nrows; r++) {
				double v = q->v[r][i];

				plot_fmt(v, lab, sizeof(lab));
				if (isnan(v))
					fprintf(f, "%.4f\t?\t0\t%s\n", plot_bar_x(q, r, i), lab);
				else
					fprintf(f, "%.4f\t%.6g\t%.6g\t%s\n", plot_bar_x(q, r, i), v,
						v, lab);
			}
			fputs("\n\n", f);
		}
	}
}

static void plot_panel_script(FILE *f, const struct plot_panel *q, const char *dat, int *index)
{
	bool upright = PLOT_AREA_W / q->nrows * plot_bar_w(q) < PLOT_LABEL_W;
	double top = 0;

	for (int r = 0; r < q->nrows; r++)
		for (int i = 0; i < q->nseries; i++)
			if (!isnan(q->v[r][i]) && q->v[r][i] > top)
				top = q->v[r][i];
	for (int l = 0; l < q->nlines; l++)
		if (q->lines[l].value > top)
			top = q->lines[l].value;
	top = top > 0 ? top * (upright ? 1.3 : 1.15) : 1;

	fputs("set title ", f);
	plot_quote(f, q->title);
	fputs("\nset xlabel ", f);
	plot_quote(f, q->xlabel);
	fputs("\nset ylabel ", f);
	plot_quote(f, q->ylabel);
	fprintf(f, "\nset xrange [-0.5:%d.5]\nset yrange [0:%.6g]\nset boxwidth %.4f absolute\n",
		q->nrows - 1, top, plot_bar_w(q) * 0.9);
	/* 2.5M rather than 2.5e+06 on the axis of counts */
	fprintf(f, "set format y \"%s\"\n", top >= 1e5 ? "%.1s%c" : "%g");
	fputs("set xtics (", f);
	for (int r = 0; r < q->nrows; r++) {
		fputs(r ? ", " : "", f);
		plot_quote(f, q->rows[r]);
		fprintf(f, " %d", r);
	}
	fputs(") scale 0 nomirror\nplot ", f);
	for (int i = 0; i < q->nseries; i++, (*index)++) {
		plot_quote(f, dat);
		fprintf(f, " index %d using 1:2 with boxes lc rgb \"%s\" title ", *index,
			plot_colors[i]);
		plot_quote(f, q->series[i]);
		fputs(", \\\n     ", f);
		plot_quote(f, dat);
		fprintf(f, " index %d using 1:3:4 with labels %s font \",8\" notitle", *index,
			upright ? "rotate by 90 left offset 0,0.4" : "center offset 0,0.6");
		fputs(i + 1 < q->nseries || q->nlines ? ", \\\n     " : "\n", f);
	}
	for (int l = 0; l < q->nlines; l++) {
		const struct plot_line *line = &q->lines[l];

		fprintf(f, "%.6g with lines dt 2 lw 2 lc rgb \"%s\" title ", line->value,
			line->series < 0 ? "#000000" : plot_colors[line->series]);
		plot_quote(f, line->label);
		fputs(l + 1 < q->nlines ? ", \\\n     " : "\n", f);
	}
}

/* The script: the terminal (pngcairo where gnuplot has it), the layout, each panel. */
static void plot_script(FILE *f, const struct bench_plot *p, const char *dat, const char *png)
{
	int n = 0, cols, rows, w, h, index = 0;

	for (int k = 0; k < p->npanels; k++)
		n += plot_drawn(&p->panel[k]);
	cols = n > 1 ? 2 : 1;
	rows = (n + cols - 1) / cols;
	w = cols * PLOT_COL_W + (cols == 1 ? 140 : 0);
	h = rows * PLOT_ROW_H + PLOT_TITLE_H;
	fprintf(f,
		"if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
		"  set terminal pngcairo size %d,%d noenhanced font \"sans,10\"\n"
		"} else {\n"
		"  set terminal png size %d,%d noenhanced\n"
		"}\n"
		"set output ",
		w, h, w, h);
	plot_quote(f, png);
	fputs("\nset datafile separator \"\\t\"\nset datafile missing \"?\"\n"
	      "set style fill solid 0.85 border -1\nset grid ytics\nset key above horizontal\n"
	      "set ytics nomirror\nset border 3\nset multiplot layout ",
	      f);
	fprintf(f, "%d,%d title ", rows, cols);
	plot_quote(f, p->title);
	fputs(" font \",13\"\n", f);
	for (int k = 0; k < p->npanels; k++)
		if (plot_drawn(&p->panel[k]))
			plot_panel_script(f, &p->panel[k], dat, &index);
	fputs("unset multiplot\nset output\n", f);
}

/* Write the data (dat NULL) or the script (reading dat, drawing png) into path; 0 or -errno
 * (reported). */
static int plot_file(const char *path, const struct bench_plot *p, const char *dat, const char *png)
{
	FILE *f = fopen(path, "we");
	int ret = 0;

	if (!f)
		ret = -errno;
	else {
		if (dat)
			plot_script(f, p, dat, png);
		else
			plot_data(f, p);
		if (ferror(f))
			ret = -EIO;
		if (fclose(f) < 0 && !ret)
			ret = -errno;
	}
	if (ret)
		fprintf(stderr, "kvcache-bench: --plot: %s: %s\n", path, strerror(-ret));
	return ret;
}

/* The end of gnuplot's messages, indented, after its failure. */
static void plot_log_tail(const char *log)
{
	char buf[PLOT_LOG_TAIL + 1], *line, *save = NULL;
	int fd = open(log, O_RDONLY | O_CLOEXEC);
	off_t end;
	ssize_t n;

	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	if (end > PLOT_LOG_TAIL)
		lseek(fd, end - PLOT_LOG_TAIL, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = bench_read_full(fd, buf, PLOT_LOG_TAIL);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (line[strspn(line, " \t\r")])
			fprintf(stderr, "  | %s\n", line);
}

/* Run gnuplot on the script, its messages into log. 0, or -errno (reported). */
static int plot_run(const char *script, const char *log)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), st = -1, ret;
	pid_t pid;

	if (fd < 0) {
		ret = -errno;
		fprintf(stderr, "kvcache-bench: --plot: %s: %s\n", log, strerror(errno));
		return ret;
	}
	pid = bench_spawn((char *const[]){PLOT_GNUPLOT, (char *)script, NULL}, -1, fd);
	close(fd);
	if (pid < 0) {
		fprintf(stderr, "kvcache-bench: --plot: cannot start gnuplot: %s\n",
			strerror((int)-pid));
		return (int)pid;
	}
	for (int waited = 0; bench_reap(pid, 100, &st) < 0; waited += 100)
		if (stop || waited >= PLOT_TIMEOUT_MS) {
			bench_kill(pid, 2000, &st);
			if (stop) {
				fprintf(stderr, "kvcache-bench: --plot: interrupted, not drawn\n");
				return -EINTR;
			}
			fprintf(stderr, "kvcache-bench: --plot: gnuplot did not finish in %d s\n",
				PLOT_TIMEOUT_MS / 1000);
			return -ETIMEDOUT;
		}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
		fprintf(stderr, "kvcache-bench: --plot: cannot run gnuplot (Debian package %s)\n",
			PLOT_PACKAGE);
	else if (WIFEXITED(st))
		fprintf(stderr, "kvcache-bench: --plot: gnuplot exited with status %d:\n",
			WEXITSTATUS(st));
	else
		fprintf(stderr, "kvcache-bench: --plot: gnuplot was killed by signal %d\n",
			WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	plot_log_tail(log);
	return -EIO;
}

/* Copy gnuplot's PNG to path, once it is one. 0 or -errno (reported). */
static int plot_copy(const char *png, const char *path)
{
	unsigned char buf[65536];
	int in = open(png, O_RDONLY | O_CLOEXEC), out = -1, ret = 0;
	ssize_t n;

	if (in < 0 || bench_read_full(in, buf, sizeof(png_magic)) != sizeof(png_magic) ||
	    memcmp(buf, png_magic, sizeof(png_magic))) {
		fprintf(stderr, "kvcache-bench: --plot: gnuplot made no PNG\n");
		ret = -EIO;
		goto out;
	}
	out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		ret = -errno;
		fprintf(stderr, "kvcache-bench: --plot %s: %s\n", path, strerror(errno));
		goto out;
	}
	lseek(in, 0, SEEK_SET);
	while ((n = bench_read_full(in, buf, sizeof(buf))) > 0)
		if ((ret = bench_write_full(out, buf, (size_t)n)) < 0)
			break;
	if (n < 0)
		ret = (int)n;
	if (close(out) < 0 && !ret)
		ret = -errno;
	if (ret)
		fprintf(stderr, "kvcache-bench: --plot %s: %s\n", path, strerror(-ret));
out:
	if (in >= 0)
		close(in);
	return ret;
}

int bench_plot_write(struct bench_plot *p, const char *path)
{
	static const char *const files[] = {"plot.dat", "plot.gp", "plot.png", "gnuplot.log"};
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], f[4][PATH_MAX + 16];
	int ret;

	fflush(stdout);
	if (!p || p->err) {
		ret = p ? p->err : -ENOMEM;
		fprintf(stderr, "kvcache-bench: --plot %s: %s\n", path,
			ret == -E2BIG ? "more panels, rows, series or lines than a plot takes"
				      : strerror(-ret));
		return ret;
	}
	if (!bench_in_path(PLOT_GNUPLOT)) {
		fprintf(stderr,
			"kvcache-bench: --plot: gnuplot not found in PATH (Debian package %s); the "
			"figures above are not drawn\n",
			PLOT_PACKAGE);
		return -ENOENT;
	}
	snprintf(dir, sizeof(dir), "%s/kvcache-bench-plot.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		ret = -errno;
		fprintf(stderr, "kvcache-bench: --plot: mkdtemp %s: %s\n", dir, strerror(errno));
		return ret;
	}
	for (int i = 0; i < 4; i++)
		snprintf(f[i], sizeof(f[i]), "%s/%s", dir, files[i]);
	ret = plot_file(f[0], p, NULL, NULL);
	if (!ret)
		ret = plot_file(f[1], p, f[0], f[2]);
	if (!ret)
		ret = plot_run(f[1], f[3]);
	if (!ret)
		ret = plot_copy(f[2], path);
	for (int i = 0; i < 4; i++)
		unlink(f[i]);
	if (rmdir(dir) < 0)
		fprintf(stderr, "kvcache-bench: --plot: rmdir %s: %s\n", dir, strerror(errno));
	return ret;
}
