/* sim.c - a synthetic guest: deterministic memory and a writer thread that
 * dirties it at a set rate, tracked in an atomic bitmap.
 *
 * Spec: sim[:size=1G,dirty-rate=20000,hot=10%,zero=50%,seed=7,regions=1]
 *   size        guest memory (K/M/G suffixes), split evenly into `regions`
 *   dirty-rate  pages written per second while running
 *   hot         share of pages the writer touches (the working set)
 *   zero        share of pages that start all-zero
 *   zero-run    zero pages come in aligned runs of this many pages (default
 *               1; 512 = whole 2 MiB huge pages, like the free memory of a
 *               long-running guest; with 1, transparent huge pages make a
 *               sparse guest resident in full)
 *   hot-zero    1 (default): the hot set is spread over all pages, also those
 *               that start zero: the guest fills its free memory as it runs
 *               (with zero-run=512 each first write there makes a 2 MiB huge
 *               page resident, on both sides). 0: only over pages that start
 *               with data, so free memory stays free (a sparse guest that
 *               stays sparse); the hot set keeps about its size (a write
 *               that finds no data page in HOT_DRAWS draws is skipped)
 *   seed        makes contents and the write sequence reproducible
 *   node        NUMA node to bind the guest's memory to (default: none);
 *               "spread": region i on node i modulo the nodes there are (a
 *               guest with memory on every node, with regions=NODES)
 *   overcommit  1: skip the check that the guest fits in RAM + swap (a sparse
 *               guest, e.g. for the scale benchmark; RLIMIT_AS still holds).
 *               The source checks only its non-zero part anyway.
 *   lie         TEST ONLY: a dirty log that misses writes. At the first fetch
 *               of the dirty log (round 1 has been sent), N pages outside the
 *               hot set are written and not reported dirty, so they are never
 *               sent again; each is named on stderr ("sim: lie: region R
 *               chunk C page P"). What config.verify's audit must catch.
 *   disk        a disk of this size beside memory (sim_disk.c), in memory
 *               unless disk-file is given
 *   disk-file   the disk's image: an existing file (its size), or with disk=
 *               a new one of that size
 *   disk-write-rate  4 KiB writes per second into the disk while running
 *   disk-block  its block size, the unit of tracking (default 64K)
 *   disk-fill   share of a new disk's blocks that start with data (50%)
 *   disk-fail   TEST ONLY: the disk's reads fail (EIO) from the N-th on, or
 *               with "pause" once the guest is paused
 *   disk-lie    TEST ONLY: N writes at the first fetch of the disk's dirty
 *               log are not reported (named on stderr): the audit's case
 * On the destination the spec is "sim", with overcommit=0|1 and
 * disk-file=PATH (an image of the source disk's size to write into; else
 * the disk is made in memory), and TEST ONLY disk-fail=N (the disk's
 * writes fail, EIO, from the N-th on): size and layout come from the
 * source, and the writer's state (RNG, counters) travels as the device-state
 * blob, so the guest carries on where it stopped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "rmig_backend.h"
#include "sim_disk.h"
#include "sim_rng.h"
#include "sim_state.h"

#define SIM_PAGE 4096u
#define HOT_DRAWS 256 /* hot-zero=0: draws to find a page that starts with data */

#define SIM_NODE_SPREAD (-2) /* node=spread: region i on node i % nodes */

struct sim {
	/* guest */
	struct rmig_region regions[RMIG_MAX_REGIONS];
	atomic_uint_fast64_t *dirty[RMIG_MAX_REGIONS];
	size_t nregions;
	uint64_t pages_per_region, npages;
	uint64_t seed, rate, hot_pages, stride;
	unsigned zero_pct;
	uint64_t zero_run; /* pages */
	int hot_zero;	   /* the hot set may hold pages that start zero */
	uint64_t hot_span; /* positions of the stride permutation it draws from */
	int node;	   /* NUMA node the memory is bound to, -1: none */
	int overcommit;	   /* skip the RAM + swap check */
	uint64_t lie;	   /* test only: pages to write unreported at the first fetch */
	int lied;
	/* writer */
	pthread_t writer;
	int writer_started;
	pthread_mutex_t lock; /* held by the writer while it writes a batch */
	pthread_cond_t cond;
	int paused, stop;
	unsigned throttle;
	uint64_t rng;
	atomic_uint_fast64_t writes;
	/* the disk, if the spec has one */
	struct sim_disk_spec disk_spec;
	struct sim_disk *disk;
};

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

