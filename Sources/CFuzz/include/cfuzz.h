#ifndef CFUZZ_H
#define CFUZZ_H
// libFuzzer's driver entry (compiler-rt FuzzerInterface.h), declared for Swift.
// Built with `-sanitize=fuzzer` the runtime provides it; otherwise cfuzz.c's weak fallback does.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t));

#endif
