/*
 * xfer: kvcache-xfer, a small command line over the transfer engine (engine/xfer.h), for the
 * tests, the benchmark and operators checking that two nodes can move bytes.
 *
 *   kvcache-xfer serve   an engine exporting one segment of SIZE bytes filled with a known
 *                        pattern; prints "listening ADDR segment ID size SIZE" and serves
 *                        until SIGTERM/SIGINT;
 *   kvcache-xfer read    READ a range of a peer's segment, optionally checking the bytes
 *                        against the pattern;
 *   kvcache-xfer write   WRITE pattern bytes into a range of a peer's segment (a later
 *                        verified read with the same seed checks they arrived);
 *   kvcache-xfer probe   which transports this machine can use, and why not RDMA.
 *
 * The pattern is a function of (seed, offset) only, so any range of it can be produced or
 * checked without the rest: byte o is byte o % 8 (little-endian) of a splitmix64 hash of the
 * seed and o / 8. A server filled with seed S and a write of seed S' at [off, off + len) are
 * both checked by `read --verify --pattern` with the seed of whoever wrote the range last.
 *
 * The cluster secret comes from a file that must not be readable by everyone; it is wiped
 * from our memory once the engine has derived its key. Exit status: 0 success, 1 a transfer
 * (or the engine) failed, 2 usage errors (bad options, bad secret file).
 *
 * The client never waits on the engine without a bound: a batch not completed within the
 * engine's own request timeout plus a margin is cancelled and reported as a failure, so a
 * broken peer cannot hang a test that runs this program.
 */
#include "engine/wire.h"
#include "engine/auth.h"
#include "engine/xfer.h"
#include "tools/pattern.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "kvcache-xfer"

#define DEFAULT_SEED	   0x6b766378ull /* "kvcx": the seed serve fills with by default */
#define SECRET_MAX	   AUTH_SECRET_MAX
#define MAX_BATCH	   4096
#define MAX_CONNS	   64
#define WAIT_MARGIN_MS	   5000 /* beyond the engine's timeout before we give up on it */
#define DEFAULT_TIMEOUT_MS 5000 /* the engine's default request timeout (engine/xfer.h) */
#define EXIT_USAGE	   2
#define EXIT_FAILED	   1

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *errname(int err)
{
	const char *n = err > 0 ? strerrorname_np(err) : NULL;

	return n ? n : "E?";
}

static const char *status_name(int st)
{
	switch (st) {
	case XFER_PENDING:
		return "XFER_PENDING";
	case XFER_DONE:
		return "XFER_DONE";
	case XFER_FAILED:
		return "XFER_FAILED";
	case XFER_TIMEDOUT:
		return "XFER_TIMEDOUT";
	case XFER_CANCELLED:
		return "XFER_CANCELLED";
	}
	return "unknown status";
}

/* "4096", "64K", "2M", "1G", "1T" (powers of 1024). 0, or -EINVAL / -ERANGE. */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	case '\0':
		break;
	default:
		return -EINVAL;
	}
	if (shift && end[1])
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

/* A number in [lo, hi], decimal or 0x hex, with no size suffix. */
static int parse_num(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (*s < '0' || *s > '9' || *end || errno || v < lo || v > hi) {
		fprintf(stderr, PROG ": %s: '%s' is not a number from %" PRIu64 " to %" PRIu64 "\n",
			opt, s, lo, hi);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_size_opt(const char *opt, const char *s, uint64_t *out)
{
	if (parse_size(s, out) < 0) {
		fprintf(stderr,
			PROG ": %s: bad size '%s' (a byte count with an optional K, M, G or T "
			     "suffix)\n",
			opt, s);
		return -EINVAL;
	}
	return 0;
}

/* "HOST:PORT" ("[v6]:PORT" too): a host and a port from 0 (listen only) to 65535. The engine
 * resolves the host; this only catches what cannot be an address at all. */
static int check_addr(const char *opt, const char *s, bool port0)
{
	const char *colon = strrchr(s, ':');
	uint64_t port = 0;
	char *end;

	if (colon && colon > s && colon[1] >= '0' && colon[1] <= '9') {
		errno = 0;
		port = strtoull(colon + 1, &end, 10);
		if (!*end && !errno && port <= 65535 && (port || port0))
			return 0;
	}
	fprintf(stderr, PROG ": %s: '%s' is not HOST:PORT (PORT from %d to 65535)\n", opt, s,
		port0 ? 0 : 1);
	return -EINVAL;
}

/* "tcp", "rdma", "tcp,rdma" or "auto" (0: both, RDMA when a device exists). */
static int parse_transports(const char *s, unsigned *out)
{
	char buf[64], *save = NULL, *tok;

	*out = 0;
	if (!strcmp(s, "auto"))
		return 0;
	if (strlen(s) >= sizeof(buf))
		goto bad;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "tcp"))
			*out |= XFER_TCP;
		else if (!strcmp(tok, "rdma"))
			*out |= XFER_RDMA;
		else
			goto bad;
	}
	if (*out)
		return 0;
