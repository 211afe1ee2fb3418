/*
 * Unit tests of meta/mrpc.c: every message and reply round-trips; the byte layout of one
 * message is checked by hand; every truncation, trailing byte, bad op, bad name or dir,
 * oversized count, bad nholders or replicas and nonzero reserved byte is -EBADMSG; encoders
 * refuse what decoders would; batches stop at MR_BATCH_MAX items or MR_MSG_MAX bytes; a full
 * LIST page of the longest names fits; random corruption never reads out of bounds.
 */
#include "meta/mrpc.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decode buf as whatever kind says; 0 or -EBADMSG. */
enum kind { K_REQ, K_STATUS, K_INFO, K_LIST, K_EMPTY };

static int decode_as(enum kind k, const uint8_t *buf, size_t len)
{
	struct mr_req req;
	struct mr_status st[MR_BATCH_MAX];
	struct ent_info info;
	struct mr_list_reply lr;
	int rc;

	switch (k) {
	case K_REQ:
		return mr_req_decode(buf, len, &req);
	case K_STATUS:
		rc = mr_status_decode(buf, len, st, MR_BATCH_MAX);
		return rc < 0 ? rc : 0;
	case K_INFO:
		return mr_info_decode(buf, len, &info);
	case K_LIST:
		return mr_list_reply_decode(buf, len, &lr);
	case K_EMPTY:
		return mr_empty_decode(buf, len);
	}
	return -1;
}

/* The message decodes; every proper prefix and every extension by one byte does not. The
 * copies are exact-size heap blocks so that ASan catches a read past the end. */
static void check_exact(enum kind k, const struct mr_buf *b)
{
	uint8_t *p;

	CHECK(decode_as(k, b->data, b->len) == 0);
	for (size_t n = 0; n < b->len; n++) {
		p = malloc(n ? n : 1);
		REQUIRE(p);
		memcpy(p, b->data, n);
		if (decode_as(k, p, n) != -EBADMSG) {
			fprintf(stderr, "  kind %d: prefix of %zu of %zu bytes decoded\n", k, n,
				b->len);
			CHECK(0);
		}
		free(p);
	}
	p = malloc(b->len + 1);
	REQUIRE(p);
	memcpy(p, b->data, b->len);
	for (int v = 0; v < 256; v += 85) {
		p[b->len] = (uint8_t)v;
		CHECK(decode_as(k, p, b->len + 1) == -EBADMSG);
	}
	free(p);
}

/* A copy of b with byte off set to v decodes to -EBADMSG. */
static bool bad_with(enum kind k, const struct mr_buf *b, size_t off, uint8_t v)
{
	uint8_t *p = malloc(b->len);
	bool bad;

	if (!p)
		return false;
	memcpy(p, b->data, b->len);
	p[off] = v;
	bad = decode_as(k, p, b->len) == -EBADMSG;
	free(p);
	return bad;
}

static struct ent_info sample_info(unsigned nholders)
{
	struct ent_info info = {.size = 0x1122334455667788ull,
				.version = 0x0102030405060708ull,
				.mtime_ns = -12345678901234ll,
				.mode = 0100644,
				.uid = 0x81828384,
				.gid = 0x91929394,
				.replicas = 3,
				.nholders = (uint8_t)nholders};

	for (unsigned i = 0; i < nholders; i++)
		info.holders[i] = (struct ent_holder){
		    .node = 1000 + i, .offset = (uint64_t)i << 40 | 7, .generation = 90 + i};
	return info;
}

static bool info_eq(const struct ent_info *a, const struct ent_info *b)
{
	if (a->size != b->size || a->version != b->version || a->mtime_ns != b->mtime_ns ||
	    a->mode != b->mode || a->uid != b->uid || a->gid != b->gid ||
	    a->replicas != b->replicas || a->nholders != b->nholders)
		return false;
	for (unsigned i = 0; i < a->nholders; i++)
		if (a->holders[i].node != b->holders[i].node ||
		    a->holders[i].offset != b->holders[i].offset ||
		    a->holders[i].generation != b->holders[i].generation)
			return false;
	return true;
}

/* Round trips */

