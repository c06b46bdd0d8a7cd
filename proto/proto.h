/* proto.h - rmig's wire format: framing, messages, and their checked decoding.
 *
 * Every frame is a 24-byte header followed by `len` payload bytes. All
 * integers are little-endian. The structs below document the byte layout of
 * each payload (their sizes and offsets are fixed by _Static_assert); encode
 * and decode go field by field, so host endianness and padding never matter.
 *
 * Decoders never trust the wire: every length, count, region id and page
 * index is checked before use, and a failure leaves a one-line reason in the
 * caller's err buffer. This module knows no sockets, backends or links.
 */
#ifndef RMIG_PROTO_H
#define RMIG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "rmig.h"

#define RMIG_WIRE_MAGIC 0x47494d52u /* "RMIG" as little-endian bytes */
/* 2: the AUTH proofs cover both HELLOs, not only their nonces (1). */
#define RMIG_WIRE_VERSION_MIN 2
#define RMIG_WIRE_VERSION_MAX 2

#define RMIG_MAX_CHANNELS 64
#define RMIG_MAX_RUNS 64 /* page runs in one PAGES/ZERO frame */
#define RMIG_MIN_PAGE_SIZE 4096u
#define RMIG_MAX_PAGE_SIZE (2u << 20)	   /* 2 MiB huge pages */
#define RMIG_MAX_FRAME_DATA (16u << 20)	   /* page bytes in one PAGES frame */
#define RMIG_MAX_STATE (64u << 20)	   /* device state blob */
#define RMIG_MAX_STREAM_CHUNK (1u << 20)   /* STREAM payload */
#define RMIG_MAX_MEM_KEYS (64u << 10)	   /* link's memory description */
#define RMIG_MAX_REASON 1024		   /* ABORT text */
#define RMIG_MAX_REGION_BYTES (1ull << 44) /* 16 TiB per region */
#define RMIG_NONCE_LEN 16
#define RMIG_MAC_LEN 32 /* HMAC-SHA256 */

/* HELLO capabilities. */
#define RMIG_CAP_PLACEMENT                                                                         \
	(1ull << 0) /* source can place pages in the peer's memory                                 \
		     * (RDMA WRITE): asks for MEM_KEYS */
/* Source: the switch-over will be post-copy (DISCARD, PAGE_REQUEST,
 * PAGE_DATA); destination: it can catch its guest's faults (echoed). */
#define RMIG_CAP_POSTCOPY (1ull << 1)
/* Source: it will send COMPLETE_CHUNKED roots (config.verify=1): keep a
 * digest of every page as it is written; destination: it does (echoed).
 * Without the echo the source falls back to whole-memory digests. */
#define RMIG_CAP_CHUNK_DIGESTS (1ull << 2)
/* Source: the guest has disks (DISKS follows the layout); destination: it
 * takes them (echoed; an older rmig does not). */
#define RMIG_CAP_DISKS (1ull << 3)
/* Source: this session is a dry run (config.dry_run): the layout and the
 * disks are checked, not taken; the one round that follows is a bandwidth
 * probe whose PAGES the destination reads and drops; ABORT with
 * RMIG_ABORT_DRY_RUN ends it. Destination: it serves dry runs (echoed;
 * an older rmig would take the guest, so the source stops without it). */
#define RMIG_CAP_DRYRUN (1ull << 4)
/* Source: its link can use several rails (one device per NUMA node) and
 * asks for the destination's; destination: it has rails (echoed) and sends
 * them in RAILS once both proofs of the key were checked, never in its
 * HELLO: the table names devices and addresses, not for an unproven peer.
 * An older destination does not echo the bit: one rail, as before. */
#define RMIG_CAP_RAILS (1ull << 5)

/* HELLO flags. */
#define RMIG_HELLO_PSK 1u /* the sender holds a pre-shared key and will prove it (AUTH) */
#define RMIG_HELLO_RESUME                                                                          \
	2u /* source: continue session `session` (failover) at                                     \
	    * round `round`; the destination keeps its memory */
#define RMIG_HELLO_QUERY                                                                           \
	4u /* source, link lost after GO: did session `session`                                    \
	    * start? answered with STARTED or ABORT */

