/* test_admission.c - who gets in while others are still opening
 * (transport/admission.c): the caps, who is cut for a newcomer, and how
 * addresses are counted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "admission.h"

static const struct rmig_admit_policy pol = { .max_total = 4,
					      .max_per_addr = 2,
					      .evict_age_ms = 1000 };

static int decide(const struct rmig_admit_opening *o, unsigned n, const char *addr, int64_t now,
		  char *why)
{
	return rmig_admit_decide(&pol, o, n, addr, now, why, 128);
}

static void test_room_under_the_caps(void **state)
{
	struct rmig_admit_opening o[] = { { "10.0.0.1", 100 }, { "10.0.0.2", 200 } };
	char why[128] = "";

	(void)state;
	assert_int_equal(decide(o, 0, "10.0.0.1", 300, why), RMIG_ADMIT_ROOM);
	assert_int_equal(decide(o, 2, "10.0.0.1", 300, why), RMIG_ADMIT_ROOM);
}

/* An address at its cap: refused while its own are young, else its
 * oldest is cut - never someone else's. */
static void test_address_at_its_cap(void **state)
{
	struct rmig_admit_opening o[] = { { "10.0.0.9", 50 },
					  { "10.0.0.1", 500 },
					  { "10.0.0.1", 400 } };
	char why[128] = "";

	(void)state;
	assert_int_equal(decide(o, 3, "10.0.0.1", 1300, why), RMIG_ADMIT_REFUSE);
	assert_non_null(strstr(why, "2 unauthenticated connections from 10.0.0.1"));
	assert_int_equal(decide(o, 3, "10.0.0.1", 1400, why), 2); /* 400 is 1000 ms old */
}

/* At the total cap, the address holding the most loses its oldest, even
 * a young one: the newcomer from elsewhere always gets in. */
static void test_total_cap_cuts_the_biggest_holder(void **state)
{
	struct rmig_admit_opening o[] = {
		{ "10.0.0.1", 10 }, { "10.0.0.2", 900 }, { "10.0.0.3", 20 }, { "10.0.0.2", 800 }
	};
	char why[128] = "";

	(void)state;
	assert_int_equal(decide(o, 4, "10.0.0.7", 1000, why), 3);
	assert_non_null(strstr(why, "4 unauthenticated connections at once, 2 from 10.0.0.2"));
	/* Equal holders: the older opening goes. */
	o[3].addr = "10.0.0.4";
	assert_int_equal(decide(o, 4, "10.0.0.7", 1000, why), 0);
}

/* IPv6 counts by /64: a host with a /64 cannot spread over it. */
static void test_addresses(void **state)
{
	char a[RMIG_ADMIT_ADDR_LEN], b[RMIG_ADMIT_ADDR_LEN];

	(void)state;
	rmig_admit_addr("192.0.2.7:5000", a, sizeof(a));
	assert_string_equal(a, "192.0.2.7");
	rmig_admit_addr("[2001:db8:1:2:aaaa::1]:5000", a, sizeof(a));
	rmig_admit_addr("[2001:db8:1:2:bbbb::9]:6000", b, sizeof(b));
	assert_string_equal(a, "2001:db8:1:2::/64");
	assert_string_equal(a, b);
	rmig_admit_addr("[2001:db8:1:3::1]:5000", b, sizeof(b));
	assert_string_not_equal(a, b);
	rmig_admit_addr("[::ffff:192.0.2.7]:5000", a, sizeof(a));
	assert_string_equal(a, "[::ffff:192.0.2.7]");
	rmig_admit_addr("[not an address]:1", a, sizeof(a));
	assert_string_equal(a, "[not an address]");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_room_under_the_caps),
		cmocka_unit_test(test_address_at_its_cap),
		cmocka_unit_test(test_total_cap_cuts_the_biggest_holder),
		cmocka_unit_test(test_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
