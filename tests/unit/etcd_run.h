/*
 * etcd_run.h: a real etcd for the unit tests of meta/etcd.c and meta/members.c, plus a TCP
 * proxy that can cut a client off from it.
 *
 * etcd_proc_start() runs `etcd` (single member) on two free loopback ports with its data
 * under a new directory in /tmp, and waits until /health answers. The process can be
 * paused (SIGSTOP/SIGCONT), killed and restarted on the same directory and ports. Every
 * etcd started is killed and its directory removed at exit, also when the test dies of a
 * signal (SIGINT, SIGTERM, SIGABRT, SIGHUP); only in the process that started it, so a
 * forked child that exits leaves it alone. A test killed outright (SIGKILL from a
 * timeout, a sanitizer's exit) runs no handler: etcd gets PR_SET_PDEATHSIG, and a watchdog
 * process, told every etcd pid through a socket, kills etcd and removes the directory when
 * the test's end of it is closed.
 *
 * The proxy listens on its own loopback port and relays to etcd's; proxy_set_down() closes
 * every relayed connection and the listening socket (connects are refused), and up binds the
 * same port again.
 *
 * Test-only code: one static registry of etcd processes, for the exit handlers.
 */
#ifndef KVC_TESTS_ETCD_RUN_H
#define KVC_TESTS_ETCD_RUN_H

#include "meta/etcd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct etcd_proc {
	pid_t pid; /* 0: not running */
	pid_t owner;
	pid_t watchdog;	 /* cleans up after a test killed outright */
	int watchdog_fd; /* our end of its socket: etcd pids go there */
	char dir[64];	 /* mkdtemp'd: data/ and etcd.log inside */
	int cport, pport;
	char url[64]; /* http://127.0.0.1:cport */
};

#define ETCD_RUN_MAX 4
static struct etcd_proc *etcd_run_all[ETCD_RUN_MAX];

static inline uint64_t etcd_run_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void etcd_run_sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The path of the etcd binary ($KVC_ETCD if set, else /usr/bin/etcd or one in $PATH), or
 * NULL when there is none. */
