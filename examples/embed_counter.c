/* embed_counter.c - librmig with a backend of its own (README.md). The guest: a writer thread
 * adds 1 to the counter of random pages of its memory and logs them in its own dirty bitmap;
 * the counters sum to the writes done, so the memory alone says where the source stopped.
 * Usage: embed_counter recv PORT (0: any, printed) | send HOST PORT [MIB (64)] */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <rmig_backend.h>

#define PAGE 4096u
#define MAX_PAGES (1u << 18) /* 1 GiB */

/* One guest per process, as in a hypervisor: statics rather than be->priv. */
static struct rmig_region region; /* the only one; host is NULL until mapped */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* the writer writes holding it */
static uint64_t dirty[MAX_PAGES / 64];			 /* pages written since the last fetch */
static int paused = 1, has_writer;
static pthread_t writer;
static unsigned long long rng = 7, writes; /* the writer's, this side */

static void *writer_main(void *arg) /* 20 writes a millisecond */
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		for (int i = 0; !paused && i < 20; i++) {
			uint64_t page = (rng >> 33) % (region.len / PAGE);
			rng = rng * 6364136223846793005ull + 1;
			(*(uint64_t *)((char *)region.host + page * PAGE))++;
			dirty[page / 64] |= 1ull << (page % 64);
			writes++;
		}
		pthread_mutex_unlock(&lock);
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL); /* destroy cancels it here */
	}
	return NULL;
}

/* Once pause returns, the writer (which writes holding the lock) sees paused: memory is still. */
static int counter_pause(struct rmig_backend *be)
{
	(void)be;
	pthread_mutex_lock(&lock);
	paused = 1;
	pthread_mutex_unlock(&lock);
	return 0;
}

static int counter_resume(struct rmig_backend *be) /* and start: there is no start op */
{
	(void)be;
	pthread_mutex_lock(&lock);
	paused = 0;
	pthread_mutex_unlock(&lock);
	return 0;
}

/* Both sides: memory for the layout, reading as zero (anonymous memory). */
static int counter_prepare_regions(struct rmig_backend *be, const struct rmig_region *layout,
				   size_t count)
{
	if (count != 1 || layout->page_size != PAGE || layout->len > MAX_PAGES * PAGE) {
		rmig_backend_err(be, "counter: one region of 4 KiB pages, up to 1 GiB");
		return -EINVAL;
	}
	region = *layout;
	region.host =
	    mmap(NULL, region.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region.host != MAP_FAILED)
		return 0;
	rmig_backend_err(be, "counter: mmap: %s", strerror(errno));
	return -ENOMEM;
}

/* args: the size, on the source; the destination gets the layout (prepare_regions). */
static int counter_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct rmig_region layout = { .page_size = PAGE };
	int rc = -pthread_create(&writer, NULL, writer_main, NULL); /* paused */
	has_writer = !rc;
	if (rc || role == RMIG_ROLE_DEST)
		return rc;
	if (rmig_parse_size(args, &layout.len)) {
		rmig_backend_err(be, "counter: '%s' is not a size", args);
		return -EINVAL;
	}
	rc = counter_prepare_regions(be, &layout, 1);
	return rc ? rc : counter_resume(be);
}

static void counter_destroy(struct rmig_backend *be)
{
	(void)be;
	if (has_writer && !pthread_cancel(writer)) /* in nanosleep: never holding the lock */
		pthread_join(writer, NULL);
	if (region.host != MAP_FAILED)
		munmap(region.host, region.len); /* len 0 while never mapped: EINVAL, harmless */
}

static int counter_get_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	(void)be;
	*r = &region;
	*n = 1;
	return 0;
}

/* Move the log into bitmap (of region 0, the only one). */
static int counter_fetch_dirty(struct rmig_backend *be, size_t index, uint64_t *bitmap)
{
	(void)be, (void)index;
	pthread_mutex_lock(&lock);
	for (uint64_t w = 0; w < (region.len / PAGE + 63) / 64; w++) {
		bitmap[w] |= dirty[w];
		dirty[w] = 0;
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

/* Optional ops left out: start_dirty_log (the writer logs all along), start (resume
 * starts it), save_state and load_state (no device state), throttle, guest_stats. */
static const struct rmig_backend_ops counter_ops = {
	.size = sizeof(struct rmig_backend_ops),
	.name = "counter",
	.create = counter_create,
	.destroy = counter_destroy,
	.get_regions = counter_get_regions,
	.fetch_dirty = counter_fetch_dirty,
	.pause = counter_pause,
	.resume = counter_resume,
	.prepare_regions = counter_prepare_regions,
};

static void on_event(void *out, const struct rmig_event *ev) /* on the thread in rmig_recv() */
{
	if (ev->type == RMIG_EV_LISTENING)
		fprintf(out, "listening %u\n", ev->port);
	fflush(out);
}

int main(int argc, char **argv)
{
	int send = argc >= 4 && !strcmp(argv[1], "send"), rc;
	struct rmig_backend *be = NULL;
	struct rmig_ctx *ctx = NULL;
	struct rmig_config cfg;
	char spec[64], err[256] = "";

	if (argc > 5 || (!send && (argc != 3 || strcmp(argv[1], "recv")))) {
		fprintf(stderr, "usage: embed_counter recv PORT | send HOST PORT [MIB]\n");
		return RMIG_RESULT_USAGE;
	}
	rmig_config_init(&cfg,
			 sizeof(cfg)); /* defaults: auto transport, 2 channels, verify on... */
	cfg.host = send ? argv[2] : "0.0.0.0"; /* without cfg.psk: loopback peers only */
	cfg.port = (uint16_t)strtoul(argv[send ? 3 : 2], NULL, 10);
	cfg.on_event = on_event;
	cfg.event_arg = stdout;
	snprintf(spec, sizeof(spec), "counter:%sM", argc == 5 ? argv[4] : "64");
	rc = rmig_backend_register(&counter_ops);
	rc = rc ? rc
		: rmig_backend_open(spec, send ? RMIG_ROLE_SOURCE : RMIG_ROLE_DEST, &be, err,
				    sizeof(err));
	rc = rc ? rc : rmig_ctx_create(&ctx, &cfg, be);
	if (rc) {
		fprintf(stderr, "embed_counter: %s\n", err[0] ? err : strerror(-rc));
		rmig_backend_close(be);
		return RMIG_RESULT_FAILED;
	}
	if (send ? rmig_send(ctx) : rmig_recv(ctx))
		fprintf(stderr, "embed_counter: %s\n", rmig_errmsg(ctx));
	const struct rmig_stats *st = rmig_stats(ctx);
	if (!send && st->result == RMIG_RESULT_MIGRATED) /* let the guest run here a while */
		nanosleep(&(struct timespec){ 0, 200000000 }, NULL);
	counter_pause(be); /* to check it: memory holds the source's writes plus ours */
	unsigned long long total = 0, at_pause;
	for (uint64_t off = 0; off < region.len; off += PAGE)
		total += *(uint64_t *)((char *)region.host + off);
	at_pause = send ? writes : total - writes;
	int ok = send || st->result || writes > 0;
	printf(
	    "%s result=%s verified=%d rounds=%u bytes=%llu downtime_ms=%llu writes_at_pause=%llu "
	    "writes=%llu check=%s\n",
	    send ? "source" : "destination", rmig_result_name(st->result), st->verified, st->rounds,
	    (unsigned long long)st->bytes_sent, (unsigned long long)st->downtime_ms, at_pause,
	    total, ok ? "ok" : "FAILED");
	rc = ok ? (int)st->result : RMIG_RESULT_FAILED;
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
	return rc;
}
