/*
 * etcd: an etcd v3 client over the JSON gRPC gateway (see etcd.h for the API).
 *
 * Unary calls: one JSON object POSTed to /v3/<service>/<method>, one JSON object back. The
 * gateway leaves out every field that has its default value (false, 0, "", the PUT event
 * type, an empty list), so a missing field always reads as its zero. int64 fields travel
 * as strings; keys and values as base64. A unary call takes a curl easy handle from the
 * client's small idle list (so connections are reused) or makes one, and gives it back.
 *
 * Endpoints: c->cur is the endpoint that answered last. A call starts there and moves to
 * the next endpoint only when it could not connect, i.e. when the request surely was not
 * executed; c->cur then follows the one that answered.
 *
 * Watches: a thread per watch runs one streaming POST to /v3/watch through a curl multi
 * handle (so etcd_watch_stop can wake it with curl_multi_wakeup at once). The answer is
 * newline-delimited JSON, one WatchResponse per line. The thread owns next_rev, the first
 * revision not yet delivered, and resumes from it after a broken stream; when that revision
 * has been compacted, or etcd answers with a store older than what was delivered, it
 * re-lists the prefix as one snapshot (RESYNC, PUT..., then CONNECTED from the snapshot's
 * revision + 1).
 *
 * Invariant: events reach the callback in revision order, each at most once per stream
 * lifetime, and a reconnect never skips one (it resumes at next_rev or re-lists).
 */
#include "meta/etcd.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <syslog.h>
#include <time.h>

#define ETCD_DEFAULT_TIMEOUT_MS 5000
#define ETCD_IDLE_HANDLES	8
#define ETCD_MAX_ANSWER		(256u << 20) /* bytes of one answer, or one watch line */
#define ETCD_RELIST_PAGE	512
#define WATCH_BACKOFF_MIN_MS	100
#define WATCH_BACKOFF_MAX_MS	2000

struct etcd {
	char **ep; /* "http://host:port", no trailing slash */
	unsigned nep;
	atomic_uint cur; /* index of the endpoint that answered last */
	unsigned timeout_ms;
	struct curl_slist *hdrs; /* shared, read-only once built */

	pthread_mutex_t mu; /* guards idle[] and nidle */
	CURL *idle[ETCD_IDLE_HANDLES];
	unsigned nidle;
};

/* ---- libcurl's global state: the one process-wide thing, counted --------------------- */

static etcd_log_fn log_fn;
static void *log_arg;

void etcd_set_log(etcd_log_fn fn, void *arg)
{
	log_fn = fn;
	log_arg = arg;
}

void etcd_log(int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_fn)
		log_fn(log_arg, level, msg);
	else
		syslog(level, "kvcachefs %s", msg);
}

static pthread_mutex_t curl_global_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned curl_global_users; /* curl_global_mu */

static int curl_global_get(void)
{
	int rc = 0;

	pthread_mutex_lock(&curl_global_mu);
	if (curl_global_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		rc = -ENOMEM;
	else
		curl_global_users++;
	pthread_mutex_unlock(&curl_global_mu);
	return rc;
}

static void curl_global_put(void)
{
	pthread_mutex_lock(&curl_global_mu);
	if (--curl_global_users == 0)
		curl_global_cleanup();
	pthread_mutex_unlock(&curl_global_mu);
}

/* ---- base64 (RFC 4648, padded) ------------------------------------------------------- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const void *src, size_t len)
{
	const unsigned char *s = src;
	char *out, *o;
	size_t i;

	out = malloc((len + 2) / 3 * 4 + 1);
	if (!out)
		return NULL;
	o = out;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		*o++ = b64_chars[v >> 18];
		*o++ = b64_chars[(v >> 12) & 63];
		*o++ = b64_chars[(v >> 6) & 63];
		*o++ = b64_chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);

		*o++ = b64_chars[v >> 18];
		*o++ = b64_chars[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_val(char ch)
{
	const char *p = ch ? strchr(b64_chars, ch) : NULL;

	return p ? (int)(p - b64_chars) : -1;
}

/* Decode s into a new NUL-terminated buffer. Returns 0, -EPROTO, -ENOMEM. */
static int b64_decode(const char *s, char **out, size_t *outlen)
{
	size_t n = strlen(s), i, len = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	char *buf;

	while (n > 0 && s[n - 1] == '=')
		n--;
	buf = malloc(n / 4 * 3 + 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		int v = b64_val(s[i]);

		if (v < 0) {
			free(buf);
			return -EPROTO;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[len++] = (char)(acc >> bits & 0xff);
		}
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
}

/* ---- JSON helpers ------------------------------------------------------------------- */

static bool json_add_b64(cJSON *o, const char *name, const void *p, size_t len)
{
	char *s = b64_encode(p, len);
	bool ok = s && cJSON_AddStringToObject(o, name, s);

	free(s);
	return ok;
}

static bool json_add_i64(cJSON *o, const char *name, int64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRId64, v);
	return cJSON_AddStringToObject(o, name, s) != NULL;
}

/* An int64 field: a JSON string (the gateway's way) or number; missing = 0. */
static int json_i64(const cJSON *o, const char *name, int64_t *v)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
	char *end;
	long long x;

	*v = 0;
	if (!f || cJSON_IsNull(f))
		return 0;
	if (cJSON_IsNumber(f)) {
		if (!(f->valuedouble > -9.2e18 && f->valuedouble < 9.2e18))
			return -EPROTO;
		*v = (int64_t)f->valuedouble;
		return 0;
	}
	if (!cJSON_IsString(f))
		return -EPROTO;
	errno = 0;
	x = strtoll(f->valuestring, &end, 10);
	if (errno || end == f->valuestring || *end)
		return -EPROTO;
	*v = x;
	return 0;
}

