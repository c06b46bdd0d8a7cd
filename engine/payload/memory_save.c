/* memory_save.c - guest memory, source side: the dirty log, round after
 * round of dirty pages onto the data channels (zero pages as runs without
 * bytes, or RDMA WRITE straight into the peer's memory), the digests at the
 * pause (config.verify=full) or of every page as it is sent (on), the audit
 * of the source's final memory against those after the switch-over;
 * post-copy: announcing the pages still here (DISCARD) and answering the
 * destination's PAGE_REQUESTs.
 *
 * Two bitmaps per region: `dirty` (to send next; from post-copy's first
 * announcement on, every page announced) and `sent` (sent in the round not
 * yet acknowledged, resent after a failover; during post-copy's
 * announcements: announced). Post-copy's recovery adds a third, `missing`:
 * what the destination says it still lacks on the new link (MISSING), the
 * only pages its next round sends.
 *
 * One more map, coarser: `landed` (mem/landed.c), the areas of the
 * destination's memory that data was sent into, a bit per huge page its
 * kernel zero-fills on a first write (the size from REGIONS_ACK). A dirty
 * page in an area nothing landed in costs the destination that whole clear
 * when it arrives: a guest writing into its free memory during the
 * migration would otherwise pause far longer than the estimate said.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "channels.h"
#include "chunks.h"
#include "digest.h"
#include "landed.h"
#include "memory.h"
#include "populated.h"
#include "postcopy.h"

#define ITEM_BYTES (1u << 20) /* dirty pages per queued item: 1 MiB worth */
/* Pages of address space one item may cover. The sender finds its pages a
 * bitmap word at a time, so a sparse item costs its pages and 1/64 of its
 * span; a narrow span made scattered dirty pages (a hot set spread over a
 * large guest) an item and a frame each: 20 ms of queueing at the pause
 * for 3000 pages of a 64 GiB guest. */
#define ITEM_SPAN (1u << 20)
/* A dry run's probe: small items, so that a slow or paced link stops
 * soon after the probe's end (the senders skip the items left then). */
#define PROBE_ITEM_BYTES (128u << 10)

/* The source digest, computed while the last pages are on the wire: the
 * guest is paused, so memory is what it was at the pause. */
struct digest_task {
	struct rmig_ctx *ctx;
	pthread_t tid;
	int running;
	uint64_t digest[RMIG_MAX_REGIONS];
	int rc;
};

struct mem_save {
	uint64_t *dirty[RMIG_MAX_REGIONS];
	uint64_t *sent[RMIG_MAX_REGIONS];
	uint32_t round;			      /* the round being sent, for the frames' headers */
	int announcing;			      /* post-copy: sent[] records what was announced */
	uint64_t *missing[RMIG_MAX_REGIONS];  /* post-copy recovery: to send again */
	uint64_t *answered[RMIG_MAX_REGIONS]; /* and answered since the link came back */
	int recovering;			      /* the next round sends missing[], not dirty[] */
	int exchanging;		    /* between the rewind and that round: missing[] may change */
	struct digest_task dig;	    /* config.verify=full */
	struct rmig_chunks *chunks; /* config.verify=on: digests of what was sent */
	uint64_t refreshed;	    /* chunks digested again after the last ack */
	struct rmig_landed *landed[RMIG_MAX_REGIONS]; /* where data went (NULL: not counted) */
};

static struct mem_save *ms(struct rmig_payload *p)
{
	return p->priv;
}

static uint64_t region_pages(const struct rmig_region *r)
{
	return r->len / r->page_size;
}

static void clear_map(uint64_t *map, const struct rmig_region *r)
{
	memset(map, 0, rmig_bitmap_words(region_pages(r)) * 8);
}

