/* registry.c - links by name, the link object's life cycle, wrapping one
 * link in another, and the address helpers the links share. */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "link.h"

extern const struct rmig_link_ops rmig_tcp_link_ops;
extern const struct rmig_link_ops rmig_rdma_link_ops;
extern const struct rmig_link_ops rmig_tls_link_ops;

/* Wrappers the engine puts around any link when the configuration asks
 * (not kinds of their own: transport and auto never name them). */
static const struct rmig_link_ops *const wrappers[] = { &rmig_tls_link_ops };

#define MAX_LINK_KINDS 8

static const struct rmig_link_ops *link_kinds[MAX_LINK_KINDS];
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;

/* The ops every table must have, up to and including interrupt. */
#define OPS_MIN_SIZE (offsetof(struct rmig_link_ops, interrupt) + sizeof(void (*)(void)))

static int register_kind(const struct rmig_link_ops *ops)
{
	if (!ops || ops->size < OPS_MIN_SIZE || !ops->name || !*ops->name ||
	    (!ops->wraps && (!ops->create || !ops->destroy)))
		return -EINVAL;
	for (int i = 0; i < MAX_LINK_KINDS; i++) {
		if (link_kinds[i] && strcmp(link_kinds[i]->name, ops->name) == 0)
			return -EEXIST;
		if (!link_kinds[i]) {
			link_kinds[i] = ops;
			return 0;
		}
	}
	return -ENOSPC;
}

/* Registry order is also the order rmig info lists them in. */
static void register_builtins(void)
{
	register_kind(&rmig_tcp_link_ops);
	register_kind(&rmig_rdma_link_ops);
}

int rmig_link_register(const struct rmig_link_ops *ops)
{
	pthread_once(&builtins_once, register_builtins);
	return register_kind(ops);
}

const struct rmig_link_ops *rmig_link_find(const char *name)
{
	pthread_once(&builtins_once, register_builtins);
	for (int i = 0; i < MAX_LINK_KINDS && link_kinds[i]; i++)
		if (strcmp(link_kinds[i]->name, name) == 0)
			return link_kinds[i];
	return NULL;
}

const struct rmig_link_ops *rmig_link_kind(unsigned i)
{
	pthread_once(&builtins_once, register_builtins);
	return i < MAX_LINK_KINDS ? link_kinds[i] : NULL;
}

