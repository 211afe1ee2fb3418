/*
 * fuzz_mrpc: a libFuzzer target for meta/mrpc.c, the codec of the metadata messages daemons
 * send each other (its decoders take bytes straight from the network).
 *
 * Built and run by tools/test.sh (clang -fsanitize=fuzzer,address,undefined). Any
 * disagreement aborts, which libFuzzer records as a crash with a reproducer. Each input is
 * used twice, as a message and as a recipe:
 *
 *   1. as a message: it is given to every decoder (request, STATUS, info, LIST reply, empty).
 *      An independent reading of mrpc.h (ref_*) must give the same verdict. What decodes must
 *      keep the header's promises (names pass mr_name_ok, dirs mr_dir_ok, counts and
 *      replicas/nholders in range, batch items read by mr_*_next exactly count times) and
 *      re-encode, through the public encoders, to the very same bytes;
 *   2. as a recipe: per message a control byte and a kind, then the arguments (dirs and names
 *      from a small alphabet that makes ".", "..", "//" and over-long strings likely, infos
 *      with duplicate holders now and then, batches of thousands of copies of one item to
 *      reach -E2BIG by count or by size). Every encoder's verdict must follow the format
 *      (-EINVAL exactly for what it forbids, -E2BIG exactly when full, a failed add leaves the
 *      message as it was), and what encodes decodes back to the same values;
 *   3. the recipe also writes raw messages by hand, a flaw or two away from valid (a NUL in a
 *      name, a count off by one, a reserved byte set, duplicate holders), which valid
 *      messages mutated byte by byte rarely are.
 *
 * The messages of 2 and 3 then go through step 1, as they are and with one bit flipped, cut
 * short or one byte longer.
 *
 * Messages are checked in exact-size heap copies, so that a read past the end shows up under
 * AddressSanitizer.
 *
 *   clang -std=c17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -D_GNU_SOURCE -I. tests/fuzz/fuzz_mrpc.c meta/mrpc.c -o build/fuzz_mrpc
 *   build/fuzz_mrpc -max_total_time=60
 */
#include "meta/mrpc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_mrpc: %s:%d: check failed: %s\n", __FILE__,          \
				__LINE__, #cond);                                                  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The reference: mrpc.h read a second way, as a cursor over counted bytes that only says
 * whether the whole message follows the format. */

static bool ref_name_ok(const uint8_t *s, size_t len)
{
	bool dots = true;

	if (len < 1 || len > MR_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '/' || s[i] == '\0')
			return false;
		dots = dots && s[i] == '.';
	}
	return !(dots && len <= 2);
}

static bool ref_dir_ok(const uint8_t *s, size_t len)
{
	size_t comp = 0; /* bytes in the component so far */
	bool dots = true;

	if (len > MR_DIR_MAX)
		return false;
	if (len == 0)
		return true;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '/') {
			if (comp == 0 || (dots && comp <= 2))
				return false;
			comp = 0;
			dots = true;
		} else if (s[i] == '\0') {
			return false;
		} else {
			comp++;
			dots = dots && s[i] == '.';
		}
	}
	return true;
}

static bool ref_cstr_dir_ok(const char *s)
{
	return s && ref_dir_ok((const uint8_t *)s, strlen(s));
}

static bool ref_cstr_name_ok(const char *s)
{
	return s && ref_name_ok((const uint8_t *)s, strlen(s));
}

struct ref {
	const uint8_t *p;
	size_t len, at;
	bool ok;
};

static uint64_t ref_u(struct ref *c, unsigned bytes)
{
	uint64_t v = 0;

	if (!c->ok || c->len - c->at < bytes) {
		c->ok = false;
		return 0;
	}
	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)c->p[c->at + i] << (8 * i);
	c->at += bytes;
	return v;
}

static void ref_skip(struct ref *c, size_t bytes)
{
	if (!c->ok || c->len - c->at < bytes)
		c->ok = false;
	else
		c->at += bytes;
}

static void ref_check(struct ref *c, bool cond)
{
	c->ok = c->ok && cond;
}

static void ref_str(struct ref *c, bool (*ok)(const uint8_t *, size_t))
{
	size_t len = (size_t)ref_u(c, 2);

	if (!c->ok || c->len - c->at < len) {
		c->ok = false;
		return;
	}
	ref_check(c, ok(c->p + c->at, len));
	c->at += len;
}

static void ref_info(struct ref *c)
{
	uint64_t nodes[ENT_MAX_HOLDERS];
	unsigned replicas, nholders;

	ref_skip(c, 8 + 8 + 8 + 4 + 4 + 4);
	replicas = (unsigned)ref_u(c, 1);
	nholders = (unsigned)ref_u(c, 1);
	ref_check(c, ref_u(c, 2) == 0);
	ref_check(c, replicas >= 1 && replicas <= ENT_MAX_HOLDERS);
	ref_check(c, nholders >= 1 && nholders <= ENT_MAX_HOLDERS);
	for (unsigned i = 0; c->ok && i < nholders; i++) {
		nodes[i] = ref_u(c, 8);
		ref_skip(c, 16);
		for (unsigned j = 0; j < i; j++)
			ref_check(c, nodes[j] != nodes[i]);
	}
}

static bool ref_end(struct ref *c)
{
	return c->ok && c->at == c->len && c->len <= MR_MSG_MAX;
}