static bool json_bool(const cJSON *o, const char *name)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static int json_header_rev(const cJSON *o, int64_t *rev)
{
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "header");

	*rev = 0;
	if (!cJSON_IsObject(h))
		return -EPROTO;
	return json_i64(h, "revision", rev);
}

void etcd_kv_fini(struct etcd_kv *kv)
{
	if (!kv)
		return;
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void etcd_kvs_free(struct etcd_kv *kvs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		etcd_kv_fini(&kvs[i]);
	free(kvs);
}

/* Fill kv from a mvccpb.KeyValue object. On error kv holds nothing. */
static int parse_kv(const cJSON *j, struct etcd_kv *kv)
{
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "value");
	size_t klen;
	int rc;

	memset(kv, 0, sizeof(*kv));
	if (!cJSON_IsObject(j) || !cJSON_IsString(k) || (v && !cJSON_IsString(v)))
		return -EPROTO;
	rc = b64_decode(k->valuestring, &kv->key, &klen);
	if (rc == 0)
		rc = b64_decode(v ? v->valuestring : "", &kv->value, &kv->len);
	if (rc == 0)
		rc = json_i64(j, "create_revision", &kv->create_revision);
	if (rc == 0)
		rc = json_i64(j, "mod_revision", &kv->mod_revision);
	if (rc == 0)
		rc = json_i64(j, "version", &kv->version);
	if (rc == 0)
		rc = json_i64(j, "lease", &kv->lease);
	/* keys are C strings in this API: one with a NUL inside is not ours */
	if (rc == 0 && strlen(kv->key) != klen)
		rc = -EPROTO;
	if (rc)
		etcd_kv_fini(kv);
	return rc;
}

/* ---- the client and its unary calls ------------------------------------------------- */

bool etcd_unreachable(int err)
{
	return err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ETIMEDOUT ||
	       err == -ECONNRESET || err == -ENETUNREACH;
}

int etcd_create(struct etcd **out, const char *endpoints, unsigned timeout_ms)
{
	struct etcd *c;
	char *list, *tok, *save;
	int rc;

	*out = NULL;
	if (!endpoints || !*endpoints)
		return -EINVAL;
	rc = curl_global_get();
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	list = strdup(endpoints);
	if (!c || !list) {
		rc = -ENOMEM;
		goto out_free;
	}
	c->timeout_ms = timeout_ms ? timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
	pthread_mutex_init(&c->mu, NULL);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t len;
		char **ep;

		tok += strspn(tok, " \t");
		len = strcspn(tok, " \t");
		while (len > 0 && tok[len - 1] == '/')
			len--;
		if (!(len > 7 && !strncmp(tok, "http://", 7)) &&
		    !(len > 8 && !strncmp(tok, "https://", 8))) {
			rc = -EINVAL;
			goto out_free;
		}
		ep = realloc(c->ep, (c->nep + 1) * sizeof(*ep));
		if (!ep) {
			rc = -ENOMEM;
			goto out_free;
		}
		c->ep = ep;
		c->ep[c->nep] = strndup(tok, len);
		if (!c->ep[c->nep]) {
			rc = -ENOMEM;
			goto out_free;
		}
		c->nep++;
	}
	if (c->nep == 0) {
		rc = -EINVAL;
		goto out_free;
	}
	/* "Expect:" keeps curl from waiting for a 100-continue on large bodies */
	c->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	if (c->hdrs)
		c->hdrs = curl_slist_append(c->hdrs, "Expect:");
	if (!c->hdrs) {
		rc = -ENOMEM;
		goto out_free;
	}
	free(list);
	*out = c;
	return 0;

out_free:
	free(list);
	if (c) {
		curl_slist_free_all(c->hdrs);
		for (unsigned i = 0; i < c->nep; i++)
			free(c->ep[i]);
		free(c->ep);
		pthread_mutex_destroy(&c->mu);
		free(c);
	}
	curl_global_put();
	return rc;
}

