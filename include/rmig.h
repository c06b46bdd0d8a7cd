/* rmig.h - the one public header of librmig, a live-migration transport.
 *
 * A hypervisor (or any program that owns "guest" memory) describes its guest
 * through a backend (struct rmig_backend_ops). rmig moves the memory to a peer
 * over a link (RDMA or TCP), round after round of pre-copy, then a short
 * stop-and-copy and a two-phase commit so that exactly one side ever runs the
 * guest.
 *
 * Conventions for every function here:
 *  - Functions returning int return 0 on success or a negative errno. Where an
 *    object is at hand, a human-readable message is left on it (see
 *    rmig_errmsg()).
 *  - Whoever calls a _create/_open owns the object and must call the matching
 *    _destroy/_close exactly once.
 *  - Unless stated, an object is used from one thread at a time. rmig_cancel()
 *    and rmig_progress() may be called from any thread at any time.
 *  - Separate contexts, each with its own backend instance, may migrate at the
 *    same time on different threads. The library installs no signal handler,
 *    never raises SIGPIPE and never exits the process.
 * The man page librmig(3) says the same at more length.
 */
#ifndef RMIG_H
#define RMIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RMIG_API __attribute__((visibility("default")))

#define RMIG_VERSION_STRING "0.1.0"
#define RMIG_DEFAULT_PORT 7471

/* Exit codes of the rmig tool, and the outcome of a migration. */
enum rmig_result {
	RMIG_RESULT_MIGRATED = 0,    /* destination runs the guest */
	RMIG_RESULT_FAILED = 1,	     /* never started (e.g. peer refused), source still runs */
	RMIG_RESULT_USAGE = 2,	     /* bad command line (tool only) */
	RMIG_RESULT_ROLLED_BACK = 3, /* abandoned part-way: source guest resumed and runs */
	RMIG_RESULT_UNKNOWN = 4,     /* link lost after GO: source stays paused, operator decides;
				      * also post-copy failed after GO: the guest is lost */
};

enum rmig_role { RMIG_ROLE_SOURCE, RMIG_ROLE_DEST };

/* ------------------------------------------------------------------ */
/* Guest memory, as a backend describes it.                            */

#define RMIG_MAX_REGIONS 64

/* Regions: 1..RMIG_MAX_REGIONS per guest, owned by the backend. */
struct rmig_region {
	uint32_t id;	    /* stable id, the same on both sides */
	uint32_t page_size; /* power of two, 4 KiB .. 1 GiB */
	uint64_t gpa;	    /* guest-physical base address */
	uint64_t len;	    /* bytes, a multiple of page_size */
	void *host;	    /* where the bytes live in this process */
	uint32_t flags;	    /* RMIG_REGION_* */
};

/* The region is private anonymous memory of this process (MAP_PRIVATE |
 * MAP_ANONYMOUS): a page never touched reads as zero. The first round then
 * skips the pages the kernel never populated (neither present nor swapped,
 * per /proc/self/pagemap) instead of reading them: a sparse guest costs
 * only its touched part. Do not set it for shared or file-backed memory,
 * whose pages may hold data without being mapped here. */
#define RMIG_REGION_UNTOUCHED_ZERO 1u

/* ------------------------------------------------------------------ */
/* Backends: what a hypervisor must give. One table per kind, registered
 * by name; an instance is a struct rmig_backend. Every op returns 0 or a
 * negative errno and, on error, writes a message with rmig_backend_err().
 * The engine calls ops from its own thread, except fetch_dirty, which is
 * called from one thread at a time but not always the same one.
 * Its own thread is the one running rmig_send()/rmig_recv(); it never calls
 * two ops of one instance at once. The guest keeps running on its own threads
 * meanwhile; the engine reads the source's memory, and writes the
 * destination's (between prepare_regions and load_state), from worker
 * threads, never through ops. */

struct rmig_backend;

struct rmig_guest_stats {
	int running;	   /* the guest executes (not paused, not stopped) */
	uint64_t progress; /* monotonic count of guest work (e.g. writes); 0: unknown */
};

/* A hypervisor that migrates itself (QEMU) hands rmig its own migration
 * stream instead of memory regions: see stream_open below. */
