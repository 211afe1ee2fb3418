/*
 * Unit tests of engine/wire.c and engine/auth.c: the byte layout (known answers), round trips
 * of every header and body, every rejection a peer can provoke, the whole-frame decoder over
 * truncated and concatenated buffers, and the handshake proofs (known answers from an
 * independent HMAC, and every input that must change them).
 */
#include "engine/auth.h"
#include "engine/wire.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A body length each type accepts (READ_DATA, WRITE, RPC, RPC_REPLY: one example of their
 * range). */
static uint32_t good_len(int type)
{
	switch (type) {
	case WIRE_HELLO:
		return WIRE_HELLO_SIZE;
	case WIRE_CHALLENGE:
		return WIRE_CHALLENGE_SIZE;
	case WIRE_AUTH:
		return WIRE_AUTH_SIZE;
	case WIRE_READ:
		return WIRE_RW_SIZE;
	case WIRE_READ_DATA:
	case WIRE_RPC:
	case WIRE_RPC_REPLY:
		return 100;
	case WIRE_WRITE:
		return WIRE_RW_SIZE + 100;
	case WIRE_SEG_QUERY:
		return WIRE_SEG_QUERY_SIZE;
	case WIRE_SEG_INFO:
		return WIRE_SEG_INFO_SIZE;
	default:
		return 0;
	}
}

/* Encode a header for type/body_len/arg, then decode it back. */
static int hdr_try(int type, uint32_t body_len, uint64_t arg, struct wire_hdr *out)
{
	struct wire_hdr h;
	uint8_t b[WIRE_HDR_SIZE];

	wire_hdr_init(&h, (enum wire_type)type, body_len, 7, arg);
	wire_hdr_encode(&h, b);
	return wire_hdr_decode(b, out);
}

static void test_hdr_known_answer(void)
{
	static const uint8_t expect[WIRE_HDR_SIZE] = {
	    'K',  'V',	'X',  'F',			    /* magic 0x4658564b, little-endian */
	    0x01, 0x00,					    /* version 1 */
	    0x06, 0x00,					    /* type READ */
	    0x00, 0x00, 0x00, 0x00,			    /* flags */
	    0x18, 0x00, 0x00, 0x00,			    /* body_len 24 */
	    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* req_id */
	    0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* arg */
	};
	struct wire_hdr h, d;
	uint8_t b[WIRE_HDR_SIZE];

	wire_hdr_init(&h, WIRE_READ, WIRE_RW_SIZE, 0x0102030405060708ull, 0x1112131415161718ull);
	CHECK(h.magic == WIRE_MAGIC && h.version == WIRE_VERSION && h.flags == 0);
	wire_hdr_encode(&h, b);
	CHECK(memcmp(b, expect, sizeof(b)) == 0);
	REQUIRE(wire_hdr_decode(expect, &d) == 0);
	CHECK(d.magic == WIRE_MAGIC && d.version == 1 && d.type == WIRE_READ && d.flags == 0);
	CHECK(d.body_len == 24 && d.req_id == 0x0102030405060708ull);
	CHECK(d.arg == 0x1112131415161718ull);
}

static void test_hdr_round_trip(void)
{
	for (int t = 1; t <= WIRE_TYPE_MAX; t++) {
		struct wire_hdr h, d;
		uint8_t b[WIRE_HDR_SIZE];

		wire_hdr_init(&h, (enum wire_type)t, good_len(t), 0xfedcba9876543210ull + t,
			      t == WIRE_READ_DATA || t == WIRE_RPC_REPLY ? 0
									 : 0x8000000000000001ull);
		wire_hdr_encode(&h, b);
		CHECK(wire_hdr_decode(b, &d) == 0);
		CHECK(memcmp(&h, &d, sizeof(h)) == 0);
	}
}

static void test_hdr_rejects(void)
{
	struct wire_hdr h, d;
	uint8_t b[WIRE_HDR_SIZE];

	wire_hdr_init(&h, WIRE_PING, 0, 1, 0);
	wire_hdr_encode(&h, b);
	REQUIRE(wire_hdr_decode(b, &d) == 0);
	for (int i = 0; i < 4; i++) { /* every byte of the magic counts */
		b[i] ^= 0x20;
		CHECK(wire_hdr_decode(b, &d) == -EBADMSG);
		b[i] ^= 0x20;
	}
	for (int i = 8; i < 12; i++) { /* every byte of the flags */
		b[i] = 0x80;
		CHECK(wire_hdr_decode(b, &d) == -EBADMSG);
		b[i] = 0;
	}
	CHECK(hdr_try(0, 0, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_TYPE_MAX + 1, 0, 0, &d) == -EBADMSG);
	CHECK(hdr_try(0xffff, 0, 0, &d) == -EBADMSG);
}

