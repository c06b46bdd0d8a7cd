/* A program as built against rmig.h 0.2.0 (tests/abi/include-0.2.0), whose
 * struct rmig_config had no size member, run against today's library: it
 * must bind the RMIG_0.1 versions and have every member it set land where
 * the library reads it. Migrates a sim guest to itself over loopback with
 * 3 channels and verify on, then checks that a bad config's message reaches
 * create_err. Prints one line; exit 0 when all holds. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <rmig.h>

static struct rmig_ctx *dst;
static struct rmig_listener *lst;
static int recv_rc = -1;

static void *receive(void *arg)
{
	(void)arg;
	recv_rc = rmig_recv_from(dst, lst);
	return NULL;
}

static int fail(const char *what, const char *why)
{
	printf("FAIL %s: %s\n", what, why);
	return 1;
}

int main(void)
{
	struct rmig_backend *sbe, *dbe;
	struct rmig_config cfg;
	struct rmig_ctx *src;
	char err[256] = "", create_err[256] = "";
	pthread_t t;
	int rc;

	rmig_config_init(&cfg);
	if (cfg.channels != 2 || cfg.downtime_ms != 300 || cfg.gid_index != -1 ||
	    strcmp(cfg.transport, "auto") != 0 || cfg.handshake_timeout_ms != 5000)
		return fail("rmig_config_init", "0.2's defaults are not where 0.2 had them");
	cfg.transport = "tcp";
	cfg.port = 0;
	cfg.channels = 3;
	cfg.timeout_ms = 60000; /* 0.2's last member */
	if (rmig_backend_open("sim:size=8M,seed=3", RMIG_ROLE_SOURCE, &sbe, err, sizeof(err)) ||
	    rmig_backend_open("sim", RMIG_ROLE_DEST, &dbe, err, sizeof(err)))
		return fail("rmig_backend_open", err);
	if (rmig_listener_create(&lst, &cfg))
		return fail("rmig_listener_create", "refused 0.2's config");
	if (rmig_ctx_create(&dst, &cfg, dbe))
		return fail("rmig_ctx_create (destination)", "refused 0.2's config");
	cfg.port = rmig_listener_port(lst);
	if (rmig_ctx_create(&src, &cfg, sbe))
		return fail("rmig_ctx_create (source)", "refused 0.2's config");
	pthread_create(&t, NULL, receive, NULL);
	rc = rmig_send(src);
	pthread_join(t, NULL);
	if (rc || recv_rc)
		return fail("migration", rmig_errmsg(rc ? src : dst));
	if (rmig_stats(src)->channels != 3 || !rmig_stats(src)->verified)
		return fail("migration", "config.channels or verify did not reach the library");

	cfg.channels = 0;
	cfg.create_err = create_err;
	cfg.create_err_len = sizeof(create_err);
	struct rmig_ctx *bad = NULL;
	if (rmig_ctx_create(&bad, &cfg, sbe) == 0 || !strstr(create_err, "config.channels"))
		return fail("a bad 0.2 config", create_err[0] ? create_err : "accepted");
	rmig_ctx_destroy(src);
	rmig_ctx_destroy(dst);
	rmig_listener_destroy(lst);
	rmig_backend_close(sbe);
	rmig_backend_close(dbe);
	printf("migrated over %u channels, verified; create_err: %s\n", 3, create_err);
	return 0;
}
