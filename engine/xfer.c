/*
 * xfer: the transfer engine's core (see xfer.h for the API, xfer_int.h for the structures
 * and the slice ownership rules).
 *
 * A batch is one allocation: the batch, one xreq per request and every slice. A request of
 * len bytes is cut into ceil(len / slice_size) slices; each slice is handed to one of the
 * peer's paths in round-robin order (TCP connections, plus the RDMA path weighted by its
 * queue pairs when there is one). A path that fails gives its slices back and each is tried
 * on another live path, up to 1 + retries tries; a status from the target (ERANGE, ENOENT)
 * is final. A request's status is written once, by whoever ends its last slice (DONE, or
 * FAILED with the first slice error) or by an abort (TIMEDOUT, CANCELLED) once its slices
 * no longer touch the caller's buffer.
 *
 * Threads: the transports' event loops (tcp.c) and reconnect thread, and one timer thread
 * here. Batches are kept on the active list in submission order, which is deadline order
 * because every batch gets the same timeout: the timer sleeps until the head's deadline
 * and times out the requests of that batch still pending.
 *
 * Lifetimes are counted: a batch lives until its caller freed it and its last slice ended;
 * a peer until xfer_close_peer has closed its paths and no slice or reconnect job holds it;
 * a segment until unregistered and no request is being served from it.
 */
#include "engine/xfer_int.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>

/* A notable event of the core (RDMA paths failing and coming back), one line: to the
 * configured log (xfer_config.log), else to syslog. */
