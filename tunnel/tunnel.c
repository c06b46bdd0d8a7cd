/* tunnel.c - rmig_tunnel: local UNIX-socket connections multiplexed as
 * streams over one link, kept across a lost link.
 *
 * Two threads per connected link: the loop (the caller of rmig_tunnel_run)
 * polls the local sockets and is the link's only sender; the reader blocks
 * on the link and only fills the streams' buffers, so neither side's reader
 * ever waits for its loop and the two ends cannot deadlock on each other.
 *
 * Every stream keeps, per direction, positions counted from its start (its
 * EOF counts as one more): what was read locally (queued), sent on the
 * current link, and acknowledged by the peer as written to its own local
 * socket (WINDOW, absolute). Bytes stay in the sender's ring until
 * acknowledged, at most TUN_STREAM_WINDOW of them, which is also the flow
 * control: a slow local reader stalls its own stream only. When the link is
 * lost the streams stay; the sending side connects again with the session's
 * token, both sides say what they hold (STATE) and each sends again what
 * the other has not received. A stream is freed once each side knows the
 * other has everything, so a frame lost with a link is never needed again.
 */
#include "rmig_tunnel.h"

#include "conn.h"
#include "door.h"
#include "frame.h"
#include "link.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TUN_MAX_CHANNELS 16
#define TUN_MAX_STREAMS 256 /* SEND: more open connections are refused */
/* RECV: room for twice as many, as a stream the sender has freed may wait
 * one more turn of the receiver's loop (or a reconnection) to be freed. */
#define TUN_STREAM_SLOTS (2 * TUN_MAX_STREAMS)
#define TUN_STREAM_WINDOW (256u * 1024) /* per stream, per direction */
#define TUN_PING_MS 1000		/* a PING when nothing else was sent */
#define TUN_DEAD_MS 10000		/* nothing read for this long: link lost */
#define TUN_SEND_TIMEOUT_MS 10000
#define TUN_CONNECT_TIMEOUT_MS 30000 /* RDMA under emulation takes seconds to accept */
#define TUN_RESUME_MS_DEFAULT 30000
#define TUN_RETRY_MAX_MS 2000 /* the longest pause between reconnection attempts */

_Static_assert(TUN_STREAM_SLOTS <= TUN_STATE_MAX, "a STATE frame holds every slot");

struct channel {
	char name[TUN_MAX_NAME + 1];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd; /* SEND: the exposed socket; RECV: -1 */
};

struct stream {
	int used;
	uint32_t id;
	int fd;
	char name[TUN_MAX_NAME + 1];
	int opening;	/* RECV: OPEN received, not yet connected (loop) */
	int need_open;	/* SEND: OPEN to send (again, after a reconnection) */
	int reset;	/* CLOSE sent or received: drop at once */
	int local_gone; /* the local peer closed both ways after its EOF */
	/* to the peer: [out_acked, out_queued) kept in out (a ring) */
	uint8_t *out;
	uint64_t out_queued; /* data bytes read locally */
	int out_eof;	     /* local EOF read: the EOF sits at out_queued */
	uint64_t out_sent;   /* positions sent on this link (EOF counts 1) */
	uint64_t out_acked;  /* positions the peer wrote locally (WINDOW) */
	/* from the peer: [in_written, in_rcvd) waiting in in (a ring) */
	uint8_t *in;
	uint64_t in_rcvd;     /* data bytes received */
	int in_eof;	      /* EOF received */
	uint64_t in_written;  /* data bytes written locally */
	int wr_shut;	      /* shutdown(SHUT_WR) done after in_eof */
	uint64_t in_credited; /* position last acknowledged to the peer */
};

struct rmig_tunnel {
	enum rmig_tunnel_role role;
	struct channel ch[TUN_MAX_CHANNELS];
	int nch;
	struct tun_security sec;
	rmig_tunnel_log_fn log;
	void *log_arg;
	unsigned resume_ms;
	char kinds[TUN_MAX_KINDS][TUN_KIND_LEN]; /* transports, in order */
	char kind_why[TUN_MAX_KINDS][256];	 /* why each last failed (logged) */
	int nkinds;
	volatile sig_atomic_t stopping;
	int wake_fd;		/* eventfd: the reader, the door or stop wakes the loop */
	struct tun_door *door;	/* RECV */
	struct rmig_link *link; /* the connected link, NULL between links */
	pthread_mutex_t lock;	/* streams[], link_dead */
	struct stream streams[TUN_STREAM_SLOTS];
	uint32_t next_id;    /* SEND: the last stream number given */
	uint32_t max_opened; /* RECV: the highest stream number opened */
	int have_session;    /* streams belong to the session of token */
	uint8_t token[TUN_TOKEN_LEN];
	int link_dead;
	char dead_why[256];
	char kind_used[TUN_KIND_LEN]; /* the transport of the current link */
	struct tun_proven next;	      /* RECV: the sender came back while a link lived */
	char err[256];
};

static void logf_(struct rmig_tunnel *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(struct rmig_tunnel *t, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (t->log)
		t->log(t->log_arg, line);
	else
		fprintf(stderr, "rmig tunnel: %s\n", line);
}

static int fail(struct rmig_tunnel *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct rmig_tunnel *t, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
	return rc;
}

static void wake(struct rmig_tunnel *t)
{
	uint64_t one = 1;
	ssize_t n = write(t->wake_fd, &one, sizeof(one));

	(void)n; /* a full counter already wakes the loop */
}

/* ---- configuration ---- */

static void auto_kinds(struct rmig_tunnel *t);

int rmig_tunnel_create(enum rmig_tunnel_role role, struct rmig_tunnel **out)
{
	struct rmig_tunnel *t;

	if (role != RMIG_TUNNEL_SEND && role != RMIG_TUNNEL_RECV)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->role = role;
	t->resume_ms = TUN_RESUME_MS_DEFAULT;
	auto_kinds(t); /* RDMA where a device reaches the peer, else TCP */
	t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->wake_fd < 0) {
		free(t);
		return -errno;
	}
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return 0;
}

static int name_ok(const char *name)
{
	size_t n = strlen(name);

	if (!n || n > TUN_MAX_NAME)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(name[i] == '-' || name[i] == '_' || name[i] == '.' ||
		      (name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z') ||
		      (name[i] >= 'A' && name[i] <= 'Z')))
			return 0;
	return 1;
}

static struct channel *find_channel(struct rmig_tunnel *t, const char *name)
{
	for (int i = 0; i < t->nch; i++)
		if (!strcmp(t->ch[i].name, name))
			return &t->ch[i];
	return NULL;
}

