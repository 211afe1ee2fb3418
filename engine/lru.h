/*
 * lru: an intrusive least-recently-used list.
 *
 * The store keeps every sealed block that nobody has open on one list, most recently used at
 * the head. A block leaves the list while it is open (open blocks are never evicted) and
 * comes back at the head at its last close, so "recently used" means "recently closed".
 * Nodes are embedded in the caller's structs; nothing here allocates. Not thread-safe: the
 * store's lock protects the list.
 */
#ifndef KVC_ENGINE_LRU_H
#define KVC_ENGINE_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lru_node {
	struct lru_node *prev, *next; /* both NULL when not on a list */
};

struct lru {
	struct lru_node head; /* head.next is the most recent, head.prev the oldest */
	uint64_t count;
};

void lru_init(struct lru *l);
/* Put n (not on any list) at the most-recent end. */
void lru_push(struct lru *l, struct lru_node *n);
/* Put n (not on any list) at the least-recent end: the next to go (cached copies). */
void lru_push_old(struct lru *l, struct lru_node *n);
/* Take n off l; n must be on l. */
void lru_remove(struct lru *l, struct lru_node *n);
/* Move n (on l) to the most-recent end. */
void lru_touch(struct lru *l, struct lru_node *n);
/* The least recently used node, or NULL when l is empty. */
struct lru_node *lru_oldest(const struct lru *l);
static inline bool lru_linked(const struct lru_node *n)
{
	return n->next != NULL;
}

#endif