static inline const char *etcd_run_binary(void)
{
	static char path[512];
	const char *env = getenv("PATH"), *own = getenv("KVC_ETCD");
	char *dirs, *d, *save;

	if (own)
		return access(own, X_OK) == 0 ? own : NULL;
	if (access("/usr/bin/etcd", X_OK) == 0)
		return "/usr/bin/etcd";
	if (!env)
		return NULL;
	dirs = strdup(env);
	for (d = dirs ? strtok_r(dirs, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
		snprintf(path, sizeof(path), "%s/etcd", d);
		if (access(path, X_OK) == 0) {
			free(dirs);
			return path;
		}
	}
	free(dirs);
	return NULL;
}

/* A loopback port nobody listens on right now. */
static inline int etcd_run_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* GET /health: true when etcd says {"health":"true"}. */
static inline bool etcd_run_healthy(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	static const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
	char buf[1024];
	size_t got = 0;
	ssize_t r;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {1, 0};
	bool ok = false;

	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1) {
		while (got < sizeof(buf) - 1 &&
		       (r = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
			got += (size_t)r;
		buf[got] = '\0';
		ok = strstr(buf, "\"health\":\"true\"") != NULL;
	}
	close(fd);
	return ok;
}

static inline int etcd_run_rm(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	remove(path);
	return 0;
}

static inline void etcd_run_kill(struct etcd_proc *p)
{
	if (p->pid > 0) {
		kill(p->pid, SIGCONT); /* a stopped process dies of SIGKILL too, but reap it soon */
		kill(p->pid, SIGKILL);
		while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
			;
		p->pid = 0;
	}
}

static void etcd_run_atexit(void)
{
	for (int i = 0; i < ETCD_RUN_MAX; i++) {
		struct etcd_proc *p = etcd_run_all[i];

		if (!p || p->owner != getpid())
			continue;
		etcd_run_kill(p);
		if (p->dir[0])
			nftw(p->dir, etcd_run_rm, 16, FTW_DEPTH | FTW_PHYS);
		p->dir[0] = '\0';
		etcd_run_all[i] = NULL;
	}
}

static void etcd_run_on_signal(int sig)
{
	/* only async-signal-safe calls: kill the servers, let `rm -rf` remove the data */
	for (int i = 0; i < ETCD_RUN_MAX; i++) {
		struct etcd_proc *p = etcd_run_all[i];
		pid_t rm = -1;

		if (!p || p->owner != getpid())
			continue;
		if (p->pid > 0)
			kill(p->pid, SIGKILL);
		if (p->dir[0] && (rm = fork()) == 0) {
			execl("/bin/rm", "rm", "-rf", p->dir, (char *)NULL);
			_exit(127);
		} else if (rm > 0) {
			waitpid(rm, NULL, 0);
		}
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static inline void etcd_run_register(struct etcd_proc *p)
{
	static bool handlers;

	if (!handlers) {
		/* not SIGSEGV/SIGBUS: the sanitizers report those */
		int sigs[] = {SIGINT, SIGTERM, SIGABRT, SIGHUP};

		atexit(etcd_run_atexit);
		for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			signal(sigs[i], etcd_run_on_signal);
		handlers = true;
	}
	for (int i = 0; i < ETCD_RUN_MAX; i++)
		if (etcd_run_all[i] == p)
			return;
	for (int i = 0; i < ETCD_RUN_MAX; i++)
		if (!etcd_run_all[i]) {
			etcd_run_all[i] = p;
			return;
		}
}

/* The watchdog: waits for EOF on its socket, then kills the last etcd and removes dir. */
static inline int etcd_run_watchdog(struct etcd_proc *p)
{
	int fds[2];
	pid_t pid;

	/* a socket pair, not a pipe: send(MSG_NOSIGNAL) cannot SIGPIPE the test */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -errno;
	}
	if (pid == 0) {
		pid_t etcd = 0, got;
		int null = open("/dev/null", O_RDWR);

		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		close(fds[1]);
		while (read(fds[0], &got, sizeof(got)) == (ssize_t)sizeof(got))
			etcd = got;
		if (etcd > 0)
			kill(etcd, SIGKILL);
		etcd_run_sleep_ms(100);
		nftw(p->dir, etcd_run_rm, 16, FTW_DEPTH | FTW_PHYS);
		_exit(0);
	}
	close(fds[0]);
	p->watchdog = pid;
	p->watchdog_fd = fds[1];
	return 0;
}

static inline void etcd_run_tell_watchdog(struct etcd_proc *p, pid_t pid)
{
	if (p->watchdog_fd > 0 &&
	    send(p->watchdog_fd, &pid, sizeof(pid), MSG_NOSIGNAL) != sizeof(pid))
		fprintf(stderr, "etcd_run: watchdog: %s\n", strerror(errno));
}

/* Spawn etcd on p's directory and ports and wait for /health (10 s). Returns 0, -EADDRINUSE
 * (or another errno) when it exited or never became healthy. */
static inline int etcd_run_spawn(struct etcd_proc *p)
{
	char data[96], log[96], curl[64], purl[64], cluster[96];
	const char *bin = etcd_run_binary();
	uint64_t deadline;
	pid_t pid;

	if (!bin)
		return -ENOENT;
	snprintf(data, sizeof(data), "%s/data", p->dir);
	snprintf(log, sizeof(log), "%s/etcd.log", p->dir);
	snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", p->cport);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", p->pport);
	snprintf(cluster, sizeof(cluster), "t=%s", purl);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* dies with the test, even one killed by a timeout or a sanitizer */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != p->owner)
			_exit(1);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(bin, "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", curl,
		      "--advertise-client-urls", curl, "--listen-peer-urls", purl,
		      "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster,
		      "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	p->pid = pid;
	etcd_run_tell_watchdog(p, pid);
	snprintf(p->url, sizeof(p->url), "%s", curl);
	deadline = etcd_run_ms() + 10000;
	while (etcd_run_ms() < deadline) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			p->pid = 0;
			return -EADDRINUSE;
		}
		if (etcd_run_healthy(p->cport))
			return 0;
		etcd_run_sleep_ms(50);
	}
	etcd_run_kill(p);
	return -ETIMEDOUT;
}

