/*
 * tcp: the transfer engine's TCP transport — a listener, io_threads epoll event loops, one
 * state machine per connection, and a reconnect thread.
 *
 * Every connection (initiator side: a peer's path; target side: accepted) belongs to one
 * loop and is registered edge-triggered for input and output. All I/O on a connection,
 * from whichever thread, happens under its mutex, which is what lets an aborting thread
 * detach a slice while the loop may be receiving into its buffer: it takes the mutex, and
 * from then on the rest of that body is drained into the loop's scratch buffer.
 *
 * Receiving never copies a payload: a header is read into the connection, a fixed body into
 * a small buffer, and a READ_DATA body straight into the slice's buffer (a WRITE body
 * straight into the target segment) with one readv that also asks for the next header.
 * Sending never stages a payload either: a frame is its encoded head plus a pointer to the
 * payload where it lies, and queued frames go out together with sendmsg. Frames are
 * answered in order, so the initiator finds a reply at the head of its in-flight list.
 *
 * The initiator's handshake (HELLO → CHALLENGE → AUTH → WELCOME) runs blocking, with
 * timeouts, in the thread opening the peer or in the reconnect thread; the target's runs
 * inside the loop. A connection that fails gives its slices back to the core (which retries
 * them on other paths) and, on the initiator side, is reconnected in the background with a
 * bounded backoff; a malformed frame closes that connection only. A target connection that
 * has queued too many replies, or too many bytes of RPC replies, stops reading until its peer
 * takes them (backpressure).
 *
 * Metadata RPCs (xfer_call) ride the same connections. The caller's thread allocates a call
 * record holding a copy of the request, queues its frame on a READY connection picked
 * round-robin and sleeps on the record's condition variable (with the connection's mutex);
 * the connection keeps the record on its list of pending calls, and the loop matches a
 * RPC_REPLY to it by req_id, receives the reply body into a fresh buffer and wakes the
 * caller. A record is counted (struct rpc_call): the caller holds one reference until it
 * returns, the connection one while the frame is on its send queue or the reply is awaited;
 * so a caller that gives up (timeout) unlinks its record and leaves, and the rest of a
 * half-sent frame still goes out from the record. A reply nobody waits for any more is
 * drained. A connection that fails ends every call it holds with ECONNRESET. On the target an
 * RPC body is received whole into a malloc'd buffer (at most WIRE_MAX_RPC), handed to the
 * configured handler on the loop thread, and the handler's reply is sent from its own buffer,
 * freed once sent.
 *
 * Lock order: loop->mu → conn mutex → rc_mu and the core's leaf locks. Connection structs
 * of a peer are freed only after their loop has closed them (a command run between event
 * batches), so no event can name a freed connection.
 */
#include "engine/xfer_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#define TX_IOV		 64
#define RX_BUDGET	 (8ull << 20) /* bytes read from one connection before others' turn */
#define TX_BUDGET	 (8ull << 20)
#define SCRATCH_SIZE	 (256u << 10) /* drain buffer for discarded bodies */
#define REPLY_HIGH	 512	      /* target: stop reading with this many replies queued */
#define REPLY_LOW	 128
#define OWNED_HIGH	 (16u << 20) /* target: ... or this many bytes of RPC replies */
#define OWNED_LOW	 (4u << 20)
#define RECONNECT_MIN_MS 50
#define RECONNECT_MAX_MS 2000
#define LINGER_MS	 1000 /* after a REJECT: how long we wait for the peer to close */
#define CONN_NAME	 64

enum conn_state { C_DOWN, C_HS_HELLO, C_HS_AUTH, C_READY, C_LINGER, C_CLOSED };
enum rx_state { RX_HDR, RX_SMALL, RX_DATA };
enum slice_where { W_NONE, W_SQ, W_IF };

struct seg_query {
	uint64_t id;
	bool done;
	int rc;	    /* 0 or a negative errno (the connection failed) */
	int status; /* SEG_INFO's status */
	struct wire_seg_info info;
	pthread_cond_t cv;
};

/* One xfer_call in flight (see the top of this file). Fields other than refs, id and the
 * request are guarded by the connection's h.mu once the record is queued there. */
struct rpc_call {
	_Atomic int refs;	      /* the caller + the connection while q or wait */
	struct rpc_call *next, *prev; /* the connection's pending calls */
	pthread_cond_t cv;	      /* done was set (waited on with the connection's h.mu) */
	bool q;			      /* the frame is on the connection's send queue */
	bool wait;		      /* the reply is due: on the pending list, or c->rx_call */
	bool done;		      /* rc, resp and resp_len are the result */
	int rc;
	void *resp;
	size_t resp_len;
	uint64_t id;
	struct txi tx;
	uint8_t head[WIRE_HDR_SIZE];
	char req[]; /* the request, sent from here */
};

/* A target's reply; recycled through the connection's free list (no allocation per frame
 * once the connection is warm). */
struct treply {
	struct txi tx; /* first: a txi of kind TXI_REPLY is a treply */
	struct xseg *seg;
	void *owned; /* a payload to free once sent (an RPC reply) */
	uint32_t owned_len;
	struct treply *fnext;
	uint8_t head[WIRE_HDR_SIZE + WIRE_CHALLENGE_SIZE];
};

struct tcp_loop;

struct tcp_conn {
	struct xpath h; /* first; h.mu guards everything below unless said otherwise */
	struct tcp_xport *x;
	struct tcp_loop *loop;
	struct xfer_peer *peer; /* NULL on the target side */
	unsigned idx;
	bool initiator;
	int fd;
	int state;
	char name[CONN_NAME];

	/* send queue */
	struct txi *tx_head, *tx_tail;
	unsigned tx_replies; /* target: replies queued */
	uint64_t tx_owned;   /* target: bytes of RPC replies queued */
	bool wr_shut;

	/* receive state */
	int rx_state;
	uint8_t rhdr[WIRE_HDR_SIZE];
	uint32_t rhdr_got;
	struct wire_hdr hdr;
	uint8_t small[WIRE_CHALLENGE_SIZE];
	uint32_t small_need, small_got;
	bool small_more; /* the frame goes on after the fixed body (WRITE) */
	char *rx_dst;	 /* NULL: drain */
	uint64_t rx_left;
	bool rx_paused, rx_resume;
	char *rx_rpc; /* malloc'd: the RPC body (target) or RPC_REPLY body (initiator) arriving */

	/* initiator */
	struct xslice *rx_slice; /* whose READ_DATA body is arriving */
	struct xslice *if_head, *if_tail;
	unsigned if_count;
	uint64_t last_rx_ns;
	bool ping_sent, ping_queued;
	struct txi ping;
	uint8_t ping_head[WIRE_HDR_SIZE];
	struct seg_query *query;
	struct rpc_call *calls_head, *calls_tail; /* pending calls, in the order sent */
	struct rpc_call *rx_call;		  /* whose RPC_REPLY body is arriving */
	bool q_queued;
	struct txi qtx;
	uint8_t q_head[WIRE_HDR_SIZE + WIRE_SEG_QUERY_SIZE];
	unsigned backoff_ms;
	/* How many of the peer's connections went down after having been up and are not back
	 * yet: kept in its first connection (p->conns[0]) for all of them, so that the log says
	 * once that a peer was lost and once that it is back, not once per connection. */
	_Atomic unsigned peer_down;
	uint64_t rc_at;		  /* rc_mu */
	bool rc_queued;		  /* rc_mu */
	struct tcp_conn *rc_next; /* rc_mu */

	/* target */
	struct xseg *rx_seg; /* pinned while a WRITE body arrives into it */
	int rx_status;	     /* the WRITE_ACK status */
	uint8_t nonce_i[WIRE_NONCE], nonce_t[WIRE_NONCE];
	uint64_t init_id;
	uint64_t since_ns; /* accepted, or rejected (LINGER) */
	struct treply *free_replies;

	/* the loop's lists */
	struct tcp_conn *lnext, *lprev; /* loop->mu */
	struct tcp_conn *rnext;		/* loop thread only */
	bool on_ready, on_dead;		/* loop thread only */
};

struct cmd {
	struct cmd *next;
	struct tcp_conn *c;
	bool done;
};

struct tcp_loop {
	struct tcp_xport *x;
	int epfd, evfd;
	pthread_t thr;
	bool started;
	pthread_mutex_t mu; /* conns, cmds, stop; cv signals finished commands */
	pthread_cond_t cv;
	struct tcp_conn *conns;
	struct cmd *cmds;
	bool stop;
	/* loop thread only */
	struct tcp_conn *ready; /* connections with work left over (edge-triggered) */
	struct tcp_conn *dead;	/* target connections to free at the end of the iteration */
	char *scratch;
	uint64_t last_tick;
};

struct tcp_xport {
	struct xfer_engine *e;
	int lfd;
	char listen_str[INET6_ADDRSTRLEN + 16];
	unsigned nloops;
	struct tcp_loop *loops;
	_Atomic unsigned next_loop;
	uint64_t ping_ns, dead_ns, hs_ns, tick_ms;

	pthread_t rc_thr;
	bool rc_started;
	pthread_mutex_t rc_mu;
	pthread_cond_t rc_cv;
	bool rc_stop;
	struct tcp_conn *rc_list;
};

static void conn_log(const struct tcp_conn *c, int prio, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One line about connection c: to the engine's log (xfer_config.log), else to syslog. */
static void conn_log(const struct tcp_conn *c, int prio, const char *fmt, ...)
{
	const struct xfer_engine *e = c->x->e;
	char msg[256], line[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->initiator)
		snprintf(line, sizeof(line), "node %016llx (%s:%s): %s",
			 (unsigned long long)c->peer->node_id, c->peer->host, c->peer->port, msg);
	else
		snprintf(line, sizeof(line), "transfer connection from %s: %s", c->name, msg);
	if (e->cfg.log)
		e->cfg.log(e->cfg.log_arg, prio, line);
	else
		syslog(prio, "kvcachefs xfer: %s", line);
}

/* Initiator connection c went from READY to DOWN, or came back: the peer's outage starts
 * with its first connection lost and ends with its last one back. */
static void peer_down_add(struct tcp_conn *c, int err)
{
	if (atomic_fetch_add(&c->peer->conns[0]->peer_down, 1) == 0)
		conn_log(c, LOG_WARNING, "transfer connection lost (%s), reconnecting",
			 strerror(-err));
}

static void peer_down_sub(struct tcp_conn *c)
{
	if (atomic_fetch_sub(&c->peer->conns[0]->peer_down, 1) == 1)
		conn_log(c, LOG_INFO, "transfer connections back");
}

static void sock_name(int fd, bool peer, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN], port[8];
	int rc;

	rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &sl)
		  : getsockname(fd, (struct sockaddr *)&ss, &sl);
	if (rc < 0 || getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port,
				  sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(buf, len, "?");
		return;
	}
	snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static int set_congestion(int fd, const char *name)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)strlen(name)) < 0
		   ? -errno
		   : 0;
}

