// Time helpers every service shares (request and step durations for metrics).
#pragma once

#include <chrono>

namespace arbor {

// Seconds elapsed on the steady clock since `t0`.
inline double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace arbor
