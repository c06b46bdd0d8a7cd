/* fuzz_handshake.c - libFuzzer target: the real destination engine,
 * rmig_recv(), against a peer whose every byte comes from the fuzz input.
 *
 * The harness uses only the public API (include/rmig.h) and the link
 * interface (transport/link.h): it registers an in-memory link "fuzz" and a
 * backend "fuzz-sim" (the built-in sim with a size cap, see below), then runs
 * one whole destination session per input and tears everything down, so that
 * leaks show up per input.
 *
 * Input format: a sequence of chunks
 *	u8 stream, u16 len (little-endian), len bytes
 * stream % 65 picks the stream: 0 is the control stream, 1..64 are data
 * streams. A chunk longer than what is left takes what is left; a partial
 * chunk header at the end and empty chunks are ignored.
 * tests/fuzz/make_seeds.c writes this format, with data channel i on
 * stream 1+i.
 *
 * Connections. rmig_recv listens (engine/session/listener.c): an accept
 * thread calls the link's accept, and every connection accepted runs its
 * opening on a thread of its own, which reads the first frame. The link
 * hands out the control stream first, then each data stream once the peer
 * sends its first chunk (a source connects a channel when it is about to
 * use it), in the order of those chunks; each is a link of its own. What a
 * stream carries decides what it becomes: a data stream opening with
 * CHANNEL joins the migration whose token it names as the channel its index
 * names (adopt_channel), whatever the stream's number; one opening with
 * HELLO is another control connection (a resumption, the outcome question,
 * or a second sender, refused as busy).
 *
 * Ordering. The destination runs one thread on the control stream and one
 * receiver thread per data channel, and a real source respects causality:
 * it sends round N+1's pages only after ROUND_ACK N. Handing every stream
 * its bytes at once would make most inputs fail on a race ("PAGES for round
 * 2 during round 1") and keep the fuzzer shallow. So the peer sends chunks
 * strictly in input order: chunk k becomes readable once chunk k-1 was read
 * to its end AND the thread that read it came back to the link (called
 * another op, or waits for more). That thread has then acted on what it
 * read: e.g. after ROUND_END the control thread only comes back to send
 * ROUND_ACK, after the destination moved to the next round.
 *
 * When the destination is stuck (readers wait, nothing happens on the link
 * and nothing computes, see IDLE_US), e.g. on a chunk nobody reads, a
 * ROUND_END announcing frames that never come, or an opening thread that
 * read its CHANNEL, handed the connection over and ended, the peer releases
 * the next chunk anyway; when it has nothing left it closes: reads get
 * -ECONNRESET. The control stream is closed as soon as its bytes run out; a
 * data stream only once the control stream is closed, or when stuck: a
 * source keeps its channels open until the end, and closing them early
 * would fail every migration on a race. Chunks for a stream the destination
 * closed are dropped at once. Timeouts never sleep otherwise.
 *
 * No sender left: once every stream was accepted and every connection is
 * gone again (each opening refused, none taken by the session), no
 * migration can come; the harness then cancels rmig_recv (rmig_cancel)
 * rather than let it wait config.accept_timeout_ms, which is only a safety
 * net here.
 *
 * Oracles beyond ASan/UBSan/LSan (abort() = a library bug):
 *  - every control frame the destination sends decodes with the real decoder
 *    and carries the next control sequence number of its connection;
 *  - the engine uses only data channels adopted into the link it uses them
 *    on, adopts only a connection that still has its stream, and offers
 *    only real memory for placement (mem_expose);
 *  - two-phase commit: the destination's guest runs if and only if
 *    rmig_recv() returned 0 with result "migrated".
 *
 * Guest size cap. REGIONS says how much memory the destination allocates;
 * sim maps whatever fits in RAM + swap. To keep iterations fast and within
 * -rss_limit_mb, "fuzz-sim" refuses layouts above RMIG_FUZZ_GUEST_CAP_MB
 * (default 64; 0 = no cap) the way a backend that cannot hold a guest does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "link.h"
#include "proto.h"
#include "rmig_backend.h"

#define NSTREAMS (1 + RMIG_LINK_MAX_CHANNELS)
/* Stuck: for IDLE_US, no link activity and no other thread of the process
 * running or runnable (/proc/self/task/TID/stat state R or D: computing,
 * faulting in guest memory, or woken and waiting for a CPU). A plain timer
 * would have to be long enough for whatever the destination computes
 * (digests, zeroing, mapping the guest) on a loaded machine, and most
 * mutated inputs end in this wait; the process CPU clock will not do either:
 * other threads' time shows only at the next scheduler tick (4 ms). */
