/* postcopy.c - post-copy, as QEMU's postcopy-ram: the destination starts the
 * guest before all of its memory arrived.
 *
 * Destination: the pages the source still holds newer copies of (DISCARD)
 * are dropped (MADV_DONTNEED: private anonymous memory then reads as
 * missing), and all guest memory is registered with a userfaultfd in MISSING
 * mode. A fault thread reads the faults: a page still pending is asked for
 * (PAGE_REQUEST, once per page); any other missing page was never written in
 * this migration, so it is zero at the source too and is mapped as zero at
 * once. Pages arrive by the data channels' post-copy round and by PAGE_DATA,
 * and are placed whole with UFFDIO_COPY, which also wakes the threads
 * waiting for them. A page already there (EEXIST) came the other way, with
 * the same bytes: the source guest is paused.
 *
 * Source: the answer to a PAGE_REQUEST.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bitmap.h"
#include "postcopy.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1 /* Linux 5.11 */
#endif

#define FAULT_BATCH 16 /* fault messages read at once */
#define WAIT_SLOTS 256 /* requested pages whose wait is timed at once */
#define STOP_POLL_MS 200

struct rmig_postcopy {
	struct rmig_ctx *ctx;
	int uffd;	 /* -1 unless armed */
	int stop_fd;	 /* eventfd that stops the fault thread at once */
	atomic_int stop; /* and this within STOP_POLL_MS, should that fail */
	int user_only;	 /* the uffd sees faults from user mode only */
	size_t nregistered;
	pthread_t tid;
	int thread_started;
	size_t sys_page;
	/* Per region, one bit per page. stale: DISCARDed, fixed once armed;
	 * pending: stale and not placed yet; requested: asked for. */
	uint64_t *stale[RMIG_MAX_REGIONS];
	atomic_uint_fast64_t *pending[RMIG_MAX_REGIONS];
	atomic_uint_fast64_t *requested[RMIG_MAX_REGIONS];
	uint64_t nstale;
	atomic_uint_fast64_t missing, nrequested, nzeroed;
	pthread_mutex_t lock; /* failed, failure */
	int failed;
	char failure[400];
	/* Held while a request is sent, and while the link is lost (held):
	 * requests wait in `requested` and go again on resume, never on a link
	 * being swapped under them. */
	pthread_mutex_t req_lock;
	int held;
	/* How long faulting threads wait for the pages they asked for. */
	pthread_mutex_t wait_lock;
	struct {
		size_t ri;
		uint64_t page;
		int64_t since_ms; /* 0: a free slot */
	} waits[WAIT_SLOTS];
	atomic_uint nwaiting;
	atomic_uint_fast64_t max_wait_ms;
};

static int open_uffd(int *fd, int *user_only, char *err, size_t errlen)
{
	struct uffdio_api api = { .api = UFFD_API };
	int rc = 0;

	/* All faults, the kernel's included (a VMM's KVM touches guest memory
	 * there), need privilege; without it, user mode only (Linux 5.11+). */
	*user_only = 0;
	*fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (*fd < 0 && errno == EPERM) {
		*user_only = 1;
		*fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	}
	if (*fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "userfaultfd: %s%s", strerror(-rc),
			 rc == -ENOSYS	? " (kernel without CONFIG_USERFAULTFD)"
			 : rc == -EPERM ? " (forbidden here: seccomp or a security module)"
					: "");
		goto out;
	}
	if (ioctl(*fd, UFFDIO_API, &api)) {
		rc = -errno;
		snprintf(err, errlen, "UFFDIO_API: %s", strerror(-rc));
	}
