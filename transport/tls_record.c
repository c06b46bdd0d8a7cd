/* tls_record.c - TLS 1.3 record protection (RFC 8446 5.2, 7.3) after the
 * handshake: keys from a traffic secret, sealing and opening records in
 * user space with OpenSSL's AES-GCM, or handing them to the kernel (kTLS). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sys/socket.h>

#include "tls_record.h"

#define CT_APPLICATION_DATA 23
#define LEGACY_VERSION 0x0303

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 7.1. */
static int expand_label(const char *digest, const uint8_t *secret, size_t secret_len,
			const char *label, uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 6 + 16 + 1];
	size_t n = strlen(label), at = 0;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ok = 0;

	info[at++] = (uint8_t)(len >> 8);
	info[at++] = (uint8_t)len;
	info[at++] = (uint8_t)(6 + n);
	memcpy(info + at, "tls13 ", 6);
	memcpy(info + at + 6, label, n);
	at += 6 + n;
	info[at++] = 0; /* no context */
	if (kctx) {
		OSSL_PARAM p[] = {
			OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
			OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
			OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret,
							  secret_len),
			OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, at),
			OSSL_PARAM_construct_end(),
		};
		ok = EVP_KDF_derive(kctx, out, len, p) > 0;
	}
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : -EIO;
}

int rmig_tls_dir_init(struct rmig_tls_dir *d, const uint8_t *secret, size_t secret_len, int encrypt)
{
	const char *digest = secret_len == 32 ? "SHA256" : secret_len == 48 ? "SHA384" : NULL;
	const EVP_CIPHER *cipher;

	memset(d, 0, sizeof(*d));
	if (!digest)
		return -EINVAL;
	d->key_len = secret_len == 32 ? 16 : 32;
	cipher = d->key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
	if (expand_label(digest, secret, secret_len, "key", d->key, d->key_len) ||
	    expand_label(digest, secret, secret_len, "iv", d->iv, sizeof(d->iv)))
		return -EIO;
	d->evp = EVP_CIPHER_CTX_new();
	if (!d->evp)
		return -ENOMEM;
	if (EVP_CipherInit_ex(d->evp, cipher, NULL, d->key, NULL, encrypt) != 1) {
		rmig_tls_dir_clear(d);
		return -EIO;
	}
	return 0;
}

void rmig_tls_dir_clear(struct rmig_tls_dir *d)
{
	EVP_CIPHER_CTX_free(d->evp);
	OPENSSL_cleanse(d, sizeof(*d));
}

static void record_nonce(const struct rmig_tls_dir *d, uint8_t nonce[12])
{
	memcpy(nonce, d->iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

int rmig_tls_dir_to_kernel(struct rmig_tls_dir *d, int fd, int tx, char *err, size_t len)
{
	union {
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
	} ci;
	socklen_t size;
	uint8_t seq[8];

	for (int i = 0; i < 8; i++)
		seq[i] = (uint8_t)(d->seq >> (56 - 8 * i));
	memset(&ci, 0, sizeof(ci));
	if (d->key_len == 16) {
		ci.g128.info = (struct tls_crypto_info){ TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128 };
		memcpy(ci.g128.salt, d->iv, 4);
		memcpy(ci.g128.iv, d->iv + 4, 8);
		memcpy(ci.g128.key, d->key, 16);
		memcpy(ci.g128.rec_seq, seq, 8);
		size = sizeof(ci.g128);
	} else {
		ci.g256.info = (struct tls_crypto_info){ TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_256 };
		memcpy(ci.g256.salt, d->iv, 4);
		memcpy(ci.g256.iv, d->iv + 4, 8);
		memcpy(ci.g256.key, d->key, 32);
		memcpy(ci.g256.rec_seq, seq, 8);
		size = sizeof(ci.g256);
	}
	/* The ULP is attached once per socket; the second direction finds it. */
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) && errno != EEXIST) {
		int e = errno;

		snprintf(err, len, "the kernel has no TLS (%s)", strerror(e));
		OPENSSL_cleanse(&ci, sizeof(ci));
		return e == ENOENT ? -ENOENT : -e;
	}
	if (setsockopt(fd, SOL_TLS, tx ? TLS_TX : TLS_RX, &ci, size)) {
		int e = errno;

		snprintf(err, len, "the kernel refused TLS 1.3 %s keys (%s)",
			 tx ? "send" : "receive", strerror(e));
		OPENSSL_cleanse(&ci, sizeof(ci));
		return -e;
	}
	OPENSSL_cleanse(&ci, sizeof(ci));
	d->kernel = 1;
	return 0;
}

