/* fakepeer - a hostile or broken sender, for the receiver's bad-input tests.
 *
 *   fakepeer HOST PORT CASE [PSK_FILE]
 *
 * Speaks rmig's wire format (built with the real encoders) over TCP, up to
 * the point where CASE misbehaves, then prints what the receiver answered:
 * "ABORT: reason" or "CLOSED". Exit 0 if the receiver refused with an ABORT,
 * 1 otherwise (it accepted what it must not, or said nothing). With
 * PSK_FILE it authenticates as a sender holding that key (an insider).
 *
 * Cases:
 *   version   HELLO offering wire versions 9..9 only
 *   huge      a valid opening, then REGIONS claiming a 1 TiB guest
 *   layout    a valid opening, then REGIONS of 64 KiB pages (not what the
 *             receiver's backend holds)
 *   past      a valid session, then a PAGES frame whose run ends past its
 *             region
 *   truncated a valid opening, then half a REGIONS frame and silence
 *   hb-precopy  a valid session of a 16 MiB sim guest, then nothing but
 *             heartbeats (every 250 ms) in pre-copy
 *   hb-ready  the same guest up to READY (an empty round, the sim device
 *             state, COMPLETE), then nothing but heartbeats
 *   blocks-first  a valid session that says it has disks, then a BLOCKS
 *             frame before any DISKS
 *   disks-huge  a valid session, then DISKS of one disk of 64 TiB
 *   resume=HEX  an opening that resumes the migration HEX (its first
 *             HELLO's nonce, 32 hex digits: faultproxy logs it), then
 *             waits for what the receiver says
 * The hb- cases print "ABORT after N ms: reason", N counted from the last
 * message that was not a heartbeat, and give up after 120 s.
 *
 *   fakepeer HOST PORT old-dest
 *
 * The other way round: a destination from before dry runs. It listens on
 * HOST:PORT (0: any port; "listening N" on stdout), answers one sender's
 * HELLO echoing only the capabilities that rmig knew (not DRYRUN), and
 * prints what came next. Exit 0 if it was an ABORT before anything about
 * the guest (REGIONS, a data channel), 1 otherwise. No key.
 *
 *   fakepeer HOST PORT hb-dest
 *
 * A destination's address answering a sender's HELLO with heartbeats only
 * (someone else there, no key): prints "ABORT after N ms: reason" once the
 * sender gives up its opening with one (exit 0), "CLOSED" if it just
 * closed (exit 1, what rmig does when the HELLO never came); gives up
 * after 120 s.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "sim_state.h"

#define GUEST_LEN (16u << 20) /* the sim guest the valid sessions describe */
#define HB_EVERY_MS 250
#define HB_GIVE_UP_MS 120000

static uint64_t ctrl_seq;
static uint8_t psk[1024];
static size_t psk_len; /* 0: no key */

static int dial(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	int fd;

	if (getaddrinfo(host, port, &hints, &res))
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen)) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_msg(int fd, const struct rmig_msg *m, uint64_t *seq)
{
	uint8_t buf[RMIG_FRAME_HDR_LEN + 4096];
	size_t len = rmig_msg_encode(m, buf + RMIG_FRAME_HDR_LEN, sizeof(buf) - RMIG_FRAME_HDR_LEN);

	rmig_frame_hdr_encode(buf, m->type, 0, (uint32_t)len, (*seq)++);
	return send_all(fd, buf, RMIG_FRAME_HDR_LEN + len);
}

static int recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&pfd, 1, 10000) <= 0)
			return -1;
		n = recv(fd, p, len, 0);
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Next control message; -1 when the stream ends. */
static int recv_any(int fd, struct rmig_msg *m, uint8_t *payload, size_t cap)
{
	uint8_t hdr[RMIG_FRAME_HDR_LEN];
	struct rmig_frame_hdr fh;
	char err[256];

	if (recv_all(fd, hdr, sizeof(hdr)) || rmig_frame_hdr_decode(hdr, &fh, err, sizeof(err)) ||
	    fh.len > cap || recv_all(fd, payload, fh.len) ||
	    rmig_msg_decode(fh.type, payload, fh.len, m, err, sizeof(err)))
		return -1;
	return 0;
}

/* Next control message other than HEARTBEAT; -1 when the stream ends. */
static int recv_msg(int fd, struct rmig_msg *m, uint8_t *payload, size_t cap)
{
	for (;;) {
		if (recv_any(fd, m, payload, cap))
			return -1;
		if (m->type != RMIG_MSG_HEARTBEAT)
			return 0;
	}
}

