/* listener.c - the destination's door: listening, every connection's
 * opening, and handing those that proved themselves to their sessions.
 *
 * Anyone who can reach the port can connect, so nothing a peer does before
 * it has proved itself may cost other peers anything:
 * - each link accepts on its own thread, and each accepted connection runs
 *   its opening on its own thread, so a silent or trickling peer holds only
 *   itself up;
 * - an opening has config.handshake_timeout_ms in all (heartbeats do not
 *   extend it): past it the connection is cut;
 * - at most MAX_PENDING connections may be unproven at once, and at most
 *   MAX_PENDING_PER_ADDR from one address (IPv6: one /64); past either,
 *   an idler is cut for a newcomer as transport/admission.h says (a
 *   legitimate opening takes milliseconds);
 * - before authentication a frame is at most PREAUTH_MAX_BYTES (HELLO,
 *   AUTH and CHANNEL are far smaller), and nothing read is kept;
 * - nothing about this host beyond the HELLO goes out before the peer
 *   proved the key: the rails table (RAILS) follows AUTH;
 * - a data channel joins a session only with that session's token (keyed
 *   with the PSK and both nonces of its opening), a resumption or an
 *   outcome question only through a full authenticated opening naming the
 *   session (only such an opening wakes a session from the connection it
 *   serves): stray connections never reach a running migration.
 * Every refusal is reported (RMIG_EV_REFUSED) with the peer and the reason.
 *
 * A new migration goes to a context waiting in rmig_recv_from(); with none
 * waiting for NEW_GRACE_MS, the source is told the receiver is busy.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "admission.h"
#include "engine.h"
#include "last_error.h"
#include "listener.h"
#include "machine.h"
#include "postcopy.h"

#define MAX_PENDING 64		       /* unproven connections at once */
#define MAX_PENDING_PER_ADDR 16	       /* of those, from one address */
#define PENDING_ROOM (2 * MAX_PENDING) /* dropped ones end within a slice */
#define MAX_REFUSALS_PER_S 100
#define EVICT_AGE_MS 1000	/* an unproven connection this old may be cut for a new one */
#define MAX_SLOTS 64		/* migrations known at once */
#define PREAUTH_MAX_BYTES 4096	/* largest frame before authentication */
#define TLS_HANDSHAKE_RECORD 22 /* what a TLS client sends first */
#define NEW_GRACE_MS 1000	/* a new migration waits this long for a context */
/* A channel waits this long for its migration, at most a link timeout. */
#define CHANNEL_WAIT_MS 1000
#define SLICE_MS 100
#define SESSION_SLICE_MS 20 /* how soon a session's wait sees a cancel */
#define MAX_DEAD (4 * (RMIG_MAX_CHANNELS + 1))
#define OPENING_STACK (256u << 10)

/* A connection whose opening runs. */
struct pending {
	int used, done;
	struct rmig_link *conn;		/* NULL once handed to a session */
	char addr[RMIG_ADMIT_ADDR_LEN]; /* the peer's address without its port */
	int64_t deadline_ms, since_ms;
	char cut[128]; /* why the listener cut it ("": it did not) */
	pthread_t tid;
	struct rmig_listener *lst;
};

struct waiting_channel {
	struct rmig_link *conn;
	unsigned index;
};

struct rmig_listener_slot {
	int used;
	struct rmig_ctx *ctx;	/* the session's; NULL until one takes it */
	struct pending *opener; /* a new one's: whose thread waits for a taker */
	uint64_t serial;	/* new migrations are taken in order */
	uint8_t session[RMIG_NONCE_LEN];
	uint8_t token[RMIG_NONCE_LEN];
	unsigned nchan; /* channels its current opening announced */
	int has_opening;
	struct rmig_opening opening;
	/* The connection the session serves on, NULL while it waits for a
	 * reopening; valid while the slot is used (the session's context
	 * keeps every connection it took until it leaves). */
	struct rmig_link *serving;
	int superseded; /* a reopening came while it served: see deliver_again */
	struct waiting_channel chans[RMIG_MAX_CHANNELS];
	unsigned nchans;
	uint64_t chan_mask;
};

struct accept_thread {
	struct rmig_listener *lst;
	struct rmig_link *link;
	pthread_t tid;
};

struct rmig_listener {
	struct rmig_ctx *base; /* configuration, key, listening links, events */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	atomic_int stop;
	struct accept_thread acc[RMIG_MAX_LINKS];
	unsigned nacc;
	struct pending pend[PENDING_ROOM];
	struct rmig_listener_slot slots[MAX_SLOTS];
	unsigned idle_waiters; /* contexts in rmig_listener_take_new */
	unsigned unclaimed;    /* new migrations no context took yet */
	uint64_t serial;
	pthread_mutex_t event_lock; /* events from several threads, one at a time */
	int64_t refusal_second;	    /* under event_lock: refusals reported in it */
	unsigned refusals, refusals_suppressed;
	/* Connections to close, collected under the lock and closed after it
	 * (closing an RDMA connection may wait for its sends to drain). */
	struct rmig_link *dead[MAX_DEAD];
	unsigned ndead;
};

static void leave_locked(struct rmig_listener *lst, struct rmig_listener_slot *s);

