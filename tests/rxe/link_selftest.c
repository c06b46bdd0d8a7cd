/* link_selftest.c - the RDMA link (transport/rdma.c) between two processes
 * in the soft-RoCE VM (tests/rxe/vm.sh). Built by build_link_selftest.sh.
 *
 *   link_selftest          all scenarios (inside the VM; uses $RXE_*)
 *   link_selftest nodev    on a host without RDMA: fast, clear failures
 *
 * The orchestrator forks a destination (D, on rxe_b) and a source (S, on
 * rxe_a) per scenario, before either touches RDMA (verbs state must not
 * cross fork). Prints "ok: ..." / "FAIL: ..." lines, then "N passed, N
 * failed"; exits 0 only if everything passed.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <rdma/rdma_cma.h>

#include "link.h"

extern const struct rmig_link_ops rmig_rdma_link_ops;

#define TMO 10000
/* How long one side waits on the control stream for the other to finish a
 * step. A step may be bulk work: the throughput writes take ~2 s on a quiet
 * host under TCG (384 MiB took ~6 s), and this host swings 2-4x. With TMO here the destination
 * gave up mid-step on slow CI hosts (and its exit then ended the source's
 * writes with "disconnected"). A dead peer still ends the wait at once. */
#define STEP_TMO 60000
#define AREA_LEN (64u << 20)
#define SMALL_AREA_LEN (1u << 20)
#define PAGE 4096u
#define STREAM_BYTES (16u << 20)

static const char *role = "orch";
static const char *a_dev, *b_dev, *a_ip, *b_ip;
static int a_gid = -1, numa;
static int passed, failed;
/* The scenario under way: a role process inherits it, so its FAIL line says
 * which one failed (CI keeps only the tail of the VM's output). */
static const char *scenario = "";

/* --- reporting ------------------------------------------------------------------ */

static void say(const char *fmt, ...)
{
	va_list ap;

	printf("[%s] ", role);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void ok(const char *fmt, ...)
{
	va_list ap;

	printf("ok: [%s] ", role);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	passed++;
}

/* In a role process a failure ends it: the orchestrator counts exit codes. */
static void bad(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL: [%s] %s%s", role, scenario, *scenario ? ": " : "");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	failed++;
}

#define MUST(expr, l)                                                                              \
	do {                                                                                       \
		int rc_ = (expr);                                                                  \
		if (rc_) {                                                                         \
			bad("%s:%d %s = %d (%s): %s", __FILE__, __LINE__, #expr, rc_,              \
			    strerror(-rc_), (l)->err);                                             \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- data patterns ------------------------------------------------------------------ */

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint8_t pat(uint64_t seed, uint64_t pos)
{
	return (uint8_t)(mix(seed * 0x9e3779b97f4a7c15ull + (pos >> 3)) >> ((pos & 7) * 8));
}

static void fill(uint8_t *p, size_t len, uint64_t seed, uint64_t pos)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pat(seed, pos + i);
}

/* Offset of the first wrong byte, or -1. */
static long check(const uint8_t *p, size_t len, uint64_t seed, uint64_t pos)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != pat(seed, pos + i))
			return (long)i;
	return -1;
}

static uint64_t hash(const void *p, size_t len)
{
	const uint64_t *w = p;
	uint64_t h = 0x12345678;

	for (size_t i = 0; i < len / 8; i++)
		h = mix(h ^ w[i]) + i;
	return h;
}

static uint64_t rnd_state = 88172645463325252ull;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* --- link helpers ------------------------------------------------------------------ */

static struct rmig_link *new_link(const char *dev, int gid)
{
	struct rmig_link *l = NULL;
	char g[16];
	int rc;

	rmig_link_register(&rmig_rdma_link_ops); /* -EEXIST once registry.c has it */
	rc = rmig_link_open("rdma", &l);
	if (rc) {
		bad("rmig_link_open: %s", strerror(-rc));
		exit(1);
	}
	snprintf(g, sizeof(g), "%d", gid);
	if ((dev && (rc = rmig_link_set_option(l, "device", dev))) ||
	    (rc = rmig_link_set_option(l, "gid_index", g))) {
		bad("rmig_link_set_option: %s", l->err);
		exit(1);
	}
	return l;
}

/* The caller's line in a failure, not these helpers'. */
#define send_u64(l, v) send_u64_at(l, v, __LINE__)
#define recv_u64(l) recv_u64_at(l, __LINE__)

static void send_u64_at(struct rmig_link *l, uint64_t v, int line)
{
	struct iovec iov = { &v, sizeof(v) };
	int rc = l->ops->ctrl_send(l, &iov, 1, TMO);

	if (rc) {
		bad("line %d: ctrl_send: %s: %s", line, strerror(-rc), l->err);
		exit(1);
	}
}

static uint64_t recv_u64_at(struct rmig_link *l, int line)
{
	uint64_t v;
	int rc = l->ops->ctrl_recv(l, &v, sizeof(v), STEP_TMO);

	if (rc) {
		bad("line %d: ctrl_recv: %s: %s", line, strerror(-rc), l->err);
		exit(1);
	}
	return v;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		bad("mmap %zu: %s", len, strerror(errno));
		exit(1);
	}
	return p;
}

/* What the kernel counts as pinned in this process (VmPin, KiB): every
 * memory registration, whatever the link's own bookkeeping says. */
static long pinned_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	if (kib < 0) {
		bad("no VmPin in /proc/self/status");
		exit(1);
	}
	return kib;
}

/* An accepted connection pins only what its opening needs until it is
 * adopted (transport/rdma.c, OPEN_*_SLOTS_*): one 64 KiB receive slot for
 * a data channel, two 16 KiB receive and one send slot for a control
 * connection. Full pools: 16 + 16 slots of 64 KiB and 8 + 8 of 16 KiB. */
#define OPEN_DATA_KIB 64
#define OPEN_CTRL_KIB 48
#define FULL_DATA_KIB 2048
#define FULL_CTRL_KIB 256

/* Pipes between the orchestrator and the roles. */
struct pipes {
	int port[2];  /* D -> S: the listening port */
	int ready[2]; /* role -> orchestrator: mid-transfer now */
	int when[2];  /* survivor -> orchestrator: CLOCK_MONOTONIC ms of its failure */
};

static void write_all(int fd, const void *p, size_t n)
{
	if (write(fd, p, n) != (ssize_t)n)
		say("pipe write failed: %s", strerror(errno));
}

static int read_all(int fd, void *p, size_t n)
{
	return read(fd, p, n) == (ssize_t)n ? 0 : -1;
}

/* The destination's listener; each connection is accepted into a link of
 * its own, as the engine does. */
static struct rmig_link *listener;
static uint16_t dest_port; /* the source's: where the destination listens */

static struct rmig_link *accept_conn(int timeout_ms)
{
	struct rmig_link *c = NULL;

	MUST(rmig_link_accept(listener, timeout_ms, &c), listener);
	return c;
}

/* Listen, tell the source where, and accept its control connection: the
 * session's link. */
static struct rmig_link *dest_start(struct pipes *pp)
{
	uint16_t port = 0;

	listener = new_link(b_dev, -1);
	MUST(listener->ops->listen(listener, b_ip, &port), listener);
	write_all(pp->port[1], &port, sizeof(port));
	return accept_conn(30000);
}

/* The session's link before the listener, as the engine does. */
static void dest_end(struct rmig_link *s)
{
	rmig_link_destroy(s);
	rmig_link_destroy(listener);
	listener = NULL;
}

static struct rmig_link *source_start(struct pipes *pp)
{
	struct rmig_link *l = new_link(a_dev, a_gid);

	if (read_all(pp->port[0], &dest_port, sizeof(dest_port))) {
		bad("no port from the destination");
		exit(1);
	}
	MUST(l->ops->connect_ctrl(l, b_ip, dest_port, TMO), l);
	return l;
}

/* The source opens a data channel and, as the engine's hello would, sends
 * its index first on it, then `prelude` bytes of pattern (seed 50 + index)
 * in the same send: part of it shares a receive slot with the index. */
static unsigned open_channel(struct rmig_link *l, int node, size_t prelude)
{
	uint8_t *buf = malloc(prelude + 1);
	uint64_t idx;
	unsigned chan;
	struct iovec iov[2] = { { &idx, sizeof(idx) }, { buf, prelude } };

	MUST(l->ops->connect_channel(l, TMO, node, &chan), l);
	idx = chan;
	fill(buf, prelude, 50 + chan, 0);
	MUST(l->ops->chan_send(l, chan, iov, 2, TMO), l);
	free(buf);
	return chan;
}

