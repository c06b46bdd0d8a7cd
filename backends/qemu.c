/* qemu.c - a running QEMU, driven over QMP, as rmig's guest.
 *
 * QEMU migrates itself: it has its own pre-copy, dirty tracking and device
 * state. rmig becomes its migration channel (the stream ops of
 * struct rmig_backend_ops): on the source rmig hands QEMU one end of a
 * socket pair (getfd + migrate "fd:"), carries what QEMU writes over the
 * chosen link, and on the destination feeds it to a QEMU started with
 * "-S -incoming defer" (migrate-incoming "fd:"). rmig's commit maps onto
 * QEMU like this:
 *  - the source runs with pause-before-switchover: QEMU stops the guest and
 *    waits (status pre-switchover) until rmig lets it send the rest, so the
 *    pause is where rmig measures its downtime from;
 *  - the destination QEMU loads everything but, started with -S, stays
 *    paused until rmig's GO, when it gets "cont";
 *  - a rollback cancels the source's migration and "cont"s its guest; a
 *    destination QEMU that was fed a guest and never told to run is quit,
 *    so that the guest cannot run twice.
 * Both QEMUs get the "events" capability: their MIGRATION events wake rmig
 * the moment the state changes (the pause, the end of loading) instead of
 * a poll's later; every wait still re-queries now and then, so a missed
 * event only costs time.
 * Spec: qemu:qmp=PATH[,timeout=MS][,disks=all|ID+ID...]; the disks are
 * qemu_disk.c's. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "qemu_internal.h"
#include "rmig_backend.h"

#define QMP_LINE_MAX (1u << 20)
#define FD_NAME "rmig-migration"
#define SOCKET_BUFFER (8 << 20)
#define LOAD_WAIT_MS 60000 /* destination: QEMU loading the end of the stream */
#define USAGE "qemu:qmp=PATH[,timeout=MS][,disks=all|ID+ID...]"
#define LOAD_POLL_MS 100 /* destination: query-migrate again without an event */

struct qemu {
	int qmp;	 /* the QMP socket */
	int fd;		 /* our end of the migration socket pair, or -1 */
	unsigned tmo_ms; /* one QMP command's answer */
	int incoming;	 /* destination: migrate-incoming was issued */
	int started;	 /* destination: cont was issued */
	int resumed;	 /* RESUME was the last of RESUME and STOP seen */
	json_int_t seq;	 /* id of the last command: a late answer is told apart */
	char *buf;	 /* QMP bytes read but not consumed */
	size_t len, cap;
	char path[108];

