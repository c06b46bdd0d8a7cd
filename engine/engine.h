/* engine.h - what the engine's files share: the migration context and the
 * control-message helpers. Not part of the public API.
 *
 * The engine drives a backend (struct rmig_backend_ops) and a link (struct
 * rmig_link_ops) and knows neither hypervisors nor sockets.
 */
#ifndef RMIG_ENGINE_H
#define RMIG_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "link.h"
#include "proto.h"
#include "rmig_backend.h"

#define RMIG_MAX_NODE_GROUPS 8 /* NUMA nodes a guest may span, each with its channels */
#define RMIG_MIN_PSK 16
#define RMIG_MAX_PSK 1024

#define RMIG_MAX_LINKS 8

/* The links a context may use, in the order they are tried (links.c):
 * cfg.transport's, plus the failover link once it was needed. */
struct rmig_links {
	struct rmig_link *at[RMIG_MAX_LINKS];
	unsigned n;
	unsigned listening; /* destination: bit i: at[i] listens */
};

struct rmig_machine;

/* A deadline heartbeats do not extend (they prove the peer alive, not
 * that it gets anywhere): rmig_ctrl_recv fails with -ETIME, "peer P
 * stalled: what", on the first message after limit_ms without progress.
 * Progress is rmig_deadline_progress() and, with `data`, any byte more on
 * the data channels (live_bytes) or, with RDMA WRITE (which we cannot
 * see), a new count of bytes in the peer's heartbeat. */
struct rmig_deadline {
	unsigned limit_ms; /* 0: none */
	int data;
	int64_t since_ms;    /* the last progress */
	uint64_t bytes;	     /* live_bytes then */
	uint64_t peer_bytes; /* the last heartbeat's count */
	char what[200];
};

struct rmig_ctx {
	struct rmig_config cfg;
	struct rmig_backend *be;
	struct rmig_link *link;	   /* the one in use (the first until chosen) */
	struct rmig_links linkset; /* use rmig_links_*() */
	char link_detail[400];	   /* why an earlier link in the list was not used */
	char err[512];
	atomic_int cancelled;
	/* Post-copy, from GO on: a cancel could only lose the guest, whose
	 * memory is split between the hosts, so rmig_cancel() leaves the links
	 * alone. Set before GO is sent or acted on, then cancelled is checked:
	 * one of the two sees the other. */
	atomic_int no_cancel;
	uint8_t psk[RMIG_MAX_PSK]; /* cfg.psk points here */

	/* Control stream sends: the control thread and the heartbeat thread. */
	pthread_mutex_t ctrl_send_lock;
	pthread_mutex_t hb_lock;
	pthread_cond_t hb_cond;
	pthread_t hb_tid;
	int hb_running, hb_stop, hb_paused, hb_sending;
	struct rmig_stats stats;

	/* Live figures for rmig_progress() and rmig_status_get() (status.c). */
	pthread_mutex_t prog_lock;
	struct rmig_progress prog;
	atomic_uint_fast64_t live_bytes;
	atomic_uint_fast64_t live_pages, live_zero_pages; /* memory pages moved so far */
	uint64_t bytes_at_pause, bytes_at_go;		  /* live_bytes then; under prog_lock */
	int paused_seen, go_seen;			  /* under prog_lock */
	int64_t t_setup_done_ms; /* the first round began; under prog_lock */
	uint64_t round_planned;	 /* bytes the current round set out to send */
	uint64_t round_base;	 /* live_bytes when it began */
	/* Limits an operator may change while a migration runs. */
	atomic_uint_fast64_t limit_bandwidth; /* config.max_bandwidth */
	atomic_uint limit_downtime_ms;	      /* config.downtime_ms */
	atomic_int switch_now;		      /* rmig_start_postcopy: at the round's end */

	/* The role's phase (session/machine.h); under prog_lock. */
	struct rmig_phase_state {
		const struct rmig_machine *m;
		unsigned phase;
	} sm;

