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

double rmig_verify_fixed_ms(int verify, int placement, uint64_t guest_bytes, double digest_rate)
{
	double guest_ms = digest_rate > 0 ? (double)guest_bytes / digest_rate * 1000.0 : 0;

	if (verify == RMIG_VERIFY_FULL)
		return 2.0 * guest_ms;
	return verify == RMIG_VERIFY_ON && placement ? guest_ms : 0;
}

double rmig_verify_dirty_ms(int verify, uint64_t dirty_bytes, double digest_rate)
{
	if (verify != RMIG_VERIFY_ON || digest_rate <= 0)
		return 0;
	return 2.0 * (double)dirty_bytes / digest_rate * 1000.0;
}

const char *rmig_converge_decision_name(enum rmig_converge_decision d)
{
	static const char *const names[] = { "continue", "switch", "force", "throttle", "abort" };

	return d <= RMIG_CONV_ABORT ? names[d] : "?";
}
