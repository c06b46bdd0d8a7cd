/* disk_load.c - a guest's disks, destination side: DISKS is checked and the
 * backend opens its disks (a missing, smaller, read-only or shared one is
 * refused before a block is written); every run of a BLOCKS or BLOCKS_ZERO
 * frame is checked against the disks before it is written, bytes go
 * through the channel's buffer into the backend; a digest of every block
 * as written; at COMPLETE the roots are compared with DISK_DIGESTS and the
 * disks flushed, before READY.
 *
 * A migration that does not end with the guest started here leaves the
 * disks with a partial copy: said once, as a warning (the operator may
 * delete the images or migrate again).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels.h"
#include "disk.h"

struct disk_load {
	const struct rmig_disk *disks; /* the backend's, after prepare_disks */
	size_t n;
	struct rmig_disks wire;	   /* the source's */
	struct rmig_layout layout; /* its disks as regions of blocks */
	uint64_t nblocks[RMIG_MAX_DISKS], total_blocks;
	uint64_t *digest[RMIG_MAX_DISKS]; /* per block, of what was written */
	uint64_t zero_digest[RMIG_MAX_DISKS];
	int have_roots; /* DISK_DIGESTS arrived */
	uint64_t root[RMIG_MAX_DISKS];
	/* Everything above is set by the control thread before it sends
	 * DISKS_ACK; ready publishes it to the receivers (release/acquire): a
	 * frame before it is refused, never read against half-made state. */
	atomic_int ready;
	atomic_int written; /* some block was written: the disks changed */
	atomic_uint round;
	atomic_uint_fast64_t round_blocks;
	atomic_uint_fast64_t blocks, zero_blocks, bytes;
};

static struct disk_load *dl(struct rmig_payload *p)
{
	return p->priv;
}

int rmig_disk_load_setup(struct rmig_payload *p, const struct rmig_wire_hello *hello)
{
	struct disk_load *l = calloc(1, sizeof(*l));

	(void)hello;
	if (!l)
		return rmig_err(p->ctx, -ENOMEM, "out of memory");
	atomic_init(&l->round, 1);
	p->priv = l;
	return 0;
}

static int check_ops(struct rmig_ctx *ctx)
{
	const struct rmig_backend_ops *o = ctx->be->ops;

	if (!o->prepare_disks || !o->get_disks || !o->disk_write || !o->disk_write_zeroes ||
	    !o->disk_flush)
		return rmig_err(ctx, -EOPNOTSUPP,
				"cannot take this guest: it has disks and backend %s takes none",
				o->name);
	return 0;
}

/* The backend's disks against the source's: the same ids and sizes, and
 * not the same storage (copying a disk onto itself destroys it). */
static int match_disks(struct rmig_ctx *ctx, struct disk_load *l)
{
	static const uint8_t unknown[RMIG_DISK_ID_LEN];

	if (l->n != l->wire.count)
		return rmig_err(
		    ctx, -EINVAL,
		    "cannot take this guest: backend %s opened %zu disks, the source has %u",
		    ctx->be->ops->name, l->n, l->wire.count);
	for (size_t i = 0; i < l->n; i++) {
		const struct rmig_wire_disk *w = &l->wire.d[i];

		if (l->disks[i].id != w->id || l->disks[i].size != w->size ||
		    l->disks[i].block_size != w->block_size)
			return rmig_err(ctx, -EINVAL,
					"cannot take this guest: disk %s here is %" PRIu64
					" bytes in %u-byte blocks, the source's is %" PRIu64
					" in %u",
					w->name, l->disks[i].size, l->disks[i].block_size, w->size,
					w->block_size);
		if (memcmp(w->identity, unknown, RMIG_DISK_ID_LEN) &&
		    !memcmp(w->identity, l->disks[i].identity, RMIG_DISK_ID_LEN))
			return rmig_err(
			    ctx, -EEXIST,
			    "cannot take this guest: disk %s is the same storage on both "
			    "sides (shared): it is not copied onto itself",
			    w->name);
	}
	return 0;
}

/* A dry run: what prepare_disks would refuse (the backend's check_disks),
 * nothing opened; DISKS_ACK, and no block is taken (not ready). */
