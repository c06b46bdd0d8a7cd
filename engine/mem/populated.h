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

/* What the kernel zero-fills on this host when guest memory is first
 * written: the transparent huge page size when THP may back it (enabled
 * "always" or "madvise": QEMU and the sim backend madvise their guest RAM),
 * 0 when THP is off or unknown (a 4 KiB fault costs little beside the page
 * written). Writing one page into never-touched memory then costs clearing
 * this much: the destination counts on it landing late pages (issue 21). */
uint64_t rmig_first_touch_bytes(void);

#endif
