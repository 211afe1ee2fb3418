/* Unit tests of fs/options.c: sizes, defaults and every rejected command line. */
#include "fs/options.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static int parse(struct kvc_options *o, const char *line)
{
	static char buf[512];
	char *argv[32];
	int argc = 0;

	snprintf(buf, sizeof(buf), "kvcachefs %s", line);
	for (char *t = strtok(buf, " "); t && argc < 31; t = strtok(NULL, " "))
		argv[argc++] = t;
	argv[argc] = NULL;
	return opt_parse(argc, argv, o);
}

static void test_sizes(void)
{
	uint64_t v;

	CHECK(opt_parse_size("4096", &v) == 0 && v == 4096);
	CHECK(opt_parse_size("64K", &v) == 0 && v == 64 << 10);
	CHECK(opt_parse_size("64m", &v) == 0 && v == 64 << 20);
	CHECK(opt_parse_size("2G", &v) == 0 && v == 2ull << 30);
	CHECK(opt_parse_size("1T", &v) == 0 && v == 1ull << 40);
	CHECK(opt_parse_size("16MiB", &v) == 0 && v == 16 << 20);
	CHECK(opt_parse_size("16MB", &v) == 0 && v == 16 << 20);
	CHECK(opt_parse_size("", &v) == -EINVAL);
	CHECK(opt_parse_size("M", &v) == -EINVAL);
	CHECK(opt_parse_size("-1", &v) == -EINVAL);
	CHECK(opt_parse_size("12Q", &v) == -EINVAL);
	CHECK(opt_parse_size("1.5G", &v) == -EINVAL);
	CHECK(opt_parse_size("10Mx", &v) == -EINVAL);
	CHECK(opt_parse_size("99999999999999999999", &v) == -ERANGE);
	CHECK(opt_parse_size("99999999999T", &v) == -ERANGE);
}

static void test_defaults(void)
{
	struct kvc_options o;

	REQUIRE(parse(&o, "/mnt/x") == 0);
	CHECK(!strcmp(o.mountpoint, "/mnt/x"));
	CHECK(o.pool_size == KVC_DEFAULT_POOL_SIZE);
	CHECK(o.max_block_size == 64ull << 20);
	CHECK(o.evict_high == 90 && o.evict_low == 80);
	CHECK(!o.foreground && o.fuse_opts[0] == '\0');
	CHECK(o.nssd == 0 && o.ssd_queue_depth == KVC_DEFAULT_SSD_QUEUE && o.ssd_queue_depth == 32);
	CHECK(o.demote_above == KVC_DEFAULT_DEMOTE_ABOVE && o.demote_above == 50);
	CHECK(!o.fresh);
	CHECK(o.metrics == NULL);
	CHECK(o.log_level == LOG_INFO && o.log_target == LOG_TARGET_AUTO);
	CHECK(o.max_read == 0);
}

static void test_all_options(void)
{
	struct kvc_options o;

	REQUIRE(parse(&o, "-f --pool-size 256M --max-block-size 1M --evict-high 70 --evict-low 40 "
			  "-o allow_other -o ro /m") == 0);
	CHECK(o.foreground);
	CHECK(o.pool_size == 256 << 20);
	CHECK(o.max_block_size == 1 << 20);
	CHECK(o.evict_high == 70 && o.evict_low == 40);
	CHECK(!strcmp(o.fuse_opts, "allow_other,ro"));
	REQUIRE(parse(&o, "--demote-above 100 /m") == 0);
	CHECK(o.demote_above == 100);
	REQUIRE(parse(&o, "--demote-above=1 /m") == 0);
	CHECK(o.demote_above == 1);
	REQUIRE(parse(&o, "/m --pool-size=8M") == 0); /* options after the mountpoint */
	CHECK(o.pool_size == 8 << 20);
	REQUIRE(parse(&o, "--help") == 0);
	CHECK(o.help);
	REQUIRE(parse(&o, "--version") == 0);
	CHECK(o.version);
}