static void test_announce(void)
{
	struct mr_buf b;
	struct mr_req req;
	struct mr_announce_item it;
	struct ent_info info = sample_info(0);
	struct ent_holder h = {.node = 5, .offset = 4096, .generation = 77};
	struct mr_forget_item fit;

	mr_buf_init(&b);
	REQUIRE(mr_announce_start(&b) == 0);
	CHECK(mr_req_decode(b.data, b.len, &req) == 0 && req.op == MR_ANNOUNCE && req.count == 0);
	CHECK(!mr_announce_next(&req, &it));
	check_exact(K_REQ, &b);
	CHECK(mr_announce_add(&b, "", "blk0", &info, &h) == 0);
	info.version++;
	h.node++;
	CHECK(mr_announce_add(&b, "a/b", "blk1", &info, &h) == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_ANNOUNCE && req.count == 2);
	REQUIRE(mr_announce_next(&req, &it));
	CHECK(strcmp(it.dir, "") == 0 && strcmp(it.name, "blk0") == 0);
	info.version--;
	CHECK(info_eq(&it.info, &info) == true);
	CHECK(it.holder.node == 5 && it.holder.offset == 4096 && it.holder.generation == 77);
	REQUIRE(mr_announce_next(&req, &it));
	CHECK(strcmp(it.dir, "a/b") == 0 && strcmp(it.name, "blk1") == 0);
	CHECK(it.info.version == info.version + 1 && it.holder.node == 6);
	CHECK(!mr_announce_next(&req, &it));
	CHECK(!mr_forget_next(&req, &fit)); /* the wrong iterator */
	check_exact(K_REQ, &b);
	mr_buf_free(&b);
}

static void test_forget(void)
{
	struct mr_buf b;
	struct mr_req req;
	struct mr_forget_item it;
	struct mr_announce_item ait;

	mr_buf_init(&b);
	REQUIRE(mr_forget_start(&b) == 0);
	CHECK(mr_forget_add(&b, "x", "n1", 1, 2) == 0);
	CHECK(mr_forget_add(&b, "x/y/z", "n2", UINT64_MAX, 0) == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_FORGET && req.count == 2);
	CHECK(!mr_announce_next(&req, &ait));
	REQUIRE(mr_forget_next(&req, &it));
	CHECK(strcmp(it.dir, "x") == 0 && strcmp(it.name, "n1") == 0 && it.node == 1 &&
	      it.generation == 2);
	REQUIRE(mr_forget_next(&req, &it));
	CHECK(strcmp(it.dir, "x/y/z") == 0 && strcmp(it.name, "n2") == 0 && it.node == UINT64_MAX &&
	      it.generation == 0);
	CHECK(!mr_forget_next(&req, &it));
	check_exact(K_REQ, &b);
	mr_buf_free(&b);
}

static void test_single_requests(void)
{
	struct mr_buf b;
	struct mr_req req;
	struct ent_info info = sample_info(ENT_MAX_HOLDERS);

	mr_buf_init(&b);
	REQUIRE(mr_get_encode(&b, "d/e", "name") == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_GET && strcmp(req.dir, "d/e") == 0 && strcmp(req.name, "name") == 0);
	check_exact(K_REQ, &b);

	REQUIRE(mr_unlink_encode(&b, "", "n", 0xfedcba9876543210ull) == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_UNLINK && strcmp(req.dir, "") == 0 && strcmp(req.name, "n") == 0);
	CHECK(req.version == 0xfedcba9876543210ull);
	check_exact(K_REQ, &b);

	REQUIRE(mr_list_encode(&b, "big", 0x8000000000000001ull, MR_LIST_MAX) == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_LIST && strcmp(req.dir, "big") == 0);
	CHECK(req.cursor == 0x8000000000000001ull && req.max == MR_LIST_MAX);
	check_exact(K_REQ, &b);

	REQUIRE(mr_replicate_encode(&b, "r", "blk", &info) == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_REPLICATE && strcmp(req.dir, "r") == 0 && strcmp(req.name, "blk") == 0);
	CHECK(info_eq(&req.info, &info));
	check_exact(K_REQ, &b);

	REQUIRE(mr_drop_encode(&b, "r/s", "blk", 31) == 0);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_DROP && strcmp(req.dir, "r/s") == 0 && strcmp(req.name, "blk") == 0);
	CHECK(req.generation == 31);
	check_exact(K_REQ, &b);

	REQUIRE(mr_forget_node_encode(&b, 0xa1b2c3d4e5f60718ull) == 0);
	REQUIRE(b.len == 12);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0);
	CHECK(req.op == MR_FORGET_NODE && req.node == 0xa1b2c3d4e5f60718ull);
	check_exact(K_REQ, &b);
	mr_buf_free(&b);
}

