/* door.h - the receiving tunnel's door: it listens, runs each
 * connection's opening (TLS, HELLO) on a thread of its own under a deadline
 * and caps, and hands the proven ones to the tunnel. */
#ifndef RMIG_TUNNEL_DOOR_H
#define RMIG_TUNNEL_DOOR_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "frame.h"

struct rmig_link;
struct tun_security;
struct tun_door;

#define TUN_OPEN_MS 10000 /* an opening's time in all, TLS handshake included */

typedef void (*tun_door_log_fn)(void *arg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct tun_door_config {
	const struct tun_security *sec; /* kept: must outlive the door */
	const char *host;		/* NULL or "": every address */
	/* links to listen on, all on one port ("tcp", "rdma"); one that cannot
	 * listen (rdma without a device) is logged, the others serve */
	const char (*kinds)[TUN_KIND_LEN];
	int nkinds;
	tun_door_log_fn log; /* one line per refusal */
	void *log_arg;
	int wake_fd; /* an eventfd written when a proven opening waits */
};

/* A connection that proved itself: its HELLO's flags and session token. */
struct tun_proven {
	struct rmig_link *link; /* the taker owns it */
	uint32_t flags;
	uint8_t token[TUN_TOKEN_LEN];
};

/* Listen on c->host:*port (0: any; the port taken is written back). */
int tun_door_open(struct tun_door **out, const struct tun_door_config *c, uint16_t *port, char *err,
		  size_t errlen);
/* The oldest proven opening, or -EAGAIN. */
int tun_door_take(struct tun_door *d, struct tun_proven *out);
void tun_door_close(struct tun_door *d);

#endif
