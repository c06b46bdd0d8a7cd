/* test_uffd.c - the uffd backend: dirty pages found by the kernel (userfaultfd
 * asynchronous write protection + PAGEMAP_SCAN) are exactly the pages
 * written; embedding params and their errors; the "uffd:" spec over a sim
 * guest, both roles. Skips, saying why, where the kernel lacks the features
 * (Linux < 6.7) or forbids userfaultfd. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "rmig_backend.h"
#include "rmig_uffd.h"
#include "kernel_compat.h"

static size_t PAGE;
static char skip_why[256]; /* set when the kernel cannot track writes */

/* What the callbacks saw. */
struct calls {
	int pause, resume, start, throttle, save, load;
	unsigned last_pct;
	int fail; /* make every callback return this */
};

static int cb_pause(void *a)
{
	((struct calls *)a)->pause++;
	return ((struct calls *)a)->fail;
}

static int cb_resume(void *a)
{
	((struct calls *)a)->resume++;
	return ((struct calls *)a)->fail;
}

static int cb_start(void *a)
{
	((struct calls *)a)->start++;
	return ((struct calls *)a)->fail;
}

static int cb_throttle(void *a, unsigned pct)
{
	((struct calls *)a)->throttle++;
	((struct calls *)a)->last_pct = pct;
	return ((struct calls *)a)->fail;
}

static int cb_save(void *a, void **blob, size_t *len)
{
	((struct calls *)a)->save++;
	*blob = strdup("state");
	*len = 6;
	return ((struct calls *)a)->fail;
}

static int cb_load(void *a, const void *blob, size_t len)
{
	((struct calls *)a)->load++;
	return len == 6 && !memcmp(blob, "state", 6) ? ((struct calls *)a)->fail : -EBADMSG;
}

static void need_kernel(void)
{
	if (skip_why[0]) {
		print_message("SKIP: %s\n", skip_why);
		skip();
	}
}

static uint8_t *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

static struct rmig_uffd_params params(void *addr, size_t len, struct calls *c)
{
	return (struct rmig_uffd_params){ .addr = addr,
					  .len = len,
					  .pause = cb_pause,
					  .resume = cb_resume,
					  .start = cb_start,
					  .arg = c };
}

static struct rmig_backend *create_ok(const struct rmig_uffd_params *p, enum rmig_role role)
{
	struct rmig_backend *be = NULL;
	char err[256] = "";
	int rc = rmig_uffd_backend_create(p, role, &be, err, sizeof(err));

	if (rc)
		fail_msg("rmig_uffd_backend_create: %d %s", rc, err);
	assert_non_null(be);
	assert_string_equal(be->ops->name, "uffd");
	assert_int_equal(be->role, role);
	return be;
}

/* A source over mem, or a skip where the kernel cannot track writes. */
static struct rmig_backend *source(uint8_t *mem, size_t len, struct calls *c)
{
	struct rmig_uffd_params p = params(mem, len, c);

	need_kernel();
	return create_ok(&p, RMIG_ROLE_SOURCE);
}

static uint64_t *fetch(struct rmig_backend *be, uint64_t npages)
{
	uint64_t *bm = calloc((npages + 63) / 64, 8);

	assert_non_null(bm);
	if (be->ops->fetch_dirty(be, 0, bm))
		fail_msg("fetch_dirty: %s", be->err);
	return bm;
}

static int bit(const uint64_t *bm, uint64_t i)
{
	return (int)((bm[i / 64] >> (i % 64)) & 1);
}

/* The bitmap has exactly the pages in want[] set. */
static void assert_exactly(const uint64_t *bm, uint64_t npages, const uint64_t *want, size_t n)
{
	for (uint64_t p = 0; p < npages; p++) {
		int wanted = 0;

		for (size_t i = 0; i < n; i++)
			wanted |= want[i] == p;
		if (bit(bm, p) != wanted)
			fail_msg("page %llu: dirty bit %d, written %d", (unsigned long long)p,
				 bit(bm, p), wanted);
	}
}

static void touch(uint8_t *mem, uint64_t page)
{
	((volatile uint8_t *)mem)[page * PAGE + page % PAGE] += 1;
}

