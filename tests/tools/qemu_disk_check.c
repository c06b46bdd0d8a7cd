/* qemu_disk_check - drives the qemu backend's disk ops against two real
 * QEMUs as the engine would, without the engine (tests/e2e/t_qemu_disk_ops.sh):
 *
 *   qemu_disk_check [options] SRC_SPEC DST_SPEC
 *     e.g. qemu:qmp=src.qmp,disks=all qemu:qmp=dst.qmp,disks=all
 *
 * Opens the source and the destination backends, get_disks on the source,
 * prepare_disks on the destination with that layout, disk_start_dirty,
 * round 1 copies every block (several threads, as the data channels: a
 * zero block through disk_write_zeroes, others through disk_read +
 * disk_write), then --rounds more rounds of disk_fetch_dirty + copy, then
 * disk_flush of every disk. One line per round on stdout:
 * "round N: disk NAME: B blocks (Z zero)".
 *
 * Options:
 *   --rounds N        dirty rounds after round 1 (default 3)
 *   --threads N       copying threads (default 3)
 *   --hook N CMD      run CMD (sh -c) once, after N blocks were copied
 *   --throttle BPS    disk_throttle(BPS) after disk_start_dirty
 *   --before-close CMD  run CMD once the copy is done, backends still open
 *
 * Exit 0 copied; 1 a failure (one line on stderr naming the op); 2 usage;
 * 3 refused before anything was copied (get_disks or prepare_disks).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rmig_backend.h"

#define MAX_THREADS 16

struct opts {
	const char *src, *dst, *hook_cmd, *close_cmd;
	unsigned rounds, threads;
	uint64_t hook_after, throttle;
};

struct copy {
	struct rmig_backend *src, *dst;
	const struct rmig_disk *disk;
	size_t index;
	const uint64_t *bitmap; /* NULL: every block */
	uint64_t nblocks;
	atomic_uint_fast64_t next, blocks, zero;
	atomic_int failed;
	char why[300];
	pthread_mutex_t why_lock;
	const struct opts *o;
};

static atomic_uint_fast64_t copied_total;
static atomic_int hook_ran;

static void usage(void)
{
	fprintf(stderr, "usage: qemu_disk_check [--rounds N] [--threads N] [--hook N CMD] "
			"[--throttle BPS] [--before-close CMD] SRC_SPEC DST_SPEC\n");
	exit(2);
}

static int parse(int argc, char **argv, struct opts *o)
{
	int i = 1;

	*o = (struct opts){ .rounds = 3, .threads = 3 };
	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			o->rounds = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			o->threads = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--throttle") && i + 1 < argc)
			o->throttle = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--before-close") && i + 1 < argc)
			o->close_cmd = argv[++i];
		else if (!strcmp(argv[i], "--hook") && i + 2 < argc) {
			o->hook_after = strtoull(argv[++i], NULL, 0);
			o->hook_cmd = argv[++i];
		} else
			usage();
	}
	if (argc - i != 2 || !o->threads || o->threads > MAX_THREADS)
		usage();
	o->src = argv[i];
	o->dst = argv[i + 1];
	return 0;
}

static void run(const char *what, const char *cmd)
{
	int rc = system(cmd);

	if (rc)
		fprintf(stderr, "qemu_disk_check: %s '%s' exited %d\n", what, cmd, rc);
}

static void maybe_hook(const struct opts *o)
{
	int no = 0;

	if (o->hook_cmd && atomic_load(&copied_total) >= o->hook_after &&
	    atomic_compare_exchange_strong(&hook_ran, &no, 1))
		run("hook", o->hook_cmd);
}

static int is_zero(const void *buf, size_t len)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

static void failed(struct copy *c, const char *op, uint64_t off, int rc)
{
	pthread_mutex_lock(&c->why_lock);
	if (!atomic_exchange(&c->failed, 1))
		snprintf(c->why, sizeof(c->why), "disk %s: %s at offset %" PRIu64 ": %s",
			 c->disk->name, op, off, strerror(-rc));
	pthread_mutex_unlock(&c->why_lock);
}

