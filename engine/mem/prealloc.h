/* prealloc.h - populate the destination's guest memory up front (config.prealloc). */
#ifndef RMIG_PREALLOC_H
#define RMIG_PREALLOC_H

struct rmig_ctx;

/* Fault in every page of ctx->regions (MADV_POPULATE_WRITE, one thread per
 * CPU), after checking that the host (and the cgroup) has the memory;
 * starting(ctx), if given, is called between the check and the work.
 * Sets ctx->stats.prealloc_ms. 0, or a negative errno with ctx->err set. */
int rmig_prealloc_regions(struct rmig_ctx *ctx, void (*starting)(struct rmig_ctx *ctx));

#endif
