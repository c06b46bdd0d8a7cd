/* test_chunks.c - per-chunk digests kept as pages move (engine/mem/chunks.c)
 * against memory: two regions of odd sizes (a partial last chunk), a copy
 * built page by page as a migration would, and the audit finding exactly
 * the chunks changed behind the leaves' back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "chunks.h"

#define PS 4096u
#define PPC (RMIG_CHUNK_BYTES / PS)

struct guest {
	struct rmig_region r[2];
	size_t n;
};

/* Anonymous memory, so that never-populated pages stay so. */
static void guest_init(struct guest *g, uint64_t pages0, uint64_t pages1)
{
	uint64_t pages[2] = { pages0, pages1 };

	g->n = 2;
	for (size_t i = 0; i < 2; i++) {
		void *m = mmap(NULL, pages[i] * PS, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		assert_true(m != MAP_FAILED);
		g->r[i] = (struct rmig_region){ .id = (uint32_t)i + 7,
						.host = m,
						.len = pages[i] * PS,
						.page_size = PS,
						.flags = RMIG_REGION_UNTOUCHED_ZERO };
	}
}

static void guest_free(struct guest *g)
{
	for (size_t i = 0; i < g->n; i++)
		munmap(g->r[i].host, g->r[i].len);
}

static char *page(struct guest *g, size_t ri, uint64_t pg)
{
	return (char *)g->r[ri].host + pg * PS;
}

static void scribble(struct guest *g, size_t ri, uint64_t pg, uint64_t v)
{
	memcpy(page(g, ri, pg) + (v % (PS / 8)) * 8, &v, 8);
}

/* A source whose pages all move, and a destination built from them by set
 * calls, give the same roots as the destination's own memory pass. */
static void test_moved_pages_match_memory(void **state)
{
	struct guest src, dst;
	struct rmig_chunks *a, *b, *m;
	uint64_t ra[2], rb[2], rm[2];

	(void)state;
	guest_init(&src, 3 * PPC + 5, PPC - 1);
	guest_init(&dst, 3 * PPC + 5, PPC - 1);
	for (uint64_t pg = 0; pg < 3 * PPC + 5; pg += 3)
		scribble(&src, 0, pg, pg * 77 + 1);
	scribble(&src, 1, PPC - 2, 99);
	assert_int_equal(rmig_chunks_create(src.r, 2, &a), 0);
	assert_int_equal(rmig_chunks_create(dst.r, 2, &b), 0);
	assert_int_equal(rmig_chunks_create(dst.r, 2, &m), 0);
	/* Send: populated pages as data (zero ones as zero), copy them over. */
	for (size_t ri = 0; ri < 2; ri++)
		for (uint64_t pg = 0; pg < src.r[ri].len / PS; pg++) {
			static const char zero[PS];

			if (!memcmp(page(&src, ri, pg), zero, PS)) {
				rmig_chunks_set_zero(a, ri, pg, 1);
				rmig_chunks_set_zero(b, ri, pg, 1);
				continue;
			}
			rmig_chunks_set_pages(a, ri, pg, 1, page(&src, ri, pg));
			memcpy(page(&dst, ri, pg), page(&src, ri, pg), PS);
			rmig_chunks_set_pages(b, ri, pg, 1, page(&dst, ri, pg));
		}
	assert_int_equal(rmig_chunks_from_memory(m, 2), 0);
	rmig_chunks_roots(a, ra);
	rmig_chunks_roots(b, rb);
	rmig_chunks_roots(m, rm);
	assert_memory_equal(ra, rb, sizeof(ra));
	assert_memory_equal(ra, rm, sizeof(ra));
	/* One byte of one page, applied wrongly: that region's root differs. */
	page(&dst, 0, 3)[100] ^= 1;
	rmig_chunks_set_pages(b, 0, 3, 1, page(&dst, 0, 3));
	rmig_chunks_roots(b, rb);
	assert_true(ra[0] != rb[0]);
	assert_true(ra[1] == rb[1]);
	rmig_chunks_destroy(a);
	rmig_chunks_destroy(b);
	rmig_chunks_destroy(m);
	guest_free(&src);
	guest_free(&dst);
}

/* Fresh leaves are the digest of an all-zero guest, with nothing read. */
static void test_fresh_is_zero_memory(void **state)
{
	struct guest g;
	struct rmig_chunks *a, *m;
	struct rmig_audit_report rep;
	uint64_t ra[2], rm[2];

	(void)state;
	guest_init(&g, 2 * PPC, 17);
	assert_int_equal(rmig_chunks_create(g.r, 2, &a), 0);
	assert_int_equal(rmig_chunks_create(g.r, 2, &m), 0);
	assert_int_equal(rmig_chunks_from_memory(m, 1), 0);
	rmig_chunks_roots(a, ra);
	rmig_chunks_roots(m, rm);
	assert_memory_equal(ra, rm, sizeof(ra));
	assert_int_equal(rmig_chunks_audit(a, 0, &rep), 0);
	assert_int_equal(rep.mismatched, 0);
	assert_int_equal(rep.pages_read, 0); /* never populated: never read */
	rmig_chunks_destroy(a);
	rmig_chunks_destroy(m);
	guest_free(&g);
}

/* Writes the leaves never saw (a lying dirty log): the audit names exactly
 * their chunks, in order; a write recorded afterwards heals its chunk. */
static void test_audit_names_unrecorded_writes(void **state)
{
	struct guest g;
	struct rmig_chunks *a;
	struct rmig_audit_report rep;

	(void)state;
	guest_init(&g, 4 * PPC, 3 * PPC);
	for (uint64_t pg = 0; pg < 4 * PPC; pg++)
		scribble(&g, 0, pg, pg + 1);
	assert_int_equal(rmig_chunks_create(g.r, 2, &a), 0);
	rmig_chunks_set_pages(a, 0, 0, 4 * PPC, page(&g, 0, 0));
	scribble(&g, 0, 2 * PPC + 9, 12345);
	scribble(&g, 1, PPC, 777); /* a page never populated, now written */
	scribble(&g, 1, PPC + 1, 778);
	assert_int_equal(rmig_chunks_audit(a, 0, &rep), 0);
	assert_int_equal(rep.chunks, 7);
	assert_int_equal(rep.mismatched, 2);
	assert_int_equal(rep.named, 2);
	assert_int_equal(rep.first[0].region, 7);
	assert_int_equal(rep.first[0].chunk, 2);
	assert_int_equal(rep.first[1].region, 8);
	assert_int_equal(rep.first[1].chunk, 1);
	assert_int_equal(rep.pages_read, 4 * PPC + 2);
	rmig_chunks_set_pages(a, 0, 2 * PPC + 9, 1, page(&g, 0, 2 * PPC + 9));
	assert_int_equal(rmig_chunks_audit(a, 2, &rep), 0);
	assert_int_equal(rep.mismatched, 1);
	assert_int_equal(rep.first[0].region, 8);
	rmig_chunks_destroy(a);
	guest_free(&g);
}

/* Only chunks touched since the last refresh are digested again. */
static void test_stale_counts_touched_chunks(void **state)
{
	struct guest g;
	struct rmig_chunks *a;
	uint64_t r1[2], r2[2];

	(void)state;
	guest_init(&g, 8 * PPC, PPC);
	assert_int_equal(rmig_chunks_create(g.r, 2, &a), 0);
	assert_int_equal(rmig_chunks_stale(a), 0);
	rmig_chunks_roots(a, r1);
	scribble(&g, 0, PPC + 1, 5);
	rmig_chunks_set_pages(a, 0, PPC - 1, 3, page(&g, 0, PPC - 1)); /* spans 2 chunks */
	rmig_chunks_set_zero(a, 1, 0, 1);
	assert_int_equal(rmig_chunks_stale(a), 3);
	rmig_chunks_roots(a, r2);
	assert_int_equal(rmig_chunks_stale(a), 0);
	assert_true(r1[0] != r2[0]);
	assert_true(r1[1] == r2[1]); /* zero over zero: the same */
	rmig_chunks_destroy(a);
	guest_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_moved_pages_match_memory),
		cmocka_unit_test(test_fresh_is_zero_memory),
		cmocka_unit_test(test_audit_names_unrecorded_writes),
		cmocka_unit_test(test_stale_counts_touched_chunks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
