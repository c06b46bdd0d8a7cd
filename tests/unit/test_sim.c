/* test_sim.c - the simulated guest backend, opened by spec as the tool does:
 * layout, deterministic content, dirty logging, pause, device state round
 * trip to a destination instance, and spec errors. Guests are a few MiB. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitmap.h"
#include "proto.h"
#include "rmig_backend.h"
#include "sim_state.h"

#define PAGE 4096u

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static struct rmig_backend *open_ok(const char *spec, enum rmig_role role)
{
	struct rmig_backend *be = NULL;
	char err[256] = "";
	int rc = rmig_backend_open(spec, role, &be, err, sizeof(err));

	if (rc)
		fail_msg("opening '%s': %d %s", spec, rc, err);
	assert_non_null(be);
	assert_non_null(be->ops);
	assert_string_equal(be->ops->name, "sim");
	assert_int_equal(be->role, role);
	return be;
}

static void regions_of(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	assert_int_equal(be->ops->get_regions(be, r, n), 0);
	assert_true(*n >= 1 && *n <= RMIG_MAX_REGIONS);
}

static struct rmig_guest_stats stats_of(struct rmig_backend *be)
{
	struct rmig_guest_stats st = { -1, 0 };

	assert_int_equal(be->ops->guest_stats(be, &st), 0);
	return st;
}

/* Run the guest until it has done `writes` more writes (or 1.5 s passed). */
static void run_for_writes(struct rmig_backend *be, uint64_t writes, int start)
{
	uint64_t p0 = stats_of(be).progress;
	double t0 = now_s();

	assert_int_equal(start ? be->ops->start(be) : be->ops->resume(be), 0);
	while (stats_of(be).progress < p0 + writes && now_s() - t0 < 1.5)
		sleep_ms(2);
	assert_int_equal(be->ops->pause(be), 0);
	assert_true(stats_of(be).progress > p0);
}

/* One guest's memory, all regions, copied. */
static uint8_t *snapshot(struct rmig_backend *be, size_t *total)
{
	const struct rmig_region *r;
	size_t n, off = 0;
	uint8_t *buf;

	regions_of(be, &r, &n);
	*total = 0;
	for (size_t i = 0; i < n; i++)
		*total += r[i].len;
	buf = malloc(*total);
	assert_non_null(buf);
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + off, r[i].host, r[i].len);
		off += r[i].len;
	}
	return buf;
}

static uint64_t *fetch(struct rmig_backend *be, size_t ri, uint64_t npages)
{
	uint64_t *bm = calloc(rmig_bitmap_words(npages), 8);

	assert_non_null(bm);
	assert_int_equal(be->ops->fetch_dirty(be, ri, bm), 0);
	return bm;
}

static int page_is_zero(const uint8_t *p)
{
	for (unsigned i = 0; i < PAGE; i++)
		if (p[i])
			return 0;
	return 1;
}

