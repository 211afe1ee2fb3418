/*
 * rdma: device discovery and one-sided READ/WRITE over RC queue pairs (see rdma.h).
 *
 * Discovery (rdma_probe) asks libibverbs for its devices, opens each and keeps those with an
 * ACTIVE port; NUMA node and link speed are best effort (sysfs, ibv_port_attr). Nothing here
 * assumes a device exists: every entry point checks for one first and fails with -ENODEV,
 * so a machine without RDMA hardware (or without the rdma_cm kernel module) only loses the
 * RDMA transport.
 *
 * Connections go through librdmacm. Both objects find their verbs context by device name in
 * rdma_get_devices() (librdmacm's own contexts: the only ones its cm_ids and QPs can share
 * a PD with) and hold that list until they are closed, so the context outlives the PD, CQ
 * and MRs allocated on it even if the device is unplugged.
 *
 * Listener (target side). One cm_id bound to host:port and listening, one PD, one CQ, all on
 * the device's context. Every accepted RC QP uses that PD, so one registration
 * (rdma_listener_export) serves every peer. The target never posts work requests: peers
 * READ and WRITE its memory one-sided; the CQ exists because a QP needs one and stays
 * empty. A background thread owns the event channel: it accepts CONNECT_REQUESTs (rejecting
 * those that arrive on another device, possible when host is a wildcard address), and tears
 * a QP down on DISCONNECTED or a connection error. Accepted connections are a list touched
 * only by that thread until rdma_listener_close stops it (eventfd) and joins it; the export
 * table is protected by the listener's mutex, so export/unexport may run on any thread,
 * concurrently with each other and with the event thread. A host that belongs to another
 * device than dev is refused (-EADDRNOTAVAIL); NULL or a wildcard host listens on every
 * address but serves only dev.
 *
 * Path (initiator side). nqps cm_ids on one private event channel, each with an RC QP; all
 * share one PD and one CQ sized for the sum of their send queues, so the CQ cannot overrun.
 * Connection setup is synchronous (resolve address, route, connect, one QP after the other)
 * against one deadline (timeout_ms <= 0 means RDMA_DEF_TIMEOUT). A route to the peer that
 * leaves through another device than dev is refused (-ENETUNREACH). A QP's outstanding count rises
 * on post and falls when its completion is polled (matched by qp_num); post returns -EAGAIN at the
 * QP's send-queue depth, never waits. Once a QP reports a failed completion it is marked broken
 * (the hardware moved it to the error state) and further posts on it fail with -EIO at once, so the
 * engine moves the slice to another QP or to TCP. Registered local regions are kept in a small
 * table and an already registered range returns the same lkey.
 *
 * Thread-safety: a path is driven by one thread at a time (reg, post, poll and close are not
 * synchronized among themselves); different paths are independent. rdma_probe, rdma_pick
 * and rdma_mem_numa_node are reentrant. rdma_listener_close must not race with other calls
 * on the same listener.
 *
 * Hot path: rdma_path_post and rdma_path_poll allocate nothing and take no lock.
 */
#include "engine/rdma.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <linux/mempolicy.h>
#include <rdma/rdma_cma.h>

#define RDMA_MAX_QPS	 64  /* per path */
#define RDMA_SQ_DEPTH	 256 /* send work requests per path QP (before device limits) */
#define RDMA_BACKLOG	 128
#define RDMA_DEF_TIMEOUT 5000 /* ms, when rdma_path_connect is given timeout_ms <= 0 */
#define RDMA_RETRY	 7    /* transport and RNR retries (7 = RNR retry forever) */
#define RDMA_POLL_BATCH	 32

/* A registered memory region: the listener's exports and the path's local registrations. */
struct rdma_region {
	uintptr_t addr;
	uint64_t len;
	struct ibv_mr *mr;
};

struct rdma_regions {
	struct rdma_region *v;
	size_t n, cap;
};

/* One accepted connection on the listener; owned by the event thread until close. */
struct rdma_conn {
	struct rdma_cm_id *id;
	struct rdma_conn *next;
};

