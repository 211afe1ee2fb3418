/*
 * metrics: the Prometheus endpoint of the daemon (see metrics.h).
 *
 * The daemon binds the listening socket itself (so that a port in use is a precise start-up
 * error) and hands it to libmicrohttpd, which runs one internal thread that accepts, parses
 * and answers; this file only decides what each request gets. A scrape renders the whole
 * page into one malloc'd buffer from the modules' status functions and hands it to the
 * library, which frees it once sent: nothing is cached between scrapes, nothing here holds a
 * lock of the daemon across a call.
 *
 * The families (all prefixed kvcachefs_; "_total" ones are counters since the daemon started):
 *   info{version,mountpoint,cluster,node}         1
 *   start_time_seconds                            Unix time the daemon started
 *   capacity_bytes{tier="dram"|"ssd"}             block storage of each tier
 *   used_bytes{tier}                              of which allocated
 *   blocks{tier}                                  blocks with their bytes in that tier
 *   blocks_writing, directories                   blocks being written; directories
 *   pool_size_bytes, max_block_size_bytes, ssd_devices, evict_watermark_ratio{level}
 *   reads_total{path}, read_bytes_total{path}     path="file": FUSE read requests;
 *   writes_total{path}, write_bytes_total{path}     "side": blocks pinned/located (reads),
 *                                                 reservations committed (writes); "remote":
 *                                                 blocks fetched from other nodes (reads),
 *                                                 replicas of their blocks made here (writes)
 *   hits_total, misses_total                      opens of sealed blocks; names not found
 *   evictions_total, demotions_total, promotions_total, ssd_evictions_total, enospc_total
 *   side_pins, side_reservations                  live side-channel slots
 *   side_lookups_total                            side-channel batch lookups
 *   recovered_blocks, recovery_dropped_records, recovery_duration_seconds (the start's)
 *   cluster_members                               members known (1 on a single node)
 *   request_duration_seconds{op="lookup"|"read"|"write"}   histogram of FUSE requests
 * and in cluster mode only:
 *   etcd_connected                                1, or 0 while etcd is unreachable
 *   cluster_capacity_bytes, cluster_used_bytes    all members' pools
 *   transfer_bytes_total{transport="tcp"|"rdma",direction="read"|"write"}
 *   transfer_failures_total{transport}            slices that failed on a path
 *   transfer_served_bytes_total{transport="tcp"}  bytes peers moved from/to this node's pool
 *   peer_transfer_bytes_total{peer,direction}     per peer node id (16 hex digits)
 *   peer_transfer_failures_total{peer}, peer_transfer_retries_total{peer}
 *   peer_transfer_transport{peer,transport}       1 for a transport with a live path
 */
#include "fs/metrics.h"
#include "engine/xfer.h"
#include "fs/cluster.h"
#include "fs/log.h"
#include "fs/ops.h"
#include "fs/side.h"
#include "fs/uapi/kvcachefs.h"
#include "meta/namespace.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct metrics {
	struct metrics_config cfg;
	struct MHD_Daemon *httpd;
	_Atomic int state; /* enum metrics_state */
};

/* ---- histograms ------------------------------------------------------------------------- */

