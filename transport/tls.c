/* tls.c - the tls link: TLS 1.3 around another link (tcp, or rdma's
 * staging streams), one TLS session per connection: the control stream and
 * each data channel.
 *
 * OpenSSL runs each handshake over the lower link's own byte stream (a BIO
 * that calls its ops, so its timeouts and interrupts hold), with an
 * external pre-shared key (RFC 8446 2.2, with (EC)DHE) or certificates in
 * QEMU's layout. Then the stream is sealed by the kernel (kTLS, when the
 * lower link is a socket and the kernel has the tls module) or by
 * tls_record.c in this process, in the same record format. Nothing is
 * sent after a handshake but application data: no session tickets, no key
 * update (a direction stops before AES-GCM's record limit instead).
 *
 * A receiver tells TLS from clear by the first bytes of a connection: a
 * TLS handshake record, or anything else. Clear is taken only where the
 * configuration allows it (option clear=loopback: from a loopback peer);
 * otherwise the peer is refused, and told why in clear. A sender refuses a
 * receiver that answers its ClientHello in clear: never a silent downgrade.
 *
 * RDMA WRITE places pages in the peer's memory where no record can be
 * checked: this link refuses placement (mem_expose, mem_import), so pages
 * go through the sealed staging streams.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "link.h"
#include "tls_record.h"

#define PSK_LEN 32
#define PSK_IDENTITY "rmig-psk-1"
/* Records sealed per lower send, at most: a data channel's 1 MiB frame in
 * one send (about 5 % less sender CPU than 16 records per send in three
 * A/B runs, bench/results.md). A stream's buffer grows to what its sends
 * need, so the control stream keeps a small one. */
#define OUT_RECORDS 64
#define OUT_RECORD_LEN (RMIG_TLS_MAX_PLAIN + 32)
#define MAX_HANDSHAKE_BYTES 65536 /* one flight, certificates included */
#define TLS_HANDSHAKE 22
/* Records read by one lower receive, at most: what the link has ready. */
#define IN_BYTES (16 * RMIG_TLS_MAX_RECORD)

/* Shared by a listening link and every connection it accepts. */
struct tls_conf {
	atomic_int refs;
	pthread_mutex_t lock; /* builds the SSL_CTXs once */
	SSL_CTX *client, *server;
	char creds[512];    /* x509: QEMU's layout */
	char hostname[256]; /* the receiver's name to check (x509) */
	uint8_t psk[PSK_LEN];
	int has_psk;
	int clear_loopback; /* clear to and from loopback peers */
	int ktls;	    /* try the kernel */
};

enum stream_state {
	S_NONE,	   /* not connected */
	S_OPENING, /* accepted, nothing read yet */
	S_CLEAR,   /* in clear, as the configuration allows */
	S_SEALED,  /* handshake done */
	S_REFUSED, /* spoke in clear where TLS is required: only a reply in clear */
	S_FAILED,  /* the handshake failed */
};

struct tls_stream {
	enum stream_state state;
	struct rmig_tls_dir tx, rx;
	uint8_t *in;		     /* records read, opened in place */
	size_t in_cap;		     /* its size: one record, IN_BYTES once data flows */
	size_t in_start, in_end;     /* in[in_start, in_end): not opened yet */
	size_t plain_off, plain_len; /* in: the last opened record's plaintext not handed out yet */
	uint8_t *out;		     /* records sealed for one lower send ... */
	size_t out_records;	     /* ... this many at most */
	uint8_t peek[RMIG_TLS_HDR_LEN];
	size_t peek_len; /* read to tell TLS from clear, not handed out yet */
};

struct tls_link {
	struct tls_conf *conf;
	struct tls_stream ctrl;
	struct tls_stream chan[RMIG_LINK_MAX_CHANNELS];
	char host[256]; /* source: the host connected to */
};

/* The handshake's BIO: the lower link's stream, one flight at a time. */
struct hs_bio {
	struct rmig_link *l; /* the tls link */
	int chan;	     /* -1: the control stream */
	int timeout_ms;	     /* the whole handshake's (-1: none) ... */
	int64_t end_ms;	     /* ... which ends then (CLOCK_MONOTONIC) */
	int timed_out;
	int lower_rc; /* the lower link failed (its message is in l->err) */
	int clear_reply;
	int client, first_read_done;
	const uint8_t *pre;
	size_t pre_len;
	uint8_t *wbuf;
	size_t wlen;
};

/* The application traffic secrets, as the keylog callback gives them. */
struct hs_secrets {
	uint8_t client[48], server[48];
	size_t client_len, server_len;
};

static struct tls_link *tls(struct rmig_link *l)
{
	return l->priv;
}