	struct qemu_disks *disks; /* disks=: qemu_disk.c's */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send one command line; with pass_fd >= 0 the fd travels with it
 * (SCM_RIGHTS), as getfd wants. */
static int qmp_send(struct rmig_backend *be, const char *line, int pass_fd)
{
	struct qemu *q = be->priv;
	size_t len = strlen(line), off = 0;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;

	while (off < len) {
		struct iovec iov = { (char *)line + off, len - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (pass_fd >= 0 && off == 0) {
			memset(&ctl, 0, sizeof(ctl));
			mh.msg_control = ctl.buf;
			mh.msg_controllen = sizeof(ctl.buf);
			ctl.h.cmsg_level = SOL_SOCKET;
			ctl.h.cmsg_type = SCM_RIGHTS;
			ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(&ctl.h), &pass_fd, sizeof(int));
		}
		n = sendmsg(q->qmp, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rmig_backend_err(be, "qemu: QMP %s: %s", q->path, strerror(errno));
			return -errno;
		}
		off += (size_t)n;
	}
	return 0;
}

/* The next JSON line from QEMU, parsed. Waits until end (now_ms()) or
 * until wake_fd (if >= 0) is readable: then -ETIMEDOUT without a message,
 * the caller says what it waited for. */
static int qmp_next(struct rmig_backend *be, int64_t end, int wake_fd, json_t **out)
{
	struct qemu *q = be->priv;
	json_error_t jerr;

	for (;;) {
		char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
		struct pollfd pfd[2] = { { .fd = q->qmp, .events = POLLIN },
					 { .fd = wake_fd, .events = POLLIN } };
		int64_t left;
		ssize_t n;
		int ready;

		if (nl) {
			size_t line = (size_t)(nl - q->buf) + 1;

			*out = json_loadb(q->buf, line, 0, &jerr);
			memmove(q->buf, q->buf + line, q->len - line);
			q->len -= line;
			if (!*out) {
				rmig_backend_err(be, "qemu: QMP sent bad JSON: %s", jerr.text);
				return -EBADMSG;
			}
			return 0;
		}
		if (q->len == q->cap) {
			size_t cap = q->cap ? q->cap * 2 : 4096;
			char *nb = cap <= QMP_LINE_MAX ? realloc(q->buf, cap) : NULL;

			if (!nb) {
				rmig_backend_err(be, "qemu: QMP line longer than %u bytes",
						 QMP_LINE_MAX);
				return -EMSGSIZE;
			}
			q->buf = nb;
			q->cap = cap;
		}
		left = end - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		ready = poll(pfd, 2, (int)left);
		if (ready < 0 && errno != EINTR) {
			int e = errno;

			rmig_backend_err(be, "qemu: poll: %s", strerror(e));
			return -e;
		}
		if (ready <= 0)
			continue; /* the deadline is checked above */
		if (pfd[1].revents)
			return -ETIMEDOUT;
		n = read(q->qmp, q->buf + q->len, q->cap - q->len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			rmig_backend_err(be, "qemu: QMP %s: %s", q->path,
					 n ? strerror(errno) : "QEMU closed the connection");
			return n ? -errno : -ECONNRESET;
		}
		q->len += (size_t)n;
	}
}

/* The next JSON line from QEMU, parsed; waits up to q->tmo_ms. */
static int qmp_read(struct rmig_backend *be, json_t **out)
{
	struct qemu *q = be->priv;
	int rc = qmp_next(be, now_ms() + q->tmo_ms, -1, out);

	if (rc == -ETIMEDOUT)
		rmig_backend_err(be, "qemu: QMP %s did not answer within %u ms", q->path,
				 q->tmo_ms);
	return rc;
}

/* Note what an event says; 1 if it is news about the migration. */
static int note_event(struct qemu *q, json_t *msg)
{
	const char *ev = json_string_value(json_object_get(msg, "event"));

	if (!ev)
		return 0;
	if (!strcmp(ev, "RESUME") || !strcmp(ev, "STOP"))
		q->resumed = !strcmp(ev, "RESUME"); /* the later one counts */
	return !strcmp(ev, "MIGRATION") || !strcmp(ev, "MIGRATION_PASS");
}

/* Wait without asking QEMU anything (after the switch-over it may hold the
 * lock its monitor needs) for a migration event, at most timeout_ms or
 * until wake_fd is readable: 1 for an event, 0 when the wait ended
 * without one, or a negative errno. */
static int qmp_wait_event(struct rmig_backend *be, int wake_fd, unsigned timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	for (;;) {
		json_t *msg = NULL;
		int rc = qmp_next(be, end, wake_fd, &msg), news;

		if (rc)
			return rc == -ETIMEDOUT ? 0 : rc;
		/* Anything else is another event or a late answer: drop it. */
		news = note_event(be->priv, msg);
		json_decref(msg);
		if (news)
			return 1;
	}
}

/* Run a command; *ret (if wanted) gets its "return" value, owned by the
 * caller. QEMU's "error" becomes -EIO with its description. */
static int qmp_run(struct rmig_backend *be, json_t *cmd, int pass_fd, json_t **ret)
{
	struct qemu *q = be->priv;
	json_int_t id = ++q->seq;
	char *line = NULL;
	const char *what = json_string_value(json_object_get(cmd, "execute"));
	json_t *reply = NULL;
	int rc;

	if (ret)
		*ret = NULL;
	if (cmd && !json_object_set_new(cmd, "id", json_integer(id)))
		line = json_dumps(cmd, JSON_COMPACT);
	if (!line) {
		rc = -ENOMEM;
		goto out;
	}
	rc = qmp_send(be, line, pass_fd);
	if (!rc)
		rc = qmp_send(be, "\n", -1);
	while (!rc) {
		json_t *err;

		rc = qmp_read(be, &reply);
		if (rc)
			break;
		/* Events, and the answer to a command that timed out before. */
		note_event(q, reply);
		if (json_integer_value(json_object_get(reply, "id")) != id) {
			json_decref(reply);
			reply = NULL;
			continue;
		}
		err = json_object_get(reply, "error");
		if (err) {
			rmig_backend_err(be, "qemu: %s: %s", what,
					 json_string_value(json_object_get(err, "desc")));
			rc = -EIO;
			break;
		}
		if (ret)
			*ret = json_incref(json_object_get(reply, "return"));
		break;
	}
out:
	json_decref(reply);
	json_decref(cmd);
	free(line);
	return rc;
}

int rmig_qemu_qmp(struct rmig_backend *be, json_t *cmd, json_t **ret)
{
	return qmp_run(be, cmd, -1, ret);
}

struct qemu_disks **rmig_qemu_disks(struct rmig_backend *be)
{
	return &((struct qemu *)be->priv)->disks;
}

/* A command without arguments, its answer dropped. */
static int qmp_simple(struct rmig_backend *be, const char *execute)
{
	return qmp_run(be, json_pack("{s:s}", "execute", execute), -1, NULL);
}

/* QEMU's run state ("running", "paused", "inmigrate", "postmigrate", ...). */
static int query_status(struct rmig_backend *be, char *status, size_t len, int *running)
{
	json_t *ret;
	int rc = qmp_run(be, json_pack("{s:s}", "execute", "query-status"), -1, &ret);

	if (rc)
		return rc;
	snprintf(status, len, "%s", json_string_value(json_object_get(ret, "status")) ?: "?");
	*running = json_is_true(json_object_get(ret, "running"));
	json_decref(ret);
	return 0;
}

/* query-migrate's status ("none" before any migration). */
static int migrate_status(struct rmig_backend *be, char *status, size_t len, json_t **info)
{
	json_t *ret;
	int rc = qmp_run(be, json_pack("{s:s}", "execute", "query-migrate"), -1, &ret);

	if (rc)
		return rc;
	snprintf(status, len, "%s", json_string_value(json_object_get(ret, "status")) ?: "none");
	if (info)
		*info = ret;
	else
		json_decref(ret);
	return 0;
}

static int connect_qmp(struct rmig_backend *be, struct qemu *q)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	json_t *greeting = NULL;
	int rc;

