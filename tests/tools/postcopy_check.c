/* postcopy_check - is a post-copied guest's memory right?
 *
 *   postcopy_check [SIM_OPTIONS]     (default size=256M,dirty-rate=20000,
 *                                     hot=5%,zero=50%,seed=7,regions=2)
 *
 * --verify cannot run with post-copy: the destination's guest writes its
 * memory before all of it arrived. This checks it another way. One process
 * migrates a dirtying sim guest by post-copy over loopback TCP, the source
 * on the main thread and the destination on another, through the public
 * API only. The source holds still for HOLD_MS after STARTED, so that the
 * running destination guest must fault pages in. Afterwards the
 * destination guest is paused, and the writes it made since the switch-over
 * are replayed on the source's memory, which stayed as it was at the pause:
 * sim's writer is deterministic, and its RNG state and write count travel in
 * the device state (the layout of sim's state blob is repeated below). The
 * destination's memory must then equal the source's byte for byte, and the
 * replayed RNG must end where the destination's did.
 *
 * What that proves: every page the destination guest read or wrote held,
 * when it first touched it, exactly the source's content at the pause,
 * whether it came in pre-copy, by the post-copy stream, on demand after a
 * fault, or was never written and mapped as zero; and no page was written
 * twice (a late copy over the guest's own writes would differ). sim writes
 * one word per write, so a page is never rewritten whole.
 *
 * With `--via PROXY ARGS...` the source connects through a faultproxy
 * (tests/tools/faultproxy.c) started as `PROXY 0 127.0.0.1:DEST_PORT
 * --ready-file F ARGS...`, e.g. `--via build/tests/faultproxy --cut-on
 * PAGE_DATA`: the link breaks during post-copy and the migration recovers.
 * Then both sides must report as many recoveries as the proxy has cuts
 * (`--cut-on` arguments), and memory is checked as above: recovery must
 * neither lose a page nor place one twice.
 *
 * With POSTCOPY_CHECK_READERS=N in the environment, N more threads of the
 * destination read random pages of its guest from the start on (a guest
 * with many vCPUs): that many page requests may be outstanding when the
 * link breaks. They start before the destination sends STARTED, and it
 * waits 100 ms more, so that the first page is asked for and answered
 * before the source knows the guest started (a cut on PAGE_DATA then lands
 * between GO and STARTED). They only read, so memory is checked as above.
 *
 * Prints "PASS: ..." and exits 0, "FAIL: ..." and 1, or "SKIP: ..." and 77
 * when this host cannot catch page faults (userfaultfd).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rmig_backend.h"
#include "sim_state.h"

#define HOLD_MS 300
#define SIM_PAGE 4096u

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

#define MAX_READERS 1024

struct dest {
	struct rmig_backend *be;
	struct rmig_ctx *ctx;
	atomic_uint port;
	int rc;
	pthread_t tid;
	unsigned nreaders; /* POSTCOPY_CHECK_READERS */
	unsigned started_readers;
	atomic_int readers_stop;
	pthread_t readers[MAX_READERS];
};

/* A vCPU of the destination guest that only reads: a random page at a time. */
static void *reader_main(void *arg)
{
	struct dest *d = arg;
	const struct rmig_region *r;
	uint64_t rng = (uint64_t)(uintptr_t)&r | 1;
	size_t n;

	if (d->be->ops->get_regions(d->be, &r, &n) || !n)
		return NULL;
	while (!atomic_load(&d->readers_stop)) {
		const struct rmig_region *reg;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		reg = &r[rng % n];
		(void)*(volatile char *)((char *)reg->host +
					 (rng >> 8) % (reg->len / SIM_PAGE) * SIM_PAGE);
	}
	return NULL;
}

static void start_readers(struct dest *d)
{
	while (d->started_readers < d->nreaders &&
	       !pthread_create(&d->readers[d->started_readers], NULL, reader_main, d))
		d->started_readers++;
}

static void stop_readers(struct dest *d)
{
	atomic_store(&d->readers_stop, 1);
	for (unsigned i = 0; i < d->started_readers; i++)
		pthread_join(d->readers[i], NULL);
	d->started_readers = 0;
}

static void on_dest_event(void *arg, const struct rmig_event *ev)
{
	struct dest *d = arg;

	if (ev->type == RMIG_EV_LISTENING)
		atomic_store(&d->port, ev->port);
	/* The readers fault before STARTED goes out, as a VMM's vCPUs may:
	 * their first requests are answered while the source waits for it. */
	if (ev->type == RMIG_EV_PHASE && !strcmp(ev->phase, "post-copy") && d->nreaders &&
	    !d->started_readers) {
		start_readers(d);
		sleep_ms(100);
	}
}

/* The destination guest must fault pages in: hold the source right after
 * STARTED, before it streams or answers anything. */
static void on_source_event(void *arg, const struct rmig_event *ev)
{
	(void)arg;
	if (ev->type == RMIG_EV_PHASE && !strcmp(ev->phase, "post-copy"))
		sleep_ms(HOLD_MS);
}