int rmig_tunnel_add(struct rmig_tunnel *t, const char *name, const char *path)
{
	struct channel *c;

	if (!name_ok(name))
		return fail(t, -EINVAL, "'%s': a name is 1..%u of letters, digits, - _ .", name,
			    TUN_MAX_NAME);
	if (find_channel(t, name))
		return fail(t, -EEXIST, "'%s' is named twice", name);
	if (t->nch == TUN_MAX_CHANNELS)
		return fail(t, -ENOSPC, "more than %d names", TUN_MAX_CHANNELS);
	if (!*path || strlen(path) >= sizeof(c->path))
		return fail(t, -ENAMETOOLONG, "'%s': a socket path is 1..%zu bytes", path,
			    sizeof(c->path) - 1);
	c = &t->ch[t->nch++];
	snprintf(c->name, sizeof(c->name), "%s", name);
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->listen_fd = -1;
	return 0;
}

int rmig_tunnel_set_psk(struct rmig_tunnel *t, const uint8_t *key, size_t len)
{
	if (len < 16 || len > 1024)
		return fail(t, -EINVAL, "a key is 16..1024 bytes");
	if (tun_derive_psk(key, len, t->sec.psk_hex))
		return fail(t, -EIO, "HMAC-SHA256 failed");
	return 0;
}

int rmig_tunnel_set_tls_creds(struct rmig_tunnel *t, const char *dir)
{
	if (!*dir || strlen(dir) >= sizeof(t->sec.creds))
		return fail(t, -ENAMETOOLONG, "credentials directory: 1..%zu bytes",
			    sizeof(t->sec.creds) - 1);
	snprintf(t->sec.creds, sizeof(t->sec.creds), "%s", dir);
	return 0;
}

int rmig_tunnel_set_resume_timeout(struct rmig_tunnel *t, unsigned ms)
{
	if (ms > 3600 * 1000)
		return fail(t, -EINVAL, "a resume timeout is at most one hour");
	t->resume_ms = ms;
	return 0;
}

/* A transport the tunnel can use: a registered link that is not a wrapper. */
static int kind_ok(const char *name)
{
	const struct rmig_link_ops *k;

	for (unsigned i = 0; (k = rmig_link_kind(i)); i++)
		if (!strcmp(k->name, name) && !k->wraps)
			return 1;
	return 0;
}

/* "auto": every plain link auto would try, lowest rank first (rdma, tcp). */
static void auto_kinds(struct rmig_tunnel *t)
{
	const struct rmig_link_ops *k, *order[TUN_MAX_KINDS];
	int n = 0;

	for (unsigned i = 0; (k = rmig_link_kind(i)) && n < TUN_MAX_KINDS; i++)
		if (k->auto_rank > 0 && !k->wraps)
			order[n++] = k;
	for (int i = 1; i < n; i++) /* a handful: insertion sort by rank */
		for (int j = i; j > 0 && order[j]->auto_rank < order[j - 1]->auto_rank; j--) {
			k = order[j];
			order[j] = order[j - 1];
			order[j - 1] = k;
		}
	for (int i = 0; i < n; i++)
		snprintf(t->kinds[i], TUN_KIND_LEN, "%s", order[i]->name);
	t->nkinds = n;
}

int rmig_tunnel_set_transport(struct rmig_tunnel *t, const char *list)
{
	char kinds[TUN_MAX_KINDS][TUN_KIND_LEN];
	const char *p = list;
	int n = 0;

	if (!strcmp(list, "auto")) {
		auto_kinds(t);
		return t->nkinds ? 0 : fail(t, -ENOENT, "no transport is built in");
	}
	while (*p) {
		size_t len = strcspn(p, ",");

		if (n == TUN_MAX_KINDS || !len || len >= TUN_KIND_LEN)
			return fail(t, -EINVAL, "'%s': auto, or up to %d transports (rdma,tcp)",
				    list, TUN_MAX_KINDS);
		memcpy(kinds[n], p, len);
		kinds[n][len] = 0;
		if (!kind_ok(kinds[n]))
			return fail(t, -ENOENT, "no transport named '%s' (rdma, tcp)", kinds[n]);
		n++;
		p += len + (p[len] == ',');
	}
	if (!n)
		return fail(t, -EINVAL, "no transport given");
	memcpy(t->kinds, kinds, sizeof(kinds));
	t->nkinds = n;
	return 0;
}

int rmig_tunnel_set_link_options(struct rmig_tunnel *t, const char *opts)
{
	struct tun_security probe = { .link_options = "" };
	const char *p = opts;

	if (strlen(opts) >= sizeof(t->sec.link_options))
		return fail(t, -E2BIG, "link options: at most %zu bytes",
			    sizeof(t->sec.link_options) - 1);
	snprintf(probe.link_options, sizeof(probe.link_options), "%s", opts);
	while (*p) { /* each item: a known kind, and a key and value it takes */
		size_t len = strcspn(p, ",");
		char item[256], *dot, *eq, err[256];
		struct rmig_link *l;
		int rc;

		snprintf(item, sizeof(item), "%.*s", (int)len, p);
		p += len + (p[len] == ',');
		dot = strchr(item, '.');
		eq = strchr(item, '=');
		if (!dot || !eq || eq < dot || dot == item || eq == dot + 1)
			return fail(t, -EINVAL, "'%s' is not LINK.KEY=VALUE", item);
		*dot = 0;
		if (!kind_ok(item))
			return fail(t, -ENOENT, "no transport named '%s' (rdma, tcp)", item);
		rc = tun_link_open(&probe, item, &l, err, sizeof(err));
		if (rc)
			return fail(t, rc, "%s", err);
		rmig_link_destroy(l);
	}
	memcpy(t->sec.link_options, probe.link_options, sizeof(probe.link_options));
	return 0;
}

void rmig_tunnel_set_log(struct rmig_tunnel *t, rmig_tunnel_log_fn fn, void *arg)
{
	t->log = fn;
	t->log_arg = arg;
}

const char *rmig_tunnel_error(const struct rmig_tunnel *t)
{
	return t->err;
}

void rmig_tunnel_stop(struct rmig_tunnel *t)
{
	t->stopping = 1;
	wake(t);
}

/* ---- sending frames (the loop thread only) ---- */

static void mark_dead(struct rmig_tunnel *t, const char *why)
{
	pthread_mutex_lock(&t->lock);
	if (!t->link_dead) {
		t->link_dead = 1;
		snprintf(t->dead_why, sizeof(t->dead_why), "%s", why);
	}
	pthread_mutex_unlock(&t->lock);
	wake(t);
}

