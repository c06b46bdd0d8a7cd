/* digest.h - whole-memory digests for --verify (xxHash XXH3-64). */
#ifndef RMIG_DIGEST_H
#define RMIG_DIGEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rmig_backend.h"

/* A region's digest: XXH3-64 of the XXH3-64s of its 16 MiB chunks, so the
 * chunks can be hashed in parallel. Both sides use this, so it only has to
 * be the same function, not the XXH3 of the whole region. Uses up to
 * `threads` threads (0: one per online CPU). out[i] is region i's digest.
 * Once *stop (may be NULL) is set, gives up within a chunk: -ECANCELED
 * (a cancel must not wait for a large guest's digest). */
int rmig_digest_regions(const struct rmig_region *r, size_t n, unsigned threads,
			const atomic_int *stop, uint64_t *out);

/* This machine's digest speed, for the downtime estimate: XXH3 over
 * memory out of the caches, as a pass over guest memory reads it. */
struct rmig_digest_speed {
	double one; /* bytes/s, one thread */
	double all; /* bytes/s, rmig_digest_threads(0) threads */
};
void rmig_digest_speed_measure(struct rmig_digest_speed *out);

/* The same measured on a thread of its own, so that it overlaps something
 * slower (a source measures while its link connects): start, then finish
 * (waits; a probe never started, or whose thread could not start, gives
 * the measurement made there and then). finish is safe to call twice. */
struct rmig_digest_probe {
	pthread_t tid;
	int running;
	struct rmig_digest_speed speed;
};
void rmig_digest_probe_start(struct rmig_digest_probe *p);
void rmig_digest_probe_finish(struct rmig_digest_probe *p, struct rmig_digest_speed *out);
/* Threads for a pass over guest memory: `threads`, or one per CPU if 0,
 * at most RMIG_DIGEST_MAX_THREADS. */
#define RMIG_DIGEST_MAX_THREADS 16
unsigned rmig_digest_threads(unsigned threads);

#endif