int rmig_mem_save_setup(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_save *s = calloc(1, sizeof(*s));

	if (!s)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	p->priv = s;
	if (ctx->cfg.postcopy && ctx->cfg.pin == RMIG_PIN_ALL)
		return rmig_err(ctx, -EINVAL,
				"post-copy cannot use config.pin=all: pages that arrive after the "
				"guest started are placed by the destination's CPU");
	if (ctx->cfg.postcopy && ctx->cfg.verify) {
		struct rmig_event ev = { .type = RMIG_EV_WARNING,
					 .detail = "post-copy: memory is not verified (the "
						   "destination's guest writes it before all of "
						   "it arrived)" };

		ctx->cfg.verify = 0;
		rmig_emit(ctx, &ev);
	}
	p->postcopy = ctx->cfg.postcopy;
	for (size_t i = 0; i < ctx->nregions; i++) {
		uint64_t words = rmig_bitmap_words(region_pages(&ctx->regions[i]));

		s->dirty[i] = calloc(words, 8);
		s->sent[i] = calloc(words, 8);
		if (!s->dirty[i] || !s->sent[i])
			return rmig_err(ctx, -ENOMEM, "out of memory for dirty bitmaps");
		ctx->stats.guest_bytes += ctx->regions[i].len;
	}
	return 0;
}

/* The landed maps, when the destination's first touch clears more than a
 * page (not when it registered its memory for RDMA: that backed it all),
 * for regions of smaller pages. Only an estimate depends on them: without
 * memory for them, nothing is counted. Once: a failover keeps them. */
static void start_landed(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_save *s = ms(p);

	for (size_t i = 0; ctx->first_touch_bytes && i < ctx->nregions; i++)
		if (ctx->regions[i].page_size < ctx->first_touch_bytes)
			s->landed[i] = rmig_landed_create(
			    ctx->regions[i].len, ctx->regions[i].page_size, ctx->first_touch_bytes);
}

/* config.verify=on: a digest of every page as it is sent (the handshake
 * fell back to full if the destination cannot keep its own). A failover
 * starts the payload once only, so the digests of what it sent survive. */
static int start_chunks(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;

	if (ctx->cfg.verify != RMIG_VERIFY_ON || p->postcopy || ms(p)->chunks)
		return 0;
	if (rmig_chunks_create(ctx->regions, ctx->nregions, &ms(p)->chunks))
		return rmig_err(ctx, -ENOMEM, "out of memory for the chunk digests");
	return 0;
}

/* Bytes of the pages set in the dirty maps. */
static uint64_t pending_bytes(struct rmig_payload *p)
{
	uint64_t bytes = 0;

	for (size_t ri = 0; ri < p->ctx->nregions; ri++) {
		const struct rmig_region *r = &p->ctx->regions[ri];

		bytes += rmig_dirty_bitmap_count(ms(p)->dirty[ri], region_pages(r)) * r->page_size;
	}
	return bytes;
}

int rmig_mem_save_start(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct rmig_backend *be = ctx->be;
	int rc;

	/* Start logging before the first read, so that no write is missed. No
	 * start_dirty_log op: the backend logs all along. */
	rc = be->ops->start_dirty_log ? be->ops->start_dirty_log(be) : 0;
	if (rc)
		return rmig_err(ctx, rc, "backend: starting the dirty log: %s", be->err);
	/* The first round sends everything, but memory never touched is zero
	 * on both sides already (read after the log started: a page touched
	 * since is in the log). */
	for (size_t i = 0; i < ctx->nregions; i++) {
		const struct rmig_region *r = &ctx->regions[i];

		if (!(r->flags & RMIG_REGION_UNTOUCHED_ZERO) ||
		    rmig_populated_pages(r->host, region_pages(r), r->page_size, ms(p)->dirty[i]))
			rmig_dirty_bitmap_set_all(ms(p)->dirty[i], region_pages(r));
	}
	start_landed(p);
	rmig_status_plan(ctx, pending_bytes(p)); /* round 1's */
	return start_chunks(p);
}

/* The digests of what is about to be sent: the bytes as the senders read
 * them (a page the guest changes meanwhile is dirty and sent again, with
 * a new digest; once it is paused, they are final). */