static void test_regions(void **state)
{
	struct rmig_backend *be;
	const struct rmig_region *r;
	size_t n;
	struct rmig_layout l;
	char err[256];

	(void)state;
	be = open_ok("sim:size=8M,dirty-rate=20000,hot=10%,zero=50%,seed=7", RMIG_ROLE_SOURCE);
	regions_of(be, &r, &n);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].id, 0);
	assert_int_equal(r[0].page_size, PAGE);
	assert_true(r[0].gpa == 0);
	assert_true(r[0].len == 8ull << 20);
	assert_non_null(r[0].host);
	/* The array is stable until close. */
	{
		const struct rmig_region *r2;
		size_t n2;

		regions_of(be, &r2, &n2);
		assert_ptr_equal(r, r2);
		assert_int_equal(n, n2);
	}
	rmig_backend_close(be);

	/* Split into equal, adjacent regions with ids 0..n-1: a valid wire layout. */
	be = open_ok("sim:size=8M,regions=4,dirty-rate=0,seed=3", RMIG_ROLE_SOURCE);
	regions_of(be, &r, &n);
	assert_int_equal(n, 4);
	memset(&l, 0, sizeof(l));
	l.count = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(r[i].id, i);
		assert_int_equal(r[i].page_size, PAGE);
		assert_true(r[i].len == 2ull << 20);
		assert_true(r[i].gpa == i * (2ull << 20));
		assert_non_null(r[i].host);
		for (size_t j = 0; j < i; j++)
			assert_ptr_not_equal(r[i].host, r[j].host);
		/* Writable, all of it. */
		((volatile uint8_t *)r[i].host)[r[i].len - 1] = 1;
		l.r[i] = (struct rmig_wire_region){
			.id = r[i].id, .page_size = r[i].page_size, .gpa = r[i].gpa, .len = r[i].len
		};
	}
	assert_int_equal(rmig_layout_check(&l, err, sizeof(err)), 0);
	rmig_backend_close(be);

	/* The most regions, one page each; suffixes and bare numbers. */
	be = open_ok("sim:size=256K,regions=64,dirty-rate=0", RMIG_ROLE_SOURCE);
	regions_of(be, &r, &n);
	assert_int_equal(n, RMIG_MAX_REGIONS);
	assert_true(r[63].len == PAGE && r[63].gpa == 63 * PAGE);
	rmig_backend_close(be);
	be = open_ok("sim:size=40960,dirty-rate=0", RMIG_ROLE_SOURCE);
	regions_of(be, &r, &n);
	assert_true(r[0].len == 40960);
	rmig_backend_close(be);
}

static void test_deterministic_content(void **state)
{
	struct rmig_backend *a, *b, *c, *d;
	uint8_t *ma, *mb, *mc, *md;
	size_t la, lb, lc, ld, zero = 0;

	(void)state;
	/* dirty-rate=0: the writer writes nothing, the content stays as filled. */
	a = open_ok("sim:size=4M,dirty-rate=0,zero=50%,seed=7", RMIG_ROLE_SOURCE);
	b = open_ok("sim:size=4M,dirty-rate=0,zero=50%,seed=7", RMIG_ROLE_SOURCE);
	c = open_ok("sim:size=4M,dirty-rate=0,zero=50%,seed=8", RMIG_ROLE_SOURCE);
	/* Same seed split into regions: page contents follow the global index. */
	d = open_ok("sim:seed=7,regions=4,zero=50%,dirty-rate=0,size=4M", RMIG_ROLE_SOURCE);
	ma = snapshot(a, &la);
	mb = snapshot(b, &lb);
	mc = snapshot(c, &lc);
	md = snapshot(d, &ld);
	assert_int_equal(la, 4u << 20);
	assert_int_equal(la, lb);
	assert_int_equal(la, lc);
	assert_int_equal(la, ld);
	assert_memory_equal(ma, mb, la);
	assert_memory_equal(ma, md, la);
	assert_memory_not_equal(ma, mc, la);

	/* zero=50%: about half the pages are all-zero; the others are filled
	 * throughout (no zero word), so they cannot be mistaken for zero. */
	for (size_t p = 0; p < la / PAGE; p++) {
		const uint8_t *pg = ma + p * PAGE;

		if (page_is_zero(pg)) {
			zero++;
		} else {
			for (unsigned w = 0; w < PAGE / 8; w++) {
				uint64_t v;

				memcpy(&v, pg + 8 * w, 8);
				assert_true(v != 0);
			}
		}
	}
	assert_in_range(zero, 1024 * 35 / 100, 1024 * 65 / 100);
	/* Different seeds place zero pages differently, too. */
	{
		size_t same_zero = 0, zc = 0;

		for (size_t p = 0; p < lc / PAGE; p++) {
			int z1 = page_is_zero(ma + p * PAGE), z2 = page_is_zero(mc + p * PAGE);

			zc += (size_t)z2;
			same_zero += (size_t)(z1 && z2);
		}
		assert_in_range(zc, 1024 * 35 / 100, 1024 * 65 / 100);
		assert_true(same_zero < zero);
	}
	free(ma);
	free(mb);
	free(mc);
	free(md);
	rmig_backend_close(a);
	rmig_backend_close(b);
	rmig_backend_close(c);
	rmig_backend_close(d);

	/* zero=0%: no zero page; zero=100%: nothing but. */
	a = open_ok("sim:size=1M,dirty-rate=0,zero=0%,seed=7", RMIG_ROLE_SOURCE);
	b = open_ok("sim:size=1M,dirty-rate=0,zero=100%,seed=7", RMIG_ROLE_SOURCE);
	ma = snapshot(a, &la);
	mb = snapshot(b, &lb);
	for (size_t p = 0; p < la / PAGE; p++) {
		assert_false(page_is_zero(ma + p * PAGE));
		assert_true(page_is_zero(mb + p * PAGE));
	}
	free(ma);
	free(mb);
	rmig_backend_close(a);
	rmig_backend_close(b);
}

