/* memory.h - the guest-memory payload's two halves (memory_save.c on the
 * source, memory_load.c on the destination), joined in memory.c's ops
 * table. Private to engine/payload/. */
#ifndef RMIG_PAYLOAD_MEMORY_H
#define RMIG_PAYLOAD_MEMORY_H

#include "payload.h"

int rmig_mem_save_setup(struct rmig_payload *p);
int rmig_mem_save_start(struct rmig_payload *p);
int rmig_mem_save_round(struct rmig_payload *p, struct rmig_tx_pool *tx, unsigned round);
int rmig_mem_save_item(struct rmig_payload *p, struct rmig_tx_chan *c,
		       const struct rmig_tx_item *it);
void rmig_mem_save_acked(struct rmig_payload *p);
void rmig_mem_save_rewind(struct rmig_payload *p);
int rmig_mem_save_pending(struct rmig_payload *p, struct rmig_pending *out);
void rmig_mem_save_resend_all(struct rmig_payload *p);
int rmig_mem_save_pause(struct rmig_payload *p);
int rmig_mem_save_complete(struct rmig_payload *p, struct rmig_msg *complete);
int rmig_mem_save_announce(struct rmig_payload *p, uint64_t *count);
int rmig_mem_save_message(struct rmig_payload *p, const struct rmig_msg *m);
void rmig_mem_save_cleanup(struct rmig_payload *p);
int rmig_mem_save_audit(struct rmig_payload *p);

int rmig_mem_load_setup(struct rmig_payload *p, const struct rmig_wire_hello *hello);
int rmig_mem_load_frame(struct rmig_payload *p, struct rmig_rx_chan *c,
			const struct rmig_frame_hdr *fh, char *why, size_t whylen);
int rmig_mem_load_message(struct rmig_payload *p, const struct rmig_msg *m);
void rmig_mem_load_round_done(struct rmig_payload *p);
void rmig_mem_load_rewind(struct rmig_payload *p, unsigned round);
int rmig_mem_load_complete(struct rmig_payload *p, const struct rmig_msg *m);
void rmig_mem_load_remote(struct rmig_payload *p, struct rmig_pending_remote *out);
int rmig_mem_load_failed(struct rmig_payload *p, char *why, size_t whylen);
void rmig_mem_load_postcopy_end(struct rmig_payload *p);
void rmig_mem_load_suspend(struct rmig_payload *p);
int rmig_mem_load_resume(struct rmig_payload *p);
void rmig_mem_load_cleanup(struct rmig_payload *p);

#endif
