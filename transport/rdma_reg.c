/* rdma_reg.c - guest memory registered in chunks ahead of the sender, the
 * key table's entries and the memory description (see rdma_reg.h). */
#include "rdma_reg.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#define KEY_FAIL 0x4641494cu /* "FAIL" */
#define REG_NICE 10

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* --- chunks ----------------------------------------------------------------- */

static uint64_t chunks_of(uint64_t len, unsigned shift)
{
	return (len >> shift) + ((len & ((1ull << shift) - 1)) != 0);
}

int rmig_rdma_chunk_count(const uint64_t *len, size_t n, unsigned shift, uint32_t *out)
{
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++) {
		total += chunks_of(len[i], shift);
		if (total > RMIG_RDMA_MAX_CHUNKS)
			return -E2BIG;
	}
	*out = (uint32_t)total;
	return 0;
}

unsigned rmig_rdma_chunk_shift(const uint64_t *len, size_t n)
{
	uint32_t count;
	unsigned shift = RMIG_RDMA_MIN_SHIFT;

	/* Each area may end in a partial chunk: leave room for those. */
	while (shift < RMIG_RDMA_MAX_SHIFT && (rmig_rdma_chunk_count(len, n, shift, &count) ||
					       count > RMIG_RDMA_MAX_CHUNKS - RMIG_RDMA_MAX_AREAS))
		shift++;
	return shift;
}

/* Chunk i's area and its place in it. */
static void chunk_span(const struct rmig_rdma_reg *g, uint32_t i, uint64_t *addr, uint64_t *len)
{
	size_t a = 0;

	while (a + 1 < g->nareas && g->first[a + 1] <= i)
		a++;
	*addr = g->addr[a] + ((uint64_t)(i - g->first[a]) << g->shift);
	*len = g->addr[a] + g->len[a] - *addr;
	if (*len > 1ull << g->shift)
		*len = 1ull << g->shift;
}

/* Chunk 0 of every area, then chunk 1 of every area...: senders start
 * at every area's beginning at once (one per NUMA node). */
static void make_order(struct rmig_rdma_reg *g)
{
	uint32_t k = 0;

	for (uint64_t j = 0; k < g->nchunks; j++)
		for (size_t a = 0; a < g->nareas; a++)
			if (j < chunks_of(g->len[a], g->shift))
				g->order[k++] = g->first[a] + (uint32_t)j;
}

static void publish(struct rmig_rdma_reg *g, uint32_t i, uint64_t entry)
{
	if (g->table)
		__atomic_store_n(&g->table[i], htole64(entry), __ATOMIC_RELEASE);
}

/* Register chunk i (any thread; fail: a test's failure instead); its
 * state says how it went. */
static int register_chunk(struct rmig_rdma_reg *g, uint32_t i, int fail)
{
	uint64_t addr, len;
	struct ibv_mr *mr = NULL;
	int rc;

	chunk_span(g, i, &addr, &len);
	errno = ENOMEM;
	if (!fail)
		mr = ibv_reg_mr(g->pd, (void *)(uintptr_t)addr, len, g->access); /* NULL, errno */
	if (!mr && !fail && g->fallback_access != g->access)
		mr = ibv_reg_mr(g->pd, (void *)(uintptr_t)addr, len, g->fallback_access);
	pthread_mutex_lock(&g->lock);
	if (mr) {
		g->chunk[i].mr = mr;
		if (g->pinned)
			atomic_fetch_add(g->pinned, len);
		publish(g, i, rmig_rdma_key_entry(mr->rkey));
		rc = 1;
	} else {
		rc = errno > 0 && errno < 4096 ? -errno : -ENOMEM;
		if (!g->why[0])
			snprintf(g->why, sizeof(g->why),
				 "cannot register guest memory (%.1f MiB at 0x%" PRIx64 "): %s",
				 (double)len / (1 << 20), addr, strerror(-rc));
		publish(g, i, rmig_rdma_key_failed(-rc));
	}
	atomic_store(&g->chunk[i].state, rc);
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return rc;
}

/* After a failure the thread stops: every chunk left fails as that one
 * did, so that no sender waits for a key that will not come. */
