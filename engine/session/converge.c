/* converge.c - the pre-copy stop decision. See converge.h. */
#include "converge.h"

#define THROTTLE_INITIAL 20
#define THROTTLE_STEP 10
#define THROTTLE_MAX 99

enum rmig_converge_decision rmig_converge_decide(const struct rmig_converge_input *in,
						 struct rmig_converge_state *st)
{
	if (in->expected_ms <= in->downtime_ms)
		return RMIG_CONV_SWITCH;
	/* The fixed part alone is over the limit and the memory part is
	 * negligible: more rounds or throttling cannot help, so the policy
	 * applies now rather than after max_rounds. */
	if (in->round >= in->max_rounds || in->out_of_time ||
	    (in->fixed_ms > in->downtime_ms &&
	     in->expected_ms - in->fixed_ms <= 0.1 * in->downtime_ms))
		return in->policy == RMIG_NC_ABORT ? RMIG_CONV_ABORT : RMIG_CONV_FORCE;
	if (in->dirtied_bytes * 2 > in->sent_bytes)
		st->slow_rounds++;
	else
		st->slow_rounds = 0;
	if (in->policy == RMIG_NC_THROTTLE && in->can_throttle && st->slow_rounds >= 2 &&
	    st->throttle_pct < THROTTLE_MAX) {
		st->slow_rounds = 0;
		st->throttle_pct =
		    st->throttle_pct ? st->throttle_pct + THROTTLE_STEP : THROTTLE_INITIAL;
		if (st->throttle_pct > THROTTLE_MAX)
			st->throttle_pct = THROTTLE_MAX;
		return RMIG_CONV_THROTTLE;
	}
	return RMIG_CONV_CONTINUE;
}

double rmig_expected_downtime_ms(uint64_t dirty_bytes, double bandwidth, double fixed_ms)
{
	if (bandwidth <= 0)
		return dirty_bytes ? 1e12 : fixed_ms;
	return (double)dirty_bytes / bandwidth * 1000.0 + fixed_ms;
}

static double pass_ms(uint64_t bytes, double rate)
{
	return rate > 0 ? (double)bytes / rate * 1000.0 : 0;
}

double rmig_verify_fixed_ms(int verify, int placement, uint64_t guest_bytes, double one, double all)
{
	if (verify == RMIG_VERIFY_FULL)
		return pass_ms(guest_bytes, one) + pass_ms(guest_bytes, all);
	return verify == RMIG_VERIFY_ON && placement ? pass_ms(guest_bytes, all) : 0;
}

double rmig_verify_dirty_ms(int verify, uint64_t dirty_bytes, double all)
{
	return verify == RMIG_VERIFY_ON ? 2.0 * pass_ms(dirty_bytes, all) : 0;
}

#define FORECAST_MAX_ROUNDS 10000 /* max_rounds bounds it first; this bounds a bad input */

/* What a round of `sent` bytes leaves dirty: the guest's rate, slowed by
 * the throttle, over the round's time; never more than dirty_cap. */
static uint64_t dirtied_during(const struct rmig_converge_plan *in, uint64_t sent,
			       unsigned throttle_pct)
{
	double ms = (double)sent / in->bandwidth * 1000.0;
	double bytes = in->dirty_bytes_rate * (100.0 - throttle_pct) / 100.0 * ms / 1000.0;

	return bytes >= (double)in->dirty_cap ? in->dirty_cap : (uint64_t)bytes;
}

void rmig_converge_forecast(const struct rmig_converge_plan *in, struct rmig_converge_forecast *out)
{
	struct rmig_converge_state st = { 0 };
	struct rmig_converge_input r = { .max_rounds = in->max_rounds,
					 .downtime_ms = in->downtime_ms,
					 .policy = in->policy,
					 .can_throttle = in->can_throttle,
					 .fixed_ms = in->fixed_ms,
					 .sent_bytes = in->guest_bytes };

	*out = (struct rmig_converge_forecast){ .decision = in->policy == RMIG_NC_ABORT
								? RMIG_CONV_ABORT
								: RMIG_CONV_FORCE };
	if (in->bandwidth <= 0) /* nothing measured: nothing converges */
		return;
	out->round1_ms = (double)in->guest_bytes / in->bandwidth * 1000.0;
	for (r.round = 1; r.round <= FORECAST_MAX_ROUNDS; r.round++) {
		enum rmig_converge_decision d;

		r.dirtied_bytes = dirtied_during(in, r.sent_bytes, st.throttle_pct);
		r.expected_ms =
		    rmig_expected_downtime_ms(r.dirtied_bytes, in->bandwidth, in->fixed_ms) +
		    rmig_verify_dirty_ms(in->verify, r.dirtied_bytes, in->digest_rate);
		d = rmig_converge_decide(&r, &st);
		out->rounds = r.round;
		out->downtime_ms = r.expected_ms;
		out->throttle_pct = st.throttle_pct;
		if (d == RMIG_CONV_SWITCH || d == RMIG_CONV_FORCE || d == RMIG_CONV_ABORT) {
			out->decision = d;
			return;
		}
		r.sent_bytes = r.dirtied_bytes;
	}
}

const char *rmig_converge_decision_name(enum rmig_converge_decision d)
{
	static const char *const names[] = { "continue", "switch", "force", "throttle", "abort" };

	return d <= RMIG_CONV_ABORT ? names[d] : "?";
}
