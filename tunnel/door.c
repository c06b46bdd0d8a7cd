/* door.c - the receiving tunnel's door: listening, each connection's
 * opening (TLS, then HELLO), and handing proven ones to the tunnel.
 *
 * Anyone who can reach the port can connect, so nothing an unproven peer
 * does may cost the tunnel's own sender anything, above all its way back
 * after a lost link (engine/session/listener.c does the same for
 * migrations):
 * - the door accepts on its own thread, and each connection opens on its
 *   own thread, so a silent or trickling peer holds only itself up;
 * - an opening has TUN_OPEN_MS in all, TLS handshake included: past it the
 *   connection is cut;
 * - at most DOOR_MAX_PENDING openings at once, DOOR_MAX_PER_ADDR of them
 *   from one address (IPv6: one /64); past either, an idler is cut for the
 *   newcomer as transport/admission.h says (a legitimate opening takes
 *   milliseconds), so a flood pushes out its own connections, not the
 *   sender's;
 * - refusals are logged one line each, up to DOOR_LINES_PER_S a second,
 *   then counted.
 */
#include "door.h"

#include "admission.h"
#include "conn.h"
#include "link.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DOOR_MAX_PENDING 32
#define DOOR_MAX_PER_ADDR 4
#define DOOR_EVICT_AGE_MS 1000
#define DOOR_SLICE_MS 100
#define DOOR_LINES_PER_S 20
#define DOOR_READY 4 /* proven openings not yet taken; older ones are dropped */
#define DOOR_STACK (128u << 10)
/* Slots for opening threads: twice the cap on live openings, so that at the
 * cap there is always a slot for the newcomer while the opening cut for it
 * (and others cut before) are still ending. */
#define DOOR_SLOTS (2 * DOOR_MAX_PENDING)
#define DOOR_SLOT_WAIT_MS 200 /* every slot still ending: wait this long for one */

struct opening {
	int used, done;
	struct rmig_link *link; /* NULL once handed over or closed */
	char addr[RMIG_ADMIT_ADDR_LEN];
	int64_t since_ms;
	int cut; /* the door cut it (deadline, or room for a newcomer) */
	char cut_why[128];
	pthread_t tid;
	struct tun_door *door;
};

/* One listening link (one transport) and its accepting thread. */
struct ear {
	struct tun_door *door;
	struct rmig_link *listener;
	pthread_t tid;
};

struct tun_door {
	const struct tun_security *sec;
	struct ear ears[TUN_MAX_KINDS];
	int nears;
	tun_door_log_fn log;
	void *log_arg;
	int wake_fd;
	atomic_int stop;
	pthread_mutex_t lock;
	pthread_cond_t ended; /* an opening thread is done */
	struct opening pend[DOOR_SLOTS];
	struct tun_proven ready[DOOR_READY];
	int nready;
	int64_t line_second;
	unsigned lines, suppressed;
};

/* One line per refusal, at most DOOR_LINES_PER_S a second (a flood is
 * counted and reported once the second is over). Lock held. */
static void refused_line(struct tun_door *d, const char *peer, const char *why)
{
	int64_t second = rmig_link_now_ms() / 1000;

	if (second != d->line_second) {
		if (d->suppressed)
			d->log(d->log_arg, "%u more connections refused in one second",
			       d->suppressed);
		d->line_second = second;
		d->lines = d->suppressed = 0;
	}
	if (d->lines++ < DOOR_LINES_PER_S)
		d->log(d->log_arg, "%s refused: %s", peer, why);
	else
		d->suppressed++;
}

static void close_link(struct rmig_link *l)
{
	if (l)
		rmig_link_destroy(l);
}

static void cut(struct opening *p, const char *why)
{
	p->cut = 1;
	snprintf(p->cut_why, sizeof(p->cut_why), "%s", why);
	p->link->ops->interrupt(p->link, RMIG_LINK_STOP_CTRL_RECV | RMIG_LINK_STOP_CTRL_SEND |
					     RMIG_LINK_STOP_DATA);
}

/* A proven opening for the tunnel; the oldest waiting one gives way. */
static void hand_over(struct tun_door *d, const struct tun_proven *pv)
{
	struct rmig_link *dropped = NULL;
	uint64_t one = 1;

	pthread_mutex_lock(&d->lock);
	if (d->nready == DOOR_READY) {
		dropped = d->ready[0].link;
		memmove(d->ready, d->ready + 1, (DOOR_READY - 1) * sizeof(d->ready[0]));
		d->nready--;
	}
	d->ready[d->nready++] = *pv;
	pthread_mutex_unlock(&d->lock);
	if (dropped) {
		tun_send_refusal(dropped, "superseded by a newer connection");
		close_link(dropped);
	}
	if (write(d->wake_fd, &one, sizeof(one)) < 0)
		return; /* a full counter wakes the tunnel as well */
}