static int tls_err(struct rmig_link *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tls_err(struct rmig_link *l, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(l->err, sizeof(l->err), fmt, ap);
	va_end(ap);
	return rc;
}

static int lower_up(struct rmig_link *l, int rc)
{
	if (rc)
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

/* ---- the lower link's stream ---- */

static int lower_send(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct rmig_link *lo = l->lower;

	return lower_up(l, chan < 0 ? lo->ops->ctrl_send(lo, iov, n, tmo)
				    : lo->ops->chan_send(lo, (unsigned)chan, iov, n, tmo));
}

static int lower_recv(struct rmig_link *l, int chan, void *buf, size_t len, int tmo)
{
	struct rmig_link *lo = l->lower;
	struct iovec v = { buf, len };

	return lower_up(l, chan < 0 ? lo->ops->ctrl_recv(lo, buf, len, tmo)
				    : lo->ops->chan_recv(lo, (unsigned)chan, &v, 1, tmo));
}

/* At least min bytes of the lower stream, at most len: what it has ready
 * (link.h recv_some), or exactly min where it cannot say. */
static int lower_recv_some(struct rmig_link *l, int chan, uint8_t *buf, size_t min, size_t len,
			   int tmo)
{
	int rc;

	if (RMIG_LINK_HAS(l->lower->ops, recv_some)) {
		rc = l->lower->ops->recv_some(l->lower, chan, buf, min, len, tmo);
		return rc < 0 ? lower_up(l, rc) : rc;
	}
	rc = lower_recv(l, chan, buf, min, tmo);
	return rc ? rc : (int)min;
}

/* ---- configuration ---- */

static void conf_put(struct tls_conf *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	SSL_CTX_free(c->client);
	SSL_CTX_free(c->server);
	pthread_mutex_destroy(&c->lock);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

static int hex_value(int ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int set_psk(struct rmig_link *l, struct tls_conf *c, const char *hex)
{
	if (strlen(hex) != 2 * PSK_LEN)
		return tls_err(l, -EINVAL, "tls: psk must be %d hex digits", 2 * PSK_LEN);
	for (int i = 0; i < PSK_LEN; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return tls_err(l, -EINVAL, "tls: psk must be lower-case hex");
		c->psk[i] = (uint8_t)(hi << 4 | lo);
	}
	c->has_psk = 1;
	return 0;
}

static int copy_option(struct rmig_link *l, char *dst, size_t len, const char *key,
		       const char *value)
{
	if (strlen(value) >= len)
		return tls_err(l, -EINVAL, "config.tls_%s: longer than %zu characters", key,
			       len - 1);
	snprintf(dst, len, "%s", value);
	return 0;
}

/* creds=DIR, hostname=NAME, psk=HEX, clear=never|loopback, ktls=on|off;
 * any other key is the lower link's. */
static int tls_set_option(struct rmig_link *l, const char *key, const char *value)
{
	struct tls_conf *c = tls(l)->conf;

	if (!strcmp(key, "creds"))
		return copy_option(l, c->creds, sizeof(c->creds), key, value);
	if (!strcmp(key, "hostname"))
		return copy_option(l, c->hostname, sizeof(c->hostname), key, value);
	if (!strcmp(key, "psk"))
		return set_psk(l, c, value);
	if (!strcmp(key, "clear") && (!strcmp(value, "never") || !strcmp(value, "loopback"))) {
		c->clear_loopback = !strcmp(value, "loopback");
		return 0;
	}
	if (!strcmp(key, "ktls") && (!strcmp(value, "on") || !strcmp(value, "off"))) {
		c->ktls = !strcmp(value, "on");
		return 0;
	}
	if (!strcmp(key, "clear") || !strcmp(key, "ktls"))
		return tls_err(l, -EINVAL, "tls: bad value '%s' for %s", value, key);
	return lower_up(l, rmig_link_set_option(l->lower, key, value));
}

/* ---- SSL_CTX: TLS 1.3 only, AES-GCM only (what kTLS takes) ---- */

static void keylog(const SSL *ssl, const char *line)
{
	struct hs_secrets *s = SSL_get_app_data(ssl);
	const char *hex = strrchr(line, ' ');
	uint8_t *dst;
	size_t *dlen, n;

	if (!s || !hex)
		return;
	if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24))
		dst = s->client, dlen = &s->client_len;
	else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24))
		dst = s->server, dlen = &s->server_len;
	else
		return;
	n = strlen(++hex) / 2;
	if (n > 48)
		return;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return;
		dst[i] = (uint8_t)(hi << 4 | lo);
	}
	*dlen = n;
}

static SSL_SESSION *psk_session(SSL *ssl)
{
	static const unsigned char aes128gcm[] = { 0x13, 0x01 };
	struct tls_conf *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcm);
	SSL_SESSION *s = SSL_SESSION_new();

	if (!s || !cipher || !SSL_SESSION_set1_master_key(s, c->psk, PSK_LEN) ||
	    !SSL_SESSION_set_cipher(s, cipher) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

static int psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
		   SSL_SESSION **sess)
{
	(void)md;
	*sess = psk_session(ssl);
	*id = (const unsigned char *)PSK_IDENTITY;
	*idlen = strlen(PSK_IDENTITY);
	return *sess != NULL;
}

static int psk_find(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	*sess = NULL;
	if (idlen == strlen(PSK_IDENTITY) && !memcmp(id, PSK_IDENTITY, idlen))
		*sess = psk_session(ssl);
	return 1;
}

/* A private key must be ours alone, as config.psk's file is. */
static int check_key_file(struct rmig_link *l, const char *path)
{
	struct stat st;

	if (stat(path, &st))
		return tls_err(l, -errno, "config.tls_creds: %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return tls_err(l, -EINVAL, "config.tls_creds: %s: not a regular file", path);
	if (st.st_mode & 077)
		return tls_err(l, -EACCES,
			       "config.tls_creds: %s is readable by group or others (mode %03o); "
			       "chmod 600 it",
			       path, (unsigned)(st.st_mode & 0777));
	return 0;
}

static int ssl_failed(struct rmig_link *l, const char *what, const char *path)
{
	char buf[160];

	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	ERR_clear_error();
	return tls_err(l, -EINVAL, "config.tls_creds: %s %s: %s", what, path, buf);
}

static int load_creds(struct rmig_link *l, SSL_CTX *ctx, const char *dir, int server)
{
	const char *who = server ? "server" : "client";
	char ca[600], cert[600], key[600];
	int rc;

	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, who);
	snprintf(key, sizeof(key), "%s/%s-key.pem", dir, who);
	rc = check_key_file(l, key);
	if (rc)
		return rc;
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		return ssl_failed(l, "cannot load the CA certificate", ca);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return ssl_failed(l, "cannot load the certificate", cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return ssl_failed(l, "cannot load the key", key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return ssl_failed(l, "the key does not match the certificate", cert);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
			   NULL);
	return 0;
}

static int make_ctx(struct rmig_link *l, struct tls_conf *c, int server, SSL_CTX **out)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	int rc = 0;

	if (!ctx)
		return tls_err(l, -ENOMEM, "tls: cannot make an SSL context");
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
	SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_MIDDLEBOX_COMPAT);
	SSL_CTX_set_num_tickets(ctx, 0); /* nothing but data after the handshake */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_max_cert_list(ctx, MAX_HANDSHAKE_BYTES / 2);
	SSL_CTX_set_keylog_callback(ctx, keylog);
	SSL_CTX_set_app_data(ctx, c);
	if (c->creds[0])
		rc = load_creds(l, ctx, c->creds, server);
	else if (c->has_psk && server)
		SSL_CTX_set_psk_find_session_callback(ctx, psk_find);
	else if (c->has_psk) {
		SSL_CTX_set_psk_use_session_callback(ctx, psk_use);
		/* A server that ignores our key and shows a certificate instead
		 * must fail: with no CA to check it against, any does. */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else
		rc = tls_err(l, -EINVAL, "tls: no credentials (config.psk or config.tls_creds)");
	if (rc) {
		SSL_CTX_free(ctx);
		return rc;
	}
	*out = ctx;
	return 0;
}

