/* source.c - the sending side's session: connect and authenticate, the
 * rounds and their barrier (ROUND_END / ROUND_ACK), convergence, the pause,
 * the two-phase commit (READY, CHECK, GO, STARTED), failover to another
 * link and, after a lost GO, asking the outcome. What moves is the
 * payloads' business (engine/payload/): the session calls their ops at
 * fixed points and never looks inside.
 *
 * Threads: the caller's thread runs the session; the data channels'
 * senders (channels.c) send what the payloads queue. A round ends when the
 * senders are idle, ROUND_END (frames per channel) is sent and the
 * destination's ROUND_ACK says every frame of the round is in its memory.
 * The next round starts only then, so that a page is never applied out of
 * order across rounds.
 *
 * Post-copy (cfg.postcopy): when pre-copy would switch over, the payloads
 * announce what is still here (most of it before the pause, synced by an
 * empty round), then the device state and COMPLETE; after STARTED the
 * announced data goes as one more round (a pusher thread) while this thread
 * answers the destination's requests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "channels.h"
#include "converge.h"
#include "digest.h"
#include "engine.h"
#include "last_error.h"
#include "machine.h"
#include "payload.h"
#include "placement.h"

#define MIN_BW_SAMPLE (1u << 20)
/* Post-copy: announcements before the pause, at most; and fewer new ones
 * than this are left to the pause (dropping a page costs the destination
 * some 15 us, mostly splitting huge pages). */
#define PREDROP_PASSES 4
#define PREDROP_ENOUGH 512
#define NAP_SLICE_MS 20 /* a wait between reconnections looks for a cancel this often */
/* A dry run's probe: about a second of real pages, at most 64 MiB (and at
 * least 64 KiB, a measure rather than a round trip). */
#define PROBE_MS 1000
#define PROBE_MAX_BYTES (64ull << 20)
#define PROBE_MIN_BYTES (64ull << 10)

/* One rmig_send call. */
struct sender {
	struct rmig_ctx *ctx;
	struct rmig_tx_pool *tx;
	struct rmig_payload_set ps;
	struct rmig_payload *live; /* a payload that migrates itself (no rounds of ours) */
	/* Beside a live one, a payload with rounds (a guest's disks): its
	 * pre-copy runs before the hypervisor's, its last round at the
	 * hypervisor's pause. */
	int live_with_rounds;
	_Atomic unsigned last_live_round; /* that last round, once it is out */
	_Atomic int last_live_round_acked;
	double precopy_bw; /* bytes/s the last pre-copy round measured */
	int postcopy;	   /* switch over by post-copy */
	/* The backend was asked to stop or hand over the guest: a rollback
	 * must resume it. */
	int must_resume;
	struct rmig_converge_state conv;
	double fixed_ms; /* a switch-over's fixed cost (round trips, full digests) */
	struct rmig_digest_probe digest; /* if verifying: measured while connecting */
	int64_t t_pause;
	unsigned round;
	int started; /* STARTED came: the guest runs at the destination */
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* sleep_ms, but a cancel ends it within NAP_SLICE_MS. */
static void nap(struct rmig_ctx *ctx, unsigned ms)
{
	for (unsigned slept = 0; slept < ms && !rmig_cancel_requested(ctx); slept += NAP_SLICE_MS)
		sleep_ms(ms - slept < NAP_SLICE_MS ? ms - slept : NAP_SLICE_MS);
}

static int guest_paused(struct rmig_payload *p);
static int live_link_lost(struct rmig_payload *p, int rc);
static int live_control_message(struct rmig_payload *p, const struct rmig_msg *m);
static int live_tick(struct rmig_payload *p);

static const struct rmig_payload_hooks source_hooks = { .guest_paused = guest_paused,
							.link_lost = live_link_lost,
							.control_message = live_control_message,
							.live_tick = live_tick };

/* CPU time of the calling thread, in microseconds. */
static int64_t thread_cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Group the regions by the NUMA node holding them (their first page), and
 * give every group at least one channel, running on its node. */
static void plan_channels(struct rmig_ctx *ctx)
{
	ctx->ngroups = 0;
	for (size_t ri = 0; ri < ctx->nregions; ri++) {
		int node = rmig_numa_node_of(ctx->regions[ri].host);
		unsigned g = 0;

		while (g < ctx->ngroups && ctx->group_node[g] != node)
			g++;
		if (g == ctx->ngroups && g < RMIG_MAX_NODE_GROUPS)
			ctx->group_node[ctx->ngroups++] = node;
		ctx->region_group[ri] = (uint8_t)(g < ctx->ngroups ? g : 0);
	}
	if (!ctx->ngroups)
		ctx->group_node[ctx->ngroups++] = -1;
	ctx->nchan = ctx->cfg.channels < ctx->ngroups ? ctx->ngroups : ctx->cfg.channels;
	for (unsigned c = 0; c < ctx->nchan; c++)
		ctx->chan_node[c] = ctx->group_node[c % ctx->ngroups];
}

/* RDMA placement: take the destination's memory description (empty: it
 * offers none) and register ours; else pages go through the streams. */
static int take_memory(struct rmig_ctx *ctx, const struct rmig_msg *m)
{
	struct rmig_link *l = ctx->link;
	struct rmig_link_mem mem[RMIG_MAX_REGIONS];
	int rc;

	if (!m->u.state.len) {
		if (ctx->cfg.pin == RMIG_PIN_ALL)
			return rmig_err(
			    ctx, -EOPNOTSUPP,
			    "config.pin=all: the destination does not offer its memory for "
			    "RDMA WRITE (it runs config.pin=staging or could not register it)");
		snprintf(ctx->link_detail, sizeof(ctx->link_detail),
			 "destination offers no registered memory: using staging buffers");
		return 0;
	}
	/* Registering pinned the destination's memory: all of it is backed,
	 * whether or not we can use the registration. */
	ctx->first_touch_bytes = 0;
	rmig_link_mem_of_regions(ctx, mem);
	rc = l->ops->mem_import(l, mem, ctx->nregions, m->u.state.data, m->u.state.len);
	if (rc && ctx->cfg.pin == RMIG_PIN_ALL)
		return rmig_err(ctx, rc, "config.pin=all: %s", l->err);
	if (rc) {
		snprintf(ctx->link_detail, sizeof(ctx->link_detail),
			 "guest memory not registered (%s): using staging buffers", l->err);
		return 0;
	}
	ctx->placement = 1;
	return 0;
}

enum open_kind { OPEN_NEW, OPEN_RESUME, OPEN_QUERY };

/* A destination that keeps no digests of its own pages (an older rmig)
 * does not echo the capability: verify all memory at the pause instead. */
static void chunk_digests_or_full(struct rmig_ctx *ctx, uint64_t peer_caps)
{
	struct rmig_event ev = { .type = RMIG_EV_WARNING,
				 .detail = "the destination keeps no per-chunk digests (an older "
					   "rmig): config.verify=full, all memory is digested "
					   "during the pause" };

	if (ctx->cfg.verify != RMIG_VERIFY_ON || (peer_caps & RMIG_CAP_CHUNK_DIGESTS))
		return;
	ctx->cfg.verify = RMIG_VERIFY_FULL;
	rmig_emit(ctx, &ev);
}

/* The opening of every connection: HELLO both ways, versions, then who the
 * peer is (authentication). Nothing about the guest is sent before. */
static int open_steps(struct rmig_ctx *ctx, enum open_kind kind, uint32_t round, struct rmig_msg *m)
{
	int tmo = (int)ctx->cfg.link_timeout_ms, rc, ask_placement;
	int postcopy = kind != OPEN_QUERY && ctx->cfg.postcopy;
	int ask_rails = kind != OPEN_QUERY && rmig_rails_wanted(ctx->link);
	struct rmig_wire_hello ours;
	uint64_t peer_caps;
	uint16_t lo, hi;

	ctx->ctrl_tx_seq = ctx->ctrl_rx_seq = 0;
	ctx->peer_proven = 0; /* a new connection: nobody has proved anything */
	ctx->peer_abort = 0;
	/* Without a key, refuse a remote peer before telling it anything. */
	if (!ctx->cfg.psk && (rc = rmig_auth_policy(ctx, 0, 1)))
		return rc;
	if (getrandom(ctx->nonce, sizeof(ctx->nonce), 0) != sizeof(ctx->nonce))
		return rmig_err(ctx, -EIO, "getrandom failed");
	if (kind == OPEN_NEW)
		memcpy(ctx->session, ctx->nonce, RMIG_NONCE_LEN);
	/* Post-copy pages are placed by the destination's CPU, not RDMA WRITE. */
	ask_placement = kind != OPEN_QUERY && ctx->nregions && ctx->link->ops->chan_write &&
			ctx->cfg.pin != RMIG_PIN_STAGING && !ctx->cfg.postcopy && !ctx->dry_run;
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_HELLO;
	m->u.hello = (struct rmig_wire_hello){
		.ver_min = RMIG_WIRE_VERSION_MIN,
		.ver_max = RMIG_WIRE_VERSION_MAX,
		.channels = ctx->nchan,
		.caps = (ask_placement ? RMIG_CAP_PLACEMENT : 0) |
			(postcopy ? RMIG_CAP_POSTCOPY : 0) |
			(ctx->cfg.verify == RMIG_VERIFY_ON ? RMIG_CAP_CHUNK_DIGESTS : 0) |
			(kind != OPEN_QUERY ? ctx->payload_caps : 0) |
			(ctx->dry_run ? RMIG_CAP_DRYRUN : 0) | (ask_rails ? RMIG_CAP_RAILS : 0),
		.flags = (ctx->cfg.psk ? RMIG_HELLO_PSK : 0) |
			 (kind == OPEN_RESUME ? RMIG_HELLO_RESUME : 0) |
			 (kind == OPEN_QUERY ? RMIG_HELLO_QUERY : 0),
		.round = round,
	};
	memcpy(m->u.hello.nonce, ctx->nonce, RMIG_NONCE_LEN);
	memcpy(m->u.hello.session, ctx->session, RMIG_NONCE_LEN);
	ours = m->u.hello;
	rc = rmig_ctrl_send(ctx, m);
	if (!rc)
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_HELLO, m, tmo);
	if (rc)
		return rc;
	lo =
	    m->u.hello.ver_min > RMIG_WIRE_VERSION_MIN ? m->u.hello.ver_min : RMIG_WIRE_VERSION_MIN;
	hi =
	    m->u.hello.ver_max < RMIG_WIRE_VERSION_MAX ? m->u.hello.ver_max : RMIG_WIRE_VERSION_MAX;
	if (lo > hi)
		rc = rmig_err(ctx, -EPROTONOSUPPORT,
			      "version mismatch: peer speaks %u..%u, we speak %d..%d",
			      m->u.hello.ver_min, m->u.hello.ver_max, RMIG_WIRE_VERSION_MIN,
			      RMIG_WIRE_VERSION_MAX);
	memcpy(ctx->peer_nonce, m->u.hello.nonce, RMIG_NONCE_LEN);
	peer_caps = m->u.hello.caps;
	if (!rc)
		rc = rmig_auth_policy(ctx, (m->u.hello.flags & RMIG_HELLO_PSK) != 0, 1);
	if (!rc)
		rc = rmig_auth_exchange(ctx, 1, &ours, &m->u.hello);
	/* The destination sends its rails right after the proofs, and they
	 * are needed before the data channels: each goes to the peer's rail
	 * of its node. */
	if (!rc && kind != OPEN_QUERY)
		rc = rmig_rails_learn(ctx, ask_rails, peer_caps, m);
	/* A receiver that can catch its guest's faults says so; one that
	 * cannot refuses with its reason, one that predates post-copy is silent. */
	if (!rc && postcopy && !(peer_caps & RMIG_CAP_POSTCOPY))
		rc = rmig_err(ctx, -EOPNOTSUPP,
			      "the destination %s does not support post-copy (an older rmig)",
			      ctx->link->peer);
	if (!rc && kind != OPEN_QUERY && (ctx->payload_caps & ~peer_caps & RMIG_CAP_DISKS))
		rc = rmig_err(ctx, -EOPNOTSUPP,
			      "the destination %s does not take disks (an older rmig)",
			      ctx->link->peer);
	/* An older destination would take the guest for real: stop here. */
	if (!rc && ctx->dry_run && !(peer_caps & RMIG_CAP_DRYRUN))
		rc = rmig_err(ctx, -EOPNOTSUPP,
			      "the destination %s does not support dry runs (an older rmig): "
			      "nothing about the guest was sent",
			      ctx->link->peer);
	if (!rc && kind == OPEN_NEW)
		chunk_digests_or_full(ctx, peer_caps);
	if (rc && rc != -ECONNABORTED)
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
	return rc;
}

