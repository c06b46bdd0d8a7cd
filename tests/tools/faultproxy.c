/* faultproxy - a TCP forwarder that corrupts rmig frames on demand, for the
 * fault-matrix test (tests/e2e/t_fault_matrix.sh), and counts what it
 * forwards (tests/e2e/t_summary_bytes.sh).
 *
 *   faultproxy LISTEN_PORT TARGET_HOST:TARGET_PORT [--bind ADDR]
 *              [--ready-file FILE] [--data-frames N] [--cut-after BYTES]
 *
 * Every connection accepted on LISTEN_PORT (0: any free port) is forwarded to
 * TARGET, in accept order: rmig's control stream and its data streams all
 * connect to the same port, and the receiver tells them apart by that order.
 * Once listening, the port number is written to FILE (atomically: written to
 * FILE.tmp, then renamed), so that nobody has to probe the port - a probe
 * would be forwarded to the receiver as a bogus connection.
 *
 * The proxy follows rmig's framing (24-byte header, `len` payload bytes) in
 * the client->target direction of every connection; a connection whose first
 * frame is HELLO is a control stream, one opening with CHANNEL a data stream.
 * Faults, by signal:
 *   SIGUSR1  flip the magic of the next frame header the client sends on a
 *            control stream (whatever frame comes next, heartbeats included):
 *            the receiver must reject it as a bad frame;
 *   SIGUSR2  flip the last byte (page data) of each of the next N PAGES
 *            frames on the data streams (--data-frames, default 8): only the
 *            memory digest can catch that; with --corrupt-blocks, of the next
 *            BLOCKS frames (a disk's data) instead;
 *   SIGHUP   toggle a blackhole: nothing is read, forwarded or accepted
 *            until the next SIGHUP (connections stay open, like a cut link);
 *   SIGTERM, SIGINT  exit.
 * --cut-after BYTES: once BYTES have been forwarded client->target on the
 * data streams (their CHANNEL frames included), forward no more and reset
 * every connection, once ("faultproxy: cut after N data bytes").
 * --cut-on TYPE[:N] (repeatable, up to 8, taken in order): when the client
 * sends the Nth (default 1st) control frame of TYPE (a name, e.g. STATE or
 * PAGE_DATA, or a number) since the last cut, that frame and whatever was
 * read with it are dropped and every connection is reset ("faultproxy: cut
 * on FRAME #N"); new connections are accepted as before, so a sender can
 * reconnect through the proxy. A link that breaks at a known point of the
 * protocol, as often as the test asks. The log line ends with the time
 * (wall clock, ms since the epoch).
 * --cut-whole: a --cut-on frame is first read whole from the client (and
 * dropped) before the cut, so that its sender has handed all of it to
 * the network: what it counts as sent the destination never got.
 * --cut-silent: a cut leaves the connections open and never serves them
 * again (a path that died without a reset: only the peers' timeouts see
 * it); new connections are served as before.
 * Counts: each connection's close and the exit log the bytes forwarded
 * client->target, by kind ("faultproxy: forwarded N bytes on data streams,
 * M on control streams"): the data streams' bytes are the CHANNEL frames
 * (48 bytes each) plus what the receiver's bytes_sent counts.
 * Each control stream's opening HELLO logs its nonce ("faultproxy:
 * connection N HELLO nonce HEX"): the first one names the migration.
 * Every fault applied is logged on stderr ("faultproxy: corrupted ...");
 * FAULTPROXY_TRACE=1 in the environment also logs every control frame.
 *
 * --clear-caps MASK: clear these capability bits in the HELLO that opens
 * every control stream (client->target), as an attacker on the path could:
 * "faultproxy: cleared caps ...".
 * --clear-caps-back MASK: the same in the HELLO the target sends back on
 * every control stream: "faultproxy: cleared caps ... in the HELLO back".
 * --impostor CODE: while the SIGHUP blackhole is on, new connections are
 * not forwarded but answered by the proxy itself with an ABORT of CODE in
 * place of the destination's HELLO (someone else at its address, without
 * the key): "faultproxy: connection N answered by the impostor".
 * --impostor-hb: the same, but the impostor echoes the client's HELLO (an
 * opening without the key), then drops what the client sends and sends
 * only heartbeats, about every 250 ms, until it closes (at most 15 s):
 * "faultproxy: connection N held by the impostor for M ms".
 * --impostor-trickle MS: the same, but the client's HELLO goes back one
 * byte every MS ms (a frame trickled just inside each link timeout), and
 * nothing after it. With --raw, the client's first TLS record (its
 * ClientHello) goes back so: a handshake trickled by someone without the
 * key or a certificate.
 * --raw: the streams are not rmig's frames (TLS): nothing is parsed; the
 * first connection counts as the control stream, later ones as data
 * streams, and SIGUSR2 flips one byte in the middle of the next chunk read
 * from a data stream's client once it has forwarded 64 KiB (past any
 * handshake): "faultproxy: corrupted a byte of data stream N".
 * --record FILE: append every byte forwarded, both directions, to FILE
 * (what an eavesdropper on the wire would have).
 *
 * Single-threaded, poll()-based; signals are only delivered inside ppoll().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "proto.h"

#define MAX_CONNS 64
#define BUF_LEN (256 * 1024)
#define HDR_LEN 24
#define TLS_HDR_LEN 5 /* a TLS record's header: type, version, length */
#define MAGIC 0x47494d52u
#define T_HELLO 1
#define T_CHANNEL 4
#define T_PAGES 5
#define T_BLOCKS 29

