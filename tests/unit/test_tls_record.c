/* test_tls_record.c - the record layer speaks standard TLS 1.3: records
 * OpenSSL seals are opened here, records sealed here are read by OpenSSL
 * (so a kernel TLS peer, which uses the same format, reads them too), a
 * changed byte anywhere is refused before any plaintext is used, and a key
 * stops one record short of AES-GCM's limit.
 *
 * The handshake runs between two OpenSSL objects over a memory BIO pair,
 * with an external PSK as the tls link uses it; the keylog callback hands
 * over the application traffic secrets, as in transport/tls.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "tls_record.h"

struct secrets {
	uint8_t client[48], server[48];
	size_t client_len, server_len;
};

static void take_secret(uint8_t *dst, size_t *len, const char *hex)
{
	size_t n = strlen(hex) / 2;

	for (size_t i = 0; i < n && i < 48; i++) {
		unsigned v;

		sscanf(hex + 2 * i, "%2x", &v);
		dst[i] = (uint8_t)v;
	}
	*len = n;
}

static void keylog(const SSL *ssl, const char *line)
{
	struct secrets *s = SSL_get_app_data(ssl);
	const char *hex = strrchr(line, ' ') + 1;

	if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24))
		take_secret(s->client, &s->client_len, hex);
	else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24))
		take_secret(s->server, &s->server_len, hex);
}

static const uint8_t psk[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };

static SSL_SESSION *session(SSL *ssl)
{
	static const unsigned char aes128gcm[] = { 0x13, 0x01 };
	SSL_SESSION *s = SSL_SESSION_new();

	SSL_SESSION_set1_master_key(s, psk, sizeof(psk));
	SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, aes128gcm));
	SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION);
	return s;
}

static int use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
		  SSL_SESSION **sess)
{
	(void)md;
	*sess = session(ssl);
	*id = (const unsigned char *)"t";
	*idlen = 1;
	return 1;
}

static int find_cb(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	(void)id;
	(void)idlen;
	*sess = session(ssl);
	return 1;
}

struct pair {
	SSL_CTX *cctx, *sctx;
	SSL *client, *server;
	BIO *cnet, *snet; /* the wire: what one side wrote, for the other */
	struct secrets cs, ss;
};

static SSL_CTX *ctx(int server)
{
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256");
	SSL_CTX_set_num_tickets(c, 0);
	SSL_CTX_clear_options(c, SSL_OP_ENABLE_MIDDLEBOX_COMPAT);
	SSL_CTX_set_keylog_callback(c, keylog);
	if (server)
		SSL_CTX_set_psk_find_session_callback(c, find_cb);
	else
		SSL_CTX_set_psk_use_session_callback(c, use_cb);
	return c;
}

/* Client and server, handshake done over memory. */
static void pair_up(struct pair *p)
{
	BIO *cint, *sint;

	memset(p, 0, sizeof(*p));
	p->cctx = ctx(0);
	p->sctx = ctx(1);
	p->client = SSL_new(p->cctx);
	p->server = SSL_new(p->sctx);
	SSL_set_app_data(p->client, &p->cs);
	SSL_set_app_data(p->server, &p->ss);
	assert_int_equal(BIO_new_bio_pair(&cint, 1 << 20, &p->cnet, 1 << 20), 1);
	assert_int_equal(BIO_new_bio_pair(&sint, 1 << 20, &p->snet, 1 << 20), 1);
	SSL_set_bio(p->client, cint, cint);
	SSL_set_bio(p->server, sint, sint);
	SSL_set_connect_state(p->client);
	SSL_set_accept_state(p->server);
	for (int i = 0;
	     i < 20 && !(SSL_is_init_finished(p->client) && SSL_is_init_finished(p->server)); i++) {
		uint8_t buf[16384];
		int n;

		SSL_do_handshake(p->client);
		while ((n = BIO_read(p->cnet, buf, sizeof(buf))) > 0)
			BIO_write(p->snet, buf, n);
		SSL_do_handshake(p->server);
		while ((n = BIO_read(p->snet, buf, sizeof(buf))) > 0)
			BIO_write(p->cnet, buf, n);
	}
	assert_true(SSL_is_init_finished(p->client) && SSL_is_init_finished(p->server));
	assert_int_equal(p->cs.client_len, 32);
	assert_int_equal(p->ss.client_len, 32);
	assert_memory_equal(p->cs.client, p->ss.client, 32);
}