/* ---- small things ---- */

/* Refusals are reported one by one up to MAX_REFUSALS_PER_S a second;
 * past that (a storm), counted and reported as one line when the second is
 * over, so that a flood of connections cannot flood the logs. */
static void report_suppressed(struct rmig_listener *lst, int64_t second)
{
	char why[128];
	struct rmig_event ev = { .type = RMIG_EV_REFUSED, .peer = "(several)", .detail = why };

	if (second == lst->refusal_second)
		return;
	if (lst->refusals_suppressed) {
		snprintf(why, sizeof(why),
			 "%u more peers refused within a second, not reported one by one",
			 lst->refusals_suppressed);
		rmig_emit(lst->base, &ev);
	}
	lst->refusal_second = second;
	lst->refusals = lst->refusals_suppressed = 0;
}

static void refuse(struct rmig_listener *lst, const char *peer, const char *why)
{
	struct rmig_event ev = { .type = RMIG_EV_REFUSED, .peer = peer, .detail = why };

	pthread_mutex_lock(&lst->event_lock);
	report_suppressed(lst, rmig_now_ms() / 1000);
	if (lst->refusals++ < MAX_REFUSALS_PER_S)
		rmig_emit(lst->base, &ev);
	else
		lst->refusals_suppressed++;
	pthread_mutex_unlock(&lst->event_lock);
}

static void report_refusals(struct rmig_listener *lst)
{
	pthread_mutex_lock(&lst->event_lock);
	report_suppressed(lst, rmig_now_ms() / 1000);
	pthread_mutex_unlock(&lst->event_lock);
}

/* Best effort, before closing a connection refused without a thread: the
 * peer hears why (a sender then says so instead of "connection closed"). */
static void tell_refused(struct rmig_link *conn, const char *why)
{
	uint8_t buf[RMIG_FRAME_HDR_LEN + RMIG_MAX_REASON + 64];
	struct rmig_msg m = { .type = RMIG_MSG_ABORT };
	struct iovec v = { buf, 0 };
	size_t len;

	m.u.abort.code = -EBUSY;
	snprintf(m.u.abort.reason, sizeof(m.u.abort.reason), "%s", why);
	len = rmig_msg_encode(&m, buf + RMIG_FRAME_HDR_LEN, sizeof(buf) - RMIG_FRAME_HDR_LEN);
	if (!len)
		return;
	rmig_frame_hdr_encode(buf, RMIG_MSG_ABORT, 0, (uint32_t)len, 0);
	v.iov_len = RMIG_FRAME_HDR_LEN + len;
	conn->ops->ctrl_send(conn, &v, 1, 10);
}

static void cut_conn(struct rmig_link *conn)
{
	conn->ops->interrupt(conn, RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV |
				       RMIG_LINK_STOP_CTRL_SEND);
}

static void close_conn(struct rmig_link *conn)
{
	if (!conn)
		return;
	conn->ops->close_session(conn);
	rmig_link_destroy(conn);
}

/* Lock held: close conn once the lock is released (close_dead). */
static void bury(struct rmig_listener *lst, struct rmig_link *conn)
{
	if (!conn)
		return;
	if (lst->ndead < MAX_DEAD)
		lst->dead[lst->ndead++] = conn;
	else
		close_conn(conn); /* never in practice: the list is emptied after each use */
}

/* Lock not held. */
static void close_dead(struct rmig_listener *lst)
{
	struct rmig_link *dead[MAX_DEAD];
	unsigned n;

	pthread_mutex_lock(&lst->lock);
	n = lst->ndead;
	memcpy(dead, lst->dead, n * sizeof(dead[0]));
	lst->ndead = 0;
	pthread_mutex_unlock(&lst->lock);
	for (unsigned i = 0; i < n; i++)
		close_conn(dead[i]);
}

/* A session's wait: at most a slice, and not past its end (cancel is
 * looked at between slices). */
static int wait_slice(int64_t end_ms)
{
	int64_t left = end_ms < 0 ? SESSION_SLICE_MS : end_ms - rmig_now_ms();

	return left <= 0 ? 1 : left < SESSION_SLICE_MS ? (int)left : SESSION_SLICE_MS;
}

static void timed_wait(struct rmig_listener *lst, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000;
	ts.tv_sec += ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	pthread_cond_timedwait(&lst->cond, &lst->lock, &ts);
}

/* ---- the opening of one connection ---- */

/* The first frame of a connection, before anyone knows who sent it:
 * HELLO (a control stream) or CHANNEL (a data stream), small, first in
 * its sequence. */
