/* backend_open.c - opens each backend spec given, as a source, through
 * librmig.so.0 and prints what came back, one line each: "SPEC rc=N
 * err=MESSAGE"; an argument "?NAME" prints "?NAME found" or "?NAME
 * missing" (rmig_backend_find). Built by tests/e2e/t_modules.sh and
 * t_install.sh against the shared library alone, as an embedder would. */
#include <stdio.h>
#include <rmig_backend.h>

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		struct rmig_backend *be = NULL;
		char err[512] = "";
		int rc;

		if (argv[i][0] == '?') {
			printf("%s %s\n", argv[i], rmig_backend_find(argv[i] + 1) ? "found" : "missing");
			continue;
		}
		rc = rmig_backend_open(argv[i], RMIG_ROLE_SOURCE, &be, err, sizeof(err));
		printf("%s rc=%d err=%s\n", argv[i], rc, err);
		rmig_backend_close(be);
	}
	return 0;
}