static void test_hdr_body_len(void)
{
	static const int fixed[] = {WIRE_HELLO,	    WIRE_CHALLENGE, WIRE_AUTH,	  WIRE_READ,
				    WIRE_SEG_QUERY, WIRE_SEG_INFO,  WIRE_WELCOME, WIRE_REJECT,
				    WIRE_WRITE_ACK, WIRE_PING,	    WIRE_PONG};
	struct wire_hdr d;

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		int t = fixed[i];
		uint32_t n = good_len(t);

		CHECK(hdr_try(t, n, 0, &d) == 0);
		if (n > 0)
			CHECK(hdr_try(t, n - 1, 0, &d) == -EBADMSG);
		CHECK(hdr_try(t, n + 1, 0, &d) == -EBADMSG);
		CHECK(hdr_try(t, WIRE_MAX_DATA, 0, &d) == -EBADMSG);
		CHECK(hdr_try(t, UINT32_MAX, 0, &d) == -EBADMSG);
	}
	/* READ_DATA: 0..WIRE_MAX_DATA, and nothing but an empty body with a failure status */
	CHECK(hdr_try(WIRE_READ_DATA, 0, 0, &d) == 0);
	CHECK(hdr_try(WIRE_READ_DATA, WIRE_MAX_DATA, 0, &d) == 0);
	CHECK(hdr_try(WIRE_READ_DATA, WIRE_MAX_DATA + 1, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_READ_DATA, UINT32_MAX, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_READ_DATA, 0, EIO, &d) == 0);
	CHECK(d.arg == EIO);
	CHECK(hdr_try(WIRE_READ_DATA, 1, EIO, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_READ_DATA, 1, 1, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_READ_DATA, WIRE_MAX_DATA, UINT64_MAX, &d) == -EBADMSG);
	/* WRITE: WIRE_RW_SIZE..WIRE_RW_SIZE + WIRE_MAX_DATA */
	CHECK(hdr_try(WIRE_WRITE, WIRE_RW_SIZE - 1, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_WRITE, 0, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_WRITE, WIRE_RW_SIZE, 0, &d) == 0);
	CHECK(hdr_try(WIRE_WRITE, WIRE_RW_SIZE + WIRE_MAX_DATA, 0, &d) == 0);
	CHECK(hdr_try(WIRE_WRITE, WIRE_RW_SIZE + WIRE_MAX_DATA + 1, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_WRITE, UINT32_MAX, 0, &d) == -EBADMSG);
	/* RPC: 0..WIRE_MAX_RPC whatever arg says (reserved, like every request's) */
	CHECK(WIRE_MAX_RPC == 1u << 20);
	CHECK(hdr_try(WIRE_RPC, 0, 0, &d) == 0);
	CHECK(hdr_try(WIRE_RPC, 1, 0, &d) == 0);
	CHECK(hdr_try(WIRE_RPC, WIRE_MAX_RPC, 0, &d) == 0);
	CHECK(hdr_try(WIRE_RPC, WIRE_MAX_RPC + 1, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_RPC, WIRE_MAX_DATA, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_RPC, UINT32_MAX, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_RPC, 5, 9, &d) == 0 && d.arg == 9);
	/* RPC_REPLY: like READ_DATA with the RPC bound: a failure status carries no body */
	CHECK(hdr_try(WIRE_RPC_REPLY, 0, 0, &d) == 0);
	CHECK(hdr_try(WIRE_RPC_REPLY, WIRE_MAX_RPC, 0, &d) == 0);
	CHECK(hdr_try(WIRE_RPC_REPLY, WIRE_MAX_RPC + 1, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_RPC_REPLY, UINT32_MAX, 0, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_RPC_REPLY, 0, EOPNOTSUPP, &d) == 0);
	CHECK(d.arg == EOPNOTSUPP && d.body_len == 0);
	CHECK(hdr_try(WIRE_RPC_REPLY, 1, EIO, &d) == -EBADMSG);
	CHECK(hdr_try(WIRE_RPC_REPLY, WIRE_MAX_RPC, UINT64_MAX, &d) == -EBADMSG);
}