void etcd_destroy(struct etcd *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nidle; i++)
		curl_easy_cleanup(c->idle[i]);
	for (unsigned i = 0; i < c->nep; i++)
		free(c->ep[i]);
	free(c->ep);
	curl_slist_free_all(c->hdrs);
	pthread_mutex_destroy(&c->mu);
	free(c);
	curl_global_put();
}

static CURL *handle_get(struct etcd *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->mu);
	if (c->nidle > 0)
		h = c->idle[--c->nidle];
	pthread_mutex_unlock(&c->mu);
	return h ? h : curl_easy_init();
}

static void handle_put(struct etcd *c, CURL *h)
{
	pthread_mutex_lock(&c->mu);
	if (c->nidle < ETCD_IDLE_HANDLES) {
		c->idle[c->nidle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->mu);
	if (h)
		curl_easy_cleanup(h);
}

struct answer {
	char *buf;
	size_t len, cap;
};

static size_t answer_write(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t add = size * n;

	if (add > ETCD_MAX_ANSWER - a->len)
		return 0; /* too large: curl fails with CURLE_WRITE_ERROR */
	if (a->len + add + 1 > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;
		char *b;

		while (cap < a->len + add + 1)
			cap *= 2;
		b = realloc(a->buf, cap);
		if (!b)
			return 0;
		a->buf = b;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, p, add);
	a->len += add;
	a->buf[a->len] = '\0';
	return add;
}

/* Map a failed transfer to an errno; *connect_failed when the request surely did not reach
 * the server (so another endpoint may be tried). */
static int curl_errno(CURL *h, CURLcode cc, bool *connect_failed)
{
	long oserr = 0;
	curl_off_t connect_us = 0;

	*connect_failed = false;
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
		*connect_failed = true;
		curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
		if (oserr == EHOSTUNREACH || oserr == ENETUNREACH || oserr == ETIMEDOUT)
			return -(int)oserr;
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		*connect_failed = true;
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
		*connect_failed = connect_us == 0;
		return -ETIMEDOUT;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_WRITE_ERROR:
		return -EPROTO; /* an answer over ETCD_MAX_ANSWER */
	default:
		return -EIO;
	}
}

/* Turn an error answer {"error", "message", "code"} into an errno. */
static int answer_error(const struct etcd *c, const char *path, long status, const char *body)
{
	cJSON *j = cJSON_Parse(body);
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
	const char *m = cJSON_IsString(msg) ? msg->valuestring : "";
	int64_t code = 0;
	int rc = -EIO;

	if (j)
		json_i64(j, "code", &code);
	if (code == 5 /* NOT_FOUND */)
		rc = -ENOENT;
	else if (code == 11 /* OUT_OF_RANGE */ && strstr(m, "compacted"))
		rc = -ESTALE;
	else if (code == 11 && strstr(m, "future revision"))
		rc = -ERANGE;
	else if (strstr(m, "lease not found"))
		rc = -ENOENT;
	else
		etcd_log(LOG_WARNING, "etcd: %s%s: HTTP %ld, code %" PRId64 ": %.200s",
			 c->ep[atomic_load(&c->cur) % c->nep], path, status, code,
			 j ? m : (body ? body : ""));
	cJSON_Delete(j);
	return rc;
}

/* POST req (consumed) to path; on success *resp is the parsed answer (cJSON_Delete it). */
static int call(struct etcd *c, const char *path, cJSON *req, cJSON **resp)
{
	struct answer a = {0};
	char *body = NULL, url[512];
	unsigned first = atomic_load(&c->cur), i;
	long status = 0;
	CURL *h = NULL;
	int rc = -ENOMEM;

	*resp = NULL;
	if (!req)
		return -ENOMEM;
	body = cJSON_PrintUnformatted(req);
	cJSON_Delete(req);
	if (!body)
		return -ENOMEM;
	h = handle_get(c);
	if (!h)
		goto out;
	for (i = 0; i < c->nep; i++) {
		unsigned ep = (first + i) % c->nep;
		bool connect_failed;
		CURLcode cc;

		snprintf(url, sizeof(url), "%s%s", c->ep[ep], path);
		curl_easy_reset(h);
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, answer_write);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
		a.len = 0;
		cc = curl_easy_perform(h);
		if (cc == CURLE_OK) {
			atomic_store(&c->cur, ep);
			break;
		}
		rc = curl_errno(h, cc, &connect_failed);
		if (!connect_failed)
			goto out;
	}
	if (i == c->nep)
		goto out; /* rc: the last endpoint's connect error */
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		rc = answer_error(c, path, status, a.buf);
		goto out;
	}
	*resp = a.buf ? cJSON_Parse(a.buf) : NULL;
	rc = cJSON_IsObject(*resp) ? 0 : -EPROTO;
	if (rc) {
		cJSON_Delete(*resp);
		*resp = NULL;
	}
