/* payload.h - what a migration moves: one kind of state per handler, in the
 * spirit of QEMU's SaveVMHandlers.
 *
 * The session layer (engine/session/) owns the connection, the phases, the
 * round barrier, convergence and the commit; it calls each payload of the
 * migration at fixed points and never looks inside. A payload moves one
 * kind of state: guest memory by pre-copy (memory.c, with post-copy as its
 * switch-over variant), a hypervisor's own migration stream (stream.c).
 * Adding one is a new file here plus a line in registry.c.
 *
 * Every op returns 0 or a negative errno with ctx->err set, and is called
 * on the session's thread unless it says otherwise. Ops a payload does not
 * need are NULL. The table starts with its size, as every ops table here.
 */
#ifndef RMIG_PAYLOAD_H
#define RMIG_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

struct rmig_payload;
struct rmig_tx_pool;
struct rmig_tx_chan;
struct rmig_tx_item;
struct rmig_rx_chan;

/* What a payload still has to send, as save_pending found it. */
struct rmig_pending {
	uint64_t bytes; /* to send at the switch-over if it were now */
	uint64_t units; /* pages or blocks: the dirty rate counts these */
	/* Memory the destination would have to back (zero-fill) to take those
	 * bytes, beyond the bytes themselves: pages landing in its memory that
	 * was never written cost its kernel a whole huge page each. */
	uint64_t landing_bytes;
};

/* Post-copy's state at the destination (memory only, today). */
struct rmig_pending_remote {
	uint64_t stale;	      /* units announced as still at the source */
	uint64_t missing;     /* of those, not here yet */
	uint64_t requested;   /* fetched on demand */
	uint64_t max_wait_ms; /* the longest a guest thread waited for one */
};

#define RMIG_PAYLOAD_MAX 8

struct rmig_payload_ops {
	size_t size; /* sizeof(struct rmig_payload_ops) as the payload was built */
	const char *name;
	/* Does this migration carry this payload? From the backend (source)
	 * or the layout the source sent (destination). */
	int (*wanted)(struct rmig_ctx *ctx);
	uint32_t frame_types; /* bit t: data-channel frames of type t are its */
	uint32_t msg_types;   /* bit t: control messages of type t are its */

	/* ---- source ---- */
	/* Before connecting: check the configuration, allocate. */
	int (*save_setup)(struct rmig_payload *p);
	/* Connected: start tracking changes; the first round is everything. */
	int (*save_start)(struct rmig_payload *p);
	/* The hypervisor migrates itself: run it until it paused the guest
	 * and the stream ended (*t_pause: when it paused). Such a payload has
	 * no rounds of ours. */
	int (*save_live)(struct rmig_payload *p, int64_t *t_pause);
	/* Queue this round's data on the senders. */
	int (*save_round)(struct rmig_payload *p, struct rmig_tx_pool *tx, unsigned round);
	/* On a sender thread: send one queued item on channel c. */
	int (*save_item)(struct rmig_payload *p, struct rmig_tx_chan *c,
			 const struct rmig_tx_item *it);
	/* The destination holds the round: forget what it sent. */
	void (*save_acked)(struct rmig_payload *p);
	/* The round was lost with the link: send it again next round. */
	void (*save_rewind)(struct rmig_payload *p);
	/* Collect what changed since the last call. */
	int (*save_pending)(struct rmig_payload *p, struct rmig_pending *out);
	/* rmig bench: everything again next round. */
	void (*save_resend_all)(struct rmig_payload *p);
	/* Guest paused, before the last round (e.g. start the digests). */
	int (*save_pause)(struct rmig_payload *p);
	/* After the device state: this payload's part of COMPLETE. */
	int (*save_complete)(struct rmig_payload *p, struct rmig_msg *complete);
	/* Post-copy: announce what is still here (DISCARD) and is to come
	 * after the start; *count: how many new. Then, after STARTED, the
	 * announced data goes by save_round. */
	int (*save_announce)(struct rmig_payload *p, uint64_t *count);
	/* A control message of msg_types (post-copy's PAGE_REQUEST). */
	int (*save_message)(struct rmig_payload *p, const struct rmig_msg *m);
	void (*save_cleanup)(struct rmig_payload *p);

	/* ---- destination ---- */
	/* The layout is taken (hello: the source's HELLO). */
	int (*load_setup)(struct rmig_payload *p, const struct rmig_wire_hello *hello);
	/* On a receiver thread: the rest of a frame whose header fh was read. */
	int (*load_frame)(struct rmig_payload *p, struct rmig_rx_chan *c,
			  const struct rmig_frame_hdr *fh, char *why, size_t whylen);
	/* A control message of msg_types. */
	int (*load_message)(struct rmig_payload *p, const struct rmig_msg *m);
	/* Every frame of the round is in: count it; the next may come. */
	void (*load_round_done)(struct rmig_payload *p);
	/* The receivers stopped; a new link resumes at `round` (0: the same; a
	 * partial round is sent again). What arrived of it counts in the
	 * stats all the same (it crossed the wire). Also at the end of every
	 * migration. */
	void (*load_rewind)(struct rmig_payload *p, unsigned round);
	/* COMPLETE: verify, or get ready for post-copy. */
	int (*load_complete)(struct rmig_payload *p, const struct rmig_msg *m);
	/* Post-copy: what is still at the source; a failure of its own
	 * threads (1, why); the end of catching faults. */
	void (*load_remote)(struct rmig_payload *p, struct rmig_pending_remote *out);
	int (*load_failed)(struct rmig_payload *p, char *why, size_t whylen);
	void (*load_postcopy_end)(struct rmig_payload *p);
	void (*load_cleanup)(struct rmig_payload *p);

