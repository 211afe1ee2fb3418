/*
 * save_load.c: how an inference engine uses kvcachefs through libkvcache.
 *
 *   kvcache-example MOUNTPOINT [DIR]
 *
 * Read this file top to bottom: it is the tutorial. It does what an engine's KV offloading
 * connector does for one request:
 *
 *   1. cut the request's tokens into blocks and name each block by its chained prefix hash
 *      (kvc_prefix_hash): the name of block i identifies tokens [0, (i+1)*BLOCK_TOKENS), so
 *      two requests that share a prefix share the blocks of that prefix;
 *   2. ask the daemon, in one call, how many leading blocks are already cached (kvc_lookup);
 *   3. "compute" the KV of the missing blocks (here: bytes derived from the block's name) and
 *      store them (kvc_reserve, fill, kvc_commit);
 *   4. load every block (kvc_get): no copy, the bytes are read straight from the daemon's
 *      shared DRAM pool, mapped read-only into this process; check them; kvc_release.
 *
 * The first run on a fresh mount stores every block; a second run finds them all cached.
 * Blocks are ordinary files too: `ls MOUNTPOINT/DIR` lists them under the names that
 * `kvcachectl hash --block-tokens 16 TOKENS...` prints, and `cat` reads the same bytes.
 *
 * Exit status: 0 when every block was stored or found and read back exactly; 1 otherwise,
 * with one line on stderr saying which call failed and why.
 */
#include <kvcache.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * The shape of the request. Real engines use blocks of 16 to 256 tokens and blocks of a few
 * hundred KiB to a few MiB (layers x heads x head size x tokens x 2 for K and V x dtype size).
 */
#define NBLOCKS	     4
#define BLOCK_TOKENS 16
#define BLOCK_BYTES  (256 * 1024)
#define TOKEN_SEED   42 /* the request's tokens are pseudo-random, from this seed */
#define HASH_SEED    0	/* kvc_prefix_hash's seed: engines sharing a cache must agree on it */
#define DEFAULT_DIR  "example"

/* splitmix64: a tiny deterministic generator, for the tokens and the fake KV bytes. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A token id in a 32000-word vocabulary, like a Llama tokenizer's. */
static void make_tokens(uint32_t *tokens, size_t n)
{
	uint64_t state = TOKEN_SEED;

	for (size_t i = 0; i < n; i++)
		tokens[i] = (uint32_t)((splitmix64(&state) >> 32) % 32000);
}

/*
 * The "KV" of a block. An engine would copy the attention keys and values of the block's
 * tokens out of its GPU cache; here the bytes are a function of the block's name (which
 * stands for its whole prefix), so any later run, or any other program, can check them:
 * splitmix64 seeded with the FNV-1a hash of the name, each output stored little-endian.
 */
static void make_payload(const char *name, uint8_t *buf, size_t len)
{
	uint64_t state = 0xcbf29ce484222325ull;

	for (const char *c = name; *c; c++)
		state = (state ^ (uint8_t)*c) * 0x100000001b3ull;
	for (size_t off = 0; off < len; off += 8) {
		uint64_t v = splitmix64(&state);

		for (size_t b = 0; b < 8 && off + b < len; b++)
			buf[off + b] = (uint8_t)(v >> (8 * b));
	}
}

/* mkdir -p MOUNTPOINT/DIR: libkvcache works inside directories but does not create them
 * (mkdir is a plain file-system call, and rare). */
static int make_dirs(const char *mnt, const char *dir)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%s", mnt, dir);

	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	for (char *p = path + strlen(mnt) + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = c;
		if (c == '\0')
			return 0;
	}
}

static int fail(const char *what, const char *name, int err)
{
	fprintf(stderr, "kvcache-example: %s%s%s: %s\n", what, name ? " " : "", name ? name : "",
		strerror(err < 0 ? -err : err));
	return 1;
}

