/*
 * fuzz_wire: a libFuzzer target for engine/wire.c, the code that reads bytes from peers.
 *
 * Built and run by tools/test.sh (clang -fsanitize=fuzzer,address,undefined). Each input is
 * taken as a byte stream a peer sent, and checked four ways; any disagreement aborts, which
 * libFuzzer records as a crash with a reproducer:
 *
 *   1. an independent, table-driven reading of wire.h (ref_frame) must give the same answer
 *      as wire_frame_decode on every frame of the stream: size, "need more" or the errno;
 *   2. every frame that decodes re-encodes, through the public encoders, to the very same
 *      bytes, and the re-encoded frame decodes to the same header and fields;
 *   3. the stream, fed in pseudo-random chunks to a small reassembly loop like a connection's
 *      receive path, yields exactly the frames and the final verdict of a one-shot parse;
 *   4. field values taken from the input are encoded and decoded back (the encode side).
 *
 * Checks 1-3 also run on a second stream, synthesized from the input read as a recipe of
 * nearly valid frames (synth), so that every type's valid path is reached within seconds
 * without a seed corpus. The body decoders are also called on the raw input at its real
 * length, so that reading past the length they were told shows up under AddressSanitizer.
 *
 *   clang -std=c17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -D_GNU_SOURCE -I. tests/fuzz/fuzz_wire.c engine/wire.c -o build/fuzz_wire
 *   build/fuzz_wire -max_total_time=60
 */
#include "engine/wire.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_wire: %s:%d: check failed: %s\n", __FILE__,          \
				__LINE__, #cond);                                                  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The reference: wire.h read a second way (host loads + leXXtoh, a table of body sizes). */

static uint16_t ld16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t ld32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t ld64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

/* Allowed body sizes per type, min..max (from the table in wire.h). */
static const struct {
	uint32_t min, max;
} ref_sizes[WIRE_TYPE_MAX + 1] = {
    [WIRE_HELLO] = {48, 48},
    [WIRE_CHALLENGE] = {80, 80},
    [WIRE_AUTH] = {32, 32},
    [WIRE_WELCOME] = {0, 0},
    [WIRE_REJECT] = {0, 0},
    [WIRE_READ] = {24, 24},
    [WIRE_READ_DATA] = {0, 64u << 20},
    [WIRE_WRITE] = {24, 24 + (64u << 20)},
    [WIRE_WRITE_ACK] = {0, 0},
    [WIRE_PING] = {0, 0},
    [WIRE_PONG] = {0, 0},
    [WIRE_SEG_QUERY] = {8, 8},
    [WIRE_SEG_INFO] = {24, 24},
    [WIRE_RPC] = {0, 1u << 20},
    [WIRE_RPC_REPLY] = {0, 1u << 20},
};

static int ref_hdr(const uint8_t *p)
{
	uint16_t version = ld16(p + 4), type = ld16(p + 6);
	uint32_t body_len = ld32(p + 12);

	if (ld32(p) != 0x4658564bu)
		return -EBADMSG;
	if (version != 1 && type != WIRE_HELLO)
		return -EPROTO;
	if (ld32(p + 8) != 0 || type == 0 || type > WIRE_TYPE_MAX)
		return -EBADMSG;
	if (body_len < ref_sizes[type].min || body_len > ref_sizes[type].max)
		return -EBADMSG;
	/* replies that carry data carry it only with status 0 */
	if ((type == WIRE_READ_DATA || type == WIRE_RPC_REPLY) && ld64(p + 24) != 0 &&
	    body_len != 0)
		return -EBADMSG;
	return 0;
}

static bool ref_range(uint64_t off, uint64_t len)
{
	return off + len >= off; /* does not wrap (unsigned arithmetic is modular) */
}

static bool ref_rw(const uint8_t *b)
{
	uint64_t len = ld64(b + 16);

	return ld32(b + 4) == 0 && len >= 1 && len <= (64u << 20) && ref_range(ld64(b + 8), len);
}