static void test_rejected(void)
{
	struct kvc_options o;
	const char *bad[] = {
	    "",					 /* no mountpoint */
	    "/a /b",				 /* two */
	    "--bogus /m",			 /* unknown */
	    "--pool-size 12Q /m",		 /* bad size */
	    "--pool-size 512K /m",		 /* too small */
	    "--max-block-size 1K /m",		 /* too small */
	    "--evict-high 101 /m",		 /* out of range */
	    "--evict-high abc /m",		 /* not a number */
	    "--evict-low 0 /m",			 /* out of range */
	    "--evict-high 50 --evict-low 50 /m", /* low must be below high */
	    "/m --pool-size",			 /* missing value */
	    "--ssd-queue-depth 0 /m",		 /* out of range */
	    "--ssd-queue-depth 4097 /m",	 /* out of range */
	    "--ssd-queue-depth -1 /m",		 /* out of range */
	    "--ssd-queue-depth 8x /m",		 /* not a number */
	    "--ssd-queue-depth= /m",		 /* empty */
	    "/m --ssd-queue-depth",		 /* missing value */
	    "--demote-above 0 /m",		 /* out of range */
	    "--demote-above 101 /m",		 /* out of range */
	    "--demote-above half /m",		 /* not a number */
	    "/m --demote-above",		 /* missing value */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = parse(&o, bad[i]);

		if (ret != -EINVAL || !o.err[0])
			fprintf(stderr, "accepted: '%s'\n", bad[i]);
		CHECK(ret == -EINVAL && o.err[0]);
	}
}

static void test_pool_permissions(void)
{
	struct kvc_options o;

	CHECK(parse(&o, "/mnt") == 0 && o.pool_mode == 0600 && o.pool_gid == -1);
	CHECK(parse(&o, "--pool-mode 0640 --pool-group 0 /mnt") == 0 && o.pool_mode == 0640 &&
	      o.pool_gid == 0);
	CHECK(parse(&o, "--pool-mode 660 --pool-group root /mnt") == 0 && o.pool_mode == 0660 &&
	      o.pool_gid == 0);
	CHECK(parse(&o, "--pool-mode 0755 /mnt") == -EINVAL && strstr(o.err, "--pool-mode"));
	CHECK(parse(&o, "--pool-mode rw /mnt") == -EINVAL && strstr(o.err, "'rw'"));
	CHECK(parse(&o, "--pool-mode 01600 /mnt") == -EINVAL);
	CHECK(parse(&o, "--pool-mode 0060 /mnt") == -EINVAL && strstr(o.err, "owner"));
	CHECK(parse(&o, "--pool-group no-such-group-xyz /mnt") == -EINVAL &&
	      strstr(o.err, "no-such-group-xyz"));
}

static void test_cluster_options(void)
{
	struct kvc_options o;

	CHECK(parse(&o, "/mnt") == 0 && !o.etcd && !o.cluster && o.node_id == 0);
	CHECK(parse(&o, "--etcd http://127.0.0.1:2379,https://e2:2379 --cluster prod-1 "
			"--node-id 0x2a --listen 10.0.0.1:7070 --secret-file /etc/s /mnt") == 0);
	CHECK(o.node_id == 42 && !strcmp(o.cluster, "prod-1") &&
	      !strcmp(o.listen, "10.0.0.1:7070"));
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --listen [::1]:0 /m") == 0);
	CHECK(parse(&o, "--etcd http://e:1 /m") == -EINVAL && strstr(o.err, "--cluster"));
	CHECK(parse(&o, "--etcd http://e:1 --cluster c /m") == -EINVAL &&
	      strstr(o.err, "--secret-file"));
	CHECK(parse(&o, "--cluster c /m") == -EINVAL && strstr(o.err, "need --etcd"));
	CHECK(parse(&o, "--listen 1.2.3.4:5 /m") == -EINVAL);
	CHECK(parse(&o, "--etcd e:2379 --cluster c --secret-file s /m") == -EINVAL &&
	      strstr(o.err, "'e:2379'"));
	CHECK(parse(&o, "--etcd http:// --cluster c --secret-file s /m") == -EINVAL);
	CHECK(parse(&o, "--etcd http://a:1, --cluster c --secret-file s /m") == -EINVAL);
	CHECK(parse(&o, "--etcd http://a:1 --cluster a/b --secret-file s /m") == -EINVAL &&
	      strstr(o.err, "'a/b'"));
	CHECK(parse(&o, "--etcd http://a:1 --cluster c --secret-file s --node-id 0 /m") == -EINVAL);
	CHECK(parse(&o, "--etcd http://a:1 --cluster c --secret-file s --node-id -3 /m") ==
	      -EINVAL);
	CHECK(parse(&o, "--etcd http://a:1 --cluster c --secret-file s --listen host /m") ==
	      -EINVAL);
	CHECK(parse(&o, "--etcd http://a:1 --cluster c --secret-file s --listen h:70000 /m") ==
	      -EINVAL);
}

