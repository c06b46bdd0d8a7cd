/* test_link_wrap.c - the link stack: a link that wraps another (a "count"
 * wrapper over tcp that counts control and data bytes and passes every op
 * through), the link list built from the configuration, and the
 * config.FIELD convention of library messages. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "link.h"
#include "rmig.h"

/* ---- the wrapper: only the byte-moving ops, the rest passes through ---- */

struct counts {
	atomic_uint_fast64_t ctrl_tx, ctrl_rx, chan_tx, chan_rx;
	int destroyed;
};

static struct counts last_counts; /* the last destroyed wrapper's, for checks */

static size_t iov_bytes(const struct iovec *iov, int n)
{
	size_t b = 0;

	for (int i = 0; i < n; i++)
		b += iov[i].iov_len;
	return b;
}

static int count_create(struct rmig_link *l)
{
	l->priv = calloc(1, sizeof(struct counts));
	return l->priv ? 0 : -ENOMEM;
}

static void count_destroy(struct rmig_link *l)
{
	struct counts *c = l->priv;

	last_counts.ctrl_tx = atomic_load(&c->ctrl_tx);
	last_counts.ctrl_rx = atomic_load(&c->ctrl_rx);
	last_counts.chan_tx = atomic_load(&c->chan_tx);
	last_counts.chan_rx = atomic_load(&c->chan_rx);
	last_counts.destroyed++;
	free(c);
}

