/*
 * libkvcache: the client side of the side channel (see fs/uapi/kvcache.h).
 *
 * Each public call fills one ABI struct of fs/uapi/kvcachefs.h and hands it to one ioctl on
 * a directory descriptor; the daemon owns every decision. What the library adds: the pool
 * mapping (read-only unless the caller is a trusted writer), the checks that keep every
 * pointer it hands out inside the block asked for, the compact encoding of name lists, and
 * splitting lists too long for one request. Requests (up to 16 KiB) live on the caller's
 * stack: nothing is allocated per call except a reservation's staging buffer.
 */
#include "fs/uapi/kvcache.h"
#include "fs/cudart.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define KVC_API __attribute__((visibility("default")))

struct kvc {
	int root_fd; /* the mountpoint */
	int pool_fd;
	uint8_t *map; /* the whole pool object */
	size_t map_size;
	bool trusted;
	bool gpu_registered;
	struct kvcachefs_pool_info info;
	struct cudart cuda;
};

/* A directory stays allocated while blocks or reservations made through it exist, so that
 * releasing or aborting them after kvc_dir_close is harmless (the daemon already did it). */
struct kvc_dir {
	struct kvc *k;	   /* NULL for kvc_lookup_path's private directory */
	int fd;		   /* -1 once closed */
	_Atomic long refs; /* 1 for the open directory + 1 per live block or reservation */
};

static void dir_unref(struct kvc_dir *d, long n)
{
	if (n && atomic_fetch_sub(&d->refs, n) == n)
		free(d);
}

/* Does [off, off + len) lie in the pool mapping's data area? Every pointer the library hands
 * out is checked with it, whatever the daemon answered. */
static bool in_data_area(const struct kvc *k, uint64_t off, uint64_t len)
{
	return off >= k->info.data_offset && off <= k->map_size && len <= k->map_size - off;
}

/* One ioctl; -errno on failure. The argument's first field is always the ABI version. */
static int kvc_ioctl(int fd, unsigned long cmd, void *arg)
{
	*(uint32_t *)arg = KVCACHEFS_ABI_VERSION;
	return ioctl(fd, cmd, arg) < 0 ? -errno : 0;
}