static void record_runs(struct rmig_payload *p, const struct rmig_region *r, uint8_t type,
			const struct rmig_run *runs, uint32_t nruns)
{
	struct rmig_chunks *c = ms(p)->chunks;
	size_t ri = (size_t)(r - p->ctx->regions);

	for (uint32_t i = 0; c && i < nruns; i++) {
		if (type == RMIG_MSG_ZERO)
			rmig_chunks_set_zero(c, ri, runs[i].first, runs[i].count);
		else
			rmig_chunks_set_pages(c, ri, runs[i].first, runs[i].count,
					      (char *)r->host + runs[i].first * r->page_size);
	}
}

/* Data is on its way into these runs' areas. */
static void record_landing(struct rmig_payload *p, const struct rmig_region *r,
			   const struct rmig_run *runs, uint32_t nruns)
{
	struct rmig_landed *l = ms(p)->landed[r - p->ctx->regions];

	for (uint32_t i = 0; l && i < nruns; i++)
		rmig_landed_mark(l, runs[i].first, runs[i].count);
}

/* Send the runs collected so far as one PAGES or ZERO frame. */
static int flush_runs(struct rmig_payload *p, struct rmig_tx_chan *c, const struct rmig_region *r,
		      uint8_t type, struct rmig_run *runs, uint32_t *nruns)
{
	struct rmig_ctx *ctx = p->ctx;
	struct iovec data[RMIG_MAX_RUNS];
	uint64_t pages = 0;
	size_t sub;
	int rc;

	if (!*nruns)
		return 0;
	record_runs(p, r, type, runs, *nruns);
	if (type == RMIG_MSG_PAGES)
		record_landing(p, r, runs, *nruns);
	sub = rmig_pages_encode(c->hdr + RMIG_FRAME_HDR_LEN, sizeof(c->hdr) - RMIG_FRAME_HDR_LEN,
				r->id, ms(p)->round, runs, *nruns);
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
		rc = rmig_tx_rate_limit(c, pages * r->page_size);
		if (!rc)
			rc = l->ops->chan_write(l, c->chan, (uint32_t)(r - ctx->regions), off, data,
						(int)*nruns, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			return rc;
		c->bytes += pages * r->page_size;
		c->pages += pages;
		atomic_fetch_add(&ctx->live_bytes, pages * r->page_size); /* rmig_progress */
		atomic_fetch_add(&ctx->live_pages, pages);
		*nruns = 0;
		return 0;
	}
	rc = rmig_tx_send_frame(c, type, sub, data, type == RMIG_MSG_PAGES ? (int)*nruns : 0);
	if (rc)
		return rc;
	if (type == RMIG_MSG_PAGES) {
		c->pages += pages;
		atomic_fetch_add(&ctx->live_pages, pages);
	} else {
		c->zero_pages += pages;
		atomic_fetch_add(&ctx->live_zero_pages, pages);
		rmig_status_plan_less(ctx, pages * r->page_size);
	}
	*nruns = 0;
	return 0;
}

static int add_page(struct rmig_payload *p, struct rmig_tx_chan *c, const struct rmig_region *r,
		    uint8_t type, struct rmig_run *runs, uint32_t *nruns, uint64_t page)
{
	int rc;

	if (*nruns && runs[*nruns - 1].first + runs[*nruns - 1].count == page) {
		runs[*nruns - 1].count++;
		return 0;
	}
	if (*nruns == RMIG_MAX_RUNS) {
		rc = flush_runs(p, c, r, type, runs, nruns);
		if (rc)
			return rc;
	}
	runs[(*nruns)++] = (struct rmig_run){ page, 1 };
	return 0;
}