static void test_replies(void)
{
	struct mr_buf b;
	struct mr_status st[4];
	struct ent_info info = sample_info(2), got;
	struct mr_list_reply lr;
	struct mr_list_item it;

	mr_buf_init(&b);
	REQUIRE(mr_status_start(&b) == 0);
	CHECK(mr_status_decode(b.data, b.len, st, 0) == 0);
	CHECK(mr_status_add(&b, 0, 10) == 0);
	CHECK(mr_status_add(&b, ESTALE, 20) == 0);
	CHECK(mr_status_add(&b, MR_ERRNO_MAX, UINT64_MAX) == 0);
	CHECK(mr_status_add(&b, MR_ERRNO_MAX + 1, 0) == -EINVAL);
	REQUIRE(mr_status_decode(b.data, b.len, st, 4) == 3);
	CHECK(st[0].status == 0 && st[0].version == 10);
	CHECK(st[1].status == ESTALE && st[1].version == 20);
	CHECK(st[2].status == MR_ERRNO_MAX && st[2].version == UINT64_MAX);
	CHECK(mr_status_decode(b.data, b.len, st, 2) == -EBADMSG); /* more than asked for */
	check_exact(K_STATUS, &b);

	REQUIRE(mr_info_encode(&b, &info) == 0);
	REQUIRE(mr_info_decode(b.data, b.len, &got) == 0);
	CHECK(info_eq(&got, &info));
	check_exact(K_INFO, &b);

	REQUIRE(mr_list_reply_start(&b) == 0);
	CHECK(mr_list_reply_finish(&b, UINT64_MAX, true) == 0);
	REQUIRE(mr_list_reply_decode(b.data, b.len, &lr) == 0);
	CHECK(lr.done && lr.count == 0 && lr.next_cursor == UINT64_MAX);
	CHECK(!mr_list_next(&lr, &it));
	check_exact(K_LIST, &b);
	REQUIRE(mr_list_reply_start(&b) == 0);
	CHECK(mr_list_reply_add(&b, "one", 1, -1, 0100600) == 0);
	mr_list_reply_fill(&b, "two", &info);
	CHECK(mr_list_reply_finish(&b, 0x1234, false) == 0);
	REQUIRE(mr_list_reply_decode(b.data, b.len, &lr) == 0);
	CHECK(!lr.done && lr.count == 2 && lr.next_cursor == 0x1234);
	REQUIRE(mr_list_next(&lr, &it));
	CHECK(strcmp(it.name, "one") == 0 && it.size == 1 && it.mtime_ns == -1 &&
	      it.mode == 0100600);
	REQUIRE(mr_list_next(&lr, &it));
	CHECK(strcmp(it.name, "two") == 0 && it.size == info.size && it.mtime_ns == info.mtime_ns &&
	      it.mode == info.mode);
	CHECK(!mr_list_next(&lr, &it));
	check_exact(K_LIST, &b);
	/* a fill that fails is reported by the finish */
	REQUIRE(mr_list_reply_start(&b) == 0);
	mr_list_reply_fill(&b, "..", &info);
	mr_list_reply_fill(&b, "ok", &info);
	CHECK(mr_list_reply_finish(&b, 0, true) == -EINVAL);

	CHECK(mr_empty_decode(NULL, 0) == 0);
	CHECK(mr_empty_decode("x", 1) == -EBADMSG);
	mr_buf_free(&b);
}

/* The bytes of one message, by hand: the format is the ABI between daemons. */
static void test_layout(void)
{
	struct mr_buf b;
	struct ent_info info = {
	    .size = 1, .version = 2, .mtime_ns = 3, .mode = 4, .uid = 9, .gid = 10, .replicas = 5};
	struct ent_holder h = {.node = 6, .offset = 7, .generation = 8};
	static const uint8_t want[] = {
	    MR_ANNOUNCE, 0, 0,	 0,   1,   0, 0, 0,	   /* op, zero, count */
	    3,		 0, 'a', '/', 'b', 2, 0, 'n', 'm', /* dir, name */
	    1,		 0, 0,	 0,   0,   0, 0, 0,   2,   0, 0, 0, 0, 0, 0, 0, /* size, version */
	    3,		 0, 0,	 0,   0,   0, 0, 0,   4,   0, 0, 0,		/* mtime, mode */
	    9,		 0, 0,	 0,   10,  0, 0, 0,				/* uid, gid */
	    5,		 0, 0,	 0,						/* replicas, zero */
	    6,		 0, 0,	 0,   0,   0, 0, 0,   7,   0, 0, 0, 0, 0, 0, 0, /* node, offset */
	    8,		 0, 0,	 0,   0,   0, 0, 0};				/* generation */

	mr_buf_init(&b);
	REQUIRE(mr_announce_start(&b) == 0);
	REQUIRE(mr_announce_add(&b, "a/b", "nm", &info, &h) == 0);
	CHECK(b.len == sizeof(want) && memcmp(b.data, want, sizeof(want)) == 0);
	mr_buf_free(&b);
}

