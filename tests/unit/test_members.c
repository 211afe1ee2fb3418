/*
 * Unit tests of cluster membership (meta/members.c) against a real etcd started by the test
 * (tests/unit/etcd_run.h); SKIP when etcd is not installed.
 *
 * Three members join and see each other (every field) within a second; a second member
 * with a live node id is refused; pool_used updates reach the others, throttled to one
 * write a second; a member whose process is killed (a forked child, SIGKILL: no revoke)
 * disappears after its lease TTL; leave removes a member at once; etcd killed: the table
 * stays (stale), and after etcd restarts everybody catches up; a member cut off (through a
 * proxy) long enough for its lease to expire and for the history it missed to be
 * compacted re-lists, registers again and shows the changes it missed.
 */
#include "meta/etcd.h"
#include "meta/members.h"
#include "tests/unit/check.h"
#include "tests/unit/etcd_run.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct etcd_proc srv;
static struct etcd *cl; /* an observer's client */

struct node {
	struct etcd *c;
	struct members *m;
	atomic_int changes;
	atomic_size_t last_seen; /* members in the snapshot the last on_change took */
};

static void on_change(void *arg, struct members *m)
{
	struct node *nd = arg;
	struct member *list;
	size_t n;

	/* a snapshot from inside the callback must work */
	if (members_snapshot(m, &list, &n) == 0) {
		atomic_store(&nd->last_seen, n);
		free(list);
	}
	atomic_fetch_add(&nd->changes, 1);
}

static struct member member_of(uint64_t id)
{
	struct member mb = {.node_id = id,
			    .transports = MEMBER_TCP | (id % 2 ? MEMBER_RDMA : 0),
			    .pool_size = id << 30,
			    .pool_used = id << 20,
			    .started = 1700000000 + (int64_t)id};

	snprintf(mb.addr, sizeof(mb.addr), "10.0.0.%" PRIu64 ":7%03" PRIu64, id % 250, id % 1000);
	snprintf(mb.version, sizeof(mb.version), "0.1.%" PRIu64, id);
	return mb;
}

/* Join with a client of its own on url. */
static int node_join(struct node *nd, const char *url, uint64_t id, unsigned ttl)
{
	struct member self = member_of(id);
	int rc;

	memset(nd, 0, sizeof(*nd));
	rc = etcd_create(&nd->c, url, 500);
	if (rc)
		return rc;
	rc = members_join(&nd->m, nd->c, "unit", &self, ttl, on_change, nd);
	if (rc) {
		etcd_destroy(nd->c);
		nd->c = NULL;
	}
	return rc;
}

static void node_leave(struct node *nd)
{
	members_leave(nd->m);
	etcd_destroy(nd->c);
	nd->m = NULL;
	nd->c = NULL;
}

/* Whether m's table holds exactly the node ids ids[0..n) (sorted). */
static bool has_exactly(struct members *m, const uint64_t *ids, size_t n)
{
	struct member *list;
	size_t cnt;
	bool ok;

	if (members_snapshot(m, &list, &cnt))
		return false;
	ok = cnt == n;
	for (size_t i = 0; ok && i < n; i++)
		ok = list[i].node_id == ids[i];
	free(list);
	return ok;
}

/* Wait until has_exactly (timeout_ms); returns the time it took, or -1. */
static long wait_exactly(struct members *m, const uint64_t *ids, size_t n, unsigned timeout_ms)
{
	uint64_t t0 = etcd_run_ms();

	while (!has_exactly(m, ids, n)) {
		if (etcd_run_ms() - t0 > timeout_ms)
			return -1;
		etcd_run_sleep_ms(10);
	}
	return (long)(etcd_run_ms() - t0);
}

static bool wait_stale(struct members *m, bool stale, unsigned timeout_ms)
{
	uint64_t t0 = etcd_run_ms();

	while (members_stale(m) != stale) {
		if (etcd_run_ms() - t0 > timeout_ms)
			return false;
		etcd_run_sleep_ms(10);
	}
	return true;
}

static bool find(struct members *m, uint64_t id, struct member *out)
{
	struct member *list;
	size_t n;
	bool found = false;

	if (members_snapshot(m, &list, &n))
		return false;
	for (size_t i = 0; i < n; i++)
		if (list[i].node_id == id) {
			*out = list[i];
			found = true;
		}
	free(list);
	return found;
}

static bool key_exists(uint64_t id)
{
	struct etcd_kv kv;
	char key[96];
	int rc;

	snprintf(key, sizeof(key), "/kvcachefs/unit/members/%016" PRIx64, id);
	rc = etcd_get(cl, key, &kv);
	etcd_kv_fini(&kv);
	return rc == 0;
}

