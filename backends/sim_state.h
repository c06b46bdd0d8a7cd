/* sim_state.h - the sim backend's device state, as sim.c sends it to the
 * destination (native layout: the same program on both ends). Here so that
 * the tools that forge or read it (tests/tools/fakepeer.c and
 * postcopy_check.c, tests/fuzz/make_seeds.c, tests/unit/test_sim.c) keep
 * one copy; bump SIM_STATE_VERSION with any change. */
#ifndef RMIG_SIM_STATE_H
#define RMIG_SIM_STATE_H

#include <stdint.h>

#define SIM_STATE_MAGIC 0x534d4953u /* "SIMS" */
#define SIM_STATE_VERSION 2

struct sim_state_blob {
	uint32_t magic, version;
	uint64_t seed, rng, writes, rate, npages, hot_pages, stride;
	uint32_t nregions, throttle;
	uint64_t zero_run; /* with zero_pct and hot_zero: the writer's draw */
	uint32_t hot_zero, zero_pct;
};

#endif
