/* disk_save.c - a guest's disks, source side: the backend's dirty-block log,
 * round after round of dirty blocks onto the data channels (zero blocks as
 * runs without bytes), a digest of every block as it is sent
 * (config.verify), their roots before COMPLETE, and after the switch-over
 * an audit of the paused disks against what was sent.
 *
 * Two bitmaps per disk, as memory has: `dirty` (to send next) and `sent`
 * (sent in the round not yet acknowledged, sent again after a failover).
 *
 * Convergence: the disks' dirty bytes count with memory's. A guest that
 * writes its disks faster than half the link moves is limited through the
 * backend's disk_throttle (halved each round it still does), lifted again
 * when the migration ends, whatever its outcome.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "channels.h"
#include "disk.h"

#define MIN_THROTTLE (64u << 10) /* bytes/s: the guest's disks never stop */
/* While the hypervisor migrates its memory with the pause's share of disk
 * writes already waiting: four 4 KiB writes a second, slow but never
 * stopped (a guest whose request waits past its own I/O timeout, some
 * 30 s, fails it). */
#define HOLD_THROTTLE (16u << 10)

struct disk_save {
	const struct rmig_disk *disks; /* the backend's */
	size_t n;
	struct rmig_disks wire;
	uint64_t nblocks[RMIG_MAX_DISKS];
	uint64_t *dirty[RMIG_MAX_DISKS];
	uint64_t *sent[RMIG_MAX_DISKS];
	uint64_t *digest[RMIG_MAX_DISKS]; /* per block, of what was sent (config.verify) */
	uint64_t zero_digest[RMIG_MAX_DISKS];
	uint32_t round;
	atomic_uint_fast64_t blocks, zero_blocks; /* from the sender threads */
	/* Convergence. */
	int64_t t_round_ms; /* when the round whose writes save_pending counts began */
	uint64_t throttle_bps;
	int throttled;
};

static struct disk_save *ds(struct rmig_payload *p)
{
	return p->priv;
}

static int check_ops(struct rmig_ctx *ctx)
{
	const struct rmig_backend_ops *o = ctx->be->ops;

	if (!o->disk_fetch_dirty || !o->disk_read)
		return rmig_err(ctx, -EINVAL,
				"backend %s has disks but cannot track or read them (no "
				"disk_fetch_dirty or disk_read)",
				o->name);
	if (ctx->cfg.postcopy)
		return rmig_err(ctx, -EOPNOTSUPP,
				"post-copy with disks is not supported: a disk's last blocks "
				"must be at the destination before its guest starts");
	return 0;
}

int rmig_disk_save_setup(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	p->priv = s;
	rc = check_ops(ctx);
	if (!rc && (rc = ctx->be->ops->get_disks(ctx->be, &s->disks, &s->n)))
		rc = rmig_err(ctx, rc, "backend: disks: %s", ctx->be->err);
	if (!rc)
		rc = rmig_disk_describe(ctx, s->disks, s->n, &s->wire);
	if (rc)
		return rc;
	for (size_t i = 0; i < s->n; i++) {
		uint64_t words;

		s->nblocks[i] = s->disks[i].size / s->disks[i].block_size;
		words = rmig_bitmap_words(s->nblocks[i]);
		s->dirty[i] = calloc(words, 8);
		s->sent[i] = calloc(words, 8);
		if (ctx->cfg.verify)
			s->digest[i] = calloc(s->nblocks[i], 8);
		if (!s->dirty[i] || !s->sent[i] || (ctx->cfg.verify && !s->digest[i]))
			return rmig_err(ctx, -ENOMEM, "out of memory for disk %s's bitmaps",
					s->disks[i].name);
		/* "Never sent", unlike the destination's "never written" (0): a
		 * block the source failed to send makes the roots differ. */
		for (uint64_t b = 0; s->digest[i] && b < s->nblocks[i]; b++)
			s->digest[i][b] = UINT64_MAX;
		s->zero_digest[i] = rmig_disk_zero_digest(s->disks[i].block_size);
		ctx->stats.disk_bytes += s->disks[i].size;
	}
	ctx->stats.disks = (unsigned)s->n;
	ctx->payload_caps |= RMIG_CAP_DISKS;
	return 0;
}