/* On a sender thread: the item's pages, split into data and zero runs. */
int rmig_mem_save_item(struct rmig_payload *p, struct rmig_tx_chan *c,
		       const struct rmig_tx_item *it)
{
	const struct rmig_region *r = &p->ctx->regions[it->area];
	struct rmig_run data[RMIG_MAX_RUNS], zero[RMIG_MAX_RUNS];
	uint64_t end = it->first + it->span, pos = it->first, start, len;
	uint32_t nd = 0, nz = 0;
	int rc = 0;

	if (p->ctx->dry_run && rmig_now_ms() >= p->ctx->probe_end_ms)
		return 0; /* the probe is over: the rest stays here */

	while (!rc && rmig_dirty_bitmap_next_run(it->map, end, pos, it->span, &start, &len)) {
		for (uint64_t pg = start; pg < start + len && !rc; pg++) {
			if (rmig_page_is_zero((char *)r->host + pg * r->page_size, r->page_size))
				rc = add_page(p, c, r, RMIG_MSG_ZERO, zero, &nz, pg);
			else
				rc = add_page(p, c, r, RMIG_MSG_PAGES, data, &nd, pg);
		}
		pos = start + len;
	}
	if (!rc)
		rc = flush_runs(p, c, r, RMIG_MSG_PAGES, data, &nd);
	if (!rc)
		rc = flush_runs(p, c, r, RMIG_MSG_ZERO, zero, &nz);
	return rc;
}

/* Queue every page set in map[] for the senders (a dry run's probe: up
 * to ctx->probe_bytes of them). The items point into map: it must stay
 * unchanged until the senders are idle. */
static int queue_pages(struct rmig_payload *p, struct rmig_tx_pool *tx, uint64_t *const *map)
{
	struct rmig_ctx *ctx = p->ctx;
	uint64_t item_bytes = ctx->dry_run ? PROBE_ITEM_BYTES : ITEM_BYTES, queued = 0;
	int rc = 0;

	for (size_t ri = 0; ri < ctx->nregions && !rc; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];
		uint64_t npages = region_pages(r), pos = 0, start, len;
		uint64_t per_item = item_bytes / r->page_size ? item_bytes / r->page_size : 1;
		struct rmig_tx_item it = { p, (uint32_t)ri, 0, 0, map[ri] };
		unsigned group = ctx->region_group[ri];
		uint64_t in_item = 0;

		/* Gather runs into items of at most per_item dirty pages spread
		 * over at most ITEM_SPAN pages. */
		while (!rc &&
		       rmig_dirty_bitmap_next_run(map[ri], npages, pos, per_item, &start, &len)) {
			if (in_item &&
			    (in_item + len > per_item || start + len - it.first > ITEM_SPAN)) {
				rc = rmig_tx_push(tx, group, &it);
				in_item = 0;
			}
			if (ctx->dry_run && queued >= ctx->probe_bytes)
				break;
			if (!in_item)
				it.first = start;
			it.span = start + len - it.first;
			in_item += len;
			queued += len * r->page_size;
			pos = start + len;
		}
		if (!rc && in_item)
			rc = rmig_tx_push(tx, group, &it);
	}
	return rc;
}

/* Queue the dirty pages. Pre-copy: they move to `sent` until the round is
 * acknowledged (a failover sends them again). Post-copy, after the start:
 * the announced pages, which stay as they are. */
int rmig_mem_save_round(struct rmig_payload *p, struct rmig_tx_pool *tx, unsigned round)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_save *s = ms(p);

	s->round = round;
	/* A failure shows in rmig_tx_wait. */
	s->exchanging = 0; /* the senders read missing[] from now on */
	queue_pages(p, tx, s->recovering ? s->missing : s->dirty);
	if (s->announcing)
		return 0;
	for (size_t ri = 0; ri < ctx->nregions; ri++) {
		uint64_t *t = s->sent[ri];

		s->sent[ri] = s->dirty[ri];
		s->dirty[ri] = t;
		clear_map(t, &ctx->regions[ri]);
	}
	return 0;
}

void rmig_mem_save_acked(struct rmig_payload *p)
{
	if (ms(p)->announcing)
		return;
	/* The round's chunks now, while the guest runs, not at the pause. */
	if (ms(p)->chunks)
		ms(p)->refreshed = rmig_chunks_refresh(ms(p)->chunks);
	for (size_t ri = 0; ri < p->ctx->nregions; ri++)
		clear_map(ms(p)->sent[ri], &p->ctx->regions[ri]);
}