/* How long an attempt may take: twice the link timeout, and no longer than
 * the time left until end (absolute, ms; 0: no end). */
static unsigned attempt_ms(const struct rmig_ctx *ctx, int64_t end)
{
	int64_t limit = 2 * (int64_t)ctx->cfg.link_timeout_ms, left = end - rmig_now_ms();

	if (end && left < limit)
		limit = left > 1 ? left : 1;
	return (unsigned)limit;
}

/* The opening has a deadline as a whole (twice the link timeout, or until
 * end): a peer that sends heartbeats instead of its HELLO, AUTH or RAILS,
 * keeping each wait short of the link timeout, must not hold the source
 * there (a new migration, a failover, a question after GO) past it. */
static int open_session(struct rmig_ctx *ctx, enum open_kind kind, uint32_t round,
			struct rmig_msg *m, int64_t end)
{
	struct rmig_deadline watch = ctx->deadline;
	unsigned limit = attempt_ms(ctx, end);
	int rc;

	if (limit < 2 * ctx->cfg.link_timeout_ms)
		rmig_deadline_start(
		    ctx, limit, 0,
		    "no opening (HELLO, AUTH, rails) in the %u ms left of its attempt", limit);
	else
		rmig_deadline_start(ctx, limit, 0, "no opening (HELLO, AUTH, rails) within %u ms",
				    limit);
	rc = open_steps(ctx, kind, round, m);
	ctx->deadline = watch;
	return rc;
}

static void emit_connected(struct rmig_ctx *ctx)
{
	struct rmig_event ev = { .type = RMIG_EV_CONNECTED, .peer = ctx->link->peer };

	rmig_emit(ctx, &ev);
}

/* After the opening: data channels, the layout (REGIONS, REGIONS_ACK: the
 * destination took it, or refused with an ABORT), RDMA placement if both
 * sides can. */
static int offer_layout(struct rmig_ctx *ctx, struct rmig_msg *m)
{
	int tmo = (int)ctx->cfg.link_timeout_ms, rc = 0;
	int ask_placement = ctx->nregions && ctx->link->ops->chan_write &&
			    ctx->cfg.pin != RMIG_PIN_STAGING && !ctx->cfg.postcopy && !ctx->dry_run;

	for (unsigned i = 0; i < ctx->nchan; i++) {
		uint8_t hdr[RMIG_FRAME_HDR_LEN + RMIG_CHANNEL_LEN];
		uint64_t seq = 0;
		unsigned chan;

		rc = ctx->link->ops->connect_channel(ctx->link, tmo, ctx->chan_node[i], &chan);
		if (rc)
			return rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
		m->type = RMIG_MSG_CHANNEL;
		memcpy(m->u.channel.token, ctx->token, RMIG_NONCE_LEN);
		m->u.channel.index = chan;
		m->u.channel.count = ctx->nchan;
		rmig_msg_encode(m, hdr + RMIG_FRAME_HDR_LEN, RMIG_CHANNEL_LEN);
		rc = rmig_chan_send_frame(ctx, chan, &seq, RMIG_MSG_CHANNEL, hdr, RMIG_CHANNEL_LEN,
					  NULL, 0);
		if (rc)
			return rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
	}
	m->type = RMIG_MSG_REGIONS;
	m->u.layout = ctx->layout;
	rc = rmig_ctrl_send(ctx, m);
	/* Heartbeats from here: registering a large guest (take_memory) can take
	 * longer than the destination's link timeout. */
	if (!rc)
		rc = rmig_heartbeat_start(ctx);
	if (!rc)
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_REGIONS_ACK, m, tmo);
	if (!rc) /* checked by the decoder */
		ctx->first_touch_bytes = m->u.value;
	if (!rc && ask_placement) {
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_MEM_KEYS, m, tmo);
		if (!rc)
			rc = take_memory(ctx, m);
		if (rc)
			rmig_ctrl_send_abort(ctx, rc, ctx->err);
	}
	if (!rc)
		rmig_link_chosen(ctx);
	return rc;
}

/* A new migration or its resumption on another link: open (until end, 0:
 * twice the link timeout), then the layout. */
static int handshake(struct rmig_ctx *ctx, enum open_kind kind, uint32_t round, int64_t end)
{
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc;

	if (!m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	ctx->placement = 0;
	rc = open_session(ctx, kind, round, m, end);
	if (!rc && kind == OPEN_NEW)
		emit_connected(ctx);
	if (!rc)
		rc = offer_layout(ctx, m);
	free(m);
	return rc;
}

/* Every op on the session's link returns -ECANCELED, blocked ones within a
 * link's wait slice; the connections stay as they are. */
static void stop_session(struct rmig_ctx *ctx)
{
	struct rmig_link *l = ctx->link;

	l->ops->interrupt(l, RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV |
				 RMIG_LINK_STOP_CTRL_SEND);
	rmig_heartbeat_pause(ctx, 1);
}

static void close_session(struct rmig_ctx *ctx)
{
	struct rmig_link *l = ctx->link;

	if (l->ops->mem_release)
		l->ops->mem_release(l);
	l->ops->close_session(l);
	ctx->placement = 0;
}

/* Stop every op on the current link and drop its session. */
static void drop_session(struct rmig_ctx *ctx)
{
	stop_session(ctx);
	close_session(ctx);
}

static void emit_failover_warning(struct rmig_ctx *ctx, const char *why, const char *what,
				  const char *to)
{
	char msg[sizeof(ctx->err) + 64];
	struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = msg };

	snprintf(msg, sizeof(msg), "link lost (%s): %s %s", why, what, to);
	rmig_emit(ctx, &ev);
}

/* Resume on the connected link, opening and layout, by end: a peer that
 * sends heartbeats in place of REGIONS_ACK (or a data channel's answer)
 * must not hold the failover past its time. */
static int resume_by(struct rmig_ctx *ctx, unsigned next_round, int64_t end)
{
	struct rmig_deadline watch = ctx->deadline;
	int64_t left = end - rmig_now_ms();
	int rc;

	rmig_deadline_start(ctx, left > 1 ? (unsigned)left : 1, 0,
			    "no resumption in the %lld ms left to fail over", (long long)left);
	rc = handshake(ctx, OPEN_RESUME, next_round, end);
	ctx->deadline = watch;
	return rc;
}

