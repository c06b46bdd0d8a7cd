/* abi_0_2.h - between the entry points kept for programs built against
 * rmig.h 0.2 (abi_0_2.c, which sees only 0.2's struct rmig_config) and the
 * current library (abi_convert.c, which sees only today's). A 0.2 config is
 * today's without its leading size member: the same members at the same
 * distances from one another, so it travels as bytes. */
#ifndef RMIG_ABI_0_2_H
#define RMIG_ABI_0_2_H

#include <stddef.h>

struct rmig_ctx;
struct rmig_backend;
struct rmig_listener;

/* 0.2's struct rmig_config: its size, and where its last member
 * (timeout_ms) ends; the bytes between are padding, never copied. */
#define RMIG_CONFIG_0_2_SIZE 216
#define RMIG_CONFIG_0_2_USED 212

void rmig_abi_0_2_config_init(void *old_cfg);
int rmig_abi_0_2_ctx_create(struct rmig_ctx **out, const void *old_cfg, struct rmig_backend *be);
int rmig_abi_0_2_listener_create(struct rmig_listener **out, const void *old_cfg);

#endif
