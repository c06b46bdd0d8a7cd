/* link.h - the transport interface: one control stream and N data channels.
 *
 * A link moves bytes and knows nothing of frames, guests or backends. The
 * engine owns the threads; each op blocks the calling thread. Channel ops on
 * different channels may run concurrently; one channel is used by one thread
 * at a time. The control stream is used by at most one sending and one
 * receiving thread at a time (the control thread and the heartbeats).
 *
 * Every blocking op gives up after timeout_ms without progress (-ETIMEDOUT)
 * and returns -ECANCELED once interrupt() was called. Errors are negative
 * errnos with a message in link->err.
 */
#ifndef RMIG_LINK_H
#define RMIG_LINK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define RMIG_LINK_MAX_CHANNELS 64

#define RMIG_LINK_STOP_DATA 1u	    /* data channel ops */
#define RMIG_LINK_STOP_CTRL_RECV 2u /* control receive (noticed within 50 ms) */
#define RMIG_LINK_STOP_CTRL_SEND 4u /* control send */

struct rmig_link;

struct rmig_link_mem {
	void *addr;
	uint64_t len;
};

/* One rail of a link with several (a device per NUMA node): what a
 * destination announces, what a source learns of it, what both count. */
#define RMIG_LINK_RAIL_NAME 32
struct rmig_link_rail {
	char name[RMIG_LINK_RAIL_NAME]; /* the device */
	int node;			/* NUMA node it serves, -1: none */
	struct sockaddr_storage addr;	/* where the peer reaches it (port unused) */
	uint64_t bytes;			/* data bytes it moved, this link's life */
	int lost;			/* given up after a failure */
};

struct rmig_link_ops {
	/* sizeof(struct rmig_link_ops) as the link was built with: the
	 * registry refuses a table older than the ops it calls. */
	size_t size;
	const char *name;
	/* "auto" (every registered link, in order) tries the links with a
	 * non-zero rank, lowest first; 0: only when named. The highest-ranked
	 * one is the last resort, and the default failover link. */
	int auto_rank;
	/* A wrapping link (encryption, accounting...): the registry creates the
	 * link named here first, as l->lower, and every op this table leaves
	 * NULL passes through to it (see rmig_link_wrap). NULL: a plain link. */
	const char *wraps;
	/* Optional (NULL: takes no options): set option key to value, after
	 * create and before listen/connect_ctrl; validate it here. -ENOENT for a
	 * key the link does not know, -EINVAL for a bad value, with a message. */
	int (*set_option)(struct rmig_link *l, const char *key, const char *value);
	int (*create)(struct rmig_link *l);
	void (*destroy)(struct rmig_link *l);

	/* Destination: bind and listen; *port receives the bound port. */
	int (*listen)(struct rmig_link *l, const char *host, uint16_t *port);
	/* Destination: accept the next incoming connection, of whatever kind,
	 * into conn: a new link of the same kind, made for it by
	 * rmig_link_accept. The connection becomes conn's control stream and
	 * conn->peer names it. Nothing is read from it: whether it opens a
	 * migration or carries a data channel, and whether it may stay, is the
	 * engine's to find out (ctrl_recv on conn). Many connections may be
	 * accepted before any is used, and each conn is used by its own thread:
	 * a listener keeps nothing of a session. */
	int (*accept)(struct rmig_link *l, int timeout_ms, struct rmig_link *conn);
	/* Destination: the stream accepted into conn (the engine has checked
	 * that it belongs here) becomes data channel chan of l, itself a link
	 * made by accept that carries a session's control stream. *node
	 * receives the NUMA node the sender said the channel serves (-1: any).
	 * conn is left without a stream. -EINVAL (chan out of range), -EEXIST
	 * (chan taken). */
	int (*adopt_channel)(struct rmig_link *l, struct rmig_link *conn, unsigned chan, int *node);

	/* Source: connect the control stream. */
	int (*connect_ctrl)(struct rmig_link *l, const char *host, uint16_t port, int timeout_ms);
	/* Source: connect one more data channel that moves memory of NUMA node
	 * `node` (-1: any); a link with staging buffers allocates them on that
	 * node, on both sides. *chan receives its index. */
	int (*connect_channel)(struct rmig_link *l, int timeout_ms, int node, unsigned *chan);

	/* Control stream: send all of iov / receive exactly len bytes. */
	int (*ctrl_send)(struct rmig_link *l, const struct iovec *iov, int iovcnt, int timeout_ms);
	int (*ctrl_recv)(struct rmig_link *l, void *buf, size_t len, int timeout_ms);