/* Connect `to` and resume the migration on it, trying until end_ms. */
static int reconnect(struct rmig_ctx *ctx, struct rmig_link *to, unsigned next_round, int64_t end)
{
	int rc = -ETIMEDOUT;

	for (;;) {
		int64_t left = end - rmig_now_ms();
		int tmo =
		    left < ctx->cfg.link_timeout_ms ? (int)left : (int)ctx->cfg.link_timeout_ms;

		if (left <= 0 || rmig_cancel_requested(ctx))
			return rc;
		rc = to->ops->connect_ctrl(to, ctx->cfg.host, ctx->cfg.port, tmo);
		if (rc)
			rmig_err(ctx, rc, "%s", to->err);
		else
			rc = resume_by(ctx, next_round, end);
		if (!rc)
			return 0;
		rmig_heartbeat_pause(ctx, 1);
		to->ops->close_session(to);
		/* The destination said no: asking again will not help. Only
		 * the destination that proved the key can say so: whoever
		 * else answers at its address (an ABORT, no key, another
		 * version) is asked again until end. */
		if (rc == -ECONNABORTED && ctx->peer_proven)
			return rc;
		nap(ctx, 250);
	}
}

/* The link failed during pre-copy or stop-and-copy (before READY): resume
 * the same migration over the fallback link (config.failover). The
 * destination keeps what it acknowledged; the payloads send again what the
 * lost round carried, in the next round (next_round). 0 when the migration
 * goes on, in the phase it was in; else the first error, and the
 * failover's. */
static int failed_over(struct sender *s, struct rmig_link *from, struct rmig_link *to,
		       unsigned back, const char *why, const char *from_rail, const char *to_rail)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_event ev = { .type = RMIG_EV_FAILOVER,
				 .from = rmig_link_kind_name(from),
				 .transport = rmig_link_kind_name(to),
				 .detail = why,
				 .from_rail = from_rail,
				 .to_rail = to_rail };

	rmig_tx_restart(s->tx);
	ctx->stats.failovers++;
	rmig_emit(ctx, &ev);
	rmig_phase_enter(ctx, back);
	return 0; /* handshake restarted the heartbeats */
}

static int failover(struct sender *s, int rc, unsigned next_round)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_link *from = ctx->link, *to;
	unsigned back = rmig_phase(ctx);
	char why[sizeof(ctx->err)], lost[RMIG_LINK_RAIL_NAME], rail[RMIG_LINK_RAIL_NAME];
	int64_t end;
	int on_rail;

	if (rmig_link_failure(rc))
		rc = rmig_ctrl_last_words(ctx, rc);
	if (ctx->cfg.failover == RMIG_FAILOVER_NONE || !rmig_link_failure(rc) ||
	    atomic_load(&ctx->cancelled))
		return rc;
	memcpy(why, ctx->err, sizeof(why));
	end = rmig_now_ms() + ctx->cfg.failover_timeout_ms; /* the destination waits that long */
	stop_session(ctx);
	rmig_tx_wait(s->tx);
	/* One rail lost and another left: the same link first, over it. Asked
	 * once the senders are back, so that nothing polls the connections
	 * while the link reads what became of them. */
	on_rail = !rmig_rails_failover(ctx, lost, rail, sizeof(rail));
	close_session(ctx);
	RMIG_PAYLOADS_TELL(&s->ps, save_rewind);
	rmig_phase_enter(ctx, RMIG_SRC_FAILOVER);
	if (on_rail) { /* half the time: the rest is the failover link's */
		emit_failover_warning(ctx, why, "moving its channels to rail", rail);
		rc = reconnect(ctx, from, next_round,
			       rmig_now_ms() + ctx->cfg.failover_timeout_ms / 2);
		if (!rc && !atomic_load(&ctx->cancelled)) {
			rmig_rails_moved(ctx, lost, rail, sizeof(rail)); /* a guess undone */
			return failed_over(s, from, from, back, why, lost, rail);
		}
		drop_session(ctx);
	}
	to = rmig_links_fallback(ctx);
	if (!to)
		return rmig_err(ctx, rc, "%s; no link to fail over to", why);
	emit_failover_warning(ctx, why, "failing over to", rmig_link_kind_name(to));
	ctx->link = to;
	rc = reconnect(ctx, to, next_round, end);
	if (rc || atomic_load(&ctx->cancelled)) {
		char failed[sizeof(ctx->err)];

		memcpy(failed, ctx->err, sizeof(failed));
		return rmig_err(ctx, rc ? rc : -ECANCELED, "%s; failover to %s failed: %s", why,
				rmig_link_kind_name(to),
				atomic_load(&ctx->cancelled) ? "cancelled" : failed);
	}
	return failed_over(s, from, to, back, why, NULL, NULL);
}

/* A payload that migrates itself (a hypervisor's stream) lost the link:
 * fail over as a round would; the payload replays what did not arrive. */
static int live_link_lost(struct rmig_payload *p, int rc)
{
	struct sender *s = p->session;
	char why[sizeof(s->ctx->err)];

	/* The disks' last round, sent at the hypervisor's pause, cannot be
	 * sent again (the hypervisor let go of the disks since): a link lost
	 * before its acknowledgement rolls back. */
	if (atomic_load(&s->last_live_round) && !atomic_load(&s->last_live_round_acked)) {
		memcpy(why, s->ctx->err, sizeof(why));
		return rmig_err(s->ctx, rc,
				"%s; the link was lost before the destination acknowledged the "
				"disks' last round, which cannot be sent again: rolling back",
				why);
	}
	return failover(s, rc, ++s->round);
}

/* One question on l: connect, open, the answer. The answer has the same
 * deadline as the whole attempt, so that a peer sending heartbeats in its
 * place (nobody proves anything without a key) cannot hold the source past
 * end. */
static int ask_once(struct rmig_ctx *ctx, struct rmig_link *l, struct rmig_msg *m, int tmo,
		    int64_t end)
{
	struct rmig_deadline watch = ctx->deadline;
	unsigned limit = attempt_ms(ctx, end);
	int rc;

	rmig_deadline_start(ctx, limit, 0, "no answer (did the guest start?) within %u ms", limit);
	rc = l->ops->connect_ctrl(l, ctx->cfg.host, ctx->cfg.port, tmo);
	if (!rc)
		rc = open_session(ctx, OPEN_QUERY, 0, m, end);
	if (!rc)
		rc = rmig_ctrl_recv(ctx, m, tmo);
	ctx->deadline = watch;
	return rc;
}

/* The link failed after GO: did the destination start the guest? Ask over
 * any link until commit_timeout_ms. 1: it runs there; 0: it did not and
 * has discarded it; <0: unknown. */
static int ask_outcome(struct rmig_ctx *ctx)
{
	int64_t end = rmig_now_ms() + ctx->cfg.commit_timeout_ms;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	char why[sizeof(ctx->err)];
	int rc = -ETIMEDOUT;

	if (!m)
		return -ENOMEM;
	memcpy(why, ctx->err, sizeof(why));
	drop_session(ctx);
	rmig_phase_enter(ctx, RMIG_SRC_ASKING);
	while (rmig_now_ms() < end) {
		for (unsigned i = 0; i < rmig_links_count(ctx); i++) {
			struct rmig_link *l = rmig_links_at(ctx, i);
			int64_t left = end - rmig_now_ms();
			int tmo = left < ctx->cfg.link_timeout_ms ? (int)left
								  : (int)ctx->cfg.link_timeout_ms;

			if (left <= 0)
				break;
			ctx->link = l;
			l->ops->close_session(l); /* also clears a cancel's interrupt */
			rc = ask_once(ctx, l, m, tmo, end);
			l->ops->close_session(l);
			if (!rc && m->type == RMIG_MSG_STARTED) {
				rc = 1;
				goto out;
			}
			if (rc == -ECONNABORTED && ctx->peer_abort == RMIG_ABORT_NOT_STARTED) {
				rc = 0;
				goto out;
			}
		}
		sleep_ms(250);
	}
	rc = -ETIMEDOUT;
out:
	memcpy(ctx->err, why, sizeof(why));
	free(m);
	return rc;
}

/* The device state, taken while paused. */
static int send_state(struct rmig_ctx *ctx)
{
	struct rmig_msg m = { .type = RMIG_MSG_STATE };
	void *blob = NULL;
	size_t len = 0;
	int rc;

	/* No save_state op: a guest with no device state. */
	rc = ctx->be->ops->save_state ? ctx->be->ops->save_state(ctx->be, &blob, &len) : 0;
	if (rc) {
		rmig_err(ctx, rc, "backend: save state: %s", ctx->be->err);
		goto out;
	}
	if (len > RMIG_MAX_STATE) {
		rc = rmig_err(ctx, -EFBIG, "device state of %zu bytes exceeds %u", len,
			      RMIG_MAX_STATE);
		goto out;
	}
	m.u.state.data = blob;
	m.u.state.len = (uint32_t)len;
	rc = rmig_ctrl_send(ctx, &m);
out:
	free(blob);
	return rc;
}

/* A control message for a payload (post-copy's PAGE_REQUEST). */
static int to_payload(struct sender *s, const struct rmig_msg *m)
{
	RMIG_EACH_PAYLOAD(&s->ps, p)
	{
		if (p->ops->save_message && m->type < 32 && (p->ops->msg_types >> m->type) & 1)
			return p->ops->save_message(p, m);
	}
	return rmig_err(s->ctx, -EPROTO,
			"protocol error: peer %s sent %s during %s: this migration carries "
			"nothing that takes it",
			s->ctx->link->peer, rmig_msg_name(m->type),
			rmig_phase_name(s->ctx->sm.m, rmig_phase(s->ctx)));
}

