/* test_converge.c - the pre-copy stop decision, the downtime estimate, and
 * rmig_parse_size. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "converge.h"
#include "rmig.h"

#define MB (1ull << 20)

/* A round that is not converging: dirtied more than half of what was sent. */
static struct rmig_converge_input slow_round(unsigned round, unsigned max_rounds,
					     enum rmig_no_converge policy)
{
	return (struct rmig_converge_input){ .round = round,
					     .max_rounds = max_rounds,
					     .downtime_ms = 300,
					     .policy = policy,
					     .can_throttle = 1,
					     .expected_ms = 5000,
					     .sent_bytes = 100 * MB,
					     .dirtied_bytes = 80 * MB };
}

/* Expected downtime from figures, as the sender computes it. */
static double expected(uint64_t dirty_bytes, double bw)
{
	return rmig_expected_downtime_ms(dirty_bytes, bw, 0);
}

static void test_switch_when_downtime_fits(void **state)
{
	static const enum rmig_no_converge policies[] = { RMIG_NC_THROTTLE, RMIG_NC_FORCE,
							  RMIG_NC_ABORT };

	(void)state;
	for (size_t p = 0; p < 3; p++) {
		struct rmig_converge_state st = { 0 };
		struct rmig_converge_input in = slow_round(1, 30, policies[p]);

		/* 10 MiB dirty at 100 MiB/s: 100 ms <= 300 ms. */
		in.expected_ms = expected(10 * MB, 100.0 * MB);
		assert_true(fabs(in.expected_ms - 100.0) < 1e-9);
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
		/* Exactly at the limit still switches. */
		in.expected_ms = expected(30 * MB, 100.0 * MB);
		assert_true(in.expected_ms == 300.0);
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
		/* Nothing dirty at all. */
		in.expected_ms = expected(0, 100.0 * MB);
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
		/* Fitting wins even when out of rounds. */
		in.round = 30;
		in.expected_ms = 299.9;
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
		in.round = 31;
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
		/* A switch changes no throttle. */
		assert_int_equal(st.throttle_pct, 0);
	}
}

static void test_continue_when_not_fitting(void **state)
{
	struct rmig_converge_state st = { 0 };
	struct rmig_converge_input in = slow_round(1, 30, RMIG_NC_THROTTLE);

	(void)state;
	/* 31 MiB at 100 MiB/s: 310 ms > 300 ms; the guest dirties little. */
	in.expected_ms = expected(31 * MB, 100.0 * MB);
	in.dirtied_bytes = 10 * MB;
	for (unsigned r = 1; r < 30; r++) {
		in.round = r;
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
		assert_int_equal(st.throttle_pct, 0);
		assert_int_equal(st.slow_rounds, 0);
	}
	/* Just above the limit. */
	in.expected_ms = 300.0001;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
}

static void test_out_of_rounds(void **state)
{
	struct rmig_converge_state st = { 0 };
	struct rmig_converge_input in;

	(void)state;
	in = slow_round(30, 30, RMIG_NC_ABORT);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_ABORT);
	in.round = 31;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_ABORT);

	in = slow_round(30, 30, RMIG_NC_FORCE);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_FORCE);

	/* With the throttle policy, running out of rounds forces the switch
	 * (throttling happens before, see test_throttle_steps). */
	memset(&st, 0, sizeof(st));
	in = slow_round(30, 30, RMIG_NC_THROTTLE);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_FORCE);
	assert_int_equal(st.throttle_pct, 0);

	/* One round before the limit: not yet. */
	in = slow_round(29, 30, RMIG_NC_ABORT);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	in = slow_round(29, 30, RMIG_NC_FORCE);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);

	/* max_rounds 1: the first round decides. */
	memset(&st, 0, sizeof(st));
	in = slow_round(1, 1, RMIG_NC_ABORT);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_ABORT);
	in = slow_round(1, 1, RMIG_NC_FORCE);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_FORCE);
}

/* When the fixed part (verification) alone exceeds the limit and the memory
 * part is negligible, rounds cannot help: the policy applies at once. */
