/* sim_disk.c - the sim backend's disk (see sim_disk.h).
 *
 * The disk is a file descriptor: a file the operator names (so that a test
 * can compare the images byte for byte, or put one on a read-only mount)
 * or a memfd. The writer pwrite()s 4 KiB of fresh data at a random offset,
 * then sets the block's dirty bit (release): a fetch that clears the bit
 * and then reads the block sees that write or a later bit.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "sim_disk.h"
#include "sim_rng.h"
#include "storage_id.h"

#define WRITE_BYTES 4096u
#define MAX_DISK (1ull << 46) /* the wire's limit (RMIG_MAX_DISK_BYTES): 64 TiB */

struct sim_disk {
	struct rmig_disk desc;
	int fd;
	uint64_t nblocks;
	atomic_uint_fast64_t *dirty;
	/* writer */
	pthread_t writer;
	int writer_started;
	pthread_mutex_t lock; /* held by the writer while it writes a batch */
	pthread_cond_t cond;
	int paused, stop;
	uint64_t rate, limit_bps, rng;
	atomic_uint_fast64_t writes;
	/* test only */
	int fail_paused;
	uint64_t fail_after, lie;
	atomic_uint_fast64_t reads, stores; /* the engine's, for fail_after */
	int lied;
};

/* Which storage this is: the host (boot id), the file's device and inode.
 * The same file on both ends of a migration on one host - or on shared
 * storage seen by one kernel - then has the same identity. */
static void file_identity(int fd, uint8_t id[16])
{
	struct stat st;

	if (!fstat(fd, &st))
		rmig_storage_id(&st, id);
}

/* One guest write; its block's dirty bit unless report is 0 (disk-lie). */
static void write_at(struct sim_disk *d, int report)
{
	uint64_t r = xorshift64(&d->rng),
		 off = (r >> 8) % (d->desc.size / WRITE_BYTES) * WRITE_BYTES;
	uint64_t buf[WRITE_BYTES / 8], n = atomic_fetch_add(&d->writes, 1) + 1;
	uint64_t blk = off / d->desc.block_size;

	for (unsigned i = 0; i < WRITE_BYTES / 8; i++)
		buf[i] = n * 0x9e3779b97f4a7c15ull + i;
	if (pwrite(d->fd, buf, sizeof(buf), (off_t)off) != (ssize_t)sizeof(buf))
		return; /* a guest's failed write: nothing changed to track */
	if (!report) {
		fprintf(stderr, "sim: disk-lie: block %llu written unreported\n",
			(unsigned long long)blk);
		return;
	}
	atomic_fetch_or_explicit(&d->dirty[blk / 64], 1ull << (blk % 64), memory_order_release);
}

static double elapsed_s(struct timespec *last)
{
	struct timespec now;
	double s;

	clock_gettime(CLOCK_MONOTONIC, &now);
	s = (double)(now.tv_sec - last->tv_sec) + (now.tv_nsec - last->tv_nsec) / 1e9;
	*last = now;
	return s;
}

static void *writer_main(void *arg)
{
	struct sim_disk *d = arg;
	struct timespec last, tick = { 0, 1000000 };
	double owed = 0;

	clock_gettime(CLOCK_MONOTONIC, &last);
	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		double rate = (double)d->rate;

		while (d->paused && !d->stop) {
			pthread_cond_wait(&d->cond, &d->lock);
			elapsed_s(&last);
			owed = 0;
		}
		if (d->limit_bps && rate > (double)d->limit_bps / WRITE_BYTES)
			rate = (double)d->limit_bps / WRITE_BYTES;
		owed += rate * elapsed_s(&last);
		if (owed > 1e4) /* bound a batch so that pause never waits long */
			owed = 1e4;
		for (; owed >= 1 && !d->stop; owed -= 1)
			write_at(d, 1);
		pthread_mutex_unlock(&d->lock);
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

static struct sim_disk *disk_new(void)
{
	struct sim_disk *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->fd = -1;
	d->paused = 1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	return d;
}

/* The largest power of two up to want that divides size (>= 4 KiB). */
static uint64_t block_for(uint64_t size, uint64_t want)
{
	uint64_t bs = want;

	while (bs > 4096 && size % bs)
		bs /= 2;
	return bs;
}

static int open_file(struct rmig_backend *be, struct sim_disk *d, const struct sim_disk_spec *sp,
		     int create)
{
	int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);

	d->fd = open(sp->file, flags, 0600);
	if (d->fd < 0) {
		int err = errno;

		rmig_backend_err(be, "sim: disk file %s: %s%s", sp->file, strerror(err),
				 err == EROFS || err == EACCES ? " (the disk must be writable)"
							       : "");
		return -err;
	}
	if (create && ftruncate(d->fd, (off_t)sp->size)) {
		int err = errno;

		rmig_backend_err(be, "sim: disk file %s: %s", sp->file, strerror(err));
		return -err;
	}
	file_identity(d->fd, d->desc.identity);
	return 0;
}

