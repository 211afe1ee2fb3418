/*
 * mrpc: the codec of the metadata messages daemons send each other about block entries
 * (entries.h). It only turns structs into byte buffers and back; the transfer engine's RPC
 * carries them (one request, one reply, each at most MR_MSG_MAX bytes).
 *
 * Wire format, all little-endian. A string is u16 length + bytes (no NUL). A dir is a path
 * below the mount root of at most MR_DIR_MAX bytes: "" for the root, otherwise components
 * joined by '/', none empty, "." or "..", no NUL. A name is 1..MR_NAME_MAX bytes, no '/' or
 * NUL, not "." or "..". An info is
 *   {u64 size, u64 version, i64 mtime_ns, u32 mode, u32 uid, u32 gid, u8 replicas,
 *    u8 nholders, u8 zero[2],
 *    nholders x holder}, holder = {u64 node, u64 offset, u64 generation},
 * with replicas in 1..ENT_MAX_HOLDERS, nholders in 1..ENT_MAX_HOLDERS, holder nodes distinct.
 *
 * A request starts with {u8 op, u8 zero[3]}:
 *   ANNOUNCE   u32 count, count x {dir, name, u64 size, u64 version, i64 mtime_ns, u32 mode,
 *              u32 uid, u32 gid,
 *              u8 replicas, u8 zero[3], holder}                  reply: STATUS
 *   FORGET     u32 count, count x {dir, name, u64 node, u64 generation}    reply: empty
 *   GET        dir, name                                                    reply: info
 *   UNLINK     dir, name, u64 version                          reply: info (what was removed)
 *   LIST       dir, u64 cursor, u32 max (1..MR_LIST_MAX)                    reply: LIST
 *   REPLICATE  dir, name, info: copy this block from one of its holders     reply: empty
 *   DROP       dir, name, u64 generation: drop the local copy if it matches reply: empty
 *   FORGET_NODE u64 node: that node restarted with nothing; forget it as a holder
 *                                                                           reply: empty
 * Replies carry no op:
 *   STATUS     u32 count, count x {u32 status (0 or an errno < 4096), u64 current_version}
 *   LIST       u64 next_cursor, u8 done (0/1), u8 zero[3], u32 count (<= MR_LIST_MAX),
 *              count x {name, u64 size, i64 mtime_ns, u32 mode}; a page may be empty and
 *              not the last (a server that lists only some of its entries): a reader loops
 *              until done, and may check that next_cursor went up
 * Batches hold 0..MR_BATCH_MAX items.
 *
 * Encoders write into a struct mr_buf, which they reset first (one message per buffer), and
 * check what they are given against the same rules as the decoders: they return 0, -EINVAL
 * (a dir, name or info the format forbids), -E2BIG (the message would pass MR_MSG_MAX bytes or
 * the batch MR_BATCH_MAX items: send what the buffer holds and start another) or -ENOMEM. A
 * failed *_add leaves the message as it was; after any other failed call the buffer holds no
 * message to send.
 *
 * Decoders check every length, count, reserved byte and rule above, consume the buffer
 * exactly, never read outside it, and return -EBADMSG for anything else. Batch items are read
 * after the whole message has been checked, with mr_*_next(), straight from the buffer,
 * which must stay valid meanwhile.
 */
#ifndef KVC_META_MRPC_H
#define KVC_META_MRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meta/entries.h"

#define MR_DIR_MAX   1023u
#define MR_NAME_MAX  255u
#define MR_BATCH_MAX 1024u
#define MR_MSG_MAX   (1u << 20) /* the RPC's limit on one request or reply (XFER_RPC_MAX) */
/* A LIST reply of MR_LIST_MAX items of 255-byte names (277 bytes each) stays below
 * MR_MSG_MAX: 3584 x 277 + 16 = 992784. */
#define MR_LIST_MAX  3584u
#define MR_ERRNO_MAX 4095u /* the largest status a STATUS reply may carry */

enum mr_op {
	MR_ANNOUNCE = 1,
	MR_FORGET,
	MR_GET,
	MR_UNLINK,
	MR_LIST,
	MR_REPLICATE,
	MR_DROP,
	MR_FORGET_NODE,
	MR_OP_MAX = MR_FORGET_NODE
};

/* A growable byte buffer: data[0..len) is the message. Zero it (or mr_buf_init) before use;
 * mr_buf_free releases the memory. */
struct mr_buf {
	uint8_t *data;
	size_t len, cap;
	uint32_t count; /* items in the batch or LIST reply being built */
	int err;	/* the first error of mr_list_reply_fill, returned by the finish */
};

void mr_buf_init(struct mr_buf *b);
void mr_buf_free(struct mr_buf *b);

/* Is dir (name) a valid dir (name) of the format? For callers that want to check early. */
bool mr_dir_ok(const char *dir);
bool mr_name_ok(const char *name);

