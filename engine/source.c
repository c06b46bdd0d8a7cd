/* source.c - the sending side: handshake, pre-copy rounds, convergence,
 * stop-and-copy, two-phase commit, and rollback.
 *
 * Threads: the caller's thread runs the rounds and the control stream; one
 * worker per data channel takes page runs from a queue, splits them into
 * zero and data pages, and sends PAGES/ZERO frames straight from guest
 * memory. A round ends when the queue is drained, the ROUND_END message
 * (frames per channel) is sent and the destination's ROUND_ACK says every
 * frame of the round is in its memory. The next round starts only then, so
 * a page can never be applied out of order across rounds.
 *
 * Post-copy (cfg.postcopy): at the switch-over, the pages still dirty are
 * announced (DISCARD) instead of sent; after STARTED they go as one more
 * round on the data channels (a pusher thread queues them) while this thread
 * answers the destination's PAGE_REQUESTs on the control stream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "bitmap.h"
#include "converge.h"
#include "stream.h"
#include "digest.h"
#include "engine.h"
#include "placement.h"
#include "populated.h"
#include "postcopy.h"

#define QUEUE_CAP 256
#define ITEM_BYTES (1u << 20) /* dirty pages per queued item: 1 MiB worth */
#define ITEM_SPAN 4096	      /* pages of address space one item may cover */
#define MIN_BW_SAMPLE (1u << 20)
/* Post-copy: announcements of dirty pages before the pause, at most; and
 * fewer new ones than this are left to the pause (dropping a page costs the
 * destination some 15 us, mostly splitting huge pages). */
#define PREDROP_PASSES 4
#define PREDROP_ENOUGH 512

/* Pages [first, first+span) of a region whose bit is set in map (the
 * round's bitmap, unchanged until the round is acknowledged): scattered
 * dirty pages travel together, in frames of up to RMIG_MAX_RUNS runs. */
struct send_item {
	uint32_t region; /* index in ctx->regions */
	uint64_t first, span;
	const uint64_t *map;
};

struct sender;

/* Work for the channels of one NUMA node; they wait on `work`. */
struct send_queue {
	struct send_item q[QUEUE_CAP];
	size_t head, count;
	pthread_cond_t work;
};

struct send_worker {
	struct sender *s;
	unsigned chan;
	unsigned group; /* the queue (NUMA node group) this channel serves */
	pthread_t tid;
	int started;
	uint64_t seq;
	/* This round's figures; read by the main thread only when idle. */
	uint64_t frames, pages, zero_pages, bytes;
	uint8_t hdr[RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS];
};

struct sender {
	struct rmig_ctx *ctx;
	pthread_mutex_t lock;
	pthread_cond_t space, idle;
	struct send_queue queue[RMIG_MAX_NODE_GROUPS];
	size_t queued; /* over all queues */
	unsigned busy;
	int quit;
	int failed;
	char failure[400];
	uint32_t round;
	struct send_worker w[RMIG_MAX_CHANNELS];
	unsigned nworkers;
	/* --max-bandwidth: a shared virtual clock of when the next byte may go. */
	pthread_mutex_t rate_lock;
	double rate_next;
	uint64_t *bitmap[RMIG_MAX_REGIONS]; /* to send next; post-copy: the
					     * pages DISCARDed, fixed from then on */
	uint64_t *sent[RMIG_MAX_REGIONS];   /* sent, not yet acknowledged */
	int postcopy;			    /* switch over by post-copy */
	int postcopy_started;		    /* STARTED came: the guest runs there
					     * while part of its memory is here */
};

static void fail(struct sender *s, const char *why)
{
	pthread_mutex_lock(&s->lock);
	if (!s->failed) {
		s->failed = 1;
		snprintf(s->failure, sizeof(s->failure), "%s", why);
	}
	pthread_mutex_unlock(&s->lock);
}

static void rate_limit(struct sender *s, size_t bytes)
{
	double rate = (double)s->ctx->cfg.max_bandwidth, now, wait;

	if (!rate)
		return;
	pthread_mutex_lock(&s->rate_lock);
	now = rmig_now_s();
	if (s->rate_next < now - 0.05) /* allow at most a 50 ms burst after idling */
		s->rate_next = now - 0.05;
	s->rate_next += (double)bytes / rate;
	wait = s->rate_next - now;
	pthread_mutex_unlock(&s->rate_lock);
	if (wait > 0) {
		struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };

		nanosleep(&ts, NULL);
	}
}

/* Send the runs collected so far as one PAGES or ZERO frame. */
static int flush_runs(struct send_worker *w, const struct rmig_region *r, uint8_t type,
		      struct rmig_run *runs, uint32_t *nruns)
{
	struct rmig_ctx *ctx = w->s->ctx;
	struct iovec data[RMIG_MAX_RUNS];
	uint64_t pages = 0;
	size_t sub, bytes;
	int rc;

	if (!*nruns)
		return 0;
	sub = rmig_pages_encode(w->hdr + RMIG_FRAME_HDR_LEN, sizeof(w->hdr) - RMIG_FRAME_HDR_LEN,
				r->id, w->s->round, runs, *nruns);
	for (uint32_t i = 0; i < *nruns; i++) {
		data[i] = (struct iovec){ (char *)r->host + runs[i].first * r->page_size,
					  runs[i].count * r->page_size };
		pages += runs[i].count;
	}
	if (type == RMIG_MSG_PAGES && ctx->placement) {
		/* RDMA WRITE straight into the peer's copy of the region: no frame;
		 * the round's end is signalled only after chan_flush. */
		uint64_t off[RMIG_MAX_RUNS];
		struct rmig_link *l = ctx->link;

		for (uint32_t i = 0; i < *nruns; i++)
			off[i] = runs[i].first * r->page_size;
		bytes = pages * r->page_size;
		rate_limit(w->s, bytes);
		rc = l->ops->chan_write(l, w->chan, (uint32_t)(r - ctx->regions), off, data,
					(int)*nruns, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			return rc;
		w->bytes += bytes;
		w->pages += pages;
		*nruns = 0;
		return 0;
	}
	bytes = RMIG_FRAME_HDR_LEN + sub + (type == RMIG_MSG_PAGES ? pages * r->page_size : 0);
	rate_limit(w->s, bytes);
	rc = rmig_chan_send_frame(ctx, w->chan, &w->seq, type, w->hdr, sub, data,
				  type == RMIG_MSG_PAGES ? (int)*nruns : 0);
	if (rc)
		return rc;
	w->frames++;
	w->bytes += bytes;
	if (type == RMIG_MSG_PAGES)
		w->pages += pages;
	else
		w->zero_pages += pages;
	*nruns = 0;
	return 0;
}

static int add_page(struct send_worker *w, const struct rmig_region *r, uint8_t type,
		    struct rmig_run *runs, uint32_t *nruns, uint64_t page)
{
	int rc;

