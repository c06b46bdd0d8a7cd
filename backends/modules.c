/* modules.c - the shared library's optional backends, loaded on demand.
 *
 * librmig.so.0 leaves out the backends that need libraries most embedders
 * never use (qemu: libjansson; xen: libxenctrl, libxenforeignmemory); each
 * is a module, backend-NAME.so, in the directory librmig/ beside the
 * librmig.so.0 actually loaded ($(LIBDIR)/librmig installed, $(BUILD)/librmig in
 * the build tree), or in $RMIG_MODULE_DIR. Opening "NAME:..." with no kind
 * NAME registered loads it once and registers the table its one export,
 * rmig_backend_module(), returns. A module stays loaded: its ops are
 * registered for the rest of the process.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modules.h"

#define NAME_MAX_LEN 31 /* rmig_backend_open's limit */
#define MAX_TRIES 32

/* The modules this library was built with: a missing one is "not
 * installed", any other unknown name just unknown. */
static const char *const built_modules[] = {
	"qemu",
#ifdef RMIG_HAVE_XEN
	"xen",
#endif
};

/* A module that failed to load, and why: not tried again. Guarded by the
 * registry's lock, as every function here. */
struct module_try {
	char name[NAME_MAX_LEN + 1];
	int rc;
	char msg[384];
};
static struct module_try tries[MAX_TRIES];
static int ntries;

/* Only [a-z0-9_]: a spec comes from untrusted configuration, and the name
 * becomes part of a path ('/' or ".." would leave the directory). */
static int valid_name(const char *name, size_t n)
{
	if (n == 0 || n > NAME_MAX_LEN)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '_'))
			return 0;
	return 1;
}

static int was_built(const char *name)
{
	for (size_t i = 0; i < sizeof(built_modules) / sizeof(built_modules[0]); i++)
		if (strcmp(built_modules[i], name) == 0)
			return 1;
	return 0;
}

/* librmig/ beside this library's file, as an absolute path taken when the
 * library is loaded: dladdr gives the name the loader used, relative when
 * LD_LIBRARY_PATH or an rpath was ("build/librmig.so.0"), and a process
 * that changed directory since must not load modules from wherever it is
 * now. Empty: no module directory (never the current one). */
static char lib_module_dir[PATH_MAX];

__attribute__((constructor)) static void module_dir_at_load(void)
{
	char dir[PATH_MAX], real[PATH_MAX];
	Dl_info info;
	const char *slash;
	int n;

	if (!dladdr((void *)module_dir_at_load, &info) || !info.dli_fname)
		return;
	slash = strrchr(info.dli_fname, '/');
	n = slash ? snprintf(dir, sizeof(dir), "%.*s", (int)(slash - info.dli_fname) + 1,
			     info.dli_fname)
		  : snprintf(dir, sizeof(dir), ".");
	if (n < 0 || (size_t)n >= sizeof(dir) || !realpath(dir, real))
		return;
	n = snprintf(dir, sizeof(dir), "%s/librmig", strcmp(real, "/") ? real : "");
	if (n > 0 && (size_t)n < sizeof(dir))
		memcpy(lib_module_dir, dir, (size_t)n + 1);
}