/* Requests. A batch: *_start, then *_add per item (-E2BIG: full, the item was not added). */
int mr_announce_start(struct mr_buf *b);
/* info->holders is ignored: h is the one holder announced (as for ents_add). */
int mr_announce_add(struct mr_buf *b, const char *dir, const char *name,
		    const struct ent_info *info, const struct ent_holder *h);
int mr_forget_start(struct mr_buf *b);
int mr_forget_add(struct mr_buf *b, const char *dir, const char *name, uint64_t node,
		  uint64_t generation);
int mr_get_encode(struct mr_buf *b, const char *dir, const char *name);
int mr_unlink_encode(struct mr_buf *b, const char *dir, const char *name, uint64_t version);
int mr_list_encode(struct mr_buf *b, const char *dir, uint64_t cursor, uint32_t max);
int mr_replicate_encode(struct mr_buf *b, const char *dir, const char *name,
			const struct ent_info *info);
int mr_drop_encode(struct mr_buf *b, const char *dir, const char *name, uint64_t generation);
int mr_forget_node_encode(struct mr_buf *b, uint64_t node);

/* Replies. STATUS: start, then one add per ANNOUNCE item, in order. */
int mr_status_start(struct mr_buf *b);
int mr_status_add(struct mr_buf *b, uint32_t status, uint64_t current_version);
/* GET and UNLINK. */
int mr_info_encode(struct mr_buf *b, const struct ent_info *info);
/* LIST: start; add per item (or pass mr_list_reply_fill and b to ents_list); finish writes
 * the cursor and done flag and returns 0 or the first error an add or fill met. */
int mr_list_reply_start(struct mr_buf *b);
int mr_list_reply_add(struct mr_buf *b, const char *name, uint64_t size, int64_t mtime_ns,
		      uint32_t mode);
void mr_list_reply_fill(void *b, const char *name, const struct ent_info *info); /* ents_fill_fn */
int mr_list_reply_finish(struct mr_buf *b, uint64_t next_cursor, bool done);

/* Where a batch's next item is; filled by the decoders, advanced by mr_*_next. */
struct mr_iter {
	const uint8_t *p, *end;
	uint32_t left;
};

/* A decoded request; which fields mean something depends on op. */
struct mr_req {
	enum mr_op op;
	char dir[MR_DIR_MAX + 1];   /* all but ANNOUNCE and FORGET */
	char name[MR_NAME_MAX + 1]; /* GET, UNLINK, REPLICATE, DROP */
	uint64_t version;	    /* UNLINK */
	uint64_t cursor;	    /* LIST */
	uint32_t max;		    /* LIST */
	uint64_t generation;	    /* DROP */
	uint64_t node;		    /* FORGET_NODE */
	struct ent_info info;	    /* REPLICATE */
	uint32_t count;		    /* ANNOUNCE, FORGET: items, read with mr_*_next */
	struct mr_iter it;
};

struct mr_announce_item {
	char dir[MR_DIR_MAX + 1];
	char name[MR_NAME_MAX + 1];
	struct ent_info info; /* nholders 0: the holder is below */
	struct ent_holder holder;
};

struct mr_forget_item {
	char dir[MR_DIR_MAX + 1];
	char name[MR_NAME_MAX + 1];
	uint64_t node, generation;
};

/* Decode and check a whole request. 0 or -EBADMSG (r is then unspecified). */
int mr_req_decode(const void *buf, size_t len, struct mr_req *r);
/* The next item of an ANNOUNCE (FORGET) request r: true, or false when there is none left or
 * r is another op. */
bool mr_announce_next(struct mr_req *r, struct mr_announce_item *it);
bool mr_forget_next(struct mr_req *r, struct mr_forget_item *it);

struct mr_status {
	uint32_t status; /* 0 or a positive errno */
	uint64_t version;
};

/* An empty reply (FORGET, REPLICATE, DROP): 0 or -EBADMSG. */
int mr_empty_decode(const void *buf, size_t len);
/* A STATUS reply into out[0..max): the count, or -EBADMSG (also when count > max). */
int mr_status_decode(const void *buf, size_t len, struct mr_status *out, unsigned max);
/* A GET or UNLINK reply: 0 or -EBADMSG. */
int mr_info_decode(const void *buf, size_t len, struct ent_info *info);

struct mr_list_reply {
	uint64_t next_cursor;
	bool done;
	uint32_t count; /* items, read with mr_list_next */
	struct mr_iter it;
};

struct mr_list_item {
	char name[MR_NAME_MAX + 1];
	uint64_t size;
	int64_t mtime_ns;
	uint32_t mode;
};

/* A LIST reply: 0 or -EBADMSG. */
int mr_list_reply_decode(const void *buf, size_t len, struct mr_list_reply *r);
bool mr_list_next(struct mr_list_reply *r, struct mr_list_item *it);

#endif
