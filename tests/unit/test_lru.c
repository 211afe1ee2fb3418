/* Unit tests of engine/lru.c: order, removal from the middle, touch. */
#include "engine/lru.h"
#include "tests/unit/check.h"

#include <stddef.h>

struct item {
	int id;
	struct lru_node node;
};

#define ITEM(n) ((struct item *)((char *)(n)-offsetof(struct item, node)))

static void test_empty(void)
{
	struct lru l;

	lru_init(&l);
	CHECK(lru_oldest(&l) == NULL);
	CHECK(l.count == 0);
}

static void test_order_and_touch(void)
{
	struct lru l;
	struct item it[5] = {{0}};

	lru_init(&l);
	for (int i = 0; i < 5; i++) {
		it[i].id = i;
		CHECK(!lru_linked(&it[i].node));
		lru_push(&l, &it[i].node);
		CHECK(lru_linked(&it[i].node));
	}
	CHECK(l.count == 5);
	CHECK(ITEM(lru_oldest(&l))->id == 0);
	lru_touch(&l, &it[0].node); /* 0 becomes the most recent */
	CHECK(ITEM(lru_oldest(&l))->id == 1);
	lru_remove(&l, &it[2].node); /* from the middle */
	CHECK(!lru_linked(&it[2].node));
	CHECK(l.count == 4);
	int expect[] = {1, 3, 4, 0};
	for (int i = 0; i < 4; i++) {
		struct lru_node *n = lru_oldest(&l);
		REQUIRE(n != NULL);
		CHECK(ITEM(n)->id == expect[i]);
		lru_remove(&l, n);
	}
	CHECK(lru_oldest(&l) == NULL);
	CHECK(l.count == 0);
}

int main(void)
{
	RUN(test_empty);
	RUN(test_order_and_touch);
	return check_summary();
}
