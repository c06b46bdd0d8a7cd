/* rmig - command-line front end: rmig send / recv / bench / info / help,
 * dispatched from the subcommands table at the end.
 *
 * The migration runs on the main thread; a libevent loop on a second thread
 * handles SIGINT/SIGTERM (cancel: roll back) and redraws the progress line.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <syslog.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "info.h"
#include "journal.h"
#include "records.h"
#include "rmig_backend.h"
#include "status.h"
#include "tunnel.h"

static const char usage_text[] =
    "usage: rmig send [options] HOST[:PORT]\n"
    "       rmig recv --listen ADDR[:PORT] [options]\n"
    "       rmig bench [options] [--seconds N] [--size SIZE] HOST[:PORT]\n"
    "       rmig info\n"
    "       rmig status PATH [--json] | rmig set PATH max-bandwidth RATE|downtime-ms MS\n"
    "       rmig postcopy PATH | rmig cancel PATH   (a running rmig started with --control PATH)\n"
    "       rmig history DIR          (migrations recorded with --record DIR)\n"
    "       rmig tunnel send HOST[:PORT] --expose NAME=PATH... [--psk-file F|--tls-creds DIR]\n"
    "       rmig tunnel recv --listen ADDR[:PORT] --forward NAME=PATH... [--psk-file F|...]\n"
    "       rmig help | rmig --version\n"
    "\n"
    "Live-migrate a guest's memory from `rmig send` to `rmig recv`.\n"
    "\n"
    "common options:\n"
    "  -b, --backend SPEC      guest backend (default sim; see below)\n"
    "  --disks[=ID,...]        both sides: also migrate the guest's local disks, all\n"
    "                          writable ones or those named (the backend's disks=\n"
    "                          option: qemu:...,disks=all)\n"
    "  -p, --port PORT         the port when HOST[:PORT] or --listen names none (7471)\n"

    "  --control PATH          unix socket (0600) for rmig status/set/postcopy/cancel while\n"
    "                          this migration runs\n"
    "  --record DIR            keep a JSON record of this migration in DIR (rmig history DIR)\n"
    "  --timeout SEC           send: pre-copy for at most SEC seconds, then --on-no-converge\n"
    "                          at once (force or throttle: switch over; abort: roll back)\n"
    "  --transport LIST        auto, or links to try in order: rdma, tcp, rdma,tcp\n"
    "                          (default auto: rdma if a device reaches the peer,\n"
    "                          else tcp; rmig info lists them)\n"
    "  --pin MODE              rdma: auto|all|staging (default auto: register guest\n"
    "                          memory for zero-copy WRITE, else pinned staging buffers)\n"
    "  -d, --device DEV        rdma device, e.g. rxe0 (default: the one routing to the peer)\n"
    "  -x, --gid-index N       RoCE GID index (default: automatic)\n"
    "  --rails auto|DEV[@NODE],...  rdma, both sides: each NUMA node's channels on\n"
    "                          the device local to it (auto: sysfs numa_node; @NODE\n"
    "                          where sysfs has none, as for rxe); a lost rail's\n"
    "                          channels move to another rail (default: one device)\n"
    "  --channels N            parallel data streams, 1..64 (default 2)\n"
    "  -j, --json              one JSON object per line on stdout\n"
    "  --link-timeout-ms N     a peer silent this long is lost (default 2000);\n"
    "                          heartbeats go 4 times as often\n"
    "  --psk-file FILE         pre-shared key (16..1024 bytes, mode 0600): both sides\n"
    "                          prove they hold it before anything is sent\n"
    "  --insecure              without --psk-file, accept non-loopback peers\n"
    "  --tls                   encrypt every stream with TLS 1.3 (needs --psk-file or\n"
    "                          --tls-creds); on by default with credentials and a peer\n"
    "                          not on loopback\n"
    "  --no-tls                never encrypt (a trusted fabric; both sides must say so)\n"
    "  --tls-creds DIR         x509 credentials in QEMU's layout: ca-cert.pem, and\n"
    "                          server-cert.pem + server-key.pem (recv) or\n"
    "                          client-cert.pem + client-key.pem (send)\n"
    "  --tls-hostname NAME     send: the name the receiver's certificate must carry\n"
    "                          (default: the host connected to)\n"
    "  --failover tcp|none     link lost in pre-copy: resume over TCP (default; or\n"
    "                          name another link) or roll back; the receiver waits\n"
    "                          for the resume\n"
    "  --failover-timeout-ms N how long to re-establish the link (default 10000)\n"
    "  --commit-timeout-ms N   link lost after GO: how long the sender asks, and the\n"
    "                          receiver waits to answer, whether the guest started;\n"
    "                          the receiver also waits no longer for GO after READY,\n"
    "                          even if the sender sends heartbeats (default 10000)\n"
    "send options:\n"
    "  --downtime-ms N         switch over when expected downtime <= N (default 300)\n"
    "  --max-rounds N          pre-copy rounds before --on-no-converge (default 30)\n"
    "  --on-no-converge P      throttle|force|abort (default throttle)\n"
    "  --max-bandwidth RATE    bytes/s, K/M/G suffixes, e.g. 50M (default unlimited)\n"
    "  --verify[=on|full|off]  on (the default): digests of every page as it moves,\n"
    "                          compared at the pause (a page corrupted in flight or\n"
    "                          lost rolls back), then, with the guest running at the\n"
    "                          destination, an audit of the source's memory against\n"
    "                          what was sent (a difference: exit 5); full: all memory\n"
    "                          digested on both sides during the pause, a mismatch\n"
    "                          rolls back; off: none (also --no-verify)\n"
    "  --dry-run               a preflight: connect, authenticate, the receiver checks\n"
    "                          the guest's layout, memory and disks and takes nothing,\n"
    "                          a probe of about a second measures the link and the\n"
    "                          guest's dirty rate; says whether it would fit and\n"
    "                          converge (exit 0) or why not (exit 1). The guest is\n"
    "                          never paused; the receiver serves it, then waits for\n"
    "                          the migration itself\n"
    "  --postcopy              switch over by post-copy: the destination starts the\n"
    "                          guest at once and fetches each missing page when it is\n"
    "                          touched, the rest streams in; implies --no-verify. A\n"
    "                          failure before the last page loses the guest (exit 4)\n"
    "  --resume-source         after exit code 4, once the destination is known not to\n"
    "                          run the guest: resume the paused source guest\n"
    "bench: the data path alone. Against a plain `rmig recv`, sends a static\n"
    "  buffer (--size, default 256M, no zero pages) again and again for --seconds\n"
    "  (default 5), reports the bandwidth, then finishes as a migration.\n"
    "recv options:\n"
    "  --listen ADDR[:PORT]    where to listen (port 0: any free port)\n"
    "  --accept-timeout-ms N   give up if no sender connects in time (default: wait)\n"
    "  --stall-timeout-ms N    end a migration whose sender, alive, sends no data and\n"
    "                          ends no round for N ms in pre-copy (default 30000)\n"
    "  --keep-listening        serve migrations until SIGINT/SIGTERM, each into a\n"
    "                          fresh backend, with a summary line each\n"
    "  --max-sessions N        with --keep-listening: serve up to N at once (default\n"
    "                          4); a sender beyond that is refused as busy\n"
    "  --handshake-timeout-ms N  a connection that has not proved itself (HELLO and\n"
    "                          key) within N ms is cut (default 5000)\n"
    "  --prealloc              fault in all guest memory before the first page comes\n"
    "                          (as QEMU's -mem-prealloc): refuse at once if the host or\n"
    "                          cgroup lacks it; round 1 then runs at the link's speed\n"
    "tunnel options (carry UNIX-socket connections, e.g. libvirt's, to the peer;\n"
    "default port 7472; without --psk-file or --tls-creds, loopback peers only):\n"
    "  --expose NAME=PATH      send: listen on UNIX socket PATH (mode 0600) and carry\n"
    "                          each connection to the receiver's NAME\n"
    "  --forward NAME=PATH     recv: connect each stream for NAME to UNIX socket PATH;\n"
    "                          a name not forwarded is refused\n"
    "\n"
    "backends:\n"
    "  sim[:size=1G,dirty-rate=20000,hot=10%,zero=50%,seed=7,regions=1]\n"
    "      a synthetic guest; on the receiving side just `sim` (`sim:overcommit=1`:\n"
    "      take a guest larger than RAM + swap, e.g. a sparse one).\n"
    "  uffd[:size=256M,dirty-rate=5000,...]  (the sim options)\n"
    "      a sim guest whose writes the kernel tracks (userfaultfd + PAGEMAP_SCAN,\n"
    "      Linux 6.7+); on the receiving side `uffd`, `uffd:size=SIZE` or `sim`.\n"
    "  kvm:size=SIZE[,slots=N,dirty-rate=PAGES_PER_S]\n"
    "      a KVM VM rmig makes itself (needs /dev/kvm), for testing the KVM dirty\n"
    "      log; dirty-rate adds a vCPU that writes. Receive with `kvm`.\n"
    "  xen:domid=N\n"
    "      a running Xen HVM/PVH domain, from dom0; send only (if built with\n"
    "      libxen-dev).\n"
    "  qemu:qmp=PATH[,timeout=MS]\n"
    "      a running QEMU, migrated by QEMU itself through rmig: the destination\n"
    "      QEMU runs with -S -incoming defer and gets `cont` at the commit.\n"
    "\n"
    "default port 7471. exit codes:\n"
    "  0 migrated            the destination runs the guest\n"
    "  1 failed              the migration could not start; the source still runs\n"
    "  2 usage error\n"
    "  3 rolled back         abandoned part-way; the source guest resumed and runs\n"
    "  4 outcome unknown     link lost after GO; the source stays paused\n"
    "                        (post-copy failed after GO: the guest is lost)\n"
    "  1 also: send --dry-run: it would not fit or not converge (the reason is said)\n"
    "  5 audit failed        send: migrated, the destination runs the guest, but the\n"
    "                        audit found the source's memory at the pause differs\n"
    "                        from what was sent (the backend's dirty log missed writes)\n";

struct tool {
	struct rmig_ctx *ctx;
	struct rmig_backend *be;
	int json;
	int progress_line; /* stderr is a terminal */
	int role_send;
	int postcopy;	     /* send --postcopy */
	int bench;	     /* rmig bench: report the resend rounds' bandwidth */
	int stopping;	     /* --keep-listening: a signal ends the loop */
	double cpu_s;	     /* CPU time the process spent in the last migration */
	const char *hold_at; /* RMIG_TEST_HOLD=NAME:MS (tests): block the engine */
	unsigned hold_ms;
	struct event_base *base;
	struct event *events[4]; /* SIGINT, SIGTERM, progress tick, quit */
	pthread_t loop_thread;
	int loop_started;
	atomic_int loop_quit; /* stop_loop: a break before the loop runs is lost */
	pthread_mutex_t out_lock;
	pthread_mutex_t *out; /* the out_lock every thread's lines share */
	/* recv --keep-listening: the sessions, each a struct tool of its own
	 * (ctx and be) serving one migration after another from lst. */
	struct rmig_listener *lst;
	struct tool *workers;
	unsigned nworkers;
	pthread_mutex_t *ctx_lock; /* a worker's ctx, as the signal handler sees it */
	const char *backend_spec;
	const struct rmig_config *cfg;
	struct rmig_config worker_cfg; /* a worker's: its own event_arg */
	int failed;		       /* a worker could not go on (its backend) */
	unsigned session;	       /* --keep-listening: this worker's number, from 1 */
	struct status_view view;       /* the loop thread's: rate sampled on ticks */
	unsigned ticks;
	atomic_int running; /* inside rmig_send/rmig_recv */
	struct control *control;
	/* Where JSON lines go: stdout (--json), the record (--record), both
	 * (records.c's tee), or nowhere (NULL). */
	FILE *jout;
	struct record *record;
	const char *record_dir; /* --keep-listening: a record per migration */
	char peer[128];		/* the last peer connected */
};