/* The prelude of channel chan, read on the session's link after adoption. */
static void check_prelude(struct rmig_link *s, unsigned chan, size_t prelude)
{
	uint8_t *buf = malloc(prelude + 1);
	struct iovec iov = { buf, prelude };

	MUST(s->ops->chan_recv(s, chan, &iov, 1, TMO), s);
	if (check(buf, prelude, 50 + chan, 0) >= 0) {
		bad("channel %u: what arrived before adoption is corrupted at %ld", chan,
		    check(buf, prelude, 50 + chan, 0));
		exit(1);
	}
	free(buf);
}

/* What the engine does with a data channel: accept its connection, read
 * the index the source sent first, make it that channel of session s. */
static unsigned take_channel(struct rmig_link *s, int *node)
{
	struct rmig_link *c = accept_conn(TMO);
	unsigned chan = (unsigned)recv_u64(c);

	MUST(s->ops->adopt_channel(s, c, chan, node), s);
	rmig_link_destroy(c);
	return chan;
}

/* --- main session: destination ------------------------------------------------------- */

static const size_t ctrl_sizes[] = { 1, 7, 8, 4095, 16383, 16384, 16385, 100003, (1u << 20) + 13 };
#define NSIZES (sizeof(ctrl_sizes) / sizeof(ctrl_sizes[0]))

struct stream_job {
	struct rmig_link *l;
	unsigned chan;
	int send;
	size_t bytes;
	int rc;
	double secs;
	char err[300];
};

/* Send or receive `bytes` of pattern (seed = channel) in random pieces. */
static void *stream_worker(void *arg)
{
	struct stream_job *j = arg;
	uint8_t *buf = malloc(400 << 10);
	uint64_t st = mix(j->chan + 1 + (uint64_t)j->send * 77);
	size_t pos = 0;
	double t0 = now_s();

	while (pos < j->bytes && !j->rc) {
		size_t n = (size_t)((st = mix(st)) % (300 << 10)) + 1, cut;
		struct iovec iov[3];

		if (n > j->bytes - pos)
			n = j->bytes - pos;
		cut = (size_t)(mix(st + 1) % (n + 1));
		iov[0] = (struct iovec){ buf, cut };
		iov[1] = (struct iovec){ buf + cut, 0 };
		iov[2] = (struct iovec){ buf + cut, n - cut };
		if (j->send) {
			fill(buf, n, j->chan, pos);
			j->rc = j->l->ops->chan_send(j->l, j->chan, iov, 3, TMO);
		} else {
			j->rc = j->l->ops->chan_recv(j->l, j->chan, iov, 3, TMO);
			if (!j->rc && check(buf, n, j->chan, pos) >= 0) {
				snprintf(j->err, sizeof(j->err), "channel %u: wrong byte at %zu",
					 j->chan, pos + (size_t)check(buf, n, j->chan, pos));
				j->rc = -EBADMSG;
			}
		}
		if (j->rc && !j->err[0])
			snprintf(j->err, sizeof(j->err), "%s", j->l->err);
		pos += n;
	}
	j->secs = now_s() - t0;
	free(buf);
	return NULL;
}

