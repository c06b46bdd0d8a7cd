/* last_error.c - the thread's last error (rmig_last_error()). Thread-local,
 * as dlerror() and libvirt's virGetLastErrorMessage(): a function that has
 * no object to leave its message on (a create, an open) still has a place
 * for it, and every function says why the same way. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "last_error.h"
#include "rmig.h"

static __thread char last_error[512];

int rmig_fail_msg(int rc, const char *msg)
{
	if (msg == last_error) /* already there */
		return rc;
	snprintf(last_error, sizeof(last_error), "%s", msg && *msg ? msg : strerror(-rc));
	return rc;
}

int rmig_fail(int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return rc;
}

const char *rmig_last_error(void)
{
	return last_error;
}
