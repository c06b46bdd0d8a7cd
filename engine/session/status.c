/* status.c - what an operator may ask a running migration and change in
 * it: rmig_status_get(), rmig_set_max_bandwidth(), rmig_set_downtime_ms(),
 * and the figures the roles keep for them (when the migration and its
 * first round began, what the current round set out to send). */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "engine.h"
#include "last_error.h"
#include "machine.h"

void rmig_status_begin(struct rmig_ctx *ctx)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->t_start_ms = rmig_now_ms();
	ctx->t_setup_done_ms = 0;
	ctx->round_planned = 0;
	ctx->round_base = 0;
	ctx->paused_seen = ctx->go_seen = 0;
	ctx->bytes_at_pause = ctx->bytes_at_go = 0;
	pthread_mutex_unlock(&ctx->prog_lock);
	atomic_store(&ctx->live_pages, 0);
	atomic_store(&ctx->live_zero_pages, 0);
}

/* The byte counts by phase: where the pause and GO fell in live_bytes.
 * Under prog_lock (rmig_phase_enter holds it). */
void rmig_status_phase(struct rmig_ctx *ctx, unsigned phase)
{
	int src = ctx->sm.m == &rmig_src_machine;
	int pause = src ? phase == RMIG_SRC_STOP_AND_COPY : phase == RMIG_DST_STOP_AND_COPY;
	int go = src ? phase == RMIG_SRC_AWAITING_STARTED
		     : phase == RMIG_DST_POSTCOPY || phase == RMIG_DST_MIGRATED;

	if (pause && !ctx->paused_seen) {
		ctx->paused_seen = 1;
		ctx->bytes_at_pause = atomic_load(&ctx->live_bytes);
	}
	if (go && !ctx->go_seen) {
		ctx->go_seen = 1;
		ctx->bytes_at_go = atomic_load(&ctx->live_bytes);
	}
}

void rmig_status_setup_done(struct rmig_ctx *ctx)
{
	pthread_mutex_lock(&ctx->prog_lock);
	if (!ctx->t_setup_done_ms)
		ctx->t_setup_done_ms = rmig_now_ms();
	pthread_mutex_unlock(&ctx->prog_lock);
}

void rmig_status_plan(struct rmig_ctx *ctx, uint64_t bytes)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->round_planned = bytes;
	ctx->round_base = atomic_load(&ctx->live_bytes);
	pthread_mutex_unlock(&ctx->prog_lock);
}

void rmig_status_plan_add(struct rmig_ctx *ctx, uint64_t bytes)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->round_planned += bytes;
	pthread_mutex_unlock(&ctx->prog_lock);
}

void rmig_status_plan_less(struct rmig_ctx *ctx, uint64_t bytes)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->round_planned = ctx->round_planned > bytes ? ctx->round_planned - bytes : 0;
	pthread_mutex_unlock(&ctx->prog_lock);
}

void rmig_status_round(struct rmig_ctx *ctx, unsigned round)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->prog.round = round;
	pthread_mutex_unlock(&ctx->prog_lock);
}

/* Source, during a round: what it set out to send less what went since;
 * between rounds (and on the destination) the last count. */
static uint64_t remaining(const struct rmig_ctx *ctx, uint64_t live)
{
	uint64_t sent = live - ctx->round_base;

	if (!ctx->round_planned)
		return ctx->prog.remaining_bytes;
	return sent < ctx->round_planned ? ctx->round_planned - sent : 0;
}