static int count_ctrl_send(struct rmig_link *l, const struct iovec *iov, int n, int tmo)
{
	int rc = l->lower->ops->ctrl_send(l->lower, iov, n, tmo);

	if (!rc)
		atomic_fetch_add(&((struct counts *)l->priv)->ctrl_tx, iov_bytes(iov, n));
	else
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

static int count_ctrl_recv(struct rmig_link *l, void *buf, size_t len, int tmo)
{
	int rc = l->lower->ops->ctrl_recv(l->lower, buf, len, tmo);

	if (!rc)
		atomic_fetch_add(&((struct counts *)l->priv)->ctrl_rx, len);
	else
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

static int count_chan_send(struct rmig_link *l, unsigned chan, const struct iovec *iov, int n,
			   int tmo)
{
	int rc = l->lower->ops->chan_send(l->lower, chan, iov, n, tmo);

	if (!rc)
		atomic_fetch_add(&((struct counts *)l->priv)->chan_tx, iov_bytes(iov, n));
	else
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

static int count_chan_recv(struct rmig_link *l, unsigned chan, const struct iovec *iov, int n,
			   int tmo)
{
	int rc = l->lower->ops->chan_recv(l->lower, chan, iov, n, tmo);

	if (!rc)
		atomic_fetch_add(&((struct counts *)l->priv)->chan_rx, iov_bytes(iov, n));
	else
		memcpy(l->err, l->lower->err, sizeof(l->err));
	return rc;
}

static const struct rmig_link_ops count_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "count",
	.wraps = "tcp", /* auto_rank 0: only when named */
	.create = count_create,
	.destroy = count_destroy,
	.ctrl_send = count_ctrl_send,
	.ctrl_recv = count_ctrl_recv,
	.chan_send = count_chan_send,
	.chan_recv = count_chan_recv,
};

static int setup(void **state)
{
	(void)state;
	rmig_link_register(&count_ops); /* once; -EEXIST afterwards */
	return 0;
}

/* ---- the wrapper alone, over 127.0.0.1 ---- */

struct acceptor {
	struct rmig_link *l;
	struct rmig_link *conn; /* the session's: control stream, then its channel */
	int rc;
	char ctrl[6], data[9];
};

/* As the listener does: each connection into a link of its own, the data
 * stream then adopted by the control stream's link. */
static void *accept_main(void *arg)
{
	struct acceptor *a = arg;
	struct iovec v = { a->data, sizeof(a->data) };
	struct rmig_link *chan_conn = NULL;
	int node;

	a->rc = rmig_link_accept(a->l, 5000, &a->conn);
	if (!a->rc)
		a->rc = a->conn->ops->ctrl_recv(a->conn, a->ctrl, sizeof(a->ctrl), 5000);
	if (!a->rc)
		a->rc = rmig_link_accept(a->l, 5000, &chan_conn);
	if (!a->rc)
		a->rc = a->conn->ops->adopt_channel(a->conn, chan_conn, 0, &node);
	if (!a->rc)
		a->rc = a->conn->ops->chan_recv(a->conn, 0, &v, 1, 5000);
	rmig_link_destroy(chan_conn);
	return NULL;
}

static void test_wrapper_passes_through(void **state)
{
	struct rmig_link *dst = NULL, *src = NULL;
	struct acceptor a = { 0 };
	struct iovec c = { "hello", 6 }, d = { "channel!", 9 };
	pthread_t tid;
	uint16_t port = 0;
	unsigned chan;

	(void)state;
	assert_int_equal(rmig_link_open("count", &dst), 0);
	assert_int_equal(rmig_link_open("count", &src), 0);
	assert_non_null(dst->lower);
	assert_string_equal(dst->ops->name, "count");
	assert_string_equal(dst->lower->ops->name, "tcp");
	/* What the stack cannot do stays absent; what it can is there. */
	assert_null(dst->ops->mem_expose);
	assert_null(dst->ops->chan_write);
	assert_non_null(dst->ops->listen);
	assert_non_null(dst->ops->accept);
	assert_non_null(dst->ops->adopt_channel);
	/* Options go to the wrapped link, which takes none. */
	assert_int_equal(rmig_link_set_option(src, "device", "rxe0"), -ENOENT);
	assert_non_null(strstr(src->err, "tcp link has no option 'device'"));

	assert_int_equal(dst->ops->listen(dst, "127.0.0.1", &port), 0);
	assert_true(port != 0);
	a.l = dst;
	assert_int_equal(pthread_create(&tid, NULL, accept_main, &a), 0);
	assert_int_equal(src->ops->connect_ctrl(src, "127.0.0.1", port, 5000), 0);
	assert_int_equal(src->ops->ctrl_send(src, &c, 1, 5000), 0);
	assert_int_equal(src->ops->connect_channel(src, 5000, -1, &chan), 0);
	assert_int_equal(src->ops->chan_send(src, chan, &d, 1, 5000), 0);
	pthread_join(tid, NULL);
	assert_int_equal(a.rc, 0);
	assert_string_equal(a.ctrl, "hello");
	assert_string_equal(a.data, "channel!");
	/* peer and peer_loopback came up from tcp. */
	assert_true(src->peer_loopback && a.conn->peer_loopback);
	assert_non_null(strstr(a.conn->peer, "127.0.0.1:"));
	assert_string_equal(a.conn->ops->name, "count");
	{
		struct counts *s = src->priv, *r = a.conn->priv;

		assert_int_equal(atomic_load(&s->ctrl_tx), 6);
		assert_int_equal(atomic_load(&r->ctrl_rx), 6);
		assert_int_equal(atomic_load(&s->chan_tx), 9);
		assert_int_equal(atomic_load(&r->chan_rx), 9);
	}
	/* An error below comes up with its message. */
	src->ops->close_session(src);
	assert_int_not_equal(src->ops->ctrl_send(src, &c, 1, 100), 0);
	assert_true(src->err[0] != 0);
	last_counts.destroyed = 0;
	rmig_link_destroy(a.conn);
	rmig_link_destroy(src);
	rmig_link_destroy(dst);
	assert_int_equal(last_counts.destroyed, 3);
}

/* ---- a whole migration through it ---- */

struct dest {
	struct rmig_ctx *ctx;
	atomic_uint port;
	int rc;
};

static void on_dest_event(void *arg, const struct rmig_event *ev)
{
	struct dest *d = arg;

	if (ev->type == RMIG_EV_LISTENING)
		atomic_store(&d->port, ev->port);
}

static void *dest_main(void *arg)
{
	struct dest *d = arg;

	d->rc = rmig_recv(d->ctx);
	return NULL;
}

static void test_migrate_through_wrapper(void **state)
{
	struct rmig_backend *sbe = NULL, *dbe = NULL;
	struct rmig_ctx *src = NULL;
	struct rmig_config cfg;
	struct dest d = { 0 };
	char err[256];
	pthread_t tid;
	int rc;

	(void)state;
	assert_int_equal(rmig_backend_open("sim:size=16M,dirty-rate=2000", RMIG_ROLE_SOURCE, &sbe,
					   err, sizeof(err)),
			 0);
	assert_int_equal(rmig_backend_open("sim", RMIG_ROLE_DEST, &dbe, err, sizeof(err)), 0);
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "count";
	cfg.host = "127.0.0.1";
	cfg.port = 0;
	cfg.on_event = on_dest_event;
	cfg.event_arg = &d;
	assert_int_equal(rmig_ctx_create(&d.ctx, &cfg, dbe), 0);
	assert_int_equal(pthread_create(&tid, NULL, dest_main, &d), 0);
	for (int i = 0; i < 500 && !atomic_load(&d.port); i++)
		usleep(10000);
	assert_true(atomic_load(&d.port) != 0);
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "count";
	cfg.host = "127.0.0.1";
	cfg.port = (uint16_t)atomic_load(&d.port);
	assert_int_equal(rmig_ctx_create(&src, &cfg, sbe), 0);
	rc = rmig_send(src);
	pthread_join(tid, NULL);
	if (rc || d.rc)
		fail_msg("source: %s; destination: %s", rmig_errmsg(src), rmig_errmsg(d.ctx));
	assert_string_equal(rmig_stats(src)->transport, "count");
	assert_true(rmig_stats(src)->verified);
	last_counts.destroyed = 0;
	rmig_ctx_destroy(src);
	assert_int_equal(last_counts.destroyed, 1);
	/* Every byte of 16 MiB of guest went over the wrapper's data channels. */
	assert_true(last_counts.chan_tx >= 16u << 20);
	assert_true(last_counts.ctrl_tx > 0 && last_counts.ctrl_rx > 0);
	rmig_ctx_destroy(d.ctx);
	rmig_backend_close(sbe);
	rmig_backend_close(dbe);
}

/* ---- the list from the configuration ---- */

static int create_with(const char *transport, const char *options, const char *device, char *err,
		       size_t errlen, unsigned *nlinks, char *names, size_t nlen)
{
	struct rmig_backend *be = NULL;
	struct rmig_ctx *ctx = NULL;
	struct rmig_config cfg;
	char e[256];
	int rc;

	assert_int_equal(rmig_backend_open("sim:size=1M", RMIG_ROLE_SOURCE, &be, e, sizeof(e)), 0);
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = transport;
	cfg.link_options = options;
	cfg.device = device;
	cfg.create_err = err;
	cfg.create_err_len = errlen;
	err[0] = 0;
	rc = rmig_ctx_create(&ctx, &cfg, be);
	if (!rc) {
		*nlinks = rmig_links_count(ctx);
		names[0] = 0;
		for (unsigned i = 0; i < rmig_links_count(ctx); i++)
			snprintf(names + strlen(names), nlen - strlen(names), "%s%s", i ? "," : "",
				 rmig_links_at(ctx, i)->ops->name);
		rmig_ctx_destroy(ctx);
	}
	rmig_backend_close(be);
	return rc;
}

static void test_list_from_config(void **state)
{
	char err[512], names[128];
	unsigned n = 0;

	(void)state;
	assert_int_equal(create_with("auto", NULL, NULL, err, sizeof(err), &n, names, 128), 0);
	assert_string_equal(names, "rdma,tcp"); /* by auto_rank; count takes no part */
	assert_int_equal(create_with("tcp,rdma", NULL, NULL, err, sizeof(err), &n, names, 128), 0);
	assert_string_equal(names, "tcp,rdma");
	assert_int_equal(create_with("rdma,nosuch", NULL, NULL, err, sizeof(err), &n, names, 128),
			 -ENOENT);
	assert_non_null(strstr(err, "config.transport: no transport named 'nosuch'"));
	assert_non_null(strstr(err, "tcp"));
	assert_int_equal(create_with("tcp,tcp", NULL, NULL, err, sizeof(err), &n, names, 128),
			 -EINVAL);
	assert_int_equal(create_with("", NULL, NULL, err, sizeof(err), &n, names, 128), -EINVAL);
	/* Options: scoped by link; another link's are ignored. */
	assert_int_equal(create_with("rdma", "rdma.device=rxe0,rdma.gid_index=1", NULL, err, 512,
				     &n, names, 128),
			 0);
	assert_int_equal(create_with("tcp", "rdma.device=rxe0", "rxe0", err, 512, &n, names, 128),
			 0);
	assert_int_equal(create_with("tcp", "tcp.nodelay=1", NULL, err, 512, &n, names, 128),
			 -EINVAL);
	assert_non_null(strstr(err, "tcp link has no option 'nodelay'"));
	assert_int_equal(create_with("rdma", "rdma.gid_index=999", NULL, err, 512, &n, names, 128),
			 -EINVAL);
	assert_non_null(strstr(err, "gid_index"));
	assert_int_equal(create_with("rdma", "rdma.mtu=4096", NULL, err, 512, &n, names, 128),
			 -EINVAL);
	assert_non_null(strstr(err, "rdma link has no option 'mtu'"));
	assert_int_equal(create_with("rdma", "nonsense", NULL, err, 512, &n, names, 128), -EINVAL);
	assert_non_null(strstr(err, "config.link_options"));
}

/* The failover link comes from the list, or is made on demand. */
static void test_fallback(void **state)
{
	struct rmig_backend *be = NULL;
	struct rmig_ctx *ctx = NULL;
	struct rmig_config cfg;
	struct rmig_link *l;
	char e[256];

	(void)state;
	assert_int_equal(rmig_backend_open("sim:size=1M", RMIG_ROLE_SOURCE, &be, e, sizeof(e)), 0);
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "rdma"; /* failover: tcp by default, not in the list */
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	assert_int_equal(rmig_links_count(ctx), 1);
	l = rmig_links_fallback(ctx);
	assert_non_null(l);
	assert_string_equal(l->ops->name, "tcp");
	assert_int_equal(rmig_links_count(ctx), 2);
	assert_ptr_equal(rmig_links_fallback(ctx), l); /* made once */
	assert_ptr_equal(rmig_links_at(ctx, 1), l);
	rmig_ctx_destroy(ctx);

	cfg.transport = "tcp";
	cfg.failover = RMIG_FAILOVER_NONE;
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	assert_null(rmig_links_fallback(ctx));
	rmig_ctx_destroy(ctx);

	cfg.failover = RMIG_FAILOVER_TCP;
	cfg.failover_transport = "count";
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	l = rmig_links_fallback(ctx);
	assert_non_null(l);
	assert_string_equal(l->ops->name, "count");
	rmig_ctx_destroy(ctx);

	cfg.failover_transport = "nosuch";
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), -ENOENT);
	rmig_backend_close(be);
}