struct rmig_stream_params {
	unsigned downtime_ms;	/* the pause the hypervisor should aim for */
	uint64_t max_bandwidth; /* bytes/s, 0 = unlimited */
};

enum rmig_stream_state {
	RMIG_STREAM_ACTIVE,	/* pre-copy: the guest runs */
	RMIG_STREAM_SWITCHOVER, /* the guest is paused; the hypervisor waits for
				 * stream_switchover before sending the rest */
	RMIG_STREAM_COMPLETING, /* sending the rest, guest paused */
	RMIG_STREAM_COMPLETED,	/* all of it is in the stream */
	RMIG_STREAM_FAILED,	/* the hypervisor gave up: detail says why */
};

struct rmig_stream_status {
	enum rmig_stream_state state;
	unsigned round;		    /* the hypervisor's passes over memory */
	uint64_t remaining_bytes;   /* memory still to send, by its count */
	uint64_t transferred_bytes; /* by its count */
	uint64_t guest_bytes;	    /* guest memory size, if known */
	double dirty_rate;	    /* pages/s, its estimate */
	double expected_downtime_ms;
	char detail[200]; /* RMIG_STREAM_FAILED: why */
};

struct rmig_backend_ops {
	const char *name;
	/* Both sides. args is the text after "name:" in the spec ("" if none).
	 * Set be->priv. If create fails, destroy is still called: it must cope
	 * with a half-built instance (be->priv possibly NULL). */
	int (*create)(struct rmig_backend *be, const char *args, enum rmig_role role);
	/* Release everything (on the source after a migration, the guest that
	 * moved). Called once, by rmig_backend_close() or after a failed create. */
	void (*destroy)(struct rmig_backend *be);
	/* The regions; the array stays valid and unchanged until destroy. On the
	 * destination, only after prepare_regions. host: where the bytes live. */
	int (*get_regions)(struct rmig_backend *be, const struct rmig_region **regions,
			   size_t *count);

	/* Source. */
	/* Once, before the first round reads memory: from here on every write
	 * must show up in a later fetch_dirty. Optional (NULL): the backend
	 * logs writes all along. */
	int (*start_dirty_log)(struct rmig_backend *be);
	/* OR the pages written since the last call into bitmap (one bit per page,
	 * bit i of word i/64), and clear them in the backend's log.
	 * region_index indexes get_regions' array (it is not the id); bitmap has
	 * (pages + 63) / 64 words: write no further. The guest may run: a write
	 * racing with this call must be seen by the page read after it or set its
	 * bit again (write the data, then set the bit with release ordering). */
	int (*fetch_dirty)(struct rmig_backend *be, size_t region_index, uint64_t *bitmap);
	/* Stop the guest; once this returns, its memory no longer changes.
	 * The destination calls it too (if set), when post-copy failed after
	 * the guest started there. */
	int (*pause)(struct rmig_backend *be);
	/* Rollback after pause: run the guest again. If this fails, the result
	 * is RMIG_RESULT_UNKNOWN: neither side runs the guest. */
	int (*resume)(struct rmig_backend *be);
	/* Device/CPU state as an opaque blob, taken while paused. *blob is
	 * malloc'd; the caller frees it. At most 64 MiB; it reaches the
	 * destination's load_state unchanged. Optional (NULL): no device
	 * state (an empty blob). */
	int (*save_state)(struct rmig_backend *be, void **blob, size_t *len);
	/* Optional (NULL if unsupported): slow the guest to (100-percent)%.
	 * percent is 0..99; 0 (full speed) after a rollback. */
	int (*throttle)(struct rmig_backend *be, unsigned percent);

	/* Destination. */
	/* Allocate memory to receive a guest with this layout (host is unset in
	 * layout). It must read as zero: pages the source reports as zero and
	 * that were not written since are left alone. Fail with a message if
	 * it cannot hold the guest (check before allocating). */
	int (*prepare_regions)(struct rmig_backend *be, const struct rmig_region *layout,
			       size_t count);
	/* All memory is in (and verified) and no longer written by the engine:
	 * take the device state. Validate it: a failure rolls back. With
	 * post-copy, memory is not all in yet (nor at start): a page not there
	 * is fetched from the source when a thread touches it, which blocks
	 * that thread meanwhile. The calling thread must not touch guest
	 * memory then: it is the one that receives the pages asked for.
	 * Optional (NULL): only an empty state is accepted. */
	int (*load_state)(struct rmig_backend *be, const void *blob, size_t len);
	/* GO arrived: run the guest. A failure rolls back. Optional (NULL):
	 * resume() starts it. */
	int (*start)(struct rmig_backend *be);

