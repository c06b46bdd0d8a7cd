/* placement.c - NUMA placement queries for the engine (see placement.h). */
#include <errno.h>
#include <numa.h>
#include <numaif.h>

#include "placement.h"

int rmig_numa_node_exists(int node)
{
	return node >= 0 && numa_available() >= 0 && node <= numa_max_node() &&
	       numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node);
}

int rmig_numa_node_of(const void *addr)
{
	int node = -1;

	if (numa_available() < 0)
		return -1;
	/* MPOL_F_NODE|MPOL_F_ADDR: the node of the page at addr, if present. */
	if (get_mempolicy(&node, NULL, 0, (void *)addr, MPOL_F_NODE | MPOL_F_ADDR))
		return -1;
	return node;
}

int rmig_numa_run_on_node(int node)
{
	if (!rmig_numa_node_exists(node))
		return 0;
	return numa_run_on_node(node) ? -errno : 0;
}