static bool ref_req(const uint8_t *p, size_t len)
{
	struct ref c = {.p = p, .len = len, .ok = true};
	unsigned op = (unsigned)ref_u(&c, 1);
	uint32_t count;

	ref_check(&c, ref_u(&c, 3) == 0 && op >= MR_ANNOUNCE && op <= MR_OP_MAX);
	if (!c.ok)
		return false;
	switch (op) {
	case MR_ANNOUNCE:
	case MR_FORGET:
		count = (uint32_t)ref_u(&c, 4);
		ref_check(&c, count <= MR_BATCH_MAX);
		for (uint32_t i = 0; c.ok && i < count; i++) {
			ref_str(&c, ref_dir_ok);
			ref_str(&c, ref_name_ok);
			if (op == MR_FORGET) {
				ref_skip(&c, 16);
				continue;
			}
			ref_skip(&c, 8 + 8 + 8 + 4 + 4 + 4);
			unsigned replicas = (unsigned)ref_u(&c, 1);
			ref_check(&c, replicas >= 1 && replicas <= ENT_MAX_HOLDERS);
			ref_check(&c, ref_u(&c, 3) == 0);
			ref_skip(&c, 24);
		}
		break;
	case MR_LIST:
		ref_str(&c, ref_dir_ok);
		ref_u(&c, 8);
		count = (uint32_t)ref_u(&c, 4);
		ref_check(&c, count >= 1 && count <= MR_LIST_MAX);
		break;
	case MR_FORGET_NODE:
		ref_u(&c, 8);
		break;
	default: /* GET, UNLINK, REPLICATE, DROP: dir, name, then their own part */
		ref_str(&c, ref_dir_ok);
		ref_str(&c, ref_name_ok);
		if (op == MR_UNLINK || op == MR_DROP)
			ref_u(&c, 8);
		else if (op == MR_REPLICATE)
			ref_info(&c);
		break;
	}
	return ref_end(&c);
}

/* A STATUS reply of at most max items: its count, or -1. */
static long ref_status(const uint8_t *p, size_t len, unsigned max)
{
	struct ref c = {.p = p, .len = len, .ok = true};
	uint32_t count = (uint32_t)ref_u(&c, 4);

	ref_check(&c, count <= MR_BATCH_MAX && count <= max);
	for (uint32_t i = 0; c.ok && i < count; i++) {
		ref_check(&c, ref_u(&c, 4) <= MR_ERRNO_MAX);
		ref_u(&c, 8);
	}
	return ref_end(&c) ? (long)count : -1;
}

static bool ref_info_msg(const uint8_t *p, size_t len)
{
	struct ref c = {.p = p, .len = len, .ok = true};

	ref_info(&c);
	return ref_end(&c);
}

static bool ref_list_reply(const uint8_t *p, size_t len)
{
	struct ref c = {.p = p, .len = len, .ok = true};
	uint32_t count;

	ref_u(&c, 8);
	ref_check(&c, ref_u(&c, 1) <= 1);
	ref_check(&c, ref_u(&c, 3) == 0);
	count = (uint32_t)ref_u(&c, 4);
	ref_check(&c, count <= MR_LIST_MAX);
	for (uint32_t i = 0; c.ok && i < count; i++) {
		ref_str(&c, ref_name_ok);
		ref_skip(&c, 20);
	}
	return ref_end(&c);
}

/* Step 1: the decoders on one message. */

static void check_same(const struct mr_buf *b, const uint8_t *p, size_t len)
{
	FUZZ_CHECK(b->len == len && (len == 0 || memcmp(b->data, p, len) == 0));
}

static void check_info(const struct ent_info *info)
{
	FUZZ_CHECK(info->replicas >= 1 && info->replicas <= ENT_MAX_HOLDERS);
	FUZZ_CHECK(info->nholders >= 1 && info->nholders <= ENT_MAX_HOLDERS);
	for (unsigned i = 0; i < info->nholders; i++)
		for (unsigned j = 0; j < i; j++)
			FUZZ_CHECK(info->holders[i].node != info->holders[j].node);
}

static void check_dir_name(const char *dir, const char *name)
{
	FUZZ_CHECK(strlen(dir) <= MR_DIR_MAX && mr_dir_ok(dir) && ref_cstr_dir_ok(dir));
	if (name)
		FUZZ_CHECK(strlen(name) <= MR_NAME_MAX && mr_name_ok(name) &&
			   ref_cstr_name_ok(name));
}

/* Walk the items of a decoded ANNOUNCE or FORGET request r (decoded from p[0..len)) and
 * rebuild it item by item in b. */
static void check_batch(struct mr_req *r, struct mr_buf *b, const uint8_t *p, size_t len)
{
	struct mr_announce_item ai;
	struct mr_forget_item fi;
	uint32_t n = 0;

	FUZZ_CHECK(r->count <= MR_BATCH_MAX && r->it.left == r->count);
	if (r->op == MR_ANNOUNCE) {
		FUZZ_CHECK(!mr_forget_next(r, &fi)); /* the other op's walker refuses */
		FUZZ_CHECK(mr_announce_start(b) == 0);
		while (n <= r->count && mr_announce_next(r, &ai)) {
			check_dir_name(ai.dir, ai.name);
			FUZZ_CHECK(ai.info.replicas >= 1 && ai.info.replicas <= ENT_MAX_HOLDERS);
			FUZZ_CHECK(ai.info.nholders == 0);
			FUZZ_CHECK(mr_announce_add(b, ai.dir, ai.name, &ai.info, &ai.holder) == 0);
			n++;
		}
	} else {
		FUZZ_CHECK(!mr_announce_next(r, &ai));
		FUZZ_CHECK(mr_forget_start(b) == 0);
		while (n <= r->count && mr_forget_next(r, &fi)) {
			check_dir_name(fi.dir, fi.name);
			FUZZ_CHECK(mr_forget_add(b, fi.dir, fi.name, fi.node, fi.generation) == 0);
			n++;
		}
	}
	FUZZ_CHECK(n == r->count && r->it.left == 0 && r->it.p == r->it.end);
	FUZZ_CHECK(!mr_announce_next(r, &ai) && !mr_forget_next(r, &fi));
	FUZZ_CHECK(b->count == r->count);
	check_same(b, p, len);
}