enum rmig_msg_type {
	RMIG_MSG_HELLO = 1,	    /* both ways: versions, capabilities, nonce */
	RMIG_MSG_REGIONS = 2,	    /* source: the guest's memory layout */
	RMIG_MSG_REGIONS_ACK = 3,   /* destination: layout accepted, memory ready;
				     * its value: rmig_first_touch_ok() */
	RMIG_MSG_CHANNEL = 4,	    /* first frame of each data stream: session token */
	RMIG_MSG_PAGES = 5,	    /* data streams: page runs + their bytes */
	RMIG_MSG_ZERO = 6,	    /* data streams: runs of zero pages, no bytes */
	RMIG_MSG_ROUND_END = 7,	    /* source: a round is sent (frames per stream) */
	RMIG_MSG_ROUND_ACK = 8,	    /* destination: that round is all in memory */
	RMIG_MSG_STATE = 9,	    /* source: device/CPU state blob */
	RMIG_MSG_COMPLETE = 10,	    /* source: all sent; region digests */
	RMIG_MSG_READY = 11,	    /* destination: verified, state loaded, not running */
	RMIG_MSG_GO = 12,	    /* source: start the guest */
	RMIG_MSG_STARTED = 13,	    /* destination: guest runs */
	RMIG_MSG_ABORT = 14,	    /* either: giving up, with a reason */
	RMIG_MSG_HEARTBEAT = 15,    /* either: still alive; its value: the data
				     * bytes sent or received so far (older
				     * peers: a timestamp) */
	RMIG_MSG_DONE = 16,	    /* source: final figures, after STARTED */
	RMIG_MSG_MEM_KEYS = 17,	    /* destination: the link's description of its
				     * remotely writable guest memory (opaque; empty:
				     * none offered) */
	RMIG_MSG_AUTH = 18,	    /* both ways: HMAC over both HELLOs */
	RMIG_MSG_CHECK = 19,	    /* source, right before GO: still ready? (READY again) */
	RMIG_MSG_STREAM = 20,	    /* source: a piece of the hypervisor's own migration
				     * stream (a guest with no regions, e.g. QEMU) */
	RMIG_MSG_DISCARD = 21,	    /* source, post-copy: pages the destination holds
				     * stale copies of (runs, like ZERO) */
	RMIG_MSG_PAGE_REQUEST = 22, /* destination, post-copy: its guest waits for a page */
	RMIG_MSG_PAGE_DATA = 23,    /* source, post-copy: that page's bytes */
	RMIG_MSG_MISSING = 24,	    /* destination, post-copy recovery: announced pages
				     * it still lacks (runs, like DISCARD) */
	RMIG_MSG_RECOVER = 25,	    /* destination, post-copy recovery: all MISSING is
				     * out; its value: how many pages it lacks */
	RMIG_MSG_STREAM_ACK = 26,   /* destination: the hypervisor's stream is written
				     * up to this offset (bytes); resumption replays
				     * from the last one. Source: the stream ended at
				     * this length (answered once all is written) */
	RMIG_MSG_DISKS = 27,	    /* source: the guest's disks (RMIG_CAP_DISKS) */
	RMIG_MSG_DISKS_ACK = 28,    /* destination: disks ready to be written */
	RMIG_MSG_BLOCKS = 29,	    /* data streams: block runs of a disk + their bytes */
	RMIG_MSG_BLOCKS_ZERO = 30,  /* data streams: runs of zero blocks, no bytes */
	RMIG_MSG_DISK_DIGESTS = 31, /* source, before COMPLETE: a root per disk */
	RMIG_MSG_RAILS = 32,	    /* destination, right after AUTH (RMIG_CAP_RAILS):
				     * its rails, with a MAC when there is a key */
	RMIG_MSG_TYPE_COUNT
	/* The phase tables keep message types in 64-bit masks; payloads
	 * (their msg_types, frame_types) in 32-bit ones: their types stay
	 * below 32. */
};

/* ---- wire layouts ---- */

struct rmig_wire_frame_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t len; /* payload bytes after this header */
	uint32_t reserved;
	uint64_t seq; /* per stream and direction, from 0, no gaps */
};
#define RMIG_FRAME_HDR_LEN 24
_Static_assert(sizeof(struct rmig_wire_frame_hdr) == RMIG_FRAME_HDR_LEN, "frame header");

