/*
 * Unit tests of engine/rdma.c: discovery, device choice, the NUMA lookup, failures without a
 * device, and, where rdma_probe finds a device with an IP address, a loopback READ/WRITE of
 * 1 MiB through a listener and a path. Without a device the loopback test is not run: it
 * prints "SKIP rdma loopback: <why>" and counts as neither passed nor failed.
 */
#include "engine/rdma.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rdma/rdma_cma.h>

#define MAX_DEVS 16

static struct rdma_dev devs[MAX_DEVS];
static int ndevs;
static const char *why;

static void test_probe(void)
{
	struct rdma_dev one;
	int i;

	why = NULL;
	ndevs = rdma_probe(devs, MAX_DEVS, &why);
	CHECK(ndevs >= 0);
	if (ndevs == 0) {
		CHECK(why != NULL && why[0] != '\0');
		printf("     probe: no usable RDMA device: %s\n", why ? why : "(null)");
	}
	for (i = 0; i < ndevs; i++) {
		CHECK(devs[i].name[0] != '\0');
		CHECK(devs[i].port >= 1);
		CHECK(devs[i].numa_node >= -1);
		printf("     probe: %s port %u numa %d %u Mb/s\n", devs[i].name,
		       (unsigned)devs[i].port, devs[i].numa_node, (unsigned)devs[i].link_mbps);
	}
	/* Bad arguments are refused, and why may be NULL. */
	CHECK(rdma_probe(NULL, 1, &why) == -EINVAL);
	CHECK(rdma_probe(&one, 0, &why) == -EINVAL);
	CHECK(rdma_probe(&one, 1, NULL) >= 0);
}

static void test_pick(void)
{
	struct rdma_dev d[3] = {
	    {.name = "mlx5_0", .numa_node = 0, .port = 1},
	    {.name = "mlx5_1", .numa_node = 1, .port = 1},
	    {.name = "mlx5_2", .numa_node = 1, .port = 1},
	};
	struct rdma_dev unknown[2] = {
	    {.name = "a", .numa_node = -1, .port = 1},
	    {.name = "b", .numa_node = 3, .port = 1},
	};

	CHECK(rdma_pick(d, 3, 0) == 0);
	CHECK(rdma_pick(d, 3, 1) == 1);	 /* same node, first of two */
	CHECK(rdma_pick(d, 3, 2) == 0);	 /* no device on node 2: the first */
	CHECK(rdma_pick(d, 3, -1) == 0); /* memory node unknown */
	CHECK(rdma_pick(d, 1, 1) == 0);
	CHECK(rdma_pick(unknown, 2, 3) == 1);
	CHECK(rdma_pick(unknown, 2, -1) == 0); /* -1 never matches a device of unknown node */
	CHECK(rdma_pick(d, 0, 0) == -1);
	CHECK(rdma_pick(NULL, 0, 0) == -1);
}

static bool node_exists(int node)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", node);
	return stat(path, &st) == 0;
}

static void test_mem_numa_node(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t len = 4 * (size_t)pg;
	char *buf, *untouched;
	int node;

	buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(buf != MAP_FAILED);
	memset(buf, 1, len);
	node = rdma_mem_numa_node(buf + pg + 17);
	/* -1 (no NUMA, or the syscalls are filtered) or a node the kernel lists; node ids
	 * may be sparse, so the test is the node's sysfs directory, not a count. */
	CHECK(node == -1 || (node >= 0 && node_exists(node)));
	printf("     faulted-in page on node %d\n", node);

	untouched = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (untouched != MAP_FAILED) {
		node = rdma_mem_numa_node(untouched);
		CHECK(node == -1 || (node >= 0 && node_exists(node)));
		printf("     untouched page: %d\n", node);
		munmap(untouched, len);
	}
	CHECK(rdma_mem_numa_node(NULL) == -1);
	munmap(buf, len);
}