static int send_frame(struct rmig_tunnel *t, uint8_t type, uint32_t stream, const void *p,
		      uint32_t len)
{
	struct tun_hdr h = { .stream = stream, .len = len, .type = type };
	uint8_t hdr[TUN_HDR_LEN];
	struct iovec iov[2] = { { hdr, TUN_HDR_LEN }, { (void *)p, len } };
	int rc;

	if (t->link_dead)
		return -EPIPE; /* nothing more on a lost link; its streams wait */
	tun_hdr_encode(&h, hdr);
	rc = t->link->ops->ctrl_send(t->link, iov, len ? 2 : 1, TUN_SEND_TIMEOUT_MS);
	if (rc)
		mark_dead(t, t->link->err[0] ? t->link->err : strerror(-rc));
	return rc;
}

/* ---- streams ---- */

static struct stream *stream_by_id(struct rmig_tunnel *t, uint32_t id)
{
	for (int i = 0; i < TUN_STREAM_SLOTS; i++)
		if (t->streams[i].used && t->streams[i].id == id)
			return &t->streams[i];
	return NULL;
}

static struct stream *stream_new(struct rmig_tunnel *t, uint32_t id, int fd, const char *name)
{
	int slots = t->role == RMIG_TUNNEL_SEND ? TUN_MAX_STREAMS : TUN_STREAM_SLOTS;

	for (int i = 0; i < slots; i++) {
		struct stream *s = &t->streams[i];

		if (s->used)
			continue;
		memset(s, 0, sizeof(*s));
		s->out = malloc(TUN_STREAM_WINDOW);
		s->in = malloc(TUN_STREAM_WINDOW);
		if (!s->out || !s->in) {
			free(s->out);
			free(s->in);
			return NULL;
		}
		s->used = 1;
		s->id = id;
		s->fd = fd;
		snprintf(s->name, sizeof(s->name), "%s", name);
		return s;
	}
	return NULL;
}

static void stream_free(struct stream *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->out);
	free(s->in);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

/* Forget the session: every stream closed, a new sender may come. */
static void end_session(struct rmig_tunnel *t)
{
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TUN_STREAM_SLOTS; i++)
		if (t->streams[i].used)
			stream_free(&t->streams[i]);
	t->have_session = 0;
	t->next_id = t->max_opened = 0;
	pthread_mutex_unlock(&t->lock);
}

static uint64_t out_end(const struct stream *s)
{
	return s->out_queued + (uint64_t)s->out_eof;
}

/* Bytes the local socket may still give: the window less what is unacked. */
static uint32_t out_room(const struct stream *s)
{
	uint64_t acked = s->out_acked < s->out_queued ? s->out_acked : s->out_queued;

	return TUN_STREAM_WINDOW - (uint32_t)(s->out_queued - acked);
}

static uint32_t in_len(const struct stream *s)
{
	return (uint32_t)(s->in_rcvd - s->in_written);
}

static uint64_t in_consumed(const struct stream *s)
{
	return s->in_written + (uint64_t)s->wr_shut;
}

/* Everything both ways is written on the far side and acknowledged. */
static int stream_done(const struct stream *s)
{
	return s->out_eof && s->out_acked == out_end(s) && s->in_eof && s->wr_shut &&
	       s->in_credited == in_consumed(s);
}

/* ---- the reader thread: frames from the peer into the streams ---- */

static int read_exact(struct rmig_tunnel *t, void *buf, size_t len)
{
	int rc = t->link->ops->ctrl_recv(t->link, buf, len, TUN_DEAD_MS);

	if (rc == -ETIMEDOUT)
		mark_dead(t, "no frame from the peer for 10 s");
	else if (rc)
		mark_dead(t, t->link->err[0] ? t->link->err : strerror(-rc));
	return rc;
}

static int on_data(struct stream *s, const uint8_t *p, uint32_t n)
{
	uint32_t tail, first;

	if (s->in_eof || n > TUN_STREAM_WINDOW - in_len(s))
		return -EPROTO; /* past EOF, or beyond the window we gave */
	tail = (uint32_t)(s->in_rcvd % TUN_STREAM_WINDOW);
	first = TUN_STREAM_WINDOW - tail < n ? TUN_STREAM_WINDOW - tail : n;
	memcpy(s->in + tail, p, first);
	memcpy(s->in, p + first, n - first); /* the part that wraps around */
	s->in_rcvd += n;
	return 0;
}

static int on_open(struct rmig_tunnel *t, uint32_t id, const uint8_t *p, uint32_t n)
{
	char name[TUN_MAX_NAME + 1];
	struct stream *s;

	/* numbers only grow: an OPEN at or below the highest is a replay */
	if (t->role != RMIG_TUNNEL_RECV || id <= t->max_opened)
		return -EPROTO;
	memcpy(name, p, n);
	name[n] = 0;
	if (!name_ok(name))
		return -EPROTO; /* a sender only sends names it could expose */
	s = stream_new(t, id, -1, name);
	if (!s)
		return -EPROTO; /* the sender exceeded the stream limit it shares */
	t->max_opened = id;
	s->opening = 1;
	return 0;
}

/* The peer's reason for a CLOSE, printable characters only: one line. */
static void log_refusal(struct rmig_tunnel *t, const struct stream *s, const uint8_t *p, uint32_t n)
{
	char why[TUN_MAX_MSG + 1];

	tun_printable(why, p, n);
	logf_(t, "stream %u (%s) refused by the peer: %s", s->id, s->name, why);
}

/* Apply one stream's frame (lock held). -EPROTO: the peer broke the protocol. */
static int apply_stream_frame(struct rmig_tunnel *t, struct stream *s, const struct tun_hdr *h,
			      const uint8_t *p)
{
	uint64_t v;

	switch (h->type) {
	case TUN_DATA: return on_data(s, p, h->len);
	case TUN_EOF:
		if (s->in_eof)
			return -EPROTO;
		s->in_eof = 1;
		return 0;
	case TUN_CLOSE:
		s->reset = 1;
		if (h->len)
			log_refusal(t, s, p, h->len);
		return 0;
	case TUN_WINDOW:
		v = tun_get64(p);
		if (v < s->out_acked || v > s->out_sent)
			return -EPROTO; /* acknowledges what was never sent */
		s->out_acked = v;
		return 0;
	}
	return -EPROTO;
}

static int apply_frame(struct rmig_tunnel *t, const struct tun_hdr *h, const uint8_t *p)
{
	struct stream *s;

	if (h->type == TUN_PING)
		return 0;
	if (h->type == TUN_HELLO || h->type == TUN_STATE || h->type == TUN_REFUSE)
		return -EPROTO; /* only in a connection's opening */
	if (h->type == TUN_OPEN)
		return on_open(t, h->stream, p, h->len);
	s = stream_by_id(t, h->stream);
	if (!s)
		return 0; /* a stream this side closed already: frames in flight */
	return apply_stream_frame(t, s, h, p);
}