/* The opening: who may connect, then the peer's HELLO. */
static void *opening_main(void *arg)
{
	struct opening *p = arg;
	struct tun_door *d = p->door;
	struct tun_proven pv = { .link = p->link };
	char why[256] = "";
	int rc = 0;

	if (!tun_secured(d->sec) && !p->link->peer_loopback) {
		snprintf(why, sizeof(why),
			 "without --psk-file or --tls-creds only loopback peers are accepted");
		rc = -EACCES;
	}
	if (!rc)
		rc = tun_read_hello(p->link, TUN_OPEN_MS, &pv.flags, pv.token, why, sizeof(why));
	if (rc && rc != -ETIMEDOUT && rc != -ECANCELED && !p->cut)
		tun_send_refusal(p->link, why);
	/* Taken out of p under the lock: the reaper must never cut a link the
	 * tunnel already has, nor one being closed. */
	pthread_mutex_lock(&d->lock);
	pv.link = p->link;
	p->link = NULL;
	if (p->cut) {
		snprintf(why, sizeof(why), "%s", p->cut_why);
		rc = rc ? rc : -ECANCELED;
	} else if (rc == -ETIMEDOUT) {
		snprintf(why, sizeof(why), "no HELLO within %d ms", TUN_OPEN_MS);
	}
	if (rc)
		refused_line(d, pv.link->peer, why);
	pthread_mutex_unlock(&d->lock);
	if (rc)
		close_link(pv.link);
	else
		hand_over(d, &pv);
	pthread_mutex_lock(&d->lock);
	p->done = 1;
	pthread_cond_signal(&d->ended);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* Join finished openings, cut those past their time. Lock held. */
static void reap(struct tun_door *d)
{
	int64_t now = rmig_link_now_ms();

	for (int i = 0; i < DOOR_SLOTS; i++) {
		struct opening *p = &d->pend[i];

		if (!p->used)
			continue;
		if (p->done) {
			pthread_join(p->tid, NULL);
			memset(p, 0, sizeof(*p));
		} else if (p->link && !p->cut && now - p->since_ms >= TUN_OPEN_MS) {
			cut(p, "no complete opening in time");
		}
	}
}

static int live(const struct opening *p)
{
	return p->used && !p->done && p->link && !p->cut;
}

/* Room for one more opening from addr (admission.h): NULL, an idler cut
 * for it, or why it is refused. Lock held. */
static const char *make_room(struct tun_door *d, const char *addr, char *why, size_t len)
{
	static const struct rmig_admit_policy policy = { .max_total = DOOR_MAX_PENDING,
							 .max_per_addr = DOOR_MAX_PER_ADDR,
							 .evict_age_ms = DOOR_EVICT_AGE_MS };
	struct rmig_admit_opening o[DOOR_SLOTS];
	struct opening *who[DOOR_SLOTS];
	unsigned n = 0;
	int k;

	for (int i = 0; i < DOOR_SLOTS; i++) {
		if (!live(&d->pend[i]))
			continue;
		who[n] = &d->pend[i];
		o[n++] = (struct rmig_admit_opening){ d->pend[i].addr, d->pend[i].since_ms };
	}
	k = rmig_admit_decide(&policy, o, n, addr, rmig_link_now_ms(), why, len);
	if (k == RMIG_ADMIT_REFUSE)
		return why;
	if (k >= 0)
		cut(who[k], why);
	return NULL;
}

/* A free slot, reaping ended openings; if every slot is taken by openings
 * still ending (cut ones), wait a little for one. Lock held. */
static struct opening *free_slot(struct tun_door *d)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += DOOR_SLOT_WAIT_MS * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	for (;;) {
		reap(d);
		for (int i = 0; i < DOOR_SLOTS; i++)
			if (!d->pend[i].used)
				return &d->pend[i];
		if (pthread_cond_timedwait(&d->ended, &d->lock, &until))
			return NULL;
	}
}

static void admit(struct tun_door *d, struct rmig_link *l)
{
	const char *refused = "too many connections in their opening";
	struct opening *p = NULL;
	pthread_attr_t attr;
	char addr[RMIG_ADMIT_ADDR_LEN], why[128];

	rmig_admit_addr(l->peer, addr, sizeof(addr));
	pthread_mutex_lock(&d->lock);
	/* room first (it may cut an opening), then a slot: at most
	 * DOOR_MAX_PENDING live openings hold at most that many of the
	 * DOOR_SLOTS, the rest end soon after their cut */
	reap(d);
	if (!(refused = make_room(d, addr, why, sizeof(why))) && !(p = free_slot(d)))
		refused = "too many connections in their opening";
	if (p) {
		int64_t now = rmig_link_now_ms();

		*p = (struct opening){ .used = 1, .link = l, .door = d, .since_ms = now };
		snprintf(p->addr, sizeof(p->addr), "%s", addr);
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, DOOR_STACK);
		if (pthread_create(&p->tid, &attr, opening_main, p)) {
			memset(p, 0, sizeof(*p));
			refused = "out of threads";
		} else {
			l = NULL;
		}
		pthread_attr_destroy(&attr);
	}
	if (l)
		refused_line(d, l->peer, refused);
	pthread_mutex_unlock(&d->lock);
	if (l) {
		tun_send_refusal(l, refused);
		close_link(l);
	}
}