static void test_exact_pages(void **state)
{
	const uint64_t npages = 4096, last = npages - 1;
	uint8_t *mem = map(npages * PAGE);
	struct calls c = { 0 };
	struct rmig_backend *be;
	const struct rmig_region *r;
	uint64_t *bm;
	size_t n;

	(void)state;
	/* Pages 0..63 exist; 100 and the last were never touched. */
	for (uint64_t i = 0; i < 64; i++)
		touch(mem, i);
	be = source(mem, npages * PAGE, &c);
	assert_int_equal(be->ops->get_regions(be, &r, &n), 0);
	assert_int_equal(n, 1);
	assert_ptr_equal(r[0].host, mem);
	assert_true(r[0].len == npages * PAGE && r[0].page_size == PAGE && r[0].id == 0);

	assert_int_equal(be->ops->start_dirty_log(be), 0);
	bm = fetch(be, npages);
	assert_exactly(bm, npages, NULL, 0);
	free(bm);

	{
		const uint64_t want[] = { 3, 4, 100, last };

		for (size_t i = 0; i < 4; i++)
			touch(mem, want[i]);
		bm = fetch(be, npages);
		assert_exactly(bm, npages, want, 4);
		free(bm);
	}
	/* Fetching cleared them. */
	bm = fetch(be, npages);
	assert_exactly(bm, npages, NULL, 0);
	free(bm);
	/* Again, one page: just that one, however often it was written. */
	{
		const uint64_t want[] = { 4 };

		touch(mem, 4);
		touch(mem, 4);
		bm = fetch(be, npages);
		assert_exactly(bm, npages, want, 1);
		free(bm);
	}
	/* fetch_dirty ORs: the caller's bits stay. */
	{
		const uint64_t want[] = { 7, 100 };

		bm = calloc(npages / 64, 8);
		assert_non_null(bm);
		bm[0] = 1ull << 7;
		touch(mem, 100);
		assert_int_equal(be->ops->fetch_dirty(be, 0, bm), 0);
		assert_exactly(bm, npages, want, 2);
		free(bm);
	}
	/* The kernel writing for a syscall (read() into the memory) counts too,
	 * and is not refused: the descriptor is user-mode-only. */
	{
		const uint64_t want[] = { 5, 200 };
		int fds[2];

		assert_int_equal(pipe(fds), 0);
		assert_int_equal(write(fds[1], "abcd", 4), 4);
		assert_int_equal(read(fds[0], mem + 5 * PAGE + 8, 2), 2);
		assert_int_equal(read(fds[0], mem + 200 * PAGE, 2), 2);
		close(fds[0]);
		close(fds[1]);
		assert_memory_equal(mem + 200 * PAGE, "cd", 2);
		bm = fetch(be, npages);
		assert_exactly(bm, npages, want, 2);
		free(bm);
	}
	/* Reads are not writes, of touched or never-touched pages. */
	{
		volatile uint8_t sum = 0;

		for (uint64_t i = 0; i < npages; i += 7)
			sum += mem[i * PAGE];
		(void)sum;
		bm = fetch(be, npages);
		assert_exactly(bm, npages, NULL, 0);
		free(bm);
	}
	assert_int_equal(c.pause + c.resume + c.start, 0);
	rmig_backend_close(be);
	munmap(mem, npages * PAGE);
}

static void test_written_before_start(void **state)
{
	const uint64_t npages = 256;
	uint8_t *mem = map(npages * PAGE);
	struct calls c = { 0 };
	struct rmig_backend *be;
	uint64_t *bm;

	(void)state;
	touch(mem, 10); /* before the backend */
	be = source(mem, npages * PAGE, &c);
	touch(mem, 11); /* before the log */
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	bm = fetch(be, npages);
	assert_exactly(bm, npages, NULL, 0);
	free(bm);
	/* start_dirty_log again forgets what was logged. */
	touch(mem, 20);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	bm = fetch(be, npages);
	assert_exactly(bm, npages, NULL, 0);
	free(bm);
	{
		const uint64_t want[] = { 10 };

		touch(mem, 10);
		bm = fetch(be, npages);
		assert_exactly(bm, npages, want, 1);
		free(bm);
	}
	rmig_backend_close(be);
	munmap(mem, npages * PAGE);
}

/* More separate runs than one PAGEMAP_SCAN returns: the walk resumes at
 * walk_end until the region is done. */