static void test_hdr_version(void)
{
	struct wire_hdr h, d;
	uint8_t b[WIRE_HDR_SIZE];

	for (int t = 1; t <= WIRE_TYPE_MAX; t++) {
		wire_hdr_init(&h, (enum wire_type)t, good_len(t), 0, 0);
		h.version = WIRE_VERSION + 1;
		wire_hdr_encode(&h, b);
		memset(&d, 0, sizeof(d));
		if (t == WIRE_HELLO) { /* returned, with its version, for a REJECT */
			CHECK(wire_hdr_decode(b, &d) == 0);
			CHECK(d.version == WIRE_VERSION + 1 && d.type == WIRE_HELLO);
		} else {
			CHECK(wire_hdr_decode(b, &d) == -EPROTO);
		}
		h.version = 0;
		wire_hdr_encode(&h, b);
		CHECK(wire_hdr_decode(b, &d) == (t == WIRE_HELLO ? 0 : -EPROTO));
	}
	/* a HELLO of another version is still checked like ours */
	wire_hdr_init(&h, WIRE_HELLO, WIRE_HELLO_SIZE + 1, 0, 0);
	h.version = 7;
	wire_hdr_encode(&h, b);
	CHECK(wire_hdr_decode(b, &d) == -EBADMSG);
	/* the magic is checked first */
	wire_hdr_init(&h, WIRE_PING, 0, 0, 0);
	h.version = 7;
	h.magic = 0;
	wire_hdr_encode(&h, b);
	CHECK(wire_hdr_decode(b, &d) == -EBADMSG);
}

static void test_hello(void)
{
	struct wire_hello m = {.node_id = 0x0102030405060708ull, .transports = 0x11223344}, d;
	uint8_t b[WIRE_HELLO_SIZE];

	for (int i = 0; i < (int)WIRE_NONCE; i++)
		m.nonce[i] = (uint8_t)(0xa0 + i);
	wire_hello_encode(&m, b);
	CHECK(b[0] == 0x08 && b[7] == 0x01);					 /* node_id LE */
	CHECK(b[8] == 0xa0 && b[39] == 0xa0 + 31);				 /* nonce */
	CHECK(b[40] == 0x44 && b[41] == 0x33 && b[42] == 0x22 && b[43] == 0x11); /* transports */
	CHECK(b[44] == 0 && b[45] == 0 && b[46] == 0 && b[47] == 0);
	memset(&d, 0, sizeof(d));
	REQUIRE(wire_hello_decode(b, sizeof(b), &d) == 0);
	CHECK(d.node_id == m.node_id && d.transports == m.transports);
	CHECK(memcmp(d.nonce, m.nonce, WIRE_NONCE) == 0);
	CHECK(wire_hello_decode(b, sizeof(b) - 1, &d) == -EBADMSG);
	CHECK(wire_hello_decode(b, sizeof(b) + 1, &d) == -EBADMSG);
	CHECK(wire_hello_decode(b, 0, &d) == -EBADMSG);
	for (int i = 44; i < 48; i++) {
		b[i] = 1;
		CHECK(wire_hello_decode(b, sizeof(b), &d) == -EBADMSG);
		b[i] = 0;
	}
}

static void test_challenge(void)
{
	struct wire_challenge m = {.node_id = 42, .transports = 3}, d;
	uint8_t b[WIRE_CHALLENGE_SIZE];

	for (int i = 0; i < (int)WIRE_NONCE; i++)
		m.nonce[i] = (uint8_t)i;
	for (int i = 0; i < (int)WIRE_PROOF; i++)
		m.proof[i] = (uint8_t)(0xff - i);
	wire_challenge_encode(&m, b);
	CHECK(b[0] == 42 && b[8] == 0 && b[39] == 31 && b[40] == 0xff && b[71] == 0xff - 31);
	CHECK(b[72] == 3 && b[76] == 0 && b[79] == 0);
	memset(&d, 0, sizeof(d));
	REQUIRE(wire_challenge_decode(b, sizeof(b), &d) == 0);
	CHECK(d.node_id == 42 && d.transports == 3);
	CHECK(memcmp(d.nonce, m.nonce, WIRE_NONCE) == 0);
	CHECK(memcmp(d.proof, m.proof, WIRE_PROOF) == 0);
	CHECK(wire_challenge_decode(b, sizeof(b) - 1, &d) == -EBADMSG);
	CHECK(wire_challenge_decode(b, sizeof(b) + 1, &d) == -EBADMSG);
	for (int i = 76; i < 80; i++) {
		b[i] = 0x40;
		CHECK(wire_challenge_decode(b, sizeof(b), &d) == -EBADMSG);
		b[i] = 0;
	}
}