static void *reader_main(void *arg)
{
	struct rmig_tunnel *t = arg;
	static __thread uint8_t payload[TUN_MAX_DATA];

	for (;;) {
		uint8_t hb[TUN_HDR_LEN];
		struct tun_hdr h;
		char why[160];
		int rc;

		if (read_exact(t, hb, sizeof(hb)))
			return NULL;
		if (tun_hdr_decode(hb, &h, why, sizeof(why))) {
			mark_dead(t, why);
			return NULL;
		}
		if (h.len && read_exact(t, payload, h.len))
			return NULL;
		pthread_mutex_lock(&t->lock);
		rc = apply_frame(t, &h, payload);
		pthread_mutex_unlock(&t->lock);
		if (rc) {
			snprintf(why, sizeof(why),
				 "the peer broke the protocol (frame type %u, stream %u)", h.type,
				 h.stream);
			mark_dead(t, why);
			return NULL;
		}
		wake(t);
	}
}

/* ---- the loop: local sockets <-> frames ---- */

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

/* Send a frame from the loop: the lock is released meanwhile (the reader
 * applies frames), the stream's slot stays the loop's. */
static int send_unlocked(struct rmig_tunnel *t, uint8_t type, uint32_t id, const void *p,
			 uint32_t len)
{
	int rc;

	pthread_mutex_unlock(&t->lock);
	rc = send_frame(t, type, id, p, len);
	pthread_mutex_lock(&t->lock);
	return rc;
}

/* RECV: connect an opened stream to its forward, or refuse it in one line. */
static void open_forward(struct rmig_tunnel *t, struct stream *s)
{
	struct channel *c = find_channel(t, s->name);
	struct sockaddr_un sa;
	char why[TUN_MAX_MSG];
	int fd = -1;

	s->opening = 0;
	if (!c) {
		snprintf(why, sizeof(why), "no --forward named '%s'", s->name);
	} else if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
		   unix_addr(c->path, &sa) || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		/* non-blocking: a socket whose backlog is full (EAGAIN) is refused
		 * rather than stalling every other stream */
		snprintf(why, sizeof(why), "%s: %s", c->path,
			 errno == EAGAIN ? "busy (its backlog is full)" : strerror(errno));
		if (fd >= 0)
			close(fd);
	} else {
		s->fd = fd;
		return;
	}
	logf_(t, "stream %u (%s) refused: %s", s->id, s->name, why);
	s->reset = 1;
	send_unlocked(t, TUN_CLOSE, s->id, why, (uint32_t)strlen(why));
}

/* Drop stream s on both sides (lock held, released while sending). */
static void reset_stream(struct rmig_tunnel *t, struct stream *s)
{
	s->reset = 1;
	send_unlocked(t, TUN_CLOSE, s->id, NULL, 0);
}

/* SEND: OPENs the peer has not had, in the order of their numbers (the
 * receiver takes only growing ones), new streams' and after a
 * reconnection those it never received. Lock held. */
static void send_opens(struct rmig_tunnel *t)
{
	for (;;) {
		struct stream *first = NULL;

		for (int i = 0; i < TUN_MAX_STREAMS; i++) {
			struct stream *s = &t->streams[i];

			if (s->used && s->need_open && !s->reset && (!first || s->id < first->id))
				first = s;
		}
		if (!first || send_unlocked(t, TUN_OPEN, first->id, first->name,
					    (uint32_t)strlen(first->name)))
			return;
		first->need_open = 0;
	}
}

/* What the peer has not received yet, from the ring: bytes, then the EOF
 * (once its OPEN went: send_opens). 1: something sent. */
static int send_pending(struct rmig_tunnel *t, struct stream *s)
{
	uint32_t off, n;

	if (s->need_open)
		return 0;
	if (s->out_sent < s->out_queued) {
		off = (uint32_t)(s->out_sent % TUN_STREAM_WINDOW);
		n = (uint32_t)(s->out_queued - s->out_sent);
		n = n < TUN_MAX_DATA ? n : TUN_MAX_DATA;
		n = n < TUN_STREAM_WINDOW - off ? n : TUN_STREAM_WINDOW - off;
		/* Counted as sent before: the peer's WINDOW for it may come
		 * before send returns. Unsent on a lost link, the peer's STATE
		 * sets it back. Only this thread writes the ring, past out_queued. */
		s->out_sent += n;
		return !send_unlocked(t, TUN_DATA, s->id, s->out + off, n);
	}
	if (s->out_eof && s->out_sent == s->out_queued) {
		s->out_sent++;
		return !send_unlocked(t, TUN_EOF, s->id, NULL, 0);
	}
	return 0;
}

static int has_pending(const struct stream *s)
{
	return s->need_open || s->out_sent < out_end(s);
}

/* Local bytes into the ring, as far as the window allows; then sent. */
static void read_local(struct rmig_tunnel *t, struct stream *s)
{
	uint32_t off = (uint32_t)(s->out_queued % TUN_STREAM_WINDOW), want = out_room(s);
	ssize_t n;

	want = want < TUN_MAX_DATA ? want : TUN_MAX_DATA;
	want = want < TUN_STREAM_WINDOW - off ? want : TUN_STREAM_WINDOW - off;
	if (!want)
		return;
	n = read(s->fd, s->out + off, want);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		reset_stream(t, s);
		return;
	}
	if (n == 0)
		s->out_eof = 1;
	else
		s->out_queued += (uint64_t)n;
	send_pending(t, s);
}

/* The peer's bytes to the local socket; acknowledged in quarters. */
static void write_local(struct rmig_tunnel *t, struct stream *s)
{
	while (!s->local_gone && in_len(s)) {
		uint32_t head = (uint32_t)(s->in_written % TUN_STREAM_WINDOW);
		uint32_t run =
		    TUN_STREAM_WINDOW - head < in_len(s) ? TUN_STREAM_WINDOW - head : in_len(s);
		ssize_t n = send(s->fd, s->in + head, run, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			reset_stream(t, s);
			return;
		}
		s->in_written += (uint64_t)n;
	}
	if (s->local_gone && in_len(s)) {
		reset_stream(t, s); /* nobody to give bytes to: a reset, as TCP answers */
		return;
	}
	if (!in_len(s) && s->in_eof && !s->wr_shut) {
		if (!s->local_gone)
			shutdown(s->fd, SHUT_WR);
		s->wr_shut = 1;
	}
	if (in_consumed(s) - s->in_credited >= TUN_STREAM_WINDOW / 4 ||
	    (in_consumed(s) > s->in_credited && !in_len(s))) {
		uint8_t p[8];

		tun_put64(p, in_consumed(s));
		if (!send_unlocked(t, TUN_WINDOW, s->id, p, sizeof(p)))
			s->in_credited = tun_get64(p);
	}
}

