/*
 * wire: the framing of every daemon-to-daemon byte — one versioned, length-prefixed format
 * shared by the handshake, the transfer requests and keep-alives.
 *
 * A frame is a 32-byte header (little-endian on the wire) followed by body_len bytes:
 *
 *   u32 magic     WIRE_MAGIC
 *   u16 version   WIRE_VERSION of the sender
 *   u16 type      enum wire_type
 *   u32 flags     0 (anything else is malformed)
 *   u32 body_len  bytes that follow; each type has a fixed size or a bound (see below)
 *   u64 req_id    the initiator's request id, echoed in the reply (0 in the handshake)
 *   u64 arg       type-specific: a status (0 or a positive errno) in replies
 *
 * Bodies (fixed layouts, little-endian):
 *   HELLO      {u64 node_id, u8 nonce[32], u32 transports, u32 zero}                   48
 *   CHALLENGE  {u64 node_id, u8 nonce[32], u8 proof[32], u32 transports, u32 zero}     80
 *   AUTH       {u8 proof[32]}                                                          32
 *   WELCOME    {}                                                                       0
 *   REJECT     {}, arg = errno (EACCES: bad proof; EPROTO: version)                     0
 *   READ       {u32 seg, u32 zero, u64 off, u64 len}, len <= WIRE_MAX_DATA              24
 *   READ_DATA  arg = status; body = the len bytes when status is 0, else empty    0..MAX
 *   WRITE      {u32 seg, u32 zero, u64 off, u64 len} then len bytes               24+len
 *   WRITE_ACK  arg = status                                                             0
 *   PING, PONG {}                                                                       0
 *   SEG_QUERY  {u32 seg, u32 zero}: where is segment seg for RDMA?                     8
 *   SEG_INFO   arg = status; {u64 addr, u64 len, u32 rkey, u16 rdma_port, u16 zero}   24
 *   RPC        the request bytes, opaque to the engine; arg = 0              0..MAX_RPC
 *   RPC_REPLY  arg = status; body = the reply bytes when status is 0, else empty 0..MAX_RPC
 *
 * The handshake: the initiator sends HELLO (its nonce); the target answers CHALLENGE (its
 * nonce and a proof that it knows the secret), or REJECT (EPROTO) when the versions differ;
 * the initiator checks the proof and sends AUTH (its own proof); the target answers WELCOME
 * or REJECT (EACCES). A proof is HMAC-SHA-256 keyed by SHA-256(secret) over a role byte, both
 * nonces and both node ids (engine/auth.h): the secret itself never travels. A HELLO of
 * another version is still decoded far enough to be answered with REJECT.
 *
 * RPC frames carry small metadata messages between daemons (xfer_call): any number may be
 * outstanding on one connection, each reply naming its request by req_id. Like every request
 * type, RPC's arg is written 0 and not checked (it is reserved for a later version to give a
 * meaning, which would then bump WIRE_VERSION).
 *
 * Decoding never trusts a field: wire_hdr_decode checks magic, flags, type and the body
 * length against the type; the body decoders check sizes and reserved zeros. Whoever gets an
 * error closes that one connection.
 */
#ifndef KVC_ENGINE_WIRE_H
#define KVC_ENGINE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC    0x4658564bu /* "KVXF" */
#define WIRE_VERSION  1u
#define WIRE_HDR_SIZE 32u
#define WIRE_MAX_DATA (64u << 20) /* the largest slice a READ or WRITE may carry */
#define WIRE_MAX_RPC  (1u << 20)  /* the largest RPC request or reply body */
#define WIRE_NONCE    32u
#define WIRE_PROOF    32u

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_CHALLENGE,
	WIRE_AUTH,
	WIRE_WELCOME,
	WIRE_REJECT,
	WIRE_READ,
	WIRE_READ_DATA,
	WIRE_WRITE,
	WIRE_WRITE_ACK,
	WIRE_PING,
	WIRE_PONG,
	WIRE_SEG_QUERY,
	WIRE_SEG_INFO,
	WIRE_RPC,
	WIRE_RPC_REPLY,
	WIRE_TYPE_MAX = WIRE_RPC_REPLY
};

