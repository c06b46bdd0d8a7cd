/* kvm_dirtylog_test.c - the kvm backend (backends/kvm.c) against a real KVM,
 * through its public API. Needs /dev/kvm: run inside the rxe VM by
 * tests/rxe/t_kvm.sh (kvm_amd loads under TCG's -cpu max). Without /dev/kvm
 * it prints "SKIP: ..." and exits 77.
 *
 * As a VMM would, it creates a VM with two memory slots (ids 0 and 3; slot 3
 * is 100 pages, not a multiple of 64) and one real-mode vCPU whose guest
 * writes one byte to slot 3's page 5 and halts, then checks: the dirty-log
 * mode the backend chose matches what KVM offers; start_dirty_log cleared
 * KVM_DIRTY_LOG_INITIALLY_SET's all-dirty bits, so the first fetch is empty,
 * and fetches OR (keep the caller's bits); a guest write shows up as its
 * page (and at most the code page), once, and again after the next write
 * (the fetch's KVM_CLEAR_DIRTY_LOG re-protected it); closing turns the log
 * off; bad slots and bad parameters fail with one-line "kvm: ..." errors and
 * change nothing; the destination form matches layouts. Then the CLI form,
 * kvm:size=...,dirty-rate=...:
 * its vCPU writes, pause stops the writes, and its saved registers let a
 * second backend's vCPU carry on.
 * Prints "ok: ..." / "FAIL: ..." lines, then "N passed, N failed".
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "rmig_backend.h"
#include "rmig_kvm.h"

#define PAGE 4096u
#define S0_ID 0u
#define S0_GPA 0x0ull
#define S0_PAGES 64u
#define S3_ID 3u
#define S3_GPA 0x40000ull
#define S3_PAGES 100u
#define CODE_PAGE 1u  /* slot 0 page 1 (gpa 0x1000) */
#define WRITE_PAGE 5u /* slot 3 page 5 (gpa 0x45000) */

static int passed, failed;

static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(int cond, const char *fmt, ...)
{
	va_list ap;

	printf("%s", cond ? "ok: " : "FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (cond)
		passed++;
	else
		failed++;
}

/* One line, "kvm: " first, naming what it is about. */
static int sane_err(const char *msg, const char *want)
{
	return !strncmp(msg, "kvm: ", 5) && strstr(msg, want) && !strchr(msg, '\n');
}

static uint64_t count_bits(const uint64_t *bm, uint64_t nbits)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < nbits; i++)
		n += bm[i / 64] >> (i % 64) & 1;
	return n;
}

static int bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

struct vm {
	int kvm, fd, vcpu;
	struct kvm_run *run;
	uint8_t *mem0, *mem3;
	struct rmig_kvm_slot slots[2];
};

static void on_alarm(int sig)
{
	(void)sig; /* only to interrupt a KVM_RUN that never returns */
}

static int vm_setup(struct vm *v)
{
	/* mov byte [0x5000], 0x42 (ds base 0x40000: gpa 0x45000); hlt */
	static const uint8_t code[] = { 0xc6, 0x06, 0x00, 0x50, 0x42, 0xf4 };
	struct kvm_sregs sregs;
	int len;

	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	v->fd = v->kvm < 0 ? -1 : ioctl(v->kvm, KVM_CREATE_VM, 0);
	if (v->fd < 0)
		return -1;
	v->mem0 =
	    mmap(NULL, S0_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	v->mem3 =
	    mmap(NULL, S3_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (v->mem0 == MAP_FAILED || v->mem3 == MAP_FAILED)
		return -1;
	memcpy(v->mem0 + CODE_PAGE * PAGE, code, sizeof(code));
	v->slots[0] = (struct rmig_kvm_slot){ S0_ID, 0, S0_GPA, S0_PAGES * PAGE, v->mem0 };
	v->slots[1] = (struct rmig_kvm_slot){ S3_ID, 0, S3_GPA, S3_PAGES * PAGE, v->mem3 };
	for (int i = 0; i < 2; i++) {
		struct kvm_userspace_memory_region r = { .slot = v->slots[i].slot,
							 .guest_phys_addr = v->slots[i].gpa,
							 .memory_size = v->slots[i].len,
							 .userspace_addr =
							     (uintptr_t)v->slots[i].host };

		if (ioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &r))
			return -1;
	}
	v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0);
	len = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (v->vcpu < 0 || len <= 0)
		return -1;
	v->run = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	if (v->run == MAP_FAILED || ioctl(v->vcpu, KVM_GET_SREGS, &sregs))
		return -1;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	sregs.ds.base = S3_GPA;
	sregs.ds.selector = S3_GPA >> 4;
	return ioctl(v->vcpu, KVM_SET_SREGS, &sregs);
}

