/* stream_save.c - the source's side of a hypervisor's own migration stream
 * (QEMU): read from the backend's fd, sent as STREAM messages on the
 * control stream, kept until the destination acknowledges it, so that a
 * link lost mid-stream fails over and replays instead of rolling back
 * (QEMU's stream cannot be rewound).
 *
 * Three threads while the stream flows:
 *  - the forwarder reads the hypervisor's fd into the replay ring and sends
 *    what the destination does not have yet; a full ring stops it reading
 *    (the hypervisor waits: back-pressure, nothing is dropped);
 *  - the ack reader is the control stream's only reader: STREAM_ACKs free
 *    the ring. Once the stream ended, the forwarder tells the destination
 *    its length (a STREAM_ACK of ours) and the ack reader stops at the
 *    answer, on a frame boundary, so the session reads on from there;
 *  - the session's thread polls the hypervisor's figures (progress, the
 *    pause). When the link fails it stops both, fails over (link_lost) and
 *    replays from the offset the destination announces.
 * Every wait ends early on news: each millisecond spent noticing the pause
 * or the end is guest downtime. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "xxhash_fast.h"

#include "stream.h"

#define STATUS_EVERY_MS 20	 /* progress; the pause, without stream_wait */
#define LIVE_TICK_MS 250	 /* the payloads beside the stream hold their changes */
#define REPLAY_MAX (64ull << 20) /* stream bytes kept until acknowledged */
#define ACK_WAIT_FACTOR 6	 /* link timeouts a full ring waits for an ack */

/* One migration's stream, by absolute offsets: acked <= sent <= sending <=
 * read <= acked + REPLAY_MAX. The ring holds [acked, read). */
struct stream_src {
	struct rmig_ctx *ctx;
	struct rmig_payload *p;
	int fd;			 /* the backend's; it closes it */
	int wake;		 /* eventfd: a thread ended */
	XXH3_state_t *hash;	 /* every byte read, once, in order */
	uint64_t digest;	 /* of the whole stream, once it ended */
	uint8_t *ring;		 /* byte off at off % REPLAY_MAX */
	pthread_t fwd, acker;	 /* running while started has their bit */
	unsigned started;	 /* 1: forwarder, 2: ack reader */
	pthread_mutex_t lock;	 /* what follows */
	pthread_cond_t moved;	 /* acked moved, or stop */
	uint64_t read, sent;	 /* from the hypervisor; to the destination */
	uint64_t sending;	 /* sent, or being sent: an ack may come first */
	uint64_t acked;		 /* the destination wrote this much */
	uint64_t high;		 /* the most ever sent: below it a send replays */
	uint64_t wire, replayed; /* bytes sent in all, of which again */
	int eof;		 /* the hypervisor closed the stream at `read` */
	int end_sent;		 /* the destination was told its length */
	int stop;		 /* the session's thread ends the run */
	unsigned running;	 /* threads not ended yet */
	int rc;			 /* the first failure of a thread */
	int rc_link;		 /* it was the link's (a send, a receive) */
	char err[512];
};

static struct stream_src *src_of(struct rmig_payload *p)
{
	return p->priv;
}

static uint64_t min3(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t m = a < b ? a : b;

	return m < c ? m : c;
}

