/* test_populated.c - rmig_populated_pages against pages this test wrote:
 * exactly those are reported, by PAGEMAP_SCAN and by the pagemap read
 * fallback alike, for 4 KiB and larger guest pages, before and after pages
 * are dropped again. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bitmap.h"
#include "populated.h"

#define NPAGES 4096 /* 16 MiB of 4 KiB pages */

static const uint64_t written[] = { 0, 5, 6, 63, 64, 1000, 2047, 2048, 4095 };

static uint8_t *map_guest(void)
{
	uint8_t *p =
	    mmap(NULL, NPAGES * 4096ul, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	/* 4 KiB pages: a huge page would populate its 511 neighbours. */
	assert_int_equal(madvise(p, NPAGES * 4096ul, MADV_NOHUGEPAGE), 0);
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++)
		p[written[i] * 4096 + 123] = 1;
	return p;
}

/* Both methods, the same answer, and it is `want`. */
static void expect_populated(const uint8_t *p, uint64_t npages, uint32_t page_size,
			     const uint64_t *want)
{
	size_t words = rmig_bitmap_words(npages);
	uint64_t *scan = malloc(words * 8), *read = malloc(words * 8);

	assert_non_null(scan);
	assert_non_null(read);
	memset(scan, 0xff, words * 8); /* both must clear it first */
	memset(read, 0xff, words * 8);
	assert_int_equal(rmig_populated_pages(p, npages, page_size, scan), 0);
	assert_int_equal(rmig_populated_pages_by_read(p, npages, page_size, read), 0);
	for (uint64_t i = 0; i < npages; i++) {
		int w = (int)((want[i / 64] >> (i % 64)) & 1);

		if ((int)((scan[i / 64] >> (i % 64)) & 1) != w ||
		    (int)((read[i / 64] >> (i % 64)) & 1) != w)
			fail_msg("page %llu of %u bytes: scan %d, read %d, wanted %d",
				 (unsigned long long)i, page_size,
				 (int)((scan[i / 64] >> (i % 64)) & 1),
				 (int)((read[i / 64] >> (i % 64)) & 1), w);
	}
	free(scan);
	free(read);
}

static void test_written_pages(void **state)
{
	uint64_t want[NPAGES / 64] = { 0 };
	uint8_t *p = map_guest();

	(void)state;
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++)
		want[written[i] / 64] |= 1ull << (written[i] % 64);
	expect_populated(p, NPAGES, 4096, want);
	/* Dropped pages read as zero again: no longer populated. */
	assert_int_equal(madvise(p + 5 * 4096, 2 * 4096, MADV_DONTNEED), 0);
	want[0] &= ~(3ull << 5);
	expect_populated(p, NPAGES, 4096, want);
	/* A sub-range: page 0 of the answer is page 1000 here. */
	memset(want, 0, sizeof(want));
	want[0] = 1;				/* 1000 */
	want[1047 / 64] |= 1ull << (1047 % 64); /* 2047 */
	want[1048 / 64] |= 1ull << (1048 % 64); /* 2048 */
	expect_populated(p + 1000 * 4096, 1100, 4096, want);
	munmap(p, NPAGES * 4096ul);
}

static void test_large_guest_pages(void **state)
{
	uint64_t want[NPAGES / 8 / 64 + 1] = { 0 };
	uint8_t *p = map_guest();

	(void)state;
	/* 32 KiB guest pages: one written 4 KiB page populates its guest page. */
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++)
		want[written[i] / 8 / 64] |= 1ull << (written[i] / 8 % 64);
	expect_populated(p, NPAGES / 8, 32768, want);
	munmap(p, NPAGES * 4096ul);
}

static void test_bad_arguments(void **state)
{
	uint64_t bm[1];
	uint8_t *p = map_guest();

	(void)state;
	assert_int_equal(rmig_populated_pages(p + 1, 1, 4096, bm), -EINVAL);
	assert_int_equal(rmig_populated_pages(p, 1, 1000, bm), -EINVAL);
	assert_int_equal(rmig_populated_pages_by_read(p + 1, 1, 4096, bm), -EINVAL);
	munmap(p, NPAGES * 4096ul);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_written_pages),
		cmocka_unit_test(test_large_guest_pages),
		cmocka_unit_test(test_bad_arguments),
	};

	if (sysconf(_SC_PAGESIZE) != 4096) {
		printf("SKIP test_populated: written for 4 KiB host pages\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
