/* auth.c - who may talk to us: the pre-shared-key challenge-response and
 * the rule for unauthenticated peers.
 *
 * Both HELLOs carry a fresh random nonce. With a PSK, the source proves it
 * first with AUTH = HMAC-SHA256(psk, "rmig-auth-2 source" | Ns | Nd |
 * HELLO_s | HELLO_d); only then does the destination prove itself with the
 * "destination" label. A proof binds both nonces, so it is good for this
 * connection only, and both HELLOs as each side saw them: capabilities
 * cleared or versions lowered on the way make the proofs fail, so nobody
 * on the path can talk the peers out of a feature they both have. Nothing
 * about the guest (layout, addresses, rkeys) nor about the destination
 * (its rails: devices, nodes, addresses) is sent before both proofs were
 * checked, and the rails table carries a MAC of its own (RAILS, after
 * AUTH). Data channels then name their connection with a token
 * derived from the key and both nonces, which a third party cannot forge.
 *
 * Without a PSK, only loopback peers are accepted unless the operator says
 * --insecure, or TLS proved the peer's certificate: a guest's memory is not
 * to be handed to whoever connects.
 *
 * With encryption, the TLS pre-shared key is derived from config.psk
 * (rmig_auth_tls_psk), never the key itself, and this exchange still runs,
 * inside TLS.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

/* The longest `extra` a MAC covers: a rails table, or both HELLOs. */
#define EXTRA_MAX                                                                                  \
	(RMIG_RAILS_TABLE_MAX_LEN > 2 * RMIG_HELLO_LEN ? RMIG_RAILS_TABLE_MAX_LEN                  \
						       : 2 * RMIG_HELLO_LEN)

/* HMAC-SHA256(psk, label | Ns | Nd | extra). */
static int mac_over(const struct rmig_ctx *ctx, const char *label, const uint8_t *src_nonce,
		    const uint8_t *dst_nonce, const uint8_t *extra, size_t extra_len,
		    uint8_t out[RMIG_MAC_LEN])
{
	uint8_t msg[64 + 2 * RMIG_NONCE_LEN + EXTRA_MAX];
	size_t n = strlen(label), total = n + 2 * RMIG_NONCE_LEN + extra_len;
	unsigned outlen = 0;

	if (n > 64 || extra_len > EXTRA_MAX)
		return -EINVAL;
	memcpy(msg, label, n);
	memcpy(msg + n, src_nonce, RMIG_NONCE_LEN);
	memcpy(msg + n + RMIG_NONCE_LEN, dst_nonce, RMIG_NONCE_LEN);
	if (extra_len)
		memcpy(msg + n + 2 * RMIG_NONCE_LEN, extra, extra_len);
	if (!HMAC(EVP_sha256(), ctx->cfg.psk, (int)ctx->cfg.psk_len, msg, total, out, &outlen) ||
	    outlen != RMIG_MAC_LEN)
		return -EIO;
	return 0;
}

static int mac(const struct rmig_ctx *ctx, const char *label, const uint8_t *src_nonce,
	       const uint8_t *dst_nonce, uint8_t out[RMIG_MAC_LEN])
{
	return mac_over(ctx, label, src_nonce, dst_nonce, NULL, 0, out);
}

/* Its own label: no AUTH proof can be replayed as a rails MAC, nor the
 * reverse, and the nonces bind it to this connection. */
int rmig_auth_rails_mac(const struct rmig_ctx *ctx, int we_are_source, const uint8_t *table,
			size_t len, uint8_t out[RMIG_MAC_LEN])
{
	const uint8_t *ns = we_are_source ? ctx->nonce : ctx->peer_nonce;
	const uint8_t *nd = we_are_source ? ctx->peer_nonce : ctx->nonce;

	return mac_over(ctx, "rmig-auth-1 rails", ns, nd, table, len, out);
}