static void *dest_main(void *arg)
{
	struct dest *d = arg;

	d->rc = rmig_recv(d->ctx);
	return NULL;
}

static uint64_t splitmix64(uint64_t x) /* backends/sim.c */
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t xorshift64(uint64_t *s) /* backends/sim.c */
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static int state_of(struct rmig_backend *be, struct sim_state_blob *b)
{
	void *blob = NULL;
	size_t len = 0;
	int rc = be->ops->save_state(be, &blob, &len);

	if (!rc &&
	    (len != sizeof(*b) || ((struct sim_state_blob *)blob)->magic != SIM_STATE_MAGIC ||
	     ((struct sim_state_blob *)blob)->version != SIM_STATE_VERSION))
		rc = -EPROTO; /* sim's blob changed: update this copy */
	if (!rc)
		memcpy(b, blob, sizeof(*b));
	free(blob);
	return rc;
}

/* Apply writes (from.writes, to.writes] of sim's writer to the regions. */
static int replay(const struct rmig_region *r, size_t n, const struct sim_state_blob *from,
		  const struct sim_state_blob *to)
{
	uint64_t rng = from->rng, per_region = r[0].len / SIM_PAGE;

	if (!from->hot_zero)
		return -EINVAL; /* hot-zero=0 redraws pages: not replayed here */
	for (uint64_t cnt = from->writes + 1; cnt <= to->writes; cnt++) {
		uint64_t x = xorshift64(&rng);
		uint64_t page = (x % from->hot_pages) * from->stride % from->npages;
		uint64_t *w;

		if (page / per_region >= n)
			return -EINVAL;
		w = (uint64_t *)((char *)r[page / per_region].host +
				 (page % per_region) * SIM_PAGE) +
		    (x >> 40) % (SIM_PAGE / 8);
		*w = splitmix64(cnt ^ from->seed) | 1;
	}
	return rng == to->rng ? 0 : -EILSEQ;
}

/* Start `argv[0] 0 127.0.0.1:port --ready-file F argv[1..]`: the port it
 * listens on, or 0; *pid for the kill. */
