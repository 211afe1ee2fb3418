/*
 * Unit tests of the transfer engine (engine/xfer.c, engine/tcp.c): two engines in one
 * process on 127.0.0.1 with the same secret.
 *
 * Transfers of every size with the content checked, batches, concurrent submitters, target
 * errors (ERANGE, ENOENT), the handshake refusing a wrong secret either way and another
 * protocol version, a malformed frame closing only its connection, a peer that stops
 * answering (requests TIMEDOUT in bounded time), a connection cut mid-transfer (slices
 * retried on the other paths), a peer process killed mid-transfer, cancel with data still
 * arriving (the buffers are freed right after xfer_cancel: ASan catches any later touch),
 * and xfer_destroy with requests pending.
 *
 * Metadata RPCs (xfer_call): echo round trips of every size up to XFER_RPC_MAX, the limits,
 * handler errors, no handler, many threads at once, calls that time out (their late replies
 * drained), callers giving up at every stage of a large reply, a target destroyed with calls
 * pending, a raw client that floods RPCs without reading the replies (the target stops
 * reading), malformed RPC frames, and RPCs mixed with large READ/WRITE batches.
 *
 * Helpers that play the other side by hand: a raw client (frames written with wire.h), a
 * "black hole" target that completes the handshake and then answers nothing, and a relay
 * that forwards connections to a real engine and can cut one of them.
 *
 * KVC_XFER_BENCH=1 adds a throughput run (2 MiB READ and WRITE, batches of 32) printing
 * GB/s, to compare with `iperf3 -c 127.0.0.1` on the same machine.
 */
