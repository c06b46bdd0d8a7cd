/* test_session.c - the phase tables of both roles (engine/session/machine.c):
 * which control messages each phase accepts, which phases may follow
 * which, and that the destination has a handler for every message a
 * phase of its main loop accepts. The expected sets are written out here
 * independently of the tables, from the protocol as README.md describes it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"
#include "machine.h"
#include "payload.h"
#include "rmig_backend.h"

#define NTYPES 64
#define ANY_ROLE_MSGS ((1ull << RMIG_MSG_HEARTBEAT) | (1ull << RMIG_MSG_ABORT))

struct expect {
	unsigned phase;
	const char *name;
	const uint8_t *msgs;  /* 0-terminated */
	const unsigned *next; /* terminated by ~0u */
};

#define L(...) ((const uint8_t[]){ __VA_ARGS__, 0 })
#define NONE ((const uint8_t[]){ 0 })
#define P(...) ((const unsigned[]){ __VA_ARGS__, ~0u })
#define END ((const unsigned[]){ ~0u })

static const struct expect src[] = {
	{ RMIG_SRC_IDLE, "idle", NONE, P(RMIG_SRC_CONNECTING, RMIG_SRC_FAILED) },
	{ RMIG_SRC_CONNECTING, "connecting",
	  L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_RAILS, RMIG_MSG_REGIONS_ACK, RMIG_MSG_MEM_KEYS,
	    RMIG_MSG_DISKS_ACK),
	  P(RMIG_SRC_PRECOPY, RMIG_SRC_FAILED, RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN,
	    RMIG_SRC_DRY_RUN) },
	{ RMIG_SRC_PRECOPY, "pre-copy", L(RMIG_MSG_ROUND_ACK, RMIG_MSG_STREAM_ACK),
	  P(RMIG_SRC_FAILOVER, RMIG_SRC_STOP_AND_COPY, RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN,
	    RMIG_SRC_DRY_RUN) },
	{ RMIG_SRC_FAILOVER, "failover",
	  L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_RAILS, RMIG_MSG_REGIONS_ACK, RMIG_MSG_MEM_KEYS,
	    RMIG_MSG_STREAM_ACK),
	  P(RMIG_SRC_PRECOPY, RMIG_SRC_STOP_AND_COPY, RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN) },
	{ RMIG_SRC_STOP_AND_COPY, "stop-and-copy",
	  L(RMIG_MSG_ROUND_ACK, RMIG_MSG_READY, RMIG_MSG_PAGE_REQUEST, RMIG_MSG_STREAM_ACK),
	  P(RMIG_SRC_COMMIT, RMIG_SRC_FAILOVER, RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN) },
	{ RMIG_SRC_COMMIT, "commit", L(RMIG_MSG_READY, RMIG_MSG_PAGE_REQUEST),
	  P(RMIG_SRC_AWAITING_STARTED, RMIG_SRC_ASKING, RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN) },
	{ RMIG_SRC_AWAITING_STARTED, "awaiting-started", L(RMIG_MSG_STARTED, RMIG_MSG_PAGE_REQUEST),
	  P(RMIG_SRC_MIGRATED, RMIG_SRC_POSTCOPY, RMIG_SRC_RECOVERING, RMIG_SRC_ASKING,
	    RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN) },
	{ RMIG_SRC_POSTCOPY, "post-copy", L(RMIG_MSG_PAGE_REQUEST, RMIG_MSG_ROUND_ACK),
	  P(RMIG_SRC_MIGRATED, RMIG_SRC_RECOVERING, RMIG_SRC_LOST) },
	{ RMIG_SRC_RECOVERING, "recovering",
	  L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_RAILS, RMIG_MSG_REGIONS_ACK,
	    RMIG_MSG_PAGE_REQUEST, RMIG_MSG_MISSING, RMIG_MSG_RECOVER),
	  P(RMIG_SRC_POSTCOPY, RMIG_SRC_MIGRATED, RMIG_SRC_ASKING, RMIG_SRC_LOST) },
	{ RMIG_SRC_ASKING, "asking", L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_STARTED),
	  P(RMIG_SRC_MIGRATED, RMIG_SRC_ROLLED_BACK, RMIG_SRC_UNKNOWN) },
	{ RMIG_SRC_MIGRATED, "migrated", NONE, END },
	{ RMIG_SRC_ROLLED_BACK, "rolled-back", NONE, END },
	{ RMIG_SRC_FAILED, "failed", NONE, END },
	{ RMIG_SRC_UNKNOWN, "unknown", NONE, END },
	{ RMIG_SRC_LOST, "lost", NONE, END },
	{ RMIG_SRC_DRY_RUN, "dry-run", NONE, END },
};

