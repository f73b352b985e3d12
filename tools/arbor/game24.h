// Game of 24, checked with exact rational arithmetic: the judge of `arbor eval game24`. Never
// trusts the model: an answer counts only if its expression parses, uses exactly the puzzle's
// four numbers once each, and equals 24. The rules and the held-out split are the training
// script's (tools/game24.py): steps on two numbers x >= y give x + y, x - y, x * y, x / y or y / x.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::cli::game24 {

// An exact rational, always reduced, denominator > 0. Arithmetic that would overflow int64 fails.
struct Rational {
  int64_t num = 0, den = 1;
  bool operator==(const Rational& o) const { return num == o.num && den == o.den; }
  bool operator<(const Rational& o) const;
};

// The value of an arithmetic expression over non-negative integers with + - * / and parentheses
// ("(13 - 9) * (10 - 4)"; an "= ..." after it is ignored); its numbers, in order, into `leaves`.
// INVALID_ARGUMENT naming the byte offset for anything else: a stray character, unbalanced
// parentheses, a division by zero, a number over 9 digits, nesting deeper than 64, overflow.
absl::StatusOr<Rational> Evaluate(std::string_view expr, std::vector<int64_t>* leaves);

// Whether `expr` uses exactly `numbers` (a multiset) once each and equals 24.
bool Check(std::string_view expr, const std::vector<int>& numbers);

// Whether the numbers can reach 24 under the step rules (exhaustive search).
bool Solvable(const std::vector<Rational>& numbers);

using Puzzle = std::array<int, 4>;
// Every puzzle over 1..13 (ascending numbers, ascending order) that the training script held out
// (the sum is a multiple of 5) and that has a solution: the evaluation set.
std::vector<Puzzle> HeldOutPuzzles();
// "4 9 10 13"
std::string PuzzleText(const Puzzle& p);
// The four numbers (each in 1..13) of a puzzle written as PuzzleText writes it, spaces free;
// empty for anything else.
std::vector<int> ParsePuzzle(std::string_view text);

}  // namespace arbor::cli::game24
