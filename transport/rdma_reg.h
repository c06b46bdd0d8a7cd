/* rdma_reg.h - the RDMA link's guest memory registration, in chunks.
 *
 * Registering a whole guest before the first byte moves costs seconds
 * under emulation (pinning every page, and on the destination faulting it
 * in). Instead each side registers its areas in chunks of 2^shift bytes: the
 * first chunk before mem_expose/mem_import return, the rest on a thread of
 * their own, in an order that reaches every area early (chunk 0 of each
 * area, then chunk 1 of each, ...), while the sender already writes.
 *
 * The destination publishes each chunk's rkey in a key table, one 8-byte
 * entry per chunk in its memory, registered for remote read and nothing
 * else; the source reads it (RDMA READ on the data channel that needs a
 * key) before it writes into a chunk whose key it does not know yet. An
 * entry is 0 (not yet), the key (low half) with its complement (high half),
 * or a failure (high half "FAIL", low half an errno): a torn read never
 * looks like a key.
 *
 * Memory description (mem_expose's blob), little-endian:
 *   {magic u32 "RMMK", version u16 = 2, entry size u16 = 20, count u32}
 *   {table address u64, table rkey u32, chunk shift u8, 3 zero bytes,
 *    chunks u32, zero u32}
 *   per area {address u64, length u64, zero u32}
 * Every field is checked by rmig_rdma_blob_parse against what the source
 * knows (its own areas' lengths).
 */
#ifndef RMIG_RDMA_REG_H
#define RMIG_RDMA_REG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "link.h"

#define RMIG_RDMA_BLOB_MAGIC 0x4b4d4d52u /* "RMMK" */
#define RMIG_RDMA_BLOB_VERSION 2
#define RMIG_RDMA_BLOB_HDR_LEN 36
#define RMIG_RDMA_BLOB_ENTRY_LEN 20
#define RMIG_RDMA_MAX_AREAS 1024
/* At most this many chunks (a key table of 64 KiB, read whole). */
#define RMIG_RDMA_MAX_CHUNKS 8192u
/* 8 MiB .. 1 TiB: large enough that a chunk's registration is worth a
 * thread's wake-up, small enough that the first one is quick. */
#define RMIG_RDMA_MIN_SHIFT 23
#define RMIG_RDMA_MAX_SHIFT 40

struct ibv_pd;
struct ibv_mr;

struct rmig_rdma_chunk {
	struct ibv_mr *mr;
	atomic_int state; /* 0 pending, 1 registered, -errno failed */
};

struct rmig_rdma_reg {
	struct ibv_pd *pd;
	int access, fallback_access;
	unsigned shift;
	size_t nareas;
	uint64_t *addr, *len; /* per area */
	uint32_t *first;      /* per area: its first chunk's index */
	uint32_t nchunks;
	uint32_t *order; /* registration order */
	struct rmig_rdma_chunk *chunk;
	/* Destination: where each registered chunk's key is published. */
	uint64_t *table;
	atomic_uint_fast64_t *pinned; /* counted here as registered (NULL: not) */
	unsigned delay_ms;	      /* RMIG_TEST_REG_DELAY_MS: before each chunk */
	uint32_t fail_at;	      /* RMIG_TEST_REG_FAIL_AT: that chunk (in order, >= 1) fails */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t tid;
	int running;
	atomic_int stop;
	char why[200]; /* the first failure, under lock */
};

/* The chunk shift for areas of these lengths: at least MIN_SHIFT, and
 * large enough that all of them fit in MAX_CHUNKS chunks. */
unsigned rmig_rdma_chunk_shift(const uint64_t *len, size_t n);
/* Chunks the areas take with shift: 0, or -E2BIG over MAX_CHUNKS. */
int rmig_rdma_chunk_count(const uint64_t *len, size_t n, unsigned shift, uint32_t *out);

/* Set g up for mem[0..n) (n <= MAX_AREAS, addresses checked by the
 * caller), register the first chunk in order now and the rest on a thread.
 * table (destination) receives each chunk's key entry. 0, or -errno with
 * the reason in err. */
int rmig_rdma_reg_start(struct rmig_rdma_reg *g, struct ibv_pd *pd, const struct rmig_link_mem *mem,
			size_t n, unsigned shift, int access, int fallback_access, uint64_t *table,
			atomic_uint_fast64_t *pinned, char *err, size_t errlen);
/* Wait up to ms for chunk i: 1 registered, 0 not yet, -errno (its
 * registration failed: the reason in err). */
int rmig_rdma_reg_wait(struct rmig_rdma_reg *g, uint32_t i, int ms, char *err, size_t errlen);
uint32_t rmig_rdma_reg_lkey(const struct rmig_rdma_reg *g, uint32_t i);
/* Stop the thread, deregister everything, free. Idempotent. */
void rmig_rdma_reg_stop(struct rmig_rdma_reg *g);

/* Key table entries. decode: 1 a key (*rkey), 0 not yet (or torn),
 * -errno the destination could not register that chunk. */
uint64_t rmig_rdma_key_entry(uint32_t rkey);
uint64_t rmig_rdma_key_failed(int err);
int rmig_rdma_key_decode(uint64_t entry, uint32_t *rkey);

struct rmig_rdma_blob {
	uint64_t table_addr;
	uint32_t table_rkey;
	unsigned shift;
	uint32_t nchunks;
};

size_t rmig_rdma_blob_len(size_t n);
void rmig_rdma_blob_encode(uint8_t *b, const struct rmig_rdma_reg *g, uint64_t table_addr,
			   uint32_t table_rkey);
/* The peer's description, untrusted: checked against our n areas' lengths
 * len[]; their addresses go to raddr[]. 0, or -EBADMSG/-EPROTONOSUPPORT
 * with the reason in err. */
int rmig_rdma_blob_parse(const uint8_t *b, size_t blen, const uint64_t *len, size_t n,
			 struct rmig_rdma_blob *out, uint64_t *raddr, char *err, size_t errlen);

#endif