static void run_streams(struct rmig_link *l, int send, size_t bytes, const char *what)
{
	struct stream_job j[2];
	pthread_t t[2];

	for (unsigned i = 0; i < 2; i++) {
		j[i] = (struct stream_job){ .l = l, .chan = i, .send = send, .bytes = bytes };
		pthread_create(&t[i], NULL, stream_worker, &j[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < 2; i++) {
		if (j[i].rc) {
			bad("%s channel %u: %s", what, i, j[i].err);
			exit(1);
		}
	}
	ok("%s: 2 channels x %.1f MiB concurrently, content checked (%.1f MB/s total)", what,
	   bytes / 1048576.0, 2 * bytes / 1e6 / (j[0].secs > j[1].secs ? j[0].secs : j[1].secs));
}

struct block_job {
	struct rmig_link *l;
	int ctrl;
	int rc;
	int64_t t_end;
};

static void *blocked_recv(void *arg)
{
	struct block_job *b = arg;
	uint8_t byte;
	struct iovec iov = { &byte, 1 };

	b->rc = b->ctrl ? b->l->ops->ctrl_recv(b->l, &byte, 1, -1)
			: b->l->ops->chan_recv(b->l, 0, &iov, 1, -1);
	b->t_end = now_ms();
	return NULL;
}

static struct rmig_link *sig_link;

static void on_alarm(int sig)
{
	(void)sig;
	sig_link->ops->interrupt(sig_link, RMIG_LINK_STOP_CTRL_RECV);
}

static void expect_fail(struct rmig_link *l, int rc, int want, const char *what,
			const char *needle);

/* Both data channels accepted as links of their own before either is
 * adopted, then adopted in reverse order (the source names the index): the
 * node each serves, and what arrived before adoption, come along. */
static void adopt_channels(struct rmig_link *l, int node[2])
{
	struct rmig_link *c[2];
	unsigned idx[2], first;
	long pin0 = pinned_kib(), pin;
	int n;

	for (int i = 0; i < 2; i++) {
		c[i] = accept_conn(TMO);
		idx[i] = (unsigned)recv_u64(c[i]);
	}
	/* Accepted, their first frame read, 100003 more bytes sent to each:
	 * still nothing but what an opening needs is pinned. */
	pin = pinned_kib() - pin0;
	if (pin <= 0 || pin > 2 * OPEN_DATA_KIB) {
		bad("2 data channels accepted, not adopted: %ld KiB pinned, expected at most %d",
		    pin, 2 * OPEN_DATA_KIB);
		exit(1);
	}
	ok("2 data channels accepted, not adopted: %ld KiB pinned (%d KiB once adopted)", pin,
	   2 * FULL_DATA_KIB);
	first = idx[0] == 1 ? 0 : 1; /* the conn carrying channel 1 */
	if (idx[first] != 1 || idx[1 - first] != 0) {
		bad("channel indexes %u and %u, expected 0 and 1", idx[0], idx[1]);
		exit(1);
	}
	expect_fail(l, l->ops->adopt_channel(l, c[first], RMIG_LINK_MAX_CHANNELS, &n), -EINVAL,
		    "adopting channel 64", NULL);
	MUST(l->ops->adopt_channel(l, c[first], 1, &node[1]), l);
	{
		struct iovec iov = { &n, 1 };

		expect_fail(l, l->ops->chan_recv(l, 0, &iov, 1, TMO), -EINVAL,
			    "chan_recv on channel 0 before it is adopted", "no data channel 0");
	}
	expect_fail(l, l->ops->adopt_channel(l, c[1 - first], 1, &n), -EEXIST,
		    "adopting a second channel 1", "already");
	MUST(l->ops->adopt_channel(l, c[1 - first], 0, &node[0]), l);
	expect_fail(c[first], c[first]->ops->ctrl_recv(c[first], &n, 1, TMO), -ENOTCONN,
		    "ctrl_recv on an adopted channel's own link", NULL);
	for (int i = 0; i < 2; i++) {
		if (node[i] != (numa ? i : -1)) {
			bad("channel %d: node %d", i, node[i]);
			exit(1);
		}
		check_prelude(l, (unsigned)i, 100003);
		rmig_link_destroy(c[i]);
	}
	pin = pinned_kib() - pin0;
	if (pin != 2 * FULL_DATA_KIB) {
		bad("2 data channels adopted: %ld KiB pinned, expected %d", pin, 2 * FULL_DATA_KIB);
		exit(1);
	}
	ok("2 data channels adopted in reverse order, nodes %d and %d as the source said, "
	   "bytes that arrived before adoption intact",
	   node[0], node[1]);
}

/* A second control connection while the session runs: accepted (the
 * engine decides whether to serve it), usable on its own, and refused as
 * a data channel. */
static void second_session(struct rmig_link *l)
{
	long pin0 = pinned_kib(), pin;
	struct rmig_link *c = accept_conn(TMO);
	int n;

	expect_fail(l, l->ops->adopt_channel(l, c, 2, &n), -EPROTO,
		    "a control connection adopted as a data channel", "control connection");
	expect_fail(listener, listener->ops->accept(listener, 100, l), -EISCONN,
		    "accepting into a link that has a connection", NULL);
	send_u64(c, recv_u64(c) + 1);
	pin = pinned_kib() - pin0;
	if (pin <= 0 || pin > OPEN_CTRL_KIB) {
		bad("a control connection without a channel: %ld KiB pinned, expected at most %d",
		    pin, OPEN_CTRL_KIB);
		exit(1);
	}
	rmig_link_destroy(c);
	ok("a second control connection accepted during the session and served on its own, "
	   "%ld KiB pinned",
	   pin);
}

/* The session's control connection grew when the first channel was
 * adopted, each side at its next op: after one exchange everything the
 * session uses is full. */
static void session_full(struct rmig_link *l)
{
	long pin;

	send_u64(l, recv_u64(l) + 1);
	pin = pinned_kib();
	if (pin != FULL_CTRL_KIB + 2 * FULL_DATA_KIB) {
		bad("session with 2 channels: %ld KiB pinned, expected %d", pin,
		    FULL_CTRL_KIB + 2 * FULL_DATA_KIB);
		exit(1);
	}
	ok("session with 2 channels: %ld KiB pinned, its control connection grown too", pin);
}

static void dest_main(struct pipes *pp)
{
	struct rmig_link *l = dest_start(pp);
	uint8_t *buf = malloc((2u << 20) + 64), *area[3];
	struct rmig_link_mem mem[3];
	int node[2];
	void *blob;
	size_t blen;
	uint64_t v;

	ok("control connection accepted from %s", l->peer);
	{
		long pin = pinned_kib();

		/* Nothing else in this process is registered yet. */
		if (pin <= 0 || pin > OPEN_CTRL_KIB) {
			bad("accepted control connection: %ld KiB pinned, expected at most %d", pin,
			    OPEN_CTRL_KIB);
			exit(1);
		}
		ok("accepted control connection: %ld KiB pinned before it proved anything (%d "
		   "KiB in a session)",
		   pin, FULL_CTRL_KIB);
	}
	/* Control stream, both ways, odd sizes. */
	for (size_t i = 0; i < NSIZES; i++) {
		size_t n = ctrl_sizes[i], got = 0;

		while (got < n) { /* in random pieces */
			size_t piece = 1 + (size_t)(rnd() % (n - got));

			MUST(l->ops->ctrl_recv(l, buf + got, piece, TMO), l);
			got += piece;
		}
		if (check(buf, n, n, 0) >= 0) {
			bad("control message of %zu bytes corrupted at %ld", n,
			    check(buf, n, n, 0));
			exit(1);
		}
	}
	ok("control stream source->destination: %zu messages of odd sizes intact", NSIZES);
	for (size_t i = 0; i < NSIZES; i++) {
		struct iovec iov = { buf, ctrl_sizes[i] };

		fill(buf, ctrl_sizes[i], ctrl_sizes[i] * 3, 0);
		MUST(l->ops->ctrl_send(l, &iov, 1, TMO), l);
	}
	for (int i = 0; i < 2000; i++) /* ping-pong */
		send_u64(l, recv_u64(l) + 1);

	adopt_channels(l, node);
	second_session(l);
	session_full(l);
	if (numa) {
		char line[1024];
		int on[2] = { 0, 0 };
		FILE *f = fopen("/proc/self/numa_maps", "r");

		while (f && fgets(line, sizeof(line), f))
			for (int n = 0; n < 2; n++) {
				char bind[16], pages[16];

				snprintf(bind, sizeof(bind), "bind:%d ", n);
				snprintf(pages, sizeof(pages), " N%d=", n);
				if (strstr(line, bind) && strstr(line, pages) &&
				    !strstr(line, n ? " N0=" : " N1="))
					on[n]++;
			}
		if (f)
			fclose(f);
		/* A node's send and recv pools are adjacent mappings with one
		 * policy: the kernel merges them into one VMA. */
		if (on[0] < 1 || on[1] < 1) {
			bad("staging pools not on their nodes: %d bound to node 0, %d to node 1",
			    on[0], on[1]);
			exit(1);
		}
		ok("staging pools bound to and resident on their nodes (numa_maps: %d on node 0, "
		   "%d on node 1)",
		   on[0], on[1]);
	}
	run_streams(l, 0, STREAM_BYTES, "chan_recv");
	run_streams(l, 1, 1u << 20, "chan_send destination->source");

	/* Placement: three areas, one empty. */
	area[0] = map(AREA_LEN);
	area[1] = map(SMALL_AREA_LEN);
	area[2] = NULL;
	mem[0] = (struct rmig_link_mem){ area[0], AREA_LEN };
	mem[1] = (struct rmig_link_mem){ area[1], SMALL_AREA_LEN };
	mem[2] = (struct rmig_link_mem){ NULL, 0 };
	MUST(l->ops->mem_expose(l, mem, 3, &blob, &blen), l);
	send_u64(l, blen);
	{
		struct iovec iov = { blob, blen };

		MUST(l->ops->ctrl_send(l, &iov, 1, TMO), l);
	}
	free(blob);
	for (int pass = 0; pass < 2; pass++) {
		uint64_t want = recv_u64(l),
			 have = hash(area[0], AREA_LEN) ^ hash(area[1], SMALL_AREA_LEN);

		send_u64(l, want == have);
		if (want != have) {
			bad("placement pass %d: memory checksum differs", pass);
			exit(1);
		}
		ok("placement pass %d: 65 MiB written by RDMA WRITE match the source's checksum",
		   pass);
	}
	recv_u64(l); /* the source measured throughput */
	l->ops->mem_release(l);
	l->ops->mem_release(l); /* idempotent */
	send_u64(l, 1);		/* released: the source's writes must now fail */
	recv_u64(l);

	/* Timeout and interrupt, while the source is alive and silent. */
	{
		int64_t t0 = now_ms();
		int rc = l->ops->ctrl_recv(l, buf, 1, 500);
		int64_t dt = now_ms() - t0;

		if (rc != -ETIMEDOUT || dt < 450 || dt > 1200) {
			bad("ctrl_recv timeout: rc %d after %" PRId64 " ms (%s)", rc, dt, l->err);
			exit(1);
		}
		ok("ctrl_recv gave -ETIMEDOUT after %" PRId64 " ms: %s", dt, l->err);
	}
	{
		struct block_job b = { .l = l, .ctrl = 0 };
		pthread_t t;
		int64_t t_int;

		pthread_create(&t, NULL, blocked_recv, &b);
		usleep(500000);
		t_int = now_ms();
		l->ops->interrupt(l, RMIG_LINK_STOP_DATA);
		pthread_join(t, NULL);
		if (b.rc != -ECANCELED || b.t_end - t_int > 400) {
			bad("interrupted chan_recv: rc %d after %" PRId64 " ms", b.rc,
			    b.t_end - t_int);
			exit(1);
		}
		ok("interrupt(STOP_DATA) ended a blocked chan_recv after %" PRId64 " ms: %s",
		   b.t_end - t_int, l->err);
	}
	{
		struct block_job b = { .l = l, .ctrl = 1 };
		struct itimerval it = { .it_value = { 0, 500000 } };
		pthread_t t;
		int64_t t_int;

		sig_link = l;
		signal(SIGALRM, on_alarm); /* interrupt() from a signal handler */
		pthread_create(&t, NULL, blocked_recv, &b);
		t_int = now_ms() + 500;
		setitimer(ITIMER_REAL, &it, NULL);
		pthread_join(t, NULL);
		if (b.rc != -ECANCELED || b.t_end - t_int > 400) {
			bad("interrupted ctrl_recv: rc %d after %" PRId64 " ms", b.rc,
			    b.t_end - t_int);
			exit(1);
		}
		ok("interrupt(STOP_CTRL_RECV) from a signal handler ended a blocked ctrl_recv "
		   "after %" PRId64 " ms",
		   b.t_end - t_int);
	}
	/* The control stream still sends (an ABORT would); destroy right away:
	 * the message must still arrive (linger). */
	v = 0xb1e;
	{
		struct iovec iov = { &v, sizeof(v) };

		MUST(l->ops->ctrl_send(l, &iov, 1, TMO), l);
	}
	dest_end(l);
	munmap(area[0], AREA_LEN);
	munmap(area[1], SMALL_AREA_LEN);
	free(buf);
	ok("sent BYE after the interrupts and destroyed the link");
}

/* --- main session: source ------------------------------------------------------------ */

struct write_job {
	struct rmig_link *l;
	unsigned chan;
	uint8_t *base;
	uint64_t from, to; /* byte range of area 0 this thread writes */
	int sparse;	   /* only some runs */
	int rc;
	char err[300];
	uint64_t bytes;
};

/* Write [from, to) of area 0 in shuffled runs of 1..64 pages, up to 64 runs
 * per chan_write, then chan_flush. */
static void *write_worker(void *arg)
{
	struct write_job *w = arg;
	uint64_t npages = (w->to - w->from) / PAGE, st = mix(w->chan + 99 + (uint64_t)w->sparse);
	uint64_t *runs = malloc(sizeof(uint64_t) * 2 * npages), nruns = 0;
	struct iovec iov[64];
	uint64_t off[64];
	int n = 0;

	for (uint64_t p = 0; p < npages;) {
		uint64_t len = 1 + (st = mix(st)) % 64;

		if (len > npages - p)
			len = npages - p;
		if (!w->sparse || mix(st ^ 5) % 4 == 0) {
			runs[2 * nruns] = w->from + p * PAGE;
			runs[2 * nruns + 1] = len * PAGE;
			nruns++;
		}
		p += len;
	}
	for (uint64_t i = nruns; i > 1; i--) { /* shuffle */
		uint64_t k = (st = mix(st)) % i, a = runs[2 * (i - 1)], b = runs[2 * (i - 1) + 1];

		runs[2 * (i - 1)] = runs[2 * k];
		runs[2 * (i - 1) + 1] = runs[2 * k + 1];
		runs[2 * k] = a;
		runs[2 * k + 1] = b;
	}
	for (uint64_t i = 0; i < nruns && !w->rc; i++) {
		off[n] = runs[2 * i];
		iov[n] = (struct iovec){ w->base + runs[2 * i], runs[2 * i + 1] };
		w->bytes += runs[2 * i + 1];
		if (++n == 64 || (n > 0 && (st = mix(st)) % 7 == 0) || i + 1 == nruns) {
			w->rc = w->l->ops->chan_write(w->l, w->chan, 0, off, iov, n, TMO);
			n = 0;
		}
	}
	if (!w->rc)
		w->rc = w->l->ops->chan_flush(w->l, w->chan, TMO);
	if (w->rc)
		snprintf(w->err, sizeof(w->err), "%s", w->l->err);
	free(runs);
	return NULL;
}

static double write_area(struct rmig_link *l, uint8_t *base, int nchan, int sparse)
{
	struct write_job w[2];
	pthread_t t[2];
	double t0 = now_s();
	uint64_t bytes = 0;

	for (int i = 0; i < nchan; i++) {
		w[i] = (struct write_job){ .l = l,
					   .chan = (unsigned)i,
					   .base = base,
					   .from = (uint64_t)AREA_LEN / nchan * i,
					   .to = (uint64_t)AREA_LEN / nchan * (i + 1),
					   .sparse = sparse };
		pthread_create(&t[i], NULL, write_worker, &w[i]);
	}
	for (int i = 0; i < nchan; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < nchan; i++) {
		if (w[i].rc) {
			bad("chan_write on channel %d: %s", i, w[i].err);
			exit(1);
		}
		bytes += w[i].bytes;
	}
	return bytes / 1e6 / (now_s() - t0);
}

static void expect_fail(struct rmig_link *l, int rc, int want, const char *what, const char *needle)
{
	if (rc == 0 || (want && rc != want) || (needle && !strstr(l->err, needle))) {
		bad("%s: rc %d (%s), err '%s'", what, rc, strerror(-rc), l->err);
		exit(1);
	}
	ok("%s rejected: %s", what, l->err);
}

static void source_main(struct pipes *pp)
{
	struct rmig_link *l = source_start(pp);
	uint8_t *buf = malloc((2u << 20) + 64), *area[2], *blob;
	struct rmig_link_mem mem[3];
	uint64_t blen, lat0;
	unsigned chan;
	double mbps1, mbps2, mbps_sparse;
	int rc;

	ok("connected to %s from %s (GID index %d)", l->peer, a_dev, a_gid);
	for (size_t i = 0; i < NSIZES; i++) {
		size_t n = ctrl_sizes[i], cut = n / 3;
		struct iovec iov[4] = { { buf, cut },
					{ buf, 0 },
					{ buf + cut, n - cut - n / 5 },
					{ buf + n - n / 5, n / 5 } };

		fill(buf, n, n, 0);
		MUST(l->ops->ctrl_send(l, iov, 4, TMO), l);
	}
	for (size_t i = 0; i < NSIZES; i++) {
		MUST(l->ops->ctrl_recv(l, buf, ctrl_sizes[i], TMO), l);
		if (check(buf, ctrl_sizes[i], ctrl_sizes[i] * 3, 0) >= 0) {
			bad("reply of %zu bytes corrupted", ctrl_sizes[i]);
			exit(1);
		}
	}
	ok("control stream destination->source: %zu messages of odd sizes intact", NSIZES);
	lat0 = (uint64_t)now_ms();
	for (uint64_t i = 0; i < 2000; i++) {
		send_u64(l, i);
		if (recv_u64(l) != i + 1) {
			bad("ping-pong out of step");
			exit(1);
		}
	}
	ok("control ping-pong: %.1f us per round trip",
	   ((uint64_t)now_ms() - lat0) * 1000.0 / 2000);

	for (int i = 0; i < 2; i++) {
		chan = open_channel(l, numa ? i : -1, 100003);
		if (chan != (unsigned)i) {
			bad("channel %d got index %u", i, chan);
			exit(1);
		}
	}
	{ /* Another migration's control connection, meanwhile. */
		struct rmig_link *l2 = new_link(a_dev, a_gid);

		MUST(l2->ops->connect_ctrl(l2, b_ip, dest_port, TMO), l2);
		send_u64(l2, 7);
		if (recv_u64(l2) != 8) {
			bad("no answer on the second control connection");
			exit(1);
		}
		rmig_link_destroy(l2);
	}
	send_u64(l, 5); /* the destination counts what it pinned */
	if (recv_u64(l) != 6) {
		bad("control stream out of step after the channels");
		exit(1);
	}
	run_streams(l, 1, STREAM_BYTES, "chan_send");
	run_streams(l, 0, 1u << 20, "chan_recv destination->source");

	/* Placement. */
	blen = recv_u64(l);
	blob = malloc(blen + 16);
	MUST(l->ops->ctrl_recv(l, blob, blen, TMO), l);
	area[0] = map(AREA_LEN);
	area[1] = map(SMALL_AREA_LEN);
	fill(area[0], AREA_LEN, 1234, 0);
	fill(area[1], SMALL_AREA_LEN, 4321, 0);
	mem[0] = (struct rmig_link_mem){ area[0], AREA_LEN };
	mem[1] = (struct rmig_link_mem){ area[1], SMALL_AREA_LEN };
	mem[2] = (struct rmig_link_mem){ NULL, 0 };
	/* A description that lies is refused, whatever the lie. */
	expect_fail(l, l->ops->mem_import(l, mem, 3, blob, blen - 1), 0, "truncated blob", NULL);
	expect_fail(l, l->ops->mem_import(l, mem, 3, blob, 5), 0, "5-byte blob", NULL);
	expect_fail(l, l->ops->mem_import(l, mem, 3, NULL, 0), 0, "empty blob", NULL);
	blob[0] ^= 1;
	expect_fail(l, l->ops->mem_import(l, mem, 3, blob, blen), 0, "blob with a bad magic", NULL);
	blob[0] ^= 1;
	expect_fail(l, l->ops->mem_import(l, mem, 2, blob, blen), 0, "blob for 3 areas, 2 local",
		    NULL);
	mem[1].len -= PAGE;
	expect_fail(l, l->ops->mem_import(l, mem, 3, blob, blen), 0, "blob with a length mismatch",
		    "area 1");
	mem[1].len += PAGE;
	{ /* area 1 claims to end past 2^64 */
		uint8_t *evil = malloc(blen);

		memcpy(evil, blob, blen);
		memset(evil + 36 + 20, 0xff, 8); /* rdma_reg.h: header, area 0 */
		expect_fail(l, l->ops->mem_import(l, mem, 3, evil, blen), 0,
			    "blob with an overflowing address", "overflow");
		free(evil);
	}
	MUST(l->ops->mem_import(l, mem, 3, blob, blen), l);
	ok("valid memory description imported");
	{
		uint64_t off = AREA_LEN - PAGE;
		struct iovec v = { area[0], 2 * PAGE };
		uint8_t stackbuf[64];

		expect_fail(l, l->ops->chan_write(l, 0, 0, &off, &v, 1, TMO), -ERANGE,
			    "write past the area's end", NULL);
		off = UINT64_MAX - 10;
		expect_fail(l, l->ops->chan_write(l, 0, 0, &off, &v, 1, TMO), -ERANGE,
			    "write at an overflowing offset", NULL);
		off = 0;
		v = (struct iovec){ stackbuf, sizeof(stackbuf) };
		expect_fail(l, l->ops->chan_write(l, 0, 0, &off, &v, 1, TMO), -EFAULT,
			    "write from unregistered memory", NULL);
		v = (struct iovec){ area[0] + AREA_LEN - PAGE, 2 * PAGE };
		expect_fail(l, l->ops->chan_write(l, 0, 0, &off, &v, 1, TMO), -EFAULT,
			    "write from past a registered area", NULL);
		expect_fail(l, l->ops->chan_write(l, 0, 3, &off, &v, 1, TMO), -EINVAL,
			    "write to area 3 of 3", NULL);
	}
	/* Pass 0: everything (area 1 in one write from channel 1), two channels. */
	mbps2 = write_area(l, area[0], 2, 0);
	{
		uint64_t off = 0;
		struct iovec v = { area[1], SMALL_AREA_LEN };

		MUST(l->ops->chan_write(l, 1, 1, &off, &v, 1, TMO), l);
		MUST(l->ops->chan_flush(l, 1, TMO), l);
	}
	send_u64(l, hash(area[0], AREA_LEN) ^ hash(area[1], SMALL_AREA_LEN));
	if (recv_u64(l) != 1)
		exit(1);
	/* Pass 1: change and rewrite a quarter of the runs. */
	fill(area[0], AREA_LEN, 999, 0);
	mbps_sparse = write_area(l, area[0], 2, 1);
	/* The unwritten runs still hold pass 0's bytes on the destination:
	 * recompute what it must hold. */
	{
		uint8_t *expect = map(AREA_LEN);

		fill(expect, AREA_LEN, 1234, 0);
		/* Replay the same run selection to know which runs went over. */
		for (int i = 0; i < 2; i++) {
			uint64_t from = (uint64_t)AREA_LEN / 2 * i,
				 to = (uint64_t)AREA_LEN / 2 * (i + 1);
			uint64_t npages = (to - from) / PAGE, st = mix((uint64_t)i + 99 + 1);

			for (uint64_t p = 0; p < npages;) {
				uint64_t len = 1 + (st = mix(st)) % 64;

				if (len > npages - p)
					len = npages - p;
				if (mix(st ^ 5) % 4 == 0)
					memcpy(expect + from + p * PAGE, area[0] + from + p * PAGE,
					       len * PAGE);
				p += len;
			}
		}
		send_u64(l, hash(expect, AREA_LEN) ^ hash(area[1], SMALL_AREA_LEN));
		munmap(expect, AREA_LEN);
	}
	if (recv_u64(l) != 1)
		exit(1);
	/* Throughput, for the log only (make bench measures): the whole area
	 * once on one channel, then once on two. */
	mbps1 = write_area(l, area[0], 1, 0);
	mbps2 = write_area(l, area[0], 2, 0);
	say("chan_write_MBps_1chan=%.1f chan_write_MBps_2chan=%.1f (sparse pass %.1f)", mbps1,
	    mbps2, mbps_sparse);
	ok("chan_write throughput: 1 channel %.1f MB/s, 2 channels %.1f MB/s", mbps1, mbps2);
	send_u64(l, 1);
	/* After the destination's mem_release, a write must fail: with the
	 * completion's status and the peer in the message. */
	recv_u64(l);
	{
		uint64_t off = 0;
		struct iovec v = { area[0], PAGE };

		rc = l->ops->chan_write(l, 1, 0, &off, &v, 1, TMO);
		if (!rc)
			rc = l->ops->chan_flush(l, 1, TMO);
		expect_fail(l, rc, 0, "write after the destination released its memory",
			    "lost peer");
		rc = l->ops->chan_flush(l, 1, TMO);
		expect_fail(l, rc, 0, "flush of a failed channel", NULL);
	}
	send_u64(l, 1);
	l->ops->mem_release(l);
	/* The destination now tests timeouts and interrupts, then says BYE
	 * and destroys its link at once: BYE must still arrive. */
	if (recv_u64(l) != 0xb1e) {
		bad("no BYE");
		exit(1);
	}
	ok("BYE arrived although the destination destroyed its link right after sending it");
	{
		int64_t t0 = now_ms();

		rc = l->ops->ctrl_recv(l, buf, 1, 30000);
		if (rc == 0 || now_ms() - t0 > 5000 || !strstr(l->err, "lost peer")) {
			bad("after the peer left: rc %d after %" PRId64 " ms: %s", rc,
			    now_ms() - t0, l->err);
			exit(1);
		}
		ok("peer's disconnect noticed by a blocked ctrl_recv after %" PRId64 " ms: %s",
		   now_ms() - t0, l->err);
	}
	rmig_link_destroy(l);
	munmap(area[0], AREA_LEN);
	munmap(area[1], SMALL_AREA_LEN);
	free(blob);
	free(buf);
}

/* --- kill scenarios ------------------------------------------------------------------ */

/* The source streams on a channel until killed; the destination must fail. */
static void kill_src_dest(struct pipes *pp)
{
	struct rmig_link *l = dest_start(pp);
	uint8_t *buf = malloc(256 << 10);
	unsigned chan;
	int node, rc;
	size_t total = 0;
	int64_t t;

	chan = take_channel(l, &node);
	for (;;) {
		struct iovec iov = { buf, 256 << 10 };

		rc = l->ops->chan_recv(l, chan, &iov, 1, 30000);
		if (rc)
			break;
		total += 256 << 10;
		if (total == 4u << 20)
			write_all(pp->ready[1], "r", 1);
	}
	t = now_ms();
	write_all(pp->when[1], &t, sizeof(t));
	say("chan_recv failed (%s) after %.1f MiB: %s", strerror(-rc), total / 1048576.0, l->err);
	dest_end(l);
	free(buf);
	exit(rc != -ETIMEDOUT ? 0 : 1);
}

static void kill_src_source(struct pipes *pp)
{
	struct rmig_link *l = source_start(pp);
	uint8_t *buf = calloc(1, 256 << 10);
	unsigned chan = open_channel(l, -1, 0);

	for (;;) {
		struct iovec iov = { buf, 256 << 10 };

		MUST(l->ops->chan_send(l, chan, &iov, 1, TMO), l);
	}
}

/* The source writes into the destination's memory until the destination
 * is killed; the source must fail. */
static void kill_dst_dest(struct pipes *pp)
{
	struct rmig_link *l = dest_start(pp);
	struct rmig_link_mem mem = { map(AREA_LEN), AREA_LEN };
	void *blob;
	size_t blen;
	int node;

	if (take_channel(l, &node) != 0)
		bad("the only channel is not channel 0");
	MUST(l->ops->mem_expose(l, &mem, 1, &blob, &blen), l);
	send_u64(l, blen);
	{
		struct iovec iov = { blob, blen };

		MUST(l->ops->ctrl_send(l, &iov, 1, TMO), l);
	}
	for (;;)
		pause();
}

static void kill_dst_source(struct pipes *pp)
{
	struct rmig_link *l = source_start(pp);
	struct rmig_link_mem mem = { map(AREA_LEN), AREA_LEN };
	unsigned chan;
	uint64_t blen, rounds = 0;
	uint8_t blob[256];
	int rc;
	int64_t t;

	chan = open_channel(l, -1, 0);
	blen = recv_u64(l);
	MUST(l->ops->ctrl_recv(l, blob, blen, TMO), l);
	MUST(l->ops->mem_import(l, &mem, 1, blob, blen), l);
	for (;;) {
		struct iovec iov[16];
		uint64_t off[16];

		for (int i = 0; i < 16; i++) {
			off[i] = (rounds * 16 + (uint64_t)i) * (256 << 10) % AREA_LEN;
			iov[i] = (struct iovec){ (uint8_t *)mem.addr + off[i], 256 << 10 };
		}
		rc = l->ops->chan_write(l, chan, 0, off, iov, 16, 30000);
		if (!rc)
			rc = l->ops->chan_flush(l, chan, 30000);
		if (rc)
			break;
		if (++rounds == 8)
			write_all(pp->ready[1], "r", 1);
	}
	t = now_ms();
	write_all(pp->when[1], &t, sizeof(t));
	say("chan_write/flush failed (%s) after %" PRIu64 " rounds: %s", strerror(-rc), rounds,
	    l->err);
	rmig_link_destroy(l);
	if (getenv("RMIG_CUT"))
		exit(rc == -ECONNRESET ? 0 : 1);
	exit(rc != -ETIMEDOUT ? 0 : 1);
}

/* A silent network cut (no disconnect, no REJ): the source's writes must
 * fail through the transport's retries, within ~1-2 s (ACK timeout 14). */
static void cut_dest(struct pipes *pp)
{
	struct rmig_link *l = dest_start(pp);
	struct rmig_link_mem mem = { map(AREA_LEN), AREA_LEN };
	void *blob;
	size_t blen;
	int node, rc;
	uint8_t b;

	if (take_channel(l, &node) != 0)
		bad("the only channel is not channel 0");
	MUST(l->ops->mem_expose(l, &mem, 1, &blob, &blen), l);
	send_u64(l, blen);
	{
		struct iovec iov = { blob, blen };

		MUST(l->ops->ctrl_send(l, &iov, 1, TMO), l);
	}
	free(blob);
	/* The peer falls silent: a receive gives up after its timeout. */
	rc = l->ops->ctrl_recv(l, &b, 1, 6000);
	say("ctrl_recv during the cut: %s", rc ? l->err : "data?!");
	dest_end(l);
	exit(rc ? 0 : 1);
}

static void cut_source(struct pipes *pp)
{
	setenv("RMIG_CUT", "1", 1);
	kill_dst_source(pp);
}

/* --- orchestration ------------------------------------------------------------------- */

static pid_t spawn(const char *name, void (*fn)(struct pipes *), struct pipes *pp)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		role = name;
		passed = failed = 0;
		rnd_state ^= (uint64_t)getpid() << 20;
		fn(pp);
		exit(failed ? 1 : 0);
	}
	return pid;
}

