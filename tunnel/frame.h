/* frame.h - the tunnel's wire frames: encoding and the checked decoder.
 *
 * Every frame is a 12-byte header, then len bytes of payload:
 *   u32 stream (big-endian), u32 len, u8 type, u8[3] zero.
 * Stream 0 is the tunnel itself (HELLO, PING, STATE, REFUSE); every other
 * frame names a stream, numbered by the sending side from 1 up, never
 * reused in a session.
 */
#ifndef RMIG_TUNNEL_FRAME_H
#define RMIG_TUNNEL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define TUN_HDR_LEN 12
#define TUN_MAX_DATA 32768u /* one DATA frame's payload */
#define TUN_MAX_NAME 64u    /* a forward's name */
#define TUN_MAX_MSG 200u    /* a CLOSE's reason */
#define TUN_TOKEN_LEN 16u
#define TUN_HELLO_LEN (12u + TUN_TOKEN_LEN) /* magic, version, flags, token */
#define TUN_STATE_ENTRY 24u		    /* u32 id, u32 0, u64 rcvd, u64 consumed */
#define TUN_STATE_MAX 512u		    /* entries: every stream slot a side has */

enum tun_type {
	TUN_HELLO = 1,	/* stream 0: magic "RMTN", u32 version */
	TUN_PING = 2,	/* stream 0, empty: the link is alive */
	TUN_OPEN = 3,	/* a new stream to the forward named by the payload */
	TUN_DATA = 4,	/* bytes of the stream, in order */
	TUN_EOF = 5,	/* the sender will send no more bytes (half-close) */
	TUN_CLOSE = 6,	/* the stream is gone; payload: why (text, may be empty) */
	TUN_WINDOW = 7, /* u64: the receiver has consumed the stream up to here */
	TUN_STATE = 8,	/* stream 0: after a (re)connection, what this side holds */
	TUN_REFUSE = 9, /* stream 0: the receiver refuses this connection; text: why */
};

#define TUN_HELLO_RESUME 1u /* flags: this HELLO resumes the token's session */

struct tun_hdr {
	uint32_t stream;
	uint32_t len;
	uint8_t type;
};

void tun_hdr_encode(const struct tun_hdr *h, uint8_t out[TUN_HDR_LEN]);
/* Decode and check a header: the type is known, the reserved bytes zero,
 * the stream number fits the type, len fits the type. 0, or -EPROTO with
 * the reason in err. */
int tun_hdr_decode(const uint8_t in[TUN_HDR_LEN], struct tun_hdr *h, char *err, size_t errlen);
void tun_put32(uint8_t *p, uint32_t v);
uint32_t tun_get32(const uint8_t *p);
void tun_put64(uint8_t *p, uint64_t v);
uint64_t tun_get64(const uint8_t *p);

#endif