	if (*nruns && runs[*nruns - 1].first + runs[*nruns - 1].count == page) {
		runs[*nruns - 1].count++;
		return 0;
	}
	if (*nruns == RMIG_MAX_RUNS) {
		rc = flush_runs(w, r, type, runs, nruns);
		if (rc)
			return rc;
	}
	runs[(*nruns)++] = (struct rmig_run){ page, 1 };
	return 0;
}

static int send_item(struct send_worker *w, const struct send_item *it)
{
	const struct rmig_region *r = &w->s->ctx->regions[it->region];
	struct rmig_run data[RMIG_MAX_RUNS], zero[RMIG_MAX_RUNS];
	uint32_t nd = 0, nz = 0;
	int rc = 0;

	for (uint64_t p = it->first; p < it->first + it->span && !rc; p++) {
		if (!((it->map[p / 64] >> (p % 64)) & 1))
			continue;
		if (rmig_page_is_zero((char *)r->host + p * r->page_size, r->page_size))
			rc = add_page(w, r, RMIG_MSG_ZERO, zero, &nz, p);
		else
			rc = add_page(w, r, RMIG_MSG_PAGES, data, &nd, p);
	}
	if (!rc)
		rc = flush_runs(w, r, RMIG_MSG_PAGES, data, &nd);
	if (!rc)
		rc = flush_runs(w, r, RMIG_MSG_ZERO, zero, &nz);
	return rc;
}

static void *worker_main(void *arg)
{
	struct send_worker *w = arg;
	struct sender *s = w->s;
	struct send_queue *q = &s->queue[w->group];

	/* Read guest memory (and fill the link's buffers) next to it. */
	rmig_numa_run_on_node(s->ctx->chan_node[w->chan]);
	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct send_item it;
		int rc = 0;

		while (!q->count && !s->quit)
			pthread_cond_wait(&q->work, &s->lock);
		if (s->quit)
			break;
		it = q->q[q->head];
		q->head = (q->head + 1) % QUEUE_CAP;
		q->count--;
		s->queued--;
		s->busy++;
		pthread_cond_broadcast(&s->space);
		if (!s->failed) {
			pthread_mutex_unlock(&s->lock);
			if (rmig_cancel_requested(s->ctx))
				fail(s, "cancelled by the operator");
			else if ((rc = send_item(w, &it)))
				fail(s, s->ctx->link->err);
			pthread_mutex_lock(&s->lock);
		}
		s->busy--;
		if (!s->queued && !s->busy)
			pthread_cond_broadcast(&s->idle);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int push_item(struct sender *s, const struct send_item *it)
{
	struct send_queue *q = &s->queue[s->ctx->region_group[it->region]];
	int failed;

	pthread_mutex_lock(&s->lock);
	while (q->count == QUEUE_CAP && !s->failed)
		pthread_cond_wait(&s->space, &s->lock);
	failed = s->failed;
	if (!failed) {
		q->q[(q->head + q->count) % QUEUE_CAP] = *it;
		q->count++;
		s->queued++;
		pthread_cond_signal(&q->work);
	}
	pthread_mutex_unlock(&s->lock);
	return failed ? -EIO : 0;
}

static int has_failed(struct sender *s)
{
	int failed;

	pthread_mutex_lock(&s->lock);
	failed = s->failed;
	pthread_mutex_unlock(&s->lock);
	return failed;
}

static void wait_idle(struct sender *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->queued || s->busy) {
		if (s->failed) { /* drop what is queued: it will not be sent */
			for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
				s->queue[g].count = 0;
			s->queued = 0;
			pthread_cond_broadcast(&s->space);
			if (!s->busy)
				break;
		}
		pthread_cond_wait(&s->idle, &s->lock);
	}
	pthread_mutex_unlock(&s->lock);
}

static int start_workers(struct sender *s)
{
	for (unsigned i = 0; i < s->ctx->nchan; i++) {
		s->w[i].s = s;
		s->w[i].chan = i;
		s->w[i].group = i % s->ctx->ngroups;
		if (pthread_create(&s->w[i].tid, NULL, worker_main, &s->w[i]))
			return rmig_err(s->ctx, -EAGAIN, "cannot start sender threads");
		s->w[i].started = 1;
		s->nworkers++;
	}
	return 0;
}

static void stop_workers(struct sender *s)
{
	pthread_mutex_lock(&s->lock);
	s->quit = 1;
	for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
		pthread_cond_broadcast(&s->queue[g].work);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < RMIG_MAX_CHANNELS; i++)
		if (s->w[i].started)
			pthread_join(s->w[i].tid, NULL);
}

static void reset_figures(struct sender *s, uint32_t round)
{
	for (unsigned i = 0; i < s->ctx->nchan; i++)
		s->w[i].frames = s->w[i].pages = s->w[i].zero_pages = s->w[i].bytes = 0;
	s->round = round;
}

/* Queue every page set in map[] for the senders. The items point into map:
 * it must stay unchanged until the senders are idle. */
static int queue_pages(struct sender *s, uint64_t *const *map)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc = 0;

	for (size_t ri = 0; ri < ctx->nregions && !rc; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];
		uint64_t npages = r->len / r->page_size, pos = 0, start, len;
		uint64_t per_item = ITEM_BYTES / r->page_size ? ITEM_BYTES / r->page_size : 1;

		struct send_item it = { (uint32_t)ri, 0, 0, map[ri] };
		uint64_t in_item = 0;

		/* Gather runs into items of at most per_item dirty pages spread
		 * over at most ITEM_SPAN pages. */
		while (!rc &&
		       rmig_dirty_bitmap_next_run(map[ri], npages, pos, per_item, &start, &len)) {
			if (in_item &&
			    (in_item + len > per_item || start + len - it.first > ITEM_SPAN)) {
				rc = push_item(s, &it);
				in_item = 0;
			}
			if (!in_item)
				it.first = start;
			it.span = start + len - it.first;
			in_item += len;
			pos = start + len;
		}
		if (!rc && in_item)
			rc = push_item(s, &it);
	}
	return rc;
}

/* The senders are idle: add up the round's figures into rs and describe
 * the round in m (ROUND_END). */
static void round_end(struct sender *s, struct rmig_round_stats *rs, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;

	memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.round_end));
	m->type = RMIG_MSG_ROUND_END;
	m->u.round_end.h.round = rs->round;
	m->u.round_end.h.nchan = ctx->nchan;
	for (unsigned i = 0; i < ctx->nchan; i++) {
		m->u.round_end.frames[i] = s->w[i].frames;
		rs->pages += s->w[i].pages;
		rs->zero_pages += s->w[i].zero_pages;
		rs->bytes += s->w[i].bytes;
	}
	m->u.round_end.h.pages = rs->pages;
	m->u.round_end.h.zero_pages = rs->zero_pages;
	m->u.round_end.h.bytes = rs->bytes;
}