bad:
	fprintf(stderr, PROG ": --transports: '%s': tcp, rdma, tcp,rdma or auto\n", s);
	return -EINVAL;
}

/* Read the cluster secret (engine/auth.h); prints the one error line. */
static int secret_load(const char *path, unsigned char *buf, size_t *len)
{
	char err[512];
	int ret = auth_secret_load(path, buf, len, err, sizeof(err));

	if (ret < 0)
		fprintf(stderr, PROG ": %s\n", err);
	return ret;
}

static void *map_buffer(uint64_t len)
{
	void *p =
	    mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* The engine, configured from the options every command shares. Wipes the secret. */
static int engine_create(struct xfer_engine **e, const char *listen, uint64_t node_id,
			 unsigned char *secret, size_t secret_len, unsigned transports,
			 unsigned conns, unsigned timeout_ms, const char *congestion)
{
	struct xfer_config cfg = {
	    .listen = listen,
	    .tcp_congestion = congestion,
	    .node_id = node_id,
	    .secret = secret,
	    .secret_len = secret_len,
	    .transports = transports,
	    .conns_per_peer = conns,
	    .timeout_ms = timeout_ms,
	};
	int ret = congestion ? xfer_tcp_congestion_check(congestion) : 0;

	if (ret < 0) { /* said here: xfer_create would refuse it with a bare errno */
		explicit_bzero(secret, SECRET_MAX + 1);
		*e = NULL;
		fprintf(stderr, PROG ": --tcp-congestion %s: %s\n", congestion,
			xfer_tcp_congestion_strerror(ret));
		return ret;
	}
	ret = xfer_create(e, &cfg);
	explicit_bzero(secret, SECRET_MAX + 1);
	if (ret < 0) {
		*e = NULL;
		fprintf(stderr, PROG ": cannot create the transfer engine%s%s: %s (%s)\n",
			listen ? " listening on " : "", listen ? listen : "", strerror(-ret),
			errname(-ret));
	}
	return ret;
}

/* ---- options ---------------------------------------------------------------------------- */

struct opts {
	const char *listen, *peer, *secret_file, *congestion;
	uint64_t size, seed, node_id, segment, offset, length, batch, repeat;
	uint64_t conns, timeout_ms;
	unsigned transports;
	bool have_segment, have_length, have_size, verify;
};

enum {
	OPT_LISTEN = 256,
	OPT_PEER,
	OPT_SECRET,
	OPT_SIZE,
	OPT_PATTERN,
	OPT_NODE,
	OPT_CONNS,
	OPT_SEGMENT,
	OPT_OFFSET,
	OPT_LENGTH,
	OPT_BATCH,
	OPT_REPEAT,
	OPT_VERIFY,
	OPT_TIMEOUT,
	OPT_TRANSPORTS,
	OPT_CONGESTION,
	OPT_HELP,
};

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: " PROG " COMMAND [OPTIONS]\n"
	    "Move bytes with the kvcachefs transfer engine.\n"
	    "\n"
	    "  " PROG " serve --listen HOST:PORT --secret-file F --size SIZE [--pattern SEED]\n"
	    "        [--node-id N] [--conns N] [--transports T] [--timeout-ms MS]\n"
	    "        [--tcp-congestion NAME]\n"
	    "      Export one segment of SIZE bytes filled with the pattern of SEED; print\n"
	    "      'listening ADDR segment ID size SIZE' and serve until SIGTERM or SIGINT.\n"
	    "      PORT 0 picks a free port (ADDR shows it).\n"
	    "  " PROG " read|write --peer HOST:PORT --secret-file F --segment ID\n"
	    "        [--offset OFF] --length LEN [--batch N] [--pattern SEED] [--verify]\n"
	    "        [--repeat N] [--timeout-ms MS] [--conns N] [--transports T]\n"
	    "        [--tcp-congestion NAME]\n"
	    "      read: fetch [OFF, OFF+LEN) of the peer's segment; --verify checks it\n"
	    "      against the pattern of SEED at OFF. write: send the pattern of SEED for\n"
	    "      [OFF, OFF+LEN) (--verify reads it back and checks). --batch N cuts the range\n"
	    "      into N requests submitted at once; --repeat N does it all N times.\n"
	    "  " PROG " probe\n"
	    "      Print the transports usable here: 'tcp', and 'rdma' or why not.\n"
	    "\n"
	    "  --secret-file F   the cluster secret (at least %d bytes, one trailing newline\n"
	    "                    ignored); the file must not be readable by everyone\n"
	    "  --pattern SEED    byte o of the pattern is byte o%%8 of a hash of SEED and o/8\n"
	    "                    (default 0x%" PRIx64 ")\n"
	    "  --transports T    tcp, rdma, tcp,rdma or auto (default: RDMA when a device exists)\n"
	    "  --conns N         TCP connections to each peer this engine opens (default 4)\n"
	    "  --tcp-congestion NAME\n"
	    "                    TCP congestion control of the engine's connections, e.g.\n"
	    "                    cubic (default: the system's)\n"
	    "  --timeout-ms MS   the engine's request timeout (default %d); a server also\n"
	    "                    drops connections that do not authenticate in about as long\n"
	    "Sizes take a K, M, G or T suffix (powers of 1024).\n"
	    "Exit status: 0 success, 1 transfer or engine failure, 2 usage or secret file error.\n",
	    XFER_SECRET_MIN, (uint64_t)DEFAULT_SEED, DEFAULT_TIMEOUT_MS);
}

