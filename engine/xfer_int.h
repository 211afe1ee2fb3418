/*
 * xfer_int: the transfer engine's internal structures, shared by the core (engine/xfer.c:
 * segments, peers, batches, slices, retries, deadlines, RDMA glue) and the TCP transport
 * (engine/tcp.c: listener, handshakes, event loops, connections). Nothing here is API.
 *
 * Ownership of a slice (the unit that travels on a path), the invariant everything else
 * leans on: at any time a live slice is either
 *   - held by exactly one path (s->path == that path), and then only under that path's mutex
 *     may its queue links, its send progress or its orphan flag change; or
 *   - "in transit" (s->path == NULL) in the hands of the one thread that is submitting,
 *     retrying or ending it.
 * A path never calls back into the core while holding its mutex: slices it gives up are
 * collected on a list (struct slice_list) and ended after the unlock.
 *
 * Aborting a request (cancel, timeout, peer close) sets req->abort first and then visits its
 * slices; a path that takes a slice stores s->path before it reads req->abort (both
 * sequentially consistent), so either the path sees the abort and refuses the slice, or the
 * aborter sees the path and detaches the slice under the path's mutex. A detached slice
 * whose frame is half sent or whose reply is still due stays on its path as an "orphan": its
 * reply is drained into scratch memory, and the rest of a half-sent WRITE payload is sent
 * from a private copy, so the caller's buffer is never touched again.
 *
 * Lock order: first one of batch->abort_mu, peer->rdma_mu, engine->peers_mu, loop->mu (never
 * two of them), then one path mutex (tcp_conn's h.mu, rpath's h.mu), then the leaves:
 * batch->mu, engine->timer_mu, engine->seg_mu, peer->mu, rc_mu. A thread in xfer_call sleeps
 * on its call record's condition variable with the chosen TCP connection's h.mu (tcp.c); an
 * RPC handler is called with no lock held at all.
 */
#ifndef KVC_ENGINE_XFER_INT_H
#define KVC_ENGINE_XFER_INT_H

#include "engine/auth.h"
#include "engine/rdma.h"
#include "engine/wire.h"
#include "engine/xfer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define XFER_DEFAULT_CONNS   4
#define XFER_DEFAULT_QPS     4
#define XFER_DEFAULT_SLICE   (1ull << 20)
#define XFER_DEFAULT_TIMEOUT 5000
#define XFER_DEFAULT_RETRIES 3
#define XFER_DEFAULT_THREADS 2
#define XFER_MAX_CONNS	     64
#define XFER_MAX_THREADS     64

enum path_kind { PATH_TCP = 1, PATH_RDMA };

/* The head of every path (a TCP connection, an RDMA path): what the core needs to pick one,
 * hand it a slice and detach a slice from it. */
struct xpath {
	pthread_mutex_t mu; /* guards the path's queues and the slices it holds */
	enum path_kind kind;
	/* may take slices now: read without mu to pick a path, checked again under it */
	_Atomic int ready;
	struct xfer_peer *peer;
};

/* A registered memory region. Looked up under seg_lock (read), then pinned by refs, so that the
 * transport may receive into it or send from it without holding any lock. */
struct xseg {
	uint32_t id;
	char *addr;
	uint64_t len;
	uint32_t rkey;	   /* RDMA, when exported */
	_Atomic long refs; /* 1 for the table + one per request being served */
};

struct xreq;

/* One frame on a TCP connection's send queue: head bytes (header and fixed body), then an
 * optional payload sent from where it lies (no staging copy). */
enum txi_kind { TXI_SLICE = 1, TXI_REPLY, TXI_PING, TXI_QUERY, TXI_RPC };
struct txi {
	struct txi *next;
	const uint8_t *head;
	const char *payload;   /* the part not sent yet */
	uint64_t payload_left; /* bytes of payload not sent yet */
	uint32_t head_len;
	uint32_t hsent; /* bytes of head sent */
	uint8_t kind;
};

