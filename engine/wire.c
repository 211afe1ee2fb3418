/*
 * wire: encoding and checking of the frames daemons exchange (see wire.h for the layout).
 *
 * Every multi-byte field is written and read one byte at a time in little-endian order, so
 * the wire format never depends on the host's byte order, alignment or struct padding. The
 * encoders are total (they write whatever they are given); the decoders are the only trust
 * boundary and check every field a peer controls before anyone acts on it:
 *
 *   - a header is valid when its magic matches, its flags are 0, its type is known and its
 *     body length is one the type allows; a frame of another version is refused with -EPROTO
 *     before any other field is read, because another version may give them other meanings.
 *     HELLO is the exception: its header and body layout are frozen across versions, so a
 *     HELLO of any version is checked like ours and returned, for the handshake to answer
 *     with REJECT (EPROTO).
 *   - a body is valid when its size is exact, its reserved fields are zero and its ranges
 *     make sense (1 <= len <= WIRE_MAX_DATA for READ/WRITE, no range that wraps past 2^64).
 *     Opaque bodies (AUTH's proof, READ_DATA, RPC and RPC_REPLY) are only bounded: RPC
 *     bodies by WIRE_MAX_RPC, so a peer cannot make a receiver allocate more than that.
 *
 * Invariant the fuzzer holds us to: whatever decodes re-encodes to the very same bytes
 * (there is one encoding of each valid frame), and wire_frame_decode gives the same answer
 * however a stream is split (a prefix of a valid frame is "need more", never an error that
 * the whole frame would not give).
 *
 * Nothing here allocates or keeps state: safe from any thread, cheap on the hot path.
 */
#include "engine/wire.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Explicit little-endian stores and loads. */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Header: magic 0, version 4, type 6, flags 8, body_len 12, req_id 16, arg 24. */

void wire_hdr_init(struct wire_hdr *h, enum wire_type type, uint32_t body_len, uint64_t req_id,
		   uint64_t arg)
{
	*h = (struct wire_hdr){
	    .magic = WIRE_MAGIC,
	    .version = WIRE_VERSION,
	    .type = (uint16_t)type,
	    .flags = 0,
	    .body_len = body_len,
	    .req_id = req_id,
	    .arg = arg,
	};
}

void wire_hdr_encode(const struct wire_hdr *h, uint8_t out[WIRE_HDR_SIZE])
{
	put32(out + 0, h->magic);
	put16(out + 4, h->version);
	put16(out + 6, h->type);
	put32(out + 8, h->flags);
	put32(out + 12, h->body_len);
	put64(out + 16, h->req_id);
	put64(out + 24, h->arg);
}

/* Whether a header of this type may announce body_len bytes (arg is the header's arg). */
static bool body_len_ok(uint16_t type, uint32_t body_len, uint64_t arg)
{
	switch (type) {
	case WIRE_HELLO:
		return body_len == WIRE_HELLO_SIZE;
	case WIRE_CHALLENGE:
		return body_len == WIRE_CHALLENGE_SIZE;
	case WIRE_AUTH:
		return body_len == WIRE_AUTH_SIZE;
	case WIRE_READ:
		return body_len == WIRE_RW_SIZE;
	case WIRE_SEG_QUERY:
		return body_len == WIRE_SEG_QUERY_SIZE;
	case WIRE_SEG_INFO:
		return body_len == WIRE_SEG_INFO_SIZE;
	case WIRE_READ_DATA:
		/* data only with status 0: a failed read carries nothing */
		return body_len <= WIRE_MAX_DATA && (arg == 0 || body_len == 0);
	case WIRE_RPC:
		return body_len <= WIRE_MAX_RPC;
	case WIRE_RPC_REPLY:
		/* likewise: a failed call carries no reply */
		return body_len <= WIRE_MAX_RPC && (arg == 0 || body_len == 0);
	case WIRE_WRITE:
		return body_len >= WIRE_RW_SIZE && body_len - WIRE_RW_SIZE <= WIRE_MAX_DATA;
	case WIRE_WELCOME:
	case WIRE_REJECT:
	case WIRE_WRITE_ACK:
	case WIRE_PING:
	case WIRE_PONG:
		return body_len == 0;
	default:
		return false;
	}
}

int wire_hdr_decode(const uint8_t in[WIRE_HDR_SIZE], struct wire_hdr *h)
{
	struct wire_hdr d = {
	    .magic = get32(in + 0),
	    .version = get16(in + 4),
	    .type = get16(in + 6),
	    .flags = get32(in + 8),
	    .body_len = get32(in + 12),
	    .req_id = get64(in + 16),
	    .arg = get64(in + 24),
	};

	if (d.magic != WIRE_MAGIC)
		return -EBADMSG;
	if (d.version != WIRE_VERSION && d.type != WIRE_HELLO)
		return -EPROTO;
	if (d.flags != 0 || d.type < 1 || d.type > WIRE_TYPE_MAX)
		return -EBADMSG;
	if (!body_len_ok(d.type, d.body_len, d.arg))
		return -EBADMSG;
	*h = d;
	return 0;
}

/* HELLO: node_id 0, nonce 8, transports 40, zero 44. */

void wire_hello_encode(const struct wire_hello *m, uint8_t out[WIRE_HELLO_SIZE])
{
	put64(out + 0, m->node_id);
	memcpy(out + 8, m->nonce, WIRE_NONCE);
	put32(out + 40, m->transports);
	put32(out + 44, 0);
}