static const uint64_t hist_bound_ns[METRICS_HIST_BOUNDS] = {
    10000,     25000,	   50000,      100000,	   250000,	500000,	   1000000,
    2500000,   5000000,	   10000000,   25000000,   50000000,	100000000, 250000000,
    500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
/* The same bounds in seconds, as Prometheus' own clients print them. */
static const char *const hist_le[METRICS_HIST_BOUNDS] = {
    "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05",	"0.1",	 "0.25",   "0.5",     "1",	"2.5",	 "5",	   "10",
};

void metrics_observe(struct metrics_hist *h, uint64_t ns)
{
	unsigned k = 0;

	while (k < METRICS_HIST_BOUNDS && ns > hist_bound_ns[k])
		k++;
	atomic_fetch_add_explicit(&h->bucket[k], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

/* ---- the text format ------------------------------------------------------------------ */

/* A growing text buffer; after a failed allocation it stays failed (oom) and drops output. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static bool sb_reserve(struct sbuf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 16384;
	char *p;

	if (b->oom)
		return false;
	if (b->len + more + 1 <= b->cap)
		return true;
	while (cap < b->len + more + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !sb_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static void sb_putc(struct sbuf *b, char c)
{
	if (sb_reserve(b, 1)) {
		b->p[b->len++] = c;
		b->p[b->len] = '\0';
	}
}

/* A label value: backslash, double quote and newline escaped (exposition format 0.0.4). */
static void sb_label_value(struct sbuf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"') {
			sb_putc(b, '\\');
			sb_putc(b, *v);
		} else if (*v == '\n') {
			sb_putc(b, '\\');
			sb_putc(b, 'n');
		} else {
			sb_putc(b, *v);
		}
	}
}

/* # HELP and # TYPE of a family (help holds no backslash or newline). */
static void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP kvcachefs_%s %s\n# TYPE kvcachefs_%s %s\n", name, help, name, type);
}

/* kvcachefs_<name>{k="v",...} then the value: the labels are the NULL-terminated key, value
 * pairs of ap. */
static void sample_head(struct sbuf *b, const char *name, va_list ap)
{
	const char *k;
	bool first = true;

	sb_printf(b, "kvcachefs_%s", name);
	while ((k = va_arg(ap, const char *))) {
		const char *v = va_arg(ap, const char *);

		sb_printf(b, "%s%s=\"", first ? "{" : ",", k);
		sb_label_value(b, v);
		sb_putc(b, '"');
		first = false;
	}
	if (!first)
		sb_putc(b, '}');
}

/* One sample with an integer value; labels: key, value, ..., NULL. */
static void sample(struct sbuf *b, const char *name, uint64_t v, ...)
{
	va_list ap;

	va_start(ap, v);
	sample_head(b, name, ap);
	va_end(ap);
	sb_printf(b, " %" PRIu64 "\n", v);
}

/* One sample with a value in seconds (from nanoseconds); labels as sample(). */
static void sample_s(struct sbuf *b, const char *name, uint64_t ns, ...)
{
	va_list ap;

	va_start(ap, ns);
	sample_head(b, name, ap);
	va_end(ap);
	sb_printf(b, " %" PRIu64 ".%09" PRIu64 "\n", ns / 1000000000u, ns % 1000000000u);
}

/* A single unlabelled sample with its family. */
static void single(struct sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
	family(b, name, type, help);
	sample(b, name, v, NULL);
}

/* The histogram of one op: buckets made cumulative here, _count their total, so a scrape is
 * always consistent (+Inf == _count) even while requests are being added. */
static void histogram(struct sbuf *b, const char *op, struct metrics_hist *h)
{
	uint64_t cum = 0;

	for (unsigned k = 0; k <= METRICS_HIST_BOUNDS; k++) {
		cum += atomic_load_explicit(&h->bucket[k], memory_order_relaxed);
		sample(b, "request_duration_seconds_bucket", cum, "op", op, "le",
		       k < METRICS_HIST_BOUNDS ? hist_le[k] : "+Inf", NULL);
	}
	sample_s(b, "request_duration_seconds_sum",
		 atomic_load_explicit(&h->sum_ns, memory_order_relaxed), "op", op, NULL);
	sample(b, "request_duration_seconds_count", cum, "op", op, NULL);
}

/* ---- the page ---------------------------------------------------------------------------- */

