// Weak fallbacks so ipip-fuzz links with and without -sanitize=fuzzer.
#include <stdio.h>
#include <stdlib.h>
#include "cfuzz.h"

// A plain `swift build` / `swift test` builds every target, ipip-fuzz included: without this the
// link fails on the undefined LLVMFuzzerRunDriver. With -sanitize=fuzzer the libFuzzer runtime is
// linked whole-archive and its strong definition wins.
__attribute__((weak)) int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t)) {
    (void)argc;
    (void)argv;
    (void)cb;
    fprintf(stderr, "not built with -sanitize=fuzzer\n");
    return 2;
}

// The whole-archive runtime also brings libFuzzer's own main (FuzzerMain.cpp), which references
// LLVMFuzzerTestOneInput. SwiftPM points `main` at main.swift (--defsym main=ipip_fuzz_main), so
// that main never runs and neither does this; it exists only to satisfy the reference
// (ld.gold reports the missing symbol as "internal error in format_file_lineno").
__attribute__((weak)) int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)data;
    (void)size;
    fprintf(stderr, "LLVMFuzzerTestOneInput stub called: ipip-fuzz drives libFuzzer via LLVMFuzzerRunDriver\n");
    abort();
}
