/* links.c - the context's link list, built from the configuration.
 *
 * cfg.transport names the links to try, in order ("rdma,tcp"), or is
 * "auto": every registered link with an auto_rank, lowest rank first. Each
 * link parses its own options; the configuration scopes them by link name
 * ("rdma.device=rxe0"). The engine names no link: the legacy config fields
 * below become unscoped options, taken by whichever listed link knows them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "engine.h"

#define NAME_MAX_LEN 32
#define OPT_MAX_LEN 256

/* Config fields older than link_options, and the option each one is; a
 * link that does not know the key (-ENOENT) ignores it, as before. */
static const struct {
	const char *field; /* for messages */
	const char *key;
} legacy_options[] = {
	{ "config.device", "device" },
	{ "config.gid_index", "gid_index" },
	{ "config.rails", "rails" }, /* a list of its own: no room in link_options */
};

static void legacy_value(const struct rmig_config *cfg, size_t i, char *out, size_t len)
{
	out[0] = 0;
	if (i == 0 && cfg->device && *cfg->device)
		snprintf(out, len, "%s", cfg->device);
	else if (i == 1 && cfg->gid_index >= 0)
		snprintf(out, len, "%d", cfg->gid_index);
	else if (i == 2 && cfg->rails && *cfg->rails)
		snprintf(out, len, "%s", cfg->rails);
}

unsigned rmig_links_count(const struct rmig_ctx *ctx)
{
	return ctx->linkset.n;
}

struct rmig_link *rmig_links_at(const struct rmig_ctx *ctx, unsigned i)
{
	return i < ctx->linkset.n ? ctx->linkset.at[i] : NULL;
}

/* "tcp, rdma" - the registered links, for messages. */
static void registered_names(char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	for (unsigned i = 0; rmig_link_kind(i) && used + 1 < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
					 rmig_link_kind(i)->name);
}

static int unknown_link(struct rmig_ctx *ctx, const char *field, const char *name)
{
	char names[200];

	registered_names(names, sizeof(names));
	return rmig_err(ctx, -ENOENT, "%s: no transport named '%s' (available: %s)", field, name,
			names);
}

/* The link auto would try last: the highest rank. */
static const struct rmig_link_ops *last_resort(void)
{
	const struct rmig_link_ops *best = NULL, *k;

	for (unsigned i = 0; (k = rmig_link_kind(i)); i++)
		if (k->auto_rank > 0 && (!best || k->auto_rank > best->auto_rank))
			best = k;
	return best;
}

/* Give link l every option of the configuration scoped to its name (and
 * the legacy fields, to a link that is not a wrapper). */
static int apply_options(struct rmig_ctx *ctx, struct rmig_link *l)
{
	const char *name = l->ops->name, *p = ctx->cfg.link_options;
	char value[OPT_MAX_LEN];
	int rc;

	for (size_t i = 0; !l->lower && i < sizeof(legacy_options) / sizeof(legacy_options[0]);
	     i++) {
		legacy_value(&ctx->cfg, i, value, sizeof(value));
		if (!value[0])
			continue;
		rc = rmig_link_set_option(l, legacy_options[i].key, value);
		if (rc && rc != -ENOENT)
			return rmig_err(ctx, -EINVAL, "%s: %s", legacy_options[i].field, l->err);
	}
	while (p && *p) {
		const char *end = strchr(p, ','), *dot, *eq;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char item[OPT_MAX_LEN];

		if (len >= sizeof(item))
			return rmig_err(ctx, -EINVAL, "config.link_options: '%.*s...' is too long",
					40, p);
		memcpy(item, p, len);
		item[len] = 0;
		p += len + (end ? 1 : 0);
		dot = strchr(item, '.');
		eq = strchr(item, '=');
		if (!dot || !eq || dot > eq || dot == item || eq == dot + 1)
			return rmig_err(ctx, -EINVAL,
					"config.link_options: '%s' is not LINK.KEY=VALUE", item);
		if ((size_t)(dot - item) != strlen(name) || strncmp(item, name, strlen(name)))
			continue; /* another link's: ignored unless that one is used */
		item[eq - item] = 0;
		rc = rmig_link_set_option(l, dot + 1, eq + 1);
		if (rc)
			return rmig_err(ctx, -EINVAL, "config.link_options: %s", l->err);
	}
	return 0;
}