static uint64_t pending_bytes(struct disk_save *s)
{
	uint64_t bytes = 0;

	for (size_t i = 0; i < s->n; i++)
		bytes +=
		    rmig_dirty_bitmap_count(s->dirty[i], s->nblocks[i]) * s->disks[i].block_size;
	return bytes;
}

/* Connected, the layout taken: the destination opens its disks (DISKS,
 * DISKS_ACK). Once: a failover keeps the destination's disks. */
int rmig_disk_save_handshake(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc;

	if (!m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	m->type = RMIG_MSG_DISKS;
	m->u.disks = ds(p)->wire;
	rc = rmig_ctrl_send(ctx, m);
	if (!rc)
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_DISKS_ACK, m, (int)ctx->cfg.link_timeout_ms);
	free(m);
	return rc;
}

/* Log writes from now on; everything is round 1's. */
int rmig_disk_save_start(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	int rc = ctx->be->ops->disk_start_dirty ? ctx->be->ops->disk_start_dirty(ctx->be) : 0;

	if (rc)
		return rmig_err(ctx, rc, "backend: starting the disks' dirty log: %s",
				ctx->be->err);
	for (size_t i = 0; i < s->n; i++)
		rmig_dirty_bitmap_set_all(s->dirty[i], s->nblocks[i]);
	rmig_status_plan_add(ctx, pending_bytes(s));
	s->t_round_ms = rmig_now_ms();
	return 0;
}

/* Queue every block set in map[] for the senders, items of at most
 * RMIG_DISK_ITEM_BYTES of blocks; the items point into map. */
static int queue_blocks(struct rmig_payload *p, struct rmig_tx_pool *tx, uint64_t *const *map)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	int rc = 0;

	for (size_t di = 0; di < s->n && !rc; di++) {
		uint64_t per = RMIG_DISK_ITEM_BYTES / s->disks[di].block_size, pos = 0, start, len;
		struct rmig_tx_item it = { p, (uint32_t)di, 0, 0, map[di] };

		if (!per)
			per = 1;
		while (!rc && rmig_dirty_bitmap_next_run(map[di], s->nblocks[di], pos, per, &start,
							 &len)) {
			it.first = start;
			it.span = len;
			rc = rmig_tx_push(tx, (unsigned)(di % ctx->ngroups), &it);
			pos = start + len;
		}
	}
	return rc;
}

int rmig_disk_save_round(struct rmig_payload *p, struct rmig_tx_pool *tx, unsigned round)
{
	struct disk_save *s = ds(p);

	s->round = round;
	s->t_round_ms = rmig_now_ms();
	/* A dry run's probe is memory's: the disks only count their writes. */
	if (!p->ctx->dry_run)
		queue_blocks(p, tx, s->dirty); /* a failure shows in rmig_tx_wait */
	for (size_t i = 0; i < s->n; i++) {
		uint64_t *t = s->sent[i];

		s->sent[i] = s->dirty[i];
		s->dirty[i] = t;
		memset(t, 0, rmig_bitmap_words(s->nblocks[i]) * 8);
	}
	return 0;
}

/* One frame of runs; data runs point into the channel's scratch buffer
 * at buf_first (the first block read). */
static int send_runs(struct rmig_payload *p, struct rmig_tx_chan *c, size_t di, uint8_t type,
		     const struct rmig_run *runs, uint32_t nruns, uint64_t buf_first)
{
	struct disk_save *s = ds(p);
	uint64_t bs = s->disks[di].block_size, blocks = 0;
	struct iovec data[RMIG_MAX_RUNS];
	size_t sub;

	if (!nruns)
		return 0;
	sub = rmig_pages_encode(c->hdr + RMIG_FRAME_HDR_LEN, sizeof(c->hdr) - RMIG_FRAME_HDR_LEN,
				s->disks[di].id, s->round, runs, nruns);
	for (uint32_t i = 0; i < nruns; i++) {
		data[i] = (struct iovec){ (char *)c->scratch + (runs[i].first - buf_first) * bs,
					  runs[i].count * bs };
		blocks += runs[i].count;
	}
	atomic_fetch_add(type == RMIG_MSG_BLOCKS ? &s->blocks : &s->zero_blocks, blocks);
	if (type == RMIG_MSG_BLOCKS_ZERO)
		rmig_status_plan_less(p->ctx, blocks * bs);
	return rmig_tx_send_frame(c, type, sub, data, type == RMIG_MSG_BLOCKS ? (int)nruns : 0);
}

