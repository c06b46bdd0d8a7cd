/* module.c - the one export of a backend module (backend-NAME.so), built
 * once per module with RMIG_MODULE_OPS naming its ops table (the Makefile:
 * -DRMIG_MODULE_OPS=rmig_qemu_backend_ops); modules.c looks it up. Each
 * module has its own copy, so the name clashes nowhere. */
#include "modules.h"

extern const struct rmig_backend_ops RMIG_MODULE_OPS;

__attribute__((visibility("default"))) const struct rmig_backend_ops *rmig_backend_module(void)
{
	return &RMIG_MODULE_OPS;
}
