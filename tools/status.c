/* status.c - see status.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "control.h"
#include "journal.h"
#include "rmig.h"
#include "status.h"

#define ASK_TIMEOUT_MS 3000
#define BAR_WIDTH 20 /* the progress line's bar, in characters */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void status_fmt_bytes(char *out, size_t len, double b)
{
	const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;

	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(out, len, "%.1f %s", b, unit[i]);
}

void status_sample(struct status_view *v)
{
	struct rmig_status st = { .size = sizeof(st) };
	int64_t now = mono_ms();

	if (rmig_status_get(v->ctx, &st))
		return;
	if (v->last_ms && now > v->last_ms && st.transferred >= v->last_bytes) {
		double r =
		    (double)(st.transferred - v->last_bytes) * 1000.0 / (double)(now - v->last_ms);

		v->rate = v->rate ? 0.5 * v->rate + 0.5 * r : r; /* ticks are short: smooth */
		if (v->rate < 1)
			v->rate = 0;
	}
	v->last_bytes = st.transferred;
	v->last_ms = now;
}

/* Percent done and ms left, source only (the destination does not know
 * what is still to come); -1 where unknown. */
static void outlook(const struct status_view *v, const struct rmig_status *st, double *pct,
		    double *eta_ms)
{
	*pct = -1;
	*eta_ms = -1;
	if (!v->send)
		return;
	*pct = st->transferred + st->remaining
		   ? 100.0 * (double)st->transferred / (double)(st->transferred + st->remaining)
		   : 0;
	if (v->rate >= 1024) /* below that the link stalls: no estimate */
		*eta_ms = (double)st->remaining / v->rate * 1000.0;
}

void status_json(const struct status_view *v, char *out, size_t len)
{
	struct rmig_status st = { .size = sizeof(st) };
	double pct, eta;

	rmig_status_get(v->ctx, &st);
	outlook(v, &st, &pct, &eta);
	snprintf(
	    out, len,
	    "{\"phase\":\"%s\",\"round\":%u,\"transferred\":%llu,\"remaining\":%llu,"
	    "\"total\":%llu,\"percent\":%.1f,\"rate\":%.0f,\"mbps\":%.1f,\"dirty_rate\":%.0f,"
	    "\"expected_downtime_ms\":%.1f,\"elapsed_ms\":%llu,\"setup_ms\":%llu,\"eta_ms\":%.0f,"
	    "\"max_bandwidth\":%llu,\"downtime_ms\":%u,\"pages\":%llu,\"zero_pages\":%llu,"
	    "\"precopy_bytes\":%llu,\"downtime_bytes\":%llu,\"postcopy_bytes\":%llu",
	    st.phase, st.round, (unsigned long long)st.transferred,
	    (unsigned long long)st.remaining, (unsigned long long)st.total, pct, v->rate,
	    v->rate * 8 / 1e6, st.dirty_rate, st.expected_downtime_ms,
	    (unsigned long long)st.elapsed_ms, (unsigned long long)st.setup_ms, eta,
	    (unsigned long long)st.max_bandwidth, st.downtime_ms, (unsigned long long)st.pages,
	    (unsigned long long)st.zero_pages, (unsigned long long)st.precopy_bytes,
	    (unsigned long long)st.downtime_bytes, (unsigned long long)st.postcopy_bytes);
}

void status_text(const struct status_view *v, char *out, size_t len)
{
	struct rmig_status st = { .size = sizeof(st) };
	char moved[32], total[32], rate[32], tail[128] = "";
	double pct, eta;

	rmig_status_get(v->ctx, &st);
	outlook(v, &st, &pct, &eta);
	status_fmt_bytes(moved, sizeof(moved), (double)st.transferred);
	status_fmt_bytes(total, sizeof(total), (double)st.total);
	status_fmt_bytes(rate, sizeof(rate), v->rate);
	if (pct >= 0) {
		char bar[BAR_WIDTH + 1];
		int full = (int)(pct / 100 * BAR_WIDTH + 0.5);

		for (int i = 0; i < BAR_WIDTH; i++)
			bar[i] = i < full ? '#' : '-';
		bar[BAR_WIDTH] = 0;
		snprintf(tail, sizeof(tail),
			 " | [%s] %3.0f%% | ETA %s%.1f s | expected downtime %.0f ms", bar, pct,
			 eta < 0 ? "? " : "", eta < 0 ? 0 : eta / 1000, st.expected_downtime_ms);
	}
	snprintf(out, len, "%s round %u | %s %s of %s | %s/s | dirty %.0f pages/s | %.1f s%s",
		 st.phase, st.round, v->send ? "sent" : "received", moved, total, rate,
		 st.dirty_rate, (double)st.elapsed_ms / 1000, tail);
}

