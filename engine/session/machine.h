/* machine.h - each role's phases as an enum, the transitions between them
 * and the control messages each phase accepts.
 *
 * A phase changes only through rmig_phase_enter(), which checks the (old,
 * new) pair against the role's table and emits the phase event. Every
 * control message received goes through rmig_phase_accepts() (in
 * rmig_ctrl_recv): a message the phase does not list is refused there, in
 * one place, as a protocol error naming the message and the phase.
 */
#ifndef RMIG_MACHINE_H
#define RMIG_MACHINE_H

#include <stdint.h>

struct rmig_ctx;

enum rmig_src_phase {
	RMIG_SRC_IDLE,
	RMIG_SRC_CONNECTING,	   /* link, HELLO, authentication, channels, layout */
	RMIG_SRC_PRECOPY,	   /* rounds while the guest runs */
	RMIG_SRC_FAILOVER,	   /* the link failed: resuming on the next one */
	RMIG_SRC_STOP_AND_COPY,	   /* guest paused: the last round, state, COMPLETE */
	RMIG_SRC_COMMIT,	   /* READY is in: CHECK, then GO */
	RMIG_SRC_AWAITING_STARTED, /* GO is out */
	RMIG_SRC_POSTCOPY,	   /* the guest runs there, pages still flow */
	RMIG_SRC_RECOVERING,	   /* post-copy's link lost: reconnecting, resending */
	RMIG_SRC_ASKING,	   /* link lost after GO: did it start? */
	RMIG_SRC_MIGRATED,
	RMIG_SRC_ROLLED_BACK,
	RMIG_SRC_FAILED,
	RMIG_SRC_UNKNOWN,
	RMIG_SRC_LOST,
	RMIG_SRC_DRY_RUN, /* a dry run's verdict is in: nothing moved */
	RMIG_SRC_NPHASES
};

enum rmig_dst_phase {
	RMIG_DST_IDLE,
	RMIG_DST_LISTENING,	    /* waiting for a sender; handshake */
	RMIG_DST_PREALLOCATING,	    /* faulting in guest memory before the ack */
	RMIG_DST_RECEIVING,	    /* rounds */
	RMIG_DST_AWAITING_RESUME,   /* link lost in pre-copy: waiting for the source */
	RMIG_DST_STOP_AND_COPY,	    /* device state is in: COMPLETE next */
	RMIG_DST_READY,		    /* verified, state loaded: GO next */
	RMIG_DST_POSTCOPY,	    /* the guest runs here, pages still flow */
	RMIG_DST_RECOVERING,	    /* post-copy's link lost: waiting for the source */
	RMIG_DST_MIGRATED,	    /* the guest runs here */
	RMIG_DST_AWAITING_QUESTION, /* link lost after READY: answering the outcome */
	RMIG_DST_DISCARDED,
	RMIG_DST_LOST,
	RMIG_DST_DRY_RUN, /* served a dry run: nothing was taken */
	RMIG_DST_NPHASES
};

struct rmig_phase_desc {
	const char *name; /* the phase event's text */
	uint32_t next;	  /* bit p: may go on to phase p */
	uint64_t msgs;	  /* bit t: control message type t is accepted */
};

/* One role's tables: rmig_src_machine or rmig_dst_machine. */
struct rmig_machine {
	const char *role;
	const struct rmig_phase_desc *phases;
	unsigned nphases;
};

extern const struct rmig_machine rmig_src_machine, rmig_dst_machine;

void rmig_phase_init(struct rmig_ctx *ctx, const struct rmig_machine *m);
/* Move to `next`: 0 and the phase event, or -EINVAL and no change (a
 * transition the table does not allow: a bug, said in a warning event;
 * ctx->err keeps the error being reported). */
int rmig_phase_enter(struct rmig_ctx *ctx, unsigned next);
unsigned rmig_phase(const struct rmig_ctx *ctx);
const char *rmig_phase_name(const struct rmig_machine *m, unsigned phase);
/* 1 if a message of this type may arrive in the current phase. HEARTBEAT
 * and ABORT are accepted anywhere (the control stream handles them). */
int rmig_phase_accepts(const struct rmig_machine *m, unsigned phase, uint8_t type);
int rmig_phase_may_enter(const struct rmig_machine *m, unsigned from, unsigned to);

#endif