static int open_memory(struct rmig_backend *be, struct sim_disk *d, uint64_t size)
{
	d->fd = memfd_create("sim-disk", MFD_CLOEXEC);
	if (d->fd < 0 || ftruncate(d->fd, (off_t)size)) {
		int err = errno;

		rmig_backend_err(be, "sim: disk of %llu bytes in memory: %s",
				 (unsigned long long)size, strerror(err));
		return -err;
	}
	return 0; /* identity all zero: memory is nobody else's */
}

/* The size of a file, or of a block device (whose st_size is 0). */
static int file_size(struct rmig_backend *be, struct sim_disk *d, const char *file, uint64_t *size)
{
	struct stat st;
	off_t end;

	if (fstat(d->fd, &st)) {
		int err = errno;

		rmig_backend_err(be, "sim: disk file %s: %s", file, strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		rmig_backend_err(be, "sim: disk file %s is neither a file nor a block device",
				 file);
		return -EINVAL;
	}
	end = S_ISBLK(st.st_mode) ? lseek(d->fd, 0, SEEK_END) : st.st_size;
	if (end < 0) {
		int err = errno;

		rmig_backend_err(be, "sim: disk file %s: %s", file, strerror(err));
		return -err;
	}
	*size = (uint64_t)end;
	return 0;
}

int sim_disk_check_file(struct rmig_backend *be, const char *path)
{
	struct sim_disk d = { .fd = open(path, O_RDWR | O_CLOEXEC) };
	uint64_t size;
	int rc;

	if (d.fd < 0) {
		int err = errno;

		rmig_backend_err(be, "sim: disk file %s: %s%s", path, strerror(err),
				 err == EROFS || err == EACCES ? " (the disk must be writable)"
							       : "");
		return -err;
	}
	rc = file_size(be, &d, path, &size);
	close(d.fd);
	return rc;
}

/* A disk in memory (a memfd) must fit where a guest's memory must. */
static int check_memory(struct rmig_backend *be, uint64_t size, int overcommit)
{
	struct sysinfo si;
	uint64_t total;

	if (overcommit || sysinfo(&si))
		return 0;
	total = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
	if (size <= total)
		return 0;
	rmig_backend_err(be,
			 "sim: a disk of %llu MiB in memory does not fit in this host's %llu MiB "
			 "of memory and swap (give disk-file=PATH, or overcommit=1)",
			 (unsigned long long)(size >> 20), (unsigned long long)(total >> 20));
	return -ENOMEM;
}

/* A new disk: fill_pct of its blocks with data, the rest holes. */
static int fill(struct rmig_backend *be, struct sim_disk *d, const struct sim_disk_spec *sp)
{
	uint64_t bs = d->desc.block_size, rng = sp->seed * 0x2545f4914f6cdd1dull | 1;
	uint64_t *buf = malloc(bs);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t b = 0; b < d->nblocks && !rc; b++) {
		if (xorshift64(&rng) % 100 >= sp->fill_pct)
			continue;
		for (uint64_t i = 0; i < bs / 8; i++)
			buf[i] = xorshift64(&rng);
		if (pwrite(d->fd, buf, bs, (off_t)(b * bs)) != (ssize_t)bs) {
			rmig_backend_err(be, "sim: filling the disk: %s", strerror(errno));
			rc = -EIO;
		}
	}
	free(buf);
	return rc;
}

static int finish(struct rmig_backend *be, struct sim_disk *d, uint64_t seed)
{
	d->nblocks = d->desc.size / d->desc.block_size;
	d->dirty = calloc((d->nblocks + 63) / 64, sizeof(*d->dirty));
	d->rng = (seed ^ 0xd15c) * 0x9e3779b97f4a7c15ull | 1;
	if (!d->dirty) {
		rmig_backend_err(be, "sim: out of memory for the disk's bitmap");
		return -ENOMEM;
	}
	if (pthread_create(&d->writer, NULL, writer_main, d)) {
		rmig_backend_err(be, "sim: cannot start the disk's writer");
		return -EAGAIN;
	}
	d->writer_started = 1;
	return 0;
}

