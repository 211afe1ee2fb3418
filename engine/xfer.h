/*
 * xfer: the transfer engine — moves bytes between registered memory of kvcachefs nodes.
 *
 * An engine listens on one address, holds the local memory regions it exports ("segments":
 * the pool, staging buffers; GPU memory where a transport supports it) and the peers it has
 * opened. A request names a local buffer and a remote (peer, segment, offset, length); a
 * batch of requests is submitted at once and completes request by request, each with a
 * status. READ copies remote → local, WRITE local → remote; both are one-sided from the
 * initiator's point of view: the target only serves its registered segments.
 *
 * Paths: every peer is reached over several paths — TCP connections (always) and RDMA queue
 * pairs (when both sides have a device). A request larger than the slice size is cut into
 * slices spread over the paths; a slice that fails on one path is retried on another; a peer
 * that stops answering fails its pending requests after the request timeout instead of
 * hanging. Peers authenticate each other with a shared cluster secret (challenge-response:
 * the secret is never sent) and must speak the same protocol version.
 *
 * Metadata RPCs: besides moving bytes, a peer may be sent small request/response messages
 * (xfer_call) over the same authenticated TCP connections; the engine at the other end hands
 * each to the xfer_rpc_fn of its configuration and sends back what it returns.
 *
 * Every function returns 0 (or a count) or a negative errno. Thread-safe: any thread may
 * submit, poll and wait; completions are set by the engine's own threads.
 */
#ifndef KVC_ENGINE_XFER_H
#define KVC_ENGINE_XFER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct xfer_engine;
struct xfer_peer;
struct xfer_batch;

/* Transports (xfer_config.transports, xfer_peer_info.transports). */
#define XFER_TCP  0x1u
#define XFER_RDMA 0x2u

#define XFER_SECRET_MIN 16 /* bytes */

#define XFER_RPC_MAX (1u << 20) /* bytes of one RPC request or reply body */

/*
 * A handler of RPCs from peers: called for every RPC frame an authenticated peer sends, with
 * from_node the id that peer proved in its handshake and req (never NULL, len bytes, valid
 * only during the call). Returns 0 with *resp (malloc'd, or NULL when *resp_len is 0; the
 * engine frees it after sending) and *resp_len <= XFER_RPC_MAX, or a positive errno that the
 * caller of xfer_call gets back as its negative result (then *resp, if set, is freed and
 * nothing is sent but the status). A reply larger than XFER_RPC_MAX is not sent: the caller
 * gets -EMSGSIZE.
 *
 * It runs on the engine's event-loop thread that owns the connection the frame came in on,
 * with no engine lock held; while it runs that thread serves no other connection, so it must
 * be quick and must never block on the network, nor call xfer_call (its reply may need this
 * very thread), xfer_close_peer or xfer_destroy. Calls from one connection come one at a
 * time, in order; calls from different connections may run at once on different threads.
 */
typedef int (*xfer_rpc_fn)(void *arg, uint64_t from_node, const void *req, size_t len, void **resp,
			   size_t *resp_len);

/*
 * Counters an engine adds to, for the caller's metrics: relaxed atomics in memory the caller
 * owns (it outlives the engine) and reads with atomic_load. Indexed by XFER_IDX_TCP and
 * XFER_IDX_RDMA. Bytes are those of slices this node initiated that completed; a path
 * failure is a slice that failed on a path of that transport (it is then retried on another
 * path, or its request fails). served_bytes: bytes of this node's segments that peers read
 * or wrote over TCP (RDMA is one-sided: the target never sees it).
 */
#define XFER_IDX_TCP  0
#define XFER_IDX_RDMA 1
struct xfer_counters {
	_Atomic uint64_t read_bytes[2];
	_Atomic uint64_t written_bytes[2];
	_Atomic uint64_t path_failures[2];
	_Atomic uint64_t served_bytes;
};

struct xfer_config {
	const char *listen; /* "HOST:PORT" (PORT 0: any free port); NULL: do not listen */
	uint64_t node_id;   /* this node's id, sent in the handshake (0: random) */
	const void *secret; /* the cluster secret, at least XFER_SECRET_MIN bytes */
	size_t secret_len;
	unsigned transports; /* XFER_TCP | XFER_RDMA; 0 means both (RDMA when a device exists) */
	unsigned conns_per_peer; /* TCP connections per peer (default 4) */
	unsigned qps_per_peer;	 /* RDMA queue pairs per peer (default 4) */
	uint64_t slice_size;	 /* bytes per slice (default 1 MiB) */
	unsigned timeout_ms;	 /* a request not done by then fails XFER_TIMEDOUT (default 5000) */
	unsigned retries;	 /* tries per slice on other paths before failing (default 3) */
	unsigned io_threads;	 /* threads driving the transports (default 2) */
	/* TCP congestion control of every TCP connection (TCP_CONGESTION, e.g. "cubic");
	 * NULL: the system's (net.ipv4.tcp_congestion_control). Checked by xfer_create. */
	const char *tcp_congestion;
	xfer_rpc_fn rpc;		/* RPCs from peers; NULL: answered with status EOPNOTSUPP */
	void *rpc_arg;			/* passed to rpc */
	struct xfer_counters *counters; /* NULL: none kept */
	/* Notable events, one line each with a syslog level (LOG_WARNING: a peer's transfer
	 * connection lost, RDMA falling back to TCP; LOG_INFO: connections back; ...), said once
	 * per peer and change of state, never per request. NULL: syslog(3). Called from any
	 * engine thread, possibly with engine locks held: it must not call into the engine. */
	void (*log)(void *arg, int level, const char *msg);
	void *log_arg;
};

