/*
 * libkvcache: zero-copy access to a kvcachefs mount for inference engines.
 *
 * The library maps the node's DRAM pool read-only (read-write for a trusted writer) and
 * talks to the daemon through the ioctls of kvcachefs.h on directory descriptors:
 *
 *   struct kvc *k;             kvc_open("/mnt/kvcache", 0, &k);
 *   struct kvc_dir *d;         kvc_dir_open(k, "llama/rank_0", &d);
 *   n = kvc_lookup(d, names, count);          how many leading blocks exist (one ioctl)
 *   kvc_get(d, name, &b);  use b.data/b.len;  kvc_release(&b);     reads never copy
 *   kvc_reserve(d, name, len, &p);  fill p.data;  kvc_commit(&p, 0);   or kvc_abort(&p)
 *   kvc_put(d, name, buf, len, 0);            one copy, done by the daemon
 *
 * Every function returns 0 (or a count) on success and a negative errno on failure; none
 * prints or exits. A struct kvc and a struct kvc_dir may be shared by threads; a kvc_block or
 * kvc_put belongs to one thread at a time. Pins and reservations belong to the kvc_dir they
 * were made through: kvc_dir_close (or the process dying) releases and aborts them all; the
 * kvc_block and kvc_put structs left over must still be given to kvc_release / kvc_abort
 * (which then only free what the library holds: kvc_commit gives EBADF). Close every kvc_dir
 * before kvc_close: block pointers die with the mapping.
 *
 * Names are file names (1..255 bytes, no '/'). kvc_prefix_hash computes the names the design
 * prescribes for token prefixes; any other naming works as well.
 */
#ifndef KVCACHE_H
#define KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvcachefs.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kvc;
struct kvc_dir;

/* A pinned sealed block: data/len stay valid and unchanged until kvc_release. */
struct kvc_block {
	const void *data; /* inside the read-only pool mapping */
	size_t len;
	uint64_t generation; /* unique to this version of the block */
	uint64_t checksum;   /* XXH3-64 of the payload */
	uint64_t pin;	     /* 0 once released */
	struct kvc_dir *dir;
};

/* A reservation: fill data[0..len) then kvc_commit or kvc_abort. */
struct kvc_put {
	void *data; /* the pool itself (trusted writer) or a library buffer the daemon copies */
	size_t len;
	uint64_t id; /* 0 once committed or aborted */
	struct kvc_dir *dir;
	bool inplace;
};

/* kvc_open flags. */
#define KVC_TRUSTED_WRITER 0x1u /* map the pool read-write: reservations are filled in place */

/* kvc_commit / kvc_put flags. */
#define KVC_NOREPLACE 0x1u /* EEXIST instead of replacing an existing block */

#define KVC_LOOKUP_MAX KVCACHEFS_LOOKUP_MAX /* names per kvc_lookup */
#define KVC_NAME_MAX   255

/* Open a mount: ask the daemon for its pool, map it. ENOTTY: not a kvcachefs mount;
 * EPROTO: the daemon speaks another ABI version; EACCES: no permission on the pool object
 * (read, or read-write with KVC_TRUSTED_WRITER). */
int kvc_open(const char *mountpoint, unsigned flags, struct kvc **out);
void kvc_close(struct kvc *k);
/* What the daemon said about its pool. */
const struct kvcachefs_pool_info *kvc_pool_info(const struct kvc *k);
/* The whole pool mapping, to register it with an RDMA NIC or a GPU runtime: read-only (unless
 * KVC_TRUSTED_WRITER), and nothing a caller could not map itself from the pool object. */
const void *kvc_pool_base(const struct kvc *k, size_t *size);

/* Open a directory of the mount; path is relative to the mountpoint ("" or "." for the
 * root). ENOTDIR, ENOENT as for open(). */
int kvc_dir_open(struct kvc *k, const char *path, struct kvc_dir **out);
/* Release every pin, abort every reservation and GPU buffer made through d, free d. */
void kvc_dir_close(struct kvc_dir *d);
/* The directory's file descriptor (for fstat, or raw ioctls). */
int kvc_dir_fd(const struct kvc_dir *d);

/* How many of names[0..n) are, from the first on, sealed blocks of d: the longest cached
 * prefix. One ioctl when the names fit in one request (always for 32-hex-digit names with a
 * common suffix of up to 15 bytes). E2BIG when n > KVC_LOOKUP_MAX, EINVAL for a bad name. */
int kvc_lookup(struct kvc_dir *d, const char *const *names, size_t n);
/* The same on a directory given by path, without mapping any pool (for tools). */
int kvc_lookup_path(const char *dir, const char *const *names, size_t n);