struct rdma_listener {
	struct ibv_context **devs; /* rdma_get_devices(), held until close */
	struct ibv_context *ctx;   /* the device's context, one of devs */
	struct rdma_event_channel *ec;
	struct rdma_cm_id *id; /* bound and listening */
	struct ibv_pd *pd;     /* shared by every accepted QP and every export */
	struct ibv_cq *cq;     /* required by the QPs, never polled: the target posts nothing */
	int stop_fd;	       /* eventfd that stops the event thread */
	pthread_t thread;
	bool thread_started;
	bool dead;		 /* DEVICE_REMOVAL seen: written by the event thread under lock */
	struct rdma_conn *conns; /* event thread only, until close joins it */
	pthread_mutex_t lock;	 /* protects exports, dead */
	struct rdma_regions exports;
};

struct rdma_path_qp {
	struct rdma_cm_id *id;
	uint32_t qp_num;
	unsigned outstanding; /* posted, completion not yet polled */
	unsigned max;	      /* send-queue depth: outstanding never exceeds it */
	bool connected;
	bool broken; /* a completion failed: the QP is in the error state */
};

struct rdma_path {
	struct ibv_context **devs; /* rdma_get_devices(), held until close */
	struct ibv_context *ctx;
	struct rdma_event_channel *ec;
	struct ibv_pd *pd;
	struct ibv_cq *cq; /* shared by all QPs, nqps * depth entries at least */
	int mr_access;	   /* access flags of local registrations */
	unsigned nqps;
	struct rdma_path_qp *qps;
	struct rdma_regions regs;
};

/* ---- discovery ---------------------------------------------------------------------- */

/* Link speed as the kernel's ports/N/rate file reports it (signalling rate, Mb/s). */
static uint32_t port_mbps(const struct ibv_port_attr *pa)
{
	uint32_t lane, lanes;

	switch (pa->active_speed) {
	case 1: /* SDR */
		lane = 2500;
		break;
	case 2: /* DDR */
		lane = 5000;
		break;
	case 4: /* QDR */
	case 8: /* FDR10 */
		lane = 10000;
		break;
	case 16: /* FDR */
		lane = 14000;
		break;
	case 32: /* EDR */
		lane = 25000;
		break;
	case 64: /* HDR */
		lane = 50000;
		break;
	case 128: /* NDR */
		lane = 100000;
		break;
	default:
		return 0;
	}
	switch (pa->active_width) {
	case 1:
		lanes = 1;
		break;
	case 2:
		lanes = 4;
		break;
	case 4:
		lanes = 8;
		break;
	case 8:
		lanes = 12;
		break;
	case 16:
		lanes = 2;
		break;
	default:
		return 0;
	}
	return lane * lanes;
}

static int dev_numa_node(struct ibv_device *d)
{
	char path[IBV_SYSFS_PATH_MAX + 32], buf[16];
	int fd, node = -1;
	ssize_t n;

	if (d->ibdev_path[0])
		snprintf(path, sizeof(path), "%s/device/numa_node", d->ibdev_path);
	else
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/numa_node",
			 ibv_get_device_name(d));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		node = atoi(buf);
	}
	return node >= 0 ? node : -1;
}

/* Whether the kernel lists RDMA devices at all: tells "no device" from "no provider". */
static bool sysfs_has_devices(void)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	bool any = false;

	if (!d)
		return false;
	while (!any && (e = readdir(d)))
		any = e->d_name[0] != '.';
	closedir(d);
	return any;
}

