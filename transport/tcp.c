/* tcp.c - the TCP link: one control stream plus N data streams.
 *
 * Sockets are non-blocking and every wait is a poll() with the caller's
 * timeout, so a silent peer is noticed and interrupt() (a shutdown() of the
 * sockets) wakes any thread blocked in an op. Data is sent with sendmsg()
 * straight from the caller's iovecs (guest memory) and received with readv()
 * straight into them: no intermediate copies.
 */
#include "link.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TCP_MAX_IOV 160
/* Longest single poll(): how late an interrupt() not backed by a shutdown()
 * (a control receive, a connect) is noticed. Cancel promises 100 ms. */
#define SLICE_MS 50

struct tcp_link {
	int listen_fd;
	int ctrl_fd;
	int chan_fd[RMIG_LINK_MAX_CHANNELS];
	atomic_uint nchan;
	struct sockaddr_storage peer_addr; /* source: where to connect channels */
	socklen_t peer_addrlen;
};

static struct tcp_link *tcp(struct rmig_link *l)
{
	return l->priv;
}

static int tcp_create(struct rmig_link *l)
{
	struct tcp_link *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->listen_fd = -1;
	t->ctrl_fd = -1;
	for (int i = 0; i < RMIG_LINK_MAX_CHANNELS; i++)
		t->chan_fd[i] = -1;
	l->priv = t;
	return 0;
}

static void close_session(struct tcp_link *t)
{
	if (t->ctrl_fd >= 0)
		close(t->ctrl_fd);
	t->ctrl_fd = -1;
	for (unsigned i = 0; i < RMIG_LINK_MAX_CHANNELS; i++) {
		if (t->chan_fd[i] >= 0)
			close(t->chan_fd[i]);
		t->chan_fd[i] = -1;
	}
	atomic_store(&t->nchan, 0);
}

static void tcp_destroy(struct rmig_link *l)
{
	struct tcp_link *t = tcp(l);

	if (!t)
		return;
	close_session(t);
	if (t->listen_fd >= 0)
		close(t->listen_fd);
	free(t);
	l->priv = NULL;
}

static void tcp_close_session(struct rmig_link *l)
{
	close_session(tcp(l));
	atomic_store(&l->interrupted, 0);
}

static void tune_socket(int fd, int nodelay)
{
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
}

/* Wait until fd is ready for events, the deadline passes or we are
 * interrupted. */
static int stopped(struct rmig_link *l, unsigned op)
{
	return (atomic_load(&l->interrupted) & op) != 0;
}

static int wait_fd(struct rmig_link *l, int fd, short events, int timeout_ms, unsigned op)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int rc;

	for (;;) {
		int slice = timeout_ms >= 0 && timeout_ms < SLICE_MS ? timeout_ms : SLICE_MS;

		if (stopped(l, op))
			return -ECANCELED;
		rc = poll(&pfd, 1, slice);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
		if (rc == 0 && timeout_ms >= 0) {
			timeout_ms -= SLICE_MS;
			if (timeout_ms <= 0)
				return -ETIMEDOUT;
		}
	}
}

static int tcp_listen(struct rmig_link *l, const char *host, uint16_t *port)
{
	struct tcp_link *t = tcp(l);
	struct sockaddr_storage addr, ss;
	socklen_t alen, sl = sizeof(ss);
	int fd = -1, one = 1, rc;

	rc = rmig_link_resolve(l, host, *port, 1, &addr, &alen);
	if (rc)
		return rc;
	fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		rmig_link_err(l, "socket: %s", strerror(errno));
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&addr, alen) || listen(fd, 1024)) {
		rc = -errno;
		rmig_link_err(l, "cannot listen on %s:%u: %s", host, *port, strerror(errno));
		goto out;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						       : ((struct sockaddr_in *)&ss)->sin_port);
	t->listen_fd = fd;
	fd = -1;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

static int tcp_accept(struct rmig_link *l, int timeout_ms, struct rmig_link *conn)
{
	struct tcp_link *t = tcp(l);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int rc, fd;

	for (;;) {
		rc = wait_fd(l, t->listen_fd, POLLIN, timeout_ms, RMIG_LINK_STOP_CTRL_RECV);
		if (rc == -ETIMEDOUT) {
			rmig_link_err(l, "no peer connected within %d ms", timeout_ms);
			return rc;
		}
		if (rc)
			return rc;
		fd = accept4(t->listen_fd, (struct sockaddr *)&ss, &sl,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		/* Out of descriptors (a flood): the caller's limits will free some. */
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
			rc = -errno;
			rmig_link_err(l, "accept: %s", strerror(errno));
			return rc;
		}
	}
	rmig_link_set_peer(conn, (struct sockaddr *)&ss);
	tune_socket(fd, 1);
	tcp(conn)->ctrl_fd = fd;
	return 0;
}