static int read_first_frame(struct rmig_link *conn, struct rmig_msg *m, int timeout_ms, char *why,
			    size_t len)
{
	uint8_t buf[PREAUTH_MAX_BYTES];
	struct rmig_frame_hdr fh;
	int rc = conn->ops->ctrl_recv(conn, buf, RMIG_FRAME_HDR_LEN, timeout_ms);

	if (rc) {
		snprintf(why, len, "%s", conn->err);
		return rc;
	}
	if (buf[0] == TLS_HANDSHAKE_RECORD && buf[1] == 3) {
		snprintf(why, len,
			 "sent a TLS ClientHello, but this receiver does not use TLS (it runs "
			 "with config.tls off, or has no credentials)");
		return -EPROTO;
	}
	rc = rmig_frame_hdr_decode(buf, &fh, why, len);
	if (rc)
		return rc;
	if (fh.type != RMIG_MSG_HELLO && fh.type != RMIG_MSG_CHANNEL) {
		snprintf(why, len, "opened with %s, not HELLO or CHANNEL", rmig_msg_name(fh.type));
		return -EPROTO;
	}
	if (fh.seq != 0 || fh.len > PREAUTH_MAX_BYTES - RMIG_FRAME_HDR_LEN) {
		snprintf(why, len, "bad first frame (%u bytes, sequence %llu)", fh.len,
			 (unsigned long long)fh.seq);
		return -EBADMSG;
	}
	if (fh.len) {
		rc = conn->ops->ctrl_recv(conn, buf + RMIG_FRAME_HDR_LEN, fh.len, timeout_ms);
		if (rc) {
			snprintf(why, len, "%s", conn->err);
			return rc;
		}
	}
	return rmig_msg_decode(fh.type, buf + RMIG_FRAME_HDR_LEN, fh.len, m, why, len);
}

/* Our HELLO: the capabilities we echo, our nonce. RMIG_CAP_RAILS only
 * says we have rails; the table waits for the proofs (send_rails). */
static void our_hello(struct rmig_ctx *hs, const struct rmig_wire_hello *hello, struct rmig_msg *m)
{
	uint64_t echo = RMIG_CAP_POSTCOPY | RMIG_CAP_CHUNK_DIGESTS | RMIG_CAP_DISKS |
			RMIG_CAP_DRYRUN | (rmig_rails_wanted(hs->link) ? RMIG_CAP_RAILS : 0);

	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_HELLO;
	m->u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					       .ver_max = RMIG_WIRE_VERSION_MAX,
					       .channels = RMIG_MAX_CHANNELS,
					       .caps = hello->caps & echo,
					       .flags = hs->cfg.psk ? RMIG_HELLO_PSK : 0 };
	memcpy(m->u.hello.nonce, hs->nonce, RMIG_NONCE_LEN);
}

/* The source's HELLO came: versions, who it is, our HELLO, the proofs,
 * then our rails if we echoed their bit. */
static int answer_hello(struct rmig_ctx *hs, struct rmig_msg *m)
{
	struct rmig_wire_hello hello = m->u.hello, ours;
	int rc = 0;

	memcpy(hs->peer_nonce, hello.nonce, RMIG_NONCE_LEN);
	if (hello.ver_max < RMIG_WIRE_VERSION_MIN || hello.ver_min > RMIG_WIRE_VERSION_MAX)
		rc = rmig_err(
		    hs, -EPROTONOSUPPORT, "version mismatch: peer speaks %u..%u, we speak %d..%d",
		    hello.ver_min, hello.ver_max, RMIG_WIRE_VERSION_MIN, RMIG_WIRE_VERSION_MAX);
	if (!rc)
		rc = rmig_auth_policy(hs, (hello.flags & RMIG_HELLO_PSK) != 0, 0);
	if (rc)
		return rc;
	if (getrandom(hs->nonce, sizeof(hs->nonce), 0) != sizeof(hs->nonce))
		return rmig_err(hs, -EIO, "getrandom failed");
	our_hello(hs, &hello, m);
	ours = m->u.hello;
	rc = rmig_ctrl_send(hs, m);
	if (!rc)
		rc = rmig_auth_exchange(hs, 0, &hello, &ours);
	if (!rc && (ours.caps & RMIG_CAP_RAILS))
		rc = rmig_rails_announce(hs, m);
	/* Whether post-copy can be done here is for a peer that proved itself
	 * to learn, and before a single page is sent: the source then simply
	 * runs on. */
	if (!rc && (hello.caps & RMIG_CAP_POSTCOPY)) {
		char why[256];

		rc = rmig_postcopy_probe(why, sizeof(why));
		if (rc)
			rc = rmig_err(hs, rc, "post-copy is not possible here: %s", why);
	}
	m->type = RMIG_MSG_HELLO;
	m->u.hello = hello; /* the caller wants the source's */
	return rc;
}

static void fill_opening(struct rmig_opening *o, struct rmig_ctx *hs,
			 const struct rmig_wire_hello *hello)
{
	o->conn = hs->link;
	o->hello = *hello;
	memcpy(o->nonce, hs->nonce, RMIG_NONCE_LEN);
	memcpy(o->peer_nonce, hs->peer_nonce, RMIG_NONCE_LEN);
	memcpy(o->token, hs->token, RMIG_NONCE_LEN);
	o->tx_seq = hs->ctrl_tx_seq;
	o->rx_seq = hs->ctrl_rx_seq;
}

static unsigned sessions_running(const struct rmig_listener *lst)
{
	unsigned n = 0;

	for (unsigned i = 0; i < MAX_SLOTS; i++)
		n += lst->slots[i].used && lst->slots[i].ctx;
	return n;
}

static struct rmig_listener_slot *free_slot(struct rmig_listener *lst)
{
	for (unsigned i = 0; i < MAX_SLOTS; i++)
		if (!lst->slots[i].used)
			return &lst->slots[i];
	return NULL;
}