static void test_rw(void)
{
	static const uint8_t expect[WIRE_RW_SIZE] = {
	    0xd4, 0xc3, 0xb2, 0xa1, 0,	  0,	0,    0,    /* seg, zero */
	    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, /* off */
	    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, /* len */
	};
	struct wire_rw m = {.seg = 0xa1b2c3d4, .off = 0x8000000000001000ull, .len = WIRE_MAX_DATA};
	struct wire_rw d;
	uint8_t b[WIRE_RW_SIZE];

	wire_rw_encode(&m, b);
	CHECK(memcmp(b, expect, sizeof(b)) == 0);
	memset(&d, 0, sizeof(d));
	REQUIRE(wire_rw_decode(b, sizeof(b), &d) == 0);
	CHECK(d.seg == m.seg && d.off == m.off && d.len == m.len);
	CHECK(wire_rw_decode(b, sizeof(b) - 1, &d) == -EBADMSG);
	CHECK(wire_rw_decode(b, sizeof(b) + 1, &d) == -EBADMSG);
	for (int i = 4; i < 8; i++) {
		b[i] = 1;
		CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);
		b[i] = 0;
	}

	/* len: 1..WIRE_MAX_DATA */
	m.off = 0;
	m.len = 0;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);
	m.len = 1;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == 0 && d.len == 1);
	m.len = WIRE_MAX_DATA + 1ull;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);
	m.len = UINT64_MAX;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);
	m.len = 1ull << 32 | 1; /* a truncation to 32 bits would look valid */
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);

	/* off + len: up to 2^64 exactly, never past it */
	m.len = 4096;
	m.off = UINT64_MAX - 4096;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == 0 && d.off == UINT64_MAX - 4096);
	m.off = UINT64_MAX - 4095;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);
	m.off = UINT64_MAX;
	wire_rw_encode(&m, b);
	CHECK(wire_rw_decode(b, sizeof(b), &d) == -EBADMSG);
}

static void test_seg_query(void)
{
	uint8_t b[WIRE_SEG_QUERY_SIZE];
	uint32_t seg = 0;

	wire_seg_query_encode(0x01020304, b);
	CHECK(b[0] == 4 && b[1] == 3 && b[2] == 2 && b[3] == 1);
	CHECK(b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 0);
	REQUIRE(wire_seg_query_decode(b, sizeof(b), &seg) == 0);
	CHECK(seg == 0x01020304);
	CHECK(wire_seg_query_decode(b, sizeof(b) - 1, &seg) == -EBADMSG);
	CHECK(wire_seg_query_decode(b, sizeof(b) + 1, &seg) == -EBADMSG);
	for (int i = 4; i < 8; i++) {
		b[i] = 0xff;
		CHECK(wire_seg_query_decode(b, sizeof(b), &seg) == -EBADMSG);
		b[i] = 0;
	}
}

static void test_seg_info(void)
{
	struct wire_seg_info m = {.addr = 0x00007f0012345000ull,
				  .len = 1ull << 30,
				  .rkey = 0xdeadbeef,
				  .rdma_port = 4791};
	struct wire_seg_info d;
	uint8_t b[WIRE_SEG_INFO_SIZE];

	wire_seg_info_encode(&m, b);
	CHECK(b[0] == 0x00 && b[1] == 0x50 && b[2] == 0x34 && b[5] == 0x7f); /* addr */
	CHECK(b[11] == 0x40);						     /* len 2^30 */
	CHECK(b[16] == 0xef && b[19] == 0xde);				     /* rkey */
	CHECK(b[20] == (4791 & 0xff) && b[21] == 4791 >> 8);		     /* port */
	CHECK(b[22] == 0 && b[23] == 0);
	memset(&d, 0, sizeof(d));
	REQUIRE(wire_seg_info_decode(b, sizeof(b), &d) == 0);
	CHECK(d.addr == m.addr && d.len == m.len && d.rkey == m.rkey);
	CHECK(d.rdma_port == m.rdma_port);
	CHECK(wire_seg_info_decode(b, sizeof(b) - 1, &d) == -EBADMSG);
	CHECK(wire_seg_info_decode(b, sizeof(b) + 1, &d) == -EBADMSG);
	for (int i = 22; i < 24; i++) {
		b[i] = 1;
		CHECK(wire_seg_info_decode(b, sizeof(b), &d) == -EBADMSG);
		b[i] = 0;
	}
	/* an all-zero answer (the status says why) is valid; a range that wraps is not */
	memset(b, 0, sizeof(b));
	CHECK(wire_seg_info_decode(b, sizeof(b), &d) == 0 && d.addr == 0 && d.len == 0);
	m.addr = UINT64_MAX - 10;
	m.len = 10;
	wire_seg_info_encode(&m, b);
	CHECK(wire_seg_info_decode(b, sizeof(b), &d) == 0);
	m.len = 11;
	wire_seg_info_encode(&m, b);
	CHECK(wire_seg_info_decode(b, sizeof(b), &d) == -EBADMSG);
}

