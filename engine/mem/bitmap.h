/* bitmap.h - dirty bitmaps: one bit per page, bit i in word i/64. */
#ifndef RMIG_BITMAP_H
#define RMIG_BITMAP_H

#include <stdint.h>

static inline uint64_t rmig_bitmap_words(uint64_t nbits)
{
	return (nbits + 63) / 64;
}

static inline int rmig_bitmap_test(const uint64_t *bm, uint64_t bit)
{
	return (bm[bit / 64] >> (bit % 64)) & 1;
}

static inline void rmig_bitmap_set(uint64_t *bm, uint64_t bit)
{
	bm[bit / 64] |= 1ull << (bit % 64);
}

/* Bits [first, first + count) as they fall in word w (count > 0, and w
 * one of the words they touch). */
static inline uint64_t rmig_bitmap_word_mask(uint64_t first, uint64_t count, uint64_t w)
{
	uint64_t lo = w * 64 > first ? 0 : first - w * 64;
	uint64_t end = first + count - w * 64, hi = end > 64 ? 64 : end;

	return hi - lo == 64 ? ~0ull : ((1ull << (hi - lo)) - 1) << lo;
}

/* Find the first run of set bits at or after `from`, at most max_len long.
 * Returns 1 and fills *start and *len, or 0 when no bit is set. Scans by
 * 64-bit words with count-trailing-zeros, so clean memory costs one load per
 * 64 pages. */
int rmig_dirty_bitmap_next_run(const uint64_t *bm, uint64_t nbits, uint64_t from, uint64_t max_len,
			       uint64_t *start, uint64_t *len);
uint64_t rmig_dirty_bitmap_count(const uint64_t *bm, uint64_t nbits);
void rmig_dirty_bitmap_set_all(uint64_t *bm, uint64_t nbits);
/* Set bits [first, first+count). */
void rmig_dirty_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t count);

#endif
