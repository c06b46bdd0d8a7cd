/* tcp_mem_bw - a TCP loopback reference for `make bench` that moves data
 * the way a migration must: from one guest-sized buffer to another, both
 * already in memory (as a `recv --prealloc` destination's), over STREAMS
 * connections with 1 MiB writes, one sending and one receiving thread per
 * stream. iperf3 sends one small buffer over and over and so reads and
 * writes only its caches; this shows what the same sockets move when every
 * byte comes from and goes to DRAM. Not a ceiling to beat: a bound on how
 * much of iperf3's rate any migration could reach here. Prints one JSON
 * line: {"bytes":..,"streams":..,"seconds":..,"Bps":..}.
 *   tcp_mem_bw [SIZE_MIB [STREAMS]]   (default 4096 MiB, 2 streams) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WRITE_LEN (1u << 20)
#define MAX_STREAMS 16

struct stream {
	char *buf; /* this stream's slice of the source or destination */
	size_t len;
	int fd;
	int rc;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *send_main(void *arg)
{
	struct stream *s = arg;

	for (size_t off = 0; off < s->len;) {
		size_t n = s->len - off < WRITE_LEN ? s->len - off : WRITE_LEN;
		ssize_t w = send(s->fd, s->buf + off, n, 0);

		if (w <= 0) {
			s->rc = -1;
			return NULL;
		}
		off += (size_t)w;
	}
	return NULL;
}

static void *recv_main(void *arg)
{
	struct stream *s = arg;

	for (size_t off = 0; off < s->len;) {
		ssize_t r = recv(s->fd, s->buf + off, s->len - off, 0);

		if (r <= 0) {
			s->rc = -1;
			return NULL;
		}
		off += (size_t)r;
	}
	return NULL;
}

/* A guest-sized buffer, every page written (backed before the clock). */
static char *guest_buffer(size_t size, int fill)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, size, MADV_HUGEPAGE);
	for (size_t i = 0; i < size; i += 64)
		p[i] = (char)(fill ? (i >> 12) + 1 : 0);
	return p;
}

/* A connected pair of loopback TCP sockets. */
static int socket_pair(int lfd, const struct sockaddr_in *a, int *out, int *in)
{
	*out = socket(AF_INET, SOCK_STREAM, 0);
	if (*out < 0 || connect(*out, (const struct sockaddr *)a, sizeof(*a)))
		return -1;
	*in = accept(lfd, NULL, NULL);
	return *in < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	size_t size = (size_t)(argc > 1 ? atol(argv[1]) : 4096) << 20;
	int streams = argc > 2 ? atoi(argv[2]) : 2;
	struct stream tx[MAX_STREAMS], rx[MAX_STREAMS];
	pthread_t tid[2 * MAX_STREAMS];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	char *src, *dst;
	int lfd, rc = 0;
	double t0, t1;

	if (!size || streams < 1 || streams > MAX_STREAMS) {
		fprintf(stderr, "usage: tcp_mem_bw [SIZE_MIB [STREAMS (1..%d)]]\n", MAX_STREAMS);
		return 2;
	}
	src = guest_buffer(size, 1);
	dst = guest_buffer(size, 0);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (!src || !dst || lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(lfd, MAX_STREAMS) || getsockname(lfd, (struct sockaddr *)&a, &alen)) {
		perror("tcp_mem_bw: setting up");
		return 1;
	}
	for (int i = 0; i < streams; i++) {
		size_t slice = size / (size_t)streams, off = slice * (size_t)i;
		size_t len = i == streams - 1 ? size - off : slice;

		tx[i] = (struct stream){ .buf = src + off, .len = len };
		rx[i] = (struct stream){ .buf = dst + off, .len = len };
		if (socket_pair(lfd, &a, &tx[i].fd, &rx[i].fd)) {
			perror("tcp_mem_bw: connecting");
			return 1;
		}
	}
	t0 = now_s();
	for (int i = 0; i < streams; i++) {
		pthread_create(&tid[2 * i], NULL, recv_main, &rx[i]);
		pthread_create(&tid[2 * i + 1], NULL, send_main, &tx[i]);
	}
	for (int i = 0; i < 2 * streams; i++)
		pthread_join(tid[i], NULL);
	t1 = now_s();
	for (int i = 0; i < streams; i++)
		rc |= tx[i].rc | rx[i].rc;
	if (rc || memcmp(src, dst, size)) {
		fprintf(stderr, "tcp_mem_bw: the bytes did not arrive intact\n");
		return 1;
	}
	printf("{\"bytes\":%zu,\"streams\":%d,\"seconds\":%.3f,\"Bps\":%.0f}\n", size, streams,
	       t1 - t0, (double)size / (t1 - t0));
	return 0;
}