/* Malformed messages */

static void test_bad_op_and_reserved(void)
{
	struct mr_list_reply lr;
	struct mr_buf b;
	struct ent_info info = sample_info(1);
	struct ent_holder h = {.node = 1};
	size_t item;

	mr_buf_init(&b);
	REQUIRE(mr_get_encode(&b, "d", "n") == 0);
	CHECK(bad_with(K_REQ, &b, 0, 0));
	CHECK(bad_with(K_REQ, &b, 0, MR_OP_MAX + 1));
	CHECK(bad_with(K_REQ, &b, 0, 255));
	for (size_t i = 1; i < 4; i++)
		CHECK(bad_with(K_REQ, &b, i, 1) && bad_with(K_REQ, &b, i, 0x80));

	/* ANNOUNCE item: 3 zero bytes after replicas */
	REQUIRE(mr_announce_start(&b) == 0);
	REQUIRE(mr_announce_add(&b, "d", "n", &info, &h) == 0);
	item = 8 + 3 + 3 + 36; /* header, dir, name, size..gid */
	CHECK(!bad_with(K_REQ, &b, item, 2));
	CHECK(bad_with(K_REQ, &b, item, 0) && bad_with(K_REQ, &b, item, ENT_MAX_HOLDERS + 1));
	for (size_t i = 1; i <= 3; i++)
		CHECK(bad_with(K_REQ, &b, item + i, 1));

	/* info: replicas, nholders, 2 zero bytes */
	REQUIRE(mr_info_encode(&b, &info) == 0);
	CHECK(bad_with(K_INFO, &b, 36, 0) && bad_with(K_INFO, &b, 36, ENT_MAX_HOLDERS + 1));
	CHECK(bad_with(K_INFO, &b, 37, 0) && bad_with(K_INFO, &b, 37, 2));
	CHECK(bad_with(K_INFO, &b, 38, 1) && bad_with(K_INFO, &b, 39, 1));

	/* LIST reply: done 0/1 only, 3 zero bytes */
	REQUIRE(mr_list_reply_start(&b) == 0);
	REQUIRE(mr_list_reply_add(&b, "n", 0, 0, 0) == 0);
	REQUIRE(mr_list_reply_finish(&b, 1, true) == 0);
	CHECK(!bad_with(K_LIST, &b, 8, 0));
	CHECK(bad_with(K_LIST, &b, 8, 2));
	for (size_t i = 9; i < 12; i++)
		CHECK(bad_with(K_LIST, &b, i, 1));
	/* an empty page that is not the last is fine (a server may filter what it lists) */
	REQUIRE(mr_list_reply_start(&b) == 0);
	REQUIRE(mr_list_reply_finish(&b, 1, false) == 0);
	CHECK(mr_list_reply_decode(b.data, b.len, &lr) == 0 && !lr.done && lr.count == 0);
	check_exact(K_LIST, &b);
	/* finish without start */
	mr_buf_free(&b);
	CHECK(mr_list_reply_finish(&b, 1, true) == -EINVAL);

	/* STATUS: a status above MR_ERRNO_MAX */
	REQUIRE(mr_status_start(&b) == 0);
	REQUIRE(mr_status_add(&b, 5, 0) == 0);
	CHECK(bad_with(K_STATUS, &b, 5, (MR_ERRNO_MAX + 1) >> 8));
	CHECK(bad_with(K_STATUS, &b, 7, 0x80));
	mr_buf_free(&b);
}

/* A GET request with raw dir and name bytes. */
static size_t raw_get(uint8_t *out, const char *dir, size_t dl, const char *name, size_t nl)
{
	size_t n = 0;

	out[n++] = MR_GET;
	out[n++] = 0;
	out[n++] = 0;
	out[n++] = 0;
	out[n++] = (uint8_t)dl;
	out[n++] = (uint8_t)(dl >> 8);
	memcpy(out + n, dir, dl);
	n += dl;
	out[n++] = (uint8_t)nl;
	out[n++] = (uint8_t)(nl >> 8);
	memcpy(out + n, name, nl);
	return n + nl;
}