int rdma_probe(struct rdma_dev *devs, int max, const char **why)
{
	struct ibv_device **list;
	int ndev = 0, nopen = 0, n = 0, i;
	const char *none;

	if (!devs || max <= 0)
		return -EINVAL;
	list = ibv_get_device_list(&ndev);
	if (!list || ndev <= 0) {
		/* libibverbs is silent when the kernel has devices but no provider library
		 * (ibverbs-providers) matches them: check sysfs to tell the cases apart. */
		none = sysfs_has_devices() ? "libibverbs finds no provider" : "no RDMA device";
		goto out;
	}
	for (i = 0; i < ndev && n < max; i++) {
		struct ibv_device_attr da;
		struct ibv_port_attr pa;
		struct ibv_context *ctx;
		struct rdma_dev *d = &devs[n];
		int p;

		ctx = ibv_open_device(list[i]);
		if (!ctx)
			continue;
		if (ibv_query_device(ctx, &da)) {
			ibv_close_device(ctx);
			continue;
		}
		nopen++;
		for (p = 1; p <= da.phys_port_cnt; p++) {
			if (ibv_query_port(ctx, (uint8_t)p, &pa) == 0 &&
			    pa.state == IBV_PORT_ACTIVE)
				break;
		}
		if (p <= da.phys_port_cnt) {
			memset(d, 0, sizeof(*d));
			snprintf(d->name, sizeof(d->name), "%s", ibv_get_device_name(list[i]));
			d->numa_node = dev_numa_node(list[i]);
			d->port = (uint8_t)p;
			d->link_mbps = port_mbps(&pa);
			n++;
		}
		ibv_close_device(ctx);
	}
	none = nopen ? "no active port" : "RDMA devices found but none can be opened";
out:
	if (list)
		ibv_free_device_list(list);
	if (n == 0 && why)
		*why = none;
	return n;
}

int rdma_mem_numa_node(const void *addr)
{
	long page = sysconf(_SC_PAGESIZE);
	void *pages[1];
	int status[1] = {-1};
	int node = -1;

	if (!addr || page <= 0)
		return -1;
	/* move_pages with no target nodes only reports where each page is, and reports a
	 * page that was never touched as such (-ENOENT) rather than faulting it in. */
	pages[0] = (void *)((uintptr_t)addr & ~((uintptr_t)page - 1));
	if (syscall(SYS_move_pages, 0L, 1UL, pages, NULL, status, 0L) == 0)
		return status[0] >= 0 ? status[0] : -1;
	/* Kernels without CONFIG_MIGRATION, or seccomp filters that deny move_pages. */
	if (syscall(SYS_get_mempolicy, &node, NULL, 0UL, addr,
		    (unsigned long)(MPOL_F_NODE | MPOL_F_ADDR)) == 0)
		return node >= 0 ? node : -1;
	return -1;
}

int rdma_pick(const struct rdma_dev *devs, int n, int numa_node)
{
	int i;

	if (!devs || n <= 0)
		return -1;
	if (numa_node >= 0) {
		for (i = 0; i < n; i++)
			if (devs[i].numa_node == numa_node)
				return i;
	}
	return 0;
}

/* ---- shared helpers --------------------------------------------------------------- */

static int neg_errno(int fallback)
{
	return errno > 0 ? -errno : -fallback;
}

/* librdmacm's context for the device named name; *devs holds it until rdma_free_devices. */
static int dev_context(const char *name, struct ibv_context ***devs, struct ibv_context **ctx)
{
	struct ibv_context **list;
	int i, n = 0;

	*devs = NULL;
	*ctx = NULL;
	list = rdma_get_devices(&n);
	if (!list)
		return -ENODEV;
	for (i = 0; i < n && list[i]; i++) {
		if (strncmp(ibv_get_device_name(list[i]->device), name, RDMA_DEV_NAME) == 0) {
			*devs = list;
			*ctx = list[i];
			return 0;
		}
	}
	rdma_free_devices(list);
	return -ENODEV;
}

static int resolve(const char *host, uint16_t port, bool passive, struct sockaddr_storage *ss)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	char serv[8];
	int ret;

	if (passive)
		hints.ai_flags |= AI_PASSIVE;
	snprintf(serv, sizeof(serv), "%u", (unsigned)port);
	ret = getaddrinfo(host, serv, &hints, &res);
	switch (ret) {
	case 0:
		break;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_SYSTEM:
		return neg_errno(EIO);
	default:
		return -EHOSTUNREACH;
	}
	if (res->ai_addrlen > sizeof(*ss)) {
		freeaddrinfo(res);
		return -EAFNOSUPPORT;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return neg_errno(EIO);
	return 0;
}

static struct rdma_region *regions_find(struct rdma_regions *t, uintptr_t addr, uint64_t len)
{
	size_t i;

