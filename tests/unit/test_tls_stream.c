/* test_tls_stream.c - the tls link's sealed data path over 127.0.0.1: bytes
 * come out as they went in whatever the sizes of the sends and receives
 * (records split and joined across calls, several records per lower read,
 * read-ahead carried from an accepted connection into the channel that
 * adopts it), over a lower link that reads what it has ready (tcp's
 * recv_some) and over one that cannot say (exact reads); nothing read
 * ahead before a stream is sealed (the kernel may take its keys); a forged
 * record fails with nothing of it handed out; and tcp's recv_some itself. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "link.h"

#define TMO 5000
#define PSK "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

/* A wrapper that only passes through: a lower link without recv_some. */
static const struct rmig_link_ops exact_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "exact",
	.wraps = "tcp",
};

/* A wrapper that passes recv_some through and counts the reads that may
 * take more than they need: the sending side's (spy_client) and the
 * receiving side's. The sending side's follow the records of each stream
 * (a header, then its body): a read that could go past the end of the
 * header or body it is in reads ahead. */
static pthread_mutex_t spy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rmig_link *spy_client;
static int spy_client_reads, spy_client_ahead, spy_server_ahead;

struct spy_stream {
	uint8_t hdr[5];
	size_t hdr_got, body_left;
};
static struct spy_stream spy_streams[1 + RMIG_LINK_MAX_CHANNELS]; /* control, then channels */

/* What is left of the record header or body the stream is in. */
static size_t spy_unit_left(const struct spy_stream *st)
{
	return st->body_left ? st->body_left : sizeof(st->hdr) - st->hdr_got;
}

static void spy_advance(struct spy_stream *st, const uint8_t *p, size_t n)
{
	while (n) {
		size_t k = n < st->body_left ? n : st->body_left;

		if (k) {
			st->body_left -= k;
			p += k;
			n -= k;
			continue;
		}
		st->hdr[st->hdr_got++] = *p++;
		n--;
		if (st->hdr_got == sizeof(st->hdr)) {
			st->body_left = (size_t)st->hdr[3] << 8 | st->hdr[4];
			st->hdr_got = 0;
		}
	}
}

static int spy_recv_some(struct rmig_link *l, int chan, void *buf, size_t min, size_t len, int tmo)
{
	struct spy_stream *st = &spy_streams[chan + 1];
	int rc;

	pthread_mutex_lock(&spy_lock);
	if (l == spy_client) {
		spy_client_reads++;
		spy_client_ahead += len > spy_unit_left(st);
	} else {
		spy_server_ahead += len > min;
	}
	pthread_mutex_unlock(&spy_lock);
	rc = l->lower->ops->recv_some(l->lower, chan, buf, min, len, tmo);
	if (rc > 0 && l == spy_client)
		spy_advance(st, buf, (size_t)rc);
	if (rc < 0)
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

static const struct rmig_link_ops spy_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "spy",
	.wraps = "tcp",
	.recv_some = spy_recv_some,
};

static int setup(void **state)
{
	(void)state;
	rmig_link_register(&exact_ops); /* once; -EEXIST afterwards */
	rmig_link_register(&spy_ops);
	return 0;
}

static uint8_t pattern(size_t i, unsigned seed)
{
	return (uint8_t)(i * 131 + seed * 7 + (i >> 9));
}

