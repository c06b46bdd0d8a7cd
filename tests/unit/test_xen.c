/* test_xen.c - the xen backend (backends/xen.c) against a fake Xen: this
 * file defines the libxenctrl and libxenforeignmemory functions the backend
 * calls, so they win over the real libraries at link time. The fake domain 7
 * is an HVM guest of 69632 pages (272 MiB, sparse) in a memfd, with holes at
 * pfns 256..383 and 66000..66099 (the second past the first 65536-page map
 * chunk), a log-dirty bitmap the test's "guest writes" set, a pause count
 * and a 100-byte HVM context. Built only where libxen-dev is installed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>

#include "rmig_backend.h"

#define PG 4096ull
#define DOMID 7u
#define NR_PFNS 69632ull
#define CTX_LEN 100

static struct {
	int present, pv, vram_logdirty; /* what the test sets up */
	int memfd;
	uint8_t *mem; /* the guest's memory as the guest sees it */
	uint64_t dirty[NR_PFNS / 64];
	int logdirty, paused, map_calls, clean_calls, enable_calls;
	uint64_t cpu_time;
	xentoollog_logger *logger;
} fx;

static int in_hole(uint64_t pfn)
{
	return (pfn >= 256 && pfn < 384) || (pfn >= 66000 && pfn < 66100);
}

/* ---- the fake libraries ---------------------------------------------------- */

static char fake_handle[1];

xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger,
				unsigned open_flags)
{
	(void)dombuild_logger;
	(void)open_flags;
	fx.logger = logger;
	if (!fx.present) {
		va_list ap;

		/* What the real one logs, through the caller's logger. */
		memset(&ap, 0, sizeof(ap));
		logger->vmessage(logger, XTL_ERROR, ENOENT, "xencall",
				 "Could not obtain handle on privileged command interface", ap);
		errno = ENOENT;
		return NULL;
	}
	return (xc_interface *)fake_handle;
}

int xc_interface_close(xc_interface *xch)
{
	assert_ptr_equal(xch, fake_handle);
	return 0;
}

xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger,
					       unsigned open_flags)
{
	(void)logger;
	(void)open_flags;
	return (xenforeignmemory_handle *)fake_handle;
}

int xenforeignmemory_close(xenforeignmemory_handle *fmem)
{
	assert_ptr_equal(fmem, fake_handle);
	return 0;
}

void *xenforeignmemory_map2(xenforeignmemory_handle *fmem, uint32_t dom, void *addr, int prot,
			    int flags, size_t pages, const xen_pfn_t arr[], int err[])
{
	void *p;

	assert_ptr_equal(fmem, fake_handle);
	assert_int_equal(dom, DOMID);
	assert_int_equal(prot, PROT_READ); /* the source only reads */
	for (size_t i = 0; i < pages; i++) {
		assert_int_equal(arr[i], arr[0] + i); /* the backend maps runs of pfns */
		err[i] = in_hole(arr[i]) ? -EINVAL : 0;
	}
	fx.map_calls++;
	p = mmap(addr, pages * PG, prot, flags | MAP_SHARED, fx.memfd, (off_t)(arr[0] * PG));
	return p == MAP_FAILED ? NULL : p;
}

int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains,
			  xc_domaininfo_t *info)
{
	assert_ptr_equal(xch, fake_handle);
	assert_true(max_domains >= 1);
	if (first_domain != DOMID)
		return 0; /* no such domain (nor any after it) */
	memset(info, 0, sizeof(*info));
	info->domain = DOMID;
	info->flags = (fx.pv ? 0 : XEN_DOMINF_hvm_guest) | (fx.paused ? XEN_DOMINF_paused : 0);
	if (!fx.paused)
		fx.cpu_time += 1000;
	info->cpu_time = fx.cpu_time;
	return 1;
}

int xc_domain_nr_gpfns(xc_interface *xch, uint32_t domid, xen_pfn_t *gpfns)
{
	assert_ptr_equal(xch, fake_handle);
	assert_int_equal(domid, DOMID);
	*gpfns = NR_PFNS;
	return 0;
}

