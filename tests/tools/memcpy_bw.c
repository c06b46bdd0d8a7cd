/* memcpy_bw - the copy ceiling for `make bench`: how fast this machine's
 * memcpy moves data between two buffers already in memory, on one thread
 * and on all CPUs. Prints one JSON line: {"threads":N,"one_Bps":..,"all_Bps":..}.
 *   memcpy_bw [SIZE_MIB]   (per thread, default 256) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REPEAT 8

struct job {
	size_t size;
	double seconds;
	int rc;
};

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
	for (int i = 0; i < REPEAT; i++)
		memcpy(i & 1 ? a : b, i & 1 ? b : a, j->size);
	j->seconds = now_s() - t0;
	munmap(a, j->size);
	munmap(b, j->size);
	return NULL;
}

/* Bytes per second over n threads copying at once. */
static double run(int n, size_t size)
{
	pthread_t tid[256];
	struct job jobs[256];
	double t;

	for (int i = 0; i < n; i++) {
		jobs[i] = (struct job){ .size = size };
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
	double one, all;

	if (mib <= 0 || mib > 65536 || cpus < 1) {
		fprintf(stderr, "usage: memcpy_bw [SIZE_MIB]\n");
		return 2;
	}
	if (cpus > 256)
		cpus = 256;
	one = run(1, (size_t)mib << 20);
	all = run((int)cpus, (size_t)mib << 20);
	if (one < 0 || all < 0) {
		fprintf(stderr, "memcpy_bw: cannot allocate %ld MiB per thread\n", mib);
		return 1;
	}
	printf("{\"threads\":%ld,\"one_Bps\":%.0f,\"all_Bps\":%.0f}\n", cpus, one, all);
	return 0;
}