/* rmig_ctrl_expect, but a payload's message may come first (post-copy: a
 * PAGE_REQUEST at any time from COMPLETE on, as the destination's backend
 * may touch memory while it loads the state): it is served at once. */
static int expect_serving(struct sender *s, uint8_t type, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc;

	for (;;) {
		rc = rmig_ctrl_recv(ctx, m, (int)ctx->cfg.link_timeout_ms);
		if (rc || m->type == type)
			return rc;
		rc = to_payload(s, m);
		if (rc)
			return rc;
	}
}

/* The queued data is out (and, placed by RDMA WRITE, in the peer's
 * memory), and ROUND_END (in m) says how many frames each channel carried. */
static int round_out(struct sender *s, struct rmig_round_stats *rs, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc = rmig_tx_wait(s->tx);

	for (unsigned i = 0; !rc && ctx->placement && i < ctx->nchan; i++) {
		rc = ctx->link->ops->chan_flush(ctx->link, i, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			rc = rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
	}
	if (rc)
		return rc;
	rmig_tx_round_end(s->tx, rs, m);
	return rmig_ctrl_send(ctx, m);
}

/* The round barrier: the round out, then ROUND_ACK says the destination
 * holds all of it. A payload's message may come first: after a failover
 * in the disks' pre-copy, before a hypervisor's stream began, the
 * destination's first word on the new link is where its stream stands
 * (STREAM_ACK 0), which the stream payload takes. */
static int round_barrier(struct sender *s, struct rmig_round_stats *rs)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg m;
	int rc = round_out(s, rs, &m);

	if (!rc)
		rc = expect_serving(s, RMIG_MSG_ROUND_ACK, &m);
	if (!rc && m.u.value != rs->round)
		rc = rmig_err(ctx, -EPROTO, "protocol error: ROUND_ACK for round %llu, expected %u",
			      (unsigned long long)m.u.value, rs->round);
	return rc;
}

/* What a round put on the wire counts, acknowledged or not: a rollback's
 * summary shows what moved. The senders are idle once this returns. */
static void count_sent(struct sender *s, struct rmig_round_stats *rs)
{
	struct rmig_ctx *ctx = s->ctx;

	rmig_tx_idle(s->tx);
	rmig_tx_round_figures(s->tx, rs);
	ctx->stats.pages_sent += rs->pages;
	ctx->stats.zero_pages += rs->zero_pages;
	ctx->stats.bytes_sent += rs->bytes;
}

/* One round: every payload queues what changed, then the barrier. */
static int send_round(struct sender *s, struct rmig_round_stats *rs)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc;

	ctx->stats.rounds = rs->round; /* a round cut short went out too */
	rmig_status_round(ctx, rs->round);
	rmig_tx_new_round(s->tx);
	rc = RMIG_PAYLOADS_CALL(&s->ps, save_round, s->tx, rs->round);
	if (!rc)
		rc = round_barrier(s, rs);
	count_sent(s, rs);
	if (rc)
		return rc;
	RMIG_PAYLOADS_TELL(&s->ps, save_acked);
	return 0;
}

static int fetch_pending(struct sender *s, struct rmig_pending *sum)
{
	*sum = (struct rmig_pending){ 0 };
	RMIG_EACH_PAYLOAD(&s->ps, p)
	{
		struct rmig_pending one;
		int rc = p->ops->save_pending ? p->ops->save_pending(p, &one) : 0;

		if (rc)
			return rc;
		if (p->ops->save_pending) {
			sum->bytes += one.bytes;
			sum->units += one.units;
			sum->landing_bytes += one.landing_bytes;
		}
	}
	return 0;
}

static void update_progress(struct rmig_ctx *ctx, const struct rmig_round_stats *rs,
			    uint64_t remaining)
{
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->prog.round = rs->round + 1;
	ctx->prog.bandwidth = rs->bandwidth;
	ctx->prog.dirty_rate = rs->dirty_rate;
	ctx->prog.remaining_bytes = remaining;
	ctx->prog.expected_downtime_ms = rs->expected_downtime_ms;
	pthread_mutex_unlock(&ctx->prog_lock);
}

/* What the convergence policy decided after a round: 1 switch over, 0 go
 * on, or an error. */
static int decide(struct sender *s, const struct rmig_round_stats *rs,
		  const struct rmig_pending *pend)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_converge_input in = { .round = rs->round,
					  .max_rounds = ctx->cfg.max_rounds,
					  .downtime_ms = atomic_load(&ctx->limit_downtime_ms),
					  .policy = ctx->cfg.on_no_converge,
					  .can_throttle = ctx->be->ops->throttle != NULL,
					  .out_of_time = ctx->cfg.timeout_ms &&
							 rmig_now_ms() - ctx->t_start_ms >=
							     (int64_t)ctx->cfg.timeout_ms,
					  .expected_ms = rs->expected_downtime_ms,
					  .fixed_ms = s->fixed_ms,
					  .sent_bytes = rs->bytes,
					  .dirtied_bytes = pend->bytes };
	enum rmig_converge_decision d = rmig_converge_decide(&in, &s->conv);
	int rc;

	/* The operator asked for post-copy now (rmig_start_postcopy). */
	if (s->postcopy && atomic_load(&ctx->switch_now))
		return 1;
	switch (d) {
	case RMIG_CONV_SWITCH: return 1;
	case RMIG_CONV_FORCE: ctx->stats.forced = 1; return 1;
	case RMIG_CONV_ABORT:
		if (in.out_of_time)
			return rmig_err(ctx, -ETIME,
					"did not converge within config.timeout_ms (%u ms, %u "
					"rounds): expected downtime %.0f ms > %u ms",
					ctx->cfg.timeout_ms, rs->round, rs->expected_downtime_ms,
					atomic_load(&ctx->limit_downtime_ms));
		return rmig_err(ctx, -ETIME,
				"did not converge in %u rounds: expected downtime %.0f ms > %u ms "
				"(dirty rate %.0f pages/s, %.0f ms of it fixed costs such as "
				"config.verify)",
				rs->round, rs->expected_downtime_ms,
				atomic_load(&ctx->limit_downtime_ms), rs->dirty_rate, s->fixed_ms);
	case RMIG_CONV_THROTTLE: {
		struct rmig_event ev = { .type = RMIG_EV_THROTTLE,
					 .throttle_pct = s->conv.throttle_pct };

		rc = ctx->be->ops->throttle(ctx->be, s->conv.throttle_pct);
		if (rc)
			return rmig_err(ctx, rc, "backend: throttle: %s", ctx->be->err);
		ctx->stats.throttle_pct = s->conv.throttle_pct;
		rmig_emit(ctx, &ev);
		return 0;
	}
	default: return 0;
	}
}

/* Round trips, and what verification adds that no round can shrink, once
 * the handshake settled config.verify and the link. */
static void plan_verify_cost(struct sender *s)
{
	struct rmig_ctx *ctx = s->ctx;

	if (ctx->cfg.verify)
		rmig_digest_probe_finish(&s->digest, NULL);
	s->fixed_ms =
	    2.0 + rmig_verify_fixed_ms(ctx->cfg.verify, ctx->placement, ctx->stats.guest_bytes,
				       s->digest.speed.one, s->digest.speed.all);
}

/* Expected downtime if the guest paused now with pend to send. Memory the
 * destination must first back goes at fresh_bw, the first round's rate:
 * every page of that round landed in fresh memory, so it is bounded by
 * the destination's clearing where that is slow (a cold host). Where the
 * link is the bound this overestimates (a clear runs at memory speed):
 * pre-copy then goes on, those pages land while the guest runs, and only
 * a guest that keeps filling new memory ends at config.max_rounds. The
 * throttle does not count it: a first touch is paid once per area, not a
 * rate the guest keeps up. */
static double expected_downtime(const struct sender *s, const struct rmig_pending *pend,
				double bandwidth, double fresh_bw)
{
	double rate = fresh_bw > 0 ? fresh_bw : bandwidth;
	double landing_ms = rate > 0 ? (double)pend->landing_bytes / rate * 1000 : 0;

	return rmig_expected_downtime_ms(pend->bytes, bandwidth, s->fixed_ms) + landing_ms +
	       rmig_verify_dirty_ms(s->ctx->cfg.verify, pend->bytes, s->digest.speed.all);
}

