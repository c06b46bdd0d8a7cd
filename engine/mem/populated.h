/* populated.h - pages of private anonymous memory the kernel populated. */
#ifndef RMIG_POPULATED_H
#define RMIG_POPULATED_H

#include <stdint.h>

/* Set in bitmap (npages bits, cleared first) the pages of [host, host +
 * npages * page_size) that are present or swapped out; the others were never
 * touched. 0, or a negative errno (the caller then assumes all populated). */
int rmig_populated_pages(const void *host, uint64_t npages, uint32_t page_size, uint64_t *bitmap);
/* The same from /proc/self/pagemap entry by entry, as on kernels before 6.7
 * (which lack PAGEMAP_SCAN); rmig_populated_pages falls back to it. */
int rmig_populated_pages_by_read(const void *host, uint64_t npages, uint32_t page_size,
				 uint64_t *bitmap);

#endif
