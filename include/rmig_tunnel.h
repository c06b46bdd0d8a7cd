/* rmig_tunnel.h - carry local UNIX-socket connections to a peer over one
 * rmig link (TCP, TLS-sealed with a key): libvirt's and QEMU's migration
 * sockets between two hosts (`rmig tunnel`).
 *
 * The sending side listens on local UNIX sockets ("exposes" them) and opens
 * one tunnel stream per accepted connection; the receiving side connects
 * each stream to the local socket its "forward" of the same name gives, and
 * to nothing else. Streams are byte-exact, in order, both directions, with
 * half-close, each with its own flow-control window.
 *
 * Part of librmig's public API; see rmig.h for the conventions. Functions
 * return 0 or a negative errno; rmig_tunnel_error() says why. One thread
 * runs a tunnel (rmig_tunnel_run); rmig_tunnel_stop() may come from any.
 */
#ifndef RMIG_TUNNEL_H
#define RMIG_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "rmig.h"

#ifdef __cplusplus
extern "C" {
#endif

struct rmig_tunnel;

enum rmig_tunnel_role {
	RMIG_TUNNEL_SEND = 1, /* exposes local sockets, connects to the peer */
	RMIG_TUNNEL_RECV = 2, /* listens for the peer, forwards to local sockets */
};

/* One line of what happens (a stream refused, the link lost...). */
typedef void (*rmig_tunnel_log_fn)(void *arg, const char *line);

RMIG_API int rmig_tunnel_create(enum rmig_tunnel_role role, struct rmig_tunnel **out);
/* SEND: listen on UNIX socket path (created mode 0600) as channel name.
 * RECV: connect streams of channel name to UNIX socket path. */
RMIG_API int rmig_tunnel_add(struct rmig_tunnel *t, const char *name, const char *path);
/* Pre-shared key (16..1024 bytes): TLS 1.3 with an external PSK derived from
 * it. Without a key or credentials a receiver accepts loopback peers only. */
RMIG_API int rmig_tunnel_set_psk(struct rmig_tunnel *t, const uint8_t *key, size_t len);
/* x509 credentials directory (ca-cert.pem, {server,client}-{cert,key}.pem). */
RMIG_API int rmig_tunnel_set_tls_creds(struct rmig_tunnel *t, const char *dir);
/* How long a lost link may take to come back, in ms (default 30000; 0: a
 * lost link closes every stream). SEND: it connects again for this long;
 * RECV: it keeps the streams this long plus the 10 s a silent link takes to
 * be declared lost. */
/* Transports, in the order the sending side tries them on every
 * (re)connection: "tcp", "rdma", "rdma,tcp", or "auto" (default: every one
 * built in, RDMA first). The receiving side listens with each on the same
 * port (one without a device is skipped, logged). A lost RDMA link comes
 * back over TCP when RDMA no longer reaches the peer, streams intact. */
RMIG_API int rmig_tunnel_set_transport(struct rmig_tunnel *t, const char *list);
/* Options of particular links, "LINK.KEY=VALUE,..." as
 * rmig_config.link_options (e.g. "rdma.device=mlx5_1"). */
RMIG_API int rmig_tunnel_set_link_options(struct rmig_tunnel *t, const char *opts);
RMIG_API int rmig_tunnel_set_resume_timeout(struct rmig_tunnel *t, unsigned ms);
RMIG_API void rmig_tunnel_set_log(struct rmig_tunnel *t, rmig_tunnel_log_fn fn, void *arg);
/* SEND: connect to host:port and carry connections until the link is lost
 * or rmig_tunnel_stop. RECV: listen on host:port (0: any free port, logged)
 * and serve one peer after another until rmig_tunnel_stop. A sending side
 * returns -ECONNRESET when its link is lost and not back in time. */
RMIG_API int rmig_tunnel_run(struct rmig_tunnel *t, const char *host, uint16_t port);
/* Make rmig_tunnel_run return soon. Async-signal-safe. */
RMIG_API void rmig_tunnel_stop(struct rmig_tunnel *t);
RMIG_API const char *rmig_tunnel_error(const struct rmig_tunnel *t);
RMIG_API void rmig_tunnel_destroy(struct rmig_tunnel *t);

#ifdef __cplusplus
}
#endif
#endif