/* ---- the tests ---------------------------------------------------------------------- */

/* First, while the process has no other thread: fork() is safe. */
static void test_dead_member(void)
{
	static const uint64_t both[] = {0x11, 0x12}, alone[] = {0x12};
	struct node a;
	int fds[2];
	char ch = 0;
	pid_t pid;
	long took;
	uint64_t t0, gone;

	REQUIRE(pipe(fds) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct node d;

		close(fds[0]);
		ch = node_join(&d, srv.url, 0x11, 2) == 0 ? 'j' : 'e';
		if (write(fds[1], &ch, 1) != 1)
			_exit(1);
		for (;;)
			pause(); /* until SIGKILL: no revoke, no clean up */
	}
	close(fds[1]);
	CHECK(read(fds[0], &ch, 1) == 1 && ch == 'j');
	close(fds[0]);
	REQUIRE(ch == 'j');

	REQUIRE(node_join(&a, srv.url, 0x12, 3) == 0);
	CHECK(has_exactly(a.m, both, 2)); /* listed at join */
	etcd_run_sleep_ms(2500);	  /* the child keeps its lease alive past its TTL */
	CHECK(has_exactly(a.m, both, 2));

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	t0 = etcd_run_ms();
	took = wait_exactly(a.m, alone, 1, 6000);
	gone = etcd_run_ms() - t0;
	printf("     killed member gone after %llu ms (TTL 2 s)\n", (unsigned long long)gone);
	CHECK(took >= 0);
	CHECK(gone >= 500 && gone <= 4000);
	CHECK(atomic_load(&a.changes) > 0 && atomic_load(&a.last_seen) == 1);
	CHECK(!key_exists(0x11));
	node_leave(&a);
}

static void test_join_see_leave(void)
{
	static const uint64_t all[] = {0x21, 0x22, 0x23}, two[] = {0x21, 0x22};
	struct node n[3];
	struct member mb, want;
	uint64_t t0;
	long took;

	t0 = etcd_run_ms();
	for (int i = 0; i < 3; i++)
		REQUIRE(node_join(&n[i], srv.url, all[i], 3) == 0);
	for (int i = 0; i < 3; i++) {
		took = wait_exactly(n[i].m, all, 3, 1000);
		CHECK(took >= 0);
	}
	printf("     3 members joined and seen by all in %llu ms\n",
	       (unsigned long long)(etcd_run_ms() - t0));
	for (int i = 0; i < 3; i++)
		CHECK(!members_stale(n[i].m));

	/* every field, as seen by another member */
	REQUIRE(find(n[0].m, 0x23, &mb));
	want = member_of(0x23);
	CHECK(mb.node_id == 0x23 && !strcmp(mb.addr, want.addr));
	CHECK(mb.transports == (MEMBER_TCP | MEMBER_RDMA));
	CHECK(mb.pool_size == want.pool_size && mb.pool_used == want.pool_used);
	CHECK(mb.started == want.started && !strcmp(mb.version, want.version));
	CHECK(!mb.self);
	REQUIRE(find(n[0].m, 0x22, &mb));
	CHECK(mb.transports == MEMBER_TCP);
	REQUIRE(find(n[0].m, 0x21, &mb));
	CHECK(mb.self);
	CHECK(atomic_load(&n[0].changes) > 0);
	CHECK(atomic_load(&n[0].last_seen) == 3);

	/* leaving removes at once */
	node_leave(&n[2]);
	CHECK(!key_exists(0x23));
	took = wait_exactly(n[0].m, two, 2, 1000);
	CHECK(took >= 0 && took < 500);
	CHECK(wait_exactly(n[1].m, two, 2, 1000) >= 0);
	node_leave(&n[1]);
	node_leave(&n[0]);
}

static void test_same_id_refused(void)
{
	static const uint64_t one[] = {0x31};
	struct node a, b;
	struct etcd_kv before, after;
	struct member other = member_of(0x31);
	char key[96];

	REQUIRE(node_join(&a, srv.url, 0x31, 3) == 0);
	snprintf(key, sizeof(key), "/kvcachefs/unit/members/%016" PRIx64, (uint64_t)0x31);
	REQUIRE(etcd_get(cl, key, &before) == 0);
	CHECK(node_join(&b, srv.url, 0x31, 3) == -EEXIST);
	/* in another cluster the same id is fine */
	REQUIRE(etcd_create(&b.c, srv.url, 500) == 0);
	CHECK(members_join(&b.m, b.c, "other", &other, 3, NULL, NULL) == 0);
	members_leave(b.m);
	etcd_destroy(b.c);

	REQUIRE(etcd_get(cl, key, &after) == 0);
	CHECK(after.mod_revision == before.mod_revision && after.lease == before.lease);
	etcd_kv_fini(&before);
	etcd_kv_fini(&after);
	CHECK(has_exactly(a.m, one, 1) && !members_stale(a.m));
	node_leave(&a);
}

