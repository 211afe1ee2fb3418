/*
 * test_prefix.c: kvc_prefix_hash (fs/prefix.c), the names of token-prefix blocks.
 *
 * Expected names come from two places that share no code with fs/prefix.c: constants printed
 * by `xxhsum -H2` for byte strings built by hand, and a reference chain (ref_chain) that lays
 * out each block's bytes explicitly (shifts, not htole32), hashes them one-shot with
 * XXH3_128bits and prints high64 then low64 as hex, which is the canonical big-endian form.
 */
#include "fs/uapi/kvcache.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static void hex128(XXH128_hash_t h, char out[KVC_HASH_NAME_SIZE])
{
	snprintf(out, KVC_HASH_NAME_SIZE, "%016" PRIx64 "%016" PRIx64, (uint64_t)h.high64,
		 (uint64_t)h.low64);
}

/* The reference: names of the first nblocks full blocks, written into names. */
static void ref_chain(uint64_t seed, uint32_t bt, const uint32_t *tokens, size_t nblocks,
		      char (*names)[KVC_HASH_NAME_SIZE])
{
	unsigned char s[8];
	size_t len = 16 + 4 * (size_t)bt;
	unsigned char *buf = malloc(len);
	XXH128_hash_t h;

	if (!buf)
		abort();
	for (int i = 0; i < 8; i++)
		s[i] = (unsigned char)(seed >> (8 * i));
	h = XXH3_128bits(s, sizeof(s));
	for (size_t b = 0; b < nblocks; b++) {
		put_be64(buf, h.high64);
		put_be64(buf + 8, h.low64);
		for (uint32_t t = 0; t < bt; t++)
			put_le32(buf + 16 + 4 * t, tokens[b * bt + t]);
		h = XXH3_128bits(buf, len);
		hex128(h, names[b]);
	}
	free(buf);
}

