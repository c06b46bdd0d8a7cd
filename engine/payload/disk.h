/* disk.h - the disk payload's two halves (disk_save.c on the source,
 * disk_load.c on the destination), joined in disk.c's ops table. Private
 * to engine/payload/. */
#ifndef RMIG_PAYLOAD_DISK_H
#define RMIG_PAYLOAD_DISK_H

#include "payload.h"

/* Blocks per queued item, and the bytes a sender reads at once. */
#define RMIG_DISK_ITEM_BYTES (1u << 20)

int rmig_disk_save_setup(struct rmig_payload *p);
int rmig_disk_save_handshake(struct rmig_payload *p);
int rmig_disk_save_start(struct rmig_payload *p);
int rmig_disk_save_round(struct rmig_payload *p, struct rmig_tx_pool *tx, unsigned round);
int rmig_disk_save_item(struct rmig_payload *p, struct rmig_tx_chan *c,
			const struct rmig_tx_item *it);
void rmig_disk_save_acked(struct rmig_payload *p);
void rmig_disk_save_rewind(struct rmig_payload *p);
int rmig_disk_save_pending(struct rmig_payload *p, struct rmig_pending *out);
int rmig_disk_save_hold(struct rmig_payload *p, uint64_t budget);
void rmig_disk_save_resend_all(struct rmig_payload *p);
int rmig_disk_save_complete(struct rmig_payload *p, struct rmig_msg *complete);
int rmig_disk_save_audit(struct rmig_payload *p);
void rmig_disk_save_cleanup(struct rmig_payload *p);

int rmig_disk_load_setup(struct rmig_payload *p, const struct rmig_wire_hello *hello);
int rmig_disk_load_frame(struct rmig_payload *p, struct rmig_rx_chan *c,
			 const struct rmig_frame_hdr *fh, char *why, size_t whylen);
int rmig_disk_load_message(struct rmig_payload *p, const struct rmig_msg *m);
void rmig_disk_load_round_done(struct rmig_payload *p);
void rmig_disk_load_rewind(struct rmig_payload *p, unsigned round);
int rmig_disk_load_complete(struct rmig_payload *p, const struct rmig_msg *m);
void rmig_disk_load_cleanup(struct rmig_payload *p);

/* Shared by both halves. */
/* The disks as the wire describes them; -EINVAL with ctx->err set if one
 * is not describable (block size, size, name). */
int rmig_disk_describe(struct rmig_ctx *ctx, const struct rmig_disk *d, size_t n,
		       struct rmig_disks *out);
/* XXH3-64 of the per-block digests: a disk's root. */
uint64_t rmig_disk_root(const uint64_t *digest, uint64_t nblocks);
/* The digest of one block's bytes, and of a zero block of len bytes. */
uint64_t rmig_disk_block_digest(const void *data, size_t len);
uint64_t rmig_disk_zero_digest(size_t len);

#endif