/* A new migration, authenticated: known from now (its data channels may
 * come), then taken by a waiting context within NEW_GRACE_MS or refused
 * as busy. Called with the lock held; p->conn is handed over on success. */
static int queue_new(struct rmig_listener *lst, struct pending *p, struct rmig_ctx *hs,
		     const struct rmig_wire_hello *hello)
{
	int64_t end = rmig_now_ms() + NEW_GRACE_MS;
	struct rmig_listener_slot *s = free_slot(lst);
	unsigned running = sessions_running(lst);

	if (!s)
		goto busy;
	memset(s, 0, sizeof(*s));
	s->used = 1;
	s->serial = ++lst->serial;
	memcpy(s->session, hello->session, RMIG_NONCE_LEN);
	memcpy(s->token, hs->token, RMIG_NONCE_LEN);
	s->nchan = hello->channels;
	fill_opening(&s->opening, hs, hello);
	s->has_opening = 1;
	s->opener = p;
	lst->unclaimed++;
	pthread_cond_broadcast(&lst->cond);
	/* Taken: take_new cleared p->conn (the slot may be reused by then, so
	 * it is not the slot that says so). */
	while (p->conn && rmig_now_ms() < end && !atomic_load(&lst->stop) && !p->cut[0])
		timed_wait(lst, SLICE_MS);
	if (!p->conn)
		return 0;
	running = sessions_running(lst);
	s->has_opening = 0; /* the conn is still p's: refused below */
	s->opener = NULL;
	leave_locked(lst, s);
	if (p->cut[0])
		return rmig_err(hs, -ETIMEDOUT, "%s", p->cut);
busy:
	return rmig_err(hs, -EBUSY,
			"busy: this receiver is serving %u migration%s and takes no more now; "
			"try again later",
			running, running == 1 ? "" : "s");
}

/* The opening proved a key (ours, or a certificate TLS verified), not just
 * that it is on loopback or that we are --insecure. */
static int proved_key(const struct rmig_ctx *hs)
{
	return hs->cfg.psk || hs->link->peer_verified;
}

/* A resumption or the outcome question: to the session it names, which
 * takes it when it is ready (the newest one wins). A session still on its
 * old connection is woken at once if the opening proved a key: the source
 * says that connection is lost to it, and waiting for our own link timeout
 * would only hold the failover up, by then perhaps past the attempt the
 * source is making. Without a key anyone who read the migration's id off
 * the wire could stop a healthy session: it just waits. Lock held. */
static int deliver_again(struct rmig_listener *lst, struct pending *p, struct rmig_ctx *hs,
			 const struct rmig_wire_hello *hello)
{
	struct rmig_listener_slot *s = NULL;

	for (unsigned i = 0; i < MAX_SLOTS && !s; i++)
		if (lst->slots[i].used && lst->slots[i].ctx &&
		    !CRYPTO_memcmp(lst->slots[i].session, hello->session, RMIG_NONCE_LEN))
			s = &lst->slots[i];
	if (!s)
		return rmig_err(hs, -EPROTO, "%s: no such migration here",
				hello->flags & RMIG_HELLO_RESUME ? "cannot resume"
								 : "cannot answer");
	if (s->has_opening)
		bury(lst, s->opening.conn);
	/* Channels of the connection it replaces are stale. */
	for (unsigned i = 0; i < s->nchans; i++)
		bury(lst, s->chans[i].conn);
	s->nchans = 0;
	s->chan_mask = 0;
	memcpy(s->token, hs->token, RMIG_NONCE_LEN);
	s->nchan = hello->channels;
	fill_opening(&s->opening, hs, hello);
	s->has_opening = 1;
	p->conn = NULL;
	if (s->serving && proved_key(hs)) {
		/* Under the lock, so never while the session closes it
		 * (rmig_listener_release). Sends too: one blocked on the dead
		 * connection would otherwise wait out its timeout. The
		 * session sees -ECANCELED and asks why
		 * (rmig_listener_superseded). */
		cut_conn(s->serving);
		s->superseded = 1;
		s->serving = NULL;
	}
	pthread_cond_broadcast(&lst->cond);
	return 0;
}

static struct rmig_listener_slot *slot_of_token(struct rmig_listener *lst, const uint8_t *token)
{
	for (unsigned i = 0; i < MAX_SLOTS; i++)
		if (lst->slots[i].used &&
		    !CRYPTO_memcmp(lst->slots[i].token, token, RMIG_NONCE_LEN))
			return &lst->slots[i];
	return NULL;
}

/* A data channel: to the session whose token it carries. The source
 * connects its channels the moment it has our proof, so a channel may
 * overtake the thread that registers its migration: wait a little for
 * that (a race between two local threads, so never a whole link timeout).
 * Lock held. */