#include "engine/auth.h"
#include "engine/rdma.h"
#include "engine/wire.h"
#include "engine/xfer.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char secret[] = "kvcachefs-unit-test-secret-0123";
static const char other_secret[] = "a-different-secret-of-the-cluster";

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fill(void *buf, uint64_t len, uint64_t seed)
{
	uint64_t *w = buf, x = seed * 0x9e3779b97f4a7c15ull + 1;
	uint64_t i;

	for (i = 0; i < len / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
	for (i = len / 8 * 8; i < len; i++)
		((uint8_t *)buf)[i] = (uint8_t)(x >> (i % 8 * 8));
}

static struct xfer_config config(const char *listen, const char *sec, unsigned timeout_ms)
{
	return (struct xfer_config){
	    .listen = listen, .secret = sec, .secret_len = strlen(sec), .timeout_ms = timeout_ms};
}

/* Target engine b exporting one segment, initiator engine a with b opened as peer p. */
struct pair {
	struct xfer_engine *a, *b;
	struct xfer_peer *p;
	char *seg;
	uint64_t seg_len;
	uint32_t seg_id;
	char addr[64];
};

static unsigned env_u(const char *name)
{
	const char *v = getenv(name);

	return v ? (unsigned)strtoul(v, NULL, 0) : 0;
}

/* The TCP congestion control of both engines of the next pairs (NULL: the system's). */
static const char *pair_congestion;

/* ... with fn (may be NULL) serving RPCs on b. */
static int pair_open_rpc(struct pair *pp, uint64_t seg_len, unsigned timeout_ms, xfer_rpc_fn fn,
			 void *arg)
{
	struct xfer_config cb = config("127.0.0.1:0", secret, timeout_ms);
	struct xfer_config ca = config(NULL, secret, timeout_ms);
	int rc;

	cb.rpc = fn;
	cb.rpc_arg = arg;
	ca.tcp_congestion = cb.tcp_congestion = pair_congestion;

	/* tuning knobs for the throughput run */
	ca.conns_per_peer = env_u("KVC_XFER_CONNS");
	ca.slice_size = env_u("KVC_XFER_SLICE");
	ca.io_threads = cb.io_threads = env_u("KVC_XFER_THREADS");

	memset(pp, 0, sizeof(*pp));
	pp->seg_len = seg_len;
	pp->seg = malloc(seg_len);
	if (!pp->seg)
		return -ENOMEM;
	fill(pp->seg, seg_len, 1);
	rc = xfer_create(&pp->b, &cb);
	if (rc < 0)
		return rc;
	rc = xfer_register(pp->b, pp->seg, seg_len, &pp->seg_id);
	if (rc < 0)
		return rc;
	rc = xfer_listen_addr(pp->b, pp->addr, sizeof(pp->addr));
	if (rc < 0)
		return rc;
	rc = xfer_create(&pp->a, &ca);
	if (rc < 0)
		return rc;
	return xfer_open_peer(pp->a, pp->addr, &pp->p);
}

static int pair_open(struct pair *pp, uint64_t seg_len, unsigned timeout_ms)
{
	return pair_open_rpc(pp, seg_len, timeout_ms, NULL, NULL);
}

static void pair_close(struct pair *pp)
{
	xfer_destroy(pp->a); /* closes p */
	xfer_destroy(pp->b);
	free(pp->seg);
}

/* Submit n requests, wait for them (bounded), return how many ended DONE. */
static size_t run_batch(struct xfer_engine *e, struct xfer_req *r, size_t n, int wait_ms)
{
	struct xfer_batch *b;
	size_t done = 0;

	if (xfer_submit(e, r, n, &b) < 0)
		return 0;
	if (xfer_wait(b, wait_ms) != n)
		fprintf(stderr, "batch of %zu not done in %d ms\n", n, wait_ms);
	xfer_cancel(b);
	for (size_t i = 0; i < n; i++)
		done += atomic_load(&r[i].status) == XFER_DONE;
	xfer_batch_free(b);
	return done;
}

static struct xfer_req req(enum xfer_op op, void *local, uint64_t len, struct xfer_peer *p,
			   uint32_t seg, uint64_t off)
{
	return (struct xfer_req){
	    .op = op, .local = local, .len = len, .peer = p, .remote_seg = seg, .remote_off = off};
}

/* ---- raw sockets ---------------------------------------------------------------------- */

static int raw_connect(const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	const char *colon = strrchr(addr, ':');
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int full_io(int fd, void *buf, size_t len, bool wr)
{
	char *p = buf;

	while (len) {
		ssize_t n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);

		if (n <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_frame(int fd, enum wire_type t, uint16_t version, const void *body, uint32_t len,
		      uint64_t req_id)
{
	uint8_t buf[WIRE_HDR_SIZE + 128];
	struct wire_hdr h;

	wire_hdr_init(&h, t, len, req_id, 0);
	h.version = version;
	wire_hdr_encode(&h, buf);
	if (len)
		memcpy(buf + WIRE_HDR_SIZE, body, len);
	return full_io(fd, buf, WIRE_HDR_SIZE + len, true);
}

static int recv_frame(int fd, struct wire_hdr *h, uint8_t *body, uint32_t cap)
{
	uint8_t raw[WIRE_HDR_SIZE];
	int rc = full_io(fd, raw, sizeof(raw), false);

	if (rc < 0)
		return rc;
	rc = wire_hdr_decode(raw, h);
	if (rc < 0)
		return rc;
	if (h->body_len > cap)
		return -EMSGSIZE;
	return full_io(fd, body, h->body_len, false);
}

/* True when the peer closes the connection (EOF or reset) within 5 s. */
static bool closed_by_peer(int fd)
{
	char buf[256];
	ssize_t n;

	do
		n = recv(fd, buf, sizeof(buf), 0);
	while (n > 0);
	return n == 0 || errno == ECONNRESET;
}

/* Initiator handshake by hand with key; returns 0 when WELCOME comes back. */
static int raw_handshake(int fd, const struct auth_key *key, uint64_t my_id, bool honest)
{
	struct wire_hello hello = {.node_id = my_id, .transports = XFER_TCP};
	struct wire_challenge ch;
	struct wire_hdr h;
	uint8_t body[WIRE_CHALLENGE_SIZE], proof[WIRE_PROOF], hb[WIRE_HELLO_SIZE];
	int rc;

	auth_nonce(hello.nonce);
	wire_hello_encode(&hello, hb);
	rc = send_frame(fd, WIRE_HELLO, WIRE_VERSION, hb, WIRE_HELLO_SIZE, 0);
	if (rc < 0)
		return rc;
	rc = recv_frame(fd, &h, body, sizeof(body));
	if (rc < 0)
		return rc;
	if (h.type != WIRE_CHALLENGE || wire_challenge_decode(body, h.body_len, &ch) < 0)
		return -EPROTO;
	auth_proof(key, 'I', hello.nonce, ch.nonce, my_id, ch.node_id, proof);
	if (!honest)
		proof[0] ^= 1;
	rc = send_frame(fd, WIRE_AUTH, WIRE_VERSION, proof, WIRE_PROOF, 0);
	if (rc < 0)
		return rc;
	rc = recv_frame(fd, &h, body, sizeof(body));
	if (rc < 0)
		return rc;
	if (h.type == WIRE_REJECT)
		return -(int)h.arg;
	return h.type == WIRE_WELCOME ? 0 : -EPROTO;
}

/* ---- a target that completes the handshake and then answers nothing ------------------- */

enum bh_mode {
	BH_SILENT, /* an honest handshake, then no answer to anything */
	BH_MUTE,   /* accepts and never says a word */
	BH_OLD,	   /* answers HELLO with REJECT EPROTO, as another version would */
	BH_V2,	   /* answers HELLO with a CHALLENGE of version 2 */
	BH_DEAF,   /* an honest handshake, then it never reads again */
};

struct blackhole {
	enum bh_mode mode;
	int lfd, wake[2];
	char addr[64];
	pthread_t thr;
	struct auth_key key;
	int fds[64];
	int nfds;
	atomic_int accepted; /* handshakes completed */
	atomic_bool kill;    /* close every connection and the listener */
};

static void *bh_main(void *arg)
{
	struct blackhole *bh = arg;
	struct pollfd pf[66];
	char buf[65536];

	for (;;) {
		int n = 0;

		pf[n++] = (struct pollfd){.fd = bh->wake[0], .events = POLLIN};
		pf[n++] = (struct pollfd){.fd = bh->lfd, .events = POLLIN};
		for (int i = 0; i < bh->nfds && bh->mode != BH_DEAF; i++)
			pf[n++] = (struct pollfd){.fd = bh->fds[i], .events = POLLIN};
		if (poll(pf, (nfds_t)n, -1) < 0)
			continue;
		if (pf[0].revents)
			break;
		if (pf[1].revents & POLLIN) {
			int fd = accept(bh->lfd, NULL, NULL);
			uint8_t body[WIRE_CHALLENGE_SIZE];
			struct wire_hdr h;
			struct wire_hello hello;
			struct wire_challenge ch = {.node_id = 77, .transports = XFER_TCP};

			if (fd >= 0 && bh->mode == BH_MUTE && bh->nfds < 64) {
				bh->fds[bh->nfds++] = fd;
				continue;
			}
			/* the target's side of the handshake, honest, then silence */
			if (fd >= 0 && recv_frame(fd, &h, body, sizeof(body)) == 0 &&
			    wire_hello_decode(body, h.body_len, &hello) == 0 &&
			    bh->mode == BH_OLD) {
				struct wire_hdr rj;
				uint8_t raw[WIRE_HDR_SIZE];

				wire_hdr_init(&rj, WIRE_REJECT, 0, 0, EPROTO);
				wire_hdr_encode(&rj, raw);
				full_io(fd, raw, sizeof(raw), true);
			} else if (fd >= 0 && h.type == WIRE_HELLO) {
				auth_nonce(ch.nonce);
				auth_proof(&bh->key, 'T', hello.nonce, ch.nonce, hello.node_id, 77,
					   ch.proof);
				wire_challenge_encode(&ch, body);
				send_frame(fd, WIRE_CHALLENGE,
					   bh->mode == BH_V2 ? WIRE_VERSION + 1 : WIRE_VERSION,
					   body, WIRE_CHALLENGE_SIZE, 0);
				if (recv_frame(fd, &h, body, sizeof(body)) == 0) {
					send_frame(fd, WIRE_WELCOME, WIRE_VERSION, NULL, 0, 0);
					atomic_fetch_add(&bh->accepted, 1);
					if (bh->nfds < 64) {
						bh->fds[bh->nfds++] = fd;
						fd = -1;
					}
				}
			}
			if (fd >= 0)
				close(fd);
		}
		for (int i = 2, k = 0; i < n; i++, k++) {
			if (!pf[i].revents || recv(pf[i].fd, buf, sizeof(buf), MSG_DONTWAIT) != 0)
				continue;
			/* the peer closed this one */
			for (int j = 0; j < bh->nfds; j++) {
				if (bh->fds[j] == pf[i].fd) {
					close(pf[i].fd);
					bh->fds[j] = bh->fds[--bh->nfds];
					break;
				}
			}
		}
	}
	for (int i = 0; i < bh->nfds; i++)
		close(bh->fds[i]);
	return NULL;
}

static int bh_start(struct blackhole *bh, enum bh_mode mode)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);

	memset(bh, 0, sizeof(*bh));
	bh->mode = mode;
	if (auth_key_init(&bh->key, secret, strlen(secret)) < 0 || pipe(bh->wake) < 0)
		return -1;
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	bh->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (bh->lfd < 0 || bind(bh->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(bh->lfd, 64) < 0 || getsockname(bh->lfd, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	snprintf(bh->addr, sizeof(bh->addr), "127.0.0.1:%u", ntohs(sa.sin_port));
	return pthread_create(&bh->thr, NULL, bh_main, bh) ? -1 : 0;
}

/* Stop the thread and close every connection: to the peer, a process that died. */
static void bh_stop(struct blackhole *bh)
{
	char c = 1;

	if (write(bh->wake[1], &c, 1) != 1)
		return;
	pthread_join(bh->thr, NULL);
	close(bh->lfd);
	close(bh->wake[0]);
	close(bh->wake[1]);
}

/* ---- a relay that can cut its first connection mid-stream ----------------------------- */

struct relay {
	int lfd;
	char addr[64];
	char target[64];
	pthread_t thr;
	atomic_int accepted;
	uint64_t cut_after; /* bytes target → initiator on connection 0 before it is cut */
	atomic_bool stop;
	pthread_t pumps[64];
	int npumps;
};

struct pump {
	struct relay *r;
	int a, b; /* initiator side, target side */
	int idx;
};

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	char buf[65536];
	uint64_t down = 0;
	struct pollfd pf[2] = {{.fd = p->a, .events = POLLIN}, {.fd = p->b, .events = POLLIN}};

	while (!atomic_load(&p->r->stop)) {
		if (poll(pf, 2, 50) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (!pf[i].revents)
				continue;
			n = recv(pf[i].fd, buf, sizeof(buf), 0);
			if (n <= 0 || full_io(pf[1 - i].fd, buf, (size_t)n, true) < 0)
				goto out;
			if (i == 1 && p->idx == 0 && p->r->cut_after &&
			    (down += (uint64_t)n) >= p->r->cut_after)
				goto out;
		}
	}
out:
	close(p->a);
	close(p->b);
	free(p);
	return NULL;
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;

	while (!atomic_load(&r->stop)) {
		struct pollfd pf = {.fd = r->lfd, .events = POLLIN};
		struct pump *p;
		int a, b;

		if (poll(&pf, 1, 50) <= 0)
			continue;
		a = accept(r->lfd, NULL, NULL);
		if (a < 0)
			continue;
		b = raw_connect(r->target);
		p = malloc(sizeof(*p));
		if (b < 0 || !p || r->npumps == 64) {
			close(a);
			if (b >= 0)
				close(b);
			free(p);
			continue;
		}
		*p =
		    (struct pump){.r = r, .a = a, .b = b, .idx = atomic_fetch_add(&r->accepted, 1)};
		if (pthread_create(&r->pumps[r->npumps], NULL, pump_main, p) == 0)
			r->npumps++;
	}
	for (int i = 0; i < r->npumps; i++)
		pthread_join(r->pumps[i], NULL);
	return NULL;
}

static int relay_start(struct relay *r, const char *target, uint64_t cut_after)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);

	memset(r, 0, sizeof(*r));
	snprintf(r->target, sizeof(r->target), "%s", target);
	r->cut_after = cut_after;
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(r->lfd, 64) < 0 || getsockname(r->lfd, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%u", ntohs(sa.sin_port));
	return pthread_create(&r->thr, NULL, relay_main, r) ? -1 : 0;
}

static void relay_stop(struct relay *r)
{
	atomic_store(&r->stop, true);
	pthread_join(r->thr, NULL);
	close(r->lfd);
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_create(void)
{
	struct xfer_config c = config("127.0.0.1:0", secret, 0);
	struct xfer_engine *e;
	const char *why = NULL;
	struct rdma_dev devs[4];
	const char *pwhy = NULL;
	char addr[64];
	unsigned t;

	c.secret_len = XFER_SECRET_MIN - 1;
	CHECK(xfer_create(&e, &c) == -EINVAL);
	c.secret = NULL;
	c.secret_len = sizeof(secret);
	CHECK(xfer_create(&e, &c) == -EINVAL);
	c = config("127.0.0.1:0", secret, 0);
	REQUIRE(xfer_create(&e, &c) == 0);
	CHECK(xfer_node_id(e) != 0);
	REQUIRE(xfer_listen_addr(e, addr, sizeof(addr)) == 0);
	CHECK(strncmp(addr, "127.0.0.1:", 10) == 0 && atoi(addr + 10) > 0);
	CHECK(xfer_listen_addr(e, addr, 5) == -ENOSPC);
	t = xfer_transports(e, &why);
	CHECK(t & XFER_TCP);
	if (rdma_probe(devs, 4, &pwhy) == 0) {
		/* no RDMA device here: TCP only, and rdma_probe's reason */
		CHECK(!(t & XFER_RDMA));
		CHECK(why && pwhy && strcmp(why, pwhy) == 0);
	} else {
		printf("     (RDMA device found: transports 0x%x)\n", t);
	}
	xfer_destroy(e);

	/* RDMA off by configuration: never RDMA, with a reason */
	c.transports = XFER_TCP;
	c.listen = NULL;
	c.node_id = 42;
	REQUIRE(xfer_create(&e, &c) == 0);
	CHECK(xfer_transports(e, &why) == XFER_TCP && why != NULL);
	CHECK(xfer_node_id(e) == 42);
	CHECK(xfer_listen_addr(e, addr, sizeof(addr)) == -ENOTCONN);
	xfer_destroy(e);

	c = config("256.1.2.3:0", secret, 0);
	CHECK(xfer_create(&e, &c) < 0);
	c = config("nonsense", secret, 0);
	CHECK(xfer_create(&e, &c) == -EINVAL);
}

static void test_sizes(void)
{
	static const uint64_t sizes[] = {1,	   4096,      65536,	      262144,
					 2u << 20, 16u << 20, (64u << 20) + 1};
	struct xfer_peer_info info;
	struct pair pp;
	uint64_t bytes = 0;

	REQUIRE(pair_open(&pp, (80u << 20) + 4096, 0) == 0);
	xfer_peer_info(pp.p, &info);
	CHECK(info.node_id == xfer_node_id(pp.b));
	CHECK(info.transports == XFER_TCP && info.paths == 4);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t len = sizes[i], off = 4093 * (i + 1);
		char *buf = malloc(len);
		struct xfer_req r;

		REQUIRE(buf);
		/* READ: remote → local */
		memset(buf, 0, len);
		r = req(XFER_READ, buf, len, pp.p, pp.seg_id, off);
		CHECK(run_batch(pp.a, &r, 1, 30000) == 1);
		CHECK(r.error == 0);
		CHECK(memcmp(buf, pp.seg + off, len) == 0);
		/* WRITE: local → remote */
		fill(buf, len, 100 + i);
		r = req(XFER_WRITE, buf, len, pp.p, pp.seg_id, off);
		CHECK(run_batch(pp.a, &r, 1, 30000) == 1);
		CHECK(memcmp(buf, pp.seg + off, len) == 0);
		bytes += len;
		free(buf);
	}
	xfer_peer_info(pp.p, &info);
	CHECK(info.bytes_read == bytes && info.bytes_written == bytes);
	CHECK(info.failures == 0 && info.retries == 0);
	pair_close(&pp);
}

static void test_batch(void)
{
	enum { N = 32, LEN = 200000 };
	struct xfer_req r[N];
	struct xfer_batch *b;
	struct pair pp;
	char *buf;

	REQUIRE(pair_open(&pp, N * LEN * 2, 0) == 0);
	buf = malloc(N * LEN);
	REQUIRE(buf);
	fill(buf, N * LEN, 7);
	/* even requests READ the first half, odd ones WRITE the second half */
	for (int i = 0; i < N; i++)
		r[i] = req(i % 2 ? XFER_WRITE : XFER_READ, buf + i * LEN, LEN - i, pp.p, pp.seg_id,
			   (uint64_t)i * LEN + (i % 2 ? N * LEN : 0));
	REQUIRE(xfer_submit(pp.a, r, N, &b) == 0);
	CHECK(xfer_wait(b, 30000) == N);
	CHECK(xfer_poll(b) == N);
	for (int i = 0; i < N; i++) {
		CHECK(atomic_load(&r[i].status) == XFER_DONE);
		if (i % 2)
			CHECK(memcmp(pp.seg + N * LEN + i * LEN, buf + i * LEN, LEN - i) == 0);
		else
			CHECK(memcmp(pp.seg + i * LEN, buf + i * LEN, LEN - i) == 0);
	}
	xfer_batch_free(b);
	free(buf);
	pair_close(&pp);
}

/* Thousands of tiny requests in one batch: the target queues more replies than it lets
 * itself (it stops reading until they are sent), and everything still arrives. */
static void test_tiny(void)
{
	enum { N = 6000, LEN = 64 };
	struct xfer_req *r = calloc(N, sizeof(*r));
	char *buf = malloc(N * LEN);
	struct pair pp;

	REQUIRE(r && buf);
	REQUIRE(pair_open(&pp, 2 * N * LEN, 0) == 0);
	fill(buf, N * LEN, 11);
	for (int i = 0; i < N; i++)
		r[i] = req(i % 3 ? XFER_READ : XFER_WRITE, buf + i * LEN, LEN, pp.p, pp.seg_id,
			   (uint64_t)i * LEN);
	CHECK(run_batch(pp.a, r, N, 30000) == N);
	CHECK(memcmp(buf, pp.seg, N * LEN) == 0);
	pair_close(&pp);
	free(buf);
	free(r);
}

/* xfer_unregister while requests are served from the segment: it waits for them, so the
 * memory can be freed right after it returns (ASan checks nothing reads it later). */
static void test_unregister_busy(void)
{
	enum { N = 8, LEN = 8 << 20 };
	struct xfer_req r[N];
	struct xfer_batch *b;
	struct pair pp;
	char *buf = malloc((size_t)N * LEN);
	int done = 0;

	REQUIRE(buf);
	REQUIRE(pair_open(&pp, LEN, 0) == 0);
	for (int i = 0; i < N; i++)
		r[i] = req(i % 2 ? XFER_WRITE : XFER_READ, buf + (size_t)i * LEN, LEN, pp.p,
			   pp.seg_id, 0);
	REQUIRE(xfer_submit(pp.a, r, N, &b) == 0);
	usleep(2000);
	CHECK(xfer_unregister(pp.b, pp.seg_id) == 0);
	free(pp.seg);
	pp.seg = NULL;
	CHECK(xfer_wait(b, 30000) == N);
	for (int i = 0; i < N; i++) {
		CHECK(r[i].status == XFER_DONE ||
		      (r[i].status == XFER_FAILED && r[i].error == ENOENT));
		done += r[i].status == XFER_DONE;
	}
	xfer_batch_free(b);
	pair_close(&pp);
	free(buf);
}

struct worker {
	struct pair *pp;
	int id;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pair *pp = w->pp;
	enum { REGION = 8 << 20, N = 8 };
	uint64_t base = (uint64_t)w->id * REGION;
	char *buf = malloc(REGION);
	unsigned seed = (unsigned)w->id * 7919u + 1;

	if (!buf) {
		w->failures++;
		return NULL;
	}
	for (int round = 0; round < 30; round++) {
		struct xfer_req r[N];
		uint64_t off[N], len[N], cur = 0;

		for (int i = 0; i < N; i++) {
			len[i] = 1 + (uint64_t)rand_r(&seed) % (REGION / N - 1);
			off[i] = cur;
			cur += REGION / N;
			fill(buf + off[i], len[i],
			     (uint64_t)round * 100 + (uint64_t)i + 1000 * w->id);
			r[i] =
			    req(XFER_WRITE, buf + off[i], len[i], pp->p, pp->seg_id, base + off[i]);
		}
		if (run_batch(pp->a, r, N, 30000) != N)
			w->failures++;
		memset(buf, 0, REGION);
		for (int i = 0; i < N; i++)
			r[i] =
			    req(XFER_READ, buf + off[i], len[i], pp->p, pp->seg_id, base + off[i]);
		if (run_batch(pp->a, r, N, 30000) != N)
			w->failures++;
		for (int i = 0; i < N; i++)
			if (memcmp(buf + off[i], pp->seg + base + off[i], len[i]))
				w->failures++;
	}
	free(buf);
	return NULL;
}

static void test_concurrent(void)
{
	enum { T = 4 };
	struct worker w[T];
	pthread_t th[T];
	struct pair pp;

	REQUIRE(pair_open(&pp, T * (8u << 20), 0) == 0);
	for (int i = 0; i < T; i++) {
		w[i] = (struct worker){.pp = &pp, .id = i};
		REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].failures == 0);
	}
	pair_close(&pp);
}

static void test_target_errors(void)
{
	char buf[8192];
	struct xfer_req r[6];
	struct xfer_batch *b;
	struct pair pp;

	REQUIRE(pair_open(&pp, 1 << 20, 0) == 0);
	r[0] = req(XFER_READ, buf, 4096, pp.p, pp.seg_id, (1 << 20) - 100); /* past the end */
	r[1] = req(XFER_WRITE, buf, 8192, pp.p, pp.seg_id, (1 << 20) - 4096);
	r[2] = req(XFER_READ, buf, 16, pp.p, pp.seg_id + 1000, 0); /* no such segment */
	r[3] = req(XFER_WRITE, buf, 16, pp.p, pp.seg_id + 1000, 0);
	r[4] = req(XFER_READ, buf, 0, pp.p, pp.seg_id, 0); /* bad arguments */
	r[5] = req(XFER_READ, NULL, 16, pp.p, pp.seg_id, 0);
	REQUIRE(xfer_submit(pp.a, r, 6, &b) == 0);
	CHECK(xfer_wait(b, 10000) == 6);
	CHECK(r[0].status == XFER_FAILED && r[0].error == ERANGE);
	CHECK(r[1].status == XFER_FAILED && r[1].error == ERANGE);
	CHECK(r[2].status == XFER_FAILED && r[2].error == ENOENT);
	CHECK(r[3].status == XFER_FAILED && r[3].error == ENOENT);
	CHECK(r[4].status == XFER_FAILED && r[4].error == EINVAL);
	CHECK(r[5].status == XFER_FAILED && r[5].error == EINVAL);
	xfer_batch_free(b);
	CHECK(xfer_submit(pp.a, r, 0, &b) == -EINVAL);

	/* the refused WRITE bodies were drained: the connections still work */
	for (int i = 0; i < 8; i++) {
		r[0] = req(XFER_READ, buf, 4096, pp.p, pp.seg_id, 4096 * (uint64_t)i);
		CHECK(run_batch(pp.a, r, 1, 10000) == 1);
		CHECK(memcmp(buf, pp.seg + 4096 * i, 4096) == 0);
	}
	/* after unregister, the segment is gone */
	CHECK(xfer_unregister(pp.b, pp.seg_id) == 0);
	CHECK(xfer_unregister(pp.b, pp.seg_id) == -ENOENT);
	r[0] = req(XFER_READ, buf, 16, pp.p, pp.seg_id, 0);
	CHECK(run_batch(pp.a, r, 1, 10000) == 0);
	CHECK(r[0].status == XFER_FAILED && r[0].error == ENOENT);
	CHECK(xfer_register(pp.b, buf, 0, &pp.seg_id) == -EINVAL);
	pair_close(&pp);
}

static void test_wrong_secret(void)
{
	struct xfer_config cc = config(NULL, other_secret, 0);
	struct xfer_engine *c;
	struct xfer_peer *p;
	struct auth_key good, bad;
	struct pair pp;
	int fd;

	REQUIRE(pair_open(&pp, 1 << 20, 0) == 0);
	/* the initiator refuses a target that cannot prove it knows our secret */
	REQUIRE(xfer_create(&c, &cc) == 0);
	CHECK(xfer_open_peer(c, pp.addr, &p) == -EACCES);
	xfer_destroy(c);

	/* the target refuses an initiator whose proof is wrong, and says so */
	REQUIRE(auth_key_init(&good, secret, strlen(secret)) == 0);
	REQUIRE(auth_key_init(&bad, other_secret, strlen(other_secret)) == 0);
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	CHECK(raw_handshake(fd, &bad, 5, true) == -EACCES);
	CHECK(closed_by_peer(fd));
	close(fd);
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	CHECK(raw_handshake(fd, &good, 5, false) == -EACCES); /* a tampered proof */
	close(fd);
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	CHECK(raw_handshake(fd, &good, 5, true) == 0);
	close(fd);

	/* an engine closed or absent: refused connection */
	CHECK(xfer_open_peer(pp.a, "127.0.0.1:1", &p) == -ECONNREFUSED);
	CHECK(xfer_open_peer(pp.a, "no-port", &p) == -EINVAL);
	auth_key_clear(&good);
	auth_key_clear(&bad);
	pair_close(&pp);
}

/* What xfer_open_peer says of targets that misbehave in the handshake. */
static void test_open_refused(void)
{
	struct xfer_config ca = config(NULL, secret, 300);
	struct xfer_engine *a;
	struct xfer_peer *p;
	struct blackhole bh;
	uint64_t t0;

	REQUIRE(xfer_create(&a, &ca) == 0);
	REQUIRE(bh_start(&bh, BH_OLD) == 0);
	CHECK(xfer_open_peer(a, bh.addr, &p) == -EPROTO);
	bh_stop(&bh);
	REQUIRE(bh_start(&bh, BH_V2) == 0);
	CHECK(xfer_open_peer(a, bh.addr, &p) == -EPROTO);
	bh_stop(&bh);
	REQUIRE(bh_start(&bh, BH_MUTE) == 0);
	t0 = now_ms();
	CHECK(xfer_open_peer(a, bh.addr, &p) == -ETIMEDOUT);
	CHECK(now_ms() - t0 < 300 + 1000);
	bh_stop(&bh);
	xfer_destroy(a);
}

static void test_version(void)
{
	struct wire_hello hello = {.node_id = 9};
	uint8_t hb[WIRE_HELLO_SIZE];
	struct wire_hdr h;
	struct pair pp;
	int fd;

	REQUIRE(pair_open(&pp, 1 << 20, 0) == 0);
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	auth_nonce(hello.nonce);
	wire_hello_encode(&hello, hb);
	CHECK(send_frame(fd, WIRE_HELLO, WIRE_VERSION + 1, hb, WIRE_HELLO_SIZE, 0) == 0);
	CHECK(recv_frame(fd, &h, hb, sizeof(hb)) == 0);
	CHECK(h.type == WIRE_REJECT && h.arg == EPROTO);
	CHECK(closed_by_peer(fd));
	close(fd);
	pair_close(&pp);
}

static void test_malformed(void)
{
	uint8_t junk[256], rw[WIRE_RW_SIZE + 1] = {0};
	struct auth_key key;
	struct xfer_req r;
	char buf[4096];
	struct pair pp;
	int fd;

	REQUIRE(pair_open(&pp, 1 << 20, 1000) == 0);
	REQUIRE(auth_key_init(&key, secret, strlen(secret)) == 0);
	/* garbage before the handshake */
	memset(junk, 0xab, sizeof(junk));
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	CHECK(full_io(fd, junk, sizeof(junk), true) == 0);
	CHECK(closed_by_peer(fd));
	close(fd);
	/* a frame of a type the target never takes, after an honest handshake */
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	REQUIRE(raw_handshake(fd, &key, 6, true) == 0);
	CHECK(send_frame(fd, WIRE_READ_DATA, WIRE_VERSION, junk, 16, 1) == 0);
	CHECK(closed_by_peer(fd));
	close(fd);
	/* a READ whose body has a reserved field set */
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	REQUIRE(raw_handshake(fd, &key, 6, true) == 0);
	memset(rw, 0xff, sizeof(rw));
	CHECK(send_frame(fd, WIRE_READ, WIRE_VERSION, rw, WIRE_RW_SIZE, 1) == 0);
	CHECK(closed_by_peer(fd));
	close(fd);
	/* a silent client is dropped once the handshake is overdue (1 s at least) */
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	{
		struct timeval tv = {.tv_sec = 10};
		uint64_t t0 = now_ms();

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		CHECK(closed_by_peer(fd));
		CHECK(now_ms() - t0 >= 900 && now_ms() - t0 < 3000);
	}
	close(fd);
	/* and the engine keeps serving its real peer */
	r = req(XFER_READ, buf, sizeof(buf), pp.p, pp.seg_id, 12345);
	CHECK(run_batch(pp.a, &r, 1, 10000) == 1);
	CHECK(memcmp(buf, pp.seg + 12345, sizeof(buf)) == 0);
	auth_key_clear(&key);
	pair_close(&pp);
}

static void test_timeout(void)
{
	enum { N = 8, TMO = 400 };
	struct xfer_config ca = config(NULL, secret, TMO);
	struct xfer_req r[N];
	struct blackhole bh;
	struct xfer_engine *a;
	struct xfer_peer *p;
	struct xfer_batch *b;
	char *buf = malloc(N * 65536);
	uint64_t t0, dt;

	REQUIRE(buf);
	REQUIRE(bh_start(&bh, BH_SILENT) == 0);
	REQUIRE(xfer_create(&a, &ca) == 0);
	REQUIRE(xfer_open_peer(a, bh.addr, &p) == 0);
	for (int i = 0; i < N; i++)
		r[i] = req(i % 2 ? XFER_WRITE : XFER_READ, buf + i * 65536, 65536, p, 1,
			   (uint64_t)i * 65536);
	t0 = now_ms();
	REQUIRE(xfer_submit(a, r, N, &b) == 0);
	CHECK(xfer_wait(b, TMO + 3000) == N);
	dt = now_ms() - t0;
	CHECK(dt >= TMO - 5 && dt < TMO + 1500);
	for (int i = 0; i < N; i++)
		CHECK(r[i].status == XFER_TIMEDOUT);
	xfer_batch_free(b);
	free(buf); /* the engine must not touch the buffers any more */

	/* connections silent with requests out are pinged, then given up after twice the
	 * timeout and reconnected in the background */
	CHECK(atomic_load(&bh.accepted) == 4);
	for (int i = 0; i < 200 && atomic_load(&bh.accepted) < 8; i++)
		usleep(10000);
	CHECK(atomic_load(&bh.accepted) >= 8);
	dt = now_ms() - t0;
	CHECK(dt >= 2 * TMO && dt < 2 * TMO + 1500);

	/* a second batch times out the same way; then xfer_destroy with it pending */
	buf = malloc(N * 65536);
	REQUIRE(buf);
	for (int i = 0; i < N; i++)
		r[i] = req(XFER_READ, buf + i * 65536, 65536, p, 1, 0);
	REQUIRE(xfer_submit(a, r, N, &b) == 0);
	CHECK(xfer_wait(b, 50) == 0);
	xfer_destroy(a);
	CHECK(xfer_poll(b) == N);
	for (int i = 0; i < N; i++)
		CHECK(r[i].status == XFER_CANCELLED);
	xfer_batch_free(b);
	free(buf);
	bh_stop(&bh);
}

static void test_cancel(void)
{
	enum { N = 8, LEN = 8 << 20 };
	struct xfer_config ca = config(NULL, secret, 0);
	struct xfer_req r[N];
	struct xfer_engine *a;
	struct xfer_peer *p;
	struct xfer_batch *b;
	struct blackhole bh;
	struct pair pp;
	char *bufs[N], check[65536];
	int cancelled = 0;

	/* against a peer that never answers: every request ends CANCELLED at once */
	REQUIRE(bh_start(&bh, BH_SILENT) == 0);
	REQUIRE(xfer_create(&a, &ca) == 0);
	REQUIRE(xfer_open_peer(a, bh.addr, &p) == 0);
	for (int i = 0; i < N; i++) {
		bufs[i] = malloc(65536);
		REQUIRE(bufs[i]);
		r[i] = req(XFER_READ, bufs[i], 65536, p, 1, 0);
	}
	REQUIRE(xfer_submit(a, r, N, &b) == 0);
	xfer_cancel(b);
	CHECK(xfer_poll(b) == N);
	for (int i = 0; i < N; i++) {
		CHECK(r[i].status == XFER_CANCELLED && r[i].error == ECANCELED);
		free(bufs[i]);
	}
	xfer_batch_free(b);
	xfer_close_peer(p);
	xfer_destroy(a);
	bh_stop(&bh);

	/* WRITEs stuck half sent to a peer that stopped reading: the rest of each frame is
	 * sent from the engine's own copy, never from the freed buffers */
	REQUIRE(bh_start(&bh, BH_DEAF) == 0);
	REQUIRE(xfer_create(&a, &ca) == 0);
	REQUIRE(xfer_open_peer(a, bh.addr, &p) == 0);
	for (int i = 0; i < N; i++) {
		bufs[i] = malloc(LEN);
		REQUIRE(bufs[i]);
		memset(bufs[i], i, LEN);
		r[i] = req(XFER_WRITE, bufs[i], LEN, p, 1, 0);
	}
	REQUIRE(xfer_submit(a, r, N, &b) == 0);
	CHECK(xfer_wait(b, 100) == 0);
	xfer_cancel(b);
	for (int i = 0; i < N; i++) {
		CHECK(r[i].status == XFER_CANCELLED);
		free(bufs[i]);
	}
	xfer_batch_free(b);
	xfer_destroy(a);
	bh_stop(&bh);

	/* against a real target with data arriving (READ) or leaving (WRITE) at any point of
	 * the transfer: buffers are freed right after xfer_cancel (ASan would see a late
	 * touch), and the connections stay in step for the next requests */
	REQUIRE(pair_open(&pp, LEN, 0) == 0);
	for (int round = 0; round < 12; round++) {
		for (int i = 0; i < N; i++) {
			bufs[i] = malloc(LEN);
			REQUIRE(bufs[i]);
			if (round % 2)
				fill(bufs[i], LEN, 5);
			r[i] = req(round % 2 ? XFER_WRITE : XFER_READ, bufs[i], LEN, pp.p,
				   pp.seg_id, 0);
		}
		REQUIRE(xfer_submit(pp.a, r, N, &b) == 0);
		if (round >= 4)
			usleep((useconds_t)(round - 3) * 1000);
		xfer_cancel(b);
		for (int i = 0; i < N; i++) {
			int st = atomic_load(&r[i].status);

			CHECK(st == XFER_CANCELLED || st == XFER_DONE);
			cancelled += st == XFER_CANCELLED;
			free(bufs[i]);
		}
		CHECK(xfer_poll(b) == N);
		xfer_batch_free(b);
		for (int i = 0; i < 4; i++) {
			r[0] = req(XFER_READ, check, sizeof(check), pp.p, pp.seg_id,
				   (uint64_t)i * 100000);
			CHECK(run_batch(pp.a, r, 1, 10000) == 1);
			CHECK(memcmp(check, pp.seg + i * 100000, sizeof(check)) == 0);
		}
	}
	CHECK(cancelled > 0);
	pair_close(&pp);
}

/* A connection cut mid-transfer: its slices are retried on the others, the request is
 * DONE, and the path comes back. */
static void test_retry(void)
{
	enum { LEN = 16 << 20 };
	struct xfer_config ca = config(NULL, secret, 0);
	struct xfer_peer_info info;
	struct xfer_engine *a;
	struct xfer_peer *p;
	struct xfer_req r;
	struct relay rl;
	struct pair pp;
	char *buf = malloc(LEN);

	REQUIRE(buf);
	REQUIRE(pair_open(&pp, LEN, 0) == 0);
	REQUIRE(relay_start(&rl, pp.addr, 3u << 20) == 0);
	ca.slice_size = 256 << 10;
	REQUIRE(xfer_create(&a, &ca) == 0);
	REQUIRE(xfer_open_peer(a, rl.addr, &p) == 0);
	r = req(XFER_READ, buf, LEN, p, pp.seg_id, 0);
	CHECK(run_batch(a, &r, 1, 30000) == 1);
	CHECK(memcmp(buf, pp.seg, LEN) == 0);
	xfer_peer_info(p, &info);
	CHECK(info.retries > 0);
	CHECK(info.bytes_read == LEN);
	/* the cut path is reconnected in the background */
	for (int i = 0; i < 100 && info.paths < 4; i++) {
		usleep(20000);
		xfer_peer_info(p, &info);
	}
	CHECK(info.paths == 4);
	CHECK(atomic_load(&rl.accepted) > 4);
	fill(buf, LEN, 9);
	r = req(XFER_WRITE, buf, LEN, p, pp.seg_id, 0);
	CHECK(run_batch(a, &r, 1, 30000) == 1);
	CHECK(memcmp(buf, pp.seg, LEN) == 0);
	xfer_destroy(a);
	relay_stop(&rl);
	pair_close(&pp);
	free(buf);
}

/* A peer process killed mid-transfer: every request ends within a bound, none hangs. */
static void test_peer_killed(void)
{
	enum { N = 16, LEN = 16 << 20 };
	struct xfer_config ca = config(NULL, secret, 1000);
	struct xfer_req r[N];
	struct xfer_engine *a;
	struct xfer_peer *p;
	struct xfer_batch *b;
	char addr[64] = "";
	uint32_t seg = 0;
	int pfd[2], st, failed = 0;
	char *buf;
	pid_t pid;
	uint64_t t0;

	REQUIRE(pipe(pfd) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct xfer_config cb = config("127.0.0.1:0", secret, 1000);
		struct xfer_engine *e;
		char *mem = malloc(LEN);

		close(pfd[0]);
		if (!mem || xfer_create(&e, &cb) < 0 || xfer_register(e, mem, LEN, &seg) < 0 ||
		    xfer_listen_addr(e, addr, sizeof(addr)) < 0)
			_exit(1);
		memset(mem, 0x5a, LEN);
		if (write(pfd[1], &seg, sizeof(seg)) < 0 || write(pfd[1], addr, sizeof(addr)) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	CHECK(read(pfd[0], &seg, sizeof(seg)) == sizeof(seg));
	CHECK(read(pfd[0], addr, sizeof(addr)) == sizeof(addr));
	close(pfd[0]);
	buf = malloc((size_t)N * LEN);
	if (!buf || !addr[0] || xfer_create(&a, &ca) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		free(buf);
		REQUIRE(0);
	}
	if (xfer_open_peer(a, addr, &p) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		xfer_destroy(a);
		free(buf);
		REQUIRE(0);
	}
	for (int i = 0; i < N; i++)
		r[i] = req(XFER_READ, buf + (size_t)i * LEN, LEN, p, seg, 0);
	REQUIRE(xfer_submit(a, r, N, &b) == 0);
	/* Kill it mid-transfer: once the first request is done, most of the batch is still to
	 * come (a fixed sleep was sometimes longer than the whole batch). */
	for (t0 = now_ms(); xfer_poll(b) == 0 && now_ms() - t0 < 5000;)
		usleep(200);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	t0 = now_ms();
	CHECK(xfer_wait(b, 5000) == N);
	CHECK(now_ms() - t0 < 2500);
	for (int i = 0; i < N; i++) {
		int s = atomic_load(&r[i].status);

		CHECK(s == XFER_DONE || s == XFER_FAILED || s == XFER_TIMEDOUT);
		failed += s != XFER_DONE;
	}
	CHECK(failed > 0);
	xfer_batch_free(b);
	/* new requests fail fast: no path left (the peer is reconnected in vain) */
	r[0] = req(XFER_READ, buf, 4096, p, seg, 0);
	t0 = now_ms();
	CHECK(run_batch(a, r, 1, 5000) == 0);
	CHECK(now_ms() - t0 < 1500);
	CHECK(r[0].status == XFER_FAILED || r[0].status == XFER_TIMEDOUT);
	xfer_destroy(a);
	free(buf);
}

/* ---- metadata RPCs -------------------------------------------------------------------- */

/* The test server: the request's first byte says what to do, anything else is echoed.
 *   'F' e        fail with errno e
 *   'N' e        return -e (a handler that got the sign wrong)
 *   'S' ms(2)    sleep ms, then echo
 *   'B'          a reply one byte over XFER_RPC_MAX
 *   'R' n(4) b   a reply of n bytes, each b */
struct rpc_srv {
	atomic_int calls, entered;
	_Atomic uint64_t from;
};

static uint32_t ld32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int rpc_srv_fn(void *arg, uint64_t from, const void *req, size_t len, void **resp,
		      size_t *resp_len)
{
	struct rpc_srv *sv = arg;
	const uint8_t *q = req;

	atomic_fetch_add(&sv->calls, 1);
	atomic_store(&sv->from, from);
	if (len >= 2 && q[0] == 'F')
		return q[1];
	if (len >= 2 && q[0] == 'N')
		return -(int)q[1];
	if (len >= 3 && q[0] == 'S') {
		atomic_fetch_add(&sv->entered, 1);
		usleep((useconds_t)(q[1] | q[2] << 8) * 1000);
	}
	if (len >= 1 && q[0] == 'B') {
		*resp = calloc(1, XFER_RPC_MAX + 1);
		*resp_len = XFER_RPC_MAX + 1;
		return *resp ? 0 : ENOMEM;
	}
	if (len >= 6 && q[0] == 'R') {
		*resp_len = ld32le(q + 1);
		if (!*resp_len)
			return 0;
		*resp = malloc(*resp_len);
		if (!*resp)
			return ENOMEM;
		memset(*resp, q[5], *resp_len);
		return 0;
	}
	if (!len)
		return 0;
	*resp = malloc(len);
	if (!*resp)
		return ENOMEM;
	memcpy(*resp, req, len);
	*resp_len = len;
	return 0;
}

static void rpc_cmd_reply(uint8_t q[6], uint32_t n, uint8_t b)
{
	q[0] = 'R';
	for (int i = 0; i < 4; i++)
		q[1 + i] = (uint8_t)(n >> (8 * i));
	q[5] = b;
}

/* Echo round trips of every size up to the limit, and every error a caller can get. */
static void test_rpc_basic(void)
{
	static const size_t sizes[] = {0, 1, 2, 100, 4096, 65537, XFER_RPC_MAX - 1, XFER_RPC_MAX};
	struct rpc_srv sv = {0};
	struct pair pp;
	uint8_t *q = malloc(XFER_RPC_MAX + 1), cmd[8];
	void *resp;
	size_t rlen;

	REQUIRE(q);
	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		fill(q, n, 100 + i);
		if (n)
			q[0] = 'E';
		resp = (void *)1;
		rlen = 12345;
		CHECK(xfer_call(pp.p, q, n, &resp, &rlen, 10000) == 0);
		CHECK(rlen == n);
		if (n == 0)
			CHECK(resp == NULL);
		else
			CHECK(resp && memcmp(resp, q, n) == 0);
		free(resp);
	}
	CHECK(atomic_load(&sv.from) == xfer_node_id(pp.a));
	/* the caller's buffer is copied: the call may be given NULL for an empty request */
	CHECK(xfer_call(pp.p, NULL, 0, &resp, &rlen, 0) == 0 && !resp && rlen == 0);

	/* too large, locally: nothing is sent */
	sv.calls = 0;
	resp = (void *)1;
	CHECK(xfer_call(pp.p, q, XFER_RPC_MAX + 1, &resp, &rlen, 0) == -EMSGSIZE);
	CHECK(resp == NULL && rlen == 0);
	CHECK(atomic_load(&sv.calls) == 0);
	/* a reply too large: the target refuses to send it */
	cmd[0] = 'B';
	CHECK(xfer_call(pp.p, cmd, 1, &resp, &rlen, 0) == -EMSGSIZE && !resp);
	/* replies of every size the limit allows */
	rpc_cmd_reply(cmd, XFER_RPC_MAX, 0xa5);
	REQUIRE(xfer_call(pp.p, cmd, 6, &resp, &rlen, 10000) == 0);
	CHECK(rlen == XFER_RPC_MAX && ((uint8_t *)resp)[0] == 0xa5 &&
	      ((uint8_t *)resp)[XFER_RPC_MAX - 1] == 0xa5);
	free(resp);
	rpc_cmd_reply(cmd, 0, 0);
	CHECK(xfer_call(pp.p, cmd, 6, &resp, &rlen, 0) == 0 && !resp && rlen == 0);

	/* the handler's status, negated */
	cmd[0] = 'F';
	cmd[1] = ENOENT;
	CHECK(xfer_call(pp.p, cmd, 2, &resp, &rlen, 0) == -ENOENT && !resp && rlen == 0);
	cmd[1] = EPERM;
	CHECK(xfer_call(pp.p, cmd, 2, &resp, &rlen, 0) == -EPERM);
	cmd[0] = 'N';
	cmd[1] = EEXIST;
	CHECK(xfer_call(pp.p, cmd, 2, &resp, &rlen, 0) == -EEXIST);

	/* bad arguments */
	CHECK(xfer_call(NULL, cmd, 1, &resp, &rlen, 0) == -EINVAL);
	CHECK(xfer_call(pp.p, NULL, 1, &resp, &rlen, 0) == -EINVAL);
	CHECK(xfer_call(pp.p, cmd, 1, NULL, &rlen, 0) == -EINVAL);
	CHECK(xfer_call(pp.p, cmd, 1, &resp, NULL, 0) == -EINVAL);

	/* the transfers still work on the same connections */
	{
		char buf[4096];
		struct xfer_req r = req(XFER_READ, buf, sizeof(buf), pp.p, pp.seg_id, 4096);

		CHECK(run_batch(pp.a, &r, 1, 10000) == 1);
		CHECK(memcmp(buf, pp.seg + 4096, sizeof(buf)) == 0);
	}
	pair_close(&pp);

	/* no handler configured: EOPNOTSUPP, and the connection is fine */
	REQUIRE(pair_open(&pp, 1 << 20, 0) == 0);
	for (int i = 0; i < 8; i++) {
		q[0] = 'E';
		CHECK(xfer_call(pp.p, q, (size_t)i * 1000, &resp, &rlen, 0) == -EOPNOTSUPP);
		CHECK(resp == NULL && rlen == 0);
	}
	pair_close(&pp);
	free(q);
}

struct rpc_worker {
	struct xfer_peer *p;
	int id, n;	   /* calls to make */
	atomic_bool *stop; /* when set: call until it is, instead of n times */
	int calls, failures;
};

static void *rpc_worker_main(void *arg)
{
	struct rpc_worker *w = arg;
	unsigned seed = (unsigned)w->id * 104729u + 3;
	uint8_t *buf = malloc(16384);

	if (!buf) {
		w->failures++;
		return NULL;
	}
	for (int i = 0; w->stop ? !atomic_load(w->stop) : i < w->n; i++) {
		size_t n = 1 + (size_t)rand_r(&seed) % 16384;
		void *resp = NULL;
		size_t rlen = 0;
		int rc;

		fill(buf, n, (uint64_t)w->id << 32 | (uint64_t)i);
		buf[0] = 'E';
		if (n > 4) /* who and which, so a reply given to the wrong caller shows */
			memcpy(buf + 1, &i, 4);
		rc = xfer_call(w->p, buf, n, &resp, &rlen, 20000);
		if (rc != 0 || rlen != n || memcmp(resp, buf, n) != 0) {
			if (w->failures++ < 3)
				fprintf(stderr, "rpc worker %d call %d: %d (%zu of %zu bytes)\n",
					w->id, i, rc, rlen, n);
		}
		free(resp);
		w->calls = i + 1;
	}
	free(buf);
	return NULL;
}

/* 8 threads x 500 calls at once on one peer, every reply checked. */
static void test_rpc_concurrent(void)
{
	enum { T = 8, N = 500 };
	struct rpc_srv sv = {0};
	struct rpc_worker w[T];
	pthread_t th[T];
	struct pair pp;

	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	for (int i = 0; i < T; i++) {
		w[i] = (struct rpc_worker){.p = pp.p, .id = i, .n = N};
		REQUIRE(pthread_create(&th[i], NULL, rpc_worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].failures == 0 && w[i].calls == N);
	}
	CHECK(atomic_load(&sv.calls) == T * N);
	pair_close(&pp);
}

/* A handler slower than the caller's patience: -ETIMEDOUT in time; the late reply (with a
 * body) is drained and the connections go on serving calls. */
static void test_rpc_timeout(void)
{
	enum { TMO = 100, SLEEP = 400, LEN = 65536 };
	struct rpc_srv sv = {0};
	struct pair pp;
	uint8_t *q = calloc(1, LEN);
	void *resp;
	size_t rlen;
	uint64_t t0, dt;

	REQUIRE(q);
	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	q[0] = 'S';
	q[1] = SLEEP & 0xff;
	q[2] = SLEEP >> 8;
	t0 = now_ms();
	resp = (void *)1;
	CHECK(xfer_call(pp.p, q, LEN, &resp, &rlen, TMO) == -ETIMEDOUT);
	dt = now_ms() - t0;
	CHECK(dt >= TMO - 5 && dt < TMO + 1000);
	CHECK(resp == NULL && rlen == 0);
	/* the handler is still asleep: the reply comes after the caller left */
	CHECK(atomic_load(&sv.entered) == 1);
	usleep((SLEEP + 200) * 1000);
	/* every connection still works (round-robin: one call each, and then some) */
	for (int i = 0; i < 8; i++) {
		q[0] = 'E';
		CHECK(xfer_call(pp.p, q, 1000 + (size_t)i, &resp, &rlen, 5000) == 0);
		CHECK(rlen == 1000u + (unsigned)i && resp && memcmp(resp, q, rlen) == 0);
		free(resp);
	}
	pair_close(&pp);
	free(q);
}

struct giveup_worker {
	struct xfer_peer *p;
	int id;
	int ok, timedout, bad;
};

static void *giveup_main(void *arg)
{
	struct giveup_worker *w = arg;
	unsigned seed = (unsigned)w->id + 77;
	uint8_t *q = malloc(XFER_RPC_MAX);

	if (!q) {
		w->bad++;
		return NULL;
	}
	for (int i = 0; i < 100; i++) {
		size_t n = XFER_RPC_MAX / 4 + (size_t)rand_r(&seed) % (XFER_RPC_MAX * 3 / 4);
		int kind = rand_r(&seed) % 3, rc;
		uint8_t b = (uint8_t)(w->id * 31 + i);
		void *resp = NULL;
		size_t rlen = 0, want = n;

		if (kind == 0) { /* a large request, echoed: give-ups while it is being sent */
			memset(q, b, n);
			q[0] = 'E';
		} else if (kind == 1) { /* a small request, a large reply */
			rpc_cmd_reply(q, (uint32_t)n, b);
			n = 6;
		} else { /* a handler slower than some callers */
			q[0] = 'S';
			q[1] = (uint8_t)(rand_r(&seed) % 4);
			q[2] = 0;
			memset(q + 3, b, 61);
			n = want = 64;
		}
		/* 1 to 32 ms: some calls are done in time, others give up at any stage */
		rc = xfer_call(w->p, q, n, &resp, &rlen, 1 << rand_r(&seed) % 6);
		if (rc == 0 && rlen == want && ((uint8_t *)resp)[rlen - 1] == b)
			w->ok++;
		else if (rc == -ETIMEDOUT && !resp && !rlen)
			w->timedout++;
		else
			w->bad++;
		free(resp);
	}
	free(q);
	return NULL;
}

/* Callers giving up at every stage (request queued or half sent, handler running, reply half
 * received), many at once: each call ends with its reply or TIMEDOUT, nothing leaks
 * (LeakSanitizer), nothing is touched after it was freed (AddressSanitizer), and the peer
 * still answers afterwards. */
static void test_rpc_giveup(void)
{
	enum { T = 12 };
	struct rpc_srv sv = {0};
	struct giveup_worker w[T];
	pthread_t th[T];
	struct pair pp;
	uint8_t cmd[6];
	void *resp;
	size_t rlen;
	int ok = 0, timedout = 0;

	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	for (int i = 0; i < T; i++) {
		w[i] = (struct giveup_worker){.p = pp.p, .id = i};
		REQUIRE(pthread_create(&th[i], NULL, giveup_main, &w[i]) == 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].bad == 0);
		ok += w[i].ok;
		timedout += w[i].timedout;
	}
	CHECK(timedout > 0);
	printf("     give-up: %d replies, %d timed out\n", ok, timedout);
	rpc_cmd_reply(cmd, XFER_RPC_MAX, 7);
	for (int i = 0; i < 8; i++) {
		CHECK(xfer_call(pp.p, cmd, sizeof(cmd), &resp, &rlen, 10000) == 0);
		CHECK(rlen == XFER_RPC_MAX && resp && ((uint8_t *)resp)[rlen - 1] == 7);
		free(resp);
	}
	pair_close(&pp);
}

struct pending_call {
	struct xfer_peer *p;
	uint16_t sleep_ms; /* the handler's, per call */
	bool until_error;  /* call again after each reply */
	int rc, ok;
	uint64_t end_ms;
};

static void *pending_main(void *arg)
{
	struct pending_call *pc = arg;
	uint8_t q[3] = {'S', (uint8_t)pc->sleep_ms, (uint8_t)(pc->sleep_ms >> 8)};
	void *resp;
	size_t rlen;

	do {
		resp = NULL;
		pc->rc = xfer_call(pc->p, q, sizeof(q), &resp, &rlen, 20000);
		pc->ok += pc->rc == 0;
		free(resp);
	} while (pc->until_error && pc->rc == 0);
	pc->end_ms = now_ms();
	return NULL;
}

/* After the target went away: new calls are refused at once once the connections noticed. */
static void check_refused(struct xfer_peer *p)
{
	uint64_t t0 = now_ms();
	void *resp;
	size_t rlen;
	int rc;

	do
		rc = xfer_call(p, "E", 1, &resp, &rlen, 5000);
	while (rc == -ECONNRESET && now_ms() - t0 < 2000);
	CHECK(rc == -ENOTCONN);
	CHECK(now_ms() - t0 < 2000);
}

/* The target engine destroyed while threads keep calling it (handlers running, calls queued
 * behind them): every caller ends promptly with ECONNRESET or ENOTCONN, none waits for its
 * timeout; what the handlers had allocated is freed (LeakSanitizer). */
static void test_rpc_peer_destroyed(void)
{
	enum { T = 8 };
	struct rpc_srv sv = {0};
	struct pending_call pc[T];
	pthread_t th[T];
	struct pair pp;
	uint64_t t0;

	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	for (int i = 0; i < T; i++) {
		pc[i] = (struct pending_call){.p = pp.p, .sleep_ms = 20, .until_error = true};
		REQUIRE(pthread_create(&th[i], NULL, pending_main, &pc[i]) == 0);
	}
	for (t0 = now_ms(); atomic_load(&sv.entered) < 2 * T && now_ms() - t0 < 5000;)
		usleep(1000);
	t0 = now_ms();
	xfer_destroy(pp.b);
	pp.b = NULL;
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		CHECK(pc[i].rc == -ECONNRESET || pc[i].rc == -ENOTCONN);
		CHECK(pc[i].end_ms - t0 < 3000);
		CHECK(pc[i].ok > 0);
	}
	check_refused(pp.p);
	pair_close(&pp);
}

