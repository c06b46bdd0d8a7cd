/* landed.h - where in a destination's guest memory data has landed, a bit
 * per area its kernel backs at once on a first write (a transparent huge
 * page, `unit` bytes), so that the source can tell what a page sent now
 * costs the destination beyond its bytes: a whole area cleared when
 * nothing landed there before.
 *
 * Marking is safe from several threads at once (sender threads); counting
 * must not run concurrently with marking of the same areas (the round
 * barrier orders them) and is only an estimate if it does. */
#ifndef RMIG_LANDED_H
#define RMIG_LANDED_H

#include <stdint.h>

struct rmig_landed;

/* For a region of `bytes` of `page_size` pages, areas of `unit` bytes
 * (a power of two larger than page_size). NULL when out of memory. */
struct rmig_landed *rmig_landed_create(uint64_t bytes, uint32_t page_size, uint64_t unit);
void rmig_landed_destroy(struct rmig_landed *l);

/* Data is on its way into pages [first, first + count). */
void rmig_landed_mark(struct rmig_landed *l, uint64_t first, uint64_t count);

/* Bytes the destination must back to take the pages set in dirty (npages
 * bits): unit for each area holding a dirty page and nothing landed yet,
 * each area once. */
uint64_t rmig_landed_cost(const struct rmig_landed *l, const uint64_t *dirty, uint64_t npages);

#endif
