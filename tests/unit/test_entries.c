/*
 * Unit tests of meta/entries.c: add (new, same version, newer, older), forget, remove,
 * listing in hash order by pages (equal hashes never split, concurrent churn of other names
 * neither skips nor repeats a name, tables growing and shrinking meanwhile), foreach, and
 * dropping or renaming directories.
 */
#include "meta/entries.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct ent_info info_v(uint64_t version)
{
	return (struct ent_info){
	    .size = 4096, .version = version, .mtime_ns = 77, .mode = 0100644, .replicas = 2};
}

static struct ent_holder holder(uint64_t node, uint64_t gen)
{
	return (struct ent_holder){.node = node, .offset = node * 1000, .generation = gen};
}

static int add(struct ents *s, const char *dir, const char *name, uint64_t version, uint64_t node,
	       uint64_t gen)
{
	struct ent_info info = info_v(version);
	struct ent_holder h = holder(node, gen);

	return ents_add(s, dir, name, &info, &h, NULL, NULL, NULL);
}

static void test_add_get(void)
{
	struct ents *s;
	struct ent_info info = info_v(10), cur, got;
	struct ent_holder h = holder(1, 5), old[ENT_MAX_HOLDERS];
	unsigned nold = 99;

	REQUIRE(ents_create(&s) == 0);
	CHECK(ents_get(s, "d", "x", &got) == -ENOENT);
	CHECK(ents_add(s, "d", "x", &info, &h, old, &nold, &cur) == 0);
	CHECK(nold == 0);
	CHECK(cur.version == 10 && cur.nholders == 1 && cur.holders[0].node == 1);
	REQUIRE(ents_get(s, "d", "x", &got) == 0);
	CHECK(got.size == 4096 && got.version == 10 && got.mtime_ns == 77 && got.mode == 0100644);
	CHECK(got.replicas == 2 && got.nholders == 1);
	CHECK(got.holders[0].node == 1 && got.holders[0].offset == 1000 &&
	      got.holders[0].generation == 5);
	CHECK(ents_get(s, "", "x", &got) == -ENOENT);
	CHECK(ents_get(s, "d", "y", &got) == -ENOENT);
	CHECK(ents_count(s) == 1);

	/* same version: holders accumulate, the same node is refreshed */
	for (uint64_t n = 2; n <= ENT_MAX_HOLDERS; n++)
		CHECK(add(s, "d", "x", 10, n, 6) == 0);
	h = holder(3, 42);
	h.offset = 7;
	CHECK(ents_add(s, "d", "x", &info, &h, old, &nold, &cur) == 0);
	CHECK(nold == 0 && cur.nholders == ENT_MAX_HOLDERS);
	CHECK(cur.holders[2].node == 3 && cur.holders[2].offset == 7 &&
	      cur.holders[2].generation == 42);
	CHECK(add(s, "d", "x", 10, 100, 1) == -ENOSPC);
	CHECK(ents_get(s, "d", "x", &got) == 0 && got.nholders == ENT_MAX_HOLDERS);
	/* metadata of a same-version add does not change the entry */
	info.size = 1;
	h = holder(1, 5);
	CHECK(ents_add(s, "d", "x", &info, &h, NULL, NULL, &cur) == 0 && cur.size == 4096);

	/* newer version: replaced, old holders handed back */
	info = info_v(20);
	info.size = 8192;
	h = holder(9, 1);
	CHECK(ents_add(s, "d", "x", &info, &h, old, &nold, &cur) == 0);
	CHECK(nold == ENT_MAX_HOLDERS);
	for (unsigned i = 0; i < nold; i++)
		CHECK(old[i].node == i + 1);
	CHECK(cur.version == 20 && cur.size == 8192 && cur.nholders == 1 &&
	      cur.holders[0].node == 9);
	CHECK(ents_count(s) == 1);

	/* older version: -ESTALE, nothing changes, cur shows the winner */
	info = info_v(15);
	h = holder(4, 1);
	memset(&cur, 0, sizeof(cur));
	CHECK(ents_add(s, "d", "x", &info, &h, old, &nold, &cur) == -ESTALE);
	CHECK(nold == 0 && cur.version == 20 && cur.nholders == 1);
	CHECK(ents_add(s, "d", "x", &info, &h, NULL, NULL, NULL) == -ESTALE);
	CHECK(ents_get(s, "d", "x", &got) == 0 && got.version == 20 && got.nholders == 1);

	/* bad arguments */
	info = info_v(30);
	CHECK(ents_add(s, "d", "", &info, &h, NULL, NULL, NULL) == -EINVAL);
	CHECK(ents_add(s, "d", NULL, &info, &h, NULL, NULL, NULL) == -EINVAL);
	info.replicas = 0;
	CHECK(ents_add(s, "d", "z", &info, &h, NULL, NULL, NULL) == -EINVAL);
	info.replicas = ENT_MAX_HOLDERS + 1;
	CHECK(ents_add(s, "d", "z", &info, &h, NULL, NULL, NULL) == -EINVAL);
	{
		char longname[ENT_NAME_MAX + 2];

		memset(longname, 'n', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		info.replicas = 1;
		CHECK(ents_add(s, "d", longname, &info, &h, NULL, NULL, NULL) == -EINVAL);
		longname[ENT_NAME_MAX] = '\0';
		CHECK(ents_add(s, "d", longname, &info, &h, NULL, NULL, NULL) == 0);
		CHECK(ents_get(s, "d", longname, &got) == 0);
	}
	CHECK(ents_count(s) == 2);
	ents_destroy(s);
	ents_destroy(NULL);
}

static void test_forget(void)
{
	struct ents *s;
	struct ent_info got;

	REQUIRE(ents_create(&s) == 0);
	CHECK(add(s, "d", "x", 1, 1, 11) == 0);
	CHECK(add(s, "d", "x", 1, 2, 22) == 0);
	CHECK(add(s, "d", "x", 1, 3, 33) == 0);
	CHECK(ents_forget(s, "d", "x", 2, 99) == -ENOENT); /* generation does not match */
	CHECK(ents_forget(s, "d", "x", 7, 0) == -ENOENT);  /* not a holder */
	CHECK(ents_forget(s, "d", "nope", 1, 0) == -ENOENT);
	CHECK(ents_forget(s, "nodir", "x", 1, 0) == -ENOENT);
	CHECK(ents_forget(s, "d", "x", 2, 22) == 0);
	REQUIRE(ents_get(s, "d", "x", &got) == 0);
	CHECK(got.nholders == 2 && got.holders[0].node == 1 && got.holders[1].node == 3);
	CHECK(ents_forget(s, "d", "x", 1, 0) == 0); /* any generation */
	CHECK(ents_forget(s, "d", "x", 1, 0) == -ENOENT);
	CHECK(ents_count(s) == 1);
	CHECK(ents_forget(s, "d", "x", 3, 33) == 0); /* the last holder takes the entry along */
	CHECK(ents_get(s, "d", "x", &got) == -ENOENT);
	CHECK(ents_count(s) == 0);
	/* the directory is gone too, and comes back */
	CHECK(add(s, "d", "x", 5, 1, 1) == 0);
	CHECK(ents_get(s, "d", "x", &got) == 0 && got.version == 5);
	ents_destroy(s);
}

static void test_remove(void)
{
	struct ents *s;
	struct ent_info out;

	REQUIRE(ents_create(&s) == 0);
	CHECK(add(s, "d", "x", 10, 1, 1) == 0);
	CHECK(add(s, "d", "x", 10, 2, 1) == 0);
	CHECK(ents_remove(s, "d", "y", UINT64_MAX, &out) == -ENOENT);
	CHECK(ents_remove(s, "e", "x", UINT64_MAX, &out) == -ENOENT);
	memset(&out, 0, sizeof(out));
	CHECK(ents_remove(s, "d", "x", 9, &out) == -ESTALE);
	CHECK(out.version == 10);
	CHECK(ents_count(s) == 1);
	memset(&out, 0, sizeof(out));
	CHECK(ents_remove(s, "d", "x", 10, &out) == 0);
	CHECK(out.version == 10 && out.nholders == 2 && out.holders[0].node == 1 &&
	      out.holders[1].node == 2);
	CHECK(ents_count(s) == 0);
	CHECK(add(s, "d", "x", 12, 1, 1) == 0);
	CHECK(ents_remove(s, "d", "x", UINT64_MAX, NULL) == 0);
	CHECK(ents_remove(s, "d", "x", UINT64_MAX, NULL) == -ENOENT);
	ents_destroy(s);
}

/* Listing */

struct page {
	char (*names)[64];
	uint64_t *hashes;
	unsigned n, cap;
};

static void page_fill(void *arg, const char *name, const struct ent_info *info)
{
	struct page *p = arg;

	(void)info;
	if (p->n < p->cap)
		snprintf(p->names[p->n], sizeof(p->names[0]), "%s", name);
	p->n++;
}

static void test_list_order_and_pages(void)
{
	enum { N = 5000 };
	static char seen[N];
	struct ents *s;
	struct page p = {.names = calloc(N, 64), .cap = N};
	unsigned sizes[] = {1, 7, 1000, N + 5};

	REQUIRE(p.names);
	REQUIRE(ents_create(&s) == 0);
	for (int i = 0; i < N; i++) {
		char name[32];

		snprintf(name, sizeof(name), "n%d", i);
		CHECK(add(s, "a/b", name, 1, 1, 1) == 0);
		CHECK(add(s, "a", name, 1, 1, 1) == 0); /* another directory: never listed */
	}
	for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint64_t cursor = 0, last = 0;
		bool done = false, first = true;
		unsigned total = 0, pages = 0;

		memset(seen, 0, sizeof(seen));
		while (!done) {
			int n;

			p.n = 0;
			n = ents_list(s, "a/b", &cursor, sizes[k], &done, page_fill, &p);
			REQUIRE(n >= 0 && (unsigned)n == p.n && p.n <= sizes[k]);
			CHECK(n > 0 || done);
			for (unsigned i = 0; i < p.n; i++) {
				uint64_t h = ents_name_hash(p.names[i]);
				int idx = atoi(p.names[i] + 1);

				CHECK(first || h > last);
				first = false;
				last = h;
				REQUIRE(idx >= 0 && idx < N);
				seen[idx]++;
			}
			total += p.n;
			pages++;
			REQUIRE(pages <= N + 1);
		}
		CHECK(total == N);
		for (int i = 0; i < N; i++)
			CHECK(seen[i] == 1);
		CHECK(cursor == UINT64_MAX);
	}
	/* an unknown directory, and max 0 */
	{
		uint64_t cursor = 0;
		bool done = false;

		CHECK(ents_list(s, "zz", &cursor, 10, &done, page_fill, &p) == 0 && done);
		CHECK(ents_list(s, "a/b", &cursor, 0, &done, page_fill, &p) == -EINVAL);
	}
	/* a cursor past the end */
	{
		uint64_t cursor = UINT64_MAX;
		bool done = false;

		p.n = 0;
		CHECK(ents_list(s, "a/b", &cursor, 10, &done, page_fill, &p) <= 1 && done);
	}
	ents_destroy(s);
	free(p.names);
}