static unsigned start_proxy(char **argv, int argc, unsigned port, pid_t *pid)
{
	char target[32], ready[64];
	char *args[64];
	int n = 0;
	unsigned got = 0;

	if (argc + 5 > 64)
		return 0;
	snprintf(target, sizeof(target), "127.0.0.1:%u", port);
	snprintf(ready, sizeof(ready), "/tmp/postcopy_check.%d.port", (int)getpid());
	unlink(ready);
	args[n++] = argv[0];
	args[n++] = "0";
	args[n++] = target;
	args[n++] = "--ready-file";
	args[n++] = ready;
	for (int i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	*pid = fork();
	if (*pid == 0) {
		execv(args[0], args);
		_exit(127);
	}
	for (int i = 0; i < 500 && *pid > 0 && !got; i++) {
		FILE *f = fopen(ready, "r");

		if (f && fscanf(f, "%u", &got) != 1)
			got = 0;
		if (f)
			fclose(f);
		if (!got)
			sleep_ms(10);
	}
	unlink(ready);
	return got;
}

static int count_cuts(char **argv, int argc)
{
	int n = 0;

	for (int i = 1; i < argc; i++)
		n += !strcmp(argv[i], "--cut-on");
	return n;
}

int main(int argc, char **argv)
{
	char spec[256], err[256];
	const char *opts = argc > 1 && strcmp(argv[1], "--via")
			       ? argv[1]
			       : "size=256M,dirty-rate=20000,hot=5%,zero=50%,seed=7,regions=2";
	int via = argc > 1 && strcmp(argv[1], "--via") ? 2 : 1, cuts = 0;
	pid_t proxy = 0;
	unsigned dest_port;
	struct dest d = { .rc = -1 };
	struct rmig_backend *src = NULL;
	struct rmig_ctx *ctx = NULL;
	struct rmig_config cfg;
	struct sim_state_blob at_pause, now;
	const struct rmig_region *sr, *dr;
	size_t sn, dn;
	uint64_t bad_pages = 0, first_bad = 0;
	int rc, status = 1, started = 0;

	if (getenv("POSTCOPY_CHECK_READERS"))
		d.nreaders = (unsigned)atoi(getenv("POSTCOPY_CHECK_READERS")) % (MAX_READERS + 1);
	snprintf(spec, sizeof(spec), "sim:%s", opts);
	if (rmig_backend_open(spec, RMIG_ROLE_SOURCE, &src, err, sizeof(err)) ||
	    rmig_backend_open("sim", RMIG_ROLE_DEST, &d.be, err, sizeof(err))) {
		printf("FAIL: backend: %s\n", err);
		goto out;
	}
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.port = 0;
	cfg.on_event = on_dest_event;
	cfg.event_arg = &d;
	if (rmig_ctx_create(&d.ctx, &cfg, d.be) || pthread_create(&d.tid, NULL, dest_main, &d)) {
		printf("FAIL: cannot start the destination\n");
		goto out;
	}
	started = 1;
	for (int i = 0; i < 500 && !atomic_load(&d.port); i++)
		sleep_ms(10);
	dest_port = atomic_load(&d.port);
	if (via < argc && !strcmp(argv[via], "--via")) {
		if (via + 1 >= argc) {
			printf("FAIL: --via needs the proxy's path\n");
			goto out;
		}
		cuts = count_cuts(argv + via + 1, argc - via - 1);
		dest_port = start_proxy(argv + via + 1, argc - via - 1, dest_port, &proxy);
	}
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "tcp";
	cfg.port = (uint16_t)dest_port;
	cfg.postcopy = 1;
	cfg.verify = 0;
	cfg.on_event = on_source_event;
	if (!cfg.port || rmig_ctx_create(&ctx, &cfg, src)) {
		printf("FAIL: the destination did not listen, or no source context\n");
		goto out;
	}
	rc = rmig_send(ctx);
	pthread_join(d.tid, NULL);
	started = 0;
	stop_readers(&d); /* before the destination guest pauses: nothing waits */
	if (rc && strstr(rmig_errmsg(ctx), "post-copy is not possible here")) {
		printf("SKIP: %s\n", rmig_errmsg(ctx));
		status = 77;
		goto out;
	}
	if (rc || d.rc) {
		printf("FAIL: source: %s; destination: %s\n", rc ? rmig_errmsg(ctx) : "ok",
		       d.rc ? rmig_errmsg(d.ctx) : "ok");
		goto out;
	}
	if (!rmig_stats(d.ctx)->postcopy || !rmig_stats(d.ctx)->postcopy_requested) {
		printf("FAIL: no post-copy, or no page fetched on demand (%llu pages after "
		       "the start)\n",
		       (unsigned long long)rmig_stats(d.ctx)->postcopy_pages);
		goto out;
	}
	if (rmig_stats(ctx)->recoveries != (unsigned)cuts ||
	    rmig_stats(d.ctx)->recoveries != (unsigned)cuts) {
		printf("FAIL: %u recoveries at the source, %u at the destination, after %d cuts\n",
		       rmig_stats(ctx)->recoveries, rmig_stats(d.ctx)->recoveries, cuts);
		goto out;
	}
	/* The source has been paused since the switch-over; stop the copy too. */
	if (d.be->ops->pause(d.be) || state_of(src, &at_pause) || state_of(d.be, &now) ||
	    src->ops->get_regions(src, &sr, &sn) || d.be->ops->get_regions(d.be, &dr, &dn) ||
	    sn != dn) {
		printf("FAIL: cannot read the guests' state\n");
		goto out;
	}
	if (now.writes <= at_pause.writes) {
		printf("FAIL: the destination guest did not run (%llu writes at the pause, %llu "
		       "now)\n",
		       (unsigned long long)at_pause.writes, (unsigned long long)now.writes);
		goto out;
	}
	rc = replay(sr, sn, &at_pause, &now);
	if (rc) {
		printf("FAIL: replaying the destination guest's writes: %s\n",
		       rc == -EILSEQ ? "its RNG ended elsewhere" : "page out of range");
		goto out;
	}
	for (size_t i = 0; i < sn; i++)
		for (uint64_t p = 0; p < sr[i].len / SIM_PAGE; p++)
			if (memcmp((char *)sr[i].host + p * SIM_PAGE,
				   (char *)dr[i].host + p * SIM_PAGE, SIM_PAGE) &&
			    !bad_pages++)
				first_bad = i * (sr[0].len / SIM_PAGE) + p;
	if (bad_pages) {
		printf("FAIL: %llu pages differ from the source's plus the destination "
		       "guest's own writes (first: page %llu)\n",
		       (unsigned long long)bad_pages, (unsigned long long)first_bad);
		goto out;
	}
	printf("PASS: %llu pages after the start, %llu on demand, %d recoveries, %llu writes "
	       "replayed, all %zu MiB equal\n",
	       (unsigned long long)rmig_stats(d.ctx)->postcopy_pages,
	       (unsigned long long)rmig_stats(d.ctx)->postcopy_requested, cuts,
	       (unsigned long long)(now.writes - at_pause.writes), (size_t)(sr[0].len * sn >> 20));
	status = 0;
out:
	if (started) {
		rmig_cancel(d.ctx);
		pthread_join(d.tid, NULL);
	}
	stop_readers(&d);
	if (proxy > 0) {
		kill(proxy, SIGTERM);
		waitpid(proxy, NULL, 0);
	}
	rmig_ctx_destroy(ctx);
	rmig_ctx_destroy(d.ctx);
	rmig_backend_close(src);
	rmig_backend_close(d.be);
	return status;
}
