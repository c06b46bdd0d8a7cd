/* digest.h - whole-memory digests for --verify (xxHash XXH3-64). */
#ifndef RMIG_DIGEST_H
#define RMIG_DIGEST_H

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

/* Measured digest speed of this machine, bytes/s over all threads, for the
 * downtime estimate. */
double rmig_digest_rate(unsigned threads);
/* Threads for a pass over guest memory: `threads`, or one per CPU if 0,
 * at most RMIG_DIGEST_MAX_THREADS. */
#define RMIG_DIGEST_MAX_THREADS 16
unsigned rmig_digest_threads(unsigned threads);

#endif