out:
	if (rc && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

static int register_missing(int fd, void *addr, uint64_t len, char *err, size_t errlen)
{
	const uint64_t need =
	    1ull << _UFFDIO_COPY | 1ull << _UFFDIO_ZEROPAGE | 1ull << _UFFDIO_WAKE;
	struct uffdio_register reg = { .range = { (uintptr_t)addr, len },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };

	if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
		snprintf(err, errlen, "UFFDIO_REGISTER: %s", strerror(errno));
		return -errno;
	}
	if ((reg.ioctls & need) != need) {
		ioctl(fd, UFFDIO_UNREGISTER, &reg.range);
		snprintf(err, errlen, "the kernel cannot fill missing pages of this memory");
		return -EOPNOTSUPP;
	}
	return 0;
}

int rmig_postcopy_probe(char *err, size_t errlen)
{
	size_t len = (size_t)sysconf(_SC_PAGESIZE);
	void *p = MAP_FAILED;
	int fd = -1, user_only, rc;

	rc = open_uffd(&fd, &user_only, err, errlen);
	if (rc)
		goto out;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "mmap: %s", strerror(-rc));
		goto out;
	}
	rc = register_missing(fd, p, len, err, errlen);
out:
	if (p != MAP_FAILED)
		munmap(p, len);
	if (fd >= 0)
		close(fd); /* unregisters */
	return rc;
}

