/* frame.c - the tunnel's frame header, and the checks every header from the
 * wire passes before anything trusts its numbers. */
#include "frame.h"

#include <errno.h>
#include <stdio.h>

void tun_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

uint32_t tun_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void tun_put64(uint8_t *p, uint64_t v)
{
	tun_put32(p, (uint32_t)(v >> 32));
	tun_put32(p + 4, (uint32_t)v);
}

uint64_t tun_get64(const uint8_t *p)
{
	return (uint64_t)tun_get32(p) << 32 | tun_get32(p + 4);
}

void tun_hdr_encode(const struct tun_hdr *h, uint8_t out[TUN_HDR_LEN])
{
	tun_put32(out, h->stream);
	tun_put32(out + 4, h->len);
	out[8] = h->type;
	out[9] = out[10] = out[11] = 0;
}

/* The payload lengths a type allows: [min, max]. */
static int len_range(uint8_t type, uint32_t *min, uint32_t *max)
{
	switch (type) {
	case TUN_HELLO: *min = *max = TUN_HELLO_LEN; return 0;
	case TUN_PING:
	case TUN_EOF: *min = *max = 0; return 0;
	case TUN_OPEN: *min = 1, *max = TUN_MAX_NAME; return 0;
	case TUN_DATA: *min = 1, *max = TUN_MAX_DATA; return 0;
	case TUN_CLOSE: *min = 0, *max = TUN_MAX_MSG; return 0;
	case TUN_WINDOW: *min = *max = 8; return 0;
	case TUN_STATE: *min = 8, *max = 8 + TUN_STATE_MAX * TUN_STATE_ENTRY; return 0;
	case TUN_REFUSE: *min = 1, *max = TUN_MAX_MSG; return 0;
	default: return -EPROTO;
	}
}

int tun_hdr_decode(const uint8_t in[TUN_HDR_LEN], struct tun_hdr *h, char *err, size_t errlen)
{
	uint32_t min, max;
	int tunnel_frame;

	h->stream = tun_get32(in);
	h->len = tun_get32(in + 4);
	h->type = in[8];
	if (in[9] || in[10] || in[11]) {
		snprintf(err, errlen, "frame header with non-zero reserved bytes");
		return -EPROTO;
	}
	if (len_range(h->type, &min, &max)) {
		snprintf(err, errlen, "unknown frame type %u", h->type);
		return -EPROTO;
	}
	tunnel_frame = h->type == TUN_HELLO || h->type == TUN_PING || h->type == TUN_STATE ||
		       h->type == TUN_REFUSE;
	if (tunnel_frame != (h->stream == 0)) {
		snprintf(err, errlen, "frame type %u on stream %u", h->type, h->stream);
		return -EPROTO;
	}
	if (h->len < min || h->len > max) {
		snprintf(err, errlen, "frame type %u with %u bytes (%u..%u allowed)", h->type,
			 h->len, min, max);
		return -EPROTO;
	}
	return 0;
}