static int copy_block(struct copy *c, uint64_t b, void *buf)
{
	uint64_t bs = c->disk->block_size, off = b * bs;
	int rc = c->src->ops->disk_read(c->src, c->index, off, buf, bs);

	if (rc) {
		failed(c, "disk_read", off, rc);
		return rc;
	}
	if (is_zero(buf, bs)) {
		rc = c->dst->ops->disk_write_zeroes(c->dst, c->index, off, bs);
		atomic_fetch_add(&c->zero, 1);
	} else
		rc = c->dst->ops->disk_write(c->dst, c->index, off, buf, bs);
	if (rc)
		failed(c, is_zero(buf, bs) ? "disk_write_zeroes" : "disk_write", off, rc);
	atomic_fetch_add(&c->blocks, 1);
	atomic_fetch_add(&copied_total, 1);
	return rc;
}

static void *copier(void *arg)
{
	struct copy *c = arg;
	void *buf = malloc(c->disk->block_size);

	if (!buf) {
		failed(c, "malloc", 0, -ENOMEM);
		return NULL;
	}
	while (!atomic_load(&c->failed)) {
		uint64_t b = atomic_fetch_add(&c->next, 1);

		if (b >= c->nblocks)
			break;
		if (c->bitmap && !(c->bitmap[b / 64] >> (b % 64) & 1))
			continue;
		if (copy_block(c, b, buf))
			break;
		maybe_hook(c->o);
	}
	free(buf);
	return NULL;
}

/* One round over disk index: every block, or those set in bitmap. */
static int copy_disk(struct rmig_backend *src, struct rmig_backend *dst,
		     const struct rmig_disk *disk, size_t index, const uint64_t *bitmap,
		     const struct opts *o, unsigned round)
{
	struct copy c = { .src = src,
			  .dst = dst,
			  .disk = disk,
			  .index = index,
			  .bitmap = bitmap,
			  .nblocks = disk->size / disk->block_size,
			  .o = o };
	pthread_t t[MAX_THREADS];
	unsigned started = 0;

	pthread_mutex_init(&c.why_lock, NULL);
	for (; started < o->threads; started++)
		if (pthread_create(&t[started], NULL, copier, &c))
			break;
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	pthread_mutex_destroy(&c.why_lock);
	if (!started || c.failed) {
		fprintf(stderr, "qemu_disk_check: round %u: %s\n", round,
			started ? c.why : "no threads");
		return 1;
	}
	printf("round %u: disk %s: %" PRIu64 " blocks (%" PRIu64 " zero)\n", round, disk->name,
	       (uint64_t)c.blocks, (uint64_t)c.zero);
	fflush(stdout);
	return 0;
}

static int dirty_round(struct rmig_backend *src, struct rmig_backend *dst,
		       const struct rmig_disk *disks, size_t n, const struct opts *o,
		       unsigned round)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < n; i++) {
		uint64_t words = (disks[i].size / disks[i].block_size + 63) / 64;
		uint64_t *bitmap = calloc(words, 8);

		if (!bitmap)
			return 1;
		rc = src->ops->disk_fetch_dirty(src, i, bitmap);
		if (rc)
			fprintf(stderr, "qemu_disk_check: disk_fetch_dirty %s: %s\n", disks[i].name,
				src->err);
		else
			rc = copy_disk(src, dst, &disks[i], i, bitmap, o, round);
		free(bitmap);
	}
	return rc ? 1 : 0;
}

