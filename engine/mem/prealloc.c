/* prealloc.c - the destination populates its guest memory before the first
 * page arrives (--prealloc), as QEMU's -mem-prealloc does.
 *
 * Why: the memory is then certain to be there before the source sends
 * anything - a host that lacks it refuses at once and the source runs on,
 * instead of the destination being OOM-killed half-way - and the first round
 * runs at the speed of the link rather than at the speed at which the kernel
 * (and, in a VM, its host) hands out fresh pages, which on small cloud VMs is
 * far slower than any network. The pages are faulted in by one thread per
 * online CPU: the work is page clearing, and it scales with CPUs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"
#include "prealloc.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define PREALLOC_CHUNK (64ull << 20) /* handed out to the threads one at a time */
#define PREALLOC_MAX_THREADS 16
#define MINCORE_CHUNK (1ull << 30) /* bytes looked at per mincore() call */

struct prealloc_job {
	struct rmig_ctx *ctx;
	atomic_uint_fast64_t next; /* next chunk, counted over all regions */
	uint64_t nchunks;
	atomic_int err; /* first errno */
	atomic_uint_fast64_t failed_at;
};

/* Region and offset of chunk c: the regions are laid end to end. */
static int chunk_span(const struct rmig_ctx *ctx, uint64_t c, uint8_t **addr, size_t *len)
{
	for (size_t i = 0; i < ctx->nregions; i++) {
		uint64_t n = (ctx->regions[i].len + PREALLOC_CHUNK - 1) / PREALLOC_CHUNK;

		if (c < n) {
			uint64_t off = c * PREALLOC_CHUNK;
			uint64_t left = ctx->regions[i].len - off;

			*addr = (uint8_t *)ctx->regions[i].host + off;
			*len = (size_t)(left < PREALLOC_CHUNK ? left : PREALLOC_CHUNK);
			return 0;
		}
		c -= n;
	}
	return -ERANGE;
}

static void *prealloc_main(void *arg)
{
	struct prealloc_job *job = arg;

	for (;;) {
		uint64_t c = atomic_fetch_add(&job->next, 1);
		uint8_t *addr;
		size_t len;

		if (c >= job->nchunks || atomic_load(&job->err) ||
		    atomic_load(&job->ctx->cancelled) || chunk_span(job->ctx, c, &addr, &len))
			break;
		while (madvise(addr, len, MADV_POPULATE_WRITE)) {
			int e = errno, none = 0;

			if (e == EINTR)
				continue;
			if (atomic_compare_exchange_strong(&job->err, &none, e))
				atomic_store(&job->failed_at, c * PREALLOC_CHUNK);
			break;
		}
	}
	return NULL;
}

/* Bytes of the regions not yet resident: what preallocating will take. */
static uint64_t missing_bytes(const struct rmig_ctx *ctx)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t vlen = MINCORE_CHUNK / (uint64_t)page;
	unsigned char *vec = malloc(vlen);
	uint64_t missing = 0;

	for (size_t i = 0; i < ctx->nregions; i++) {
		for (uint64_t off = 0; off < ctx->regions[i].len; off += MINCORE_CHUNK) {
			uint64_t left = ctx->regions[i].len - off;
			size_t len = (size_t)(left < MINCORE_CHUNK ? left : MINCORE_CHUNK);
			size_t pages = (len + (size_t)page - 1) / (size_t)page;

			if (!vec || mincore((uint8_t *)ctx->regions[i].host + off, len, vec)) {
				missing += len; /* cannot tell: assume all of it */
				continue;
			}
			for (size_t p = 0; p < pages; p++)
				if (!(vec[p] & 1))
					missing += (uint64_t)page;
		}
	}
	free(vec);
	return missing;
}

static int read_u64(const char *dir, const char *cg, const char *file, unsigned long long *v)
{
	char path[1024];
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s%s/%s", dir, cg, file);
	f = fopen(path, "re");
	if (!f)
		return 0;
	ok = fscanf(f, "%llu", v) == 1; /* "max" (v2, no limit) does not parse */
	fclose(f);
	return ok;
}

/* Lower *avail to the room under every limit of one cgroup hierarchy, from
 * the process's own group (cg, modified) up to the root. */