/*
 * Forced hashes: "G.J" hashes to G spread over the whole 64-bit range, so each G is a group of
 * equal hashes; "max.J" hashes to UINT64_MAX and "zero.J" to 0 (the ends).
 */
static bool has_prefix(const char *s, const char *prefix)
{
	size_t n = strlen(prefix);

	return strlen(s) >= n && memcmp(s, prefix, n) == 0;
}

static uint64_t group_hash(const char *name)
{
	if (has_prefix(name, "max."))
		return UINT64_MAX;
	if (has_prefix(name, "zero."))
		return 0;
	return (uint64_t)strtoull(name, NULL, 10) * (UINT64_MAX / 512) + 1;
}

static void test_list_never_splits_a_hash(void)
{
	struct ents *s;
	char names[4096][64];
	struct page p = {.names = names, .cap = 4096};
	unsigned total = 0, expect = 0;

	REQUIRE(ents_create(&s) == 0);
	ents_set_hash_for_test(s, group_hash);
	/* groups of 1..5 names; max 4 below */
	for (int g = 0; g < 300; g++) {
		for (int j = 0; j <= g % 5; j++) {
			char name[32];

			snprintf(name, sizeof(name), "%d.%d", g, j);
			CHECK(add(s, "d", name, 1, 1, 1) == 0);
			expect++;
		}
	}
	for (int j = 0; j < 3; j++) {
		char name[32];

		snprintf(name, sizeof(name), "max.%d", j);
		CHECK(add(s, "d", name, 1, 1, 1) == 0);
		snprintf(name, sizeof(name), "zero.%d", j);
		CHECK(add(s, "d", name, 1, 1, 1) == 0);
		expect += 2;
	}
	for (unsigned max = 1; max <= 6; max++) {
		uint64_t cursor = 0, prev_last = 0;
		bool done = false, first = true;

		total = 0;
		while (!done) {
			int n;

			p.n = 0;
			n = ents_list(s, "d", &cursor, max, &done, page_fill, &p);
			REQUIRE(n > 0 || done);
			if (n == 0)
				break;
			/* whole groups only: more than max only for one group alone */
			if ((unsigned)n > max) {
				for (int i = 1; i < n; i++)
					CHECK(group_hash(names[i]) == group_hash(names[0]));
			}
			/* hashes go up, and never repeat from one page to the next */
			CHECK(first || group_hash(names[0]) > prev_last);
			for (int i = 1; i < n; i++)
				CHECK(group_hash(names[i]) >= group_hash(names[i - 1]));
			first = false;
			prev_last = group_hash(names[n - 1]);
			/* the next page starts with another group */
			if (!done)
				CHECK(cursor > prev_last);
			total += n;
		}
		CHECK(total == expect);
	}
	ents_destroy(s);
}