static int ref_body(uint16_t type, const uint8_t *b, uint32_t n)
{
	bool ok = true;

	switch (type) {
	case WIRE_HELLO:
		ok = ld32(b + 44) == 0;
		break;
	case WIRE_CHALLENGE:
		ok = ld32(b + 76) == 0;
		break;
	case WIRE_READ:
		ok = ref_rw(b);
		break;
	case WIRE_WRITE:
		ok = ref_rw(b) && ld64(b + 16) == n - 24ull;
		break;
	case WIRE_SEG_QUERY:
		ok = ld32(b + 4) == 0;
		break;
	case WIRE_SEG_INFO:
		ok = ld16(b + 22) == 0 && ref_range(ld64(b), ld64(b + 8));
		break;
	}
	return ok ? 0 : -EBADMSG;
}

static long ref_frame(const uint8_t *p, size_t len)
{
	uint32_t body_len;
	int ret;

	if (len < 32)
		return 0;
	ret = ref_hdr(p);
	if (ret < 0)
		return ret;
	body_len = ld32(p + 12);
	if (len < 32ull + body_len)
		return 0;
	ret = ref_body(ld16(p + 6), p + 32, body_len);
	return ret < 0 ? ret : 32 + (long)body_len;
}

/* Decode a valid frame's body with the public decoder for its type and encode it back into
 * out (the body's size); payloads (AUTH's proof, READ_DATA, WRITE's data, RPC bodies) are
 * copied. */
static void reencode_body(const struct wire_hdr *h, const uint8_t *body, uint8_t *out)
{
	struct wire_hello hello;
	struct wire_challenge ch;
	struct wire_rw rw;
	struct wire_seg_info si;
	uint32_t seg;

	switch (h->type) {
	case WIRE_HELLO:
		FUZZ_CHECK(wire_hello_decode(body, h->body_len, &hello) == 0);
		wire_hello_encode(&hello, out);
		break;
	case WIRE_CHALLENGE:
		FUZZ_CHECK(wire_challenge_decode(body, h->body_len, &ch) == 0);
		wire_challenge_encode(&ch, out);
		break;
	case WIRE_READ:
		FUZZ_CHECK(wire_rw_decode(body, h->body_len, &rw) == 0);
		wire_rw_encode(&rw, out);
		break;
	case WIRE_WRITE:
		FUZZ_CHECK(wire_rw_decode(body, WIRE_RW_SIZE, &rw) == 0);
		FUZZ_CHECK(rw.len == h->body_len - WIRE_RW_SIZE);
		wire_rw_encode(&rw, out);
		memcpy(out + WIRE_RW_SIZE, body + WIRE_RW_SIZE, rw.len);
		break;
	case WIRE_SEG_QUERY:
		FUZZ_CHECK(wire_seg_query_decode(body, h->body_len, &seg) == 0);
		wire_seg_query_encode(seg, out);
		break;
	case WIRE_SEG_INFO:
		FUZZ_CHECK(wire_seg_info_decode(body, h->body_len, &si) == 0);
		wire_seg_info_encode(&si, out);
		break;
	default:
		memcpy(out, body, h->body_len);
		break;
	}
}

/* One frame at the start of p: check it against the reference and, when valid, the round
 * trip and its prefixes. Returns what wire_frame_decode returned. */
