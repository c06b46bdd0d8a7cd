/* dest.c - the receiving side's session: accept and authenticate, take
 * the layout before anything is allocated, the round barrier, COMPLETE,
 * READY, and the guest started only on GO; a lost link during pre-copy
 * waits for the source to resume, one after READY answers the source's
 * question. What arrives is the payloads' business (engine/payload/): data
 * frames go to them from the receivers (channels.c), their control
 * messages by type.
 *
 * Post-copy (the source's HELLO asks for it): the receivers stay up past
 * STATE for one more round, which arrives after the guest started; the
 * memory payload places its pages whole (userfaultfd), never reading into
 * memory the guest may be using.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "channels.h"
#include "engine.h"
#include "last_error.h"
#include "listener.h"
#include "machine.h"
#include "payload.h"
#include "postcopy.h"

/* One rmig_recv call: what the steps and message handlers share. */
struct dst_run {
	struct rmig_ctx *ctx;
	struct rmig_listener *lst;	 /* where the connections come from */
	struct rmig_listener_slot *slot; /* our migration, as the listener knows it */
	struct rmig_msg *m;
	struct rmig_payload_set ps;
	struct rmig_rx_pool *rx;
	int postcopy; /* a payload switches over by post-copy */
	void *state;  /* the device state, from STATE */
	size_t state_len;
	int announced; /* post-copy: DISCARD came, no more data before GO */
	int all_in;    /* post-copy ended with every page here */
	unsigned expect_round;
	int64_t t_go;
	int64_t offer_ms; /* the last offer_memory took this long */
	int superseded;	  /* the link was lost because the source reopened */
};

/* A dry run: what prepare_regions would check, nothing allocated (the
 * backend's check_regions; without it, the kind of guest only). The
 * layout is kept for the probe's run checks; there is no memory. */
static int check_layout(struct rmig_ctx *ctx, const struct rmig_layout *l,
			const struct rmig_region *want)
{
	const struct rmig_backend_ops *o = ctx->be->ops;
	int rc = o->check_regions ? o->check_regions(ctx->be, want, l->count) : 0;

	if (rc)
		return rmig_err(ctx, rc, "cannot take this guest: %s", ctx->be->err);
	ctx->layout = *l;
	for (uint32_t i = 0; i < l->count; i++)
		ctx->stats.guest_bytes += l->r[i].len;
	return 0;
}

/* Check the REGIONS layout and have the backend allocate it (a dry run:
 * only check it). */
static int take_layout(struct rmig_ctx *ctx, const struct rmig_layout *l)
{
	struct rmig_region want[RMIG_MAX_REGIONS];
	const struct rmig_region *got;
	size_t n;
	int rc;

	for (uint32_t i = 0; i < l->count; i++)
		want[i] = (struct rmig_region){ .id = l->r[i].id,
						.page_size = l->r[i].page_size,
						.gpa = l->r[i].gpa,
						.len = l->r[i].len };
	/* Both sides must be the same kind: memory, or a hypervisor's stream. */
	if (!l->count != (ctx->be->ops->stream_open != NULL))
		return rmig_err(ctx, -EPROTO,
				l->count
				    ? "cannot take this guest: the source sends guest memory, "
				      "backend %s takes a hypervisor's own migration stream"
				    : "cannot take this guest: the source sends a hypervisor's "
				      "own migration stream (e.g. the qemu backend), backend %s "
				      "takes guest memory",
				ctx->be->ops->name);
	if (ctx->dry_run)
		return check_layout(ctx, l, want);
	rc = ctx->be->ops->prepare_regions(ctx->be, want, l->count);
	if (rc)
		return rmig_err(ctx, rc, "cannot take this guest: %s", ctx->be->err);
	rc = ctx->be->ops->get_regions(ctx->be, &got, &n);
	if (rc)
		return rmig_err(ctx, rc, "backend: %s", ctx->be->err);
	if (n != l->count)
		return rmig_err(ctx, -EINVAL,
				"layout mismatch: backend made %zu regions, sender has %u", n,
				l->count);
	for (size_t i = 0; i < n; i++)
		if (got[i].id != l->r[i].id || got[i].len != l->r[i].len ||
		    got[i].page_size != l->r[i].page_size || !got[i].host)
			return rmig_err(ctx, -EINVAL,
					"layout mismatch: region %u here is %llu bytes of %u-byte "
					"pages, the sender's is %llu of %u",
					l->r[i].id, (unsigned long long)got[i].len,
					got[i].page_size, (unsigned long long)l->r[i].len,
					l->r[i].page_size);
	ctx->layout = *l;
	ctx->regions = got;
	ctx->nregions = n;
	for (size_t i = 0; i < n; i++)
		ctx->stats.guest_bytes += got[i].len;
	return 0;
}

/* Placement (RDMA WRITE): if the source asked and the link can, make the
 * guest regions - and nothing else - remotely writable and send their
 * description; an empty MEM_KEYS tells the source to use the streams. */
static int offer_memory(struct rmig_ctx *ctx, int asked)
{
	struct rmig_link *l = ctx->link;
	struct rmig_link_mem mem[RMIG_MAX_REGIONS];
	struct rmig_msg m = { .type = RMIG_MSG_MEM_KEYS };
	void *blob = NULL;
	size_t len = 0;
	int rc = 0;

	if (!asked)
		goto out;
	if (l->ops->mem_expose && ctx->cfg.pin != RMIG_PIN_STAGING && !ctx->dry_run) {
		rmig_link_mem_of_regions(ctx, mem);
		rc = l->ops->mem_expose(l, mem, ctx->nregions, &blob, &len);
		if (rc && ctx->cfg.pin == RMIG_PIN_ALL) {
			rc = rmig_err(ctx, rc, "config.pin=all: cannot register guest memory: %s",
				      l->err);
			goto out;
		}
		if (rc) {
			snprintf(ctx->link_detail, sizeof(ctx->link_detail),
				 "guest memory not registered (%s): using staging buffers", l->err);
			len = 0;
		}
		ctx->placement = !rc;
	}
	if (len > RMIG_MAX_MEM_KEYS) {
		rc = rmig_err(ctx, -E2BIG, "memory description of %zu bytes is too large", len);
		goto out;
	}
	m.u.state.data = blob;
	m.u.state.len = (uint32_t)len;
	rc = rmig_ctrl_send(ctx, &m);
out:
	free(blob);
	if (!rc)
		rmig_link_chosen(ctx);
	return rc;
}

