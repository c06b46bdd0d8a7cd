/* test_proto.c - wire format: round trips, every malformed case, and a
 * deterministic mini-fuzzer over rmig_frame_decode_buf and the PAGES decoders.
 *
 * Decoders are always fed heap buffers of the exact frame size so that
 * AddressSanitizer (make SAN=1) catches any read past the frame.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "proto.h"

#ifdef __SANITIZE_ADDRESS__
/* The fuzzer frees 200k exact-size buffers: keep ASan's quarantine of freed
 * memory small (the default holds 256 MiB). */
const char *__asan_default_options(void);
__attribute__((visibility("default"), used)) const char *__asan_default_options(void)
{
	return "quarantine_size_mb=32";
}
#endif

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* An exact-size heap copy, so ASan sees any over-read. */
static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);

	assert_non_null(q);
	if (n)
		memcpy(q, p, n);
	return q;
}

/* A large zero buffer that costs nothing until touched. */
static uint8_t *map_zero(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

/* Expect a decoder failure: -EBADMSG and a non-empty reason. */
#define EXPECT_BAD(err, call)                                                                      \
	do {                                                                                       \
		int rc_;                                                                           \
		memset((err), 0, sizeof(err));                                                     \
		rc_ = (call);                                                                      \
		assert_int_equal(rc_, -EBADMSG);                                                   \
		assert_true((err)[0] != 0);                                                        \
	} while (0)

#define EXPECT_OK(err, call)                                                                       \
	do {                                                                                       \
		int rc_;                                                                           \
		memset((err), 0, sizeof(err));                                                     \
		rc_ = (call);                                                                      \
		if (rc_)                                                                           \
			print_error("unexpected failure: %s\n", (err));                            \
		assert_int_equal(rc_, 0);                                                          \
	} while (0)

/* STATE and MEM_KEYS carry opaque bytes, decoded as a pointer into the frame. */
static int is_blob(uint8_t type)
{
	return type == RMIG_MSG_STATE || type == RMIG_MSG_MEM_KEYS || type == RMIG_MSG_STREAM;
}

/* Header + encoded payload in one exact-size heap buffer. */
static uint8_t *make_frame(const struct rmig_msg *m, uint16_t flags, uint64_t seq, size_t *outlen)
{
	static uint8_t tmp[RMIG_FRAME_HDR_LEN + RMIG_MAX_MEM_KEYS + 4096];
	size_t len;

	if (is_blob(m->type)) {
		len = m->u.state.len;
		assert_true(len <= sizeof(tmp) - RMIG_FRAME_HDR_LEN);
		if (len)
			memcpy(tmp + RMIG_FRAME_HDR_LEN, m->u.state.data, len);
	} else {
		len =
		    rmig_msg_encode(m, tmp + RMIG_FRAME_HDR_LEN, sizeof(tmp) - RMIG_FRAME_HDR_LEN);
		assert_true(len > 0);
	}
	rmig_frame_hdr_encode(tmp, m->type, flags, (uint32_t)len, seq);
	*outlen = RMIG_FRAME_HDR_LEN + len;
	return dup_exact(tmp, *outlen);
}

/* A raw frame: header with the given type/len, then payload bytes. */
static uint8_t *raw_frame(uint8_t type, uint32_t hdr_len, const uint8_t *payload, size_t plen,
			  size_t *outlen)
{
	uint8_t *p = malloc(RMIG_FRAME_HDR_LEN + plen);

	assert_non_null(p);
	rmig_frame_hdr_encode(p, type, 0, hdr_len, 0);
	if (plen)
		memcpy(p + RMIG_FRAME_HDR_LEN, payload, plen);
	*outlen = RMIG_FRAME_HDR_LEN + plen;
	return p;
}

/* Encode m, frame it, decode it two ways (whole frame and payload alone),
 * check the header fields, and return the frame-decoded message in *out.
 * The encoded frame is returned too (STATE's data points into it). */
static uint8_t *roundtrip(const struct rmig_msg *in, struct rmig_msg *out, size_t *flen)
{
	char err[256];
	struct rmig_frame_hdr fh;
	struct rmig_msg m2;
	uint16_t flags = (uint16_t)rnd();
	uint64_t seq = rnd();
	uint8_t *f = make_frame(in, flags, seq, flen);
	uint8_t *payload;

	memset(&fh, 0xa5, sizeof(fh));
	EXPECT_OK(err, rmig_frame_hdr_decode(f, &fh, err, sizeof(err)));
	assert_int_equal(fh.type, in->type);
	assert_int_equal(fh.flags, flags);
	assert_int_equal(fh.len, *flen - RMIG_FRAME_HDR_LEN);
	assert_true(fh.seq == seq);

	memset(out, 0x5a, sizeof(*out));
	EXPECT_OK(err, rmig_frame_decode_buf(f, *flen, NULL, out, err, sizeof(err)));
	assert_int_equal(out->type, in->type);

	/* The payload alone decodes the same. */
	payload = dup_exact(f + RMIG_FRAME_HDR_LEN, fh.len);
	memset(&m2, 0x33, sizeof(m2));
	EXPECT_OK(err, rmig_msg_decode(in->type, payload, fh.len, &m2, err, sizeof(err)));
	assert_int_equal(m2.type, in->type);
	if (!is_blob(in->type)) {
		uint8_t a[4096], b[4096];
		size_t la = rmig_msg_encode(out, a, sizeof(a));
		size_t lb = rmig_msg_encode(&m2, b, sizeof(b));

		assert_int_equal(la, lb);
		assert_memory_equal(a, b, la);
	}
	free(payload);

	/* Every encoder refuses a buffer one byte short, and writes nothing past it. */
	if (!is_blob(in->type) || fh.len) {
		size_t need = fh.len;
		uint8_t *small = malloc(need - 1 ? need - 1 : 1);

		assert_non_null(small);
		assert_int_equal(rmig_msg_encode(in, small, need - 1), 0);
		free(small);
	}
	return f;
}

/* ---- header ---- */

static void test_msg_name(void **state)
{
	(void)state;
	assert_string_equal(rmig_msg_name(RMIG_MSG_HELLO), "HELLO");
	assert_string_equal(rmig_msg_name(RMIG_MSG_PAGES), "PAGES");
	assert_string_equal(rmig_msg_name(RMIG_MSG_DONE), "DONE");
	assert_string_equal(rmig_msg_name(0), "UNKNOWN");
	assert_string_equal(rmig_msg_name(RMIG_MSG_TYPE_COUNT), "UNKNOWN");
	assert_string_equal(rmig_msg_name(0xffffffffu), "UNKNOWN");
	for (unsigned t = 1; t < RMIG_MSG_TYPE_COUNT; t++) {
		assert_non_null(rmig_msg_name(t));
		assert_string_not_equal(rmig_msg_name(t), "UNKNOWN");
	}
}

static void test_hdr_layout(void **state)
{
	uint8_t h[RMIG_FRAME_HDR_LEN];

	(void)state;
	memset(h, 0xee, sizeof(h));
	rmig_frame_hdr_encode(h, RMIG_MSG_ROUND_END, 0xbeef, 0x01020304u, 0x1122334455667788ull);
	assert_memory_equal(h, "RMIG", 4);
	assert_int_equal(h[4], RMIG_WIRE_VERSION_MAX);
	assert_int_equal(h[5], RMIG_MSG_ROUND_END);
	assert_int_equal(h[6], 0xef);
	assert_int_equal(h[7], 0xbe);
	assert_int_equal(rd32(h + 8), 0x01020304u);
	assert_int_equal(rd32(h + 12), 0); /* reserved */
	assert_true(rd64(h + 16) == 0x1122334455667788ull);
}

static void test_hdr_roundtrip(void **state)
{
	static const uint8_t types[] = { RMIG_MSG_HELLO, RMIG_MSG_PAGES, RMIG_MSG_STATE,
					 RMIG_MSG_HEARTBEAT, RMIG_MSG_DONE };
	static const uint32_t lens[] = { RMIG_HELLO_LEN, RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN + 4096,
					 12345, RMIG_U64_MSG_LEN, RMIG_DONE_LEN };
	static const uint64_t seqs[] = { 0, 1, 0xffffffffull, 0x100000000ull, UINT64_MAX };
	static const uint16_t flags[] = { 0, 1, 0x8000, 0xffff };
	char err[256];

	(void)state;
	for (size_t t = 0; t < sizeof(types); t++)
		for (size_t s = 0; s < sizeof(seqs) / sizeof(seqs[0]); s++)
			for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
				uint8_t h[RMIG_FRAME_HDR_LEN];
				struct rmig_frame_hdr fh;

				rmig_frame_hdr_encode(h, types[t], flags[f], lens[t], seqs[s]);
				memset(&fh, 0, sizeof(fh));
				EXPECT_OK(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
				assert_int_equal(fh.type, types[t]);
				assert_int_equal(fh.flags, flags[f]);
				assert_int_equal(fh.len, lens[t]);
				assert_true(fh.seq == seqs[s]);
			}
}

struct bounds {
	uint8_t type;
	uint64_t min, max;
};

/* Derived from proto.h's documented layouts, not from wire.c's table. */
static const struct bounds type_bounds[] = {
	{ RMIG_MSG_HELLO, 64, 64 },	      /* the rails come after AUTH, in RAILS */
	{ RMIG_MSG_REGIONS, 8, 8 + 24 * 64 }, /* 0 regions: a hypervisor stream */
	{ RMIG_MSG_REGIONS_ACK, 8, 8 },
	{ RMIG_MSG_CHANNEL, 24, 24 },
	{ RMIG_MSG_PAGES, 16 + 16, 16 + 16 * 64 + (16u << 20) },
	{ RMIG_MSG_ZERO, 16 + 16, 16 + 16 * 64 },
	{ RMIG_MSG_ROUND_END, 32 + 8, 32 + 8 * 64 },
	{ RMIG_MSG_ROUND_ACK, 8, 8 },
	{ RMIG_MSG_STATE, 0, 64u << 20 },
	{ RMIG_MSG_COMPLETE, 8, 8 + 8 * 64 },
	{ RMIG_MSG_READY, 8, 8 },
	{ RMIG_MSG_GO, 8, 8 },
	{ RMIG_MSG_STARTED, 8, 8 },
	{ RMIG_MSG_ABORT, 8, 8 + 1024 },
	{ RMIG_MSG_HEARTBEAT, 8, 8 },
	{ RMIG_MSG_DONE, 32, 32 },
	{ RMIG_MSG_MEM_KEYS, 0, 64u << 10 },
	{ RMIG_MSG_AUTH, 32, 32 },
	{ RMIG_MSG_CHECK, 8, 8 },
	{ RMIG_MSG_STREAM, 1, 1u << 20 },
	{ RMIG_MSG_DISCARD, 8 + 16, 8 + 16 * 64 },
	{ RMIG_MSG_PAGE_REQUEST, 16, 16 },
	{ RMIG_MSG_PAGE_DATA, 16 + 4096, 16 + (2u << 20) },
	{ RMIG_MSG_MISSING, 8 + 16, 8 + 16 * 64 },
	{ RMIG_MSG_RECOVER, 8, 8 },
	{ RMIG_MSG_STREAM_ACK, 8, 8 },
	{ RMIG_MSG_DISKS, 8 + 64, 8 + 64 * 8 },
	{ RMIG_MSG_DISKS_ACK, 8, 8 },
	{ RMIG_MSG_BLOCKS, 16 + 16, 16 + 16 * 64 + (16u << 20) },
	{ RMIG_MSG_BLOCKS_ZERO, 16 + 16, 16 + 16 * 64 },
	{ RMIG_MSG_DISK_DIGESTS, 8 + 8, 8 + 8 * 8 },
	{ RMIG_MSG_RAILS, 8 + 56, 8 + 56 * 8 + 32 }, /* 1..8 rails, a MAC or none */
};

static void test_hdr_len_bounds(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(sizeof(type_bounds) / sizeof(type_bounds[0]), RMIG_MSG_TYPE_COUNT - 1);
	for (size_t i = 0; i < sizeof(type_bounds) / sizeof(type_bounds[0]); i++) {
		const struct bounds *b = &type_bounds[i];
		uint8_t h[RMIG_FRAME_HDR_LEN];
		struct rmig_frame_hdr fh;

		rmig_frame_hdr_encode(h, b->type, 0, (uint32_t)b->min, 7);
		EXPECT_OK(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
		rmig_frame_hdr_encode(h, b->type, 0, (uint32_t)b->max, 7);
		EXPECT_OK(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
		if (b->min > 0) {
			rmig_frame_hdr_encode(h, b->type, 0, (uint32_t)b->min - 1, 7);
			EXPECT_BAD(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
			/* The reason names the message type. */
			assert_non_null(strstr(err, rmig_msg_name(b->type)));
		}
		rmig_frame_hdr_encode(h, b->type, 0, (uint32_t)b->max + 1, 7);
		EXPECT_BAD(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
		rmig_frame_hdr_encode(h, b->type, 0, UINT32_MAX, 7);
		EXPECT_BAD(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));

		/* The control-message bound that senders size buffers by. */
		if (!rmig_is_data_frame(b->type)) {
			struct rmig_msg m = { .type = b->type };

			assert_int_equal(rmig_msg_max_len(&m), b->max);
		}
	}
}

static void test_hdr_bad_magic_version_type(void **state)
{
	char err[256];
	uint8_t h[RMIG_FRAME_HDR_LEN];
	struct rmig_frame_hdr fh;
	static const uint8_t bad_versions[] = { 0, RMIG_WIRE_VERSION_MAX + 1, 0x80, 0xff };
	static const uint8_t bad_types[] = { 0, RMIG_MSG_TYPE_COUNT, RMIG_MSG_TYPE_COUNT + 1, 0x80,
					     0xff };

	(void)state;
	for (int byte = 0; byte < 4; byte++)
		for (int bit = 0; bit < 8; bit++) {
			rmig_frame_hdr_encode(h, RMIG_MSG_GO, 0, 8, 0);
			h[byte] ^= (uint8_t)(1u << bit);
			EXPECT_BAD(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
			assert_non_null(strstr(err, "magic"));
		}
	for (size_t i = 0; i < sizeof(bad_versions); i++) {
		rmig_frame_hdr_encode(h, RMIG_MSG_GO, 0, 8, 0);
		h[4] = bad_versions[i];
		EXPECT_BAD(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
		assert_non_null(strstr(err, "version"));
	}
	for (size_t i = 0; i < sizeof(bad_types); i++) {
		rmig_frame_hdr_encode(h, bad_types[i], 0, 8, 0);
		EXPECT_BAD(err, rmig_frame_hdr_decode(h, &fh, err, sizeof(err)));
		assert_non_null(strstr(err, "type"));
	}
	/* No error buffer at all: still rejected, no crash. */
	rmig_frame_hdr_encode(h, 0, 0, 8, 0);
	assert_int_equal(rmig_frame_hdr_decode(h, &fh, NULL, 0), -EBADMSG);
	/* A one-byte error buffer is still NUL-terminated. */
	err[0] = 'x';
	assert_int_equal(rmig_frame_hdr_decode(h, &fh, err, 1), -EBADMSG);
	assert_int_equal(err[0], 0);
}

static void test_frame_truncated(void **state)
{
	char err[256];
	struct rmig_msg m = { .type = RMIG_MSG_DONE };
	struct rmig_msg out;
	uint8_t *f;
	size_t flen;

	(void)state;
	m.u.done.total_ms = 1;
	f = make_frame(&m, 0, 0, &flen);
	/* Every prefix is rejected: truncated header, then truncated payload. */
	for (size_t n = 0; n < flen; n++) {
		uint8_t *p = dup_exact(f, n);

		EXPECT_BAD(err, rmig_frame_decode_buf(p, n, NULL, &out, err, sizeof(err)));
		assert_non_null(strstr(err, "truncated"));
		free(p);
	}
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	free(f);
}

static void test_frame_len_past_buffer(void **state)
{
	char err[256];
	struct rmig_msg out;
	uint8_t payload[200] = { 0 };
	uint8_t *f;
	size_t flen;

	(void)state;
	/* STATE's header claims 100 bytes; the buffer holds 99. */
	f = raw_frame(RMIG_MSG_STATE, 100, payload, 99, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	free(f);
	/* Claims the maximum: buffer far too short. */
	f = raw_frame(RMIG_MSG_STATE, RMIG_MAX_STATE, payload, 200, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	free(f);
	/* A PAGES frame whose data is missing. */
	f = raw_frame(RMIG_MSG_PAGES, 16 + 16 + 4096, payload, 32, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	free(f);
	/* Exactly 100: fine; bytes after the frame are not its business. */
	f = raw_frame(RMIG_MSG_STATE, 100, payload, 100, &flen);
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	assert_int_equal(out.u.state.len, 100);
	free(f);
	f = raw_frame(RMIG_MSG_STATE, 100, payload, 150, &flen);
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	assert_int_equal(out.u.state.len, 100);
	free(f);
}

/* ---- control message round trips ---- */

static void test_rt_hello(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_HELLO }, out;
	uint8_t *f;
	size_t flen;
	static const uint32_t chans[] = { 1, 2, 63, 64 };

	(void)state;
	for (size_t c = 0; c < 4; c++) {
		m.u.hello.ver_min = 1;
		m.u.hello.ver_max = (uint16_t)(c + 1);
		m.u.hello.channels = chans[c];
		m.u.hello.caps = 0xdeadbeefcafef00dull ^ c;
		for (int i = 0; i < RMIG_NONCE_LEN; i++)
			m.u.hello.nonce[i] = (uint8_t)(0xf0 + i + c);
		m.u.hello.flags = 0x80000001u;
		m.u.hello.round = 0x01020304u + (uint32_t)c;
		for (int i = 0; i < RMIG_NONCE_LEN; i++)
			m.u.hello.session[i] = (uint8_t)(0x30 + i * 3 + c);
		f = roundtrip(&m, &out, &flen);
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_HELLO_LEN);
		assert_int_equal(out.u.hello.ver_min, m.u.hello.ver_min);
		assert_int_equal(out.u.hello.ver_max, m.u.hello.ver_max);
		assert_int_equal(out.u.hello.channels, m.u.hello.channels);
		assert_true(out.u.hello.caps == m.u.hello.caps);
		assert_memory_equal(out.u.hello.nonce, m.u.hello.nonce, RMIG_NONCE_LEN);
		assert_int_equal(out.u.hello.flags, m.u.hello.flags);
		assert_int_equal(out.u.hello.round, m.u.hello.round);
		assert_memory_equal(out.u.hello.session, m.u.hello.session, RMIG_NONCE_LEN);
		free(f);
	}
}

/* ---- RAILS: the destination's rails table, after AUTH ---- */

static void fill_rails(struct rmig_msg *m, uint32_t n, int with_mac)
{
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_RAILS;
	m->u.rails.nrails = n;
	for (uint32_t i = 0; i < n; i++) {
		struct rmig_wire_rail *r = &m->u.rails.rail[i];

		r->node = i == 7 ? -1 : (int32_t)(i * 100);
		r->family = i % 2 ? 6 : 4;
		for (int k = 0; k < (i % 2 ? 16 : 4); k++)
			r->addr[k] = (uint8_t)(10 + i + k);
		snprintf(r->name, sizeof(r->name), i == 3 ? "%031d" : "mlx5_%u", i);
	}
	m->u.rails.mac_len = with_mac ? RMIG_MAC_LEN : 0;
	for (int k = 0; with_mac && k < RMIG_MAC_LEN; k++)
		m->u.rails.mac[k] = (uint8_t)(0xa0 + k);
}

static void test_rt_rails(void **state)
{
	struct rmig_msg m, out;
	uint8_t *f;
	size_t flen;

	(void)state;
	for (int mac = 0; mac <= 1; mac++)
		for (uint32_t n = 1; n <= RMIG_MAX_RAILS; n++) {
			fill_rails(&m, n, mac);
			f = roundtrip(&m, &out, &flen);
			assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8 + 56 * n + (mac ? 32 : 0));
			assert_int_equal(out.u.rails.nrails, n);
			assert_int_equal(out.u.rails.mac_len, mac ? RMIG_MAC_LEN : 0);
			assert_memory_equal(out.u.rails.mac, m.u.rails.mac, RMIG_MAC_LEN);
			for (uint32_t i = 0; i < n; i++) {
				const struct rmig_wire_rail *a = &m.u.rails.rail[i],
							    *b = &out.u.rails.rail[i];

				assert_int_equal(b->node, a->node);
				assert_int_equal(b->family, a->family);
				assert_memory_equal(b->addr, a->addr, 16);
				assert_string_equal(b->name, a->name);
			}
			free(f);
		}
}

/* The table bytes (what the MAC covers) are the payload's first bytes,
 * with or without the MAC after them. */
static void test_rails_table_bytes(void **state)
{
	struct rmig_msg m;
	uint8_t with[RMIG_RAILS_MAX_LEN], without[RMIG_RAILS_MAX_LEN], table[RMIG_RAILS_MAX_LEN];
	uint8_t mac[RMIG_MAC_LEN];
	size_t a, b, t;

	(void)state;
	fill_rails(&m, 3, 1);
	memcpy(mac, m.u.rails.mac, sizeof(mac));
	a = rmig_msg_encode(&m, with, sizeof(with));
	t = rmig_rails_table_encode(&m.u.rails, table, sizeof(table));
	fill_rails(&m, 3, 0);
	b = rmig_msg_encode(&m, without, sizeof(without));
	assert_int_equal(t, 8 + 3 * 56);
	assert_int_equal(b, t);
	assert_int_equal(a, t + RMIG_MAC_LEN);
	assert_memory_equal(with, table, t);
	assert_memory_equal(without, table, t);
	assert_memory_equal(with + t, mac, RMIG_MAC_LEN);
}

/* The encoder writes no table it could not read back. */
static void test_rails_encode_refuses(void **state)
{
	struct rmig_msg m;
	uint8_t buf[RMIG_RAILS_MAX_LEN];

	(void)state;
	fill_rails(&m, 0, 0);
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	fill_rails(&m, 2, 0);
	m.u.rails.nrails = RMIG_MAX_RAILS + 1;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	fill_rails(&m, 2, 1);
	m.u.rails.mac_len = 16;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	fill_rails(&m, 2, 0);
	assert_int_equal(rmig_msg_encode(&m, buf, 8 + 56), 0); /* no room */
	fill_rails(&m, 2, 1);
	assert_int_equal(rmig_msg_encode(&m, buf, 8 + 2 * 56 + 31), 0); /* no room for the MAC */
}

/* Every field of the table from the wire is checked, and the MAC is all
 * or nothing. */
static void test_rails_bad(void **state)
{
	static const struct {
		size_t off; /* in the payload; SIZE_MAX: a length change only */
		uint8_t val;
		long dlen;
	} cases[] = {
		{ 0, 2, 0 },		     /* table version 2 */
		{ 0, 0, 0 },		     /* table version 0 */
		{ 1, 0, 0 },		     /* 0 rails */
		{ 1, 9, 0 },		     /* 9 rails */
		{ 1, 3, 0 },		     /* 3 announced, 2 there (and a MAC) */
		{ 1, 1, 0 },		     /* 1 announced, 2 there */
		{ 2, 1, 0 },		     /* reserved */
		{ 3, 1, 0 },		     /* reserved */
		{ 7, 1, 0 },		     /* reserved */
		{ 8 + 3, 0x80, 0 },	     /* node negative, below -1 */
		{ 8 + 1, 0x04, 0 },	     /* node 1024 */
		{ 8 + 4, 5, 0 },	     /* family 5 */
		{ 8 + 4, 0, 0 },	     /* family 0 */
		{ 8 + 5, 1, 0 },	     /* reserved in the entry */
		{ 8 + 7, 1, 0 },	     /* reserved in the entry */
		{ 8 + 12, 1, 0 },	     /* IPv4 with bytes past its 4 */
		{ 8 + 24, 0, 0 },	     /* empty name */
		{ 8 + 24 + 2, 0x07, 0 },     /* not printable */
		{ 8 + 24 + 2, ' ', 0 },	     /* not printable (a space) */
		{ 8 + 24 + 2, 0x7f, 0 },     /* not printable (DEL) */
		{ 8 + 24 + 20, 'x', 0 },     /* garbage after the NUL */
		{ 8 + 55, 'x', 0 },	     /* unterminated (with the ones before) */
		{ 8 + 56 + 4, 7, 0 },	     /* the second rail's family */
		{ SIZE_MAX, 0, -1 },	     /* a MAC of 31 bytes */
		{ SIZE_MAX, 0, 1 },	     /* a MAC of 33 bytes */
		{ SIZE_MAX, 0, -31 },	     /* a MAC of 1 byte */
		{ SIZE_MAX, 0, -33 },	     /* no MAC, the table a byte short */
		{ SIZE_MAX, 0, -(32 + 56) }, /* no MAC, one rail of the two */
		{ SIZE_MAX, 0, 56 },	     /* a third rail's bytes, not announced */
	};
	struct rmig_msg m, out;
	uint8_t good[RMIG_RAILS_MAX_LEN + 64], p[RMIG_RAILS_MAX_LEN + 64];
	char err[256];
	size_t len;

	(void)state;
	fill_rails(&m, 2, 1);
	len = rmig_msg_encode(&m, good, sizeof(good));
	assert_int_equal(len, 8 + 2 * 56 + 32);
	EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_RAILS, good, len, &out, err, sizeof(err)));
	/* Without its MAC it still decodes: whether one was due is the
	 * session's to say (a key or not). */
	EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_RAILS, good, len - 32, &out, err, sizeof(err)));
	assert_int_equal(out.u.rails.mac_len, 0);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t n = len + (size_t)cases[c].dlen;

		memcpy(p, good, sizeof(p));
		if (cases[c].off != SIZE_MAX)
			p[cases[c].off] = cases[c].val;
		if (cases[c].off == 8 + 55)
			memset(p + 8 + 24, 'a', 32);
		if (rmig_msg_decode(RMIG_MSG_RAILS, p, n, &out, err, sizeof(err)) != -EBADMSG)
			fail_msg("case %zu: decoded", c);
		assert_non_null(strstr(err, "RAILS"));
	}
}

/* The HELLO is 64 bytes again: a table after it is refused. */
static void test_hello_carries_no_rails(void **state)
{
	uint8_t buf[64 + 8 + 56];
	struct rmig_msg m;
	char err[256];

	(void)state;
	memset(buf, 0, sizeof(buf));
	buf[0] = buf[2] = 1; /* versions 1..1 */
	buf[4] = 2;	     /* channels */
	buf[8] = (uint8_t)RMIG_CAP_RAILS;
	EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_HELLO, buf, 64, &m, err, sizeof(err)));
	assert_true(m.u.hello.caps == RMIG_CAP_RAILS);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_HELLO, buf, sizeof(buf), &m, err, sizeof(err)));
}

