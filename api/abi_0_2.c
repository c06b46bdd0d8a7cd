/* abi_0_2.c - the RMIG_0.1 versions of the three functions that take a
 * struct rmig_config, for programs built against rmig.h 0.2, whose config
 * had no size member. The dynamic linker binds such a program to these
 * (their symbol version is the one it was linked with); programs built
 * since bind the RMIG_0.3 versions. This file does not include rmig.h: it
 * holds 0.2's definition under its own name, as released, so that the ABI
 * check (tests/e2e/t_abi.sh, abidiff) sees the old functions take exactly
 * the old type. */
#include <stddef.h>
#include <stdint.h>

#include "abi_0_2.h"

#define RMIG_COMPAT_API __attribute__((visibility("default")))

struct rmig_event;

/* As rmig.h 0.2.0 (commit edb9d22) declared them. */
enum rmig_no_converge { RMIG_NC_THROTTLE, RMIG_NC_FORCE, RMIG_NC_ABORT };
enum rmig_failover { RMIG_FAILOVER_TCP, RMIG_FAILOVER_NONE };
enum rmig_pin { RMIG_PIN_AUTO, RMIG_PIN_ALL, RMIG_PIN_STAGING };

struct rmig_config {
	const char *transport;
	const char *host;
	uint16_t port;
	unsigned channels;
	unsigned downtime_ms;
	unsigned max_rounds;
	enum rmig_no_converge on_no_converge;
	uint64_t max_bandwidth;
	int verify;
	unsigned accept_timeout_ms;
	unsigned link_timeout_ms;
	enum rmig_failover failover;
	unsigned failover_timeout_ms;
	unsigned commit_timeout_ms;
	const void *psk;
	size_t psk_len;
	int insecure;
	enum rmig_pin pin;
	const char *device;
	int gid_index;
	unsigned bench_ms;
	int postcopy;
	void (*on_event)(void *arg, const struct rmig_event *ev);
	void *event_arg;
	int prealloc;
	const char *link_options;
	const char *failover_transport;
	char *create_err;
	size_t create_err_len;
	unsigned handshake_timeout_ms;
	unsigned stall_timeout_ms;
	int tls;
	const char *tls_creds;
	const char *tls_hostname;
	unsigned timeout_ms;
};

_Static_assert(sizeof(struct rmig_config) == RMIG_CONFIG_0_2_SIZE &&
		   offsetof(struct rmig_config, timeout_ms) + sizeof(unsigned) ==
		       RMIG_CONFIG_0_2_USED,
	       "0.2's config is frozen");

RMIG_COMPAT_API void rmig_config_init_0_2(struct rmig_config *cfg);
RMIG_COMPAT_API int rmig_ctx_create_0_2(struct rmig_ctx **out, const struct rmig_config *cfg,
					struct rmig_backend *be);
RMIG_COMPAT_API int rmig_listener_create_0_2(struct rmig_listener **out,
					     const struct rmig_config *cfg);

__asm__(".symver rmig_config_init_0_2, rmig_config_init@RMIG_0.1");
__asm__(".symver rmig_ctx_create_0_2, rmig_ctx_create@RMIG_0.1");
__asm__(".symver rmig_listener_create_0_2, rmig_listener_create@RMIG_0.1");

void rmig_config_init_0_2(struct rmig_config *cfg)
{
	rmig_abi_0_2_config_init(cfg);
}

int rmig_ctx_create_0_2(struct rmig_ctx **out, const struct rmig_config *cfg,
			struct rmig_backend *be)
{
	return rmig_abi_0_2_ctx_create(out, cfg, be);
}

int rmig_listener_create_0_2(struct rmig_listener **out, const struct rmig_config *cfg)
{
	return rmig_abi_0_2_listener_create(out, cfg);
}