static void refused(struct rmig_ctx *ctx, const char *why)
{
	struct rmig_event ev = { .type = RMIG_EV_REFUSED, .peer = ctx->link->peer, .detail = why };

	rmig_emit(ctx, &ev);
}

/* The listener's opening of a connection, taken over: from here the
 * context speaks on it. */
static int take_opening(struct dst_run *d, const struct rmig_opening *o,
			struct rmig_wire_hello *hello)
{
	struct rmig_ctx *ctx = d->ctx;
	int rc = rmig_ctx_own_conn(ctx, o->conn);

	if (rc) { /* out of memory: the connection is still ours to close */
		rmig_listener_release(d->lst, d->slot);
		o->conn->ops->close_session(o->conn);
		rmig_link_destroy(o->conn);
		return rc;
	}
	memcpy(ctx->nonce, o->nonce, RMIG_NONCE_LEN);
	memcpy(ctx->peer_nonce, o->peer_nonce, RMIG_NONCE_LEN);
	memcpy(ctx->token, o->token, RMIG_NONCE_LEN);
	ctx->ctrl_tx_seq = o->tx_seq;
	ctx->ctrl_rx_seq = o->rx_seq;
	ctx->peer_proven = 1; /* the listener delivers only proven openings */
	*hello = o->hello;
	return 0;
}

/* A partly received round is sent again; a resumed session starts at
 * resume_round (0: the round stays). */
static void rewind_payloads(struct dst_run *d, unsigned resume_round)
{
	RMIG_PAYLOADS_TELL(&d->ps, load_rewind, resume_round);
}

/* Stop the receivers (they interrupt the link's data channels). A round
 * cut short still counts: its number here, what arrived of it in the
 * payloads' figures as they rewind. */
static void stop_receivers(struct dst_run *d)
{
	if (rmig_rx_stop(d->rx))
		d->ctx->stats.rounds = d->expect_round;
	rewind_payloads(d, 0);
}

/* The memory payload passed its checks and starts preallocating. */
static void preparing(struct rmig_ctx *ctx)
{
	rmig_phase_enter(ctx, RMIG_DST_PREALLOCATING);
}

static const struct rmig_payload_hooks dest_hooks = { .preparing = preparing };

/* The layout is new: choose the payloads, let them set up, start the
 * receivers' pool. */
static int take_payloads(struct dst_run *d, const struct rmig_wire_hello *hello)
{
	struct rmig_ctx *ctx = d->ctx;
	int rc;

	ctx->peer_caps = hello->caps; /* what the payloads' wanted() reads */
	rc = rmig_payloads_choose(ctx, &d->ps);

	for (size_t i = 0; !rc && i < d->ps.n; i++) {
		struct rmig_payload *p = &d->ps.p[i];

		p->hooks = &dest_hooks;
		rc = p->ops->load_setup ? p->ops->load_setup(p, hello) : 0;
		d->postcopy |= p->postcopy;
	}
	if (!rc && (hello->caps & RMIG_CAP_POSTCOPY) && !d->postcopy)
		rc = rmig_err(ctx, -EOPNOTSUPP, "post-copy is not possible for this guest");
	return rc ? rc : rmig_rx_create(ctx, &d->ps, &d->rx);
}

/* After the opening: data channels, the layout (taken, or for a resumed
 * session checked against the one we hold), receivers, placement. */
static int setup_session(struct dst_run *d, const struct rmig_wire_hello *hello, int resume)
{
	struct rmig_ctx *ctx = d->ctx;
	struct rmig_msg *m = d->m;
	int nodes[RMIG_MAX_CHANNELS];
	int rc;

	if (resume && hello->channels != ctx->nchan)
		return rmig_err(ctx, -EPROTO,
				"protocol error: resumed with %u channels, the migration has %u",
				hello->channels, ctx->nchan);
	if (resume && !(hello->caps & RMIG_CAP_POSTCOPY) != !d->postcopy)
		return rmig_err(ctx, -EPROTO, "protocol error: resumed %s post-copy",
				d->postcopy ? "without" : "with");
	ctx->nchan = hello->channels;
	ctx->stats.channels = ctx->nchan;
	if (!resume)
		ctx->dry_run = (hello->caps & RMIG_CAP_DRYRUN) != 0;
	rc = rmig_listener_take_channels(d->lst, d->slot, ctx, ctx->nchan, nodes,
					 (int)ctx->cfg.link_timeout_ms);
	if (!rc)
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_REGIONS, m, (int)ctx->cfg.link_timeout_ms);
	/* Heartbeats from here: allocating, preallocating and registering a
	 * large guest can take longer than the source's link timeout. */
	if (!rc)
		rc = rmig_heartbeat_start(ctx);
	if (rc)
		return rc;
	if (!resume) {
		rc = take_layout(ctx, &m->u.layout);
		if (!rc)
			rc = take_payloads(d, hello);
	} else if (m->u.layout.count != ctx->layout.count ||
		   memcmp(m->u.layout.r, ctx->layout.r,
			  sizeof(m->u.layout.r[0]) * ctx->layout.count))
		rc = rmig_err(ctx, -EPROTO,
			      "layout mismatch: the resumed migration describes other memory");
	if (!rc)
		rc = rmig_rx_start(d->rx, nodes);
	if (!rc)
		rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_REGIONS_ACK, ctx->first_touch_bytes);
	d->offer_ms = rmig_now_ms();
	if (!rc)
		rc = offer_memory(ctx, hello->caps & RMIG_CAP_PLACEMENT);
	d->offer_ms = rmig_now_ms() - d->offer_ms;
	return rc;
}

