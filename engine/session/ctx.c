/* ctx.c - the migration context, errors, progress, and control-message I/O
 * shared by the source and destination flows. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "last_error.h"
#include "listener.h"
#include "machine.h"

#define CTRL_ENCODE_MAX 2048 /* every control payload but STATE fits */
#define LAST_WORDS_MS 1000   /* a data channel broke: how long to look for an ABORT */
#define DEFAULT_STALL_MS 30000

int64_t rmig_now_ms(void)
{
	return rmig_link_now_ms(); /* one clock for the engine and its links */
}

double rmig_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void config_defaults(struct rmig_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->transport = "auto";
	cfg->host = "127.0.0.1";
	cfg->port = RMIG_DEFAULT_PORT;
	cfg->channels = 2;
	cfg->downtime_ms = 300;
	cfg->max_rounds = 30;
	cfg->on_no_converge = RMIG_NC_THROTTLE;
	cfg->verify = RMIG_VERIFY_ON;
	cfg->link_timeout_ms = 2000;
	cfg->failover = RMIG_FAILOVER_TCP;
	cfg->failover_timeout_ms = 10000;
	cfg->commit_timeout_ms = 10000;
	cfg->stall_timeout_ms = DEFAULT_STALL_MS;
	cfg->pin = RMIG_PIN_AUTO;
	cfg->gid_index = -1;
	cfg->handshake_timeout_ms = RMIG_DEFAULT_HANDSHAKE_MS;
}

/* The RMIG_0.3 versions; their RMIG_0.1 ones are api/abi_0_2.c's. */

RMIG_DEFAULT_VERSION(rmig_config_init_0_3, rmig_config_init, "RMIG_0.3");
RMIG_VERSIONED int rmig_config_init_0_3(struct rmig_config *cfg, size_t size)
{
	struct rmig_config full;

	if (!cfg)
		return rmig_fail(-EINVAL, "rmig_config_init: cfg is NULL");
	if (size < RMIG_CONFIG_MIN_SIZE || size > RMIG_CONFIG_MAX_SIZE)
		return rmig_fail(-EINVAL,
				 "rmig_config_init: size %zu, not in %zu (the first sized "
				 "struct rmig_config, 0.3)..%zu: pass sizeof(cfg)",
				 size, (size_t)RMIG_CONFIG_MIN_SIZE, (size_t)RMIG_CONFIG_MAX_SIZE);
	config_defaults(&full);
	memset(cfg, 0, size); /* members of a newer header: zero, "not used" */
	memcpy(cfg, &full, size < sizeof(full) ? size : sizeof(full));
	cfg->size = size;
	return 0;
}

/* The caller's config as this library's struct: its size bytes over the
 * defaults. Members past what this library knows must be zero (Linux's
 * copy_struct_from_user rule): one set there asks for something this
 * library would silently not do. */
int rmig_config_import(struct rmig_config *to, const struct rmig_config *from)
{
	size_t known = RMIG_CONFIG_KNOWN_END;

	/* Not a size rmig_config_init can have set (a struct never filled, or
	 * overwritten): refused before reading a byte past the known part. */
	if (from->size < RMIG_CONFIG_MIN_SIZE || from->size > RMIG_CONFIG_MAX_SIZE)
		return rmig_fail(-EINVAL,
				 "config.size is %zu: fill the config with "
				 "rmig_config_init(&cfg, sizeof(cfg)) first",
				 from->size);
	for (size_t i = known; i < from->size; i++)
		if (((const unsigned char *)from)[i])
			return rmig_fail(-E2BIG,
					 "config: byte %zu of %zu is set, past the %zu "
					 "this librmig %s knows: the program was built "
					 "against newer headers",
					 i, from->size, known, RMIG_VERSION_STRING);
	config_defaults(to);
	memcpy(to, from, from->size < known ? from->size : known);
	to->size = sizeof(*to);
	return 0;
}

/* rmig_ctx_create's message: the thread's, and where a 0.2 caller gave
 * room for one. */
static int create_failed(const struct rmig_config *cfg, int rc, const char *msg)
{
	if (cfg && cfg->create_err && cfg->create_err_len)
		snprintf(cfg->create_err, cfg->create_err_len, "%s", msg);
	return rmig_fail_msg(rc, msg);
}

