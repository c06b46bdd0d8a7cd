/* dest.c - the receiving side: accept, check the layout before allocating,
 * receive pages straight into guest memory, verify, and start the guest
 * only on GO.
 *
 * Threads: the caller's thread runs the control stream; one receiver per
 * data channel reads PAGES/ZERO frames, checks every run against the layout
 * before touching memory, and reads page bytes directly into place.
 *
 * Post-copy (the source's HELLO asks for it): the receivers stay up after
 * STATE for one more round, which arrives after the guest started; its pages
 * and PAGE_DATA are placed whole through userfaultfd (postcopy.c), never
 * read straight into memory the guest may be using.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "digest.h"
#include "engine.h"
#include "stream.h"
#include "placement.h"
#include "postcopy.h"
#include "prealloc.h"

#define BOUNCE_BYTES RMIG_MAX_PAGE_SIZE /* post-copy: page bytes staged per receiver */

struct receiver;

struct recv_worker {
	struct receiver *r;
	unsigned chan;
	int node; /* NUMA node whose memory this channel moves, -1: any */
	pthread_t tid;
	int started;
	uint64_t seq;
	uint8_t *bounce; /* post-copy, BOUNCE_BYTES; the worker's own */
};

struct receiver {
	struct rmig_stream_sink sink; /* a hypervisor's own stream (no regions) */
	int stream;
	struct rmig_postcopy *pc; /* a post-copy session */
	atomic_int pc_armed;	  /* from COMPLETE: place pages through pc */
	struct rmig_ctx *ctx;
	pthread_mutex_t lock;
	pthread_cond_t progress;
	uint64_t frames[RMIG_MAX_CHANNELS]; /* frames applied, this round */
	uint64_t pages, zero_pages, bytes;  /* this round */
	atomic_uint round;		    /* the round being received */
	atomic_uint_fast64_t round_pages;   /* pages announced in it so far */
	/* Pages written since the regions were prepared: the others are still
	 * fresh memory, zero by the backend's contract, so a ZERO run need not
	 * read them (reading can allocate them). */
	atomic_uint_fast64_t *written[RMIG_MAX_REGIONS];
	uint64_t guest_pages;
	atomic_int stopping;
	int failed; /* the first receiver error (negative errno), 0: none */
	char failure[400];
	struct recv_worker w[RMIG_MAX_CHANNELS];
};

static void recv_fail(struct receiver *r, int rc, const char *why)
{
	pthread_mutex_lock(&r->lock);
	if (!r->failed && !atomic_load(&r->stopping)) {
		r->failed = rc < 0 ? rc : -EIO;
		snprintf(r->failure, sizeof(r->failure), "%s", why);
		/* Wake the control thread wherever it waits. */
		r->ctx->link->ops->interrupt(r->ctx->link,
					     RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV);
	}
	pthread_cond_broadcast(&r->progress);
	pthread_mutex_unlock(&r->lock);
}

static void mark_written(atomic_uint_fast64_t *bm, uint64_t first, uint64_t count)
{
	for (uint64_t p = first; p < first + count;) {
		uint64_t bit = p % 64,
			 n = 64 - bit < first + count - p ? 64 - bit : first + count - p;
		uint64_t mask = n == 64 ? ~0ull : ((1ull << n) - 1) << bit;

		atomic_fetch_or(&bm[p / 64], mask);
		p += n;
	}
}

static int was_written(atomic_uint_fast64_t *bm, uint64_t page)
{
	return (atomic_load(&bm[page / 64]) >> (page % 64)) & 1;
}

/* Post-copy: the guest may be running, so a page goes in whole or not at
 * all: bytes through a bounce buffer, then UFFDIO_COPY. */
static int recv_postcopy(struct recv_worker *w, uint8_t type, size_t ri,
			 const struct rmig_run *runs, uint32_t nruns, char *why, size_t whylen)
{
	struct rmig_ctx *ctx = w->r->ctx;
	uint64_t ps = ctx->regions[ri].page_size, per = BOUNCE_BYTES / ps;
	int rc = 0;

	for (uint32_t i = 0; i < nruns && !rc; i++)
		rc = rmig_postcopy_check(w->r->pc, ri, runs[i].first, runs[i].count, why, whylen);
	if (!rc && type == RMIG_MSG_PAGES && !w->bounce && !(w->bounce = malloc(BOUNCE_BYTES))) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
	}
	for (uint32_t i = 0; i < nruns && !rc; i++) {
		if (type == RMIG_MSG_ZERO) {
			rc = rmig_postcopy_place(w->r->pc, ri, runs[i].first, runs[i].count, NULL,
						 why, whylen);
			continue;
		}
		for (uint64_t done = 0; done < runs[i].count && !rc;) {
			uint64_t n = runs[i].count - done < per ? runs[i].count - done : per;
			struct iovec v = { w->bounce, n * ps };

			rc = ctx->link->ops->chan_recv(ctx->link, w->chan, &v, 1,
						       (int)ctx->cfg.link_timeout_ms);
			if (rc) {
				snprintf(why, whylen, "%s", ctx->link->err);
				break;
			}
			rc = rmig_postcopy_place(w->r->pc, ri, runs[i].first + done, n, w->bounce,
						 why, whylen);
			done += n;
		}
	}
	return rc;
}