/* Send every page set in the bitmaps (clearing them), end the round and wait
 * for the destination to confirm it holds all of it. */
static int send_round(struct sender *s, struct rmig_round_stats *rs)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg m;
	int rc = 0;

	reset_figures(s, rs->round);
	queue_pages(s, s->bitmap); /* a failure shows in s->failed */
	/* Keep the round's pages until it is acknowledged: a failover sends
	 * them again. */
	for (size_t ri = 0; ri < ctx->nregions; ri++) {
		uint64_t *t = s->sent[ri];

		s->sent[ri] = s->bitmap[ri];
		s->bitmap[ri] = t;
		memset(t, 0,
		       rmig_bitmap_words(ctx->regions[ri].len / ctx->regions[ri].page_size) * 8);
	}
	wait_idle(s);
	if (s->failed)
		return rmig_err(ctx, -EIO, "%s", s->failure);
	/* Placed pages must be in the peer's memory before it hears the round
	 * ended: the destination reads ROUND_END as "all of it is there". */
	for (unsigned i = 0; ctx->placement && i < ctx->nchan; i++) {
		rc = ctx->link->ops->chan_flush(ctx->link, i, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			return rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
	}
	round_end(s, rs, &m);
	rc = rmig_ctrl_send(ctx, &m);
	if (rc)
		return rc;
	rc = rmig_ctrl_expect(ctx, RMIG_MSG_ROUND_ACK, &m, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return rc;
	if (m.u.value != rs->round)
		return rmig_err(ctx, -EPROTO,
				"protocol error: ROUND_ACK for round %llu, expected %u",
				(unsigned long long)m.u.value, rs->round);
	for (size_t ri = 0; ri < ctx->nregions; ri++)
		memset(s->sent[ri], 0,
		       rmig_bitmap_words(ctx->regions[ri].len / ctx->regions[ri].page_size) * 8);
	ctx->stats.pages_sent += rs->pages;
	ctx->stats.zero_pages += rs->zero_pages;
	ctx->stats.bytes_sent += rs->bytes;
	return 0;
}

static int fetch_dirty(struct sender *s, uint64_t *pages)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc;

	*pages = 0;
	for (size_t ri = 0; ri < ctx->nregions; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];

		rc = ctx->be->ops->fetch_dirty(ctx->be, ri, s->bitmap[ri]);
		if (rc)
			return rmig_err(ctx, rc, "backend: fetching the dirty log: %s",
					ctx->be->err);
		*pages += rmig_dirty_bitmap_count(s->bitmap[ri], r->len / r->page_size);
	}
	return 0;
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
			    "--pin=all: the destination does not offer its memory for "
			    "RDMA WRITE (it runs --pin=staging or could not register it)");
		snprintf(ctx->link_detail, sizeof(ctx->link_detail),
			 "destination offers no registered memory: using staging buffers");
		return 0;
	}
	rmig_link_mem_of_regions(ctx, mem);
	rc = l->ops->mem_import(l, mem, ctx->nregions, m->u.state.data, m->u.state.len);
	if (rc && ctx->cfg.pin == RMIG_PIN_ALL)
		return rmig_err(ctx, rc, "--pin=all: %s", l->err);
	if (rc) {
		snprintf(ctx->link_detail, sizeof(ctx->link_detail),
			 "guest memory not registered (%s): using staging buffers", l->err);
		return 0;
	}
	ctx->placement = 1;
	return 0;
}

enum open_kind { OPEN_NEW, OPEN_RESUME, OPEN_QUERY };

/* The opening of every connection: HELLO both ways, versions, then who the
 * peer is (authentication). Nothing about the guest is sent before. */
static int open_session(struct rmig_ctx *ctx, enum open_kind kind, uint32_t round,
			struct rmig_msg *m)
{
	int tmo = (int)ctx->cfg.link_timeout_ms, rc, ask_placement;
	int postcopy = kind != OPEN_QUERY && ctx->cfg.postcopy;
	uint64_t peer_caps;
	uint16_t lo, hi;

	ctx->ctrl_tx_seq = ctx->ctrl_rx_seq = 0;
	/* Without a key, refuse a remote peer before telling it anything. */
	if (!ctx->cfg.psk && (rc = rmig_auth_policy(ctx, 0, 1)))
		return rc;
	if (getrandom(ctx->nonce, sizeof(ctx->nonce), 0) != sizeof(ctx->nonce))
		return rmig_err(ctx, -EIO, "getrandom failed");
	if (kind == OPEN_NEW)
		memcpy(ctx->session, ctx->nonce, RMIG_NONCE_LEN);
	/* Post-copy pages are placed by the destination's CPU, not RDMA WRITE. */
	ask_placement = kind != OPEN_QUERY && ctx->nregions && ctx->link->ops->chan_write &&
			ctx->cfg.pin != RMIG_PIN_STAGING && !ctx->cfg.postcopy;
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_HELLO;
	m->u.hello = (struct rmig_wire_hello){
		.ver_min = RMIG_WIRE_VERSION_MIN,
		.ver_max = RMIG_WIRE_VERSION_MAX,
		.channels = ctx->nchan,
		.caps =
		    (ask_placement ? RMIG_CAP_PLACEMENT : 0) | (postcopy ? RMIG_CAP_POSTCOPY : 0),
		.flags = (ctx->cfg.psk ? RMIG_HELLO_PSK : 0) |
			 (kind == OPEN_RESUME ? RMIG_HELLO_RESUME : 0) |
			 (kind == OPEN_QUERY ? RMIG_HELLO_QUERY : 0),
		.round = round,
	};
	memcpy(m->u.hello.nonce, ctx->nonce, RMIG_NONCE_LEN);
	memcpy(m->u.hello.session, ctx->session, RMIG_NONCE_LEN);
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
		rc = rmig_auth_exchange(ctx, 1);
	/* A receiver that can catch its guest's faults says so; one that
	 * cannot refuses with its reason, one that predates post-copy is silent. */
	if (!rc && postcopy && !(peer_caps & RMIG_CAP_POSTCOPY))
		rc = rmig_err(ctx, -EOPNOTSUPP,
			      "the destination %s does not support post-copy (an older rmig)",
			      ctx->link->peer);
	if (rc && rc != -ECONNABORTED)
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
	return rc;
}

/* A new migration or its resumption on another link: open, data channels,
 * layout, and RDMA placement if both sides can. */
