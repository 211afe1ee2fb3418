/*
 * members: cluster membership in etcd (see members.h for the key layout and the API).
 *
 * The table is an array of struct member sorted by node id, guarded by m->mu. It holds the
 * local member (always, with the local figures: etcd's copy of our key is not read back)
 * and every other member whose key the list or the watch has shown. Two threads feed it:
 *
 *   - the watch thread (meta/etcd.c) applies PUT and DELETE events; a RESYNC starts a fresh
 *     table on the side (m->next), filled by the PUTs that follow and swapped in at the
 *     next CONNECTED, so a snapshot never sees a half-listed table;
 *   - the keepalive thread refreshes the lease every TTL/3 (every second while etcd does
 *     not answer), writes pool_used when members_update changed it (at most once a second),
 *     and registers the member again, under a new lease, when the lease expired or our key
 *     was deleted.
 *
 * Stale: watch_up (the watch stream is live) and lease_ok (the last keepalive was
 * answered), both under m->mu; members_stale() is their negation.
 *
 * on_change runs under m->cb_mu only (never m->mu), which serialises the two threads' calls.
 * Lock order: cb_mu, then mu.
 */
#include "meta/members.h"
#include "meta/etcd.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#ifndef KVC_VERSION
#define KVC_VERSION "0"
#endif

#define MEMBERS_LIST_PAGE    256
#define MEMBERS_RETRY_MS     1000
#define MEMBERS_PUT_EVERY_MS 1000

struct mtable {
	struct member *v; /* sorted by node_id */
	size_t n, cap;
};

struct members {
	struct etcd *c;
	char prefix[128];   /* /kvcachefs/<cluster>/members/ */
	char self_key[160]; /* prefix + 16 hex digits */
	unsigned ttl_s;
	members_fn on_change;
	void *arg;
	struct etcd_watch *w;
	pthread_t ka_thread;
	bool ka_running;

	pthread_mutex_t cb_mu; /* serialises on_change */

	pthread_mutex_t mu; /* guards everything below; cv wakes the keepalive thread */
	pthread_cond_t cv;
	struct member self;
	struct mtable tab;
	struct mtable next; /* the table being re-listed (resyncing) */
	bool resyncing;
	int64_t lease; /* current lease (0 until registered) */
	bool lease_ok, watch_up;
	bool need_register;   /* our key or lease is gone: register again */
	bool put_pending;     /* self.pool_used changed since the last put */
	uint64_t last_put_ms; /* when our key was last written */
	bool stop;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the table ---------------------------------------------------------------------- */

/* Index of id in t, or where it would go. */
static size_t mtable_find(const struct mtable *t, uint64_t id, bool *found)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->v[mid].node_id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < t->n && t->v[lo].node_id == id;
	return lo;
}

/* Insert or replace. Returns 1 when t changed, 0 when it held the same, -ENOMEM. */
static int mtable_put(struct mtable *t, const struct member *mb)
{
	bool found;
	size_t i = mtable_find(t, mb->node_id, &found);

	if (found) {
		if (!memcmp(&t->v[i], mb, sizeof(*mb)))
			return 0;
		t->v[i] = *mb;
		return 1;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 8;
		struct member *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		t->v = v;
		t->cap = cap;
	}
	memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof(*t->v));
	t->v[i] = *mb;
	t->n++;
	return 1;
}

/* Returns 1 when id was there. */
static int mtable_del(struct mtable *t, uint64_t id)
{
	bool found;
	size_t i = mtable_find(t, id, &found);

	if (!found)
		return 0;
	memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
	t->n--;
	return 1;
}

/* ---- the JSON value ----------------------------------------------------------------- */

