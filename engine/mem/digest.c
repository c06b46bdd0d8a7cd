/* digest.c - parallel region digests. See digest.h. */
#include "digest.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "xxhash_fast.h"

#define CHUNK (16ull << 20)
#define MAX_THREADS RMIG_DIGEST_MAX_THREADS

struct digest_job {
	const struct rmig_region *r;
	size_t n;
	uint64_t *chunk_digest; /* all regions' chunks, region after region */
	size_t *first_chunk;	/* index of region i's first chunk */
	size_t total_chunks;
	atomic_size_t next;
	const atomic_int *stop;
};

static void *digest_worker(void *arg)
{
	struct digest_job *j = arg;
	size_t c;

	while ((c = atomic_fetch_add(&j->next, 1)) < j->total_chunks) {
		size_t ri = 0;

		if (j->stop && atomic_load(j->stop))
			break;
		uint64_t off, len;

		while (ri + 1 < j->n && j->first_chunk[ri + 1] <= c)
			ri++;
		off = (c - j->first_chunk[ri]) * CHUNK;
		len = j->r[ri].len - off < CHUNK ? j->r[ri].len - off : CHUNK;
		j->chunk_digest[c] = XXH3_64bits((const char *)j->r[ri].host + off, len);
	}
	return NULL;
}

unsigned rmig_digest_threads(unsigned threads)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (!threads)
		threads = cpus > 0 ? (unsigned)cpus : 1;
	return threads > MAX_THREADS ? MAX_THREADS : threads;
}

int rmig_digest_regions(const struct rmig_region *r, size_t n, unsigned threads,
			const atomic_int *stop, uint64_t *out)
{
	struct digest_job j = { .r = r, .n = n, .stop = stop };
	pthread_t tid[MAX_THREADS];
	unsigned started = 0;
	int rc = 0;

	threads = rmig_digest_threads(threads);
	j.first_chunk = calloc(n + 1, sizeof(*j.first_chunk));
	if (!j.first_chunk)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		j.first_chunk[i + 1] = j.first_chunk[i] + (size_t)((r[i].len + CHUNK - 1) / CHUNK);
	j.total_chunks = j.first_chunk[n];
	j.chunk_digest = calloc(j.total_chunks ? j.total_chunks : 1, sizeof(uint64_t));
	if (!j.chunk_digest) {
		rc = -ENOMEM;
		goto out;
	}
	atomic_init(&j.next, 0);
	for (unsigned t = 1; t < threads; t++) {
		if (pthread_create(&tid[started], NULL, digest_worker, &j))
			break;
		started++;
	}
	digest_worker(&j); /* this thread works too */
	for (unsigned t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
	if (stop && atomic_load(stop)) {
		rc = -ECANCELED;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		out[i] =
		    XXH3_64bits_withSeed(&j.chunk_digest[j.first_chunk[i]],
					 (j.first_chunk[i + 1] - j.first_chunk[i]) * 8, r[i].len);
out:
	free(j.chunk_digest);
	free(j.first_chunk);
	return rc;
}

static double seconds_since(const struct timespec *a)
{
	struct timespec b;

	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) + (b.tv_nsec - a->tv_nsec) / 1e9;
}

/* Larger than the last-level cache of most hosts (32 MiB here), so that the
 * rate is memory's, not the cache's: a whole-memory digest and the pages a
 * last round reads run at memory speed (with AVX2, XXH3 over a cached
 * buffer is three times faster than over memory). */
#define SPEED_BYTES (48u << 20)

void rmig_digest_speed_measure(struct rmig_digest_speed *out)
{
	char *buf = aligned_alloc(2u << 20, SPEED_BYTES);
	double best = 0;

	*out = (struct rmig_digest_speed){ .one = 1e9, .all = 1e9 };
	if (!buf)
		return;
	/* Huge pages: faulting 48 MiB in 4 KiB pages would cost more than
	 * the measurement. */
	madvise(buf, SPEED_BYTES, MADV_HUGEPAGE);
	for (size_t i = 0; i < SPEED_BYTES; i += 64)
		memset(buf + i, (int)(i >> 6) * 131, 64);
	for (int rep = 0; rep < 2; rep++) {
		struct timespec a;
		volatile uint64_t sink;
		double s;

		clock_gettime(CLOCK_MONOTONIC, &a);
		sink = XXH3_64bits(buf, SPEED_BYTES);
		(void)sink;
		s = seconds_since(&a);
		if (s > 0 && SPEED_BYTES / s > best)
			best = (double)SPEED_BYTES / s;
	}
	free(buf);
	out->one = best;
	/* Threads rarely scale perfectly on a memory-bound loop. */
	out->all = best * (0.5 + 0.5 * rmig_digest_threads(0));
}

static void *probe_main(void *arg)
{
	struct rmig_digest_probe *p = arg;

	rmig_digest_speed_measure(&p->speed);
	return NULL;
}

void rmig_digest_probe_start(struct rmig_digest_probe *p)
{
	p->running = !pthread_create(&p->tid, NULL, probe_main, p);
}

void rmig_digest_probe_finish(struct rmig_digest_probe *p, struct rmig_digest_speed *out)
{
	if (p->running) {
		pthread_join(p->tid, NULL);
		p->running = 0;
	} else if (!p->speed.one) {
		rmig_digest_speed_measure(&p->speed);
	}
	if (out)
		*out = p->speed;
}