	/* Optional: is the guest running, and how much work has it done. Not
	 * called by the engine; for the embedder (the rmig tool's summary). */
	int (*guest_stats)(struct rmig_backend *be, struct rmig_guest_stats *st);

	/* Optional, for a hypervisor that migrates itself as one byte stream
	 * (QEMU). With stream_open set, get_regions reports no regions and the
	 * engine never calls start_dirty_log, fetch_dirty, pause, save_state or
	 * throttle: the hypervisor runs its own pre-copy and pauses the guest
	 * itself; rmig carries the stream and decides the commit.
	 * Source: start the outgoing migration; the engine reads the stream from
	 * *fd until EOF. resume() then means "cancel the migration and run the
	 * guest here", whatever state it is in.
	 * Destination (after prepare_regions with no regions): the engine
	 * writes the stream to *fd; load_state (with an empty blob) marks its end and
	 * returns once the hypervisor has loaded it all, guest paused; start()
	 * runs it. The backend owns *fd (closes it in load_state or destroy). */
	int (*stream_open)(struct rmig_backend *be, const struct rmig_stream_params *p, int *fd);
	/* Source: how the hypervisor's migration is doing. Cheap: polled often. */
	int (*stream_status)(struct rmig_backend *be, struct rmig_stream_status *st);
	/* Source, in RMIG_STREAM_SWITCHOVER: let the hypervisor send the rest. */
	int (*stream_switchover)(struct rmig_backend *be);
	/* Source, optional (NULL: the engine polls stream_status every 20 ms):
	 * block until the hypervisor reports a change in its migration (e.g.
	 * QEMU's MIGRATION event), wake_fd (if >= 0) is readable, or timeout_ms
	 * passed; 0 in all three cases (a spurious return is harmless: the
	 * engine calls stream_status next). Ask the hypervisor nothing here:
	 * only wait for what it sends by itself. Called before the switch-over
	 * and after the stream ended, never in between. */
	int (*stream_wait)(struct rmig_backend *be, int wake_fd, unsigned timeout_ms);
};

/* An instance, made by rmig_backend_open(): the library sets ops, role and
 * err, and never touches priv. */
struct rmig_backend {
	const struct rmig_backend_ops *ops;
	void *priv; /* the backend's own state */
	enum rmig_role role;
	char err[256];
};

/* Register a backend kind. Not thread-safe: call before any migration.
 * -EEXIST if the name is taken, -ENOSPC if the registry is full.
 * -EINVAL if ops, its name, create, destroy or get_regions is NULL. The
 * registry keeps the pointer: ops must stay valid and unchanged (static). */
RMIG_API int rmig_backend_register(const struct rmig_backend_ops *ops);
/* The table registered as name (the built-in "sim" included), or NULL. */
RMIG_API const struct rmig_backend_ops *rmig_backend_find(const char *name);

/* Open a backend from a spec "name[:args]", e.g. "sim:size=1G,seed=7".
 * On failure returns a negative errno and writes a message to err.
 * -EINVAL for a bad spec (name: 1..31 characters), -ENOENT for an unknown
 * name, -ENOMEM, or create's error; *out is set on success only, and the
 * caller then owns the instance: rmig_backend_close() it exactly once. */
RMIG_API int rmig_backend_open(const char *spec, enum rmig_role role, struct rmig_backend **out,
			       char *err, size_t errlen);
/* Calls ops->destroy and frees be; NULL is a no-op. Not while a context
 * runs a migration with it. */
RMIG_API void rmig_backend_close(struct rmig_backend *be);
/* For backend authors: set be->err, printf-style. Returns nothing.
 * Truncated to 255 bytes; the engine quotes it when the op fails. */
