/* tunnel.c - rmig_tunnel: local UNIX-socket connections multiplexed as
 * streams over one link.
 *
 * Two threads per connected tunnel: the loop (the caller of
 * rmig_tunnel_run) polls the local sockets and is the link's only sender;
 * the reader blocks on the link and only fills the streams' buffers, so
 * neither side's reader ever waits for its loop and the two ends cannot
 * deadlock on each other. A stream's sender may have at most TUN_STREAM_WINDOW
 * bytes the receiver has not yet written to its local socket: a slow local
 * reader stalls its own stream only, and each stream's buffer is bounded.
 */
#include "rmig_tunnel.h"

#include "conn.h"
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TUN_MAX_CHANNELS 16
#define TUN_MAX_STREAMS 256 /* SEND: more open connections are refused */
/* RECV: room for twice as many, as a stream the sender has freed may wait
 * one more turn of the receiver's loop to be freed there. */
#define TUN_STREAM_SLOTS (2 * TUN_MAX_STREAMS)
#define TUN_STREAM_WINDOW (256u * 1024) /* per stream, per direction */
#define TUN_PING_MS 1000		/* a PING when nothing else was sent */
#define TUN_DEAD_MS 10000		/* nothing read for this long: link lost */
#define TUN_SEND_TIMEOUT_MS 10000
#define TUN_CONNECT_TIMEOUT_MS 10000

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
	int opening;	    /* RECV: OPEN received, not yet connected (loop) */
	int local_eof;	    /* read EOF from fd, EOF frame sent */
	int peer_eof;	    /* EOF frame received */
	int wr_shut;	    /* shutdown(SHUT_WR) done after peer_eof */
	int reset;	    /* CLOSE sent or received: drop at once */
	int local_gone;	    /* the local peer closed both ways after its EOF */
	uint32_t credit;    /* bytes we may still send */
	uint32_t consumed;  /* bytes written locally, not yet credited back */
	uint8_t *buf;	    /* bytes from the peer, to write locally (ring) */
	uint32_t head, len; /* ring state */
};

struct rmig_tunnel {
	enum rmig_tunnel_role role;
	struct channel ch[TUN_MAX_CHANNELS];
	int nch;
	struct tun_security sec;
	rmig_tunnel_log_fn log;
	void *log_arg;
	volatile sig_atomic_t stopping;
	int wake_fd; /* eventfd: the reader (or stop) wakes the loop */
	struct rmig_link *listener;
	struct rmig_link *link; /* the connected tunnel */
	pthread_mutex_t lock;	/* streams[], link_dead */
	struct stream streams[TUN_STREAM_SLOTS];
	uint32_t next_id;
	int link_dead;
	char dead_why[256];
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

int rmig_tunnel_create(enum rmig_tunnel_role role, struct rmig_tunnel **out)
{
	struct rmig_tunnel *t;

	if (role != RMIG_TUNNEL_SEND && role != RMIG_TUNNEL_RECV)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->role = role;
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
	if (t->listener)
		t->listener->ops->interrupt(t->listener, RMIG_LINK_STOP_CTRL_RECV |
							     RMIG_LINK_STOP_CTRL_SEND |
							     RMIG_LINK_STOP_DATA);
	wake(t);
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
	if (t->listener)
		rmig_link_destroy(t->listener);
	close(t->wake_fd);
	pthread_mutex_destroy(&t->lock);
	OPENSSL_cleanse(&t->sec, sizeof(t->sec));
	free(t);
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

	tun_hdr_encode(&h, hdr);
	rc = t->link->ops->ctrl_send(t->link, iov, len ? 2 : 1, TUN_SEND_TIMEOUT_MS);
	if (rc)
		mark_dead(t, t->link->err[0] ? t->link->err : strerror(-rc));
	return rc;
}

static int send_u32(struct rmig_tunnel *t, uint8_t type, uint32_t stream, uint32_t v)
{
	uint8_t p[4];

	tun_put32(p, v);
	return send_frame(t, type, stream, p, 4);
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
		s->buf = malloc(TUN_STREAM_WINDOW);
		if (!s->buf)
			return NULL;
		s->used = 1;
		s->id = id;
		s->fd = fd;
		s->credit = TUN_STREAM_WINDOW;
		snprintf(s->name, sizeof(s->name), "%s", name);
		return s;
	}
	return NULL;
}