int xfer_tcp_congestion_check(const char *name)
{
	size_t len = name ? strlen(name) : 0;
	int fd, ret;

	if (!len || len >= XFER_TCP_CONGESTION_MAX)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = set_congestion(fd, name);
	close(fd);
	return ret;
}

const char *xfer_tcp_congestion_strerror(int err)
{
	return err == -ENOENT	? "not available on this host"
	       : err == -EPERM	? "not allowed without CAP_NET_ADMIN"
	       : err == -EINVAL ? "not the name of a congestion control"
				: strerror(-err);
}

void xfer_tcp_congestion_sysctl(const char *which, char *buf, size_t len)
{
	char path[96];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/tcp_%s%scongestion_control",
		 which ? which : "", which ? "_" : "");
	f = fopen(path, "re");
	if (!f || !fgets(buf, (int)len, f))
		buf[0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (f)
		fclose(f);
}

/* Options of every connection; the congestion control was checked when the engine was
 * created, so a failure here (a module unloaded since) leaves the system's. */
static void sock_tune(const struct xfer_engine *e, int fd)
{
	int one = 1, idle = 10, intvl = 5, cnt = 3;

	if (e->cfg.tcp_congestion)
		(void)set_congestion(fd, e->cfg.tcp_congestion);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static int set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* ---- send queue ---------------------------------------------------------------------- */

static void tx_push(struct tcp_conn *c, struct txi *t)
{
	t->next = NULL;
	if (c->tx_tail)
		c->tx_tail->next = t;
	else
		c->tx_head = t;
	c->tx_tail = t;
}

static void tx_remove(struct tcp_conn *c, struct txi *t)
{
	struct txi **pp, *prev = NULL;

	for (pp = &c->tx_head; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			if (c->tx_tail == t)
				c->tx_tail = prev;
			t->next = NULL;
			return;
		}
	}
}

static struct xslice *txi_slice(struct txi *t)
{
	return (struct xslice *)((char *)t - offsetof(struct xslice, tx));
}

static void if_push(struct tcp_conn *c, struct xslice *s)
{
	s->next = NULL;
	s->prev = c->if_tail;
	if (c->if_tail)
		c->if_tail->next = s;
	else
		c->if_head = s;
	c->if_tail = s;
	c->if_count++;
}

static void if_unlink(struct tcp_conn *c, struct xslice *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		c->if_head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		c->if_tail = s->prev;
	s->next = s->prev = NULL;
	c->if_count--;
}

/* The slice leaves this connection for good: the core gets it back with err. */
static void slice_out(struct tcp_conn *c, struct xslice *s, int err, struct slice_list *l)
{
	if (s->where == W_IF)
		if_unlink(c, s);
	else if (s->where == W_SQ)
		tx_remove(c, &s->tx);
	s->where = W_NONE;
	free(s->copy);
	s->copy = NULL;
	if (c->rx_slice == s) {
		c->rx_slice = NULL;
		c->rx_dst = NULL;
	}
	atomic_store(&s->path, NULL);
	slice_list_add(l, s, err);
}

/* ---- RPC call records (initiator) ------------------------------------------------------ */

static struct rpc_call *txi_call(struct txi *t)
{
	return (struct rpc_call *)((char *)t - offsetof(struct rpc_call, tx));
}

static void call_put(struct rpc_call *k)
{
	if (atomic_fetch_sub(&k->refs, 1) != 1)
		return;
	free(k->resp);
	pthread_cond_destroy(&k->cv);
	free(k);
}

/* The connection lets go of k once it neither sends its frame nor waits for its reply. */
static void call_drop(struct rpc_call *k)
{
	if (!k->q && !k->wait)
		call_put(k);
}

static void call_link(struct tcp_conn *c, struct rpc_call *k)
{
	k->next = NULL;
	k->prev = c->calls_tail;
	if (c->calls_tail)
		c->calls_tail->next = k;
	else
		c->calls_head = k;
	c->calls_tail = k;
}

static void call_unlink(struct tcp_conn *c, struct rpc_call *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		c->calls_head = k->next;
	if (k->next)
		k->next->prev = k->prev;
	else
		c->calls_tail = k->prev;
	k->next = k->prev = NULL;
}

/* Replies come in the order the calls were sent, so the match is nearly always the head. */
static struct rpc_call *call_find(struct tcp_conn *c, uint64_t id)
{
	struct rpc_call *k;

	for (k = c->calls_head; k; k = k->next)
		if (k->id == id)
			return k;
	return NULL;
}

/* k's reply is in, or it never will be (k already off the pending list and rx_call): hand
 * the result to the caller, who still holds its reference (it only lets go after unlinking
 * k itself, under the same mutex). resp is the caller's from now on. */
static void call_finish(struct rpc_call *k, int rc, void *resp, size_t len)
{
	k->wait = false;
	k->rc = rc;
	k->resp = resp;
	k->resp_len = len;
	k->done = true;
	pthread_cond_broadcast(&k->cv);
	call_drop(k);
}

/* The caller gives up on k (c's mutex held, k not done): the reply, if it comes, is drained;
 * a frame not started is taken off the queue, a half-sent one goes out whole from k. */
static void call_abandon(struct tcp_conn *c, struct rpc_call *k)
{
	if (k->wait) {
		if (c->rx_call == k)
			c->rx_call = NULL; /* the body lands in c->rx_rpc, freed at its end */
		else
			call_unlink(c, k);
		k->wait = false;
	}
	if (k->q && k->tx.hsent == 0) {
		tx_remove(c, &k->tx);
		k->q = false;
	}
	call_drop(k);
}

/* ---- replies (target) ------------------------------------------------------------------ */

static void reply_free(struct tcp_conn *c, struct treply *r)
{
	if (r->seg) {
		xfer_seg_put(c->x->e, r->seg);
		r->seg = NULL;
	}
	if (r->owned) {
		c->tx_owned -= r->owned_len;
		free(r->owned);
		r->owned = NULL;
	}
	r->fnext = c->free_replies;
	c->free_replies = r;
}

/* A frame was sent whole. */
static void tx_done(struct tcp_conn *c, struct txi *t)
{
	struct xslice *s;

	switch (t->kind) {
	case TXI_SLICE:
		s = txi_slice(t);
		free(s->copy);
		s->copy = NULL;
		s->where = W_IF;
		if_push(c, s);
		break;
	case TXI_REPLY:
		reply_free(c, (struct treply *)t);
		c->tx_replies--;
		if (c->rx_paused && c->tx_replies < REPLY_LOW && c->tx_owned < OWNED_LOW) {
			c->rx_paused = false;
			c->rx_resume = true;
		}
		break;
	case TXI_PING:
		c->ping_queued = false;
		break;
	case TXI_QUERY:
		c->q_queued = false;
		break;
	case TXI_RPC:
		txi_call(t)->q = false;
		call_drop(txi_call(t)); /* may free it: its caller gave up */
		break;
	}
}

static void tx_advance(struct tcp_conn *c, uint64_t w)
{
	struct txi *t;
	uint64_t k;

	while ((t = c->tx_head)) {
		k = t->head_len - t->hsent;
		k = w < k ? w : k;
		t->hsent += (uint32_t)k;
		w -= k;
		k = w < t->payload_left ? w : t->payload_left;
		t->payload += k;
		t->payload_left -= k;
		w -= k;
		if (t->hsent < t->head_len || t->payload_left)
			break;
		c->tx_head = t->next;
		if (!c->tx_head)
			c->tx_tail = NULL;
		t->next = NULL;
		tx_done(c, t);
	}
}

/* Send what is queued until the socket is full (an EPOLLOUT edge will follow), the queue is
 * empty, or budget bytes went out (returns 1: more to send). */
static int conn_tx(struct tcp_conn *c, uint64_t budget)
{
	struct iovec iov[TX_IOV];
	struct msghdr msg = {.msg_iov = iov};
	struct txi *t;
	ssize_t w;
	int n;

	while (c->tx_head) {
		n = 0;
		for (t = c->tx_head; t && n < TX_IOV - 1; t = t->next) {
			if (t->hsent < t->head_len)
				iov[n++] = (struct iovec){(void *)(t->head + t->hsent),
							  t->head_len - t->hsent};
			if (t->payload_left)
				iov[n++] = (struct iovec){(void *)t->payload, t->payload_left};
		}
		msg.msg_iovlen = (size_t)n;
		w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		tx_advance(c, (uint64_t)w);
		if ((uint64_t)w >= budget)
			return c->tx_head ? 1 : 0;
		budget -= (uint64_t)w;
	}
	if (c->state == C_LINGER && !c->wr_shut) {
		shutdown(c->fd, SHUT_WR); /* the REJECT is out; FIN after it */
		c->wr_shut = true;
	}
	return 0;
}

static struct treply *reply_new(struct tcp_conn *c)
{
	struct treply *r = c->free_replies;

	if (r) {
		c->free_replies = r->fnext;
		return r;
	}
	return malloc(sizeof(*r));
}

/* Queue a reply frame: fixed body (blen bytes), then payload, which lies in seg (pinned
 * until sent) or in owned (freed once sent); both are let go of on failure too. */
static int reply_frame(struct tcp_conn *c, enum wire_type type, uint64_t req_id, uint64_t arg,
		       const uint8_t *body, uint32_t blen, struct xseg *seg, void *owned,
		       const char *payload, uint32_t plen)
{
	struct treply *r = reply_new(c);
	struct wire_hdr h;

	if (!r) {
		if (seg)
			xfer_seg_put(c->x->e, seg);
		free(owned);
		return -ENOMEM;
	}
	wire_hdr_init(&h, type, blen + plen, req_id, arg);
	wire_hdr_encode(&h, r->head);
	if (blen)
		memcpy(r->head + WIRE_HDR_SIZE, body, blen);
	r->seg = seg;
	r->owned = owned;
	r->owned_len = owned ? plen : 0;
	r->fnext = NULL;
	r->tx = (struct txi){.head = r->head,
			     .head_len = WIRE_HDR_SIZE + blen,
			     .payload = payload,
			     .payload_left = plen,
			     .kind = TXI_REPLY};
	tx_push(c, &r->tx);
	c->tx_owned += r->owned_len;
	/* a flood of requests is read no further than replies the peer has not taken */
	if (++c->tx_replies >= REPLY_HIGH || c->tx_owned >= OWNED_HIGH)
		c->rx_paused = true;
	return 0;
}

