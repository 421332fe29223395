/* Large blocks for cnnc's memory pool (_memory_pool.pxi), on huge pages where the system
 * has them. An activation of a few MB is streamed through by every layer; on 4 KiB pages
 * each pass misses the TLB page after page (a 5.5 MB convolution output took 2.3x longer
 * on the Zen 4 machine than on 2 MiB pages). NumPy's own allocator asks Linux for huge
 * pages for arrays of 4 MiB and more; the pool, which takes NumPy's place, asks the same,
 * and aligns such blocks to 2 MiB so that the pages can cover all of them. */
#ifndef CNNC_LARGE_PAGES_H
#define CNNC_LARGE_PAGES_H

#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define CNNC_HUGE_PAGE ((size_t)1 << 21)

/* size bytes, 2 MiB-aligned and advised onto huge pages on Linux (malloc's elsewhere);
 * NULL without memory. free() releases it. */
static void* cnnc_large_block(size_t size)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    void* block = NULL;
    if (posix_memalign(&block, CNNC_HUGE_PAGE, size) != 0)
        return NULL;
    madvise(block, size, MADV_HUGEPAGE);    /* a hint: a system without THP says no */
    return block;
#else
    return malloc(size);
#endif
}

#endif