/* rmig's frame types, by number (proto/proto.h). */
static const char *const type_names[] = {
	"?",	       "HELLO",	       "REGIONS",    "REGIONS_ACK", "CHANNEL",	    "PAGES",
	"ZERO",	       "ROUND_END",    "ROUND_ACK",  "STATE",	    "COMPLETE",	    "READY",
	"GO",	       "STARTED",      "ABORT",	     "HEARTBEAT",   "DONE",	    "MEM_KEYS",
	"AUTH",	       "CHECK",	       "STREAM",     "DISCARD",	    "PAGE_REQUEST", "PAGE_DATA",
	"MISSING",     "RECOVER",      "STREAM_ACK", "DISKS",	    "DISKS_ACK",    "BLOCKS",
	"BLOCKS_ZERO", "DISK_DIGESTS",
};

static const char *type_name(unsigned t)
{
	return t < sizeof(type_names) / sizeof(type_names[0]) ? type_names[t] : "?";
}

enum kind { K_UNKNOWN, K_CTRL, K_DATA, K_OTHER };

/* One direction of a connection: bytes read from `from`, not yet written. */
struct pipe_dir {
	char *buf;
	size_t len, off;
	int eof;  /* `from` said EOF */
	int shut; /* `to` was shut down for writing */
};

struct conn {
	int used;
	int frozen; /* --cut-silent: cut, but left open and never served again */
	unsigned id;
	int cfd, tfd; /* client, target */
	struct pipe_dir c2t, t2c;
	enum kind kind;
	/* framing of the client->target stream */
	uint8_t hdr[HDR_LEN];
	unsigned hdr_have;
	uint64_t payload_left;
	unsigned cur_type;
	uint64_t frames;
	uint64_t forwarded;	       /* client->target bytes written to the target */
	int swallowing;		       /* --cut-whole: dropping the cut frame's payload */
	uint64_t t2c_at;	       /* target->client bytes read (--clear-caps-back) */
	uint8_t t2c_type;	       /* the type of the target's first frame */
	uint8_t nonce[RMIG_NONCE_LEN]; /* the opening HELLO's nonce, as it goes by */
};

static volatile sig_atomic_t want_ctrl, want_data, want_hole, want_quit;
static struct conn conns[MAX_CONNS];
static unsigned next_id, data_frames_per_signal = 8;
static unsigned arm_ctrl, arm_data;  /* pending faults */
static unsigned data_type = T_PAGES; /* --corrupt-blocks: T_BLOCKS */
static int blackhole, trace;
static uint64_t forwarded[K_OTHER + 1]; /* client->target bytes, by kind */
static uint64_t cut_after;		/* --cut-after: 0, none (left) */
static int cut_silent;			/* --cut-silent */
static int cut_whole;			/* --cut-whole */
static int cut_now; /* 1: --cut-after reached; 2: --cut-on; 3: --cut-on, once cut_conn flushed */
static const struct conn *cut_conn;
#define MAX_CUTS 8
static struct {
	unsigned type, nth;
} cuts[MAX_CUTS]; /* --cut-on, in order */
static unsigned ncuts, next_cut,
    seen_of_type;		 /* frames of the next cut's type since the last cut */