int rmig_postcopy_create(struct rmig_ctx *ctx, struct rmig_postcopy **out)
{
	struct rmig_postcopy *pc = NULL;
	size_t sys_page = (size_t)sysconf(_SC_PAGESIZE);
	int rc = 0;

	for (size_t i = 0; i < ctx->nregions; i++) {
		const struct rmig_region *r = &ctx->regions[i];

		/* Shared or file memory keeps a dropped page in its cache: it
		 * would not read as missing, and the stale copy would stay. */
		if (!(r->flags & RMIG_REGION_UNTOUCHED_ZERO) || r->page_size % sys_page) {
			rc = rmig_err(ctx, -EOPNOTSUPP,
				      "post-copy: region %u of backend %s is not private "
				      "anonymous memory of %zu-byte pages, whose missing pages "
				      "can be caught",
				      r->id, ctx->be->ops->name, sys_page);
			goto out;
		}
	}
	pc = calloc(1, sizeof(*pc));
	if (!pc) {
		rc = rmig_err(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	pc->ctx = ctx;
	pc->uffd = pc->stop_fd = -1;
	pc->sys_page = sys_page;
	pthread_mutex_init(&pc->lock, NULL);
	pthread_mutex_init(&pc->req_lock, NULL);
	pthread_mutex_init(&pc->wait_lock, NULL);
	for (size_t i = 0; i < ctx->nregions; i++) {
		uint64_t words = rmig_bitmap_words(ctx->regions[i].len / ctx->regions[i].page_size);

		pc->stale[i] = calloc(words, 8);
		pc->pending[i] = calloc(words, sizeof(*pc->pending[i]));
		pc->requested[i] = calloc(words, sizeof(*pc->requested[i]));
		if (!pc->stale[i] || !pc->pending[i] || !pc->requested[i]) {
			rc = rmig_err(ctx, -ENOMEM, "out of memory for post-copy bitmaps");
			goto out;
		}
	}
out:
	if (rc) {
		rmig_postcopy_destroy(pc);
		pc = NULL;
	}
	*out = pc;
	return rc;
}

void rmig_postcopy_destroy(struct rmig_postcopy *pc)
{
	if (!pc)
		return;
	rmig_postcopy_disarm(pc);
	for (size_t i = 0; i < RMIG_MAX_REGIONS; i++) {
		free(pc->stale[i]);
		free(pc->pending[i]);
		free(pc->requested[i]);
	}
	pthread_mutex_destroy(&pc->lock);
	pthread_mutex_destroy(&pc->req_lock);
	pthread_mutex_destroy(&pc->wait_lock);
	free(pc);
}

int rmig_postcopy_discard(struct rmig_postcopy *pc, const struct rmig_msg *m)
{
	struct rmig_ctx *ctx = pc->ctx;
	const struct rmig_region *r;
	char why[256];
	size_t ri;
	int rc;

	if (pc->uffd >= 0)
		return rmig_err(ctx, -EPROTO, "protocol error: DISCARD after COMPLETE");
	rc = rmig_page_msg_check(m, &ctx->layout, &ri, why, sizeof(why));
	if (rc)
		return rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
	r = &ctx->regions[ri];
	for (uint32_t i = 0; i < m->u.discard.nruns; i++) {
		const struct rmig_run *run = &m->u.discard.runs[i];
		uint64_t last = (run->first + run->count - 1) / 64;

		if (madvise((char *)r->host + run->first * r->page_size, run->count * r->page_size,
			    MADV_DONTNEED))
			return rmig_err(ctx, -errno,
					"post-copy: dropping pages %llu+%llu of region %u: %s",
					(unsigned long long)run->first,
					(unsigned long long)run->count, r->id, strerror(errno));
		for (uint64_t w = run->first / 64; w <= last; w++) {
			uint64_t mask = rmig_bitmap_word_mask(run->first, run->count, w);

			pc->nstale += (uint64_t)__builtin_popcountll(mask & ~pc->stale[ri][w]);
			pc->stale[ri][w] |= mask;
			atomic_fetch_or(&pc->pending[ri][w], mask);
		}
	}
	return 0;
}

static void fault_fail(struct rmig_postcopy *pc, const char *why)
{
	pthread_mutex_lock(&pc->lock);
	if (!pc->failed) {
		pc->failed = 1;
		snprintf(pc->failure, sizeof(pc->failure), "%s", why);
	}
	pthread_mutex_unlock(&pc->lock);
	/* The control thread reads the stream: wake it to notice. */
	pc->ctx->link->ops->interrupt(pc->ctx->link, RMIG_LINK_STOP_CTRL_RECV);
}

static int region_of(struct rmig_postcopy *pc, uint64_t addr, size_t *ri, uint64_t *page)
{
	for (size_t i = 0; i < pc->ctx->nregions; i++) {
		const struct rmig_region *r = &pc->ctx->regions[i];

		if (addr - (uintptr_t)r->host < r->len) {
			*ri = i;
			*page = (addr - (uintptr_t)r->host) / r->page_size;
			return 0;
		}
	}
	return -ENOENT;
}

/* Ask the source for page `page` of region index ri, unless the link is
 * lost: then the request waits for rmig_postcopy_resume. A send that fails
 * with the link is no failure of ours either: the session recovers, and
 * the request goes again then. */
static int request_page(struct rmig_postcopy *pc, size_t ri, uint64_t page, char *why,
			size_t whylen)
{
	struct rmig_msg m = { .type = RMIG_MSG_PAGE_REQUEST };
	int rc = 0;

	m.u.page.region_id = pc->ctx->regions[ri].id;
	m.u.page.page = page;
	pthread_mutex_lock(&pc->req_lock);
	if (!pc->held) {
		rc = rmig_ctrl_send_err(pc->ctx, &m, why, whylen);
		if (!rc)
			atomic_fetch_add(&pc->nrequested, 1);
		else if (rmig_link_failure(rc))
			rc = 0;
	}
	pthread_mutex_unlock(&pc->req_lock);
	return rc;
}

/* A thread faulted on page `page` of region index ri and waits for it
 * (when all slots are taken, this wait goes untimed). */
static void wait_begin(struct rmig_postcopy *pc, size_t ri, uint64_t page)
{
	pthread_mutex_lock(&pc->wait_lock);
	for (size_t i = 0; i < WAIT_SLOTS; i++)
		if (!pc->waits[i].since_ms) {
			pc->waits[i].ri = ri;
			pc->waits[i].page = page;
			pc->waits[i].since_ms = rmig_now_ms();
			atomic_fetch_add(&pc->nwaiting, 1);
			break;
		}
	pthread_mutex_unlock(&pc->wait_lock);
}

/* Pages [first, first + count) of ri are placed: the waits on them end. */
static void wait_end(struct rmig_postcopy *pc, size_t ri, uint64_t first, uint64_t count)
{
	int64_t now = rmig_now_ms();

	if (!atomic_load(&pc->nwaiting))
		return;
	pthread_mutex_lock(&pc->wait_lock);
	for (size_t i = 0; i < WAIT_SLOTS; i++) {
		uint64_t waited;

		if (!pc->waits[i].since_ms || pc->waits[i].ri != ri ||
		    pc->waits[i].page - first >= count)
			continue;
		waited = (uint64_t)(now - pc->waits[i].since_ms);
		if (waited > atomic_load(&pc->max_wait_ms))
			atomic_store(&pc->max_wait_ms, waited);
		pc->waits[i].since_ms = 0;
		atomic_fetch_sub(&pc->nwaiting, 1);
	}
	pthread_mutex_unlock(&pc->wait_lock);
}

/* One fault: ask for a pending page (once), map any other as zero. */
static int serve_fault(struct rmig_postcopy *pc, uint64_t addr, char *why, size_t whylen)
{
	uint64_t page, bit;
	size_t ri;

	if (region_of(pc, addr, &ri, &page)) {
		snprintf(why, whylen, "post-copy: fault at %#llx, outside guest memory",
			 (unsigned long long)addr);
		return -EFAULT;
	}
	bit = 1ull << (page % 64);
	if (atomic_load(&pc->pending[ri][page / 64]) & bit) {
		/* Placing the page wakes every thread waiting for it. */
		if (atomic_fetch_or(&pc->requested[ri][page / 64], bit) & bit)
			return 0;
		wait_begin(pc, ri, page);
		return request_page(pc, ri, page, why, whylen);
	}
	/* Not pending: never written in this migration (a page that was is
	 * present, or pending until placed), or placed since the fault. */
	atomic_fetch_add(&pc->nzeroed, 1);
	return rmig_postcopy_place(pc, ri, page, 1, NULL, why, whylen);
}

static void *fault_main(void *arg)
{
	struct rmig_postcopy *pc = arg;
	struct pollfd pfd[2] = { { pc->uffd, POLLIN, 0 }, { pc->stop_fd, POLLIN, 0 } };
	struct uffd_msg msg[FAULT_BATCH];
	char why[300];

	while (!atomic_load(&pc->stop)) {
		ssize_t n;

		if (poll(pfd, 2, STOP_POLL_MS) < 0) {
			if (errno == EINTR)
				continue;
			snprintf(why, sizeof(why), "post-copy: poll: %s", strerror(errno));
			fault_fail(pc, why);
			break;
		}
		if (pfd[1].revents)
			break;
		if (!pfd[0].revents)
			continue;
		n = read(pc->uffd, msg, sizeof(msg));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			snprintf(why, sizeof(why), "post-copy: reading faults: %s",
				 strerror(errno));
			fault_fail(pc, why);
			break;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT &&
			    serve_fault(pc, msg[i].arg.pagefault.address, why, sizeof(why))) {
				fault_fail(pc, why);
				return NULL;
			}
	}
	return NULL;
}

int rmig_postcopy_arm(struct rmig_postcopy *pc)
{
	struct rmig_ctx *ctx = pc->ctx;
	char why[256];
	int rc;

	rc = open_uffd(&pc->uffd, &pc->user_only, why, sizeof(why));
	if (rc)
		return rmig_err(ctx, rc, "post-copy: %s", why);
	for (; pc->nregistered < ctx->nregions; pc->nregistered++) {
		const struct rmig_region *r = &ctx->regions[pc->nregistered];

		rc = register_missing(pc->uffd, r->host, r->len, why, sizeof(why));
		if (rc)
			return rmig_err(ctx, rc,
					"post-copy: cannot catch the faults of region %u: %s",
					r->id, why);
	}
	pc->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (pc->stop_fd < 0)
		return rmig_err(ctx, -errno, "post-copy: eventfd: %s", strerror(errno));
	atomic_store(&pc->missing, pc->nstale);
	if (pthread_create(&pc->tid, NULL, fault_main, pc))
		return rmig_err(ctx, -EAGAIN, "post-copy: cannot start the fault thread");
	pc->thread_started = 1;
	if (pc->user_only) {
		struct rmig_event ev = {
			.type = RMIG_EV_WARNING,
			.detail = "post-copy: userfaultfd without privilege catches faults from "
				  "user mode only: a kernel access to a missing guest page (a "
				  "VMM's KVM, a read(2) into guest memory) fails"
		};

		rmig_emit(ctx, &ev);
	}
	return 0;
}

int rmig_postcopy_armed(const struct rmig_postcopy *pc)
{
	return pc->uffd >= 0;
}

int rmig_postcopy_check(struct rmig_postcopy *pc, size_t ri, uint64_t first, uint64_t count,
			char *why, size_t whylen)
{
	for (uint64_t w = first / 64; count && w <= (first + count - 1) / 64; w++) {
		uint64_t mask = rmig_bitmap_word_mask(first, count, w),
			 off = mask & ~pc->stale[ri][w];

		if (off) {
			snprintf(why, whylen,
				 "post-copy: page %llu of region %u arrives but was not discarded",
				 (unsigned long long)(w * 64 + (uint64_t)__builtin_ctzll(off)),
				 pc->ctx->regions[ri].id);
			return -EBADMSG;
		}
	}
	return 0;
}

/* UFFDIO_COPY (src) or UFFDIO_ZEROPAGE (NULL) of len bytes at dst: 0 when
 * all placed, else -errno with *done set to the bytes placed before. */
static int fill(int uffd, char *dst, const char *src, uint64_t len, uint64_t *done)
{
	int64_t got;
	int rc;

	if (src) {
		struct uffdio_copy c = { .dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len };

		rc = ioctl(uffd, UFFDIO_COPY, &c) ? -errno : 0;
		got = c.copy;
	} else {
		struct uffdio_zeropage z = { .range = { (uintptr_t)dst, len } };

		rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z) ? -errno : 0;
		got = z.zeropage;
	}
	*done = rc ? (got > 0 ? (uint64_t)got : 0) : len;
	return rc;
}