	/* Data channel: send all of iov / fill all of iov. */
	int (*chan_send)(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			 int timeout_ms);
	int (*chan_recv)(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			 int timeout_ms);

	/* Optional (NULL where unsupported): placement of pages straight into
	 * the peer's memory (RDMA WRITE). mem[i] is guest memory area i; the
	 * index is how both sides name it.
	 * Destination: make the areas remotely writable (and nothing else) and
	 * describe them in *blob (malloc'd, the caller frees) for the peer. */
	int (*mem_expose)(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			  void **blob, size_t *len);
	/* Source: register the local areas and take the peer's description
	 * (untrusted: the link checks it). Afterwards chan_write may be used. */
	int (*mem_import)(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			  const void *blob, size_t len);
	/* Both: drop every registration of guest memory now. Idempotent. */
	void (*mem_release)(struct rmig_link *l);
	/* Source: copy local[i] to byte offset remote_off[i] of the peer's area
	 * `area`. Returns once posted; the bytes land in the peer's memory
	 * only by the next chan_flush. local[] lies inside imported areas. */
	int (*chan_write)(struct rmig_link *l, unsigned chan, uint32_t area,
			  const uint64_t *remote_off, const struct iovec *local, int n,
			  int timeout_ms);
	/* Source: wait until every chan_write on chan is in the peer's memory. */
	int (*chan_flush)(struct rmig_link *l, unsigned chan, int timeout_ms);

	/* Both: end the current session (control stream, data channels,
	 * registrations) but keep listening, and clear the interrupt flags, so
	 * that the link can carry the next session (failover, a receiver that
	 * keeps listening). */
	void (*close_session)(struct rmig_link *l);

	/* Optional: append a human description of the devices this link could
	 * use (rmig info) to buf. */
	void (*describe)(char *buf, size_t len);

	/* Make blocked and future ops return -ECANCELED: RMIG_LINK_STOP_* flags,
	 * cumulative. Thread-safe and async-signal-safe. RMIG_LINK_STOP_CTRL_RECV
	 * must only set the flag that waits look at (rmig_link_uninterrupt
	 * takes it back): the control stream stays whole. */
	void (*interrupt)(struct rmig_link *l, unsigned flags);

	/* Optional, for a link that wraps this one (tls hands its keys to the
	 * kernel): the socket under the control stream (chan < 0) or under data
	 * channel chan, or a negative errno (-ENOTSUP: not a socket stream). The
	 * link keeps the descriptor. */
	int (*stream_fd)(struct rmig_link *l, int chan);

	/* Optional, for a link that wraps this one and parses the stream
	 * itself (tls reads several records per call; NULL: it reads exactly
	 * what it needs with ctrl_recv/chan_recv). Receive at least min (>= 1)
	 * and at most len bytes into buf from the control stream (chan < 0) or
	 * data channel chan: waits, as ctrl_recv/chan_recv do, only until min
	 * bytes are in, then takes whatever else is already there. Returns the
	 * count (min..len, len <= INT_MAX) or a negative errno. Never passed
	 * through a wrapper: its stream is its own to hand out. Last in the
	 * table: read it only from a table whose size covers it. */
	int (*recv_some)(struct rmig_link *l, int chan, void *buf, size_t min, size_t len,
			 int timeout_ms);

	/* Optional, rails (read only from a table whose size covers them, see
	 * RMIG_LINK_HAS): a link that spreads its data channels over several
	 * devices, each channel on the one local to its NUMA node.
	 * Both: this side's rails into out (at most max), with their bytes;
	 * the count, 0 when the link uses one path (no rails configured). */
	int (*rails_local)(struct rmig_link *l, struct rmig_link_rail *out, unsigned max);
	/* Source, after the peer's RAILS (sent after AUTH, its MAC checked
	 * when there is a key) and before connect_channel: the peer's rails
	 * (addresses checked by the decoder);
	 * n 0: the peer has none, one path as before. */
	int (*rails_peer)(struct rmig_link *l, const struct rmig_link_rail *in, unsigned n);
	/* Source, the session lost: if the failure was one rail's and another
	 * survives, mark it lost, name both (lost, to; len bytes each) and
	 * return 0: the next session on this link avoids it. Where nothing
	 * tells the rails apart the mark may be a guess, which the next
	 * connect_ctrl undoes if no connection opens without the rail.
	 * -ENOENT: not a rail's failure, or no rail left. Called after
	 * interrupt(), once no thread is in an op, before close_session(). */
	int (*rail_failover)(struct rmig_link *l, char *lost, char *to, size_t len);
};