static int raw;			 /* --raw */
static FILE *record_file;	 /* --record */
static uint64_t clear_caps;	 /* --clear-caps */
static uint64_t clear_caps_back; /* --clear-caps-back */
static int impostor;		 /* --impostor (2: --impostor-hb, 3: --impostor-trickle) */
static int trickle_ms;		 /* --impostor-trickle MS */
static int32_t impostor_code;
static unsigned raw_conns;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		want_ctrl++;
	else if (sig == SIGUSR2)
		want_data++;
	else if (sig == SIGHUP)
		want_hole++;
	else
		want_quit = 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: faultproxy LISTEN_PORT TARGET_HOST:TARGET_PORT [--bind ADDR] "
		"[--ready-file FILE] [--data-frames N] [--corrupt-blocks] [--cut-after BYTES] "
		"[--cut-on TYPE[:N]]... [--cut-whole] [--cut-silent] [--clear-caps MASK] "
		"[--clear-caps-back MASK] [--impostor CODE] [--impostor-hb] [--impostor-trickle "
		"MS] [--raw] "
		"[--record FILE]\n");
	exit(2);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* --impostor: while the blackhole is on, a new connection is answered
 * here instead of forwarded: an ABORT of impostor_code in place of the
 * destination's HELLO, as anyone who took its address could send. Then
 * the client's bytes are drained until it closes (at most 2 s), so that
 * closing does not reset the connection before the ABORT is read. */
static void answer_as_impostor(int lfd)
{
	static const char reason[] = "impostor: the guest did not start here";
	uint8_t f[HDR_LEN + RMIG_ABORT_HDR_LEN + sizeof(reason) - 1] = { 0 }, sink[4096];
	int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	struct pollfd pfd = { cfd, POLLIN, 0 };

	if (cfd < 0)
		return;
	put32(f, MAGIC);
	f[4] = RMIG_WIRE_VERSION_MAX;
	f[5] = RMIG_MSG_ABORT;
	put32(f + 8, (uint32_t)(sizeof(f) - HDR_LEN));
	put32(f + HDR_LEN, (uint32_t)impostor_code);
	memcpy(f + HDR_LEN + RMIG_ABORT_HDR_LEN, reason, sizeof(reason) - 1);
	if (write(cfd, f, sizeof(f)) == (ssize_t)sizeof(f))
		fprintf(stderr, "faultproxy: connection %u answered by the impostor: ABORT %d\n",
			next_id, impostor_code);
	next_id++;
	shutdown(cfd, SHUT_WR);
	while (poll(&pfd, 1, 2000) == 1 && read(cfd, sink, sizeof(sink)) > 0)
		;
	close(cfd);
}