static void check_req(const uint8_t *p, size_t len)
{
	struct mr_announce_item ai;
	struct mr_forget_item fi;
	struct mr_buf b;
	struct mr_req *r = malloc(sizeof(*r));
	int rc;

	FUZZ_CHECK(r != NULL);
	rc = mr_req_decode(p, len, r);
	FUZZ_CHECK(rc == 0 || rc == -EBADMSG);
	FUZZ_CHECK((rc == 0) == ref_req(p, len));
	if (rc) {
		free(r);
		return;
	}
	FUZZ_CHECK(r->op >= MR_ANNOUNCE && r->op <= MR_OP_MAX && r->op == p[0]);
	mr_buf_init(&b);
	switch (r->op) {
	case MR_ANNOUNCE:
	case MR_FORGET:
		check_batch(r, &b, p, len);
		break;
	case MR_GET:
		check_dir_name(r->dir, r->name);
		FUZZ_CHECK(mr_get_encode(&b, r->dir, r->name) == 0);
		break;
	case MR_UNLINK:
		check_dir_name(r->dir, r->name);
		FUZZ_CHECK(mr_unlink_encode(&b, r->dir, r->name, r->version) == 0);
		break;
	case MR_LIST:
		check_dir_name(r->dir, NULL);
		FUZZ_CHECK(r->max >= 1 && r->max <= MR_LIST_MAX);
		FUZZ_CHECK(mr_list_encode(&b, r->dir, r->cursor, r->max) == 0);
		break;
	case MR_REPLICATE:
		check_dir_name(r->dir, r->name);
		check_info(&r->info);
		FUZZ_CHECK(mr_replicate_encode(&b, r->dir, r->name, &r->info) == 0);
		break;
	case MR_DROP:
		check_dir_name(r->dir, r->name);
		FUZZ_CHECK(mr_drop_encode(&b, r->dir, r->name, r->generation) == 0);
		break;
	case MR_FORGET_NODE:
		FUZZ_CHECK(mr_forget_node_encode(&b, r->node) == 0);
		break;
	}
	if (r->op != MR_ANNOUNCE && r->op != MR_FORGET) {
		FUZZ_CHECK(!mr_announce_next(r, &ai) && !mr_forget_next(r, &fi));
		check_same(&b, p, len);
	}
	mr_buf_free(&b);
	free(r);
}

static void check_status(const uint8_t *p, size_t len)
{
	static struct mr_status st[MR_BATCH_MAX];
	struct mr_status *exact;
	struct mr_buf b;
	int n = mr_status_decode(p, len, st, MR_BATCH_MAX);
	long want = ref_status(p, len, MR_BATCH_MAX);

	FUZZ_CHECK(want < 0 ? n == -EBADMSG : n == want);
	if (n < 0)
		return;
	FUZZ_CHECK(n <= (int)MR_BATCH_MAX);
	mr_buf_init(&b);
	FUZZ_CHECK(mr_status_start(&b) == 0);
	for (int i = 0; i < n; i++) {
		FUZZ_CHECK(st[i].status <= MR_ERRNO_MAX);
		FUZZ_CHECK(mr_status_add(&b, st[i].status, st[i].version) == 0);
	}
	check_same(&b, p, len);
	mr_buf_free(&b);

	/* room for exactly n items is enough (ASan sees a write past it); one fewer is not */
	exact = malloc((size_t)(n ? n : 1) * sizeof(*exact));
	FUZZ_CHECK(exact != NULL);
	FUZZ_CHECK(mr_status_decode(p, len, exact, (unsigned)n) == n);
	for (int i = 0; i < n; i++) /* field by field: the struct has padding */
		FUZZ_CHECK(exact[i].status == st[i].status && exact[i].version == st[i].version);
	if (n > 0)
		FUZZ_CHECK(mr_status_decode(p, len, exact, (unsigned)n - 1) == -EBADMSG);
	free(exact);
}

static void check_info_msg(const uint8_t *p, size_t len)
{
	struct ent_info info;
	struct mr_buf b;
	int rc = mr_info_decode(p, len, &info);

	FUZZ_CHECK(rc == 0 || rc == -EBADMSG);
	FUZZ_CHECK((rc == 0) == ref_info_msg(p, len));
	if (rc)
		return;
	check_info(&info);
	mr_buf_init(&b);
	FUZZ_CHECK(mr_info_encode(&b, &info) == 0);
	check_same(&b, p, len);
	mr_buf_free(&b);
}

static void check_list_reply(const uint8_t *p, size_t len)
{
	struct mr_list_reply lr;
	struct mr_list_item it;
	struct mr_buf b;
	uint32_t n = 0;
	int rc = mr_list_reply_decode(p, len, &lr);

	FUZZ_CHECK(rc == 0 || rc == -EBADMSG);
	FUZZ_CHECK((rc == 0) == ref_list_reply(p, len));
	if (rc)
		return;
	FUZZ_CHECK(lr.count <= MR_LIST_MAX && lr.it.left == lr.count);
	FUZZ_CHECK(lr.done == (p[8] == 1));
	mr_buf_init(&b);
	FUZZ_CHECK(mr_list_reply_start(&b) == 0);
	while (n <= lr.count && mr_list_next(&lr, &it)) {
		check_dir_name("", it.name);
		FUZZ_CHECK(mr_list_reply_add(&b, it.name, it.size, it.mtime_ns, it.mode) == 0);
		n++;
	}
	FUZZ_CHECK(n == lr.count && lr.it.left == 0 && lr.it.p == lr.it.end);
	FUZZ_CHECK(!mr_list_next(&lr, &it));
	FUZZ_CHECK(mr_list_reply_finish(&b, lr.next_cursor, lr.done) == 0);
	check_same(&b, p, len);
	mr_buf_free(&b);
}