/* Pre-copy: rounds until the policy says switch over. */
static int precopy(struct sender *s)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_round_stats rs;
	struct rmig_pending pend = { 0 };
	double bandwidth = 0, fresh_bw = 0, t_fetch = rmig_now_s();
	int rc;

	for (;; s->round++) {
		/* A round spent mostly making the destination back memory
		 * measures that memory, not the link. */
		uint64_t landing = pend.landing_bytes;
		double t0 = rmig_now_s(), now;
		int64_t cpu0 = thread_cpu_us();

		memset(&rs, 0, sizeof(rs));
		rs.round = s->round;
		rc = send_round(s, &rs);
		if (rc) {
			rc = failover(s, rc, s->round + 1);
			if (rc)
				return rc;
			continue; /* the next round resends what was lost */
		}
		rc = fetch_pending(s, &pend);
		if (rc)
			return rc;
		rmig_status_plan(ctx, pend.bytes); /* the next round's */
		rs.cpu_us = (uint64_t)(thread_cpu_us() - cpu0);
		now = rmig_now_s();
		rs.ms = (uint64_t)((now - t0) * 1000);
		rs.bandwidth = now > t0 ? (double)rs.bytes / (now - t0) : 0;
		/* A tiny round measures latency, not bandwidth: keep the last figure. */
		if ((rs.bytes >= MIN_BW_SAMPLE && landing <= rs.bytes) || bandwidth == 0)
			bandwidth = rs.bandwidth;
		if (fresh_bw == 0 && rs.bytes >= MIN_BW_SAMPLE)
			fresh_bw = rs.bandwidth;
		rs.bandwidth = bandwidth;
		s->precopy_bw = bandwidth;
		rs.dirty_rate = now > t_fetch ? (double)pend.units / (now - t_fetch) : 0;
		t_fetch = now;
		rs.dirty_pages = pend.units;
		rs.landing_bytes = pend.landing_bytes;
		rs.expected_downtime_ms = expected_downtime(s, &pend, bandwidth, fresh_bw);
		ctx->stats.rounds = s->round;
		ctx->stats.expected_downtime_ms = rs.expected_downtime_ms;
		update_progress(ctx, &rs, pend.bytes);
		{
			struct rmig_event ev = { .type = RMIG_EV_ROUND, .round = &rs };

			rmig_emit(ctx, &ev);
		}
		if (atomic_load(&ctx->cancelled))
			return rmig_err(ctx, -ECANCELED, "cancelled by the operator");
		if (ctx->cfg.bench_ms && ctx->stats.bench_seconds * 1000 < ctx->cfg.bench_ms) {
			/* rmig bench: measure the data path by sending everything again. */
			ctx->stats.bench_bytes += rs.bytes;
			ctx->stats.bench_seconds += now - t0;
			RMIG_PAYLOADS_TELL(&s->ps, save_resend_all);
			continue;
		}
		rc = decide(s, &rs, &pend);
		if (rc)
			return rc < 0 ? rc : 0;
	}
}

/* Post-copy, deciding to switch over while the guest still runs: announce
 * what is dirty now and wait until the destination dropped it (an empty
 * round, acknowledged after the announcements), so that this work stays
 * out of the downtime. Meanwhile the guest dirties more: announce that too,
 * a few times while much is new (each unit is announced once; the guest's
 * working set runs out). */
static int postcopy_predrop(struct sender *s)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_pending pend;
	uint64_t fresh;
	int rc = 0;

	for (unsigned pass = 0; pass < PREDROP_PASSES && !rc; pass++) {
		struct rmig_round_stats rs = { 0 };

		rc = RMIG_PAYLOADS_CALL(&s->ps, save_announce, &fresh);
		if (rc || (pass && fresh < PREDROP_ENOUGH))
			break; /* those few: announced during the pause */
		rs.round = ++s->round;
		ctx->stats.rounds = s->round;
		rmig_tx_new_round(s->tx);
		rc = round_barrier(s, &rs);
		if (!rc)
			rc = fetch_pending(s, &pend);
	}
	return rc;
}

/* COMPLETE (m) out, READY back: the destination holds everything and has
 * loaded the state; from here it may run the guest. */
static int complete(struct sender *s, struct rmig_msg *m)
{
	int rc = rmig_ctrl_send(s->ctx, m);

	return rc ? rc : expect_serving(s, RMIG_MSG_READY, m);
}

/* The guest is paused: the last round, the device state, COMPLETE, READY.
 * Post-copy: the device state, then what is still dirty is announced
 * instead of sent, and COMPLETE says so. */
static int switch_over(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	uint64_t fresh;
	int rc = 0;

	if (!s->postcopy) {
		struct rmig_round_stats rs = { .round = ++s->round };

		rc = send_round(s, &rs);
	}
	if (!rc)
		rc = send_state(ctx);
	if (!rc && s->postcopy)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_announce, &fresh);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_COMPLETE;
	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_complete, m);
	return rc ? rc : complete(s, m);
}

/* Stop and copy: pause, then the switch-over (above). A link lost before
 * READY fails over and the switch-over starts again on the next link: the
 * guest stays paused, the downtime grows by the failover, nothing is
 * rolled back. Post-copy's announcements cannot be taken back: no failover
 * once they began. */
static int stop_and_copy(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_pending pend;
	int rc;

	rmig_phase_enter(ctx, RMIG_SRC_STOP_AND_COPY);
	s->t_pause = rmig_now_ms();
	rc = ctx->be->ops->pause(ctx->be);
	if (rc)
		return rmig_err(ctx, rc, "backend: pause: %s", ctx->be->err);
	s->must_resume = 1;
	rc = fetch_pending(s, &pend);
	if (!rc)
		rmig_status_plan(ctx, pend.bytes);
	if (!rc && !s->postcopy)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_pause);
	while (!rc) {
		rc = switch_over(s, m);
		if (!rc || s->postcopy)
			break;
		rc = failover(s, rc, s->round + 1);
	}
	return rc;
}

/* The end of a stream: no state of ours (it was in the stream), COMPLETE,
 * READY. */
static int live_finish(struct sender *s, struct rmig_msg *m)
{
	int rc;

	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_STATE;
	rc = rmig_ctrl_send(s->ctx, m);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_COMPLETE;
	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_complete, m);
	return rc ? rc : complete(s, m);
}

/* The hypervisor paused the guest and waits for its switch-over: the last
 * round of the payloads beside its stream (a guest's disks) goes now, while
 * it holds them still and before it lets go of them. The stream's reader
 * takes its ROUND_ACK (live_control_message): the destination sends it
 * before it acknowledges the rest of the stream. */
static int guest_paused(struct rmig_payload *p)
{
	struct sender *s = p->session;
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_round_stats rs = { 0 };
	struct rmig_pending pend;
	struct rmig_msg m;
	int rc;

	rmig_phase_enter(ctx, RMIG_SRC_STOP_AND_COPY);
	if (!s->live_with_rounds)
		return 0;
	rc = fetch_pending(s, &pend);
	if (!rc)
		rmig_status_plan(ctx, pend.bytes);
	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_pause);
	rs.round = ++s->round;
	ctx->stats.rounds = rs.round;
	rmig_status_round(ctx, rs.round);
	rmig_tx_new_round(s->tx);
	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_round, s->tx, rs.round);
	atomic_store(&s->last_live_round, rs.round); /* its ack may come before send returns */
	if (!rc)
		rc = round_out(s, &rs, &m);
	count_sent(s, &rs);
	return rc;
}

/* While the hypervisor migrates its memory, what the guest writes to its
 * disks waits for the pause: keep it to what half of the downtime limit
 * carries at the rate the disks' pre-copy measured (the other half is the
 * hypervisor's). */
static int live_tick(struct rmig_payload *p)
{
	struct sender *s = p->session;
	struct rmig_ctx *ctx = s->ctx;

	if (!s->live_with_rounds)
		return 0;
	return RMIG_PAYLOADS_CALL(
	    &s->ps, save_hold,
	    (uint64_t)(s->precopy_bw * atomic_load(&ctx->limit_downtime_ms) / 2000.0));
}

static int live_control_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct sender *s = p->session;
	unsigned last = atomic_load(&s->last_live_round);

	if (m->type != RMIG_MSG_ROUND_ACK || !last || m->u.value != last)
		return -EPROTO;
	atomic_store(&s->last_live_round_acked, 1);
	return 0;
}

/* A payload that migrates itself (a hypervisor's stream): it runs until the
 * hypervisor paused the guest; the device state was in the stream. The
 * payloads beside it with rounds (a guest's disks) ran their pre-copy
 * first; their last round goes at the pause (guest_paused). */
static int live_migrate(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc;

	/* From here the hypervisor's migration runs: a rollback must cancel it
	 * and resume the guest, paused or not. */
	s->must_resume = 1;
	rc = s->live->ops->save_live(s->live, &s->t_pause);
	if (!rc && s->live_with_rounds && !atomic_load(&s->last_live_round_acked))
		rc = rmig_err(ctx, -EPROTO,
			      "the destination acknowledged the hypervisor's whole stream but not "
			      "the disks' last round, sent at its pause");
	if (rc)
		return rc;
	if (s->live_with_rounds)
		RMIG_PAYLOADS_TELL(&s->ps, save_acked);
	/* The hypervisor paused the guest itself (the payload says when it
	 * sees it; a short stream may end before it looked). */
	if (rmig_phase(ctx) == RMIG_SRC_PRECOPY)
		rmig_phase_enter(ctx, RMIG_SRC_STOP_AND_COPY);
	/* The destination has written all of the stream: a link lost before
	 * READY fails over and the end is sent again. */
	while (!rc) {
		rc = live_finish(s, m);
		if (!rc)
			break;
		rc = failover(s, rc, ++s->round);
	}
	return rc;
}

/* Post-copy: queues the announced data for the senders, then ends the
 * round, while the session's thread serves requests. Its errors go to the
 * senders' failure, and it wakes the session's thread to read them. */
struct postcopy_push {
	struct sender *s;
	struct rmig_round_stats rs;
	pthread_t tid;
};

static void *push_main(void *arg)
{
	struct postcopy_push *pp = arg;
	struct sender *s = pp->s;
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	char why[400];

	if (!m)
		rmig_tx_fail(s->tx, "out of memory");
	else
		RMIG_PAYLOADS_CALL(&s->ps, save_round, s->tx,
				   pp->rs.round); /* failures show in the pool */
	if (m && !rmig_tx_wait(s->tx)) {
		rmig_tx_round_end(s->tx, &pp->rs, m);
		if (rmig_ctrl_send_err(ctx, m, why, sizeof(why)))
			rmig_tx_fail(s->tx, why);
	} else {
		rmig_tx_round_figures(s->tx, &pp->rs); /* what went out still counts */
	}
	if (rmig_tx_failed(s->tx))
		ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_CTRL_RECV);
	free(m);
	return NULL;
}

