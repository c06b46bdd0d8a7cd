/* test_rails_open.c - the destination's rails reach only a source that
 * proved the key, and only as the destination made them.
 *
 * A "railtcp" link wraps tcp and has two rails (rails_local) and records
 * what the source is told of the peer's (rails_peer): rails without RDMA,
 * so that the opening runs here, outside the soft-RoCE VM. Three cases:
 * - a peer without the key asks for rails (RMIG_CAP_RAILS): its HELLO
 *   answer is 64 bytes and nothing it reads names a rail; then a source
 *   with the key migrates and its link learns both rails (after AUTH);
 * - a fake destination that holds the key sends a RAILS whose address was
 *   altered after its MAC, or no MAC: the source refuses the migration
 *   with one line naming the peer, its link told of no rail;
 * - the same fake destination with a good MAC: the link learns the rail
 *   (the harness is right, the refusal is the MAC's).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "link.h"
#include "proto.h"
#include "rmig.h"

static const uint8_t KEY[32] = "rails-test-key-0123456789abcdef";

/* ---- the railtcp link ---- */

static pthread_mutex_t told_lock = PTHREAD_MUTEX_INITIALIZER;
static int told_calls; /* rails_peer calls with n > 0 */
static unsigned told_n;
static struct rmig_link_rail told[RMIG_MAX_RAILS];

/* Called from the library's threads: no cmocka asserts there. */
static void set_v4(struct rmig_link_rail *r, uint32_t addr)
{
	struct sockaddr_in *in = (struct sockaddr_in *)&r->addr;

	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(addr);
}

static int rail_local(struct rmig_link *l, struct rmig_link_rail *out, unsigned max)
{
	(void)l;
	if (max < 2)
		return -EINVAL;
	memset(out, 0, 2 * sizeof(*out));
	snprintf(out[0].name, sizeof(out[0].name), "mlx5_0");
	set_v4(&out[0], 0x0a5b0001); /* 10.91.0.1 */
	snprintf(out[1].name, sizeof(out[1].name), "mlx5_1");
	out[1].node = 1;
	set_v4(&out[1], 0x0a5b0101); /* 10.91.1.1 */
	return 2;
}

static int rail_peer(struct rmig_link *l, const struct rmig_link_rail *in, unsigned n)
{
	(void)l;
	pthread_mutex_lock(&told_lock);
	if (n) {
		told_calls++;
		told_n = n;
		memcpy(told, in, n * sizeof(*in));
	}
	pthread_mutex_unlock(&told_lock);
	return 0;
}

static const struct rmig_link_ops rail_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "railtcp",
	.wraps = "tcp", /* auto_rank 0: only when named */
	.rails_local = rail_local,
	.rails_peer = rail_peer,
};

static void forget_told(void)
{
	pthread_mutex_lock(&told_lock);
	told_calls = 0;
	told_n = 0;
	memset(told, 0, sizeof(told));
	pthread_mutex_unlock(&told_lock);
}

static int setup(void **state)
{
	(void)state;
	rmig_link_register(&rail_ops);
	return 0;
}

/* ---- frames by hand (also on the fake's thread: no asserts) ---- */

static int send_raw(struct rmig_link *l, uint8_t type, const uint8_t *p, size_t len, uint64_t seq)
{
	uint8_t hdr[RMIG_FRAME_HDR_LEN];
	struct iovec v[2] = { { hdr, sizeof(hdr) }, { (void *)p, len } };

	rmig_frame_hdr_encode(hdr, type, 0, (uint32_t)len, seq);
	return l->ops->ctrl_send(l, v, len ? 2 : 1, 5000);
}

static int send_msg(struct rmig_link *l, const struct rmig_msg *m, uint64_t seq)
{
	uint8_t p[RMIG_RAILS_MAX_LEN];
	size_t len = rmig_msg_encode(m, p, sizeof(p));

	return len ? send_raw(l, m->type, p, len, seq) : -EINVAL;
}

/* One frame's header and payload (at most cap bytes); 0 or -errno. */
static int recv_frame(struct rmig_link *l, struct rmig_frame_hdr *fh, uint8_t *p, size_t cap)
{
	uint8_t hdr[RMIG_FRAME_HDR_LEN];
	char err[256];
	int rc = l->ops->ctrl_recv(l, hdr, sizeof(hdr), 5000);

	if (!rc)
		rc = rmig_frame_hdr_decode(hdr, fh, err, sizeof(err));
	if (!rc && fh->len > cap)
		rc = -EMSGSIZE;
	if (!rc && fh->len)
		rc = l->ops->ctrl_recv(l, p, fh->len, 5000);
	return rc;
}