struct rmig_wire_hello {
	uint16_t ver_min, ver_max;
	uint32_t channels;
	uint64_t caps;
	uint8_t nonce[RMIG_NONCE_LEN];	 /* fresh for every connection */
	uint32_t flags;			 /* RMIG_HELLO_* */
	uint32_t round;			 /* RESUME: the round the source sends next */
	uint8_t session[RMIG_NONCE_LEN]; /* RESUME/QUERY: the session's first nonce */
	uint64_t reserved;
};
#define RMIG_HELLO_LEN 64
_Static_assert(sizeof(struct rmig_wire_hello) == RMIG_HELLO_LEN, "hello");

/* RAILS payload (RMIG_CAP_RAILS, the destination's, after AUTH): the
 * table, u8 version (RMIG_RAILS_VERSION), u8 count (1..RMIG_MAX_RAILS),
 * u16 reserved, u32 reserved (zero), then count x wire_rail; then, when the
 * sessions have a pre-shared key, RMIG_MAC_LEN bytes of HMAC-SHA256(psk,
 * "rmig-auth-1 rails" | Ns | Nd | the table's bytes) (nothing without a
 * key). The port is the one the source already connected to. */
#define RMIG_RAILS_VERSION 1
#define RMIG_MAX_RAILS 8
#define RMIG_MAX_RAIL_NODE 1023 /* libnuma's largest node number */
#define RMIG_RAIL_NAME_LEN 32
#define RMIG_RAILS_HDR_LEN 8
struct rmig_wire_rail {
	int32_t node;		       /* NUMA node the device serves, -1: none known */
	uint8_t family;		       /* 4: addr[0..3] is IPv4 (the rest zero), 6: IPv6 */
	uint8_t reserved[3];	       /* zero */
	uint8_t addr[16];	       /* where the peer reaches this rail */
	char name[RMIG_RAIL_NAME_LEN]; /* the device: printable, NUL-terminated, NUL-padded */
};
#define RMIG_RAIL_LEN 56
_Static_assert(sizeof(struct rmig_wire_rail) == RMIG_RAIL_LEN, "rail");
#define RMIG_RAILS_TABLE_MAX_LEN (RMIG_RAILS_HDR_LEN + RMIG_MAX_RAILS * RMIG_RAIL_LEN)
#define RMIG_RAILS_MAX_LEN (RMIG_RAILS_TABLE_MAX_LEN + RMIG_MAC_LEN)

/* RAILS decoded: the table, and its MAC if it came with one. */
struct rmig_rails {
	uint32_t nrails;
	struct rmig_wire_rail rail[RMIG_MAX_RAILS];
	uint32_t mac_len; /* 0 or RMIG_MAC_LEN */
	uint8_t mac[RMIG_MAC_LEN];
};

struct rmig_wire_region {
	uint32_t id;
	uint32_t page_size;
	uint64_t gpa;
	uint64_t len;
};
#define RMIG_REGION_DESC_LEN 24
_Static_assert(sizeof(struct rmig_wire_region) == RMIG_REGION_DESC_LEN, "region");

/* REGIONS payload: u32 count, u32 reserved, count x wire_region. */
#define RMIG_REGIONS_HDR_LEN 8

/* DISKS payload: u32 count (1..RMIG_MAX_DISKS), u32 reserved, count x
 * wire_disk. A disk is moved in blocks: its runs are block indexes, in
 * BLOCKS/BLOCKS_ZERO frames laid out as PAGES/ZERO (region_id: disk id). */
#define RMIG_DISK_NAME_LEN 32
#define RMIG_DISK_ID_LEN 16
#define RMIG_MAX_DISK_BYTES (1ull << 46) /* 64 TiB */
struct rmig_wire_disk {
	uint32_t id;
	uint32_t block_size; /* power of two, RMIG_MIN_PAGE_SIZE..RMIG_MAX_PAGE_SIZE */
	uint64_t size;	     /* a non-zero multiple of block_size */
	uint8_t identity[RMIG_DISK_ID_LEN]; /* the storage: equal on both sides = shared */
	char name[RMIG_DISK_NAME_LEN];	    /* printable, NUL-terminated, NUL-padded */
};
#define RMIG_DISK_DESC_LEN 64
#define RMIG_DISKS_HDR_LEN 8
_Static_assert(sizeof(struct rmig_wire_disk) == RMIG_DISK_DESC_LEN, "disk");