static void xfer_log(const struct xfer_engine *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void xfer_log(const struct xfer_engine *e, int level, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (e->cfg.log)
		e->cfg.log(e->cfg.log_arg, level, msg);
	else
		syslog(level, "kvcachefs xfer: %s", msg);
}

/* ---- RDMA glue: one rdma_path per peer, used as extra paths ------------------------- */

/* An RDMA path to a peer. Posted work requests cannot be taken back, so a slice is detached
 * from it by closing the whole path (no DMA after rdma_path_close): rare (cancel, timeout),
 * every slice it held falls back to TCP, and the next request opens the path again. */
struct rpath {
	struct xpath h;
	struct rdma_path *rp; /* NULL once closed (h.mu) */
	unsigned nqps, qp_rr;
	struct xslice *inflight; /* doubly linked (h.mu) */
	bool broken; /* closed by a failed work request, not reopened since (h.mu): logged */
};

static void rdma_slices_end(struct slice_list *l);

static void rpath_kill(struct xfer_engine *e, struct rpath *r, struct slice_list *l)
{
	struct xslice *s;

	atomic_store(&r->h.ready, 0);
	while ((s = r->inflight)) {
		r->inflight = s->next;
		atomic_store(&s->path, NULL);
		atomic_fetch_sub(&e->rdma_busy, 1);
		slice_list_add(l, s, -EIO);
	}
	if (r->rp) {
		rdma_path_close(r->rp);
		r->rp = NULL;
	}
}

static void rpath_unlink(struct rpath *r, struct xslice *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		r->inflight = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
}

static int rpath_enqueue(struct xfer_engine *e, struct rpath *r, struct xslice *s)
{
	struct xreq *q = s->req;
	int rc;

	pthread_mutex_lock(&r->h.mu);
	atomic_store(&s->path, &r->h);
	if (atomic_load(&q->abort)) {
		rc = -ECANCELED;
		goto out_refuse;
	}
	if (!atomic_load(&r->h.ready) || !r->rp || !q->rdma_ok) {
		rc = -ENOTCONN;
		goto out_refuse;
	}
	rc = rdma_path_post(r->rp, r->qp_rr++ % r->nqps, s->op == XFER_WRITE, s->local, q->lkey,
			    q->raddr + s->roff, q->rkey, s->len, s);
	if (rc < 0) {
		rc = -ENOTCONN; /* a full queue or a broken path: TCP takes the slice */
		goto out_refuse;
	}
	s->prev = NULL;
	s->next = r->inflight;
	if (s->next)
		s->next->prev = s;
	r->inflight = s;
	atomic_fetch_add(&e->rdma_busy, 1);
	pthread_mutex_unlock(&r->h.mu);
	tcp_kick(e);
	return 0;
out_refuse:
	atomic_store(&s->path, NULL);
	pthread_mutex_unlock(&r->h.mu);
	return rc;
}

static void rpath_detach(struct xfer_engine *e, struct rpath *r, struct xslice *s,
			 struct slice_list *l)
{
	pthread_mutex_lock(&r->h.mu);
	if (atomic_load(&s->path) == &r->h)
		rpath_kill(e, r, l);
	pthread_mutex_unlock(&r->h.mu);
}

void xfer_rdma_poll(struct xfer_engine *e)
{
	struct rdma_completion c[32];
	struct slice_list l = {NULL};
	struct xfer_peer *p;
	struct rpath *r;
	int i, n;

	pthread_mutex_lock(&e->peers_mu);
	for (p = e->peers; p; p = p->next) {
		bool broke = false;

		r = atomic_load(&p->rdma);
		if (!r)
			continue;
		pthread_mutex_lock(&r->h.mu);
		while (r->rp && (n = rdma_path_poll(r->rp, c, 32)) > 0) {
			for (i = 0; i < n; i++) {
				struct xslice *s = c[i].ctx;

				rpath_unlink(r, s);
				atomic_store(&s->path, NULL);
				atomic_fetch_sub(&e->rdma_busy, 1);
				slice_list_add(&l, s, c[i].error ? -EIO : 0);
			}
			for (i = 0; i < n; i++)
				if (c[i].error)
					break;
			if (i < n) { /* the queue pair is in error: everything on it fails */
				rpath_kill(e, r, &l);
				broke = !r->broken;
				r->broken = true;
				break;
			}
		}
		pthread_mutex_unlock(&r->h.mu);
		if (broke)
			xfer_log(e, LOG_WARNING,
				 "node %016llx (%s:%s): RDMA path failed, its transfers fall back "
				 "to TCP until it is reopened",
				 (unsigned long long)p->node_id, p->host, p->port);
	}
	pthread_mutex_unlock(&e->peers_mu);
	rdma_slices_end(&l);
}

static struct rseg *rseg_find(struct xfer_peer *p, uint32_t seg)
{
	for (unsigned i = 0; i < p->nrsegs; i++)
		if (p->rsegs[i].seg == seg)
			return &p->rsegs[i];
	return NULL;
}

/* Make request q eligible for the peer's RDMA path: learn the remote segment (SEG_QUERY)
 * and open the path the first time, register the local buffer. Anything that fails leaves
 * the request on TCP; a peer that cannot do RDMA at all is not asked again. Blocks only the
 * first time a (peer, segment) is used, and only when both sides have RDMA. */
static void rdma_prepare(struct xfer_engine *e, struct xreq *q, void *local, uint64_t len,
			 uint64_t off)
{
	struct xfer_peer *p = q->peer;
	struct wire_seg_info info;
	struct rdma_path *rp;
	struct rpath *r;
	struct rseg *rs;
	int tmo = e->cfg.timeout_ms < 2000 ? (int)e->cfg.timeout_ms : 2000;

	if (!(e->transports & XFER_RDMA) || !(p->remote_transports & XFER_RDMA))
		return;
	if (pthread_mutex_trylock(&p->rdma_mu))
		return; /* another thread is setting up: TCP this time */
	if (p->rdma_failed)
		goto out;
	rs = rseg_find(p, q->seg);
	if (!rs) {
		int rc = p->nrsegs == PEER_RSEGS ? -ENOSPC : tcp_seg_query(p, q->seg, &info, tmo);

		if (rc == -ENODEV || rc == -ETIMEDOUT) {
			p->rdma_failed = true; /* no RDMA there after all: do not ask again */
			xfer_log(
			    e, LOG_WARNING,
			    "node %016llx (%s:%s): no RDMA there after all (%s), transfers use "
			    "TCP only",
			    (unsigned long long)p->node_id, p->host, p->port, strerror(-rc));
		}
		if (rc < 0)
			goto out;
		rs = &p->rsegs[p->nrsegs++];
		*rs = (struct rseg){
		    .seg = q->seg, .addr = info.addr, .len = info.len, .rkey = info.rkey};
		p->rdma_port = info.rdma_port;
	}
	r = atomic_load(&p->rdma);
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			goto out;
		pthread_mutex_init(&r->h.mu, NULL);
		r->h.kind = PATH_RDMA;
		r->h.peer = p;
		r->nqps = e->cfg.qps_per_peer;
		atomic_store(&p->rdma, r);
	}
	/* (re)open the path: only here, under rdma_mu, does r->rp go from NULL to a path */
	pthread_mutex_lock(&r->h.mu);
	rp = r->rp;
	pthread_mutex_unlock(&r->h.mu);
	if (!rp) {
		bool was_broken;
		int rc = rdma_path_connect(&e->rdev, p->host, p->rdma_port, r->nqps, tmo, &rp);

		if (rc < 0) {
			p->rdma_failed = true;
			xfer_log(e, LOG_WARNING,
				 "node %016llx (%s:%s): cannot open an RDMA path to port %u (%s), "
				 "transfers use TCP only",
				 (unsigned long long)p->node_id, p->host, p->port, p->rdma_port,
				 strerror(-rc));
			goto out;
		}
		pthread_mutex_lock(&r->h.mu);
		r->rp = rp;
		atomic_store(&r->h.ready, 1);
		was_broken = r->broken;
		r->broken = false;
		pthread_mutex_unlock(&r->h.mu);
		if (was_broken)
			xfer_log(e, LOG_INFO, "node %016llx (%s:%s): RDMA path reopened",
				 (unsigned long long)p->node_id, p->host, p->port);
	}
	if (off > rs->len || len > rs->len - off)
		goto out; /* TCP reports the ERANGE */
	pthread_mutex_lock(&r->h.mu);
	if (r->rp && rdma_path_reg(r->rp, local, len, &q->lkey) == 0) {
		q->rdma_ok = true;
		q->raddr = rs->addr;
		q->rkey = rs->rkey;
	}
	pthread_mutex_unlock(&r->h.mu);
out:
	pthread_mutex_unlock(&p->rdma_mu);
}

/* ---- peers' references -------------------------------------------------------------- */