/* Build a frame: header + body into buf; returns its size. */
static size_t frame(uint8_t *buf, int type, const void *body, uint32_t body_len, uint64_t req_id,
		    uint64_t arg)
{
	struct wire_hdr h;

	wire_hdr_init(&h, (enum wire_type)type, body_len, req_id, arg);
	wire_hdr_encode(&h, buf);
	if (body_len)
		memcpy(buf + WIRE_HDR_SIZE, body, body_len);
	return WIRE_HDR_SIZE + body_len;
}

/* Every strict prefix of a frame asks for more; the whole frame gives want. */
static void check_prefixes(const uint8_t *buf, size_t n, long want)
{
	struct wire_hdr h;
	const uint8_t *body;

	for (size_t k = 0; k < n; k++)
		CHECK(wire_frame_decode(buf, k, &h, &body) == 0);
	CHECK(wire_frame_decode(buf, n, &h, &body) == want);
}

static void test_frame_each_type(void)
{
	uint8_t buf[1024], body[WIRE_CHALLENGE_SIZE + 64] = {0};
	struct wire_hello hello = {.node_id = 1, .transports = 1};
	struct wire_challenge ch = {.node_id = 2, .transports = 3};
	struct wire_rw rw = {.seg = 1, .off = 4096, .len = 5};
	struct wire_seg_info si = {.addr = 0x1000, .len = 0x2000, .rkey = 9, .rdma_port = 1};
	struct wire_hdr h;
	const uint8_t *b;
	size_t n;

	for (int t = 1; t <= WIRE_TYPE_MAX; t++) {
		uint32_t len = 0;

		memset(body, 0, sizeof(body));
		switch (t) {
		case WIRE_HELLO:
			wire_hello_encode(&hello, body);
			len = WIRE_HELLO_SIZE;
			break;
		case WIRE_CHALLENGE:
			wire_challenge_encode(&ch, body);
			len = WIRE_CHALLENGE_SIZE;
			break;
		case WIRE_AUTH:
			memset(body, 0x5a, WIRE_AUTH_SIZE);
			len = WIRE_AUTH_SIZE;
			break;
		case WIRE_READ:
			wire_rw_encode(&rw, body);
			len = WIRE_RW_SIZE;
			break;
		case WIRE_READ_DATA:
			memcpy(body, "hello", 5);
			len = 5;
			break;
		case WIRE_WRITE:
			wire_rw_encode(&rw, body);
			memcpy(body + WIRE_RW_SIZE, "world", 5);
			len = WIRE_RW_SIZE + 5;
			break;
		case WIRE_SEG_QUERY:
			wire_seg_query_encode(77, body);
			len = WIRE_SEG_QUERY_SIZE;
			break;
		case WIRE_SEG_INFO:
			wire_seg_info_encode(&si, body);
			len = WIRE_SEG_INFO_SIZE;
			break;
		case WIRE_RPC:
			memcpy(body, "request", 7);
			len = 7;
			break;
		case WIRE_RPC_REPLY:
			memcpy(body, "reply", 5);
			len = 5;
			break;
		}
		n = frame(buf, t, body, len, 1000 + t, 0);
		check_prefixes(buf, n, (long)n);
		memset(&h, 0, sizeof(h));
		b = NULL;
		REQUIRE(wire_frame_decode(buf, n, &h, &b) == (long)n);
		CHECK(h.type == t && h.body_len == len && h.req_id == 1000u + t);
		CHECK(b == buf + WIRE_HDR_SIZE);
		/* trailing bytes (the next frame) are not part of this one */
		memset(buf + n, 0xee, 64);
		CHECK(wire_frame_decode(buf, n + 64, &h, &b) == (long)n);
		/* a body of the wrong size for the type never gets as far as the body */
		if (len > 0 && t != WIRE_READ_DATA && t != WIRE_WRITE && t != WIRE_RPC &&
		    t != WIRE_RPC_REPLY) {
			frame(buf, t, body, len - 1, 0, 0);
			CHECK(wire_frame_decode(buf, sizeof(buf), &h, &b) == -EBADMSG);
		}
	}
}

