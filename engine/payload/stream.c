/* stream.c - a hypervisor's own migration stream (QEMU) carried over the
 * link. Such a backend has no regions: the hypervisor runs its pre-copy and
 * pauses its guest itself. The source (stream_save.c) reads the stream from
 * the backend's fd and sends it as STREAM messages on the control stream;
 * the destination, here, writes the messages to its backend's fd, each byte
 * once and in order, and acknowledges what it wrote (STREAM_ACK) so that
 * the source can drop it, or replay the rest from there on a new link
 * after a failover. Both sides hash what passed, so that COMPLETE proves
 * the stream arrived whole and in order. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "xxhash_fast.h"

#include "stream.h"

#define SINK_STALL_FACTOR                                                                          \
	5 /* destination: the hypervisor may stop reading this many link timeouts */
/* The destination acknowledges what it wrote after this many bytes, or this
 * long, whichever comes first: the source's replay buffer (64 MiB) drains
 * well before it fills, for one small message per 4 MiB. */
#define ACK_EVERY_BYTES (4u << 20)
#define ACK_EVERY_MS 100

/* The destination's end of the stream: the backend's fd. */
struct rmig_stream_sink {
	int fd; /* the backend's; it closes it */
	struct XXH3_state_s *hash;
	uint64_t bytes; /* written to the fd: the offset a resumption starts at */
	uint64_t acked; /* the last offset acknowledged */
	int64_t ack_ms; /* when */
};

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

/* Tell the source how much of the stream is written. Best effort but on a
 * new link (must): a lost link shows on the next receive, which waits for
 * the source to come back and then says the offset again. */
static int sink_ack(struct rmig_ctx *ctx, struct rmig_stream_sink *sink, int must)
{
	struct rmig_msg m = { .type = RMIG_MSG_STREAM_ACK };
	char ignored[256];

	m.u.value = sink->bytes;
	sink->acked = sink->bytes;
	sink->ack_ms = rmig_now_ms();
	if (must)
		return rmig_ctrl_send(ctx, &m);
	rmig_ctrl_send_err(ctx, &m, ignored, sizeof(ignored));
	return 0;
}

/* ---- the payload ---- */

struct stream_payload {
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

static void stream_load_cleanup(struct rmig_payload *p)
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

/* A piece of the stream: to the hypervisor, acknowledged now and then. */
static int stream_load_data(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	struct rmig_stream_sink *sink = &sp(p)->sink;
	int rc = sink_write(ctx, sink, m->u.state.data, m->u.state.len);

	if (rc)
		return rc;
	ctx->stats.bytes_sent += m->u.state.len;
	atomic_fetch_add(&ctx->live_bytes, m->u.state.len);
	if (sink->bytes - sink->acked >= ACK_EVERY_BYTES ||
	    rmig_now_ms() - sink->ack_ms >= ACK_EVERY_MS)
		sink_ack(ctx, sink, 0);
	return 0;
}

/* STREAM, or the source's STREAM_ACK: the stream ended at this length;
 * all of it must be written, and the answer says so. */
static int stream_load_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_stream_sink *sink = &sp(p)->sink;

	if (m->type == RMIG_MSG_STREAM)
		return stream_load_data(p, m);
	if (m->u.value != sink->bytes)
		return rmig_err(p->ctx, -EPROTO,
				"protocol error: the source's migration stream ends at byte %llu, "
				"%llu were written",
				(unsigned long long)m->u.value, (unsigned long long)sink->bytes);
	return sink_ack(p->ctx, sink, 0);
}

/* The link was lost: what was written stays written, the source replays
 * the rest from the offset load_resume announces. */
static void stream_load_rewind(struct rmig_payload *p, unsigned round)
{
	(void)p;
	(void)round;
}

/* A new link: the source takes up exactly where the hypervisor's fd is. */
static int stream_load_resume(struct rmig_payload *p)
{
	return sink_ack(p->ctx, &sp(p)->sink, 1);
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
	.msg_types = 1u << RMIG_MSG_STREAM | 1u << RMIG_MSG_STREAM_ACK,
	.save_setup = rmig_stream_save_setup,
	.save_live = rmig_stream_save_live,
	.save_complete = rmig_stream_save_complete,
	.save_message = rmig_stream_save_message,
	.save_cleanup = rmig_stream_save_cleanup,
	.load_setup = stream_load_setup,
	.load_message = stream_load_message,
	.load_rewind = stream_load_rewind,
	.load_complete = stream_load_complete,
	.load_cleanup = stream_load_cleanup,
	.load_resume = stream_load_resume,
};
