/* embed_counter.c - librmig embedded with a backend of its own (see README.md).
 *
 * The guest: MIB MiB of anonymous memory where a writer thread adds 1 to the
 * counter at the start of random pages, so the counters sum to the writes
 * done. The "counter" backend logs dirty pages in its own bitmap, parks the
 * writer on pause and sends its RNG and count as the device state. One guest
 * per process, as in a hypervisor: a static here, not in be->priv.
 * Usage: embed_counter recv PORT (0: any, printed) | send HOST PORT [MIB (64)]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <rmig.h>

#define PAGE 4096u

static struct {
	struct rmig_region region; /* the only one; host is NULL until mapped */
	uint64_t *dirty;	   /* a bit per page written since the last fetch */
	pthread_mutex_t lock;	   /* guards all below and the writer's writes */
	pthread_t writer;
	int has_writer, paused, stop;
	struct {
		uint64_t rng, writes;
	} state; /* the device state */
	uint64_t writes_at_pause;
} g = { .lock = PTHREAD_MUTEX_INITIALIZER, .paused = 1, .state.rng = 7 };

/* The guest's invariant: each write added 1 to exactly one page's counter. */
static uint64_t counter_sum(void)
{
	uint64_t sum = 0;

	for (uint64_t off = 0; off < g.region.len; off += PAGE)
		sum += *(const uint64_t *)((const char *)g.region.host + off);
	return sum;
}

static void *writer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&g.lock);
	while (!g.stop) {
		for (int i = 0; !g.paused && i < 20; i++) { /* 20 writes a millisecond */
			uint64_t page = (g.state.rng >> 33) % (g.region.len / PAGE);

			g.state.rng = g.state.rng * 6364136223846793005ull + 1;
			(*(uint64_t *)((char *)g.region.host + page * PAGE))++;
			g.dirty[page / 64] |= 1ull << (page % 64);
			g.state.writes++;
		}
		pthread_mutex_unlock(&g.lock);
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
		pthread_mutex_lock(&g.lock);
	}
	pthread_mutex_unlock(&g.lock);
	return NULL;
}

/* On return the writer is parked: it writes only under the lock. */
static int counter_pause(struct rmig_backend *be)
{
	(void)be;
	pthread_mutex_lock(&g.lock);
	g.paused = 1;
	pthread_mutex_unlock(&g.lock);
	return 0;
}

static int counter_resume(struct rmig_backend *be) /* and start, on the destination */
{
	(void)be;
	pthread_mutex_lock(&g.lock);
	g.paused = 0;
	pthread_mutex_unlock(&g.lock);
	return 0;
}

/* Both sides: memory for the layout, reading as zero (anonymous memory). */
static int counter_prepare_regions(struct rmig_backend *be, const struct rmig_region *layout,
				   size_t count)
{
	uint64_t len = layout[0].len;

	if (count != 1 || layout[0].page_size != PAGE || len > (1ull << 30)) {
		rmig_backend_err(be, "counter: one region of 4 KiB pages, up to 1 GiB");
		return -EINVAL;
	}
	g.region = layout[0];
	g.region.host = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g.dirty = calloc((len / PAGE + 63) / 64, sizeof(uint64_t));
	if (g.region.host != MAP_FAILED && g.dirty)
		return 0;
	rmig_backend_err(be, "counter: no memory for %llu MiB", (unsigned long long)len >> 20);
	return -ENOMEM;
}

/* args: the size in MiB, on the source (the destination gets the layout). */
static int counter_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct rmig_region layout = { .page_size = PAGE, .len = 64 };
	int rc = -pthread_create(&g.writer, NULL, writer_main, NULL);

	g.has_writer = !rc;
	if (rc || role == RMIG_ROLE_DEST)
		return rc;
	if (*args && rmig_parse_size(args, &layout.len)) {
		rmig_backend_err(be, "counter: '%s' is not a number of MiB", args);
		return -EINVAL;
	}
	layout.len <<= 20;
	rc = counter_prepare_regions(be, &layout, 1);
	return rc ? rc : counter_resume(be);
}

static void counter_destroy(struct rmig_backend *be)
{
	(void)be;
	pthread_mutex_lock(&g.lock);
	g.stop = 1;
	pthread_mutex_unlock(&g.lock);
	if (g.has_writer)
		pthread_join(g.writer, NULL);
	if (g.region.host && g.region.host != MAP_FAILED)
		munmap(g.region.host, g.region.len);
	free(g.dirty);
}

static int counter_get_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	(void)be;
	*r = &g.region;
	*n = 1;
	return 0;
}

/* Move the log into bitmap (region 0, the only one); without one, clear it. */
static int counter_fetch_dirty(struct rmig_backend *be, size_t index, uint64_t *bitmap)
{
	(void)be;
	pthread_mutex_lock(&g.lock);
	for (uint64_t w = 0; index == 0 && w < (g.region.len / PAGE + 63) / 64; w++) {
		if (bitmap)
			bitmap[w] |= g.dirty[w];
		g.dirty[w] = 0;
	}
	pthread_mutex_unlock(&g.lock);
	return index == 0 ? 0 : -EINVAL;
}