#define IDLE_US 2000
#define SLICE_US 500

/* ---- the scripted peer ---- */

struct chunk {
	const uint8_t *p;
	uint32_t len;
	unsigned stream;
};

struct peer {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	const struct chunk *c;
	size_t n;
	size_t released;	    /* chunks [0, released) may be read */
	size_t next[NSTREAMS];	    /* per stream: the chunk being read (or a later one) */
	uint32_t off[NSTREAMS];	    /* bytes of chunk next[s] already read */
	size_t first[NSTREAMS];	    /* per stream: its first chunk, n if it has none */
	uint8_t accepted[NSTREAMS]; /* the destination accepted a connection for it */
	uint8_t closed[NSTREAMS];   /* the destination closed it */
	unsigned live;		    /* accepted connections not destroyed yet */
	int last_read;		    /* chunk released-1 was read to its end ... */
	pthread_t reader;	    /* ... by this thread ... */
	int came_back;		    /* ... which called the link again since */
	int ctrl_eof;		    /* the control stream is closed */
	int64_t quiet_us;	    /* since then no link activity, no other thread busy */
	int watchdog;		    /* a waiter looks for a stuck destination */
	int copying;		    /* readers copying bytes: busy */
};

/* A "fuzz" link: a listening one, or a connection accept made. */
struct flink {
	struct peer *p;
	int stream;   /* its control stream: -1 for none (listening, or adopted away) */
	int accepted; /* made by accept: counts in p->live */
	int chan[RMIG_LINK_MAX_CHANNELS]; /* data channel i reads stream chan[i]; -1: none */
	uint64_t tx_seq; /* next control sequence number the destination must send on it */
};

static int verbose;	      /* RMIG_FUZZ_VERBOSE=1: print events and the outcome; 2: and stalls */
static struct peer *cur_peer; /* the input being run; libFuzzer runs one at a time */
/* The context in rmig_recv, for rmig_cancel when no sender can come any
 * more (recv_lock: set and cleared around the call, used by link threads). */
static pthread_mutex_t recv_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rmig_ctx *recv_ctx;
static uint64_t guest_cap = 64ull << 20;
/* Found here (tests/fuzz/crashes/handshake-zero-scan-64x): a ZERO frame made
 * the receiver read every page of its runs, and runs could repeat. Fixed:
 * runs must ascend without overlap and a round may not name more pages than
 * the guest has. Inputs that would check more than this many bytes can be
 * skipped with RMIG_FUZZ_ZERO_SCAN_MB (default 0: no limit, so a regression
 * shows as a timeout). */
static uint64_t zero_cap;
static const struct rmig_backend_ops *sim_ops;

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static size_t parse_chunks(const uint8_t *d, size_t size, struct chunk *out)
{
	size_t n = 0, off = 0;

	while (size - off >= 3) {
		unsigned stream = d[off] % NSTREAMS;
		size_t len = (size_t)d[off + 1] | (size_t)d[off + 2] << 8;

		off += 3;
		if (len > size - off)
			len = size - off;
		if (len)
			out[n++] = (struct chunk){ d + off, (uint32_t)len, stream };
		off += len;
	}
	return n;
}

static uint64_t get_le(const uint8_t *q, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = bytes; i-- > 0;)
		v = v << 8 | q[i];
	return v;
}

/* Bytes of guest memory the destination would read to check ZERO runs,
 * walking each data stream's frames as its receiver will (a known issue,
 * see zero_cap). */
static uint64_t zero_scan_bytes(const struct chunk *c, size_t n)
{
	const uint64_t max_pages = guest_cap / RMIG_MIN_PAGE_SIZE;
	uint64_t total = 0;

	for (unsigned s = 1; s < NSTREAMS; s++) {
		size_t len = 0, off = 0;
		uint8_t *b;

		for (size_t k = 0; k < n; k++)
			len += c[k].stream == s ? c[k].len : 0;
		if (!len || !(b = malloc(len)))
			continue;
		for (size_t k = 0; k < n; k++)
			if (c[k].stream == s) {
				memcpy(b + off, c[k].p, c[k].len);
				off += c[k].len;
			}
		for (off = 0; len - off >= RMIG_FRAME_HDR_LEN;) {
			const uint8_t *q = b + off + RMIG_FRAME_HDR_LEN;
			size_t room = len - off - RMIG_FRAME_HDR_LEN;
			struct rmig_frame_hdr fh;

			if (rmig_frame_hdr_decode(b + off, &fh, NULL, 0) || fh.len > room)
				break;
			if (fh.type == RMIG_MSG_ZERO && fh.len >= RMIG_PAGES_HDR_LEN) {
				uint64_t nruns = get_le(q + 4, 4);

				for (uint64_t i = 0;
				     i < nruns && i < RMIG_MAX_RUNS &&
				     RMIG_PAGES_HDR_LEN + (i + 1) * RMIG_RUN_LEN <= fh.len;
				     i++) {
					uint64_t count = get_le(
					    q + RMIG_PAGES_HDR_LEN + i * RMIG_RUN_LEN + 8, 8);

					total += (count < max_pages ? count : max_pages) *
						 RMIG_MIN_PAGE_SIZE;
				}
			}
			off += RMIG_FRAME_HDR_LEN + fh.len;
		}
		free(b);
	}
	return total;
}