static void fill_layout(struct rmig_layout *l, uint32_t n)
{
	memset(l, 0, sizeof(*l));
	l->count = n;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t ps = 4096u << (i % 10); /* 4K .. 2M */

		l->r[i].id = 1000 + i * 7;
		l->r[i].page_size = ps;
		l->r[i].gpa = (uint64_t)i << 36;
		l->r[i].len = (uint64_t)ps * (i + 1);
	}
}

static void test_rt_regions(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_REGIONS }, out;
	static const uint32_t counts[] = { 1, 2, 17, RMIG_MAX_REGIONS };
	char err[256];

	(void)state;
	for (size_t c = 0; c < 4; c++) {
		uint8_t *f;
		size_t flen;

		fill_layout(&m.u.layout, counts[c]);
		EXPECT_OK(err, rmig_layout_check(&m.u.layout, err, sizeof(err)));
		f = roundtrip(&m, &out, &flen);
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8 + 24 * counts[c]);
		assert_int_equal(out.u.layout.count, counts[c]);
		for (uint32_t i = 0; i < counts[c]; i++) {
			assert_int_equal(out.u.layout.r[i].id, m.u.layout.r[i].id);
			assert_int_equal(out.u.layout.r[i].page_size, m.u.layout.r[i].page_size);
			assert_true(out.u.layout.r[i].gpa == m.u.layout.r[i].gpa);
			assert_true(out.u.layout.r[i].len == m.u.layout.r[i].len);
			assert_int_equal(rmig_layout_find(&out.u.layout, m.u.layout.r[i].id),
					 (int)i);
		}
		assert_int_equal(rmig_layout_find(&out.u.layout, 999), -1);
		free(f);
	}
	/* Too many regions: the encoder refuses. */
	m.u.layout.count = RMIG_MAX_REGIONS + 1;
	{
		uint8_t buf[4096];

		assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	}
}

static void test_rt_channel(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_CHANNEL }, out;
	uint8_t *f;
	size_t flen;

	(void)state;
	for (int i = 0; i < RMIG_NONCE_LEN; i++)
		m.u.channel.token[i] = (uint8_t)(i * 17 + 3);
	for (uint32_t count = 1; count <= RMIG_MAX_CHANNELS; count += 21) {
		for (uint32_t idx = 0; idx<count; idx += count> 1 ? count - 1 : 1) {
			m.u.channel.index = idx;
			m.u.channel.count = count;
			f = roundtrip(&m, &out, &flen);
			assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_CHANNEL_LEN);
			assert_memory_equal(out.u.channel.token, m.u.channel.token, RMIG_NONCE_LEN);
			assert_int_equal(out.u.channel.index, idx);
			assert_int_equal(out.u.channel.count, count);
			free(f);
		}
	}
}

static void test_rt_round_end(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_ROUND_END }, out;
	static const uint32_t nchans[] = { 1, 3, RMIG_MAX_CHANNELS };
	uint8_t buf[4096];

	(void)state;
	for (size_t c = 0; c < 3; c++) {
		uint8_t *f;
		size_t flen;

		m.u.round_end.h.round = 0xfffffff0u + (uint32_t)c;
		m.u.round_end.h.nchan = nchans[c];
		m.u.round_end.h.pages = rnd();
		m.u.round_end.h.zero_pages = rnd();
		m.u.round_end.h.bytes = UINT64_MAX - c;
		for (uint32_t i = 0; i < RMIG_MAX_CHANNELS; i++)
			m.u.round_end.frames[i] = rnd();
		f = roundtrip(&m, &out, &flen);
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 32 + 8 * nchans[c]);
		assert_int_equal(out.u.round_end.h.round, m.u.round_end.h.round);
		assert_int_equal(out.u.round_end.h.nchan, nchans[c]);
		assert_true(out.u.round_end.h.pages == m.u.round_end.h.pages);
		assert_true(out.u.round_end.h.zero_pages == m.u.round_end.h.zero_pages);
		assert_true(out.u.round_end.h.bytes == m.u.round_end.h.bytes);
		assert_memory_equal(out.u.round_end.frames, m.u.round_end.frames, 8 * nchans[c]);
		free(f);
	}
	/* nchan 0 or above the limit cannot be encoded. */
	m.u.round_end.h.nchan = 0;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	m.u.round_end.h.nchan = RMIG_MAX_CHANNELS + 1;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
}

