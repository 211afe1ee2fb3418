/*
 * metrics: the daemon's HTTP endpoint for monitoring (--metrics ADDR:PORT), served by
 * libmicrohttpd on its own thread.
 *
 *   GET /metrics  the Prometheus text exposition format, version 0.0.4: every family is
 *                 prefixed kvcachefs_ (see metrics.c for the list), counters end in _total,
 *                 latencies are histograms in seconds.
 *   GET /health   200 "ok\n" while the mount is being served; 503 while the daemon starts
 *                 ("starting\n": the endpoint listens before the mount is ready) and while it
 *                 stops ("stopping\n"). In cluster mode with etcd unreachable the answer is
 *                 200 with the body "degraded: etcd unreachable, serving with the last known
 *                 membership\n": the node goes on serving its pool and the blocks of the
 *                 members it knows (DESIGN.md: etcd being unreachable does not stop reads),
 *                 and a 503 would make every probe-driven supervisor (load balancer,
 *                 Kubernetes, systemd watchdog) restart or drain every node of the cluster at
 *                 once during an etcd outage, which turns a metadata hiccup into a cache
 *                 outage. Alert on kvcachefs_etcd_connected == 0 instead.
 * Other paths are 404; other methods than GET and HEAD on these two paths are 405.
 *
 * The endpoint reads the daemon's state through the modules' status functions (ns_status,
 * ns_tiers, side_stats (side.h), cluster_nodes, the transfer engine's counters) when it is scraped;
 * only the request latency histograms are kept here, filled by fs/ops.c on the hot path with
 * relaxed atomic adds (no lock, no allocation).
 */
#ifndef KVC_FS_METRICS_H
#define KVC_FS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

struct cluster;
struct kvc_fs;
struct ns;
struct side;

/* ---- latency histograms ------------------------------------------------------------------ */

/* Upper bounds of the buckets, 10 us to 10 s (metrics.c lists them), then +Inf. */
#define METRICS_HIST_BOUNDS 19

/* One histogram. bucket[k] counts the observations in (bound[k-1], bound[k]], the last one
 * those above every bound: not cumulative, so an observation is one add. Zero-initialised.
 * fs/ops.c observes a request right after its reply, so that the reply's copy counts: a
 * scrape that follows a request at once may not show it yet. */
struct metrics_hist {
	_Atomic uint64_t bucket[METRICS_HIST_BOUNDS + 1];
	_Atomic uint64_t sum_ns;
};

/* Add one observation of ns nanoseconds: lock-free, any thread. */
void metrics_observe(struct metrics_hist *h, uint64_t ns);

static inline uint64_t metrics_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the endpoint ---------------------------------------------------------------------- */

enum metrics_state {
	METRICS_STARTING = 0, /* /health 503 */
	METRICS_SERVING,      /* /health 200 (or degraded, see above) */
	METRICS_STOPPING,     /* /health 503 */
};

struct metrics_config {
	const struct sockaddr *addr; /* where to listen: AF_INET or AF_INET6, port set */
	socklen_t addrlen;
	const char *spec;	/* the --metrics argument as given, for messages */
	const char *mountpoint; /* for kvcachefs_info */
	struct ns *ns;
	struct side *side;
	struct cluster *cluster; /* NULL on a single node */
	struct kvc_fs *fs;	 /* the latency histograms */
};

struct metrics;

/* Listen on cfg->addr and serve from a thread of the HTTP library, in METRICS_STARTING.
 * Everything cfg points to must outlive metrics_stop. 0, or -errno with the one line to
 * print in err (EADDRINUSE: the port is taken; EADDRNOTAVAIL: not an address of this host;
 * EACCES: a privileged port). */
int metrics_start(struct metrics **out, const struct metrics_config *cfg, char *err, size_t errlen);
/* What /health answers from now on. Any thread. */
void metrics_set_state(struct metrics *m, enum metrics_state st);
/* Stop serving (waits for a request being answered), close the socket, free. NULL: no-op. */
void metrics_stop(struct metrics *m);

/* The /metrics page as it is now: a malloc'd NUL-terminated text in *out (free it), its
 * length in *len. 0 or -ENOMEM. */
int metrics_render(const struct metrics_config *cfg, char **out, size_t *len);

#endif
