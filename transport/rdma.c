/* rdma.c - the RDMA link: one control connection plus N data channels, each
 * an RC queue pair set up with librdmacm.
 *
 * Byte streams (the control stream, frames on data channels) are SEND/RECV
 * through small pools of registered slots: a send copies into free send
 * slots and posts them, a receive copies out of filled recv slots and
 * reposts them. The receiver's posted RECVs are the flow control (rnr_retry
 * 7 retries forever). For data channels these slots are the staging
 * buffers, allocated on the NUMA node the channel serves, on both sides.
 * Placement (mem_expose, mem_import, chan_write) puts guest pages straight
 * into the destination's registered memory with RDMA WRITE; writes and
 * SENDs of one channel share its send queue, so they stay ordered.
 *
 * The destination accepts every connection, of either kind, into a link of
 * its own (rdma_link_accept) and answers at once, without waiting for the
 * peer to complete it: the engine reads the first frame and decides. A data
 * channel's connection then moves into its session's link (adopt_channel).
 * All these links use their listener's device table, one protection domain
 * per device, so that a session's channels and the guest memory it exposes
 * share a PD (see struct dev_table).
 *
 * Anyone who reaches the port gets a connection accepted before the engine
 * knows who it is, so an accepted connection pins only what its opening
 * needs: receive slots for its first frame (a data channel one 64 KiB slot,
 * a control connection two of 16 KiB) and, on a control connection, one
 * send slot for the opening's small replies (HELLO, AUTH, ABORT). That is
 * 64 KiB per data channel and 48 KiB per control connection, where the
 * full pools are 2 MiB and 256 KiB: with the listener's 64 unauthenticated
 * connections, at most 4 MiB pinned instead of 128 MiB. The pools grow to
 * their full size once the engine adopts a channel (it does so only for a
 * peer that proved itself): the channel at once, the session's control
 * connection at each side's next op (see struct slot_pool). The source's
 * connections, which it opens itself, are full from the start. The
 * peer needs to know none of this: a sender whose SEND finds no receive
 * posted retries until one is (rnr_retry 7).
 *
 * Every wait is a poll() of at most 50 ms on a completion channel and the
 * connection's own CM event channel: timeouts, interrupt() (which only sets
 * flags: it must be async-signal-safe) and a peer's disconnect are noticed
 * promptly, and nothing spins.
 *
 * rdma-core has two error conventions: rdma_*() return -1 and set errno;
 * ibv_*() return a positive errno (or NULL and set errno). Each call site
 * converts to our -errno.
 */
#include "link.h"
#include "rdma_reg.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <numa.h>
#include <rdma/rdma_cma.h>

#define SLICE_MS 50	/* longest single wait: interrupt() latency (cancel: 100 ms) */
#define RESOLVE_MS 2000 /* address/route resolution: fail fast so "auto" can use TCP */
#define LINGER_MS 2000	/* destroy waits this long for posted sends to complete */
/* 4.096 us << 17 = 537 ms per try, 7 tries: a dead peer in ~3.8 s (the
 * engine's heartbeats notice a silent one sooner). 14 (67 ms, ~0.5 s in
 * all) and then 16 (268 ms, ~1.9 s) still failed live links now and then
 * where an ACK can be seconds late: soft-RoCE under emulation times out
 * hundreds of times per test run, and sometimes 7 times in a row. */
#define ACK_TIMEOUT 17
#define RETRY_COUNT 6	 /* transport retries; 7 would be "forever" on rxe (not per spec) */
#define RNR_RETRY 7	 /* 7 = retry forever: posted RECVs are the flow control */
#define MIN_RNR_TIMER 12 /* 0.64 ms back-off after an RNR NAK (rdma_cm's 0 means 655 ms) */
#define LISTEN_BACKLOG 64

#define CTRL_SLOTS 8
#define CTRL_SLOT_SIZE (16u << 10)
#define CTRL_SQ_DEPTH 32
#define CHAN_SLOTS 16
#define CHAN_SLOT_SIZE (64u << 10)
#define CHAN_SQ_DEPTH 256 /* stream SENDs plus RDMA WRITEs in flight */
#define MAX_SLOTS 16
/* Registered when a connection is accepted, before anyone knows who sent it
 * (the rest when it is adopted): a data channel's first frame is CHANNEL, a
 * control connection's HELLO then AUTH, and only a control connection
 * answers (HELLO, AUTH or ABORT: at most a few KiB) before it proves
 * itself. Every size is the peer's slot size: a SEND lands in one slot. */
#define OPEN_RECV_SLOTS_DATA 1
#define OPEN_SEND_SLOTS_DATA 0
#define OPEN_RECV_SLOTS_CTRL 2
#define OPEN_SEND_SLOTS_CTRL 1
#define MAX_CHAIN 32	/* WRs per ibv_post_send */
#define SIGNAL_EVERY 16 /* an unsignaled WR holds its SQ slot until a later signaled one */
#define REPOST_BATCH 4	/* emptied recv slots reposted together */
#define WRID_WRITE (1ull << 63)
#define WRID_READ (1ull << 62)
#define MAX_DEVICES 16
#define MAX_RAILS 8
#define RAILS_SPEC_LEN 256

/* Connect private data: which kind of connection, and for data channels the
 * NUMA node it serves. Little-endian, fixed layout. */
#define PDATA_MAGIC 0x47494d52u /* "RMIG" */
#define PDATA_VERSION 1
#define PDATA_LEN 20
#define KIND_CTRL 1
#define KIND_DATA 2
#define IB_CM_REJ_INVALID_SERVICE_ID 8 /* REJ reason: nothing listens on that port */
#define IB_CM_REJ_CONSUMER_DEFINED 28

#define KEY_KNOWN (1ull << 32)
#define KEY_FAILED (2ull << 32)
/* The source READs the destination's key table, one READ at a time. */
#define KEY_READS 1
#define KEY_RETRY_MS 2 /* a chunk not registered yet: read its key again after this */

struct rdma_dev {
	struct ibv_context *verbs; /* rdma_cm's, shared by its ids */
	struct ibv_pd *pd;	   /* ours: every QP and MR on this device */
};

/* The devices and PDs of a link, or of a listener and every link accepted on
 * it. A QP and the MRs written through it must share a PD, and a session's
 * data channels arrive as links of their own before they move into the
 * session's link, where its guest memory is registered: so they all take
 * their PD from one table. Each link holds a reference (the listener one, each
 * accepted link one); the last to go frees the PDs, after its own QPs and
 * MRs, so a link that outlives its listener is still torn down in order.
 *
 * A link's connections and registrations are its own; their PDs, devices
 * and pinned bytes are the table's. An rdma_conn is therefore only freed
 * through a link of the table it was set up with (adopt_channel checks). */
struct dev_table {
	pthread_mutex_t lock; /* links set up connections from several threads */
	atomic_uint refs;
	/* rdma_get_devices() keeps every device context open for as long as
	 * our PDs live on them, whatever ids come and go. Set once. */
	struct ibv_context **devices;
	struct rdma_dev dev[MAX_DEVICES]; /* entries never move: conns point here */
	unsigned ndev;
	/* Bytes registered by the table's links, checked against
	 * RLIMIT_MEMLOCK: the kernel charges them all to this process. */
	atomic_uint_fast64_t pinned;
};

/* A pool's memory is mapped for all its slots at once (nothing is resident
 * before it is touched) and registered in at most two pieces: slots
 * [0, split) when the connection is set up, [split, nact) when it grows.
 * Addresses never move, so slots that are posted or hold data when the pool
 * grows stay valid, and what arrived before stays in order. */
struct slot_pool {
	char *base;
	size_t len;
	int on_node;	/* numa_alloc_onnode'd (else mmap'd) */
	unsigned nact;	/* slots registered, in use: [0, nact) */
	unsigned split; /* mr[0] covers [0, split), mr[1] [split, nact) */
	struct ibv_mr *mr[2];
};

struct cq_side {
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	int armed; /* notification requested, its event not yet consumed */
};

struct rdma_conn {
	struct rdma_event_channel *ech; /* this connection's CM events only */
	struct rdma_cm_id *id;
	struct ibv_qp *qp;
	struct rdma_dev *dev;
	int kind, node;
	int rail; /* index in the link's rails whose bytes it counts, -1: none */
	/* Source: ESTABLISHED seen. Destination: accepted (our REP sent); the
	 * peer completes it in its own time, as conn_cm_events notices. Either
	 * way conn_free disconnects. */
	int connected;
	uint32_t max_msg;
	unsigned sq_depth, nslots; /* nslots: each pool's full size, as agreed with the peer */
	size_t slot_size;
	/* Bytes counted against RLIMIT_MEMLOCK for this connection: what is
	 * registered, and once `grow` is set the rest of its pools too. */
	uint64_t pinned;
	/* Set once the pools may grow to nslots (their bytes are counted):
	 * each side registers its part in the thread that uses it. */
	atomic_int grow;
	struct slot_pool send_pool, recv_pool;
	/* Send side (one thread): WRs are numbered; sq_done = all WRs below it
	 * have completed; positions [send_tail, send_head) are in flight,
	 * position p in slot p % send_pool.nact (which grows only while none
	 * is, see grow_send). */
	struct cq_side s;
	uint64_t sq_seq, sq_done, send_head, send_tail;
	uint64_t slot_seq[MAX_SLOTS];
	/* Receive side (one thread): receives are numbered as posted and
	 * complete in that order; positions [recv_head, recv_done) hold data,
	 * [recv_done, recv_post) are posted, rq[] names each one's slot (a
	 * slot is in at most one position, so MAX_SLOTS entries do). recv_off
	 * bytes of recv_head's are consumed; repost[] are empty slots not yet
	 * posted. */
	struct cq_side r;
	uint64_t recv_head, recv_done, recv_post;
	unsigned rq[MAX_SLOTS];
	size_t recv_off;
	uint32_t recv_len[MAX_SLOTS];
	unsigned repost[MAX_SLOTS], nrepost;
	/* Set once, by whichever side or CM event sees the connection die. */
	pthread_mutex_t fail_lock;
	atomic_int failed; /* -errno */
	char why[200];
	atomic_int peer_closed; /* the peer's DREQ came: it is there, and RDMA works */
};

struct rdma_area {
	uint64_t addr, len;
	uint64_t raddr; /* source: where the peer's copy is */
};

/* Source: one data channel's copy of the peer's key table, and its READ. */
struct key_fetch {
	uint64_t *buf;
	struct ibv_mr *mr;
	uint64_t seq; /* the READ's WR number */
	int pending;
};

struct rdma_link {
	/* Options (set_option): the device to use (empty: the one that routes
	 * to the peer) and the RoCE GID index (-1: let rdma_cm choose). */
	char device[IBV_SYSFS_NAME_MAX];
	int gid_index;
	struct rdma_event_channel *listen_ech;
	struct rdma_cm_id *listen_id;
	/* With rails and a named host: a listener on each rail's address
	 * that is not the host's, on listen_ech too (NULL: none, or its
	 * device was removed). */
	struct rdma_cm_id *rail_listen[MAX_RAILS];
	struct dev_table *devs; /* shared with the listener by accepted links */
	struct rdma_conn *ctrl;
	struct rdma_conn *chan[RMIG_LINK_MAX_CHANNELS]; /* NULL: not (yet) adopted */
	atomic_uint nchan;				/* highest index in use + 1 */
	struct sockaddr_storage peer_addr;		/* source: where channels connect */
	/* Placement: our areas, registered in chunks (rdma_reg.c). */
	struct rdma_area *areas;
	size_t nareas;
	struct rdma_dev *mem_dev;
	uint64_t mem_pinned; /* counted in devs->pinned from the start */
	struct rmig_rdma_reg reg;
	/* Destination: the key table the source reads. */
	uint64_t *keytab;
	size_t keytab_len;
	struct ibv_mr *keytab_mr;
	/* Source: the peer's description and the keys learned so far
	 * (KEY_KNOWN | rkey, KEY_FAILED | errno, 0: not yet). */
	struct rmig_rdma_blob peer;
	_Atomic uint64_t *rkeys;
	struct key_fetch fetch[RMIG_LINK_MAX_CHANNELS];
	int imported; /* areas carry the peer's addresses: chan_write may run */
	/* Rails (option "rails"): one device per NUMA node, resolved once
	 * (rails_ready); lost ones stay, marked. Source: the peer's too. */
	char rails_spec[RAILS_SPEC_LEN];
	struct rmig_link_rail rails[MAX_RAILS];
	unsigned nrails;
	int rails_ready;
	struct rmig_link_rail peer_rails[MAX_RAILS];
	unsigned npeer;
	/* Source: rails (bits) marked lost on a guess (rail_failover), which
	 * the next connect_ctrl swaps for the others if no connection opens
	 * without them. */
	unsigned guessed;
};

static struct rdma_link *rdma(struct rmig_link *l)
{
	return l->priv;
}

static struct dev_table *devs(struct rmig_link *l)
{
	return rdma(l)->devs;
}

static int stopped(struct rmig_link *l, unsigned op)
{
	return (atomic_load(&l->interrupted) & op) != 0;
}

static const char *opt_device(struct rmig_link *l)
{
	return rdma(l)->device[0] ? rdma(l)->device : NULL;
}

static const char *dev_name(struct ibv_context *verbs)
{
	return verbs ? ibv_get_device_name(verbs->device) : "?";
}

/* --- time ---------------------------------------------------------------- */

struct deadline {
	int timeout_ms; /* < 0: none */
	int64_t end_ms;
};

/* "timeout_ms without progress": restarted whenever something moves. */
static void deadline_restart(struct deadline *d)
{
	d->end_ms = d->timeout_ms < 0 ? -1 : rmig_link_now_ms() + d->timeout_ms;
}

static void deadline_init(struct deadline *d, int timeout_ms)
{
	d->timeout_ms = timeout_ms;
	deadline_restart(d);
}

/* The next poll() slice: at most SLICE_MS; 0 once the deadline has passed. */
static int deadline_slice(const struct deadline *d)
{
	int64_t left;

	if (d->end_ms < 0)
		return SLICE_MS;
	left = d->end_ms - rmig_link_now_ms();
	if (left <= 0)
		return 0;
	return left < SLICE_MS ? (int)left : SLICE_MS;
}

/* --- little helpers -------------------------------------------------------- */

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static socklen_t addr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* --- pinned memory budget ---------------------------------------------------- */

static int has_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &hdr, data))
		return 0;
	return (data[CAP_IPC_LOCK / 32].effective >> (CAP_IPC_LOCK % 32)) & 1;
}

/* Fail before pinning anything rather than half-way through: the kernel
 * charges every registration to RLIMIT_MEMLOCK unless we hold
 * CAP_IPC_LOCK. `what` reads "X need(s)". */
static int memlock_check(struct rmig_link *l, uint64_t more, const char *what)
{
	uint64_t total = atomic_load(&devs(l)->pinned) + more;
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) || rl.rlim_cur == RLIM_INFINITY ||
	    total <= rl.rlim_cur || has_ipc_lock())
		return 0;
	rmig_link_err(l, "%s %.1f MiB pinned, RLIMIT_MEMLOCK is %.1f MiB: raise ulimit -l", what,
		      mib(total), mib(rl.rlim_cur));
	return -ENOMEM;
}

/* --- devices and protection domains ------------------------------------------- */

/* -ENODEV with a message when there is no RDMA device at all, or none by
 * the configured name. `peer`: who we wanted to reach (NULL: listening). */
static int check_devices(struct rmig_link *l, const char *peer)
{
	const char *want = opt_device(l);
	struct ibv_device **list;
	int n = 0, found = 0;

	list = ibv_get_device_list(&n);
	for (int i = 0; list && i < n; i++)
		if (want && strcmp(ibv_get_device_name(list[i]), want) == 0)
			found = 1;
	if (list)
		ibv_free_device_list(list);
	if (!list || n <= 0) {
		if (peer)
			rmig_link_err(l, "no RDMA device reaches %s: this host has no RDMA devices",
				      peer);
		else
			rmig_link_err(l, "this host has no RDMA devices");
		return -ENODEV;
	}
	if (want && !found) {
		rmig_link_err(l, "no RDMA device named %s", want);
		return -ENODEV;
	}
	return 0;
}

static struct dev_table *table_new(void)
{
	struct dev_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	pthread_mutex_init(&t->lock, NULL);
	atomic_init(&t->refs, 1);
	return t;
}

static struct dev_table *table_get(struct dev_table *t)
{
	atomic_fetch_add(&t->refs, 1);
	return t;
}