static const char *tls_problem(const struct rmig_config *cfg)
{
	int creds = cfg->psk || (cfg->tls_creds && *cfg->tls_creds);

	if (cfg->tls < RMIG_TLS_AUTO || cfg->tls > RMIG_TLS_OFF)
		return "config.tls: not 0 (auto), 1 (on) or 2 (off)";
	if (cfg->tls == RMIG_TLS_ON && !creds)
		return "config.tls: encryption needs credentials (config.psk or config.tls_creds)";
	if (cfg->tls_hostname && *cfg->tls_hostname && !(cfg->tls_creds && *cfg->tls_creds))
		return "config.tls_hostname: only a certificate names a host (config.tls_creds)";
	if (cfg->tls == RMIG_TLS_OFF && cfg->tls_creds && *cfg->tls_creds)
		return "config.tls_creds: given with config.tls off, it would not be used";
	if (cfg->tls != RMIG_TLS_OFF && creds && cfg->pin == RMIG_PIN_ALL &&
	    (cfg->tls == RMIG_TLS_ON || !rmig_link_host_is_loopback(cfg->host)))
		return "config.pin=all places pages by RDMA WRITE, which no TLS record can "
		       "seal: with encryption use config.pin=staging (sealed staging "
		       "buffers), or config.tls off on a trusted fabric";
	return NULL;
}

/* The first thing wrong with a configuration, by field name. */
static const char *config_problem(const struct rmig_config *cfg)
{
	if (!cfg->transport)
		return "config.transport is NULL";
	if (cfg->channels == 0 || cfg->channels > RMIG_MAX_CHANNELS)
		return "config.channels: not in 1..64";
	if (cfg->max_rounds == 0)
		return "config.max_rounds: 0";
	if (cfg->pin > RMIG_PIN_STAGING)
		return "config.pin: not an enum rmig_pin";
	if (cfg->failover > RMIG_FAILOVER_NONE)
		return "config.failover: not an enum rmig_failover";
	if (cfg->verify < RMIG_VERIFY_OFF || cfg->verify > RMIG_VERIFY_FULL)
		return "config.verify: not 0 (off), 1 (on) or 2 (full)";
	if (cfg->psk && (cfg->psk_len < RMIG_MIN_PSK || cfg->psk_len > RMIG_MAX_PSK))
		return "config.psk_len: not in 16..1024";
	return tls_problem(cfg);
}

int rmig_ctx_new(struct rmig_ctx **out, const struct rmig_config *cfg, struct rmig_backend *be)
{
	struct rmig_ctx *ctx;

	if (!cfg)
		return -EINVAL;
	if (config_problem(cfg))
		return create_failed(cfg, -EINVAL, config_problem(cfg));
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return create_failed(cfg, -ENOMEM, "out of memory");
	ctx->cfg = *cfg;
	if (cfg->psk) { /* our own copy: the caller may wipe theirs */
		memcpy(ctx->psk, cfg->psk, cfg->psk_len);
		ctx->cfg.psk = ctx->psk;
	}
	if (!ctx->cfg.link_timeout_ms)
		ctx->cfg.link_timeout_ms = 2000;
	if (!ctx->cfg.failover_timeout_ms)
		ctx->cfg.failover_timeout_ms = 10000;
	if (!ctx->cfg.commit_timeout_ms)
		ctx->cfg.commit_timeout_ms = 10000;
	if (!ctx->cfg.handshake_timeout_ms)
		ctx->cfg.handshake_timeout_ms = RMIG_DEFAULT_HANDSHAKE_MS;
	if (!ctx->cfg.stall_timeout_ms)
		ctx->cfg.stall_timeout_ms = DEFAULT_STALL_MS;
	ctx->be = be;
	atomic_init(&ctx->limit_bandwidth, ctx->cfg.max_bandwidth);
	atomic_init(&ctx->limit_downtime_ms, ctx->cfg.downtime_ms);
	pthread_mutex_init(&ctx->prog_lock, NULL);
	pthread_mutex_init(&ctx->ctrl_send_lock, NULL);
	pthread_mutex_init(&ctx->hb_lock, NULL);
	pthread_cond_init(&ctx->hb_cond, NULL);
	ctx->sm.m = &rmig_src_machine; /* until rmig_send/rmig_recv says which */
	ctx->prog.phase = "idle";
	ctx->stats.transport = "none";
	ctx->stats.pin = "none";
	ctx->stats.tls = "off";
	ctx->stats.result = RMIG_RESULT_FAILED;
	*out = ctx;
	return 0;
}

