/* wire.c - encode and check-decode rmig frames. See proto.h. */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

__attribute__((format(printf, 3, 4))) static int bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static const char *const msg_names[RMIG_MSG_TYPE_COUNT] = {
	[RMIG_MSG_HELLO] = "HELLO",
	[RMIG_MSG_REGIONS] = "REGIONS",
	[RMIG_MSG_REGIONS_ACK] = "REGIONS_ACK",
	[RMIG_MSG_CHANNEL] = "CHANNEL",
	[RMIG_MSG_PAGES] = "PAGES",
	[RMIG_MSG_ZERO] = "ZERO",
	[RMIG_MSG_ROUND_END] = "ROUND_END",
	[RMIG_MSG_ROUND_ACK] = "ROUND_ACK",
	[RMIG_MSG_STATE] = "STATE",
	[RMIG_MSG_COMPLETE] = "COMPLETE",
	[RMIG_MSG_READY] = "READY",
	[RMIG_MSG_GO] = "GO",
	[RMIG_MSG_STARTED] = "STARTED",
	[RMIG_MSG_ABORT] = "ABORT",
	[RMIG_MSG_HEARTBEAT] = "HEARTBEAT",
	[RMIG_MSG_DONE] = "DONE",
	[RMIG_MSG_MEM_KEYS] = "MEM_KEYS",
	[RMIG_MSG_AUTH] = "AUTH",
	[RMIG_MSG_CHECK] = "CHECK",
	[RMIG_MSG_STREAM] = "STREAM",
	[RMIG_MSG_DISCARD] = "DISCARD",
	[RMIG_MSG_PAGE_REQUEST] = "PAGE_REQUEST",
	[RMIG_MSG_PAGE_DATA] = "PAGE_DATA",
	[RMIG_MSG_MISSING] = "MISSING",
	[RMIG_MSG_RECOVER] = "RECOVER",
	[RMIG_MSG_STREAM_ACK] = "STREAM_ACK",
	[RMIG_MSG_DISKS] = "DISKS",
	[RMIG_MSG_DISKS_ACK] = "DISKS_ACK",
	[RMIG_MSG_BLOCKS] = "BLOCKS",
	[RMIG_MSG_BLOCKS_ZERO] = "BLOCKS_ZERO",
	[RMIG_MSG_DISK_DIGESTS] = "DISK_DIGESTS",
	[RMIG_MSG_RAILS] = "RAILS",
};

int rmig_is_data_frame(uint8_t type)
{
	return type == RMIG_MSG_PAGES || type == RMIG_MSG_ZERO || type == RMIG_MSG_BLOCKS ||
	       type == RMIG_MSG_BLOCKS_ZERO;
}

/* ZERO and BLOCKS_ZERO carry runs and no bytes. */
static int is_zero_frame(uint8_t type)
{
	return type == RMIG_MSG_ZERO || type == RMIG_MSG_BLOCKS_ZERO;
}

const char *rmig_msg_name(unsigned type)
{
	if (type == 0 || type >= RMIG_MSG_TYPE_COUNT)
		return "UNKNOWN";
	return msg_names[type];
}

/* Payload length bounds of each type, checked on the header alone so that no
 * reader ever allocates or waits for more than a type can carry. */
static void len_bounds(uint8_t type, uint64_t *min, uint64_t *max)
{
	switch (type) {
	case RMIG_MSG_HELLO: *min = *max = RMIG_HELLO_LEN; break;
	case RMIG_MSG_RAILS:
		*min = RMIG_RAILS_HDR_LEN + RMIG_RAIL_LEN;
		*max = RMIG_RAILS_MAX_LEN;
		break;
	case RMIG_MSG_REGIONS:
		*min = RMIG_REGIONS_HDR_LEN; /* no regions: a hypervisor stream */
		*max = RMIG_REGIONS_HDR_LEN + (uint64_t)RMIG_REGION_DESC_LEN * RMIG_MAX_REGIONS;
		break;
	case RMIG_MSG_CHANNEL: *min = *max = RMIG_CHANNEL_LEN; break;
	case RMIG_MSG_PAGES:
	case RMIG_MSG_BLOCKS:
		*min = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN;
		*max = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS + RMIG_MAX_FRAME_DATA;
		break;
	case RMIG_MSG_ZERO:
	case RMIG_MSG_BLOCKS_ZERO:
		*min = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN;
		*max = RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS;
		break;
	case RMIG_MSG_ROUND_END:
		*min = RMIG_ROUND_END_LEN + 8;
		*max = RMIG_ROUND_END_LEN + 8 * RMIG_MAX_CHANNELS;
		break;
	case RMIG_MSG_STATE:
		*min = 0;
		*max = RMIG_MAX_STATE;
		break;
	case RMIG_MSG_MEM_KEYS:
		*min = 0;
		*max = RMIG_MAX_MEM_KEYS;
		break;
	case RMIG_MSG_STREAM:
		*min = 1;
		*max = RMIG_MAX_STREAM_CHUNK;
		break;
	case RMIG_MSG_COMPLETE:
		*min = RMIG_COMPLETE_HDR_LEN;
		*max = RMIG_COMPLETE_HDR_LEN + 8 * RMIG_MAX_REGIONS;
		break;
	case RMIG_MSG_ABORT:
		*min = RMIG_ABORT_HDR_LEN;
		*max = RMIG_ABORT_HDR_LEN + RMIG_MAX_REASON;
		break;
	case RMIG_MSG_DONE: *min = *max = RMIG_DONE_LEN; break;
	case RMIG_MSG_DISKS:
		*min = RMIG_DISKS_HDR_LEN + RMIG_DISK_DESC_LEN;
		*max = RMIG_DISKS_HDR_LEN + (uint64_t)RMIG_DISK_DESC_LEN * RMIG_MAX_DISKS;
		break;
	case RMIG_MSG_DISK_DIGESTS:
		*min = RMIG_DISK_DIGESTS_HDR_LEN + 8;
		*max = RMIG_DISK_DIGESTS_HDR_LEN + 8 * RMIG_MAX_DISKS;
		break;
	case RMIG_MSG_AUTH: *min = *max = RMIG_MAC_LEN; break;
	case RMIG_MSG_DISCARD:
	case RMIG_MSG_MISSING:
		*min = RMIG_DISCARD_HDR_LEN + RMIG_RUN_LEN;
		*max = RMIG_DISCARD_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS;
		break;
	case RMIG_MSG_PAGE_REQUEST: *min = *max = RMIG_PAGE_REF_LEN; break;
	case RMIG_MSG_PAGE_DATA:
		*min = RMIG_PAGE_REF_LEN + RMIG_MIN_PAGE_SIZE;
		*max = RMIG_PAGE_REF_LEN + RMIG_MAX_PAGE_SIZE;
		break;
	default: /* REGIONS_ACK ROUND_ACK READY GO STARTED HEARTBEAT CHECK RECOVER STREAM_ACK
		  * DISKS_ACK */
		*min = *max = RMIG_U64_MSG_LEN;
		break;
	}
}