/* Post-copy, one round after STARTED: the pusher sends (the announced
 * data, or after a recovery what the destination lacks) while this thread
 * answers requests, until the destination acknowledges the round. What
 * went out adds to *total. */
static int postcopy_round(struct sender *s, struct rmig_msg *m, struct rmig_round_stats *total)
{
	struct rmig_ctx *ctx = s->ctx;
	struct postcopy_push pp = { .s = s, .rs = { .round = s->round } };
	int rc;

	ctx->stats.rounds = s->round;
	rmig_tx_new_round(s->tx);
	if (pthread_create(&pp.tid, NULL, push_main, &pp))
		return rmig_err(ctx, -EAGAIN, "cannot start the post-copy thread");
	for (;;) {
		rc = rmig_ctrl_recv(ctx, m, (int)ctx->cfg.link_timeout_ms);
		if (rc && rmig_tx_failed(s->tx))
			rc = rmig_err(ctx, -EIO, "%s", rmig_tx_failure(s->tx));
		if (rc)
			break;
		if (m->type == RMIG_MSG_ROUND_ACK && m->u.value == pp.rs.round)
			break;
		if (m->type == RMIG_MSG_ROUND_ACK) {
			rc =
			    rmig_err(ctx, -EPROTO,
				     "protocol error: peer %s sent ROUND_ACK %llu during post-copy",
				     ctx->link->peer, (unsigned long long)m->u.value);
			break;
		}
		rc = to_payload(s, m);
		if (rc)
			break;
	}
	if (rc) /* the pusher may wait for the senders: stop them */
		ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_DATA);
	pthread_join(pp.tid, NULL);
	ctx->stats.pages_sent += pp.rs.pages;
	ctx->stats.zero_pages += pp.rs.zero_pages;
	ctx->stats.bytes_sent += pp.rs.bytes;
	total->pages += pp.rs.pages;
	total->zero_pages += pp.rs.zero_pages;
	total->bytes += pp.rs.bytes;
	return rc;
}

/* Post-copy's link was lost: the guest runs at the destination, where a
 * thread touching a missing page waits. Reconnect (the failover link) and
 * take up the session until failover_timeout_ms: the destination asks
 * again for what its guest waits for (answered at once), then says what it
 * lacks (MISSING) and RECOVER; the next round sends that. A failure on the
 * way tries again until the deadline. 0; 1 if the destination had every
 * page already (our link lost its ROUND_ACK); or the error that loses the
 * guest. */
static int recover(struct sender *s, int rc, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_link *from = ctx->link, *to;
	char why[sizeof(ctx->err)];
	int64_t end;

	/* A control stream silent past the link timeout has no last words:
	 * waiting for them would only keep the guest waiting longer. */
	if (rmig_link_failure(rc) && rc != -ETIMEDOUT)
		rc = rmig_ctrl_last_words(ctx, rc);
	if (ctx->cfg.failover == RMIG_FAILOVER_NONE || !rmig_link_failure(rc) ||
	    rmig_cancel_requested(ctx))
		return rc;
	memcpy(why, ctx->err, sizeof(why));
	end = rmig_now_ms() + ctx->cfg.failover_timeout_ms;
	drop_session(ctx);
	rmig_tx_wait(s->tx);
	RMIG_PAYLOADS_TELL(&s->ps, save_rewind);
	to = rmig_links_fallback(ctx);
	if (!to)
		return rmig_err(ctx, rc, "%s; no link to recover over", why);
	rmig_phase_enter(ctx, RMIG_SRC_RECOVERING);
	emit_failover_warning(ctx, why, "recovering post-copy over", rmig_link_kind_name(to));
	ctx->link = to;
	for (;;) {
		ctx->peer_abort = 0;
		rc = reconnect(ctx, to, s->round + 1, end);
		if (rc == -ECONNABORTED && ctx->peer_abort == RMIG_ABORT_ALL_IN)
			return 1; /* it had all, only its ROUND_ACK was lost */
		if (!rc) {
			ctx->stats.recoveries++; /* a session resumed, as the destination counts */
			rc = expect_serving(s, RMIG_MSG_RECOVER, m);
		}
		if (!rc)
			break;
		if (!rmig_link_failure(rc) || rmig_cancel_requested(ctx) || rmig_now_ms() >= end) {
			char failed[sizeof(ctx->err)];

			memcpy(failed, ctx->err, sizeof(failed));
			return rmig_err(ctx, rc,
					"%s; recovery over %s failed within %u ms "
					"(config.failover_timeout_ms): %s",
					why, rmig_link_kind_name(to), ctx->cfg.failover_timeout_ms,
					rmig_cancel_requested(ctx) ? "cancelled" : failed);
		}
		drop_session(ctx); /* lost again on the way: once more */
		nap(ctx, 100);
	}
	s->round++;
	rmig_tx_restart(s->tx);
	{
		struct rmig_event ev = { .type = RMIG_EV_FAILOVER,
					 .from = rmig_link_kind_name(from),
					 .transport = rmig_link_kind_name(to),
					 .detail = why };

		rmig_emit(ctx, &ev);
	}
	rmig_phase_enter(ctx, RMIG_SRC_POSTCOPY);
	return 0;
}

/* Post-copy, after STARTED: the guest runs at the destination. Send the
 * announced data and answer requests until the destination acknowledges
 * the round: then it holds all of the guest. A lost link is recovered. */
static int postcopy_stream(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_round_stats rs = { 0 };
	struct rmig_event ev = { .type = RMIG_EV_ROUND, .round = &rs };
	int64_t t0 = rmig_now_ms();
	int rc;

	ctx->stats.postcopy = 1;
	if (rmig_phase(ctx) != RMIG_SRC_POSTCOPY) { /* else a recovery after GO began it */
		s->round++;
		rmig_phase_enter(ctx, RMIG_SRC_POSTCOPY);
	}
	while ((rc = postcopy_round(s, m, &rs))) {
		rc = recover(s, rc, m);
		if (rc < 0)
			return rc;
		if (rc == 1)
			break;
	}
	rs.round = s->round;
	rs.ms = (uint64_t)(rmig_now_ms() - t0);
	rs.bandwidth = rs.ms ? (double)rs.bytes * 1000.0 / (double)rs.ms : 0;
	ctx->stats.postcopy_ms = (uint64_t)rs.ms;
	rmig_emit(ctx, &ev);
	return 0;
}

/* Post-copy failed after the destination started the guest. Part of its
 * memory is here, part there, and it ran there since: neither copy is the
 * guest any more. Never resume it here. */
static int postcopy_lost(struct rmig_ctx *ctx, int rc)
{
	char cause[sizeof(ctx->err)];

	memcpy(cause, ctx->err, sizeof(cause));
	if (rc != -ECONNABORTED)
		rmig_ctrl_send_abort(ctx, rc, cause);
	ctx->stats.result = RMIG_RESULT_UNKNOWN;
	rmig_err(ctx, rc,
		 "%s; post-copy did not finish after the destination started the guest: "
		 "unless the destination got every page, the guest's memory is split between "
		 "the two hosts and neither can run it (lost). The source stays paused and must "
		 "not be resumed: the guest ran on at the destination",
		 cause);
	rmig_phase_enter(ctx, RMIG_SRC_LOST);
	return rc < 0 ? rc : -EIO;
}

/* READY came: the destination compared every digest (memory's and the
 * disks'), or none was asked for. */
static void set_verified(struct rmig_ctx *ctx, int on)
{
	ctx->stats.verified = on;
	ctx->stats.disks_verified = on && ctx->stats.disks;
}

/* The two-phase commit, READY in hand: CHECK, READY, GO, STARTED;
 * post-copy then sends the rest. */
static int commit(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc;

	set_verified(ctx, ctx->cfg.verify != RMIG_VERIFY_OFF);
	/* From here the destination may run, so we never resume on our own. */
	rmig_phase_enter(ctx, RMIG_SRC_COMMIT);
	/* READY may be old news (a slow backend, a stalled thread): make sure
	 * the destination is still there and still ready right before GO, so
	 * that a failure up to here is a clean rollback, not an unknown. */
	rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_CHECK, 0);
	if (!rc)
		rc = expect_serving(s, RMIG_MSG_READY, m);
	if (!rc && s->postcopy)
		rc = rmig_cancel_close(ctx);
	if (rc)
		return rc;
	/* From here GO may be out: only the destination's answer decides. */
	rmig_phase_enter(ctx, RMIG_SRC_AWAITING_STARTED);
	rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_GO, 0);
	if (!rc)
		rc = expect_serving(s, RMIG_MSG_STARTED, m);
	/* Post-copy: a destination that started the guest (its vCPUs may have
	 * asked for pages already) waits for a recovery; one that did not
	 * refuses it and waits for the question (fail_migration). */
	if (rc && s->postcopy)
		rc = recover(s, rc, m);
	if (rc < 0)
		return rc;
	s->started = 1;
	ctx->stats.downtime_ms = (uint64_t)(rmig_now_ms() - s->t_pause);
	/* rc 1: the destination had every page already (none was left). */
	return s->postcopy && rc != 1 ? postcopy_stream(s, m) : 0;
}

/* The ops a source calls without asking: a backend that lacks one is
 * refused before anything starts rather than crash the guest's host. */
