/*
 * htable: an intrusive chained hash table (see htable.h).
 *
 * buckets[] is an array of mask + 1 singly-linked chains, a power of two in size; a node sits
 * on chain hash & mask. Invariants: buckets is NULL iff the table never held a node (or was
 * finished), and then mask == 0; count is the number of nodes on all chains. The array starts
 * at HTABLE_MIN_BUCKETS and doubles when count exceeds the number of buckets; if the larger
 * array cannot be allocated the table keeps the old one and retries on a later insert.
 *
 * Iteration walks the chains in bucket order; *cursor is the index of the next bucket to scan
 * once the current chain (prev's) runs out.
 */
#include "meta/htable.h"

#include <errno.h>
#include <stdlib.h>

#define HTABLE_MIN_BUCKETS 8

void htable_init(struct htable *t)
{
	t->buckets = NULL;
	t->mask = 0;
	t->count = 0;
}

void htable_fini(struct htable *t)
{
	free(t->buckets);
	htable_init(t);
}

/* Double the bucket array and rehash every node. On ENOMEM nothing changes. */
static void htable_grow(struct htable *t)
{
	uint64_t nb = (t->mask + 1) * 2;
	struct hnode **b, *n, *next;

	if (nb > SIZE_MAX / sizeof(*b))
		return;
	b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (uint64_t i = 0; i <= t->mask; i++) {
		for (n = t->buckets[i]; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->mask = nb - 1;
}

int htable_insert(struct htable *t, struct hnode *n)
{
	struct hnode **head;

	if (!t->buckets) {
		t->buckets = calloc(HTABLE_MIN_BUCKETS, sizeof(*t->buckets));
		if (!t->buckets)
			return -ENOMEM;
		t->mask = HTABLE_MIN_BUCKETS - 1;
	}
	head = &t->buckets[n->hash & t->mask];
	n->next = *head;
	*head = n;
	if (++t->count > t->mask + 1)
		htable_grow(t);
	return 0;
}

void htable_remove(struct htable *t, struct hnode *n)
{
	struct hnode **pp = &t->buckets[n->hash & t->mask];

	while (*pp != n)
		pp = &(*pp)->next;
	*pp = n->next;
	n->next = NULL;
	t->count--;
}

struct hnode *htable_find(const struct htable *t, uint64_t hash, htable_eq_fn eq, const void *key)
{
	struct hnode *n;

	if (!t->buckets)
		return NULL;
	for (n = t->buckets[hash & t->mask]; n; n = n->next)
		if (n->hash == hash && eq(n, key))
			return n;
	return NULL;
}

struct hnode *htable_next(const struct htable *t, uint64_t *cursor, struct hnode *prev)
{
	if (prev && prev->next)
		return prev->next;
	if (!t->buckets)
		return NULL;
	for (uint64_t i = *cursor; i <= t->mask; i++) {
		if (t->buckets[i]) {
			*cursor = i + 1;
			return t->buckets[i];
		}
	}
	*cursor = t->mask + 1;
	return NULL;
}
