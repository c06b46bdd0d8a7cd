/* qemu_internal.h - what the qemu backend's two files share: qemu.c (QMP,
 * the migration stream) gives qemu_disk.c (the guest's disks, through
 * QEMU's NBD server) its QMP calls and a slot for its state. Private to
 * the qemu backend. */
#ifndef RMIG_QEMU_INTERNAL_H
#define RMIG_QEMU_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "rmig_backend.h"

struct qemu_disks;

/* qemu.c: run a QMP command (consumed, NULL allowed: -ENOMEM); *ret (if
 * wanted) gets its "return" value, owned by the caller. QEMU's "error" is
 * -EIO with its description in be->err. */
int rmig_qemu_qmp(struct rmig_backend *be, json_t *cmd, json_t **ret);
/* qemu.c: where the instance keeps qemu_disk.c's state (NULL: no disks=). */
struct qemu_disks **rmig_qemu_disks(struct rmig_backend *be);

/* qemu_disk.c: the disks= argument (both sides). */
int rmig_qemu_disk_arg(struct rmig_backend *be, const char *value);
/* qemu_disk.c: drop every export, the NBD server, rmig's dirty bitmaps and
 * its throttle; best effort, safe when QEMU is gone, and again and again.
 * The destination calls it before its QEMU runs the guest; the source at
 * destroy (and it could at the pause: see qemu_disk.c). */
void rmig_qemu_disk_release(struct rmig_backend *be);
/* qemu_disk.c: release, then free the state. */
void rmig_qemu_disk_destroy(struct rmig_backend *be);

/* qemu_disk.c: the backend's disk ops (include/rmig_backend.h). */
int rmig_qemu_get_disks(struct rmig_backend *be, const struct rmig_disk **disks, size_t *count);
int rmig_qemu_disk_start_dirty(struct rmig_backend *be);
int rmig_qemu_disk_fetch_dirty(struct rmig_backend *be, size_t index, uint64_t *bitmap);
int rmig_qemu_disk_read(struct rmig_backend *be, size_t index, uint64_t offset, void *buf,
			size_t len);
int rmig_qemu_disk_throttle(struct rmig_backend *be, uint64_t bytes_per_s);
int rmig_qemu_prepare_disks(struct rmig_backend *be, const struct rmig_disk *layout, size_t count);
int rmig_qemu_disk_write(struct rmig_backend *be, size_t index, uint64_t offset, const void *buf,
			 size_t len);
int rmig_qemu_disk_write_zeroes(struct rmig_backend *be, size_t index, uint64_t offset,
				uint64_t len);
int rmig_qemu_disk_flush(struct rmig_backend *be, size_t index);

#endif
