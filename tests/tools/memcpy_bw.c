/* memcpy_bw - the copy ceiling for `make bench`: how fast this machine's
 * memcpy moves data between two buffers already in memory, on one thread
 * and on all CPUs; and how fast XXH3-64 (config.verify's digest) reads the
 * same buffers, as rmig digests pages (4 KiB at a time). Prints one JSON
 * line: {"threads":N,"one_Bps":..,"all_Bps":..,"xxh3_one_Bps":..,"xxh3_all_Bps":..}.
 *   memcpy_bw [SIZE_MIB]   (per thread, default 256) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "xxhash_fast.h"

#define REPEAT 8

struct job {
	size_t size;
	int hash; /* XXH3 of each 4 KiB page instead of memcpy */
	double seconds;
	int rc;
};

/* Digest every 4 KiB page of a, as config.verify does. */
static uint64_t hash_pages(const char *a, size_t size)
{
	uint64_t h = 0;

	for (size_t off = 0; off + 4096 <= size; off += 4096)
		h ^= XXH3_64bits(a + off, 4096);
	return h;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copy size bytes REPEAT times between two buffers touched beforehand, so
 * that page faults are not what is measured. */
static void *copy_main(void *arg)
{
	struct job *j = arg;
	char *a = mmap(NULL, j->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *b = mmap(NULL, j->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double t0;

	if (a == MAP_FAILED || b == MAP_FAILED) {
		j->rc = 1;
		return NULL;
	}
	memset(a, 0x5a, j->size);
	memset(b, 0xa5, j->size);
	t0 = now_s();
	for (int i = 0; i < REPEAT; i++) {
		if (j->hash)
			j->rc |= hash_pages(i & 1 ? b : a, j->size) == 42; /* keep it */
		else
			memcpy(i & 1 ? a : b, i & 1 ? b : a, j->size);
	}
	j->seconds = now_s() - t0;
	j->rc = 0;
	munmap(a, j->size);
	munmap(b, j->size);
	return NULL;
}

/* Bytes per second over n threads copying at once. */
static double run(int n, size_t size, int hash)
{
	pthread_t tid[256];
	struct job jobs[256];
	double t;

	for (int i = 0; i < n; i++) {
		jobs[i] = (struct job){ .size = size, .hash = hash };
		if (pthread_create(&tid[i], NULL, copy_main, &jobs[i]))
			return -1;
	}
	for (int i = 0; i < n; i++)
		pthread_join(tid[i], NULL);
	t = 0;
	for (int i = 0; i < n; i++) {
		if (jobs[i].rc)
			return -1;
		t = jobs[i].seconds > t ? jobs[i].seconds : t;
	}
	return (double)size * REPEAT * n / t;
}

int main(int argc, char **argv)
{
	long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 256;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	double one, all, hone, hall;

	if (mib <= 0 || mib > 65536 || cpus < 1) {
		fprintf(stderr, "usage: memcpy_bw [SIZE_MIB]\n");
		return 2;
	}
	if (cpus > 256)
		cpus = 256;
	one = run(1, (size_t)mib << 20, 0);
	all = run((int)cpus, (size_t)mib << 20, 0);
	hone = run(1, (size_t)mib << 20, 1);
	hall = run((int)cpus, (size_t)mib << 20, 1);
	if (one < 0 || all < 0 || hone < 0 || hall < 0) {
		fprintf(stderr, "memcpy_bw: cannot allocate %ld MiB per thread\n", mib);
		return 1;
	}
	printf("{\"threads\":%ld,\"one_Bps\":%.0f,\"all_Bps\":%.0f,\"xxh3_one_Bps\":%.0f,"
	       "\"xxh3_all_Bps\":%.0f}\n",
	       cpus, one, all, hone, hall);
	return 0;
}