static long check_frame(const uint8_t *p, size_t len)
{
	struct wire_hdr h, h2;
	const uint8_t *body = NULL, *body2 = NULL;
	uint8_t *copy;
	long n = wire_frame_decode(p, len, &h, &body);

	FUZZ_CHECK(n == ref_frame(p, len));
	if (len >= WIRE_HDR_SIZE && ref_hdr(p) < 0) /* a bad header: the same error on its own */
		FUZZ_CHECK(wire_hdr_decode(p, &h2) == ref_hdr(p));
	if (n <= 0)
		return n;

	FUZZ_CHECK((size_t)n == WIRE_HDR_SIZE + h.body_len && (size_t)n <= len);
	FUZZ_CHECK(body == p + WIRE_HDR_SIZE);
	FUZZ_CHECK(wire_hdr_decode(p, &h2) == 0 && memcmp(&h, &h2, sizeof(h)) == 0);
	/* every strict prefix of a valid frame asks for more (a few, to stay fast) */
	FUZZ_CHECK(wire_frame_decode(p, (size_t)n - 1, &h2, &body2) == 0);
	FUZZ_CHECK(wire_frame_decode(p, (size_t)n / 2, &h2, &body2) == 0);
	FUZZ_CHECK(wire_frame_decode(p, WIRE_HDR_SIZE - 1, &h2, &body2) == 0);

	/* re-encode header and body: the same bytes, and they decode the same */
	copy = malloc((size_t)n);
	FUZZ_CHECK(copy != NULL);
	wire_hdr_encode(&h, copy);
	reencode_body(&h, body, copy + WIRE_HDR_SIZE);
	FUZZ_CHECK(memcmp(copy, p, (size_t)n) == 0);
	FUZZ_CHECK(wire_frame_decode(copy, (size_t)n, &h2, &body2) == n);
	FUZZ_CHECK(memcmp(&h, &h2, sizeof(h)) == 0 && body2 == copy + WIRE_HDR_SIZE);
	free(copy);
	return n;
}

/* The frames of a one-shot parse of the whole input. */
struct parse {
	size_t nframes;
	long *sizes; /* of each frame, in order */
	long last;   /* the verdict after the last frame: 0 (more needed) or an error */
};