int xc_shadow_control(xc_interface *xch, uint32_t domid, unsigned int sop, unsigned int *mb,
		      unsigned int mode)
{
	assert_ptr_equal(xch, fake_handle);
	assert_int_equal(domid, DOMID);
	(void)mb;
	(void)mode;
	if (sop == XEN_DOMCTL_SHADOW_OP_OFF) {
		fx.logdirty = fx.vram_logdirty = 0;
		return 0;
	}
	assert_int_equal(sop, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY);
	fx.enable_calls++;
	if (fx.logdirty || fx.vram_logdirty) { /* as Xen: already on */
		errno = EINVAL;
		return -1;
	}
	fx.logdirty = 1;
	memset(fx.dirty, 0, sizeof(fx.dirty));
	return 0;
}

long long xc_logdirty_control(xc_interface *xch, uint32_t domid, unsigned int sop,
			      xc_hypercall_buffer_t *dirty_bitmap, unsigned long pages,
			      unsigned int mode, xc_shadow_op_stats_t *stats)
{
	assert_ptr_equal(xch, fake_handle);
	assert_int_equal(domid, DOMID);
	assert_int_equal(sop, XEN_DOMCTL_SHADOW_OP_CLEAN);
	assert_int_equal(pages, NR_PFNS);
	(void)mode;
	(void)stats;
	if (!fx.logdirty) {
		errno = EINVAL;
		return -1;
	}
	fx.clean_calls++;
	memcpy(dirty_bitmap->hbuf, fx.dirty, sizeof(fx.dirty));
	memset(fx.dirty, 0, sizeof(fx.dirty));
	return (long long)pages;
}

void *xc__hypercall_buffer_alloc_pages(xc_interface *xch, xc_hypercall_buffer_t *b, int nr_pages)
{
	assert_ptr_equal(xch, fake_handle);
	assert_true((uint64_t)nr_pages * PG * 8 >= NR_PFNS);
	b->hbuf = calloc((size_t)nr_pages, PG);
	return b->hbuf;
}

void xc__hypercall_buffer_free_pages(xc_interface *xch, xc_hypercall_buffer_t *b, int nr_pages)
{
	assert_ptr_equal(xch, fake_handle);
	(void)nr_pages;
	free(b->hbuf);
	b->hbuf = NULL;
}

int xc_domain_pause(xc_interface *xch, uint32_t domid)
{
	assert_ptr_equal(xch, fake_handle);
	assert_int_equal(domid, DOMID);
	fx.paused++;
	return 0;
}

int xc_domain_unpause(xc_interface *xch, uint32_t domid)
{
	assert_ptr_equal(xch, fake_handle);
	assert_int_equal(domid, DOMID);
	if (!fx.paused) {
		errno = EINVAL;
		return -1;
	}
	fx.paused--;
	return 0;
}

int xc_domain_hvm_getcontext(xc_interface *xch, uint32_t domid, uint8_t *ctxt_buf, uint32_t size)
{
	assert_ptr_equal(xch, fake_handle);
	assert_int_equal(domid, DOMID);
	if (!ctxt_buf)
		return CTX_LEN;
	assert_true(size >= CTX_LEN);
	for (int i = 0; i < CTX_LEN; i++)
		ctxt_buf[i] = (uint8_t)(i * 7);
	return CTX_LEN;
}

/* ---- helpers --------------------------------------------------------------- */

static void guest_write(uint64_t pfn, uint8_t v)
{
	assert_false(fx.paused);
	fx.mem[pfn * PG + 8] = v;
	if (fx.logdirty)
		fx.dirty[pfn / 64] |= 1ull << (pfn % 64);
}

static int setup(void **state)
{
	(void)state;
	memset(&fx, 0, sizeof(fx));
	fx.present = 1;
	fx.memfd = memfd_create("fake-xen-guest", 0);
	assert_true(fx.memfd >= 0);
	assert_int_equal(ftruncate(fx.memfd, (off_t)(NR_PFNS * PG)), 0);
	fx.mem = mmap(NULL, NR_PFNS * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fx.memfd, 0);
	assert_true(fx.mem != MAP_FAILED);
	for (uint64_t pfn = 0; pfn < NR_PFNS; pfn += 997)
		memcpy(fx.mem + pfn * PG, &pfn, sizeof(pfn));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	munmap(fx.mem, NR_PFNS * PG);
	close(fx.memfd);
	return 0;
}

static int open_spec(const char *spec, enum rmig_role role, struct rmig_backend **be, char *err)
{
	*be = NULL;
	err[0] = 0;
	return rmig_backend_open(spec, role, be, err, 256);
}

