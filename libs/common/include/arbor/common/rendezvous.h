// Rendezvous (highest-random-weight) hashing: a key ranks the members 0..n-1 of a set by a hash
// of (key, member). The hash is fixed (FNV-1a over the key, then splitmix64 with the member), so
// every process, and every restart, ranks the same; adding or removing a member moves only the
// keys that ranked it first. Which router a task keeps to, which kv-store shard holds its
// sequences.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace arbor {

inline uint64_t RendezvousScore(std::string_view key, size_t member) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  h += (member + 1) * 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

// Members 0..n-1, the key's first choice first.
inline std::vector<size_t> RendezvousOrder(std::string_view key, size_t n) {
  std::vector<std::pair<uint64_t, size_t>> scored;
  scored.reserve(n);
  for (size_t i = 0; i < n; ++i) scored.emplace_back(RendezvousScore(key, i), i);
  std::sort(scored.rbegin(), scored.rend());
  std::vector<size_t> order;
  order.reserve(n);
  for (const auto& [score, i] : scored) order.push_back(i);
  return order;
}

}  // namespace arbor
