/* machine.c - the phase tables of both roles and the one function that
 * moves a context from phase to phase. */
#include <errno.h>
#include <stdio.h>

#include "engine.h"
#include "machine.h"

#define M(t) (1ull << RMIG_MSG_##t)
#define S(p) (1u << RMIG_SRC_##p)
#define D(p) (1u << RMIG_DST_##p)
_Static_assert(RMIG_MSG_TYPE_COUNT <= 64, "message types outgrew the phase masks");

/* Opening a connection: HELLO both ways, then the proof of the key, then
 * (RMIG_CAP_RAILS) the destination's rails. */
#define SRC_OPEN (M(HELLO) | M(AUTH) | M(RAILS))
#define SRC_GIVE_UP (S(ROLLED_BACK) | S(UNKNOWN))

static const struct rmig_phase_desc src_phases[RMIG_SRC_NPHASES] = {
	[RMIG_SRC_IDLE] = { "idle", S(CONNECTING) | S(FAILED), 0 },
	/* A dry run ends here (refused: would not fit) or after its probe. */
	[RMIG_SRC_CONNECTING] = { "connecting", S(PRECOPY) | S(FAILED) | S(DRY_RUN) | SRC_GIVE_UP,
				  SRC_OPEN | M(REGIONS_ACK) | M(MEM_KEYS) | M(DISKS_ACK) },
	[RMIG_SRC_PRECOPY] = { "pre-copy",
			       S(FAILOVER) | S(STOP_AND_COPY) | S(DRY_RUN) | SRC_GIVE_UP,
			       M(ROUND_ACK) | M(STREAM_ACK) },
	[RMIG_SRC_FAILOVER] = { "failover", S(PRECOPY) | S(STOP_AND_COPY) | SRC_GIVE_UP,
				SRC_OPEN | M(REGIONS_ACK) | M(MEM_KEYS) | M(STREAM_ACK) },
	[RMIG_SRC_STOP_AND_COPY] = { "stop-and-copy", S(COMMIT) | S(FAILOVER) | SRC_GIVE_UP,
				     M(ROUND_ACK) | M(READY) | M(PAGE_REQUEST) | M(STREAM_ACK) },
	[RMIG_SRC_COMMIT] = { "commit", S(AWAITING_STARTED) | S(ASKING) | SRC_GIVE_UP,
			      M(READY) | M(PAGE_REQUEST) },
	[RMIG_SRC_AWAITING_STARTED] = { "awaiting-started",
					S(MIGRATED) | S(POSTCOPY) | S(RECOVERING) | S(ASKING) |
					    SRC_GIVE_UP,
					M(STARTED) | M(PAGE_REQUEST) },
	[RMIG_SRC_POSTCOPY] = { "post-copy", S(MIGRATED) | S(RECOVERING) | S(LOST),
				M(PAGE_REQUEST) | M(ROUND_ACK) },
	/* A new link: the opening, then what the destination lacks. After a
	 * lost GO, a destination that did not start refuses: ask it. */
	[RMIG_SRC_RECOVERING] = { "recovering", S(POSTCOPY) | S(MIGRATED) | S(ASKING) | S(LOST),
				  SRC_OPEN | M(REGIONS_ACK) | M(PAGE_REQUEST) | M(MISSING) |
				      M(RECOVER) },
	/* A question asks for no rails: no RAILS. */
	[RMIG_SRC_ASKING] = { "asking", S(MIGRATED) | SRC_GIVE_UP,
			      M(HELLO) | M(AUTH) | M(STARTED) },
	[RMIG_SRC_MIGRATED] = { "migrated", 0, 0 },
	[RMIG_SRC_ROLLED_BACK] = { "rolled-back", 0, 0 },
	[RMIG_SRC_FAILED] = { "failed", 0, 0 },
	[RMIG_SRC_UNKNOWN] = { "unknown", 0, 0 },
	[RMIG_SRC_LOST] = { "lost", 0, 0 },
	[RMIG_SRC_DRY_RUN] = { "dry-run", 0, 0 },
};

#define DST_OPEN (M(HELLO) | M(AUTH))

