/* control.c - the control socket's plumbing; see control.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "control.h"

#define CLIENT_TIMEOUT_S 2 /* a client that says nothing is dropped */

struct control {
	struct evconnlistener *listener;
	control_handler handler;
	void *arg;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(sa->sun_path)) {
		snprintf(err, errlen, "control socket path '%s' is empty or longer than %zu bytes",
			 path, sizeof(sa->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa->sun_path, path, strlen(path));
	return 0;
}

/* A non-blocking connection to sa: a listener whose backlog is full
 * answers EAGAIN at once instead of holding us. The fd, or -errno. */
static int connect_unix(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), rc;

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* Something at path already: a socket nobody answers on is ours to
 * replace; anything else is refused. */
static int clear_path(const char *path, const struct sockaddr_un *sa, char *err, size_t errlen)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "control socket %s: something that is not a socket is there",
			 path);
		return -EEXIST;
	}
	fd = connect_unix(sa);
	rc = fd < 0 ? fd : 0;
	if (fd >= 0)
		close(fd);
	if (rc != -ECONNREFUSED) { /* it answers, is busy, or is not ours to try */
		snprintf(err, errlen, "control socket %s: another rmig answers there (%s)", path,
			 rc ? strerror(-rc) : "connected");
		return -EADDRINUSE;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "control socket %s: a dead socket of another user is there",
			 path);
		return -EPERM;
	}
	return unlink(path) ? -errno : 0; /* dead: its rmig died without removing it */
}

/* One line in: answer it, close once the answer is out. */
static void on_read(struct bufferevent *bev, void *arg)
{
	struct control *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF);
	char reply[2048];

	if (!line && evbuffer_get_length(in) <= CONTROL_MAX_LINE)
		return; /* the rest of the line is still to come */
	if (!line || strlen(line) > CONTROL_MAX_LINE)
		snprintf(reply, sizeof(reply),
			 "{\"error\":\"a command is one line of at most %d bytes\"}",
			 CONTROL_MAX_LINE);
	else
		c->handler(c->arg, line, reply, sizeof(reply));
	free(line);
	bufferevent_disable(bev, EV_READ);
	evbuffer_add_printf(bufferevent_get_output(bev), "%s\n", reply);
}

static void on_written(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (!(bufferevent_get_enabled(bev) & EV_READ))
		bufferevent_free(bev);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev); /* EOF, error or the client's timeout */
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
		      void *arg)
{
	struct bufferevent *bev =
	    bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
	struct timeval tmo = { CLIENT_TIMEOUT_S, 0 };

	(void)sa;
	(void)len;
	if (!bev) {
		close(fd);
		return;
	}
	bufferevent_setcb(bev, on_read, on_written, on_event, arg);
	bufferevent_set_timeouts(bev, &tmo, &tmo);
	bufferevent_enable(bev, EV_READ);
}

int control_listen(struct event_base *base, const char *path, control_handler handler, void *arg,
		   struct control **out, char *err, size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	struct sockaddr_un sa;
	mode_t old;
	int rc;

	*err = 0;
	if (!c) {
		snprintf(err, errlen, "control socket %s: out of memory", path);
		return -ENOMEM;
	}
	rc = unix_addr(path, &sa, err, errlen);
	if (!rc)
		rc = clear_path(path, &sa, err, errlen);
	if (rc) {
		if (!*err)
			snprintf(err, errlen, "control socket %s: %s", path, strerror(-rc));
		free(c);
		return rc;
	}
	c->handler = handler;
	c->arg = arg;
	snprintf(c->path, sizeof(c->path), "%s", path);
	old = umask(0177); /* the socket is created 0600: it can cancel a migration */
	c->listener = evconnlistener_new_bind(base, on_accept, c,
					      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 64,
					      (struct sockaddr *)&sa, sizeof(sa));
	rc = c->listener ? 0 : -errno;
	umask(old);
	if (rc) {
		snprintf(err, errlen, "control socket %s: %s", path, strerror(-rc));
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void control_close(struct control *c)
{
	if (!c)
		return;
	evconnlistener_free(c->listener);
	unlink(c->path);
	free(c);
}

/* Wait for fd to be ready for events until deadline_ms (CLOCK_MONOTONIC). */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	struct timespec ts;
	struct pollfd p = { .fd = fd, .events = events };
	int64_t now;
	int n;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (now >= deadline_ms)
		return -ETIMEDOUT;
	n = poll(&p, 1, (int)(deadline_ms - now));
	return n > 0 ? 0 : n == 0 ? -ETIMEDOUT : -errno;
}

static void send_line(int fd, const char *line)
{
	size_t len = strlen(line), off = 0;

	while (off <= len) {
		ssize_t n = off < len ? send(fd, line + off, len - off, MSG_NOSIGNAL)
				      : send(fd, "\n", 1, MSG_NOSIGNAL);

		if (n <= 0)
			return;
		off += (size_t)n + (off == len);
	}
}

int control_ask(const char *path, const char *line, char *reply, size_t len, int timeout_ms,
		char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct timespec ts;
	size_t got = 0;
	int64_t deadline;
	int fd, rc;

	rc = unix_addr(path, &sa, err, errlen);
	if (rc)
		return rc;
	fd = connect_unix(&sa);
	if (fd < 0) {
		snprintf(err, errlen, "%s: no rmig answers there (%s)", path, strerror(-fd));
		return fd;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	/* A send the other end cut short (it refused a long line) is no
	 * death by SIGPIPE: its answer may be waiting to be read. */
	send_line(fd, line);
	while (!rc && got + 1 < len && !memchr(reply, '\n', got)) {
		ssize_t n;

		rc = wait_fd(fd, POLLIN, deadline);
		n = rc ? 0 : read(fd, reply + got, len - 1 - got);
		if (n < 0)
			rc = -errno;
		else if (n == 0 && !rc)
			break;
		got += n > 0 ? (size_t)n : 0;
	}
	close(fd);
	reply[got] = 0;
	if (!rc && !memchr(reply, '\n', got))
		rc = -EPROTO;
	if (rc) {
		snprintf(err, errlen, "%s: no answer (%s)", path, strerror(-rc));
		return rc;
	}
	*strchr(reply, '\n') = 0;
	return 0;
}
