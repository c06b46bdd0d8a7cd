/* conn.h - the tunnel's one connection to its peer: a transport link, TLS
 * wrapped when a key or credentials are given. */
#ifndef RMIG_TUNNEL_CONN_H
#define RMIG_TUNNEL_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

struct rmig_link;

#define TUN_VERSION 2u

/* How the tunnel's links are made: security, and options of the links. */
struct tun_security {
	char psk_hex[65];	/* derived TLS PSK, "" without a key */
	char creds[512];	/* x509 directory, "" without */
	char link_options[256]; /* "KIND.KEY=VALUE,...", e.g. rdma.device=rxe0 */
};

static inline int tun_secured(const struct tun_security *s)
{
	return s->psk_hex[0] || s->creds[0];
}

/* The TLS PSK from the user's key (HMAC-SHA256 under a tunnel label, so the
 * tunnel's key never equals a migration's). */
int tun_derive_psk(const uint8_t *key, size_t len, char hex[65]);
#define TUN_MAX_KINDS 4 /* transports a tunnel may try, in order */
#define TUN_KIND_LEN 16

/* A new link of kind ("tcp", "rdma") with s's options for that kind,
 * wrapped in tls when s asks for it. err gets the message. */
int tun_link_open(const struct tun_security *s, const char *kind, struct rmig_link **out, char *err,
		  size_t errlen);

/* The HELLO frame (header and payload) this side opens with. */
void tun_hello_encode(uint32_t flags, const uint8_t token[TUN_TOKEN_LEN],
		      uint8_t out[TUN_HDR_LEN + TUN_HELLO_LEN]);
/* The peer's first frame: a HELLO of this version (flags and token out), or
 * a REFUSE (-EREMOTEIO, its text in why); else -EPROTO or the link's
 * error, why in one line. */
int tun_read_hello(struct rmig_link *l, int timeout_ms, uint32_t *flags,
		   uint8_t token[TUN_TOKEN_LEN], char *why, size_t len);
/* A peer's text as one line: printable characters only, others '?';
 * out holds n + 1 bytes. */
void tun_printable(char *out, const uint8_t *p, uint32_t n);
/* Best effort: tell the peer why it is refused, before closing. */
void tun_send_refusal(struct rmig_link *l, const char *why);

#endif