/* Run the guest once: it writes its byte and halts. */
static int vm_run(struct vm *v)
{
	struct kvm_regs regs = { .rip = CODE_PAGE * PAGE, .rflags = 2 };
	int rc;

	v->mem3[WRITE_PAGE * PAGE] = 0;
	if (ioctl(v->vcpu, KVM_SET_REGS, &regs))
		return -errno;
	alarm(30);
	rc = ioctl(v->vcpu, KVM_RUN, 0);
	alarm(0);
	if (rc)
		return -errno;
	if (v->run->exit_reason != KVM_EXIT_HLT)
		return -1000 - (int)v->run->exit_reason;
	return v->mem3[WRITE_PAGE * PAGE] == 0x42 ? 0 : -EIO;
}

/* KVM_GET_DIRTY_LOG straight from the test: -ENOENT once logging is off;
 * in manual mode a peek (it clears nothing): the dirty page count. */
static int raw_get_log(struct vm *v, uint32_t slot)
{
	uint64_t bm[2] = { 0 };
	struct kvm_dirty_log d = { .slot = slot, .dirty_bitmap = bm };

	return ioctl(v->fd, KVM_GET_DIRTY_LOG, &d) ? -errno : (int)count_bits(bm, 128);
}

static int noop(void *arg)
{
	(void)arg;
	return 0;
}

static int started;
static int count_start(void *arg)
{
	(void)arg;
	started++;
	return 0;
}

static void bad_params(struct vm *v)
{
	struct rmig_kvm_slot s[2] = { v->slots[0], v->slots[1] };
	struct rmig_kvm_params p = {
		.vm_fd = v->fd, .slots = s, .nslots = 2, .pause = noop, .resume = noop
	};
	struct rmig_backend *be = NULL;
	char err[256];
	int rc, devnull = open("/dev/null", O_RDWR);

	p.vm_fd = -1;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == -EBADF && sane_err(err, "not a KVM VM fd"), "vm_fd -1 refused: %d %s", rc, err);
	p.vm_fd = devnull;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == -EBADF && sane_err(err, "not a KVM VM fd"), "/dev/null as vm_fd refused: %s",
	      err);
	close(devnull);
	p.vm_fd = v->fd;
	p.pause = NULL;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "pause and resume"), "no pause callback refused: %s",
	      err);
	p.pause = noop;
	p.nslots = 0;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "memory slots"), "no slots refused: %s", err);
	p.nslots = 2;
	s[1].len = S3_PAGES * PAGE + 1;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "slot 3"), "a slot not in whole pages refused: %s",
	      err);
	s[1] = v->slots[1];
	s[1].slot = S0_ID;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "given twice"), "a slot given twice refused: %s", err);
	s[1] = v->slots[1];
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_DEST, &be, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "start callback"),
	      "a destination without start refused: %s", err);
}

