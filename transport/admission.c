/* admission.c - room for one more unproven connection. See admission.h. */
#include "admission.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

void rmig_admit_addr(const char *peer, char *out, size_t len)
{
	const char *colon = strrchr(peer, ':');
	size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
	struct in6_addr a6;
	char v6[INET6_ADDRSTRLEN];

	if (peer[0] == '[' && n >= 2 && n - 2 < sizeof(v6)) {
		memcpy(v6, peer + 1, n - 2);
		v6[n - 2] = 0;
		if (inet_pton(AF_INET6, v6, &a6) == 1 && !IN6_IS_ADDR_V4MAPPED(&a6)) {
			memset(a6.s6_addr + 8, 0, 8);
			inet_ntop(AF_INET6, &a6, v6, sizeof(v6));
			snprintf(out, len, "%s/64", v6);
			return;
		}
	}
	snprintf(out, len, "%.*s", (int)n, peer);
}

/* How many of o[] come from addr, and the oldest of them (-1: none). */
static unsigned held_by(const struct rmig_admit_opening *o, unsigned n, const char *addr,
			int *oldest)
{
	unsigned held = 0;

	*oldest = -1;
	for (unsigned i = 0; i < n; i++) {
		if (strcmp(o[i].addr, addr))
			continue;
		held++;
		if (*oldest < 0 || o[i].since_ms < o[*oldest].since_ms)
			*oldest = (int)i;
	}
	return held;
}

int rmig_admit_decide(const struct rmig_admit_policy *pol, const struct rmig_admit_opening *o,
		      unsigned n, const char *addr, int64_t now_ms, char *why, size_t len)
{
	int mine, victim = -1;
	unsigned held = held_by(o, n, addr, &mine), most = 0;

	if (held >= pol->max_per_addr) {
		snprintf(why, len, "dropped: %u unauthenticated connections from %s at once",
			 pol->max_per_addr, addr);
		return now_ms - o[mine].since_ms < pol->evict_age_ms ? RMIG_ADMIT_REFUSE : mine;
	}
	if (n < pol->max_total)
		return RMIG_ADMIT_ROOM;
	/* The address holding the most; between equals, the older opening. */
	for (unsigned i = 0; i < n; i++) {
		int oldest;
		unsigned h = held_by(o, n, o[i].addr, &oldest);

		if (h > most || (h == most && o[oldest].since_ms < o[victim].since_ms)) {
			most = h;
			victim = oldest;
		}
	}
	snprintf(why, len, "dropped: %u unauthenticated connections at once, %u from %s",
		 pol->max_total, most, o[victim].addr);
	return victim;
}
