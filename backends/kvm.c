/* kvm.c - guests of a KVM VM: its memory slots, dirty pages from KVM's dirty
 * log. See the kvm block of include/rmig.h for the contract.
 *
 * Two ways in:
 *  - rmig_kvm_backend_create(): a VMM gives its VM fd, slots and callbacks.
 *  - the spec "kvm:size=SIZE[,slots=N,dirty-rate=R]" (source) / "kvm"
 *    (destination), for testing: the backend opens /dev/kvm, creates a VM and
 *    gives it anonymous memory in N equal slots. The source's memory holds a
 *    deterministic pattern (every 8th page zero), so --verify means
 *    something. Without dirty-rate there is no vCPU: nothing writes the
 *    memory, the dirty log stays empty and the device state is empty (which
 *    the sim backend refuses: receive with "kvm"). With dirty-rate, one
 *    vCPU runs a 17-byte 32-bit guest (page 0) that writes a counter into
 *    page after page, R pages/s, in batches that end in HLT; its registers
 *    are the device state, and the destination's vCPU carries on from them.
 *
 * Dirty log: start_dirty_log enables manual protect where offered, then adds
 * KVM_MEM_LOG_DIRTY_PAGES to each slot. fetch_dirty reads KVM_GET_DIRTY_LOG;
 * in manual mode that leaves KVM's bits and the pages' write access alone,
 * so it then clears exactly the bits read with KVM_CLEAR_DIRTY_LOG, which
 * write-protects those pages again before the engine reads them: a later
 * write sets the bit again. Without manual mode GET_DIRTY_LOG does both.
 * With KVM_DIRTY_LOG_INITIALLY_SET every page starts dirty; start_dirty_log
 * reads and clears those bits itself (see there).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "last_error.h"
#include "rmig_backend.h"
#include "rmig_kvm.h"

/* KVM_CLEAR_DIRTY_LOG takes the slot's mmu_lock for its whole range: clear in
 * chunks of 2^18 pages (1 GiB of 4 KiB pages, as QEMU does), skipping clean
 * ones. A multiple of 64, as the API requires. */
#define CLEAR_CHUNK_PAGES (1ull << 18)
#define CLI_SEED 0x6b766d2d67756573ull /* "kvm-gues": the CLI guest's pattern */
#define VCPU_STATE_MAGIC 0x4356564bu   /* "KVVC" */
#define VCPU_BATCH_MAX 4096u	       /* pages per KVM_RUN: bounds how long pause waits */
#define VCPU_MAX_BYTES (3ull << 30)    /* the 32-bit guest stays below KVM's TSS pages */

/* The CLI guest, 32-bit protected mode, flat, no paging. Registers: edi the
 * cursor, esi where it wraps to, ebp the end, ebx the stride, ecx pages to
 * write before HLT, eax the counter written.
 *   loop: inc eax; mov [edi], eax; add edi, ebx; cmp edi, ebp; jb 1f;
 *         mov edi, esi; 1: dec ecx; jnz loop; hlt; jmp loop */
static const uint8_t guest_code[] = { 0x40, 0x89, 0x07, 0x01, 0xdf, 0x39, 0xef, 0x72, 0x02,
				      0x89, 0xf7, 0x49, 0x75, 0xf2, 0xf4, 0xeb, 0xef };

struct vcpu_state { /* the CLI guest's device state; same program both ends */
	uint32_t magic, size;
	uint64_t rate, progress;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
};

struct kvm_guest {
	struct rmig_region regions[RMIG_MAX_REGIONS];
	struct rmig_kvm_slot slots[RMIG_MAX_REGIONS]; /* regions[i] is slots[i] */
	size_t nslots;
	uint64_t *log[RMIG_MAX_REGIONS]; /* KVM_GET_DIRTY_LOG buffer per slot */
	int log_added[RMIG_MAX_REGIONS]; /* we turned logging on: off at destroy */
	int kvm_fd, vm_fd;		 /* kvm_fd: the CLI form's /dev/kvm, else -1 */
	int cli;			 /* the CLI form: VM and memory are ours */
	int prepared;			 /* regions known (source: always) */
	int logging;
	unsigned mode; /* RMIG_KVM_LOG_* */
	uint64_t page;
	struct rmig_kvm_params p; /* the VMM form's callbacks */
	/* The CLI form's vCPU, run by its own thread; lock is held around each
	 * batch, so once pause holds it, the guest writes nothing more. */
	int vcpu_fd;
	struct kvm_run *run;
	size_t run_len;
	pthread_t thread;
	int thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int paused, stop, vcpu_err;
	uint64_t rate, progress;
};