/* A JSON line: `{` then, when several sessions share the output, which
 * one it is ("session":N), then the rest of fmt (which starts with `{`). */
__attribute__((format(printf, 2, 3))) static void jprintf(const struct tool *t, const char *fmt,
							  ...)
{
	va_list ap;
	struct timespec now;

	/* Every line says when: wall-clock milliseconds since the epoch. */
	clock_gettime(CLOCK_REALTIME, &now);
	fprintf(t->jout, "{\"ts\":%lld,", (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
	if (t->session)
		fprintf(t->jout, "\"session\":%u,", t->session);
	va_start(ap, fmt);
	vfprintf(t->jout, fmt + 1, ap);
	va_end(ap);
}

/* An error line outside a migration (options, setup). */
#define errline(...) journal_line(LOG_ERR, __VA_ARGS__)

/* A line on stderr at a syslog priority: "rmig: ..." becomes "rmig[N]: ..."
 * when several sessions share the output (fmt starts with "rmig: "). */
__attribute__((format(printf, 3, 4))) static void eprintf(const struct tool *t, int prio,
							  const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt + strlen("rmig: "), ap);
	va_end(ap);
	if (t->session)
		journal_line(prio, "rmig[%u]: %s", t->session, line);
	else
		journal_line(prio, "rmig: %s", line);
}

__attribute__((noreturn, format(printf, 1, 2))) static void die_usage(const char *fmt, ...)
{
	char what[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	errline("rmig: %s (see rmig help)\n", what);
	exit(RMIG_RESULT_USAGE);
}

/* --verify[=on|full|off]. */
static int parse_verify(const char *v)
{
	if (!v || !strcmp(v, "on"))
		return RMIG_VERIFY_ON;
	if (!strcmp(v, "full"))
		return RMIG_VERIFY_FULL;
	if (!strcmp(v, "off"))
		return RMIG_VERIFY_OFF;
	die_usage("--verify: '%s' is not on, full or off", v);
	return RMIG_VERIFY_ON;
}

static unsigned parse_uint(const char *opt, const char *v, unsigned min, unsigned max)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || end == v || *end || *v == '-' || n < min || n > max)
		die_usage("%s: '%s' is not a number in %u..%u", opt, v, min, max);
	return (unsigned)n;
}

/* "host", "host:port", "[v6]:port", "v6" */
static void parse_hostport(const char *arg, char *host, size_t hlen, uint16_t *port)
{
	const char *colon;

	if (arg[0] == '[') {
		const char *end = strchr(arg, ']');

		if (!end || (end[1] && end[1] != ':'))
			die_usage("bad address '%s'", arg);
		snprintf(host, hlen, "%.*s", (int)(end - arg - 1), arg + 1);
		if (end[1])
			*port = (uint16_t)parse_uint("port", end + 2, 0, 65535);
		return;
	}
	colon = strchr(arg, ':');
	if (colon && !strchr(colon + 1, ':')) {
		snprintf(host, hlen, "%.*s", (int)(colon - arg), arg);
		*port = (uint16_t)parse_uint("port", colon + 1, 0, 65535);
	} else {
		snprintf(host, hlen, "%s", arg);
	}
	if (!host[0])
		die_usage("bad address '%s'", arg);
}

/* --listen: [ADDR]:PORT, ADDR[:PORT], or as QEMU's -incoming tcp::PORT,
 * :PORT or PORT alone for every address (0.0.0.0). */
static void parse_listen(const char *arg, char *host, size_t hlen, uint16_t *port)
{
	if (arg[0] == ':' || (arg[0] && strspn(arg, "0123456789") == strlen(arg))) {
		snprintf(host, hlen, "0.0.0.0");
		*port = (uint16_t)parse_uint("port", arg + (arg[0] == ':'), 0, 65535);
		return;
	}
	parse_hostport(arg, host, hlen, port);
}

static void clear_progress(struct tool *t)
{
	if (t->progress_line)
		fprintf(stderr, "\r\033[K");
}

/* The library names configuration fields ("config.psk"); the operator
 * typed flags. Every library message printed goes through cli_text. */
static const struct {
	const char *field, *flag;
} field_flags[] = {
	{ "config.psk", "--psk-file" },
	{ "config.psk_len", "--psk-file" },
	{ "config.insecure", "--insecure" },
	{ "config.tls", "--tls" },
	{ "config.tls on", "--tls" },
	{ "config.tls off", "--no-tls" },
	{ "config.tls_creds", "--tls-creds" },
	{ "config.tls_hostname", "--tls-hostname" },
	{ "config.pin=all", "--pin=all" },
	{ "config.pin=staging", "--pin=staging" },
	{ "config.pin=auto", "--pin=auto" },
	{ "config.pin", "--pin" },
	{ "config.prealloc", "--prealloc" },
	{ "config.verify", "--verify" },
	{ "config.postcopy", "--postcopy" },
	{ "config.backend", "--backend" },
	{ "config.transport", "--transport" },
	{ "config.transport=auto", "--transport auto" },
	{ "config.failover", "--failover" },
	{ "config.failover_transport", "--failover" },
	{ "config.device", "--device" },
	{ "config.gid_index", "--gid-index" },
	{ "config.channels", "--channels" },
	{ "config.max_rounds", "--max-rounds" },
	{ "config.downtime_ms", "--downtime-ms" },
	{ "config.max_bandwidth", "--max-bandwidth" },
	{ "config.timeout_ms", "--timeout" },
	{ "config.on_no_converge", "--on-no-converge" },
	{ "config.link_timeout_ms", "--link-timeout-ms" },
	{ "config.failover_timeout_ms", "--failover-timeout-ms" },
	{ "config.commit_timeout_ms", "--commit-timeout-ms" },
	{ "config.accept_timeout_ms", "--accept-timeout-ms" },
	{ "config.stall_timeout_ms", "--stall-timeout-ms" },
	{ "config.bench_ms", "--seconds" },
	{ "config.handshake_timeout_ms", "--handshake-timeout-ms" },
};

static int field_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

/* msg with each config.FIELD[=VALUE] the table knows replaced by its flag
 * (the longest match at each place), in buf. */
static const char *cli_text(const char *msg, char *buf, size_t len)
{
	size_t used = 0;

	if (!msg || !len)
		return msg;
	while (*msg && used + 1 < len) {
		size_t best = 0, bi = 0;

		for (size_t i = 0; i < sizeof(field_flags) / sizeof(field_flags[0]); i++) {
			size_t n = strlen(field_flags[i].field);

			if (n > best && !strncmp(msg, field_flags[i].field, n) &&
			    !field_char(msg[n]))
				best = n, bi = i;
		}
		if (best) {
			used +=
			    (size_t)snprintf(buf + used, len - used, "%s", field_flags[bi].flag);
			msg += best;
		} else {
			buf[used++] = *msg++;
		}
	}
	buf[used < len ? used : len - 1] = 0;
	return buf;
}