RMIG_DEFAULT_VERSION(rmig_ctx_create_0_3, rmig_ctx_create, "RMIG_0.3");
RMIG_VERSIONED int rmig_ctx_create_0_3(struct rmig_ctx **out, const struct rmig_config *user_cfg,
				       struct rmig_backend *be)
{
	struct rmig_config cfg_copy, *cfg = &cfg_copy;
	struct rmig_ctx *ctx;
	int rc;

	if (!user_cfg || !be || !out)
		return rmig_fail(-EINVAL, "rmig_ctx_create: no configuration, backend or out");
	rc = rmig_config_import(cfg, user_cfg);
	if (rc) /* create_err only from a struct whose size was plausible */
		return rc == -E2BIG ? create_failed(user_cfg, rc, rmig_last_error()) : rc;
	rc = rmig_ctx_new(&ctx, cfg, be);
	if (rc)
		return rc;
	rc = rmig_links_create(ctx);
	if (rc) {
		create_failed(cfg, rc, ctx->err);
		rmig_ctx_destroy(ctx); /* one cleanup path: nothing runs yet */
		return rc;
	}
	*out = ctx;
	return 0;
}

void rmig_ctx_destroy(struct rmig_ctx *ctx)
{
	if (!ctx)
		return;
	rmig_heartbeat_stop(ctx);
	rmig_ctx_drop_conns(ctx); /* before the listener they were accepted on */
	rmig_listener_destroy(ctx->own_listener);
	rmig_links_destroy(ctx);
	pthread_mutex_destroy(&ctx->prog_lock);
	pthread_mutex_destroy(&ctx->ctrl_send_lock);
	pthread_mutex_destroy(&ctx->hb_lock);
	pthread_cond_destroy(&ctx->hb_cond);
	explicit_bzero(ctx->psk, sizeof(ctx->psk));
	free(ctx->rxbuf);
	free(ctx);
}

int rmig_ctx_own_conn(struct rmig_ctx *ctx, struct rmig_link *conn)
{
	if (ctx->nconns == ctx->conns_cap) {
		unsigned cap = ctx->conns_cap ? 2 * ctx->conns_cap : 4;
		struct rmig_link **n = realloc(ctx->conns, cap * sizeof(*n));

		if (!n)
			return rmig_err(ctx, -ENOMEM, "out of memory");
		ctx->conns = n;
		ctx->conns_cap = cap;
	}
	ctx->conns[ctx->nconns++] = conn;
	ctx->link = conn;
	return 0;
}

void rmig_ctx_drop_conns(struct rmig_ctx *ctx)
{
	ctx->link = ctx->linkset.n ? ctx->linkset.at[0] : NULL;
	for (unsigned i = 0; i < ctx->nconns; i++) {
		ctx->conns[i]->ops->close_session(ctx->conns[i]);
		rmig_link_destroy(ctx->conns[i]);
	}
	free(ctx->conns);
	ctx->conns = NULL;
	ctx->nconns = ctx->conns_cap = 0;
}

void rmig_ctx_set_backend(struct rmig_ctx *ctx, struct rmig_backend *be)
{
	ctx->be = be;
}

void rmig_cancel(struct rmig_ctx *ctx)
{
	/* Only atomics and shutdown(2): safe in a signal handler. The control
	 * stream stays writable so that the ABORT still gets out. Store, then
	 * look: the engine does the opposite (see no_cancel). */
	atomic_store(&ctx->cancelled, 1);
	if (atomic_load(&ctx->no_cancel))
		return;
	for (unsigned i = 0; i < rmig_links_count(ctx); i++) {
		struct rmig_link *l = rmig_links_at(ctx, i);

		l->ops->interrupt(l, RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV);
	}
	/* A destination's connection is not in the list (listener.c). */
	if (ctx->nconns && ctx->link)
		ctx->link->ops->interrupt(ctx->link,
					  RMIG_LINK_STOP_DATA | RMIG_LINK_STOP_CTRL_RECV);
}