/* Defined at the end; registry.c registers it, rmig_kvm_* recognise it. */
extern const struct rmig_backend_ops rmig_kvm_backend_ops;

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int set_slot(struct kvm_guest *k, size_t i, uint32_t flags)
{
	const struct rmig_kvm_slot *s = &k->slots[i];
	struct kvm_userspace_memory_region r = { .slot = s->slot,
						 .flags = flags,
						 .guest_phys_addr = s->gpa,
						 .memory_size = s->len,
						 .userspace_addr = (uintptr_t)s->host };

	return ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) ? -errno : 0;
}

/* Slots as rmig needs them: sizes and addresses in whole pages, distinct ids
 * (and memory, unless the backend is to map it). */
static int check_slots(struct rmig_backend *be, const struct rmig_kvm_slot *s, size_t n,
		       uint64_t page, int need_host)
{
	if (!s || n == 0 || n > RMIG_MAX_REGIONS) {
		rmig_backend_err(be, "kvm: %zu memory slots, expected 1..%d", s ? n : 0,
				 RMIG_MAX_REGIONS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if ((need_host && !s[i].host) || (uintptr_t)s[i].host % page || !s[i].len ||
		    s[i].len % page || s[i].gpa % page) {
			rmig_backend_err(be,
					 "kvm: slot %u (gpa 0x%llx, %llu bytes at %p) is not in "
					 "whole %llu-byte pages",
					 s[i].slot, (unsigned long long)s[i].gpa,
					 (unsigned long long)s[i].len, s[i].host,
					 (unsigned long long)page);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++)
			if (s[j].slot == s[i].slot) {
				rmig_backend_err(be, "kvm: slot %u is given twice", s[i].slot);
				return -EINVAL;
			}
	}
	return 0;
}

/* Take a slot (already checked) as region i, with its dirty-log buffer. */
static int take_slot(struct rmig_backend *be, struct kvm_guest *k, size_t i,
		     const struct rmig_kvm_slot *s)
{
	k->log[i] = calloc((s->len / k->page + 63) / 64, sizeof(uint64_t));
	if (!k->log[i]) {
		rmig_backend_err(be, "kvm: out of memory for the dirty-log buffers");
		return -ENOMEM;
	}
	k->slots[i] = *s;
	k->regions[i] = (struct rmig_region){ .id = s->slot,
					      .page_size = (uint32_t)k->page,
					      .gpa = s->gpa,
					      .len = s->len,
					      .host = s->host };
	k->nslots = i + 1;
	return 0;
}

static struct kvm_guest *guest_alloc(struct rmig_backend *be)
{
	struct kvm_guest *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->kvm_fd = -1;
	k->vm_fd = -1;
	k->vcpu_fd = -1;
	k->page = (uint64_t)sysconf(_SC_PAGESIZE);
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->cond, NULL);
	be->priv = k;
	return k;
}

static void kvm_destroy(struct rmig_backend *be)
{
	struct kvm_guest *k = be->priv;

	if (!k)
		return;
	if (k->thread_started) {
		pthread_mutex_lock(&k->lock);
		k->stop = 1;
		pthread_cond_broadcast(&k->cond);
		pthread_mutex_unlock(&k->lock);
		pthread_join(k->thread, NULL);
	}
	if (k->run)
		munmap(k->run, k->run_len);
	if (k->vcpu_fd >= 0)
		close(k->vcpu_fd);
	/* A guest that stays here (rolled back) should not keep paying for
	 * the log. Nothing to report it to if this fails. */
	for (size_t i = 0; i < k->nslots; i++)
		if (k->log_added[i])
			set_slot(k, i, k->slots[i].flags);
	if (k->cli) {
		/* The VM first: KVM then no longer maps the memory. */
		if (k->vm_fd >= 0)
			close(k->vm_fd);
		for (size_t i = 0; i < k->nslots; i++)
			munmap(k->slots[i].host, k->slots[i].len);
		if (k->kvm_fd >= 0)
			close(k->kvm_fd);
	}
	for (size_t i = 0; i < k->nslots; i++)
		free(k->log[i]);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->cond);
	free(k);
	be->priv = NULL;
}

/* ---- the VMM form ----------------------------------------------------- */

