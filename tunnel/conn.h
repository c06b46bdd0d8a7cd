/* conn.h - the tunnel's one connection to its peer: a transport link, TLS
 * wrapped when a key or credentials are given. */
#ifndef RMIG_TUNNEL_CONN_H
#define RMIG_TUNNEL_CONN_H

#include <stddef.h>
#include <stdint.h>

struct rmig_link;

struct tun_security {
	char psk_hex[65]; /* derived TLS PSK, "" without a key */
	char creds[512];  /* x509 directory, "" without */
};

static inline int tun_secured(const struct tun_security *s)
{
	return s->psk_hex[0] || s->creds[0];
}

/* The TLS PSK from the user's key (HMAC-SHA256 under a tunnel label, so the
 * tunnel's key never equals a migration's). */
int tun_derive_psk(const uint8_t *key, size_t len, char hex[65]);
/* A new tcp link, wrapped in tls when s asks for it. err gets the message. */
int tun_link_open(const struct tun_security *s, struct rmig_link **out, char *err, size_t errlen);

#endif