static int read_full(int fd, uint8_t *p, size_t n)
{
	struct pollfd pfd = { fd, POLLIN, 0 };

	while (n) {
		ssize_t r;

		if (poll(&pfd, 1, 2000) != 1 || (r = read(fd, p, n)) <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* The client's first TLS record (--raw): its header's length is bytes 3-4. */
static int read_tls_record(int cfd, uint8_t *f, uint32_t *len)
{
	if (read_full(cfd, f, TLS_HDR_LEN) || f[0] != 22)
		return 0;
	*len = (uint32_t)f[3] << 8 | f[4];
	return *len <= 4096 && !read_full(cfd, f + TLS_HDR_LEN, *len);
}

/* --impostor-hb: the client's HELLO back as ours, then heartbeats;
 * --impostor-trickle: only that HELLO (--raw: that TLS record), a byte
 * every trickle_ms. */
static void hold_as_impostor(int lfd)
{
	uint8_t f[HDR_LEN + 4096] = { 0 };
	int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), ms = 0, hello;
	struct pollfd pfd = { cfd, POLLIN, 0 };
	uint32_t len = 0, seq = 0, hdr = raw ? TLS_HDR_LEN : HDR_LEN;

	if (cfd < 0)
		return;
	if (raw)
		hello = impostor == 3 && read_tls_record(cfd, f, &len);
	else
		hello = !read_full(cfd, f, HDR_LEN) && f[5] == T_HELLO &&
			(len = get32(f + 8)) <= 4096 && !read_full(cfd, f + HDR_LEN, len);
	if (hello && impostor == 3) {
		uint8_t sink;

		for (uint32_t i = 0; i < hdr + len && ms < 15000; i++, ms += trickle_ms) {
			if (write(cfd, f + i, 1) != 1 ||
			    (poll(&pfd, 1, trickle_ms) > 0 && read(cfd, &sink, 1) <= 0))
				break; /* written, or the client closed */
		}
	} else if (hello && write(cfd, f, HDR_LEN + len) == HDR_LEN + len)
		for (; ms < 15000; ms += 250) {
			if (poll(&pfd, 1, 250) && read(cfd, f, sizeof(f)) <= 0)
				break; /* what the client sends is dropped, until it closes */
			memset(f, 0, HDR_LEN + 8);
			put32(f, MAGIC);
			f[4] = RMIG_WIRE_VERSION_MAX;
			f[5] = RMIG_MSG_HEARTBEAT;
			put32(f + 8, 8);
			put32(f + 16, ++seq);
			if (write(cfd, f, HDR_LEN + 8) != HDR_LEN + 8)
				break;
		}
	fprintf(stderr, "faultproxy: connection %u held by the impostor for %d ms\n", next_id, ms);
	next_id++;
	close(cfd);
}

static long long wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Close both ends; `reset`: with an RST, so a peer sees what we saw. */
static void conn_close(struct conn *c, int reset)
{
	struct linger lg = { 1, 0 };

	if (reset) {
		setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		setsockopt(c->tfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(c->cfd);
	close(c->tfd);
	free(c->c2t.buf);
	free(c->t2c.buf);
	fprintf(stderr, "faultproxy: connection %u closed%s, %llu bytes forwarded\n", c->id,
		reset ? " (reset)" : "", (unsigned long long)c->forwarded);
	memset(c, 0, sizeof(*c));
}

/* --cut-after reached: reset every connection, as a link that breaks. */
static void cut_all(void)
{
	if (cut_now == 1)
		fprintf(stderr, "faultproxy: cut after %llu data bytes\n",
			(unsigned long long)forwarded[K_DATA]);
	for (int i = 0; i < MAX_CONNS; i++)
		if (conns[i].used && cut_silent)
			conns[i].frozen = 1;
		else if (conns[i].used)
			conn_close(&conns[i], 1);
	if (cut_now == 1)
		cut_after = 0;
	cut_now = 0;
}

/* --cut-on: is this control frame the one to cut on? 1 if so. */
static int check_cut_on(const struct conn *c)
{
	if (next_cut >= ncuts || c->kind != K_CTRL || c->cur_type != cuts[next_cut].type)
		return 0;
	if (++seen_of_type < cuts[next_cut].nth)
		return 0;
	fprintf(stderr, "faultproxy: cut on %s #%u (connection %u) at %lld ms\n",
		type_name(c->cur_type), seen_of_type, c->id, wall_ms());
	next_cut++;
	seen_of_type = 0;
	/* What came before the frame still goes; the frame and what follows
	 * it never arrive. */
	if (cut_whole && c->payload_left)
		return 1; /* the cut comes once the payload is in: swallow_c2t */
	cut_now = 3;
	cut_conn = c;
	return 1;
}

/* --cut-whole: count the cut frame's payload bytes in p[0..n) off as they
 * are read, forwarding none; the cut comes after the last of them. */
static void swallow_c2t(struct conn *c, size_t n)
{
	c->payload_left -= n < c->payload_left ? n : c->payload_left;
	if (c->payload_left)
		return;
	c->swallowing = 0;
	fprintf(stderr, "faultproxy: the cut frame was read whole (connection %u)\n", c->id);
	cut_now = 3;
	cut_conn = c;
}

/* TYPE[:N]: a frame type by name or number, and which of them. */
static void parse_cut_on(const char *arg)
{
	char name[32];
	unsigned t = 0, nth = 1;
	const char *colon = strchr(arg, ':');

	snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - arg) : (int)strlen(arg), arg);
	if (colon)
		nth = (unsigned)strtoul(colon + 1, NULL, 10);
	for (unsigned i = 1; i < sizeof(type_names) / sizeof(type_names[0]); i++)
		if (!strcmp(name, type_names[i]))
			t = i;
	if (!t)
		t = (unsigned)strtoul(name, NULL, 10);
	if (!t || !nth || ncuts == MAX_CUTS) {
		fprintf(stderr, "faultproxy: --cut-on %s: not a frame type[:count] (or too many)\n",
			arg);
		exit(2);
	}
	cuts[ncuts].type = t;
	cuts[ncuts++].nth = nth;
}

/* --clear-caps: the HELLO's capabilities (payload bytes 8..15, little
 * endian) lose the given bits, as an attacker on the path would clear
 * them; p holds the next n payload bytes of the HELLO. */
static void clear_hello_caps(const struct conn *c, uint8_t *p, size_t n)
{
	uint64_t at = get32(c->hdr + 8) - c->payload_left;

	for (size_t k = 0; k < n; k++, at++)
		if (at >= 8 && at < 16)
			p[k] &= (uint8_t) ~(clear_caps >> (8 * (at - 8)));
	if (at >= 16 && at - n < 16)
		fprintf(stderr, "faultproxy: cleared caps 0x%llx in the HELLO of connection %u\n",
			(unsigned long long)clear_caps, c->id);
}

/* The opening HELLO's nonce (payload bytes 16..31) is logged: for a first
 * connection it names the migration (what a resumption's HELLO.session
 * carries), as anyone on the path sees it without TLS. p holds the next n
 * payload bytes of the HELLO. */
static void note_hello_nonce(struct conn *c, const uint8_t *p, size_t n)
{
	uint64_t at = get32(c->hdr + 8) - c->payload_left;

	for (size_t k = 0; k < n; k++, at++)
		if (at >= 16 && at < 16 + RMIG_NONCE_LEN)
			c->nonce[at - 16] = p[k];
	if (at >= 16 + RMIG_NONCE_LEN && at - n < 16 + RMIG_NONCE_LEN) {
		fprintf(stderr, "faultproxy: connection %u HELLO nonce ", c->id);
		for (int k = 0; k < RMIG_NONCE_LEN; k++)
			fprintf(stderr, "%02x", c->nonce[k]);
		fprintf(stderr, "\n");
	}
}

/* --clear-caps-back: p holds the target's next n bytes; if its first frame
 * on a control stream is a HELLO, clear the bits in its capabilities. */
static void clear_hello_caps_back(struct conn *c, uint8_t *p, size_t n)
{
	for (size_t k = 0; k < n && c->t2c_at < HDR_LEN + 16; k++, c->t2c_at++) {
		uint64_t at = c->t2c_at;

		if (at == 5)
			c->t2c_type = p[k];
		if (c->kind != K_CTRL || c->t2c_type != T_HELLO || at < HDR_LEN + 8)
			continue;
		p[k] &= (uint8_t) ~(clear_caps_back >> (8 * (at - HDR_LEN - 8)));
		if (at == HDR_LEN + 15)
			fprintf(
			    stderr,
			    "faultproxy: cleared caps 0x%llx in the HELLO back on connection %u\n",
			    (unsigned long long)clear_caps_back, c->id);
	}
}

/* Walk the client's bytes through rmig's framing, applying armed faults. */
/* Returns how many of the n bytes may go on (fewer once a --cut-on frame
 * begins: the bytes before it). */
static size_t inspect_c2t(struct conn *c, uint8_t *p, size_t n)
{
	size_t i = 0;

	if (c->swallowing) {
		swallow_c2t(c, n);
		return 0;
	}
	while (i < n) {
		if (c->payload_left == 0) { /* in a header */
			size_t take = HDR_LEN - c->hdr_have;

			if (take > n - i)
				take = n - i;
			memcpy(c->hdr + c->hdr_have, p + i, take);
			if (c->hdr_have == 0 && c->kind == K_CTRL && arm_ctrl) {
				p[i] ^= 0xff; /* first byte of the magic */
				arm_ctrl--;
				fprintf(stderr,
					"faultproxy: corrupted control frame #%llu header on "
					"connection %u\n",
					(unsigned long long)c->frames, c->id);
			}
			c->hdr_have += (unsigned)take;
			i += take;
			if (c->hdr_have < HDR_LEN)
				break;
			c->hdr_have = 0;
			c->cur_type = c->hdr[5];
			c->payload_left = get32(c->hdr + 8);
			if (get32(c->hdr) != MAGIC)
				fprintf(stderr,
					"faultproxy: connection %u: frame without rmig magic\n",
					c->id);
			if (c->frames == 0 && c->kind == K_UNKNOWN) {
				c->kind = c->cur_type == T_HELLO     ? K_CTRL
					  : c->cur_type == T_CHANNEL ? K_DATA
								     : K_OTHER;
				fprintf(stderr, "faultproxy: connection %u is a %s stream\n", c->id,
					c->kind == K_CTRL   ? "control"
					: c->kind == K_DATA ? "data"
							    : "non-rmig");
			}
			if (trace && c->kind == K_CTRL)
				fprintf(stderr, "faultproxy: connection %u: %s\n", c->id,
					type_name(c->cur_type));
			if (check_cut_on(c)) {
				size_t keep = i >= HDR_LEN ? i - HDR_LEN : 0;

				if (cut_whole && c->payload_left) {
					c->swallowing = 1;
					swallow_c2t(c, n - i);
				}
				return keep;
			}
			c->frames++;
		} else { /* in a payload */
			size_t take = c->payload_left < n - i ? (size_t)c->payload_left : n - i;

			if (clear_caps && c->kind == K_CTRL && c->frames == 1 &&
			    c->cur_type == T_HELLO)
				clear_hello_caps(c, p + i, take);
			if (c->kind == K_CTRL && c->frames == 1 && c->cur_type == T_HELLO)
				note_hello_nonce(c, p + i, take);

			if (c->kind == K_DATA && c->cur_type == data_type && arm_data &&
			    take == c->payload_left) {
				p[i + take - 1] ^= 0xff; /* the last byte of the last page */
				arm_data--;
				fprintf(stderr,
					"faultproxy: corrupted %s data of %s frame #%llu on "
					"connection %u (%u more to go)\n",
					data_type == T_PAGES ? "page" : "block",
					type_name(data_type), (unsigned long long)c->frames - 1,
					c->id, arm_data);
			}
			c->payload_left -= take;
			i += take;
		}
	}
	return n;
}

/* --raw: no frames to follow; a data stream may get one byte flipped. */
static void inspect_raw(struct conn *c, uint8_t *p, size_t n)
{
	if (c->kind == K_DATA && arm_data && c->forwarded >= 65536 && n > 0) {
		p[n / 2] ^= 0x01;
		arm_data--;
		fprintf(stderr, "faultproxy: corrupted a byte of data stream %u\n", c->id);
	}
}

/* Read what `from` has into d (empty), 0 or -1 on a hard error. */
static int pump_read(struct conn *c, int from, struct pipe_dir *d, int c2t)
{
	ssize_t r = read(from, d->buf, BUF_LEN);

	if (r > 0) {
		d->len = (size_t)r;
		d->off = 0;
		if (c2t && raw)
			inspect_raw(c, (uint8_t *)d->buf, d->len);
		else if (c2t)
			d->len = inspect_c2t(c, (uint8_t *)d->buf, d->len);
		else if (clear_caps_back && !raw)
			clear_hello_caps_back(c, (uint8_t *)d->buf, d->len);
		if (record_file)
			fwrite(d->buf, 1, d->len, record_file);
		return 0;
	}
	if (r == 0) {
		d->eof = 1;
		return 0;
	}
	return errno == EAGAIN || errno == EINTR ? 0 : -1;
}

/* Bytes of d that may go now: all, or up to --cut-after on a data stream. */
static size_t may_write(const struct conn *c, const struct pipe_dir *d)
{
	size_t len = d->len - d->off;
	uint64_t left;

	if (cut_now == 1 || cut_now == 2)
		return 0; /* about to cut: nothing more goes */
	if (!cut_after || d != &c->c2t || c->kind != K_DATA)
		return len;
	left = cut_after > forwarded[K_DATA] ? cut_after - forwarded[K_DATA] : 0;
	return len < left ? len : (size_t)left;
}

static int pump_write(struct conn *c, int to, struct pipe_dir *d)
{
	size_t len = may_write(c, d);
	ssize_t w = len ? send(to, d->buf + d->off, len, MSG_NOSIGNAL) : 0;

	if (d == &c->c2t && w > 0) {
		c->forwarded += (uint64_t)w;
		forwarded[c->kind] += (uint64_t)w;
		if (cut_after && c->kind == K_DATA && forwarded[K_DATA] >= cut_after)
			cut_now = 1;
	}
	if (w >= 0) {
		d->off += (size_t)w;
		if (d->off == d->len)
			d->len = d->off = 0;
		return 0;
	}
	return errno == EAGAIN || errno == EINTR ? 0 : -1;
}

static int connect_target(const struct sockaddr_storage *ta, socklen_t tl)
{
	struct timeval tv = { 2, 0 };
	int one = 1, fd = socket(ta->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (const struct sockaddr *)ta, tl)) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_nonblock(fd);
	return fd;
}

static void accept_one(int lfd, const struct sockaddr_storage *ta, socklen_t tl)
{
	struct linger lg = { 1, 0 };
	int one = 1, cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), tfd;
	struct conn *c = NULL;

	if (cfd < 0)
		return;
	for (int i = 0; i < MAX_CONNS && !c; i++)
		if (!conns[i].used)
			c = &conns[i];
	tfd = c ? connect_target(ta, tl) : -1;
	if (tfd < 0) {
		/* Refused downstream: refuse upstream, as directly connecting would. */
		fprintf(stderr, "faultproxy: connection %u: %s\n", next_id++,
			c ? "target refused, resetting the client" : "too many connections");
		setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(cfd);
		return;
	}
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_nonblock(cfd);
	memset(c, 0, sizeof(*c));
	c->c2t.buf = malloc(BUF_LEN);
	c->t2c.buf = malloc(BUF_LEN);
	if (!c->c2t.buf || !c->t2c.buf) {
		fprintf(stderr, "faultproxy: out of memory\n");
		exit(1);
	}
	c->used = 1;
	c->id = next_id++;
	c->cfd = cfd;
	c->tfd = tfd;
	if (raw)
		c->kind = raw_conns++ ? K_DATA : K_CTRL;
	fprintf(stderr, "faultproxy: connection %u accepted\n", c->id);
}

