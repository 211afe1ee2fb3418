/*
 * kvcachectl: inspect a kvcachefs mount from the command line.
 *
 *   kvcachectl status [--json] MOUNTPOINT
 *   kvcachectl hash --block-tokens N [--seed S] [TOKENS...]
 *   kvcachectl lookup DIR NAME...
 *
 * It talks to the daemon only through the mount's ioctl ABI (fs/uapi/kvcachefs.h) and
 * libkvcache (fs/uapi/kvcache.h), as any application may: no private socket, no root needed
 * beyond read access to the mountpoint. `hash` needs no mount at all: it prints the block
 * names kvc_prefix_hash gives a token sequence, so scripts and other languages can check their
 * own naming against the library's; `lookup` then says how many of those blocks are cached.
 *
 * Exit status: 0 on success, 1 when the operation failed, 2 for a usage error (bad option or
 * value), with one line on stderr naming what was wrong.
 */
#include "fs/uapi/kvcachefs.h"
#include "fs/uapi/kvcache.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
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
		"  status [--json] MOUNTPOINT   capacity and usage of the DRAM pool and the\n"
		"                               SSD tier, block and directory counts, reads,\n"
		"                               writes, hits, misses, evictions, demotions to\n"
		"                               and promotions from SSD, and what the start\n"
		"                               recovered from a previous daemon\n"
		"  nodes [--json] MOUNTPOINT    the cluster's members: id, transfer address,\n"
		"                               pool used and free, state\n"
		"  hash --block-tokens N [--seed S] [TOKENS...]\n"
		"                               the name of each full block of N tokens, one\n"
		"                               per line (kvc_prefix_hash); TOKENS are decimal\n"
		"                               u32, read from stdin (separated by blanks or\n"
		"                               commas) when none are given; the seed S is a\n"
		"                               decimal or 0x-hex u64 (default 0)\n"
		"  lookup DIR NAME...           how many of the NAMEs, from the first on, are\n"
		"                               sealed blocks in DIR (the cached prefix)\n"
		"  help                         show this help\n"
		"  version                      show the version\n"
		"\n"
		"Options: -h/--help, -V/--version.\n");
}

/* Ask the daemon behind mnt for its status. 0, or -errno with a message printed. */
/* One ioctl on the mount; arg starts with the ABI version. Prints the error line. */
static int mount_ioctl(const char *mnt, unsigned long cmd, void *arg, const char *what)
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
	*(uint32_t *)arg = KVCACHEFS_ABI_VERSION;
	if (ioctl(fd, cmd, arg) < 0) {
		ret = -errno;
		if (errno == ENOTTY || errno == ENOSYS || errno == EINVAL)
			fprintf(stderr, "kvcachectl: %s: not a kvcachefs mount\n", mnt);
		else if (errno == EPROTO)
			fprintf(stderr, "kvcachectl: %s: the daemon speaks another ABI version\n",
				mnt);
		else
			fprintf(stderr, "kvcachectl: %s: %s: %s\n", mnt, what, strerror(errno));
	}
out:
	close(fd);
	return ret;
}

static int get_status(const char *mnt, struct kvcachefs_status *st)
{
	memset(st, 0, sizeof(*st));
	return mount_ioctl(mnt, KVCACHEFS_IOC_STATUS, st, "status");
}