/* DISK_DIGESTS: u32 count, u32 reserved (zero), count x u64 root (DISKS order). */
#define RMIG_DISK_DIGESTS_HDR_LEN 8

struct rmig_wire_channel {
	uint8_t token[RMIG_NONCE_LEN];
	uint32_t index;
	uint32_t count;
};
#define RMIG_CHANNEL_LEN 24
_Static_assert(sizeof(struct rmig_wire_channel) == RMIG_CHANNEL_LEN, "channel");

/* PAGES and ZERO: this, then nruns x wire_run, then (PAGES only) the bytes of
 * every page of every run, in order. */
struct rmig_wire_pages_hdr {
	uint32_t region_id;
	uint32_t nruns;
	uint32_t round;
	uint32_t reserved;
};
#define RMIG_PAGES_HDR_LEN 16
_Static_assert(sizeof(struct rmig_wire_pages_hdr) == RMIG_PAGES_HDR_LEN, "pages hdr");

struct rmig_wire_run {
	uint64_t first; /* page index in the region */
	uint64_t count; /* pages */
};
#define RMIG_RUN_LEN 16
_Static_assert(sizeof(struct rmig_wire_run) == RMIG_RUN_LEN, "run");

/* ROUND_END: this, then nchan x u64 frames sent on each data stream. */
struct rmig_wire_round_end {
	uint32_t round;
	uint32_t nchan;
	uint64_t pages;
	uint64_t zero_pages;
	uint64_t bytes;
};
#define RMIG_ROUND_END_LEN 32
_Static_assert(sizeof(struct rmig_wire_round_end) == RMIG_ROUND_END_LEN, "round end");

/* COMPLETE: u32 flags (RMIG_COMPLETE_FLAGS, others refused), u32 count,
 * count x u64 digest (region order). */
#define RMIG_COMPLETE_HDR_LEN 8
#define RMIG_COMPLETE_VERIFY 1u
#define RMIG_COMPLETE_POSTCOPY                                                                     \
	2u /* the discarded pages follow after GO; no digests: memory changes                      \
	    * as soon as the destination's guest runs */
/* With VERIFY: each digest is a region's root over per-chunk digests kept
 * as pages moved (engine/mem/chunks.h), not a digest of its memory. */
#define RMIG_COMPLETE_CHUNKED 4u
#define RMIG_COMPLETE_FLAGS (RMIG_COMPLETE_VERIFY | RMIG_COMPLETE_POSTCOPY | RMIG_COMPLETE_CHUNKED)

/* DISCARD: this, then nruns x wire_run, ascending and disjoint. */
struct rmig_wire_discard_hdr {
	uint32_t region_id;
	uint32_t nruns;
};
#define RMIG_DISCARD_HDR_LEN 8
_Static_assert(sizeof(struct rmig_wire_discard_hdr) == RMIG_DISCARD_HDR_LEN, "discard hdr");

/* PAGE_REQUEST: this. PAGE_DATA: this, then the page's bytes (exactly its
 * region's page size). */
struct rmig_wire_page_ref {
	uint32_t region_id;
	uint32_t reserved; /* zero */
	uint64_t page;	   /* index in the region */
};
#define RMIG_PAGE_REF_LEN 16
_Static_assert(sizeof(struct rmig_wire_page_ref) == RMIG_PAGE_REF_LEN, "page ref");

/* ABORT: i32 errno, u32 reserved, reason text (no NUL). The answer to a
 * QUERY whose guest was not started (and now is discarded) carries this
 * code; any other ABORT leaves the outcome unknown. Elsewhere the same code
 * says the sender's operator cancelled (RMIG_ABORT_CANCELLED): the peer
 * reports that rather than a lost link, and waits for no failover. */
