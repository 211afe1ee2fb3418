/*
 * cudart: the CUDA runtime, loaded on first use with dlopen (see cudart.h).
 *
 * The library names are tried in order: the unversioned development link, then the sonames
 * of the CUDA 12 and 11 runtimes. A runtime that loads but reports no device counts as no GPU.
 */
#include "fs/cudart.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* cudaError_t values that mean "no GPU here" rather than a failure. */
#define CUDA_ERROR_NO_DEVICE	    100
#define CUDA_ERROR_INSUFFICIENT_DRV 35

static const char *const cudart_names[] = {"libcudart.so", "libcudart.so.12", "libcudart.so.11.0"};

void cudart_init(struct cudart *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
}

static int resolve(struct cudart *c)
{
	struct {
		void **slot;
		const char *sym;
	} syms[] = {
	    {(void **)&c->get_device_count, "cudaGetDeviceCount"},
	    {(void **)&c->set_device, "cudaSetDevice"},
	    {(void **)&c->ipc_open, "cudaIpcOpenMemHandle"},
	    {(void **)&c->ipc_close, "cudaIpcCloseMemHandle"},
	    {(void **)&c->memcpy, "cudaMemcpy"},
	    {(void **)&c->host_register, "cudaHostRegister"},
	    {(void **)&c->host_unregister, "cudaHostUnregister"},
	    {(void **)&c->error_string, "cudaGetErrorString"},
	};

	for (size_t k = 0; k < sizeof(syms) / sizeof(syms[0]); k++) {
		*syms[k].slot = dlsym(c->dl, syms[k].sym);
		if (!*syms[k].slot) {
			snprintf(c->why, sizeof(c->why), "the CUDA runtime lacks %s", syms[k].sym);
			return -ENODEV;
		}
	}
	return 0;
}

static int load_locked(struct cudart *c)
{
	int count = 0, err;

	for (size_t k = 0; !c->dl && k < sizeof(cudart_names) / sizeof(cudart_names[0]); k++)
		c->dl = dlopen(cudart_names[k], RTLD_NOW | RTLD_LOCAL);
	if (!c->dl) {
		snprintf(c->why, sizeof(c->why), "no CUDA runtime (libcudart.so) on this machine");
		return -ENODEV;
	}
	if (resolve(c))
		return -ENODEV;
	err = c->get_device_count(&count);
	if (err || count == 0) {
		snprintf(c->why, sizeof(c->why), "no CUDA GPU on this machine (%s)",
			 err ? c->error_string(err) : "0 devices");
		return -ENODEV;
	}
	return 0;
}

int cudart_load(struct cudart *c)
{
	pthread_mutex_lock(&c->lock);
	if (c->state == 0) {
		c->state = load_locked(c);
		if (c->state == 0)
			c->state = 1;
	}
	pthread_mutex_unlock(&c->lock);
	return c->state == 1 ? 0 : c->state;
}

int cudart_errno(int cuda_err)
{
	if (cuda_err == CUDA_ERROR_NO_DEVICE || cuda_err == CUDA_ERROR_INSUFFICIENT_DRV)
		return -ENODEV;
	if (cuda_err == 2) /* cudaErrorMemoryAllocation */
		return -ENOMEM;
	if (cuda_err == 1) /* cudaErrorInvalidValue */
		return -EINVAL;
	return -EIO;
}

void cudart_fini(struct cudart *c)
{
	if (c->dl)
		dlclose(c->dl);
	pthread_mutex_destroy(&c->lock);
	memset(c, 0, sizeof(*c));
}