static void stream_free(struct stream *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->buf);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

static void close_all_streams(struct rmig_tunnel *t)
{
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TUN_STREAM_SLOTS; i++)
		if (t->streams[i].used)
			stream_free(&t->streams[i]);
	pthread_mutex_unlock(&t->lock);
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

	if (s->peer_eof || n > TUN_STREAM_WINDOW - s->len)
		return -EPROTO; /* past EOF, or beyond the window we gave */
	tail = (s->head + s->len) % TUN_STREAM_WINDOW;
	first = TUN_STREAM_WINDOW - tail < n ? TUN_STREAM_WINDOW - tail : n;
	memcpy(s->buf + tail, p, first);
	memcpy(s->buf, p + first, n - first); /* the part that wraps around */
	s->len += n;
	return 0;
}

static int on_open(struct rmig_tunnel *t, uint32_t id, const uint8_t *p, uint32_t n)
{
	char name[TUN_MAX_NAME + 1];
	struct stream *s;

	if (t->role != RMIG_TUNNEL_RECV || stream_by_id(t, id))
		return -EPROTO;
	memcpy(name, p, n);
	name[n] = 0;
	if (!name_ok(name))
		return -EPROTO; /* a sender only sends names it could expose */
	s = stream_new(t, id, -1, name);
	if (!s)
		return -EPROTO; /* the sender exceeded the stream limit it shares */
	s->opening = 1;
	return 0;
}

/* The peer's reason for a CLOSE, printable characters only: one line. */
static void log_refusal(struct rmig_tunnel *t, const struct stream *s, const uint8_t *p, uint32_t n)
{
	char why[TUN_MAX_MSG + 1];

	for (uint32_t i = 0; i < n; i++)
		why[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	why[n] = 0;
	logf_(t, "stream %u (%s) refused by the peer: %s", s->id, s->name, why);
}

/* Apply one frame (lock held). -EPROTO: the peer broke the protocol. */
static int apply_frame(struct rmig_tunnel *t, const struct tun_hdr *h, const uint8_t *p)
{
	struct stream *s;

	if (h->type == TUN_PING)
		return 0;
	if (h->type == TUN_HELLO)
		return -EPROTO; /* only as the first frame */
	if (h->type == TUN_OPEN)
		return on_open(t, h->stream, p, h->len);
	s = stream_by_id(t, h->stream);
	if (!s)
		return 0; /* a stream this side closed already: frames in flight */
	switch (h->type) {
	case TUN_DATA: return on_data(s, p, h->len);
	case TUN_EOF: s->peer_eof = 1; return 0;
	case TUN_CLOSE:
		s->reset = 1;
		if (h->len)
			log_refusal(t, s, p, h->len);
		return 0;
	case TUN_WINDOW: {
		uint32_t more = tun_get32(p);

		if (more > TUN_STREAM_WINDOW - s->credit)
			return -EPROTO;
		s->credit += more;
		return 0;
	}
	}
	return -EPROTO;
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
				 "the peer broke the protocol (frame type %u, "
				 "stream %u)",
				 h.type, h.stream);
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
	pthread_mutex_unlock(&t->lock);
	send_frame(t, TUN_CLOSE, s->id, why, (uint32_t)strlen(why));
	pthread_mutex_lock(&t->lock);
}

