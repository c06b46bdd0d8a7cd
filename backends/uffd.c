/* uffd.c - a guest in this process's own memory, its writes tracked by the
 * kernel: userfaultfd write protection in asynchronous mode (a write to a
 * protected page goes through and only unprotects the page) and the
 * PAGEMAP_SCAN ioctl, which reports the unprotected ("written") pages and
 * protects them again in one call. Linux 6.7+.
 *
 * Two ways in:
 *  - rmig_uffd_backend_create() (rmig.h): a program hands rmig one range of
 *    its memory and callbacks that pause, resume and start its writers;
 *  - the spec "uffd[:sim options]" (rmig send --backend uffd:size=256M,
 *    dirty-rate=5000): the guest is a sim guest (memory, writer thread,
 *    device state: backends/sim.c), and only its dirty log comes from the
 *    kernel rather than sim's own bitmap. On the destination "uffd" or
 *    "uffd:size=SIZE" (the guest must be that large).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "last_error.h"
#include "rmig_backend.h"
#include "rmig_uffd.h"
#include "kernel_compat.h"

/* Runs of written pages per PAGEMAP_SCAN call (12 KiB of page_regions); a
 * region with more takes more calls, each resuming where the last stopped. */
#define SCAN_VEC 512

struct uffd_be {
	struct rmig_region regions[RMIG_MAX_REGIONS];
	size_t nregions;
	struct rmig_uffd_params p;  /* the caller's guest (embedding) */
	struct rmig_backend *inner; /* or a sim guest (spec) */
	uint64_t want_size;	    /* spec, destination: size=, 0 if not given */
	int uffd;		    /* source only; -1 otherwise */
	int pagemap;		    /* /proc/self/pagemap, for PAGEMAP_SCAN */
	size_t nregistered;	    /* regions registered with uffd */
	struct page_region vec[SCAN_VEC];
};

static int page_size(void)
{
	return (int)sysconf(_SC_PAGESIZE);
}

static int uffd_syscall(struct rmig_backend *be, int *fd)
{
	int err;

	/* User-mode-only needs no privilege (Linux 5.11+), and asynchronous
	 * write protection never has a fault handled by us, from user or kernel
	 * mode. Without it (older kernels) root or the sysctl is needed. */
	*fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (*fd < 0 && errno == EINVAL)
		*fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (*fd >= 0)
		return 0;
	err = errno;
	if (err == ENOSYS)
		rmig_backend_err(be, "uffd: the kernel has no userfaultfd (CONFIG_USERFAULTFD)");
	else if (err == EPERM)
		rmig_backend_err(be, "uffd: userfaultfd is not permitted here (forbidden by "
				     "seccomp or a security module; before Linux 5.11 it also "
				     "needs root or vm.unprivileged_userfaultfd=1)");
	else
		rmig_backend_err(be, "uffd: userfaultfd: %s", strerror(err));
	return -err;
}

/* Open the userfaultfd with asynchronous write protection, and check that
 * PAGEMAP_SCAN exists: before anything is sent, a clear error. */