static void add_run(struct rmig_run *runs, uint32_t *n, uint64_t block)
{
	if (*n && runs[*n - 1].first + runs[*n - 1].count == block)
		runs[*n - 1].count++;
	else
		runs[(*n)++] = (struct rmig_run){ block, 1 };
}

/* Blocks [first, first+count), read into the scratch buffer: split into
 * data and zero runs, digested, sent. count * block size fits the buffer;
 * count <= 2 * RMIG_MAX_RUNS, so that neither kind can have more runs
 * than a frame takes (they alternate at worst). */
static int send_read(struct rmig_payload *p, struct rmig_tx_chan *c, size_t di, uint64_t first,
		     uint64_t count)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	uint64_t bs = s->disks[di].block_size;
	struct rmig_run data[RMIG_MAX_RUNS], zero[RMIG_MAX_RUNS];
	uint32_t nd = 0, nz = 0;
	int rc = ctx->be->ops->disk_read(ctx->be, di, first * bs, c->scratch, count * bs);

	if (rc) {
		char why[200];

		snprintf(why, sizeof(why), "reading disk %s at offset %" PRIu64 ": %s",
			 s->disks[di].name, first * bs, strerror(-rc));
		rmig_tx_fail_local(c->pool, why);
		return RMIG_ERR_LOCAL;
	}
	for (uint64_t b = 0; b < count; b++) {
		const char *blk = (const char *)c->scratch + b * bs;
		int zero_blk = rmig_page_is_zero(blk, bs);

		if (s->digest[di])
			s->digest[di][first + b] =
			    zero_blk ? s->zero_digest[di] : rmig_disk_block_digest(blk, bs);
		add_run(zero_blk ? zero : data, zero_blk ? &nz : &nd, first + b);
	}
	rc = send_runs(p, c, di, RMIG_MSG_BLOCKS, data, nd, first);
	return rc ? rc : send_runs(p, c, di, RMIG_MSG_BLOCKS_ZERO, zero, nz, first);
}

/* On a sender thread: the item's blocks, a buffer's worth at a time. */
int rmig_disk_save_item(struct rmig_payload *p, struct rmig_tx_chan *c,
			const struct rmig_tx_item *it)
{
	struct disk_save *s = ds(p);
	uint64_t bs = s->disks[it->area].block_size, end = it->first + it->span, pos = it->first;
	uint64_t per = RMIG_CHAN_SCRATCH / bs, start, len;
	int rc = 0;

	if (per > 2 * RMIG_MAX_RUNS)
		per = 2 * RMIG_MAX_RUNS;
	if (!c->scratch && !(c->scratch = malloc(RMIG_CHAN_SCRATCH))) {
		rmig_tx_fail_local(c->pool, "out of memory for a disk buffer");
		return -ENOMEM;
	}
	while (!rc && rmig_dirty_bitmap_next_run(it->map, end, pos, per, &start, &len)) {
		rc = send_read(p, c, it->area, start, len);
		pos = start + len;
	}
	return rc;
}

/* The senders' counts of the round into the stats. */
static void count_sent(struct rmig_payload *p)
{
	p->ctx->stats.disk_blocks_sent += atomic_exchange(&ds(p)->blocks, 0);
	p->ctx->stats.disk_zero_blocks += atomic_exchange(&ds(p)->zero_blocks, 0);
}

void rmig_disk_save_acked(struct rmig_payload *p)
{
	struct disk_save *s = ds(p);

	for (size_t i = 0; i < s->n; i++)
		memset(s->sent[i], 0, rmig_bitmap_words(s->nblocks[i]) * 8);
	count_sent(p);
}

void rmig_disk_save_rewind(struct rmig_payload *p)
{
	struct disk_save *s = ds(p);

	for (size_t i = 0; i < s->n; i++) {
		size_t words = rmig_bitmap_words(s->nblocks[i]);

		for (size_t w = 0; w < words; w++)
			s->dirty[i][w] |= s->sent[i][w];
		memset(s->sent[i], 0, words * 8);
	}
	count_sent(p); /* sent, if not received: they crossed the wire all the same */
}

