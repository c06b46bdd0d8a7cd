/* test_bitmap.c - dirty bitmap scanning against a naive bit-by-bit model.
 *
 * Bitmaps are heap arrays of exactly rmig_bitmap_words(nbits) words, so that
 * AddressSanitizer catches a read or write past the last word. The bits past
 * nbits in the last word are filled with garbage where the API must ignore
 * them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "bitmap.h"

static uint64_t rng_state = 1;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int bit(const uint64_t *bm, uint64_t i)
{
	return (int)((bm[i / 64] >> (i % 64)) & 1);
}

static void set_bit(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

static uint64_t *bm_alloc(uint64_t nbits)
{
	uint64_t words = rmig_bitmap_words(nbits);
	uint64_t *bm = calloc(words ? words : 1, 8);

	assert_non_null(bm);
	return bm;
}

/* Garbage in the bits past nbits of the last word. */
static void dirty_tail(uint64_t *bm, uint64_t nbits)
{
	if (nbits % 64)
		bm[nbits / 64] |= ~0ull << (nbits % 64) & rnd();
}

static int naive_next_run(const uint64_t *bm, uint64_t nbits, uint64_t from, uint64_t max_len,
			  uint64_t *start, uint64_t *len)
{
	uint64_t s = from, e;

	while (s < nbits && !bit(bm, s))
		s++;
	if (s >= nbits)
		return 0;
	e = s;
	while (e < nbits && bit(bm, e) && (max_len == 0 || e - s < max_len))
		e++;
	*start = s;
	*len = e - s;
	return 1;
}

static uint64_t naive_count(const uint64_t *bm, uint64_t nbits)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < nbits; i++)
		n += (uint64_t)bit(bm, i);
	return n;
}

/* Fill with a pattern: 0 clean, 1 all set, 2..: random at density, or runs. */
static void fill_pattern(uint64_t *bm, uint64_t nbits, int pattern)
{
	memset(bm, 0, rmig_bitmap_words(nbits) * 8);
	switch (pattern) {
	case 0: break;
	case 1:
		for (uint64_t i = 0; i < nbits; i++)
			set_bit(bm, i);
		break;
	case 2: /* sparse */
		for (uint64_t i = 0; i < nbits; i++)
			if (rnd() % 100 < 2)
				set_bit(bm, i);
		break;
	case 3: /* half */
		for (uint64_t i = 0; i < nbits; i++)
			if (rnd() & 1)
				set_bit(bm, i);
		break;
	case 4: /* dense */
		for (uint64_t i = 0; i < nbits; i++)
			if (rnd() % 100 < 95)
				set_bit(bm, i);
		break;
	case 5: /* long runs and gaps, crossing words */
	{
		uint64_t i = rnd() % 8;
		int on = 1;

		while (i < nbits) {
			uint64_t len = 1 + rnd() % 150;

			for (uint64_t j = i; j < i + len && j < nbits; j++)
				if (on)
					set_bit(bm, j);
			i += len;
			on = !on;
		}
		break;
	}
	default: /* alternating bits */
		for (uint64_t i = 0; i < nbits; i += 2)
			set_bit(bm, i);
		break;
	}
}

static void check_run_from(const uint64_t *bm, uint64_t nbits, uint64_t from, uint64_t max_len)
{
	uint64_t s1 = 0xdead, l1 = 0xbeef, s2 = 0, l2 = 0;
	int r1 = rmig_dirty_bitmap_next_run(bm, nbits, from, max_len, &s1, &l1);
	int r2 = naive_next_run(bm, nbits, from, max_len, &s2, &l2);

	if (r1 != r2 || (r1 && (s1 != s2 || l1 != l2)))
		fail_msg("nbits %llu from %llu max %llu: got %d %llu+%llu, want %d %llu+%llu",
			 (unsigned long long)nbits, (unsigned long long)from,
			 (unsigned long long)max_len, r1, (unsigned long long)s1,
			 (unsigned long long)l1, r2, (unsigned long long)s2,
			 (unsigned long long)l2);
	if (!r1) {
		/* Nothing found: the outputs are left alone. */
		assert_true(s1 == 0xdead && l1 == 0xbeef);
	}
}