static int reap(pid_t pid, const char *what)
{
	int st;

	if (waitpid(pid, &st, 0) < 0)
		return -1;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	bad("%s exited %s %d", what, WIFEXITED(st) ? "with" : "by signal",
	    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	return 1;
}

static void new_pipes(struct pipes *pp)
{
	if (pipe(pp->port) || pipe(pp->ready) || pipe(pp->when)) {
		perror("pipe");
		exit(1);
	}
}

static void close_pipes(struct pipes *pp)
{
	for (int i = 0; i < 2; i++) {
		close(pp->port[i]);
		close(pp->ready[i]);
		close(pp->when[i]);
	}
}

static void scenario_main(void)
{
	struct pipes pp;
	pid_t d, s;

	scenario = "main session";
	say("--- main session: streams, channels, placement, interrupts");
	new_pipes(&pp);
	d = spawn("D", dest_main, &pp);
	s = spawn("S", source_main, &pp);
	if (reap(s, "source") == 0 && reap(d, "destination") == 0)
		ok("main session: both sides passed");
	close_pipes(&pp);
}

static void scenario_kill(const char *what, void (*victim)(struct pipes *),
			  void (*survivor)(struct pipes *), int victim_is_source, int cut)
{
	struct pipes pp;
	pid_t v, sv;
	char c;
	int64_t t_kill, t_fail;

	scenario = what;
	say("--- %s", what);
	new_pipes(&pp);
	if (victim_is_source) {
		sv = spawn("D", survivor, &pp);
		v = spawn("S", victim, &pp);
	} else {
		v = spawn("D", victim, &pp);
		sv = spawn("S", survivor, &pp);
	}
	if (read_all(pp.ready[0], &c, 1)) {
		bad("%s: never got going", what);
		kill(v, SIGKILL);
		kill(sv, SIGKILL);
		waitpid(v, NULL, 0);
		waitpid(sv, NULL, 0);
		close_pipes(&pp);
		return;
	}
	usleep(300000);
	t_kill = now_ms();
	if (cut) {
		if (system("tc qdisc add dev veth_a root netem loss 100%") != 0)
			bad("tc netem failed");
	} else {
		kill(v, SIGKILL);
		waitpid(v, NULL, 0);
	}
	if (read_all(pp.when[0], &t_fail, sizeof(t_fail)))
		t_fail = -1;
	/* A cut: 7 tries of the link's 537 ms ACK timeout (~3.8 s), and slack
	 * for the emulated machine. */
	if (!reap(sv, "survivor") && t_fail >= 0 && t_fail - t_kill < 6500)
		ok("%s: the survivor failed %" PRId64 " ms after it", what, t_fail - t_kill);
	else
		bad("%s: survivor did not fail in time (%" PRId64 " ms)", what,
		    t_fail < 0 ? -1 : t_fail - t_kill);
	if (cut) {
		reap(v, "destination during the cut");
		if (system("tc qdisc del dev veth_a root") != 0)
			bad("tc qdisc del failed");
	}
	close_pipes(&pp);
}

/* Failures that must be quick and say why: the engine's "auto" falls back
 * to TCP on them. Runs in a child so its RDMA state dies with it. */
static void fast_failures(struct pipes *pp)
{
	struct rmig_link *l;
	int64_t t0;
	int rc;

	(void)pp;
	l = new_link(a_dev, a_gid);
	t0 = now_ms();
	rc = l->ops->connect_ctrl(l, b_ip, 1, 3000); /* nothing listens there */
	if (rc != -ECONNREFUSED || now_ms() - t0 > 2500)
		bad("connect to a port without listener: rc %d after %" PRId64 " ms: %s", rc,
		    now_ms() - t0, l->err);
	else
		ok("connect to a port without listener: -ECONNREFUSED after %" PRId64 " ms: %s",
		   now_ms() - t0, l->err);
	rmig_link_destroy(l);

	/* Device only: the source address must be picked from its GIDs, or the
	 * route would land on rxe_b (both addresses are local here). */
	l = new_link(a_dev, -1);
	t0 = now_ms();
	rc = l->ops->connect_ctrl(l, b_ip, 1, 3000);
	if (rc != -ECONNREFUSED)
		bad("device %s without GID index: rc %d: %s", a_dev, rc, l->err);
	else
		ok("device %s without GID index: source picked from its GIDs, -ECONNREFUSED after "
		   "%" PRId64 " ms",
		   a_dev, now_ms() - t0);
	rmig_link_destroy(l);

	/* GID index only: the device comes from a first resolution. */
	l = new_link(NULL, a_gid);
	rc = l->ops->connect_ctrl(l, b_ip, 1, 3000);
	if (rc != -ECONNREFUSED)
		bad("GID index without device: rc %d: %s", rc, l->err);
	else
		ok("GID index %d without device: %s", a_gid, l->err);
	rmig_link_destroy(l);

	l = new_link(NULL, -1);
	t0 = now_ms();
	rc = l->ops->connect_ctrl(l, "192.0.2.1", 4444, 3000); /* TEST-NET-1: no route */
	if (rc == 0 || now_ms() - t0 > 2500 ||
	    (rc != -ENETUNREACH && rc != -EHOSTUNREACH && rc != -ENODEV))
		bad("connect to an unroutable address: rc %d after %" PRId64 " ms: %s", rc,
		    now_ms() - t0, l->err);
	else
		ok("connect to an unroutable address: %s after %" PRId64 " ms: %s", strerror(-rc),
		   now_ms() - t0, l->err);
	rmig_link_destroy(l);

	/* Routed through a netdev without an RDMA device (set up by main). */
	if (!access("/sys/class/net/rmigdummy", F_OK)) {
		l = new_link(NULL, -1);
		t0 = now_ms();
		rc = l->ops->connect_ctrl(l, "10.88.0.2", 4444, 3000);
		if (rc == 0 || now_ms() - t0 > 2500 ||
		    (rc != -ENETUNREACH && rc != -EHOSTUNREACH && rc != -ENODEV))
			bad("connect via a netdev without RDMA: rc %d after %" PRId64 " ms: %s", rc,
			    now_ms() - t0, l->err);
		else
			ok("connect via a netdev without RDMA: %s after %" PRId64 " ms: %s",
			   strerror(-rc), now_ms() - t0, l->err);
		rmig_link_destroy(l);
	}

	l = new_link("mlx5_99", -1);
	rc = l->ops->connect_ctrl(l, b_ip, 4444, 3000);
	if (rc != -ENODEV)
		bad("unknown device: rc %d: %s", rc, l->err);
	else
		ok("unknown device: %s", l->err);
	rmig_link_destroy(l);

	/* A device that does not route to the peer. */
	l = new_link(b_dev, -1);
	{
		uint16_t port = 0;

		rc = l->ops->listen(l, a_ip, &port);
		if (rc != -ENODEV)
			bad("listen on %s's address with device %s: rc %d: %s", a_dev, b_dev, rc,
			    l->err);
		else
			ok("listen on another device's address refused: %s", l->err);
	}
	rmig_link_destroy(l);
	exit(failed ? 1 : 0);
}

/* Pinning more than RLIMIT_MEMLOCK allows, without CAP_IPC_LOCK: refused
 * up front with a message that says what to do. */
static void drop_memlock(size_t limit)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct cap[_LINUX_CAPABILITY_U32S_3];
	struct rlimit rl = { limit, limit };

	syscall(SYS_capget, &hdr, cap);
	cap[0].effective &= ~(1u << CAP_IPC_LOCK);
	if (syscall(SYS_capset, &hdr, cap) || setrlimit(RLIMIT_MEMLOCK, &rl)) {
		bad("cannot drop CAP_IPC_LOCK / lower RLIMIT_MEMLOCK: %s", strerror(errno));
		exit(1);
	}
}

