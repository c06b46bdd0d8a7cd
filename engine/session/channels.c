/* channels.c - the data channels' sender and receiver threads (see
 * channels.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channels.h"
#include "payload.h"
#include "placement.h"

#define QUEUE_CAP 256
#define PACE_SLICE_S 0.02 /* config.max_bandwidth's sleeps look up this often */

/* Work for the channels of one NUMA node; they wait on `work`. */
struct tx_queue {
	struct rmig_tx_item q[QUEUE_CAP];
	size_t head, count;
	pthread_cond_t work;
};

struct rmig_tx_pool {
	struct rmig_ctx *ctx;
	pthread_mutex_t lock;
	pthread_cond_t space, idle;
	struct tx_queue queue[RMIG_MAX_NODE_GROUPS];
	size_t queued; /* over all queues */
	unsigned busy;
	int quit;
	int failed;
	int failed_rc; /* rmig_tx_fail_local's code; else the link failed (-EIO) */
	char failure[400];
	struct rmig_tx_chan w[RMIG_MAX_CHANNELS];
	/* --max-bandwidth: a shared virtual clock of when the next byte may go. */
	pthread_mutex_t rate_lock;
	double rate_next;
	uint64_t rate_limit; /* the limit rate_next was booked at */
};

static void tx_fail(struct rmig_tx_pool *tx, int rc, const char *why)
{
	pthread_mutex_lock(&tx->lock);
	if (!tx->failed) {
		tx->failed = 1;
		tx->failed_rc = rc;
		snprintf(tx->failure, sizeof(tx->failure), "%s", why);
	}
	pthread_mutex_unlock(&tx->lock);
}

void rmig_tx_fail(struct rmig_tx_pool *tx, const char *why)
{
	tx_fail(tx, -EIO, why);
}

void rmig_tx_fail_local(struct rmig_tx_pool *tx, const char *why)
{
	tx_fail(tx, RMIG_ERR_LOCAL, why);
}

int rmig_tx_failed(struct rmig_tx_pool *tx)
{
	int failed;

	pthread_mutex_lock(&tx->lock);
	failed = tx->failed;
	pthread_mutex_unlock(&tx->lock);
	return failed;
}

const char *rmig_tx_failure(struct rmig_tx_pool *tx)
{
	return tx->failure;
}

/* The data channels are being stopped: cancel, another sender's failure,
 * or the link's data channels interrupted (failover). */
static int pacing_stopped(struct rmig_tx_chan *c)
{
	return rmig_cancel_requested(c->ctx) || rmig_tx_failed(c->pool) ||
	       (atomic_load(&c->ctx->link->interrupted) & RMIG_LINK_STOP_DATA);
}

/* Sleep until `until` (rmig_now_s) in slices: a slow rate can make one
 * frame wait for minutes, and a cancel must not wait with it, nor a new
 * limit (rmig_set_max_bandwidth): then the frame goes at once and the
 * next is paced at the new rate. */
static int pace_until(struct rmig_tx_chan *c, double until, uint64_t rate)
{
	for (;;) {
		double left = until - rmig_now_s();
		struct timespec ts = { 0, 0 };

		if (left <= 0 || atomic_load(&c->ctx->limit_bandwidth) != rate)
			return 0;
		if (pacing_stopped(c))
			return -ECANCELED;
		ts.tv_nsec = (long)((left < PACE_SLICE_S ? left : PACE_SLICE_S) * 1e9);
		nanosleep(&ts, NULL);
	}
}

int rmig_tx_rate_limit(struct rmig_tx_chan *c, size_t bytes)
{
	struct rmig_tx_pool *tx = c->pool;
	uint64_t limit = atomic_load(&c->ctx->limit_bandwidth);
	double rate = (double)limit, now, until;
	int rc;

	if (!rate)
		return 0;
	pthread_mutex_lock(&tx->rate_lock);
	now = rmig_now_s();
	if (tx->rate_limit != limit) { /* a new limit: time booked at the old one is void */
		tx->rate_limit = limit;
		tx->rate_next = now;
	}
	if (tx->rate_next < now - 0.05) /* allow at most a 50 ms burst after idling */
		tx->rate_next = now - 0.05;
	tx->rate_next += (double)bytes / rate;
	until = tx->rate_next;
	pthread_mutex_unlock(&tx->rate_lock);
	rc = pace_until(c, until, limit);
	if (rc) { /* the frame does not go: its time is free again */
		pthread_mutex_lock(&tx->rate_lock);
		tx->rate_next -= (double)bytes / rate;
		pthread_mutex_unlock(&tx->rate_lock);
	}
	return rc;
}

