/*
 * options: the daemon's command line (see options.h). Pure parsing, no side effects.
 */
#include "fs/options.h"

#include "engine/xfer.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int opt_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	case '\0':
		break;
	default:
		return -EINVAL;
	}
	if (shift) {
		end++;
		if (!strcasecmp(end, "iB") || !strcasecmp(end, "B"))
			end += strlen(end);
	}
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

static int fail(struct kvc_options *o, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(o->err, sizeof(o->err), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_pct(struct kvc_options *o, const char *name, const char *s, unsigned *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 100)
		return fail(o, "%s: expected a percentage from 1 to 100, got '%s'", name, s);
	*out = (unsigned)v;
	return 0;
}

static int parse_size_opt(struct kvc_options *o, const char *name, const char *s, uint64_t *out)
{
	if (opt_parse_size(s, out) < 0)
		return fail(
		    o, "%s: invalid size '%s' (use a number with an optional K, M, G or T suffix)",
		    name, s);
	return 0;
}

/* The max_read=N options of one -o argument (comma-separated): the last one counts, as in
 * libfuse. N is a decimal number of bytes below 2^32, as libfuse parses it ("%u"). */
static int find_max_read(struct kvc_options *o, const char *opt)
{
	static const char key[] = "max_read=";
	const size_t klen = sizeof(key) - 1;

	for (const char *p = opt; p;) {
		const char *end = strchr(p, ','), *v = p + klen;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		unsigned long long n = 0;

		p = end ? end + 1 : NULL;
		if (len < klen || strncmp(v - klen, key, klen))
			continue;
		len -= klen;
		if (len == 0 || len > 10 || strspn(v, "0123456789") < len)
			return fail(o, "-o max_read: expected a number of bytes, got '%.*s'",
				    (int)len, v);
		for (size_t k = 0; k < len; k++)
			n = n * 10 + (unsigned long long)(v[k] - '0');
		if (n > UINT32_MAX)
			return fail(o, "-o max_read: %llu is too large", n);
		o->max_read = (uint32_t)n;
	}
	return 0;
}

static int add_fuse_opt(struct kvc_options *o, const char *opt)
{
	size_t used = strlen(o->fuse_opts);

	if (!*opt)
		return fail(o, "-o: empty option");
	if (find_max_read(o, opt))
		return -EINVAL;
	if (used + strlen(opt) + 2 > sizeof(o->fuse_opts))
		return fail(o, "-o: too many options");
	if (used)
		strcat(o->fuse_opts, ",");
	strcat(o->fuse_opts, opt);
	return 0;
}

static int parse_mode(struct kvc_options *o, const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno || end == s || *end || v > 0777 || (v & 0111))
		return fail(o,
			    "--pool-mode: expected octal permission bits without execute "
			    "(e.g. 0600, 0640), got '%s'",
			    s);
	if (!(v & 0400))
		return fail(o, "--pool-mode: the owner (the daemon) must keep read access");
	o->pool_mode = (unsigned)v;
	return 0;
}

static int parse_group(struct kvc_options *o, const char *s)
{
	struct group *g = getgrnam(s);
	char *end;
	unsigned long v;

	if (g) {
		o->pool_gid = (long)g->gr_gid;
		return 0;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v >= (1ul << 31))
		return fail(o, "--pool-group: no such group '%s'", s);
	o->pool_gid = (long)v;
	return 0;
}

/* Comma-separated http:// or https:// URLs, each with a host. */
static int check_etcd(struct kvc_options *o, const char *s)
{
	const char *p = s;

	if (!*s)
		return fail(o, "--etcd: empty endpoint list");
	while (*p) {
		const char *end = strchr(p, ','), *host;
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len > 7 && !strncmp(p, "http://", 7))
			host = p + 7;
		else if (len > 8 && !strncmp(p, "https://", 8))
			host = p + 8;
		else
			return fail(o, "--etcd: '%.*s' is not an http://HOST:PORT URL", (int)len,
				    p);
		if (host == p + len || *host == '/' || *host == ':')
			return fail(o, "--etcd: '%.*s' has no host", (int)len, p);
		p += len + (end ? 1 : 0);
		if (end && !*p)
			return fail(o, "--etcd: empty endpoint after ','");
	}
	o->etcd = s;
	return 0;
}

/* A cluster name becomes part of etcd keys: keep it to a safe alphabet. */
static int check_cluster(struct kvc_options *o, const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > 64 ||
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		      "0123456789-_.") != len)
		return fail(o, "--cluster: '%s' must be 1 to 64 letters, digits, '-', '_' or '.'",
			    s);
	o->cluster = s;
	return 0;
}