static int parse_percent(const char *v, unsigned *out)
{
	char *end;
	unsigned long p = strtoul(v, &end, 10);

	if (end == v || (*end && strcmp(end, "%")) || p > 100)
		return -EINVAL;
	*out = (unsigned)p;
	return 0;
}

/* What create reads besides struct sim's own fields. */
struct sim_args {
	struct sim *s;
	uint64_t size;
	unsigned hot_pct, nregions;
};

static int sim_arg(struct rmig_backend *be, void *state, const char *key, const char *val)
{
	struct sim_args *a = state;
	struct sim *s = a->s;
	uint64_t v;
	int rc;

	if (strcmp(key, "size") == 0)
		return rmig_parse_size(val, &a->size);
	if (strcmp(key, "dirty-rate") == 0)
		return rmig_parse_size(val, &s->rate);
	if (strcmp(key, "hot") == 0)
		return parse_percent(val, &a->hot_pct);
	if (strcmp(key, "zero") == 0)
		return parse_percent(val, &s->zero_pct);
	if (strcmp(key, "hot-zero") == 0) {
		rc = rmig_backend_arg_u64(val, 10, 0, 1, &v);
		if (!rc)
			s->hot_zero = (int)v;
		return rc;
	}
	if (strcmp(key, "zero-run") == 0)
		return rmig_backend_arg_u64(val, 10, 1, 1u << 20, &s->zero_run);
	if (strcmp(key, "seed") == 0)
		return rmig_backend_arg_u64(val, 0, 0, UINT64_MAX, &s->seed);
	if (strcmp(key, "node") == 0 && strcmp(val, "spread") == 0) {
		if (numa_available() < 0) {
			rmig_backend_err(be, "sim: node=spread: no NUMA here");
			return -EINVAL;
		}
		s->node = SIM_NODE_SPREAD;
		return 0;
	}
	if (strcmp(key, "node") == 0) {
		rc = rmig_backend_arg_u64(val, 10, 0, 1023, &v);
		if (!rc && (numa_available() < 0 || (long)v > numa_max_node() ||
			    !numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)v))) {
			rmig_backend_err(be, "sim: NUMA node %llu does not exist here",
					 (unsigned long long)v);
			rc = -EINVAL;
		}
		s->node = (int)v;
		return rc;
	}
	if (strcmp(key, "lie") == 0)
		return rmig_backend_arg_u64(val, 10, 0, 1u << 20, &s->lie);
	if (strcmp(key, "overcommit") == 0) {
		rc = rmig_backend_arg_u64(val, 10, 0, 1, &v);
		s->overcommit = (int)v;
		return rc;
	}
	if (strcmp(key, "disk") == 0) {
		rc = rmig_parse_size(val, &s->disk_spec.size);
		if (!rc && !s->disk_spec.size) {
			rmig_backend_err(be, "sim: disk=0: a disk needs a size");
			rc = -EINVAL;
		}
		return rc;
	}
	if (strcmp(key, "disk-write-rate") == 0)
		return rmig_parse_size(val, &s->disk_spec.rate);
	if (strcmp(key, "disk-block") == 0) {
		rc = rmig_parse_size(val, &v);
		if (!rc && (v < 4096 || v > (2u << 20) || (v & (v - 1))))
			rc = -ERANGE;
		s->disk_spec.block = v;
		return rc;
	}
	if (strcmp(key, "disk-fill") == 0)
		return parse_percent(val, &s->disk_spec.fill_pct);
	if (strcmp(key, "disk-lie") == 0)
		return rmig_backend_arg_u64(val, 10, 0, 1u << 20, &s->disk_spec.lie);
	if (strcmp(key, "disk-fail") == 0) {
		s->disk_spec.fail_paused = !strcmp(val, "pause");
		return s->disk_spec.fail_paused
			   ? 0
			   : rmig_backend_arg_u64(val, 10, 1, UINT64_MAX, &s->disk_spec.fail_after);
	}
	if (strcmp(key, "disk-file") == 0) {
		free(s->disk_spec.file);
		s->disk_spec.file = strdup(val);
		return s->disk_spec.file ? 0 : -ENOMEM;
	}
	if (strcmp(key, "regions") == 0) {
		rc = rmig_backend_arg_u64(val, 10, 1, RMIG_MAX_REGIONS, &v);
		a->nregions = (unsigned)v;
		return rc;
	}
	return -ENOENT;
}