static void memlock_limit(struct pipes *pp)
{
	struct rmig_link *l;
	int rc;

	(void)pp;
	drop_memlock(64u << 10);
	l = new_link(a_dev, a_gid);
	rc = l->ops->connect_ctrl(l, b_ip, 1, 3000);
	if (rc != -ENOMEM || !strstr(l->err, "RLIMIT_MEMLOCK"))
		bad("memlock: rc %d: %s", rc, l->err);
	else
		ok("RLIMIT_MEMLOCK 64 KiB: %s", l->err);
	rmig_link_destroy(l);
	exit(failed ? 1 : 0);
}

/* Destination limited to 1 MiB pinned: a channel's connection is accepted
 * (its opening needs 64 KiB), its full pools (2 MiB) are refused when it is
 * adopted, with a message that says what to do; the session's link, on the
 * listener's budget, cannot expose 4 MiB either. */
static void memlock_dest(struct pipes *pp)
{
	struct rmig_link *l, *c;
	struct rmig_link_mem mem;
	void *blob;
	size_t blen;
	int rc, node;

	drop_memlock(1u << 20);
	l = dest_start(pp);
	c = accept_conn(5000);
	/* The connection is answered before the source has it: refusing it
	 * before the source says it is up would race its connect (seen under
	 * load: "RDMA connection ... failed"). */
	recv_u64(l);
	rc = l->ops->adopt_channel(l, c, 0, &node);
	if (rc != -ENOMEM || !strstr(l->err, "staging pools need"))
		bad("adopting a data channel over the limit: rc %d: %s", rc, l->err);
	else if (pinned_kib() > OPEN_CTRL_KIB + OPEN_DATA_KIB)
		bad("adopting a data channel over the limit: %ld KiB pinned after the refusal",
		    pinned_kib());
	else
		ok("data channel accepted under the limit, adopting it over the limit: %s", l->err);
	rmig_link_destroy(c);
	mem = (struct rmig_link_mem){ map(4u << 20), 4u << 20 };
	rc = l->ops->mem_expose(l, &mem, 1, &blob, &blen);
	if (rc != -ENOMEM || !strstr(l->err, "guest memory needs"))
		bad("mem_expose over the limit: rc %d: %s", rc, l->err);
	else
		ok("mem_expose over the limit: %s", l->err);
	recv_u64(l);
	dest_end(l);
	exit(failed ? 1 : 0);
}

