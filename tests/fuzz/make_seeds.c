/* make_seeds.c - writes the seed inputs of both fuzz targets with the real
 * encoders (proto/wire.c), so that fuzzing starts from valid frames and a
 * destination conversation that goes all the way to DONE.
 *
 *   make fuzz-seeds    (= build/fuzz/make_seeds tests/fuzz/corpus)
 *
 * Writes DIR/frame/seed-* and DIR/handshake/seed-*, overwriting files of
 * those names and nothing else. The handshake format (chunks of u8 stream,
 * u16 length, bytes) is described in fuzz_handshake.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "proto.h"
#include "rmig_backend.h"
#include "sim_state.h"

#define PAGE 4096u

/* ---- output buffers ---- */

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void put(struct buf *b, const void *p, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p) {
			perror("realloc");
			exit(1);
		}
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
}

static void write_file(const char *dir, const char *sub, const char *name, const struct buf *b)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->p, 1, b->len, f) != b->len || fclose(f)) {
		fprintf(stderr, "make_seeds: cannot write %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

/* One frame (header + payload) of a control message. */
static void frame_msg(struct buf *b, const struct rmig_msg *m, uint64_t seq)
{
	static uint8_t payload[RMIG_FRAME_HDR_LEN + 65536];
	uint8_t hdr[RMIG_FRAME_HDR_LEN];
	size_t len;

	if (m->type == RMIG_MSG_STATE || m->type == RMIG_MSG_MEM_KEYS) {
		len = m->u.state.len;
		memcpy(payload, m->u.state.data, len);
	} else {
		len = rmig_msg_encode(m, payload, sizeof(payload));
		if (!len) {
			fprintf(stderr, "make_seeds: cannot encode %s\n", rmig_msg_name(m->type));
			exit(1);
		}
	}
	rmig_frame_hdr_encode(hdr, m->type, 0, (uint32_t)len, seq);
	put(b, hdr, sizeof(hdr));
	put(b, payload, len);
}

/* One PAGES/ZERO frame; PAGES carries the page bytes from `pages`. */
static void frame_pages(struct buf *b, uint8_t type, uint32_t region, uint32_t round,
			const struct rmig_run *runs, uint32_t nruns, const uint8_t *pages,
			uint64_t seq)
{
	uint8_t hdr[RMIG_FRAME_HDR_LEN], sub[RMIG_PAGES_HDR_LEN + RMIG_RUN_LEN * RMIG_MAX_RUNS];
	size_t sublen = rmig_pages_encode(sub, sizeof(sub), region, round, runs, nruns);
	size_t data = 0;

	if (type == RMIG_MSG_PAGES)
		for (uint32_t i = 0; i < nruns; i++)
			data += runs[i].count * PAGE;
	rmig_frame_hdr_encode(hdr, type, 0, (uint32_t)(sublen + data), seq);
	put(b, hdr, sizeof(hdr));
	put(b, sub, sublen);
	if (data)
		put(b, pages, data);
}

static struct rmig_msg *msg(uint8_t type)
{
	static struct rmig_msg m;

	memset(&m, 0, sizeof(m));
	m.type = type;
	return &m;
}

/* A page whose bytes say where it is: never all zero. */
static const uint8_t *page_bytes(uint32_t region, uint64_t page, uint64_t count)
{
	static uint8_t buf[64 * PAGE];

	for (uint64_t i = 0; i < count * PAGE; i++)
		buf[i] = (uint8_t)(1 + region * 31 + (page + i / PAGE) * 7 + i % 251);
	return buf;
}

/* sim's device state: backends/sim_state.h (native layout, as sim reads it
 * on the destination). */

/* ---- the handshake's chunked script ---- */

struct conv {
	struct buf out;			      /* the fuzz input */
	uint64_t ctrl_seq;		      /* control frames sent */
	uint64_t chan_seq[RMIG_MAX_CHANNELS]; /* data frames per channel */
	uint64_t round_frames[RMIG_MAX_CHANNELS];
	uint8_t nonce[RMIG_NONCE_LEN];
	unsigned nchan;
	uint32_t nregions;
	uint64_t region_len;
	uint8_t *mem[RMIG_MAX_REGIONS]; /* what the destination will hold, for digests */
};

/* Append bytes to stream s (0: control, 1..: a data stream; conv_start has
 * stream s carry channel s-1, which its CHANNEL frame names). */
static void chunk(struct conv *c, unsigned s, const struct buf *b)
{
	for (size_t off = 0; off < b->len;) {
		size_t n = b->len - off > 65535 ? 65535 : b->len - off;
		uint8_t h[3] = { (uint8_t)s, (uint8_t)n, (uint8_t)(n >> 8) };

		put(&c->out, h, 3);
		put(&c->out, b->p + off, n);
		off += n;
	}
}

static void ctrl(struct conv *c, const struct rmig_msg *m)
{
	struct buf b = { 0 };

	frame_msg(&b, m, c->ctrl_seq++);
	chunk(c, 0, &b);
	free(b.p);
}

static void ctrl_u64(struct conv *c, uint8_t type, uint64_t v)
{
	struct rmig_msg *m = msg(type);

	m->u.value = v;
	ctrl(c, m);
}

static void conv_start(struct conv *c, unsigned nchan, uint32_t nregions, uint64_t region_len,
		       uint64_t caps, const uint8_t *token)
{
	struct rmig_msg *m;

	memset(c, 0, sizeof(*c));
	c->nchan = nchan;
	c->nregions = nregions;
	c->region_len = region_len;
	for (unsigned i = 0; i < RMIG_NONCE_LEN; i++)
		c->nonce[i] = (uint8_t)(0xa0 + i);
	m = msg(RMIG_MSG_HELLO);
	m->u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					       .ver_max = RMIG_WIRE_VERSION_MAX,
					       .channels = nchan,
					       .caps = caps };
	memcpy(m->u.hello.nonce, c->nonce, RMIG_NONCE_LEN);
	memcpy(m->u.hello.session, c->nonce, RMIG_NONCE_LEN);
	ctrl(c, m);
	for (unsigned i = 0; i < nchan; i++) {
		struct buf b = { 0 };

		m = msg(RMIG_MSG_CHANNEL);
		memcpy(m->u.channel.token, token ? token : c->nonce, RMIG_NONCE_LEN);
		m->u.channel.index = i;
		m->u.channel.count = nchan;
		frame_msg(&b, m, 0);
		chunk(c, 1 + i, &b);
		free(b.p);
	}
	m = msg(RMIG_MSG_REGIONS);
	m->u.layout.count = nregions;
	for (uint32_t i = 0; i < nregions; i++) {
		m->u.layout.r[i] = (struct rmig_wire_region){ i, PAGE, i * region_len, region_len };
		c->mem[i] = calloc(1, region_len);
		if (!c->mem[i])
			exit(1);
	}
	ctrl(c, m);
}

static void conv_pages(struct conv *c, unsigned chan, uint8_t type, uint32_t region, uint32_t round,
		       const struct rmig_run *runs, uint32_t nruns)
{
	struct buf b = { 0 };
	struct buf data = { 0 };

	for (uint32_t i = 0; i < nruns; i++) {
		size_t off = runs[i].first * PAGE, len = runs[i].count * PAGE;

		if (type == RMIG_MSG_PAGES) {
			const uint8_t *p = page_bytes(region, runs[i].first, runs[i].count);

			put(&data, p, len);
			memcpy(c->mem[region] + off, p, len);
		} else {
			memset(c->mem[region] + off, 0, len);
		}
	}
	frame_pages(&b, type, region, round, runs, nruns, data.p, c->chan_seq[chan]++);
	chunk(c, 1 + chan, &b);
	c->round_frames[chan]++;
	free(b.p);
	free(data.p);
}

static void conv_round_end(struct conv *c, uint32_t round)
{
	struct rmig_msg *m = msg(RMIG_MSG_ROUND_END);

	m->u.round_end.h = (struct rmig_wire_round_end){ .round = round, .nchan = c->nchan };
	for (unsigned i = 0; i < c->nchan; i++)
		m->u.round_end.frames[i] = c->round_frames[i];
	ctrl(c, m);
	memset(c->round_frames, 0, sizeof(c->round_frames));
}

static void conv_state(struct conv *c)
{
	static struct sim_state_blob st;
	struct rmig_msg *m = msg(RMIG_MSG_STATE);
	uint64_t npages = c->nregions * c->region_len / PAGE;

	st = (struct sim_state_blob){ .magic = SIM_STATE_MAGIC,
				      .version = SIM_STATE_VERSION,
				      .seed = 7,
				      .rng = 0x123456789abcdefull,
				      .writes = 1000,
				      .rate = 100,
				      .npages = npages,
				      .hot_pages = npages / 10 ? npages / 10 : 1,
				      .stride = npages > 3 ? 3 : 1,
				      .nregions = c->nregions,
				      .zero_run = 1,
				      .hot_zero = 1 };
	m->u.state.data = (const uint8_t *)&st;
	m->u.state.len = sizeof(st);
	ctrl(c, m);
}

static void conv_complete(struct conv *c, int verify, int wrong)
{
	struct rmig_msg *m;
	struct rmig_region r[RMIG_MAX_REGIONS];
	uint64_t digest[RMIG_MAX_REGIONS] = { 0 };

	if (verify) {
		for (uint32_t i = 0; i < c->nregions; i++)
			r[i] = (struct rmig_region){ .id = i,
						     .page_size = PAGE,
						     .gpa = i * c->region_len,
						     .len = c->region_len,
						     .host = c->mem[i] };
		if (rmig_digest_regions(r, c->nregions, 1, NULL, digest)) {
			fprintf(stderr, "make_seeds: digest failed\n");
			exit(1);
		}
	}
	m = msg(RMIG_MSG_COMPLETE);
	m->u.complete.flags = verify ? RMIG_COMPLETE_VERIFY : 0;
	m->u.complete.count = c->nregions;
	for (uint32_t i = 0; i < c->nregions; i++)
		m->u.complete.digest[i] = digest[i] ^ (wrong && i == 0);
	ctrl(c, m);
}

static void conv_finish(struct conv *c)
{
	struct rmig_msg *m;

	ctrl_u64(c, RMIG_MSG_CHECK, 0); /* as a source does right before GO */
	ctrl_u64(c, RMIG_MSG_GO, 0);
	m = msg(RMIG_MSG_DONE);
	m->u.done = (struct rmig_wire_done){
		.total_ms = 1234, .downtime_ms = 56, .bytes_sent = 1 << 20, .rounds = 2
	};
	ctrl(c, m);
}

static void conv_abort(struct conv *c, const char *why)
{
	struct rmig_msg *m = msg(RMIG_MSG_ABORT);

	m->u.abort.code = -ECANCELED;
	snprintf(m->u.abort.reason, sizeof(m->u.abort.reason), "%s", why);
	ctrl(c, m);
}

static void conv_write(struct conv *c, const char *dir, const char *name)
{
	write_file(dir, "handshake", name, &c->out);
	free(c->out.p);
	for (uint32_t i = 0; i < c->nregions; i++)
		free(c->mem[i]);
}

/* Two pre-copy rounds over two channels and two regions: the deep path. */
static void full_conversation(struct conv *c, uint64_t caps)
{
	conv_start(c, 2, 2, 2u << 20, caps, NULL);
	conv_pages(c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 0, 1 }, { 9, 1 } }, 2);
	conv_pages(c, 0, RMIG_MSG_ZERO, 0, 1, (struct rmig_run[]){ { 1, 8 }, { 10, 502 } }, 2);
	conv_pages(c, 1, RMIG_MSG_PAGES, 1, 1, (struct rmig_run[]){ { 5, 1 } }, 1);
	conv_pages(c, 1, RMIG_MSG_ZERO, 1, 1, (struct rmig_run[]){ { 0, 5 }, { 6, 506 } }, 2);
	ctrl_u64(c, RMIG_MSG_HEARTBEAT, 42);
	conv_round_end(c, 1);
	conv_pages(c, 0, RMIG_MSG_PAGES, 1, 2, (struct rmig_run[]){ { 100, 1 } }, 1);
	conv_pages(c, 1, RMIG_MSG_ZERO, 0, 2, (struct rmig_run[]){ { 0, 1 } }, 1);
	conv_round_end(c, 2);
	conv_state(c);
}