static int handshake(struct rmig_ctx *ctx, enum open_kind kind, uint32_t round)
{
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int tmo = (int)ctx->cfg.link_timeout_ms, rc, ask_placement;

	if (!m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	ctx->placement = 0;
	rc = open_session(ctx, kind, round, m);
	if (rc)
		goto out;
	if (kind == OPEN_NEW) {
		struct rmig_event ev = { .type = RMIG_EV_CONNECTED, .peer = ctx->link->peer };

		rmig_emit(ctx, &ev);
	}
	ask_placement = ctx->nregions && ctx->link->ops->chan_write &&
			ctx->cfg.pin != RMIG_PIN_STAGING && !ctx->cfg.postcopy;
	for (unsigned i = 0; i < ctx->nchan; i++) {
		uint8_t hdr[RMIG_FRAME_HDR_LEN + RMIG_CHANNEL_LEN];
		uint64_t seq = 0;
		unsigned chan;

		rc = ctx->link->ops->connect_channel(ctx->link, tmo, ctx->chan_node[i], &chan);
		if (rc) {
			rc = rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
			goto out;
		}
		m->type = RMIG_MSG_CHANNEL;
		memcpy(m->u.channel.token, ctx->token, RMIG_NONCE_LEN);
		m->u.channel.index = chan;
		m->u.channel.count = ctx->nchan;
		rmig_msg_encode(m, hdr + RMIG_FRAME_HDR_LEN, RMIG_CHANNEL_LEN);
		rc = rmig_chan_send_frame(ctx, chan, &seq, RMIG_MSG_CHANNEL, hdr, RMIG_CHANNEL_LEN,
					  NULL, 0);
		if (rc) {
			rc = rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
			goto out;
		}
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
	if (!rc && ask_placement) {
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_MEM_KEYS, m, tmo);
		if (!rc)
			rc = take_memory(ctx, m);
		if (rc)
			rmig_ctrl_send_abort(ctx, rc, ctx->err);
	}
	if (!rc)
		rmig_link_chosen(ctx);
out:
	free(m);
	return rc;
}

static struct rmig_link *tcp_link(struct rmig_ctx *ctx)
{
	const struct rmig_link_opts opts = { .device = ctx->cfg.device,
					     .gid_index = ctx->cfg.gid_index };

	for (unsigned i = 0; i < ctx->nlinks; i++)
		if (!strcmp(ctx->links[i]->ops->name, "tcp"))
			return ctx->links[i];
	if (ctx->nlinks < 2 && !rmig_link_create("tcp", &opts, &ctx->links[ctx->nlinks]))
		return ctx->links[ctx->nlinks++];
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Stop every op on the current link and drop its session. */
static void drop_session(struct rmig_ctx *ctx)
{
	struct rmig_link *l = ctx->link;

	l->ops->interrupt(l, RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV |
				 RMIG_LINK_STOP_CTRL_SEND);
	rmig_heartbeat_pause(ctx, 1);
	if (l->ops->mem_release)
		l->ops->mem_release(l);
	l->ops->close_session(l);
	ctx->placement = 0;
}

/* The link failed during pre-copy: resume the same migration over TCP. The
 * destination keeps what it acknowledged; every page of the round it did
 * not acknowledge is dirty again, and the next round (next_round) resends
 * it. 0 when the migration goes on; else the first error, and the failover's. */
static int failover(struct sender *s, int rc, unsigned next_round)
{
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_link *from = ctx->link, *to;
	int64_t end = rmig_now_ms() + ctx->cfg.failover_timeout_ms;
	char why[sizeof(ctx->err)];

	if (ctx->cfg.failover == RMIG_FAILOVER_NONE || !rmig_link_failure(rc) ||
	    atomic_load(&ctx->cancelled))
		return rc;
	memcpy(why, ctx->err, sizeof(why));
	drop_session(ctx);
	wait_idle(s);
	for (size_t ri = 0; ri < ctx->nregions; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];
		size_t words = rmig_bitmap_words(r->len / r->page_size);

		for (size_t w = 0; w < words; w++)
			s->bitmap[ri][w] |= s->sent[ri][w];
		memset(s->sent[ri], 0, words * 8);
	}
	to = tcp_link(ctx);
	if (!to)
		return rmig_err(ctx, rc, "%s; no tcp link to fail over to", why);
	rmig_phase_enter(ctx, RMIG_SRC_FAILOVER);
	{
		struct rmig_event ev = { .type = RMIG_EV_WARNING };
		char msg[sizeof(why) + 64];

		snprintf(msg, sizeof(msg), "link lost (%s): failing over to tcp", why);
		ev.detail = msg;
		rmig_emit(ctx, &ev);
	}
	ctx->link = to;
	for (;;) {
		int64_t left = end - rmig_now_ms();
		int tmo =
		    left < ctx->cfg.link_timeout_ms ? (int)left : (int)ctx->cfg.link_timeout_ms;

		if (left <= 0 || atomic_load(&ctx->cancelled))
			break;
		rc = to->ops->connect_ctrl(to, ctx->cfg.host, ctx->cfg.port, tmo);
		if (rc)
			rmig_err(ctx, rc, "%s", to->err);
		else
			rc = handshake(ctx, OPEN_RESUME, next_round);
		if (!rc)
			break;
		rmig_heartbeat_pause(ctx, 1);
		to->ops->close_session(to);
		if (rc == -ECONNABORTED || rc == -EACCES || rc == -EPROTONOSUPPORT)
			break; /* the destination said no: asking again will not help */
		sleep_ms(250);
	}
	if (rc || atomic_load(&ctx->cancelled)) {
		char failed[sizeof(ctx->err)];

		memcpy(failed, ctx->err, sizeof(failed));
		return rmig_err(ctx, rc ? rc : -ECANCELED, "%s; failover to tcp failed: %s", why,
				atomic_load(&ctx->cancelled) ? "cancelled" : failed);
	}
	s->failed = 0;
	for (unsigned i = 0; i < ctx->nchan; i++)
		s->w[i].seq = 0;
	ctx->stats.failovers++;
	{
		struct rmig_event ev = { .type = RMIG_EV_FAILOVER,
					 .from = from->ops->name,
					 .transport = to->ops->name,
					 .detail = why };

		rmig_emit(ctx, &ev);
	}
	rmig_phase_enter(ctx, RMIG_SRC_PRECOPY);
	return 0; /* handshake restarted the heartbeats */
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
		for (unsigned i = 0; i < ctx->nlinks; i++) {
			struct rmig_link *l = ctx->links[i];
			int64_t left = end - rmig_now_ms();
			int tmo = left < ctx->cfg.link_timeout_ms ? (int)left
								  : (int)ctx->cfg.link_timeout_ms;

			if (left <= 0)
				break;
			ctx->link = l;
			l->ops->close_session(l); /* also clears a cancel's interrupt */
			rc = l->ops->connect_ctrl(l, ctx->cfg.host, ctx->cfg.port, tmo);
			if (!rc)
				rc = open_session(ctx, OPEN_QUERY, 0, m);
			if (!rc)
				rc = rmig_ctrl_recv(ctx, m, tmo);
			l->ops->close_session(l);
			if (!rc && m->type == RMIG_MSG_STARTED) {
				rc = 1;
				goto out;
			}
			if (rc == -ECONNABORTED && m->type == RMIG_MSG_ABORT &&
			    m->u.abort.code == RMIG_ABORT_NOT_STARTED) {
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

/* Source digest, computed while the last pages are on the wire: the guest
 * is paused, so memory is what it was at the pause. */
struct digest_task {
	struct rmig_ctx *ctx;
	pthread_t tid;
	uint64_t digest[RMIG_MAX_REGIONS];
	int rc;
};

static void *digest_main(void *arg)
{
	struct digest_task *d = arg;

	d->rc = rmig_digest_regions(d->ctx->regions, d->ctx->nregions, 1, d->digest);
	return NULL;
}

/* CPU time of the calling thread, in microseconds. */
static int64_t thread_cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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

/* rmig_ctrl_expect, but in post-copy a PAGE_REQUEST may come first, at any
 * time from COMPLETE on (the destination's backend may touch memory as it
 * loads the state): answer it at once. */
static int expect_serving(struct sender *s, uint8_t type, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc;

	if (!s->postcopy)
		return rmig_ctrl_expect(ctx, type, m, (int)ctx->cfg.link_timeout_ms);
	for (;;) {
		rc = rmig_ctrl_recv(ctx, m, (int)ctx->cfg.link_timeout_ms);
		if (rc || m->type != RMIG_MSG_PAGE_REQUEST)
			break;
		rc = rmig_postcopy_answer(ctx, m, s->bitmap);
		if (rc)
			return rc;
	}
	if (!rc && m->type != type)
		rc = rmig_err(ctx, -EPROTO, "protocol error: peer %s sent %s, expected %s",
			      ctx->link->peer, rmig_msg_name(m->type), rmig_msg_name(type));
	return rc;
}

/* DISCARD the pages set in s->bitmap but not in s->sent (announced
 * already), and add them to s->sent. *count: how many. */
static int discard_new(struct sender *s, struct rmig_msg *m, uint64_t *count)
{
	struct rmig_ctx *ctx = s->ctx;
	int rc = 0;

	*count = 0;
	for (size_t ri = 0; ri < ctx->nregions && !rc; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];
		uint64_t words = rmig_bitmap_words(r->len / r->page_size);
		struct rmig_run *last = NULL;

		memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.discard));
		m->type = RMIG_MSG_DISCARD;
		m->u.discard.region_id = r->id;
		for (uint64_t w = 0; w < words && !rc; w++) {
			uint64_t bits = s->bitmap[ri][w] & ~s->sent[ri][w];

			s->sent[ri][w] |= bits;
			*count += (uint64_t)__builtin_popcountll(bits);
			while (bits && !rc) {
				uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);

				bits &= bits - 1;
				if (last && last->first + last->count == page) {
					last->count++;
					continue;
				}
				if (m->u.discard.nruns == RMIG_MAX_RUNS) {
					rc = rmig_ctrl_send(ctx, m);
					m->u.discard.nruns = 0;
				}
				last = &m->u.discard.runs[m->u.discard.nruns++];
				*last = (struct rmig_run){ page, 1 };
			}
		}
		if (!rc && m->u.discard.nruns)
			rc = rmig_ctrl_send(ctx, m);
	}
	ctx->stats.postcopy_pages += *count;
	return rc;
}