/* op is in ops's table and set. */
#define RMIG_LINK_HAS(ops, op)                                                                     \
	((ops)->size >= offsetof(struct rmig_link_ops, op) + sizeof((ops)->op) && (ops)->op)

struct rmig_link {
	const struct rmig_link_ops *ops;
	void *priv;
	atomic_uint interrupted;       /* RMIG_LINK_STOP_* */
	struct rmig_link *lower;       /* a wrapping link: the link it wraps (owned) */
	struct rmig_link_ops *own_ops; /* a wrapping link: ops, built by rmig_link_wrap */
	char peer[64];		       /* "address:port" of the peer, for messages */
	int peer_loopback;	       /* the peer's address is a loopback one (127/8, ::1) */
	/* Set by an encrypting link once its handshake proved who the peer is
	 * (a certificate chain to our CA, or our pre-shared key). */
	int peer_verified;
	/* Who seals this link's streams: NULL in clear, "ktls" (the kernel),
	 * "user" (this process), "mixed" (some of each). */
	const char *sealing;
	char err[256];
};

/* Add a link kind. -EEXIST (name taken), -ENOSPC (registry full), -EINVAL
 * (ops->size too small, no name, or a plain link without create/destroy).
 * The table must stay valid (static). */
int rmig_link_register(const struct rmig_link_ops *ops);
const struct rmig_link_ops *rmig_link_find(const char *name);
/* A link kind that wraps whichever link it is given ("tls"), for
 * rmig_link_wrap; NULL if none is built in under that name. */
const struct rmig_link_ops *rmig_link_find_wrapper(const char *name);
/* The kind the configuration named for l: its own, or under a wrapper the
 * engine added ("tcp" under "tls"). */
const char *rmig_link_kind_name(const struct rmig_link *l);
/* The registered kinds in registry order (i = 0, 1, ... until NULL). */
const struct rmig_link_ops *rmig_link_kind(unsigned i);
/* A new link of kind name, without options: 0, -ENOENT (no such kind),
 * -ENOMEM, or create's error. */
int rmig_link_open(const char *name, struct rmig_link **out);
/* Destination: the next connection on listening link l, in a new link of
 * l's kind (*out, the caller destroys it): 0, or ops->accept's error with
 * the message in l->err. */
int rmig_link_accept(struct rmig_link *l, int timeout_ms, struct rmig_link **out);
/* Set one option (ops->set_option): 0, or -ENOENT/-EINVAL with a message in
 * l->err that names the link and the key. */
int rmig_link_set_option(struct rmig_link *l, const char *key, const char *value);
void rmig_link_destroy(struct rmig_link *l);
/* Wrap lower (taking it over, also on failure) in a link whose ops are
 * over's where set and pass through to lower elsewhere: errors (l->err),
 * peer and peer_loopback are copied up, interrupt() and close_session()
 * reach both, destroy() destroys lower after over->destroy. An optional op
 * lower lacks (mem_expose...) stays NULL unless over has it, so callers
 * that test for it still see what the stack can do. over->create (if set)
 * runs with l->lower already set. */
int rmig_link_wrap(struct rmig_link *lower, const struct rmig_link_ops *over,
		   struct rmig_link **out);
/* Take back interrupt(flags) on l and every link it wraps, for
 * RMIG_LINK_STOP_CTRL_RECV only (the others may have shut sockets down): a
 * receiver woken by a broken data channel can still read what the peer
 * said last on the control stream (its ABORT). */
void rmig_link_uninterrupt(struct rmig_link *l, unsigned flags);
/* "1.2.3.4:5" or "[::1]:5", for naming peers in messages. */
struct sockaddr;
void rmig_link_addr_text(const struct sockaddr *sa, char *out, size_t len);
/* Name the connected peer: sets peer and peer_loopback. */
void rmig_link_set_peer(struct rmig_link *l, const struct sockaddr *sa);
/* 1 if every address host resolves to is a loopback one. */
int rmig_link_host_is_loopback(const char *host);
/* Resolve host:port into *ss. passive: for listening, where no host means
 * any address. 0, or -EINVAL (listen) / -EHOSTUNREACH with a message. */
struct sockaddr_storage;
int rmig_link_resolve(struct rmig_link *l, const char *host, uint16_t port, int passive,
		      struct sockaddr_storage *ss, socklen_t *len);
void rmig_link_err(struct rmig_link *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* CLOCK_MONOTONIC in ms: the links' deadlines. */
int64_t rmig_link_now_ms(void);

#endif
