/* sim_disk.h - the sim backend's disk: one disk in a file (disk-file=PATH)
 * or in anonymous memory (a memfd), a writer thread writing 4 KiB at a set
 * rate, dirt tracked per block in an atomic bitmap. sim.c owns one and
 * forwards the backend's disk ops and the guest's pause/resume to it. */
#ifndef RMIG_SIM_DISK_H
#define RMIG_SIM_DISK_H

#include <stdint.h>

#include "rmig_backend.h"

/* What the spec says (sim.c parses it). */
struct sim_disk_spec {
	uint64_t size;	   /* disk=SIZE: a new disk of this size (0: none, or the file's) */
	char *file;	   /* disk-file=PATH (malloc'd), NULL: memory */
	uint64_t rate;	   /* disk-write-rate: 4 KiB writes per second */
	uint64_t block;	   /* disk-block: block size (default 64 KiB) */
	unsigned fill_pct; /* disk-fill: share of blocks a new disk starts with data in */
	uint64_t seed;
	int overcommit; /* overcommit=1: a disk in memory may exceed RAM + swap */
	/* TEST ONLY (disk-fail, disk-lie): reads fail with EIO once the guest is
	 * paused (fail_paused) or from the fail_after-th read on; lie 4 KiB
	 * writes at the first fetch of the dirty log are not reported. */
	int fail_paused;
	uint64_t fail_after, lie;
};

struct sim_disk;

/* Source: open or create the disk and start its writer (paused until
 * sim_disk_resume). NULL in *out and 0 if the spec names no disk. */
int sim_disk_create(struct rmig_backend *be, const struct sim_disk_spec *spec,
		    struct sim_disk **out);
/* Destination: the disk the source has, in spec->file or in memory; its
 * writer starts with sim_disk_resume. */
int sim_disk_prepare(struct rmig_backend *be, const struct sim_disk_spec *spec,
		     const struct rmig_disk *layout, size_t count, struct sim_disk **out);
void sim_disk_destroy(struct sim_disk *d);
/* A dry run: would sim_disk_prepare take this? Nothing opened is kept. */
int sim_disk_check(struct rmig_backend *be, const struct sim_disk_spec *spec,
		   const struct rmig_disk *layout, size_t count);
/* Destination, at start: the disk-file can be opened for writing and is a
 * file or a block device (else one line in be->err). */
int sim_disk_check_file(struct rmig_backend *be, const char *path);

const struct rmig_disk *sim_disk_desc(struct sim_disk *d);
void sim_disk_pause(struct sim_disk *d);
void sim_disk_resume(struct sim_disk *d);
uint64_t sim_disk_writes(struct sim_disk *d);

/* The backend's disk ops, for disk index 0. */
void sim_disk_start_dirty(struct sim_disk *d);
void sim_disk_fetch_dirty(struct sim_disk *d, uint64_t *bitmap);
int sim_disk_read(struct sim_disk *d, uint64_t off, void *buf, size_t len);
int sim_disk_write(struct sim_disk *d, uint64_t off, const void *buf, size_t len);
int sim_disk_write_zeroes(struct sim_disk *d, uint64_t off, uint64_t len);
int sim_disk_flush(struct sim_disk *d);
void sim_disk_throttle(struct sim_disk *d, uint64_t bytes_per_s);

#endif
