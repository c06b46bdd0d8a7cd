/* rmig_backend.h - the backend SPI of librmig: what a hypervisor (or any
 * program that owns "guest" memory) implements so that rmig can migrate its
 * guest. A backend is a table of ops (struct rmig_backend_ops) registered by
 * name with rmig_backend_register(), then opened like the built-in ones with
 * rmig_backend_open() (rmig.h) and migrated with rmig_send()/rmig_recv().
 * A program that only migrates with built-in backends needs rmig.h alone.
 * The conventions of rmig.h hold here too.
 */
#ifndef RMIG_BACKEND_H
#define RMIG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "rmig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Guest memory, as a backend describes it.                            */

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

/* Disks: 0..RMIG_MAX_DISKS per guest, owned by the backend (optional: a
 * backend without disk ops migrates memory alone). A disk moves in blocks
 * of block_size, its unit of dirty tracking; rounds send the blocks
 * written since the last one, beside memory's pages. */
struct rmig_disk {
	uint32_t id;	     /* stable id, the same on both sides */
	uint32_t block_size; /* power of two, 4 KiB .. 2 MiB */
	uint64_t size;	     /* bytes, a multiple of block_size */
	char name[32];	     /* for messages ("vda", "drive0"): printable, NUL-terminated */
	/* The storage behind it (e.g. a hash of the host's boot id, the
	 * file's device and inode): a destination whose disk has the same
	 * non-zero identity is the same storage, and copying onto it would
	 * destroy it. All zero: unknown. */
	uint8_t identity[16];
};

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

/* Sized: the table starts with its own size, as the backend was built
 * (libfabric's fi_ops idea), so that a backend built against an older,
 * smaller rmig_backend.h keeps working with a newer library. Ops are only
 * ever added at the end, and each one added is optional (NULL: absent).
 * rmig_backend_register() copies the table into a full-size one of its own,
 * zero past size: an op the backend's header did not have yet is NULL.
 * Mandatory, and so in every layout rmig accepts (size at least
 * RMIG_BACKEND_OPS_MIN_SIZE): name, create, destroy, get_regions; and
 * called without a check where the engine needs them: fetch_dirty and pause
 * (source, unless stream_open), resume (source; the destination's too
 * without start), prepare_regions (destination). The optional ones say so. */
struct rmig_backend_ops {
	size_t size; /* sizeof(struct rmig_backend_ops) as the backend was built: set it */
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

	/* Optional, added after stream_wait: the guest's disks. A backend
	 * that has disks sets get_disks and the ops of its roles; each
	 * returns 0 or a negative errno. disk_read and disk_write(_zeroes)
	 * are called from the data channels' threads, several at once, for
	 * disjoint blocks: they leave be->err alone (the engine names the
	 * disk, the offset and the errno). index indexes get_disks' array. */
	/* Both sides: the disks (destination: after prepare_disks). The array
	 * stays valid and unchanged until destroy. 0 disks: none. */
	int (*get_disks)(struct rmig_backend *be, const struct rmig_disk **disks, size_t *count);
	/* Source: from here on every write to a disk shows in a later
	 * disk_fetch_dirty (as start_dirty_log for memory; NULL: always). */
	int (*disk_start_dirty)(struct rmig_backend *be);
	/* Source: OR the blocks written since the last call into bitmap (one
	 * bit per block) and clear them in the backend's log. The same
	 * ordering contract as fetch_dirty: data first, then the bit. */
	int (*disk_fetch_dirty)(struct rmig_backend *be, size_t index, uint64_t *bitmap);
	/* Source: len bytes at offset (whole blocks) into buf. */
	int (*disk_read)(struct rmig_backend *be, size_t index, uint64_t offset, void *buf,
			 size_t len);
	/* Source, optional: limit the guest's writes to its disks to
	 * bytes_per_s (0: no limit; also after a rollback), so that a guest
	 * writing faster than the link can converge. */
	int (*disk_throttle)(struct rmig_backend *be, uint64_t bytes_per_s);
	/* Destination: open disks to receive these (layout from the source).
	 * Fail with a message naming the disk if one is missing, smaller or
	 * larger, read-only, or the same storage as the source's (identity). */
	int (*prepare_disks)(struct rmig_backend *be, const struct rmig_disk *layout, size_t count);
	/* Destination: write len bytes at offset (whole blocks). */
	int (*disk_write)(struct rmig_backend *be, size_t index, uint64_t offset, const void *buf,
			  size_t len);
	/* Destination: make len bytes at offset read as zero. */
	int (*disk_write_zeroes)(struct rmig_backend *be, size_t index, uint64_t offset,
				 uint64_t len);
	/* Destination: everything written is durable (before READY). */
	int (*disk_flush)(struct rmig_backend *be, size_t index);
	/* Destination, optional: a dry run (config.dry_run at the source).
	 * Would prepare_regions take this layout? Its checks (page sizes,
	 * region sizes, memory available), nothing allocated, no state kept:
	 * the real migration may follow on the same instance. NULL: the
	 * engine checks only the kind of guest. */
	int (*check_regions)(struct rmig_backend *be, const struct rmig_region *layout,
			     size_t count);
	/* Destination, optional: would prepare_disks take these? Its checks
	 * (each disk present, its size, writable, not the source's storage),
	 * nothing opened for writing or kept. NULL: only whether the backend
	 * takes disks at all. */
	int (*check_disks)(struct rmig_backend *be, const struct rmig_disk *layout, size_t count);
};

/* An instance, made by rmig_backend_open(): the library sets ops, role and
 * err, and never touches priv. */
struct rmig_backend {
	const struct rmig_backend_ops *ops;
	void *priv; /* the backend's own state */
	enum rmig_role role;
	char err[256];
};

/* The smallest ops->size rmig_backend_register() accepts: the first layout,
 * up to and including prepare_regions (every op after it is optional). */
#define RMIG_BACKEND_OPS_MIN_SIZE                                                                  \
	(offsetof(struct rmig_backend_ops, prepare_regions) +                                      \
	 sizeof(((struct rmig_backend_ops *)0)->prepare_regions))

/* Register a backend kind. Not thread-safe: call before any migration.
 * -EEXIST if the name is taken, -ENOSPC if the registry is full.
 * -EINVAL if ops is NULL, if ops->size is below RMIG_BACKEND_OPS_MIN_SIZE
 * (unset, or not a struct rmig_backend_ops) or above the library's own
 * sizeof(struct rmig_backend_ops) (built against a newer rmig_backend.h than
 * the library: link a newer librmig), if its name, create, destroy or
 * get_regions is NULL, or if it sets stream_open without stream_status and
 * stream_switchover. The registry copies the first ops->size bytes into a
 * full-size table of its own (the rest NULL): ops need not outlive the
 * call (the name string must: the copy points to it), and later changes to
 * ops are not seen. */
RMIG_API int rmig_backend_register(const struct rmig_backend_ops *ops);
/* The table registered as name (the built-in "sim" included), or NULL.
 * For a registered table, the registry's full-size copy. */
RMIG_API const struct rmig_backend_ops *rmig_backend_find(const char *name);

/* For backend authors: set be->err, printf-style. Returns nothing.
 * Truncated to 255 bytes; the engine quotes it when the op fails. */
RMIG_API void rmig_backend_err(struct rmig_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