/* Parse argv (argv[0] is the command) into o. Returns -1 to go on, else the exit status. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, OPT_LISTEN},
	    {"peer", required_argument, NULL, OPT_PEER},
	    {"secret-file", required_argument, NULL, OPT_SECRET},
	    {"size", required_argument, NULL, OPT_SIZE},
	    {"pattern", required_argument, NULL, OPT_PATTERN},
	    {"node-id", required_argument, NULL, OPT_NODE},
	    {"conns", required_argument, NULL, OPT_CONNS},
	    {"segment", required_argument, NULL, OPT_SEGMENT},
	    {"offset", required_argument, NULL, OPT_OFFSET},
	    {"length", required_argument, NULL, OPT_LENGTH},
	    {"batch", required_argument, NULL, OPT_BATCH},
	    {"repeat", required_argument, NULL, OPT_REPEAT},
	    {"verify", no_argument, NULL, OPT_VERIFY},
	    {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
	    {"transports", required_argument, NULL, OPT_TRANSPORTS},
	    {"tcp-congestion", required_argument, NULL, OPT_CONGESTION},
	    {"help", no_argument, NULL, OPT_HELP},
	    {NULL, 0, NULL, 0},
	};
	int c;

	*o = (struct opts){.seed = DEFAULT_SEED, .batch = 1, .repeat = 1};
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int r = 0;

		switch (c) {
		case OPT_LISTEN:
			o->listen = optarg;
			r = check_addr("--listen", optarg, true);
			break;
		case OPT_PEER:
			o->peer = optarg;
			r = check_addr("--peer", optarg, false);
			break;
		case OPT_SECRET:
			o->secret_file = optarg;
			break;
		case OPT_SIZE:
			r = parse_size_opt("--size", optarg, &o->size);
			o->have_size = true;
			break;
		case OPT_PATTERN:
			r = parse_num("--pattern", optarg, 0, UINT64_MAX, &o->seed);
			break;
		case OPT_NODE:
			r = parse_num("--node-id", optarg, 0, UINT64_MAX, &o->node_id);
			break;
		case OPT_CONNS:
			r = parse_num("--conns", optarg, 1, MAX_CONNS, &o->conns);
			break;
		case OPT_SEGMENT:
			r = parse_num("--segment", optarg, 0, UINT32_MAX, &o->segment);
			o->have_segment = true;
			break;
		case OPT_OFFSET:
			r = parse_size_opt("--offset", optarg, &o->offset);
			break;
		case OPT_LENGTH:
			r = parse_size_opt("--length", optarg, &o->length);
			o->have_length = true;
			break;
		case OPT_BATCH:
			r = parse_num("--batch", optarg, 1, MAX_BATCH, &o->batch);
			break;
		case OPT_REPEAT:
			r = parse_num("--repeat", optarg, 1, UINT32_MAX, &o->repeat);
			break;
		case OPT_VERIFY:
			o->verify = true;
			break;
		case OPT_TIMEOUT:
			r = parse_num("--timeout-ms", optarg, 1, 3600000, &o->timeout_ms);
			break;
		case OPT_TRANSPORTS:
			r = parse_transports(optarg, &o->transports);
			break;
		case OPT_CONGESTION:
			o->congestion = optarg;
			break;
		case 'h':
		case OPT_HELP:
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return EXIT_USAGE;
		}
		if (r < 0)
			return EXIT_USAGE;
	}
	if (optind != argc) {
		fprintf(stderr, PROG ": %s: unexpected argument '%s'\n", argv[0], argv[optind]);
		return EXIT_USAGE;
	}
	return -1;
}

/* Options a command does not take are usage errors rather than silently ignored. */
static int reject(const char *cmd, bool given, const char *opt)
{
	if (!given)
		return 0;
	fprintf(stderr, PROG ": %s does not take %s\n", cmd, opt);
	return -EINVAL;
}

