/* rmig.h - the migration API of librmig, a live-migration transport.
 *
 * A hypervisor (or any program that owns "guest" memory) describes its guest
 * through a backend (struct rmig_backend_ops). rmig moves the memory to a peer
 * over a link (RDMA or TCP), round after round of pre-copy, then a short
 * stop-and-copy and a two-phase commit so that exactly one side ever runs the
 * guest.
 *
 * Public headers, by audience (each includes what it needs):
 *  - rmig.h (this one): migrating a guest with a backend opened by spec
 *    ("sim:size=1G", "qemu:qmp=PATH", ...): config, context, send/recv,
 *    cancel, progress, events, stats; struct rmig_backend is opaque here.
 *  - rmig_backend.h: the backend SPI, for writing a backend of one's own
 *    (struct rmig_backend_ops, struct rmig_region, rmig_backend_register()).
 *  - rmig_uffd.h, rmig_kvm.h: the ready-made uffd and kvm backends, for a
 *    program (a VMM) that hands rmig its own memory or KVM VM.
 *
 * Conventions for every function here:
 *  - Functions returning int return 0 on success or a negative errno, and
 *    then leave a one-line message for the calling thread: rmig_last_error()
 *    (one way for every function, creates included). A migration's message
 *    also stays on its context (rmig_errmsg()), for reading later or from
 *    another thread. The err/errlen buffers some functions take, and
 *    config.create_err, are filled too, for programs written against 0.2.
 *  - Structs the caller fills for the library are sized: their first member
 *    is their size, as the caller was built (rmig_config_init() sets it;
 *    struct rmig_backend_ops, struct rmig_status): a library newer than the
 *    caller takes the members it lacks as their defaults, one older refuses
 *    a member it does not know that was set. Structs the library hands out
 *    (rmig_stats, rmig_event) only ever grow at the end.
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

/* The version of these headers. RMIG_VERSION compares in #if:
 * #if RMIG_VERSION >= RMIG_VERSION_OF(0, 2, 0). The library's own is
 * rmig_version()'s (a newer library runs what older headers built). Symbols
 * carry versions too (RMIG_0.1, RMIG_0.2, ...: librmig.map). */
#define RMIG_VERSION_MAJOR 0
#define RMIG_VERSION_MINOR 3
#define RMIG_VERSION_PATCH 0
#define RMIG_VERSION_STRING "0.3.0"
#define RMIG_VERSION_OF(major, minor, patch) ((major)*10000 + (minor)*100 + (patch))
#define RMIG_VERSION RMIG_VERSION_OF(RMIG_VERSION_MAJOR, RMIG_VERSION_MINOR, RMIG_VERSION_PATCH)
#define RMIG_DEFAULT_PORT 7471
#define RMIG_DEFAULT_HANDSHAKE_MS 5000

/* Exit codes of the rmig tool, and the outcome of a migration. */
enum rmig_result {
	RMIG_RESULT_MIGRATED = 0,    /* destination runs the guest */
	RMIG_RESULT_FAILED = 1,	     /* never started (e.g. peer refused), source still runs */
	RMIG_RESULT_USAGE = 2,	     /* bad command line (tool only) */
	RMIG_RESULT_ROLLED_BACK = 3, /* abandoned part-way: source guest resumed and runs */
	RMIG_RESULT_UNKNOWN = 4,     /* link lost after GO: source stays paused, operator decides;
				      * also post-copy failed after GO: the guest is lost */
	/* Added after UNKNOWN: a dry run was done (config.dry_run), nothing
	 * moved, neither side changed; the verdict is in stats.dry_run_*. Not
	 * an exit code: the tool exits 0 (would fit and converge) or 1. */
	RMIG_RESULT_DRY_RUN = 6,
};

/* The tool's exit code when the guest migrated (result MIGRATED) but the
 * audit found that its memory differed from what was sent
 * (stats.audit == RMIG_AUDIT_FAILED). */