struct xslice {
	struct xreq *req;
	_Atomic(struct xpath *) path; /* holder, or NULL in transit / ended */
	struct xslice *next, *prev;   /* on the holder's queues (holder's mu) */
	struct xslice *lnext;	      /* on a slice_list */
	char *local;		      /* this slice's part of the caller's buffer */
	uint64_t roff;		      /* remote offset */
	uint32_t len;
	uint8_t op;    /* XFER_READ / XFER_WRITE */
	uint8_t tries; /* paths tried so far */
	bool orphan;   /* detached from its request; reply to be drained (holder's mu) */
	uint8_t where; /* TCP: on the send queue or in flight (holder's mu) */
	uint64_t wire_id;
	int end_err; /* set with the slice put on a slice_list */
	/* TCP send state (holder's mu): the frame, and a private copy of the rest of a WRITE
	 * payload once the slice is orphaned half sent. */
	struct txi tx;
	uint8_t head[WIRE_HDR_SIZE + WIRE_RW_SIZE];
	char *copy;
};

/* Slices a path gave up, to be ended by the core once the path's mutex is released. */
struct slice_list {
	struct xslice *head;
};

static inline void slice_list_add(struct slice_list *l, struct xslice *s, int err)
{
	s->end_err = err;
	s->lnext = l->head;
	l->head = s;
}

struct xreq {
	struct xfer_batch *b;
	struct xfer_req *user;
	struct xfer_peer *peer;
	uint32_t seg;
	_Atomic int left;      /* slices not ended yet */
	_Atomic int abort;     /* 0, or the status the request is being aborted with */
	_Atomic int err;       /* first final error of a slice */
	_Atomic int published; /* 0; 1 while the caller's status is being written; 2 once it is */
	uint32_t nslices;
	struct xslice *slices;
	bool rdma_ok;  /* RDMA: the region is registered and the remote segment known */
	uint32_t lkey; /* RDMA: the local region's key */
	uint32_t rkey; /* RDMA: the remote segment's key and address */
	uint64_t raddr;
};

struct xfer_batch {
	_Atomic long refs; /* the caller, the active list, one per live slice */
	size_t n;
	_Atomic size_t done;
	uint64_t deadline_ns;
	struct xfer_engine *e;
	pthread_mutex_t mu; /* with cv: xfer_wait */
	pthread_cond_t cv;
	pthread_mutex_t abort_mu;	  /* serialises cancel and timeout of this batch */
	struct xfer_batch *anext, *aprev; /* the engine's active list (timer_mu) */
	bool listed;			  /* on the active list (timer_mu) */
	struct xreq *reqs;
	struct xslice *slices;
};

struct tcp_conn;
struct rpath;

/* What the RDMA glue knows of a remote segment. */
struct rseg {
	uint32_t seg;
	uint64_t addr, len;
	uint32_t rkey;
};
#define PEER_RSEGS 16

struct xfer_peer {
	struct xfer_engine *e;
	struct xfer_peer *next, *prev; /* the engine's list (peers_mu) */
	char *host;
	char *port;
	uint64_t node_id;
	unsigned remote_transports;
	_Atomic bool closing;
	_Atomic unsigned rr;
	_Atomic unsigned rpc_rr; /* xfer_call's pick among the connections */
	unsigned nconns;
	struct tcp_conn **conns;
	pthread_mutex_t mu; /* with cv: refs, which xfer_close_peer waits to fall to 1 */
	pthread_cond_t cv;
	long refs; /* the caller + live slices + reconnect jobs (mu) */
	/* RDMA (rdma_mu for the setup; rdma is read without it: set once, never replaced) */
	pthread_mutex_t rdma_mu;
	struct rpath *_Atomic rdma;
	bool rdma_failed;
	struct rseg rsegs[PEER_RSEGS];
	unsigned nrsegs;
	uint16_t rdma_port;
	_Atomic uint64_t bytes_read, bytes_written, failures, retries;
};

struct tcp_xport;

struct xfer_engine {
	struct xfer_config cfg;			      /* defaults filled in; secret not kept */
	char tcp_congestion[XFER_TCP_CONGESTION_MAX]; /* cfg.tcp_congestion points here */
	struct auth_key key;
	uint64_t node_id;
	unsigned transports; /* usable here */
	unsigned advertise;  /* what the handshake advertises */
	const char *rdma_why;
	_Atomic uint64_t next_wire_id;