/* The layout each side reports must agree. */
static int same_layout(const struct rmig_disk *a, size_t na, const struct rmig_disk *b, size_t nb)
{
	if (na != nb) {
		fprintf(stderr,
			"qemu_disk_check: %zu disks at the source, %zu at the destination\n", na,
			nb);
		return 0;
	}
	for (size_t i = 0; i < na; i++)
		if (a[i].id != b[i].id || a[i].size != b[i].size || strcmp(a[i].name, b[i].name)) {
			fprintf(stderr,
				"qemu_disk_check: disk %zu differs: %s/%u/%" PRIu64
				" against %s/%u/%" PRIu64 "\n",
				i, a[i].name, a[i].id, a[i].size, b[i].name, b[i].id, b[i].size);
			return 0;
		}
	return 1;
}

static int open_both(const struct opts *o, struct rmig_backend **src, struct rmig_backend **dst)
{
	char err[300];

	if (rmig_backend_open(o->src, RMIG_ROLE_SOURCE, src, err, sizeof(err))) {
		fprintf(stderr, "qemu_disk_check: opening the source: %s\n", err);
		return 1;
	}
	if (rmig_backend_open(o->dst, RMIG_ROLE_DEST, dst, err, sizeof(err))) {
		fprintf(stderr, "qemu_disk_check: opening the destination: %s\n", err);
		return 1;
	}
	return 0;
}

/* get_disks, prepare_disks: 3 if refused. */
static int layout(struct rmig_backend *src, struct rmig_backend *dst, const struct rmig_disk **d,
		  size_t *n)
{
	const struct rmig_disk *dd;
	size_t dn;

	if (src->ops->get_disks(src, d, n)) {
		fprintf(stderr, "qemu_disk_check: get_disks: %s\n", src->err);
		return 3;
	}
	if (!*n) {
		fprintf(stderr, "qemu_disk_check: the source has no disks to migrate\n");
		return 3;
	}
	for (size_t i = 0; i < *n; i++)
		printf("disk %u: %s, %" PRIu64 " bytes, block %u\n", (*d)[i].id, (*d)[i].name,
		       (*d)[i].size, (*d)[i].block_size);
	if (dst->ops->prepare_disks(dst, *d, *n)) {
		fprintf(stderr, "qemu_disk_check: prepare_disks: %s\n", dst->err);
		return 3;
	}
	if (dst->ops->get_disks(dst, &dd, &dn)) {
		fprintf(stderr, "qemu_disk_check: destination get_disks: %s\n", dst->err);
		return 1;
	}
	return same_layout(*d, *n, dd, dn) ? 0 : 1;
}

static int migrate_disks(struct rmig_backend *src, struct rmig_backend *dst, const struct opts *o)
{
	const struct rmig_disk *d;
	size_t n;
	int rc = layout(src, dst, &d, &n);

	if (rc)
		return rc;
	if (src->ops->disk_start_dirty(src)) {
		fprintf(stderr, "qemu_disk_check: disk_start_dirty: %s\n", src->err);
		return 1;
	}
	if (o->throttle && src->ops->disk_throttle(src, o->throttle)) {
		fprintf(stderr, "qemu_disk_check: disk_throttle: %s\n", src->err);
		return 1;
	}
	for (size_t i = 0; !rc && i < n; i++)
		rc = copy_disk(src, dst, &d[i], i, NULL, o, 1);
	for (unsigned r = 2; !rc && r < o->rounds + 2; r++)
		rc = dirty_round(src, dst, d, n, o, r);
	for (size_t i = 0; !rc && i < n; i++)
		if (dst->ops->disk_flush(dst, i)) {
			fprintf(stderr, "qemu_disk_check: disk_flush %s: %s\n", d[i].name,
				dst->err);
			rc = 1;
		}
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct rmig_backend *src = NULL, *dst = NULL;
	int rc;

	parse(argc, argv, &o);
	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = open_both(&o, &src, &dst);
	if (!rc)
		rc = migrate_disks(src, dst, &o);
	if (o.close_cmd)
		run("before-close", o.close_cmd);
	rmig_backend_close(dst);
	rmig_backend_close(src);
	if (!rc)
		printf("copied\n");
	return rc;
}