int wire_hello_decode(const uint8_t *in, size_t len, struct wire_hello *m)
{
	if (len != WIRE_HELLO_SIZE || get32(in + 44) != 0)
		return -EBADMSG;
	m->node_id = get64(in + 0);
	memcpy(m->nonce, in + 8, WIRE_NONCE);
	m->transports = get32(in + 40);
	return 0;
}

/* CHALLENGE: node_id 0, nonce 8, proof 40, transports 72, zero 76. */

void wire_challenge_encode(const struct wire_challenge *m, uint8_t out[WIRE_CHALLENGE_SIZE])
{
	put64(out + 0, m->node_id);
	memcpy(out + 8, m->nonce, WIRE_NONCE);
	memcpy(out + 40, m->proof, WIRE_PROOF);
	put32(out + 72, m->transports);
	put32(out + 76, 0);
}

int wire_challenge_decode(const uint8_t *in, size_t len, struct wire_challenge *m)
{
	if (len != WIRE_CHALLENGE_SIZE || get32(in + 76) != 0)
		return -EBADMSG;
	m->node_id = get64(in + 0);
	memcpy(m->nonce, in + 8, WIRE_NONCE);
	memcpy(m->proof, in + 40, WIRE_PROOF);
	m->transports = get32(in + 72);
	return 0;
}

/* READ / WRITE: seg 0, zero 4, off 8, len 16. */

void wire_rw_encode(const struct wire_rw *m, uint8_t out[WIRE_RW_SIZE])
{
	put32(out + 0, m->seg);
	put32(out + 4, 0);
	put64(out + 8, m->off);
	put64(out + 16, m->len);
}

int wire_rw_decode(const uint8_t *in, size_t len, struct wire_rw *m)
{
	uint64_t off, n;

	if (len != WIRE_RW_SIZE || get32(in + 4) != 0)
		return -EBADMSG;
	off = get64(in + 8);
	n = get64(in + 16);
	if (n == 0 || n > WIRE_MAX_DATA || off > UINT64_MAX - n)
		return -EBADMSG;
	m->seg = get32(in + 0);
	m->off = off;
	m->len = n;
	return 0;
}

/* SEG_QUERY: seg 0, zero 4. */

void wire_seg_query_encode(uint32_t seg, uint8_t out[WIRE_SEG_QUERY_SIZE])
{
	put32(out + 0, seg);
	put32(out + 4, 0);
}

int wire_seg_query_decode(const uint8_t *in, size_t len, uint32_t *seg)
{
	if (len != WIRE_SEG_QUERY_SIZE || get32(in + 4) != 0)
		return -EBADMSG;
	*seg = get32(in + 0);
	return 0;
}

/* SEG_INFO: addr 0, len 8, rkey 16, rdma_port 20, zero 22. */

void wire_seg_info_encode(const struct wire_seg_info *m, uint8_t out[WIRE_SEG_INFO_SIZE])
{
	put64(out + 0, m->addr);
	put64(out + 8, m->len);
	put32(out + 16, m->rkey);
	put16(out + 20, m->rdma_port);
	put16(out + 22, 0);
}

int wire_seg_info_decode(const uint8_t *in, size_t len, struct wire_seg_info *m)
{
	uint64_t addr, n;

	if (len != WIRE_SEG_INFO_SIZE || get16(in + 22) != 0)
		return -EBADMSG;
	addr = get64(in + 0);
	n = get64(in + 8);
	if (addr > UINT64_MAX - n) /* a remote range that wraps is nonsense */
		return -EBADMSG;
	m->addr = addr;
	m->len = n;
	m->rkey = get32(in + 16);
	m->rdma_port = get16(in + 20);
	return 0;
}

/* Check a complete body of a valid header, for the types whose body has a structure. */
static int body_check(const struct wire_hdr *h, const uint8_t *body)
{
	union {
		struct wire_hello hello;
		struct wire_challenge challenge;
		struct wire_rw rw;
		struct wire_seg_info seg_info;
		uint32_t seg;
	} u;
	int ret;

	switch (h->type) {
	case WIRE_HELLO:
		return wire_hello_decode(body, h->body_len, &u.hello);
	case WIRE_CHALLENGE:
		return wire_challenge_decode(body, h->body_len, &u.challenge);
	case WIRE_READ:
		return wire_rw_decode(body, h->body_len, &u.rw);
	case WIRE_WRITE:
		/* the header guarantees body_len >= WIRE_RW_SIZE */
		ret = wire_rw_decode(body, WIRE_RW_SIZE, &u.rw);
		if (ret < 0)
			return ret;
		return h->body_len - WIRE_RW_SIZE == u.rw.len ? 0 : -EBADMSG;
	case WIRE_SEG_QUERY:
		return wire_seg_query_decode(body, h->body_len, &u.seg);
	case WIRE_SEG_INFO:
		return wire_seg_info_decode(body, h->body_len, &u.seg_info);
	default:
		return 0; /* AUTH's proof is opaque; READ_DATA's and RPC's bytes are data */
	}
}

long wire_frame_decode(const uint8_t *buf, size_t len, struct wire_hdr *hdr, const uint8_t **body)
{
	struct wire_hdr h;
	int ret;

	if (len < WIRE_HDR_SIZE)
		return 0;
	ret = wire_hdr_decode(buf, &h);
	if (ret < 0)
		return ret;
	if (len - WIRE_HDR_SIZE < h.body_len)
		return 0;
	ret = body_check(&h, buf + WIRE_HDR_SIZE);
	if (ret < 0)
		return ret;
	*hdr = h;
	if (body)
		*body = buf + WIRE_HDR_SIZE;
	return (long)WIRE_HDR_SIZE + (long)h.body_len;
}