void xfer_peer_get(struct xfer_peer *p)
{
	pthread_mutex_lock(&p->mu);
	p->refs++;
	pthread_mutex_unlock(&p->mu);
}

/* Under the mutex, so that xfer_close_peer cannot free the peer between our decrement and
 * our wake-up. */
void xfer_peer_put(struct xfer_peer *p)
{
	pthread_mutex_lock(&p->mu);
	if (--p->refs == 1)
		pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* ---- requests and batches ---------------------------------------------------------- */

static void batch_free_now(struct xfer_batch *b)
{
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->abort_mu);
	free(b);
}

static void batch_put(struct xfer_batch *b)
{
	if (atomic_fetch_sub(&b->refs, 1) == 1)
		batch_free_now(b);
}

static void active_unlink(struct xfer_engine *e, struct xfer_batch *b)
{
	if (b->aprev)
		b->aprev->anext = b->anext;
	else
		e->active_head = b->anext;
	if (b->anext)
		b->anext->aprev = b->aprev;
	else
		e->active_tail = b->aprev;
	b->anext = b->aprev = NULL;
	b->listed = false;
}

/* Whoever finds q's status being written by another thread (the last slice ending while an
 * abort runs) waits the few stores it takes, so that xfer_cancel never returns before the
 * status is in the caller's xfer_req, nor the engine writes it there after. */
static void req_published_wait(struct xreq *q)
{
	while (atomic_load(&q->published) != 2)
		sched_yield();
}

/* Write the caller's status once. The caller of this holds a reference on the batch. */
static void req_publish(struct xreq *q)
{
	struct xfer_batch *b = q->b;
	struct xfer_engine *e = b->e;
	int zero = 0, st, err, ab = atomic_load(&q->abort);
	bool unlisted = false;

	if (ab) {
		st = ab;
		err = ab == XFER_TIMEDOUT ? ETIMEDOUT : ECANCELED;
	} else if ((err = atomic_load(&q->err))) {
		st = XFER_FAILED;
	} else {
		st = XFER_DONE;
	}
	if (!atomic_compare_exchange_strong(&q->published, &zero, 1)) {
		req_published_wait(q);
		return;
	}
	q->user->error = err;
	atomic_store_explicit(&q->user->status, st, memory_order_release);
	atomic_store(&q->published, 2);
	if (atomic_fetch_add(&b->done, 1) + 1 != b->n)
		return;
	pthread_mutex_lock(&b->mu);
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	pthread_mutex_lock(&e->timer_mu);
	if (b->listed) {
		active_unlink(e, b);
		unlisted = true;
	}
	pthread_mutex_unlock(&e->timer_mu);
	if (unlisted)
		batch_put(b);
}

/* The slice is finished with: account it to its request and drop its references. */
static void slice_release(struct xslice *s)
{
	struct xreq *q = s->req;
	struct xfer_peer *p = q->peer;
	struct xfer_batch *b = q->b;

	if (atomic_fetch_sub(&q->left, 1) == 1)
		req_publish(q);
	xfer_peer_put(p);
	batch_put(b);
}

static struct xpath *peer_path(struct xfer_peer *p, unsigned i, struct rpath *r)
{
	return i < p->nconns ? (struct xpath *)p->conns[i] : &r->h;
}

/* Give an in-transit slice to a live path of its peer, or end it. */
static void slice_dispatch(struct xslice *s)
{
	struct xreq *q = s->req;
	struct xfer_peer *p = q->peer;
	struct xfer_engine *e = p->e;
	struct rpath *r = atomic_load(&p->rdma);
	unsigned total, k, i;
	struct xpath *h;
	int rc;

	total = p->nconns + (r && q->rdma_ok && atomic_load(&r->h.ready) ? r->nqps : 0);
	for (k = 0; k < total; k++) {
		i = atomic_fetch_add(&p->rr, 1) % total;
		h = peer_path(p, i, r);
		if (!atomic_load(&h->ready))
			continue;
		s->wire_id = atomic_fetch_add(&e->next_wire_id, 1);
		s->tries++;
		rc = h->kind == PATH_TCP ? tcp_conn_enqueue((struct tcp_conn *)h, s)
					 : rpath_enqueue(e, (struct rpath *)h, s);
		if (rc == 0)
			return;
		s->tries--;
		if (rc == -ECANCELED)
			break;
	}
	/* no live path: every path failed, or the request is being aborted */
	if (atomic_load(&p->closing)) {
		int zero = 0;

		atomic_compare_exchange_strong(&q->abort, &zero, XFER_CANCELLED);
	} else if (!atomic_load(&q->abort)) {
		int zero = 0;

		atomic_fetch_add(&p->failures, 1);
		atomic_compare_exchange_strong(&q->err, &zero, ECONNRESET);
	}
	slice_release(s);
}