static void test_tcp_congestion(void)
{
	struct kvc_options o;

	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s /m") == 0 &&
	      !o.tcp_congestion);
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion cubic "
			"/m") == 0 &&
	      !strcmp(o.tcp_congestion, "cubic"));
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion "
			"dctcp_x-2 /m") == 0);
	CHECK(parse(&o, "--tcp-congestion cubic /m") == -EINVAL && strstr(o.err, "need --etcd"));
	/* not a name: upper case, punctuation, empty, 16 bytes or more */
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion Cubic "
			"/m") == -EINVAL &&
	      strstr(o.err, "--tcp-congestion") && strstr(o.err, "'Cubic'"));
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion a/b "
			"/m") == -EINVAL);
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion= /m") ==
	      -EINVAL);
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion "
			"abcdefghijklmnop /m") == -EINVAL);
	CHECK(parse(&o, "--etcd http://e:1 --cluster c --secret-file s --tcp-congestion "
			"abcdefghijklmno /m") == 0);
}

static void test_ssd(void)
{
	struct kvc_options o;

	REQUIRE(parse(&o, "--ssd /x/f:64M --ssd /dev/nvme0n1 --ssd-queue-depth 128 --fresh /m") ==
		0);
	CHECK(o.nssd == 2 && o.ssd_queue_depth == 128 && o.fresh);
	CHECK(!strcmp(o.ssd[0].path, "/x/f") && o.ssd[0].size == 64ull << 20);
	CHECK(!strcmp(o.ssd[1].path, "/dev/nvme0n1") && o.ssd[1].size == 0);
	CHECK(parse(&o, "--ssd=/x/f:1G /m") == 0 && o.ssd[0].size == 1ull << 30);
	CHECK(parse(&o, "--ssd relative:4096 /m") == 0 && !strcmp(o.ssd[0].path, "relative") &&
	      o.ssd[0].size == 4096);
	CHECK(parse(&o, "--ssd-queue-depth 1 /m") == 0 && o.ssd_queue_depth == 1);
	CHECK(parse(&o, "--ssd-queue-depth 4096 /m") == 0 && o.ssd_queue_depth == 4096);
}

/* The split is at the last ':' and only when a size above 0 follows it. */
static void test_ssd_last_colon(void)
{
	struct kvc_options o;

	CHECK(parse(&o, "--ssd /tmp/a:b/file /m") == 0 && o.nssd == 1 &&
	      !strcmp(o.ssd[0].path, "/tmp/a:b/file") && o.ssd[0].size == 0);
	CHECK(parse(&o, "--ssd /tmp/a:b/file:2G /m") == 0 &&
	      !strcmp(o.ssd[0].path, "/tmp/a:b/file") && o.ssd[0].size == 2ull << 30);
	CHECK(parse(&o, "--ssd /x/a:1M:2M /m") == 0 && !strcmp(o.ssd[0].path, "/x/a:1M") &&
	      o.ssd[0].size == 2 << 20);
	CHECK(parse(&o, "--ssd /x/f:64Q /m") == 0 && !strcmp(o.ssd[0].path, "/x/f:64Q") &&
	      o.ssd[0].size == 0);
	CHECK(parse(&o, "--ssd /x/f:0 /m") == 0 && !strcmp(o.ssd[0].path, "/x/f:0") &&
	      o.ssd[0].size == 0);
	CHECK(parse(&o, "--ssd /x/f:-1 /m") == 0 && !strcmp(o.ssd[0].path, "/x/f:-1"));
	CHECK(parse(&o, "--ssd /x/f: /m") == -EINVAL && strstr(o.err, "'/x/f:'") &&
	      strstr(o.err, "SIZE"));
	CHECK(parse(&o, "--ssd /x/f:99999999999T /m") == -EINVAL && strstr(o.err, "too large"));
	CHECK(parse(&o, "--ssd :64M /m") == -EINVAL && strstr(o.err, "empty path"));
}