/* Receive one PAGES/ZERO frame. Every check happens before memory is written. */
static int recv_frame(struct recv_worker *w, char *why, size_t whylen)
{
	struct rmig_ctx *ctx = w->r->ctx;
	struct rmig_link *l = ctx->link;
	uint8_t hdr[RMIG_FRAME_HDR_LEN], sub[RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS];
	struct rmig_frame_hdr fh;
	struct rmig_pages_hdr ph;
	struct rmig_run runs[RMIG_MAX_RUNS];
	struct iovec iov[RMIG_MAX_RUNS];
	const struct rmig_region *reg;
	size_t ri;
	uint64_t pages = 0;
	int rc;

	struct iovec v = { hdr, sizeof(hdr) };

	rc = l->ops->chan_recv(l, w->chan, &v, 1, -1);
	if (rc)
		return snprintf(why, whylen, "%s", l->err), rc;
	rc = rmig_frame_hdr_decode(hdr, &fh, why, whylen);
	if (rc)
		return rc;
	if (fh.seq != w->seq) {
		snprintf(why, whylen, "data channel %u: sequence %llu, expected %llu", w->chan,
			 (unsigned long long)fh.seq, (unsigned long long)w->seq);
		return -EBADMSG;
	}
	w->seq++;
	if (fh.type != RMIG_MSG_PAGES && fh.type != RMIG_MSG_ZERO) {
		snprintf(why, whylen, "unexpected %s frame on data channel %u",
			 rmig_msg_name(fh.type), w->chan);
		return -EBADMSG;
	}
	v = (struct iovec){ sub, RMIG_PAGES_HDR_LEN };
	rc = l->ops->chan_recv(l, w->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return snprintf(why, whylen, "%s", l->err), rc;
	rc = rmig_pages_hdr_decode(sub, &fh, &ph, why, whylen);
	if (rc)
		return rc;
	v = (struct iovec){ sub + RMIG_PAGES_HDR_LEN, (size_t)ph.nruns * RMIG_RUN_LEN };
	rc = l->ops->chan_recv(l, w->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return snprintf(why, whylen, "%s", l->err), rc;
	rc = rmig_pages_runs_decode(sub + RMIG_PAGES_HDR_LEN, &fh, &ph, &ctx->layout, runs, &ri,
				    why, whylen);
	if (rc)
		return rc;
	if (ph.round != atomic_load(&w->r->round)) {
		snprintf(why, whylen, "%s frame for round %u during round %u",
			 rmig_msg_name(fh.type), ph.round, atomic_load(&w->r->round));
		return -EBADMSG;
	}
	reg = &ctx->regions[ri];
	for (uint32_t i = 0; i < ph.nruns; i++)
		pages += runs[i].count;
	/* A round sends each page at most once: bounding it by the guest's
	 * size bounds the work a peer can make us do per round. */
	if (atomic_fetch_add(&w->r->round_pages, pages) + pages > w->r->guest_pages) {
		snprintf(why, whylen, "round %u sends more pages than the guest's %llu", ph.round,
			 (unsigned long long)w->r->guest_pages);
		return -EBADMSG;
	}
	pages = 0;
	for (uint32_t i = 0; i < ph.nruns; i++) {
		iov[i] = (struct iovec){ (char *)reg->host + runs[i].first * reg->page_size,
					 runs[i].count * reg->page_size };
		pages += runs[i].count;
	}
	if (atomic_load(&w->r->pc_armed)) {
		rc = recv_postcopy(w, fh.type, ri, runs, ph.nruns, why, whylen);
		if (rc)
			return rc;
	} else if (fh.type == RMIG_MSG_PAGES) {
		for (uint32_t i = 0; i < ph.nruns; i++)
			mark_written(w->r->written[ri], runs[i].first, runs[i].count);
		rc = l->ops->chan_recv(l, w->chan, iov, (int)ph.nruns,
				       (int)ctx->cfg.link_timeout_ms);
		if (rc)
			return snprintf(why, whylen, "%s", l->err), rc;
	} else {
		/* Fresh memory is already zero: pages not written in this
		 * migration are left alone (even reading them may allocate them);
		 * written ones are cleared only if they are not zero already. */
		for (uint32_t i = 0; i < ph.nruns; i++)
			for (uint64_t p = 0; p < runs[i].count; p++) {
				char *pg = (char *)iov[i].iov_base + p * reg->page_size;

				/* A large run takes a while: let a stop interrupt it. */
				if (p % 4096 == 4095 && atomic_load(&w->r->stopping)) {
					snprintf(why, whylen, "stopped");
					return -ECANCELED;
				}
				if (was_written(w->r->written[ri], runs[i].first + p) &&
				    !rmig_page_is_zero(pg, reg->page_size))
					memset(pg, 0, reg->page_size);
			}
	}
	pthread_mutex_lock(&w->r->lock);
	w->r->frames[w->chan]++;
	if (fh.type == RMIG_MSG_PAGES)
		w->r->pages += pages;
	else
		w->r->zero_pages += pages;
	w->r->bytes += RMIG_FRAME_HDR_LEN + fh.len;
	pthread_cond_broadcast(&w->r->progress);
	pthread_mutex_unlock(&w->r->lock);
	atomic_fetch_add(&ctx->live_bytes, RMIG_FRAME_HDR_LEN + fh.len);
	return 0;
}

static void *recv_main(void *arg)
{
	struct recv_worker *w = arg;
	char why[256];

	/* Copy out of the link's buffers on the CPUs next to the memory. */
	rmig_numa_run_on_node(w->node);
	while (!atomic_load(&w->r->stopping)) {
		int rc = recv_frame(w, why, sizeof(why));

		if (rc) {
			char msg[400];

			snprintf(msg, sizeof(msg), "bad frame from %s: %s", w->r->ctx->link->peer,
				 why);
			recv_fail(w->r, rc, rc == -EBADMSG ? msg : why);
			break;
		}
	}
	free(w->bounce);
	w->bounce = NULL;
	return NULL;
}

/* Accept the data channels; each must name this session. */
static int accept_channels(struct rmig_ctx *ctx, unsigned n, int *nodes)
{
	for (unsigned i = 0; i < n; i++) {
		uint8_t buf[RMIG_FRAME_HDR_LEN + RMIG_CHANNEL_LEN];
		struct iovec v = { buf, sizeof(buf) };
		struct rmig_msg m;
		char why[256];
		unsigned chan;
		int node, rc;

		rc = ctx->link->ops->accept_channel(ctx->link, (int)ctx->cfg.link_timeout_ms, &chan,
						    &node);
		if (rc)
			return rmig_err(ctx, rc, "waiting for data channel %u: %s", i,
					ctx->link->err);
		if (chan >= n)
			return rmig_err(ctx, -EPROTO, "data channel %u: index %u of %u", i, chan,
					n);
		nodes[chan] = node;
		rc = ctx->link->ops->chan_recv(ctx->link, chan, &v, 1,
					       (int)ctx->cfg.link_timeout_ms);
		if (rc)
			return rmig_err(ctx, rc, "data channel %u: %s", i, ctx->link->err);
		rc = rmig_frame_decode_buf(buf, sizeof(buf), NULL, &m, why, sizeof(why));
		if (rc || m.type != RMIG_MSG_CHANNEL)
			return rmig_err(ctx, -EBADMSG, "data channel %u: bad first frame: %s", i,
					rc ? why : rmig_msg_name(m.type));
		if (memcmp(m.u.channel.token, ctx->token, RMIG_NONCE_LEN) || m.u.channel.count != n)
			return rmig_err(ctx, -EPERM,
					"data channel %u does not belong to this migration", i);
	}
	return 0;
}

/* Check the REGIONS layout and have the backend allocate it. */
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
				      "own migration stream (e.g. --backend qemu), backend %s "
				      "takes guest memory",
				ctx->be->ops->name);
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

/* Wait until every channel applied the frames the source says it sent. */
static int wait_round(struct receiver *r, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = r->ctx;
	int64_t last_progress = rmig_now_ms();
	unsigned last_total = ~0u;
	char why[400];
	int rc = 0;

	if (m->u.round_end.h.nchan != ctx->nchan)
		return rmig_err(ctx, -EBADMSG, "bad frame: ROUND_END for %u channels, we have %u",
				m->u.round_end.h.nchan, ctx->nchan);
	pthread_mutex_lock(&r->lock);
	for (;;) {
		unsigned done = 0, total = 0;
		struct timespec ts;

		for (unsigned c = 0; c < ctx->nchan; c++) {
			if (r->frames[c] > m->u.round_end.frames[c]) {
				rc = rmig_err(ctx, -EBADMSG,
					      "bad frame: channel %u delivered %llu frames, source "
					      "counts %llu",
					      c, (unsigned long long)r->frames[c],
					      (unsigned long long)m->u.round_end.frames[c]);
				goto out;
			}
			done += r->frames[c] == m->u.round_end.frames[c];
			total += (unsigned)r->frames[c];
		}
		if (done == ctx->nchan)
			break;
		if (r->failed) {
			rc = rmig_err(ctx, r->failed, "%s", r->failure);
			goto out;
		}
		if (r->pc && rmig_postcopy_failed(r->pc, why, sizeof(why))) {
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
		pthread_cond_timedwait(&r->progress, &r->lock, &ts);
	}
	ctx->stats.pages_sent += r->pages;
	ctx->stats.zero_pages += r->zero_pages;
	ctx->stats.bytes_sent += r->bytes;
	r->pages = r->zero_pages = r->bytes = 0;
	memset(r->frames, 0, sizeof(r->frames));
	atomic_store(&r->round_pages, 0);
	/* Frames of the next round may only come after our ack. */
	atomic_fetch_add(&r->round, 1);
out:
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static int verify(struct rmig_ctx *ctx, const struct rmig_msg *m,
		  const struct rmig_stream_sink *sink)
{
	uint64_t digest[RMIG_MAX_REGIONS];
	int rc;

	if (sink) {
		/* A hypervisor's stream: the hash of every byte, in order. */
		if (m->u.complete.count != 1)
			return rmig_err(ctx, -EBADMSG,
					"bad frame: COMPLETE has %u digests for one stream",
					m->u.complete.count);
		if (!(m->u.complete.flags & RMIG_COMPLETE_VERIFY))
			return 0;
		if (rmig_stream_sink_digest(sink) != m->u.complete.digest[0])
			return rmig_err(ctx, -EILSEQ,
					"verification failed: the migration stream's digest is "
					"%016llx, the source sent %016llx",
					(unsigned long long)rmig_stream_sink_digest(sink),
					(unsigned long long)m->u.complete.digest[0]);
		ctx->stats.verified = 1;
		return 0;
	}
	if (m->u.complete.count != ctx->nregions)
		return rmig_err(ctx, -EBADMSG, "bad frame: COMPLETE has %u digests for %zu regions",
				m->u.complete.count, ctx->nregions);
	if (!(m->u.complete.flags & RMIG_COMPLETE_VERIFY))
		return 0;
	rc = rmig_digest_regions(ctx->regions, ctx->nregions, 0, digest);
	if (rc)
		return rmig_err(ctx, rc, "computing the destination digest failed");
	for (size_t i = 0; i < ctx->nregions; i++)
		if (digest[i] != m->u.complete.digest[i])
			return rmig_err(ctx, -EILSEQ,
					"verification failed: region %u digest %016llx, source has "
					"%016llx",
					ctx->regions[i].id, (unsigned long long)digest[i],
					(unsigned long long)m->u.complete.digest[i]);
	ctx->stats.verified = 1;
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
	if (l->ops->mem_expose && ctx->cfg.pin != RMIG_PIN_STAGING) {
		rmig_link_mem_of_regions(ctx, mem);
		rc = l->ops->mem_expose(l, mem, ctx->nregions, &blob, &len);
		if (rc && ctx->cfg.pin == RMIG_PIN_ALL) {
			rc = rmig_err(ctx, rc, "--pin=all: cannot register guest memory: %s",
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

static int start_receivers(struct receiver *r, const int *nodes)
{
	struct rmig_ctx *ctx = r->ctx;

	atomic_store(&r->stopping, 0);
	r->failed = 0;
	r->guest_pages = 0;
	for (size_t i = 0; i < ctx->nregions; i++)
		r->guest_pages += ctx->regions[i].len / ctx->regions[i].page_size;
	for (unsigned i = 0; i < ctx->nchan; i++) {
		r->w[i] = (struct recv_worker){ .r = r, .chan = i, .node = nodes[i] };
		if (pthread_create(&r->w[i].tid, NULL, recv_main, &r->w[i]))
			return rmig_err(ctx, -EAGAIN, "cannot start receiver threads");
		r->w[i].started = 1;
	}
	return 0;
}

static void stop_receivers(struct receiver *r)
{
	atomic_store(&r->stopping, 1);
	r->ctx->link->ops->interrupt(r->ctx->link, RMIG_LINK_STOP_DATA);
	for (unsigned i = 0; i < RMIG_MAX_CHANNELS; i++)
		if (r->w[i].started) {
			pthread_join(r->w[i].tid, NULL);
			r->w[i].started = 0;
		}
	/* A partly received round is sent again in full. */
	atomic_store(&r->round_pages, 0);
	r->pages = r->zero_pages = r->bytes = 0;
	memset(r->frames, 0, sizeof(r->frames));
}

static void refused(struct rmig_ctx *ctx, const char *why)
{
	struct rmig_event ev = { .type = RMIG_EV_REFUSED, .peer = ctx->link->peer, .detail = why };

	rmig_emit(ctx, &ev);
}

/* The opening of every connection: the peer's HELLO, versions, who it is
 * (authentication), our HELLO. Its HELLO is left in m. */
static int open_session(struct rmig_ctx *ctx, struct rmig_msg *m, struct rmig_wire_hello *hello)
{
	int rc;

	ctx->ctrl_tx_seq = ctx->ctrl_rx_seq = 0;
	rc = rmig_ctrl_expect(ctx, RMIG_MSG_HELLO, m, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return rc;
	*hello = m->u.hello;
	memcpy(ctx->peer_nonce, hello->nonce, RMIG_NONCE_LEN);
	if (hello->ver_max < RMIG_WIRE_VERSION_MIN || hello->ver_min > RMIG_WIRE_VERSION_MAX)
		rc = rmig_err(
		    ctx, -EPROTONOSUPPORT, "version mismatch: peer speaks %u..%u, we speak %d..%d",
		    hello->ver_min, hello->ver_max, RMIG_WIRE_VERSION_MIN, RMIG_WIRE_VERSION_MAX);
	if (!rc)
		rc = rmig_auth_policy(ctx, (hello->flags & RMIG_HELLO_PSK) != 0, 0);
	if (!rc && (hello->caps & RMIG_CAP_POSTCOPY)) {
		char why[256];

		/* Before a single page is sent: the source then simply runs on. */
		rc = rmig_postcopy_probe(why, sizeof(why));
		if (rc)
			rc = rmig_err(ctx, rc, "post-copy is not possible here: %s", why);
	}
	if (rc)
		goto refuse;
	if (getrandom(ctx->nonce, sizeof(ctx->nonce), 0) != sizeof(ctx->nonce))
		return rmig_err(ctx, -EIO, "getrandom failed");
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_HELLO;
	m->u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					       .ver_max = RMIG_WIRE_VERSION_MAX,
					       .channels = RMIG_MAX_CHANNELS,
					       .caps = hello->caps & RMIG_CAP_POSTCOPY,
					       .flags = ctx->cfg.psk ? RMIG_HELLO_PSK : 0 };
	memcpy(m->u.hello.nonce, ctx->nonce, RMIG_NONCE_LEN);
	rc = rmig_ctrl_send(ctx, m);
	if (rc)
		return rc;
	rc = rmig_auth_exchange(ctx, 0);
	if (!rc || rc != -EACCES)
		return rc;
refuse:
	rmig_ctrl_send_abort(ctx, rc, ctx->err);
	refused(ctx, ctx->err);
	return rc;
}

/* After the opening: data channels, the layout (taken, or for a resumed
 * session checked against the one we hold), receivers, placement. */
static int setup_session(struct rmig_ctx *ctx, struct receiver *r, struct rmig_msg *m,
			 const struct rmig_wire_hello *hello, int resume)
{
	int nodes[RMIG_MAX_CHANNELS];
	int rc;

	if (resume && hello->channels != ctx->nchan)
		return rmig_err(ctx, -EPROTO,
				"protocol error: resumed with %u channels, the migration has %u",
				hello->channels, ctx->nchan);
	if (resume && !(hello->caps & RMIG_CAP_POSTCOPY) != !r->pc)
		return rmig_err(ctx, -EPROTO, "protocol error: resumed %s post-copy",
				r->pc ? "without" : "with");
	ctx->nchan = hello->channels;
	ctx->stats.channels = ctx->nchan;
	rc = accept_channels(ctx, ctx->nchan, nodes);
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
		if (!rc && ctx->cfg.prealloc)
			rc = rmig_prealloc_regions(ctx);
		for (size_t i = 0; !rc && i < ctx->nregions; i++) {
			uint64_t pages = ctx->regions[i].len / ctx->regions[i].page_size;

			r->written[i] = calloc((pages + 63) / 64, sizeof(*r->written[i]));
			if (!r->written[i])
				rc = rmig_err(ctx, -ENOMEM, "out of memory for page bitmaps");
		}
		if (!rc && (hello->caps & RMIG_CAP_POSTCOPY))
			rc = rmig_postcopy_create(ctx, &r->pc);
	} else if (m->u.layout.count != ctx->layout.count ||
		   memcmp(m->u.layout.r, ctx->layout.r,
			  sizeof(m->u.layout.r[0]) * ctx->layout.count))
		rc = rmig_err(ctx, -EPROTO,
			      "layout mismatch: the resumed migration describes other memory");
	if (!rc && !resume && !ctx->nregions) {
		rc = rmig_stream_sink_open(ctx, &r->sink);
		r->stream = 1;
	}
	if (!rc)
		rc = start_receivers(r, nodes);
	if (!rc)
		rc = rmig_ctrl_send_simple(ctx, RMIG_MSG_REGIONS_ACK, 0);
	if (!rc)
		rc = offer_memory(ctx, hello->caps & RMIG_CAP_PLACEMENT);
	return rc;
}

/* Stop using the current connection: receivers, heartbeats, registrations. */
static void drop_session(struct rmig_ctx *ctx, struct receiver *r)
{
	stop_receivers(r);
	rmig_heartbeat_pause(ctx, 1);
	/* From here the peer's RDMA WRITEs can no longer land. */
	if (ctx->link->ops->mem_release)
		ctx->link->ops->mem_release(ctx->link);
	ctx->link->ops->close_session(ctx->link);
	ctx->placement = 0;
}

/* Accept the next connection that opens with `want` (a HELLO flag) for our
 * session, until end_ms; refuse any other. 0 with its HELLO in *hello. */
static int accept_for_session(struct rmig_ctx *ctx, struct rmig_msg *m, uint32_t want,
			      int64_t end_ms, struct rmig_wire_hello *hello)
{
	int rc;

	for (;;) {
		int64_t left = end_ms - rmig_now_ms();

		if (left <= 0 || atomic_load(&ctx->cancelled))
			return -ETIMEDOUT;
		rc = rmig_link_accept(ctx, (int)left);
		if (rc == -ETIMEDOUT)
			return rc;
		if (rc)
			continue;
		rc = open_session(ctx, m, hello);
		if (!rc && (!(hello->flags & want) ||
			    memcmp(hello->session, ctx->session, RMIG_NONCE_LEN))) {
			rc = rmig_err(ctx, -EBUSY,
				      "busy: this receiver only waits for migration it was serving "
				      "to %s",
				      want == RMIG_HELLO_RESUME ? "resume" : "ask for its outcome");
			rmig_ctrl_send_abort(ctx, rc, ctx->err);
			refused(ctx, ctx->err);
		}
		if (!rc)
			return 0;
		ctx->link->ops->close_session(ctx->link);
	}
}

/* The link failed during pre-copy: keep the memory received so far and wait
 * failover_timeout_ms for the source to resume over any link. */
static int await_resume(struct rmig_ctx *ctx, struct receiver *r, struct rmig_msg *m, int rc,
			unsigned *expect_round)
{
	const char *from = ctx->link->ops->name;
	struct rmig_wire_hello hello;
	char why[sizeof(ctx->err)], msg[sizeof(why) + 96];
	struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = msg };
	int64_t end = rmig_now_ms() + ctx->cfg.failover_timeout_ms;

	if (ctx->cfg.failover == RMIG_FAILOVER_NONE || !rmig_link_failure(rc) ||
	    atomic_load(&ctx->cancelled))
		return rc;
	memcpy(why, ctx->err, sizeof(why));
	drop_session(ctx, r);
	snprintf(msg, sizeof(msg), "link lost (%s): waiting %u ms for the source to resume", why,
		 ctx->cfg.failover_timeout_ms);
	rmig_emit(ctx, &ev);
	rmig_phase_enter(ctx, RMIG_DST_AWAITING_RESUME);
	for (;;) {
		rc = accept_for_session(ctx, m, RMIG_HELLO_RESUME, end, &hello);
		if (rc)
			return rmig_err(ctx, rc, "%s; the source did not resume within %u ms", why,
					ctx->cfg.failover_timeout_ms);
		if (hello.round < *expect_round)
			rc = rmig_err(
			    ctx, -EPROTO,
			    "protocol error: resume at round %u, round %u was acknowledged",
			    hello.round, *expect_round - 1);
		/* Before the receivers start: the first frame may follow REGIONS_ACK
		 * at once. */
		if (!rc)
			atomic_store(&r->round, hello.round);
		if (!rc)
			rc = setup_session(ctx, r, m, &hello, 1);
		if (!rc)
			break;
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
		drop_session(ctx, r);
	}
	*expect_round = hello.round;
	ctx->stats.failovers++;
	{
		struct rmig_event fev = { .type = RMIG_EV_FAILOVER,
					  .from = from,
					  .transport = ctx->link->ops->name,
					  .detail = why };

		rmig_emit(ctx, &fev);
	}
	rmig_phase_enter(ctx, RMIG_DST_RECEIVING);
	return 0; /* setup_session restarted the heartbeats */
}

/* The link failed after READY: the source may ask whether we started the
 * guest. Answer for commit_timeout_ms: STARTED, or that we did not (and
 * then never will). */
static void answer_outcome(struct rmig_ctx *ctx, struct receiver *r, struct rmig_msg *m,
			   int started)
{
	struct rmig_wire_hello hello;
	int64_t end = rmig_now_ms() + ctx->cfg.commit_timeout_ms;
	char why[sizeof(ctx->err)];

	memcpy(why, ctx->err, sizeof(why));
	drop_session(ctx, r);
	rmig_phase_enter(ctx, RMIG_DST_AWAITING_QUESTION);
	if (!accept_for_session(ctx, m, RMIG_HELLO_QUERY, end, &hello)) {
		if (started)
			rmig_ctrl_send_simple(ctx, RMIG_MSG_STARTED, 0);
		else
			rmig_ctrl_send_abort(ctx, RMIG_ABORT_NOT_STARTED,
					     "the destination did not start the guest and "
					     "discards it");
		ctx->link->ops->close_session(ctx->link);
	}
	memcpy(ctx->err, why, sizeof(why));
}

/* Post-copy: every page is in. Stop receiving and catching faults. */
static void postcopy_finish(struct rmig_ctx *ctx, struct receiver *r, int64_t t_go)
{
	struct rmig_postcopy_figures f;

	stop_receivers(r);
	rmig_postcopy_disarm(r->pc);
	rmig_postcopy_figures(r->pc, &f);
	ctx->stats.postcopy_pages = f.stale;
	ctx->stats.postcopy_requested = f.requested;
	ctx->stats.postcopy_ms = (uint64_t)(rmig_now_ms() - t_go);
	ctx->stats.result = RMIG_RESULT_MIGRATED;
	rmig_phase_enter(ctx, RMIG_DST_MIGRATED);
}

/* Post-copy failed with pages still at the source: the guest started here
 * and cannot go on without them, and the source must not run it either (it
 * ran here since). Stop it as far as the backend can. */
static int postcopy_lost(struct rmig_ctx *ctx, struct receiver *r, int rc, int64_t t_go)
{
	struct rmig_postcopy_figures f;
	char cause[sizeof(ctx->err)];
	int paused;

	memcpy(cause, ctx->err, sizeof(cause));
	if (rc != -ECONNABORTED)
		rmig_ctrl_send_abort(ctx, rc, cause);
	stop_receivers(r);
	rmig_postcopy_figures(r->pc, &f);
	/* Threads blocked in a fault can only go on (a missing page reading as
	 * zero) once disarmed; they may hold what pause waits for. */
	rmig_postcopy_disarm(r->pc);
	paused = ctx->be->ops->pause && !ctx->be->ops->pause(ctx->be);
	ctx->stats.postcopy_pages = f.stale;
	ctx->stats.postcopy_requested = f.requested;
	ctx->stats.postcopy_ms = (uint64_t)(rmig_now_ms() - t_go);
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
	memset(&ctx->stats, 0, sizeof(ctx->stats));
	ctx->stats.transport = "none";
	ctx->stats.pin = "none";
	ctx->stats.result = RMIG_RESULT_FAILED;
	ctx->err[0] = 0;
	ctx->link_detail[0] = 0;
	ctx->placement = 0;
	ctx->regions = NULL;
	ctx->nregions = 0;
	ctx->nchan = 0;
	ctx->t_start_ms = 0;
	atomic_store(&ctx->no_cancel, 0);
	atomic_store(&ctx->live_bytes, 0);
	pthread_mutex_lock(&ctx->prog_lock);
	memset(&ctx->prog, 0, sizeof(ctx->prog));
	pthread_mutex_unlock(&ctx->prog_lock);
	rmig_phase_init(ctx, &rmig_dst_machine);
}

/* One rmig_recv call: what the message handlers share. */
struct dst_run {
	struct rmig_ctx *ctx;
	struct receiver *r;
	struct rmig_msg *m;
	void *state; /* the device state, from STATE */
	size_t state_len;
	int discarded; /* post-copy: pages dropped, no more may come before GO */
	unsigned expect_round;
	int64_t t_go;
};

/* A handler returns 0 to go on, 1 when the migration is over, or a negative
 * errno (ctx->err set). rmig_ctrl_recv has already refused any message the
 * phase does not accept. */
typedef int (*dst_handler)(struct dst_run *d);

static int started(struct rmig_ctx *ctx)
{
	return rmig_phase(ctx) == RMIG_DST_POSTCOPY || rmig_phase(ctx) == RMIG_DST_MIGRATED;
}

/* A lost link during pre-copy may be resumed, unless pages were dropped for
 * post-copy or the source carries a hypervisor's stream (not resumable
 * part-way). 0: resumed, go on. */
static int maybe_resume(struct dst_run *d, int rc)
{
	if (rmig_phase(d->ctx) != RMIG_DST_RECEIVING || d->r->stream || d->discarded)
		return rc;
	return await_resume(d->ctx, d->r, d->m, rc, &d->expect_round);
}

static int on_stream(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	const struct rmig_msg *m = d->m;
	int rc;

	if (!d->r->stream)
		return rmig_err(ctx, -EPROTO, "protocol error: STREAM for a guest sent as memory");
	rc = rmig_stream_sink_write(ctx, &d->r->sink, m->u.state.data, m->u.state.len);
	if (rc)
		return rc;
	ctx->stats.bytes_sent += m->u.state.len;
	atomic_fetch_add(&ctx->live_bytes, m->u.state.len);
	return 0;
}

static int on_round_end(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	struct receiver *r = d->r;
	const struct rmig_msg *m = d->m;
	int postcopy_round = rmig_phase(ctx) == RMIG_DST_POSTCOPY;
	int rc;

	if (m->u.round_end.h.round != d->expect_round)
		return rmig_err(ctx, -EPROTO, "protocol error: ROUND_END %u out of order",
				m->u.round_end.h.round);
	/* Dropped pages must stay missing until the fault handler is armed:
	 * the round that follows DISCARD (a sync) is empty. */
	for (unsigned c = 0; d->discarded && !postcopy_round && c < ctx->nchan; c++)
		if (m->u.round_end.frames[c])
			return rmig_err(ctx, -EPROTO, "protocol error: pages sent after DISCARD");
	rc = wait_round(r, m);
	if (rc)
		return maybe_resume(d, rc);
	if (postcopy_round) {
		struct rmig_postcopy_figures f;

		rmig_postcopy_figures(r->pc, &f);
		if (f.missing)
			return rmig_err(ctx, -EPROTO,
					"protocol error: the post-copy round ended with %llu pages "
					"still missing",
					(unsigned long long)f.missing);
		postcopy_finish(ctx, r, d->t_go);
	}
	ctx->stats.rounds = d->expect_round;
	pthread_mutex_lock(&ctx->prog_lock);
	ctx->prog.round = d->expect_round;
	pthread_mutex_unlock(&ctx->prog_lock);
	return rmig_ctrl_send_simple(ctx, RMIG_MSG_ROUND_ACK, d->expect_round++);
}

static int on_state(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;

	d->state_len = d->m->u.state.len;
	d->state = malloc(d->state_len ? d->state_len : 1);
	if (!d->state)
		return rmig_err(ctx, -ENOMEM, "no memory for %zu bytes of state", d->state_len);
	memcpy(d->state, d->m->u.state.data, d->state_len);
	/* Every round is acknowledged, so all pages are in: the data streams
	 * are done, and their closing is no failure. Post-copy: one round is
	 * still to come. */
	if (!d->r->pc)
		stop_receivers(d->r);
	return rmig_phase_enter(ctx, RMIG_DST_STOP_AND_COPY);
}

static int on_discard(struct dst_run *d)
{
	if (!d->r->pc)
		return rmig_err(d->ctx, -EPROTO, "protocol error: DISCARD without post-copy");
	d->discarded = 1;
	return rmig_postcopy_discard(d->r->pc, d->m);
}

static int on_page_data(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	const struct rmig_msg *m = d->m;
	uint64_t len = RMIG_FRAME_HDR_LEN + RMIG_PAGE_REF_LEN + m->u.page.len;
	char why[400];
	size_t ri;
	int rc;

	if (!d->r->pc || !atomic_load(&d->r->pc_armed))
		return rmig_err(ctx, -EPROTO, "protocol error: PAGE_DATA without post-copy");
	rc = rmig_page_msg_check(m, &ctx->layout, &ri, why, sizeof(why));
	if (rc)
		return rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
	if (rmig_phase(ctx) == RMIG_DST_MIGRATED) /* asked for, then streamed: all is in */
		return 0;
	rc = rmig_postcopy_check(d->r->pc, ri, m->u.page.page, 1, why, sizeof(why));
	if (!rc)
		rc = rmig_postcopy_place(d->r->pc, ri, m->u.page.page, 1, m->u.page.data, why,
					 sizeof(why));
	if (rc)
		return rmig_err(ctx, rc, "%s", why);
	ctx->stats.bytes_sent += len;
	atomic_fetch_add(&ctx->live_bytes, len);
	return 0;
}

/* Post-copy's COMPLETE carries no digests: the pages to come are what the
 * guest will find, and it changes them at once. */
static int arm_postcopy(struct dst_run *d)
{
	const struct rmig_msg *m = d->m;
	int rc;

	if (m->u.complete.count != d->ctx->nregions || (m->u.complete.flags & RMIG_COMPLETE_VERIFY))
		return rmig_err(d->ctx, -EBADMSG, "bad frame: post-copy COMPLETE with digests");
	rc = rmig_postcopy_arm(d->r->pc);
	if (!rc)
		atomic_store(&d->r->pc_armed, 1);
	return rc;
}

static int on_complete(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	struct receiver *r = d->r;
	int rc;

	if (!r->pc != !(d->m->u.complete.flags & RMIG_COMPLETE_POSTCOPY))
		return rmig_err(ctx, -EPROTO, "protocol error: COMPLETE %s post-copy",
				r->pc ? "without" : "with");
	rc = r->pc ? arm_postcopy(d) : verify(ctx, d->m, r->stream ? &r->sink : NULL);
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

	if (d->r->pc && (rc = rmig_cancel_close(ctx)))
		return rc;
	d->t_go = rmig_now_ms();
	/* No start op: resuming is starting. */
	rc = ctx->be->ops->start ? ctx->be->ops->start(ctx->be) : ctx->be->ops->resume(ctx->be);
	if (rc)
		return rmig_err(ctx, rc, "backend: start: %s", ctx->be->err);
	if (d->r->pc) {
		/* The guest runs; what it lacks comes on demand. */
		ctx->stats.postcopy = 1;
		rmig_phase_enter(ctx, RMIG_DST_POSTCOPY);
	} else {
		ctx->stats.result = RMIG_RESULT_MIGRATED;
		rmig_phase_enter(ctx, RMIG_DST_MIGRATED);
	}
	return rmig_ctrl_send_simple(ctx, RMIG_MSG_STARTED, 0);
}

static int on_done(struct dst_run *d)
{
	d->ctx->stats.downtime_ms = d->m->u.done.downtime_ms;
	d->ctx->stats.total_ms = d->m->u.done.total_ms;
	return 1;
}

/* What each control message does; whether it may come now is the phase
 * table's business (session/machine.c). */
static const dst_handler dst_handlers[] = {
	[RMIG_MSG_STREAM] = on_stream,	     [RMIG_MSG_ROUND_END] = on_round_end,
	[RMIG_MSG_STATE] = on_state,	     [RMIG_MSG_DISCARD] = on_discard,
	[RMIG_MSG_PAGE_DATA] = on_page_data, [RMIG_MSG_COMPLETE] = on_complete,
	[RMIG_MSG_CHECK] = on_check,	     [RMIG_MSG_GO] = on_go,
	[RMIG_MSG_DONE] = on_done,
};

int rmig_dest_handles(uint8_t type)
{
	return type < sizeof(dst_handlers) / sizeof(dst_handlers[0]) && dst_handlers[type];
}

/* Receive and act on control messages until DONE or a failure. */
static int serve_messages(struct dst_run *d)
{
	struct rmig_ctx *ctx = d->ctx;
	struct receiver *r = d->r;
	char why[400];
	int rc;

	for (;;) {
		rc = rmig_ctrl_recv(ctx, d->m, (int)ctx->cfg.link_timeout_ms);
		if (rc && r->failed)
			rc = rmig_err(ctx, r->failed, "%s", r->failure);
		if (rc && r->pc && rmig_postcopy_failed(r->pc, why, sizeof(why)))
			rc = rmig_err(ctx, -EIO, "%s", why);
		if (rc) {
			rc = maybe_resume(d, rc);
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

/* Accept a sender and set its migration up: handshake, layout, receivers. */
static int open_migration(struct dst_run *d, int *connected)
{
	struct rmig_ctx *ctx = d->ctx;
	struct rmig_wire_hello hello;
	int rc;

	if (!ctx->port) {
		rc = rmig_link_listen(ctx);
		if (rc)
			return rc;
		struct rmig_event ev = { .type = RMIG_EV_LISTENING, .port = ctx->port };

		rmig_emit(ctx, &ev);
	}
	rmig_phase_enter(ctx, RMIG_DST_LISTENING);
	rc = rmig_link_accept(ctx,
			      ctx->cfg.accept_timeout_ms ? (int)ctx->cfg.accept_timeout_ms : -1);
	if (rc && atomic_load(&ctx->cancelled))
		rc = rmig_err(ctx, -ECANCELED, "cancelled by the operator while listening");
	if (rc)
		return rc;
	*connected = 1;
	ctx->t_start_ms = rmig_now_ms();
	{
		struct rmig_event ev = { .type = RMIG_EV_CONNECTED, .peer = ctx->link->peer };

		rmig_emit(ctx, &ev);
	}
	/* Handshake: who, versions, then the layout, before any memory is committed. */
	rc = open_session(ctx, d->m, &hello);
	if (!rc && (hello.flags & (RMIG_HELLO_RESUME | RMIG_HELLO_QUERY))) {
		rc = rmig_err(ctx, -EPROTO, "%s: no such migration here",
			      hello.flags & RMIG_HELLO_RESUME ? "cannot resume" : "cannot answer");
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
	}
	if (rc)
		return rc;
	memcpy(ctx->session, hello.session, RMIG_NONCE_LEN);
	rc = setup_session(ctx, d->r, d->m, &hello, 0);
	return rc ? rc : rmig_phase_enter(ctx, RMIG_DST_RECEIVING);
}

/* The migration failed in this phase: say so, answer the source's question
 * if GO may have been sent, keep a started guest. Returns the outcome. */
static int fail_migration(struct dst_run *d, int rc)
{
	struct rmig_ctx *ctx = d->ctx;
	struct receiver *r = d->r;
	unsigned phase = rmig_phase(ctx);
	int accepted = phase != RMIG_DST_IDLE && phase != RMIG_DST_LISTENING &&
		       phase != RMIG_DST_PREALLOCATING;

	if (phase == RMIG_DST_POSTCOPY) {
		struct rmig_postcopy_figures f;

		rmig_postcopy_figures(r->pc, &f);
		if (f.missing)
			return postcopy_lost(ctx, r, rc, d->t_go);
		/* Every page is in: only the formal end is missing. */
		postcopy_finish(ctx, r, d->t_go);
	}
	/* After READY the source may have sent GO and not know what became of
	 * it: whatever went wrong here, answer its question. */
	if (rmig_phase(ctx) == RMIG_DST_READY || started(ctx)) {
		int is_started = started(ctx);

		if (!is_started && rc != -ECONNABORTED)
			rmig_ctrl_send_abort(ctx, rc, ctx->err);
		if (rc != -ECONNABORTED)
			answer_outcome(ctx, r, d->m, is_started);
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
	if (accepted || rc != -ECONNABORTED)
		rmig_ctrl_send_abort(ctx, rc, ctx->err);
	ctx->stats.verified = 0;
	ctx->stats.result = accepted ? RMIG_RESULT_ROLLED_BACK : RMIG_RESULT_FAILED;
	rmig_phase_enter(ctx, RMIG_DST_DISCARDED);
	return rc < 0 ? rc : -EIO;
}

int rmig_recv(struct rmig_ctx *ctx)
{
	struct receiver *r = calloc(1, sizeof(*r));
	struct rmig_msg *m = calloc(1, sizeof(*m));
	struct dst_run d = { .ctx = ctx, .r = r, .m = m, .expect_round = 1 };
	int rc, connected = 0;

	reset_session(ctx);
	if (!r || !m) {
		rc = rmig_err(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r->ctx = ctx;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->progress, NULL);
	atomic_init(&r->round, 1);

	rc = open_migration(&d, &connected);
	if (!rc)
		rc = serve_messages(&d);
	if (rc && connected)
		rc = fail_migration(&d, rc);
out:
	rmig_heartbeat_stop(ctx);
	/* Whatever the outcome, the peer may not write our memory any more. */
	if (ctx->link->ops->mem_release)
		ctx->link->ops->mem_release(ctx->link);
	if (r) {
		stop_receivers(r);
		rmig_postcopy_destroy(r->pc);
		rmig_stream_sink_close(&r->sink);
		pthread_mutex_destroy(&r->lock);
		pthread_cond_destroy(&r->progress);
		for (size_t i = 0; i < RMIG_MAX_REGIONS; i++)
			free(r->written[i]);
	}
	/* Keep listening, drop the connections: the next rmig_recv starts clean. */
	if (connected)
		ctx->link->ops->close_session(ctx->link);
	if (ctx->stats.total_ms == 0 && ctx->t_start_ms)
		ctx->stats.total_ms = (uint64_t)(rmig_now_ms() - ctx->t_start_ms);
	free(d.state);
	free(r);
	free(m);
	return rc;
}