static int parse_node_id(struct kvc_options *o, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-' || v == 0)
		return fail(
		    o, "--node-id: expected a non-zero number (decimal or 0x hex), got '%s'", s);
	o->node_id = v;
	return 0;
}

/* HOST:PORT or [V6]:PORT, port 0..65535. */
static int check_listen(struct kvc_options *o, const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || colon == s)
		return fail(o, "--listen: expected HOST:PORT, got '%s'", s);
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
		return fail(o, "--listen: bad port in '%s'", s);
	o->listen = s;
	return 0;
}

/* A congestion control's name as the kernel spells them (cubic, reno, bbr, dctcp...);
 * whether this host has it is checked at the start (xfer_tcp_congestion_check). */
static int check_congestion(struct kvc_options *o, const char *s)
{
	size_t len = strlen(s);

	if (!len || len >= XFER_TCP_CONGESTION_MAX ||
	    strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len)
		return fail(o,
			    "--tcp-congestion: expected the name of a TCP congestion control "
			    "(e.g. cubic), got '%s'",
			    s);
	o->tcp_congestion = s;
	return 0;
}

/*
 * PATH[:SIZE]. A path may itself hold ':', so the split is at the last ':' only when what
 * follows is a size above 0 ("/a:b/f" and "/x/f:0" are paths); a trailing ':' with nothing
 * after it and a size that overflows are refused as the typos they almost surely are.
 */
static int add_ssd(struct kvc_options *o, const char *s)
{
	const char *colon = strrchr(s, ':');
	size_t len = strlen(s);
	uint64_t size = 0;
	struct kvc_ssd_opt *d;

	if (colon && !colon[1])
		return fail(o, "--ssd: '%s' ends with ':' but gives no SIZE", s);
	if (colon) {
		int r = opt_parse_size(colon + 1, &size);

		if (r == -ERANGE)
			return fail(o, "--ssd: size '%s' is too large", colon + 1);
		if (r == 0 && size > 0)
			len = (size_t)(colon - s);
		else
			size = 0;
	}
	if (len == 0)
		return fail(o, "--ssd: empty path in '%s'", s);
	if (len >= sizeof(o->ssd[0].path))
		return fail(o, "--ssd: path longer than %zu bytes", sizeof(o->ssd[0].path) - 1);
	for (unsigned i = 0; i < o->nssd; i++)
		if (strlen(o->ssd[i].path) == len && !strncmp(o->ssd[i].path, s, len))
			return fail(o, "--ssd: '%.*s' given twice", (int)len, s);
	if (o->nssd == KVC_MAX_SSD)
		return fail(o, "--ssd: at most %d devices", KVC_MAX_SSD);
	d = &o->ssd[o->nssd++];
	memcpy(d->path, s, len);
	d->path[len] = '\0';
	d->size = size;
	return 0;
}

/* IPv4:PORT or [IPv6]:PORT, numeric only (no name lookup here), port 1..65535. */
static int parse_metrics(struct kvc_options *o, const char *s)
{
	const char *colon = strrchr(s, ':');
	char host[INET6_ADDRSTRLEN + 2], *end;
	size_t hl = colon ? (size_t)(colon - s) : 0;
	long port;

	memset(&o->metrics_addr, 0, sizeof(o->metrics_addr));
	if (!colon || hl == 0 || hl >= sizeof(host))
		return fail(o, "--metrics: expected IPv4:PORT or [IPv6]:PORT, got '%s'", s);
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || !isdigit((unsigned char)colon[1]) || port < 1 ||
	    port > 65535)
		return fail(o, "--metrics: bad port in '%s' (1 to 65535)", s);
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&o->metrics_addr;

		host[hl - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return fail(o, "--metrics: '%s' is not an IPv6 address", host + 1);
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&o->metrics_addr;

		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return fail(o,
				    "--metrics: '%s' is not an IPv4 address (write an IPv6 one "
				    "in brackets: [::1]:PORT)",
				    host);
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
	}
	o->metrics = s;
	return 0;
}

static int parse_log_level(struct kvc_options *o, const char *s)
{
	if (log_level_parse(s, &o->log_level))
		return fail(o, "--log-level: expected error, warning, info or debug, got '%s'", s);
	return 0;
}

static int parse_log_target(struct kvc_options *o, const char *s)
{
	if (log_target_parse(s, &o->log_target))
		return fail(o, "--log-target: expected auto, stderr or syslog, got '%s'", s);
	return 0;
}

static int parse_queue_depth(struct kvc_options *o, const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 4096)
		return fail(o, "--ssd-queue-depth: expected a number from 1 to 4096, got '%s'", s);
	o->ssd_queue_depth = (unsigned)v;
	return 0;
}