/* Drop a reference; the last one frees the PDs (every QP and MR on them is
 * gone: their links closed their sessions first) and the devices. */
static void table_put(struct dev_table *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	for (unsigned i = 0; i < t->ndev; i++)
		ibv_dealloc_pd(t->dev[i].pd);
	if (t->devices)
		rdma_free_devices(t->devices);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* With t->lock held. */
static int hold_devices_locked(struct rmig_link *l, struct dev_table *t)
{
	int n = 0;

	if (t->devices)
		return 0;
	t->devices = rdma_get_devices(&n); /* NULL and errno on failure */
	if (!t->devices) {
		rmig_link_err(l, "cannot list RDMA devices: %s", strerror(errno ? errno : ENODEV));
		return -ENODEV;
	}
	return 0;
}

/* Afterwards devs(l)->devices may be read without the lock: it is set once. */
static int hold_devices(struct rmig_link *l)
{
	struct dev_table *t = devs(l);
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = hold_devices_locked(l, t);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* With t->lock held: the entry of verbs, its PD allocated on first use. */
static int find_dev_locked(struct rmig_link *l, struct dev_table *t, struct ibv_context *verbs,
			   struct rdma_dev **out)
{
	struct ibv_pd *pd;
	int rc = hold_devices_locked(l, t);

	if (rc)
		return rc;
	for (unsigned i = 0; i < t->ndev; i++) {
		if (t->dev[i].verbs == verbs) {
			*out = &t->dev[i];
			return 0;
		}
	}
	if (t->ndev == MAX_DEVICES) {
		rmig_link_err(l, "more than %d RDMA devices in use", MAX_DEVICES);
		return -ENOSPC;
	}
	pd = ibv_alloc_pd(verbs); /* verbs: NULL and errno */
	if (!pd) {
		rc = errno ? -errno : -ENOMEM;
		rmig_link_err(l, "cannot allocate a protection domain on %s: %s", dev_name(verbs),
			      strerror(-rc));
		return rc;
	}
	t->dev[t->ndev] = (struct rdma_dev){ verbs, pd };
	*out = &t->dev[t->ndev++];
	return 0;
}

/* The one PD of `verbs` in l's table (the listener's, for accepted links). */
static int get_dev(struct rmig_link *l, struct ibv_context *verbs, struct rdma_dev **out)
{
	struct dev_table *t = devs(l);
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = find_dev_locked(l, t, verbs, out);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* --- slot pools ------------------------------------------------------------ */

static int node_usable(int node)
{
	return node >= 0 && numa_available() >= 0 && node <= numa_max_node() &&
	       numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node);
}

/* Map len bytes for a pool, on `node` where this host has it. Nothing is
 * resident (or pinned) until registered. mmap'd memory reads as zeros, so
 * a memory checker, which cannot see the device's writes, finds it
 * defined. */
static int pool_alloc(struct rmig_link *l, struct slot_pool *p, size_t len, int node)
{
	void *mem;

	/* On a node this host does not have, any memory will do. */
	if (node_usable(node)) {
		p->base = numa_alloc_onnode(len, node);
		p->on_node = p->base != NULL;
	}
	if (!p->base) {
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			rmig_link_err(l, "cannot allocate %zu KiB of staging buffers: %s",
				      len >> 10, strerror(errno));
			return -ENOMEM;
		}
		p->base = mem;
	}
	p->len = len;
	return 0;
}

/* Register slots [p->nact, upto) of p (the caller counted their bytes). */
static int pool_register(struct rmig_link *l, struct rdma_conn *c, struct slot_pool *p,
			 unsigned upto)
{
	size_t off = (size_t)p->nact * c->slot_size, len = (size_t)(upto - p->nact) * c->slot_size;
	struct ibv_mr *mr;
	int rc;

	if (upto <= p->nact)
		return 0;
	if (p->mr[1]) { /* two pieces at most: set up, then grown once to nslots */
		rmig_link_err(l, "staging buffers registered twice");
		return -EINVAL;
	}
	mr = ibv_reg_mr(c->dev->pd, p->base + off, len, IBV_ACCESS_LOCAL_WRITE); /* NULL, errno */
	if (!mr) {
		rc = errno ? -errno : -ENOMEM;
		rmig_link_err(l, "cannot register %zu KiB of staging buffers on %s: %s", len >> 10,
			      dev_name(c->dev->verbs), strerror(-rc));
		return rc;
	}
	if (!p->mr[0]) {
		p->mr[0] = mr;
		p->split = upto;
	} else {
		p->mr[1] = mr;
	}
	p->nact = upto;
	return 0;
}

static uint32_t slot_lkey(const struct slot_pool *p, unsigned slot)
{
	return p->mr[slot < p->split ? 0 : 1]->lkey;
}

static void pool_free(struct slot_pool *p)
{
	for (int i = 0; i < 2; i++)
		if (p->mr[i])
			ibv_dereg_mr(p->mr[i]);
	if (p->base && p->on_node)
		numa_free(p->base, p->len);
	else if (p->base)
		munmap(p->base, p->len);
	memset(p, 0, sizeof(*p));
}

/* --- connection failure ------------------------------------------------------ */

/* Record why the connection is unusable (the first reason wins) and move
 * its QP to the error state, so that the other side's thread, waiting on
 * its own CQ, is woken by the flush. Returns the connection's error. */
__attribute__((format(printf, 3, 4))) static int conn_fail(struct rdma_conn *c, int rc,
							   const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&c->fail_lock);
	if (!atomic_load(&c->failed)) {
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof(c->why), fmt, ap);
		va_end(ap);
		atomic_store(&c->failed, rc);
		if (c->qp) {
			struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };

			ibv_modify_qp(c->qp, &a, IBV_QP_STATE);
		}
	}
	rc = atomic_load(&c->failed);
	pthread_mutex_unlock(&c->fail_lock);
	return rc;
}

/* Turn an op's failure into link->err. */
static int io_error(struct rmig_link *l, struct rdma_conn *c, int rc, const char *what,
		    const struct deadline *d)
{
	if (rc == -ECANCELED) {
		rmig_link_err(l, "%s interrupted", what);
	} else if (atomic_load(&c->failed)) {
		pthread_mutex_lock(&c->fail_lock);
		rmig_link_err(l, "%s (%s)", c->why, what);
		rc = atomic_load(&c->failed);
		pthread_mutex_unlock(&c->fail_lock);
	} else if (rc == -ETIMEDOUT) {
		rmig_link_err(l, "peer %s silent for %d ms (%s)", l->peer, d->timeout_ms, what);
	} else {
		rmig_link_err(l, "lost peer %s: %s (%s)", l->peer, strerror(-rc), what);
	}
	return rc;
}

/* --- CM events of a connected connection ---------------------------------------- */

static void conn_cm_events(struct rmig_link *l, struct rdma_conn *c)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(c->ech, &ev) == 0) {
		enum rdma_cm_event_type type = ev->event;

		rdma_ack_cm_event(ev);
		switch (type) {
		case RDMA_CM_EVENT_DISCONNECTED:
			atomic_store(&c->peer_closed, 1);
			conn_fail(c, -ECONNRESET, "lost peer %s: disconnected", l->peer);
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			conn_fail(c, -ENODEV, "lost peer %s: RDMA device %s was removed", l->peer,
				  dev_name(c->id->verbs));
			break;
		/* Accepted, but the peer never completed the connection. */
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
		case RDMA_CM_EVENT_REJECTED:
			conn_fail(c, -ECONNRESET,
				  "lost peer %s: it did not complete the RDMA connection (%s)",
				  l->peer, rdma_event_str(type));
			break;
		default: /* ESTABLISHED (a destination's), TIMEWAIT_EXIT... */ break;
		}
	}
}

/* --- completions ------------------------------------------------------------- */

static void wc_failed(struct rmig_link *l, struct rdma_conn *c, const struct ibv_wc *wc,
		      const char *wr)
{
	int rc = -EIO;

	if (wc->status == IBV_WC_WR_FLUSH_ERR || wc->status == IBV_WC_RETRY_EXC_ERR ||
	    wc->status == IBV_WC_RNR_RETRY_EXC_ERR)
		rc = -ECONNRESET;
	conn_fail(c, rc, "lost peer %s: %s %s", l->peer, wr, ibv_wc_status_str(wc->status));
}

/* Retire send completions; returns how many, or the connection's error. */
static int reap_send(struct rmig_link *l, struct rdma_conn *c)
{
	struct ibv_wc wc[16];
	int n, got = 0;

	while ((n = ibv_poll_cq(c->s.cq, 16, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			uint64_t seq = wc[i].wr_id & ~(WRID_WRITE | WRID_READ);

			if (wc[i].status != IBV_WC_SUCCESS)
				wc_failed(l, c, &wc[i],
					  wc[i].wr_id & WRID_WRITE  ? "RDMA WRITE"
					  : wc[i].wr_id & WRID_READ ? "RDMA READ"
								    : "SEND");
			else if (seq + 1 > c->sq_done)
				c->sq_done = seq + 1; /* RC completes in order: all before it too */
		}
		got += n;
	}
	if (n < 0)
		return conn_fail(c, -EIO, "cannot poll the send completion queue of %s",
				 dev_name(c->id->verbs));
	while (c->send_tail < c->send_head &&
	       c->slot_seq[c->send_tail % c->send_pool.nact] < c->sq_done)
		c->send_tail++;
	return got;
}

/* Collect filled recv slots; returns how many, or the connection's error. */
static int reap_recv(struct rmig_link *l, struct rdma_conn *c)
{
	struct ibv_wc wc[MAX_SLOTS];
	int n, got = 0;

	while ((n = ibv_poll_cq(c->r.cq, MAX_SLOTS, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				wc_failed(l, c, &wc[i], "RECV");
				continue;
			}
			/* The receive queue completes in posting order. */
			if (c->recv_done == c->recv_post ||
			    wc[i].wr_id != c->rq[c->recv_done % MAX_SLOTS] ||
			    wc[i].byte_len > c->slot_size)
				return conn_fail(c, -EPROTO, "lost peer %s: bad receive completion",
						 l->peer);
			c->recv_len[wc[i].wr_id] = wc[i].byte_len;
			c->recv_done++;
			got++;
		}
	}
	if (n < 0)
		return conn_fail(c, -EIO, "cannot poll the receive completion queue of %s",
				 dev_name(c->id->verbs));
	return got;
}

/* Sleep until `side`'s CQ may have something, the CM reported something,
 * the deadline passed (-ETIMEDOUT) or op was interrupted (-ECANCELED; op 0:
 * never). 0 means "look again": the caller polls the CQ and loops. */
static int cq_wait(struct rmig_link *l, struct rdma_conn *c, struct cq_side *side, unsigned op,
		   struct deadline *d)
{
	struct pollfd pfd[2] = { { .fd = side->cc->fd, .events = POLLIN },
				 { .fd = c->ech->fd, .events = POLLIN } };
	int rc, slice;

	if (!side->armed) {
		rc = ibv_req_notify_cq(side->cq, 0); /* verbs: positive errno */
		if (rc)
			return conn_fail(c, -rc, "cannot arm a completion queue on %s: %s",
					 dev_name(c->id->verbs), strerror(rc));
		side->armed = 1;
		return 0; /* what completed before arming raises no event: look again */
	}
	for (;;) {
		if (op && stopped(l, op))
			return -ECANCELED;
		if (atomic_load(&c->failed))
			return 0;
		slice = deadline_slice(d);
		if (!slice)
			return -ETIMEDOUT;
		rc = poll(pfd, 2, slice);
		if (rc < 0 && errno != EINTR)
			return conn_fail(c, -errno, "poll: %s", strerror(errno));
		if (rc <= 0)
			continue;
		if (pfd[1].revents)
			conn_cm_events(l, c);
		if (pfd[0].revents) {
			struct ibv_cq *cq;
			void *ctx;
			unsigned n = 0;

			while (ibv_get_cq_event(side->cc, &cq, &ctx) == 0)
				n++;
			if (n)
				ibv_ack_cq_events(side->cq, n);
			side->armed = 0;
			return 0;
		}
	}
}

/* --- posting -------------------------------------------------------------------- */

/* Post wr[0..n) as one chain. Each WR gets the next sequence number; the
 * last and every SIGNAL_EVERY-th are signaled, so whatever is in flight is
 * always followed by a signaled WR whose completion retires it. */
static int post_chain(struct rmig_link *l, struct rdma_conn *c, struct ibv_send_wr *wr, int n)
{
	struct ibv_send_wr *bad = NULL;
	int rc;

	if (n <= 0)
		return 0;
	for (int i = 0; i < n; i++) {
		uint64_t seq = c->sq_seq + (uint64_t)i;

		wr[i].wr_id = seq | (wr[i].opcode == IBV_WR_RDMA_WRITE	? WRID_WRITE
				     : wr[i].opcode == IBV_WR_RDMA_READ ? WRID_READ
									: 0);
		wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
		wr[i].send_flags =
		    i + 1 == n || seq % SIGNAL_EVERY == SIGNAL_EVERY - 1 ? IBV_SEND_SIGNALED : 0;
	}
	rc = ibv_post_send(c->qp, wr, &bad); /* verbs: positive errno */
	if (rc)
		return conn_fail(c, -rc, "lost peer %s: cannot post to the send queue: %s", l->peer,
				 strerror(rc));
	c->sq_seq += (uint64_t)n;
	return 0;
}

static int repost_recv(struct rmig_link *l, struct rdma_conn *c)
{
	struct ibv_recv_wr wr[MAX_SLOTS], *bad = NULL;
	struct ibv_sge sge[MAX_SLOTS];
	unsigned n = c->nrepost;
	int rc;

	if (!n)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned slot = c->repost[i];

		sge[i] = (struct ibv_sge){ (uintptr_t)(c->recv_pool.base + slot * c->slot_size),
					   (uint32_t)c->slot_size, slot_lkey(&c->recv_pool, slot) };
		wr[i] = (struct ibv_recv_wr){ .wr_id = slot,
					      .next = i + 1 < n ? &wr[i + 1] : NULL,
					      .sg_list = &sge[i],
					      .num_sge = 1 };
		c->rq[(c->recv_post + i) % MAX_SLOTS] = slot;
	}
	c->nrepost = 0;
	rc = ibv_post_recv(c->qp, wr, &bad); /* verbs: positive errno */
	if (rc)
		return conn_fail(c, -rc, "lost peer %s: cannot post receive buffers: %s", l->peer,
				 strerror(rc));
	c->recv_post += n;
	return 0;
}

/* --- growing an accepted connection's pools -------------------------------------- */

/* Copy the connection's failure into l->err. */
static void conn_why(struct rmig_link *l, struct rdma_conn *c)
{
	pthread_mutex_lock(&c->fail_lock);
	rmig_link_err(l, "%s", c->why);
	pthread_mutex_unlock(&c->fail_lock);
}

/* Bytes c's pools lack of their full size, not yet counted as pinned. */
static uint64_t conn_unreserved(const struct rdma_conn *c)
{
	return atomic_load(&c->grow) ? 0 : 2 * (uint64_t)c->nslots * c->slot_size - c->pinned;
}

/* Count the rest of c's pools as pinned (the caller checked the limit:
 * memlock_check) and let them grow. Counting first, registering later
 * keeps the check where a failure can still be reported to whoever decided
 * to grow (adopt_channel); each side then registers its part in the thread
 * that uses it, as other threads may be sending or receiving on c. */
static void conn_reserve(struct rmig_link *l, struct rdma_conn *c)
{
	uint64_t more = conn_unreserved(c);

	if (atomic_load(&c->grow))
		return;
	c->pinned += more;
	atomic_fetch_add(&devs(l)->pinned, more);
	atomic_store(&c->grow, 1);
}

/* The receiving thread's part of growing: the other receive slots are
 * registered and posted behind those already posted, which complete first
 * (a receive queue completes in posting order): bytes stay in order. */
static int grow_recv(struct rmig_link *l, struct rdma_conn *c)
{
	struct slot_pool *p = &c->recv_pool;
	unsigned from = p->nact;
	int rc;

	if (p->nact == c->nslots || !atomic_load(&c->grow) || atomic_load(&c->failed))
		return 0;
	rc = pool_register(l, c, p, c->nslots);
	if (rc)
		return conn_fail(c, rc, "%s", l->err);
	for (unsigned slot = from; slot < c->nslots; slot++)
		c->repost[c->nrepost++] = slot;
	return repost_recv(l, c);
}

