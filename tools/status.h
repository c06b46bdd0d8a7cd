/* status.h - a running migration's status for people and programs: the
 * figures as a JSON object (progress events, control-socket answers) and
 * as one line of text (the terminal's progress line, rmig status), the
 * control socket's commands on the migrating side (status, set, cancel)
 * and the commands that ask them (rmig status|set|cancel PATH). */
#ifndef RMIG_TOOL_STATUS_H
#define RMIG_TOOL_STATUS_H

#include <stddef.h>
#include <stdint.h>

struct rmig_ctx;

/* One migration seen from the tool's event loop: the context and the rate
 * sampled on the loop's ticks. Used on the loop thread only. */
struct status_view {
	struct rmig_ctx *ctx;
	int send;
	int postcopy; /* send --postcopy: a cancel is refused once it began */
	uint64_t last_bytes;
	int64_t last_ms;
	double rate; /* bytes/s moved, smoothed over the ticks */
};

void status_sample(struct status_view *v);
/* {"phase":...} without a closing brace, so that a caller may add fields. */
void status_json(const struct status_view *v, char *out, size_t len);
void status_text(const struct status_view *v, char *out, size_t len);
/* The control socket's handler (arg: a struct status_view). */
void status_control(void *arg, const char *line, char *reply, size_t len);
/* rmig status|set|cancel PATH ...: argv[0] is the command. */
int status_client(int argc, char *argv[]);

void status_fmt_bytes(char *out, size_t len, double bytes);

#endif