enum {
	OPT_POOL_SIZE = 256,
	OPT_MAX_BLOCK,
	OPT_HIGH,
	OPT_LOW,
	OPT_POOL_PATH,
	OPT_POOL_MODE,
	OPT_POOL_GROUP,
	OPT_ETCD,
	OPT_CLUSTER,
	OPT_NODE_ID,
	OPT_LISTEN,
	OPT_SECRET_FILE,
	OPT_TCP_CONGESTION,
	OPT_SSD,
	OPT_SSD_QUEUE,
	OPT_DEMOTE_ABOVE,
	OPT_FRESH,
	OPT_METRICS,
	OPT_LOG_LEVEL,
	OPT_LOG_TARGET
};

int opt_parse(int argc, char **argv, struct kvc_options *o)
{
	static const struct option longopts[] = {
	    {"foreground", no_argument, NULL, 'f'},
	    {"debug", no_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {"pool-size", required_argument, NULL, OPT_POOL_SIZE},
	    {"max-block-size", required_argument, NULL, OPT_MAX_BLOCK},
	    {"evict-high", required_argument, NULL, OPT_HIGH},
	    {"evict-low", required_argument, NULL, OPT_LOW},
	    {"pool-path", required_argument, NULL, OPT_POOL_PATH},
	    {"pool-mode", required_argument, NULL, OPT_POOL_MODE},
	    {"pool-group", required_argument, NULL, OPT_POOL_GROUP},
	    {"etcd", required_argument, NULL, OPT_ETCD},
	    {"cluster", required_argument, NULL, OPT_CLUSTER},
	    {"node-id", required_argument, NULL, OPT_NODE_ID},
	    {"listen", required_argument, NULL, OPT_LISTEN},
	    {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
	    {"tcp-congestion", required_argument, NULL, OPT_TCP_CONGESTION},
	    {"ssd", required_argument, NULL, OPT_SSD},
	    {"ssd-queue-depth", required_argument, NULL, OPT_SSD_QUEUE},
	    {"demote-above", required_argument, NULL, OPT_DEMOTE_ABOVE},
	    {"fresh", no_argument, NULL, OPT_FRESH},
	    {"metrics", required_argument, NULL, OPT_METRICS},
	    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	    {"log-target", required_argument, NULL, OPT_LOG_TARGET},
	    {NULL, 0, NULL, 0},
	};
	int c, ret;

	*o = (struct kvc_options){
	    .pool_size = KVC_DEFAULT_POOL_SIZE,
	    .max_block_size = KVC_DEFAULT_MAX_BLOCK_SIZE,
	    .evict_high = KVC_DEFAULT_EVICT_HIGH,
	    .evict_low = KVC_DEFAULT_EVICT_LOW,
	    .pool_mode = KVC_DEFAULT_POOL_MODE,
	    .pool_gid = -1,
	    .ssd_queue_depth = KVC_DEFAULT_SSD_QUEUE,
	    .demote_above = KVC_DEFAULT_DEMOTE_ABOVE,
	    .log_level = LOG_DEFAULT_LEVEL,
	    .log_target = LOG_TARGET_AUTO,
	};
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":fdhVo:", longopts, NULL)) != -1) {
		ret = 0;
		switch (c) {
		case 'f':
			o->foreground = true;
			break;
		case 'd':
			o->debug = o->foreground = true;
			break;
		case 'h':
			o->help = true;
			return 0;
		case 'V':
			o->version = true;
			return 0;
		case 'o':
			ret = add_fuse_opt(o, optarg);
			break;
		case OPT_POOL_SIZE:
			ret = parse_size_opt(o, "--pool-size", optarg, &o->pool_size);
			break;
		case OPT_MAX_BLOCK:
			ret = parse_size_opt(o, "--max-block-size", optarg, &o->max_block_size);
			break;
		case OPT_HIGH:
			ret = parse_pct(o, "--evict-high", optarg, &o->evict_high);
			break;
		case OPT_LOW:
			ret = parse_pct(o, "--evict-low", optarg, &o->evict_low);
			break;
		case OPT_DEMOTE_ABOVE:
			ret = parse_pct(o, "--demote-above", optarg, &o->demote_above);
			break;
		case OPT_POOL_PATH:
			o->pool_path = optarg;
			break;
		case OPT_POOL_MODE:
			ret = parse_mode(o, optarg);
			break;
		case OPT_POOL_GROUP:
			ret = parse_group(o, optarg);
			break;
		case OPT_ETCD:
			ret = check_etcd(o, optarg);
			break;
		case OPT_CLUSTER:
			ret = check_cluster(o, optarg);
			break;
		case OPT_NODE_ID:
			ret = parse_node_id(o, optarg);
			break;
		case OPT_LISTEN:
			ret = check_listen(o, optarg);
			break;
		case OPT_SECRET_FILE:
			o->secret_file = optarg;
			break;
		case OPT_TCP_CONGESTION:
			ret = check_congestion(o, optarg);
			break;
		case OPT_SSD:
			ret = add_ssd(o, optarg);
			break;
		case OPT_SSD_QUEUE:
			ret = parse_queue_depth(o, optarg);
			break;
		case OPT_FRESH:
			o->fresh = true;
			break;
		case OPT_METRICS:
			ret = parse_metrics(o, optarg);
			break;
		case OPT_LOG_LEVEL:
			ret = parse_log_level(o, optarg);
			break;
		case OPT_LOG_TARGET:
			ret = parse_log_target(o, optarg);
			break;
		case ':':
			return fail(o, "option '%s' needs a value", argv[optind - 1]);
		default:
			return fail(o, "unknown option '%s' (see --help)", argv[optind - 1]);
		}
		if (ret)
			return ret;
	}
	if (optind >= argc)
		return fail(o, "missing MOUNTPOINT (see --help)");
	if (optind + 1 < argc)
		return fail(o, "unexpected argument '%s' (see --help)", argv[optind + 1]);
	o->mountpoint = argv[optind];
	if (o->pool_size < KVC_MIN_POOL_SIZE)
		return fail(o, "--pool-size: at least 1M is needed");
	if (o->max_block_size < 4096)
		return fail(o, "--max-block-size: at least 4K is needed");
	if (o->max_block_size > (1ull << 32) * 4096)
		return fail(o, "--max-block-size: too large");
	if (!o->etcd &&
	    (o->cluster || o->node_id || o->listen || o->secret_file || o->tcp_congestion))
		return fail(o, "--cluster, --node-id, --listen, --secret-file and "
			       "--tcp-congestion need --etcd");
	if (o->etcd && !o->cluster)
		return fail(o, "--etcd needs --cluster NAME");
	if (o->etcd && !o->secret_file)
		return fail(o, "--etcd needs --secret-file F (the cluster secret)");
	if (o->evict_low >= o->evict_high)
		return fail(o, "--evict-low (%u) must be below --evict-high (%u)", o->evict_low,
			    o->evict_high);
	return 0;
}