/* Post-copy, deciding to switch over while the guest still runs: DISCARD
 * the pages dirty now and wait until the destination dropped them (an empty
 * round, acknowledged after them), so that this work stays out of the
 * downtime. Meanwhile the guest dirties more: announce those too, a few
 * times while many are new (a page is announced once; the guest's working
 * set runs out). s->sent records what was announced. */
static int postcopy_predrop(struct sender *s, unsigned *round, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	uint64_t fresh, dirty;
	int rc = 0;

	for (size_t ri = 0; ri < ctx->nregions; ri++)
		memset(s->sent[ri], 0,
		       rmig_bitmap_words(ctx->regions[ri].len / ctx->regions[ri].page_size) * 8);
	for (unsigned pass = 0; pass < PREDROP_PASSES && !rc; pass++) {
		struct rmig_round_stats rs = { 0 };

		rc = discard_new(s, m, &fresh);
		if (rc || (pass && fresh < PREDROP_ENOUGH))
			break; /* those few: dropped during the pause */
		rs.round = ++*round;
		reset_figures(s, rs.round);
		round_end(s, &rs, m);
		rc = rmig_ctrl_send(ctx, m);
		if (!rc)
			rc = rmig_ctrl_expect(ctx, RMIG_MSG_ROUND_ACK, m,
					      (int)ctx->cfg.link_timeout_ms);
		if (!rc && m->u.value != rs.round)
			rc = rmig_err(ctx, -EPROTO,
				      "protocol error: ROUND_ACK for round %llu, expected %u",
				      (unsigned long long)m->u.value, rs.round);
		if (!rc)
			rc = fetch_dirty(s, &dirty);
		ctx->stats.rounds = *round;
	}
	return rc;
}

/* Post-copy switch-over, the guest paused: the device state, then the
 * pages dirtied since postcopy_predrop's last look, then COMPLETE without
 * digests (m). Afterwards s->bitmap holds every page DISCARDed; they follow
 * after STARTED, and s->bitmap stays as it is until then. */
static int postcopy_switch(struct sender *s, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	uint64_t fresh;
	int rc = send_state(ctx);

	if (!rc)
		rc = discard_new(s, m, &fresh);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_COMPLETE;
	m->u.complete.flags = RMIG_COMPLETE_POSTCOPY;
	m->u.complete.count = (uint32_t)ctx->nregions;
	return rc;
}

/* Post-copy: queues the DISCARDed pages for the senders, then ends the
 * round, while the control thread serves PAGE_REQUESTs. Its errors go to
 * s->failure, and it wakes the control thread to read them. */
struct postcopy_push {
	struct sender *s;
	struct rmig_round_stats rs;
	pthread_t tid;
};

static void *push_main(void *arg)
{
	struct postcopy_push *p = arg;
	struct sender *s = p->s;
	struct rmig_ctx *ctx = s->ctx;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	char why[sizeof(s->failure)];

	if (!m)
		fail(s, "out of memory");
	else
		queue_pages(s, s->bitmap); /* a failure shows in s->failed */
	wait_idle(s);
	if (!has_failed(s)) {
		round_end(s, &p->rs, m);
		if (rmig_ctrl_send_err(ctx, m, why, sizeof(why)))
			fail(s, why);
	}
	if (has_failed(s))
		ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_CTRL_RECV);
	free(m);
	return NULL;
}