static int require(const char *cmd, bool given, const char *opt)
{
	if (given)
		return 0;
	fprintf(stderr, PROG ": %s needs %s\n", cmd, opt);
	return -EINVAL;
}

/* ---- serve ------------------------------------------------------------------------------ */

static int cmd_serve(const struct opts *o)
{
	unsigned char secret[SECRET_MAX + 1];
	struct xfer_engine *e = NULL;
	char addr[256];
	unsigned char *seg = NULL;
	uint32_t seg_id;
	sigset_t sigs;
	size_t secret_len = 0;
	int sig = 0, ret, status = EXIT_FAILED;

	if (require("serve", o->listen, "--listen HOST:PORT") ||
	    require("serve", o->secret_file, "--secret-file F") ||
	    require("serve", o->have_size, "--size SIZE") || reject("serve", o->peer, "--peer") ||
	    reject("serve", o->have_segment, "--segment") ||
	    reject("serve", o->have_length, "--length") || reject("serve", o->verify, "--verify"))
		return EXIT_USAGE;
	if (!o->size) {
		fprintf(stderr, PROG ": serve: --size must be at least 1 byte\n");
		return EXIT_USAGE;
	}
	if (secret_load(o->secret_file, secret, &secret_len) < 0)
		return EXIT_USAGE;

	seg = map_buffer(o->size);
	if (!seg) {
		explicit_bzero(secret, sizeof(secret));
		fprintf(stderr, PROG ": serve: cannot map %" PRIu64 " bytes: %s\n", o->size,
			strerror(errno));
		return EXIT_FAILED;
	}
	pattern_fill(seg, o->size, o->seed, 0);

	/* Block the stop signals before the engine starts its threads (they inherit the mask),
	 * so that only sigwait below ever takes them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	ret = engine_create(&e, o->listen, o->node_id, secret, secret_len, o->transports,
			    (unsigned)o->conns, (unsigned)o->timeout_ms, o->congestion);
	if (ret < 0)
		goto out;
	ret = xfer_register(e, seg, o->size, &seg_id);
	if (ret < 0) {
		fprintf(stderr, PROG ": serve: cannot register %" PRIu64 " bytes: %s (%s)\n",
			o->size, strerror(-ret), errname(-ret));
		goto out;
	}
	ret = xfer_listen_addr(e, addr, sizeof(addr));
	if (ret < 0) {
		fprintf(stderr, PROG ": serve: no listen address: %s (%s)\n", strerror(-ret),
			errname(-ret));
		goto out;
	}
	printf("listening %s segment %" PRIu32 " size %" PRIu64 "\n", addr, seg_id, o->size);
	if (fflush(stdout) == EOF) {
		fprintf(stderr, PROG ": serve: cannot write to stdout: %s\n", strerror(errno));
		goto out;
	}
	while (sigwait(&sigs, &sig) != 0)
		;
	ret = xfer_unregister(e, seg_id);
	if (ret < 0)
		fprintf(stderr, PROG ": serve: unregister segment %" PRIu32 ": %s (%s)\n", seg_id,
			strerror(-ret), errname(-ret));
	status = ret < 0 ? EXIT_FAILED : 0;
out:
	if (e)
		xfer_destroy(e);
	munmap(seg, o->size);
	return status;
}

/* ---- read and write --------------------------------------------------------------------- */

struct rw {
	const struct opts *o;
	struct xfer_engine *e;
	struct xfer_peer *peer;
	struct xfer_req *reqs;
	unsigned char *buf; /* length bytes, local end of every request */
	size_t n;	    /* requests per batch */
	unsigned wait_ms;   /* our bound on one batch: the engine's timeout plus a margin */
};

static const char *op_name(enum xfer_op op)
{
	return op == XFER_READ ? "read" : "write";
}

/* Report why the peer's requests failed, with what the engine knows of its paths. */
static void rw_peer_note(struct rw *r)
{
	struct xfer_peer_info info;

	xfer_peer_info(r->peer, &info);
	fprintf(stderr,
		PROG ": peer %s: %u live paths, %" PRIu64 " failures, %" PRIu64 " retries\n",
		r->o->peer, info.paths, info.failures, info.retries);
}

/* One batch of n requests covering the range; 0 or -EIO (reported). */
static int rw_batch(struct rw *r, enum xfer_op op, unsigned char *buf, uint64_t rep)
{
	const struct opts *o = r->o;
	uint64_t base = o->length / r->n, extra = o->length % r->n, pos = 0;
	struct xfer_batch *b = NULL;
	size_t done;
	int ret;

	for (size_t i = 0; i < r->n; i++) {
		uint64_t len = base + (i < extra);

		r->reqs[i] = (struct xfer_req){
		    .op = op,
		    .local = buf + pos,
		    .len = len,
		    .peer = r->peer,
		    .remote_seg = (uint32_t)o->segment,
		    .remote_off = o->offset + pos,
		};
		atomic_init(&r->reqs[i].status, XFER_PENDING);
		pos += len;
	}
	ret = xfer_submit(r->e, r->reqs, r->n, &b);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: xfer_submit: %s (%s)\n", op_name(op), strerror(-ret),
			errname(-ret));
		return -EIO;
	}
	done = xfer_wait(b, (int)r->wait_ms);
	if (done < r->n) {
		xfer_cancel(b);
		fprintf(stderr,
			PROG ": %s: timed out: %zu of %zu requests not completed %u ms after "
			     "submission (the engine's timeout is %u ms); cancelled\n",
			op_name(op), r->n - done, r->n, r->wait_ms, r->wait_ms - WAIT_MARGIN_MS);
		rw_peer_note(r);
		xfer_batch_free(b);
		return -EIO;
	}
	ret = 0;
	for (size_t i = 0; i < r->n && !ret; i++) {
		const struct xfer_req *q = &r->reqs[i];
		int st = atomic_load_explicit(&q->status, memory_order_acquire);

		if (st == XFER_DONE)
			continue;
		fprintf(stderr,
			PROG ": %s: request %zu of %zu (segment %" PRIu32 ", offset %" PRIu64
			     ", %" PRIu64 " bytes, repetition %" PRIu64 ") %s: %s",
			op_name(op), i + 1, r->n, q->remote_seg, q->remote_off, q->len, rep + 1,
			st == XFER_TIMEDOUT    ? "timed out"
			: st == XFER_CANCELLED ? "was cancelled"
					       : "failed",
			status_name(st));
		if (st == XFER_FAILED)
			fprintf(stderr, ", %s (%s)", errname(q->error), strerror(q->error));
		fprintf(stderr, "\n");
		rw_peer_note(r);
		ret = -EIO;
	}
	xfer_batch_free(b);
	return ret;
}

