/* test_backend_abi.c - sized backend ops tables (struct rmig_backend_ops.size).
 *
 * A backend built against an older, smaller rmig_backend.h: its table is a
 * prefix of today's, up to and including the last mandatory op
 * (prepare_regions), with size = sizeof that older struct, and it lies in
 * memory followed by garbage where today's later ops would be. The registry
 * must copy only size bytes and read the rest as NULL (absent): a whole
 * migration through the public API, source and destination in this process
 * on 127.0.0.1, then moves its guest, whose memory must arrive equal. A size
 * too small or too large is refused.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "rmig_backend.h"

#define PAGE 4096u
#define PAGES 2048u	/* 8 MiB */
#define DIRTY_FETCHES 3 /* the guest writes during the first fetches only */

/* struct rmig_backend_ops as the oldest layout the library accepts: no
 * load_state, start, guest_stats nor stream ops. */
struct old_backend_ops {
	size_t size;
	const char *name;
	int (*create)(struct rmig_backend *be, const char *args, enum rmig_role role);
	void (*destroy)(struct rmig_backend *be);
	int (*get_regions)(struct rmig_backend *be, const struct rmig_region **regions,
			   size_t *count);
	int (*start_dirty_log)(struct rmig_backend *be);
	int (*fetch_dirty)(struct rmig_backend *be, size_t region_index, uint64_t *bitmap);
	int (*pause)(struct rmig_backend *be);
	int (*resume)(struct rmig_backend *be);
	int (*save_state)(struct rmig_backend *be, void **blob, size_t *len);
	int (*throttle)(struct rmig_backend *be, unsigned percent);
	int (*prepare_regions)(struct rmig_backend *be, const struct rmig_region *layout,
			       size_t count);
};
_Static_assert(sizeof(struct old_backend_ops) == RMIG_BACKEND_OPS_MIN_SIZE,
	       "the old layout ends where the mandatory ops do");
_Static_assert(offsetof(struct old_backend_ops, prepare_regions) ==
		   offsetof(struct rmig_backend_ops, prepare_regions),
	       "the old layout is a prefix of today's");

/* One guest instance: one region of anonymous memory. */
struct mem_guest {
	struct rmig_region region;
	int has_region;
	int paused;
	unsigned fetches;
	uint64_t rng;
	uint64_t dirty[PAGES / 64]; /* source: pages written, not yet fetched */
};

static uint64_t next_rng(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 17;
}

static int map_region(struct rmig_backend *be, struct mem_guest *g, const struct rmig_region *r)
{
	void *host = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (host == MAP_FAILED) {
		rmig_backend_err(be, "mem: mmap failed");
		return -ENOMEM;
	}
	g->region = *r;
	g->region.host = host;
	g->has_region = 1;
	return 0;
}

static int mem_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct mem_guest *g = calloc(1, sizeof(*g));
	struct rmig_region r = { .id = 1, .page_size = PAGE, .gpa = 0, .len = PAGES * PAGE };
	int rc;

	(void)args;
	if (!g)
		return -ENOMEM;
	be->priv = g;
	g->rng = 42;
	if (role != RMIG_ROLE_SOURCE)
		return 0;
	rc = map_region(be, g, &r);
	if (rc)
		return rc;
	/* Content: every fourth page left zero, the others patterned. */
	for (uint64_t p = 0; p < PAGES; p++)
		if (p % 4)
			for (uint64_t w = 0; w < PAGE / 8; w++)
				((uint64_t *)((char *)g->region.host + p * PAGE))[w] =
				    next_rng(&g->rng);
	return 0;
}

static void mem_destroy(struct rmig_backend *be)
{
	struct mem_guest *g = be->priv;

	if (!g)
		return;
	if (g->has_region)
		munmap(g->region.host, g->region.len);
	free(g);
}

static int mem_get_regions(struct rmig_backend *be, const struct rmig_region **regions,
			   size_t *count)
{
	struct mem_guest *g = be->priv;

	*regions = &g->region;
	*count = g->has_region;
	return 0;
}

/* The "guest" writes a few pages just before each of the first fetches,
 * so that later rounds have something to send. */