out:
	if (h)
		handle_put(c, h);
	free(a.buf);
	free(body);
	return rc;
}

/* ---- KV ----------------------------------------------------------------------------- */

/* The end of the range of keys that start with prefix[0..len): prefix with its last byte
 * below 0xff incremented and what follows dropped; "\0" (every key after) when none is. */
static void prefix_end(const char *prefix, size_t len, char *end, size_t *elen)
{
	while (len > 0 && (unsigned char)prefix[len - 1] == 0xff)
		len--;
	if (len == 0) {
		end[0] = '\0';
		*elen = 1;
		return;
	}
	memcpy(end, prefix, len);
	end[len - 1] = (char)((unsigned char)end[len - 1] + 1);
	*elen = len;
}

static cJSON *put_request(const char *key, const void *val, size_t len, int64_t lease)
{
	cJSON *r = cJSON_CreateObject();

	if (r && json_add_b64(r, "key", key, strlen(key)) && json_add_b64(r, "value", val, len) &&
	    (lease == 0 || json_add_i64(r, "lease", lease)))
		return r;
	cJSON_Delete(r);
	return NULL;
}

int etcd_put(struct etcd *c, const char *key, const void *val, size_t len, int64_t lease,
	     int64_t *rev)
{
	cJSON *resp;
	int64_t r;
	int rc;

	rc = call(c, "/v3/kv/put", put_request(key, val, len, lease), &resp);
	if (rc)
		return rc;
	rc = json_header_rev(resp, &r);
	cJSON_Delete(resp);
	if (rc == 0 && rev)
		*rev = r;
	return rc;
}

int etcd_put_if(struct etcd *c, const char *key, int64_t expected_mod_revision, const void *val,
		size_t len, int64_t lease, int64_t *rev)
{
	cJSON *req = cJSON_CreateObject(), *cmps, *cmp, *succ, *op, *put, *resp;
	bool ok;
	int64_t r;
	int rc;

	ok = req && (cmps = cJSON_AddArrayToObject(req, "compare")) &&
	     (cmp = cJSON_CreateObject()) && cJSON_AddItemToArray(cmps, cmp) &&
	     json_add_b64(cmp, "key", key, strlen(key)) &&
	     cJSON_AddStringToObject(cmp, "result", "EQUAL") &&
	     (expected_mod_revision == 0
		  ? cJSON_AddStringToObject(cmp, "target", "CREATE") &&
			json_add_i64(cmp, "create_revision", 0)
		  : cJSON_AddStringToObject(cmp, "target", "MOD") &&
			json_add_i64(cmp, "mod_revision", expected_mod_revision)) &&
	     (succ = cJSON_AddArrayToObject(req, "success")) && (op = cJSON_CreateObject()) &&
	     cJSON_AddItemToArray(succ, op) && (put = put_request(key, val, len, lease)) &&
	     cJSON_AddItemToObject(op, "request_put", put);
	if (!ok) {
		cJSON_Delete(req);
		return -ENOMEM;
	}
	rc = call(c, "/v3/kv/txn", req, &resp);
	if (rc)
		return rc;
	rc = json_header_rev(resp, &r);
	if (rc == 0 && !json_bool(resp, "succeeded"))
		rc = -EEXIST;
	cJSON_Delete(resp);
	if (rc == 0 && rev)
		*rev = r;
	return rc;
}

/* Range [key, end) (end NULL: key alone) at *revision (0: latest). */
static int range_raw(struct etcd *c, const char *key, size_t klen, const char *end, size_t elen,
		     size_t limit, struct etcd_kv **kvs, size_t *n, bool *more, int64_t *revision)
{
	cJSON *req = cJSON_CreateObject(), *resp;
	const cJSON *arr, *it;
	struct etcd_kv *out = NULL;
	size_t cnt = 0;
	int rc;

	*kvs = NULL;
	*n = 0;
	if (more)
		*more = false;
	if (!req || !json_add_b64(req, "key", key, klen) ||
	    (end && !json_add_b64(req, "range_end", end, elen)) ||
	    (limit && !json_add_i64(req, "limit", (int64_t)limit)) ||
	    (*revision && !json_add_i64(req, "revision", *revision))) {
		cJSON_Delete(req);
		return -ENOMEM;
	}
	rc = call(c, "/v3/kv/range", req, &resp);
	if (rc)
		return rc;
	/* the header has the store's revision: the page's is the one asked for, if any */
	rc = *revision ? json_header_rev(resp, &(int64_t){0}) : json_header_rev(resp, revision);
	arr = cJSON_GetObjectItemCaseSensitive(resp, "kvs");
	if (rc == 0 && arr && !cJSON_IsArray(arr))
		rc = -EPROTO;
	if (rc == 0 && cJSON_GetArraySize(arr) > 0) {
		out = calloc((size_t)cJSON_GetArraySize(arr), sizeof(*out));
		if (!out)
			rc = -ENOMEM;
		cJSON_ArrayForEach(it, arr)
		{
			if (rc)
				break;
			rc = parse_kv(it, &out[cnt]);
			if (rc == 0)
				cnt++;
		}
	}
	if (rc == 0 && more)
		*more = json_bool(resp, "more");
	cJSON_Delete(resp);
	if (rc) {
		etcd_kvs_free(out, cnt);
		return rc;
	}
	*kvs = out;
	*n = cnt;
	return 0;
}