/* 100k names listed in pages of 1000 while another thread adds and removes other names in the
 * same directory, growing and shrinking its table. */
enum { KEEP = 100000 };

struct churn {
	struct ents *s;
	atomic_bool stop;
	unsigned long ops;
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	char name[32];

	while (!atomic_load(&c->stop)) {
		/* to 4x the kept names and back: one doubling or more each way */
		for (int i = 0; i < 3 * KEEP && !atomic_load(&c->stop); i++) {
			snprintf(name, sizeof(name), "tmp%d", i);
			add(c->s, "big", name, 1, 1, 1);
			c->ops++;
		}
		for (int i = 0; i < 3 * KEEP; i++) {
			snprintf(name, sizeof(name), "tmp%d", i);
			ents_remove(c->s, "big", name, UINT64_MAX, NULL);
			c->ops++;
		}
	}
	return NULL;
}

struct tally {
	unsigned char *keep;
	unsigned char *tmp;
	uint64_t last;
	bool any;
	bool order_ok;
};

static void tally_fill(void *arg, const char *name, const struct ent_info *info)
{
	struct tally *t = arg;
	uint64_t h = ents_name_hash(name);

	(void)info;
	if (t->any && h <= t->last)
		t->order_ok = false;
	t->any = true;
	t->last = h;
	if (strncmp(name, "keep", 4) == 0)
		t->keep[atoi(name + 4)]++;
	else
		t->tmp[atoi(name + 3)]++;
}