static void check_all(const uint8_t *p, size_t len)
{
	check_req(p, len);
	check_status(p, len);
	check_info_msg(p, len);
	check_list_reply(p, len);
	FUZZ_CHECK(mr_empty_decode(p, len) == (len == 0 ? 0 : -EBADMSG));
}

/* Step 1 on an exact-size heap copy of p[0..len). */
static void check_copy(const uint8_t *p, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1);

	FUZZ_CHECK(copy != NULL);
	if (len)
		memcpy(copy, p, len);
	check_all(copy, len);
	free(copy);
}

/* Step 2: the input as a recipe of encoder calls. */

struct recipe {
	const uint8_t *data;
	size_t size, at;
};

static uint64_t take(struct recipe *r, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)(r->at < r->size ? r->data[r->at++] : 0) << (8 * i);
	return v;
}

#define STR_CAP 1200 /* longer than MR_DIR_MAX, to reach the limit from both sides */

/* A dir or name (the same alphabet serves both): NULL now and then, mostly near valid. */
static const char *gen_str(struct recipe *r, char out[STR_CAP])
{
	static const char alphabet[] = "a./b/.c";
	static const char *const comps[] = {"a", "bc", ".", "..", "...", "", "x.y", ".z"};
	uint8_t c = (uint8_t)take(r, 1);
	size_t len = 0, n;

	switch (c & 7) {
	case 0: /* a few characters of the alphabet */
		n = c >> 3;
		for (len = 0; len < n; len++)
			out[len] = alphabet[take(r, 1) % (sizeof(alphabet) - 1)];
		break;
	case 1: /* components joined by '/' */
	case 2:
		n = c >> 4;
		for (size_t i = 0; i < n; i++) {
			const char *s = comps[take(r, 1) % (sizeof(comps) / sizeof(comps[0]))];

			if (i)
				out[len++] = '/';
			memcpy(out + len, s, strlen(s));
			len += strlen(s);
		}
		break;
	case 3: /* long: around MR_NAME_MAX or MR_DIR_MAX, a '/' every step bytes (0: none) */
	case 4: {
		size_t step = take(r, 1) % 64;

		n = (c & 8 ? MR_DIR_MAX : MR_NAME_MAX) + 1 - (size_t)(take(r, 1) % 8);
		if (c & 16)
			n = (size_t)take(r, 2) % STR_CAP;
		for (len = 0; len < n; len++)
			out[len] = step && len % step == step - 1 ? '/' : 'k';
		break;
	}
	case 5: /* raw bytes, up to a NUL */
		n = c >> 3;
		for (len = 0; len < n; len++)
			out[len] = (char)take(r, 1);
		break;
	case 6:
		if (c & 0x80)
			return NULL;
		/* fall through: the empty string */
	default:
		break;
	}
	out[len] = '\0';
	return out;
}

static bool info_valid(const struct ent_info *info)
{
	if (info->replicas < 1 || info->replicas > ENT_MAX_HOLDERS || info->nholders < 1 ||
	    info->nholders > ENT_MAX_HOLDERS)
		return false;
	for (unsigned i = 0; i < info->nholders; i++)
		for (unsigned j = i + 1; j < info->nholders; j++)
			if (info->holders[i].node == info->holders[j].node)
				return false;
	return true;
}

static uint8_t gen_count(struct recipe *r)
{
	uint8_t v = (uint8_t)take(r, 1);

	return v & 0x80 ? v & 0x0f : 1 + v % ENT_MAX_HOLDERS; /* mostly 1..8 */
}

static void gen_holder(struct recipe *r, struct ent_holder *h, unsigned i)
{
	uint8_t c = (uint8_t)take(r, 1);

	/* distinct small nodes, a few values that collide, or anything */
	h->node = c & 0x80 ? take(r, 8) : c & 0x40 ? c % 3 : i + 1;
	h->offset = take(r, c & 1 ? 8 : 1);
	h->generation = take(r, c & 2 ? 8 : 1);
}

static void gen_info(struct recipe *r, struct ent_info *info)
{
	uint8_t c = (uint8_t)take(r, 1);

	memset(info, 0, sizeof(*info));
	info->size = take(r, c & 1 ? 8 : 2);
	info->version = take(r, c & 2 ? 8 : 1);
	info->mtime_ns = (int64_t)take(r, c & 4 ? 8 : 2);
	info->mode = (uint32_t)take(r, c & 8 ? 4 : 2);
	info->uid = (uint32_t)take(r, c & 8 ? 4 : 1);
	info->gid = (uint32_t)take(r, c & 8 ? 4 : 1);
	info->replicas = gen_count(r);
	info->nholders = gen_count(r);
	for (unsigned i = 0; i < ENT_MAX_HOLDERS && i < info->nholders; i++)
		gen_holder(r, &info->holders[i], i);
}

static bool info_same(const struct ent_info *a, const struct ent_info *b)
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

/* The verdict an add must give: -EINVAL for a bad item (-E2BIG also allowed when the message
 * is full anyway), -E2BIG when full, else 0. */
