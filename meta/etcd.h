/*
 * etcd: a small etcd v3 client over the JSON gRPC gateway (HTTP/1.1 POSTs to /v3/..., keys
 * and values base64, int64 fields as JSON strings, JSON built and parsed with cJSON).
 *
 * One struct etcd per daemon, shared by every thread: unary calls (KV, txn, leases) are
 * thread-safe and synchronous, each bounded by the client's timeout per endpoint tried. A
 * call goes to the endpoint that answered last; when it cannot connect there (refused,
 * unreachable, connect timeout) it tries the next one, so a dead member of an etcd cluster
 * costs one failed connect, not an error. A request that reached an endpoint is never sent
 * again (a transaction must not run twice).
 *
 * Errors (negative errno): -ECONNREFUSED, -EHOSTUNREACH, -ETIMEDOUT or -ECONNRESET when
 * etcd cannot be reached or stopped answering (etcd_unreachable() says so), -ENOENT for a
 * missing key or lease, -EEXIST when a compare-and-put fails, -ESTALE when a revision
 * asked for has been compacted (-ERANGE: not reached yet), -EPROTO for an answer that is
 * not what the gateway sends, -EIO for any other error answer (logged to syslog with
 * etcd's message), -ENOMEM, -EINVAL.
 *
 * Watches run one thread each with one streaming request (see etcd_watch_start).
 *
 * The only process-wide state is libcurl's global initialisation, reference-counted by
 * etcd_create/etcd_destroy.
 */
#ifndef KVC_META_ETCD_H
#define KVC_META_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct etcd;
struct etcd_watch;

/* A key-value pair as etcd returns it. key and value are allocated and NUL-terminated (the
 * terminator is not counted in len); value may hold binary bytes. A DELETE event's kv has
 * the key, mod_revision (the revision of the delete) and an empty value. */
struct etcd_kv {
	char *key;
	char *value;
	size_t len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease; /* 0: none */
};

/* Connect to "http://host:port[,http://host2:port2...]" (nothing is sent yet). timeout_ms
 * bounds each request on each endpoint (0: 5000). Returns 0, -EINVAL for a malformed list,
 * -ENOMEM. */
int etcd_create(struct etcd **out, const char *endpoints, unsigned timeout_ms);
/* Every watch of c must have been stopped. NULL is a no-op. */
void etcd_destroy(struct etcd *c);
/* Whether err (negative) means that etcd could not be reached or did not answer. */
bool etcd_unreachable(int err);

/* Put key = val[0..len) under lease (0: none). *rev (may be NULL) gets the revision of the
 * put. Returns 0, -ENOENT when the lease does not exist (expired), or an error above. */
int etcd_put(struct etcd *c, const char *key, const void *val, size_t len, int64_t lease,
	     int64_t *rev);
/* Compare-and-put in one transaction: put only when key's mod_revision is
 * expected_mod_revision, or, with expected_mod_revision 0, when key does not exist.
 * Returns 0 (and *rev as etcd_put), -EEXIST when the comparison failed (nothing written),
 * -ENOENT when the lease does not exist, or an error above. */
int etcd_put_if(struct etcd *c, const char *key, int64_t expected_mod_revision, const void *val,
		size_t len, int64_t lease, int64_t *rev);
/* Read key into *out (free with etcd_kv_fini). Returns 0 or -ENOENT. */
int etcd_get(struct etcd *c, const char *key, struct etcd_kv *out);
/* Free what an etcd_kv holds (not the struct itself). */
void etcd_kv_fini(struct etcd_kv *kv);

/*
 * One page of the keys that start with prefix ("" = every key), in key order, the first
 * one strictly after start_after (NULL: from the start of the prefix), at most limit of
 * them (0: no limit). *kvs (free with etcd_kvs_free; NULL when *n is 0), *n, and *more
 * (whether keys remain after this page) are set on success.
 *
 * *revision is in and out: in, 0 reads the latest data and any other value reads the store
 * as it was at that revision (-ESTALE if compacted); out, it is the revision the page was
 * read at. Passing the first page's revision to the next pages lists a prefix as one
 * consistent snapshot, and a watch from that revision + 1 misses nothing.
 */