static void pair_down(struct pair *p)
{
	SSL_free(p->client);
	SSL_free(p->server);
	BIO_free(p->cnet);
	BIO_free(p->snet);
	SSL_CTX_free(p->cctx);
	SSL_CTX_free(p->sctx);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 131 + seed);
}

/* OpenSSL seals, we open: every record, in order, into the same bytes;
 * every other one in place, the rest straight into where they go. */
static void test_open_what_openssl_seals(void **state)
{
	static uint8_t msg[40000], rec[RMIG_TLS_MAX_RECORD], dst[40000 + RMIG_TLS_MAX_BODY];
	struct rmig_tls_dir rx;
	unsigned k = 0;
	struct pair p;
	size_t got = 0;

	(void)state;
	pair_up(&p);
	fill(msg, sizeof(msg), 7);
	assert_int_equal(SSL_write(p.client, msg, sizeof(msg)), (int)sizeof(msg));
	assert_int_equal(rmig_tls_dir_init(&rx, p.ss.client, p.ss.client_len, 0), 0);
	while (got < sizeof(msg)) {
		int body, n, type = 0;

		assert_int_equal(BIO_read(p.cnet, rec, RMIG_TLS_HDR_LEN), RMIG_TLS_HDR_LEN);
		body = rmig_tls_body_len(rec);
		assert_true(body > 0);
		assert_int_equal(BIO_read(p.cnet, rec + RMIG_TLS_HDR_LEN, body), body);
		if (k++ % 2) {
			n = rmig_tls_open_to(&rx, rec, rec + RMIG_TLS_HDR_LEN, (size_t)body,
					     dst + got, &type);
			assert_true(n > 0 && got + (size_t)n <= sizeof(msg));
			assert_memory_equal(dst + got, msg + got, (size_t)n);
		} else {
			n = rmig_tls_open(&rx, rec, rec + RMIG_TLS_HDR_LEN, (size_t)body, &type);
			assert_true(n > 0 && got + (size_t)n <= sizeof(msg));
			assert_memory_equal(rec + RMIG_TLS_HDR_LEN, msg + got, (size_t)n);
		}
		assert_int_equal(type, 23);
		got += (size_t)n;
	}
	rmig_tls_dir_clear(&rx);
	pair_down(&p);
}

