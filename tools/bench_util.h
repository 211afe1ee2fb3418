/*
 * bench_util: what the commands of kvcache-bench (bench.c, bench_cluster.c) share: the `stop`
 * flag its signals set, the clock, full reads and writes that give way to `stop`, children
 * started in their own process groups, option values, and small probes of the machine (PATH,
 * mounts, /proc/meminfo, a free loopback port), and the bar charts of --plot (gnuplot).
 *
 * Functions return -errno and print nothing unless their comment says so.
 */
#ifndef KVC_TOOLS_BENCH_UTIL_H
#define KVC_TOOLS_BENCH_UTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- signals and time ---- */

/* Set by SIGINT, SIGTERM and SIGHUP once install_signals() ran (without SA_RESTART, so a
 * blocked call returns EINTR); every loop checks it and unwinds through its cleanup. */
extern volatile sig_atomic_t stop;
void install_signals(void);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* A page-aligned buffer of len bytes, its pages faulted in, which the forks of this process
 * do not share: after a fork (every program the bench starts), each page of an ordinary
 * buffer is copy-on-write, and the next write to it faults, inside whatever is timed then
 * (65536 faults for 256 MiB). NULL when out of memory; bench_buffer_free(p, len) frees it. */
void *bench_buffer(size_t len);
void bench_buffer_free(void *p, size_t len);

/* ---- I/O ---- */

/* Write all len bytes; an EINTR is retried unless `stop` is set. 0 or -errno. */
int bench_write_full(int fd, const void *buf, size_t len);

/* Read up to len bytes, as bench_write_full retries; the count read (short only at EOF) or
 * -errno. */
ssize_t bench_read_full(int fd, void *buf, size_t len);

/* ---- figures ---- */

/* "2M", "256K", "1536K", "4097": the shortest exact form that opt_parse_size reads back, in
 * buf (cap bytes). Returns buf. */
const char *bench_fmt_size(uint64_t v, char *buf, size_t cap);

/* *best = max(*best, v): figures are kept as the best over the repetitions. */
void bench_keep_best(double *best, double v);

/* a / b, or 0 where b was not measured (0). */
double bench_ratio(double a, double b);

/* qsort comparison of uint64_t. */
int bench_cmp_u64(const void *a, const void *b);

/* Percentile p of n sorted nanosecond samples, in microseconds; 0 when n is 0. */
double bench_pct(const uint64_t *v, size_t n, unsigned p);

/* Option value `arg` of `opt`: a whole number from lo to hi in *out. Otherwise prints the one
 * error line and returns -EINVAL; the caller then exits 2. */
int bench_arg_int(const char *opt, const char *arg, int lo, int hi, int *out);

/* ---- children ---- */

/* Start argv (searched in PATH) in its own process group (so that a Ctrl-C reaches only the
 * bench), stdin on /dev/null, stdout on out_fd and stderr on err_fd (-1: /dev/null; 1 or 2
 * keeps ours), SIGPIPE at its default; the child gets SIGTERM when we die. Its pid or -errno.
 * The caller reaps it (bench_reap, bench_kill). */
pid_t bench_spawn(char *const argv[], int out_fd, int err_fd);

/* Wait up to timeout_ms for the child pid to exit; its wait status in *st (left alone if it
 * was reaped already). 0, or -ETIMEDOUT. */
int bench_reap(pid_t pid, int timeout_ms, int *st);

/* Stop the child pid unless it exited: SIGTERM, SIGKILL after timeout_ms. Its wait status in
 * *st as bench_reap; 0 once reaped, -ETIMEDOUT if even SIGKILL did not end it in time. */
int bench_kill(pid_t pid, int timeout_ms, int *st);
/* A child's wait status in words ("exit status 1", "killed by signal 9", "status unknown"
 * for -1) into buf; returns buf. */
const char *bench_status_str(int st, char *buf, size_t cap);
/* Print the last lines (up to 2 KiB) of the file at path, a child's log, to stderr under
 * "kvcache-bench: CMD: the end of WHAT:". Nothing when it cannot be read. */
void bench_log_tail(const char *cmd, const char *what, const char *path);

/* Run argv as bench_spawn, with our stdout and stderr or (quiet) /dev/null, to its end: its
 * exit status (0..255), 128 + signal if killed, or -errno if it could not be started. */
int bench_run(char *const argv[], bool quiet);

/* ---- the machine ---- */

/* Directory of our own binary, or $KVC_BIN_DIR, in out. Prints the error. */
int bench_bin_dir(char *out, size_t cap);