/* Source limited to 3 MiB: enough for its own pools (0.25 + 2 MiB), not
 * for 4 MiB of guest memory. (Limits are set before any verbs call: new
 * credentials make the kernel refuse the verbs write() interface.) */
static void memlock_source(struct pipes *pp)
{
	struct rmig_link *l;
	struct rmig_link_mem mem = { map(4u << 20), 4u << 20 };
	uint8_t blob[56] = { 0 };
	unsigned chan;
	int rc;

	drop_memlock(3u << 20);
	l = source_start(pp);
	/* The destination's limit shows only when it adopts the channel: that
	 * is the engine's error, which its ABORT relays. */
	MUST(l->ops->connect_channel(l, TMO, -1, &chan), l);
	send_u64(l, 1); /* connected: the destination may refuse it now */
	/* A well-formed description of one 4 MiB area. */
	blob[0] = 'R', blob[1] = 'M', blob[2] = 'M', blob[3] = 'K', blob[4] = 2, blob[6] = 20;
	blob[8] = 1;
	blob[24] = 23;		 /* chunks of 8 MiB */
	blob[28] = 1;		 /* one of them */
	blob[36 + 8 + 2] = 0x40; /* len 4 MiB */
	rc = l->ops->mem_import(l, &mem, 1, blob, sizeof(blob));
	if (rc != -ENOMEM || !strstr(l->err, "guest memory needs"))
		bad("mem_import over the limit: rc %d: %s", rc, l->err);
	else
		ok("mem_import over the limit: %s", l->err);
	send_u64(l, 1);
	rmig_link_destroy(l);
	exit(failed ? 1 : 0);
}

