/* last_error.h - the thread's last error, behind rmig_last_error(): every
 * public function that fails leaves its one-line message here as it
 * returns its negative errno. Any folder may include this (it includes no
 * other header of the project). */
#ifndef RMIG_LAST_ERROR_H
#define RMIG_LAST_ERROR_H

/* Sets the calling thread's message and returns rc, so that a public
 * function can end with `return rmig_fail(rc, "...", ...)`. */
int rmig_fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* rmig_fail for a message already formatted (NULL or "": strerror(-rc)). */
int rmig_fail_msg(int rc, const char *msg);

/* A public function whose ABI changed: its current version is defined as
 * NAME_0_3 (say) with RMIG_VERSIONED in front, and named with
 * RMIG_DEFAULT_VERSION(NAME_0_3, NAME, "RMIG_0.3"): programs linking now
 * bind NAME@@RMIG_0.3 (a static link resolves NAME to it too); the old
 * version is api/abi_0_2.c's. Top-level .symver, not GCC's symver
 * attribute: clang (the fuzz build) ignores that one. */
#define RMIG_VERSIONED __attribute__((visibility("default")))
#define RMIG_DEFAULT_VERSION(impl, name, node) __asm__(".symver " #impl ", " #name "@@" node)

#endif
