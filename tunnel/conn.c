/* conn.c - make the tunnel's link as the engine's links.c does: a tcp link,
 * wrapped in the tls link (clear refused) when the tunnel has a key. */
#include "conn.h"

#include "link.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

int tun_derive_psk(const uint8_t *key, size_t len, char hex[65])
{
	static const char label[] = "rmig-tunnel-psk-1";
	uint8_t out[32];
	unsigned outlen = 0;

	if (!HMAC(EVP_sha256(), key, (int)len, (const uint8_t *)label, sizeof(label) - 1, out,
		  &outlen) ||
	    outlen != sizeof(out))
		return -EIO;
	for (unsigned i = 0; i < sizeof(out); i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	OPENSSL_cleanse(out, sizeof(out));
	return 0;
}

static int set_opt(struct rmig_link *l, const char *key, const char *value, char *err,
		   size_t errlen)
{
	int rc = rmig_link_set_option(l, key, value);

	if (rc)
		snprintf(err, errlen, "%s", l->err);
	return rc;
}

static int wrap_tls(const struct tun_security *s, struct rmig_link **l, char *err, size_t errlen)
{
	const struct rmig_link_ops *over = rmig_link_find_wrapper("tls");
	int rc;

	if (!over) {
		snprintf(err, errlen, "encryption is not built in");
		return -ENOENT;
	}
	rc = rmig_link_wrap(*l, over, l);
	if (rc) {
		*l = NULL;
		snprintf(err, errlen, "cannot make the tls link: %s", strerror(-rc));
		return rc;
	}
	rc = set_opt(*l, "clear", "never", err, errlen);
	if (!rc && s->creds[0])
		rc = set_opt(*l, "creds", s->creds, err, errlen);
	if (!rc && s->psk_hex[0])
		rc = set_opt(*l, "psk", s->psk_hex, err, errlen);
	return rc;
}

/* Each "KIND.KEY=VALUE" of opts whose KIND is l's (checked whole by
 * rmig_tunnel_set_link_options). */
static int apply_options(struct rmig_link *l, const char *kind, const char *opts, char *err,
			 size_t errlen)
{
	char item[256];

	while (*opts) {
		size_t len = strcspn(opts, ",");
		char *dot, *eq;
		int rc = 0;

		snprintf(item, sizeof(item), "%.*s", (int)len, opts);
		opts += len + (opts[len] == ',');
		dot = strchr(item, '.');
		eq = strchr(item, '=');
		if (!dot || !eq || eq < dot)
			continue;
		*dot = *eq = 0;
		if (!strcmp(item, kind))
			rc = set_opt(l, dot + 1, eq + 1, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int tun_link_open(const struct tun_security *s, const char *kind, struct rmig_link **out, char *err,
		  size_t errlen)
{
	struct rmig_link *l = NULL;
	int rc = rmig_link_open(kind, &l);

	if (rc) {
		snprintf(err, errlen, "cannot create the %s link: %s", kind, strerror(-rc));
		return rc;
	}
	rc = apply_options(l, kind, s->link_options, err, errlen);
	if (!rc && tun_secured(s))
		rc = wrap_tls(s, &l, err, errlen);
	if (rc) {
		if (l)
			rmig_link_destroy(l);
		return rc;
	}
	*out = l;
	return 0;
}

/* ---- the opening's first frame ---- */

static const uint8_t hello_magic[4] = { 'R', 'M', 'T', 'N' };

void tun_hello_encode(uint32_t flags, const uint8_t token[TUN_TOKEN_LEN],
		      uint8_t out[TUN_HDR_LEN + TUN_HELLO_LEN])
{
	struct tun_hdr h = { .stream = 0, .len = TUN_HELLO_LEN, .type = TUN_HELLO };
	uint8_t *p = out + TUN_HDR_LEN;

	tun_hdr_encode(&h, out);
	memcpy(p, hello_magic, 4);
	tun_put32(p + 4, TUN_VERSION);
	tun_put32(p + 8, flags);
	memcpy(p + 12, token, TUN_TOKEN_LEN);
}

void tun_printable(char *out, const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	out[n] = 0;
}

static int recv_err(struct rmig_link *l, int rc, char *why, size_t len)
{
	snprintf(why, len, "%s",
		 rc == -ETIMEDOUT ? "no HELLO in time"
		 : l->err[0]	  ? l->err
				  : strerror(-rc));
	return rc;
}

int tun_read_hello(struct rmig_link *l, int timeout_ms, uint32_t *flags,
		   uint8_t token[TUN_TOKEN_LEN], char *why, size_t len)
{
	uint8_t hb[TUN_HDR_LEN], p[TUN_MAX_MSG > TUN_HELLO_LEN ? TUN_MAX_MSG : TUN_HELLO_LEN];
	char text[TUN_MAX_MSG + 1];
	struct tun_hdr h;
	int rc = l->ops->ctrl_recv(l, hb, sizeof(hb), timeout_ms);

	if (rc)
		return recv_err(l, rc, why, len);
	if (hb[0] == 0x16 && hb[1] == 3) {
		snprintf(why, len,
			 "%s speaks TLS: give both ends the same --psk-file (or --tls-creds)",
			 l->peer);
		return -EPROTO;
	}
	if (tun_hdr_decode(hb, &h, why, len) || (h.type != TUN_HELLO && h.type != TUN_REFUSE)) {
		snprintf(why, len, "%s is not an rmig tunnel", l->peer);
		return -EPROTO;
	}
	if ((rc = l->ops->ctrl_recv(l, p, h.len, timeout_ms)))
		return recv_err(l, rc, why, len);
	if (h.type == TUN_REFUSE) {
		tun_printable(text, p, h.len);
		snprintf(why, len, "%s refused: %s", l->peer, text);
		return -EREMOTEIO;
	}
	if (memcmp(p, hello_magic, 4)) {
		snprintf(why, len, "%s is not an rmig tunnel", l->peer);
		return -EPROTO;
	}
	if (tun_get32(p + 4) != TUN_VERSION) {
		snprintf(why, len, "%s speaks tunnel version %u, this is %u", l->peer,
			 tun_get32(p + 4), TUN_VERSION);
		return -EPROTO;
	}
	*flags = tun_get32(p + 8);
	memcpy(token, p + 12, TUN_TOKEN_LEN);
	return 0;
}

void tun_send_refusal(struct rmig_link *l, const char *why)
{
	uint8_t b[TUN_HDR_LEN + TUN_MAX_MSG];
	size_t n = strlen(why) > TUN_MAX_MSG ? TUN_MAX_MSG : strlen(why);
	struct tun_hdr h = { .stream = 0, .len = (uint32_t)n, .type = TUN_REFUSE };
	struct iovec v = { b, TUN_HDR_LEN + n };

	if (!n)
		return;
	tun_hdr_encode(&h, b);
	memcpy(b + TUN_HDR_LEN, why, n);
	l->ops->ctrl_send(l, &v, 1, 100); /* best effort: the peer hears why */
}