int etcd_get(struct etcd *c, const char *key, struct etcd_kv *out)
{
	struct etcd_kv *kvs;
	int64_t rev = 0;
	size_t n;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = range_raw(c, key, strlen(key), NULL, 0, 1, &kvs, &n, NULL, &rev);
	if (rc)
		return rc;
	if (n == 0)
		return -ENOENT;
	*out = kvs[0];
	memset(&kvs[0], 0, sizeof(kvs[0]));
	etcd_kvs_free(kvs, n);
	return 0;
}

int etcd_range(struct etcd *c, const char *prefix, const char *start_after, size_t limit,
	       struct etcd_kv **kvs, size_t *n, bool *more, int64_t *revision)
{
	size_t plen = strlen(prefix), klen, elen;
	char *key, *end;
	int rc;

	end = malloc(plen + 1);
	if (!end)
		return -ENOMEM;
	prefix_end(prefix, plen, end, &elen);
	if (start_after) {
		/* the smallest key after start_after: start_after followed by a zero byte */
		klen = strlen(start_after) + 1;
		key = malloc(klen);
		if (key)
			memcpy(key, start_after, klen);
	} else {
		klen = plen;
		key = strdup(prefix);
	}
	if (!key) {
		free(end);
		return -ENOMEM;
	}
	rc = range_raw(c, key, klen, end, elen, limit, kvs, n, more, revision);
	free(key);
	free(end);
	return rc;
}

int etcd_delete(struct etcd *c, const char *key, bool prefix)
{
	size_t klen = strlen(key), elen = 0;
	cJSON *req = cJSON_CreateObject(), *resp;
	char *end = malloc(klen + 1);
	int64_t deleted = 0;
	int rc = -ENOMEM;

	if (!req || !end)
		goto out;
	if (prefix)
		prefix_end(key, klen, end, &elen);
	if (!json_add_b64(req, "key", key, klen) ||
	    (prefix && !json_add_b64(req, "range_end", end, elen)))
		goto out;
	rc = call(c, "/v3/kv/deleterange", req, &resp);
	req = NULL;
	if (rc)
		goto out;
	rc = json_i64(resp, "deleted", &deleted);
	cJSON_Delete(resp);
	if (rc == 0)
		rc = deleted > INT_MAX ? INT_MAX : (int)deleted;
out:
	cJSON_Delete(req);
	free(end);
	return rc;
}

int etcd_compact(struct etcd *c, int64_t revision)
{
	cJSON *req = cJSON_CreateObject(), *resp;
	int rc;

	if (!req || !json_add_i64(req, "revision", revision) ||
	    !cJSON_AddTrueToObject(req, "physical")) {
		cJSON_Delete(req);
		return -ENOMEM;
	}
	rc = call(c, "/v3/kv/compaction", req, &resp);
	cJSON_Delete(resp);
	return rc;
}

/* ---- leases ------------------------------------------------------------------------- */

int etcd_lease_grant(struct etcd *c, unsigned ttl_s, int64_t *id)
{
	cJSON *req = cJSON_CreateObject(), *resp;
	int64_t ttl = 0;
	int rc;

	if (!req || !json_add_i64(req, "TTL", ttl_s)) {
		cJSON_Delete(req);
		return -ENOMEM;
	}
	rc = call(c, "/v3/lease/grant", req, &resp);
	if (rc)
		return rc;
	rc = json_i64(resp, "ID", id);
	if (rc == 0)
		rc = json_i64(resp, "TTL", &ttl);
	if (rc == 0 && (*id == 0 || ttl <= 0))
		rc = -EPROTO;
	cJSON_Delete(resp);
	return rc;
}

int etcd_lease_keepalive(struct etcd *c, int64_t id, unsigned *ttl_left)
{
	cJSON *req = cJSON_CreateObject(), *resp;
	const cJSON *res;
	int64_t ttl = 0;
	int rc;

	if (!req || !json_add_i64(req, "ID", id)) {
		cJSON_Delete(req);
		return -ENOMEM;
	}
	/* a stream in gRPC; through the gateway, one request gives one {"result": ...} */
	rc = call(c, "/v3/lease/keepalive", req, &resp);
	if (rc)
		return rc;
	res = cJSON_GetObjectItemCaseSensitive(resp, "result");
	if (!cJSON_IsObject(res))
		rc = -EPROTO;
	else
		rc = json_i64(res, "TTL", &ttl);
	cJSON_Delete(resp);
	if (rc == 0 && ttl <= 0)
		rc = -ENOENT;
	if (rc == 0 && ttl_left)
		*ttl_left = ttl > UINT_MAX ? UINT_MAX : (unsigned)ttl;
	return rc;
}