static int tcp_adopt_channel(struct rmig_link *l, struct rmig_link *conn, unsigned chan, int *node)
{
	struct tcp_link *t = tcp(l), *c = tcp(conn);

	if (chan >= RMIG_LINK_MAX_CHANNELS) {
		rmig_link_err(l, "no data channel %u: at most %d", chan, RMIG_LINK_MAX_CHANNELS);
		return -EINVAL;
	}
	if (t->chan_fd[chan] >= 0) {
		rmig_link_err(l, "data channel %u is already connected", chan);
		return -EEXIST;
	}
	tune_socket(c->ctrl_fd, 1); /* as the sender's end: see tcp_connect_channel */
	t->chan_fd[chan] = c->ctrl_fd;
	c->ctrl_fd = -1;
	if (chan >= atomic_load(&t->nchan))
		atomic_store(&t->nchan, chan + 1);
	*node = -1; /* TCP has no per-node buffers: the kernel's are where they are */
	return 0;
}

/* Connect, giving up when any of `stop` is interrupted. */
static int connect_one(struct rmig_link *l, const struct sockaddr *sa, socklen_t sl, int timeout_ms,
		       unsigned stop, int *out)
{
	int fd, rc, soerr = 0;
	socklen_t el = sizeof(soerr);

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rmig_link_err(l, "socket: %s", strerror(errno));
		return -errno;
	}
	if (connect(fd, sa, sl) && errno != EINPROGRESS) {
		rc = -errno;
		goto fail;
	}
	rc = wait_fd(l, fd, POLLOUT, timeout_ms, stop);
	if (rc)
		goto fail;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el);
	if (soerr) {
		rc = -soerr;
		goto fail;
	}
	*out = fd;
	return 0;
fail:
	rmig_link_err(l, "cannot connect to %s: %s", l->peer, strerror(-rc));
	close(fd);
	return rc;
}

static int tcp_connect_ctrl(struct rmig_link *l, const char *host, uint16_t port, int timeout_ms)
{
	struct tcp_link *t = tcp(l);
	int rc;

	snprintf(l->peer, sizeof(l->peer), "%s:%u", host, port);
	rc = rmig_link_resolve(l, host, port, 0, &t->peer_addr, &t->peer_addrlen);
	if (rc)
		return rc;
	/* A cancel stops control receives: a connect is one too. */
	rc = connect_one(l, (struct sockaddr *)&t->peer_addr, t->peer_addrlen, timeout_ms,
			 RMIG_LINK_STOP_CTRL_SEND | RMIG_LINK_STOP_CTRL_RECV, &t->ctrl_fd);
	if (rc == 0) {
		rmig_link_set_peer(l, (struct sockaddr *)&t->peer_addr);
		tune_socket(t->ctrl_fd, 1);
	}
	return rc;
}

static int tcp_connect_channel(struct rmig_link *l, int timeout_ms, int node, unsigned *chan)
{
	struct tcp_link *t = tcp(l);
	unsigned n = atomic_load(&t->nchan);
	int fd, rc;

	(void)node; /* the kernel's socket buffers are not ours to place */
	if (n >= RMIG_LINK_MAX_CHANNELS) {
		rmig_link_err(l, "too many channels");
		return -ENOSPC;
	}
	rc = connect_one(l, (struct sockaddr *)&t->peer_addr, t->peer_addrlen, timeout_ms,
			 RMIG_LINK_STOP_CTRL_SEND | RMIG_LINK_STOP_DATA, &fd);
	if (rc)
		return rc;
	/* Frames go out whole (one writev each, most of a MiB): Nagle gains
	 * nothing, and held a round's last partial segment until the peer's
	 * delayed ACK, 40 ms, the pause's last round included (1 pause in 10
	 * took 42-49 ms for 23 pages). */
	tune_socket(fd, 1);
	t->chan_fd[n] = fd;
	atomic_store(&t->nchan, n + 1);
	*chan = n;
	return 0;
}