/* One channel, one 2 MiB region, one round of one page. */
static void small_round(struct conv *c)
{
	conv_start(c, 1, 1, 2u << 20, 0, NULL);
	conv_pages(c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 3, 1 } }, 1);
	conv_round_end(c, 1);
}

static void conv_finish_done_only(struct conv *c)
{
	struct rmig_msg *m = msg(RMIG_MSG_DONE);

	m->u.done = (struct rmig_wire_done){ .total_ms = 10, .rounds = 1 };
	ctrl(c, m);
}

static void handshake_seeds(const char *dir)
{
	struct conv c;
	uint8_t other[RMIG_NONCE_LEN] = { 1 };

	full_conversation(&c, 0);
	conv_complete(&c, 0, 0);
	conv_finish(&c);
	conv_write(&c, dir, "seed-full");

	/* With placement asked: the fuzz link exposes an even number of
	 * regions, so MEM_KEYS carries a description. */
	full_conversation(&c, RMIG_CAP_PLACEMENT);
	conv_complete(&c, 1, 0);
	conv_finish(&c);
	conv_write(&c, dir, "seed-full-verify");

	full_conversation(&c, 0);
	conv_complete(&c, 1, 1);
	conv_finish(&c);
	conv_write(&c, dir, "seed-verify-mismatch");

	/* A source that asks for rails: the fuzz link has none, one path. */
	full_conversation(&c, RMIG_CAP_RAILS);
	conv_complete(&c, 0, 0);
	conv_finish(&c);
	conv_write(&c, dir, "seed-full-rails");

	/* The source asks for placement (RDMA WRITE), the fuzz link refuses one
	 * region: MEM_KEYS comes back empty, pages go by the stream. */
	conv_start(&c, 1, 1, 4u << 20, RMIG_CAP_PLACEMENT, NULL);
	conv_pages(&c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 0, 1 }, { 1023, 1 } }, 2);
	conv_round_end(&c, 1);
	conv_state(&c);
	conv_complete(&c, 0, 0);
	conv_finish(&c);
	conv_write(&c, dir, "seed-1chan-placement");

	/* Four channels, four regions, one round. */
	conv_start(&c, 4, 4, 1u << 20, 0, NULL);
	for (unsigned i = 0; i < 4; i++)
		conv_pages(&c, i, RMIG_MSG_PAGES, i, 1, (struct rmig_run[]){ { 200 + i, 1 } }, 1);
	conv_pages(&c, 3, RMIG_MSG_ZERO, 0, 1, (struct rmig_run[]){ { 0, 256 } }, 1);
	conv_round_end(&c, 1);
	conv_state(&c);
	conv_complete(&c, 1, 0);
	conv_finish(&c);
	conv_write(&c, dir, "seed-4chan");

	/* The source gives up after the layout: rollback. */
	conv_start(&c, 2, 1, 2u << 20, 0, NULL);
	conv_pages(&c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 3, 1 } }, 1);
	conv_abort(&c, "cancelled by the operator");
	conv_write(&c, dir, "seed-abort");

	/* A ROUND_END counting a frame that never comes. */
	conv_start(&c, 1, 1, 2u << 20, 0, NULL);
	conv_pages(&c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 3, 1 } }, 1);
	c.round_frames[0]++;
	conv_round_end(&c, 1);
	conv_write(&c, dir, "seed-round-short");

	/* Channels that belong to another migration. */
	conv_start(&c, 2, 1, 2u << 20, 0, other);
	conv_write(&c, dir, "seed-wrong-token");

	/* Protocol errors in the receiving loop: byte mutations rarely get
	 * there, as each needs the control sequence numbers right. */
	small_round(&c);
	conv_state(&c);
	conv_state(&c);
	conv_write(&c, dir, "seed-second-state");

	small_round(&c);
	conv_complete(&c, 0, 0);
	conv_write(&c, dir, "seed-complete-before-state");

	small_round(&c);
	conv_state(&c);
	ctrl_u64(&c, RMIG_MSG_GO, 0);
	conv_write(&c, dir, "seed-go-before-ready");

	small_round(&c);
	conv_state(&c);
	conv_complete(&c, 0, 0);
	conv_finish_done_only(&c);
	conv_write(&c, dir, "seed-done-before-go");

	small_round(&c);
	ctrl_u64(&c, RMIG_MSG_REGIONS_ACK, 0);
	conv_write(&c, dir, "seed-unexpected-type");

	small_round(&c);
	conv_state(&c);
	c.nregions = 2; /* COMPLETE with a digest too many */
	conv_complete(&c, 0, 0);
	c.nregions = 1;
	conv_write(&c, dir, "seed-complete-count");

	/* A data frame out of sequence on its channel. */
	conv_start(&c, 1, 1, 2u << 20, 0, NULL);
	c.chan_seq[0] = 5;
	conv_pages(&c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 3, 1 } }, 1);
	conv_round_end(&c, 1);
	conv_write(&c, dir, "seed-chan-seq");

	/* The link is lost after GO: the guest runs, DONE is missing. */
	conv_start(&c, 1, 1, 2u << 20, 0, NULL);
	conv_pages(&c, 0, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 3, 1 } }, 1);
	conv_round_end(&c, 1);
	conv_state(&c);
	conv_complete(&c, 0, 0);
	ctrl_u64(&c, RMIG_MSG_GO, 0);
	conv_write(&c, dir, "seed-no-done");
}

