/* kernel_compat.h - the few userfaultfd and PAGEMAP_SCAN definitions that
 * Debian 12's kernel headers (linux-libc-dev 6.1) lack, for backends/uffd.c
 * (write-protect tracking) and engine/mem/populated.c (which pages the kernel
 * populated). Copied from the kernel's uapi headers, each only where the
 * system's headers do not define it, so newer headers take over. Whether the
 * running kernel has them is asked at run time (uffd.c names whatever is
 * missing; populated.c falls back to reading pagemap).
 */
#ifndef RMIG_KERNEL_COMPAT_H
#define RMIG_KERNEL_COMPAT_H

#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>

/* include/uapi/linux/userfaultfd.h */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* Linux 6.4 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* Linux 6.7 */
#endif

/* include/uapi/linux/fs.h, Linux 6.7: the PAGEMAP_SCAN ioctl of
 * /proc/PID/pagemap. The structs come with the ioctl's number. */
#ifndef PAGEMAP_SCAN
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

struct page_region {
	__u64 start;
	__u64 end; /* exclusive */
	__u64 categories;
};

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end; /* written by the kernel: where the scan stopped */
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#endif

#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN (1 << 1)
#endif
#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0) /* Write protect the pages matched. */
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC (1 << 1) /* Abort the scan when a non-WP-enabled page is found. */
#endif

#endif