/* Pre-copy's stall clock starts once the source can have registered its
 * memory for RDMA WRITE (it sends nothing before): as long as registering
 * ours took, twice over. */
static void stall_clock_after_offer(struct dst_run *d)
{
	d->ctx->deadline.since_ms += 2 * d->offer_ms;
}

/* Close the connection we serve on. The listener forgets it first, so that
 * no resumption interrupts it while it closes (see deliver_again). */
static void close_link(struct dst_run *d)
{
	if (d->slot)
		rmig_listener_release(d->lst, d->slot);
	d->ctx->link->ops->close_session(d->ctx->link);
}

/* Stop using the current connection: receivers, heartbeats, registrations. */
static void drop_session(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;

	if (d->rx)
		stop_receivers(d);
	rmig_heartbeat_pause(ctx, 1);
	/* From here the peer's RDMA WRITEs can no longer land. */
	if (ctx->link->ops->mem_release)
		ctx->link->ops->mem_release(ctx->link);
	close_link(d);
	ctx->placement = 0;
}

/* Take the next opening of our migration that asks for `want` (a HELLO
 * flag), until end_ms; refuse any other. 0 with its HELLO in *hello; 1
 * when a finished post-copy's source asked to recover and was told. */
static int accept_for_session(struct dst_run *d, uint32_t want, int64_t end_ms,
			      struct rmig_wire_hello *hello)
{
	struct rmig_ctx *ctx = d->ctx;

	for (;;) {
		struct rmig_opening o;
		int rc = rmig_listener_take_again(d->lst, d->slot, ctx, end_ms, &o);

		if (!rc)
			rc = take_opening(d, &o, hello);
		if (rc)
			return rc;
		if (hello->flags & want)
			return 0;
		if (want == RMIG_HELLO_QUERY && (hello->flags & RMIG_HELLO_RESUME) && d->all_in) {
			/* Post-copy ended here with every page in; the source lost
			 * our ROUND_ACK and tries to recover: tell it. */
			rmig_ctrl_send_abort(ctx, RMIG_ABORT_ALL_IN,
					     "every page is here and the guest runs at the "
					     "destination: nothing to recover");
			close_link(d);
			return 1;
		}
		rc = rmig_err(ctx, -EBUSY,
			      "busy: this receiver only waits for the migration it was serving to "
			      "%s",
			      want == RMIG_HELLO_RESUME ? "resume" : "ask for its outcome");
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
		refused(ctx, ctx->err);
		close_link(d);
	}
}

/* Every payload can take up a partly sent migration again (a hypervisor's
 * stream: from the offset it wrote), and nothing was announced for after
 * the start yet. */
static int resumable(struct dst_run *d)
{
	RMIG_EACH_PAYLOAD(&d->ps, p)
	{
		if (!p->ops->load_rewind)
			return 0;
	}
	return d->ps.n && !d->announced && !d->ctx->dry_run;
}

/* Post-copy: what is still at the source, over all payloads. */
static void remote_figures(struct dst_run *d, struct rmig_pending_remote *sum)
{
	*sum = (struct rmig_pending_remote){ 0 };
	RMIG_EACH_PAYLOAD(&d->ps, p)
	{
		struct rmig_pending_remote one;

		if (!p->ops->load_remote)
			continue;
		p->ops->load_remote(p, &one);
		sum->stale += one.stale;
		sum->missing += one.missing;
		sum->requested += one.requested;
		if (one.max_wait_ms > sum->max_wait_ms)
			sum->max_wait_ms = one.max_wait_ms;
	}
}

/* Pre-copy's stall clock, from the start of receiving. */
static void start_stall_clock(struct dst_run *d)
{
	rmig_deadline_start(d->ctx, d->ctx->cfg.stall_timeout_ms, 1,
			    "no data and no round end for %u ms in pre-copy "
			    "(config.stall_timeout_ms)",
			    d->ctx->cfg.stall_timeout_ms);
	stall_clock_after_offer(d);
}

/* The link failed during pre-copy, or in stop-and-copy before READY: keep
 * what was received so far and wait failover_timeout_ms for the source to
 * resume over any link (it sends the last round and the state again). */