static void test_many_runs(void **state)
{
	const uint64_t npages = 8192;
	uint8_t *mem = map(npages * PAGE);
	struct calls c = { 0 };
	struct rmig_backend *be;
	uint64_t *bm, count = 0;

	(void)state;
	be = source(mem, npages * PAGE, &c);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	for (uint64_t i = 0; i < npages; i += 2)
		touch(mem, i);
	bm = fetch(be, npages);
	for (uint64_t i = 0; i < npages; i++) {
		if (bit(bm, i) != !(i % 2))
			fail_msg("page %llu: dirty bit %d", (unsigned long long)i, bit(bm, i));
		count += (uint64_t)bit(bm, i);
	}
	assert_true(count == npages / 2);
	free(bm);
	rmig_backend_close(be);
	munmap(mem, npages * PAGE);
}

/* A transparent huge page written in one place reports one page, not 512:
 * the kernel splits it rather than lose precision. */
static void test_huge_page(void **state)
{
	const size_t huge = 2u << 20, len = 4 * huge;
	uint8_t *raw = map(len + huge), *mem;
	const uint64_t npages = len / PAGE, want[] = { 700 };
	struct calls c = { 0 };
	struct rmig_backend *be;
	uint64_t *bm;

	(void)state;
	mem = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
	madvise(mem, len, MADV_HUGEPAGE);
	memset(mem, 1, len);
	be = source(mem, len, &c);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	touch(mem, want[0]);
	bm = fetch(be, npages);
	assert_exactly(bm, npages, want, 1);
	free(bm);
	rmig_backend_close(be);
	munmap(raw, len + huge);
}

static void test_callbacks(void **state)
{
	const size_t len = 16 * PAGE;
	uint8_t *mem = map(len);
	struct calls c = { 0 };
	struct rmig_uffd_params p = params(mem, len, &c);
	struct rmig_backend *be;
	void *blob = (void *)1;
	size_t blen = 1;

	(void)state;
	need_kernel();
	be = create_ok(&p, RMIG_ROLE_SOURCE);
	/* No throttle callback: the engine must not be offered one. */
	assert_null(be->ops->throttle);
	assert_null(be->ops->guest_stats);
	assert_int_equal(be->ops->pause(be), 0);
	assert_int_equal(be->ops->resume(be), 0);
	assert_int_equal(c.pause, 1);
	assert_int_equal(c.resume, 1);
	/* No save_state: an empty device state. */
	assert_int_equal(be->ops->save_state(be, &blob, &blen), 0);
	assert_null(blob);
	assert_int_equal(blen, 0);
	c.fail = -EIO;
	be->err[0] = 0;
	assert_int_equal(be->ops->pause(be), -EIO);
	assert_non_null(strstr(be->err, "pause"));
	rmig_backend_close(be);

	c = (struct calls){ 0 };
	p.throttle = cb_throttle;
	p.save_state = cb_save;
	be = create_ok(&p, RMIG_ROLE_SOURCE);
	assert_non_null(be->ops->throttle);
	assert_int_equal(be->ops->throttle(be, 40), 0);
	assert_int_equal(c.throttle, 1);
	assert_int_equal(c.last_pct, 40);
	assert_int_equal(be->ops->save_state(be, &blob, &blen), 0);
	assert_int_equal(blen, 6);
	assert_string_equal(blob, "state");
	free(blob);
	c.fail = -ENODEV;
	be->err[0] = 0;
	assert_int_equal(be->ops->throttle(be, 10), -ENODEV);
	assert_non_null(strstr(be->err, "throttle"));
	rmig_backend_close(be);
	munmap(mem, len);
}