/* Post-copy's link was lost: the next round sends only what the
 * destination says it lacks (MISSING), nothing until it said so. */
static void rewind_postcopy(struct rmig_payload *p)
{
	struct mem_save *s = ms(p);

	for (size_t ri = 0; ri < p->ctx->nregions; ri++) {
		const struct rmig_region *r = &p->ctx->regions[ri];

		if (!s->missing[ri])
			s->missing[ri] = calloc(rmig_bitmap_words(region_pages(r)), 8);
		if (!s->answered[ri])
			s->answered[ri] = calloc(rmig_bitmap_words(region_pages(r)), 8);
		if (s->missing[ri])
			clear_map(s->missing[ri], r);
		if (s->answered[ri])
			clear_map(s->answered[ri], r);
	}
	s->recovering = 1;
	s->exchanging = 1;
}

void rmig_mem_save_rewind(struct rmig_payload *p)
{
	struct mem_save *s = ms(p);

	if (s->announcing) {
		rewind_postcopy(p);
		return;
	}
	for (size_t ri = 0; ri < p->ctx->nregions; ri++) {
		size_t words = rmig_bitmap_words(region_pages(&p->ctx->regions[ri]));

		for (size_t w = 0; w < words; w++)
			s->dirty[ri][w] |= s->sent[ri][w];
		memset(s->sent[ri], 0, words * 8);
	}
}

int rmig_mem_save_pending(struct rmig_payload *p, struct rmig_pending *out)
{
	struct rmig_ctx *ctx = p->ctx;

	*out = (struct rmig_pending){ 0 };
	for (size_t ri = 0; ri < ctx->nregions; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];
		uint64_t n;
		int rc = ctx->be->ops->fetch_dirty(ctx->be, ri, ms(p)->dirty[ri]);

		if (rc)
			return rmig_err(ctx, rc, "backend: fetching the dirty log: %s",
					ctx->be->err);
		n = rmig_dirty_bitmap_count(ms(p)->dirty[ri], region_pages(r));
		out->units += n;
		out->bytes += n * r->page_size;
		/* RDMA WRITE after a failover: into registered, backed memory. */
		if (!ctx->placement && ctx->first_touch_bytes && ms(p)->landed[ri])
			out->landing_bytes +=
			    rmig_landed_cost(ms(p)->landed[ri], ms(p)->dirty[ri], region_pages(r));
	}
	return 0;
}

void rmig_mem_save_resend_all(struct rmig_payload *p)
{
	for (size_t i = 0; i < p->ctx->nregions; i++)
		rmig_dirty_bitmap_set_all(ms(p)->dirty[i], region_pages(&p->ctx->regions[i]));
}

static void *digest_main(void *arg)
{
	struct digest_task *d = arg;

	d->rc = rmig_digest_regions(d->ctx->regions, d->ctx->nregions, 1, &d->ctx->cancelled,
				    d->digest);
	return NULL;
}

int rmig_mem_save_pause(struct rmig_payload *p)
{
	struct digest_task *d = &ms(p)->dig;

	if (p->ctx->cfg.verify != RMIG_VERIFY_FULL || p->postcopy)
		return 0;
	d->ctx = p->ctx;
	if (pthread_create(&d->tid, NULL, digest_main, d))
		return rmig_err(p->ctx, -EAGAIN, "cannot start the digest thread");
	d->running = 1;
	return 0;
}

static int join_digest(struct rmig_payload *p)
{
	struct digest_task *d = &ms(p)->dig;

	if (!d->running)
		return 0;
	pthread_join(d->tid, NULL);
	d->running = 0;
	if (d->rc == -ECANCELED)
		return rmig_err(p->ctx, d->rc, "cancelled by the operator");
	return d->rc ? rmig_err(p->ctx, d->rc, "computing the source digest failed") : 0;
}