	for (i = 0; i < t->n; i++) {
		struct rdma_region *r = &t->v[i];

		if (addr >= r->addr && addr - r->addr <= r->len && len <= r->len - (addr - r->addr))
			return r;
	}
	return NULL;
}

static int regions_add(struct rdma_regions *t, uintptr_t addr, uint64_t len, struct ibv_mr *mr)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct rdma_region *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n++] = (struct rdma_region){.addr = addr, .len = len, .mr = mr};
	return 0;
}

static void regions_free(struct rdma_regions *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		ibv_dereg_mr(t->v[i].mr);
	free(t->v);
	memset(t, 0, sizeof(*t));
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- listener ----------------------------------------------------------------------- */

static void conn_destroy(struct rdma_conn *c, bool disconnect)
{
	if (disconnect)
		rdma_disconnect(c->id);
	if (c->id->qp)
		rdma_destroy_qp(c->id);
	rdma_destroy_id(c->id);
	free(c);
}

static void conn_unlink(struct rdma_listener *l, struct rdma_conn *c)
{
	struct rdma_conn **pp;

	for (pp = &l->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			return;
		}
	}
}

/* A CONNECT_REQUEST: a QP on the listener's PD, then accept. Returns the cm_id to destroy
 * once the event is acknowledged (the request was rejected), or NULL. */
static struct rdma_cm_id *listener_accept(struct rdma_listener *l, struct rdma_cm_id *id)
{
	struct ibv_qp_init_attr qa = {
	    .send_cq = l->cq,
	    .recv_cq = l->cq,
	    .qp_type = IBV_QPT_RC,
	    .cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1},
	};
	struct rdma_conn_param cp = {
	    .responder_resources = RDMA_MAX_RESP_RES, /* min of ours and the peer's */
	    .initiator_depth = RDMA_MAX_INIT_DEPTH,
	    .retry_count = RDMA_RETRY,
	    .rnr_retry_count = RDMA_RETRY,
	};
	struct rdma_conn *c;

	/* A wildcard listener sees requests on every device; its PD serves only one. */
	if (l->dead || id->verbs != l->ctx)
		goto reject;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto reject;
	if (rdma_create_qp(id, l->pd, &qa)) {
		free(c);
		goto reject;
	}
	c->id = id;
	id->context = c;
	if (rdma_accept(id, &cp)) {
		rdma_destroy_qp(id);
		id->context = NULL;
		free(c);
		goto reject;
	}
	c->next = l->conns;
	l->conns = c;
	return NULL;
reject:
	rdma_reject(id, NULL, 0);
	return id;
}

static void listener_event(struct rdma_listener *l, struct rdma_cm_event *ev,
			   struct rdma_cm_id **destroy, struct rdma_conn **drop)
{
	struct rdma_conn *c = ev->id->context; /* librdmacm always sets ev->id */

	switch (ev->event) {
	case RDMA_CM_EVENT_CONNECT_REQUEST:
		*destroy = listener_accept(l, ev->id);
		break;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_CONNECT_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_REJECTED:
		if (ev->id != l->id && c) {
			conn_unlink(l, c);
			*drop = c;
		}
		break;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		/* Everything is torn down by rdma_listener_close; until then accept nothing
		 * and refuse new exports. */
		pthread_mutex_lock(&l->lock);
		l->dead = true;
		pthread_mutex_unlock(&l->lock);
		break;
	default: /* ESTABLISHED, TIMEWAIT_EXIT, ADDR_CHANGE: nothing to do */
		break;
	}
}

static void *listener_loop(void *arg)
{
	struct rdma_listener *l = arg;
	struct pollfd pfd[2] = {{.fd = l->ec->fd, .events = POLLIN},
				{.fd = l->stop_fd, .events = POLLIN}};

	for (;;) {
		struct rdma_cm_event *ev;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		/* The channel is non-blocking: drain what is queued. */
		while (rdma_get_cm_event(l->ec, &ev) == 0) {
			struct rdma_cm_id *destroy = NULL;
			struct rdma_conn *drop = NULL;

			listener_event(l, ev, &destroy, &drop);
			/* rdma_destroy_id waits for its events to be acknowledged. */
			rdma_ack_cm_event(ev);
			if (destroy)
				rdma_destroy_id(destroy);
			if (drop)
				conn_destroy(drop, true);
		}
		if (errno != EAGAIN && errno != EINTR)
			break;
	}
	return NULL;
}