/* ,"key":"value" with value JSON-escaped (messages may quote peers' text). */
static void print_json_field(FILE *f, const char *key, const char *value)
{
	char text[1024];

	value = cli_text(value, text, sizeof(text));
	fprintf(f, ",\"%s\":\"", key);
	for (const char *p = value; *p; p++) {
		if (*p == '"' || *p == '\\')
			fputc('\\', f);
		fputc(*p >= 0x20 && *p < 0x7f ? *p : '?', f);
	}
	fputc('"', f);
}

/* Fault-injection tests (tests/e2e/t_fault_matrix.sh) need the engine to
 * stand still at a known point: RMIG_TEST_HOLD=NAME:MS blocks the engine's
 * thread for MS ms in the event callback of phase NAME (or of the event
 * "connected"), after announcing it. Not for production use. */
static void test_hold(struct tool *t, const struct rmig_event *ev)
{
	const char *name = ev->type == RMIG_EV_PHASE	   ? ev->phase
			   : ev->type == RMIG_EV_CONNECTED ? "connected"
							   : NULL;
	struct timespec ts = { t->hold_ms / 1000, (long)(t->hold_ms % 1000) * 1000000 };

	if (!t->hold_at || !name || strcmp(name, t->hold_at))
		return;
	t->hold_at = NULL; /* once */
	pthread_mutex_lock(t->out);
	if (t->jout) {
		jprintf(t, "{\"event\":\"hold\",\"at\":\"%s\",\"ms\":%u}\n", name, t->hold_ms);
		fflush(t->jout);
	}
	pthread_mutex_unlock(t->out);
	nanosleep(&ts, NULL);
}

static void on_event(void *arg, const struct rmig_event *ev)
{
	struct tool *t = arg;
	char text[1024];
	const char *detail = cli_text(ev->detail, text, sizeof(text));

	pthread_mutex_lock(t->out);
	switch (ev->type) {
	case RMIG_EV_LISTENING:
		if (t->jout)
			jprintf(t, "{\"event\":\"listening\",\"port\":%u}\n", ev->port);
		if (!t->json)
			eprintf(t, LOG_INFO, "rmig: listening on port %u\n", ev->port);
		break;
	case RMIG_EV_CONNECTED:
		snprintf(t->peer, sizeof(t->peer), "%s", ev->peer);
		if (t->jout)
			jprintf(t, "{\"event\":\"connected\",\"peer\":\"%s\"}\n", ev->peer);
		if (!t->json)
			eprintf(t, LOG_INFO, "rmig: connected to %s\n", ev->peer);
		break;
	case RMIG_EV_ROUND: {
		const struct rmig_round_stats *r = ev->round;

		if (t->jout)
			jprintf(
			    t,
			    "{\"event\":\"round\",\"round\":%u,\"pages\":%llu,\"zero_pages\":%llu,"
			    "\"bytes\":%llu,\"ms\":%llu,\"bandwidth\":%.0f,\"dirty_rate\":%.0f,"
			    "\"dirty_pages\":%llu,\"landing_bytes\":%llu,"
			    "\"expected_downtime_ms\":%.1f,\"cpu_us\":%llu}\n",
			    r->round, (unsigned long long)r->pages,
			    (unsigned long long)r->zero_pages, (unsigned long long)r->bytes,
			    (unsigned long long)r->ms, r->bandwidth, r->dirty_rate,
			    (unsigned long long)r->dirty_pages,
			    (unsigned long long)r->landing_bytes, r->expected_downtime_ms,
			    (unsigned long long)r->cpu_us);
		if (!t->json && !t->progress_line && !t->bench) {
			char sent[32], bw[32];

			status_fmt_bytes(sent, sizeof(sent), (double)r->bytes);
			status_fmt_bytes(bw, sizeof(bw), r->bandwidth);
			eprintf(t, LOG_INFO,
				"rmig: round %u: sent %s at %s/s, dirty rate %.0f pages/s, %llu "
				"pages dirty, expected downtime %.0f ms\n",
				r->round, sent, bw, r->dirty_rate,
				(unsigned long long)r->dirty_pages, r->expected_downtime_ms);
		}
		break;
	}
	case RMIG_EV_THROTTLE:
		if (t->jout)
			jprintf(t, "{\"event\":\"throttle\",\"percent\":%u}\n", ev->throttle_pct);
		if (!t->json) {
			clear_progress(t);
			eprintf(t, LOG_NOTICE, "rmig: not converging, guest throttled to %u%%\n",
				100 - ev->throttle_pct);
		}
		break;
	case RMIG_EV_TRANSPORT:
		if (t->jout) {
			jprintf(t, "{\"event\":\"transport\",\"transport\":\"%s\",\"pin\":\"%s\"",
				ev->transport, ev->pin);
			if (ev->detail)
				print_json_field(t->jout, "detail", ev->detail);
			fprintf(t->jout, "}\n");
		}
		if (!t->json) {
			clear_progress(t);
			eprintf(t, LOG_INFO, "rmig: transport %s%s%s%s%s\n", ev->transport,
				strcmp(ev->pin, "none") ? ", pin " : "",
				strcmp(ev->pin, "none") ? ev->pin : "", detail ? " - " : "",
				detail ? detail : "");
		}
		break;
	case RMIG_EV_WARNING:
		if (t->jout) {
			jprintf(t, "{\"event\":\"warning\"");
			print_json_field(t->jout, "detail", ev->detail);
			fprintf(t->jout, "}\n");
		}
		if (!t->json) {
			clear_progress(t);
			eprintf(t, LOG_WARNING, "rmig: warning: %s\n", detail);
		}
		break;
	case RMIG_EV_PHASE:
		if (t->jout)
			jprintf(t, "{\"event\":\"phase\",\"phase\":\"%s\"}\n", ev->phase);
		break;
	case RMIG_EV_FAILOVER:
		if (t->jout) {
			jprintf(t, "{\"event\":\"failover\",\"from\":\"%s\",\"to\":\"%s\"",
				ev->from, ev->transport);
			if (ev->from_rail && ev->to_rail) {
				print_json_field(t->jout, "from_rail", ev->from_rail);
				print_json_field(t->jout, "to_rail", ev->to_rail);
			}
			print_json_field(t->jout, "reason", ev->detail);
			fprintf(t->jout, "}\n");
		}
		if (!t->json) {
			clear_progress(t);
			if (ev->from_rail && ev->to_rail)
				eprintf(t, LOG_WARNING,
					"rmig: failed over from rail %s to rail %s (%s)\n",
					ev->from_rail, ev->to_rail, detail);
			else
				eprintf(t, LOG_WARNING, "rmig: failed over from %s to %s (%s)\n",
					ev->from, ev->transport, detail);
		}
		break;
	case RMIG_EV_AUDIT:
		/* Always on stderr too when it failed: the operator must know. */
		if (t->jout) {
			jprintf(t, "{\"event\":\"audit\"");
			print_json_field(t->jout, "detail", ev->detail);
			fprintf(t->jout, "}\n");
		}
		if (!t->json || strstr(ev->detail, "FAILED")) {
			clear_progress(t);
			eprintf(t, LOG_INFO, "rmig: %s\n", detail);
		}
		break;
	case RMIG_EV_REFUSED:
		/* Always on stderr too: a refused peer is a security log entry. */
		clear_progress(t);
		eprintf(t, LOG_WARNING, "rmig: refused peer %s: %s\n", ev->peer, detail);
		if (t->jout) {
			jprintf(t, "{\"event\":\"refused\"");
			print_json_field(t->jout, "peer", ev->peer);
			print_json_field(t->jout, "reason", ev->detail);
			fprintf(t->jout, "}\n");
		}
		break;
	}
	if (t->jout)
		fflush(t->jout);
	pthread_mutex_unlock(t->out);
	test_hold(t, ev);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct tool *t = arg;
	struct rmig_progress p = { .phase = "idle" };
	int too_late;

	t->stopping = 1;
	(void)what;
	if (t->ctx)
		rmig_progress(t->ctx, &p);
	/* The library ignores it then (rmig_cancel): say so. */
	too_late =
	    !strcmp(p.phase, "post-copy") || (t->postcopy && !strcmp(p.phase, "awaiting-started"));
	pthread_mutex_lock(t->out);
	clear_progress(t);
	eprintf(t, LOG_INFO, "rmig: %s: %s\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
		too_late ? "ignored: post-copy is under way, stopping now would lose the guest"
			 : "cancelling the migration");
	pthread_mutex_unlock(t->out);
	if (t->ctx)
		rmig_cancel(t->ctx);
	for (unsigned i = 0; i < t->nworkers; i++) {
		struct tool *w = &t->workers[i];

		pthread_mutex_lock(t->ctx_lock);
		w->stopping = 1;
		if (w->ctx)
			rmig_cancel(w->ctx);
		pthread_mutex_unlock(t->ctx_lock);
	}
}

/* A migration runs: rmig_send/rmig_recv has not returned (no progress
 * after the summary) and a sender is connected. */
static int migrating(struct tool *t)
{
	struct rmig_status st = { .size = sizeof(st) };

	return atomic_load(&t->running) && !rmig_status_get(t->ctx, &st) && st.elapsed_ms &&
	       strcmp(st.phase, "listening");
}

