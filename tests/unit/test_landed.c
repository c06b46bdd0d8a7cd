/* test_landed.c - the source's count of what late pages cost the
 * destination's memory (engine/mem/landed.c): each area with a dirty page
 * and nothing landed in it counts once, whole, against a naive model. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "landed.h"

#define PAGE 4096u
#define UNIT (2u << 20)
#define PPA (UNIT / PAGE) /* pages per area */

static uint64_t *bitmap(uint64_t npages)
{
	uint64_t *bm = calloc(rmig_bitmap_words(npages), 8);

	assert_non_null(bm);
	return bm;
}

static void set(uint64_t *bm, uint64_t page)
{
	bm[page / 64] |= 1ull << (page % 64);
}

/* Known cases: edges, several pages in one area, runs across areas. */
static void test_cases(void **state)
{
	const uint64_t npages = 8 * PPA + 100; /* a partial last area */
	struct rmig_landed *l = rmig_landed_create(npages * PAGE, PAGE, UNIT);
	uint64_t *d = bitmap(npages);

	(void)state;
	assert_non_null(l);
	assert_true(rmig_landed_cost(l, d, npages) == 0); /* nothing dirty */
	/* Three pages of area 0, one of area 2: two areas, each once. */
	set(d, 0);
	set(d, 5);
	set(d, PPA - 1);
	set(d, 2 * PPA + 7);
	assert_true(rmig_landed_cost(l, d, npages) == 2ull * UNIT);
	/* Area 0 landed: only area 2 is left. */
	rmig_landed_mark(l, 3, 1);
	assert_true(rmig_landed_cost(l, d, npages) == 1ull * UNIT);
	/* A run crossing from area 2 into area 3 lands both. */
	rmig_landed_mark(l, 3 * PPA - 1, 2);
	assert_true(rmig_landed_cost(l, d, npages) == 0);
	/* A dirty run across areas 4..6 counts three; the partial last area
	 * (8) counts whole. */
	for (uint64_t p = 4 * PPA + PPA / 2; p < 6 * PPA + 1; p++)
		set(d, p);
	set(d, npages - 1);
	assert_true(rmig_landed_cost(l, d, npages) == 4ull * UNIT);
	/* Marking nothing marks nothing. */
	rmig_landed_mark(l, 8 * PPA, 0);
	assert_true(rmig_landed_cost(l, d, npages) == 4ull * UNIT);
	rmig_landed_mark(l, 8 * PPA, 1);
	assert_true(rmig_landed_cost(l, d, npages) == 3ull * UNIT);
	free(d);
	rmig_landed_destroy(l);
}

static uint64_t rng = 7;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Random marks and dirty sets against a per-area model. */
static void test_random(void **state)
{
	const uint64_t npages = 37 * PPA + 11;
	const uint64_t areas = (npages + PPA - 1) / PPA;

	(void)state;
	for (int iter = 0; iter < 50; iter++) {
		struct rmig_landed *l = rmig_landed_create(npages * PAGE, PAGE, UNIT);
		uint64_t *d = bitmap(npages), want = 0;
		char *landed = calloc(areas, 1), *dirty = calloc(areas, 1);

		assert_non_null(landed);
		assert_non_null(dirty);
		for (int i = 0; i < 20; i++) {
			uint64_t first = rnd() % npages, count = 1 + rnd() % (3 * PPA);

			if (first + count > npages)
				count = npages - first;
			rmig_landed_mark(l, first, count);
			for (uint64_t a = first / PPA; a <= (first + count - 1) / PPA; a++)
				landed[a] = 1;
		}
		for (int i = 0; i < 200; i++) {
			uint64_t p = rnd() % npages;

			set(d, p);
			dirty[p / PPA] = 1;
		}
		for (uint64_t a = 0; a < areas; a++)
			want += dirty[a] && !landed[a];
		assert_true(rmig_landed_cost(l, d, npages) == want * UNIT);
		free(landed);
		free(dirty);
		free(d);
		rmig_landed_destroy(l);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