static void test_dirty_log(void **state)
{
	const uint64_t npages = (8u << 20) / PAGE, hot = npages * 10 / 100;
	struct rmig_backend *be;
	const struct rmig_region *r;
	size_t n, len;
	uint8_t *before, *after;
	uint64_t *bm, *again, p0, p1, dirty = 0;
	double t0, t1;

	(void)state;
	be = open_ok("sim:size=8M,dirty-rate=20000,hot=10%,zero=50%,seed=7", RMIG_ROLE_SOURCE);
	regions_of(be, &r, &n);
	assert_true(stats_of(be).running == 1);

	/* A clean starting point: paused, log cleared, memory copied. The rate
	 * check below counts from here: a writer that did not see the pause
	 * still owes writes for it. */
	t0 = now_s();
	assert_int_equal(be->ops->pause(be), 0);
	assert_true(stats_of(be).running == 0);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	bm = fetch(be, 0, npages);
	assert_true(rmig_dirty_bitmap_count(bm, npages) == 0);
	free(bm);
	before = snapshot(be, &len);
	p0 = stats_of(be).progress;

	/* Run: pages get dirtied, and only hot ones. */
	assert_int_equal(be->ops->resume(be), 0);
	assert_true(stats_of(be).running == 1);
	while (stats_of(be).progress < p0 + 500 && now_s() - t0 < 1.5)
		sleep_ms(2);
	assert_int_equal(be->ops->pause(be), 0);
	t1 = now_s();
	p1 = stats_of(be).progress;
	assert_true(p1 > p0);
	/* No faster than the rate asked for (20000 pages/s), with 10 ms of
	 * slack for the writer's last tick before the pause. */
	assert_true((double)(p1 - p0) <= 20000 * (t1 - t0 + 0.01) * 1.05 + 10);

	bm = fetch(be, 0, npages);
	dirty = rmig_dirty_bitmap_count(bm, npages);
	assert_true(dirty >= 1);
	assert_true(dirty <= hot);
	assert_true(dirty <= p1 - p0);
	/* The log is exact: a page changed if and only if its bit is set. */
	after = snapshot(be, &len);
	for (uint64_t p = 0; p < npages; p++) {
		int changed = memcmp(before + p * PAGE, after + p * PAGE, PAGE) != 0;
		int bit = (int)((bm[p / 64] >> (p % 64)) & 1);

		if (changed != bit)
			fail_msg("page %llu: changed %d, dirty bit %d", (unsigned long long)p,
				 changed, bit);
	}

	/* Paused: the next fetch is empty, and stays empty; nothing is written. */
	again = fetch(be, 0, npages);
	assert_true(rmig_dirty_bitmap_count(again, npages) == 0);
	free(again);
	sleep_ms(30);
	again = fetch(be, 0, npages);
	assert_true(rmig_dirty_bitmap_count(again, npages) == 0);
	free(again);
	assert_true(stats_of(be).progress == p1);
	free(before);
	before = snapshot(be, &len);
	assert_memory_equal(before, after, len);

	/* fetch ORs into the caller's bitmap: set bits stay set. */
	again = calloc(rmig_bitmap_words(npages), 8);
	assert_non_null(again);
	rmig_dirty_bitmap_set_all(again, npages);
	assert_int_equal(be->ops->fetch_dirty(be, 0, again), 0);
	assert_true(rmig_dirty_bitmap_count(again, npages) == npages);
	free(again);

	/* Resumed, it dirties again; start_dirty_log forgets what was logged. */
	run_for_writes(be, 200, 0);
	again = fetch(be, 0, npages);
	assert_true(rmig_dirty_bitmap_count(again, npages) >= 1);
	free(again);
	/* ORed, with something logged this time: no bit of the caller's is lost. */
	run_for_writes(be, 200, 0);
	again = calloc(rmig_bitmap_words(npages), 8);
	assert_non_null(again);
	rmig_dirty_bitmap_set_all(again, npages);
	assert_int_equal(be->ops->fetch_dirty(be, 0, again), 0);
	assert_true(rmig_dirty_bitmap_count(again, npages) == npages);
	free(again);
	run_for_writes(be, 200, 0);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	again = fetch(be, 0, npages);
	assert_true(rmig_dirty_bitmap_count(again, npages) == 0);
	free(again);

	/* No such region. */
	assert_int_equal(be->ops->fetch_dirty(be, 1, bm), -EINVAL);
	assert_int_equal(be->ops->fetch_dirty(be, (size_t)-1, bm), -EINVAL);

	free(bm);
	free(before);
	free(after);
	rmig_backend_close(be);
}