static int await_resume(struct dst_run *d, int rc)
{
	struct rmig_ctx *ctx = d->ctx;
	const char *from = rmig_link_kind_name(ctx->link);
	unsigned phase = rmig_phase(ctx);
	int may_resume = phase == RMIG_DST_RECEIVING || phase == RMIG_DST_STOP_AND_COPY;
	struct rmig_wire_hello hello;
	char why[sizeof(ctx->err)], msg[sizeof(why) + 96];
	struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = msg };
	struct rmig_deadline stall = ctx->deadline;
	int64_t lost, end;

	if (rmig_link_failure(rc) && may_resume && !d->superseded)
		rc = rmig_ctrl_last_words(ctx, rc);
	if (ctx->cfg.failover == RMIG_FAILOVER_NONE || !rmig_link_failure(rc) ||
	    atomic_load(&ctx->cancelled) || !may_resume || !resumable(d))
		return rc;
	lost = rmig_now_ms();
	end = lost + ctx->cfg.failover_timeout_ms;
	rmig_deadline_stop(ctx); /* waiting for the failover is no stall */
	memcpy(why, ctx->err, sizeof(why));
	drop_session(d);
	snprintf(msg, sizeof(msg), "link lost (%s): waiting %u ms for the source to resume", why,
		 ctx->cfg.failover_timeout_ms);
	rmig_emit(ctx, &ev);
	rmig_phase_enter(ctx, RMIG_DST_AWAITING_RESUME);
	for (;;) {
		rc = accept_for_session(d, RMIG_HELLO_RESUME, end, &hello);
		if (rc)
			return rmig_err(ctx, rc, "%s; the source did not resume within %u ms", why,
					ctx->cfg.failover_timeout_ms);
		if (hello.round < d->expect_round)
			rc = rmig_err(
			    ctx, -EPROTO,
			    "protocol error: resume at round %u, round %u was acknowledged",
			    hello.round, d->expect_round - 1);
		/* Before the receivers start: the first frame may follow
		 * REGIONS_ACK at once. */
		if (!rc)
			rewind_payloads(d, hello.round);
		if (!rc)
			rc = setup_session(d, &hello, 1);
		if (!rc)
			rc = RMIG_PAYLOADS_CALL(&d->ps, load_resume);
		if (!rc)
			break;
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
		drop_session(d);
	}
	d->expect_round = hello.round;
	free(d->state); /* stop-and-copy: the state comes again */
	d->state = NULL;
	d->state_len = 0;
	if (phase == RMIG_DST_STOP_AND_COPY) {
		start_stall_clock(d); /* the last round starts over */
	} else {
		/* The resumed session has what the lost one had left, no more. */
		stall.since_ms += rmig_now_ms() - lost;
		ctx->deadline = stall;
		stall_clock_after_offer(d);
	}
	ctx->stats.failovers++;
	{
		struct rmig_event fev = { .type = RMIG_EV_FAILOVER,
					  .from = from,
					  .transport = rmig_link_kind_name(ctx->link),
					  .detail = why };

		rmig_emit(ctx, &fev);
	}
	rmig_phase_enter(ctx, RMIG_DST_RECEIVING);
	return 0; /* setup_session restarted the heartbeats */
}

/* Post-copy's link was lost: the guest runs here, and a thread touching a
 * page still at the source waits (its request is held).
 * Wait failover_timeout_ms for the source to come back over any link; on
 * it, ask again for what the guest waits for, say what is missing
 * (load_resume), then RECOVER. A failure on the way waits again, until the
 * deadline; only then is the guest lost. */
static int recover(struct dst_run *d, int rc)
{
	struct rmig_ctx *ctx = d->ctx;
	const char *from = rmig_link_kind_name(ctx->link);
	struct rmig_pending_remote f;
	struct rmig_wire_hello hello;
	char why[sizeof(ctx->err)], msg[sizeof(why) + 128];
	struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = msg };
	int64_t lost, end;

	/* Silent past the link timeout, or replaced: no last words will come. */
	if (rmig_link_failure(rc) && rc != -ETIMEDOUT && !d->superseded)
		rc = rmig_ctrl_last_words(ctx, rc);
	remote_figures(d, &f);
	/* Even with every page in: the source does not know it yet, and would
	 * call the guest lost. */
	if (ctx->cfg.failover == RMIG_FAILOVER_NONE || !rmig_link_failure(rc) ||
	    rmig_cancel_requested(ctx))
		return rc;
	lost = rmig_now_ms();
	end = lost + ctx->cfg.failover_timeout_ms;
	memcpy(why, ctx->err, sizeof(why));
	/* A request being sent on the dead link ends now; later ones wait. */
	ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_CTRL_SEND);
	RMIG_PAYLOADS_TELL(&d->ps, load_suspend);
	drop_session(d);
	snprintf(msg, sizeof(msg),
		 "link lost (%s): %llu pages still at the source; waiting %u ms "
		 "(config.failover_timeout_ms) for it to recover",
		 why, (unsigned long long)f.missing, ctx->cfg.failover_timeout_ms);
	rmig_emit(ctx, &ev);
	rmig_phase_enter(ctx, RMIG_DST_RECOVERING);
	for (;;) {
		rc = accept_for_session(d, RMIG_HELLO_RESUME, end, &hello);
		if (rc)
			return rmig_err(ctx, rc,
					"%s; the source did not recover within %u ms "
					"(config.failover_timeout_ms)",
					why, ctx->cfg.failover_timeout_ms);
		if (hello.round < d->expect_round)
			rc = rmig_err(ctx, -EPROTO,
				      "protocol error: recovery at round %u, round %u was begun",
				      hello.round, d->expect_round);
		if (!rc)
			rewind_payloads(d, hello.round);
		if (!rc)
			rc = setup_session(d, &hello, 1);
		if (!rc) {
			ctx->stats.recoveries++; /* a session resumed, as the source counts */
			rc = RMIG_PAYLOADS_CALL(&d->ps, load_resume);
		}
		if (!rc) {
			remote_figures(d, &f);
			rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_RECOVER, f.missing);
		}
		if (!rc)
			break;
		if (!rmig_link_failure(rc)) /* not the link: tell the source */
			rmig_ctrl_send_abort(ctx, rc, ctx->err);
		drop_session(d);
	}
	d->expect_round = hello.round;
	ctx->stats.recovery_ms += (uint64_t)(rmig_now_ms() - lost);
	{
		struct rmig_event fev = { .type = RMIG_EV_FAILOVER,
					  .from = from,
					  .transport = rmig_link_kind_name(ctx->link),
					  .detail = why };

		rmig_emit(ctx, &fev);
	}
	rmig_phase_enter(ctx, RMIG_DST_POSTCOPY);
	return 0;
}

/* What stopped us was the listener (rmig_listener_superseded): the source
 * reopened the migration, so this connection is lost to it, whatever our
 * side of it still says. Only a stop or a link failure is taken for that:
 * an ABORT, a stall or a bad frame that came first stays what it was.
 * During the first opening's setup nothing can resume yet: the migration
 * fails as it would have on the lost connection. */
