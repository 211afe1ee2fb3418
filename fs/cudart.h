/*
 * cudart: the few CUDA runtime calls kvcachefs needs, resolved at run time with dlopen.
 *
 * Nothing in the project needs CUDA to build or run: without libcudart, or without a GPU,
 * cudart_load fails with -ENODEV and a reason, and every GPU feature reports ENODEV. Used by
 * the daemon (opening an engine's GPU buffer by IPC handle, copying blocks into it) and by
 * libkvcache (registering the pool mapping with the engine's own runtime).
 */
#ifndef KVC_FS_CUDART_H
#define KVC_FS_CUDART_H

#include <pthread.h>
#include <stddef.h>

/* cudaIpcMemHandle_t: 64 opaque bytes, passed by value. */
struct cudart_ipc_handle {
	char reserved[64];
};

struct cudart {
	pthread_mutex_t lock; /* guards loading */
	int state;	      /* 0 not tried, 1 loaded, -errno failed */
	char why[160];	      /* the reason when state < 0 */
	void *dl;
	int (*get_device_count)(int *count);
	int (*set_device)(int device);
	int (*ipc_open)(void **dev_ptr, struct cudart_ipc_handle handle, unsigned flags);
	int (*ipc_close)(void *dev_ptr);
	int (*memcpy)(void *dst, const void *src, size_t len, int kind);
	int (*host_register)(void *ptr, size_t len, unsigned flags);
	int (*host_unregister)(void *ptr);
	const char *(*error_string)(int err);
};

#define CUDART_MEMCPY_HOST_TO_DEVICE   1
#define CUDART_IPC_LAZY_PEER_ACCESS    1
#define CUDART_HOST_REGISTER_PORTABLE  0x1
#define CUDART_HOST_REGISTER_READ_ONLY 0x8

void cudart_init(struct cudart *c);
/* Load libcudart and check that a GPU exists (once; later calls return the first result).
 * 0, or -ENODEV with c->why saying what is missing. */
int cudart_load(struct cudart *c);
/* Map a CUDA error to an errno for callers (EIO for most; ENODEV for no device). */
int cudart_errno(int cuda_err);
void cudart_fini(struct cudart *c);

#endif