static int check_backend(struct rmig_ctx *ctx)
{
	const struct rmig_backend_ops *o = ctx->be->ops;
	const char *missing = !o->resume	? "resume"
			      : o->stream_open	? NULL
			      : !o->fetch_dirty ? "fetch_dirty"
			      : !o->pause	? "pause"
						: NULL;

	return missing ? rmig_err(ctx, -EINVAL, "backend %s cannot be a source: it has no %s op",
				  o->name, missing)
		       : 0;
}

/* The guest as the backend describes it, and its payloads set up. */
static int prepare(struct sender *s)
{
	struct rmig_ctx *ctx = s->ctx;
	const struct rmig_region *regions;
	size_t nregions;
	int rc = check_backend(ctx);

	if (rc)
		return rc;
	rc = ctx->be->ops->get_regions(ctx->be, &regions, &nregions);
	if (rc)
		return rmig_err(ctx, rc, "backend: %s", ctx->be->err);
	rc = rmig_layout_from_regions(ctx, regions, nregions);
	if (!rc)
		rc = rmig_payloads_choose(ctx, &s->ps);
	RMIG_EACH_PAYLOAD(&s->ps, p)
	{
		p->hooks = &source_hooks;
		p->session = s;
	}
	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_setup);
	if (rc)
		return rc;
	RMIG_EACH_PAYLOAD(&s->ps, p)
	{
		s->postcopy |= p->postcopy;
		if (p->ops->save_live)
			s->live = p;
	}
	RMIG_EACH_PAYLOAD(&s->ps, p)
	{
		s->live_with_rounds |= s->live && p->ops->save_round;
	}
	if (ctx->cfg.verify)
		rmig_digest_probe_start(&s->digest);
	return 0;
}

/* Connected: the senders' pool, and every payload starts tracking what
 * changes (the first round is everything); setup ends here. */
static int start_sending(struct sender *s)
{
	int rc = rmig_tx_create(s->ctx, &s->tx);

	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_start);
	if (!rc)
		rmig_status_setup_done(s->ctx);
	return rc;
}

/* Everything up to and including the commit. */
static int migrate(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc = prepare(s);

	if (rc)
		return rc;
	rmig_phase_enter(ctx, RMIG_SRC_CONNECTING);
	plan_channels(ctx);
	rc = rmig_links_connect(ctx, (int)ctx->cfg.link_timeout_ms);
	if (!rc)
		rc = handshake(ctx, OPEN_NEW, 0, 0);
	ctx->stats.channels = ctx->nchan;
	if (!rc)
		rc = RMIG_PAYLOADS_CALL(&s->ps, save_handshake);
	if (rc)
		return rc;
	plan_verify_cost(s);
	/* The handshake started the heartbeats: from here a failure is a rollback. */
	rmig_phase_enter(ctx, RMIG_SRC_PRECOPY);
	rc = start_sending(s);
	if (rc)
		return rc;
	if (s->live) {
		/* The disks first, while the guest runs; the hypervisor's own
		 * pre-copy after, the disks' last round at its pause. */
		if (s->live_with_rounds)
			rc = precopy(s);
		if (!rc)
			rc = live_migrate(s, m);
	} else {
		rc = precopy(s);
		if (!rc && s->postcopy)
			rc = postcopy_predrop(s);
		if (!rc)
			rc = stop_and_copy(s, m);
	}
	return rc ? rc : commit(s, m);
}

/* The dry run's verdict, said once: in the stats, to the destination (the
 * ABORT that ends the session as planned), and in the phase. */
static int dry_run_verdict(struct rmig_ctx *ctx)
{
	struct rmig_stats *st = &ctx->stats;

	st->dry_run = 1;
	st->result = RMIG_RESULT_DRY_RUN;
	rmig_ctrl_send_abort(ctx, RMIG_ABORT_DRY_RUN,
			     st->dry_run_reason[0] ? st->dry_run_reason
			     : st->dry_run_fits	   ? "would fit and converge"
						   : "would not fit");
	ctx->err[0] = 0;
	return rmig_phase_enter(ctx, RMIG_SRC_DRY_RUN);
}

/* The destination refused the guest (its ABORT, in ctx->err): the verdict
 * is "would not fit", for the reason it gave. */
static int dry_run_refused(struct rmig_ctx *ctx)
{
	const char *why = ctx->err;
	char said[200];

	snprintf(said, sizeof(said), "peer %s aborted: ", ctx->link->peer);
	if (!strncmp(why, said, strlen(said)))
		why += strlen(said); /* the peer is named once, at the end */
	snprintf(ctx->stats.dry_run_reason, sizeof(ctx->stats.dry_run_reason),
		 "would not fit: %.400s (the destination %.64s)", why, ctx->link->peer);
	ctx->stats.dry_run = 1;
	ctx->stats.result = RMIG_RESULT_DRY_RUN;
	ctx->err[0] = 0;
	return rmig_phase_enter(ctx, RMIG_SRC_DRY_RUN);
}

/* The probe's limits: PROBE_MS, at most PROBE_MAX_BYTES, and no more than
 * config.max_bandwidth moves in PROBE_MS (its pacing applies too). */
static uint64_t probe_budget(struct rmig_ctx *ctx)
{
	uint64_t limit = atomic_load(&ctx->limit_bandwidth);
	uint64_t budget = limit ? limit * PROBE_MS / 1000 : PROBE_MAX_BYTES;

	if (budget > PROBE_MAX_BYTES)
		budget = PROBE_MAX_BYTES;
	return budget < PROBE_MIN_BYTES ? PROBE_MIN_BYTES : budget;
}

/* The probe: the dirty log starts, one round of real pages goes out
 * (bounded by probe_budget and PROBE_MS; the destination drops them),
 * then the log says what the guest dirtied meanwhile. The guest runs on
 * untouched. */
static int probe(struct sender *s, struct rmig_round_stats *rs, struct rmig_pending *pend,
		 double *window_s)
{
	struct rmig_ctx *ctx = s->ctx;
	double t_log = rmig_now_s(), t0;
	int rc;

	ctx->probe_bytes = probe_budget(ctx);
	rc = start_sending(s);
	if (rc)
		return rc;
	t0 = rmig_now_s();
	ctx->probe_end_ms = rmig_now_ms() + PROBE_MS;
	rs->round = 1;
	rc = send_round(s, rs);
	rs->ms = (uint64_t)((rmig_now_s() - t0) * 1000);
	rs->bandwidth = rs->ms ? (double)rs->bytes * 1000.0 / (double)rs->ms : 0;
	if (!rc)
		rc = fetch_pending(s, pend);
	*window_s = rmig_now_s() - t_log;
	rs->dirty_rate = *window_s > 0 ? (double)pend->units / *window_s : 0;
	return rc;
}

/* Why pre-copy would not converge, in one line: the guest outruns the
 * link, or the last round left too much for the downtime. */
static void say_no_converge(struct rmig_ctx *ctx, const struct rmig_converge_forecast *f,
			    double dirty_bps)
{
	struct rmig_stats *st = &ctx->stats;

	if (dirty_bps >= st->dry_run_bandwidth)
		snprintf(st->dry_run_reason, sizeof(st->dry_run_reason),
			 "would not converge: the guest dirties %.0f pages/s (%.1f MB/s), faster "
			 "than the %.1f MB/s the link carried (config.max_bandwidth): expected "
			 "downtime %.0f ms > %u ms after %u rounds",
			 st->dry_run_dirty_rate, dirty_bps / 1e6, st->dry_run_bandwidth / 1e6,
			 f->downtime_ms, atomic_load(&ctx->limit_downtime_ms), f->rounds);
	else
		snprintf(st->dry_run_reason, sizeof(st->dry_run_reason),
			 "would not converge: expected downtime %.0f ms > %u ms "
			 "(config.downtime_ms) after %u rounds (config.max_rounds), dirty %.0f "
			 "pages/s (%.1f MB/s) at %.1f MB/s",
			 f->downtime_ms, atomic_load(&ctx->limit_downtime_ms), f->rounds,
			 st->dry_run_dirty_rate, dirty_bps / 1e6, st->dry_run_bandwidth / 1e6);
}

/* The probe's figures played out by the convergence policy (converge.c)
 * as pre-copy would: rounds, round 1's time, the downtime. */
static void forecast(struct sender *s, const struct rmig_round_stats *rs,
		     const struct rmig_pending *pend, double window_s)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_stats *st = &ctx->stats;
	double dirty_bps = window_s > 0 ? (double)pend->bytes / window_s : 0;
	uint64_t guest = st->guest_bytes + st->disk_bytes;
	struct rmig_converge_plan plan = { .guest_bytes = guest,
					   .dirty_cap = guest,
					   .bandwidth = rs->bandwidth,
					   .dirty_bytes_rate = dirty_bps,
					   .max_rounds = ctx->cfg.max_rounds,
					   .downtime_ms = atomic_load(&ctx->limit_downtime_ms),
					   .policy = ctx->cfg.on_no_converge,
					   .can_throttle = ctx->be->ops->throttle != NULL,
					   .fixed_ms = s->fixed_ms,
					   .verify = ctx->cfg.verify,
					   .digest_rate = s->digest.speed.all };
	struct rmig_converge_forecast f;

	rmig_converge_forecast(&plan, &f);
	st->dry_run_fits = 1;
	st->dry_run_converges = f.decision == RMIG_CONV_SWITCH;
	st->dry_run_bandwidth = rs->bandwidth;
	st->dry_run_probe_bytes = rs->bytes;
	st->dry_run_probe_ms = rs->ms;
	st->dry_run_dirty_rate = rs->dirty_rate;
	st->dry_run_round1_ms = (uint64_t)f.round1_ms;
	st->dry_run_rounds = f.rounds;
	st->dry_run_downtime_ms = f.downtime_ms;
	st->dry_run_throttle_pct = f.throttle_pct;
	if (rs->bandwidth <= 0)
		snprintf(st->dry_run_reason, sizeof(st->dry_run_reason),
			 "would not converge: the probe measured no bandwidth");
	else if (!st->dry_run_converges)
		say_no_converge(ctx, &f, dirty_bps);
	else if (f.throttle_pct) /* it would, as configured; the operator should know how */
		snprintf(st->dry_run_reason, sizeof(st->dry_run_reason),
			 "would converge only with the guest throttled to %u%% "
			 "(config.on_no_converge=throttle): it dirties %.0f pages/s (%.1f MB/s), "
			 "the link carried %.1f MB/s",
			 f.throttle_pct, st->dry_run_dirty_rate, dirty_bps / 1e6,
			 st->dry_run_bandwidth / 1e6);
}

