/* modules.h - the optional backends (qemu, xen) as modules the shared
 * library loads on demand: $(LIBDIR)/librmig/backend-NAME.so beside the
 * librmig.so.0 that is loaded. Not part of the public API. */
#ifndef RMIG_BACKEND_MODULES_H
#define RMIG_BACKEND_MODULES_H

#include <stddef.h>

#include "rmig_backend.h"

/* What a module exports, and nothing else: its ops table, which the
 * loader checks and registers like rmig_backend_register()'s. */
#define RMIG_BACKEND_MODULE_ENTRY "rmig_backend_module"
typedef const struct rmig_backend_ops *(*rmig_backend_module_fn)(void);
const struct rmig_backend_ops *rmig_backend_module(void); /* module.c */

/* registry.c: check ops and register a copy; registry's lock held. */
int rmig_backend_register_locked(const struct rmig_backend_ops *ops);

/* modules.c, with the registry's lock held: load backend-NAME.so and
 * register its kind, once per name (a second call says what the first
 * found). 0; -ENOENT with msg empty when there is no module of that name
 * (nor is one expected); else a negative errno, msg saying why. */
int rmig_backend_module_load(const char *name, char *msg, size_t len);

/* Append ", NAME" to known for each module present and not yet in it. */
void rmig_backend_module_names(char *known, size_t len);

#endif