/* The sending thread's part: only while no send slot is in flight, as the
 * send ring numbers slots modulo the pool's size. A connection that has no
 * send slot at all (a data channel not yet adopted: the engine never sends
 * on one, a link user might) grows on its first send. */
static int grow_send(struct rmig_link *l, struct rdma_conn *c)
{
	struct slot_pool *p = &c->send_pool;
	int rc;

	if (p->nact == c->nslots || c->send_tail != c->send_head)
		return 0;
	if (!atomic_load(&c->grow)) {
		if (p->nact)
			return 0;
		rc = memlock_check(l, conn_unreserved(c), "staging pools need");
		if (rc)
			return rc;
		conn_reserve(l, c);
	}
	rc = pool_register(l, c, p, c->nslots);
	return rc ? conn_fail(c, rc, "%s", l->err) : 0;
}

/* --- byte streams ----------------------------------------------------------------- */

static int check_iov(struct rmig_link *l, const struct iovec *iov, int n)
{
	if (n < 0 || (n > 0 && !iov)) {
		rmig_link_err(l, "bad iovec array (%d entries)", n);
		return -EINVAL;
	}
	return 0;
}

static int stream_send(struct rmig_link *l, struct rdma_conn *c, const struct iovec *iov,
		       int iovcnt, int timeout_ms, unsigned op, const char *what)
{
	struct ibv_send_wr wr[MAX_CHAIN];
	struct ibv_sge sge[MAX_CHAIN];
	struct deadline d;
	size_t off = 0;
	int i = 0, rc = check_iov(l, iov, iovcnt);

	if (rc)
		return rc;
	deadline_init(&d, timeout_ms);
	for (;;) {
		uint64_t free_slots, room;
		int k = 0;

		while (i < iovcnt && off == iov[i].iov_len) {
			i++;
			off = 0;
		}
		if (i == iovcnt)
			return 0;
		if (stopped(l, op))
			return io_error(l, c, -ECANCELED, what, &d);
		rc = reap_send(l, c);
		if (rc > 0)
			deadline_restart(&d);
		if (atomic_load(&c->failed))
			return io_error(l, c, atomic_load(&c->failed), what, &d);
		rc = grow_send(l, c);
		if (rc)
			return atomic_load(&c->failed) ? io_error(l, c, rc, what, &d) : rc;
		free_slots = c->send_pool.nact - (c->send_head - c->send_tail);
		room = c->sq_depth - (c->sq_seq - c->sq_done);
		if (!free_slots || !room) {
			rc = cq_wait(l, c, &c->s, op, &d);
			if (rc)
				return io_error(l, c, rc, what, &d);
			continue;
		}
		/* Fill as many free slots as there are bytes, post them in one go. */
		while ((uint64_t)k < free_slots && (uint64_t)k < room && k < MAX_CHAIN) {
			unsigned slot = (unsigned)(c->send_head % c->send_pool.nact);
			char *dst = c->send_pool.base + slot * c->slot_size;
			size_t fill = 0;

			while (i < iovcnt && fill < c->slot_size) {
				size_t m = iov[i].iov_len - off;

				if (m > c->slot_size - fill)
					m = c->slot_size - fill;
				memcpy(dst + fill, (const char *)iov[i].iov_base + off, m);
				fill += m;
				off += m;
				while (i < iovcnt && off == iov[i].iov_len) {
					i++;
					off = 0;
				}
			}
			if (!fill)
				break;
			sge[k] = (struct ibv_sge){ (uintptr_t)dst, (uint32_t)fill,
						   slot_lkey(&c->send_pool, slot) };
			wr[k] = (struct ibv_send_wr){ .sg_list = &sge[k],
						      .num_sge = 1,
						      .opcode = IBV_WR_SEND };
			c->slot_seq[slot] = c->sq_seq + (uint64_t)k;
			c->send_head++;
			k++;
		}
		rc = post_chain(l, c, wr, k);
		if (rc)
			return io_error(l, c, rc, what, &d);
		deadline_restart(&d);
	}
}

static int stream_recv(struct rmig_link *l, struct rdma_conn *c, const struct iovec *iov,
		       int iovcnt, int timeout_ms, unsigned op, const char *what)
{
	struct deadline d;
	size_t off = 0;
	int i = 0, rc = check_iov(l, iov, iovcnt);

	if (rc)
		return rc;
	deadline_init(&d, timeout_ms);
	rc = grow_recv(l, c);
	if (rc)
		return io_error(l, c, rc, what, &d);
	for (;;) {
		unsigned slot;
		size_t m;

		while (i < iovcnt && off == iov[i].iov_len) {
			i++;
			off = 0;
		}
		if (i == iovcnt) {
			rc = 0;
			break;
		}
		if (stopped(l, op)) {
			rc = -ECANCELED;
			break;
		}
		if (c->recv_head == c->recv_done) {
			rc = reap_recv(l, c);
			if (rc > 0) {
				deadline_restart(&d);
				continue;
			}
			/* Bytes that arrived before a disconnect are delivered first. */
			rc = atomic_load(&c->failed);
			if (rc)
				break;
			rc = repost_recv(l, c); /* room for the sender before we sleep */
			if (!rc)
				rc = cq_wait(l, c, &c->r, op, &d);
			if (rc)
				break;
			continue;
		}
		slot = c->rq[c->recv_head % MAX_SLOTS];
		m = c->recv_len[slot] - c->recv_off;
		if (m > iov[i].iov_len - off)
			m = iov[i].iov_len - off;
		memcpy((char *)iov[i].iov_base + off,
		       c->recv_pool.base + slot * c->slot_size + c->recv_off, m);
		off += m;
		c->recv_off += m;
		if (c->recv_off == c->recv_len[slot]) {
			c->repost[c->nrepost++] = slot;
			c->recv_head++;
			c->recv_off = 0;
			rc = c->nrepost >= REPOST_BATCH ? repost_recv(l, c) : 0;
			if (rc)
				break;
			deadline_restart(&d);
		}
	}
	/* All bytes delivered is success, even if the connection died since:
	 * the next call reports that. */
	if (!rc && !atomic_load(&c->failed))
		rc = repost_recv(l, c);
	return rc ? io_error(l, c, rc, what, &d) : 0;
}

/* --- connection set-up and tear-down ------------------------------------------- */

static struct rdma_conn *conn_alloc(int kind, int node)
{
	struct rdma_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->fail_lock, NULL);
	c->kind = kind;
	c->node = node;
	c->rail = -1;
	c->nslots = kind == KIND_CTRL ? CTRL_SLOTS : CHAN_SLOTS;
	c->slot_size = kind == KIND_CTRL ? CTRL_SLOT_SIZE : CHAN_SLOT_SIZE;
	c->sq_depth = kind == KIND_CTRL ? CTRL_SQ_DEPTH : CHAN_SQ_DEPTH;
	return c;
}

static int new_event_channel(struct rmig_link *l, struct rdma_event_channel **out)
{
	struct rdma_event_channel *ech = rdma_create_event_channel(); /* NULL and errno */
	int rc;

	if (!ech) {
		rc = errno ? -errno : -ENODEV;
		rmig_link_err(l, "cannot open the RDMA connection manager: %s", strerror(-rc));
		return rc == -ENOENT ? -ENODEV : rc;
	}
	rc = set_nonblock(ech->fd);
	if (rc) {
		rmig_link_err(l, "cannot make the RDMA event channel non-blocking: %s",
			      strerror(-rc));
		rdma_destroy_event_channel(ech);
		return rc;
	}
	*out = ech;
	return 0;
}

static int cq_side_init(struct rmig_link *l, struct rdma_conn *c, struct cq_side *side, int cqe)
{
	struct ibv_context *verbs = c->id->verbs;
	int rc;

	side->cc = ibv_create_comp_channel(verbs); /* NULL and errno */
	if (!side->cc)
		goto fail;
	rc = set_nonblock(side->cc->fd);
	if (rc) {
		errno = -rc;
		goto fail;
	}
	side->cq = ibv_create_cq(verbs, cqe, c, side->cc, 0);
	if (!side->cq)
		goto fail;
	return 0;
fail:
	rc = errno ? -errno : -ENOMEM;
	rmig_link_err(l, "cannot create a completion queue on %s: %s", dev_name(verbs),
		      strerror(-rc));
	return rc;
}

static void cq_side_free(struct cq_side *side)
{
	if (side->cq)
		ibv_destroy_cq(side->cq);
	if (side->cc)
		ibv_destroy_comp_channel(side->cc);
	side->cq = NULL;
	side->cc = NULL;
}

/* Resources of a connection whose id knows its device: PD, CQs, slot pools
 * (on c->node) of which nrecv receive and nsend send slots are registered
 * (the rest when they grow), the RC QP, and the receive slots posted, all
 * before the connection is established so the peer can send at once. */
static int conn_setup(struct rmig_link *l, struct rdma_conn *c, unsigned nrecv, unsigned nsend)
{
	struct rdma_cm_id *id = c->id;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	struct ibv_qp_init_attr qa;
	size_t pool_len = c->nslots * c->slot_size;
	uint64_t pin = (uint64_t)(nrecv + nsend) * c->slot_size;
	int rc;

	rc = memlock_check(l, pin,
			   c->kind == KIND_CTRL ? "control buffers need" : "staging pools need");
	if (rc)
		return rc;
	rc = get_dev(l, id->verbs, &c->dev);
	if (rc)
		return rc;
	rc = ibv_query_device(id->verbs, &da); /* verbs: positive errno */
	if (!rc)
		rc = ibv_query_port(id->verbs, id->port_num, &pa);
	if (rc) {
		rmig_link_err(l, "cannot query RDMA device %s: %s", dev_name(id->verbs),
			      strerror(rc));
		return -rc;
	}
	if (da.max_qp_wr > 0 && c->sq_depth > (unsigned)da.max_qp_wr)
		c->sq_depth = (unsigned)da.max_qp_wr;
	c->max_msg = pa.max_msg_sz ? pa.max_msg_sz : 1u << 31;
	if (c->max_msg > 1u << 30)
		c->max_msg = 1u << 30;
	rc = cq_side_init(l, c, &c->s, (int)c->sq_depth);
	if (!rc)
		rc = cq_side_init(l, c, &c->r, (int)c->nslots);
	if (!rc)
		rc = pool_alloc(l, &c->send_pool, pool_len, c->node);
	if (!rc)
		rc = pool_alloc(l, &c->recv_pool, pool_len, c->node);
	if (!rc)
		rc = pool_register(l, c, &c->send_pool, nsend);
	if (!rc)
		rc = pool_register(l, c, &c->recv_pool, nrecv);
	if (rc)
		return rc;
	c->pinned = pin;
	atomic_fetch_add(&devs(l)->pinned, c->pinned);
	if (nrecv == c->nslots && nsend == c->nslots)
		atomic_store(&c->grow, 1); /* full already */
	qa = (struct ibv_qp_init_attr){ .send_cq = c->s.cq,
					.recv_cq = c->r.cq,
					.cap = { .max_send_wr = c->sq_depth,
						 .max_recv_wr = c->nslots,
						 .max_send_sge = 1,
						 .max_recv_sge = 1 },
					.qp_type = IBV_QPT_RC,
					.sq_sig_all = 0 };
	if (rdma_create_qp(id, c->dev->pd, &qa)) { /* rdma_cm: -1 and errno */
		rc = -errno;
		rmig_link_err(l, "cannot create a queue pair on %s: %s", dev_name(id->verbs),
			      strerror(errno));
		return rc;
	}
	c->qp = id->qp;
	for (unsigned i = 0; i < nrecv; i++)
		c->repost[c->nrepost++] = i;
	rc = repost_recv(l, c);
	if (rc)
		conn_why(l, c);
	return rc;
}

/* A QP that waits 655 ms after each RNR NAK (what rdma_cm sets) would make
 * the receiver's reposting far too slow a flow control. Best effort. */
static void conn_tune(struct rdma_conn *c)
{
	struct ibv_qp_attr a = { .min_rnr_timer = MIN_RNR_TIMER };

	ibv_modify_qp(c->qp, &a, IBV_QP_MIN_RNR_TIMER);
}

/* Before the QP goes: let posted SENDs (a last ABORT or DONE) reach the
 * peer, as close() would for TCP. Bounded, and only on a live connection. */
static void conn_linger(struct rmig_link *l, struct rdma_conn *c)
{
	struct deadline d;

	deadline_init(&d, LINGER_MS);
	while (!atomic_load(&c->failed)) {
		reap_send(l, c);
		if (c->sq_done >= c->sq_seq || cq_wait(l, c, &c->s, 0, &d))
			break;
	}
}

/* Tear down in dependency order; safe after any partial set-up. */
static void conn_free(struct rmig_link *l, struct rdma_conn *c)
{
	if (!c)
		return;
	if (c->connected) {
		conn_linger(l, c);
		rdma_disconnect(c->id);
	}
	if (c->id && c->id->qp)
		rdma_destroy_qp(c->id); /* leaves our CQs alone: rdma_cm did not create them */
	c->qp = NULL;
	cq_side_free(&c->s);
	cq_side_free(&c->r);
	pool_free(&c->send_pool);
	pool_free(&c->recv_pool);
	atomic_fetch_sub(&devs(l)->pinned, c->pinned);
	if (c->id)
		rdma_destroy_id(c->id);
	if (c->ech)
		rdma_destroy_event_channel(c->ech);
	pthread_mutex_destroy(&c->fail_lock);
	free(c);
}

static void pdata_encode(uint8_t *p, int kind, int node, const struct rdma_conn *c)
{
	memset(p, 0, PDATA_LEN);
	put_le32(p, PDATA_MAGIC);
	p[4] = PDATA_VERSION;
	p[5] = (uint8_t)kind;
	put_le32(p + 8, (uint32_t)node);
	put_le32(p + 12, (uint32_t)c->slot_size);
	put_le32(p + 16, c->nslots);
}

struct pdata {
	int kind, node;
	uint32_t slot_size, nslots;
};

static int pdata_decode(const void *data, size_t len, struct pdata *pd)
{
	const uint8_t *p = data;

	if (!p || len < PDATA_LEN || get_le32(p) != PDATA_MAGIC || p[4] != PDATA_VERSION)
		return -EPROTO;
	pd->kind = p[5];
	pd->node = (int32_t)get_le32(p + 8);
	pd->slot_size = get_le32(p + 12);
	pd->nslots = get_le32(p + 16);
	if (pd->node < -1 || pd->node > 4095)
		pd->node = -1;
	return 0;
}

/* Map a CM event that is not the awaited one to an error (0: ignore it). */
static int cm_event_error(struct rmig_link *l, const struct rdma_cm_event *ev)
{
	int st = ev->status;
	const char *peer = l->peer;

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_ERROR:
		st = st == -ENODEV || st == -ENETUNREACH ? st : -EHOSTUNREACH;
		rmig_link_err(l, "no RDMA device reaches %s: %s", peer,
			      strerror(ev->status < 0 ? -ev->status : EHOSTUNREACH));
		return st;
	case RDMA_CM_EVENT_ROUTE_ERROR:
		rmig_link_err(l, "no RDMA route to %s: %s", peer,
			      strerror(st < 0 ? -st : EHOSTUNREACH));
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_UNREACHABLE:
		rmig_link_err(l, "RDMA peer %s unreachable: its connection manager did not answer",
			      peer);
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_REJECTED: {
		const uint8_t *p = ev->param.conn.private_data;
		size_t len = ev->param.conn.private_data_len;

		if (st == IB_CM_REJ_INVALID_SERVICE_ID)
			rmig_link_err(l, "%s refused the RDMA connection: nothing listens there",
				      peer);
		else if (st == IB_CM_REJ_CONSUMER_DEFINED && p && len > 4 &&
			 get_le32(p) == PDATA_MAGIC)
			rmig_link_err(l, "%s rejected the RDMA connection: %.*s", peer,
				      (int)strnlen((const char *)p + 4, len - 4),
				      (const char *)p + 4);
		else
			rmig_link_err(l, "%s rejected the RDMA connection (reason %d)", peer, st);
		return -ECONNREFUSED;
	}
	case RDMA_CM_EVENT_CONNECT_ERROR:
		rmig_link_err(l, "RDMA connection to %s failed: %s", peer,
			      strerror(st < 0 ? -st : ECONNABORTED));
		return -ECONNABORTED;
	case RDMA_CM_EVENT_DISCONNECTED:
		rmig_link_err(l, "lost peer %s: disconnected", peer);
		return -ECONNRESET;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		rmig_link_err(l, "RDMA device was removed (peer %s)", peer);
		return -ENODEV;
	default:
		if (!st)
			return 0;
		rmig_link_err(l, "%s: %s (peer %s)", rdma_event_str(ev->event),
			      strerror(st < 0 ? -st : st), peer);
		return st < 0 ? st : -EIO;
	}
}