static const struct expect dst[] = {
	{ RMIG_DST_IDLE, "idle", NONE, P(RMIG_DST_LISTENING, RMIG_DST_DISCARDED) },
	{ RMIG_DST_LISTENING, "listening", L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_REGIONS),
	  P(RMIG_DST_PREALLOCATING, RMIG_DST_RECEIVING, RMIG_DST_DISCARDED) },
	{ RMIG_DST_PREALLOCATING, "preallocating", NONE,
	  P(RMIG_DST_RECEIVING, RMIG_DST_DISCARDED) },
	{ RMIG_DST_RECEIVING, "receiving",
	  L(RMIG_MSG_STREAM, RMIG_MSG_STREAM_ACK, RMIG_MSG_ROUND_END, RMIG_MSG_STATE,
	    RMIG_MSG_DISCARD, RMIG_MSG_DISKS),
	  P(RMIG_DST_AWAITING_RESUME, RMIG_DST_STOP_AND_COPY, RMIG_DST_DISCARDED,
	    RMIG_DST_DRY_RUN) },
	{ RMIG_DST_AWAITING_RESUME, "awaiting-resume",
	  L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_REGIONS),
	  P(RMIG_DST_RECEIVING, RMIG_DST_DISCARDED) },
	{ RMIG_DST_STOP_AND_COPY, "stop-and-copy",
	  L(RMIG_MSG_COMPLETE, RMIG_MSG_DISCARD, RMIG_MSG_DISK_DIGESTS),
	  P(RMIG_DST_READY, RMIG_DST_AWAITING_RESUME, RMIG_DST_DISCARDED) },
	{ RMIG_DST_READY, "ready", L(RMIG_MSG_CHECK, RMIG_MSG_GO, RMIG_MSG_PAGE_DATA),
	  P(RMIG_DST_MIGRATED, RMIG_DST_POSTCOPY, RMIG_DST_AWAITING_QUESTION, RMIG_DST_DISCARDED) },
	{ RMIG_DST_POSTCOPY, "post-copy", L(RMIG_MSG_ROUND_END, RMIG_MSG_PAGE_DATA),
	  P(RMIG_DST_MIGRATED, RMIG_DST_RECOVERING, RMIG_DST_LOST) },
	{ RMIG_DST_RECOVERING, "recovering", L(RMIG_MSG_HELLO, RMIG_MSG_AUTH, RMIG_MSG_REGIONS),
	  P(RMIG_DST_POSTCOPY, RMIG_DST_MIGRATED, RMIG_DST_LOST) },
	{ RMIG_DST_MIGRATED, "migrated", L(RMIG_MSG_DONE, RMIG_MSG_PAGE_DATA),
	  P(RMIG_DST_AWAITING_QUESTION) },
	{ RMIG_DST_AWAITING_QUESTION, "awaiting-question", L(RMIG_MSG_HELLO, RMIG_MSG_AUTH),
	  P(RMIG_DST_DISCARDED) },
	{ RMIG_DST_DISCARDED, "discarded", NONE, END },
	{ RMIG_DST_LOST, "lost", NONE, END },
	{ RMIG_DST_DRY_RUN, "dry-run", NONE, END },
};

static uint64_t mask_of(const uint8_t *l)
{
	uint64_t m = 0;

	for (; *l; l++)
		m |= 1ull << *l;
	return m;
}

static uint32_t phases_of(const unsigned *l)
{
	uint32_t m = 0;

	for (; *l != ~0u; l++)
		m |= 1u << *l;
	return m;
}

/* Every (phase, message) pair and every (phase, phase) pair of a role. */
static void walk(const struct rmig_machine *m, const struct expect *e, size_t n)
{
	assert_int_equal(m->nphases, n);
	for (size_t i = 0; i < n; i++) {
		uint64_t msgs = mask_of(e[i].msgs) | ANY_ROLE_MSGS;
		uint32_t next = phases_of(e[i].next);

		assert_int_equal(e[i].phase, i);
		assert_string_equal(rmig_phase_name(m, e[i].phase), e[i].name);
		for (unsigned t = 0; t < NTYPES; t++)
			if (rmig_phase_accepts(m, e[i].phase, (uint8_t)t) != (int)((msgs >> t) & 1))
				fail_msg("%s phase %s: %s is %s", m->role, e[i].name,
					 rmig_msg_name((uint8_t)t),
					 (msgs >> t) & 1 ? "refused, should be accepted"
							 : "accepted, should be refused");
		for (unsigned to = 0; to < n; to++)
			if (rmig_phase_may_enter(m, e[i].phase, to) != (int)((next >> to) & 1))
				fail_msg("%s: %s -> %s is %s", m->role, e[i].name,
					 rmig_phase_name(m, to),
					 (next >> to) & 1 ? "refused, should be allowed"
							  : "allowed, should be refused");
	}
	/* Out of range: nothing. */
	assert_false(rmig_phase_accepts(m, m->nphases, RMIG_MSG_HELLO));
	assert_false(rmig_phase_may_enter(m, m->nphases, 0));
	assert_false(rmig_phase_may_enter(m, 0, m->nphases));
	assert_false(rmig_phase_accepts(m, 0, 200));
}