int rmig_status_get(struct rmig_ctx *ctx, struct rmig_status *st)
{
	struct rmig_status s = { .size = sizeof(s) };
	size_t n;
	int64_t now = rmig_now_ms();

	if (!ctx || !st || st->size < offsetof(struct rmig_status, phase) + sizeof(st->phase))
		return rmig_fail(-EINVAL,
				 "rmig_status_get: no context, or status.size %zu too small",
				 st ? st->size : 0);
	s.transferred = atomic_load(&ctx->live_bytes);
	s.pages = atomic_load(&ctx->live_pages);
	s.zero_pages = atomic_load(&ctx->live_zero_pages);
	pthread_mutex_lock(&ctx->prog_lock);
	/* transferred was read before the lock: a phase change since may have
	 * noted a larger count; never let the split wrap. */
	if (ctx->paused_seen && ctx->bytes_at_pause > s.transferred)
		s.transferred = ctx->bytes_at_pause;
	if (ctx->go_seen && ctx->bytes_at_go > s.transferred)
		s.transferred = ctx->bytes_at_go;
	s.precopy_bytes = ctx->paused_seen ? ctx->bytes_at_pause : s.transferred;
	if (ctx->paused_seen)
		s.downtime_bytes =
		    (ctx->go_seen ? ctx->bytes_at_go : s.transferred) - ctx->bytes_at_pause;
	if (ctx->go_seen)
		s.postcopy_bytes = s.transferred - ctx->bytes_at_go;
	s.phase = ctx->prog.phase ? ctx->prog.phase : "idle";
	s.round = ctx->prog.round;
	s.remaining = remaining(ctx, s.transferred);
	s.bandwidth = ctx->prog.bandwidth;
	s.dirty_rate = ctx->prog.dirty_rate;
	s.expected_downtime_ms = ctx->prog.expected_downtime_ms;
	if (ctx->t_start_ms) {
		s.elapsed_ms = (uint64_t)(now - ctx->t_start_ms);
		s.setup_ms = (uint64_t)((ctx->t_setup_done_ms ? ctx->t_setup_done_ms : now) -
					ctx->t_start_ms);
	}
	pthread_mutex_unlock(&ctx->prog_lock);
	s.total = ctx->stats.guest_bytes + ctx->stats.disk_bytes;
	s.max_bandwidth = atomic_load(&ctx->limit_bandwidth);
	s.downtime_ms = atomic_load(&ctx->limit_downtime_ms);
	n = st->size < sizeof(s) ? st->size : sizeof(s);
	memcpy(st, &s, n);
	st->size = n;
	return 0;
}

int rmig_set_max_bandwidth(struct rmig_ctx *ctx, uint64_t bytes_per_s)
{
	if (!ctx)
		return rmig_fail(-EINVAL, "rmig_set_max_bandwidth: no context");
	atomic_store(&ctx->limit_bandwidth, bytes_per_s);
	return 0;
}

int rmig_start_postcopy(struct rmig_ctx *ctx)
{
	unsigned phase;
	int source;

	if (!ctx)
		return rmig_fail(-EINVAL, "rmig_start_postcopy: no context");
	if (!ctx->cfg.postcopy)
		return rmig_fail(-EINVAL,
				 "post-copy was not enabled for this migration "
				 "(config.postcopy): the destination was not readied for it");
	pthread_mutex_lock(&ctx->prog_lock);
	source = ctx->sm.m == &rmig_src_machine;
	phase = ctx->sm.phase;
	pthread_mutex_unlock(&ctx->prog_lock);
	if (!source)
		return rmig_fail(-EINVAL, "only the source switches to post-copy");
	if (phase != RMIG_SRC_IDLE && phase != RMIG_SRC_CONNECTING && phase != RMIG_SRC_PRECOPY &&
	    phase != RMIG_SRC_FAILOVER)
		return rmig_fail(-EALREADY, "pre-copy is over: too late to switch to post-copy");
	atomic_store(&ctx->switch_now, 1);
	return 0;
}

int rmig_set_downtime_ms(struct rmig_ctx *ctx, unsigned ms)
{
	if (!ctx)
		return rmig_fail(-EINVAL, "rmig_set_downtime_ms: no context");
	if (ms < 1 || ms > 3600000)
		return rmig_fail(-EINVAL, "rmig_set_downtime_ms: %u ms, not in 1..3600000", ms);
	atomic_store(&ctx->limit_downtime_ms, ms);
	return 0;
}