	/* The session. */
	struct rmig_layout layout;
	const struct rmig_region *regions; /* the backend's, host pointers */
	size_t nregions;
	unsigned nchan;
	/* NUMA: regions grouped by the node holding them; channel c serves
	 * group c % ngroups and runs on its node (-1: anywhere). */
	unsigned ngroups;
	int group_node[RMIG_MAX_NODE_GROUPS];
	uint8_t region_group[RMIG_MAX_REGIONS];
	int chan_node[RMIG_MAX_CHANNELS];
	int placement;		    /* source: pages go by chan_write (RDMA WRITE) */
	uint64_t first_touch_bytes; /* REGIONS_ACK's value (memory_load.c) */
	uint64_t payload_caps;	    /* source: HELLO capabilities the payloads need the
				     * destination to echo (RMIG_CAP_DISKS) */
	uint64_t peer_caps;	    /* destination: the source's HELLO capabilities */
	/* A dry run (source: config.dry_run; destination: RMIG_CAP_DRYRUN):
	 * the destination checks and takes nothing, its payloads drop what
	 * arrives; the source's payloads send a probe only: at most
	 * probe_bytes, nothing after probe_end_ms (senders skip the rest). */
	int dry_run;
	uint64_t probe_bytes;
	int64_t probe_end_ms;
	uint8_t nonce[RMIG_NONCE_LEN];	    /* ours, this connection */
	uint8_t peer_nonce[RMIG_NONCE_LEN]; /* theirs, this connection */
	uint8_t session[RMIG_NONCE_LEN];    /* the source's first nonce: names the
					     * migration across failovers */
	uint8_t token[RMIG_NONCE_LEN];	    /* data channels prove they belong to this
					     * connection with it (keyed with the PSK) */
	struct rmig_deadline deadline;	    /* rmig_deadline_*(): control thread only */
	uint64_t ctrl_tx_seq, ctrl_rx_seq;
	int32_t peer_abort; /* the code of the last ABORT received, from a proven
			     * peer (else 0): a verdict such as "not started" */
	int peer_proven;    /* this connection's peer passed rmig_auth_exchange */
	uint8_t *rxbuf;	    /* control payloads */
	size_t rxcap;
	size_t rx_limit; /* largest control frame taken (0: the type's maximum);
			  * small before authentication */
	/* Destination: where migrations come from (listener.h): the one given
	 * to rmig_recv_from, else our own, opened by the first rmig_recv. */
	struct rmig_listener *listener, *own_listener;
	/* Destination: the connections this migration was served on (ctx->link
	 * is the last), kept until the next one starts so that rmig_cancel
	 * never touches a freed link. */
	struct rmig_link **conns;
	unsigned nconns, conns_cap;
	int64_t t_start_ms;
	uint16_t port; /* destination: bound port */
};

/* A context without links (the listener's, and one per opening): cfg
 * checked and copied with its key, defaults applied. be may be NULL. */
/* Where the last member of struct rmig_config this library knows ends: a
 * member added to the struct moves it (bytes past it, padding included,
 * are a newer caller's, which must be zero). The assertion below cannot see
 * a member added into the tail padding (a 4-byte one after timeout_ms, as dry_run):
 * t_abi.sh checks that the member named here is the struct's last. Such a
 * member also shares its bytes with an older caller's zeroed padding (same
 * sizeof): zero must mean its default. */
#define RMIG_CONFIG_KNOWN_END (offsetof(struct rmig_config, rails) + sizeof(const char *))
_Static_assert(sizeof(struct rmig_config) - RMIG_CONFIG_KNOWN_END < sizeof(void *),
	       "RMIG_CONFIG_KNOWN_END names the last member of struct rmig_config");
/* The largest cfg->size taken: a bound on what is read of a caller's
 * struct, far above any struct rmig_config there will be; a larger one is a
 * config rmig_config_init never filled. */
#define RMIG_CONFIG_MAX_SIZE 4096

/* A caller's sized config (rmig_config_init) as this library's whole struct,
 * or a negative errno with the thread's message (rmig_last_error). */
int rmig_config_import(struct rmig_config *to, const struct rmig_config *from);
int rmig_ctx_new(struct rmig_ctx **out, const struct rmig_config *cfg, struct rmig_backend *be);
/* Destination: conn becomes ctx->link; the context owns it from here. On
 * failure (-ENOMEM) it is still the caller's. */
int rmig_ctx_own_conn(struct rmig_ctx *ctx, struct rmig_link *conn);
/* Destination: close and free every connection of the last migration. */
void rmig_ctx_drop_conns(struct rmig_ctx *ctx);

int64_t rmig_now_ms(void);
double rmig_now_s(void);

/* status.c: a migration began (its clock, elapsed and setup); its first
 * round began (setup is over); the round about to start sets out to send
 * `bytes` (the source's remaining figure counts down from it). */
void rmig_status_begin(struct rmig_ctx *ctx);
void rmig_status_setup_done(struct rmig_ctx *ctx);
void rmig_status_plan(struct rmig_ctx *ctx, uint64_t bytes);
/* The phase is now `phase` (rmig_phase_enter, under prog_lock): note where
 * the pause and GO fell in the bytes. */
void rmig_status_phase(struct rmig_ctx *ctx, unsigned phase);
/* Another payload's part of round 1's plan. */
void rmig_status_plan_add(struct rmig_ctx *ctx, uint64_t bytes);
/* Planned bytes that turned out to be zero (sent as runs, no data): out of
 * the plan, so that percent and ETA do not wait for them. Any thread. */
