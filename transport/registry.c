/* registry.c - links by name, the link object's life cycle, and the address
 * helpers both links share. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "link.h"

extern const struct rmig_link_ops rmig_tcp_link_ops;
extern const struct rmig_link_ops rmig_rdma_link_ops;

#define MAX_LINK_KINDS 8

static const struct rmig_link_ops *link_kinds[MAX_LINK_KINDS];
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;

static int register_kind(const struct rmig_link_ops *ops)
{
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

int rmig_link_create(const char *name, const struct rmig_link_opts *opts, struct rmig_link **out)
{
	const struct rmig_link_ops *ops = rmig_link_find(name);
	struct rmig_link *l;
	int rc;

	if (!ops)
		return -ENOENT;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ops = ops;
	if (opts)
		l->opts = *opts;
	else
		l->opts.gid_index = -1;
	rc = ops->create(l);
	if (rc) {
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}

void rmig_link_destroy(struct rmig_link *l)
{
	if (!l)
		return;
	l->ops->destroy(l);
	free(l);
}

void rmig_link_err(struct rmig_link *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(l->err, sizeof(l->err), fmt, ap);
	va_end(ap);
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