static void parse_all(const uint8_t *data, size_t size, struct parse *ps)
{
	size_t at = 0;
	long n;

	ps->sizes = malloc((size / WIRE_HDR_SIZE + 1) * sizeof(*ps->sizes));
	FUZZ_CHECK(ps->sizes != NULL);
	ps->nframes = 0;
	while ((n = check_frame(data + at, size - at)) > 0) {
		ps->sizes[ps->nframes++] = n;
		at += (size_t)n;
	}
	ps->last = n;
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: chunk sizes that are a pure function of the input, so crashes replay */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* Feed the input in pseudo-random chunks to a receive loop that buffers partial frames,
 * consumes whole ones and stops at the first error, as a connection would. */
static void check_stream(const uint8_t *data, size_t size, const struct parse *ps)
{
	uint64_t seed = 0xcbf29ce484222325ull; /* FNV-1a of the input */
	uint8_t *buf = malloc(size ? size : 1);
	size_t have = 0, fed = 0, frame = 0;
	long n = 0;
	struct wire_hdr h;
	const uint8_t *body;

	FUZZ_CHECK(buf != NULL);
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ull;
	seed |= 1;
	while (fed < size) {
		uint64_t r = rng_next(&seed);
		/* half the time 1..7 bytes (a trickle), else up to 257 (frames split anywhere) */
		size_t chunk = 1 + (size_t)(r % ((r >> 32) & 1 ? 7 : 257));

		if (chunk > size - fed)
			chunk = size - fed;
		memcpy(buf + have, data + fed, chunk);
		have += chunk;
		fed += chunk;
		while ((n = wire_frame_decode(buf, have, &h, &body)) > 0) {
			FUZZ_CHECK(frame < ps->nframes && n == ps->sizes[frame]);
			frame++;
			have -= (size_t)n;
			memmove(buf, buf + n, have);
		}
		if (n < 0)
			break;
	}
	FUZZ_CHECK(frame == ps->nframes && n == ps->last);
	free(buf);
}

/* The encode side: fields straight from the input, encoded, must decode back to themselves
 * exactly when the reference says the bytes are valid. */
static void check_encode(const uint8_t *data, size_t size)
{
	uint8_t b[WIRE_HDR_SIZE];
	struct wire_hdr h, d;
	struct wire_rw rw, rw2;
	struct wire_seg_info si, si2;

	if (size < 32)
		return;
	wire_hdr_init(&h, (enum wire_type)ld16(data), ld32(data + 2), ld64(data + 6),
		      ld64(data + 14));
	if (data[22] & 1)
		h.version = ld16(data + 23);
	wire_hdr_encode(&h, b);
	FUZZ_CHECK(ld32(b) == WIRE_MAGIC && ld32(b + 12) == h.body_len && ld64(b + 24) == h.arg);
	FUZZ_CHECK(wire_hdr_decode(b, &d) == ref_hdr(b));
	if (ref_hdr(b) == 0)
		FUZZ_CHECK(memcmp(&h, &d, sizeof(h)) == 0);

	rw = (struct wire_rw){.seg = ld32(data), .off = ld64(data + 8), .len = ld64(data + 16)};
	if (data[24] & 1) /* small lengths, so the valid side is reached too */
		rw.len &= 0x3ffffff;
	wire_rw_encode(&rw, b);
	FUZZ_CHECK(wire_rw_decode(b, WIRE_RW_SIZE, &rw2) == (ref_rw(b) ? 0 : -EBADMSG));
	if (ref_rw(b))
		FUZZ_CHECK(rw2.seg == rw.seg && rw2.off == rw.off && rw2.len == rw.len);

	si = (struct wire_seg_info){.addr = ld64(data),
				    .len = ld64(data + 8),
				    .rkey = ld32(data + 16),
				    .rdma_port = ld16(data + 20)};
	if (data[25] & 1)
		si.len &= 0xffffffff;
	wire_seg_info_encode(&si, b);
	FUZZ_CHECK(ld16(b + 22) == 0);
	FUZZ_CHECK(wire_seg_info_decode(b, WIRE_SEG_INFO_SIZE, &si2) ==
		   (ref_range(si.addr, si.len) ? 0 : -EBADMSG));
	if (ref_range(si.addr, si.len))
		FUZZ_CHECK(si2.addr == si.addr && si2.len == si.len && si2.rkey == si.rkey &&
			   si2.rdma_port == si.rdma_port);
}

/* The body decoders on the raw input, told its true length: only an exact size may pass. */
static void check_bodies(const uint8_t *data, size_t size)
{
	struct wire_hello hello;
	struct wire_challenge ch;
	struct wire_rw rw;
	struct wire_seg_info si;
	uint32_t seg;

	if (wire_hello_decode(data, size, &hello) == 0)
		FUZZ_CHECK(size == WIRE_HELLO_SIZE);
	if (wire_challenge_decode(data, size, &ch) == 0)
		FUZZ_CHECK(size == WIRE_CHALLENGE_SIZE);
	if (wire_rw_decode(data, size, &rw) == 0)
		FUZZ_CHECK(size == WIRE_RW_SIZE && rw.len >= 1 && rw.len <= WIRE_MAX_DATA &&
			   rw.off + rw.len >= rw.off);
	if (wire_seg_query_decode(data, size, &seg) == 0)
		FUZZ_CHECK(size == WIRE_SEG_QUERY_SIZE);
	if (wire_seg_info_decode(data, size, &si) == 0)
		FUZZ_CHECK(size == WIRE_SEG_INFO_SIZE);
}

/*
 * Structured mode: valid frames of every type are a needle for byte-level mutation (a magic,
 * a matching length and zero reserved fields all at once), so the input is also read as a
 * recipe: per frame a control byte and a type selector, then field values, encoded with the
 * public encoders; control bits then bend the version, the status or one bit of the frame.
 */
struct recipe {
	const uint8_t *data;
	size_t size, at;
};

static uint64_t take(struct recipe *r, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)(r->at < r->size ? r->data[r->at++] : 0) << (8 * i);
	return v;
}

static void take_bytes(struct recipe *r, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = (uint8_t)take(r, 1);
}

#define SYNTH_FRAMES	64
#define SYNTH_MAX_FRAME (WIRE_HDR_SIZE + WIRE_CHALLENGE_SIZE + 256)