static char *member_json(const struct member *mb)
{
	cJSON *o = cJSON_CreateObject(), *tr;
	char id[17], *s = NULL;

	snprintf(id, sizeof(id), "%016" PRIx64, mb->node_id);
	if (o && cJSON_AddStringToObject(o, "node_id", id) &&
	    cJSON_AddStringToObject(o, "addr", mb->addr) &&
	    (tr = cJSON_AddArrayToObject(o, "transports")) &&
	    (!(mb->transports & MEMBER_TCP) ||
	     cJSON_AddItemToArray(tr, cJSON_CreateString("tcp"))) &&
	    (!(mb->transports & MEMBER_RDMA) ||
	     cJSON_AddItemToArray(tr, cJSON_CreateString("rdma"))) &&
	    cJSON_AddNumberToObject(o, "pool_size", (double)mb->pool_size) &&
	    cJSON_AddNumberToObject(o, "pool_used", (double)mb->pool_used) &&
	    cJSON_AddNumberToObject(o, "started", (double)mb->started) &&
	    cJSON_AddStringToObject(o, "version", mb->version))
		s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

static bool json_u64(const cJSON *o, const char *name, uint64_t *v)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!cJSON_IsNumber(f) || f->valuedouble < 0 || f->valuedouble >= 18446744073709551616.0)
		return false;
	*v = (uint64_t)f->valuedouble;
	return true;
}

/* The node id in a member key ("<prefix><16 hex>"), or 0 when the key is not one. */
static uint64_t key_node_id(const struct members *m, const char *key)
{
	size_t plen = strlen(m->prefix);
	uint64_t id = 0;

	if (strncmp(key, m->prefix, plen) || strlen(key + plen) != 16)
		return 0;
	for (const char *p = key + plen; *p; p++) {
		int d = *p >= '0' && *p <= '9'	 ? *p - '0'
			: *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
						 : -1;

		if (d < 0)
			return 0;
		id = id << 4 | (uint64_t)d;
	}
	return id;
}

/* Parse a member's value. Returns 0 or -EPROTO (the caller logs and skips it). */
static int member_parse(const char *key_id_hex, const char *json, struct member *mb)
{
	cJSON *o = cJSON_Parse(json);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "node_id");
	const cJSON *addr = cJSON_GetObjectItemCaseSensitive(o, "addr");
	const cJSON *tr = cJSON_GetObjectItemCaseSensitive(o, "transports");
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(o, "version");
	const cJSON *it;
	uint64_t started = 0;
	int rc = -EPROTO;

	memset(mb, 0, sizeof(*mb));
	if (!cJSON_IsObject(o) || !cJSON_IsString(id) || strcmp(id->valuestring, key_id_hex) ||
	    !cJSON_IsString(addr) || !*addr->valuestring ||
	    strlen(addr->valuestring) >= sizeof(mb->addr) || (tr && !cJSON_IsArray(tr)) ||
	    !json_u64(o, "pool_size", &mb->pool_size) ||
	    !json_u64(o, "pool_used", &mb->pool_used) || !json_u64(o, "started", &started))
		goto out;
	mb->node_id = strtoull(key_id_hex, NULL, 16);
	strcpy(mb->addr, addr->valuestring);
	cJSON_ArrayForEach(it, tr)
	{
		if (cJSON_IsString(it) && !strcmp(it->valuestring, "tcp"))
			mb->transports |= MEMBER_TCP;
		else if (cJSON_IsString(it) && !strcmp(it->valuestring, "rdma"))
			mb->transports |= MEMBER_RDMA;
	}
	mb->started = (int64_t)started;
	if (cJSON_IsString(ver))
		snprintf(mb->version, sizeof(mb->version), "%s", ver->valuestring);
	rc = 0;
out:
	cJSON_Delete(o);
	return rc;
}

/* A member from a PUT (list or watch). Returns 0, or -EPROTO for a key or value that is
 * not a member's (logged). */
static int member_from_kv(const struct members *m, const struct etcd_kv *kv, struct member *mb)
{
	uint64_t id = key_node_id(m, kv->key);
	const char *hex = kv->key + strlen(m->prefix);

	if (id == 0 || member_parse(hex, kv->value, mb)) {
		etcd_log(LOG_WARNING, "members: ignoring malformed member %s", kv->key);
		return -EPROTO;
	}
	return 0;
}

/* ---- callbacks ---------------------------------------------------------------------- */

static void notify(struct members *m)
{
	if (!m->on_change)
		return;
	pthread_mutex_lock(&m->cb_mu);
	m->on_change(m->arg, m);
	pthread_mutex_unlock(&m->cb_mu);
}