	if (strlen(q->path) >= sizeof(sa.sun_path)) {
		rmig_backend_err(be, "qemu: QMP socket path too long");
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, q->path);
	q->qmp = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->qmp < 0 || connect(q->qmp, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		rmig_backend_err(be,
				 "qemu: cannot connect to QMP at %s: %s (start QEMU with -qmp "
				 "unix:%s,server=on,wait=off)",
				 q->path, strerror(errno), q->path);
		return rc;
	}
	rc = qmp_read(be, &greeting);
	if (!rc && !json_object_get(greeting, "QMP")) {
		rmig_backend_err(be, "qemu: %s does not speak QMP", q->path);
		rc = -EPROTO;
	}
	json_decref(greeting);
	if (!rc)
		rc = qmp_simple(be, "qmp_capabilities");
	return rc;
}

static int qemu_arg(struct rmig_backend *be, void *state, const char *key, const char *val)
{
	struct qemu *q = state;
	uint64_t v;
	int rc;

	if (strcmp(key, "qmp") == 0) {
		if (!*val || strlen(val) >= sizeof(q->path))
			return -EINVAL;
		snprintf(q->path, sizeof(q->path), "%s", val);
		return 0;
	}
	if (strcmp(key, "timeout") == 0) {
		rc = rmig_backend_arg_u64(val, 10, 1, 600000, &v);
		if (rc)
			rmig_backend_err(be, "qemu: bad timeout '%s' (milliseconds)", val);
		q->tmo_ms = (unsigned)v;
		return rc;
	}
	if (strcmp(key, "disks") == 0)
		return rmig_qemu_disk_arg(be, val);
	return -ENOENT;
}