static int reply(struct tcp_conn *c, enum wire_type type, uint64_t req_id, uint64_t arg,
		 const uint8_t *body, uint32_t blen, struct xseg *seg, const char *payload,
		 uint32_t plen)
{
	return reply_frame(c, type, req_id, arg, body, blen, seg, NULL, payload, plen);
}

static int reject(struct tcp_conn *c, int err)
{
	c->state = C_LINGER;
	c->since_ns = xfer_now_ns();
	return reply(c, WIRE_REJECT, 0, (uint64_t)err, NULL, 0, NULL, NULL, 0);
}

/* ---- receive: the frame handlers ----------------------------------------------------- */

static int bad_frame(struct tcp_conn *c, const char *why)
{
	conn_log(c, LOG_WARNING, "closing the connection: %s (frame type %u, %u body bytes)", why,
		 c->hdr.type, c->hdr.body_len);
	return -EBADMSG;
}

static void rx_small(struct tcp_conn *c, uint32_t need, bool more)
{
	c->rx_state = RX_SMALL;
	c->small_need = need;
	c->small_got = 0;
	c->small_more = more;
}

static struct xslice *if_find(struct tcp_conn *c, uint64_t id, int op)
{
	struct xslice *s;

	for (s = c->if_head; s; s = s->next)
		if (s->wire_id == id)
			return s->op == op ? s : NULL;
	return NULL;
}

/* A status from the network: a positive errno, else EIO. */
static int net_status(uint64_t arg)
{
	return arg > 0 && arg < 4096 ? (int)arg : EIO;
}

/*
 * Target: the RPC in c->rx_rpc (c->hdr.body_len bytes; rx_status EOPNOTSUPP or ENOMEM when it
 * was not kept) is complete: run the handler and queue its reply. The handler runs on this loop
 * thread with c->h.mu released, so that it holds no engine lock at all: a target connection
 * is only ever touched by the thread of its loop (no peer, slice or caller names it), and
 * that thread is here, so nothing changes under us meanwhile.
 */
static int rpc_serve(struct tcp_conn *c)
{
	struct xfer_engine *e = c->x->e;
	char *in = c->rx_rpc;
	void *out = NULL;
	size_t out_len = 0;
	int st = c->rx_status;

	c->rx_rpc = NULL;
	c->rx_status = 0;
	c->rx_dst = NULL;
	c->rx_state = RX_HDR;
	if (!st) {
		pthread_mutex_unlock(&c->h.mu);
		st = e->cfg.rpc(e->cfg.rpc_arg, c->init_id, in ? in : "", c->hdr.body_len, &out,
				&out_len);
		pthread_mutex_lock(&c->h.mu);
		if (st < 0) /* a handler that returned -errno means the same */
			st = -st;
		if (st >= 4096)
			st = EIO;
		if (!st && out_len > WIRE_MAX_RPC) {
			conn_log(c, LOG_WARNING, "RPC reply of %zu bytes not sent: the limit is %u",
				 out_len, WIRE_MAX_RPC);
			st = EMSGSIZE;
		}
		if (!st && out_len && !out)
			st = EIO;
		if (st || !out_len) {
			free(out);
			out = NULL;
			out_len = 0;
		}
	}
	free(in);
	return reply_frame(c, WIRE_RPC_REPLY, c->hdr.req_id, (uint64_t)st, NULL, 0, NULL, out, out,
			   (uint32_t)out_len);
}

static int on_header_target(struct tcp_conn *c, int rc)
{
	struct wire_hdr *h = &c->hdr;

	if (c->state == C_HS_HELLO) {
		/* A HELLO of another version is answered, whatever the decoder thinks of it. */
		if (get_le32(c->rhdr) == WIRE_MAGIC && get_le16(c->rhdr + 6) == WIRE_HELLO &&
		    get_le16(c->rhdr + 4) != WIRE_VERSION) {
			conn_log(c, LOG_NOTICE, "refused: protocol version %u, ours is %u",
				 get_le16(c->rhdr + 4), WIRE_VERSION);
			return reject(c, EPROTO);
		}
		if (rc < 0 || h->type != WIRE_HELLO || h->body_len != WIRE_HELLO_SIZE)
			return bad_frame(c, "expected HELLO");
		rx_small(c, WIRE_HELLO_SIZE, false);
		return 0;
	}
	if (rc < 0)
		return bad_frame(c, rc == -EPROTO ? "wrong protocol version" : "malformed header");
	if (c->state == C_HS_AUTH) {
		if (h->type != WIRE_AUTH || h->body_len != WIRE_AUTH_SIZE)
			return bad_frame(c, "expected AUTH");
		rx_small(c, WIRE_AUTH_SIZE, false);
		return 0;
	}
	switch (h->type) {
	case WIRE_READ:
		if (h->body_len != WIRE_RW_SIZE)
			break;
		rx_small(c, WIRE_RW_SIZE, false);
		return 0;
	case WIRE_WRITE:
		if (h->body_len <= WIRE_RW_SIZE)
			break;
		rx_small(c, WIRE_RW_SIZE, true);
		return 0;
	case WIRE_PING:
		if (h->body_len)
			break;
		return reply(c, WIRE_PONG, h->req_id, 0, NULL, 0, NULL, NULL, 0);
	case WIRE_SEG_QUERY:
		if (h->body_len != WIRE_SEG_QUERY_SIZE)
			break;
		rx_small(c, WIRE_SEG_QUERY_SIZE, false);
		return 0;
	case WIRE_RPC:
		if (h->body_len > WIRE_MAX_RPC)
			break;
		/* kept whole for the handler; without one, or without memory, it is drained and
		 * answered EOPNOTSUPP or ENOMEM */
		c->rx_rpc = h->body_len && c->x->e->cfg.rpc ? malloc(h->body_len) : NULL;
		c->rx_status = !c->x->e->cfg.rpc	   ? EOPNOTSUPP
			       : h->body_len && !c->rx_rpc ? ENOMEM
							   : 0;
		if (!h->body_len)
			return rpc_serve(c);
		c->rx_dst = c->rx_rpc;
		c->rx_left = h->body_len;
		c->rx_state = RX_DATA;
		return 0;
	}
	return bad_frame(c, "unexpected frame");
}

static int on_header_initiator(struct tcp_conn *c, int rc, struct slice_list *l)
{
	struct wire_hdr *h = &c->hdr;
	struct rpc_call *k;
	struct xslice *s;

	if (rc < 0)
		return bad_frame(c, rc == -EPROTO ? "wrong protocol version" : "malformed header");
	switch (h->type) {
	case WIRE_READ_DATA:
		s = if_find(c, h->req_id, XFER_READ);
		if (!s)
			return bad_frame(c, "READ_DATA for no READ in flight");
		if (h->arg) {
			if (h->body_len)
				break;
			slice_out(c, s, net_status(h->arg), l);
			return 0;
		}
		if (h->body_len != s->len)
			return bad_frame(c, "READ_DATA of the wrong length");
		c->rx_slice = s;
		c->rx_dst = s->orphan ? NULL : s->local;
		c->rx_left = s->len;
		c->rx_state = RX_DATA;
		return 0;
	case WIRE_WRITE_ACK:
		s = if_find(c, h->req_id, XFER_WRITE);
		if (!s || h->body_len)
			return bad_frame(c, "WRITE_ACK for no WRITE in flight");
		slice_out(c, s, h->arg ? net_status(h->arg) : 0, l);
		return 0;
	case WIRE_PONG:
		if (h->body_len)
			break;
		return 0;
	case WIRE_SEG_INFO:
		if (h->body_len != WIRE_SEG_INFO_SIZE)
			break;
		rx_small(c, WIRE_SEG_INFO_SIZE, false);
		return 0;
	case WIRE_RPC_REPLY:
		if (h->body_len > WIRE_MAX_RPC || (h->arg && h->body_len))
			break;
		/* no call: it gave up waiting, its reply is drained */
		k = call_find(c, h->req_id);
		if (k)
			call_unlink(c, k);
		if (!h->body_len) {
			if (k)
				call_finish(k, h->arg ? -net_status(h->arg) : 0, NULL, 0);
			return 0;
		}
		c->rx_rpc = k ? malloc(h->body_len) : NULL;
		if (k && !c->rx_rpc) {
			call_finish(k, -ENOMEM, NULL, 0);
			k = NULL;
		}
		c->rx_call = k; /* the connection's reference on k goes with it */
		c->rx_dst = c->rx_rpc;
		c->rx_left = h->body_len;
		c->rx_state = RX_DATA;
		return 0;
	}
	return bad_frame(c, "unexpected frame");
}

static int on_header(struct tcp_conn *c, struct slice_list *l)
{
	int rc;

	if (c->state == C_LINGER)
		return 0;
	memset(&c->hdr, 0, sizeof(c->hdr));
	rc = wire_hdr_decode(c->rhdr, &c->hdr);
	c->rx_state = RX_HDR;
	return c->initiator ? on_header_initiator(c, rc, l) : on_header_target(c, rc);
}

static int on_hello(struct tcp_conn *c)
{
	struct xfer_engine *e = c->x->e;
	struct wire_hello hello;
	struct wire_challenge ch = {.node_id = e->node_id, .transports = e->advertise};
	uint8_t body[WIRE_CHALLENGE_SIZE];

	if (wire_hello_decode(c->small, WIRE_HELLO_SIZE, &hello) < 0)
		return bad_frame(c, "malformed HELLO");
	memcpy(c->nonce_i, hello.nonce, WIRE_NONCE);
	c->init_id = hello.node_id;
	auth_nonce(c->nonce_t);
	memcpy(ch.nonce, c->nonce_t, WIRE_NONCE);
	auth_proof(&e->key, 'T', c->nonce_i, c->nonce_t, c->init_id, e->node_id, ch.proof);
	wire_challenge_encode(&ch, body);
	c->state = C_HS_AUTH;
	return reply(c, WIRE_CHALLENGE, 0, 0, body, WIRE_CHALLENGE_SIZE, NULL, NULL, 0);
}