int rmig_postcopy_place(struct rmig_postcopy *pc, size_t ri, uint64_t first, uint64_t count,
			const void *src, char *why, size_t whylen)
{
	const struct rmig_region *r = &pc->ctx->regions[ri];
	char *base = (char *)r->host + first * r->page_size;
	uint64_t len = count * r->page_size, at = 0, placed = 0;

	while (at < len) {
		uint64_t done;
		int rc =
		    fill(pc->uffd, base + at, src ? (const char *)src + at : NULL, len - at, &done);

		at += done;
		if (!rc || (rc == -EAGAIN && done))
			continue; /* all, or part: the rest starts at an existing page */
		if (rc == -EEXIST) {
			/* Placed meanwhile the other way: wake whoever faulted on it
			 * (an EEXIST wakes no one). */
			struct uffdio_range wake = { (uintptr_t)(base + at), pc->sys_page };

			ioctl(pc->uffd, UFFDIO_WAKE, &wake);
			at += pc->sys_page;
			continue;
		}
		if (rc == -EAGAIN)
			continue; /* the address space changed under the call: again */
		snprintf(why, whylen, "post-copy: placing pages %llu+%llu of region %u: %s",
			 (unsigned long long)first, (unsigned long long)count, r->id,
			 strerror(-rc));
		return rc;
	}
	for (uint64_t w = first / 64; count && w <= (first + count - 1) / 64; w++) {
		uint64_t mask = rmig_bitmap_word_mask(first, count, w);

		placed += (uint64_t)__builtin_popcountll(
		    atomic_fetch_and(&pc->pending[ri][w], ~mask) & mask);
	}
	if (placed) {
		atomic_fetch_sub(&pc->missing, placed);
		wait_end(pc, ri, first, count);
	}
	return 0;
}