int xfer_create(struct xfer_engine **out, const struct xfer_config *cfg);
/* Whether this process may give its TCP connections congestion control name: 0; -ENOENT
 * not available on this host (not built in, no such module); -EPERM not among the ones
 * allowed without CAP_NET_ADMIN (net.ipv4.tcp_allowed_congestion_control); -EINVAL not a
 * name (empty, or XFER_TCP_CONGESTION_MAX bytes or more). */
#define XFER_TCP_CONGESTION_MAX 16
int xfer_tcp_congestion_check(const char *name);
/* What a refusal of xfer_tcp_congestion_check (or of xfer_create for that) means, in a few
 * words: "not available on this host", "not allowed without CAP_NET_ADMIN", strerror. */
const char *xfer_tcp_congestion_strerror(int err);
/* The system's congestion control (which NULL: net.ipv4.tcp_congestion_control), or its
 * list of those available or allowed (which "available", "allowed": net.ipv4.tcp_<which>_
 * congestion_control), into buf; "" when it cannot be read. */
void xfer_tcp_congestion_sysctl(const char *which, char *buf, size_t len);
/* Close every peer (pending requests end XFER_CANCELLED), stop the threads, free. */
void xfer_destroy(struct xfer_engine *e);
/* The address the engine listens on, with the port actually bound ("127.0.0.1:40123"). */
int xfer_listen_addr(const struct xfer_engine *e, char *buf, size_t len);
uint64_t xfer_node_id(const struct xfer_engine *e);
/* Which transports are usable here (XFER_TCP, plus XFER_RDMA when a device was found), and
 * why RDMA is not, if it is not (a static string). */
unsigned xfer_transports(const struct xfer_engine *e, const char **rdma_why);

/* Export [addr, addr + len) as a segment that peers may READ and WRITE. The id is what
 * remote requests name. EINVAL for len 0; ENOMEM. */
int xfer_register(struct xfer_engine *e, void *addr, uint64_t len, uint32_t *seg_id);
/* Stop exporting it; waits for requests being served from it to finish. ENOENT. */
int xfer_unregister(struct xfer_engine *e, uint32_t seg_id);

/* Connect to the engine at "HOST:PORT": paths are opened and authenticated before this
 * returns. EACCES: the peer refused our secret or we refused its proof; EPROTO: protocol
 * version mismatch or a malformed handshake; ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH... */
int xfer_open_peer(struct xfer_engine *e, const char *addr, struct xfer_peer **out);
/* Close the peer's paths; its pending requests end XFER_CANCELLED. */
void xfer_close_peer(struct xfer_peer *p);

struct xfer_peer_info {
	uint64_t node_id;
	unsigned transports; /* the paths in use: XFER_TCP and/or XFER_RDMA */
	unsigned paths;	     /* live paths */
	uint64_t bytes_read, bytes_written, failures, retries;
};
void xfer_peer_info(struct xfer_peer *p, struct xfer_peer_info *info);
/* xfer_peer_info of each peer the engine has open, into out[0..max) (one lock hold, no
 * allocation). Returns how many peers there are (may exceed max). */
size_t xfer_peers_info(struct xfer_engine *e, struct xfer_peer_info *out, size_t max);

/*
 * Send one request (len <= XFER_RPC_MAX bytes; copied, so req may be reused as soon as this
 * returns) to p's handler and wait for its reply. 0 with *resp (malloc'd, the caller frees;
 * NULL when *resp_len is 0), or a negative errno with *resp NULL and *resp_len 0: the
 * handler's status, -EOPNOTSUPP (no handler there), -EMSGSIZE (len too large, or the reply
 * would be), -ETIMEDOUT (no reply within timeout_ms; <= 0 means the engine's timeout_ms),
 * -ENOTCONN (no live connection to p right now, e.g. while it is being reconnected),
 * -ECONNRESET (the connection failed or the peer was closed before the reply came), -ENOMEM,
 * -EINVAL. A reply that comes after the call gave up is discarded.
 *
 * Any number of threads may call it at once on one peer: calls are spread round-robin over
 * the peer's connections and several may be in flight on one connection (matched by request
 * id), behind whatever READ/WRITE frames are already queued there. Must not be called from an
 * xfer_rpc_fn, nor race with xfer_close_peer(p).
 */
