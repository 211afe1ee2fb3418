/* Unit tests of meta/placement.c: determinism, order, stability under membership changes and
 * balance. */
#include "meta/placement.h"
#include "tests/unit/check.h"

#include <stdio.h>
#include <string.h>

static void test_owners_are_best_scores(void)
{
	uint64_t nodes[] = {11, 22, 33, 44, 55};
	uint64_t out[5], s[5];
	size_t n = placement_owners(nodes, 5, "dir", "blk", out, 5);

	REQUIRE(n == 5);
	for (int i = 0; i < 5; i++)
		s[i] = placement_score(out[i], "dir", "blk");
	for (int i = 1; i < 5; i++)
		CHECK(s[i - 1] >= s[i]);
	/* every node appears once */
	for (int i = 0; i < 5; i++) {
		int seen = 0;

		for (int j = 0; j < 5; j++)
			seen += out[j] == nodes[i];
		CHECK(seen == 1);
	}
	/* k smaller than n: the prefix of the full order; k larger: n */
	{
		uint64_t two[2], many[8];

		CHECK(placement_owners(nodes, 5, "dir", "blk", two, 2) == 2);
		CHECK(two[0] == out[0] && two[1] == out[1]);
		CHECK(placement_owners(nodes, 5, "dir", "blk", many, 8) == 5);
		CHECK(placement_owners(nodes, 0, "dir", "blk", many, 3) == 0);
	}
}

static void test_input_order_does_not_matter(void)
{
	uint64_t a[] = {1, 2, 3, 4}, b[] = {4, 2, 1, 3}, oa[3], ob[3];

	for (int i = 0; i < 200; i++) {
		char name[48];

		snprintf(name, sizeof(name), "%032x", i);
		placement_owners(a, 4, "x/y", name, oa, 3);
		placement_owners(b, 4, "x/y", name, ob, 3);
		CHECK(memcmp(oa, ob, sizeof(oa)) == 0);
	}
}

static void test_separator_matters(void)
{
	/* ("ab", "c") and ("a", "bc") are different entries */
	int differ = 0;

	for (uint64_t id = 1; id < 50; id++)
		differ += placement_score(id, "ab", "c") != placement_score(id, "a", "bc");
	CHECK(differ > 45);
}

/* Removing a member moves only the entries it owned, to their second candidate. */
static void test_minimal_movement(void)
{
	uint64_t all[] = {101, 202, 303, 404, 505}, rest[] = {101, 202, 404, 505};
	int moved = 0, owned = 0;

	for (int i = 0; i < 5000; i++) {
		char name[48];
		uint64_t before[2], after[1];

		snprintf(name, sizeof(name), "blk%d", i);
		placement_owners(all, 5, "d", name, before, 2);
		placement_owners(rest, 4, "d", name, after, 1);
		if (before[0] == 303) {
			owned++;
			CHECK(after[0] == before[1]); /* the replica holder takes over */
		} else {
			CHECK(after[0] == before[0]);
		}
		moved += after[0] != before[0];
	}
	CHECK(moved == owned);
}

static void test_balance(void)
{
	uint64_t nodes[] = {7, 8, 9};
	int count[3] = {0};

	for (int i = 0; i < 30000; i++) {
		char name[48];
		uint64_t o;

		snprintf(name, sizeof(name), "%032x", i * 2654435761u);
		placement_owners(nodes, 3, "model/rank_0", name, &o, 1);
		count[o - 7]++;
	}
	for (int i = 0; i < 3; i++)
		CHECK(count[i] > 9000 && count[i] < 11000);
}

int main(void)
{
	RUN(test_owners_are_best_scores);
	RUN(test_input_order_does_not_matter);
	RUN(test_separator_matters);
	RUN(test_minimal_movement);
	RUN(test_balance);
	return check_summary();
}