/* A target process killed while its handlers sleep on our calls: every call ends ECONNRESET
 * promptly. */
static void test_rpc_peer_killed(void)
{
	enum { T = 8 };
	struct xfer_config ca = config(NULL, secret, 0);
	struct pending_call pc[T];
	pthread_t th[T];
	struct xfer_engine *a;
	struct xfer_peer *p;
	char addr[64] = "";
	int pfd[2], st;
	pid_t pid;
	uint64_t t0, last = 0;

	REQUIRE(pipe(pfd) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		static struct rpc_srv sv;
		struct xfer_config cb = config("127.0.0.1:0", secret, 0);
		struct xfer_engine *e;

		close(pfd[0]);
		cb.rpc = rpc_srv_fn;
		cb.rpc_arg = &sv;
		if (xfer_create(&e, &cb) < 0 || xfer_listen_addr(e, addr, sizeof(addr)) < 0 ||
		    write(pfd[1], addr, sizeof(addr)) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	CHECK(read(pfd[0], addr, sizeof(addr)) == sizeof(addr));
	close(pfd[0]);
	if (!addr[0] || xfer_create(&a, &ca) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		REQUIRE(0);
	}
	if (xfer_open_peer(a, addr, &p) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		xfer_destroy(a);
		REQUIRE(0);
	}
	for (int i = 0; i < T; i++) {
		pc[i] = (struct pending_call){.p = p, .sleep_ms = 2000};
		if (pthread_create(&th[i], NULL, pending_main, &pc[i]))
			pc[i].p = NULL;
	}
	usleep(200000); /* every call sent; the first handlers asleep */
	t0 = now_ms();	/* before the kill: calls may end before waitpid returns */
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	for (int i = 0; i < T; i++) {
		if (!pc[i].p) {
			CHECK(0);
			continue;
		}
		pthread_join(th[i], NULL);
		CHECK(pc[i].rc == -ECONNRESET);
		CHECK(pc[i].end_ms - t0 < 2500);
		if (pc[i].end_ms > last)
			last = pc[i].end_ms;
	}
	printf("     the last call ended %llu ms after the kill\n",
	       (unsigned long long)(last > t0 ? last - t0 : 0));
	check_refused(p);
	xfer_destroy(a);
}

/* A raw client that sends RPCs asking for 1 MiB replies and never reads: the target stops
 * reading once a bounded amount of replies is queued, instead of running every request and
 * queueing up to REPLY_HIGH MiB. Every request it took is answered when the client reads. */
static void test_rpc_flood(void)
{
	enum { N = 1000, QLEN = 65536 };
	struct rpc_srv sv = {0};
	struct timeval tv = {.tv_sec = 1};
	struct auth_key key;
	struct wire_hdr h;
	struct pair pp;
	uint8_t *frame = calloc(1, WIRE_HDR_SIZE + QLEN), *body = malloc(XFER_RPC_MAX);
	int fd, sent = 0, handled, got = 0, rc;

	REQUIRE(frame && body);
	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	REQUIRE(auth_key_init(&key, secret, strlen(secret)) == 0);
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	REQUIRE(raw_handshake(fd, &key, 9, true) == 0);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	for (sent = 0; sent < N; sent++) {
		wire_hdr_init(&h, WIRE_RPC, QLEN, (uint64_t)sent + 1, 0);
		wire_hdr_encode(&h, frame);
		rpc_cmd_reply(frame + WIRE_HDR_SIZE, XFER_RPC_MAX, (uint8_t)sent);
		if (full_io(fd, frame, WIRE_HDR_SIZE + QLEN, true) < 0)
			break; /* the target stopped reading: our send timed out */
	}
	handled = atomic_load(&sv.calls);
	printf("     flood: %d requests sent, %d served before the target stopped reading\n", sent,
	       handled);
	CHECK(sent < N);
	CHECK(handled < 100);
	/* read the replies: the target goes on with what it had buffered */
	tv.tv_sec = 5;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (; got < sent; got++) {
		uint8_t raw[WIRE_HDR_SIZE];

		rc = full_io(fd, raw, sizeof(raw), false);
		if (rc == 0)
			rc = wire_hdr_decode(raw, &h);
		if (rc == 0 && h.body_len <= XFER_RPC_MAX)
			rc = full_io(fd, body, h.body_len, false);
		if (rc < 0 || h.type != WIRE_RPC_REPLY || h.arg != 0 ||
		    h.req_id != (uint64_t)got + 1 || h.body_len != XFER_RPC_MAX ||
		    body[0] != (uint8_t)got || body[XFER_RPC_MAX - 1] != (uint8_t)got)
			break;
	}
	CHECK(got == sent);
	close(fd);
	auth_key_clear(&key);
	pair_close(&pp);
	free(frame);
	free(body);
}

/* RPC frames that break the rules close their connection, on either side. */
static void test_rpc_malformed(void)
{
	struct rpc_srv sv = {0};
	struct auth_key key;
	struct pair pp;
	uint8_t raw[WIRE_HDR_SIZE];
	struct wire_hdr h;
	void *resp;
	size_t rlen;
	int fd;

	REQUIRE(pair_open_rpc(&pp, 1 << 20, 0, rpc_srv_fn, &sv) == 0);
	REQUIRE(auth_key_init(&key, secret, strlen(secret)) == 0);
	/* a body over the limit: refused from the header, before anything is allocated */
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	REQUIRE(raw_handshake(fd, &key, 9, true) == 0);
	wire_hdr_init(&h, WIRE_RPC, WIRE_MAX_RPC + 1, 1, 0);
	wire_hdr_encode(&h, raw);
	CHECK(full_io(fd, raw, sizeof(raw), true) == 0);
	CHECK(closed_by_peer(fd));
	close(fd);
	/* a reply sent to the target */
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	REQUIRE(raw_handshake(fd, &key, 9, true) == 0);
	CHECK(send_frame(fd, WIRE_RPC_REPLY, WIRE_VERSION, NULL, 0, 1) == 0);
	CHECK(closed_by_peer(fd));
	close(fd);
	/* an RPC before the handshake is done */
	fd = raw_connect(pp.addr);
	REQUIRE(fd >= 0);
	CHECK(send_frame(fd, WIRE_RPC, WIRE_VERSION, "E", 1, 1) == 0);
	CHECK(closed_by_peer(fd));
	close(fd);
	CHECK(atomic_load(&sv.calls) == 0);
	/* and the real peer was not disturbed */
	CHECK(xfer_call(pp.p, "Ehlo", 4, &resp, &rlen, 5000) == 0);
	CHECK(rlen == 4 && memcmp(resp, "Ehlo", 4) == 0);
	free(resp);
	auth_key_clear(&key);
	pair_close(&pp);
}

struct mover {
	struct pair *pp;
	int rounds, failures;
};

static void *mover_main(void *arg)
{
	enum { N = 8, LEN = 4 << 20 };
	struct mover *m = arg;
	struct pair *pp = m->pp;
	char *buf = malloc((size_t)N * LEN);
	struct xfer_req r[N];

	if (!buf) {
		m->failures++;
		return NULL;
	}
	for (int round = 0; round < m->rounds; round++) {
		for (int i = 0; i < N; i++) {
			fill(buf + (size_t)i * LEN, LEN, (uint64_t)round * N + (uint64_t)i);
			r[i] = req(XFER_WRITE, buf + (size_t)i * LEN, LEN, pp->p, pp->seg_id,
				   (uint64_t)i * LEN);
		}
		if (run_batch(pp->a, r, N, 30000) != N)
			m->failures++;
		memset(buf, 0, (size_t)N * LEN);
		for (int i = 0; i < N; i++)
			r[i] = req(XFER_READ, buf + (size_t)i * LEN, LEN, pp->p, pp->seg_id,
				   (uint64_t)i * LEN);
		if (run_batch(pp->a, r, N, 30000) != N)
			m->failures++;
		if (memcmp(buf, pp->seg, (size_t)N * LEN) != 0)
			m->failures++;
	}
	free(buf);
	return NULL;
}

/* RPCs on the same connections as large READ/WRITE batches: both succeed, every byte right. */
static void test_rpc_with_transfers(void)
{
	enum { T = 4 };
	struct rpc_srv sv = {0};
	struct rpc_worker w[T];
	pthread_t th[T], mt;
	struct mover m;
	atomic_bool stop = false;
	struct pair pp;
	int calls = 0;

	REQUIRE(pair_open_rpc(&pp, 32 << 20, 0, rpc_srv_fn, &sv) == 0);
	m = (struct mover){.pp = &pp, .rounds = 6};
	REQUIRE(pthread_create(&mt, NULL, mover_main, &m) == 0);
	for (int i = 0; i < T; i++) {
		w[i] = (struct rpc_worker){.p = pp.p, .id = i, .stop = &stop};
		REQUIRE(pthread_create(&th[i], NULL, rpc_worker_main, &w[i]) == 0);
	}
	pthread_join(mt, NULL);
	atomic_store(&stop, true);
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].failures == 0);
		calls += w[i].calls;
	}
	CHECK(m.failures == 0);
	CHECK(calls > 0);
	printf("     %d RPCs during %d rounds of 8 x 4 MiB WRITE + READ\n", calls, m.rounds);
	pair_close(&pp);
}

