/* registry.c - backends by name, and opening one from a spec "name:args".
 * Compiled twice: into librmig.a with every backend built in, and with
 * RMIG_BACKEND_MODULES into librmig.so.0, whose optional backends (qemu,
 * xen) are modules loaded on the first miss of their name (modules.c), so
 * that the shared library needs neither libjansson nor the xen libraries. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modules.h"
#include "rmig_backend.h"
#include "last_error.h"

extern const struct rmig_backend_ops rmig_sim_backend_ops;
extern const struct rmig_backend_ops rmig_uffd_backend_ops;
extern const struct rmig_backend_ops rmig_kvm_backend_ops;
#ifndef RMIG_BACKEND_MODULES
extern const struct rmig_backend_ops rmig_qemu_backend_ops;
#ifdef RMIG_HAVE_XEN
extern const struct rmig_backend_ops rmig_xen_backend_ops;
#endif
#endif

#define MAX_BACKEND_KINDS 16

/* The built-in tables by pointer (built with this very header, and the kvm
 * backend recognises its instances by their ops pointer); a registered one
 * points at its slot in copies: full-size, zero past the size it came with. */
static const struct rmig_backend_ops *_Atomic backend_kinds[MAX_BACKEND_KINDS];
static struct rmig_backend_ops copies[MAX_BACKEND_KINDS];
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;
/* Writers (registering, loading a module) take turns; a reader sees a
 * slot only once its table is complete (release/acquire), so finding a
 * kind takes no lock. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct rmig_backend_ops *kind_at(int i)
{
	return atomic_load_explicit(&backend_kinds[i], memory_order_acquire);
}

/* Register ops; copy_size 0: by pointer, else copy its first copy_size bytes. */
static int register_kind(const struct rmig_backend_ops *ops, size_t copy_size)
{
	for (int i = 0; i < MAX_BACKEND_KINDS; i++) {
		const struct rmig_backend_ops *kind = kind_at(i);

		if (kind && strcmp(kind->name, ops->name) == 0)
			return -EEXIST;
		if (!kind) {
			if (copy_size) {
				memset(&copies[i], 0, sizeof(copies[i]));
				memcpy(&copies[i], ops, copy_size);
				copies[i].size = sizeof(copies[i]);
				ops = &copies[i];
			}
			atomic_store_explicit(&backend_kinds[i], ops, memory_order_release);
			return 0;
		}
	}
	return -ENOSPC;
}

static void register_builtins(void)
{
	register_kind(&rmig_sim_backend_ops, 0);
	register_kind(&rmig_uffd_backend_ops, 0);
	register_kind(&rmig_kvm_backend_ops, 0);
#ifndef RMIG_BACKEND_MODULES
	register_kind(&rmig_qemu_backend_ops, 0);
#ifdef RMIG_HAVE_XEN
	register_kind(&rmig_xen_backend_ops, 0);
#endif
#endif
}

/* Check ops (of any size this library accepts) and register a full-size
 * copy. Called with registry_lock held. */
int rmig_backend_register_locked(const struct rmig_backend_ops *ops)
{
	struct rmig_backend_ops full = { 0 };
	int rc;

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

int rmig_backend_register(const struct rmig_backend_ops *ops)
{
	int rc;

	pthread_once(&builtins_once, register_builtins);
#ifdef RMIG_BACKEND_MODULES
	/* A module's name is taken, as in librmig.a, if its module is there. */
	if (ops && ops->size >= RMIG_BACKEND_OPS_MIN_SIZE && ops->name)
		rmig_backend_find(ops->name);
#endif
	pthread_mutex_lock(&registry_lock);
	rc = rmig_backend_register_locked(ops);
	pthread_mutex_unlock(&registry_lock);
	return rc;
}

static const struct rmig_backend_ops *registered(const char *name)
{
	const struct rmig_backend_ops *kind;

	for (int i = 0; i < MAX_BACKEND_KINDS && (kind = kind_at(i)); i++)
		if (strcmp(kind->name, name) == 0)
			return kind;
	return NULL;
}

/* "sim, uffd, ..." and, in the shared library, the modules that could be
 * loaded: what a user may name instead. */
static void known_names(char *known, size_t len)
{
	const struct rmig_backend_ops *kind;

	known[0] = 0;
	for (int i = 0; i < MAX_BACKEND_KINDS && (kind = kind_at(i)); i++)
		snprintf(known + strlen(known), len - strlen(known), "%s%s", i ? ", " : "",
			 kind->name);
#ifdef RMIG_BACKEND_MODULES
	rmig_backend_module_names(known, len);
#endif
}

#ifdef RMIG_BACKEND_MODULES
/* Load name's module, unless another thread did meanwhile: rc as
 * rmig_backend_module_load's, *ops the kind if there is one now. */
static int load_module(const char *name, const struct rmig_backend_ops **ops, char *msg, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&registry_lock);
	if (!registered(name))
		rc = rmig_backend_module_load(name, msg, len);
	pthread_mutex_unlock(&registry_lock);
	*ops = registered(name);
	return rc;
}
#endif

/* The kind called name: registered, or (shared library) loaded now from
 * its module. 0, or a negative errno with err saying why not. */
static int find_kind(const char *name, const struct rmig_backend_ops **ops, char *err,
		     size_t errlen)
{
	char msg[512] = "";

	pthread_once(&builtins_once, register_builtins);
	*ops = registered(name);
	if (*ops)
		return 0;
#ifdef RMIG_BACKEND_MODULES
	int rc = load_module(name, ops, msg, sizeof(msg));

	if (rc != -ENOENT || msg[0]) { /* loaded, or a module that should be there */
		snprintf(err, errlen, "%s", msg);
		return rc;
	}
#endif
	known_names(msg, sizeof(msg));
	snprintf(err, errlen, "unknown backend '%s' (known here: %s)", name, msg);
	return -ENOENT;
}

const struct rmig_backend_ops *rmig_backend_find(const char *name)
{
	const struct rmig_backend_ops *ops;
	char err[512];

	return find_kind(name, &ops, err, sizeof(err)) ? NULL : ops;
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
	rc = find_kind(name, &ops, err, errlen);
	if (rc)
		return rc;
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
	/* A spec comes from configuration files: none of it reaches a
	 * message (a log line) unless it is printable. */
	rc = 0;
	for (const char *c = spec; *c && !rc; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			rc = -EINVAL,
			snprintf(msg, sizeof(msg), "a control character at offset %zu",
				 (size_t)(c - spec));
	if (!rc)
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
