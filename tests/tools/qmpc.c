/* qmpc - a minimal QMP client for the QEMU tests (tests/qemu/guest.sh,
 * tests/e2e/t_qemu_*.sh, scripts/bench_qemu.sh). No python on CI.
 *
 *   qmpc [-t SECONDS] SOCKET '{"execute":"query-status"}'
 *   qmpc [-t SECONDS] SOCKET COMMAND ['{"arg":...}']
 *
 * Connects to QEMU's QMP unix socket, reads the greeting, enters command mode
 * (qmp_capabilities), sends the one command (given whole, or as a command
 * name plus an optional arguments object) and prints its response, one line
 * of JSON, on stdout. Asynchronous events ({"event": ...}) are skipped.
 *
 * Exit 0 when the response is {"return": ...}; 1 when it is {"error": ...}
 * (its class and desc on stderr); 2 on usage errors, a socket that cannot be
 * reached, a broken connection or the timeout (-t, default 10 s, for the
 * whole exchange). A QMP server talks to one client at a time: while another
 * holds the monitor, the greeting does not come and this times out.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (16 * 1024 * 1024)

struct conn {
	int fd;
	const char *path;
	long long deadline_ms;
	char *buf; /* bytes read, not yet returned as lines */
	size_t len, cap;
	char *line; /* the last line returned */
};

static void usage(void)
{
	fprintf(stderr, "usage: qmpc [-t SECONDS] SOCKET '{\"execute\":...}'\n"
			"       qmpc [-t SECONDS] SOCKET COMMAND ['{ARGUMENTS}']\n");
	exit(2);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before the deadline, at least 0. */
static int left_ms(const struct conn *c)
{
	long long l = c->deadline_ms - now_ms();

	return l < 0 ? 0 : l > 60000 ? 60000 : (int)l;
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* Past the JSON string starting at p ('"'), or NULL if it is unterminated. */
static const char *skip_string(const char *p)
{
	for (p++; *p; p++) {
		if (*p == '\\') {
			if (!*++p)
				return NULL;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

/* Past the JSON value starting at p, or NULL if it is malformed. */
static const char *skip_value(const char *p)
{
	int depth = 0;

	p = skip_ws(p);
	do {
		if (*p == '"') {
			if (!(p = skip_string(p)))
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[') {
			depth++;
		} else if (*p == '}' || *p == ']') {
			if (--depth < 0)
				return NULL;
		} else if (!*p) {
			return NULL;
		} else if (depth == 0) { /* a scalar: up to a delimiter */
			while (*p && !strchr(",}] \t\r\n", *p))
				p++;
			return p;
		}
		p++;
	} while (depth > 0);
	return p;
}

/* The value of member `key` of the JSON object at obj, or NULL. Keys are
 * compared as written (QMP's keys have no escapes). */
static const char *find_key(const char *obj, const char *key)
{
	size_t klen = strlen(key);
	const char *p = skip_ws(obj), *k, *e;

	if (*p != '{')
		return NULL;
	p = skip_ws(p + 1);
	if (*p == '}')
		return NULL;
	for (;;) {
		if (*p != '"' || !(e = skip_string(p)))
			return NULL;
		k = p + 1;
		p = skip_ws(e);
		if (*p != ':')
			return NULL;
		p = skip_ws(p + 1);
		if ((size_t)(e - 1 - k) == klen && !memcmp(k, key, klen))
			return p;
		if (!(p = skip_value(p)))
			return NULL;
		p = skip_ws(p);
		if (*p != ',')
			return NULL;
		p = skip_ws(p + 1);
	}
}

/* Print the JSON string at p (without quotes, common escapes undone). */
static void print_string(FILE *f, const char *p)
{
	if (!p || *p != '"') {
		fputs("?", f);
		return;
	}
	for (p++; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1]) {
			p++;
			fputc(*p == 'n' ? '\n' : *p == 't' ? '\t' : *p, f);
		} else {
			fputc(*p, f);
		}
	}
}

static int send_all(struct conn *c, const char *s)
{
	size_t len = strlen(s), off = 0;

	while (off < len) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
		ssize_t w;
		int r = poll(&pfd, 1, left_ms(c));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "qmpc: %s: %s while sending\n", c->path,
				r ? strerror(errno) : "timed out");
			return -1;
		}
		w = send(c->fd, s + off, len - off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			fprintf(stderr, "qmpc: %s: send: %s\n", c->path, strerror(errno));
			return -1;
		}
		off += (size_t)w;
	}
	return 0;
}

/* The next line from the server (NUL-terminated, CR/LF removed, valid until
 * the next call), or NULL on EOF, error or timeout (reported). `what` names
 * what was awaited, for the messages. */
static char *read_line(struct conn *c, const char *what)
{
	char *nl;

	for (;;) {
		nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			char *l = realloc(c->line, n + 1);

			if (!l) {
				fprintf(stderr, "qmpc: out of memory\n");
				return NULL;
			}
			c->line = l;
			memcpy(l, c->buf, n);
			l[n] = 0;
			if (n && l[n - 1] == '\r')
				l[n - 1] = 0;
			c->len -= n + 1;
			memmove(c->buf, nl + 1, c->len);
			return l;
		}
		if (c->len == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 4096;
			char *b;

			if (cap > MAX_LINE) {
				fprintf(stderr, "qmpc: %s: a line longer than %d bytes\n", c->path,
					MAX_LINE);
				return NULL;
			}
			if (!(b = realloc(c->buf, cap))) {
				fprintf(stderr, "qmpc: out of memory\n");
				return NULL;
			}
			c->buf = b;
			c->cap = cap;
		}

		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int r = poll(&pfd, 1, left_ms(c));
		ssize_t got;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "qmpc: %s: poll: %s\n", c->path, strerror(errno));
			return NULL;
		}
		if (r == 0) {
			fprintf(stderr, "qmpc: %s: timed out waiting for %s%s\n", c->path, what,
				strcmp(what, "the greeting")
				    ? ""
				    : " (is another client connected to this monitor?)");
			return NULL;
		}
		got = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got <= 0) {
			fprintf(stderr, "qmpc: %s: connection %s while waiting for %s\n", c->path,
				got ? strerror(errno) : "closed", what);
			return NULL;
		}
		c->len += (size_t)got;
	}
}

