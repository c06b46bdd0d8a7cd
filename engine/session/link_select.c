/* link_select.c - which link of the list (links.c) carries a migration.
 *
 * The source tries the links in order ("auto": rdma, then tcp) and takes
 * the first that reaches the peer; the destination listens on all of them
 * (the same port number: rdma_cm and TCP ports are separate spaces), and
 * its listener (listener.c) accepts on each. The choice, and why an earlier
 * link was not used, is announced with RMIG_EV_TRANSPORT and kept in the
 * stats.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

#define PROBE_MS 3000 /* how long a link that is not the last gets to reach the peer */

void rmig_link_note_sealing(struct rmig_ctx *ctx)
{
	const char *by = ctx->link ? ctx->link->sealing : NULL;

	/* A link that seals nothing now (closed, or a failover's that never
	 * connected) does not unseal what crossed the wire before: a link
	 * that was sealed only ever gives way to one that is (failover never
	 * goes on in clear). */
	if (!by && ctx->stats.encrypted)
		return;
	ctx->stats.encrypted = by != NULL;
	ctx->stats.tls = by ? by : "off";
}

void rmig_link_chosen(struct rmig_ctx *ctx)
{
	struct rmig_event ev = { .type = RMIG_EV_TRANSPORT };
	const char *pin = ctx->placement ? "all" : ctx->link->ops->mem_expose ? "staging" : "none";

	rmig_link_note_sealing(ctx);
	ctx->stats.transport = rmig_link_kind_name(ctx->link);
	ctx->stats.pin = pin;
	ev.transport = ctx->stats.transport;
	ev.pin = pin;
	ev.detail = ctx->link_detail[0] ? ctx->link_detail : NULL;
	rmig_emit(ctx, &ev);
}

void rmig_link_mem_of_regions(const struct rmig_ctx *ctx, struct rmig_link_mem *mem)
{
	for (size_t i = 0; i < ctx->nregions; i++)
		mem[i] = (struct rmig_link_mem){ ctx->regions[i].host, ctx->regions[i].len };
}

/* cfg.host resolves: 0, or why not in ctx->err (rmig_link_resolve's words). */
static int host_resolves(struct rmig_ctx *ctx)
{
	struct rmig_link probe = { 0 };
	struct sockaddr_storage ss;
	socklen_t len;
	int rc = rmig_link_resolve(&probe, ctx->cfg.host, ctx->cfg.port, 0, &ss, &len);

	return rc ? rmig_err(ctx, rc, "%s", probe.err) : 0;
}

int rmig_links_connect(struct rmig_ctx *ctx, int timeout_ms)
{
	int rc = -ENOENT;

	/* Without a key only loopback peers: say so before connecting, so that
	 * a receiver is not handed a connection that will only hang up. A name
	 * that does not resolve is not "not on loopback": say that instead.
	 * With certificates and encryption, the TLS handshake proves who the
	 * peer is (its chain to our CA, its name): connect, and
	 * rmig_auth_policy decides once it has (link->peer_verified). */
	int certs = ctx->cfg.tls != RMIG_TLS_OFF && ctx->cfg.tls_creds && *ctx->cfg.tls_creds;

	if (!ctx->cfg.psk && !ctx->cfg.insecure && !certs && (rc = host_resolves(ctx)))
		return rc;
	if (!ctx->cfg.psk && !ctx->cfg.insecure && !certs &&
	    !rmig_link_host_is_loopback(ctx->cfg.host))
		return rmig_err(ctx, -EACCES,
				"refusing unauthenticated peer %s:%u: it is not on loopback; give "
				"both sides the same config.psk (or config.insecure on a trusted "
				"network)",
				ctx->cfg.host, ctx->cfg.port);

	for (unsigned i = 0; i < rmig_links_count(ctx); i++) {
		struct rmig_link *l = rmig_links_at(ctx, i);
		int last = i + 1 == rmig_links_count(ctx);
		int tmo = timeout_ms;

		if (!last && (tmo < 0 || tmo > PROBE_MS))
			tmo = PROBE_MS;
		ctx->link = l;
		rc = l->ops->connect_ctrl(l, ctx->cfg.host, ctx->cfg.port, tmo);
		if (!rc)
			return 0;
		if (atomic_load(&ctx->cancelled))
			return rmig_err(ctx, -ECANCELED, "cancelled by the operator");
		if (!last)
			snprintf(ctx->link_detail, sizeof(ctx->link_detail), "%s unavailable: %s",
				 rmig_link_kind_name(l), l->err);
	}
	return rmig_err(ctx, rc, "%s", ctx->link->err);
}

int rmig_links_listen(struct rmig_ctx *ctx)
{
	uint16_t port = ctx->cfg.port;
	char why[sizeof(ctx->link_detail)] = "";
	size_t used = 0;
	int rc = 0;

	/* Bind from the end of the list: the last resort's port is the one
	 * announced, the others take the same number. A link that cannot
	 * listen (no RDMA device) is left out, wherever it stands; only if
	 * none can is it an error, naming why for each. */
	ctx->linkset.listening = 0;
	for (int i = (int)rmig_links_count(ctx) - 1; i >= 0; i--) {
		struct rmig_link *l = rmig_links_at(ctx, (unsigned)i);
		int one = l->ops->listen(l, ctx->cfg.host, &port);

		if (one) {
			rc = rc ? rc : one;
			if (used < sizeof(why) && rmig_links_count(ctx) > 1)
				used += (size_t)snprintf(why + used, sizeof(why) - used,
							 "%s%s unavailable: %s", used ? "; " : "",
							 rmig_link_kind_name(l), l->err);
			else if (used < sizeof(why))
				used +=
				    (size_t)snprintf(why + used, sizeof(why) - used, "%s", l->err);
			continue;
		}
		ctx->linkset.listening |= 1u << i;
		ctx->link = l;
	}
	if (!ctx->linkset.listening)
		return rmig_err(ctx, rc ? rc : -ENOENT, "%s", why);
	if (why[0])
		snprintf(ctx->link_detail, sizeof(ctx->link_detail), "%s", why);
	ctx->port = port;
	return 0;
}

/* "NAME: built in" and what the link says of itself, at buf + used. */
static size_t describe_kind(const struct rmig_link_ops *ops, char *buf, size_t len, size_t used)
{
	used += (size_t)snprintf(buf + used, len - used, "%s: built in\n", ops->name);
	if (ops->describe && used + 1 < len) {
		ops->describe(buf + used, len - used);
		used += strlen(buf + used);
		if (used && buf[used - 1] != '\n' && used + 1 < len)
			buf[used++] = '\n', buf[used] = 0;
	}
	return used;
}

void rmig_transport_info(char *buf, size_t len)
{
	const struct rmig_link_ops *ops;
	size_t used = 0;

	if (!len)
		return;
	buf[0] = 0;
	for (unsigned i = 0; (ops = rmig_link_kind(i)) && used + 1 < len; i++)
		used = describe_kind(ops, buf, len, used);
	ops = rmig_link_find_wrapper("tls");
	if (ops && used + 1 < len)
		describe_kind(ops, buf, len, used);
}
