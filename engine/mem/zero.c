/* zero.c - is a page all zero bytes? (the senders send such pages as runs
 * without bytes; the receivers skip clearing pages already zero). */
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

int rmig_page_is_zero(const void *page, size_t len)
{
	const uint64_t *w = page;

	/* Non-zero pages almost always fail on the first word; zero pages are
	 * read at memory speed, 8 words per step so the compiler vectorises. */
	if (w[0])
		return 0;
	for (size_t i = 0; i < len / 8; i += 8) {
		uint64_t acc = w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] |
			       w[i + 6] | w[i + 7];

		if (acc)
			return 0;
	}
	return 1;
}