static void test_invalid(void)
{
	struct member self = member_of(0x41);
	struct members *m;
	struct etcd *dead;
	char url[64];
	uint64_t t0;

	CHECK(members_join(&m, cl, "", &self, 3, NULL, NULL) == -EINVAL);
	CHECK(members_join(&m, cl, "a/b", &self, 3, NULL, NULL) == -EINVAL);
	CHECK(members_join(&m, cl, "x x", &self, 3, NULL, NULL) == -EINVAL);
	CHECK(members_join(&m, cl,
			   "0123456789012345678901234567890123456789012345678901234567890123",
			   &self, 3, NULL, NULL) == -EINVAL);
	self.node_id = 0;
	CHECK(members_join(&m, cl, "unit", &self, 3, NULL, NULL) == -EINVAL);
	self = member_of(0x41);
	self.addr[0] = '\0';
	CHECK(members_join(&m, cl, "unit", &self, 3, NULL, NULL) == -EINVAL);
	self = member_of(0x41);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", etcd_run_free_port());
	REQUIRE(etcd_create(&dead, url, 500) == 0);
	t0 = etcd_run_ms();
	CHECK(etcd_unreachable(members_join(&m, dead, "unit", &self, 3, NULL, NULL)));
	CHECK(etcd_run_ms() - t0 < 500);
	etcd_destroy(dead);
	CHECK(!key_exists(0x41));
}

static void test_update(void)
{
	struct node a, b;
	struct member mb;
	struct etcd_kv kv;
	char key[96];
	uint64_t t0;
	int64_t v0;

	REQUIRE(node_join(&a, srv.url, 0x51, 3) == 0);
	REQUIRE(node_join(&b, srv.url, 0x52, 3) == 0);
	snprintf(key, sizeof(key), "/kvcachefs/unit/members/%016" PRIx64, (uint64_t)0x51);
	REQUIRE(etcd_get(cl, key, &kv) == 0);
	v0 = kv.version;
	etcd_kv_fini(&kv);

	/* the local view at once, the others within ~1 s (the first write waits for the
	 * throttle's second since the join's put) */
	members_update(a.m, 12345);
	REQUIRE(find(a.m, 0x51, &mb));
	CHECK(mb.pool_used == 12345);
	t0 = etcd_run_ms();
	while (!(find(b.m, 0x51, &mb) && mb.pool_used == 12345) && etcd_run_ms() - t0 < 2500)
		etcd_run_sleep_ms(10);
	CHECK(mb.pool_used == 12345);
	printf("     pool_used seen by the other after %llu ms\n",
	       (unsigned long long)(etcd_run_ms() - t0));

	/* 50 updates in half a second: one write a second, the last value wins */
	REQUIRE(etcd_get(cl, key, &kv) == 0);
	v0 = kv.version;
	etcd_kv_fini(&kv);
	for (int i = 1; i <= 50; i++) {
		members_update(a.m, 20000 + (uint64_t)i);
		etcd_run_sleep_ms(10);
	}
	etcd_run_sleep_ms(1600);
	REQUIRE(etcd_get(cl, key, &kv) == 0);
	CHECK(kv.version - v0 >= 1 && kv.version - v0 <= 3);
	CHECK(strstr(kv.value, "\"pool_used\":20050") != NULL);
	etcd_kv_fini(&kv);
	CHECK(find(b.m, 0x51, &mb) && mb.pool_used == 20050);
	node_leave(&b);
	node_leave(&a);
}

