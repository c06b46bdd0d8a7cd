/* uffd_guest.c - a program that live-migrates its own memory with librmig's
 * uffd backend: a thread keeps writing the memory while rmig copies it, and
 * the kernel (userfaultfd + PAGEMAP_SCAN, Linux 6.7+) tells rmig which pages
 * changed since the last round. The destination's thread carries on.
 *   uffd_guest recv ADDR PORT SIZE                 (PORT 0: any free port)
 *   uffd_guest send HOST PORT SIZE [DOWNTIME_MS]
 * Prints JSON lines like `rmig --json`; exits with the result (0: migrated).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <rmig_uffd.h>

struct guest {
	uint8_t *mem;
	size_t pages;
	pthread_mutex_t lock; /* held while writing: pause waits for the write */
	int running;
	_Atomic uint64_t writes; /* the device state: how far the guest got */
};

/* The guest's work: ~10000 writes a second, spread over its memory. */
static void *guest_main(void *arg)
{
	struct guest *g = arg;

	for (;;) {
		pthread_mutex_lock(&g->lock);
		if (g->running) {
			uint64_t n = ++g->writes, page = n * 2654435761u % g->pages;

			memcpy(g->mem + page * 4096 + n % 512 * 8, &n, 8);
		}
		pthread_mutex_unlock(&g->lock);
		/* Its only cancellation point, and it holds no lock there. */
		nanosleep(&(struct timespec){ 0, 100000 }, NULL);
	}
	return NULL;
}

static int set_running(void *arg, int on)
{
	struct guest *g = arg;

	pthread_mutex_lock(&g->lock);
	g->running = on;
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static int g_pause(void *arg)
{
	return set_running(arg, 0);
}

static int g_resume(void *arg) /* also the destination's start */
{
	return set_running(arg, 1);
}

static int g_save(void *arg, void **blob, size_t *len)
{
	uint64_t w = ((struct guest *)arg)->writes;

	if (!(*blob = malloc(sizeof(w))))
		return -ENOMEM;
	memcpy(*blob, &w, sizeof(w));
	*len = sizeof(w);
	return 0;
}

static int g_load(void *arg, const void *blob, size_t len)
{
	uint64_t w;

	if (len != sizeof(w))
		return -EINVAL;
	memcpy(&w, blob, len);
	((struct guest *)arg)->writes = w;
	return 0;
}

static void on_event(void *arg, const struct rmig_event *ev)
{
	(void)arg;
	if (ev->type == RMIG_EV_LISTENING)
		printf("{\"event\":\"listening\",\"port\":%u}\n", ev->port);
	else if (ev->type == RMIG_EV_ROUND)
		printf("{\"event\":\"round\",\"round\":%u,\"pages\":%llu,\"dirty_pages\":%llu}\n",
		       ev->round->round, (unsigned long long)ev->round->pages,
		       (unsigned long long)ev->round->dirty_pages);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct guest g = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct rmig_uffd_params p = { .pause = g_pause,
				      .resume = g_resume,
				      .save_state = g_save,
				      .load_state = g_load,
				      .start = g_resume,
				      .arg = &g };
	int send = argc > 1 && !strcmp(argv[1], "send"), rc;
	struct rmig_backend *be = NULL;
	struct rmig_ctx *ctx = NULL;
	const struct rmig_stats *st;
	struct rmig_config cfg;
	uint64_t size, w0;
	pthread_t tid;
	char err[256];

	if (argc < 5 || argc > 5 + send || (!send && strcmp(argv[1], "recv")) ||
	    rmig_parse_size(argv[4], &size) || !size || size % 4096) {
		fputs("usage: uffd_guest recv ADDR PORT SIZE | send HOST PORT SIZE [DOWNTIME_MS]\n",
		      stderr);
		return RMIG_RESULT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN); /* a closed socket is an error, not death */
	/* Fresh anonymous memory: zero, as the destination needs it. */
	g.mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g.mem == MAP_FAILED)
		return RMIG_RESULT_FAILED;
	g.pages = size / 4096;
	for (size_t i = 0; send && i < g.pages; i++)
		g.mem[i * 4096] = 1; /* some content to start with */
	g.running = send;
	pthread_create(&tid, NULL, guest_main, &g);
	p.addr = g.mem;
	p.len = size;
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.host = argv[2];
	cfg.port = (uint16_t)atoi(argv[3]);
	cfg.downtime_ms = argc > 5 ? (unsigned)atoi(argv[5]) : cfg.downtime_ms;
	cfg.on_event = on_event;
	rc = rmig_uffd_backend_create(&p, send ? RMIG_ROLE_SOURCE : RMIG_ROLE_DEST, &be, err,
				      sizeof(err));
	if (!rc && (rc = rmig_ctx_create(&ctx, &cfg, be)))
		snprintf(err, sizeof(err), "%s", strerror(-rc));
	if (!rc && (rc = send ? rmig_send(ctx) : rmig_recv(ctx)))
		snprintf(err, sizeof(err), "%s", rmig_errmsg(ctx));
	if (rc)
		fprintf(stderr, "uffd_guest: %s\n", err);
	if (ctx) {
		/* Running on this side now? Show that it makes progress. */
		w0 = g.writes;
		nanosleep(&(struct timespec){ 0, 200000000 }, NULL);
		st = rmig_stats(ctx);
		printf("{\"event\":\"summary\",\"role\":\"%s\",\"result\":\"%s\",\"verified\":%s,"
		       "\"rounds\":%u,\"pages_sent\":%llu,\"downtime_ms\":%llu,"
		       "\"guest_running\":%s,\"guest_progress_delta\":%llu}\n",
		       send ? "source" : "destination", rmig_result_name(st->result),
		       st->verified ? "true" : "false", st->rounds,
		       (unsigned long long)st->pages_sent, (unsigned long long)st->downtime_ms,
		       g.running ? "true" : "false", (unsigned long long)(g.writes - w0));
	}
	rc = ctx ? (int)rmig_stats(ctx)->result : RMIG_RESULT_FAILED;
	pthread_cancel(tid);
	pthread_join(tid, NULL);
	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
	munmap(g.mem, size);
	return rc;
}
