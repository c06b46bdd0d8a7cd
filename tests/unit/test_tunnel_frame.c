/* test_tunnel_frame.c - the tunnel's frame decoder checks every number from
 * the wire: each type's length bounds (one below, at, one above), the
 * stream number each type allows, the reserved bytes, unknown types; and
 * what it accepts decodes to what was encoded. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

static int decode(uint8_t type, uint32_t stream, uint32_t len)
{
	struct tun_hdr h = { .stream = stream, .len = len, .type = type }, back;
	uint8_t b[TUN_HDR_LEN];
	char err[160] = "";
	int rc;

	tun_hdr_encode(&h, b);
	rc = tun_hdr_decode(b, &back, err, sizeof(err));
	if (rc) {
		assert_int_equal(rc, -EPROTO);
		assert_true(err[0] != 0);
	} else {
		assert_int_equal(back.stream, stream);
		assert_int_equal(back.len, len);
		assert_int_equal(back.type, type);
	}
	return rc;
}

struct bounds {
	uint8_t type;
	uint32_t min, max;
	int on_stream_0;
};

static const struct bounds table[] = {
	{ TUN_HELLO, TUN_HELLO_LEN, TUN_HELLO_LEN, 1 },
	{ TUN_PING, 0, 0, 1 },
	{ TUN_OPEN, 1, TUN_MAX_NAME, 0 },
	{ TUN_DATA, 1, TUN_MAX_DATA, 0 },
	{ TUN_EOF, 0, 0, 0 },
	{ TUN_CLOSE, 0, TUN_MAX_MSG, 0 },
	{ TUN_WINDOW, 8, 8, 0 },
	{ TUN_STATE, 8, 8 + TUN_STATE_MAX *TUN_STATE_ENTRY, 1 },
	{ TUN_REFUSE, 1, TUN_MAX_MSG, 1 },
};

static void length_bounds(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const struct bounds *b = &table[i];
		uint32_t stream = b->on_stream_0 ? 0 : 7;

		assert_int_equal(decode(b->type, stream, b->min), 0);
		assert_int_equal(decode(b->type, stream, b->max), 0);
		assert_int_equal(decode(b->type, stream, b->max + 1), -EPROTO);
		assert_int_equal(decode(b->type, stream, UINT32_MAX), -EPROTO);
		if (b->min)
			assert_int_equal(decode(b->type, stream, b->min - 1), -EPROTO);
	}
}

static void stream_numbers(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const struct bounds *b = &table[i];

		/* tunnel frames only on stream 0, stream frames never on it */
		assert_int_equal(decode(b->type, b->on_stream_0 ? 1 : 0, b->min), -EPROTO);
		assert_int_equal(decode(b->type, b->on_stream_0 ? UINT32_MAX : 0, b->min), -EPROTO);
		if (!b->on_stream_0)
			assert_int_equal(decode(b->type, UINT32_MAX, b->min), 0);
	}
}

static void unknown_types(void **state)
{
	(void)state;
	for (unsigned type = 0; type < 256; type++) {
		int known = type >= TUN_HELLO && type <= TUN_REFUSE;

		if (!known) {
			assert_int_equal(decode((uint8_t)type, 0, 0), -EPROTO);
			assert_int_equal(decode((uint8_t)type, 5, 0), -EPROTO);
		}
	}
}

static void reserved_bytes(void **state)
{
	struct tun_hdr h = { .stream = 3, .len = 10, .type = TUN_DATA }, back;
	char err[160];

	(void)state;
	for (int at = 9; at < TUN_HDR_LEN; at++) {
		uint8_t b[TUN_HDR_LEN];

		tun_hdr_encode(&h, b);
		b[at] = 1;
		assert_int_equal(tun_hdr_decode(b, &back, err, sizeof(err)), -EPROTO);
	}
}

static void big_endian(void **state)
{
	uint8_t b[TUN_HDR_LEN] = { 0, 0, 1, 2, 0, 0, 0, 5, TUN_DATA, 0, 0, 0 };
	struct tun_hdr h;
	char err[160];

	(void)state;
	assert_int_equal(tun_hdr_decode(b, &h, err, sizeof(err)), 0);
	assert_int_equal(h.stream, 0x102);
	assert_int_equal(h.len, 5);
	assert_int_equal(tun_get32((const uint8_t *)"\x80\x00\x00\x01"), 0x80000001u);
	assert_true(tun_get64((const uint8_t *)"\x80\x00\x00\x01\x00\x00\x00\x02") ==
		    0x8000000100000002ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(length_bounds), cmocka_unit_test(stream_numbers),
		cmocka_unit_test(unknown_types), cmocka_unit_test(reserved_bytes),
		cmocka_unit_test(big_endian),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