static int mem_fetch_dirty(struct rmig_backend *be, size_t region_index, uint64_t *bitmap)
{
	struct mem_guest *g = be->priv;

	if (region_index != 0)
		return -EINVAL;
	if (!g->paused && g->fetches++ < DIRTY_FETCHES)
		for (int i = 0; i < 64; i++) {
			uint64_t p = next_rng(&g->rng) % PAGES;

			((uint64_t *)((char *)g->region.host + p * PAGE))[i] = next_rng(&g->rng);
			g->dirty[p / 64] |= 1ull << (p % 64);
		}
	for (size_t w = 0; w < PAGES / 64; w++) {
		bitmap[w] |= g->dirty[w];
		g->dirty[w] = 0;
	}
	return 0;
}

static int mem_pause(struct rmig_backend *be)
{
	((struct mem_guest *)be->priv)->paused = 1;
	return 0;
}

/* Source: rollback; destination: start (there is no start op). */
static int mem_resume(struct rmig_backend *be)
{
	((struct mem_guest *)be->priv)->paused = 0;
	return 0;
}

static int mem_prepare_regions(struct rmig_backend *be, const struct rmig_region *layout,
			       size_t count)
{
	struct mem_guest *g = be->priv;

	if (count != 1 || layout->page_size != PAGE || layout->len != PAGES * PAGE) {
		rmig_backend_err(be, "mem: one region of %u pages of 4 KiB", PAGES);
		return -EINVAL;
	}
	return map_region(be, g, layout);
}

static const struct old_backend_ops old_ops = {
	.size = sizeof(struct old_backend_ops),
	.name = "old-mem",
	.create = mem_create,
	.destroy = mem_destroy,
	.get_regions = mem_get_regions,
	.fetch_dirty = mem_fetch_dirty,
	.pause = mem_pause,
	.resume = mem_resume,
	.prepare_regions = mem_prepare_regions,
};

/* The old table where the backend's binary has it: in memory that goes on
 * with something else (here garbage) where today's header has more ops. */
static union {
	struct old_backend_ops ops;
	unsigned char raw[sizeof(struct rmig_backend_ops) + 64];
} old_table;