/* Post-copy, after STARTED: the guest runs at the destination. Stream the
 * DISCARDed pages as round `round` and answer PAGE_REQUESTs until the
 * destination acknowledges the round: then it holds all of the guest. */
static int postcopy_stream(struct sender *s, uint32_t round, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = s->ctx;
	struct postcopy_push p = { .s = s, .rs = { .round = round } };
	struct rmig_event ev = { .type = RMIG_EV_ROUND, .round = &p.rs };
	int64_t t0 = rmig_now_ms();
	int rc;

	s->postcopy_started = 1;
	ctx->stats.postcopy = 1;
	rmig_phase_enter(ctx, RMIG_SRC_POSTCOPY);
	reset_figures(s, round);
	if (pthread_create(&p.tid, NULL, push_main, &p))
		return rmig_err(ctx, -EAGAIN, "cannot start the post-copy thread");
	for (;;) {
		rc = rmig_ctrl_recv(ctx, m, (int)ctx->cfg.link_timeout_ms);
		if (rc && has_failed(s))
			rc = rmig_err(ctx, -EIO, "%s", s->failure);
		if (rc)
			break;
		if (m->type == RMIG_MSG_PAGE_REQUEST) {
			rc = rmig_postcopy_answer(ctx, m, s->bitmap);
			if (rc)
				break;
			continue;
		}
		if (m->type == RMIG_MSG_ROUND_ACK && m->u.value == round)
			break;
		rc = rmig_err(ctx, -EPROTO, "protocol error: peer %s sent %s %llu during post-copy",
			      ctx->link->peer, rmig_msg_name(m->type),
			      (unsigned long long)m->u.value);
		break;
	}
	if (rc) /* the pusher may wait for the senders: stop them */
		ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_DATA);
	pthread_join(p.tid, NULL);
	if (rc)
		return rc;
	p.rs.ms = (uint64_t)(rmig_now_ms() - t0);
	p.rs.bandwidth = p.rs.ms ? (double)p.rs.bytes * 1000.0 / (double)p.rs.ms : 0;
	ctx->stats.rounds = round;
	ctx->stats.pages_sent += p.rs.pages;
	ctx->stats.zero_pages += p.rs.zero_pages;
	ctx->stats.bytes_sent += p.rs.bytes;
	ctx->stats.postcopy_ms = (uint64_t)p.rs.ms;
	rmig_emit(ctx, &ev);
	return 0;
}

/* Post-copy failed after the destination started the guest. Part of its
 * memory is here, part there, and it ran there since: neither copy is the
 * guest any more. Never resume it here. */
