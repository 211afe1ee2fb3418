/*
 * bench_util: what the commands of kvcache-bench (bench.c, bench_cluster.c) share: the `stop`
 * flag its signals set, the clock, full reads and writes that give way to `stop`, children
 * started in their own process groups, option values, and small probes of the machine (PATH,
 * mounts, /proc/meminfo, a free loopback port).
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

#endif
