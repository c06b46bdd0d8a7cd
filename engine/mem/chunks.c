/* chunks.c - per-chunk digests kept as pages move. See chunks.h. */
#include "chunks.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "xxhash_fast.h"

#include "bitmap.h"
#include "digest.h"
#include "populated.h"

#define MAX_THREADS RMIG_DIGEST_MAX_THREADS

struct rmig_chunks {
	const struct rmig_region *r;
	size_t n;
	uint64_t *leaf[RMIG_MAX_REGIONS];     /* per page: XXH3 ^ zero_leaf; 0: zero page */
	uint64_t zero_leaf[RMIG_MAX_REGIONS]; /* XXH3 of a zero page of the region */
	size_t first_chunk[RMIG_MAX_REGIONS + 1];
	uint64_t *digest;	     /* per chunk, all regions in order */
	atomic_uint_fast64_t *stale; /* bit per chunk: leaves changed since refresh */
};

static uint64_t pages_of(const struct rmig_region *r)
{
	return r->len / r->page_size;
}

static uint64_t pages_per_chunk(const struct rmig_region *r)
{
	return r->page_size >= RMIG_CHUNK_BYTES ? 1 : RMIG_CHUNK_BYTES / r->page_size;
}

static uint64_t zero_hash(uint64_t len)
{
	void *z = calloc(1, len);
	uint64_t h = z ? XXH3_64bits(z, len) : 0;

	free(z);
	return h;
}

/* Global chunk index g -> region and the chunk's first page and count. */
static size_t chunk_span(const struct rmig_chunks *c, size_t g, uint64_t *first, uint64_t *count)
{
	size_t ri = 0;

	while (ri + 1 < c->n && c->first_chunk[ri + 1] <= g)
		ri++;
	*first = (g - c->first_chunk[ri]) * pages_per_chunk(&c->r[ri]);
	*count = pages_of(&c->r[ri]) - *first < pages_per_chunk(&c->r[ri])
		     ? pages_of(&c->r[ri]) - *first
		     : pages_per_chunk(&c->r[ri]);
	return ri;
}

static void chunk_digest(struct rmig_chunks *c, size_t g)
{
	uint64_t first, count;
	size_t ri = chunk_span(c, g, &first, &count);

	c->digest[g] = XXH3_64bits(c->leaf[ri] + first, count * 8);
}

/* Every chunk of region ri starts as zero leaves: its digest is that of
 * zeros, computed once per length rather than read from the leaves. */
static void zero_chunks(struct rmig_chunks *c, size_t ri)
{
	uint64_t ppc = pages_per_chunk(&c->r[ri]), last = pages_of(&c->r[ri]) % ppc;
	uint64_t full = zero_hash(ppc * 8), part = last ? zero_hash(last * 8) : 0;

	for (size_t g = c->first_chunk[ri]; g < c->first_chunk[ri + 1]; g++)
		c->digest[g] = full;
	if (last)
		c->digest[c->first_chunk[ri + 1] - 1] = part;
}

int rmig_chunks_create(const struct rmig_region *r, size_t n, struct rmig_chunks **out)
{
	struct rmig_chunks *c = calloc(1, sizeof(*c));
	size_t total;

	if (!c)
		return -ENOMEM;
	c->r = r;
	c->n = n;
	for (size_t i = 0; i < n; i++) {
		c->leaf[i] = calloc(pages_of(&r[i]) ? pages_of(&r[i]) : 1, 8);
		c->zero_leaf[i] = zero_hash(r[i].page_size);
		c->first_chunk[i + 1] =
		    c->first_chunk[i] +
		    (pages_of(&r[i]) + pages_per_chunk(&r[i]) - 1) / pages_per_chunk(&r[i]);
		if (!c->leaf[i])
			goto fail;
	}
	total = c->first_chunk[n];
	c->digest = calloc(total ? total : 1, 8);
	c->stale = calloc(rmig_bitmap_words(total) ? rmig_bitmap_words(total) : 1, 8);
	if (!c->digest || !c->stale)
		goto fail;
	for (size_t i = 0; i < n; i++)
		zero_chunks(c, i);
	*out = c;
	return 0;
fail:
	rmig_chunks_destroy(c);
	return -ENOMEM;
}