/* Start a new etcd in a new directory on free ports. -ENOENT: etcd is not installed. */
static inline int etcd_proc_start(struct etcd_proc *p)
{
	int rc = -EADDRINUSE;

	memset(p, 0, sizeof(*p));
	if (!etcd_run_binary())
		return -ENOENT;
	snprintf(p->dir, sizeof(p->dir), "/tmp/kvc-etcd.XXXXXX");
	if (!mkdtemp(p->dir))
		return -errno;
	p->owner = getpid();
	etcd_run_register(p);
	if (etcd_run_watchdog(p))
		fprintf(stderr, "etcd_run: no watchdog: %s\n", strerror(errno));
	for (int tries = 0; tries < 5 && rc; tries++) {
		p->cport = etcd_run_free_port();
		p->pport = etcd_run_free_port();
		if (p->cport < 0 || p->pport < 0 || p->cport == p->pport)
			continue;
		rc = etcd_run_spawn(p);
	}
	return rc;
}

/* Kill etcd (SIGKILL: no clean shutdown), keeping its data. */
static inline void etcd_proc_kill(struct etcd_proc *p)
{
	etcd_run_kill(p);
}

/* Start etcd again on the same data and ports (after etcd_proc_kill). */
static inline int etcd_proc_restart(struct etcd_proc *p)
{
	int rc = -EADDRINUSE;

	for (int tries = 0; tries < 20 && rc; tries++) {
		rc = etcd_run_spawn(p);
		if (rc)
			etcd_run_sleep_ms(200);
	}
	return rc;
}

static inline void etcd_proc_pause(struct etcd_proc *p)
{
	kill(p->pid, SIGSTOP);
}

static inline void etcd_proc_resume(struct etcd_proc *p)
{
	kill(p->pid, SIGCONT);
}

/* Kill etcd and remove its directory. */
static inline void etcd_proc_stop(struct etcd_proc *p)
{
	etcd_run_kill(p);
	if (p->dir[0])
		nftw(p->dir, etcd_run_rm, 16, FTW_DEPTH | FTW_PHYS);
	p->dir[0] = '\0';
	if (p->watchdog > 0) {
		close(p->watchdog_fd);
		waitpid(p->watchdog, NULL, 0);
		p->watchdog = 0;
		p->watchdog_fd = 0;
	}
	for (int i = 0; i < ETCD_RUN_MAX; i++)
		if (etcd_run_all[i] == p)
			etcd_run_all[i] = NULL;
}

/* The start of a test program: etcd running and a client *cl to it. 0 when ready; 1 when
 * etcd is not installed (a SKIP line is printed: exit 0); -1 on a failure (printed: exit 1). */
static inline int etcd_run_test_start(struct etcd_proc *p, struct etcd **cl)
{
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = etcd_proc_start(p);
	if (rc == -ENOENT) {
		printf("SKIP: etcd is not installed (apt-get install etcd-server)\n");
		return 1;
	}
	if (rc) {
		fprintf(stderr, "cannot start etcd: %s (log: %s/etcd.log)\n", strerror(-rc),
			p->dir);
		return -1;
	}
	if (etcd_create(cl, p->url, 2000)) {
		etcd_proc_stop(p);
		return -1;
	}
	return 0;
}

/* ---- the proxy ---------------------------------------------------------------------- */

#define PROXY_MAX_CONNS 32

struct tcp_proxy {
	int port, target;
	char url[64];
	pthread_t thread;
	pthread_mutex_t mu; /* guards lfd, fds, down; the thread holds it while relaying */
	int lfd;
	int fds[PROXY_MAX_CONNS][2]; /* client side, etcd side; -1 when free */
	bool down;
	atomic_bool stop;
};