static void test_source_table(void **state)
{
	(void)state;
	walk(&rmig_src_machine, src, sizeof(src) / sizeof(src[0]));
}

static void test_dest_table(void **state)
{
	(void)state;
	walk(&rmig_dst_machine, dst, sizeof(dst) / sizeof(dst[0]));
}

/* The destination's main loop (receiving .. migrated) acts on every
 * message those phases accept, and has no handler for the handshake's. */
static void test_dest_handlers(void **state)
{
	static const unsigned loop[] = { RMIG_DST_RECEIVING, RMIG_DST_STOP_AND_COPY, RMIG_DST_READY,
					 RMIG_DST_POSTCOPY, RMIG_DST_MIGRATED };

	(void)state;
	for (size_t i = 0; i < sizeof(loop) / sizeof(loop[0]); i++)
		for (unsigned t = 1; t < NTYPES; t++)
			if (t != RMIG_MSG_HEARTBEAT && t != RMIG_MSG_ABORT &&
			    rmig_phase_accepts(&rmig_dst_machine, loop[i], (uint8_t)t) &&
			    !rmig_dest_handles((uint8_t)t))
				fail_msg("phase %s accepts %s but nothing handles it",
					 rmig_phase_name(&rmig_dst_machine, loop[i]),
					 rmig_msg_name((uint8_t)t));
	assert_false(rmig_dest_handles(RMIG_MSG_HELLO));
	assert_false(rmig_dest_handles(RMIG_MSG_PAGES));
	assert_false(rmig_dest_handles(RMIG_MSG_BLOCKS));
	assert_true(rmig_dest_handles(RMIG_MSG_DISKS));
	assert_false(rmig_dest_handles(255));
}

static struct {
	int n;
	char phases[8][32];
	char warning[200];
} seen;

static void on_event(void *arg, const struct rmig_event *ev)
{
	(void)arg;
	if (ev->type == RMIG_EV_PHASE && seen.n < 8)
		snprintf(seen.phases[seen.n++], sizeof(seen.phases[0]), "%s", ev->phase);
	if (ev->type == RMIG_EV_WARNING)
		snprintf(seen.warning, sizeof(seen.warning), "%s", ev->detail);
}

/* A transition the table forbids changes nothing and says why in a warning
 * (not in the error, which may be the real failure being reported); an allowed
 * one emits the phase event and shows in rmig_progress(). */
static void test_enter(void **state)
{
	struct rmig_config cfg;
	struct rmig_backend *be;
	struct rmig_ctx *ctx;
	struct rmig_progress p;

	(void)state;
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.on_event = on_event;
	assert_int_equal(rmig_backend_open("sim:size=1M", RMIG_ROLE_SOURCE, &be, NULL, 0), 0);
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	rmig_phase_init(ctx, &rmig_src_machine);
	assert_int_equal(rmig_phase_enter(ctx, RMIG_SRC_COMMIT), -EINVAL);
	assert_non_null(strstr(seen.warning, "source phase idle cannot go to commit"));
	assert_string_equal(rmig_errmsg(ctx), ""); /* the error being reported stays */
	assert_int_equal(rmig_phase(ctx), RMIG_SRC_IDLE);
	assert_int_equal(seen.n, 0);
	assert_int_equal(rmig_phase_enter(ctx, RMIG_SRC_CONNECTING), 0);
	assert_int_equal(rmig_phase_enter(ctx, RMIG_SRC_PRECOPY), 0);
	assert_int_equal(seen.n, 2);
	assert_string_equal(seen.phases[1], "pre-copy");
	rmig_progress(ctx, &p);
	assert_string_equal(p.phase, "pre-copy");
	/* Terminal: nothing follows. */
	assert_int_equal(rmig_phase_enter(ctx, RMIG_SRC_ROLLED_BACK), 0);
	assert_int_equal(rmig_phase_enter(ctx, RMIG_SRC_PRECOPY), -EINVAL);
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
}