/* tidx: the transport of the path that ended s (XFER_IDX_*), for the counters. */
static void slice_end(struct xslice *s, int err, unsigned tidx)
{
	struct xreq *q = s->req;
	struct xfer_peer *p = q->peer;
	struct xfer_counters *c = p->e->cfg.counters;
	int zero = 0;

	free(s->copy);
	s->copy = NULL;
	if (atomic_load(&p->closing)) {
		/* the peer is going away: its pending requests end CANCELLED */
		atomic_compare_exchange_strong(&q->abort, &zero, XFER_CANCELLED);
		zero = 0;
	}
	if (atomic_load(&q->abort)) {
		slice_release(s);
		return;
	}
	if (err < 0 && c)
		atomic_fetch_add_explicit(&c->path_failures[tidx], 1, memory_order_relaxed);
	if (err < 0) {
		if (s->tries < 1 + p->e->cfg.retries) {
			atomic_fetch_add(&p->retries, 1);
			slice_dispatch(s);
			return;
		}
		err = -err;
	}
	if (err == 0) {
		xfer_count_bytes(p, tidx, s->op == XFER_READ, s->len);
	} else {
		atomic_fetch_add(&p->failures, 1);
		atomic_compare_exchange_strong(&q->err, &zero, err);
	}
	slice_release(s);
}

static void slices_end(struct slice_list *l, unsigned tidx)
{
	struct xslice *s;

	while ((s = l->head)) {
		l->head = s->lnext;
		s->lnext = NULL;
		slice_end(s, s->end_err, tidx);
	}
}

/* The transports' lists: tcp.c only ever ends slices of its own connections. */
void xfer_slices_end(struct slice_list *l)
{
	slices_end(l, XFER_IDX_TCP);
}

static void rdma_slices_end(struct slice_list *l)
{
	slices_end(l, XFER_IDX_RDMA);
}

/* Make sure no path touches s's caller buffer any more. */
static void slice_detach(struct xfer_engine *e, struct xslice *s)
{
	struct slice_list l = {NULL};
	struct xpath *h;

	while ((h = atomic_load(&s->path))) {
		if (h->kind == PATH_TCP) {
			tcp_conn_detach((struct tcp_conn *)h, s);
		} else {
			rpath_detach(e, (struct rpath *)h, s, &l);
			rdma_slices_end(&l);
		}
		if (atomic_load(&s->path) == h) {
			/* still held: as an orphan, whose reply will be drained */
			break;
		}
	}
}

/* Abort request q with status st (TIMEDOUT, CANCELLED); the caller holds b->abort_mu. */
static void req_abort(struct xfer_engine *e, struct xreq *q, int st)
{
	int zero = 0;

	if (atomic_load(&q->published)) {
		req_published_wait(q);
		return;
	}
	atomic_compare_exchange_strong(&q->abort, &zero, st);
	for (uint32_t i = 0; i < q->nslices; i++)
		slice_detach(e, &q->slices[i]);
	req_publish(q);
}

static void batch_abort(struct xfer_batch *b, int st)
{
	pthread_mutex_lock(&b->abort_mu);
	for (size_t i = 0; i < b->n; i++)
		req_abort(b->e, &b->reqs[i], st);
	pthread_mutex_unlock(&b->abort_mu);
}

static void *timer_main(void *arg)
{
	struct xfer_engine *e = arg;
	struct xfer_batch *b;
	struct timespec ts;
	uint64_t now;

	pthread_mutex_lock(&e->timer_mu);
	while (!e->timer_stop) {
		b = e->active_head;
		if (!b) {
			pthread_cond_wait(&e->timer_cv, &e->timer_mu);
			continue;
		}
		now = xfer_now_ns();
		if (now < b->deadline_ns) {
			ts.tv_sec = (time_t)(b->deadline_ns / 1000000000ull);
			ts.tv_nsec = (long)(b->deadline_ns % 1000000000ull);
			pthread_cond_timedwait(&e->timer_cv, &e->timer_mu, &ts);
			continue;
		}
		active_unlink(e, b); /* its list reference is ours now */
		pthread_mutex_unlock(&e->timer_mu);
		batch_abort(b, XFER_TIMEDOUT);
		batch_put(b);
		pthread_mutex_lock(&e->timer_mu);
	}
	pthread_mutex_unlock(&e->timer_mu);
	return NULL;
}

/* Depends on the request's own fields only: xfer_submit asks twice (to size the batch, then
 * to fill it) and both answers must agree. A peer being closed is caught at dispatch. */
static bool req_valid(struct xfer_engine *e, const struct xfer_req *r)
{
	if (r->op != XFER_READ && r->op != XFER_WRITE)
		return false;
	if (!r->local || r->len == 0 || !r->peer || r->peer->e != e)
		return false;
	if (r->remote_off + r->len < r->remote_off)
		return false;
	/* at most 2^31 slices a request: a bound far above any real buffer */
	return (r->len - 1) / e->cfg.slice_size < INT_MAX;
}