int xfer_call(struct xfer_peer *p, const void *req, size_t len, void **resp, size_t *resp_len,
	      int timeout_ms);

/*
 * Streams: a TCP connection to a peer owned by one thread, outside the engine's event loops,
 * with blocking I/O bounded by the engine's timeout_ms. A read on it moves the bytes of a
 * remote segment from the socket into a pipe (splice(2): no copy in this process), so that
 * they can be spliced on to their final destination (a FUSE reply). Authenticated like every
 * path. One thread at a time uses a stream; the target answers its requests in order, so
 * several may be in flight (xfer_stream_send, xfer_stream_recv). A caller keeps streams and
 * reuses them.
 *
 * xfer_stream_open: 0 or the errors of xfer_open_peer; EPROTO when the peer at p's address
 * is another node than p. xfer_stream_close frees it (NULL: nothing).
 */
struct xfer_stream;
int xfer_stream_open(struct xfer_peer *p, struct xfer_stream **out);
void xfer_stream_close(struct xfer_stream *s);
/* Is an idle stream still usable (nothing to read on it, not closed by the peer)? */
int xfer_stream_alive(const struct xfer_stream *s);
/* The peer a stream was opened to. */
struct xfer_peer *xfer_stream_peer(const struct xfer_stream *s);

/*
 * Splice len bytes of remote segment seg at off into the pipe pipe_wr (which must have room
 * for them: the stream never waits for a reader of the pipe), then read check_len bytes of
 * the same segment at check_off into check. The target sends the check bytes after the data
 * in one ordered stream, so they were read there after the data was: a block header read
 * this way vouches for the bytes before it. Both requests go out together (one round trip).
 * 0; the target's status (-ERANGE, -ENOENT...: the stream stays usable, the pipe holds
 * nothing of this call); or a transport error (-ETIMEDOUT, -ECONNRESET, -EPROTO, -ENOBUFS
 * when the pipe has no room: a pipe counts slots, each holding a piece of a socket buffer, so
 * what fits depends on how the bytes arrived): the stream must be closed, and the pipe may
 * hold part of the data.
 * *broken says which (true: close it).
 */
int xfer_stream_read(struct xfer_stream *s, uint32_t seg, uint64_t off, uint64_t len, int pipe_wr,
		     uint64_t check_off, void *check, uint32_t check_len, int *broken);
/* xfer_stream_read in two halves, so that several reads can be in flight on one stream (the
 * target answers them in order): send the two requests (0 or a transport error: close it),
 * then receive the replies of the oldest read not yet received (as xfer_stream_read). */
int xfer_stream_send(struct xfer_stream *s, uint32_t seg, uint64_t off, uint64_t len,
		     uint64_t check_off, uint32_t check_len);
int xfer_stream_recv(struct xfer_stream *s, uint64_t len, int pipe_wr, void *check,
		     uint32_t check_len, int *broken);

enum xfer_op { XFER_READ = 1, XFER_WRITE = 2 };

enum xfer_status {
	XFER_PENDING = 0,
	XFER_DONE,
	XFER_FAILED,   /* error says why (EIO, ERANGE: outside the remote segment, ENOENT: no
			* such segment, ECONNRESET: every path failed...) */
	XFER_TIMEDOUT, /* not completed within timeout_ms */
	XFER_CANCELLED /* the peer or the engine was closed, or xfer_cancel */
};

/* One request. The caller owns the array until the batch is freed; status and error are
 * written by the engine (status last, with release ordering). */
struct xfer_req {
	enum xfer_op op;
	void *local; /* READ: destination; WRITE: source */
	uint64_t len;
	struct xfer_peer *peer;
	uint32_t remote_seg;
	uint64_t remote_off;
	_Atomic int status; /* enum xfer_status */
	int error;	    /* errno when FAILED */
};

/* Start n requests. Requests that cannot start (bad arguments) complete at once FAILED with
 * EINVAL; the call itself fails only for ENOMEM or n == 0 (EINVAL). */
int xfer_submit(struct xfer_engine *e, struct xfer_req *reqs, size_t n, struct xfer_batch **out);
/* How many requests of the batch have completed (any status). */
size_t xfer_poll(struct xfer_batch *b);
/* Wait until every request completed or timeout_ms passed (-1: no limit). Returns the number
 * completed. */
size_t xfer_wait(struct xfer_batch *b, int timeout_ms);
/* Requests not yet completed end XFER_CANCELLED. When it returns, the engine no longer
 * touches their local buffers (data still arriving for them is discarded). */
void xfer_cancel(struct xfer_batch *b);
/* Free a completed (or cancelled) batch. */
void xfer_batch_free(struct xfer_batch *b);

#endif