/* 1 (and printed) if m is the receiver's refusal. */
static int refusal(const struct rmig_msg *m)
{
	if (m->type != RMIG_MSG_ABORT)
		return 0;
	printf("ABORT: %s\n", m->u.abort.reason);
	return 1;
}

/* Print how the receiver reacted; 0 if it refused with an ABORT. */
static int outcome(int fd)
{
	static uint8_t payload[RMIG_MAX_REASON + 64];
	struct rmig_msg m;

	while (recv_msg(fd, &m, payload, sizeof(payload)) == 0) {
		if (refusal(&m))
			return 0;
		printf("got %s\n", rmig_msg_name(m.type));
	}
	printf("CLOSED\n");
	return 1;
}

static struct rmig_layout one_region(uint64_t len, uint32_t page_size)
{
	struct rmig_layout l = { .count = 1 };

	l.r[0] = (struct rmig_wire_region){ .id = 0, .page_size = page_size, .len = len };
	return l;
}

static int load_psk(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, psk, sizeof(psk));

	if (fd >= 0)
		close(fd);
	if (n < 16)
		return -1;
	psk_len = (size_t)n;
	return 0;
}

/* HMAC-SHA256(psk, label | Ns | Nd | HELLO_s | HELLO_d), as
 * engine/session/auth.c's proofs (the channel token: no HELLOs). */
static void mac(const char *label, const struct rmig_wire_hello *src,
		const struct rmig_wire_hello *dst, int with_hellos, uint8_t out[RMIG_MAC_LEN])
{
	struct rmig_msg h = { .type = RMIG_MSG_HELLO };
	uint8_t msg[64 + 2 * RMIG_NONCE_LEN + 2 * RMIG_HELLO_LEN];
	size_t n = strlen(label), len = n + 2 * RMIG_NONCE_LEN;
	unsigned outlen = 0;

	memcpy(msg, label, n);
	memcpy(msg + n, src->nonce, RMIG_NONCE_LEN);
	memcpy(msg + n + RMIG_NONCE_LEN, dst->nonce, RMIG_NONCE_LEN);
	if (with_hellos) {
		h.u.hello = *src;
		rmig_msg_encode(&h, msg + len, RMIG_HELLO_LEN);
		h.u.hello = *dst;
		rmig_msg_encode(&h, msg + len + RMIG_HELLO_LEN, RMIG_HELLO_LEN);
		len += 2 * RMIG_HELLO_LEN;
	}
	HMAC(EVP_sha256(), psk, (int)psk_len, msg, len, out, &outlen);
}