void rmig_frame_hdr_encode(uint8_t out[RMIG_FRAME_HDR_LEN], uint8_t type, uint16_t flags,
			   uint32_t len, uint64_t seq)
{
	put32(out, RMIG_WIRE_MAGIC);
	out[4] = RMIG_WIRE_VERSION_MAX;
	out[5] = type;
	put16(out + 6, flags);
	put32(out + 8, len);
	put32(out + 12, 0);
	put64(out + 16, seq);
}

int rmig_frame_hdr_decode(const uint8_t in[RMIG_FRAME_HDR_LEN], struct rmig_frame_hdr *h, char *err,
			  size_t errlen)
{
	uint64_t min, max;
	uint32_t magic = get32(in);

	if (magic != RMIG_WIRE_MAGIC)
		return bad(err, errlen, "bad frame magic 0x%08x (not an rmig peer?)", magic);
	if (in[4] < RMIG_WIRE_VERSION_MIN || in[4] > RMIG_WIRE_VERSION_MAX)
		return bad(err, errlen, "frame version %u outside supported %d..%d", in[4],
			   RMIG_WIRE_VERSION_MIN, RMIG_WIRE_VERSION_MAX);
	h->type = in[5];
	if (h->type == 0 || h->type >= RMIG_MSG_TYPE_COUNT)
		return bad(err, errlen, "unknown frame type %u", h->type);
	h->flags = get16(in + 6);
	h->len = get32(in + 8);
	h->seq = get64(in + 16);
	len_bounds(h->type, &min, &max);
	if (h->len < min || h->len > max)
		return bad(err, errlen, "%s frame length %u outside %llu..%llu",
			   rmig_msg_name(h->type), h->len, (unsigned long long)min,
			   (unsigned long long)max);
	return 0;
}

int rmig_layout_find(const struct rmig_layout *l, uint32_t region_id)
{
	for (uint32_t i = 0; i < l->count; i++)
		if (l->r[i].id == region_id)
			return (int)i;
	return -1;
}

int rmig_layout_check(const struct rmig_layout *l, char *err, size_t errlen)
{
	/* No regions: the hypervisor carries its guest in its own stream (STREAM). */
	if (l->count > RMIG_MAX_REGIONS)
		return bad(err, errlen, "region count %u outside 0..%d", l->count,
			   RMIG_MAX_REGIONS);
	for (uint32_t i = 0; i < l->count; i++) {
		const struct rmig_wire_region *r = &l->r[i];
		uint32_t ps = r->page_size;

		if (ps < RMIG_MIN_PAGE_SIZE || ps > RMIG_MAX_PAGE_SIZE || (ps & (ps - 1)))
			return bad(err, errlen,
				   "region %u: page size %u not a power of two in %u..%u", r->id,
				   ps, RMIG_MIN_PAGE_SIZE, RMIG_MAX_PAGE_SIZE);
		if (r->len == 0 || r->len % ps || r->len > RMIG_MAX_REGION_BYTES)
			return bad(
			    err, errlen,
			    "region %u: length %llu not a non-zero multiple of its page size "
			    "up to %llu",
			    r->id, (unsigned long long)r->len,
			    (unsigned long long)RMIG_MAX_REGION_BYTES);
		if (r->gpa % ps || r->gpa > UINT64_MAX - r->len)
			return bad(err, errlen,
				   "region %u: guest address 0x%llx misaligned or wraps", r->id,
				   (unsigned long long)r->gpa);
		for (uint32_t j = 0; j < i; j++) {
			const struct rmig_wire_region *o = &l->r[j];

			if (o->id == r->id)
				return bad(err, errlen, "region id %u appears twice", r->id);
			if (r->gpa < o->gpa + o->len && o->gpa < r->gpa + r->len)
				return bad(err, errlen, "regions %u and %u overlap", o->id, r->id);
		}
	}
	return 0;
}

static int page_size_ok(uint64_t ps)
{
	return ps >= RMIG_MIN_PAGE_SIZE && ps <= RMIG_MAX_PAGE_SIZE && !(ps & (ps - 1));
}

/* Printable ASCII up to a NUL, then NULs only; not empty. */
static int disk_name_ok(const char *name)
{
	size_t n = strnlen(name, RMIG_DISK_NAME_LEN);

	if (n == 0 || n == RMIG_DISK_NAME_LEN)
		return 0;
	for (size_t i = 0; i < RMIG_DISK_NAME_LEN; i++)
		if (i < n ? (name[i] < 0x20 || name[i] >= 0x7f) : name[i] != 0)
			return 0;
	return 1;
}