/* The next line that is not an event, or NULL. */
static char *read_response(struct conn *c, const char *what)
{
	char *l;

	while ((l = read_line(c, what)))
		if (*skip_ws(l) && !find_key(l, "event"))
			return l;
	return NULL;
}

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "qmpc: %s: socket path too long\n", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "qmpc: socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "qmpc: %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* The command to send, ending in a newline: argv's JSON as given, or built
 * from a command name and optional arguments. NULL on a usage error. */
static char *build_command(const char *cmd, const char *args)
{
	char *out;
	int n;

	if (*skip_ws(cmd) == '{') {
		if (args)
			return NULL;
		n = asprintf(&out, "%s\n", cmd);
	} else {
		for (const char *p = cmd; *p; p++)
			if (!strchr(
				"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
				*p))
				return NULL;
		if (!*cmd || (args && *skip_ws(args) != '{'))
			return NULL;
		if (args)
			n = asprintf(&out, "{\"execute\":\"%s\",\"arguments\":%s}\n", cmd, args);
		else
			n = asprintf(&out, "{\"execute\":\"%s\"}\n", cmd);
	}
	return n < 0 ? NULL : out;
}

/* The whole exchange: the exit code (0 return, 1 error, 2 anything else). */
static int exchange(struct conn *c, const char *cmd)
{
	const char *v;
	char *l;

	if ((c->fd = connect_unix(c->path)) < 0)
		return 2;
	if (!(l = read_response(c, "the greeting")))
		return 2;
	if (!find_key(l, "QMP")) {
		fprintf(stderr, "qmpc: %s: not a QMP greeting: %.200s\n", c->path, l);
		return 2;
	}
	if (send_all(c, "{\"execute\":\"qmp_capabilities\"}\n"))
		return 2;
	if (!(l = read_response(c, "the qmp_capabilities response")))
		return 2;
	if (!find_key(l, "return")) {
		fprintf(stderr, "qmpc: %s: qmp_capabilities refused: %.200s\n", c->path, l);
		return 2;
	}
	if (send_all(c, cmd))
		return 2;
	if (!(l = read_response(c, "the response")))
		return 2;
	printf("%s\n", l);
	if (fflush(stdout)) {
		fprintf(stderr, "qmpc: stdout: %s\n", strerror(errno));
		return 2;
	}
	if (find_key(l, "return"))
		return 0;
	if ((v = find_key(l, "error"))) {
		fputs("qmpc: error: ", stderr);
		print_string(stderr, find_key(v, "class"));
		fputs(": ", stderr);
		print_string(stderr, find_key(v, "desc"));
		fputc('\n', stderr);
		return 1;
	}
	fprintf(stderr, "qmpc: %s: unexpected response: %.200s\n", c->path, l);
	return 2;
}

int main(int argc, char **argv)
{
	struct conn c = { .fd = -1 };
	double timeout_s = 10;
	char *cmd, *end;
	int opt, rc;

	while ((opt = getopt(argc, argv, "+t:h")) != -1) {
		switch (opt) {
		case 't':
			timeout_s = strtod(optarg, &end);
			if (*end || end == optarg || timeout_s <= 0 || timeout_s > 3600)
				usage();
			break;
		default: usage();
		}
	}
	if (argc - optind < 2 || argc - optind > 3)
		usage();
	c.path = argv[optind];
	cmd = build_command(argv[optind + 1], argc - optind == 3 ? argv[optind + 2] : NULL);
	if (!cmd)
		usage();
	c.deadline_ms = now_ms() + (long long)(timeout_s * 1000);
	rc = exchange(&c, cmd);
	if (c.fd >= 0)
		close(c.fd);
	free(c.buf);
	free(c.line);
	free(cmd);
	return rc;
}