static double gbps(uint64_t bytes, uint64_t ns)
{
	return (double)bytes / (double)ns;
}

/* Throughput of 2 MiB READ and WRITE in batches of 32 (only with KVC_XFER_BENCH=1). */
static void test_bench(void)
{
	enum { N = 32, LEN = 2 << 20 };
	struct xfer_req r[N];
	struct pair pp;
	char *buf;
	struct timespec t0, t1;

	if (!getenv("KVC_XFER_BENCH"))
		return;
	REQUIRE(pair_open(&pp, (size_t)N * LEN, 0) == 0);
	buf = malloc((size_t)N * LEN);
	REQUIRE(buf);
	fill(buf, (size_t)N * LEN, 3);
	for (int op = XFER_READ; op <= XFER_WRITE; op++) {
		uint64_t bytes = 0, ns;
		int reps = 0;

		for (int i = 0; i < N; i++)
			r[i] =
			    req(op, buf + (size_t)i * LEN, LEN, pp.p, pp.seg_id, (uint64_t)i * LEN);
		run_batch(pp.a, r, N, 30000); /* warm up */
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			CHECK(run_batch(pp.a, r, N, 30000) == N);
			bytes += (uint64_t)N * LEN;
			reps++;
			clock_gettime(CLOCK_MONOTONIC, &t1);
			ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull +
			     (uint64_t)(t1.tv_nsec - t0.tv_nsec);
		} while (ns < 2000000000ull);
		printf("     %s 2 MiB x %d: %.2f GB/s (%d batches)\n",
		       op == XFER_READ ? "READ " : "WRITE", N, gbps(bytes, ns), reps);
	}
	free(buf);
	pair_close(&pp);
}

