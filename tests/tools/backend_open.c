/* backend_open.c - opens each backend spec given, as a source, through
 * librmig.so.0 and prints what came back, one line each: "SPEC rc=N
 * err=MESSAGE"; an argument "?NAME" prints "?NAME found" or "?NAME
 * missing" (rmig_backend_find); "+NAME" registers a table called NAME
 * and prints "+NAME rc=N" (rmig_backend_register); "@DIR" changes to
 * directory DIR (modules are found beside the library wherever the
 * process has gone since) and prints "@DIR rc=N". Built by
 * tests/e2e/t_modules.sh and t_install.sh against the shared library
 * alone, as an embedder would. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <rmig_backend.h>

static int create(struct rmig_backend *be, const char *args, enum rmig_role role)
{
	(void)be, (void)args, (void)role;
	return 0;
}

static void destroy(struct rmig_backend *be)
{
	(void)be;
}

static int get_regions(struct rmig_backend *be, const struct rmig_region **regions, size_t *count)
{
	(void)be, (void)regions, (void)count;
	return -ENOTSUP;
}

static void register_one(const char *name)
{
	struct rmig_backend_ops ops = { .size = sizeof(ops),
					.name = name,
					.create = create,
					.destroy = destroy,
					.get_regions = get_regions };

	printf("+%s rc=%d\n", name, rmig_backend_register(&ops));
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		struct rmig_backend *be = NULL;
		char err[512] = "";
		int rc;

		if (argv[i][0] == '+') {
			register_one(argv[i] + 1);
			continue;
		}
		if (argv[i][0] == '@') {
			printf("%s rc=%d\n", argv[i], chdir(argv[i] + 1));
			continue;
		}
		if (argv[i][0] == '?') {
			printf("%s %s\n", argv[i],
			       rmig_backend_find(argv[i] + 1) ? "found" : "missing");
			continue;
		}
		rc = rmig_backend_open(argv[i], RMIG_ROLE_SOURCE, &be, err, sizeof(err));
		printf("%s rc=%d err=%s\n", argv[i], rc, err);
		rmig_backend_close(be);
	}
	return 0;
}