/* Walk the bitmap as the sender does and rebuild it from the runs. */
static void check_walk(const uint64_t *bm, uint64_t nbits, uint64_t max_len)
{
	uint64_t *re = bm_alloc(nbits), pos = 0, start, len, total = 0, prev_end = 0;
	int first = 1;

	while (rmig_dirty_bitmap_next_run(bm, nbits, pos, max_len, &start, &len)) {
		assert_true(start >= pos);
		assert_true(len >= 1);
		assert_true(start + len <= nbits);
		if (max_len)
			assert_true(len <= max_len);
		/* Runs are maximal: clean bit (or the end) before and after,
		 * unless cut by max_len. */
		if (start + len < nbits && (!max_len || len < max_len))
			assert_false(bit(bm, start + len));
		if (start > 0 && !(max_len && !first && start == prev_end))
			assert_false(bit(bm, start - 1));
		for (uint64_t i = start; i < start + len; i++) {
			assert_true(bit(bm, i));
			set_bit(re, i);
		}
		total += len;
		pos = start + len;
		prev_end = pos;
		first = 0;
	}
	assert_true(total == naive_count(bm, nbits));
	for (uint64_t i = 0; i < nbits; i++)
		assert_int_equal(bit(re, i), bit(bm, i));
	free(re);
}

static const uint64_t sizes[] = { 0,   1,   2,	 31,  63,  64,	65,  100,  127,	 128,
				  129, 191, 192, 193, 255, 256, 257, 1000, 1023, 1024 };
static const uint64_t max_lens[] = { 0, 1, 2, 3, 63, 64, 65, 100 };

static void test_next_run_vs_naive_all_from(void **state)
{
	(void)state;
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		uint64_t nbits = sizes[si];
		uint64_t *bm = bm_alloc(nbits);

		for (int pat = 0; pat <= 6; pat++) {
			fill_pattern(bm, nbits, pat);
			for (int garbage = 0; garbage < 2; garbage++) {
				if (garbage)
					dirty_tail(bm, nbits);
				for (size_t mi = 0; mi < sizeof(max_lens) / sizeof(max_lens[0]);
				     mi++) {
					/* Every start for small maps, a sample for large. */
					uint64_t step = nbits > 300 ? 7 : 1;

					for (uint64_t from = 0; from <= nbits + 65; from += step)
						check_run_from(bm, nbits, from, max_lens[mi]);
					check_walk(bm, nbits, max_lens[mi]);
				}
			}
		}
		free(bm);
	}
}

static void test_next_run_random_sizes(void **state)
{
	(void)state;
	for (int iter = 0; iter < 300; iter++) {
		uint64_t nbits = rnd() % 5000;
		uint64_t *bm = bm_alloc(nbits);
		uint64_t max_len = rnd() % 3 ? 0 : 1 + rnd() % 300;

		fill_pattern(bm, nbits, (int)(rnd() % 7));
		if (rnd() & 1)
			dirty_tail(bm, nbits);
		check_walk(bm, nbits, max_len);
		for (int k = 0; k < 200; k++)
			check_run_from(bm, nbits, rnd() % (nbits + 130), max_len);
		assert_true(rmig_dirty_bitmap_count(bm, nbits) == naive_count(bm, nbits));
		free(bm);
	}
}

