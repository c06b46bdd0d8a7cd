/* tls_record.h - TLS 1.3 record protection once the handshake is done
 * (RFC 8446 5.2), one direction of one stream at a time.
 *
 * OpenSSL runs the handshake; after it, each direction of each stream is
 * sealed either by the kernel (kTLS, rmig_tls_dir_to_kernel) or here, in
 * user space, with the same keys and the same record format: a peer
 * whose kernel seals can talk to one that opens records here. Separate
 * directions share nothing, so the control stream's sending and receiving
 * threads need no lock (an SSL object may not be used by two at once).
 */
#ifndef RMIG_TLS_RECORD_H
#define RMIG_TLS_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define RMIG_TLS_HDR_LEN 5
#define RMIG_TLS_TAG_LEN 16
#define RMIG_TLS_MAX_PLAIN 16384 /* 2^14: the most a record carries */
/* A record's body: plaintext, its content type, the tag (and padding a
 * peer may add: RFC 8446 allows up to 2^14 + 256). */
#define RMIG_TLS_MAX_BODY (RMIG_TLS_MAX_PLAIN + 256)
#define RMIG_TLS_MAX_RECORD (RMIG_TLS_HDR_LEN + RMIG_TLS_MAX_BODY)
/* AES-GCM under one key: at most 2^24.5 records (RFC 8446 5.5); this side
 * stops one short of 2^24 and the link is set up again. */
#define RMIG_TLS_MAX_RECORDS (1ull << 24)

struct evp_cipher_ctx_st;

struct rmig_tls_dir {
	struct evp_cipher_ctx_st *evp; /* NULL: not keyed */
	uint8_t key[32];
	size_t key_len; /* 16: AES-128-GCM, 32: AES-256-GCM */
	uint8_t iv[12];
	uint64_t seq;
	int kernel; /* the kernel seals or opens this direction */
};

/* Key a direction from its traffic secret (the TLS 1.3
 * {client,server}_application_traffic_secret_0; its length names the hash:
 * 32 SHA-256 with AES-128-GCM, 48 SHA-384 with AES-256-GCM). 0 or -EINVAL
 * (unknown length) / -ENOMEM / -EIO. */
int rmig_tls_dir_init(struct rmig_tls_dir *d, const uint8_t *secret, size_t secret_len,
		      int encrypt);
/* Hand the direction to the kernel's TLS on socket fd (tx: sending). 0, or
 * a negative errno (-ENOENT: the kernel has no tls module) with why in err. */
int rmig_tls_dir_to_kernel(struct rmig_tls_dir *d, int fd, int tx, char *err, size_t len);
/* Wipe the keys, free the context. */
void rmig_tls_dir_clear(struct rmig_tls_dir *d);

/* Seal the next len (<= RMIG_TLS_MAX_PLAIN) bytes of iov[0..n), starting
 * *pos bytes in, into one record at out (room: len + 22). Advances *pos.
 * Returns the record's length, or 0 (crypto failure or key exhausted). */
size_t rmig_tls_seal(struct rmig_tls_dir *d, const struct iovec *iov, int n, size_t *pos,
		     size_t len, uint8_t *out);
/* Check a record header: the body length, or -EBADMSG (not an
 * application_data record of TLS 1.3, or too long). */
int rmig_tls_body_len(const uint8_t hdr[RMIG_TLS_HDR_LEN]);
/* Open the record hdr + body (body_len bytes, opened in place). Returns the
 * plaintext length (at body's start) and its content type in *type (23:
 * application data; 21: an alert, level and description), -EBADMSG (the tag
 * does not match: it was corrupted or forged, or it has no content type),
 * -ENOSPC (key exhausted). */
int rmig_tls_open(struct rmig_tls_dir *d, const uint8_t hdr[RMIG_TLS_HDR_LEN], uint8_t *body,
		  size_t body_len, int *type);
/* The same, the plaintext written at out (room: body_len - 16; it may be
 * body), so that a receiver opens a record straight into where its bytes
 * go instead of copying them there after. Until the tag is checked, at
 * the end, out holds bytes nobody vouched for: on -EBADMSG they are
 * garbage and the stream is dead. */
int rmig_tls_open_to(struct rmig_tls_dir *d, const uint8_t hdr[RMIG_TLS_HDR_LEN],
		     const uint8_t *body, size_t body_len, uint8_t *out, int *type);

#endif
