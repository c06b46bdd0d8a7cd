/* populated.h - pages of private anonymous memory the kernel populated. */
#ifndef RMIG_POPULATED_H
#define RMIG_POPULATED_H

#include <stdint.h>

/* Set in bitmap (npages bits, cleared first) the pages of [host, host +
 * npages * page_size) that are present or swapped out; the others were never
 * touched. 0, or a negative errno (the caller then assumes all populated). */
int rmig_populated_pages(const void *host, uint64_t npages, uint32_t page_size, uint64_t *bitmap);

#endif
