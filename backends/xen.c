/* xen.c - a running Xen HVM/PVH domain as the source of a migration, from
 * dom0: guest memory mapped with libxenforeignmemory, dirty pages from Xen's
 * log-dirty mode, pause/unpause, and the hypervisor's HVM context (vCPUs,
 * local APICs, timers...) as the device-state blob, all through libxenctrl.
 *
 * Spec: xen:domid=N (source only). The device model's state (QEMU) and the
 * PV back-ends (xenstore entries, event channels, grants) are not part of
 * it: this moves what the hypervisor holds, not a whole Xen guest. Receiving
 * is not supported: creating a domain is the toolstack's job (xl/libxl).
 *
 * Built only where libxen-dev is installed (the Makefile defines
 * RMIG_HAVE_XEN); compiled in CI, never run there (no Xen).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>

#include "rmig_backend.h"

#define XPAGE 4096ull		   /* Xen's guest frame size */
#define MAP_CHUNK_PAGES (1u << 16) /* pfns per map call: 256 MiB, 768 KiB of arrays */

_Static_assert(sizeof(unsigned long) == 8, "Xen's dirty bitmap is read as 64-bit words");

struct xen_guest {
	xentoollog_logger logger; /* first: the callbacks get a pointer to it */
	char logged[160];	  /* the libraries' last error message */
	xc_interface *xch;
	xenforeignmemory_handle *fmem;
	uint32_t domid;
	uint64_t nr_pfns;
	char *base; /* a PROT_NONE reservation for pfns 0..nr_pfns, mapped into */
	struct rmig_region regions[RMIG_MAX_REGIONS];
	size_t nregions;
	xc_hypercall_buffer_t hbuf; /* XEN_DOMCTL_SHADOW_OP_CLEAN's output */
	int hbuf_pages;
	uint64_t *pending; /* cleaned from Xen, not yet given to the engine */
	unsigned char delivered[RMIG_MAX_REGIONS];
	int logdirty, cleaned, paused;
};