int rmig_disks_check(const struct rmig_disks *d, char *err, size_t errlen)
{
	if (d->count == 0 || d->count > RMIG_MAX_DISKS)
		return bad(err, errlen, "disk count %u outside 1..%d", d->count, RMIG_MAX_DISKS);
	for (uint32_t i = 0; i < d->count; i++) {
		const struct rmig_wire_disk *k = &d->d[i];

		if (!disk_name_ok(k->name))
			return bad(err, errlen,
				   "disk %u: name is not printable text of 1..%d bytes", k->id,
				   RMIG_DISK_NAME_LEN - 1);
		if (!page_size_ok(k->block_size))
			return bad(err, errlen,
				   "disk %s: block size %u not a power of two in %u..%u", k->name,
				   k->block_size, RMIG_MIN_PAGE_SIZE, RMIG_MAX_PAGE_SIZE);
		if (k->size == 0 || k->size % k->block_size || k->size > RMIG_MAX_DISK_BYTES)
			return bad(err, errlen,
				   "disk %s: size %llu not a non-zero multiple of its block size "
				   "up to %llu",
				   k->name, (unsigned long long)k->size,
				   (unsigned long long)RMIG_MAX_DISK_BYTES);
		/* A destination finds its disks by name: two of one name would
		 * write one disk twice over. */
		for (uint32_t j = 0; j < i; j++)
			if (d->d[j].id == k->id || !strcmp(d->d[j].name, k->name))
				return bad(err, errlen, "disk %s (id %u) appears twice", k->name,
					   k->id);
	}
	return 0;
}

void rmig_disks_layout(const struct rmig_disks *d, struct rmig_layout *l)
{
	memset(l, 0, sizeof(*l));
	l->count = d->count <= RMIG_MAX_DISKS ? d->count : 0;
	for (uint32_t i = 0; i < l->count; i++)
		l->r[i] = (struct rmig_wire_region){ .id = d->d[i].id,
						     .page_size = d->d[i].block_size,
						     .len = d->d[i].size };
}

void rmig_page_ref_encode(uint8_t out[RMIG_PAGE_REF_LEN], uint32_t region_id, uint64_t page)
{
	put32(out, region_id);
	put32(out + 4, 0);
	put64(out + 8, page);
}

size_t rmig_msg_max_len(const struct rmig_msg *m)
{
	uint64_t min, max;

	len_bounds(m->type, &min, &max);
	return (size_t)max;
}

/* Largest opaque payload of STATE, MEM_KEYS and STREAM. */
static size_t opaque_max(uint8_t type)
{
	uint64_t min, max;

	len_bounds(type, &min, &max);
	return (size_t)max;
}

size_t rmig_rails_table_encode(const struct rmig_rails *r, uint8_t *out, size_t cap)
{
	size_t len = RMIG_RAILS_HDR_LEN + (size_t)r->nrails * RMIG_RAIL_LEN;

	if (!r->nrails || r->nrails > RMIG_MAX_RAILS || cap < len)
		return 0;
	memset(out, 0, len);
	out[0] = RMIG_RAILS_VERSION;
	out[1] = (uint8_t)r->nrails;
	for (uint32_t i = 0; i < r->nrails; i++) {
		const struct rmig_wire_rail *w = &r->rail[i];
		uint8_t *q = out + RMIG_RAILS_HDR_LEN + i * RMIG_RAIL_LEN;

		put32(q, (uint32_t)w->node);
		q[4] = w->family;
		memcpy(q + 8, w->addr, sizeof(w->addr));
		memcpy(q + 24, w->name, RMIG_RAIL_NAME_LEN - 1); /* the last byte stays NUL */
	}
	return len;
}

/* RAILS: the table, then its MAC if it has one. */
static size_t rails_encode(const struct rmig_rails *r, uint8_t *out, size_t cap)
{
	size_t len = rmig_rails_table_encode(r, out, cap);

	if (!len || (r->mac_len != 0 && r->mac_len != RMIG_MAC_LEN) || cap - len < r->mac_len)
		return 0;
	memcpy(out + len, r->mac, r->mac_len);
	return len + r->mac_len;
}

static int rail_check(const struct rmig_wire_rail *r, const uint8_t *q, uint32_t i, char *err,
		      size_t errlen)
{
	static const uint8_t zero[12];
	size_t n = strnlen(r->name, RMIG_RAIL_NAME_LEN);

	if (r->node < -1 || r->node > RMIG_MAX_RAIL_NODE)
		return bad(err, errlen, "RAILS rail %u: NUMA node %d outside -1..%d", i, r->node,
			   RMIG_MAX_RAIL_NODE);
	if (r->family != 4 && r->family != 6)
		return bad(err, errlen, "RAILS rail %u: address family %u is not 4 nor 6", i,
			   r->family);
	if (q[5] || q[6] || q[7] || (r->family == 4 && memcmp(r->addr + 4, zero, 12)))
		return bad(err, errlen, "RAILS rail %u: reserved bytes are not zero", i);
	if (n == 0 || n == RMIG_RAIL_NAME_LEN)
		return bad(err, errlen, "RAILS rail %u: the device name is empty or unterminated",
			   i);
	for (size_t k = 0; k < RMIG_RAIL_NAME_LEN; k++)
		if (k < n ? (r->name[k] < 0x21 || r->name[k] > 0x7e) : r->name[k] != 0)
			return bad(err, errlen,
				   "RAILS rail %u: the device name is not printable and "
				   "NUL-padded",
				   i);
	return 0;
}