#define RMIG_EXIT_AUDIT_FAILED 5

enum rmig_role { RMIG_ROLE_SOURCE, RMIG_ROLE_DEST };

/* A guest has 1..RMIG_MAX_REGIONS memory regions (struct rmig_region,
 * rmig_backend.h). */
#define RMIG_MAX_REGIONS 64
/* And 0..RMIG_MAX_DISKS disks (struct rmig_disk, rmig_backend.h). */
#define RMIG_MAX_DISKS 8

/* ------------------------------------------------------------------ */
/* Backends: where the guest comes from. Opened here by spec, made by
 * rmig_uffd.h or rmig_kvm.h, or written against rmig_backend.h and
 * registered by name. Opaque to a program that only migrates. */

struct rmig_backend;

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

/* config.verify */
#define RMIG_VERIFY_OFF 0
#define RMIG_VERIFY_ON 1
#define RMIG_VERIFY_FULL 2

/* Sized, since 0.3: fill it with rmig_config_init(&cfg, sizeof(cfg)), then
 * change what differs. Members are only ever added at the end, and a
 * library reads no further than size: a program built against older
 * headers gets the defaults of the members it does not have. A program
 * built against newer headers than the library's: members the library does
 * not know must be left as rmig_config_init set them (zero), else
 * rmig_ctx_create refuses with -E2BIG. (Programs built against 0.2, whose
 * struct had no size, still run: they bind the RMIG_0.1 versions of the
 * three functions that take a config.) */