int etcd_lease_revoke(struct etcd *c, int64_t id)
{
	cJSON *req = cJSON_CreateObject(), *resp;
	int rc;

	if (!req || !json_add_i64(req, "ID", id)) {
		cJSON_Delete(req);
		return -ENOMEM;
	}
	rc = call(c, "/v3/lease/revoke", req, &resp);
	cJSON_Delete(resp);
	return rc;
}

/* ---- watch -------------------------------------------------------------------------- */

struct etcd_watch {
	struct etcd *c;
	char *key, *end; /* the range watched: [key, end) */
	size_t klen, elen;
	etcd_watch_fn cb;
	void *arg;
	pthread_t thread;
	CURLM *multi;
	atomic_bool stop;

	pthread_mutex_t mu; /* guards started, start_err; cv signals them and stop */
	pthread_cond_t cv;
	bool started;  /* the first CONNECTED was delivered, or the first attempt failed */
	int start_err; /* that attempt's error */

	/* the watch thread's own state */
	int64_t next_rev;    /* first revision not delivered yet; 0: from now */
	int64_t seen_rev;    /* highest store revision seen in any answer */
	bool need_resync;    /* re-list before watching again */
	bool live;	     /* this stream was created */
	bool ever_live;	     /* some stream was */
	bool stream_abort;   /* give up the current stream */
	bool connect_failed; /* the last stream could not connect */
	struct answer line;
};

static void watch_started(struct etcd_watch *w, int err)
{
	pthread_mutex_lock(&w->mu);
	if (!w->started) {
		w->started = true;
		w->start_err = err;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
}

/* One WatchResponse line. Sets w->stream_abort when the stream must be given up. */
static void watch_line(struct etcd_watch *w, const char *text)
{
	cJSON *j = cJSON_Parse(text);
	const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
	const cJSON *evs, *ev;
	int64_t hrev = 0, compact = 0;

	if (!j || !cJSON_IsObject(res)) {
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");

		etcd_log(LOG_WARNING, "etcd: watch %s: %.200s", w->key,
			 cJSON_IsString(m) ? m->valuestring : text);
		w->stream_abort = true;
		goto out;
	}
	json_header_rev(res, &hrev);
	if (json_bool(res, "canceled")) {
		json_i64(res, "compact_revision", &compact);
		if (compact > 0) {
			etcd_log(LOG_NOTICE,
				 "etcd: watch %s: revision %" PRId64 " compacted (oldest %" PRId64
				 "), re-listing",
				 w->key, w->next_rev, compact);
			w->need_resync = true;
			w->live = false; /* not a disconnection: RESYNC tells the owner */
		} else {
			const cJSON *why = cJSON_GetObjectItemCaseSensitive(res, "cancel_reason");

			etcd_log(LOG_WARNING, "etcd: watch %s canceled: %s", w->key,
				 cJSON_IsString(why) ? why->valuestring : "?");
		}
		w->stream_abort = true;
		goto out;
	}
	if (json_bool(res, "created")) {
		if (hrev < w->seen_rev) {
			/* etcd came back with an older store: what was delivered is void */
			etcd_log(LOG_NOTICE,
				 "etcd: watch %s: store at revision %" PRId64 " after %" PRId64
				 ", re-listing",
				 w->key, hrev, w->seen_rev);
			w->need_resync = true;
			w->stream_abort = true;
			goto out;
		}
		if (w->next_rev == 0)
			w->next_rev = hrev + 1;
		if (hrev > w->seen_rev)
			w->seen_rev = hrev;
		w->live = w->ever_live = true;
		w->cb(w->arg, ETCD_EV_CONNECTED, NULL);
		watch_started(w, 0);
		goto out;
	}
	if (!w->live)
		goto out;
	if (hrev > w->seen_rev)
		w->seen_rev = hrev;
	evs = cJSON_GetObjectItemCaseSensitive(res, "events");
	if (!evs || cJSON_GetArraySize(evs) == 0) {
		/* a progress notification: everything up to hrev has been sent */
		if (hrev + 1 > w->next_rev)
			w->next_rev = hrev + 1;
		goto out;
	}
	cJSON_ArrayForEach(ev, evs)
	{
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
		struct etcd_kv kv;
		enum etcd_event e = ETCD_EV_PUT; /* the default, left out by the gateway */
		bool bad = false;

		if (cJSON_IsString(type) && !strcmp(type->valuestring, "DELETE"))
			e = ETCD_EV_DELETE;
		else if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "PUT")))
			bad = true;
		if (bad || parse_kv(cJSON_GetObjectItemCaseSensitive(ev, "kv"), &kv)) {
			etcd_log(LOG_WARNING, "etcd: watch %s: malformed event", w->key);
			w->stream_abort = true;
			goto out;
		}
		/* one revision may carry several events (a prefix delete, a txn); etcd never
		 * splits a revision over two answers, so resuming at its + 1 loses none */
		if (kv.mod_revision + 1 > w->next_rev)
			w->next_rev = kv.mod_revision + 1;
		w->cb(w->arg, e, &kv);
		etcd_kv_fini(&kv);
	}