static void watch_cb(void *arg, enum etcd_event ev, const struct etcd_kv *kv)
{
	struct members *m = arg;
	struct member mb;
	bool changed = false;
	uint64_t id;

	pthread_mutex_lock(&m->mu);
	switch (ev) {
	case ETCD_EV_PUT:
		if (member_from_kv(m, kv, &mb))
			break;
		if (mb.node_id == m->self.node_id)
			break; /* the local figures are the truth */
		if (m->resyncing)
			mtable_put(&m->next, &mb);
		else
			changed = mtable_put(&m->tab, &mb) > 0;
		break;
	case ETCD_EV_DELETE:
		id = key_node_id(m, kv->key);
		if (id == 0)
			break;
		if (id == m->self.node_id) {
			/* our lease expired, or someone deleted the key: put it back */
			if (!m->stop) {
				m->need_register = true;
				pthread_cond_signal(&m->cv);
			}
			break;
		}
		changed = mtable_del(&m->tab, id) > 0;
		break;
	case ETCD_EV_RESYNC:
		m->resyncing = true;
		m->next.n = 0;
		if (mtable_put(&m->next, &m->self) < 0)
			m->next.n = 0;
		break;
	case ETCD_EV_CONNECTED:
		if (m->resyncing) {
			struct mtable t = m->tab;

			/* a table that could not hold self (ENOMEM) is not swapped in */
			if (m->next.n > 0) {
				m->tab = m->next;
				m->next = t;
				changed = true;
			}
			m->resyncing = false;
			etcd_log(LOG_NOTICE, "members: re-listed, %zu members", m->tab.n);
		}
		changed |= !m->watch_up;
		m->watch_up = true;
		break;
	case ETCD_EV_DISCONNECTED:
		changed = m->watch_up;
		m->watch_up = false;
		break;
	}
	pthread_mutex_unlock(&m->mu);
	if (changed)
		notify(m);
}

/* ---- registration and the keepalive thread ----------------------------------------- */

/* Put our key under a new lease (the old one expired, or the key went). Called without
 * m->mu. Returns 0, -EEXIST when another live member holds our node id, or an etcd error. */
static int reregister(struct members *m)
{
	struct etcd_kv kv;
	int64_t old, lease;
	char *val;
	int rc;

	pthread_mutex_lock(&m->mu);
	old = m->lease;
	val = member_json(&m->self);
	pthread_mutex_unlock(&m->mu);
	if (!val)
		return -ENOMEM;
	rc = etcd_lease_grant(m->c, m->ttl_s, &lease);
	if (rc)
		goto out;
	rc = etcd_put_if(m->c, m->self_key, 0, val, strlen(val), lease, NULL);
	if (rc == -EEXIST) {
		/* still there: ours under the old lease (not yet reaped, or a late DELETE event)
		 * moves to the new one; anybody else's is a conflict */
		rc = etcd_get(m->c, m->self_key, &kv);
		if (rc == 0) {
			rc = kv.lease == old ? etcd_put_if(m->c, m->self_key, kv.mod_revision, val,
							   strlen(val), lease, NULL)
					     : -EEXIST;
			etcd_kv_fini(&kv);
		} else if (rc == -ENOENT) {
			rc = -EAGAIN; /* reaped in between: next try */
		}
	}
	if (rc) {
		etcd_lease_revoke(m->c, lease);
		goto out;
	}
	if (old)
		etcd_lease_revoke(m->c, old); /* usually gone already (ENOENT) */
	pthread_mutex_lock(&m->mu);
	m->lease = lease;
	m->last_put_ms = mono_ms();
	m->put_pending = false;
	pthread_mutex_unlock(&m->mu);
	etcd_log(LOG_NOTICE, "members: registered %s again under lease %" PRIx64, m->self_key,
		 (uint64_t)lease);
out:
	free(val);
	return rc;
}