static int parse_args(struct rmig_backend *be, struct qemu *q, const char *args)
{
	int rc = rmig_backend_args_each(be, args, USAGE, qemu_arg, q);

	if (!rc && !q->path[0]) {
		rmig_backend_err(be,
				 "qemu: needs qmp=PATH (the QMP socket of the QEMU to migrate)");
		rc = -EINVAL;
	}
	return rc;
}

static int qemu_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct qemu *q = calloc(1, sizeof(*q));
	char status[32];
	int rc, running;

	if (!q)
		return -ENOMEM;
	q->qmp = q->fd = -1;
	q->tmo_ms = 10000;
	be->priv = q;
	rc = parse_args(be, q, args);
	if (!rc)
		rc = connect_qmp(be, q);
	if (!rc)
		rc = query_status(be, status, sizeof(status), &running);
	if (!rc && role == RMIG_ROLE_DEST && strcmp(status, "inmigrate")) {
		rmig_backend_err(be,
				 "qemu: the destination QEMU is '%s', not waiting for a migration: "
				 "start it with -S -incoming defer",
				 status);
		rc = -EINVAL;
	}
	return rc; /* on error the registry calls destroy */
}

static void qemu_destroy(struct rmig_backend *be)
{
	struct qemu *q = be->priv;

	if (!q)
		return;
	rmig_qemu_disk_destroy(be);
	/* A destination QEMU fed a guest that it was never told to run holds a
	 * copy that must not run: the source runs it (or decides). */
	if (be->role == RMIG_ROLE_DEST && q->incoming && !q->started && q->qmp >= 0)
		qmp_simple(be, "quit");
	if (q->fd >= 0)
		close(q->fd);
	if (q->qmp >= 0)
		close(q->qmp);
	free(q->buf);
	free(q);
	be->priv = NULL;
}

static int qemu_get_regions(struct rmig_backend *be, const struct rmig_region **regions,
			    size_t *count)
{
	(void)be;
	*regions = NULL; /* the guest travels in QEMU's own stream */
	*count = 0;
	return 0;
}

/* Hand QEMU one end of a fresh socket pair under FD_NAME; keep the other. */
static int pass_socket(struct rmig_backend *be)
{
	struct qemu *q = be->priv;
	int sv[2], rc;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		rmig_backend_err(be, "qemu: socketpair: %s", strerror(errno));
		return -errno;
	}
	/* QEMU's bandwidth estimate, and so when it dares to stop the guest,
	 * is what it can push into this socket: let a few MiB queue up rather
	 * than the default ~200 KiB (best effort: capped by wmem_max). */
	for (int i = 0; i < 2; i++) {
		int bytes = SOCKET_BUFFER;

		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
	}
	rc = qmp_run(be,
		     json_pack("{s:s,s:{s:s}}", "execute", "getfd", "arguments", "fdname", FD_NAME),
		     sv[1], NULL);
	close(sv[1]); /* QEMU has its own copy now */
	if (rc) {
		close(sv[0]);
		return rc;
	}
	q->fd = sv[0];
	return 0;
}