static void log_message(struct xentoollog_logger *l, xentoollog_level level, int errnoval,
			const char *context, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

/* The libraries log to stderr by default; keep their last error instead, to
 * name it in our own one-line message. */
static void log_message(struct xentoollog_logger *l, xentoollog_level level, int errnoval,
			const char *context, const char *fmt, va_list ap)
{
	struct xen_guest *x = (struct xen_guest *)l;
	int n;

	(void)context;
	if (level < XTL_WARN)
		return;
	n = vsnprintf(x->logged, sizeof(x->logged), fmt, ap);
	if (errnoval >= 0 && n >= 0 && (size_t)n < sizeof(x->logged))
		snprintf(x->logged + n, sizeof(x->logged) - (size_t)n, ": %s", strerror(errnoval));
}

static void log_destroy(struct xentoollog_logger *l)
{
	(void)l; /* part of struct xen_guest */
}

static int parse_domid(struct rmig_backend *be, const char *args, uint32_t *domid)
{
	char *end;
	unsigned long v;

	if (strncmp(args, "domid=", 6) != 0) {
		rmig_backend_err(be, "xen: expected xen:domid=N, got 'xen:%s'", args);
		return -EINVAL;
	}
	v = strtoul(args + 6, &end, 10);
	if (end == args + 6 || *end || v == 0 || v >= DOMID_FIRST_RESERVED) {
		rmig_backend_err(be, "xen: bad domid '%s' (1..%u; dom0 cannot be migrated)",
				 args + 6, DOMID_FIRST_RESERVED - 1);
		return -EINVAL;
	}
	*domid = (uint32_t)v;
	return 0;
}

/* Add pfns [first, first + n) as a region, or extend the last one. */
static int add_run(struct rmig_backend *be, struct xen_guest *x, uint64_t first, uint64_t n)
{
	struct rmig_region *r = x->nregions ? &x->regions[x->nregions - 1] : NULL;

	if (r && r->gpa + r->len == first * XPAGE) {
		r->len += n * XPAGE;
		return 0;
	}
	if (x->nregions == RMIG_MAX_REGIONS) {
		rmig_backend_err(be, "xen: domain %u's memory is in more than %d separate ranges",
				 x->domid, RMIG_MAX_REGIONS);
		return -E2BIG;
	}
	x->regions[x->nregions] = (struct rmig_region){ .id = (uint32_t)x->nregions,
							.page_size = XPAGE,
							.gpa = first * XPAGE,
							.len = n * XPAGE,
							.host = x->base + first * XPAGE };
	x->nregions++;
	return 0;
}

/* Map every populated pfn read-only, at base + pfn * 4 KiB; the regions are
 * the runs that mapped (holes, MMIO and unpopulated frames, stay out: reading
 * them would fault). */
static int map_memory(struct rmig_backend *be, struct xen_guest *x)
{
	xen_pfn_t *pfns = calloc(MAP_CHUNK_PAGES, sizeof(*pfns));
	int *err = calloc(MAP_CHUNK_PAGES, sizeof(*err));
	uint64_t run = 0, nrun = 0;
	int rc = 0;

	if (!pfns || !err) {
		rmig_backend_err(be, "xen: out of memory");
		rc = -ENOMEM;
		goto out;
	}
	x->base = mmap(NULL, x->nr_pfns * XPAGE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (x->base == MAP_FAILED) {
		x->base = NULL;
		rc = -errno;
		rmig_backend_err(be, "xen: cannot reserve %llu MiB of address space: %s",
				 (unsigned long long)(x->nr_pfns * XPAGE >> 20), strerror(errno));
		goto out;
	}
	for (uint64_t first = 0; first < x->nr_pfns; first += MAP_CHUNK_PAGES) {
		size_t n =
		    x->nr_pfns - first < MAP_CHUNK_PAGES ? x->nr_pfns - first : MAP_CHUNK_PAGES;

		for (size_t i = 0; i < n; i++)
			pfns[i] = first + i;
		if (!xenforeignmemory_map2(x->fmem, x->domid, x->base + first * XPAGE, PROT_READ,
					   MAP_FIXED, n, pfns, err)) {
			rc = -errno;
			rmig_backend_err(be, "xen: mapping domain %u's pfns %llu..%llu: %s",
					 x->domid, (unsigned long long)first,
					 (unsigned long long)(first + n - 1), strerror(errno));
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			if (!err[i]) {
				if (!nrun)
					run = first + i;
				nrun++;
				continue;
			}
			if (nrun && (rc = add_run(be, x, run, nrun)))
				goto out;
			nrun = 0;
		}
	}
	if (nrun && (rc = add_run(be, x, run, nrun)))
		goto out;
	if (!x->nregions) {
		rmig_backend_err(be, "xen: no page of domain %u could be mapped", x->domid);
		rc = -EFAULT;
	}
out:
	free(pfns);
	free(err);
	return rc;
}

static void xen_destroy(struct rmig_backend *be)
{
	struct xen_guest *x = be->priv;

	if (!x)
		return;
	if (x->logdirty) /* as libxc's own save does when it ends */
		xc_shadow_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0);
	/* The foreign mappings live inside the reservation: one munmap. */
	if (x->base)
		munmap(x->base, x->nr_pfns * XPAGE);
	if (x->hbuf.hbuf)
		xc__hypercall_buffer_free_pages(x->xch, &x->hbuf, x->hbuf_pages);
	free(x->pending);
	if (x->fmem)
		xenforeignmemory_close(x->fmem);
	if (x->xch)
		xc_interface_close(x->xch);
	free(x);
	be->priv = NULL;
}

static int xen_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct xen_guest *x = calloc(1, sizeof(*x));
	xc_domaininfo_t info;
	xen_pfn_t nr = 0;
	uint64_t words;
	int rc;

	if (!x)
		return -ENOMEM;
	be->priv = x;
	x->logger = (xentoollog_logger){ .vmessage = log_message, .destroy = log_destroy };
	x->hbuf = (xc_hypercall_buffer_t){ .hbuf = NULL, HYPERCALL_BUFFER_INIT_NO_BOUNCE };
	if (role == RMIG_ROLE_DEST) {
		rmig_backend_err(be, "xen: receiving a guest is not supported: creating the domain "
				     "(memory, vCPUs, device model, back-ends) is the toolstack's "
				     "job (xl/libxl)");
		return -EOPNOTSUPP;
	}
	rc = parse_domid(be, args, &x->domid);
	if (rc)
		return rc;
	x->xch = xc_interface_open(&x->logger, &x->logger, 0);
	if (!x->xch) {
		rmig_backend_err(be,
				 "xen: cannot open the hypervisor interface (xc_interface_open): "
				 "%s; is this a Xen dom0?",
				 x->logged[0] ? x->logged : strerror(errno));
		return -ENODEV;
	}
	x->fmem = xenforeignmemory_open(&x->logger, 0);
	if (!x->fmem) {
		rmig_backend_err(be, "xen: xenforeignmemory_open: %s",
				 x->logged[0] ? x->logged : strerror(errno));
		return -ENODEV;
	}
	if (xc_domain_getinfolist(x->xch, x->domid, 1, &info) != 1 || info.domain != x->domid) {
		rmig_backend_err(be, "xen: no domain %u", x->domid);
		return -ESRCH;
	}
	if (info.flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown)) {
		rmig_backend_err(be, "xen: domain %u is shutting down", x->domid);
		return -ESRCH;
	}
	/* A PV guest's frames are machine frames, mapped and logged differently. */
	if (!(info.flags & XEN_DOMINF_hvm_guest)) {
		rmig_backend_err(be,
				 "xen: domain %u is a PV guest; only HVM/PVH guests are supported",
				 x->domid);
		return -EOPNOTSUPP;
	}
	if (xc_domain_nr_gpfns(x->xch, x->domid, &nr) || !nr) {
		rmig_backend_err(be, "xen: the size of domain %u (xc_domain_nr_gpfns): %s",
				 x->domid, nr ? strerror(errno) : "no memory");
		return -EIO;
	}
	x->nr_pfns = nr;
	rc = map_memory(be, x);
	if (rc)
		return rc;
	words = (x->nr_pfns + 63) / 64;
	x->hbuf_pages = (int)((words * 8 + XPAGE - 1) / XPAGE);
	x->pending = calloc(words, sizeof(uint64_t));
	if (!x->pending || !xc__hypercall_buffer_alloc_pages(x->xch, &x->hbuf, x->hbuf_pages)) {
		rmig_backend_err(be, "xen: out of memory for the dirty bitmap");
		return -ENOMEM;
	}
	return 0;
}