static void test_fetch_errors(void **state)
{
	const size_t len = 16 * PAGE;
	uint8_t *mem = map(len);
	struct calls c = { 0 };
	struct rmig_backend *be;
	uint64_t bm[1] = { 0 };

	(void)state;
	be = source(mem, len, &c);
	/* Nothing tracked before start_dirty_log; one region only. */
	assert_int_equal(be->ops->fetch_dirty(be, 0, bm), -EINVAL);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	be->err[0] = 0;
	assert_int_equal(be->ops->fetch_dirty(be, 1, bm), -EINVAL);
	assert_true(be->err[0] != 0);
	assert_int_equal(be->ops->fetch_dirty(be, 0, bm), 0);
	/* The memory replaced behind the backend's back: no longer registered. */
	assert_true(mmap(mem, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == mem);
	be->err[0] = 0;
	assert_int_equal(be->ops->fetch_dirty(be, 0, bm), -EPERM);
	assert_non_null(strstr(be->err, "PAGEMAP_SCAN"));
	rmig_backend_close(be);
	munmap(mem, len);
}

/* Closing unregisters: a scan that insists on write-protected memory then
 * refuses the range. */
static void test_close_unregisters(void **state)
{
	const size_t len = 16 * PAGE;
	uint8_t *mem = map(len);
	struct calls c = { 0 };
	struct rmig_backend *be;
	struct pm_scan_arg a = { .size = sizeof(a),
				 .flags = PM_SCAN_CHECK_WPASYNC,
				 .start = (uintptr_t)mem,
				 .end = (uintptr_t)mem + len };
	int fd = open("/proc/self/pagemap", O_RDONLY);

	(void)state;
	assert_true(fd >= 0);
	be = source(mem, len, &c);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	assert_true(ioctl(fd, PAGEMAP_SCAN, &a) >= 0);
	rmig_backend_close(be);
	assert_true(ioctl(fd, PAGEMAP_SCAN, &a) < 0 && errno == EPERM);
	touch(mem, 3); /* still the caller's, writable */
	close(fd);
	munmap(mem, len);
}

static void test_dest(void **state)
{
	const size_t len = 256 * PAGE;
	uint8_t *mem = map(len);
	struct calls c = { 0 };
	struct rmig_uffd_params p = params(mem, len, &c);
	struct rmig_region l[2] = {
		{ .id = 0, .page_size = (uint32_t)PAGE, .gpa = 0, .len = 128 * PAGE },
		{ .id = 1, .page_size = (uint32_t)PAGE, .gpa = 128 * PAGE, .len = 128 * PAGE },
	};
	const struct rmig_region *r;
	struct rmig_backend *be;
	size_t n;

	(void)state;
	/* No kernel feature needed here. */
	p.pause = p.resume = NULL;
	be = create_ok(&p, RMIG_ROLE_DEST);
	assert_int_equal(be->ops->get_regions(be, &r, &n), -ENOENT);
	be->err[0] = 0;
	assert_int_equal(be->ops->prepare_regions(be, l, 2), -EINVAL);
	assert_true(be->err[0] != 0);
	assert_int_equal(be->ops->prepare_regions(be, l, 0), -EINVAL);
	l[0].page_size = 2 * (uint32_t)PAGE;
	assert_int_equal(be->ops->prepare_regions(be, l, 1), -EINVAL);
	l[0].page_size = (uint32_t)PAGE;
	l[0].len = len + PAGE;
	be->err[0] = 0;
	assert_int_equal(be->ops->prepare_regions(be, l, 1), -ENOMEM);
	assert_non_null(strstr(be->err, "fit"));
	/* A smaller guest fits, at the start of the memory. */
	l[0].len = 128 * PAGE;
	l[0].gpa = 1ull << 32;
	assert_int_equal(be->ops->prepare_regions(be, l, 1), 0);
	assert_int_equal(be->ops->get_regions(be, &r, &n), 0);
	assert_int_equal(n, 1);
	assert_ptr_equal(r[0].host, mem);
	assert_true(r[0].len == 128 * PAGE && r[0].gpa == 1ull << 32);
	assert_int_equal(be->ops->prepare_regions(be, l, 1), -EBUSY);
	/* No tracking on this side. */
	assert_int_equal(be->ops->start_dirty_log(be), -EINVAL);
	/* No load_state callback: only an empty state. */
	assert_int_equal(be->ops->load_state(be, "", 0), 0);
	assert_int_equal(be->ops->load_state(be, "state", 6), -EINVAL);
	assert_int_equal(be->ops->start(be), 0);
	assert_int_equal(c.start, 1);
	rmig_backend_close(be);

	p.load_state = cb_load;
	be = create_ok(&p, RMIG_ROLE_DEST);
	assert_int_equal(be->ops->load_state(be, "state", 6), 0);
	assert_int_equal(c.load, 1);
	be->err[0] = 0;
	assert_int_equal(be->ops->load_state(be, "other", 6), -EBADMSG);
	assert_non_null(strstr(be->err, "load_state"));
	rmig_backend_close(be);
	munmap(mem, len);
}

static void test_bad_params(void **state)
{
	static uint8_t page_buf[2 * 65536] __attribute__((aligned(65536)));
	struct calls c = { 0 };
	const struct {
		struct rmig_uffd_params p;
		enum rmig_role role;
		const char *mention;
	} bad[] = {
		{ params(NULL, PAGE, &c), RMIG_ROLE_SOURCE, "addr" },
		{ params(page_buf + 1, PAGE, &c), RMIG_ROLE_SOURCE, "addr" },
		{ params(page_buf, 0, &c), RMIG_ROLE_SOURCE, "len" },
		{ params(page_buf, PAGE + 1, &c), RMIG_ROLE_DEST, "len" },
		{ params(page_buf, PAGE, &c), (enum rmig_role)7, "role" },
	};
	struct rmig_backend *be;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		be = (struct rmig_backend *)1;
		memset(err, 0, sizeof(err));
		if (rmig_uffd_backend_create(&bad[i].p, bad[i].role, &be, err, sizeof(err)) !=
			-EINVAL ||
		    !strstr(err, bad[i].mention))
			fail_msg("case %zu: error '%s', want -EINVAL mentioning '%s'", i, err,
				 bad[i].mention);
		assert_null(be);
	}
	/* Missing callbacks, per role. */
	{
		struct rmig_uffd_params p = params(page_buf, PAGE, &c);

		p.resume = NULL;
		assert_int_equal(
		    rmig_uffd_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "resume"));
		p = params(page_buf, PAGE, &c);
		p.pause = NULL;
		assert_int_equal(
		    rmig_uffd_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err)), -EINVAL);
		p = params(page_buf, PAGE, &c);
		p.start = NULL;
		assert_int_equal(
		    rmig_uffd_backend_create(&p, RMIG_ROLE_DEST, &be, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "start"));
		assert_null(be);
	}
	/* No params, no out, no error buffer: refused, nothing written. */
	assert_int_equal(rmig_uffd_backend_create(NULL, RMIG_ROLE_DEST, &be, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "params"));
	{
		struct rmig_uffd_params p = params(page_buf, PAGE, &c);

		assert_int_equal(rmig_uffd_backend_create(&p, RMIG_ROLE_DEST, NULL, NULL, 0),
				 -EINVAL);
	}
	/* Spec errors name the option. */
	{
		static const struct {
			const char *spec;
			enum rmig_role role;
			const char *mention;
		} specs[] = {
			{ "uffd:size=8M,dirty-rate=5", RMIG_ROLE_DEST, "size=" },
			{ "uffd:size=x", RMIG_ROLE_DEST, "size=" },
			{ "uffd:hot=5%", RMIG_ROLE_DEST, "size=" },
			{ "uffd:size=0", RMIG_ROLE_DEST, "size=" },
		};

		for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
			be = NULL;
			memset(err, 0, sizeof(err));
			if (rmig_backend_open(specs[i].spec, specs[i].role, &be, err,
					      sizeof(err)) != -EINVAL ||
			    !strstr(err, specs[i].mention))
				fail_msg("'%s': error '%s', want -EINVAL mentioning '%s'",
					 specs[i].spec, err, specs[i].mention);
			assert_null(be);
		}
	}
}