static int superseded(struct dst_run *d, int rc)
{
	if (!d->slot || !rmig_listener_superseded(d->lst, d->slot))
		return rc;
	if (rc != -ECANCELED && !rmig_link_failure(rc))
		return rc;
	d->superseded = 1;
	return rmig_err(d->ctx, -ECONNRESET,
			"the source reconnected: it lost this connection (peer %s)",
			d->ctx->link->peer);
}

/* The link failed: resume pre-copy or recover post-copy, if it can. */
static int link_lost(struct dst_run *d, int rc)
{
	rc = superseded(d, rc);
	rc = rmig_phase(d->ctx) == RMIG_DST_POSTCOPY ? recover(d, rc) : await_resume(d, rc);
	d->superseded = 0;
	return rc;
}

/* The link failed after READY: the source may ask whether we started the
 * guest. Answer for commit_timeout_ms: STARTED, or that we did not (and
 * then never will). */
static void answer_outcome(struct dst_run *d, int started)
{
	struct rmig_ctx *ctx = d->ctx;
	struct rmig_wire_hello hello;
	int64_t end = rmig_now_ms() + ctx->cfg.commit_timeout_ms;
	char why[sizeof(ctx->err)];

	memcpy(why, ctx->err, sizeof(why));
	drop_session(d);
	rmig_phase_enter(ctx, RMIG_DST_AWAITING_QUESTION);
	if (!accept_for_session(d, RMIG_HELLO_QUERY, end, &hello)) {
		if (started)
			rmig_ctrl_send_simple(ctx, RMIG_MSG_STARTED, 0);
		else
			rmig_ctrl_send_abort(ctx, RMIG_ABORT_NOT_STARTED,
					     "the destination did not start the guest and "
					     "discards it");
		close_link(d);
	}
	memcpy(ctx->err, why, sizeof(why));
}

/* The guest runs here: the source's final report (DONE) is due at once. */
static void await_done(struct rmig_ctx *ctx)
{
	rmig_deadline_start(ctx, ctx->cfg.commit_timeout_ms, 0,
			    "no final report for %u ms after STARTED (config.commit_timeout_ms)",
			    ctx->cfg.commit_timeout_ms);
}

/* Post-copy is over, with everything in or not: stop receiving, stop
 * catching faults, count. */
static void postcopy_end(struct dst_run *d, struct rmig_pending_remote *f)
{
	struct rmig_ctx *ctx = d->ctx;

	stop_receivers(d);
	remote_figures(d, f);
	/* Threads blocked in a fault can only go on once faults are no longer
	 * caught; they may hold what a pause waits for. */
	RMIG_PAYLOADS_TELL(&d->ps, load_postcopy_end);
	ctx->stats.postcopy_pages = f->stale;
	ctx->stats.postcopy_requested = f->requested;
	ctx->stats.postcopy_max_wait_ms = f->max_wait_ms;
	ctx->stats.postcopy_ms = (uint64_t)(rmig_now_ms() - d->t_go);
}

/* Post-copy: every page is in. */
static void postcopy_finish(struct dst_run *d)
{
	struct rmig_pending_remote f;

	postcopy_end(d, &f);
	d->all_in = 1;
	d->ctx->stats.result = RMIG_RESULT_MIGRATED;
	await_done(d->ctx);
	rmig_phase_enter(d->ctx, RMIG_DST_MIGRATED);
}

/* Post-copy failed with data still at the source: the guest started here
 * and cannot go on without it, and the source must not run it either (it
 * ran here since). Stop it as far as the backend can. */
static int postcopy_lost(struct dst_run *d, int rc)
{
	struct rmig_ctx *ctx = d->ctx;
	struct rmig_pending_remote f;
	char cause[sizeof(ctx->err)];
	int paused;

	memcpy(cause, ctx->err, sizeof(cause));
	if (rc != -ECONNABORTED)
		rmig_ctrl_send_abort(ctx, RMIG_ABORT_LOST, cause);
	postcopy_end(d, &f);
	paused = ctx->be->ops->pause && !ctx->be->ops->pause(ctx->be);
	ctx->stats.result = RMIG_RESULT_UNKNOWN;
	rmig_err(ctx, rc,
		 "%s; post-copy failed after the guest started here, with %llu of its pages "
		 "still at the source: its memory is split between the two hosts and neither "
		 "can run it (lost). %s",
		 cause, (unsigned long long)f.missing,
		 paused ? "It is paused here: discard it"
			: "This backend cannot pause it: stop and discard it");
	rmig_phase_enter(ctx, RMIG_DST_LOST);
	return rc < 0 ? rc : -EIO;
}

/* Forget the previous migration served on this context. */
static void reset_session(struct rmig_ctx *ctx)
{
	rmig_ctx_drop_conns(ctx);
	memset(&ctx->stats, 0, sizeof(ctx->stats));
	ctx->stats.transport = "none";
	ctx->stats.pin = "none";
	ctx->stats.tls = "off";
	ctx->stats.result = RMIG_RESULT_FAILED;
	ctx->err[0] = 0;
	ctx->link_detail[0] = 0;
	ctx->placement = 0;
	ctx->regions = NULL;
	ctx->nregions = 0;
	ctx->nchan = 0;
	ctx->dry_run = 0;
	ctx->t_start_ms = 0;
	atomic_store(&ctx->no_cancel, 0);
	atomic_store(&ctx->live_bytes, 0);
	rmig_status_begin(ctx); /* the figures by phase start again too */
	ctx->t_start_ms = 0;
	memset(&ctx->deadline, 0, sizeof(ctx->deadline));
	pthread_mutex_lock(&ctx->prog_lock);
	memset(&ctx->prog, 0, sizeof(ctx->prog));
	pthread_mutex_unlock(&ctx->prog_lock);
	rmig_phase_init(ctx, &rmig_dst_machine);
}