static int wanted_never(struct rmig_ctx *ctx)
{
	(void)ctx;
	return 0;
}

static int wanted_always(struct rmig_ctx *ctx)
{
	(void)ctx;
	return 1;
}

/* Payload kinds: the table's size is checked, the registry keeps its own
 * copy, and a migration carries every kind whose wanted() says so, in
 * registration order. */
static void test_payload_registry(void **state)
{
	struct rmig_payload_ops extra = { .size = sizeof(extra),
					  .name = "extra",
					  .wanted = wanted_never };
	struct rmig_payload_set ps;
	struct rmig_config cfg;
	struct rmig_backend *be;
	struct rmig_ctx *ctx;

	(void)state;
	extra.size = 0;
	assert_int_equal(rmig_payload_register(&extra), -EINVAL);
	extra.size = sizeof(extra) + 8;
	assert_int_equal(rmig_payload_register(&extra), -EINVAL);
	extra.size = sizeof(extra);
	extra.wanted = NULL;
	assert_int_equal(rmig_payload_register(&extra), -EINVAL);
	extra.wanted = wanted_never;
	assert_int_equal(rmig_payload_register(&extra), 0);
	assert_int_equal(rmig_payload_register(&extra), -EEXIST);

	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	assert_int_equal(rmig_backend_open("sim:size=1M", RMIG_ROLE_SOURCE, &be, NULL, 0), 0);
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	assert_int_equal(rmig_payloads_choose(ctx, &ps), 0);
	assert_int_equal(ps.n, 1);
	assert_string_equal(ps.p[0].ops->name, "memory");

	/* The registry copied the table: changing ours changes nothing... */
	extra.wanted = wanted_always;
	assert_int_equal(rmig_payloads_choose(ctx, &ps), 0);
	assert_int_equal(ps.n, 1);
	/* ...and a kind that wants this guest rides along after memory. */
	extra.name = "extra2";
	assert_int_equal(rmig_payload_register(&extra), 0);
	assert_int_equal(rmig_payloads_choose(ctx, &ps), 0);
	assert_int_equal(ps.n, 2);
	assert_string_equal(ps.p[0].ops->name, "memory");
	assert_string_equal(ps.p[1].ops->name, "extra2");
	assert_ptr_equal(ps.p[1].ctx, ctx);
	assert_null(ps.p[1].ops->save_round);
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
}

static uint8_t tiny_mem[4096];
static const struct rmig_region tiny_region = {
	.id = 1, .page_size = 4096, .len = 4096, .host = tiny_mem
};

static int tiny_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	(void)be, (void)args, (void)role;
	return 0;
}

static void tiny_destroy(struct rmig_backend *be)
{
	(void)be;
}

static int tiny_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	(void)be;
	*r = &tiny_region;
	*n = 1;
	return 0;
}

/* A backend without the ops a role calls unasked is refused before
 * anything starts, naming the op, instead of crashing mid-migration. */
static void test_backend_without_ops(void **state)
{
	static const struct rmig_backend_ops bare = { .size = sizeof(bare),
						      .name = "bare",
						      .create = tiny_create,
						      .destroy = tiny_destroy,
						      .get_regions = tiny_regions };
	struct rmig_config cfg;
	struct rmig_backend *be;
	struct rmig_ctx *ctx;

	(void)state;
	assert_int_equal(rmig_backend_register(&bare), 0);
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.port = 1; /* nothing may be tried on it */
	assert_int_equal(rmig_backend_open("bare", RMIG_ROLE_SOURCE, &be, NULL, 0), 0);
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	assert_int_equal(rmig_send(ctx), -EINVAL);
	assert_non_null(
	    strstr(rmig_errmsg(ctx), "backend bare cannot be a source: it has no resume op"));
	assert_int_equal(rmig_stats(ctx)->result, RMIG_RESULT_FAILED);
	rmig_ctx_destroy(ctx);
	cfg.port = 0;
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	assert_int_equal(rmig_recv(ctx), -EINVAL);
	assert_non_null(
	    strstr(rmig_errmsg(ctx),
		   "backend bare cannot be a destination: it has no start (nor resume) op"));
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_source_table),	 cmocka_unit_test(test_dest_table),
		cmocka_unit_test(test_dest_handlers),	 cmocka_unit_test(test_enter),
		cmocka_unit_test(test_payload_registry), cmocka_unit_test(test_backend_without_ops),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