/* What a client sent, fit to be echoed inside a JSON string: letters,
 * digits and . _ - only. */
static const char *safe(const char *in, char *out, size_t len)
{
	size_t i = 0;

	for (; in[i] && i + 1 < len; i++)
		out[i] = (strchr("._-", in[i]) || (in[i] >= '0' && in[i] <= '9') ||
			  ((in[i] | 0x20) >= 'a' && (in[i] | 0x20) <= 'z'))
			     ? in[i]
			     : '?';
	out[i] = 0;
	return out;
}

/* set KEY VALUE on the migrating side. */
static void control_set(struct status_view *v, const char *key, const char *val, char *reply,
			size_t len)
{
	uint64_t n = 0;
	char k[64], x[64];
	int rc;

	if (!v->send) {
		snprintf(reply, len, "{\"error\":\"set: the limits are the sending side's\"}");
		return;
	}
	if (!strcmp(key, "max-bandwidth")) {
		rc = strcmp(val, "0") && strcmp(val, "none") ? rmig_parse_size(val, &n) : 0;
		rc = rc ? rc : rmig_set_max_bandwidth(v->ctx, n);
	} else if (!strcmp(key, "downtime-ms")) {
		char *end;
		unsigned long ms = strtoul(val, &end, 10);

		rc = end == val || *end || *val < '0' || *val > '9' || ms > 3600000
			 ? -EINVAL
			 : rmig_set_downtime_ms(v->ctx, (unsigned)ms);
	} else {
		snprintf(reply, len,
			 "{\"error\":\"cannot set '%s': max-bandwidth or downtime-ms\"}",
			 safe(key, k, sizeof(k)));
		return;
	}
	if (rc)
		snprintf(reply, len, "{\"error\":\"%s: '%s' is not a valid value\"}", key,
			 safe(val, x, sizeof(x)));
	else
		snprintf(reply, len, "{\"ok\":true,\"%s\":\"%s\"}", key, safe(val, x, sizeof(x)));
}

/* cancel: as SIGINT would, and refused where the library ignores it
 * (post-copy under way: stopping could only lose the guest). */
static void control_cancel(struct status_view *v, char *reply, size_t len)
{
	struct rmig_status st = { .size = sizeof(st) };

	rmig_status_get(v->ctx, &st);
	if (!strcmp(st.phase, "post-copy") || !strcmp(st.phase, "recovering") ||
	    (v->postcopy && !strcmp(st.phase, "awaiting-started"))) {
		snprintf(reply, len,
			 "{\"error\":\"too late: post-copy is under way, stopping now "
			 "would lose the guest\"}");
		return;
	}
	rmig_cancel(v->ctx);
	snprintf(reply, len, "{\"ok\":true,\"cancel\":\"asked: rolling back\"}");
}

/* postcopy: switch over to post-copy at the round's end (QEMU's
 * migrate-start-postcopy). */
static void control_postcopy(struct status_view *v, char *reply, size_t len)
{
	int rc = v->send ? rmig_start_postcopy(v->ctx) : -EPERM;

	if (rc == -EPERM)
		snprintf(reply, len,
			 "{\"error\":\"postcopy: the switch-over is the sending side's\"}");
	else if (rc == -EINVAL)
		snprintf(reply, len,
			 "{\"error\":\"postcopy: this migration was not started with --postcopy "
			 "(the destination is not ready for it)\"}");
	else if (rc)
		snprintf(reply, len, "{\"error\":\"postcopy: too late, pre-copy is over\"}");
	else
		snprintf(reply, len,
			 "{\"ok\":true,\"postcopy\":\"asked: switching over when the round "
			 "ends\"}");
}

/* Split line into at most 3 words of at most 63 bytes; -1 if it has more,
 * or a longer one. */