out:
	cJSON_Delete(j);
}

static size_t watch_write(char *p, size_t size, size_t n, void *arg)
{
	struct etcd_watch *w = arg;
	size_t add = size * n, start = 0;
	char *nl;

	if (answer_write(p, size, n, &w->line) != add)
		return 0;
	while (!w->stream_abort && (nl = memchr(w->line.buf + start, '\n', w->line.len - start))) {
		*nl = '\0';
		if (nl > w->line.buf + start)
			watch_line(w, w->line.buf + start);
		start = (size_t)(nl - w->line.buf) + 1;
	}
	memmove(w->line.buf, w->line.buf + start, w->line.len - start);
	w->line.len -= start;
	return add;
}

/* Run one watch stream until it ends, breaks, is given up or the watch is stopped. */
static int watch_stream(struct etcd_watch *w)
{
	cJSON *req = cJSON_CreateObject(), *cr;
	unsigned ep = atomic_load(&w->c->cur) % w->c->nep;
	char *body = NULL, url[512];
	CURLcode cc = CURLE_OK;
	CURL *h = NULL;
	int running = 1, rc = -ENOMEM;
	CURLMsg *msg;
	bool connect_failed;

	if (!req || !(cr = cJSON_AddObjectToObject(req, "create_request")) ||
	    !json_add_b64(cr, "key", w->key, w->klen) ||
	    !json_add_b64(cr, "range_end", w->end, w->elen) ||
	    (w->next_rev && !json_add_i64(cr, "start_revision", w->next_rev)) ||
	    !cJSON_AddTrueToObject(cr, "progress_notify"))
		goto out;
	body = cJSON_PrintUnformatted(req);
	h = curl_easy_init();
	if (!body || !h)
		goto out;
	snprintf(url, sizeof(url), "%s/v3/watch", w->c->ep[ep]);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, w->c->hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)w->c->timeout_ms);
	/* a peer that vanished without a reset is noticed by TCP keepalive */
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
	w->line.len = 0;
	w->live = false;
	w->stream_abort = false;
	w->connect_failed = false;
	if (curl_multi_add_handle(w->multi, h) != CURLM_OK)
		goto out;
	while (running && !w->stream_abort && !atomic_load(&w->stop)) {
		if (curl_multi_perform(w->multi, &running) != CURLM_OK)
			break;
		if (running && !w->stream_abort)
			curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
	}
	while ((msg = curl_multi_info_read(w->multi, &running)))
		if (msg->msg == CURLMSG_DONE)
			cc = msg->data.result;
	curl_multi_remove_handle(w->multi, h);
	if (cc != CURLE_OK) {
		rc = curl_errno(h, cc, &connect_failed);
		w->connect_failed = connect_failed;
		if (connect_failed && w->c->nep > 1) {
			unsigned cur = ep;

			atomic_compare_exchange_strong(&w->c->cur, &cur, (ep + 1) % w->c->nep);
		}
	} else {
		long status = 0;

		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (status != 200 && status != 0)
			rc = answer_error(w->c, "/v3/watch", status, w->line.buf);
		else
			rc = w->stream_abort ? -EPROTO : -ECONNRESET; /* ended: reconnect */
	}
out:
	if (h)
		curl_easy_cleanup(h);
	free(body);
	cJSON_Delete(req);
	return rc;
}

/* Deliver the prefix as one snapshot: RESYNC, then a PUT per key; the watch goes on from
 * the snapshot's revision + 1. */
static int watch_relist(struct etcd_watch *w)
{
	struct etcd_kv *kvs;
	int64_t rev = 0;
	size_t n;
	bool more = true;
	char *after = NULL;
	int rc = 0;

	w->cb(w->arg, ETCD_EV_RESYNC, NULL);
	while (more && !atomic_load(&w->stop)) {
		const char *k = w->key;
		size_t klen = w->klen;

		if (after) {
			k = after;
			klen = strlen(after) + 1; /* the key after `after` */
		}
		rc = range_raw(w->c, k, klen, w->end, w->elen, ETCD_RELIST_PAGE, &kvs, &n, &more,
			       &rev);
		free(after);
		after = NULL;
		if (rc)
			return rc;
		for (size_t i = 0; i < n; i++)
			w->cb(w->arg, ETCD_EV_PUT, &kvs[i]);
		if (n > 0)
			after = strdup(kvs[n - 1].key);
		etcd_kvs_free(kvs, n);
		if (more && !after)
			return -ENOMEM;
	}
	free(after);
	if (atomic_load(&w->stop))
		return -ECANCELED;
	w->next_rev = rev + 1;
	w->seen_rev = rev;
	w->need_resync = false;
	return 0;
}