void rmig_postcopy_disarm(struct rmig_postcopy *pc)
{
	if (pc->thread_started) {
		uint64_t one = 1;

		atomic_store(&pc->stop, 1);
		if (write(pc->stop_fd, &one, sizeof(one)) < 0) {
			/* Cannot happen to an eventfd this far below its maximum;
			 * the flag stops the thread all the same. */
		}
		pthread_join(pc->tid, NULL);
		pc->thread_started = 0;
	}
	/* Unregistering wakes the threads still waiting in a fault: they retry,
	 * and a page still missing becomes a fresh zero page. */
	for (size_t i = 0; i < pc->nregistered; i++) {
		struct uffdio_range r = { (uintptr_t)pc->ctx->regions[i].host,
					  pc->ctx->regions[i].len };

		ioctl(pc->uffd, UFFDIO_UNREGISTER, &r);
	}
	pc->nregistered = 0;
	if (pc->uffd >= 0)
		close(pc->uffd);
	if (pc->stop_fd >= 0)
		close(pc->stop_fd);
	pc->uffd = pc->stop_fd = -1;
}

void rmig_postcopy_figures(struct rmig_postcopy *pc, struct rmig_postcopy_figures *f)
{
	f->stale = pc->nstale;
	f->missing = atomic_load(&pc->missing);
	f->requested = atomic_load(&pc->nrequested);
	f->zeroed = atomic_load(&pc->nzeroed);
	f->max_wait_ms = atomic_load(&pc->max_wait_ms);
}

