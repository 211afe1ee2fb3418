/*
 * bench_cluster: `kvcache-bench cluster`, reads of blocks held by another node of a cluster
 * (two kvcachefs daemons and an etcd started on loopback), through the mount and through the
 * side channel (libkvcache), against Redis GET and iperf3. The command lives in
 * bench_cluster.c; it shares the iperf3 run of `kvcache-bench transfer`, declared here, and
 * the helpers of bench_util.h.
 */
#ifndef KVC_TOOLS_BENCH_CLUSTER_H
#define KVC_TOOLS_BENCH_CLUSTER_H

/* Run `kvcache-bench cluster`; argv[0] is "cluster". Returns the exit status: 0 targets met,
 * 1 error (a remote read, side-channel load or stat that failed included), 2 bad usage, 3 a
 * target missed. Everything it started is stopped and removed before it returns. */
int cmd_cluster(int argc, char **argv);

/* ---- from bench.c ---- */

/* One iperf3 run over loopback, server and client in their own process groups, with
 * `parallel` streams for `seconds`: the GB/s received in *gbps. Prints the error and returns
 * -errno; -EINTR once `stop` is set. */
int tr_iperf3(int parallel, int seconds, const char *congestion, double *gbps);

#endif