int rmig_mem_save_complete(struct rmig_payload *p, struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	int rc;

	m->u.complete.count = (uint32_t)ctx->nregions;
	if (p->postcopy) {
		m->u.complete.flags |= RMIG_COMPLETE_POSTCOPY;
		return 0;
	}
	if (!ctx->cfg.verify)
		return 0;
	if (ms(p)->chunks) {
		/* Only the chunks the last round touched are digested again. */
		ctx->stats.verify_chunks = ms(p)->refreshed + rmig_chunks_stale(ms(p)->chunks);
		rmig_chunks_roots(ms(p)->chunks, m->u.complete.digest);
		m->u.complete.flags |= RMIG_COMPLETE_VERIFY | RMIG_COMPLETE_CHUNKED;
		return 0;
	}
	rc = join_digest(p);
	if (rc)
		return rc;
	m->u.complete.flags |= RMIG_COMPLETE_VERIFY;
	memcpy(m->u.complete.digest, ms(p)->dig.digest, sizeof(uint64_t) * ctx->nregions);
	return 0;
}

/* DISCARD the dirty pages not announced yet, and record them as announced. */
int rmig_mem_save_announce(struct rmig_payload *p, uint64_t *count)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_save *s = ms(p);
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc = 0;

	if (!m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	if (!s->announcing)
		for (size_t ri = 0; ri < ctx->nregions; ri++)
			clear_map(s->sent[ri], &ctx->regions[ri]);
	s->announcing = 1;
	*count = 0;
	for (size_t ri = 0; ri < ctx->nregions && !rc; ri++) {
		const struct rmig_region *r = &ctx->regions[ri];
		uint64_t words = rmig_bitmap_words(region_pages(r));

		memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.discard));
		m->type = RMIG_MSG_DISCARD;
		m->u.discard.region_id = r->id;
		for (uint64_t w = 0; w < words && !rc; w++) {
			uint64_t bits = s->dirty[ri][w] & ~s->sent[ri][w];

			s->sent[ri][w] |= bits;
			*count += (uint64_t)__builtin_popcountll(bits);
			for (; bits && !rc; bits &= bits - 1)
				rc =
				    rmig_runs_add(ctx, m, w * 64 + (uint64_t)__builtin_ctzll(bits));
		}
		if (!rc)
			rc = rmig_runs_flush(ctx, m);
	}
	ctx->stats.postcopy_pages += *count;
	free(m);
	return rc;
}

/* MISSING, in post-copy's recovery: announced pages the destination
 * lacks. Any other page is a lie (or a bug): refused. */
static int take_missing(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_save *s = ms(p);
	char why[256];
	size_t ri;
	int rc = rmig_page_msg_check(m, &ctx->layout, &ri, why, sizeof(why));

	if (rc)
		return rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
	if (!s->recovering || !s->missing[ri] || !s->answered[ri])
		return rmig_err(ctx, -EPROTO, "protocol error: peer %s sent MISSING %s",
				ctx->link->peer,
				s->recovering ? "(no memory to take it)" : "outside a recovery");
	/* A word at a time: a run costs its length / 64, however long. */
	for (uint32_t i = 0; i < m->u.discard.nruns; i++) {
		const struct rmig_run *run = &m->u.discard.runs[i];
		uint64_t end = run->first + run->count;

		for (uint64_t w = run->first / 64; w <= (end - 1) / 64; w++) {
			uint64_t mask = rmig_bitmap_word_mask(run->first, run->count, w);
			uint64_t lie = mask & ~s->sent[ri][w];

			if (lie)
				return rmig_err(
				    ctx, -EPROTO,
				    "protocol error: peer %s says it lacks page %llu "
				    "of region %u, which was never announced",
				    ctx->link->peer,
				    (unsigned long long)(w * 64 + (uint64_t)__builtin_ctzll(lie)),
				    ctx->regions[ri].id);
			/* An answer on this link is on its way: not again. */
			s->missing[ri][w] |= mask & ~s->answered[ri][w];
		}
	}
	return 0;
}