static void test_frame_rejects(void)
{
	uint8_t buf[256], body[64] = {0};
	struct wire_rw rw = {.seg = 1, .off = 0, .len = 8};
	struct wire_hdr h;
	const uint8_t *b;
	size_t n;

	/* a bad header is refused as soon as the header is there, whatever follows */
	n = frame(buf, WIRE_PING, NULL, 0, 0, 0);
	buf[0] ^= 1;
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);
	CHECK(wire_frame_decode(buf, n - 1, &h, &b) == 0);
	wire_hdr_init(&h, WIRE_READ_DATA, 1000, 0, 0);
	h.version = 2;
	wire_hdr_encode(&h, buf);
	CHECK(wire_frame_decode(buf, WIRE_HDR_SIZE, &h, &b) == -EPROTO);

	/* a structured body is checked: READ reserved field, len 0, HELLO/SEG_* zeros */
	wire_rw_encode(&rw, body);
	body[5] = 1;
	n = frame(buf, WIRE_READ, body, WIRE_RW_SIZE, 0, 0);
	check_prefixes(buf, n, -EBADMSG);
	rw.len = 0;
	wire_rw_encode(&rw, body);
	n = frame(buf, WIRE_READ, body, WIRE_RW_SIZE, 0, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);
	memset(body, 0, sizeof(body));
	body[46] = 1;
	n = frame(buf, WIRE_HELLO, body, WIRE_HELLO_SIZE, 0, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);
	memset(body, 0, sizeof(body));
	body[7] = 1;
	n = frame(buf, WIRE_SEG_QUERY, body, WIRE_SEG_QUERY_SIZE, 0, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);
	memset(body, 0, sizeof(body));
	body[23] = 1;
	n = frame(buf, WIRE_SEG_INFO, body, WIRE_SEG_INFO_SIZE, 0, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);

	/* WRITE: body_len must be exactly WIRE_RW_SIZE + len */
	rw.len = 8;
	wire_rw_encode(&rw, body);
	n = frame(buf, WIRE_WRITE, body, WIRE_RW_SIZE + 8, 0, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == (long)n);
	n = frame(buf, WIRE_WRITE, body, WIRE_RW_SIZE + 7, 0, 0);
	check_prefixes(buf, n, -EBADMSG);
	n = frame(buf, WIRE_WRITE, body, WIRE_RW_SIZE + 9, 0, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);
	n = frame(buf, WIRE_WRITE, body, WIRE_RW_SIZE, 0, 0); /* no payload at all */
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);

	/* RPC bodies are opaque: any bytes pass, an empty one too; a failed reply has none */
	memset(body, 0xff, sizeof(body));
	n = frame(buf, WIRE_RPC, body, sizeof(body), 3, 0);
	check_prefixes(buf, n, (long)n);
	n = frame(buf, WIRE_RPC, NULL, 0, 3, 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == (long)n && h.body_len == 0);
	n = frame(buf, WIRE_RPC_REPLY, NULL, 0, 3, ENOENT);
	CHECK(wire_frame_decode(buf, n, &h, &b) == (long)n && h.arg == ENOENT);
	n = frame(buf, WIRE_RPC_REPLY, body, 1, 3, ENOENT);
	CHECK(wire_frame_decode(buf, WIRE_HDR_SIZE, &h, &b) == -EBADMSG);
}

static void test_frame_big(void)
{
	/* the largest frames: a WRITE of WIRE_MAX_DATA, and a READ_DATA one byte too big */
	size_t n = WIRE_HDR_SIZE + WIRE_RW_SIZE + WIRE_MAX_DATA;
	uint8_t *buf = calloc(1, n);
	struct wire_rw rw = {.seg = 0, .off = 0, .len = WIRE_MAX_DATA};
	struct wire_hdr h;
	const uint8_t *b;

	REQUIRE(buf != NULL);
	wire_hdr_init(&h, WIRE_WRITE, WIRE_RW_SIZE + WIRE_MAX_DATA, 1, 0);
	wire_hdr_encode(&h, buf);
	wire_rw_encode(&rw, buf + WIRE_HDR_SIZE);
	CHECK(wire_frame_decode(buf, n - 1, &h, &b) == 0);
	CHECK(wire_frame_decode(buf, n, &h, &b) == (long)n);
	wire_hdr_init(&h, WIRE_READ_DATA, WIRE_MAX_DATA + 1, 1, 0);
	wire_hdr_encode(&h, buf);
	CHECK(wire_frame_decode(buf, n, &h, &b) == -EBADMSG);
	/* an RPC and its reply of WIRE_MAX_RPC, and one byte more: refused from the header */
	for (int t = WIRE_RPC; t <= WIRE_RPC_REPLY; t++) {
		wire_hdr_init(&h, (enum wire_type)t, WIRE_MAX_RPC, 1, 0);
		wire_hdr_encode(&h, buf);
		CHECK(wire_frame_decode(buf, WIRE_HDR_SIZE + WIRE_MAX_RPC - 1, &h, &b) == 0);
		CHECK(wire_frame_decode(buf, WIRE_HDR_SIZE + WIRE_MAX_RPC, &h, &b) ==
		      (long)(WIRE_HDR_SIZE + WIRE_MAX_RPC));
		wire_hdr_init(&h, (enum wire_type)t, WIRE_MAX_RPC + 1, 1, 0);
		wire_hdr_encode(&h, buf);
		CHECK(wire_frame_decode(buf, WIRE_HDR_SIZE, &h, &b) == -EBADMSG);
	}
	free(buf);
}