/* STREAM: a piece of a hypervisor's own stream, 1 byte .. 1 MiB. */
static void test_rt_stream(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_STREAM }, out;
	static uint8_t chunk[RMIG_MAX_STREAM_CHUNK + 1];
	uint8_t *f;
	size_t flen;
	char err[256];

	(void)state;
	for (size_t i = 0; i < 4096; i++)
		chunk[i] = (uint8_t)rnd();
	m.u.state.data = chunk;
	m.u.state.len = 4096;
	f = roundtrip(&m, &out, &flen);
	assert_int_equal(out.u.state.len, 4096);
	assert_memory_equal(out.u.state.data, chunk, 4096);
	free(f);
	/* Empty or above the limit: neither encoded nor decoded. */
	m.u.state.len = 0;
	assert_int_equal(rmig_msg_encode(&m, chunk, sizeof(chunk)), 0);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_STREAM, chunk, 0, &out, err, sizeof(err)));
	m.u.state.len = RMIG_MAX_STREAM_CHUNK + 1;
	assert_int_equal(rmig_msg_encode(&m, chunk, sizeof(chunk)), 0);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_STREAM, chunk, RMIG_MAX_STREAM_CHUNK + 1, &out,
					err, sizeof(err)));
	EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_STREAM, chunk, RMIG_MAX_STREAM_CHUNK, &out, err,
				       sizeof(err)));
}

static void test_rt_state(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_STATE }, out;
	uint8_t blob[1000];
	uint8_t *f;
	size_t flen;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)rnd();
	m.u.state.data = blob;
	m.u.state.len = sizeof(blob);
	f = roundtrip(&m, &out, &flen);
	assert_int_equal(out.u.state.len, sizeof(blob));
	/* Points into the frame, not a copy. */
	assert_ptr_equal(out.u.state.data, f + RMIG_FRAME_HDR_LEN);
	assert_memory_equal(out.u.state.data, blob, sizeof(blob));
	free(f);

	/* An empty blob is a valid STATE. */
	m.u.state.len = 0;
	f = make_frame(&m, 0, 9, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN);
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
	assert_int_equal(out.type, RMIG_MSG_STATE);
	assert_int_equal(out.u.state.len, 0);
	free(f);

	/* Above the limit: not encoded. The 64 MiB buffers are untouched
	 * mappings, so they cost no memory. */
	{
		uint8_t *big = map_zero(RMIG_MAX_STATE + 1);
		uint8_t *dst = map_zero(RMIG_MAX_STATE + 1);
		struct rmig_msg d;

		m.u.state.data = big;
		m.u.state.len = RMIG_MAX_STATE + 1;
		assert_int_equal(rmig_msg_encode(&m, dst, RMIG_MAX_STATE + 1), 0);
		/* And not decoded; the maximum is. */
		EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_STATE, big, RMIG_MAX_STATE + 1, &d, err,
						sizeof(err)));
		EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_STATE, big, RMIG_MAX_STATE, &d, err,
					       sizeof(err)));
		assert_int_equal(d.u.state.len, RMIG_MAX_STATE);
		assert_ptr_equal(d.u.state.data, big);
		munmap(big, RMIG_MAX_STATE + 1);
		munmap(dst, RMIG_MAX_STATE + 1);
	}
}

static void test_rt_mem_keys(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_MEM_KEYS }, out;
	static const uint32_t sizes[] = { 0, 1, 100, RMIG_MAX_MEM_KEYS };
	uint8_t *keys = malloc(RMIG_MAX_MEM_KEYS + 1);
	char err[256];

	(void)state;
	assert_non_null(keys);
	for (size_t i = 0; i <= RMIG_MAX_MEM_KEYS; i++)
		keys[i] = (uint8_t)rnd();
	m.u.state.data = keys;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *f;
		size_t flen;

		m.u.state.len = sizes[i];
		if (sizes[i]) {
			f = roundtrip(&m, &out, &flen);
		} else { /* empty: "no keys offered"; encodes to 0 bytes */
			f = make_frame(&m, 0, 1, &flen);
			EXPECT_OK(err,
				  rmig_frame_decode_buf(f, flen, NULL, &out, err, sizeof(err)));
		}
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + sizes[i]);
		assert_int_equal(out.type, RMIG_MSG_MEM_KEYS);
		assert_int_equal(out.u.state.len, sizes[i]);
		assert_ptr_equal(out.u.state.data, f + RMIG_FRAME_HDR_LEN);
		if (sizes[i])
			assert_memory_equal(out.u.state.data, keys, sizes[i]);
		free(f);
	}
	/* One byte over the limit: neither encoded nor decoded. */
	{
		uint8_t *dst = malloc(RMIG_MAX_MEM_KEYS + 1);

		assert_non_null(dst);
		m.u.state.len = RMIG_MAX_MEM_KEYS + 1;
		assert_int_equal(rmig_msg_encode(&m, dst, RMIG_MAX_MEM_KEYS + 1), 0);
		EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_MEM_KEYS, keys, RMIG_MAX_MEM_KEYS + 1,
						&out, err, sizeof(err)));
		free(dst);
	}
	free(keys);
}

static void test_rt_complete(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_COMPLETE }, out;
	static const uint32_t counts[] = { 0, 1, 5, RMIG_MAX_REGIONS };
	uint8_t buf[4096];

	(void)state;
	for (size_t c = 0; c < 4; c++) {
		uint8_t *f;
		size_t flen;

		m.u.complete.flags =
		    c & 1 ? RMIG_COMPLETE_VERIFY | (c & 2 ? RMIG_COMPLETE_CHUNKED : 0)
			  : RMIG_COMPLETE_POSTCOPY;
		m.u.complete.count = counts[c];
		for (uint32_t i = 0; i < RMIG_MAX_REGIONS; i++)
			m.u.complete.digest[i] = rnd();
		f = roundtrip(&m, &out, &flen);
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8 + 8 * counts[c]);
		assert_int_equal(out.u.complete.flags, m.u.complete.flags);
		assert_int_equal(out.u.complete.count, counts[c]);
		if (counts[c])
			assert_memory_equal(out.u.complete.digest, m.u.complete.digest,
					    8 * counts[c]);
		free(f);
	}
	m.u.complete.count = RMIG_MAX_REGIONS + 1;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
}

static void test_rt_abort(void **state)
{
	struct rmig_msg *m = calloc(1, sizeof(*m)), out;
	uint8_t *f;
	size_t flen;

	(void)state;
	assert_non_null(m);
	m->type = RMIG_MSG_ABORT;
	m->u.abort.code = -110;
	strcpy(m->u.abort.reason, "destination out of memory: 42 GiB needed");
	f = roundtrip(m, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8 + strlen(m->u.abort.reason));
	assert_int_equal(out.u.abort.code, -110);
	assert_string_equal(out.u.abort.reason, m->u.abort.reason);
	free(f);

	/* Empty reason, extreme codes. */
	m->u.abort.reason[0] = 0;
	m->u.abort.code = INT32_MIN;
	f = roundtrip(m, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8);
	assert_int_equal(out.u.abort.code, INT32_MIN);
	assert_string_equal(out.u.abort.reason, "");
	free(f);

	/* The longest reason. */
	memset(m->u.abort.reason, 'r', RMIG_MAX_REASON);
	m->u.abort.reason[RMIG_MAX_REASON] = 0;
	m->u.abort.code = INT32_MAX;
	f = roundtrip(m, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8 + RMIG_MAX_REASON);
	assert_int_equal(out.u.abort.code, INT32_MAX);
	assert_int_equal(strlen(out.u.abort.reason), RMIG_MAX_REASON);
	assert_string_equal(out.u.abort.reason, m->u.abort.reason);
	free(f);
	free(m);
}

static void test_rt_done(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_DONE }, out;
	uint8_t *f;
	size_t flen;

	(void)state;
	m.u.done.total_ms = 123456789012ull;
	m.u.done.downtime_ms = UINT64_MAX;
	m.u.done.bytes_sent = 0x0102030405060708ull;
	m.u.done.rounds = 0xfffffffeu;
	m.u.done.flags = 0x55aa55aau;
	f = roundtrip(&m, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_DONE_LEN);
	assert_true(out.u.done.total_ms == m.u.done.total_ms);
	assert_true(out.u.done.downtime_ms == m.u.done.downtime_ms);
	assert_true(out.u.done.bytes_sent == m.u.done.bytes_sent);
	assert_int_equal(out.u.done.rounds, m.u.done.rounds);
	assert_int_equal(out.u.done.flags, m.u.done.flags);
	free(f);
}

static void test_rt_u64_msgs(void **state)
{
	static const uint8_t types[] = { RMIG_MSG_ROUND_ACK, RMIG_MSG_READY,	 RMIG_MSG_GO,
					 RMIG_MSG_STARTED,   RMIG_MSG_HEARTBEAT, RMIG_MSG_CHECK };
	static const uint64_t values[] = { 0, 1, 0x8000000000000000ull, UINT64_MAX };

	(void)state;
	for (size_t t = 0; t < sizeof(types); t++)
		for (size_t v = 0; v < 4; v++) {
			struct rmig_msg m = { .type = types[t] }, out;
			uint8_t *f;
			size_t flen;

			m.u.value = values[v];
			f = roundtrip(&m, &out, &flen);
			assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8);
			assert_true(out.u.value == values[v]);
			free(f);
		}
}

/* REGIONS_ACK's first-touch size: 0 or a page-to-1 GiB power of two; a
 * lying destination's other values are refused by the decoder, named. */
static void test_regions_ack_first_touch(void **state)
{
	static const uint64_t good[] = { 0, 4096, 2u << 20, 1u << 30 };
	static const uint64_t bad_sizes[] = { 1, 4095, 3u << 20, (1ull << 30) * 2, UINT64_MAX };
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct rmig_msg m = { .type = RMIG_MSG_REGIONS_ACK }, out;
		size_t flen;
		uint8_t *f;

		m.u.value = good[i];
		f = roundtrip(&m, &out, &flen);
		assert_true(out.u.value == good[i]);
		free(f);
	}
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		uint8_t p[8];
		struct rmig_msg out;

		for (int b = 0; b < 8; b++)
			p[b] = (uint8_t)(bad_sizes[i] >> (8 * b));
		EXPECT_BAD(err,
			   rmig_msg_decode(RMIG_MSG_REGIONS_ACK, p, 8, &out, err, sizeof(err)));
		assert_non_null(strstr(err, "first-touch size"));
	}
}

static void test_rt_auth(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_AUTH }, out;
	uint8_t *f;
	size_t flen;

	(void)state;
	for (int i = 0; i < RMIG_MAC_LEN; i++)
		m.u.mac[i] = (uint8_t)(0xa5 ^ (i * 7));
	f = roundtrip(&m, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_MAC_LEN);
	assert_memory_equal(out.u.mac, m.u.mac, RMIG_MAC_LEN);
	free(f);
}

static void test_encode_rejects_pages_and_unknown(void **state)
{
	uint8_t buf[256];
	struct rmig_msg m = { .type = RMIG_MSG_PAGES };

	(void)state;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	m.type = RMIG_MSG_ZERO;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	m.type = 0;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
	m.type = RMIG_MSG_TYPE_COUNT;
	assert_int_equal(rmig_msg_encode(&m, buf, sizeof(buf)), 0);
}

/* ---- control messages: malformed payloads ---- */

static void test_msg_decode_len_bounds(void **state)
{
	static uint8_t zeros[8 + 24 * 64 + 64];
	char err[256];
	struct rmig_msg m;

	(void)state;
	for (size_t i = 0; i < sizeof(type_bounds) / sizeof(type_bounds[0]); i++) {
		const struct bounds *b = &type_bounds[i];

		if (rmig_is_data_frame(b->type) || is_blob(b->type) ||
		    b->type == RMIG_MSG_PAGE_DATA)
			continue; /* the blobs' limits: test_rt_state, test_rt_mem_keys;
				   * PAGE_DATA's: test_rt_page_data */
		assert_true(b->max + 1 <= sizeof(zeros));
		if (b->min) {
			uint8_t *p = dup_exact(zeros, b->min - 1);

			EXPECT_BAD(err,
				   rmig_msg_decode(b->type, p, b->min - 1, &m, err, sizeof(err)));
			free(p);
		}
		{
			uint8_t *p = dup_exact(zeros, b->max + 1);

			EXPECT_BAD(err,
				   rmig_msg_decode(b->type, p, b->max + 1, &m, err, sizeof(err)));
			free(p);
		}
	}
	EXPECT_BAD(err, rmig_msg_decode(0, zeros, 8, &m, err, sizeof(err)));
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_TYPE_COUNT, zeros, 8, &m, err, sizeof(err)));
	EXPECT_BAD(err, rmig_msg_decode(0xff, zeros, 8, &m, err, sizeof(err)));
	/* PAGES/ZERO are not control messages. */
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_PAGES, zeros, 48, &m, err, sizeof(err)));
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_ZERO, zeros, 32, &m, err, sizeof(err)));
}

static int decode_payload(uint8_t type, const uint8_t *p, size_t len, char *err, size_t errlen)
{
	uint8_t *f;
	size_t flen;
	struct rmig_msg m, m2;
	int rc, rc2;
	char err2[256];

	/* Both entry points agree. */
	f = raw_frame(type, (uint32_t)len, p, len, &flen);
	rc = rmig_frame_decode_buf(f, flen, NULL, &m, err, errlen);
	free(f);
	f = dup_exact(p, len);
	rc2 = rmig_msg_decode(type, f, len, &m2, err2, sizeof(err2));
	free(f);
	assert_int_equal(rc, rc2);
	return rc;
}

static void test_hello_invalid(void **state)
{
	uint8_t p[RMIG_HELLO_LEN] = { 0 };
	char err[256];

	(void)state;
	/* ver_min > ver_max */
	p[0] = 2, p[2] = 1, wr32(p + 4, 1);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
	p[0] = 1, p[2] = 1;
	wr32(p + 4, 0);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, RMIG_MAX_CHANNELS + 1);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, UINT32_MAX);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, RMIG_MAX_CHANNELS);
	EXPECT_OK(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, 1);
	EXPECT_OK(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
	/* Reserved bytes 56..63: zero, or the AUTH proofs would not cover them. */
	for (int i = 56; i < RMIG_HELLO_LEN; i++) {
		p[i] = 0x80;
		EXPECT_BAD(err, decode_payload(RMIG_MSG_HELLO, p, sizeof(p), err, sizeof(err)));
		assert_non_null(strstr(err, "reserved"));
		p[i] = 0;
	}
}

static void test_channel_invalid(void **state)
{
	uint8_t p[RMIG_CHANNEL_LEN] = { 0 };
	char err[256];
	static const uint32_t bad[][2] = { { 0, 0 },  { 1, 1 },	  { 5, 3 },
					   { 0, 65 }, { 64, 64 }, { UINT32_MAX, 2 } };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		wr32(p + 16, bad[i][0]);
		wr32(p + 20, bad[i][1]);
		EXPECT_BAD(err, decode_payload(RMIG_MSG_CHANNEL, p, sizeof(p), err, sizeof(err)));
	}
	wr32(p + 16, 63);
	wr32(p + 20, 64);
	EXPECT_OK(err, decode_payload(RMIG_MSG_CHANNEL, p, sizeof(p), err, sizeof(err)));
}

