/* disk.c - the disk payload: a guest's disks in pre-copy rounds of dirty
 * blocks beside its memory, over the same data channels. The source half
 * is in disk_save.c, the destination half in disk_load.c.
 *
 * On the wire: DISKS (the list, after the memory layout) and DISKS_ACK;
 * BLOCKS and BLOCKS_ZERO frames, laid out as PAGES and ZERO with block
 * indexes for pages; DISK_DIGESTS (a root per disk over per-block digests)
 * before COMPLETE when config.verify is on. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "xxhash_fast.h"

#include "disk.h"

/* Source: the backend has disks; destination: the source said it sends
 * some (RMIG_CAP_DISKS in its HELLO). */
static int disk_wanted(struct rmig_ctx *ctx)
{
	const struct rmig_disk *d;
	size_t n = 0;

	if (ctx->be->role == RMIG_ROLE_DEST)
		return (ctx->peer_caps & RMIG_CAP_DISKS) != 0;
	if (!ctx->be->ops->get_disks || ctx->be->ops->get_disks(ctx->be, &d, &n))
		return 0;
	return n > 0;
}

int rmig_disk_describe(struct rmig_ctx *ctx, const struct rmig_disk *d, size_t n,
		       struct rmig_disks *out)
{
	char why[256];

	memset(out, 0, sizeof(*out));
	if (n > RMIG_MAX_DISKS)
		return rmig_err(ctx, -EINVAL, "backend %s has %zu disks, at most %d migrate",
				ctx->be->ops->name, n, RMIG_MAX_DISKS);
	out->count = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		out->d[i].id = d[i].id;
		out->d[i].block_size = d[i].block_size;
		out->d[i].size = d[i].size;
		memcpy(out->d[i].identity, d[i].identity, RMIG_DISK_ID_LEN);
		/* Not NUL-padded by every backend: copy up to the NUL only. */
		strncpy(out->d[i].name, d[i].name, RMIG_DISK_NAME_LEN - 1);
	}
	if (rmig_disks_check(out, why, sizeof(why)))
		return rmig_err(ctx, -EINVAL, "backend %s: %s", ctx->be->ops->name, why);
	return 0;
}

uint64_t rmig_disk_root(const uint64_t *digest, uint64_t nblocks)
{
	return XXH3_64bits(digest, nblocks * sizeof(*digest));
}

uint64_t rmig_disk_block_digest(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}

uint64_t rmig_disk_zero_digest(size_t len)
{
	void *z = calloc(1, len);
	uint64_t h = z ? XXH3_64bits(z, len) : 0;

	free(z);
	return h;
}

const struct rmig_payload_ops rmig_disk_payload = {
	.size = sizeof(struct rmig_payload_ops),
	.name = "disk",
	.wanted = disk_wanted,
	.frame_types = 1u << RMIG_MSG_BLOCKS | 1u << RMIG_MSG_BLOCKS_ZERO,
	.msg_types = 1u << RMIG_MSG_DISKS | 1u << RMIG_MSG_DISK_DIGESTS,
	.save_setup = rmig_disk_save_setup,
	.save_start = rmig_disk_save_start,
	.save_round = rmig_disk_save_round,
	.save_item = rmig_disk_save_item,
	.save_acked = rmig_disk_save_acked,
	.save_rewind = rmig_disk_save_rewind,
	.save_pending = rmig_disk_save_pending,
	.save_resend_all = rmig_disk_save_resend_all,
	.save_complete = rmig_disk_save_complete,
	.save_cleanup = rmig_disk_save_cleanup,
	.load_setup = rmig_disk_load_setup,
	.load_frame = rmig_disk_load_frame,
	.load_message = rmig_disk_load_message,
	.load_round_done = rmig_disk_load_round_done,
	.load_rewind = rmig_disk_load_rewind,
	.load_complete = rmig_disk_load_complete,
	.load_cleanup = rmig_disk_load_cleanup,
	.save_audit = rmig_disk_save_audit,
	.save_handshake = rmig_disk_save_handshake,
	.save_hold = rmig_disk_save_hold,
};
