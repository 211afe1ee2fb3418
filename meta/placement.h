/*
 * placement: where a block entry lives in the cluster — rendezvous (highest-random-weight)
 * hashing of (directory, name) over the live members.
 *
 * Every node computes the same answer from the same member list, with no coordination and no
 * table to keep: the owner of an entry is the member with the highest score
 * XXH3-64(directory '\0' name, seed = node id); its replicas are the next ones by score. When
 * a member leaves, only the entries it owned move (to their next candidate, which already
 * holds the replica); when one joins, only the entries it now wins move to it.
 */
#ifndef KVC_META_PLACEMENT_H
#define KVC_META_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

/* The score of node for the entry (dir, name). */
uint64_t placement_score(uint64_t node_id, const char *dir, const char *name);

/* The k best candidates for (dir, name) among nodes[0..n), best first, into out[0..k).
 * Returns how many were written: min(k, n). Ties (equal scores) go to the lower node id.
 * Duplicate ids in nodes are the caller's mistake: they may appear twice. */
size_t placement_owners(const uint64_t *nodes, size_t n, const char *dir, const char *name,
			uint64_t *out, size_t k);

#endif