/* Every tick (250 ms): sample the rate; redraw the terminal's line; with
 * --json, a progress event every other tick. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct tool *t = arg;
	char line[1024];

	(void)fd;
	(void)what;
	if (!t->ctx || !t->view.ctx)
		return;
	status_sample(&t->view);
	if (!migrating(t))
		return;
	if (t->jout && t->ticks++ % 2 == 0) {
		status_json(&t->view, line, sizeof(line));
		pthread_mutex_lock(t->out);
		if (atomic_load(&t->running)) /* not after the summary */
			jprintf(t, "{\"event\":\"progress\",%s}\n", line + 1);
		fflush(t->jout);
		pthread_mutex_unlock(t->out);
	}
	if (t->progress_line) {
		status_text(&t->view, line, sizeof(line));
		pthread_mutex_lock(t->out);
		fprintf(stderr, "\r\033[K%s", line);
		pthread_mutex_unlock(t->out);
	}
}

/* stop_loop activated the quit event: this pass ends here. */
static void on_quit(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* One pass at a time until loop_quit. event_base_loopbreak() from another
 * thread before the loop has started is forgotten when it starts (rmig
 * then never exited, and ignored signals); an activated event is not: the
 * pass that follows runs it, and returns. */
static void *loop_main(void *arg)
{
	struct tool *t = arg;

	while (!atomic_load(&t->loop_quit))
		event_base_loop(t->base, EVLOOP_ONCE);
	return NULL;
}

static int start_loop(struct tool *t)
{
	struct timeval tick = { 0, 250000 };

	evthread_use_pthreads(); /* before the base: event_active from our thread */
	t->base = event_base_new();
	if (!t->base)
		return -ENOMEM;
	t->events[0] = evsignal_new(t->base, SIGINT, on_signal, t);
	t->events[1] = evsignal_new(t->base, SIGTERM, on_signal, t);
	t->events[2] = event_new(t->base, -1, EV_PERSIST, on_tick, t);
	t->events[3] = event_new(t->base, -1, EV_PERSIST, on_quit, t);
	for (int i = 0; i < 4; i++)
		if (!t->events[i] || (i < 3 && event_add(t->events[i], i == 2 ? &tick : NULL)))
			return -ENOMEM;
	if (pthread_create(&t->loop_thread, NULL, loop_main, t))
		return -EAGAIN;
	t->loop_started = 1;
	return 0;
}

static void stop_loop(struct tool *t)
{
	if (t->loop_started) {
		atomic_store(&t->loop_quit, 1);
		event_active(t->events[3], EV_TIMEOUT, 0);
		pthread_join(t->loop_thread, NULL);
	}
	control_close(t->control); /* its events are the base's */
	t->control = NULL;
	for (int i = 0; i < 4; i++)
		if (t->events[i])
			event_free(t->events[i]);
	if (t->base)
		event_base_free(t->base);
}

/* After a rollback (source) or a switch-over (destination), show that the
 * guest runs: its progress counter must move. */
static void guest_check(struct tool *t, int *running, long long *delta)
{
	struct rmig_guest_stats a = { 0 }, b = { 0 };

	*running = -1;
	*delta = -1;
	if (!t->be->ops->guest_stats || t->be->ops->guest_stats(t->be, &a))
		return;
	*running = a.running;
	if (!a.running || !a.progress)
		return; /* progress 0: the backend cannot tell */
	for (int i = 0; i < 50; i++) {
		struct timespec ts = { 0, 10000000 };

		nanosleep(&ts, NULL);
		if (t->be->ops->guest_stats(t->be, &b))
			return;
		*delta = (long long)(b.progress - a.progress);
		if (*delta > 0)
			break;
	}
}

/* The audit's fields of the source's summary. */
static void print_audit_json(struct tool *t, const struct rmig_stats *s)
{
	static const char *const verdict[] = { "skipped", "passed", "failed" };

	fprintf(t->jout,
		",\"audit\":\"%s\",\"audit_ms\":%llu,\"audit_mismatch_chunks\":%llu,"
		"\"verify_chunks\":%llu",
		verdict[s->audit <= RMIG_AUDIT_FAILED ? s->audit : 0],
		(unsigned long long)s->audit_ms, (unsigned long long)s->audit_mismatch_chunks,
		(unsigned long long)s->verify_chunks);
	if (s->audit == RMIG_AUDIT_FAILED)
		print_json_field(t->jout, "audit_chunks", s->audit_chunks);
}

/* How long connecting, the handshake and memory took before the first
 * round (not in total_ms). */
/* "rails":[{"device":..,"node":..,"bytes":..,"lost":..},...] when the link had rails. */
static void print_rails_json(FILE *f, const struct rmig_stats *s)
{
	if (!s->rails)
		return;
	fprintf(f, ",\"rails\":[");
	for (unsigned i = 0; i < s->rails && i < RMIG_STATS_RAILS; i++) {
		/* Device names are the host's (or the peer's, whose decoder
		 * lets '"' and '\\' through): escaped like any text. */
		fprintf(f, "%s{\"node\":%d,\"bytes\":%llu,\"lost\":%s", i ? "," : "",
			s->rail[i].node, (unsigned long long)s->rail[i].bytes,
			s->rail[i].lost ? "true" : "false");
		print_json_field(f, "device", s->rail[i].device);
		fputc('}', f);
	}
	fprintf(f, "]");
}

static void print_setup_json(struct tool *t)
{
	struct rmig_status st = { .size = sizeof(st) };

	if (!rmig_status_get(t->ctx, &st))
		fprintf(t->jout, ",\"setup_ms\":%llu", (unsigned long long)st.setup_ms);
}

/* A dry run's figures, in the summary's JSON. */
static void print_dry_run_json(struct tool *t, const struct rmig_stats *s)
{
	fprintf(t->jout, ",\"dry_run\":true");
	if (t->role_send) /* the verdict is the source's: the receiver only checked */
		fprintf(t->jout,
			",\"would_fit\":%s,\"would_converge\":%s"
			",\"probe_bandwidth\":%.0f,\"probe_bytes\":%llu,\"probe_ms\":%llu,"
			"\"dirty_rate\":%.0f,\"round1_ms\":%llu,\"estimated_rounds\":%u,"
			"\"estimated_downtime_ms\":%.1f,\"estimated_throttle_pct\":%u",
			s->dry_run_fits ? "true" : "false", s->dry_run_converges ? "true" : "false",
			s->dry_run_bandwidth, (unsigned long long)s->dry_run_probe_bytes,
			(unsigned long long)s->dry_run_probe_ms, s->dry_run_dirty_rate,
			(unsigned long long)s->dry_run_round1_ms, s->dry_run_rounds,
			s->dry_run_downtime_ms, s->dry_run_throttle_pct);
	print_json_field(t->jout, "reason", s->dry_run_reason);
}

/* A dry run's verdict in one line: the source's, or what the receiver
 * served. */
static void print_dry_run_line(struct tool *t, const struct rmig_stats *s)
{
	char text[1024], bw[32];
	const char *why = cli_text(s->dry_run_reason, text, sizeof(text));

	status_fmt_bytes(bw, sizeof(bw), s->dry_run_bandwidth);
	if (!t->role_send)
		eprintf(t, LOG_INFO, "rmig: served a dry run from %s (nothing taken): %s\n",
			t->peer[0] ? t->peer : "?", why[0] ? why : "would fit and converge");
	else if (s->dry_run_fits && s->dry_run_converges)
		eprintf(t, LOG_INFO,
			"rmig: dry run: would converge: round 1 ~%.1f s at %s/s, dirty %.0f "
			"pages/s, ~%u round%s, expected downtime %.0f ms%s%s\n",
			(double)s->dry_run_round1_ms / 1000, bw, s->dry_run_dirty_rate,
			s->dry_run_rounds, s->dry_run_rounds == 1 ? "" : "s",
			s->dry_run_downtime_ms, why[0] ? "; " : "", why);
	else
		eprintf(t, LOG_ERR, "rmig: dry run: %s\n", why);
}

static void print_summary(struct tool *t, int rc)
{
	const struct rmig_stats *s = rmig_stats(t->ctx);
	int running = -1;
	long long delta = -1;
	guest_check(t, &running, &delta);
	pthread_mutex_lock(t->out);
	clear_progress(t);
	if (t->bench && s->bench_seconds > 0) {
		double bw = (double)s->bench_bytes / s->bench_seconds;

		if (t->jout)
			jprintf(
			    t,
			    "{\"event\":\"bench\",\"transport\":\"%s\",\"pin\":\"%s\","
			    "\"channels\":%u,\"bytes\":%llu,\"seconds\":%.3f,\"bandwidth\":%.0f}\n",
			    s->transport, s->pin, s->channels, (unsigned long long)s->bench_bytes,
			    s->bench_seconds, bw);
		if (!t->json) {
			char b[32];

			status_fmt_bytes(b, sizeof(b), bw);
			eprintf(t, LOG_INFO,
				"rmig: bench over %s (pin %s, %u channels): %s/s (%.1f MB/s)\n",
				s->transport, s->pin, s->channels, b, bw / 1e6);
		}
	}
	if (t->jout) {
		jprintf(
		    t,
		    "{\"event\":\"summary\",\"role\":\"%s\",\"result\":\"%s\",\"transport\":\"%s\","
		    "\"pin\":\"%s\","
		    "\"total_ms\":%llu,\"downtime_ms\":%llu,\"rounds\":%u,\"bytes_sent\":%llu,"
		    "\"pages_sent\":%llu,\"zero_pages\":%llu,\"guest_bytes\":%llu,\"channels\":%u,"
		    "\"throttle_pct\":%u,\"forced\":%s,\"expected_downtime_ms\":%.1f,"
		    "\"verified\":%s,\"failovers\":%u,\"stream_replayed_bytes\":%llu,"
		    "\"cpu_ms\":%.0f,\"postcopy\":%s,"
		    "\"postcopy_pages\":%llu,\"postcopy_requested\":%llu,\"postcopy_ms\":%llu,"
		    "\"prealloc_ms\":%llu,\"encrypted\":%s,\"tls\":\"%s\"",
		    t->role_send ? "source" : "destination", rmig_result_name(s->result),
		    s->transport, s->pin, (unsigned long long)s->total_ms,
		    (unsigned long long)s->downtime_ms, s->rounds,
		    (unsigned long long)s->bytes_sent, (unsigned long long)s->pages_sent,
		    (unsigned long long)s->zero_pages, (unsigned long long)s->guest_bytes,
		    s->channels, s->throttle_pct, s->forced ? "true" : "false",
		    s->expected_downtime_ms, s->verified ? "true" : "false", s->failovers,
		    (unsigned long long)s->stream_replayed_bytes, t->cpu_s * 1000,
		    s->postcopy ? "true" : "false", (unsigned long long)s->postcopy_pages,
		    (unsigned long long)s->postcopy_requested, (unsigned long long)s->postcopy_ms,
		    (unsigned long long)s->prealloc_ms, s->encrypted ? "true" : "false",
		    s->tls ? s->tls : "off");
		fprintf(t->jout,
			",\"recoveries\":%u,\"recovery_ms\":%llu,\"postcopy_max_wait_ms\":%llu",
			s->recoveries, (unsigned long long)s->recovery_ms,
			(unsigned long long)s->postcopy_max_wait_ms);
		if (s->disks)
			fprintf(t->jout,
				",\"disks\":%u,\"disk_bytes\":%llu,\"disk_blocks_sent\":%llu,"
				"\"disk_zero_blocks\":%llu,\"disk_throttle_bps\":%llu,"
				"\"disks_verified\":%s",
				s->disks, (unsigned long long)s->disk_bytes,
				(unsigned long long)s->disk_blocks_sent,
				(unsigned long long)s->disk_zero_blocks,
				(unsigned long long)s->disk_throttle_bps,
				s->disks_verified ? "true" : "false");
		print_rails_json(t->jout, s);
		print_setup_json(t);
		if (t->role_send && !s->dry_run)
			print_audit_json(t, s);
		if (s->dry_run)
			print_dry_run_json(t, s);
		if (running >= 0)
			fprintf(t->jout, ",\"guest_running\":%s", running ? "true" : "false");
		if (delta >= 0)
			fprintf(t->jout, ",\"guest_progress_delta\":%lld", delta);
		if (rc)
			print_json_field(t->jout, "error", rmig_errmsg(t->ctx));
		fprintf(t->jout, "}\n");
		fflush(t->jout);
	}
	if (rc) {
		char text[1024];

		eprintf(t, LOG_ERR, "rmig: %s: %s\n", rmig_result_name(s->result),
			cli_text(rmig_errmsg(t->ctx), text, sizeof(text)));
	}
	/* A "why not" is said on stderr even with --json, as an error is. */
	if (s->dry_run &&
	    (!t->json || (t->role_send && !(s->dry_run_fits && s->dry_run_converges))))
		print_dry_run_line(t, s);
	else if (!t->json) {
		char bytes[32];

		status_fmt_bytes(bytes, sizeof(bytes), (double)s->bytes_sent);
		eprintf(t, LOG_INFO,
			"rmig: %s%s%s: %u rounds, %s, %llu data + %llu zero pages, total %llu ms, "
			"downtime %llu ms%s%s%s%s\n",
			rmig_result_name(s->result), strcmp(s->transport, "none") ? " over " : "",
			strcmp(s->transport, "none") ? s->transport : "", s->rounds, bytes,
			(unsigned long long)s->pages_sent, (unsigned long long)s->zero_pages,
			(unsigned long long)s->total_ms, (unsigned long long)s->downtime_ms,
			s->verified ? ", verified" : "", s->forced ? ", forced switch-over" : "",
			s->encrypted ? ", encrypted by " : "",
			s->encrypted ? (!strcmp(s->tls, "ktls") ? "kernel TLS" : "TLS") : "");
		status_fmt_bytes(bytes, sizeof(bytes), (double)s->disk_bytes);
		if (s->disks)
			eprintf(t, LOG_INFO,
				"rmig: %u disk%s (%s): %llu blocks sent with data, %llu as "
				"zero%s%s\n",
				s->disks, s->disks > 1 ? "s" : "", bytes,
				(unsigned long long)s->disk_blocks_sent,
				(unsigned long long)s->disk_zero_blocks,
				s->disks_verified ? ", verified" : "",
				s->disk_throttle_bps ? ", guest disk I/O throttled" : "");
		if (s->postcopy)
			eprintf(t, LOG_INFO,
				"rmig: post-copy: %llu pages came after the guest started (%llu "
				"on demand), over %llu ms\n",
				(unsigned long long)s->postcopy_pages,
				(unsigned long long)s->postcopy_requested,
				(unsigned long long)s->postcopy_ms);
		if (running > 0 && delta >= 0)
			eprintf(t, LOG_INFO,
				"rmig: guest running here (%lld writes in the last moments)\n",
				delta);
		else if (running > 0)
			eprintf(t, LOG_INFO, "rmig: guest running here\n");
	}
	pthread_mutex_unlock(t->out);
}

enum {
	OPT_BACKEND = 256,
	OPT_TRANSPORT,
	OPT_CHANNELS,
	OPT_JSON,
	OPT_DOWNTIME,
	OPT_ROUNDS,
	OPT_NC,
	OPT_BW,
	OPT_VERIFY,
	OPT_NO_VERIFY,
	OPT_LISTEN,
	OPT_ACCEPT_TMO,
	OPT_IO_TMO,
	OPT_FAILOVER,
	OPT_FAILOVER_TMO,
	OPT_COMMIT_TMO,
	OPT_PSK,
	OPT_INSECURE,
	OPT_TLS,
	OPT_NO_TLS,
	OPT_TLS_CREDS,
	OPT_TLS_HOSTNAME,
	OPT_KEEP,
	OPT_RESUME_SOURCE,
	OPT_PIN,
	OPT_DEVICE,
	OPT_RAILS,
	OPT_GID,
	OPT_SECONDS,
	OPT_SIZE,
	OPT_POSTCOPY,
	OPT_PREALLOC,
	OPT_MAX_SESSIONS,
	OPT_HANDSHAKE_TMO,
	OPT_STALL_TMO,
	OPT_CONTROL,
	OPT_RECORD,
	OPT_TIMEOUT,
	OPT_DRY_RUN,
	OPT_DISKS,
};

static const struct option long_opts[] = {
	{ "help", no_argument, NULL, 'h' },
	{ "backend", required_argument, NULL, 'b' },
	{ "transport", required_argument, NULL, OPT_TRANSPORT },
	{ "channels", required_argument, NULL, OPT_CHANNELS },
	{ "json", no_argument, NULL, 'j' },
	{ "port", required_argument, NULL, 'p' },
	{ "downtime-ms", required_argument, NULL, OPT_DOWNTIME },
	{ "max-rounds", required_argument, NULL, OPT_ROUNDS },
	{ "on-no-converge", required_argument, NULL, OPT_NC },
	{ "max-bandwidth", required_argument, NULL, OPT_BW },
	{ "verify", optional_argument, NULL, OPT_VERIFY },
	{ "no-verify", no_argument, NULL, OPT_NO_VERIFY },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "accept-timeout-ms", required_argument, NULL, OPT_ACCEPT_TMO },
	{ "link-timeout-ms", required_argument, NULL, OPT_IO_TMO },
	{ "io-timeout-ms", required_argument, NULL, OPT_IO_TMO }, /* old name */
	{ "failover", required_argument, NULL, OPT_FAILOVER },
	{ "failover-timeout-ms", required_argument, NULL, OPT_FAILOVER_TMO },
	{ "commit-timeout-ms", required_argument, NULL, OPT_COMMIT_TMO },
	{ "psk-file", required_argument, NULL, OPT_PSK },
	{ "insecure", no_argument, NULL, OPT_INSECURE },
	{ "tls", no_argument, NULL, OPT_TLS },
	{ "no-tls", no_argument, NULL, OPT_NO_TLS },
	{ "tls-creds", required_argument, NULL, OPT_TLS_CREDS },
	{ "tls-hostname", required_argument, NULL, OPT_TLS_HOSTNAME },
	{ "keep-listening", no_argument, NULL, OPT_KEEP },
	{ "resume-source", no_argument, NULL, OPT_RESUME_SOURCE },
	{ "pin", required_argument, NULL, OPT_PIN },
	{ "device", required_argument, NULL, 'd' },
	{ "rails", required_argument, NULL, OPT_RAILS },
	{ "gid-index", required_argument, NULL, 'x' },
	{ "seconds", required_argument, NULL, OPT_SECONDS },
	{ "size", required_argument, NULL, OPT_SIZE },
	{ "postcopy", no_argument, NULL, OPT_POSTCOPY },
	{ "prealloc", no_argument, NULL, OPT_PREALLOC },
	{ "max-sessions", required_argument, NULL, OPT_MAX_SESSIONS },
	{ "handshake-timeout-ms", required_argument, NULL, OPT_HANDSHAKE_TMO },
	{ "stall-timeout-ms", required_argument, NULL, OPT_STALL_TMO },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "record", required_argument, NULL, OPT_RECORD },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "disks", optional_argument, NULL, OPT_DISKS },
	{ NULL, 0, NULL, 0 },
};