static void test_fixed_cost_over_limit(void **state)
{
	struct rmig_converge_state st = { 0 };
	struct rmig_converge_input in;

	(void)state;
	in = slow_round(2, 30, RMIG_NC_THROTTLE);
	in.fixed_ms = 470;
	in.expected_ms = 475; /* 5 ms of memory: under 10% of the 300 ms limit */
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_FORCE);
	assert_int_equal(st.throttle_pct, 0);
	in.policy = RMIG_NC_ABORT;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_ABORT);
	/* Memory still worth shrinking: keep going. */
	in.policy = RMIG_NC_FORCE;
	in.expected_ms = 470 + 100;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	/* A fixed part within the limit changes nothing. */
	in.fixed_ms = 200;
	in.expected_ms = 205;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
}

static void test_throttle_steps(void **state)
{
	static const unsigned want[] = { 20, 30, 40, 50, 60, 70, 80, 90, 99 };
	struct rmig_converge_state st = { 0 };
	size_t step = 0;
	unsigned r;

	(void)state;
	/* Every round slow: throttle every second round, 20% then +10%, cap 99%. */
	for (r = 1; r <= 2 * 9; r++) {
		struct rmig_converge_input in = slow_round(r, 1000, RMIG_NC_THROTTLE);
		enum rmig_converge_decision d = rmig_converge_decide(&in, &st);

		if (r % 2) {
			assert_int_equal(d, RMIG_CONV_CONTINUE);
			assert_int_equal(st.slow_rounds, 1);
		} else {
			assert_int_equal(d, RMIG_CONV_THROTTLE);
			assert_int_equal(st.throttle_pct, want[step]);
			assert_int_equal(st.slow_rounds, 0);
			step++;
		}
	}
	assert_int_equal(step, 9);
	/* At 99% there is nothing left to throttle: carry on, never above 99. */
	for (; r < 60; r++) {
		struct rmig_converge_input in = slow_round(r, 1000, RMIG_NC_THROTTLE);

		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
		assert_int_equal(st.throttle_pct, 99);
	}
	/* Then, out of rounds: force. */
	{
		struct rmig_converge_input in = slow_round(1000, 1000, RMIG_NC_THROTTLE);

		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_FORCE);
	}
}

static void test_throttle_conditions(void **state)
{
	struct rmig_converge_state st = { 0 };
	struct rmig_converge_input in;

	(void)state;
	/* A fast round in between resets the count: no throttle. */
	for (unsigned r = 1; r <= 20; r++) {
		in = slow_round(r, 1000, RMIG_NC_THROTTLE);
		if (r % 2 == 0)
			in.dirtied_bytes = in.sent_bytes / 2; /* exactly half: not slow */
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
		assert_int_equal(st.throttle_pct, 0);
	}
	/* Just over half is slow. */
	memset(&st, 0, sizeof(st));
	in = slow_round(1, 1000, RMIG_NC_THROTTLE);
	in.dirtied_bytes = in.sent_bytes / 2 + 1;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	in.round = 2;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_THROTTLE);
	assert_int_equal(st.throttle_pct, 20);

	/* A backend that cannot throttle is never asked to. */
	memset(&st, 0, sizeof(st));
	for (unsigned r = 1; r < 30; r++) {
		in = slow_round(r, 30, RMIG_NC_THROTTLE);
		in.can_throttle = 0;
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	}
	assert_int_equal(st.throttle_pct, 0);

	/* Other policies never throttle. */
	memset(&st, 0, sizeof(st));
	for (unsigned r = 1; r < 30; r++) {
		in = slow_round(r, 30, r % 2 ? RMIG_NC_FORCE : RMIG_NC_ABORT);
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	}
	assert_int_equal(st.throttle_pct, 0);

	/* Already at 95%: the next step is capped at 99, not 105. */
	st = (struct rmig_converge_state){ .throttle_pct = 95, .slow_rounds = 1 };
	in = slow_round(5, 30, RMIG_NC_THROTTLE);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_THROTTLE);
	assert_int_equal(st.throttle_pct, 99);

	/* Nothing sent, something dirtied: slow, no division anywhere. */
	memset(&st, 0, sizeof(st));
	in = slow_round(1, 30, RMIG_NC_THROTTLE);
	in.sent_bytes = 0;
	in.dirtied_bytes = 1;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	assert_int_equal(st.slow_rounds, 1);
	/* Nothing sent, nothing dirtied: not slow. */
	in.dirtied_bytes = 0;
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
	assert_int_equal(st.slow_rounds, 0);
}

