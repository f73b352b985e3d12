// Time helpers every service shares (request and step durations for metrics).
#pragma once

#include <chrono>
#include <cstdint>

namespace arbor {

// Seconds elapsed on the steady clock since `t0`.
inline double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Milliseconds since the Unix epoch on the wall clock (times stored for other processes).
inline int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace arbor
