/* info.h - `rmig info`: the transports, each backend with what it needs on
 * this host, post-copy, memlock, huge pages, NUMA. */
#ifndef RMIG_TOOL_INFO_H
#define RMIG_TOOL_INFO_H

/* Print the report on stdout; 0, or 1 when out of memory. */
int info_command(const char *rails);

#endif