static void test_expected_downtime(void **state)
{
	double d;

	(void)state;
	assert_true(fabs(rmig_expected_downtime_ms(100 * MB, 100.0 * MB, 0) - 1000.0) < 1e-9);
	assert_true(fabs(rmig_expected_downtime_ms(100 * MB, 100.0 * MB, 25.5) - 1025.5) < 1e-9);
	assert_true(fabs(rmig_expected_downtime_ms(0, 1.0, 7) - 7.0) < 1e-12);
	/* More dirt, longer; more bandwidth, shorter. */
	assert_true(rmig_expected_downtime_ms(2 * MB, 1e6, 0) >
		    rmig_expected_downtime_ms(1 * MB, 1e6, 0));
	assert_true(rmig_expected_downtime_ms(1 * MB, 2e6, 0) <
		    rmig_expected_downtime_ms(1 * MB, 1e6, 0));

	/* Zero bandwidth (nothing measured yet): no division by zero, no inf or
	 * NaN; with dirt it can never fit, without it only the fixed cost. */
	d = rmig_expected_downtime_ms(4096, 0, 10);
	assert_true(isfinite(d));
	assert_true(d >= 1e9);
	d = rmig_expected_downtime_ms(UINT64_MAX, 0, 10);
	assert_true(isfinite(d));
	assert_true(d >= 1e9);
	d = rmig_expected_downtime_ms(0, 0, 10);
	assert_true(d == 10.0);
	d = rmig_expected_downtime_ms(4096, -5.0, 10);
	assert_true(isfinite(d) && d >= 1e9);

	/* And the decision on such a figure keeps going, even with a huge limit. */
	{
		struct rmig_converge_state st = { 0 };
		struct rmig_converge_input in = slow_round(1, 30, RMIG_NC_FORCE);

		in.expected_ms = rmig_expected_downtime_ms(4096, 0, 10);
		in.downtime_ms = UINT32_MAX;
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_CONTINUE);
		in.expected_ms = rmig_expected_downtime_ms(0, 0, 10);
		in.downtime_ms = 10;
		assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);
	}
}

static void test_decision_names(void **state)
{
	(void)state;
	assert_string_equal(rmig_converge_decision_name(RMIG_CONV_CONTINUE), "continue");
	assert_string_equal(rmig_converge_decision_name(RMIG_CONV_SWITCH), "switch");
	assert_string_equal(rmig_converge_decision_name(RMIG_CONV_FORCE), "force");
	assert_string_equal(rmig_converge_decision_name(RMIG_CONV_THROTTLE), "throttle");
	assert_string_equal(rmig_converge_decision_name(RMIG_CONV_ABORT), "abort");
	assert_string_equal(rmig_converge_decision_name((enum rmig_converge_decision)99), "?");
}

/* ---- rmig_parse_size ---- */

static void test_parse_size_ok(void **state)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "4096", 4096 },
		{ "4k", 4096 },
		{ "4K", 4096 },
		{ "256M", 256ull << 20 },
		{ "256m", 256ull << 20 },
		{ "1G", 1ull << 30 },
		{ "1g", 1ull << 30 },
		{ "2T", 2ull << 40 },
		{ "0G", 0 },
		{ "1Ki", 1024 },
		{ "1KiB", 1024 },
		{ "1MB", 1ull << 20 },
		{ "16777215T", 16777215ull << 40 }, /* the largest T */
		{ "17179869183G", 17179869183ull << 30 },
		{ "18446744073709551615", UINT64_MAX },
		{ "007", 7 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 12345;
		int rc = rmig_parse_size(ok[i].s, &v);

		if (rc || v != ok[i].v)
			fail_msg("'%s': rc %d value %llu, want %llu", ok[i].s, rc,
				 (unsigned long long)v, (unsigned long long)ok[i].v);
	}
}