static int open_kernel(struct rmig_backend *be, struct uffd_be *u)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct pm_scan_arg probe = { .size = sizeof(probe) };
	int fd = -1, rc;

	/* UFFDIO_API works once per descriptor, and asking for a feature the
	 * kernel lacks fails without saying which: ask what there is first. */
	rc = uffd_syscall(be, &fd);
	if (rc)
		goto out;
	if (ioctl(fd, UFFDIO_API, &api)) {
		rc = -errno;
		rmig_backend_err(be, "uffd: UFFDIO_API: %s", strerror(-rc));
		goto out;
	}
	close(fd);
	fd = -1;
	if (!(api.features & UFFD_FEATURE_WP_ASYNC)) {
		rmig_backend_err(be, "uffd: the kernel lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
		rc = -EOPNOTSUPP;
		goto out;
	}
	/* WP_UNPOPULATED: never-touched pages get protected too, so reading
	 * one (the zero page) does not count as a write. Shmem and hugetlbfs
	 * (a VMM's memfd) need WP_HUGETLBFS_SHMEM. */
	api = (struct uffdio_api){ .api = UFFD_API,
				   .features = UFFD_FEATURE_WP_ASYNC |
					       (api.features & (UFFD_FEATURE_WP_UNPOPULATED |
								UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) };
	rc = uffd_syscall(be, &fd);
	if (rc)
		goto out;
	if (ioctl(fd, UFFDIO_API, &api)) {
		rc = -errno;
		rmig_backend_err(be, "uffd: UFFDIO_API (asynchronous write protection): %s",
				 strerror(-rc));
		goto out;
	}
	u->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (u->pagemap < 0) {
		rc = -errno;
		rmig_backend_err(be, "uffd: /proc/self/pagemap: %s", strerror(-rc));
		goto out;
	}
	/* An empty range: only asks whether the ioctl exists. */
	if (ioctl(u->pagemap, PAGEMAP_SCAN, &probe) < 0) {
		rc = -errno;
		if (rc == -ENOTTY) {
			rmig_backend_err(be, "uffd: the kernel lacks the PAGEMAP_SCAN ioctl "
					     "(Linux 6.7+)");
			rc = -EOPNOTSUPP;
		} else {
			rmig_backend_err(be, "uffd: PAGEMAP_SCAN: %s", strerror(-rc));
		}
		goto out;
	}
	u->uffd = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The outcome of a guest callback (embedding) or sim op (spec), with a
 * message on failure. */
static int guest_rc(struct rmig_backend *be, const char *what, int rc)
{
	struct uffd_be *u = be->priv;

	if (rc >= 0)
		return 0;
	if (u->inner)
		rmig_backend_err(be, "uffd: %s", u->inner->err);
	else
		rmig_backend_err(be, "uffd: the %s callback failed: %s", what, strerror(-rc));
	return rc;
}

static void uffd_destroy(struct rmig_backend *be)
{
	struct uffd_be *u = be->priv;

	if (!u)
		return;
	/* Unregistering also drops the write protection: the memory is the
	 * caller's alone again. It may be gone already; nothing to do then. */
	for (size_t i = 0; i < u->nregistered; i++) {
		struct uffdio_range r = { (uintptr_t)u->regions[i].host, u->regions[i].len };

		ioctl(u->uffd, UFFDIO_UNREGISTER, &r);
	}
	if (u->uffd >= 0)
		close(u->uffd);
	if (u->pagemap >= 0)
		close(u->pagemap);
	if (u->inner)
		rmig_backend_close(u->inner);
	free(u);
	be->priv = NULL;
}

static struct uffd_be *uffd_alloc(struct rmig_backend *be)
{
	struct uffd_be *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	u->uffd = u->pagemap = -1;
	be->priv = u;
	return u;
}

/* Spec: track the sim guest's memory, laid out as it is. */
static int take_inner_regions(struct rmig_backend *be, struct uffd_be *u)
{
	const struct rmig_region *r;
	size_t n;
	int rc = u->inner->ops->get_regions(u->inner, &r, &n);

	if (rc)
		return guest_rc(be, "get_regions", rc);
	memcpy(u->regions, r, n * sizeof(*r));
	u->nregions = n;
	return 0;
}

/* Spec: the destination takes only size=; the source passes its options to
 * a sim guest. */
static int uffd_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct uffd_be *u = uffd_alloc(be);
	char spec[512], err[256] = "";
	int rc;

	if (!u)
		return -ENOMEM;
	if (role == RMIG_ROLE_DEST && *args &&
	    (strncmp(args, "size=", 5) || strchr(args, ',') ||
	     rmig_parse_size(args + 5, &u->want_size) || !u->want_size)) {
		rmig_backend_err(be,
				 "uffd: the destination takes only size=SIZE (the source "
				 "sends the layout and the device state), not '%s'",
				 args);
		return -EINVAL;
	}
	if (role == RMIG_ROLE_SOURCE) {
		/* Before filling a sim guest: a missing feature fails fast. */
		rc = open_kernel(be, u);
		if (rc)
			return rc;
	}
	if (snprintf(spec, sizeof(spec), "sim%s%s", role == RMIG_ROLE_SOURCE && *args ? ":" : "",
		     role == RMIG_ROLE_SOURCE ? args : "") >= (int)sizeof(spec)) {
		rmig_backend_err(be, "uffd: options too long");
		return -EINVAL;
	}
	rc = rmig_backend_open(spec, role, &u->inner, err, sizeof(err));
	if (rc) {
		rmig_backend_err(be, "uffd: %s", err);
		return rc;
	}
	return role == RMIG_ROLE_DEST ? 0 : take_inner_regions(be, u);
}

static int uffd_get_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	struct uffd_be *u = be->priv;

	if (!u->nregions) {
		rmig_backend_err(be, "uffd: no guest memory yet");
		return -ENOENT;
	}
	*r = u->regions;
	*n = u->nregions;
	return 0;
}