/* Take the next event from ech, waiting in poll() slices. 0 with *ev (the
 * caller acks it); -ECANCELED once `op` is interrupted and -ETIMEDOUT at the
 * deadline, both for the caller to word; other errors with a message. */
static int cm_next_event(struct rmig_link *l, struct rdma_event_channel *ech, struct deadline *d,
			 unsigned op, struct rdma_cm_event **ev)
{
	struct pollfd pfd = { .fd = ech->fd, .events = POLLIN };
	int rc, slice;

	for (;;) {
		if (rdma_get_cm_event(ech, ev) == 0) { /* rdma_cm: -1 and errno */
			/* librdmacm moves a connected QP to RTR/RTS itself and
			 * reports a failure there as status -1 with errno set:
			 * keep the errno, which says what went wrong. */
			if ((*ev)->event == RDMA_CM_EVENT_CONNECT_ERROR && (*ev)->status == -1 &&
			    errno > 0)
				(*ev)->status = -errno;
			return 0;
		}
		if (errno != EAGAIN && errno != EINTR) {
			rc = -errno;
			rmig_link_err(l, "RDMA connection manager: %s", strerror(errno));
			return rc;
		}
		if (stopped(l, op))
			return -ECANCELED;
		slice = deadline_slice(d);
		if (!slice)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, slice) < 0 && errno != EINTR) {
			rc = -errno;
			rmig_link_err(l, "poll: %s", strerror(errno));
			return rc;
		}
	}
}

/* Wait for event `want` on c's channel. With pd, the event's private data
 * must be ours and is returned there. */
static int cm_expect(struct rmig_link *l, struct rdma_conn *c, enum rdma_cm_event_type want,
		     struct deadline *d, unsigned op, struct pdata *pd)
{
	struct rdma_cm_event *ev;
	int rc;

	for (;;) {
		rc = cm_next_event(l, c->ech, d, op, &ev);
		if (rc == -ECANCELED)
			rmig_link_err(l, "connection to %s interrupted", l->peer);
		else if (rc == -ETIMEDOUT)
			rmig_link_err(l, "RDMA peer %s did not answer within %d ms", l->peer,
				      d->timeout_ms);
		if (rc)
			return rc;
		if (ev->event == want && !ev->status) {
			rc = pd && pdata_decode(ev->param.conn.private_data,
						ev->param.conn.private_data_len, pd)
				 ? -EPROTO
				 : 0;
			rdma_ack_cm_event(ev);
			if (rc)
				rmig_link_err(l, "peer %s is not an rmig RDMA link", l->peer);
			return rc;
		}
		rc = cm_event_error(l, ev);
		rdma_ack_cm_event(ev);
		if (rc)
			return rc;
	}
}

static int check_route_device(struct rmig_link *l, struct rdma_cm_id *id)
{
	const char *want = opt_device(l), *got = dev_name(id->verbs);

	if (!want || strcmp(want, got) == 0)
		return 0;
	rmig_link_err(l, "the RDMA route to %s goes through device %s, not %s", l->peer, got, want);
	return -ENODEV;
}

/* --- source address: which device and GID ------------------------------------- */

static int gid_to_addr(const struct ibv_gid_entry *e, struct sockaddr_storage *ss)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t zero[16];
	const uint8_t *g = e->gid.raw;

	memset(ss, 0, sizeof(*ss));
	if (e->gid_type == IBV_GID_TYPE_IB || !memcmp(g, zero, 16))
		return -EINVAL;
	if (!memcmp(g, v4mapped, 12)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, g + 12, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, g, 16);
		if (g[0] == 0xfe && (g[1] & 0xc0) == 0x80)
			sin6->sin6_scope_id = e->ndev_ifindex;
	}
	return 0;
}

static int gid_rank(const struct ibv_gid_entry *e, int family)
{
	struct sockaddr_storage ss;
	int rank = 1;

	if (gid_to_addr(e, &ss) || ss.ss_family != family)
		return 0;
	if (e->gid_type == IBV_GID_TYPE_ROCE_V2)
		rank += 2;
	if (family == AF_INET6 && e->gid.raw[0] != 0xfe)
		rank += 1; /* a global address over a link-local one */
	return rank;
}

/* Every valid GID of every port. The kernel refuses a buffer larger than
 * the device's tables, so it is sized from the ports' gid_tbl_len. */
static ssize_t query_gids(struct ibv_context *verbs, uint8_t nports, struct ibv_gid_entry **out)
{
	size_t total = 0;
	ssize_t n;

	*out = NULL;
	for (uint8_t p = 1; p <= nports; p++) {
		struct ibv_port_attr pa;

		if (!ibv_query_port(verbs, p, &pa) && pa.gid_tbl_len > 0)
			total += (size_t)pa.gid_tbl_len;
	}
	if (!total)
		return 0;
	*out = calloc(total, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	n = ibv_query_gid_table(verbs, *out, total, 0); /* < 0: -errno */
	if (n < 0) {
		free(*out);
		*out = NULL;
	}
	return n;
}

/* The address to bind so that rdma_cm uses `verbs` (on `port`, 0: any
 * active one): that of GID gid_index, else the device's best IP GID of the
 * peer's family. 1: none (let rdma_cm choose), < 0: error. */
static int device_address(struct rmig_link *l, struct ibv_context *verbs, uint8_t port, int family,
			  struct sockaddr_storage *ss)
{
	struct ibv_device_attr da;
	struct ibv_gid_entry *tab = NULL, best = { 0 };
	int rc = ibv_query_device(verbs, &da), best_rank = 0; /* verbs: positive errno */
	ssize_t n;

	if (rc) {
		rmig_link_err(l, "cannot query RDMA device %s: %s", dev_name(verbs), strerror(rc));
		return -rc;
	}
	if (rdma(l)->gid_index >= 0) {
		for (uint8_t p = 1; p <= da.phys_port_cnt; p++) {
			struct ibv_gid_entry e;

			if ((port && p != port) ||
			    ibv_query_gid_ex(verbs, p, (uint32_t)rdma(l)->gid_index, &e, 0))
				continue;
			if (gid_to_addr(&e, ss)) {
				rmig_link_err(
				    l, "GID %d of %s is not an IP address (gid_index is for RoCE)",
				    rdma(l)->gid_index, dev_name(verbs));
				return -EINVAL;
			}
			return 0;
		}
		rmig_link_err(l, "RDMA device %s has no GID %d", dev_name(verbs),
			      rdma(l)->gid_index);
		return -ENOENT;
	}
	n = query_gids(verbs, da.phys_port_cnt, &tab);
	for (ssize_t i = 0; i < n; i++) {
		struct ibv_port_attr pa;
		int rank = gid_rank(&tab[i], family);

		if (!rank || (port && tab[i].port_num != port) ||
		    ibv_query_port(verbs, (uint8_t)tab[i].port_num, &pa) ||
		    pa.state != IBV_PORT_ACTIVE)
			continue;
		if (rank > best_rank) {
			best = tab[i];
			best_rank = rank;
		}
	}
	free(tab);
	if (!best_rank)
		return 1;
	gid_to_addr(&best, ss);
	return 0;
}

/* Without a device name but with a GID index: resolve once to learn which
 * device the route takes. */
static int probe_device(struct rmig_link *l, const struct sockaddr *dst, int timeout_ms,
			struct ibv_context **verbs, uint8_t *port)
{
	struct rdma_conn *c = conn_alloc(KIND_CTRL, -1);
	struct deadline d;
	int rc;

	if (!c)
		return -ENOMEM;
	deadline_init(&d, timeout_ms < 0 || timeout_ms > RESOLVE_MS ? RESOLVE_MS : timeout_ms);
	rc = new_event_channel(l, &c->ech);
	if (!rc && rdma_create_id(c->ech, &c->id, c, RDMA_PS_TCP)) { /* -1 and errno */
		rc = -errno;
		rmig_link_err(l, "rdma_create_id: %s", strerror(errno));
	}
	if (!rc && rdma_resolve_addr(c->id, NULL, (struct sockaddr *)dst, RESOLVE_MS)) {
		rc = errno == ENODEV || errno == ENETUNREACH ? -errno : -EHOSTUNREACH;
		rmig_link_err(l, "no RDMA device reaches %s: %s", l->peer, strerror(errno));
	}
	if (!rc)
		rc = cm_expect(l, c, RDMA_CM_EVENT_ADDR_RESOLVED, &d, RMIG_LINK_STOP_CTRL_SEND,
			       NULL);
	if (!rc) {
		*verbs = c->id->verbs;
		*port = c->id->port_num;
	}
	conn_free(l, c);
	return rc;
}

/* Where to bind the source end, honouring the device and gid_index options.
 * *have is 0 when rdma_cm may choose. */
static int pick_source(struct rmig_link *l, const struct sockaddr *dst, int timeout_ms,
		       struct sockaddr_storage *src, int *have)
{
	struct ibv_context *verbs = NULL, **dv;
	const char *want = opt_device(l);
	uint8_t port = 0;
	int rc;

	*have = 0;
	if (!want && rdma(l)->gid_index < 0)
		return 0;
	if (want) {
		rc = hold_devices(l);
		if (rc)
			return rc;
		dv = devs(l)->devices;
		for (int i = 0; dv[i]; i++)
			if (strcmp(dev_name(dv[i]), want) == 0)
				verbs = dv[i];
		if (!verbs) {
			rmig_link_err(l, "no RDMA device named %s", want);
			return -ENODEV;
		}
	} else {
		rc = probe_device(l, dst, timeout_ms, &verbs, &port);
		if (rc)
			return rc;
	}
	rc = device_address(l, verbs, port, dst->sa_family, src);
	if (rc < 0)
		return rc;
	*have = rc == 0;
	return 0;
}

/* --- rails: a device per NUMA node --------------------------------------------- */

static int sysfs_int(const char *fmt, const char *dev, int dflt);

static int dev_numa_node(const char *name)
{
	return sysfs_int("/sys/class/infiniband/%s/device/numa_node", name, -1);
}

static struct ibv_context *device_named(struct rmig_link *l, const char *name)
{
	struct ibv_context **dv = devs(l)->devices;

	for (int i = 0; dv && dv[i]; i++)
		if (!strcmp(dev_name(dv[i]), name))
			return dv[i];
	return NULL;
}

/* Device verbs becomes a rail serving node, at the address its GID gives
 * (where a source binds it and a destination is reached). */
static int rail_add(struct rmig_link *l, struct ibv_context *verbs, int node)
{
	struct rdma_link *r = rdma(l);
	struct rmig_link_rail *x = &r->rails[r->nrails];
	int rc;

	if (r->nrails == MAX_RAILS || strlen(dev_name(verbs)) >= sizeof(x->name)) {
		rmig_link_err(l, "rails: more than %d, or device name %s too long", MAX_RAILS,
			      dev_name(verbs));
		return -EINVAL;
	}
	memset(x, 0, sizeof(*x));
	rc = device_address(l, verbs, 0, AF_INET, &x->addr);
	if (rc == 1)
		rc = device_address(l, verbs, 0, AF_INET6, &x->addr);
	if (rc == 1) {
		rmig_link_err(l, "rails: device %s has no active port with an IP address",
			      dev_name(verbs));
		return -EADDRNOTAVAIL;
	}
	if (rc < 0)
		return rc;
	snprintf(x->name, sizeof(x->name), "%s", dev_name(verbs));
	x->node = node;
	r->nrails++;
	return 0;
}

/* "auto": the first active device of each NUMA node sysfs names; fewer
 * than two nodes served is one path, as without rails. */
static int rails_auto(struct rmig_link *l)
{
	struct rdma_link *r = rdma(l);
	struct ibv_context **dv = devs(l)->devices;

	for (int i = 0; dv && dv[i]; i++) {
		int node = dev_numa_node(dev_name(dv[i])), taken = 0, rc;

		for (unsigned k = 0; k < r->nrails; k++)
			taken |= r->rails[k].node == node;
		if (node < 0 || taken)
			continue;
		rc = rail_add(l, dv[i], node);
		if (rc && rc != -EADDRNOTAVAIL)
			return rc;
	}
	if (r->nrails < 2)
		r->nrails = 0;
	return 0;
}

/* "DEV[@NODE],...", its syntax checked by set_option. */
static int rails_named(struct rmig_link *l)
{
	const char *p = rdma(l)->rails_spec;

	while (*p) {
		size_t len = strcspn(p, ",");
		char item[RAILS_SPEC_LEN], *at;
		struct ibv_context *verbs;
		int node = -1, rc;

		memcpy(item, p, len);
		item[len] = 0;
		p += len + (p[len] == ',');
		at = strchr(item, '@');
		if (at) {
			*at = 0;
			node = atoi(at + 1);
		}
		verbs = device_named(l, item);
		if (!verbs) {
			rmig_link_err(l, "rails: no RDMA device named %s", item);
			return -ENODEV;
		}
		if (node < 0)
			node = dev_numa_node(item);
		if (node < 0) {
			rmig_link_err(l,
				      "rails: sysfs gives device %s no NUMA node: name one, "
				      "%s@NODE",
				      item, item);
			return -EINVAL;
		}
		rc = rail_add(l, verbs, node);
		if (rc)
			return rc;
	}
	return 0;
}

static int rails_resolve(struct rmig_link *l)
{
	struct rdma_link *r = rdma(l);
	int rc;

	if (r->rails_ready || !r->rails_spec[0])
		return 0;
	rc = hold_devices(l);
	if (!rc)
		rc = strcmp(r->rails_spec, "auto") ? rails_named(l) : rails_auto(l);
	if (rc) {
		r->nrails = 0;
		return rc;
	}
	r->rails_ready = 1;
	return 0;
}

/* The rail serving node if it is not lost, else the first that is not;
 * -1: none left. */
static int rail_for(const struct rmig_link_rail *rails, unsigned n, int node)
{
	int any = -1;

	for (unsigned i = 0; i < n; i++) {
		if (rails[i].lost)
			continue;
		if (rails[i].node == node)
			return (int)i;
		if (any < 0)
			any = (int)i;
	}
	return any;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port_be)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = port_be;
	else
		((struct sockaddr_in *)ss)->sin_port = port_be;
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
					 : ((const struct sockaddr_in *)ss)->sin_port;
}

/* The peer announced a rail for node. */
static int peer_serves(const struct rdma_link *r, int node)
{
	for (unsigned i = 0; i < r->npeer; i++)
		if (!r->peer_rails[i].lost && r->peer_rails[i].node == node)
			return 1;
	return 0;
}

/* Source: the local rail for node's connections: node's own if the peer
 * has a rail of that node too, else the first whose node the peer has (a
 * peer that lost a device announces the rails it has left), else
 * rail_for's. */
static int local_rail(const struct rdma_link *r, int node)
{
	int any = -1;

	for (unsigned i = 0; r->npeer && i < r->nrails; i++) {
		if (r->rails[i].lost || !peer_serves(r, r->rails[i].node))
			continue;
		if (r->rails[i].node == node)
			return (int)i;
		if (any < 0)
			any = (int)i;
	}
	return any >= 0 ? any : rail_for(r->rails, r->nrails, node);
}

/* Source: where a connection for node goes, from which local rail to the
 * peer's rail of that rail's node (the peer's first if it has none). */
static int rail_route(struct rmig_link *l, int node, struct sockaddr_storage *src,
		      struct sockaddr_storage *dst, int *rail)
{
	struct rdma_link *r = rdma(l);
	int li = local_rail(r, node), pi;

	if (li < 0) {
		rmig_link_err(l, "every rail is lost");
		return -ENETUNREACH;
	}
	pi = rail_for(r->peer_rails, r->npeer, r->rails[li].node);
	*src = r->rails[li].addr;
	set_port(src, 0);
	*dst = pi < 0 ? r->peer_addr : r->peer_rails[pi].addr;
	set_port(dst, get_port(&r->peer_addr));
	*rail = li;
	return 0;
}

/* The rail of device verbs on this side, -1: none. */
static int rail_of(const struct rdma_link *r, struct ibv_context *verbs)
{
	for (unsigned i = 0; i < r->nrails; i++)
		if (!strcmp(r->rails[i].name, dev_name(verbs)))
			return (int)i;
	return -1;
}