int xfer_submit(struct xfer_engine *e, struct xfer_req *reqs, size_t n, struct xfer_batch **out)
{
	struct xfer_batch *b;
	uint64_t nslices = 0, k = 0, ss;
	size_t i, sz;

	if (!e || !reqs || !out || n == 0)
		return -EINVAL;
	ss = e->cfg.slice_size;
	for (i = 0; i < n; i++)
		if (req_valid(e, &reqs[i]))
			nslices += (reqs[i].len - 1) / ss + 1;
	if (n > SIZE_MAX / 4 / sizeof(struct xreq) ||
	    nslices > SIZE_MAX / 4 / sizeof(struct xslice))
		return -ENOMEM;
	sz = sizeof(*b) + n * sizeof(struct xreq) + nslices * sizeof(struct xslice);
	b = calloc(1, sz);
	if (!b)
		return -ENOMEM;
	b->reqs = (struct xreq *)(b + 1);
	b->slices = (struct xslice *)(b->reqs + n);
	b->n = n;
	b->e = e;
	atomic_init(&b->refs, 1 + (long)nslices);
	pthread_mutex_init(&b->mu, NULL);
	pthread_mutex_init(&b->abort_mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&b->cv, &ca);
		pthread_condattr_destroy(&ca);
	}

	for (i = 0; i < n; i++) {
		struct xfer_req *r = &reqs[i];
		struct xreq *q = &b->reqs[i];

		q->b = b;
		q->user = r;
		r->error = 0;
		atomic_store_explicit(&r->status, XFER_PENDING, memory_order_relaxed);
		if (!req_valid(e, r)) {
			atomic_store(&q->err, EINVAL);
			continue;
		}
		q->peer = r->peer;
		q->seg = r->remote_seg;
		q->nslices = (uint32_t)((r->len - 1) / ss + 1);
		q->slices = &b->slices[k];
		atomic_init(&q->left, (int)q->nslices);
		for (uint32_t j = 0; j < q->nslices; j++) {
			struct xslice *s = &q->slices[j];
			uint64_t o = (uint64_t)j * ss;

			s->req = q;
			s->op = (uint8_t)r->op;
			s->local = (char *)r->local + o;
			s->roff = r->remote_off + o;
			s->len = (uint32_t)(r->len - o < ss ? r->len - o : ss);
		}
		k += q->nslices;
		pthread_mutex_lock(&q->peer->mu);
		q->peer->refs += q->nslices;
		pthread_mutex_unlock(&q->peer->mu);
		rdma_prepare(e, q, r->local, r->len, r->remote_off);
	}

	/* Invalid requests complete now; the batch is timed from here. */
	for (i = 0; i < n; i++)
		if (!b->reqs[i].peer)
			req_publish(&b->reqs[i]);
	b->deadline_ns = xfer_now_ns() + (uint64_t)e->cfg.timeout_ms * 1000000ull;
	if (nslices) {
		atomic_fetch_add(&b->refs, 1);
		pthread_mutex_lock(&e->timer_mu);
		b->listed = true;
		b->aprev = e->active_tail;
		if (e->active_tail)
			e->active_tail->anext = b;
		else
			e->active_head = b;
		e->active_tail = b;
		if (e->active_head == b)
			pthread_cond_signal(&e->timer_cv);
		pthread_mutex_unlock(&e->timer_mu);
	}
	*out = b;
	for (k = 0; k < nslices; k++)
		slice_dispatch(&b->slices[k]);
	return 0;
}

size_t xfer_poll(struct xfer_batch *b)
{
	return atomic_load(&b->done);
}

size_t xfer_wait(struct xfer_batch *b, int timeout_ms)
{
	struct timespec ts;
	uint64_t end;

	if (atomic_load(&b->done) == b->n)
		return b->n;
	end = xfer_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
	ts.tv_sec = (time_t)(end / 1000000000ull);
	ts.tv_nsec = (long)(end % 1000000000ull);
	pthread_mutex_lock(&b->mu);
	while (atomic_load(&b->done) < b->n) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&b->cv, &b->mu);
		} else if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT) {
			break;
		}
	}
	pthread_mutex_unlock(&b->mu);
	return atomic_load(&b->done);
}

void xfer_cancel(struct xfer_batch *b)
{
	if (b && atomic_load(&b->done) < b->n)
		batch_abort(b, XFER_CANCELLED);
}

void xfer_batch_free(struct xfer_batch *b)
{
	if (!b)
		return;
	xfer_cancel(b); /* a batch freed while pending is cancelled first */
	batch_put(b);
}

/* ---- segments ----------------------------------------------------------------------- */

static struct xseg *seg_find(struct xfer_engine *e, uint32_t id, unsigned *idx)
{
	for (unsigned i = 0; i < e->nsegs; i++) {
		if (e->segs[i]->id == id) {
			if (idx)
				*idx = i;
			return e->segs[i];
		}
	}
	return NULL;
}

int xfer_seg_get(struct xfer_engine *e, uint32_t id, uint64_t off, uint64_t len, struct xseg **out)
{
	struct xseg *s;
	int rc = 0;

	*out = NULL;
	pthread_rwlock_rdlock(&e->seg_lock);
	s = seg_find(e, id, NULL);
	if (!s)
		rc = ENOENT;
	else if (off > s->len || len > s->len - off)
		rc = ERANGE;
	else
		atomic_fetch_add(&s->refs, 1);
	pthread_rwlock_unlock(&e->seg_lock);
	if (rc == 0)
		*out = s;
	/* only tcp.c serves peers' READ and WRITE frames through here */
	if (rc == 0 && e->cfg.counters)
		atomic_fetch_add_explicit(&e->cfg.counters->served_bytes, len,
					  memory_order_relaxed);
	return rc;
}