int main(int argc, char **argv)
{
	const char *mnt, *dir;
	uint32_t tokens[NBLOCKS * BLOCK_TOKENS];
	char names[NBLOCKS][KVC_HASH_NAME_SIZE];
	const char *name_list[NBLOCKS];
	struct kvc *k = NULL;
	struct kvc_dir *d = NULL;
	uint8_t *expect = NULL;
	int hit, stored = 0, verified = 0, ret = 1, rc;

	if (argc < 2 || argc > 3 || argv[1][0] == '-') {
		fprintf(stderr,
			"Usage: kvcache-example MOUNTPOINT [DIR]\n"
			"  stores %d blocks of %d tokens in MOUNTPOINT/DIR (default %s)\n"
			"  unless cached already, then loads and checks them\n",
			NBLOCKS, BLOCK_TOKENS, DEFAULT_DIR);
		return 2;
	}
	mnt = argv[1];
	dir = argc == 3 ? argv[2] : DEFAULT_DIR;

	/*
	 * Step 0: connect. kvc_open asks the daemon where its DRAM pool is and maps it read-only:
	 * from now on kvc_get hands out pointers into that mapping. It fails with ENOTTY when
	 * MOUNTPOINT is not a kvcachefs mount.
	 */
	rc = kvc_open(mnt, 0, &k);
	if (rc < 0)
		return fail("kvc_open", mnt, rc);
	rc = make_dirs(mnt, dir);
	if (rc < 0) {
		fail("mkdir", dir, rc);
		goto out;
	}
	/* Every other call acts on the names of one directory: open it once and keep it. */
	rc = kvc_dir_open(k, dir, &d);
	if (rc < 0) {
		fail("kvc_dir_open", dir, rc);
		goto out;
	}

	/*
	 * Step 1: names. One name per full block of BLOCK_TOKENS tokens; block i's name hashes
	 * block i-1's name with block i's tokens. A trailing partial block gets no name (an engine
	 * recomputes it).
	 */
	make_tokens(tokens, NBLOCKS * BLOCK_TOKENS);
	rc = kvc_prefix_hash(HASH_SEED, BLOCK_TOKENS, tokens, NBLOCKS * BLOCK_TOKENS, names,
			     NBLOCKS);
	if (rc != NBLOCKS) {
		fail("kvc_prefix_hash", NULL, rc < 0 ? rc : -EIO);
		goto out;
	}
	for (int i = 0; i < NBLOCKS; i++)
		name_list[i] = names[i];

	/*
	 * Step 2: the longest cached prefix, in one round trip. Block i is only useful if
	 * blocks 0..i-1 are there too, so the answer is a count, not a set.
	 */
	hit = kvc_lookup(d, name_list, NBLOCKS);
	if (hit < 0) {
		fail("kvc_lookup", NULL, hit);
		goto out;
	}

	expect = malloc(BLOCK_BYTES);
	if (!expect) {
		fail("malloc", NULL, ENOMEM);
		goto out;
	}

	/*
	 * Step 3: store the missing blocks. kvc_reserve gives a buffer of the block's size
	 * (inside the pool itself for a trusted writer, else a library buffer the daemon copies
	 * once); fill it and kvc_commit: the block appears under its name at once, complete, as a
	 * rename() would publish it. Until then nobody sees it. kvc_abort gives the space back
	 * (e.g. when the engine dropped the request); so does exiting without committing.
	 * kvc_put(d, name, buf, len, 0) does the same in one call when the bytes already sit in
	 * a buffer of yours.
	 */
	for (int i = hit; i < NBLOCKS; i++) {
		struct kvc_put p;

		rc = kvc_reserve(d, names[i], BLOCK_BYTES, &p);
		if (rc < 0) {
			fail("kvc_reserve", names[i], rc);
			goto out;
		}
		make_payload(names[i], p.data, p.len);
		rc = kvc_commit(&p, 0);
		if (rc < 0) {
			fail("kvc_commit", names[i], rc);
			kvc_abort(&p);
			goto out;
		}
		stored++;
	}

	/*
	 * Step 4: load. kvc_get pins the block: b.data points into the pool mapping and its
	 * bytes stay exactly as they are until kvc_release, even if another process unlinks or
	 * replaces the block meanwhile, or the pool needs room (pinned blocks are never evicted).
	 * An engine would cudaMemcpyAsync from b.data here. Release promptly: a pinned block
	 * holds pool memory. (A block evicted between the lookup and the get gives ENOENT: an
	 * engine then recomputes from there.)
	 */
	for (int i = 0; i < NBLOCKS; i++) {
		struct kvc_block b;

		rc = kvc_get(d, names[i], &b);
		if (rc < 0) {
			fail("kvc_get", names[i], rc);
			goto out;
		}
		make_payload(names[i], expect, BLOCK_BYTES);
		if (b.len != BLOCK_BYTES || memcmp(b.data, expect, BLOCK_BYTES) != 0) {
			fprintf(stderr,
				"kvcache-example: block %s: %zu bytes read back, %d expected, or "
				"they differ\n",
				names[i], b.len, BLOCK_BYTES);
			kvc_release(&b);
			goto out;
		}
		rc = kvc_release(&b);
		if (rc < 0) {
			fail("kvc_release", names[i], rc);
			goto out;
		}
		verified++;
	}

	printf("kvcache-example: %s/%s: %d blocks of %d tokens (%d KiB each): %d hit, %d stored, "
	       "%d verified\n",
	       mnt, dir, NBLOCKS, BLOCK_TOKENS, BLOCK_BYTES / 1024, hit, stored, verified);
	printf("kvcache-example: last block (the whole prefix): %s\n", names[NBLOCKS - 1]);
	ret = 0;
out:
	/* Closing the directory releases whatever is still pinned or reserved through it. */
	free(expect);
	if (d)
		kvc_dir_close(d);
	kvc_close(k);
	return ret;
}