static int on_auth(struct tcp_conn *c)
{
	struct xfer_engine *e = c->x->e;

	if (!auth_verify(&e->key, 'I', c->nonce_i, c->nonce_t, c->init_id, e->node_id, c->small)) {
		/* the proof and the nonces are not logged: only who and that it failed */
		conn_log(c, LOG_WARNING, "refused node %016llx: bad proof (wrong secret?)",
			 (unsigned long long)c->init_id);
		return reject(c, EACCES);
	}
	c->state = C_READY;
	return reply(c, WIRE_WELCOME, 0, 0, NULL, 0, NULL, NULL, 0);
}

static int on_small(struct tcp_conn *c)
{
	struct xfer_engine *e = c->x->e;
	struct wire_seg_info info;
	struct wire_rw rw;
	struct xseg *seg;
	uint8_t body[WIRE_SEG_INFO_SIZE];
	uint32_t id;
	int st;

	c->rx_state = RX_HDR;
	switch (c->hdr.type) {
	case WIRE_HELLO:
		return on_hello(c);
	case WIRE_AUTH:
		return on_auth(c);
	case WIRE_READ:
		if (wire_rw_decode(c->small, WIRE_RW_SIZE, &rw) < 0)
			return bad_frame(c, "malformed READ");
		st = xfer_seg_get(e, rw.seg, rw.off, rw.len, &seg);
		if (st)
			return reply(c, WIRE_READ_DATA, c->hdr.req_id, (uint64_t)st, NULL, 0, NULL,
				     NULL, 0);
		return reply(c, WIRE_READ_DATA, c->hdr.req_id, 0, NULL, 0, seg, seg->addr + rw.off,
			     (uint32_t)rw.len);
	case WIRE_WRITE:
		if (wire_rw_decode(c->small, WIRE_RW_SIZE, &rw) < 0 ||
		    c->hdr.body_len != WIRE_RW_SIZE + rw.len)
			return bad_frame(c, "malformed WRITE");
		st = xfer_seg_get(e, rw.seg, rw.off, rw.len, &seg);
		c->rx_seg = seg;
		c->rx_status = st;
		c->rx_dst = st ? NULL : seg->addr + rw.off; /* a refused WRITE is drained */
		c->rx_left = rw.len;
		c->rx_state = RX_DATA;
		return 0;
	case WIRE_SEG_QUERY:
		if (wire_seg_query_decode(c->small, WIRE_SEG_QUERY_SIZE, &id) < 0)
			return bad_frame(c, "malformed SEG_QUERY");
		st = xfer_seg_info(e, id, &info);
		wire_seg_info_encode(&info, body);
		return reply(c, WIRE_SEG_INFO, c->hdr.req_id, (uint64_t)st, body,
			     WIRE_SEG_INFO_SIZE, NULL, NULL, 0);
	case WIRE_SEG_INFO:
		if (wire_seg_info_decode(c->small, WIRE_SEG_INFO_SIZE, &info) < 0)
			return bad_frame(c, "malformed SEG_INFO");
		if (c->query && c->query->id == c->hdr.req_id) {
			c->query->info = info;
			c->query->status = net_status(c->hdr.arg);
			if (!c->hdr.arg)
				c->query->status = 0;
			c->query->done = true;
			pthread_cond_broadcast(&c->query->cv);
			c->query = NULL;
		}
		return 0; /* an answer to a query that gave up waiting is dropped */
	}
	return bad_frame(c, "unexpected frame");
}

static int on_data_done(struct tcp_conn *c, struct slice_list *l)
{
	struct rpc_call *k;
	int st;

	c->rx_state = RX_HDR;
	c->rx_dst = NULL;
	if (c->hdr.type == WIRE_RPC_REPLY) {
		k = c->rx_call;
		c->rx_call = NULL;
		if (k)
			call_finish(k, 0, c->rx_rpc, c->hdr.body_len);
		else
			free(c->rx_rpc); /* its caller gave up meanwhile */
		c->rx_rpc = NULL;
		return 0;
	}
	if (c->hdr.type == WIRE_RPC)
		return rpc_serve(c);
	if (c->initiator) {
		slice_out(c, c->rx_slice, 0, l);
		return 0;
	}
	if (c->rx_seg) {
		xfer_seg_put(c->x->e, c->rx_seg);
		c->rx_seg = NULL;
	}
	st = c->rx_status;
	c->rx_status = 0;
	return reply(c, WIRE_WRITE_ACK, c->hdr.req_id, (uint64_t)st, NULL, 0, NULL, NULL, 0);
}

/* Where the next readv puts bytes: the rest of the current part, and when that part ends
 * the frame, the next header too. */
static int rx_iov(struct tcp_conn *c, char *scratch, struct iovec *iov)
{
	switch (c->rx_state) {
	case RX_SMALL:
		iov[0] = (struct iovec){c->small + c->small_got, c->small_need - c->small_got};
		if (c->small_more)
			return 1;
		break;
	case RX_DATA:
		if (c->rx_dst) {
			iov[0] = (struct iovec){c->rx_dst, c->rx_left};
		} else {
			iov[0] = (struct iovec){scratch, c->rx_left < SCRATCH_SIZE ? c->rx_left
										   : SCRATCH_SIZE};
			if (c->rx_left > SCRATCH_SIZE)
				return 1;
		}
		break;
	default:
		iov[0] = (struct iovec){c->rhdr + c->rhdr_got, WIRE_HDR_SIZE - c->rhdr_got};
		return 1;
	}
	iov[1] = (struct iovec){c->rhdr, WIRE_HDR_SIZE};
	return 2;
}

static int rx_consume(struct tcp_conn *c, uint64_t n, struct slice_list *l)
{
	uint64_t k;
	int rc;

	switch (c->rx_state) {
	case RX_HDR:
		c->rhdr_got += (uint32_t)n;
		if (c->rhdr_got < WIRE_HDR_SIZE)
			return 0;
		c->rhdr_got = 0;
		return on_header(c, l);
	case RX_SMALL:
		k = c->small_need - c->small_got;
		k = n < k ? n : k;
		c->small_got += (uint32_t)k;
		n -= k;
		if (c->small_got < c->small_need)
			return 0;
		rc = on_small(c);
		break;
	default: /* RX_DATA */
		k = n < c->rx_left ? n : c->rx_left;
		if (c->rx_dst)
			c->rx_dst += k;
		c->rx_left -= k;
		n -= k;
		if (c->rx_left)
			return 0;
		rc = on_data_done(c, l);
		break;
	}
	if (rc < 0 || n == 0)
		return rc;
	/* the rest is the start of the next header */
	c->rhdr_got = (uint32_t)n;
	if (c->rhdr_got < WIRE_HDR_SIZE)
		return 0;
	c->rhdr_got = 0;
	return on_header(c, l);
}

/* Read until the socket is empty (0), budget is spent (*more = 1), or the connection fails
 * (a negative errno). */