static int postcopy_lost(struct sender *s, int rc)
{
	struct rmig_ctx *ctx = s->ctx;
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

int rmig_send(struct rmig_ctx *ctx)
{
	struct sender *s = calloc(1, sizeof(*s));
	struct rmig_converge_state conv = { 0 };
	struct rmig_round_stats rs;
	struct digest_task dig = { .ctx = ctx };
	struct rmig_msg m;
	const struct rmig_region *regions;
	size_t nregions;
	/* The backend was asked to stop or hand over the guest: a rollback must
	 * resume it. */
	int must_resume = 0;
	int rc, digest_running = 0, outcome = -1, go_sent, started_migration;
	uint64_t dirty_pages = 0, page_size = 0, stream_digest = 0;
	double bandwidth = 0, fixed_ms, t_fetch;
	/* The backend's hypervisor migrates itself; we carry its stream. */
	int stream = ctx->be->ops->stream_open != NULL;
	int64_t t_pause = 0;
	unsigned round = 1;

	if (!s)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	s->ctx = ctx;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->rate_lock, NULL);
	for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
		pthread_cond_init(&s->queue[g].work, NULL);
	pthread_cond_init(&s->space, NULL);
	pthread_cond_init(&s->idle, NULL);
	ctx->t_start_ms = rmig_now_ms();
	rmig_phase_init(ctx, &rmig_src_machine);
	if (ctx->cfg.postcopy) {
		rc = 0;
		if (stream)
			rc = rmig_err(ctx, -EOPNOTSUPP,
				      "post-copy: backend %s migrates itself (its own stream); use "
				      "its own post-copy",
				      ctx->be->ops->name);
		else if (ctx->cfg.pin == RMIG_PIN_ALL)
			rc = rmig_err(ctx, -EINVAL,
				      "post-copy cannot use --pin=all: pages that arrive after "
				      "the guest started are placed by the destination's CPU");
		if (rc)
			goto fail;
		if (ctx->cfg.verify) {
			struct rmig_event ev = {
				.type = RMIG_EV_WARNING,
				.detail = "post-copy: memory is not verified (the destination's "
					  "guest writes it before all of it arrived)"
			};

			ctx->cfg.verify = 0;
			rmig_emit(ctx, &ev);
		}
		s->postcopy = 1;
	}

	rc = ctx->be->ops->get_regions(ctx->be, &regions, &nregions);
	if (rc) {
		rmig_err(ctx, rc, "backend: %s", ctx->be->err);
		goto fail;
	}
	rc = rmig_layout_from_regions(ctx, regions, nregions);
	if (rc)
		goto fail;
	for (size_t i = 0; i < nregions; i++) {
		uint64_t npages = regions[i].len / regions[i].page_size;

		s->bitmap[i] = calloc(rmig_bitmap_words(npages), 8);
		s->sent[i] = calloc(rmig_bitmap_words(npages), 8);
		if (!s->bitmap[i] || !s->sent[i]) {
			rc = rmig_err(ctx, -ENOMEM, "out of memory for dirty bitmaps");
			goto fail;
		}
		ctx->stats.guest_bytes += regions[i].len;
		page_size = regions[i].page_size;
	}
	/* Fixed cost of a switch-over: both digests, if verifying. */
	fixed_ms = 2.0;
	if (ctx->cfg.verify)
		fixed_ms += 2.0 * (double)ctx->stats.guest_bytes / rmig_digest_rate(0) * 1000.0;

	rmig_phase_enter(ctx, RMIG_SRC_CONNECTING);
	plan_channels(ctx);
	rc = rmig_link_connect(ctx, (int)ctx->cfg.link_timeout_ms);
	if (!rc)
		rc = handshake(ctx, OPEN_NEW, 0);
	ctx->stats.channels = ctx->nchan;
	if (rc)
		goto fail;
	/* The handshake started the heartbeats: from here a failure is a rollback. */
	rmig_phase_enter(ctx, RMIG_SRC_PRECOPY);
	rc = start_workers(s);
	if (rc)
		goto fail;
	if (stream) {
		/* From here the hypervisor's migration runs: a rollback must
		 * cancel it and resume the guest, paused or not. */
		must_resume = 1;
		rc = rmig_stream_send(ctx, &t_pause, &stream_digest);
		if (rc)
			goto fail;
		/* The hypervisor paused the guest itself (stream.c says when it
		 * sees it; a short stream may end before it looked). */
		if (rmig_phase(ctx) == RMIG_SRC_PRECOPY)
			rmig_phase_enter(ctx, RMIG_SRC_STOP_AND_COPY);
		m.type = RMIG_MSG_STATE; /* no state of ours: it was in the stream */
		m.u.state.data = NULL;
		m.u.state.len = 0;
		rc = rmig_ctrl_send(ctx, &m);
		if (rc)
			goto fail;
		memset(&m, 0, sizeof(m));
		m.type = RMIG_MSG_COMPLETE;
		m.u.complete.count = 1;
		m.u.complete.digest[0] = stream_digest;
		if (ctx->cfg.verify)
			m.u.complete.flags = RMIG_COMPLETE_VERIFY;
		goto complete;
	}

	/* Start logging before the first read, so that no write is missed. */
	/* No start_dirty_log op: the backend logs all along. */
	rc = ctx->be->ops->start_dirty_log ? ctx->be->ops->start_dirty_log(ctx->be) : 0;
	if (rc) {
		rmig_err(ctx, rc, "backend: starting the dirty log: %s", ctx->be->err);
		goto fail;
	}
	/* The first round sends everything, but memory never touched is zero
	 * on both sides already (read after the log started: a page touched
	 * since is in the log). */
	for (size_t i = 0; i < nregions; i++) {
		uint64_t npages = regions[i].len / regions[i].page_size;

		if (!(regions[i].flags & RMIG_REGION_UNTOUCHED_ZERO) ||
		    rmig_populated_pages(regions[i].host, npages, regions[i].page_size,
					 s->bitmap[i]))
			rmig_dirty_bitmap_set_all(s->bitmap[i], npages);
	}
	t_fetch = rmig_now_s();
	for (;; round++) {
		struct rmig_converge_input in = { 0 };
		enum rmig_converge_decision d;
		double t0 = rmig_now_s(), now;

		int64_t cpu0 = thread_cpu_us();

		memset(&rs, 0, sizeof(rs));
		rs.round = round;
		rc = send_round(s, &rs);
		if (rc) {
			rc = failover(s, rc, round + 1);
			if (rc)
				goto fail;
			continue; /* the next round resends what was lost */
		}
		rc = fetch_dirty(s, &dirty_pages);
		if (rc)
			goto fail;
		rs.cpu_us = (uint64_t)(thread_cpu_us() - cpu0);
		now = rmig_now_s();
		rs.ms = (uint64_t)((now - t0) * 1000);
		rs.bandwidth = now > t0 ? (double)rs.bytes / (now - t0) : 0;
		/* A tiny round measures latency, not bandwidth: keep the last figure. */
		if (rs.bytes >= MIN_BW_SAMPLE || bandwidth == 0)
			bandwidth = rs.bandwidth;
		rs.bandwidth = bandwidth;
		rs.dirty_rate = now > t_fetch ? (double)dirty_pages / (now - t_fetch) : 0;
		t_fetch = now;
		rs.dirty_pages = dirty_pages;
		rs.expected_downtime_ms =
		    rmig_expected_downtime_ms(dirty_pages * page_size, bandwidth, fixed_ms);
		ctx->stats.rounds = round;
		ctx->stats.expected_downtime_ms = rs.expected_downtime_ms;
		update_progress(ctx, &rs, dirty_pages * page_size);
		{
			struct rmig_event ev = { .type = RMIG_EV_ROUND, .round = &rs };

			rmig_emit(ctx, &ev);
		}
		if (atomic_load(&ctx->cancelled)) {
			rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator");
			goto fail;
		}
		if (ctx->cfg.bench_ms && ctx->stats.bench_seconds * 1000 < ctx->cfg.bench_ms) {
			/* rmig bench: measure the data path by sending everything again. */
			ctx->stats.bench_bytes += rs.bytes;
			ctx->stats.bench_seconds += now - t0;
			for (size_t i = 0; i < nregions; i++)
				rmig_dirty_bitmap_set_all(s->bitmap[i],
							  regions[i].len / regions[i].page_size);
			continue;
		}
		in = (struct rmig_converge_input){ .round = round,
						   .max_rounds = ctx->cfg.max_rounds,
						   .downtime_ms = ctx->cfg.downtime_ms,
						   .policy = ctx->cfg.on_no_converge,
						   .can_throttle = ctx->be->ops->throttle != NULL,
						   .expected_ms = rs.expected_downtime_ms,
						   .fixed_ms = fixed_ms,
						   .sent_bytes = rs.bytes,
						   .dirtied_bytes = dirty_pages * page_size };
		d = rmig_converge_decide(&in, &conv);
		if (d == RMIG_CONV_SWITCH)
			break;
		if (d == RMIG_CONV_FORCE) {
			ctx->stats.forced = 1;
			break;
		}
		if (d == RMIG_CONV_ABORT) {
			rc = rmig_err(ctx, -ETIME,
				      "did not converge in %u rounds: expected downtime %.0f ms > "
				      "%u ms (dirty rate %.0f pages/s, %.0f ms of it fixed costs "
				      "such as --verify)",
				      round, rs.expected_downtime_ms, ctx->cfg.downtime_ms,
				      rs.dirty_rate, fixed_ms);
			goto fail;
		}
		if (d == RMIG_CONV_THROTTLE) {
			struct rmig_event ev = { .type = RMIG_EV_THROTTLE,
						 .throttle_pct = conv.throttle_pct };

			rc = ctx->be->ops->throttle(ctx->be, conv.throttle_pct);
			if (rc) {
				rmig_err(ctx, rc, "backend: throttle: %s", ctx->be->err);
				goto fail;
			}
			ctx->stats.throttle_pct = conv.throttle_pct;
			rmig_emit(ctx, &ev);
		}
	}

	if (s->postcopy) {
		rc = postcopy_predrop(s, &round, &m);
		if (rc)
			goto fail;
	}

	/* Stop and copy. */
	rmig_phase_enter(ctx, RMIG_SRC_STOP_AND_COPY);
	t_pause = rmig_now_ms();
	rc = ctx->be->ops->pause(ctx->be);
	if (rc) {
		rmig_err(ctx, rc, "backend: pause: %s", ctx->be->err);
		goto fail;
	}
	must_resume = 1;
	rc = fetch_dirty(s, &dirty_pages);
	if (rc)
		goto fail;
	if (s->postcopy) {
		rc = postcopy_switch(s, &m);
		if (rc)
			goto fail;
		goto complete;
	}
	if (ctx->cfg.verify) {
		if (pthread_create(&dig.tid, NULL, digest_main, &dig)) {
			rc = rmig_err(ctx, -EAGAIN, "cannot start the digest thread");
			goto fail;
		}
		digest_running = 1;
	}
	memset(&rs, 0, sizeof(rs));
	rs.round = ++round;
	rc = send_round(s, &rs);
	if (rc)
		goto fail;
	ctx->stats.rounds = round;
	rc = send_state(ctx);
	if (rc)
		goto fail;
	memset(&m, 0, sizeof(m));
	m.type = RMIG_MSG_COMPLETE;
	m.u.complete.count = (uint32_t)nregions;
	if (digest_running) {
		pthread_join(dig.tid, NULL);
		digest_running = 0;
		if (dig.rc) {
			rc = rmig_err(ctx, dig.rc, "computing the source digest failed");
			goto fail;
		}
		m.u.complete.flags = RMIG_COMPLETE_VERIFY;
		memcpy(m.u.complete.digest, dig.digest, sizeof(uint64_t) * nregions);
	}
complete:
	rc = rmig_ctrl_send(ctx, &m);
	if (!rc)
		rc = expect_serving(s, RMIG_MSG_READY, &m);
	if (rc)
		goto fail;
	ctx->stats.verified = ctx->cfg.verify;

	/* Commit: from here the destination may run, so we never resume on
	 * our own ("commit": READY is in, GO about to go; "awaiting-started":
	 * GO is out). */
	rmig_phase_enter(ctx, RMIG_SRC_COMMIT);
	/* READY may be old news (a slow backend, a stalled thread): make sure
	 * the destination is still there and still ready right before GO, so
	 * that a failure up to here is a clean rollback, not an unknown. */
	rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_CHECK, 0);
	if (!rc)
		rc = expect_serving(s, RMIG_MSG_READY, &m);
	if (rc)
		goto fail;
	if (s->postcopy && (rc = rmig_cancel_close(ctx)))
		goto fail;
	/* From here GO may be out: only the destination's answer decides. */
	rmig_phase_enter(ctx, RMIG_SRC_AWAITING_STARTED);
	rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_GO, 0);
	if (!rc)
		rc = expect_serving(s, RMIG_MSG_STARTED, &m);
	if (rc)
		goto fail;
	ctx->stats.downtime_ms = (uint64_t)(rmig_now_ms() - t_pause);
	if (s->postcopy) {
		rc = postcopy_stream(s, round + 1, &m);
		if (rc)
			goto fail;
	}
	ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
	memset(&m, 0, sizeof(m));
	m.type = RMIG_MSG_DONE;
	m.u.done = (struct rmig_wire_done){ .total_ms = ctx->stats.total_ms,
					    .downtime_ms = ctx->stats.downtime_ms,
					    .bytes_sent = ctx->stats.bytes_sent,
					    .rounds = ctx->stats.rounds };
	rmig_ctrl_send(ctx, &m); /* informational: the guest has moved either way */
	ctx->stats.result = RMIG_RESULT_MIGRATED;
	rmig_phase_enter(ctx, RMIG_SRC_MIGRATED);
	rc = 0;
	goto out;

