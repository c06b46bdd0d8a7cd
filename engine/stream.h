/* stream.h - carrying a hypervisor's own migration stream (backends with
 * stream_open, such as qemu). Not part of the public API. */
#ifndef RMIG_STREAM_H
#define RMIG_STREAM_H

#include <stdint.h>

#include "engine.h"

/* Source: start the backend's migration and forward its stream until the
 * hypervisor reports it completed. *t_pause is set when the hypervisor
 * paused the guest (the switch-over, which this function lets proceed);
 * *digest is the hash of every byte sent. 0 or a negative errno with
 * ctx->err set. */
int rmig_stream_send(struct rmig_ctx *ctx, int64_t *t_pause, uint64_t *digest);

/* Destination: where STREAM messages go. */
struct rmig_stream_sink {
	int fd; /* the backend's; it closes it */
	struct XXH3_state_s *hash;
	uint64_t bytes;
};

int rmig_stream_sink_open(struct rmig_ctx *ctx, struct rmig_stream_sink *sink);
/* Write all of data (waits while the hypervisor reads, up to a few link
 * timeouts), hashing it. */
int rmig_stream_sink_write(struct rmig_ctx *ctx, struct rmig_stream_sink *sink, const void *data,
			   size_t len);
uint64_t rmig_stream_sink_digest(const struct rmig_stream_sink *sink);
/* Free the hash; safe on a sink that was never opened (zeroed). */
void rmig_stream_sink_close(struct rmig_stream_sink *sink);

#endif