static void source_dirty_log(struct vm *v)
{
	struct rmig_kvm_params p = {
		.vm_fd = v->fd, .slots = v->slots, .nslots = 2, .pause = noop, .resume = noop
	};
	struct rmig_backend *be = NULL;
	const struct rmig_region *r;
	uint64_t bm[2][2], npages[2] = { S0_PAGES, S3_PAGES };
	size_t n = 0;
	char err[256];
	int rc, offered, mode, want;

	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == 0, "source backend created: %s", rc ? err : "");
	if (rc)
		return;
	rc = be->ops->get_regions(be, &r, &n);
	check(!rc && n == 2 && r[0].id == S0_ID && r[1].id == S3_ID &&
		  r[1].len == S3_PAGES * PAGE && r[1].gpa == S3_GPA && r[1].host == v->mem3 &&
		  r[0].page_size == PAGE,
	      "regions are the slots (ids 0 and 3)");
	check(rmig_kvm_dirty_log_mode(be) == -ENODATA, "no dirty-log mode before it starts");
	memset(bm, 0, sizeof(bm));
	rc = be->ops->fetch_dirty(be, 0, bm[0]);
	check(rc == -ENOENT && sane_err(be->err, "KVM_GET_DIRTY_LOG on slot 0"),
	      "fetch before start_dirty_log fails: %s", be->err);

	rc = be->ops->start_dirty_log(be);
	check(rc == 0, "start_dirty_log: %s", rc ? be->err : "");
	offered = ioctl(v->fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	want = 0;
	if (offered > 0 && (offered & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
		want = RMIG_KVM_LOG_MANUAL_PROTECT |
		       (offered & KVM_DIRTY_LOG_INITIALLY_SET ? RMIG_KVM_LOG_INITIALLY_SET : 0);
	mode = rmig_kvm_dirty_log_mode(be);
	printf("   KVM offers MANUAL_DIRTY_LOG_PROTECT2 flags %d; manual-protect path: %s, "
	       "initially-set: %s\n",
	       offered, mode >= 0 && mode & RMIG_KVM_LOG_MANUAL_PROTECT ? "taken" : "not taken",
	       mode >= 0 && mode & RMIG_KVM_LOG_INITIALLY_SET ? "yes" : "no");
	check(mode == want, "dirty-log mode %d is what KVM offers (%d)", mode, want);

	/* INITIALLY_SET marked every page; start_dirty_log took and cleared
	 * those bits (a peek in manual mode sees none left), and the first
	 * fetch reports what was written since: nothing. */
	if (mode & RMIG_KVM_LOG_MANUAL_PROTECT) {
		rc = raw_get_log(v, S0_ID);
		offered = raw_get_log(v, S3_ID);
		check(!rc && !offered, "start_dirty_log cleared KVM's initial bits (left: %d, %d)",
		      rc, offered);
	}
	memset(bm, 0, sizeof(bm));
	for (int i = 0; i < 2; i++) {
		rc = be->ops->fetch_dirty(be, (size_t)i, bm[i]);
		check(!rc && !count_bits(bm[i], 128),
		      "first fetch, slot %u: %llu of %llu pages dirty (want 0)%s%s",
		      i ? S3_ID : S0_ID, (unsigned long long)count_bits(bm[i], 128),
		      (unsigned long long)npages[i], rc ? ": " : "", rc ? be->err : "");
	}
	/* Second: empty, and the caller's bits stay (OR). */
	for (int i = 0; i < 2; i++) {
		bm[i][0] = 0x8000000000000001ull;
		bm[i][1] = 0;
		rc = be->ops->fetch_dirty(be, (size_t)i, bm[i]);
		check(!rc && bm[i][0] == 0x8000000000000001ull && !bm[i][1],
		      "second fetch, slot %u: nothing new, the caller's bits kept",
		      i ? S3_ID : S0_ID);
	}

	/* A guest write: its page, and at most the code page besides. */
	for (int pass = 1; pass <= 2; pass++) {
		rc = vm_run(v);
		check(rc == 0, "vCPU run %d: wrote gpa 0x%llx and halted (rc %d)", pass,
		      (unsigned long long)(S3_GPA + WRITE_PAGE * PAGE), rc);
		if (mode & RMIG_KVM_LOG_MANUAL_PROTECT)
			check(raw_get_log(v, S3_ID) == 1, "KVM logged the write (peek: 1 page)");
		memset(bm, 0, sizeof(bm));
		rc = be->ops->fetch_dirty(be, 0, bm[0]) | be->ops->fetch_dirty(be, 1, bm[1]);
		check(!rc && bit(bm[1], WRITE_PAGE) && count_bits(bm[1], 128) == 1 &&
			  count_bits(bm[0], 128) == (uint64_t)bit(bm[0], CODE_PAGE),
		      "after guest write %d: slot 3 page 5 dirty (slot 3: %llu pages, slot 0: "
		      "%llu, code page %d)",
		      pass, (unsigned long long)count_bits(bm[1], 128),
		      (unsigned long long)count_bits(bm[0], 128), bit(bm[0], CODE_PAGE));
		memset(bm, 0, sizeof(bm));
		rc = be->ops->fetch_dirty(be, 0, bm[0]) | be->ops->fetch_dirty(be, 1, bm[1]);
		check(!rc && !count_bits(bm[0], 128) && !count_bits(bm[1], 128) &&
			  raw_get_log(v, S3_ID) <= 0,
		      "fetch after that: clean (the fetch cleared the bit and re-protected the "
		      "page)");
	}
	rc = be->ops->fetch_dirty(be, 2, bm[0]);
	check(rc == -EINVAL && sane_err(be->err, "no region 2"), "fetch of region 2: %s", be->err);
	rmig_backend_close(be);
	rc = raw_get_log(v, S0_ID);
	mode = raw_get_log(v, S3_ID);
	check(rc == -ENOENT && mode == -ENOENT,
	      "after close, dirty logging is off on both slots (%d, %d)", rc, mode);
}

static void bad_slot(struct vm *v)
{
	struct rmig_kvm_slot s[2] = { v->slots[0], v->slots[1] };
	struct rmig_kvm_params p = {
		.vm_fd = v->fd, .slots = s, .nslots = 2, .pause = noop, .resume = noop
	};
	struct rmig_backend *be = NULL;
	char err[256];
	int rc;

	/* Slot 3 said to be 64 pages: KVM refuses to resize it in place. */
	s[1].len = 64 * PAGE;
	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_SOURCE, &be, err, sizeof(err));
	check(rc == 0, "backend with a wrong slot size created (KVM is asked later)");
	if (rc)
		return;
	rc = be->ops->start_dirty_log(be);
	check(rc == -EINVAL && sane_err(be->err, "KVM_SET_USER_MEMORY_REGION on slot 3"),
	      "start_dirty_log on a wrong slot fails: %s", be->err);
	check(raw_get_log(v, S0_ID) == -ENOENT, "and slot 0's logging was turned back off");
	rmig_backend_close(be);
}

static void destination(struct vm *v)
{
	struct rmig_kvm_params p = {
		.vm_fd = -1, .slots = v->slots, .nslots = 2, .start = count_start
	};
	struct rmig_region want[2] = {
		{ .id = S3_ID, .page_size = PAGE, .gpa = S3_GPA, .len = S3_PAGES * PAGE },
		{ .id = S0_ID, .page_size = PAGE, .gpa = S0_GPA, .len = S0_PAGES * PAGE },
	};
	struct rmig_backend *be = NULL;
	const struct rmig_region *r;
	size_t n = 0;
	char err[256];
	int rc;

	rc = rmig_kvm_backend_create(&p, RMIG_ROLE_DEST, &be, err, sizeof(err));
	check(rc == 0, "destination backend created: %s", rc ? err : "");
	if (rc)
		return;
	want[0].gpa += PAGE;
	rc = be->ops->prepare_regions(be, want, 2);
	check(rc == -EINVAL && sane_err(be->err, "does not match"),
	      "a layout that differs is refused: %s", be->err);
	want[0].gpa -= PAGE;
	rc = be->ops->prepare_regions(be, want, 2);
	check(!rc && !be->ops->get_regions(be, &r, &n) && n == 2 && r[0].id == S3_ID &&
		  r[0].host == v->mem3 && r[1].id == S0_ID && r[1].host == v->mem0,
	      "the matching layout is taken, in the source's order");
	rc = be->ops->load_state(be, "abcd", 4);
	check(rc == -EINVAL && sane_err(be->err, "no load_state callback"),
	      "device state without a load_state callback is refused: %s", be->err);
	rc = be->ops->load_state(be, "", 0);
	rc = rc ? rc : be->ops->start(be);
	check(!rc && started == 1, "empty state accepted, start called the VMM");
	rmig_backend_close(be);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, ms % 1000 * 1000000 };

	nanosleep(&ts, NULL);
}

