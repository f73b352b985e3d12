// The Game of 24 judge: exact answers accepted, every way of being wrong refused, the solver's
// counts equal to the independent Python solver's (tools/game24.py, fractions.Fraction), and the
// parser survives random bytes.
#include "game24.h"

#include <random>

#include "gtest/gtest.h"

namespace arbor::cli::game24 {
namespace {

TEST(Game24Test, AcceptsExactAnswers) {
  EXPECT_TRUE(Check("(13 - 9) * (10 - 4) = 24", {4, 9, 10, 13}));
  EXPECT_TRUE(Check("(10 - (13 - 9)) * 4", {13, 4, 10, 9}));
  EXPECT_TRUE(Check("5 * (5 - 1 / 5)", {1, 5, 5, 5}));  // needs a fraction on the way
  EXPECT_TRUE(Check("8 / (3 - 8 / 3)", {3, 3, 8, 8}));
  EXPECT_TRUE(Check("  ( ( 1 + 1 ) * 3 ) * 4  ", {1, 1, 3, 4}));
  EXPECT_TRUE(Check("6 * 4 - 0 * 7", {0, 4, 6, 7}));
}

TEST(Game24Test, ParsesPuzzlesAndNothingElse) {
  EXPECT_EQ(ParsePuzzle("4 9 10 13"), (std::vector<int>{4, 9, 10, 13}));
  EXPECT_EQ(ParsePuzzle("  1 1  1 12 "), (std::vector<int>{1, 1, 1, 12}));
  EXPECT_EQ(ParsePuzzle(PuzzleText({2, 5, 6, 7})), (std::vector<int>{2, 5, 6, 7}));
  for (const char* bad :
       {"", "1 2 3", "1 2 3 4 5", "0 1 2 3", "1 2 3 14", "1 2 x 4", "1,2,3,4", "write a poem"}) {
    EXPECT_TRUE(ParsePuzzle(bad).empty()) << bad;
  }
}

TEST(Game24Test, RefusesWrongAnswers) {
  EXPECT_FALSE(Check("5 * 5 - 1", {1, 5, 5, 5}));                   // 24 without every number
  EXPECT_FALSE(Check("(13 - 9) * (10 - 4) * 1", {4, 9, 10, 13}));   // an extra number
  EXPECT_FALSE(Check("(13 - 9) * (10 - 3) = 24", {4, 9, 10, 13}));  // the wrong numbers
  EXPECT_FALSE(Check("13 - 9 * 10 - 4", {4, 9, 10, 13}));           // precedence is honoured
  EXPECT_FALSE(Check("4 * 6 / 0 + 9", {0, 4, 6, 9}));               // division by zero
  EXPECT_FALSE(Check("", {1, 2, 3, 4}));
  EXPECT_FALSE(Check("(1 + 2 * 3 * 4", {1, 2, 3, 4}));
  EXPECT_FALSE(Check("1 + 2 * 3 * 4)", {1, 2, 3, 4}));
  EXPECT_FALSE(Check("x * 24", {1, 2, 3, 4}));
  EXPECT_FALSE(Check("4 ^ 2 + 8", {2, 4, 8, 1}));
}

TEST(Game24Test, ErrorsNameTheByte) {
  std::vector<int64_t> leaves;
  auto v = Evaluate("(1 + 2", &leaves);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("expected ')' at byte 6"), std::string::npos) << v.status();
  v = Evaluate("12345678901 + 1", &leaves);
  EXPECT_NE(v.status().message().find("over 9 digits"), std::string::npos) << v.status();
  v = Evaluate(std::string(100, '(') + "1" + std::string(100, ')'), &leaves);
  EXPECT_NE(v.status().message().find("deeper than 64"), std::string::npos) << v.status();
  v = Evaluate("999999999 * 999999999 * 999999999 * 999999999", &leaves);
  EXPECT_NE(v.status().message().find("overflow"), std::string::npos) << v.status();
  v = Evaluate("1 / 3 + 1 / 6", &leaves);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->num, 1);
  EXPECT_EQ(v->den, 2);
  EXPECT_EQ(leaves, (std::vector<int64_t>{1, 3, 1, 6}));
}

TEST(Game24Test, SolverCountsMatchThePythonSolver) {
  int solvable = 0, total = 0;
  for (int a = 1; a <= 13; ++a) {
    for (int b = a; b <= 13; ++b) {
      for (int c = b; c <= 13; ++c) {
        for (int d = c; d <= 13; ++d) {
          ++total;
          solvable += Solvable({{a, 1}, {b, 1}, {c, 1}, {d, 1}});
        }
      }
    }
  }
  EXPECT_EQ(total, 1820);
  EXPECT_EQ(solvable, 1362);
  const std::vector<Puzzle> held = HeldOutPuzzles();
  EXPECT_EQ(held.size(), 274u);
  for (const Puzzle& p : held) EXPECT_EQ((p[0] + p[1] + p[2] + p[3]) % 5, 0);
  EXPECT_EQ(PuzzleText(held.front()), "1 1 1 12");
  EXPECT_FALSE(Solvable({{1, 1}, {1, 1}, {1, 1}, {1, 1}}));
  EXPECT_TRUE(Solvable({{1, 1}, {5, 1}, {5, 1}, {5, 1}}));
}

TEST(Game24Test, RandomBytesNeverCrash) {
  std::mt19937 rng(24);
  const std::string alphabet = "0123456789+-*/() =x\n";
  std::vector<int64_t> leaves;
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 40, ' ');
    for (char& c : s) {
      c = (rng() % 8 == 0) ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
    }
    (void)Evaluate(s, &leaves);
    (void)Check(s, {1, 2, 3, 4});
  }
}

}  // namespace
}  // namespace arbor::cli::game24
