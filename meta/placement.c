/*
 * placement: rendezvous hashing of block entries over members (see placement.h).
 *
 * placement_owners keeps the k best (score, id) pairs in a small array sorted best first,
 * inserting each candidate by one pass: O(n k) with k the replica count (1 to 3), no
 * allocation, so it can run on every lookup.
 */
#include "meta/placement.h"

#include <stdbool.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

uint64_t placement_score(uint64_t node_id, const char *dir, const char *name)
{
	XXH3_state_t st;
	static const char sep = '\0';

	/* dir '\0' name: no two (dir, name) pairs give the same bytes, since names hold no NUL */
	XXH3_64bits_reset_withSeed(&st, node_id);
	XXH3_64bits_update(&st, dir, strlen(dir));
	XXH3_64bits_update(&st, &sep, 1);
	XXH3_64bits_update(&st, name, strlen(name));
	return XXH3_64bits_digest(&st);
}

static bool better(uint64_t sa, uint64_t ida, uint64_t sb, uint64_t idb)
{
	return sa > sb || (sa == sb && ida < idb);
}

size_t placement_owners(const uint64_t *nodes, size_t n, const char *dir, const char *name,
			uint64_t *out, size_t k)
{
	uint64_t scores[16];
	size_t have = 0;

	if (k > sizeof(scores) / sizeof(scores[0]))
		k = sizeof(scores) / sizeof(scores[0]);
	for (size_t i = 0; i < n; i++) {
		uint64_t s = placement_score(nodes[i], dir, name);
		size_t pos = have;

		while (pos > 0 && better(s, nodes[i], scores[pos - 1], out[pos - 1]))
			pos--;
		if (pos >= k)
			continue;
		if (have < k)
			have++;
		memmove(&scores[pos + 1], &scores[pos], (have - 1 - pos) * sizeof(scores[0]));
		memmove(&out[pos + 1], &out[pos], (have - 1 - pos) * sizeof(out[0]));
		scores[pos] = s;
		out[pos] = nodes[i];
	}
	return have;
}