/* User + system CPU seconds of the whole process so far. */
static double cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static const char *file_kind(mode_t mode)
{
	return S_ISFIFO(mode)	? "a FIFO"
	       : S_ISDIR(mode)	? "a directory"
	       : S_ISCHR(mode)	? "a character device"
	       : S_ISBLK(mode)	? "a block device"
	       : S_ISSOCK(mode) ? "a socket"
				: "a special file";
}

/* Open the key file: a regular file (or a symlink to one) that only its
 * owner may read. O_NONBLOCK: opening a FIFO for reading would block until
 * a writer came. Exits 2 with one line otherwise. */
static int open_psk(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

	if (fd < 0) {
		errline("rmig: --psk-file %s: %s\n", path, strerror(errno));
		exit(RMIG_RESULT_USAGE);
	}
	if (fstat(fd, &st)) {
		errline("rmig: --psk-file %s: %s\n", path, strerror(errno));
		exit(RMIG_RESULT_USAGE);
	}
	if (!S_ISREG(st.st_mode)) {
		errline("rmig: --psk-file %s: %s, not a regular file\n", path,
			file_kind(st.st_mode));
		exit(RMIG_RESULT_USAGE);
	}
	if (st.st_mode & 077) {
		fprintf(stderr,
			"rmig: --psk-file %s: readable by group or others (mode %03o); chmod 600 "
			"it\n",
			path, st.st_mode & 0777);
		exit(RMIG_RESULT_USAGE);
	}
	return fd;
}