struct rmig_config {
	size_t size;	       /* set by rmig_config_init: sizeof as the caller was built */
	const char *transport; /* "auto" (rdma if it reaches the peer, else tcp),
				* "rdma" or "tcp" */
	const char *host;      /* source: peer; destination: listen address */
	uint16_t port;	       /* 0 on the destination: pick a free port */
	unsigned channels;     /* parallel data streams, 1..64 */
	unsigned downtime_ms;  /* switch over when expected downtime <= this */
	unsigned max_rounds;   /* pre-copy rounds before the no-converge policy */
	enum rmig_no_converge on_no_converge;
	uint64_t max_bandwidth; /* bytes/s, 0 = unlimited */
	/* RMIG_VERIFY_ON (the default): both sides keep a digest of every page
	 * as it moves (the source of the bytes it sends, the destination of
	 * those it writes), per 2 MiB chunk; at the pause only the chunks the
	 * last round touched are digested again, and COMPLETE compares a root
	 * per region: a page corrupted in flight, applied wrongly or lost rolls
	 * back, at a cost that follows the last round, not the guest. After
	 * the destination started, the source (paused, its memory as at the
	 * pause) digests all of it on every core and compares with what it
	 * sent (the audit): a difference is a write the backend's dirty log
	 * missed; the guest runs on at the destination, stats.audit says
	 * RMIG_AUDIT_FAILED and names the chunks. RMIG_VERIFY_FULL: all memory
	 * digested on both sides during the pause, a mismatch rolls back (a
	 * longer pause instead of an alarm afterwards). RMIG_VERIFY_OFF: none.
	 * With RDMA WRITE placement the destination never sees the pages: it
	 * digests the pages its kernel populated at the pause instead. */
	int verify;
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
	/* Destination: how long a connection has, in all, to complete its
	 * opening (HELLO, authentication; a data channel: its first frame)
	 * before it is cut and refused; heartbeats do not extend it
	 * (0: RMIG_DEFAULT_HANDSHAKE_MS). */
	unsigned handshake_timeout_ms;
	/* Added after create_err_len. Destination: deadlines a peer cannot
	 * extend with heartbeats (they prove it alive, not that it gets
	 * anywhere). In pre-copy, a source that sends no data and ends no
	 * round for stall_timeout_ms is stalled: the destination ends the
	 * session (ABORT naming the stall, RMIG_RESULT_ROLLED_BACK; no
	 * failover: the link works). The time spent waiting for a failover
	 * does not count, but a resumed session keeps what it had used up;
	 * with RDMA placement (pages land unseen) the source's heartbeats
	 * carry its byte count, and the clock starts once the source can
	 * have registered its memory (twice the time the destination took).
	 * (After READY, commit_timeout_ms bounds the wait for GO or the
	 * outcome question, and after STARTED the wait for the final report,
	 * the same way.) 0: the default, 30000. */
	unsigned stall_timeout_ms;
	/* Added after stall_timeout_ms: encryption in transit. TLS 1.3 on the
	 * control stream and on every data channel, each its own session;
	 * sealed by the kernel (kTLS) where it can, else in this process.
	 * Credentials: tls_creds, a directory in QEMU's layout (ca-cert.pem,
	 * server-cert.pem and server-key.pem for the destination,
	 * client-cert.pem and client-key.pem for the source; each side checks
	 * the other's chain to the CA), or else psk, as a TLS external
	 * pre-shared key (with ECDHE). RMIG_TLS_AUTO: on when there are
	 * credentials and the peer is not on loopback (a destination takes
	 * clear only from loopback peers); RMIG_TLS_ON: always (credentials
	 * required); RMIG_TLS_OFF: never (a trusted fabric; a destination
	 * then refuses TLS). Over RDMA the pages go through sealed staging
	 * buffers: RMIG_PIN_ALL is refused with encryption on.
	 * tls_hostname: the source checks that the destination's certificate
	 * names this host or address (NULL: config.host). */
	int tls;
	const char *tls_creds;
	const char *tls_hostname;
	/* Added after tls_hostname: a wall-clock limit on pre-copy, as virsh
	 * migrate --timeout. Past it (checked as each round ends) the
	 * on_no_converge policy applies at once: force switches over
	 * (forced:true; throttle too), abort rolls back. 0: none. */
	unsigned timeout_ms;
	/* Added after timeout_ms: a preflight (source; virsh migrate's checks
	 * without the move). rmig_send connects and authenticates, the
	 * destination checks the layout, its memory and the disks as for a
	 * real migration but takes nothing, a short probe (about a second, at
	 * most 64 MiB, paced by max_bandwidth) measures the link while the
	 * guest's dirty log measures its writes, and the verdict lands in
	 * stats.dry_run_*: 0 then, whatever it is; a negative errno when the
	 * preflight itself could not run (refused, unreachable, not
	 * authenticated, a destination without dry runs). The guest is never
	 * paused nor throttled. */
	int dry_run;
	/* Added after dry_run: rails, both sides. Hosts with one NIC per
	 * socket: each NUMA node's data channels use the RDMA device local to
	 * that node, on both sides (the destination announces its rails in the
	 * handshake). "auto": each device's node from sysfs (numa_node);
	 * "DEV[@NODE],...": these devices, @NODE where sysfs gives none (rxe);
	 * NULL, "" or "none": one device, as before, also when the peer has no
	 * rails (an older rmig). A lost rail's channels move to a surviving
	 * rail (RMIG_EV_FAILOVER naming both) before config.failover applies.
	 * Taken by the links that have rails (rdma); staging buffers only:
	 * guest memory is not registered across several devices. */
	const char *rails;
	/* A member added here moves RMIG_CONFIG_KNOWN_END (engine/engine.h),
	 * and takes 0 to mean its default: the first ones land in this
	 * struct's tail padding, which an older caller's rmig_config_init
	 * zeroed, at the same sizeof. */
};

/* The smallest cfg->size the library takes: up to timeout_ms, 0.2's last
 * member; the members after a caller's size take their defaults. */
#define RMIG_CONFIG_MIN_SIZE (offsetof(struct rmig_config, timeout_ms) + sizeof(unsigned))