static void cgroup_room(const char *dir, char *cg, const char *limit, const char *usage,
			uint64_t *avail, char *where, size_t wlen)
{
	for (;;) {
		unsigned long long max, cur;
		char *slash;

		if (read_u64(dir, cg, limit, &max) && read_u64(dir, cg, usage, &cur)) {
			uint64_t room = max > cur ? max - cur : 0;

			if (room < *avail) {
				*avail = room;
				snprintf(where, wlen, "cgroup %s (%s)", *cg ? cg : "/", limit);
			}
		}
		slash = strrchr(cg, '/');
		if (!slash)
			break;
		*slash = 0;
	}
}

/* The memory this process may still take: MemAvailable, and the room under
 * its memory cgroup's limits (v2 memory.max, v1 memory.limit_in_bytes, at
 * their usual mount points). UINT64_MAX if unknown. */
static uint64_t available_bytes(char *where, size_t wlen)
{
	uint64_t avail = UINT64_MAX;
	char line[512];
	FILE *f = fopen("/proc/meminfo", "re");

	snprintf(where, wlen, "this host");
	if (f) {
		unsigned long long kb;

		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
				avail = (uint64_t)kb << 10;
		fclose(f);
	}
	f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return avail;
	/* "0::/path" (v2) or "N:ctrl,ctrl:/path" (v1) */
	while (fgets(line, sizeof(line), f)) {
		char *ctrls = strchr(line, ':'), *cg = ctrls ? strchr(ctrls + 1, ':') : NULL;
		char path[sizeof(line)];

		if (!cg)
			continue;
		*cg++ = 0;
		ctrls++;
		cg[strcspn(cg, "\n")] = 0;
		if (!strcmp(line, "0") && !*ctrls) {
			strcpy(path, cg);
			cgroup_room("/sys/fs/cgroup", path, "memory.max", "memory.current", &avail,
				    where, wlen);
			strcpy(path, cg);
			cgroup_room("/sys/fs/cgroup/unified", path, "memory.max", "memory.current",
				    &avail, where, wlen);
		} else if (strstr(ctrls, "memory")) {
			strcpy(path, cg);
			cgroup_room("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes",
				    "memory.usage_in_bytes", &avail, where, wlen);
		}
	}
	fclose(f);
	return avail;
}

int rmig_prealloc_regions(struct rmig_ctx *ctx, void (*starting)(struct rmig_ctx *ctx))
{
	struct prealloc_job job = { .ctx = ctx };
	pthread_t tid[PREALLOC_MAX_THREADS];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned nthreads = 0, want;
	uint64_t missing, avail;
	int64_t t0 = rmig_now_ms();
	char where[600];
	int rc = 0, e;

	for (size_t i = 0; i < ctx->nregions; i++)
		job.nchunks += (ctx->regions[i].len + PREALLOC_CHUNK - 1) / PREALLOC_CHUNK;
	if (!job.nchunks)
		return 0;
	/* Check before taking anything: a refusal now costs the source nothing. */
	missing = missing_bytes(ctx);
	avail = available_bytes(where, sizeof(where));
	if (missing > avail)
		return rmig_err(
		    ctx, -ENOMEM,
		    "config.prealloc: the guest needs %llu MiB more memory, %s has %llu MiB "
		    "available",
		    (unsigned long long)(missing >> 20), where, (unsigned long long)(avail >> 20));
	if (starting)
		starting(ctx);
	want = cpus < 1 ? 1 : cpus > PREALLOC_MAX_THREADS ? PREALLOC_MAX_THREADS : (unsigned)cpus;
	if (want > job.nchunks)
		want = (unsigned)job.nchunks;
	for (; nthreads < want; nthreads++)
		if (pthread_create(&tid[nthreads], NULL, prealloc_main, &job))
			break;
	if (!nthreads)
		prealloc_main(&job); /* no thread to spare: do it here */
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(tid[i], NULL);
	e = atomic_load(&job.err);
	if (e == EINVAL)
		rc = rmig_err(ctx, -EOPNOTSUPP,
			      "config.prealloc needs Linux 5.14 or later (MADV_POPULATE_WRITE)");
	else if (e)
		rc = rmig_err(ctx, -e,
			      "config.prealloc: cannot populate guest memory after %llu MiB: %s",
			      (unsigned long long)(atomic_load(&job.failed_at) >> 20), strerror(e));
	else if (rmig_cancel_requested(ctx))
		rc = rmig_err(ctx, -ECANCELED, "cancelled while preallocating guest memory");
	ctx->stats.prealloc_ms = (uint64_t)(rmig_now_ms() - t0);
	return rc;
}
