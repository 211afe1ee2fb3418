/*
 * rdma: RDMA devices and one-sided transfers over RC queue pairs (libibverbs + librdmacm),
 * for the transfer engine.
 *
 * Everything is found at run time: with no RDMA device (or no active port), rdma_probe
 * returns 0 and says why, and the engine uses TCP only. A device is chosen by locality to
 * the memory it will move (same NUMA node first, from sysfs). A path to a peer is several
 * RC queue pairs to the peer's RDMA listener; the engine learns a remote segment's address
 * and rkey with SEG_QUERY over its TCP control connection (wire.h), then posts one-sided
 * READ/WRITE work requests and polls completions. Any failure is reported to the engine,
 * which retries the slice on a TCP path.
 *
 * Functions return 0 (or a count) or a negative errno; -ENODEV where no device can serve.
 */
#ifndef KVC_ENGINE_RDMA_H
#define KVC_ENGINE_RDMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RDMA_DEV_NAME 64

struct rdma_dev {
	char name[RDMA_DEV_NAME]; /* ibv device name, e.g. mlx5_0 */
	int numa_node;		  /* from sysfs, -1 when unknown */
	uint8_t port;		  /* first ACTIVE port */
	uint32_t link_mbps;	  /* port speed, 0 when unknown */
};

/* Usable devices (an ACTIVE port), up to max. 0 with *why set (a static string: "no RDMA
 * device", "libibverbs finds no provider", "RDMA devices found but none can be opened", "no
 * active port") when there is none. */
int rdma_probe(struct rdma_dev *devs, int max, const char **why);
/* The NUMA node of the page holding addr, -1 when unknown (no NUMA or not faulted in). */
int rdma_mem_numa_node(const void *addr);
/* The index of the device nearest to numa_node (same node, else the first), -1 if n == 0. */
int rdma_pick(const struct rdma_dev *devs, int n, int numa_node);

/* Target side: a listener on a device, which accepts queue pairs and exports memory.
 * *port 0 picks a free port and reports it back. (Not named rdma_listen: librdmacm exports
 * that symbol.) */
struct rdma_listener;
int rdma_listener_open(const struct rdma_dev *dev, const char *host, uint16_t *port,
		       struct rdma_listener **out);
/* Register [addr, addr + len) for remote READ/WRITE; *rkey is what SEG_INFO carries. */
int rdma_listener_export(struct rdma_listener *l, void *addr, uint64_t len, uint32_t *rkey);
int rdma_listener_unexport(struct rdma_listener *l, void *addr);
void rdma_listener_close(struct rdma_listener *l);

/* Initiator side: nqps RC queue pairs to a peer's listener. */
struct rdma_path;
int rdma_path_connect(const struct rdma_dev *dev, const char *host, uint16_t port, unsigned nqps,
		      int timeout_ms, struct rdma_path **out);
/* Register local memory the path will read into / write from (cached per region). */
int rdma_path_reg(struct rdma_path *p, void *addr, uint64_t len, uint32_t *lkey);
/* Post one READ (remote → local) or WRITE (local → remote) of len bytes on queue pair
 * qp % nqps; ctx comes back with the completion. -EAGAIN when the queue is full. */
int rdma_path_post(struct rdma_path *p, unsigned qp, bool write, void *local, uint32_t lkey,
		   uint64_t raddr, uint32_t rkey, uint32_t len, void *ctx);
struct rdma_completion {
	void *ctx;
	int error; /* 0 or a positive errno (EIO for a failed work request) */
};
/* Reap up to max completions without blocking; returns how many. */
int rdma_path_poll(struct rdma_path *p, struct rdma_completion *out, int max);
void rdma_path_close(struct rdma_path *p);

#endif