/* SEND: a new local connection on channel c becomes a stream. */
static void accept_local(struct rmig_tunnel *t, struct channel *c)
{
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct stream *s;

	if (fd < 0)
		return;
	pthread_mutex_lock(&t->lock);
	s = stream_new(t, t->next_id + 1, fd, c->name);
	if (s) {
		t->next_id++;
		s->need_open = 1; /* sent by the loop, in order */
	}
	pthread_mutex_unlock(&t->lock);
	if (!s) {
		logf_(t, "%s: a connection refused: %d streams open already (the limit)", c->name,
		      TUN_MAX_STREAMS);
		close(fd);
	}
}

static int stream_live(const struct stream *s)
{
	return s->used && !s->reset && !s->opening && s->fd >= 0;
}

/* One pass over the streams after poll (lock held). */
static void service_streams(struct rmig_tunnel *t, const struct pollfd *pf, const int *slot, int n)
{
	send_opens(t);
	for (int i = 0; i < TUN_STREAM_SLOTS; i++)
		if (t->streams[i].used && t->streams[i].opening)
			open_forward(t, &t->streams[i]);
	for (int k = 0; k < n; k++) {
		struct stream *s = &t->streams[slot[k]];

		if (!stream_live(s) || has_pending(s))
			continue;
		if (!s->out_eof && (pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
			read_local(t, s);
		else if (s->out_eof && (pf[k].revents & (POLLHUP | POLLERR)))
			s->local_gone = 1; /* closed, not just half-closed */
	}
	for (int i = 0; i < TUN_STREAM_SLOTS; i++) {
		struct stream *s = &t->streams[i];

		if (stream_live(s) && has_pending(s))
			send_pending(t, s);
		if (stream_live(s))
			write_local(t, s);
		if (s->used && (s->reset || stream_done(s)))
			stream_free(s);
	}
}

/* Poll set: wake fd, the exposed sockets, then each stream's socket.
 * *busy: some stream has bytes to send again (poll must not wait). */
static int build_poll(struct rmig_tunnel *t, struct pollfd *pf, int *slot, int *nstreams, int *busy)
{
	int n = 0, k = 0;

	*busy = 0;
	pf[n++] = (struct pollfd){ .fd = t->wake_fd, .events = POLLIN };
	for (int i = 0; i < t->nch; i++)
		if (t->ch[i].listen_fd >= 0)
			pf[n++] = (struct pollfd){ .fd = t->ch[i].listen_fd, .events = POLLIN };
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TUN_STREAM_SLOTS; i++) {
		struct stream *s = &t->streams[i];
		short ev = 0;

		if (s->used && s->opening)
			*busy = 1;
		if (!stream_live(s))
			continue;
		if (has_pending(s))
			*busy = 1;
		else if (!s->out_eof && out_room(s))
			ev |= POLLIN;
		if (in_len(s) && !s->local_gone)
			ev |= POLLOUT;
		if (!ev)
			continue; /* nothing to do with it: its POLLHUP would spin */
		slot[k++] = i;
		pf[n++] = (struct pollfd){ .fd = s->fd, .events = ev };
	}
	pthread_mutex_unlock(&t->lock);
	*nstreams = k;
	return n;
}

/* RECV: a connection that proved itself while a link lives: the sender
 * coming back (its old link is then dropped), or someone else (refused). */
static void door_during_link(struct rmig_tunnel *t)
{
	struct tun_proven pv;

	while (t->door && !t->next.link && !tun_door_take(t->door, &pv)) {
		if (!memcmp(pv.token, t->token, TUN_TOKEN_LEN) && (pv.flags & TUN_HELLO_RESUME)) {
			t->next = pv;
			mark_dead(t, "the peer connected again");
			return;
		}
		logf_(t, "%s refused: busy, a tunnel from %s is connected", pv.link->peer,
		      t->link->peer);
		tun_send_refusal(pv.link, "busy: this receiver serves another tunnel");
		rmig_link_destroy(pv.link);
	}
}

/* Carry streams until the link is lost or the tunnel stops. */
static void session_loop(struct rmig_tunnel *t)
{
	static __thread struct pollfd pf[1 + TUN_MAX_CHANNELS + TUN_STREAM_SLOTS];
	static __thread int slot[TUN_STREAM_SLOTS];
	int64_t last_ping = rmig_link_now_ms();

	while (!t->stopping && !t->link_dead) {
		int nstreams, busy, n = build_poll(t, pf, slot, &nstreams, &busy);
		int first_stream = n - nstreams;
		uint64_t drain;

		if (poll(pf, (nfds_t)n, busy ? 0 : TUN_PING_MS / 2) < 0 && errno != EINTR)
			break;
		if ((pf[0].revents & POLLIN) && read(t->wake_fd, &drain, sizeof(drain)) < 0)
			drain = 0;
		door_during_link(t);
		for (int i = 0, p = 1; i < t->nch; i++)
			if (t->ch[i].listen_fd >= 0 && (pf[p++].revents & POLLIN))
				accept_local(t, &t->ch[i]);
		pthread_mutex_lock(&t->lock);
		service_streams(t, pf + first_stream, slot, nstreams);
		pthread_mutex_unlock(&t->lock);
		if (rmig_link_now_ms() - last_ping >= TUN_PING_MS) {
			send_frame(t, TUN_PING, 0, NULL, 0);
			last_ping = rmig_link_now_ms();
		}
	}
}

/* Run one connected link to its end; the streams stay for the next. */
static void run_link(struct rmig_tunnel *t)
{
	pthread_t reader;

	if (pthread_create(&reader, NULL, reader_main, t)) {
		mark_dead(t, "cannot start the reader thread");
		return;
	}
	session_loop(t);
	t->link->ops->interrupt(t->link, RMIG_LINK_STOP_CTRL_RECV | RMIG_LINK_STOP_CTRL_SEND |
					     RMIG_LINK_STOP_DATA);
	pthread_join(reader, NULL);
	rmig_link_destroy(t->link);
	t->link = NULL;
}

/* ---- a connection's opening: HELLO, then STATE both ways ---- */

/* An opening's deadline: the link's waits are for silence only, so a peer
 * giving a byte now and then would hold the opening (and the tunnel's one
 * thread) for as long as it likes; past ms the link is interrupted. */
struct watchdog {
	pthread_t thread;
	pthread_mutex_t m;
	pthread_cond_t c;
	struct rmig_link *l;
	int ms, done, fired, started;
};

static void *watch_main(void *arg)
{
	struct watchdog *w = arg;
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += w->ms / 1000;
	until.tv_nsec += (long)(w->ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->m);
	while (!w->done)
		if (pthread_cond_timedwait(&w->c, &w->m, &until) == ETIMEDOUT) {
			if (!w->done) {
				w->fired = 1;
				w->l->ops->interrupt(w->l, RMIG_LINK_STOP_CTRL_RECV |
							       RMIG_LINK_STOP_CTRL_SEND |
							       RMIG_LINK_STOP_DATA);
			}
			break;
		}
	pthread_mutex_unlock(&w->m);
	return NULL;
}

static void watch_start(struct watchdog *w, struct rmig_link *l, int ms)
{
	*w = (struct watchdog){ .l = l, .ms = ms };
	pthread_mutex_init(&w->m, NULL);
	pthread_cond_init(&w->c, NULL);
	w->started = !pthread_create(&w->thread, NULL, watch_main, w);
}

/* 1: the deadline passed (the link is interrupted). */
static int watch_stop(struct watchdog *w)
{
	pthread_mutex_lock(&w->m);
	w->done = 1;
	pthread_cond_signal(&w->c);
	pthread_mutex_unlock(&w->m);
	if (w->started)
		pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->c);
	pthread_mutex_destroy(&w->m);
	return w->fired;
}