static int vmm_init(struct rmig_backend *be, const struct rmig_kvm_params *p, enum rmig_role role)
{
	struct kvm_guest *k = guest_alloc(be);
	int rc;

	if (!k)
		return -ENOMEM;
	if (!p) {
		rmig_backend_err(be, "kvm: no parameters");
		return -EINVAL;
	}
	k->p = *p;
	k->p.slots = NULL; /* copied below; the caller's array may go */
	if (role == RMIG_ROLE_SOURCE) {
		if (!p->pause || !p->resume) {
			rmig_backend_err(be, "kvm: the source needs pause and resume callbacks");
			return -EINVAL;
		}
		/* Any KVM fd answers; anything else is ENOTTY or EBADF. */
		if (p->vm_fd < 0 || ioctl(p->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) < 0) {
			rmig_backend_err(be, "kvm: vm_fd %d is not a KVM VM fd: %s", p->vm_fd,
					 p->vm_fd < 0 ? "negative" : strerror(errno));
			return -EBADF;
		}
		k->vm_fd = p->vm_fd;
	} else if (!p->start) {
		rmig_backend_err(be, "kvm: the destination needs a start callback");
		return -EINVAL;
	}
	rc = check_slots(be, p->slots, p->nslots, k->page, 1);
	for (size_t i = 0; !rc && i < p->nslots; i++)
		rc = take_slot(be, k, i, &p->slots[i]);
	k->prepared = role == RMIG_ROLE_SOURCE;
	return rc;
}

int rmig_kvm_backend_create(const struct rmig_kvm_params *p, enum rmig_role role,
			    struct rmig_backend **out, char *err, size_t errlen)
{
	struct rmig_backend *be = calloc(1, sizeof(*be));
	int rc;

	if (!be) {
		if (err && errlen)
			snprintf(err, errlen, "kvm: out of memory");
		return rmig_fail(-ENOMEM, "kvm: out of memory");
	}
	be->ops = &rmig_kvm_backend_ops;
	be->role = role;
	rc = vmm_init(be, p, role);
	if (rc) {
		rmig_fail_msg(rc, be->err);
		if (err && errlen)
			snprintf(err, errlen, "%s", rmig_last_error());
		kvm_destroy(be);
		free(be);
		return rc;
	}
	*out = be;
	return 0;
}

int rmig_kvm_dirty_log_mode(const struct rmig_backend *be)
{
	const struct kvm_guest *k;

	if (!be || be->ops != &rmig_kvm_backend_ops || !be->priv)
		return rmig_fail(-EINVAL, "rmig_kvm_dirty_log_mode: not a kvm backend");
	k = be->priv;
	return k->logging ? (int)k->mode
			  : rmig_fail(-ENODATA, "rmig_kvm_dirty_log_mode: the dirty log "
						"has not started");
}

/* ---- the CLI form: our own VM and memory (and maybe a vCPU, below) ----- */

