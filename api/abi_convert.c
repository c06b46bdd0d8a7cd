/* abi_convert.c - a 0.2 config (abi_0_2.h) to today's and back, through the
 * public functions only. */
#include <errno.h>
#include <string.h>

#include "abi_0_2.h"
#include "last_error.h"
#include "rmig.h"

/* Where 0.2's members start in today's struct, and that all of them fit. */
#define OLD_AT offsetof(struct rmig_config, transport)
_Static_assert(OLD_AT == sizeof(size_t), "0.2's members follow the size member");
_Static_assert(offsetof(struct rmig_config, timeout_ms) + sizeof(unsigned) - OLD_AT ==
		   RMIG_CONFIG_0_2_USED,
	       "0.2's last member, timeout_ms, is where 0.2 had it");

static void from_0_2(struct rmig_config *cfg, const void *old_cfg)
{
	rmig_config_init(cfg, sizeof(*cfg));
	memcpy((char *)cfg + OLD_AT, old_cfg, RMIG_CONFIG_0_2_USED);
}

void rmig_abi_0_2_config_init(void *old_cfg)
{
	struct rmig_config cfg;

	rmig_config_init(&cfg, sizeof(cfg));
	memcpy(old_cfg, (char *)&cfg + OLD_AT, RMIG_CONFIG_0_2_USED);
}

int rmig_abi_0_2_ctx_create(struct rmig_ctx **out, const void *old_cfg, struct rmig_backend *be)
{
	struct rmig_config cfg;

	if (!old_cfg)
		return rmig_fail(-EINVAL, "rmig_ctx_create: no configuration");
	from_0_2(&cfg, old_cfg);
	return rmig_ctx_create(out, &cfg, be);
}

int rmig_abi_0_2_listener_create(struct rmig_listener **out, const void *old_cfg)
{
	struct rmig_config cfg;

	if (!old_cfg)
		return rmig_fail(-EINVAL, "rmig_listener_create: no configuration");
	from_0_2(&cfg, old_cfg);
	return rmig_listener_create(out, &cfg);
}
