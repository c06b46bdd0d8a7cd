/* qemu_disk.c - the qemu backend's disks, through QEMU's own NBD server
 * and libnbd (spec: qemu:qmp=PATH,disks=all or disks=ID+ID...).
 *
 * Which disks: a disk is named by its drive id (query-block's "device",
 * -drive id=) or, for a -blockdev without one, by its guest device's id
 * (-device ...,id=ID: query-block's "qdev" /machine/peripheral/ID/...);
 * disks=ID matches either. disks=all takes every device with a writable
 * image, in query-block's order; disks=ID+ID takes those, in that order,
 * and refuses one that is missing, empty or read-only. A disk's id is its
 * index in that order: give both QEMUs the same disks (and both sides the
 * same disks=) and the ids agree; the destination matches by name anyway.
 *
 * Source: a dirty bitmap rmig-K per disk (64 KiB granularity, the block
 * size), an NBD server on a unix socket in a private directory, and a
 * read-only export rmig-dI of each disk's node that POOL libnbd handles
 * read from. Each fetch of the dirty log rotates the bitmap (see
 * fetch_dirty), exports the frozen one and reads its extents through the
 * qemu:dirty-bitmap:rmig-K meta context. Destination: a writable export
 * rmig-wI of each disk (QEMU activates an incoming node for an export)
 * that the engine writes through.
 *
 * Everything rmig adds to QEMU goes again in release(): on destroy, before
 * the destination QEMU runs the guest, before the source starts over; with
 * QEMU gone it stops asking at the first dead answer. QEMU 7.2 lets a
 * source node with a read-only export be inactivated at the end of its
 * migration, and reads through the export still work after it (the
 * engine's audit), so the source keeps its exports until destroy. A later
 * QEMU that refuses that would need release() at the pause, after the last
 * blocks were read and before migrate-continue.
 */
#include <errno.h>
#include <libnbd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL /* the module links no libxxhash */
#include <xxhash.h>

#include "qemu_internal.h"
#include "storage_id.h"

#define DISK_BLOCK (64u << 10)	 /* the block size and the bitmaps' granularity */
#define POOL 4			 /* NBD handles per disk: reads come from several threads */
#define NBD_IO_MAX (32u << 20)	 /* QEMU's NBD server takes 32 MiB per request */
#define STATUS_SPAN (1ull << 30) /* bytes asked per NBD_CMD_BLOCK_STATUS */
#define ZERO_SPAN (1ull << 30)	 /* bytes per NBD_CMD_WRITE_ZEROES (32-bit lengths) */
#define EXPORT_GONE_MS 5000	 /* a deleted export's clients leave */
#define DIRTY_CONTEXT "qemu:dirty-bitmap:"
#define NAME_LEN 32 /* struct rmig_disk's name */

struct nbd_conn {
	pthread_mutex_t lock;
	struct nbd_handle *h;
};

struct qdisk {
	char node[128];	  /* its root node: block-export-add, the bitmaps */
	char device[64];  /* block_set_io_throttle's device ... */
	char qdev[160];	  /* ... or id, which a -blockdev disk needs */
	json_t *limits;	  /* source: its I/O limits before rmig's throttle */
	int throttled;	  /* source: rmig's limit is set */
	unsigned gen;	  /* source: rmig-GEN records writes (0: no bitmap) */
	int exported;	  /* rmig-dI (source) or rmig-wI (destination) exists */
	atomic_uint next; /* the pool handle for the next read */
	struct nbd_conn pool[POOL];
};

struct qemu_disks {
	char want[RMIG_MAX_DISKS][NAME_LEN]; /* disks=ID+ID... */
	size_t nwant;
	int all;      /* disks=all */
	int listed;   /* desc[] is final (source: listed; destination: prepared) */
	int server;   /* nbd-server-start succeeded */
	int gone;     /* a QMP call found QEMU gone: ask nothing more */
	char dir[64]; /* the private directory of the NBD socket ("": none) */
	char sock[108];
	size_t n;
	struct rmig_disk desc[RMIG_MAX_DISKS];
	struct qdisk d[RMIG_MAX_DISKS];
};

static struct qemu_disks *qds(struct rmig_backend *be)
{
	return *rmig_qemu_disks(be);
}

/* ------------------------------------------------------------------ */
/* disks= */

static int name_ok(const char *s, size_t len)
{
	if (!len || len >= NAME_LEN)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
			    s[i]))
			return 0;
	return 1;
}