static void render_pool(struct sbuf *b, const struct kvcachefs_status *st,
			const struct kvcachefs_tiers *t)
{
	family(b, "capacity_bytes", "gauge", "Bytes of block storage of each tier.");
	sample(b, "capacity_bytes", t->dram_capacity, "tier", "dram", NULL);
	sample(b, "capacity_bytes", t->ssd_capacity, "tier", "ssd", NULL);
	family(b, "used_bytes", "gauge", "Bytes of each tier allocated to blocks.");
	sample(b, "used_bytes", t->dram_used, "tier", "dram", NULL);
	sample(b, "used_bytes", t->ssd_used, "tier", "ssd", NULL);
	family(b, "blocks", "gauge",
	       "Sealed blocks with their bytes in each tier (a block demoted to SSD and read back "
	       "is in both).");
	sample(b, "blocks", t->dram_blocks, "tier", "dram", NULL);
	sample(b, "blocks", t->ssd_blocks, "tier", "ssd", NULL);
	single(b, "blocks_writing", "gauge", "Blocks being written (not sealed yet).", st->writing);
	single(b, "directories", "gauge", "Directories (the root excluded).", st->directories);
	single(b, "pool_size_bytes", "gauge", "Size of the DRAM pool object, headers included.",
	       st->pool_size);
	single(b, "max_block_size_bytes", "gauge", "Largest block accepted (--max-block-size).",
	       st->max_block_size);
	single(b, "ssd_devices", "gauge", "SSD tier devices in use (--ssd).", t->ssd_devices);
	family(b, "evict_watermark_ratio", "gauge",
	       "DRAM usage that starts eviction (high) and that eviction brings it back to (low).");
	sb_printf(b, "kvcachefs_evict_watermark_ratio{level=\"high\"} %u.%02u\n",
		  st->evict_high_pct / 100, st->evict_high_pct % 100);
	sb_printf(b, "kvcachefs_evict_watermark_ratio{level=\"low\"} %u.%02u\n",
		  st->evict_low_pct / 100, st->evict_low_pct % 100);
}

static void render_paths(struct sbuf *b, const struct kvcachefs_status *st,
			 const struct side_stats *ss, const struct ns_remote_stats *rs)
{
	family(b, "reads_total", "counter",
	       "Reads by path: FUSE read requests (file), blocks pinned or located through the "
	       "side channel (side), blocks fetched from other nodes into this one (remote).");
	sample(b, "reads_total", st->reads, "path", "file", NULL);
	sample(b, "reads_total", ss->loads, "path", "side", NULL);
	sample(b, "reads_total", rs->fetched, "path", "remote", NULL);
	family(b, "read_bytes_total", "counter", "Payload bytes of the reads, by path.");
	sample(b, "read_bytes_total", st->bytes_read, "path", "file", NULL);
	sample(b, "read_bytes_total", ss->load_bytes, "path", "side", NULL);
	sample(b, "read_bytes_total", rs->fetched_bytes, "path", "remote", NULL);
	family(b, "writes_total", "counter",
	       "Writes by path: FUSE write requests (file), reservations committed through the "
	       "side channel (side), replicas of other nodes' blocks made here (remote).");
	sample(b, "writes_total", st->writes, "path", "file", NULL);
	sample(b, "writes_total", ss->commits, "path", "side", NULL);
	sample(b, "writes_total", rs->replicas, "path", "remote", NULL);
	family(b, "write_bytes_total", "counter", "Payload bytes of the writes, by path.");
	sample(b, "write_bytes_total", st->bytes_written, "path", "file", NULL);
	sample(b, "write_bytes_total", ss->commit_bytes, "path", "side", NULL);
	sample(b, "write_bytes_total", rs->replica_bytes, "path", "remote", NULL);
}