static void test_round_end_invalid(void **state)
{
	uint8_t p[32 + 8 * 64] = { 0 };
	char err[256];

	(void)state;
	wr32(p + 4, 0); /* nchan 0 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_ROUND_END, p, 40, err, sizeof(err)));
	wr32(p + 4, 2); /* says 2, carries 1 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_ROUND_END, p, 40, err, sizeof(err)));
	wr32(p + 4, 1); /* says 1, carries 2 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_ROUND_END, p, 48, err, sizeof(err)));
	wr32(p + 4, 1); /* length not a multiple of 8 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_ROUND_END, p, 41, err, sizeof(err)));
	wr32(p + 4, 65);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_ROUND_END, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, UINT32_MAX);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_ROUND_END, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, 64);
	EXPECT_OK(err, decode_payload(RMIG_MSG_ROUND_END, p, sizeof(p), err, sizeof(err)));
}

static void test_complete_invalid(void **state)
{
	uint8_t p[8 + 8 * 64] = { 0 };
	char err[256];

	(void)state;
	wr32(p + 4, 1);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, 8, err, sizeof(err)));
	wr32(p + 4, 0);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, 16, err, sizeof(err)));
	wr32(p + 4, 2);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, 20, err, sizeof(err)));
	wr32(p + 4, 65);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, UINT32_MAX);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
	wr32(p + 4, 64);
	EXPECT_OK(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
	wr32(p, RMIG_COMPLETE_VERIFY | RMIG_COMPLETE_CHUNKED);
	EXPECT_OK(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
	wr32(p, RMIG_COMPLETE_CHUNKED); /* roots of nothing to compare */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
	wr32(p, RMIG_COMPLETE_VERIFY | 8u); /* a flag this side does not know */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
	wr32(p, 0x80000000u);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_COMPLETE, p, sizeof(p), err, sizeof(err)));
}

static void put_region(uint8_t *p, uint32_t id, uint32_t ps, uint64_t gpa, uint64_t len)
{
	wr32(p, id);
	wr32(p + 4, ps);
	wr64(p + 8, gpa);
	wr64(p + 16, len);
}

static void test_regions_invalid(void **state)
{
	uint8_t p[8 + 24 * 64] = { 0 };
	char err[256];

	(void)state;
	for (uint32_t i = 0; i < 64; i++)
		put_region(p + 8 + 24 * i, i, 4096, (uint64_t)i << 20, 4096);
	wr32(p, 0);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, 32, err, sizeof(err)));
	wr32(p, 2); /* says 2, carries 1 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, 32, err, sizeof(err)));
	wr32(p, 1); /* says 1, carries 2 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, 56, err, sizeof(err)));
	wr32(p, 1); /* trailing partial descriptor */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, 33, err, sizeof(err)));
	wr32(p, 65);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, sizeof(p), err, sizeof(err)));
	wr32(p, 64);
	EXPECT_OK(err, decode_payload(RMIG_MSG_REGIONS, p, sizeof(p), err, sizeof(err)));
	/* A layout failure inside REGIONS is a decode failure. */
	put_region(p + 8 + 24 * 63, 0, 4096, 63ull << 20, 4096); /* duplicate id 0 */
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, sizeof(p), err, sizeof(err)));
	assert_non_null(strstr(err, "twice"));
	put_region(p + 8 + 24 * 63, 63, 3000, 63ull << 20, 4096);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_REGIONS, p, sizeof(p), err, sizeof(err)));
	assert_non_null(strstr(err, "page size"));
}

static void test_abort_sanitize(void **state)
{
	uint8_t p[8 + 256];
	char err[256];
	struct rmig_msg *m = malloc(sizeof(*m));
	uint8_t *f;
	size_t flen;

	(void)state;
	assert_non_null(m);
	wr32(p, (uint32_t)-5);
	wr32(p + 4, 0xffffffffu); /* reserved: ignored */
	for (int i = 0; i < 256; i++)
		p[8 + i] = (uint8_t)i;
	f = raw_frame(RMIG_MSG_ABORT, sizeof(p), p, sizeof(p), &flen);
	memset(m, 0x41, sizeof(*m));
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, NULL, m, err, sizeof(err)));
	free(f);
	assert_int_equal(m->u.abort.code, -5);
	/* Same length (an embedded NUL does not cut it), every byte printable. */
	assert_int_equal(strlen(m->u.abort.reason), 256);
	for (int i = 0; i < 256; i++) {
		char want = (i >= 0x20 && i < 0x7f) ? (char)i : '?';

		assert_int_equal(m->u.abort.reason[i], want);
	}
	assert_int_equal(m->u.abort.reason[256], 0);

	/* Terminal escapes become harmless. */
	{
		static const char evil[] = "\x1b[2J\x1b]0;pwned\x07\r\nok";
		uint8_t q[8 + sizeof(evil) - 1];

		wr32(q, 1);
		wr32(q + 4, 0);
		memcpy(q + 8, evil, sizeof(evil) - 1);
		f = dup_exact(q, sizeof(q));
		EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_ABORT, f, sizeof(q), m, err, sizeof(err)));
		free(f);
		assert_string_equal(m->u.abort.reason, "?[2J?]0;pwned???ok");
	}

	/* A full-length reason is terminated; one more byte is rejected. */
	{
		uint8_t *q = malloc(8 + RMIG_MAX_REASON + 1);

		assert_non_null(q);
		memset(q, 0xff, 8 + RMIG_MAX_REASON + 1);
		memset(m, 0x41, sizeof(*m));
		EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_ABORT, q, 8 + RMIG_MAX_REASON, m, err,
					       sizeof(err)));
		assert_int_equal(strlen(m->u.abort.reason), RMIG_MAX_REASON);
		assert_int_equal(m->u.abort.reason[0], '?');
		EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_ABORT, q, 8 + RMIG_MAX_REASON + 1, m, err,
						sizeof(err)));
		free(q);
	}
	free(m);
}

/* ---- layout checks ---- */

static struct rmig_layout *layout2(void)
{
	static struct rmig_layout l;

	memset(&l, 0, sizeof(l));
	l.count = 2;
	l.r[0] = (struct rmig_wire_region){ .id = 1, .page_size = 4096, .gpa = 0, .len = 1 << 20 };
	l.r[1] = (struct rmig_wire_region){
		.id = 2, .page_size = 2u << 20, .gpa = 1ull << 32, .len = 4u << 20
	};
	return &l;
}

/* Check a layout both directly and, when it can be framed, as a REGIONS
 * message: the two must agree, down to the reason. */
static int check_both(const struct rmig_layout *l, char *err, size_t errlen)
{
	uint8_t p[8 + 24 * RMIG_MAX_REGIONS];
	int rc = rmig_layout_check(l, err, errlen), rc2;
	char err2[256];

	if (l->count >= 1 && l->count <= RMIG_MAX_REGIONS) {
		wr32(p, l->count);
		wr32(p + 4, 0);
		for (uint32_t i = 0; i < l->count; i++)
			put_region(p + 8 + 24 * i, l->r[i].id, l->r[i].page_size, l->r[i].gpa,
				   l->r[i].len);
		rc2 = decode_payload(RMIG_MSG_REGIONS, p, 8 + 24 * l->count, err2, sizeof(err2));
		assert_int_equal(rc, rc2);
		if (rc)
			assert_string_equal(err, err2);
	}
	return rc;
}

static void test_layout_ok(void **state)
{
	char err[256];
	struct rmig_layout *l = layout2();

	(void)state;
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
	/* Adjacent regions touch without overlapping. */
	l->r[1].page_size = 4096;
	l->r[1].gpa = 1 << 20;
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
	/* Page sizes at both limits and every power of two between. */
	for (uint32_t ps = RMIG_MIN_PAGE_SIZE; ps <= RMIG_MAX_PAGE_SIZE; ps <<= 1) {
		l->r[0].page_size = ps;
		l->r[0].len = ps;
		l->r[1].gpa = 1ull << 32;
		EXPECT_OK(err, check_both(l, err, sizeof(err)));
	}
	/* The largest region, ending as high as the address space allows. */
	l->count = 1;
	l->r[0] = (struct rmig_wire_region){ .id = 0, .page_size = 4096, .len = 1ull << 44 };
	l->r[0].gpa = UINT64_MAX - (1ull << 44) + 1 - 4096;
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
	/* 64 regions. */
	fill_layout(l, RMIG_MAX_REGIONS);
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
	/* Listed in descending address order, and interleaved: still disjoint. */
	for (uint32_t i = 0; i < RMIG_MAX_REGIONS; i++)
		l->r[i].gpa = (uint64_t)(RMIG_MAX_REGIONS - 1 - i) << 36;
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
	for (uint32_t i = 0; i < RMIG_MAX_REGIONS; i++)
		l->r[i].gpa = (uint64_t)(i % 2 ? i : RMIG_MAX_REGIONS + i) << 36;
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
}

static void test_layout_bad_page_size(void **state)
{
	static const uint32_t bad[] = { 0,	     1,		  2048,	    4095,     4097,
					12288,	     65535,	  3u << 20, 4u << 20, 1u << 30,
					0x80000000u, 0xffffffffu, 0x3000 };
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rmig_layout *l = layout2();

		/* Length and base multiples of it: only the page size is wrong. */
		l->r[1].page_size = bad[i];
		l->r[1].len = (uint64_t)(bad[i] ? bad[i] : 1) * 16;
		l->r[1].gpa = (uint64_t)(bad[i] ? bad[i] : 1) << 21;
		EXPECT_BAD(err, check_both(l, err, sizeof(err)));
		assert_non_null(strstr(err, "power of two"));
	}
}

static void test_layout_bad_len_gpa(void **state)
{
	char err[256];
	struct rmig_layout *l;

	(void)state;
	l = layout2();
	l->r[0].len = 0;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l = layout2();
	l->r[0].len = (1 << 20) + 1;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l = layout2();
	l->r[1].len = 3u << 20; /* a 2 MiB page and a half */
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	/* Over 16 TiB, alone (nothing to overlap) and low enough not to wrap. */
	l = layout2();
	l->count = 1;
	l->r[0].len = (1ull << 44) + 4096;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l->r[0].len = 1ull << 45;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l->r[0].len = UINT64_MAX - 4095; /* a multiple of 4096 */
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l->r[0].len = 1ull << 44;
	EXPECT_OK(err, check_both(l, err, sizeof(err)));

	/* Unaligned bases. */
	l = layout2();
	l->r[0].gpa = 1;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l = layout2();
	l->r[1].gpa = (1ull << 32) + 4096; /* 4K aligned, not 2M */
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	assert_non_null(strstr(err, "misaligned"));

	/* A region wrapping past the top of the address space. */
	l = layout2();
	l->count = 1;
	l->r[0].gpa = UINT64_MAX - 4095; /* aligned; ends at 2^64 exactly */
	l->r[0].len = 8192;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	l->r[0].gpa = UINT64_MAX - (1ull << 20) + 1;
	l->r[0].len = 1ull << 44;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
}

static void test_layout_overlap_dup_count(void **state)
{
	char err[256];
	struct rmig_layout *l;

	(void)state;
	/* Partial overlap, both orders. */
	l = layout2();
	l->r[1] = (struct rmig_wire_region){
		.id = 2, .page_size = 4096, .gpa = (1 << 20) - 4096, .len = 8192
	};
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	assert_non_null(strstr(err, "overlap"));
	l->r[1].gpa = 0;
	l->r[1].len = 1 << 21;
	EXPECT_BAD(err, check_both(l, err, sizeof(err))); /* contains region 1 */
	l->r[1].gpa = 8192;
	l->r[1].len = 4096;
	EXPECT_BAD(err, check_both(l, err, sizeof(err))); /* inside region 1 */
	l->r[1] = l->r[0];
	l->r[1].id = 9;
	EXPECT_BAD(err, check_both(l, err, sizeof(err))); /* identical range */

	/* Overlap between the first and the last of many. */
	fill_layout(l, 10);
	l->r[9].gpa = l->r[0].gpa;
	l->r[9].page_size = l->r[0].page_size;
	l->r[9].len = l->r[0].page_size;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	assert_non_null(strstr(err, "overlap"));

	/* Duplicate ids of disjoint regions. */
	l = layout2();
	l->r[1].id = l->r[0].id;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));
	assert_non_null(strstr(err, "twice"));
	fill_layout(l, RMIG_MAX_REGIONS);
	l->r[63].id = l->r[31].id;
	EXPECT_BAD(err, check_both(l, err, sizeof(err)));

	/* Region count. */
	l = layout2();
	l->count = 0; /* a hypervisor stream: no regions */
	EXPECT_OK(err, check_both(l, err, sizeof(err)));
	l->count = RMIG_MAX_REGIONS + 1;
	EXPECT_BAD(err, rmig_layout_check(l, err, sizeof(err)));
	l->count = UINT32_MAX;
	EXPECT_BAD(err, rmig_layout_check(l, err, sizeof(err)));
}

/* ---- PAGES and ZERO ---- */

/* The layout the PAGES tests decode against. */
static const struct rmig_layout *pages_layout(void)
{
	static struct rmig_layout l;

	memset(&l, 0, sizeof(l));
	l.count = 4;
	/* 64 x 4K */
	l.r[0] =
	    (struct rmig_wire_region){ .id = 0, .page_size = 4096, .gpa = 0, .len = 64 * 4096 };
	/* 16 x 64K */
	l.r[1] = (struct rmig_wire_region){
		.id = 5, .page_size = 65536, .gpa = 1ull << 30, .len = 16 * 65536
	};
	/* 2 x 2M, the largest id */
	l.r[2] = (struct rmig_wire_region){
		.id = UINT32_MAX, .page_size = 2u << 20, .gpa = 1ull << 40, .len = 4u << 20
	};
	/* 2^32 x 4K: the largest region */
	l.r[3] = (struct rmig_wire_region){
		.id = 2, .page_size = 4096, .gpa = 1ull << 46, .len = 1ull << 44
	};
	return &l;
}

/* A PAGES/ZERO frame: header len = sub-header + runs + data_len, with
 * data_len bytes of pattern actually present (extra bytes beyond: none). */
static uint8_t *pages_frame(uint8_t type, uint32_t region, uint32_t round,
			    const struct rmig_run *runs, uint32_t nruns, size_t data_len,
			    size_t *flen)
{
	size_t sub = RMIG_PAGES_HDR_LEN + (size_t)nruns * RMIG_RUN_LEN;
	uint8_t *f = malloc(RMIG_FRAME_HDR_LEN + sub + data_len);

	assert_non_null(f);
	assert_int_equal(rmig_pages_encode(f + RMIG_FRAME_HDR_LEN, sub, region, round, runs, nruns),
			 sub);
	for (size_t i = 0; i < data_len && i < 65536; i++) /* content is not checked */
		f[RMIG_FRAME_HDR_LEN + sub + i] = (uint8_t)(i * 31);
	rmig_frame_hdr_encode(f, type, 0, (uint32_t)(sub + data_len), 77);
	*flen = RMIG_FRAME_HDR_LEN + sub + data_len;
	return f;
}

/* Decode with the step functions; return the result, fill runs/index. */
static int pages_decode(const uint8_t *f, size_t flen, struct rmig_run *runs, size_t *ri,
			struct rmig_pages_hdr *ph, char *err, size_t errlen)
{
	struct rmig_frame_hdr fh;
	struct rmig_msg m;
	char err2[256];
	int rc, rc_buf;

	rc_buf = rmig_frame_decode_buf(f, flen, pages_layout(), &m, err2, sizeof(err2));
	rc = rmig_frame_hdr_decode(f, &fh, err, errlen);
	if (!rc && flen - RMIG_FRAME_HDR_LEN < fh.len)
		rc = -EBADMSG, snprintf(err, errlen, "short");
	if (!rc)
		rc = rmig_pages_hdr_decode(f + RMIG_FRAME_HDR_LEN, &fh, ph, err, errlen);
	if (!rc)
		rc = rmig_pages_runs_decode(f + RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN, &fh, ph,
					    pages_layout(), runs, ri, err, errlen);
	/* The whole-frame decoder agrees with the steps. */
	assert_int_equal(rc, rc_buf);
	if (!rc)
		assert_int_equal(m.type, fh.type);
	return rc;
}

