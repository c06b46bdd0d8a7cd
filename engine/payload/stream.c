/* stream.c - a hypervisor's own migration stream (QEMU) carried over the
 * link. Such a backend has no regions: the hypervisor runs its pre-copy and
 * pauses its guest itself. The source reads the stream from the backend's
 * fd and sends it as STREAM messages on the control stream, polling the
 * hypervisor's figures for progress and the moment it pauses; the
 * destination writes the messages to its backend's fd. Both sides hash what
 * passed, so that COMPLETE proves the stream arrived whole and in order.
 * Every wait here ends early on news (the backend's stream_wait, the end of
 * the stream): each millisecond spent noticing the pause or the end is
 * guest downtime. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "payload.h"

/* The destination's end of the stream: the backend's fd. */
struct rmig_stream_sink {
	int fd; /* the backend's; it closes it */
	struct XXH3_state_s *hash;
	uint64_t bytes;
};

#define STATUS_EVERY_MS 20 /* progress; the pause, without stream_wait */
#define SINK_STALL_FACTOR                                                                          \
	5 /* destination: the hypervisor may stop reading this many link timeouts */

/* A failed send usually means the peer gave up: its ABORT, if it sent one,
 * says why better than our broken pipe. */
static int peer_reason(struct rmig_ctx *ctx, int rc)
{
	char ours[sizeof(ctx->err)];
	struct rmig_msg *m = calloc(1, sizeof(*m));

	memcpy(ours, ctx->err, sizeof(ours));
	if (m && rmig_ctrl_recv(ctx, m, 200) == -ECONNABORTED)
		rc = -ECONNABORTED;
	else
		memcpy(ctx->err, ours, sizeof(ours));
	free(m);
	return rc;
}

struct stream_round {
	const struct rmig_payload_hooks *hooks;
	unsigned round;	      /* the hypervisor's pass we are in */
	int64_t t_start;      /* when it began */
	uint64_t start_bytes; /* stream bytes sent before it */
};

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
	if (st->round > sr->round) {
		/* One of the hypervisor's passes over memory ended. */
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
		*sr = (struct stream_round){ .hooks = sr->hooks,
					     .round = st->round,
					     .t_start = now,
					     .start_bytes = ctx->stats.bytes_sent };
	}
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
	if (st->state == RMIG_STREAM_SWITCHOVER && !*t_pause) {
		*t_pause = now;
		sr->hooks->guest_paused(ctx);
		rc = be->ops->stream_switchover(be);
		if (rc)
			return rmig_err(ctx, rc, "backend: switch-over: %s", be->err);
	}
	return 0;
}

/* The stream's reader: its own thread, so that waiting for the hypervisor's
 * figures (a monitor round trip, slow when the hypervisor is busy) never
 * leaves the stream unread and the hypervisor blocked on it. */
struct forwarder {
	struct rmig_ctx *ctx;
	int fd;
	XXH3_state_t *hash;
	uint8_t *buf;
	atomic_uint_fast64_t bytes; /* sent so far */
	atomic_int stop;	    /* the control thread gave up */
	atomic_int done;	    /* 1: the stream ended; a negative errno: failed */
	int wake;		    /* eventfd, readable once done is set */
	int send_failed;	    /* the failure was the link's (the peer may say why) */
	char err[512];		    /* why it failed: ctx->err is the control thread's */
};

static void *forward_main(void *arg)
{
	struct forwarder *f = arg;
	int rc = 0;

	while (!rc && !atomic_load(&f->stop)) {
		struct pollfd pfd = { .fd = f->fd, .events = POLLIN };
		struct rmig_msg m = { .type = RMIG_MSG_STREAM };
		ssize_t got;
		int n = poll(&pfd, 1, STATUS_EVERY_MS);

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			continue;
		got = n < 0 ? -1 : read(f->fd, f->buf, RMIG_MAX_STREAM_CHUNK);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0) {
			rc = -errno;
			snprintf(f->err, sizeof(f->err), "reading the hypervisor's stream: %s",
				 strerror(errno));
			break;
		}
		if (got == 0)
			break; /* the hypervisor closed it */
		XXH3_64bits_update(f->hash, f->buf, (size_t)got);
		m.u.state.data = f->buf;
		m.u.state.len = (uint32_t)got;
		rc = rmig_ctrl_send_err(f->ctx, &m, f->err, sizeof(f->err));
		f->send_failed = rc != 0;
		if (!rc)
			atomic_fetch_add(&f->bytes, (uint64_t)got);
	}
	if (!rc && atomic_load(&f->stop))
		snprintf(f->err, sizeof(f->err), "stopped");
	atomic_store(&f->done, rc ? rc : atomic_load(&f->stop) ? -ECANCELED : 1);
	eventfd_write(f->wake, 1);
	return NULL;
}

/* Sleep until the hypervisor has news (if the backend can tell), the stream
 * ended, or timeout_ms. The backend is asked nothing after the switch-over
 * (with_backend 0): it may hold a lock its monitor needs. */
