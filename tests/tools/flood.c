/* flood - an attacker without the key, for the hostile-network tests
 * (tests/e2e/t_hostile_*.sh): it connects to a receiver's port and misbehaves
 * before any authentication, then prints what the receiver did about it.
 *
 *   flood [--bind ADDR] [--reopen] [--ready-file FILE] HOST PORT MODE ARGS...
 *
 * Modes:
 *   idle N SECONDS          open N connections, send nothing, hold them
 *                           SECONDS, then close them
 *   trickle SECONDS PERIOD_MS
 *                           one connection sending a valid HELLO frame (the
 *                           library's own encoder) one byte every PERIOD_MS
 *   spray SECONDS PERIOD_MS every PERIOD_MS: connect, send 24 zero bytes
 *                           (a frame header's worth), close
 *   big MIB                 one frame header claiming a MIB-MiB payload
 *                           (a STATE frame: the largest a type may carry is
 *                           64 MiB), then that payload, as fast as the
 *                           receiver takes it (at most 30 s)
 *   storm N SECONDS         open connections as fast as possible, up to N held
 *                           at once, for SECONDS (each one the receiver closes
 *                           is replaced at once, a failed connect is tried
 *                           again 10 ms later)
 * HOST "unix" with PORT a path: a unix socket instead (rmig's --control).
 * Options:
 *   --bind ADDR        connect from this local address (127.0.0.2, ...)
 *   --cycle MS         idle: close and reopen each connection once it is MS
 *                      old (and at once when the receiver closes it), ages
 *                      spread over the cycle: connections that are never old
 *                      enough to be taken for idle ones (a lockout attempt)
 *   --reopen           idle, trickle: a connection the receiver closed is
 *                      opened again 200 ms later, so the pressure lasts
 *   --ready-file FILE  written (atomically) once the flood is in place: each
 *                      of the first N connections made or given up (idle,
 *                      storm: a receiver whose backlog is full may never
 *                      take them all), the first byte sent (trickle), the
 *                      header sent (big), the first connection made (spray)
 *
 * Prints one line of figures on stdout, e.g.
 *   flood: idle: 10 opened, 10 closed by the receiver (after 5003..5011 ms),
 *   longest held 5011 ms, 0 open at the end, 0 failed to connect, 0 reopened,
 *   10 refusals read ("handshake timeout"); 12000 ms
 * where "closed by the receiver (after A..B ms)" gives the shortest and
 * longest life of the connections it closed, "longest held" the longest life
 * of any (those still open at the end included) and "refusals read" the
 * ABORT frames it sent before closing (the first one's reason quoted).
 * SIGTERM or SIGINT end the flood early, with the same line.
 *
 * Every loop is bounded in count and in time: SECONDS at most 3600, N at
 * most 4096, a connect attempt at most 3 s. Exit 0 when the flood ran
 * (whatever the receiver did), 2 on a usage error or when the local side
 * cannot work at all (HOST unknown, cannot bind ADDR).
 */
#include <errno.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define MAX_CONNS 4096
#define MAX_SECONDS 3600
#define CONNECT_TIMEOUT_MS 3000
#define REOPEN_DELAY_MS 200
#define STORM_RETRY_MS 10 /* storm: a connect that failed is tried again after this */
#define BIG_DEADLINE_MS 30000
#define BIG_LINGER_MS 10000 /* after the payload: how long to wait for an answer */
#define INBUF 2048	    /* what a connection keeps of the receiver's bytes */
#define HELLO_FRAME (RMIG_FRAME_HDR_LEN + RMIG_HELLO_LEN)

static volatile sig_atomic_t stop;
static struct addrinfo *target;
static struct sockaddr_storage bind_ss;
static socklen_t bind_len;
static const char *ready_file;
static int reopen;
static int64_t cycle_ms; /* --cycle: close and reopen each connection at this age */

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* HOST "unix": the socket at path, as an addrinfo of one (freed with free). */
static struct addrinfo *unix_target(const char *path)
{
	struct {
		struct addrinfo ai;
		struct sockaddr_un sa;
	} *t = calloc(1, sizeof(*t));

