/*
 * kvcachectl: inspect a kvcachefs mount from the command line.
 *
 *   kvcachectl status [--json] MOUNTPOINT
 *
 * It talks to the daemon only through the mount's ioctl ABI (fs/uapi/kvcachefs.h), as any
 * application may: no private socket, no root needed beyond read access to the mountpoint.
 */
#include "fs/uapi/kvcachefs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#define FUSE_SUPER_MAGIC 0x65735546

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: kvcachectl COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  status [--json] MOUNTPOINT   pool capacity and usage, block and directory\n"
		"                               counts, reads, writes, hits, misses, evictions\n"
		"  help                         show this help\n"
		"  version                      show the version\n"
		"\n"
		"Options: -h/--help, -V/--version.\n");
}

/* Ask the daemon behind mnt for its status. 0, or -errno with a message printed. */
static int get_status(const char *mnt, struct kvcachefs_status *st)
{
	struct statfs sfs;
	int fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0) {
		fprintf(stderr, "kvcachectl: %s: %s\n", mnt, strerror(errno));
		return -errno;
	}
	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != FUSE_SUPER_MAGIC) {
		fprintf(stderr, "kvcachectl: %s: not a kvcachefs mount\n", mnt);
		ret = -ENOTTY;
		goto out;
	}
	memset(st, 0, sizeof(*st));
	st->version = KVCACHEFS_ABI_VERSION;
	if (ioctl(fd, KVCACHEFS_IOC_STATUS, st) < 0) {
		ret = -errno;
		if (errno == ENOTTY || errno == ENOSYS || errno == EINVAL)
			fprintf(stderr, "kvcachectl: %s: not a kvcachefs mount\n", mnt);
		else if (errno == EPROTO)
			fprintf(stderr, "kvcachectl: %s: the daemon speaks another ABI version\n",
				mnt);
		else
			fprintf(stderr, "kvcachectl: %s: status: %s\n", mnt, strerror(errno));
	}
out:
	close(fd);
	return ret;
}

static const char *human(uint64_t v, char *buf, size_t cap)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	int k = 0;

	while (d >= 1024 && k < 5) {
		d /= 1024;
		k++;
	}
	snprintf(buf, cap, k ? "%.2f %s" : "%.0f %s", d, u[k]);
	return buf;
}

static void print_json(const char *mnt, const struct kvcachefs_status *s)
{
	printf("{\"mountpoint\": \"");
	for (const char *p = mnt; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		if ((unsigned char)*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	printf("\", \"capacity\": %llu, \"used\": %llu, \"free\": %llu"
	       ", \"blocks\": %llu, \"writing\": %llu, \"directories\": %llu"
	       ", \"reads\": %llu, \"writes\": %llu, \"bytes_read\": %llu"
	       ", \"bytes_written\": %llu, \"hits\": %llu, \"misses\": %llu"
	       ", \"evictions\": %llu, \"enospc\": %llu, \"max_block_size\": %llu"
	       ", \"evict_high_pct\": %u, \"evict_low_pct\": %u, \"pool_size\": %llu}\n",
	       s->capacity, s->used, s->free, s->blocks, s->writing, s->directories, s->reads,
	       s->writes, s->bytes_read, s->bytes_written, s->hits, s->misses, s->evictions,
	       s->enospc, s->max_block_size, s->evict_high_pct, s->evict_low_pct, s->pool_size);
}

static void print_text(const char *mnt, const struct kvcachefs_status *s)
{
	char a[32], b[32], c[32];
	double pct = s->capacity ? 100.0 * (double)s->used / (double)s->capacity : 0;

	printf("kvcachefs at %s (single node)\n", mnt);
	printf("  pool:        %s capacity, %s used (%.1f%%), %s free\n",
	       human(s->capacity, a, sizeof(a)), human(s->used, b, sizeof(b)), pct,
	       human(s->free, c, sizeof(c)));
	printf("  eviction:    above %u%% down to %u%%; max block %s\n", s->evict_high_pct,
	       s->evict_low_pct, human(s->max_block_size, a, sizeof(a)));
	printf("  blocks:      %llu sealed, %llu being written\n", s->blocks, s->writing);
	printf("  directories: %llu\n", s->directories);
	printf("  reads:       %llu (%s)\n", s->reads, human(s->bytes_read, a, sizeof(a)));
	printf("  writes:      %llu (%s)\n", s->writes, human(s->bytes_written, a, sizeof(a)));
	printf("  hits:        %llu\n", s->hits);
	printf("  misses:      %llu\n", s->misses);
	printf("  evictions:   %llu\n", s->evictions);
	printf("  ENOSPC:      %llu\n", s->enospc);
}

static int cmd_status(int argc, char **argv)
{
	struct kvcachefs_status st;
	const char *mnt = NULL;
	int json = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "kvcachectl: status: unknown option '%s'\n", argv[i]);
			return 2;
		} else if (mnt) {
			fprintf(stderr, "kvcachectl: status: unexpected argument '%s'\n", argv[i]);
			return 2;
		} else {
			mnt = argv[i];
		}
	}
	if (!mnt) {
		fprintf(stderr, "kvcachectl: status: missing MOUNTPOINT\n");
		return 2;
	}
	if (get_status(mnt, &st) < 0)
		return 1;
	if (json)
		print_json(mnt, &st);
	else
		print_text(mnt, &st);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version") ||
	    !strcmp(argv[1], "version")) {
		printf("kvcachectl %s\n", KVC_VERSION);
		return 0;
	}
	fprintf(stderr, "kvcachectl: unknown command '%s' (see kvcachectl --help)\n", argv[1]);
	return 2;
}