#define RMIG_ABORT_NOT_STARTED (-125) /* -ECANCELED */
#define RMIG_ABORT_CANCELLED (-125)
/* The answer to a RESUME after post-copy ended at the destination with
 * every page in (the source lost the last ROUND_ACK): nothing to recover,
 * the guest runs there. Outside errno's range, so that no failure's code
 * can be mistaken for it. */
#define RMIG_ABORT_ALL_IN (-5001)
/* A destination that started the guest by post-copy and gives it up as
 * lost: never "not started", whatever the source was waiting for. */
#define RMIG_ABORT_LOST (-5002)
/* The source, at the end of a dry run (RMIG_CAP_DRYRUN): it is over, as
 * planned; the reason text carries the verdict. */
#define RMIG_ABORT_DRY_RUN (-5003)
#define RMIG_ABORT_HDR_LEN 8

struct rmig_wire_done {
	uint64_t total_ms;
	uint64_t downtime_ms;
	uint64_t bytes_sent;
	uint32_t rounds;
	uint32_t flags;
};
#define RMIG_DONE_LEN 32
_Static_assert(sizeof(struct rmig_wire_done) == RMIG_DONE_LEN, "done");

/* AUTH: RMIG_MAC_LEN bytes. */

/* ROUND_ACK, READY, GO, STARTED, HEARTBEAT, CHECK: one u64 (round / bytes). */
#define RMIG_U64_MSG_LEN 8

/* ---- decoded forms ---- */

struct rmig_frame_hdr {
	uint8_t type;
	uint16_t flags;
	uint32_t len;
	uint64_t seq;
};

struct rmig_layout {
	uint32_t count;
	struct rmig_wire_region r[RMIG_MAX_REGIONS];
};

struct rmig_disks {
	uint32_t count;
	struct rmig_wire_disk d[RMIG_MAX_DISKS];
};

struct rmig_run {
	uint64_t first;
	uint64_t count;
};

struct rmig_pages_hdr {
	uint32_t region_id;
	uint32_t nruns;
	uint32_t round;
};

struct rmig_msg {
	uint8_t type;
	union {
		struct rmig_wire_hello hello;
		struct rmig_rails rails;
		struct rmig_layout layout;
		struct rmig_disks disks;
		struct {
			uint32_t count;
			uint64_t digest[RMIG_MAX_DISKS];
		} disk_digests;
		struct rmig_wire_channel channel;
		struct {
			struct rmig_wire_round_end h;
			uint64_t frames[RMIG_MAX_CHANNELS];
		} round_end;
		struct {
			uint32_t flags;
			uint32_t count;
			uint64_t digest[RMIG_MAX_REGIONS];
		} complete;
		struct {
			int32_t code;
			char reason[RMIG_MAX_REASON + 1]; /* NUL-terminated, printable */
		} abort;
		struct rmig_wire_done done;
		uint64_t value; /* ROUND_ACK, READY, GO, STARTED, HEARTBEAT, CHECK, RECOVER,
				   STREAM_ACK */
		uint8_t mac[RMIG_MAC_LEN]; /* AUTH */
		struct {
			const uint8_t *data; /* points into the decoded payload */
			uint32_t len;
		} state; /* STATE, MEM_KEYS and STREAM: opaque bytes */
		struct {
			uint32_t region_id;
			uint32_t nruns;
			struct rmig_run runs[RMIG_MAX_RUNS];
		} discard; /* DISCARD, MISSING */
		struct {
			uint32_t region_id;
			uint64_t page;
			const uint8_t *data; /* PAGE_DATA: into the payload; len bytes */
			uint32_t len;
		} page; /* PAGE_REQUEST, PAGE_DATA */
	} u;
};

const char *rmig_msg_name(unsigned type);

/* Encode a frame header. */
void rmig_frame_hdr_encode(uint8_t out[RMIG_FRAME_HDR_LEN], uint8_t type, uint16_t flags,
			   uint32_t len, uint64_t seq);
/* Decode and check a header: magic, version, known type, and len within the
 * bounds of that type. 0 or -EBADMSG with a reason in err. */
int rmig_frame_hdr_decode(const uint8_t in[RMIG_FRAME_HDR_LEN], struct rmig_frame_hdr *h, char *err,
			  size_t errlen);