/* Everything in a pipe (its read end non-blocking), into buf: the count. */
static size_t pipe_take(int rd, uint8_t *buf, size_t cap)
{
	size_t n = 0;
	ssize_t r;

	while (n < cap && (r = read(rd, buf + n, cap - n)) > 0)
		n += (size_t)r;
	return n;
}

/* Streams: reads spliced into a pipe with a check read after them, several in flight on one
 * stream, errors of the target that leave the stream usable, a pipe with no room, and an
 * idle stream whose peer went away. */
static void test_streams(void)
{
	enum { LEN = 3 << 20, CHK = 64 };
	struct xfer_stream *s = NULL;
	uint8_t *got = malloc(LEN), check[CHK];
	struct pair pp;
	int fd[2], small[2], broken, size;

	CHECK(got != NULL);
	CHECK(pair_open(&pp, 8u << 20, 5000) == 0);
	CHECK(pipe2(fd, O_NONBLOCK) == 0);
	size = fcntl(fd[1], F_SETPIPE_SZ, 1 << 20);
	CHECK(size >= (1 << 20));
	CHECK(xfer_stream_open(pp.p, &s) == 0);
	CHECK(xfer_stream_peer(s) == pp.p);
	CHECK(xfer_stream_alive(s));

	/* one read: the bytes, then the check bytes */
	CHECK(xfer_stream_read(s, pp.seg_id, 4096, 700000, fd[1], 7u << 20, check, CHK, &broken) ==
	      0);
	CHECK(!broken);
	CHECK(pipe_take(fd[0], got, LEN) == 700000);
	CHECK(memcmp(got, pp.seg + 4096, 700000) == 0);
	CHECK(memcmp(check, pp.seg + (7u << 20), CHK) == 0);

	/* three in flight, received in order */
	for (int k = 0; k < 3; k++)
		CHECK(xfer_stream_send(s, pp.seg_id, (uint64_t)k << 20, 1000 + k, 100 + k, CHK) ==
		      0);
	for (int k = 0; k < 3; k++) {
		CHECK(xfer_stream_recv(s, 1000 + k, fd[1], check, CHK, &broken) == 0);
		CHECK(pipe_take(fd[0], got, LEN) == (size_t)(1000 + k));
		CHECK(memcmp(got, pp.seg + ((size_t)k << 20), 1000 + k) == 0);
		CHECK(memcmp(check, pp.seg + 100 + k, CHK) == 0);
	}

	/* the target's refusal: the stream stays usable, the pipe empty */
	CHECK(xfer_stream_read(s, pp.seg_id, (8u << 20) - 10, 100, fd[1], 0, check, CHK, &broken) ==
	      -ERANGE);
	CHECK(!broken);
	CHECK(xfer_stream_read(s, pp.seg_id + 99, 0, 100, fd[1], 0, check, CHK, &broken) ==
	      -ENOENT);
	CHECK(!broken);
	CHECK(pipe_take(fd[0], got, LEN) == 0);
	CHECK(xfer_stream_read(s, pp.seg_id, 0, 5000, fd[1], 0, check, CHK, &broken) == 0);
	CHECK(pipe_take(fd[0], got, LEN) == 5000 && memcmp(got, pp.seg, 5000) == 0);
	CHECK(xfer_stream_read(s, pp.seg_id, 0, 0, fd[1], 0, check, CHK, &broken) == -EINVAL);

	/* a pipe holds pieces of socket buffers (up to its slots, not its size in bytes): 3 MiB
	 * go into a pipe of 1 MiB here, 1 MiB does not go into one of a single page */
	CHECK(xfer_stream_read(s, pp.seg_id, 0, LEN, fd[1], 0, check, CHK, &broken) == 0);
	CHECK(pipe_take(fd[0], got, LEN) == LEN && memcmp(got, pp.seg, LEN) == 0);
	CHECK(pipe2(small, O_NONBLOCK) == 0);
	CHECK(fcntl(small[1], F_SETPIPE_SZ, 4096) == 4096);
	CHECK(xfer_stream_read(s, pp.seg_id, 0, 1 << 20, small[1], 0, check, CHK, &broken) ==
	      -ENOBUFS);
	CHECK(broken);
	xfer_stream_close(s);
	close(small[0]);
	close(small[1]);

	/* an idle stream whose peer is gone is seen as such */
	CHECK(xfer_stream_open(pp.p, &s) == 0);
	CHECK(xfer_stream_alive(s));
	xfer_destroy(pp.b);
	pp.b = NULL;
	for (int i = 0; i < 100 && xfer_stream_alive(s); i++)
		usleep(10000);
	CHECK(!xfer_stream_alive(s));
	CHECK(xfer_stream_read(s, pp.seg_id, 0, 100, fd[1], 0, check, CHK, &broken) < 0);
	CHECK(broken);
	xfer_stream_close(s);
	xfer_stream_close(NULL);
	close(fd[0]);
	close(fd[1]);
	xfer_destroy(pp.a);
	free(pp.seg);
	free(got);
}