static void *ka_main(void *arg)
{
	struct members *m = arg;
	unsigned period = m->ttl_s * 1000 / 3;
	uint64_t next_ka = mono_ms() + period, next_reg = 0;
	bool conflict_logged = false;

	pthread_mutex_lock(&m->mu);
	while (!m->stop) {
		uint64_t now = mono_ms(), wake;
		bool was_ok = m->lease_ok, ok;
		int64_t lease = m->lease;
		char *val;
		int rc;

		if (m->need_register && now >= next_reg) {
			pthread_mutex_unlock(&m->mu);
			rc = reregister(m);
			pthread_mutex_lock(&m->mu);
			if (rc == -EEXIST && !conflict_logged) {
				etcd_log(LOG_ERR,
					 "members: node id %016" PRIx64
					 " is registered by another live member",
					 m->self.node_id);
				conflict_logged = true;
			}
			if (rc == 0) {
				m->need_register = false;
				conflict_logged = false;
				next_ka = now + period;
			} else {
				next_reg = now + MEMBERS_RETRY_MS;
			}
			ok = rc == 0 || rc == -EEXIST;
		} else if (!m->need_register && now >= next_ka) {
			pthread_mutex_unlock(&m->mu);
			rc = etcd_lease_keepalive(m->c, lease, NULL);
			pthread_mutex_lock(&m->mu);
			if (rc == -ENOENT && lease == m->lease) {
				etcd_log(LOG_WARNING, "members: lease %" PRIx64 " of %s expired",
					 (uint64_t)lease, m->self_key);
				m->need_register = true;
				next_reg = now;
			}
			next_ka = now + (rc ? MEMBERS_RETRY_MS : period);
			ok = rc == 0 || rc == -ENOENT;
		} else if (!m->need_register && m->put_pending &&
			   now >= m->last_put_ms + MEMBERS_PUT_EVERY_MS) {
			val = member_json(&m->self);
			m->put_pending = false;
			m->last_put_ms = now;
			pthread_mutex_unlock(&m->mu);
			rc = val ? etcd_put(m->c, m->self_key, val, strlen(val), lease, NULL)
				 : -ENOMEM;
			free(val);
			pthread_mutex_lock(&m->mu);
			if (rc == -ENOENT && lease == m->lease) {
				m->need_register = true; /* the lease went: the key with it */
				next_reg = now;
			} else if (rc) {
				m->put_pending = true; /* retried in a second */
			}
			ok = rc == 0 || rc == -ENOENT;
		} else {
			struct timespec ts;

			wake = m->need_register ? next_reg : next_ka;
			if (!m->need_register && m->put_pending &&
			    m->last_put_ms + MEMBERS_PUT_EVERY_MS < wake)
				wake = m->last_put_ms + MEMBERS_PUT_EVERY_MS;
			if (wake <= now)
				continue;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)((wake - now) / 1000);
			ts.tv_nsec += (long)((wake - now) % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&m->cv, &m->mu, &ts);
			continue;
		}
		m->lease_ok = ok;
		if (ok != was_ok && !m->stop) {
			pthread_mutex_unlock(&m->mu);
			notify(m);
			pthread_mutex_lock(&m->mu);
		}
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

/* ---- the API ------------------------------------------------------------------------ */

static bool cluster_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= MEMBER_CLUSTER_MAX)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

static void members_free(struct members *m)
{
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->mu);
	pthread_mutex_destroy(&m->cb_mu);
	free(m->tab.v);
	free(m->next.v);
	free(m);
}

/* List the prefix, page by page at one revision, into m->tab (self already in it). */
static int list_all(struct members *m, int64_t *rev)
{
	struct etcd_kv *kvs;
	char *after = NULL;
	bool more = true;
	size_t n;
	int rc = 0;

	*rev = 0;
	while (more) {
		struct member mb;

		rc = etcd_range(m->c, m->prefix, after, MEMBERS_LIST_PAGE, &kvs, &n, &more, rev);
		free(after);
		after = NULL;
		if (rc)
			return rc;
		for (size_t i = 0; i < n && rc == 0; i++)
			if (member_from_kv(m, &kvs[i], &mb) == 0 && mb.node_id != m->self.node_id)
				rc = mtable_put(&m->tab, &mb) < 0 ? -ENOMEM : 0;
		if (rc == 0 && more && (n == 0 || !(after = strdup(kvs[n - 1].key))))
			rc = n == 0 ? -EPROTO : -ENOMEM;
		etcd_kvs_free(kvs, n);
		if (rc)
			return rc;
	}
	return 0;
}