int rmig_auth_tls_psk(const struct rmig_ctx *ctx, char hex[2 * RMIG_MAC_LEN + 1])
{
	static const char label[] = "rmig-tls-psk-1";
	uint8_t key[RMIG_MAC_LEN];
	unsigned outlen = 0;

	if (!HMAC(EVP_sha256(), ctx->cfg.psk, (int)ctx->cfg.psk_len, (const uint8_t *)label,
		  sizeof(label) - 1, key, &outlen) ||
	    outlen != RMIG_MAC_LEN)
		return -EIO;
	for (unsigned i = 0; i < RMIG_MAC_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", key[i]);
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

int rmig_auth_policy(struct rmig_ctx *ctx, int peer_has_psk, int we_are_source)
{
	const char *peer = ctx->link->peer;

	if (ctx->cfg.psk && !peer_has_psk)
		return rmig_err(ctx, -EACCES,
				"authentication failed: %s has no pre-shared key (or its HELLO "
				"was altered on the way), but this %s requires one (config.psk)",
				peer, we_are_source ? "sender" : "receiver");
	if (!ctx->cfg.psk && peer_has_psk)
		return rmig_err(ctx, -EACCES,
				"authentication failed: %s uses a pre-shared key, this %s has "
				"none (give both sides the same config.psk)",
				peer, we_are_source ? "sender" : "receiver");
	if (!ctx->cfg.psk && !ctx->link->peer_loopback && !ctx->cfg.insecure &&
	    !ctx->link->peer_verified)
		return rmig_err(ctx, -EACCES,
				"refusing unauthenticated peer %s: it is not on loopback; give "
				"both sides the same config.psk (or config.insecure on a trusted "
				"network)",
				peer);
	return 0;
}

/* The data channel token of this connection. */
static int derive_token(struct rmig_ctx *ctx, const uint8_t *src_nonce, const uint8_t *dst_nonce)
{
	uint8_t full[RMIG_MAC_LEN];

	if (!ctx->cfg.psk) {
		memcpy(ctx->token, src_nonce, RMIG_NONCE_LEN);
		return 0;
	}
	if (mac(ctx, "rmig-auth-1 channel", src_nonce, dst_nonce, full))
		return rmig_err(ctx, -EIO, "HMAC-SHA256 failed");
	memcpy(ctx->token, full, RMIG_NONCE_LEN);
	return 0;
}

/* An AUTH proof: the label's MAC over the nonces and both HELLOs, each
 * encoded as on the wire (the decoder is strict, so what was received
 * encodes to the bytes that came). */
static int proof(const struct rmig_ctx *ctx, const char *label, const struct rmig_wire_hello *src,
		 const struct rmig_wire_hello *dst, uint8_t out[RMIG_MAC_LEN])
{
	struct rmig_msg m = { .type = RMIG_MSG_HELLO };
	uint8_t hellos[2 * RMIG_HELLO_LEN];

	m.u.hello = *src;
	if (rmig_msg_encode(&m, hellos, RMIG_HELLO_LEN) != RMIG_HELLO_LEN)
		return -EIO;
	m.u.hello = *dst;
	if (rmig_msg_encode(&m, hellos + RMIG_HELLO_LEN, RMIG_HELLO_LEN) != RMIG_HELLO_LEN)
		return -EIO;
	return mac_over(ctx, label, src->nonce, dst->nonce, hellos, sizeof(hellos), out);
}

static int refuse_proof(struct rmig_ctx *ctx)
{
	return rmig_err(ctx, -EACCES,
			"authentication failed: %s does not hold our pre-shared key, or the "
			"HELLOs were altered on the way",
			ctx->link->peer);
}

static int exchange(struct rmig_ctx *ctx, int we_are_source, const struct rmig_wire_hello *src,
		    const struct rmig_wire_hello *dst)
{
	struct rmig_msg m = { .type = RMIG_MSG_AUTH };
	uint8_t want[RMIG_MAC_LEN];
	int rc;

	if (!ctx->cfg.psk)
		return derive_token(ctx, src->nonce, dst->nonce);
	if (we_are_source) {
		if (proof(ctx, "rmig-auth-2 source", src, dst, m.u.mac))
			return rmig_err(ctx, -EIO, "HMAC-SHA256 failed");
		rc = rmig_ctrl_send(ctx, &m);
		if (!rc)
			rc =
			    rmig_ctrl_expect(ctx, RMIG_MSG_AUTH, &m, (int)ctx->cfg.link_timeout_ms);
		if (rc)
			return rc;
		if (proof(ctx, "rmig-auth-2 destination", src, dst, want))
			return rmig_err(ctx, -EIO, "HMAC-SHA256 failed");
		if (CRYPTO_memcmp(want, m.u.mac, RMIG_MAC_LEN))
			return refuse_proof(ctx);
		return derive_token(ctx, src->nonce, dst->nonce);
	}
	rc = rmig_ctrl_expect(ctx, RMIG_MSG_AUTH, &m, (int)ctx->cfg.link_timeout_ms);
	if (rc)
		return rc;
	if (proof(ctx, "rmig-auth-2 source", src, dst, want))
		return rmig_err(ctx, -EIO, "HMAC-SHA256 failed");
	if (CRYPTO_memcmp(want, m.u.mac, RMIG_MAC_LEN))
		return refuse_proof(ctx);
	if (proof(ctx, "rmig-auth-2 destination", src, dst, m.u.mac))
		return rmig_err(ctx, -EIO, "HMAC-SHA256 failed");
	rc = rmig_ctrl_send(ctx, &m);
	if (rc)
		return rc;
	return derive_token(ctx, src->nonce, dst->nonce);
}

int rmig_auth_exchange(struct rmig_ctx *ctx, int we_are_source, const struct rmig_wire_hello *src,
		       const struct rmig_wire_hello *dst)
{
	int rc = exchange(ctx, we_are_source, src, dst);

	ctx->peer_proven = !rc;
	return rc;
}