static int hmac(const char *label, const uint8_t *ns, const uint8_t *nd, const uint8_t *extra,
		size_t elen, uint8_t out[RMIG_MAC_LEN])
{
	uint8_t msg[64 + 2 * RMIG_NONCE_LEN + RMIG_RAILS_TABLE_MAX_LEN + 2 * RMIG_HELLO_LEN];
	size_t n = strlen(label);
	unsigned outlen = 0;

	memcpy(msg, label, n);
	memcpy(msg + n, ns, RMIG_NONCE_LEN);
	memcpy(msg + n + RMIG_NONCE_LEN, nd, RMIG_NONCE_LEN);
	if (elen)
		memcpy(msg + n + 2 * RMIG_NONCE_LEN, extra, elen);
	if (!HMAC(EVP_sha256(), KEY, sizeof(KEY), msg, n + 2 * RMIG_NONCE_LEN + elen, out, &outlen))
		return -EIO;
	return outlen == RMIG_MAC_LEN ? 0 : -EIO;
}

/* ---- a real destination, a peer without the key, then a real source ---- */

struct dest {
	struct rmig_ctx *ctx;
	atomic_uint port;
	atomic_int refused;
	int rc;
};

static void on_dest_event(void *arg, const struct rmig_event *ev)
{
	struct dest *d = arg;

	if (ev->type == RMIG_EV_LISTENING)
		atomic_store(&d->port, ev->port);
	if (ev->type == RMIG_EV_REFUSED)
		atomic_fetch_add(&d->refused, 1);
}

static void *dest_main(void *arg)
{
	struct dest *d = arg;

	d->rc = rmig_recv(d->ctx);
	return NULL;
}

static void keyed_config(struct rmig_config *cfg, uint16_t port)
{
	rmig_config_init(cfg, sizeof(*cfg));
	cfg->transport = "railtcp";
	cfg->host = "127.0.0.1";
	cfg->port = port;
	cfg->psk = KEY;
	cfg->psk_len = sizeof(KEY);
	cfg->tls = RMIG_TLS_OFF; /* the case of the review: --psk-file --no-tls */
	cfg->failover = RMIG_FAILOVER_NONE;
	cfg->link_timeout_ms = 3000;
}

static int has(const uint8_t *p, size_t len, const char *s)
{
	return memmem(p, len, s, strlen(s)) != NULL;
}

/* A peer without the key asks for rails, claiming a key (claim) or not:
 * whatever it reads, no rail is named in it. */
static void keyless_peer(uint16_t port, int claim)
{
	struct rmig_link *l = NULL;
	struct rmig_msg m = { .type = RMIG_MSG_HELLO };
	struct rmig_frame_hdr fh;
	uint8_t seen[8192], p[4096];
	size_t used = 0;
	int frames = 0;

	assert_int_equal(rmig_link_open("tcp", &l), 0);
	assert_int_equal(l->ops->connect_ctrl(l, "127.0.0.1", port, 5000), 0);
	m.u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					      .ver_max = RMIG_WIRE_VERSION_MAX,
					      .channels = 1,
					      .caps = RMIG_CAP_RAILS,
					      .flags = claim ? RMIG_HELLO_PSK : 0,
					      .nonce = { 7, 7, 7 } };
	assert_int_equal(send_msg(l, &m, 0), 0);
	while (!recv_frame(l, &fh, p, sizeof(p)) && used + fh.len <= sizeof(seen)) {
		assert_int_not_equal(fh.type, RMIG_MSG_RAILS);
		if (fh.type == RMIG_MSG_HELLO) {
			/* The bit says it has rails; the table waits for the proofs. */
			if (fh.len != RMIG_HELLO_LEN)
				fail_msg("a HELLO of %u bytes to a peer without the key (the "
					 "rails table went before AUTH)",
					 fh.len);
			assert_true(p[8] & RMIG_CAP_RAILS);
			memset(m.u.mac, 0, RMIG_MAC_LEN); /* a guess: it has no key */
			m.type = RMIG_MSG_AUTH;
			assert_int_equal(send_msg(l, &m, 1), 0);
		}
		memcpy(seen + used, p, fh.len);
		used += fh.len;
		frames++;
	}
	assert_true(frames >= 1); /* a HELLO, or the refusal */
	assert_false(has(seen, used, "mlx5_"));
	assert_false(has(seen, used, "\x0a\x5b\x00\x01")); /* 10.91.0.1 */
	rmig_link_destroy(l);
}