static int get_raw(const char *dir, size_t dl, const char *name, size_t nl)
{
	static uint8_t buf[8 + 2048 + 512];
	struct mr_req req;
	size_t n = raw_get(buf, dir, dl, name, nl);

	return mr_req_decode(buf, n, &req);
}

static void test_bad_names(void)
{
	char big[1100];
	struct mr_buf b;
	struct ent_info info = sample_info(1);
	struct ent_holder h = {.node = 1};
	const char *bad[] = {".", "..", "a/b", "/", "a/", "/a"};
	const char *good[] = {"...", ".a", "a.", "..a", "-", " "};

	memset(big, 'x', sizeof(big));
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(get_raw("d", 1, bad[i], strlen(bad[i])) == -EBADMSG);
		CHECK(!mr_name_ok(bad[i]));
	}
	for (unsigned i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CHECK(get_raw("d", 1, good[i], strlen(good[i])) == 0);
		CHECK(mr_name_ok(good[i]));
	}
	CHECK(get_raw("d", 1, "", 0) == -EBADMSG);
	CHECK(get_raw("d", 1, "a\0b", 3) == -EBADMSG);
	CHECK(get_raw("d", 1, "ab\0", 3) == -EBADMSG);
	CHECK(get_raw("d", 1, big, MR_NAME_MAX) == 0);
	CHECK(get_raw("d", 1, big, MR_NAME_MAX + 1) == -EBADMSG);
	{
		/* a length far past the buffer */
		uint8_t m[] = {MR_GET, 0, 0, 0, 1, 0, 'd', 0xff, 0xff, 'n'};
		struct mr_req req;

		CHECK(mr_req_decode(m, sizeof(m), &req) == -EBADMSG);
	}

	/* the encoders refuse the same */
	mr_buf_init(&b);
	CHECK(mr_get_encode(&b, "d", "..") == -EINVAL);
	CHECK(mr_get_encode(&b, "d", "") == -EINVAL);
	CHECK(mr_get_encode(&b, "d", NULL) == -EINVAL);
	CHECK(mr_get_encode(&b, NULL, "n") == -EINVAL);
	CHECK(mr_drop_encode(&b, "d", "a/b", 1) == -EINVAL);
	big[MR_NAME_MAX + 1] = '\0';
	CHECK(mr_unlink_encode(&b, "d", big, 1) == -EINVAL);
	big[MR_NAME_MAX] = '\0';
	CHECK(mr_unlink_encode(&b, "d", big, 1) == 0);
	REQUIRE(mr_announce_start(&b) == 0);
	CHECK(mr_announce_add(&b, "d", ".", &info, &h) == -EINVAL);
	CHECK(mr_forget_add(&b, "d", "..", 1, 1) == -EINVAL);
	REQUIRE(mr_list_reply_start(&b) == 0);
	CHECK(mr_list_reply_add(&b, "x/y", 0, 0, 0) == -EINVAL);
	mr_buf_free(&b);
}

static void test_bad_dirs(void)
{
	char big[MR_DIR_MAX + 2];
	struct mr_buf b;
	const char *bad[] = {"/",   "/a",    "a/",     "a//b", ".",    "..",	"./a",
			     "a/.", "a/./b", "a/../b", "../a", "a/..", "a/b//", "//"};
	const char *good[] = {"", "a", "a/b", "a/.b/..c/...", ".x", "x./y.."};

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(get_raw(bad[i], strlen(bad[i]), "n", 1) == -EBADMSG);
		CHECK(!mr_dir_ok(bad[i]));
	}
	for (unsigned i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CHECK(get_raw(good[i], strlen(good[i]), "n", 1) == 0);
		CHECK(mr_dir_ok(good[i]));
	}
	CHECK(get_raw("a\0b", 3, "n", 1) == -EBADMSG);
	CHECK(get_raw("a\0", 2, "n", 1) == -EBADMSG);
	memset(big, 'd', sizeof(big));
	big[500] = '/';
	CHECK(get_raw(big, MR_DIR_MAX, "n", 1) == 0);
	CHECK(get_raw(big, MR_DIR_MAX + 1, "n", 1) == -EBADMSG);

	mr_buf_init(&b);
	big[MR_DIR_MAX + 1] = '\0';
	CHECK(mr_get_encode(&b, big, "n") == -EINVAL);
	CHECK(!mr_dir_ok(big));
	big[MR_DIR_MAX] = '\0';
	CHECK(mr_get_encode(&b, big, "n") == 0);
	CHECK(mr_list_encode(&b, "a/", 0, 1) == -EINVAL);
	CHECK(mr_forget_start(&b) == 0 && mr_forget_add(&b, "/a", "n", 1, 1) == -EINVAL);
	mr_buf_free(&b);
}