static void test_no_such_device(void)
{
	struct rdma_dev fake = {.name = "kvc-no-such-rdma-dev", .numa_node = -1, .port = 1};
	struct rdma_listener *l = (struct rdma_listener *)&fake;
	struct rdma_path *p = (struct rdma_path *)&fake;
	struct rdma_completion c;
	uint16_t port = 0;
	uint32_t key;
	int ret;

	ret = rdma_listener_open(&fake, "127.0.0.1", &port, &l);
	CHECK(ret == -ENODEV);
	CHECK(l == NULL);
	ret = rdma_listener_open(&fake, NULL, &port, &l);
	CHECK(ret == -ENODEV);
	ret = rdma_path_connect(&fake, "127.0.0.1", 4791, 2, 200, &p);
	CHECK(ret == -ENODEV);
	CHECK(p == NULL);

	/* Bad arguments, and the NULL objects a failed open leaves behind. */
	CHECK(rdma_listener_open(NULL, "127.0.0.1", &port, &l) == -EINVAL);
	CHECK(rdma_listener_open(&fake, "127.0.0.1", NULL, &l) == -EINVAL);
	CHECK(rdma_path_connect(&fake, "127.0.0.1", 4791, 0, 200, &p) == -EINVAL);
	CHECK(rdma_path_connect(&fake, "127.0.0.1", 0, 1, 200, &p) == -EINVAL);
	CHECK(rdma_path_connect(&fake, NULL, 4791, 1, 200, &p) == -EINVAL);
	CHECK(rdma_listener_export(NULL, &key, sizeof(key), &key) == -EINVAL);
	CHECK(rdma_listener_unexport(NULL, &key) == -EINVAL);
	CHECK(rdma_path_reg(NULL, &key, sizeof(key), &key) == -EINVAL);
	CHECK(rdma_path_post(NULL, 0, true, &key, 0, 0, 0, 4, NULL) == -EINVAL);
	CHECK(rdma_path_poll(NULL, &c, 1) == -EINVAL);
	rdma_listener_close(NULL);
	rdma_path_close(NULL);
}

/* ---- loopback, with a device -------------------------------------------------------- */

static int lb_dev = -1;
static char lb_addr[NI_MAXHOST];

/* Whether binding addr gives a cm_id on device name. */
static bool addr_on_dev(const struct sockaddr *sa, const char *name)
{
	struct rdma_event_channel *ec = rdma_create_event_channel();
	struct rdma_cm_id *id;
	bool on = false;

	if (!ec)
		return false;
	if (rdma_create_id(ec, &id, NULL, RDMA_PS_TCP) == 0) {
		if (rdma_bind_addr(id, (struct sockaddr *)sa) == 0 && id->verbs)
			on = strcmp(ibv_get_device_name(id->verbs->device), name) == 0;
		rdma_destroy_id(id);
	}
	rdma_destroy_event_channel(ec);
	return on;
}

/* The first probed device with an IPv4 address the RDMA CM maps to it (127.0.0.1 included:
 * the CM binds loopback to a device too). */
static const char *loopback_target(void)
{
	struct ifaddrs *ifa, *i;
	int d;

	if (getifaddrs(&ifa))
		return "getifaddrs failed";
	for (d = 0; d < ndevs && lb_dev < 0; d++) {
		for (i = ifa; i && lb_dev < 0; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
				continue;
			if (!addr_on_dev(i->ifa_addr, devs[d].name))
				continue;
			if (getnameinfo(i->ifa_addr, sizeof(struct sockaddr_in), lb_addr,
					sizeof(lb_addr), NULL, 0, NI_NUMERICHOST) == 0)
				lb_dev = d;
		}
	}
	freeifaddrs(ifa);
	return lb_dev < 0 ? "no IPv4 address maps to a probed RDMA device" : NULL;
}

/* Poll until n completions arrived (or 10 s passed); counts those with an error. */
static int wait_completions(struct rdma_path *p, int n, void **ctxs, int *errors)
{
	struct rdma_completion c[64];
	time_t end = time(NULL) + 10;
	int got = 0, i, k;

	*errors = 0;
	while (got < n && time(NULL) < end) {
		k = rdma_path_poll(p, c, 64);
		if (k < 0)
			return k;
		for (i = 0; i < k; i++, got++) {
			if (ctxs && got < n)
				ctxs[got] = c[i].ctx;
			if (c[i].error)
				(*errors)++;
		}
		if (k == 0)
			sched_yield();
	}
	return got;
}

static void fill(uint8_t *b, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 131 + seed + (i >> 12));
}