/* config.tls */
#define RMIG_TLS_AUTO 0
#define RMIG_TLS_ON 1
#define RMIG_TLS_OFF 2

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
	RMIG_EV_AUDIT,	   /* source, after the switch-over: detail (the verdict) */
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
	/* Memory the destination must back before it can take the dirty pages:
	 * whole huge pages its kernel zero-fills for pages landing where no
	 * data went yet. Counted in expected_downtime_ms. */
	uint64_t landing_bytes;
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
	/* Added after round. RMIG_EV_FAILOVER from one rail to another of
	 * the same link (config.rails): the devices; NULL otherwise. */
	const char *from_rail;
	const char *to_rail;
};

/* Totals, valid after rmig_send/rmig_recv returned (until the next call on
 * the context, or its destruction). Strings are static. */
#define RMIG_STATS_RAILS 8 /* rails described in struct rmig_stats */

struct rmig_stats {
	enum rmig_result result;
	const char *transport; /* link used: "tcp" or "rdma" */
	const char *pin;       /* rdma: "all" (zero copy) or "staging"; tcp: "none" */
	uint64_t total_ms;
	uint64_t downtime_ms; /* source pause -> STARTED received */
	unsigned rounds;      /* as they start: a round cut short counts */
	uint64_t bytes_sent;  /* source: sent; destination: received; as they go,
			       * also when rolled back */
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
	/* Source, config.verify=RMIG_VERIFY_ON: the audit after the switch-over. */
	int audit;			/* enum rmig_audit */
	uint64_t audit_ms;		/* how long it took (off the guest's downtime) */
	uint64_t audit_mismatch_chunks; /* 2 MiB chunks whose memory differed */
	char audit_chunks[256];		/* the first of them, "region:chunk ..." */
	uint64_t verify_chunks;		/* chunks digested again during the pause */
	/* Added after verify_chunks. */
	int encrypted;	 /* every stream of the link that last carried it was sealed */
	const char *tls; /* who sealed them: "ktls" (the kernel), "user" (this
			  * process), "mixed"; "off": in clear */
	/* Added after tls. */
	unsigned recoveries;	       /* post-copy: sessions resumed on a new link after
					* the guest started at the destination */
	uint64_t recovery_ms;	       /* destination: from each link lost in
					* post-copy to the session resumed, summed */
	uint64_t postcopy_max_wait_ms; /* destination: the longest a guest thread
					* waited for a page it asked for */
	/* Source, a hypervisor's own stream: bytes of it sent
	 * again after failovers (the destination had not written them). */
	uint64_t stream_replayed_bytes;
	/* Added after stream_replayed_bytes: the guest's disks (the backend's
	 * disk ops), moved as a payload beside memory. */
	unsigned disks;		    /* disks migrated */
	uint64_t disk_bytes;	    /* their sizes, summed */
	uint64_t disk_blocks_sent;  /* blocks sent with their data, all rounds */
	uint64_t disk_zero_blocks;  /* blocks sent as zero (no data) */
	uint64_t disk_throttle_bps; /* the lowest I/O limit put on the guest's disks
				     * to converge (bytes/s); 0: none */
	int disks_verified;	    /* their digests compared equal */
	/* Added after disks_verified: a dry run's verdict (config.dry_run;
	 * result RMIG_RESULT_DRY_RUN). Source: all of them; destination:
	 * dry_run and dry_run_reason (the source's verdict). */
	int dry_run;		       /* this was a dry run */
	int dry_run_fits;	       /* the destination took the layout, memory, disks */
	int dry_run_converges;	       /* pre-copy would meet downtime_ms in max_rounds */
	double dry_run_bandwidth;      /* bytes/s the probe measured */
	uint64_t dry_run_probe_bytes;  /* what it sent */
	uint64_t dry_run_probe_ms;     /* over how long */
	double dry_run_dirty_rate;     /* pages/s the guest dirtied meanwhile */
	uint64_t dry_run_round1_ms;    /* estimated: round 1 (guest bytes at that rate) */
	unsigned dry_run_rounds;       /* estimated rounds up to the switch-over */
	double dry_run_downtime_ms;    /* estimated downtime then */
	unsigned dry_run_throttle_pct; /* the throttle the estimate needed (0: none) */
	char dry_run_reason[512];      /* why not, or "" */
	/* Added after dry_run_reason: the rails the link had (config.rails;
	 * 0: one path). Source: bytes sent through each, all sessions of the
	 * link; destination: received through each (staging), its last
	 * session's link. */
	unsigned rails;
	struct rmig_rail_stats {
		char device[32];
		int node;	/* the NUMA node it serves */
		uint64_t bytes; /* data bytes through it */
		int lost;	/* given up after a failure (its channels moved) */
	} rail[RMIG_STATS_RAILS];
};