static void rail_count(struct rmig_link *l, const struct rdma_conn *c, const struct iovec *iov,
		       int n)
{
	uint64_t bytes = 0;

	if (c->rail < 0)
		return;
	for (int i = 0; i < n; i++)
		bytes += iov[i].iov_len;
	__atomic_fetch_add(&rdma(l)->rails[c->rail].bytes, bytes, __ATOMIC_RELAXED);
}

static unsigned down_rails(struct rmig_link *l);

static int rdma_link_rails_local(struct rmig_link *l, struct rmig_link_rail *out, unsigned max)
{
	struct rdma_link *r = rdma(l);
	unsigned n, down;
	int rc = rails_resolve(l);

	if (rc)
		return rc;
	n = r->nrails < max ? r->nrails : max;
	down = down_rails(l); /* a destination announces only the rails it has */
	for (unsigned i = 0; i < n; i++) {
		out[i] = r->rails[i];
		out[i].bytes = __atomic_load_n(&r->rails[i].bytes, __ATOMIC_RELAXED);
		out[i].lost |= (down >> i) & 1;
	}
	return (int)n;
}

static int rdma_link_rails_peer(struct rmig_link *l, const struct rmig_link_rail *in, unsigned n)
{
	struct rdma_link *r = rdma(l);

	r->npeer = n < MAX_RAILS ? n : MAX_RAILS;
	memcpy(r->peer_rails, in, r->npeer * sizeof(*in));
	for (unsigned i = 0; i < r->npeer; i++)
		r->peer_rails[i].lost = 0;
	return 0;
}

/* The rails (bits) with a connection that failed with error err (0: any). */
static unsigned failed_rails(struct rdma_link *r, int err)
{
	unsigned bad = 0, n = atomic_load(&r->nchan);

	for (unsigned i = 0; i <= n; i++) {
		const struct rdma_conn *c = i < n ? r->chan[i] : r->ctrl;
		int f = c ? atomic_load(&c->failed) : 0;

		if (c && c->rail >= 0 && f && (!err || f == err))
			bad |= 1u << c->rail;
	}
	return bad;
}

/* The rails (bits) whose device has no active port left (or is gone). */
static unsigned down_rails(struct rmig_link *l)
{
	struct rdma_link *r = rdma(l);
	unsigned down = 0;

	for (unsigned i = 0; i < r->nrails; i++) {
		struct ibv_context *verbs = device_named(l, r->rails[i].name);
		struct ibv_device_attr da;
		int up = 0;

		if (verbs && !ibv_query_device(verbs, &da))
			for (uint8_t p = 1; p <= da.phys_port_cnt; p++) {
				struct ibv_port_attr pa;

				up |= !ibv_query_port(verbs, p, &pa) && pa.state == IBV_PORT_ACTIVE;
			}
		if (!up)
			down |= 1u << i;
	}
	return down;
}

/* The rails (bits) with a connection of this session, once the CM events
 * that nobody waited for are read (a DREQ fails its connection); *closed:
 * whether the peer closed any (its DREQ came). */
static unsigned session_rails(struct rmig_link *l, int *closed)
{
	struct rdma_link *r = rdma(l);
	unsigned used = 0, n = atomic_load(&r->nchan);

	*closed = 0;
	for (unsigned i = 0; i <= n; i++) {
		struct rdma_conn *c = i < n ? r->chan[i] : r->ctrl;

		if (!c || c->rail < 0)
			continue;
		conn_cm_events(l, c);
		used |= 1u << c->rail;
		*closed |= atomic_load(&c->peer_closed);
	}
	return used;
}

/* Which rails to give up: those whose device went away or is down here,
 * else those with a failed connection. When they all failed and the peer
 * closed some (so it is there), nothing here tells them apart: a peer that
 * loses a device closes the connections of the others too (and removing a
 * device closes its own first). Then guess the control connection's rail,
 * whose loss ends a session everywhere; connect_ctrl tries the others'
 * instead if the guess was wrong. (What stays marked stays lost: a peer
 * that still lists a removed device would otherwise draw channels back to
 * it.)
 * Every rail failed without a word from the peer: RDMA is gone, TCP's turn. */
static unsigned lost_rails(struct rmig_link *l, int *guess)
{
	struct rdma_link *r = rdma(l);
	unsigned bad = failed_rails(r, -ENODEV) | down_rails(l), used;
	int closed;

	*guess = 0;
	if (bad)
		return bad;
	used = session_rails(l, &closed);
	bad = failed_rails(r, 0);
	*guess = bad == used && closed && (used & (used - 1)) && r->ctrl && r->ctrl->rail >= 0;
	return *guess ? 1u << r->ctrl->rail : bad;
}

static int rdma_link_rail_failover(struct rmig_link *l, char *lost, char *to, size_t len)
{
	struct rdma_link *r = rdma(l);
	int first_bad = -1, live = -1, guess;
	unsigned bad = lost_rails(l, &guess);

	for (unsigned i = 0; i < r->nrails; i++) {
		if (r->rails[i].lost)
			continue;
		if (bad & (1u << i))
			first_bad = first_bad < 0 ? (int)i : first_bad;
		else
			live = live < 0 ? (int)i : live;
	}
	if (first_bad < 0 || live < 0 || !r->npeer)
		return -ENOENT;
	r->guessed = guess ? bad : 0;
	for (unsigned i = 0; i < r->nrails; i++)
		r->rails[i].lost |= (bad >> i) & 1;
	snprintf(lost, len, "%s", r->rails[first_bad].name);
	snprintf(to, len, "%s", r->rails[live].name);
	return 0;
}

static void close_session(struct rmig_link *l);

/* --- source: connect --------------------------------------------------------------- */

static int connect_one(struct rmig_link *l, int kind, int node, const struct sockaddr *src,
		       const struct sockaddr *dst, int timeout_ms, struct rdma_conn **out)
{
	struct rdma_conn *c = conn_alloc(kind, node);
	struct rdma_conn_param param = { .retry_count = RETRY_COUNT,
					 .rnr_retry_count = RNR_RETRY,
					 .initiator_depth = KEY_READS,
					 .responder_resources = KEY_READS };
	uint8_t ack_timeout = ACK_TIMEOUT, pd_buf[PDATA_LEN];
	int resolve_ms = timeout_ms < 0 || timeout_ms > RESOLVE_MS ? RESOLVE_MS : timeout_ms;
	struct deadline d;
	struct pdata pd;
	int rc;

	if (!c)
		return -ENOMEM;
	deadline_init(&d, timeout_ms);
	rc = new_event_channel(l, &c->ech);
	if (rc)
		goto out;
	if (rdma_create_id(c->ech, &c->id, c, RDMA_PS_TCP)) { /* rdma_cm: -1 and errno */
		rc = -errno;
		rmig_link_err(l, "rdma_create_id: %s", strerror(errno));
		goto out;
	}
	if (rdma_resolve_addr(c->id, (struct sockaddr *)src, (struct sockaddr *)dst,
			      resolve_ms > 0 ? resolve_ms : 1)) {
		rc = errno == ENODEV || errno == ENETUNREACH ? -errno : -EHOSTUNREACH;
		rmig_link_err(l, "no RDMA device reaches %s: %s", l->peer, strerror(errno));
		goto out;
	}
	rc = cm_expect(l, c, RDMA_CM_EVENT_ADDR_RESOLVED, &d, RMIG_LINK_STOP_CTRL_SEND, NULL);
	if (rc == -ETIMEDOUT) {
		rmig_link_err(l, "no RDMA device reaches %s: address resolution timed out",
			      l->peer);
		rc = -EHOSTUNREACH;
	}
	if (!rc)
		rc = check_route_device(l, c->id);
	if (rc)
		goto out;
	if (rdma_resolve_route(c->id, resolve_ms > 0 ? resolve_ms : 1)) {
		rc = -EHOSTUNREACH;
		rmig_link_err(l, "no RDMA route to %s: %s", l->peer, strerror(errno));
		goto out;
	}
	rc = cm_expect(l, c, RDMA_CM_EVENT_ROUTE_RESOLVED, &d, RMIG_LINK_STOP_CTRL_SEND, NULL);
	if (!rc) /* ours: full pools at once */
		rc = conn_setup(l, c, c->nslots, c->nslots);
	if (rc)
		goto out;
	/* Older kernels lack the option: their default timeout is only slower. */
	rdma_set_option(c->id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &ack_timeout,
			sizeof(ack_timeout));
	pdata_encode(pd_buf, kind, node, c);
	param.private_data = pd_buf;
	param.private_data_len = sizeof(pd_buf);
	if (rdma_connect(c->id, &param)) {
		rc = -errno;
		rmig_link_err(l, "cannot connect to %s: %s", l->peer, strerror(errno));
		goto out;
	}
	rc = cm_expect(l, c, RDMA_CM_EVENT_ESTABLISHED, &d, RMIG_LINK_STOP_CTRL_SEND, &pd);
	if (rc)
		goto out;
	c->connected = 1;
	if (pd.kind != kind) {
		rc = -EPROTO;
		rmig_link_err(l, "peer %s accepted a different kind of connection", l->peer);
		goto out;
	}
	conn_tune(c);
	*out = c;
	c = NULL;
out:
	conn_free(l, c);
	return rc;
}

/* The guess of lost_rails (guessed) was wrong: its rails back, the others
 * given up instead. 0 if there are others. */
static int undo_guess(struct rdma_link *r, unsigned guessed)
{
	unsigned others = 0;

	for (unsigned i = 0; i < r->nrails; i++) {
		if ((guessed >> i) & 1) {
			r->rails[i].lost = 0;
		} else if (!r->rails[i].lost) {
			r->rails[i].lost = 1;
			others |= 1u << i;
		}
	}
	return others ? 0 : -ENOENT;
}

/* Source, with rails: the control connection, from a rail's own address to
 * the peer's of its node. After a guess (lost_rails) half the time goes to
 * the rails it left; if they do not connect, the rest to those it gave up. */
static int connect_ctrl_rail(struct rmig_link *l, int timeout_ms, unsigned guessed,
			     struct sockaddr_storage *dst, int *rail)
{
	struct rdma_link *r = rdma(l);
	int guess = guessed && timeout_ms > 1, first = guess ? timeout_ms / 2 : timeout_ms;
	struct sockaddr_storage src;
	int rc = rail_route(l, -1, &src, dst, rail);

	if (!rc)
		rc = connect_one(l, KIND_CTRL, -1, (struct sockaddr *)&src, (struct sockaddr *)dst,
				 first, &r->ctrl);
	if (rc && rc != -ECANCELED && guess && !undo_guess(r, guessed)) {
		rc = rail_route(l, -1, &src, dst, rail);
		if (!rc)
			rc = connect_one(l, KIND_CTRL, -1, (struct sockaddr *)&src,
					 (struct sockaddr *)dst, timeout_ms - first, &r->ctrl);
	}
	return rc;
}

static int rdma_link_connect_ctrl(struct rmig_link *l, const char *host, uint16_t port,
				  int timeout_ms)
{
	struct rdma_link *r = rdma(l);
	struct sockaddr_storage src, dst;
	unsigned guessed = r->guessed; /* for this connect only */
	socklen_t dlen;
	int rc, have_src, rail = -1;

	r->guessed = 0;
	close_session(l); /* a second connect starts a new session */
	snprintf(l->peer, sizeof(l->peer), "%s:%u", host, port);
	rc = check_devices(l, host);
	if (rc)
		return rc;
	rc = rmig_link_resolve(l, host, port, 0, &dst, &dlen);
	if (!rc)
		rc = rails_resolve(l);
	if (rc)
		return rc;
	r->peer_addr = dst;
	if (r->nrails && !opt_device(l)) { /* a rail's own, the peer's of its node */
		rc = connect_ctrl_rail(l, timeout_ms, guessed, &dst, &rail);
	} else {
		rc = pick_source(l, (struct sockaddr *)&dst, timeout_ms, &src, &have_src);
		if (!rc)
			rc =
			    connect_one(l, KIND_CTRL, -1, have_src ? (struct sockaddr *)&src : NULL,
					(struct sockaddr *)&dst, timeout_ms, &r->ctrl);
	}
	if (!rc) {
		r->ctrl->rail = rail >= 0 ? rail : rail_of(r, r->ctrl->dev->verbs);
		rmig_link_set_peer(l, (struct sockaddr *)&dst);
	}
	return rc;
}

static int rdma_link_connect_channel(struct rmig_link *l, int timeout_ms, int node, unsigned *chan)
{
	struct rdma_link *r = rdma(l);
	unsigned n = atomic_load(&r->nchan);
	struct sockaddr_storage src, dst;
	int rc, rail;

	if (!r->ctrl) {
		rmig_link_err(l, "no control connection");
		return -ENOTCONN;
	}
	if (n >= RMIG_LINK_MAX_CHANNELS) {
		rmig_link_err(l, "too many channels");
		return -ENOSPC;
	}
	if (r->nrails && r->npeer) { /* the rails of node, both sides */
		rc = rail_route(l, node, &src, &dst, &rail);
		if (rc)
			return rc;
	} else { /* from the control connection's address: the same device */
		memcpy(&src, rdma_get_local_addr(r->ctrl->id),
		       addr_len(rdma_get_local_addr(r->ctrl->id)));
		set_port(&src, 0);
		dst = r->peer_addr;
		rail = r->ctrl->rail;
	}
	rc = connect_one(l, KIND_DATA, node < 0 ? -1 : node, (struct sockaddr *)&src,
			 (struct sockaddr *)&dst, timeout_ms, &r->chan[n]);
	if (rc)
		return rc;
	r->chan[n]->rail = rail;
	atomic_store(&r->nchan, n + 1);
	*chan = n;
	return 0;
}

/* --- destination: listen and accept ------------------------------------------------ */

/* An address of no host in particular (0.0.0.0, ::). */
static int is_wildcard(const struct sockaddr_storage *a)
{
	static const struct in6_addr any6 = IN6ADDR_ANY_INIT;

	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &any6, sizeof(any6));
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static int same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr,
			       sizeof(struct in6_addr));
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

static void drop_listeners(struct rdma_link *r)
{
	for (unsigned i = 0; i < MAX_RAILS; i++)
		if (r->rail_listen[i])
			rdma_destroy_id(r->rail_listen[i]);
	memset(r->rail_listen, 0, sizeof(r->rail_listen));
	if (r->listen_id)
		rdma_destroy_id(r->listen_id);
	if (r->listen_ech)
		rdma_destroy_event_channel(r->listen_ech);
	r->listen_id = NULL;
	r->listen_ech = NULL;
}

/* Rail i's own listener, on port_be of its address. */
static int listen_rail(struct rmig_link *l, unsigned i, uint16_t port_be)
{
	struct rdma_link *r = rdma(l);
	struct sockaddr_storage a = r->rails[i].addr;
	char text[INET6_ADDRSTRLEN + 8];
	int err;

	set_port(&a, port_be);
	if (rdma_create_id(r->listen_ech, &r->rail_listen[i], NULL, RDMA_PS_TCP)) {
		err = errno;
		r->rail_listen[i] = NULL;
		rmig_link_err(l, "rdma_create_id: %s", strerror(err));
		return -err;
	}
	if (!rdma_bind_addr(r->rail_listen[i], (struct sockaddr *)&a) &&
	    !rdma_listen(r->rail_listen[i], LISTEN_BACKLOG))
		return 0;
	err = errno; /* rdma_cm: -1 and errno */
	rmig_link_addr_text((struct sockaddr *)&a, text, sizeof(text));
	rmig_link_err(l, "cannot listen on rail %s's address %s: %s", r->rails[i].name, text,
		      strerror(err));
	return -err;
}

/* With rails, the source's data channels come to each rail's address: a
 * listener there too, on the host's port, unless the host's listener
 * already takes it. Only where --listen and the rails say, never every
 * address (a wildcard host is the operator's choice, and covers them). */
static int listen_rails(struct rmig_link *l, const struct sockaddr_storage *host, uint16_t port_be)
{
	struct rdma_link *r = rdma(l);
	int rc = 0;

	if (is_wildcard(host))
		return 0;
	for (unsigned i = 0; !rc && i < r->nrails; i++) {
		int dup = same_ip(&r->rails[i].addr, host);

		for (unsigned k = 0; !dup && k < i; k++)
			dup = same_ip(&r->rails[i].addr, &r->rails[k].addr);
		if (!dup)
			rc = listen_rail(l, i, port_be);
	}
	return rc;
}

