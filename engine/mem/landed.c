/* landed.c - a bitmap of the destination's areas (huge pages) that data
 * went into; see landed.h. */
#include <stdatomic.h>
#include <stdlib.h>

#include "bitmap.h"
#include "landed.h"

struct rmig_landed {
	uint64_t unit;
	uint64_t pages_per_area;
	uint64_t areas;
	_Atomic uint64_t map[];
};

struct rmig_landed *rmig_landed_create(uint64_t bytes, uint32_t page_size, uint64_t unit)
{
	uint64_t areas = (bytes + unit - 1) / unit;
	struct rmig_landed *l = calloc(1, sizeof(*l) + rmig_bitmap_words(areas) * 8);

	if (!l)
		return NULL;
	l->unit = unit;
	l->pages_per_area = unit / page_size;
	l->areas = areas;
	return l;
}

void rmig_landed_destroy(struct rmig_landed *l)
{
	free(l);
}

static int landed_at(const struct rmig_landed *l, uint64_t area)
{
	return (atomic_load_explicit(&l->map[area / 64], memory_order_relaxed) >> (area % 64)) & 1;
}

void rmig_landed_mark(struct rmig_landed *l, uint64_t first, uint64_t count)
{
	uint64_t last = (first + count - 1) / l->pages_per_area;

	/* Test first: most areas have landed already, and an OR is a locked op. */
	for (uint64_t a = first / l->pages_per_area; count && a <= last && a < l->areas; a++)
		if (!landed_at(l, a))
			atomic_fetch_or(&l->map[a / 64], 1ull << (a % 64));
}

uint64_t rmig_landed_cost(const struct rmig_landed *l, const uint64_t *dirty, uint64_t npages)
{
	uint64_t pos = 0, start, len, fresh = 0, counted = UINT64_MAX;

	while (rmig_dirty_bitmap_next_run(dirty, npages, pos, 0, &start, &len)) {
		uint64_t a = start / l->pages_per_area, end = (start + len - 1) / l->pages_per_area;

		for (a = a == counted ? a + 1 : a; a <= end && a < l->areas; a++)
			fresh += !landed_at(l, a);
		counted = end;
		pos = start + len;
	}
	return fresh * l->unit;
}