KVC_API int kvc_open(const char *mountpoint, unsigned flags, struct kvc **out)
{
	struct kvc *k;
	struct stat st;
	int ret;

	if (flags & ~KVC_TRUSTED_WRITER)
		return -EINVAL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->pool_fd = -1;
	k->trusted = flags & KVC_TRUSTED_WRITER;
	cudart_init(&k->cuda);
	k->root_fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (k->root_fd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = kvc_ioctl(k->root_fd, KVCACHEFS_IOC_POOL_INFO, &k->info);
	if (ret)
		goto fail; /* ENOTTY: not kvcachefs; EPROTO: another ABI */
	if (!memchr(k->info.path, '\0', sizeof(k->info.path)) || k->info.pool_size == 0 ||
	    k->info.data_offset + k->info.capacity > k->info.pool_size) {
		ret = -EPROTO;
		goto fail;
	}
	k->pool_fd = open(k->info.path, (k->trusted ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
	if (k->pool_fd < 0) {
		ret = -errno;
		goto fail;
	}
	/* The path must lead to the daemon's object (another /dev/shm, in a container, would
	 * not). */
	if (fstat(k->pool_fd, &st) < 0 || (uint64_t)st.st_dev != k->info.pool_dev ||
	    (uint64_t)st.st_ino != k->info.pool_ino || (uint64_t)st.st_size < k->info.pool_size) {
		ret = -ESTALE;
		goto fail;
	}
	k->map_size = (size_t)k->info.pool_size;
	k->map = mmap(NULL, k->map_size, PROT_READ | (k->trusted ? PROT_WRITE : 0), MAP_SHARED,
		      k->pool_fd, 0);
	if (k->map == MAP_FAILED) {
		ret = -errno;
		k->map = NULL;
		goto fail;
	}
	*out = k;
	return 0;
fail:
	kvc_close(k);
	return ret;
}

KVC_API void kvc_close(struct kvc *k)
{
	if (!k)
		return;
	if (k->gpu_registered)
		(void)k->cuda.host_unregister(k->map);
	if (k->map)
		munmap(k->map, k->map_size);
	if (k->pool_fd >= 0)
		close(k->pool_fd);
	if (k->root_fd >= 0)
		close(k->root_fd);
	cudart_fini(&k->cuda);
	free(k);
}

KVC_API const struct kvcachefs_pool_info *kvc_pool_info(const struct kvc *k)
{
	return &k->info;
}

KVC_API const void *kvc_pool_base(const struct kvc *k, size_t *size)
{
	if (size)
		*size = k->map_size;
	return k->map;
}

KVC_API int kvc_dir_open(struct kvc *k, const char *path, struct kvc_dir **out)
{
	struct kvc_dir *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->k = k;
	atomic_init(&d->refs, 1);
	d->fd = openat(k->root_fd, path && *path ? path : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->fd < 0) {
		int ret = -errno;

		free(d);
		return ret;
	}
	*out = d;
	return 0;
}

KVC_API void kvc_dir_close(struct kvc_dir *d)
{
	if (!d)
		return;
	close(d->fd); /* the daemon releases the pins and reservations made through it */
	d->fd = -1;
	dir_unref(d, 1);
}

KVC_API int kvc_dir_fd(const struct kvc_dir *d)
{
	return d->fd;
}

/* ---- name lists -------------------------------------------------------------------------- */

static bool name_ok(const char *name, size_t *len)
{
	*len = strlen(name);
	return *len > 0 && *len <= KVC_NAME_MAX && !strchr(name, '/');
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Can every name be sent as 16 bytes: 32 lowercase hex digits and one common suffix? */
static bool names_hex(const char *const *names, size_t n, char *suffix)
{
	size_t slen;

	if (n == 0 || strlen(names[0]) < 32)
		return false;
	slen = strlen(names[0] + 32);
	if (slen >= KVCACHEFS_SUFFIX_MAX)
		return false;
	memcpy(suffix, names[0] + 32, slen + 1);
	for (size_t k = 0; k < n; k++) {
		if (strlen(names[k]) != 32 + slen || strcmp(names[k] + 32, suffix) != 0)
			return false;
		for (int j = 0; j < 32; j++)
			if (hexval(names[k][j]) < 0)
				return false;
	}
	return true;
}

static void hex_encode(const char *const *names, size_t n, uint8_t *out)
{
	for (size_t k = 0; k < n; k++)
		for (int j = 0; j < 16; j++)
			out[k * 16 + j] =
			    (uint8_t)(hexval(names[k][2 * j]) << 4 | hexval(names[k][2 * j + 1]));
}

/* Pack names[0..) as length-prefixed strings into out (cap bytes), at most max names.
 * Returns how many fit (at least 1 when n > 0), or -EINVAL for a bad name. */
static int pack_names(const char *const *names, size_t n, size_t max, uint8_t *out, size_t cap)
{
	size_t used = 0, k, len;

	for (k = 0; k < n && k < max; k++) {
		if (!name_ok(names[k], &len))
			return -EINVAL;
		if (used + 1 + len > cap)
			break;
		out[used] = (uint8_t)len;
		memcpy(out + used + 1, names[k], len);
		used += 1 + len;
	}
	return (int)k;
}

/* Encode up to max of names[0..n) into one request's name area (hex when they allow it, else
 * packed): sets *flags and suffix, returns how many went in (at least 1 when n > 0), or
 * -EINVAL for a bad name. */
static int encode_names(const char *const *names, size_t n, size_t max, uint32_t *flags,
			char *suffix, uint8_t *area, size_t cap)
{
	size_t chunk = n < max ? n : max;

	if (chunk * 16 <= cap && names_hex(names, chunk, suffix)) {
		*flags = KVCACHEFS_NAMES_HEX;
		hex_encode(names, chunk, area);
		return (int)chunk;
	}
	*flags = 0;
	suffix[0] = '\0';
	return pack_names(names, n, max, area, cap);
}

static int lookup_fd(int fd, const char *const *names, size_t n)
{
	struct kvcachefs_lookup lk;
	size_t done = 0, len;
	int ret;

	if (n > KVC_LOOKUP_MAX)
		return -E2BIG;
	for (size_t k = 0; k < n; k++)
		if (!name_ok(names[k], &len))
			return -EINVAL;
	if (n == 0)
		return 0;
	memset(&lk, 0, offsetof(struct kvcachefs_lookup, names));
	if (names_hex(names, n, lk.suffix)) {
		lk.flags = KVCACHEFS_NAMES_HEX;
		lk.count = (uint32_t)n;
		hex_encode(names, n, lk.names);
		ret = kvc_ioctl(fd, KVCACHEFS_IOC_LOOKUP, &lk);
		return ret ? ret : (int)lk.found;
	}
	/* Long names: as many requests as needed, stopping at the first miss. */
	while (done < n) {
		ret = pack_names(names + done, n - done, KVCACHEFS_LOOKUP_MAX, lk.names,
				 sizeof(lk.names));
		if (ret < 0)
			return ret;
		lk.flags = 0;
		lk.count = (uint32_t)ret;
		ret = kvc_ioctl(fd, KVCACHEFS_IOC_LOOKUP, &lk);
		if (ret)
			return ret;
		done += lk.found;
		if (lk.found < lk.count)
			break;
	}
	return (int)done;
}

KVC_API int kvc_lookup(struct kvc_dir *d, const char *const *names, size_t n)
{
	return lookup_fd(d->fd, names, n);
}

KVC_API int kvc_lookup_path(const char *dir, const char *const *names, size_t n)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = lookup_fd(fd, names, n);
	close(fd);
	return ret;
}

/* ---- pins -------------------------------------------------------------------------------- */

static int unpin_ids(int fd, const uint64_t *ids, size_t n)
{
	struct kvcachefs_unpin up;

	up.count = (uint32_t)n;
	memcpy(up.pins, ids, n * sizeof(ids[0]));
	return kvc_ioctl(fd, KVCACHEFS_IOC_UNPIN, &up);
}

KVC_API int kvc_get_batch(struct kvc_dir *d, const char *const *names, size_t n,
			  struct kvc_block *b, int *errs)
{
	struct kvcachefs_pin pn;
	size_t done = 0;
	int pinned = 0, ret;

	if (!d->k || d->fd < 0)
		return -EINVAL;
	memset(b, 0, n * sizeof(*b));
	while (done < n) {
		memset(&pn, 0, offsetof(struct kvcachefs_pin, names));
		ret = encode_names(names + done, n - done, KVCACHEFS_PIN_MAX, &pn.flags, pn.suffix,
				   pn.names, sizeof(pn.names));
		if (ret < 0)
			goto fail;
		pn.count = (uint32_t)ret;
		ret = kvc_ioctl(d->fd, KVCACHEFS_IOC_PIN, &pn);
		if (ret)
			goto fail;
		for (uint32_t k = 0; k < pn.count; k++) {
			const struct kvcachefs_pinned *r = &pn.out[k];
			struct kvc_block *blk = &b[done + k];

			if (errs)
				errs[done + k] = r->error;
			if (r->error)
				continue;
			/* Never hand out a pointer outside the mapping, whatever the reply. An
			 * empty block has no pages: its pointer is the start of the data area. */
			if (r->length != 0 && !in_data_area(d->k, r->offset, r->length)) {
				uint64_t pin = r->pin;

				(void)unpin_ids(d->fd, &pin, 1);
				if (errs)
					errs[done + k] = EPROTO;
				continue;
			}
			*blk = (struct kvc_block){
			    .data = d->k->map + (r->length ? r->offset : d->k->info.data_offset),
			    .len = (size_t)r->length,
			    .generation = r->generation,
			    .checksum = r->checksum,
			    .pin = r->pin,
			    .dir = d,
			};
			pinned++;
			atomic_fetch_add(&d->refs, 1);
		}
		done += pn.count;
	}
	return pinned;
fail:
	(void)kvc_release_batch(b, done);
	return ret;
}

/* Is the block at this payload offset still the sealed generation gen? (acquire: every read
 * of the payload before the call happens before the header reads) */
static bool block_unchanged(const struct kvc *k, uint64_t offset, uint64_t gen)
{
	const struct kvcachefs_block_header *h =
	    (const struct kvcachefs_block_header *)(k->map + k->info.header_offset) +
	    (offset - k->info.data_offset) / k->info.page_size;

	atomic_thread_fence(memory_order_acquire);
	return __atomic_load_n(&h->magic, __ATOMIC_RELAXED) == KVCACHEFS_HDR_MAGIC &&
	       (__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & KVCACHEFS_HDR_SEALED) &&
	       __atomic_load_n(&h->generation, __ATOMIC_RELAXED) == gen;
}

/* The slow path of kvc_load_batch: copy one block under a pin. */
static int load_pinned(struct kvc_dir *d, const char *name, void *dst, size_t cap, size_t *len)
{
	struct kvc_block b;
	int ret = kvc_get(d, name, &b);

	if (ret)
		return -ret;
	*len = b.len;
	if (b.len > cap)
		ret = ERANGE;
	else
		memcpy(dst, b.data, b.len);
	(void)kvc_release(&b);
	return ret;
}

KVC_API int kvc_load_batch(struct kvc_dir *d, const char *const *names, size_t n, void *const *dst,
			   const size_t *cap, size_t *len, int *errs)
{
	const struct kvc *k = d->k;
	struct kvcachefs_locate lc;
	size_t done = 0;
	int loaded = 0, ret;

	if (!k || d->fd < 0)
		return -EINVAL;
	while (done < n) {
		memset(&lc, 0, offsetof(struct kvcachefs_locate, names));
		ret = encode_names(names + done, n - done, KVCACHEFS_LOCATE_MAX, &lc.flags,
				   lc.suffix, lc.names, sizeof(lc.names));
		if (ret < 0)
			return ret;
		lc.count = (uint32_t)ret;
		ret = kvc_ioctl(d->fd, KVCACHEFS_IOC_LOCATE, &lc);
		if (ret)
			return ret;
		for (uint32_t j = 0; j < lc.count; j++) {
			const struct kvcachefs_located *r = &lc.out[j];
			size_t i = done + j;
			int err = lc.error[j];

			len[i] = err ? 0 : (size_t)r->length;
			if (!err && r->length > cap[i])
				err = ERANGE;
			else if (!err && r->length && !in_data_area(k, r->offset, r->length))
				err = EPROTO;
			else if (!err && r->length) {
				memcpy(dst[i], k->map + r->offset, (size_t)r->length);
				/* Freed or replaced meanwhile: the copy may be torn, redo it
				 * the safe way. */
				if (!block_unchanged(k, r->offset, r->generation))
					err = load_pinned(d, names[i], dst[i], cap[i], &len[i]);
			}
			if (errs)
				errs[i] = err;
			loaded += !err;
		}
		done += lc.count;
	}
	return loaded;
}

KVC_API int kvc_get(struct kvc_dir *d, const char *name, struct kvc_block *b)
{
	int err = 0, ret = kvc_get_batch(d, &name, 1, b, &err);

	if (ret < 0)
		return ret;
	return ret == 1 ? 0 : -err;
}

KVC_API int kvc_release(struct kvc_block *b)
{
	int ret;

	struct kvc_dir *d = b->dir;

	if (!b->pin || !d)
		return -EINVAL;
	/* After kvc_dir_close the daemon has already unpinned it. */
	ret = d->fd < 0 ? 0 : unpin_ids(d->fd, &b->pin, 1);
	if (ret)
		return ret;
	*b = (struct kvc_block){0};
	dir_unref(d, 1);
	return 0;
}

KVC_API int kvc_release_batch(struct kvc_block *b, size_t n)
{
	uint64_t ids[KVCACHEFS_UNPIN_MAX];
	size_t first = 0, k = 0, cnt = 0;
	struct kvc_dir *dir = NULL;
	int ret = 0, r;

	/* Consecutive blocks of one directory go in one request. */
	for (k = 0; k <= n; k++) {
		bool flush =
		    k == n || cnt == KVCACHEFS_UNPIN_MAX || (b[k].pin && dir && b[k].dir != dir);

		if (flush && cnt) {
			r = dir->fd < 0 ? 0 : unpin_ids(dir->fd, ids, cnt);
			if (r && !ret)
				ret = r;
			for (size_t j = first; j < k; j++)
				if (!r && b[j].pin && b[j].dir == dir)
					b[j] = (struct kvc_block){0};
			if (!r)
				dir_unref(dir, (long)cnt);
			cnt = 0;
			first = k;
		}
		if (k == n)
			break;
		if (!b[k].pin)
			continue;
		if (!cnt) {
			dir = b[k].dir;
			first = k;
		}
		ids[cnt++] = b[k].pin;
	}
	return ret;
}

/* ---- reservations ------------------------------------------------------------------------ */

KVC_API int kvc_reserve(struct kvc_dir *d, const char *name, size_t len, struct kvc_put *p)
{
	struct kvcachefs_reserve rv;
	size_t nlen;
	int ret;

	if (!d->k || d->fd < 0 || !name_ok(name, &nlen))
		return -EINVAL;
	memset(&rv, 0, sizeof(rv));
	rv.length = len;
	memcpy(rv.name, name, nlen + 1);
	ret = kvc_ioctl(d->fd, KVCACHEFS_IOC_RESERVE, &rv);
	if (ret)
		return ret;
	atomic_fetch_add(&d->refs, 1);
	*p = (struct kvc_put){.len = len, .id = rv.id, .dir = d, .inplace = d->k->trusted};
	if (len == 0)
		return 0;
	if (p->inplace) {
		if (!in_data_area(d->k, rv.offset, len)) {
			ret = -EPROTO;
			goto fail;
		}
		p->data = d->k->map + rv.offset;
		return 0;
	}
	p->data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->data == MAP_FAILED) {
		p->data = NULL;
		ret = -ENOMEM;
		goto fail;
	}
	return 0;
fail:
	(void)kvc_abort(p);
	return ret;
}

static void put_done(struct kvc_put *p)
{
	struct kvc_dir *d = p->dir;

	if (!p->inplace && p->data)
		munmap(p->data, p->len);
	*p = (struct kvc_put){0};
	dir_unref(d, 1);
}

static int commit(struct kvc_put *p, unsigned flags, const void *src, bool inplace)
{
	struct kvcachefs_commit cm;

	if (!p->id || !p->dir || (flags & ~KVC_NOREPLACE))
		return -EINVAL;
	memset(&cm, 0, sizeof(cm));
	cm.id = p->id;
	cm.flags = (flags & KVC_NOREPLACE ? KVCACHEFS_COMMIT_NOREPLACE : 0) |
		   (inplace ? KVCACHEFS_COMMIT_INPLACE : 0);
	cm.src_addr = (uint64_t)(uintptr_t)src;
	return kvc_ioctl(p->dir->fd, KVCACHEFS_IOC_COMMIT, &cm);
}

KVC_API int kvc_commit(struct kvc_put *p, unsigned flags)
{
	int ret;

	if (p->id && p->dir && p->dir->fd < 0) { /* kvc_dir_close aborted it */
		put_done(p);
		return -EBADF;
	}
	ret = commit(p, flags, p->data, p->inplace);

	if (!ret)
		put_done(p);
	return ret;
}

KVC_API int kvc_abort(struct kvc_put *p)
{
	struct kvcachefs_abort ab;
	int ret;

	if (!p->id || !p->dir)
		return -EINVAL;
	memset(&ab, 0, sizeof(ab));
	ab.id = p->id;
	ret = p->dir->fd < 0 ? 0 : kvc_ioctl(p->dir->fd, KVCACHEFS_IOC_ABORT, &ab);
	if (!ret)
		put_done(p);
	return ret;
}

KVC_API int kvc_put(struct kvc_dir *d, const char *name, const void *buf, size_t len,
		    unsigned flags)
{
	struct kvcachefs_reserve rv;
	struct kvc_put p;
	size_t nlen;
	int ret;

	if (!d->k || d->fd < 0 || !name_ok(name, &nlen) || (flags & ~KVC_NOREPLACE))
		return -EINVAL;
	memset(&rv, 0, sizeof(rv));
	rv.length = len;
	memcpy(rv.name, name, nlen + 1);
	ret = kvc_ioctl(d->fd, KVCACHEFS_IOC_RESERVE, &rv);
	if (ret)
		return ret;
	atomic_fetch_add(&d->refs, 1);
	p = (struct kvc_put){.len = len, .id = rv.id, .dir = d};
	/* The daemon copies from buf: the one copy, with no staging buffer. */
	ret = commit(&p, flags, buf, false);
	if (ret)
		(void)kvc_abort(&p);
	else
		put_done(&p);
	return ret;
}

/* ---- GPU --------------------------------------------------------------------------------- */

KVC_API int kvc_gpu_register_pool(struct kvc *k)
{
	int ret = cudart_load(&k->cuda), err;

	if (ret)
		return ret;
	if (k->gpu_registered)
		return 0;
	err = k->cuda.host_register(k->map, k->map_size,
				    CUDART_HOST_REGISTER_PORTABLE |
					(k->trusted ? 0 : CUDART_HOST_REGISTER_READ_ONLY));
	if (err)
		return cudart_errno(err);
	k->gpu_registered = true;
	return 0;
}

KVC_API int kvc_gpu_register(struct kvc_dir *d, const void *ipc_handle, uint64_t size, int device,
			     uint64_t *id)
{
	struct kvcachefs_gpu_register g;
	int ret;

	if (device < 0 || size == 0)
		return -EINVAL;
	memset(&g, 0, sizeof(g));
	g.device = (uint32_t)device;
	g.size = size;
	memcpy(g.handle, ipc_handle, sizeof(g.handle));
	ret = kvc_ioctl(d->fd, KVCACHEFS_IOC_GPU_REGISTER, &g);
	if (!ret)
		*id = g.id;
	return ret;
}

KVC_API int kvc_gpu_load(struct kvc_dir *d, uint64_t id, const struct kvc_block *blocks,
			 const uint64_t *offsets, size_t n)
{
	struct kvcachefs_gpu_load gl;
	int ret = 0;

	for (size_t done = 0; done < n && !ret;) {
		memset(&gl, 0, sizeof(gl));
		gl.id = id;
		for (gl.count = 0; gl.count < KVCACHEFS_GPU_LOAD_MAX && done < n;
		     gl.count++, done++) {
			if (!blocks[done].pin || blocks[done].dir != d)
				return -EINVAL;
			gl.ent[gl.count].pin = blocks[done].pin;
			gl.ent[gl.count].offset = offsets[done];
		}
		ret = kvc_ioctl(d->fd, KVCACHEFS_IOC_GPU_LOAD, &gl);
	}
	return ret;
}

KVC_API int kvc_gpu_unregister(struct kvc_dir *d, uint64_t id)
{
	struct kvcachefs_gpu_unregister gu;

	memset(&gu, 0, sizeof(gu));
	gu.id = id;
	return kvc_ioctl(d->fd, KVCACHEFS_IOC_GPU_UNREGISTER, &gu);
}