static int words(const char *line, char w[3][64])
{
	int n = 0;

	while (*line) {
		size_t len = strcspn(line, " \t");

		if (len && (n == 3 || len >= 64))
			return -1;
		if (len)
			snprintf(w[n++], 64, "%.*s", (int)len, line);
		line += len + (line[len] != 0);
	}
	return n;
}

void status_control(void *arg, const char *line, char *reply, size_t len)
{
	struct status_view *v = arg;
	char w[3][64] = { "", "", "" };
	int n = words(line, w);
	const char *cmd = w[0], *key = w[1], *val = w[2];

	if (n < 0) {
		snprintf(reply, len, "{\"error\":\"a command is at most 3 words of 63 bytes\"}");
	} else if (n == 1 && !strcmp(cmd, "status")) {
		size_t used;

		status_json(v, reply, len);
		used = strlen(reply);
		snprintf(reply + used, len - used, "}");
	} else if (n == 1 && !strcmp(cmd, "cancel")) {
		control_cancel(v, reply, len);
	} else if (n == 1 && !strcmp(cmd, "postcopy")) {
		control_postcopy(v, reply, len);
	} else if (n == 3 && !strcmp(cmd, "set")) {
		control_set(v, key, val, reply, len);
	} else {
		char c[64];

		snprintf(reply, len,
			 "{\"error\":\"unknown command '%s': status, set KEY VALUE, postcopy, or "
			 "cancel\"}",
			 safe(cmd, c, sizeof(c)));
	}
}

/* The answer to status as the one line a person reads. */
static void print_status(const char *reply)
{
	json_error_t jerr;
	json_t *j = json_loads(reply, 0, &jerr);
	char moved[32], total[32], rate[32];
	double pct;

	if (!j || !json_is_object(j)) {
		printf("%s\n", reply);
		json_decref(j);
		return;
	}
	status_fmt_bytes(moved, sizeof(moved),
			 json_number_value(json_object_get(j, "transferred")));
	status_fmt_bytes(total, sizeof(total), json_number_value(json_object_get(j, "total")));
	status_fmt_bytes(rate, sizeof(rate), json_number_value(json_object_get(j, "rate")));
	pct = json_number_value(json_object_get(j, "percent"));
	printf("%s, round %lld: %s of %s moved%s%.0f%s at %s/s, expected downtime %.0f ms, "
	       "elapsed %.1f s (setup %.1f s)\n",
	       json_string_value(json_object_get(j, "phase")) ?: "?",
	       (long long)json_integer_value(json_object_get(j, "round")), moved, total,
	       pct >= 0 ? " (" : "", pct >= 0 ? pct : 0, pct >= 0 ? "%)" : "", rate,
	       json_number_value(json_object_get(j, "expected_downtime_ms")),
	       json_number_value(json_object_get(j, "elapsed_ms")) / 1000,
	       json_number_value(json_object_get(j, "setup_ms")) / 1000);
	json_decref(j);
}

int status_client(int argc, char *argv[])
{
	const char *cmd = argv[0];
	char line[16384], reply[2048], err[256];
	int json = argc == 3 && !strcmp(cmd, "status") && !strcmp(argv[2], "--json");
	int ok = (!strcmp(cmd, "status") && (argc == 2 || json)) ||
		 ((!strcmp(cmd, "cancel") || !strcmp(cmd, "postcopy")) && argc == 2) ||
		 (!strcmp(cmd, "set") && argc == 4);

	if (!ok) {
		journal_line(LOG_ERR,
			     "usage: rmig status PATH [--json] | rmig set PATH max-bandwidth "
			     "RATE|downtime-ms MS | rmig postcopy PATH | rmig cancel PATH\n");
		return 2;
	}
	if (!strcmp(cmd, "set"))
		snprintf(line, sizeof(line), "set %s %s", argv[2], argv[3]);
	else
		snprintf(line, sizeof(line), "%s", cmd);
	if (control_ask(argv[1], line, reply, sizeof(reply), ASK_TIMEOUT_MS, err, sizeof(err))) {
		journal_line(LOG_ERR, "rmig: %s\n", err);
		return 1;
	}
	if (strstr(reply, "\"error\"")) {
		journal_line(LOG_ERR, "rmig: %s\n", reply);
		return 1;
	}
	if (!strcmp(cmd, "status") && !json)
		print_status(reply);
	else
		printf("%s\n", reply);
	return 0;
}
