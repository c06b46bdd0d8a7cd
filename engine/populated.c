/* populated.c - which pages of this process's private anonymous memory the
 * kernel ever populated. A page never touched reads as zero and the
 * destination's fresh memory is zero too, so the first round need not read
 * it at all: on a sparse guest that is most of the memory, and reading it
 * would fault in every page. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "populated.h"

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_CHUNK 65536 /* pagemap entries read at once (512 KiB) */

int rmig_populated_pages(const void *host, uint64_t npages, uint32_t page_size, uint64_t *bitmap)
{
	long host_page = sysconf(_SC_PAGESIZE);
	uint64_t per_page, first, total, *ent = NULL;
	int fd, rc = 0;

	if (host_page <= 0 || page_size % (uint64_t)host_page ||
	    (uintptr_t)host % (uint64_t)host_page)
		return -EINVAL;
	per_page = page_size / (uint64_t)host_page;
	first = (uintptr_t)host / (uint64_t)host_page;
	total = npages * per_page;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ent = malloc(PM_CHUNK * sizeof(*ent));
	if (!ent) {
		rc = -ENOMEM;
		goto out;
	}
	memset(bitmap, 0, rmig_bitmap_words(npages) * 8);
	for (uint64_t done = 0; done < total;) {
		uint64_t want = total - done < PM_CHUNK ? total - done : PM_CHUNK;
		ssize_t got = pread(fd, ent, want * 8, (off_t)((first + done) * 8));

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0 || got % 8) {
			rc = got < 0 ? -errno : -EIO;
			goto out;
		}
		for (uint64_t i = 0; i < (uint64_t)got / 8; i++)
			if (ent[i] & (PM_PRESENT | PM_SWAPPED)) {
				uint64_t page = (done + i) / per_page;

				bitmap[page / 64] |= 1ull << (page % 64);
			}
		done += (uint64_t)got / 8;
	}
out:
	free(ent);
	close(fd);
	return rc;
}