int rmig_cancel_close(struct rmig_ctx *ctx)
{
	/* Store, then look: rmig_cancel() does the opposite, so a cancel
	 * racing with this one is either seen here or ignored there. */
	atomic_store(&ctx->no_cancel, 1);
	if (atomic_load(&ctx->cancelled))
		return rmig_err(ctx, -ECANCELED, "cancelled by the operator");
	return 0;
}

int rmig_cancel_requested(struct rmig_ctx *ctx)
{
	return atomic_load(&ctx->cancelled) && !atomic_load(&ctx->no_cancel);
}

int rmig_err(struct rmig_ctx *ctx, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	return rc;
}

const char *rmig_errmsg(const struct rmig_ctx *ctx)
{
	return ctx->err;
}

const struct rmig_stats *rmig_stats(const struct rmig_ctx *ctx)
{
	return &ctx->stats;
}

const char *rmig_version(int *major, int *minor, int *patch)
{
	if (major)
		*major = RMIG_VERSION_MAJOR;
	if (minor)
		*minor = RMIG_VERSION_MINOR;
	if (patch)
		*patch = RMIG_VERSION_PATCH;
	return RMIG_VERSION_STRING;
}

const char *rmig_result_name(enum rmig_result r)
{
	switch (r) {
	case RMIG_RESULT_MIGRATED: return "migrated";
	case RMIG_RESULT_FAILED: return "failed";
	case RMIG_RESULT_USAGE: return "usage";
	case RMIG_RESULT_ROLLED_BACK: return "rolled_back";
	case RMIG_RESULT_UNKNOWN: return "unknown";
	case RMIG_RESULT_DRY_RUN: return "dry_run";
	}
	return "?";
}

void rmig_emit(struct rmig_ctx *ctx, const struct rmig_event *ev)
{
	if (ctx->cfg.on_event)
		ctx->cfg.on_event(ctx->cfg.event_arg, ev);
}

void rmig_progress(struct rmig_ctx *ctx, struct rmig_progress *p)
{
	pthread_mutex_lock(&ctx->prog_lock);
	*p = ctx->prog;
	pthread_mutex_unlock(&ctx->prog_lock);
	p->bytes_sent = atomic_load(&ctx->live_bytes);
}

int rmig_layout_from_regions(struct rmig_ctx *ctx, const struct rmig_region *r, size_t n)
{
	char why[256];

	/* A backend carrying its own stream has no regions; any other has some. */
	if (ctx->be->ops->stream_open ? n != 0 : n == 0 || n > RMIG_MAX_REGIONS)
		return rmig_err(
		    ctx, -EINVAL, "backend %s has %zu regions, must be %s", ctx->be->ops->name, n,
		    ctx->be->ops->stream_open ? "none (it carries its own stream)" : "1..64");
	ctx->layout.count = (uint32_t)n;
	for (size_t i = 0; i < n; i++)
		ctx->layout.r[i] = (struct rmig_wire_region){
			.id = r[i].id, .page_size = r[i].page_size, .gpa = r[i].gpa, .len = r[i].len
		};
	if (rmig_layout_check(&ctx->layout, why, sizeof(why)))
		return rmig_err(ctx, -EINVAL, "backend memory layout is invalid: %s", why);
	ctx->regions = r;
	ctx->nregions = n;
	return 0;
}

/* ---- control stream ---- */

/* Encode and send under ctrl_send_lock: the heartbeat thread sends too. */
static int ctrl_send_locked(struct rmig_ctx *ctx, const struct rmig_msg *m, int timeout_ms,
			    char *err, size_t errlen)
{
	uint8_t hdr[RMIG_FRAME_HDR_LEN], payload[CTRL_ENCODE_MAX];
	struct iovec iov[3];
	size_t len;
	int rc, niov = 2;

	if (m->type == RMIG_MSG_STATE || m->type == RMIG_MSG_MEM_KEYS ||
	    m->type == RMIG_MSG_STREAM) {
		/* The blob can be large: send it from where it is. */
		len = m->u.state.len;
		iov[1] = (struct iovec){ (void *)m->u.state.data, len };
	} else if (m->type == RMIG_MSG_PAGE_DATA) {
		/* The page, straight from guest memory, behind its reference. */
		rmig_page_ref_encode(payload, m->u.page.region_id, m->u.page.page);
		iov[1] = (struct iovec){ payload, RMIG_PAGE_REF_LEN };
		iov[2] = (struct iovec){ (void *)m->u.page.data, m->u.page.len };
		len = RMIG_PAGE_REF_LEN + (size_t)m->u.page.len;
		niov = 3;
	} else {
		len = rmig_msg_encode(m, payload, sizeof(payload));
		if (!len) {
			snprintf(err, errlen, "cannot encode %s", rmig_msg_name(m->type));
			return -EINVAL;
		}
		iov[1] = (struct iovec){ payload, len };
	}
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	pthread_mutex_lock(&ctx->ctrl_send_lock);
	rmig_frame_hdr_encode(hdr, m->type, 0, (uint32_t)len, ctx->ctrl_tx_seq++);
	rc = ctx->link->ops->ctrl_send(ctx->link, iov, len ? niov : 1, timeout_ms);
	if (rc)
		snprintf(err, errlen, "sending %s: %s", rmig_msg_name(m->type), ctx->link->err);
	pthread_mutex_unlock(&ctx->ctrl_send_lock);
	return rc;
}

