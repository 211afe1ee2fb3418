/*
 * inval: tells the kernel about names that vanished behind its back.
 *
 * Eviction and discarding happen inside the store, often while the kernel is in the middle
 * of an unrelated request; calling fuse_lowlevel_notify_inval_entry there could deadlock on
 * the kernel's directory locks. So the store only queues (parent, name) here, under its own
 * lock, and one thread sends the notifications with no lock held.
 */
#ifndef KVC_FS_INVAL_H
#define KVC_FS_INVAL_H

#include <stdint.h>

struct fuse_session;
struct inval;

int inval_create(struct inval **out);
/* Start sending to se's kernel connection (after the mount). */
int inval_start(struct inval *iv, struct fuse_session *se);
/* ns_vanish_fn: queue one name (copied). Never blocks; drops the name if out of memory,
 * which only leaves it to expire with the entry timeout. */
void inval_push(void *iv, uint64_t parent, const char *name);
/* Stop the thread (pending names are dropped) and free everything. */
void inval_destroy(struct inval *iv);

#endif