	pthread_rwlock_t seg_lock; /* the segment table */
	struct xseg **segs;
	unsigned nsegs, segs_cap;
	uint32_t next_seg_id;
	pthread_mutex_t seg_mu; /* with seg_cv: unregister waits for refs */
	pthread_cond_t seg_cv;

	pthread_mutex_t peers_mu;
	struct xfer_peer *peers;

	pthread_mutex_t timer_mu; /* the active list of batches, sorted by deadline */
	pthread_cond_t timer_cv;
	struct xfer_batch *active_head, *active_tail;
	bool timer_stop;
	pthread_t timer;
	bool timer_started;

	struct tcp_xport *tcp;

	/* RDMA: a device and a listener, only when rdma_probe found one */
	struct rdma_dev rdev;
	struct rdma_listener *rlisten;
	uint16_t rlisten_port;
	_Atomic int rdma_busy; /* RDMA slices in flight anywhere: loops poll completions */
};

static inline uint64_t xfer_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Bytes moved with peer p by a completed READ (read) or WRITE over transport tidx: the
 * peer's totals and the engine's counters (cfg.counters), when it has some. */
static inline void xfer_count_bytes(struct xfer_peer *p, unsigned tidx, bool read, uint64_t len)
{
	struct xfer_counters *c = p->e->cfg.counters;

	atomic_fetch_add_explicit(read ? &p->bytes_read : &p->bytes_written, len,
				  memory_order_relaxed);
	if (c)
		atomic_fetch_add_explicit(read ? &c->read_bytes[tidx] : &c->written_bytes[tidx],
					  len, memory_order_relaxed);
}

/* core (xfer.c), for the transports */
/* End the slices on l (each s->path already NULL, s->end_err set): 0 done, > 0 a final
 * status from the target, < 0 the path failed (retried elsewhere). No lock may be held. */
void xfer_slices_end(struct slice_list *l);
/* Pin segment id and check [off, off + len) is inside it: 0, ENOENT, ERANGE (positive). */
int xfer_seg_get(struct xfer_engine *e, uint32_t id, uint64_t off, uint64_t len, struct xseg **out);
void xfer_seg_put(struct xfer_engine *e, struct xseg *s);
/* Look up segment id for a SEG_QUERY: fills info, returns 0 or a positive errno. */
int xfer_seg_info(struct xfer_engine *e, uint32_t id, struct wire_seg_info *info);
/* Poll every RDMA path once (called by the event loops while rdma_busy). */
void xfer_rdma_poll(struct xfer_engine *e);

/* TCP transport (tcp.c) */
int tcp_start(struct xfer_engine *e);
void tcp_stop(struct xfer_engine *e);
int tcp_listen_addr(const struct xfer_engine *e, char *buf, size_t len);
/* Open p->nconns authenticated connections to p->host:p->port (p->conns allocated here);
 * sets p->node_id and p->remote_transports. */
int tcp_peer_open(struct xfer_engine *e, struct xfer_peer *p);
/* Close the peer's connections for good: their slices are ended (with -ECANCELED). */
void tcp_peer_shutdown(struct xfer_peer *p);
void tcp_peer_free(struct xfer_peer *p);
/* Hand s to connection c: 0, -ECANCELED (its request is being aborted), -ENOTCONN. */
int tcp_conn_enqueue(struct tcp_conn *c, struct xslice *s);
/* Make sure c no longer touches s's caller buffer (see the top of this file). */
void tcp_conn_detach(struct tcp_conn *c, struct xslice *s);
/* Ask a peer where segment seg lives for RDMA, over one of its connections. */
int tcp_seg_query(struct xfer_peer *p, uint32_t seg, struct wire_seg_info *info, int timeout_ms);
/* xfer_call over one of p's READY connections (arguments checked, timeout_ms > 0, the caller
 * holds a peer reference). */
int tcp_call(struct xfer_peer *p, const void *req, size_t len, void **resp, size_t *resp_len,
	     int timeout_ms);
/* Wake the event loops (RDMA completions to poll). */
void tcp_kick(struct xfer_engine *e);

/* peer references held by slices and by background jobs */
void xfer_peer_get(struct xfer_peer *p);
void xfer_peer_put(struct xfer_peer *p);

#endif