/* resume=HEX: the session's 16 bytes. 0 if c is such a case. */
static int resume_case(const char *c, uint8_t session[RMIG_NONCE_LEN])
{
	if (strncmp(c, "resume=", 7) || strlen(c + 7) != 2 * RMIG_NONCE_LEN)
		return -1;
	for (int i = 0; i < RMIG_NONCE_LEN; i++)
		if (sscanf(c + 7 + 2 * i, "%2hhx", &session[i]) != 1)
			return -1;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* With a key: AUTH both ways, and the data channels' token (else: Ns).
 * 1 if the receiver refused with an ABORT (printed). */
static int authenticate(int fd, const struct rmig_wire_hello *src,
			const struct rmig_wire_hello *dst, uint8_t *token)
{
	static uint8_t payload[4096];
	struct rmig_msg m = { .type = RMIG_MSG_AUTH };
	uint8_t full[RMIG_MAC_LEN];

	if (!psk_len) {
		memcpy(token, src->nonce, RMIG_NONCE_LEN);
		return 0;
	}
	mac("rmig-auth-2 source", src, dst, 1, m.u.mac);
	if (send_msg(fd, &m, &ctrl_seq) || recv_msg(fd, &m, payload, sizeof(payload)))
		return -1;
	if (refusal(&m))
		return 1;
	if (m.type != RMIG_MSG_AUTH)
		return -1;
	mac("rmig-auth-1 channel", src, dst, 0, full);
	memcpy(token, full, RMIG_NONCE_LEN);
	return 0;
}

/* Nothing but heartbeats until the receiver gives up (or HB_GIVE_UP_MS). */
static int only_heartbeats(int fd)
{
	static uint8_t payload[RMIG_MAX_REASON + 64];
	struct rmig_msg hb = { .type = RMIG_MSG_HEARTBEAT }, m;
	int64_t t0 = now_ms();

	while (now_ms() - t0 < HB_GIVE_UP_MS) {
		struct pollfd pfd = { fd, POLLIN, 0 };

		/* hb.u.value, the bytes sent so far, stays 0: nothing moves */
		if (send_msg(fd, &hb, &ctrl_seq))
			break;
		if (poll(&pfd, 1, HB_EVERY_MS) <= 0)
			continue;
		if (recv_any(fd, &m, payload, sizeof(payload)))
			break;
		if (m.type == RMIG_MSG_HEARTBEAT)
			continue;
		if (m.type == RMIG_MSG_ABORT) {
			printf("ABORT after %lld ms: %s\n", (long long)(now_ms() - t0),
			       m.u.abort.reason);
			return 0;
		}
		printf("got %s\n", rmig_msg_name(m.type));
	}
	printf("CLOSED after %lld ms\n", (long long)(now_ms() - t0));
	return 1;
}

/* The sim backend's device state for our guest: sim_state.h. */

/* From REGIONS_ACK to READY: an empty round 1, the device state, COMPLETE
 * without digests. 0 once READY came. */
static int up_to_ready(int fd)
{
	static uint8_t payload[4096];
	struct sim_state_blob b = { .magic = SIM_STATE_MAGIC,
				    .version = SIM_STATE_VERSION,
				    .npages = GUEST_LEN / 4096,
				    .stride = 1,
				    .nregions = 1,
				    .zero_run = 1,
				    .hot_zero = 1 };
	struct rmig_msg m = { .type = RMIG_MSG_ROUND_END };

	m.u.round_end.h = (struct rmig_wire_round_end){ .round = 1, .nchan = 1 };
	if (send_msg(fd, &m, &ctrl_seq) || recv_msg(fd, &m, payload, sizeof(payload)) ||
	    m.type != RMIG_MSG_ROUND_ACK)
		return -1;
	m = (struct rmig_msg){ .type = RMIG_MSG_STATE };
	m.u.state.data = (const uint8_t *)&b;
	m.u.state.len = sizeof(b);
	if (send_msg(fd, &m, &ctrl_seq))
		return -1;
	m = (struct rmig_msg){ .type = RMIG_MSG_COMPLETE };
	m.u.complete.count = 1;
	if (send_msg(fd, &m, &ctrl_seq) || recv_msg(fd, &m, payload, sizeof(payload)))
		return -1;
	return m.type == RMIG_MSG_READY ? 0 : -1;
}

/* blocks-first: one 64 KiB block of disk 0, announced by nothing.
 * disks-huge: a disk of 64 TiB, for a receiver to hold in memory. */
static int disks_case(int fd, int data, const char *c)
{
	static uint8_t frame[RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN + 65536];
	struct rmig_run run = { .first = 0, .count = 1 };
	struct rmig_msg m = { .type = RMIG_MSG_DISKS };
	uint64_t seq = 0;
	size_t sub;

	if (!strcmp(c, "disks-huge")) {
		m.u.disks.count = 1;
		for (uint32_t i = 0; i < m.u.disks.count; i++) {
			m.u.disks.d[i] = (struct rmig_wire_disk){ .id = i,
								  .block_size = 2u << 20,
								  .size = RMIG_MAX_DISK_BYTES };
			snprintf(m.u.disks.d[i].name, sizeof(m.u.disks.d[i].name), "huge%u", i);
		}
		return send_msg(fd, &m, &ctrl_seq);
	}
	memset(frame, 0x5a, sizeof(frame));
	sub = rmig_pages_encode(frame + RMIG_FRAME_HDR_LEN, RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN, 0, 1,
				&run, 1);
	rmig_frame_hdr_encode(frame, RMIG_MSG_BLOCKS, 0, (uint32_t)(sub + 65536), seq);
	return send_all(data, frame, RMIG_FRAME_HDR_LEN + sub + 65536);
}

/* A listening socket on host:port; its port printed for the test. */
static int listen_on(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd, one = 1;

	if (getaddrinfo(host, port, &hints, &res))
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd >= 0 && (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 4) ||
			getsockname(fd, (struct sockaddr *)&sa, &len))) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		printf("listening %u\n", ntohs(sa.sin_port));
		fflush(stdout);
	}
	return fd;
}

/* The destination cases: listen on host:port (*lfd), take one sender and
 * its HELLO into m. The connection; -2: nobody came within 20 s; -1: it
 * sent no HELLO. */