/* A congestion control this process may use other than the system's default (into buf),
 * so that a connection using it can only have been given it by the engine; NULL if none. */
static const char *other_congestion(char *buf, size_t len)
{
	char def[64], allowed[512], *save = NULL;

	xfer_tcp_congestion_sysctl(NULL, def, sizeof(def));
	xfer_tcp_congestion_sysctl("allowed", allowed, sizeof(allowed));
	for (char *t = strtok_r(allowed, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
		if (strcmp(t, def) && xfer_tcp_congestion_check(t) == 0) {
			snprintf(buf, len, "%s", t);
			return buf;
		}
	}
	return NULL;
}

/* This process's TCP sockets with port at either end: how many, and how many of them use
 * congestion control name (*with). */
static int tcp_sockets_of_port(int port, const char *name, int *with)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	*with = 0;
	while (d && (de = readdir(d))) {
		struct sockaddr_storage a, b;
		socklen_t al = sizeof(a), bl = sizeof(b), pl = sizeof(int), cl;
		int fd = atoi(de->d_name), proto = 0;
		char cc[XFER_TCP_CONGESTION_MAX + 1] = "";
		struct stat st;

		if (fd == dirfd(d) || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
		    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) < 0 ||
		    proto != IPPROTO_TCP || getsockname(fd, (struct sockaddr *)&a, &al) < 0 ||
		    a.ss_family != AF_INET || getpeername(fd, (struct sockaddr *)&b, &bl) < 0)
			continue;
		if (ntohs(((struct sockaddr_in *)&a)->sin_port) != port &&
		    ntohs(((struct sockaddr_in *)&b)->sin_port) != port)
			continue;
		n++;
		cl = sizeof(cc) - 1;
		if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cl) == 0 && !strcmp(cc, name))
			(*with)++;
	}
	if (d)
		closedir(d);
	return n;
}

