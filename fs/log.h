/*
 * log: the daemon's log — one line per notable event, each with a level, written to stderr
 * ("kvcachefs: warning: ...") or to syslog (ident "kvcachefs", facility LOG_DAEMON, the same
 * "warning: ..." text).
 *
 * Levels are syslog priorities, filtered on four steps (--log-level): LOG_ERR "error" (and
 * anything more severe), LOG_WARNING "warning", LOG_INFO "info" (LOG_NOTICE counts as info),
 * LOG_DEBUG "debug". A line is written when its level is at most the configured one.
 *
 * Targets (--log-target): stderr, syslog, or auto — stderr until the daemon has detached
 * from the terminal (log_ready with daemonized), syslog from then on; with -f the daemon
 * never detaches, so auto is stderr throughout. Until the mount is ready, error lines also
 * go to stderr when the target is syslog: whoever started the daemon must read why it
 * refused to start.
 *
 * This is the one piece of process-wide state in fs/, as syslog(3), which it wraps, is
 * process-wide: log_init runs once in main before any thread starts; the level and the
 * target are then read by every thread (atomics), and only log_ready changes the target.
 * Thread-safe: each line is formatted into a buffer and written with one write(2) (or one
 * syslog(3) call), so lines of concurrent threads never interleave. Nothing here allocates.
 */
#ifndef KVC_FS_LOG_H
#define KVC_FS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

enum log_target { LOG_TARGET_AUTO, LOG_TARGET_STDERR, LOG_TARGET_SYSLOG };

#define LOG_DEFAULT_LEVEL LOG_INFO

/* "error", "warning", "info", "debug" → the syslog level in *level: 0 or -EINVAL. */
int log_level_parse(const char *name, int *level);
/* "auto", "stderr", "syslog" → *target: 0 or -EINVAL. */
int log_target_parse(const char *name, enum log_target *target);
/* The word a line carries for level: "error", "warning", "info" or "debug". */
const char *log_level_name(int level);

/* Set the level and the target (before any thread starts). With target syslog, syslog is
 * opened now. Before this call lines go to stderr at level info. */
void log_init(int level, enum log_target target);
/* The mount is ready: error lines go to the target only from now on; daemonized: the
 * daemon has detached (stderr is /dev/null), so auto switches to syslog. */
void log_ready(bool daemonized);

/* Whether a line of this level would be written: one relaxed atomic load, for callers that
 * would otherwise format a line on a hot path. */
bool log_enabled(int level);

/* Write one line (no trailing newline in fmt). Lines longer than about 1 KiB are cut. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* log_msg(level, "%s", msg), in the shape of the callbacks that feed the log from meta/ and
 * engine/ (ns_config.log, xfer_config.log); arg is unused. */
void log_line(void *arg, int level, const char *msg);

#endif
