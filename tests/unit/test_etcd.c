/*
 * Unit tests of the etcd client (meta/etcd.c) against a real etcd started by the test
 * (tests/unit/etcd_run.h); SKIP when etcd is not installed.
 *
 * KV: put/get (binary values, revisions), range paging over 1000 keys at one revision,
 * prefix delete, compare-and-put (absent, present, by revision). Leases: grant, keepalive,
 * expiry of a 2 s lease and of its keys, revoke deleting keys at once. Watch: puts and
 * deletes in order (several deletes at one revision), resuming after etcd is paused
 * (SIGSTOP/SIGCONT) and after it is killed and restarted on the same data and port, and
 * a re-list (RESYNC) when the history missed while cut off (through a proxy) was compacted,
 * or when the start revision is. Endpoints: an unreachable one fails fast, a stalled one
 * times out, the second endpoint serves when the first is dead.
 */
#include "meta/etcd.h"
#include "tests/unit/check.h"
#include "tests/unit/etcd_run.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct etcd_proc srv;
static struct etcd *cl;

/* ---- a recorder for watch events ---------------------------------------------------- */

struct rec_ev {
	enum etcd_event ev;
	char key[64];
	char value[64];
	int64_t rev;
};

struct rec {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rec_ev ev[4096];
	size_t n;
};

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
}