/* A handler returns 0 to go on, 1 when the migration is over, or a negative
 * errno (ctx->err set). rmig_ctrl_recv has already refused any message the
 * phase does not accept. */
typedef int (*dst_handler)(struct dst_run *d);

static int started(struct rmig_ctx *ctx)
{
	unsigned phase = rmig_phase(ctx);

	return phase == RMIG_DST_POSTCOPY || phase == RMIG_DST_RECOVERING ||
	       phase == RMIG_DST_MIGRATED;
}

/* A payload's control message: STREAM, DISCARD, PAGE_DATA, DISKS,
 * DISK_DIGESTS. */
static int on_payload_message(struct dst_run *d)
{
	uint8_t type = d->m->type;

	/* Announced data comes only after the start: no more before it, and
	 * no resuming on another link. */
	if (type == RMIG_MSG_DISCARD)
		d->announced = 1;
	if (rmig_phase(d->ctx) == RMIG_DST_RECEIVING) /* a stream's data, announcements */
		rmig_deadline_progress(d->ctx);
	RMIG_EACH_PAYLOAD(&d->ps, p)
	{
		if (p->ops->load_message && type < 32 && (p->ops->msg_types >> type) & 1)
			return p->ops->load_message(p, d->m);
	}
	return rmig_err(d->ctx, -EPROTO,
			"protocol error: unexpected %s during %s: this migration carries nothing "
			"that takes it",
			rmig_msg_name(type), rmig_phase_name(d->ctx->sm.m, rmig_phase(d->ctx)));
}

static int on_round_end(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	const struct rmig_msg *m = d->m;
	int postcopy_round = rmig_phase(ctx) == RMIG_DST_POSTCOPY;
	int rc;

	if (m->u.round_end.h.round != d->expect_round)
		return rmig_err(ctx, -EPROTO, "protocol error: ROUND_END %u out of order",
				m->u.round_end.h.round);
	/* Announced data must stay missing until faults are caught: the round
	 * that follows DISCARD (a sync) is empty. */
	for (unsigned c = 0; d->announced && !postcopy_round && c < ctx->nchan; c++)
		if (m->u.round_end.frames[c])
			return rmig_err(ctx, -EPROTO, "protocol error: pages sent after DISCARD");
	rc = rmig_rx_wait_round(d->rx, m);
	if (rc)
		return link_lost(d, rc);
	RMIG_PAYLOADS_TELL(&d->ps, load_round_done);
	if (postcopy_round) {
		struct rmig_pending_remote f;

		remote_figures(d, &f);
		if (f.missing)
			return rmig_err(ctx, -EPROTO,
					"protocol error: the post-copy round ended with %llu pages "
					"still missing",
					(unsigned long long)f.missing);
		postcopy_finish(d);
	}
	ctx->stats.rounds = d->expect_round;
	rmig_status_round(ctx, d->expect_round + 1); /* the one being received next */
	rmig_deadline_progress(ctx);
	return rmig_ctrl_send_simple(ctx, RMIG_MSG_ROUND_ACK, d->expect_round++);
}

static int on_state(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;

	/* A dry run has no guest here to load a state into, nor to start. */
	if (ctx->dry_run)
		return rmig_err(ctx, -EPROTO, "protocol error: peer %s sent STATE in a dry run",
				ctx->link->peer);

	d->state_len = d->m->u.state.len;
	d->state = malloc(d->state_len ? d->state_len : 1);
	if (!d->state)
		return rmig_err(ctx, -ENOMEM, "no memory for %zu bytes of state", d->state_len);
	memcpy(d->state, d->m->u.state.data, d->state_len);
	/* Every round is acknowledged, so all data is in: the data streams
	 * are done, and their closing is no failure. Post-copy: one round is
	 * still to come. */
	if (!d->postcopy)
		stop_receivers(d);
	rmig_deadline_stop(ctx); /* the source digests its memory now: no clock */
	return rmig_phase_enter(ctx, RMIG_DST_STOP_AND_COPY);
}

static int on_complete(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	int rc = RMIG_PAYLOADS_CALL(&d->ps, load_complete, d->m);

	if (rc)
		return rc;
	/* For a stream: its end; the backend waits until it is loaded. */
	if (!ctx->be->ops->load_state && d->state_len)
		rmig_backend_err(ctx->be, "%s takes no device state, the source sent %zu bytes",
				 ctx->be->ops->name, d->state_len);
	rc = ctx->be->ops->load_state ? ctx->be->ops->load_state(ctx->be, d->state, d->state_len)
	     : d->state_len	      ? -EINVAL
				      : 0;
	if (rc)
		return rmig_err(ctx, rc, "backend: load state: %s", ctx->be->err);
	/* From READY on, a lost link leaves the outcome to GO: we wait for it
	 * or for the source's question. */
	rc = rmig_phase_enter(ctx, RMIG_DST_READY);
	rmig_deadline_start(
	    ctx, ctx->cfg.commit_timeout_ms, 0,
	    "no GO and no question for %u ms after READY (config.commit_timeout_ms)",
	    ctx->cfg.commit_timeout_ms);
	return rc ? rc : rmig_ctrl_send_simple(ctx, RMIG_MSG_READY, 0);
}

static int on_check(struct dst_run *d)
{
	return rmig_ctrl_send_simple(d->ctx, RMIG_MSG_READY, 0);
}