int rmig_ctrl_send(struct rmig_ctx *ctx, const struct rmig_msg *m)
{
	return ctrl_send_locked(ctx, m, (int)ctx->cfg.link_timeout_ms, ctx->err, sizeof(ctx->err));
}

int rmig_ctrl_send_err(struct rmig_ctx *ctx, const struct rmig_msg *m, char *err, size_t errlen)
{
	return ctrl_send_locked(ctx, m, (int)ctx->cfg.link_timeout_ms, err, errlen);
}

int rmig_ctrl_send_simple(struct rmig_ctx *ctx, uint8_t type, uint64_t value)
{
	struct rmig_msg m = { .type = type };

	m.u.value = value;
	return rmig_ctrl_send(ctx, &m);
}

int rmig_ctrl_send_abort(struct rmig_ctx *ctx, int code, const char *reason)
{
	struct rmig_msg *m = calloc(1, sizeof(*m));
	char ignored[256]; /* a failed ABORT must not hide the real error */
	int rc;

	if (!m)
		return -ENOMEM;
	if (rmig_cancel_requested(ctx)) {
		code = RMIG_ABORT_CANCELLED;
		reason = "cancelled by the operator";
	}
	m->type = RMIG_MSG_ABORT;
	m->u.abort.code = code;
	snprintf(m->u.abort.reason, sizeof(m->u.abort.reason), "%s", reason);
	rc = ctrl_send_locked(ctx, m, 1000, ignored, sizeof(ignored));
	free(m);
	return rc;
}

void rmig_deadline_start(struct rmig_ctx *ctx, unsigned limit_ms, int data, const char *what, ...)
{
	struct rmig_deadline *d = &ctx->deadline;
	va_list ap;

	d->limit_ms = limit_ms;
	d->data = data;
	va_start(ap, what);
	vsnprintf(d->what, sizeof(d->what), what, ap);
	va_end(ap);
	rmig_deadline_progress(ctx);
}

void rmig_deadline_stop(struct rmig_ctx *ctx)
{
	ctx->deadline.limit_ms = 0;
}

void rmig_deadline_progress(struct rmig_ctx *ctx)
{
	ctx->deadline.since_ms = rmig_now_ms();
	ctx->deadline.bytes = atomic_load(&ctx->live_bytes);
}

/* Data moved since the last look: here, or, placed by RDMA WRITE where we
 * cannot see it, by the count in the peer's heartbeat. */
static int data_moved(struct rmig_ctx *ctx, const struct rmig_msg *m)
{
	struct rmig_deadline *d = &ctx->deadline;
	int moved = atomic_load(&ctx->live_bytes) != d->bytes;

	if (ctx->placement && m->type == RMIG_MSG_HEARTBEAT && m->u.value != d->peer_bytes) {
		moved = 1;
		d->peer_bytes = m->u.value;
	}
	return moved;
}

/* On every message from the peer: -ETIME once the deadline has passed. */
static int deadline_check(struct rmig_ctx *ctx, const struct rmig_msg *m)
{
	struct rmig_deadline *d = &ctx->deadline;

	if (!d->limit_ms)
		return 0;
	if (d->data && data_moved(ctx, m))
		rmig_deadline_progress(ctx);
	if (rmig_now_ms() - d->since_ms <= d->limit_ms)
		return 0;
	return rmig_err(ctx, -ETIME, "peer %s stalled: %s", ctx->link->peer, d->what);
}