/* PAGE_REQUEST: the destination's guest waits for an announced page.
 * MISSING: what it lacks after a recovery. */
int rmig_mem_save_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct mem_save *s = ms(p);
	size_t ri;
	int rc;

	if (m->type == RMIG_MSG_MISSING)
		return take_missing(p, m);
	rc = rmig_postcopy_answer(p->ctx, m, s->dirty);
	ri = (size_t)rmig_layout_find(&p->ctx->layout, m->u.page.region_id);
	/* Answered on the new link before its round: not in the round. */
	if (!rc && s->exchanging && s->answered[ri] && s->missing[ri]) {
		rmig_bitmap_set(s->answered[ri], m->u.page.page);
		s->missing[ri][m->u.page.page / 64] &= ~(1ull << (m->u.page.page % 64));
	}
	return rc;
}

void rmig_mem_save_cleanup(struct rmig_payload *p)
{
	struct mem_save *s = ms(p);

	if (!s)
		return;
	if (s->dig.running)
		pthread_join(s->dig.tid, NULL);
	rmig_chunks_destroy(s->chunks);
	for (size_t i = 0; i < RMIG_MAX_REGIONS; i++) {
		free(s->dirty[i]);
		free(s->sent[i]);
		rmig_landed_destroy(s->landed[i]);
		free(s->missing[i]);
		free(s->answered[i]);
	}
	free(s);
	p->priv = NULL;
}

/* "region:chunk ..." of the first mismatched chunks. */
static void name_chunks(const struct rmig_audit_report *rep, char *out, size_t len)
{
	size_t n = 0;

	out[0] = 0;
	for (unsigned i = 0; i < rep->named && n < len; i++)
		n +=
		    (size_t)snprintf(out + n, len - n, "%s%u:%llu", i ? " " : "",
				     rep->first[i].region, (unsigned long long)rep->first[i].chunk);
	if (rep->mismatched > rep->named && n < len)
		snprintf(out + n, len - n, " ...");
}

/* The guest runs at the destination; ours is paused as it was at the
 * pause. Every chunk of it against the digests of what was sent: a
 * difference is a write the backend's dirty log did not report, so the
 * destination's guest runs with other memory. Never-populated pages are
 * not read. */
int rmig_mem_save_audit(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct rmig_stats *st = &ctx->stats;
	struct rmig_audit_report rep;
	struct rmig_event ev = { .type = RMIG_EV_AUDIT };
	char detail[512];
	int64_t t0 = rmig_now_ms();
	int rc;

	if (!ms(p)->chunks)
		return 0;
	rc = rmig_chunks_audit(ms(p)->chunks, 0, &rep);
	if (rc)
		return rmig_err(ctx, rc, "audit: out of memory");
	st->audit_ms = (uint64_t)(rmig_now_ms() - t0);
	st->audit_mismatch_chunks = rep.mismatched;
	st->audit = rep.mismatched ? RMIG_AUDIT_FAILED : RMIG_AUDIT_PASSED;
	name_chunks(&rep, st->audit_chunks, sizeof(st->audit_chunks));
	if (rep.mismatched)
		snprintf(detail, sizeof(detail),
			 "audit FAILED: %llu of %llu chunks of 2 MiB of the source's memory at the "
			 "pause differ from what was sent (region:chunk %s): backend %s did not "
			 "report every write in its dirty log; the guest runs at the destination "
			 "with memory that differs",
			 (unsigned long long)rep.mismatched, (unsigned long long)rep.chunks,
			 st->audit_chunks, ctx->be->ops->name);
	else
		snprintf(
		    detail, sizeof(detail),
		    "audit passed: %llu chunks (%llu pages read) match what was sent, in %llu ms",
		    (unsigned long long)rep.chunks, (unsigned long long)rep.pages_read,
		    (unsigned long long)st->audit_ms);
	ev.detail = detail;
	rmig_emit(ctx, &ev);
	return 0;
}
