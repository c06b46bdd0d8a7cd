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

int tun_link_open(const struct tun_security *s, struct rmig_link **out, char *err, size_t errlen)
{
	struct rmig_link *l = NULL;
	int rc = rmig_link_open("tcp", &l);

	if (rc) {
		snprintf(err, errlen, "cannot create the tcp link: %s", strerror(-rc));
		return rc;
	}
	if (tun_secured(s))
		rc = wrap_tls(s, &l, err, errlen);
	if (rc) {
		if (l)
			rmig_link_destroy(l);
		return rc;
	}
	*out = l;
	return 0;
}