#define WIRE_HELLO_SIZE	    48u
#define WIRE_CHALLENGE_SIZE 80u
#define WIRE_AUTH_SIZE	    32u
#define WIRE_RW_SIZE	    24u
#define WIRE_SEG_QUERY_SIZE 8u
#define WIRE_SEG_INFO_SIZE  24u

/* A header, in host order. */
struct wire_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t flags;
	uint32_t body_len;
	uint64_t req_id;
	uint64_t arg;
};

struct wire_hello {
	uint64_t node_id;
	uint8_t nonce[WIRE_NONCE];
	uint32_t transports;
};

struct wire_challenge {
	uint64_t node_id;
	uint8_t nonce[WIRE_NONCE];
	uint8_t proof[WIRE_PROOF];
	uint32_t transports;
};

/* READ and WRITE (the WRITE's payload follows the fixed part). */
struct wire_rw {
	uint32_t seg;
	uint64_t off;
	uint64_t len;
};

/* SEG_INFO: how to reach a segment with one-sided RDMA. */
struct wire_seg_info {
	uint64_t addr;
	uint64_t len;
	uint32_t rkey;
	uint16_t rdma_port;
};

/* A header for type with body_len and req_id/arg set, magic and version filled in. */
void wire_hdr_init(struct wire_hdr *h, enum wire_type type, uint32_t body_len, uint64_t req_id,
		   uint64_t arg);
void wire_hdr_encode(const struct wire_hdr *h, uint8_t out[WIRE_HDR_SIZE]);
/* Decode and check a header. 0; -EBADMSG: bad magic, flags, type, or a body length the type
 * does not allow; -EPROTO: another version (except for HELLO, which is returned with its
 * version so the handshake can answer REJECT). */
int wire_hdr_decode(const uint8_t in[WIRE_HDR_SIZE], struct wire_hdr *h);

/* Fixed bodies: encode writes exactly the type's size; decode takes exactly that many bytes
 * (len must equal it) and returns 0 or -EBADMSG (size, reserved field not zero, READ/WRITE
 * len 0 or above WIRE_MAX_DATA, off + len overflowing). */
void wire_hello_encode(const struct wire_hello *m, uint8_t out[WIRE_HELLO_SIZE]);
int wire_hello_decode(const uint8_t *in, size_t len, struct wire_hello *m);
void wire_challenge_encode(const struct wire_challenge *m, uint8_t out[WIRE_CHALLENGE_SIZE]);
int wire_challenge_decode(const uint8_t *in, size_t len, struct wire_challenge *m);
void wire_rw_encode(const struct wire_rw *m, uint8_t out[WIRE_RW_SIZE]);
int wire_rw_decode(const uint8_t *in, size_t len, struct wire_rw *m);
void wire_seg_query_encode(uint32_t seg, uint8_t out[WIRE_SEG_QUERY_SIZE]);
int wire_seg_query_decode(const uint8_t *in, size_t len, uint32_t *seg);
void wire_seg_info_encode(const struct wire_seg_info *m, uint8_t out[WIRE_SEG_INFO_SIZE]);
int wire_seg_info_decode(const uint8_t *in, size_t len, struct wire_seg_info *m);

/*
 * A whole-frame decoder over a byte buffer, for stream parsers that buffer small frames and
 * for the fuzzer: returns the frame's total size when buf holds a complete, valid frame
 * (hdr filled, body = buf + WIRE_HDR_SIZE), 0 when more bytes are needed, or a negative
 * errno (-EBADMSG, -EPROTO) for a malformed frame. Fixed-size bodies are checked too.
 */
long wire_frame_decode(const uint8_t *buf, size_t len, struct wire_hdr *hdr, const uint8_t **body);

#endif
