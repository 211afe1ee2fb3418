/*
 * daemonize: go to the background without racing the mount.
 *
 * The process forks before mounting and the parent stays attached to the terminal, blocked on
 * a pipe, until the child says how start-up went: the parent exits 0 only once the child
 * reports that the mount is ready, and 1 when it reports a failure or dies first. So
 * `kvcachefs /mnt/x && ls /mnt/x` never sees an unmounted directory, and start-up errors
 * still reach the terminal, because the child detaches only after reporting success.
 *
 * Shared by the kvcachefs daemon (fs/main.c) and its benchmark baseline (tools/memfs.c).
 */
#ifndef KVC_FS_DAEMONIZE_H
#define KVC_FS_DAEMONIZE_H

/* Fork. Returns only in the child, which is made a session leader and owns *ready_fd (the
 * pipe's write end) until it calls daemonize_ready() or daemonize_fail(); the parent waits
 * for that verdict and exits with it. Returns -errno when the pipe or the fork fails (still
 * in the original process, nothing forked). */
int daemonize_start(int *ready_fd);
/* The mount is ready: release the waiting parent (exit 0), close ready_fd, then detach:
 * chdir("/") and stdin/stdout/stderr to /dev/null. Returns -errno when /dev/null cannot be
 * opened (the standard streams are then left as they were); a parent already gone and a
 * failed chdir are not errors. */
int daemonize_ready(int ready_fd);
/* Start-up failed: make the waiting parent exit 1 and close ready_fd. Call after printing
 * the error, so it reaches the terminal before the parent returns. */
void daemonize_fail(int ready_fd);

#endif
