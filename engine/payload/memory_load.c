/* memory_load.c - guest memory, destination side: every run of a PAGES or
 * ZERO frame is checked against the layout before memory is touched, page
 * bytes are read straight into place, zero runs leave fresh memory alone;
 * at COMPLETE the digests are compared: of all memory (config.verify=full),
 * or roots over the digests of every page as it was written (on; the
 * reasoning is at verify_chunked). Post-copy: DISCARDed pages are
 * dropped, and from COMPLETE on every page goes in whole through
 * userfaultfd (postcopy.c), never read into memory the guest may use.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels.h"
#include "chunks.h"
#include "digest.h"
#include "memory.h"
#include "postcopy.h"
#include "populated.h"
#include "prealloc.h"

#define BOUNCE_BYTES RMIG_CHAN_SCRATCH /* post-copy: page bytes staged per receiver */

struct mem_load {
	struct rmig_postcopy *pc;	  /* a post-copy session */
	atomic_int pc_armed;		  /* from COMPLETE: place pages through pc */
	int pc_done;			  /* every page is in; faults no longer caught */
	atomic_uint round;		  /* the round being received */
	atomic_uint_fast64_t round_pages; /* pages announced in it so far */
	/* Pages written since the regions were prepared: the others are still
	 * fresh memory, zero by the backend's contract, so a ZERO run need not
	 * read them (reading can allocate them). */
	atomic_uint_fast64_t *written[RMIG_MAX_REGIONS];
	uint64_t guest_pages;
	/* config.verify=on (the source asked, RMIG_CAP_CHUNK_DIGESTS): a digest
	 * of every page as it is written here. */
	struct rmig_chunks *chunks;
	int placed_unseen; /* some round went by RDMA WRITE: pages we never saw */
	/* This round's figures, from the receiver threads. */
	atomic_uint_fast64_t pages, zero_pages, bytes;
};

static struct mem_load *ml(struct rmig_payload *p)
{
	return p->priv;
}

/* What writing a page into this guest's never-touched memory costs: the
 * host's huge page when a region is fresh anonymous memory of smaller
 * pages (preallocated memory costs nothing). Sent in REGIONS_ACK
 * (ctx->first_touch_bytes): the source counts it for late pages landing
 * where nothing was written yet. */
static uint64_t first_touch_bytes(const struct rmig_ctx *ctx)
{
	uint64_t unit = rmig_first_touch_bytes();

	for (size_t i = 0; i < ctx->nregions; i++)
		if ((ctx->regions[i].flags & RMIG_REGION_UNTOUCHED_ZERO) &&
		    ctx->regions[i].page_size < unit)
			return unit;
	return 0;
}

/* A dry run: no memory, no preallocation, no digests, no post-copy
 * machinery; only the layout's size, which bounds the probe's round. */
static void setup_dry_run(struct rmig_payload *p, const struct rmig_wire_hello *hello)
{
	const struct rmig_layout *lay = &p->ctx->layout;

	for (uint32_t i = 0; i < lay->count; i++)
		ml(p)->guest_pages += lay->r[i].len / lay->r[i].page_size;
	p->postcopy = (hello->caps & RMIG_CAP_POSTCOPY) != 0; /* the listener probed it */
}

int rmig_mem_load_setup(struct rmig_payload *p, const struct rmig_wire_hello *hello)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_load *l = calloc(1, sizeof(*l));
	int rc = 0;

	if (!l)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	p->priv = l;
	atomic_init(&l->round, 1);
	if (ctx->dry_run) {
		setup_dry_run(p, hello);
		return 0;
	}
	if (ctx->cfg.prealloc)
		rc = rmig_prealloc_regions(ctx, p->hooks->preparing);
	else
		ctx->first_touch_bytes = first_touch_bytes(ctx);
	for (size_t i = 0; !rc && i < ctx->nregions; i++) {
		uint64_t pages = ctx->regions[i].len / ctx->regions[i].page_size;

		l->guest_pages += pages;
		l->written[i] = calloc((pages + 63) / 64, sizeof(*l->written[i]));
		if (!l->written[i])
			rc = rmig_err(ctx, -ENOMEM, "out of memory for page bitmaps");
	}
	if (!rc && (hello->caps & RMIG_CAP_CHUNK_DIGESTS) &&
	    rmig_chunks_create(ctx->regions, ctx->nregions, &l->chunks))
		rc = rmig_err(ctx, -ENOMEM, "out of memory for the chunk digests");
	if (!rc && (hello->caps & RMIG_CAP_POSTCOPY)) {
		rc = rmig_postcopy_create(ctx, &l->pc);
		p->postcopy = !rc;
	}
	return rc;
}

