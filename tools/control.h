/* control.h - the tool's control socket (--control PATH): a unix socket,
 * mode 0600, that takes one command line per connection and answers one
 * JSON line. The tool decides what a command means (control_handler); this
 * file only listens, reads, answers and connects. */
#ifndef RMIG_TOOL_CONTROL_H
#define RMIG_TOOL_CONTROL_H

#include <stddef.h>

struct event_base;
struct control;

#define CONTROL_MAX_LINE 256 /* a longer command is refused */

/* Answer `line` (no newline) in reply (a JSON object, no newline). */
typedef void (*control_handler)(void *arg, const char *line, char *reply, size_t len);

/* Listen on path in base's loop. A stale socket there (nobody answers) is
 * replaced; a live one, or anything that is not a socket, is refused.
 * 0, or -errno with err set. */
int control_listen(struct event_base *base, const char *path, control_handler handler, void *arg,
		   struct control **out, char *err, size_t errlen);
/* Stop listening and remove the socket (after the loop stopped: open
 * connections are the base's, freed with it). NULL is fine. */
void control_close(struct control *c);

/* Client: send line to the socket at path, the answer into reply (without
 * its newline), waiting at most timeout_ms. 0, or -errno with err set. */
int control_ask(const char *path, const char *line, char *reply, size_t len, int timeout_ms,
		char *err, size_t errlen);

#endif
