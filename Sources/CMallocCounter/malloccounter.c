// Counts allocation calls for `ipipd bench` ("allocations per packet").
//
// Built only as the shared library libIPIPMallocCounter.so (product IPIPMallocCounter); no
// executable links it. `ipipd bench` re-executes itself with the library in LD_PRELOAD, so these
// definitions of malloc and friends come first in ELF symbol resolution and every library in the
// process (the Swift runtime, libpcap, ...) calls them instead of glibc's.
// Each one adds 1 to a relaxed atomic counter and forwards to glibc's own implementation through
// its exported __libc_* entry points, so memory still comes from (and goes back to) glibc's
// allocator: free, malloc_usable_size and the rest are not interposed and stay consistent.
// Cost: one uncontended atomic add per allocation.
//
// Hazard: glibc-specific (__libc_malloc and friends are glibc exports). Other C libraries get
// no counter (ipip_malloc_count() returns 0, and ipipd bench says allocations were not counted).
#include "cmalloccounter.h"

#if defined(__GLIBC__)
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static uint64_t counter;

static inline void count_one(void) { __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED); }

uint64_t ipip_malloc_count(void) { return __atomic_load_n(&counter, __ATOMIC_RELAXED); }

int ipip_malloc_counting(void) {
    // Through a volatile pointer, so the compiler cannot pair and remove the allocation.
    char *(*volatile duplicate)(const char *) = strdup;
    uint64_t before = ipip_malloc_count();
    char *p = duplicate("probe");
    int seen = ipip_malloc_count() > before;
    free(p);
    return seen;
}

void *malloc(size_t size) {
    count_one();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
    count_one();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    count_one();
    return __libc_realloc(p, size);
}

void *memalign(size_t alignment, size_t size) {
    count_one();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    count_one();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    count_one();
    void *p = __libc_memalign(alignment, size);
    if (p == NULL && size != 0) return ENOMEM;
    *out = p;
    return 0;
}
#else
uint64_t ipip_malloc_count(void) { return 0; }
int ipip_malloc_counting(void) { return 0; }
#endif
