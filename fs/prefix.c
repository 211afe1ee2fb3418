/*
 * prefix.c: block names for token prefixes (kvc_prefix_hash of libkvcache).
 *
 * An inference engine caches the KV of a token sequence in blocks of block_tokens tokens and
 * needs, for each full block, a file name that stands for the whole prefix up to the block's
 * end, not just the block's own tokens. The names form a hash chain:
 *
 *   h_0 = XXH3-128(seed as 8 little-endian bytes)
 *   h_i = XXH3-128(canonical(h_{i-1}) || tokens of block i as little-endian u32)
 *
 * where canonical() is xxHash's 16-byte big-endian form, and the name of block i is the 32
 * lowercase hex digits of canonical(h_i), i.e. what `xxhsum -H2` prints for the same bytes.
 * What must stay true:
 *   - the bytes hashed depend only on seed and tokens, never on the host's byte order (tokens
 *     are converted to little-endian explicitly), so every node and every language agrees;
 *   - a prefix's names are the leading names of any longer sequence's names (the chain), which
 *     is what lets kvc_lookup find the longest cached prefix by counting leading hits;
 *   - a trailing partial block gets no name: its KV is not a complete block.
 *
 * It sits on the engine's request path, so it allocates nothing: one XXH3 state on the stack,
 * reset once per block, and a small stack buffer for the little-endian tokens.
 */
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack: no malloc, no ENOMEM */
#include <xxhash.h>

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "fs/uapi/kvcache.h"

#ifndef KVC_API
#define KVC_API __attribute__((visibility("default")))
#endif

/* Tokens converted to little-endian per XXH3 update: 1 KiB of stack. */
#define PREFIX_CHUNK_TOKENS 256

static void prefix_name(const XXH128_hash_t *h, char name[KVC_HASH_NAME_SIZE])
{
	static const char hex[] = "0123456789abcdef";
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, *h);
	for (size_t i = 0; i < sizeof(c.digest); i++) {
		name[2 * i] = hex[c.digest[i] >> 4];
		name[2 * i + 1] = hex[c.digest[i] & 0xf];
	}
	name[2 * sizeof(c.digest)] = '\0';
}

/* Feed n tokens to st as little-endian u32, whatever the host's byte order. */
static void prefix_update_tokens(XXH3_state_t *st, const uint32_t *tokens, size_t n)
{
	unsigned char buf[PREFIX_CHUNK_TOKENS * sizeof(uint32_t)];

	while (n) {
		size_t k = n < PREFIX_CHUNK_TOKENS ? n : PREFIX_CHUNK_TOKENS;

		/* On little-endian hosts htole32 is the identity and this is a plain copy. */
		for (size_t j = 0; j < k; j++) {
			uint32_t le = htole32(tokens[j]);

			memcpy(buf + j * sizeof(le), &le, sizeof(le));
		}
		XXH3_128bits_update(st, buf, k * sizeof(uint32_t));
		tokens += k;
		n -= k;
	}
}

KVC_API int kvc_prefix_hash(uint64_t seed, uint32_t block_tokens, const uint32_t *tokens,
			    size_t ntokens, char (*names)[KVC_HASH_NAME_SIZE], size_t max)
{
	XXH3_state_t st;
	XXH128_canonical_t prev;
	XXH128_hash_t h;
	uint64_t seed_le = htole64(seed);
	size_t nblocks, todo;

	if (block_tokens == 0 || (ntokens && !tokens) || (max && !names))
		return -EINVAL;
	nblocks = ntokens / block_tokens;
	if (nblocks > INT_MAX)
		return -EOVERFLOW;
	/* Blocks past max would name nothing: the count alone needs no hashing. */
	todo = nblocks < max ? nblocks : max;
	if (todo == 0)
		return (int)nblocks;

	XXH3_INITSTATE(&st);
	h = XXH3_128bits(&seed_le, sizeof(seed_le));
	for (size_t i = 0; i < todo; i++) {
		XXH128_canonicalFromHash(&prev, h);
		XXH3_128bits_reset(&st);
		XXH3_128bits_update(&st, prev.digest, sizeof(prev.digest));
		prefix_update_tokens(&st, tokens + i * block_tokens, block_tokens);
		h = XXH3_128bits_digest(&st);
		prefix_name(&h, names[i]);
	}
	return (int)nblocks;
}