static int on_go(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	int rc;

	if (d->postcopy && (rc = rmig_cancel_close(ctx)))
		return rc;
	d->t_go = rmig_now_ms();
	/* No start op: resuming is starting. */
	rc = ctx->be->ops->start ? ctx->be->ops->start(ctx->be) : ctx->be->ops->resume(ctx->be);
	if (rc)
		return rmig_err(ctx, rc, "backend: start: %s", ctx->be->err);
	if (d->postcopy) {
		/* The guest runs; what it lacks comes on demand. Ending post-copy
		 * early would lose it: the link timeout alone decides. */
		ctx->stats.postcopy = 1;
		rmig_deadline_stop(ctx);
		rmig_phase_enter(ctx, RMIG_DST_POSTCOPY);
	} else {
		ctx->stats.result = RMIG_RESULT_MIGRATED;
		await_done(ctx);
		rmig_phase_enter(ctx, RMIG_DST_MIGRATED);
	}
	rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_STARTED, 0);
	/* Post-copy: the guest runs here without all of its memory, and the
	 * source may not know it: recover as after STARTED (it resumes). */
	return rc && d->postcopy ? link_lost(d, rc) : rc;
}

static int on_done(struct dst_run *d)
{
	d->ctx->stats.downtime_ms = d->m->u.done.downtime_ms;
	d->ctx->stats.total_ms = d->m->u.done.total_ms;
	return 1;
}

/* What each control message does; whether it may come now is the phase
 * table's business (machine.c). */
static const dst_handler dst_handlers[] = {
	[RMIG_MSG_STREAM] = on_payload_message,
	[RMIG_MSG_STREAM_ACK] = on_payload_message, /* the stream's end */
	[RMIG_MSG_ROUND_END] = on_round_end,
	[RMIG_MSG_STATE] = on_state,
	[RMIG_MSG_DISCARD] = on_payload_message,
	[RMIG_MSG_PAGE_DATA] = on_payload_message,
	[RMIG_MSG_COMPLETE] = on_complete,
	[RMIG_MSG_CHECK] = on_check,
	[RMIG_MSG_GO] = on_go,
	[RMIG_MSG_DONE] = on_done,
	[RMIG_MSG_DISKS] = on_payload_message,
	[RMIG_MSG_DISK_DIGESTS] = on_payload_message,
};

int rmig_dest_handles(uint8_t type)
{
	return type < sizeof(dst_handlers) / sizeof(dst_handlers[0]) && dst_handlers[type];
}

/* The control stream failed with rc: the peer's ABORT or a deadline it let
 * pass is the reason; otherwise a receiver's or a payload's failure may be
 * what broke it (they stop control receives to wake us). */
static int why_stopped(struct dst_run *d, int rc)
{
	char why[400];
	int failed;

	if (rc == -ECONNABORTED || rc == -ETIME)
		return rc;
	failed = rmig_rx_failed(d->rx, why, sizeof(why));
	if (failed)
		rc = rmig_err(d->ctx, failed, "%s", why);
	if (rmig_payloads_failed(&d->ps, why, sizeof(why)))
		rc = rmig_err(d->ctx, -EIO, "%s", why);
	return rc;
}

/* The source ended its dry run as planned (ABORT with
 * RMIG_ABORT_DRY_RUN; its reason: the verdict). Nothing was taken. */
static int dry_run_over(struct dst_run *d, int rc)
{
	struct rmig_ctx *ctx = d->ctx;

	if (rc != -ECONNABORTED || !ctx->dry_run || ctx->peer_abort != RMIG_ABORT_DRY_RUN)
		return 0;
	ctx->stats.dry_run = 1;
	snprintf(ctx->stats.dry_run_reason, sizeof(ctx->stats.dry_run_reason), "%.480s", ctx->err);
	ctx->err[0] = 0;
	ctx->stats.result = RMIG_RESULT_DRY_RUN;
	rmig_phase_enter(ctx, RMIG_DST_DRY_RUN);
	return 1;
}

/* Receive and act on control messages until DONE or a failure. */
static int serve_messages(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	int rc;

	for (;;) {
		rc = rmig_ctrl_recv(ctx, d->m, (int)ctx->cfg.link_timeout_ms);
		if (dry_run_over(d, rc))
			return 0;
		if (rc) {
			rc = link_lost(d, why_stopped(d, rc));
			if (rc)
				return rc;
			continue;
		}
		if (!rmig_dest_handles(d->m->type))
			return rmig_err(ctx, -EPROTO, "protocol error: unexpected %s",
					rmig_msg_name(d->m->type));
		rc = dst_handlers[d->m->type](d);
		if (rc)
			return rc > 0 ? 0 : rc;
	}
}

/* The ops a destination calls without asking: a backend that lacks one is
 * refused before listening. */
static int check_backend(struct rmig_ctx *ctx)
{
	const struct rmig_backend_ops *o = ctx->be->ops;
	const char *missing = !o->start && !o->resume		       ? "start (nor resume)"
			      : !o->stream_open && !o->prepare_regions ? "prepare_regions"
								       : NULL;

	return missing
		   ? rmig_err(ctx, -EINVAL, "backend %s cannot be a destination: it has no %s op",
			      o->name, missing)
		   : 0;
}

/* The context's own listener, opened on the first rmig_recv. */
static int own_listener(struct rmig_ctx *ctx, struct rmig_listener **out)
{
	struct rmig_event ev = { .type = RMIG_EV_LISTENING };
	int rc;

	if (!ctx->own_listener) {
		rc = rmig_listener_open(&ctx->own_listener, &ctx->cfg, ctx->err, sizeof(ctx->err));
		if (rc)
			return rc;
		ev.port = rmig_listener_port(ctx->own_listener);
		rmig_emit(ctx, &ev);
	}
	*out = ctx->own_listener;
	return 0;
}

/* Take a sender the listener authenticated and set its migration up:
 * data channels, layout, receivers. */