/* We seal (from an iovec, as the data path does), OpenSSL reads. */
static void test_openssl_reads_what_we_seal(void **state)
{
	static uint8_t a[5000], b[30000], out[RMIG_TLS_MAX_RECORD], back[35000];
	struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
	struct rmig_tls_dir tx;
	struct pair p;
	size_t pos = 0, total = sizeof(a) + sizeof(b), got = 0;

	(void)state;
	pair_up(&p);
	fill(a, sizeof(a), 1);
	fill(b, sizeof(b), 2);
	assert_int_equal(rmig_tls_dir_init(&tx, p.cs.client, p.cs.client_len, 1), 0);
	while (pos < total) {
		size_t take = total - pos < RMIG_TLS_MAX_PLAIN ? total - pos : RMIG_TLS_MAX_PLAIN;
		size_t w = rmig_tls_seal(&tx, iov, 2, &pos, take, out);

		assert_int_equal(w, take + RMIG_TLS_HDR_LEN + 1 + RMIG_TLS_TAG_LEN);
		assert_int_equal(BIO_write(p.snet, out, (int)w), (int)w);
	}
	while (got < total) {
		int n = SSL_read(p.server, back + got, (int)(sizeof(back) - got));

		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_memory_equal(back, a, sizeof(a));
	assert_memory_equal(back + sizeof(a), b, sizeof(b));
	rmig_tls_dir_clear(&tx);
	pair_down(&p);
}

/* One record sealed and opened by us with fresh directions of one secret. */
static int seal_one(const uint8_t *secret, uint8_t *rec, size_t len)
{
	static uint8_t plain[RMIG_TLS_MAX_PLAIN];
	struct iovec v = { plain, len };
	struct rmig_tls_dir tx;
	size_t pos = 0, w;

	fill(plain, len, 3);
	assert_int_equal(rmig_tls_dir_init(&tx, secret, 32, 1), 0);
	w = rmig_tls_seal(&tx, &v, 1, &pos, len, rec);
	rmig_tls_dir_clear(&tx);
	return (int)w;
}

/* Any changed byte (header, ciphertext, tag) is refused, opened in place
 * or elsewhere. */
static void test_tampering_refused(void **state)
{
	static uint8_t rec[RMIG_TLS_MAX_RECORD], copy[RMIG_TLS_MAX_RECORD], out[RMIG_TLS_MAX_BODY];
	uint8_t secret[32] = { 9 };
	int w = seal_one(secret, rec, 1000);

	(void)state;
	for (int at = 0; at < w; at += 97) {
		struct rmig_tls_dir rx;
		int body, type = 0, rc;

		memcpy(copy, rec, (size_t)w);
		copy[at] ^= 0x20;
		assert_int_equal(rmig_tls_dir_init(&rx, secret, 32, 0), 0);
		body = rmig_tls_body_len(copy);
		rc = body < 0 ? body
		     : at % 2
			 ? rmig_tls_open_to(&rx, copy, copy + RMIG_TLS_HDR_LEN, (size_t)body, out,
					    &type)
			 : rmig_tls_open(&rx, copy, copy + RMIG_TLS_HDR_LEN, (size_t)body, &type);
		assert_int_equal(rc, -EBADMSG);
		rmig_tls_dir_clear(&rx);
	}
}

/* Headers: only application_data of TLS 1.2 legacy version, with room for
 * a content type and a tag, at most 2^14 + 256 bytes. */
static void test_headers_checked(void **state)
{
	uint8_t h[5] = { 23, 3, 3, 0, 17 };

	(void)state;
	assert_int_equal(rmig_tls_body_len(h), 17);
	h[4] = 16;
	assert_int_equal(rmig_tls_body_len(h), -EBADMSG);
	h[3] = (RMIG_TLS_MAX_BODY + 1) >> 8, h[4] = (RMIG_TLS_MAX_BODY + 1) & 0xff;
	assert_int_equal(rmig_tls_body_len(h), -EBADMSG);
	h[3] = 0, h[4] = 100, h[0] = 22;
	assert_int_equal(rmig_tls_body_len(h), -EBADMSG);
	h[0] = 23, h[2] = 1;
	assert_int_equal(rmig_tls_body_len(h), -EBADMSG);
}

/* A key stops one record short of 2^24. */
static void test_key_limit(void **state)
{
	static uint8_t rec[RMIG_TLS_MAX_RECORD];
	uint8_t secret[32] = { 4 }, plain[10] = { 0 };
	struct iovec v = { plain, sizeof(plain) };
	struct rmig_tls_dir tx, rx;
	size_t pos = 0;
	int type;

	(void)state;
	assert_int_equal(rmig_tls_dir_init(&tx, secret, 32, 1), 0);
	assert_int_equal(rmig_tls_dir_init(&rx, secret, 32, 0), 0);
	tx.seq = rx.seq = RMIG_TLS_MAX_RECORDS - 1;
	assert_int_equal(rmig_tls_seal(&tx, &v, 1, &pos, sizeof(plain), rec), 0);
	assert_int_equal(rmig_tls_open(&rx, rec, rec + 5, 27, &type), -ENOSPC);
	rmig_tls_dir_clear(&tx);
	rmig_tls_dir_clear(&rx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_what_openssl_seals),
		cmocka_unit_test(test_openssl_reads_what_we_seal),
		cmocka_unit_test(test_tampering_refused),
		cmocka_unit_test(test_headers_checked),
		cmocka_unit_test(test_key_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