static const size_t sizes[] = { 1, 5, 16383, 16384, 16385, 100000, (1u << 20) + 3 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
/* The receiver's read sizes, in turn. */
static const size_t chunks[] = { 1, 7, 4096, 20000, 16384, 300000 };

/* A TLS link over a new link of kind lower. */
static struct rmig_link *tls_over(const char *lower)
{
	struct rmig_link *lo = NULL, *l = NULL;

	assert_int_equal(rmig_link_open(lower, &lo), 0);
	assert_int_equal(rmig_link_wrap(lo, rmig_link_find_wrapper("tls"), &l), 0);
	assert_int_equal(rmig_link_set_option(l, "psk", PSK), 0);
	assert_int_equal(rmig_link_set_option(l, "ktls", "off"), 0); /* this process seals */
	return l;
}

/* ---- the receiving side, in a thread ---- */

struct receiver {
	struct rmig_link *l, *conn;
	int rc;
	char err[256];
	uint8_t forged[64];
	int forged_rc;
};

static int note(struct receiver *r, struct rmig_link *l, int rc)
{
	snprintf(r->err, sizeof(r->err), "%s", l->err);
	return rc;
}

/* Message seed of `size` bytes, read in chunks of two iovecs each. */
static int recv_message(struct receiver *r, int chan, size_t size, unsigned seed, size_t *turn)
{
	uint8_t *buf = malloc(size);
	size_t got = 0;
	int rc = 0;

	assert_non_null(buf);
	while (got < size && !rc) {
		size_t n = chunks[(*turn)++ % (sizeof(chunks) / sizeof(chunks[0]))];
		struct iovec v[2];

		n = n < size - got ? n : size - got;
		v[0] = (struct iovec){ buf + got, n / 2 };
		v[1] = (struct iovec){ buf + got + n / 2, n - n / 2 };
		rc = chan < 0 ? r->conn->ops->ctrl_recv(r->conn, buf + got, n, TMO)
			      : r->conn->ops->chan_recv(r->conn, (unsigned)chan, v, 2, TMO);
		if (rc)
			note(r, r->conn, rc);
		got += n;
	}
	for (size_t i = 0; i < size && !rc; i++)
		if (buf[i] != pattern(i, seed)) {
			snprintf(r->err, sizeof(r->err), "message %u: byte %zu of %zu differs",
				 seed, i, size);
			rc = -EBADMSG;
		}
	free(buf);
	return rc;
}

static int accept_both(struct receiver *r)
{
	struct rmig_link *chan_conn = NULL;
	char hello[6];
	int node, rc;

	rc = rmig_link_accept(r->l, TMO, &r->conn);
	if (rc)
		return note(r, r->l, rc);
	rc = r->conn->ops->ctrl_recv(r->conn, hello, sizeof(hello), TMO);
	if (!rc)
		rc = rmig_link_accept(r->l, TMO, &chan_conn);
	/* Its handshake, then its hello; what came after is read ahead. */
	if (!rc)
		rc = chan_conn->ops->ctrl_recv(chan_conn, hello, sizeof(hello), TMO);
	if (!rc)
		rc = r->conn->ops->adopt_channel(r->conn, chan_conn, 0, &node);
	if (rc)
		note(r, chan_conn && chan_conn->err[0] ? chan_conn : r->conn, rc);
	rmig_link_destroy(chan_conn);
	return rc;
}

static void *receiver_main(void *arg)
{
	struct receiver *r = arg;
	size_t turn = 0;

	r->rc = accept_both(r);
	for (unsigned i = 0; i < NSIZES && !r->rc; i++)
		r->rc = recv_message(r, 0, sizes[i], i, &turn);
	for (unsigned i = 0; i < 3 && !r->rc; i++)
		r->rc = recv_message(r, -1, sizes[i + 2], 100 + i, &turn);
	if (!r->rc) {
		struct iovec v = { r->forged, sizeof(r->forged) };

		memset(r->forged, 0xaa, sizeof(r->forged));
		r->forged_rc = r->conn->ops->chan_recv(r->conn, 0, &v, 1, TMO);
		snprintf(r->err, sizeof(r->err), "%s", r->conn->err);
	}
	return NULL;
}

/* ---- the sending side ---- */

static void send_message(struct rmig_link *l, int chan, size_t size, unsigned seed)
{
	uint8_t *buf = malloc(size);
	struct iovec v[3];

	assert_non_null(buf);
	for (size_t i = 0; i < size; i++)
		buf[i] = pattern(i, seed);
	v[0] = (struct iovec){ buf, size / 3 };
	v[1] = (struct iovec){ buf + size / 3, size / 3 };
	v[2] = (struct iovec){ buf + 2 * (size / 3), size - 2 * (size / 3) };
	assert_int_equal(chan < 0 ? l->ops->ctrl_send(l, v, 3, TMO)
				  : l->ops->chan_send(l, (unsigned)chan, v, 3, TMO),
			 0);
	free(buf);
}

/* A record of the right shape that no key sealed. */
static void send_forged(struct rmig_link *l, unsigned chan)
{
	uint8_t rec[5 + 100];
	struct iovec v = { rec, sizeof(rec) };

	memset(rec, 0x5c, sizeof(rec));
	rec[0] = 23, rec[1] = 3, rec[2] = 3, rec[3] = 0, rec[4] = 100;
	assert_int_equal(l->lower->ops->chan_send(l->lower, chan, &v, 1, TMO), 0);
}

static void exchange(const char *lower)
{
	struct rmig_link *dst = tls_over(lower), *src = tls_over(lower);
	struct receiver r = { .l = dst };

	spy_client = src->lower;
	struct iovec hello = { "hello", 6 };
	pthread_t tid;
	uint16_t port = 0;
	unsigned chan;

	/* A wrapper never hands out the stream beneath it. */
	assert_null(src->ops->recv_some);
	assert_int_equal(dst->ops->listen(dst, "127.0.0.1", &port), 0);
	assert_int_equal(pthread_create(&tid, NULL, receiver_main, &r), 0);
	assert_int_equal(src->ops->connect_ctrl(src, "127.0.0.1", port, TMO), 0);
	assert_string_equal(src->sealing, "user");
	assert_int_equal(src->ops->ctrl_send(src, &hello, 1, TMO), 0);
	assert_int_equal(src->ops->connect_channel(src, TMO, -1, &chan), 0);
	assert_int_equal(src->ops->chan_send(src, chan, &hello, 1, TMO), 0);
	for (unsigned i = 0; i < NSIZES; i++)
		send_message(src, (int)chan, sizes[i], i);
	for (unsigned i = 0; i < 3; i++)
		send_message(src, -1, sizes[i + 2], 100 + i);
	send_forged(src, chan);
	pthread_join(tid, NULL);
	if (r.rc)
		fail_msg("%s: %s", lower, r.err);
	/* Nothing of the forged record was handed out. */
	assert_int_equal(r.forged_rc, -EBADMSG);
	assert_non_null(strstr(r.err, "failed authentication"));
	for (size_t i = 0; i < sizeof(r.forged); i++)
		assert_int_equal(r.forged[i], 0xaa);
	rmig_link_destroy(r.conn);
	rmig_link_destroy(src);
	rmig_link_destroy(dst);
}

static void test_sealed_over_tcp(void **state)
{
	(void)state;
	exchange("tcp");
}

static void test_sealed_over_exact_reads(void **state)
{
	(void)state;
	exchange("exact");
}

/* The sender reads only the receiver's confirmation of each handshake,
 * and reads it exactly: the kernel may take the keys right after, and
 * what was read ahead would be lost to it. Sealed data is read ahead. */
static void test_exact_until_sealed(void **state)
{
	(void)state;
	exchange("spy");
	assert_int_equal(spy_client_ahead, 0);
	assert_true(spy_client_reads >= 4); /* header and body, control and channel */
	assert_true(spy_server_ahead > 0);
}

/* ---- tcp's recv_some ---- */

struct late {
	struct rmig_link *l;
	unsigned chan;
};

static void *send_late(void *arg)
{
	struct late *s = arg;
	struct iovec v = { "67890", 5 };

	usleep(100 * 1000);
	s->l->ops->chan_send(s->l, s->chan, &v, 1, TMO);
	return NULL;
}

static void *accept_chan(void *arg)
{
	struct rmig_link **l = arg;
	struct rmig_link *ctrl = NULL, *conn = NULL;
	int node;

	if (!rmig_link_accept(l[0], TMO, &ctrl) && !rmig_link_accept(l[0], TMO, &conn))
		ctrl->ops->adopt_channel(ctrl, conn, 0, &node);
	rmig_link_destroy(conn);
	l[1] = ctrl;
	return NULL;
}

static void test_tcp_recv_some(void **state)
{
	struct rmig_link *dst = NULL, *src = NULL, *pair[2] = { NULL, NULL };
	struct iovec v = { "12345", 5 };
	struct late late;
	char buf[64];
	pthread_t tid;
	uint16_t port = 0;
	unsigned chan;

	(void)state;
	assert_int_equal(rmig_link_open("tcp", &dst), 0);
	assert_int_equal(rmig_link_open("tcp", &src), 0);
	assert_non_null(src->ops->recv_some);
	assert_int_equal(dst->ops->listen(dst, "127.0.0.1", &port), 0);
	pair[0] = dst;
	assert_int_equal(pthread_create(&tid, NULL, accept_chan, pair), 0);
	assert_int_equal(src->ops->connect_ctrl(src, "127.0.0.1", port, TMO), 0);
	assert_int_equal(src->ops->connect_channel(src, TMO, -1, &chan), 0);
	pthread_join(tid, NULL);
	assert_non_null(pair[1]);

	/* What is there, not more: 5 bytes of the 64 asked for. */
	assert_int_equal(src->ops->chan_send(src, chan, &v, 1, TMO), 0);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], 0, buf, 1, sizeof(buf), TMO), 5);
	assert_memory_equal(buf, "12345", 5);
	/* Waits for min: 3 now, 5 later. */
	v.iov_len = 3;
	assert_int_equal(src->ops->chan_send(src, chan, &v, 1, TMO), 0);
	late = (struct late){ src, chan };
	assert_int_equal(pthread_create(&tid, NULL, send_late, &late), 0);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], 0, buf, 8, sizeof(buf), TMO), 8);
	pthread_join(tid, NULL);
	assert_memory_equal(buf, "12367890", 8);
	/* The control stream too; then the limits. */
	v.iov_len = 4;
	assert_int_equal(src->ops->ctrl_send(src, &v, 1, TMO), 0);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], -1, buf, 2, 3, TMO), 3);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], -1, buf, 1, 3, TMO), 1);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], 0, buf, 0, 3, TMO), -EINVAL);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], 0, buf, 4, 3, TMO), -EINVAL);
	assert_int_equal(pair[1]->ops->recv_some(pair[1], 0, buf, 1, 3, 100), -ETIMEDOUT);
	rmig_link_destroy(pair[1]);
	rmig_link_destroy(src);
	rmig_link_destroy(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tcp_recv_some),
		cmocka_unit_test(test_sealed_over_tcp),
		cmocka_unit_test(test_sealed_over_exact_reads),
		cmocka_unit_test(test_exact_until_sealed),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