static void test_bad_counts(void)
{
	struct mr_buf b;
	struct ent_info info = sample_info(1);
	struct mr_req req;
	struct mr_status st[1];

	mr_buf_init(&b);
	/* LIST max */
	CHECK(mr_list_encode(&b, "d", 0, 0) == -EINVAL);
	CHECK(mr_list_encode(&b, "d", 0, MR_LIST_MAX + 1) == -EINVAL);
	REQUIRE(mr_list_encode(&b, "d", 0, 1) == 0);
	/* max sits in the last 4 bytes */
	CHECK(bad_with(K_REQ, &b, b.len - 4, 0));
	{
		uint32_t over = MR_LIST_MAX + 1;

		for (int i = 0; i < 4; i++)
			b.data[b.len - 4 + i] = (uint8_t)(over >> (8 * i));
		CHECK(mr_req_decode(b.data, b.len, &req) == -EBADMSG);
	}

	/* batch counts over MR_BATCH_MAX, followed by enough bytes */
	{
		size_t len = 8 + (MR_BATCH_MAX + 1) * 12;
		uint8_t *m = calloc(1, len);
		uint32_t count = MR_BATCH_MAX + 1;

		REQUIRE(m);
		m[0] = MR_FORGET;
		for (int i = 0; i < 4; i++)
			m[4 + i] = (uint8_t)(count >> (8 * i));
		CHECK(mr_req_decode(m, len, &req) == -EBADMSG);
		m[0] = MR_ANNOUNCE;
		CHECK(mr_req_decode(m, len, &req) == -EBADMSG);
		/* a STATUS reply of 1025 well-formed entries */
		for (int i = 0; i < 4; i++)
			m[i] = (uint8_t)(count >> (8 * i));
		CHECK(mr_status_decode(m, 4 + count * 12, st, UINT32_MAX) == -EBADMSG);
		count--;
		for (int i = 0; i < 4; i++)
			m[i] = (uint8_t)(count >> (8 * i));
		{
			struct mr_status *all = calloc(MR_BATCH_MAX, sizeof(*all));

			REQUIRE(all);
			CHECK(mr_status_decode(m, 4 + count * 12, all, MR_BATCH_MAX) ==
			      MR_BATCH_MAX);
			free(all);
		}
		free(m);
	}
	/* a count larger than the items present */
	REQUIRE(mr_forget_start(&b) == 0);
	REQUIRE(mr_forget_add(&b, "d", "n", 1, 1) == 0);
	CHECK(bad_with(K_REQ, &b, 4, 2) && bad_with(K_REQ, &b, 4, 0));
	/* LIST reply count over MR_LIST_MAX */
	REQUIRE(mr_list_reply_start(&b) == 0);
	REQUIRE(mr_list_reply_finish(&b, 0, true) == 0);
	{
		uint32_t over = MR_LIST_MAX + 1;

		for (int i = 0; i < 4; i++)
			b.data[12 + i] = (uint8_t)(over >> (8 * i));
		CHECK(decode_as(K_LIST, b.data, b.len) == -EBADMSG);
	}

	/* nholders and replicas */
	for (unsigned nh = 0; nh <= ENT_MAX_HOLDERS + 1; nh++) {
		bool ok = nh >= 1 && nh <= ENT_MAX_HOLDERS;

		info = sample_info(nh > ENT_MAX_HOLDERS ? ENT_MAX_HOLDERS : nh);
		info.nholders = (uint8_t)nh;
		CHECK((mr_info_encode(&b, &info) == 0) == ok);
		CHECK((mr_replicate_encode(&b, "d", "n", &info) == 0) == ok);
	}
	info = sample_info(2);
	REQUIRE(mr_info_encode(&b, &info) == 0);
	CHECK(bad_with(K_INFO, &b, 37, ENT_MAX_HOLDERS + 1));
	info.holders[1].node = info.holders[0].node; /* the same node twice */
	CHECK(mr_info_encode(&b, &info) == -EINVAL);
	info = sample_info(2);
	REQUIRE(mr_info_encode(&b, &info) == 0);
	CHECK(bad_with(K_INFO, &b, 40 + 24, (uint8_t)info.holders[0].node)); /* holder 1 = 0 */
	for (unsigned r = 0; r <= ENT_MAX_HOLDERS + 1; r += ENT_MAX_HOLDERS + 1) {
		struct ent_holder h = {.node = 1};

		info.replicas = (uint8_t)r;
		CHECK(mr_info_encode(&b, &info) == -EINVAL);
		CHECK(mr_announce_start(&b) == 0 &&
		      mr_announce_add(&b, "d", "n", &info, &h) == -EINVAL);
	}
	mr_buf_free(&b);
}