static int rdma_link_listen(struct rmig_link *l, const char *host, uint16_t *port)
{
	struct rdma_link *r = rdma(l);
	struct sockaddr_storage addr, gid_addr;
	struct sockaddr *sa = (struct sockaddr *)&addr;
	const char *want = opt_device(l);
	socklen_t alen;
	int rc;

	if (r->listen_id) {
		rmig_link_err(l, "already listening");
		return -EALREADY;
	}
	rc = check_devices(l, NULL);
	if (rc)
		return rc;
	rc = rmig_link_resolve(l, host, *port, 1, &addr, &alen);
	if (!rc)
		rc = rails_resolve(l);
	if (rc)
		return rc;
	rc = new_event_channel(l, &r->listen_ech);
	if (rc)
		goto out;
	if (rdma_create_id(r->listen_ech, &r->listen_id, NULL, RDMA_PS_TCP)) { /* -1, errno */
		rc = -errno;
		rmig_link_err(l, "rdma_create_id: %s", strerror(errno));
		goto out;
	}
	/* No host but a device and GID: listen on that GID's address. */
	if (!(host && *host) && want && rdma(l)->gid_index >= 0) {
		rc = hold_devices(l);
		for (int i = 0; !rc && devs(l)->devices[i]; i++) {
			struct ibv_context *verbs = devs(l)->devices[i];

			if (strcmp(dev_name(verbs), want))
				continue;
			rc = device_address(l, verbs, 0, AF_INET, &gid_addr);
			if (rc < 0)
				goto out;
			if (rc == 0) {
				((struct sockaddr_in *)&gid_addr)->sin_port = htons(*port);
				if (gid_addr.ss_family == AF_INET6)
					((struct sockaddr_in6 *)&gid_addr)->sin6_port =
					    htons(*port);
				sa = (struct sockaddr *)&gid_addr;
			}
			rc = 0;
		}
		if (rc)
			goto out;
	}
	if (rdma_bind_addr(r->listen_id, sa)) { /* rdma_cm: -1 and errno */
		rc = -errno;
		if (errno == EADDRNOTAVAIL || errno == ENODEV)
			rmig_link_err(l, "cannot listen on %s:%u: no RDMA device has that address",
				      host && *host ? host : "*", *port);
		else
			rmig_link_err(l, "cannot listen on %s:%u: %s", host && *host ? host : "*",
				      *port, strerror(errno));
		goto out;
	}
	if (want && r->listen_id->verbs && strcmp(dev_name(r->listen_id->verbs), want)) {
		rc = -ENODEV;
		rmig_link_err(l, "%s is on RDMA device %s, not %s", host,
			      dev_name(r->listen_id->verbs), want);
		goto out;
	}
	if (rdma_listen(r->listen_id, LISTEN_BACKLOG)) {
		rc = -errno;
		rmig_link_err(l, "cannot listen on %s:%u: %s", host && *host ? host : "*", *port,
			      strerror(errno));
		goto out;
	}
	*port = ntohs(rdma_get_src_port(r->listen_id));
	/* The address bound, which may be the GID's rather than host's. */
	rc = listen_rails(l, sa == (struct sockaddr *)&gid_addr ? &gid_addr : &addr,
			  rdma_get_src_port(r->listen_id));
out:
	if (rc)
		drop_listeners(r);
	return rc;
}

static void reject(struct rdma_cm_id *id, const char *why)
{
	uint8_t buf[4 + 120] = { 0 };
	size_t n = strnlen(why, sizeof(buf) - 5);

	put_le32(buf, PDATA_MAGIC);
	memcpy(buf + 4, why, n);
	rdma_reject(id, buf, (uint8_t)(4 + n + 1));
}

/* Our side of a request we take: its events to its own channel (its user
 * watches for a disconnect), then our answer. The QP is ready to send once
 * rdma_accept returns; we do not wait for the peer to complete. */
static int answer(struct rmig_link *l, struct rdma_conn *c, const char *from)
{
	struct rdma_conn_param param = { .retry_count = RETRY_COUNT,
					 .rnr_retry_count = RNR_RETRY,
					 .initiator_depth = KEY_READS,
					 .responder_resources = KEY_READS };
	uint8_t ack_timeout = ACK_TIMEOUT, reply[PDATA_LEN];
	int rc;

	if (rdma_migrate_id(c->id, c->ech)) { /* rdma_cm: -1 and errno */
		rc = -errno;
		rmig_link_err(l, "rdma_migrate_id: %s", strerror(errno));
		reject(c->id, "destination error");
		return rc;
	}
	rdma_set_option(c->id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &ack_timeout,
			sizeof(ack_timeout));
	pdata_encode(reply, c->kind, c->node, c);
	param.private_data = reply;
	param.private_data_len = sizeof(reply);
	if (rdma_accept(c->id, &param)) {
		rc = -errno;
		rmig_link_err(l, "cannot accept the RDMA connection from %s: %s", from,
			      strerror(errno));
		return rc;
	}
	c->connected = 1;
	conn_tune(c);
	return 0;
}

/* Accept the connect request on `child` (from `from`) as the kind of
 * connection its private data names, sized for it: control slots, or a data
 * channel's staging pools on the node it serves, of which only what its
 * opening needs is registered (OPEN_*_SLOTS_*). 0: accepted into *out; 1:
 * not for us (why in last[]; keep waiting); < 0: a local error, which the
 * peer is told too. */
static int take_request(struct rmig_link *l, struct rdma_cm_id *child, const struct pdata *pd,
			int pd_ok, const char *from, char *last, size_t lastlen,
			struct rdma_conn **out)
{
	const char *want = opt_device(l);
	struct rdma_conn *c = NULL;
	char why[120];
	int rc = 1;

	if (!pd_ok || (pd->kind != KIND_CTRL && pd->kind != KIND_DATA))
		snprintf(why, sizeof(why), "not an rmig RDMA link (or another version)");
	else if (want && strcmp(dev_name(child->verbs), want))
		snprintf(why, sizeof(why), "arrived on RDMA device %s, the destination uses %s",
			 dev_name(child->verbs), want);
	else if (!(c = conn_alloc(pd->kind, pd->node)))
		rc = -ENOMEM;
	else if (pd->slot_size != c->slot_size || pd->nslots != c->nslots)
		snprintf(why, sizeof(why), "buffer layout %ux%u, expected %ux%zu", pd->nslots,
			 pd->slot_size, c->nslots, c->slot_size);
	else
		rc = 0;
	if (rc) {
		if (rc < 0)
			rmig_link_err(l, "no memory for a connection from %s", from);
		else
			snprintf(last, lastlen, "refused %s: %s", from, why);
		reject(child, rc < 0 ? "destination out of memory" : why);
		rdma_destroy_id(child);
		free(c);
		return rc;
	}
	c->id = child; /* from here conn_free() destroys it */
	rc = new_event_channel(l, &c->ech);
	if (!rc) /* anyone's: only what its opening needs, until it is adopted */
		rc = conn_setup(l, c,
				c->kind == KIND_CTRL ? OPEN_RECV_SLOTS_CTRL : OPEN_RECV_SLOTS_DATA,
				c->kind == KIND_CTRL ? OPEN_SEND_SLOTS_CTRL : OPEN_SEND_SLOTS_DATA);
	if (rc)
		reject(child, l->err);
	else
		rc = answer(l, c, from);
	if (rc) {
		conn_free(l, c);
		return rc;
	}
	*out = c;
	return 0;
}

static unsigned rail_listeners(const struct rdma_link *r)
{
	unsigned n = 0;

	for (unsigned i = 0; i < MAX_RAILS; i++)
		n += r->rail_listen[i] != NULL;
	return n;
}

/* A listener whose device was removed: acked and destroyed (what rdma_cm
 * asks of a removal) while another listener is left, which goes on (the
 * source moves the lost rail's channels, and its control connection, to
 * a surviving rail's address). 0: the last listener is gone, or the
 * event is none of ours. */
static int drop_listener(struct rdma_link *r, struct rdma_cm_event *ev)
{
	struct rdma_cm_id **id = NULL;

	for (unsigned i = 0; !id && i < MAX_RAILS; i++)
		if (r->rail_listen[i] && ev->id == r->rail_listen[i])
			id = &r->rail_listen[i];
	if (!id && ev->id == r->listen_id && r->listen_id && rail_listeners(r))
		id = &r->listen_id;
	if (!id || (id != &r->listen_id && !r->listen_id && rail_listeners(r) == 1))
		return 0;
	rdma_ack_cm_event(ev);
	rdma_destroy_id(*id);
	*id = NULL;
	return 1;
}

/* The next connect request on the listener: *child, ours to accept or
 * reject, and its private data (*pd_ok: ours, decoded into *pd). `last`
 * (why the last one was refused) goes into a timeout's message. */
static int next_request(struct rmig_link *l, struct deadline *d, const char *last,
			struct rdma_cm_id **child, struct pdata *pd, int *pd_ok)
{
	struct rdma_cm_event *ev;
	int rc;

	for (;;) {
		rc = cm_next_event(l, rdma(l)->listen_ech, d, RMIG_LINK_STOP_CTRL_RECV, &ev);
		if (rc == -ECANCELED)
			rmig_link_err(l, "accept interrupted");
		else if (rc == -ETIMEDOUT && last[0])
			rmig_link_err(l, "no peer connected within %d ms (last attempt: %s)",
				      d->timeout_ms, last);
		else if (rc == -ETIMEDOUT)
			rmig_link_err(l, "no peer connected within %d ms", d->timeout_ms);
		if (rc)
			return rc;
		if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST)
			break;
		rc = ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL;
		if (rc && drop_listener(rdma(l), ev))
			continue;
		rdma_ack_cm_event(ev);
		if (rc) {
			rmig_link_err(l, "the listening RDMA device was removed");
			return -ENODEV;
		}
	}
	*child = ev->id;
	*pd_ok = !pdata_decode(ev->param.conn.private_data, ev->param.conn.private_data_len, pd);
	rdma_ack_cm_event(ev);
	return 0;
}

/* Destination: the next connection of either kind, into conn (a new link
 * made for it by rmig_link_accept), which then uses the listener's devices
 * and PDs. Requests that are not for us are refused, with the reason, and
 * waiting goes on. Nothing waits for the peer beyond its request: the
 * engine's first ctrl_recv on conn finds out whether it completes. */
static int rdma_link_accept(struct rmig_link *l, int timeout_ms, struct rmig_link *conn)
{
	struct rdma_link *r = rdma(l), *n = rdma(conn);
	char last[sizeof(l->err)] = "";
	struct deadline d;
	int rc;

	if (!r->listen_id && !rail_listeners(r)) {
		rmig_link_err(l, "not listening");
		return -EINVAL;
	}
	if (n->ctrl || atomic_load(&n->nchan) || n->areas) {
		rmig_link_err(l, "the link for a new connection is in use");
		return -EISCONN;
	}
	if (n->devs != r->devs) { /* its own table is unused: swap it for ours */
		table_put(n->devs);
		n->devs = table_get(r->devs);
	}
	/* The session it may become announces the listener's rails. */
	memcpy(n->rails, r->rails, sizeof(r->rails));
	n->nrails = r->nrails;
	n->rails_ready = 1;
	deadline_init(&d, timeout_ms);
	for (;;) {
		struct rdma_cm_id *child;
		char from[sizeof(l->peer)];
		struct pdata pd;
		int pd_ok;

		rc = next_request(l, &d, last, &child, &pd, &pd_ok);
		if (rc)
			return rc;
		rmig_link_addr_text(rdma_get_peer_addr(child), from, sizeof(from));
		rc = take_request(l, child, &pd, pd_ok, from, last, sizeof(last), &n->ctrl);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			rmig_link_set_peer(conn, rdma_get_peer_addr(n->ctrl->id));
			n->ctrl->rail = rail_of(n, n->ctrl->dev->verbs);
			return 0;
		}
	}
}

static void rdma_link_mem_release(struct rmig_link *l);

/* Channels may have holes (adopted out of order, or never): NULL entries. */
static void close_session(struct rmig_link *l)
{
	struct rdma_link *r = rdma(l);
	unsigned n = atomic_load(&r->nchan);

	rdma_link_mem_release(l);
	for (unsigned i = 0; i < n; i++) {
		conn_free(l, r->chan[i]);
		r->chan[i] = NULL;
	}
	atomic_store(&r->nchan, 0);
	conn_free(l, r->ctrl);
	r->ctrl = NULL;
}

static void rdma_link_close_session(struct rmig_link *l)
{
	close_session(l);
	atomic_store(&l->interrupted, 0);
}

/* Why conn's connection cannot become a data channel of l (0: it can). Its
 * QP must share a PD with what l exposes: same table, same device. */
static int adopt_check(struct rmig_link *l, struct rmig_link *conn, unsigned chan)
{
	struct rdma_link *r = rdma(l);
	struct rdma_conn *c = rdma(conn)->ctrl;

	if (chan >= RMIG_LINK_MAX_CHANNELS) {
		rmig_link_err(l, "no data channel %u: at most %d", chan, RMIG_LINK_MAX_CHANNELS);
		return -EINVAL;
	}
	if (!r->ctrl) {
		rmig_link_err(l, "no control connection");
		return -ENOTCONN;
	}
	if (!c) {
		rmig_link_err(l, "no accepted connection to make data channel %u", chan);
		return -ENOTCONN;
	}
	if (c->kind != KIND_DATA) {
		rmig_link_err(l, "%s opened a control connection, not data channel %u", conn->peer,
			      chan);
		return -EPROTO;
	}
	/* With rails a channel comes on its node's device: staging only (the
	 * source does not place pages then, see mem_import). */
	if (rdma(conn)->devs != r->devs ||
	    (c->dev != r->ctrl->dev && rail_of(r, c->dev->verbs) < 0)) {
		rmig_link_err(l,
			      "data channel %u from %s is on RDMA device %s%s, the session on %s",
			      chan, conn->peer, dev_name(c->dev->verbs),
			      rdma(conn)->devs != r->devs ? " of another listener" : "",
			      dev_name(r->ctrl->dev->verbs));
		return -EXDEV;
	}
	if (r->chan[chan]) {
		rmig_link_err(l, "data channel %u is already connected", chan);
		return -EEXIST;
	}
	return 0;
}

/* Destination: the connection accepted into conn, a data channel by its
 * private data, becomes channel chan of session link l. Whatever arrived on
 * it beyond what the engine read stays queued, in order.
 *
 * The engine adopts a channel only once its peer proved itself, so this is
 * where the channel's pools and those of the session's control connection
 * grow to full size: both are counted against RLIMIT_MEMLOCK here (a
 * refusal is the adopter's error). The channel, which nobody uses until it
 * is adopted, is registered at once, and a failure reported here too; the
 * control connection, which the engine's other threads may be using (the
 * heartbeats), grows at each side's next op. */
static int rdma_link_adopt_channel(struct rmig_link *l, struct rmig_link *conn, unsigned chan,
				   int *node)
{
	struct rdma_link *r = rdma(l);
	struct rdma_conn *c;
	int rc = adopt_check(l, conn, chan);

	if (rc)
		return rc;
	c = rdma(conn)->ctrl;
	rc = memlock_check(l, conn_unreserved(c) + conn_unreserved(r->ctrl), "staging pools need");
	if (rc)
		return rc;
	conn_reserve(l, c);
	conn_reserve(l, r->ctrl);
	rc = grow_send(l, c);
	if (!rc)
		rc = grow_recv(l, c);
	if (rc) {
		conn_why(l, c);
		return rc;
	}
	r->chan[chan] = rdma(conn)->ctrl;
	rdma(conn)->ctrl = NULL;
	if (chan >= atomic_load(&r->nchan))
		atomic_store(&r->nchan, chan + 1);
	*node = r->chan[chan]->node;
	r->chan[chan]->rail = rail_of(r, r->chan[chan]->dev->verbs);
	return 0;
}

/* --- stream ops ------------------------------------------------------------------ */

static int rdma_link_ctrl_send(struct rmig_link *l, const struct iovec *iov, int iovcnt,
			       int timeout_ms)
{
	struct rdma_conn *c = rdma(l)->ctrl;

	if (!c) {
		rmig_link_err(l, "no control connection");
		return -ENOTCONN;
	}
	return stream_send(l, c, iov, iovcnt, timeout_ms, RMIG_LINK_STOP_CTRL_SEND, "control send");
}