static void *accept_main(void *arg)
{
	struct ear *e = arg;
	struct tun_door *d = e->door;

	while (!atomic_load(&d->stop)) {
		struct rmig_link *l;
		int rc = rmig_link_accept(e->listener, DOOR_SLICE_MS, &l);

		if (!rc) {
			admit(d, l);
			continue;
		}
		pthread_mutex_lock(&d->lock);
		reap(d);
		pthread_mutex_unlock(&d->lock);
		if (rc == -ENODEV) { /* the device is gone: the other ears go on */
			d->log(d->log_arg, "%s: no longer listening (%s)", e->listener->ops->name,
			       e->listener->err);
			break;
		}
		if (rc != -ETIMEDOUT && rc != -ECANCELED) {
			/* out of descriptors or memory under a flood: openings end soon */
			struct timespec ts = { 0, 50 * 1000000 };

			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* Listen with one more transport on *port (0 for the first: any). */
static int add_ear(struct tun_door *d, const char *kind, const char *host, uint16_t *port,
		   char *err, size_t errlen)
{
	struct ear *e = &d->ears[d->nears];
	int rc = tun_link_open(d->sec, kind, &e->listener, err, errlen);

	if (!rc && (rc = e->listener->ops->listen(e->listener, host, port)))
		snprintf(err, errlen, "%s", e->listener->err);
	e->door = d;
	if (!rc && pthread_create(&e->tid, NULL, accept_main, e)) {
		snprintf(err, errlen, "cannot start the accepting thread");
		rc = -EAGAIN;
	}
	if (rc && e->listener) {
		rmig_link_destroy(e->listener);
		e->listener = NULL;
	}
	if (!rc)
		d->nears++;
	return rc;
}

int tun_door_open(struct tun_door **out, const struct tun_door_config *c, uint16_t *port, char *err,
		  size_t errlen)
{
	struct tun_door *d = calloc(1, sizeof(*d));
	int rc = 0;

	if (!d)
		return -ENOMEM;
	d->sec = c->sec;
	d->log = c->log;
	d->log_arg = c->log_arg;
	d->wake_fd = c->wake_fd;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->ended, NULL);
	/* All on one port: the first that listens picks it when 0. One that
	 * cannot (rdma on a host without a device) is logged; the others serve. */
	for (int i = 0; i < c->nkinds && i < TUN_MAX_KINDS; i++) {
		char why[256];
		int r = add_ear(d, c->kinds[i], c->host, port, why, sizeof(why));

		if (r && c->nkinds > 1)
			c->log(c->log_arg, "not listening with %s: %s", c->kinds[i], why);
		if (r) {
			snprintf(err, errlen, "%s", why);
			rc = r;
		}
	}
	if (!d->nears) {
		tun_door_close(d);
		return rc ? rc : -EINVAL;
	}
	*out = d;
	return 0;
}

int tun_door_take(struct tun_door *d, struct tun_proven *out)
{
	int rc = -EAGAIN;

	pthread_mutex_lock(&d->lock);
	if (d->nready) {
		*out = d->ready[0];
		memmove(d->ready, d->ready + 1, (size_t)(d->nready - 1) * sizeof(d->ready[0]));
		d->nready--;
		rc = 0;
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

void tun_door_close(struct tun_door *d)
{
	if (!d)
		return;
	atomic_store(&d->stop, 1);
	for (int i = 0; i < d->nears; i++)
		d->ears[i].listener->ops->interrupt(
		    d->ears[i].listener,
		    RMIG_LINK_STOP_CTRL_RECV | RMIG_LINK_STOP_CTRL_SEND | RMIG_LINK_STOP_DATA);
	for (int i = 0; i < d->nears; i++)
		pthread_join(d->ears[i].tid, NULL);
	pthread_mutex_lock(&d->lock);
	for (int i = 0; i < DOOR_SLOTS; i++)
		if (live(&d->pend[i]))
			cut(&d->pend[i], "the tunnel stops");
	pthread_mutex_unlock(&d->lock);
	for (int i = 0; i < DOOR_SLOTS; i++)
		if (d->pend[i].used)
			pthread_join(d->pend[i].tid, NULL);
	for (int i = 0; i < d->nready; i++)
		close_link(d->ready[i].link);
	for (int i = 0; i < d->nears; i++)
		close_link(d->ears[i].listener);
	pthread_cond_destroy(&d->ended);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