	if (!t || strlen(path) >= sizeof(t->sa.sun_path)) {
		fprintf(stderr, "flood: unix socket path '%s' too long\n", path);
		exit(2);
	}
	t->sa.sun_family = AF_UNIX;
	memcpy(t->sa.sun_path, path, strlen(path));
	t->ai.ai_family = AF_UNIX;
	t->ai.ai_addr = (struct sockaddr *)&t->sa;
	t->ai.ai_addrlen = sizeof(t->sa);
	return &t->ai;
}

static void usage(void)
{
	fprintf(stderr, "usage: flood [--bind ADDR] [--reopen] [--cycle MS] [--ready-file FILE] "
			"HOST PORT MODE ARGS...\n"
			"  idle N SECONDS | trickle SECONDS PERIOD_MS | spray SECONDS PERIOD_MS |\n"
			"  big MIB | storm N SECONDS\n");
	exit(2);
}

static long num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "flood: %s must be %ld..%ld, not '%s'\n", what, min, max, s);
		exit(2);
	}
	return v;
}

static void ready(void)
{
	char tmp[4096];
	FILE *f;

	if (!ready_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", ready_file);
	f = fopen(tmp, "w");
	if (!f || fputs("ready\n", f) < 0 || fclose(f) || rename(tmp, ready_file))
		fprintf(stderr, "flood: --ready-file %s: %s\n", ready_file, strerror(errno));
	ready_file = NULL; /* once */
}

/* A non-blocking socket with a connect to the target under way (or done);
 * -1 when even that fails (errno set). */
static int start_connect(void)
{
	int fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	if (target->ai_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind_len && bind(fd, (struct sockaddr *)&bind_ss, bind_len)) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	if (connect(fd, target->ai_addr, target->ai_addrlen) && errno != EINPROGRESS) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Wait up to CONNECT_TIMEOUT_MS for a connect started by start_connect. */
static int finish_connect(int fd)
{
	struct pollfd p = { fd, POLLOUT, 0 };
	int err = 0;
	socklen_t el = sizeof(err);

	if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
		errno = err ? err : errno;
		return -1;
	}
	return 0;
}

/* The first ABORT frame in what a receiver sent, as its reason; else "". */
static void abort_reason(const uint8_t *in, size_t len, char *out, size_t cap)
{
	static struct rmig_msg m;
	size_t off = 0;

	*out = 0;
	while (len - off >= RMIG_FRAME_HDR_LEN) {
		struct rmig_frame_hdr fh;
		char err[256];

		if (rmig_frame_hdr_decode(in + off, &fh, err, sizeof(err)) ||
		    fh.len > len - off - RMIG_FRAME_HDR_LEN)
			return;
		if (fh.type == RMIG_MSG_ABORT &&
		    !rmig_msg_decode(fh.type, in + off + RMIG_FRAME_HDR_LEN, fh.len, &m, err,
				     sizeof(err))) {
			snprintf(out, cap, "%s", m.u.abort.reason);
			return;
		}
		off += RMIG_FRAME_HDR_LEN + fh.len;
	}
}

/* ---- idle, trickle, storm: connections held open ---- */

enum slot_state { S_EMPTY, S_CONNECTING, S_OPEN, S_WAIT_REOPEN };

struct slot {
	enum slot_state st;
	int fd;
	int64_t t0;   /* connect started (S_CONNECTING), completed (S_OPEN) */
	int64_t next; /* trickle: next byte due; S_WAIT_REOPEN: reopen due */
	size_t sent;
	size_t inlen;
	uint8_t in[INBUF];
};

struct hold_stats {
	unsigned long opened, failed, closed, reopened, refusals, reset, max_open, open_now;
	unsigned long long bytes;
	int64_t first_close, last_close, longest;
	char reason[RMIG_MAX_REASON + 1];
};

static struct slot *slots;
/* How soon a slot opens again after a failed connect, after the receiver
 * closed it (--reopen: REOPEN_DELAY_MS both; storm: STORM_RETRY_MS, 0). */
static int64_t fail_delay_ms = REOPEN_DELAY_MS, closed_delay_ms = REOPEN_DELAY_MS;
static uint8_t *first_done; /* the slot's first connect attempt has ended */
static unsigned n_first_done;

static uint8_t *first_opened; /* --cycle: the slot's first connection opened */

static int first_done_open(unsigned i)
{
	int was = first_opened[i];

	first_opened[i] = 1;
	return was;
}

static void first_attempt_done(unsigned i)
{
	if (!first_done[i]) {
		first_done[i] = 1;
		n_first_done++;
	}
}
static uint8_t hello[HELLO_FRAME];

static void build_hello(void)
{
	struct rmig_msg m = { .type = RMIG_MSG_HELLO };

	m.u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					      .ver_max = RMIG_WIRE_VERSION_MAX,
					      .channels = 2,
					      .flags = RMIG_HELLO_PSK };
	if (getrandom(m.u.hello.nonce, RMIG_NONCE_LEN, 0) != RMIG_NONCE_LEN)
		memset(m.u.hello.nonce, 0x5a, RMIG_NONCE_LEN);
	if (rmig_msg_encode(&m, hello + RMIG_FRAME_HDR_LEN, RMIG_HELLO_LEN) != RMIG_HELLO_LEN) {
		fprintf(stderr, "flood: cannot encode HELLO\n");
		exit(2);
	}
	rmig_frame_hdr_encode(hello, RMIG_MSG_HELLO, 0, RMIG_HELLO_LEN, 0);
}