static int one_line(const char *s)
{
	return *s && !strchr(s, '\n');
}

static int bit_at(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

static uint64_t count(const uint64_t *bm, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t i = 0; i < n; i++)
		c += (uint64_t)bit_at(bm, i);
	return c;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_no_xen(void **state)
{
	struct rmig_backend *be;
	char err[256];

	(void)state;
	fx.present = 0;
	assert_int_equal(open_spec("xen:domid=7", RMIG_ROLE_SOURCE, &be, err), -ENODEV);
	assert_true(one_line(err));
	assert_non_null(strstr(err,
			       "xen: cannot open the hypervisor interface (xc_interface_open): "
			       "Could not obtain handle on privileged command interface: No "
			       "such file or directory; is this a Xen dom0?"));
}

static void test_bad_specs(void **state)
{
	static const char *const bad[] = {
		"xen",		"xen:",	    "xen:domid=", "xen:domid=0", "xen:domid=32752",
		"xen:domid=7x", "xen:dom=7"
	};
	struct rmig_backend *be;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(open_spec(bad[i], RMIG_ROLE_SOURCE, &be, err), -EINVAL);
		assert_true(one_line(err) && !strncmp(err, "xen: ", 5));
	}
	assert_int_equal(open_spec("xen", RMIG_ROLE_DEST, &be, err), -EOPNOTSUPP);
	assert_non_null(strstr(err, "toolstack"));
	assert_int_equal(open_spec("xen:domid=8", RMIG_ROLE_SOURCE, &be, err), -ESRCH);
	assert_string_equal(err, "xen: no domain 8");
	fx.pv = 1;
	assert_int_equal(open_spec("xen:domid=7", RMIG_ROLE_SOURCE, &be, err), -EOPNOTSUPP);
	assert_non_null(strstr(err, "PV guest"));
}