static int conf_ready(struct rmig_link *l, int server)
{
	struct tls_conf *c = tls(l)->conf;
	SSL_CTX **ctx = server ? &c->server : &c->client;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	if (!*ctx)
		rc = make_ctx(l, c, server, ctx);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ---- the handshake's BIO over the lower link ---- */

static BIO_METHOD *hs_method;
static pthread_once_t hs_method_once = PTHREAD_ONCE_INIT;

/* The time left for the next lower op: the handshake's timeout bounds the
 * whole handshake, not each read, or a peer without the key could hold it
 * for as many timeouts as its flight has bytes, one byte just inside
 * each. 0: it ran out. */
static int hs_left(const struct hs_bio *hb)
{
	int64_t left = hb->end_ms - rmig_link_now_ms();

	if (hb->timeout_ms < 0)
		return -1;
	if (left > 0)
		return left < hb->timeout_ms ? (int)left : hb->timeout_ms;
	return 0;
}

/* A lower op given tmo failed with rc: out of the handshake's time if
 * none was left or it timed out on what was left. */
static int hs_failed(struct hs_bio *hb, int rc, int tmo)
{
	if (!tmo || (rc == -ETIMEDOUT && tmo < hb->timeout_ms)) {
		hb->timed_out = 1;
		rc = tls_err(hb->l, -ETIMEDOUT, "TLS handshake with %s: not complete within %d ms",
			     hb->l->peer, hb->timeout_ms);
	}
	return hb->lower_rc = rc;
}

static int hs_flush(struct hs_bio *hb)
{
	struct iovec v = { hb->wbuf, hb->wlen };
	int tmo, rc;

	if (!hb->wlen)
		return 0;
	tmo = hs_left(hb);
	rc = tmo ? lower_send(hb->l, hb->chan, &v, 1, tmo) : -ETIMEDOUT;
	hb->wlen = 0;
	return rc ? hs_failed(hb, rc, tmo) : 0;
}

static int hs_write(BIO *b, const char *data, int len)
{
	struct hs_bio *hb = BIO_get_data(b);

	if (len <= 0 || hb->wlen + (size_t)len > MAX_HANDSHAKE_BYTES)
		return -1;
	memcpy(hb->wbuf + hb->wlen, data, (size_t)len);
	hb->wlen += (size_t)len;
	return len;
}

/* A TLS record starts with a content type of 20..23 and version 3.x. */
static int looks_like_tls(const uint8_t *p)
{
	return p[0] >= 20 && p[0] <= 23 && p[1] == 3;
}

static int hs_read(BIO *b, char *buf, int len)
{
	struct hs_bio *hb = BIO_get_data(b);
	size_t n = (size_t)len;

	if (len <= 0 || hs_flush(hb))
		return -1;
	if (hb->pre_len) {
		n = n < hb->pre_len ? n : hb->pre_len;
		memcpy(buf, hb->pre, n);
		hb->pre += n;
		hb->pre_len -= n;
		return (int)n;
	}
	/* OpenSSL (read_ahead off) asks for exactly a record header, then
	 * exactly its body: never more, as the kernel may take the stream
	 * after the handshake. In pieces, as they come, so that the time left
	 * is checked between them. */
	for (size_t got = 0; got < n;) {
		int tmo = hs_left(hb), rc;

		rc = tmo ? lower_recv_some(hb->l, hb->chan, (uint8_t *)buf + got, 1, n - got, tmo)
			 : -ETIMEDOUT;
		if (rc < 0) {
			hs_failed(hb, rc, tmo);
			return -1;
		}
		got += (size_t)rc;
	}
	if (hb->client && !hb->first_read_done && n >= 2 && !looks_like_tls((uint8_t *)buf)) {
		hb->clear_reply = 1;
		return -1;
	}
	hb->first_read_done = 1;
	return len;
}

static long hs_ctrl(BIO *b, int cmd, long larg, void *parg)
{
	(void)larg;
	(void)parg;
	if (cmd == BIO_CTRL_FLUSH)
		return hs_flush(BIO_get_data(b)) ? 0 : 1;
	return 0;
}

static int hs_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void make_hs_method(void)
{
	hs_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rmig-link");
	if (!hs_method)
		return;
	BIO_meth_set_write(hs_method, hs_write);
	BIO_meth_set_read(hs_method, hs_read);
	BIO_meth_set_ctrl(hs_method, hs_ctrl);
	BIO_meth_set_create(hs_method, hs_create);
}

/* ---- one stream ---- */

static void stream_clear(struct tls_stream *s)
{
	rmig_tls_dir_clear(&s->tx);
	rmig_tls_dir_clear(&s->rx);
	/* They held guest memory in clear. */
	if (s->in)
		OPENSSL_clear_free(s->in, s->in_cap);
	if (s->out)
		OPENSSL_clear_free(s->out, s->out_records * OUT_RECORD_LEN);
	memset(s, 0, sizeof(*s));
}

static struct tls_stream *stream_of(struct rmig_link *l, int chan)
{
	return chan < 0 ? &tls(l)->ctrl : &tls(l)->chan[chan];
}

/* Who seals the link's streams, for the summary. */
static void update_sealing(struct rmig_link *l)
{
	struct tls_link *t = tls(l);
	int kernel = 0, user = 0;

	for (int i = -1; i < RMIG_LINK_MAX_CHANNELS; i++) {
		struct tls_stream *s = i < 0 ? &t->ctrl : &t->chan[i];

		if (s->state != S_SEALED)
			continue;
		kernel += s->tx.kernel + s->rx.kernel;
		user += !s->tx.kernel + !s->rx.kernel;
	}
	l->sealing = !kernel && !user ? NULL : !user ? "ktls" : !kernel ? "user" : "mixed";
}

/* Name what went wrong in a handshake, in one line. */
static int handshake_error(struct rmig_link *l, SSL *ssl, struct hs_bio *hb, int server)
{
	long verify = SSL_get_verify_result(ssl);
	unsigned long e = ERR_peek_last_error();
	const char *reason = ERR_reason_error_string(e);
	const char *peer = l->peer;
	int rc;

	if (hb->clear_reply)
		rc = tls_err(l, -EPROTO,
			     "%s answered in clear, not TLS: it does not use TLS; not going on "
			     "unencrypted (config.tls off on both sides migrates in clear)",
			     peer);
	else if (hb->timed_out)
		rc = -ETIMEDOUT; /* hs_failed said so */
	else if (hb->lower_rc)
		rc = tls_err(l, hb->lower_rc, "TLS handshake with %.60s: %.180s", peer,
			     l->lower->err);
	else if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
		rc = tls_err(
		    l, -EACCES, "TLS: the certificate of %s does not name %s (config.tls_hostname)",
		    peer, tls(l)->conf->hostname[0] ? tls(l)->conf->hostname : tls(l)->host);
	else if (verify != X509_V_OK && !tls(l)->conf->creds[0])
		rc = tls_err(l, -EACCES,
			     "TLS: %s does not hold our pre-shared key (config.psk): it showed a "
			     "certificate instead",
			     peer);
	else if (verify != X509_V_OK)
		rc = tls_err(l, -EACCES, "TLS: the certificate of %s is not accepted: %s", peer,
			     X509_verify_cert_error_string(verify));
	else if (ERR_GET_REASON(e) == SSL_R_BINDER_DOES_NOT_VERIFY)
		rc = tls_err(l, -EACCES, "TLS: %s does not hold our pre-shared key (config.psk)",
			     peer);
	else if (reason && strstr(reason, "alert"))
		rc = tls_err(l, -EACCES, "TLS: %s refused the handshake (%s)%s", peer, reason,
			     tls(l)->conf->has_psk && !tls(l)->conf->creds[0]
				 ? ": does it hold the same pre-shared key? (config.psk)"
				 : "");
	else
		rc = tls_err(l, -EPROTO, "TLS handshake with %s failed (%s): %s", peer,
			     server ? "as receiver" : "as sender", reason ? reason : "no reason");
	ERR_clear_error();
	return rc;
}

/* The source names the receiver it expects: a host name or an address. */
static int expect_name(struct rmig_link *l, SSL *ssl)
{
	struct tls_conf *c = tls(l)->conf;
	const char *name = c->hostname[0] ? c->hostname : tls(l)->host;
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	char bare[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(name);
	struct in6_addr a;

	if (!c->creds[0])
		return 1;
	/* "[::1]" is how an IPv6 address is written with a port. */
	if (n > 2 && n < sizeof(bare) && name[0] == '[' && name[n - 1] == ']') {
		snprintf(bare, sizeof(bare), "%.*s", (int)(n - 2), name + 1);
		name = bare;
	}
	if (inet_pton(AF_INET, name, &a) == 1 || inet_pton(AF_INET6, name, &a) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(vp, name);
	return SSL_set1_host(ssl, name);
}

/* Keys for both directions; the kernel takes them if it can. */
static int next_record(struct rmig_link *l, int chan, struct tls_stream *s, uint8_t *dst,
		       size_t room, size_t *direct, int tmo);

/* A TLS 1.3 client's handshake ends before the receiver has checked its
 * certificate: the receiver's first record says whether it did (empty:
 * yes; an alert: why not), so that a refusal is never mistaken for a lost
 * connection. Sent and read here, before the kernel takes the keys. */
static int confirm(struct rmig_link *l, struct tls_stream *s, int chan, int server, int tmo)
{
	uint8_t rec[RMIG_TLS_HDR_LEN + 1 + RMIG_TLS_TAG_LEN];
	struct iovec v = { rec, 0 };
	size_t pos = 0, got;
	int rc;

	if (server) {
		v.iov_len = rmig_tls_seal(&s->tx, NULL, 0, &pos, 0, rec);
		return v.iov_len ? lower_send(l, chan, &v, 1, tmo)
				 : tls_err(l, -EIO, "TLS: cannot seal a record");
	}
	rc = next_record(l, chan, s, NULL, 0, &got, tmo);
	if (!rc && s->plain_len)
		rc = tls_err(l, -EPROTO, "TLS: %s sent data before confirming the handshake",
			     l->peer);
	return rc;
}

static int key_stream(struct rmig_link *l, struct tls_stream *s, int chan,
		      const struct hs_secrets *sec, int server, int tmo)
{
	const uint8_t *tx = server ? sec->server : sec->client;
	const uint8_t *rx = server ? sec->client : sec->server;
	size_t txl = server ? sec->server_len : sec->client_len;
	size_t rxl = server ? sec->client_len : sec->server_len;
	struct rmig_link *lo = l->lower;
	char why[160];
	int fd = -1;

	int rc;

	if (rmig_tls_dir_init(&s->tx, tx, txl, 1) || rmig_tls_dir_init(&s->rx, rx, rxl, 0))
		return tls_err(l, -EIO, "TLS: no traffic keys after the handshake with %s",
			       l->peer);
	rc = confirm(l, s, chan, server, tmo);
	if (rc)
		return rc;
	if (tls(l)->conf->ktls && lo->ops->stream_fd)
		fd = lo->ops->stream_fd(lo, chan);
	/* Receiving in the kernel only once sending is: a kernel that takes
	 * neither leaves both here ("user"); one half each is "mixed". */
	if (fd >= 0 && !rmig_tls_dir_to_kernel(&s->tx, fd, 1, why, sizeof(why)))
		rmig_tls_dir_to_kernel(&s->rx, fd, 0, why, sizeof(why));
	return 0;
}

/* Run the handshake of stream chan (-1: control) over the lower link; pre:
 * bytes already read from it (a receiver's peek). */
static int handshake(struct rmig_link *l, int chan, int server, const uint8_t *pre, size_t pre_len,
		     int tmo)
{
	struct tls_stream *s = stream_of(l, chan);
	struct tls_conf *c = tls(l)->conf;
	struct hs_bio hb = { .l = l,
			     .chan = chan,
			     .timeout_ms = tmo,
			     .end_ms = rmig_link_now_ms() + tmo,
			     .client = !server,
			     .pre = pre,
			     .pre_len = pre_len };
	struct hs_secrets sec = { 0 };
	char why[sizeof(l->err)];
	SSL *ssl = NULL;
	BIO *bio = NULL;
	int rc = -ENOMEM;

	pthread_once(&hs_method_once, make_hs_method);
	s->state = S_FAILED;
	hb.wbuf = malloc(MAX_HANDSHAKE_BYTES);
	if (hs_method && hb.wbuf)
		ssl = SSL_new(server ? c->server : c->client);
	if (ssl)
		bio = BIO_new(hs_method);
	if (!bio) {
		tls_err(l, rc, "TLS: out of memory");
		goto out;
	}
	BIO_set_data(bio, &hb);
	SSL_set_bio(ssl, bio, bio);
	SSL_set_app_data(ssl, &sec);
	if (!server && !expect_name(l, ssl)) {
		rc = tls_err(l, -EINVAL, "config.tls_hostname: cannot check for that name");
		goto out;
	}
	if ((server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1) {
		rc = handshake_error(l, ssl, &hb, server);
		memcpy(why, l->err, sizeof(why));
		hs_flush(&hb); /* our alert, best effort: the peer hears why ... */
		memcpy(l->err, why, sizeof(why)); /* ... and the error stays ours */
		goto out;
	}
	rc = hs_flush(&hb);
	/* With a pre-shared key only, the key must be what authenticated the
	 * peer: never a handshake that merely completed without it. */
	if (!rc && !c->creds[0] && !SSL_session_reused(ssl))
		rc = tls_err(l, -EACCES,
			     "TLS: %s does not hold our pre-shared key (config.psk): the "
			     "handshake did not use it",
			     l->peer);
	if (!rc)
		rc = key_stream(l, s, chan, &sec, server, tmo);
	if (!rc) {
		s->state = S_SEALED;
		l->peer_verified = 1;
		update_sealing(l);
	}
out:
	SSL_free(ssl); /* frees the BIO */
	OPENSSL_cleanse(&sec, sizeof(sec));
	free(hb.wbuf);
	return rc;
}

/* A receiver's first read on a connection: TLS, or clear where allowed. */
static int open_accepted(struct rmig_link *l, int tmo)
{
	struct tls_stream *s = &tls(l)->ctrl;
	int rc = lower_recv(l, -1, s->peek, RMIG_TLS_HDR_LEN, tmo);

	if (rc) {
		s->state = S_FAILED;
		return rc;
	}
	if (s->peek[0] == TLS_HANDSHAKE && s->peek[1] == 3)
		return handshake(l, -1, 1, s->peek, RMIG_TLS_HDR_LEN, tmo);
	if (tls(l)->conf->clear_loopback && l->peer_loopback) {
		s->state = S_CLEAR;
		s->peek_len = RMIG_TLS_HDR_LEN;
		return 0;
	}
	s->state = S_REFUSED;
	return tls_err(l, -EPROTO,
		       "%s speaks in clear, but this receiver requires TLS: give the sender "
		       "config.tls on and the same credentials",
		       l->peer);
}

/* ---- sealed I/O ---- */

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;

	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* Room in s->out for the records of a send of total bytes (up to
 * OUT_RECORDS of them). */
static int out_room(struct tls_stream *s, size_t total)
{
	size_t want = (total + RMIG_TLS_MAX_PLAIN - 1) / RMIG_TLS_MAX_PLAIN;
	uint8_t *out;

	want = want < 1 ? 1 : want > OUT_RECORDS ? OUT_RECORDS : want;
	if (s->out_records >= want)
		return 0;
	if (!(out = malloc(want * OUT_RECORD_LEN)))
		return -ENOMEM;
	free(s->out); /* sealed records only: nothing in clear */
	s->out = out;
	s->out_records = want;
	return 0;
}

static int sealed_send(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct tls_stream *s = stream_of(l, chan);
	size_t total = iov_total(iov, n), pos = 0;

	if (s->tx.kernel)
		return lower_send(l, chan, iov, n, tmo);
	if (out_room(s, total))
		return tls_err(l, -ENOMEM, "TLS: out of memory");
	while (pos < total) {
		struct iovec v = { s->out, 0 };
		int rc;

		for (size_t r = 0; r < s->out_records && pos < total; r++) {
			size_t take =
			    total - pos < RMIG_TLS_MAX_PLAIN ? total - pos : RMIG_TLS_MAX_PLAIN;
			size_t w = rmig_tls_seal(&s->tx, iov, n, &pos, take,
						 (uint8_t *)v.iov_base + v.iov_len);

			if (!w)
				return tls_err(l, -EKEYEXPIRED,
					       "TLS: cannot seal a record to %s (key used for "
					       "2^24 records, AES-GCM's limit: the link is set up "
					       "again)",
					       l->peer);
			v.iov_len += w;
		}
		rc = lower_send(l, chan, &v, 1, tmo);
		if (rc)
			return rc;
	}
	return 0;
}

/* A TLS 1.3 client has finished its handshake before the receiver checked
 * its certificate: a refusal arrives as the first record after it. */
static int alert_error(struct rmig_link *l, const uint8_t *alert, size_t len)
{
	int desc = len >= 2 ? alert[1] : -1;
	const char *what = desc >= 0 ? SSL_alert_desc_string_long(desc) : "unreadable";
	int about_cert = desc == 42 || desc == 43 || desc == 44 || desc == 45 || desc == 46 ||
			 desc == 48 || desc == 116;

	if (about_cert)
		return tls_err(l, -EACCES, "TLS: %s refused our certificate (%s)", l->peer, what);
	return tls_err(l, -EPROTO, "TLS: %s ended the session (alert: %s)", l->peer, what);
}

static int open_error(struct rmig_link *l, int rc, int type)
{
	if (rc == -EBADMSG)
		return tls_err(l, rc,
			       "TLS: a record from %s failed authentication (corrupted or forged "
			       "in transit); none of it was used",
			       l->peer);
	if (rc == -ENOSPC)
		return tls_err(l, -EKEYEXPIRED,
			       "TLS: %s sent 2^24 records under one key (AES-GCM's limit)",
			       l->peer);
	return tls_err(l, -EPROTO, "TLS: %s sent %s after the handshake", l->peer,
		       type == 21 ? "an alert (it ended the session)"
				  : "a message this side does not take (a key update?)");
}

/* s->in of cap bytes, holding what it held, unopened records at its start. */
static int size_in(struct rmig_link *l, struct tls_stream *s, size_t cap)
{
	size_t have = s->in_end - s->in_start;
	uint8_t *in = s->in;

	if (s->in_cap != cap && !(in = malloc(cap)))
		return tls_err(l, -ENOMEM, "TLS: out of memory");
	if (have)
		memmove(in, s->in + s->in_start, have);
	if (in != s->in && s->in)
		OPENSSL_clear_free(s->in, s->in_cap);
	s->in = in;
	s->in_cap = cap;
	s->in_start = 0;
	s->in_end = have;
	return 0;
}

/* Have at least need bytes of records in s->in, and whatever else fits
 * and is ready once the stream is sealed. Before (the handshake's
 * confirmation), exactly need: the kernel may take the keys next, and
 * bytes read ahead here would be lost to it. A stream that only sends
 * keeps a buffer of one record. */
static int fill_in(struct rmig_link *l, int chan, struct tls_stream *s, size_t need, int tmo)
{
	size_t have = s->in_end - s->in_start, cap, room;
	int rc;

	if (have >= need)
		return 0;
	cap = s->state == S_SEALED ? IN_BYTES : RMIG_TLS_MAX_RECORD;
	if (s->in_cap != cap || !have || s->in_start + need > cap) {
		rc = size_in(l, s, cap); /* and room for the most */
		if (rc)
			return rc;
	}
	room = s->state == S_SEALED ? cap - s->in_end : need - have;
	rc = lower_recv_some(l, chan, s->in + s->in_end, need - have, room, tmo);
	if (rc < 0)
		return rc;
	s->in_end += (size_t)rc;
	return 0;
}

/* Open the next record of the stream in s->in. Its plaintext goes
 * straight to dst when it has room for the whole record (*direct: how
 * many bytes it got), else it stays in s->in (s->plain_len): a copy
 * less per record, where the receiver reads pages whole. */
static int next_record(struct rmig_link *l, int chan, struct tls_stream *s, uint8_t *dst,
		       size_t room, size_t *direct, int tmo)
{
	int body, plain, type = 0, rc;
	uint8_t *rec, *out;

	*direct = 0;
	rc = fill_in(l, chan, s, RMIG_TLS_HDR_LEN, tmo);
	if (rc)
		return rc;
	body = rmig_tls_body_len(s->in + s->in_start);
	if (body < 0)
		return tls_err(l, -EBADMSG, "TLS: %s sent a bad record header", l->peer);
	rc = fill_in(l, chan, s, RMIG_TLS_HDR_LEN + (size_t)body, tmo);
	if (rc)
		return rc;
	rec = s->in + s->in_start;
	s->in_start += RMIG_TLS_HDR_LEN + (size_t)body;
	out = room >= (size_t)body - RMIG_TLS_TAG_LEN ? dst : rec + RMIG_TLS_HDR_LEN;
	plain = rmig_tls_open_to(&s->rx, rec, rec + RMIG_TLS_HDR_LEN, (size_t)body, out, &type);
	if (plain < 0)
		return open_error(l, plain, type);
	if (type == 21)
		return alert_error(l, out, (size_t)plain);
	if (type != 23)
		return open_error(l, -EPROTO, type);
	if (out == dst) {
		*direct = (size_t)plain;
		return 0;
	}
	s->plain_off = (size_t)(out - s->in);
	s->plain_len = (size_t)plain;
	return 0;
}

/* The kernel opens records: name what it refused. */
static int kernel_recv(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct rmig_link *lo = l->lower;
	int rc = chan < 0 ? lo->ops->ctrl_recv(lo, iov[0].iov_base, iov[0].iov_len, tmo)
			  : lo->ops->chan_recv(lo, (unsigned)chan, iov, n, tmo);

	if (rc == -EBADMSG)
		return open_error(l, rc, 0);
	if (rc == -EIO)
		return open_error(l, -EPROTO, 21);
	return lower_up(l, rc);
}

static int sealed_recv(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct tls_stream *s = stream_of(l, chan);

	if (s->rx.kernel && !s->plain_len)
		return kernel_recv(l, chan, iov, n, tmo);
	for (int i = 0; i < n; i++) {
		uint8_t *dst = iov[i].iov_base;

		for (size_t left = iov[i].iov_len; left;) {
			size_t take;

			if (!s->plain_len) {
				int rc = next_record(l, chan, s, dst, left, &take, tmo);

				if (rc)
					return rc;
				dst += take;
				left -= take;
				continue;
			}
			take = left < s->plain_len ? left : s->plain_len;
			memcpy(dst, s->in + s->plain_off, take);
			dst += take;
			left -= take;
			s->plain_off += take;
			s->plain_len -= take;
		}
	}
	return 0;
}

/* Clear I/O: the peeked bytes first. */
static int clear_recv(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct tls_stream *s = stream_of(l, chan);
	struct iovec rest[2];

	if (!s->peek_len) {
		struct rmig_link *lo = l->lower;

		return lower_up(
		    l, chan < 0 ? lo->ops->ctrl_recv(lo, iov[0].iov_base, iov[0].iov_len, tmo)
				: lo->ops->chan_recv(lo, (unsigned)chan, iov, n, tmo));
	}
	/* Only the control stream peeks, and it reads one buffer at a time. */
	rest[0] = iov[0];
	while (s->peek_len && rest[0].iov_len) {
		size_t off = RMIG_TLS_HDR_LEN - s->peek_len;
		size_t take = rest[0].iov_len < s->peek_len ? rest[0].iov_len : s->peek_len;

		memcpy(rest[0].iov_base, s->peek + off, take);
		rest[0].iov_base = (uint8_t *)rest[0].iov_base + take;
		rest[0].iov_len -= take;
		s->peek_len -= take;
	}
	return rest[0].iov_len ? lower_recv(l, chan, rest[0].iov_base, rest[0].iov_len, tmo) : 0;
}

static int stream_gone(struct rmig_link *l, struct tls_stream *s)
{
	if (s->state == S_REFUSED || s->state == S_FAILED)
		return -EPROTO; /* l->err says why, from when it happened */
	return tls_err(l, -ENOTCONN, "TLS: no such stream");
}

static int stream_recv(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct tls_stream *s = stream_of(l, chan);
	int rc = 0;

	if (s->state == S_OPENING)
		rc = open_accepted(l, tmo);
	if (rc)
		return rc;
	if (s->state == S_SEALED)
		return sealed_recv(l, chan, iov, n, tmo);
	if (s->state == S_CLEAR)
		return clear_recv(l, chan, iov, n, tmo);
	return stream_gone(l, s);
}

static int stream_send(struct rmig_link *l, int chan, const struct iovec *iov, int n, int tmo)
{
	struct tls_stream *s = stream_of(l, chan);

	if (s->state == S_SEALED)
		return sealed_send(l, chan, iov, n, tmo);
	/* In clear: as allowed, or one refusal to a peer that spoke clear. */
	if (s->state == S_CLEAR || s->state == S_REFUSED)
		return lower_send(l, chan, iov, n, tmo);
	return stream_gone(l, s);
}

/* ---- the link ops ---- */

static int tls_create(struct rmig_link *l)
{
	struct tls_link *t = calloc(1, sizeof(*t));
	struct tls_conf *c = calloc(1, sizeof(*c));

	if (!t || !c) {
		free(t);
		free(c);
		return -ENOMEM;
	}
	atomic_init(&c->refs, 1);
	pthread_mutex_init(&c->lock, NULL);
	c->ktls = 1;
	t->conf = c;
	l->priv = t;
	return 0;
}

static void clear_streams(struct rmig_link *l)
{
	struct tls_link *t = tls(l);

	stream_clear(&t->ctrl);
	for (int i = 0; i < RMIG_LINK_MAX_CHANNELS; i++)
		stream_clear(&t->chan[i]);
	l->sealing = NULL;
	l->peer_verified = 0;
}

static void tls_destroy(struct rmig_link *l)
{
	struct tls_link *t = tls(l);

	if (!t)
		return;
	clear_streams(l);
	conf_put(t->conf);
	free(t);
	l->priv = NULL;
}

static void tls_close_session(struct rmig_link *l)
{
	clear_streams(l);
}

static void peer_up(struct rmig_link *l)
{
	memcpy(l->peer, l->lower->peer, sizeof(l->peer));
	l->peer_loopback = l->lower->peer_loopback;
}

static int tls_listen(struct rmig_link *l, const char *host, uint16_t *port)
{
	int rc = conf_ready(l, 1);

	return rc ? rc : lower_up(l, l->lower->ops->listen(l->lower, host, port));
}

/* conn shares l's configuration; its opening reads first (open_accepted). */
static int tls_accept(struct rmig_link *l, int tmo, struct rmig_link *conn)
{
	struct tls_link *c = tls(conn);
	int rc = lower_up(l, l->lower->ops->accept(l->lower, tmo, conn->lower));

	if (rc)
		return rc;
	peer_up(conn);
	conf_put(c->conf);
	atomic_fetch_add(&tls(l)->conf->refs, 1);
	c->conf = tls(l)->conf;
	c->ctrl.state = S_OPENING;
	return 0;
}

static int tls_adopt_channel(struct rmig_link *l, struct rmig_link *conn, unsigned chan, int *node)
{
	struct tls_stream *from = &tls(conn)->ctrl;
	int rc;

	if (from->state != S_SEALED && from->state != S_CLEAR)
		return tls_err(l, -EPROTO, "TLS: data channel %u has no session", chan);
	/* A channel is sealed exactly when its session is: a clear one (from
	 * loopback, as clear=loopback allows) never joins a sealed session. */
	if (from->state != tls(l)->ctrl.state)
		return tls_err(l, -EPROTO, "TLS: data channel %u from %s is %s, its session is %s",
			       chan, conn->peer, from->state == S_CLEAR ? "in clear" : "sealed",
			       from->state == S_CLEAR ? "sealed" : "in clear");
	rc = lower_up(l, l->lower->ops->adopt_channel(l->lower, conn->lower, chan, node));
	if (rc)
		return rc;
	stream_clear(&tls(l)->chan[chan]);
	tls(l)->chan[chan] = *from;
	memset(from, 0, sizeof(*from));
	update_sealing(l);
	update_sealing(conn);
	return 0;
}

/* A source in clear: only to loopback when the configuration allows it. */
static int clear_to(struct rmig_link *l, const char *host)
{
	return tls(l)->conf->clear_loopback && rmig_link_host_is_loopback(host);
}

static int tls_connect_ctrl(struct rmig_link *l, const char *host, uint16_t port, int tmo)
{
	struct tls_link *t = tls(l);
	int clear = clear_to(l, host), rc;

	snprintf(t->host, sizeof(t->host), "%s", host ? host : "");
	rc = clear ? 0 : conf_ready(l, 0);
	if (!rc)
		rc = lower_up(l, l->lower->ops->connect_ctrl(l->lower, host, port, tmo));
	peer_up(l);
	if (rc)
		return rc;
	/* Clear only to the address actually reached: the name is resolved
	 * again to connect, and may not answer the same twice. */
	if (clear && !l->peer_loopback) {
		l->lower->ops->close_session(l->lower);
		return tls_err(l, -EACCES,
			       "TLS: %s resolved to loopback, then the connection reached %s: not "
			       "going on in clear",
			       host, l->peer);
	}
	if (clear) {
		t->ctrl.state = S_CLEAR;
		return 0;
	}
	return handshake(l, -1, 0, NULL, 0, tmo);
}

static int tls_connect_channel(struct rmig_link *l, int tmo, int node, unsigned *chan)
{
	int rc = lower_up(l, l->lower->ops->connect_channel(l->lower, tmo, node, chan));

	if (rc)
		return rc;
	if (tls(l)->ctrl.state == S_CLEAR) {
		tls(l)->chan[*chan].state = S_CLEAR;
		return 0;
	}
	return handshake(l, (int)*chan, 0, NULL, 0, tmo);
}

static int tls_ctrl_send(struct rmig_link *l, const struct iovec *iov, int n, int tmo)
{
	return stream_send(l, -1, iov, n, tmo);
}

static int tls_ctrl_recv(struct rmig_link *l, void *buf, size_t len, int tmo)
{
	struct iovec v = { buf, len };

	return stream_recv(l, -1, &v, 1, tmo);
}

static int check_chan(struct rmig_link *l, unsigned chan)
{
	if (chan >= RMIG_LINK_MAX_CHANNELS)
		return tls_err(l, -EINVAL, "no data channel %u", chan);
	return 0;
}

static int tls_chan_send(struct rmig_link *l, unsigned chan, const struct iovec *iov, int n,
			 int tmo)
{
	int rc = check_chan(l, chan);

	return rc ? rc : stream_send(l, (int)chan, iov, n, tmo);
}

static int tls_chan_recv(struct rmig_link *l, unsigned chan, const struct iovec *iov, int n,
			 int tmo)
{
	int rc = check_chan(l, chan);

	return rc ? rc : stream_recv(l, (int)chan, iov, n, tmo);
}

static int no_placement(struct rmig_link *l)
{
	if (l->sealing == NULL && tls(l)->ctrl.state == S_CLEAR)
		return 1;
	tls_err(l, -EPERM,
		"RDMA WRITE places pages unsealed: with encryption they go through the "
		"sealed staging buffers (config.pin=staging; or config.tls off on a trusted "
		"fabric)");
	return 0;
}

static int tls_mem_expose(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			  void **blob, size_t *len)
{
	return no_placement(l) ? lower_up(l, l->lower->ops->mem_expose(l->lower, mem, n, blob, len))
			       : -EPERM;
}

static int tls_mem_import(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			  const void *blob, size_t len)
{
	return no_placement(l) ? lower_up(l, l->lower->ops->mem_import(l->lower, mem, n, blob, len))
			       : -EPERM;
}

/* rmig info: whether this kernel can take the keys. Attaching the ULP to a
 * socket that is not connected fails with ENOTCONN when the tls module is
 * there, ENOENT when it is not. */
static void tls_describe(char *buf, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP), e = ENOENT;

	if (fd >= 0 && setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")))
		e = errno;
	if (fd >= 0)
		close(fd);
	snprintf(buf, len, "  TLS 1.3 (%s); kernel TLS: %s\n", OpenSSL_version(OPENSSL_VERSION),
		 e == ENOENT ? "no (no tls module: records sealed in user space)"
			     : "yes (the tls module is there)");
}

/* The socket under a sealed stream is not to be written in clear. */
static int tls_stream_fd(struct rmig_link *l, int chan)
{
	(void)l;
	(void)chan;
	return -ENOTSUP;
}

/* Not registered by name: the engine wraps a link in it when the
 * configuration asks for encryption (rmig_link_wrap). */
const struct rmig_link_ops rmig_tls_link_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "tls",
	.set_option = tls_set_option,
	.create = tls_create,
	.destroy = tls_destroy,
	.listen = tls_listen,
	.accept = tls_accept,
	.adopt_channel = tls_adopt_channel,
	.connect_ctrl = tls_connect_ctrl,
	.connect_channel = tls_connect_channel,
	.ctrl_send = tls_ctrl_send,
	.ctrl_recv = tls_ctrl_recv,
	.chan_send = tls_chan_send,
	.chan_recv = tls_chan_recv,
	.mem_expose = tls_mem_expose,
	.mem_import = tls_mem_import,
	.close_session = tls_close_session,
	.describe = tls_describe,
	.stream_fd = tls_stream_fd,
};