/* The peer's ABORT: its reason; a cancel there is said as such. Its code
 * is a verdict (not started, all in, lost, dry run) only from a peer that
 * proved itself on this connection: anyone at the peer's address can
 * answer a connection with an ABORT. */
static int peer_aborted(struct rmig_ctx *ctx, const struct rmig_msg *m)
{
	ctx->peer_abort = ctx->peer_proven ? m->u.abort.code : 0;
	if (ctx->peer_abort == RMIG_ABORT_DRY_RUN) /* not a failure: the verdict, as said */
		return rmig_err(ctx, -ECONNABORTED, "%s", m->u.abort.reason);
	if (ctx->peer_abort == RMIG_ABORT_CANCELLED)
		return rmig_err(ctx, -ECONNABORTED, "the %s cancelled the migration (peer %s: %s)",
				ctx->sm.m == &rmig_dst_machine ? "source" : "destination",
				ctx->link->peer, m->u.abort.reason);
	return rmig_err(ctx, -ECONNABORTED, "peer %s aborted: %s", ctx->link->peer,
			m->u.abort.reason);
}

int rmig_link_failure(int rc)
{
	return rc < 0 && rc != -ECONNABORTED && rc != -EPROTO && rc != -EBADMSG &&
	       rc != -ECANCELED && rc != -EACCES && rc != -EILSEQ && rc != -ENOMEM &&
	       rc != -EPROTONOSUPPORT && rc != -EPERM && rc != -EINVAL && rc != -ETIME &&
	       rc != RMIG_ERR_LOCAL;
}

/* ---- heartbeats ---- */

static void *heartbeat_main(void *arg)
{
	struct rmig_ctx *ctx = arg;
	unsigned every = ctx->cfg.link_timeout_ms / 4 ? ctx->cfg.link_timeout_ms / 4 : 1;
	struct rmig_msg m = { .type = RMIG_MSG_HEARTBEAT };
	char ignored[256]; /* a lost link is the control thread's to report */

	pthread_mutex_lock(&ctx->hb_lock);
	while (!ctx->hb_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)(every % 1000) * 1000000;
		ts.tv_sec += every / 1000 + ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&ctx->hb_cond, &ctx->hb_lock, &ts);
		if (ctx->hb_stop || ctx->hb_paused)
			continue;
		/* What moved so far: with RDMA WRITE, the destination sees
		 * its memory fill up no other way (a stall deadline). */
		m.u.value = atomic_load(&ctx->live_bytes);
		ctx->hb_sending = 1;
		pthread_mutex_unlock(&ctx->hb_lock);
		ctrl_send_locked(ctx, &m, (int)ctx->cfg.link_timeout_ms, ignored, sizeof(ignored));
		pthread_mutex_lock(&ctx->hb_lock);
		ctx->hb_sending = 0;
		pthread_cond_broadcast(&ctx->hb_cond);
	}
	pthread_mutex_unlock(&ctx->hb_lock);
	return NULL;
}

int rmig_heartbeat_start(struct rmig_ctx *ctx)
{
	if (ctx->hb_running) {
		rmig_heartbeat_pause(ctx, 0);
		return 0;
	}
	ctx->hb_stop = 0;
	ctx->hb_paused = 0;
	if (pthread_create(&ctx->hb_tid, NULL, heartbeat_main, ctx))
		return rmig_err(ctx, -EAGAIN, "cannot start the heartbeat thread");
	ctx->hb_running = 1;
	return 0;
}

void rmig_heartbeat_pause(struct rmig_ctx *ctx, int paused)
{
	pthread_mutex_lock(&ctx->hb_lock);
	ctx->hb_paused = paused;
	while (paused && ctx->hb_sending) /* the link may be swapped after this */
		pthread_cond_wait(&ctx->hb_cond, &ctx->hb_lock);
	pthread_mutex_unlock(&ctx->hb_lock);
}

void rmig_heartbeat_stop(struct rmig_ctx *ctx)
{
	if (!ctx->hb_running)
		return;
	pthread_mutex_lock(&ctx->hb_lock);
	ctx->hb_stop = 1;
	pthread_cond_broadcast(&ctx->hb_cond);
	pthread_mutex_unlock(&ctx->hb_lock);
	pthread_join(ctx->hb_tid, NULL);
	ctx->hb_running = 0;
}