/* Encryption wanted: on, or auto with credentials (and then only towards
 * peers not on loopback: the wrapper decides per peer). */
static int wants_tls(const struct rmig_config *cfg)
{
	return cfg->tls == RMIG_TLS_ON ||
	       (cfg->tls == RMIG_TLS_AUTO && (cfg->psk || (cfg->tls_creds && *cfg->tls_creds)));
}

static int set_tls(struct rmig_ctx *ctx, struct rmig_link *l, const char *key, const char *value)
{
	int rc = rmig_link_set_option(l, key, value);

	return rc ? rmig_err(ctx, rc, "%s", l->err) : 0;
}

/* Wrap *l in the tls link, configured from ctx->cfg. */
static int wrap_tls(struct rmig_ctx *ctx, struct rmig_link **l)
{
	const struct rmig_link_ops *over = rmig_link_find_wrapper("tls");
	const struct rmig_config *cfg = &ctx->cfg;
	char psk[2 * RMIG_MAC_LEN + 1];
	int rc;

	if (!over) {
		rmig_link_destroy(*l);
		return rmig_err(ctx, -ENOENT, "config.tls: encryption is not built in");
	}
	rc = rmig_link_wrap(*l, over, l);
	if (rc)
		return rmig_err(ctx, rc, "cannot make the tls link: %s", strerror(-rc));
	rc = set_tls(ctx, *l, "clear", cfg->tls == RMIG_TLS_ON ? "never" : "loopback");
	if (!rc && cfg->tls_creds && *cfg->tls_creds)
		rc = set_tls(ctx, *l, "creds", cfg->tls_creds);
	if (!rc && cfg->tls_hostname && *cfg->tls_hostname)
		rc = set_tls(ctx, *l, "hostname", cfg->tls_hostname);
	if (!rc && cfg->psk) {
		rc = rmig_auth_tls_psk(ctx, psk) ? rmig_err(ctx, -EIO, "HMAC-SHA256 failed")
						 : set_tls(ctx, *l, "psk", psk);
		OPENSSL_cleanse(psk, sizeof(psk));
	}
	if (!rc)
		rc = apply_options(ctx, *l);
	if (rc) {
		rmig_link_destroy(*l);
		*l = NULL;
	}
	return rc;
}

static int add_link(struct rmig_ctx *ctx, const char *name, struct rmig_link **out)
{
	struct rmig_links *ls = &ctx->linkset;
	struct rmig_link *l;
	int rc;

	if (ls->n == RMIG_MAX_LINKS)
		return rmig_err(ctx, -EINVAL, "config.transport: more than %d links",
				RMIG_MAX_LINKS);
	rc = rmig_link_open(name, &l);
	if (rc == -ENOENT)
		return unknown_link(ctx, "config.transport", name);
	if (rc)
		return rmig_err(ctx, rc, "cannot create the %s link: %s", name, strerror(-rc));
	rc = apply_options(ctx, l);
	if (rc) {
		rmig_link_destroy(l);
		return rc;
	}
	if (wants_tls(&ctx->cfg)) {
		rc = wrap_tls(ctx, &l);
		if (rc)
			return rc;
	}
	ls->at[ls->n++] = l;
	if (out)
		*out = l;
	return 0;
}

/* The failover link's name (NULL: none). */
static const char *fallback_name(const struct rmig_ctx *ctx)
{
	const struct rmig_link_ops *k;

	if (ctx->cfg.failover == RMIG_FAILOVER_NONE)
		return NULL;
	if (ctx->cfg.failover_transport)
		return ctx->cfg.failover_transport;
	k = last_resort();
	return k ? k->name : NULL;
}

