#ifndef CMALLOCCOUNTER_H
#define CMALLOCCOUNTER_H
#include <stdint.h>

/// Allocation calls (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) made by
/// the process since it started. Only meaningful in a process that has libIPIPMallocCounter.so
/// preloaded (`ipipd bench` re-executes itself so): its definitions of those functions interpose
/// glibc's (see malloccounter.c). Read through dlsym (IPIPLinux's AllocationCounter).
uint64_t ipip_malloc_count(void);

/// 1 when the counter sees allocations made inside other libraries (a probe: glibc's strdup
/// allocates through the interposed malloc), else 0.
int ipip_malloc_counting(void);

#endif