static int counter_start_dirty_log(struct rmig_backend *be)
{
	return counter_fetch_dirty(be, 0, NULL);
}

static int counter_save_state(struct rmig_backend *be, void **blob, size_t *len)
{
	(void)be;
	*blob = malloc(sizeof(g.state)); /* rmig frees it */
	if (!*blob)
		return -ENOMEM;
	memcpy(*blob, &g.state, sizeof(g.state)); /* paused: the writer is parked */
	g.writes_at_pause = g.state.writes;
	*len = sizeof(g.state);
	return 0;
}

/* The writer stays parked until start; a refusal here rolls back. */
static int counter_load_state(struct rmig_backend *be, const void *blob, size_t len)
{
	if (len == sizeof(g.state))
		memcpy(&g.state, blob, len);
	g.writes_at_pause = g.state.writes;
	if (len != sizeof(g.state) || counter_sum() != g.state.writes) {
		rmig_backend_err(be, "counter: memory and device state disagree");
		return -EILSEQ;
	}
	return 0;
}

static const struct rmig_backend_ops counter_ops = {
	.name = "counter",
	.create = counter_create,
	.destroy = counter_destroy,
	.get_regions = counter_get_regions,
	.start_dirty_log = counter_start_dirty_log,
	.fetch_dirty = counter_fetch_dirty,
	.pause = counter_pause,
	.resume = counter_resume,
	.save_state = counter_save_state,
	.prepare_regions = counter_prepare_regions,
	.load_state = counter_load_state,
	.start = counter_resume /* optional throttle and guest_stats: left out */
};

static void on_event(void *out, const struct rmig_event *ev)
{
	if (ev->type == RMIG_EV_LISTENING) /* on the thread in rmig_recv() */
		fprintf(out, "listening %u\n", ev->port);
	fflush(out);
}

int main(int argc, char **argv)
{
	int send = argc >= 4 && !strcmp(argv[1], "send"), rc, ok;
	struct rmig_backend *be = NULL;
	struct rmig_ctx *ctx = NULL;
	const struct rmig_stats *st;
	struct rmig_config cfg;
	char spec[64], err[256] = "";

	if (argc > 5 || (!send && (argc != 3 || strcmp(argv[1], "recv")))) {
		fprintf(stderr, "usage: embed_counter recv PORT | send HOST PORT [MIB]\n");
		return RMIG_RESULT_USAGE;
	}
	rmig_config_init(&cfg); /* defaults: auto transport, 2 channels, verify on... */
	cfg.host = send ? argv[2] : "0.0.0.0"; /* without cfg.psk: loopback peers only */
	cfg.port = (uint16_t)strtoul(argv[send ? 3 : 2], NULL, 10);
	cfg.on_event = on_event;
	cfg.event_arg = stdout;
	snprintf(spec, sizeof(spec), "counter:%s", argc == 5 ? argv[4] : "");
	rc = rmig_backend_register(&counter_ops);
	if (!rc)
		rc = rmig_backend_open(spec, send ? RMIG_ROLE_SOURCE : RMIG_ROLE_DEST, &be, err,
				       sizeof(err));
	if (!rc)
		rc = rmig_ctx_create(&ctx, &cfg, be);
	if (rc) {
		fprintf(stderr, "embed_counter: %s\n", err[0] ? err : strerror(-rc));
		rc = RMIG_RESULT_FAILED;
		goto out;
	}
	if (send ? rmig_send(ctx) : rmig_recv(ctx))
		fprintf(stderr, "embed_counter: %s\n", rmig_errmsg(ctx));
	st = rmig_stats(ctx);
	rc = (int)st->result;
	if (!send && rc == RMIG_RESULT_MIGRATED) /* let the guest run here a while */
		nanosleep(&(struct timespec){ 0, 200000000 }, NULL);
	counter_pause(be); /* hold it still to read it */
	/* The example's own check: the destination's writer went on from the
	 * source's count, and the memory still sums to the count. */
	ok = send || rc || (g.state.writes > g.writes_at_pause && counter_sum() == g.state.writes);
	printf("%s result=%s verified=%d rounds=%u bytes=%llu downtime_ms=%llu "
	       "writes_at_pause=%llu writes=%llu check=%s\n",
	       send ? "source" : "destination", rmig_result_name(st->result), st->verified,
	       st->rounds, (unsigned long long)st->bytes_sent, (unsigned long long)st->downtime_ms,
	       (unsigned long long)g.writes_at_pause, (unsigned long long)g.state.writes,
	       ok ? "ok" : "FAILED");
	rc = ok ? rc : RMIG_RESULT_FAILED;
out:
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
	return rc;
}