/* Drop stream s on both sides (lock held, released while sending). */
static void reset_stream(struct rmig_tunnel *t, struct stream *s)
{
	uint32_t id = s->id;

	s->reset = 1;
	pthread_mutex_unlock(&t->lock);
	send_frame(t, TUN_CLOSE, id, NULL, 0);
	pthread_mutex_lock(&t->lock);
}

/* Local bytes to the peer, as far as the stream's window allows. */
static void pump_out(struct rmig_tunnel *t, struct stream *s)
{
	static __thread uint8_t buf[TUN_MAX_DATA];
	uint32_t want = s->credit < TUN_MAX_DATA ? s->credit : TUN_MAX_DATA;
	ssize_t n = want ? read(s->fd, buf, want) : 0;
	uint32_t id = s->id;

	if (!want || (n < 0 && (errno == EAGAIN || errno == EINTR)))
		return;
	if (n < 0) {
		reset_stream(t, s);
		return;
	}
	if (n == 0)
		s->local_eof = 1;
	else
		s->credit -= (uint32_t)n;
	pthread_mutex_unlock(&t->lock);
	send_frame(t, n ? TUN_DATA : TUN_EOF, id, buf, (uint32_t)n);
	pthread_mutex_lock(&t->lock);
}

/* The peer's bytes to the local socket; credit them back in quarters. */
static void pump_in(struct rmig_tunnel *t, struct stream *s)
{
	if (s->local_gone) {
		/* nobody to give bytes to: a reset, as TCP answers them */
		if (s->len)
			reset_stream(t, s);
		else if (s->peer_eof)
			s->wr_shut = 1;
		return;
	}
	while (s->len) {
		uint32_t run =
		    TUN_STREAM_WINDOW - s->head < s->len ? TUN_STREAM_WINDOW - s->head : s->len;
		ssize_t n = send(s->fd, s->buf + s->head, run, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			reset_stream(t, s);
			return;
		}
		s->head = (s->head + (uint32_t)n) % TUN_STREAM_WINDOW;
		s->len -= (uint32_t)n;
		s->consumed += (uint32_t)n;
	}
	if (s->consumed >= TUN_STREAM_WINDOW / 4 || (s->consumed && !s->len)) {
		uint32_t more = s->consumed, id = s->id;

		s->consumed = 0;
		pthread_mutex_unlock(&t->lock);
		send_u32(t, TUN_WINDOW, id, more);
		pthread_mutex_lock(&t->lock);
	}
	if (!s->len && s->peer_eof && !s->wr_shut) {
		shutdown(s->fd, SHUT_WR);
		s->wr_shut = 1;
	}
}

/* SEND: a new local connection on channel c becomes a stream. */
static void accept_local(struct rmig_tunnel *t, struct channel *c)
{
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct stream *s;
	uint32_t id;

	if (fd < 0)
		return;
	pthread_mutex_lock(&t->lock);
	id = ++t->next_id;
	s = stream_new(t, id, fd, c->name);
	pthread_mutex_unlock(&t->lock);
	if (!s) {
		logf_(t, "%s: a connection refused: %d streams open already (the limit)", c->name,
		      TUN_MAX_STREAMS);
		close(fd);
		return;
	}
	send_frame(t, TUN_OPEN, id, c->name, (uint32_t)strlen(c->name));
}