static void render_activity(struct sbuf *b, const struct kvcachefs_status *st,
			    const struct kvcachefs_tiers *t, const struct side_stats *ss)
{
	single(b, "hits_total", "counter",
	       "Sealed blocks opened for reading: FUSE opens, side-channel pins and locates.",
	       st->hits);
	single(b, "misses_total", "counter", "Lookups of a name that does not exist.", st->misses);
	single(b, "evictions_total", "counter",
	       "Blocks evicted from DRAM to stay under the watermarks (demoted or dropped).",
	       st->evictions);
	single(b, "demotions_total", "counter", "Blocks copied from DRAM to SSD by eviction.",
	       t->demotions);
	single(b, "promotions_total", "counter", "Blocks copied from SSD back to DRAM to be read.",
	       t->promotions);
	single(b, "ssd_evictions_total", "counter", "SSD copies dropped to make room.",
	       t->ssd_evictions);
	single(b, "enospc_total", "counter", "Writes refused for lack of space.", st->enospc);
	single(b, "side_pins", "gauge", "Live side-channel pins.", ss->pins);
	single(b, "side_reservations", "gauge", "Live side-channel reservations.",
	       ss->reservations);
	single(b, "side_lookups_total", "counter",
	       "Side-channel batch longest-prefix lookups (LOOKUP requests).", ss->lookups);
	single(b, "recovered_blocks", "gauge",
	       "Blocks the daemon recovered at start from the pool and SSD files.", t->recovered);
	single(b, "recovery_dropped_records", "gauge",
	       "Records found at start that did not check out and were dropped.",
	       t->recovery_dropped);
	family(b, "recovery_duration_seconds", "gauge", "How long the recovery at start took.");
	sample_s(b, "recovery_duration_seconds", t->recovery_ns, NULL);
}

/* Per-peer figures, with the peers of one node id (a node that moved) summed. */
static size_t merge_peers(struct xfer_peer_info *p, size_t n)
{
	size_t m = 0;

	for (size_t k = 0; k < n; k++) {
		size_t j = 0;

		while (j < m && p[j].node_id != p[k].node_id)
			j++;
		if (j == m) {
			p[m++] = p[k];
			continue;
		}
		p[j].transports |= p[k].transports;
		p[j].paths += p[k].paths;
		p[j].bytes_read += p[k].bytes_read;
		p[j].bytes_written += p[k].bytes_written;
		p[j].failures += p[k].failures;
		p[j].retries += p[k].retries;
	}
	return m;
}

#define PEERS_MAX 256

static void render_transfers(struct sbuf *b, struct cluster *c)
{
	const struct xfer_counters *xc = cluster_xfer_counters(c);
	static const char *const tname[2] = {"tcp", "rdma"};
	struct xfer_peer_info *peers = calloc(PEERS_MAX, sizeof(*peers));
	size_t n = 0;

	family(b, "transfer_bytes_total", "counter",
	       "Bytes this node moved with transfers it initiated, by transport and direction "
	       "(read: from other nodes; write: to them).");
	for (unsigned t = 0; t < 2; t++) {
		sample(b, "transfer_bytes_total", atomic_load(&xc->read_bytes[t]), "transport",
		       tname[t], "direction", "read", NULL);
		sample(b, "transfer_bytes_total", atomic_load(&xc->written_bytes[t]), "transport",
		       tname[t], "direction", "write", NULL);
	}
	family(b, "transfer_failures_total", "counter",
	       "Transfer slices that failed on a path of the transport (then retried on another "
	       "path, or failed).");
	for (unsigned t = 0; t < 2; t++)
		sample(b, "transfer_failures_total", atomic_load(&xc->path_failures[t]),
		       "transport", tname[t], NULL);
	family(b, "transfer_served_bytes_total", "counter",
	       "Bytes of this node's pool that other nodes read or wrote over TCP (RDMA is "
	       "one-sided: not seen here).");
	sample(b, "transfer_served_bytes_total", atomic_load(&xc->served_bytes), "transport", "tcp",
	       NULL);

	if (peers) {
		n = cluster_xfer_peers(c, peers, PEERS_MAX);
		n = merge_peers(peers, n < PEERS_MAX ? n : PEERS_MAX);
	}
	family(b, "peer_transfer_bytes_total", "counter",
	       "Bytes moved with each peer (node id) by transfers this node initiated.");
	for (size_t k = 0; k < n; k++) {
		char id[17];

		snprintf(id, sizeof(id), "%016" PRIx64, peers[k].node_id);
		sample(b, "peer_transfer_bytes_total", peers[k].bytes_read, "peer", id, "direction",
		       "read", NULL);
		sample(b, "peer_transfer_bytes_total", peers[k].bytes_written, "peer", id,
		       "direction", "write", NULL);
	}
	family(b, "peer_transfer_failures_total", "counter",
	       "Transfer requests to each peer that failed (every path tried, or refused by it).");
	for (size_t k = 0; k < n; k++) {
		char id[17];

		snprintf(id, sizeof(id), "%016" PRIx64, peers[k].node_id);
		sample(b, "peer_transfer_failures_total", peers[k].failures, "peer", id, NULL);
	}
	family(b, "peer_transfer_retries_total", "counter",
	       "Transfer slices to each peer retried on another path.");
	for (size_t k = 0; k < n; k++) {
		char id[17];

		snprintf(id, sizeof(id), "%016" PRIx64, peers[k].node_id);
		sample(b, "peer_transfer_retries_total", peers[k].retries, "peer", id, NULL);
	}
	family(b, "peer_transfer_transport", "gauge",
	       "1 for each transport with a live path to the peer (TCP connections, an RDMA "
	       "queue-pair path).");
	for (size_t k = 0; k < n; k++) {
		char id[17];

		snprintf(id, sizeof(id), "%016" PRIx64, peers[k].node_id);
		for (unsigned t = 0; t < 2; t++)
			sample(b, "peer_transfer_transport",
			       (peers[k].transports & (t ? XFER_RDMA : XFER_TCP)) ? 1 : 0, "peer",
			       id, "transport", tname[t], NULL);
	}
	free(peers);
}