static int sim_dest_arg(struct rmig_backend *be, void *state, const char *key, const char *val)
{
	struct sim *s = state;
	uint64_t v;
	int rc;

	(void)be;
	if (strcmp(key, "overcommit") == 0) {
		rc = rmig_backend_arg_u64(val, 10, 0, 1, &v);
		s->overcommit = (int)v;
		return rc;
	}
	if (strcmp(key, "disk-file") == 0) {
		free(s->disk_spec.file);
		s->disk_spec.file = strdup(val);
		return s->disk_spec.file ? 0 : -ENOMEM;
	}
	if (strcmp(key, "disk-fail") == 0)
		return rmig_backend_arg_u64(val, 10, 1, UINT64_MAX, &s->disk_spec.fail_after);
	return -ENOENT;
}

/* Refuse a guest this host cannot hold, rather than dying half-way. The
 * bound is all of RAM and swap, not what is free now: zero pages are never
 * written, so a sparse guest costs only its non-zero part, and REGIONS does
 * not say how sparse it is. Then the address-space limit. */
static int check_fits(struct rmig_backend *be, const struct sim *s, uint64_t bytes,
		      uint64_t resident)
{
	struct sysinfo si;
	struct rlimit rl;

	if (!s->overcommit && !sysinfo(&si)) {
		uint64_t total = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;

		if (resident > total) {
			rmig_backend_err(be,
					 "sim: a %llu MiB guest does not fit in this host's %llu "
					 "MiB of memory and swap (overcommit=1 to try anyway)",
					 (unsigned long long)(resident >> 20),
					 (unsigned long long)(total >> 20));
			return -ENOMEM;
		}
	}
	if (!getrlimit(RLIMIT_AS, &rl) && rl.rlim_cur != RLIM_INFINITY && bytes > rl.rlim_cur) {
		rmig_backend_err(be, "sim: a %llu MiB guest exceeds RLIMIT_AS (%llu MiB)",
				 (unsigned long long)(bytes >> 20),
				 (unsigned long long)(rl.rlim_cur >> 20));
		return -ENOMEM;
	}
	return 0;
}

/* len bytes of anonymous memory starting on a huge page boundary, as QEMU
 * aligns guest RAM: 2 MiB of guest memory is then one huge page, which is
 * what the destination's first-touch size (REGIONS_ACK) assumes. */
static void *map_aligned(uint64_t len)
{
	uint64_t align = 2u << 20;
	char *p = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t head;

	if (p == MAP_FAILED)
		return p;
	head = (align - (uintptr_t)p % align) % align;
	if (head)
		munmap(p, head);
	munmap(p + head + len, align - head);
	return p + head;
}

static int map_regions(struct rmig_backend *be, struct sim *s, size_t n, uint64_t region_len)
{
	for (size_t i = 0; i < n; i++) {
		void *p = map_aligned(region_len);

		if (p == MAP_FAILED) {
			rmig_backend_err(be, "sim: cannot map %llu bytes: %s",
					 (unsigned long long)region_len, strerror(errno));
			return -ENOMEM;
		}
		/* Back guest RAM with transparent huge pages, as QEMU does: one
		 * fault per 2 MiB instead of per 4 KiB. */
		madvise(p, region_len, MADV_HUGEPAGE);
		if (s->node >= 0 || s->node == SIM_NODE_SPREAD) {
			unsigned long mask[16] = { 0 };
			int node = s->node >= 0 ? s->node : (int)i % (numa_max_node() + 1);

			mask[node / 64] = 1ul << (node % 64);
			if (mbind(p, region_len, MPOL_BIND, mask, 1024, 0)) {
				int err = errno;

				rmig_backend_err(be, "sim: cannot bind memory to node %d: %s", node,
						 strerror(err));
				munmap(p, region_len);
				return -err;
			}
		}
		s->regions[i] = (struct rmig_region){ .id = (uint32_t)i,
						      .page_size = SIM_PAGE,
						      .gpa = (uint64_t)i * region_len,
						      .len = region_len,
						      .host = p,
						      .flags = RMIG_REGION_UNTOUCHED_ZERO };
		s->nregions = i + 1;
	}
	s->pages_per_region = region_len / SIM_PAGE;
	s->npages = s->pages_per_region * n;
	return 0;
}