/* The guest writes its disks faster than half of what the link moves:
 * limit its disk I/O so that its dirty blocks come at about a quarter of
 * the link. What a limit does to the dirty rate depends on where the guest
 * writes (a 4 KiB write dirties a whole block), so each round it still
 * writes too fast scales the last limit by target / measured. */
static int maybe_throttle(struct rmig_payload *p, uint64_t dirty_bytes)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	int64_t ms = rmig_now_ms() - s->t_round_ms;
	struct rmig_event ev = { .type = RMIG_EV_WARNING };
	double rate, link, target;
	char detail[300];
	uint64_t limit;
	int rc;

	pthread_mutex_lock(&ctx->prog_lock);
	link = ctx->prog.bandwidth;
	pthread_mutex_unlock(&ctx->prog_lock);
	if (!ctx->be->ops->disk_throttle || s->round < 2 || ms <= 0 || link <= 0 || ctx->dry_run)
		return 0;
	rate = (double)dirty_bytes * 1000.0 / (double)ms;
	target = link / 4;
	if (rate <= link / 2)
		return 0;
	limit = (uint64_t)(s->throttled ? (double)s->throttle_bps * target / rate : target);
	if (limit < MIN_THROTTLE)
		limit = MIN_THROTTLE;
	if (s->throttled && limit >= s->throttle_bps)
		return 0;
	rc = ctx->be->ops->disk_throttle(ctx->be, limit);
	if (rc)
		return rmig_err(ctx, rc, "backend: disk throttle: %s", ctx->be->err);
	s->throttle_bps = limit;
	s->throttled = 1;
	ctx->stats.disk_throttle_bps = limit;
	snprintf(detail, sizeof(detail),
		 "disks: the guest dirties them at %.1f MB/s, the link moves %.1f MB/s: its disk "
		 "writes are limited to %.2f MB/s until the migration ends",
		 rate / 1e6, link / 1e6, (double)limit / 1e6);
	ev.detail = detail;
	rmig_emit(ctx, &ev);
	return 0;
}

/* The backend's dirty log into ours, counted. */
static int collect_dirty(struct rmig_payload *p, struct rmig_pending *out)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);

	*out = (struct rmig_pending){ 0 };
	for (size_t i = 0; i < s->n; i++) {
		uint64_t n;
		int rc = ctx->be->ops->disk_fetch_dirty(ctx->be, i, s->dirty[i]);

		if (rc)
			return rmig_err(ctx, rc, "backend: fetching disk %s's dirty log: %s",
					s->disks[i].name, ctx->be->err);
		n = rmig_dirty_bitmap_count(s->dirty[i], s->nblocks[i]);
		out->units += n;
		out->bytes += n * s->disks[i].block_size;
	}
	return 0;
}

int rmig_disk_save_pending(struct rmig_payload *p, struct rmig_pending *out)
{
	int rc = collect_dirty(p, out);

	return rc ? rc : maybe_throttle(p, out->bytes);
}

int rmig_disk_save_hold(struct rmig_payload *p, uint64_t budget)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	struct rmig_event ev = { .type = RMIG_EV_WARNING };
	struct rmig_pending pend;
	char detail[300];
	int rc = collect_dirty(p, &pend);

	if (rc || pend.bytes < budget || !ctx->be->ops->disk_throttle ||
	    (s->throttled && s->throttle_bps <= HOLD_THROTTLE))
		return rc;
	rc = ctx->be->ops->disk_throttle(ctx->be, HOLD_THROTTLE);
	if (rc)
		return rmig_err(ctx, rc, "backend: disk throttle: %s", ctx->be->err);
	s->throttle_bps = HOLD_THROTTLE;
	s->throttled = 1;
	ctx->stats.disk_throttle_bps = HOLD_THROTTLE;
	snprintf(detail, sizeof(detail),
		 "disks: %.1f MB written while the hypervisor migrates its memory, as much as "
		 "the pause can carry (%.1f MB): the guest's disk writes are limited to %.2f "
		 "MB/s until the migration ends",
		 (double)pend.bytes / 1e6, (double)budget / 1e6, (double)HOLD_THROTTLE / 1e6);
	ev.detail = detail;
	rmig_emit(ctx, &ev);
	return 0;
}