static int add_wanted(struct rmig_backend *be, struct qemu_disks *qd, const char *s, size_t len)
{
	if (!name_ok(s, len)) {
		rmig_backend_err(be,
				 "qemu: bad disk id '%.*s' in disks= (1..%d of [A-Za-z0-9_.-], "
				 "'+' between ids)",
				 (int)len, s, NAME_LEN - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < qd->nwant; i++)
		if (strlen(qd->want[i]) == len && !memcmp(qd->want[i], s, len)) {
			rmig_backend_err(be, "qemu: disks= names %.*s twice", (int)len, s);
			return -EINVAL;
		}
	if (qd->nwant == RMIG_MAX_DISKS) {
		rmig_backend_err(be, "qemu: disks= names more than %d disks", RMIG_MAX_DISKS);
		return -EINVAL;
	}
	memcpy(qd->want[qd->nwant], s, len);
	qd->want[qd->nwant++][len] = 0;
	return 0;
}

static int parse_wanted(struct rmig_backend *be, struct qemu_disks *qd, const char *value)
{
	if (!strcmp(value, "all")) {
		qd->all = 1;
		return 0;
	}
	for (const char *s = value;;) {
		const char *plus = strchr(s, '+');
		size_t len = plus ? (size_t)(plus - s) : strlen(s);
		int rc = add_wanted(be, qd, s, len);

		if (rc || !plus)
			return rc;
		s = plus + 1;
	}
}

static void pool_init(struct qdisk *d)
{
	for (int i = 0; i < POOL; i++)
		pthread_mutex_init(&d->pool[i].lock, NULL);
}

int rmig_qemu_disk_arg(struct rmig_backend *be, const char *value)
{
	struct qemu_disks **slot = rmig_qemu_disks(be), *qd;
	int rc;

	if (*slot) {
		rmig_backend_err(be, "qemu: disks= given twice");
		return -EINVAL;
	}
	qd = calloc(1, sizeof(*qd));
	if (!qd)
		return -ENOMEM;
	for (size_t i = 0; i < RMIG_MAX_DISKS; i++)
		pool_init(&qd->d[i]);
	*slot = qd;
	rc = parse_wanted(be, qd, value);
	return rc; /* on error destroy frees it */
}

/* ------------------------------------------------------------------ */
/* QMP */

static int qemu_gone(int rc)
{
	return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN || rc == -EBADF;
}

/* A command whose answer is not wanted; none once QEMU is known gone. */
static int qmp_do(struct rmig_backend *be, json_t *cmd)
{
	struct qemu_disks *qd = qds(be);
	int rc;

	if (qd->gone) {
		json_decref(cmd);
		return -ENOTCONN;
	}
	rc = rmig_qemu_qmp(be, cmd, NULL);
	if (qemu_gone(rc))
		qd->gone = 1;
	return rc;
}

static int query_block(struct rmig_backend *be, json_t **blocks)
{
	return rmig_qemu_qmp(be, json_pack("{s:s}", "execute", "query-block"), blocks);
}

/* "/machine/peripheral/ID/virtio-backend" -> ID; a bare id as it is. */
static void qdev_id(const char *qdev, char *out, size_t len)
{
	const char *pre = "/machine/peripheral/", *end;

	out[0] = 0;
	if (!qdev)
		return;
	if (strncmp(qdev, pre, strlen(pre))) {
		snprintf(out, len, "%s", strchr(qdev, '/') ? "" : qdev);
		return;
	}
	qdev += strlen(pre);
	end = strchr(qdev, '/');
	snprintf(out, len, "%.*s", (int)(end ? end - qdev : (ptrdiff_t)strlen(qdev)), qdev);
}

/* A device's name: its drive id, else its guest device's id. */
static void device_name(json_t *info, char *out, size_t len)
{
	const char *dev = json_string_value(json_object_get(info, "device"));

	if (dev && *dev)
		snprintf(out, len, "%s", dev);
	else
		qdev_id(json_string_value(json_object_get(info, "qdev")), out, len);
}

static json_t *find_device(json_t *blocks, const char *name)
{
	size_t i;
	json_t *info;

	json_array_foreach(blocks, i, info)
	{
		const char *dev = json_string_value(json_object_get(info, "device"));
		char id[NAME_LEN * 4];

		qdev_id(json_string_value(json_object_get(info, "qdev")), id, sizeof(id));
		if ((dev && !strcmp(dev, name)) || !strcmp(id, name))
			return info;
	}
	return NULL;
}

/* The names query-block lists, for a message. */
static void list_names(json_t *blocks, char *out, size_t len)
{
	size_t i, used = 0;
	json_t *info;

	snprintf(out, len, "none");
	json_array_foreach(blocks, i, info)
	{
		char name[NAME_LEN * 4];

		device_name(info, name, sizeof(name));
		if (used < len)
			used += (size_t)snprintf(out + used, len - used, "%s%s", i ? ", " : "",
						 name[0] ? name : "?");
	}
}

/* ------------------------------------------------------------------ */
/* The disks QEMU has */

/* Which storage: this host (boot id), the image file's device and inode,
 * hashed as sim's disk does. Not a local file (NBD, json:...): all zero. */
static void file_identity(const char *path, uint8_t id[16])
{
	struct stat st;

	memset(id, 0, 16);
	if (path && !stat(path, &st) && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
		rmig_storage_id(&st, id);
}

static const char *image_file(json_t *inserted)
{
	const char *f =
	    json_string_value(json_object_get(json_object_get(inserted, "image"), "filename"));

	return f ? f : json_string_value(json_object_get(inserted, "file"));
}

static uint64_t virtual_size(json_t *inserted)
{
	json_int_t v =
	    json_integer_value(json_object_get(json_object_get(inserted, "image"), "virtual-size"));

	return v > 0 ? (uint64_t)v : 0;
}

/* The limits block_set_io_throttle takes, as query-block names them. */
static json_t *io_limits(json_t *inserted)
{
	const char *keys = "bps bps_rd bps_wr iops iops_rd iops_wr bps_max bps_rd_max bps_wr_max "
			   "iops_max iops_rd_max iops_wr_max bps_max_length bps_rd_max_length "
			   "bps_wr_max_length iops_max_length iops_rd_max_length "
			   "iops_wr_max_length iops_size group";
	json_t *l = json_object();

	while (l && *keys) {
		size_t len = strcspn(keys, " ");
		json_t *v = json_object_getn(inserted, keys, len);

		if (v)
			json_object_setn_new(l, keys, len, json_incref(v));
		keys += len + (keys[len] == ' ');
	}
	return l;
}

/* A usable disk: a medium, writable (why not in *why). */
static int disk_usable(json_t *info, const char **why)
{
	json_t *inserted = json_object_get(info, "inserted");

	*why = !inserted				       ? "has no image (no medium)"
	       : json_is_true(json_object_get(inserted, "ro")) ? "is read-only"
							       : NULL;
	return *why == NULL;
}

/* Fill d and desc from query-block's entry for it. */
static int describe(struct rmig_backend *be, json_t *info, uint32_t id, struct rmig_disk *desc,
		    struct qdisk *d)
{
	json_t *inserted = json_object_get(info, "inserted");
	const char *node = json_string_value(json_object_get(inserted, "node-name"));
	uint64_t size = virtual_size(inserted);
	char name[NAME_LEN * 4];

	device_name(info, name, sizeof(name));
	if (strlen(name) >= NAME_LEN || !node) {
		rmig_backend_err(be, "qemu: disk '%s': a name of 1..%d bytes and a node are needed",
				 name, NAME_LEN - 1);
		return -EINVAL;
	}
	if (!size || size % DISK_BLOCK) {
		rmig_backend_err(
		    be,
		    "qemu: disk %s is %llu bytes, not a multiple of 64 KiB (its block "
		    "size): resize its image (qemu-img resize) or leave it out of disks=",
		    name, (unsigned long long)size);
		return -EINVAL;
	}
	memset(desc, 0, sizeof(*desc));
	desc->id = id;
	desc->block_size = DISK_BLOCK;
	desc->size = size;
	snprintf(desc->name, sizeof(desc->name), "%s", name);
	file_identity(image_file(inserted), desc->identity);
	snprintf(d->node, sizeof(d->node), "%s", node);
	snprintf(d->device, sizeof(d->device), "%s",
		 json_string_value(json_object_get(info, "device")) ?: "");
	snprintf(d->qdev, sizeof(d->qdev), "%s",
		 json_string_value(json_object_get(info, "qdev")) ?: "");
	json_decref(d->limits);
	d->limits = io_limits(inserted);
	return d->limits ? 0 : -ENOMEM;
}

/* Filesystems whose files other hosts see too (statfs's f_type). */
static int network_fs(long type)
{
	static const long shared[] = {
		0x6969,	    /* NFS */
		0xff534d42, /* CIFS */
		0xfe534d42, /* SMB2 */
		0x00c36400, /* Ceph */
		0x01161970, /* GFS2 */
		0x7461636f, /* OCFS2 */
		0x47504653, /* GPFS */
		0x0bd00bd0, /* Lustre */
		0x65735546, /* FUSE (GlusterFS, CephFS-fuse, sshfs...) */
	};

	for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++)
		if ((long)(uint32_t)type == shared[i])
			return 1;
	return 0;
}

/* disks=all takes only local storage: an image that is not a local file
 * or block device (NBD, iSCSI, RBD: a json: or protocol filename), or a
 * file on a network filesystem, is shared storage the destination reaches
 * itself; copying it would be wasted at best. disks=ID takes it anyway
 * (the destination then refuses the same storage by its identity). */
static int on_shared_storage(json_t *info)
{
	const char *path = image_file(json_object_get(info, "inserted"));
	struct statfs fs;
	struct stat st;

	if (!path || stat(path, &st) || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
		return 1;
	return S_ISREG(st.st_mode) && !statfs(path, &fs) && network_fs((long)fs.f_type);
}

/* Source, disks=all: every writable device on local storage, in
 * query-block's order. */
static int select_all(struct rmig_backend *be, struct qemu_disks *qd, json_t *blocks)
{
	size_t i;
	json_t *info;
	const char *why;

	json_array_foreach(blocks, i, info)
	{
		int rc;

		if (!disk_usable(info, &why) || on_shared_storage(info))
			continue;
		if (qd->n == RMIG_MAX_DISKS) {
			rmig_backend_err(be,
					 "qemu: more than %d writable disks: name those to migrate "
					 "with disks=ID+ID...",
					 RMIG_MAX_DISKS);
			return -E2BIG;
		}
		rc = describe(be, info, (uint32_t)qd->n, &qd->desc[qd->n], &qd->d[qd->n]);
		if (rc)
			return rc;
		qd->n++;
	}
	return 0;
}

/* Source, disks=ID+ID: those, in that order. */
static int select_named(struct rmig_backend *be, struct qemu_disks *qd, json_t *blocks)
{
	const char *why;
	char names[256];

	for (size_t i = 0; i < qd->nwant; i++) {
		json_t *info = find_device(blocks, qd->want[i]);
		int rc;

		if (!info) {
			list_names(blocks, names, sizeof(names));
			rmig_backend_err(be, "qemu: disk %s: QEMU has no such device (it has: %s)",
					 qd->want[i], names);
			return -ENOENT;
		}
		if (!disk_usable(info, &why)) {
			rmig_backend_err(be, "qemu: disk %s %s: only writable disks migrate",
					 qd->want[i], why);
			return -EINVAL;
		}
		rc = describe(be, info, (uint32_t)i, &qd->desc[i], &qd->d[i]);
		if (rc)
			return rc;
		qd->n = i + 1;
	}
	return 0;
}

static int list_source(struct rmig_backend *be, struct qemu_disks *qd)
{
	json_t *blocks = NULL;
	int rc = query_block(be, &blocks);

	if (!rc)
		rc = qd->all ? select_all(be, qd, blocks) : select_named(be, qd, blocks);
	json_decref(blocks);
	if (rc)
		qd->n = 0;
	else
		qd->listed = 1;
	return rc;
}

int rmig_qemu_get_disks(struct rmig_backend *be, const struct rmig_disk **disks, size_t *count)
{
	struct qemu_disks *qd = qds(be);
	int rc = 0;

	*disks = NULL;
	*count = 0;
	if (!qd)
		return 0; /* no disks=: QEMU's stream alone */
	if (!qd->listed && be->role == RMIG_ROLE_SOURCE)
		rc = list_source(be, qd);
	if (!rc && qd->listed) {
		*disks = qd->desc;
		*count = qd->n;
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* NBD: the server, exports, libnbd handles */

static int server_start(struct rmig_backend *be, struct qemu_disks *qd)
{
	int rc;

	snprintf(qd->dir, sizeof(qd->dir), "/tmp/rmig-nbd.XXXXXX");
	if (!mkdtemp(qd->dir)) { /* 0700: the socket is ours and QEMU's */
		rc = -errno;
		rmig_backend_err(be, "qemu: a directory for the NBD socket: %s", strerror(-rc));
		qd->dir[0] = 0;
		return rc;
	}
	snprintf(qd->sock, sizeof(qd->sock), "%s/nbd", qd->dir);
	rc = qmp_do(be, json_pack("{s:s,s:{s:{s:s,s:{s:s}}}}", "execute", "nbd-server-start",
				  "arguments", "addr", "type", "unix", "data", "path", qd->sock));
	if (rc == -EIO) {
		char why[sizeof(be->err)];

		snprintf(why, sizeof(why), "%s", be->err);
		rmig_backend_err(be, "%s (rmig needs QEMU's NBD server for its disks)", why);
	}
	qd->server = !rc;
	return rc;
}

static int export_add(struct rmig_backend *be, const char *node, const char *id, int writable,
		      const char *bitmap)
{
	json_t *args = json_pack("{s:s,s:s,s:s,s:s,s:b}", "type", "nbd", "id", id, "node-name",
				 node, "name", id, "writable", writable);

	if (args && bitmap)
		json_object_set_new(args, "bitmaps", json_pack("[s]", bitmap));
	return qmp_do(
	    be,
	    args ? json_pack("{s:s,s:o}", "execute", "block-export-add", "arguments", args) : NULL);
}

/* Is export id still listed? 1, 0, or a negative errno. */
static int export_listed(struct rmig_backend *be, const char *id)
{
	json_t *list = NULL, *e;
	size_t i;
	int rc =
	    qds(be)->gone
		? -ENOTCONN
		: rmig_qemu_qmp(be, json_pack("{s:s}", "execute", "query-block-exports"), &list);

	if (rc)
		return rc;
	rc = 0;
	json_array_foreach(
	    list, i, e) if (!strcmp(json_string_value(json_object_get(e, "id")) ?: "", id)) rc = 1;
	json_decref(list);
	return rc;
}

/* Delete an export, and wait until QEMU freed it (after its clients left:
 * only then is its bitmap free to remove, its id free to use). */
static int export_del(struct rmig_backend *be, const char *id)
{
	struct timespec tick = { 0, 2000000 };
	int rc = qmp_do(be, json_pack("{s:s,s:{s:s,s:s}}", "execute", "block-export-del",
				      "arguments", "id", id, "mode", "hard"));

	for (int ms = 0; !rc; ms += 2) {
		rc = export_listed(be, id);
		if (rc <= 0)
			break;
		if (ms >= EXPORT_GONE_MS) {
			rmig_backend_err(be,
					 "qemu: NBD export %s still there %d ms after its deletion",
					 id, EXPORT_GONE_MS);
			return -ETIMEDOUT;
		}
		rc = 0;
		nanosleep(&tick, NULL);
	}
	return rc;
}

static struct nbd_handle *nbd_open(struct rmig_backend *be, const char *sock, const char *export,
				   const char *meta)
{
	struct nbd_handle *h = nbd_create();

	if (h && nbd_set_export_name(h, export) != -1 &&
	    (!meta || nbd_add_meta_context(h, meta) != -1) && nbd_connect_unix(h, sock) != -1)
		return h;
	rmig_backend_err(be, "qemu: NBD export %s: %s", export, nbd_get_error() ?: "no memory");
	nbd_close(h);
	return NULL;
}

static int pool_open(struct rmig_backend *be, struct qdisk *d, const char *sock, const char *export)
{
	for (int i = 0; i < POOL; i++) {
		d->pool[i].h = nbd_open(be, sock, export, NULL);
		if (!d->pool[i].h)
			return -ECONNREFUSED;
	}
	return 0;
}

static void pool_close(struct qdisk *d)
{
	for (int i = 0; i < POOL; i++) {
		nbd_close(d->pool[i].h);
		d->pool[i].h = NULL;
	}
}

/* Export every disk (rmig-dI read-only, rmig-wI writable) and connect. */
static int export_all(struct rmig_backend *be, struct qemu_disks *qd, int writable)
{
	int rc = server_start(be, qd);

	for (size_t i = 0; !rc && i < qd->n; i++) {
		char id[32];

		snprintf(id, sizeof(id), "rmig-%c%zu", writable ? 'w' : 'd', i);
		rc = export_add(be, qd->d[i].node, id, writable, NULL);
		qd->d[i].exported = !rc;
		if (!rc)
			rc = pool_open(be, &qd->d[i], qd->sock, id);
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* Release: the one way back */

static void bitmap_remove(struct rmig_backend *be, struct qdisk *d, unsigned gen)
{
	char name[32];

	snprintf(name, sizeof(name), "rmig-%u", gen);
	qmp_do(be, json_pack("{s:s,s:{s:s,s:s}}", "execute", "block-dirty-bitmap-remove",
			     "arguments", "node", d->node, "name", name));
}

static int throttle_set(struct rmig_backend *be, struct qdisk *d, json_t *limits)
{
	json_t *args = json_deep_copy(limits);

	if (args && d->qdev[0])
		json_object_set_new(args, "id", json_string(d->qdev));
	else if (args)
		json_object_set_new(args, "device", json_string(d->device));
	return qmp_do(
	    be, args ? json_pack("{s:s,s:o}", "execute", "block_set_io_throttle", "arguments", args)
		     : NULL);
}

static void release_disk(struct rmig_backend *be, struct qemu_disks *qd, size_t i)
{
	struct qdisk *d = &qd->d[i];
	char id[32];

	pool_close(d);
	if (d->exported) {
		snprintf(id, sizeof(id), "rmig-%c%zu", be->role == RMIG_ROLE_DEST ? 'w' : 'd', i);
		export_del(be, id);
		d->exported = 0;
	}
	if (d->gen)
		bitmap_remove(be, d, d->gen);
	d->gen = 0;
	if (d->throttled)
		throttle_set(be, d, d->limits);
	d->throttled = 0;
}

void rmig_qemu_disk_release(struct rmig_backend *be)
{
	struct qemu_disks *qd = qds(be);

	if (!qd)
		return;
	for (size_t i = 0; i < RMIG_MAX_DISKS; i++)
		release_disk(be, qd, i);
	if (qd->server)
		qmp_do(be, json_pack("{s:s}", "execute", "nbd-server-stop"));
	qd->server = 0;
	if (qd->dir[0]) {
		unlink(qd->sock); /* QEMU leaves it */
		rmdir(qd->dir);
		qd->dir[0] = 0;
	}
}

void rmig_qemu_disk_destroy(struct rmig_backend *be)
{
	struct qemu_disks *qd = qds(be);

	if (!qd)
		return;
	rmig_qemu_disk_release(be);
	for (size_t i = 0; i < RMIG_MAX_DISKS; i++) {
		json_decref(qd->d[i].limits);
		for (int k = 0; k < POOL; k++)
			pthread_mutex_destroy(&qd->d[i].pool[k].lock);
	}
	free(qd);
	*rmig_qemu_disks(be) = NULL;
}

/* ------------------------------------------------------------------ */
/* Source */

static int bitmap_add(struct rmig_backend *be, struct qdisk *d)
{
	int rc = qmp_do(be, json_pack("{s:s,s:{s:s,s:s,s:i}}", "execute", "block-dirty-bitmap-add",
				      "arguments", "node", d->node, "name", "rmig-1", "granularity",
				      DISK_BLOCK));

	d->gen = rc ? 0 : 1;
	return rc;
}

int rmig_qemu_disk_start_dirty(struct rmig_backend *be)
{
	struct qemu_disks *qd = qds(be);
	int rc = 0;

	if (!qd || !qd->listed)
		return 0;
	rmig_qemu_disk_release(be); /* a start after a rollback starts afresh */
	for (size_t i = 0; !rc && i < qd->n; i++)
		rc = bitmap_add(be, &qd->d[i]);
	if (!rc)
		rc = export_all(be, qd, 0);
	if (rc) {
		char why[sizeof(be->err)];

		snprintf(why, sizeof(why), "%s", be->err);
		rmig_qemu_disk_release(be);
		snprintf(be->err, sizeof(be->err), "%s", why);
	}
	return rc;
}

/* A new bitmap rmig-(gen+1) records from now on, rmig-gen is frozen: in one
 * transaction, so that no write falls between the two. */
static int rotate(struct rmig_backend *be, struct qdisk *d)
{
	char next[32], cur[32];
	int rc;

	snprintf(cur, sizeof(cur), "rmig-%u", d->gen);
	snprintf(next, sizeof(next), "rmig-%u", d->gen + 1);
	rc = qmp_do(be, json_pack("{s:s,s:{s:[{s:s,s:{s:s,s:s,s:i}},{s:s,s:{s:s,s:s}}]}}",
				  "execute", "transaction", "arguments", "actions", "type",
				  "block-dirty-bitmap-add", "data", "node", d->node, "name", next,
				  "granularity", DISK_BLOCK, "type", "block-dirty-bitmap-disable",
				  "data", "node", d->node, "name", cur));
	if (!rc)
		d->gen++;
	return rc;
}

struct extent_walk {
	const char *context;
	uint64_t *bitmap;
	uint64_t nblocks;
	uint64_t next; /* where the extents reported so far end */
};

static void mark_dirty(struct extent_walk *w, uint64_t off, uint64_t len)
{
	uint64_t b = off / DISK_BLOCK, end = (off + len + DISK_BLOCK - 1) / DISK_BLOCK;

	for (; b < end && b < w->nblocks; b++)
		w->bitmap[b / 64] |= 1ull << (b % 64);
}

/* libnbd's extent callback: (length, flags) pairs from offset on; in a
 * qemu:dirty-bitmap context flag 1 is "dirty". */
static int on_extents(void *opaque, const char *context, uint64_t offset, uint32_t *entries,
		      size_t n, int *error)
{
	struct extent_walk *w = opaque;

	(void)error;
	if (strcmp(context, w->context))
		return 0;
	for (size_t i = 0; i + 1 < n; i += 2) {
		if (entries[i + 1] & 1)
			mark_dirty(w, offset, entries[i]);
		offset += entries[i];
	}
	w->next = offset;
	return 0;
}

static int read_extents(struct rmig_backend *be, struct nbd_handle *h, uint64_t size,
			struct extent_walk *w)
{
	for (uint64_t off = 0; off < size; off = w->next) {
		uint64_t span = size - off < STATUS_SPAN ? size - off : STATUS_SPAN;

		w->next = off;
		if (nbd_block_status(
			h, span, off,
			(nbd_extent_callback){ .callback = on_extents, .user_data = w }, 0) == -1) {
			rmig_backend_err(be, "qemu: NBD block status: %s", nbd_get_error());
			return nbd_get_errno() ? -nbd_get_errno() : -EIO;
		}
		if (w->next <= off) {
			rmig_backend_err(be,
					 "qemu: NBD block status of %s made no progress at %llu",
					 w->context, (unsigned long long)off);
			return -EPROTO;
		}
	}
	return 0;
}

/* Export the frozen bitmap rmig-gen, read its dirty extents into bitmap. */
static int read_bitmap(struct rmig_backend *be, struct qemu_disks *qd, size_t i, unsigned gen,
		       uint64_t *bitmap)
{
	struct qdisk *d = &qd->d[i];
	char id[32], bm[32], context[64];
	struct extent_walk w = { .context = context,
				 .bitmap = bitmap,
				 .nblocks = qd->desc[i].size / DISK_BLOCK };
	struct nbd_handle *h = NULL;
	int rc;

	snprintf(id, sizeof(id), "rmig-b%zu-%u", i, gen);
	snprintf(bm, sizeof(bm), "rmig-%u", gen);
	snprintf(context, sizeof(context), DIRTY_CONTEXT "%s", bm);
	rc = export_add(be, d->node, id, 0, bm);
	if (rc)
		return rc;
	h = nbd_open(be, qd->sock, id, context);
	if (!h)
		rc = -ECONNREFUSED;
	else if (nbd_can_meta_context(h, context) != 1) {
		rmig_backend_err(be, "qemu: QEMU's NBD export %s does not offer %s", id, context);
		rc = -EPROTO;
	}
	if (!rc)
		rc = read_extents(be, h, qd->desc[i].size, &w);
	nbd_close(h);
	if (export_del(be, id) && !rc)
		rc = -EIO;
	return rc;
}

/* Why rotating satisfies "data first, then the bit": QEMU sets a block's
 * bit in every recording bitmap when the write has reached the image. The
 * transaction swaps bitmaps at one instant T (QEMU's main loop runs
 * nothing in between, and a transaction drains I/O first): a write that
 * finished before T is in rmig-gen and in the image, so the reads the
 * engine makes after this call see it; one that finishes after T sets its
 * bit in rmig-(gen+1), the next call's. No write is in neither. */
int rmig_qemu_disk_fetch_dirty(struct rmig_backend *be, size_t index, uint64_t *bitmap)
{
	struct qemu_disks *qd = qds(be);
	struct qdisk *d;
	unsigned frozen;
	int rc;

	if (!qd || index >= qd->n || !qd->d[index].gen) {
		rmig_backend_err(be, "qemu: disk %zu is not tracked (no disk_start_dirty)", index);
		return -EINVAL;
	}
	d = &qd->d[index];
	rc = rotate(be, d);
	if (rc)
		return rc;
	frozen = d->gen - 1;
	rc = read_bitmap(be, qd, index, frozen, bitmap);
	bitmap_remove(be, d, frozen);
	return rc;
}

static struct nbd_conn *conn_for(struct qemu_disks *qd, size_t index)
{
	struct qdisk *d;

	if (!qd || index >= qd->n)
		return NULL;
	d = &qd->d[index];
	return &d->pool[atomic_fetch_add(&d->next, 1) % POOL];
}

static int nbd_errno(void)
{
	int e = nbd_get_errno();

	return e > 0 ? -e : -EIO;
}

/* len bytes at offset through c, in requests QEMU's server takes: read
 * into buf, or write from it. */
static int nbd_io(struct nbd_conn *c, int write, uint64_t offset, void *buf, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t done = 0; !rc && done < len;) {
		size_t n = len - done < NBD_IO_MAX ? len - done : NBD_IO_MAX;
		char *at = (char *)buf + done;

		if (!c->h)
			rc = -ENOTCONN;
		else if ((write ? nbd_pwrite(c->h, at, n, offset + done, 0)
				: nbd_pread(c->h, at, n, offset + done, 0)) == -1)
			rc = nbd_errno();
		done += n;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Called from the data channels' threads: be->err is left alone. */
int rmig_qemu_disk_read(struct rmig_backend *be, size_t index, uint64_t offset, void *buf,
			size_t len)
{
	struct nbd_conn *c = conn_for(qds(be), index);

	return c ? nbd_io(c, 0, offset, buf, len) : -EINVAL;
}

int rmig_qemu_disk_throttle(struct rmig_backend *be, uint64_t bytes_per_s)
{
	struct qemu_disks *qd = qds(be);
	int rc = 0;

	for (size_t i = 0; qd && !rc && i < qd->n; i++) {
		struct qdisk *d = &qd->d[i];
		json_t *limit;

		if (!bytes_per_s) {
			rc = d->throttled ? throttle_set(be, d, d->limits) : 0;
			d->throttled = d->throttled && rc;
			continue;
		}
		limit = json_pack("{s:i,s:i,s:I,s:i,s:i,s:i}", "bps", 0, "bps_rd", 0, "bps_wr",
				  (json_int_t)bytes_per_s, "iops", 0, "iops_rd", 0, "iops_wr", 0);
		rc = limit ? throttle_set(be, d, limit) : -ENOMEM;
		json_decref(limit);
		d->throttled |= !rc;
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* Destination */

static int wanted_here(const struct qemu_disks *qd, const char *name)
{
	for (size_t i = 0; i < qd->nwant; i++)
		if (!strcmp(qd->want[i], name))
			return 1;
	return qd->all;
}

static int check_wanted(struct rmig_backend *be, struct qemu_disks *qd,
			const struct rmig_disk *layout, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (!wanted_here(qd, layout[i].name)) {
			rmig_backend_err(be,
					 "qemu: the source sends disk %s, which disks= leaves out",
					 layout[i].name);
			return -EINVAL;
		}
	for (size_t k = 0; k < qd->nwant; k++) {
		size_t i = 0;

		while (i < count && strcmp(layout[i].name, qd->want[k]))
			i++;
		if (i == count) {
			rmig_backend_err(be,
					 "qemu: disks= names %s, which the source does not send",
					 qd->want[k]);
			return -EINVAL;
		}
	}
	return 0;
}

/* The destination's device for the source's disk src, checked. */
static int accept_disk(struct rmig_backend *be, json_t *blocks, const struct rmig_disk *src,
		       struct rmig_disk *desc, struct qdisk *d)
{
	static const uint8_t unknown[16];
	json_t *info = find_device(blocks, src->name);
	const char *why;
	char names[256];
	int rc;

	if (!info) {
		list_names(blocks, names, sizeof(names));
		rmig_backend_err(
		    be, "qemu: disk %s: the destination QEMU has no such device (it has: %s)",
		    src->name, names);
		return -ENOENT;
	}
	if (!disk_usable(info, &why)) {
		rmig_backend_err(be,
				 "qemu: disk %s %s in the destination QEMU: it must be writable",
				 src->name, why);
		return -EROFS;
	}
	rc = describe(be, info, src->id, desc, d);
	if (rc)
		return rc;
	if (desc->size != src->size) {
		rmig_backend_err(
		    be,
		    "qemu: disk %s: the destination's image is %llu bytes, the source's "
		    "%llu: give it the same virtual size (qemu-img create/resize)",
		    src->name, (unsigned long long)desc->size, (unsigned long long)src->size);
		return -EINVAL;
	}
	if (memcmp(src->identity, unknown, 16) && !memcmp(src->identity, desc->identity, 16)) {
		rmig_backend_err(
		    be,
		    "qemu: disk %s: the destination's image is the same storage as the "
		    "source's (shared storage: nothing to copy)",
		    src->name);
		return -EEXIST;
	}
	/* The layout as accepted, with our own storage's identity: the engine
	 * checks it against the source's too. */
	desc->block_size = src->block_size;
	return 0;
}

static int accept_all(struct rmig_backend *be, struct qemu_disks *qd,
		      const struct rmig_disk *layout, size_t count)
{
	json_t *blocks = NULL;
	int rc = query_block(be, &blocks);

	for (size_t i = 0; !rc && i < count; i++)
		rc = accept_disk(be, blocks, &layout[i], &qd->desc[i], &qd->d[i]);
	json_decref(blocks);
	return rc;
}

int rmig_qemu_prepare_disks(struct rmig_backend *be, const struct rmig_disk *layout, size_t count)
{
	struct qemu_disks *qd = qds(be);
	int rc;

	if (!qd) {
		rmig_backend_err(be,
				 "qemu: the source sends %zu disk%s (the first: %s): receive them "
				 "with disks=all or disks=ID+ID",
				 count, count == 1 ? "" : "s", count ? layout[0].name : "?");
		return -EINVAL;
	}
	if (qd->listed || count > RMIG_MAX_DISKS) {
		rmig_backend_err(be, "qemu: disks prepared twice, or more than %d", RMIG_MAX_DISKS);
		return -EINVAL;
	}
	rc = check_wanted(be, qd, layout, count);
	if (!rc)
		rc = accept_all(be, qd, layout, count);
	if (!rc) {
		qd->n = count;
		rc = export_all(be, qd, 1);
	}
	if (rc) {
		char why[sizeof(be->err)];

		snprintf(why, sizeof(why), "%s", be->err);
		rmig_qemu_disk_release(be);
		snprintf(be->err, sizeof(be->err), "%s", why);
		qd->n = 0;
		return rc;
	}
	qd->listed = 1;
	return 0;
}

int rmig_qemu_disk_write(struct rmig_backend *be, size_t index, uint64_t offset, const void *buf,
			 size_t len)
{
	struct nbd_conn *c = conn_for(qds(be), index);

	/* nbd_pwrite only reads buf. */
	return c ? nbd_io(c, 1, offset, (void *)(uintptr_t)buf, len) : -EINVAL;
}

int rmig_qemu_disk_write_zeroes(struct rmig_backend *be, size_t index, uint64_t offset,
				uint64_t len)
{
	struct nbd_conn *c = conn_for(qds(be), index);
	int rc = 0;

	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	for (uint64_t done = 0; !rc && done < len;) {
		uint64_t n = len - done < ZERO_SPAN ? len - done : ZERO_SPAN;

		if (!c->h)
			rc = -ENOTCONN;
		else if (nbd_zero(c->h, n, offset + done, 0) == -1)
			rc = nbd_errno();
		done += n;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Every handle: a flush covers only its own connection's writes unless
 * the server says otherwise (multi-conn), and QEMU's writable exports
 * do not. */
int rmig_qemu_disk_flush(struct rmig_backend *be, size_t index)
{
	struct qemu_disks *qd = qds(be);
	int rc = 0;

	if (!qd || index >= qd->n)
		return -EINVAL;
	for (int i = 0; !rc && i < POOL; i++) {
		struct nbd_conn *c = &qd->d[index].pool[i];

		pthread_mutex_lock(&c->lock);
		if (!c->h)
			rc = -ENOTCONN;
		else if (nbd_flush(c->h, 0) == -1)
			rc = nbd_errno();
		pthread_mutex_unlock(&c->lock);
	}
	if (rc)
		rmig_backend_err(be, "qemu: disk %s: NBD flush: %s", qd->desc[index].name,
				 strerror(-rc));
	return rc;
}