static void test_etcd_down(void)
{
	static const uint64_t ab[] = {0x61, 0x62}, abc[] = {0x61, 0x62, 0x63}, ac[] = {0x61, 0x63};
	struct node a, b, c;
	int changes;
	uint64_t t0;

	REQUIRE(node_join(&a, srv.url, 0x61, 3) == 0);
	REQUIRE(node_join(&b, srv.url, 0x62, 3) == 0);
	REQUIRE(wait_exactly(a.m, ab, 2, 1000) >= 0);
	changes = atomic_load(&a.changes);

	etcd_proc_kill(&srv);
	CHECK(wait_stale(a.m, true, 2000));
	CHECK(wait_stale(b.m, true, 2000));
	CHECK(atomic_load(&a.changes) > changes); /* told about it */
	etcd_run_sleep_ms(3500);		  /* longer than the TTL */
	CHECK(members_stale(a.m));
	CHECK(has_exactly(a.m, ab, 2)); /* the last known table */

	REQUIRE(etcd_proc_restart(&srv) == 0);
	t0 = etcd_run_ms();
	CHECK(wait_stale(a.m, false, 5000));
	CHECK(wait_stale(b.m, false, 5000));
	printf("     caught up %llu ms after etcd restarted\n",
	       (unsigned long long)(etcd_run_ms() - t0));
	CHECK(key_exists(0x61) && key_exists(0x62));
	REQUIRE(node_join(&c, srv.url, 0x63, 3) == 0);
	CHECK(wait_exactly(a.m, abc, 3, 1000) >= 0);
	CHECK(wait_exactly(c.m, abc, 3, 1000) >= 0);
	node_leave(&b);
	CHECK(wait_exactly(a.m, ac, 2, 1000) >= 0);
	node_leave(&c);
	node_leave(&a);
}

static void test_cut_off_resync(void)
{
	static const uint64_t abd[] = {0x71, 0x72, 0x74}, abc[] = {0x71, 0x72, 0x73},
			      ab[] = {0x71, 0x72};
	struct tcp_proxy px;
	struct node a, b, c, d;
	struct member mb;
	struct etcd_kv kv;
	int64_t rev;
	uint64_t t0;

	REQUIRE(proxy_start(&px, srv.cport) == 0);
	REQUIRE(node_join(&a, px.url, 0x71, 2) == 0);
	REQUIRE(node_join(&b, srv.url, 0x72, 3) == 0);
	REQUIRE(node_join(&d, srv.url, 0x74, 3) == 0);
	REQUIRE(wait_exactly(a.m, abd, 3, 1000) >= 0);

	proxy_set_down(&px, true);
	CHECK(wait_stale(a.m, true, 2000));
	/* what a misses: an update, a join, a leave, its own lease expiring */
	members_update(b.m, 777);
	REQUIRE(node_join(&c, srv.url, 0x73, 3) == 0);
	node_leave(&d);
	t0 = etcd_run_ms();
	while (key_exists(0x71) && etcd_run_ms() - t0 < 5000)
		etcd_run_sleep_ms(100);
	CHECK(!key_exists(0x71));
	etcd_run_sleep_ms(1200); /* b's throttled write is out */
	REQUIRE(etcd_put(cl, "/unit/marker", "x", 1, 0, &rev) == 0);
	REQUIRE(etcd_compact(cl, rev) == 0);
	CHECK(members_stale(a.m));
	CHECK(has_exactly(a.m, abd, 3)); /* still the old view */

	REQUIRE(proxy_set_down(&px, false) == 0);
	t0 = etcd_run_ms();
	CHECK(wait_stale(a.m, false, 5000));
	CHECK(wait_exactly(a.m, abc, 3, 2000) >= 0);
	printf("     re-listed and registered again %llu ms after the cut\n",
	       (unsigned long long)(etcd_run_ms() - t0));
	CHECK(find(a.m, 0x72, &mb) && mb.pool_used == 777);
	t0 = etcd_run_ms();
	while (!key_exists(0x71) && etcd_run_ms() - t0 < 3000)
		etcd_run_sleep_ms(50);
	CHECK(key_exists(0x71));
	CHECK(wait_exactly(b.m, abc, 3, 2000) >= 0); /* the others see a again */
	node_leave(&c);
	CHECK(wait_exactly(a.m, ab, 2, 1000) >= 0);
	node_leave(&a);
	node_leave(&b);
	proxy_stop(&px);
	CHECK(etcd_get(cl, "/kvcachefs/unit/members/0000000000000071", &kv) == -ENOENT);
	etcd_delete(cl, "/unit/", true);
}

int main(void)
{
	int rc = etcd_run_test_start(&srv, &cl);

	if (rc)
		return rc > 0 ? 0 : 1;
	RUN(test_dead_member);
	RUN(test_join_see_leave);
	RUN(test_same_id_refused);
	RUN(test_invalid);
	RUN(test_update);
	RUN(test_cut_off_resync);
	RUN(test_etcd_down);
	etcd_destroy(cl);
	etcd_proc_stop(&srv);
	return check_summary();
}
