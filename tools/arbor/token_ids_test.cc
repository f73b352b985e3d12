// The ids-file parser of `arbor score` against a naive model (split on separators, each field all
// digits and at most 2^31 - 1), on fixed cases and on 20,000 seeded random byte strings.
#include "token_ids.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::cli {
namespace {

// The same contract, written the slow and obvious way.
bool NaiveParse(const std::string& bytes, std::vector<int>* ids) {
  std::string field;
  auto flush = [&]() {
    if (field.empty()) return true;
    if (field.size() > 10) return false;
    for (char c : field) {
      if (c < '0' || c > '9') return false;
    }
    const long long v = std::stoll(field);
    if (v > 2147483647LL) return false;
    ids->push_back(static_cast<int>(v));
    field.clear();
    return true;
  };
  for (char c : bytes) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',') {
      if (!flush()) return false;
    } else {
      field.push_back(c);
    }
  }
  return flush() && ids->size() >= 2;
}

TEST(TokenIdsTest, SeparatorsAndErrorsNameTheFileAndByte) {
  auto ids = ParseTokenIds("1, 40 41\n42,7\r\n\t300", "f");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int>{1, 40, 41, 42, 7, 300}));
  EXPECT_EQ(ParseTokenIds("1 2 x3", "ids.txt").status().message(),
            "ids.txt: byte 4: expected a token id (a decimal integer up to 2147483647)");
  EXPECT_EQ(ParseTokenIds("1 -2", "f").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseTokenIds("1 2147483647", "f").ok());
  EXPECT_FALSE(ParseTokenIds("1 2147483648", "f").ok());
  EXPECT_FALSE(ParseTokenIds("1 99999999999999999999", "f").ok());
  EXPECT_EQ(ParseTokenIds(" ,\n", "f").status().message(),
            "f: holds 0 token ids; scoring needs at least 2");
  EXPECT_FALSE(ParseTokenIds("7", "f").ok());
}

TEST(TokenIdsTest, RandomBytesAgreeWithTheNaiveParser) {
  const std::string alphabet = "0123456789012345678901234567890123456789 ,\n\t\r-x+.\xff";
  std::mt19937 rng(24);
  int accepted = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string bytes(rng() % 40, ' ');
    for (char& c : bytes) c = alphabet[rng() % alphabet.size()];
    std::vector<int> want;
    const bool ok = NaiveParse(bytes, &want);
    const absl::StatusOr<std::vector<int>> got = ParseTokenIds(bytes, "f");
    ASSERT_EQ(got.ok(), ok) << "\"" << bytes << "\": " << got.status();
    if (ok) {
      EXPECT_EQ(*got, want) << bytes;
      ++accepted;
    } else {
      EXPECT_EQ(got.status().message().substr(0, 3), "f: ") << got.status();
    }
  }
  EXPECT_GT(accepted, 100);  // both kinds of input were exercised
}

}  // namespace
}  // namespace arbor::cli