/* Pin one sealed block. ENOENT: no such block; EBUSY: still being written. */
int kvc_get(struct kvc_dir *d, const char *name, struct kvc_block *b);
/* Pin a batch: b[i] is pinned or has data == NULL and pin == 0, errs[i] (optional) says why
 * (0 or a positive errno). Returns how many were pinned, or a negative errno for a malformed
 * request, with nothing pinned. */
int kvc_get_batch(struct kvc_dir *d, const char *const *names, size_t n, struct kvc_block *b,
		  int *errs);
/* Copy whole sealed blocks into the caller's buffers, the fastest way to load: one request
 * locates up to KVCACHEFS_LOCATE_MAX (600) blocks without pinning them, each block is copied
 * straight from the pool and then checked against its header; a block freed or replaced during the
 * copy is copied again under a pin (or reported ENOENT if it is gone). dst[i] holds cap[i] bytes;
 * len[i] gets the block's size (ERANGE in errs[i] when it does not fit). Returns how many blocks
 * were loaded, errs[i] (optional) saying why the others were not (ENOENT, EBUSY, ERANGE). */
int kvc_load_batch(struct kvc_dir *d, const char *const *names, size_t n, void *const *dst,
		   const size_t *cap, size_t *len, int *errs);
/* Unpin. EINVAL when b is not pinned (released twice). */
int kvc_release(struct kvc_block *b);
/* Unpin n blocks of the same kvc_dir; blocks that are not pinned are skipped. */
int kvc_release_batch(struct kvc_block *b, size_t n);

/* Reserve len bytes for a new block `name` of d. EFBIG: above the daemon's maximum block
 * size; ENOSPC: the pool cannot make room; ENOMEM: no memory for the staging buffer. */
int kvc_reserve(struct kvc_dir *d, const char *name, size_t len, struct kvc_put *p);
/* Seal and publish atomically (replacing an existing block, or EEXIST with KVC_NOREPLACE).
 * EINVAL: not reserved (already committed or aborted). On failure the reservation stays
 * open. */
int kvc_commit(struct kvc_put *p, unsigned flags);
int kvc_abort(struct kvc_put *p);
/* Store buf as block `name` of d: reserve + commit, one copy done by the daemon. */
int kvc_put(struct kvc_dir *d, const char *name, const void *buf, size_t len, unsigned flags);

/*
 * Prefix hashing (see README): h0 = XXH3-128(seed as 8 little-endian bytes);
 * h_i = XXH3-128(h_{i-1} as its 16-byte canonical (big-endian) form || the i-th block of
 * block_tokens tokens as little-endian u32). Each full block gets the name of h_i: 32
 * lowercase hex digits of the canonical form (what `xxhsum -H2` prints). A trailing partial
 * block gets no name. Writes up to max names (33 bytes each, NUL included) and returns the
 * number of full blocks (which may exceed max), or -EINVAL when block_tokens is 0.
 */
#define KVC_HASH_NAME_SIZE 33
int kvc_prefix_hash(uint64_t seed, uint32_t block_tokens, const uint32_t *tokens, size_t ntokens,
		    char (*names)[KVC_HASH_NAME_SIZE], size_t max);

/*
 * GPU (CUDA, loaded with dlopen; nothing needs CUDA to build or run). Without a CUDA runtime
 * or a GPU, each returns -ENODEV.
 *   kvc_gpu_register_pool: register the pool mapping with the CUDA runtime of this process
 *     (page-locked, read-only), so the engine's own cudaMemcpyAsync from kvc_block.data runs
 *     at full speed.
 *   kvc_gpu_register: hand the daemon a GPU buffer of this process by its CUDA IPC memory
 *     handle (cudaIpcGetMemHandle, KVCACHEFS_CUDA_IPC_HANDLE_SIZE bytes, passed by value).
 *   kvc_gpu_load: copy pinned blocks of d into the buffer at the given byte offsets (EINVAL
 *     when a block would run past the buffer's end).
 */
int kvc_gpu_register_pool(struct kvc *k);
int kvc_gpu_register(struct kvc_dir *d, const void *ipc_handle, uint64_t size, int device,
		     uint64_t *id);
int kvc_gpu_load(struct kvc_dir *d, uint64_t id, const struct kvc_block *blocks,
		 const uint64_t *offsets, size_t n);
int kvc_gpu_unregister(struct kvc_dir *d, uint64_t id);

#ifdef __cplusplus
}
#endif

#endif