static void test_dirty_log_regions_and_throttle(void **state)
{
	const uint64_t per = (4u << 20) / 4 / PAGE;
	struct rmig_backend *be;
	uint64_t p0, total = 0;
	double t0, t1;

	(void)state;
	/* hot=100% over 4 regions: each region's log covers its own pages. */
	be = open_ok("sim:size=4M,regions=4,dirty-rate=50000,hot=100%,seed=11", RMIG_ROLE_SOURCE);
	assert_int_equal(be->ops->pause(be), 0);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	p0 = stats_of(be).progress;
	run_for_writes(be, 2000, 0);
	for (size_t i = 0; i < 4; i++) {
		uint64_t *bm = fetch(be, i, per);

		total += rmig_dirty_bitmap_count(bm, per);
		free(bm);
	}
	assert_true(total >= 1);
	assert_true(total <= stats_of(be).progress - p0);

	/* Throttled to the maximum (100 is taken as 99%): at most 1% of the rate
	 * (unthrottled, 100 ms would be ~5000 writes). */
	t0 = now_s();
	assert_int_equal(be->ops->throttle(be, 100), 0);
	p0 = stats_of(be).progress;
	assert_int_equal(be->ops->resume(be), 0);
	sleep_ms(100);
	assert_int_equal(be->ops->pause(be), 0);
	t1 = now_s();
	assert_true((double)(stats_of(be).progress - p0) <=
		    50000 * 0.01 * (t1 - t0 + 0.02) * 1.05 + 3);
	assert_int_equal(be->ops->throttle(be, 0), 0);
	rmig_backend_close(be);

	/* A hot share that rounds to no page still gets one page. */
	be = open_ok("sim:size=40K,hot=5%,dirty-rate=50000,seed=2", RMIG_ROLE_SOURCE);
	assert_int_equal(be->ops->pause(be), 0);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	run_for_writes(be, 50, 0);
	{
		uint64_t *bm = fetch(be, 0, 10);

		assert_true(rmig_dirty_bitmap_count(bm, 10) == 1);
		free(bm);
	}
	rmig_backend_close(be);

	/* hot=0%: the writer has nothing to touch. */
	be = open_ok("sim:size=1M,hot=0%,dirty-rate=100000,seed=1", RMIG_ROLE_SOURCE);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	sleep_ms(30);
	assert_int_equal(be->ops->pause(be), 0);
	{
		uint64_t *bm = fetch(be, 0, 256);

		assert_true(rmig_dirty_bitmap_count(bm, 256) == 0);
		free(bm);
	}
	assert_true(stats_of(be).progress == 0);
	rmig_backend_close(be);
}

/* A destination prepared with the layout of src. */
static struct rmig_backend *dest_for(struct rmig_backend *src)
{
	struct rmig_backend *dst = open_ok("sim", RMIG_ROLE_DEST);
	const struct rmig_region *r;
	struct rmig_region want[RMIG_MAX_REGIONS];
	size_t n;

	regions_of(src, &r, &n);
	for (size_t i = 0; i < n; i++) {
		want[i] = r[i];
		want[i].host = NULL;
	}
	assert_int_equal(dst->ops->prepare_regions(dst, want, n), 0);
	return dst;
}

