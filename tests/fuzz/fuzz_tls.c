/* fuzz_tls.c - libFuzzer target: the receiving side of the tls link
 * (transport/tls.c) against a peer whose every byte comes from the input.
 *
 * A listening tls link over an in-memory link accepts one connection, as
 * the listener does, and the engine's reads are made on it: the first
 * bytes decide TLS or clear (open_accepted), a TLS ClientHello goes to
 * OpenSSL's server through the link's BIO (hs_read, hs_write), every
 * failure is named (handshake_error). The first input byte picks the
 * receiver: bit 0 credentials as a PSK (else the peer has nothing to
 * offer but clear), bit 1 clear allowed from a loopback peer, bit 2 the
 * peer on loopback. Then the input records are opened with a fixed key
 * (rmig_tls_body_len, rmig_tls_open), as a sealed stream's are.
 *
 * Oracles beyond ASan/UBSan/LSan: every failing op leaves a message; an
 * opened record's plaintext lies inside its body.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link.h"
#include "tls_record.h"

static const uint8_t *in;
static size_t in_len;

static int mem_create(struct rmig_link *l)
{
	(void)l;
	return 0;
}

static void mem_destroy(struct rmig_link *l)
{
	(void)l;
}

static int mem_listen(struct rmig_link *l, const char *host, uint16_t *port)
{
	(void)l;
	(void)host;
	*port = 1;
	return 0;
}

static int mem_accept(struct rmig_link *l, int tmo, struct rmig_link *conn)
{
	(void)l;
	(void)tmo;
	snprintf(conn->peer, sizeof(conn->peer), "fuzz:1");
	return 0;
}

static int mem_send(struct rmig_link *l, const struct iovec *iov, int n, int tmo)
{
	(void)l;
	(void)iov;
	(void)n;
	(void)tmo;
	return 0;
}

static int mem_recv(struct rmig_link *l, void *buf, size_t len, int tmo)
{
	(void)tmo;
	if (len > in_len) {
		rmig_link_err(l, "fuzz: connection closed");
		return -ECONNRESET;
	}
	memcpy(buf, in, len);
	in += len;
	in_len -= len;
	return 0;
}

static void mem_close(struct rmig_link *l)
{
	(void)l;
}

static void mem_interrupt(struct rmig_link *l, unsigned flags)
{
	(void)l;
	(void)flags;
}

static const struct rmig_link_ops mem_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "fuzzmem",
	.create = mem_create,
	.destroy = mem_destroy,
	.listen = mem_listen,
	.accept = mem_accept,
	.ctrl_send = mem_send,
	.ctrl_recv = mem_recv,
	.close_session = mem_close,
	.interrupt = mem_interrupt,
};

static void serve(uint8_t mode)
{
	struct rmig_link *mem, *l, *conn;
	uint16_t port = 0;
	uint8_t buf[4096];

	if (rmig_link_open("fuzzmem", &mem) ||
	    rmig_link_wrap(mem, rmig_link_find_wrapper("tls"), &l))
		abort();
	if (mode & 1)
		rmig_link_set_option(l, "psk",
				     "00112233445566778899aabbccddeeff"
				     "00112233445566778899aabbccddeeff");
	rmig_link_set_option(l, "clear", mode & 2 ? "loopback" : "never");
	if (l->ops->listen(l, NULL, &port)) {
		if (!l->err[0])
			abort();
		rmig_link_destroy(l);
		return;
	}
	if (rmig_link_accept(l, 0, &conn))
		abort();
	conn->peer_loopback = conn->lower->peer_loopback = (mode & 4) != 0;
	for (int i = 0; i < 64; i++) {
		size_t want = (size_t)(1 + (i * 37) % 3000);

		/* No timeout (-1): the in-memory link never waits, and a handshake's
		 * timeout of 0 would end it at its first read. */
		if (conn->ops->ctrl_recv(conn, buf, want, -1)) {
			if (!conn->err[0])
				abort();
			/* A refusal, answered in clear if the peer spoke clear. */
			struct iovec v = { buf, 8 };
			conn->ops->ctrl_send(conn, &v, 1, -1);
			break;
		}
	}
	conn->ops->close_session(conn);
	rmig_link_destroy(conn);
	rmig_link_destroy(l);
}

/* The rest of the input as sealed records under a fixed key. */
static void open_records(void)
{
	static const uint8_t secret[32] = { 7 };
	static uint8_t rec[RMIG_TLS_MAX_RECORD];
	struct rmig_tls_dir rx;

	if (rmig_tls_dir_init(&rx, secret, sizeof(secret), 0))
		abort();
	while (in_len >= RMIG_TLS_HDR_LEN) {
		int body = rmig_tls_body_len(in), type = 0, n;

		if (body < 0 || (size_t)body > in_len - RMIG_TLS_HDR_LEN)
			break;
		memcpy(rec, in, RMIG_TLS_HDR_LEN + (size_t)body);
		in += RMIG_TLS_HDR_LEN + (size_t)body;
		in_len -= RMIG_TLS_HDR_LEN + (size_t)body;
		n = rmig_tls_open(&rx, rec, rec + RMIG_TLS_HDR_LEN, (size_t)body, &type);
		if (n > body - RMIG_TLS_TAG_LEN - 1)
			abort();
	}
	rmig_tls_dir_clear(&rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int registered;

	if (!registered && rmig_link_register(&mem_ops))
		abort();
	registered = 1;
	if (size < 1)
		return 0;
	in = data + 1;
	in_len = size - 1;
	serve(data[0]);
	open_records();
	return 0;
}
