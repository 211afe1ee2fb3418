/*
 * lru: an intrusive least-recently-used list (see lru.h).
 *
 * A circular doubly-linked list through a sentinel head: push, remove, touch and oldest are
 * O(1) pointer updates. Invariant: a node is on the list iff its next pointer is non-NULL.
 */
#include "engine/lru.h"

#include <stddef.h>

void lru_init(struct lru *l)
{
	l->head.prev = &l->head;
	l->head.next = &l->head;
	l->count = 0;
}

void lru_push(struct lru *l, struct lru_node *n)
{
	n->prev = &l->head;
	n->next = l->head.next;
	l->head.next->prev = n;
	l->head.next = n;
	l->count++;
}

void lru_push_old(struct lru *l, struct lru_node *n)
{
	n->next = &l->head;
	n->prev = l->head.prev;
	l->head.prev->next = n;
	l->head.prev = n;
	l->count++;
}

void lru_remove(struct lru *l, struct lru_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
	l->count--;
}

void lru_touch(struct lru *l, struct lru_node *n)
{
	lru_remove(l, n);
	lru_push(l, n);
}

struct lru_node *lru_oldest(const struct lru *l)
{
	return l->head.prev == &l->head ? NULL : l->head.prev;
}