/* One pass over the streams after poll (lock held). */
static void service_streams(struct rmig_tunnel *t, const struct pollfd *pf, const int *slot, int n)
{
	for (int i = 0; i < TUN_STREAM_SLOTS; i++)
		if (t->streams[i].used && t->streams[i].opening)
			open_forward(t, &t->streams[i]);
	for (int k = 0; k < n; k++) {
		struct stream *s = &t->streams[slot[k]];

		if (!s->used || s->reset || s->opening || s->fd < 0)
			continue;
		if (!s->local_eof && (pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
			pump_out(t, s);
		else if (s->local_eof && (pf[k].revents & (POLLHUP | POLLERR)))
			s->local_gone = 1; /* closed, not just half-closed */
	}
	for (int i = 0; i < TUN_STREAM_SLOTS; i++) {
		struct stream *s = &t->streams[i];

		if (s->used && !s->reset && !s->opening && s->fd >= 0)
			pump_in(t, s);
		if (s->used && (s->reset || (s->local_eof && s->wr_shut)))
			stream_free(s);
	}
}

/* Poll set: wake fd, the exposed sockets, then each stream's socket. */
static int build_poll(struct rmig_tunnel *t, struct pollfd *pf, int *slot, int *nstreams)
{
	int n = 0, k = 0;

	pf[n++] = (struct pollfd){ .fd = t->wake_fd, .events = POLLIN };
	for (int i = 0; i < t->nch; i++)
		if (t->ch[i].listen_fd >= 0)
			pf[n++] = (struct pollfd){ .fd = t->ch[i].listen_fd, .events = POLLIN };
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < TUN_STREAM_SLOTS; i++) {
		struct stream *s = &t->streams[i];
		short ev = 0;

		if (!s->used || s->fd < 0 || s->reset || s->local_gone)
			continue;
		if (!s->local_eof && s->credit)
			ev |= POLLIN;
		if (s->len)
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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Carry streams until the link is lost or the tunnel stops. */
static void session_loop(struct rmig_tunnel *t)
{
	static __thread struct pollfd pf[1 + TUN_MAX_CHANNELS + TUN_STREAM_SLOTS];
	static __thread int slot[TUN_STREAM_SLOTS];
	int64_t last_ping = now_ms();

	while (!t->stopping && !t->link_dead) {
		int nstreams, n = build_poll(t, pf, slot, &nstreams);
		int first_stream = n - nstreams;
		uint64_t drain;

		if (poll(pf, (nfds_t)n, TUN_PING_MS / 2) < 0 && errno != EINTR)
			break;
		if ((pf[0].revents & POLLIN) && read(t->wake_fd, &drain, sizeof(drain)) < 0)
			drain = 0;
		for (int i = 0, p = 1; i < t->nch; i++)
			if (t->ch[i].listen_fd >= 0 && (pf[p++].revents & POLLIN))
				accept_local(t, &t->ch[i]);
		pthread_mutex_lock(&t->lock);
		service_streams(t, pf + first_stream, slot, nstreams);
		pthread_mutex_unlock(&t->lock);
		if (now_ms() - last_ping >= TUN_PING_MS) {
			send_frame(t, TUN_PING, 0, NULL, 0);
			last_ping = now_ms();
		}
	}
}

/* ---- a connected tunnel ---- */

static const uint8_t hello_magic[4] = { 'R', 'M', 'T', 'N' };
#define TUN_VERSION 1u

static int send_hello(struct rmig_tunnel *t)
{
	uint8_t p[TUN_HELLO_LEN];

	memcpy(p, hello_magic, 4);
	tun_put32(p + 4, TUN_VERSION);
	return send_frame(t, TUN_HELLO, 0, p, sizeof(p));
}

/* The peer's first frame: a HELLO of this version. */
static int check_hello(struct rmig_tunnel *t)
{
	uint8_t b[TUN_HDR_LEN + TUN_HELLO_LEN];
	struct tun_hdr h;
	char why[160];
	int rc = t->link->ops->ctrl_recv(t->link, b, sizeof(b), TUN_CONNECT_TIMEOUT_MS);

	if (rc)
		return fail(t, rc, "%s", t->link->err[0] ? t->link->err : strerror(-rc));
	if (b[0] == 0x16 && b[1] == 3)
		return fail(t, -EPROTO,
			    "%s speaks TLS: give both ends the same --psk-file "
			    "(or --tls-creds)",
			    t->link->peer);
	if (tun_hdr_decode(b, &h, why, sizeof(why)) || h.type != TUN_HELLO ||
	    memcmp(b + TUN_HDR_LEN, hello_magic, 4))
		return fail(t, -EPROTO, "%s is not an rmig tunnel", t->link->peer);
	if (tun_get32(b + TUN_HDR_LEN + 4) != TUN_VERSION)
		return fail(t, -EPROTO, "%s speaks tunnel version %u, this is %u", t->link->peer,
			    tun_get32(b + TUN_HDR_LEN + 4), TUN_VERSION);
	return 0;
}

/* Run one connected tunnel to its end; every stream is closed after. */
static void run_connected(struct rmig_tunnel *t)
{
	pthread_t reader;

	t->link_dead = 0;
	t->dead_why[0] = 0;
	t->next_id = 0;
	if (pthread_create(&reader, NULL, reader_main, t)) {
		logf_(t, "cannot start the reader thread");
		return;
	}
	session_loop(t);
	t->link->ops->interrupt(t->link, RMIG_LINK_STOP_CTRL_RECV | RMIG_LINK_STOP_CTRL_SEND |
					     RMIG_LINK_STOP_DATA);
	pthread_join(reader, NULL);
	close_all_streams(t);
	if (!t->stopping)
		logf_(t, "link to %s lost (%s): every stream closed", t->link->peer, t->dead_why);
}

/* ---- the two roles ---- */

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

static int run_send(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	int rc;

	for (int i = 0; i < t->nch; i++)
		if ((rc = expose(t, &t->ch[i])))
			return rc;
	rc = tun_link_open(&t->sec, &t->link, t->err, sizeof(t->err));
	if (rc)
		return rc;
	rc = t->link->ops->connect_ctrl(t->link, host, port, TUN_CONNECT_TIMEOUT_MS);
	if (rc)
		rc = fail(t, rc, "%s", t->link->err);
	if (!rc)
		rc = send_hello(t) ? fail(t, -EIO, "%s", t->dead_why) : check_hello(t);
	if (!rc) {
		logf_(t, "connected to %s", t->link->peer);
		run_connected(t);
		rc = t->stopping ? 0 : fail(t, -ECONNRESET, "link lost: %s", t->dead_why);
	}
	rmig_link_destroy(t->link);
	t->link = NULL;
	return rc;
}

/* Who may connect: with a key, TLS proved it; without, loopback only. */
static int admit(struct rmig_tunnel *t)
{
	if (!tun_secured(&t->sec) && !t->link->peer_loopback)
		return fail(t, -EACCES,
			    "%s refused: without --psk-file or --tls-creds only "
			    "loopback peers are accepted",
			    t->link->peer);
	return check_hello(t);
}

static void serve_peer(struct rmig_tunnel *t)
{
	if (admit(t)) {
		logf_(t, "%s", t->err);
		return;
	}
	if (send_hello(t))
		return;
	logf_(t, "peer %s connected", t->link->peer);
	run_connected(t);
}

static int run_recv(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	int rc = tun_link_open(&t->sec, &t->listener, t->err, sizeof(t->err));

	if (rc)
		return rc;
	rc = t->listener->ops->listen(t->listener, host, &port);
	if (rc)
		return fail(t, rc, "%s", t->listener->err);
	logf_(t, "listening on %s:%u", host && *host ? host : "*", port);
	while (!t->stopping) {
		rc = rmig_link_accept(t->listener, 1000, &t->link);
		if (rc == -ETIMEDOUT || rc == -ECANCELED)
			continue;
		if (rc) {
			logf_(t, "accept: %s", t->listener->err);
			continue;
		}
		serve_peer(t);
		rmig_link_destroy(t->link);
		t->link = NULL;
	}
	return 0;
}

int rmig_tunnel_run(struct rmig_tunnel *t, const char *host, uint16_t port)
{
	if (!t->nch)
		return fail(t, -EINVAL, "no %s given",
			    t->role == RMIG_TUNNEL_SEND ? "--expose" : "--forward");
	return t->role == RMIG_TUNNEL_SEND ? run_send(t, host, port) : run_recv(t, host, port);
}