void opt_usage(const char *prog, FILE *out)
{
	fprintf(
	    out,
	    "Usage: %s [OPTIONS] MOUNTPOINT\n"
	    "\n"
	    "Mount a kvcachefs KV-cache store at MOUNTPOINT (an existing directory). Blocks\n"
	    "are files: written once, sealed at close, immutable after; published by rename.\n"
	    "Without -f the command returns once the mount is ready and the daemon runs in\n"
	    "the background. Unmount with 'fusermount3 -u MOUNTPOINT' (or umount, or\n"
	    "SIGTERM).\n"
	    "\n"
	    "The pool object and the SSD files stay after the daemon exits (unmount or\n"
	    "crash): the next start with the same pool path, --pool-size and --ssd paths\n"
	    "recovers every sealed block and directory, unless --fresh is given.\n"
	    "\n"
	    "Options:\n"
	    "  -f, --foreground          stay in the foreground (logs to stderr)\n"
	    "  -d, --debug               print every FUSE request (implies -f)\n"
	    "      --pool-size SIZE      DRAM pool size (default 1G); at most physical memory\n"
	    "      --max-block-size SIZE largest block accepted; bigger writes get EFBIG\n"
	    "                            (default 64M)\n"
	    "      --evict-high PCT      pool usage that starts eviction (default %u)\n"
	    "      --evict-low PCT       usage eviction brings the pool back to (default %u)\n"
	    "      --pool-path PATH      shared-memory file backing the pool (default\n"
	    "                            /dev/shm/kvcachefs<MOUNTPOINT with / as .>, e.g.\n"
	    "                            /dev/shm/kvcachefs.mnt.kv for /mnt/kv)\n"
	    "      --pool-mode MODE      permission bits of the pool file (default 0600):\n"
	    "                            read lets a user map every block (libkvcache\n"
	    "                            zero-copy reads); write makes a trusted writer that\n"
	    "                            can change any block in place\n"
	    "      --pool-group GROUP    group of the pool file (name or number; default the\n"
	    "                            daemon's)\n"
	    "      --fresh               discard the blocks a previous daemon left in the\n"
	    "                            pool and SSD files instead of recovering them\n"
	    "  -o OPT[,OPT...]           mount options passed to FUSE (e.g. allow_other,\n"
	    "                            max_read=BYTES; a cluster node uses 1032192 by\n"
	    "                            default, so that a read of another node's block is\n"
	    "                            spliced through a pipe)\n"
	    "      --metrics ADDR:PORT   serve Prometheus metrics on http://ADDR:PORT/metrics\n"
	    "                            and a health check on /health (200 while the mount\n"
	    "                            is served, also with etcd unreachable; 503 while\n"
	    "                            starting or stopping). ADDR is numeric: 127.0.0.1,\n"
	    "                            0.0.0.0 (any IPv4), [::1], [::]. A port in use is\n"
	    "                            a start-up error\n"
	    "      --log-level LEVEL     error, warning, info (default) or debug: the least\n"
	    "                            severe lines written. One line per notable event:\n"
	    "                            start and stop, members joining and leaving, etcd\n"
	    "                            lost and back, eviction bursts, recovery, transfer\n"
	    "                            connections lost and back, errors; debug adds side\n"
	    "                            channel requests and refused requests\n"
	    "      --log-target TARGET   auto (default), stderr or syslog (ident kvcachefs,\n"
	    "                            facility daemon). auto: stderr until the daemon\n"
	    "                            detaches, then syslog; with -f stderr throughout.\n"
	    "                            (stderr without -f: /dev/null once detached.)\n"
	    "                            Errors that stop the start always reach stderr too\n"
	    "\n"
	    "SSD tier (without --ssd the DRAM pool is the only tier):\n"
	    "      --ssd PATH[:SIZE]     a file (created and preallocated to SIZE when\n"
	    "                            missing; a formatted one keeps its size) or a block\n"
	    "                            device; its filesystem must support O_DIRECT and\n"
	    "                            not be memory (tmpfs, ramfs). Sealed blocks are\n"
	    "                            written there as DRAM fills and stay when evicted\n"
	    "                            from DRAM, instead of being dropped; opening one\n"
	    "                            promotes it back. Repeat for up to %d devices\n"
	    "      --ssd-queue-depth N   io_uring entries per SSD device, 1 to 4096\n"
	    "                            (default %d)\n"
	    "      --demote-above PCT    percent of DRAM that blocks with no SSD copy may\n"
	    "                            fill before the oldest are written to SSD ahead of\n"
	    "                            eviction, keeping their DRAM copy: eviction then only\n"
	    "                            drops copies, and writers do not wait for the SSD\n"
	    "                            (default %d; 100: demote only when evicting)\n"
	    "\n"
	    "Cluster (without --etcd the daemon is a single node):\n"
	    "      --etcd URL[,URL...]   etcd endpoints (http://HOST:PORT) for membership\n"
	    "      --cluster NAME        the cluster to join (letters, digits, - _ .)\n"
	    "      --node-id ID          this node's id (default: from the host name and\n"
	    "                            mountpoint, stable across restarts)\n"
	    "      --listen HOST:PORT    address of the transfer engine (default: the first\n"
	    "                            non-loopback IPv4 address, any free port)\n"
	    "      --secret-file F       the cluster secret: at least 16 bytes, not readable\n"
	    "                            by others; nodes without it are refused\n"
	    "      --tcp-congestion NAME TCP congestion control of the transfer engine's\n"
	    "                            connections, e.g. cubic (default: the system's,\n"
	    "                            net.ipv4.tcp_congestion_control). With bbr and no\n"
	    "                            fq qdisc, cubic can carry much more per connection.\n"
	    "                            One this host lacks, or (without CAP_NET_ADMIN) not\n"
	    "                            in tcp_allowed_congestion_control, is refused\n"
	    "  -h, --help                show this help and exit\n"
	    "  -V, --version             show the version and exit\n"
	    "\n"
	    "SIZE is a number of bytes with an optional K, M, G or T suffix (powers of 1024).\n"
	    "--ssd PATH:SIZE splits at the last ':' when a size above 0 follows it; otherwise\n"
	    "the whole argument is the path (but a trailing ':' is refused).\n"
	    "Environment: KVC_NO_SPLICE=1 turns off spliced writes and streamed reads of\n"
	    "other nodes' blocks (each is then fetched into the pool at its first open).\n",
	    prog, KVC_DEFAULT_EVICT_HIGH, KVC_DEFAULT_EVICT_LOW, KVC_MAX_SSD, KVC_DEFAULT_SSD_QUEUE,
	    KVC_DEFAULT_DEMOTE_ABOVE);
}
