/*
 * bench_util: the helpers every command of kvcache-bench uses (see bench_util.h). The only
 * state is `stop`, which the signal handler sets and every loop of the bench reads: a signal
 * never ends the bench by itself, so that what it started is always stopped and removed.
 */
#include "tools/bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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