static int open_migration(struct dst_run *d, int *connected)
{
	struct rmig_ctx *ctx = d->ctx;
	struct rmig_wire_hello hello;
	struct rmig_opening o;
	int rc = check_backend(ctx);

	if (!rc && !d->lst)
		rc = own_listener(ctx, &d->lst);
	if (rc)
		return rc;
	rmig_phase_enter(ctx, RMIG_DST_LISTENING);
	rc = rmig_listener_take_new(
	    d->lst, ctx, ctx->cfg.accept_timeout_ms ? (int)ctx->cfg.accept_timeout_ms : -1,
	    &d->slot, &o);
	if (!rc)
		rc = take_opening(d, &o, &hello);
	if (rc)
		return rc;
	*connected = 1;
	rmig_status_begin(ctx);
	{
		struct rmig_event ev = { .type = RMIG_EV_CONNECTED, .peer = ctx->link->peer };

		rmig_emit(ctx, &ev);
	}
	memcpy(ctx->session, hello.session, RMIG_NONCE_LEN);
	rc = setup_session(d, &hello, 0);
	if (rc)
		return rc;
	start_stall_clock(d);
	rmig_status_setup_done(ctx);
	rmig_status_round(ctx, d->expect_round);
	return rmig_phase_enter(ctx, RMIG_DST_RECEIVING);
}

/* The migration failed in this phase: say so, answer the source's question
 * if GO may have been sent, keep a started guest. Returns the outcome. */
static int fail_migration(struct dst_run *d, int rc)
{
	struct rmig_ctx *ctx = d->ctx;
	unsigned phase = rmig_phase(ctx);
	int accepted = phase != RMIG_DST_IDLE && phase != RMIG_DST_LISTENING &&
		       phase != RMIG_DST_PREALLOCATING;
	int told = 0; /* the source was sent an ABORT */

	if (rmig_cancel_requested(ctx))
		rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator");
	if (phase == RMIG_DST_POSTCOPY || phase == RMIG_DST_RECOVERING) {
		struct rmig_pending_remote f;

		remote_figures(d, &f);
		if (f.missing)
			return postcopy_lost(d, rc);
		/* Every page is in: only the formal end is missing. */
		postcopy_finish(d);
	}
	/* After READY the source may have sent GO and not know what became of
	 * it: whatever went wrong here, answer its question. */
	if (rmig_phase(ctx) == RMIG_DST_READY || started(ctx)) {
		int is_started = started(ctx);

		if (!is_started && rc != -ECONNABORTED)
			told = !rmig_ctrl_send_abort(ctx, rc, ctx->err);
		/* A deadline passed on a link that works: the ABORT just sent
		 * tells the source, which has nothing to ask. */
		if (rc != -ECONNABORTED && !(rc == -ETIME && told))
			answer_outcome(d, is_started);
		if (is_started) {
			/* The guest runs here: the migration succeeded, only the
			 * final figures are missing. */
			char why[sizeof(ctx->err) + 64];
			struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = why };

			snprintf(why, sizeof(why),
				 "guest started, but the source's final report is missing: %s",
				 ctx->err);
			rmig_emit(ctx, &ev);
			ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
			ctx->stats.downtime_ms = (uint64_t)(rmig_now_ms() - d->t_go);
			return 0;
		}
	}
	if ((accepted || rc != -ECONNABORTED) && !told)
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
	ctx->stats.verified = 0;
	ctx->stats.disks_verified = 0;
	ctx->stats.result = accepted ? RMIG_RESULT_ROLLED_BACK : RMIG_RESULT_FAILED;
	rmig_phase_enter(ctx, RMIG_DST_DISCARDED);
	return rc < 0 ? rc : -EIO;
}

static int serve_one(struct rmig_ctx *ctx, struct rmig_listener *lst)
{
	struct dst_run d = { .ctx = ctx, .lst = lst, .expect_round = 1 };
	int rc, connected = 0;

	reset_session(ctx);
	d.m = calloc(1, sizeof(*d.m));
	if (!d.m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	rc = open_migration(&d, &connected);
	if (!rc)
		rc = serve_messages(&d);
	if (rc && connected)
		rc = fail_migration(&d, superseded(&d, rc));
	rmig_heartbeat_stop(ctx);
	/* Whatever the outcome, the peer may not write our memory any more. */
	if (connected && ctx->link->ops->mem_release)
		ctx->link->ops->mem_release(ctx->link);
	if (d.rx) /* and what arrived of a round cut short is counted */
		stop_receivers(&d);
	rmig_rx_destroy(d.rx);
	RMIG_PAYLOADS_TELL(&d.ps, load_cleanup);
	/* Drop the connections; the listener forgets the migration. */
	if (connected) {
		rmig_link_note_sealing(ctx);
		rmig_rails_note(ctx);
		close_link(&d);
	}
	if (d.lst)
		rmig_listener_leave(d.lst, d.slot);
	if (ctx->stats.total_ms == 0 && ctx->t_start_ms)
		ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
	free(d.state);
	free(d.m);
	return rc;
}

/* The thread's message too (rmig_last_error), as every public function. */
static int serve_one_said(struct rmig_ctx *ctx, struct rmig_listener *lst)
{
	int rc = serve_one(ctx, lst);

	return rc ? rmig_fail_msg(rc, ctx->err) : 0;
}

int rmig_recv(struct rmig_ctx *ctx)
{
	if (!ctx)
		return rmig_fail(-EINVAL, "rmig_recv: no context");
	return serve_one_said(ctx, NULL);
}

int rmig_recv_from(struct rmig_ctx *ctx, struct rmig_listener *lst)
{
	if (!ctx)
		return rmig_fail(-EINVAL, "rmig_recv_from: no context");
	if (!lst)
		return rmig_fail_msg(rmig_err(ctx, -EINVAL, "no listener"), ctx->err);
	return serve_one_said(ctx, lst);
}