static int attach_channel(struct rmig_listener *lst, struct pending *p,
			  const struct rmig_wire_channel *c, char *why, size_t len)
{
	unsigned tmo = lst->base->cfg.link_timeout_ms;
	int64_t end = rmig_now_ms() + (tmo && tmo < CHANNEL_WAIT_MS ? tmo : CHANNEL_WAIT_MS);
	struct rmig_listener_slot *s;

	while (!(s = slot_of_token(lst, c->token)) && rmig_now_ms() < end && !p->cut[0] &&
	       !atomic_load(&lst->stop))
		timed_wait(lst, SLICE_MS / 4);
	if (!s) {
		snprintf(why, len, "data channel for no migration here");
		return -EPERM;
	}
	if (c->count != s->nchan || c->index >= s->nchan || s->nchans >= RMIG_MAX_CHANNELS) {
		snprintf(why, len, "data channel %u of %u: the migration has %u", c->index,
			 c->count, s->nchan);
		return -EPROTO;
	}
	if (s->chan_mask & (1ull << c->index)) {
		snprintf(why, len, "data channel %u connected twice", c->index);
		return -EPROTO;
	}
	s->chans[s->nchans++] = (struct waiting_channel){ p->conn, c->index };
	s->chan_mask |= 1ull << c->index;
	p->conn = NULL;
	pthread_cond_broadcast(&lst->cond);
	return 0;
}

/* A context for one opening: the listener's configuration and key, this
 * connection, the destination's listening phase, small frames only. */
static int opening_ctx(struct rmig_listener *lst, struct rmig_link *conn, struct rmig_ctx **out)
{
	struct rmig_ctx *hs;
	int rc = rmig_ctx_new(&hs, &lst->base->cfg, NULL);

	if (rc)
		return rc;
	hs->cfg.on_event = NULL; /* refusals are the listener's to report */
	hs->link = conn;
	hs->rx_limit = PREAUTH_MAX_BYTES;
	rmig_phase_init(hs, &rmig_dst_machine);
	hs->sm.phase = RMIG_DST_LISTENING;
	*out = hs;
	return 0;
}

/* HELLO came first: authenticate, then route by what the source asks. */
static int open_control(struct pending *p, struct rmig_msg *m, int tmo, char *why, size_t len)
{
	struct rmig_listener *lst = p->lst;
	struct rmig_wire_hello hello = m->u.hello;
	struct rmig_ctx *hs;
	int rc = opening_ctx(lst, p->conn, &hs);

	if (rc) {
		snprintf(why, len, "out of memory");
		return rc;
	}
	hs->ctrl_rx_seq = 1; /* the HELLO */
	hs->cfg.link_timeout_ms = (unsigned)tmo;
	rc = answer_hello(hs, m);
	if (!rc) {
		pthread_mutex_lock(&lst->lock);
		rc = hello.flags & (RMIG_HELLO_RESUME | RMIG_HELLO_QUERY)
			 ? deliver_again(lst, p, hs, &hello)
			 : queue_new(lst, p, hs, &hello);
		pthread_mutex_unlock(&lst->lock);
		close_dead(lst);
	}
	/* The peer hears why (best effort: its link may be what failed), in
	 * the words the log uses. */
	pthread_mutex_lock(&lst->lock);
	if (rc && p->cut[0])
		rmig_err(hs, rc, "%s", p->cut);
	else if (rc == -ETIMEDOUT)
		rmig_err(hs, rc, "no complete opening within %u ms (config.handshake_timeout_ms)",
			 lst->base->cfg.handshake_timeout_ms);
	pthread_mutex_unlock(&lst->lock);
	if (rc)
		rmig_ctrl_send_abort(hs, rc, hs->err);
	if (rc)
		snprintf(why, len, "%s", hs->err);
	hs->link = NULL;
	rmig_ctx_destroy(hs);
	return rc;
}

static void *opening_main(void *arg)
{
	struct pending *p = arg;
	struct rmig_listener *lst = p->lst;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	int tmo = (int)lst->base->cfg.handshake_timeout_ms, rc = -ENOMEM;
	char why[512] = "out of memory";
	struct rmig_link *conn;

	if (m)
		rc = read_first_frame(p->conn, m, tmo, why, sizeof(why));
	/* A peer that opened wrongly hears why (a TLS client that reached a
	 * receiver in clear, a sender in clear that reached one requiring TLS). */
	if (rc && rc != -ETIMEDOUT && rc != -ECANCELED && rc != -ENOMEM && !p->cut[0])
		tell_refused(p->conn, why);
	if (!rc && m->type == RMIG_MSG_CHANNEL) {
		pthread_mutex_lock(&lst->lock);
		rc = attach_channel(lst, p, &m->u.channel, why, sizeof(why));
		pthread_mutex_unlock(&lst->lock);
	} else if (!rc) {
		rc = open_control(p, m, tmo, why, sizeof(why));
	}
	/* Taken out of p under the lock: the reaper must never see a
	 * connection that is being closed (it would cut freed memory). */
	pthread_mutex_lock(&lst->lock);
	conn = p->conn; /* NULL if a session has it */
	p->conn = NULL;
	if (rc && p->cut[0])
		snprintf(why, sizeof(why), "%s", p->cut);
	else if (rc == -ETIMEDOUT)
		snprintf(why, sizeof(why),
			 "no complete opening within %u ms (config.handshake_timeout_ms)",
			 lst->base->cfg.handshake_timeout_ms);
	pthread_mutex_unlock(&lst->lock);
	if (rc && conn)
		refuse(lst, conn->peer, why);
	close_conn(conn);
	free(m);
	pthread_mutex_lock(&lst->lock);
	p->done = 1;
	pthread_cond_broadcast(&lst->cond);
	pthread_mutex_unlock(&lst->lock);
	return NULL;
}

