/* populated.c - which pages of this process's private anonymous memory the
 * kernel ever populated. A page never touched reads as zero and the
 * destination's fresh memory is zero too, so the first round need not read
 * it at all: on a sparse guest that is most of the memory, and reading it
 * would fault in every page.
 *
 * Linux 6.7+ answers with PAGEMAP_SCAN: one ioctl returns the populated
 * ranges, so the cost follows the populated runs, not the guest's size
 * (a sparse 64 GiB guest is 16 M pagemap entries, 128 MiB to read). Older
 * kernels: pagemap is read entry by entry. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bitmap.h"
#include "populated.h"
#include "kernel_compat.h" /* PAGEMAP_SCAN for Debian 12's kernel headers */

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_CHUNK 65536 /* pagemap entries read at once (512 KiB) */
#define SCAN_VEC 512   /* ranges returned per PAGEMAP_SCAN call */
#ifndef PAGE_IS_PRESENT
#define PAGE_IS_PRESENT (1 << 3)
#endif
#ifndef PAGE_IS_SWAPPED
#define PAGE_IS_SWAPPED (1 << 4)
#endif

/* PAGEMAP_SCAN: the present or swapped ranges, marked page by page of
 * page_size (a page partly populated counts). -ENOTTY/-EINVAL: no such ioctl. */
static int scan_populated(int fd, const void *host, uint64_t npages, uint32_t page_size,
			  uint64_t *bitmap)
{
	uint64_t base = (uintptr_t)host, end = base + npages * page_size;
	/* Zeroed: the kernel fills what it returns, but memory checkers that do
	 * not know PAGEMAP_SCAN (valgrind 3.19) would take every range, and all
	 * the bitmap and pages sent from it, as uninitialised. */
	struct page_region *vec = calloc(SCAN_VEC, sizeof(*vec));
	struct pm_scan_arg arg = { .size = sizeof(arg),
				   .start = base,
				   .end = end,
				   .vec_len = SCAN_VEC,
				   .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
				   .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED };
	int rc = 0;

	if (!vec)
		return -ENOMEM;
	arg.vec = (uintptr_t)vec;
	memset(bitmap, 0, rmig_bitmap_words(npages) * 8);
	while (arg.start < end) {
		long n = ioctl(fd, PAGEMAP_SCAN, &arg);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		for (long i = 0; i < n; i++) {
			uint64_t first = (vec[i].start - base) / page_size;
			uint64_t last = (vec[i].end - base + page_size - 1) / page_size;

			if (vec[i].start < base || vec[i].end > end || first >= last) {
				rc = -EIO; /* not what we asked for: trust nothing */
				goto out;
			}
			rmig_dirty_bitmap_set_range(bitmap, first, last - first);
		}
		if (arg.walk_end <= arg.start) {
			rc = -EIO; /* no progress */
			break;
		}
		arg.start = arg.walk_end;
	}
out:
	free(vec);
	return rc;
}

int rmig_populated_pages_by_read(const void *host, uint64_t npages, uint32_t page_size,
				 uint64_t *bitmap)
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

int rmig_populated_pages(const void *host, uint64_t npages, uint32_t page_size, uint64_t *bitmap)
{
	long host_page = sysconf(_SC_PAGESIZE);
	int fd, rc;

	if (host_page <= 0 || page_size % (uint64_t)host_page ||
	    (uintptr_t)host % (uint64_t)host_page)
		return -EINVAL;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = scan_populated(fd, host, npages, page_size, bitmap);
	close(fd);
	if (rc == -ENOTTY || rc == -EINVAL || rc == -EOPNOTSUPP)
		rc = rmig_populated_pages_by_read(host, npages, page_size, bitmap);
	return rc;
}

/* The first line of a sysfs file, or "" when it cannot be read. */
static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = 0;
	if (f && !fgets(buf, (int)len, f))
		buf[0] = 0;
	if (f)
		fclose(f);
}

uint64_t rmig_first_touch_bytes(void)
{
	char mode[128], size[32];
	unsigned long long bytes;

	read_line("/sys/kernel/mm/transparent_hugepage/enabled", mode, sizeof(mode));
	if (!strstr(mode, "[always]") && !strstr(mode, "[madvise]"))
		return 0;
	read_line("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", size, sizeof(size));
	if (sscanf(size, "%llu", &bytes) != 1 || bytes < 4096 || bytes > (1ull << 30) ||
	    (bytes & (bytes - 1)))
		return 0; /* what REGIONS_ACK cannot say (rmig_first_touch_ok) */
	return bytes;
}
