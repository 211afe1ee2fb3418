/*
 * entries: the entry store — the in-memory shard of cluster block entries a daemon owns
 * ("which nodes hold block NAME of directory DIR, at what size and version").
 *
 * Entries are keyed by (dir, name): dir is a path relative to the mount root ("" for the
 * root, "a/b" below it), name one path component. Each entry is one version of a block and
 * the holders (nodes with a copy) of that version; a newer version replaces it, and it goes
 * when its last holder forgets it. Which daemon owns which entries (placement.h) is the
 * caller's business: the store keeps whatever it is given.
 *
 * Thread-safe: one mutex guards everything; every call holds it for its whole duration, so
 * each call is atomic with respect to the others. Callbacks (ents_list, ents_foreach) run
 * under it and must not call back into the store.
 *
 * Functions return 0 (or a count) or a negative errno; -EINVAL for a NULL or empty name, a
 * name longer than 255 bytes or a NULL dir.
 */
#ifndef KVC_META_ENTRIES_H
#define KVC_META_ENTRIES_H

#include <stdbool.h>
#include <stdint.h>

#define ENT_MAX_HOLDERS 8
#define ENT_NAME_MAX	255

struct ents;

/* A node that holds a copy: where in its pool, and the generation of its local block. */
struct ent_holder {
	uint64_t node, offset, generation;
};

/* One version of a block. */
struct ent_info {
	uint64_t size;
	uint64_t version; /* orders versions of one name: larger wins (the caller builds it) */
	int64_t mtime_ns;
	uint32_t mode;
	uint32_t uid, gid; /* the block's owner and group */
	uint8_t replicas;  /* copies asked for (1..ENT_MAX_HOLDERS) */
	uint8_t nholders;
	struct ent_holder holders[ENT_MAX_HOLDERS];
};

/* An empty store. 0 or -ENOMEM. */
int ents_create(struct ents **out);
/* Free the store and every entry in it. NULL is fine. */
void ents_destroy(struct ents *s);

/*
 * Add holder h for (dir, name) at version info->version (info->holders and info->nholders are
 * ignored):
 *  - no entry: create it from info with h as its only holder;
 *  - same version: add h, or refresh it if h->node is already a holder (offset, generation);
 *    the entry's size, mtime, mode and replicas stay as they are;
 *  - newer version: replace the entry; its old holders go to old[] (room for
 *    ENT_MAX_HOLDERS) and their count to *nold so the caller can tell them to drop their copies;
 *  - older version: -ESTALE, nothing changes.
 * old and nold may be NULL; *nold is 0 unless an entry was replaced. cur (may be NULL) gets the
 * entry as it is after the call; on -ESTALE that is the newer entry that won.
 * Errors: -ESTALE; -ENOSPC (same version, already ENT_MAX_HOLDERS holders, h a new node);
 * -EINVAL (also for replicas outside 1..ENT_MAX_HOLDERS); -ENOMEM (nothing changed).
 */
int ents_add(struct ents *s, const char *dir, const char *name, const struct ent_info *info,
	     const struct ent_holder *h, struct ent_holder *old, unsigned *nold,
	     struct ent_info *cur);

/* Copy the entry into *out. 0 or -ENOENT. */
int ents_get(struct ents *s, const char *dir, const char *name, struct ent_info *out);

/* Remove holder node from the entry (generation 0: whatever its generation; otherwise only if
 * it matches); the entry goes with its last holder. 0, or -ENOENT (no such entry or holder). */
int ents_forget(struct ents *s, const char *dir, const char *name, uint64_t node,
		uint64_t generation);

/* Remove the entry if its version is <= version (UINT64_MAX: whatever it is). *out (may be
 * NULL) gets what was removed — the holders to tell — or, on -ESTALE, the newer entry that
 * stays. 0, -ENOENT, or -ESTALE. */
int ents_remove(struct ents *s, const char *dir, const char *name, uint64_t version,
		struct ent_info *out);

/*
 * Page through the entries of dir in increasing ents_name_hash() order: start with
 * *cursor = 0; each call calls fill(arg, name, info) for the names whose hash is >= *cursor,
 * at most max of them, sets *cursor to where the next page starts and *done to whether the
 * directory has nothing more (then *cursor is UINT64_MAX). Returns the count (0 when dir has
 * no entries: *done is true). A page is empty only when it is the last.
 *
 * A page never splits the names of one hash value: it ends before a group that would not fit.
 * The only exception is a first group larger than max on its own (more than max names with one
 * 64-bit hash), which is returned whole rather than never. An entry present through a whole
 * listing is returned exactly once whatever else is added or removed meanwhile; entries
 * added or removed during it may or may not appear.
 * Cost: O(page + empty buckets skipped), which is O(page) expected: the per-directory table
 * keeps its load between 1/4 and 1. -EINVAL for max 0.
 */
typedef void (*ents_fill_fn)(void *arg, const char *name, const struct ent_info *info);
int ents_list(struct ents *s, const char *dir, uint64_t *cursor, unsigned max, bool *done,
	      ents_fill_fn fill, void *arg);

/* Visit every entry, under the lock (one long hold on a big store): fn must not call back into
 * the store; a nonzero return stops the walk and is returned. 0 when the walk completes. */
typedef int (*ents_visit_fn)(void *arg, const char *dir, const char *name,
			     const struct ent_info *info);
int ents_foreach(struct ents *s, ents_visit_fn fn, void *arg);

/* Drop every entry whose dir is dir or below it ("" drops everything). */
void ents_drop_dir(struct ents *s, const char *dir);

/* Move the entries of directory from and of every directory below it to to (and below). When
 * the target already has a name, the higher version stays and the other entry is dropped
 * (its holders are not told). Nothing happens when one of from and to is the other or below
 * it ("" is above everything). Allocation failures leave the affected directory where it was.
 * Placement depends on dir: the moved entries may now belong on other daemons, which is the
 * caller's business (ents_foreach). */
void ents_rename_dir(struct ents *s, const char *from, const char *to);

/* Entries in the store. */
uint64_t ents_count(struct ents *s);

/* The hash ents_list orders by: XXH3-64 of the name. */
uint64_t ents_name_hash(const char *name);

/* Tests only: order s by hash instead of ents_name_hash (to force equal hashes). Call on an
 * empty store, before anything is added. */
void ents_set_hash_for_test(struct ents *s, uint64_t (*hash)(const char *name));

#endif