/* Register the memory (the first time) and write-protect all of it: from
 * here on, a page written is a page the next fetch_dirty reports. */
static int uffd_start_dirty_log(struct rmig_backend *be)
{
	struct uffd_be *u = be->priv;
	int rc = 0;

	if (u->uffd < 0) {
		rmig_backend_err(be, "uffd: dirty tracking is for the source");
		return -EINVAL;
	}
	for (; u->nregistered < u->nregions; u->nregistered++) {
		const struct rmig_region *r = &u->regions[u->nregistered];
		struct uffdio_register reg = { .range = { (uintptr_t)r->host, r->len },
					       .mode = UFFDIO_REGISTER_MODE_WP };

		if (ioctl(u->uffd, UFFDIO_REGISTER, &reg)) {
			rc = -errno;
			rmig_backend_err(be,
					 "uffd: cannot register region %u for write tracking: %s "
					 "(it must be anonymous, shmem or hugetlbfs memory)",
					 r->id, strerror(-rc));
			goto out;
		}
		if (!(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT))) {
			/* Registered all the same: destroy unregisters it. */
			u->nregistered++;
			rmig_backend_err(be, "uffd: the kernel cannot write-protect region %u",
					 r->id);
			rc = -EOPNOTSUPP;
			goto out;
		}
	}
	for (size_t i = 0; i < u->nregions; i++) {
		struct uffdio_writeprotect wp = { .range = { (uintptr_t)u->regions[i].host,
							     u->regions[i].len },
						  .mode = UFFDIO_WRITEPROTECT_MODE_WP };

		if (ioctl(u->uffd, UFFDIO_WRITEPROTECT, &wp)) {
			rc = -errno;
			rmig_backend_err(be, "uffd: write-protecting region %u: %s",
					 u->regions[i].id, strerror(-rc));
			goto out;
		}
	}
out:
	return rc;
}

/* Get and clear the written pages in one PAGEMAP_SCAN per buffer-full:
 * the kernel reports each written page and write-protects it again under
 * the page-table lock, so a write after that is in the next fetch. */
static int uffd_fetch_dirty(struct rmig_backend *be, size_t ri, uint64_t *bitmap)
{
	struct uffd_be *u = be->priv;
	const struct rmig_region *r;
	uint64_t base, end, start;
	int rc = 0;

	if (ri >= u->nregions || ri >= u->nregistered) {
		rmig_backend_err(be, "uffd: region %zu is not tracked (%zu regions, dirty log %s)",
				 ri, u->nregions, u->nregistered ? "started" : "not started");
		return -EINVAL;
	}
	r = &u->regions[ri];
	base = (uintptr_t)r->host;
	end = base + r->len;
	for (start = base; start < end;) {
		struct pm_scan_arg a = { .size = sizeof(a),
					 .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
					 .start = start,
					 .end = end,
					 .vec = (uintptr_t)u->vec,
					 .vec_len = SCAN_VEC,
					 .category_mask = PAGE_IS_WRITTEN,
					 .return_mask = PAGE_IS_WRITTEN };
		int n = ioctl(u->pagemap, PAGEMAP_SCAN, &a);

		if (n < 0) {
			rc = -errno;
			rmig_backend_err(
			    be, "uffd: PAGEMAP_SCAN of region %u: %s%s", r->id, strerror(-rc),
			    rc == -EPERM ? " (was the memory unmapped or remapped?)" : "");
			goto out;
		}
		for (int i = 0; i < n; i++)
			for (uint64_t pg = (u->vec[i].start - base) / r->page_size;
			     pg < (u->vec[i].end - base) / r->page_size; pg++)
				bitmap[pg / 64] |= 1ull << (pg % 64);
		/* A full buffer ends the walk early, at walk_end. */
		if (a.walk_end <= start || a.walk_end > end) {
			rmig_backend_err(be, "uffd: PAGEMAP_SCAN stopped at %#llx in %#llx..%#llx",
					 (unsigned long long)a.walk_end, (unsigned long long)start,
					 (unsigned long long)end);
			rc = -EIO;
			goto out;
		}
		start = a.walk_end;
	}
out:
	return rc;
}