static void mark_written(atomic_uint_fast64_t *bm, uint64_t first, uint64_t count)
{
	for (uint64_t pg = first; pg < first + count;) {
		uint64_t bit = pg % 64,
			 n = 64 - bit < first + count - pg ? 64 - bit : first + count - pg;
		uint64_t mask = n == 64 ? ~0ull : ((1ull << n) - 1) << bit;

		atomic_fetch_or(&bm[pg / 64], mask);
		pg += n;
	}
}

static int was_written(atomic_uint_fast64_t *bm, uint64_t page)
{
	return (atomic_load(&bm[page / 64]) >> (page % 64)) & 1;
}

/* Post-copy: the guest may be running, so a page goes in whole or not at
 * all: bytes through a bounce buffer, then UFFDIO_COPY. */
static int recv_postcopy(struct rmig_payload *p, struct rmig_rx_chan *c, uint8_t type, size_t ri,
			 const struct rmig_run *runs, uint32_t nruns, char *why, size_t whylen)
{
	struct rmig_ctx *ctx = p->ctx;
	uint64_t ps = ctx->regions[ri].page_size, per = BOUNCE_BYTES / ps;
	int rc = 0;

	for (uint32_t i = 0; i < nruns && !rc; i++)
		rc = rmig_postcopy_check(ml(p)->pc, ri, runs[i].first, runs[i].count, why, whylen);
	if (!rc && type == RMIG_MSG_PAGES && !c->scratch && !(c->scratch = malloc(BOUNCE_BYTES))) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
	}
	for (uint32_t i = 0; i < nruns && !rc; i++) {
		if (type == RMIG_MSG_ZERO) {
			rc = rmig_postcopy_place(ml(p)->pc, ri, runs[i].first, runs[i].count, NULL,
						 why, whylen);
			continue;
		}
		for (uint64_t done = 0; done < runs[i].count && !rc;) {
			uint64_t n = runs[i].count - done < per ? runs[i].count - done : per;
			struct iovec v = { c->scratch, n * ps };

			rc = ctx->link->ops->chan_recv(ctx->link, c->chan, &v, 1,
						       (int)ctx->cfg.link_timeout_ms);
			if (rc) {
				snprintf(why, whylen, "%s", ctx->link->err);
				break;
			}
			rc = rmig_postcopy_place(ml(p)->pc, ri, runs[i].first + done, n, c->scratch,
						 why, whylen);
			done += n;
		}
	}
	return rc;
}

/* Fresh memory is already zero: pages not written in this migration are
 * left alone (even reading them may allocate them); written ones are
 * cleared only if they are not zero already. */
static int apply_zero(struct rmig_payload *p, struct rmig_rx_chan *c, size_t ri,
		      const struct rmig_run *runs, uint32_t nruns, char *why, size_t whylen)
{
	const struct rmig_region *reg = &p->ctx->regions[ri];

	for (uint32_t i = 0; i < nruns; i++)
		for (uint64_t k = 0; k < runs[i].count; k++) {
			char *pg = (char *)reg->host + (runs[i].first + k) * reg->page_size;

			/* A large run takes a while: let a stop interrupt it. */
			if (k % 4096 == 4095 && rmig_rx_stopping(c->pool)) {
				snprintf(why, whylen, "stopped");
				return -ECANCELED;
			}
			if (was_written(ml(p)->written[ri], runs[i].first + k) &&
			    !rmig_page_is_zero(pg, reg->page_size))
				memset(pg, 0, reg->page_size);
		}
	return 0;
}

/* The digests of what was just written: the bytes in place now. */
static void record_runs(struct mem_load *l, size_t ri, uint8_t type, const struct rmig_run *runs,
			uint32_t nruns, const struct rmig_region *reg)
{
	for (uint32_t i = 0; l->chunks && i < nruns; i++) {
		if (type == RMIG_MSG_ZERO)
			rmig_chunks_set_zero(l->chunks, ri, runs[i].first, runs[i].count);
		else
			rmig_chunks_set_pages(l->chunks, ri, runs[i].first, runs[i].count,
					      (char *)reg->host + runs[i].first * reg->page_size);
	}
}