void rmig_status_plan_less(struct rmig_ctx *ctx, uint64_t bytes);
/* The round being sent or received (both sides count alike). */
void rmig_status_round(struct rmig_ctx *ctx, unsigned round);

/* Set ctx->err, printf-style; returns rc so that `return rmig_err(...)` reads. */
int rmig_err(struct rmig_ctx *ctx, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void rmig_emit(struct rmig_ctx *ctx, const struct rmig_event *ev);

/* Control stream: send one message; receive one (HEARTBEATs are skipped, an
 * ABORT becomes -ECONNABORTED with the peer's reason in ctx->err, and past
 * ctx->deadline any message but ABORT -ETIME). */
int rmig_ctrl_send(struct rmig_ctx *ctx, const struct rmig_msg *m);
int rmig_ctrl_send_simple(struct rmig_ctx *ctx, uint8_t type, uint64_t value);
/* The same from a thread other than the control thread: the error text goes
 * to err, not ctx->err. */
int rmig_ctrl_send_err(struct rmig_ctx *ctx, const struct rmig_msg *m, char *err, size_t errlen);
/* From here (post-copy's GO) a cancel could only lose the guest: ignore any
 * later one. -ECANCELED, with the message set, if one came first. */
int rmig_cancel_close(struct rmig_ctx *ctx);
/* A cancel that still counts (see no_cancel). */
int rmig_cancel_requested(struct rmig_ctx *ctx);
int rmig_ctrl_recv(struct rmig_ctx *ctx, struct rmig_msg *m, int timeout_ms);
/* A data channel broke (rc): before taking that for a lost link, read what
 * the control stream still holds for a moment (heartbeats do not extend
 * it). A peer that gives up closes its data channels, then sends its ABORT
 * (a cancel, say): -ECONNABORTED with its reason in ctx->err, and no
 * failover will come. Otherwise rc, ctx->err unchanged. */
int rmig_ctrl_last_words(struct rmig_ctx *ctx, int rc);
/* Receive and insist on one type. */
int rmig_ctrl_expect(struct rmig_ctx *ctx, uint8_t type, struct rmig_msg *m, int timeout_ms);
/* Heartbeats: a thread sends HEARTBEAT every link_timeout/4 while the
 * control stream is up; pause(1) returns once no heartbeat is being sent, so
 * that the link can be replaced. start() after a pause resumes. */
int rmig_heartbeat_start(struct rmig_ctx *ctx);
void rmig_heartbeat_pause(struct rmig_ctx *ctx, int paused);
void rmig_heartbeat_stop(struct rmig_ctx *ctx);

/* Best effort: tell the peer why we stop (after a cancel: that we were
 * cancelled, RMIG_ABORT_CANCELLED, whatever it broke here). 0 once it is
 * sent. */
int rmig_ctrl_send_abort(struct rmig_ctx *ctx, int code, const char *reason);

/* The deadline of ctx->deadline: from now, limit_ms (0: none) without
 * progress ends the wait for control messages; `what` (printf) says what
 * was missing, for the error. */
void rmig_deadline_start(struct rmig_ctx *ctx, unsigned limit_ms, int data, const char *what, ...)
    __attribute__((format(printf, 4, 5)));
void rmig_deadline_progress(struct rmig_ctx *ctx);
void rmig_deadline_stop(struct rmig_ctx *ctx);

/* One frame on a data channel: header + sub-header/runs + page bytes. */
int rmig_chan_send_frame(struct rmig_ctx *ctx, unsigned chan, uint64_t *seq, uint8_t type,
			 uint8_t *hdrbuf, size_t sublen, struct iovec *data, int ndata);

/* 1 if the page holds only zero bytes. */
int rmig_page_is_zero(const void *page, size_t len);

/* links.c: the context's links (ctx->linkset), from the configuration:
 * cfg.transport is "auto" (every registered link that takes part in it, by
 * rank: rdma, then tcp) or link names in the order to try them ("rdma,tcp");
 * cfg.link_options ("LINK.KEY=VALUE,...") and the legacy cfg.device and
 * cfg.gid_index are given to the links they name. 0, or -ENOENT (a name
 * not registered) / -EINVAL (a bad list or option) with ctx->err set. */
int rmig_links_create(struct rmig_ctx *ctx);
void rmig_links_destroy(struct rmig_ctx *ctx);
/* Iteration, in list order: for (i = 0; i < rmig_links_count(ctx); i++)
 * rmig_links_at(ctx, i). Async-signal-safe (rmig_cancel). */
unsigned rmig_links_count(const struct rmig_ctx *ctx);
struct rmig_link *rmig_links_at(const struct rmig_ctx *ctx, unsigned i);
/* Source: the link a failover goes to - the one named by
 * cfg.failover_transport, else the last resort of "auto" (tcp) - taken from
 * the list, or created (with its options) and added to it on first use. It
 * may be the link that just failed: the failover then reconnects over the
 * same kind. NULL when cfg.failover is RMIG_FAILOVER_NONE or the link
 * cannot be created. Does not touch ctx->err or ctx->link. */
struct rmig_link *rmig_links_fallback(struct rmig_ctx *ctx);

/* link_select.c: choose the link. The source connects the control stream
 * over each link in turn, giving all but the last a short probe; the
 * destination listens on every link and takes the first sender. Both
 * then announce it (rmig_link_chosen). The destination's accepting is the
 * listener's (listener.h). */
int rmig_links_connect(struct rmig_ctx *ctx, int timeout_ms);
int rmig_links_listen(struct rmig_ctx *ctx);
/* Announce the chosen link and how it reaches guest memory (derived from
 * ctx->placement and what the link can do). */
void rmig_link_chosen(struct rmig_ctx *ctx);
/* Record in the stats who seals the link in use (stats.encrypted, .tls). */
void rmig_link_note_sealing(struct rmig_ctx *ctx);
/* rails.c: a link's rails in the handshake and the stats. */
/* 1 if link l has rails: the source asks for the peer's (RMIG_CAP_RAILS),
 * the destination echoes the bit. */
int rmig_rails_wanted(struct rmig_link *l);
/* Destination, after rmig_auth_exchange, when it echoed RMIG_CAP_RAILS:
 * send RAILS (with its MAC when there is a key); m is scratch. */
int rmig_rails_announce(struct rmig_ctx *ctx, struct rmig_msg *m);
/* Source, after rmig_auth_exchange: with asked (our HELLO's RMIG_CAP_RAILS)
 * and peer_caps both having it, read RAILS into m, check its MAC, and tell
 * the link the peer's rails; otherwise tell it there are none (one path).
 * A table that fails its check refuses the migration (-EACCES). */
int rmig_rails_learn(struct rmig_ctx *ctx, int asked, uint64_t peer_caps, struct rmig_msg *m);
/* Record the rails and their bytes in ctx->stats. */
void rmig_rails_note(struct rmig_ctx *ctx);
/* Source, the session lost: move to another rail of the same link.
 * 0 and both names, or -ENOENT. */
int rmig_rails_failover(struct rmig_ctx *ctx, char *lost, char *to, size_t len);
/* After the session moved rails: if the rail named lost is in use again
 * (a guess undone), the first rail now lost and the first in use instead,
 * as the link has them. */
void rmig_rails_moved(struct rmig_ctx *ctx, char *lost, char *to, size_t len);
/* The link's view of the guest regions, index for index. */
void rmig_link_mem_of_regions(const struct rmig_ctx *ctx, struct rmig_link_mem *mem);

/* auth.c: with peer_has_psk from the peer's HELLO, may we talk to it at
 * all? Then prove ourselves and check the peer's proof (PSK) over the
 * nonces and both HELLOs (src: the source's, dst: the destination's, as
 * each was sent or received), and derive the data channels' token. Both:
 * 0 or -EACCES with the reason in ctx->err. */
int rmig_auth_policy(struct rmig_ctx *ctx, int peer_has_psk, int we_are_source);
int rmig_auth_exchange(struct rmig_ctx *ctx, int we_are_source, const struct rmig_wire_hello *src,
		       const struct rmig_wire_hello *dst);
/* RAILS' MAC: HMAC-SHA256(psk, "rmig-auth-1 rails" | Ns | Nd | table)
 * into out (the nonces by role). 0 or -EIO. */
int rmig_auth_rails_mac(const struct rmig_ctx *ctx, int we_are_source, const uint8_t *table,
			size_t len, uint8_t out[RMIG_MAC_LEN]);
/* The TLS external pre-shared key, derived from config.psk, in hex. */
int rmig_auth_tls_psk(const struct rmig_ctx *ctx, char hex[2 * RMIG_MAC_LEN + 1]);

/* Errors after which the other side may still be there and willing: the
 * link broke (reset, timeout, device gone), as opposed to a deliberate
 * ABORT, a protocol violation, the operator's cancel or a deadline that a
 * live peer let pass (-ETIME). */
int rmig_link_failure(int rc);
/* A failure of this host's own resources (a guest's disk failing I/O): no
 * other link would help. */
#define RMIG_ERR_LOCAL (-ENOTRECOVERABLE)

/* dest.c: 1 if the destination's main loop acts on this control message
 * (whether it may come now is the phase table's business). */
int rmig_dest_handles(uint8_t type);

/* Fill the layout (wire form) from backend regions; checks it too. */
int rmig_layout_from_regions(struct rmig_ctx *ctx, const struct rmig_region *r, size_t n);

#endif