int etcd_range(struct etcd *c, const char *prefix, const char *start_after, size_t limit,
	       struct etcd_kv **kvs, size_t *n, bool *more, int64_t *revision);
void etcd_kvs_free(struct etcd_kv *kvs, size_t n);
/* Delete key, or with prefix every key that starts with it. Returns the number of keys
 * deleted (0 when there was none), or an error. */
int etcd_delete(struct etcd *c, const char *key, bool prefix);
/* Discard the history before revision (tests; an operator's tool). Returns 0 or an error
 * (-ESTALE when already compacted past it). */
int etcd_compact(struct etcd *c, int64_t revision);

/* Grant a lease of ttl_s seconds; *id gets its id. */
int etcd_lease_grant(struct etcd *c, unsigned ttl_s, int64_t *id);
/* Refresh lease id once; *ttl_left (may be NULL) gets its TTL from now. Returns 0, or
 * -ENOENT when the lease has expired or was revoked (its keys are gone). */
int etcd_lease_keepalive(struct etcd *c, int64_t id, unsigned *ttl_left);
/* Revoke lease id: every key put under it is deleted. Returns 0 or -ENOENT. */
int etcd_lease_revoke(struct etcd *c, int64_t id);

/*
 * Watch events, delivered in revision order from the watch's thread:
 *   PUT, DELETE      a key of the prefix changed (kv as above).
 *   RESYNC           events were lost (history compacted while disconnected, or etcd came
 *                    back with an older store): the owner must forget every key it knows.
 *                    The watch then sends a PUT for every key that exists now, read as
 *                    one snapshot, and goes on from there.
 *   CONNECTED        the watch is (again) live: every change up to now has been delivered.
 *                    After a RESYNC, this closes the list of PUTs.
 *   DISCONNECTED     the stream broke; the watch reconnects by itself (backoff up to 2 s)
 *                    and resumes after the last revision it delivered.
 * kv is NULL for the last three.
 */
enum etcd_event {
	ETCD_EV_PUT,
	ETCD_EV_DELETE,
	ETCD_EV_RESYNC,
	ETCD_EV_CONNECTED,
	ETCD_EV_DISCONNECTED,
};

/* Called from the watch's thread, one event at a time. It may make unary calls on the
 * client, but not stop its own watch. kv and its strings are valid only during the call. */
typedef void (*etcd_watch_fn)(void *arg, enum etcd_event ev, const struct etcd_kv *kv);

/*
 * Watch every key that starts with prefix, from from_revision (0: from now). Returns once
 * etcd has accepted the watch (the first CONNECTED event has been delivered), with *out
 * set; or an error of that first attempt, every endpoint tried (nothing keeps running). A
 * from_revision already compacted starts with RESYNC, the PUTs, then CONNECTED.
 *
 * Owners must accept a RESYNC at any time, even right after a CONNECTED: a compaction that
 * races with a reconnect is only reported by etcd once it has accepted the watch.
 */
int etcd_watch_start(struct etcd *c, const char *prefix, int64_t from_revision, etcd_watch_fn cb,
		     void *arg, struct etcd_watch **out);
/* Stop the watch: returns promptly (no more than one request timeout when it was in the
 * middle of a re-list), after which cb is not called again. NULL is a no-op. */
void etcd_watch_stop(struct etcd_watch *w);

/* Where the etcd client and the member list (meta/members.c) log their notable events: one
 * line each, a syslog level. NULL (the default): syslog(3). Set it before any thread starts. */
typedef void (*etcd_log_fn)(void *arg, int level, const char *msg);
void etcd_set_log(etcd_log_fn fn, void *arg);
void etcd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