static void test_pages_roundtrip(void **state)
{
	char err[256];
	struct rmig_run runs[RMIG_MAX_RUNS], got[RMIG_MAX_RUNS];
	struct rmig_pages_hdr ph;
	size_t ri, flen;
	uint8_t *f;

	(void)state;
	runs[0] = (struct rmig_run){ 0, 1 };
	runs[1] = (struct rmig_run){ 10, 2 };
	runs[2] = (struct rmig_run){ 63, 1 };
	f = pages_frame(RMIG_MSG_PAGES, 0, 42, runs, 3, 4 * 4096, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_int_equal(ri, 0);
	assert_int_equal(ph.region_id, 0);
	assert_int_equal(ph.nruns, 3);
	assert_int_equal(ph.round, 42);
	assert_memory_equal(got, runs, 3 * sizeof(runs[0]));
	free(f);

	/* Whole region in one run, 64K pages, region index != id. */
	runs[0] = (struct rmig_run){ 0, 16 };
	f = pages_frame(RMIG_MSG_PAGES, 5, 0xffffffffu, runs, 1, 16 * 65536, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_int_equal(ri, 1);
	assert_int_equal(ph.round, 0xffffffffu);
	free(f);

	/* The last page of the 2^32-page region, and a 2M page. */
	runs[0] = (struct rmig_run){ (1ull << 32) - 1, 1 };
	f = pages_frame(RMIG_MSG_PAGES, 2, 1, runs, 1, 4096, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_int_equal(ri, 3);
	assert_true(got[0].first == (1ull << 32) - 1);
	free(f);
	runs[0] = (struct rmig_run){ 1, 1 };
	f = pages_frame(RMIG_MSG_PAGES, UINT32_MAX, 1, runs, 1, 2u << 20, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_int_equal(ri, 2);
	free(f);

	/* The data limit exactly: 4096 pages of 4K. */
	for (int i = 0; i < 64; i++)
		runs[i] = (struct rmig_run){ (uint64_t)i * 100, 64 };
	f = pages_frame(RMIG_MSG_PAGES, 2, 1, runs, 64, RMIG_MAX_FRAME_DATA, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_memory_equal(got, runs, 64 * sizeof(runs[0]));
	free(f);

	/* ZERO: runs only, 64 of them, one covering a whole 2^32-page region. */
	for (int i = 0; i < 64; i++)
		runs[i] = (struct rmig_run){ (uint64_t)i, 1 };
	f = pages_frame(RMIG_MSG_ZERO, 0, 3, runs, 64, 0, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_memory_equal(got, runs, 64 * sizeof(runs[0]));
	free(f);
	runs[0] = (struct rmig_run){ 0, 1ull << 32 };
	f = pages_frame(RMIG_MSG_ZERO, 2, 3, runs, 1, 0, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	assert_true(got[0].count == 1ull << 32);
	free(f);

	/* The encoder refuses 0 or too many runs, and a short buffer. */
	{
		uint8_t buf[RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * (RMIG_MAX_RUNS + 1)];

		assert_int_equal(rmig_pages_encode(buf, sizeof(buf), 0, 0, runs, 0), 0);
		assert_int_equal(rmig_pages_encode(buf, sizeof(buf), 0, 0, runs, RMIG_MAX_RUNS + 1),
				 0);
		assert_int_equal(
		    rmig_pages_encode(buf, RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN - 1, 0, 0, runs, 1),
		    0);
		assert_int_equal(
		    rmig_pages_encode(buf, RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN, 0, 0, runs, 1),
		    RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN);
	}
}

static void test_pages_bad_region_and_index(void **state)
{
	char err[256];
	struct rmig_run r, got[RMIG_MAX_RUNS];
	struct rmig_pages_hdr ph;
	size_t ri, flen;
	uint8_t *f;
	static const uint32_t bad_ids[] = { 1, 3, 4, 6, 0x7fffffff, 0xfffffffe };
	struct {
		uint32_t region;
		uint64_t first, count;
	} bad_runs[] = {
		{ 0, 64, 1 }, /* first == npages */
		{ 0, 63, 2 }, /* one past the end */
		{ 0, 0, 65 }, /* longer than the region */
		{ 0, 1000, 1 },
		{ 0, UINT64_MAX, 1 },	       /* first + count wraps to 0 */
		{ 0, UINT64_MAX, 2 },	       /* wraps to 1 */
		{ 0, 2, UINT64_MAX },	       /* wraps to 1 */
		{ 0, UINT64_MAX - 1, 2 },      /* wraps to 0 */
		{ 0, 1ull << 63, 1ull << 63 }, /* wraps to 0 */
		{ 0, 0, 0 },		       /* empty run */
		{ 0, 5, 0 },
		{ 2, 1ull << 32, 1 }, /* big region, one past */
		{ 2, 1, 1ull << 32 },
		{ 2, (1ull << 32) + 1, UINT64_MAX }, /* wraps */
		{ 5, 16, 1 },
		{ UINT32_MAX, 2, 1 },
	};

	(void)state;
	r = (struct rmig_run){ 0, 1 };
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		f = pages_frame(RMIG_MSG_PAGES, bad_ids[i], 0, &r, 1, 4096, &flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		assert_non_null(strstr(err, "region"));
		free(f);
		f = pages_frame(RMIG_MSG_ZERO, bad_ids[i], 0, &r, 1, 0, &flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		free(f);
	}
	for (size_t i = 0; i < sizeof(bad_runs) / sizeof(bad_runs[0]); i++) {
		struct rmig_run two[2] = { { 0, 1 }, { bad_runs[i].first, bad_runs[i].count } };

		/* ZERO needs no data, so every bad run is checked on its own ... */
		f = pages_frame(RMIG_MSG_ZERO, bad_runs[i].region, 0, &two[1], 1, 0, &flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		free(f);
		/* ... and after a good run. */
		f = pages_frame(RMIG_MSG_ZERO, bad_runs[i].region, 0, two, 2, 0, &flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		free(f);
		/* PAGES with data for what the count would claim if it did not wrap:
		 * only possible for small counts. */
		if (bad_runs[i].count > 0 && bad_runs[i].count <= 64 && bad_runs[i].region == 0) {
			f = pages_frame(RMIG_MSG_PAGES, 0, 0, &two[1], 1,
					(size_t)bad_runs[i].count * 4096, &flen);
			EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
			assert_non_null(strstr(err, "past the end"));
			free(f);
		}
	}
}

/* Runs must ascend without overlapping: otherwise one small ZERO frame could
 * make the receiver scan a region over and over. */
static void test_pages_runs_overlap(void **state)
{
	static const struct rmig_run bad[][2] = {
		{ { 0, 10 }, { 0, 10 } }, /* the same run twice */
		{ { 0, 10 }, { 9, 2 } },  /* overlaps by one page */
		{ { 10, 2 }, { 0, 1 } },  /* descending */
		{ { 0, 64 }, { 0, 64 } }, /* the whole region twice */
	};
	static const struct rmig_run good[2] = { { 0, 10 }, { 10, 5 } };
	struct rmig_run got[RMIG_MAX_RUNS];
	struct rmig_pages_hdr ph;
	char err[256];
	size_t ri, flen;
	uint8_t *f;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = pages_frame(RMIG_MSG_ZERO, 0, 0, bad[i], 2, 0, &flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		assert_non_null(strstr(err, "overlap or precede"));
		free(f);
	}
	f = pages_frame(RMIG_MSG_ZERO, 0, 0, good, 2, 0, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	free(f);
}

static void test_pages_bad_nruns(void **state)
{
	char err[256];
	struct rmig_run runs[RMIG_MAX_RUNS + 2], got[RMIG_MAX_RUNS];
	struct rmig_pages_hdr ph;
	struct rmig_frame_hdr fh = { .type = RMIG_MSG_ZERO };
	size_t ri, flen;
	uint8_t *f;
	uint8_t sub[RMIG_PAGES_HDR_LEN];
	static const uint32_t bad[] = { 0, RMIG_MAX_RUNS + 1, 1000, 0x10000000u, UINT32_MAX };

	(void)state;
	for (int i = 0; i < RMIG_MAX_RUNS + 2; i++)
		runs[i] = (struct rmig_run){ (uint64_t)i, 1 };
	/* Run counts out of range in an otherwise plausible frame. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = pages_frame(RMIG_MSG_ZERO, 0, 0, runs, 1, 0, &flen);
		wr32(f + RMIG_FRAME_HDR_LEN + 4, bad[i]);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		free(f);
		/* Directly, with the frame length as large as ZERO allows. */
		wr32(sub, 0);
		wr32(sub + 4, bad[i]);
		wr32(sub + 8, 0);
		wr32(sub + 12, 0);
		fh.type = RMIG_MSG_ZERO;
		fh.len = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS;
		EXPECT_BAD(err, rmig_pages_hdr_decode(sub, &fh, &ph, err, sizeof(err)));
		assert_non_null(strstr(err, "run count"));
	}
	/* More runs claimed than the frame holds. */
	for (uint32_t n = 2; n <= RMIG_MAX_RUNS; n *= 2) {
		f = pages_frame(RMIG_MSG_ZERO, 0, 0, runs, n - 1, 0, &flen);
		wr32(f + RMIG_FRAME_HDR_LEN + 4, n);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		/* Step 1 alone catches it, before anyone reads the runs. */
		fh.type = RMIG_MSG_ZERO;
		fh.len = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * (n - 1);
		EXPECT_BAD(
		    err, rmig_pages_hdr_decode(f + RMIG_FRAME_HDR_LEN, &fh, &ph, err, sizeof(err)));
		fh.type = RMIG_MSG_PAGES;
		fh.len = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * n - 1;
		EXPECT_BAD(
		    err, rmig_pages_hdr_decode(f + RMIG_FRAME_HDR_LEN, &fh, &ph, err, sizeof(err)));
		fh.len++;
		EXPECT_OK(
		    err, rmig_pages_hdr_decode(f + RMIG_FRAME_HDR_LEN, &fh, &ph, err, sizeof(err)));
		assert_int_equal(ph.nruns, n);
		free(f);
	}
	/* The maximum is fine. */
	f = pages_frame(RMIG_MSG_ZERO, 0, 0, runs, RMIG_MAX_RUNS, 0, &flen);
	EXPECT_OK(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	free(f);
	/* The sub-header decoder only takes PAGES and ZERO. */
	wr32(sub + 4, 1);
	fh.type = RMIG_MSG_HELLO;
	fh.len = 32;
	EXPECT_BAD(err, rmig_pages_hdr_decode(sub, &fh, &ph, err, sizeof(err)));
	fh.type = RMIG_MSG_STATE;
	EXPECT_BAD(err, rmig_pages_hdr_decode(sub, &fh, &ph, err, sizeof(err)));
}

static void test_pages_bad_data_len(void **state)
{
	char err[256];
	struct rmig_run runs[4], got[RMIG_MAX_RUNS];
	struct rmig_pages_hdr ph;
	size_t ri, flen;
	uint8_t *f;
	static const long deltas[] = { -4096, -1, 1, 4095, 4096, 8192 };

	(void)state;
	runs[0] = (struct rmig_run){ 3, 2 };
	runs[1] = (struct rmig_run){ 20, 1 };
	/* PAGES: data must be exactly the pages of the runs. */
	for (size_t d = 0; d < sizeof(deltas) / sizeof(deltas[0]); d++) {
		f = pages_frame(RMIG_MSG_PAGES, 0, 0, runs, 2, (size_t)(3 * 4096 + deltas[d]),
				&flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		assert_non_null(strstr(err, "data bytes"));
		free(f);
	}
	/* PAGES with no data at all (header-legal: 16 + 2 runs). */
	f = pages_frame(RMIG_MSG_PAGES, 0, 0, runs, 2, 0, &flen);
	EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	free(f);
	/* 2M pages: a 4K page's worth is not a page. */
	runs[0] = (struct rmig_run){ 0, 1 };
	f = pages_frame(RMIG_MSG_PAGES, UINT32_MAX, 0, runs, 1, 4096, &flen);
	EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
	free(f);
	/* ZERO must carry no bytes. */
	for (size_t n = 1; n <= 4096; n *= 8) {
		f = pages_frame(RMIG_MSG_ZERO, 0, 0, runs, 1, n, &flen);
		EXPECT_BAD(err, pages_decode(f, flen, got, &ri, &ph, err, sizeof(err)));
		free(f);
	}

	/* More than the per-frame data limit, asked of the runs decoder directly
	 * (the header check would stop such a frame earlier). */
	{
		struct rmig_frame_hdr fh = { .type = RMIG_MSG_PAGES };
		uint8_t rb[RMIG_RUN_LEN];
		struct rmig_pages_hdr p = { .region_id = 2, .nruns = 1 };
		uint64_t pages = RMIG_MAX_FRAME_DATA / 4096 + 1;

		wr64(rb, 0);
		wr64(rb + 8, pages);
		fh.len = (uint32_t)(RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN + pages * 4096);
		EXPECT_BAD(err, rmig_pages_runs_decode(rb, &fh, &p, pages_layout(), got, &ri, err,
						       sizeof(err)));
		/* A count whose byte size wraps 32 bits: 2^20 pages of 4K = 2^32. */
		wr64(rb + 8, 1ull << 20);
		fh.len = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN; /* 2^32 bytes mod 2^32 = 0 */
		EXPECT_BAD(err, rmig_pages_runs_decode(rb, &fh, &p, pages_layout(), got, &ri, err,
						       sizeof(err)));
	}
}

static void test_pages_without_layout(void **state)
{
	char err[256];
	struct rmig_run r = { 0, 1 };
	struct rmig_msg m;
	size_t flen;
	uint8_t *f;

	(void)state;
	f = pages_frame(RMIG_MSG_PAGES, 0, 0, &r, 1, 4096, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, NULL, &m, err, sizeof(err)));
	free(f);
	f = pages_frame(RMIG_MSG_ZERO, 0, 0, &r, 1, 0, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, NULL, &m, err, sizeof(err)));
	free(f);
}

/* ---- post-copy: DISCARD, PAGE_REQUEST, PAGE_DATA ---- */

static void rt_runs(uint8_t type)
{
	struct rmig_msg *m = calloc(1, sizeof(*m)), out;
	static const uint32_t counts[] = { 1, 3, RMIG_MAX_RUNS };
	uint8_t buf[RMIG_DISCARD_HDR_LEN + RMIG_RUN_LEN * (RMIG_MAX_RUNS + 1)];
	char err[256];
	size_t ri;

	assert_non_null(m);
	m->type = type;
	for (size_t c = 0; c < 3; c++) {
		uint8_t *f;
		size_t flen;

		m->u.discard.region_id = 2; /* pages_layout's 2^32-page region */
		m->u.discard.nruns = counts[c];
		for (uint32_t i = 0; i < counts[c]; i++)
			m->u.discard.runs[i] = (struct rmig_run){ (uint64_t)i << 20, 1 + i };
		f = roundtrip(m, &out, &flen);
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + 8 + 16 * counts[c]);
		assert_int_equal(out.u.discard.region_id, 2);
		assert_int_equal(out.u.discard.nruns, counts[c]);
		assert_memory_equal(out.u.discard.runs, m->u.discard.runs, 16 * counts[c]);
		EXPECT_OK(err, rmig_page_msg_check(&out, pages_layout(), &ri, err, sizeof(err)));
		assert_int_equal(ri, 3);
		free(f);
	}
	/* The last page of a region, and a whole region in one run. */
	m->u.discard.region_id = 0;
	m->u.discard.nruns = 2;
	m->u.discard.runs[0] = (struct rmig_run){ 0, 63 };
	m->u.discard.runs[1] = (struct rmig_run){ 63, 1 };
	EXPECT_OK(err, rmig_page_msg_check(m, pages_layout(), &ri, err, sizeof(err)));
	assert_int_equal(ri, 0);
	m->u.discard.nruns = 1;
	m->u.discard.runs[0] = (struct rmig_run){ 0, 64 };
	EXPECT_OK(err, rmig_page_msg_check(m, pages_layout(), &ri, err, sizeof(err)));
	/* The encoder refuses no runs, too many, and a short buffer. */
	m->u.discard.nruns = 0;
	assert_int_equal(rmig_msg_encode(m, buf, sizeof(buf)), 0);
	m->u.discard.nruns = RMIG_MAX_RUNS + 1;
	assert_int_equal(rmig_msg_encode(m, buf, sizeof(buf)), 0);
	m->u.discard.nruns = 1;
	assert_int_equal(rmig_msg_encode(m, buf, RMIG_DISCARD_HDR_LEN + RMIG_RUN_LEN - 1), 0);
	assert_int_equal(rmig_msg_encode(m, buf, RMIG_DISCARD_HDR_LEN + RMIG_RUN_LEN),
			 RMIG_DISCARD_HDR_LEN + RMIG_RUN_LEN);
	free(m);
}

static void test_rt_discard(void **state)
{
	(void)state;
	rt_runs(RMIG_MSG_DISCARD);
}

static void test_rt_missing(void **state)
{
	(void)state;
	rt_runs(RMIG_MSG_MISSING);
}

/* A DISCARD payload: region, then the runs as given (count taken from n). */
static size_t discard_payload(uint8_t *p, uint32_t region, uint32_t nruns_field,
			      const struct rmig_run *runs, uint32_t n)
{
	wr32(p, region);
	wr32(p + 4, nruns_field);
	for (uint32_t i = 0; i < n; i++) {
		wr64(p + 8 + 16 * i, runs[i].first);
		wr64(p + 8 + 16 * i + 8, runs[i].count);
	}
	return 8 + 16 * (size_t)n;
}

/* DISCARD and MISSING share their layout and checks. */
static void runs_invalid(uint8_t type)
{
	uint8_t p[8 + 16 * (RMIG_MAX_RUNS + 1)];
	struct rmig_run runs[RMIG_MAX_RUNS + 1];
	struct rmig_msg *m = calloc(1, sizeof(*m));
	char err[256];
	size_t len, ri;
	static const struct rmig_run unordered[][2] = {
		{ { 0, 10 }, { 0, 10 } }, /* the same run twice */
		{ { 0, 10 }, { 9, 2 } },  /* overlaps by one page */
		{ { 10, 2 }, { 0, 1 } },  /* descending */
	};
	static const struct rmig_run no_pages[] = {
		{ 0, 0 },
		{ 5, 0 },
		{ UINT64_MAX, 1 },	    /* first + count wraps to 0 */
		{ 2, UINT64_MAX },	    /* wraps to 1 */
		{ 1ull << 63, 1ull << 63 }, /* wraps to 0 */
	};
	static const struct {
		uint32_t region;
		struct rmig_run run;
	} outside[] = {
		{ 0, { 64, 1 } },	  /* first == npages */
		{ 0, { 63, 2 } },	  /* one past the end */
		{ 0, { 0, 65 } },	  /* longer than the region */
		{ 2, { 1ull << 32, 1 } }, /* the 2^32-page region, one past */
		{ 5, { 16, 1 } },	  /* 64K pages */
		{ UINT32_MAX, { 1, 2 } }, /* 2M pages */
	};
	static const uint32_t bad_ids[] = { 1, 3, 4, 6, 0xfffffffe };

	assert_non_null(m);
	for (int i = 0; i <= RMIG_MAX_RUNS; i++)
		runs[i] = (struct rmig_run){ (uint64_t)i * 2, 1 };
	/* Run count against length: 0, too many, says more or fewer than carried. */
	len = discard_payload(p, 0, 0, runs, 1);
	EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
	len = discard_payload(p, 0, RMIG_MAX_RUNS + 1, runs, RMIG_MAX_RUNS + 1);
	EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
	len = discard_payload(p, 0, 2, runs, 1);
	EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
	len = discard_payload(p, 0, 1, runs, 2);
	EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
	len = discard_payload(p, 0, 1, runs, 1);
	EXPECT_BAD(err, decode_payload(type, p, len + 1, err, sizeof(err)));
	len = discard_payload(p, 0, RMIG_MAX_RUNS, runs, RMIG_MAX_RUNS);
	EXPECT_OK(err, decode_payload(type, p, len, err, sizeof(err)));
	/* Runs not ascending, or overlapping. */
	for (size_t i = 0; i < sizeof(unordered) / sizeof(unordered[0]); i++) {
		len = discard_payload(p, 0, 2, unordered[i], 2);
		EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
		assert_non_null(strstr(err, "overlap or precede"));
	}
	/* Empty or wrapping runs, alone and after a good one. */
	for (size_t i = 0; i < sizeof(no_pages) / sizeof(no_pages[0]); i++) {
		struct rmig_run two[2] = { { 0, 1 }, no_pages[i] };

		if (no_pages[i].first == 0)
			two[0] = (struct rmig_run){ 0, 0 }; /* keep them ascending */
		len = discard_payload(p, 0, 1, &no_pages[i], 1);
		EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
		len = discard_payload(p, 0, 2, two, 2);
		EXPECT_BAD(err, decode_payload(type, p, len, err, sizeof(err)));
	}
	/* Structurally fine, but outside its region or in none: the layout
	 * check refuses, naming the region. */
	for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
		uint8_t *q;

		len = discard_payload(p, outside[i].region, 1, &outside[i].run, 1);
		q = dup_exact(p, len);
		EXPECT_OK(err, rmig_msg_decode(type, q, len, m, err, sizeof(err)));
		EXPECT_BAD(err, rmig_page_msg_check(m, pages_layout(), &ri, err, sizeof(err)));
		assert_non_null(strstr(err, "past the end"));
		free(q);
	}
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		len = discard_payload(p, bad_ids[i], 1, runs, 1);
		EXPECT_OK(err, rmig_msg_decode(type, p, len, m, err, sizeof(err)));
		EXPECT_BAD(err, rmig_page_msg_check(m, pages_layout(), &ri, err, sizeof(err)));
		assert_non_null(strstr(err, "region"));
	}
	/* Other messages name no pages. */
	m->type = RMIG_MSG_GO;
	EXPECT_BAD(err, rmig_page_msg_check(m, pages_layout(), &ri, err, sizeof(err)));
	free(m);
}

static void test_discard_invalid(void **state)
{
	(void)state;
	runs_invalid(RMIG_MSG_DISCARD);
}

static void test_missing_invalid(void **state)
{
	(void)state;
	runs_invalid(RMIG_MSG_MISSING);
}

static void test_rt_page_request(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_PAGE_REQUEST }, out;
	static const uint64_t pages[] = { 0, 63, 1ull << 31, UINT64_MAX };
	char err[256];
	size_t ri;

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		uint8_t *f;
		size_t flen;

		m.u.page.region_id = (uint32_t)(0xfffffff0u + i);
		m.u.page.page = pages[i];
		f = roundtrip(&m, &out, &flen);
		assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_PAGE_REF_LEN);
		assert_int_equal(out.u.page.region_id, m.u.page.region_id);
		assert_true(out.u.page.page == pages[i]);
		assert_null(out.u.page.data);
		free(f);
	}
	/* Against the layout: the last page of each region, then one past. */
	for (uint32_t r = 0; r < pages_layout()->count; r++) {
		const struct rmig_wire_region *wr = &pages_layout()->r[r];

		m.u.page.region_id = wr->id;
		m.u.page.page = wr->len / wr->page_size - 1;
		EXPECT_OK(err, rmig_page_msg_check(&m, pages_layout(), &ri, err, sizeof(err)));
		assert_int_equal(ri, r);
		m.u.page.page++;
		EXPECT_BAD(err, rmig_page_msg_check(&m, pages_layout(), &ri, err, sizeof(err)));
		assert_non_null(strstr(err, "past the end"));
	}
	m.u.page.region_id = 1; /* no such region */
	m.u.page.page = 0;
	EXPECT_BAD(err, rmig_page_msg_check(&m, pages_layout(), &ri, err, sizeof(err)));
	assert_non_null(strstr(err, "region"));
}

static void test_rt_page_data(void **state)
{
	struct rmig_msg m = { .type = RMIG_MSG_PAGE_DATA }, out;
	static const uint32_t odd[] = { 4095, 4097, 6144, 3 * 4096, (2u << 20) - 4096 };
	size_t big = RMIG_PAGE_REF_LEN + RMIG_MAX_PAGE_SIZE + 1;
	uint8_t *page = malloc(RMIG_MAX_PAGE_SIZE + 4096), *enc = malloc(big);
	uint8_t *f, *q;
	size_t flen, ri;
	char err[256];

	(void)state;
	assert_non_null(page);
	assert_non_null(enc);
	for (size_t i = 0; i < RMIG_MAX_PAGE_SIZE + 4096; i++)
		page[i] = (uint8_t)rnd();
	m.u.page.region_id = 0;
	m.u.page.page = 63;
	m.u.page.data = page;
	m.u.page.len = 4096;
	f = roundtrip(&m, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_PAGE_REF_LEN + 4096);
	assert_int_equal(out.u.page.region_id, 0);
	assert_true(out.u.page.page == 63);
	assert_int_equal(out.u.page.len, 4096);
	/* Points into the frame, not a copy. */
	assert_ptr_equal(out.u.page.data, f + RMIG_FRAME_HDR_LEN + RMIG_PAGE_REF_LEN);
	assert_memory_equal(out.u.page.data, page, 4096);
	EXPECT_OK(err, rmig_page_msg_check(&out, pages_layout(), &ri, err, sizeof(err)));
	free(f);
	/* The largest page, 2 MiB, in its region; not in a 4K one. */
	m.u.page.region_id = UINT32_MAX;
	m.u.page.page = 1;
	m.u.page.len = RMIG_MAX_PAGE_SIZE;
	assert_int_equal(rmig_msg_encode(&m, enc, big), RMIG_PAGE_REF_LEN + RMIG_MAX_PAGE_SIZE);
	assert_int_equal(rmig_msg_encode(&m, enc, RMIG_PAGE_REF_LEN + RMIG_MAX_PAGE_SIZE - 1), 0);
	q = dup_exact(enc, RMIG_PAGE_REF_LEN + RMIG_MAX_PAGE_SIZE);
	EXPECT_OK(err,
		  rmig_msg_decode(RMIG_MSG_PAGE_DATA, q, RMIG_PAGE_REF_LEN + RMIG_MAX_PAGE_SIZE,
				  &out, err, sizeof(err)));
	assert_memory_equal(out.u.page.data, page, RMIG_MAX_PAGE_SIZE);
	EXPECT_OK(err, rmig_page_msg_check(&out, pages_layout(), &ri, err, sizeof(err)));
	assert_int_equal(ri, 2);
	out.u.page.region_id = 0;
	out.u.page.page = 0;
	EXPECT_BAD(err, rmig_page_msg_check(&out, pages_layout(), &ri, err, sizeof(err)));
	assert_non_null(strstr(err, "bytes"));
	free(q);
	/* A 4K page where the region has 64K ones. */
	m.u.page.region_id = 5;
	m.u.page.page = 0;
	m.u.page.len = 4096;
	assert_true(rmig_msg_encode(&m, enc, big) > 0);
	EXPECT_OK(err, rmig_msg_decode(RMIG_MSG_PAGE_DATA, enc, RMIG_PAGE_REF_LEN + 4096, &out, err,
				       sizeof(err)));
	EXPECT_BAD(err, rmig_page_msg_check(&out, pages_layout(), &ri, err, sizeof(err)));
	/* Not a page size: neither encoded nor decoded. */
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		uint32_t len = odd[i];

		m.u.page.len = len;
		assert_int_equal(rmig_msg_encode(&m, enc, big), 0);
		q = dup_exact(enc, RMIG_PAGE_REF_LEN + len);
		wr32(q, 0);
		wr32(q + 4, 0);
		EXPECT_BAD(err, decode_payload(RMIG_MSG_PAGE_DATA, q, RMIG_PAGE_REF_LEN + len, err,
					       sizeof(err)));
		free(q);
	}
	q = calloc(1, RMIG_PAGE_REF_LEN + 3 * 4096);
	assert_non_null(q);
	EXPECT_BAD(err, decode_payload(RMIG_MSG_PAGE_DATA, q, RMIG_PAGE_REF_LEN + 3 * 4096, err,
				       sizeof(err)));
	EXPECT_OK(err, decode_payload(RMIG_MSG_PAGE_DATA, q, RMIG_PAGE_REF_LEN + 2 * 4096, err,
				      sizeof(err)));
	/* Length bounds: one byte short of a 4K page, one past 2 MiB. */
	EXPECT_BAD(
	    err, decode_payload(RMIG_MSG_PAGE_DATA, q, RMIG_PAGE_REF_LEN + 4095, err, sizeof(err)));
	free(q);
	q = calloc(1, big);
	assert_non_null(q);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_PAGE_DATA, q, big, &out, err, sizeof(err)));
	free(q);
	free(enc);
	free(page);
}

static void test_page_ref_reserved(void **state)
{
	uint8_t p[RMIG_PAGE_REF_LEN + 4096] = { 0 };
	char err[256];

	(void)state;
	EXPECT_OK(err,
		  decode_payload(RMIG_MSG_PAGE_REQUEST, p, RMIG_PAGE_REF_LEN, err, sizeof(err)));
	EXPECT_OK(err, decode_payload(RMIG_MSG_PAGE_DATA, p, sizeof(p), err, sizeof(err)));
	for (int bit = 0; bit < 32; bit += 7) {
		wr32(p + 4, 1u << bit);
		EXPECT_BAD(err, decode_payload(RMIG_MSG_PAGE_REQUEST, p, RMIG_PAGE_REF_LEN, err,
					       sizeof(err)));
		assert_non_null(strstr(err, "reserved"));
		EXPECT_BAD(err, decode_payload(RMIG_MSG_PAGE_DATA, p, sizeof(p), err, sizeof(err)));
	}
	/* PAGE_REQUEST is 16 bytes exactly. */
	wr32(p + 4, 0);
	EXPECT_BAD(
	    err, decode_payload(RMIG_MSG_PAGE_REQUEST, p, RMIG_PAGE_REF_LEN + 8, err, sizeof(err)));
}

/* ---- mini-fuzz ---- */

struct fuzz_stats {
	unsigned long accepted[RMIG_MSG_TYPE_COUNT];
	unsigned long rejected;
};

static int printable(char c)
{
	return c >= 0x20 && c < 0x7f;
}

/* Whatever the decoder accepted must satisfy the invariants it promises. */
static void check_accepted(const uint8_t *buf, size_t n, const struct rmig_msg *m)
{
	char err[256];
	struct rmig_frame_hdr fh;
	const struct rmig_layout *l = pages_layout();

	assert_true(n >= RMIG_FRAME_HDR_LEN);
	EXPECT_OK(err, rmig_frame_hdr_decode(buf, &fh, err, sizeof(err)));
	assert_true(fh.len <= n - RMIG_FRAME_HDR_LEN);
	assert_int_equal(m->type, fh.type);
	buf += RMIG_FRAME_HDR_LEN;

	switch (fh.type) {
	case RMIG_MSG_PAGES:
	case RMIG_MSG_ZERO:
	case RMIG_MSG_BLOCKS:
	case RMIG_MSG_BLOCKS_ZERO: {
		struct rmig_pages_hdr ph;
		struct rmig_run runs[RMIG_MAX_RUNS];
		size_t ri = 999;
		uint64_t npages, pages = 0;

		EXPECT_OK(err, rmig_pages_hdr_decode(buf, &fh, &ph, err, sizeof(err)));
		EXPECT_OK(err, rmig_pages_runs_decode(buf + RMIG_PAGES_HDR_LEN, &fh, &ph, l, runs,
						      &ri, err, sizeof(err)));
		assert_true(ph.nruns >= 1 && ph.nruns <= RMIG_MAX_RUNS);
		assert_true(ri < l->count);
		assert_int_equal(l->r[ri].id, ph.region_id);
		npages = l->r[ri].len / l->r[ri].page_size;
		for (uint32_t i = 0; i < ph.nruns; i++) {
			assert_true(runs[i].count >= 1);
			assert_true(runs[i].count <= npages);
			assert_true(runs[i].first < npages);
			assert_true(runs[i].first + runs[i].count <= npages);
			assert_true(runs[i].first + runs[i].count > runs[i].first);
			assert_true(runs[i].first == rd64(buf + 16 + 16 * i));
			assert_true(runs[i].count == rd64(buf + 16 + 16 * i + 8));
			pages += runs[i].count;
		}
		if (fh.type == RMIG_MSG_ZERO || fh.type == RMIG_MSG_BLOCKS_ZERO)
			assert_int_equal(fh.len, 16 + 16 * ph.nruns);
		else {
			assert_true(pages * l->r[ri].page_size <= RMIG_MAX_FRAME_DATA);
			assert_true((uint64_t)fh.len ==
				    16 + 16 * ph.nruns + pages * l->r[ri].page_size);
		}
		return;
	}
	case RMIG_MSG_STATE:
	case RMIG_MSG_MEM_KEYS:
	case RMIG_MSG_STREAM:
		assert_ptr_equal(m->u.state.data, buf);
		assert_int_equal(m->u.state.len, fh.len);
		return;
	case RMIG_MSG_HELLO:
		assert_true(m->u.hello.ver_min <= m->u.hello.ver_max);
		assert_true(m->u.hello.channels >= 1 && m->u.hello.channels <= RMIG_MAX_CHANNELS);
		break;
	case RMIG_MSG_REGIONS:
		assert_true(m->u.layout.count <= RMIG_MAX_REGIONS);
		EXPECT_OK(err, rmig_layout_check(&m->u.layout, err, sizeof(err)));
		break;
	case RMIG_MSG_DISKS:
		assert_true(m->u.disks.count >= 1 && m->u.disks.count <= RMIG_MAX_DISKS);
		EXPECT_OK(err, rmig_disks_check(&m->u.disks, err, sizeof(err)));
		break;
	case RMIG_MSG_CHANNEL:
		assert_true(m->u.channel.count >= 1 && m->u.channel.count <= RMIG_MAX_CHANNELS);
		assert_true(m->u.channel.index < m->u.channel.count);
		break;
	case RMIG_MSG_ROUND_END:
		assert_true(m->u.round_end.h.nchan >= 1 &&
			    m->u.round_end.h.nchan <= RMIG_MAX_CHANNELS);
		assert_int_equal(fh.len, 32 + 8 * m->u.round_end.h.nchan);
		break;
	case RMIG_MSG_COMPLETE:
		assert_true(m->u.complete.count <= RMIG_MAX_REGIONS);
		assert_int_equal(m->u.complete.flags & ~RMIG_COMPLETE_FLAGS, 0);
		assert_int_equal(fh.len, 8 + 8 * m->u.complete.count);
		break;
	case RMIG_MSG_ABORT:
		assert_int_equal(strlen(m->u.abort.reason), fh.len - 8);
		for (size_t i = 0; m->u.abort.reason[i]; i++)
			assert_true(printable(m->u.abort.reason[i]));
		break;
	case RMIG_MSG_DISCARD:
	case RMIG_MSG_MISSING:
		assert_true(m->u.discard.nruns >= 1 && m->u.discard.nruns <= RMIG_MAX_RUNS);
		assert_int_equal(fh.len, 8 + 16 * m->u.discard.nruns);
		for (uint32_t i = 0; i < m->u.discard.nruns; i++) {
			const struct rmig_run *r = &m->u.discard.runs[i];

			assert_true(r->count >= 1 && r->first + r->count > r->first);
			if (i)
				assert_true(r->first >= r[-1].first + r[-1].count);
		}
		break;
	case RMIG_MSG_PAGE_DATA: {
		/* Too large for the buffer below: its own re-encode. */
		uint8_t *out = malloc(fh.len);

		assert_non_null(out);
		assert_ptr_equal(m->u.page.data, buf + RMIG_PAGE_REF_LEN);
		assert_int_equal(m->u.page.len, fh.len - RMIG_PAGE_REF_LEN);
		assert_true(m->u.page.len >= 4096 && !(m->u.page.len & (m->u.page.len - 1)));
		assert_int_equal(rmig_msg_encode(m, out, fh.len), fh.len);
		assert_memory_equal(out, buf, fh.len);
		free(out);
		return;
	}
	default: break;
	}

	/* A decoded control message encodes back to the same payload, but for
	 * reserved fields and the sanitized ABORT text. */
	{
		uint8_t out[4096];
		size_t len = rmig_msg_encode(m, out, sizeof(out));

		assert_int_equal(len, fh.len);
		for (size_t i = 0; i < len; i++) {
			uint8_t want = buf[i];

			if ((fh.type == RMIG_MSG_HELLO && i >= 36) ||
			    ((fh.type == RMIG_MSG_REGIONS || fh.type == RMIG_MSG_ABORT) && i >= 4 &&
			     i < 8))
				continue;
			if (fh.type == RMIG_MSG_ABORT && i >= 8 && !printable((char)want))
				want = '?';
			if (out[i] != want)
				fail_msg("%s: byte %zu re-encodes as 0x%02x, was 0x%02x",
					 rmig_msg_name(fh.type), i, out[i], want);
		}
	}
}

static void fuzz_one(const uint8_t *frame, size_t n, struct fuzz_stats *st)
{
	char err[256];
	struct rmig_msg m;
	int rc;

	memset(&m, 0xa5, sizeof(m));
	memset(err, 0, sizeof(err));
	rc = rmig_frame_decode_buf(frame, n, pages_layout(), &m, err, sizeof(err));
	if (rc) {
		assert_int_equal(rc, -EBADMSG);
		assert_true(err[0] != 0);
		st->rejected++;
		/* The step decoders must not accept what the whole-frame one refused. */
		if (n >= RMIG_FRAME_HDR_LEN) {
			struct rmig_frame_hdr fh;
			struct rmig_pages_hdr ph;
			struct rmig_run runs[RMIG_MAX_RUNS];
			size_t ri;

			if (!rmig_frame_hdr_decode(frame, &fh, NULL, 0) &&
			    fh.len <= n - RMIG_FRAME_HDR_LEN && rmig_is_data_frame(fh.type) &&
			    !rmig_pages_hdr_decode(frame + RMIG_FRAME_HDR_LEN, &fh, &ph, NULL, 0))
				assert_int_not_equal(
				    rmig_pages_runs_decode(
					frame + RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN, &fh, &ph,
					pages_layout(), runs, &ri, NULL, 0),
				    0);
		}
		return;
	}
	check_accepted(frame, n, &m);
	st->accepted[m.type]++;
}

static const uint64_t interesting64[] = { 0,
					  1,
					  2,
					  15,
					  16,
					  63,
					  64,
					  65,
					  0xffffffffull,
					  0x100000000ull,
					  0x100000001ull,
					  0x7fffffffffffffffull,
					  0x8000000000000000ull,
					  UINT64_MAX - 1,
					  UINT64_MAX };

static const uint32_t interesting32[] = {
	0,  1,	2,  3,	  5,	 8,	   16,		24,	     32,	  40,
	63, 64, 65, 4096, 65536, 2u << 20, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu
};

/* The frame builder sets n: evaluate it before reading n. */
#define ADD_SEED(frame, n, seeds, lens, nseeds)                                                    \
	do {                                                                                       \
		uint8_t *f_ = (frame);                                                             \
		(seeds)[*(nseeds)] = f_;                                                           \
		(lens)[(*(nseeds))++] = (n);                                                       \
	} while (0)

/* ---- disks ---- */

static struct rmig_disks two_disks(void)
{
	struct rmig_disks d = { .count = 2 };

	d.d[0] = (struct rmig_wire_disk){ .id = 7, .block_size = 65536, .size = 1ull << 30 };
	strcpy(d.d[0].name, "vda");
	memset(d.d[0].identity, 0xab, sizeof(d.d[0].identity));
	d.d[1] = (struct rmig_wire_disk){ .id = 9, .block_size = 4096, .size = 4096 };
	strcpy(d.d[1].name, "scratch disk 1");
	return d;
}

static void test_rt_disks(void **state)
{
	struct rmig_msg in = { .type = RMIG_MSG_DISKS }, out;
	struct rmig_layout l;
	size_t flen;
	uint8_t *f;

	(void)state;
	in.u.disks = two_disks();
	f = roundtrip(&in, &out, &flen);
	assert_int_equal(flen, RMIG_FRAME_HDR_LEN + RMIG_DISKS_HDR_LEN + 2 * RMIG_DISK_DESC_LEN);
	assert_int_equal(out.u.disks.count, 2);
	assert_memory_equal(&out.u.disks.d[0], &in.u.disks.d[0], sizeof(in.u.disks.d[0]));
	assert_memory_equal(&out.u.disks.d[1], &in.u.disks.d[1], sizeof(in.u.disks.d[1]));
	free(f);
	/* As regions of blocks, for the runs of BLOCKS frames. */
	rmig_disks_layout(&in.u.disks, &l);
	assert_int_equal(l.count, 2);
	assert_int_equal(l.r[1].id, 9);
	assert_int_equal(l.r[1].page_size, 4096);
	assert_true(l.r[0].len == 1ull << 30);

	in.type = RMIG_MSG_DISK_DIGESTS;
	in.u.disk_digests.count = 2;
	in.u.disk_digests.digest[0] = 0x0123456789abcdefull;
	in.u.disk_digests.digest[1] = ~0ull;
	f = roundtrip(&in, &out, &flen);
	assert_int_equal(out.u.disk_digests.count, 2);
	assert_true(out.u.disk_digests.digest[1] == ~0ull);
	free(f);

	in.type = RMIG_MSG_DISKS_ACK;
	in.u.value = 0;
	f = roundtrip(&in, &out, &flen);
	free(f);
}

/* Encode two_disks() with one field changed by edit, and expect it refused. */
static void expect_disks_bad(void (*edit)(struct rmig_wire_disk *d), const char *what)
{
	struct rmig_disks d = two_disks();
	uint8_t buf[RMIG_DISKS_HDR_LEN + RMIG_DISK_DESC_LEN * RMIG_MAX_DISKS], *p;
	struct rmig_msg in = { .type = RMIG_MSG_DISKS }, out;
	char err[256];
	size_t len;

	in.u.disks = d;
	len = rmig_msg_encode(&in, buf, sizeof(buf));
	assert_true(len > 0);
	edit(&d.d[1]);
	/* Write the edited second disk over the encoded one, field by field. */
	p = buf + RMIG_DISKS_HDR_LEN + RMIG_DISK_DESC_LEN;
	wr32(p, d.d[1].id);
	wr32(p + 4, d.d[1].block_size);
	wr64(p + 8, d.d[1].size);
	memcpy(p + 32, d.d[1].name, RMIG_DISK_NAME_LEN);
	p = dup_exact(buf, len);
	memset(err, 0, sizeof(err));
	if (rmig_msg_decode(RMIG_MSG_DISKS, p, len, &out, err, sizeof(err)) != -EBADMSG)
		fail_msg("DISKS with %s was accepted", what);
	assert_true(err[0] != 0);
	free(p);
}

static void dup_id(struct rmig_wire_disk *d)
{
	d->id = 7;
}
static void dup_name(struct rmig_wire_disk *d)
{
	memset(d->name, 0, sizeof(d->name));
	strcpy(d->name, "vda");
}
static void bad_block(struct rmig_wire_disk *d)
{
	d->block_size = 3 * 4096;
}
static void small_block(struct rmig_wire_disk *d)
{
	d->block_size = 2048;
	d->size = 2048;
}
static void big_block(struct rmig_wire_disk *d)
{
	d->block_size = 4u << 20;
	d->size = 4u << 20;
}
static void zero_size(struct rmig_wire_disk *d)
{
	d->size = 0;
}
static void odd_size(struct rmig_wire_disk *d)
{
	d->size = 4096 + 512;
}
static void huge_size(struct rmig_wire_disk *d)
{
	d->size = RMIG_MAX_DISK_BYTES + 4096;
}
static void empty_name(struct rmig_wire_disk *d)
{
	memset(d->name, 0, sizeof(d->name));
}
static void long_name(struct rmig_wire_disk *d)
{
	memset(d->name, 'x', sizeof(d->name));
}
static void ctl_name(struct rmig_wire_disk *d)
{
	d->name[1] = '\n';
}
static void junk_after_name(struct rmig_wire_disk *d)
{
	d->name[20] = 'x';
}

static void test_disks_invalid(void **state)
{
	struct rmig_msg in = { .type = RMIG_MSG_DISKS }, out;
	uint8_t buf[RMIG_DISKS_HDR_LEN + RMIG_DISK_DESC_LEN * RMIG_MAX_DISKS];
	char err[256];
	size_t len;

	(void)state;
	expect_disks_bad(dup_id, "a duplicate id");
	expect_disks_bad(dup_name, "a duplicate name");
	expect_disks_bad(bad_block, "a block size not a power of two");
	expect_disks_bad(small_block, "a 2 KiB block");
	expect_disks_bad(big_block, "a 4 MiB block");
	expect_disks_bad(zero_size, "an empty disk");
	expect_disks_bad(odd_size, "a size not a multiple of the block");
	expect_disks_bad(huge_size, "a size past the limit");
	expect_disks_bad(empty_name, "no name");
	expect_disks_bad(long_name, "an unterminated name");
	expect_disks_bad(ctl_name, "a control character in the name");
	expect_disks_bad(junk_after_name, "bytes after the name's end");

	/* Count against length, and no disks at all. */
	in.u.disks = two_disks();
	len = rmig_msg_encode(&in, buf, sizeof(buf));
	wr32(buf, 3);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_DISKS, buf, len, &out, err, sizeof(err)));
	wr32(buf, 0);
	EXPECT_BAD(err,
		   rmig_msg_decode(RMIG_MSG_DISKS, buf, RMIG_DISKS_HDR_LEN + RMIG_DISK_DESC_LEN,
				   &out, err, sizeof(err)));
	in.u.disks.count = 0;
	assert_int_equal(rmig_msg_encode(&in, buf, sizeof(buf)), 0);
	in.u.disks.count = RMIG_MAX_DISKS + 1;
	assert_int_equal(rmig_msg_encode(&in, buf, sizeof(buf)), 0);

	/* DISK_DIGESTS: count against length, reserved not zero. */
	in.type = RMIG_MSG_DISK_DIGESTS;
	in.u.disk_digests.count = 1;
	len = rmig_msg_encode(&in, buf, sizeof(buf));
	assert_int_equal(len, RMIG_DISK_DIGESTS_HDR_LEN + 8);
	wr32(buf, 2);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_DISK_DIGESTS, buf, len, &out, err, sizeof(err)));
	wr32(buf, 1);
	wr32(buf + 4, 1);
	EXPECT_BAD(err, rmig_msg_decode(RMIG_MSG_DISK_DIGESTS, buf, len, &out, err, sizeof(err)));
}