static int write_ready_file(const char *path, unsigned port)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f))
		return -1;
	return rename(tmp, path);
}

int main(int argc, char **argv)
{
	const char *ready_file = NULL, *bind_addr = "127.0.0.1";
	char thost[256], *colon;
	struct sockaddr_storage ta, la;
	socklen_t tl, ll = sizeof(la);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block, empty;
	unsigned lport;
	int lfd, one = 1, rc;

	if (argc < 3)
		usage();
	trace = getenv("FAULTPROXY_TRACE") != NULL;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--ready-file") && i + 1 < argc)
			ready_file = argv[++i];
		else if (!strcmp(argv[i], "--bind") && i + 1 < argc)
			bind_addr = argv[++i];
		else if (!strcmp(argv[i], "--data-frames") && i + 1 < argc)
			data_frames_per_signal = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--cut-after") && i + 1 < argc)
			cut_after = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--cut-on") && i + 1 < argc)
			parse_cut_on(argv[++i]);
		else if (!strcmp(argv[i], "--corrupt-blocks"))
			data_type = T_BLOCKS;
		else if (!strcmp(argv[i], "--cut-silent"))
			cut_silent = 1;
		else if (!strcmp(argv[i], "--cut-whole"))
			cut_whole = 1;
		else if (!strcmp(argv[i], "--clear-caps") && i + 1 < argc)
			clear_caps = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--clear-caps-back") && i + 1 < argc)
			clear_caps_back = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--impostor") && i + 1 < argc) {
			impostor = 1;
			impostor_code = (int32_t)strtol(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--impostor-hb")) {
			impostor = 2;
		} else if (!strcmp(argv[i], "--impostor-trickle") && i + 1 < argc) {
			impostor = 3;
			trickle_ms = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--raw"))
			raw = 1;
		else if (!strcmp(argv[i], "--record") && i + 1 < argc) {
			record_file = fopen(argv[++i], "ab");
			if (!record_file) {
				fprintf(stderr, "faultproxy: %s: %s\n", argv[i], strerror(errno));
				return 2;
			}
		} else
			usage();
	}
	lport = (unsigned)strtoul(argv[1], NULL, 10);
	snprintf(thost, sizeof(thost), "%s", argv[2]);
	colon = strrchr(thost, ':');
	if (!colon || lport > 65535)
		usage();
	*colon = 0;
	if ((rc = getaddrinfo(thost, colon + 1, &hints, &ai))) {
		fprintf(stderr, "faultproxy: %s: %s\n", argv[2], gai_strerror(rc));
		return 1;
	}
	memcpy(&ta, ai->ai_addr, ai->ai_addrlen);
	tl = ai->ai_addrlen;
	freeaddrinfo(ai);
	if ((rc = getaddrinfo(bind_addr, argv[1], &hints, &ai))) {
		fprintf(stderr, "faultproxy: %s: %s\n", bind_addr, gai_strerror(rc));
		return 1;
	}
	lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) || listen(lfd, 64)) {
		fprintf(stderr, "faultproxy: listen on %s:%s: %s\n", bind_addr, argv[1],
			strerror(errno));
		return 1;
	}
	freeaddrinfo(ai);
	set_nonblock(lfd);
	getsockname(lfd, (struct sockaddr *)&la, &ll);
	lport = ntohs(la.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&la)->sin6_port
					       : ((struct sockaddr_in *)&la)->sin_port);

	/* Signals only arrive inside ppoll(): no races with the loop's state. */
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigemptyset(&empty);
	for (int s = 0; s < 5; s++)
		sigaction((int[]){ SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, SIGINT }[s], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (ready_file && write_ready_file(ready_file, lport)) {
		fprintf(stderr, "faultproxy: --ready-file %s: %s\n", ready_file, strerror(errno));
		return 1;
	}
	fprintf(stderr, "faultproxy: listening on %s:%u, forwarding to %s\n", bind_addr, lport,
		argv[2]);

	while (!want_quit) {
		struct pollfd pf[1 + 2 * MAX_CONNS];
		int idx[MAX_CONNS];
		nfds_t n = 0;

		if (want_ctrl) {
			arm_ctrl += (unsigned)want_ctrl;
			want_ctrl = 0;
			fprintf(stderr, "faultproxy: armed: corrupt the next control frame\n");
		}
		if (want_data) {
			arm_data += (unsigned)want_data * data_frames_per_signal;
			want_data = 0;
			fprintf(stderr, "faultproxy: armed: corrupt the next %u %s frames\n",
				arm_data, type_name(data_type));
		}
		if (want_hole) {
			blackhole ^= (int)(want_hole & 1);
			want_hole = 0;
			fprintf(stderr, "faultproxy: blackhole %s\n", blackhole ? "on" : "off");
		}

		pf[n++] = (struct pollfd){ lfd, blackhole && !impostor ? 0 : POLLIN, 0 };
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &conns[i];
			int c_rd, t_rd;

			idx[i] = -1;
			if (!c->used)
				continue;
			idx[i] = (int)n;
			/* A side is polled only while something can happen on it:
			 * POLLHUP/POLLERR come even without asking, and would spin. */
			c_rd = !c->c2t.len && !c->c2t.eof;
			t_rd = !c->t2c.len && !c->t2c.eof;
			pf[n++] = (struct pollfd){
				blackhole || c->frozen || (!c_rd && !c->t2c.len) ? -1 : c->cfd,
				(short)((c_rd ? POLLIN : 0) | (c->t2c.len ? POLLOUT : 0)), 0
			};
			pf[n++] = (struct pollfd){
				blackhole || c->frozen || (!t_rd && !c->c2t.len) ? -1 : c->tfd,
				(short)((t_rd ? POLLIN : 0) | (c->c2t.len ? POLLOUT : 0)), 0
			};
		}
		rc = ppoll(pf, n, NULL, &empty);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			perror("faultproxy: ppoll");
			return 1;
		}
		if ((pf[0].revents & POLLIN) && blackhole && impostor >= 2)
			hold_as_impostor(lfd);
		else if ((pf[0].revents & POLLIN) && blackhole)
			answer_as_impostor(lfd);
		else if (pf[0].revents & POLLIN)
			accept_one(lfd, &ta, tl);
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &conns[i];
			short cr, tr;
			int err = 0;

			if (idx[i] < 0 || !c->used || blackhole || c->frozen)
				continue;
			cr = pf[idx[i]].revents;
			tr = pf[idx[i] + 1].revents;
			if ((cr | tr) & POLLERR) { /* a reset: pass it on */
				conn_close(c, 1);
				continue;
			}
			/* Reads first (they only happen into empty buffers)... */
			if ((cr & (POLLIN | POLLHUP | POLLERR)) && !c->c2t.len && !c->c2t.eof)
				err |= pump_read(c, c->cfd, &c->c2t, 1);
			if ((tr & (POLLIN | POLLHUP | POLLERR)) && !c->t2c.len && !c->t2c.eof)
				err |= pump_read(c, c->tfd, &c->t2c, 0);
			/* ...then writes, eagerly: poll will say when a socket is full. */
			if (!err && c->c2t.len)
				err |= pump_write(c, c->tfd, &c->c2t);
			if (!err && c->t2c.len)
				err |= pump_write(c, c->cfd, &c->t2c);
			if (err) {
				conn_close(c, 1);
				continue;
			}
			/* An EOF is passed on once everything before it was. */
			if (c->c2t.eof && !c->c2t.len && !c->c2t.shut) {
				shutdown(c->tfd, SHUT_WR);
				c->c2t.shut = 1;
			}
			if (c->t2c.eof && !c->t2c.len && !c->t2c.shut) {
				shutdown(c->cfd, SHUT_WR);
				c->t2c.shut = 1;
			}
			if (c->c2t.shut && c->t2c.shut)
				conn_close(c, 0);
		}
		if (cut_now == 3 && (!cut_conn->used || !cut_conn->c2t.len))
			cut_now = 2;
		if (cut_now == 1 || cut_now == 2)
			cut_all();
	}
	for (int i = 0; i < MAX_CONNS; i++)
		if (conns[i].used)
			conn_close(&conns[i], 0);
	close(lfd);
	fprintf(stderr,
		"faultproxy: forwarded %llu bytes on data streams, %llu on control streams\n",
		(unsigned long long)forwarded[K_DATA], (unsigned long long)forwarded[K_CTRL]);
	if (record_file)
		fclose(record_file);
	return 0;
}