static void check_add_rc(int rc, bool valid, bool full)
{
	if (!valid)
		FUZZ_CHECK(rc == -EINVAL || (full && rc == -E2BIG));
	else
		FUZZ_CHECK(rc == (full ? -E2BIG : 0));
}

/* A failed add leaves the message as it was. */
static void check_unchanged(const struct mr_buf *b, size_t len, uint32_t count, size_t count_off)
{
	uint32_t stored = 0;

	FUZZ_CHECK(b->len == len && b->count == count);
	for (unsigned i = 0; i < 4; i++)
		stored |= (uint32_t)b->data[count_off + i] << (8 * i);
	FUZZ_CHECK(stored == count);
}

/* The items a batch holds, to compare with what decodes. */
static struct mr_announce_item added[MR_LIST_MAX];

/* Up to 31 different items, or one repeated up to MR_LIST_MAX + 199 times (past the count
 * limits; a batch of long dirs passes MR_MSG_MAX first). */
static unsigned gen_nitems(struct recipe *r, uint8_t c, bool *repeat)
{
	*repeat = c & 0x40;
	return *repeat ? (unsigned)(take(r, 2) % (MR_LIST_MAX + 200)) : (unsigned)(c & 0x1f);
}

static int synth_announce(struct recipe *r, uint8_t c, struct mr_buf *b)
{
	static char dbuf[STR_CAP], nbuf[STR_CAP];
	const char *dir = NULL, *name = NULL;
	struct ent_info info = {0};
	struct ent_holder h = {0};
	struct mr_req *req;
	struct mr_announce_item it;
	bool repeat, valid = false;
	unsigned n = gen_nitems(r, c, &repeat);
	size_t sz = 0;
	uint32_t k;
	int rc;

	FUZZ_CHECK(mr_announce_start(b) == 0 && b->len == 8 && b->count == 0);
	for (unsigned i = 0; i < n; i++) {
		if (!repeat || i == 0) {
			dir = gen_str(r, dbuf);
			name = gen_str(r, nbuf);
			gen_info(r, &info);
			gen_holder(r, &h, 0);
			/* holders and nholders are ignored: an ANNOUNCE carries h alone */
			valid = ref_cstr_dir_ok(dir) && ref_cstr_name_ok(name) &&
				info.replicas >= 1 && info.replicas <= ENT_MAX_HOLDERS;
			sz = valid ? 2 + strlen(dir) + 2 + strlen(name) + 64 : 0;
		}
		size_t len = b->len;
		uint32_t count = b->count;

		rc = mr_announce_add(b, dir, name, &info, &h);
		check_add_rc(rc, valid, count >= MR_BATCH_MAX || len + sz > MR_MSG_MAX);
		if (rc) {
			check_unchanged(b, len, count, 4);
			continue;
		}
		FUZZ_CHECK(b->count == count + 1 && b->len == len + sz);
		strcpy(added[count].dir, dir);
		strcpy(added[count].name, name);
		added[count].info = info;
		added[count].holder = h;
	}

	req = malloc(sizeof(*req));
	FUZZ_CHECK(req != NULL);
	FUZZ_CHECK(mr_req_decode(b->data, b->len, req) == 0);
	FUZZ_CHECK(req->op == MR_ANNOUNCE && req->count == b->count);
	for (k = 0; mr_announce_next(req, &it); k++) {
		const struct mr_announce_item *a = &added[k];

		FUZZ_CHECK(k < b->count);
		FUZZ_CHECK(strcmp(it.dir, a->dir) == 0 && strcmp(it.name, a->name) == 0);
		FUZZ_CHECK(it.info.size == a->info.size && it.info.version == a->info.version &&
			   it.info.mtime_ns == a->info.mtime_ns && it.info.mode == a->info.mode &&
			   it.info.uid == a->info.uid && it.info.gid == a->info.gid &&
			   it.info.replicas == a->info.replicas && it.info.nholders == 0);
		FUZZ_CHECK(memcmp(&it.holder, &a->holder, sizeof(it.holder)) == 0);
	}
	FUZZ_CHECK(k == b->count);
	free(req);
	return 0;
}

static int synth_forget(struct recipe *r, uint8_t c, struct mr_buf *b)
{
	static char dbuf[STR_CAP], nbuf[STR_CAP];
	const char *dir = NULL, *name = NULL;
	struct mr_forget_item it;
	struct mr_req *req;
	uint64_t node = 0, gen = 0;
	bool repeat, valid = false;
	unsigned n = gen_nitems(r, c, &repeat);
	size_t sz = 0;
	uint32_t k;
	int rc;

	FUZZ_CHECK(mr_forget_start(b) == 0 && b->len == 8 && b->count == 0);
	for (unsigned i = 0; i < n; i++) {
		if (!repeat || i == 0) {
			dir = gen_str(r, dbuf);
			name = gen_str(r, nbuf);
			node = take(r, 8);
			gen = take(r, 8);
			valid = ref_cstr_dir_ok(dir) && ref_cstr_name_ok(name);
			sz = valid ? 2 + strlen(dir) + 2 + strlen(name) + 16 : 0;
		}
		size_t len = b->len;
		uint32_t count = b->count;

		rc = mr_forget_add(b, dir, name, node, gen);
		check_add_rc(rc, valid, count >= MR_BATCH_MAX || len + sz > MR_MSG_MAX);
		if (rc) {
			check_unchanged(b, len, count, 4);
			continue;
		}
		FUZZ_CHECK(b->count == count + 1 && b->len == len + sz);
		strcpy(added[count].dir, dir);
		strcpy(added[count].name, name);
		added[count].holder = (struct ent_holder){.node = node, .generation = gen};
	}

	req = malloc(sizeof(*req));
	FUZZ_CHECK(req != NULL);
	FUZZ_CHECK(mr_req_decode(b->data, b->len, req) == 0);
	FUZZ_CHECK(req->op == MR_FORGET && req->count == b->count);
	for (k = 0; mr_forget_next(req, &it); k++) {
		const struct mr_announce_item *a = &added[k];

		FUZZ_CHECK(k < b->count);
		FUZZ_CHECK(strcmp(it.dir, a->dir) == 0 && strcmp(it.name, a->name) == 0);
		FUZZ_CHECK(it.node == a->holder.node && it.generation == a->holder.generation);
	}
	FUZZ_CHECK(k == b->count);
	free(req);
	return 0;
}

