/* registry.c - backends by name, and opening one from a spec "name:args". */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rmig_backend.h"
#include "last_error.h"

extern const struct rmig_backend_ops rmig_sim_backend_ops;
extern const struct rmig_backend_ops rmig_qemu_backend_ops;
extern const struct rmig_backend_ops rmig_uffd_backend_ops;
extern const struct rmig_backend_ops rmig_kvm_backend_ops;
#ifdef RMIG_HAVE_XEN
extern const struct rmig_backend_ops rmig_xen_backend_ops;
#endif

#define MAX_BACKEND_KINDS 16

/* The built-in tables by pointer (built with this very header, and the kvm
 * backend recognises its instances by their ops pointer); a registered one
 * points at its slot in copies: full-size, zero past the size it came with. */
static const struct rmig_backend_ops *backend_kinds[MAX_BACKEND_KINDS];
static struct rmig_backend_ops copies[MAX_BACKEND_KINDS];
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;

/* Register ops; copy_size 0: by pointer, else copy its first copy_size bytes. */
static int register_kind(const struct rmig_backend_ops *ops, size_t copy_size)
{
	for (int i = 0; i < MAX_BACKEND_KINDS; i++) {
		if (backend_kinds[i] && strcmp(backend_kinds[i]->name, ops->name) == 0)
			return -EEXIST;
		if (!backend_kinds[i]) {
			if (copy_size) {
				memset(&copies[i], 0, sizeof(copies[i]));
				memcpy(&copies[i], ops, copy_size);
				copies[i].size = sizeof(copies[i]);
				ops = &copies[i];
			}
			backend_kinds[i] = ops;
			return 0;
		}
	}
	return -ENOSPC;
}

static void register_builtins(void)
{
	register_kind(&rmig_sim_backend_ops, 0);
	register_kind(&rmig_qemu_backend_ops, 0);
	register_kind(&rmig_uffd_backend_ops, 0);
	register_kind(&rmig_kvm_backend_ops, 0);
#ifdef RMIG_HAVE_XEN
	register_kind(&rmig_xen_backend_ops, 0);
#endif
}

int rmig_backend_register(const struct rmig_backend_ops *ops)
{
	struct rmig_backend_ops full = { 0 };
	int rc;

	pthread_once(&builtins_once, register_builtins);
	if (!ops || ops->size < RMIG_BACKEND_OPS_MIN_SIZE || ops->size > sizeof(full))
		return rmig_fail(-EINVAL, "rmig_backend_register: ops.size %zu not in %zu..%zu",
				 ops ? ops->size : 0, (size_t)RMIG_BACKEND_OPS_MIN_SIZE,
				 sizeof(full));
	memcpy(&full, ops, ops->size); /* the ops past ops->size: NULL */
	if (!full.name || !full.create || !full.destroy || !full.get_regions)
		return rmig_fail(-EINVAL, "rmig_backend_register: name, create, destroy and "
					  "get_regions are mandatory");
	/* A stream backend's other two ops are called unchecked. */
	if (full.stream_open && (!full.stream_status || !full.stream_switchover))
		return rmig_fail(-EINVAL,
				 "rmig_backend_register %s: stream_open needs "
				 "stream_status and stream_switchover",
				 full.name);
	rc = register_kind(&full, sizeof(full));
	if (rc == -EEXIST)
		return rmig_fail(rc, "rmig_backend_register: a backend named '%s' exists",
				 full.name);
	if (rc)
		return rmig_fail(rc, "rmig_backend_register: no room for '%s'", full.name);
	return 0;
}

const struct rmig_backend_ops *rmig_backend_find(const char *name)
{
	pthread_once(&builtins_once, register_builtins);
	for (int i = 0; i < MAX_BACKEND_KINDS && backend_kinds[i]; i++)
		if (strcmp(backend_kinds[i]->name, name) == 0)
			return backend_kinds[i];
	return NULL;
}

static int backend_open(const char *spec, enum rmig_role role, struct rmig_backend **out, char *err,
			size_t errlen)
{
	const char *colon = strchr(spec, ':');
	size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
	char name[32];
	const struct rmig_backend_ops *ops;
	struct rmig_backend *be;
	int rc;

	if (nlen == 0 || nlen >= sizeof(name)) {
		snprintf(err, errlen, "bad backend spec '%s'", spec);
		return -EINVAL;
	}
	memcpy(name, spec, nlen);
	name[nlen] = 0;
	ops = rmig_backend_find(name);
	if (!ops) {
		char known[256] = "";

		for (int i = 0; i < MAX_BACKEND_KINDS && backend_kinds[i]; i++)
			snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
				 i ? ", " : "", backend_kinds[i]->name);
		snprintf(err, errlen, "unknown backend '%s' (known here: %s)", name, known);
		return -ENOENT;
	}
	be = calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->ops = ops;
	be->role = role;
	rc = ops->create(be, colon ? colon + 1 : "", role);
	if (rc) {
		snprintf(err, errlen, "%s", be->err[0] ? be->err : strerror(-rc));
		ops->destroy(be);
		free(be);
		return rc;
	}
	*out = be;
	return 0;
}

int rmig_backend_open(const char *spec, enum rmig_role role, struct rmig_backend **out, char *err,
		      size_t errlen)
{
	char msg[512] = "";
	int rc;

	if (!spec || !out)
		return rmig_fail(-EINVAL, "rmig_backend_open: no spec or out");
	rc = backend_open(spec, role, out, msg, sizeof(msg));
	if (!rc)
		return 0;
	if (err && errlen) /* 0.2's way, kept */
		snprintf(err, errlen, "%s", msg);
	return rmig_fail_msg(rc, msg);
}

void rmig_backend_close(struct rmig_backend *be)
{
	if (!be)
		return;
	be->ops->destroy(be);
	free(be);
}

void rmig_backend_err(struct rmig_backend *be, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(be->err, sizeof(be->err), fmt, ap);
	va_end(ap);
}