enum rmig_audit {
	RMIG_AUDIT_SKIPPED, /* not run: config.verify not RMIG_VERIFY_ON, or not migrated */
	RMIG_AUDIT_PASSED,  /* the source's final memory is what it sent */
	RMIG_AUDIT_FAILED,  /* it is not: the backend's dirty log missed writes */
};

struct rmig_ctx;

/* Fill cfg, of size bytes (sizeof(*cfg) as the caller was built), with
 * defaults and set cfg->size: auto transport, pin auto, port 7471, 2
 * channels, 300 ms, 30 rounds, throttle, unlimited bandwidth, verify on.
 * Also: host "127.0.0.1", timeouts 2000/10000/10000/30000 ms (link,
 * failover, commit, stall), failover tcp, no key, gid_index -1, no
 * callback; members this library does not know are zeroed. 0, or -EINVAL
 * (cfg NULL, or size smaller than RMIG_CONFIG_MIN_SIZE). */
RMIG_API int rmig_config_init(struct rmig_config *cfg, size_t size);

/* The context borrows be and cfg's strings; both must outlive it.
 * It copies *cfg (cfg->size bytes of it) and the key (the caller may wipe
 * its own). Zero timeouts mean the defaults. 0 and *out set, or -EINVAL (bad
 * config, or cfg->size not set by rmig_config_init), -E2BIG (a member this
 * library does not know is set), -ENOENT (a transport not built in),
 * -ENOMEM. Nothing is bound or connected yet. */
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

/* A receiver for several migrations at once on one port. It listens on
 * every link of cfg.transport from creation, and runs each incoming
 * connection's opening on its own thread (cfg.handshake_timeout_ms in all,
 * a few KiB read before authentication, a cap on unauthenticated
 * connections per address and in total): a peer without the key costs the
 * others nothing. Data channels, resumptions and outcome questions reach
 * only the migration they prove they belong to.
 * Each migration is served by rmig_recv_from on its own context (and
 * backend), one thread each; a new sender that finds no context waiting in
 * rmig_recv_from is refused at once as busy. cfg.on_event receives the
 * listener's refusals (RMIG_EV_REFUSED), from the listener's threads.
 * 0 and *out, or a negative errno with the reason in cfg.create_err. */
struct rmig_listener;
RMIG_API int rmig_listener_create(struct rmig_listener **out, const struct rmig_config *cfg);
/* The bound port. */
RMIG_API uint16_t rmig_listener_port(const struct rmig_listener *lst);
/* Stops listening, cuts the openings in progress. After every context that
 * used it was destroyed. NULL is a no-op. */
RMIG_API void rmig_listener_destroy(struct rmig_listener *lst);
/* rmig_recv for a migration from lst rather than from the context's own
 * port (the context's host, port and transport are not used). */
RMIG_API int rmig_recv_from(struct rmig_ctx *ctx, struct rmig_listener *lst);

/* Ask a running migration to stop and roll back (before GO only). Safe from
 * any thread and from a signal handler. The call then returns -ECANCELED,
 * within 100 ms wherever it waits (max_bandwidth's pacing included); the
 * peer is told it was a cancel (it says so and does not wait for a
 * failover).
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

/* A running migration's status, for an operator asking how it goes (as
 * QEMU's query-migrate). Sized: set size = sizeof(struct rmig_status)
 * before the call; a library newer than the caller fills only what the
 * caller's struct holds, one older what it knows, and size says how much
 * was filled. Thread-safe, at any time. 0, or -EINVAL (NULL, or size less
 * than the fields up to `phase`). */
