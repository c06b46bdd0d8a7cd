/* args.c - see args.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "last_error.h"
#include "rmig.h"

int rmig_backend_args_each(struct rmig_backend *be, const char *args, const char *usage,
			   rmig_backend_arg_fn one, void *state)
{
	const char *name = be->ops->name;
	char *copy = strdup(args), *save = NULL, *tok;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq) {
			rmig_backend_err(be, "%s: expected key=value, got '%s'", name, tok);
			rc = -EINVAL;
			break;
		}
		*eq = 0;
		be->err[0] = 0;
		rc = one(be, state, tok, eq + 1);
		if (rc == -ENOENT) {
			rmig_backend_err(be, "%s: unknown option '%s'%s%s%s", name, tok,
					 usage ? " (" : "", usage ? usage : "", usage ? ")" : "");
			rc = -EINVAL;
		} else if (rc && !be->err[0])
			rmig_backend_err(be, "%s: bad value '%s' for %s", name, eq + 1, tok);
	}
	free(copy);
	return rc;
}

int rmig_backend_arg_u64(const char *value, int base, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(value, &end, base);
	if (end == value || *end || errno || *value == '-' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Public (rmig.h): sizes in backend specs and on the command line. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	/* Digits first: strtoull would skip white space and wrap a minus sign. */
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 0: break;
	case 'k':
	case 'K': shift = 10; break;
	case 'm':
	case 'M': shift = 20; break;
	case 'g':
	case 'G': shift = 30; break;
	case 't':
	case 'T': shift = 40; break;
	default: return -EINVAL;
	}
	if (*end && end[1] && strcmp(end + 1, "i") && strcmp(end + 1, "iB") && strcmp(end + 1, "B"))
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

int rmig_parse_size(const char *s, uint64_t *out)
{
	int rc = s && out ? parse_size(s, out) : -EINVAL;

	if (rc == -ERANGE)
		return rmig_fail(rc, "size '%s' is too large", s);
	if (rc)
		return rmig_fail(rc, "'%s' is not a size (a number, optionally with K, M, G or T)",
				 s ? s : "(null)");
	return 0;
}