static int check_disks(struct rmig_ctx *ctx, const struct rmig_disk *want, uint32_t n)
{
	const struct rmig_backend_ops *o = ctx->be->ops;
	int rc = o->check_disks ? o->check_disks(ctx->be, want, n) : 0;

	if (rc)
		return rmig_err(ctx, rc, "cannot take this guest's disks: %s", ctx->be->err);
	ctx->stats.disks = n;
	for (uint32_t i = 0; i < n; i++)
		ctx->stats.disk_bytes += want[i].size;
	return rmig_ctrl_send_simple(ctx, RMIG_MSG_DISKS_ACK, 0);
}

/* DISKS: open the disks, get ready to write them, DISKS_ACK. */
static int take_disks(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_load *l = dl(p);
	struct rmig_disk want[RMIG_MAX_DISKS];
	int rc;

	if (l->wire.count)
		return rmig_err(ctx, -EPROTO, "protocol error: peer %s sent DISKS twice",
				ctx->link->peer);
	rc = check_ops(ctx);
	if (rc)
		return rc;
	l->wire = m->u.disks; /* checked by the decoder */
	rmig_disks_layout(&l->wire, &l->layout);
	for (uint32_t i = 0; i < l->wire.count; i++) {
		want[i] = (struct rmig_disk){ .id = l->wire.d[i].id,
					      .block_size = l->wire.d[i].block_size,
					      .size = l->wire.d[i].size };
		memcpy(want[i].name, l->wire.d[i].name, sizeof(want[i].name));
		memcpy(want[i].identity, l->wire.d[i].identity, RMIG_DISK_ID_LEN);
	}
	if (ctx->dry_run)
		return check_disks(ctx, want, l->wire.count);
	rc = ctx->be->ops->prepare_disks(ctx->be, want, l->wire.count);
	if (rc)
		return rmig_err(ctx, rc, "cannot take this guest's disks: %s", ctx->be->err);
	rc = ctx->be->ops->get_disks(ctx->be, &l->disks, &l->n);
	if (rc)
		return rmig_err(ctx, rc, "backend: disks: %s", ctx->be->err);
	rc = match_disks(ctx, l);
	for (size_t i = 0; !rc && i < l->n; i++) {
		l->nblocks[i] = l->disks[i].size / l->disks[i].block_size;
		l->total_blocks += l->nblocks[i];
		l->zero_digest[i] = rmig_disk_zero_digest(l->disks[i].block_size);
		l->digest[i] = calloc(l->nblocks[i], 8);
		if (!l->digest[i])
			rc = rmig_err(ctx, -ENOMEM, "out of memory for disk %s's digests",
				      l->disks[i].name);
		ctx->stats.disk_bytes += l->disks[i].size;
	}
	if (rc)
		return rc;
	ctx->stats.disks = (unsigned)l->n;
	atomic_store_explicit(&l->ready, 1, memory_order_release);
	return rmig_ctrl_send_simple(ctx, RMIG_MSG_DISKS_ACK, 0);
}

/* DISK_DIGESTS: kept for COMPLETE (sent again after a failover). */
static int take_roots(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct disk_load *l = dl(p);

	if (m->u.disk_digests.count != l->n)
		return rmig_err(p->ctx, -EBADMSG,
				"bad frame: DISK_DIGESTS has %u roots for %zu disks",
				m->u.disk_digests.count, l->n);
	memcpy(l->root, m->u.disk_digests.digest, sizeof(l->root[0]) * l->n);
	l->have_roots = 1;
	return 0;
}

int rmig_disk_load_message(struct rmig_payload *p, const struct rmig_msg *m)
{
	return m->type == RMIG_MSG_DISKS ? take_disks(p, m) : take_roots(p, m);
}

static int io_failed(struct disk_load *l, size_t di, const char *what, uint64_t off, int rc,
		     char *why, size_t whylen)
{
	snprintf(why, whylen, "%s disk %s at offset %" PRIu64 ": %s", what, l->disks[di].name, off,
		 strerror(-rc));
	/* This host's disk failed, not the link: no waiting for a resume (a
	 * new link writes to the same disk), the source is told why. */
	return RMIG_ERR_LOCAL;
}

