/*
 * mrpc: the metadata message codec (see mrpc.h for the format).
 *
 * Encoding appends to a struct mr_buf through put helpers after one reserve per message part,
 * which is where the MR_MSG_MAX bound and allocation failures are met; batch counts are
 * patched in place as items are added, so a full batch is always a valid message.
 *
 * Decoding reads through struct rd, a cursor that turns "bad" on the first short read or
 * broken rule and then only yields zeros: every decoder reads its fields in order and checks
 * rd.bad and exact consumption once at the end. A batch is checked whole when the request is
 * decoded (its items parsed once into scratch space) and parsed again by mr_*_next, which
 * therefore cannot fail.
 */
#include "meta/mrpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MR_REQ_HDR	  8u  /* u8 op, u8 zero[3], u32 count (batches only) */
#define MR_INFO_FIXED	  40u /* an info without its holders */
#define MR_ANNOUNCE_FIXED 40u /* an ANNOUNCE item without dir, name and holder */
#define MR_HOLDER	  24u
#define MR_LIST_REPLY_HDR 16u
#define MR_LIST_ITEM_MAX  (2u + MR_NAME_MAX + 20u)

_Static_assert(MR_LIST_REPLY_HDR + MR_LIST_MAX * MR_LIST_ITEM_MAX <= MR_MSG_MAX,
	       "a full LIST reply must fit one RPC");

/* Validation, shared by encoders (C strings) and decoders (counted bytes) */

static bool name_ok(const char *s, size_t len)
{
	if (len < 1 || len > MR_NAME_MAX)
		return false;
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	return !memchr(s, '/', len) && !memchr(s, '\0', len);
}

static bool dir_ok(const char *s, size_t len)
{
	size_t start = 0;

	if (len > MR_DIR_MAX)
		return false;
	if (len == 0)
		return true;
	if (memchr(s, '\0', len))
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '/')
			continue;
		/* component s[start..i) */
		if (i == start || (i - start == 1 && s[start] == '.') ||
		    (i - start == 2 && s[start] == '.' && s[start + 1] == '.'))
			return false;
		start = i + 1;
	}
	return true;
}

bool mr_dir_ok(const char *dir)
{
	return dir && dir_ok(dir, strnlen(dir, MR_DIR_MAX + 1));
}

bool mr_name_ok(const char *name)
{
	return name && name_ok(name, strnlen(name, MR_NAME_MAX + 1));
}

static bool info_ok(const struct ent_info *info)
{
	if (info->replicas < 1 || info->replicas > ENT_MAX_HOLDERS)
		return false;
	if (info->nholders < 1 || info->nholders > ENT_MAX_HOLDERS)
		return false;
	for (unsigned i = 0; i < info->nholders; i++)
		for (unsigned j = 0; j < i; j++)
			if (info->holders[i].node == info->holders[j].node)
				return false;
	return true;
}

/* Encoding */