static void slot_open(struct slot *s, struct hold_stats *h, int is_reopen, int again)
{
	int fd = start_connect();

	memset(s, 0, sizeof(*s));
	if (fd < 0) {
		h->failed++;
		s->st = again ? S_WAIT_REOPEN : S_EMPTY;
		s->next = now_ms() + fail_delay_ms;
		return;
	}
	s->st = S_CONNECTING;
	s->fd = fd;
	s->t0 = now_ms();
	if (is_reopen)
		h->reopened++;
}

/* The connection ended: by the receiver (by_peer) or by us. */
static void slot_end(struct slot *s, struct hold_stats *h, int by_peer, int was_reset,
		     int keep_going)
{
	int64_t life = now_ms() - s->t0;

	if (life > h->longest)
		h->longest = life;
	if (by_peer) {
		char why[RMIG_MAX_REASON + 1];

		h->closed++;
		h->reset += was_reset != 0;
		if (h->closed == 1 || life < h->first_close)
			h->first_close = life;
		if (life > h->last_close)
			h->last_close = life;
		abort_reason(s->in, s->inlen, why, sizeof(why));
		if (*why) {
			h->refusals++;
			if (!*h->reason)
				snprintf(h->reason, sizeof(h->reason), "%s", why);
		}
	}
	close(s->fd);
	h->open_now--;
	s->fd = -1;
	s->st = keep_going ? S_WAIT_REOPEN : S_EMPTY;
	s->next = now_ms() + closed_delay_ms;
}

/* Hold n connections for ms; storm: replace each closed one at once;
 * period_ms > 0 (trickle): each sends the HELLO one byte per period. */