static int uffd_pause(struct rmig_backend *be)
{
	struct uffd_be *u = be->priv;

	/* Optional on a destination; the engine pauses one whose post-copy failed. */
	if (!u->inner && !u->p.pause) {
		rmig_backend_err(be, "uffd: no pause callback");
		return -EOPNOTSUPP;
	}
	return guest_rc(be, "pause",
			u->inner ? u->inner->ops->pause(u->inner) : u->p.pause(u->p.arg));
}

static int uffd_resume(struct rmig_backend *be)
{
	struct uffd_be *u = be->priv;

	return guest_rc(be, "resume",
			u->inner ? u->inner->ops->resume(u->inner) : u->p.resume(u->p.arg));
}

static int uffd_throttle(struct rmig_backend *be, unsigned pct)
{
	struct uffd_be *u = be->priv;

	return guest_rc(be, "throttle",
			u->inner ? u->inner->ops->throttle(u->inner, pct)
				 : u->p.throttle(u->p.arg, pct));
}

static int uffd_save_state(struct rmig_backend *be, void **blob, size_t *len)
{
	struct uffd_be *u = be->priv;

	*blob = NULL;
	*len = 0;
	if (u->inner)
		return guest_rc(be, "save_state", u->inner->ops->save_state(u->inner, blob, len));
	if (!u->p.save_state)
		return 0;
	return guest_rc(be, "save_state", u->p.save_state(u->p.arg, blob, len));
}

static int uffd_load_state(struct rmig_backend *be, const void *blob, size_t len)
{
	struct uffd_be *u = be->priv;

	if (u->inner)
		return guest_rc(be, "load_state", u->inner->ops->load_state(u->inner, blob, len));
	if (u->p.load_state)
		return guest_rc(be, "load_state", u->p.load_state(u->p.arg, blob, len));
	if (len) {
		rmig_backend_err(be,
				 "uffd: the source sent %zu bytes of device state and there "
				 "is no load_state callback",
				 len);
		return -EINVAL;
	}
	return 0;
}

static int uffd_start(struct rmig_backend *be)
{
	struct uffd_be *u = be->priv;

	return guest_rc(be, "start",
			u->inner ? u->inner->ops->start(u->inner) : u->p.start(u->p.arg));
}

static int uffd_guest_stats(struct rmig_backend *be, struct rmig_guest_stats *st)
{
	struct uffd_be *u = be->priv;

	return guest_rc(be, "guest_stats", u->inner->ops->guest_stats(u->inner, st));
}

/* Destination: the caller's memory (embedding), or a sim guest's. */
static int uffd_prepare_regions(struct rmig_backend *be, const struct rmig_region *layout, size_t n)
{
	struct uffd_be *u = be->priv;
	uint64_t total = 0;
	int rc;

	if (u->nregions) {
		rmig_backend_err(be, "uffd: regions already prepared");
		return -EBUSY;
	}
	for (size_t i = 0; i < n; i++)
		total += layout[i].len;
	if (u->inner) {
		if (u->want_size && total != u->want_size) {
			rmig_backend_err(be,
					 "uffd: the guest is %llu bytes, this side was given "
					 "size=%llu",
					 (unsigned long long)total,
					 (unsigned long long)u->want_size);
			return -EINVAL;
		}
		rc = u->inner->ops->prepare_regions(u->inner, layout, n);
		if (rc)
			return guest_rc(be, "prepare_regions", rc);
		return take_inner_regions(be, u);
	}
	if (n != 1 || layout[0].page_size != (uint32_t)page_size()) {
		rmig_backend_err(be,
				 "uffd: the guest has %zu regions of %u-byte pages; this memory "
				 "is one region of %d-byte pages",
				 n, n ? layout[0].page_size : 0, page_size());
		return -EINVAL;
	}
	if (layout[0].len > u->p.len) {
		rmig_backend_err(be, "uffd: a %llu-byte guest does not fit in the %zu bytes given",
				 (unsigned long long)layout[0].len, u->p.len);
		return -ENOMEM;
	}
	u->regions[0] = layout[0];
	u->regions[0].host = u->p.addr;
	u->nregions = 1;
	return 0;
}