static void test_parse_size_bad(void **state)
{
	static const char *const bad[] = {
		"",
		"abc",
		"1Q",
		"G",
		"-1",
		"-0",
		"1.5G",
		"1 G",
		"1GG",
		"1Gx",
		"1KX",
		"1Kib",
		"1B", /* a B alone is not a unit */
		"0x10",
		"1e9",
		"99999999999999999999G",
		"99999999999999999999",
		"18446744073709551616", /* 2^64 */
		"16777216T",		/* 2^64 after the shift */
		"17179869184G",
		"18014398509481984K",
		"1k ",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 12345;
		int rc = rmig_parse_size(bad[i], &v);

		if (rc >= 0)
			fail_msg("'%s' accepted as %llu", bad[i], (unsigned long long)v);
		assert_true(rc == -EINVAL || rc == -ERANGE);
		/* A failure leaves the output alone. */
		assert_true(v == 12345);
	}
	{
		uint64_t v;

		assert_int_equal(rmig_parse_size(NULL, &v), -EINVAL);
	}
}

/* Regression: a minus sign after white space used to slip past the check
 * and wrap (" -1" parsed as 2^64-1). */
static void test_parse_size_negative_after_space(void **state)
{
	static const char *const bad[] = { " -1", "\t-1", " -4096", "\n-1" };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 12345;
		int rc = rmig_parse_size(bad[i], &v);

		if (rc >= 0)
			fail_msg("'%s' accepted as %llu", bad[i], (unsigned long long)v);
	}
}

/* An 8 GiB guest, 80 MB dirty, at a 4.5 GB/s link and a digest of 2.5 GB/s
 * on one thread, 5 GB/s on all: the default verification costs the dirty
 * pages' digests, not the guest's, so the switch-over fits 300 ms; full's
 * whole-guest digests (the source's one thread, then the destination's
 * all) alone exceed it, and with little memory left the policy forces at
 * once. */
static void test_verify_cost_follows_the_last_round(void **state)
{
	const uint64_t guest = 8ull << 30, dirty = 80 * MB;
	const double link = 4.5e9, one = 2.5e9, rate = 5e9;
	struct rmig_converge_state st = { 0 };
	struct rmig_converge_input in = slow_round(3, 30, RMIG_NC_THROTTLE);
	double on_fixed = rmig_verify_fixed_ms(RMIG_VERIFY_ON, 0, guest, one, rate);
	double full_fixed = rmig_verify_fixed_ms(RMIG_VERIFY_FULL, 0, guest, one, rate);

	(void)state;
	assert_true(on_fixed == 0);
	assert_true(fabs(full_fixed - (8 * 1073.741824 / 2.5 + 8 * 1073.741824 / 5.0)) < 1);
	assert_true(fabs(rmig_verify_fixed_ms(RMIG_VERIFY_ON, 1, guest, one, rate) -
			 8 * 1073.741824 / 5.0) < 1); /* placement: the destination's pass */
	assert_true(rmig_verify_fixed_ms(RMIG_VERIFY_OFF, 1, guest, one, rate) == 0);
	assert_true(fabs(rmig_verify_dirty_ms(RMIG_VERIFY_ON, dirty, rate) - 33.554432) < 0.01);
	assert_true(rmig_verify_dirty_ms(RMIG_VERIFY_FULL, dirty, rate) == 0);

	in.fixed_ms = on_fixed;
	in.expected_ms = rmig_expected_downtime_ms(dirty, link, on_fixed) +
			 rmig_verify_dirty_ms(RMIG_VERIFY_ON, dirty, rate);
	assert_true(in.expected_ms < 300);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_SWITCH);

	in.fixed_ms = full_fixed;
	in.expected_ms = rmig_expected_downtime_ms(dirty, link, full_fixed);
	assert_int_equal(rmig_converge_decide(&in, &st), RMIG_CONV_FORCE);
}