/* Is an executable `prog` in PATH? */
bool bench_in_path(const char *prog);

/* Is dir the mount point of a mount in our namespace? */
bool bench_mounted(const char *dir);

/* A field of a /proc file that the kernel prints in kB (/proc/meminfo, /proc/PID/status), in
 * bytes; -ENOENT if the file has no such field, -errno if it cannot be read. */
int64_t bench_proc_kb(const char *path, const char *field);

/* A field of /proc/meminfo ("MemAvailable") in bytes, 0 if unknown. */
uint64_t bench_meminfo(const char *field);

/* A TCP port on 127.0.0.1 that was free a moment ago, or -errno. */
int bench_free_port(void);

/* --tcp-congestion of benchmark cmd: name (NULL: not given) checked, with a message on
 * stderr when this host refuses it (0 or the -errno of xfer_tcp_congestion_check); the
 * system's congestion control into system (cap bytes, "?" when it cannot be read). */
int bench_congestion(const char *cmd, const char *name, char *system, size_t cap);

/* ---- plots (--plot FILE.png) ---- */

/*
 * A figure of one run, drawn by gnuplot (Debian package gnuplot-nox) into a PNG: a title
 * naming the command, the machine (hostname, CPUs we may run on) and the date, over a grid of
 * panels (two columns once there is more than one). A panel is grouped bars: one group per
 * row (a block size, say) on the x axis, one bar per series (kvcachefs and its baselines, or
 * their ratios) with its value written above it, and up to BENCH_PLOT_MAX_LINES horizontal
 * dashed lines across it (a target, or 1.0 for "as fast"), each in the legend.
 *
 * Built in memory, one panel after the other: bench_plot_panel starts a panel, the rows and
 * lines that follow go to it. Nothing touches the disk before bench_plot_write. The building
 * calls return nothing: an error (out of memory, too many panels, rows, series or lines) is
 * kept in the plot and reported by bench_plot_write, so that a command adds its figures
 * without a check after each, as with stdio's ferror. A NULL plot (bench_plot_begin out of
 * memory) is taken by every call and reported the same way.
 */
#define BENCH_PLOT_MAX_PANELS 8
#define BENCH_PLOT_MAX_SERIES 12
#define BENCH_PLOT_MAX_ROWS   16
#define BENCH_PLOT_MAX_LINES  4

struct bench_plot;

/* Is `path` a file we may write the plot to, and is gnuplot in PATH? Run before measuring,
 * so that a run of minutes does not end in a plot that cannot be drawn. Creates nothing that
 * stays (a file made to try is removed; an existing one is left as it is). Prints the error
 * ("--plot PATH: reason", or gnuplot missing with its Debian package); 0 or -errno. */
int bench_plot_check(const char *path);

/* A new plot of `kvcache-bench command`, with a second title line (printf format), which
 * should say what was compared and whether the targets were met. The caller frees it with
 * bench_plot_free. NULL when out of memory (see above). */
struct bench_plot *bench_plot_begin(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Start a panel: its title, the x axis label (what the rows are), the y axis label (with the
 * unit), and its series, a NULL-terminated list of at most BENCH_PLOT_MAX_SERIES names. */
void bench_plot_panel(struct bench_plot *p, const char *title, const char *xlabel,
		      const char *ylabel, const char *const *series);

/* A row of the current panel: its label on the x axis and one value per series. A value of 0
 * or less, or NaN, was not measured: no bar, "n/a" in its place. */
void bench_plot_row(struct bench_plot *p, const char *label, const double *values);

/* A horizontal line across the current panel at `value`, with its legend `label` (say
 * "target >= 0.80"): in the colour of series `series` when it is that series' target, black
 * when series is -1. */
void bench_plot_line(struct bench_plot *p, int series, double value, const char *label);

/* Draw the plot into `path` (a PNG, pngcairo terminal where gnuplot has it, else png): the
 * script and the data go to a temporary directory (in $TMPDIR, default /tmp) that is removed
 * afterwards, whatever happens; gnuplot runs in its own process group and its messages are
 * shown only when it fails. `path` is written only once gnuplot made a PNG, so a failed run
 * leaves an older plot as it was. Flushes stdout first (the figures come before any error).
 * Prints the error, naming gnuplot and its Debian package where it is missing, and returns
 * -errno (-EINTR once `stop` is set); 0 when the plot was written. */
int bench_plot_write(struct bench_plot *p, const char *path);

/* Free a plot (NULL is fine). */
void bench_plot_free(struct bench_plot *p);

#endif