#define UFFD_OPS                                                                                   \
	.size = sizeof(struct rmig_backend_ops), .name = "uffd", .create = uffd_create,            \
	.destroy = uffd_destroy, .get_regions = uffd_get_regions,                                  \
	.start_dirty_log = uffd_start_dirty_log, .fetch_dirty = uffd_fetch_dirty,                  \
	.pause = uffd_pause, .resume = uffd_resume, .save_state = uffd_save_state,                 \
	.prepare_regions = uffd_prepare_regions, .load_state = uffd_load_state,                    \
	.start = uffd_start

/* By spec: a sim guest, which can throttle and report its progress. */
const struct rmig_backend_ops rmig_uffd_backend_ops = { UFFD_OPS, .throttle = uffd_throttle,
							.guest_stats = uffd_guest_stats };
/* Embedding: the engine throttles only if the caller can. */
static const struct rmig_backend_ops uffd_api_ops = { UFFD_OPS };
static const struct rmig_backend_ops uffd_api_throttle_ops = { UFFD_OPS,
							       .throttle = uffd_throttle };

static int check_params(struct rmig_backend *be, const struct rmig_uffd_params *p,
			enum rmig_role role)
{
	long ps = page_size();
	const char *bad = NULL;

	if (!p)
		bad = "no params";
	else if (role != RMIG_ROLE_SOURCE && role != RMIG_ROLE_DEST)
		bad = "role is neither source nor destination";
	else if (!p->addr || (uintptr_t)p->addr % (uintptr_t)ps)
		bad = "addr is not page-aligned";
	else if (!p->len || p->len % (size_t)ps)
		bad = "len is not a non-zero multiple of the page size";
	else if (role == RMIG_ROLE_SOURCE && (!p->pause || !p->resume))
		bad = "the source needs pause and resume callbacks";
	else if (role == RMIG_ROLE_DEST && !p->start)
		bad = "the destination needs a start callback";
	if (!bad)
		return 0;
	rmig_backend_err(be, "uffd: %s", bad);
	return -EINVAL;
}

int rmig_uffd_backend_create(const struct rmig_uffd_params *p, enum rmig_role role,
			     struct rmig_backend **out, char *err, size_t errlen)
{
	struct rmig_backend *be = calloc(1, sizeof(*be));
	struct uffd_be *u;
	int rc;

	if (out)
		*out = NULL;
	if (!be || !uffd_alloc(be)) {
		if (err && errlen)
			snprintf(err, errlen, "uffd: out of memory");
		free(be);
		return rmig_fail(-ENOMEM, "uffd: out of memory");
	}
	u = be->priv;
	be->role = role;
	be->ops = p && p->throttle ? &uffd_api_throttle_ops : &uffd_api_ops;
	rc = out ? check_params(be, p, role) : -EINVAL;
	if (rc)
		goto out;
	u->p = *p;
	if (role == RMIG_ROLE_SOURCE) {
		u->regions[0] = (struct rmig_region){ .id = 0,
						      .page_size = (uint32_t)page_size(),
						      .gpa = 0,
						      .len = p->len,
						      .host = p->addr };
		u->nregions = 1;
		rc = open_kernel(be, u);
	}
out:
	if (rc) {
		rmig_fail_msg(rc, be->err[0] ? be->err : "uffd: out is NULL");
		if (err && errlen)
			snprintf(err, errlen, "%s", rmig_last_error());
		uffd_destroy(be);
		free(be);
		return rc;
	}
	*out = be;
	return 0;
}
