/* test_status.c - rmig_status_get() and the live limits on a context that
 * has not migrated yet: the sized struct (an older, smaller caller's
 * struct is filled only as far as it goes), bad arguments, the setters. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "rmig.h"

static struct rmig_ctx *ctx;
static struct rmig_backend *be;

static int setup(void **state)
{
	struct rmig_config cfg;
	char err[256];

	(void)state;
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.max_bandwidth = 50u << 20;
	cfg.downtime_ms = 120;
	if (rmig_backend_open("sim:size=4M", RMIG_ROLE_SOURCE, &be, err, sizeof(err)))
		return -1;
	return rmig_ctx_create(&ctx, &cfg, be);
}

static int teardown(void **state)
{
	(void)state;
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
	return 0;
}

static void test_full_struct(void **state)
{
	struct rmig_status st;

	(void)state;
	memset(&st, 0xa5, sizeof(st));
	st.size = sizeof(st);
	assert_int_equal(rmig_status_get(ctx, &st), 0);
	assert_int_equal(st.size, sizeof(st));
	assert_string_equal(st.phase, "idle");
	assert_int_equal(st.round, 0);
	assert_true(st.elapsed_ms == 0 && st.setup_ms == 0); /* not started */
	assert_true(st.max_bandwidth == 50u << 20);
	assert_int_equal(st.downtime_ms, 120);
}

/* A caller built when the struct ended at `round`: nothing past it is
 * written. */
static void test_older_caller(void **state)
{
	size_t old = offsetof(struct rmig_status, round) + sizeof(unsigned);
	unsigned char buf[sizeof(struct rmig_status) + 16];
	struct rmig_status *st = (struct rmig_status *)buf;

	(void)state;
	memset(buf, 0x5a, sizeof(buf));
	st->size = old;
	assert_int_equal(rmig_status_get(ctx, st), 0);
	assert_int_equal(st->size, old);
	assert_string_equal(st->phase, "idle");
	for (size_t i = old; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0x5a);
}

static void test_bad_arguments(void **state)
{
	struct rmig_status st = { .size = offsetof(struct rmig_status, phase) };

	(void)state;
	assert_int_equal(rmig_status_get(ctx, &st), -EINVAL); /* not even phase */
	assert_int_equal(rmig_status_get(ctx, NULL), -EINVAL);
	assert_int_equal(rmig_status_get(NULL, &st), -EINVAL);
	assert_int_equal(rmig_set_downtime_ms(ctx, 0), -EINVAL);
	assert_int_equal(rmig_set_downtime_ms(ctx, 3600001), -EINVAL);
	assert_int_equal(rmig_set_downtime_ms(NULL, 10), -EINVAL);
	assert_int_equal(rmig_set_max_bandwidth(NULL, 10), -EINVAL);
}

static void test_setters(void **state)
{
	struct rmig_status st = { .size = sizeof(st) };

	(void)state;
	assert_int_equal(rmig_set_max_bandwidth(ctx, 0), 0); /* no limit */
	assert_int_equal(rmig_set_downtime_ms(ctx, 45), 0);
	assert_int_equal(rmig_status_get(ctx, &st), 0);
	assert_true(st.max_bandwidth == 0);
	assert_int_equal(st.downtime_ms, 45);
	assert_int_equal(rmig_set_max_bandwidth(ctx, 123456789), 0);
	assert_int_equal(rmig_status_get(ctx, &st), 0);
	assert_true(st.max_bandwidth == 123456789);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_struct),
		cmocka_unit_test(test_older_caller),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_setters),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