int metrics_render(const struct metrics_config *cfg, char **out, size_t *len)
{
	static const char *const ops[KVC_OP_COUNT] = {"lookup", "read", "write"};
	struct sbuf b = {0};
	struct kvcachefs_status st;
	struct kvcachefs_tiers t;
	struct side_stats ss = {0};
	struct ns_remote_stats rs;
	struct kvcachefs_nodes *nd = NULL;
	char node[17] = "";

	memset(&st, 0, sizeof(st));
	memset(&t, 0, sizeof(t));
	ns_status(cfg->ns, &st);
	ns_tiers(cfg->ns, &t);
	ns_remote_stats(cfg->ns, &rs);
	if (cfg->side)
		side_stats(cfg->side, &ss);
	if (cfg->cluster) {
		nd = calloc(1, sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		cluster_nodes(cfg->cluster, nd);
		for (uint32_t k = 0; k < nd->count; k++)
			if (nd->node[k].state & KVCACHEFS_NODE_SELF)
				snprintf(node, sizeof(node), "%016" PRIx64,
					 (uint64_t)nd->node[k].node_id);
	}

	family(&b, "info", "gauge",
	       "Constant 1, labelled with the daemon's version, mountpoint, cluster and node id "
	       "(both empty on a single node).");
	sample(&b, "info", 1, "version", KVC_VERSION, "mountpoint",
	       cfg->mountpoint ? cfg->mountpoint : "", "cluster", nd ? nd->cluster : "", "node",
	       node, NULL);
	family(&b, "start_time_seconds", "gauge", "Unix time the daemon started.");
	sample_s(&b, "start_time_seconds", st.start_time_ns, NULL);
	render_pool(&b, &st, &t);
	render_paths(&b, &st, &ss, &rs);
	render_activity(&b, &st, &t, &ss);
	single(&b, "cluster_members", "gauge",
	       "Members of the cluster this daemon knows, itself included (1 on a single node).",
	       nd ? nd->total : 1);
	if (nd) {
		uint64_t cap = 0, used = 0;

		single(
		    &b, "etcd_connected", "gauge",
		    "1 while etcd answers; 0 while it is unreachable (the daemon serves with the "
		    "last known membership).",
		    (nd->flags & KVCACHEFS_NODES_STALE) ? 0 : 1);
		for (uint32_t k = 0; k < nd->count; k++) {
			cap += nd->node[k].pool_size;
			used += nd->node[k].pool_used;
		}
		single(&b, "cluster_capacity_bytes", "gauge",
		       "DRAM block storage of every member known.", cap);
		single(&b, "cluster_used_bytes", "gauge", "Of which allocated to blocks.", used);
		render_transfers(&b, cfg->cluster);
		free(nd);
	}
	family(&b, "request_duration_seconds", "histogram",
	       "Time from the arrival of a FUSE request (lookup, read, write) to its reply.");
	for (unsigned k = 0; k < KVC_OP_COUNT; k++)
		histogram(&b, ops[k], &cfg->fs->lat[k]);

	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *type,
			     char *body, size_t len, bool must_free)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r) {
		if (must_free)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *text)
{
	return reply(conn, code, "text/plain; charset=utf-8", (char *)text, strlen(text), false);
}