static void listener_free(struct rdma_listener *l)
{
	struct rdma_conn *c;

	/* QPs, MRs, CQ and PD go before the cm_ids: the last cm_id on a device may be what
	 * keeps librdmacm's context open (l->devs too, released last). */
	for (c = l->conns; c; c = c->next) {
		rdma_disconnect(c->id);
		if (c->id->qp)
			rdma_destroy_qp(c->id);
	}
	regions_free(&l->exports);
	if (l->cq)
		ibv_destroy_cq(l->cq);
	if (l->pd)
		ibv_dealloc_pd(l->pd);
	while ((c = l->conns)) {
		l->conns = c->next;
		rdma_destroy_id(c->id);
		free(c);
	}
	if (l->id)
		rdma_destroy_id(l->id);
	if (l->ec)
		rdma_destroy_event_channel(l->ec);
	if (l->stop_fd >= 0)
		close(l->stop_fd);
	if (l->devs)
		rdma_free_devices(l->devs);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

int rdma_listener_open(const struct rdma_dev *dev, const char *host, uint16_t *port,
		       struct rdma_listener **out)
{
	struct sockaddr_storage ss;
	struct rdma_listener *l;
	int ret;

	if (!dev || !port || !out)
		return -EINVAL;
	*out = NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->stop_fd = -1;
	pthread_mutex_init(&l->lock, NULL);
	ret = dev_context(dev->name, &l->devs, &l->ctx);
	if (ret)
		goto fail;
	ret = resolve(host, *port, true, &ss);
	if (ret)
		goto fail;
	l->ec = rdma_create_event_channel();
	if (!l->ec) {
		ret = neg_errno(ENODEV);
		goto fail;
	}
	ret = set_nonblock(l->ec->fd);
	if (ret)
		goto fail;
	if (rdma_create_id(l->ec, &l->id, NULL, RDMA_PS_TCP)) {
		ret = neg_errno(ENOMEM);
		l->id = NULL;
		goto fail;
	}
	if (rdma_bind_addr(l->id, (struct sockaddr *)&ss)) {
		ret = neg_errno(EADDRNOTAVAIL);
		goto fail;
	}
	/* Bound to a specific address, the cm_id knows its device: it must be dev. */
	if (l->id->verbs && l->id->verbs != l->ctx) {
		ret = -EADDRNOTAVAIL;
		goto fail;
	}
	l->pd = ibv_alloc_pd(l->ctx);
	if (!l->pd) {
		ret = neg_errno(ENOMEM);
		goto fail;
	}
	l->cq = ibv_create_cq(l->ctx, 16, NULL, NULL, 0);
	if (!l->cq) {
		ret = neg_errno(ENOMEM);
		goto fail;
	}
	if (rdma_listen(l->id, RDMA_BACKLOG)) {
		ret = neg_errno(EIO);
		goto fail;
	}
	l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->stop_fd < 0) {
		ret = neg_errno(EMFILE);
		goto fail;
	}
	ret = pthread_create(&l->thread, NULL, listener_loop, l);
	if (ret) {
		ret = -ret;
		goto fail;
	}
	l->thread_started = true;
	*port = ntohs(rdma_get_src_port(l->id));
	*out = l;
	return 0;
fail:
	listener_free(l);
	return ret;
}

int rdma_listener_export(struct rdma_listener *l, void *addr, uint64_t len, uint32_t *rkey)
{
	int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
	struct ibv_mr *mr;
	size_t i;
	int ret = 0;

	if (!l || !addr || !len || !rkey)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	if (l->dead) {
		ret = -ENODEV;
		goto out;
	}
	for (i = 0; i < l->exports.n; i++) {
		if (l->exports.v[i].addr == (uintptr_t)addr) {
			ret = -EEXIST;
			goto out;
		}
	}
	mr = ibv_reg_mr(l->pd, addr, (size_t)len, access);
	if (!mr) {
		ret = neg_errno(ENOMEM);
		goto out;
	}
	ret = regions_add(&l->exports, (uintptr_t)addr, len, mr);
	if (ret) {
		ibv_dereg_mr(mr);
		goto out;
	}
	*rkey = mr->rkey;
out:
	pthread_mutex_unlock(&l->lock);
	return ret;
}