static void test_frame_stream(void)
{
	/* three frames back to back, consumed one at a time as a stream parser would */
	uint8_t buf[512], body[WIRE_RW_SIZE + 3];
	struct wire_rw rw = {.seg = 2, .off = 10, .len = 3};
	struct wire_hdr h;
	const uint8_t *b;
	size_t n = 0, at = 0;
	long r;
	int seen = 0;

	wire_rw_encode(&rw, body);
	memcpy(body + WIRE_RW_SIZE, "abc", 3);
	n += frame(buf + n, WIRE_PING, NULL, 0, 1, 0);
	n += frame(buf + n, WIRE_WRITE, body, sizeof(body), 2, 0);
	n += frame(buf + n, WIRE_WRITE_ACK, NULL, 0, 2, 0);
	while ((r = wire_frame_decode(buf + at, n - at, &h, &b)) > 0) {
		seen++;
		CHECK(h.req_id == (seen == 1 ? 1u : 2u));
		if (h.type == WIRE_WRITE)
			CHECK(memcmp(b + WIRE_RW_SIZE, "abc", 3) == 0);
		at += (size_t)r;
	}
	CHECK(r == 0 && at == n && seen == 3);
}

/* auth */

static const char secret[] = "kvcachefs-test-secret-0123456789";

static void nonces(uint8_t ni[WIRE_NONCE], uint8_t nt[WIRE_NONCE])
{
	for (int i = 0; i < (int)WIRE_NONCE; i++) {
		ni[i] = (uint8_t)i;
		nt[i] = (uint8_t)(32 + i);
	}
}

static void test_auth_known_answer(void)
{
	/* computed independently: HMAC-SHA-256(SHA-256(secret), role || ni || nt || ids LE) */
	static const uint8_t want_t[WIRE_PROOF] = {0xc2, 0xf3, 0x2a, 0x89, 0x02, 0x38, 0x8d, 0xc6,
						   0x2c, 0x37, 0xf2, 0x0b, 0xf3, 0x86, 0x61, 0xaa,
						   0xa9, 0xd3, 0x80, 0x92, 0xaf, 0x05, 0x5a, 0x01,
						   0x9e, 0x87, 0xa9, 0x8c, 0x1c, 0xc3, 0x2d, 0xae};
	static const uint8_t want_i[WIRE_PROOF] = {0xb6, 0x0d, 0x33, 0xec, 0x00, 0xc2, 0xa4, 0x2c,
						   0xe9, 0x90, 0xaf, 0xd7, 0x3a, 0x1a, 0xdb, 0x24,
						   0xf0, 0x72, 0xc1, 0xe7, 0x1a, 0x6c, 0x73, 0xb6,
						   0x7b, 0x29, 0xd9, 0xf6, 0xe0, 0x44, 0x1e, 0x51};
	const uint64_t iid = 0x0102030405060708ull, tid = 0x1112131415161718ull;
	struct auth_key key;
	uint8_t ni[WIRE_NONCE], nt[WIRE_NONCE], p[WIRE_PROOF];

	nonces(ni, nt);
	REQUIRE(auth_key_init(&key, secret, strlen(secret)) == 0);
	auth_proof(&key, 'T', ni, nt, iid, tid, p);
	CHECK(memcmp(p, want_t, sizeof(p)) == 0);
	auth_proof(&key, 'I', ni, nt, iid, tid, p);
	CHECK(memcmp(p, want_i, sizeof(p)) == 0);
	CHECK(auth_verify(&key, 'T', ni, nt, iid, tid, want_t));
	CHECK(auth_verify(&key, 'I', ni, nt, iid, tid, want_i));
	auth_key_clear(&key);
}

