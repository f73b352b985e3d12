// Test helper: a model folder used as a test parameter ("tests/data/tiny-gqa4-tied") as the
// GoogleTest name suffix ("tiny_gqa4_tied"): its last component, non-alphanumerics as '_'.
#pragma once

#include <cctype>
#include <string>

namespace arbor {

inline std::string ModelTestName(const std::string& path) {
  std::string n = path.substr(path.rfind('/') + 1);
  for (char& c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return n;
}

}  // namespace arbor
