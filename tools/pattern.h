/*
 * pattern: the deterministic bytes kvcache-xfer serves and kvcache-bench checks.
 *
 * Byte o of the pattern of seed is byte o % 8 (little-endian) of a splitmix64 hash of the
 * seed and o / 8, so any range can be produced or checked on its own, by any program: a
 * server fills its segment, a client checks what it read at some offset.
 */
#ifndef KVC_TOOLS_PATTERN_H
#define KVC_TOOLS_PATTERN_H

#include <stdint.h>
#include <string.h>

static inline uint64_t pattern_word(uint64_t seed, uint64_t idx)
{
	uint64_t z = seed * 0xd1342543de82ef95ull + (idx + 1) * 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* buf[i] = the pattern byte at offset off + i. */
static inline void pattern_fill(unsigned char *buf, uint64_t len, uint64_t seed, uint64_t off)
{
	uint64_t i = 0;

	while (i < len) {
		uint64_t w = pattern_word(seed, (off + i) / 8);
		unsigned b = (unsigned)((off + i) % 8);

		if (b == 0 && len - i >= 8) {
			for (int k = 0; k < 8; k++)
				buf[i + (uint64_t)k] = (unsigned char)(w >> (8 * k));
			i += 8;
			continue;
		}
		for (; b < 8 && i < len; b++, i++)
			buf[i] = (unsigned char)(w >> (8 * b));
	}
}

/* Index of the first byte of buf that is not the pattern at off + i, or len if all are. */
static inline uint64_t pattern_mismatch(const unsigned char *buf, uint64_t len, uint64_t seed,
					uint64_t off)
{
	unsigned char chunk[4096];

	for (uint64_t i = 0; i < len; i += sizeof(chunk)) {
		uint64_t n = len - i < sizeof(chunk) ? len - i : sizeof(chunk);

		pattern_fill(chunk, n, seed, off + i);
		if (memcmp(buf + i, chunk, n))
			for (uint64_t k = 0; k < n; k++)
				if (buf[i + k] != chunk[k])
					return i + k;
	}
	return len;
}

#endif