/* After a device-state load, source and destination carry on with the same
 * write sequence: the pages each dirties are a prefix of the same sequence,
 * so one set contains the other. w: writes both had at the load. */
static void carry_on_alike(struct rmig_backend *src, struct rmig_backend *dst, uint64_t npages,
			   uint64_t w)
{
	uint64_t ws, wd, *ds, *dd;

	assert_int_equal(src->ops->start_dirty_log(src), 0);
	assert_int_equal(dst->ops->start_dirty_log(dst), 0);
	run_for_writes(src, 300, 0);
	run_for_writes(dst, 300, 1); /* start, not resume */
	ws = stats_of(src).progress - w;
	wd = stats_of(dst).progress - w;
	ds = fetch(src, 0, npages);
	dd = fetch(dst, 0, npages);
	assert_true(rmig_dirty_bitmap_count(dd, npages) >= 1);
	for (uint64_t i = 0; i < rmig_bitmap_words(npages); i++) {
		if (ws <= wd)
			assert_true((ds[i] & ~dd[i]) == 0);
		else
			assert_true((dd[i] & ~ds[i]) == 0);
	}
	free(ds);
	free(dd);
}

static void test_state_roundtrip(void **state)
{
	const uint64_t npages = (8u << 20) / PAGE;
	struct rmig_backend *src, *dst;
	const struct rmig_region *sr, *dr;
	size_t sn, dn, len, len2, dlen;
	void *blob, *blob2, *dblob;
	uint64_t w;

	(void)state;
	src = open_ok("sim:size=8M,dirty-rate=20000,hot=10%,zero=50%,seed=7", RMIG_ROLE_SOURCE);
	run_for_writes(src, 100, 0); /* opened running; pauses */
	assert_int_equal(src->ops->save_state(src, &blob, &len), 0);
	assert_non_null(blob);
	assert_int_equal(len, sizeof(struct sim_state_blob));
	/* Paused: the state does not move. */
	assert_int_equal(src->ops->save_state(src, &blob2, &len2), 0);
	assert_int_equal(len, len2);
	assert_memory_equal(blob, blob2, len);
	free(blob2);
	w = stats_of(src).progress;

	/* A destination has nothing until it is given a layout. */
	dst = open_ok("sim", RMIG_ROLE_DEST);
	{
		const struct rmig_region *r;
		size_t n;

		dst->err[0] = 0;
		assert_int_equal(dst->ops->get_regions(dst, &r, &n), -ENOENT);
		assert_true(dst->err[0] != 0);
	}
	assert_true(stats_of(dst).running == 0);
	rmig_backend_close(dst);

	dst = dest_for(src);
	regions_of(src, &sr, &sn);
	regions_of(dst, &dr, &dn);
	assert_int_equal(sn, dn);
	for (size_t i = 0; i < sn; i++) {
		assert_int_equal(dr[i].id, sr[i].id);
		assert_int_equal(dr[i].page_size, sr[i].page_size);
		assert_true(dr[i].gpa == sr[i].gpa);
		assert_true(dr[i].len == sr[i].len);
		assert_non_null(dr[i].host);
		assert_ptr_not_equal(dr[i].host, sr[i].host);
		/* Fresh memory: zero, waiting for pages. */
		for (uint64_t off = 0; off < dr[i].len; off += PAGE)
			assert_true(page_is_zero((const uint8_t *)dr[i].host + off));
	}
	/* A second layout is refused. */
	{
		struct rmig_region want = sr[0];

		dst->err[0] = 0;
		assert_int_equal(dst->ops->prepare_regions(dst, &want, 1), -EBUSY);
		assert_true(dst->err[0] != 0);
	}

	/* Load: the destination's state is the source's, bit for bit. */
	assert_int_equal(dst->ops->load_state(dst, blob, len), 0);
	assert_int_equal(dst->ops->save_state(dst, &dblob, &dlen), 0);
	assert_int_equal(dlen, len);
	assert_memory_equal(dblob, blob, len);
	free(dblob);
	assert_true(stats_of(dst).progress == w);
	assert_true(stats_of(dst).running == 0);

	carry_on_alike(src, dst, npages, w);
	/* start on a started (paused) destination resumes it. */
	assert_int_equal(dst->ops->start(dst), 0);
	assert_true(stats_of(dst).running == 1);
	rmig_backend_close(dst);

	/* Bad blobs are refused with a reason, and the good one still loads. */
	dst = dest_for(src);
	{
		struct sim_state_blob b;
		uint8_t *big = calloc(1, len + 1);

		assert_non_null(big);
		memcpy(big, blob, len);
		dst->err[0] = 0;
		assert_int_equal(dst->ops->load_state(dst, blob, len - 1), -EINVAL);
		assert_non_null(strstr(dst->err, "bytes"));
		assert_int_equal(dst->ops->load_state(dst, big, len + 1), -EINVAL);
		assert_int_equal(dst->ops->load_state(dst, big, 0), -EINVAL);
		free(big);

		memcpy(&b, blob, sizeof(b));
		b.magic ^= 1;
		dst->err[0] = 0;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		assert_non_null(strstr(dst->err, "magic"));
		memcpy(&b, blob, sizeof(b));
		b.version++;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.npages++;
		dst->err[0] = 0;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		assert_non_null(strstr(dst->err, "does not match"));
		memcpy(&b, blob, sizeof(b));
		b.nregions = 2;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.hot_pages = b.npages + 1;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.stride = 0;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.stride = b.npages;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.hot_zero = 0;
		b.zero_pct = 100; /* no page to write */
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.hot_zero = 2;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.zero_pct = 101;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		memcpy(&b, blob, sizeof(b));
		b.zero_run = 0;
		assert_int_equal(dst->ops->load_state(dst, &b, sizeof(b)), -EINVAL);
		/* None of that changed anything. */
		assert_true(stats_of(dst).progress == 0);
		assert_int_equal(dst->ops->load_state(dst, blob, len), 0);
		assert_true(stats_of(dst).progress == w);
	}
	rmig_backend_close(dst);

	/* A blob from a different-sized guest does not fit this layout. */
	{
		struct rmig_backend *small =
		    open_ok("sim:size=4M,dirty-rate=0,seed=7", RMIG_ROLE_SOURCE);

		dst = dest_for(small);
		dst->err[0] = 0;
		assert_int_equal(dst->ops->load_state(dst, blob, len), -EINVAL);
		assert_true(dst->err[0] != 0);
		rmig_backend_close(dst);
		rmig_backend_close(small);
	}
	free(blob);
	rmig_backend_close(src);
}

