/* rmig_uffd.h - the uffd backend, for a program that migrates a range of its own memory.
 * Part of librmig's public API; see rmig.h for the conventions.
 */
#ifndef RMIG_UFFD_H
#define RMIG_UFFD_H

#include <stddef.h>
#include <stdint.h>

#include "rmig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The uffd backend, for embedding: a program (a VMM, or any process) migrates
 * a range of its own memory. The kernel tracks the writes to it: userfaultfd
 * write protection in asynchronous mode, and the PAGEMAP_SCAN ioctl that
 * reports the written pages and protects them again in one call (Linux 6.7+;
 * root is not needed). The program gives callbacks to stop and restart
 * whatever writes the memory.
 *
 * Every callback gets arg, returns 0 or a negative errno, and is called from
 * the thread running rmig_send()/rmig_recv(). The dirty log is read from
 * rmig's own threads, without calling back.
 *
 * The same backend is registered by name for specs ("uffd:size=256M,
 * dirty-rate=5000", the sim backend's options): a sim guest whose writes the
 * kernel tracks; its device state is sim's, so the other side may be sim. */
/* Unlike struct rmig_backend_ops, not sized: a member added later changes
 * the ABI, and comes with a new soname. */
struct rmig_uffd_params {
	/* The guest memory: page-aligned, a whole number of pages, mapped for
	 * the backend's whole life. Source: anonymous, shmem or hugetlbfs
	 * memory (what userfaultfd can write-protect). Destination: at least as
	 * large as the source's, and it must read as zero (fresh from mmap): the
	 * pages the source reports as zero are not written. rmig does not read
	 * it to check (a fault per page); with verify on, anything else fails
	 * the digest comparison and the migration rolls back. */
	void *addr;
	size_t len;
	/* Source, required. Once pause returned, nothing writes the memory
	 * until resume (called when a migration rolls back). */
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	/* Source, optional: slow the writers to (100 - percent)% of their pace
	 * (the throttle policy). NULL: cannot, so a guest that does not
	 * converge is switched over (or aborted) after max_rounds. */
	int (*throttle)(void *arg, unsigned percent);
	/* Source, optional: the device state, taken while paused; *blob is
	 * malloc'd and rmig frees it. NULL: none (an empty blob is sent). */
	int (*save_state)(void *arg, void **blob, size_t *len);
	/* Destination, optional: the source's device state, before start.
	 * NULL: only an empty one is accepted. */
	int (*load_state)(void *arg, const void *blob, size_t len);
	/* Destination, required: run the guest (after the source said GO). */
	int (*start)(void *arg);
	void *arg;
};

/* Create a uffd backend over p->addr for role. p is copied; the memory and
 * p->arg are borrowed and must outlive the backend. The source checks at once
 * that the kernel has what it needs: -EOPNOTSUPP with one line naming what is
 * missing (e.g. "uffd: the kernel lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7+)"),
 * -EPERM if userfaultfd is forbidden here (seccomp). Tracking starts with the
 * migration (the memory is registered with userfaultfd then) and ends at
 * rmig_backend_close(), which unregisters it: the memory is then the caller's
 * alone again. Returns 0 and sets *out (close it with rmig_backend_close()),
 * or a negative errno (-EINVAL: bad params) with a message in err. */
RMIG_API int rmig_uffd_backend_create(const struct rmig_uffd_params *p, enum rmig_role role,
				      struct rmig_backend **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
