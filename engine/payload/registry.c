/* registry.c - payload kinds by name, and which of them a migration
 * carries. A new payload is a file in this folder plus a line here. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "payload.h"

/* The first layout of the table, today's, is the oldest accepted: ops added
 * after load_cleanup later will read as NULL in tables of this size. */
#define PAYLOAD_OPS_MIN (offsetof(struct rmig_payload_ops, load_cleanup) + sizeof(void *))

static struct rmig_payload_ops kinds[RMIG_PAYLOAD_MAX];
static size_t nkinds;
static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;

static int add_kind(const struct rmig_payload_ops *ops)
{
	if (!ops || !ops->name || !ops->wanted || ops->size < PAYLOAD_OPS_MIN ||
	    ops->size > sizeof(*ops))
		return -EINVAL;
	for (size_t i = 0; i < nkinds; i++)
		if (!strcmp(kinds[i].name, ops->name))
			return -EEXIST;
	if (nkinds == RMIG_PAYLOAD_MAX)
		return -ENOSPC;
	/* Our own full-size copy, so that ops a table predates read as NULL. */
	memset(&kinds[nkinds], 0, sizeof(kinds[0]));
	memcpy(&kinds[nkinds], ops, ops->size);
	nkinds++;
	return 0;
}

static void register_builtins(void)
{
	add_kind(&rmig_memory_payload);
	add_kind(&rmig_stream_payload);
	add_kind(&rmig_disk_payload);
}

int rmig_payload_register(const struct rmig_payload_ops *ops)
{
	int rc;

	pthread_once(&builtins_once, register_builtins);
	pthread_mutex_lock(&kinds_lock);
	rc = add_kind(ops);
	pthread_mutex_unlock(&kinds_lock);
	return rc;
}

int rmig_payloads_choose(struct rmig_ctx *ctx, struct rmig_payload_set *set)
{
	pthread_once(&builtins_once, register_builtins);
	set->n = 0;
	pthread_mutex_lock(&kinds_lock);
	for (size_t i = 0; i < nkinds; i++)
		if (kinds[i].wanted(ctx))
			set->p[set->n++] = (struct rmig_payload){ .ops = &kinds[i], .ctx = ctx };
	pthread_mutex_unlock(&kinds_lock);
	return set->n ? 0
		      : rmig_err(ctx, -EINVAL, "nothing to migrate: no payload takes this guest");
}

int rmig_payloads_failed(struct rmig_payload_set *set, char *why, size_t whylen)
{
	RMIG_EACH_PAYLOAD(set, p)
	{
		if (p->ops->load_failed && p->ops->load_failed(p, why, whylen))
			return 1;
	}
	return 0;
}