static int xen_get_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	struct xen_guest *x = be->priv;

	*r = x->regions;
	*n = x->nregions;
	return 0;
}

static int xen_start_dirty_log(struct rmig_backend *be)
{
	struct xen_guest *x = be->priv;
	int e1;

	if (x->logdirty)
		return 0;
	if (!xc_shadow_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0))
		goto on;
	/* Already on for the device model's VRAM tracking: off, then on for
	 * the whole guest (what libxc's save does). */
	e1 = errno;
	if (xc_shadow_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0) ||
	    xc_shadow_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0)) {
		rmig_backend_err(be, "xen: enabling log-dirty mode on domain %u: %s", x->domid,
				 strerror(e1));
		return -e1;
	}
on:
	x->logdirty = 1;
	return 0;
}

/* Move n (1..64) bits of src from bit on into a word, clearing them. */
static uint64_t take_bits(uint64_t *src, uint64_t bit, unsigned n)
{
	uint64_t w = bit / 64, s = bit % 64, mask = n == 64 ? ~0ull : (1ull << n) - 1;
	uint64_t v = src[w] >> s;

	src[w] &= ~(mask << s);
	if (s && s + n > 64) {
		v |= src[w + 1] << (64 - s);
		src[w + 1] &= ~(mask >> (64 - s));
	}
	return v & mask;
}

/* One CLEAN reads and clears the log of the whole domain. Its bits wait in
 * pending until their region is fetched; a region fetched twice since the
 * last CLEAN needs a new one (writes since then are only in Xen's log). */
