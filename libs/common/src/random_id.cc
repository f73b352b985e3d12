#include "arbor/common/random_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace arbor {

void RandomBytes(void* out, size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    const ssize_t got = ::getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      std::perror("getrandom");
      std::abort();
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
}

uint64_t RandomNonZeroU64() {
  uint64_t v = 0;
  while (v == 0) RandomBytes(&v, sizeof(v));
  return v;
}

std::string RandomHex(int bytes) {
  std::vector<unsigned char> raw(static_cast<size_t>(bytes));
  RandomBytes(raw.data(), raw.size());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char b : raw) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

}  // namespace arbor
