/* listener.h - the destination's door (listener.c): it listens, runs every
 * incoming connection's opening on its own thread under one deadline, and
 * hands each connection that proved itself to its session.
 *
 * A session (one rmig_recv on one context) takes a new migration from the
 * listener, then its data channels, and after a lost link its resumption or
 * the source's outcome question: only connections that the listener has
 * authenticated (HELLO + AUTH) or matched by the session's key-derived token
 * (data channels) ever reach it.
 */
#ifndef RMIG_LISTENER_H
#define RMIG_LISTENER_H

#include <stdint.h>

#include "engine.h"

/* What a completed opening hands its session: the connection, the
 * source's HELLO, and the state of the exchange so far. */
struct rmig_opening {
	struct rmig_link *conn; /* its control stream (the session owns it) */
	struct rmig_wire_hello hello;
	uint8_t nonce[RMIG_NONCE_LEN];
	uint8_t peer_nonce[RMIG_NONCE_LEN];
	uint8_t token[RMIG_NONCE_LEN];
	uint64_t tx_seq, rx_seq;
};

/* A migration as the listener knows it: its channels and reopenings wait
 * here until the session takes them. */
struct rmig_listener_slot;

/* Bound (listening on every link of cfg.transport) or an error in err. */
int rmig_listener_open(struct rmig_listener **out, const struct rmig_config *cfg, char *err,
		       size_t errlen);

/* The session's side. Each waits in slices, returning -ECANCELED once
 * ctx is cancelled, -ETIMEDOUT past its time, with ctx->err set. */

/* The next new migration: its slot, and the opening (ownership passes). */
int rmig_listener_take_new(struct rmig_listener *lst, struct rmig_ctx *ctx, int timeout_ms,
			   struct rmig_listener_slot **slot, struct rmig_opening *o);
/* The same migration opened again (a resume or the outcome question),
 * until end_ms. */
int rmig_listener_take_again(struct rmig_listener *lst, struct rmig_listener_slot *slot,
			     struct rmig_ctx *ctx, int64_t end_ms, struct rmig_opening *o);
/* The session is about to close the connection it serves: from here no
 * resumption interrupts it. */
void rmig_listener_release(struct rmig_listener *lst, struct rmig_listener_slot *slot);
/* 1 once if the source reopened the migration while the session was still
 * on its previous connection: the listener interrupted that connection
 * (its ops return -ECANCELED), and the reopening waits in take_again. */
int rmig_listener_superseded(struct rmig_listener *lst, struct rmig_listener_slot *slot);
/* The opening's n data channels, adopted into ctx->link; nodes[i]: the
 * NUMA node channel i serves. */
int rmig_listener_take_channels(struct rmig_listener *lst, struct rmig_listener_slot *slot,
				struct rmig_ctx *ctx, unsigned n, int *nodes, int timeout_ms);
/* The session is over: whatever still waits for it is closed. */
void rmig_listener_leave(struct rmig_listener *lst, struct rmig_listener_slot *slot);

#endif