static void test_congestion(void)
{
	struct xfer_config c = config("127.0.0.1:0", secret, 0);
	struct xfer_stream *s = NULL;
	struct xfer_engine *e;
	char name[64], *buf = malloc(1 << 20), check[8];
	int fd[2], broken, n, with;
	struct xfer_req r;
	struct pair pp;

	REQUIRE(buf);
	/* reno is always built in and always allowed */
	CHECK(xfer_tcp_congestion_check("reno") == 0);
	CHECK(xfer_tcp_congestion_check("no_such_cc") == -ENOENT);
	CHECK(xfer_tcp_congestion_check("") == -EINVAL);
	CHECK(xfer_tcp_congestion_check(NULL) == -EINVAL);
	CHECK(xfer_tcp_congestion_check("abcdefghijklmnop") == -EINVAL);
	c.tcp_congestion = "no_such_cc";
	CHECK(xfer_create(&e, &c) == -ENOENT);

	if (!other_congestion(name, sizeof(name))) {
		printf("     (skipped the connections' check: no congestion control other than "
		       "the system's default is allowed here)\n");
		free(buf);
		return;
	}
	/* every connection of both engines, paths and streams, uses the one configured */
	pair_congestion = name;
	REQUIRE(pair_open(&pp, 4u << 20, 5000) == 0);
	pair_congestion = NULL;
	r = req(XFER_READ, buf, 1 << 20, pp.p, pp.seg_id, 0);
	CHECK(run_batch(pp.a, &r, 1, 30000) == 1 && memcmp(buf, pp.seg, 1 << 20) == 0);
	CHECK(pipe2(fd, O_NONBLOCK) == 0);
	CHECK(fcntl(fd[1], F_SETPIPE_SZ, 1 << 20) >= (1 << 20));
	CHECK(xfer_stream_open(pp.p, &s) == 0);
	CHECK(xfer_stream_read(s, pp.seg_id, 0, 65536, fd[1], 0, check, sizeof(check), &broken) ==
	      0);
	CHECK(pipe_take(fd[0], (uint8_t *)buf, 1 << 20) == 65536 &&
	      memcmp(buf, pp.seg, 65536) == 0);
	n = tcp_sockets_of_port(atoi(strrchr(pp.addr, ':') + 1), name, &with);
	printf("     (%d connections' ends, %d of them with %s)\n", n, with, name);
	CHECK(n >= 2 * 5 && with == n); /* 4 paths and a stream, both ends */
	xfer_stream_close(s);
	close(fd[0]);
	close(fd[1]);
	pair_close(&pp);
	free(buf);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(test_create);
	RUN(test_congestion);
	RUN(test_sizes);
	RUN(test_batch);
	RUN(test_tiny);
	RUN(test_concurrent);
	RUN(test_unregister_busy);
	RUN(test_target_errors);
	RUN(test_wrong_secret);
	RUN(test_version);
	RUN(test_open_refused);
	RUN(test_malformed);
	RUN(test_timeout);
	RUN(test_cancel);
	RUN(test_retry);
	RUN(test_peer_killed);
	RUN(test_rpc_basic);
	RUN(test_rpc_concurrent);
	RUN(test_rpc_timeout);
	RUN(test_rpc_giveup);
	RUN(test_rpc_peer_destroyed);
	RUN(test_rpc_peer_killed);
	RUN(test_rpc_flood);
	RUN(test_rpc_malformed);
	RUN(test_rpc_with_transfers);
	RUN(test_streams);
	RUN(test_bench);
	return check_summary();
}
