/* struct rmig_config's size, as today's headers build it: a caller whose
 * struct is smaller (an older program, once members are added) gets the
 * defaults of what it lacks; one whose struct is larger sets nothing the
 * library does not know; a config that rmig_config_init never filled
 * (zeroed, or garbage) is refused by name; every refusal says why through rmig_last_error(). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rmig.h>

static int fail(const char *what, int rc)
{
	printf("FAIL %s: rc %d, rmig_last_error: \"%s\"\n", what, rc, rmig_last_error());
	return 1;
}

int main(void)
{
	struct {
		struct rmig_config cfg;
		unsigned char newer[64]; /* members of a newer header */
	} big;
	struct rmig_config cfg;
	struct rmig_backend *be;
	struct rmig_ctx *ctx = NULL;
	int rc;

	if ((rc = rmig_backend_open("nosuch", RMIG_ROLE_SOURCE, &be, NULL, 0)) != -ENOENT ||
	    !strstr(rmig_last_error(), "nosuch"))
		return fail("rmig_backend_open of an unknown backend", rc);
	if ((rc = rmig_backend_open("sim:size=4M", RMIG_ROLE_SOURCE, &be, NULL, 0)))
		return fail("rmig_backend_open", rc);

	/* The smallest struct there is: all defaults past it. */
	memset(&cfg, 0xff, sizeof(cfg));
	if ((rc = rmig_config_init(&cfg, RMIG_CONFIG_MIN_SIZE)) || cfg.size != RMIG_CONFIG_MIN_SIZE)
		return fail("rmig_config_init at RMIG_CONFIG_MIN_SIZE", rc);
	cfg.channels = 5;
	if ((rc = rmig_ctx_create(&ctx, &cfg, be)))
		return fail("rmig_ctx_create with the smallest size", rc);
	rmig_ctx_destroy(ctx);

	if ((rc = rmig_config_init(&cfg, RMIG_CONFIG_MIN_SIZE - 1)) != -EINVAL ||
	    !strstr(rmig_last_error(), "size"))
		return fail("rmig_config_init with too small a size", rc);

	/* A newer program's struct: the unknown tail zeroed by init is fine... */
	memset(&big, 0xff, sizeof(big));
	if ((rc = rmig_config_init(&big.cfg, sizeof(big))) || big.newer[63] != 0)
		return fail("rmig_config_init of a larger struct", rc);
	if ((rc = rmig_ctx_create(&ctx, &big.cfg, be)))
		return fail("rmig_ctx_create of a larger struct, tail zero", rc);
	rmig_ctx_destroy(ctx);
	/* ...a member set there that this library cannot honour is not. */
	big.newer[7] = 1;
	if ((rc = rmig_ctx_create(&ctx, &big.cfg, be)) != -E2BIG ||
	    !strstr(rmig_last_error(), "newer headers"))
		return fail("rmig_ctx_create of a larger struct with an unknown member set", rc);

	/* Never filled by rmig_config_init. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.channels = 2;
	cfg.max_rounds = 3;
	if ((rc = rmig_ctx_create(&ctx, &cfg, be)) != -EINVAL ||
	    !strstr(rmig_last_error(), "rmig_config_init"))
		return fail("rmig_ctx_create of a config without size", rc);
	if ((rc = rmig_listener_create((struct rmig_listener **)&ctx, &cfg)) != -EINVAL ||
	    !strstr(rmig_last_error(), "rmig_config_init"))
		return fail("rmig_listener_create of a config without size", rc);

	/* Never initialised at all: garbage size and create_err, refused
	 * without reading past the struct or writing through create_err. */
	memset(&cfg, 0x41, sizeof(cfg));
	if ((rc = rmig_ctx_create(&ctx, &cfg, be)) != -EINVAL ||
	    !strstr(rmig_last_error(), "rmig_config_init"))
		return fail("rmig_ctx_create of a config never initialised", rc);
	if ((rc = rmig_listener_create((struct rmig_listener **)&ctx, &cfg)) != -EINVAL ||
	    !strstr(rmig_last_error(), "rmig_config_init"))
		return fail("rmig_listener_create of a config never initialised", rc);
	if ((rc = rmig_config_init(&big.cfg, 1u << 20)) != -EINVAL ||
	    !strstr(rmig_last_error(), "size"))
		return fail("rmig_config_init with a size no struct has", rc);

	rmig_config_init(&cfg, sizeof(cfg));
	cfg.channels = 0;
	if ((rc = rmig_ctx_create(&ctx, &cfg, be)) != -EINVAL ||
	    !strstr(rmig_last_error(), "config.channels"))
		return fail("rmig_ctx_create with 0 channels", rc);
	if ((rc = rmig_set_downtime_ms(NULL, 0)) != -EINVAL || !*rmig_last_error())
		return fail("rmig_set_downtime_ms(NULL, 0)", rc);
	if ((rc = rmig_parse_size("12Q", &(uint64_t){ 0 })) != -EINVAL ||
	    !strstr(rmig_last_error(), "12Q"))
		return fail("rmig_parse_size(\"12Q\")", rc);
	rmig_backend_close(be);
	printf("sizes %zu..%zu taken, unknown members refused, messages through "
	       "rmig_last_error\n",
	       (size_t)RMIG_CONFIG_MIN_SIZE, sizeof(big));
	return 0;
}