struct rmig_status {
	size_t size;
	const char *phase;    /* static string */
	unsigned round;	      /* the round being sent or received; both sides count alike */
	uint64_t transferred; /* bytes sent (source) or received (destination) so far */
	uint64_t
	    remaining;	/* source: bytes of this round not yet sent, else dirty at the last count */
	uint64_t total; /* bytes of guest memory and disks */
	double bandwidth;	     /* bytes/s over the last round large enough to tell */
	double dirty_rate;	     /* pages/s */
	double expected_downtime_ms; /* if the guest paused now */
	uint64_t elapsed_ms;	     /* since rmig_send()/rmig_recv() began, setup included */
	uint64_t setup_ms;	     /* from then to the first round (connect, handshake, memory) */
	uint64_t max_bandwidth;	     /* the limit in force, bytes/s (0: none) */
	unsigned downtime_ms;	     /* the limit in force */
	/* Added after downtime_ms (QEMU's query-migrate names in brackets). */
	uint64_t pages;	     /* pages moved with their bytes [normal] */
	uint64_t zero_pages; /* pages moved as zero runs [duplicate] */
	/* transferred by phase. The destination learns of the pause from the
	 * device state: its last round counts as pre-copy there. */
	uint64_t precopy_bytes;	 /* of transferred: before the guest paused */
	uint64_t downtime_bytes; /* while it was paused, up to GO */
	uint64_t postcopy_bytes; /* after GO (post-copy) */
};
RMIG_API int rmig_status_get(struct rmig_ctx *ctx, struct rmig_status *st);

/* Change a limit of a running migration (and of later ones on this
 * context), from any thread, as QEMU's migrate-set-parameters: the
 * senders pace to the new rate within 20 ms, the next convergence
 * decision uses the new limit. 0 or -EINVAL (bytes_per_s 0 means no limit;
 * ms must be 1..3600000). For a stream backend (qemu) they apply to rmig's
 * own pacing only. */
RMIG_API int rmig_set_max_bandwidth(struct rmig_ctx *ctx, uint64_t bytes_per_s);
RMIG_API int rmig_set_downtime_ms(struct rmig_ctx *ctx, unsigned ms);
/* Source, config.postcopy: switch over to post-copy when the round in
 * progress ends, whatever the convergence estimate says (QEMU's
 * migrate-start-postcopy), from any thread. 0; -EINVAL if ctx is NULL or
 * config.postcopy is not set (the destination was not readied for it);
 * -EALREADY once pre-copy is over. */
RMIG_API int rmig_start_postcopy(struct rmig_ctx *ctx);

/* The running library's version, "MAJOR.MINOR.PATCH" (static), and its
 * numbers where the pointers are not NULL. */
RMIG_API const char *rmig_version(int *major, int *minor, int *patch);

/* The calling thread's message from the last function of this library that
 * failed on it, one line ("" if none has). Valid until the next call into
 * the library on this thread. */
RMIG_API const char *rmig_last_error(void);

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
/* Which device would serve which NUMA node with config.rails = rails
 * (NULL or "": "auto") on this host, one line per rail and transport
 * that has rails (rmig info). Truncated to len bytes, NUL-terminated.
 * 0, or -EINVAL (no buffer). */
RMIG_API int rmig_rails_info(const char *rails, char *buf, size_t len);

/* Parse "50M", "1G", "4096": bytes with K/M/G/T (powers of 1024).
 * Either case, optionally followed by "i", "iB" or "B". 0, or -EINVAL
 * (not such a number) or -ERANGE (overflow), leaving *out untouched. */
RMIG_API int rmig_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