/* Copy iov so that partial transfers can advance it. */
static int iov_copy(struct rmig_link *l, struct iovec *dst, const struct iovec *src, int n)
{
	if (n <= 0 || n > TCP_MAX_IOV) {
		rmig_link_err(l, "%d iovecs, at most %d", n, TCP_MAX_IOV);
		return -EINVAL;
	}
	memcpy(dst, src, sizeof(*src) * (size_t)n);
	return 0;
}

static void iov_advance(struct iovec **iov, int *n, size_t done)
{
	while (*n > 0 && done >= (*iov)->iov_len) {
		done -= (*iov)->iov_len;
		(*iov)++;
		(*n)--;
	}
	if (*n > 0) {
		(*iov)->iov_base = (char *)(*iov)->iov_base + done;
		(*iov)->iov_len -= done;
	}
	/* Skip empty tail entries so "n > 0" means bytes remain. */
	while (*n > 0 && (*iov)->iov_len == 0) {
		(*iov)++;
		(*n)--;
	}
}

static int io_error(struct rmig_link *l, int rc, const char *what, int timeout_ms)
{
	if (rc == -ECANCELED)
		rmig_link_err(l, "%s interrupted", what);
	else if (rc == -ETIMEDOUT)
		rmig_link_err(l, "peer %s silent for %d ms (%s)", l->peer, timeout_ms, what);
	else if (rc == -ECONNRESET || rc == -EPIPE)
		rmig_link_err(l, "lost peer %s: connection closed (%s)", l->peer, what);
	else
		rmig_link_err(l, "lost peer %s: %s (%s)", l->peer, strerror(-rc), what);
	return rc;
}

static int send_all(struct rmig_link *l, int fd, const struct iovec *src, int n, int timeout_ms,
		    unsigned op, const char *what)
{
	struct iovec buf[TCP_MAX_IOV], *iov = buf;
	struct msghdr mh = { 0 };
	int rc = iov_copy(l, buf, src, n);

	if (rc)
		return rc;
	iov_advance(&iov, &n, 0);
	while (n > 0) {
		ssize_t w;

		if (stopped(l, op))
			return io_error(l, -ECANCELED, what, timeout_ms);
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)n;
		w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w >= 0) {
			iov_advance(&iov, &n, (size_t)w);
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return io_error(l, -errno, what, timeout_ms);
		rc = wait_fd(l, fd, POLLOUT, timeout_ms, op);
		if (rc)
			return io_error(l, rc, what, timeout_ms);
	}
	return 0;
}

static int recv_all(struct rmig_link *l, int fd, const struct iovec *src, int n, int timeout_ms,
		    unsigned op, const char *what)
{
	struct iovec buf[TCP_MAX_IOV], *iov = buf;
	int rc = iov_copy(l, buf, src, n);

	if (rc)
		return rc;
	iov_advance(&iov, &n, 0);
	while (n > 0) {
		ssize_t r;

		if (stopped(l, op))
			return io_error(l, -ECANCELED, what, timeout_ms);
		r = readv(fd, iov, n);
		if (r > 0) {
			iov_advance(&iov, &n, (size_t)r);
			continue;
		}
		if (r == 0)
			return io_error(l, -ECONNRESET, what, timeout_ms);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return io_error(l, -errno, what, timeout_ms);
		rc = wait_fd(l, fd, POLLIN, timeout_ms, op);
		if (rc)
			return io_error(l, rc, what, timeout_ms);
	}
	return 0;
}

/* At least min bytes into buf, at most len: one read once min are in. */
static int recv_some(struct rmig_link *l, int fd, uint8_t *buf, size_t min, size_t len,
		     int timeout_ms, unsigned op, const char *what)
{
	size_t got = 0;

	if (min < 1 || min > len || len > INT_MAX) {
		rmig_link_err(l, "%s: bad length (%zu..%zu bytes)", what, min, len);
		return -EINVAL;
	}
	for (;;) {
		ssize_t r;
		int rc;

		if (stopped(l, op))
			return io_error(l, -ECANCELED, what, timeout_ms);
		r = read(fd, buf + got, len - got);
		if (r > 0 && (got += (size_t)r) >= min)
			return (int)got;
		if (r > 0)
			continue;
		if (r == 0)
			return io_error(l, -ECONNRESET, what, timeout_ms);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return io_error(l, -errno, what, timeout_ms);
		rc = wait_fd(l, fd, POLLIN, timeout_ms, op);
		if (rc)
			return io_error(l, rc, what, timeout_ms);
	}
}

