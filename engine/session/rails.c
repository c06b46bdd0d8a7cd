/* rails.c - a link's rails (config.rails) in the handshake, the stats and
 * rmig info. The link owns them (which device serves which node, where the
 * peer reaches it, the bytes through each); the session carries the
 * destination's in RAILS (proto: struct rmig_wire_rail), after both proofs
 * of the key, to the source's link, and names no transport: a link without
 * the ops has no rails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "last_error.h"

static int rails_of(struct rmig_link *l, struct rmig_link_rail *out, unsigned max)
{
	if (!l || !RMIG_LINK_HAS(l->ops, rails_local))
		return 0;
	return l->ops->rails_local(l, out, max);
}

int rmig_rails_wanted(struct rmig_link *l)
{
	struct rmig_link_rail r[RMIG_MAX_RAILS];
	int n = rails_of(l, r, RMIG_MAX_RAILS);

	for (int i = 0; i < n; i++) /* as RAILS will offer them */
		if (!r[i].lost)
			return 1;
	return 0;
}

static void rail_to_wire(const struct rmig_link_rail *r, struct rmig_wire_rail *w)
{
	memset(w, 0, sizeof(*w));
	w->node = r->node;
	if (r->addr.ss_family == AF_INET6) {
		w->family = 6;
		memcpy(w->addr, &((const struct sockaddr_in6 *)&r->addr)->sin6_addr, 16);
	} else {
		w->family = 4;
		memcpy(w->addr, &((const struct sockaddr_in *)&r->addr)->sin_addr, 4);
	}
	memcpy(w->name, r->name, sizeof(w->name) - 1); /* the last stays NUL */
}

static void rail_from_wire(const struct rmig_wire_rail *w, struct rmig_link_rail *r)
{
	memset(r, 0, sizeof(*r));
	r->node = w->node;
	if (w->family == 6) {
		r->addr.ss_family = AF_INET6;
		memcpy(&((struct sockaddr_in6 *)&r->addr)->sin6_addr, w->addr, 16);
	} else {
		r->addr.ss_family = AF_INET;
		memcpy(&((struct sockaddr_in *)&r->addr)->sin_addr, w->addr, 4);
	}
	memcpy(r->name, w->name, sizeof(r->name)); /* the decoder checked its NUL */
}

/* Link l's rails as RAILS' table; 0 if it has none. */
static uint32_t table_of(struct rmig_link *l, struct rmig_rails *t)
{
	struct rmig_link_rail r[RMIG_MAX_RAILS];
	int n = rails_of(l, r, RMIG_MAX_RAILS);

	memset(t, 0, sizeof(*t));
	for (int i = 0; i < n; i++) /* a rail whose device went is not offered */
		if (!r[i].lost)
			rail_to_wire(&r[i], &t->rail[t->nrails++]);
	return t->nrails;
}

int rmig_rails_announce(struct rmig_ctx *ctx, struct rmig_msg *m)
{
	uint8_t table[RMIG_RAILS_TABLE_MAX_LEN];
	size_t len;

	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_RAILS;
	if (!table_of(ctx->link, &m->u.rails))
		return rmig_err(ctx, -ENODEV,
				"the rails this receiver echoed in its HELLO are gone");
	/* No key, no MAC: the peer is on loopback (this host), or the operator
	 * took an unauthenticated network (config.insecure), or TLS verified
	 * its certificate and seals every byte, this message's too. */
	if (!ctx->cfg.psk)
		return rmig_ctrl_send(ctx, m);
	len = rmig_rails_table_encode(&m->u.rails, table, sizeof(table));
	if (!len || rmig_auth_rails_mac(ctx, 0, table, len, m->u.rails.mac))
		return rmig_err(ctx, -EIO, "HMAC-SHA256 over the rails table failed");
	m->u.rails.mac_len = RMIG_MAC_LEN;
	return rmig_ctrl_send(ctx, m);
}

/* With a key, the table counts only if the destination that proved the
 * key made it for this connection: an attacker on the path could
 * otherwise draw the data channels to addresses of its choosing. The
 * decoder is strict, so encoding what it decoded gives back the bytes
 * that came. */
static int rails_check(struct rmig_ctx *ctx, const struct rmig_rails *t)
{
	uint8_t table[RMIG_RAILS_TABLE_MAX_LEN], want[RMIG_MAC_LEN];
	const char *peer = ctx->link->peer;
	size_t len;

	if (!ctx->cfg.psk)
		return t->mac_len ? rmig_err(ctx, -EPROTO,
					     "protocol error: %s sent its rails with a MAC, but "
					     "no key is shared",
					     peer)
				  : 0;
	if (t->mac_len != RMIG_MAC_LEN)
		return rmig_err(ctx, -EACCES,
				"refusing the rails of %s: their table carries no MAC of our "
				"pre-shared key",
				peer);
	len = rmig_rails_table_encode(t, table, sizeof(table));
	if (!len || rmig_auth_rails_mac(ctx, 1, table, len, want))
		return rmig_err(ctx, -EIO, "HMAC-SHA256 over the rails table failed");
	if (CRYPTO_memcmp(want, t->mac, RMIG_MAC_LEN))
		return rmig_err(ctx, -EACCES,
				"refusing the rails of %s: their MAC does not match our "
				"pre-shared key (the table was altered on the way)",
				peer);
	return 0;
}

