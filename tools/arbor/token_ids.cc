#include "token_ids.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace arbor::cli {
namespace {

bool IsSeparator(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ','; }

}  // namespace

absl::StatusOr<std::vector<int>> ParseTokenIds(const std::string& bytes, const std::string& name) {
  std::vector<int> ids;
  size_t i = 0;
  while (i < bytes.size()) {
    if (IsSeparator(bytes[i])) {
      ++i;
      continue;
    }
    const size_t start = i;
    int64_t v = 0;
    while (i < bytes.size() && bytes[i] >= '0' && bytes[i] <= '9' && i - start < 10) {
      v = v * 10 + (bytes[i] - '0');
      ++i;
    }
    const bool ends = i == bytes.size() || IsSeparator(bytes[i]);
    if (i == start || !ends || v > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": byte ", start, ": expected a token id (a decimal integer up to 2147483647)"));
    }
    ids.push_back(static_cast<int>(v));
  }
  if (ids.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": holds ", ids.size(), " token ids; scoring needs at least 2"));
  }
  return ids;
}

}  // namespace arbor::cli