int rmig_tx_send_frame(struct rmig_tx_chan *c, uint8_t type, size_t sublen, struct iovec *data,
		       int ndata)
{
	size_t bytes = RMIG_FRAME_HDR_LEN + sublen;
	int rc;

	for (int i = 0; i < ndata; i++)
		bytes += data[i].iov_len;
	rc = rmig_tx_rate_limit(c, bytes);
	if (rc)
		return rc;
	rc = rmig_chan_send_frame(c->ctx, c->chan, &c->seq, type, c->hdr, sublen, data, ndata);
	if (rc)
		return rc;
	c->frames++;
	c->bytes += bytes;
	return 0;
}

/* One queued item, by its payload; a failure stops the pool. */
static void send_item(struct rmig_tx_chan *c, const struct rmig_tx_item *it)
{
	const char *cancelled = "cancelled by the operator";

	if (rmig_cancel_requested(c->ctx))
		rmig_tx_fail(c->pool, cancelled);
	else if (it->p->ops->save_item(it->p, c, it))
		rmig_tx_fail(c->pool,
			     rmig_cancel_requested(c->ctx) ? cancelled : c->ctx->link->err);
}

static void *sender_main(void *arg)
{
	struct rmig_tx_chan *c = arg;
	struct rmig_tx_pool *tx = c->pool;
	struct tx_queue *q = &tx->queue[c->group];

	/* Read guest memory (and fill the link's buffers) next to it. */
	rmig_numa_run_on_node(c->ctx->chan_node[c->chan]);
	pthread_mutex_lock(&tx->lock);
	for (;;) {
		struct rmig_tx_item it;

		while (!q->count && !tx->quit)
			pthread_cond_wait(&q->work, &tx->lock);
		if (tx->quit)
			break;
		it = q->q[q->head];
		q->head = (q->head + 1) % QUEUE_CAP;
		q->count--;
		tx->queued--;
		tx->busy++;
		pthread_cond_broadcast(&tx->space);
		if (!tx->failed) {
			pthread_mutex_unlock(&tx->lock);
			send_item(c, &it);
			pthread_mutex_lock(&tx->lock);
		}
		tx->busy--;
		if (!tx->queued && !tx->busy)
			pthread_cond_broadcast(&tx->idle);
	}
	pthread_mutex_unlock(&tx->lock);
	free(c->scratch);
	c->scratch = NULL;
	return NULL;
}

int rmig_tx_push(struct rmig_tx_pool *tx, unsigned group, const struct rmig_tx_item *it)
{
	struct tx_queue *q = &tx->queue[group < RMIG_MAX_NODE_GROUPS ? group : 0];
	int failed;

	pthread_mutex_lock(&tx->lock);
	while (q->count == QUEUE_CAP && !tx->failed)
		pthread_cond_wait(&tx->space, &tx->lock);
	failed = tx->failed;
	if (!failed) {
		q->q[(q->head + q->count) % QUEUE_CAP] = *it;
		q->count++;
		tx->queued++;
		pthread_cond_signal(&q->work);
	}
	pthread_mutex_unlock(&tx->lock);
	return failed ? -EIO : 0;
}

/* Wait until the senders are idle; a failure drops what is queued. */
static int tx_idle(struct rmig_tx_pool *tx)
{
	int failed;

	pthread_mutex_lock(&tx->lock);
	while (tx->queued || tx->busy) {
		if (tx->failed) { /* drop what is queued: it will not be sent */
			for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
				tx->queue[g].count = 0;
			tx->queued = 0;
			pthread_cond_broadcast(&tx->space);
			if (!tx->busy)
				break;
		}
		pthread_cond_wait(&tx->idle, &tx->lock);
	}
	failed = tx->failed;
	pthread_mutex_unlock(&tx->lock);
	return failed;
}