static void test_no_rails_before_auth(void **state)
{
	struct rmig_backend *sbe = NULL, *dbe = NULL;
	struct rmig_ctx *src = NULL;
	struct rmig_config cfg;
	struct dest d = { 0 };
	char err[256];
	pthread_t tid;
	int rc;

	(void)state;
	forget_told();
	assert_int_equal(rmig_backend_open("sim:size=4M", RMIG_ROLE_SOURCE, &sbe, err, 256), 0);
	assert_int_equal(rmig_backend_open("sim", RMIG_ROLE_DEST, &dbe, err, sizeof(err)), 0);
	keyed_config(&cfg, 0);
	cfg.on_event = on_dest_event;
	cfg.event_arg = &d;
	assert_int_equal(rmig_ctx_create(&d.ctx, &cfg, dbe), 0);
	assert_int_equal(pthread_create(&tid, NULL, dest_main, &d), 0);
	for (int i = 0; i < 500 && !atomic_load(&d.port); i++)
		usleep(10000);
	assert_true(atomic_load(&d.port) != 0);

	keyless_peer((uint16_t)atomic_load(&d.port), 1);
	keyless_peer((uint16_t)atomic_load(&d.port), 0);

	keyed_config(&cfg, (uint16_t)atomic_load(&d.port));
	assert_int_equal(rmig_ctx_create(&src, &cfg, sbe), 0);
	rc = rmig_send(src);
	pthread_join(tid, NULL);
	if (rc || d.rc)
		fail_msg("source: %s; destination: %s", rmig_errmsg(src), rmig_errmsg(d.ctx));
	assert_true(atomic_load(&d.refused) >= 2);
	/* The source with the key learnt both rails, as the destination has them. */
	assert_int_equal(told_calls, 1);
	assert_int_equal(told_n, 2);
	assert_string_equal(told[0].name, "mlx5_0");
	assert_string_equal(told[1].name, "mlx5_1");
	assert_int_equal(told[1].node, 1);
	assert_int_equal(((struct sockaddr_in *)&told[1].addr)->sin_addr.s_addr, htonl(0x0a5b0101));
	rmig_ctx_destroy(src);
	rmig_ctx_destroy(d.ctx);
	rmig_backend_close(sbe);
	rmig_backend_close(dbe);
}

/* ---- a fake destination that holds the key ---- */

/* HELLO_ALTERED: its proof covers the source's HELLO without
 * RMIG_CAP_RAILS, as the destination would see it had someone on the path
 * cleared the bit. */
enum rails_kind { RAILS_GOOD, RAILS_ALTERED, RAILS_NO_MAC, HELLO_ALTERED };

struct fake {
	struct rmig_link *l;
	enum rails_kind kind;
	int rc;
};

/* Its RAILS: one rail, MAC'd over 10.91.0.1; ALTERED then says
 * 203.0.113.9 under the same MAC. */
static int send_rails(struct rmig_link *c, enum rails_kind kind, const uint8_t *ns,
		      const uint8_t *nd)
{
	struct rmig_msg m = { .type = RMIG_MSG_RAILS };
	uint8_t p[RMIG_RAILS_MAX_LEN];
	size_t len;
	int rc;

	m.u.rails.nrails = 1;
	m.u.rails.rail[0] = (struct rmig_wire_rail){
		.node = 0, .family = 4, .addr = { 10, 91, 0, 1 }, .name = "mlx5_0"
	};
	len = rmig_rails_table_encode(&m.u.rails, p, sizeof(p));
	rc = len == 8 + 56 ? hmac("rmig-auth-1 rails", ns, nd, p, len, m.u.rails.mac) : -EINVAL;
	if (rc)
		return rc;
	m.u.rails.mac_len = kind == RAILS_NO_MAC ? 0 : RMIG_MAC_LEN;
	len = rmig_msg_encode(&m, p, sizeof(p));
	if (kind == RAILS_ALTERED)
		memcpy(p + 8 + 8, (const uint8_t[]){ 203, 0, 113, 9 }, 4);
	return send_raw(c, RMIG_MSG_RAILS, p, len, 2);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct rmig_link *c = NULL;
	struct rmig_msg m = { .type = RMIG_MSG_HELLO };
	struct rmig_frame_hdr fh;
	uint8_t p[4096], ns[RMIG_NONCE_LEN], nd[RMIG_NONCE_LEN] = { 4, 5, 6 };
	uint8_t hellos[2 * RMIG_HELLO_LEN];

	f->rc = rmig_link_accept(f->l, 5000, &c);
	if (!f->rc)
		f->rc = recv_frame(c, &fh, p, sizeof(p)); /* the source's HELLO */
	if (f->rc || fh.type != RMIG_MSG_HELLO || !(p[8] & RMIG_CAP_RAILS)) {
		f->rc = f->rc ? f->rc : -EPROTO;
		rmig_link_destroy(c);
		return NULL;
	}
	memcpy(ns, p + 16, RMIG_NONCE_LEN);
	memcpy(hellos, p, RMIG_HELLO_LEN); /* the source's, as it came */
	if (f->kind == HELLO_ALTERED)
		hellos[8] &= (uint8_t)~RMIG_CAP_RAILS;
	m.u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					      .ver_max = RMIG_WIRE_VERSION_MAX,
					      .channels = RMIG_MAX_CHANNELS,
					      .caps = f->kind == HELLO_ALTERED ? 0 : RMIG_CAP_RAILS,
					      .flags = RMIG_HELLO_PSK };
	memcpy(m.u.hello.nonce, nd, RMIG_NONCE_LEN);
	rmig_msg_encode(&m, hellos + RMIG_HELLO_LEN, RMIG_HELLO_LEN);
	f->rc = send_msg(c, &m, 0);
	if (!f->rc)
		f->rc = recv_frame(c, &fh, p, sizeof(p)); /* its AUTH */
	m.type = RMIG_MSG_AUTH;
	if (!f->rc)
		f->rc = hmac("rmig-auth-2 destination", ns, nd, hellos, sizeof(hellos), m.u.mac);
	if (!f->rc)
		f->rc = send_msg(c, &m, 1);
	if (!f->rc)
		f->rc = send_rails(c, f->kind, ns, nd);
	/* What the source says next (its ABORT), then the end. */
	while (!recv_frame(c, &fh, p, sizeof(p)))
		;
	rmig_link_destroy(c);
	return NULL;
}