static int conn_rx(struct tcp_conn *c, char *scratch, struct slice_list *l, int *more)
{
	uint64_t budget = RX_BUDGET;
	struct iovec iov[2];
	ssize_t n;
	int rc;

	while (c->state == C_LINGER) {
		n = recv(c->fd, scratch, SCRATCH_SIZE, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
	}
	while (!c->rx_paused) {
		if (!budget) {
			*more = 1;
			return 0;
		}
		n = readv(c->fd, iov, rx_iov(c, scratch, iov));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		if (c->initiator) {
			c->last_rx_ns = xfer_now_ns();
			c->ping_sent = false;
		}
		budget = (uint64_t)n < budget ? budget - (uint64_t)n : 0;
		rc = rx_consume(c, (uint64_t)n, l);
		if (rc < 0)
			return rc;
		if (c->state == C_LINGER) {
			*more = 1; /* drain what follows */
			return 0;
		}
	}
	return 0;
}

/* ---- connection failure and teardown ------------------------------------------------- */

static void rc_schedule(struct tcp_conn *c);

/* Close the socket and give every slice back (err); reset the stream state. */
static void conn_teardown(struct tcp_conn *c, int err, struct slice_list *l)
{
	struct rpc_call *k;
	struct txi *t;

	if (c->fd >= 0) {
		epoll_ctl(c->loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	atomic_store(&c->h.ready, 0);
	while ((t = c->tx_head)) {
		if (t->kind == TXI_SLICE) {
			slice_out(c, txi_slice(t), err, l);
			continue;
		}
		c->tx_head = t->next;
		if (!c->tx_head)
			c->tx_tail = NULL;
		t->next = NULL;
		if (t->kind == TXI_REPLY) {
			reply_free(c, (struct treply *)t);
		} else if (t->kind == TXI_RPC) {
			txi_call(t)->q = false;
			call_drop(txi_call(t));
		}
	}
	c->tx_replies = 0;
	c->tx_owned = 0;
	c->ping_queued = c->q_queued = c->ping_sent = false;
	while (c->if_head)
		slice_out(c, c->if_head, err, l);
	/* every call waiting here ends ECONNRESET, whatever broke the connection */
	while ((k = c->calls_head)) {
		call_unlink(c, k);
		call_finish(k, -ECONNRESET, NULL, 0);
	}
	if ((k = c->rx_call)) {
		c->rx_call = NULL;
		call_finish(k, -ECONNRESET, NULL, 0);
	}
	free(c->rx_rpc);
	c->rx_rpc = NULL;
	if (c->query) {
		c->query->rc = -ECONNRESET;
		c->query->done = true;
		pthread_cond_broadcast(&c->query->cv);
		c->query = NULL;
	}
	if (c->rx_seg) {
		xfer_seg_put(c->x->e, c->rx_seg);
		c->rx_seg = NULL;
	}
	c->rx_slice = NULL;
	c->rx_dst = NULL;
	c->rx_state = RX_HDR;
	c->rhdr_got = 0;
	c->rx_paused = c->rx_resume = c->wr_shut = false;
}

/* The connection failed (err < 0): initiator side it goes down and is reconnected later,
 * target side it is closed for good (freed by its loop). */
static void conn_fail(struct tcp_conn *c, int err, struct slice_list *l)
{
	if (c->state == C_DOWN || c->state == C_CLOSED)
		return;
	if (c->initiator && c->state == C_READY && !atomic_load(&c->peer->closing))
		peer_down_add(c, err);
	conn_teardown(c, err, l);
	if (!c->initiator) {
		c->state = C_CLOSED;
		return;
	}
	c->state = C_DOWN;
	rc_schedule(c);
}

/* ---- the initiator's handshake (blocking) -------------------------------------------- */

static int io_full(int fd, void *buf, size_t len, bool wr)
{
	char *p = buf;
	ssize_t n;

	while (len) {
		n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read one handshake frame: REJECT is turned into its errno (EACCES, else EPROTO). */
static int hs_read(int fd, enum wire_type want, uint8_t *body, uint32_t len)
{
	uint8_t raw[WIRE_HDR_SIZE];
	struct wire_hdr h;
	int rc;

	rc = io_full(fd, raw, sizeof(raw), false);
	if (rc < 0)
		return rc;
	if (wire_hdr_decode(raw, &h) < 0)
		return -EPROTO;
	if (h.type == WIRE_REJECT)
		return h.arg == EACCES ? -EACCES : -EPROTO;
	if (h.type != want || h.body_len != len)
		return -EPROTO;
	return len ? io_full(fd, body, len, false) : 0;
}

static int hs_initiate(struct xfer_engine *e, int fd, uint64_t *peer_id, unsigned *peer_tr)
{
	uint8_t buf[WIRE_HDR_SIZE + WIRE_CHALLENGE_SIZE];
	struct wire_hello hello = {.node_id = e->node_id, .transports = e->advertise};
	struct wire_challenge ch;
	struct wire_hdr h;
	uint8_t proof[WIRE_PROOF];
	int rc;

	auth_nonce(hello.nonce);
	wire_hdr_init(&h, WIRE_HELLO, WIRE_HELLO_SIZE, 0, 0);
	wire_hdr_encode(&h, buf);
	wire_hello_encode(&hello, buf + WIRE_HDR_SIZE);
	rc = io_full(fd, buf, WIRE_HDR_SIZE + WIRE_HELLO_SIZE, true);
	if (rc < 0)
		return rc;
	rc = hs_read(fd, WIRE_CHALLENGE, buf, WIRE_CHALLENGE_SIZE);
	if (rc < 0)
		return rc;
	if (wire_challenge_decode(buf, WIRE_CHALLENGE_SIZE, &ch) < 0)
		return -EPROTO;
	if (!auth_verify(&e->key, 'T', hello.nonce, ch.nonce, e->node_id, ch.node_id, ch.proof))
		return -EACCES; /* the target does not know the secret */
	auth_proof(&e->key, 'I', hello.nonce, ch.nonce, e->node_id, ch.node_id, proof);
	wire_hdr_init(&h, WIRE_AUTH, WIRE_AUTH_SIZE, 0, 0);
	wire_hdr_encode(&h, buf);
	memcpy(buf + WIRE_HDR_SIZE, proof, WIRE_PROOF);
	rc = io_full(fd, buf, WIRE_HDR_SIZE + WIRE_AUTH_SIZE, true);
	if (rc < 0)
		return rc;
	rc = hs_read(fd, WIRE_WELCOME, NULL, 0);
	if (rc < 0)
		return rc;
	*peer_id = ch.node_id;
	*peer_tr = ch.transports;
	return 0;
}

static int dial(const char *host, const char *port, uint64_t deadline_ns, int *out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res, *ai;
	struct pollfd pfd;
	socklen_t sl;
	int fd = -1, rc, err = -EHOSTUNREACH, left;

	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc)
		return rc == EAI_SYSTEM ? -errno : rc == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		err = -errno;
		if (errno == EINPROGRESS) {
			uint64_t now = xfer_now_ns();

			left = now < deadline_ns ? (int)((deadline_ns - now) / 1000000) + 1 : 0;
			pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
			rc = poll(&pfd, 1, left);
			if (rc == 0) {
				err = -ETIMEDOUT;
			} else if (rc > 0) {
				sl = sizeof(rc);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &rc, &sl) == 0 && rc == 0)
					break;
				err = rc > 0 ? -rc : -ECONNREFUSED;
			}
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err;
	*out = fd;
	return 0;
}

/* Connect and authenticate one connection to the peer, within timeout_ms. */
static int connect_hs(struct xfer_engine *e, struct xfer_peer *p, unsigned timeout_ms, int *out,
		      uint64_t *peer_id, unsigned *peer_tr)
{
	uint64_t deadline = xfer_now_ns() + (uint64_t)timeout_ms * 1000000ull, now;
	struct timeval tv;
	int fd = -1, rc;

	rc = dial(p->host, p->port, deadline, &fd);
	if (rc < 0)
		return rc;
	now = xfer_now_ns();
	if (now >= deadline)
		now = deadline - 1000000;
	tv.tv_sec = (time_t)((deadline - now) / 1000000000ull);
	tv.tv_usec = (suseconds_t)((deadline - now) % 1000000000ull / 1000);
	rc = set_nonblock(fd, false);
	if (!rc && (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0))
		rc = -errno;
	if (!rc)
		rc = hs_initiate(e, fd, peer_id, peer_tr);
	if (!rc) {
		tv = (struct timeval){0, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		rc = set_nonblock(fd, true);
	}
	if (rc < 0) {
		close(fd);
		return rc;
	}
	sock_tune(e, fd);
	*out = fd;
	return 0;
}

/* ---- streams (engine/xfer.h): one thread's blocking connection, reads spliced ---------- */

struct xfer_stream {
	struct xfer_peer *p;
	int fd;
	uint64_t next_id; /* of the last request sent */
	uint64_t last_id; /* of the last reply received */
};

int xfer_stream_open(struct xfer_peer *p, struct xfer_stream **out)
{
	struct xfer_engine *e = p->e;
	struct timeval tv = {.tv_sec = (time_t)(e->cfg.timeout_ms / 1000),
			     .tv_usec = (suseconds_t)(e->cfg.timeout_ms % 1000) * 1000};
	struct xfer_stream *s = NULL;
	uint64_t id;
	unsigned tr;
	int fd, rc;

	rc = connect_hs(e, p, e->cfg.timeout_ms, &fd, &id, &tr);
	if (rc < 0)
		return rc;
	if (p->node_id && id != p->node_id)
		rc = -EPROTO; /* another node took that address */
	else if (set_nonblock(fd, false) < 0 ||
		 setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
		 setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		rc = -errno;
	else if (!(s = malloc(sizeof(*s))))
		rc = -ENOMEM;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	*s = (struct xfer_stream){.p = p, .fd = fd};
	*out = s;
	return 0;
}

void xfer_stream_close(struct xfer_stream *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s);
}

int xfer_stream_alive(const struct xfer_stream *s)
{
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN | POLLRDHUP};

	return poll(&pfd, 1, 0) == 0;
}

struct xfer_peer *xfer_stream_peer(const struct xfer_stream *s)
{
	return s->p;
}

/* The head of a READ_DATA reply to request id: its status (0 or a positive errno), or a
 * negative transport error. *body: the bytes that follow. */
static int stream_reply(struct xfer_stream *s, uint64_t id, uint64_t *body)
{
	uint8_t raw[WIRE_HDR_SIZE];
	struct wire_hdr h;
	int rc = io_full(s->fd, raw, sizeof(raw), false);

	if (rc < 0)
		return rc;
	if (wire_hdr_decode(raw, &h) < 0 || h.type != WIRE_READ_DATA || h.req_id != id)
		return -EPROTO;
	*body = h.body_len;
	if (h.arg)
		return h.body_len || h.arg > 4095 ? -EPROTO : (int)h.arg;
	return 0;
}

/* Move len bytes of body from the socket into the pipe. The socket is blocking (it waits up
 * to the engine's timeout for data); the pipe is not waited for: no one drains it meanwhile. */
static int stream_splice(struct xfer_stream *s, int pipe_wr, uint64_t len)
{
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	ssize_t n;

	while (len) {
		n = splice(s->fd, NULL, pipe_wr, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			len -= (uint64_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		/* data waiting, yet nothing moved: the pipe is full; else the wait timed out */
		return poll(&pfd, 1, 0) > 0 ? -ENOBUFS : -ETIMEDOUT;
	}
	return 0;
}

int xfer_stream_send(struct xfer_stream *s, uint32_t seg, uint64_t off, uint64_t len,
		     uint64_t check_off, uint32_t check_len)
{
	uint8_t out[2 * (WIRE_HDR_SIZE + WIRE_RW_SIZE)];
	struct wire_rw rw = {.seg = seg, .off = off, .len = len};
	struct wire_hdr h;

	if (!len || len > WIRE_MAX_DATA || check_len > WIRE_MAX_DATA)
		return -EINVAL;
	wire_hdr_init(&h, WIRE_READ, WIRE_RW_SIZE, ++s->next_id, 0);
	wire_hdr_encode(&h, out);
	wire_rw_encode(&rw, out + WIRE_HDR_SIZE);
	rw = (struct wire_rw){.seg = seg, .off = check_off, .len = check_len};
	wire_hdr_init(&h, WIRE_READ, WIRE_RW_SIZE, ++s->next_id, 0);
	wire_hdr_encode(&h, out + WIRE_HDR_SIZE + WIRE_RW_SIZE);
	wire_rw_encode(&rw, out + 2 * WIRE_HDR_SIZE + WIRE_RW_SIZE);
	return io_full(s->fd, out, sizeof(out), true);
}

int xfer_stream_recv(struct xfer_stream *s, uint64_t len, int pipe_wr, void *check,
		     uint32_t check_len, int *broken)
{
	uint64_t id = ++s->last_id, body;
	int rc, st;

	*broken = 1;
	st = stream_reply(s, id, &body);
	if (st < 0)
		return st;
	if (!st && body != len)
		return -EPROTO;
	if (!st && (rc = stream_splice(s, pipe_wr, len)) < 0)
		return rc;
	rc = stream_reply(s, ++s->last_id, &body);
	if (rc < 0)
		return rc;
	if (!rc && body != check_len)
		return -EPROTO;
	if (!rc && check_len && (rc = io_full(s->fd, check, check_len, false)) < 0)
		return rc;
	*broken = 0;
	if (st || rc)
		return -(st ? st : rc);
	xfer_count_bytes(s->p, XFER_IDX_TCP, true, len);
	return 0;
}

int xfer_stream_read(struct xfer_stream *s, uint32_t seg, uint64_t off, uint64_t len, int pipe_wr,
		     uint64_t check_off, void *check, uint32_t check_len, int *broken)
{
	int rc = xfer_stream_send(s, seg, off, len, check_off, check_len);

	*broken = 1;
	return rc < 0 ? rc : xfer_stream_recv(s, len, pipe_wr, check, check_len, broken);
}

/* Put a connected, authenticated socket to work on c (c's mutex held). */
static int conn_install(struct tcp_conn *c, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.ptr = c};

	c->fd = fd;
	c->state = C_READY;
	c->rx_state = RX_HDR;
	c->rhdr_got = 0;
	c->last_rx_ns = xfer_now_ns();
	c->backoff_ms = RECONNECT_MIN_MS;
	sock_name(fd, true, c->name, sizeof(c->name));
	if (epoll_ctl(c->loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		c->fd = -1;
		c->state = C_DOWN;
		return err;
	}
	atomic_store(&c->h.ready, 1);
	return 0;
}

/* ---- reconnects ---------------------------------------------------------------------- */

/* c's mutex held: queue c for a reconnect after its backoff; the job holds a peer ref. */
static void rc_schedule(struct tcp_conn *c)
{
	struct tcp_xport *x = c->x;

	if (atomic_load(&c->peer->closing))
		return;
	pthread_mutex_lock(&x->rc_mu);
	if (!c->rc_queued && !x->rc_stop) {
		xfer_peer_get(c->peer);
		c->rc_queued = true;
		c->rc_at = xfer_now_ns() + (uint64_t)c->backoff_ms * 1000000ull;
		c->rc_next = x->rc_list;
		x->rc_list = c;
		pthread_cond_signal(&x->rc_cv);
	}
	pthread_mutex_unlock(&x->rc_mu);
}

static void *rc_main(void *arg)
{
	struct tcp_xport *x = arg;
	struct xfer_engine *e = x->e;
	struct tcp_conn **pp, *c, *best;
	struct timespec ts;
	uint64_t now, peer_id;
	unsigned tr, tmo = e->cfg.timeout_ms < 2000 ? e->cfg.timeout_ms : 2000;
	int fd = -1, rc;
	bool requeued;

	pthread_mutex_lock(&x->rc_mu);
	while (!x->rc_stop) {
		/* jobs of closing peers are dropped; then the earliest due */
		best = NULL;
		for (pp = &x->rc_list; (c = *pp);) {
			if (atomic_load(&c->peer->closing)) {
				*pp = c->rc_next;
				c->rc_queued = false;
				pthread_mutex_unlock(&x->rc_mu);
				xfer_peer_put(c->peer);
				pthread_mutex_lock(&x->rc_mu);
				pp = &x->rc_list;
				continue;
			}
			if (!best || c->rc_at < best->rc_at)
				best = c;
			pp = &c->rc_next;
		}
		if (!best) {
			/* tcp_stop may have set rc_stop (and signalled) while rc_mu was dropped
			 * above: a wait now would never end */
			if (!x->rc_stop)
				pthread_cond_wait(&x->rc_cv, &x->rc_mu);
			continue;
		}
		now = xfer_now_ns();
		if (now < best->rc_at) {
			ts.tv_sec = (time_t)(best->rc_at / 1000000000ull);
			ts.tv_nsec = (long)(best->rc_at % 1000000000ull);
			pthread_cond_timedwait(&x->rc_cv, &x->rc_mu, &ts);
			continue;
		}
		for (pp = &x->rc_list; *pp != best; pp = &(*pp)->rc_next)
			;
		*pp = best->rc_next;
		best->rc_queued = false;
		pthread_mutex_unlock(&x->rc_mu);

		c = best;
		rc = connect_hs(e, c->peer, tmo, &fd, &peer_id, &tr);
		requeued = false;
		pthread_mutex_lock(&c->h.mu);
		if (c->state == C_DOWN && !atomic_load(&c->peer->closing)) {
			if (rc == 0 && conn_install(c, fd) == 0) {
				fd = -1;
				peer_down_sub(c);
			} else {
				c->backoff_ms = c->backoff_ms * 2 > RECONNECT_MAX_MS
						    ? RECONNECT_MAX_MS
						    : c->backoff_ms * 2;
				pthread_mutex_lock(&x->rc_mu);
				if (!x->rc_stop) {
					c->rc_queued = true;
					c->rc_at =
					    xfer_now_ns() + (uint64_t)c->backoff_ms * 1000000ull;
					c->rc_next = x->rc_list;
					x->rc_list = c;
					requeued = true;
				}
				pthread_mutex_unlock(&x->rc_mu);
			}
		}
		pthread_mutex_unlock(&c->h.mu);
		if (rc == 0 && fd >= 0)
			close(fd);
		fd = -1;
		if (!requeued)
			xfer_peer_put(c->peer);
		pthread_mutex_lock(&x->rc_mu);
	}
	pthread_mutex_unlock(&x->rc_mu);
	return NULL;
}

/* ---- the event loops ----------------------------------------------------------------- */

static void ready_add(struct tcp_loop *L, struct tcp_conn *c)
{
	if (c->on_ready)
		return;
	c->on_ready = true;
	c->rnext = L->ready;
	L->ready = c;
}

static void ready_remove(struct tcp_loop *L, struct tcp_conn *c)
{
	struct tcp_conn **pp;

	if (!c->on_ready)
		return;
	for (pp = &L->ready; *pp; pp = &(*pp)->rnext) {
		if (*pp == c) {
			*pp = c->rnext;
			break;
		}
	}
	c->on_ready = false;
}

static void loop_link(struct tcp_loop *L, struct tcp_conn *c)
{
	pthread_mutex_lock(&L->mu);
	c->lprev = NULL;
	c->lnext = L->conns;
	if (c->lnext)
		c->lnext->lprev = c;
	L->conns = c;
	pthread_mutex_unlock(&L->mu);
}

static void loop_unlink(struct tcp_loop *L, struct tcp_conn *c)
{
	pthread_mutex_lock(&L->mu);
	if (c->lprev)
		c->lprev->lnext = c->lnext;
	else
		L->conns = c->lnext;
	if (c->lnext)
		c->lnext->lprev = c->lprev;
	c->lnext = c->lprev = NULL;
	pthread_mutex_unlock(&L->mu);
}

static void conn_free(struct tcp_conn *c)
{
	struct treply *r;

	while ((r = c->free_replies)) {
		c->free_replies = r->fnext;
		free(r);
	}
	pthread_mutex_destroy(&c->h.mu);
	free(c);
}

static void dead_add(struct tcp_loop *L, struct tcp_conn *c)
{
	if (c->on_dead)
		return;
	c->on_dead = true;
	c->rnext = NULL;
	ready_remove(L, c);
	c->rnext = L->dead;
	L->dead = c;
}

/* One round of work on a connection: read, then send what is queued. */
static void conn_event(struct tcp_loop *L, struct tcp_conn *c)
{
	struct slice_list l = {NULL};
	int rc, more = 0;
	bool dead;

	pthread_mutex_lock(&c->h.mu);
	if (c->fd < 0) {
		pthread_mutex_unlock(&c->h.mu);
		return;
	}
	rc = conn_rx(c, L->scratch, &l, &more);
	if (rc >= 0) {
		rc = conn_tx(c, TX_BUDGET);
		if (rc > 0)
			more = 1;
	}
	if (rc >= 0 && c->rx_resume) {
		c->rx_resume = false;
		more = 1;
	}
	if (rc < 0)
		conn_fail(c, rc, &l);
	dead = !c->initiator && c->state == C_CLOSED;
	if (rc >= 0 && more)
		ready_add(L, c);
	pthread_mutex_unlock(&c->h.mu);
	xfer_slices_end(&l);
	if (dead)
		dead_add(L, c);
}

static void do_accept(struct tcp_xport *x)
{
	struct tcp_loop *L;
	struct tcp_conn *c;
	struct epoll_event ev;
	int fd;

	for (;;) {
		fd = accept4(x->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN, or out of descriptors: retried at the next event */
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		sock_tune(x->e, fd);
		pthread_mutex_init(&c->h.mu, NULL);
		c->h.kind = PATH_TCP;
		c->x = x;
		L = &x->loops[atomic_fetch_add(&x->next_loop, 1) % x->nloops];
		c->loop = L;
		c->fd = fd;
		c->state = C_HS_HELLO;
		c->since_ns = xfer_now_ns();
		sock_name(fd, true, c->name, sizeof(c->name));
		loop_link(L, c);
		ev = (struct epoll_event){.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					  .data.ptr = c};
		if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			/* not in any epoll: the loop's lists are the only references */
			pthread_mutex_lock(&c->h.mu);
			close(c->fd);
			c->fd = -1;
			c->state = C_CLOSED;
			pthread_mutex_unlock(&c->h.mu);
		}
	}
}

/* Keep-alive and handshake deadlines, every tick. */
static void loop_tick(struct tcp_loop *L, uint64_t now)
{
	struct tcp_xport *x = L->x;
	struct slice_list l = {NULL};
	struct tcp_conn *c, *dead = NULL;
	uint64_t idle;
	int rc;

	pthread_mutex_lock(&L->mu);
	for (c = L->conns; c; c = c->lnext) {
		pthread_mutex_lock(&c->h.mu);
		if (c->initiator && c->state == C_READY &&
		    (c->if_head || c->tx_head || c->calls_head || c->rx_call)) {
			idle = now > c->last_rx_ns ? now - c->last_rx_ns : 0;
			if (idle > x->dead_ns) {
				conn_fail(c, -ETIMEDOUT, &l);
			} else if (idle > x->ping_ns && !c->ping_sent && !c->ping_queued) {
				struct wire_hdr h;

				wire_hdr_init(&h, WIRE_PING, 0, 0, 0);
				wire_hdr_encode(&h, c->ping_head);
				c->ping = (struct txi){.head = c->ping_head,
						       .head_len = WIRE_HDR_SIZE,
						       .kind = TXI_PING};
				c->ping_queued = c->ping_sent = true;
				tx_push(c, &c->ping);
				rc = conn_tx(c, TX_BUDGET);
				if (rc < 0)
					conn_fail(c, rc, &l);
				else if (rc > 0)
					ready_add(L, c); /* no EPOLLOUT edge is due: resume here */
			}
		} else if (!c->initiator && c->state != C_CLOSED &&
			   ((c->state != C_READY && c->state != C_LINGER &&
			     now - c->since_ns > x->hs_ns) ||
			    (c->state == C_LINGER && now - c->since_ns > LINGER_MS * 1000000ull))) {
			if (c->state != C_LINGER)
				conn_log(c, LOG_NOTICE, "handshake not finished in time");
			conn_fail(c, -ETIMEDOUT, &l);
		}
		if (!c->initiator && c->state == C_CLOSED && !c->on_dead) {
			c->on_dead = true; /* freed below, out of the list walk */
			ready_remove(L, c);
			c->rnext = dead;
			dead = c;
		}
		pthread_mutex_unlock(&c->h.mu);
	}
	pthread_mutex_unlock(&L->mu);
	xfer_slices_end(&l);
	while ((c = dead)) {
		dead = c->rnext;
		c->on_dead = false;
		dead_add(L, c);
	}
}

/* Close an initiator connection for good (xfer_close_peer), between event batches. */
static void run_cmds(struct tcp_loop *L)
{
	struct slice_list l = {NULL};
	struct cmd *cmds, *k;
	struct tcp_conn *c;

	pthread_mutex_lock(&L->mu);
	cmds = L->cmds;
	L->cmds = NULL;
	pthread_mutex_unlock(&L->mu);
	for (k = cmds; k; k = k->next) {
		c = k->c;
		pthread_mutex_lock(&c->h.mu);
		conn_teardown(c, -ECANCELED, &l);
		c->state = C_CLOSED;
		pthread_mutex_unlock(&c->h.mu);
		loop_unlink(L, c);
		ready_remove(L, c);
	}
	xfer_slices_end(&l);
	if (!cmds)
		return;
	pthread_mutex_lock(&L->mu);
	for (k = cmds; k; k = k->next)
		k->done = true;
	pthread_cond_broadcast(&L->cv);
	pthread_mutex_unlock(&L->mu);
}

static void free_dead(struct tcp_loop *L)
{
	struct tcp_conn *c;

	while ((c = L->dead)) {
		L->dead = c->rnext;
		loop_unlink(L, c);
		conn_free(c);
	}
}

static void *loop_main(void *arg)
{
	struct tcp_loop *L = arg;
	struct tcp_xport *x = L->x;
	struct xfer_engine *e = x->e;
	struct epoll_event ev[64];
	struct tcp_conn *r, *next;
	uint64_t now, v;
	int n, i, tmo;
	bool stop;

	for (;;) {
		tmo = L->ready ? 0 : atomic_load(&e->rdma_busy) ? 1 : (int)x->tick_ms;
		n = epoll_wait(L->epfd, ev, 64, tmo);
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == L) {
				if (read(L->evfd, &v, sizeof(v)) < 0)
					v = 0;
			} else if (ev[i].data.ptr == x) {
				do_accept(x);
			} else {
				conn_event(L, ev[i].data.ptr);
			}
		}
		r = L->ready;
		L->ready = NULL;
		for (; r; r = next) {
			next = r->rnext;
			r->on_ready = false;
			conn_event(L, r);
		}
		run_cmds(L);
		now = xfer_now_ns();
		if (now - L->last_tick >= x->tick_ms * 1000000ull) {
			loop_tick(L, now);
			L->last_tick = now;
		}
		if (atomic_load(&e->rdma_busy))
			xfer_rdma_poll(e);
		free_dead(L);
		pthread_mutex_lock(&L->mu);
		stop = L->stop;
		pthread_mutex_unlock(&L->mu);
		if (stop)
			break;
	}
	/* target connections left: close them (their pinned segments are released) */
	pthread_mutex_lock(&L->mu);
	while ((r = L->conns)) {
		struct slice_list l = {NULL};

		L->conns = r->lnext;
		pthread_mutex_unlock(&L->mu);
		pthread_mutex_lock(&r->h.mu);
		conn_teardown(r, -ECANCELED, &l);
		r->state = C_CLOSED;
		pthread_mutex_unlock(&r->h.mu);
		xfer_slices_end(&l);
		if (!r->initiator)
			conn_free(r);
		pthread_mutex_lock(&L->mu);
	}
	pthread_mutex_unlock(&L->mu);
	return NULL;
}

static void loop_wake(struct tcp_loop *L)
{
	uint64_t one = 1;

	if (write(L->evfd, &one, sizeof(one)) < 0) {
		/* the counter is already non-zero: the loop will wake anyway */
	}
}

void tcp_kick(struct xfer_engine *e)
{
	struct tcp_xport *x = e->tcp;

	if (x)
		for (unsigned i = 0; i < x->nloops; i++)
			loop_wake(&x->loops[i]);
}

/* ---- peers --------------------------------------------------------------------------- */

int tcp_peer_open(struct xfer_engine *e, struct xfer_peer *p)
{
	struct tcp_xport *x = e->tcp;
	struct tcp_conn *c;
	uint64_t id;
	unsigned tr;
	int fd, rc;

	p->conns = calloc(p->nconns, sizeof(*p->conns));
	if (!p->conns)
		return -ENOMEM;
	for (unsigned i = 0; i < p->nconns; i++) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return -ENOMEM;
		pthread_mutex_init(&c->h.mu, NULL);
		c->h.kind = PATH_TCP;
		c->h.peer = p;
		c->x = x;
		c->peer = p;
		c->idx = i;
		c->initiator = true;
		c->fd = -1;
		c->state = C_DOWN;
		c->backoff_ms = RECONNECT_MIN_MS;
		c->loop = &x->loops[atomic_fetch_add(&x->next_loop, 1) % x->nloops];
		snprintf(c->name, sizeof(c->name), "%s:%s", p->host, p->port);
		p->conns[i] = c;
		loop_link(c->loop, c);
	}
	for (unsigned i = 0; i < p->nconns; i++) {
		c = p->conns[i];
		rc = connect_hs(e, p, e->cfg.timeout_ms, &fd, &id, &tr);
		if (rc < 0)
			return rc;
		if (i == 0) {
			p->node_id = id;
			p->remote_transports = tr;
		}
		pthread_mutex_lock(&c->h.mu);
		rc = conn_install(c, fd);
		pthread_mutex_unlock(&c->h.mu);
		if (rc < 0) {
			close(fd);
			return rc;
		}
	}
	return 0;
}

void tcp_peer_shutdown(struct xfer_peer *p)
{
	struct tcp_xport *x = p->e->tcp;
	struct tcp_conn *c;

	if (!p->conns)
		return;
	pthread_mutex_lock(&x->rc_mu);
	pthread_cond_broadcast(&x->rc_cv); /* drop this peer's reconnect jobs */
	pthread_mutex_unlock(&x->rc_mu);
	for (unsigned i = 0; i < p->nconns; i++) {
		struct cmd k = {.c = p->conns[i]};
		struct tcp_loop *L;

		c = p->conns[i];
		if (!c)
			continue;
		L = c->loop;
		pthread_mutex_lock(&L->mu);
		k.next = L->cmds;
		L->cmds = &k;
		pthread_mutex_unlock(&L->mu);
		loop_wake(L);
		pthread_mutex_lock(&L->mu);
		while (!k.done)
			pthread_cond_wait(&L->cv, &L->mu);
		pthread_mutex_unlock(&L->mu);
	}
}

void tcp_peer_free(struct xfer_peer *p)
{
	if (!p->conns)
		return;
	for (unsigned i = 0; i < p->nconns; i++)
		if (p->conns[i])
			conn_free(p->conns[i]);
	free(p->conns);
	p->conns = NULL;
}

int tcp_conn_enqueue(struct tcp_conn *c, struct xslice *s)
{
	struct slice_list l = {NULL};
	struct wire_hdr h;
	struct wire_rw rw = {.seg = s->req->seg, .off = s->roff, .len = s->len};
	bool wr = s->op == XFER_WRITE;
	int rc;

	pthread_mutex_lock(&c->h.mu);
	atomic_store(&s->path, &c->h); /* before reading abort: see xfer_int.h */
	if (atomic_load(&s->req->abort)) {
		rc = -ECANCELED;
		goto out_refuse;
	}
	if (c->state != C_READY) {
		rc = -ENOTCONN;
		goto out_refuse;
	}
	s->orphan = false;
	wire_hdr_init(&h, wr ? WIRE_WRITE : WIRE_READ, WIRE_RW_SIZE + (wr ? s->len : 0), s->wire_id,
		      0);
	wire_hdr_encode(&h, s->head);
	wire_rw_encode(&rw, s->head + WIRE_HDR_SIZE);
	s->tx = (struct txi){.head = s->head,
			     .head_len = WIRE_HDR_SIZE + WIRE_RW_SIZE,
			     .payload = wr ? s->local : NULL,
			     .payload_left = wr ? s->len : 0,
			     .kind = TXI_SLICE};
	s->where = W_SQ;
	if (!c->tx_head && !c->if_head && !c->calls_head)
		c->last_rx_ns = xfer_now_ns(); /* idle time counts from the first request */
	tx_push(c, &s->tx);
	rc = conn_tx(c, UINT64_MAX);
	if (rc < 0)
		conn_fail(c, rc, &l);
	pthread_mutex_unlock(&c->h.mu);
	xfer_slices_end(&l);
	return 0;
out_refuse:
	atomic_store(&s->path, NULL);
	pthread_mutex_unlock(&c->h.mu);
	return rc;
}

void tcp_conn_detach(struct tcp_conn *c, struct xslice *s)
{
	struct slice_list l = {NULL};

	pthread_mutex_lock(&c->h.mu);
	if (atomic_load(&s->path) != &c->h || s->orphan)
		goto out;
	if (s->where == W_SQ && s->tx.hsent == 0) {
		slice_out(c, s, -ECANCELED, &l); /* nothing sent yet: just drop it */
		goto out;
	}
	s->orphan = true;
	if (s->where == W_SQ && s->tx.payload_left) {
		/* half-sent WRITE: the frame must go out whole, from our own copy */
		s->copy = malloc(s->tx.payload_left);
		if (!s->copy) {
			conn_fail(c, -ENOMEM, &l);
			goto out;
		}
		memcpy(s->copy, s->tx.payload, s->tx.payload_left);
		s->tx.payload = s->copy;
	}
	if (c->rx_slice == s)
		c->rx_dst = NULL; /* the rest of its READ_DATA is drained */
out:
	pthread_mutex_unlock(&c->h.mu);
	xfer_slices_end(&l);
}

int tcp_seg_query(struct xfer_peer *p, uint32_t seg, struct wire_seg_info *info, int timeout_ms)
{
	struct slice_list l = {NULL};
	struct seg_query q = {.id = atomic_fetch_add(&p->e->next_wire_id, 1)};
	struct tcp_conn *c = NULL;
	pthread_condattr_t ca;
	struct wire_hdr h;
	struct timespec ts;
	uint64_t end = xfer_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int rc;

	for (unsigned i = 0; i < p->nconns; i++) {
		c = p->conns[i];
		pthread_mutex_lock(&c->h.mu);
		if (c->state == C_READY && !c->query && !c->q_queued)
			break;
		pthread_mutex_unlock(&c->h.mu);
		c = NULL;
	}
	if (!c)
		return -ENOTCONN;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q.cv, &ca);
	pthread_condattr_destroy(&ca);
	wire_hdr_init(&h, WIRE_SEG_QUERY, WIRE_SEG_QUERY_SIZE, q.id, 0);
	wire_hdr_encode(&h, c->q_head);
	wire_seg_query_encode(seg, c->q_head + WIRE_HDR_SIZE);
	c->qtx = (struct txi){
	    .head = c->q_head, .head_len = WIRE_HDR_SIZE + WIRE_SEG_QUERY_SIZE, .kind = TXI_QUERY};
	c->q_queued = true;
	c->query = &q;
	tx_push(c, &c->qtx);
	rc = conn_tx(c, UINT64_MAX);
	if (rc < 0)
		conn_fail(c, rc, &l);
	ts.tv_sec = (time_t)(end / 1000000000ull);
	ts.tv_nsec = (long)(end % 1000000000ull);
	while (!q.done)
		if (pthread_cond_timedwait(&q.cv, &c->h.mu, &ts) == ETIMEDOUT)
			break;
	if (c->query == &q)
		c->query = NULL;
	pthread_mutex_unlock(&c->h.mu);
	pthread_cond_destroy(&q.cv);
	xfer_slices_end(&l);
	if (!q.done)
		return -ETIMEDOUT;
	if (q.rc < 0)
		return q.rc;
	if (q.status)
		return -q.status;
	*info = q.info;
	return 0;
}

/* Lock a READY connection of p, round-robin from the last pick; NULL when none is. */
static struct tcp_conn *call_conn(struct xfer_peer *p)
{
	unsigned start = atomic_fetch_add(&p->rpc_rr, 1);
	struct tcp_conn *c;

	for (unsigned i = 0; i < p->nconns; i++) {
		c = p->conns[(start + i) % p->nconns];
		if (!c || !atomic_load(&c->h.ready))
			continue;
		pthread_mutex_lock(&c->h.mu);
		if (c->state == C_READY)
			return c;
		pthread_mutex_unlock(&c->h.mu);
	}
	return NULL;
}

int tcp_call(struct xfer_peer *p, const void *req, size_t len, void **resp, size_t *resp_len,
	     int timeout_ms)
{
	struct slice_list l = {NULL};
	uint64_t end = xfer_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	pthread_condattr_t ca;
	struct rpc_call *k;
	struct tcp_conn *c;
	struct wire_hdr h;
	struct timespec ts;
	int rc;

	k = malloc(sizeof(*k) + len);
	if (!k)
		return -ENOMEM;
	memset(k, 0, sizeof(*k));
	atomic_init(&k->refs, 2); /* ours, and the connection's once queued */
	if (len)
		memcpy(k->req, req, len);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	k->id = atomic_fetch_add(&p->e->next_wire_id, 1);
	wire_hdr_init(&h, WIRE_RPC, (uint32_t)len, k->id, 0);
	wire_hdr_encode(&h, k->head);
	k->tx = (struct txi){.head = k->head,
			     .head_len = WIRE_HDR_SIZE,
			     .payload = k->req,
			     .payload_left = len,
			     .kind = TXI_RPC};

	c = call_conn(p);
	if (!c) {
		atomic_store(&k->refs, 1);
		call_put(k);
		return -ENOTCONN;
	}
	if (!c->tx_head && !c->if_head && !c->calls_head)
		c->last_rx_ns = xfer_now_ns(); /* idle time counts from the first request */
	k->q = k->wait = true;
	call_link(c, k);
	tx_push(c, &k->tx);
	rc = conn_tx(c, UINT64_MAX);
	if (rc < 0)
		conn_fail(c, rc, &l); /* ends k too */
	ts.tv_sec = (time_t)(end / 1000000000ull);
	ts.tv_nsec = (long)(end % 1000000000ull);
	while (!k->done)
		if (pthread_cond_timedwait(&k->cv, &c->h.mu, &ts) == ETIMEDOUT)
			break;
	if (k->done) {
		rc = k->rc;
		*resp = k->resp;
		*resp_len = k->resp_len;
		k->resp = NULL;
	} else {
		call_abandon(c, k);
		rc = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&c->h.mu);
	call_put(k);
	xfer_slices_end(&l);
	return rc;
}

/* ---- start and stop ------------------------------------------------------------------ */

static int tcp_listen(struct tcp_xport *x, const char *addr)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res, *ai;
	const char *colon = strrchr(addr, ':');
	char host[256];
	size_t hl;
	int fd = -1, one = 1, rc, err = -EADDRNOTAVAIL;

	if (!colon || !colon[1])
		return -EINVAL;
	hl = (size_t)(colon - addr);
	if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
		addr++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, hl);
	host[hl] = 0;
	rc = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &res);
	if (rc)
		return rc == EAI_SYSTEM ? -errno : rc == EAI_MEMORY ? -ENOMEM : -EINVAL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
			break;
		err = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err;
	x->lfd = fd;
	sock_name(fd, false, x->listen_str, sizeof(x->listen_str));
	return 0;
}