int rdma_listener_unexport(struct rdma_listener *l, void *addr)
{
	struct rdma_regions *t;
	int ret = -ENOENT;
	size_t i;

	if (!l || !addr)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	t = &l->exports;
	for (i = 0; i < t->n; i++) {
		if (t->v[i].addr == (uintptr_t)addr) {
			/* Peers still holding the rkey now get remote access errors, not
			 * someone else's bytes. */
			ret = ibv_dereg_mr(t->v[i].mr) ? neg_errno(EBUSY) : 0;
			if (ret == 0)
				t->v[i] = t->v[--t->n];
			break;
		}
	}
	pthread_mutex_unlock(&l->lock);
	return ret;
}

void rdma_listener_close(struct rdma_listener *l)
{
	uint64_t one = 1;

	if (!l)
		return;
	if (l->thread_started) {
		while (write(l->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
		pthread_join(l->thread, NULL);
	}
	listener_free(l);
}

/* ---- path --------------------------------------------------------------------------- */

/* The errno for a CM event that ends a connection attempt. */
static int cm_event_errno(const struct rdma_cm_event *ev)
{
	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_ERROR:
		return ev->status < 0 ? ev->status : -EHOSTUNREACH;
	case RDMA_CM_EVENT_ROUTE_ERROR:
		return ev->status < 0 ? ev->status : -ENETUNREACH;
	case RDMA_CM_EVENT_UNREACHABLE:
		return ev->status == -ETIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
	case RDMA_CM_EVENT_REJECTED: /* status is the CM's reject reason, not an errno */
		return -ECONNREFUSED;
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return -ECONNABORTED;
	case RDMA_CM_EVENT_DISCONNECTED:
		return -ECONNRESET;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		return -ENODEV;
	default:
		return 0;
	}
}

/* Wait for event want on id, until deadline (CLOCK_MONOTONIC ms). */
static int path_wait(struct rdma_path *p, struct rdma_cm_id *id, enum rdma_cm_event_type want,
		     int64_t deadline)
{
	struct pollfd pfd = {.fd = p->ec->fd, .events = POLLIN};

	for (;;) {
		struct rdma_cm_event *ev;
		int64_t left = deadline - now_ms();
		int ret;

		if (rdma_get_cm_event(p->ec, &ev) == 0) {
			if (ev->id == id && ev->event == want)
				ret = ev->status ? (ev->status < 0 ? ev->status : -EIO) : 1;
			else
				ret = cm_event_errno(ev);
			rdma_ack_cm_event(ev);
			if (ret)
				return ret > 0 ? 0 : ret;
			continue; /* TIMEWAIT_EXIT, ADDR_CHANGE, ... */
		}
		if (errno != EAGAIN && errno != EINTR)
			return neg_errno(EIO);
		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left) < 0 && errno != EINTR)
			return neg_errno(EIO);
	}
}

static int ms_left(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	return left < 1 ? 1 : left > INT_MAX ? INT_MAX : (int)left;
}