static int get_tiers(const char *mnt, struct kvcachefs_tiers *t)
{
	memset(t, 0, sizeof(*t));
	return mount_ioctl(mnt, KVCACHEFS_IOC_TIERS, t, "status");
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

static void json_string(const char *s)
{
	putchar('"');
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		if ((unsigned char)*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void print_json(const char *mnt, const struct kvcachefs_status *s,
		       const struct kvcachefs_tiers *t)
{
	printf("{\"mountpoint\": ");
	json_string(mnt);
	printf(", \"capacity\": %llu, \"used\": %llu, \"free\": %llu"
	       ", \"blocks\": %llu, \"writing\": %llu, \"directories\": %llu"
	       ", \"reads\": %llu, \"writes\": %llu, \"bytes_read\": %llu"
	       ", \"bytes_written\": %llu, \"hits\": %llu, \"misses\": %llu"
	       ", \"evictions\": %llu, \"enospc\": %llu, \"max_block_size\": %llu"
	       ", \"evict_high_pct\": %u, \"evict_low_pct\": %u, \"pool_size\": %llu"
	       ", \"pinned\": %llu, \"reservations\": %llu, \"cluster\": %s, \"members\": %llu"
	       ", \"cluster_capacity\": %llu, \"cluster_used\": %llu",
	       s->capacity, s->used, s->free, s->blocks, s->writing, s->directories, s->reads,
	       s->writes, s->bytes_read, s->bytes_written, s->hits, s->misses, s->evictions,
	       s->enospc, s->max_block_size, s->evict_high_pct, s->evict_low_pct, s->pool_size,
	       s->pinned, s->reservations, s->flags & KVCACHEFS_STATUS_CLUSTER ? "true" : "false",
	       s->members, s->cluster_capacity, s->cluster_used);
	printf(", \"ssd_capacity\": %llu, \"ssd_used\": %llu, \"ssd_blocks\": %llu"
	       ", \"ssd_devices\": %llu, \"dram_blocks\": %llu, \"demotions\": %llu"
	       ", \"promotions\": %llu, \"ssd_evictions\": %llu, \"recovered\": %llu"
	       ", \"recovery_dropped\": %llu, \"recovery_ns\": %llu}\n",
	       t->ssd_capacity, t->ssd_used, t->ssd_blocks, t->ssd_devices, t->dram_blocks,
	       t->demotions, t->promotions, t->ssd_evictions, t->recovered, t->recovery_dropped,
	       t->recovery_ns);
}

static void print_text(const char *mnt, const struct kvcachefs_status *s,
		       const struct kvcachefs_tiers *t)
{
	char a[32], b[32], c[32];
	double pct = s->capacity ? 100.0 * (double)s->used / (double)s->capacity : 0;

	if (s->flags & KVCACHEFS_STATUS_CLUSTER)
		printf("kvcachefs at %s (cluster member, %llu members)\n", mnt, s->members);
	else
		printf("kvcachefs at %s (single node)\n", mnt);
	printf("  dram:        %s capacity, %s used (%.1f%%), %s free; %llu blocks\n",
	       human(s->capacity, a, sizeof(a)), human(s->used, b, sizeof(b)), pct,
	       human(s->free, c, sizeof(c)), t->dram_blocks);
	if (t->ssd_devices) {
		uint64_t ssd_free =
		    t->ssd_capacity > t->ssd_used ? t->ssd_capacity - t->ssd_used : 0;

		pct = t->ssd_capacity ? 100.0 * (double)t->ssd_used / (double)t->ssd_capacity : 0;
		printf("  ssd:         %s capacity, %s used (%.1f%%), %s free; %llu blocks, "
		       "%llu device%s\n",
		       human(t->ssd_capacity, a, sizeof(a)), human(t->ssd_used, b, sizeof(b)), pct,
		       human(ssd_free, c, sizeof(c)), t->ssd_blocks, t->ssd_devices,
		       t->ssd_devices == 1 ? "" : "s");
		printf("  tiers:       %llu demoted to SSD, %llu promoted to DRAM, %llu dropped "
		       "from SSD\n",
		       t->demotions, t->promotions, t->ssd_evictions);
	}
	printf("  eviction:    above %u%% down to %u%%; max block %s\n", s->evict_high_pct,
	       s->evict_low_pct, human(s->max_block_size, a, sizeof(a)));
	printf("  blocks:      %llu sealed, %llu being written\n", s->blocks, s->writing);
	printf("  directories: %llu\n", s->directories);
	printf("  reads:       %llu (%s)\n", s->reads, human(s->bytes_read, a, sizeof(a)));
	printf("  writes:      %llu (%s)\n", s->writes, human(s->bytes_written, a, sizeof(a)));
	printf("  hits:        %llu\n", s->hits);
	printf("  misses:      %llu\n", s->misses);
	printf("  evictions:   %llu (blocks that left DRAM, demoted or dropped)\n", s->evictions);
	printf("  ENOSPC:      %llu\n", s->enospc);
	printf("  pinned:      %llu (side channel), %llu reservations open\n", s->pinned,
	       s->reservations);
	if (s->flags & KVCACHEFS_STATUS_CLUSTER)
		printf("  cluster:     %llu members, %s capacity, %s used\n", s->members,
		       human(s->cluster_capacity, a, sizeof(a)),
		       human(s->cluster_used, b, sizeof(b)));
	printf("  recovery:    %llu blocks recovered, %llu dropped, in %.1f ms\n", t->recovered,
	       t->recovery_dropped, (double)t->recovery_ns / 1e6);
}

/* "[--json] MOUNTPOINT" of command cmd: 0 parsed, 1 help shown, 2 usage error (printed). */
static int mount_args(const char *cmd, int argc, char **argv, const char **mnt, int *json)
{
	*mnt = NULL;
	*json = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			*json = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 1;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "kvcachectl: %s: unknown option '%s'\n", cmd, argv[i]);
			return 2;
		} else if (*mnt) {
			fprintf(stderr, "kvcachectl: %s: unexpected argument '%s'\n", cmd, argv[i]);
			return 2;
		} else {
			*mnt = argv[i];
		}
	}
	if (!*mnt) {
		fprintf(stderr, "kvcachectl: %s: missing MOUNTPOINT\n", cmd);
		return 2;
	}
	return 0;
}