int rmig_rails_learn(struct rmig_ctx *ctx, int asked, uint64_t peer_caps, struct rmig_msg *m)
{
	struct rmig_link *l = ctx->link;
	struct rmig_link_rail r[RMIG_MAX_RAILS];
	unsigned n = 0;
	int rc;

	if (asked && (peer_caps & RMIG_CAP_RAILS)) {
		rc = rmig_ctrl_expect(ctx, RMIG_MSG_RAILS, m, (int)ctx->cfg.link_timeout_ms);
		if (rc == -ETIMEDOUT)
			rc = rmig_err(ctx, rc,
				      "no rails table from %s within %u ms of the proofs, though "
				      "its HELLO announced one",
				      l->peer, (unsigned)ctx->cfg.link_timeout_ms);
		if (!rc)
			rc = rails_check(ctx, &m->u.rails);
		if (rc)
			return rc;
		n = m->u.rails.nrails;
	}
	if (!RMIG_LINK_HAS(l->ops, rails_peer))
		return 0;
	for (unsigned i = 0; i < n && i < RMIG_MAX_RAILS; i++)
		rail_from_wire(&m->u.rails.rail[i], &r[i]);
	rc = l->ops->rails_peer(l, r, n);
	return rc ? rmig_err(ctx, rc, "%s", l->err) : 0;
}

static void note_one(struct rmig_ctx *ctx, const struct rmig_link_rail *r, unsigned n)
{
	ctx->stats.rails = n;
	for (unsigned i = 0; i < n; i++) {
		struct rmig_rail_stats *s = &ctx->stats.rail[i];

		memcpy(s->device, r[i].name, sizeof(s->device));
		s->device[sizeof(s->device) - 1] = 0;
		s->node = r[i].node;
		s->bytes = r[i].bytes;
		s->lost = r[i].lost;
	}
}

void rmig_rails_note(struct rmig_ctx *ctx)
{
	struct rmig_link_rail r[RMIG_STATS_RAILS];
	int n = rails_of(ctx->link, r, RMIG_STATS_RAILS);

	/* After a failover to another kind: the link that had rails. */
	for (unsigned i = 0; n <= 0 && i < rmig_links_count(ctx); i++)
		n = rails_of(rmig_links_at(ctx, i), r, RMIG_STATS_RAILS);
	if (n > 0)
		note_one(ctx, r, (unsigned)n);
}

int rmig_rails_failover(struct rmig_ctx *ctx, char *lost, char *to, size_t len)
{
	struct rmig_link *l = ctx->link;

	if (!RMIG_LINK_HAS(l->ops, rail_failover))
		return -ENOENT;
	return l->ops->rail_failover(l, lost, to, len);
}

void rmig_rails_moved(struct rmig_ctx *ctx, char *lost, char *to, size_t len)
{
	struct rmig_link_rail r[RMIG_MAX_RAILS];
	int n = rails_of(ctx->link, r, RMIG_MAX_RAILS), undone = 0, have_lost = 0, have_to = 0;

	for (int i = 0; i < n; i++) /* the rail named lost is in use again */
		undone |= !strcmp(r[i].name, lost) && !r[i].lost;
	for (int i = 0; undone && i < n; i++) {
		char *name = r[i].lost ? lost : to;
		int *have = r[i].lost ? &have_lost : &have_to;

		if (!*have)
			snprintf(name, len, "%s", r[i].name);
		*have = 1;
	}
}

/* Each link kind that takes the option, with rails as given. */
static size_t info_kind(const struct rmig_link_ops *ops, const char *rails, char *buf, size_t len,
			size_t used)
{
	struct rmig_link_rail r[RMIG_MAX_RAILS];
	struct rmig_link *l;
	char addr[64];
	int n;

	if (rmig_link_open(ops->name, &l))
		return used;
	n = rmig_link_set_option(l, "rails", rails);
	if (n == -ENOENT) { /* this kind has no rails */
		rmig_link_destroy(l);
		return used;
	}
	if (!n)
		n = rails_of(l, r, RMIG_MAX_RAILS);
	if (n < 0)
		used +=
		    (size_t)snprintf(buf + used, len - used, "%s rails: %s\n", ops->name, l->err);
	else if (n == 0)
		used += (size_t)snprintf(buf + used, len - used,
					 "%s rails (%s): none, one device serves every node\n",
					 ops->name, rails);
	for (int i = 0; i < n && used + 1 < len; i++) {
		rmig_link_addr_text((const struct sockaddr *)&r[i].addr, addr, sizeof(addr));
		used +=
		    (size_t)snprintf(buf + used, len - used, "%s rails (%s): node %d: %s (%s)\n",
				     ops->name, rails, r[i].node, r[i].name, addr);
	}
	rmig_link_destroy(l);
	return used < len ? used : len - 1;
}

int rmig_rails_info(const char *rails, char *buf, size_t len)
{
	const struct rmig_link_ops *ops;
	size_t used = 0;

	if (!buf || !len)
		return rmig_fail(-EINVAL, "rmig_rails_info: no buffer");
	buf[0] = 0;
	for (unsigned i = 0; (ops = rmig_link_kind(i)) && used + 1 < len; i++)
		used = info_kind(ops, rails && *rails ? rails : "auto", buf, len, used);
	return 0;
}