/* ---- admission and the reaper ---- */

/* Join finished openings, cut those past their deadline. Lock held. */
static void reap(struct rmig_listener *lst)
{
	int64_t now = rmig_now_ms();

	for (unsigned i = 0; i < PENDING_ROOM; i++) {
		struct pending *p = &lst->pend[i];

		if (!p->used)
			continue;
		if (p->done) {
			pthread_join(p->tid, NULL);
			memset(p, 0, sizeof(*p));
		} else if (p->conn && !p->cut[0] && now >= p->deadline_ms) {
			snprintf(p->cut, sizeof(p->cut),
				 "no complete opening within %u ms (config.handshake_timeout_ms)",
				 lst->base->cfg.handshake_timeout_ms);
			cut_conn(p->conn);
		}
	}
}

static int live(const struct pending *p)
{
	return p->used && !p->done && p->conn && !p->cut[0];
}

/* Room for one more unproven connection from addr (admission.h): NULL, an
 * idler cut for it, or why it is refused. Lock held. */
static const char *make_room(struct rmig_listener *lst, const char *addr, char *why, size_t len)
{
	static const struct rmig_admit_policy policy = { .max_total = MAX_PENDING,
							 .max_per_addr = MAX_PENDING_PER_ADDR,
							 .evict_age_ms = EVICT_AGE_MS };
	struct rmig_admit_opening o[PENDING_ROOM];
	struct pending *who[PENDING_ROOM];
	unsigned n = 0;
	int k;

	for (unsigned i = 0; i < PENDING_ROOM; i++) {
		if (!live(&lst->pend[i]))
			continue;
		who[n] = &lst->pend[i];
		o[n++] = (struct rmig_admit_opening){ lst->pend[i].addr, lst->pend[i].since_ms };
	}
	k = rmig_admit_decide(&policy, o, n, addr, rmig_now_ms(), why, len);
	if (k == RMIG_ADMIT_REFUSE)
		return why;
	if (k >= 0) {
		snprintf(who[k]->cut, sizeof(who[k]->cut), "%s", why);
		cut_conn(who[k]->conn);
	}
	return NULL;
}

static void admit(struct rmig_listener *lst, struct rmig_link *conn)
{
	struct pending *p = NULL;
	const char *refused = "dropped: too many connections in their opening";
	pthread_attr_t attr;
	char addr[RMIG_ADMIT_ADDR_LEN], why[128];

	rmig_admit_addr(conn->peer, addr, sizeof(addr));
	pthread_mutex_lock(&lst->lock);
	reap(lst);
	for (unsigned i = 0; i < PENDING_ROOM && !p; i++)
		if (!lst->pend[i].used)
			p = &lst->pend[i];
	if (p && !(refused = make_room(lst, addr, why, sizeof(why)))) {
		*p = (struct pending){ .used = 1, .conn = conn, .lst = lst };
		memcpy(p->addr, addr, sizeof(p->addr));
		p->since_ms = rmig_now_ms();
		p->deadline_ms = p->since_ms + lst->base->cfg.handshake_timeout_ms;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, OPENING_STACK);
		if (pthread_create(&p->tid, &attr, opening_main, p)) {
			memset(p, 0, sizeof(*p));
			refused = "out of threads";
		} else {
			conn = NULL;
		}
		pthread_attr_destroy(&attr);
	}
	pthread_mutex_unlock(&lst->lock);
	if (conn) {
		refuse(lst, conn->peer, refused);
		tell_refused(conn, refused);
		close_conn(conn);
	}
}