static void hold(const char *mode, unsigned n, int64_t ms, int period_ms, int storm)
{
	struct hold_stats h = { 0 };
	struct pollfd *pf = calloc(n, sizeof(*pf));
	int64_t start = now_ms(), end = start + ms;
	int again = reopen || storm;
	unsigned long max_opens = storm ? 1000000ul : (unsigned long)n * 100000ul;

	if (storm || cycle_ms) {
		fail_delay_ms = STORM_RETRY_MS;
		closed_delay_ms = 0;
	}
	if (cycle_ms)
		again = 1;
	slots = calloc(n, sizeof(*slots));
	first_done = calloc(n, 1);
	first_opened = calloc(n, 1);
	if (!pf || !slots || !first_done || !first_opened) {
		fprintf(stderr, "flood: out of memory\n");
		exit(2);
	}
	for (unsigned i = 0; i < n; i++) {
		slot_open(&slots[i], &h, 0, again);
		if (slots[i].st != S_CONNECTING)
			first_attempt_done(i);
	}
	while (!stop) {
		int64_t t = now_ms(), wait = end - t;

		if (wait <= 0)
			break;
		for (unsigned i = 0; i < n; i++) {
			struct slot *s = &slots[i];

			pf[i] = (struct pollfd){ -1, 0, 0 };
			if (s->st == S_WAIT_REOPEN && again && h.opened + h.failed < max_opens) {
				if (t >= s->next)
					slot_open(s, &h, 1, again);
				else if (s->next - t < wait)
					wait = s->next - t;
			}
			if (s->st == S_CONNECTING) {
				if (t - s->t0 >= CONNECT_TIMEOUT_MS) {
					first_attempt_done(i);
					close(s->fd);
					h.failed++;
					s->st = again ? S_WAIT_REOPEN : S_EMPTY;
					s->next = t + fail_delay_ms;
					continue;
				}
				pf[i] = (struct pollfd){ s->fd, POLLOUT, 0 };
			} else if (s->st == S_OPEN && cycle_ms && t - s->t0 >= cycle_ms) {
				slot_end(s, &h, 0, 0, 1); /* too old to push anyone out: anew */
				continue;
			} else if (s->st == S_OPEN) {
				pf[i] = (struct pollfd){ s->fd, POLLIN | POLLRDHUP, 0 };
				if (cycle_ms && s->t0 + cycle_ms - t < wait)
					wait = s->t0 + cycle_ms - t;
				if (period_ms && s->sent < sizeof(hello)) {
					if (t >= s->next) {
						ssize_t w = send(s->fd, hello + s->sent, 1,
								 MSG_NOSIGNAL | MSG_DONTWAIT);

						if (w == 1) {
							s->sent++;
							h.bytes++;
							ready();
						}
						s->next = t + period_ms;
					}
					if (s->next - t < wait)
						wait = s->next - t;
				}
			}
		}
		/* Ready: every first attempt connected or gave up (a receiver
		 * with a full backlog may never take them all). */
		if (n_first_done == n && !period_ms)
			ready();
		if (wait > 100)
			wait = 100; /* a signal or the deadline are noticed soon */
		if (poll(pf, n, (int)wait) < 0 && errno != EINTR)
			break;
		t = now_ms();
		for (unsigned i = 0; i < n; i++) {
			struct slot *s = &slots[i];
			short ev = pf[i].revents;

			if (pf[i].fd < 0 || !ev)
				continue;
			if (s->st == S_CONNECTING) {
				int err = 0;
				socklen_t el = sizeof(err);

				first_attempt_done(i);
				if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
					close(s->fd);
					h.failed++;
					s->st = again ? S_WAIT_REOPEN : S_EMPTY;
					s->next = t + fail_delay_ms;
					continue;
				}
				s->st = S_OPEN;
				s->t0 = t;
				/* --cycle: ages spread over the cycle, as a patient attacker
				 * keeps them, so that some are always young. */
				if (cycle_ms && !first_done_open(i))
					s->t0 = t - (int64_t)i * cycle_ms / n;
				s->next = t; /* trickle: the first byte at once */
				h.opened++;
				if (++h.open_now > h.max_open)
					h.max_open = h.open_now;
				continue;
			}
			/* S_OPEN: the receiver sent something, or closed. Bounded:
			 * at most 8 reads per wakeup. */
			for (int k = 0; k < 8; k++) {
				uint8_t junk[4096];
				ssize_t r = recv(s->fd, junk, sizeof(junk), MSG_DONTWAIT);

				if (r > 0) {
					size_t take = (size_t)r;

					if (take > INBUF - s->inlen)
						take = INBUF - s->inlen;
					memcpy(s->in + s->inlen, junk, take);
					s->inlen += take;
					continue;
				}
				if (r == 0 || (errno != EAGAIN && errno != EINTR))
					slot_end(s, &h, 1, r < 0, again);
				break;
			}
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (slots[i].st == S_OPEN)
			slot_end(&slots[i], &h, 0, 0, 0);
		else if (slots[i].st == S_CONNECTING)
			close(slots[i].fd);
	}
	printf("flood: %s: %lu opened, %lu closed by the receiver", mode, h.opened, h.closed);
	if (h.closed)
		printf(" (after %lld..%lld ms%s)", (long long)h.first_close,
		       (long long)h.last_close, h.reset ? ", some reset" : "");
	printf(", longest held %lld ms, %lu open at the end, %lu failed to connect, %lu reopened",
	       (long long)h.longest, h.opened - h.closed, h.failed, h.reopened);
	if (period_ms)
		printf(", %llu bytes of HELLO trickled", h.bytes);
	if (storm)
		printf(", %lu held at most at once", h.max_open);
	printf(", %lu refusals read", h.refusals);
	if (*h.reason)
		printf(" (\"%s\")", h.reason);
	printf("; %lld ms\n", (long long)(now_ms() - start));
	free(pf);
	free(slots);
	free(first_done);
	free(first_opened);
	slots = NULL;
	first_done = first_opened = NULL;
}