static void test_list_under_churn(void)
{
	struct ents *s;
	struct churn c = {0};
	struct tally t = {.order_ok = true};
	pthread_t th;
	uint64_t cursor = 0;
	bool done = false;
	unsigned pages = 0;

	t.keep = calloc(KEEP, 1);
	t.tmp = calloc(3 * KEEP, 1);
	REQUIRE(t.keep && t.tmp);
	REQUIRE(ents_create(&s) == 0);
	for (int i = 0; i < KEEP; i++) {
		char name[32];

		snprintf(name, sizeof(name), "keep%d", i);
		CHECK(add(s, "big", name, 1, 1, 1) == 0);
	}
	c.s = s;
	REQUIRE(pthread_create(&th, NULL, churn_main, &c) == 0);
	while (!done) {
		struct timespec ts = {0, 500000};
		int n = ents_list(s, "big", &cursor, 1000, &done, tally_fill, &t);

		CHECK(n >= 0 && n <= 1000);
		pages++;
		nanosleep(&ts, NULL); /* let the churn move in between pages */
	}
	atomic_store(&c.stop, true);
	pthread_join(th, NULL);
	CHECK(t.order_ok);
	for (int i = 0; i < KEEP; i++)
		CHECK(t.keep[i] == 1);
	for (int i = 0; i < 3 * KEEP; i++)
		CHECK(t.tmp[i] <= 1);
	CHECK(pages >= KEEP / 1000);
	CHECK(c.ops > 0);
	printf("     %u pages, %lu concurrent adds/removes\n", pages, c.ops);
	/* after the churn the table shrank back and still lists everything */
	{
		struct tally t2 = {
		    .order_ok = true, .keep = calloc(KEEP, 1), .tmp = calloc(3 * KEEP, 1)};

		REQUIRE(t2.keep && t2.tmp);
		for (int i = 0; i < 3 * KEEP; i++) {
			char name[32];

			snprintf(name, sizeof(name), "tmp%d", i);
			ents_remove(s, "big", name, UINT64_MAX, NULL);
		}
		CHECK(ents_count(s) == KEEP);
		cursor = 0;
		done = false;
		while (!done)
			CHECK(ents_list(s, "big", &cursor, 4096, &done, tally_fill, &t2) >= 0);
		for (int i = 0; i < KEEP; i++)
			CHECK(t2.keep[i] == 1);
		CHECK(t2.order_ok);
		free(t2.keep);
		free(t2.tmp);
	}
	ents_destroy(s);
	free(t.keep);
	free(t.tmp);
}