/* The last reference wakes xfer_unregister; s is not touched after the decrement. */
void xfer_seg_put(struct xfer_engine *e, struct xseg *s)
{
	if (atomic_fetch_sub(&s->refs, 1) == 1) {
		pthread_mutex_lock(&e->seg_mu);
		pthread_cond_broadcast(&e->seg_cv);
		pthread_mutex_unlock(&e->seg_mu);
	}
}

int xfer_seg_info(struct xfer_engine *e, uint32_t id, struct wire_seg_info *info)
{
	struct xseg *s;
	int rc = 0;

	memset(info, 0, sizeof(*info));
	if (!e->rlisten)
		return ENODEV;
	pthread_rwlock_rdlock(&e->seg_lock);
	s = seg_find(e, id, NULL);
	if (s) {
		info->addr = (uint64_t)(uintptr_t)s->addr;
		info->len = s->len;
		info->rkey = s->rkey;
		info->rdma_port = e->rlisten_port;
	} else {
		rc = ENOENT;
	}
	pthread_rwlock_unlock(&e->seg_lock);
	return rc;
}

int xfer_register(struct xfer_engine *e, void *addr, uint64_t len, uint32_t *seg_id)
{
	struct xseg *s, **n;
	int rc;

	if (!e || !addr || !seg_id || len == 0)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->addr = addr;
	s->len = len;
	atomic_init(&s->refs, 1);
	if (e->rlisten) {
		rc = rdma_listener_export(e->rlisten, addr, len, &s->rkey);
		if (rc < 0) {
			free(s);
			return rc;
		}
	}
	pthread_rwlock_wrlock(&e->seg_lock);
	if (e->nsegs == e->segs_cap) {
		unsigned cap = e->segs_cap ? e->segs_cap * 2 : 8;

		n = realloc(e->segs, cap * sizeof(*n));
		if (!n) {
			pthread_rwlock_unlock(&e->seg_lock);
			if (e->rlisten)
				rdma_listener_unexport(e->rlisten, addr);
			free(s);
			return -ENOMEM;
		}
		e->segs = n;
		e->segs_cap = cap;
	}
	if (++e->next_seg_id == 0)
		e->next_seg_id = 1; /* ids are never 0; 2^32 registrations later they wrap */
	s->id = e->next_seg_id;
	e->segs[e->nsegs++] = s;
	*seg_id = s->id;
	pthread_rwlock_unlock(&e->seg_lock);
	return 0;
}

int xfer_unregister(struct xfer_engine *e, uint32_t seg_id)
{
	struct xseg *s;
	unsigned i;

	if (!e)
		return -EINVAL;
	pthread_rwlock_wrlock(&e->seg_lock);
	s = seg_find(e, seg_id, &i);
	if (s)
		e->segs[i] = e->segs[--e->nsegs];
	pthread_rwlock_unlock(&e->seg_lock);
	if (!s)
		return -ENOENT;
	if (e->rlisten)
		rdma_listener_unexport(e->rlisten, s->addr);
	xfer_seg_put(e, s);
	pthread_mutex_lock(&e->seg_mu);
	while (atomic_load(&s->refs) > 0)
		pthread_cond_wait(&e->seg_cv, &e->seg_mu);
	pthread_mutex_unlock(&e->seg_mu);
	free(s);
	return 0;
}

/* ---- peers -------------------------------------------------------------------------- */

/* Split "HOST:PORT" ("[v6]:PORT" too) into fresh strings. */
static int split_addr(const char *addr, char **host, char **port)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr;
	size_t hl;

	if (!colon || !colon[1])
		return -EINVAL;
	hl = (size_t)(colon - addr);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	*host = strndup(h, hl);
	*port = strdup(colon + 1);
	if (!*host || !*port) {
		free(*host);
		free(*port);
		return -ENOMEM;
	}
	return 0;
}

static void peer_free(struct xfer_peer *p)
{
	struct rpath *r = atomic_load(&p->rdma);

	tcp_peer_free(p);
	if (r) {
		pthread_mutex_destroy(&r->h.mu);
		free(r);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->rdma_mu);
	pthread_cond_destroy(&p->cv);
	free(p->host);
	free(p->port);
	free(p);
}

/* Close the peer's paths and wait until nothing else holds it (slices in transit, reconnect
 * jobs): pending requests end CANCELLED. */
