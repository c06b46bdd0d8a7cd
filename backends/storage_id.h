/* storage_id.h - which storage a disk is, for struct rmig_disk's identity:
 * a hash of this host's boot id and the file's device and inode. The same
 * file on both ends of a migration on one host (or on storage that one
 * kernel sees under both paths) has the same identity, and copying a disk
 * onto itself is refused by it. Header-only, static: the qemu module and
 * sim's disk each get their copy. Include <xxhash.h> first (the module
 * with XXH_INLINE_ALL: it links no libxxhash). */
#ifndef RMIG_STORAGE_ID_H
#define RMIG_STORAGE_ID_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static inline void rmig_storage_id(const struct stat *st, uint8_t id[16])
{
	char boot[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	uint64_t key[2] = { (uint64_t)st->st_dev, (uint64_t)st->st_ino }, h[2];

	if (f) {
		if (!fgets(boot, sizeof(boot), f))
			boot[0] = 0;
		fclose(f);
	}
	h[0] = XXH3_64bits_withSeed(key, sizeof(key), XXH3_64bits(boot, strlen(boot)));
	h[1] = XXH3_64bits_withSeed(key, sizeof(key), h[0]);
	memcpy(id, h, 16);
}

#endif