/* One BLOCKS run: its bytes a buffer's worth at a time, into the disk. */
static int write_run(struct rmig_payload *p, struct rmig_rx_chan *c, size_t di,
		     const struct rmig_run *run, char *why, size_t whylen)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_load *l = dl(p);
	uint64_t bs = l->disks[di].block_size, per = RMIG_CHAN_SCRATCH / bs;

	for (uint64_t done = 0; done < run->count;) {
		uint64_t n = run->count - done < per ? run->count - done : per;
		uint64_t first = run->first + done;
		struct iovec v = { c->scratch, n * bs };
		int rc = ctx->link->ops->chan_recv(ctx->link, c->chan, &v, 1,
						   (int)ctx->cfg.link_timeout_ms);

		if (rc)
			return snprintf(why, whylen, "%s", ctx->link->err), rc;
		rc = ctx->be->ops->disk_write(ctx->be, di, first * bs, c->scratch, n * bs);
		if (rc)
			return io_failed(l, di, "writing", first * bs, rc, why, whylen);
		for (uint64_t k = 0; k < n; k++)
			l->digest[di][first + k] =
			    rmig_disk_block_digest((const char *)c->scratch + k * bs, bs);
		done += n;
	}
	return 0;
}

static int zero_run(struct rmig_payload *p, size_t di, const struct rmig_run *run, char *why,
		    size_t whylen)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_load *l = dl(p);
	uint64_t bs = l->disks[di].block_size;
	int rc = ctx->be->ops->disk_write_zeroes(ctx->be, di, run->first * bs, run->count * bs);

	if (rc)
		return io_failed(l, di, "zeroing", run->first * bs, rc, why, whylen);
	for (uint64_t k = 0; k < run->count; k++)
		l->digest[di][run->first + k] = l->zero_digest[di];
	return 0;
}

/* The header and runs of a BLOCKS/BLOCKS_ZERO frame, checked against the
 * disks and the round before anything is written. */
static int read_runs(struct rmig_payload *p, struct rmig_rx_chan *c,
		     const struct rmig_frame_hdr *fh, struct rmig_run *runs, uint32_t *nruns,
		     size_t *di, char *why, size_t whylen)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_load *l = dl(p);
	uint8_t sub[RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS];
	struct iovec v = { sub, RMIG_PAGES_HDR_LEN };
	struct rmig_pages_hdr ph;
	uint64_t blocks = 0;
	int rc;

	if (!atomic_load_explicit(&l->ready, memory_order_acquire))
		return snprintf(why, whylen, "%s frame before DISKS was acknowledged",
				rmig_msg_name(fh->type)),
		       -EBADMSG;
	rc = ctx->link->ops->chan_recv(ctx->link, c->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return snprintf(why, whylen, "%s", ctx->link->err), rc;
	rc = rmig_pages_hdr_decode(sub, fh, &ph, why, whylen);
	if (rc)
		return rc;
	v = (struct iovec){ sub + RMIG_PAGES_HDR_LEN, (size_t)ph.nruns * RMIG_RUN_LEN };
	rc = ctx->link->ops->chan_recv(ctx->link, c->chan, &v, 1, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return snprintf(why, whylen, "%s", ctx->link->err), rc;
	rc = rmig_pages_runs_decode(sub + RMIG_PAGES_HDR_LEN, fh, &ph, &l->layout, runs, di, why,
				    whylen);
	if (rc)
		return rc;
	if (ph.round != atomic_load(&l->round))
		return snprintf(why, whylen, "%s frame for round %u during round %u",
				rmig_msg_name(fh->type), ph.round, atomic_load(&l->round)),
		       -EBADMSG;
	for (uint32_t i = 0; i < ph.nruns; i++)
		blocks += runs[i].count;
	/* A round sends each block at most once: that bounds a peer's work. */
	if (atomic_fetch_add(&l->round_blocks, blocks) + blocks > l->total_blocks)
		return snprintf(why, whylen, "round %u sends more blocks than the disks' %" PRIu64,
				ph.round, l->total_blocks),
		       -EBADMSG;
	*nruns = ph.nruns;
	return 0;
}

int rmig_disk_load_frame(struct rmig_payload *p, struct rmig_rx_chan *c,
			 const struct rmig_frame_hdr *fh, char *why, size_t whylen)
{
	struct disk_load *l = dl(p);
	struct rmig_run runs[RMIG_MAX_RUNS];
	uint64_t blocks = 0;
	uint32_t nruns;
	size_t di;
	int rc = read_runs(p, c, fh, runs, &nruns, &di, why, whylen);

	if (!rc && fh->type == RMIG_MSG_BLOCKS && !c->scratch &&
	    !(c->scratch = malloc(RMIG_CHAN_SCRATCH))) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
	}
	if (!rc)
		atomic_store(&l->written, 1);
	for (uint32_t i = 0; !rc && i < nruns; i++) {
		rc = fh->type == RMIG_MSG_BLOCKS ? write_run(p, c, di, &runs[i], why, whylen)
						 : zero_run(p, di, &runs[i], why, whylen);
		blocks += runs[i].count;
	}
	if (rc)
		return rc;
	atomic_fetch_add(fh->type == RMIG_MSG_BLOCKS ? &l->blocks : &l->zero_blocks, blocks);
	atomic_fetch_add(&l->bytes, RMIG_FRAME_HDR_LEN + fh->len);
	return 0;
}

