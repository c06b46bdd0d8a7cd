/* rmig.h - the one public header of librmig, a live-migration transport.
 *
 * A hypervisor (or any program that owns "guest" memory) describes its guest
 * through a backend (struct rmig_backend_ops). rmig moves the memory to a peer
 * over a link (TCP today), round after round of pre-copy, then a short
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
	RMIG_RESULT_UNKNOWN = 4,     /* link lost after GO: source stays paused, operator decides */
};

enum rmig_role { RMIG_ROLE_SOURCE, RMIG_ROLE_DEST };

/* ------------------------------------------------------------------ */
/* Guest memory, as a backend describes it.                            */

#define RMIG_MAX_REGIONS 64

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
 * called from one thread at a time but not always the same one. */

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
	/* Both sides. args is the text after "name:" in the spec ("" if none). */
	int (*create)(struct rmig_backend *be, const char *args, enum rmig_role role);
	void (*destroy)(struct rmig_backend *be);
	/* The regions; the array stays valid and unchanged until destroy. On the
	 * destination, only after prepare_regions. */
	int (*get_regions)(struct rmig_backend *be, const struct rmig_region **regions,
			   size_t *count);

	/* Source. */
	int (*start_dirty_log)(struct rmig_backend *be);
	/* OR the pages written since the last call into bitmap (one bit per page,
	 * bit i of word i/64), and clear them in the backend's log. */
	int (*fetch_dirty)(struct rmig_backend *be, size_t region_index, uint64_t *bitmap);
	int (*pause)(struct rmig_backend *be);
	int (*resume)(struct rmig_backend *be);
	/* Device/CPU state as an opaque blob, taken while paused. *blob is
	 * malloc'd; the caller frees it. */
	int (*save_state)(struct rmig_backend *be, void **blob, size_t *len);
	/* Optional (NULL if unsupported): slow the guest to (100-percent)%. */
	int (*throttle)(struct rmig_backend *be, unsigned percent);

	/* Destination. */
	/* Allocate memory to receive a guest with this layout (host is unset in
	 * layout). It must read as zero: pages the source reports as zero and
	 * that were not written since are left alone. Fail with a message if
	 * it cannot hold the guest (check before allocating). */
	int (*prepare_regions)(struct rmig_backend *be, const struct rmig_region *layout,
			       size_t count);
	int (*load_state)(struct rmig_backend *be, const void *blob, size_t len);
	int (*start)(struct rmig_backend *be);

	/* Optional: is the guest running, and how much work has it done. */
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
};

struct rmig_backend {
	const struct rmig_backend_ops *ops;
	void *priv; /* the backend's own state */
	enum rmig_role role;
	char err[256];
};

/* Register a backend kind. Not thread-safe: call before any migration.
 * -EEXIST if the name is taken, -ENOSPC if the registry is full. */
RMIG_API int rmig_backend_register(const struct rmig_backend_ops *ops);
RMIG_API const struct rmig_backend_ops *rmig_backend_find(const char *name);

/* Open a backend from a spec "name[:args]", e.g. "sim:size=1G,seed=7".
 * On failure returns a negative errno and writes a message to err. */
RMIG_API int rmig_backend_open(const char *spec, enum rmig_role role, struct rmig_backend **out,
			       char *err, size_t errlen);
RMIG_API void rmig_backend_close(struct rmig_backend *be);
/* For backend authors: set be->err, printf-style. Returns nothing. */
RMIG_API void rmig_backend_err(struct rmig_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

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
	/* Called from the engine's thread on each event; may be NULL. */
	void (*on_event)(void *arg, const struct rmig_event *ev);
	void *event_arg;
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

/* Totals, valid after rmig_send/rmig_recv returned. */
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
	uint64_t bench_bytes; /* with bench_ms: bytes sent in the resend rounds */
	double bench_seconds; /* and the time they took */
};

struct rmig_ctx;

/* Fill cfg with defaults: auto transport, pin auto, port 7471, 2 channels,
 * 300 ms, 30 rounds, throttle, unlimited bandwidth, verify on. */
RMIG_API void rmig_config_init(struct rmig_config *cfg);

/* The context borrows be and cfg's strings; both must outlive it. */
RMIG_API int rmig_ctx_create(struct rmig_ctx **out, const struct rmig_config *cfg,
			     struct rmig_backend *be);
RMIG_API void rmig_ctx_destroy(struct rmig_ctx *ctx);
/* Destination, between two rmig_recv calls on one context (a receiver that
 * keeps listening): the backend for the next migration. */
RMIG_API void rmig_ctx_set_backend(struct rmig_ctx *ctx, struct rmig_backend *be);

/* Run a whole migration on the calling thread. 0 when migrated; otherwise a
 * negative errno, rmig_errmsg() says why and rmig_stats()->result says what
 * became of the guest. */
RMIG_API int rmig_send(struct rmig_ctx *ctx);
/* Destination: listens (on the first call), serves one migration. May be
 * called again on the same context for the next one; the listening port
 * stays open in between. */
RMIG_API int rmig_recv(struct rmig_ctx *ctx);

/* Ask a running migration to stop and roll back (before GO only). Safe from
 * any thread and from a signal handler. */
RMIG_API void rmig_cancel(struct rmig_ctx *ctx);

/* A snapshot of the live figures (thread-safe). */
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

RMIG_API const char *rmig_errmsg(const struct rmig_ctx *ctx);
RMIG_API const struct rmig_stats *rmig_stats(const struct rmig_ctx *ctx);
RMIG_API const char *rmig_result_name(enum rmig_result r);

/* Describe the devices each transport could use (rmig info) into buf. */
RMIG_API void rmig_transport_info(char *buf, size_t len);

/* Parse "50M", "1G", "4096": bytes with K/M/G/T (powers of 1024). */
RMIG_API int rmig_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