static int cmd_nodes(int argc, char **argv)
{
	static struct kvcachefs_nodes nd;
	const char *mnt;
	char a[32], b[32];
	int json, ret = mount_args("nodes", argc, argv, &mnt, &json);

	if (ret)
		return ret == 1 ? 0 : 2;
	memset(&nd, 0, sizeof(nd));
	if (mount_ioctl(mnt, KVCACHEFS_IOC_NODES, &nd, "nodes") < 0)
		return 1;
	if (json) {
		printf("{\"cluster\": ");
		json_string(nd.flags & KVCACHEFS_NODES_CLUSTER ? nd.cluster : "");
		printf(", \"stale\": %s, \"total\": %u, \"nodes\": [",
		       nd.flags & KVCACHEFS_NODES_STALE ? "true" : "false", nd.total);
		for (uint32_t i = 0; i < nd.count && i < KVCACHEFS_NODES_MAX; i++) {
			const struct kvcachefs_node *n = &nd.node[i];

			nd.node[i].addr[sizeof(n->addr) - 1] = '\0';
			printf("%s{\"node_id\": \"%016llx\", \"addr\": ", i ? ", " : "",
			       (unsigned long long)n->node_id);
			json_string(n->addr);
			printf(", \"pool_size\": %llu, \"pool_used\": %llu, \"pool_free\": %llu, "
			       "\"state\": \"%s\", \"self\": %s, \"rdma\": %s}",
			       n->pool_size, n->pool_used,
			       n->pool_size > n->pool_used ? n->pool_size - n->pool_used : 0,
			       n->state & KVCACHEFS_NODE_UP ? "up" : "down",
			       n->state & KVCACHEFS_NODE_SELF ? "true" : "false",
			       n->transports & 0x2 ? "true" : "false");
		}
		printf("]}\n");
		return 0;
	}
	if (!(nd.flags & KVCACHEFS_NODES_CLUSTER))
		printf("%s: single node (no --etcd)\n", mnt);
	else
		printf("cluster %.*s: %u member%s%s\n", (int)sizeof(nd.cluster), nd.cluster,
		       nd.total, nd.total == 1 ? "" : "s",
		       nd.flags & KVCACHEFS_NODES_STALE
			   ? " (etcd unreachable: last known membership)"
			   : "");
	printf("%-18s %-24s %12s %12s  %s\n", "NODE", "ADDRESS", "POOL USED", "POOL FREE", "STATE");
	for (uint32_t i = 0; i < nd.count && i < KVCACHEFS_NODES_MAX; i++) {
		const struct kvcachefs_node *n = &nd.node[i];

		nd.node[i].addr[sizeof(n->addr) - 1] = '\0';
		printf("%016llx   %-24s %12s %12s  %s%s\n", (unsigned long long)n->node_id,
		       n->addr[0] ? n->addr : "-", human(n->pool_used, a, sizeof(a)),
		       human(n->pool_size > n->pool_used ? n->pool_size - n->pool_used : 0, b,
			     sizeof(b)),
		       n->state & KVCACHEFS_NODE_UP ? "up" : "down",
		       n->state & KVCACHEFS_NODE_SELF ? " (this node)" : "");
	}
	if (nd.total > nd.count)
		printf("... and %u more\n", nd.total - nd.count);
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	struct kvcachefs_status st;
	struct kvcachefs_tiers t;
	const char *mnt;
	int json, ret = mount_args("status", argc, argv, &mnt, &json);

	if (ret)
		return ret == 1 ? 0 : 2;
	if (get_status(mnt, &st) < 0 || get_tiers(mnt, &t) < 0)
		return 1;
	if (json)
		print_json(mnt, &st, &t);
	else
		print_text(mnt, &st, &t);
	return 0;
}