/* A dry run's probe: the page bytes are read and dropped through the
 * channel's scratch buffer; there is no memory to put them in. */
static int drop_pages(struct rmig_ctx *ctx, struct rmig_rx_chan *c, uint64_t bytes, char *why,
		      size_t whylen)
{
	struct rmig_link *link = ctx->link;
	int rc = 0;

	if (!c->scratch && !(c->scratch = malloc(RMIG_CHAN_SCRATCH))) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	while (bytes && !rc) {
		struct iovec v = { c->scratch,
				   bytes < RMIG_CHAN_SCRATCH ? bytes : RMIG_CHAN_SCRATCH };

		rc = link->ops->chan_recv(link, c->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			snprintf(why, whylen, "%s", link->err);
		bytes -= v.iov_len;
	}
	return rc;
}

/* The rest of a PAGES/ZERO frame. Every check happens before memory is
 * written. */
int rmig_mem_load_frame(struct rmig_payload *p, struct rmig_rx_chan *c,
			const struct rmig_frame_hdr *fh, char *why, size_t whylen)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_load *l = ml(p);
	struct rmig_link *link = ctx->link;
	uint8_t sub[RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS];
	struct rmig_pages_hdr ph;
	struct rmig_run runs[RMIG_MAX_RUNS];
	struct iovec iov[RMIG_MAX_RUNS];
	const struct rmig_region *reg;
	uint64_t pages = 0;
	size_t ri;
	int rc;

	struct iovec v = { sub, RMIG_PAGES_HDR_LEN };

	rc = link->ops->chan_recv(link, c->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return snprintf(why, whylen, "%s", link->err), rc;
	rc = rmig_pages_hdr_decode(sub, fh, &ph, why, whylen);
	if (rc)
		return rc;
	v = (struct iovec){ sub + RMIG_PAGES_HDR_LEN, (size_t)ph.nruns * RMIG_RUN_LEN };
	rc = link->ops->chan_recv(link, c->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return snprintf(why, whylen, "%s", link->err), rc;
	rc = rmig_pages_runs_decode(sub + RMIG_PAGES_HDR_LEN, fh, &ph, &ctx->layout, runs, &ri, why,
				    whylen);
	if (rc)
		return rc;
	if (ph.round != atomic_load(&l->round)) {
		snprintf(why, whylen, "%s frame for round %u during round %u",
			 rmig_msg_name(fh->type), ph.round, atomic_load(&l->round));
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < ph.nruns; i++)
		pages += runs[i].count;
	/* A round sends each page at most once: bounding it by the guest's
	 * size bounds the work a peer can make us do per round. */
	if (atomic_fetch_add(&l->round_pages, pages) + pages > l->guest_pages) {
		snprintf(why, whylen, "round %u sends more pages than the guest's %llu", ph.round,
			 (unsigned long long)l->guest_pages);
		return -EBADMSG;
	}
	reg = ctx->dry_run ? NULL : &ctx->regions[ri];
	if (ctx->dry_run) {
		rc = fh->type == RMIG_MSG_PAGES
			 ? drop_pages(ctx, c, pages * ctx->layout.r[ri].page_size, why, whylen)
			 : 0;
	} else if (atomic_load(&l->pc_armed)) {
		rc = recv_postcopy(p, c, fh->type, ri, runs, ph.nruns, why, whylen);
	} else if (fh->type == RMIG_MSG_PAGES) {
		for (uint32_t i = 0; i < ph.nruns; i++) {
			iov[i] = (struct iovec){ (char *)reg->host + runs[i].first * reg->page_size,
						 runs[i].count * reg->page_size };
			mark_written(l->written[ri], runs[i].first, runs[i].count);
		}
		rc = link->ops->chan_recv(link, c->chan, iov, (int)ph.nruns,
					  (int)ctx->cfg.link_timeout_ms);
		if (rc)
			snprintf(why, whylen, "%s", link->err);
		else
			record_runs(l, ri, fh->type, runs, ph.nruns, reg);
	} else {
		rc = apply_zero(p, c, ri, runs, ph.nruns, why, whylen);
		if (!rc)
			record_runs(l, ri, fh->type, runs, ph.nruns, reg);
	}
	if (rc)
		return rc;
	atomic_fetch_add(fh->type == RMIG_MSG_PAGES ? &l->pages : &l->zero_pages, pages);
	atomic_fetch_add(fh->type == RMIG_MSG_PAGES ? &ctx->live_pages : &ctx->live_zero_pages,
			 pages);
	atomic_fetch_add(&l->bytes, RMIG_FRAME_HDR_LEN + fh->len);
	return 0;
}

void rmig_mem_load_round_done(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_load *l = ml(p);

	ctx->stats.pages_sent += atomic_exchange(&l->pages, 0);
	ctx->stats.zero_pages += atomic_exchange(&l->zero_pages, 0);
	ctx->stats.bytes_sent += atomic_exchange(&l->bytes, 0);
	atomic_store(&l->round_pages, 0);
	/* The round's chunks now, while the guest still runs at the source. */
	if (l->chunks)
		rmig_chunks_refresh(l->chunks);
	l->placed_unseen |= ctx->placement;
	/* Frames of the next round may only come after our ack. */
	atomic_fetch_add(&l->round, 1);
}

/* A partly received round is sent again in full. What arrived of it
 * crossed the wire all the same: it counts (and again when resent). */
void rmig_mem_load_rewind(struct rmig_payload *p, unsigned round)
{
	struct mem_load *l = ml(p);
	struct rmig_ctx *ctx = p->ctx;

	atomic_store(&l->round_pages, 0);
	ctx->stats.pages_sent += atomic_exchange(&l->pages, 0);
	ctx->stats.zero_pages += atomic_exchange(&l->zero_pages, 0);
	ctx->stats.bytes_sent += atomic_exchange(&l->bytes, 0);
	if (round)
		atomic_store(&l->round, round);
}

static int place_page(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	struct mem_load *l = ml(p);
	uint64_t len = RMIG_FRAME_HDR_LEN + RMIG_PAGE_REF_LEN + m->u.page.len;
	char why[400];
	size_t ri;
	int rc;

	if (!l->pc || !atomic_load(&l->pc_armed))
		return rmig_err(ctx, -EPROTO, "protocol error: PAGE_DATA without post-copy");
	rc = rmig_page_msg_check(m, &ctx->layout, &ri, why, sizeof(why));
	if (rc)
		return rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
	if (l->pc_done) /* asked for, then streamed: all is in already */
		return 0;
	rc = rmig_postcopy_check(l->pc, ri, m->u.page.page, 1, why, sizeof(why));
	if (!rc)
		rc = rmig_postcopy_place(l->pc, ri, m->u.page.page, 1, m->u.page.data, why,
					 sizeof(why));
	if (rc)
		return rmig_err(ctx, rc, "%s", why);
	ctx->stats.bytes_sent += len;
	atomic_fetch_add(&ctx->live_bytes, len);
	atomic_fetch_add(&ctx->live_pages, 1);
	return 0;
}

/* DISCARD (pages that will come after the start) or PAGE_DATA (one the
 * guest asked for). */
int rmig_mem_load_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	if (m->type == RMIG_MSG_PAGE_DATA)
		return place_page(p, m);
	if (!ml(p)->pc)
		return rmig_err(p->ctx, -EPROTO, "protocol error: DISCARD without post-copy");
	return rmig_postcopy_discard(ml(p)->pc, m);
}

/* config.verify=on. The source's roots are over digests of the bytes it
 * sent, page by page, the last time it sent each; ours over the bytes we
 * wrote, page by page, the last time we wrote each. Equal roots (up to
 * XXH3 collisions) mean every page here holds what was last sent for it:
 * a page corrupted in flight, written to the wrong place, or never
 * written differs. That holds whatever the link, as long as we see the
 * pages: over TCP streams (and RDMA staging) every page passes through
 * load_frame. RDMA WRITE (placement) puts pages into our memory unseen,
 * with no frame naming them, so we cannot know which chunks a round
 * touched; then, once, at the pause, every page our kernel populated is
 * digested from memory (the rest is zero unread): correct, and it costs
 * the guest's data rather than the last round. (The cheaper design - the
 * source naming each round's touched chunks in ROUND_END, for us to digest
 * from memory at the ack - is not built.) What no per-page digest of moved
 * bytes can see is a page the source's dirty log never reported: that is
 * the source's audit after GO (memory_save.c), or config.verify=full. */
static int verify_chunked(struct rmig_payload *p, uint64_t *digest)
{
	struct mem_load *l = ml(p);
	int rc;

	if (!l->chunks)
		return rmig_err(
		    p->ctx, -EPROTO,
		    "protocol error: COMPLETE with chunk roots the HELLO did not ask for");
	l->placed_unseen |= p->ctx->placement;
	if (l->placed_unseen && (rc = rmig_chunks_from_memory(l->chunks, 0)))
		return rmig_err(p->ctx, rc, "computing the destination digest failed");
	rmig_chunks_roots(l->chunks, digest);
	return 0;
}

static int verify(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	uint64_t digest[RMIG_MAX_REGIONS];
	int rc;

	if (m->u.complete.count != ctx->nregions)
		return rmig_err(ctx, -EBADMSG, "bad frame: COMPLETE has %u digests for %zu regions",
				m->u.complete.count, ctx->nregions);
	if (!(m->u.complete.flags & RMIG_COMPLETE_VERIFY))
		return 0;
	if (m->u.complete.flags & RMIG_COMPLETE_CHUNKED)
		rc = verify_chunked(p, digest);
	else if ((rc =
		      rmig_digest_regions(ctx->regions, ctx->nregions, 0, &ctx->cancelled, digest)))
		rc = rmig_err(ctx, rc, "%s",
			      rc == -ECANCELED ? "cancelled by the operator"
					       : "computing the destination digest failed");
	if (rc)
		return rc;
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

/* Post-copy's COMPLETE carries no digests: the pages to come are what the
 * guest will find, and it changes them at once. */
static int arm_postcopy(struct rmig_payload *p, const struct rmig_msg *m)
{
	int rc;

	if (m->u.complete.count != p->ctx->nregions || (m->u.complete.flags & RMIG_COMPLETE_VERIFY))
		return rmig_err(p->ctx, -EBADMSG, "bad frame: post-copy COMPLETE with digests");
	rc = rmig_postcopy_arm(ml(p)->pc);
	if (!rc)
		atomic_store(&ml(p)->pc_armed, 1);
	return rc;
}

int rmig_mem_load_complete(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct mem_load *l = ml(p);

	if (!l->pc != !(m->u.complete.flags & RMIG_COMPLETE_POSTCOPY))
		return rmig_err(p->ctx, -EPROTO, "protocol error: COMPLETE %s post-copy",
				l->pc ? "without" : "with");
	return l->pc ? arm_postcopy(p, m) : verify(p, m);
}

void rmig_mem_load_remote(struct rmig_payload *p, struct rmig_pending_remote *out)
{
	struct rmig_postcopy_figures f = { 0 };

	if (ml(p)->pc)
		rmig_postcopy_figures(ml(p)->pc, &f);
	*out = (struct rmig_pending_remote){ f.stale, f.missing, f.requested, f.max_wait_ms };
}

int rmig_mem_load_failed(struct rmig_payload *p, char *why, size_t whylen)
{
	return ml(p)->pc && rmig_postcopy_failed(ml(p)->pc, why, whylen);
}

/* Stop catching faults: every page is in, or none will come any more
 * (threads blocked in a fault then go on, a missing page reading as zero). */
void rmig_mem_load_postcopy_end(struct rmig_payload *p)
{
	if (!ml(p)->pc)
		return;
	rmig_postcopy_disarm(ml(p)->pc);
	ml(p)->pc_done = 1;
}

/* Post-copy's link is lost: requests for pages wait for the next one. */
void rmig_mem_load_suspend(struct rmig_payload *p)
{
	if (ml(p)->pc && atomic_load(&ml(p)->pc_armed) && !ml(p)->pc_done)
		rmig_postcopy_hold(ml(p)->pc);
}

/* A resumed session: in post-copy, say what is still missing (the source
 * sends it again) after asking again for what the guest waits for. */
int rmig_mem_load_resume(struct rmig_payload *p)
{
	uint64_t missing;

	if (!ml(p)->pc || !atomic_load(&ml(p)->pc_armed) || ml(p)->pc_done)
		return 0;
	return rmig_postcopy_resume(ml(p)->pc, &missing);
}

void rmig_mem_load_cleanup(struct rmig_payload *p)
{
	struct mem_load *l = ml(p);

	if (!l)
		return;
	rmig_postcopy_destroy(l->pc);
	rmig_chunks_destroy(l->chunks);
	for (size_t i = 0; i < RMIG_MAX_REGIONS; i++)
		free(l->written[i]);
	free(l);
	p->priv = NULL;
}