/* Largest payload a control message may have (PAGES/ZERO excluded). */
size_t rmig_msg_max_len(const struct rmig_msg *m);
/* Encode a control message's payload into out (cap bytes). Returns its
 * length, or 0 if it does not fit or the message is invalid. */
size_t rmig_msg_encode(const struct rmig_msg *m, uint8_t *out, size_t cap);
/* Decode a control payload of the given type. For STATE, m->u.state.data
 * points into payload. 0 or -EBADMSG with a reason in err. */
int rmig_msg_decode(uint8_t type, const uint8_t *payload, size_t len, struct rmig_msg *m, char *err,
		    size_t errlen);

/* Check a layout as a destination must before allocating anything. */
int rmig_layout_check(const struct rmig_layout *l, char *err, size_t errlen);
/* Index of a region id in the layout, or -1. */
int rmig_layout_find(const struct rmig_layout *l, uint32_t region_id);

/* PAGES/ZERO (and BLOCKS/BLOCKS_ZERO, the same layout): the fixed
 * sub-header plus runs table, in one buffer. */
size_t rmig_pages_encode(uint8_t *out, size_t cap, uint32_t region_id, uint32_t round,
			 const struct rmig_run *runs, uint32_t nruns);
/* Step 1: the 16-byte sub-header, checked against the frame length. */
int rmig_pages_hdr_decode(const uint8_t in[RMIG_PAGES_HDR_LEN], const struct rmig_frame_hdr *fh,
			  struct rmig_pages_hdr *ph, char *err, size_t errlen);
/* Step 2: the runs table (ph->nruns entries): every run inside the region,
 * runs ascending and disjoint,
 * and the frame length exactly the runs' bytes (PAGES) or none (ZERO).
 * *region_index receives the region's index in the layout. */
int rmig_pages_runs_decode(const uint8_t *in, const struct rmig_frame_hdr *fh,
			   const struct rmig_pages_hdr *ph, const struct rmig_layout *l,
			   struct rmig_run *runs, size_t *region_index, char *err, size_t errlen);

/* Check a disk list as a destination must before opening anything: ids
 * unique, block sizes, sizes, names. */
int rmig_disks_check(const struct rmig_disks *d, char *err, size_t errlen);
/* The disks as a layout of "regions" of blocks (id, block size, size), so
 * that BLOCKS runs decode as PAGES runs do. */
void rmig_disks_layout(const struct rmig_disks *d, struct rmig_layout *l);
/* 1 for a data-stream frame type: PAGES, ZERO, BLOCKS, BLOCKS_ZERO. */
int rmig_is_data_frame(uint8_t type);

/* REGIONS_ACK's value: what the destination's kernel zero-fills when its
 * guest memory is first written (a transparent huge page), 0 when that is
 * nothing worth counting (preallocated memory, no THP; what older
 * destinations send). 1 if bytes is 0 or a power of two from 4 KiB to
 * 1 GiB; the decoder refuses anything else. */
int rmig_first_touch_ok(uint64_t bytes);

/* DISCARD, PAGE_REQUEST, PAGE_DATA against the layout (their decode checks
 * only what needs none): the region exists, every page lies in it, PAGE_DATA
 * carries exactly one page. *region_index receives the region's index.
 * 0 or -EBADMSG with a reason in err. */
int rmig_page_msg_check(const struct rmig_msg *m, const struct rmig_layout *l, size_t *region_index,
			char *err, size_t errlen);
/* The fixed part of PAGE_REQUEST/PAGE_DATA, for senders that send the page
 * from where it is. */
void rmig_page_ref_encode(uint8_t out[RMIG_PAGE_REF_LEN], uint32_t region_id, uint64_t page);

/* RAILS' table bytes without the MAC (what the MAC covers): the length,
 * or 0 if it does not fit in cap or is not a valid table. */
size_t rmig_rails_table_encode(const struct rmig_rails *r, uint8_t *out, size_t cap);

/* Decode one whole frame held in buf (header + payload), as the fuzzer and
 * unit tests drive it. l may be NULL for control frames only. */
int rmig_frame_decode_buf(const uint8_t *buf, size_t len, const struct rmig_layout *l,
			  struct rmig_msg *m, char *err, size_t errlen);

#endif
