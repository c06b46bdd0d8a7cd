/* fuzz_rdmakeys.c - libFuzzer target: what an RDMA source reads from its
 * destination about guest memory (transport/rdma_reg.c): the memory
 * description (MEM_KEYS' blob, rmig_rdma_blob_parse) and the entries of the
 * key table it reads with RDMA READ (rmig_rdma_key_decode).
 *
 * Input: u8 n (areas, taken modulo 9), n x u32 length in pages (the
 * source's own areas), then the blob; its bytes, 8 at a time, are also
 * decoded as key table entries.
 *
 * Oracles beyond ASan/UBSan: a refused description has a message; an
 * accepted one has a shift in range, the chunk count our areas take, and
 * every area's range and the key table inside 2^64; a key decoded is one
 * that rmig_rdma_key_entry would write, a failure an errno.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_reg.h"

static void check_blob(const uint8_t *b, size_t blen, const uint64_t *len, size_t n)
{
	struct rmig_rdma_blob out;
	uint64_t raddr[8];
	uint32_t want;
	char err[256] = "";

	if (rmig_rdma_blob_parse(b, blen, len, n, &out, raddr, err, sizeof(err))) {
		if (!err[0])
			abort();
		return;
	}
	if (out.shift < RMIG_RDMA_MIN_SHIFT || out.shift > RMIG_RDMA_MAX_SHIFT ||
	    rmig_rdma_chunk_count(len, n, out.shift, &want) || want != out.nchunks ||
	    out.nchunks > RMIG_RDMA_MAX_CHUNKS ||
	    out.table_addr > UINT64_MAX - (uint64_t)out.nchunks * 8)
		abort();
	for (size_t i = 0; i < n; i++)
		if (raddr[i] > UINT64_MAX - len[i])
			abort();
}

static void check_keys(const uint8_t *b, size_t blen)
{
	for (size_t i = 0; i + 8 <= blen; i += 8) {
		uint64_t e;
		uint32_t rkey = 0;
		int st;

		memcpy(&e, b + i, 8);
		st = rmig_rdma_key_decode(e, &rkey);
		if (st > 0 && rmig_rdma_key_entry(rkey) != e)
			abort();
		if (st < 0 && (st < -4095 || rmig_rdma_key_failed(-st) != e))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t len[8];
	size_t n;

	if (size < 1)
		return 0;
	n = data[0] % 9;
	if (size < 1 + 4 * n)
		return 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t pages;

		memcpy(&pages, data + 1 + 4 * i, 4);
		len[i] = (uint64_t)pages << 12;
	}
	data += 1 + 4 * n;
	size -= 1 + 4 * n;
	check_blob(data, size, len, n);
	check_keys(data, size);
	/* The shift the destination picks always fits its chunk limit. */
	{
		unsigned shift = rmig_rdma_chunk_shift(len, n);
		uint32_t count;

		if (shift < RMIG_RDMA_MIN_SHIFT || shift > RMIG_RDMA_MAX_SHIFT ||
		    rmig_rdma_chunk_count(len, n, shift, &count))
			abort();
	}
	return 0;
}