/* A dry run's plan: a 1 GiB guest over a 100 MB/s link, 300 ms allowed. */
static struct rmig_converge_plan plan(double dirty_bytes_rate, enum rmig_no_converge policy)
{
	return (struct rmig_converge_plan){ .guest_bytes = 1024 * MB,
					    .dirty_cap = 1024 * MB,
					    .bandwidth = 100e6,
					    .dirty_bytes_rate = dirty_bytes_rate,
					    .max_rounds = 30,
					    .downtime_ms = 300,
					    .policy = policy,
					    .can_throttle = 1,
					    .fixed_ms = 2 };
}

/* An idle guest switches over after round 1, whose time is the guest at
 * the link's rate; the downtime is the fixed cost alone. */
static void test_forecast_idle(void **state)
{
	struct rmig_converge_plan p = plan(0, RMIG_NC_ABORT);
	struct rmig_converge_forecast f;

	(void)state;
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_SWITCH);
	assert_int_equal(f.rounds, 1);
	assert_true(fabs(f.round1_ms - 1024.0 * MB / 100e6 * 1000) < 1);
	assert_true(fabs(f.downtime_ms - 2) < 0.01);
	assert_int_equal(f.throttle_pct, 0);
}

/* Dirtying 10 MB/s: each round a tenth of the last, 300 ms is met once a
 * round leaves under 30 MB: 1 GiB (10.7 s) leaves 107 MB, then 10.7 MB. */
static void test_forecast_shrinking_rounds(void **state)
{
	struct rmig_converge_plan p = plan(10e6, RMIG_NC_ABORT);
	struct rmig_converge_forecast f;

	(void)state;
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_SWITCH);
	assert_int_equal(f.rounds, 2);
	assert_true(f.downtime_ms > 100 && f.downtime_ms < 300);
}

/* Faster than the link: the same decisions pre-copy takes, by policy. */
static void test_forecast_outrun(void **state)
{
	struct rmig_converge_plan p = plan(200e6, RMIG_NC_ABORT);
	struct rmig_converge_forecast f;

	(void)state;
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_ABORT);
	assert_int_equal(f.rounds, 30);
	assert_true(f.downtime_ms > 300);
	p.policy = RMIG_NC_FORCE;
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_FORCE);
	p.policy = RMIG_NC_THROTTLE; /* past 50%, each round leaves less than the last */
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_SWITCH);
	assert_true(f.throttle_pct > 50);
	assert_true(f.rounds < 30);
	p.can_throttle = 0; /* a backend that cannot: forced at the last round */
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_FORCE);
	assert_int_equal(f.throttle_pct, 0);
}

/* Nothing measured: no forecast of convergence, and no division by it. */
static void test_forecast_no_bandwidth(void **state)
{
	struct rmig_converge_plan p = plan(1e6, RMIG_NC_ABORT);
	struct rmig_converge_forecast f;

	(void)state;
	p.bandwidth = 0;
	rmig_converge_forecast(&p, &f);
	assert_int_equal(f.decision, RMIG_CONV_ABORT);
	assert_int_equal(f.rounds, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_switch_when_downtime_fits),
		cmocka_unit_test(test_continue_when_not_fitting),
		cmocka_unit_test(test_out_of_rounds),
		cmocka_unit_test(test_fixed_cost_over_limit),
		cmocka_unit_test(test_throttle_steps),
		cmocka_unit_test(test_throttle_conditions),
		cmocka_unit_test(test_expected_downtime),
		cmocka_unit_test(test_decision_names),
		cmocka_unit_test(test_verify_cost_follows_the_last_round),
		cmocka_unit_test(test_parse_size_ok),
		cmocka_unit_test(test_parse_size_bad),
		cmocka_unit_test(test_parse_size_negative_after_space),
		cmocka_unit_test(test_forecast_idle),
		cmocka_unit_test(test_forecast_shrinking_rounds),
		cmocka_unit_test(test_forecast_outrun),
		cmocka_unit_test(test_forecast_no_bandwidth),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