/* BLOCKS and BLOCKS_ZERO: PAGES' layout and checks, against the disks. */
static void test_blocks_frames(void **state)
{
	struct rmig_disks d = two_disks();
	struct rmig_layout l;
	struct rmig_run runs[2] = { { 0, 1 }, { 16383, 1 } }, got[RMIG_MAX_RUNS];
	struct rmig_frame_hdr fh;
	struct rmig_pages_hdr ph;
	struct rmig_msg m;
	char err[256];
	size_t ri, flen;
	uint8_t *f;

	(void)state;
	rmig_disks_layout(&d, &l);
	assert_true(rmig_is_data_frame(RMIG_MSG_BLOCKS) &&
		    rmig_is_data_frame(RMIG_MSG_BLOCKS_ZERO));
	assert_false(rmig_is_data_frame(RMIG_MSG_DISKS));
	/* Two 64 KiB blocks of disk 7: the first and the last. */
	f = pages_frame(RMIG_MSG_BLOCKS, 7, 2, runs, 2, 2 * 65536, &flen);
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, &l, &m, err, sizeof(err)));
	EXPECT_OK(err, rmig_frame_hdr_decode(f, &fh, err, sizeof(err)));
	EXPECT_OK(err, rmig_pages_hdr_decode(f + RMIG_FRAME_HDR_LEN, &fh, &ph, err, sizeof(err)));
	EXPECT_OK(err, rmig_pages_runs_decode(f + RMIG_FRAME_HDR_LEN + RMIG_PAGES_HDR_LEN, &fh, &ph,
					      &l, got, &ri, err, sizeof(err)));
	assert_int_equal(ri, 0);
	free(f);
	/* One block past the disk's end; a block's bytes short; an unknown disk. */
	runs[1].first = 16384;
	f = pages_frame(RMIG_MSG_BLOCKS, 7, 2, runs, 2, 2 * 65536, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, &l, &m, err, sizeof(err)));
	free(f);
	runs[1].first = 1;
	f = pages_frame(RMIG_MSG_BLOCKS, 7, 2, runs, 2, 2 * 65536 - 4096, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, &l, &m, err, sizeof(err)));
	assert_non_null(strstr(err, "blocks"));
	free(f);
	f = pages_frame(RMIG_MSG_BLOCKS, 8, 2, runs, 2, 2 * 65536, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, &l, &m, err, sizeof(err)));
	free(f);
	/* BLOCKS_ZERO carries no bytes, and may cover a whole disk. */
	runs[0] = (struct rmig_run){ 0, 16384 };
	f = pages_frame(RMIG_MSG_BLOCKS_ZERO, 7, 2, runs, 1, 0, &flen);
	EXPECT_OK(err, rmig_frame_decode_buf(f, flen, &l, &m, err, sizeof(err)));
	free(f);
	f = pages_frame(RMIG_MSG_BLOCKS_ZERO, 7, 2, runs, 1, 4096, &flen);
	EXPECT_BAD(err, rmig_frame_decode_buf(f, flen, &l, &m, err, sizeof(err)));
	free(f);
	/* Never a control message. */
	EXPECT_BAD(err,
		   rmig_msg_decode(RMIG_MSG_BLOCKS, (const uint8_t *)"x", 1, &m, err, sizeof(err)));
}