/* Grow a directory and empty it again: every step keeps every name findable. */
static void test_grow_shrink(void)
{
	enum { N = 20000 };
	struct ents *s;
	struct ent_info got;
	char name[32];

	REQUIRE(ents_create(&s) == 0);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "%d", i);
		CHECK(add(s, "g", name, 1, 1, 1) == 0);
	}
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "%d", i);
		CHECK(ents_remove(s, "g", name, UINT64_MAX, NULL) == 0);
		if (i % 997 == 0) {
			for (int j = i + 1; j < N; j += 101) {
				snprintf(name, sizeof(name), "%d", j);
				CHECK(ents_get(s, "g", name, &got) == 0);
			}
		}
	}
	CHECK(ents_count(s) == 0);
	ents_destroy(s);
}

/* foreach, drop_dir, rename_dir */

struct visit {
	char seen[64][80];
	int n;
	int stop_at;
};

static int visit_fn(void *arg, const char *dir, const char *name, const struct ent_info *info)
{
	struct visit *v = arg;

	(void)info;
	if (v->n < 64)
		snprintf(v->seen[v->n], sizeof(v->seen[0]), "%s|%s|%llu", dir, name,
			 (unsigned long long)info->version);
	v->n++;
	return v->stop_at && v->n == v->stop_at ? 7 : 0;
}

static bool visited(const struct visit *v, const char *what)
{
	for (int i = 0; i < v->n && i < 64; i++)
		if (strcmp(v->seen[i], what) == 0)
			return true;
	return false;
}

static void fill_tree(struct ents *s)
{
	const char *dirs[] = {"", "a", "a/b", "a/b/c", "ab", "x"};

	for (unsigned i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		CHECK(add(s, dirs[i], "f1", 1, 1, 1) == 0);
		CHECK(add(s, dirs[i], "f2", 2, 1, 1) == 0);
	}
}

static void test_foreach(void)
{
	struct ents *s;
	struct visit v = {0};

	REQUIRE(ents_create(&s) == 0);
	CHECK(ents_foreach(s, visit_fn, &v) == 0 && v.n == 0);
	fill_tree(s);
	CHECK(ents_foreach(s, visit_fn, &v) == 0);
	CHECK(v.n == 12);
	CHECK(visited(&v, "|f1|1") && visited(&v, "a/b/c|f2|2") && visited(&v, "ab|f1|1"));
	v = (struct visit){.stop_at = 5};
	CHECK(ents_foreach(s, visit_fn, &v) == 7);
	CHECK(v.n == 5);
	ents_destroy(s);
}