static int page_starts_zero(const struct sim *s, uint64_t page)
{
	return splitmix64(s->seed * 0x100000001b3ull + page / s->zero_run) % 100 < s->zero_pct;
}

/* The writer's next page, from its random draw *r: one of hot_span
 * positions of the stride permutation; with hot_zero=0, drawn again until
 * it starts with data (*r is the last draw). UINT64_MAX: none found. */
static uint64_t hot_page(struct sim *s, uint64_t *r)
{
	for (unsigned i = 0; i < HOT_DRAWS; i++) {
		uint64_t page = (*r % s->hot_span) * s->stride % s->npages;

		if (s->hot_zero || !page_starts_zero(s, page))
			return page;
		*r = xorshift64(&s->rng);
	}
	return UINT64_MAX;
}

/* How many positions the hot set draws from: hot_pages, or with
 * hot_zero=0 enough to hold about hot_pages pages that start with data. */
static uint64_t hot_span(const struct sim *s)
{
	uint64_t span = s->hot_pages;

	if (!s->hot_zero && s->zero_pct < 100)
		span = s->hot_pages * 100 / (100 - s->zero_pct);
	return span > s->npages ? s->npages : span;
}

static void fill(struct sim *s)
{
	for (uint64_t p = 0; p < s->npages; p++) {
		uint64_t *w, st;

		if (page_starts_zero(s, p))
			continue;
		w = (uint64_t *)((char *)s->regions[p / s->pages_per_region].host +
				 (p % s->pages_per_region) * SIM_PAGE);
		st = splitmix64(s->seed ^ (p << 16)) | 1;
		for (unsigned i = 0; i < SIM_PAGE / 8; i++)
			w[i] = xorshift64(&st);
	}
}

/* One guest write: a word of the page, chosen by r, then its dirty bit. */
static void write_page(struct sim *s, uint64_t page, uint64_t r)
{
	size_t reg = page / s->pages_per_region;
	uint64_t idx = page % s->pages_per_region;
	uint64_t *w = (uint64_t *)((char *)s->regions[reg].host + idx * SIM_PAGE) +
		      (r >> 40) % (SIM_PAGE / 8);
	uint64_t cnt = atomic_fetch_add(&s->writes, 1) + 1;

	*(volatile uint64_t *)w = splitmix64(cnt ^ s->seed) | 1;
	/* Data first, then the bit (release): whoever clears the bit and then
	 * reads the page sees this write or a later bit. */
	atomic_fetch_or_explicit(&s->dirty[reg][idx / 64], 1ull << (idx % 64),
				 memory_order_release);
}