static int rw_check(struct rw *r, const unsigned char *buf, uint64_t seed, const char *what)
{
	const struct opts *o = r->o;
	uint64_t at = pattern_mismatch(buf, o->length, seed, o->offset);
	unsigned char want;

	if (at == o->length)
		return 0;
	pattern_fill(&want, 1, seed, o->offset + at);
	fprintf(stderr,
		PROG ": %s: content differs from pattern 0x%" PRIx64 " at offset %" PRIu64
		     " of segment %" PRIu64 ": byte 0x%02x, expected 0x%02x\n",
		what, seed, o->offset + at, o->segment, buf[at], want);
	return -EIO;
}

/* The one result line: what moved, where, how fast (bytes / time in transfers). */
static void rw_report(const struct opts *o, const char *cmd, size_t n, uint64_t ns)
{
	double secs = (double)ns / 1e9, bps = 0;

	if (secs > 0)
		bps = (double)o->length * (double)o->repeat / secs;
	printf("%s %" PRIu64 " bytes %s %s segment %" PRIu64 " offset %" PRIu64
	       " in %zu request%s x %" PRIu64 ": %.3f ms, ",
	       cmd, o->length, !strcmp(cmd, "read") ? "from" : "to", o->peer, o->segment, o->offset,
	       n, n == 1 ? "" : "s", o->repeat, secs * 1e3);
	if (bps >= 1e8)
		printf("%.3f GB/s", bps / 1e9);
	else
		printf("%.3f MB/s", bps / 1e6);
	printf("%s\n", o->verify ? ", verified" : "");
}