void rmig_chunks_destroy(struct rmig_chunks *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < RMIG_MAX_REGIONS; i++)
		free(c->leaf[i]);
	free(c->digest);
	free((void *)c->stale);
	free(c);
}

static void mark_stale(struct rmig_chunks *c, size_t ri, uint64_t first, uint64_t count)
{
	uint64_t ppc = pages_per_chunk(&c->r[ri]);

	for (uint64_t k = first / ppc; k <= (first + count - 1) / ppc; k++) {
		size_t g = c->first_chunk[ri] + k;

		if (!(atomic_load_explicit(&c->stale[g / 64], memory_order_relaxed) &
		      (1ull << (g % 64))))
			atomic_fetch_or(&c->stale[g / 64], 1ull << (g % 64));
	}
}

void rmig_chunks_set_pages(struct rmig_chunks *c, size_t ri, uint64_t first, uint64_t count,
			   const void *data)
{
	uint32_t ps = c->r[ri].page_size;

	if (!count)
		return;
	for (uint64_t k = 0; k < count; k++)
		c->leaf[ri][first + k] =
		    XXH3_64bits((const char *)data + k * ps, ps) ^ c->zero_leaf[ri];
	mark_stale(c, ri, first, count);
}

void rmig_chunks_set_zero(struct rmig_chunks *c, size_t ri, uint64_t first, uint64_t count)
{
	if (!count)
		return;
	for (uint64_t k = 0; k < count; k++)
		if (c->leaf[ri][first + k]) /* a read of calloc'd zeros backs nothing */
			c->leaf[ri][first + k] = 0;
	mark_stale(c, ri, first, count);
}

uint64_t rmig_chunks_stale(struct rmig_chunks *c)
{
	uint64_t n = 0;

	for (size_t w = 0; w < rmig_bitmap_words(c->first_chunk[c->n]); w++)
		n += (uint64_t)__builtin_popcountll(atomic_load(&c->stale[w]));
	return n;
}

uint64_t rmig_chunks_refresh(struct rmig_chunks *c)
{
	uint64_t n = 0;

	for (size_t w = 0; w < rmig_bitmap_words(c->first_chunk[c->n]); w++) {
		uint64_t bits = atomic_exchange(&c->stale[w], 0);

		while (bits) {
			chunk_digest(c, w * 64 + (size_t)__builtin_ctzll(bits));
			bits &= bits - 1;
			n++;
		}
	}
	return n;
}

void rmig_chunks_roots(struct rmig_chunks *c, uint64_t *out)
{
	rmig_chunks_refresh(c);
	for (size_t i = 0; i < c->n; i++)
		out[i] = XXH3_64bits_withSeed(c->digest + c->first_chunk[i],
					      (c->first_chunk[i + 1] - c->first_chunk[i]) * 8,
					      c->r[i].len);
}

/* ---- whole-memory passes, on every core ---- */

struct pass {
	struct rmig_chunks *c;
	uint64_t *populated[RMIG_MAX_REGIONS]; /* NULL: assume every page populated */
	int compare;			       /* audit: compare instead of setting */
	uint64_t *bad;			       /* audit: bit per mismatched chunk */
	atomic_size_t next;
	atomic_uint_fast64_t pages_read;
};

static int populated(const struct pass *p, size_t ri, uint64_t pg)
{
	return !p->populated[ri] || ((p->populated[ri][pg / 64] >> (pg % 64)) & 1);
}

