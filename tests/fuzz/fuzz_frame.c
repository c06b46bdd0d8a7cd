/* fuzz_frame.c - libFuzzer target: the wire decoder (proto/wire.c).
 *
 * The input is wire bytes. It is decoded
 *  1. whole, with rmig_frame_decode_buf(), against a fixed layout and
 *     against none (control frames only), as the unit tests do;
 *  2. as a stream of frames, one after the other, as a destination reads
 *     them: PAGES/ZERO go through rmig_pages_hdr_decode() and
 *     rmig_pages_runs_decode() the way the memory payload's load_frame()
 *     (engine/payload/memory_load.c) does,
 *     against the fixed layout or the last REGIONS decoded from the stream;
 *     control frames through rmig_msg_decode().
 *
 * Oracles beyond ASan/UBSan (abort() = a library bug):
 *  - every run a PAGES/ZERO decode accepts lies inside its region (the
 *    destination writes guest memory at first * page_size with no further
 *    check), and a PAGES frame's data length is exactly its pages' bytes;
 *  - the one-call and the step-by-step decoders agree;
 *  - a decoded REGIONS layout passes rmig_layout_check() and finds its ids;
 *  - round trip: a decoded control message re-encodes (rmig_msg_encode) to
 *    the payload it came from, except reserved fields (encoded as zero) and
 *    ABORT text (non-printable bytes become '?'); decoding that encoding
 *    succeeds and re-encodes to the same bytes; a decoded header re-encodes
 *    to the same bytes (reserved field aside).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "rmig.h"

static struct rmig_layout fixed;

__attribute__((noreturn, format(printf, 1, 2))) static void bug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "fuzz_frame: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char why[256];

	(void)argc;
	(void)argv;
	/* A few plausible regions, with the edges a decoder can get wrong: the
	 * smallest and largest page size, a one-page region, and a region of
	 * the maximum size ending 2^44 below the top of the address space. */
	fixed.count = 4;
	fixed.r[0] = (struct rmig_wire_region){ 0, 4096, 0, 16ull << 20 };
	fixed.r[1] = (struct rmig_wire_region){ 7, RMIG_MAX_PAGE_SIZE, 1ull << 30, 64ull << 20 };
	fixed.r[2] = (struct rmig_wire_region){ 0xffffffffu, 65536, 0ull - (1ull << 45),
						RMIG_MAX_REGION_BYTES };
	fixed.r[3] = (struct rmig_wire_region){ 3, 4096, 1ull << 32, 4096 };
	if (rmig_layout_check(&fixed, why, sizeof(why)))
		bug("the harness's own layout is invalid: %s", why);
	return 0;
}

/* PAGES/ZERO, as recv_frame() reads them: sub-header, runs table, then the
 * page bytes straight into guest memory. Returns the decoders' verdict. */