/* The key file: raw bytes, 16..1024 of them, readable by its owner only. */
static ssize_t read_psk(const char *path, uint8_t *buf, size_t cap)
{
	ssize_t n;
	int fd = open_psk(path);

	n = read(fd, buf, cap);
	if (n >= 0 && (size_t)n == cap) {
		uint8_t more;

		if (read(fd, &more, 1) > 0)
			n = -2;
	}
	close(fd);
	if (n < 16) {
		errline("rmig: --psk-file %s: %s\n", path,
			n == -2 ? "longer than 1024 bytes"
			: n < 0 ? strerror(errno)
				: "shorter than 16 bytes");
		exit(RMIG_RESULT_USAGE);
	}
	return n;
}

/* After exit code 4 the source guest is paused and the operator checked that
 * the destination does not run it. Only a backend whose guest outlives the
 * rmig process can be resumed from a new one. */
static int resume_source_guest(const char *backend)
{
	struct rmig_backend *be = NULL;
	char err[256];
	int rc;

	if (!strncmp(backend, "sim", 3) && (!backend[3] || backend[3] == ':')) {
		fprintf(stderr,
			"rmig: --resume-source: the sim backend's guest lived inside the rmig "
			"process that exited, so there is nothing left to resume; backends "
			"that attach to a running hypervisor can be resumed this way\n");
		return RMIG_RESULT_FAILED;
	}
	rc = rmig_backend_open(backend, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	if (rc) {
		errline("rmig: --resume-source: %s\n", err);
		return RMIG_RESULT_FAILED;
	}
	rc = be->ops->resume(be);
	if (rc)
		errline("rmig: --resume-source: %s\n", be->err);
	else
		journal_line(LOG_NOTICE, "rmig: --resume-source: the source guest runs again\n");
	rmig_backend_close(be);
	return rc ? RMIG_RESULT_FAILED : RMIG_RESULT_MIGRATED;
}

/* send, recv and bench: the options, then one migration (or, with
 * --keep-listening, one after another). */
enum mode { MODE_SEND, MODE_RECV, MODE_BENCH };

struct cli {
	enum mode mode;
	struct rmig_config cfg;
	const char *backend, *listen_arg, *bench_size, *psk_file, *control, *record;
	const char *disks; /* --disks: "all" or ID,ID */
	int keep_listening, resume_source, verify_given, stall_given, json;
	unsigned max_sessions; /* 0: not given */
	char host[256];
	char bench_backend[128];
	char disks_backend[1024]; /* the backend spec with --disks' disks= */
};

/* --disks[=ID,...]: the backend's own option, disks=all or disks=ID+ID (its
 * options are comma-separated). Ids are device names: letters, digits and
 * "_.-" only, so that nothing else reaches the backend's spec. */
static void add_disks_option(struct cli *c)
{
	char ids[512];
	size_t i;

	if (strlen(c->disks) >= sizeof(ids) || !*c->disks)
		die_usage("--disks: give all, or disk ids separated by commas");
	for (i = 0; c->disks[i]; i++) {
		char ch = c->disks[i];

		if (!isalnum((unsigned char)ch) && !strchr("_.-,", ch))
			die_usage("--disks: '%c' in a disk id (letters, digits, _ . - only)", ch);
		ids[i] = ch == ',' ? '+' : ch;
	}
	ids[i] = 0;
	if (strstr(c->backend, "disks="))
		die_usage("--disks and a disks= in --backend: give one");
	if ((size_t)snprintf(c->disks_backend, sizeof(c->disks_backend), "%s%sdisks=%s", c->backend,
			     strchr(c->backend, ':') ? "," : ":", ids) >= sizeof(c->disks_backend))
		die_usage("--backend with --disks: too long");
	c->backend = c->disks_backend;
}

static void parse_options(struct cli *c, int argc, char *argv[])
{
	struct rmig_config *cfg = &c->cfg;
	int send = c->mode != MODE_RECV, bench = c->mode == MODE_BENCH, opt;

	optind = 1;
	/* Short options where a convention has them: perftest's -d DEV, -x GID
	 * and -p PORT; -b backend, -j json. */
	opterr = 0; /* one line of ours, not getopt's and then ours */
	while ((opt = getopt_long(argc, argv, ":hb:d:x:p:j", long_opts, NULL)) != -1) {
		switch (opt) {
		case 'h': fputs(usage_text, stdout); exit(0);
		case 'b': c->backend = optarg; break;
		case 'p': /* a port in HOST:PORT or --listen wins */
			cfg->port = (uint16_t)parse_uint("--port", optarg, 0, 65535);
			break;
		case OPT_TRANSPORT: cfg->transport = optarg; break; /* the library checks it */
		case OPT_PIN:
			if (!strcmp(optarg, "auto"))
				cfg->pin = RMIG_PIN_AUTO;
			else if (!strcmp(optarg, "all"))
				cfg->pin = RMIG_PIN_ALL;
			else if (!strcmp(optarg, "staging"))
				cfg->pin = RMIG_PIN_STAGING;
			else
				die_usage("--pin: '%s' is not auto, all or staging", optarg);
			break;
		case 'd': cfg->device = optarg; break;
		case OPT_RAILS: cfg->rails = optarg; break;
		case 'x': cfg->gid_index = (int)parse_uint("--gid-index", optarg, 0, 255); break;
		case OPT_SECONDS:
			if (!bench)
				die_usage("--seconds is for bench");
			cfg->bench_ms = 1000 * parse_uint("--seconds", optarg, 1, 3600);
			break;
		case OPT_SIZE:
			if (!bench)
				die_usage("--size is for bench");
			c->bench_size = optarg;
			break;
		case OPT_CHANNELS: cfg->channels = parse_uint("--channels", optarg, 1, 64); break;
		case 'j': c->json = 1; break;
		case OPT_DOWNTIME:
			cfg->downtime_ms = parse_uint("--downtime-ms", optarg, 1, 3600000);
			break;
		case OPT_ROUNDS:
			cfg->max_rounds = parse_uint("--max-rounds", optarg, 1, 100000);
			break;
		case OPT_NC:
			if (!strcmp(optarg, "throttle"))
				cfg->on_no_converge = RMIG_NC_THROTTLE;
			else if (!strcmp(optarg, "force"))
				cfg->on_no_converge = RMIG_NC_FORCE;
			else if (!strcmp(optarg, "abort"))
				cfg->on_no_converge = RMIG_NC_ABORT;
			else
				die_usage("--on-no-converge: '%s' is not throttle, force or abort",
					  optarg);
			break;
		case OPT_BW:
			if (rmig_parse_size(optarg, &cfg->max_bandwidth) || !cfg->max_bandwidth)
				die_usage("--max-bandwidth: '%s' is not a rate like 50M", optarg);
			break;
		case OPT_VERIFY:
			cfg->verify = parse_verify(optarg);
			c->verify_given = cfg->verify != RMIG_VERIFY_OFF;
			break;
		case OPT_NO_VERIFY: cfg->verify = RMIG_VERIFY_OFF; break;
		case OPT_LISTEN: c->listen_arg = optarg; break;
		case OPT_ACCEPT_TMO:
			cfg->accept_timeout_ms =
			    parse_uint("--accept-timeout-ms", optarg, 1, 86400000);
			break;
		case OPT_IO_TMO:
			cfg->link_timeout_ms =
			    parse_uint("--link-timeout-ms", optarg, 100, 86400000);
			break;
		case OPT_FAILOVER:
			/* "none", or the link to fail over to (the library checks it). */
			if (!strcmp(optarg, "none")) {
				cfg->failover = RMIG_FAILOVER_NONE;
			} else {
				cfg->failover = RMIG_FAILOVER_TCP;
				cfg->failover_transport = optarg;
			}
			break;
		case OPT_FAILOVER_TMO:
			cfg->failover_timeout_ms =
			    parse_uint("--failover-timeout-ms", optarg, 1, 86400000);
			break;
		case OPT_COMMIT_TMO:
			cfg->commit_timeout_ms =
			    parse_uint("--commit-timeout-ms", optarg, 1, 86400000);
			break;
		case OPT_CONTROL: c->control = optarg; break;
		case OPT_RECORD: c->record = optarg; break;
		case OPT_TIMEOUT:
			if (!send)
				die_usage("--timeout is for send");
			cfg->timeout_ms = parse_uint("--timeout", optarg, 1, 86400) * 1000;
			break;
		case OPT_STALL_TMO:
			cfg->stall_timeout_ms =
			    parse_uint("--stall-timeout-ms", optarg, 1, 86400000);
			c->stall_given = 1;
			break;
		case OPT_PSK: c->psk_file = optarg; break;
		case OPT_INSECURE: cfg->insecure = 1; break;
		case OPT_TLS: cfg->tls = RMIG_TLS_ON; break;
		case OPT_NO_TLS: cfg->tls = RMIG_TLS_OFF; break;
		case OPT_TLS_CREDS: cfg->tls_creds = optarg; break;
		case OPT_TLS_HOSTNAME: cfg->tls_hostname = optarg; break;
		case OPT_KEEP: c->keep_listening = 1; break;
		case OPT_RESUME_SOURCE: c->resume_source = 1; break;
		case OPT_POSTCOPY: cfg->postcopy = 1; break;
		case OPT_DRY_RUN: cfg->dry_run = 1; break;
		case OPT_DISKS: c->disks = optarg ? optarg : "all"; break;
		case OPT_PREALLOC: cfg->prealloc = 1; break;
		case OPT_MAX_SESSIONS:
			c->max_sessions = parse_uint("--max-sessions", optarg, 1, 64);
			break;
		case OPT_HANDSHAKE_TMO:
			cfg->handshake_timeout_ms =
			    parse_uint("--handshake-timeout-ms", optarg, 100, 3600000);
			break;
		case ':': die_usage("option %s needs a value", argv[optind - 1]);
		default: die_usage("unknown option %s", argv[optind - 1]);
		}
	}
	if (c->keep_listening && send)
		die_usage("--keep-listening is for recv");
	if (c->max_sessions && !c->keep_listening)
		die_usage("--max-sessions is for recv --keep-listening");
	if (c->control && (c->keep_listening || bench))
		die_usage(
		    "--control is for one migration (send, or recv without --keep-listening)");
	if (c->record && bench)
		die_usage("--record is for send and recv");
	if (c->keep_listening && cfg->accept_timeout_ms)
		die_usage("--accept-timeout-ms is for a receiver of one migration; stop a "
			  "--keep-listening one with SIGTERM");
	if (cfg->handshake_timeout_ms != RMIG_DEFAULT_HANDSHAKE_MS && send)
		die_usage("--handshake-timeout-ms is for recv");
	if (c->resume_source && (!send || bench))
		die_usage("--resume-source is for send");
	if (cfg->postcopy && (!send || bench))
		die_usage("--postcopy is for send");
	if (cfg->dry_run && (!send || bench))
		die_usage("--dry-run is for send");
	if (cfg->prealloc && send)
		die_usage("--prealloc is for recv");
	if (c->stall_given && send)
		die_usage("--stall-timeout-ms is for recv");
	if (cfg->postcopy && c->verify_given)
		die_usage("--postcopy cannot --verify: the destination's guest writes its memory "
			  "before all of it arrived");
	if (cfg->postcopy && cfg->pin == RMIG_PIN_ALL)
		die_usage("--postcopy cannot use --pin=all: pages that arrive after the guest "
			  "started are placed by the destination's CPU");
	if (cfg->postcopy)
		cfg->verify = 0; /* nothing to compare once the destination's guest runs */
}

/* The address arguments; bench's guest. */
static void parse_operands(struct cli *c, int argc, char *argv[])
{
	if (c->mode != MODE_RECV) {
		if (optind != argc - 1)
			die_usage("send needs exactly one HOST[:PORT]");
		if (c->listen_arg)
			die_usage("--listen is for recv");
		parse_hostport(argv[optind], c->host, sizeof(c->host), &c->cfg.port);
	} else {
		if (optind != argc)
			die_usage("unexpected argument '%s'", argv[optind]);
		if (!c->listen_arg)
			die_usage("recv needs --listen ADDR[:PORT]");
		parse_listen(c->listen_arg, c->host, sizeof(c->host), &c->cfg.port);
	}
	if (c->disks && c->mode == MODE_BENCH)
		die_usage("--disks is for send and recv");
	if (c->disks)
		add_disks_option(c);
	if (c->mode == MODE_BENCH) {
		snprintf(c->bench_backend, sizeof(c->bench_backend),
			 "sim:size=%s,dirty-rate=0,zero=0%%", c->bench_size);
		c->backend = c->bench_backend;
		if (!c->cfg.bench_ms)
			c->cfg.bench_ms = 5000;
		c->cfg.max_rounds = 100000; /* the resend rounds are not pre-copy rounds */
		/* The resend rounds measure the data path: digest once at the end
		 * rather than every page of every round. */
		if (c->cfg.verify == RMIG_VERIFY_ON)
			c->cfg.verify = RMIG_VERIFY_FULL;
	}
}

/* The outcome as the tool's exit code; a dry run's verdict: 0 it would
 * fit and converge, 1 not. */
static int exit_code(const struct rmig_stats *s)
{
	if (s->result == RMIG_RESULT_DRY_RUN)
		return s->dry_run_fits && s->dry_run_converges ? 0 : RMIG_RESULT_FAILED;
	return (int)s->result;
}

/* rmig_ctx_create failed: a configuration the library refused is a usage
 * error (exit 2, one line), anything else a failure. */
static int create_failed(int rc, const char *why)
{
	char text[1024];

	if (rc == -ENOENT || rc == -EINVAL) {
		errline("rmig: %s (see rmig help)\n",
			why[0] ? cli_text(why, text, sizeof(text)) : strerror(-rc));
		return RMIG_RESULT_USAGE;
	}
	errline("rmig: cannot create the migration: %s\n",
		why[0] ? cli_text(why, text, sizeof(text)) : strerror(-rc));
	return RMIG_RESULT_FAILED;
}

/* One session of a --keep-listening receiver: one migration after another,
 * each into a fresh backend and context, until a signal. */
/* --keep-listening --record: each migration a record of its own. */
static int worker_record(struct tool *w)
{
	char err[512], role[16];
	struct record *r;

	snprintf(role, sizeof(role), w->session ? "recv%u" : "recv", w->session);
	r = record_open(w->record_dir, role, err, sizeof(err));
	if (!r) {
		errline("rmig: %s\n", err);
		return -1;
	}
	pthread_mutex_lock(w->out);
	w->record = r;
	w->jout = record_stream(r, w->json ? stdout : NULL);
	pthread_mutex_unlock(w->out);
	return 0;
}

static void *worker_main(void *arg)
{
	struct tool *w = arg;
	char err[512];

	while (!w->stopping) {
		struct rmig_progress p;
		struct rmig_ctx *ctx;
		double cpu0 = cpu_seconds();
		int rc =
		    rmig_backend_open(w->backend_spec, RMIG_ROLE_DEST, &w->be, err, sizeof(err));

		if (rc) {
			errline("rmig: backend %s: %s\n", w->backend_spec, err);
			w->failed = 1;
			break;
		}
		rc = rmig_ctx_create(&ctx, w->cfg, w->be);
		if (rc) {
			errline("rmig: cannot create the migration: %s\n", strerror(-rc));
			rmig_backend_close(w->be);
			w->failed = 1;
			break;
		}
		if (w->record_dir && worker_record(w)) {
			rmig_ctx_destroy(ctx);
			rmig_backend_close(w->be);
			w->failed = 1;
			break;
		}
		pthread_mutex_lock(w->ctx_lock);
		w->ctx = ctx;
		if (w->stopping)
			rmig_cancel(ctx);
		pthread_mutex_unlock(w->ctx_lock);
		rc = rmig_recv_from(ctx, w->lst);
		w->cpu_s = cpu_seconds() - cpu0; /* the process's: other sessions' too */
		rmig_progress(ctx, &p);
		/* Stopped while waiting for a sender: nothing to report. */
		if (!(rc == -ECANCELED && !strcmp(p.phase, "listening")))
			print_summary(w, rc);
		else if (w->record) {
			record_discard(w->record);
			w->record = NULL;
		}
		pthread_mutex_lock(w->out);
		record_close(w->record); /* no line is half-written: under out */
		w->record = NULL;
		w->jout = w->json ? stdout : NULL;
		pthread_mutex_unlock(w->out);
		pthread_mutex_lock(w->ctx_lock);
		w->ctx = NULL;
		pthread_mutex_unlock(w->ctx_lock);
		rmig_ctx_destroy(ctx);
		rmig_backend_close(w->be);
		w->be = NULL;
	}
	return NULL;
}

/* recv --keep-listening: one listener, --max-sessions sessions at once. */
static int serve_many(struct tool *t, struct cli *c)
{
	static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
	unsigned n = c->max_sessions ? c->max_sessions : 4, started = 0;
	struct rmig_event ev = { .type = RMIG_EV_LISTENING };
	char *create_err = c->cfg.create_err;
	int rc, failed = 0;

	/* A backend that cannot open is one line before listening, not one
	 * per session after. */
	{
		struct rmig_backend *be;
		char err[512];

		rc = rmig_backend_open(c->backend, RMIG_ROLE_DEST, &be, err, sizeof(err));
		if (rc) {
			errline("rmig: backend %s: %s\n", c->backend, err);
			return rc == -EINVAL || rc == -ENOENT ? RMIG_RESULT_USAGE
							      : RMIG_RESULT_FAILED;
		}
		rmig_backend_close(be);
	}
	rc = rmig_listener_create(&t->lst, &c->cfg);
	if (rc)
		return create_failed(rc, create_err);
	ev.port = rmig_listener_port(t->lst);
	on_event(t, &ev);
	t->workers = calloc(n, sizeof(*t->workers));
	if (!t->workers) {
		rmig_listener_destroy(t->lst);
		return RMIG_RESULT_FAILED;
	}
	t->ctx_lock = &ctx_lock;
	t->progress_line = 0; /* several sessions: one line each would garble */
	for (unsigned i = 0; i < n; i++) {
		struct tool *w = &t->workers[i];

		w->out = t->out;
		w->ctx_lock = &ctx_lock;
		w->json = t->json;
		w->jout = t->jout;
		w->record_dir = c->record;
		w->lst = t->lst;
		w->backend_spec = c->backend;
		w->hold_at = t->hold_at;
		w->hold_ms = t->hold_ms;
		w->session = n > 1 ? i + 1 : 0;
		w->worker_cfg = c->cfg;
		w->worker_cfg.event_arg = w;
		w->cfg = &w->worker_cfg;
	}
	if (start_loop(t))
		errline("rmig: no event loop: signals not handled\n");
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&t->workers[i].loop_thread, NULL, worker_main, &t->workers[i]))
			break;
		started++;
	}
	t->nworkers = started;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(t->workers[i].loop_thread, NULL);
		failed |= t->workers[i].failed;
	}
	stop_loop(t);
	rmig_listener_destroy(t->lst);
	free(t->workers);
	return failed || started < n ? RMIG_RESULT_FAILED : 0;
}