static void *accept_main(void *arg)
{
	struct accept_thread *a = arg;
	struct rmig_listener *lst = a->lst;

	while (!atomic_load(&lst->stop)) {
		struct rmig_link *conn;
		int rc = rmig_link_accept(a->link, SLICE_MS, &conn);

		if (!rc) {
			admit(lst, conn);
			continue;
		}
		pthread_mutex_lock(&lst->lock);
		reap(lst);
		pthread_mutex_unlock(&lst->lock);
		report_refusals(lst);
		if (rc == -ETIMEDOUT || rc == -ECANCELED)
			continue;
		if (rc == -ENODEV) { /* the device is gone: the other links go on */
			struct rmig_event ev = { .type = RMIG_EV_WARNING, .detail = a->link->err };

			pthread_mutex_lock(&lst->event_lock);
			rmig_emit(lst->base, &ev);
			pthread_mutex_unlock(&lst->event_lock);
			break;
		}
		/* Out of descriptors or memory under a flood: openings end soon. */
		struct timespec ts = { 0, 50 * 1000000 };

		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* ---- life cycle ---- */

int rmig_listener_open(struct rmig_listener **out, const struct rmig_config *cfg, char *err,
		       size_t errlen)
{
	struct rmig_listener *lst = calloc(1, sizeof(*lst));
	int rc;

	if (!lst) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&lst->lock, NULL);
	pthread_mutex_init(&lst->event_lock, NULL);
	pthread_cond_init(&lst->cond, NULL);
	rc = rmig_ctx_new(&lst->base, cfg, NULL);
	if (!rc)
		rc = rmig_links_create(lst->base);
	if (!rc)
		rc = rmig_links_listen(lst->base);
	for (unsigned i = 0; !rc && i < rmig_links_count(lst->base); i++) {
		struct accept_thread *a = &lst->acc[lst->nacc];

		if (!(lst->base->linkset.listening & (1u << i)))
			continue;
		*a = (struct accept_thread){ lst, rmig_links_at(lst->base, i), 0 };
		if (pthread_create(&a->tid, NULL, accept_main, a))
			rc = rmig_err(lst->base, -EAGAIN, "cannot start an accepting thread");
		else
			lst->nacc++;
	}
	if (rc) {
		snprintf(err, errlen, "%s", lst->base ? lst->base->err : "out of memory");
		rmig_listener_destroy(lst);
		return rc;
	}
	*out = lst;
	return 0;
}

/* The RMIG_0.3 version; the RMIG_0.1 one is api/abi_0_2.c's. */

RMIG_DEFAULT_VERSION(rmig_listener_create_0_3, rmig_listener_create, "RMIG_0.3");
RMIG_VERSIONED int rmig_listener_create_0_3(struct rmig_listener **out,
					    const struct rmig_config *user_cfg)
{
	struct rmig_config cfg;
	char err[512] = "";
	int rc;

	if (!user_cfg || !out)
		return rmig_fail(-EINVAL, "rmig_listener_create: no configuration or out");
	rc = rmig_config_import(&cfg, user_cfg);
	if (rc)
		snprintf(err, sizeof(err), "%s", rmig_last_error());
	else
		rc = rmig_listener_open(out, &cfg, err, sizeof(err));
	/* create_err only from a struct whose size was plausible (import's
	 * -EINVAL: a config never filled, its pointers garbage). */
	if (rc && user_cfg->size >= RMIG_CONFIG_MIN_SIZE &&
	    user_cfg->size <= RMIG_CONFIG_MAX_SIZE && user_cfg->create_err &&
	    user_cfg->create_err_len)
		snprintf(user_cfg->create_err, user_cfg->create_err_len, "%s", err);
	return rc ? rmig_fail_msg(rc, err) : 0;
}

uint16_t rmig_listener_port(const struct rmig_listener *lst)
{
	return lst->base->port;
}

void rmig_listener_destroy(struct rmig_listener *lst)
{
	if (!lst)
		return;
	atomic_store(&lst->stop, 1);
	for (unsigned i = 0; i < lst->nacc; i++)
		lst->acc[i].link->ops->interrupt(lst->acc[i].link, RMIG_LINK_STOP_CTRL_RECV);
	for (unsigned i = 0; i < lst->nacc; i++)
		pthread_join(lst->acc[i].tid, NULL);
	pthread_mutex_lock(&lst->lock);
	for (unsigned i = 0; i < PENDING_ROOM; i++)
		if (lst->pend[i].used && !lst->pend[i].done && lst->pend[i].conn) {
			snprintf(lst->pend[i].cut, sizeof(lst->pend[i].cut),
				 "the receiver is shutting down");
			cut_conn(lst->pend[i].conn);
		}
	pthread_cond_broadcast(&lst->cond);
	for (unsigned i = 0; i < PENDING_ROOM; i++) {
		if (!lst->pend[i].used)
			continue;
		pthread_mutex_unlock(&lst->lock);
		pthread_join(lst->pend[i].tid, NULL);
		pthread_mutex_lock(&lst->lock);
		memset(&lst->pend[i], 0, sizeof(lst->pend[i]));
	}
	for (unsigned i = 0; i < MAX_SLOTS; i++)
		if (lst->slots[i].used)
			leave_locked(lst, &lst->slots[i]);
	pthread_mutex_unlock(&lst->lock);
	close_dead(lst);
	rmig_ctx_destroy(lst->base);
	pthread_mutex_destroy(&lst->lock);
	pthread_mutex_destroy(&lst->event_lock);
	pthread_cond_destroy(&lst->cond);
	free(lst);
}

/* ---- the session's side ---- */

static int wait_ended(struct rmig_ctx *ctx, int64_t end_ms, const char *what)
{
	if (rmig_cancel_requested(ctx))
		return rmig_err(ctx, -ECANCELED, "cancelled by the operator while %s", what);
	if (end_ms >= 0 && rmig_now_ms() >= end_ms)
		return -ETIMEDOUT;
	return 0;
}

int rmig_listener_take_new(struct rmig_listener *lst, struct rmig_ctx *ctx, int timeout_ms,
			   struct rmig_listener_slot **slot, struct rmig_opening *o)
{
	int64_t end = timeout_ms < 0 ? -1 : rmig_now_ms() + timeout_ms;
	int rc;

	pthread_mutex_lock(&lst->lock);
	lst->idle_waiters++;
	pthread_cond_broadcast(&lst->cond); /* a new migration may wait for us */
	for (;;) {
		struct rmig_listener_slot *first = NULL;

		for (unsigned i = 0; i < MAX_SLOTS; i++) {
			struct rmig_listener_slot *s = &lst->slots[i];

			if (s->used && !s->ctx && (!first || s->serial < first->serial))
				first = s;
		}
		if (first) {
			/* From here the reaper must not cut it: it is ours. */
			if (first->opener)
				first->opener->conn = NULL;
			first->opener = NULL;
			first->ctx = ctx;
			pthread_cond_broadcast(&lst->cond); /* the opener waits for this */
			*o = first->opening;
			first->serving = o->conn;
			first->has_opening = 0;
			lst->unclaimed--;
			*slot = first;
			rc = 0;
			break;
		}
		rc = wait_ended(ctx, end, "listening");
		if (rc == -ETIMEDOUT)
			rc = rmig_err(ctx, rc, "no sender connected within %d ms", timeout_ms);
		if (rc)
			break;
		timed_wait(lst, wait_slice(end));
	}
	lst->idle_waiters--;
	pthread_mutex_unlock(&lst->lock);
	return rc;
}

int rmig_listener_take_again(struct rmig_listener *lst, struct rmig_listener_slot *s,
			     struct rmig_ctx *ctx, int64_t end_ms, struct rmig_opening *o)
{
	int rc;

	pthread_mutex_lock(&lst->lock);
	s->serving = NULL; /* what comes now is what it waits for */
	while (!s->has_opening && !(rc = wait_ended(ctx, end_ms, "waiting for the source")))
		timed_wait(lst, wait_slice(end_ms));
	if (s->has_opening) {
		*o = s->opening;
		s->has_opening = 0;
		s->serving = o->conn;
		s->superseded = 0;
		rc = 0;
	}
	pthread_mutex_unlock(&lst->lock);
	return rc;
}

void rmig_listener_release(struct rmig_listener *lst, struct rmig_listener_slot *s)
{
	pthread_mutex_lock(&lst->lock);
	s->serving = NULL;
	pthread_mutex_unlock(&lst->lock);
}

int rmig_listener_superseded(struct rmig_listener *lst, struct rmig_listener_slot *s)
{
	int was;

	pthread_mutex_lock(&lst->lock);
	was = s->superseded;
	s->superseded = 0;
	pthread_mutex_unlock(&lst->lock);
	return was;
}

/* The slot now waits for another opening's channels than the session's:
 * the source (or, without a key, anyone) reopened the migration, and
 * deliver_again gave the slot that opening's token. Lock held. */
static int reopened(const struct rmig_listener_slot *s, const struct rmig_ctx *ctx)
{
	return CRYPTO_memcmp(s->token, ctx->token, RMIG_NONCE_LEN) != 0;
}

int rmig_listener_take_channels(struct rmig_listener *lst, struct rmig_listener_slot *s,
				struct rmig_ctx *ctx, unsigned n, int *nodes, int timeout_ms)
{
	struct waiting_channel got[RMIG_MAX_CHANNELS];
	int64_t end = rmig_now_ms() + timeout_ms;
	unsigned have;
	int rc = 0;

	for (unsigned i = 0; i < n; i++)
		nodes[i] = -1;
	pthread_mutex_lock(&lst->lock);
	while (s->nchans < n && !reopened(s, ctx) &&
	       !(rc = wait_ended(ctx, end, "waiting for data channels")))
		timed_wait(lst, wait_slice(end));
	have = s->nchans;
	if (reopened(s, ctx)) { /* what came is the newer opening's */
		rc = rmig_err(ctx, -ECANCELED, "the source reopened the migration");
	} else if (have == n) { /* all came, if only in the last slice: ours */
		memcpy(got, s->chans, sizeof(got[0]) * n);
		s->nchans = 0; /* the mask stays: no channel may join twice */
		rc = 0;
	} else if (!rc) { /* more than ours: never taken */
		rc = rmig_err(ctx, -EPROTO, "%u data channels came for the %u announced", have, n);
	}
	pthread_mutex_unlock(&lst->lock);
	if (rc == -ETIMEDOUT)
		return rmig_err(ctx, rc, "only %u of %u data channels connected within %d ms", have,
				n, timeout_ms);
	if (rc)
		return rc;
	for (unsigned i = 0; i < n; i++) {
		struct rmig_link *l = ctx->link;

		if (!rc) {
			rc = l->ops->adopt_channel(l, got[i].conn, got[i].index,
						   &nodes[got[i].index]);
			if (rc)
				rc = rmig_err(ctx, rc, "data channel %u: %s", got[i].index, l->err);
		}
		close_conn(got[i].conn);
	}
	return rc;
}

static void leave_locked(struct rmig_listener *lst, struct rmig_listener_slot *s)
{
	if (s->has_opening)
		bury(lst, s->opening.conn);
	for (unsigned i = 0; i < s->nchans; i++)
		bury(lst, s->chans[i].conn);
	if (s->used && !s->ctx)
		lst->unclaimed--;
	memset(s, 0, sizeof(*s));
}

void rmig_listener_leave(struct rmig_listener *lst, struct rmig_listener_slot *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&lst->lock);
	leave_locked(lst, s);
	pthread_mutex_unlock(&lst->lock);
	close_dead(lst);
}
