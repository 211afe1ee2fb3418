/*
 * log: the daemon's log (see log.h).
 *
 * Three atomics are the whole state: the highest level written, whether lines go to syslog,
 * and whether error lines are copied to stderr (a syslog target before the mount is ready).
 * A line is formatted on the caller's stack and leaves in one write(2) or one syslog(3)
 * call, which is what keeps concurrent lines whole; errno is preserved for the caller.
 */
#include "fs/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LOG_IDENT    "kvcachefs"
#define LOG_LINE_MAX 1024

static _Atomic int max_level = LOG_DEFAULT_LEVEL;
static _Atomic bool to_syslog;
static _Atomic bool errors_to_stderr;
static enum log_target configured = LOG_TARGET_AUTO; /* set by log_init, before threads */

static const struct {
	const char *name;
	int level;
} levels[] = {
    {"error", LOG_ERR},
    {"warning", LOG_WARNING},
    {"info", LOG_INFO},
    {"debug", LOG_DEBUG},
};

int log_level_parse(const char *name, int *level)
{
	for (size_t k = 0; k < sizeof(levels) / sizeof(levels[0]); k++)
		if (!strcmp(name, levels[k].name)) {
			*level = levels[k].level;
			return 0;
		}
	return -EINVAL;
}

int log_target_parse(const char *name, enum log_target *target)
{
	if (!strcmp(name, "auto"))
		*target = LOG_TARGET_AUTO;
	else if (!strcmp(name, "stderr"))
		*target = LOG_TARGET_STDERR;
	else if (!strcmp(name, "syslog"))
		*target = LOG_TARGET_SYSLOG;
	else
		return -EINVAL;
	return 0;
}

const char *log_level_name(int level)
{
	if (level <= LOG_ERR)
		return "error";
	if (level == LOG_WARNING)
		return "warning";
	return level >= LOG_DEBUG ? "debug" : "info"; /* LOG_NOTICE is info */
}

static void open_syslog(void)
{
	openlog(LOG_IDENT, LOG_PID, LOG_DAEMON);
}

void log_init(int level, enum log_target target)
{
	configured = target;
	atomic_store(&max_level, level);
	if (target == LOG_TARGET_SYSLOG) {
		open_syslog();
		atomic_store(&errors_to_stderr, true);
		atomic_store(&to_syslog, true);
	}
}

void log_ready(bool daemonized)
{
	atomic_store(&errors_to_stderr, false);
	if (configured == LOG_TARGET_AUTO && daemonized) {
		open_syslog();
		atomic_store(&to_syslog, true);
	}
}

bool log_enabled(int level)
{
	return level <= atomic_load_explicit(&max_level, memory_order_relaxed);
}

/* One line to fd 2 in one write (a short write goes on from where it stopped). */
static void write_stderr(const char *word, const char *msg)
{
	char line[LOG_LINE_MAX + 64];
	int n = snprintf(line, sizeof(line), "%s: %s: %s\n", LOG_IDENT, word, msg);
	size_t len = n < 0 ? 0 : (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
	size_t done = 0;

	if (len && line[len - 1] != '\n')
		line[len - 1] = '\n';
	while (done < len) {
		ssize_t w = write(2, line + done, len - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere to complain to */
		done += (size_t)w;
	}
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
	char msg[LOG_LINE_MAX];
	const char *word = log_level_name(level);
	int saved = errno, n;

	if (!log_enabled(level))
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n >= (int)sizeof(msg))
		memcpy(msg + sizeof(msg) - 4, "...", 4);
	if (atomic_load(&to_syslog)) {
		syslog(level, "%s: %s", word, msg);
		if (level <= LOG_ERR && atomic_load(&errors_to_stderr))
			write_stderr(word, msg);
	} else {
		write_stderr(word, msg);
	}
	errno = saved;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void log_line(void *arg, int level, const char *msg)
{
	(void)arg;
	log_msg(level, "%s", msg);
}