int rmig_tx_wait(struct rmig_tx_pool *tx)
{
	return tx_idle(tx) ? rmig_err(tx->ctx, tx->failed_rc, "%s", tx->failure) : 0;
}

void rmig_tx_idle(struct rmig_tx_pool *tx)
{
	tx_idle(tx);
}

void rmig_tx_new_round(struct rmig_tx_pool *tx)
{
	for (unsigned i = 0; i < tx->ctx->nchan; i++)
		tx->w[i].frames = tx->w[i].pages = tx->w[i].zero_pages = tx->w[i].bytes = 0;
}

void rmig_tx_round_figures(struct rmig_tx_pool *tx, struct rmig_round_stats *rs)
{
	rs->pages = rs->zero_pages = rs->bytes = 0;
	for (unsigned i = 0; i < tx->ctx->nchan; i++) {
		rs->pages += tx->w[i].pages;
		rs->zero_pages += tx->w[i].zero_pages;
		rs->bytes += tx->w[i].bytes;
	}
}

void rmig_tx_round_end(struct rmig_tx_pool *tx, struct rmig_round_stats *rs, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = tx->ctx;

	rmig_tx_round_figures(tx, rs);
	memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.round_end));
	m->type = RMIG_MSG_ROUND_END;
	m->u.round_end.h.round = rs->round;
	m->u.round_end.h.nchan = ctx->nchan;
	for (unsigned i = 0; i < ctx->nchan; i++)
		m->u.round_end.frames[i] = tx->w[i].frames;
	m->u.round_end.h.pages = rs->pages;
	m->u.round_end.h.zero_pages = rs->zero_pages;
	m->u.round_end.h.bytes = rs->bytes;
}

void rmig_tx_restart(struct rmig_tx_pool *tx)
{
	pthread_mutex_lock(&tx->lock);
	tx->failed = 0;
	pthread_mutex_unlock(&tx->lock);
	for (unsigned i = 0; i < tx->ctx->nchan; i++)
		tx->w[i].seq = 0;
}

int rmig_tx_create(struct rmig_ctx *ctx, struct rmig_tx_pool **out)
{
	struct rmig_tx_pool *tx = calloc(1, sizeof(*tx));

	if (!tx)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	tx->ctx = ctx;
	pthread_mutex_init(&tx->lock, NULL);
	pthread_mutex_init(&tx->rate_lock, NULL);
	for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
		pthread_cond_init(&tx->queue[g].work, NULL);
	pthread_cond_init(&tx->space, NULL);
	pthread_cond_init(&tx->idle, NULL);
	*out = tx;
	for (unsigned i = 0; i < ctx->nchan; i++) {
		struct rmig_tx_chan *c = &tx->w[i];

		*c = (struct rmig_tx_chan){
			.pool = tx, .ctx = ctx, .chan = i, .group = i % ctx->ngroups
		};
		if (pthread_create(&c->tid, NULL, sender_main, c))
			return rmig_err(ctx, -EAGAIN, "cannot start sender threads");
		c->started = 1;
	}
	return 0;
}

void rmig_tx_destroy(struct rmig_tx_pool *tx)
{
	if (!tx)
		return;
	pthread_mutex_lock(&tx->lock);
	tx->quit = 1;
	for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
		pthread_cond_broadcast(&tx->queue[g].work);
	pthread_mutex_unlock(&tx->lock);
	for (unsigned i = 0; i < RMIG_MAX_CHANNELS; i++)
		if (tx->w[i].started)
			pthread_join(tx->w[i].tid, NULL);
	pthread_mutex_destroy(&tx->lock);
	pthread_mutex_destroy(&tx->rate_lock);
	for (unsigned g = 0; g < RMIG_MAX_NODE_GROUPS; g++)
		pthread_cond_destroy(&tx->queue[g].work);
	pthread_cond_destroy(&tx->space);
	pthread_cond_destroy(&tx->idle);
	free(tx);
}

/* ---- destination ---- */