/* One request that is not a batch: encode, and decode back when it encoded. */
static int synth_single(struct recipe *r, enum mr_op op, struct mr_buf *b)
{
	static char dbuf[STR_CAP], nbuf[STR_CAP];
	const char *dir = gen_str(r, dbuf), *name = gen_str(r, nbuf);
	bool valid = ref_cstr_dir_ok(dir) && (op == MR_LIST || ref_cstr_name_ok(name));
	uint64_t v = take(r, 8);
	uint32_t max = 0;
	struct ent_info info;
	struct mr_req *req;
	int rc = -1;

	FUZZ_CHECK(mr_dir_ok(dir) == ref_cstr_dir_ok(dir));
	FUZZ_CHECK(mr_name_ok(name) == ref_cstr_name_ok(name));
	switch (op) {
	case MR_GET:
		rc = mr_get_encode(b, dir, name);
		break;
	case MR_UNLINK:
		rc = mr_unlink_encode(b, dir, name, v);
		break;
	case MR_LIST:
		max = (uint32_t)take(r, 1);
		/* anything, 0..2, or around MR_LIST_MAX */
		max = max & 0x80   ? (uint32_t)take(r, 4)
		      : max & 0x40 ? max % 3
				   : MR_LIST_MAX + 1 - max % 4 - (max & 8);
		valid = valid && max >= 1 && max <= MR_LIST_MAX;
		rc = mr_list_encode(b, dir, v, max);
		break;
	case MR_REPLICATE:
		gen_info(r, &info);
		valid = valid && info_valid(&info);
		rc = mr_replicate_encode(b, dir, name, &info);
		break;
	case MR_DROP:
		rc = mr_drop_encode(b, dir, name, v);
		break;
	case MR_FORGET_NODE:
		valid = true;
		rc = mr_forget_node_encode(b, v);
		break;
	default:
		FUZZ_CHECK(0);
	}
	FUZZ_CHECK(rc == (valid ? 0 : -EINVAL));
	if (rc)
		return rc;

	req = malloc(sizeof(*req));
	FUZZ_CHECK(req != NULL);
	FUZZ_CHECK(mr_req_decode(b->data, b->len, req) == 0 && req->op == op);
	if (op != MR_FORGET_NODE)
		FUZZ_CHECK(strcmp(req->dir, dir) == 0);
	if (op != MR_FORGET_NODE && op != MR_LIST)
		FUZZ_CHECK(strcmp(req->name, name) == 0);
	FUZZ_CHECK(op != MR_UNLINK || req->version == v);
	FUZZ_CHECK(op != MR_LIST || (req->cursor == v && req->max == max));
	FUZZ_CHECK(op != MR_REPLICATE || info_same(&req->info, &info));
	FUZZ_CHECK(op != MR_DROP || req->generation == v);
	FUZZ_CHECK(op != MR_FORGET_NODE || req->node == v);
	free(req);
	return 0;
}

static int synth_status(struct recipe *r, uint8_t c, struct mr_buf *b)
{
	static struct mr_status want[MR_BATCH_MAX], got[MR_BATCH_MAX];
	bool repeat;
	unsigned n = gen_nitems(r, c, &repeat);
	uint32_t st = 0;
	uint64_t v = 0;
	int rc;

	FUZZ_CHECK(mr_status_start(b) == 0 && b->len == 4 && b->count == 0);
	for (unsigned i = 0; i < n; i++) {
		if (!repeat || i == 0) {
			uint8_t s = (uint8_t)take(r, 1);

			/* around the MR_ERRNO_MAX bound, small errnos, or anything */
			st = s & 0x80	? (uint32_t)take(r, 4)
			     : s & 0x40 ? MR_ERRNO_MAX - 2 + s % 4
					: s % 8;
			v = take(r, 8);
		}
		size_t len = b->len;
		uint32_t count = b->count;

		rc = mr_status_add(b, st, v);
		check_add_rc(rc, st <= MR_ERRNO_MAX, count >= MR_BATCH_MAX);
		if (rc) {
			check_unchanged(b, len, count, 0);
			continue;
		}
		want[count] = (struct mr_status){.status = st, .version = v};
	}
	FUZZ_CHECK(mr_status_decode(b->data, b->len, got, MR_BATCH_MAX) == (int)b->count);
	for (uint32_t i = 0; i < b->count; i++)
		FUZZ_CHECK(got[i].status == want[i].status && got[i].version == want[i].version);
	return 0;
}

static int synth_info(struct recipe *r, struct mr_buf *b)
{
	struct ent_info info, got;
	int rc;

	gen_info(r, &info);
	rc = mr_info_encode(b, &info);
	FUZZ_CHECK(rc == (info_valid(&info) ? 0 : -EINVAL));
	if (rc)
		return rc;
	FUZZ_CHECK(mr_info_decode(b->data, b->len, &got) == 0 && info_same(&got, &info));
	return 0;
}