/* Digits only (no sign, no blanks), base 10 or 16, at most max. 0, or -1 when s is not one. */
static int parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -1;
		if (v > (max - d) / (unsigned)base)
			return -1;
		v = v * (unsigned)base + d;
	}
	*out = v;
	return 0;
}

static int parse_seed(const char *s, uint64_t *out)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		return parse_u64(s + 2, 16, UINT64_MAX, out);
	return parse_u64(s, 10, UINT64_MAX, out);
}

/* A growing array of tokens. */
struct tokens {
	uint32_t *v;
	size_t n, cap;
};

/* Append the token spelled s. 0; 2 (message printed) for a bad token; 1 when out of memory. */
static int tokens_add(struct tokens *t, const char *s)
{
	uint64_t v;

	if (parse_u64(s, 10, UINT32_MAX, &v) < 0) {
		fprintf(stderr, "kvcachectl: hash: bad token '%s' (not a decimal u32)\n", s);
		return 2;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 1024;
		uint32_t *nv = realloc(t->v, cap * sizeof(*nv));

		if (!nv) {
			fprintf(stderr, "kvcachectl: hash: out of memory\n");
			return 1;
		}
		t->v = nv;
		t->cap = cap;
	}
	t->v[t->n++] = (uint32_t)v;
	return 0;
}

/* Read tokens separated by whitespace and commas from f. 0, or the exit status (message
 * printed). */
static int tokens_read(struct tokens *t, FILE *f)
{
	char *word = NULL;
	size_t len = 0, cap = 0;
	int c, ret = 0;

	do {
		c = getc(f);
		if (c == EOF || isspace(c) || c == ',') {
			if (!len)
				continue;
			word[len] = '\0';
			len = 0;
			ret = tokens_add(t, word);
		} else {
			if (len + 1 >= cap) {
				size_t ncap = cap ? 2 * cap : 32;
				char *nw = realloc(word, ncap);

				if (!nw) {
					fprintf(stderr, "kvcachectl: hash: out of memory\n");
					ret = 1;
					break;
				}
				word = nw;
				cap = ncap;
			}
			word[len++] = (char)c;
		}
	} while (c != EOF && !ret);
	if (!ret && ferror(f)) {
		fprintf(stderr, "kvcachectl: hash: reading stdin: %s\n", strerror(errno));
		ret = 1;
	}
	free(word);
	return ret;
}