static int check_pages(const uint8_t *payload, const struct rmig_frame_hdr *fh,
		       const struct rmig_layout *l)
{
	struct rmig_pages_hdr ph;
	struct rmig_run runs[RMIG_MAX_RUNS];
	size_t ri = SIZE_MAX;
	uint64_t data_pages = 0, data_len;
	char why[256];
	int rc;

	/* The header decode bounded fh->len; the caller holds all of it. */
	if (fh->len < RMIG_PAGES_HDR_LEN)
		bug("%s frame of %u bytes passed the header check", rmig_msg_name(fh->type),
		    fh->len);
	rc = rmig_pages_hdr_decode(payload, fh, &ph, why, sizeof(why));
	if (rc)
		return rc;
	/* recv_frame() now reads nruns runs: they must be inside the frame. */
	if (ph.nruns == 0 || ph.nruns > RMIG_MAX_RUNS ||
	    (uint64_t)ph.nruns * RMIG_RUN_LEN > fh->len - RMIG_PAGES_HDR_LEN)
		bug("pages header accepted %u runs in a %u-byte frame", ph.nruns, fh->len);
	rc = rmig_pages_runs_decode(payload + RMIG_PAGES_HDR_LEN, fh, &ph, l, runs, &ri, why,
				    sizeof(why));
	if (rc)
		return rc;
	if (ri >= l->count || l->r[ri].id != ph.region_id)
		bug("region index %zu for region id %u", ri, ph.region_id);
	for (uint32_t i = 0; i < ph.nruns; i++) {
		const struct rmig_wire_region *r = &l->r[ri];
		uint64_t off, bytes, end;

		/* What recv_frame() computes: host + first * page_size, for
		 * count * page_size bytes. */
		if (runs[i].count == 0 ||
		    __builtin_mul_overflow(runs[i].first, (uint64_t)r->page_size, &off) ||
		    __builtin_mul_overflow(runs[i].count, (uint64_t)r->page_size, &bytes) ||
		    __builtin_add_overflow(off, bytes, &end) || end > r->len)
			bug("run %u (%llu+%llu pages) accepted outside region %u of %llu bytes", i,
			    (unsigned long long)runs[i].first, (unsigned long long)runs[i].count,
			    r->id, (unsigned long long)r->len);
		data_pages += runs[i].count;
	}
	data_len = fh->len - RMIG_PAGES_HDR_LEN - (uint64_t)ph.nruns * RMIG_RUN_LEN;
	if (fh->type == RMIG_MSG_ZERO || fh->type == RMIG_MSG_BLOCKS_ZERO
		? data_len != 0
		: data_pages * l->r[ri].page_size != data_len)
		bug("%s accepted with %llu data bytes for %llu pages of %u bytes",
		    rmig_msg_name(fh->type), (unsigned long long)data_len,
		    (unsigned long long)data_pages, l->r[ri].page_size);
	return 0;
}

/* Bytes of a payload that the encoder is allowed to write differently. */
static int normalised(uint8_t type, size_t i, uint8_t orig, uint8_t enc)
{
	switch (type) {
	case RMIG_MSG_HELLO: return i >= 56 && i < 64 && enc == 0; /* reserved */
	case RMIG_MSG_REGIONS: return i >= 4 && i < 8 && enc == 0;
	case RMIG_MSG_ABORT:
		if (i >= 4 && i < 8)
			return enc == 0;
		return i >= RMIG_ABORT_HDR_LEN && enc == '?' && (orig < 0x20 || orig >= 0x7f);
	default: return 0;
	}
}

static void round_trip(const struct rmig_frame_hdr *fh, const uint8_t *payload,
		       const struct rmig_msg *m)
{
	static struct rmig_msg m2;
	size_t cap = (size_t)fh->len + 4096, len, len2;
	uint8_t *enc = malloc(cap), *enc2 = malloc(cap);
	char why[256];

	if (!enc || !enc2)
		abort();
	if (m->type != fh->type)
		bug("%s frame decoded as %s", rmig_msg_name(fh->type), rmig_msg_name(m->type));
	len = rmig_msg_encode(m, enc, cap);
	/* 0 is also the length of an empty STATE/MEM_KEYS. */
	if (len == 0 &&
	    !(fh->len == 0 && (m->type == RMIG_MSG_STATE || m->type == RMIG_MSG_MEM_KEYS)))
		bug("decoded %s (%u bytes) does not encode", rmig_msg_name(m->type), fh->len);
	if (len != fh->len)
		bug("%s of %u bytes re-encodes to %zu", rmig_msg_name(m->type), fh->len, len);
	if (len > rmig_msg_max_len(m))
		bug("%s encodes to %zu bytes, above its maximum %zu", rmig_msg_name(m->type), len,
		    rmig_msg_max_len(m));
	for (size_t i = 0; i < len; i++)
		if (enc[i] != payload[i] && !normalised(m->type, i, payload[i], enc[i]))
			bug("%s re-encodes differently at byte %zu: 0x%02x, was 0x%02x",
			    rmig_msg_name(m->type), i, enc[i], payload[i]);
	if (rmig_msg_decode(m->type, enc, len, &m2, why, sizeof(why)))
		bug("encoded %s does not decode: %s", rmig_msg_name(m->type), why);
	len2 = rmig_msg_encode(&m2, enc2, cap);
	if (len2 != len || memcmp(enc, enc2, len))
		bug("%s: decode(encode(m)) encodes differently", rmig_msg_name(m->type));
	free(enc);
	free(enc2);
}