static void *writer_main(void *arg)
{
	struct sim *s = arg;
	struct timespec last, now, tick = { 0, 1000000 };
	double owed = 0;

	clock_gettime(CLOCK_MONOTONIC, &last);
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		uint64_t n;

		/* An idle guest (dirty-rate=0) waits here too: it should cost
		 * the host nothing, as a real idle guest would. */
		while ((s->paused || !s->rate) && !s->stop) {
			pthread_cond_wait(&s->cond, &s->lock);
			clock_gettime(CLOCK_MONOTONIC, &last);
			owed = 0;
		}
		if (s->stop)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		owed += (double)s->rate * (100 - s->throttle) / 100.0 *
			((double)(now.tv_sec - last.tv_sec) + (now.tv_nsec - last.tv_nsec) / 1e9);
		last = now;
		if (owed > 1e6) /* bound a batch so that pause() never waits long */
			owed = 1e6;
		n = (uint64_t)owed;
		owed -= (double)n;
		for (uint64_t i = 0; i < n && s->hot_span; i++) {
			uint64_t r = xorshift64(&s->rng);
			uint64_t page = hot_page(s, &r);

			if (page != UINT64_MAX)
				write_page(s, page, r);
		}
		pthread_mutex_unlock(&s->lock);
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int start_writer(struct rmig_backend *be, struct sim *s)
{
	int rc;

	s->paused = 0;
	rc = pthread_create(&s->writer, NULL, writer_main, s);
	if (rc) {
		rmig_backend_err(be, "sim: cannot start writer: %s", strerror(rc));
		return -rc;
	}
	s->writer_started = 1;
	return 0;
}

static int alloc_bitmaps(struct rmig_backend *be, struct sim *s)
{
	for (size_t i = 0; i < s->nregions; i++) {
		s->dirty[i] = calloc((s->pages_per_region + 63) / 64, sizeof(*s->dirty[i]));
		if (!s->dirty[i]) {
			rmig_backend_err(be, "sim: out of memory for the dirty bitmap");
			return -ENOMEM;
		}
	}
	return 0;
}

static void sim_destroy(struct rmig_backend *be)
{
	struct sim *s = be->priv;

	if (!s)
		return;
	if (s->writer_started) {
		pthread_mutex_lock(&s->lock);
		s->stop = 1;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->writer, NULL);
	}
	sim_disk_destroy(s->disk);
	free(s->disk_spec.file);
	for (size_t i = 0; i < s->nregions; i++) {
		munmap(s->regions[i].host, s->regions[i].len);
		free(s->dirty[i]);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
	be->priv = NULL;
}

static int sim_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct sim *s = calloc(1, sizeof(*s));
	struct sim_args a = { .s = s, .size = 256ull << 20, .hot_pct = 10, .nregions = 1 };
	uint64_t size;
	unsigned hot_pct, nregions;
	int rc;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	be->priv = s;
	s->seed = 1;
	s->zero_run = 1;
	s->hot_zero = 1;
	s->node = -1;
	s->disk_spec.block = 64u << 10;
	s->disk_spec.fill_pct = 50;
	if (role == RMIG_ROLE_DEST) {
		rc = rmig_backend_args_each(be, args,
					    "the destination takes overcommit=0|1 and "
					    "disk-file=PATH (the source sends size and layout)",
					    sim_dest_arg, s);
		s->disk_spec.overcommit = s->overcommit;
		/* A receiver that could never take a disk says so at once. */
		return rc || !s->disk_spec.file ? rc : sim_disk_check_file(be, s->disk_spec.file);
	}
	rc = rmig_backend_args_each(be, args, NULL, sim_arg, &a);
	if (rc)
		return rc;
	s->disk_spec.seed = s->seed;
	s->disk_spec.overcommit = s->overcommit;
	size = a.size;
	hot_pct = a.hot_pct;
	nregions = a.nregions;
	if (!s->hot_zero && s->zero_pct == 100 && hot_pct) {
		rmig_backend_err(be, "sim: hot-zero=0 with zero=100%%: no page starts with data "
				     "for the writer to write");
		return -EINVAL;
	}
	if (size < (uint64_t)SIM_PAGE * nregions || size % ((uint64_t)SIM_PAGE * nregions)) {
		rmig_backend_err(be, "sim: size %llu is not a non-zero multiple of %u pages",
				 (unsigned long long)size, nregions);
		return -EINVAL;
	}
	/* The source writes only its non-zero pages (and what the writer
	 * touches, within them or not). */
	rc = check_fits(be, s, size,
			size / 100 * (100 - s->zero_pct > hot_pct ? 100 - s->zero_pct : hot_pct));
	if (rc)
		return rc;
	rc = map_regions(be, s, nregions, size / nregions);
	if (rc)
		return rc;
	rc = alloc_bitmaps(be, s);
	if (rc)
		return rc;
	s->hot_pages = s->npages * hot_pct / 100;
	if (hot_pct && !s->hot_pages)
		s->hot_pages = 1;
	/* Spread the hot set over the guest: a stride coprime with npages makes
	 * (i * stride) % npages a permutation. */
	s->stride = 2654435761u % s->npages;
	while (s->stride == 0 || gcd(s->stride, s->npages) != 1)
		s->stride++;
	s->hot_span = hot_span(s);
	s->rng = splitmix64(s->seed ^ 0x5eed) | 1;
	fill(s);
	rc = sim_disk_create(be, &s->disk_spec, &s->disk);
	if (!rc && s->disk)
		sim_disk_resume(s->disk);
	return rc ? rc : start_writer(be, s);
}