RMIG_API void rmig_backend_err(struct rmig_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

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

/* ------------------------------------------------------------------ */
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

/* ------------------------------------------------------------------ */
/* A migration. */

struct rmig_event;

enum rmig_no_converge { RMIG_NC_THROTTLE, RMIG_NC_FORCE, RMIG_NC_ABORT };

/* What the source does when the link fails during pre-copy. */
enum rmig_failover {
	RMIG_FAILOVER_TCP,  /* reconnect over TCP and resume the same migration */
	RMIG_FAILOVER_NONE, /* roll back */
};

/* How RDMA reaches guest memory. */
enum rmig_pin {
	RMIG_PIN_AUTO,	  /* register guest memory if possible, else staging */
	RMIG_PIN_ALL,	  /* register guest memory (zero copy) or fail */
	RMIG_PIN_STAGING, /* copy through pinned per-NUMA-node buffers */
};

struct rmig_config {
	const char *transport; /* "auto" (rdma if it reaches the peer, else tcp),
				* "rdma" or "tcp" */
	const char *host;      /* source: peer; destination: listen address */
	uint16_t port;	       /* 0 on the destination: pick a free port */
	unsigned channels;     /* parallel data streams, 1..64 */
	unsigned downtime_ms;  /* switch over when expected downtime <= this */
	unsigned max_rounds;   /* pre-copy rounds before the no-converge policy */
	enum rmig_no_converge on_no_converge;
	uint64_t max_bandwidth;	    /* bytes/s, 0 = unlimited */
	int verify;		    /* digest all memory on both sides at the pause */
	unsigned accept_timeout_ms; /* destination: 0 = wait forever for a sender */
	unsigned link_timeout_ms;   /* a peer silent this long is lost (default 2000);
				     * both sides send heartbeats 4 times as often */
	enum rmig_failover failover;
	unsigned failover_timeout_ms; /* to re-establish a lost link (default 10000) */
	unsigned commit_timeout_ms;   /* link lost after GO: source, how long to ask
				       * for the outcome; destination, how long to
				       * wait for the question (default 10000) */
	const void *psk;	      /* pre-shared key: mutual HMAC-SHA256 challenge-
				       * response before anything else (NULL: none) */
	size_t psk_len;		      /* at least 16 bytes */
	int insecure;		      /* without psk: allow non-loopback peers */
	enum rmig_pin pin;	      /* RDMA only */
	const char *device;	      /* RDMA device (NULL: whichever routes to the peer) */
	int gid_index;		      /* RoCE GID index (-1: automatic) */
	unsigned bench_ms;	      /* source: first resend all memory, round after
				       * round, for this long (rmig bench); 0: off */
	/* Source: switch over by post-copy, as QEMU's postcopy-ram: when
	 * pre-copy would switch over, pause, send the device state and the
	 * list of pages still dirty, and let the destination start the guest
	 * at once; it fetches a missing page the moment the guest touches it
	 * (userfaultfd), the rest streams in behind. Downtime no longer grows
	 * with the dirty rate, but from GO until the last page is in, the
	 * guest's memory is split between the hosts: if either side or the
	 * link fails then, the guest is lost (result UNKNOWN on both sides).
	 * Needs the destination to register its guest memory with
	 * userfaultfd (private anonymous memory: RMIG_REGION_UNTOUCHED_ZERO);
	 * it refuses before anything is sent otherwise. Memory cannot be
	 * verified (the destination's guest writes it before all of it is
	 * there): verify is ignored, with a warning event. Not with
	 * RMIG_PIN_ALL (pages must be placed by the CPU) nor with a backend
	 * that migrates itself (stream_open). */
	int postcopy;
	/* Called from the engine's thread on each event; may be NULL.
	 * That is the thread in rmig_send()/rmig_recv(), which waits for it:
	 * keep it short. ev and its strings are valid during the call only. It
	 * may call rmig_progress()/rmig_cancel(), no other function on the ctx. */
	void (*on_event)(void *arg, const struct rmig_event *ev);
	void *event_arg;
	/* Destination: before acknowledging the layout, fault in all of the
	 * guest's memory (as QEMU's -mem-prealloc), one thread per CPU, after
	 * checking that the host and its cgroup have that much available. A
	 * host short of memory then refuses before the source sends a page,
	 * and the first round runs at the link's speed, not at the speed the
	 * kernel hands out fresh pages. Costs the time to clear the memory
	 * (stats.prealloc_ms) before the first round. */
	int prealloc;
	/* Added after prealloc, in this order (the link stack):
	 * link_options: options of particular links, "LINK.KEY=VALUE,...", e.g.
	 * "rdma.device=rxe0,rdma.gid_index=1". An option for a link in
	 * transport (or the failover link) that does not know it fails
	 * rmig_ctx_create with -EINVAL; one for another link is ignored.
	 * device and gid_index above are the same as rdma.device and
	 * rdma.gid_index here. NULL: none.
	 * failover_transport: with failover RMIG_FAILOVER_TCP, the link to
	 * fail over to (NULL: the last one "auto" would try, tcp).
	 * create_err, create_err_len: if set, rmig_ctx_create writes why it
	 * failed there (it has no context to leave a message on), e.g. which
	 * transport is unknown and which ones there are. */
	const char *link_options;
	const char *failover_transport;
	char *create_err;
	size_t create_err_len;
};

enum rmig_event_type {
	RMIG_EV_LISTENING, /* destination bound: port */
	RMIG_EV_CONNECTED, /* peer connected: peer */
	RMIG_EV_ROUND,	   /* a pre-copy round ended */
	RMIG_EV_THROTTLE,  /* guest throttled to throttle_pct */
	RMIG_EV_PHASE,	   /* phase changed: phase */
	RMIG_EV_TRANSPORT, /* link chosen: transport, pin, detail (why, if not rdma) */
	RMIG_EV_WARNING,   /* something the operator should know: detail */
	RMIG_EV_FAILOVER,  /* link replaced mid-migration: from, transport, detail (why) */
	RMIG_EV_REFUSED,   /* destination refused a peer: peer, detail (why) */
};

struct rmig_round_stats {
	unsigned round;
	uint64_t pages;	      /* data pages sent this round */
	uint64_t zero_pages;  /* zero pages sent (no data) this round */
	uint64_t bytes;	      /* bytes on the wire this round */
	uint64_t ms;	      /* duration of the round */
	double bandwidth;     /* bytes/s measured this round */
	double dirty_rate;    /* pages/s dirtied during the round */
	uint64_t dirty_pages; /* pages dirty at its end (to send next) */
	double expected_downtime_ms;
	/* CPU time the engine's control thread spent on the round: fetching the
	 * dirty log, scanning it, building runs, waiting excluded. The page
	 * senders' time is not in it. */
	uint64_t cpu_us;
};

/* Passed to on_event; only the fields named for its type are set. */
struct rmig_event {
	enum rmig_event_type type;
	uint16_t port;
	const char *peer;
	const char *phase;
	const char *transport;
	const char *from; /* RMIG_EV_FAILOVER: the link given up */
	const char *pin;
	const char *detail;
	unsigned throttle_pct;
	const struct rmig_round_stats *round;
};

/* Totals, valid after rmig_send/rmig_recv returned (until the next call on
 * the context, or its destruction). Strings are static. */
struct rmig_stats {
	enum rmig_result result;
	const char *transport; /* link used: "tcp" or "rdma" */
	const char *pin;       /* rdma: "all" (zero copy) or "staging"; tcp: "none" */
	uint64_t total_ms;
	uint64_t downtime_ms; /* source pause -> STARTED received */
	unsigned rounds;
	uint64_t bytes_sent; /* source: sent; destination: received */
	uint64_t pages_sent;
	uint64_t zero_pages;
	uint64_t guest_bytes;
	unsigned channels;
	unsigned throttle_pct; /* highest throttle applied */
	int verified;	       /* digests compared equal */
	int forced;	       /* switched over without meeting downtime_ms */
	unsigned failovers;    /* links replaced during the migration */
	double expected_downtime_ms;
	uint64_t bench_bytes;	     /* with bench_ms: bytes sent in the resend rounds */
	double bench_seconds;	     /* and the time they took */
	int postcopy;		     /* the guest started at the destination before all
				      * of its memory was there */
	uint64_t postcopy_pages;     /* pages still at the source at the switch-over */
	uint64_t postcopy_requested; /* of those, fetched because the running
				      * guest touched them first */
	uint64_t postcopy_ms;	     /* the destination's guest ran while pages
				      * were still arriving (source: STARTED to
				      * the last page acknowledged) */
	uint64_t prealloc_ms;	     /* destination: time spent on cfg.prealloc */
};

struct rmig_ctx;

/* Fill cfg with defaults: auto transport, pin auto, port 7471, 2 channels,
 * 300 ms, 30 rounds, throttle, unlimited bandwidth, verify on.
 * Also: host "127.0.0.1", timeouts 2000/10000/10000 ms, failover tcp, no
 * key, gid_index -1, no callback. Cannot fail. */
RMIG_API void rmig_config_init(struct rmig_config *cfg);

/* The context borrows be and cfg's strings; both must outlive it.
 * It copies *cfg and the key (the caller may wipe its own). Zero timeouts
 * mean the defaults. 0 and *out set, or -EINVAL (bad config), -ENOENT (a
 * transport not built in), -ENOMEM. Nothing is bound or connected yet. */
RMIG_API int rmig_ctx_create(struct rmig_ctx **out, const struct rmig_config *cfg,
			     struct rmig_backend *be);
/* Joins the context's threads, closes its links and listening socket,
 * wipes its key copy, frees it. NULL is a no-op. Not while rmig_send() or
 * rmig_recv() runs on it. Does not close the backend. */
RMIG_API void rmig_ctx_destroy(struct rmig_ctx *ctx);
/* Destination, between two rmig_recv calls on one context (a receiver that
 * keeps listening): the backend for the next migration. The old one is not
 * closed: that is the caller's. */
RMIG_API void rmig_ctx_set_backend(struct rmig_ctx *ctx, struct rmig_backend *be);

/* Run a whole migration on the calling thread. 0 when migrated; otherwise a
 * negative errno, rmig_errmsg() says why and rmig_stats()->result says what
 * became of the guest. Once per context. The source guest is then: paused
 * (MIGRATED: release it; UNKNOWN: the caller decides), never paused
 * (FAILED), or resumed by the engine (ROLLED_BACK). */
RMIG_API int rmig_send(struct rmig_ctx *ctx);
/* Destination: listens (on the first call), serves one migration. May be
 * called again on the same context for the next one; the listening port
 * stays open in between. 0: the guest was started here. Otherwise it never
 * was, the engine no longer touches the backend's memory, and the caller
 * closes the backend. Exception, post-copy: UNKNOWN means the guest was
 * started but the rest of its memory can no longer come; the engine stopped
 * catching its faults (untouched missing pages now read as zero) and paused
 * it through the backend's pause op if it has one: discard it. Stats and
 * message start afresh on each call. */
RMIG_API int rmig_recv(struct rmig_ctx *ctx);

/* Ask a running migration to stop and roll back (before GO only). Safe from
 * any thread and from a signal handler. The call then returns -ECANCELED.
 * A cancelled context stays cancelled: use a new one for the next attempt.
 * With post-copy, ignored from GO on: stopping then could only lose the
 * guest, whose memory is split between the hosts until the last page. */
RMIG_API void rmig_cancel(struct rmig_ctx *ctx);

/* A snapshot of the live figures (thread-safe). phase is a static string;
 * bytes_sent counts received bytes on the destination. */
struct rmig_progress {
	unsigned round;
	uint64_t bytes_sent;
	double bandwidth;
	double dirty_rate;
	uint64_t remaining_bytes;
	double expected_downtime_ms;
	const char *phase;
};
RMIG_API void rmig_progress(struct rmig_ctx *ctx, struct rmig_progress *p);

/* Why the last migration failed ("" if it did not). Owned by ctx, valid
 * until the next rmig_send()/rmig_recv() on it or its destruction. */
RMIG_API const char *rmig_errmsg(const struct rmig_ctx *ctx);
/* The totals of the last migration, owned by ctx (see struct rmig_stats). */
RMIG_API const struct rmig_stats *rmig_stats(const struct rmig_ctx *ctx);
/* "migrated", "failed", "usage", "rolled_back", "unknown", else "?"; static. */
RMIG_API const char *rmig_result_name(enum rmig_result r);

/* Describe the devices each transport could use (rmig info) into buf.
 * Truncated to len bytes, NUL-terminated when len > 0. */
RMIG_API void rmig_transport_info(char *buf, size_t len);

/* Parse "50M", "1G", "4096": bytes with K/M/G/T (powers of 1024).
 * Either case, optionally followed by "i", "iB" or "B". 0, or -EINVAL
 * (not such a number) or -ERANGE (overflow), leaving *out untouched. */
RMIG_API int rmig_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