/* Library messages name config fields, not the CLI's flags. */
static void test_messages_name_config_fields(void **state)
{
	struct rmig_backend *be = NULL;
	struct rmig_ctx *ctx = NULL;
	struct rmig_config cfg;
	char e[256];

	(void)state;
	assert_int_equal(rmig_backend_open("sim:size=1M", RMIG_ROLE_SOURCE, &be, e, sizeof(e)), 0);
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.host = "192.0.2.1"; /* TEST-NET-1: not loopback; refused before connecting */
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, be), 0);
	assert_int_equal(rmig_send(ctx), -EACCES);
	assert_non_null(strstr(rmig_errmsg(ctx), "config.psk (or config.insecure"));
	assert_null(strstr(rmig_errmsg(ctx), "--"));
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
}

/* ---- tls: a data channel is sealed exactly when its session is ---- */

#define TEST_PSK "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static struct rmig_link *tls_over_tcp(const char *clear)
{
	struct rmig_link *lo = NULL, *l = NULL;

	assert_int_equal(rmig_link_open("tcp", &lo), 0);
	assert_int_equal(rmig_link_wrap(lo, rmig_link_find_wrapper("tls"), &l), 0);
	assert_int_equal(rmig_link_set_option(l, "psk", TEST_PSK), 0);
	assert_int_equal(rmig_link_set_option(l, "clear", clear), 0);
	return l;
}