static void test_single_bits_at_boundaries(void **state)
{
	static const uint64_t positions[] = { 0, 1, 62, 63, 64, 65, 127, 128, 191, 192, 255 };
	const uint64_t nbits = 256;

	(void)state;
	for (size_t p = 0; p < sizeof(positions) / sizeof(positions[0]); p++) {
		uint64_t *bm = bm_alloc(nbits), s, l;

		set_bit(bm, positions[p]);
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, 0, 0, &s, &l), 1);
		assert_true(s == positions[p]);
		assert_true(l == 1);
		/* Found from exactly there, not from one past. */
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, positions[p], 0, &s, &l), 1);
		assert_true(s == positions[p]);
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, positions[p] + 1, 0, &s, &l),
				 0);
		assert_true(rmig_dirty_bitmap_count(bm, nbits) == 1);
		free(bm);
	}
	/* The last bit of a size that is not a multiple of 64. */
	for (uint64_t nbits2 = 65; nbits2 < 200; nbits2 += 37) {
		uint64_t *bm = bm_alloc(nbits2), s, l;

		set_bit(bm, nbits2 - 1);
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits2, 0, 0, &s, &l), 1);
		assert_true(s == nbits2 - 1 && l == 1);
		/* A garbage bit just past the end is not part of the run. */
		bm[nbits2 / 64] |= 1ull << (nbits2 % 64);
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits2, 0, 0, &s, &l), 1);
		assert_true(s == nbits2 - 1 && l == 1);
		assert_true(rmig_dirty_bitmap_count(bm, nbits2) == 1);
		/* And garbage alone is nothing. */
		bm[(nbits2 - 1) / 64] &= ~(1ull << ((nbits2 - 1) % 64));
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits2, 0, 0, &s, &l), 0);
		assert_true(rmig_dirty_bitmap_count(bm, nbits2) == 0);
		free(bm);
	}
}

static void test_empty_and_full(void **state)
{
	(void)state;
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		uint64_t nbits = sizes[si], s = 7, l = 7;
		uint64_t *bm = bm_alloc(nbits);

		/* Empty (and nbits 0 touches nothing). */
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, 0, 0, &s, &l), 0);
		assert_true(rmig_dirty_bitmap_count(bm, nbits) == 0);
		/* Full: one run of everything, or max_len pieces. */
		rmig_dirty_bitmap_set_all(bm, nbits);
		assert_true(rmig_dirty_bitmap_count(bm, nbits) == nbits);
		if (nbits) {
			assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, 0, 0, &s, &l), 1);
			assert_true(s == 0 && l == nbits);
			assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, 0, 64, &s, &l), 1);
			assert_true(s == 0 && l == (nbits < 64 ? nbits : 64));
			assert_int_equal(
			    rmig_dirty_bitmap_next_run(bm, nbits, nbits - 1, 0, &s, &l), 1);
			assert_true(s == nbits - 1 && l == 1);
		}
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, nbits, 0, &s, &l), 0);
		/* From far past the end, even near UINT64_MAX. */
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, nbits + 1000, 0, &s, &l), 0);
		assert_int_equal(rmig_dirty_bitmap_next_run(bm, nbits, UINT64_MAX, 0, &s, &l), 0);
		free(bm);
	}
}

static void test_count(void **state)
{
	(void)state;
	for (int iter = 0; iter < 500; iter++) {
		uint64_t nbits = rnd() % 3000;
		uint64_t *bm = bm_alloc(nbits);

		fill_pattern(bm, nbits, (int)(rnd() % 7));
		dirty_tail(bm, nbits);
		assert_true(rmig_dirty_bitmap_count(bm, nbits) == naive_count(bm, nbits));
		free(bm);
	}
	/* Counting a prefix of a bitmap ignores the rest. */
	{
		uint64_t bm[4] = { ~0ull, ~0ull, ~0ull, ~0ull };

		for (uint64_t n = 0; n <= 256; n++)
			assert_true(rmig_dirty_bitmap_count(bm, n) == n);
	}
}

static void test_set_all(void **state)
{
	(void)state;
	for (uint64_t nbits = 0; nbits <= 300; nbits++) {
		uint64_t words = rmig_bitmap_words(nbits);
		uint64_t *bm = bm_alloc(nbits);

		for (uint64_t w = 0; w < words; w++)
			bm[w] = rnd(); /* overwritten, not ORed */
		rmig_dirty_bitmap_set_all(bm, nbits);
		for (uint64_t i = 0; i < nbits; i++)
			assert_int_equal(bit(bm, i), 1);
		/* Nothing set past the end in the last word. */
		for (uint64_t i = nbits; i < words * 64; i++)
			assert_int_equal(bit(bm, i), 0);
		assert_true(rmig_dirty_bitmap_count(bm, nbits) == nbits);
		free(bm);
	}
	assert_true(rmig_bitmap_words(0) == 0);
	assert_true(rmig_bitmap_words(1) == 1);
	assert_true(rmig_bitmap_words(64) == 1);
	assert_true(rmig_bitmap_words(65) == 2);
	assert_true(rmig_bitmap_words(1ull << 32) == 1ull << 26);
}