	/* ---- source, added later ---- */
	/* The guest runs at the destination; ours is paused and unchanged:
	 * check it against what was sent (ctx->stats.audit*). Failing to
	 * check is an error; a difference is not (it is in the stats). */
	int (*save_audit)(struct rmig_payload *p);

	/* ---- recovery, added later ---- */
	/* Destination: the link is lost and the source may come back (post-copy:
	 * hold the requests for pages; they go again on load_resume). */
	void (*load_suspend)(struct rmig_payload *p);
	/* Destination: a resumed session is set up on a new link (after
	 * load_rewind): tell the source where to take up (post-copy: the pages
	 * still missing; a stream: the offset written). */
	int (*load_resume)(struct rmig_payload *p);

	/* ---- added later ---- */
	/* Source, a new migration, after the memory layout was taken and
	 * before pre-copy starts: agree on what this payload moves (the
	 * disks: DISKS, DISKS_ACK). A refusal here is a migration that never
	 * started. */
	int (*save_handshake)(struct rmig_payload *p);
	/* Source, while a hypervisor migrates its own state beside this
	 * payload (a stream) and no round of ours runs: collect what changed,
	 * for the last round at the pause, and keep it within budget bytes
	 * (what the pause can carry), by limiting the guest's writes. */
	int (*save_hold)(struct rmig_payload *p, uint64_t budget);
};

/* What a payload tells the session while it works; the session's. */
struct rmig_payload_hooks {
	/* Destination, load_setup: long work on the memory starts now
	 * (preallocation), after the checks that may refuse the guest. */
	void (*preparing)(struct rmig_ctx *ctx);
	/* Source, save_live: the hypervisor has paused the guest and waits
	 * for its switch-over (the rest of its stream). The session sends
	 * the last round of the payloads that have rounds (a guest's disks)
	 * now, before the hypervisor lets go of them. */
	int (*guest_paused)(struct rmig_payload *p);
	/* Source, save_live: a control message the stream's reader does not
	 * take (another payload's round acknowledgement), from its thread. */
	int (*control_message)(struct rmig_payload *p, const struct rmig_msg *m);
	/* Source, save_live, every LIVE_TICK_MS while the hypervisor's
	 * pre-copy runs, on the session's thread: the payloads beside it hold
	 * what changes meanwhile (save_hold). */
	int (*live_tick)(struct rmig_payload *p);
	/* Source, save_live: the link failed with rc. Fail over to the next
	 * link (config.failover) and open the same migration there: 0 when it
	 * is up (the payload then takes up where the destination says it is),
	 * else the error to fail with. */
	int (*link_lost)(struct rmig_payload *p, int rc);
};

struct rmig_payload {
	const struct rmig_payload_ops *ops;
	struct rmig_ctx *ctx;
	const struct rmig_payload_hooks *hooks; /* set by the session, never NULL */
	void *priv;
	void *session; /* the session's, for its hooks */
	int postcopy;  /* switches over by post-copy */
};

/* The payloads one migration carries, in registration order. */
struct rmig_payload_set {
	struct rmig_payload p[RMIG_PAYLOAD_MAX];
	size_t n;
};

#define RMIG_EACH_PAYLOAD(set, it)                                                                 \
	for (struct rmig_payload *it = (set)->p; it < (set)->p + (set)->n; it++)
/* Call an optional op of every payload of set that has it; stop at the
 * first error and return it. */
#define RMIG_PAYLOADS_CALL(set, op, ...)                                                           \
	({                                                                                         \
		int rc_ = 0;                                                                       \
		RMIG_EACH_PAYLOAD(set, pp_)                                                        \
		{                                                                                  \
			if (!rc_ && pp_->ops->op)                                                  \
				rc_ = pp_->ops->op(pp_, ##__VA_ARGS__);                            \
		}                                                                                  \
		rc_;                                                                               \
	})
/* The same for ops that cannot fail. */
#define RMIG_PAYLOADS_TELL(set, op, ...)                                                           \
	do {                                                                                       \
		RMIG_EACH_PAYLOAD(set, pp_)                                                        \
		{                                                                                  \
			if (pp_->ops->op)                                                          \
				pp_->ops->op(pp_, ##__VA_ARGS__);                                  \
		}                                                                                  \
	} while (0)

/* Fill set with the payloads this migration carries. Each is zeroed but
 * for ops and ctx. */
int rmig_payloads_choose(struct rmig_ctx *ctx, struct rmig_payload_set *set);
/* 1 and why if a payload's own threads failed (post-copy's fault thread). */
int rmig_payloads_failed(struct rmig_payload_set *set, char *why, size_t whylen);
/* Register another kind: -EINVAL for a bad size, -EEXIST, -ENOSPC. */
int rmig_payload_register(const struct rmig_payload_ops *ops);

extern const struct rmig_payload_ops rmig_memory_payload;
extern const struct rmig_payload_ops rmig_stream_payload;
extern const struct rmig_payload_ops rmig_disk_payload;

#endif