/* This round's figures into the stats (also of a round cut short: what
 * arrived crossed the wire). */
static void count_round(struct rmig_payload *p)
{
	struct disk_load *l = dl(p);

	p->ctx->stats.disk_blocks_sent += atomic_exchange(&l->blocks, 0);
	p->ctx->stats.disk_zero_blocks += atomic_exchange(&l->zero_blocks, 0);
	p->ctx->stats.bytes_sent += atomic_exchange(&l->bytes, 0);
	atomic_store(&l->round_blocks, 0);
}

void rmig_disk_load_round_done(struct rmig_payload *p)
{
	count_round(p);
	atomic_fetch_add(&dl(p)->round, 1);
}

void rmig_disk_load_rewind(struct rmig_payload *p, unsigned round)
{
	count_round(p);
	if (round)
		atomic_store(&dl(p)->round, round);
}

/* The roots of what was written here against the source's: equal, every
 * block holds what was last sent for it. */
static int verify(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_load *l = dl(p);

	if (!l->have_roots)
		return rmig_err(ctx, -EPROTO,
				"protocol error: COMPLETE asks for verification without the "
				"disks' digests");
	for (size_t i = 0; i < l->n; i++) {
		uint64_t root = rmig_disk_root(l->digest[i], l->nblocks[i]);

		if (root != l->root[i])
			return rmig_err(ctx, -EILSEQ,
					"verification failed: disk %s digest %016" PRIx64
					", source has %016" PRIx64,
					l->disks[i].name, root, l->root[i]);
	}
	ctx->stats.disks_verified = 1;
	return 0;
}

/* COMPLETE: verify (if asked), then make every disk durable before READY:
 * a destination host that dies after it must not lose what it acked. */
int rmig_disk_load_complete(struct rmig_payload *p, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_load *l = dl(p);
	int rc = 0;

	if (!atomic_load(&l->ready))
		return rmig_err(ctx, -EPROTO, "protocol error: COMPLETE before DISKS");
	if (m->u.complete.flags & RMIG_COMPLETE_VERIFY)
		rc = verify(p);
	for (size_t i = 0; !rc && i < l->n; i++) {
		rc = ctx->be->ops->disk_flush(ctx->be, i);
		if (rc)
			rc = rmig_err(ctx, rc, "flushing disk %s: %s", l->disks[i].name,
				      ctx->be->err);
	}
	return rc;
}

void rmig_disk_load_cleanup(struct rmig_payload *p)
{
	struct disk_load *l = dl(p);

	if (!l)
		return;
	if (atomic_load(&l->written) && l->n && p->ctx->stats.result != RMIG_RESULT_MIGRATED) {
		char detail[300];
		struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = detail };

		snprintf(detail, sizeof(detail),
			 "the guest did not start here: its disks here (%s%s) hold a partial "
			 "copy and are not usable; delete them or migrate again",
			 l->disks[0].name, l->n > 1 ? " and others" : "");
		rmig_emit(p->ctx, &ev);
	}
	for (size_t i = 0; i < RMIG_MAX_DISKS; i++)
		free(l->digest[i]);
	free(l);
	p->priv = NULL;
}