static int qemu_stream_open(struct rmig_backend *be, const struct rmig_stream_params *p, int *fd)
{
	struct qemu *q = be->priv;
	/* QEMU's default bandwidth cap (32 MiB/s in 7.2) would be the link. */
	json_int_t bw = p->max_bandwidth ? (json_int_t)p->max_bandwidth : (json_int_t)1 << 40;
	int rc;

	if (q->fd >= 0) {
		*fd = q->fd;
		return 0; /* destination: opened by prepare_regions */
	}
	if (be->role == RMIG_ROLE_DEST) {
		rmig_backend_err(be, "qemu: the incoming migration was not prepared");
		return -EINVAL;
	}
	/* Stop before the final part until rmig lets it go; auto-converge is
	 * QEMU's own throttle when the guest dirties faster than the link;
	 * events tell stream_wait of the pause at once. */
	rc = qmp_run(be,
		     json_pack("{s:s,s:{s:[{s:s,s:b},{s:s,s:b},{s:s,s:b}]}}", "execute",
			       "migrate-set-capabilities", "arguments", "capabilities",
			       "capability", "pause-before-switchover", "state", 1, "capability",
			       "auto-converge", "state", 1, "capability", "events", "state", 1),
		     -1, NULL);
	if (!rc)
		rc = qmp_run(be,
			     json_pack("{s:s,s:{s:I,s:I}}", "execute", "migrate-set-parameters",
				       "arguments", "downtime-limit", (json_int_t)p->downtime_ms,
				       "max-bandwidth", bw),
			     -1, NULL);
	if (!rc)
		rc = pass_socket(be);
	if (!rc)
		rc = qmp_run(be,
			     json_pack("{s:s,s:{s:s}}", "execute", "migrate", "arguments", "uri",
				       "fd:" FD_NAME),
			     -1, NULL);
	if (rc)
		return rc;
	*fd = q->fd;
	return 0;
}

static uint64_t json_u64(json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	return v > 0 ? (uint64_t)v : 0;
}

static int qemu_stream_status(struct rmig_backend *be, struct rmig_stream_status *st)
{
	char status[32];
	json_t *info = NULL, *ram;
	int rc = migrate_status(be, status, sizeof(status), &info);

	if (rc)
		return rc;
	ram = json_object_get(info, "ram");
	st->round = (unsigned)json_u64(ram, "dirty-sync-count");
	st->remaining_bytes = json_u64(ram, "remaining");
	st->transferred_bytes = json_u64(ram, "transferred");
	st->guest_bytes = json_u64(ram, "total");
	st->dirty_rate = (double)json_u64(ram, "dirty-pages-rate");
	st->expected_downtime_ms = (double)json_u64(info, "expected-downtime");
	if (!strcmp(status, "pre-switchover"))
		st->state = RMIG_STREAM_SWITCHOVER;
	else if (!strcmp(status, "device"))
		st->state = RMIG_STREAM_COMPLETING;
	else if (!strcmp(status, "completed"))
		st->state = RMIG_STREAM_COMPLETED;
	else if (!strcmp(status, "failed") || !strcmp(status, "cancelled") ||
		 !strcmp(status, "cancelling") || !strcmp(status, "none")) {
		st->state = RMIG_STREAM_FAILED;
		snprintf(st->detail, sizeof(st->detail), "QEMU's migration is %s%s%s", status,
			 json_object_get(info, "error-desc") ? ": " : "",
			 json_string_value(json_object_get(info, "error-desc")) ?: "");
	} else
		st->state = RMIG_STREAM_ACTIVE; /* setup, active, pre-switchover's neighbours */
	json_decref(info);
	return 0;
}

/* Source: stream_status follows at once, so an event's content is not kept. */
static int qemu_stream_wait(struct rmig_backend *be, int wake_fd, unsigned timeout_ms)
{
	int rc = qmp_wait_event(be, wake_fd, timeout_ms);

	return rc < 0 ? rc : 0;
}

