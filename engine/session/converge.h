/* converge.h - when to stop pre-copy: a pure function of a round's figures. */
#ifndef RMIG_CONVERGE_H
#define RMIG_CONVERGE_H

#include <stdint.h>

#include "rmig.h"

enum rmig_converge_decision {
	RMIG_CONV_CONTINUE, /* another pre-copy round */
	RMIG_CONV_SWITCH,   /* expected downtime fits: stop and copy */
	RMIG_CONV_FORCE,    /* out of rounds: stop and copy regardless */
	RMIG_CONV_THROTTLE, /* not converging: slow the guest, continue */
	RMIG_CONV_ABORT,    /* out of rounds and the policy says give up */
};

struct rmig_converge_input {
	unsigned round; /* the round just finished, from 1 */
	unsigned max_rounds;
	unsigned downtime_ms;
	enum rmig_no_converge policy;
	int can_throttle;	/* backend supports throttling */
	int out_of_time;	/* config.timeout_ms has passed */
	double expected_ms;	/* expected downtime if we stopped now */
	double fixed_ms;	/* the part of it no pre-copy can shrink (verification) */
	uint64_t sent_bytes;	/* bytes sent in the round */
	uint64_t dirtied_bytes; /* bytes dirtied during the round */
};

struct rmig_converge_state {
	unsigned throttle_pct; /* current throttle, updated on THROTTLE */
	unsigned slow_rounds;  /* consecutive rounds dirtying > half the bytes sent */
};

/* As QEMU's auto-converge: after two consecutive rounds in which the guest
 * dirtied more than half of what was sent, throttle 20%, then 10% more each
 * time, up to 99%. */
enum rmig_converge_decision rmig_converge_decide(const struct rmig_converge_input *in,
						 struct rmig_converge_state *st);

/* Expected stop-and-copy time: dirty bytes at the measured bandwidth, plus
 * the fixed cost (verification, round trips). */
double rmig_expected_downtime_ms(uint64_t dirty_bytes, double bandwidth, double fixed_ms);

/* What config.verify adds to a switch-over, at the digest speeds one (one
 * thread) and all (all cores), bytes/s. The fixed part no pre-copy round
 * shrinks: full digests all memory on both sides, the source on one
 * thread from the pause (its other cores send the last round), then the
 * destination on all of its cores once the last page is in; on, nothing
 * per guest, unless the destination cannot see the pages (placement: RDMA
 * WRITE) and digests its populated memory on all cores (counted as the
 * whole guest: an upper bound). */
double rmig_verify_fixed_ms(int verify, int placement, uint64_t guest_bytes, double one,
			    double all);
/* The part that follows the pages left to send: on digests each of them
 * on both sides, at `all` bytes/s (the chunk digests over them are 1/512
 * of that). */
double rmig_verify_dirty_ms(int verify, uint64_t dirty_bytes, double all);

/* A dry run's forecast: pre-copy played out with rmig_converge_decide
 * over figures measured once (a probe's bandwidth, the guest's dirty
 * rate), round after round until the decision is to switch over, force
 * or abort. Round 1 sends guest_bytes; each next round what the last one
 * left dirty, at most dirty_cap; a throttle slows the dirtying by its
 * share (QEMU's: the vCPUs sleep that share of the time). */
struct rmig_converge_plan {
	uint64_t guest_bytes;	 /* round 1's bytes (memory and disks) */
	uint64_t dirty_cap;	 /* a round never has more to send than this */
	double bandwidth;	 /* bytes/s */
	double dirty_bytes_rate; /* bytes/s the guest dirties */
	unsigned max_rounds;
	unsigned downtime_ms;
	enum rmig_no_converge policy;
	int can_throttle;
	double fixed_ms;    /* as rmig_converge_input's */
	int verify;	    /* config.verify, for rmig_verify_dirty_ms */
	double digest_rate; /* bytes/s, all cores */
};

struct rmig_converge_forecast {
	enum rmig_converge_decision decision; /* SWITCH, FORCE or ABORT */
	unsigned rounds;		      /* pre-copy rounds up to it */
	double round1_ms;
	double downtime_ms; /* expected at the switch-over */
	unsigned throttle_pct;
};

void rmig_converge_forecast(const struct rmig_converge_plan *in,
			    struct rmig_converge_forecast *out);

const char *rmig_converge_decision_name(enum rmig_converge_decision d);

#endif