static void check_header_round_trip(const uint8_t *in, const struct rmig_frame_hdr *fh)
{
	uint8_t out[RMIG_FRAME_HDR_LEN];

	rmig_frame_hdr_encode(out, fh->type, fh->flags, fh->len, fh->seq);
	/* Bytes 12..15 are reserved: ignored on decode, written as zero. */
	if (memcmp(out, in, 12) || memcmp(out + 16, in + 16, 8))
		bug("%s header re-encodes differently", rmig_msg_name(fh->type));
}

/* Frame after frame, as a destination's control and data streams read them. */
static void walk(const uint8_t *d, size_t size)
{
	static struct rmig_layout layout;
	static struct rmig_msg m, m2;
	char why[256];

	layout = fixed;
	while (size >= RMIG_FRAME_HDR_LEN) {
		struct rmig_frame_hdr fh;
		size_t flen;
		int rc, rc2;

		if (rmig_frame_hdr_decode(d, &fh, why, sizeof(why)))
			return;
		check_header_round_trip(d, &fh);
		if (size - RMIG_FRAME_HDR_LEN < fh.len)
			return; /* truncated: the whole-buffer decode covered it */
		flen = RMIG_FRAME_HDR_LEN + (size_t)fh.len;
		if (rmig_is_data_frame(fh.type)) {
			rc = check_pages(d + RMIG_FRAME_HDR_LEN, &fh, &layout);
			rc2 = rmig_frame_decode_buf(d, flen, &layout, &m2, why, sizeof(why));
			if (rc != rc2)
				bug("%s: step-by-step decode %d, one-call decode %d",
				    rmig_msg_name(fh.type), rc, rc2);
		} else {
			rc = rmig_msg_decode(fh.type, d + RMIG_FRAME_HDR_LEN, fh.len, &m, why,
					     sizeof(why));
			rc2 = rmig_frame_decode_buf(d, flen, NULL, &m2, why, sizeof(why));
			if (rc != rc2)
				bug("%s: payload decode %d, frame decode %d",
				    rmig_msg_name(fh.type), rc, rc2);
			if (!rc) {
				round_trip(&fh, d + RMIG_FRAME_HDR_LEN, &m);
				if (fh.type == RMIG_MSG_REGIONS) {
					if (rmig_layout_check(&m.u.layout, why, sizeof(why)))
						bug("decoded REGIONS fails the layout check: %s",
						    why);
					for (uint32_t i = 0; i < m.u.layout.count; i++)
						if (rmig_layout_find(&m.u.layout,
								     m.u.layout.r[i].id) != (int)i)
							bug("REGIONS: region %u not found",
							    m.u.layout.r[i].id);
					/* Later PAGES/ZERO refer to this layout. */
					layout = m.u.layout;
				}
				if (fh.type == RMIG_MSG_DISKS) {
					if (rmig_disks_check(&m.u.disks, why, sizeof(why)))
						bug("decoded DISKS fails the check: %s", why);
					/* Later BLOCKS/BLOCKS_ZERO refer to these. */
					rmig_disks_layout(&m.u.disks, &layout);
				}
			}
		}
		d += flen;
		size -= flen;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rmig_msg m1, m2;
	char why1[256], why2[256];
	int rc1, rc2;

	rc1 = rmig_frame_decode_buf(data, size, &fixed, &m1, why1, sizeof(why1));
	rc2 = rmig_frame_decode_buf(data, size, NULL, &m2, why2, sizeof(why2));
	/* Without a layout only PAGES/ZERO may fare differently. */
	if (rc2 == 0 && (rc1 != 0 || m1.type != m2.type))
		bug("control frame decodes without a layout but not with one: %s", why1);
	if (rc1 == 0 && rc2 != 0 && !rmig_is_data_frame(m1.type))
		bug("%s decodes with a layout only: %s", rmig_msg_name(m1.type), why2);
	if (rc1 && !memchr(why1, 0, sizeof(why1)))
		bug("error message not terminated");
	walk(data, size);
	return 0;
}