/* Batches fill up: MR_BATCH_MAX items, or MR_MSG_MAX bytes, whichever comes first. */
static void test_batch_limits(void)
{
	struct mr_buf b;
	struct mr_req req;
	struct mr_forget_item fit;
	struct mr_announce_item ait;
	struct ent_info info = sample_info(1);
	struct ent_holder h = {.node = 1};
	char dir[MR_DIR_MAX + 1], name[MR_NAME_MAX + 1];
	unsigned n = 0;
	int rc;

	mr_buf_init(&b);
	REQUIRE(mr_forget_start(&b) == 0);
	for (unsigned i = 0; i < MR_BATCH_MAX; i++) {
		snprintf(name, sizeof(name), "n%u", i);
		CHECK(mr_forget_add(&b, "d", name, i, i) == 0);
	}
	CHECK(mr_forget_add(&b, "d", "more", 1, 1) == -E2BIG);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0 && req.count == MR_BATCH_MAX);
	while (mr_forget_next(&req, &fit)) {
		snprintf(name, sizeof(name), "n%u", n);
		CHECK(strcmp(fit.name, name) == 0 && fit.node == n);
		n++;
	}
	CHECK(n == MR_BATCH_MAX);

	/* the longest dirs and names: bytes run out first */
	memset(dir, 'd', MR_DIR_MAX);
	dir[MR_DIR_MAX] = '\0';
	memset(name, 'n', MR_NAME_MAX);
	name[MR_NAME_MAX] = '\0';
	REQUIRE(mr_announce_start(&b) == 0);
	n = 0;
	for (;;) {
		size_t len = b.len;

		rc = mr_announce_add(&b, dir, name, &info, &h);
		if (rc) {
			CHECK(b.len == len); /* nothing of the refused item was written */
			break;
		}
		n++;
	}
	CHECK(rc == -E2BIG);
	CHECK(n < MR_BATCH_MAX && b.len <= MR_MSG_MAX && b.len + 1338 > MR_MSG_MAX);
	REQUIRE(mr_req_decode(b.data, b.len, &req) == 0 && req.count == n);
	for (unsigned i = 0; i < n; i++) {
		REQUIRE(mr_announce_next(&req, &ait));
		CHECK(strlen(ait.dir) == MR_DIR_MAX && strlen(ait.name) == MR_NAME_MAX);
	}
	CHECK(!mr_announce_next(&req, &ait));
	/* nothing over MR_MSG_MAX decodes */
	{
		uint8_t *m = calloc(1, MR_MSG_MAX + 1);

		REQUIRE(m);
		CHECK(mr_empty_decode(m, MR_MSG_MAX + 1) == -EBADMSG);
		CHECK(mr_info_decode(m, MR_MSG_MAX + 1, &info) == -EBADMSG);
		m[0] = MR_FORGET;
		CHECK(mr_req_decode(m, 8, &req) == 0);
		CHECK(mr_req_decode(m, MR_MSG_MAX + 1, &req) == -EBADMSG);
		free(m);
	}
	mr_buf_free(&b);
}