void rmig_disk_save_resend_all(struct rmig_payload *p)
{
	for (size_t i = 0; i < ds(p)->n; i++)
		rmig_dirty_bitmap_set_all(ds(p)->dirty[i], ds(p)->nblocks[i]);
}

/* After the device state: the disks' roots, before COMPLETE. */
int rmig_disk_save_complete(struct rmig_payload *p, struct rmig_msg *complete)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	struct rmig_msg *m;
	int rc;

	(void)complete;
	if (!ctx->cfg.verify)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	m->type = RMIG_MSG_DISK_DIGESTS;
	m->u.disk_digests.count = (uint32_t)s->n;
	for (size_t i = 0; i < s->n; i++)
		m->u.disk_digests.digest[i] = rmig_disk_root(s->digest[i], s->nblocks[i]);
	rc = rmig_ctrl_send(ctx, m);
	free(m);
	return rc;
}

/* Blocks of disk di whose bytes now differ from the digest of what was
 * sent; the first in *first. */
static int audit_disk(struct rmig_payload *p, size_t di, void *buf, uint64_t *bad, uint64_t *first)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	uint64_t bs = s->disks[di].block_size, per = RMIG_CHAN_SCRATCH / bs;

	for (uint64_t b = 0; b < s->nblocks[di]; b += per) {
		uint64_t n = s->nblocks[di] - b < per ? s->nblocks[di] - b : per;
		int rc = ctx->be->ops->disk_read(ctx->be, di, b * bs, buf, n * bs);

		if (rc)
			return rmig_err(ctx, rc, "audit: reading disk %s at offset %" PRIu64 ": %s",
					s->disks[di].name, b * bs, strerror(-rc));
		for (uint64_t k = 0; k < n; k++) {
			const char *blk = (const char *)buf + k * bs;
			uint64_t h = rmig_page_is_zero(blk, bs) ? s->zero_digest[di]
								: rmig_disk_block_digest(blk, bs);

			if (h != s->digest[di][b + k] && !(*bad)++)
				*first = b + k;
		}
	}
	return 0;
}

/* The guest runs at the destination; ours is paused with its disks as
 * they were at the pause: every block against what was sent for it. A
 * difference is a write the disk's dirty log missed. */
int rmig_disk_save_audit(struct rmig_payload *p)
{
	struct rmig_ctx *ctx = p->ctx;
	struct disk_save *s = ds(p);
	struct rmig_event ev = { .type = RMIG_EV_AUDIT };
	char detail[400];
	void *buf;
	int rc = 0;

	if (ctx->cfg.verify != RMIG_VERIFY_ON || !s->n)
		return 0;
	buf = malloc(RMIG_CHAN_SCRATCH);
	if (!buf)
		return rmig_err(ctx, -ENOMEM, "audit: out of memory");
	for (size_t di = 0; di < s->n && !rc; di++) {
		uint64_t bad = 0, first = 0;

		rc = audit_disk(p, di, buf, &bad, &first);
		if (rc)
			break;
		if (bad)
			snprintf(detail, sizeof(detail),
				 "audit FAILED: %" PRIu64 " blocks of disk %s at the pause differ "
				 "from what was sent (the first: block %" PRIu64
				 "): backend %s did "
				 "not report every write in its disks' dirty log",
				 bad, s->disks[di].name, first, ctx->be->ops->name);
		else
			snprintf(detail, sizeof(detail),
				 "audit passed: disk %s, %" PRIu64 " blocks, matches what was sent",
				 s->disks[di].name, s->nblocks[di]);
		if (bad)
			ctx->stats.audit = RMIG_AUDIT_FAILED;
		ev.detail = detail;
		rmig_emit(ctx, &ev);
	}
	free(buf);
	return rc;
}

void rmig_disk_save_cleanup(struct rmig_payload *p)
{
	struct disk_save *s = ds(p);

	if (!s)
		return;
	/* Whatever became of the migration, the guest's disks run free again. */
	if (s->throttled)
		p->ctx->be->ops->disk_throttle(p->ctx->be, 0);
	for (size_t i = 0; i < RMIG_MAX_DISKS; i++) {
		free(s->dirty[i]);
		free(s->sent[i]);
		free(s->digest[i]);
	}
	free(s);
	p->priv = NULL;
}