int tcp_start(struct xfer_engine *e)
{
	struct tcp_xport *x;
	struct epoll_event ev;
	pthread_condattr_t ca;
	uint64_t tmo = e->cfg.timeout_ms;
	int rc;

	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	e->tcp = x;
	x->e = e;
	x->lfd = -1;
	/* a silent connection with requests out: PING after half the request timeout, given up
	 * after twice of it (the requests themselves time out first) */
	x->ping_ns = (tmo / 2 > 100 ? tmo / 2 : 100) * 1000000ull;
	x->dead_ns = 2 * tmo * 1000000ull;
	x->hs_ns = (tmo > 1000 ? tmo : 1000) * 1000000ull;
	x->tick_ms = tmo / 10 < 10 ? 10 : tmo / 10 > 100 ? 100 : tmo / 10;
	pthread_mutex_init(&x->rc_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&x->rc_cv, &ca);
	pthread_condattr_destroy(&ca);
	x->loops = calloc(e->cfg.io_threads, sizeof(*x->loops));
	if (!x->loops)
		return -ENOMEM;
	x->nloops = e->cfg.io_threads;
	for (unsigned i = 0; i < x->nloops; i++) {
		struct tcp_loop *L = &x->loops[i];

		L->x = x;
		L->epfd = L->evfd = -1;
		pthread_mutex_init(&L->mu, NULL);
		pthread_cond_init(&L->cv, NULL);
	}
	for (unsigned i = 0; i < x->nloops; i++) {
		struct tcp_loop *L = &x->loops[i];

		L->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (L->epfd < 0)
			return -errno;
		L->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (L->evfd < 0)
			return -errno;
		ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = L};
		if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->evfd, &ev) < 0)
			return -errno;
		L->scratch = malloc(SCRATCH_SIZE);
		if (!L->scratch)
			return -ENOMEM;
	}
	if (e->cfg.listen) {
		rc = tcp_listen(x, e->cfg.listen);
		if (rc < 0)
			return rc;
		ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = x};
		if (epoll_ctl(x->loops[0].epfd, EPOLL_CTL_ADD, x->lfd, &ev) < 0)
			return -errno;
	}
	for (unsigned i = 0; i < x->nloops; i++) {
		rc = -pthread_create(&x->loops[i].thr, NULL, loop_main, &x->loops[i]);
		if (rc < 0)
			return rc;
		x->loops[i].started = true;
	}
	rc = -pthread_create(&x->rc_thr, NULL, rc_main, x);
	if (rc < 0)
		return rc;
	x->rc_started = true;
	return 0;
}