static void record_header(uint8_t hdr[RMIG_TLS_HDR_LEN], size_t body_len)
{
	hdr[0] = CT_APPLICATION_DATA;
	hdr[1] = LEGACY_VERSION >> 8;
	hdr[2] = LEGACY_VERSION & 0xff;
	hdr[3] = (uint8_t)(body_len >> 8);
	hdr[4] = (uint8_t)body_len;
}

/* Feed len bytes of iov from *pos to the cipher, writing to out. */
static int crypt_iov(EVP_CIPHER_CTX *evp, const struct iovec *iov, int n, size_t *pos, size_t len,
		     uint8_t *out)
{
	size_t skip = *pos;
	int i = 0, w;

	while (i < n && skip >= iov[i].iov_len)
		skip -= iov[i++].iov_len;
	for (size_t left = len; left; i++) {
		size_t take;

		if (i >= n)
			return -1;
		take = iov[i].iov_len - skip;
		if (take > left)
			take = left;
		if (EVP_CipherUpdate(evp, out, &w, (const uint8_t *)iov[i].iov_base + skip,
				     (int)take) != 1)
			return -1;
		out += w;
		left -= take;
		skip = 0;
	}
	*pos += len;
	return 0;
}

size_t rmig_tls_seal(struct rmig_tls_dir *d, const struct iovec *iov, int n, size_t *pos,
		     size_t len, uint8_t *out)
{
	size_t body = len + 1 + RMIG_TLS_TAG_LEN;
	uint8_t nonce[12], type = CT_APPLICATION_DATA, *p = out + RMIG_TLS_HDR_LEN;
	int w;

	if (len > RMIG_TLS_MAX_PLAIN || d->seq >= RMIG_TLS_MAX_RECORDS - 1)
		return 0;
	record_header(out, body);
	record_nonce(d, nonce);
	if (EVP_CipherInit_ex(d->evp, NULL, NULL, NULL, nonce, 1) != 1 ||
	    EVP_CipherUpdate(d->evp, NULL, &w, out, RMIG_TLS_HDR_LEN) != 1 ||
	    crypt_iov(d->evp, iov, n, pos, len, p) ||
	    EVP_CipherUpdate(d->evp, p + len, &w, &type, 1) != 1 ||
	    EVP_CipherFinal_ex(d->evp, p + len + 1, &w) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->evp, EVP_CTRL_GCM_GET_TAG, RMIG_TLS_TAG_LEN, p + len + 1) != 1)
		return 0;
	d->seq++;
	return RMIG_TLS_HDR_LEN + body;
}

int rmig_tls_body_len(const uint8_t hdr[RMIG_TLS_HDR_LEN])
{
	size_t len = (size_t)hdr[3] << 8 | hdr[4];

	/* TLS 1.3 sends every protected record as application_data. */
	if (hdr[0] != CT_APPLICATION_DATA || hdr[1] != 3 || hdr[2] != 3 ||
	    len < 1 + RMIG_TLS_TAG_LEN || len > RMIG_TLS_MAX_BODY)
		return -EBADMSG;
	return (int)len;
}

int rmig_tls_open_to(struct rmig_tls_dir *d, const uint8_t hdr[RMIG_TLS_HDR_LEN],
		     const uint8_t *body, size_t body_len, uint8_t *out, int *type)
{
	size_t n = body_len - RMIG_TLS_TAG_LEN;
	uint8_t nonce[12];
	int w;

	if (d->seq >= RMIG_TLS_MAX_RECORDS - 1)
		return -ENOSPC;
	record_nonce(d, nonce);
	/* OpenSSL keeps a copy of the tag: out may be body. */
	if (EVP_CipherInit_ex(d->evp, NULL, NULL, NULL, nonce, 0) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->evp, EVP_CTRL_GCM_SET_TAG, RMIG_TLS_TAG_LEN,
				(void *)(body + n)) != 1 ||
	    EVP_CipherUpdate(d->evp, NULL, &w, hdr, RMIG_TLS_HDR_LEN) != 1 ||
	    EVP_CipherUpdate(d->evp, out, &w, body, (int)n) != 1 ||
	    EVP_CipherFinal_ex(d->evp, out + n, &w) != 1)
		return -EBADMSG;
	d->seq++;
	/* The content type is the last non-zero byte; zeros after it pad. */
	while (n > 0 && out[n - 1] == 0)
		n--;
	if (n == 0)
		return -EBADMSG;
	*type = out[--n];
	return (int)n;
}

int rmig_tls_open(struct rmig_tls_dir *d, const uint8_t hdr[RMIG_TLS_HDR_LEN], uint8_t *body,
		  size_t body_len, int *type)
{
	return rmig_tls_open_to(d, hdr, body, body_len, body, type);
}