static int sim_get_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	struct sim *s = be->priv;

	if (!s->nregions) {
		rmig_backend_err(be, "sim: no guest memory yet");
		return -ENOENT;
	}
	*r = s->regions;
	*n = s->nregions;
	return 0;
}

static int sim_start_dirty_log(struct rmig_backend *be)
{
	struct sim *s = be->priv;

	for (size_t i = 0; i < s->nregions; i++)
		for (uint64_t w = 0; w < (s->pages_per_region + 63) / 64; w++)
			atomic_store(&s->dirty[i][w], 0);
	return 0;
}

/* lie=N: write N cold pages (never in the writer's hot set, so never
 * reported by an honest write either) without setting their dirty bits. */
static void lie_now(struct sim *s)
{
	uint64_t rng = splitmix64(s->seed ^ 0x11e) | 1, cold = s->npages - s->hot_span;

	pthread_mutex_lock(&s->lock);
	for (uint64_t i = 0; i < s->lie && cold; i++) {
		uint64_t r = xorshift64(&rng);
		uint64_t page = (s->hot_span + r % cold) * s->stride % s->npages;
		uint64_t idx = page % s->pages_per_region;
		size_t reg = page / s->pages_per_region;
		uint64_t *w = (uint64_t *)((char *)s->regions[reg].host + idx * SIM_PAGE) +
			      (r >> 40) % (SIM_PAGE / 8);

		*(volatile uint64_t *)w = ~*w;
		fprintf(stderr, "sim: lie: region %u chunk %llu page %llu\n", s->regions[reg].id,
			(unsigned long long)(idx * SIM_PAGE / (2u << 20)), (unsigned long long)idx);
	}
	s->lied = 1;
	pthread_mutex_unlock(&s->lock);
}

static int sim_fetch_dirty(struct rmig_backend *be, size_t ri, uint64_t *bitmap)
{
	struct sim *s = be->priv;
	uint64_t words = (s->pages_per_region + 63) / 64;

	if (ri >= s->nregions)
		return -EINVAL;
	if (s->lie && !s->lied)
		lie_now(s);
	for (uint64_t w = 0; w < words; w++) {
		/* Plain load first: most words are clean, and an exchange is a locked op. */
		if (atomic_load_explicit(&s->dirty[ri][w], memory_order_relaxed))
			bitmap[w] |=
			    atomic_exchange_explicit(&s->dirty[ri][w], 0, memory_order_acquire);
	}
	return 0;
}

static int sim_pause(struct rmig_backend *be)
{
	struct sim *s = be->priv;

	/* Taking the lock waits for a batch in progress: no write after this. */
	pthread_mutex_lock(&s->lock);
	s->paused = 1;
	pthread_mutex_unlock(&s->lock);
	if (s->disk)
		sim_disk_pause(s->disk);
	return 0;
}

static int sim_resume(struct rmig_backend *be)
{
	struct sim *s = be->priv;

	pthread_mutex_lock(&s->lock);
	s->paused = 0;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (s->disk)
		sim_disk_resume(s->disk);
	return 0;
}