static int qemu_stream_switchover(struct rmig_backend *be)
{
	return qmp_run(be,
		       json_pack("{s:s,s:{s:s}}", "execute", "migrate-continue", "arguments",
				 "state", "pre-switchover"),
		       -1, NULL);
}

/* "cont", and make sure it took: QEMU sends RESUME before cont's answer
 * when the guest started (it answers cont too when it only noted to start
 * later, as during an incoming migration); without one, ask. */
static int run_guest(struct rmig_backend *be)
{
	struct qemu *q = be->priv;
	char status[32] = "running";
	int running = 1, rc;

	q->resumed = 0;
	rc = qmp_simple(be, "cont");
	if (!rc && !q->resumed)
		rc = query_status(be, status, sizeof(status), &running);
	if (!rc && !running) {
		rmig_backend_err(be, "qemu: the guest does not run after cont (state %s)", status);
		rc = -EIO;
	}
	return rc;
}

/* Source: a migration in flight is cancelled; a guest not running is
 * resumed. Also what `rmig send --resume-source` does. */
static int qemu_resume(struct rmig_backend *be)
{
	char status[32];
	struct qemu *q = be->priv;
	int64_t end = now_ms() + q->tmo_ms;
	int rc, running;

	/* QEMU's migration thread may be blocked writing to us while holding
	 * the lock QMP needs: closing our end fails the migration at once. */
	if (q->fd >= 0) {
		close(q->fd);
		q->fd = -1;
	}
	rc = migrate_status(be, status, sizeof(status), NULL);
	if (!rc && (!strcmp(status, "setup") || !strcmp(status, "active") ||
		    !strcmp(status, "pre-switchover") || !strcmp(status, "device") ||
		    !strcmp(status, "cancelling"))) {
		rc = qmp_simple(be, "migrate_cancel");
		/* Cancelling takes a moment: the migration thread must notice. */
		while (!rc && now_ms() < end) {
			rc = migrate_status(be, status, sizeof(status), NULL);
			if (rc || (strcmp(status, "cancelling") && strcmp(status, "active") &&
				   strcmp(status, "pre-switchover") && strcmp(status, "device") &&
				   strcmp(status, "setup")))
				break;
			poll(NULL, 0, 20);
		}
	}
	if (!rc)
		rc = query_status(be, status, sizeof(status), &running);
	if (!rc && !running)
		rc = run_guest(be);
	return rc;
}

static int qemu_pause(struct rmig_backend *be)
{
	return qmp_simple(be, "stop");
}

static int qemu_save_state(struct rmig_backend *be, void **blob, size_t *len)
{
	(void)be;
	*blob = NULL; /* the device state was in QEMU's stream */
	*len = 0;
	return 0;
}

static int qemu_no_dirty_log(struct rmig_backend *be)
{
	rmig_backend_err(be, "qemu: QEMU tracks its own dirty memory");
	return -EOPNOTSUPP;
}

static int qemu_fetch_dirty(struct rmig_backend *be, size_t region, uint64_t *bitmap)
{
	(void)region;
	(void)bitmap;
	return qemu_no_dirty_log(be);
}

static int qemu_prepare_regions(struct rmig_backend *be, const struct rmig_region *layout,
				size_t count)
{
	struct qemu *q = be->priv;
	int rc;

	(void)layout;
	if (count) {
		rmig_backend_err(be, "qemu: the source sends guest memory, not QEMU's stream");
		return -EINVAL;
	}
	/* Its MIGRATION events end load_state's wait at once. */
	rc = qmp_run(be,
		     json_pack("{s:s,s:{s:[{s:s,s:b}]}}", "execute", "migrate-set-capabilities",
			       "arguments", "capabilities", "capability", "events", "state", 1),
		     -1, NULL);
	if (!rc)
		rc = pass_socket(be);
	if (!rc)
		rc = qmp_run(be,
			     json_pack("{s:s,s:{s:s}}", "execute", "migrate-incoming", "arguments",
				       "uri", "fd:" FD_NAME),
			     -1, NULL);
	if (!rc)
		q->incoming = 1;
	return rc;
}

