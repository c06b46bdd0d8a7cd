/* rmig_kvm.h - the kvm backend, for a KVM-based VMM that embeds librmig.
 * Part of librmig's public API; see rmig.h for the conventions.
 */
#ifndef RMIG_KVM_H
#define RMIG_KVM_H

#include <stddef.h>
#include <stdint.h>

#include "rmig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The kvm backend, for a KVM-based VMM that embeds librmig.
 *
 * The VMM describes its VM: the VM fd, its memory slots exactly as it gave
 * them to KVM_SET_USER_MEMORY_REGION, and callbacks for what only it can do
 * (stop and start its vCPUs, save and load their and its devices' state).
 * Guest memory travels through the slots' host mappings; on the source the
 * dirty pages come from KVM's dirty log: start_dirty_log adds
 * KVM_MEM_LOG_DIRTY_PAGES to every slot (with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
 * and KVM_DIRTY_LOG_INITIALLY_SET, where KVM offers them), fetch_dirty reads
 * KVM_GET_DIRTY_LOG and, in manual mode, clears what it read with
 * KVM_CLEAR_DIRTY_LOG (in chunks of 1 GiB, skipping clean ones). With
 * INITIALLY_SET, where every page starts dirty, start_dirty_log clears them
 * all before it returns (the first pre-copy round sends every page anyway),
 * so the first fetch holds only the pages written since.
 *
 * Region ids are the slot numbers; both sides must use the same slots. The
 * backend's ioctls on vm_fd run on the engine's threads (fetch_dirty not
 * always on the same one). Not supported: a VM using the dirty ring
 * (KVM_CAP_DIRTY_LOG_RING), throttling (an unconverged migration is forced
 * or aborted, see --on-no-converge).
 *
 * Without a VMM, for testing the KVM ioctl path: the spec
 * "kvm:size=SIZE[,slots=N,dirty-rate=PAGES_PER_S]" (source) / "kvm"
 * (destination) opens /dev/kvm and builds a VM itself, with memory in N
 * slots and, with dirty-rate, one vCPU whose tiny guest writes that many
 * pages a second. */

struct rmig_kvm_slot {
	uint32_t slot;	/* KVM slot id, as given to KVM (bits 16-31: address space) */
	uint32_t flags; /* the slot's KVM_MEM_* flags as the VMM set them */
	uint64_t gpa;	/* guest-physical base, page-aligned */
	uint64_t len;	/* bytes, a non-zero multiple of the host page size */
	void *host;	/* the slot's memory in this process, page-aligned */
};

/* Unlike struct rmig_backend_ops, not sized: a member added later changes
 * the ABI, and comes with a new soname. */
struct rmig_kvm_params {
	/* Source: the VM fd from KVM_CREATE_VM (borrowed, not closed).
	 * Destination: unused (-1). */
	int vm_fd;
	/* The guest's memory slots (1..RMIG_MAX_REGIONS), copied at create,
	 * exactly as registered with KVM: the backend re-registers them with
	 * other flags, and KVM would move a slot given a different gpa. The
	 * memory stays the VMM's: it must stay mapped, and the slots unchanged
	 * in KVM (not moved, resized, deleted, nor their dirty logging toggled
	 * or read by the VMM), until rmig_backend_close(). On the destination
	 * the memory must read as zero (fresh anonymous memory does). */
	const struct rmig_kvm_slot *slots;
	size_t nslots;
	/* Callbacks, each returning 0 or a negative errno, called on the
	 * engine's thread (the one in rmig_send/rmig_recv) with arg, never two
	 * at once. */
	int (*pause)(void *arg);  /* source, required: stop every vCPU; return
				   * once none runs */
	int (*resume)(void *arg); /* source, required: run them again (rollback) */
	/* Source, optional: vCPU and device state, taken while paused; *blob
	 * malloc'd, freed by rmig. NULL: no state (an empty blob). */
	int (*save_state)(void *arg, void **blob, size_t *len);
	/* Destination, optional: the blob save_state made on the source. NULL:
	 * only an empty blob is accepted. */
	int (*load_state)(void *arg, const void *blob, size_t len);
	int (*start)(void *arg); /* destination, required: run the vCPUs */
	void *arg;
};

/* A kvm backend instance for role, from the VMM's description p (read only
 * during the call). Checks p (and on the source that vm_fd is a KVM VM fd)
 * but changes nothing in KVM: dirty logging starts with the migration, and
 * rmig_backend_close() turns it off again on the slots where it turned it
 * on. The KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 setting it made stays (KVM
 * cannot tell what it was before). On success *out is the caller's, to
 * release with rmig_backend_close(); on failure returns a negative errno
 * and writes a one-line message to err (errlen bytes, may be 0). */
RMIG_API int rmig_kvm_backend_create(const struct rmig_kvm_params *p, enum rmig_role role,
				     struct rmig_backend **out, char *err, size_t errlen);

/* How the dirty log of a kvm backend's source runs, once start_dirty_log
 * has: a mask of the flags below (0: plain KVM_GET_DIRTY_LOG, which clears
 * as it reads). -EINVAL if be is not a kvm backend, -ENODATA before the
 * dirty log started. For logs and tests. */
#define RMIG_KVM_LOG_MANUAL_PROTECT 1u /* KVM_CLEAR_DIRTY_LOG after each fetch */
#define RMIG_KVM_LOG_INITIALLY_SET 2u  /* every page started dirty */
RMIG_API int rmig_kvm_dirty_log_mode(const struct rmig_backend *be);

#ifdef __cplusplus
}
#endif
#endif
