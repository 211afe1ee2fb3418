/*
 * checksum: the XXH3-64 of block payloads, computed with the widest vector unit the CPU has.
 *
 * libxxhash's plain entry points use the baseline instruction set of the build (SSE2 on
 * x86-64: ~20 GB/s here); its dispatching entry points pick AVX2/AVX-512 at run time
 * (~88 GB/s on the same machine) and give the same result. Payload checksums sit on the
 * write path of every block, so they use the latter where it exists. Short keys (names) keep
 * the plain functions: no vector unit helps them.
 */
#ifndef KVC_ENGINE_CHECKSUM_H
#define KVC_ENGINE_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t by value */
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h>
#define KVC_XXH3_64	   XXH3_64bits_dispatch
#define KVC_XXH3_64_UPDATE XXH3_64bits_update_dispatch
#else
#define KVC_XXH3_64	   XXH3_64bits
#define KVC_XXH3_64_UPDATE XXH3_64bits_update
#endif

/* The checksum of a whole payload. */
static inline uint64_t checksum(const void *p, size_t len)
{
	return KVC_XXH3_64(p, len);
}

/* Fold the next len bytes into a running checksum (XXH3_64bits_reset / _digest around it). */
static inline void checksum_update(XXH3_state_t *st, const void *p, size_t len)
{
	(void)KVC_XXH3_64_UPDATE(st, p, len);
}

#endif
