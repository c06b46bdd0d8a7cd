/* admission.h - room for one more unproven connection: the policy the
 * engine's listener and the tunnel's door share.
 *
 * Anyone who can reach a port can connect, and a connection proves itself
 * (TLS, HELLO, AUTH) only after an opening that takes milliseconds when
 * honest. So unproven connections are capped in all and per address
 * (IPv6: per /64, which one host commonly holds), and a newcomer gets in
 * by cutting an idler:
 * - an address at its cap loses its own oldest, unless that one is
 *   younger than evict_age_ms: then the newcomer is refused at once, so a
 *   storm from one address costs a close per connection and hurts only
 *   that address;
 * - at the total cap, the address holding the most loses its oldest,
 *   whatever its age: an attacker spread over several addresses pushes
 *   out its own connections, never a newcomer from elsewhere.
 * Pure: the caller keeps its openings, their threads and its lock, and
 * cuts whom it is told to.
 */
#ifndef RMIG_ADMISSION_H
#define RMIG_ADMISSION_H

#include <stddef.h>
#include <stdint.h>

#define RMIG_ADMIT_ADDR_LEN 64

struct rmig_admit_policy {
	unsigned max_total;    /* unproven connections at once */
	unsigned max_per_addr; /* of those, from one address */
	int64_t evict_age_ms;  /* see above */
};

/* One live opening: not ended, not cut yet. */
struct rmig_admit_opening {
	const char *addr; /* rmig_admit_addr's */
	int64_t since_ms;
};

enum {
	RMIG_ADMIT_ROOM = -1,	/* admit the newcomer */
	RMIG_ADMIT_REFUSE = -2, /* refuse it */
};

/* The address of peer ("a.b.c.d:port", "[v6]:port") as admission counts
 * it: IPv4 whole, IPv6 its /64 ("2001:db8::/64"). */
void rmig_admit_addr(const char *peer, char *out, size_t len);

/* For a newcomer from addr, among the n live openings o[]: RMIG_ADMIT_ROOM,
 * RMIG_ADMIT_REFUSE, or the index in o[] of the opening to cut for it
 * (then admit it). For a cut or a refusal, why says so. */
int rmig_admit_decide(const struct rmig_admit_policy *pol, const struct rmig_admit_opening *o,
		      unsigned n, const char *addr, int64_t now_ms, char *why, size_t len);

#endif
