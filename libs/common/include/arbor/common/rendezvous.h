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

// FNV-1a: a member's identity from its name (a router's address).
inline uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

inline uint64_t RendezvousScore(std::string_view key, uint64_t member) {
  uint64_t h = Fnv1a(key);
  h += (member + 1) * 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

// The positions of `members` (their identities), the key's first choice first.
inline std::vector<size_t> RendezvousOrder(std::string_view key,
                                           const std::vector<uint64_t>& members) {
  std::vector<std::pair<uint64_t, size_t>> scored;
  scored.reserve(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    scored.emplace_back(RendezvousScore(key, members[i]), i);
  }
  std::sort(scored.rbegin(), scored.rend());
  std::vector<size_t> order;
  order.reserve(scored.size());
  for (const auto& [score, i] : scored) order.push_back(i);
  return order;
}

// Members 0..n-1 (identified by position), the key's first choice first.
inline std::vector<size_t> RendezvousOrder(std::string_view key, size_t n) {
  std::vector<uint64_t> members(n);
  for (size_t i = 0; i < n; ++i) members[i] = i;
  return RendezvousOrder(key, members);
}

// Bounded loads (consistent hashing with bounded loads): the first of `order` whose load
// (`loads[i]` for member i) is at most `factor` times the mean load over `order` (counting the
// one being placed); order[0] if none is.
inline size_t FirstWithinLoad(const std::vector<size_t>& order, const std::vector<int>& loads,
                              double factor) {
  int total = 0;
  for (size_t i : order) total += loads[i];
  const double cap = factor * (total + 1) / static_cast<double>(order.size());
  for (size_t i : order) {
    if (loads[i] <= cap) return i;
  }
  return order[0];
}

}  // namespace arbor