static int open_vm(struct rmig_backend *be, struct kvm_guest *k)
{
	int v;

	k->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->kvm_fd < 0) {
		int e = errno;

		rmig_backend_err(be, "kvm: /dev/kvm: %s%s", strerror(e),
				 e == ENOENT   ? " (load kvm and kvm-intel/kvm-amd)"
				 : e == EACCES ? " (needs root or the kvm group)"
					       : "");
		/* Not a usage error: this host lacks something. */
		return e == ENOENT ? -ENODEV : -e;
	}
	v = ioctl(k->kvm_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		rmig_backend_err(be, "kvm: /dev/kvm speaks KVM API %d, expected %d", v,
				 KVM_API_VERSION);
		return -ENOTSUP;
	}
	do /* KVM_CREATE_VM may be interrupted while it sets up the MMU */
		k->vm_fd = ioctl(k->kvm_fd, KVM_CREATE_VM, 0);
	while (k->vm_fd < 0 && errno == EINTR);
	if (k->vm_fd < 0) {
		rmig_backend_err(be, "kvm: KVM_CREATE_VM: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

/* Refuse what this host cannot hold (RAM and swap), rather than die later. */
static int check_fits(struct rmig_backend *be, uint64_t bytes)
{
	struct sysinfo si;

	if (!sysinfo(&si) && bytes > ((uint64_t)si.totalram + si.totalswap) * si.mem_unit) {
		rmig_backend_err(be, "kvm: a %llu MiB guest does not fit in this host's memory",
				 (unsigned long long)(bytes >> 20));
		return -ENOMEM;
	}
	return 0;
}

/* Map anonymous memory for slots (their host fields unset) and give it to
 * the VM as its memory slots. */
static int cli_add_slots(struct rmig_backend *be, struct kvm_guest *k, struct rmig_kvm_slot *s,
			 size_t n)
{
	int rc;

	for (size_t i = 0; i < n; i++) {
		void *p = mmap(NULL, s[i].len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (p == MAP_FAILED) {
			rmig_backend_err(be, "kvm: cannot map %llu bytes: %s",
					 (unsigned long long)s[i].len, strerror(errno));
			return -ENOMEM;
		}
		s[i].host = p;
		rc = take_slot(be, k, i, &s[i]);
		if (rc) {
			munmap(p, s[i].len);
			return rc;
		}
		rc = set_slot(k, i, s[i].flags);
		if (rc) {
			rmig_backend_err(be,
					 "kvm: KVM_SET_USER_MEMORY_REGION on slot %u (gpa 0x%llx, "
					 "%llu bytes): %s",
					 s[i].slot, (unsigned long long)s[i].gpa,
					 (unsigned long long)s[i].len, strerror(-rc));
			return rc;
		}
	}
	k->prepared = 1;
	return 0;
}

/* The source's pattern: page p of the guest is zero when p % 8 == 7, else
 * a xorshift stream seeded from p. */
static void cli_fill(struct kvm_guest *k)
{
	uint64_t p = 0;

	for (size_t i = 0; i < k->nslots; i++)
		for (uint64_t off = 0; off < k->slots[i].len; off += k->page, p++) {
			uint64_t *w = (uint64_t *)((char *)k->slots[i].host + off);
			uint64_t st = splitmix64(CLI_SEED ^ p) | 1;

			if (p % 8 == 7)
				continue;
			for (uint64_t j = 0; j < k->page / 8; j++) {
				st ^= st << 13;
				st ^= st >> 7;
				st ^= st << 17;
				w[j] = st;
			}
		}
}

/* The CLI form's options: kvm:size=SIZE[,slots=N,dirty-rate=R]. */
struct cli_args {
	uint64_t size, nslots, rate;
};

static int cli_arg(struct rmig_backend *be, void *state, const char *key, const char *val)
{
	struct cli_args *a = state;

	(void)be;
	if (strcmp(key, "size") == 0)
		return rmig_parse_size(val, &a->size);
	if (strcmp(key, "slots") == 0)
		return rmig_backend_arg_u64(val, 10, 1, RMIG_MAX_REGIONS, &a->nslots);
	if (strcmp(key, "dirty-rate") == 0)
		return rmig_parse_size(val, &a->rate);
	return -ENOENT;
}

/* One batch: the guest writes n pages, then HLT brings KVM_RUN back. */
static int vcpu_batch(struct kvm_guest *k, uint64_t n)
{
	struct kvm_regs regs;
	int rc;

	if (ioctl(k->vcpu_fd, KVM_GET_REGS, &regs))
		return -errno;
	regs.rcx = n;
	if (ioctl(k->vcpu_fd, KVM_SET_REGS, &regs))
		return -errno;
	do
		rc = ioctl(k->vcpu_fd, KVM_RUN, 0);
	while (rc && errno == EINTR);
	if (rc)
		return -errno;
	return k->run->exit_reason == KVM_EXIT_HLT ? 0 : -EIO;
}

static void *vcpu_main(void *arg)
{
	struct kvm_guest *k = arg;
	struct timespec last, now, tick = { 0, 1000000 };
	double owed = 0;

	clock_gettime(CLOCK_MONOTONIC, &last);
	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		uint64_t n;

		while (k->paused && !k->stop) {
			pthread_cond_wait(&k->cond, &k->lock);
			clock_gettime(CLOCK_MONOTONIC, &last);
			owed = 0;
		}
		if (k->stop)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		owed += (double)k->rate * ((double)(now.tv_sec - last.tv_sec) +
					   (double)(now.tv_nsec - last.tv_nsec) / 1e9);
		last = now;
		n = owed > VCPU_BATCH_MAX ? VCPU_BATCH_MAX : (uint64_t)owed;
		if (n) {
			k->vcpu_err = vcpu_batch(k, n);
			if (k->vcpu_err)
				break; /* guest_stats reports it stopped */
			owed -= (double)n;
			k->progress += n;
		}
		pthread_mutex_unlock(&k->lock);
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&k->lock);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

static int vcpu_create(struct rmig_backend *be, struct kvm_guest *k)
{
	int len = ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	void *run;

	k->vcpu_fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, 0);
	if (k->vcpu_fd < 0 || len <= 0) {
		rmig_backend_err(be, "kvm: KVM_CREATE_VCPU: %s", strerror(errno));
		return -errno;
	}
	run = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu_fd, 0);
	if (run == MAP_FAILED) {
		rmig_backend_err(be, "kvm: mapping the vCPU's kvm_run: %s", strerror(errno));
		return -errno;
	}
	k->run = run;
	k->run_len = (size_t)len;
	return 0;
}

static int vcpu_start(struct rmig_backend *be, struct kvm_guest *k)
{
	int rc;

	k->paused = 0;
	rc = pthread_create(&k->thread, NULL, vcpu_main, k);
	if (rc) {
		rmig_backend_err(be, "kvm: cannot start the vCPU thread: %s", strerror(rc));
		return -rc;
	}
	k->thread_started = 1;
	return 0;
}

/* Source: the guest's code in page 0, its registers, and off it goes. */
static int vcpu_boot(struct rmig_backend *be, struct kvm_guest *k, uint64_t size)
{
	struct kvm_segment code = { .base = 0,
				    .limit = 0xffffffff,
				    .selector = 8,
				    .type = 11,
				    .present = 1,
				    .db = 1,
				    .s = 1,
				    .g = 1 };
	struct kvm_segment data = code;
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = 0,
				 .rflags = 2,
				 .rsi = k->page,
				 .rdi = k->page,
				 .rbp = size,
				 .rbx = k->page,
				 .rcx = 1 };
	int rc = vcpu_create(be, k);

	if (rc)
		return rc;
	memcpy(k->slots[0].host, guest_code, sizeof(guest_code));
	data.selector = 16;
	data.type = 3;
	if (ioctl(k->vcpu_fd, KVM_GET_SREGS, &sregs)) {
		rmig_backend_err(be, "kvm: KVM_GET_SREGS: %s", strerror(errno));
		return -errno;
	}
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr0 = (sregs.cr0 | 1) & ~(1ull << 31); /* protected mode, no paging */
	if (ioctl(k->vcpu_fd, KVM_SET_SREGS, &sregs) || ioctl(k->vcpu_fd, KVM_SET_REGS, &regs)) {
		rmig_backend_err(be, "kvm: setting the vCPU's registers: %s", strerror(errno));
		return -errno;
	}
	return vcpu_start(be, k);
}