static int wait_news(struct rmig_ctx *ctx, struct forwarder *f, int with_backend,
		     unsigned timeout_ms)
{
	struct rmig_backend *be = ctx->be;
	struct pollfd pfd = { .fd = f ? f->wake : -1, .events = POLLIN };
	int rc;

	if (with_backend && be->ops->stream_wait) {
		rc = be->ops->stream_wait(be, pfd.fd, timeout_ms);
		if (rc)
			return rmig_err(ctx, rc, "backend: %s", be->err);
		return 0;
	}
	if (poll(&pfd, 1, (int)timeout_ms) < 0 && errno != EINTR)
		return rmig_err(ctx, -errno, "poll: %s", strerror(errno));
	return 0;
}

static int stream_send(struct rmig_payload *pl, int64_t *t_pause, uint64_t *digest)
{
	struct rmig_ctx *ctx = pl->ctx;
	struct rmig_backend *be = ctx->be;
	struct rmig_stream_params p = { .downtime_ms = ctx->cfg.downtime_ms,
					.max_bandwidth = ctx->cfg.max_bandwidth };
	struct rmig_stream_status st;
	struct stream_round sr = { .hooks = pl->hooks, .t_start = rmig_now_ms() };
	struct forwarder f = { .ctx = ctx, .fd = -1, .wake = -1 };
	pthread_t tid;
	int64_t end;
	int rc, running = 0;

	f.hash = XXH3_createState();
	f.buf = malloc(RMIG_MAX_STREAM_CHUNK);
	if (!f.hash || !f.buf) {
		rc = rmig_err(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	f.wake = eventfd(0, EFD_CLOEXEC);
	if (f.wake < 0) {
		rc = rmig_err(ctx, -errno, "eventfd: %s", strerror(errno));
		goto out;
	}
	XXH3_64bits_reset(f.hash);
	rc = be->ops->stream_open(be, &p, &f.fd);
	if (rc) {
		rmig_err(ctx, rc, "backend: starting the migration: %s", be->err);
		goto out;
	}
	if (pthread_create(&tid, NULL, forward_main, &f)) {
		rc = rmig_err(ctx, -EAGAIN, "cannot start the stream thread");
		goto out;
	}
	running = 1;
	/* Watch the hypervisor while the stream flows. After the switch-over
	 * QEMU writes the rest holding a lock its monitor needs: ask nothing
	 * more until the stream ends. */
	while (!atomic_load(&f.done)) {
		if (atomic_load(&ctx->cancelled)) {
			rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator");
			goto out;
		}
		ctx->stats.bytes_sent = atomic_load(&f.bytes);
		if (!*t_pause) {
			rc = poll_status(ctx, &sr, t_pause, &st);
			if (rc)
				goto out;
		}
		rc = wait_news(ctx, &f, !*t_pause, STATUS_EVERY_MS);
		if (rc)
			goto out;
	}
	pthread_join(tid, NULL);
	running = 0;
	ctx->stats.bytes_sent = atomic_load(&f.bytes);
	rc = atomic_load(&f.done);
	if (rc < 0) {
		rmig_err(ctx, rc, "%s", f.err);
		if (f.send_failed)
			rc = peer_reason(ctx, rc);
		goto out;
	}
	/* The end of the stream: the hypervisor must say it completed. */
	end = rmig_now_ms() + ctx->cfg.link_timeout_ms;
	for (;;) {
		rc = poll_status(ctx, &sr, t_pause, &st);
		if (rc)
			goto out;
		if (st.state == RMIG_STREAM_COMPLETED)
			break;
		if (rmig_now_ms() > end) {
			rc = rmig_err(ctx, -EIO,
				      "the hypervisor closed its migration stream but does not "
				      "report it completed");
			goto out;
		}
		rc = wait_news(ctx, NULL, 1, STATUS_EVERY_MS);
		if (rc)
			goto out;
	}
	if (!*t_pause)
		*t_pause = rmig_now_ms(); /* it paused between two polls */
	*digest = XXH3_64bits_digest(f.hash);
	rc = 0;
out:
	if (running) {
		/* A send in progress ends within the link timeout. */
		atomic_store(&f.stop, 1);
		pthread_join(tid, NULL);
	}
	XXH3_freeState(f.hash);
	free(f.buf);
	if (f.wake >= 0)
		close(f.wake);
	return rc;
}

static int sink_open(struct rmig_ctx *ctx, struct rmig_stream_sink *sink)
{
	struct rmig_stream_params p = { .downtime_ms = ctx->cfg.downtime_ms };
	int rc;

	memset(sink, 0, sizeof(*sink));
	sink->fd = -1;
	sink->hash = XXH3_createState();
	if (!sink->hash)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	XXH3_64bits_reset(sink->hash);
	rc = ctx->be->ops->stream_open(ctx->be, &p, &sink->fd);
	if (rc)
		return rmig_err(ctx, rc, "backend: starting the incoming migration: %s",
				ctx->be->err);
	return 0;
}

static int sink_write(struct rmig_ctx *ctx, struct rmig_stream_sink *sink, const void *data,
		      size_t len)
{
	const uint8_t *p = data;
	int stall_ms = (int)ctx->cfg.link_timeout_ms * SINK_STALL_FACTOR;

	XXH3_64bits_update(sink->hash, data, len);
	while (len) {
		struct pollfd pfd = { .fd = sink->fd, .events = POLLOUT };
		ssize_t n;
		int ready = poll(&pfd, 1, stall_ms);

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready == 0)
			return rmig_err(
			    ctx, -ETIMEDOUT,
			    "the destination hypervisor took no migration data for %d ms",
			    stall_ms);
		/* A socket (the usual case): no SIGPIPE if the hypervisor died. */
		n = send(sink->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == ENOTSOCK)
			n = write(sink->fd, p, len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return rmig_err(ctx, -errno,
					"the destination hypervisor stopped reading its migration "
					"stream: %s",
					strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	sink->bytes += (uint64_t)(p - (const uint8_t *)data);
	return 0;
}

static uint64_t sink_digest(const struct rmig_stream_sink *sink)
{
	return XXH3_64bits_digest(sink->hash);
}

static void sink_close(struct rmig_stream_sink *sink)
{
	XXH3_freeState(sink->hash);
	sink->hash = NULL;
	sink->fd = -1; /* the backend's */
}

/* ---- the payload ---- */

struct stream_payload {
	uint64_t digest;	      /* source: of every byte sent */
	struct rmig_stream_sink sink; /* destination */
	int sink_open;
};

static struct stream_payload *sp(struct rmig_payload *p)
{
	return p->priv;
}

/* Only a backend whose hypervisor migrates itself has a stream. */
static int stream_wanted(struct rmig_ctx *ctx)
{
	return ctx->be->ops->stream_open != NULL;
}

static int stream_save_setup(struct rmig_payload *p)
{
	p->priv = calloc(1, sizeof(struct stream_payload));
	if (!p->priv)
		return rmig_err(p->ctx, -ENOMEM, "out of memory");
	if (p->ctx->cfg.postcopy)
		return rmig_err(p->ctx, -EOPNOTSUPP,
				"post-copy: backend %s migrates itself (its own stream); use its "
				"own post-copy",
				p->ctx->be->ops->name);
	return 0;
}

static int stream_save_live(struct rmig_payload *p, int64_t *t_pause)
{
	return stream_send(p, t_pause, &sp(p)->digest);
}

/* COMPLETE: one digest, of the whole stream in order. */
static int stream_save_complete(struct rmig_payload *p, struct rmig_msg *m)
{
	m->u.complete.count = 1;
	m->u.complete.digest[0] = sp(p)->digest;
	if (p->ctx->cfg.verify)
		m->u.complete.flags |= RMIG_COMPLETE_VERIFY;
	return 0;
}

static void stream_cleanup(struct rmig_payload *p)
{
	if (p->priv && sp(p)->sink_open)
		sink_close(&sp(p)->sink);
	free(p->priv);
	p->priv = NULL;
}

static int stream_load_setup(struct rmig_payload *p, const struct rmig_wire_hello *hello)
{
	int rc;

	(void)hello;
	p->priv = calloc(1, sizeof(struct stream_payload));
	if (!p->priv)
		return rmig_err(p->ctx, -ENOMEM, "out of memory");
	rc = sink_open(p->ctx, &sp(p)->sink);
	sp(p)->sink_open = !rc;
	return rc;
}

static int stream_load_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	int rc = sink_write(ctx, &sp(p)->sink, m->u.state.data, m->u.state.len);

	if (rc)
		return rc;
	ctx->stats.bytes_sent += m->u.state.len;
	atomic_fetch_add(&ctx->live_bytes, m->u.state.len);
	return 0;
}

/* The hash of every byte, in order. */
static int stream_load_complete(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	uint64_t got = sink_digest(&sp(p)->sink);

	if (m->u.complete.flags & RMIG_COMPLETE_POSTCOPY)
		return rmig_err(ctx, -EPROTO, "protocol error: COMPLETE with post-copy");
	if (m->u.complete.count != 1)
		return rmig_err(ctx, -EBADMSG, "bad frame: COMPLETE has %u digests for one stream",
				m->u.complete.count);
	if (!(m->u.complete.flags & RMIG_COMPLETE_VERIFY))
		return 0;
	if (got != m->u.complete.digest[0])
		return rmig_err(ctx, -EILSEQ,
				"verification failed: the migration stream's digest is %016llx, "
				"the source sent %016llx",
				(unsigned long long)got,
				(unsigned long long)m->u.complete.digest[0]);
	ctx->stats.verified = 1;
	return 0;
}

const struct rmig_payload_ops rmig_stream_payload = {
	.size = sizeof(struct rmig_payload_ops),
	.name = "stream",
	.wanted = stream_wanted,
	.msg_types = 1u << RMIG_MSG_STREAM,
	.save_setup = stream_save_setup,
	.save_live = stream_save_live,
	.save_complete = stream_save_complete,
	.save_cleanup = stream_cleanup,
	.load_setup = stream_load_setup,
	.load_message = stream_load_message,
	.load_complete = stream_load_complete,
	.load_cleanup = stream_cleanup,
};
