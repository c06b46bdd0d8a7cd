/* tunnel.c - `rmig tunnel send|recv`: options to rmig_tunnel_*, the signals
 * that stop it, its lines on stderr. */
#include "tunnel.h"

#include "rmig.h"
#include "rmig_tunnel.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TUNNEL_DEFAULT_PORT 7472

static struct rmig_tunnel *running; /* for the signal handler */

static void on_signal(int sig)
{
	(void)sig;
	if (running)
		rmig_tunnel_stop(running);
}

/* The tls link's messages name configuration fields (as rmig.c's
 * field_flags turns them into flags, for the tunnel's own two). */
static const struct {
	const char *field, *flag;
} tunnel_fields[] = {
	{ "config.tls on and the same credentials", "the same --psk-file or --tls-creds" },
	{ "config.tls off on both sides", "neither --psk-file nor --tls-creds on both sides" },
	{ "config.psk", "--psk-file" },
	{ "config.tls_creds", "--tls-creds" },
};

static void log_line(void *arg, const char *line)
{
	const char *p = line;

	(void)arg;
	fputs("rmig tunnel: ", stderr);
	while (*p) {
		size_t i, n = sizeof(tunnel_fields) / sizeof(tunnel_fields[0]);

		for (i = 0; i < n; i++)
			if (!strncmp(p, tunnel_fields[i].field, strlen(tunnel_fields[i].field)))
				break;
		if (i < n) {
			fputs(tunnel_fields[i].flag, stderr);
			p += strlen(tunnel_fields[i].field);
		} else {
			fputc(*p++, stderr);
		}
	}
	fputc('\n', stderr);
	fflush(stderr);
}

static int usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "rmig tunnel: ");
	fprintf(stderr, fmt, arg);
	fprintf(
	    stderr,
	    "\nusage: rmig tunnel send HOST[:PORT] --expose NAME=PATH... [--psk-file F]\n"
	    "       rmig tunnel recv --listen ADDR[:PORT] --forward NAME=PATH... "
	    "[--psk-file F]\n"
	    "       either: [--tls-creds DIR] [--resume-timeout SECONDS (30; 0: none)]\n"
	    "               [--transport tcp|rdma|rdma,tcp|auto (auto)] [--device RDMA_DEVICE]\n");
	return RMIG_RESULT_USAGE;
}

/* "host", "host:port", "[v6]:port" into host (brackets removed) and port. */
static int split_addr(char *arg, const char **host, uint16_t *port)
{
	char *colon = strrchr(arg, ':');
	char *end;
	long p = TUNNEL_DEFAULT_PORT;

	if (arg[0] == '[') {
		char *close = strchr(arg, ']');

		if (!close || (close[1] && close[1] != ':'))
			return -1;
		*close = 0;
		colon = close[1] ? close + 1 : NULL;
		arg++;
	} else if (colon && strchr(arg, ':') != colon) {
		colon = NULL; /* a bare IPv6 address */
	}
	if (colon) {
		*colon = 0;
		p = strtol(colon + 1, &end, 10);
		if (!colon[1] || *end || p < 0 || p > 65535)
			return -1;
	}
	*host = arg;
	*port = (uint16_t)p;
	return 0;
}

static int add_pair(struct rmig_tunnel *t, char *arg, const char *opt)
{
	char *eq = strchr(arg, '=');

	if (!eq)
		return usage("%s: give NAME=PATH", opt);
	*eq = 0;
	if (rmig_tunnel_add(t, arg, eq + 1))
		return usage("%s", rmig_tunnel_error(t));
	return 0;
}

enum {
	OPT_EXPOSE = 256,
	OPT_FORWARD,
	OPT_LISTEN,
	OPT_PSK,
	OPT_CREDS,
	OPT_RESUME,
	OPT_TRANSPORT,
	OPT_DEVICE
};

static const struct option tunnel_options[] = {
	{ "expose", required_argument, NULL, OPT_EXPOSE },
	{ "forward", required_argument, NULL, OPT_FORWARD },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "psk-file", required_argument, NULL, OPT_PSK },
	{ "tls-creds", required_argument, NULL, OPT_CREDS },
	{ "resume-timeout", required_argument, NULL, OPT_RESUME },
	{ "transport", required_argument, NULL, OPT_TRANSPORT },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ NULL, 0, NULL, 0 },
};

struct tunnel_args {
	char *listen;
	const char *psk_file, *creds;
	int pairs; /* --expose / --forward given */
};

static int set_resume(struct rmig_tunnel *t, const char *arg)
{
	char *end;
	long s = strtol(arg, &end, 10);

	if (!*arg || *end || s < 0 || s > 3600)
		return usage("--resume-timeout: '%s' is not 0..3600 seconds", arg);
	rmig_tunnel_set_resume_timeout(t, (unsigned)s * 1000);
	return 0;
}