static int kvm_create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	struct kvm_guest *k = guest_alloc(be);
	struct rmig_kvm_slot s[RMIG_MAX_REGIONS] = { { 0 } };
	uint64_t size = 0, rate = 0;
	unsigned n = 1;
	int rc;

	if (!k)
		return -ENOMEM;
	k->cli = 1;
	if (role == RMIG_ROLE_DEST && *args) {
		rmig_backend_err(be, "kvm: the destination takes no options (the source sends "
				     "the layout)");
		return -EINVAL;
	}
	if (role == RMIG_ROLE_SOURCE) {
		struct cli_args a = { .size = size, .nslots = n, .rate = rate };

		rc = rmig_backend_args_each(
		    be, args, "kvm:size=SIZE[,slots=N,dirty-rate=PAGES_PER_S]", cli_arg, &a);
		if (rc)
			return rc;
		size = a.size;
		n = (unsigned)a.nslots;
		rate = a.rate;
		if (!size) {
			rmig_backend_err(be, "kvm: the source needs a size "
					     "(kvm:size=SIZE[,slots=N,dirty-rate=PAGES_PER_S])");
			return -EINVAL;
		}
		if (size % (k->page * n)) {
			rmig_backend_err(be,
					 "kvm: size %llu is not a non-zero multiple of %u pages "
					 "(kvm:size=SIZE[,slots=N])",
					 (unsigned long long)size, n);
			return -EINVAL;
		}
		if (rate && (size > VCPU_MAX_BYTES || size < 2 * k->page)) {
			rmig_backend_err(be, "kvm: with dirty-rate, size must be 2 pages .. 3 GiB "
					     "(a 32-bit guest)");
			return -EINVAL;
		}
		rc = check_fits(be, size);
		if (rc)
			return rc;
	}
	/* Open the VM now, on both sides: a host without KVM fails before
	 * anything is sent. */
	rc = open_vm(be, k);
	if (rc || role == RMIG_ROLE_DEST)
		return rc;
	for (unsigned i = 0; i < n; i++)
		s[i] = (struct rmig_kvm_slot){ .slot = i, .gpa = i * (size / n), .len = size / n };
	rc = cli_add_slots(be, k, s, n);
	if (rc)
		return rc;
	cli_fill(k);
	k->rate = rate;
	return rate ? vcpu_boot(be, k, size) : 0;
}

/* ---- ops ------------------------------------------------------------------ */

static int kvm_get_regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n)
{
	struct kvm_guest *k = be->priv;

	if (!k->prepared) {
		rmig_backend_err(be, "kvm: no guest memory yet");
		return -ENOENT;
	}
	*r = k->regions;
	*n = k->nslots;
	return 0;
}

