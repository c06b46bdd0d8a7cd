/* bitmap.c - dirty bitmap scanning. */
#include "bitmap.h"

#include <string.h>

/* Index of the first bit at or after `from` whose value is `want`, or nbits. */
static uint64_t find_bit(const uint64_t *bm, uint64_t nbits, uint64_t from, int want)
{
	uint64_t w = from / 64;
	uint64_t word;

	if (from >= nbits)
		return nbits;
	word = want ? bm[w] : ~bm[w];
	word &= ~0ull << (from % 64);
	for (;;) {
		if (word) {
			uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(word);

			return bit < nbits ? bit : nbits;
		}
		if (++w >= rmig_bitmap_words(nbits))
			return nbits;
		word = want ? bm[w] : ~bm[w];
	}
}

int rmig_dirty_bitmap_next_run(const uint64_t *bm, uint64_t nbits, uint64_t from, uint64_t max_len,
			       uint64_t *start, uint64_t *len)
{
	uint64_t s = find_bit(bm, nbits, from, 1), e;

	if (s >= nbits)
		return 0;
	e = find_bit(bm, nbits, s, 0);
	if (max_len && e - s > max_len)
		e = s + max_len;
	*start = s;
	*len = e - s;
	return 1;
}

uint64_t rmig_dirty_bitmap_count(const uint64_t *bm, uint64_t nbits)
{
	uint64_t n = 0, words = rmig_bitmap_words(nbits);

	for (uint64_t w = 0; w < words; w++) {
		uint64_t v = bm[w];

		if (w == words - 1 && nbits % 64)
			v &= (1ull << (nbits % 64)) - 1;
		n += (uint64_t)__builtin_popcountll(v);
	}
	return n;
}

void rmig_dirty_bitmap_set_all(uint64_t *bm, uint64_t nbits)
{
	uint64_t words = rmig_bitmap_words(nbits);

	memset(bm, 0xff, words * 8);
	if (nbits % 64)
		bm[words - 1] = (1ull << (nbits % 64)) - 1;
}

void rmig_dirty_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t count)
{
	for (uint64_t i = first; i < first + count; i++)
		bm[i / 64] |= 1ull << (i % 64);
}