static int xen_fetch_dirty(struct rmig_backend *be, size_t ri, uint64_t *bitmap)
{
	struct xen_guest *x = be->priv;
	const struct rmig_region *r;
	uint64_t first, npages;

	if (ri >= x->nregions) {
		rmig_backend_err(be, "xen: no region %zu (the guest has %zu)", ri, x->nregions);
		return -EINVAL;
	}
	if (x->delivered[ri] || !x->cleaned) {
		xc_shadow_op_stats_t stats;
		const unsigned long *log = x->hbuf.hbuf;
		long long got = xc_logdirty_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_CLEAN,
						    &x->hbuf, x->nr_pfns, 0, &stats);

		if (got != (long long)x->nr_pfns) {
			rmig_backend_err(be,
					 "xen: reading domain %u's dirty log "
					 "(XEN_DOMCTL_SHADOW_OP_CLEAN): %s",
					 x->domid, got < 0 ? strerror(errno) : "short bitmap");
			return got < 0 && errno ? -errno : -EIO;
		}
		for (uint64_t w = 0; w < (x->nr_pfns + 63) / 64; w++)
			x->pending[w] |= log[w];
		memset(x->delivered, 0, sizeof(x->delivered));
		x->cleaned = 1;
	}
	r = &x->regions[ri];
	first = r->gpa / XPAGE;
	npages = r->len / XPAGE;
	for (uint64_t p = 0; p < npages; p += 64)
		bitmap[p / 64] |=
		    take_bits(x->pending, first + p, npages - p < 64 ? (unsigned)(npages - p) : 64);
	x->delivered[ri] = 1;
	return 0;
}

static int xen_pause(struct rmig_backend *be)
{
	struct xen_guest *x = be->priv;

	if (x->paused)
		return 0;
	if (xc_domain_pause(x->xch, x->domid)) {
		rmig_backend_err(be, "xen: pausing domain %u: %s", x->domid, strerror(errno));
		return -errno;
	}
	x->paused = 1;
	return 0;
}

static int xen_resume(struct rmig_backend *be)
{
	struct xen_guest *x = be->priv;

	if (!x->paused)
		return 0;
	if (xc_domain_unpause(x->xch, x->domid)) {
		rmig_backend_err(be, "xen: unpausing domain %u: %s", x->domid, strerror(errno));
		return -errno;
	}
	x->paused = 0;
	return 0;
}

/* The HVM context record stream, as xc_domain_hvm_getcontext gives it. */
static int xen_save_state(struct rmig_backend *be, void **blob, size_t *len)
{
	struct xen_guest *x = be->priv;
	int size = xc_domain_hvm_getcontext(x->xch, x->domid, NULL, 0), got;
	uint8_t *buf;

	if (size <= 0) {
		rmig_backend_err(be, "xen: the HVM context size of domain %u: %s", x->domid,
				 strerror(errno));
		return -EIO;
	}
	buf = malloc((size_t)size);
	if (!buf)
		return -ENOMEM;
	got = xc_domain_hvm_getcontext(x->xch, x->domid, buf, (uint32_t)size);
	if (got < 0) {
		rmig_backend_err(be, "xen: the HVM context of domain %u: %s", x->domid,
				 strerror(errno));
		free(buf);
		return -EIO;
	}
	*blob = buf;
	*len = (size_t)got;
	return 0;
}

/* Running: not paused or shut down; progress: the vCPUs' CPU time (ns). */
static int xen_guest_stats(struct rmig_backend *be, struct rmig_guest_stats *st)
{
	struct xen_guest *x = be->priv;
	xc_domaininfo_t info;

	if (xc_domain_getinfolist(x->xch, x->domid, 1, &info) != 1 || info.domain != x->domid) {
		rmig_backend_err(be, "xen: no domain %u", x->domid);
		return -ESRCH;
	}
	st->running = !(info.flags & (XEN_DOMINF_paused | XEN_DOMINF_shutdown | XEN_DOMINF_dying));
	st->progress = info.cpu_time;
	return 0;
}

const struct rmig_backend_ops rmig_xen_backend_ops = {
	.size = sizeof(struct rmig_backend_ops),
	.name = "xen",
	.create = xen_create,
	.destroy = xen_destroy,
	.get_regions = xen_get_regions,
	.start_dirty_log = xen_start_dirty_log,
	.fetch_dirty = xen_fetch_dirty,
	.pause = xen_pause,
	.resume = xen_resume,
	.save_state = xen_save_state,
	.guest_stats = xen_guest_stats,
};