/* ---- spray: short-lived junk connections ---- */

static void spray(int64_t ms, int period_ms)
{
	static const uint8_t zeros[RMIG_FRAME_HDR_LEN];
	unsigned long made = 0, failed = 0, short_writes = 0;
	int64_t start = now_ms(), end = start + ms, next = start;
	unsigned long max = (unsigned long)(ms / period_ms) + 1;

	while (!stop && made + failed < max) {
		int64_t t = now_ms();
		int fd;

		if (t >= end)
			break;
		if (t < next) {
			struct timespec ts = { 0, (long)(next - t) * 1000000 };

			nanosleep(&ts, NULL);
			continue;
		}
		/* On schedule; when late, the next one is due a period from now
		 * (no burst to catch up). */
		next = next + period_ms > t ? next + period_ms : t + period_ms;
		fd = start_connect();
		if (fd < 0 || finish_connect(fd)) {
			failed++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (send(fd, zeros, sizeof(zeros), MSG_NOSIGNAL) != (ssize_t)sizeof(zeros))
			short_writes++;
		close(fd);
		made++;
		ready();
	}
	printf("flood: spray: %lu connections made (%zu zero bytes each, every %d ms), %lu failed "
	       "to connect, %lu short writes; %lld ms\n",
	       made, sizeof(zeros), period_ms, failed, short_writes, (long long)(now_ms() - start));
}

/* ---- big: one oversized frame before any authentication ---- */

static void big(long mib)
{
	uint64_t claim = (uint64_t)mib << 20, sent = 0, acked = 0;
	static uint8_t chunk[64 << 10];
	uint8_t hdr[RMIG_FRAME_HDR_LEN], in[INBUF];
	size_t inlen = 0, hdr_sent = 0;
	int64_t start = now_ms(), end = start + BIG_DEADLINE_MS, done_at = -1, closed_at = -1;
	int fd, sndbuf = 64 << 10, reset = 0;
	char why[RMIG_MAX_REASON + 1];

	rmig_frame_hdr_encode(hdr, RMIG_MSG_STATE, 0, (uint32_t)claim, 0);
	fd = start_connect();
	if (fd < 0 || finish_connect(fd)) {
		printf("flood: big: cannot connect: %s\n", strerror(errno));
		return;
	}
	/* A small send buffer: what we count as sent is close to what the
	 * receiver's side took. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	while (!stop) {
		int64_t t = now_ms();
		struct pollfd p = { fd, POLLIN | POLLRDHUP, 0 };
		int outq = 0;

		if (done_at < 0 && sent == claim && hdr_sent == sizeof(hdr)) {
			done_at = t; /* all of it is in our kernel: wait for the answer */
			end = t + BIG_LINGER_MS;
		}
		if (t >= end)
			break;
		if (done_at < 0)
			p.events |= POLLOUT;
		if (poll(&p, 1, (int)(end - t > 100 ? 100 : end - t)) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) {
			uint8_t junk[4096];
			ssize_t r = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);

			if (r > 0) {
				size_t take =
				    (size_t)r < sizeof(in) - inlen ? (size_t)r : sizeof(in) - inlen;

				memcpy(in + inlen, junk, take);
				inlen += take;
				continue;
			}
			if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				reset = r < 0;
				closed_at = now_ms();
				break;
			}
		}
		if (p.revents & POLLOUT) {
			ssize_t w;

			if (hdr_sent < sizeof(hdr))
				w = send(fd, hdr + hdr_sent, sizeof(hdr) - hdr_sent,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			else
				w = send(fd, chunk,
					 claim - sent < sizeof(chunk) ? (size_t)(claim - sent)
								      : sizeof(chunk),
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				reset = 1;
				closed_at = now_ms();
				break;
			}
			if (w > 0 && hdr_sent < sizeof(hdr)) {
				hdr_sent += (size_t)w;
				if (hdr_sent == sizeof(hdr))
					ready();
			} else if (w > 0) {
				sent += (uint64_t)w;
			}
		}
		/* What left our send queue reached the receiver's kernel. */
		if (!ioctl(fd, SIOCOUTQ, &outq) && outq >= 0) {
			uint64_t total = hdr_sent + sent;
			uint64_t a = total > (uint64_t)outq ? total - (uint64_t)outq : 0;

			a = a > hdr_sent ? a - hdr_sent : 0;
			if (a > acked)
				acked = a;
		}
	}
	abort_reason(in, inlen, why, sizeof(why));
	printf("flood: big: a STATE frame header claiming %llu bytes (%ld MiB), then %llu payload "
	       "bytes sent, %llu of them acknowledged by the receiver; ",
	       (unsigned long long)claim, mib, (unsigned long long)sent, (unsigned long long)acked);
	if (closed_at >= 0)
		printf("the receiver closed the connection after %lld ms%s",
		       (long long)(closed_at - start), reset ? " (reset)" : "");
	else
		printf("still open after %lld ms", (long long)(now_ms() - start));
	if (*why)
		printf(", refusal read (\"%s\")", why);
	printf("\n");
	close(fd);
}