/* Destination: the stream has ended. Wait until QEMU loaded it all; the
 * guest must then be paused (-S), ready for start(). */
static int qemu_load_state(struct rmig_backend *be, const void *blob, size_t len)
{
	struct qemu *q = be->priv;
	int64_t end = now_ms() + LOAD_WAIT_MS;
	char status[32];
	json_t *info = NULL;
	int rc, running;

	(void)blob;
	(void)len;
	if (q->fd >= 0)
		shutdown(q->fd, SHUT_WR); /* QEMU reads EOF after the last byte */
	for (;;) {
		rc = migrate_status(be, status, sizeof(status), &info);
		if (rc)
			return rc;
		if (!strcmp(status, "completed"))
			break;
		if (!strcmp(status, "failed")) {
			rmig_backend_err(
			    be, "qemu: the destination QEMU failed to load the guest%s%s",
			    json_object_get(info, "error-desc") ? ": " : "",
			    json_string_value(json_object_get(info, "error-desc")) ?: "");
			json_decref(info);
			return -EIO;
		}
		json_decref(info);
		info = NULL;
		if (now_ms() > end) {
			rmig_backend_err(be,
					 "qemu: the destination QEMU did not finish loading within "
					 "%d ms (status %s)",
					 LOAD_WAIT_MS, status);
			return -ETIMEDOUT;
		}
		rc = qmp_wait_event(be, -1, LOAD_POLL_MS);
		if (rc < 0)
			return rc;
	}
	json_decref(info);
	rc = query_status(be, status, sizeof(status), &running);
	if (!rc && running) {
		rmig_backend_err(
		    be,
		    "qemu: the destination QEMU started the guest by itself (start it with -S)");
		rc = -EPERM;
	}
	return rc;
}

static int qemu_start(struct rmig_backend *be)
{
	struct qemu *q = be->priv;

	q->started = 1; /* from here on it may run: never quit it */
	/* The disks were flushed before READY; the guest owns them now. */
	rmig_qemu_disk_release(be);
	return run_guest(be);
}

static int qemu_guest_stats(struct rmig_backend *be, struct rmig_guest_stats *st)
{
	char status[32];
	int running, rc = query_status(be, status, sizeof(status), &running);

	if (!rc)
		st->running = running;
	st->progress = 0; /* QMP has no count of guest work */
	return rc;
}

const struct rmig_backend_ops rmig_qemu_backend_ops = {
	.size = sizeof(struct rmig_backend_ops),
	.name = "qemu",
	.create = qemu_create,
	.destroy = qemu_destroy,
	.get_regions = qemu_get_regions,
	.start_dirty_log = qemu_no_dirty_log,
	.fetch_dirty = qemu_fetch_dirty,
	.pause = qemu_pause,
	.resume = qemu_resume,
	.save_state = qemu_save_state,
	.prepare_regions = qemu_prepare_regions,
	.load_state = qemu_load_state,
	.start = qemu_start,
	.guest_stats = qemu_guest_stats,
	.stream_open = qemu_stream_open,
	.stream_status = qemu_stream_status,
	.stream_switchover = qemu_stream_switchover,
	.stream_wait = qemu_stream_wait,
	.get_disks = rmig_qemu_get_disks,
	.disk_start_dirty = rmig_qemu_disk_start_dirty,
	.disk_fetch_dirty = rmig_qemu_disk_fetch_dirty,
	.disk_read = rmig_qemu_disk_read,
	.disk_throttle = rmig_qemu_disk_throttle,
	.prepare_disks = rmig_qemu_prepare_disks,
	.disk_write = rmig_qemu_disk_write,
	.disk_write_zeroes = rmig_qemu_disk_write_zeroes,
	.disk_flush = rmig_qemu_disk_flush,
};