static int send_hello(struct rmig_tunnel *t, uint32_t flags)
{
	uint8_t b[TUN_HDR_LEN + TUN_HELLO_LEN];
	struct iovec v = { b, sizeof(b) };
	int rc;

	tun_hello_encode(flags, t->token, b);
	rc = t->link->ops->ctrl_send(t->link, &v, 1, TUN_SEND_TIMEOUT_MS);
	if (rc)
		return fail(t, rc, "%s", t->link->err[0] ? t->link->err : strerror(-rc));
	return 0;
}

/* What this side holds: each stream's received and consumed positions. */
static int send_state(struct rmig_tunnel *t)
{
	static __thread uint8_t b[TUN_HDR_LEN + 8 + TUN_STATE_MAX * TUN_STATE_ENTRY];
	uint8_t *p = b + TUN_HDR_LEN + 8;
	uint32_t count = 0;
	struct iovec v = { b, 0 };
	struct tun_hdr h = { .stream = 0, .type = TUN_STATE };
	int rc;

	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TUN_STREAM_SLOTS; i++) {
		struct stream *s = &t->streams[i];

		if (!s->used || s->reset)
			continue;
		tun_put32(p, s->id);
		tun_put32(p + 4, 0);
		tun_put64(p + 8, s->in_rcvd + (uint64_t)s->in_eof);
		tun_put64(p + 16, in_consumed(s));
		s->in_credited = in_consumed(s);
		p += TUN_STATE_ENTRY;
		count++;
	}
	tun_put32(b + TUN_HDR_LEN, count);
	tun_put32(b + TUN_HDR_LEN + 4, t->role == RMIG_TUNNEL_SEND ? t->next_id : t->max_opened);
	pthread_mutex_unlock(&t->lock);
	h.len = 8 + count * TUN_STATE_ENTRY;
	tun_hdr_encode(&h, b);
	v.iov_len = TUN_HDR_LEN + h.len;
	rc = t->link->ops->ctrl_send(t->link, &v, 1, TUN_SEND_TIMEOUT_MS);
	if (rc)
		return fail(t, rc, "%s", t->link->err[0] ? t->link->err : strerror(-rc));
	return 0;
}

struct peer_entry {
	uint32_t id;
	uint64_t rcvd, consumed;
};

/* The peer's STATE: entries into e (at most TUN_STATE_MAX), its highest
 * stream number into *max_id. */
static int read_state(struct rmig_tunnel *t, struct peer_entry *e, uint32_t *n, uint32_t *max_id)
{
	static __thread uint8_t p[8 + TUN_STATE_MAX * TUN_STATE_ENTRY];
	uint8_t hb[TUN_HDR_LEN];
	struct tun_hdr h;
	char why[160];
	int rc = t->link->ops->ctrl_recv(t->link, hb, sizeof(hb), TUN_CONNECT_TIMEOUT_MS);

	if (!rc && (tun_hdr_decode(hb, &h, why, sizeof(why)) || h.type != TUN_STATE))
		return fail(t, -EPROTO, "%s: no STATE after its HELLO", t->link->peer);
	if (!rc)
		rc = t->link->ops->ctrl_recv(t->link, p, h.len, TUN_CONNECT_TIMEOUT_MS);
	if (rc)
		return fail(t, rc, "%s", t->link->err[0] ? t->link->err : strerror(-rc));
	*n = tun_get32(p);
	*max_id = tun_get32(p + 4);
	if (*n > TUN_STATE_MAX || h.len != 8 + *n * TUN_STATE_ENTRY)
		return fail(t, -EPROTO, "%s: a STATE of %u bytes for %u streams", t->link->peer,
			    h.len, *n);
	for (uint32_t i = 0; i < *n; i++) {
		const uint8_t *q = p + 8 + i * TUN_STATE_ENTRY;

		e[i] = (struct peer_entry){ tun_get32(q), tun_get64(q + 8), tun_get64(q + 16) };
	}
	return 0;
}

static const struct peer_entry *entry_of(const struct peer_entry *e, uint32_t n, uint32_t id)
{
	for (uint32_t i = 0; i < n; i++)
		if (e[i].id == id)
			return &e[i];
	return NULL;
}

/* One stream against what the peer holds of it: send again from what it
 * received; a stream it does not hold is one it never opened (SEND: open
 * it again) or has finished (free it). Lock held. */
static int reconcile(struct rmig_tunnel *t, struct stream *s, const struct peer_entry *e,
		     uint32_t peer_max, uint64_t *again)
{
	if (!e && t->role == RMIG_TUNNEL_SEND && s->id > peer_max && !s->out_acked) {
		*again += s->out_sent;
		s->need_open = 1;
		s->out_sent = 0;
		return 0;
	}
	if (!e) {
		stream_free(s);
		return 0;
	}
	if (e->consumed > e->rcvd || e->consumed < s->out_acked || e->rcvd > out_end(s))
		return -EBADMSG; /* positions this side never sent */
	*again += s->out_sent > e->rcvd ? s->out_sent - e->rcvd : 0;
	s->need_open = 0; /* it has the stream, whatever this side thought */
	s->out_acked = e->consumed;
	s->out_sent = e->rcvd;
	return 0;
}