/* ---- the frame decoder's seeds: one of each frame, and a short stream ---- */

static void frame_seed(const char *dir, const char *name, const struct rmig_msg *m)
{
	struct buf b = { 0 };

	frame_msg(&b, m, 3);
	write_file(dir, "frame", name, &b);
	free(b.p);
}

static void frame_seeds(const char *dir)
{
	static const uint8_t keys[] = "opaque link memory description";
	struct rmig_msg *m;
	struct buf b = { 0 };

	m = msg(RMIG_MSG_HELLO);
	m->u.hello = (struct rmig_wire_hello){ .ver_min = RMIG_WIRE_VERSION_MIN,
					       .ver_max = RMIG_WIRE_VERSION_MAX,
					       .channels = 2,
					       .caps = RMIG_CAP_PLACEMENT,
					       .nonce = { 9, 8, 7 },
					       .flags = RMIG_HELLO_RESUME,
					       .round = 3,
					       .session = { 1, 2, 3 } };
	frame_seed(dir, "seed-hello", m);
	/* A destination's rails (RAILS, after AUTH): IPv4, IPv6, a node
	 * unknown; with a MAC (a key) and without. */
	m = msg(RMIG_MSG_RAILS);
	m->u.rails.nrails = 3;
	m->u.rails.rail[0] = (struct rmig_wire_rail){
		.node = 0, .family = 4, .addr = { 10, 77, 0, 2 }, .name = "mlx5_0"
	};
	m->u.rails.rail[1] = (struct rmig_wire_rail){
		.node = 1, .family = 6, .addr = { 0xfd, 0, 1, [15] = 2 }, .name = "mlx5_1"
	};
	m->u.rails.rail[2] = (struct rmig_wire_rail){
		.node = -1, .family = 4, .addr = { 10, 78, 0, 2 }, .name = "rxe_d"
	};
	frame_seed(dir, "seed-rails", m);
	m->u.rails.mac_len = RMIG_MAC_LEN;
	memset(m->u.rails.mac, 0x5c, RMIG_MAC_LEN);
	frame_seed(dir, "seed-rails-mac", m);
	m = msg(RMIG_MSG_REGIONS);
	m->u.layout.count = 2;
	m->u.layout.r[0] = (struct rmig_wire_region){ 0, PAGE, 0, 1u << 20 };
	m->u.layout.r[1] = (struct rmig_wire_region){ 1, RMIG_MAX_PAGE_SIZE, 1u << 30, 8u << 20 };
	frame_seed(dir, "seed-regions", m);
	m = msg(RMIG_MSG_CHANNEL);
	m->u.channel.index = 1;
	m->u.channel.count = 2;
	frame_seed(dir, "seed-channel", m);
	m = msg(RMIG_MSG_ROUND_END);
	m->u.round_end.h = (struct rmig_wire_round_end){ 3, 2, 100, 50, 1 << 20 };
	m->u.round_end.frames[0] = 4;
	m->u.round_end.frames[1] = 5;
	frame_seed(dir, "seed-round-end", m);
	m = msg(RMIG_MSG_STATE);
	m->u.state.data = keys;
	m->u.state.len = 12;
	frame_seed(dir, "seed-state", m);
	m = msg(RMIG_MSG_MEM_KEYS);
	m->u.state.data = keys;
	m->u.state.len = sizeof(keys);
	frame_seed(dir, "seed-mem-keys", m);
	m = msg(RMIG_MSG_COMPLETE);
	m->u.complete.flags = RMIG_COMPLETE_VERIFY;
	m->u.complete.count = 2;
	m->u.complete.digest[0] = 0x0123456789abcdefull;
	m->u.complete.digest[1] = 0xfedcba9876543210ull;
	frame_seed(dir, "seed-complete", m);
	m->u.complete.flags = RMIG_COMPLETE_VERIFY | RMIG_COMPLETE_CHUNKED;
	frame_seed(dir, "seed-complete-chunked", m);
	m = msg(RMIG_MSG_ABORT);
	m->u.abort.code = -EPIPE;
	snprintf(m->u.abort.reason, sizeof(m->u.abort.reason), "lost the guest: disk full");
	frame_seed(dir, "seed-abort", m);
	m = msg(RMIG_MSG_DONE);
	m->u.done = (struct rmig_wire_done){ 1500, 210, 1ull << 30, 4, 0 };
	frame_seed(dir, "seed-done", m);
	static const struct {
		uint8_t type;
		const char *name;
	} simple[] = { { RMIG_MSG_REGIONS_ACK, "seed-regions-ack" },
		       { RMIG_MSG_ROUND_ACK, "seed-round-ack" },
		       { RMIG_MSG_READY, "seed-ready" },
		       { RMIG_MSG_GO, "seed-go" },
		       { RMIG_MSG_STARTED, "seed-started" },
		       { RMIG_MSG_HEARTBEAT, "seed-heartbeat" } };
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		m = msg(simple[i].type);
		/* REGIONS_ACK's value is a first-touch size: 2 MiB is one. */
		m->u.value = simple[i].type == RMIG_MSG_REGIONS_ACK ? 2u << 20 : 1 + i;
		frame_seed(dir, simple[i].name, m);
	}

	/* PAGES/ZERO against fuzz_frame.c's fixed layout (regions 0, 7,
	 * 0xffffffff, 3). */
	frame_pages(&b, RMIG_MSG_PAGES, 0, 1, (struct rmig_run[]){ { 0, 1 }, { 4095, 1 } }, 2,
		    page_bytes(0, 0, 2), 0);
	write_file(dir, "frame", "seed-pages", &b);
	b.len = 0;
	frame_pages(&b, RMIG_MSG_ZERO, 7, 2, (struct rmig_run[]){ { 0, 1 }, { 1, 31 } }, 2, NULL,
		    1);
	write_file(dir, "frame", "seed-zero", &b);
	b.len = 0;
	frame_pages(&b, RMIG_MSG_ZERO, 0xffffffffu, 2,
		    (struct rmig_run[]){ { (1ull << 28) - 1, 1 }, { 0, 1ull << 28 } }, 2, NULL, 1);
	write_file(dir, "frame", "seed-zero-top", &b);
	b.len = 0;
	frame_pages(&b, RMIG_MSG_PAGES, 3, 1, (struct rmig_run[]){ { 0, 1 } }, 1,
		    page_bytes(3, 0, 1), 5);
	write_file(dir, "frame", "seed-pages-one", &b);

	/* A stream: a layout, then pages that refer to it. */
	b.len = 0;
	m = msg(RMIG_MSG_REGIONS);
	m->u.layout.count = 1;
	m->u.layout.r[0] = (struct rmig_wire_region){ 42, PAGE, 1ull << 40, 16 * PAGE };
	frame_msg(&b, m, 1);
	frame_pages(&b, RMIG_MSG_PAGES, 42, 1, (struct rmig_run[]){ { 15, 1 } }, 1,
		    page_bytes(42, 15, 1), 0);
	frame_pages(&b, RMIG_MSG_ZERO, 42, 1, (struct rmig_run[]){ { 0, 15 } }, 1, NULL, 1);
	m = msg(RMIG_MSG_ROUND_END);
	m->u.round_end.h = (struct rmig_wire_round_end){ 1, 1, 1, 15, 4200 };
	m->u.round_end.frames[0] = 2;
	frame_msg(&b, m, 2);
	write_file(dir, "frame", "seed-stream", &b);

	/* A disk: DISKS, then blocks that refer to it. */
	b.len = 0;
	m = msg(RMIG_MSG_DISKS);
	m->u.disks.count = 1;
	m->u.disks.d[0] = (struct rmig_wire_disk){ .id = 3, .block_size = PAGE, .size = 64 * PAGE };
	strcpy(m->u.disks.d[0].name, "vda");
	frame_msg(&b, m, 1);
	frame_pages(&b, RMIG_MSG_BLOCKS, 3, 1, (struct rmig_run[]){ { 63, 1 } }, 1,
		    page_bytes(3, 63, 1), 0);
	frame_pages(&b, RMIG_MSG_BLOCKS_ZERO, 3, 1, (struct rmig_run[]){ { 0, 63 } }, 1, NULL, 1);
	m = msg(RMIG_MSG_DISK_DIGESTS);
	m->u.disk_digests.count = 1;
	m->u.disk_digests.digest[0] = 0x1234;
	frame_msg(&b, m, 2);
	write_file(dir, "frame", "seed-disks", &b);
	free(b.p);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make_seeds CORPUS_DIR (with frame/ and handshake/)\n");
		return 2;
	}
	frame_seeds(argv[1]);
	handshake_seeds(argv[1]);
	return 0;
}
