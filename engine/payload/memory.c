/* memory.c - the guest-memory payload: pre-copy rounds of dirty pages,
 * post-copy as its switch-over variant. The source half is in
 * memory_save.c, the destination half in memory_load.c. */
#include "memory.h"

/* Every backend but one whose hypervisor migrates itself has regions. */
static int memory_wanted(struct rmig_ctx *ctx)
{
	return ctx->be->ops->stream_open == NULL;
}

const struct rmig_payload_ops rmig_memory_payload = {
	.size = sizeof(struct rmig_payload_ops),
	.name = "memory",
	.wanted = memory_wanted,
	.frame_types = 1u << RMIG_MSG_PAGES | 1u << RMIG_MSG_ZERO,
	.msg_types = 1u << RMIG_MSG_DISCARD | 1u << RMIG_MSG_PAGE_REQUEST |
		     1u << RMIG_MSG_PAGE_DATA | 1u << RMIG_MSG_MISSING,
	.save_setup = rmig_mem_save_setup,
	.save_start = rmig_mem_save_start,
	.save_round = rmig_mem_save_round,
	.save_item = rmig_mem_save_item,
	.save_acked = rmig_mem_save_acked,
	.save_rewind = rmig_mem_save_rewind,
	.save_pending = rmig_mem_save_pending,
	.save_resend_all = rmig_mem_save_resend_all,
	.save_pause = rmig_mem_save_pause,
	.save_complete = rmig_mem_save_complete,
	.save_announce = rmig_mem_save_announce,
	.save_message = rmig_mem_save_message,
	.save_cleanup = rmig_mem_save_cleanup,
	.load_setup = rmig_mem_load_setup,
	.load_frame = rmig_mem_load_frame,
	.load_message = rmig_mem_load_message,
	.load_round_done = rmig_mem_load_round_done,
	.load_rewind = rmig_mem_load_rewind,
	.load_complete = rmig_mem_load_complete,
	.load_remote = rmig_mem_load_remote,
	.load_failed = rmig_mem_load_failed,
	.load_postcopy_end = rmig_mem_load_postcopy_end,
	.load_cleanup = rmig_mem_load_cleanup,
	.save_audit = rmig_mem_save_audit,
	.load_suspend = rmig_mem_load_suspend,
	.load_resume = rmig_mem_load_resume,
};
