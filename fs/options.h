/*
 * options: the daemon's command line (kvcachefs [OPTIONS] MOUNTPOINT) and size parsing.
 *
 * opt_parse fills struct kvc_options from argv without side effects, so it can be unit
 * tested; it returns -EINVAL with a one-line message in opts->err for bad input.
 */
#ifndef KVC_FS_OPTIONS_H
#define KVC_FS_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "fs/log.h"

#define KVC_DEFAULT_POOL_SIZE	   (1ull << 30)
#define KVC_DEFAULT_MAX_BLOCK_SIZE (64ull << 20)
#define KVC_MIN_POOL_SIZE	   (1ull << 20)
#define KVC_DEFAULT_EVICT_HIGH	   90
#define KVC_DEFAULT_EVICT_LOW	   80
#define KVC_DEFAULT_DEMOTE_ABOVE   50
#define KVC_DEFAULT_POOL_MODE	   0600
#define KVC_MAX_SSD		   8  /* --ssd given at most this many times */
#define KVC_DEFAULT_SSD_QUEUE	   32 /* io_uring entries per SSD device */

struct kvc_options {
	const char *mountpoint;
	bool foreground;
	bool help;
	bool version;
	bool debug;		 /* -d: FUSE debug output, implies -f */
	uint64_t pool_size;	 /* bytes */
	uint64_t max_block_size; /* bytes */
	unsigned evict_high;	 /* percent of capacity */
	unsigned evict_low;	 /* percent of capacity */
	const char *pool_path;	 /* NULL: derived from the mountpoint under /dev/shm */
	unsigned pool_mode;	 /* permission bits of the pool object */
	long pool_gid;		 /* its group, -1: the daemon's */
	/* SSD tier: --ssd PATH[:SIZE] in the order given, distinct paths (as spelled). */
	struct kvc_ssd_opt {
		char path[4096]; /* a file or a block device, never empty */
		uint64_t size;	 /* bytes, 0: not given (the file's or device's own size) */
	} ssd[KVC_MAX_SSD];
	unsigned nssd;
	unsigned ssd_queue_depth; /* 1..4096 */
	unsigned demote_above;	  /* percent of DRAM capacity */
	bool fresh; /* --fresh: discard what a previous daemon left, recover nothing */
	/* --metrics ADDR:PORT: the HTTP endpoint of fs/metrics.h (NULL: none), and its address
	 * parsed: AF_INET (IPv4:PORT) or AF_INET6 ([IPv6]:PORT), PORT 1..65535. */
	const char *metrics;
	struct sockaddr_storage metrics_addr;
	/* Cluster mode (all NULL/0 without --etcd: single node). */
	const char *etcd;	    /* --etcd http://HOST:PORT[,...] */
	const char *cluster;	    /* --cluster NAME */
	uint64_t node_id;	    /* --node-id, 0: derived from the host name and mountpoint */
	const char *listen;	    /* --listen HOST:PORT for the transfer engine, NULL: default */
	const char *secret_file;    /* --secret-file F: the cluster secret */
	const char *tcp_congestion; /* --tcp-congestion NAME, NULL: the system's */
	char fuse_opts[1024];	    /* comma-separated -o options, passed to FUSE */
	/* -o max_read=N among them (0: not given): libfuse insists that the filesystem's
	 * init() announce the same value, or it ends the session after the mount. */
	uint32_t max_read;
	int log_level;		    /* --log-level: a syslog level (fs/log.h), default info */
	enum log_target log_target; /* --log-target, default auto */
	char err[256];		    /* message when opt_parse fails */
};

/* Parse "4096", "64K", "64M", "1G", "2T" (also "64MiB", "64MB", lower case): powers of
 * 1024. 0 on success; -EINVAL for junk, -ERANGE on overflow. */
int opt_parse_size(const char *s, uint64_t *out);

/* Parse argv into opts (defaults first). 0, or -EINVAL with opts->err set. */
int opt_parse(int argc, char **argv, struct kvc_options *opts);

/* The --help text. */
void opt_usage(const char *prog, FILE *out);

#endif
