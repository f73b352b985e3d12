#include "game24.h"

#include <algorithm>
#include <cctype>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace arbor::cli::game24 {
namespace {

using Wide = __int128;

absl::StatusOr<Rational> Make(Wide num, Wide den) {
  if (den == 0) return absl::InvalidArgumentError("division by zero");
  if (den < 0) num = -num, den = -den;
  Wide a = num < 0 ? -num : num, b = den;
  while (b != 0) a %= b, std::swap(a, b);
  if (a > 1) num /= a, den /= a;
  constexpr Wide kMax = INT64_MAX;
  if (num > kMax || num < -kMax || den > kMax) {
    return absl::InvalidArgumentError("overflows 64-bit rationals");
  }
  return Rational{static_cast<int64_t>(num), static_cast<int64_t>(den)};
}

absl::StatusOr<Rational> Apply(char op, const Rational& x, const Rational& y) {
  switch (op) {
    case '+':
      return Make(Wide(x.num) * y.den + Wide(y.num) * x.den, Wide(x.den) * y.den);
    case '-':
      return Make(Wide(x.num) * y.den - Wide(y.num) * x.den, Wide(x.den) * y.den);
    case '*':
      return Make(Wide(x.num) * y.num, Wide(x.den) * y.den);
    default:
      return Make(Wide(x.num) * y.den, Wide(x.den) * y.num);
  }
}

// Recursive descent: sum := product (('+'|'-') product)*; product := atom (('*'|'/') atom)*;
// atom := number | '(' sum ')'.
class Parser {
 public:
  Parser(std::string_view s, std::vector<int64_t>* leaves) : s_(s), leaves_(leaves) {}

  absl::StatusOr<Rational> Run() {
    auto v = Sum(0);
    if (!v.ok()) return v.status();
    Skip();
    if (at_ < s_.size()) return Error("unexpected character");
    return v;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " at byte ", at_, " of \"", std::string(s_), "\""));
  }
  void Skip() {
    while (at_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[at_]))) ++at_;
  }
  absl::StatusOr<Rational> Sum(int depth) {
    auto v = Product(depth);
    for (;;) {
      if (!v.ok()) return v;
      Skip();
      if (at_ >= s_.size() || (s_[at_] != '+' && s_[at_] != '-')) return v;
      const char op = s_[at_++];
      auto w = Product(depth);
      if (!w.ok()) return w;
      v = Apply(op, *v, *w);
    }
  }
  absl::StatusOr<Rational> Product(int depth) {
    auto v = Atom(depth);
    for (;;) {
      if (!v.ok()) return v;
      Skip();
      if (at_ >= s_.size() || (s_[at_] != '*' && s_[at_] != '/')) return v;
      const char op = s_[at_++];
      const size_t where = at_;
      auto w = Atom(depth);
      if (!w.ok()) return w;
      if (op == '/' && w->num == 0) {
        at_ = where;
        return Error("division by zero");
      }
      v = Apply(op, *v, *w);
    }
  }
  absl::StatusOr<Rational> Atom(int depth) {
    Skip();
    if (at_ >= s_.size()) return Error("expected a number or '('");
    if (s_[at_] == '(') {
      if (depth >= 64) return Error("parentheses nested deeper than 64");
      ++at_;
      auto v = Sum(depth + 1);
      if (!v.ok()) return v;
      Skip();
      if (at_ >= s_.size() || s_[at_] != ')') return Error("expected ')'");
      ++at_;
      return v;
    }
    if (!std::isdigit(static_cast<unsigned char>(s_[at_]))) {
      return Error("expected a number or '('");
    }
    const size_t start = at_;
    int64_t n = 0;
    while (at_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[at_]))) {
      if (at_ - start >= 9) return Error("a number over 9 digits");
      n = n * 10 + (s_[at_++] - '0');
    }
    leaves_->push_back(n);
    return Rational{n, 1};
  }

  std::string_view s_;
  std::vector<int64_t>* leaves_;
  size_t at_ = 0;
};

}  // namespace

bool Rational::operator<(const Rational& o) const { return Wide(num) * o.den < Wide(o.num) * den; }

absl::StatusOr<Rational> Evaluate(std::string_view expr, std::vector<int64_t>* leaves) {
  leaves->clear();
  if (const size_t eq = expr.find('='); eq != std::string_view::npos) expr = expr.substr(0, eq);
  return Parser(expr, leaves).Run();
}

bool Check(std::string_view expr, const std::vector<int>& numbers) {
  std::vector<int64_t> leaves;
  const absl::StatusOr<Rational> v = Evaluate(expr, &leaves);
  if (!v.ok() || !(*v == Rational{24, 1})) return false;
  std::vector<int64_t> want(numbers.begin(), numbers.end());
  std::sort(want.begin(), want.end());
  std::sort(leaves.begin(), leaves.end());
  return leaves == want;
}

bool Solvable(const std::vector<Rational>& v) {
  if (v.size() == 1) return v[0] == Rational{24, 1};
  for (size_t a = 0; a < v.size(); ++a) {
    for (size_t b = a + 1; b < v.size(); ++b) {
      // x >= y: the operands of every step (see the header).
      const Rational x = v[b] < v[a] ? v[a] : v[b];
      const Rational y = v[b] < v[a] ? v[b] : v[a];
      std::vector<Rational> rest;
      for (size_t k = 0; k < v.size(); ++k) {
        if (k != a && k != b) rest.push_back(v[k]);
      }
      std::vector<absl::StatusOr<Rational>> results = {Apply('+', x, y), Apply('-', x, y),
                                                       Apply('*', x, y)};
      if (y.num != 0) results.push_back(Apply('/', x, y));
      if (x.num != 0) results.push_back(Apply('/', y, x));
      for (const auto& r : results) {
        if (!r.ok()) continue;
        std::vector<Rational> next = rest;
        next.push_back(*r);
        if (Solvable(next)) return true;
      }
    }
  }
  return false;
}

std::vector<Puzzle> HeldOutPuzzles() {
  std::vector<Puzzle> out;
  for (int a = 1; a <= 13; ++a) {
    for (int b = a; b <= 13; ++b) {
      for (int c = b; c <= 13; ++c) {
        for (int d = c; d <= 13; ++d) {
          if ((a + b + c + d) % 5 != 0) continue;
          if (Solvable({{a, 1}, {b, 1}, {c, 1}, {d, 1}})) out.push_back({a, b, c, d});
        }
      }
    }
  }
  return out;
}

std::string PuzzleText(const Puzzle& p) { return absl::StrJoin(p, " "); }

std::vector<int> ParsePuzzle(std::string_view text) {
  std::vector<int> numbers;
  for (absl::string_view w :
       absl::StrSplit(absl::string_view(text.data(), text.size()), ' ', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(w, &v) || v < 1 || v > 13) return {};
    numbers.push_back(v);
  }
  return numbers.size() == 4 ? numbers : std::vector<int>{};
}

}  // namespace arbor::cli::game24