/* The CLI form with its vCPU, and its state carried to a second backend. */
static void cli_guest(void)
{
	struct rmig_backend *src = NULL, *dst = NULL, *sim = NULL;
	const struct rmig_region *r;
	struct rmig_guest_stats a, b;
	struct rmig_region layout[2];
	uint64_t *bm[2] = { 0 }, dirty = 0, npages;
	size_t n = 0, len = 0;
	void *blob = NULL;
	char err[256];
	int rc;

	rc = rmig_backend_open("kvm:size=2M,slots=2,dirty-rate=2000", RMIG_ROLE_SOURCE, &src, err,
			       sizeof(err));
	check(rc == 0, "kvm:size=2M,slots=2,dirty-rate=2000 opened: %s", rc ? err : "");
	if (rc)
		return;
	rc = src->ops->get_regions(src, &r, &n);
	check(!rc && n == 2 && r[0].len == 1u << 20 && r[1].gpa == 1u << 20,
	      "two 1 MiB slots, back to back");
	npages = r[0].len / PAGE;
	bm[0] = calloc(npages / 64, 8);
	bm[1] = calloc(npages / 64, 8);
	sleep_ms(300);
	rc = src->ops->guest_stats(src, &a);
	check(!rc && a.running && a.progress > 0, "its vCPU runs and writes (%llu pages)",
	      (unsigned long long)a.progress);
	rc = src->ops->start_dirty_log(src);
	for (int i = 0; i < 2; i++)
		rc |= src->ops->fetch_dirty(src, (size_t)i, bm[i]);
	check(!rc, "dirty log started, first fetch done");
	sleep_ms(500);
	for (int i = 0; i < 2; i++) {
		memset(bm[i], 0, npages / 8);
		rc |= src->ops->fetch_dirty(src, (size_t)i, bm[i]);
		dirty += count_bits(bm[i], npages);
	}
	check(!rc && dirty > 0, "guest writes reach the dirty log: %llu pages in 0.5 s",
	      (unsigned long long)dirty);
	rc = src->ops->pause(src);
	rc |= src->ops->guest_stats(src, &a);
	for (int i = 0; i < 2; i++)
		rc |= src->ops->fetch_dirty(src, (size_t)i, bm[i]);
	sleep_ms(200);
	dirty = 0;
	for (int i = 0; i < 2; i++) {
		memset(bm[i], 0, npages / 8);
		rc |= src->ops->fetch_dirty(src, (size_t)i, bm[i]);
		dirty += count_bits(bm[i], npages);
	}
	rc |= src->ops->guest_stats(src, &b);
	check(!rc && !dirty && !b.running && b.progress == a.progress,
	      "paused: no writes, nothing dirty (%llu pages)", (unsigned long long)dirty);
	rc = src->ops->save_state(src, &blob, &len);
	check(!rc && len > 0, "vCPU state saved: %zu bytes", len);

	rc = rmig_backend_open("kvm", RMIG_ROLE_DEST, &dst, err, sizeof(err));
	check(rc == 0, "destination kvm opened: %s", rc ? err : "");
	if (!rc) {
		memcpy(layout, r, sizeof(layout));
		rc = dst->ops->prepare_regions(dst, layout, 2);
		rc = rc ? rc : dst->ops->get_regions(dst, &r, &n);
		for (size_t i = 0; !rc && i < 2; i++) /* what the migration would copy */
			memcpy(r[i].host, layout[i].host, layout[i].len);
		rc = rc ? rc : dst->ops->load_state(dst, blob, len);
		rc = rc ? rc : dst->ops->start(dst);
		check(!rc, "destination: layout, memory, state, start: %s", rc ? dst->err : "");
		sleep_ms(300);
		rc = dst->ops->guest_stats(dst, &b);
		check(!rc && b.running && b.progress > a.progress,
		      "its vCPU carries on: %llu pages written, %llu at the pause",
		      (unsigned long long)b.progress, (unsigned long long)a.progress);
		rc = dst->ops->load_state(dst, "abcd", 4);
		check(rc == -EINVAL && sane_err(dst->err, "device state"), "bad state refused: %s",
		      dst->err);
		rmig_backend_close(dst);
	}
	free(blob);
	rmig_backend_close(src);
	free(bm[0]);
	free(bm[1]);

	rc = rmig_backend_open("kvm:size=3K", RMIG_ROLE_SOURCE, &src, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "multiple"), "kvm:size=3K refused: %s", err);
	rc = rmig_backend_open("kvm:size=1M,vcpus=2", RMIG_ROLE_SOURCE, &src, err, sizeof(err));
	check(rc == -EINVAL && sane_err(err, "unknown option"), "unknown option refused: %s", err);
	rc =
	    rmig_backend_open("sim:size=1M,dirty-rate=0", RMIG_ROLE_SOURCE, &sim, err, sizeof(err));
	check(!rc && rmig_kvm_dirty_log_mode(sim) == -EINVAL,
	      "rmig_kvm_dirty_log_mode on a sim backend: -EINVAL");
	rmig_backend_close(sim);
}

int main(void)
{
	struct vm v = { .kvm = -1, .fd = -1, .vcpu = -1 };
	struct sigaction sa = { .sa_handler = on_alarm };

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (access("/dev/kvm", F_OK)) {
		printf("SKIP: no /dev/kvm (load kvm and kvm_amd/kvm_intel; run in the rxe VM)\n");
		return 77;
	}
	sigaction(SIGALRM, &sa, NULL);
	if (vm_setup(&v)) {
		printf("FAIL: setting up a VM: %s\n", strerror(errno));
		return 1;
	}
	bad_params(&v);
	source_dirty_log(&v);
	bad_slot(&v);
	destination(&v);
	cli_guest();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