static enum MHD_Result health(struct metrics *m, struct MHD_Connection *conn)
{
	struct kvcachefs_nodes *nd;
	bool stale;

	switch (atomic_load(&m->state)) {
	case METRICS_STARTING:
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
	case METRICS_STOPPING:
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping\n");
	default:
		break;
	}
	if (!m->cfg.cluster)
		return reply_text(conn, MHD_HTTP_OK, "ok\n");
	nd = calloc(1, sizeof(*nd));
	if (!nd)
		return MHD_NO;
	cluster_nodes(m->cfg.cluster, nd);
	stale = nd->flags & KVCACHEFS_NODES_STALE;
	free(nd);
	/* 200 either way: see metrics.h for why an etcd outage is not a 503 */
	return reply_text(conn, MHD_HTTP_OK,
			  stale ? "degraded: etcd unreachable, serving with the last known "
				  "membership\n"
				: "ok\n");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_len, void **con_cls)
{
	struct metrics *m = cls;
	bool is_metrics = !strcmp(url, "/metrics"), is_health = !strcmp(url, "/health");
	char *text;
	size_t len;

	(void)version, (void)upload, (void)upload_len, (void)con_cls;
	log_msg(LOG_DEBUG, "metrics endpoint: %s %s", method, url);
	if (!is_metrics && !is_health)
		return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /health\n");
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	if (is_health)
		return health(m, conn);
	if (metrics_render(&m->cfg, &text, &len) < 0)
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
		     true);
}

/* ---- life cycle ----------------------------------------------------------------------- */

int metrics_start(struct metrics **out, const struct metrics_config *cfg, char *err, size_t errlen)
{
	int family = cfg->addr->sa_family, one = 1, fd, ret;
	struct metrics *m;

	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "--metrics %s: %s", cfg->spec, strerror(-ret));
		return ret;
	}
	/* a restart may bind while the previous daemon's connections linger in TIME_WAIT; a
	 * socket still listening there keeps the bind failing (EADDRINUSE) */
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, cfg->addr, cfg->addrlen) < 0 || listen(fd, 64) < 0) {
		ret = -errno;
		close(fd);
		snprintf(err, errlen, "--metrics %s: %s", cfg->spec, strerror(-ret));
		return ret;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->cfg = *cfg;
	m->cfg.addr = NULL; /* not kept */
	atomic_init(&m->state, METRICS_STARTING);
	/* One internal thread (epoll) answers every request: scrapes are rare and each is a
	 * single render. The library owns fd from here on: it closes it at stop, and when it
	 * fails to start (libmicrohttpd 0.9.75). */
	m->httpd = MHD_start_daemon(
	    MHD_USE_AUTO_INTERNAL_THREAD | (family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
	    on_request, m, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
	    MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_END);
	if (!m->httpd) { /* the library has closed fd */
		free(m);
		snprintf(err, errlen, "--metrics %s: cannot start the HTTP server", cfg->spec);
		return -EIO;
	}
	*out = m;
	return 0;
}

void metrics_set_state(struct metrics *m, enum metrics_state st)
{
	if (m)
		atomic_store(&m->state, (int)st);
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->httpd);
	free(m);
}
