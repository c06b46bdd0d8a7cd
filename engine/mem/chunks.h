/* chunks.h - per-chunk digests of guest memory, kept as pages move, so that
 * verification at the pause costs the last round, not the guest
 * (config.verify=1).
 *
 * Each page has a leaf: XXH3-64 of its bytes, stored xor the digest of a
 * zero page, so that a zero leaf means a zero page and memory never
 * populated needs neither a read nor a write (the leaf array is calloc'd:
 * its untouched pages are not even backed). A chunk (RMIG_CHUNK_BYTES of a
 * region) has the XXH3-64 of its leaves; a region's root is the XXH3-64 of
 * its chunk digests, seeded with its length. The source records the bytes
 * it sends, the destination the bytes it wrote; COMPLETE compares roots.
 *
 * Why a leaf per page, not a digest of the chunk's bytes: a page is sent
 * (and received) alone, and a chunk's digest would need its other pages'
 * bytes, read again from memory at that moment - on the source while the
 * guest writes them, so the digest would no longer be "what was sent".
 * With leaves, each page is hashed once, from the bytes sent or written,
 * when they move; a chunk's digest is then 4 KiB of leaves to hash, done
 * for the chunks touched since the last refresh. 8 bytes a page (1/512 of
 * the guest), only where the guest has data.
 *
 * Leaves of distinct pages may be set from several threads at once; a
 * refresh or the roots must not run concurrently with them (the round
 * barrier orders them).
 */
#ifndef RMIG_CHUNKS_H
#define RMIG_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#include "rmig_backend.h"

#define RMIG_CHUNK_BYTES (2u << 20)
#define RMIG_AUDIT_NAMED 8 /* mismatching chunks an audit names */

struct rmig_chunks;

/* For regions r[0..n) (they must outlive it). 0 or -ENOMEM. */
int rmig_chunks_create(const struct rmig_region *r, size_t n, struct rmig_chunks **out);
void rmig_chunks_destroy(struct rmig_chunks *c);

/* Region ri's pages [first, first + count) now hold the bytes at data
 * (contiguous); they are hashed now. */
void rmig_chunks_set_pages(struct rmig_chunks *c, size_t ri, uint64_t first, uint64_t count,
			   const void *data);
/* ... now hold zeros: no read. */
void rmig_chunks_set_zero(struct rmig_chunks *c, size_t ri, uint64_t first, uint64_t count);

/* Hash every page of every region from memory, with up to `threads`
 * threads (0: one per CPU). Pages of RMIG_REGION_UNTOUCHED_ZERO regions the
 * kernel never populated are zero leaves, unread. For a destination whose
 * pages arrived unseen (RDMA WRITE). */
int rmig_chunks_from_memory(struct rmig_chunks *c, unsigned threads);

/* Recompute the digests of the chunks touched since the last refresh;
 * how many. */
uint64_t rmig_chunks_refresh(struct rmig_chunks *c);
/* Refresh, then out[i] = region i's root. */
void rmig_chunks_roots(struct rmig_chunks *c, uint64_t *out);

/* How many chunks were touched since the last refresh. */
uint64_t rmig_chunks_stale(struct rmig_chunks *c);

struct rmig_chunk_name {
	uint32_t region; /* region id */
	uint64_t chunk;	 /* chunk index in the region: offset / RMIG_CHUNK_BYTES */
};

struct rmig_audit_report {
	uint64_t chunks;     /* chunks compared */
	uint64_t mismatched; /* chunks whose memory differs from their leaves */
	uint64_t pages_read; /* pages read (never-populated ones are not) */
	struct rmig_chunk_name first[RMIG_AUDIT_NAMED]; /* the first mismatched */
	unsigned named;
};

/* Compare memory as it is now with the leaves, chunk by chunk, on up to
 * `threads` threads (0: one per CPU); never-populated pages count as zero
 * unread. 0 (a mismatch is in *rep, not an error) or -ENOMEM. */
int rmig_chunks_audit(struct rmig_chunks *c, unsigned threads, struct rmig_audit_report *rep);

#endif