static void fail_rest(struct rmig_rdma_reg *g, uint32_t from, int rc)
{
	pthread_mutex_lock(&g->lock);
	for (uint32_t k = from; k < g->nchunks; k++) {
		publish(g, g->order[k], rmig_rdma_key_failed(-rc));
		atomic_store(&g->chunk[g->order[k]].state, rc);
	}
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void *reg_main(void *arg)
{
	struct rmig_rdma_reg *g = arg;
	int rc;

	/* Registering competes for the CPU with the data path (and, on soft
	 * RoCE, with the device itself): yield to them. A sender that catches
	 * up waits, which frees the CPU for this thread. Best effort. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), REG_NICE);

	for (uint32_t k = 1; k < g->nchunks && !atomic_load(&g->stop); k++) {
		if (g->delay_ms) {
			struct timespec ts = { g->delay_ms / 1000,
					       (long)(g->delay_ms % 1000) * 1000000 };

			nanosleep(&ts, NULL);
		}
		rc = register_chunk(g, g->order[k], k == g->fail_at);
		if (rc < 0) {
			fail_rest(g, k + 1, rc);
			break;
		}
	}
	return NULL;
}

static int reg_alloc(struct rmig_rdma_reg *g, size_t n)
{
	g->addr = calloc(n ? n : 1, sizeof(*g->addr));
	g->len = calloc(n ? n : 1, sizeof(*g->len));
	g->first = calloc(n ? n : 1, sizeof(*g->first));
	g->order = calloc(g->nchunks ? g->nchunks : 1, sizeof(*g->order));
	g->chunk = calloc(g->nchunks ? g->nchunks : 1, sizeof(*g->chunk));
	return g->addr && g->len && g->first && g->order && g->chunk ? 0 : -ENOMEM;
}

int rmig_rdma_reg_start(struct rmig_rdma_reg *g, struct ibv_pd *pd, const struct rmig_link_mem *mem,
			size_t n, unsigned shift, int access, int fallback_access, uint64_t *table,
			atomic_uint_fast64_t *pinned, char *err, size_t errlen)
{
	const char *delay = getenv("RMIG_TEST_REG_DELAY_MS"),
		   *fail = getenv("RMIG_TEST_REG_FAIL_AT");
	uint64_t lens[RMIG_RDMA_MAX_AREAS];
	int rc;

	pthread_condattr_t ca;

	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->lock, NULL);
	/* Waits are bounded in elapsed time: a clock the operator (or NTP)
	 * may step would stretch or cut them. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &ca);
	pthread_condattr_destroy(&ca);
	g->pd = pd;
	g->access = access;
	g->fallback_access = fallback_access;
	g->shift = shift;
	g->nareas = n;
	g->table = table;
	g->pinned = pinned;
	g->delay_ms = delay ? (unsigned)strtoul(delay, NULL, 10) % 60000 : 0;
	g->fail_at = fail ? (uint32_t)strtoul(fail, NULL, 10) : 0;
	for (size_t i = 0; i < n && i < RMIG_RDMA_MAX_AREAS; i++)
		lens[i] = mem[i].len;
	if (n > RMIG_RDMA_MAX_AREAS || rmig_rdma_chunk_count(lens, n, shift, &g->nchunks)) {
		snprintf(err, errlen, "guest memory of %zu areas needs more than %u chunks", n,
			 RMIG_RDMA_MAX_CHUNKS);
		return -E2BIG;
	}
	if (reg_alloc(g, n)) {
		snprintf(err, errlen, "out of memory for the registration of %u chunks",
			 g->nchunks);
		rmig_rdma_reg_stop(g);
		return -ENOMEM;
	}
	for (size_t i = 0, k = 0; i < n; k += chunks_of(lens[i], shift), i++) {
		g->addr[i] = (uintptr_t)mem[i].addr;
		g->len[i] = lens[i];
		g->first[i] = (uint32_t)k;
	}
	make_order(g);
	/* The first now: a device that refuses guest memory says so before
	 * anything depends on it (pin auto falls back to staging). */
	rc = g->nchunks ? register_chunk(g, g->order[0], 0) : 1;
	if (rc > 0 && g->nchunks > 1) {
		rc = pthread_create(&g->tid, NULL, reg_main, g) ? -EAGAIN : 1;
		g->running = rc > 0;
		if (rc < 0)
			snprintf(g->why, sizeof(g->why), "cannot start the registration thread");
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s", g->why);
		rmig_rdma_reg_stop(g);
		return rc;
	}
	return 0;
}

int rmig_rdma_reg_wait(struct rmig_rdma_reg *g, uint32_t i, int ms, char *err, size_t errlen)
{
	struct timespec ts;
	int st = atomic_load(&g->chunk[i].state);

	if (!st && ms > 0) {
		clock_gettime(CLOCK_MONOTONIC, &ts); /* the condition's clock */
		ts.tv_nsec += (long)(ms % 1000) * 1000000;
		ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_mutex_lock(&g->lock);
		while (!(st = atomic_load(&g->chunk[i].state)) &&
		       !pthread_cond_timedwait(&g->cond, &g->lock, &ts))
			;
		pthread_mutex_unlock(&g->lock);
	}
	if (st < 0) {
		pthread_mutex_lock(&g->lock);
		snprintf(err, errlen, "%s", g->why);
		pthread_mutex_unlock(&g->lock);
	}
	return st;
}

uint32_t rmig_rdma_reg_lkey(const struct rmig_rdma_reg *g, uint32_t i)
{
	return g->chunk[i].mr->lkey;
}

void rmig_rdma_reg_stop(struct rmig_rdma_reg *g)
{
	if (!g->pd)
		return;
	atomic_store(&g->stop, 1);
	if (g->running)
		pthread_join(g->tid, NULL);
	for (uint32_t i = 0; g->chunk && i < g->nchunks; i++) {
		uint64_t addr, len;

		if (!g->chunk[i].mr)
			continue;
		chunk_span(g, i, &addr, &len);
		ibv_dereg_mr(g->chunk[i].mr);
		if (g->pinned)
			atomic_fetch_sub(g->pinned, len);
	}
	free(g->addr);
	free(g->len);
	free(g->first);
	free(g->order);
	free(g->chunk);
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	memset(g, 0, sizeof(*g));
}

/* --- key table entries -------------------------------------------------------- */

uint64_t rmig_rdma_key_entry(uint32_t rkey)
{
	return (uint64_t)~rkey << 32 | rkey;
}

uint64_t rmig_rdma_key_failed(int err)
{
	return (uint64_t)KEY_FAIL << 32 | (uint32_t)(err > 0 && err < 4096 ? err : EIO);
}

int rmig_rdma_key_decode(uint64_t entry, uint32_t *rkey)
{
	uint32_t lo = (uint32_t)entry, hi = (uint32_t)(entry >> 32);

	if (hi == (uint32_t)~lo) {
		*rkey = lo;
		return 1;
	}
	if (hi == KEY_FAIL && lo > 0 && lo < 4096)
		return -(int)lo;
	return 0;
}

/* --- memory description --------------------------------------------------------- */

size_t rmig_rdma_blob_len(size_t n)
{
	return RMIG_RDMA_BLOB_HDR_LEN + n * RMIG_RDMA_BLOB_ENTRY_LEN;
}

void rmig_rdma_blob_encode(uint8_t *b, const struct rmig_rdma_reg *g, uint64_t table_addr,
			   uint32_t table_rkey)
{
	memset(b, 0, rmig_rdma_blob_len(g->nareas));
	put_le32(b, RMIG_RDMA_BLOB_MAGIC);
	put_le16(b + 4, RMIG_RDMA_BLOB_VERSION);
	put_le16(b + 6, RMIG_RDMA_BLOB_ENTRY_LEN);
	put_le32(b + 8, (uint32_t)g->nareas);
	put_le64(b + 12, table_addr);
	put_le32(b + 20, table_rkey);
	b[24] = (uint8_t)g->shift;
	put_le32(b + 28, g->nchunks);
	for (size_t i = 0; i < g->nareas; i++) {
		uint8_t *e = b + RMIG_RDMA_BLOB_HDR_LEN + i * RMIG_RDMA_BLOB_ENTRY_LEN;

		put_le64(e, g->addr[i]);
		put_le64(e + 8, g->len[i]);
	}
}

static int blob_header(const uint8_t *b, size_t blen, size_t n, char *err, size_t errlen)
{
	if (!b || blen < 12 || get_le32(b) != RMIG_RDMA_BLOB_MAGIC) {
		snprintf(err, errlen, "peer's memory description is not one (%zu bytes)", blen);
		return -EBADMSG;
	}
	if (get_le16(b + 4) != RMIG_RDMA_BLOB_VERSION ||
	    get_le16(b + 6) != RMIG_RDMA_BLOB_ENTRY_LEN) {
		snprintf(err, errlen, "peer's memory description has version %u, we read %u",
			 get_le16(b + 4), RMIG_RDMA_BLOB_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (get_le32(b + 8) != n || n > RMIG_RDMA_MAX_AREAS) {
		snprintf(err, errlen, "peer describes %" PRIu32 " memory areas, we have %zu",
			 get_le32(b + 8), n);
		return -EBADMSG;
	}
	if (blen != rmig_rdma_blob_len(n)) {
		snprintf(err, errlen, "peer's memory description is %zu bytes, %zu areas take %zu",
			 blen, n, rmig_rdma_blob_len(n));
		return -EBADMSG;
	}
	return 0;
}

static int blob_chunks(const uint8_t *b, const uint64_t *len, size_t n, struct rmig_rdma_blob *out,
		       char *err, size_t errlen)
{
	uint32_t want;

	out->table_addr = get_le64(b + 12);
	out->table_rkey = get_le32(b + 20);
	out->shift = b[24];
	out->nchunks = get_le32(b + 28);
	if (b[25] || b[26] || b[27] || get_le32(b + 32)) {
		snprintf(err, errlen, "peer's memory description: reserved bytes set");
		return -EBADMSG;
	}
	if (out->shift < RMIG_RDMA_MIN_SHIFT || out->shift > RMIG_RDMA_MAX_SHIFT) {
		snprintf(err, errlen, "peer's memory description: chunks of 2^%u bytes (%d..%d)",
			 out->shift, RMIG_RDMA_MIN_SHIFT, RMIG_RDMA_MAX_SHIFT);
		return -EBADMSG;
	}
	if (rmig_rdma_chunk_count(len, n, out->shift, &want)) {
		snprintf(err, errlen,
			 "peer's memory description: chunks of 2^%u bytes, our areas take more "
			 "than %u",
			 out->shift, RMIG_RDMA_MAX_CHUNKS);
		return -EBADMSG;
	}
	if (want != out->nchunks) {
		snprintf(err, errlen,
			 "peer's memory description: %" PRIu32 " chunks, our areas take %" PRIu32,
			 out->nchunks, want);
		return -EBADMSG;
	}
	if (out->table_addr > UINT64_MAX - (uint64_t)out->nchunks * 8) {
		snprintf(err, errlen, "peer's memory description: the key table overflows");
		return -EBADMSG;
	}
	return 0;
}

int rmig_rdma_blob_parse(const uint8_t *b, size_t blen, const uint64_t *len, size_t n,
			 struct rmig_rdma_blob *out, uint64_t *raddr, char *err, size_t errlen)
{
	int rc = blob_header(b, blen, n, err, errlen);

	if (!rc)
		rc = blob_chunks(b, len, n, out, err, errlen);
	for (size_t i = 0; !rc && i < n; i++) {
		const uint8_t *e = b + RMIG_RDMA_BLOB_HDR_LEN + i * RMIG_RDMA_BLOB_ENTRY_LEN;
		uint64_t addr = get_le64(e), alen = get_le64(e + 8);

		if (alen != len[i]) {
			snprintf(err, errlen,
				 "memory area %zu: the peer's is %" PRIu64 " bytes, ours %" PRIu64,
				 i, alen, len[i]);
			return -EBADMSG;
		}
		if (addr > UINT64_MAX - alen) {
			snprintf(err, errlen, "memory area %zu: the peer's address range overflows",
				 i);
			return -EBADMSG;
		}
		if (get_le32(e + 16)) {
			snprintf(err, errlen, "memory area %zu: reserved bytes set", i);
			return -EBADMSG;
		}
		raddr[i] = addr;
	}
	return rc;
}