static int tcp_ctrl_send(struct rmig_link *l, const struct iovec *iov, int iovcnt, int timeout_ms)
{
	return send_all(l, tcp(l)->ctrl_fd, iov, iovcnt, timeout_ms, RMIG_LINK_STOP_CTRL_SEND,
			"control send");
}

static int tcp_ctrl_recv(struct rmig_link *l, void *buf, size_t len, int timeout_ms)
{
	struct iovec iov = { buf, len };

	return recv_all(l, tcp(l)->ctrl_fd, &iov, 1, timeout_ms, RMIG_LINK_STOP_CTRL_RECV,
			"control receive");
}

static int chan_fd(struct rmig_link *l, unsigned chan)
{
	struct tcp_link *t = tcp(l);

	if (chan >= atomic_load(&t->nchan) || t->chan_fd[chan] < 0) {
		rmig_link_err(l, "no data channel %u", chan);
		return -EINVAL;
	}
	return t->chan_fd[chan];
}

static int tcp_chan_send(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			 int timeout_ms)
{
	int fd = chan_fd(l, chan);

	return fd < 0 ? fd
		      : send_all(l, fd, iov, iovcnt, timeout_ms, RMIG_LINK_STOP_DATA, "data send");
}

static int tcp_chan_recv(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			 int timeout_ms)
{
	int fd = chan_fd(l, chan);

	return fd < 0
		   ? fd
		   : recv_all(l, fd, iov, iovcnt, timeout_ms, RMIG_LINK_STOP_DATA, "data receive");
}

static int tcp_recv_some(struct rmig_link *l, int chan, void *buf, size_t min, size_t len,
			 int timeout_ms)
{
	int fd = chan < 0 ? tcp(l)->ctrl_fd : chan_fd(l, (unsigned)chan);

	if (chan < 0 && fd < 0) {
		rmig_link_err(l, "no control stream");
		return -ENOTCONN;
	}
	if (fd < 0)
		return fd;
	return chan < 0 ? recv_some(l, fd, buf, min, len, timeout_ms, RMIG_LINK_STOP_CTRL_RECV,
				    "control receive")
			: recv_some(l, fd, buf, min, len, timeout_ms, RMIG_LINK_STOP_DATA,
				    "data receive");
}

static void tcp_interrupt(struct rmig_link *l, unsigned flags)
{
	struct tcp_link *t = tcp(l);
	unsigned n = atomic_load(&t->nchan);

	atomic_fetch_or(&l->interrupted, flags);
	/* shutdown() wakes threads blocked in poll() on these sockets; the
	 * descriptors stay open until destroy so no fd number is reused. A
	 * control receive notices the flag within one poll slice, and
	 * the control stream stays usable for sending an ABORT. */
	if (flags & RMIG_LINK_STOP_DATA)
		for (unsigned i = 0; i < n; i++)
			if (t->chan_fd[i] >= 0)
				shutdown(t->chan_fd[i], SHUT_RDWR);
	if ((flags & RMIG_LINK_STOP_CTRL_SEND) && t->ctrl_fd >= 0)
		shutdown(t->ctrl_fd, SHUT_RDWR);
}

static int tcp_stream_fd(struct rmig_link *l, int chan)
{
	struct tcp_link *t = tcp(l);

	if (chan < 0)
		return t->ctrl_fd >= 0 ? t->ctrl_fd : -ENOTCONN;
	return chan < RMIG_LINK_MAX_CHANNELS && t->chan_fd[chan] >= 0 ? t->chan_fd[chan] : -ENOTCONN;
}

/* No set_option: the tcp link takes no options, and the registry refuses
 * any given to it. */
const struct rmig_link_ops rmig_tcp_link_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "tcp",
	.auto_rank = 2, /* auto's last resort, and the default failover link */
	.create = tcp_create,
	.destroy = tcp_destroy,
	.listen = tcp_listen,
	.accept = tcp_accept,
	.adopt_channel = tcp_adopt_channel,
	.connect_ctrl = tcp_connect_ctrl,
	.connect_channel = tcp_connect_channel,
	.ctrl_send = tcp_ctrl_send,
	.ctrl_recv = tcp_ctrl_recv,
	.chan_send = tcp_chan_send,
	.chan_recv = tcp_chan_recv,
	.close_session = tcp_close_session,
	.interrupt = tcp_interrupt,
	.stream_fd = tcp_stream_fd,
	.recv_some = tcp_recv_some,
};