static int cmd_hash(int argc, char **argv)
{
	struct tokens t = {0};
	char(*names)[KVC_HASH_NAME_SIZE] = NULL;
	const char *bt_arg = NULL, *seed_arg = NULL;
	uint64_t bt = 0, seed = 0;
	int ntok_args = 0, opts = 1, ret = 2, n;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int r;

		/* "-1" is not an option but a bad token, and is reported as such */
		if (!opts || a[0] != '-' || isdigit((unsigned char)a[1])) {
			r = tokens_add(&t, a);
			if (r) {
				ret = r;
				goto out;
			}
			ntok_args++;
		} else if (!strcmp(a, "--")) {
			opts = 0;
		} else if (!strcmp(a, "--block-tokens") || !strcmp(a, "--seed")) {
			if (i + 1 == argc) {
				fprintf(stderr, "kvcachectl: hash: %s needs a value\n", a);
				goto out;
			}
			if (!strcmp(a, "--seed"))
				seed_arg = argv[++i];
			else
				bt_arg = argv[++i];
		} else if (!strncmp(a, "--block-tokens=", 15)) {
			bt_arg = a + 15;
		} else if (!strncmp(a, "--seed=", 7)) {
			seed_arg = a + 7;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			ret = 0;
			goto out;
		} else {
			fprintf(stderr, "kvcachectl: hash: unknown option '%s'\n", a);
			goto out;
		}
	}
	if (!bt_arg) {
		fprintf(stderr, "kvcachectl: hash: missing --block-tokens\n");
		goto out;
	}
	if (parse_u64(bt_arg, 10, UINT32_MAX, &bt) < 0 || bt == 0) {
		fprintf(stderr,
			"kvcachectl: hash: bad --block-tokens '%s' (want a decimal u32 > 0)\n",
			bt_arg);
		goto out;
	}
	if (seed_arg && parse_seed(seed_arg, &seed) < 0) {
		fprintf(stderr,
			"kvcachectl: hash: bad --seed '%s' (want a decimal or 0x-hex u64)\n",
			seed_arg);
		goto out;
	}
	if (!ntok_args) {
		ret = tokens_read(&t, stdin);
		if (ret)
			goto out;
	}

	ret = 1;
	if (t.n / bt) {
		names = calloc(t.n / bt, sizeof(*names));
		if (!names) {
			fprintf(stderr, "kvcachectl: hash: out of memory\n");
			goto out;
		}
	}
	n = kvc_prefix_hash(seed, (uint32_t)bt, t.v, t.n, names, t.n / bt);
	if (n < 0) {
		fprintf(stderr, "kvcachectl: hash: %s\n", strerror(-n));
		goto out;
	}
	for (int i = 0; i < n; i++)
		puts(names[i]);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "kvcachectl: hash: writing stdout: %s\n", strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(names);
	free(t.v);
	return ret;
}

static int cmd_lookup(int argc, char **argv)
{
	const char *dir = NULL;
	const char **names;
	size_t n = 0;
	int opts = 1, r;

	names = calloc((size_t)argc, sizeof(*names));
	if (!names) {
		fprintf(stderr, "kvcachectl: lookup: out of memory\n");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opts && !strcmp(a, "--")) {
			opts = 0;
		} else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
			usage(stdout);
			free(names);
			return 0;
		} else if (opts && a[0] == '-' && a[1]) {
			fprintf(stderr, "kvcachectl: lookup: unknown option '%s'\n", a);
			free(names);
			return 2;
		} else if (!dir) {
			dir = a;
		} else {
			names[n++] = a;
		}
	}
	if (!dir || !n) {
		fprintf(stderr, "kvcachectl: lookup: missing %s\n", dir ? "NAME" : "DIR");
		free(names);
		return 2;
	}
	r = kvc_lookup_path(dir, names, n);
	free(names);
	if (r < 0) {
		fprintf(stderr, "kvcachectl: lookup: %s: %s\n", dir, strerror(-r));
		return 1;
	}
	printf("%d\n", r);
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
	if (!strcmp(argv[1], "nodes"))
		return cmd_nodes(argc - 1, argv + 1);
	if (!strcmp(argv[1], "hash"))
		return cmd_hash(argc - 1, argv + 1);
	if (!strcmp(argv[1], "lookup"))
		return cmd_lookup(argc - 1, argv + 1);
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