/* Pages of the guest written by the writer (dirty in region 0's log after
 * `writes` writes) that were zero when it was opened; *written: all of them. */
static uint64_t writes_into_zero(const char *spec, uint64_t writes, uint64_t *written)
{
	struct rmig_backend *be = open_ok(spec, RMIG_ROLE_SOURCE);
	const struct rmig_region *r;
	size_t n;
	uint64_t npages, into_zero = 0, *dirty;
	uint8_t *was_zero;

	regions_of(be, &r, &n);
	npages = r[0].len / PAGE;
	assert_int_equal(be->ops->pause(be), 0);
	was_zero = malloc(npages);
	assert_non_null(was_zero);
	for (uint64_t p = 0; p < npages; p++)
		was_zero[p] = (uint8_t)page_is_zero((const uint8_t *)r[0].host + p * PAGE);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	run_for_writes(be, writes, 0);
	dirty = fetch(be, 0, npages);
	*written = rmig_dirty_bitmap_count(dirty, npages);
	for (uint64_t p = 0; p < npages; p++)
		into_zero += ((dirty[p / 64] >> (p % 64)) & 1) && was_zero[p];
	free(dirty);
	free(was_zero);
	rmig_backend_close(be);
	return into_zero;
}

/* hot-zero=0 travels in the device state: the destination's writer redraws
 * the same pages as the source's would have. */
