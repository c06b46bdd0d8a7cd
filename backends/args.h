/* args.h - the "key=value,..." text after "name:" in a backend spec, read
 * the same way for every backend. Not part of the public API. */
#ifndef RMIG_BACKEND_ARGS_H
#define RMIG_BACKEND_ARGS_H

#include <stdint.h>

#include "rmig_backend.h"

/* Called for each pair. Return 0; -ENOENT for a key it does not know;
 * another negative errno for a bad value, after rmig_backend_err() if the
 * standard "bad value" line would not say enough. */
typedef int (*rmig_backend_arg_fn)(struct rmig_backend *be, void *state, const char *key,
				   const char *value);

/* Call one() for each pair of args in order; stop at the first error, with
 * be->err naming it ("NAME: expected key=value, got 'x'", "NAME: unknown
 * option 'k'" followed by " (usage)" when usage is given, "NAME: bad value
 * 'v' for k"). 0 or a negative errno (-EINVAL for an unknown key). */
int rmig_backend_args_each(struct rmig_backend *be, const char *args, const char *usage,
			   rmig_backend_arg_fn one, void *state);

/* A decimal (or 0x... with base 0) number in [min, max]: 0 or -EINVAL. */
int rmig_backend_arg_u64(const char *value, int base, uint64_t min, uint64_t max, uint64_t *out);

#endif
