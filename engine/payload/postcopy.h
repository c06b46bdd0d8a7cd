/* postcopy.h - post-copy: the destination runs the guest before all of its
 * memory arrived, and fetches a missing page when the guest touches it. */
#ifndef RMIG_POSTCOPY_H
#define RMIG_POSTCOPY_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* Destination side of one migration. */
struct rmig_postcopy;

struct rmig_postcopy_figures {
	uint64_t stale;	      /* pages DISCARDed: still at the source */
	uint64_t missing;     /* of those, not placed yet */
	uint64_t requested;   /* PAGE_REQUESTs sent (faults on missing pages) */
	uint64_t zeroed;      /* faults on never-written pages, mapped as zero here */
	uint64_t max_wait_ms; /* the longest a thread waited for a page it asked for */
};

/* Destination, at the handshake: can this process catch faults on private
 * anonymous memory (userfaultfd, MISSING mode)? 0, or a negative errno with
 * the reason in err. */
int rmig_postcopy_probe(char *err, size_t errlen);
/* For ctx's regions, which must be private anonymous memory
 * (RMIG_REGION_UNTOUCHED_ZERO): a dropped page must read as missing. 0 or a
 * negative errno with ctx->err set. */
int rmig_postcopy_create(struct rmig_ctx *ctx, struct rmig_postcopy **out);
/* Disarm and free; NULL is a no-op. */
void rmig_postcopy_destroy(struct rmig_postcopy *pc);

/* A DISCARD, before arming: drop the stale copies of its pages (they read
 * as missing from now on) and expect them again. Nothing may touch them
 * until armed: a read would map the zero page, which a fault never follows.
 * 0 or a negative errno with ctx->err set. */
int rmig_postcopy_discard(struct rmig_postcopy *pc, const struct rmig_msg *m);
/* Catch every fault on missing guest memory from now on (before READY: the
 * backend may touch memory as it loads the device state). 0 or a negative
 * errno with ctx->err set. */
int rmig_postcopy_arm(struct rmig_postcopy *pc);
/* 1 if the fault handler armed at all. */
int rmig_postcopy_armed(const struct rmig_postcopy *pc);
/* Are pages [first, first + count) of region index ri all ones the source
 * announced (DISCARD)? Only those may arrive. 0 or -EBADMSG with why. */
int rmig_postcopy_check(struct rmig_postcopy *pc, size_t ri, uint64_t first, uint64_t count,
			char *why, size_t whylen);
/* Place checked pages: their bytes from src, or zero if src is NULL. A page
 * already there came the other way (data channel or PAGE_DATA) with the same
 * bytes and is left alone. Any thread. 0 or a negative errno with why. */
int rmig_postcopy_place(struct rmig_postcopy *pc, size_t ri, uint64_t first, uint64_t count,
			const void *src, char *why, size_t whylen);
/* All pages in (or a failure): stop catching faults. Faulting threads then
 * go on; a page still missing reads as zero. Idempotent. */
void rmig_postcopy_disarm(struct rmig_postcopy *pc);
void rmig_postcopy_figures(struct rmig_postcopy *pc, struct rmig_postcopy_figures *f);
/* 1 and the reason in why if the fault handler failed (it then interrupts
 * the control stream's receive to be noticed). */
int rmig_postcopy_failed(struct rmig_postcopy *pc, char *why, size_t whylen);

/* The link is lost: requests for pages wait from now on (a send under way
 * ends first). */
void rmig_postcopy_hold(struct rmig_postcopy *pc);
/* A new link is up: send MISSING runs of every page still missing (the
 * source sends them again), then ask again for every page asked for and
 * not placed (answered first), and let requests go. *missing: how many. 0 or a negative
 * errno with ctx->err set (still held: call again on the next link). */
int rmig_postcopy_resume(struct rmig_postcopy *pc, uint64_t *missing);

/* Page runs into m, a DISCARD or MISSING of one region: page extends the
 * last run or starts one; a full message is sent first. Then flush sends
 * what is left. 0 or a negative errno with ctx->err set. */
int rmig_runs_add(struct rmig_ctx *ctx, struct rmig_msg *m, uint64_t page);
int rmig_runs_flush(struct rmig_ctx *ctx, struct rmig_msg *m);

/* Source: answer a PAGE_REQUEST with the page's bytes from guest memory
 * (paused: they no longer change). stale[ri] holds the pages DISCARDed; a
 * request for any other is a protocol error. Counts it in ctx->stats. 0 or
 * a negative errno with ctx->err set. */
int rmig_postcopy_answer(struct rmig_ctx *ctx, const struct rmig_msg *req, uint64_t *const *stale);

#endif