static int rdma_link_ctrl_recv(struct rmig_link *l, void *buf, size_t len, int timeout_ms)
{
	struct rdma_conn *c = rdma(l)->ctrl;
	struct iovec iov = { buf, len };

	if (!c) {
		rmig_link_err(l, "no control connection");
		return -ENOTCONN;
	}
	return stream_recv(l, c, &iov, 1, timeout_ms, RMIG_LINK_STOP_CTRL_RECV, "control receive");
}

static struct rdma_conn *chan_conn(struct rmig_link *l, unsigned chan)
{
	struct rdma_link *r = rdma(l);

	if (chan >= atomic_load(&r->nchan) || !r->chan[chan]) {
		rmig_link_err(l, "no data channel %u", chan);
		return NULL;
	}
	return r->chan[chan];
}

static int rdma_link_chan_send(struct rmig_link *l, unsigned chan, const struct iovec *iov,
			       int iovcnt, int timeout_ms)
{
	struct rdma_conn *c = chan_conn(l, chan);
	int rc = c ? stream_send(l, c, iov, iovcnt, timeout_ms, RMIG_LINK_STOP_DATA, "data send")
		   : -EINVAL;

	if (!rc)
		rail_count(l, c, iov, iovcnt);
	return rc;
}

static int rdma_link_chan_recv(struct rmig_link *l, unsigned chan, const struct iovec *iov,
			       int iovcnt, int timeout_ms)
{
	struct rdma_conn *c = chan_conn(l, chan);
	int rc = c ? stream_recv(l, c, iov, iovcnt, timeout_ms, RMIG_LINK_STOP_DATA, "data receive")
		   : -EINVAL;

	if (!rc)
		rail_count(l, c, iov, iovcnt);
	return rc;
}

/* --- placement: guest memory registration and RDMA WRITE ---------------------- */

/* Both sides register in chunks, ahead of the sender (rdma_reg.c); the
 * source learns the destination's keys from its key table. */

static void fetch_free(struct key_fetch *f)
{
	if (f->mr)
		ibv_dereg_mr(f->mr);
	free(f->buf);
	memset(f, 0, sizeof(*f));
}

static void rdma_link_mem_release(struct rmig_link *l)
{
	struct rdma_link *r = rdma(l);

	rmig_rdma_reg_stop(&r->reg);
	for (unsigned i = 0; i < RMIG_LINK_MAX_CHANNELS; i++)
		fetch_free(&r->fetch[i]);
	if (r->keytab_mr)
		ibv_dereg_mr(r->keytab_mr);
	if (r->keytab)
		munmap(r->keytab, r->keytab_len);
	atomic_fetch_sub(&devs(l)->pinned, r->mem_pinned);
	free(r->rkeys);
	free(r->areas);
	r->keytab_mr = NULL;
	r->keytab = NULL;
	r->rkeys = NULL;
	r->areas = NULL;
	r->nareas = 0;
	r->mem_pinned = 0;
	r->mem_dev = NULL;
	r->imported = 0;
}

/* Check mem[0..n), count its bytes (and `extra`) as pinned, and record the
 * areas: what mem_expose and mem_import share before registering. */
static int areas_begin(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
		       uint64_t extra, uint64_t *lens)
{
	struct rdma_link *r = rdma(l);
	uint64_t total = extra;
	int rc;

	if (!r->ctrl) {
		rmig_link_err(l, "no control connection");
		return -ENOTCONN;
	}
	if (n > RMIG_RDMA_MAX_AREAS || (n && !mem)) {
		rmig_link_err(l, "%zu guest memory areas, at most %d", n, RMIG_RDMA_MAX_AREAS);
		return -E2BIG;
	}
	for (size_t i = 0; i < n; i++) {
		if (mem[i].len > UINT64_MAX - total ||
		    (mem[i].len && (uintptr_t)mem[i].addr > UINTPTR_MAX - mem[i].len)) {
			rmig_link_err(l, "guest memory area %zu: bad address range", i);
			return -EINVAL;
		}
		total += mem[i].len;
		lens[i] = mem[i].len;
	}
	rc = memlock_check(l, total, "guest memory needs");
	if (rc)
		return rc;
	r->areas = calloc(n ? n : 1, sizeof(*r->areas));
	if (!r->areas)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		r->areas[i] =
		    (struct rdma_area){ .addr = (uintptr_t)mem[i].addr, .len = mem[i].len };
	r->nareas = n;
	r->mem_dev = r->ctrl->dev;
	r->mem_pinned = total;
	atomic_fetch_add(&devs(l)->pinned, total);
	return 0;
}

