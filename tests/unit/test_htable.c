/*
 * Unit tests of meta/htable.c: the lazy bucket array, insert/find/remove, growth, iteration
 * that visits every node once, and chains of equal hashes told apart by the eq callback.
 */
#include "meta/htable.h"
#include "tests/unit/check.h"

#include <stddef.h>
#include <stdlib.h>

struct item {
	uint64_t key;
	int seen;
	struct hnode node;
};

#define ITEM(n) ((struct item *)((char *)(n)-offsetof(struct item, node)))

static bool item_eq(const struct hnode *n, const void *key)
{
	return ITEM(n)->key == *(const uint64_t *)key;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static struct item *find(struct htable *t, uint64_t key)
{
	struct hnode *n = htable_find(t, mix(key), item_eq, &key);

	return n ? ITEM(n) : NULL;
}

static void test_empty(void)
{
	struct htable t;
	uint64_t cursor = 0, key = 1;

	htable_init(&t);
	CHECK(t.buckets == NULL && t.count == 0);
	CHECK(htable_find(&t, 1, item_eq, &key) == NULL);
	CHECK(htable_next(&t, &cursor, NULL) == NULL);
	htable_fini(&t);
	CHECK(t.buckets == NULL);
}

static void test_basic(void)
{
	struct htable t;
	struct item a = {.key = 1}, b = {.key = 2};

	htable_init(&t);
	a.node.hash = mix(a.key);
	b.node.hash = mix(b.key);
	REQUIRE(htable_insert(&t, &a.node) == 0);
	CHECK(t.buckets != NULL && t.count == 1);
	CHECK(t.mask + 1 == 8);
	REQUIRE(htable_insert(&t, &b.node) == 0);
	CHECK(find(&t, 1) == &a);
	CHECK(find(&t, 2) == &b);
	CHECK(find(&t, 3) == NULL);
	htable_remove(&t, &a.node);
	CHECK(t.count == 1);
	CHECK(find(&t, 1) == NULL);
	CHECK(find(&t, 2) == &b);
	htable_remove(&t, &b.node);
	CHECK(t.count == 0 && find(&t, 2) == NULL);
	/* Reinsert after emptying. */
	REQUIRE(htable_insert(&t, &a.node) == 0);
	CHECK(find(&t, 1) == &a);
	htable_fini(&t);
	CHECK(t.buckets == NULL && t.count == 0);
}

#define MANY 20000

static void test_growth_and_iteration(void)
{
	struct htable t;
	struct item *it = calloc(MANY, sizeof(*it));
	uint64_t cursor = 0, visits = 0, last_mask = 0;
	int grows = 0;
	struct hnode *n = NULL;

	REQUIRE(it);
	htable_init(&t);
	for (uint64_t i = 0; i < MANY; i++) {
		it[i].key = i * 7 + 3;
		it[i].node.hash = mix(it[i].key);
		REQUIRE(htable_insert(&t, &it[i].node) == 0);
		/* A power of two, never more nodes than buckets. */
		CHECK((t.mask & (t.mask + 1)) == 0);
		CHECK(t.count <= t.mask + 1);
		if (t.mask != last_mask)
			grows++, last_mask = t.mask;
	}
	CHECK(t.count == MANY);
	CHECK(grows >= 10); /* 8 -> 32768 buckets */
	for (uint64_t i = 0; i < MANY; i++)
		CHECK(find(&t, i * 7 + 3) == &it[i]);
	CHECK(find(&t, 1) == NULL);

	while ((n = htable_next(&t, &cursor, n))) {
		ITEM(n)->seen++;
		visits++;
	}
	CHECK(visits == MANY);
	for (uint64_t i = 0; i < MANY; i++)
		CHECK(it[i].seen == 1);

	/* Remove the even ones; the odd ones stay reachable. */
	for (uint64_t i = 0; i < MANY; i += 2)
		htable_remove(&t, &it[i].node);
	CHECK(t.count == MANY / 2);
	for (uint64_t i = 0; i < MANY; i++)
		CHECK(find(&t, i * 7 + 3) == (i % 2 ? &it[i] : NULL));

	/* A walk that fetches the next node before "freeing" the current one. */
	visits = 0;
	cursor = 0;
	n = htable_next(&t, &cursor, NULL);
	while (n) {
		struct hnode *next = htable_next(&t, &cursor, n);

		ITEM(n)->seen++;
		visits++;
		n = next;
	}
	CHECK(visits == MANY / 2);
	for (uint64_t i = 1; i < MANY; i += 2)
		CHECK(it[i].seen == 2);
	htable_fini(&t);
	free(it);
}

/* Equal hashes share one chain: only eq tells the nodes apart. */
static void test_collisions(void)
{
	struct htable t;
	struct item it[50];
	uint64_t cursor = 0, visits = 0;
	struct hnode *n = NULL;

	htable_init(&t);
	for (int i = 0; i < 50; i++) {
		it[i] = (struct item){.key = (uint64_t)i};
		it[i].node.hash = 42;
		REQUIRE(htable_insert(&t, &it[i].node) == 0);
	}
	for (uint64_t i = 0; i < 50; i++) {
		struct hnode *f = htable_find(&t, 42, item_eq, &i);

		CHECK(f == &it[i].node);
	}
	/* Right key under a wrong hash is not a match. */
	uint64_t k = 7;
	CHECK(htable_find(&t, 43, item_eq, &k) == NULL);
	/* Remove from the middle, the head and the tail of the chain. */
	htable_remove(&t, &it[25].node);
	htable_remove(&t, &it[49].node);
	htable_remove(&t, &it[0].node);
	CHECK(t.count == 47);
	for (uint64_t i = 0; i < 50; i++) {
		struct hnode *f = htable_find(&t, 42, item_eq, &i);

		CHECK(f == (i == 0 || i == 25 || i == 49 ? NULL : &it[i].node));
	}
	while ((n = htable_next(&t, &cursor, n))) {
		ITEM(n)->seen++;
		visits++;
	}
	CHECK(visits == 47);
	for (int i = 0; i < 50; i++)
		CHECK(it[i].seen == (i == 0 || i == 25 || i == 49 ? 0 : 1));
	htable_fini(&t);
}

int main(void)
{
	RUN(test_empty);
	RUN(test_basic);
	RUN(test_growth_and_iteration);
	RUN(test_collisions);
	return check_summary();
}