static int sim_throttle(struct rmig_backend *be, unsigned pct)
{
	struct sim *s = be->priv;

	pthread_mutex_lock(&s->lock);
	s->throttle = pct > 99 ? 99 : pct;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int sim_save_state(struct rmig_backend *be, void **blob, size_t *len)
{
	struct sim *s = be->priv;
	struct sim_state_blob *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	*b = (struct sim_state_blob){ .magic = SIM_STATE_MAGIC,
				      .version = SIM_STATE_VERSION,
				      .seed = s->seed,
				      .rng = s->rng,
				      .writes = atomic_load(&s->writes),
				      .rate = s->rate,
				      .npages = s->npages,
				      .hot_pages = s->hot_pages,
				      .stride = s->stride,
				      .nregions = (uint32_t)s->nregions,
				      .throttle = 0, /* the destination runs at full speed */
				      .zero_run = s->zero_run,
				      .hot_zero = (uint32_t)s->hot_zero,
				      .zero_pct = s->zero_pct };
	pthread_mutex_unlock(&s->lock);
	*blob = b;
	*len = sizeof(*b);
	return 0;
}

/* A sim guest's layout that fits here: its size in *total. */
static int check_layout(struct rmig_backend *be, const struct sim *s,
			const struct rmig_region *layout, size_t n, uint64_t *total)
{
	*total = 0;
	if (n == 0 || n > RMIG_MAX_REGIONS) {
		rmig_backend_err(be, "sim: %zu regions, expected 1..%d", n, RMIG_MAX_REGIONS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (layout[i].page_size != SIM_PAGE || layout[i].len != layout[0].len ||
		    layout[i].id != i) {
			rmig_backend_err(be,
					 "sim: layout not a sim guest (region %zu: id %u, page "
					 "size %u, %llu bytes)",
					 i, layout[i].id, layout[i].page_size,
					 (unsigned long long)layout[i].len);
			return -EINVAL;
		}
		*total += layout[i].len;
	}
	return check_fits(be, s, *total, *total);
}

static int sim_check_regions(struct rmig_backend *be, const struct rmig_region *layout, size_t n)
{
	uint64_t total;

	return check_layout(be, be->priv, layout, n, &total);
}

static int sim_prepare_regions(struct rmig_backend *be, const struct rmig_region *layout, size_t n)
{
	struct sim *s = be->priv;
	uint64_t total;
	int rc;

	if (s->nregions) {
		rmig_backend_err(be, "sim: regions already prepared");
		return -EBUSY;
	}
	rc = check_layout(be, s, layout, n, &total);
	if (rc)
		return rc;
	rc = map_regions(be, s, n, layout[0].len);
	if (rc)
		return rc;
	return alloc_bitmaps(be, s);
}

static int sim_load_state(struct rmig_backend *be, const void *blob, size_t len)
{
	struct sim *s = be->priv;
	struct sim_state_blob b;

	if (len != sizeof(b)) {
		rmig_backend_err(be, "sim: device state is %zu bytes, expected %zu", len,
				 sizeof(b));
		return -EINVAL;
	}
	memcpy(&b, blob, sizeof(b));
	if (b.magic != SIM_STATE_MAGIC || b.version != SIM_STATE_VERSION) {
		rmig_backend_err(be, "sim: device state has bad magic or version");
		return -EINVAL;
	}
	if (b.npages != s->npages || b.nregions != s->nregions || b.hot_pages > b.npages ||
	    b.stride == 0 || (b.npages && b.stride >= b.npages && b.npages > 1) || b.hot_zero > 1 ||
	    b.zero_pct > 100 || b.zero_run < 1 || b.zero_run > (1u << 20) ||
	    (!b.hot_zero && b.zero_pct == 100)) {
		rmig_backend_err(be, "sim: device state does not match the received layout");
		return -EINVAL;
	}
	s->seed = b.seed;
	s->rng = b.rng;
	atomic_store(&s->writes, b.writes);
	s->rate = b.rate;
	s->hot_pages = b.hot_pages;
	s->stride = b.stride;
	s->zero_run = b.zero_run;
	s->zero_pct = b.zero_pct;
	s->hot_zero = (int)b.hot_zero;
	s->hot_span = hot_span(s); /* derived, not taken from the wire */
	return 0;
}

static int sim_start(struct rmig_backend *be)
{
	struct sim *s = be->priv;

	if (s->writer_started)
		return sim_resume(be);
	if (s->disk)
		sim_disk_resume(s->disk);
	return start_writer(be, s);
}

/* ---- the disk (sim_disk.c): index 0, the only one ---- */

static int sim_get_disks(struct rmig_backend *be, const struct rmig_disk **d, size_t *n)
{
	struct sim *s = be->priv;

	*d = s->disk ? sim_disk_desc(s->disk) : NULL;
	*n = s->disk != NULL;
	return 0;
}

static int sim_disk_start_dirty_op(struct rmig_backend *be)
{
	sim_disk_start_dirty(((struct sim *)be->priv)->disk);
	return 0;
}

static int sim_disk_fetch_dirty_op(struct rmig_backend *be, size_t i, uint64_t *bitmap)
{
	struct sim *s = be->priv;

	if (i || !s->disk)
		return -EINVAL;
	sim_disk_fetch_dirty(s->disk, bitmap);
	return 0;
}

static int sim_disk_read_op(struct rmig_backend *be, size_t i, uint64_t off, void *buf, size_t len)
{
	struct sim *s = be->priv;

	return i || !s->disk ? -EINVAL : sim_disk_read(s->disk, off, buf, len);
}

static int sim_disk_throttle_op(struct rmig_backend *be, uint64_t bytes_per_s)
{
	sim_disk_throttle(((struct sim *)be->priv)->disk, bytes_per_s);
	return 0;
}

static int sim_prepare_disks(struct rmig_backend *be, const struct rmig_disk *layout, size_t n)
{
	struct sim *s = be->priv;

	if (s->disk) {
		rmig_backend_err(be, "sim: disks already prepared");
		return -EBUSY;
	}
	return sim_disk_prepare(be, &s->disk_spec, layout, n, &s->disk);
}

static int sim_check_disks(struct rmig_backend *be, const struct rmig_disk *layout, size_t n)
{
	return sim_disk_check(be, &((struct sim *)be->priv)->disk_spec, layout, n);
}

static int sim_disk_write_op(struct rmig_backend *be, size_t i, uint64_t off, const void *buf,
			     size_t len)
{
	struct sim *s = be->priv;

	return i || !s->disk ? -EINVAL : sim_disk_write(s->disk, off, buf, len);
}

static int sim_disk_write_zeroes_op(struct rmig_backend *be, size_t i, uint64_t off, uint64_t len)
{
	struct sim *s = be->priv;

	return i || !s->disk ? -EINVAL : sim_disk_write_zeroes(s->disk, off, len);
}

static int sim_disk_flush_op(struct rmig_backend *be, size_t i)
{
	struct sim *s = be->priv;
	int rc = i || !s->disk ? -EINVAL : sim_disk_flush(s->disk);

	if (rc)
		rmig_backend_err(be, "sim: %s", strerror(-rc));
	return rc;
}

static int sim_guest_stats(struct rmig_backend *be, struct rmig_guest_stats *st)
{
	struct sim *s = be->priv;

	pthread_mutex_lock(&s->lock);
	st->running = s->writer_started && !s->paused && !s->stop;
	pthread_mutex_unlock(&s->lock);
	st->progress = atomic_load(&s->writes);
	return 0;
}

const struct rmig_backend_ops rmig_sim_backend_ops = {
	.size = sizeof(struct rmig_backend_ops),
	.name = "sim",
	.create = sim_create,
	.destroy = sim_destroy,
	.get_regions = sim_get_regions,
	.start_dirty_log = sim_start_dirty_log,
	.fetch_dirty = sim_fetch_dirty,
	.pause = sim_pause,
	.resume = sim_resume,
	.save_state = sim_save_state,
	.throttle = sim_throttle,
	.prepare_regions = sim_prepare_regions,
	.load_state = sim_load_state,
	.start = sim_start,
	.guest_stats = sim_guest_stats,
	.get_disks = sim_get_disks,
	.disk_start_dirty = sim_disk_start_dirty_op,
	.disk_fetch_dirty = sim_disk_fetch_dirty_op,
	.disk_read = sim_disk_read_op,
	.disk_throttle = sim_disk_throttle_op,
	.prepare_disks = sim_prepare_disks,
	.disk_write = sim_disk_write_op,
	.disk_write_zeroes = sim_disk_write_zeroes_op,
	.disk_flush = sim_disk_flush_op,
	.check_regions = sim_check_regions,
	.check_disks = sim_check_disks,
};