/* Read with care: a deadline of a whole exchange runs (an opening, a
 * failover, the question after GO: not a data stall's, which progress
 * moves) and the peer has not proved our key on this connection. */
static int careful(const struct rmig_ctx *ctx)
{
	return ctx->deadline.limit_ms && !ctx->deadline.data && !(ctx->peer_proven && ctx->cfg.psk);
}

/* len bytes of the control stream into buf. With care (careful()), in
 * pieces of what has come (a byte at a time where the link cannot say),
 * each wait cut to what is left of the deadline and one read's timeout: a
 * peer that trickles a frame, a byte just inside each link timeout, would
 * otherwise hold the read for as long as the frame is long, the deadline
 * being checked only between frames. The read's timeout past the deadline
 * is what a silent peer gets too, and lets a verdict on its way (a late
 * STARTED) still count. */
static int recv_in_time(struct rmig_ctx *ctx, void *buf, size_t len, int timeout_ms)
{
	const struct rmig_deadline *d = &ctx->deadline;
	struct rmig_link *l = ctx->link;
	int64_t end = d->since_ms + d->limit_ms + (timeout_ms > 0 ? timeout_ms : 0);
	int some = RMIG_LINK_HAS(l->ops, recv_some);
	uint8_t *p = buf;
	size_t got = 0;
	int rc;

	if (!careful(ctx)) {
		rc = l->ops->ctrl_recv(l, buf, len, timeout_ms);
		return rc ? rmig_err(ctx, rc, "%s", l->err) : 0;
	}
	while (got < len) {
		int64_t left = end - rmig_now_ms();
		int tmo = left < INT_MAX ? (int)left : INT_MAX;

		if (timeout_ms >= 0 && timeout_ms < tmo)
			tmo = timeout_ms;
		if (left <= 0)
			return rmig_err(ctx, -ETIME, "peer %s stalled: %s", l->peer, d->what);
		rc = some ? l->ops->recv_some(l, -1, p + got, 1, len - got, tmo)
			  : l->ops->ctrl_recv(l, p + got, 1, tmo);
		if (rc == -ETIMEDOUT && rmig_now_ms() >= end)
			return rmig_err(ctx, -ETIME, "peer %s stalled: %s", l->peer, d->what);
		if (rc < 0)
			return rmig_err(ctx, rc, "%s", l->err);
		got += some ? (size_t)rc : 1;
	}
	return 0;
}

int rmig_ctrl_recv(struct rmig_ctx *ctx, struct rmig_msg *m, int timeout_ms)
{
	uint8_t hdr[RMIG_FRAME_HDR_LEN];
	struct rmig_frame_hdr fh;
	char why[256];
	int rc;

	for (;;) {
		rc = recv_in_time(ctx, hdr, sizeof(hdr), timeout_ms);
		if (rc)
			return rc;
		rc = rmig_frame_hdr_decode(hdr, &fh, why, sizeof(why));
		if (rc)
			return rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
		if (fh.seq != ctx->ctrl_rx_seq)
			return rmig_err(ctx, -EBADMSG,
					"bad frame from %s: control sequence %llu, expected %llu",
					ctx->link->peer, (unsigned long long)fh.seq,
					(unsigned long long)ctx->ctrl_rx_seq);
		ctx->ctrl_rx_seq++;
		if (rmig_is_data_frame(fh.type) || fh.type == RMIG_MSG_CHANNEL)
			return rmig_err(ctx, -EBADMSG,
					"bad frame from %s: %s on the control stream",
					ctx->link->peer, rmig_msg_name(fh.type));
		if (ctx->rx_limit && RMIG_FRAME_HDR_LEN + (size_t)fh.len > ctx->rx_limit)
			return rmig_err(ctx, -EBADMSG,
					"bad frame from %s: a %u-byte %s before authentication (a "
					"frame is at most %zu bytes then)",
					ctx->link->peer, fh.len, rmig_msg_name(fh.type),
					ctx->rx_limit);
		if (fh.len > ctx->rxcap) {
			/* Bounded by the type's maximum, checked in the header decode. */
			uint8_t *nb = realloc(ctx->rxbuf, fh.len);

			if (!nb)
				return rmig_err(ctx, -ENOMEM, "no memory for a %u-byte %s", fh.len,
						rmig_msg_name(fh.type));
			ctx->rxbuf = nb;
			ctx->rxcap = fh.len;
		}
		if (fh.len) {
			rc = recv_in_time(ctx, ctx->rxbuf, fh.len, timeout_ms);
			if (rc)
				return rc;
		}
		rc = rmig_msg_decode(fh.type, ctx->rxbuf, fh.len, m, why, sizeof(why));
		if (rc)
			return rmig_err(ctx, rc, "bad frame from %s: %s", ctx->link->peer, why);
		if (m->type == RMIG_MSG_ABORT)
			return peer_aborted(ctx, m);
		/* STARTED is a verdict, never a stall: a late one still counts
		 * (thrown away, it would leave a started guest "unknown"). */
		rc = m->type == RMIG_MSG_STARTED ? 0 : deadline_check(ctx, m);
		if (rc)
			return rc;
		if (m->type == RMIG_MSG_HEARTBEAT)
			continue;
		/* The one place where a message the phase does not expect is refused. */
		if (!rmig_phase_accepts(ctx->sm.m, ctx->sm.phase, m->type))
			return rmig_err(ctx, -EPROTO, "protocol error: peer %s sent %s during %s",
					ctx->link->peer, rmig_msg_name(m->type),
					rmig_phase_name(ctx->sm.m, ctx->sm.phase));
		return 0;
	}
}