static void test_state_hot_zero(void **state)
{
	const uint64_t npages = (8u << 20) / PAGE;
	struct rmig_backend *src, *dst;
	void *blob;
	size_t len;
	uint64_t w;

	(void)state;
	src = open_ok("sim:size=8M,dirty-rate=20000,hot=10%,zero=75%,zero-run=64,seed=9,hot-zero=0",
		      RMIG_ROLE_SOURCE);
	run_for_writes(src, 100, 0);
	assert_int_equal(src->ops->save_state(src, &blob, &len), 0);
	w = stats_of(src).progress;
	dst = dest_for(src);
	assert_int_equal(dst->ops->load_state(dst, blob, len), 0);
	carry_on_alike(src, dst, npages, w);
	free(blob);
	rmig_backend_close(dst);
	rmig_backend_close(src);
}

/* hot-zero=0: the writer keeps to pages that started with data, so free
 * memory stays free (and never populated); by default it writes anywhere. */
static void test_hot_zero(void **state)
{
	const char *stays =
	    "sim:size=64M,dirty-rate=200000,hot=20%,zero=75%,zero-run=512,seed=5,hot-zero=0";
	const char *fills = "sim:size=64M,dirty-rate=200000,hot=20%,zero=75%,zero-run=512,seed=5";
	uint64_t written;

	(void)state;
	assert_true(writes_into_zero(stays, 2000, &written) == 0);
	assert_true(written >= 500); /* the hot set kept a useful size */
	assert_true(writes_into_zero(fills, 2000, &written) > 0);
}

static void test_dest_bad_layouts(void **state)
{
	struct rmig_backend *dst = NULL;
	struct rmig_region l[2] = {
		{ .id = 0, .page_size = PAGE, .gpa = 0, .len = 1 << 20 },
		{ .id = 1, .page_size = PAGE, .gpa = 1 << 20, .len = 1 << 20 },
	};
	char err[256] = "";

	(void)state;
	/* The destination takes no options. */
	assert_true(rmig_backend_open("sim:size=8M", RMIG_ROLE_DEST, &dst, err, sizeof(err)) < 0);
	assert_null(dst);
	assert_non_null(strstr(err, "destination"));

	dst = open_ok("sim", RMIG_ROLE_DEST);
	l[1].page_size = 8192;
	dst->err[0] = 0;
	assert_int_equal(dst->ops->prepare_regions(dst, l, 2), -EINVAL);
	assert_true(dst->err[0] != 0);
	l[1].page_size = PAGE;
	l[1].len = 2 << 20; /* unequal regions */
	assert_int_equal(dst->ops->prepare_regions(dst, l, 2), -EINVAL);
	l[1].len = 1 << 20;
	l[1].id = 7; /* ids must be 0..n-1 */
	assert_int_equal(dst->ops->prepare_regions(dst, l, 2), -EINVAL);
	/* A guest larger than the host. */
	l[1].id = 1;
	l[0].len = l[1].len = 1ull << 50;
	dst->err[0] = 0;
	assert_int_equal(dst->ops->prepare_regions(dst, l, 2), -ENOMEM);
	assert_non_null(strstr(dst->err, "fit"));
	/* After all that, a good layout is still taken. */
	l[0].len = l[1].len = 1 << 20;
	assert_int_equal(dst->ops->prepare_regions(dst, l, 2), 0);
	rmig_backend_close(dst);
}

/* Regression: an empty layout used to read layout[0] and succeed with no
 * memory. */
static void test_dest_empty_layout(void **state)
{
	struct rmig_backend *dst;
	struct rmig_region l = { .id = 0, .page_size = PAGE, .gpa = 0, .len = 1 << 20 };

	(void)state;
	dst = open_ok("sim", RMIG_ROLE_DEST);
	assert_true(dst->ops->prepare_regions(dst, &l, 0) < 0);
	rmig_backend_close(dst);
}