static void test_set_range(void **state)
{
	static const uint64_t edges[][2] = {
		{ 0, 0 },   { 0, 1 },	{ 63, 1 },  { 63, 2 },	{ 64, 1 },
		{ 0, 64 },  { 1, 63 },	{ 0, 65 },  { 64, 64 }, { 60, 200 },
		{ 127, 2 }, { 0, 320 }, { 319, 1 }, { 100, 0 }, { 5, 250 },
	};
	const uint64_t nbits = 320;

	(void)state;
	for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
		for (int base = 0; base < 3; base++) {
			uint64_t *bm = bm_alloc(nbits), *want = bm_alloc(nbits);

			fill_pattern(bm, nbits, base == 0 ? 0 : base == 1 ? 2 : 5);
			memcpy(want, bm, rmig_bitmap_words(nbits) * 8);
			for (uint64_t i = edges[e][0]; i < edges[e][0] + edges[e][1]; i++)
				set_bit(want, i);
			rmig_dirty_bitmap_set_range(bm, edges[e][0], edges[e][1]);
			assert_memory_equal(bm, want, rmig_bitmap_words(nbits) * 8);
			free(bm);
			free(want);
		}
	}
	/* Random ranges against the model, then a walk finds them. */
	for (int iter = 0; iter < 300; iter++) {
		uint64_t n = 1 + rnd() % 2000;
		uint64_t *bm = bm_alloc(n), *want = bm_alloc(n);
		uint64_t first = rnd() % n, count = rnd() % (n - first + 1), s, l;

		rmig_dirty_bitmap_set_range(bm, first, count);
		for (uint64_t i = first; i < first + count; i++)
			set_bit(want, i);
		assert_memory_equal(bm, want, rmig_bitmap_words(n) * 8);
		assert_true(rmig_dirty_bitmap_count(bm, n) == count);
		if (count) {
			assert_int_equal(rmig_dirty_bitmap_next_run(bm, n, 0, 0, &s, &l), 1);
			assert_true(s == first && l == count);
		} else {
			assert_int_equal(rmig_dirty_bitmap_next_run(bm, n, 0, 0, &s, &l), 0);
		}
		free(bm);
		free(want);
	}
}

/* max_len splits long runs into consecutive pieces that tile the run. */
static void test_max_len_pieces(void **state)
{
	const uint64_t nbits = 1000;
	uint64_t *bm = bm_alloc(nbits), pos, s, l, n;

	(void)state;
	rmig_dirty_bitmap_set_range(bm, 10, 300);
	rmig_dirty_bitmap_set_range(bm, 500, 7);
	for (uint64_t max = 1; max <= 310; max += 7) {
		uint64_t covered = 0;

		pos = 0;
		n = 0;
		while (rmig_dirty_bitmap_next_run(bm, nbits, pos, max, &s, &l)) {
			assert_true(l <= max);
			if (s < 500) {
				assert_true(s == 10 + covered);
				covered += l;
			}
			pos = s + l;
			n++;
		}
		assert_true(covered == 300);
		assert_true(n == (300 + max - 1) / max + (7 + max - 1) / max);
	}
	free(bm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_next_run_vs_naive_all_from),
		cmocka_unit_test(test_next_run_random_sizes),
		cmocka_unit_test(test_single_bits_at_boundaries),
		cmocka_unit_test(test_empty_and_full),
		cmocka_unit_test(test_count),
		cmocka_unit_test(test_set_all),
		cmocka_unit_test(test_set_range),
		cmocka_unit_test(test_max_len_pieces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
