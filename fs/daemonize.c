/*
 * daemonize: fork before mounting, report the mount's verdict to the parent (see
 * daemonize.h).
 *
 * The only state is the pipe between parent and child: the parent reads exactly one byte
 * from it, 0 for "mounted" and anything else (or end of file, when the child died) for
 * "failed". The child writes that byte once and closes its end.
 */
#include "fs/daemonize.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int daemonize_start(int *ready_fd)
{
	int fds[2];
	pid_t pid;
	char c = 1;

	if (pipe(fds) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int err = errno;

		close(fds[0]);
		close(fds[1]);
		return -err;
	}
	if (pid > 0) {
		close(fds[1]);
		if (read(fds[0], &c, 1) != 1)
			c = 1; /* the child died before reporting */
		_exit(c == 0 ? 0 : 1);
	}
	close(fds[0]);
	setsid();
	*ready_fd = fds[1];
	return 0;
}

static void report(int ready_fd, char verdict)
{
	if (write(ready_fd, &verdict, 1) != 1) {
		/* the parent is gone: nothing to tell */
	}
	close(ready_fd);
}

int daemonize_ready(int ready_fd)
{
	int null;

	report(ready_fd, 0);
	if (chdir("/") < 0) {
		/* stay where we are: the mountpoint path is absolute */
	}
	null = open("/dev/null", O_RDWR);
	if (null < 0)
		return -errno;
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	if (null > 2)
		close(null);
	return 0;
}

void daemonize_fail(int ready_fd)
{
	report(ready_fd, 1);
}