int main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	struct sigaction sa = { .sa_handler = on_signal };
	const char *bind_addr = NULL, *pos[8];
	int npos = 0, rc;
	struct rlimit rl;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--bind") && i + 1 < argc)
			bind_addr = argv[++i];
		else if (!strcmp(argv[i], "--ready-file") && i + 1 < argc)
			ready_file = argv[++i];
		else if (!strcmp(argv[i], "--reopen"))
			reopen = 1;
		else if (!strcmp(argv[i], "--cycle") && i + 1 < argc)
			cycle_ms = atoll(argv[++i]);
		else if (argv[i][0] == '-' && argv[i][1] == '-')
			usage();
		else if (npos < 8)
			pos[npos++] = argv[i];
		else
			usage();
	}
	if (npos < 4)
		usage();
	if (!strcmp(pos[0], "unix")) {
		target = unix_target(pos[1]);
	} else if ((rc = getaddrinfo(pos[0], pos[1], &hints, &target))) {
		fprintf(stderr, "flood: %s:%s: %s\n", pos[0], pos[1], gai_strerror(rc));
		return 2;
	}
	if (bind_addr) {
		hints.ai_family = target->ai_family;
		if ((rc = getaddrinfo(bind_addr, "0", &hints, &ai))) {
			fprintf(stderr, "flood: --bind %s: %s\n", bind_addr, gai_strerror(rc));
			return 2;
		}
		memcpy(&bind_ss, ai->ai_addr, ai->ai_addrlen);
		bind_len = ai->ai_addrlen;
		freeaddrinfo(ai);
		/* Fail at once, with the reason, if the address cannot be used. */
		{
			int fd = socket(target->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

			if (fd < 0 || bind(fd, (struct sockaddr *)&bind_ss, bind_len)) {
				fprintf(stderr, "flood: --bind %s: %s\n", bind_addr,
					strerror(errno));
				return 2;
			}
			close(fd);
		}
	}
	/* As many descriptors as we may hold. */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	build_hello();

	if (!strcmp(pos[2], "idle") && npos == 5)
		hold("idle", (unsigned)num(pos[3], 1, MAX_CONNS, "N"),
		     num(pos[4], 0, MAX_SECONDS, "SECONDS") * 1000, 0, 0);
	else if (!strcmp(pos[2], "storm") && npos == 5)
		hold("storm", (unsigned)num(pos[3], 1, MAX_CONNS, "N"),
		     num(pos[4], 0, MAX_SECONDS, "SECONDS") * 1000, 0, 1);
	else if (!strcmp(pos[2], "trickle") && npos == 5)
		hold("trickle", 1, num(pos[3], 0, MAX_SECONDS, "SECONDS") * 1000,
		     (int)num(pos[4], 1, 3600000, "PERIOD_MS"), 0);
	else if (!strcmp(pos[2], "spray") && npos == 5)
		spray(num(pos[3], 0, MAX_SECONDS, "SECONDS") * 1000,
		      (int)num(pos[4], 1, 3600000, "PERIOD_MS"));
	else if (!strcmp(pos[2], "big") && npos == 4)
		big(num(pos[3], 1, 4095, "MIB"));
	else
		usage();
	if (target->ai_family == AF_UNIX)
		free(target);
	else
		freeaddrinfo(target);
	return 0;
}