/* The source's error after a fake destination's RAILS of this kind. */
static int source_against(enum rails_kind kind, char *err, size_t len)
{
	struct rmig_backend *be = NULL;
	struct rmig_ctx *src = NULL;
	struct rmig_config cfg;
	struct fake f = { .kind = kind };
	pthread_t tid;
	uint16_t port = 0;
	int rc;

	forget_told();
	assert_int_equal(rmig_backend_open("sim:size=1M", RMIG_ROLE_SOURCE, &be, err, len), 0);
	assert_int_equal(rmig_link_open("tcp", &f.l), 0);
	assert_int_equal(f.l->ops->listen(f.l, "127.0.0.1", &port), 0);
	assert_int_equal(pthread_create(&tid, NULL, fake_main, &f), 0);
	keyed_config(&cfg, port);
	cfg.link_timeout_ms = 1000;
	assert_int_equal(rmig_ctx_create(&src, &cfg, be), 0);
	rc = rmig_send(src);
	snprintf(err, len, "%s", rmig_errmsg(src));
	rmig_ctx_destroy(src); /* closes the link: the fake's reads end */
	pthread_join(tid, NULL);
	assert_int_equal(f.rc, 0);
	rmig_link_destroy(f.l);
	rmig_backend_close(be);
	return rc;
}

static void test_altered_rails_refused(void **state)
{
	char err[512];

	(void)state;
	assert_int_equal(source_against(RAILS_ALTERED, err, sizeof(err)), -EACCES);
	print_message("source: %s\n", err);
	assert_non_null(strstr(err, "refusing the rails of 127.0.0.1"));
	assert_non_null(strstr(err, "MAC does not match"));
	assert_int_equal(told_calls, 0); /* no rail reached the link */

	assert_int_equal(source_against(RAILS_NO_MAC, err, sizeof(err)), -EACCES);
	print_message("source: %s\n", err);
	assert_non_null(strstr(err, "refusing the rails of 127.0.0.1"));
	assert_non_null(strstr(err, "no MAC"));
	assert_int_equal(told_calls, 0);
}

/* Someone on the path cleared the source's rails bit: the proofs, which
 * cover both HELLOs, no longer match, and the source says so. */
static void test_altered_hello_refused(void **state)
{
	char err[512];

	(void)state;
	assert_int_equal(source_against(HELLO_ALTERED, err, sizeof(err)), -EACCES);
	print_message("source: %s\n", err);
	assert_non_null(strstr(err, "authentication failed: 127.0.0.1"));
	assert_non_null(strstr(err, "HELLOs were altered"));
	assert_int_equal(told_calls, 0);
}

static void test_good_rails_taken(void **state)
{
	char err[512];

	(void)state;
	/* The fake stops after RAILS: the migration fails later, on the
	 * layout, having taken the rail. */
	assert_int_not_equal(source_against(RAILS_GOOD, err, sizeof(err)), 0);
	assert_null(strstr(err, "refusing the rails"));
	assert_int_equal(told_calls, 1);
	assert_int_equal(told_n, 1);
	assert_string_equal(told[0].name, "mlx5_0");
	assert_int_equal(((struct sockaddr_in *)&told[0].addr)->sin_addr.s_addr, htonl(0x0a5b0001));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_rails_before_auth),
		cmocka_unit_test(test_altered_rails_refused),
		cmocka_unit_test(test_altered_hello_refused),
		cmocka_unit_test(test_good_rails_taken),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
