/* journal.h - stderr as the journal sees it: under systemd (JOURNAL_STREAM
 * names stderr's device:inode) each line starts with its syslog priority,
 * "<3>" for an error (sd-daemon(3)), which the journal takes and strips;
 * elsewhere lines are plain. */
#ifndef RMIG_TOOL_JOURNAL_H
#define RMIG_TOOL_JOURNAL_H

#include <syslog.h>

/* stderr is the journal's stream (asked once). */
int journal_stderr(void);
/* One line (fmt ends with \n) on stderr at priority prio (LOG_ERR, ...),
 * written at once, so that threads' lines do not mix. */
void journal_line(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
