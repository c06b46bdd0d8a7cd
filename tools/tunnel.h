/* tunnel.h - `rmig tunnel send|recv`: carry local UNIX sockets to a peer. */
#ifndef RMIG_TOOLS_TUNNEL_H
#define RMIG_TOOLS_TUNNEL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads --psk-file (rmig.c's, which exits on a bad file). */
typedef ssize_t (*tunnel_key_reader)(const char *path, uint8_t *buf, size_t cap);

/* argv[0] is "tunnel". Returns the exit code. */
int tunnel_command(int argc, char *argv[], tunnel_key_reader read_key);

#endif