/* Progress on the link: readers waiting for the peer are not stuck yet. */
static void touch(struct peer *p)
{
	p->quiet_us = now_us();
	pthread_cond_broadcast(&p->cond);
}

static void release_next(struct peer *p)
{
	/* Bytes for a stream the destination closed are lost at once, as on a
	 * reset connection: nobody will read them, so nothing waits for that. */
	do
		p->released++;
	while (p->released < p->n && p->closed[p->c[p->released - 1].stream]);
	p->last_read = 0;
	p->came_back = 0;
	touch(p);
}

/* The calling thread is back at the link: if it read the newest chunk to
 * its end, it has acted on it and the peer may send the next one. */
static void came_back(struct peer *p)
{
	if (p->last_read && pthread_equal(p->reader, pthread_self()))
		p->came_back = 1;
	if (p->last_read && p->came_back && p->released < p->n)
		release_next(p);
}

/* 1 if a thread of this process other than the caller runs, waits for a
 * CPU or for the disk. */
static int others_busy(void)
{
	pid_t self = gettid();
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int busy = 0;

	if (!d)
		return 1; /* cannot tell: never call it stuck */
	while (!busy && (e = readdir(d))) {
		pid_t tid = (pid_t)atoi(e->d_name);
		char path[64], stat[512], *rp;
		ssize_t len;
		int fd;

		if (tid <= 0 || tid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue; /* exited */
		len = read(fd, stat, sizeof(stat) - 1);
		close(fd);
		if (len <= 0)
			continue;
		stat[len] = 0;
		/* "tid (comm) S ...": comm may hold anything, the state follows
		 * the last ')'. */
		rp = strrchr(stat, ')');
		busy = rp && rp[1] == ' ' && (rp[2] == 'R' || rp[2] == 'D');
	}
	closedir(d);
	return busy;
}

static void deadline(struct timespec *ts, long us)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += us / 1000000;
	ts->tv_nsec += (us % 1000000) * 1000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Wait for the peer to change; 1 if the destination is stuck. One waiter,
 * the watchdog, wakes every SLICE_US to look; the others sleep until
 * something happens (every change broadcasts), so that they do not look
 * busy themselves: on a loaded machine a thread woken for nothing can stay
 * runnable for milliseconds. */
static int wait_peer(struct peer *p)
{
	struct timespec ts;
	int64_t quiet, start;
	int busy;

	if (p->watchdog) {
		/* The long timeout is only a safety net. */
		deadline(&ts, 100000);
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		return 0;
	}
	p->watchdog = 1;
	deadline(&ts, SLICE_US);
	pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	if (p->copying || now_us() - p->quiet_us < SLICE_US) {
		p->watchdog = 0;
		return 0;
	}
	/* Look without the lock, so that the others keep going; stuck only if
	 * nothing happened on the link meanwhile either. */
	quiet = p->quiet_us;
	start = now_us();
	pthread_mutex_unlock(&p->lock);
	busy = others_busy();
	pthread_mutex_lock(&p->lock);
	p->watchdog = 0;
	if (busy) {
		p->quiet_us = now_us(); /* something computes: it may come back to the link */
		return 0;
	}
	if (p->quiet_us != quiet || start - quiet < IDLE_US)
		return 0;
	if (verbose > 1)
		fprintf(stderr, "fuzz: stuck for %lld us, %zu of %zu chunks sent\n",
			(long long)(start - quiet), p->released, p->n);
	return 1;
}

/* The chunk stream s reads next, or p->n if the stream has no more bytes. */
static size_t stream_chunk(struct peer *p, unsigned s)
{
	while (p->next[s] < p->n &&
	       (p->c[p->next[s]].stream != s || p->off[s] == p->c[p->next[s]].len)) {
		p->next[s]++;
		p->off[s] = 0;
	}
	return p->next[s];
}

/* Read stream s for link l (its control stream, or one of its channels). */
static int peer_read(struct rmig_link *l, unsigned s, uint8_t *buf, size_t len, unsigned stop)
{
	struct flink *f = l->priv;
	struct peer *p = f->p;
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	touch(p);
	came_back(p);
	while (len) {
		size_t k;

		if (atomic_load(&l->interrupted) & stop) {
			rmig_link_err(l, "interrupted");
			rc = -ECANCELED;
			break;
		}
		if (p->closed[s]) {
			rmig_link_err(l, "session closed");
			rc = -ENOTCONN;
			break;
		}
		k = stream_chunk(p, s);
		if (k < p->released) {
			const struct chunk *c = &p->c[k];
			size_t take = c->len - p->off[s];

			if (take > len)
				take = len;
			/* Copy without the lock: buf is often guest memory, and its
			 * first touch can take milliseconds (huge pages). Only this
			 * thread reads stream s (link.h), so next[s], off[s] stay. */
			p->copying++;
			pthread_mutex_unlock(&p->lock);
			memcpy(buf, c->p + p->off[s], take);
			pthread_mutex_lock(&p->lock);
			p->copying--;
			buf += take;
			len -= take;
			p->off[s] += (uint32_t)take;
			if (p->off[s] == c->len && k + 1 == p->released) {
				p->last_read = 1;
				p->reader = pthread_self();
				p->came_back = 0;
			}
			touch(p);
			continue;
		}
		/* Nothing to read yet: this thread waiting counts as coming back. */
		came_back(p);
		if (stream_chunk(p, s) < p->released)
			continue;
		if (k == p->n && (s == 0 || p->ctrl_eof)) {
			if (s == 0) {
				p->ctrl_eof = 1;
				touch(p);
			}
			rmig_link_err(l, "peer closed %s",
				      s ? "the data channel" : "the connection");
			rc = -ECONNRESET;
			break;
		}
		if (wait_peer(p)) {
			if (p->released < p->n) {
				release_next(p); /* stuck: the peer sends on regardless */
			} else if (k == p->n) {
				rmig_link_err(l, "peer closed the data channel");
				rc = -ECONNRESET;
				break;
			}
		}
	}
	touch(p); /* wakes the other waiters: one of them takes over the watch */
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* ---- the "fuzz" link ---- */

static int fl_create(struct rmig_link *l)
{
	struct flink *f;

	if (!cur_peer)
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->p = cur_peer; /* the peer belongs to the input being run */
	f->stream = -1;
	for (unsigned i = 0; i < RMIG_LINK_MAX_CHANNELS; i++)
		f->chan[i] = -1;
	l->priv = f;
	return 0;
}

/* Every stream was accepted: the sender connects nothing more. */
static int all_accepted(const struct peer *p)
{
	for (unsigned s = 0; s < NSTREAMS; s++)
		if (!p->accepted[s] && (s == 0 || p->first[s] < p->n))
			return 0;
	return 1;
}

/* No connection is left and none will come: no migration can start, so
 * rmig_recv need not wait for its accept timeout. */
static void no_sender_left(void)
{
	pthread_mutex_lock(&recv_lock);
	if (recv_ctx) {
		if (verbose)
			fprintf(stderr, "fuzz: no sender left: cancelling rmig_recv\n");
		rmig_cancel(recv_ctx);
	}
	pthread_mutex_unlock(&recv_lock);
}

static void fl_destroy(struct rmig_link *l)
{
	struct flink *f = l->priv;
	int none = 0;

	if (!f)
		return;
	if (f->accepted) {
		pthread_mutex_lock(&f->p->lock);
		f->p->live--;
		none = !f->p->live && all_accepted(f->p);
		pthread_mutex_unlock(&f->p->lock);
	}
	free(f);
	l->priv = NULL;
	if (none)
		no_sender_left();
}

static void enter(struct rmig_link *l)
{
	struct flink *f = l->priv;
	struct peer *p = f->p;

	pthread_mutex_lock(&p->lock);
	touch(p);
	came_back(p);
	pthread_mutex_unlock(&p->lock);
}

static int fl_listen(struct rmig_link *l, const char *host, uint16_t *port)
{
	(void)l;
	(void)host;
	*port = 1;
	return 0;
}

/* The stream the next accept hands out, -1 if none yet: the control stream
 * first, then the data streams whose first chunk the peer sent, in the
 * order of those chunks. */
static int next_stream(const struct peer *p)
{
	int best = -1;

	if (!p->accepted[0])
		return 0;
	for (unsigned s = 1; s < NSTREAMS; s++)
		if (!p->accepted[s] && p->first[s] < p->released &&
		    (best < 0 || p->first[s] < p->first[best]))
			best = (int)s;
	return best;
}

static int fl_accept(struct rmig_link *l, int timeout_ms, struct rmig_link *conn)
{
	struct flink *f = l->priv, *cf = conn->priv;
	struct peer *p = f->p;
	struct timespec end;
	int rc;

	deadline(&end, (timeout_ms < 0 ? 100 : timeout_ms) * 1000L);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		int s = next_stream(p);
		struct timespec now;

		if (atomic_load(&l->interrupted) & RMIG_LINK_STOP_CTRL_RECV) {
			rmig_link_err(l, "interrupted");
			rc = -ECANCELED;
			break;
		}
		if (s >= 0) {
			p->accepted[s] = 1;
			p->live++;
			cf->stream = s;
			cf->accepted = 1;
			snprintf(conn->peer, sizeof(conn->peer), "fuzz:%d", 1 + s);
			conn->peer_loopback = 1;
			touch(p);
			rc = 0;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > end.tv_sec ||
		    (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) {
			rmig_link_err(l, "no peer connected within %d ms", timeout_ms);
			rc = -ETIMEDOUT;
			break;
		}
		/* A stream connects with its first chunk. While some are unsent,
		 * watch for a stuck destination as readers do: with every
		 * connection gone, nobody else would, and the chunk that opens
		 * the next one would never come. Otherwise sleep: the listener
		 * calls again at once (no spinning on a shared machine). */
		if (p->released < p->n) {
			/* wait_peer unlocks: another waiter may have sent the rest. */
			if (wait_peer(p) && p->released < p->n)
				release_next(p);
		} else {
			pthread_cond_timedwait(&p->cond, &p->lock, &end);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static int fl_adopt_channel(struct rmig_link *l, struct rmig_link *conn, unsigned chan, int *node)
{
	struct flink *f = l->priv, *cf = conn->priv;
	struct peer *p = f->p;
	int rc = 0;

	if (chan >= RMIG_LINK_MAX_CHANNELS) {
		rmig_link_err(l, "no data channel %u: at most %d", chan, RMIG_LINK_MAX_CHANNELS);
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	touch(p);
	came_back(p);
	if (cf->stream < 0) {
		/* A connection is handed over once: the engine took a stream
		 * it was not given (or gave it to two channels). */
		fprintf(stderr,
			"fuzz: engine adopted a connection without a stream as channel %u\n", chan);
		abort();
	}
	if (f->chan[chan] >= 0 && !p->closed[f->chan[chan]]) {
		rmig_link_err(l, "data channel %u is already connected", chan);
		rc = -EEXIST;
	} else {
		f->chan[chan] = cf->stream;
		cf->stream = -1;
		*node = -1; /* as TCP: no per-node buffers to place */
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static int fl_connect_ctrl(struct rmig_link *l, const char *host, uint16_t port, int timeout_ms)
{
	(void)host;
	(void)port;
	(void)timeout_ms;
	rmig_link_err(l, "the fuzz link only receives");
	return -EOPNOTSUPP;
}

static int fl_connect_channel(struct rmig_link *l, int timeout_ms, int node, unsigned *chan)
{
	(void)timeout_ms;
	(void)node;
	(void)chan;
	rmig_link_err(l, "the fuzz link only receives");
	return -EOPNOTSUPP;
}

/* What the destination says must be a frame its peer can decode, next in
 * its connection's sequence. */
static void check_sent_frame(struct flink *f, const struct iovec *iov, int iovcnt)
{
	/* The largest frame a destination sends is MEM_KEYS. */
	static uint8_t buf[RMIG_FRAME_HDR_LEN + RMIG_MAX_MEM_KEYS];
	static struct rmig_msg m;
	struct rmig_frame_hdr fh;
	char why[256];
	size_t len = 0;

	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > sizeof(buf) - len) {
			fprintf(stderr, "fuzz: destination sent an oversized control frame\n");
			abort();
		}
		memcpy(buf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	if (len < RMIG_FRAME_HDR_LEN || rmig_frame_hdr_decode(buf, &fh, why, sizeof(why)) ||
	    len != RMIG_FRAME_HDR_LEN + (size_t)fh.len ||
	    rmig_frame_decode_buf(buf, len, NULL, &m, why, sizeof(why))) {
		fprintf(stderr, "fuzz: destination sent an undecodable control frame (%zu bytes)\n",
			len);
		abort();
	}
	if (fh.seq != f->tx_seq) {
		fprintf(stderr, "fuzz: destination sent %s with sequence %llu, expected %llu\n",
			rmig_msg_name(fh.type), (unsigned long long)fh.seq,
			(unsigned long long)f->tx_seq);
		abort();
	}
	f->tx_seq++;
}

static int fl_ctrl_send(struct rmig_link *l, const struct iovec *iov, int iovcnt, int timeout_ms)
{
	struct flink *f = l->priv;
	struct peer *p = f->p;
	int rc = 0;

	(void)timeout_ms;
	pthread_mutex_lock(&p->lock);
	touch(p);
	came_back(p);
	if (atomic_load(&l->interrupted) & RMIG_LINK_STOP_CTRL_SEND) {
		rmig_link_err(l, "interrupted");
		rc = -ECANCELED;
	} else if (f->stream < 0 || p->closed[f->stream]) {
		rmig_link_err(l, "session closed");
		rc = -ENOTCONN;
	} else {
		check_sent_frame(f, iov, iovcnt);
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* A connection's own stream: the control stream of a session, or the first
 * frame (CHANNEL, HELLO) of any connection, which the listener reads. */
static int fl_ctrl_recv(struct rmig_link *l, void *buf, size_t len, int timeout_ms)
{
	struct flink *f = l->priv;
	int s;

	(void)timeout_ms;
	pthread_mutex_lock(&f->p->lock);
	s = f->stream;
	pthread_mutex_unlock(&f->p->lock);
	if (s < 0) {
		rmig_link_err(l, "no connection");
		return -ENOTCONN;
	}
	return peer_read(l, (unsigned)s, buf, len, RMIG_LINK_STOP_CTRL_RECV);
}

/* The stream behind data channel chan of l. */
static unsigned check_chan(struct rmig_link *l, unsigned chan)
{
	struct flink *f = l->priv;
	int s = -1;

	pthread_mutex_lock(&f->p->lock);
	if (chan < RMIG_LINK_MAX_CHANNELS)
		s = f->chan[chan];
	pthread_mutex_unlock(&f->p->lock);
	if (s < 0) {
		/* The engine may only use channels adopted into this link. */
		fprintf(stderr, "fuzz: engine used data channel %u, not adopted into this link\n",
			chan);
		abort();
	}
	return (unsigned)s;
}

static int fl_chan_send(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			int timeout_ms)
{
	(void)iov;
	(void)iovcnt;
	(void)timeout_ms;
	check_chan(l, chan);
	if (atomic_load(&l->interrupted) & RMIG_LINK_STOP_DATA) {
		rmig_link_err(l, "interrupted");
		return -ECANCELED;
	}
	enter(l);
	return 0;
}

static int fl_chan_recv(struct rmig_link *l, unsigned chan, const struct iovec *iov, int iovcnt,
			int timeout_ms)
{
	unsigned s = check_chan(l, chan);

	(void)timeout_ms;
	for (int i = 0; i < iovcnt; i++) {
		int rc = peer_read(l, s, iov[i].iov_base, iov[i].iov_len, RMIG_LINK_STOP_DATA);

		if (rc)
			return rc;
	}
	return 0;
}

/* Placement (RDMA WRITE) offers: so that the destination's MEM_KEYS paths
 * run, the link "registers" a layout with an even number of regions and
 * refuses an odd one (as a device out of resources would). */
static int fl_mem_expose(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
			 void **blob, size_t *len)
{
	volatile uint8_t sink = 0;
	uint8_t *b;

	/* The areas must be guest memory: touch both ends of each. */
	for (size_t i = 0; i < n; i++) {
		if (!mem[i].addr || !mem[i].len) {
			fprintf(stderr, "fuzz: destination exposes an empty area %zu\n", i);
			abort();
		}
		sink += ((const uint8_t *)mem[i].addr)[0];
		sink += ((const uint8_t *)mem[i].addr)[mem[i].len - 1];
	}
	(void)sink;
	if (n % 2) {
		rmig_link_err(l, "cannot register %zu areas", n);
		return -ENOMEM;
	}
	b = calloc(n ? n : 1, 16);
	if (!b)
		return -ENOMEM;
	*blob = b;
	*len = n * 16;
	return 0;
}

static void fl_mem_release(struct rmig_link *l)
{
	(void)l; /* nothing registered, nothing to drop */
}

/* The destination closed stream s: reads fail, the peer's further bytes
 * for it are lost. */
static void close_stream(struct peer *p, int s)
{
	if (s < 0)
		return;
	p->closed[s] = 1;
	if (s == 0)
		p->ctrl_eof = 1; /* the source's data streams end with it */
}

/* Closes what l holds: its own stream (none once adopted away: closing a
 * handed-over connection must not close the channel it became) and the
 * channels adopted into it. */
static void fl_close_session(struct rmig_link *l)
{
	struct flink *f = l->priv;
	struct peer *p = f->p;

	pthread_mutex_lock(&p->lock);
	came_back(p);
	close_stream(p, f->stream);
	for (unsigned i = 0; i < RMIG_LINK_MAX_CHANNELS; i++)
		close_stream(p, f->chan[i]);
	atomic_store(&l->interrupted, 0);
	/* The newest chunk may be for a stream closed just now: nobody reads it. */
	if (p->released && p->released < p->n && p->closed[p->c[p->released - 1].stream])
		release_next(p);
	touch(p);
	pthread_mutex_unlock(&p->lock);
}

static void fl_interrupt(struct rmig_link *l, unsigned flags)
{
	struct flink *f = l->priv;

	atomic_fetch_or(&l->interrupted, flags);
	/* Wake the readers. (A mutex is not async-signal-safe; nothing here
	 * interrupts from a signal handler.) */
	pthread_mutex_lock(&f->p->lock);
	touch(f->p);
	pthread_mutex_unlock(&f->p->lock);
}

static const struct rmig_link_ops fuzz_link_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "fuzz",
	.create = fl_create,
	.destroy = fl_destroy,
	.listen = fl_listen,
	.accept = fl_accept,
	.adopt_channel = fl_adopt_channel,
	.connect_ctrl = fl_connect_ctrl,
	.connect_channel = fl_connect_channel,
	.ctrl_send = fl_ctrl_send,
	.ctrl_recv = fl_ctrl_recv,
	.chan_send = fl_chan_send,
	.chan_recv = fl_chan_recv,
	.mem_expose = fl_mem_expose,
	.mem_release = fl_mem_release,
	.close_session = fl_close_session,
	.interrupt = fl_interrupt,
};

/* ---- the "fuzz-sim" backend: sim, with a cap on the guest it accepts ---- */

static struct rmig_backend_ops capped_sim_ops;

static int capped_prepare_regions(struct rmig_backend *be, const struct rmig_region *r, size_t n)
{
	const struct rmig_region *got;
	uint64_t total = 0;
	size_t ngot;
	int rc;

	for (size_t i = 0; i < n; i++) {
		if (r[i].len > guest_cap - total) {
			rmig_backend_err(be, "fuzz: guest larger than the %llu MiB cap",
					 (unsigned long long)(guest_cap >> 20));
			return -ENOMEM;
		}
		total += r[i].len;
	}
	rc = sim_ops->prepare_regions(be, r, n);
	if (rc || sim_ops->get_regions(be, &got, &ngot))
		return rc;
	/* sim asks for transparent huge pages: a frame writing one 4 KiB page
	 * would have the kernel clear 2 MiB, the bulk of an input's time. */
	for (size_t i = 0; i < ngot; i++)
		madvise(got[i].host, got[i].len, MADV_NOHUGEPAGE);
	return 0;
}

/* ---- libFuzzer entry points ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *cap = getenv("RMIG_FUZZ_GUEST_CAP_MB");

	(void)argc;
	(void)argv;
	verbose = getenv("RMIG_FUZZ_VERBOSE") ? atoi(getenv("RMIG_FUZZ_VERBOSE")) : 0;
	if (getenv("RMIG_FUZZ_ZERO_SCAN_MB"))
		zero_cap = strtoull(getenv("RMIG_FUZZ_ZERO_SCAN_MB"), NULL, 0) << 20;
	if (cap)
		guest_cap = strtoull(cap, NULL, 0) ? strtoull(cap, NULL, 0) << 20 : UINT64_MAX;
	sim_ops = rmig_backend_find("sim");
	if (!sim_ops || !sim_ops->prepare_regions) {
		fprintf(stderr, "fuzz: no sim backend\n");
		abort();
	}
	capped_sim_ops = *sim_ops;
	capped_sim_ops.name = "fuzz-sim";
	capped_sim_ops.prepare_regions = capped_prepare_regions;
	if (rmig_backend_register(&capped_sim_ops) || rmig_link_register(&fuzz_link_ops)) {
		fprintf(stderr, "fuzz: cannot register the fuzz backend or link\n");
		abort();
	}
	return 0;
}

/* Events carry strings owned by the engine: read them all, so that ASan
 * sees a dangling one. */
static void on_event(void *arg, const struct rmig_event *ev)
{
	volatile size_t sink = 0;

	(void)arg;
	if (verbose)
		fprintf(stderr, "fuzz: event %d%s%s%s%s\n", ev->type, ev->phase ? " phase " : "",
			ev->phase ? ev->phase : "", ev->detail ? " detail " : "",
			ev->detail ? ev->detail : "");
	if (ev->peer)
		sink += strlen(ev->peer);
	if (ev->phase)
		sink += strlen(ev->phase);
	if (ev->transport)
		sink += strlen(ev->transport);
	if (ev->pin)
		sink += strlen(ev->pin);
	if (ev->detail)
		sink += strlen(ev->detail);
	if (ev->round)
		sink += ev->round->pages;
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct chunk *chunks = malloc((size / 3 + 1) * sizeof(*chunks));
	struct peer *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;
	struct rmig_backend *be;
	struct rmig_ctx *ctx;
	struct rmig_config cfg;
	struct rmig_guest_stats gs = { 0 };
	const struct rmig_stats *st;
	volatile size_t sink;
	char err[256];
	int64_t t0;
	int rc;

	if (!chunks || !p)
		abort();
	p->c = chunks;
	p->n = parse_chunks(data, size, chunks);
	if (zero_cap && zero_scan_bytes(chunks, p->n) > zero_cap) {
		free(p);
		free(chunks);
		return -1; /* not worth keeping in the corpus either */
	}
	p->released = p->n ? 1 : 0;
	for (unsigned st = 0; st < NSTREAMS; st++)
		p->first[st] = p->n;
	for (size_t k = p->n; k-- > 0;)
		p->first[chunks[k].stream] = k;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	touch(p);
	cur_peer = p;

	rc = rmig_backend_open("fuzz-sim", RMIG_ROLE_DEST, &be, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "fuzz: backend: %s\n", err);
		abort();
	}
	rmig_config_init(&cfg, sizeof(cfg));
	cfg.transport = "fuzz";
	cfg.host = "fuzz";
	cfg.port = 0;
	/* A safety net: the harness cancels as soon as no sender can come. */
	cfg.accept_timeout_ms = 2000;
	cfg.link_timeout_ms = 100;
	/* A lost link waits for a resume or a question: briefly, here. */
	cfg.failover_timeout_ms = 50;
	cfg.commit_timeout_ms = 50;
	cfg.on_event = on_event;
	rc = rmig_ctx_create(&ctx, &cfg, be);
	if (rc) {
		fprintf(stderr, "fuzz: rmig_ctx_create: %s\n", strerror(-rc));
		abort();
	}

	pthread_mutex_lock(&recv_lock);
	recv_ctx = ctx;
	pthread_mutex_unlock(&recv_lock);
	t0 = now_us();
	rc = rmig_recv(ctx);
	pthread_mutex_lock(&recv_lock);
	recv_ctx = NULL;
	pthread_mutex_unlock(&recv_lock);

	st = rmig_stats(ctx);
	if (verbose)
		fprintf(stderr,
			"fuzz: %zu chunks, rmig_recv %d in %lld ms, %s, guest %llu MiB, rounds %u, "
			"pages %llu: %s\n",
			p->n, rc, (long long)(now_us() - t0) / 1000, rmig_result_name(st->result),
			(unsigned long long)(st->guest_bytes >> 20), st->rounds,
			(unsigned long long)st->pages_sent, rmig_errmsg(ctx));
	/* The strings the caller gets must be valid (volatile: keep the reads). */
	sink = strlen(rmig_errmsg(ctx)) + strlen(rmig_result_name(st->result)) +
	       strlen(st->transport) + strlen(st->pin);
	(void)sink;
	if (be->ops->guest_stats)
		be->ops->guest_stats(be, &gs);
	/* Two-phase commit: the guest runs here exactly when we report it moved. */
	if ((rc == 0) != (st->result == RMIG_RESULT_MIGRATED) || (rc == 0) != !!gs.running) {
		fprintf(stderr, "fuzz: rmig_recv returned %d, result %s, guest %s: %s\n", rc,
			rmig_result_name(st->result), gs.running ? "running" : "not running",
			rmig_errmsg(ctx));
		abort();
	}

	rmig_ctx_destroy(ctx);
	rmig_backend_close(be);
	cur_peer = NULL;
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	free(chunks);
	return 0;
}
