/*
 * auth: handshake proofs with libsodium (see auth.h and the handshake in wire.h).
 *
 * The key is SHA-256 of the cluster secret, so secrets of any length give a full-size HMAC
 * key and the secret itself is dropped as soon as the key exists. A proof is
 * HMAC-SHA-256(key, role || init nonce || target nonce || init id LE || target id LE): the
 * role byte keeps a target's proof from being replayed as the initiator's (reflection), the
 * two fresh nonces keep any proof from being replayed in another handshake, and the ids bind
 * it to the two nodes. Verification compares in constant time, so a forger learns nothing
 * from how long a refusal takes.
 *
 * No state of its own: libsodium's sodium_init() is idempotent and thread-safe, and the key
 * lives in the caller's struct, which auth_key_clear() wipes.
 */
#include "engine/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_MIN_SECRET 16u
#define AUTH_MSG_SIZE	(1 + 2 * WIRE_NONCE + 2 * 8)

_Static_assert(sizeof(((struct auth_key *)0)->k) == crypto_auth_hmacsha256_KEYBYTES,
	       "auth_key holds an HMAC-SHA-256 key");
_Static_assert(crypto_hash_sha256_BYTES == crypto_auth_hmacsha256_KEYBYTES,
	       "SHA-256 of the secret is the HMAC key");
_Static_assert(WIRE_PROOF == crypto_auth_hmacsha256_BYTES, "a proof is one HMAC-SHA-256");

int auth_key_init(struct auth_key *key, const void *secret, size_t len)
{
	if (!secret || len < AUTH_MIN_SECRET)
		return -EINVAL;
	if (sodium_init() < 0)
		return -EIO;
	crypto_hash_sha256(key->k, secret, len);
	return 0;
}

void auth_key_clear(struct auth_key *key)
{
	sodium_memzero(key->k, sizeof(key->k));
}

void auth_nonce(uint8_t nonce[WIRE_NONCE])
{
	/* libsodium wants sodium_init() before any use (a no-op once done), and a caller may make
	 * a nonce before any key. Its generator opens its source lazily and does not need it, so
	 * the nonce is random even if that call failed (it aborts if no entropy source opens). */
	int ret = sodium_init();

	(void)ret;
	randombytes_buf(nonce, WIRE_NONCE);
}

/* The message a proof authenticates (the layout auth.h documents). */
static void auth_msg(uint8_t msg[AUTH_MSG_SIZE], char role, const uint8_t init_nonce[WIRE_NONCE],
		     const uint8_t target_nonce[WIRE_NONCE], uint64_t init_id, uint64_t target_id)
{
	uint8_t *p = msg;

	*p++ = (uint8_t)role;
	memcpy(p, init_nonce, WIRE_NONCE);
	p += WIRE_NONCE;
	memcpy(p, target_nonce, WIRE_NONCE);
	p += WIRE_NONCE;
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(init_id >> (8 * i));
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(target_id >> (8 * i));
}

void auth_proof(const struct auth_key *key, char role, const uint8_t init_nonce[WIRE_NONCE],
		const uint8_t target_nonce[WIRE_NONCE], uint64_t init_id, uint64_t target_id,
		uint8_t out[WIRE_PROOF])
{
	uint8_t msg[AUTH_MSG_SIZE];

	auth_msg(msg, role, init_nonce, target_nonce, init_id, target_id);
	crypto_auth_hmacsha256(out, msg, sizeof(msg), key->k);
}

bool auth_verify(const struct auth_key *key, char role, const uint8_t init_nonce[WIRE_NONCE],
		 const uint8_t target_nonce[WIRE_NONCE], uint64_t init_id, uint64_t target_id,
		 const uint8_t proof[WIRE_PROOF])
{
	uint8_t msg[AUTH_MSG_SIZE];

	auth_msg(msg, role, init_nonce, target_nonce, init_id, target_id);
	/* crypto_verify_32 inside: constant time */
	return crypto_auth_hmacsha256_verify(proof, msg, sizeof(msg), key->k) == 0;
}

int auth_secret_load(const char *path, uint8_t *buf, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	size_t got = 0;
	ssize_t n;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "secret file %s is not a regular file", path);
		ret = -EINVAL;
		goto out;
	}
	if (st.st_mode & 0004) {
		snprintf(
		    err, errlen,
		    "secret file %s is readable by everyone (mode %04o): refusing it; chmod o-r %s",
		    path, (unsigned)(st.st_mode & 07777), path);
		ret = -EPERM;
		goto out;
	}
	while (got < AUTH_SECRET_MAX + 1) {
		n = read(fd, buf + got, AUTH_SECRET_MAX + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > AUTH_SECRET_MAX) {
		snprintf(err, errlen, "secret file %s: longer than %d bytes", path,
			 AUTH_SECRET_MAX);
		ret = -EFBIG;
		goto out;
	}
	if (got && buf[got - 1] == '\n')
		got--;
	if (got && buf[got - 1] == '\r')
		got--;
	if (got < 16) {
		snprintf(err, errlen,
			 "secret file %s: the secret is %zu bytes, at least 16 are needed", path,
			 got);
		ret = -EINVAL;
		goto out;
	}
	*len = got;
out:
	if (ret)
		sodium_memzero(buf, AUTH_SECRET_MAX + 1);
	close(fd);
	return ret;
}