/* Before resuming at next_rev: is the history still there? A compacted revision, or one
 * the store has not reached (etcd came back older), means re-listing. Checking first keeps
 * the usual case free of a CONNECTED that etcd would cancel right after. */
static int watch_check(struct etcd_watch *w)
{
	int64_t rev = w->next_rev > 1 ? w->next_rev - 1 : 1;
	struct etcd_kv *kvs;
	size_t n;
	int rc;

	rc = range_raw(w->c, w->key, w->klen, w->end, w->elen, 1, &kvs, &n, NULL, &rev);
	if (rc == 0)
		etcd_kvs_free(kvs, n);
	if (rc == -ERANGE && w->seen_rev == 0)
		return 0; /* a start in the future, as asked: the watch waits for it */
	if (rc == -ESTALE || rc == -ERANGE) {
		etcd_log(LOG_NOTICE, "etcd: watch %s: revision %" PRId64 " %s, re-listing", w->key,
			 w->next_rev, rc == -ESTALE ? "compacted" : "not in the store");
		w->need_resync = true;
		rc = 0;
	}
	return rc;
}

static void watch_sleep(struct etcd_watch *w, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w->mu);
	while (!atomic_load(&w->stop) && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&w->mu);
}

static void *watch_main(void *arg)
{
	struct etcd_watch *w = arg;
	unsigned backoff = WATCH_BACKOFF_MIN_MS, first_tries = 0;
	int rc;

	while (!atomic_load(&w->stop)) {
		rc = 0;
		w->connect_failed = false;
		if (!w->need_resync && w->next_rev > 0)
			rc = watch_check(w);
		if (rc == 0 && w->need_resync)
			rc = watch_relist(w);
		if (rc == 0)
			rc = watch_stream(w);
		if (atomic_load(&w->stop))
			break;
		if (!w->ever_live) {
			/* the first attempt: every endpoint once, then etcd_watch_start fails */
			if (w->connect_failed && ++first_tries < w->c->nep)
				continue;
			watch_started(w, rc);
			break;
		}
		if (w->live) {
			w->live = false;
			backoff = WATCH_BACKOFF_MIN_MS;
			etcd_log(LOG_NOTICE, "etcd: watch %s lost (%s), reconnecting", w->key,
				 strerror(-rc));
			w->cb(w->arg, ETCD_EV_DISCONNECTED, NULL);
		}
		if (w->need_resync && rc == -EPROTO)
			continue; /* compacted: re-list now */
		watch_sleep(w, backoff);
		backoff = backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

static void watch_free(struct etcd_watch *w)
{
	if (w->multi)
		curl_multi_cleanup(w->multi);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w->line.buf);
	free(w->key);
	free(w->end);
	free(w);
}

int etcd_watch_start(struct etcd *c, const char *prefix, int64_t from_revision, etcd_watch_fn cb,
		     void *arg, struct etcd_watch **out)
{
	struct etcd_watch *w;
	pthread_condattr_t ca;
	struct timespec ts;
	int rc;

	*out = NULL;
	if (from_revision < 0)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->c = c;
	w->cb = cb;
	w->arg = arg;
	w->klen = strlen(prefix);
	w->key = strdup(prefix);
	w->end = malloc(w->klen + 1);
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	w->multi = curl_multi_init();
	if (!w->key || !w->end || !w->multi) {
		watch_free(w);
		return -ENOMEM;
	}
	prefix_end(prefix, w->klen, w->end, &w->elen);
	w->next_rev = from_revision;
	rc = -pthread_create(&w->thread, NULL, watch_main, w);
	if (rc) {
		watch_free(w);
		return rc;
	}
	/* wait for the first answer: a connect takes at most the timeout; etcd answering the
	 * create takes one more */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += 2 * (time_t)c->timeout_ms / 1000 + 1;
	pthread_mutex_lock(&w->mu);
	while (!w->started && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
		;
	rc = w->started ? w->start_err : -ETIMEDOUT;
	pthread_mutex_unlock(&w->mu);
	if (rc) {
		etcd_watch_stop(w);
		return rc;
	}
	*out = w;
	return 0;
}

void etcd_watch_stop(struct etcd_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	atomic_store(&w->stop, true);
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	watch_free(w);
}