struct dest {
	struct rmig_ctx *ctx;
	pthread_t tid;
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

static int register_old(void)
{
	static int rc = 1;

	if (rc == 1) {
		memset(old_table.raw, 0xa5, sizeof(old_table.raw));
		old_table.ops = old_ops;
		rc = rmig_backend_register((const struct rmig_backend_ops *)&old_table.ops);
	}
	return rc;
}

/* Registered as the registry's own full-size copy, the ops past the old
 * size absent. */
static void check_old_table(void)
{
	const struct rmig_backend_ops *ops;

	assert_int_equal(register_old(), 0);
	ops = rmig_backend_find("old-mem");
	assert_non_null(ops);
	assert_ptr_not_equal(ops, (const void *)&old_table.ops); /* the registry's own copy */
	assert_int_equal(ops->size, sizeof(struct rmig_backend_ops));
	assert_ptr_equal(ops->create, mem_create);
	assert_ptr_equal(ops->prepare_regions, mem_prepare_regions);
	/* Past the old size: absent, whatever followed the table in memory. */
	assert_null(ops->load_state);
	assert_null(ops->start);
	assert_null(ops->guest_stats);
	assert_null(ops->stream_open);
	assert_null(ops->stream_status);
	assert_null(ops->stream_switchover);
	assert_null(ops->stream_wait);
}

static void test_old_table_registered(void **state)
{
	(void)state;
	check_old_table();
}

static void test_old_table_migrates(void **state)
{
	struct rmig_backend *src = NULL, *dst = NULL;
	const struct rmig_region *sr, *dr;
	struct rmig_config cfg;
	struct rmig_ctx *ctx = NULL;
	struct dest d = { 0 };
	size_t sn = 0, dn = 0;
	char err[256];
	int rc;

	(void)state;
	check_old_table(); /* garbage ops would not reach the engine */
	assert_int_equal(rmig_backend_open("old-mem", RMIG_ROLE_DEST, &dst, err, sizeof(err)), 0);
	assert_int_equal(rmig_backend_open("old-mem", RMIG_ROLE_SOURCE, &src, err, sizeof(err)), 0);

	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.host = "127.0.0.1";
	cfg.port = 0;
	cfg.accept_timeout_ms = 30000; /* a source that never comes fails, not hangs */
	cfg.on_event = on_dest_event;
	cfg.event_arg = &d;
	assert_int_equal(rmig_ctx_create(&d.ctx, &cfg, dst), 0);
	assert_int_equal(pthread_create(&d.tid, NULL, dest_main, &d), 0);
	for (int i = 0; i < 1000 && !atomic_load(&d.port); i++)
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	assert_int_not_equal(atomic_load(&d.port), 0);

	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.host = "127.0.0.1";
	cfg.port = (uint16_t)atomic_load(&d.port);
	assert_int_equal(rmig_ctx_create(&ctx, &cfg, src), 0);
	rc = rmig_send(ctx);
	if (rc)
		print_error("send: %s\n", rmig_errmsg(ctx));
	pthread_join(d.tid, NULL);
	if (d.rc)
		print_error("recv: %s\n", rmig_errmsg(d.ctx));

	assert_int_equal(rc, 0);
	assert_int_equal(rmig_stats(ctx)->result, RMIG_RESULT_MIGRATED);
	assert_int_equal(d.rc, 0);
	assert_int_equal(rmig_stats(d.ctx)->result, RMIG_RESULT_MIGRATED);
	assert_true(rmig_stats(ctx)->rounds > 1); /* the dirtied pages went again */
	assert_true(rmig_stats(d.ctx)->verified);

	/* What the destination holds is what the (paused) source holds. */
	assert_int_equal(src->ops->get_regions(src, &sr, &sn), 0);
	assert_int_equal(dst->ops->get_regions(dst, &dr, &dn), 0);
	assert_int_equal(sn, 1);
	assert_int_equal(dn, 1);
	assert_int_equal(sr->len, dr->len);
	assert_memory_equal(sr->host, dr->host, sr->len);
	/* The destination was started through resume: there is no start op. */
	assert_int_equal(((struct mem_guest *)dst->priv)->paused, 0);

	rmig_ctx_destroy(ctx);
	rmig_ctx_destroy(d.ctx);
	rmig_backend_close(src);
	rmig_backend_close(dst);
}

static int never_stream_open(struct rmig_backend *be, const struct rmig_stream_params *p, int *fd)
{
	(void)be;
	(void)p;
	(void)fd;
	return -ENOTSUP;
}

static void test_bad_sizes(void **state)
{
	struct rmig_backend_ops ops = { 0 };

	(void)state;
	memcpy(&ops, &old_ops, sizeof(old_ops));
	ops.name = "sized";
	/* One byte short of the mandatory ops, or unset. */
	ops.size = RMIG_BACKEND_OPS_MIN_SIZE - 1;
	assert_int_equal(rmig_backend_register(&ops), -EINVAL);
	ops.size = 0;
	assert_int_equal(rmig_backend_register(&ops), -EINVAL);
	/* Built against a newer header than this library's. */
	ops.size = sizeof(struct rmig_backend_ops) + sizeof(void *);
	assert_int_equal(rmig_backend_register(&ops), -EINVAL);
	assert_null(rmig_backend_find("sized"));
	/* Both limits themselves are fine. */
	ops.size = RMIG_BACKEND_OPS_MIN_SIZE;
	assert_int_equal(rmig_backend_register(&ops), 0);
	ops.name = "sized-full";
	ops.size = sizeof(struct rmig_backend_ops);
	assert_int_equal(rmig_backend_register(&ops), 0);
	/* A stream backend needs the two stream ops the engine calls unchecked. */
	ops.name = "sized-stream";
	ops.stream_open = never_stream_open;
	assert_int_equal(rmig_backend_register(&ops), -EINVAL);
	assert_null(rmig_backend_find("sized-stream"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_old_table_registered),
		cmocka_unit_test(test_old_table_migrates),
		cmocka_unit_test(test_bad_sizes),
	};

	alarm(120); /* a migration that hangs fails the test (SIGALRM) */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