static void test_auth_verify(void)
{
	struct auth_key key, other;
	uint8_t ni[WIRE_NONCE], nt[WIRE_NONCE], p[WIRE_PROOF], q[WIRE_PROOF];
	char other_secret[sizeof(secret)];

	nonces(ni, nt);
	REQUIRE(auth_key_init(&key, secret, strlen(secret)) == 0);
	auth_proof(&key, 'T', ni, nt, 10, 20, p);
	CHECK(auth_verify(&key, 'T', ni, nt, 10, 20, p));
	auth_proof(&key, 'T', ni, nt, 10, 20, q); /* deterministic */
	CHECK(memcmp(p, q, sizeof(p)) == 0);

	/* every input matters */
	CHECK(!auth_verify(&key, 'I', ni, nt, 10, 20, p)); /* reflected */
	CHECK(!auth_verify(&key, 'T', nt, ni, 10, 20, p)); /* nonces swapped */
	ni[31] ^= 1;
	CHECK(!auth_verify(&key, 'T', ni, nt, 10, 20, p));
	ni[31] ^= 1;
	nt[0] ^= 0x80;
	CHECK(!auth_verify(&key, 'T', ni, nt, 10, 20, p));
	nt[0] ^= 0x80;
	CHECK(!auth_verify(&key, 'T', ni, nt, 11, 20, p));
	CHECK(!auth_verify(&key, 'T', ni, nt, 10, 21, p));
	CHECK(!auth_verify(&key, 'T', ni, nt, 20, 10, p)); /* ids swapped */
	CHECK(!auth_verify(&key, 'T', ni, nt, 10 | 1ull << 63, 20, p));
	for (int i = 0; i < (int)WIRE_PROOF; i++) { /* any flipped bit of the proof */
		memcpy(q, p, sizeof(q));
		q[i] ^= (uint8_t)(1u << (i % 8));
		CHECK(!auth_verify(&key, 'T', ni, nt, 10, 20, q));
	}
	CHECK(auth_verify(&key, 'T', ni, nt, 10, 20, p)); /* everything restored */

	/* another secret, even one byte off or one byte longer */
	memcpy(other_secret, secret, sizeof(secret));
	other_secret[0] ^= 1;
	REQUIRE(auth_key_init(&other, other_secret, strlen(other_secret)) == 0);
	CHECK(!auth_verify(&other, 'T', ni, nt, 10, 20, p));
	auth_proof(&other, 'T', ni, nt, 10, 20, q);
	CHECK(memcmp(p, q, sizeof(p)) != 0);
	REQUIRE(auth_key_init(&other, secret, strlen(secret) + 1) == 0);
	CHECK(!auth_verify(&other, 'T', ni, nt, 10, 20, p));
	auth_key_clear(&other);
	auth_key_clear(&key);
}

static void test_auth_key(void)
{
	struct auth_key key, again;
	const uint8_t zero[sizeof(key.k)] = {0};

	CHECK(auth_key_init(&key, secret, 0) == -EINVAL);
	CHECK(auth_key_init(&key, secret, 15) == -EINVAL);
	CHECK(auth_key_init(&key, NULL, 32) == -EINVAL);
	REQUIRE(auth_key_init(&key, secret, 16) == 0);
	REQUIRE(auth_key_init(&again, secret, 16) == 0); /* sodium_init again is fine */
	CHECK(memcmp(key.k, again.k, sizeof(key.k)) == 0);
	CHECK(memcmp(key.k, zero, sizeof(zero)) != 0);
	CHECK(memcmp(key.k, secret, 16) != 0); /* the secret is not the key */
	auth_key_clear(&key);
	CHECK(memcmp(key.k, zero, sizeof(zero)) == 0);
	auth_key_clear(&again);
}

static void test_auth_nonce(void)
{
	uint8_t a[WIRE_NONCE], b[WIRE_NONCE];
	const uint8_t zero[WIRE_NONCE] = {0};

	auth_nonce(a);
	auth_nonce(b);
	CHECK(memcmp(a, b, sizeof(a)) != 0);
	CHECK(memcmp(a, zero, sizeof(a)) != 0);
}

int main(void)
{
	RUN(test_hdr_known_answer);
	RUN(test_hdr_round_trip);
	RUN(test_hdr_rejects);
	RUN(test_hdr_body_len);
	RUN(test_hdr_version);
	RUN(test_hello);
	RUN(test_challenge);
	RUN(test_rw);
	RUN(test_seg_query);
	RUN(test_seg_info);
	RUN(test_frame_each_type);
	RUN(test_frame_rejects);
	RUN(test_frame_big);
	RUN(test_frame_stream);
	RUN(test_auth_known_answer);
	RUN(test_auth_verify);
	RUN(test_auth_key);
	RUN(test_auth_nonce);
	return check_summary();
}