/* That directory, or $RMIG_MODULE_DIR (ignored when setuid: secure_getenv). */
static int module_dir(char *dir, size_t len)
{
	const char *env = secure_getenv("RMIG_MODULE_DIR");
	int n;

	if (env && env[0])
		n = snprintf(dir, len, "%s", env);
	else if (lib_module_dir[0])
		n = snprintf(dir, len, "%s", lib_module_dir);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static struct module_try *tried(const char *name)
{
	for (int i = 0; i < ntries; i++)
		if (strcmp(tries[i].name, name) == 0)
			return &tries[i];
	return NULL;
}

static void remember(const char *name, int rc, const char *msg)
{
	if (ntries == MAX_TRIES)
		return;
	snprintf(tries[ntries].name, sizeof(tries[ntries].name), "%s", name);
	tries[ntries].rc = rc;
	snprintf(tries[ntries].msg, sizeof(tries[ntries].msg), "%s", msg);
	ntries++;
}

static int register_module(const char *name, const char *path, const struct rmig_backend_ops *ops,
			   char *msg, size_t len)
{
	int rc;

	if (!ops || ops->size < RMIG_BACKEND_OPS_MIN_SIZE || !ops->name ||
	    strcmp(ops->name, name) != 0) {
		snprintf(msg, len, "backend %s: module %s does not provide backend '%s'", name,
			 path, name);
		return -ELIBBAD;
	}
	rc = rmig_backend_register_locked(ops);
	if (rc)
		snprintf(msg, len, "backend %s: module %s: cannot register its ops (%s)", name,
			 path, strerror(-rc));
	return rc;
}

/* dlopen path and register its kind; closed again unless registered. */
static int load_file(const char *name, const char *path, char *msg, size_t len)
{
	void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	rmig_backend_module_fn entry;
	int rc;

	if (!handle) {
		snprintf(msg, len, "backend %s: cannot load module: %s", name, dlerror());
		return -ELIBBAD;
	}
	entry = (rmig_backend_module_fn)dlsym(handle, RMIG_BACKEND_MODULE_ENTRY);
	if (!entry) {
		snprintf(msg, len, "backend %s: %s is not an rmig backend module (no %s)", name,
			 path, RMIG_BACKEND_MODULE_ENTRY);
		rc = -ELIBBAD;
	} else {
		rc = register_module(name, path, entry(), msg, len);
	}
	if (rc)
		dlclose(handle);
	return rc;
}

int rmig_backend_module_load(const char *name, char *msg, size_t len)
{
	char dir[PATH_MAX], path[PATH_MAX + 32];
	struct module_try *t;
	int rc;

	msg[0] = 0;
	if (!valid_name(name, strlen(name)))
		return -ENOENT;
	t = tried(name);
	if (t) {
		snprintf(msg, len, "%s", t->msg);
		return t->rc;
	}
	rc = module_dir(dir, sizeof(dir));
	if (rc) {
		if (was_built(name))
			snprintf(msg, len,
				 "backend %s: not installed (no module directory: where "
				 "librmig.so.0 was loaded from is unknown)",
				 name);
		return -ENOENT;
	}
	snprintf(path, sizeof(path), "%s/backend-%s.so", dir, name);
	if (access(path, F_OK) != 0) {
		/* Not remembered: it may be installed while this process runs. */
		if (was_built(name))
			snprintf(msg, len, "backend %s: not installed (module %s missing)", name,
				 path);
		return -ENOENT;
	}
	rc = load_file(name, path, msg, len);
	if (rc)
		remember(name, rc, msg);
	return rc;
}

/* NAME of a file "backend-NAME.so", or 0. */
static int module_file(const char *file, char *name, size_t len)
{
	size_t n = strlen(file);
	const size_t prefix = strlen("backend-"), suffix = strlen(".so");

	if (n <= prefix + suffix || strncmp(file, "backend-", prefix) != 0 ||
	    strcmp(file + n - suffix, ".so") != 0 ||
	    !valid_name(file + prefix, n - prefix - suffix))
		return 0;
	snprintf(name, len, "%.*s", (int)(n - prefix - suffix), file + prefix);
	return 1;
}

/* name is an item of the list "a, b, c". */
static int listed(const char *known, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = known; (p = strstr(p, name)); p += n)
		if ((p == known || p[-1] == ' ') && (p[n] == ',' || p[n] == 0))
			return 1;
	return 0;
}

void rmig_backend_module_names(char *known, size_t len)
{
	char dir[PATH_MAX], name[NAME_MAX_LEN + 1];
	struct dirent **files;
	int n;

	if (module_dir(dir, sizeof(dir)) || (n = scandir(dir, &files, NULL, alphasort)) < 0)
		return;
	for (int i = 0; i < n; i++) {
		if (module_file(files[i]->d_name, name, sizeof(name)) && !listed(known, name))
			snprintf(known + strlen(known), len - strlen(known), "%s%s",
				 known[0] ? ", " : "", name);
		free(files[i]);
	}
	free(files);
}