struct mixed {
	struct rmig_link *l, *sealed, *clear;
	int rc, adopt_rc;
	char err[256];
};

static void *mixed_main(void *arg)
{
	struct mixed *m = arg;
	char buf[6];
	int node;

	m->rc = rmig_link_accept(m->l, 5000, &m->sealed);
	if (!m->rc)
		m->rc = m->sealed->ops->ctrl_recv(m->sealed, buf, sizeof(buf), 5000);
	if (!m->rc)
		m->rc = rmig_link_accept(m->l, 5000, &m->clear);
	if (!m->rc)
		m->rc = m->clear->ops->ctrl_recv(m->clear, buf, sizeof(buf), 5000);
	if (!m->rc) {
		m->adopt_rc = m->sealed->ops->adopt_channel(m->sealed, m->clear, 0, &node);
		snprintf(m->err, sizeof(m->err), "%s", m->sealed->err);
	}
	return NULL;
}

static void test_tls_clear_channel_not_adopted(void **state)
{
	struct rmig_link *dst = tls_over_tcp("loopback"), *src = tls_over_tcp("never");
	struct rmig_link *plain = NULL;
	struct mixed m = { .l = dst };
	struct iovec c = { "hello", 6 };
	pthread_t tid;
	uint16_t port = 0;

	(void)state;
	assert_int_equal(rmig_link_open("tcp", &plain), 0);
	assert_int_equal(dst->ops->listen(dst, "127.0.0.1", &port), 0);
	assert_int_equal(pthread_create(&tid, NULL, mixed_main, &m), 0);
	/* A sealed session, then a connection in clear from loopback (which
	 * clear=loopback takes on its own) offered to it as a data channel. */
	assert_int_equal(src->ops->connect_ctrl(src, "127.0.0.1", port, 5000), 0);
	assert_int_equal(src->ops->ctrl_send(src, &c, 1, 5000), 0);
	assert_int_equal(plain->ops->connect_ctrl(plain, "127.0.0.1", port, 5000), 0);
	assert_int_equal(plain->ops->ctrl_send(plain, &c, 1, 5000), 0);
	pthread_join(tid, NULL);
	assert_int_equal(m.rc, 0);
	assert_non_null(m.sealed->sealing);
	assert_int_equal(m.adopt_rc, -EPROTO);
	assert_non_null(strstr(m.err, "is in clear, its session is sealed"));
	rmig_link_destroy(m.clear);
	rmig_link_destroy(m.sealed);
	rmig_link_destroy(plain);
	rmig_link_destroy(src);
	rmig_link_destroy(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wrapper_passes_through),
		cmocka_unit_test(test_migrate_through_wrapper),
		cmocka_unit_test(test_list_from_config),
		cmocka_unit_test(test_fallback),
		cmocka_unit_test(test_messages_name_config_fields),
		cmocka_unit_test(test_tls_clear_channel_not_adopted),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
