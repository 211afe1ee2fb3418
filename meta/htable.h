/*
 * htable: an intrusive chained hash table.
 *
 * Nodes are embedded in the caller's structs (struct hnode), carry their own 64-bit hash and
 * are never allocated by the table, so insert and remove cannot fail for lack of memory on
 * the node side; only the bucket array grows (doubling when count > buckets). The bucket
 * array is allocated lazily: an empty table costs no memory beyond the struct, which matters
 * because every directory owns one.
 *
 * Not thread-safe: the caller's lock protects the table and every node in it.
 */
#ifndef KVC_META_HTABLE_H
#define KVC_META_HTABLE_H

#include <stdbool.h>
#include <stdint.h>

struct hnode {
	struct hnode *next;
	uint64_t hash;
};

struct htable {
	struct hnode **buckets; /* NULL until the first insert */
	uint64_t mask;		/* nbuckets - 1 */
	uint64_t count;
};

/* Equality callback for htable_find: does node n hold key? */
typedef bool (*htable_eq_fn)(const struct hnode *n, const void *key);

void htable_init(struct htable *t);
/* Free the bucket array; the nodes belong to the caller. */
void htable_fini(struct htable *t);

/* Insert n (n->hash set by the caller). Duplicates are the caller's business.
 * Returns 0, or -ENOMEM if the first bucket array cannot be allocated (nothing inserted).
 * A failed growth later is not an error: the table keeps working with longer chains. */
int htable_insert(struct htable *t, struct hnode *n);
/* Remove n, which must be in t. */
void htable_remove(struct htable *t, struct hnode *n);
/* First node with this hash for which eq(node, key) holds, or NULL. */
struct hnode *htable_find(const struct htable *t, uint64_t hash, htable_eq_fn eq, const void *key);

/* Iterate: start with *cursor = 0 and prev = NULL; returns the next node or NULL at the end.
 * The table must not change during the walk. */
struct hnode *htable_next(const struct htable *t, uint64_t *cursor, struct hnode *prev);

#endif