static int migrate(enum mode mode, int argc, char *argv[])
{
	struct tool t = { .out_lock = PTHREAD_MUTEX_INITIALIZER };
	struct cli c = { .mode = mode, .backend = "sim", .bench_size = "256M" };
	struct rmig_config *cfg = &c.cfg;
	int send = mode != MODE_RECV, rc;
	const char *hold;
	uint8_t psk[1024];
	char err[512], create_err[512] = "";
	sigset_t pipe_set;

	t.out = &t.out_lock;
	rmig_config_init(cfg, sizeof(*cfg));
	cfg->port = RMIG_DEFAULT_PORT;
	parse_options(&c, argc, argv);
	t.bench = mode == MODE_BENCH;
	t.role_send = send;
	t.json = c.json;
	t.jout = c.json ? stdout : NULL;
	t.postcopy = cfg->postcopy;
	if (c.resume_source)
		return resume_source_guest(c.backend);
	parse_operands(&c, argc, argv);
	if (c.psk_file) {
		ssize_t n = read_psk(c.psk_file, psk, sizeof(psk));

		cfg->psk = psk;
		cfg->psk_len = (size_t)n;
	}
	hold = getenv("RMIG_TEST_HOLD");
	if (hold && strchr(hold, ':')) {
		static char at[64];

		snprintf(at, sizeof(at), "%.*s", (int)(strchr(hold, ':') - hold), hold);
		t.hold_at = at;
		t.hold_ms = (unsigned)strtoul(strchr(hold, ':') + 1, NULL, 10);
	}
	cfg->host = c.host;
	cfg->on_event = on_event;
	cfg->event_arg = &t;
	cfg->create_err = create_err;
	cfg->create_err_len = sizeof(create_err);
	t.progress_line = !t.json && isatty(STDERR_FILENO);

	/* Writes to a closed socket must be errors, not a silent death. */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);

	if (c.keep_listening) {
		rc = serve_many(&t, &c);
		explicit_bzero(psk, sizeof(psk));
		return rc;
	}
	rc = rmig_backend_open(c.backend, send ? RMIG_ROLE_SOURCE : RMIG_ROLE_DEST, &t.be, err,
			       sizeof(err));
	if (rc) {
		char why[768];

		snprintf(why, sizeof(why), "backend %s: %s", c.backend, err);
		errline("rmig: %s\n", why);
		if (t.jout) { /* --json: a summary for every failure */
			jprintf(&t, "{\"event\":\"summary\",\"role\":\"%s\",\"result\":\"failed\"",
				send ? "source" : "destination");
			print_json_field(t.jout, "error", why);
			fprintf(t.jout, "}\n");
			fflush(t.jout);
		}
		explicit_bzero(psk, sizeof(psk));
		return rc == -EINVAL || rc == -ENOENT ? RMIG_RESULT_USAGE : RMIG_RESULT_FAILED;
	}
	rc = rmig_ctx_create(&t.ctx, cfg, t.be);
	explicit_bzero(psk, sizeof(psk)); /* the context keeps its own copy */
	if (rc) {
		rmig_backend_close(t.be);
		return create_failed(rc, create_err);
	}
	if (c.record &&
	    !(t.record = record_open(c.record, send ? "send" : "recv", err, sizeof(err)))) {
		errline("rmig: %s\n", err);
		rmig_ctx_destroy(t.ctx);
		rmig_backend_close(t.be);
		return RMIG_RESULT_FAILED;
	}
	if (t.record)
		t.jout = record_stream(t.record, c.json ? stdout : NULL);
	t.view = (struct status_view){ .ctx = t.ctx, .send = send, .postcopy = cfg->postcopy };
	err[0] = 0;
	if (start_loop(&t) && c.control) {
		errline("rmig: no event loop: no control socket\n");
		stop_loop(&t);
		rmig_ctx_destroy(t.ctx);
		rmig_backend_close(t.be);
		return RMIG_RESULT_FAILED;
	} else if (!t.loop_started) {
		errline("rmig: no event loop: no progress line, signals not handled\n");
	} else if (c.control && control_listen(t.base, c.control, status_control, &t.view,
					       &t.control, err, sizeof(err))) {
		errline("rmig: %s\n", err);
		stop_loop(&t);
		rmig_ctx_destroy(t.ctx);
		rmig_backend_close(t.be);
		return RMIG_RESULT_FAILED;
	}
	{
		double cpu0 = cpu_seconds();

		/* A dry run served is not the migration a receiver waits for. */
		do {
			atomic_store(&t.running, 1);
			rc = send ? rmig_send(t.ctx) : rmig_recv(t.ctx);
			atomic_store(&t.running, 0);
			t.cpu_s = cpu_seconds() - cpu0;
			print_summary(&t, rc);
		} while (!send && !rc && rmig_stats(t.ctx)->dry_run);
	}
	stop_loop(&t);
	rc = exit_code(rmig_stats(t.ctx));
	if (rc == RMIG_RESULT_MIGRATED && rmig_stats(t.ctx)->audit == RMIG_AUDIT_FAILED)
		rc = RMIG_EXIT_AUDIT_FAILED;
	rmig_ctx_destroy(t.ctx);
	rmig_backend_close(t.be);
	record_close(t.record);
	return rc;
}

