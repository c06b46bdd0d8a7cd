/* records.c - see records.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "journal.h"
#include "records.h"
#include "status.h"

#define MAX_RECORDS 10000 /* history lists at most this many */

struct record {
	FILE *file; /* the record */
	FILE *also; /* stdout with --json, or NULL */
	FILE *tee;  /* what the tool writes to */
	char path[4096];
};

static atomic_uint count;

struct record *record_open(const char *dir, const char *role, char *err, size_t errlen)
{
	struct record *r = calloc(1, sizeof(*r));
	struct timespec now;
	struct tm tm;
	char stamp[32];
	int fd;

	if (!r) {
		snprintf(err, errlen, "--record: out of memory");
		return NULL;
	}
	if (mkdir(dir, 0700) && errno != EEXIST) {
		snprintf(err, errlen, "--record %s: cannot make the directory: %s", dir,
			 strerror(errno));
		free(r);
		return NULL;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
	/* The count keeps names apart when sessions of one process begin in the
	 * same millisecond. */
	snprintf(r->path, sizeof(r->path), "%s/%s.%03ldZ-%s-%ld-%u.json", dir, stamp,
		 now.tv_nsec / 1000000, role, (long)getpid(), atomic_fetch_add(&count, 1));
	fd = open(r->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	r->file = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!r->file) {
		snprintf(err, errlen, "--record: cannot create %s: %s", r->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(r);
		return NULL;
	}
	return r;
}

static ssize_t tee_write(void *cookie, const char *buf, size_t len)
{
	struct record *r = cookie;

	fwrite(buf, 1, len, r->file);
	fflush(r->file);
	if (r->also) {
		fwrite(buf, 1, len, r->also);
		fflush(r->also);
	}
	return (ssize_t)len;
}

FILE *record_stream(struct record *r, FILE *also)
{
	cookie_io_functions_t io = { .write = tee_write };

	if (r->tee)
		return r->tee;
	r->also = also;
	r->tee = fopencookie(r, "w", io);
	if (r->tee)
		setvbuf(r->tee, NULL, _IOLBF, 0);
	return r->tee ? r->tee : r->file; /* without the tee: the record alone */
}

void record_discard(struct record *r)
{
	if (r)
		unlink(r->path);
	record_close(r);
}

void record_close(struct record *r)
{
	if (!r)
		return;
	if (r->tee)
		fclose(r->tee);
	fclose(r->file);
	free(r);
}

/* ---- rmig history ---- */

static int json_name(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && !strcmp(d->d_name + n - 5, ".json");
}

/* What a record says: its first time stamp, the peer, and the summary
 * (NULL if the migration never ended: rmig was killed). */
struct seen {
	long long ts;
	char peer[64];
	json_t *summary;
};

static void read_record(const char *path, struct seen *s)
{
	FILE *f = fopen(path, "r");
	char line[8192];

	memset(s, 0, sizeof(*s));
	while (f && fgets(line, sizeof(line), f)) {
		json_t *j = json_loads(line, 0, NULL);
		const char *ev = json_string_value(json_object_get(j, "event"));

		if (j && !s->ts)
			s->ts = (long long)json_integer_value(json_object_get(j, "ts"));
		if (ev && !strcmp(ev, "connected"))
			snprintf(s->peer, sizeof(s->peer), "%s",
				 json_string_value(json_object_get(j, "peer")) ?: "?");
		if (ev && !strcmp(ev, "summary")) {
			json_decref(s->summary);
			s->summary = json_incref(j);
		}
		json_decref(j);
	}
	if (f)
		fclose(f);
}

static void print_seen(const char *name, const struct seen *s)
{
	json_t *m = s->summary;
	time_t t = (time_t)(s->ts / 1000);
	struct tm tm;
	char when[32] = "?", size[32] = "?";

	if (s->ts && gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
	if (m)
		status_fmt_bytes(size, sizeof(size),
				 (double)json_integer_value(json_object_get(m, "guest_bytes")));
	printf("%-20s  %-11s  %-21s  %10s  %-12s  %8lld  %8lld  %s\n", when,
	       m ? json_string_value(json_object_get(m, "role")) ?: "?" : "?",
	       s->peer[0] ? s->peer : "-", size,
	       m ? json_string_value(json_object_get(m, "result")) ?: "?" : "incomplete",
	       m ? (long long)json_integer_value(json_object_get(m, "total_ms")) : -1,
	       m ? (long long)json_integer_value(json_object_get(m, "downtime_ms")) : -1, name);
}

int history_command(int argc, char *argv[])
{
	struct dirent **list = NULL;
	int n;

	if (argc != 2) {
		journal_line(LOG_ERR, "usage: rmig history DIR\n");
		return 2;
	}
	n = scandir(argv[1], &list, json_name, alphasort); /* names start with the time */
	if (n < 0) {
		journal_line(LOG_ERR, "rmig: history %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("%-20s  %-11s  %-21s  %10s  %-12s  %8s  %8s  %s\n", "when (UTC)", "role", "peer",
	       "guest", "result", "total ms", "down ms", "record");
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct seen s;

		if (i < MAX_RECORDS) {
			snprintf(path, sizeof(path), "%s/%s", argv[1], list[i]->d_name);
			read_record(path, &s);
			print_seen(list[i]->d_name, &s);
			json_decref(s.summary);
		}
		free(list[i]);
	}
	free(list);
	return 0;
}