static void test_ssd_rejected(void)
{
	static char longpath[4100];
	struct kvc_options o;
	char *argv[] = {"kvcachefs", "--ssd", longpath, "/m", NULL};

	CHECK(parse(&o, "--ssd /a --ssd /a /m") == -EINVAL && strstr(o.err, "'/a' given twice"));
	CHECK(parse(&o, "--ssd /a:1G --ssd /a:2G /m") == -EINVAL && strstr(o.err, "twice"));
	CHECK(parse(&o, "--ssd /a --ssd /a:1G /m") == -EINVAL && strstr(o.err, "twice"));
	CHECK(parse(&o, "--ssd /a --ssd /a/ /m") == 0 && o.nssd == 2); /* only the spelling */
	CHECK(parse(&o, "--ssd /1 --ssd /2 --ssd /3 --ssd /4 --ssd /5 --ssd /6 --ssd /7 "
			"--ssd /8 /m") == 0 &&
	      o.nssd == KVC_MAX_SSD && !strcmp(o.ssd[7].path, "/8"));
	CHECK(parse(&o, "--ssd /1 --ssd /2 --ssd /3 --ssd /4 --ssd /5 --ssd /6 --ssd /7 "
			"--ssd /8 --ssd /9 /m") == -EINVAL &&
	      strstr(o.err, "at most 8"));
	CHECK(parse(&o, "/m --ssd") == -EINVAL && strstr(o.err, "needs a value"));
	CHECK(parse(&o, "--fresh=1 /m") == -EINVAL);

	memset(longpath, 'a', 4095); /* the longest path that fits: 4095 bytes */
	longpath[0] = '/';
	REQUIRE(opt_parse(4, argv, &o) == 0 && o.nssd == 1 && strlen(o.ssd[0].path) == 4095);
	strcpy(longpath + 4095, ":1G"); /* its size does not count */
	CHECK(opt_parse(4, argv, &o) == 0 && strlen(o.ssd[0].path) == 4095 &&
	      o.ssd[0].size == 1ull << 30);
	longpath[4095] = 'a';
	longpath[4096] = '\0';
	CHECK(opt_parse(4, argv, &o) == -EINVAL && strstr(o.err, "longer than 4095"));
}

static void test_metrics(void)
{
	struct kvc_options o;
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&o.metrics_addr;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&o.metrics_addr;
	struct in6_addr any6 = IN6ADDR_ANY_INIT, lo6 = IN6ADDR_LOOPBACK_INIT;
	const struct {
		const char *line, *err;
	} bad[] = {
	    {"--metrics 9464 /m", "expected IPv4:PORT"},
	    {"--metrics :9464 /m", "expected IPv4:PORT"},
	    {"--metrics 127.0.0.1 /m", "expected IPv4:PORT"},
	    {"--metrics 127.0.0.1: /m", "bad port"},
	    {"--metrics 127.0.0.1:0 /m", "bad port"},
	    {"--metrics 127.0.0.1:65536 /m", "bad port"},
	    {"--metrics 127.0.0.1:-1 /m", "bad port"},
	    {"--metrics 127.0.0.1:+80 /m", "bad port"},
	    {"--metrics 127.0.0.1:80x /m", "bad port"},
	    {"--metrics localhost:9464 /m", "'localhost' is not an IPv4 address"},
	    {"--metrics 256.0.0.1:9464 /m", "not an IPv4 address"},
	    {"--metrics ::1:9464 /m", "in brackets"},
	    {"--metrics [::1 /m", "not an IPv4 address"},
	    {"--metrics [::g]:9464 /m", "'::g' is not an IPv6 address"},
	    {"--metrics []:9464 /m", "is not an IPv6 address"},
	    {"/m --metrics", "needs a value"},
	};

	REQUIRE(parse(&o, "--metrics 127.0.0.1:9464 /m") == 0);
	CHECK(!strcmp(o.metrics, "127.0.0.1:9464"));
	CHECK(a4->sin_family == AF_INET && ntohs(a4->sin_port) == 9464 &&
	      a4->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
	REQUIRE(parse(&o, "--metrics=0.0.0.0:1 /m") == 0);
	CHECK(a4->sin_family == AF_INET && ntohs(a4->sin_port) == 1 &&
	      a4->sin_addr.s_addr == htonl(INADDR_ANY));
	REQUIRE(parse(&o, "--metrics [::]:65535 /m") == 0);
	CHECK(a6->sin6_family == AF_INET6 && ntohs(a6->sin6_port) == 65535 &&
	      !memcmp(&a6->sin6_addr, &any6, sizeof(any6)));
	REQUIRE(parse(&o, "--metrics [::1]:9464 /m") == 0);
	CHECK(a6->sin6_family == AF_INET6 && !memcmp(&a6->sin6_addr, &lo6, sizeof(lo6)));
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		int r = parse(&o, bad[k].line);

		CHECK(r == -EINVAL);
		if (r == -EINVAL && !strstr(o.err, bad[k].err)) {
			fprintf(stderr, "  '%s': message '%s' lacks '%s'\n", bad[k].line, o.err,
				bad[k].err);
			CHECK(0);
		}
		if (r == -EINVAL)
			CHECK(!strncmp(o.err, "--metrics", 9) || !strncmp(o.err, "option", 6));
	}
}