/* config.dry_run: connect, authenticate, the destination checks the
 * layout and the disks (a refusal is the verdict "would not fit"), the
 * probe, the forecast; then the session ends with the verdict. Nothing
 * is paused, throttled or left at the destination. */
static int dry_run(struct sender *s)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	struct rmig_round_stats rs = { 0 };
	struct rmig_pending pend = { 0 };
	double window_s = 0;
	int rc = m ? prepare(s) : rmig_err(ctx, -ENOMEM, "out of memory");

	if (!rc && s->live)
		rc = rmig_err(ctx, -EOPNOTSUPP,
			      "a dry run needs guest memory: backend %s hands over its "
			      "hypervisor's own migration stream",
			      ctx->be->ops->name);
	if (!rc) {
		rmig_phase_enter(ctx, RMIG_SRC_CONNECTING);
		plan_channels(ctx);
		ctx->stats.channels = ctx->nchan;
		rc = rmig_links_connect(ctx, (int)ctx->cfg.link_timeout_ms);
	}
	if (!rc)
		rc = open_session(ctx, OPEN_NEW, 0, m, 0);
	if (!rc) {
		emit_connected(ctx);
		rc = offer_layout(ctx, m);
		if (!rc)
			rc = RMIG_PAYLOADS_CALL(&s->ps, save_handshake);
		if (rc == -ECONNABORTED) { /* the destination said why not */
			free(m);
			return dry_run_refused(ctx);
		}
	}
	free(m);
	if (rc)
		return rc;
	plan_verify_cost(s);
	rmig_phase_enter(ctx, RMIG_SRC_PRECOPY);
	rc = probe(s, &rs, &pend, &window_s);
	if (rc)
		return rc;
	forecast(s, &rs, &pend, window_s);
	return dry_run_verdict(ctx);
}

/* Append to ctx->err. */
static void add_err(struct rmig_ctx *ctx, const char *fmt, const char *arg)
{
	size_t n = strlen(ctx->err);

	snprintf(ctx->err + n, sizeof(ctx->err) - n, fmt, arg);
}

/* The migration failed in the current phase: find out or decide what
 * became of the guest. 0 if it runs at the destination after all. */
static int fail_migration(struct sender *s, int rc)
{
	struct rmig_ctx *ctx = s->ctx;
	unsigned phase = rmig_phase(ctx);
	/* A recovery after a lost GO that failed: the destination may not have
	 * started the guest, ask. */
	int go_sent =
	    phase == RMIG_SRC_AWAITING_STARTED || (phase == RMIG_SRC_RECOVERING && !s->started);
	int started = phase != RMIG_SRC_IDLE && phase != RMIG_SRC_CONNECTING;
	int dry = ctx->dry_run; /* a dry run started nothing: it failed */
	int outcome = -1, resumed;

	set_verified(ctx, 0);
	if (rmig_cancel_requested(ctx))
		rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator");
	ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_DATA); /* stop the senders */
	/* A destination that started the guest and lost it says so: whatever
	 * we waited for, the guest ran there. */
	if (phase == RMIG_SRC_POSTCOPY || (phase == RMIG_SRC_RECOVERING && s->started) ||
	    (rc == -ECONNABORTED && ctx->peer_abort == RMIG_ABORT_LOST))
		return postcopy_lost(ctx, rc);
	/* The destination sends ABORT only if it did not start; refusing a
	 * recovery says nothing of the kind. */
	if (go_sent && rc == -ECONNABORTED && phase == RMIG_SRC_AWAITING_STARTED)
		outcome = 0;
	else if (go_sent) /* even if cancelled: after GO, only the answer decides */
		outcome = ask_outcome(ctx);
	if (outcome == 1) {
		/* It runs there: the migration succeeded, only STARTED was lost. */
		ctx->stats.downtime_ms = (uint64_t)(rmig_now_ms() - s->t_pause);
		set_verified(ctx, ctx->cfg.verify != RMIG_VERIFY_OFF);
		ctx->stats.result = RMIG_RESULT_MIGRATED;
		rmig_phase_enter(ctx, RMIG_SRC_MIGRATED);
		return 0;
	}
	if (go_sent && outcome < 0) {
		/* The destination may be running the guest: resuming here could
		 * run it twice. Stay paused and let the operator decide. */
		char cause[sizeof(ctx->err)];

		memcpy(cause, ctx->err, sizeof(cause));
		ctx->stats.result = RMIG_RESULT_UNKNOWN;
		rmig_err(ctx, rc,
			 "%s; GO was sent and the destination could not be asked within %u ms "
			 "whether it started the guest: the source stays paused. Check the "
			 "destination: if the guest does not run there, resume the source "
			 "through its backend; if it does, stop the source%s",
			 cause, ctx->cfg.commit_timeout_ms,
			 s->postcopy ? " (post-copy: if it started without all of its memory, "
				       "the guest is lost and neither side may run it)"
				     : "");
		rmig_phase_enter(ctx, RMIG_SRC_UNKNOWN);
		return rc < 0 ? rc : -EIO;
	}
	if (outcome == 0)
		add_err(ctx, "%s", "; the destination confirmed it did not start the guest");
	if (started)
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
	resumed = !s->must_resume || !ctx->be->ops->resume(ctx->be);
	if (s->conv.throttle_pct && ctx->be->ops->throttle)
		ctx->be->ops->throttle(ctx->be, 0);
	ctx->stats.result = started && !dry ? RMIG_RESULT_ROLLED_BACK : RMIG_RESULT_FAILED;
	if (!resumed) {
		/* Neither side runs the guest: not a rollback, the operator must act. */
		add_err(ctx, "; then resuming the guest failed: %s", ctx->be->err);
		ctx->stats.result = RMIG_RESULT_UNKNOWN;
	}
	rmig_phase_enter(ctx, !resumed	? RMIG_SRC_UNKNOWN
			      : started ? RMIG_SRC_ROLLED_BACK
					: RMIG_SRC_FAILED);
	return rc < 0 ? rc : -EIO;
}

/* Migrated: the guest runs at the destination; ours stays paused, with
 * its memory, until the payloads checked it (off the downtime). */
static void audit(struct sender *s)
{
	struct rmig_ctx *ctx = s->ctx;
	char cause[sizeof(ctx->err)];

	memcpy(cause, ctx->err, sizeof(cause));
	if (RMIG_PAYLOADS_CALL(&s->ps, save_audit)) {
		struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = ctx->err };

		rmig_emit(ctx, &ev);
		ctx->stats.audit = RMIG_AUDIT_SKIPPED;
	}
	memcpy(ctx->err, cause, sizeof(cause)); /* the migration itself succeeded */
}

static int send_migration(struct rmig_ctx *ctx)
{
	struct sender *s = calloc(1, sizeof(*s));
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc;

	rmig_status_begin(ctx);
	rmig_phase_init(ctx, &rmig_src_machine);
	if (!s || !m) {
		free(s);
		free(m);
		return rmig_err(ctx, -ENOMEM, "out of memory");
	}
	s->ctx = ctx;
	s->round = 1;
	ctx->dry_run = ctx->cfg.dry_run;
	rc = ctx->dry_run ? dry_run(s) : migrate(s, m);
	if (rc)
		rc = fail_migration(s, rc);
	else if (!ctx->dry_run) {
		ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
		memset(m, 0, sizeof(*m));
		m->type = RMIG_MSG_DONE;
		m->u.done = (struct rmig_wire_done){ .total_ms = ctx->stats.total_ms,
						     .downtime_ms = ctx->stats.downtime_ms,
						     .bytes_sent = ctx->stats.bytes_sent,
						     .rounds = ctx->stats.rounds };
		rmig_ctrl_send(ctx, m); /* informational: the guest has moved either way */
		ctx->stats.result = RMIG_RESULT_MIGRATED;
		rmig_phase_enter(ctx, RMIG_SRC_MIGRATED);
	}
	ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
	rmig_heartbeat_stop(ctx);
	if (!rc && !ctx->dry_run)
		audit(s);
	rmig_tx_destroy(s->tx);
	if (s->digest.running) /* failed before the plan */
		rmig_digest_probe_finish(&s->digest, NULL);
	rmig_link_note_sealing(ctx);
	rmig_rails_note(ctx);
	if (ctx->link->ops->mem_release)
		ctx->link->ops->mem_release(ctx->link);
	RMIG_PAYLOADS_TELL(&s->ps, save_cleanup);
	free(s);
	free(m);
	return rc;
}

int rmig_send(struct rmig_ctx *ctx)
{
	int rc;

	if (!ctx)
		return rmig_fail(-EINVAL, "rmig_send: no context");
	rc = send_migration(ctx);
	return rc ? rmig_fail_msg(rc, ctx->err) : 0;
}