/* A full LIST page of the longest names, filled straight from the entry store, fits. */
static void test_full_list_page(void)
{
	struct ents *s;
	struct mr_buf b;
	struct mr_list_reply lr;
	struct mr_list_item it;
	struct ent_info info = sample_info(0);
	struct ent_holder h = {.node = 1};
	char name[MR_NAME_MAX + 1];
	uint64_t cursor = 0;
	bool done = false;
	unsigned total = 0, pages = 0;
	int n;

	REQUIRE(ents_create(&s) == 0);
	memset(name, 'n', MR_NAME_MAX);
	name[MR_NAME_MAX] = '\0';
	info.replicas = 1;
	for (unsigned i = 0; i < MR_LIST_MAX + 10; i++) {
		snprintf(name, 12, "%010u", i);
		name[10] = 'n';
		REQUIRE(ents_add(s, "dir", name, &info, &h, NULL, NULL, NULL) == 0);
	}
	mr_buf_init(&b);
	while (!done) {
		REQUIRE(mr_list_reply_start(&b) == 0);
		n = ents_list(s, "dir", &cursor, MR_LIST_MAX, &done, mr_list_reply_fill, &b);
		REQUIRE(mr_list_reply_finish(&b, cursor, done) == 0);
		CHECK(b.len <= MR_MSG_MAX);
		REQUIRE(mr_list_reply_decode(b.data, b.len, &lr) == 0);
		CHECK((int)lr.count == n && lr.done == done && lr.next_cursor == cursor);
		while (mr_list_next(&lr, &it)) {
			CHECK(strlen(it.name) == MR_NAME_MAX);
			total++;
		}
		pages++;
	}
	CHECK(total == MR_LIST_MAX + 10 && pages == 2);
	/* one more name than a page may hold is refused */
	REQUIRE(mr_list_reply_start(&b) == 0);
	for (unsigned i = 0; i < MR_LIST_MAX; i++)
		REQUIRE(mr_list_reply_add(&b, name, 0, 0, 0) == 0);
	CHECK(mr_list_reply_add(&b, "x", 0, 0, 0) == -E2BIG);
	mr_buf_free(&b);
	ents_destroy(s);
}

/* Random corruption of valid messages: decoders answer 0 or -EBADMSG and ASan sees no stray
 * read (every copy is an exact-size heap block). */
static void test_corruption(void)
{
	struct mr_buf msgs[6];
	enum kind kinds[6] = {K_REQ, K_REQ, K_REQ, K_INFO, K_LIST, K_STATUS};
	struct ent_info info = sample_info(3);
	struct ent_holder h = {.node = 1};
	uint64_t x = 88172645463325252ull;

	for (int i = 0; i < 6; i++)
		mr_buf_init(&msgs[i]);
	REQUIRE(mr_announce_start(&msgs[0]) == 0);
	REQUIRE(mr_announce_add(&msgs[0], "a/b", "c", &info, &h) == 0);
	REQUIRE(mr_announce_add(&msgs[0], "", "d", &info, &h) == 0);
	REQUIRE(mr_replicate_encode(&msgs[1], "x", "y", &info) == 0);
	REQUIRE(mr_list_encode(&msgs[2], "x/y", 3, 4) == 0);
	REQUIRE(mr_info_encode(&msgs[3], &info) == 0);
	REQUIRE(mr_list_reply_start(&msgs[4]) == 0);
	REQUIRE(mr_list_reply_add(&msgs[4], "p", 1, 2, 3) == 0);
	REQUIRE(mr_list_reply_add(&msgs[4], "q", 1, 2, 3) == 0);
	REQUIRE(mr_list_reply_finish(&msgs[4], 9, false) == 0);
	REQUIRE(mr_status_start(&msgs[5]) == 0);
	REQUIRE(mr_status_add(&msgs[5], 0, 1) == 0);
	for (int round = 0; round < 20000; round++) {
		struct mr_buf *m = &msgs[round % 6];
		uint8_t *p = malloc(m->len);
		int rc;

		REQUIRE(p);
		memcpy(p, m->data, m->len);
		for (int k = 0; k < 1 + round % 3; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			p[x % m->len] = (uint8_t)(x >> 32);
		}
		rc = decode_as(kinds[round % 6], p, m->len);
		CHECK(rc == 0 || rc == -EBADMSG);
		if (rc == 0 && kinds[round % 6] == K_REQ) {
			/* what decoded iterates cleanly */
			struct mr_req req;
			struct mr_announce_item it;
			unsigned n = 0;

			REQUIRE(mr_req_decode(p, m->len, &req) == 0);
			while (mr_announce_next(&req, &it))
				n++;
			CHECK(req.op != MR_ANNOUNCE || n == req.count);
		}
		free(p);
	}
	for (int i = 0; i < 6; i++)
		mr_buf_free(&msgs[i]);
}

int main(void)
{
	RUN(test_announce);
	RUN(test_forget);
	RUN(test_single_requests);
	RUN(test_replies);
	RUN(test_layout);
	RUN(test_bad_op_and_reserved);
	RUN(test_bad_names);
	RUN(test_bad_dirs);
	RUN(test_bad_counts);
	RUN(test_batch_limits);
	RUN(test_full_list_page);
	RUN(test_corruption);
	return check_summary();
}