int members_join(struct members **out, struct etcd *c, const char *cluster,
		 const struct member *self, unsigned ttl_s, members_fn on_change, void *arg)
{
	struct members *m;
	pthread_condattr_t ca;
	int64_t rev;
	char *val = NULL;
	int rc;

	*out = NULL;
	if (!cluster_name_ok(cluster) || self->node_id == 0 ||
	    strnlen(self->addr, sizeof(self->addr)) == sizeof(self->addr) || !self->addr[0] ||
	    strnlen(self->version, sizeof(self->version)) == sizeof(self->version))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->c = c;
	m->ttl_s = ttl_s ? ttl_s : MEMBERS_TTL_DEFAULT;
	m->on_change = on_change;
	m->arg = arg;
	snprintf(m->prefix, sizeof(m->prefix), "/kvcachefs/%s/members/", cluster);
	snprintf(m->self_key, sizeof(m->self_key), "%s%016" PRIx64, m->prefix, self->node_id);
	m->self = *self;
	m->self.self = true;
	if (!m->self.started)
		m->self.started = (int64_t)time(NULL);
	if (!m->self.version[0])
		snprintf(m->self.version, sizeof(m->self.version), "%s", KVC_VERSION);
	m->lease_ok = true;
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->cb_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cv, &ca);
	pthread_condattr_destroy(&ca);

	rc = -ENOMEM;
	val = member_json(&m->self);
	if (!val || mtable_put(&m->tab, &m->self) < 0)
		goto out_free;
	rc = etcd_lease_grant(c, m->ttl_s, &m->lease);
	if (rc)
		goto out_free;
	rc = etcd_put_if(c, m->self_key, 0, val, strlen(val), m->lease, NULL);
	if (rc)
		goto out_revoke;
	m->last_put_ms = mono_ms();
	/* a compaction between two pages voids the snapshot: list again */
	for (int tries = 0; (rc = list_all(m, &rev)) == -ESTALE && tries < 3; tries++) {
		m->tab.n = 0;
		mtable_put(&m->tab, &m->self); /* cannot fail: the array held it before */
	}
	if (rc)
		goto out_revoke;
	rc = etcd_watch_start(c, m->prefix, rev + 1, watch_cb, m, &m->w);
	if (rc)
		goto out_revoke;
	rc = -pthread_create(&m->ka_thread, NULL, ka_main, m);
	if (rc) {
		etcd_watch_stop(m->w);
		goto out_revoke;
	}
	m->ka_running = true;
	free(val);
	*out = m;
	return 0;

out_revoke:
	etcd_lease_revoke(c, m->lease);
out_free:
	free(val);
	members_free(m);
	return rc;
}

int members_snapshot(struct members *m, struct member **list, size_t *n)
{
	struct member *v = NULL;
	size_t cnt;

	pthread_mutex_lock(&m->mu);
	cnt = m->tab.n;
	if (cnt > 0) {
		v = malloc(cnt * sizeof(*v));
		if (v)
			memcpy(v, m->tab.v, cnt * sizeof(*v));
	}
	pthread_mutex_unlock(&m->mu);
	if (cnt > 0 && !v)
		return -ENOMEM;
	*list = v;
	*n = cnt;
	return 0;
}

bool members_stale(struct members *m)
{
	bool stale;

	pthread_mutex_lock(&m->mu);
	stale = !m->watch_up || !m->lease_ok;
	pthread_mutex_unlock(&m->mu);
	return stale;
}

void members_update(struct members *m, uint64_t pool_used)
{
	bool found;
	size_t i;

	pthread_mutex_lock(&m->mu);
	if (m->self.pool_used != pool_used) {
		m->self.pool_used = pool_used;
		i = mtable_find(&m->tab, m->self.node_id, &found);
		if (found)
			m->tab.v[i].pool_used = pool_used;
		m->put_pending = true;
		pthread_cond_signal(&m->cv);
	}
	pthread_mutex_unlock(&m->mu);
}

void members_leave(struct members *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	m->stop = true;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	etcd_watch_stop(m->w);
	if (m->ka_running)
		pthread_join(m->ka_thread, NULL);
	if (m->lease)
		etcd_lease_revoke(m->c, m->lease);
	members_free(m);
}