/* Three migrations, one after the other, on one listener; the last
 * session's link outlives the listener (it holds the PDs it uses). */
static void reaccept_dest(struct pipes *pp)
{
	struct rmig_link *l = dest_start(pp);
	uint8_t *buf = malloc(1u << 20);

	for (int i = 0; i < 3; i++) {
		struct iovec iov = { buf, 1u << 20 };
		unsigned chan;
		int node;

		if (i)
			l = accept_conn(30000);
		chan = take_channel(l, &node);
		if (i == 2) {
			rmig_link_destroy(listener);
			listener = NULL;
		}
		if (chan != 0 || recv_u64(l) != (uint64_t)i) {
			bad("session %d: channel %u", i, chan);
			exit(1);
		}
		MUST(l->ops->chan_recv(l, chan, &iov, 1, TMO), l);
		if (check(buf, 1u << 20, (uint64_t)i, 0) >= 0) {
			bad("session %d: data corrupted", i);
			exit(1);
		}
		send_u64(l, (uint64_t)i + 100);
		rmig_link_destroy(l);
	}
	ok("3 sessions accepted one after the other on one listener, the last one served after "
	   "the listener was destroyed");
	free(buf);
	exit(failed ? 1 : 0);
}

static void reaccept_source(struct pipes *pp)
{
	uint8_t *buf = malloc(1u << 20);
	uint16_t port;

	if (read_all(pp->port[0], &port, sizeof(port)))
		exit(1);
	for (int i = 0; i < 3; i++) {
		struct rmig_link *l = new_link(a_dev, a_gid);
		struct iovec iov = { buf, 1u << 20 };
		unsigned chan;

		MUST(l->ops->connect_ctrl(l, b_ip, port, TMO), l);
		chan = open_channel(l, 0, 0);
		send_u64(l, (uint64_t)i);
		fill(buf, 1u << 20, (uint64_t)i, 0);
		MUST(l->ops->chan_send(l, chan, &iov, 1, TMO), l);
		if (recv_u64(l) != (uint64_t)i + 100) {
			bad("session %d: no ack", i);
			exit(1);
		}
		rmig_link_destroy(l);
	}
	free(buf);
	exit(failed ? 1 : 0);
}

/* A plain rdma_cm client with private data pdata: the answer's event
 * (and a rejection's reason in why[]); it leaves at once. One that is no
 * rmig must be refused with a reason, and the destination must keep
 * waiting for a real source. */