static size_t synth(const uint8_t *data, size_t size, uint8_t *out)
{
	struct recipe r = {.data = data, .size = size};
	size_t len = 0;

	for (int f = 0; f < SYNTH_FRAMES && r.at + 2 <= size; f++) {
		uint8_t c = (uint8_t)take(&r, 1);
		int type = 1 + (int)(take(&r, 1) % WIRE_TYPE_MAX);
		uint8_t *b = out + len + WIRE_HDR_SIZE;
		uint32_t blen = 0;
		struct wire_hdr h;

		switch (type) {
		case WIRE_HELLO: {
			struct wire_hello m = {.node_id = take(&r, 8)};

			take_bytes(&r, m.nonce, WIRE_NONCE);
			m.transports = (uint32_t)take(&r, 4);
			wire_hello_encode(&m, b);
			blen = WIRE_HELLO_SIZE;
			break;
		}
		case WIRE_CHALLENGE: {
			struct wire_challenge m = {.node_id = take(&r, 8)};

			take_bytes(&r, m.nonce, WIRE_NONCE);
			take_bytes(&r, m.proof, WIRE_PROOF);
			m.transports = (uint32_t)take(&r, 4);
			wire_challenge_encode(&m, b);
			blen = WIRE_CHALLENGE_SIZE;
			break;
		}
		case WIRE_AUTH:
			take_bytes(&r, b, WIRE_AUTH_SIZE);
			blen = WIRE_AUTH_SIZE;
			break;
		case WIRE_READ:
		case WIRE_WRITE: {
			struct wire_rw m = {.seg = (uint32_t)take(&r, 4)};

			/* offsets near 2^64 now and then, to reach the overflow check */
			m.off = c & 0x08 ? UINT64_MAX - take(&r, 1) : take(&r, 8);
			m.len = 1 + take(&r, 1);
			wire_rw_encode(&m, b);
			blen = WIRE_RW_SIZE;
			if (type == WIRE_WRITE) {
				take_bytes(&r, b + WIRE_RW_SIZE, m.len);
				blen += (uint32_t)m.len;
			}
			break;
		}
		case WIRE_READ_DATA:
		case WIRE_RPC:
		case WIRE_RPC_REPLY:
			blen = (uint32_t)take(&r, 1);
			take_bytes(&r, b, blen);
			break;
		case WIRE_SEG_QUERY:
			wire_seg_query_encode((uint32_t)take(&r, 4), b);
			blen = WIRE_SEG_QUERY_SIZE;
			break;
		case WIRE_SEG_INFO: {
			struct wire_seg_info m = {.addr = take(&r, 8), .len = take(&r, 8)};

			m.rkey = (uint32_t)take(&r, 4);
			m.rdma_port = (uint16_t)take(&r, 2);
			wire_seg_info_encode(&m, b);
			blen = WIRE_SEG_INFO_SIZE;
			break;
		}
		}
		wire_hdr_init(&h, (enum wire_type)type, blen, (uint64_t)f, 0);
		if (c & 0x10)
			h.version = (uint16_t)take(&r, 1);
		if (c & 0x20)
			h.arg = take(&r, 1);
		wire_hdr_encode(&h, out + len);
		if (c & 0x80) {
			size_t at = (size_t)take(&r, 2) % (WIRE_HDR_SIZE + blen);

			out[len + at] ^= (uint8_t)(1u << (c & 7));
		}
		len += WIRE_HDR_SIZE + blen;
	}
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct parse ps;

	static uint8_t frames[SYNTH_FRAMES * SYNTH_MAX_FRAME];
	size_t n;

	parse_all(data, size, &ps);
	check_stream(data, size, &ps);
	free(ps.sizes);

	n = synth(data, size, frames);
	parse_all(frames, n, &ps);
	check_stream(frames, n, &ps);
	free(ps.sizes);

	check_encode(data, size);
	check_bodies(data, size);
	return 0;
}