/* RAILS: every field of the table, then a MAC or nothing. */
static int rails_decode(const uint8_t *p, size_t len, struct rmig_rails *r, char *err,
			size_t errlen)
{
	size_t table;
	int rc;

	memset(r, 0, sizeof(*r));
	if (p[0] != RMIG_RAILS_VERSION || p[2] || p[3] || get32(p + 4))
		return bad(err, errlen, "RAILS table version %u (we read %d) or reserved bytes",
			   p[0], RMIG_RAILS_VERSION);
	if (p[1] == 0 || p[1] > RMIG_MAX_RAILS)
		return bad(err, errlen, "RAILS announces %u rails, outside 1..%d", p[1],
			   RMIG_MAX_RAILS);
	table = RMIG_RAILS_HDR_LEN + (size_t)p[1] * RMIG_RAIL_LEN;
	if (len != table && len != table + RMIG_MAC_LEN)
		return bad(err, errlen,
			   "RAILS length %zu is not %u rails and a MAC of 0 or %d bytes", len, p[1],
			   RMIG_MAC_LEN);
	for (uint32_t i = 0; i < p[1]; i++) {
		const uint8_t *q = p + RMIG_RAILS_HDR_LEN + i * RMIG_RAIL_LEN;
		struct rmig_wire_rail *w = &r->rail[i];

		w->node = (int32_t)get32(q);
		w->family = q[4];
		memcpy(w->addr, q + 8, sizeof(w->addr));
		memcpy(w->name, q + 24, RMIG_RAIL_NAME_LEN);
		rc = rail_check(w, q, i, err, errlen);
		if (rc)
			return rc;
	}
	r->nrails = p[1];
	r->mac_len = (uint32_t)(len - table);
	memcpy(r->mac, p + table, r->mac_len);
	return 0;
}

size_t rmig_msg_encode(const struct rmig_msg *m, uint8_t *out, size_t cap)
{
	size_t len = 0;

	switch (m->type) {
	case RMIG_MSG_HELLO: {
		const struct rmig_wire_hello *h = &m->u.hello;

		len = RMIG_HELLO_LEN;
		if (cap < len)
			return 0;
		memset(out, 0, len);
		put16(out, h->ver_min);
		put16(out + 2, h->ver_max);
		put32(out + 4, h->channels);
		put64(out + 8, h->caps);
		memcpy(out + 16, h->nonce, RMIG_NONCE_LEN);
		put32(out + 32, h->flags);
		put32(out + 36, h->round);
		memcpy(out + 40, h->session, RMIG_NONCE_LEN);
		break;
	}
	case RMIG_MSG_RAILS: len = rails_encode(&m->u.rails, out, cap); break;
	case RMIG_MSG_REGIONS: {
		const struct rmig_layout *l = &m->u.layout;

		if (l->count > RMIG_MAX_REGIONS)
			return 0;
		len = RMIG_REGIONS_HDR_LEN + (size_t)l->count * RMIG_REGION_DESC_LEN;
		if (cap < len)
			return 0;
		put32(out, l->count);
		put32(out + 4, 0);
		for (uint32_t i = 0; i < l->count; i++) {
			uint8_t *p = out + RMIG_REGIONS_HDR_LEN + i * RMIG_REGION_DESC_LEN;

			put32(p, l->r[i].id);
			put32(p + 4, l->r[i].page_size);
			put64(p + 8, l->r[i].gpa);
			put64(p + 16, l->r[i].len);
		}
		break;
	}
	case RMIG_MSG_DISKS: {
		const struct rmig_disks *d = &m->u.disks;

		if (d->count == 0 || d->count > RMIG_MAX_DISKS)
			return 0;
		len = RMIG_DISKS_HDR_LEN + (size_t)d->count * RMIG_DISK_DESC_LEN;
		if (cap < len)
			return 0;
		put32(out, d->count);
		put32(out + 4, 0);
		for (uint32_t i = 0; i < d->count; i++) {
			uint8_t *q = out + RMIG_DISKS_HDR_LEN + i * RMIG_DISK_DESC_LEN;

			put32(q, d->d[i].id);
			put32(q + 4, d->d[i].block_size);
			put64(q + 8, d->d[i].size);
			memcpy(q + 16, d->d[i].identity, RMIG_DISK_ID_LEN);
			memcpy(q + 32, d->d[i].name, RMIG_DISK_NAME_LEN);
		}
		break;
	}
	case RMIG_MSG_DISK_DIGESTS:
		if (m->u.disk_digests.count == 0 || m->u.disk_digests.count > RMIG_MAX_DISKS)
			return 0;
		len = RMIG_DISK_DIGESTS_HDR_LEN + 8 * (size_t)m->u.disk_digests.count;
		if (cap < len)
			return 0;
		put32(out, m->u.disk_digests.count);
		put32(out + 4, 0);
		for (uint32_t i = 0; i < m->u.disk_digests.count; i++)
			put64(out + RMIG_DISK_DIGESTS_HDR_LEN + 8 * i, m->u.disk_digests.digest[i]);
		break;
	case RMIG_MSG_CHANNEL:
		len = RMIG_CHANNEL_LEN;
		if (cap < len)
			return 0;
		memcpy(out, m->u.channel.token, RMIG_NONCE_LEN);
		put32(out + 16, m->u.channel.index);
		put32(out + 20, m->u.channel.count);
		break;
	case RMIG_MSG_ROUND_END: {
		const struct rmig_wire_round_end *re = &m->u.round_end.h;

		if (re->nchan == 0 || re->nchan > RMIG_MAX_CHANNELS)
			return 0;
		len = RMIG_ROUND_END_LEN + 8 * (size_t)re->nchan;
		if (cap < len)
			return 0;
		put32(out, re->round);
		put32(out + 4, re->nchan);
		put64(out + 8, re->pages);
		put64(out + 16, re->zero_pages);
		put64(out + 24, re->bytes);
		for (uint32_t i = 0; i < re->nchan; i++)
			put64(out + RMIG_ROUND_END_LEN + 8 * i, m->u.round_end.frames[i]);
		break;
	}
	case RMIG_MSG_STATE:
	case RMIG_MSG_MEM_KEYS:
	case RMIG_MSG_STREAM:
		len = m->u.state.len;
		if (cap < len || len > opaque_max(m->type) || (m->type == RMIG_MSG_STREAM && !len))
			return 0;
		if (len)
			memcpy(out, m->u.state.data, len);
		break;
	case RMIG_MSG_COMPLETE:
		if (m->u.complete.count > RMIG_MAX_REGIONS)
			return 0;
		len = RMIG_COMPLETE_HDR_LEN + 8 * (size_t)m->u.complete.count;
		if (cap < len)
			return 0;
		put32(out, m->u.complete.flags);
		put32(out + 4, m->u.complete.count);
		for (uint32_t i = 0; i < m->u.complete.count; i++)
			put64(out + RMIG_COMPLETE_HDR_LEN + 8 * i, m->u.complete.digest[i]);
		break;
	case RMIG_MSG_ABORT: {
		size_t n = strnlen(m->u.abort.reason, RMIG_MAX_REASON);

		len = RMIG_ABORT_HDR_LEN + n;
		if (cap < len)
			return 0;
		put32(out, (uint32_t)m->u.abort.code);
		put32(out + 4, 0);
		memcpy(out + RMIG_ABORT_HDR_LEN, m->u.abort.reason, n);
		break;
	}
	case RMIG_MSG_DONE:
		len = RMIG_DONE_LEN;
		if (cap < len)
			return 0;
		put64(out, m->u.done.total_ms);
		put64(out + 8, m->u.done.downtime_ms);
		put64(out + 16, m->u.done.bytes_sent);
		put32(out + 24, m->u.done.rounds);
		put32(out + 28, m->u.done.flags);
		break;
	case RMIG_MSG_REGIONS_ACK:
	case RMIG_MSG_ROUND_ACK:
	case RMIG_MSG_READY:
	case RMIG_MSG_GO:
	case RMIG_MSG_STARTED:
	case RMIG_MSG_HEARTBEAT:
	case RMIG_MSG_CHECK:
	case RMIG_MSG_RECOVER:
	case RMIG_MSG_STREAM_ACK:
	case RMIG_MSG_DISKS_ACK:
		len = RMIG_U64_MSG_LEN;
		if (cap < len)
			return 0;
		put64(out, m->u.value);
		break;
	case RMIG_MSG_AUTH:
		len = RMIG_MAC_LEN;
		if (cap < len)
			return 0;
		memcpy(out, m->u.mac, len);
		break;
	case RMIG_MSG_DISCARD:
	case RMIG_MSG_MISSING:
		if (m->u.discard.nruns == 0 || m->u.discard.nruns > RMIG_MAX_RUNS)
			return 0;
		len = RMIG_DISCARD_HDR_LEN + (size_t)m->u.discard.nruns * RMIG_RUN_LEN;
		if (cap < len)
			return 0;
		put32(out, m->u.discard.region_id);
		put32(out + 4, m->u.discard.nruns);
		for (uint32_t i = 0; i < m->u.discard.nruns; i++) {
			put64(out + RMIG_DISCARD_HDR_LEN + i * RMIG_RUN_LEN,
			      m->u.discard.runs[i].first);
			put64(out + RMIG_DISCARD_HDR_LEN + i * RMIG_RUN_LEN + 8,
			      m->u.discard.runs[i].count);
		}
		break;
	case RMIG_MSG_PAGE_REQUEST:
		len = RMIG_PAGE_REF_LEN;
		if (cap < len)
			return 0;
		rmig_page_ref_encode(out, m->u.page.region_id, m->u.page.page);
		break;
	case RMIG_MSG_PAGE_DATA:
		len = RMIG_PAGE_REF_LEN + (size_t)m->u.page.len;
		if (!page_size_ok(m->u.page.len) || cap < len)
			return 0;
		rmig_page_ref_encode(out, m->u.page.region_id, m->u.page.page);
		memcpy(out + RMIG_PAGE_REF_LEN, m->u.page.data, m->u.page.len);
		break;
	default: /* PAGES/ZERO/BLOCKS/BLOCKS_ZERO have their own encoder */ return 0;
	}
	return len;
}