static int path_connect_qp(struct rdma_path *p, struct rdma_path_qp *q, struct sockaddr *dst,
			   unsigned depth, int64_t deadline)
{
	struct ibv_qp_init_attr qa = {
	    .send_cq = p->cq,
	    .recv_cq = p->cq,
	    .qp_type = IBV_QPT_RC,
	    .cap = {.max_send_wr = depth, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1},
	};
	struct rdma_conn_param cp = {
	    .responder_resources = RDMA_MAX_RESP_RES,
	    .initiator_depth = RDMA_MAX_INIT_DEPTH, /* outstanding READs: device maximum */
	    .retry_count = RDMA_RETRY,
	    .rnr_retry_count = RDMA_RETRY,
	};
	int ret;

	if (rdma_create_id(p->ec, &q->id, p, RDMA_PS_TCP)) {
		q->id = NULL;
		return neg_errno(ENOMEM);
	}
	if (rdma_resolve_addr(q->id, NULL, dst, ms_left(deadline)))
		return neg_errno(EHOSTUNREACH);
	ret = path_wait(p, q->id, RDMA_CM_EVENT_ADDR_RESOLVED, deadline);
	if (ret)
		return ret;
	/* The route to the peer must leave through the device the engine picked. */
	if (q->id->verbs != p->ctx)
		return -ENETUNREACH;
	if (rdma_resolve_route(q->id, ms_left(deadline)))
		return neg_errno(ENETUNREACH);
	ret = path_wait(p, q->id, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline);
	if (ret)
		return ret;
	if (rdma_create_qp(q->id, p->pd, &qa))
		return neg_errno(ENOMEM);
	q->qp_num = q->id->qp->qp_num;
	q->max = qa.cap.max_send_wr < depth ? qa.cap.max_send_wr : depth;
	if (q->max == 0)
		return -ENOMEM;
	if (rdma_connect(q->id, &cp))
		return neg_errno(ECONNREFUSED);
	ret = path_wait(p, q->id, RDMA_CM_EVENT_ESTABLISHED, deadline);
	if (ret)
		return ret;
	q->connected = true;
	return 0;
}

int rdma_path_connect(const struct rdma_dev *dev, const char *host, uint16_t port, unsigned nqps,
		      int timeout_ms, struct rdma_path **out)
{
	struct ibv_device_attr da;
	struct sockaddr_storage ss;
	struct rdma_path *p;
	unsigned depth, i;
	int64_t deadline;
	int cqe, ret;

	if (!dev || !host || !port || !nqps || nqps > RDMA_MAX_QPS || !out)
		return -EINVAL;
	*out = NULL;
	deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : RDMA_DEF_TIMEOUT);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->nqps = nqps;
	p->qps = calloc(nqps, sizeof(*p->qps));
	if (!p->qps) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = dev_context(dev->name, &p->devs, &p->ctx);
	if (ret)
		goto fail;
	ret = resolve(host, port, false, &ss);
	if (ret)
		goto fail;
	if (ibv_query_device(p->ctx, &da)) {
		ret = -ENODEV;
		goto fail;
	}
	/* iWARP writes READ responses into the sink with remote-write semantics. */
	p->mr_access = IBV_ACCESS_LOCAL_WRITE;
	if (p->ctx->device->transport_type == IBV_TRANSPORT_IWARP)
		p->mr_access |= IBV_ACCESS_REMOTE_WRITE;
	/* The shared CQ holds every QP's full send queue, so it cannot overrun. */
	depth = RDMA_SQ_DEPTH;
	if (da.max_qp_wr > 0 && (unsigned)da.max_qp_wr < depth)
		depth = (unsigned)da.max_qp_wr;
	if (da.max_cqe > 0 && (unsigned)da.max_cqe / nqps < depth)
		depth = (unsigned)da.max_cqe / nqps;
	if (!depth) {
		ret = -ENOMEM;
		goto fail;
	}
	cqe = (int)(nqps * depth);
	p->ec = rdma_create_event_channel();
	if (!p->ec) {
		ret = neg_errno(ENODEV);
		goto fail;
	}
	ret = set_nonblock(p->ec->fd);
	if (ret)
		goto fail;
	p->pd = ibv_alloc_pd(p->ctx);
	if (!p->pd) {
		ret = neg_errno(ENOMEM);
		goto fail;
	}
	p->cq = ibv_create_cq(p->ctx, cqe, NULL, NULL, 0);
	if (!p->cq) {
		ret = neg_errno(ENOMEM);
		goto fail;
	}
	for (i = 0; i < nqps; i++) {
		ret = path_connect_qp(p, &p->qps[i], (struct sockaddr *)&ss, depth, deadline);
		if (ret)
			goto fail;
	}
	*out = p;
	return 0;
fail:
	rdma_path_close(p);
	return ret;
}

