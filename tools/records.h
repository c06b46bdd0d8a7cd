/* records.h - migration records (--record DIR): one JSON file per
 * migration and side, with every event and the summary as --json prints
 * them; rmig history DIR lists them. */
#ifndef RMIG_TOOL_RECORDS_H
#define RMIG_TOOL_RECORDS_H

#include <stddef.h>
#include <stdio.h>

struct record;

/* Open DIR/<UTC time>-<role>-<pid>.json (DIR is made, mode 0700, if it is
 * missing; the file is 0600: it names peers). NULL with err set. */
struct record *record_open(const char *dir, const char *role, char *err, size_t errlen);
/* The stream JSON lines go to: the record, and `also` (stdout with
 * --json) when not NULL. Line-buffered. */
FILE *record_stream(struct record *r, FILE *also);
void record_close(struct record *r);
/* Close and remove: nothing happened worth keeping (a wait for a sender
 * that ended without one). */
void record_discard(struct record *r);

/* rmig history DIR [--json]: one line per record, oldest first. */
int history_command(int argc, char *argv[]);

#endif