static int accept_hello(const char *host, const char *port, int *lfd, struct rmig_msg *m,
			uint8_t *payload, size_t cap)
{
	struct pollfd pfd = { *lfd = listen_on(host, port), POLLIN, 0 };
	int fd;

	if (*lfd < 0 || poll(&pfd, 1, 20000) != 1 || (fd = accept(*lfd, NULL, NULL)) < 0)
		return -2;
	if (recv_msg(fd, m, payload, cap) || m->type != RMIG_MSG_HELLO)
		return -1;
	return fd;
}

static int old_destination(const char *host, const char *port)
{
	static uint8_t payload[RMIG_MAX_REASON + 64];
	struct rmig_msg m;
	uint64_t seq = 0;
	int lfd, fd = accept_hello(host, port, &lfd, &m, payload, sizeof(payload));
	struct pollfd pfd = { lfd, POLLIN, 0 };

	if (fd < 0)
		return -fd;
	m.u.hello.caps &= RMIG_CAP_POSTCOPY | RMIG_CAP_CHUNK_DIGESTS | RMIG_CAP_DISKS;
	m.u.hello.flags = 0;
	if (getrandom(m.u.hello.nonce, RMIG_NONCE_LEN, 0) != RMIG_NONCE_LEN ||
	    send_msg(fd, &m, &seq))
		return 1;
	/* The sender's next step: a data channel would be a new connection. */
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 200) == 1) {
		printf("a data channel came\n");
		return 1;
	}
	if (recv_msg(fd, &m, payload, sizeof(payload))) {
		printf("CLOSED\n");
		return 1;
	}
	if (m.type != RMIG_MSG_ABORT) {
		printf("got %s\n", rmig_msg_name(m.type));
		return 1;
	}
	printf("ABORT: %s\n", m.u.abort.reason);
	return 0;
}

/* hb-dest: a "destination" that answers the HELLO with heartbeats only, as
 * someone at its address could: the source must end its opening. 0 once
 * the source's ABORT came ("ABORT after N ms: ..."). */
static int heartbeat_destination(const char *host, const char *port)
{
	static uint8_t payload[RMIG_MAX_REASON + 64];
	struct rmig_msg m;
	int lfd, fd = accept_hello(host, port, &lfd, &m, payload, sizeof(payload));
	struct pollfd pfd;

	if (fd < 0)
		return -fd;
	for (int64_t t0 = now_ms(); now_ms() - t0 < HB_GIVE_UP_MS;) {
		struct rmig_msg hb = { .type = RMIG_MSG_HEARTBEAT };

		pfd = (struct pollfd){ fd, POLLIN, 0 };
		if (poll(&pfd, 1, HB_EVERY_MS) <= 0) { /* quiet: a heartbeat */
			if (send_msg(fd, &hb, &ctrl_seq))
				break;
			continue;
		}
		if (recv_any(fd, &m, payload, sizeof(payload)))
			break;
		if (m.type == RMIG_MSG_ABORT) {
			printf("ABORT after %lld ms: %s\n", (long long)(now_ms() - t0),
			       m.u.abort.reason);
			return 0;
		}
	}
	printf("CLOSED\n");
	return 1;
}

