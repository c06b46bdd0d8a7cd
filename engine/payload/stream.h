/* stream.h - the two halves of the stream payload (a hypervisor that
 * migrates itself): stream.c has the ops table and the destination,
 * stream_save.c the source. */
#ifndef RMIG_STREAM_H
#define RMIG_STREAM_H

#include "payload.h"

/* Source ops (stream_save.c). */
int rmig_stream_save_setup(struct rmig_payload *p);
int rmig_stream_save_live(struct rmig_payload *p, int64_t *t_pause);
int rmig_stream_save_complete(struct rmig_payload *p, struct rmig_msg *complete);
int rmig_stream_save_message(struct rmig_payload *p, const struct rmig_msg *m);
void rmig_stream_save_cleanup(struct rmig_payload *p);

#endif