void mr_buf_init(struct mr_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void mr_buf_free(struct mr_buf *b)
{
	free(b->data);
	mr_buf_init(b);
}

/* Room for n more bytes. 0, -E2BIG or -ENOMEM; nothing changes on error. */
static int buf_reserve(struct mr_buf *b, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (n > MR_MSG_MAX - b->len)
		return -E2BIG;
	if (b->len + n <= b->cap)
		return 0;
	for (cap = b->cap ? b->cap : 256; cap < b->len + n; cap *= 2)
		;
	if (cap > MR_MSG_MAX)
		cap = MR_MSG_MAX;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put8(struct mr_buf *b, uint8_t v)
{
	b->data[b->len++] = v;
}

static void put16(struct mr_buf *b, uint16_t v)
{
	put_le(b->data + b->len, v, 2);
	b->len += 2;
}

static void put32(struct mr_buf *b, uint32_t v)
{
	put_le(b->data + b->len, v, 4);
	b->len += 4;
}

static void put64(struct mr_buf *b, uint64_t v)
{
	put_le(b->data + b->len, v, 8);
	b->len += 8;
}

static void put_zero(struct mr_buf *b, size_t n)
{
	memset(b->data + b->len, 0, n);
	b->len += n;
}

static void put_str(struct mr_buf *b, const char *s, size_t len)
{
	put16(b, (uint16_t)len);
	memcpy(b->data + b->len, s, len);
	b->len += len;
}

static void put_holder(struct mr_buf *b, const struct ent_holder *h)
{
	put64(b, h->node);
	put64(b, h->offset);
	put64(b, h->generation);
}

static void put_info(struct mr_buf *b, const struct ent_info *info)
{
	put64(b, info->size);
	put64(b, info->version);
	put64(b, (uint64_t)info->mtime_ns);
	put32(b, info->mode);
	put32(b, info->uid);
	put32(b, info->gid);
	put8(b, info->replicas);
	put8(b, info->nholders);
	put_zero(b, 2);
	for (unsigned i = 0; i < info->nholders; i++)
		put_holder(b, &info->holders[i]);
}

static size_t info_size(const struct ent_info *info)
{
	return MR_INFO_FIXED + info->nholders * MR_HOLDER;
}

/* Start a message of op in b: reset it and reserve the header plus extra bytes. */
static int req_start(struct mr_buf *b, enum mr_op op, size_t extra)
{
	int rc;

	b->len = 0;
	b->count = 0;
	b->err = 0;
	rc = buf_reserve(b, 4 + extra);
	if (rc)
		return rc;
	put8(b, (uint8_t)op);
	put_zero(b, 3);
	return 0;
}

static int batch_start(struct mr_buf *b, enum mr_op op)
{
	int rc = req_start(b, op, 4);

	if (rc)
		return rc;
	put32(b, 0);
	return 0;
}

/* Room for one more item of n bytes in a batch of at most max items. */
static int batch_reserve(struct mr_buf *b, size_t n, uint32_t max)
{
	if (b->count >= max)
		return -E2BIG;
	return buf_reserve(b, n);
}

static void batch_added(struct mr_buf *b, size_t count_off)
{
	b->count++;
	put_le(b->data + count_off, b->count, 4);
}

int mr_announce_start(struct mr_buf *b)
{
	return batch_start(b, MR_ANNOUNCE);
}

int mr_announce_add(struct mr_buf *b, const char *dir, const char *name,
		    const struct ent_info *info, const struct ent_holder *h)
{
	size_t dl, nl;
	int rc;

	if (!mr_dir_ok(dir) || !mr_name_ok(name) || !info || !h || info->replicas < 1 ||
	    info->replicas > ENT_MAX_HOLDERS)
		return -EINVAL;
	dl = strlen(dir);
	nl = strlen(name);
	rc = batch_reserve(b, 2 + dl + 2 + nl + MR_ANNOUNCE_FIXED + MR_HOLDER, MR_BATCH_MAX);
	if (rc)
		return rc;
	put_str(b, dir, dl);
	put_str(b, name, nl);
	put64(b, info->size);
	put64(b, info->version);
	put64(b, (uint64_t)info->mtime_ns);
	put32(b, info->mode);
	put32(b, info->uid);
	put32(b, info->gid);
	put8(b, info->replicas);
	put_zero(b, 3);
	put_holder(b, h);
	batch_added(b, 4);
	return 0;
}

int mr_forget_start(struct mr_buf *b)
{
	return batch_start(b, MR_FORGET);
}

int mr_forget_add(struct mr_buf *b, const char *dir, const char *name, uint64_t node,
		  uint64_t generation)
{
	size_t dl, nl;
	int rc;

	if (!mr_dir_ok(dir) || !mr_name_ok(name))
		return -EINVAL;
	dl = strlen(dir);
	nl = strlen(name);
	rc = batch_reserve(b, 2 + dl + 2 + nl + 16, MR_BATCH_MAX);
	if (rc)
		return rc;
	put_str(b, dir, dl);
	put_str(b, name, nl);
	put64(b, node);
	put64(b, generation);
	batch_added(b, 4);
	return 0;
}

/* Start a request of op on (dir, name) with extra bytes to follow. */
static int req_dir_name(struct mr_buf *b, enum mr_op op, const char *dir, const char *name,
			size_t extra)
{
	size_t dl, nl;
	int rc;

	if (!mr_dir_ok(dir) || !mr_name_ok(name))
		return -EINVAL;
	dl = strlen(dir);
	nl = strlen(name);
	rc = req_start(b, op, 2 + dl + 2 + nl + extra);
	if (rc)
		return rc;
	put_str(b, dir, dl);
	put_str(b, name, nl);
	return 0;
}

int mr_get_encode(struct mr_buf *b, const char *dir, const char *name)
{
	return req_dir_name(b, MR_GET, dir, name, 0);
}

int mr_unlink_encode(struct mr_buf *b, const char *dir, const char *name, uint64_t version)
{
	int rc = req_dir_name(b, MR_UNLINK, dir, name, 8);

	if (rc)
		return rc;
	put64(b, version);
	return 0;
}

int mr_list_encode(struct mr_buf *b, const char *dir, uint64_t cursor, uint32_t max)
{
	size_t dl;
	int rc;

	if (!mr_dir_ok(dir) || max < 1 || max > MR_LIST_MAX)
		return -EINVAL;
	dl = strlen(dir);
	rc = req_start(b, MR_LIST, 2 + dl + 12);
	if (rc)
		return rc;
	put_str(b, dir, dl);
	put64(b, cursor);
	put32(b, max);
	return 0;
}

int mr_replicate_encode(struct mr_buf *b, const char *dir, const char *name,
			const struct ent_info *info)
{
	int rc;

	if (!info || !info_ok(info))
		return -EINVAL;
	rc = req_dir_name(b, MR_REPLICATE, dir, name, info_size(info));
	if (rc)
		return rc;
	put_info(b, info);
	return 0;
}

int mr_drop_encode(struct mr_buf *b, const char *dir, const char *name, uint64_t generation)
{
	int rc = req_dir_name(b, MR_DROP, dir, name, 8);

	if (rc)
		return rc;
	put64(b, generation);
	return 0;
}

int mr_forget_node_encode(struct mr_buf *b, uint64_t node)
{
	int rc = req_start(b, MR_FORGET_NODE, 8);

	if (rc)
		return rc;
	put64(b, node);
	return 0;
}

/* Replies */

static void reply_reset(struct mr_buf *b)
{
	b->len = 0;
	b->count = 0;
	b->err = 0;
}

int mr_status_start(struct mr_buf *b)
{
	int rc;

	reply_reset(b);
	rc = buf_reserve(b, 4);
	if (rc)
		return rc;
	put32(b, 0);
	return 0;
}

int mr_status_add(struct mr_buf *b, uint32_t status, uint64_t current_version)
{
	int rc;

	if (status > MR_ERRNO_MAX)
		return -EINVAL;
	rc = batch_reserve(b, 12, MR_BATCH_MAX);
	if (rc)
		return rc;
	put32(b, status);
	put64(b, current_version);
	batch_added(b, 0);
	return 0;
}

int mr_info_encode(struct mr_buf *b, const struct ent_info *info)
{
	int rc;

	if (!info || !info_ok(info))
		return -EINVAL;
	reply_reset(b);
	rc = buf_reserve(b, info_size(info));
	if (rc)
		return rc;
	put_info(b, info);
	return 0;
}

int mr_list_reply_start(struct mr_buf *b)
{
	int rc;

	reply_reset(b);
	rc = buf_reserve(b, MR_LIST_REPLY_HDR);
	if (rc)
		return rc;
	put_zero(b, MR_LIST_REPLY_HDR); /* written by the finish */
	return 0;
}

int mr_list_reply_add(struct mr_buf *b, const char *name, uint64_t size, int64_t mtime_ns,
		      uint32_t mode)
{
	size_t nl;
	int rc;

	if (!mr_name_ok(name))
		return -EINVAL;
	nl = strlen(name);
	rc = batch_reserve(b, 2 + nl + 20, MR_LIST_MAX);
	if (rc)
		return rc;
	put_str(b, name, nl);
	put64(b, size);
	put64(b, (uint64_t)mtime_ns);
	put32(b, mode);
	batch_added(b, 12);
	return 0;
}

void mr_list_reply_fill(void *arg, const char *name, const struct ent_info *info)
{
	struct mr_buf *b = arg;

	if (!b->err)
		b->err = mr_list_reply_add(b, name, info->size, info->mtime_ns, info->mode);
}

int mr_list_reply_finish(struct mr_buf *b, uint64_t next_cursor, bool done)
{
	if (b->err)
		return b->err;
	if (b->len < MR_LIST_REPLY_HDR)
		return -EINVAL; /* not started */
	put_le(b->data, next_cursor, 8);
	b->data[8] = done;
	return 0;
}

/* Decoding */

struct rd {
	const uint8_t *p, *end;
	bool bad;
};

static bool rd_need(struct rd *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return false;
	}
	return true;
}

static uint64_t rd_le(struct rd *r, unsigned n)
{
	uint64_t v = 0;

	if (!rd_need(r, n))
		return 0;
	for (unsigned i = n; i-- > 0;)
		v = v << 8 | r->p[i];
	r->p += n;
	return v;
}

static uint8_t rd8(struct rd *r)
{
	return (uint8_t)rd_le(r, 1);
}

static uint16_t rd16(struct rd *r)
{
	return (uint16_t)rd_le(r, 2);
}

static uint32_t rd32(struct rd *r)
{
	return (uint32_t)rd_le(r, 4);
}

static uint64_t rd64(struct rd *r)
{
	return rd_le(r, 8);
}

static void rd_zero(struct rd *r, unsigned n)
{
	while (n--)
		if (rd8(r))
			r->bad = true;
}

/* A string of at most max bytes into out (NUL-terminated); ok checks it. */
static void rd_str(struct rd *r, char *out, size_t max, bool (*ok)(const char *, size_t))
{
	size_t len = rd16(r);

	out[0] = '\0';
	if (len > max || !rd_need(r, len))
		goto bad;
	memcpy(out, r->p, len);
	out[len] = '\0';
	r->p += len;
	if (!ok(out, len))
		goto bad;
	return;
bad:
	out[0] = '\0';
	r->bad = true;
}

static void rd_dir(struct rd *r, char out[MR_DIR_MAX + 1])
{
	rd_str(r, out, MR_DIR_MAX, dir_ok);
}

static void rd_name(struct rd *r, char out[MR_NAME_MAX + 1])
{
	rd_str(r, out, MR_NAME_MAX, name_ok);
}

static void rd_holder(struct rd *r, struct ent_holder *h)
{
	h->node = rd64(r);
	h->offset = rd64(r);
	h->generation = rd64(r);
}

static uint8_t rd_replicas(struct rd *r)
{
	uint8_t v = rd8(r);

	if (v < 1 || v > ENT_MAX_HOLDERS)
		r->bad = true;
	return v;
}

static void rd_info(struct rd *r, struct ent_info *info)
{
	memset(info, 0, sizeof(*info));
	info->size = rd64(r);
	info->version = rd64(r);
	info->mtime_ns = (int64_t)rd64(r);
	info->mode = rd32(r);
	info->uid = rd32(r);
	info->gid = rd32(r);
	info->replicas = rd_replicas(r);
	info->nholders = rd8(r);
	rd_zero(r, 2);
	if (r->bad || info->nholders < 1 || info->nholders > ENT_MAX_HOLDERS) {
		r->bad = true;
		return;
	}
	for (unsigned i = 0; i < info->nholders; i++)
		rd_holder(r, &info->holders[i]);
	if (!r->bad && !info_ok(info))
		r->bad = true;
}

static int rd_end(struct rd *r)
{
	return r->bad || r->p != r->end ? -EBADMSG : 0;
}

static void rd_announce_item(struct rd *r, struct mr_announce_item *it)
{
	rd_dir(r, it->dir);
	rd_name(r, it->name);
	memset(&it->info, 0, sizeof(it->info));
	it->info.size = rd64(r);
	it->info.version = rd64(r);
	it->info.mtime_ns = (int64_t)rd64(r);
	it->info.mode = rd32(r);
	it->info.uid = rd32(r);
	it->info.gid = rd32(r);
	it->info.replicas = rd_replicas(r);
	rd_zero(r, 3);
	rd_holder(r, &it->holder);
}

static void rd_forget_item(struct rd *r, struct mr_forget_item *it)
{
	rd_dir(r, it->dir);
	rd_name(r, it->name);
	it->node = rd64(r);
	it->generation = rd64(r);
}

static void rd_init(struct rd *r, const void *buf, size_t len)
{
	r->bad = !buf || len > MR_MSG_MAX;
	r->p = r->bad ? NULL : buf;
	r->end = r->bad ? NULL : r->p + len;
}

/* Check the count items of an ANNOUNCE or FORGET batch and remember where they start. */
static void rd_batch(struct rd *r, struct mr_req *req)
{
	req->count = rd32(r);
	if (req->count > MR_BATCH_MAX) {
		r->bad = true;
		return;
	}
	req->it = (struct mr_iter){.p = r->p, .end = r->end, .left = req->count};
	for (uint32_t i = 0; i < req->count && !r->bad; i++) {
		if (req->op == MR_ANNOUNCE) {
			struct mr_announce_item it;

			rd_announce_item(r, &it);
		} else {
			struct mr_forget_item it;

			rd_forget_item(r, &it);
		}
	}
}

int mr_req_decode(const void *buf, size_t len, struct mr_req *req)
{
	struct rd r;
	uint8_t op;

	rd_init(&r, buf, len);
	memset(req, 0, sizeof(*req));
	op = rd8(&r);
	rd_zero(&r, 3);
	if (r.bad || op < MR_ANNOUNCE || op > MR_OP_MAX)
		return -EBADMSG;
	req->op = (enum mr_op)op;
	switch (req->op) {
	case MR_ANNOUNCE:
	case MR_FORGET:
		rd_batch(&r, req);
		break;
	case MR_GET:
		rd_dir(&r, req->dir);
		rd_name(&r, req->name);
		break;
	case MR_UNLINK:
		rd_dir(&r, req->dir);
		rd_name(&r, req->name);
		req->version = rd64(&r);
		break;
	case MR_LIST:
		rd_dir(&r, req->dir);
		req->cursor = rd64(&r);
		req->max = rd32(&r);
		if (req->max < 1 || req->max > MR_LIST_MAX)
			r.bad = true;
		break;
	case MR_REPLICATE:
		rd_dir(&r, req->dir);
		rd_name(&r, req->name);
		rd_info(&r, &req->info);
		break;
	case MR_DROP:
		rd_dir(&r, req->dir);
		rd_name(&r, req->name);
		req->generation = rd64(&r);
		break;
	case MR_FORGET_NODE:
		req->node = rd64(&r);
		break;
	}
	return rd_end(&r);
}

bool mr_announce_next(struct mr_req *req, struct mr_announce_item *it)
{
	struct rd r = {.p = req->it.p, .end = req->it.end};

	if (req->op != MR_ANNOUNCE || req->it.left == 0)
		return false;
	rd_announce_item(&r, it);
	req->it.p = r.p;
	req->it.left--;
	return !r.bad;
}

bool mr_forget_next(struct mr_req *req, struct mr_forget_item *it)
{
	struct rd r = {.p = req->it.p, .end = req->it.end};

	if (req->op != MR_FORGET || req->it.left == 0)
		return false;
	rd_forget_item(&r, it);
	req->it.p = r.p;
	req->it.left--;
	return !r.bad;
}

int mr_empty_decode(const void *buf, size_t len)
{
	(void)buf;
	return len == 0 ? 0 : -EBADMSG;
}

int mr_status_decode(const void *buf, size_t len, struct mr_status *out, unsigned max)
{
	struct rd r;
	uint32_t count;

	rd_init(&r, buf, len);
	count = rd32(&r);
	if (r.bad || count > MR_BATCH_MAX || count > max)
		return -EBADMSG;
	for (uint32_t i = 0; i < count && !r.bad; i++) {
		out[i].status = rd32(&r);
		out[i].version = rd64(&r);
		if (out[i].status > MR_ERRNO_MAX)
			r.bad = true;
	}
	return rd_end(&r) ? -EBADMSG : (int)count;
}

int mr_info_decode(const void *buf, size_t len, struct ent_info *info)
{
	struct rd r;

	rd_init(&r, buf, len);
	rd_info(&r, info);
	return rd_end(&r);
}

static void rd_list_item(struct rd *r, struct mr_list_item *it)
{
	rd_name(r, it->name);
	it->size = rd64(r);
	it->mtime_ns = (int64_t)rd64(r);
	it->mode = rd32(r);
}

int mr_list_reply_decode(const void *buf, size_t len, struct mr_list_reply *lr)
{
	struct mr_list_item it;
	struct rd r;
	uint8_t done;

	rd_init(&r, buf, len);
	memset(lr, 0, sizeof(*lr));
	lr->next_cursor = rd64(&r);
	done = rd8(&r);
	rd_zero(&r, 3);
	lr->count = rd32(&r);
	if (r.bad || done > 1 || lr->count > MR_LIST_MAX)
		return -EBADMSG;
	lr->done = done;
	lr->it = (struct mr_iter){.p = r.p, .end = r.end, .left = lr->count};
	for (uint32_t i = 0; i < lr->count && !r.bad; i++)
		rd_list_item(&r, &it);
	return rd_end(&r);
}

bool mr_list_next(struct mr_list_reply *lr, struct mr_list_item *it)
{
	struct rd r = {.p = lr->it.p, .end = lr->it.end};

	if (lr->it.left == 0)
		return false;
	rd_list_item(&r, it);
	lr->it.p = r.p;
	lr->it.left--;
	return !r.bad;
}