static int set_device(struct rmig_tunnel *t, const char *dev)
{
	char opt[128];

	if (strchr(dev, ',') ||
	    snprintf(opt, sizeof(opt), "rdma.device=%s", dev) >= (int)sizeof(opt))
		return usage("--device: '%s' is not an RDMA device name", dev);
	if (rmig_tunnel_set_link_options(t, opt))
		return usage("--device: %s", rmig_tunnel_error(t));
	return 0;
}

static int parse(struct rmig_tunnel *t, int send, int argc, char *argv[], struct tunnel_args *a)
{
	int opt, rc = 0;

	optind = 1;
	opterr = 0; /* our own line, not getopt's ("send: unrecognized option") */
	while (!rc && (opt = getopt_long(argc, argv, ":", tunnel_options, NULL)) != -1) {
		switch (opt) {
		case OPT_EXPOSE:
			rc = send ? add_pair(t, optarg, "--expose")
				  : usage("%s is for tunnel send", "--expose");
			a->pairs += !rc;
			break;
		case OPT_FORWARD:
			rc = !send ? add_pair(t, optarg, "--forward")
				   : usage("%s is for tunnel recv", "--forward");
			a->pairs += !rc;
			break;
		case OPT_LISTEN:
			rc = !send ? (a->listen = optarg, 0)
				   : usage("%s is for tunnel recv", "--listen");
			break;
		case OPT_PSK: a->psk_file = optarg; break;
		case OPT_CREDS: a->creds = optarg; break;
		case OPT_RESUME: rc = set_resume(t, optarg); break;
		case OPT_DEVICE: rc = set_device(t, optarg); break;
		case OPT_TRANSPORT:
			rc = rmig_tunnel_set_transport(t, optarg)
				 ? usage("--transport: %s", rmig_tunnel_error(t))
				 : 0;
			break;
		case ':': rc = usage("%s needs a value", argv[optind - 1]); break;
		default:
			if (optopt > 0 && optopt < 256) {
				char o[3] = { '-', (char)optopt, 0 };

				rc = usage("%s: unknown option", o);
			} else {
				rc = usage("%s: unknown option", argv[optind - 1]);
			}
		}
	}
	return rc;
}

static int set_security(struct rmig_tunnel *t, const struct tunnel_args *a,
			tunnel_key_reader read_key)
{
	if (a->psk_file) {
		uint8_t key[1024];
		ssize_t n = read_key(a->psk_file, key, sizeof(key));
		int rc = rmig_tunnel_set_psk(t, key, (size_t)n);

		memset(key, 0, sizeof(key));
		if (rc)
			return usage("--psk-file: %s", rmig_tunnel_error(t));
	}
	if (a->creds && rmig_tunnel_set_tls_creds(t, a->creds))
		return usage("--tls-creds: %s", rmig_tunnel_error(t));
	return 0;
}

static int run(struct rmig_tunnel *t, char *addr)
{
	struct sigaction sa = { .sa_handler = on_signal };
	char given[256];
	const char *host;
	uint16_t port;
	int rc;

	snprintf(given, sizeof(given), "%s", addr); /* split_addr cuts addr */
	if (split_addr(addr, &host, &port))
		return usage("bad address '%s' (give HOST, HOST:PORT or [V6]:PORT)", given);
	running = t;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = rmig_tunnel_run(t, host, port);
	running = NULL;
	if (rc)
		log_line(NULL, rmig_tunnel_error(t));
	return rc ? RMIG_RESULT_FAILED : 0;
}

int tunnel_command(int argc, char *argv[], tunnel_key_reader read_key)
{
	struct tunnel_args a = { 0 };
	struct rmig_tunnel *t;
	char *addr;
	int send, rc;

	if (argc < 2 || (strcmp(argv[1], "send") && strcmp(argv[1], "recv")))
		return usage("%s", "give send or recv");
	send = !strcmp(argv[1], "send");
	if (rmig_tunnel_create(send ? RMIG_TUNNEL_SEND : RMIG_TUNNEL_RECV, &t))
		return RMIG_RESULT_FAILED;
	rmig_tunnel_set_log(t, log_line, NULL);
	rc = parse(t, send, argc - 1, argv + 1, &a);
	if (!rc)
		rc = set_security(t, &a, read_key);
	addr = send ? (optind == argc - 2 ? argv[optind + 1] : NULL) : a.listen;
	if (!rc && (!addr || (!send && optind != argc - 1)))
		rc = usage("%s", send ? "tunnel send needs exactly one HOST[:PORT]"
				      : "tunnel recv needs --listen ADDR[:PORT] and no argument");
	if (!rc && !a.pairs)
		rc = usage("%s", send ? "tunnel send needs --expose NAME=PATH"
				      : "tunnel recv needs --forward NAME=PATH");
	if (!rc)
		rc = run(t, addr);
	rmig_tunnel_destroy(t);
	return rc;
}