static int check_size(struct rmig_backend *be, uint64_t size, const char *what)
{
	if (size < 4096 || size % 4096) {
		rmig_backend_err(be, "sim: %s of %llu bytes is not a non-zero multiple of 4 KiB",
				 what, (unsigned long long)size);
		return -EINVAL;
	}
	if (size > MAX_DISK) {
		rmig_backend_err(be,
				 "sim: %s of %llu GiB is larger than the 64 TiB a disk may have",
				 what, (unsigned long long)(size >> 30));
		return -EFBIG;
	}
	return 0;
}

int sim_disk_create(struct rmig_backend *be, const struct sim_disk_spec *sp, struct sim_disk **out)
{
	struct sim_disk *d;
	int create = 0, rc;
	uint64_t size = sp->size;

	*out = NULL;
	if (!sp->size && !sp->file)
		return 0;
	/* Nothing is made before the spec is known to be good. */
	rc = sp->size ? check_size(be, sp->size, "disk=") : 0;
	if (!rc && !sp->file)
		rc = check_memory(be, sp->size, sp->overcommit);
	if (rc)
		return rc;
	d = disk_new();
	if (!d)
		return -ENOMEM;
	*out = d;
	if (sp->file) {
		create = access(sp->file, F_OK) != 0 && sp->size;
		rc = open_file(be, d, sp, create);
		if (!rc && !create)
			rc = file_size(be, d, sp->file, &size);
		if (!rc && sp->size && size != sp->size) {
			rmig_backend_err(be, "sim: disk file %s is %llu bytes, disk= says %llu",
					 sp->file, (unsigned long long)size,
					 (unsigned long long)sp->size);
			rc = -EINVAL;
		}
	} else {
		create = 1;
		rc = open_memory(be, d, size);
	}
	if (!rc)
		rc = check_size(be, size, "the disk");
	if (rc)
		return rc;
	/* desc.identity is open_file's (all zero for memory). */
	d->desc.id = 0;
	d->desc.size = size;
	d->desc.block_size = (uint32_t)block_for(size, sp->block);
	snprintf(d->desc.name, sizeof(d->desc.name), "disk0");
	d->rate = sp->rate;
	d->fail_paused = sp->fail_paused;
	d->fail_after = sp->fail_after;
	d->lie = sp->lie;
	d->nblocks = size / d->desc.block_size;
	rc = create ? fill(be, d, sp) : 0;
	if (!rc)
		rc = finish(be, d, sp->seed);
	if (rc && create && sp->file)
		unlink(sp->file); /* ours, half made */
	return rc;
}

/* A dry run: what sim_disk_prepare would refuse, nothing kept open. */
int sim_disk_check(struct rmig_backend *be, const struct sim_disk_spec *sp,
		   const struct rmig_disk *layout, size_t count)
{
	static const uint8_t unknown[sizeof(((struct rmig_disk *)0)->identity)];
	struct sim_disk d = { .fd = -1 };
	uint64_t size = 0;
	int rc;

	if (count != 1) {
		rmig_backend_err(be, "sim: takes one disk, the source has %zu", count);
		return -EINVAL;
	}
	if (!sp->file)
		return check_memory(be, layout[0].size, sp->overcommit);
	rc = open_file(be, &d, sp, 0);
	if (!rc)
		rc = file_size(be, &d, sp->file, &size);
	if (!rc && size != layout[0].size) {
		rmig_backend_err(be, "sim: disk %s: %s is %llu bytes, the source's is %llu",
				 layout[0].name, sp->file, (unsigned long long)size,
				 (unsigned long long)layout[0].size);
		rc = -EINVAL;
	}
	if (!rc && memcmp(layout[0].identity, unknown, sizeof(unknown)) &&
	    !memcmp(d.desc.identity, layout[0].identity, sizeof(d.desc.identity))) {
		rmig_backend_err(be, "sim: disk %s: %s is the source's own storage", layout[0].name,
				 sp->file);
		rc = -EEXIST;
	}
	if (d.fd >= 0)
		close(d.fd);
	return rc;
}

