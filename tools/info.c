/* info.c - `rmig info`: what this host offers a migration. The transports
 * (the library's rmig_transport_info), then each backend with what it
 * needs here and whether that is present (or why not), post-copy, and the
 * limits a large guest meets: locked memory (RDMA registers guest memory),
 * huge pages, NUMA nodes. Probes are cheap and change nothing. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "info.h"
#include "rmig_backend.h"

/* The first line of a small file, newline dropped; "" if unreadable. */
static void read_line(const char *path, char *out, size_t len)
{
	FILE *f = fopen(path, "r");

	out[0] = 0;
	if (f) {
		if (fgets(out, (int)len, f))
			out[strcspn(out, "\n")] = 0;
		fclose(f);
	}
}

/* name on PATH: its directory in dir, 1; else 0. */
static int on_path(const char *name, char *dir, size_t len)
{
	const char *path = getenv("PATH");
	char *buf = strdup(path ? path : "/usr/bin:/bin"), file[4200];
	int found = 0;

	for (char *save = NULL, *d = buf ? strtok_r(buf, ":", &save) : NULL; d && !found;
	     d = strtok_r(NULL, ":", &save)) {
		snprintf(file, sizeof(file), "%s/%s", d, name);
		if (!access(file, X_OK)) {
			snprintf(dir, len, "%s", file);
			found = 1;
		}
	}
	free(buf);
	return found;
}

static void backend_line(const char *name, int ready, const char *what)
{
	printf("  %-5s %s: %s\n", name, ready ? "ready" : "missing", what);
}

/* The uffd backend checks the kernel when it opens: open a 2 MiB guest
 * (whole pages whatever the host's page size). */
static void uffd_line(void)
{
	struct rmig_backend *be = NULL;
	char err[256];
	int rc = rmig_backend_open("uffd:size=2M", RMIG_ROLE_SOURCE, &be, err, sizeof(err));

	if (!rc)
		rmig_backend_close(be);
	backend_line("uffd", !rc,
		     rc ? err
			: "the kernel tracks writes (userfaultfd write protection, PAGEMAP_SCAN)");
}

static void backends(void)
{
	char what[4400], file[4200];
	int ok;

	printf("backends:\n");
	backend_line("sim", 1, "built in, needs nothing");
	if (rmig_backend_find("uffd"))
		uffd_line();
	ok = on_path("qemu-system-x86_64", file, sizeof(file));
	snprintf(what, sizeof(what), "%s%s (and a QMP socket on both sides)",
		 ok ? "QEMU at " : "no qemu-system-x86_64 on PATH", ok ? file : "");
	if (rmig_backend_find("qemu"))
		backend_line("qemu", ok, what);
	ok = !access("/dev/kvm", R_OK | W_OK);
	snprintf(what, sizeof(what), "/dev/kvm%s%s", ok ? "" : ": ",
		 ok ? ""
		    : (errno == ENOENT ? "absent (load kvm_intel or kvm_amd)" : strerror(errno)));
	if (rmig_backend_find("kvm"))
		backend_line("kvm", ok, what);
	if (rmig_backend_find("xen")) {
		ok = !access("/dev/xen/privcmd", R_OK | W_OK);
		backend_line("xen", ok,
			     ok ? "dom0 (/dev/xen/privcmd), source only"
				: "not a Xen dom0 (no /dev/xen/privcmd)");
	} else {
		printf("  %-5s not built (libxen-dev was missing at build time)\n", "xen");
	}
}

/* What the destination needs to catch its guest's faults: userfaultfd
 * for missing pages; as the engine, plainly first, then in user mode
 * (Linux 5.11+, allowed where vm.unprivileged_userfaultfd is 0). */
static void postcopy(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int err;

	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	err = errno;

	if (fd >= 0 && ioctl(fd, UFFDIO_API, &api))
		err = errno, close(fd), fd = -1;
	if (fd >= 0) {
		close(fd);
		printf("post-copy: possible (userfaultfd)\n");
	} else {
		printf("post-copy: not possible here: userfaultfd: %s%s\n", strerror(err),
		       err == ENOSYS ? " (a seccomp profile or a kernel without it)" : "");
	}
}

static void memory(void)
{
	struct rlimit rl;
	char thp[128], nodes[128], line[256];
	long total = -1, free_pages = -1, size_kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!getrlimit(RLIMIT_MEMLOCK, &rl)) {
		if (rl.rlim_cur == RLIM_INFINITY)
			printf("memlock: unlimited\n");
		else
			printf("memlock: %llu KiB (RDMA with --pin all registers the whole guest: "
			       "raise it, e.g. LimitMEMLOCK=infinity)\n",
			       (unsigned long long)rl.rlim_cur / 1024);
	}
	while (f && fgets(line, sizeof(line), f)) {
		sscanf(line, "HugePages_Total: %ld", &total);
		sscanf(line, "HugePages_Free: %ld", &free_pages);
		sscanf(line, "Hugepagesize: %ld kB", &size_kb);
	}
	if (f)
		fclose(f);
	read_line("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof(thp));
	printf("hugepages: transparent %s; ", thp[0] ? thp : "(unknown)");
	if (total >= 0 && free_pages >= 0 && size_kb >= 0)
		printf("%ld of %ld reserved pages of %ld KiB free\n", free_pages, total, size_kb);
	else
		printf("reserved pages unknown (no /proc/meminfo)\n");
	read_line("/sys/devices/system/node/online", nodes, sizeof(nodes));
	printf("numa: nodes %s\n", nodes[0] ? nodes : "0 (no NUMA information)");
}

int info_command(const char *rails)
{
	char *buf = malloc(65536);

	if (!buf)
		return 1;
	printf("rmig %s\ntransports:\n", rmig_version(NULL, NULL, NULL));
	rmig_transport_info(buf, 65536);
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		printf("  %s\n", l);
	/* Which device would serve which node (config.rails; auto when not given). */
	rmig_rails_info(rails, buf, 65536);
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		printf("  %s\n", l);
	free(buf);
	backends();
	postcopy();
	memory();
	return 0;
}