int main(int argc, char **argv)
{
	static uint8_t payload[4096];
	struct rmig_msg m = { .type = RMIG_MSG_HELLO };
	struct rmig_wire_hello sent;
	uint8_t nonce[RMIG_NONCE_LEN], token[RMIG_NONCE_LEN];
	const char *c;
	int fd, data = -1, rc;

	if (argc != 4 && argc != 5) {
		fprintf(stderr,
			"usage: fakepeer HOST PORT "
			"version|huge|layout|past|truncated|hb-precopy|hb-ready|blocks-first|"
			"disks-huge|resume=HEX [PSK_FILE] | fakepeer HOST PORT old-dest|hb-dest\n");
		return 2;
	}
	c = argv[3];
	if (!strcmp(c, "old-dest"))
		return old_destination(argv[1], argv[2]);
	if (!strcmp(c, "hb-dest"))
		return heartbeat_destination(argv[1], argv[2]);
	if (!strncmp(c, "resume=", 7) && resume_case(c, nonce)) {
		fprintf(stderr, "fakepeer: %s: resume= wants 32 hex digits\n", c);
		return 2;
	}
	if (argc == 5 && load_psk(argv[4])) {
		fprintf(stderr, "fakepeer: %s: not a key of 16..1024 bytes\n", argv[4]);
		return 2;
	}
	fd = dial(argv[1], argv[2]);
	if (fd < 0 || getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce)) {
		fprintf(stderr, "fakepeer: cannot connect to %s:%s\n", argv[1], argv[2]);
		return 2;
	}
	m.u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					      .ver_max = RMIG_WIRE_VERSION_MAX,
					      .channels = 1,
					      .flags = psk_len ? RMIG_HELLO_PSK : 0 };
	if (!strcmp(c, "version"))
		m.u.hello.ver_min = m.u.hello.ver_max = 9;
	if (!strcmp(c, "blocks-first") || !strcmp(c, "disks-huge"))
		m.u.hello.caps = RMIG_CAP_DISKS;
	memcpy(m.u.hello.nonce, nonce, RMIG_NONCE_LEN);
	memcpy(m.u.hello.session, nonce, RMIG_NONCE_LEN);
	if (!resume_case(c, m.u.hello.session)) {
		m.u.hello.flags |= RMIG_HELLO_RESUME;
		m.u.hello.round = 1;
	}
	sent = m.u.hello;
	if (send_msg(fd, &m, &ctrl_seq))
		return 1;
	if (!strcmp(c, "version"))
		return outcome(fd);
	if (recv_msg(fd, &m, payload, sizeof(payload)))
		return outcome(fd);
	if (refusal(&m)) /* at the HELLO */
		return 0;
	rc = m.type == RMIG_MSG_HELLO ? authenticate(fd, &sent, &m.u.hello, token) : -1;
	if (rc == 1)
		return 0;
	if (rc || (sent.flags & RMIG_HELLO_RESUME))
		return outcome(fd);
	data = dial(argv[1], argv[2]);
	if (data < 0)
		return 1;
	{
		uint64_t seq = 0;

		m.type = RMIG_MSG_CHANNEL;
		memcpy(m.u.channel.token, token, RMIG_NONCE_LEN);
		m.u.channel.index = 0;
		m.u.channel.count = 1;
		if (send_msg(data, &m, &seq))
			return 1;
	}
	m.type = RMIG_MSG_REGIONS;
	if (!strcmp(c, "huge"))
		m.u.layout = one_region(1ull << 40, 4096);
	else if (!strcmp(c, "layout"))
		m.u.layout = one_region(16u << 20, 65536);
	else
		m.u.layout = one_region(GUEST_LEN, 4096);
	if (!strcmp(c, "truncated")) {
		uint8_t buf[RMIG_FRAME_HDR_LEN + 64];
		size_t len = rmig_msg_encode(&m, buf + RMIG_FRAME_HDR_LEN, 64);

		rmig_frame_hdr_encode(buf, m.type, 0, (uint32_t)len, ctrl_seq++);
		if (send_all(fd, buf, RMIG_FRAME_HDR_LEN + len / 2))
			return 1;
		return outcome(fd);
	}
	if (send_msg(fd, &m, &ctrl_seq))
		return 1;
	if (!strncmp(c, "hb-", 3)) {
		if (recv_msg(fd, &m, payload, sizeof(payload)) || m.type != RMIG_MSG_REGIONS_ACK ||
		    (!strcmp(c, "hb-ready") && up_to_ready(fd)))
			return outcome(fd);
		return only_heartbeats(fd);
	}
	if (!strcmp(c, "past")) {
		struct rmig_run run = { .first = (16u << 20) / 4096 - 1, .count = 2 };
		uint8_t frame[RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN + 2 * 4096];
		size_t sub;
		uint64_t seq = 0; /* CHANNEL is not counted: data frames start at 0 */

		if (recv_msg(fd, &m, payload, sizeof(payload)) || m.type != RMIG_MSG_REGIONS_ACK)
			return outcome(fd);
		memset(frame, 0x5a, sizeof(frame));
		sub = rmig_pages_encode(frame + RMIG_FRAME_HDR_LEN,
					RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN, 0, 1, &run, 1);
		rmig_frame_hdr_encode(frame, RMIG_MSG_PAGES, 0, (uint32_t)(sub + 2 * 4096), seq);
		if (send_all(data, frame, RMIG_FRAME_HDR_LEN + sub + 2 * 4096))
			return 1;
	}
	if (!strcmp(c, "blocks-first") || !strcmp(c, "disks-huge")) {
		if (recv_msg(fd, &m, payload, sizeof(payload)) || m.type != RMIG_MSG_REGIONS_ACK ||
		    disks_case(fd, data, c))
			return outcome(fd);
	}
	rc = outcome(fd);
	close(data);
	close(fd);
	return rc;
}
