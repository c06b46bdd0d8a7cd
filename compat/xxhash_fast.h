/* xxhash_fast.h - XXH3 at the speed of this CPU.
 *
 * Debian's libxxhash is built for baseline x86-64, so plain XXH3_64bits
 * runs its SSE2 code: about 14 GB/s on a cached 4 KiB page here, against
 * 38 GB/s for its AVX2 code. The library also ships XXH3_*_dispatch
 * functions that pick the widest vector unit at run time;
 * xxh_x86dispatch.h maps the usual names onto them. Same algorithm, same
 * digests, whatever the CPU. Elsewhere than x86-64 it is plain xxhash.h.
 */
#ifndef RMIG_XXHASH_FAST_H
#define RMIG_XXHASH_FAST_H

#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#endif