int rdma_path_reg(struct rdma_path *p, void *addr, uint64_t len, uint32_t *lkey)
{
	struct rdma_region *r;
	struct ibv_mr *mr;
	int ret;

	if (!p || !addr || !len || !lkey)
		return -EINVAL;
	r = regions_find(&p->regs, (uintptr_t)addr, len);
	if (r) {
		*lkey = r->mr->lkey;
		return 0;
	}
	mr = ibv_reg_mr(p->pd, addr, (size_t)len, p->mr_access);
	if (!mr)
		return neg_errno(ENOMEM);
	ret = regions_add(&p->regs, (uintptr_t)addr, len, mr);
	if (ret) {
		ibv_dereg_mr(mr);
		return ret;
	}
	*lkey = mr->lkey;
	return 0;
}

int rdma_path_post(struct rdma_path *p, unsigned qp, bool write, void *local, uint32_t lkey,
		   uint64_t raddr, uint32_t rkey, uint32_t len, void *ctx)
{
	struct rdma_path_qp *q;
	struct ibv_sge sge = {.addr = (uintptr_t)local, .length = len, .lkey = lkey};
	struct ibv_send_wr wr = {
	    .wr_id = (uintptr_t)ctx,
	    .sg_list = &sge,
	    .num_sge = 1,
	    .opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ,
	    .send_flags = IBV_SEND_SIGNALED,
	    .wr.rdma = {.remote_addr = raddr, .rkey = rkey},
	};
	struct ibv_send_wr *bad;
	int ret;

	if (!p || !p->nqps)
		return -EINVAL;
	q = &p->qps[qp % p->nqps];
	if (q->broken)
		return -EIO;
	if (q->outstanding >= q->max)
		return -EAGAIN;
	ret = ibv_post_send(q->id->qp, &wr, &bad);
	if (ret)
		return ret == ENOMEM ? -EAGAIN : -ret;
	q->outstanding++;
	return 0;
}

static struct rdma_path_qp *path_qp_by_num(struct rdma_path *p, uint32_t qp_num)
{
	unsigned i;

	for (i = 0; i < p->nqps; i++)
		if (p->qps[i].qp_num == qp_num && p->qps[i].id && p->qps[i].id->qp)
			return &p->qps[i];
	return NULL;
}

int rdma_path_poll(struct rdma_path *p, struct rdma_completion *out, int max)
{
	struct ibv_wc wc[RDMA_POLL_BATCH];
	int done = 0;

	if (!p || !p->cq || (!out && max > 0))
		return -EINVAL;
	while (done < max) {
		int want = max - done < RDMA_POLL_BATCH ? max - done : RDMA_POLL_BATCH;
		int n = ibv_poll_cq(p->cq, want, wc), i;

		if (n < 0)
			return done ? done : -EIO;
		for (i = 0; i < n; i++) {
			struct rdma_path_qp *q = path_qp_by_num(p, wc[i].qp_num);

			out[done].ctx = (void *)(uintptr_t)wc[i].wr_id;
			out[done].error = wc[i].status == IBV_WC_SUCCESS ? 0 : EIO;
			if (q) {
				if (q->outstanding)
					q->outstanding--;
				if (wc[i].status != IBV_WC_SUCCESS)
					q->broken = true;
			}
			done++;
		}
		if (n < want)
			break;
	}
	return done;
}

void rdma_path_close(struct rdma_path *p)
{
	unsigned i;

	if (!p)
		return;
	/* Same order as the listener: verbs objects before the cm_ids, contexts last. */
	for (i = 0; p->qps && i < p->nqps; i++) {
		struct rdma_path_qp *q = &p->qps[i];

		if (!q->id)
			continue;
		if (q->connected)
			rdma_disconnect(q->id);
		if (q->id->qp)
			rdma_destroy_qp(q->id);
	}
	regions_free(&p->regs);
	if (p->cq)
		ibv_destroy_cq(p->cq);
	if (p->pd)
		ibv_dealloc_pd(p->pd);
	for (i = 0; p->qps && i < p->nqps; i++)
		if (p->qps[i].id)
			rdma_destroy_id(p->qps[i].id);
	if (p->ec)
		rdma_destroy_event_channel(p->ec);
	if (p->devs)
		rdma_free_devices(p->devs);
	free(p->qps);
	free(p);
}