/* After HELLO both ways: exchange STATE and take the peer's view. */
static int exchange_state(struct rmig_tunnel *t, int resumed)
{
	static __thread struct peer_entry e[TUN_STATE_MAX];
	uint32_t n = 0, peer_max = 0, held = 0;
	uint64_t again = 0;
	int rc = send_state(t);

	if (!rc)
		rc = read_state(t, e, &n, &peer_max);
	if (rc)
		return rc;
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TUN_STREAM_SLOTS && !rc; i++) {
		struct stream *s = &t->streams[i];

		if (!s->used)
			continue;
		if (s->reset) {
			stream_free(s); /* its CLOSE may be lost: the peer frees it below */
			continue;
		}
		rc = reconcile(t, s, entry_of(e, n, s->id), peer_max, &again);
		held += s->used;
	}
	t->link_dead = 0;
	t->dead_why[0] = 0;
	pthread_mutex_unlock(&t->lock);
	if (rc)
		return fail(t, rc, "%s's STATE names bytes never sent: the session is lost",
			    t->link->peer);
	if (resumed)
		logf_(t, "link to %s back: %u streams resumed, %llu bytes sent again",
		      t->link->peer, held, (unsigned long long)again);
	return 0;
}

/* ---- the sending role ---- */

static int expose(struct rmig_tunnel *t, struct channel *c)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd;

	if (unix_addr(c->path, &sa))
		return fail(t, -ENAMETOOLONG, "%s: path too long", c->path);
	if (!lstat(c->path, &st)) {
		if (!S_ISSOCK(st.st_mode))
			return fail(t, -EEXIST, "%s exists and is not a socket", c->path);
		unlink(c->path); /* a socket left by an earlier run */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(t, -errno, "socket: %s", strerror(errno));
	/* chmod before listen: nobody can connect in between */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(c->path, 0600) ||
	    listen(fd, 64)) {
		int rc = -errno;

		close(fd);
		return fail(t, rc, "%s: %s", c->path, strerror(-rc));
	}
	c->listen_fd = fd;
	return 0;
}

static int connect_failed(struct rmig_tunnel *t, int rc);

/* One connection to the receiver: HELLO (resuming the session or not),
 * its HELLO or REFUSE, STATE both ways. */
static int connect_kind(struct rmig_tunnel *t, const char *kind, const char *host, uint16_t port,
			int resume, int timeout_ms)
{
	uint8_t token[TUN_TOKEN_LEN];
	uint32_t flags = 0;
	char why[256];
	struct watchdog w;
	int rc = tun_link_open(&t->sec, kind, &t->link, t->err, sizeof(t->err));

	if (rc)
		return rc;
	rc = t->link->ops->connect_ctrl(t->link, host, port, timeout_ms);
	if (rc)
		return connect_failed(t, fail(t, rc, "%s", t->link->err));
	watch_start(&w, t->link, timeout_ms);
	rc = send_hello(t, resume ? TUN_HELLO_RESUME : 0);
	if (!rc && (rc = tun_read_hello(t->link, timeout_ms, &flags, token, why, sizeof(why))))
		fail(t, rc, "%s", why);
	if (!rc &&
	    (memcmp(token, t->token, TUN_TOKEN_LEN) || !(flags & TUN_HELLO_RESUME) != !resume))
		rc = fail(t, -EPROTO, "%s answered for another session", t->link->peer);
	if (!rc)
		rc = exchange_state(t, resume);
	if (watch_stop(&w))
		rc = fail(t, -ETIMEDOUT, "%s: no complete opening within %d ms", t->link->peer,
			  timeout_ms);
	return connect_failed(t, rc);
}

static int connect_failed(struct rmig_tunnel *t, int rc)
{
	if (rc) {
		rmig_link_destroy(t->link);
		t->link = NULL;
	}
	return rc;
}

/* The transports in order: the first that connects carries the tunnel.
 * A refusal by the receiver or a lost session is an answer: not retried
 * over the next. */
static int connect_once(struct rmig_tunnel *t, const char *host, uint16_t port, int resume,
			int timeout_ms)
{
	char errs[sizeof(t->err)] = "";
	int rc = -EINVAL;

	for (int i = 0; i < t->nkinds && !t->stopping; i++) {
		size_t used = strlen(errs);

		rc = connect_kind(t, t->kinds[i], host, port, resume, timeout_ms);
		if (!rc) {
			t->kind_why[i][0] = 0;
			snprintf(t->kind_used, sizeof(t->kind_used), "%s", t->kinds[i]);
			return 0;
		}
		if (rc == -EREMOTEIO || rc == -EBADMSG)
			return rc;
		/* once per kind and reason: reconnecting repeats them */
		if (i + 1 < t->nkinds && strcmp(t->kind_why[i], t->err)) {
			logf_(t, "%s: %s; trying %s", t->kinds[i], t->err, t->kinds[i + 1]);
			snprintf(t->kind_why[i], sizeof(t->kind_why[i]), "%s", t->err);
		}
		snprintf(errs + used, sizeof(errs) - used, "%s%s%s", used ? "; " : "",
			 t->nkinds > 1 ? t->kinds[i] : "", t->nkinds > 1 ? ": " : "");
		used = strlen(errs);
		snprintf(errs + used, sizeof(errs) - used, "%s", t->err);
	}
	snprintf(t->err, sizeof(t->err), "%s", errs);
	return rc;
}

static void pause_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* The link is lost: connect again until resume_ms have passed. 0: back. */
static int reconnect(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	int64_t start = rmig_link_now_ms(), end = start + t->resume_ms;
	int delay = 100, tries = 0, rc = -ECONNRESET;

	while (!t->stopping && rmig_link_now_ms() < end) {
		int left = (int)(end - rmig_link_now_ms());

		tries++;
		rc = connect_once(t, host, port, 1,
				  left < TUN_CONNECT_TIMEOUT_MS ? left : TUN_CONNECT_TIMEOUT_MS);
		if (!rc) {
			logf_(t, "reconnected over %s after %lld ms (%d attempts)", t->kind_used,
			      (long long)(rmig_link_now_ms() - start), tries);
			return 0;
		}
		if (rc == -EBADMSG || (rc == -EREMOTEIO && strstr(t->err, "no such session")))
			return rc; /* the receiver forgot it, or holds nonsense */
		if (tries == 1 || tries % 10 == 0)
			logf_(t, "reconnecting: %s", t->err);
		pause_ms(delay < left ? delay : left);
		delay = delay * 2 < TUN_RETRY_MAX_MS ? delay * 2 : TUN_RETRY_MAX_MS;
	}
	return t->stopping ? 0 : rc;
}

