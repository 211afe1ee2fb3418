/*
 * pool: the node's DRAM segment (see pool.h for the layout).
 *
 * The object is a file on a shared-memory filesystem (/dev/shm by default) so that the same
 * pages can be mapped by the daemon, by clients and by RDMA/CUDA registration. It is
 * fallocate()d whole at creation: tmpfs then owns the pages and a write through the mapping
 * can never SIGBUS later because the shared-memory filesystem filled up. An exclusive flock
 * on the file marks it as owned by one live daemon.
 */
#include "engine/pool.h"
#include "engine/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Split size into superblock + header table + data pages: each data page needs
 * POOL_PAGE_SIZE bytes plus a 64-byte header, the table rounded up to whole pages. */
static uint64_t pool_layout(uint64_t size, uint64_t *hdr_off, uint64_t *data_off)
{
	uint64_t avail = size / POOL_PAGE_SIZE * POOL_PAGE_SIZE - POOL_PAGE_SIZE;
	uint64_t n = avail / (POOL_PAGE_SIZE + sizeof(struct pool_hdr));
	uint64_t hdr_bytes;

	for (;; n--) {
		hdr_bytes = pool_pages_for(n * sizeof(struct pool_hdr)) * POOL_PAGE_SIZE;
		if (hdr_bytes + n * POOL_PAGE_SIZE <= avail)
			break;
	}
	*hdr_off = POOL_PAGE_SIZE;
	*data_off = POOL_PAGE_SIZE + hdr_bytes;
	return n;
}

/* The superblock of an object of this format at fd, or false. */
static bool read_super(int fd, struct pool_super *sb)
{
	struct stat st;

	if (fstat(fd, &st) < 0 || st.st_size < (off_t)POOL_PAGE_SIZE ||
	    pread(fd, sb, sizeof(*sb), 0) != (ssize_t)sizeof(*sb))
		return false;
	return sb->magic == POOL_SUPER_MAGIC && sb->format == POOL_FORMAT &&
	       sb->page_size == POOL_PAGE_SIZE && sb->size == (uint64_t)st.st_size && sb->npages &&
	       sb->npages < (1ull << 32) && sb->hdr_off == POOL_PAGE_SIZE &&
	       sb->data_off >= sb->hdr_off + sb->npages * sizeof(struct pool_hdr) &&
	       sb->data_off + sb->npages * POOL_PAGE_SIZE == sb->size;
}

/* How many of the n headers at h are sealed, counting up to max. */
static uint64_t sealed_headers(const struct pool_hdr *h, uint64_t n, uint64_t max)
{
	uint64_t found = 0;

	for (uint64_t i = 0; i < n && found < max; i++)
		found += h[i].magic == POOL_HDR_MAGIC && (h[i].flags & POOL_HDR_SEALED);
	return found;
}

/* Does the object described by sb (at fd) hold a sealed header? */
static bool holds_blocks(int fd, const struct pool_super *sb)
{
	size_t len = sb->npages * sizeof(struct pool_hdr);
	void *m = mmap(NULL, sb->hdr_off + len, PROT_READ, MAP_SHARED, fd, 0);
	bool found;

	if (m == MAP_FAILED)
		return true; /* cannot tell: keep it */
	found = sealed_headers((const struct pool_hdr *)((const uint8_t *)m + sb->hdr_off),
			       sb->npages, 1) > 0;
	munmap(m, sb->hdr_off + len);
	return found;
}