int rmig_postcopy_failed(struct rmig_postcopy *pc, char *why, size_t whylen)
{
	int failed;

	pthread_mutex_lock(&pc->lock);
	failed = pc->failed;
	if (failed)
		snprintf(why, whylen, "%s", pc->failure);
	pthread_mutex_unlock(&pc->lock);
	return failed;
}

void rmig_postcopy_hold(struct rmig_postcopy *pc)
{
	pthread_mutex_lock(&pc->req_lock);
	pc->held = 1;
	pthread_mutex_unlock(&pc->req_lock);
}

int rmig_runs_add(struct rmig_ctx *ctx, struct rmig_msg *m, uint64_t page)
{
	uint32_t n = m->u.discard.nruns;
	struct rmig_run *last = n ? &m->u.discard.runs[n - 1] : NULL;
	int rc = 0;

	if (last && last->first + last->count == page) {
		last->count++;
		return 0;
	}
	if (n == RMIG_MAX_RUNS) {
		rc = rmig_ctrl_send(ctx, m);
		m->u.discard.nruns = 0;
	}
	m->u.discard.runs[m->u.discard.nruns++] = (struct rmig_run){ page, 1 };
	return rc;
}

int rmig_runs_flush(struct rmig_ctx *ctx, struct rmig_msg *m)
{
	int rc = m->u.discard.nruns ? rmig_ctrl_send(ctx, m) : 0;

	m->u.discard.nruns = 0;
	return rc;
}

/* Region ri's pages still missing, as MISSING runs. */
static int send_missing(struct rmig_postcopy *pc, size_t ri, struct rmig_msg *m)
{
	const struct rmig_region *r = &pc->ctx->regions[ri];
	uint64_t words = rmig_bitmap_words(r->len / r->page_size);
	int rc = 0;

	memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.discard));
	m->type = RMIG_MSG_MISSING;
	m->u.discard.region_id = r->id;
	for (uint64_t w = 0; w < words && !rc; w++)
		for (uint64_t bits = atomic_load(&pc->pending[ri][w]); bits && !rc;
		     bits &= bits - 1)
			rc = rmig_runs_add(pc->ctx, m, w * 64 + (uint64_t)__builtin_ctzll(bits));
	return rc ? rc : rmig_runs_flush(pc->ctx, m);
}