void tcp_stop(struct xfer_engine *e)
{
	struct tcp_xport *x = e->tcp;

	if (!x)
		return;
	if (x->rc_started) {
		pthread_mutex_lock(&x->rc_mu);
		x->rc_stop = true;
		pthread_cond_broadcast(&x->rc_cv);
		pthread_mutex_unlock(&x->rc_mu);
		pthread_join(x->rc_thr, NULL);
	}
	while (x->rc_list) { /* every peer is closed by now: nothing should be left */
		struct tcp_conn *c = x->rc_list;

		x->rc_list = c->rc_next;
		c->rc_queued = false;
		xfer_peer_put(c->peer);
	}
	for (unsigned i = 0; x->loops && i < x->nloops; i++) {
		struct tcp_loop *L = &x->loops[i];

		if (L->started) {
			pthread_mutex_lock(&L->mu);
			L->stop = true;
			pthread_mutex_unlock(&L->mu);
			loop_wake(L);
			pthread_join(L->thr, NULL);
		}
	}
	if (x->lfd >= 0)
		close(x->lfd);
	for (unsigned i = 0; x->loops && i < x->nloops; i++) {
		struct tcp_loop *L = &x->loops[i];

		if (L->epfd >= 0)
			close(L->epfd);
		if (L->evfd >= 0)
			close(L->evfd);
		free(L->scratch);
		pthread_mutex_destroy(&L->mu);
		pthread_cond_destroy(&L->cv);
	}
	free(x->loops);
	pthread_mutex_destroy(&x->rc_mu);
	pthread_cond_destroy(&x->rc_cv);
	free(x);
	e->tcp = NULL;
}

int tcp_listen_addr(const struct xfer_engine *e, char *buf, size_t len)
{
	const struct tcp_xport *x = e->tcp;

	if (!x || x->lfd < 0)
		return -ENOTCONN;
	if (strlen(x->listen_str) >= len)
		return -ENOSPC;
	strcpy(buf, x->listen_str);
	return 0;
}