struct rmig_rx_pool {
	struct rmig_ctx *ctx;
	struct rmig_payload_set *payloads;
	pthread_mutex_t lock;
	pthread_cond_t progress;
	uint64_t frames[RMIG_MAX_CHANNELS]; /* frames applied, this round */
	atomic_int stopping;
	int failed; /* the first receiver error (negative errno), 0: none */
	char failure[400];
	struct rmig_rx_chan w[RMIG_MAX_CHANNELS];
};

static void rx_fail(struct rmig_rx_pool *rx, int rc, const char *why)
{
	pthread_mutex_lock(&rx->lock);
	if (!rx->failed && !atomic_load(&rx->stopping)) {
		rx->failed = rc < 0 ? rc : -EIO;
		snprintf(rx->failure, sizeof(rx->failure), "%s", why);
		/* Wake the control thread wherever it waits. */
		rx->ctx->link->ops->interrupt(rx->ctx->link,
					      RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV);
	}
	pthread_cond_broadcast(&rx->progress);
	pthread_mutex_unlock(&rx->lock);
}

int rmig_rx_failed(struct rmig_rx_pool *rx, char *why, size_t whylen)
{
	int failed;

	pthread_mutex_lock(&rx->lock);
	failed = rx->failed;
	if (failed && why)
		snprintf(why, whylen, "%s", rx->failure);
	pthread_mutex_unlock(&rx->lock);
	return failed;
}

int rmig_rx_stopping(struct rmig_rx_pool *rx)
{
	return atomic_load(&rx->stopping);
}

static struct rmig_payload *frame_owner(struct rmig_rx_pool *rx, uint8_t type)
{
	RMIG_EACH_PAYLOAD(rx->payloads, p)
	{
		if (type < 32 && (p->ops->frame_types >> type) & 1)
			return p;
	}
	return NULL;
}

/* One frame: the header here, the rest by the payload that owns its type. */
static int recv_frame(struct rmig_rx_chan *c, char *why, size_t whylen)
{
	struct rmig_link *l = c->ctx->link;
	uint8_t hdr[RMIG_FRAME_HDR_LEN];
	struct iovec v = { hdr, sizeof(hdr) };
	struct rmig_frame_hdr fh;
	struct rmig_payload *p;
	int rc;

	rc = l->ops->chan_recv(l, c->chan, &v, 1, -1);
	if (rc)
		return snprintf(why, whylen, "%s", l->err), rc;
	rc = rmig_frame_hdr_decode(hdr, &fh, why, whylen);
	if (rc)
		return rc;
	if (fh.seq != c->seq) {
		snprintf(why, whylen, "data channel %u: sequence %llu, expected %llu", c->chan,
			 (unsigned long long)fh.seq, (unsigned long long)c->seq);
		return -EBADMSG;
	}
	c->seq++;
	p = frame_owner(c->pool, fh.type);
	if (!p) {
		snprintf(why, whylen, "unexpected %s frame on data channel %u",
			 rmig_msg_name(fh.type), c->chan);
		return -EBADMSG;
	}
	rc = p->ops->load_frame(p, c, &fh, why, whylen);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->pool->lock);
	c->pool->frames[c->chan]++;
	pthread_cond_broadcast(&c->pool->progress);
	pthread_mutex_unlock(&c->pool->lock);
	atomic_fetch_add(&c->ctx->live_bytes, RMIG_FRAME_HDR_LEN + fh.len);
	return 0;
}

static void *receiver_main(void *arg)
{
	struct rmig_rx_chan *c = arg;
	char why[256];

	/* Copy out of the link's buffers on the CPUs next to the memory. */
	rmig_numa_run_on_node(c->node);
	while (!atomic_load(&c->pool->stopping)) {
		int rc = recv_frame(c, why, sizeof(why));

		if (rc) {
			char msg[400];

			snprintf(msg, sizeof(msg), "bad frame from %s: %s", c->ctx->link->peer,
				 why);
			rx_fail(c->pool, rc, rc == -EBADMSG ? msg : why);
			break;
		}
	}
	free(c->scratch);
	c->scratch = NULL;
	return NULL;
}

int rmig_rx_create(struct rmig_ctx *ctx, struct rmig_payload_set *payloads,
		   struct rmig_rx_pool **out)
{
	struct rmig_rx_pool *rx = calloc(1, sizeof(*rx));