int sim_disk_prepare(struct rmig_backend *be, const struct sim_disk_spec *sp,
		     const struct rmig_disk *layout, size_t count, struct sim_disk **out)
{
	struct sim_disk *d;
	uint64_t size = layout[0].size;
	int rc;

	*out = NULL;
	if (count != 1) {
		rmig_backend_err(be, "sim: takes one disk, the source has %zu", count);
		return -EINVAL;
	}
	d = disk_new();
	if (!d)
		return -ENOMEM;
	*out = d;
	rc = sp->file ? open_file(be, d, sp, 0) : check_memory(be, size, sp->overcommit);
	if (!rc && !sp->file)
		rc = open_memory(be, d, size);
	if (!rc && sp->file)
		rc = file_size(be, d, sp->file, &size);
	if (!rc && size != layout[0].size) {
		rmig_backend_err(be, "sim: disk %s: %s is %llu bytes, the source's is %llu",
				 layout[0].name, sp->file, (unsigned long long)size,
				 (unsigned long long)layout[0].size);
		rc = -EINVAL;
	}
	if (rc)
		return rc;
	d->desc.id = layout[0].id;
	d->desc.size = size;
	d->desc.block_size = layout[0].block_size;
	memcpy(d->desc.name, layout[0].name, sizeof(d->desc.name));
	d->desc.name[sizeof(d->desc.name) - 1] = 0;
	d->fail_after = sp->fail_after; /* test only: the engine's writes fail */
	return finish(be, d, sp->seed);
}

void sim_disk_destroy(struct sim_disk *d)
{
	if (!d)
		return;
	if (d->writer_started) {
		pthread_mutex_lock(&d->lock);
		d->stop = 1;
		pthread_cond_broadcast(&d->cond);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->writer, NULL);
	}
	if (d->fd >= 0)
		close(d->fd);
	free(d->dirty);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}

const struct rmig_disk *sim_disk_desc(struct sim_disk *d)
{
	return &d->desc;
}

void sim_disk_pause(struct sim_disk *d)
{
	pthread_mutex_lock(&d->lock); /* waits for a batch in progress */
	d->paused = 1;
	pthread_mutex_unlock(&d->lock);
}

void sim_disk_resume(struct sim_disk *d)
{
	pthread_mutex_lock(&d->lock);
	d->paused = 0;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

uint64_t sim_disk_writes(struct sim_disk *d)
{
	return atomic_load(&d->writes);
}

void sim_disk_start_dirty(struct sim_disk *d)
{
	for (uint64_t w = 0; w < (d->nblocks + 63) / 64; w++)
		atomic_store(&d->dirty[w], 0);
}

void sim_disk_fetch_dirty(struct sim_disk *d, uint64_t *bitmap)
{
	if (d->lie && !d->lied) {
		pthread_mutex_lock(&d->lock);
		for (uint64_t i = 0; i < d->lie; i++)
			write_at(d, 0);
		d->lied = 1;
		pthread_mutex_unlock(&d->lock);
	}
	for (uint64_t w = 0; w < (d->nblocks + 63) / 64; w++)
		if (atomic_load_explicit(&d->dirty[w], memory_order_relaxed))
			bitmap[w] |=
			    atomic_exchange_explicit(&d->dirty[w], 0, memory_order_acquire);
}

/* A short read or write is an error: whole blocks are asked for, inside the disk. */
int sim_disk_read(struct sim_disk *d, uint64_t off, void *buf, size_t len)
{
	ssize_t n;

	if ((d->fail_after && atomic_fetch_add(&d->reads, 1) + 1 >= d->fail_after) ||
	    (d->fail_paused && __atomic_load_n(&d->paused, __ATOMIC_ACQUIRE)))
		return -EIO;
	n = pread(d->fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

int sim_disk_write(struct sim_disk *d, uint64_t off, const void *buf, size_t len)
{
	ssize_t n;

	if (d->fail_after && atomic_fetch_add(&d->stores, 1) + 1 >= d->fail_after)
		return -EIO;
	n = pwrite(d->fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

/* A hole where the file system can punch one, else written zeroes. */
int sim_disk_write_zeroes(struct sim_disk *d, uint64_t off, uint64_t len)
{
	static const char zero[65536];

	if (!fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		return 0;
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < sizeof(zero) ? (size_t)(len - done) : sizeof(zero);
		int rc = sim_disk_write(d, off + done, zero, n);

		if (rc)
			return rc;
		done += n;
	}
	return 0;
}

int sim_disk_flush(struct sim_disk *d)
{
	return fdatasync(d->fd) ? -errno : 0;
}

void sim_disk_throttle(struct sim_disk *d, uint64_t bytes_per_s)
{
	pthread_mutex_lock(&d->lock);
	d->limit_bps = bytes_per_s;
	pthread_mutex_unlock(&d->lock);
}
