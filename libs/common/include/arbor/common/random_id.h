// Identifiers a client cannot guess: sequence handles, task ids and tokens come from the
// kernel's CSPRNG (getrandom), so knowing one tells nothing about another. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace arbor {

// `n` random bytes into `out`; aborts if the kernel has no entropy source (never on Linux >= 3.17).
void RandomBytes(void* out, size_t n);
// A random 64-bit value, never 0 (0 means "none" in Arbor's protos).
uint64_t RandomNonZeroU64();
// `bytes` random bytes as 2*bytes lowercase hex digits.
std::string RandomHex(int bytes);

}  // namespace arbor