static void test_spec_bad_source(void **state)
{
	struct rmig_backend *be = NULL;
	char err[256] = "";

	(void)state;
	need_kernel();
	/* The source's options are sim's, and so are its messages. */
	assert_int_equal(
	    rmig_backend_open("uffd:size=8M,bogus=1", RMIG_ROLE_SOURCE, &be, err, sizeof(err)),
	    -EINVAL);
	assert_non_null(strstr(err, "bogus"));
	assert_true(!strncmp(err, "uffd: ", 6));
	assert_null(be);
}

static uint64_t progress(struct rmig_backend *be)
{
	struct rmig_guest_stats st;

	assert_int_equal(be->ops->guest_stats(be, &st), 0);
	return st.progress;
}

/* "uffd:" over a sim guest: the kernel's log is exact, a page is reported if
 * and only if the writer changed it; its state loads into a sim destination. */
static void test_spec_sim_guest(void **state)
{
	const uint64_t npages = (8u << 20) / 4096;
	struct rmig_backend *be, *dst;
	const struct rmig_region *r;
	uint8_t *before;
	uint64_t *bm, p0, dirty = 0;
	struct timespec ms = { 0, 1000000 };
	void *blob;
	size_t n, len;

	(void)state;
	need_kernel();
	{
		char err[256] = "";

		if (rmig_backend_open("uffd:size=8M,dirty-rate=20000,hot=10%,zero=50%,seed=7",
				      RMIG_ROLE_SOURCE, &be, err, sizeof(err)))
			fail_msg("open: %s", err);
	}
	assert_non_null(be->ops->throttle);
	assert_int_equal(be->ops->get_regions(be, &r, &n), 0);
	assert_int_equal(n, 1);
	assert_true(r[0].len == 8u << 20 && r[0].page_size == 4096);
	assert_int_equal(be->ops->pause(be), 0);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	bm = fetch(be, npages);
	assert_exactly(bm, npages, NULL, 0);
	free(bm);
	before = malloc(r[0].len);
	assert_non_null(before);
	memcpy(before, r[0].host, r[0].len);

	p0 = progress(be);
	assert_int_equal(be->ops->resume(be), 0);
	for (int i = 0; i < 1500 && progress(be) < p0 + 500; i++)
		nanosleep(&ms, NULL);
	assert_int_equal(be->ops->pause(be), 0);
	assert_true(progress(be) > p0);
	bm = fetch(be, npages);
	for (uint64_t pg = 0; pg < npages; pg++) {
		int changed = memcmp(before + pg * 4096, (uint8_t *)r[0].host + pg * 4096, 4096);

		if ((changed != 0) != bit(bm, pg))
			fail_msg("page %llu: changed %d, dirty bit %d", (unsigned long long)pg,
				 changed != 0, bit(bm, pg));
		dirty += (uint64_t)bit(bm, pg);
	}
	assert_true(dirty >= 1 && dirty <= progress(be) - p0);
	free(bm);
	free(before);

	/* The device state is sim's: a sim destination takes it. */
	assert_int_equal(be->ops->save_state(be, &blob, &len), 0);
	{
		char err[256] = "";
		struct rmig_region want = r[0];

		want.host = NULL;
		assert_int_equal(rmig_backend_open("sim", RMIG_ROLE_DEST, &dst, err, sizeof(err)),
				 0);
		assert_int_equal(dst->ops->prepare_regions(dst, &want, 1), 0);
		assert_int_equal(dst->ops->load_state(dst, blob, len), 0);
		rmig_backend_close(dst);

		/* And so does a uffd destination of the right size only. */
		assert_int_equal(
		    rmig_backend_open("uffd:size=4M", RMIG_ROLE_DEST, &dst, err, sizeof(err)), 0);
		dst->err[0] = 0;
		assert_int_equal(dst->ops->prepare_regions(dst, &want, 1), -EINVAL);
		assert_non_null(strstr(dst->err, "size=4194304"));
		rmig_backend_close(dst);
		assert_int_equal(
		    rmig_backend_open("uffd:size=8M", RMIG_ROLE_DEST, &dst, err, sizeof(err)), 0);
		assert_int_equal(dst->ops->prepare_regions(dst, &want, 1), 0);
		assert_int_equal(dst->ops->get_regions(dst, &r, &n), 0);
		assert_true(n == 1 && r[0].len == 8u << 20 && r[0].host);
		assert_int_equal(dst->ops->load_state(dst, blob, len), 0);
		assert_int_equal(dst->ops->start(dst), 0);
		rmig_backend_close(dst);
	}
	free(blob);
	rmig_backend_close(be);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact_pages),
		cmocka_unit_test(test_written_before_start),
		cmocka_unit_test(test_many_runs),
		cmocka_unit_test(test_huge_page),
		cmocka_unit_test(test_callbacks),
		cmocka_unit_test(test_fetch_errors),
		cmocka_unit_test(test_close_unregisters),
		cmocka_unit_test(test_dest),
		cmocka_unit_test(test_bad_params),
		cmocka_unit_test(test_spec_bad_source),
		cmocka_unit_test(test_spec_sim_guest),
	};
	struct calls c = { 0 };
	struct rmig_uffd_params p;
	struct rmig_backend *be = NULL;
	uint8_t *probe;
	int rc;

	PAGE = (size_t)sysconf(_SC_PAGESIZE);
	/* Can this kernel track writes at all? Only the reasons the backend
	 * gives for a missing feature skip; anything else fails the tests. */
	probe = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	p = params(probe, PAGE, &c);
	rc = rmig_uffd_backend_create(&p, RMIG_ROLE_SOURCE, &be, skip_why, sizeof(skip_why));
	if (rc != -EOPNOTSUPP && rc != -ENOSYS && rc != -EPERM)
		skip_why[0] = 0;
	rmig_backend_close(be);
	munmap(probe, PAGE);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