/* DISCARD runs: non-empty, ascending, disjoint, not wrapping; whether they
 * lie in their region needs the layout (rmig_page_msg_check). */
static int discard_decode(const uint8_t *p, size_t len, struct rmig_msg *m, char *err,
			  size_t errlen)
{
	uint32_t n = get32(p + 4);

	m->u.discard.region_id = get32(p);
	m->u.discard.nruns = n;
	if (n == 0 || n > RMIG_MAX_RUNS || len != RMIG_DISCARD_HDR_LEN + (size_t)n * RMIG_RUN_LEN)
		return bad(err, errlen, "%s run count %u does not match length %zu",
			   rmig_msg_name(m->type), n, len);
	for (uint32_t i = 0; i < n; i++) {
		struct rmig_run *r = &m->u.discard.runs[i];

		r->first = get64(p + RMIG_DISCARD_HDR_LEN + i * RMIG_RUN_LEN);
		r->count = get64(p + RMIG_DISCARD_HDR_LEN + i * RMIG_RUN_LEN + 8);
		if (r->count == 0 || r->first > UINT64_MAX - r->count)
			return bad(err, errlen, "%s run %u: pages %llu+%llu empty or wrapping",
				   rmig_msg_name(m->type), i, (unsigned long long)r->first,
				   (unsigned long long)r->count);
		if (i && r->first < r[-1].first + r[-1].count)
			return bad(err, errlen,
				   "%s run %u: pages %llu+%llu overlap or precede run %u",
				   rmig_msg_name(m->type), i, (unsigned long long)r->first,
				   (unsigned long long)r->count, i - 1);
	}
	return 0;
}