static void test_loopback(void)
{
	const struct rdma_dev *dev = &devs[lb_dev];
	const size_t len = 1 << 20, slice = 64 << 10;
	const int nslices = (int)(len / slice);
	struct rdma_listener *l = NULL;
	struct rdma_path *p = NULL, *p2 = NULL;
	uint8_t *remote = NULL, *local = NULL, *expect = NULL;
	void *ctxs[64];
	uint32_t rkey = 0, rkey2, lkey = 0, lkey2;
	uint16_t port = 0;
	int ret, errors, i, posted;
	char tag;

	printf("     loopback on %s via %s\n", dev->name, lb_addr);
	remote = aligned_alloc(4096, len);
	local = aligned_alloc(4096, len);
	expect = malloc(len);
	if (!remote || !local || !expect) {
		CHECK(!"out of memory");
		goto out;
	}
	memset(remote, 0, len);

	ret = rdma_listener_open(dev, lb_addr, &port, &l);
	CHECK(ret == 0);
	if (ret)
		goto out;
	CHECK(port != 0);
	CHECK(rdma_listener_export(l, remote, len, &rkey) == 0);
	CHECK(rdma_listener_export(l, remote, len, &rkey2) == -EEXIST);

	ret = rdma_path_connect(dev, lb_addr, port, 2, 5000, &p);
	CHECK(ret == 0);
	if (ret)
		goto out;
	CHECK(rdma_path_reg(p, local, len, &lkey) == 0);
	CHECK(rdma_path_reg(p, local + 4096, 8192, &lkey2) == 0); /* inside: the same MR */
	CHECK(lkey2 == lkey);

	/* WRITE 1 MiB in one work request. */
	fill(local, len, 1);
	memcpy(expect, local, len);
	CHECK(rdma_path_post(p, 0, true, local, lkey, (uintptr_t)remote, rkey, (uint32_t)len,
			     &tag) == 0);
	CHECK(wait_completions(p, 1, ctxs, &errors) == 1);
	CHECK(errors == 0);
	CHECK(ctxs[0] == &tag);
	CHECK(memcmp(remote, expect, len) == 0);

	/* READ 1 MiB back in 16 slices spread over both queue pairs. */
	fill(remote, len, 7);
	memcpy(expect, remote, len);
	memset(local, 0, len);
	for (i = 0; i < nslices; i++)
		CHECK(rdma_path_post(p, (unsigned)i, false, local + i * slice, lkey,
				     (uintptr_t)(remote + i * slice), rkey, (uint32_t)slice,
				     local + i * slice) == 0);
	CHECK(wait_completions(p, nslices, ctxs, &errors) == nslices);
	CHECK(errors == 0);
	CHECK(memcmp(local, expect, len) == 0);

	/* A full send queue is -EAGAIN, never a wait; its completions all come back. */
	for (posted = 0; posted < 100000; posted++) {
		ret = rdma_path_post(p, 1, true, local, lkey, (uintptr_t)remote, rkey, 64, NULL);
		if (ret)
			break;
	}
	CHECK(ret == -EAGAIN);
	CHECK(posted > 0);
	CHECK(wait_completions(p, posted, NULL, &errors) == posted);
	CHECK(errors == 0);
	CHECK(rdma_path_post(p, 1, true, local, lkey, (uintptr_t)remote, rkey, 64, NULL) == 0);
	CHECK(wait_completions(p, 1, NULL, &errors) == 1);

	/* Unexported memory: the old rkey fails with EIO and the QP then refuses posts. */
	CHECK(rdma_listener_unexport(l, remote) == 0);
	CHECK(rdma_listener_unexport(l, remote) == -ENOENT);
	CHECK(rdma_path_connect(dev, lb_addr, port, 1, 5000, &p2) == 0);
	if (p2) {
		CHECK(rdma_path_reg(p2, local, len, &lkey2) == 0);
		CHECK(rdma_path_post(p2, 0, true, local, lkey2, (uintptr_t)remote, rkey, 4096,
				     &tag) == 0);
		CHECK(wait_completions(p2, 1, ctxs, &errors) == 1);
		CHECK(errors == 1);
		CHECK(ctxs[0] == &tag);
		CHECK(rdma_path_post(p2, 0, true, local, lkey2, (uintptr_t)remote, rkey, 4096,
				     NULL) == -EIO);
	}

	/* No listener on that port any more: refused or timed out, not a hang or a crash. */
	rdma_path_close(p2);
	p2 = NULL;
	rdma_listener_close(l);
	l = NULL;
	ret = rdma_path_connect(dev, lb_addr, port, 1, 2000, &p2);
	CHECK(ret < 0);
	CHECK(p2 == NULL);
out:
	rdma_path_close(p2);
	rdma_path_close(p);
	rdma_listener_close(l);
	free(expect);
	free(local);
	free(remote);
}

int main(void)
{
	const char *skip;

	RUN(test_probe);
	RUN(test_pick);
	RUN(test_mem_numa_node);
	RUN(test_no_such_device);
	if (ndevs <= 0) {
		printf("SKIP rdma loopback: %s\n", why ? why : "rdma_probe found no device");
	} else if ((skip = loopback_target())) {
		printf("SKIP rdma loopback: %s\n", skip);
	} else {
		RUN(test_loopback);
	}
	return check_summary();
}