int rmig_ctrl_last_words(struct rmig_ctx *ctx, int rc)
{
	struct rmig_deadline watch = ctx->deadline;
	unsigned grace = ctx->cfg.link_timeout_ms;
	struct rmig_msg *m = calloc(1, sizeof(*m));
	char why[sizeof(ctx->err)];
	int said = rc;

	/* A receiver may have stopped control receives to wake us. A cancel
	 * sets its flag before it interrupts: seen here if the interrupt
	 * could have been undone (and then stopped again), else it stops the
	 * read below. */
	if (!m)
		return rc;
	rmig_link_uninterrupt(ctx->link, RMIG_LINK_STOP_CTRL_RECV);
	if (atomic_load(&ctx->cancelled)) {
		ctx->link->ops->interrupt(ctx->link, RMIG_LINK_STOP_CTRL_RECV);
		free(m);
		return rc;
	}
	grace = grace < LAST_WORDS_MS ? grace : LAST_WORDS_MS;
	memcpy(why, ctx->err, sizeof(why));
	rmig_deadline_start(ctx, grace, 0, "no ABORT after a data channel broke");
	do /* what it sent before the ABORT (ROUND_END, ...) is moot now */
		said = rmig_ctrl_recv(ctx, m, (int)grace);
	while (!said);
	ctx->deadline = watch;
	free(m);
	if (said == -ECONNABORTED)
		return said;
	memcpy(ctx->err, why, sizeof(why));
	return rc;
}

int rmig_ctrl_expect(struct rmig_ctx *ctx, uint8_t type, struct rmig_msg *m, int timeout_ms)
{
	int rc = rmig_ctrl_recv(ctx, m, timeout_ms);

	if (rc)
		return rc;
	if (m->type != type)
		return rmig_err(ctx, -EPROTO, "protocol error: peer %s sent %s, expected %s",
				ctx->link->peer, rmig_msg_name(m->type), rmig_msg_name(type));
	return 0;
}

int rmig_chan_send_frame(struct rmig_ctx *ctx, unsigned chan, uint64_t *seq, uint8_t type,
			 uint8_t *hdrbuf, size_t sublen, struct iovec *data, int ndata)
{
	struct iovec iov[RMIG_MAX_RUNS + 1];
	size_t len = sublen;
	int rc;

	for (int i = 0; i < ndata; i++)
		len += data[i].iov_len;
	rmig_frame_hdr_encode(hdrbuf, type, 0, (uint32_t)len, (*seq)++);
	iov[0] = (struct iovec){ hdrbuf, RMIG_FRAME_HDR_LEN + sublen };
	for (int i = 0; i < ndata; i++)
		iov[i + 1] = data[i];
	rc = ctx->link->ops->chan_send(ctx->link, chan, iov, ndata + 1,
				       (int)ctx->cfg.link_timeout_ms);
	if (rc == 0)
		atomic_fetch_add(&ctx->live_bytes, RMIG_FRAME_HDR_LEN + len);
	return rc;
}