int rmig_msg_decode(uint8_t type, const uint8_t *p, size_t len, struct rmig_msg *m, char *err,
		    size_t errlen)
{
	uint64_t min, max;

	if (type == 0 || type >= RMIG_MSG_TYPE_COUNT)
		return bad(err, errlen, "unknown message type %u", type);
	len_bounds(type, &min, &max);
	if (len < min || len > max)
		return bad(err, errlen, "%s payload length %zu outside %llu..%llu",
			   rmig_msg_name(type), len, (unsigned long long)min,
			   (unsigned long long)max);
	memset(m, 0, offsetof(struct rmig_msg, u) + sizeof(m->u.value));
	m->type = type;
	switch (type) {
	case RMIG_MSG_HELLO:
		m->u.hello.ver_min = get16(p);
		m->u.hello.ver_max = get16(p + 2);
		m->u.hello.channels = get32(p + 4);
		m->u.hello.caps = get64(p + 8);
		memcpy(m->u.hello.nonce, p + 16, RMIG_NONCE_LEN);
		m->u.hello.flags = get32(p + 32);
		m->u.hello.round = get32(p + 36);
		memcpy(m->u.hello.session, p + 40, RMIG_NONCE_LEN);
		if (m->u.hello.ver_min > m->u.hello.ver_max)
			return bad(err, errlen, "HELLO version range %u..%u is empty",
				   m->u.hello.ver_min, m->u.hello.ver_max);
		if (m->u.hello.channels == 0 || m->u.hello.channels > RMIG_MAX_CHANNELS)
			return bad(err, errlen, "HELLO asks for %u channels, outside 1..%d",
				   m->u.hello.channels, RMIG_MAX_CHANNELS);
		/* Zero, so that the HELLO the AUTH proofs cover re-encodes to
		 * the bytes that came (auth.c). */
		if (get64(p + 56))
			return bad(err, errlen, "HELLO reserved field is 0x%016llx, not zero",
				   (unsigned long long)get64(p + 56));
		break;
	case RMIG_MSG_RAILS: return rails_decode(p, len, &m->u.rails, err, errlen);
	case RMIG_MSG_REGIONS: {
		struct rmig_layout *l = &m->u.layout;

		l->count = get32(p);
		if (l->count > RMIG_MAX_REGIONS)
			return bad(err, errlen, "REGIONS count %u outside 0..%d", l->count,
				   RMIG_MAX_REGIONS);
		if (len != RMIG_REGIONS_HDR_LEN + (size_t)l->count * RMIG_REGION_DESC_LEN)
			return bad(err, errlen, "REGIONS length %zu does not match %u regions", len,
				   l->count);
		for (uint32_t i = 0; i < l->count; i++) {
			const uint8_t *q = p + RMIG_REGIONS_HDR_LEN + i * RMIG_REGION_DESC_LEN;

			l->r[i].id = get32(q);
			l->r[i].page_size = get32(q + 4);
			l->r[i].gpa = get64(q + 8);
			l->r[i].len = get64(q + 16);
		}
		return rmig_layout_check(l, err, errlen);
	}
	case RMIG_MSG_DISKS: {
		struct rmig_disks *d = &m->u.disks;

		d->count = get32(p);
		if (d->count == 0 || d->count > RMIG_MAX_DISKS ||
		    len != RMIG_DISKS_HDR_LEN + (size_t)d->count * RMIG_DISK_DESC_LEN)
			return bad(err, errlen, "DISKS count %u does not match length %zu",
				   d->count, len);
		if (get32(p + 4)) /* strict, as every message since PAGE_REQUEST */
			return bad(err, errlen, "DISKS reserved field is 0x%08x, not zero",
				   get32(p + 4));
		for (uint32_t i = 0; i < d->count; i++) {
			const uint8_t *q = p + RMIG_DISKS_HDR_LEN + i * RMIG_DISK_DESC_LEN;

			d->d[i].id = get32(q);
			d->d[i].block_size = get32(q + 4);
			d->d[i].size = get64(q + 8);
			memcpy(d->d[i].identity, q + 16, RMIG_DISK_ID_LEN);
			memcpy(d->d[i].name, q + 32, RMIG_DISK_NAME_LEN);
		}
		return rmig_disks_check(d, err, errlen);
	}
	case RMIG_MSG_DISK_DIGESTS:
		m->u.disk_digests.count = get32(p);
		if (m->u.disk_digests.count == 0 || m->u.disk_digests.count > RMIG_MAX_DISKS ||
		    get32(p + 4) ||
		    len != RMIG_DISK_DIGESTS_HDR_LEN + 8 * (size_t)m->u.disk_digests.count)
			return bad(err, errlen,
				   "DISK_DIGESTS count %u does not match length %zu (or reserved "
				   "not zero)",
				   m->u.disk_digests.count, len);
		for (uint32_t i = 0; i < m->u.disk_digests.count; i++)
			m->u.disk_digests.digest[i] = get64(p + RMIG_DISK_DIGESTS_HDR_LEN + 8 * i);
		break;
	case RMIG_MSG_CHANNEL:
		memcpy(m->u.channel.token, p, RMIG_NONCE_LEN);
		m->u.channel.index = get32(p + 16);
		m->u.channel.count = get32(p + 20);
		if (m->u.channel.count == 0 || m->u.channel.count > RMIG_MAX_CHANNELS ||
		    m->u.channel.index >= m->u.channel.count)
			return bad(err, errlen, "CHANNEL index %u of %u out of range",
				   m->u.channel.index, m->u.channel.count);
		break;
	case RMIG_MSG_ROUND_END: {
		struct rmig_wire_round_end *re = &m->u.round_end.h;

		re->round = get32(p);
		re->nchan = get32(p + 4);
		re->pages = get64(p + 8);
		re->zero_pages = get64(p + 16);
		re->bytes = get64(p + 24);
		if (re->nchan == 0 || re->nchan > RMIG_MAX_CHANNELS ||
		    len != RMIG_ROUND_END_LEN + 8 * (size_t)re->nchan)
			return bad(err, errlen,
				   "ROUND_END channel count %u does not match length %zu",
				   re->nchan, len);
		for (uint32_t i = 0; i < re->nchan; i++)
			m->u.round_end.frames[i] = get64(p + RMIG_ROUND_END_LEN + 8 * i);
		break;
	}
	case RMIG_MSG_AUTH: memcpy(m->u.mac, p, RMIG_MAC_LEN); break;
	case RMIG_MSG_STATE:
	case RMIG_MSG_MEM_KEYS:
	case RMIG_MSG_STREAM:
		m->u.state.data = p;
		m->u.state.len = (uint32_t)len;
		break;
	case RMIG_MSG_COMPLETE:
		m->u.complete.flags = get32(p);
		m->u.complete.count = get32(p + 4);
		if (m->u.complete.count > RMIG_MAX_REGIONS ||
		    len != RMIG_COMPLETE_HDR_LEN + 8 * (size_t)m->u.complete.count)
			return bad(err, errlen,
				   "COMPLETE digest count %u does not match length %zu",
				   m->u.complete.count, len);
		if ((m->u.complete.flags & ~RMIG_COMPLETE_FLAGS) ||
		    ((m->u.complete.flags & RMIG_COMPLETE_CHUNKED) &&
		     !(m->u.complete.flags & RMIG_COMPLETE_VERIFY)))
			return bad(err, errlen, "COMPLETE flags 0x%x not understood",
				   m->u.complete.flags);
		for (uint32_t i = 0; i < m->u.complete.count; i++)
			m->u.complete.digest[i] = get64(p + RMIG_COMPLETE_HDR_LEN + 8 * i);
		break;
	case RMIG_MSG_ABORT: {
		size_t n = len - RMIG_ABORT_HDR_LEN;

		m->u.abort.code = (int32_t)get32(p);
		/* The reason ends up on a terminal: keep it to printable ASCII. */
		for (size_t i = 0; i < n; i++) {
			uint8_t c = p[RMIG_ABORT_HDR_LEN + i];

			m->u.abort.reason[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
		}
		m->u.abort.reason[n] = 0;
		break;
	}
	case RMIG_MSG_DONE:
		m->u.done.total_ms = get64(p);
		m->u.done.downtime_ms = get64(p + 8);
		m->u.done.bytes_sent = get64(p + 16);
		m->u.done.rounds = get32(p + 24);
		m->u.done.flags = get32(p + 28);
		break;
	case RMIG_MSG_DISCARD:
	case RMIG_MSG_MISSING: return discard_decode(p, len, m, err, errlen);
	case RMIG_MSG_PAGE_REQUEST:
	case RMIG_MSG_PAGE_DATA:
		m->u.page.region_id = get32(p);
		m->u.page.page = get64(p + 8);
		/* Strict, unlike older messages: a non-zero field here is a peer
		 * speaking something else. */
		if (get32(p + 4))
			return bad(err, errlen, "%s reserved field is 0x%08x, not zero",
				   rmig_msg_name(type), get32(p + 4));
		m->u.page.data = type == RMIG_MSG_PAGE_DATA ? p + RMIG_PAGE_REF_LEN : NULL;
		m->u.page.len = (uint32_t)(len - RMIG_PAGE_REF_LEN);
		if (type == RMIG_MSG_PAGE_DATA && !page_size_ok(m->u.page.len))
			return bad(err, errlen, "PAGE_DATA carries %u bytes, not a page size",
				   m->u.page.len);
		break;
	case RMIG_MSG_PAGES:
	case RMIG_MSG_ZERO:
	case RMIG_MSG_BLOCKS:
	case RMIG_MSG_BLOCKS_ZERO:
		return bad(err, errlen, "%s is not a control message", rmig_msg_name(type));
	case RMIG_MSG_REGIONS_ACK:
		m->u.value = get64(p);
		if (!rmig_first_touch_ok(m->u.value))
			return bad(err, errlen,
				   "REGIONS_ACK names a first-touch size of %llu bytes (0 or a "
				   "power of two from 4 KiB to 1 GiB)",
				   (unsigned long long)m->u.value);
		break;
	default: m->u.value = get64(p); break;
	}
	return 0;
}

int rmig_first_touch_ok(uint64_t bytes)
{
	return !bytes || (bytes >= 4096 && bytes <= (1ull << 30) && !(bytes & (bytes - 1)));
}

int rmig_page_msg_check(const struct rmig_msg *m, const struct rmig_layout *l, size_t *region_index,
			char *err, size_t errlen)
{
	int runs = m->type == RMIG_MSG_DISCARD || m->type == RMIG_MSG_MISSING;
	uint32_t id = runs ? m->u.discard.region_id : m->u.page.region_id;
	int idx = rmig_layout_find(l, id);
	uint64_t npages;

	if (!runs && m->type != RMIG_MSG_PAGE_REQUEST && m->type != RMIG_MSG_PAGE_DATA)
		return bad(err, errlen, "%s names no pages", rmig_msg_name(m->type));
	if (idx < 0)
		return bad(err, errlen, "%s for unknown region id %u", rmig_msg_name(m->type), id);
	npages = l->r[idx].len / l->r[idx].page_size;
	if (runs) {
		/* The decode made the runs ascending and free of wrapping: the
		 * last one ending in the region puts them all there. */
		const struct rmig_run *last;

		if (m->u.discard.nruns == 0 || m->u.discard.nruns > RMIG_MAX_RUNS)
			return bad(err, errlen, "%s run count %u outside 1..%d",
				   rmig_msg_name(m->type), m->u.discard.nruns, RMIG_MAX_RUNS);
		last = &m->u.discard.runs[m->u.discard.nruns - 1];
		if (last->first + last->count > npages)
			return bad(err, errlen,
				   "%s run %u: pages %llu+%llu past the end of region %u "
				   "(%llu pages)",
				   rmig_msg_name(m->type), m->u.discard.nruns - 1,
				   (unsigned long long)last->first, (unsigned long long)last->count,
				   id, (unsigned long long)npages);
	} else if (m->u.page.page >= npages) {
		return bad(err, errlen, "%s: page %llu past the end of region %u (%llu pages)",
			   rmig_msg_name(m->type), (unsigned long long)m->u.page.page, id,
			   (unsigned long long)npages);
	} else if (m->type == RMIG_MSG_PAGE_DATA && m->u.page.len != l->r[idx].page_size) {
		return bad(err, errlen, "PAGE_DATA of %u bytes for region %u of %u-byte pages",
			   m->u.page.len, id, l->r[idx].page_size);
	}
	*region_index = (size_t)idx;
	return 0;
}

size_t rmig_pages_encode(uint8_t *out, size_t cap, uint32_t region_id, uint32_t round,
			 const struct rmig_run *runs, uint32_t nruns)
{
	size_t len = RMIG_PAGES_HDR_LEN + (size_t)nruns * RMIG_RUN_LEN;

	if (nruns == 0 || nruns > RMIG_MAX_RUNS || cap < len)
		return 0;
	put32(out, region_id);
	put32(out + 4, nruns);
	put32(out + 8, round);
	put32(out + 12, 0);
	for (uint32_t i = 0; i < nruns; i++) {
		put64(out + RMIG_PAGES_HDR_LEN + i * RMIG_RUN_LEN, runs[i].first);
		put64(out + RMIG_PAGES_HDR_LEN + i * RMIG_RUN_LEN + 8, runs[i].count);
	}
	return len;
}

int rmig_pages_hdr_decode(const uint8_t in[RMIG_PAGES_HDR_LEN], const struct rmig_frame_hdr *fh,
			  struct rmig_pages_hdr *ph, char *err, size_t errlen)
{
	if (!rmig_is_data_frame(fh->type))
		return bad(err, errlen, "unexpected %s frame on a data stream",
			   rmig_msg_name(fh->type));
	ph->region_id = get32(in);
	ph->nruns = get32(in + 4);
	ph->round = get32(in + 8);
	if (ph->nruns == 0 || ph->nruns > RMIG_MAX_RUNS)
		return bad(err, errlen, "%s run count %u outside 1..%d", rmig_msg_name(fh->type),
			   ph->nruns, RMIG_MAX_RUNS);
	if (fh->len < RMIG_PAGES_HDR_LEN + (uint64_t)ph->nruns * RMIG_RUN_LEN)
		return bad(err, errlen, "%s frame length %u too short for %u runs",
			   rmig_msg_name(fh->type), fh->len, ph->nruns);
	return 0;
}

int rmig_pages_runs_decode(const uint8_t *in, const struct rmig_frame_hdr *fh,
			   const struct rmig_pages_hdr *ph, const struct rmig_layout *l,
			   struct rmig_run *runs, size_t *region_index, char *err, size_t errlen)
{
	int idx = rmig_layout_find(l, ph->region_id);
	uint64_t npages, data_pages = 0, data_len;

	if (idx < 0)
		return bad(err, errlen, "%s for unknown region id %u", rmig_msg_name(fh->type),
			   ph->region_id);
	npages = l->r[idx].len / l->r[idx].page_size;
	for (uint32_t i = 0; i < ph->nruns; i++) {
		runs[i].first = get64(in + i * RMIG_RUN_LEN);
		runs[i].count = get64(in + i * RMIG_RUN_LEN + 8);
		/* Written so that no sum can wrap: count <= npages, first <= npages - count. */
		if (runs[i].count == 0 || runs[i].count > npages ||
		    runs[i].first > npages - runs[i].count)
			return bad(
			    err, errlen,
			    "%s run %u: pages %llu+%llu past the end of region %u (%llu pages)",
			    rmig_msg_name(fh->type), i, (unsigned long long)runs[i].first,
			    (unsigned long long)runs[i].count, ph->region_id,
			    (unsigned long long)npages);
		/* Ascending and disjoint, as senders build them: one frame then
		 * touches each page at most once, so its cost is bounded by the
		 * region (a ZERO frame of overlapping whole-region runs is not). */
		if (i && runs[i].first < runs[i - 1].first + runs[i - 1].count)
			return bad(err, errlen,
				   "%s run %u: pages %llu+%llu overlap or precede run %u",
				   rmig_msg_name(fh->type), i, (unsigned long long)runs[i].first,
				   (unsigned long long)runs[i].count, i - 1);
		data_pages += runs[i].count; /* <= 64 * 2^32: cannot wrap */
	}
	data_len = fh->len - RMIG_PAGES_HDR_LEN - (uint64_t)ph->nruns * RMIG_RUN_LEN;
	if (is_zero_frame(fh->type)) {
		if (data_len)
			return bad(err, errlen, "%s frame carries %llu unexpected bytes",
				   rmig_msg_name(fh->type), (unsigned long long)data_len);
	} else if (data_pages > RMIG_MAX_FRAME_DATA / RMIG_MIN_PAGE_SIZE ||
		   data_pages * l->r[idx].page_size != data_len) {
		return bad(err, errlen, "%s frame holds %llu data bytes, its runs need %llu %s",
			   rmig_msg_name(fh->type), (unsigned long long)data_len,
			   (unsigned long long)data_pages,
			   fh->type == RMIG_MSG_BLOCKS ? "blocks" : "pages");
	}
	*region_index = (size_t)idx;
	return 0;
}

int rmig_frame_decode_buf(const uint8_t *buf, size_t len, const struct rmig_layout *l,
			  struct rmig_msg *m, char *err, size_t errlen)
{
	struct rmig_frame_hdr fh;
	struct rmig_pages_hdr ph;
	struct rmig_run runs[RMIG_MAX_RUNS];
	size_t region;
	int rc;

	if (len < RMIG_FRAME_HDR_LEN)
		return bad(err, errlen, "truncated frame: %zu of %d header bytes", len,
			   RMIG_FRAME_HDR_LEN);
	rc = rmig_frame_hdr_decode(buf, &fh, err, errlen);
	if (rc)
		return rc;
	if (len - RMIG_FRAME_HDR_LEN < fh.len)
		return bad(err, errlen, "truncated %s frame: %zu of %u payload bytes",
			   rmig_msg_name(fh.type), len - RMIG_FRAME_HDR_LEN, fh.len);
	buf += RMIG_FRAME_HDR_LEN;
	if (!rmig_is_data_frame(fh.type))
		return rmig_msg_decode(fh.type, buf, fh.len, m, err, errlen);
	if (!l)
		return bad(err, errlen, "%s frame without a layout", rmig_msg_name(fh.type));
	rc = rmig_pages_hdr_decode(buf, &fh, &ph, err, errlen);
	if (rc)
		return rc;
	m->type = fh.type;
	return rmig_pages_runs_decode(buf + RMIG_PAGES_HDR_LEN, &fh, &ph, l, runs, &region, err,
				      errlen);
}