static const struct rmig_phase_desc dst_phases[RMIG_DST_NPHASES] = {
	[RMIG_DST_IDLE] = { "idle", D(LISTENING) | D(DISCARDED), 0 },
	[RMIG_DST_LISTENING] = { "listening", D(PREALLOCATING) | D(RECEIVING) | D(DISCARDED),
				 DST_OPEN | M(REGIONS) },
	[RMIG_DST_PREALLOCATING] = { "preallocating", D(RECEIVING) | D(DISCARDED), 0 },
	[RMIG_DST_RECEIVING] = { "receiving",
				 D(AWAITING_RESUME) | D(STOP_AND_COPY) | D(DISCARDED) | D(DRY_RUN),
				 M(STREAM) | M(STREAM_ACK) | M(ROUND_END) | M(STATE) | M(DISCARD) |
				     M(DISKS) },
	[RMIG_DST_AWAITING_RESUME] = { "awaiting-resume", D(RECEIVING) | D(DISCARDED),
				       DST_OPEN | M(REGIONS) },
	[RMIG_DST_STOP_AND_COPY] = { "stop-and-copy", D(READY) | D(AWAITING_RESUME) | D(DISCARDED),
				     M(COMPLETE) | M(DISCARD) | M(DISK_DIGESTS) },
	[RMIG_DST_READY] = { "ready",
			     D(MIGRATED) | D(POSTCOPY) | D(AWAITING_QUESTION) | D(DISCARDED),
			     M(CHECK) | M(GO) | M(PAGE_DATA) },
	[RMIG_DST_POSTCOPY] = { "post-copy", D(MIGRATED) | D(RECOVERING) | D(LOST),
				M(ROUND_END) | M(PAGE_DATA) },
	[RMIG_DST_RECOVERING] = { "recovering", D(POSTCOPY) | D(MIGRATED) | D(LOST),
				  DST_OPEN | M(REGIONS) },
	[RMIG_DST_MIGRATED] = { "migrated", D(AWAITING_QUESTION), M(DONE) | M(PAGE_DATA) },
	[RMIG_DST_AWAITING_QUESTION] = { "awaiting-question", D(DISCARDED), DST_OPEN },
	[RMIG_DST_DISCARDED] = { "discarded", 0, 0 },
	[RMIG_DST_LOST] = { "lost", 0, 0 },
	[RMIG_DST_DRY_RUN] = { "dry-run", 0, 0 },
};

const struct rmig_machine rmig_src_machine = { "source", src_phases, RMIG_SRC_NPHASES };
const struct rmig_machine rmig_dst_machine = { "destination", dst_phases, RMIG_DST_NPHASES };

const char *rmig_phase_name(const struct rmig_machine *m, unsigned phase)
{
	return phase < m->nphases ? m->phases[phase].name : "?";
}

int rmig_phase_accepts(const struct rmig_machine *m, unsigned phase, uint8_t type)
{
	if (type == RMIG_MSG_HEARTBEAT || type == RMIG_MSG_ABORT)
		return 1;
	return phase < m->nphases && type < 64 && (m->phases[phase].msgs >> type) & 1;
}

int rmig_phase_may_enter(const struct rmig_machine *m, unsigned from, unsigned to)
{
	return from < m->nphases && to < m->nphases && (m->phases[from].next >> to) & 1;
}

void rmig_phase_init(struct rmig_ctx *ctx, const struct rmig_machine *m)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->sm.m = m;
	ctx->sm.phase = 0;
	ctx->prog.phase = m->phases[0].name;
	pthread_mutex_unlock(&ctx->prog_lock);
}

unsigned rmig_phase(const struct rmig_ctx *ctx)
{
	return ctx->sm.phase;
}

int rmig_phase_enter(struct rmig_ctx *ctx, unsigned next)
{
	const struct rmig_machine *m = ctx->sm.m;
	struct rmig_event ev = { .type = RMIG_EV_PHASE };

	if (!rmig_phase_may_enter(m, ctx->sm.phase, next)) {
		/* A bug: said as a warning, so that the error being reported
		 * (this is often a failure path) stays the one the user sees. */
		char why[160];
		struct rmig_event warn = { .type = RMIG_EV_WARNING, .detail = why };

		snprintf(why, sizeof(why), "internal error: %s phase %s cannot go to %s", m->role,
			 rmig_phase_name(m, ctx->sm.phase), rmig_phase_name(m, next));
		rmig_emit(ctx, &warn);
		return -EINVAL;
	}
	ev.phase = m->phases[next].name;
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->sm.phase = next;
	ctx->prog.phase = ev.phase;
	rmig_status_phase(ctx, next);
	pthread_mutex_unlock(&ctx->prog_lock);
	rmig_emit(ctx, &ev);
	return 0;
}
