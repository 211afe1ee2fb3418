/*
 * auth: proofs of knowing the cluster secret, for the transfer handshake (see wire.h).
 *
 * A proof is HMAC-SHA-256 (libsodium) keyed by SHA-256 of the secret, over
 *   role byte ('T' for the target, 'I' for the initiator) || initiator nonce ||
 *   target nonce || initiator node id (u64 LE) || target node id (u64 LE).
 * Each side proves with fresh nonces of both, so a recorded proof is useless later, and the
 * secret never leaves the node.
 */
#ifndef KVC_ENGINE_AUTH_H
#define KVC_ENGINE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/wire.h"

#define AUTH_SECRET_MAX 4096 /* bytes of a secret file, at most */

/*
 * Read a cluster secret from path into buf (AUTH_SECRET_MAX + 1 bytes), without one trailing
 * newline ("\n" or "\r\n"), into *len. Refuses a file others may read (EPERM), one that is
 * not a regular file (EINVAL), a secret shorter than 16 bytes (EINVAL) or longer than
 * AUTH_SECRET_MAX (EFBIG). On failure err holds one line saying why (path included) and buf
 * is wiped; -errno.
 */
int auth_secret_load(const char *path, uint8_t *buf, size_t *len, char *err, size_t errlen);

struct auth_key {
	uint8_t k[32];
};

/* Initialise libsodium (once) and derive the key. -EINVAL for a secret shorter than 16
 * bytes, -EIO if libsodium cannot start. */
int auth_key_init(struct auth_key *key, const void *secret, size_t len);
/* Wipe the key. */
void auth_key_clear(struct auth_key *key);
/* A fresh random nonce. */
void auth_nonce(uint8_t nonce[WIRE_NONCE]);
void auth_proof(const struct auth_key *key, char role, const uint8_t init_nonce[WIRE_NONCE],
		const uint8_t target_nonce[WIRE_NONCE], uint64_t init_id, uint64_t target_id,
		uint8_t out[WIRE_PROOF]);
/* Constant-time check of a received proof. */
bool auth_verify(const struct auth_key *key, char role, const uint8_t init_nonce[WIRE_NONCE],
		 const uint8_t target_nonce[WIRE_NONCE], uint64_t init_id, uint64_t target_id,
		 const uint8_t proof[WIRE_PROOF]);

#endif