/* A LIST reply, its items added directly or through mr_list_reply_fill (whose first error
 * the finish returns). */
static int synth_list_reply(struct recipe *r, uint8_t c, struct mr_buf *b)
{
	static char nbuf[STR_CAP];
	const char *name = NULL;
	struct ent_info info = {0};
	struct mr_list_reply lr;
	struct mr_list_item it;
	bool repeat, valid = false, done;
	unsigned n = gen_nitems(r, c, &repeat);
	uint64_t cursor;
	uint32_t k;
	int rc, err = 0;

	FUZZ_CHECK(mr_list_reply_start(b) == 0 && b->len == 16 && b->count == 0);
	for (unsigned i = 0; i < n; i++) {
		if (!repeat || i == 0) {
			name = gen_str(r, nbuf);
			info.size = take(r, 8);
			info.mtime_ns = (int64_t)take(r, 8);
			info.mode = (uint32_t)take(r, 4);
			valid = ref_cstr_name_ok(name);
		}
		size_t len = b->len;
		uint32_t count = b->count;
		bool full = count >= MR_LIST_MAX;

		if (take(r, 1) & 1) {
			mr_list_reply_fill(b, name, &info);
			if (err) {
				check_unchanged(b, len, count, 12);
				continue;
			}
			rc = b->err;
			err = rc;
		} else {
			rc = mr_list_reply_add(b, name, info.size, info.mtime_ns, info.mode);
		}
		check_add_rc(rc, valid, full);
		if (rc) {
			check_unchanged(b, len, count, 12);
			continue;
		}
		strcpy(added[count].name, name);
		added[count].info = info;
	}
	cursor = take(r, 8);
	done = take(r, 1) & 1;
	rc = mr_list_reply_finish(b, cursor, done);
	FUZZ_CHECK(rc == err);
	if (rc)
		return rc;

	FUZZ_CHECK(mr_list_reply_decode(b->data, b->len, &lr) == 0);
	FUZZ_CHECK(lr.next_cursor == cursor && lr.done == done && lr.count == b->count);
	for (k = 0; mr_list_next(&lr, &it); k++) {
		FUZZ_CHECK(k < b->count && strcmp(it.name, added[k].name) == 0);
		FUZZ_CHECK(it.size == added[k].info.size && it.mtime_ns == added[k].info.mtime_ns &&
			   it.mode == added[k].info.mode);
	}
	FUZZ_CHECK(k == b->count);
	return 0;
}

/*
 * Raw messages, written by hand from the recipe without the encoders' checks: counted strings
 * that may hold a NUL, replicas and nholders out of range, duplicate holders, a batch count
 * off by one, a reserved byte set, an unknown op, a done flag of 2. Most are a flaw or two
 * away from valid, which is where a decoder that forgets a rule gets caught (the reference
 * gives the verdict).
 */
struct raw {
	uint8_t p[1 << 16];
	size_t len;
	unsigned nzero; /* reserved bytes written so far */
	int poison;	/* the reserved byte to set (its index), or -1 */
};

static void raw_le(struct raw *w, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n && w->len < sizeof(w->p); i++)
		w->p[w->len++] = (uint8_t)(v >> (8 * i));
}

static void raw_zero(struct raw *w, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		raw_le(w, (int)w->nzero++ == w->poison ? 0x40 : 0, 1);
}

/* A dir or name as counted bytes: gen_str's, with a NUL put inside now and then. */
static void raw_str(struct raw *w, struct recipe *r)
{
	static char buf[STR_CAP];
	const char *s = gen_str(r, buf);
	size_t len = s ? strlen(s) : 0;
	uint8_t c = (uint8_t)take(r, 1);

	if ((c & 0xc0) == 0xc0 && len)
		buf[(c & 0x3f) % len] = '\0';
	raw_le(w, len, 2);
	for (size_t i = 0; i < len; i++)
		raw_le(w, (uint8_t)buf[i], 1);
}

static void raw_holder(struct raw *w, const struct ent_holder *h)
{
	raw_le(w, h->node, 8);
	raw_le(w, h->offset, 8);
	raw_le(w, h->generation, 8);
}

static void raw_info(struct raw *w, struct recipe *r)
{
	struct ent_info info;

	gen_info(r, &info);
	raw_le(w, info.size, 8);
	raw_le(w, info.version, 8);
	raw_le(w, (uint64_t)info.mtime_ns, 8);
	raw_le(w, info.mode, 4);
	raw_le(w, info.uid, 4);
	raw_le(w, info.gid, 4);
	raw_le(w, info.replicas, 1);
	raw_le(w, info.nholders, 1);
	raw_zero(w, 2);
	for (unsigned i = 0; i < info.nholders && i < ENT_MAX_HOLDERS; i++)
		raw_holder(w, &info.holders[i]);
}

/* A count of n items as written: mostly n, now and then one off or past the limit. */
static uint32_t raw_count(struct recipe *r, uint32_t n, uint32_t limit)
{
	switch (take(r, 1) & 0x1f) {
	case 1:
		return n + 1;
	case 2:
		return n - 1; /* 0 - 1 wraps: far past any limit */
	case 3:
		return limit + 1;
	default:
		return n;
	}
}

