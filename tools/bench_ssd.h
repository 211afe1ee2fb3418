/*
 * bench_ssd: `kvcache-bench ssd`, the SSD tier of one kvcachefs daemon: write and read
 * throughput of blocks that live on SSD, through the mount, against fio doing O_DIRECT
 * io_uring I/O of the same sizes on a file of the same filesystem; and the time a restarted
 * daemon takes to recover its blocks (after a clean unmount and after kill -9). The command
 * lives in bench_ssd.c and uses the helpers of bench_util.h.
 */
#ifndef KVC_TOOLS_BENCH_SSD_H
#define KVC_TOOLS_BENCH_SSD_H

/* Run `kvcache-bench ssd`; argv[0] is "ssd". Returns the exit status: 0 targets met, 1 error
 * (a recovery that lost blocks or read back wrong bytes included), 2 bad usage, 3 a target
 * missed. Everything it started or made (daemon, mount, pool object, SSD file, fio file) is
 * stopped and removed before it returns, also after an error or a SIGINT. */
int cmd_ssd(int argc, char **argv);

#endif