/* A thread's failure: the first one is what the run failed of. */
static int __attribute__((format(printf, 4, 5)))
fail(struct stream_src *s, int rc, int link, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->lock);
	if (!s->rc) {
		s->rc = rc;
		s->rc_link = link;
		va_start(ap, fmt);
		vsnprintf(s->err, sizeof(s->err), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static void thread_over(struct stream_src *s)
{
	pthread_mutex_lock(&s->lock);
	s->running--;
	pthread_mutex_unlock(&s->lock);
	eventfd_write(s->wake, 1);
}

static int stopping(struct stream_src *s)
{
	int stop;

	pthread_mutex_lock(&s->lock);
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

/* ---- the forwarder ---- */

/* Room in the ring into *room (0: stopped); waits while it is full, but
 * not forever: a destination that acknowledges nothing (an rmig before
 * resumable streams) would hold the hypervisor's migration for good. Its
 * own hypervisor stalling ends it sooner (SINK_STALL_FACTOR there). */
static int wait_room(struct stream_src *s, uint64_t *room)
{
	unsigned limit_ms = ACK_WAIT_FACTOR * s->ctx->cfg.link_timeout_ms;
	int64_t give_up = rmig_now_ms() + limit_ms;
	int full, stop;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && s->read - s->acked == REPLAY_MAX && rmig_now_ms() < give_up) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L; /* the deadline is looked at this often */
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&s->moved, &s->lock, &ts);
	}
	stop = s->stop;
	full = s->read - s->acked == REPLAY_MAX;
	*room = stop || full ? 0 : REPLAY_MAX - (s->read - s->acked);
	pthread_mutex_unlock(&s->lock);
	if (full && !stop)
		return fail(s, -ETIMEDOUT, 0,
			    "the destination acknowledged none of the last %llu MiB of the "
			    "hypervisor's stream for %u ms (%d x config.link_timeout_ms; does it "
			    "predate resumable streams?)",
			    REPLAY_MAX >> 20, limit_ms, ACK_WAIT_FACTOR);
	return 0;
}

/* Read what the hypervisor wrote into the ring (waits STATUS_EVERY_MS at
 * most, so that a stop is seen). */