/* Regions are the mapped runs: holes out, a run across the map chunks whole. */
static void test_regions(void **state)
{
	static const uint64_t want[3][2] = { { 0, 256 }, { 384, 66000 }, { 66100, NR_PFNS } };
	struct rmig_backend *be;
	const struct rmig_region *r;
	size_t n = 0;
	char err[256];

	(void)state;
	assert_int_equal(open_spec("xen:domid=7", RMIG_ROLE_SOURCE, &be, err), 0);
	assert_int_equal(fx.map_calls, 2); /* 65536 pfns per call */
	assert_int_equal(be->ops->get_regions(be, &r, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(r[i].id, i);
		assert_int_equal(r[i].page_size, PG);
		assert_int_equal(r[i].gpa, want[i][0] * PG);
		assert_int_equal(r[i].len, (want[i][1] - want[i][0]) * PG);
		/* The contents through the backend's mapping are the guest's. */
		for (uint64_t pfn = want[i][0]; pfn < want[i][1]; pfn++) {
			uint64_t v;

			if (pfn % 997)
				continue;
			memcpy(&v, (char *)r[i].host + (pfn - want[i][0]) * PG, sizeof(v));
			assert_int_equal(v, pfn);
		}
	}
	guest_write(70, 1); /* the mapping is shared: the backend sees writes */
	assert_int_equal(((uint8_t *)r[0].host)[70 * PG + 8], 1);
	rmig_backend_close(be);
}

static void test_dirty_log(void **state)
{
	struct rmig_backend *be;
	const struct rmig_region *r;
	uint64_t *bm[3];
	size_t n = 0;
	char err[256];

	(void)state;
	fx.vram_logdirty = 1; /* the device model tracks VRAM: log-dirty is on */
	assert_int_equal(open_spec("xen:domid=7", RMIG_ROLE_SOURCE, &be, err), 0);
	assert_int_equal(be->ops->get_regions(be, &r, &n), 0);
	for (size_t i = 0; i < 3; i++)
		bm[i] = calloc((r[i].len / PG + 63) / 64, 8);
	assert_int_equal(be->ops->start_dirty_log(be), 0);
	assert_true(fx.logdirty);
	assert_int_equal(fx.enable_calls, 2); /* refused, off, on again */

	/* Round 1: writes in every region, at their edges too. */
	guest_write(0, 2);
	guest_write(255, 2);
	guest_write(384, 2);
	guest_write(65535, 2);
	guest_write(65536, 2);
	guest_write(65999, 2);
	guest_write(66100, 2);
	guest_write(66120, 2); /* region 2 starts mid-word: this bit is in the next */
	guest_write(NR_PFNS - 1, 2);
	assert_int_equal(be->ops->fetch_dirty(be, 0, bm[0]), 0);
	assert_int_equal(fx.clean_calls, 1);
	/* Written after the CLEAN: the next round's. */
	guest_write(1, 3);
	guest_write(400, 3);
	assert_int_equal(be->ops->fetch_dirty(be, 1, bm[1]), 0);
	assert_int_equal(be->ops->fetch_dirty(be, 2, bm[2]), 0);
	assert_int_equal(fx.clean_calls, 1); /* one CLEAN per round */
	assert_int_equal(count(bm[0], 256), 2);
	assert_true(bit_at(bm[0], 0) && bit_at(bm[0], 255));
	assert_int_equal(count(bm[1], 66000 - 384), 4);
	assert_true(bit_at(bm[1], 0) && bit_at(bm[1], 65535 - 384) && bit_at(bm[1], 65536 - 384) &&
		    bit_at(bm[1], 65999 - 384));
	assert_int_equal(count(bm[2], NR_PFNS - 66100), 3);
	assert_true(bit_at(bm[2], 0) && bit_at(bm[2], 20) && bit_at(bm[2], NR_PFNS - 1 - 66100));

	/* Round 2: the late writes, and nothing else; ORed into what is there. */
	for (size_t i = 0; i < 3; i++)
		memset(bm[i], 0, (r[i].len / PG + 63) / 64 * 8);
	bm[1][0] = 1ull << 63;
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(be->ops->fetch_dirty(be, i, bm[i]), 0);
	assert_int_equal(fx.clean_calls, 2);
	assert_int_equal(count(bm[0], 256), 1);
	assert_true(bit_at(bm[0], 1));
	assert_int_equal(count(bm[1], 66000 - 384), 2);
	assert_true(bit_at(bm[1], 400 - 384) && bit_at(bm[1], 63));
	assert_int_equal(count(bm[2], NR_PFNS - 66100), 0);

	/* A region fetched twice in a row needs a fresh CLEAN. */
	guest_write(10, 4);
	memset(bm[0], 0, 32);
	assert_int_equal(be->ops->fetch_dirty(be, 0, bm[0]), 0);
	assert_int_equal(fx.clean_calls, 3);
	assert_true(bit_at(bm[0], 10));
	assert_int_equal(be->ops->fetch_dirty(be, 3, bm[0]), -EINVAL);
	assert_non_null(strstr(be->err, "no region 3"));
	for (size_t i = 0; i < 3; i++)
		free(bm[i]);
	rmig_backend_close(be);
	assert_false(fx.logdirty); /* turned off again */
}

static void test_pause_state_stats(void **state)
{
	struct rmig_backend *be;
	struct rmig_guest_stats a, b;
	uint8_t *blob = NULL;
	size_t len = 0;
	char err[256];

	(void)state;
	assert_int_equal(open_spec("xen:domid=7", RMIG_ROLE_SOURCE, &be, err), 0);
	assert_int_equal(be->ops->guest_stats(be, &a), 0);
	assert_int_equal(be->ops->guest_stats(be, &b), 0);
	assert_true(a.running && b.progress > a.progress);
	assert_int_equal(be->ops->pause(be), 0);
	assert_int_equal(be->ops->pause(be), 0); /* once only: Xen counts pauses */
	assert_int_equal(fx.paused, 1);
	assert_int_equal(be->ops->guest_stats(be, &a), 0);
	assert_int_equal(be->ops->guest_stats(be, &b), 0);
	assert_true(!a.running && b.progress == a.progress);
	assert_int_equal(be->ops->save_state(be, (void **)&blob, &len), 0);
	assert_int_equal(len, CTX_LEN);
	assert_int_equal(blob[99], (uint8_t)(99 * 7));
	free(blob);
	assert_int_equal(be->ops->resume(be), 0);
	assert_int_equal(be->ops->resume(be), 0);
	assert_int_equal(fx.paused, 0);
	rmig_backend_close(be);
	assert_int_equal(fx.paused, 0); /* closing does not touch it */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_xen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_specs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dirty_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_state_stats, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