static void test_bad_specs(void **state)
{
	static const struct {
		const char *spec;
		const char *mention; /* the error names the bad option */
		int rc;
	} bad[] = {
		{ "sim:bogus=1", "bogus", -EINVAL },
		{ "sim:size=8M,bogus=1", "bogus", -EINVAL },
		{ "sim:size=0", "size", -EINVAL },
		{ "sim:size=", "size", -EINVAL },
		{ "sim:size=1Q", "size", -EINVAL },
		{ "sim:size=abc", "size", -EINVAL },
		{ "sim:size=4095", "size", -EINVAL },
		{ "sim:size=99999999999999999999G", "size", -EINVAL },
		{ "sim:size=16777216T", "size", -ERANGE },
		{ "sim:size=8M,regions=3", "size", -EINVAL },
		{ "sim:size=4K,regions=2", "size", -EINVAL },
		{ "sim:hot=200%", "hot", -EINVAL },
		{ "sim:hot=101", "hot", -EINVAL },
		{ "sim:hot=10%%", "hot", -EINVAL },
		{ "sim:hot=x%", "hot", -EINVAL },
		{ "sim:hot=-5%", "hot", -EINVAL },
		{ "sim:zero=abc", "zero", -EINVAL },
		{ "sim:zero=150%", "zero", -EINVAL },
		{ "sim:hot-zero=2", "hot-zero", -EINVAL },
		{ "sim:size=1M,zero=100%,hot-zero=0", "hot-zero=0 with zero=100%", -EINVAL },
		{ "sim:dirty-rate=fast", "dirty-rate", -EINVAL },
		{ "sim:dirty-rate=-5", "dirty-rate", -EINVAL },
		{ "sim:seed=xyz", "seed", -EINVAL },
		{ "sim:seed=", "seed", -EINVAL },
		{ "sim:regions=0", "regions", -EINVAL },
		{ "sim:regions=65", "regions", -EINVAL },
		{ "sim:regions=two", "regions", -EINVAL },
		{ "sim:garbage", "garbage", -EINVAL },
		{ "sim:size=8M,garbage", "garbage", -EINVAL },
		{ "sim:=5", "unknown", -EINVAL },
		{ "sim:size=1000T", "fit", -ENOMEM },
		{ "nosuch:size=1M", "nosuch", -ENOENT },
		{ "nosuch", "nosuch", -ENOENT },
		{ "", "spec", -EINVAL },
		{ ":size=1M", "spec", -EINVAL },
		{ "a-very-long-backend-name-that-is-too-long:x=1", "spec", -EINVAL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rmig_backend *be = NULL;
		char err[256];
		int rc;

		memset(err, 0, sizeof(err));
		rc = rmig_backend_open(bad[i].spec, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
		if (rc != bad[i].rc || !strstr(err, bad[i].mention))
			fail_msg("'%s': rc %d (want %d), error '%s' (want it to mention '%s')",
				 bad[i].spec, rc, bad[i].rc, err, bad[i].mention);
		assert_null(be);
	}
	/* A tiny error buffer is truncated and terminated. */
	{
		struct rmig_backend *be = NULL;
		char err[8];

		memset(err, 'x', sizeof(err));
		assert_true(
		    rmig_backend_open("sim:bogus=1", RMIG_ROLE_SOURCE, &be, err, sizeof(err)) < 0);
		assert_int_equal(strlen(err), sizeof(err) - 1);
	}
	/* Close of NULL is harmless. */
	rmig_backend_close(NULL);
}

static void test_registry(void **state)
{
	static const struct rmig_backend_ops incomplete = { .size = sizeof(incomplete),
							    .name = "half" };

	(void)state;
	assert_non_null(rmig_backend_find("sim"));
	assert_null(rmig_backend_find("nosuch"));
	assert_null(rmig_backend_find(""));
	/* Registering needs the mandatory ops; the name must be free. */
	assert_int_equal(rmig_backend_register(&incomplete), -EINVAL);
	assert_int_equal(rmig_backend_register(NULL), -EINVAL);
	{
		struct rmig_backend_ops d = *rmig_backend_find("sim");

		assert_int_equal(rmig_backend_register(&d), -EEXIST);
	}
	assert_null(rmig_backend_find("half"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_regions),
		cmocka_unit_test(test_deterministic_content),
		cmocka_unit_test(test_dirty_log),
		cmocka_unit_test(test_dirty_log_regions_and_throttle),
		cmocka_unit_test(test_state_roundtrip),
		cmocka_unit_test(test_hot_zero),
		cmocka_unit_test(test_state_hot_zero),
		cmocka_unit_test(test_dest_bad_layouts),
		cmocka_unit_test(test_dest_empty_layout),
		cmocka_unit_test(test_bad_specs),
		cmocka_unit_test(test_registry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