int pool_open(struct pool **out, const char *path, uint64_t size, unsigned mode, bool fresh,
	      uint64_t *old_size)
{
	struct pool *p;
	struct pool_super *sb, old;
	uint64_t hdr_off, data_off;
	bool keep = false, created = false;
	int ret;

	if (size < 16 * POOL_PAGE_SIZE)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->fd = -1;
	p->path = strdup(path);
	if (!p->path) {
		ret = -ENOMEM;
		goto out_free;
	}
	p->npages = pool_layout(size, &hdr_off, &data_off);
	p->size = data_off + p->npages * POOL_PAGE_SIZE;
	if (p->npages == 0 || p->npages >= (1ull << 32)) {
		ret = -EINVAL;
		goto out_free;
	}

	p->fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (p->fd < 0 && errno == ENOENT) {
		p->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
		created = true;
	}
	if (p->fd < 0) {
		ret = -errno;
		goto out_free;
	}
	if (flock(p->fd, LOCK_EX | LOCK_NB) < 0) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto out_close;
	}
	if (!fresh && !created && read_super(p->fd, &old)) {
		if (old.asked == size && old.size == p->size && old.npages == p->npages &&
		    old.data_off == data_off)
			keep = true;
		else if (holds_blocks(p->fd, &old)) {
			*old_size = old.asked;
			ret = -EEXIST;
			goto out_close;
		}
	}
	if (!keep) {
		/* Nothing worth keeping: start from a clean object. */
		if (ftruncate(p->fd, 0) < 0 || fchmod(p->fd, mode) < 0) {
			ret = -errno;
			goto out_unlink;
		}
		ret = posix_fallocate(p->fd, 0, (off_t)p->size);
		if (ret) {
			ret = ret == ENOSPC ? -ENOSPC : -ret;
			goto out_unlink;
		}
	}
	p->base = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->fd, 0);
	if (p->base == MAP_FAILED) {
		ret = -errno;
		p->base = NULL;
		goto out_unlink;
	}
	(void)madvise(p->base, p->size, MADV_HUGEPAGE); /* best effort: THP for shmem */
	p->hdrs = (struct pool_hdr *)(p->base + hdr_off);
	p->data = p->base + data_off;
	p->alloc = alloc_create(p->npages);
	if (!p->alloc) {
		ret = -ENOMEM;
		goto out_unmap;
	}
	p->reopened = keep;
	sb = (struct pool_super *)p->base;
	*sb = (struct pool_super){
	    .magic = POOL_SUPER_MAGIC,
	    .format = POOL_FORMAT,
	    .page_size = POOL_PAGE_SIZE,
	    .size = p->size,
	    .npages = p->npages,
	    .hdr_off = hdr_off,
	    .data_off = data_off,
	    .asked = size,
	};
	*out = p;
	return 0;

out_unmap:
	munmap(p->base, p->size);
out_unlink:
	if (!keep) /* never the blocks of an earlier daemon */
		unlink(path);
out_close:
	close(p->fd);
out_free:
	free(p->path);
	free(p);
	return ret;
}

int pool_create(struct pool **out, const char *path, uint64_t size, unsigned mode)
{
	uint64_t unused;

	return pool_open(out, path, size, mode, true, &unused);
}

uint64_t pool_sealed_pages(const struct pool *p)
{
	return sealed_headers(p->hdrs, p->npages, UINT64_MAX);
}

int pool_claim(struct pool *p, uint64_t page, uint64_t n)
{
	return alloc_claim_tail(p->alloc, page, n);
}

void pool_destroy(struct pool *p, bool remove_file)
{
	if (!p)
		return;
	alloc_destroy(p->alloc);
	munmap(p->base, p->size);
	if (remove_file)
		unlink(p->path);
	close(p->fd);
	free(p->path);
	free(p);
}

int64_t pool_alloc(struct pool *p, uint64_t npages)
{
	return alloc_get(p->alloc, npages);
}

int pool_extend(struct pool *p, uint64_t page, uint64_t old_n, uint64_t new_n)
{
	return alloc_extend(p->alloc, page, old_n, new_n);
}

void pool_shrink(struct pool *p, uint64_t page, uint64_t old_n, uint64_t new_n)
{
	alloc_shrink(p->alloc, page, old_n, new_n);
	pool_hdr(p, page)->npages = (uint32_t)new_n;
}

void pool_free(struct pool *p, uint64_t page, uint64_t npages)
{
	memset(pool_hdr(p, page), 0, sizeof(struct pool_hdr));
	alloc_put(p->alloc, page, npages);
}

uint64_t pool_used_pages(const struct pool *p)
{
	return alloc_total_pages(p->alloc) - alloc_free_pages(p->alloc);
}