static void test_drop_dir(void)
{
	struct ents *s;
	struct visit v = {0};
	struct ent_info got;

	REQUIRE(ents_create(&s) == 0);
	fill_tree(s);
	ents_drop_dir(s, "a");
	CHECK(ents_count(s) == 6);
	CHECK(ents_foreach(s, visit_fn, &v) == 0 && v.n == 6);
	CHECK(visited(&v, "|f1|1") && visited(&v, "ab|f2|2") && visited(&v, "x|f1|1"));
	CHECK(ents_get(s, "a/b", "f1", &got) == -ENOENT);
	ents_drop_dir(s, "nothing");
	CHECK(ents_count(s) == 6);
	ents_drop_dir(s, "");
	CHECK(ents_count(s) == 0);
	fill_tree(s);
	CHECK(ents_count(s) == 12);
	ents_destroy(s);
}

static void test_rename_dir(void)
{
	struct ents *s;
	struct visit v = {0};
	struct ent_info got;

	REQUIRE(ents_create(&s) == 0);
	fill_tree(s);
	ents_rename_dir(s, "a", "n/m");
	CHECK(ents_count(s) == 12);
	CHECK(ents_foreach(s, visit_fn, &v) == 0 && v.n == 12);
	CHECK(visited(&v, "n/m|f1|1") && visited(&v, "n/m/b|f2|2") && visited(&v, "n/m/b/c|f1|1"));
	CHECK(visited(&v, "ab|f1|1") && visited(&v, "|f2|2"));
	CHECK(ents_get(s, "a", "f1", &got) == -ENOENT);
	CHECK(ents_get(s, "a/b/c", "f1", &got) == -ENOENT);
	CHECK(ents_get(s, "n/m/b/c", "f1", &got) == 0);
	/* the moved entries are listed where they went */
	{
		char names[8][64];
		struct page p = {.names = names, .cap = 8};
		uint64_t cursor = 0;
		bool done;

		CHECK(ents_list(s, "n/m/b", &cursor, 8, &done, page_fill, &p) == 2 && done);
	}

	/* into one's own subtree, or onto an ancestor: nothing happens */
	ents_rename_dir(s, "n", "n/m/z");
	ents_rename_dir(s, "n/m", "n");
	ents_rename_dir(s, "n/m", "");
	CHECK(ents_get(s, "n/m/b", "f1", &got) == 0);
	CHECK(ents_count(s) == 12);

	/* onto a directory that has entries: the higher version of each name stays */
	CHECK(add(s, "y", "f1", 5, 9, 9) == 0); /* newer than x/f1 (1) */
	CHECK(add(s, "y", "f2", 1, 9, 9) == 0); /* older than x/f2 (2) */
	CHECK(add(s, "y", "f3", 1, 9, 9) == 0); /* only in y */
	ents_rename_dir(s, "x", "y");
	CHECK(ents_get(s, "x", "f1", &got) == -ENOENT);
	CHECK(ents_get(s, "y", "f1", &got) == 0 && got.version == 5 && got.holders[0].node == 9);
	CHECK(ents_get(s, "y", "f2", &got) == 0 && got.version == 2 && got.holders[0].node == 1);
	CHECK(ents_get(s, "y", "f3", &got) == 0);
	CHECK(ents_count(s) == 13);
	/* merging a single-entry target that gets replaced */
	CHECK(add(s, "p", "f1", 1, 1, 1) == 0);
	CHECK(add(s, "q", "f1", 2, 1, 1) == 0);
	ents_rename_dir(s, "q", "p");
	CHECK(ents_get(s, "p", "f1", &got) == 0 && got.version == 2);
	CHECK(ents_count(s) == 14);
	/* the root is everybody's ancestor: it cannot be renamed nor be a target */
	ents_rename_dir(s, "", "r");
	ents_rename_dir(s, "ab", "");
	CHECK(ents_count(s) == 14);
	CHECK(ents_get(s, "ab", "f1", &got) == 0);
	CHECK(ents_get(s, "r", "f1", &got) == -ENOENT);
	ents_destroy(s);
}

int main(void)
{
	RUN(test_add_get);
	RUN(test_forget);
	RUN(test_remove);
	RUN(test_list_order_and_pages);
	RUN(test_list_never_splits_a_hash);
	RUN(test_list_under_churn);
	RUN(test_grow_shrink);
	RUN(test_foreach);
	RUN(test_drop_dir);
	RUN(test_rename_dir);
	return check_summary();
}