/* Of those, the ones the guest asked for: one PAGE_REQUEST each. */
static int ask_again(struct rmig_postcopy *pc, size_t ri, struct rmig_msg *m)
{
	const struct rmig_region *r = &pc->ctx->regions[ri];
	uint64_t words = rmig_bitmap_words(r->len / r->page_size);
	int rc = 0;

	memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.page));
	m->type = RMIG_MSG_PAGE_REQUEST;
	m->u.page.region_id = r->id;
	for (uint64_t w = 0; w < words && !rc; w++) {
		uint64_t bits =
		    atomic_load(&pc->pending[ri][w]) & atomic_load(&pc->requested[ri][w]);

		for (; bits && !rc; bits &= bits - 1) {
			m->u.page.page = w * 64 + (uint64_t)__builtin_ctzll(bits);
			rc = rmig_ctrl_send(pc->ctx, m);
			if (!rc)
				atomic_fetch_add(&pc->nrequested, 1);
		}
	}
	return rc;
}

int rmig_postcopy_resume(struct rmig_postcopy *pc, uint64_t *missing)
{
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int rc = 0;

	if (!m)
		return rmig_err(pc->ctx, -ENOMEM, "out of memory");
	pthread_mutex_lock(&pc->req_lock);
	/* All that is still missing, then what the guest waits for (the
	 * source answers those at once, before it sends the rest). In this
	 * order the source reads MISSING without answering, and only the
	 * short requests remain to send while answers come back: neither side
	 * can fill the other's buffers while it is not reading (answers may be
	 * 2 MiB pages). */
	for (size_t ri = 0; ri < pc->ctx->nregions && !rc; ri++)
		rc = send_missing(pc, ri, m);
	for (size_t ri = 0; ri < pc->ctx->nregions && !rc; ri++)
		rc = ask_again(pc, ri, m);
	if (!rc)
		pc->held = 0;
	*missing = atomic_load(&pc->missing);
	pthread_mutex_unlock(&pc->req_lock);
	free(m);
	return rc;
}

int rmig_postcopy_answer(struct rmig_ctx *ctx, const struct rmig_msg *req, uint64_t *const *stale)
{
	struct rmig_msg *m = calloc(1, sizeof(*m));
	const struct rmig_region *r;
	char why[256];
	size_t ri;
	int rc;

	if (!m)
		return rmig_err(ctx, -ENOMEM, "out of memory");
	rc = rmig_page_msg_check(req, &ctx->layout, &ri, why, sizeof(why));
	if (rc) {
		rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
		goto out;
	}
	r = &ctx->regions[ri];
	if (!((stale[ri][req->u.page.page / 64] >> (req->u.page.page % 64)) & 1)) {
		rc = rmig_err(ctx, -EPROTO,
			      "protocol error: peer %s asks for page %llu of region %u, which it "
			      "was not told to fetch",
			      ctx->link->peer, (unsigned long long)req->u.page.page, r->id);
		goto out;
	}
	m->type = RMIG_MSG_PAGE_DATA;
	m->u.page.region_id = r->id;
	m->u.page.page = req->u.page.page;
	m->u.page.data = (const uint8_t *)r->host + req->u.page.page * r->page_size;
	m->u.page.len = r->page_size;
	rc = rmig_ctrl_send(ctx, m);
	if (!rc) {
		uint64_t len = RMIG_FRAME_HDR_LEN + RMIG_PAGE_REF_LEN + r->page_size;

		ctx->stats.postcopy_requested++;
		ctx->stats.bytes_sent += len;
		atomic_fetch_add(&ctx->live_bytes, len); /* as the destination counts it */
		atomic_fetch_add(&ctx->live_pages, 1);
	}
out:
	free(m);
	return rc;
}