static int cmd_send(int argc, char *argv[])
{
	return migrate(MODE_SEND, argc, argv);
}

static int cmd_recv(int argc, char *argv[])
{
	return migrate(MODE_RECV, argc, argv);
}

static int cmd_bench(int argc, char *argv[])
{
	return migrate(MODE_BENCH, argc, argv);
}

static int cmd_info(int argc, char *argv[])
{
	if (argc == 3 && !strcmp(argv[1], "--rails"))
		return info_command(argv[2]) ? RMIG_RESULT_FAILED : 0;
	if (argc != 1)
		die_usage("info takes no arguments but --rails auto|DEV[@NODE],...");
	return info_command(NULL) ? RMIG_RESULT_FAILED : 0;
}

static int cmd_tunnel(int argc, char *argv[])
{
	return tunnel_command(argc, argv, read_psk);
}

static int cmd_help(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	fputs(usage_text, stdout);
	return 0;
}

static int cmd_version(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	printf("rmig %s\n", rmig_version(NULL, NULL, NULL));
	return 0;
}

/* As wireguard-tools' wg: one entry per subcommand. Each gets its own
 * argv, argv[0] being its name. */
static const struct {
	const char *name;
	int (*fn)(int argc, char *argv[]);
	const char *description;
} subcommands[] = {
	{ "send", cmd_send, "migrate a guest to a receiver" },
	{ "recv", cmd_recv, "receive a guest" },
	{ "bench", cmd_bench, "measure the data path alone" },
	{ "info", cmd_info, "what this host offers: transports, backends, post-copy, limits" },
	{ "status", status_client, "ask a running rmig how it goes (--control PATH)" },
	{ "set", status_client, "change a running migration's max-bandwidth or downtime-ms" },
	{ "postcopy", status_client, "switch a running --postcopy migration to post-copy now" },
	{ "cancel", status_client, "roll a running migration back" },
	{ "history", history_command, "list the migrations recorded in a directory (--record)" },
	{ "tunnel", cmd_tunnel, "carry local UNIX sockets (libvirt's) to a peer" },
	{ "help", cmd_help, "show the usage" },
	{ "--help", cmd_help, NULL },
	{ "-h", cmd_help, NULL },
	{ "version", cmd_version, "show the version" },
	{ "--version", cmd_version, NULL },
};

int main(int argc, char *argv[])
{
	if (argc < 2)
		die_usage("missing command");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].fn(argc - 1, argv + 1);
	die_usage("unknown command '%s'", argv[1]);
	return RMIG_RESULT_USAGE;
}