/* kind 0..MR_OP_MAX - 1: a request of that op; then STATUS, info, LIST reply. */
static void raw_message(struct raw *w, struct recipe *r, unsigned kind)
{
	uint8_t f = (uint8_t)take(r, 1);
	unsigned op = MR_ANNOUNCE + kind;
	uint32_t n = (uint32_t)take(r, 1) % 6;

	w->len = 0;
	w->nzero = 0;
	w->poison = f & 0x80 ? (int)(f & 0x0f) : -1;
	if (kind < MR_OP_MAX) {
		raw_le(w, f & 0x40 ? take(r, 1) : op, 1);
		raw_zero(w, 3);
	}
	switch (op) {
	case MR_ANNOUNCE:
	case MR_FORGET:
		raw_le(w, raw_count(r, n, MR_BATCH_MAX), 4);
		for (uint32_t i = 0; i < n; i++) {
			struct ent_holder h;

			raw_str(w, r);
			raw_str(w, r);
			if (op == MR_FORGET) {
				raw_le(w, take(r, 8), 8);
				raw_le(w, take(r, 8), 8);
				continue;
			}
			raw_le(w, take(r, 8), 8);
			raw_le(w, take(r, 8), 8);
			raw_le(w, take(r, 8), 8);
			raw_le(w, take(r, 4), 4);
			raw_le(w, take(r, 4), 4); /* uid */
			raw_le(w, take(r, 4), 4); /* gid */
			raw_le(w, gen_count(r), 1);
			raw_zero(w, 3);
			gen_holder(r, &h, i);
			raw_holder(w, &h);
		}
		break;
	case MR_GET:
	case MR_UNLINK:
	case MR_REPLICATE:
	case MR_DROP:
		raw_str(w, r);
		raw_str(w, r);
		if (op == MR_REPLICATE)
			raw_info(w, r);
		else if (op != MR_GET)
			raw_le(w, take(r, 8), 8);
		break;
	case MR_LIST:
		raw_str(w, r);
		raw_le(w, take(r, 8), 8);
		raw_le(w, raw_count(r, 1 + (uint32_t)take(r, 2) % MR_LIST_MAX, MR_LIST_MAX), 4);
		break;
	case MR_FORGET_NODE:
		raw_le(w, take(r, 8), 8);
		break;
	case MR_OP_MAX + 1: /* STATUS */
		raw_le(w, raw_count(r, n, MR_BATCH_MAX), 4);
		for (uint32_t i = 0; i < n; i++) {
			uint8_t s = (uint8_t)take(r, 1);

			raw_le(w, s & 0x40 ? MR_ERRNO_MAX - 1 + s % 3 : s % 8, 4);
			raw_le(w, take(r, 8), 8);
		}
		break;
	case MR_OP_MAX + 2: /* info */
		raw_info(w, r);
		break;
	case MR_OP_MAX + 3: /* LIST reply */
		raw_le(w, take(r, 8), 8);
		raw_le(w, take(r, 1) % 3, 1);
		raw_zero(w, 3);
		raw_le(w, raw_count(r, n, MR_LIST_MAX), 4);
		for (uint32_t i = 0; i < n; i++) {
			raw_str(w, r);
			raw_le(w, take(r, 8), 8);
			raw_le(w, take(r, 8), 8);
			raw_le(w, take(r, 4), 4);
		}
		break;
	}
}

#define SYNTH_MSGS  8
#define SYNTH_KINDS 12		    /* through the encoders */
#define RAW_KINDS   (MR_OP_MAX + 3) /* by hand */

/* Step 1 on msg[0..len) and on copies of it with one bit flipped, cut short or one byte
 * longer, as the control byte c says. */
static void check_variants(struct recipe *r, uint8_t c, uint8_t *msg, size_t len)
{
	check_copy(msg, len);
	if (c & 0x80 && len) {
		size_t at = (size_t)take(r, 3) % len;
		uint8_t bit = (uint8_t)(1u << (take(r, 1) & 7));

		msg[at] ^= bit;
		check_copy(msg, len);
		msg[at] ^= bit;
	}
	if (c & 0x20 && len)
		check_copy(msg, (size_t)take(r, 3) % len);
	if (c & 0x10) {
		uint8_t *p = malloc(len + 1);

		FUZZ_CHECK(p != NULL);
		if (len)
			memcpy(p, msg, len);
		p[len] = (uint8_t)take(r, 1);
		check_copy(p, len + 1);
		free(p);
	}
}

static void synth(const uint8_t *data, size_t size)
{
	static struct raw w;
	struct recipe r = {.data = data, .size = size};
	struct mr_buf b;

	mr_buf_init(&b);
	for (int m = 0; m < SYNTH_MSGS && r.at + 2 <= size; m++) {
		uint8_t c = (uint8_t)take(&r, 1);
		unsigned kind = (unsigned)take(&r, 1) % (SYNTH_KINDS + RAW_KINDS);
		int rc = 0;

		switch (kind) {
		case 0:
			rc = synth_announce(&r, c, &b);
			break;
		case 1:
			rc = synth_forget(&r, c, &b);
			break;
		case 2:
		case 3:
		case 4:
		case 5:
		case 6:
		case 7:
			rc = synth_single(&r, (enum mr_op)(MR_GET + kind - 2), &b);
			break;
		case 8:
			rc = synth_status(&r, c, &b);
			break;
		case 9:
			rc = synth_info(&r, &b);
			break;
		case 10:
			rc = synth_list_reply(&r, c, &b);
			break;
		case 11: /* an empty reply: no bytes */
			b.len = 0;
			break;
		default:
			raw_message(&w, &r, kind - SYNTH_KINDS);
			check_variants(&r, c, w.p, w.len);
			continue;
		}
		if (rc == 0)
			check_variants(&r, c, b.data, b.len);
	}
	mr_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_all(data, size);
	synth(data, size);
	return 0;
}