/* Destination: the key table, readable by the peer and by nothing else. */
static int keytab_make(struct rmig_link *l, uint32_t nchunks)
{
	struct rdma_link *r = rdma(l);
	long page = sysconf(_SC_PAGESIZE);

	r->keytab_len = ((size_t)nchunks * 8 + (size_t)page - 1) / (size_t)page * (size_t)page;
	if (!r->keytab_len)
		r->keytab_len = (size_t)page;
	r->keytab =
	    mmap(NULL, r->keytab_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->keytab == MAP_FAILED) {
		r->keytab = NULL;
		return -ENOMEM;
	}
	r->keytab_mr = ibv_reg_mr(r->mem_dev->pd, r->keytab, r->keytab_len,
				  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
	if (!r->keytab_mr) {
		rmig_link_err(l, "cannot register the memory key table on %s: %s",
			      dev_name(r->mem_dev->verbs), strerror(errno));
		return errno ? -errno : -ENOMEM;
	}
	return 0;
}

static int rdma_link_mem_expose(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
				void **blob, size_t *len)
{
	struct rdma_link *r = rdma(l);
	uint64_t lens[RMIG_RDMA_MAX_AREAS];
	unsigned shift;
	uint32_t nchunks = 0;
	uint8_t *b = NULL;
	int rc;

	*blob = NULL;
	*len = 0;
	rdma_link_mem_release(l);
	rc = areas_begin(l, mem, n, 0, lens);
	shift = rc ? 0 : rmig_rdma_chunk_shift(lens, n);
	if (!rc && rmig_rdma_chunk_count(lens, n, shift, &nchunks)) {
		rmig_link_err(l, "guest memory takes more than %u chunks", RMIG_RDMA_MAX_CHUNKS);
		rc = -E2BIG;
	}
	if (!rc)
		rc = keytab_make(l, nchunks);
	/* Remote write and nothing else (local write is required with it). */
	if (!rc)
		rc = rmig_rdma_reg_start(&r->reg, r->mem_dev->pd, mem, n, shift,
					 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
					 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
					 r->keytab, NULL, l->err, sizeof(l->err));
	if (!rc && !(b = malloc(rmig_rdma_blob_len(n))))
		rc = -ENOMEM;
	if (rc) {
		rdma_link_mem_release(l);
		return rc;
	}
	rmig_rdma_blob_encode(b, &r->reg, (uintptr_t)r->keytab, r->keytab_mr->rkey);
	*blob = b;
	*len = rmig_rdma_blob_len(n);
	return 0;
}

static int rdma_link_mem_import(struct rmig_link *l, const struct rmig_link_mem *mem, size_t n,
				const void *blob, size_t len)
{
	struct rdma_link *r = rdma(l);
	uint64_t lens[RMIG_RDMA_MAX_AREAS], raddr[RMIG_RDMA_MAX_AREAS];
	int rc;

	if (r->nrails > 1 && r->npeer > 1) {
		rmig_link_err(l, "with rails the pages go through each rail's staging buffers "
				 "(guest memory is registered on one device)");
		return -EOPNOTSUPP;
	}
	rdma_link_mem_release(l);
	rc = areas_begin(l, mem, n, 0, lens);
	if (!rc)
		rc = rmig_rdma_blob_parse(blob, len, lens, n, &r->peer, raddr, l->err,
					  sizeof(l->err));
	if (!rc && !(r->rkeys = calloc(r->peer.nchunks ? r->peer.nchunks : 1, sizeof(*r->rkeys))))
		rc = -ENOMEM;
	/* Only read locally: no access flags (local read is implied), unless
	 * the provider insists on local write. */
	if (!rc)
		rc =
		    rmig_rdma_reg_start(&r->reg, r->mem_dev->pd, mem, n, r->peer.shift, 0,
					IBV_ACCESS_LOCAL_WRITE, NULL, NULL, l->err, sizeof(l->err));
	if (rc) {
		rdma_link_mem_release(l);
		return rc;
	}
	for (size_t i = 0; i < n; i++)
		r->areas[i].raddr = raddr[i];
	r->imported = 1;
	return 0;
}

/* The local area holding v, and v's offset in it. */
static int local_area(struct rdma_link *r, const struct iovec *v, size_t *hint, uint64_t *off)
{
	uintptr_t base = (uintptr_t)v->iov_base;

	for (size_t k = 0; k < r->nareas; k++) {
		size_t j = (*hint + k) % r->nareas;
		const struct rdma_area *a = &r->areas[j];

		if (a->len && base >= a->addr && base - a->addr <= a->len &&
		    v->iov_len <= a->len - (base - a->addr)) {
			*hint = j;
			*off = base - a->addr;
			return 0;
		}
	}
	return -EFAULT;
}

/* Wait for SQ room for `need` more WRs. */
static int sq_room(struct rmig_link *l, struct rdma_conn *c, unsigned need, struct deadline *d)
{
	int rc;

	for (;;) {
		if (stopped(l, RMIG_LINK_STOP_DATA))
			return -ECANCELED;
		rc = reap_send(l, c);
		if (rc > 0)
			deadline_restart(d);
		if (atomic_load(&c->failed))
			return atomic_load(&c->failed);
		if (c->sq_seq - c->sq_done + need <= c->sq_depth)
			return 0;
		rc = cq_wait(l, c, &c->s, RMIG_LINK_STOP_DATA, d);
		if (rc)
			return rc;
	}
}

/* A finished key table READ: what it brought, kept (keys never change). */
static void keys_take(struct rdma_link *r, struct key_fetch *f)
{
	for (uint32_t i = 0; i < r->peer.nchunks; i++) {
		uint32_t rkey;
		int st;

		if (atomic_load(&r->rkeys[i]))
			continue;
		st = rmig_rdma_key_decode(le64toh(f->buf[i]), &rkey);
		if (st)
			atomic_store(&r->rkeys[i],
				     st > 0 ? KEY_KNOWN | rkey : KEY_FAILED | (uint32_t)-st);
	}
	f->pending = 0;
}

/* Post a READ of the peer's whole key table on c, if none is in flight. */
static int keys_fetch(struct rmig_link *l, struct rdma_conn *c, unsigned chan, struct deadline *d)
{
	struct rdma_link *r = rdma(l);
	struct key_fetch *f = &r->fetch[chan];
	size_t len = (size_t)r->peer.nchunks * 8;
	struct ibv_send_wr wr;
	struct ibv_sge sge;
	int rc;

	if (f->pending)
		return 0;
	if (!f->buf) {
		f->buf = calloc(r->peer.nchunks ? r->peer.nchunks : 1, 8);
		f->mr =
		    f->buf ? ibv_reg_mr(r->mem_dev->pd, f->buf, len, IBV_ACCESS_LOCAL_WRITE) : NULL;
		if (!f->mr) {
			fetch_free(f);
			rmig_link_err(l, "cannot register a buffer for the peer's memory keys");
			return -ENOMEM;
		}
	}
	rc = sq_room(l, c, 1, d);
	if (rc)
		return rc;
	sge = (struct ibv_sge){ (uintptr_t)f->buf, (uint32_t)len, f->mr->lkey };
	wr = (struct ibv_send_wr){ .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_READ };
	wr.wr.rdma.remote_addr = r->peer.table_addr;
	wr.wr.rdma.rkey = r->peer.table_rkey;
	f->seq = c->sq_seq;
	rc = post_chain(l, c, &wr, 1);
	f->pending = !rc;
	return rc;
}

/* Take the key table READ's result if it is back. */
static void keys_poll(struct rmig_link *l, struct rdma_conn *c, unsigned chan)
{
	struct rdma_link *r = rdma(l);

	reap_send(l, c);
	if (r->fetch[chan].pending && c->sq_done > r->fetch[chan].seq)
		keys_take(r, &r->fetch[chan]);
}

/* Until the peer's key for chunk i is known: READ its key table, again
 * every KEY_RETRY_MS while the chunk is not registered there yet. */
static int key_wait(struct rmig_link *l, struct rdma_conn *c, unsigned chan, uint32_t i,
		    struct deadline *d)
{
	struct rdma_link *r = rdma(l);
	int rc;

	for (;;) {
		uint64_t k = atomic_load(&r->rkeys[i]);

		if (k & KEY_KNOWN)
			return 0;
		if (k & KEY_FAILED) {
			rmig_link_err(l, "the destination could not register its guest memory: %s",
				      strerror((int)(uint32_t)k));
			return -(int)(uint32_t)k;
		}
		if (stopped(l, RMIG_LINK_STOP_DATA))
			return -ECANCELED;
		if (!deadline_slice(d)) {
			rmig_link_err(l, "the destination registered no guest memory for %d ms",
				      d->timeout_ms);
			return -ETIMEDOUT;
		}
		rc = r->fetch[chan].pending ? 0 : keys_fetch(l, c, chan, d);
		if (!rc)
			rc = cq_wait(l, c, &c->s, RMIG_LINK_STOP_DATA, d);
		if (rc || atomic_load(&c->failed))
			return rc ? rc : atomic_load(&c->failed);
		keys_poll(l, c, chan);
		/* Read back, and that chunk not registered there yet. */
		if (!r->fetch[chan].pending &&
		    !(atomic_load(&r->rkeys[i]) & (KEY_KNOWN | KEY_FAILED)))
			usleep(KEY_RETRY_MS * 1000);
	}
}

/* Until our own chunk i is registered. */
static int lkey_wait(struct rmig_link *l, uint32_t i, struct deadline *d)
{
	struct rdma_link *r = rdma(l);
	int st;

	while (!(st = rmig_rdma_reg_wait(&r->reg, i, SLICE_MS, l->err, sizeof(l->err)))) {
		if (stopped(l, RMIG_LINK_STOP_DATA))
			return -ECANCELED;
		if (!deadline_slice(d)) {
			rmig_link_err(l, "guest memory not registered after %d ms", d->timeout_ms);
			return -ETIMEDOUT;
		}
	}
	return st < 0 ? st : 0;
}

static int write_check(struct rmig_link *l, unsigned chan, struct rdma_conn *c, uint32_t area,
		       int n, const void *local, const void *remote_off)
{
	struct rdma_link *r = rdma(l);

	if (!r->imported) {
		rmig_link_err(l, "no peer memory imported");
		return -EINVAL;
	}
	if (area >= r->nareas) {
		rmig_link_err(l, "memory area %u of %zu", area, r->nareas);
		return -EINVAL;
	}
	if (c->dev != r->mem_dev) {
		rmig_link_err(l, "data channel %u is on RDMA device %s, guest memory on %s", chan,
			      dev_name(c->dev->verbs), dev_name(r->mem_dev->verbs));
		return -EXDEV;
	}
	if (n < 0 || (n > 0 && (!local || !remote_off))) {
		rmig_link_err(l, "bad write list (%d entries)", n);
		return -EINVAL;
	}
	return 0;
}

/* Every entry inside its areas, before anything is posted. */
static int write_ranges(struct rmig_link *l, uint32_t area, const uint64_t *remote_off,
			const struct iovec *local, int n)
{
	struct rdma_link *r = rdma(l);
	const struct rdma_area *a = &r->areas[area];
	size_t hint = area;
	uint64_t off;

	for (int i = 0; i < n; i++) {
		if (!local[i].iov_len)
			continue;
		if (remote_off[i] > a->len || local[i].iov_len > a->len - remote_off[i]) {
			rmig_link_err(l,
				      "write of %zu bytes at offset %" PRIu64
				      " overruns memory area %u (%" PRIu64 " bytes)",
				      local[i].iov_len, remote_off[i], area, a->len);
			return -ERANGE;
		}
		if (local_area(r, &local[i], &hint, &off)) {
			rmig_link_err(l, "write source %p (%zu bytes) is not in registered memory",
				      local[i].iov_base, local[i].iov_len);
			return -EFAULT;
		}
	}
	return 0;
}

/* One write's WRs, cut where a local or a remote chunk ends. */
struct write_batch {
	struct ibv_send_wr wr[MAX_CHAIN];
	struct ibv_sge sge[MAX_CHAIN];
	int k;
	uint32_t last; /* remote chunk of the last WR, for the prefetch */
	int own;       /* the error is a registration's, its message in l->err */
};

/* Make room in b for one more WR: post what it holds when full or when
 * the SQ has no room for it. */
static int batch_room(struct rmig_link *l, struct rdma_conn *c, struct write_batch *b,
		      struct deadline *d)
{
	int rc = 0;

	if (b->k < MAX_CHAIN && c->sq_seq - c->sq_done + (uint64_t)b->k + 1 <= c->sq_depth)
		return 0;
	if (b->k)
		rc = post_chain(l, c, b->wr, b->k);
	b->k = 0;
	return rc ? rc : sq_room(l, c, 1, d);
}

/* Both keys of a piece known (posting what waits first: the sender must
 * not sit on WRs while it waits). */
static int piece_keys(struct rmig_link *l, struct rdma_conn *c, unsigned chan,
		      struct write_batch *b, uint32_t lc, uint32_t rc_, struct deadline *d)
{
	struct rdma_link *r = rdma(l);
	int rc = 0;

	if (atomic_load(&r->rkeys[rc_]) & KEY_KNOWN && atomic_load(&r->reg.chunk[lc].state) > 0)
		return 0;
	if (b->k)
		rc = post_chain(l, c, b->wr, b->k);
	b->k = 0;
	if (!rc)
		rc = lkey_wait(l, lc, d);
	if (!rc)
		rc = key_wait(l, c, chan, rc_, d);
	/* A wait's own failure (not the connection's) has its message. */
	b->own = rc && rc != -ECANCELED && !atomic_load(&c->failed);
	return rc;
}

static int write_one(struct rmig_link *l, struct rdma_conn *c, unsigned chan, uint32_t area,
		     uint64_t roff, const struct iovec *v, struct write_batch *b,
		     struct deadline *d)
{
	struct rdma_link *r = rdma(l);
	uint64_t chunk = 1ull << r->reg.shift, mask = chunk - 1, loff, done = 0;
	size_t hint = area;
	int rc;

	local_area(r, v, &hint, &loff);
	while (done < v->iov_len) {
		uint64_t lo = loff + done, ro = roff + done, piece = v->iov_len - done;
		uint32_t lc = r->reg.first[hint] + (uint32_t)(lo >> r->reg.shift);
		uint32_t rch = r->reg.first[area] + (uint32_t)(ro >> r->reg.shift);

		piece = piece < c->max_msg ? piece : c->max_msg;
		piece = piece < chunk - (lo & mask) ? piece : chunk - (lo & mask);
		piece = piece < chunk - (ro & mask) ? piece : chunk - (ro & mask);
		rc = piece_keys(l, c, chan, b, lc, rch, d);
		if (!rc)
			rc = batch_room(l, c, b, d);
		if (rc)
			return rc;
		b->sge[b->k] = (struct ibv_sge){ (uintptr_t)v->iov_base + done, (uint32_t)piece,
						 rmig_rdma_reg_lkey(&r->reg, lc) };
		b->wr[b->k] = (struct ibv_send_wr){ .sg_list = &b->sge[b->k],
						    .num_sge = 1,
						    .opcode = IBV_WR_RDMA_WRITE };
		b->wr[b->k].wr.rdma.remote_addr = r->areas[area].raddr + ro;
		b->wr[b->k].wr.rdma.rkey = (uint32_t)atomic_load(&r->rkeys[rch]);
		b->k++;
		b->last = rch;
		done += piece;
	}
	return 0;
}

/* After posting: learn the next chunk's key while the writes go, so that
 * the sender does not stop at the chunk's edge. */
static int keys_ahead(struct rmig_link *l, struct rdma_conn *c, unsigned chan, uint32_t last,
		      struct deadline *d)
{
	struct rdma_link *r = rdma(l);

	keys_poll(l, c, chan);
	if (last + 1 >= r->peer.nchunks || atomic_load(&r->rkeys[last + 1]) ||
	    r->fetch[chan].pending || c->sq_seq - c->sq_done + 1 > c->sq_depth)
		return 0;
	return keys_fetch(l, c, chan, d);
}

static int rdma_link_chan_write(struct rmig_link *l, unsigned chan, uint32_t area,
				const uint64_t *remote_off, const struct iovec *local, int n,
				int timeout_ms)
{
	struct rdma_conn *c = chan_conn(l, chan);
	struct write_batch b = { .k = 0 };
	struct deadline d;
	int rc;

	if (!c)
		return -EINVAL;
	deadline_init(&d, timeout_ms);
	if (stopped(l, RMIG_LINK_STOP_DATA))
		return io_error(l, c, -ECANCELED, "data write", &d);
	rc = write_check(l, chan, c, area, n, local, remote_off);
	if (!rc)
		rc = write_ranges(l, area, remote_off, local, n);
	if (rc)
		return rc;
	for (int i = 0; i < n && !rc; i++)
		if (local[i].iov_len)
			rc = write_one(l, c, chan, area, remote_off[i], &local[i], &b, &d);
	if (!rc && b.k)
		rc = post_chain(l, c, b.wr, b.k);
	if (!rc && n)
		rc = keys_ahead(l, c, chan, b.last, &d);
	if (rc && b.own)
		return rc;
	return rc ? io_error(l, c, rc, "data write", &d) : 0;
}

static int rdma_link_chan_flush(struct rmig_link *l, unsigned chan, int timeout_ms)
{
	struct rdma_conn *c = chan_conn(l, chan);
	struct deadline d;
	int rc;

	if (!c)
		return -EINVAL;
	deadline_init(&d, timeout_ms);
	/* The last WR posted is always signaled: its completion means every
	 * write before it is in the peer's memory. */
	for (;;) {
		if (stopped(l, RMIG_LINK_STOP_DATA))
			return io_error(l, c, -ECANCELED, "data flush", &d);
		rc = reap_send(l, c);
		if (rc > 0)
			deadline_restart(&d);
		if (atomic_load(&c->failed))
			return io_error(l, c, atomic_load(&c->failed), "data flush", &d);
		if (c->sq_done >= c->sq_seq) {
			if (rdma(l)->fetch[chan].pending)
				keys_take(rdma(l), &rdma(l)->fetch[chan]);
			return 0;
		}
		rc = cq_wait(l, c, &c->s, RMIG_LINK_STOP_DATA, &d);
		if (rc)
			return io_error(l, c, rc, "data flush", &d);
	}
}

/* --- rmig info ------------------------------------------------------------------ */

__attribute__((format(printf, 4, 5))) static void appendf(char *buf, size_t len, size_t *used,
							  const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*used + 1 >= len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *used, len - *used, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used += (size_t)n < len - *used ? (size_t)n : len - *used - 1;
}

static int sysfs_int(const char *fmt, const char *dev, int dflt)
{
	char path[256];
	FILE *f;
	int v;

	snprintf(path, sizeof(path), fmt, dev);
	f = fopen(path, "re");
	if (!f)
		return dflt;
	if (fscanf(f, "%d", &v) != 1)
		v = dflt;
	fclose(f);
	return v;
}

static const char *transport_name(enum ibv_transport_type t)
{
	switch (t) {
	case IBV_TRANSPORT_IB: return "InfiniBand transport";
	case IBV_TRANSPORT_IWARP: return "iWARP";
	case IBV_TRANSPORT_USNIC: return "usNIC";
	case IBV_TRANSPORT_USNIC_UDP: return "usNIC UDP";
	case IBV_TRANSPORT_UNSPECIFIED: return "unspecified transport";
	default: return "unknown transport";
	}
}

static void port_speed(const struct ibv_port_attr *pa, char *out, size_t len)
{
	static const struct {
		unsigned code;
		const char *name;
		double gbps;
	} speeds[] = {
		{ 1, "SDR", 2.5 }, { 2, "DDR", 5 },   { 4, "QDR", 10 },	 { 8, "FDR10", 10 },
		{ 16, "FDR", 14 }, { 32, "EDR", 25 }, { 64, "HDR", 50 }, { 128, "NDR", 100 }
	};
	unsigned lanes = pa->active_width == 1	  ? 1
			 : pa->active_width == 2  ? 4
			 : pa->active_width == 4  ? 8
			 : pa->active_width == 8  ? 12
			 : pa->active_width == 16 ? 2
						  : 0;

	snprintf(out, len, "speed unknown");
	for (size_t i = 0; lanes && i < sizeof(speeds) / sizeof(speeds[0]); i++)
		if (speeds[i].code == pa->active_speed)
			snprintf(out, len, "%ux %s (%g Gb/s)", lanes, speeds[i].name,
				 lanes * speeds[i].gbps);
}

static const char *gid_type_name(uint32_t t)
{
	return t == IBV_GID_TYPE_ROCE_V2 ? "RoCE v2" : t == IBV_GID_TYPE_ROCE_V1 ? "RoCE v1" : "IB";
}

static void describe_device(struct ibv_device *dev, char *buf, size_t len, size_t *used)
{
	const char *name = ibv_get_device_name(dev);
	uint64_t guid = be64toh(ibv_get_device_guid(dev));
	struct ibv_context *ctx = ibv_open_device(dev);
	struct ibv_gid_entry *gids = NULL;
	struct ibv_device_attr da;
	ssize_t ngid = 0;

	appendf(buf, len, used, "  %s: node GUID %04x:%04x:%04x:%04x, %s, NUMA node %d\n", name,
		(unsigned)(guid >> 48), (unsigned)(guid >> 32) & 0xffff,
		(unsigned)(guid >> 16) & 0xffff, (unsigned)guid & 0xffff,
		transport_name(dev->transport_type),
		sysfs_int("/sys/class/infiniband/%s/device/numa_node", name, -1));
	if (!ctx) {
		appendf(buf, len, used, "    cannot open: %s\n", strerror(errno));
		return;
	}
	if (ibv_query_device(ctx, &da)) {
		appendf(buf, len, used, "    cannot query\n");
		goto out;
	}
	ngid = query_gids(ctx, da.phys_port_cnt, &gids);
	for (uint8_t p = 1; p <= da.phys_port_cnt; p++) {
		struct ibv_port_attr pa;
		char speed[64];

		if (ibv_query_port(ctx, p, &pa)) {
			appendf(buf, len, used, "    port %u: cannot query\n", p);
			continue;
		}
		port_speed(&pa, speed, sizeof(speed));
		appendf(buf, len, used, "    port %u: %s, MTU %d, link layer %s, %s\n", p,
			ibv_port_state_str(pa.state), 128 << pa.active_mtu,
			pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand",
			speed);
		for (ssize_t i = 0; i < ngid; i++) {
			char text[INET6_ADDRSTRLEN], ifname[IF_NAMESIZE] = "-";

			if (gids[i].port_num != p)
				continue;
			inet_ntop(AF_INET6, gids[i].gid.raw, text, sizeof(text));
			if (gids[i].ndev_ifindex && !if_indextoname(gids[i].ndev_ifindex, ifname))
				snprintf(ifname, sizeof(ifname), "ifindex %u",
					 gids[i].ndev_ifindex);
			appendf(buf, len, used, "      GID %u: %s, %s, netdev %s\n",
				gids[i].gid_index, text, gid_type_name(gids[i].gid_type), ifname);
		}
	}
out:
	free(gids);
	ibv_close_device(ctx);
}

static void rdma_link_describe(char *buf, size_t len)
{
	struct ibv_device **list;
	size_t used = 0;
	int n = 0;

	if (!len)
		return;
	buf[0] = 0;
	list = ibv_get_device_list(&n);
	if (!list || n <= 0)
		appendf(buf, len, &used, "  no RDMA devices\n");
	for (int i = 0; list && i < n; i++)
		describe_device(list[i], buf, len, &used);
	if (list)
		ibv_free_device_list(list);
}

/* --- life cycle -------------------------------------------------------------------- */

static int rdma_link_create(struct rmig_link *l)
{
	struct rdma_link *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->devs = table_new();
	if (!r->devs) {
		free(r);
		return -ENOMEM;
	}
	r->gid_index = -1;
	l->priv = r;
	return 0;
}

/* One "DEV" or "DEV@NODE" of the rails option. */
static int rail_item_ok(const char *p, size_t len)
{
	const char *at = memchr(p, '@', len);
	size_t name = at ? (size_t)(at - p) : len;
	char *end;
	long node;

	if (!name || name >= RMIG_LINK_RAIL_NAME || memchr(p, '/', name))
		return 0;
	if (!at)
		return 1;
	errno = 0;
	node = strtol(at + 1, &end, 10);
	return !errno && end == p + len && end > at + 1 && node >= 0 && node <= 1023;
}

/* "auto", or "DEV[@NODE],..." (at most MAX_RAILS); "" or "none": none. */
static int set_rails(struct rmig_link *l, const char *value)
{
	struct rdma_link *r = rdma(l);
	const char *p = value;
	unsigned n = 0;

	if (!strcmp(value, "none"))
		value = "";
	while (strcmp(value, "auto") && *p) {
		size_t len = strcspn(p, ",");

		if (!rail_item_ok(p, len) || ++n > MAX_RAILS || strlen(value) >= RAILS_SPEC_LEN) {
			rmig_link_err(l,
				      "rdma: rails '%s' is not auto nor DEV[@NODE],... (at most "
				      "%d devices, nodes 0..1023)",
				      value, MAX_RAILS);
			return -EINVAL;
		}
		p += len + (p[len] == ',');
	}
	snprintf(r->rails_spec, sizeof(r->rails_spec), "%s", value);
	r->rails_ready = 0;
	r->nrails = 0;
	return 0;
}

/* "device": an RDMA device name as rdma-core spells it (rxe0, mlx5_1);
 * "gid_index": a RoCE GID table index, 0..255 (-1: automatic). Checked
 * against the devices when they are used. */
static int rdma_link_set_option(struct rmig_link *l, const char *key, const char *value)
{
	struct rdma_link *r = rdma(l);

	if (!strcmp(key, "device")) {
		if (strlen(value) >= sizeof(r->device) || strchr(value, '/')) {
			rmig_link_err(l,
				      "rdma: device '%s' is not an RDMA device name (at most %zu "
				      "characters, no '/')",
				      value, sizeof(r->device) - 1);
			return -EINVAL;
		}
		snprintf(r->device, sizeof(r->device), "%s", value);
		return 0;
	}
	if (!strcmp(key, "gid_index")) {
		char *end;
		long v;

		errno = 0;
		v = strtol(value, &end, 10);
		if (errno || end == value || *end || v < -1 || v > 255) {
			rmig_link_err(l,
				      "rdma: gid_index '%s' is not a number in 0..255 (-1: "
				      "automatic)",
				      value);
			return -EINVAL;
		}
		r->gid_index = (int)v;
		return 0;
	}
	if (!strcmp(key, "rails"))
		return set_rails(l, value);
	rmig_link_err(l, "the rdma link has no option '%s' (it has device, gid_index and rails)",
		      key);
	return -ENOENT;
}

static void rdma_link_destroy(struct rmig_link *l)
{
	struct rdma_link *r = rdma(l);

	if (!r)
		return;
	close_session(l);
	drop_listeners(r);
	table_put(r->devs); /* the PDs go with the last link that uses them */
	free(r);
	l->priv = NULL;
}

static void rdma_link_interrupt(struct rmig_link *l, unsigned flags)
{
	/* Flags only (async-signal-safe): every wait looks at them at least
	 * every SLICE_MS. */
	atomic_fetch_or(&l->interrupted, flags);
}

const struct rmig_link_ops rmig_rdma_link_ops = {
	.size = sizeof(struct rmig_link_ops),
	.name = "rdma",
	.auto_rank = 1, /* auto tries it first */
	.set_option = rdma_link_set_option,
	.create = rdma_link_create,
	.destroy = rdma_link_destroy,
	.listen = rdma_link_listen,
	.accept = rdma_link_accept,
	.adopt_channel = rdma_link_adopt_channel,
	.connect_ctrl = rdma_link_connect_ctrl,
	.connect_channel = rdma_link_connect_channel,
	.ctrl_send = rdma_link_ctrl_send,
	.ctrl_recv = rdma_link_ctrl_recv,
	.chan_send = rdma_link_chan_send,
	.chan_recv = rdma_link_chan_recv,
	.mem_expose = rdma_link_mem_expose,
	.mem_import = rdma_link_mem_import,
	.mem_release = rdma_link_mem_release,
	.chan_write = rdma_link_chan_write,
	.chan_flush = rdma_link_chan_flush,
	.close_session = rdma_link_close_session,
	.describe = rdma_link_describe,
	.interrupt = rdma_link_interrupt,
	.rails_local = rdma_link_rails_local,
	.rails_peer = rdma_link_rails_peer,
	.rail_failover = rdma_link_rail_failover,
};