static int cmd_rw(const struct opts *o, enum xfer_op op)
{
	const char *cmd = op_name(op);
	unsigned char secret[SECRET_MAX + 1];
	unsigned char *check = NULL;
	struct rw r = {.o = o};
	uint32_t local_seg = 0;
	bool registered = false;
	size_t secret_len = 0;
	uint64_t elapsed = 0;
	int ret, status = EXIT_FAILED;

	if (require(cmd, o->peer, "--peer HOST:PORT") ||
	    require(cmd, o->secret_file, "--secret-file F") ||
	    require(cmd, o->have_segment, "--segment ID") ||
	    require(cmd, o->have_length, "--length LEN") || reject(cmd, o->listen, "--listen") ||
	    reject(cmd, o->have_size, "--size"))
		return EXIT_USAGE;
	if (!o->length) {
		fprintf(stderr, PROG ": %s: --length must be at least 1 byte\n", cmd);
		return EXIT_USAGE;
	}
	if (o->batch > o->length) {
		fprintf(stderr, PROG ": %s: --batch %" PRIu64 " exceeds --length %" PRIu64 "\n",
			cmd, o->batch, o->length);
		return EXIT_USAGE;
	}
	if (o->offset + o->length < o->offset) {
		fprintf(stderr, PROG ": %s: --offset + --length overflows\n", cmd);
		return EXIT_USAGE;
	}
	if (secret_load(o->secret_file, secret, &secret_len) < 0)
		return EXIT_USAGE;

	/* A peer that dies mid-write must show as a failed request, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	r.n = (size_t)o->batch;
	r.wait_ms = (unsigned)(o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS) + WAIT_MARGIN_MS;
	r.reqs = calloc(r.n, sizeof(*r.reqs));
	r.buf = map_buffer(o->length);
	if (o->verify && op == XFER_WRITE)
		check = map_buffer(o->length);
	if (!r.reqs || !r.buf || (o->verify && op == XFER_WRITE && !check)) {
		explicit_bzero(secret, sizeof(secret));
		fprintf(stderr, PROG ": %s: out of memory for %" PRIu64 " bytes\n", cmd, o->length);
		goto out;
	}
	if (op == XFER_WRITE)
		pattern_fill(r.buf, o->length, o->seed, o->offset);

	ret = engine_create(&r.e, NULL, o->node_id, secret, secret_len, o->transports,
			    (unsigned)o->conns, (unsigned)o->timeout_ms, o->congestion);
	if (ret < 0)
		goto out;
	/* Registered like an engine's buffers are: transports that need it (RDMA) find it. */
	ret = xfer_register(r.e, r.buf, o->length, &local_seg);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: cannot register the local buffer: %s (%s)\n", cmd,
			strerror(-ret), errname(-ret));
		goto out;
	}
	registered = true;
	ret = xfer_open_peer(r.e, o->peer, &r.peer);
	if (ret < 0) {
		r.peer = NULL;
		if (ret == -EACCES)
			fprintf(stderr,
				PROG ": %s: %s refused the connection: the secrets differ "
				     "(EACCES: %s)\n",
				cmd, o->peer, strerror(-ret));
		else if (ret == -EPROTO)
			fprintf(stderr,
				PROG ": %s: %s: protocol version mismatch or malformed "
				     "handshake (EPROTO: %s)\n",
				cmd, o->peer, strerror(-ret));
		else
			fprintf(stderr, PROG ": %s: cannot open peer %s: %s (%s)\n", cmd, o->peer,
				strerror(-ret), errname(-ret));
		goto out;
	}

	for (uint64_t rep = 0; rep < o->repeat; rep++) {
		uint64_t t0;

		if (op == XFER_READ && o->verify) {
			/* Every byte starts as the opposite of what must arrive. */
			pattern_fill(r.buf, o->length, o->seed, o->offset);
			for (uint64_t i = 0; i < o->length; i++)
				r.buf[i] = (unsigned char)~r.buf[i];
		}
		t0 = now_ns();
		if (rw_batch(&r, op, r.buf, rep) < 0)
			goto out;
		elapsed += now_ns() - t0;
		if (op == XFER_READ && o->verify && rw_check(&r, r.buf, o->seed, "read") < 0)
			goto out;
	}
	if (check) {
		for (uint64_t i = 0; i < o->length; i++)
			check[i] = (unsigned char)~r.buf[i];
		if (rw_batch(&r, XFER_READ, check, o->repeat) < 0 ||
		    rw_check(&r, check, o->seed, "write, reading back") < 0)
			goto out;
	}
	rw_report(o, cmd, r.n, elapsed);
	status = 0;