fail:
	go_sent = rmig_phase(ctx) == RMIG_SRC_AWAITING_STARTED;
	started_migration =
	    rmig_phase(ctx) != RMIG_SRC_IDLE && rmig_phase(ctx) != RMIG_SRC_CONNECTING;
	ctx->stats.verified = 0;
	if (rmig_cancel_requested(ctx))
		rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator");
	ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_DATA); /* stop the data workers */
	if (digest_running)
		pthread_join(dig.tid, NULL);
	if (s->postcopy_started) {
		rc = postcopy_lost(s, rc);
		ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
		goto out;
	}
	if (go_sent && rc == -ECONNABORTED)
		outcome = 0; /* the destination sends ABORT only if it did not start */
	else if (go_sent)    /* even if cancelled: after GO, only the answer decides */
		outcome = ask_outcome(ctx);
	if (outcome == 1) {
		/* It runs there: the migration succeeded, only STARTED was lost. */
		ctx->stats.downtime_ms = (uint64_t)(rmig_now_ms() - t_pause);
		ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
		ctx->stats.verified = ctx->cfg.verify;
		ctx->stats.result = RMIG_RESULT_MIGRATED;
		rmig_phase_enter(ctx, RMIG_SRC_MIGRATED);
		rc = 0;
		goto out;
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
			 "(rmig send --resume-source); if it does, stop the source%s",
			 cause, ctx->cfg.commit_timeout_ms,
			 s->postcopy ? " (post-copy: if it started without all of its memory, "
				       "the guest is lost and neither side may run it)"
				     : "");
		rmig_phase_enter(ctx, RMIG_SRC_UNKNOWN);
	} else {
		if (outcome == 0) {
			size_t n = strlen(ctx->err);

			snprintf(ctx->err + n, sizeof(ctx->err) - n,
				 "; the destination confirmed it did not start the guest");
		}
		if (started_migration)
			rmig_ctrl_send_abort(ctx, rc, ctx->err);
		int resumed = !must_resume || !ctx->be->ops->resume(ctx->be);

		if (conv.throttle_pct && ctx->be->ops->throttle)
			ctx->be->ops->throttle(ctx->be, 0);
		ctx->stats.result =
		    started_migration ? RMIG_RESULT_ROLLED_BACK : RMIG_RESULT_FAILED;
		if (!resumed) {
			/* Neither side runs the guest: not a rollback, the operator must act. */
			size_t n = strlen(ctx->err);

			snprintf(ctx->err + n, sizeof(ctx->err) - n,
				 "; then resuming the guest failed: %s", ctx->be->err);
			ctx->stats.result = RMIG_RESULT_UNKNOWN;
		}
		rmig_phase_enter(ctx, !resumed		  ? RMIG_SRC_UNKNOWN
				      : started_migration ? RMIG_SRC_ROLLED_BACK
							  : RMIG_SRC_FAILED);
	}
	ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
	if (rc >= 0)
		rc = -EIO;
out:
	rmig_heartbeat_stop(ctx);
	stop_workers(s);
	if (ctx->link->ops->mem_release)
		ctx->link->ops->mem_release(ctx->link);
	for (size_t i = 0; i < RMIG_MAX_REGIONS; i++) {
		free(s->bitmap[i]);
		free(s->sent[i]);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->rate_lock);
	for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
		pthread_cond_destroy(&s->queue[g].work);
	pthread_cond_destroy(&s->space);
	pthread_cond_destroy(&s->idle);
	free(s);
	return rc;
}