static void rec_fini(struct rec *r)
{
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

static void rec_cb(void *arg, enum etcd_event ev, const struct etcd_kv *kv)
{
	struct rec *r = arg;

	pthread_mutex_lock(&r->mu);
	if (r->n < sizeof(r->ev) / sizeof(r->ev[0])) {
		struct rec_ev *e = &r->ev[r->n++];

		e->ev = ev;
		if (kv) {
			snprintf(e->key, sizeof(e->key), "%s", kv->key);
			snprintf(e->value, sizeof(e->value), "%s", kv->value);
			e->rev = kv->mod_revision;
		}
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Wait until the recorder holds at least n events (timeout_ms). */
static bool rec_wait(struct rec *r, size_t n, unsigned timeout_ms)
{
	uint64_t deadline = etcd_run_ms() + timeout_ms;
	bool ok;

	for (;;) {
		pthread_mutex_lock(&r->mu);
		ok = r->n >= n;
		pthread_mutex_unlock(&r->mu);
		if (ok || etcd_run_ms() >= deadline)
			return ok;
		etcd_run_sleep_ms(10);
	}
}

/* Index of the first event of type ev at or after from, or -1. */
static long rec_find(struct rec *r, size_t from, enum etcd_event ev)
{
	long at = -1;

	pthread_mutex_lock(&r->mu);
	for (size_t i = from; i < r->n && at < 0; i++)
		if (r->ev[i].ev == ev)
			at = (long)i;
	pthread_mutex_unlock(&r->mu);
	return at;
}

static bool rec_wait_for(struct rec *r, size_t from, enum etcd_event ev, unsigned timeout_ms)
{
	uint64_t deadline = etcd_run_ms() + timeout_ms;

	while (rec_find(r, from, ev) < 0) {
		if (etcd_run_ms() >= deadline)
			return false;
		etcd_run_sleep_ms(10);
	}
	return true;
}

/* Wait until an event for key has arrived: its index, or -1 after timeout_ms. */
static long rec_wait_key(struct rec *r, const char *key, unsigned timeout_ms)
{
	uint64_t deadline = etcd_run_ms() + timeout_ms;

	for (;;) {
		long at = -1;

		pthread_mutex_lock(&r->mu);
		for (size_t i = 0; i < r->n && at < 0; i++)
			if (!strcmp(r->ev[i].key, key))
				at = (long)i;
		pthread_mutex_unlock(&r->mu);
		if (at >= 0 || etcd_run_ms() >= deadline)
			return at;
		etcd_run_sleep_ms(10);
	}
}

static int put_str(struct etcd *c, const char *key, const char *val)
{
	return etcd_put(c, key, val, strlen(val), 0, NULL);
}

/* ---- KV ----------------------------------------------------------------------------- */

static void test_put_get(void)
{
	static const char bin[] = {'a', 0, 'b', (char)0xff, '\n', '"'};
	struct etcd_kv kv;
	int64_t rev1 = 0, rev2 = 0;

	REQUIRE(etcd_put(cl, "/t/pg/a", "hello", 5, 0, &rev1) == 0);
	CHECK(rev1 > 0);
	REQUIRE(etcd_get(cl, "/t/pg/a", &kv) == 0);
	CHECK(!strcmp(kv.key, "/t/pg/a"));
	CHECK(kv.len == 5 && !memcmp(kv.value, "hello", 5) && kv.value[5] == '\0');
	CHECK(kv.create_revision == rev1 && kv.mod_revision == rev1 && kv.version == 1);
	CHECK(kv.lease == 0);
	etcd_kv_fini(&kv);

	REQUIRE(etcd_put(cl, "/t/pg/a", bin, sizeof(bin), 0, &rev2) == 0);
	CHECK(rev2 > rev1);
	REQUIRE(etcd_get(cl, "/t/pg/a", &kv) == 0);
	CHECK(kv.len == sizeof(bin) && !memcmp(kv.value, bin, sizeof(bin)));
	CHECK(kv.create_revision == rev1 && kv.mod_revision == rev2 && kv.version == 2);
	etcd_kv_fini(&kv);

	/* an empty value, and keys of every base64 padding length */
	CHECK(etcd_put(cl, "/t/pg/e", "", 0, 0, NULL) == 0);
	REQUIRE(etcd_get(cl, "/t/pg/e", &kv) == 0);
	CHECK(kv.len == 0 && kv.value && kv.value[0] == '\0');
	etcd_kv_fini(&kv);
	for (const char *k = "/t/pg/xyz"; *k; k++) {
		char key[32];

		snprintf(key, sizeof(key), "/t/pg/k%s", k);
		CHECK(put_str(cl, key, k) == 0);
		REQUIRE(etcd_get(cl, key, &kv) == 0);
		CHECK(!strcmp(kv.key, key) && !strcmp(kv.value, k));
		etcd_kv_fini(&kv);
	}

	CHECK(etcd_get(cl, "/t/pg/missing", &kv) == -ENOENT);
	CHECK(etcd_get(cl, "/t/pg/a/", &kv) == -ENOENT);
	CHECK(etcd_delete(cl, "/t/pg/", true) >= 3);
}

static void test_range_paging(void)
{
	struct etcd_kv *kvs;
	char key[64], *after = NULL;
	size_t n, total = 0, pages = 0;
	int64_t rev = 0, rev0 = 0;
	bool more = true, order_ok = true;
	uint64_t t0 = etcd_run_ms();

	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "/t/range/k%04d", i);
		REQUIRE(etcd_put(cl, key, key, strlen(key), 0, NULL) == 0);
	}
	/* neighbours that are not in the prefix */
	REQUIRE(put_str(cl, "/t/rangf", "x") == 0);
	REQUIRE(put_str(cl, "/t/range", "x") == 0);
	printf("     1000 puts in %llu ms\n", (unsigned long long)(etcd_run_ms() - t0));

	while (more) {
		REQUIRE(etcd_range(cl, "/t/range/", after, 100, &kvs, &n, &more, &rev) == 0);
		free(after);
		after = NULL;
		if (pages == 0) {
			rev0 = rev;
			/* written after the first page: not in this snapshot */
			REQUIRE(put_str(cl, "/t/range/k9999", "late") == 0);
		}
		CHECK(rev == rev0);
		CHECK(n == 100);
		for (size_t i = 0; i < n; i++) {
			snprintf(key, sizeof(key), "/t/range/k%04zu", total + i);
			if (strcmp(kvs[i].key, key) || strcmp(kvs[i].value, key))
				order_ok = false;
		}
		total += n;
		pages++;
		if (n > 0)
			after = strdup(kvs[n - 1].key);
		etcd_kvs_free(kvs, n);
		REQUIRE(pages <= 10);
	}
	free(after);
	CHECK(order_ok);
	CHECK(total == 1000 && pages == 10);

	/* latest: the late key is there; no limit gives everything at once */
	rev = 0;
	REQUIRE(etcd_range(cl, "/t/range/", NULL, 0, &kvs, &n, &more, &rev) == 0);
	CHECK(n == 1001 && !more && rev > rev0);
	CHECK(n == 1001 && !strcmp(kvs[1000].key, "/t/range/k9999"));
	etcd_kvs_free(kvs, n);

	/* after the last key: an empty page */
	rev = 0;
	REQUIRE(etcd_range(cl, "/t/range/", "/t/range/k9999", 10, &kvs, &n, &more, &rev) == 0);
	CHECK(n == 0 && kvs == NULL && !more);
}

static void test_delete(void)
{
	struct etcd_kv *kvs, kv;
	size_t n;
	int64_t rev = 0;
	bool more;

	CHECK(etcd_delete(cl, "/t/range/k0000", false) == 1);
	CHECK(etcd_delete(cl, "/t/range/k0000", false) == 0);
	CHECK(etcd_delete(cl, "/t/range/", true) == 1000);
	REQUIRE(etcd_range(cl, "/t/range/", NULL, 0, &kvs, &n, &more, &rev) == 0);
	CHECK(n == 0);
	etcd_kvs_free(kvs, n);
	/* the neighbours stayed */
	CHECK(etcd_get(cl, "/t/rangf", &kv) == 0);
	etcd_kv_fini(&kv);
	CHECK(etcd_get(cl, "/t/range", &kv) == 0);
	etcd_kv_fini(&kv);
	CHECK(etcd_delete(cl, "/t/rang", true) == 2);
}

static void test_put_if(void)
{
	struct etcd_kv kv;
	int64_t rev = 0, rev2 = 0;

	CHECK(etcd_put_if(cl, "/t/cas", 0, "one", 3, 0, &rev) == 0);
	CHECK(rev > 0);
	CHECK(etcd_put_if(cl, "/t/cas", 0, "two", 3, 0, NULL) == -EEXIST);
	REQUIRE(etcd_get(cl, "/t/cas", &kv) == 0);
	CHECK(!strcmp(kv.value, "one") && kv.mod_revision == rev);
	etcd_kv_fini(&kv);

	CHECK(etcd_put_if(cl, "/t/cas", rev, "three", 5, 0, &rev2) == 0);
	CHECK(rev2 > rev);
	CHECK(etcd_put_if(cl, "/t/cas", rev, "four", 4, 0, NULL) == -EEXIST); /* stale */
	REQUIRE(etcd_get(cl, "/t/cas", &kv) == 0);
	CHECK(!strcmp(kv.value, "three") && kv.mod_revision == rev2);
	etcd_kv_fini(&kv);
	/* a revision on a missing key */
	CHECK(etcd_put_if(cl, "/t/cas-missing", 5, "x", 1, 0, NULL) == -EEXIST);
	CHECK(etcd_get(cl, "/t/cas-missing", &kv) == -ENOENT);
	CHECK(etcd_delete(cl, "/t/cas", false) == 1);
	/* gone again: absent succeeds */
	CHECK(etcd_put_if(cl, "/t/cas", 0, "five", 4, 0, NULL) == 0);
	CHECK(etcd_delete(cl, "/t/cas", false) == 1);
}

/* ---- leases ------------------------------------------------------------------------- */

static void test_lease(void)
{
	struct etcd_kv kv;
	int64_t id, id2;
	unsigned ttl = 0;
	uint64_t t0;

	REQUIRE(etcd_lease_grant(cl, 2, &id) == 0);
	CHECK(id != 0);
	REQUIRE(etcd_put(cl, "/t/lease/a", "x", 1, id, NULL) == 0);
	REQUIRE(etcd_get(cl, "/t/lease/a", &kv) == 0);
	CHECK(kv.lease == id);
	etcd_kv_fini(&kv);

	/* kept alive for 3 s > TTL */
	for (int i = 0; i < 6; i++) {
		etcd_run_sleep_ms(500);
		CHECK(etcd_lease_keepalive(cl, id, &ttl) == 0);
		CHECK(ttl >= 1 && ttl <= 2);
	}
	CHECK(etcd_get(cl, "/t/lease/a", &kv) == 0);
	etcd_kv_fini(&kv);

	/* then left alone: the key goes with the lease */
	t0 = etcd_run_ms();
	while (etcd_get(cl, "/t/lease/a", &kv) == 0) {
		etcd_kv_fini(&kv);
		if (etcd_run_ms() - t0 > 5000)
			break;
		etcd_run_sleep_ms(100);
	}
	CHECK(etcd_run_ms() - t0 >= 1000 && etcd_run_ms() - t0 < 4000);
	CHECK(etcd_get(cl, "/t/lease/a", &kv) == -ENOENT);
	CHECK(etcd_lease_keepalive(cl, id, &ttl) == -ENOENT);
	CHECK(etcd_put(cl, "/t/lease/b", "x", 1, id, NULL) == -ENOENT);
	CHECK(etcd_lease_revoke(cl, id) == -ENOENT);

	/* revoke deletes every key of the lease at once */
	REQUIRE(etcd_lease_grant(cl, 30, &id2) == 0);
	REQUIRE(etcd_put(cl, "/t/lease/c", "x", 1, id2, NULL) == 0);
	REQUIRE(etcd_put(cl, "/t/lease/d", "x", 1, id2, NULL) == 0);
	REQUIRE(etcd_put_if(cl, "/t/lease/e", 0, "x", 1, id2, NULL) == 0);
	CHECK(etcd_lease_revoke(cl, id2) == 0);
	CHECK(etcd_get(cl, "/t/lease/c", &kv) == -ENOENT);
	CHECK(etcd_get(cl, "/t/lease/d", &kv) == -ENOENT);
	CHECK(etcd_get(cl, "/t/lease/e", &kv) == -ENOENT);
	CHECK(etcd_lease_keepalive(cl, id2, NULL) == -ENOENT);
}

/* ---- watch -------------------------------------------------------------------------- */

static void test_watch_order(void)
{
	static struct rec r;
	struct etcd_watch *w;
	int64_t rev;

	rec_init(&r);
	REQUIRE(put_str(cl, "/t/w1/before", "0") == 0);
	REQUIRE(etcd_watch_start(cl, "/t/w1/", 0, rec_cb, &r, &w) == 0);
	CHECK(r.n == 1 && r.ev[0].ev == ETCD_EV_CONNECTED); /* delivered before the return */
	CHECK(put_str(cl, "/t/w1/a", "1") == 0);
	CHECK(put_str(cl, "/t/w1x", "not in the prefix") == 0);
	CHECK(put_str(cl, "/t/w1/b", "2") == 0);
	CHECK(put_str(cl, "/t/w1/a", "3") == 0);
	CHECK(etcd_delete(cl, "/t/w1/a", false) == 1);
	CHECK(put_str(cl, "/t/w1/c", "4") == 0);
	CHECK(etcd_delete(cl, "/t/w1/", true) == 3); /* before, b, c: one revision */
	CHECK(etcd_put(cl, "/t/w1/z", "5", 1, 0, &rev) == 0);
	CHECK(rec_wait(&r, 10, 2000));
	etcd_watch_stop(w);
	REQUIRE(r.n == 10);
	CHECK(r.ev[1].ev == ETCD_EV_PUT && !strcmp(r.ev[1].key, "/t/w1/a") &&
	      !strcmp(r.ev[1].value, "1"));
	CHECK(r.ev[2].ev == ETCD_EV_PUT && !strcmp(r.ev[2].key, "/t/w1/b"));
	CHECK(r.ev[3].ev == ETCD_EV_PUT && !strcmp(r.ev[3].value, "3"));
	CHECK(r.ev[4].ev == ETCD_EV_DELETE && !strcmp(r.ev[4].key, "/t/w1/a"));
	CHECK(r.ev[5].ev == ETCD_EV_PUT && !strcmp(r.ev[5].key, "/t/w1/c"));
	for (int i = 6; i < 9; i++)
		CHECK(r.ev[i].ev == ETCD_EV_DELETE && r.ev[i].rev == r.ev[6].rev);
	CHECK(r.ev[9].ev == ETCD_EV_PUT && r.ev[9].rev == rev);
	for (int i = 2; i < 10; i++)
		CHECK(r.ev[i].rev >= r.ev[i - 1].rev);

	/* from a past revision: the history is replayed */
	rec_init(&r);
	REQUIRE(etcd_watch_start(cl, "/t/w1/", 1, rec_cb, &r, &w) == 0);
	CHECK(rec_wait(&r, 11, 2000));
	etcd_watch_stop(w);
	CHECK(r.ev[0].ev == ETCD_EV_CONNECTED);
	CHECK(r.n == 11 && r.ev[1].ev == ETCD_EV_PUT && !strcmp(r.ev[1].key, "/t/w1/before"));
	CHECK(r.ev[r.n - 1].rev == rev);
	rec_fini(&r);
	etcd_delete(cl, "/t/w1", true);
}

static void test_watch_pause(void)
{
	static struct rec r;
	struct etcd_watch *w;
	struct etcd *quick;
	uint64_t t0;

	rec_init(&r);
	REQUIRE(etcd_create(&quick, srv.url, 300) == 0);
	REQUIRE(etcd_watch_start(cl, "/t/w2/", 0, rec_cb, &r, &w) == 0);
	REQUIRE(put_str(cl, "/t/w2/a", "1") == 0);
	CHECK(rec_wait(&r, 2, 2000));

	etcd_proc_pause(&srv);
	t0 = etcd_run_ms();
	CHECK(put_str(quick, "/t/w2/b", "lost") == -ETIMEDOUT);
	CHECK(etcd_run_ms() - t0 < 1000);
	CHECK(etcd_unreachable(-ETIMEDOUT));
	etcd_run_sleep_ms(1500);
	etcd_proc_resume(&srv);

	REQUIRE(put_str(cl, "/t/w2/c", "2") == 0);
	/* the stream held: "c" arrives, with no disconnection. "b" may or may not have been
	 * applied, before or after "c" (its request was queued in the paused etcd), so the
	 * events are waited for by key, not counted. */
	CHECK(rec_wait_key(&r, "/t/w2/c", 3000) >= 1);
	etcd_watch_stop(w);
	CHECK(rec_find(&r, 0, ETCD_EV_DISCONNECTED) < 0);
	etcd_destroy(quick);
	rec_fini(&r);
	etcd_delete(cl, "/t/w2/", true);
}

static void test_watch_restart(void)
{
	static struct rec r;
	struct etcd_watch *w;
	long dis, con;
	int puts = 0, dels = 0;
	uint64_t t0;

	rec_init(&r);
	REQUIRE(etcd_watch_start(cl, "/t/w3/", 0, rec_cb, &r, &w) == 0);
	REQUIRE(put_str(cl, "/t/w3/a", "1") == 0);
	REQUIRE(rec_wait(&r, 2, 2000));

	etcd_proc_kill(&srv);
	CHECK(rec_wait_for(&r, 0, ETCD_EV_DISCONNECTED, 2000));
	CHECK(put_str(cl, "/t/w3/b", "x") == -ECONNREFUSED);
	REQUIRE(etcd_proc_restart(&srv) == 0);
	t0 = etcd_run_ms();
	dis = rec_find(&r, 0, ETCD_EV_DISCONNECTED);
	REQUIRE(dis > 0);
	CHECK(rec_wait_for(&r, (size_t)dis + 1, ETCD_EV_CONNECTED, 5000));
	con = rec_find(&r, (size_t)dis + 1, ETCD_EV_CONNECTED);
	REQUIRE(con > dis);
	CHECK(rec_find(&r, 0, ETCD_EV_RESYNC) < 0); /* same store: resumed, not re-listed */
	printf("     watch back %llu ms after etcd\n", (unsigned long long)(etcd_run_ms() - t0));

	REQUIRE(put_str(cl, "/t/w3/b", "2") == 0);
	REQUIRE(etcd_delete(cl, "/t/w3/a", false) == 1);
	CHECK(rec_wait(&r, (size_t)con + 3, 3000));
	etcd_watch_stop(w);
	for (size_t i = 0; i < r.n; i++) {
		puts += r.ev[i].ev == ETCD_EV_PUT;
		dels += r.ev[i].ev == ETCD_EV_DELETE;
	}
	CHECK(puts == 2 && dels == 1); /* nothing twice */
	rec_fini(&r);
	etcd_delete(cl, "/t/w3/", true);
}

static void test_watch_compacted(void)
{
	static struct rec r;
	struct tcp_proxy px;
	struct etcd_watch *w;
	struct etcd *via;
	int64_t rev, first;
	long rs, con;
	size_t mark;

	rec_init(&r);
	REQUIRE(proxy_start(&px, srv.cport) == 0);
	REQUIRE(etcd_create(&via, px.url, 1000) == 0);
	REQUIRE(put_str(cl, "/t/w4/keep", "1") == 0);
	REQUIRE(put_str(cl, "/t/w4/gone", "1") == 0);
	REQUIRE(etcd_watch_start(via, "/t/w4/", 0, rec_cb, &r, &w) == 0);
	REQUIRE(put_str(cl, "/t/w4/a", "1") == 0);
	REQUIRE(rec_wait(&r, 2, 2000));

	proxy_set_down(&px, true);
	CHECK(rec_wait_for(&r, 0, ETCD_EV_DISCONNECTED, 2000));
	REQUIRE(etcd_delete(cl, "/t/w4/gone", false) == 1);
	REQUIRE(put_str(cl, "/t/w4/keep", "2") == 0);
	REQUIRE(put_str(cl, "/t/w4/new", "3") == 0);
	REQUIRE(etcd_put(cl, "/t/other", "x", 1, 0, &rev) == 0);
	REQUIRE(etcd_compact(cl, rev) == 0);
	CHECK(etcd_compact(cl, rev - 1) == -ESTALE);
	mark = r.n;
	REQUIRE(proxy_set_down(&px, false) == 0);

	CHECK(rec_wait_for(&r, mark, ETCD_EV_RESYNC, 5000));
	rs = rec_find(&r, mark, ETCD_EV_RESYNC);
	con = rec_find(&r, mark, ETCD_EV_CONNECTED);
	CHECK(con < 0 || con > rs); /* no CONNECTED before it */
	CHECK(rec_wait_for(&r, (size_t)rs + 1, ETCD_EV_CONNECTED, 3000));
	con = rec_find(&r, (size_t)rs + 1, ETCD_EV_CONNECTED);
	REQUIRE(rs >= 0 && con == rs + 4);
	pthread_mutex_lock(&r.mu);
	/* the snapshot, in key order */
	CHECK(!strcmp(r.ev[rs + 1].key, "/t/w4/a"));
	CHECK(!strcmp(r.ev[rs + 2].key, "/t/w4/keep") && !strcmp(r.ev[rs + 2].value, "2"));
	CHECK(!strcmp(r.ev[rs + 3].key, "/t/w4/new"));
	pthread_mutex_unlock(&r.mu);
	/* and live again after it */
	REQUIRE(put_str(cl, "/t/w4/after", "4") == 0);
	CHECK(rec_wait(&r, (size_t)con + 2, 2000));
	CHECK(r.n == (size_t)con + 2 && !strcmp(r.ev[con + 1].key, "/t/w4/after"));
	etcd_watch_stop(w);

	/* starting at a compacted revision: RESYNC, the PUTs, CONNECTED (before the return) */
	rec_init(&r);
	first = 2;
	REQUIRE(etcd_watch_start(cl, "/t/w4/", first, rec_cb, &r, &w) == 0);
	CHECK(r.n == 6 && r.ev[0].ev == ETCD_EV_RESYNC && r.ev[5].ev == ETCD_EV_CONNECTED);
	REQUIRE(put_str(cl, "/t/w4/later", "5") == 0);
	CHECK(rec_wait(&r, 7, 2000));
	etcd_watch_stop(w);
	CHECK(r.n == 7 && !strcmp(r.ev[6].key, "/t/w4/later"));
	/* and at a revision the store has not reached: waits for it */
	rec_init(&r);
	REQUIRE(etcd_put(cl, "/t/w4/now", "6", 1, 0, &rev) == 0);
	REQUIRE(etcd_watch_start(cl, "/t/w4/", rev + 2, rec_cb, &r, &w) == 0);
	REQUIRE(put_str(cl, "/t/w4/x1", "not yet") == 0);
	REQUIRE(put_str(cl, "/t/w4/x2", "this one") == 0);
	CHECK(rec_wait(&r, 2, 2000));
	etcd_watch_stop(w);
	CHECK(r.n == 2 && r.ev[0].ev == ETCD_EV_CONNECTED && !strcmp(r.ev[1].key, "/t/w4/x2"));

	etcd_destroy(via);
	proxy_stop(&px);
	rec_fini(&r);
	etcd_delete(cl, "/t/", true);
}

static void test_watch_stop_prompt(void)
{
	static struct rec r;
	struct etcd_watch *w;
	uint64_t t0;

	rec_init(&r);
	REQUIRE(etcd_watch_start(cl, "/t/w5/", 0, rec_cb, &r, &w) == 0);
	etcd_run_sleep_ms(50);
	t0 = etcd_run_ms();
	etcd_watch_stop(w);
	CHECK(etcd_run_ms() - t0 < 200);
	rec_fini(&r);
}

/* ---- endpoints ---------------------------------------------------------------------- */

static void test_endpoints(void)
{
	struct etcd *c;
	struct etcd_watch *w;
	struct etcd_kv kv;
	static struct rec r;
	char eps[256];
	int dead = etcd_run_free_port(), hole;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	uint64_t t0;

	CHECK(etcd_create(&c, "", 1000) == -EINVAL);
	CHECK(etcd_create(&c, "127.0.0.1:2379", 1000) == -EINVAL);
	CHECK(etcd_create(&c, "http://", 1000) == -EINVAL);

	/* nobody listens: refused at once */
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", dead);
	REQUIRE(etcd_create(&c, eps, 2000) == 0);
	t0 = etcd_run_ms();
	CHECK(put_str(c, "/t/e", "x") == -ECONNREFUSED);
	CHECK(etcd_get(c, "/t/e", &kv) == -ECONNREFUSED);
	CHECK(etcd_run_ms() - t0 < 500);
	CHECK(etcd_unreachable(-ECONNREFUSED) && !etcd_unreachable(-ENOENT));
	CHECK(etcd_watch_start(c, "/t/", 0, rec_cb, &r, &w) == -ECONNREFUSED);
	etcd_destroy(c);

	/* a listener that never answers: the timeout */
	hole = socket(AF_INET, SOCK_STREAM, 0);
	REQUIRE(hole >= 0);
	REQUIRE(bind(hole, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(hole, 16) == 0);
	REQUIRE(getsockname(hole, (struct sockaddr *)&a, &alen) == 0);
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", ntohs(a.sin_port));
	REQUIRE(etcd_create(&c, eps, 300) == 0);
	t0 = etcd_run_ms();
	CHECK(put_str(c, "/t/e", "x") == -ETIMEDOUT);
	CHECK(etcd_run_ms() - t0 >= 250 && etcd_run_ms() - t0 < 1500);
	etcd_destroy(c);
	close(hole);

	/* the first endpoint is dead: the second serves, unary and watch */
	rec_init(&r);
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d, %s/", dead, srv.url);
	REQUIRE(etcd_create(&c, eps, 1000) == 0);
	CHECK(put_str(c, "/t/e", "x") == 0);
	CHECK(etcd_get(c, "/t/e", &kv) == 0 && !strcmp(kv.value, "x"));
	etcd_kv_fini(&kv);
	REQUIRE(etcd_watch_start(c, "/t/", 0, rec_cb, &r, &w) == 0);
	CHECK(put_str(c, "/t/e", "y") == 0);
	CHECK(rec_wait(&r, 2, 2000));
	etcd_watch_stop(w);
	CHECK(etcd_delete(c, "/t/e", false) == 1);
	etcd_destroy(c);
	/* and a fresh client starting with a watch: it too moves on to the second */
	REQUIRE(etcd_create(&c, eps, 1000) == 0);
	rec_init(&r);
	REQUIRE(etcd_watch_start(c, "/t/", 0, rec_cb, &r, &w) == 0);
	etcd_watch_stop(w);
	etcd_destroy(c);
	rec_fini(&r);
}

int main(void)
{
	int rc = etcd_run_test_start(&srv, &cl);

	if (rc)
		return rc > 0 ? 0 : 1;
	RUN(test_put_get);
	RUN(test_range_paging);
	RUN(test_delete);
	RUN(test_put_if);
	RUN(test_lease);
	RUN(test_watch_order);
	RUN(test_watch_stop_prompt);
	RUN(test_endpoints);
	RUN(test_watch_compacted);
	RUN(test_watch_pause);
	RUN(test_watch_restart);
	etcd_destroy(cl);
	etcd_proc_stop(&srv);
	return check_summary();
}