/* One chunk: each page's leaf from memory, set or compared. */
static int pass_chunk(struct pass *p, size_t g)
{
	struct rmig_chunks *c = p->c;
	uint64_t first, count, read = 0;
	size_t ri = chunk_span(c, g, &first, &count);
	const struct rmig_region *r = &c->r[ri];
	int differs = 0;

	for (uint64_t pg = first; pg < first + count; pg++) {
		uint64_t leaf = 0;

		if (populated(p, ri, pg)) {
			leaf =
			    XXH3_64bits((const char *)r->host + pg * r->page_size, r->page_size) ^
			    c->zero_leaf[ri];
			read++;
		}
		if (p->compare)
			differs |= leaf != c->leaf[ri][pg];
		else if (leaf || c->leaf[ri][pg])
			c->leaf[ri][pg] = leaf;
	}
	atomic_fetch_add(&p->pages_read, read);
	return differs;
}

static void *pass_worker(void *arg)
{
	struct pass *p = arg;
	size_t g, total = p->c->first_chunk[p->c->n];

	while ((g = atomic_fetch_add(&p->next, 1)) < total) {
		if (pass_chunk(p, g))
			__atomic_fetch_or(&p->bad[g / 64], 1ull << (g % 64), __ATOMIC_RELAXED);
	}
	return NULL;
}

static void pass_free(struct pass *p)
{
	for (size_t i = 0; i < RMIG_MAX_REGIONS; i++)
		free(p->populated[i]);
	free(p->bad);
}

/* Which pages the kernel populated, for regions where the rest is zero. */
static int pass_init(struct pass *p, struct rmig_chunks *c, int compare)
{
	memset(p, 0, sizeof(*p));
	p->c = c;
	p->compare = compare;
	p->bad = calloc(rmig_bitmap_words(c->first_chunk[c->n]) + 1, 8);
	if (!p->bad)
		return -ENOMEM;
	for (size_t i = 0; i < c->n; i++) {
		const struct rmig_region *r = &c->r[i];

		if (!(r->flags & RMIG_REGION_UNTOUCHED_ZERO))
			continue;
		p->populated[i] = calloc(rmig_bitmap_words(pages_of(r)) + 1, 8);
		if (!p->populated[i])
			return pass_free(p), -ENOMEM;
		if (rmig_populated_pages(r->host, pages_of(r), r->page_size, p->populated[i])) {
			free(p->populated[i]); /* unknown: read them all */
			p->populated[i] = NULL;
		}
	}
	return 0;
}

static void pass_run(struct pass *p, unsigned threads)
{
	pthread_t tid[MAX_THREADS];
	unsigned started = 0;

	threads = rmig_digest_threads(threads);
	atomic_init(&p->next, 0);
	atomic_init(&p->pages_read, 0);
	for (unsigned t = 1; t < threads; t++) {
		if (pthread_create(&tid[started], NULL, pass_worker, p))
			break;
		started++;
	}
	pass_worker(p); /* this thread works too */
	for (unsigned t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
}

int rmig_chunks_from_memory(struct rmig_chunks *c, unsigned threads)
{
	struct pass p;
	size_t total = c->first_chunk[c->n];
	int rc = pass_init(&p, c, 0);

	if (rc)
		return rc;
	pass_run(&p, threads);
	for (size_t g = 0; g < total; g++)
		atomic_fetch_or(&c->stale[g / 64], 1ull << (g % 64));
	pass_free(&p);
	return 0;
}

int rmig_chunks_audit(struct rmig_chunks *c, unsigned threads, struct rmig_audit_report *rep)
{
	struct pass p;
	size_t total = c->first_chunk[c->n];
	int rc = pass_init(&p, c, 1);

	memset(rep, 0, sizeof(*rep));
	if (rc)
		return rc;
	pass_run(&p, threads);
	rep->chunks = total;
	rep->pages_read = atomic_load(&p.pages_read);
	for (size_t g = 0; g < total; g++) {
		uint64_t first, count;
		size_t ri;

		if (!((p.bad[g / 64] >> (g % 64)) & 1))
			continue;
		rep->mismatched++;
		if (rep->named == RMIG_AUDIT_NAMED)
			continue;
		ri = chunk_span(c, g, &first, &count);
		rep->first[rep->named++] =
		    (struct rmig_chunk_name){ c->r[ri].id, (uint64_t)(g - c->first_chunk[ri]) };
	}
	pass_free(&p);
	return 0;
}