/* Manual mode: clear (and so re-protect) exactly the fetched bits. */
static int clear_fetched(struct rmig_backend *be, struct kvm_guest *k, size_t ri, uint64_t npages)
{
	uint64_t *log = k->log[ri];

	for (uint64_t first = 0; first < npages; first += CLEAR_CHUNK_PAGES) {
		uint64_t n =
		    npages - first < CLEAR_CHUNK_PAGES ? npages - first : CLEAR_CHUNK_PAGES;
		uint64_t w0 = first / 64, w1 = (first + n + 63) / 64, w = w0;
		struct kvm_clear_dirty_log c = { .slot = k->slots[ri].slot };

		while (w < w1 && !log[w])
			w++;
		if (w == w1)
			continue; /* clean chunk */
		/* first is a multiple of 64; n is one too unless it ends the slot. */
		c.first_page = first;
		c.num_pages = (uint32_t)n;
		c.dirty_bitmap = &log[w0];
		if (ioctl(k->vm_fd, KVM_CLEAR_DIRTY_LOG, &c)) {
			rmig_backend_err(be,
					 "kvm: KVM_CLEAR_DIRTY_LOG on slot %u, pages %llu+%llu: %s",
					 k->slots[ri].slot, (unsigned long long)first,
					 (unsigned long long)n, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

/* Slot ri's dirty pages into k->log[ri], cleared in KVM. */
static int read_log(struct rmig_backend *be, struct kvm_guest *k, size_t ri)
{
	struct kvm_dirty_log d = { .slot = k->slots[ri].slot, .dirty_bitmap = k->log[ri] };

	if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &d)) {
		int e = errno;

		rmig_backend_err(be, "kvm: KVM_GET_DIRTY_LOG on slot %u: %s%s", d.slot, strerror(e),
				 e == ENOENT  ? " (dirty logging is not on for this slot)"
				 : e == ENXIO ? " (the VM uses the dirty ring, not read here)"
					      : "");
		return -e;
	}
	if (k->mode & RMIG_KVM_LOG_MANUAL_PROTECT)
		return clear_fetched(be, k, ri, k->slots[ri].len / k->page);
	return 0;
}

static int kvm_start_dirty_log(struct rmig_backend *be)
{
	struct kvm_guest *k = be->priv;
	size_t i = 0;
	int offered, rc = 0;

	if (k->logging)
		return 0;
	/* Manual protect: GET_DIRTY_LOG stops re-protecting the whole slot at
	 * every call; we re-protect only what we fetched, chunk by chunk.
	 * INITIALLY_SET: turning the log on does not write-protect all memory
	 * at once (under one lock hold); every page starts dirty instead. Both
	 * must be set before the slots get their dirty bitmaps. */
	offered = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	if (offered > 0 && (offered & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };

		cap.args[0] = (unsigned)offered &
			      (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET);
		if (ioctl(k->vm_fd, KVM_ENABLE_CAP, &cap)) {
			rc = -errno;
			rmig_backend_err(be, "kvm: KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2): %s",
					 strerror(errno));
			goto out;
		}
		k->mode = RMIG_KVM_LOG_MANUAL_PROTECT;
		if (cap.args[0] & KVM_DIRTY_LOG_INITIALLY_SET)
			k->mode |= RMIG_KVM_LOG_INITIALLY_SET;
	}
	for (i = 0; i < k->nslots; i++) {
		if (k->slots[i].flags & KVM_MEM_LOG_DIRTY_PAGES)
			continue; /* already on (the VMM's own use): leave it on */
		rc = set_slot(k, i, k->slots[i].flags | KVM_MEM_LOG_DIRTY_PAGES);
		if (rc) {
			rmig_backend_err(be,
					 "kvm: KVM_SET_USER_MEMORY_REGION on slot %u (adding "
					 "KVM_MEM_LOG_DIRTY_PAGES): %s",
					 k->slots[i].slot, strerror(-rc));
			goto out;
		}
		k->log_added[i] = 1;
	}
	/* The engine sends every page after this call anyway. Handing it
	 * INITIALLY_SET's all-dirty bitmap at the first fetch would send the
	 * whole guest a second time (measured: with a short guest, all of it
	 * inside the downtime), so take and clear those bits now: the first
	 * fetch then holds the writes since this call, as the contract says. */
	for (size_t s = 0; !rc && s < k->nslots && (k->mode & RMIG_KVM_LOG_INITIALLY_SET); s++)
		rc = read_log(be, k, s);
out:
	if (rc) /* all or nothing: the slots done so far go back */
		while (i--)
			if (k->log_added[i] && !set_slot(k, i, k->slots[i].flags))
				k->log_added[i] = 0;
	k->logging = !rc;
	return rc;
}

static int kvm_fetch_dirty(struct rmig_backend *be, size_t ri, uint64_t *bitmap)
{
	struct kvm_guest *k = be->priv;
	int rc;

	if (ri >= k->nslots) {
		rmig_backend_err(be, "kvm: no region %zu (the guest has %zu)", ri, k->nslots);
		return -EINVAL;
	}
	rc = read_log(be, k, ri);
	if (rc)
		return rc;
	/* KVM's bitmap is little-endian longs; ours is native 64-bit words. */
	for (uint64_t w = 0; w < (k->slots[ri].len / k->page + 63) / 64; w++)
		bitmap[w] |= le64toh(k->log[ri][w]);
	return 0;
}

static int callback_err(struct rmig_backend *be, const char *what, int rc)
{
	if (rc > 0) /* a callback that forgot the minus sign still failed */
		rc = -rc;
	rmig_backend_err(be, "kvm: the VMM's %s callback failed: %s", what, strerror(-rc));
	return rc ? rc : -EIO;
}

/* The CLI vCPU: paused once the lock is ours (no batch in flight). */
static int vcpu_set_paused(struct kvm_guest *k, int paused)
{
	pthread_mutex_lock(&k->lock);
	k->paused = paused;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static int kvm_pause(struct rmig_backend *be)
{
	struct kvm_guest *k = be->priv;
	int rc = k->cli ? vcpu_set_paused(k, 1) : k->p.pause(k->p.arg);

	return rc ? callback_err(be, "pause", rc) : 0;
}

static int kvm_resume(struct rmig_backend *be)
{
	struct kvm_guest *k = be->priv;
	int rc = k->cli ? vcpu_set_paused(k, 0) : k->p.resume(k->p.arg);

	return rc ? callback_err(be, "resume", rc) : 0;
}

/* The CLI vCPU's registers (paused: they do not move). */
static int vcpu_save(struct rmig_backend *be, struct kvm_guest *k, void **blob, size_t *len)
{
	struct vcpu_state *st = calloc(1, sizeof(*st));

	if (!st)
		return -ENOMEM;
	st->magic = VCPU_STATE_MAGIC;
	st->size = sizeof(*st);
	st->rate = k->rate;
	pthread_mutex_lock(&k->lock);
	st->progress = k->progress;
	pthread_mutex_unlock(&k->lock);
	if (ioctl(k->vcpu_fd, KVM_GET_REGS, &st->regs) ||
	    ioctl(k->vcpu_fd, KVM_GET_SREGS, &st->sregs)) {
		rmig_backend_err(be, "kvm: reading the vCPU's registers: %s", strerror(errno));
		free(st);
		return -errno;
	}
	*blob = st;
	*len = sizeof(*st);
	return 0;
}

static int vcpu_load(struct rmig_backend *be, struct kvm_guest *k, const void *blob, size_t len)
{
	struct vcpu_state st;
	int rc;

	if (len != sizeof(st)) {
		rmig_backend_err(be, "kvm: device state of %zu bytes, expected none or %zu", len,
				 sizeof(st));
		return -EINVAL;
	}
	memcpy(&st, blob, sizeof(st));
	if (st.magic != VCPU_STATE_MAGIC || st.size != sizeof(st) || !st.rate) {
		rmig_backend_err(be, "kvm: device state is not a kvm:dirty-rate guest's");
		return -EINVAL;
	}
	rc = vcpu_create(be, k);
	if (rc)
		return rc;
	if (ioctl(k->vcpu_fd, KVM_SET_SREGS, &st.sregs) ||
	    ioctl(k->vcpu_fd, KVM_SET_REGS, &st.regs)) {
		rmig_backend_err(be, "kvm: setting the vCPU's registers: %s", strerror(errno));
		return -errno;
	}
	k->rate = st.rate;
	k->progress = st.progress;
	return 0;
}

static int kvm_save_state(struct rmig_backend *be, void **blob, size_t *len)
{
	struct kvm_guest *k = be->priv;
	int rc;

	if (k->cli && k->vcpu_fd >= 0)
		return vcpu_save(be, k, blob, len);
	if (k->cli || !k->p.save_state) {
		/* No vCPU, no device: an empty blob (1 byte allocated, so that
		 * the caller's free and any memcpy see a real pointer). */
		*blob = malloc(1);
		*len = 0;
		return *blob ? 0 : -ENOMEM;
	}
	*blob = NULL;
	*len = 0;
	rc = k->p.save_state(k->p.arg, blob, len);
	if (rc)
		return callback_err(be, "save_state", rc);
	if (!*blob && *len) {
		rmig_backend_err(be, "kvm: the VMM's save_state gave %zu bytes but no buffer",
				 *len);
		return -EINVAL;
	}
	if (!*blob)
		return (*blob = malloc(1)) ? 0 : -ENOMEM;
	return 0;
}

/* Destination: the VMM's slots (or, CLI form, new ones) for the source's
 * layout, in the layout's order. */
static int kvm_prepare_regions(struct rmig_backend *be, const struct rmig_region *l, size_t n)
{
	struct kvm_guest *k = be->priv;
	struct rmig_kvm_slot want[RMIG_MAX_REGIONS];
	uint64_t total = 0;
	int rc;

	if (k->prepared) {
		rmig_backend_err(be, "kvm: regions already prepared");
		return -EBUSY;
	}
	if (n == 0 || n > RMIG_MAX_REGIONS) {
		rmig_backend_err(be, "kvm: %zu regions, expected 1..%d", n, RMIG_MAX_REGIONS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (l[i].page_size != k->page) {
			rmig_backend_err(
			    be,
			    "kvm: region %u has %u-byte pages, KVM here logs %llu-byte "
			    "pages",
			    l[i].id, l[i].page_size, (unsigned long long)k->page);
			return -EINVAL;
		}
		want[i] =
		    (struct rmig_kvm_slot){ .slot = l[i].id, .gpa = l[i].gpa, .len = l[i].len };
		total += l[i].len;
	}
	if (k->cli) {
		rc = check_slots(be, want, n, k->page, 0);
		if (!rc)
			rc = check_fits(be, total);
		if (!rc)
			rc = cli_add_slots(be, k, want, n);
		return rc;
	}
	if (n != k->nslots) {
		rmig_backend_err(be, "kvm: the source has %zu memory slots, this VM %zu", n,
				 k->nslots);
		return -EINVAL;
	}
	{
		struct rmig_kvm_slot mine[RMIG_MAX_REGIONS];
		uint64_t *logs[RMIG_MAX_REGIONS];

		for (size_t i = 0; i < n; i++) {
			size_t j = 0;

			while (j < k->nslots && k->slots[j].slot != want[i].slot)
				j++;
			if (j == k->nslots || k->slots[j].gpa != want[i].gpa ||
			    k->slots[j].len != want[i].len) {
				rmig_backend_err(
				    be,
				    "kvm: the source's slot %u (gpa 0x%llx, %llu bytes) does not "
				    "match a slot of this VM",
				    want[i].slot, (unsigned long long)want[i].gpa,
				    (unsigned long long)want[i].len);
				return -EINVAL;
			}
			mine[i] = k->slots[j];
			logs[i] = k->log[j];
		}
		for (size_t i = 0; i < n; i++) {
			k->slots[i] = mine[i];
			k->log[i] = logs[i];
			k->regions[i] = (struct rmig_region){ .id = mine[i].slot,
							      .page_size = (uint32_t)k->page,
							      .gpa = mine[i].gpa,
							      .len = mine[i].len,
							      .host = mine[i].host };
		}
	}
	k->prepared = 1;
	return 0;
}

static int kvm_load_state(struct rmig_backend *be, const void *blob, size_t len)
{
	struct kvm_guest *k = be->priv;
	int rc;

	if (k->cli)
		return len ? vcpu_load(be, k, blob, len) : 0;
	if (!k->p.load_state) {
		if (len) {
			rmig_backend_err(be,
					 "kvm: the source sent %zu bytes of device state and there "
					 "is no load_state callback",
					 len);
			return -EINVAL;
		}
		return 0;
	}
	rc = k->p.load_state(k->p.arg, blob, len);
	return rc ? callback_err(be, "load_state", rc) : 0;
}

static int kvm_start(struct rmig_backend *be)
{
	struct kvm_guest *k = be->priv;
	int rc;

	if (k->cli) /* without a vCPU there is nothing to run */
		return k->vcpu_fd >= 0 && !k->thread_started ? vcpu_start(be, k) : 0;
	rc = k->p.start(k->p.arg);
	return rc ? callback_err(be, "start", rc) : 0;
}

/* The CLI vCPU only: running, and how many pages it has written. */
static int kvm_guest_stats(struct rmig_backend *be, struct rmig_guest_stats *st)
{
	struct kvm_guest *k = be->priv;

	if (!k->cli || k->vcpu_fd < 0) {
		rmig_backend_err(be, "kvm: no vCPU of ours to report on");
		return -ENOTSUP;
	}
	pthread_mutex_lock(&k->lock);
	st->running = k->thread_started && !k->paused && !k->stop && !k->vcpu_err;
	st->progress = k->progress;
	pthread_mutex_unlock(&k->lock);
	return 0;
}

const struct rmig_backend_ops rmig_kvm_backend_ops = {
	.size = sizeof(struct rmig_backend_ops),
	.name = "kvm",
	.create = kvm_create,
	.destroy = kvm_destroy,
	.get_regions = kvm_get_regions,
	.start_dirty_log = kvm_start_dirty_log,
	.fetch_dirty = kvm_fetch_dirty,
	.pause = kvm_pause,
	.resume = kvm_resume,
	.save_state = kvm_save_state,
	.prepare_regions = kvm_prepare_regions,
	.load_state = kvm_load_state,
	.start = kvm_start,
	.guest_stats = kvm_guest_stats,
};