static void test_fuzz(void **state)
{
	enum { ITERATIONS = 200000, MAX_SEEDS = 40, SLACK = 64 };
	uint8_t *seeds[MAX_SEEDS];
	size_t lens[MAX_SEEDS], nseeds = 0, maxlen = 0;
	struct rmig_run runs[RMIG_MAX_RUNS];
	struct rmig_msg *m = calloc(1, sizeof(*m));
	struct fuzz_stats st;
	uint8_t *work, blob[40];
	size_t n;
	char err[256];

	(void)state;
	assert_non_null(m);
	memset(&st, 0, sizeof(st));
	rng_state = 0x5eed1234;

	/* Seeds: one valid frame of every kind. */
	runs[0] = (struct rmig_run){ 0, 1 };
	runs[1] = (struct rmig_run){ 10, 2 };
	ADD_SEED(pages_frame(RMIG_MSG_PAGES, 0, 1, runs, 2, 3 * 4096, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ 63, 1 };
	ADD_SEED(pages_frame(RMIG_MSG_PAGES, 0, 1, runs, 1, 4096, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ (1ull << 32) - 1, 1 };
	ADD_SEED(pages_frame(RMIG_MSG_PAGES, 2, 1, runs, 1, 4096, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ 15, 1 };
	ADD_SEED(pages_frame(RMIG_MSG_PAGES, 5, 1, runs, 1, 65536, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ 0, 64 };
	ADD_SEED(pages_frame(RMIG_MSG_ZERO, 0, 2, runs, 1, 0, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ 0, 1 };
	runs[1] = (struct rmig_run){ 1, 1 };
	ADD_SEED(pages_frame(RMIG_MSG_ZERO, UINT32_MAX, 2, runs, 2, 0, &n), n, seeds, lens,
		 &nseeds);
	for (int i = 0; i < RMIG_MAX_RUNS; i++)
		runs[i] = (struct rmig_run){ (uint64_t)i << 26, 1ull << 20 };
	ADD_SEED(pages_frame(RMIG_MSG_ZERO, 2, 2, runs, RMIG_MAX_RUNS, 0, &n), n, seeds, lens,
		 &nseeds);

	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_HELLO;
	m->u.hello.ver_min = m->u.hello.ver_max = 1;
	m->u.hello.channels = 4;
	m->u.hello.caps = 3;
	ADD_SEED(make_frame(m, 0, 0, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_REGIONS;
	m->u.layout = *pages_layout();
	ADD_SEED(make_frame(m, 0, 1, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_CHANNEL;
	m->u.channel.index = 1;
	m->u.channel.count = 2;
	ADD_SEED(make_frame(m, 0, 0, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_ROUND_END;
	m->u.round_end.h.round = 3;
	m->u.round_end.h.nchan = 3;
	m->u.round_end.frames[2] = 99;
	ADD_SEED(make_frame(m, 0, 5, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)i;
	m->type = RMIG_MSG_STATE;
	m->u.state.data = blob;
	m->u.state.len = sizeof(blob);
	ADD_SEED(make_frame(m, 0, 6, &n), n, seeds, lens, &nseeds);
	m->u.state.len = 0;
	ADD_SEED(make_frame(m, 0, 6, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_COMPLETE;
	m->u.complete.flags = RMIG_COMPLETE_VERIFY;
	m->u.complete.count = 4;
	ADD_SEED(make_frame(m, 0, 7, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_ABORT;
	m->u.abort.code = -5;
	strcpy(m->u.abort.reason, "out of memory");
	ADD_SEED(make_frame(m, 0, 8, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_DONE;
	m->u.done.rounds = 4;
	ADD_SEED(make_frame(m, 0, 9, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_HEARTBEAT;
	m->u.value = 12345;
	ADD_SEED(make_frame(m, 0, 10, &n), n, seeds, lens, &nseeds);
	m->type = RMIG_MSG_ROUND_ACK;
	ADD_SEED(make_frame(m, 0, 11, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_MEM_KEYS;
	m->u.state.data = blob;
	m->u.state.len = 24;
	ADD_SEED(make_frame(m, 0, 12, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_DISCARD;
	m->u.discard.nruns = 2;
	m->u.discard.runs[0] = (struct rmig_run){ 0, 1 };
	m->u.discard.runs[1] = (struct rmig_run){ 10, 2 };
	ADD_SEED(make_frame(m, 0, 13, &n), n, seeds, lens, &nseeds);
	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_PAGE_REQUEST;
	m->u.page.page = 5;
	ADD_SEED(make_frame(m, 0, 14, &n), n, seeds, lens, &nseeds);
	{
		static uint8_t page[4096];

		m->type = RMIG_MSG_PAGE_DATA;
		m->u.page.data = page;
		m->u.page.len = sizeof(page);
		ADD_SEED(make_frame(m, 0, 15, &n), n, seeds, lens, &nseeds);
	}

	memset(m, 0, sizeof(*m));
	m->type = RMIG_MSG_DISKS;
	m->u.disks = two_disks();
	ADD_SEED(make_frame(m, 0, 16, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ 0, 1 };
	ADD_SEED(pages_frame(RMIG_MSG_BLOCKS, 0, 1, runs, 1, 4096, &n), n, seeds, lens, &nseeds);
	runs[0] = (struct rmig_run){ 1, 15 };
	ADD_SEED(pages_frame(RMIG_MSG_BLOCKS_ZERO, 5, 1, runs, 1, 0, &n), n, seeds, lens, &nseeds);

	/* Every seed is valid to begin with. */
	for (size_t s = 0; s < nseeds; s++) {
		EXPECT_OK(err, rmig_frame_decode_buf(seeds[s], lens[s], pages_layout(), m, err,
						     sizeof(err)));
		if (lens[s] > maxlen)
			maxlen = lens[s];
	}
	work = malloc(maxlen + SLACK);
	assert_non_null(work);

	for (long it = 0; it < ITERATIONS; it++) {
		size_t s = rnd() % nseeds;
		unsigned nmut = 1 + (unsigned)(rnd() % 4);
		uint8_t *exact;

		n = lens[s];
		memcpy(work, seeds[s], n);
		for (unsigned k = 0; k < nmut; k++) {
			uint64_t r = rnd();

			switch (r % 9) {
			case 0: /* flip a bit anywhere */
				if (n)
					work[(r >> 8) % n] ^= (uint8_t)(1u << ((r >> 4) % 8));
				break;
			case 1: /* flip a bit in the headers and runs */
				if (n) {
					size_t lim = n < 96 ? n : 96;

					work[(r >> 8) % lim] ^= (uint8_t)(1u << ((r >> 4) % 8));
				}
				break;
			case 2: /* truncate */ n = (size_t)((r >> 8) % (n + 1)); break;
			case 3: /* extend with random bytes */
			{
				size_t add = 1 + (size_t)((r >> 8) % 32);

				if (n + add > maxlen + SLACK)
					add = maxlen + SLACK - n;
				for (size_t i = 0; i < add; i++)
					work[n + i] = (uint8_t)rnd();
				n += add;
				break;
			}
			case 4: /* rewrite the header's length */
				if (n >= 12) {
					uint32_t cur = rd32(work + 8), v;

					switch ((r >> 8) % 4) {
					case 0: v = n >= 24 ? (uint32_t)(n - 24) : 0; break;
					case 1: v = cur + (uint32_t)((r >> 16) % 7) - 3; break;
					case 2: v = interesting32[(r >> 16) % 20]; break;
					default: v = (uint32_t)(r >> 32); break;
					}
					wr32(work + 8, v);
				}
				break;
			case 5: /* an interesting u32 in the payload */
				if (n >= 28) {
					size_t off = 24 + 4 * (size_t)((r >> 8) % ((n - 24) / 4));

					wr32(work + off, interesting32[(r >> 40) % 20]);
				}
				break;
			case 6: /* an interesting u64 in the payload (run fields) */
				if (n >= 32) {
					size_t off = 24 + 8 * (size_t)((r >> 8) % ((n - 24) / 8));
					uint64_t v = interesting64[(r >> 40) % 15];

					if ((r >> 36) & 1)
						v += (r >> 60) % 3;
					wr64(work + off, v);
				}
				break;
			case 7: /* change the type */
				if (n >= 6)
					work[5] = (uint8_t)((r >> 8) % (RMIG_MSG_TYPE_COUNT + 1));
				break;
			default: /* a random byte */
				if (n)
					work[(r >> 8) % n] = (uint8_t)(r >> 32);
				break;
			}
		}
		/* Often make the length consistent, to get past the framing. */
		if (n >= 24 && rnd() % 5 < 2)
			wr32(work + 8, (uint32_t)(n - 24));
		exact = dup_exact(work, n);
		fuzz_one(exact, n, &st);
		free(exact);
	}

	/* The fuzzer reached deep: plenty accepted, plenty rejected. */
	{
		unsigned long total = 0;

		for (int t = 0; t < RMIG_MSG_TYPE_COUNT; t++)
			total += st.accepted[t];
		print_message("fuzz: %lu accepted (PAGES %lu, ZERO %lu, REGIONS %lu, DISCARD %lu, "
			      "PAGE_DATA %lu), %lu rejected\n",
			      total, st.accepted[RMIG_MSG_PAGES], st.accepted[RMIG_MSG_ZERO],
			      st.accepted[RMIG_MSG_REGIONS], st.accepted[RMIG_MSG_DISCARD],
			      st.accepted[RMIG_MSG_PAGE_DATA], st.rejected);
		assert_true(total > ITERATIONS / 20);
		assert_true(st.rejected > ITERATIONS / 4);
		assert_true(st.accepted[RMIG_MSG_PAGES] > 500);
		assert_true(st.accepted[RMIG_MSG_ZERO] > 500);
		assert_true(st.accepted[RMIG_MSG_REGIONS] > 100);
		assert_true(st.accepted[RMIG_MSG_DISCARD] > 100);
		assert_true(st.accepted[RMIG_MSG_PAGE_DATA] > 100);
		assert_true(st.accepted[RMIG_MSG_DISKS] > 100);
		assert_true(st.accepted[RMIG_MSG_BLOCKS] > 100);
	}
	free(work);
	for (size_t s = 0; s < nseeds; s++)
		free(seeds[s]);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_msg_name),
		cmocka_unit_test(test_rt_disks),
		cmocka_unit_test(test_disks_invalid),
		cmocka_unit_test(test_blocks_frames),
		cmocka_unit_test(test_regions_ack_first_touch),
		cmocka_unit_test(test_hdr_layout),
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_hdr_len_bounds),
		cmocka_unit_test(test_hdr_bad_magic_version_type),
		cmocka_unit_test(test_frame_truncated),
		cmocka_unit_test(test_frame_len_past_buffer),
		cmocka_unit_test(test_rt_hello),
		cmocka_unit_test(test_rt_rails),
		cmocka_unit_test(test_rails_table_bytes),
		cmocka_unit_test(test_rails_encode_refuses),
		cmocka_unit_test(test_rails_bad),
		cmocka_unit_test(test_hello_carries_no_rails),
		cmocka_unit_test(test_rt_auth),
		cmocka_unit_test(test_rt_regions),
		cmocka_unit_test(test_rt_channel),
		cmocka_unit_test(test_rt_round_end),
		cmocka_unit_test(test_rt_state),
		cmocka_unit_test(test_rt_stream),
		cmocka_unit_test(test_rt_mem_keys),
		cmocka_unit_test(test_rt_complete),
		cmocka_unit_test(test_rt_abort),
		cmocka_unit_test(test_rt_done),
		cmocka_unit_test(test_rt_u64_msgs),
		cmocka_unit_test(test_encode_rejects_pages_and_unknown),
		cmocka_unit_test(test_msg_decode_len_bounds),
		cmocka_unit_test(test_hello_invalid),
		cmocka_unit_test(test_channel_invalid),
		cmocka_unit_test(test_round_end_invalid),
		cmocka_unit_test(test_complete_invalid),
		cmocka_unit_test(test_regions_invalid),
		cmocka_unit_test(test_abort_sanitize),
		cmocka_unit_test(test_layout_ok),
		cmocka_unit_test(test_layout_bad_page_size),
		cmocka_unit_test(test_layout_bad_len_gpa),
		cmocka_unit_test(test_layout_overlap_dup_count),
		cmocka_unit_test(test_pages_roundtrip),
		cmocka_unit_test(test_pages_bad_region_and_index),
		cmocka_unit_test(test_pages_bad_nruns),
		cmocka_unit_test(test_pages_runs_overlap),
		cmocka_unit_test(test_pages_bad_data_len),
		cmocka_unit_test(test_pages_without_layout),
		cmocka_unit_test(test_rt_discard),
		cmocka_unit_test(test_discard_invalid),
		cmocka_unit_test(test_missing_invalid),
		cmocka_unit_test(test_rt_missing),
		cmocka_unit_test(test_rt_page_request),
		cmocka_unit_test(test_rt_page_data),
		cmocka_unit_test(test_page_ref_reserved),
		cmocka_unit_test(test_fuzz),
	};

	rng_state = 42;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