static inline int proxy_listen(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static inline void proxy_close_all(struct tcp_proxy *p)
{
	for (int i = 0; i < PROXY_MAX_CONNS; i++) {
		if (p->fds[i][0] >= 0) {
			close(p->fds[i][0]);
			close(p->fds[i][1]);
			p->fds[i][0] = p->fds[i][1] = -1;
		}
	}
}

static void *proxy_main(void *arg)
{
	struct tcp_proxy *p = arg;
	char buf[65536];

	while (!atomic_load(&p->stop)) {
		struct pollfd pf[1 + 2 * PROXY_MAX_CONNS];
		int map[1 + 2 * PROXY_MAX_CONNS], n = 0;

		pthread_mutex_lock(&p->mu);
		if (p->lfd >= 0) {
			pf[n] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
			map[n++] = -1;
		}
		for (int i = 0; i < PROXY_MAX_CONNS; i++)
			for (int s = 0; s < 2 && p->fds[i][0] >= 0; s++) {
				pf[n] = (struct pollfd){.fd = p->fds[i][s], .events = POLLIN};
				map[n++] = 2 * i + s;
			}
		pthread_mutex_unlock(&p->mu);
		if (poll(pf, (nfds_t)n, 20) <= 0)
			continue;
		pthread_mutex_lock(&p->mu);
		for (int k = 0; k < n; k++) {
			if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (map[k] < 0) {
				struct sockaddr_in a = {.sin_family = AF_INET,
							.sin_port = htons((uint16_t)p->target),
							.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
				int cfd, tfd, slot = -1;

				if (p->lfd != pf[k].fd)
					continue; /* went down meanwhile */
				cfd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
				if (cfd < 0)
					continue;
				tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
				for (int i = 0; i < PROXY_MAX_CONNS && slot < 0; i++)
					if (p->fds[i][0] < 0)
						slot = i;
				if (tfd < 0 || slot < 0 ||
				    connect(tfd, (struct sockaddr *)&a, sizeof(a)) < 0) {
					close(cfd);
					if (tfd >= 0)
						close(tfd);
					continue;
				}
				p->fds[slot][0] = cfd;
				p->fds[slot][1] = tfd;
			} else {
				int i = map[k] / 2, s = map[k] % 2;
				ssize_t r;

				if (p->fds[i][s] != pf[k].fd)
					continue; /* closed meanwhile */
				r = read(p->fds[i][s], buf, sizeof(buf));
				for (ssize_t off = 0, w; r > 0 && off < r; off += w) {
					w = write(p->fds[i][!s], buf + off, (size_t)(r - off));
					if (w <= 0) {
						r = -1;
						break;
					}
				}
				if (r <= 0) {
					close(p->fds[i][0]);
					close(p->fds[i][1]);
					p->fds[i][0] = p->fds[i][1] = -1;
				}
			}
		}
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

static inline int proxy_start(struct tcp_proxy *p, int target_port)
{
	memset(p, 0, sizeof(*p));
	for (int i = 0; i < PROXY_MAX_CONNS; i++)
		p->fds[i][0] = p->fds[i][1] = -1;
	p->target = target_port;
	p->lfd = -1;
	for (int tries = 0; tries < 10 && p->lfd < 0; tries++) {
		p->port = etcd_run_free_port();
		p->lfd = proxy_listen(p->port);
	}
	if (p->lfd < 0)
		return -EADDRINUSE;
	snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", p->port);
	pthread_mutex_init(&p->mu, NULL);
	if (pthread_create(&p->thread, NULL, proxy_main, p)) {
		close(p->lfd);
		pthread_mutex_destroy(&p->mu);
		return -EAGAIN;
	}
	return 0;
}

/* down: cut every relayed connection and refuse new ones; up: listen again. */
static inline int proxy_set_down(struct tcp_proxy *p, bool down)
{
	int rc = 0;

	pthread_mutex_lock(&p->mu);
	if (down && !p->down) {
		proxy_close_all(p);
		close(p->lfd);
		p->lfd = -1;
	} else if (!down && p->down) {
		for (int tries = 0; tries < 50 && p->lfd < 0; tries++) {
			p->lfd = proxy_listen(p->port);
			if (p->lfd < 0)
				etcd_run_sleep_ms(20);
		}
		rc = p->lfd < 0 ? -EADDRINUSE : 0;
	}
	p->down = down;
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static inline void proxy_stop(struct tcp_proxy *p)
{
	atomic_store(&p->stop, true);
	pthread_join(p->thread, NULL);
	proxy_close_all(p);
	if (p->lfd >= 0)
		close(p->lfd);
	pthread_mutex_destroy(&p->mu);
}

#endif