static int fill(struct stream_src *s)
{
	uint64_t room, at = s->read % REPLAY_MAX;
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
	ssize_t got;
	int ready = wait_room(s, &room);

	if (ready || !room)
		return ready;
	ready = poll(&pfd, 1, STATUS_EVERY_MS);
	if (ready == 0 || (ready < 0 && errno == EINTR))
		return 0;
	got = ready < 0
		  ? -1
		  : read(s->fd, s->ring + at, min3(room, REPLAY_MAX - at, RMIG_MAX_STREAM_CHUNK));
	if (got < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (got < 0)
		return fail(s, -errno, 0, "reading the hypervisor's stream: %s", strerror(errno));
	XXH3_64bits_update(s->hash, s->ring + at, (size_t)got);
	pthread_mutex_lock(&s->lock);
	s->read += (uint64_t)got;
	s->eof = got == 0;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Send the next piece the destination lacks: a replay below `high`. */
static int send_next(struct stream_src *s)
{
	uint64_t off = s->sent, at = off % REPLAY_MAX;
	uint64_t n = min3(s->read - off, REPLAY_MAX - at, RMIG_MAX_STREAM_CHUNK);
	struct rmig_msg m = { .type = RMIG_MSG_STREAM };
	char why[sizeof(s->err)];
	int rc;

	m.u.state.data = s->ring + at;
	m.u.state.len = (uint32_t)n;
	pthread_mutex_lock(&s->lock);
	s->sending = off + n;
	pthread_mutex_unlock(&s->lock);
	rc = rmig_ctrl_send_err(s->ctx, &m, why, sizeof(why));
	if (rc)
		return fail(s, rc, 1, "%s", why);
	pthread_mutex_lock(&s->lock);
	s->sent = off + n;
	s->wire += n;
	if (off < s->high)
		s->replayed += (off + n < s->high ? off + n : s->high) - off;
	if (s->sent > s->high)
		s->high = s->sent;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* The stream ended: tell the destination its length; its answer (the same
 * offset, all written) ends the ack reader. */
static int send_end(struct stream_src *s)
{
	struct rmig_msg m = { .type = RMIG_MSG_STREAM_ACK };
	char why[sizeof(s->err)];
	int rc;

	m.u.value = s->read;
	rc = rmig_ctrl_send_err(s->ctx, &m, why, sizeof(why));
	if (rc)
		return fail(s, rc, 1, "%s", why);
	pthread_mutex_lock(&s->lock);
	s->end_sent = 1;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void *forward_main(void *arg)
{
	struct stream_src *s = arg;
	int rc = 0;

	/* read and sent change only here while the threads run. */
	while (!rc && !stopping(s)) {
		if (s->sent < s->read)
			rc = send_next(s);
		else if (s->eof)
			break;
		else
			rc = fill(s);
	}
	if (!rc && s->eof && !stopping(s))
		send_end(s);
	thread_over(s);
	return NULL;
}

/* ---- the ack reader ---- */

/* The destination wrote the stream up to off: the ring may drop what is
 * below. An offset below what it acknowledged or beyond what was sent is
 * a broken peer. */
static int take_ack(struct stream_src *s, uint64_t off, char *err, size_t errlen)
{
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (off < s->acked || off > s->sending) {
		snprintf(err, errlen,
			 "protocol error: STREAM_ACK at byte %llu of the hypervisor's stream, "
			 "outside %llu..%llu (acknowledged..sent)",
			 (unsigned long long)off, (unsigned long long)s->acked,
			 (unsigned long long)s->sending);
		rc = -EPROTO;
	} else {
		s->acked = off;
		pthread_cond_broadcast(&s->moved);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* The stream ended, the destination was told and has written all of it. */
static int all_acked(struct stream_src *s)
{
	int done;

	pthread_mutex_lock(&s->lock);
	done = s->end_sent && s->acked == s->read;
	pthread_mutex_unlock(&s->lock);
	return done;
}

static void *ack_main(void *arg)
{
	struct stream_src *s = arg;
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc = m ? 0 : fail(s, -ENOMEM, 0, "out of memory");
	char why[sizeof(s->err)];

	while (!rc && !all_acked(s)) {
		rc = rmig_ctrl_recv(ctx, m, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			rc = fail(s, rc, 1, "%s", ctx->err);
		else if (m->type != RMIG_MSG_STREAM_ACK && s->p->hooks->control_message &&
			 !s->p->hooks->control_message(s->p, m))
			continue; /* the session's (a round of the disks) */
		else if (m->type != RMIG_MSG_STREAM_ACK)
			rc = fail(s, -EPROTO, 0,
				  "protocol error: peer %s sent %s while the hypervisor's stream "
				  "flows",
				  ctx->link->peer, rmig_msg_name(m->type));
		else if ((rc = take_ack(s, m->u.value, why, sizeof(why))))
			fail(s, rc, 0, "%s", why);
	}
	free(m);
	thread_over(s);
	return NULL;
}

/* ---- the session's thread ---- */

struct stream_round {
	struct rmig_payload *p;
	int64_t t_tick;	      /* the last live_tick */
	unsigned round;	      /* the hypervisor's pass we are in */
	int64_t t_start;      /* when it began */
	uint64_t start_bytes; /* stream bytes sent before it */
};

/* A pass of the hypervisor over memory ended: its round event. */
static void round_ended(struct rmig_ctx *ctx, struct stream_round *sr,
			const struct rmig_stream_status *st, int64_t now)
{
	struct rmig_round_stats rs = {
		.round = sr->round,
		.bytes = ctx->stats.bytes_sent - sr->start_bytes,
		.ms = (uint64_t)(now - sr->t_start),
		.dirty_rate = st->dirty_rate,
		.dirty_pages = st->remaining_bytes / RMIG_MIN_PAGE_SIZE,
		.expected_downtime_ms = st->expected_downtime_ms,
	};
	struct rmig_event ev = { .type = RMIG_EV_ROUND, .round = &rs };

	rs.bandwidth =
	    now > sr->t_start ? (double)rs.bytes * 1000.0 / (double)(now - sr->t_start) : 0;
	if (sr->round)
		rmig_emit(ctx, &ev);
	*sr = (struct stream_round){
		.p = sr->p, .round = st->round, .t_start = now, .start_bytes = ctx->stats.bytes_sent
	};
}

static void note_progress(struct rmig_ctx *ctx, const struct rmig_stream_status *st, int64_t now)
{
	ctx->stats.rounds = st->round;
	ctx->stats.expected_downtime_ms = st->expected_downtime_ms;
	if (st->guest_bytes)
		ctx->stats.guest_bytes = st->guest_bytes;
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->prog.round = st->round;
	ctx->prog.bytes_sent = ctx->stats.bytes_sent;
	ctx->prog.dirty_rate = st->dirty_rate;
	ctx->prog.remaining_bytes = st->remaining_bytes;
	ctx->prog.expected_downtime_ms = st->expected_downtime_ms;
	if (now > ctx->t_start_ms)
		ctx->prog.bandwidth =
		    (double)ctx->stats.bytes_sent * 1000.0 / (double)(now - ctx->t_start_ms);
	pthread_mutex_unlock(&ctx->prog_lock);
}

/* Ask the backend how its migration does: progress, round events, and once
 * it paused the guest, the switch-over (which starts our downtime clock). */
static int poll_status(struct rmig_ctx *ctx, struct stream_round *sr, int64_t *t_pause,
		       struct rmig_stream_status *st)
{
	struct rmig_backend *be = ctx->be;
	int64_t now;
	int rc;

	memset(st, 0, sizeof(*st));
	rc = be->ops->stream_status(be, st);
	if (rc)
		return rmig_err(ctx, rc, "backend: %s", be->err);
	if (st->state == RMIG_STREAM_FAILED)
		return rmig_err(ctx, -EIO, "the hypervisor's migration failed: %s",
				st->detail[0] ? st->detail : "no reason given");
	now = rmig_now_ms();
	if (st->round > sr->round)
		round_ended(ctx, sr, st, now);
	note_progress(ctx, st, now);
	if (st->state == RMIG_STREAM_ACTIVE && sr->p->hooks->live_tick &&
	    now - sr->t_tick >= LIVE_TICK_MS) {
		sr->t_tick = now;
		rc = sr->p->hooks->live_tick(sr->p);
		if (rc)
			return rc;
	}
	if (st->state == RMIG_STREAM_SWITCHOVER && !*t_pause) {
		*t_pause = now;
		rc = sr->p->hooks->guest_paused(sr->p);
		if (rc)
			return rc;
		rc = be->ops->stream_switchover(be);
		if (rc)
			return rmig_err(ctx, rc, "backend: switch-over: %s", be->err);
	}
	return 0;
}

/* Sleep until the hypervisor has news (if the backend can tell), a thread
 * ended (wake >= 0), or timeout_ms. The backend is asked nothing after the
 * switch-over (with_backend 0): it may hold a lock its monitor needs. */
static int wait_news(struct rmig_ctx *ctx, int wake, int with_backend, unsigned timeout_ms)
{
	struct rmig_backend *be = ctx->be;
	struct pollfd pfd = { .fd = wake, .events = POLLIN };
	eventfd_t ignored;
	int rc;

	if (with_backend && be->ops->stream_wait) {
		rc = be->ops->stream_wait(be, pfd.fd, timeout_ms);
		if (rc)
			return rmig_err(ctx, rc, "backend: %s", be->err);
	} else if (poll(&pfd, 1, (int)timeout_ms) < 0 && errno != EINTR) {
		return rmig_err(ctx, -errno, "poll: %s", strerror(errno));
	}
	if (wake >= 0)
		eventfd_read(wake, &ignored); /* non-blocking: a wake-up is read once */
	return 0;
}

/* The figures into the stats, from the threads' counts. */
static void note_bytes(struct stream_src *s)
{
	pthread_mutex_lock(&s->lock);
	s->ctx->stats.bytes_sent = s->wire;
	s->ctx->stats.stream_replayed_bytes = s->replayed;
	pthread_mutex_unlock(&s->lock);
}

/* Both threads ended, or one failed. */
static int run_over(struct stream_src *s)
{
	int over;

	pthread_mutex_lock(&s->lock);
	over = !s->running || s->rc;
	pthread_mutex_unlock(&s->lock);
	return over;
}

static void run_stop(struct stream_src *s)
{
	pthread_mutex_lock(&s->lock);
	s->stop = 1;
	pthread_cond_broadcast(&s->moved);
	pthread_mutex_unlock(&s->lock);
	/* The ack reader may wait for a message that will not come. It only
	 * stops early when something failed: the control stream may then be
	 * cut mid-frame, which only a failover survives. A send in progress
	 * ends within the link timeout. */
	if ((s->started & 2) && !all_acked(s))
		s->ctx->link->ops->interrupt(s->ctx->link, RMIG_LINK_STOP_CTRL_RECV);
	if (s->started & 1)
		pthread_join(s->fwd, NULL);
	if (s->started & 2)
		pthread_join(s->acker, NULL);
	s->started = 0;
}

static int run_start(struct stream_src *s)
{
	pthread_mutex_lock(&s->lock);
	s->stop = s->rc = s->rc_link = s->end_sent = 0;
	s->running = 2;
	pthread_mutex_unlock(&s->lock);
	if (pthread_create(&s->fwd, NULL, forward_main, s))
		return rmig_err(s->ctx, -EAGAIN, "cannot start the stream thread");
	s->started = 1;
	if (pthread_create(&s->acker, NULL, ack_main, s)) {
		run_stop(s);
		return rmig_err(s->ctx, -EAGAIN, "cannot start the stream's ack thread");
	}
	s->started |= 2;
	return 0;
}

/* Watch the hypervisor while the stream flows. After the switch-over QEMU
 * writes the rest holding a lock its monitor needs: ask nothing more until
 * the stream ends. */
static int watch(struct stream_src *s, struct stream_round *sr, int64_t *t_pause)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_stream_status st;
	int rc = 0;

	while (!rc && !run_over(s)) {
		if (atomic_load(&ctx->cancelled))
			return rmig_err(ctx, -ECANCELED, "cancelled by the operator");
		note_bytes(s);
		if (!*t_pause)
			rc = poll_status(ctx, sr, t_pause, &st);
		if (!rc)
			rc = wait_news(ctx, s->wake, !*t_pause, STATUS_EVERY_MS);
	}
	return rc;
}

/* One run of the threads on the current link, until the destination holds
 * the whole stream or something fails. *lost: the link failed. */
static int run(struct stream_src *s, struct stream_round *sr, int64_t *t_pause, int *lost)
{
	struct rmig_ctx *ctx = s->ctx;
	char ours[sizeof(ctx->err)];
	int rc = run_start(s);

	*lost = 0;
	if (rc)
		return rc;
	rc = watch(s, sr, t_pause);
	if (!rc && atomic_load(&ctx->cancelled)) /* it broke the link: not a failover */
		rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator");
	memcpy(ours, ctx->err, sizeof(ours)); /* a stopped thread may write it */
	run_stop(s);
	note_bytes(s);
	if (rc) {
		memcpy(ctx->err, ours, sizeof(ours));
		return rc;
	}
	*lost = s->rc_link;
	return s->rc ? rmig_err(ctx, s->rc, "%s", s->err) : 0;
}

/* A new link is up: the destination's first word is the offset it has
 * written, and the stream goes on from there. */
static int take_resume(struct stream_src *s)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc = m ? 0 : rmig_err(ctx, -ENOMEM, "out of memory");

	if (!rc)
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_STREAM_ACK, m, (int)ctx->cfg.link_timeout_ms);
	if (!rc)
		rc = take_ack(s, m->u.value, ctx->err, sizeof(ctx->err));
	if (!rc) {
		pthread_mutex_lock(&s->lock);
		s->sent = s->sending = s->acked;
		pthread_mutex_unlock(&s->lock);
	}
	free(m);
	return rc;
}

/* The link failed under the stream (rc): fail over (the session's hook),
 * as often as the new link fails before the destination said where it is. */
static int resume(struct rmig_payload *p, struct stream_src *s, int rc)
{
	for (;;) {
		rc = p->hooks->link_lost ? p->hooks->link_lost(p, rc) : rc;
		if (rc)
			return rc;
		rc = take_resume(s);
		if (!rc || !rmig_link_failure(rc))
			return rc;
	}
}

/* The end of the stream: the hypervisor must say it completed. */
static int await_completed(struct rmig_ctx *ctx, struct stream_round *sr, int64_t *t_pause)
{
	int64_t end = rmig_now_ms() + ctx->cfg.link_timeout_ms;
	struct rmig_stream_status st;
	int rc;

	for (;;) {
		rc = poll_status(ctx, sr, t_pause, &st);
		if (rc || st.state == RMIG_STREAM_COMPLETED)
			break;
		if (rmig_now_ms() > end)
			return rmig_err(ctx, -EIO,
					"the hypervisor closed its migration stream but does not "
					"report it completed");
		rc = wait_news(ctx, -1, 1, STATUS_EVERY_MS);
		if (rc)
			break;
	}
	if (!rc && !*t_pause)
		*t_pause = rmig_now_ms(); /* it paused between two polls */
	return rc;
}

static int src_open(struct stream_src *s)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_backend *be = ctx->be;
	struct rmig_stream_params p = { .downtime_ms = ctx->cfg.downtime_ms,
					.max_bandwidth = ctx->cfg.max_bandwidth };
	int rc;

	s->hash = XXH3_createState();
	s->ring = malloc(REPLAY_MAX); /* touched as the stream fills it */
	if (!s->hash || !s->ring)
		return rmig_err(ctx, -ENOMEM, "out of memory for the stream's replay buffer");
	XXH3_64bits_reset(s->hash);
	s->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wake < 0)
		return rmig_err(ctx, -errno, "eventfd: %s", strerror(errno));
	rc = be->ops->stream_open(be, &p, &s->fd);
	if (rc)
		return rmig_err(ctx, rc, "backend: starting the migration: %s", be->err);
	return 0;
}

int rmig_stream_save_live(struct rmig_payload *p, int64_t *t_pause)
{
	struct stream_src *s = src_of(p);
	struct stream_round sr = { .p = p, .t_start = rmig_now_ms() };
	int rc = src_open(s), lost;

	while (!rc) {
		rc = run(s, &sr, t_pause, &lost);
		if (!rc || !lost)
			break;
		rc = resume(p, s, rc);
	}
	if (!rc)
		rc = await_completed(s->ctx, &sr, t_pause);
	if (!rc)
		s->digest = XXH3_64bits_digest(s->hash);
	return rc;
}

/* A STREAM_ACK after the stream's end: the answer to its length, when an
 * earlier one already said all of it was written. */
int rmig_stream_save_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;

	return take_ack(src_of(p), m->u.value, ctx->err, sizeof(ctx->err)) ? -EPROTO : 0;
}

/* COMPLETE: one digest, of the whole stream in order. */
int rmig_stream_save_complete(struct rmig_payload *p, struct rmig_msg *m)
{
	m->u.complete.count = 1;
	m->u.complete.digest[0] = src_of(p)->digest;
	if (p->ctx->cfg.verify)
		m->u.complete.flags |= RMIG_COMPLETE_VERIFY;
	return 0;
}

int rmig_stream_save_setup(struct rmig_payload *p)
{
	struct stream_src *s = calloc(1, sizeof(*s));

	if (!s)
		return rmig_err(p->ctx, -ENOMEM, "out of memory");
	s->ctx = p->ctx;
	s->p = p;
	s->fd = s->wake = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->moved, NULL);
	p->priv = s;
	if (p->ctx->cfg.postcopy)
		return rmig_err(p->ctx, -EOPNOTSUPP,
				"post-copy: backend %s migrates itself (its own stream); use its "
				"own post-copy",
				p->ctx->be->ops->name);
	return 0;
}

void rmig_stream_save_cleanup(struct rmig_payload *p)
{
	struct stream_src *s = src_of(p);

	if (!s)
		return;
	run_stop(s);
	XXH3_freeState(s->hash);
	free(s->ring);
	if (s->wake >= 0)
		close(s->wake);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->moved);
	free(s);
	p->priv = NULL;
}
