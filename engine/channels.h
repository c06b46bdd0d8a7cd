/* channels.h - the threads behind the data channels: one sender per channel
 * on the source, one receiver per channel on the destination.
 *
 * They carry whatever the payloads hand them and know nothing of pages or
 * blocks: a sender takes items from its NUMA group's queue and asks the
 * item's payload to send it (save_item); a receiver reads each frame's
 * header, checks its sequence and asks the payload that owns the frame type
 * to take the rest (load_frame). Frames are counted here, per channel and
 * round, for the round barrier (ROUND_END / ROUND_ACK) of the session.
 */
#ifndef RMIG_CHANNELS_H
#define RMIG_CHANNELS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include "engine.h"

struct rmig_payload;
struct rmig_payload_set;

/* The size of a channel's scratch buffer, whichever payload allocates it
 * (payloads of one migration share it). */
#define RMIG_CHAN_SCRATCH RMIG_MAX_PAGE_SIZE
struct rmig_tx_pool;
struct rmig_rx_pool;

/* Units [first, first+span) of a payload's area whose bit is set in map;
 * map stays unchanged until the senders are idle again. */
struct rmig_tx_item {
	struct rmig_payload *p;
	uint32_t area;
	uint64_t first, span;
	const uint64_t *map;
};

/* One channel's sending side, used by its thread only. */
struct rmig_tx_chan {
	struct rmig_tx_pool *pool;
	struct rmig_ctx *ctx;
	unsigned chan;
	unsigned group; /* the queue (NUMA node group) this channel serves */
	pthread_t tid;
	int started;
	uint64_t seq;
	/* This round's figures; read by the control thread only when idle. */
	uint64_t frames, pages, zero_pages, bytes;
	void *scratch; /* a payload's buffer of RMIG_CHAN_SCRATCH bytes, freed with free() */
	uint8_t hdr[RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS];
};

/* Source: start ctx->nchan sender threads. */
int rmig_tx_create(struct rmig_ctx *ctx, struct rmig_tx_pool **out);
void rmig_tx_destroy(struct rmig_tx_pool *tx);
/* Queue an item for the channels of NUMA group `group` (blocks while the
 * queue is full). -EIO once a sender failed. */
int rmig_tx_push(struct rmig_tx_pool *tx, unsigned group, const struct rmig_tx_item *it);
/* Wait until every queued item is sent (or dropped after a failure). Then
 * 0, or -EIO with the failure in ctx->err. */
int rmig_tx_wait(struct rmig_tx_pool *tx);
/* The same, leaving ctx->err alone: another error is being reported. */
void rmig_tx_idle(struct rmig_tx_pool *tx);
void rmig_tx_fail(struct rmig_tx_pool *tx, const char *why);
/* A failure of this host, not of the link (a disk that cannot be read):
 * rmig_tx_wait then returns RMIG_ERR_LOCAL, and no failover is tried. */
void rmig_tx_fail_local(struct rmig_tx_pool *tx, const char *why);
int rmig_tx_failed(struct rmig_tx_pool *tx);
const char *rmig_tx_failure(struct rmig_tx_pool *tx);
/* A new round: zero the figures. */
void rmig_tx_new_round(struct rmig_tx_pool *tx);
/* The senders are idle: the round's figures so far (pages, zero_pages,
 * bytes: what went out, whether or not the round ends) into rs. */
void rmig_tx_round_figures(struct rmig_tx_pool *tx, struct rmig_round_stats *rs);
/* The senders are idle: the round's figures into rs, and the round
 * described in m (ROUND_END). */
void rmig_tx_round_end(struct rmig_tx_pool *tx, struct rmig_round_stats *rs, struct rmig_msg *m);
/* A new link carries on (failover): forget the failure, sequences from 0. */
void rmig_tx_restart(struct rmig_tx_pool *tx);

/* On a sender thread: config.max_bandwidth's pacing for `bytes`. 0 when
 * they may go; -ECANCELED when the channels are being stopped meanwhile
 * (cancel, another sender's failure, failover): then they must not. */
int rmig_tx_rate_limit(struct rmig_tx_chan *c, size_t bytes);
/* The pacing, then one frame (header + sub-header in c->hdr, data),
 * counted in the round's figures. */
int rmig_tx_send_frame(struct rmig_tx_chan *c, uint8_t type, size_t sublen, struct iovec *data,
		       int ndata);

/* One channel's receiving side, used by its thread only. */
struct rmig_rx_chan {
	struct rmig_rx_pool *pool;
	struct rmig_ctx *ctx;
	unsigned chan;
	int node; /* NUMA node whose memory this channel moves, -1: any */
	pthread_t tid;
	int started;
	uint64_t seq;
	void *scratch; /* a payload's buffer of RMIG_CHAN_SCRATCH bytes, freed with free() */
};

/* Destination: frames go to the payloads of the set (borrowed) by frame type. */
int rmig_rx_create(struct rmig_ctx *ctx, struct rmig_payload_set *payloads,
		   struct rmig_rx_pool **out);
void rmig_rx_destroy(struct rmig_rx_pool *rx);
int rmig_rx_start(struct rmig_rx_pool *rx, const int *nodes);
/* Stop and join the receivers; a partly received round is forgotten. How
 * many of its frames had arrived (0: none, or it was complete). */
uint64_t rmig_rx_stop(struct rmig_rx_pool *rx);
int rmig_rx_stopping(struct rmig_rx_pool *rx);
/* Wait until every channel applied the frames ROUND_END (m) counts. */
int rmig_rx_wait_round(struct rmig_rx_pool *rx, const struct rmig_msg *m);
/* The first receiver failure (negative errno, why), 0 if none. */
int rmig_rx_failed(struct rmig_rx_pool *rx, char *why, size_t whylen);

#endif