static int run_send(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	int rc;

	for (int i = 0; i < t->nch; i++)
		if ((rc = expose(t, &t->ch[i])))
			return rc;
	if (getrandom(t->token, sizeof(t->token), 0) != (ssize_t)sizeof(t->token))
		return fail(t, -EIO, "getrandom failed");
	rc = connect_once(t, host, port, 0, TUN_CONNECT_TIMEOUT_MS);
	if (rc)
		return rc;
	logf_(t, "connected to %s over %s", t->link->peer, t->kind_used);
	for (;;) {
		char why[256];

		run_link(t);
		if (t->stopping)
			break;
		snprintf(why, sizeof(why), "%s", t->dead_why);
		if (!t->resume_ms) {
			end_session(t);
			return fail(t, -ECONNRESET, "link lost: %s", why);
		}
		logf_(t, "link lost (%s): reconnecting for up to %u s", why, t->resume_ms / 1000);
		rc = reconnect(t, host, port);
		if (t->stopping)
			break;
		if (rc) {
			char last[256];

			snprintf(last, sizeof(last), "%s", t->err); /* fail() writes t->err */
			end_session(t);
			if (rc == -EREMOTEIO || rc == -EBADMSG)
				return fail(t, -ECONNRESET, "link lost (%s), then %s", why, last);
			return fail(t, -ECONNRESET,
				    "link lost (%s) and not back within %u s (%s): every stream "
				    "closed",
				    why, t->resume_ms / 1000, last);
		}
	}
	end_session(t);
	return 0;
}

/* ---- the receiving role ---- */

/* A proven connection: a new session, the lost link of ours coming back,
 * or refused. 0: t->link is connected and its streams ready. */
static int take_connection(struct rmig_tunnel *t, struct tun_proven *pv)
{
	int same = t->have_session && !memcmp(pv->token, t->token, TUN_TOKEN_LEN);
	int resume = (pv->flags & TUN_HELLO_RESUME) != 0;
	struct watchdog w;
	char peer[128];
	int rc;

	snprintf(peer, sizeof(peer), "%s", pv->link->peer);
	if (resume && !same) {
		logf_(t, "%s refused: it resumes a session this receiver does not hold", peer);
		tun_send_refusal(pv->link, "no such session here (the receiver restarted, or "
					   "gave it up): its streams are lost");
		rmig_link_destroy(pv->link);
		return -ENOENT;
	}
	if (!resume && t->have_session) {
		logf_(t, "a new tunnel from %s: the streams of the lost one are closed", peer);
		end_session(t);
	}
	t->link = pv->link;
	memcpy(t->token, pv->token, TUN_TOKEN_LEN);
	t->have_session = 1;
	/* the receiver holds its one sender's place: the door's deadline */
	watch_start(&w, t->link, TUN_OPEN_MS);
	rc = send_hello(t, resume ? TUN_HELLO_RESUME : 0);
	if (!rc)
		rc = exchange_state(t, resume);
	if (watch_stop(&w))
		rc = fail(t, -ETIMEDOUT, "no complete opening within %d ms", TUN_OPEN_MS);
	if (rc) {
		/* most of t->err names the peer already */
		if (strncmp(t->err, peer, strlen(peer)))
			logf_(t, "%s: %s", peer, t->err);
		else
			logf_(t, "%s", t->err);
		rmig_link_destroy(t->link);
		t->link = NULL;
		if (rc == -EBADMSG || !resume)
			end_session(t);
		return rc;
	}
	if (!resume)
		logf_(t, "peer %s connected over %s", peer, rmig_link_kind_name(t->link));
	return 0;
}

/* Between links: wait for the door; a lost session is kept for the sender
 * to come back for resume_ms (plus the time its side may take to notice). */
static int wait_connection(struct rmig_tunnel *t, int64_t lost_at, struct tun_proven *pv)
{
	struct pollfd pf = { .fd = t->wake_fd, .events = POLLIN };
	uint64_t drain;

	while (!t->stopping) {
		if (!tun_door_take(t->door, pv))
			return 0;
		if (t->have_session &&
		    rmig_link_now_ms() - lost_at > (int64_t)t->resume_ms + TUN_DEAD_MS) {
			logf_(t, "the sender did not come back within %u s: every stream closed",
			      (t->resume_ms + TUN_DEAD_MS) / 1000);
			end_session(t);
		}
		if (poll(&pf, 1, 500) > 0 && read(t->wake_fd, &drain, sizeof(drain)) < 0)
			drain = 0;
	}
	return -ECANCELED;
}

static void door_log(void *arg, const char *fmt, ...)
{
	struct rmig_tunnel *t = arg;
	char line[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	logf_(t, "%s", line);
}

static int run_recv(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	struct tun_door_config dc = { &t->sec, host, t->kinds, t->nkinds, door_log, t, t->wake_fd };
	int64_t lost_at = 0;
	int rc = tun_door_open(&t->door, &dc, &port, t->err, sizeof(t->err));

	if (rc)
		return rc;
	logf_(t, "listening on %s:%u", host && *host ? host : "*", port);
	while (!t->stopping) {
		struct tun_proven pv = t->next;

		t->next.link = NULL;
		if (!pv.link && wait_connection(t, lost_at, &pv))
			break;
		if (take_connection(t, &pv))
			continue;
		run_link(t);
		lost_at = rmig_link_now_ms();
		if (t->stopping)
			break;
		if (!t->resume_ms) {
			logf_(t, "link lost (%s): every stream closed", t->dead_why);
			end_session(t);
		} else {
			logf_(t, "link lost (%s): the streams wait %u s for the sender",
			      t->dead_why, (t->resume_ms + TUN_DEAD_MS) / 1000);
		}
	}
	if (t->next.link)
		rmig_link_destroy(t->next.link);
	t->next.link = NULL;
	tun_door_close(t->door);
	t->door = NULL;
	end_session(t);
	return 0;
}

int rmig_tunnel_run(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	if (!t->nch)
		return fail(t, -EINVAL, "no %s given",
			    t->role == RMIG_TUNNEL_SEND ? "--expose" : "--forward");
	return t->role == RMIG_TUNNEL_SEND ? run_send(t, host, port) : run_recv(t, host, port);
}

void rmig_tunnel_destroy(struct rmig_tunnel *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->nch; i++)
		if (t->ch[i].listen_fd >= 0) {
			close(t->ch[i].listen_fd);
			unlink(t->ch[i].path);
		}
	end_session(t);
	close(t->wake_fd);
	pthread_mutex_destroy(&t->lock);
	OPENSSL_cleanse(&t->sec, sizeof(t->sec));
	OPENSSL_cleanse(t->token, sizeof(t->token));
	free(t);
}