static int open_depth(const char *name, struct rmig_link **out, int depth)
{
	const struct rmig_link_ops *ops = rmig_link_find(name);
	struct rmig_link *l, *lower = NULL;
	int rc;

	if (!ops)
		return -ENOENT;
	if (ops->wraps) {
		if (depth > 4) /* a wraps b wraps a ... */
			return -ELOOP;
		rc = open_depth(ops->wraps, &lower, depth + 1);
		return rc ? rc : rmig_link_wrap(lower, ops, out);
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ops = ops;
	rc = ops->create(l);
	if (rc) {
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}

const struct rmig_link_ops *rmig_link_find_wrapper(const char *name)
{
	for (size_t i = 0; i < sizeof(wrappers) / sizeof(wrappers[0]); i++)
		if (!strcmp(wrappers[i]->name, name))
			return wrappers[i];
	return NULL;
}

int rmig_link_open(const char *name, struct rmig_link **out)
{
	return open_depth(name, out, 0);
}

static const struct rmig_link_ops *wrapper_of(const struct rmig_link *l);

/* A new link built as l is: l's kind, or the same wrapper around a new
 * link like l->lower (a wrapper need not be registered). */
static int open_like(const struct rmig_link *l, struct rmig_link **out)
{
	struct rmig_link *lower;
	int rc;

	if (!l->lower)
		return rmig_link_open(l->ops->name, out);
	rc = open_like(l->lower, &lower);
	return rc ? rc : rmig_link_wrap(lower, wrapper_of(l), out);
}

const char *rmig_link_kind_name(const struct rmig_link *l)
{
	/* A wrapper the engine added (tls) is not a kind the configuration
	 * named: the link under it is. */
	while (l->lower && !rmig_link_find(l->ops->name))
		l = l->lower;
	return l->ops->name;
}

int rmig_link_accept(struct rmig_link *l, int timeout_ms, struct rmig_link **out)
{
	struct rmig_link *conn;
	int rc = open_like(l, &conn);

	if (rc) {
		rmig_link_err(l, "cannot make a link for a new connection: %s", strerror(-rc));
		return rc;
	}
	rc = l->ops->accept(l, timeout_ms, conn);
	if (rc) {
		rmig_link_destroy(conn);
		return rc;
	}
	*out = conn;
	return 0;
}

int rmig_link_set_option(struct rmig_link *l, const char *key, const char *value)
{
	if (!l->ops->set_option) {
		rmig_link_err(l, "the %s link has no option '%s'", l->ops->name, key);
		return -ENOENT;
	}
	return l->ops->set_option(l, key, value);
}

void rmig_link_destroy(struct rmig_link *l)
{
	if (!l)
		return;
	l->ops->destroy(l);
	free(l->own_ops);
	free(l);
}

/* ---- wrapping: every op a wrapper leaves out goes to l->lower ---- */

/* The lower link's result, its message and its peer copied up. */
static int up(struct rmig_link *l, int rc)
{
	if (rc)
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

static void peer_up(struct rmig_link *l)
{
	memcpy(l->peer, l->lower->peer, sizeof(l->peer));
	l->peer_loopback = l->lower->peer_loopback;
}

static int pass_set_option(struct rmig_link *l, const char *key, const char *value)
{
	return up(l, rmig_link_set_option(l->lower, key, value));
}

static int pass_listen(struct rmig_link *l, const char *host, uint16_t *port)
{
	return up(l, l->lower->ops->listen(l->lower, host, port));
}

/* conn is a link of l's kind: a wrapper around a conn of lower's kind. */
static int pass_accept(struct rmig_link *l, int timeout_ms, struct rmig_link *conn)
{
	int rc = l->lower->ops->accept(l->lower, timeout_ms, conn->lower);

	if (!rc)
		peer_up(conn);
	return up(l, rc);
}

static int pass_adopt_channel(struct rmig_link *l, struct rmig_link *conn, unsigned chan, int *node)
{
	return up(l, l->lower->ops->adopt_channel(l->lower, conn->lower, chan, node));
}

static int pass_connect_ctrl(struct rmig_link *l, const char *host, uint16_t port, int timeout_ms)
{
	int rc = l->lower->ops->connect_ctrl(l->lower, host, port, timeout_ms);

	peer_up(l); /* set before connecting, for the messages */
	return up(l, rc);
}

static int pass_connect_channel(struct rmig_link *l, int timeout_ms, int node, unsigned *chan)
{
	return up(l, l->lower->ops->connect_channel(l->lower, timeout_ms, node, chan));
}

static int pass_ctrl_send(struct rmig_link *l, const struct iovec *iov, int iovcnt, int timeout_ms)
{
	return up(l, l->lower->ops->ctrl_send(l->lower, iov, iovcnt, timeout_ms));
}

static int pass_ctrl_recv(struct rmig_link *l, void *buf, size_t len, int timeout_ms)
{
	return up(l, l->lower->ops->ctrl_recv(l->lower, buf, len, timeout_ms));
}

static int pass_chan_send(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			  int timeout_ms)
{
	return up(l, l->lower->ops->chan_send(l->lower, chan, iov, iovcnt, timeout_ms));
}

static int pass_chan_recv(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			  int timeout_ms)
{
	return up(l, l->lower->ops->chan_recv(l->lower, chan, iov, iovcnt, timeout_ms));
}

static int pass_mem_expose(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			   void **blob, size_t *len)
{
	return up(l, l->lower->ops->mem_expose(l->lower, mem, n, blob, len));
}

static int pass_mem_import(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			   const void *blob, size_t len)
{
	return up(l, l->lower->ops->mem_import(l->lower, mem, n, blob, len));
}

static void pass_mem_release(struct rmig_link *l)
{
	l->lower->ops->mem_release(l->lower);
}

static int pass_chan_write(struct rmig_link *l, unsigned chan, uint32_t area,
			   const uint64_t *remote_off, const struct iovec *local, int n,
			   int timeout_ms)
{
	return up(
	    l, l->lower->ops->chan_write(l->lower, chan, area, remote_off, local, n, timeout_ms));
}

static int pass_chan_flush(struct rmig_link *l, unsigned chan, int timeout_ms)
{
	return up(l, l->lower->ops->chan_flush(l->lower, chan, timeout_ms));
}

static int pass_stream_fd(struct rmig_link *l, int chan)
{
	return l->lower->ops->stream_fd(l->lower, chan);
}

static int pass_rails_local(struct rmig_link *l, struct rmig_link_rail *out, unsigned max)
{
	return l->lower->ops->rails_local(l->lower, out, max);
}

static int pass_rails_peer(struct rmig_link *l, const struct rmig_link_rail *in, unsigned n)
{
	return up(l, l->lower->ops->rails_peer(l->lower, in, n));
}

static int pass_rail_failover(struct rmig_link *l, char *lost, char *to, size_t len)
{
	return l->lower->ops->rail_failover(l->lower, lost, to, len);
}

static void pass_close_session(struct rmig_link *l)
{
	l->lower->ops->close_session(l->lower);
	atomic_store(&l->interrupted, 0);
}

void rmig_link_uninterrupt(struct rmig_link *l, unsigned flags)
{
	for (; l; l = l->lower)
		atomic_fetch_and(&l->interrupted, ~flags);
}

static void pass_interrupt(struct rmig_link *l, unsigned flags)
{
	atomic_fetch_or(&l->interrupted, flags);
	l->lower->ops->interrupt(l->lower, flags);
}

/* A wrapping link's ops (l->own_ops) and the wrapper's own destroy,
 * close_session and interrupt, which run before the lower link's. */
struct wrap_table {
	struct rmig_link_ops ops; /* first: l->own_ops points here */
	const struct rmig_link_ops *over;
	void (*over_destroy)(struct rmig_link *l);
	void (*over_close_session)(struct rmig_link *l);
	void (*over_interrupt)(struct rmig_link *l, unsigned flags);
};

/* The table l was wrapped with (rmig_link_wrap's over). */
static const struct rmig_link_ops *wrapper_of(const struct rmig_link *l)
{
	return ((const struct wrap_table *)l->own_ops)->over;
}

static void wrap_destroy(struct rmig_link *l)
{
	struct wrap_table *t = (struct wrap_table *)l->own_ops;

	if (t->over_destroy)
		t->over_destroy(l);
	rmig_link_destroy(l->lower);
	l->lower = NULL;
}

static void wrap_close_session(struct rmig_link *l)
{
	struct wrap_table *t = (struct wrap_table *)l->own_ops;

	if (t->over_close_session)
		t->over_close_session(l);
	pass_close_session(l);
}

static void wrap_interrupt(struct rmig_link *l, unsigned flags)
{
	struct wrap_table *t = (struct wrap_table *)l->own_ops;

	if (t->over_interrupt)
		t->over_interrupt(l, flags);
	pass_interrupt(l, flags);
}

#define PICK(op) (over->op ? over->op : lo->op ? pass_##op : NULL)
#define PICK_RAILS(op)                                                                             \
	(RMIG_LINK_HAS(over, op) ? over->op : RMIG_LINK_HAS(lo, op) ? pass_##op : NULL)
/* Placement is the lower link's to offer: a wrapper may refuse or change
 * it, never add it to a link that has none (the engine tests for it). */
#define PICK_LOWER(op) (!lo->op ? NULL : over->op ? over->op : pass_##op)

int rmig_link_wrap(struct rmig_link *lower, const struct rmig_link_ops *over,
		   struct rmig_link **out)
{
	const struct rmig_link_ops *lo = lower->ops;
	struct rmig_link *l = calloc(1, sizeof(*l));
	struct wrap_table *t = calloc(1, sizeof(*t));
	int rc;

	if (!l || !t || !over || over->size < OPS_MIN_SIZE) {
		free(l);
		free(t);
		rmig_link_destroy(lower);
		return !over || (l && t) ? -EINVAL : -ENOMEM;
	}
	t->ops = (struct rmig_link_ops){
		.size = sizeof(t->ops),
		.name = over->name,
		.auto_rank = over->auto_rank,
		.wraps = lo->name,
		.set_option = over->set_option ? over->set_option : pass_set_option,
		.create = over->create,
		.destroy = wrap_destroy,
		.listen = PICK(listen),
		.accept = PICK(accept),
		.adopt_channel = PICK(adopt_channel),
		.connect_ctrl = PICK(connect_ctrl),
		.connect_channel = PICK(connect_channel),
		.ctrl_send = PICK(ctrl_send),
		.ctrl_recv = PICK(ctrl_recv),
		.chan_send = PICK(chan_send),
		.chan_recv = PICK(chan_recv),
		.mem_expose = PICK_LOWER(mem_expose),
		.mem_import = PICK_LOWER(mem_import),
		.mem_release = PICK_LOWER(mem_release),
		.chan_write = PICK_LOWER(chan_write),
		.chan_flush = PICK_LOWER(chan_flush),
		.close_session = wrap_close_session,
		.describe = over->describe,
		.interrupt = wrap_interrupt,
		.stream_fd = PICK(stream_fd),
		.recv_some = over->size > offsetof(struct rmig_link_ops, recv_some)
				 ? over->recv_some
				 : NULL, /* never the lower link's */
		/* Rails are the lower link's devices: a wrapper passes them on,
		 * unless it has rails of its own (tests/unit/test_rails_open.c's
		 * rails over tcp, to run the opening without RDMA). */
		.rails_local = PICK_RAILS(rails_local),
		.rails_peer = PICK_RAILS(rails_peer),
		.rail_failover = PICK_RAILS(rail_failover),
	};
	t->over = over;
	t->over_destroy = over->destroy;
	t->over_close_session = over->close_session;
	t->over_interrupt = over->interrupt;
	l->ops = &t->ops;
	l->own_ops = &t->ops;
	l->lower = lower;
	rc = over->create ? over->create(l) : 0;
	if (rc) {
		rmig_link_destroy(lower);
		free(t);
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}

void rmig_link_err(struct rmig_link *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(l->err, sizeof(l->err), fmt, ap);
	va_end(ap);
}

int64_t rmig_link_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rmig_link_addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN], serv[8];

	if (getnameinfo(sa,
			sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						  : sizeof(struct sockaddr_in),
			host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(out, len, "?");
	else if (sa->sa_family == AF_INET6)
		snprintf(out, len, "[%s]:%s", host, serv);
	else
		snprintf(out, len, "%s:%s", host, serv);
}

void rmig_link_set_peer(struct rmig_link *l, const struct sockaddr *sa)
{
	rmig_link_addr_text(sa, l->peer, sizeof(l->peer));
	if (sa->sa_family == AF_INET)
		l->peer_loopback =
		    (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		l->peer_loopback =
		    IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	} else
		l->peer_loopback = 0;
}

int rmig_link_host_is_loopback(const char *host)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL, *ai;
	struct rmig_link probe = { 0 };
	int all = 1;

	if (!host || getaddrinfo(host, NULL, &hints, &res))
		return 0;
	for (ai = res; ai; ai = ai->ai_next) {
		rmig_link_set_peer(&probe, ai->ai_addr);
		all &= probe.peer_loopback;
	}
	freeaddrinfo(res);
	return all;
}

int rmig_link_resolve(struct rmig_link *l, const char *host, uint16_t port, int passive,
		      struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) };
	struct addrinfo *res = NULL;
	char serv[16];
	int rc;

	snprintf(serv, sizeof(serv), "%u", port);
	rc = getaddrinfo(passive && !(host && *host) ? NULL : host, serv, &hints, &res);
	if (rc) {
		rmig_link_err(l, "cannot resolve %s%s: %s", passive ? "listen address " : "",
			      host ? host : "", gai_strerror(rc));
		return passive ? -EINVAL : -EHOSTUNREACH;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}
