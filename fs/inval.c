/*
 * inval: the queue of kernel dentry invalidations (see inval.h).
 *
 * A singly-linked FIFO of (parent, name) records guarded by a mutex and a condition variable;
 * one thread drains it. Records are allocated by the producer and freed by the consumer.
 */
#include "fs/inval.h"
#include "fs/fuse_conf.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct inval_rec {
	struct inval_rec *next;
	uint64_t parent;
	size_t len;
	char name[];
};

struct inval {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct inval_rec *head, *tail; /* under lock */
	bool stop, started;
	struct fuse_session *se;
	pthread_t thread;
};

int inval_create(struct inval **out)
{
	struct inval *iv = calloc(1, sizeof(*iv));

	if (!iv)
		return -ENOMEM;
	pthread_mutex_init(&iv->lock, NULL);
	pthread_cond_init(&iv->cond, NULL);
	*out = iv;
	return 0;
}

void inval_push(void *arg, uint64_t parent, const char *name)
{
	struct inval *iv = arg;
	size_t len = strlen(name);
	struct inval_rec *r = malloc(sizeof(*r) + len + 1);

	if (!r)
		return;
	r->next = NULL;
	r->parent = parent;
	r->len = len;
	memcpy(r->name, name, len + 1);
	pthread_mutex_lock(&iv->lock);
	if (iv->tail)
		iv->tail->next = r;
	else
		iv->head = r;
	iv->tail = r;
	pthread_cond_signal(&iv->cond);
	pthread_mutex_unlock(&iv->lock);
}

static void *inval_main(void *arg)
{
	struct inval *iv = arg;
	struct inval_rec *r;

	pthread_mutex_lock(&iv->lock);
	while (!iv->stop) {
		r = iv->head;
		if (!r) {
			pthread_cond_wait(&iv->cond, &iv->lock);
			continue;
		}
		iv->head = r->next;
		if (!iv->head)
			iv->tail = NULL;
		pthread_mutex_unlock(&iv->lock);
		/* -ENOENT only means the kernel had nothing cached. */
		(void)fuse_lowlevel_notify_inval_entry(iv->se, r->parent, r->name, r->len);
		free(r);
		pthread_mutex_lock(&iv->lock);
	}
	pthread_mutex_unlock(&iv->lock);
	return NULL;
}

int inval_start(struct inval *iv, struct fuse_session *se)
{
	int ret;

	iv->se = se;
	ret = pthread_create(&iv->thread, NULL, inval_main, iv);
	if (ret)
		return -ret;
	iv->started = true;
	return 0;
}

void inval_destroy(struct inval *iv)
{
	struct inval_rec *r;

	if (!iv)
		return;
	pthread_mutex_lock(&iv->lock);
	iv->stop = true;
	pthread_cond_signal(&iv->cond);
	pthread_mutex_unlock(&iv->lock);
	if (iv->started)
		pthread_join(iv->thread, NULL);
	while ((r = iv->head)) {
		iv->head = r->next;
		free(r);
	}
	pthread_cond_destroy(&iv->cond);
	pthread_mutex_destroy(&iv->lock);
	free(iv);
}