/* The failover link is made when first needed: check now that it can be,
 * with its options, so that a bad configuration fails at once. */
static int check_fallback(struct rmig_ctx *ctx)
{
	const char *name = fallback_name(ctx);
	struct rmig_link *l;
	int rc;

	if (!name)
		return 0;
	for (unsigned i = 0; i < ctx->linkset.n; i++)
		if (!strcmp(rmig_link_kind_name(ctx->linkset.at[i]), name))
			return 0;
	rc = rmig_link_open(name, &l);
	if (rc == -ENOENT)
		return unknown_link(ctx, "config.failover_transport", name);
	if (rc)
		return rmig_err(ctx, rc, "cannot create the %s link: %s", name, strerror(-rc));
	rc = apply_options(ctx, l);
	rmig_link_destroy(l);
	return rc;
}

int rmig_links_create(struct rmig_ctx *ctx)
{
	const char *p = ctx->cfg.transport;
	int rc = 0;

	if (!strcmp(p, "auto")) {
		const struct rmig_link_ops *k;
		int done = 0;

		/* Rank by rank; registry order among equals. */
		while (!rc) {
			int next = 0;

			for (unsigned i = 0; (k = rmig_link_kind(i)); i++)
				if (k->auto_rank > done && (!next || k->auto_rank < next))
					next = k->auto_rank;
			if (!next)
				break;
			for (unsigned i = 0; !rc && (k = rmig_link_kind(i)); i++)
				if (k->auto_rank == next)
					rc = add_link(ctx, k->name, NULL);
			done = next;
		}
		if (!rc && !ctx->linkset.n)
			rc = rmig_err(ctx, -ENOENT, "config.transport=auto: no link takes part");
	} else {
		while (!rc) {
			const char *end = strchr(p, ',');
			size_t len = end ? (size_t)(end - p) : strlen(p);
			char name[NAME_MAX_LEN];

			if (!len || len >= sizeof(name) || (len == 4 && !strncmp(p, "auto", 4)))
				return rmig_err(ctx, -EINVAL,
						"config.transport: '%s' is not \"auto\" nor a list "
						"of link names like \"rdma,tcp\"",
						ctx->cfg.transport);
			memcpy(name, p, len);
			name[len] = 0;
			for (unsigned i = 0; i < ctx->linkset.n; i++)
				if (!strcmp(rmig_link_kind_name(ctx->linkset.at[i]), name))
					return rmig_err(ctx, -EINVAL,
							"config.transport: '%s' names %s twice",
							ctx->cfg.transport, name);
			rc = add_link(ctx, name, NULL);
			if (!end)
				break;
			p = end + 1;
		}
	}
	if (!rc)
		rc = check_fallback(ctx);
	if (!rc)
		ctx->link = ctx->linkset.at[0];
	return rc;
}

void rmig_links_destroy(struct rmig_ctx *ctx)
{
	for (unsigned i = 0; i < ctx->linkset.n; i++)
		rmig_link_destroy(ctx->linkset.at[i]);
	ctx->linkset.n = 0;
	ctx->link = NULL;
}

struct rmig_link *rmig_links_fallback(struct rmig_ctx *ctx)
{
	const char *name = fallback_name(ctx);
	struct rmig_link *l = NULL;
	char keep[sizeof(ctx->err)];

	if (!name)
		return NULL;
	for (unsigned i = 0; i < ctx->linkset.n; i++)
		if (!strcmp(rmig_link_kind_name(ctx->linkset.at[i]), name))
			return ctx->linkset.at[i];
	memcpy(keep, ctx->err, sizeof(keep));
	if (add_link(ctx, name, &l))
		l = NULL;
	memcpy(ctx->err, keep, sizeof(keep));
	return l;
}