out:
	if (r.peer)
		xfer_close_peer(r.peer);
	if (registered)
		xfer_unregister(r.e, local_seg);
	if (r.e)
		xfer_destroy(r.e);
	if (r.buf)
		munmap(r.buf, o->length);
	if (check)
		munmap(check, o->length);
	free(r.reqs);
	return status;
}

/* ---- probe ------------------------------------------------------------------------------ */

static int cmd_probe(const struct opts *o)
{
	unsigned char secret[SECRET_MAX + 1];
	struct xfer_engine *e;
	const char *why = NULL;
	unsigned t;

	if (reject("probe",
		   o->listen || o->peer || o->secret_file || o->have_segment || o->have_length ||
		       o->have_size || o->congestion,
		   "--listen, --peer, --secret-file, --segment, --length, --size or "
		   "--tcp-congestion"))
		return EXIT_USAGE;
	/* The engine wants a secret even when it neither listens nor connects. */
	if (getrandom(secret, 32, 0) != 32) {
		fprintf(stderr, PROG ": probe: getrandom: %s\n", strerror(errno));
		return EXIT_FAILED;
	}
	if (engine_create(&e, NULL, 0, secret, 32, o->transports, 0, 0, NULL) < 0)
		return EXIT_FAILED;
	t = xfer_transports(e, &why);
	if (t & XFER_TCP)
		printf("tcp\n");
	if (t & XFER_RDMA)
		printf("rdma\n");
	else
		printf("rdma: unavailable: %s\n", why && *why ? why : "(no reason given)");
	xfer_destroy(e);
	return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	struct opts o;
	const char *cmd;
	int st;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf(PROG " %s (wire protocol version %u)\n", KVC_VERSION, WIRE_VERSION);
		return 0;
	}
	if (strcmp(cmd, "serve") && strcmp(cmd, "read") && strcmp(cmd, "write") &&
	    strcmp(cmd, "probe")) {
		fprintf(stderr, PROG ": unknown command '%s'\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	st = parse_opts(argc - 1, argv + 1, &o);
	if (st >= 0)
		return st;
	if (!strcmp(cmd, "serve"))
		return cmd_serve(&o);
	if (!strcmp(cmd, "read"))
		return cmd_rw(&o, XFER_READ);
	if (!strcmp(cmd, "write"))
		return cmd_rw(&o, XFER_WRITE);
	return cmd_probe(&o);
}
