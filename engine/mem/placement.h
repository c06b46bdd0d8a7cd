/* placement.h - where memory lives and where threads run, via libnuma. On a
 * machine without NUMA every node is -1 and nothing is bound: callers need
 * no special cases. */
#ifndef RMIG_PLACEMENT_H
#define RMIG_PLACEMENT_H

#include <stddef.h>

/* The node holding the page at addr (touching nothing), or -1. */
int rmig_numa_node_of(const void *addr);
/* Run the calling thread on the CPUs of node (no-op for -1 or an unknown
 * node). 0 or a negative errno. */
int rmig_numa_run_on_node(int node);
/* 1 if node exists here. */
int rmig_numa_node_exists(int node);

#endif