static int is_name(const char *s)
{
	if (strlen(s) != 32)
		return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

/* Known answers from `xxhsum -H2` on files holding exactly the chained bytes. */
static void test_known_answers_xxhsum(void)
{
	const uint32_t t1[] = {1, 2, 3, 4, 5, 6, 7, 8};
	const uint32_t t2[] = {0, 0xffffffffu, 7, 42, 100000, 3, 9};
	char names[4][KVC_HASH_NAME_SIZE];

	CHECK(kvc_prefix_hash(0, 4, t1, 8, names, 4) == 2);
	CHECK(!strcmp(names[0], "5f8fd231de4bb239611a50f2bd73760e"));
	CHECK(!strcmp(names[1], "265995f64c8c265653c1d5bc9ec5dc1c"));

	CHECK(kvc_prefix_hash(0x0123456789abcdefull, 3, t2, 7, names, 4) == 2);
	CHECK(!strcmp(names[0], "5405e06a4dae60e79125a77d85f8ae05"));
	CHECK(!strcmp(names[1], "f841774343e831b73f2b340d899c083e"));
}

/* The reference chain agrees with xxhsum too (so the tests below test something). */
static void test_reference_matches_xxhsum(void)
{
	const uint32_t t1[] = {1, 2, 3, 4, 5, 6, 7, 8};
	char names[2][KVC_HASH_NAME_SIZE];

	ref_chain(0, 4, t1, 2, names);
	CHECK(!strcmp(names[0], "5f8fd231de4bb239611a50f2bd73760e"));
	CHECK(!strcmp(names[1], "265995f64c8c265653c1d5bc9ec5dc1c"));
}

/* Many block sizes, including ones longer than fs/prefix.c's conversion buffer. */
static void test_matches_reference(void)
{
	static const uint32_t bts[] = {1, 2, 3, 16, 255, 256, 257, 1000};
	enum { NTOK = 5000 };
	uint32_t *tok = malloc(NTOK * sizeof(*tok));
	char(*got)[KVC_HASH_NAME_SIZE] = calloc(NTOK, KVC_HASH_NAME_SIZE);
	char(*want)[KVC_HASH_NAME_SIZE] = calloc(NTOK, KVC_HASH_NAME_SIZE);
	uint32_t x = 0x9e3779b9u;

	REQUIRE(tok && got && want);
	for (size_t i = 0; i < NTOK; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		tok[i] = x;
	}
	for (size_t k = 0; k < sizeof(bts) / sizeof(bts[0]); k++) {
		uint32_t bt = bts[k];
		size_t nb = NTOK / bt;
		int n = kvc_prefix_hash(42, bt, tok, NTOK, got, NTOK);

		CHECK(n == (int)nb);
		ref_chain(42, bt, tok, nb, want);
		for (size_t i = 0; i < nb; i++) {
			if (strcmp(got[i], want[i])) {
				fprintf(stderr, "block_tokens %u block %zu: got %s want %s\n", bt,
					i, got[i], want[i]);
				CHECK(0);
				break;
			}
			CHECK(is_name(got[i]));
		}
	}
	free(tok);
	free(got);
	free(want);
}

/* A trailing partial block gets no name, and names[] past the count are untouched. */
static void test_partial_block(void)
{
	const uint32_t t[] = {10, 20, 30, 40, 50, 60, 70};
	char names[4][KVC_HASH_NAME_SIZE];
	char want[2][KVC_HASH_NAME_SIZE];

	memset(names, 'x', sizeof(names));
	CHECK(kvc_prefix_hash(7, 3, t, 7, names, 4) == 2);
	ref_chain(7, 3, t, 2, want);
	CHECK(!strcmp(names[0], want[0]));
	CHECK(!strcmp(names[1], want[1]));
	for (size_t i = 0; i < KVC_HASH_NAME_SIZE; i++)
		CHECK(names[2][i] == 'x' && names[3][i] == 'x');

	/* the partial block's tokens do not matter */
	const uint32_t u[] = {10, 20, 30, 40, 50, 60, 99};
	char names2[4][KVC_HASH_NAME_SIZE];

	CHECK(kvc_prefix_hash(7, 3, u, 7, names2, 4) == 2);
	CHECK(!strcmp(names2[0], want[0]) && !strcmp(names2[1], want[1]));

	/* fewer tokens than one block, and no tokens at all: no names */
	memset(names, 'x', sizeof(names));
	CHECK(kvc_prefix_hash(7, 8, t, 7, names, 4) == 0);
	CHECK(kvc_prefix_hash(7, 3, NULL, 0, names, 4) == 0);
	CHECK(names[0][0] == 'x');
}

/* max below the count: at most max names written, the full count returned. */
static void test_max_smaller_than_count(void)
{
	uint32_t t[40];
	char names[6][KVC_HASH_NAME_SIZE];
	char all[10][KVC_HASH_NAME_SIZE];

	for (uint32_t i = 0; i < 40; i++)
		t[i] = i * 2654435761u;
	CHECK(kvc_prefix_hash(1, 4, t, 40, all, 10) == 10);
	memset(names, 'x', sizeof(names));
	CHECK(kvc_prefix_hash(1, 4, t, 40, names, 3) == 10);
	for (int i = 0; i < 3; i++)
		CHECK(!strcmp(names[i], all[i]));
	for (size_t i = 0; i < KVC_HASH_NAME_SIZE; i++)
		CHECK(names[3][i] == 'x');
	/* max 0: only the count, names may be NULL */
	CHECK(kvc_prefix_hash(1, 4, t, 40, NULL, 0) == 10);
	CHECK(kvc_prefix_hash(1, 4, t, 41, NULL, 0) == 10);
	CHECK(kvc_prefix_hash(1, 4, t, 39, NULL, 0) == 9);
}

static void test_block_tokens_zero(void)
{
	const uint32_t t[] = {1, 2, 3};
	char names[2][KVC_HASH_NAME_SIZE];

	CHECK(kvc_prefix_hash(0, 0, t, 3, names, 2) == -EINVAL);
	CHECK(kvc_prefix_hash(0, 0, NULL, 0, NULL, 0) == -EINVAL);
}

static void test_seed_changes_names(void)
{
	const uint32_t t[] = {1, 2, 3, 4, 5, 6};
	char a[3][KVC_HASH_NAME_SIZE], b[3][KVC_HASH_NAME_SIZE], c[3][KVC_HASH_NAME_SIZE];

	CHECK(kvc_prefix_hash(0, 2, t, 6, a, 3) == 3);
	CHECK(kvc_prefix_hash(1, 2, t, 6, b, 3) == 3);
	CHECK(kvc_prefix_hash(1ull << 63, 2, t, 6, c, 3) == 3);
	for (int i = 0; i < 3; i++) {
		CHECK(strcmp(a[i], b[i]));
		CHECK(strcmp(a[i], c[i]));
		CHECK(strcmp(b[i], c[i]));
	}
	/* same inputs, same names */
	CHECK(kvc_prefix_hash(1, 2, t, 6, a, 3) == 3);
	for (int i = 0; i < 3; i++)
		CHECK(!strcmp(a[i], b[i]));
}

/* A name stands for the whole prefix: a prefix's names lead a longer sequence's, and a change
 * in one block changes its name and every later one, never an earlier one. */
static void test_chain(void)
{
	uint32_t t[64];
	char longer[16][KVC_HASH_NAME_SIZE], shorter[16][KVC_HASH_NAME_SIZE];
	char changed[16][KVC_HASH_NAME_SIZE];

	for (uint32_t i = 0; i < 64; i++)
		t[i] = 1000 + i;
	CHECK(kvc_prefix_hash(5, 4, t, 64, longer, 16) == 16);
	for (size_t n = 0; n <= 64; n++) {
		int k = kvc_prefix_hash(5, 4, t, n, shorter, 16);

		CHECK(k == (int)(n / 4));
		for (int i = 0; i < k; i++)
			CHECK(!strcmp(shorter[i], longer[i]));
	}

	t[21] ^= 1; /* block 5 */
	CHECK(kvc_prefix_hash(5, 4, t, 64, changed, 16) == 16);
	for (int i = 0; i < 16; i++) {
		if (i < 5)
			CHECK(!strcmp(changed[i], longer[i]));
		else
			CHECK(strcmp(changed[i], longer[i]));
	}

	/* the same block at another position gets another name */
	for (uint32_t i = 0; i < 64; i++)
		t[i] = 7;
	CHECK(kvc_prefix_hash(5, 4, t, 64, changed, 16) == 16);
	for (int i = 1; i < 16; i++)
		CHECK(strcmp(changed[i], changed[i - 1]));
}

int main(void)
{
	RUN(test_known_answers_xxhsum);
	RUN(test_reference_matches_xxhsum);
	RUN(test_matches_reference);
	RUN(test_partial_block);
	RUN(test_max_smaller_than_count);
	RUN(test_block_tokens_zero);
	RUN(test_seed_changes_names);
	RUN(test_chain);
	return check_summary();
}