static void test_log_options(void)
{
	struct kvc_options o;
	const struct {
		const char *name;
		int level;
	} levels[] = {
	    {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"info", LOG_INFO}, {"debug", LOG_DEBUG}};
	const char *bad[] = {"--log-level warn /m",   "--log-level INFO /m",
			     "--log-level notice /m", "--log-level 3 /m",
			     "--log-level= /m",	      "/m --log-level",
			     "--log-target file /m",  "--log-target Syslog /m",
			     "--log-target= /m",      "/m --log-target"};
	char line[64];

	for (size_t k = 0; k < sizeof(levels) / sizeof(levels[0]); k++) {
		snprintf(line, sizeof(line), "--log-level %s /m", levels[k].name);
		CHECK(parse(&o, line) == 0 && o.log_level == levels[k].level);
		CHECK(!strcmp(log_level_name(levels[k].level), levels[k].name));
	}
	CHECK(!strcmp(log_level_name(LOG_NOTICE), "info"));
	CHECK(!strcmp(log_level_name(LOG_CRIT), "error"));
	CHECK(parse(&o, "--log-target stderr /m") == 0 && o.log_target == LOG_TARGET_STDERR);
	CHECK(parse(&o, "--log-target=syslog /m") == 0 && o.log_target == LOG_TARGET_SYSLOG);
	CHECK(parse(&o, "--log-target auto --log-level debug /m") == 0 &&
	      o.log_target == LOG_TARGET_AUTO && o.log_level == LOG_DEBUG);
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		int r = parse(&o, bad[k]);
		bool ok = r == -EINVAL &&
			  (!strncmp(o.err, "--log-", 6) || strstr(o.err, "needs a value"));

		if (!ok)
			fprintf(stderr, "  '%s': %d '%s'\n", bad[k], r, o.err);
		CHECK(ok);
	}
	CHECK(parse(&o, "--log-level warn /m") == -EINVAL &&
	      strstr(o.err, "error, warning, info or debug") && strstr(o.err, "'warn'"));
	CHECK(parse(&o, "--log-target file /m") == -EINVAL &&
	      strstr(o.err, "auto, stderr or syslog") && strstr(o.err, "'file'"));
}

/* -o max_read=N reaches FUSE and is remembered for init() (libfuse wants both to agree). */
static void test_max_read(void)
{
	struct kvc_options o;

	CHECK(parse(&o, "-o max_read=65536 /m") == 0 && o.max_read == 65536 &&
	      !strcmp(o.fuse_opts, "max_read=65536"));
	CHECK(parse(&o, "-o allow_other,max_read=4096,ro /m") == 0 && o.max_read == 4096);
	CHECK(parse(&o, "-o max_read=4096 -o max_read=8192 /m") == 0 && o.max_read == 8192);
	CHECK(parse(&o, "-o max_read=4096,max_read=131072 /m") == 0 && o.max_read == 131072);
	CHECK(parse(&o, "-o max_read=4294967295 /m") == 0 && o.max_read == 4294967295u);
	CHECK(parse(&o, "-o allow_other /m") == 0 && o.max_read == 0);
	CHECK(parse(&o, "-o xmax_read=5 /m") == 0 && o.max_read == 0); /* another option */
	CHECK(parse(&o, "-o max_read= /m") == -EINVAL && strstr(o.err, "-o max_read"));
	CHECK(parse(&o, "-o max_read=64K /m") == -EINVAL && strstr(o.err, "'64K'"));
	CHECK(parse(&o, "-o ro,max_read=-1 /m") == -EINVAL && strstr(o.err, "'-1'"));
	CHECK(parse(&o, "-o max_read=4294967296 /m") == -EINVAL && strstr(o.err, "too large"));
	CHECK(parse(&o, "-o max_read=99999999999 /m") == -EINVAL);
}

int main(void)
{
	RUN(test_sizes);
	RUN(test_defaults);
	RUN(test_all_options);
	RUN(test_rejected);
	RUN(test_pool_permissions);
	RUN(test_cluster_options);
	RUN(test_tcp_congestion);
	RUN(test_ssd);
	RUN(test_ssd_last_colon);
	RUN(test_ssd_rejected);
	RUN(test_metrics);
	RUN(test_log_options);
	RUN(test_max_read);
	return check_summary();
}
