/* sim_rng.h - the sim backend's random numbers (memory and disk writers,
 * contents): fast, seeded, the same on every host, so that a seed makes a
 * guest reproducible. Not for anything that must be unpredictable. */
#ifndef RMIG_SIM_RNG_H
#define RMIG_SIM_RNG_H

#include <stdint.h>

static inline uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The next number of the xorshift64 sequence in *s (never 0: seed it odd). */
static inline uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

#endif
