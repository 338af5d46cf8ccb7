// Weak fallback for LLVMFuzzerRunDriver, so a plain `swift build` / `swift test` (which build every
// target, ipip-fuzz included) still link. With -sanitize=fuzzer the libFuzzer runtime is linked
// whole-archive and its strong definition wins (docs: shared/reference/swift-on-linux.md §6).
#include <stdio.h>
#include "cfuzz.h"

__attribute__((weak)) int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t)) {
    (void)argc;
    (void)argv;
    (void)cb;
    fprintf(stderr, "not built with -sanitize=fuzzer\n");
    return 2;
}