static void peer_shutdown(struct xfer_peer *p)
{
	struct slice_list l = {NULL};
	struct rpath *r;

	atomic_store(&p->closing, true);
	tcp_peer_shutdown(p);
	r = atomic_load(&p->rdma);
	if (r) {
		pthread_mutex_lock(&r->h.mu);
		rpath_kill(p->e, r, &l);
		pthread_mutex_unlock(&r->h.mu);
		rdma_slices_end(&l);
	}
	pthread_mutex_lock(&p->mu);
	while (p->refs > 1)
		pthread_cond_wait(&p->cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

int xfer_open_peer(struct xfer_engine *e, const char *addr, struct xfer_peer **out)
{
	struct xfer_peer *p;
	int rc;

	if (!e || !addr || !out)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->e = e;
	p->refs = 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->rdma_mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->nconns = e->cfg.conns_per_peer;
	rc = split_addr(addr, &p->host, &p->port);
	if (rc < 0)
		goto out_free;
	rc = tcp_peer_open(e, p);
	if (rc < 0) {
		peer_shutdown(p);
		goto out_free;
	}
	pthread_mutex_lock(&e->peers_mu);
	p->next = e->peers;
	if (p->next)
		p->next->prev = p;
	e->peers = p;
	pthread_mutex_unlock(&e->peers_mu);
	*out = p;
	return 0;
out_free:
	peer_free(p);
	return rc;
}

void xfer_close_peer(struct xfer_peer *p)
{
	struct xfer_engine *e;

	if (!p)
		return;
	e = p->e;
	pthread_mutex_lock(&e->peers_mu);
	if (p->prev)
		p->prev->next = p->next;
	else
		e->peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	pthread_mutex_unlock(&e->peers_mu);
	peer_shutdown(p);
	peer_free(p);
}

void xfer_peer_info(struct xfer_peer *p, struct xfer_peer_info *info)
{
	struct rpath *r;

	memset(info, 0, sizeof(*info));
	if (!p)
		return;
	info->node_id = p->node_id;
	for (unsigned i = 0; i < p->nconns; i++)
		if (atomic_load(&((struct xpath *)p->conns[i])->ready))
			info->paths++;
	if (info->paths)
		info->transports |= XFER_TCP;
	r = atomic_load(&p->rdma);
	if (r && atomic_load(&r->h.ready)) {
		info->paths++;
		info->transports |= XFER_RDMA;
	}
	info->bytes_read = atomic_load(&p->bytes_read);
	info->bytes_written = atomic_load(&p->bytes_written);
	info->failures = atomic_load(&p->failures);
	info->retries = atomic_load(&p->retries);
}

size_t xfer_peers_info(struct xfer_engine *e, struct xfer_peer_info *out, size_t max)
{
	struct xfer_peer *p;
	size_t n = 0;

	pthread_mutex_lock(&e->peers_mu);
	for (p = e->peers; p; p = p->next, n++)
		if (n < max)
			xfer_peer_info(p, &out[n]);
	pthread_mutex_unlock(&e->peers_mu);
	return n;
}

/* ---- metadata RPCs ------------------------------------------------------------------ */

_Static_assert(XFER_RPC_MAX == WIRE_MAX_RPC, "an RPC body is what one wire frame carries");

/* The peer reference keeps p's connections (and the call's wait on one of them) alive should
 * xfer_close_peer start meanwhile: its teardown ends the call, then waits for the reference. */
int xfer_call(struct xfer_peer *p, const void *req, size_t len, void **resp, size_t *resp_len,
	      int timeout_ms)
{
	int rc;

	if (!resp || !resp_len)
		return -EINVAL;
	*resp = NULL;
	*resp_len = 0;
	if (!p || (len && !req))
		return -EINVAL;
	if (len > XFER_RPC_MAX)
		return -EMSGSIZE;
	if (timeout_ms <= 0)
		timeout_ms = (int)p->e->cfg.timeout_ms;
	xfer_peer_get(p);
	if (atomic_load(&p->closing))
		rc = -ENOTCONN;
	else
		rc = tcp_call(p, req, len, resp, resp_len, timeout_ms);
	xfer_peer_put(p);
	return rc;
}

/* ---- the engine --------------------------------------------------------------------- */

static void config_defaults(struct xfer_config *c)
{
	if (!c->conns_per_peer)
		c->conns_per_peer = XFER_DEFAULT_CONNS;
	if (c->conns_per_peer > XFER_MAX_CONNS)
		c->conns_per_peer = XFER_MAX_CONNS;
	if (!c->qps_per_peer)
		c->qps_per_peer = XFER_DEFAULT_QPS;
	if (!c->slice_size)
		c->slice_size = XFER_DEFAULT_SLICE;
	if (c->slice_size < 4096)
		c->slice_size = 4096;
	if (c->slice_size > WIRE_MAX_DATA)
		c->slice_size = WIRE_MAX_DATA;
	if (!c->timeout_ms)
		c->timeout_ms = XFER_DEFAULT_TIMEOUT;
	if (c->timeout_ms > INT_MAX / 4)
		c->timeout_ms = INT_MAX / 4;
	if (!c->retries)
		c->retries = XFER_DEFAULT_RETRIES;
	if (c->retries > 100)
		c->retries = 100;
	if (!c->io_threads)
		c->io_threads = XFER_DEFAULT_THREADS;
	if (c->io_threads > XFER_MAX_THREADS)
		c->io_threads = XFER_MAX_THREADS;
	if (!c->transports)
		c->transports = XFER_TCP | XFER_RDMA;
}

/* RDMA when allowed and a device exists; the why otherwise. Never a fake device. */
static void rdma_setup(struct xfer_engine *e)
{
	struct rdma_dev devs[8];
	char host[256] = "";
	const char *colon;
	int n, i;

	if (!(e->cfg.transports & XFER_RDMA)) {
		e->rdma_why = "RDMA disabled by configuration";
		return;
	}
	n = rdma_probe(devs, 8, &e->rdma_why);
	if (n <= 0) {
		if (!e->rdma_why)
			e->rdma_why = "no RDMA device";
		return;
	}
	/* Nearest to the memory the engine will move: the daemon maps its pool from this thread,
	 * so the node this thread runs on is the best guess before any segment exists. */
	{
		unsigned cpu, node;

		i = rdma_pick(devs, n,
			      syscall(SYS_getcpu, &cpu, &node, NULL) == 0 ? (int)node : -1);
	}
	e->rdev = devs[i < 0 ? 0 : i];
	e->transports |= XFER_RDMA;
	e->rdma_why = NULL;
	if (!e->cfg.listen) {
		e->advertise |= XFER_RDMA; /* initiator only: it can still open RDMA paths */
		return;
	}
	/* the RDMA listener on the TCP listener's host; peers learn its port from SEG_INFO */
	colon = strrchr(e->cfg.listen, ':');
	if (colon && (size_t)(colon - e->cfg.listen) < sizeof(host)) {
		const char *h = e->cfg.listen;
		size_t hl = (size_t)(colon - h);

		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		memcpy(host, h, hl);
		host[hl] = 0;
	}
	if (rdma_listener_open(&e->rdev, host[0] ? host : NULL, &e->rlisten_port, &e->rlisten) == 0)
		e->advertise |= XFER_RDMA;
}

int xfer_create(struct xfer_engine **out, const struct xfer_config *cfg)
{
	struct xfer_engine *e;
	pthread_condattr_t ca;
	int rc;

	if (!out || !cfg || !cfg->secret || cfg->secret_len < XFER_SECRET_MIN)
		return -EINVAL;
	if (cfg->tcp_congestion && (rc = xfer_tcp_congestion_check(cfg->tcp_congestion)) < 0)
		return rc;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = *cfg;
	if (cfg->tcp_congestion) {
		snprintf(e->tcp_congestion, sizeof(e->tcp_congestion), "%s", cfg->tcp_congestion);
		e->cfg.tcp_congestion = e->tcp_congestion;
	}
	e->cfg.secret = NULL;
	e->cfg.secret_len = 0;
	config_defaults(&e->cfg);
	rc = auth_key_init(&e->key, cfg->secret, cfg->secret_len);
	if (rc < 0) {
		free(e);
		return rc;
	}
	e->node_id = cfg->node_id;
	while (e->node_id == 0)
		if (getrandom(&e->node_id, sizeof(e->node_id), 0) != sizeof(e->node_id))
			e->node_id = (uint64_t)xfer_now_ns() ^ (uint64_t)(uintptr_t)e;
	atomic_init(&e->next_wire_id, 1);
	e->transports = XFER_TCP;
	e->advertise = XFER_TCP;
	pthread_rwlock_init(&e->seg_lock, NULL);
	pthread_mutex_init(&e->seg_mu, NULL);
	pthread_cond_init(&e->seg_cv, NULL);
	pthread_mutex_init(&e->peers_mu, NULL);
	pthread_mutex_init(&e->timer_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->timer_cv, &ca);
	pthread_condattr_destroy(&ca);

	rdma_setup(e);
	rc = -pthread_create(&e->timer, NULL, timer_main, e);
	if (rc < 0)
		goto out_destroy;
	e->timer_started = true;
	rc = tcp_start(e);
	if (rc < 0)
		goto out_destroy;
	*out = e;
	return 0;
out_destroy:
	xfer_destroy(e);
	return rc;
}

void xfer_destroy(struct xfer_engine *e)
{
	struct xfer_batch *b;

	if (!e)
		return;
	pthread_mutex_lock(&e->peers_mu);
	while (e->peers) {
		struct xfer_peer *p = e->peers;

		pthread_mutex_unlock(&e->peers_mu);
		xfer_close_peer(p);
		pthread_mutex_lock(&e->peers_mu);
	}
	pthread_mutex_unlock(&e->peers_mu);
	tcp_stop(e);
	if (e->timer_started) {
		pthread_mutex_lock(&e->timer_mu);
		e->timer_stop = true;
		pthread_cond_signal(&e->timer_cv);
		pthread_mutex_unlock(&e->timer_mu);
		pthread_join(e->timer, NULL);
	}
	/* Batches still listed have only invalid or finished requests by now. */
	while ((b = e->active_head)) {
		active_unlink(e, b);
		batch_put(b);
	}
	if (e->rlisten)
		rdma_listener_close(e->rlisten);
	for (unsigned i = 0; i < e->nsegs; i++)
		free(e->segs[i]);
	free(e->segs);
	auth_key_clear(&e->key);
	pthread_rwlock_destroy(&e->seg_lock);
	pthread_mutex_destroy(&e->seg_mu);
	pthread_cond_destroy(&e->seg_cv);
	pthread_mutex_destroy(&e->peers_mu);
	pthread_mutex_destroy(&e->timer_mu);
	pthread_cond_destroy(&e->timer_cv);
	free(e);
}

uint64_t xfer_node_id(const struct xfer_engine *e)
{
	return e->node_id;
}

int xfer_listen_addr(const struct xfer_engine *e, char *buf, size_t len)
{
	if (!e || !buf)
		return -EINVAL;
	return tcp_listen_addr(e, buf, len);
}

unsigned xfer_transports(const struct xfer_engine *e, const char **rdma_why)
{
	if (rdma_why)
		*rdma_why = e->transports & XFER_RDMA ? NULL : e->rdma_why;
	return e->transports;
}