static int stray_connect(uint16_t port, const void *pdata, uint8_t plen, char *why, size_t len)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
	struct ibv_qp_init_attr qa = { .cap = { 4, 4, 1, 1, 0 }, .qp_type = IBV_QPT_RC };
	struct rdma_conn_param cp = { .private_data = pdata, .private_data_len = plen };
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	int got = -1;

	inet_pton(AF_INET, a_ip, &src.sin_addr);
	inet_pton(AF_INET, b_ip, &dst.sin_addr);
	dst.sin_port = htons(port);
	if (!ch || rdma_create_id(ch, &id, NULL, RDMA_PS_TCP))
		return -1;
	if (!rdma_resolve_addr(id, (struct sockaddr *)&src, (struct sockaddr *)&dst, 2000) &&
	    !rdma_get_cm_event(ch, &ev)) {
		rdma_ack_cm_event(ev);
		if (!rdma_resolve_route(id, 2000) && !rdma_get_cm_event(ch, &ev)) {
			rdma_ack_cm_event(ev);
			if (!rdma_create_qp(id, NULL, &qa) && !rdma_connect(id, &cp) &&
			    !rdma_get_cm_event(ch, &ev)) {
				got = ev->event;
				if (got == RDMA_CM_EVENT_REJECTED &&
				    ev->param.conn.private_data_len > 4)
					snprintf(why, len, "%.*s",
						 (int)ev->param.conn.private_data_len - 4,
						 (const char *)ev->param.conn.private_data + 4);
				rdma_ack_cm_event(ev);
			}
		}
	}
	if (id->qp)
		rdma_destroy_qp(id);
	rdma_destroy_id(id);
	rdma_destroy_event_channel(ch);
	return got;
}

static void stray_dest(struct pipes *pp)
{
	struct rmig_link *l, *c = NULL;
	uint16_t port = 0;
	char byte;
	int rc;

	listener = new_link(b_dev, -1);
	MUST(listener->ops->listen(listener, b_ip, &port), listener);
	write_all(pp->port[1], &port, sizeof(port));
	rc = rmig_link_accept(listener, 3000, &c);
	if (rc != -ETIMEDOUT || !strstr(listener->err, "last attempt: refused"))
		bad("accept with only a stray peer: rc %d: %s", rc, listener->err);
	else
		ok("accept with only a stray peer: %s", listener->err);
	/* One that speaks the link's handshake is taken, whatever it says it
	 * is (here a data channel with no session: the engine's to refuse).
	 * It leaves before sending anything, and its link notices. */
	c = accept_conn(30000);
	rc = c->ops->ctrl_recv(c, &byte, 1, TMO);
	if (rc == 0 || !strstr(c->err, "lost peer"))
		bad("first receive from a departed stray: rc %d: %s", rc, c->err);
	else
		ok("a data channel without a session accepted, its peer's departure noticed: %s",
		   c->err);
	rmig_link_destroy(c);
	l = accept_conn(30000);
	send_u64(l, recv_u64(l) + 1);
	dest_end(l);
	exit(failed ? 1 : 0);
}

static void stray_source(struct pipes *pp)
{
	/* An rmig data channel's private data (see pdata_encode): magic,
	 * version 1, kind 2, node -1, 16 slots of 64 KiB. */
	static const uint8_t data_pdata[20] = { 'R',  'M',  'I', 'G', 1, 2, 0,	0, 0xff, 0xff,
						0xff, 0xff, 0,	 0,   1, 0, 16, 0, 0,	 0 };
	struct rmig_link *l;
	char why[160] = "";
	uint16_t port;
	int ev;

	if (read_all(pp->port[0], &port, sizeof(port)))
		exit(1);
	ev = stray_connect(port, "hello", 6, why, sizeof(why));
	if (ev != RDMA_CM_EVENT_REJECTED || !strstr(why, "not an rmig"))
		bad("stray connect: event %d, reason '%s'", ev, why);
	else
		ok("stray rdma_cm client rejected with reason: %s", why);
	usleep(3500000); /* past the destination's first accept */
	ev = stray_connect(port, data_pdata, sizeof(data_pdata), why, sizeof(why));
	if (ev != RDMA_CM_EVENT_ESTABLISHED)
		bad("stray data channel: event %d, reason '%s'", ev, why);
	else
		ok("stray data channel without a session: connected, left at once");
	l = new_link(a_dev, a_gid);
	MUST(l->ops->connect_ctrl(l, b_ip, port, TMO), l);
	send_u64(l, 41);
	if (recv_u64(l) != 42)
		bad("no answer after the stray");
	rmig_link_destroy(l);
	exit(failed ? 1 : 0);
}

static void scenario_pair(const char *what, void (*dest)(struct pipes *),
			  void (*source)(struct pipes *))
{
	struct pipes pp;
	pid_t d, s;

	scenario = what;
	say("--- %s", what);
	new_pipes(&pp);
	d = spawn("D", dest, &pp);
	s = spawn("S", source, &pp);
	if (reap(s, "source") == 0 && reap(d, "destination") == 0)
		ok("%s: both sides passed", what);
	close_pipes(&pp);
}

static void run_child(const char *what, void (*fn)(struct pipes *))
{
	struct pipes pp;
	pid_t p;

	scenario = what;
	say("--- %s", what);
	new_pipes(&pp);
	p = spawn("X", fn, &pp);
	if (reap(p, what) == 0)
		ok("%s: passed", what);
	close_pipes(&pp);
}

static int nodev(void)
{
	struct rmig_link *l = new_link(NULL, -1);
	char info[4096];
	uint16_t port = 0;
	int64_t t0 = now_ms();
	int rc = l->ops->connect_ctrl(l, "10.0.0.2", 4444, 3000);

	if (rc != -ENODEV || now_ms() - t0 > 1000)
		bad("connect without RDMA: rc %d after %" PRId64 " ms: %s", rc, now_ms() - t0,
		    l->err);
	else
		ok("connect without RDMA: -ENODEV after %" PRId64 " ms: %s", now_ms() - t0, l->err);
	rc = l->ops->listen(l, NULL, &port);
	if (rc != -ENODEV)
		bad("listen without RDMA: rc %d: %s", rc, l->err);
	else
		ok("listen without RDMA: %s", l->err);
	l->ops->describe(info, sizeof(info));
	if (!strstr(info, "no RDMA devices"))
		bad("describe: %s", info);
	else
		ok("describe: %s", info);
	rmig_link_destroy(l);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : "all";
	char info[16384];

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(only, "nodev") == 0)
		return nodev();
	a_dev = getenv("RXE_A_DEV");
	b_dev = getenv("RXE_B_DEV");
	a_ip = getenv("RXE_A_IP");
	b_ip = getenv("RXE_B_IP");
	a_gid = getenv("RXE_A_GID_INDEX") ? atoi(getenv("RXE_A_GID_INDEX")) : -1;
	numa = getenv("RXE_NUMA") && atoi(getenv("RXE_NUMA"));
	if (!a_dev || !b_dev || !a_ip || !b_ip) {
		fprintf(stderr, "run inside tests/rxe/vm.sh (needs $RXE_A_DEV etc.)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(only, "all") || !strcmp(only, "describe")) {
		rmig_rdma_link_ops.describe(info, sizeof(info));
		say("rmig info (rdma):\n%s", info);
		if (strstr(info, a_dev) && strstr(info, "RoCE v2"))
			ok("describe lists %s with its RoCE v2 GIDs", a_dev);
		else
			bad("describe output");
	}
	if (!strcmp(only, "all") || !strcmp(only, "fast")) {
		int dummy = system("ip link add rmigdummy type dummy 2>/dev/null && "
				   "ip addr add 10.88.0.1/24 dev rmigdummy && "
				   "ip link set rmigdummy up") == 0;

		run_child("fast failures", fast_failures);
		if (dummy && system("ip link del rmigdummy") != 0)
			say("could not remove rmigdummy");
	}
	if (!strcmp(only, "all") || !strcmp(only, "memlock"))
		run_child("RLIMIT_MEMLOCK", memlock_limit);
	if (!strcmp(only, "all") || !strcmp(only, "memlock"))
		scenario_pair("RLIMIT_MEMLOCK on both sides of a session", memlock_dest,
			      memlock_source);
	if (!strcmp(only, "all") || !strcmp(only, "main"))
		scenario_main();
	if (!strcmp(only, "all") || !strcmp(only, "stray"))
		scenario_pair("a stray rdma_cm client before the real source", stray_dest,
			      stray_source);
	if (!strcmp(only, "all") || !strcmp(only, "reaccept"))
		scenario_pair("sessions one after the other", reaccept_dest, reaccept_source);
	if (!strcmp(only, "all") || !strcmp(only, "kill"))
		scenario_kill("source killed while streaming on a channel", kill_src_source,
			      kill_src_dest, 1, 0);
	if (!strcmp(only, "all") || !strcmp(only, "kill"))
		scenario_kill("destination killed during RDMA WRITEs", kill_dst_dest,
			      kill_dst_source, 0, 0);
	if ((!strcmp(only, "all") || !strcmp(only, "cut")) &&
	    system("command -v tc >/dev/null") == 0)
		scenario_kill("network cut (netem loss 100%) during RDMA WRITEs", cut_dest,
			      cut_source, 0, 1);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