	if (!rx)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	rx->ctx = ctx;
	rx->payloads = payloads;
	pthread_mutex_init(&rx->lock, NULL);
	pthread_cond_init(&rx->progress, NULL);
	*out = rx;
	return 0;
}

int rmig_rx_start(struct rmig_rx_pool *rx, const int *nodes)
{
	struct rmig_ctx *ctx = rx->ctx;

	atomic_store(&rx->stopping, 0);
	rx->failed = 0;
	for (unsigned i = 0; i < ctx->nchan; i++) {
		rx->w[i] =
		    (struct rmig_rx_chan){ .pool = rx, .ctx = ctx, .chan = i, .node = nodes[i] };
		if (pthread_create(&rx->w[i].tid, NULL, receiver_main, &rx->w[i]))
			return rmig_err(ctx, -EAGAIN, "cannot start receiver threads");
		rx->w[i].started = 1;
	}
	return 0;
}

uint64_t rmig_rx_stop(struct rmig_rx_pool *rx)
{
	uint64_t partial = 0;

	if (!rx)
		return 0;
	atomic_store(&rx->stopping, 1);
	rx->ctx->link->ops->interrupt(rx->ctx->link, RMIG_LINK_STOP_DATA);
	for (unsigned i = 0; i < RMIG_MAX_CHANNELS; i++)
		if (rx->w[i].started) {
			pthread_join(rx->w[i].tid, NULL);
			rx->w[i].started = 0;
		}
	for (unsigned i = 0; i < RMIG_MAX_CHANNELS; i++)
		partial += rx->frames[i];
	memset(rx->frames, 0, sizeof(rx->frames));
	return partial;
}

void rmig_rx_destroy(struct rmig_rx_pool *rx)
{
	if (!rx)
		return;
	rmig_rx_stop(rx);
	pthread_mutex_destroy(&rx->lock);
	pthread_cond_destroy(&rx->progress);
	free(rx);
}

int rmig_rx_wait_round(struct rmig_rx_pool *rx, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = rx->ctx;
	int64_t last_progress = rmig_now_ms();
	unsigned last_total = ~0u;
	char why[400];
	int rc = 0;

	if (m->u.round_end.h.nchan != ctx->nchan)
		return rmig_err(ctx, -EBADMSG, "bad frame: ROUND_END for %u channels, we have %u",
				m->u.round_end.h.nchan, ctx->nchan);
	pthread_mutex_lock(&rx->lock);
	for (;;) {
		unsigned done = 0, total = 0;
		struct timespec ts;

		for (unsigned c = 0; c < ctx->nchan; c++) {
			if (rx->frames[c] > m->u.round_end.frames[c]) {
				rc = rmig_err(ctx, -EBADMSG,
					      "bad frame: channel %u delivered %llu frames, source "
					      "counts %llu",
					      c, (unsigned long long)rx->frames[c],
					      (unsigned long long)m->u.round_end.frames[c]);
				goto out;
			}
			done += rx->frames[c] == m->u.round_end.frames[c];
			total += (unsigned)rx->frames[c];
		}
		if (done == ctx->nchan)
			break;
		if (rx->failed) {
			rc = rmig_err(ctx, rx->failed, "%s", rx->failure);
			goto out;
		}
		if (rmig_payloads_failed(rx->payloads, why, sizeof(why))) {
			rc = rmig_err(ctx, -EIO, "%s", why);
			goto out;
		}
		/* The control stream is not read meanwhile: the data streams must
		 * show progress, or the source is gone (or lying about counts). */
		if (total != last_total) {
			last_total = total;
			last_progress = rmig_now_ms();
		} else if (rmig_now_ms() - last_progress > ctx->cfg.link_timeout_ms) {
			rc = rmig_err(ctx, -ETIMEDOUT,
				      "peer %s: data streams silent for %u ms with frames of "
				      "round %u missing",
				      ctx->link->peer, ctx->cfg.link_timeout_ms,
				      m->u.round_end.h.round);
			goto out;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&rx->progress, &rx->lock, &ts);
	}
	memset(rx->frames, 0, sizeof(rx->frames));
out:
	pthread_mutex_unlock(&rx->lock);
	return rc;
}
