"""Game of 24 for Arbor's embedded model: the rules, an exhaustive solver, the value labels and
the exact text the model reads and writes (the game24 preset in models/game24-moe/presets).

Rules. A state is a multiset of exact rationals, written in ascending order ("4 4 10"; a
non-integer as "p/q"). One step takes two numbers x >= y and replaces them by x + y, x - y,
x * y, x / y (y != 0) or y / x (x != 0, x != y). The puzzle is solved when the one number left
is 24. Intermediate results may be fractions (1 5 5 5 needs 1/5) or 0; never negative, which
loses no puzzle over 1..13.

Text (one step per line; the planner's step stop is the newline):

    Use the numbers and + - * / to make 24, one operation per line.
    Input: 4 9 10 13
    Steps:
    13 - 9 = 4 (left: 4 4 10)
    10 - 4 = 6 (left: 4 6)
    6 * 4 = 24 (left: 24)
    Answer: (10 - (13 - 9)) * 4 = 24

A value query is the value prompt after any step, answered with one label on its own line:
  sure        the numbers left reach 24, and at least a third of the distinct next states still
              do (with two numbers or fewer: they reach 24; after the answer line: it is right);
  likely      they reach 24, but fewer than a third of the next states still do;
  impossible  they cannot reach 24.
All three come from exhaustive search over the rules above.
"""

from fractions import Fraction
from functools import lru_cache
import itertools
import operator

PROPOSE = ("Use the numbers and + - * / to make 24, one operation per line.\n"
           "Input: {problem}\nSteps:\n")
VALUE = "Can the numbers left reach 24 (sure/likely/impossible)?\n"
ANSWER_PREFIX = "Answer:"
LABELS = ("sure", "likely", "impossible")
TARGET = Fraction(24)


def fmt(x):
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def fmt_state(state):
    return " ".join(fmt(x) for x in state)


def key(state):
    return tuple(sorted(state))


def moves(state):
    """Every distinct step from `state` (a sorted tuple): (text, i, j, result, new_state),
    where i, j index the operands x = state[i] >= y = state[j]."""
    out, seen = [], set()
    n = len(state)
    for a, b in itertools.combinations(range(n), 2):
        i, j = (b, a) if state[b] >= state[a] else (a, b)
        x, y = state[i], state[j]
        cands = [("+", x + y), ("-", x - y), ("*", x * y)]
        if y != 0:
            cands.append(("/", x / y))
        if x != 0 and x != y:
            cands.append(("/r", y / x))
        rest = [state[k] for k in range(n) if k != i and k != j]
        for op, r in cands:
            if op == "/r":
                text = f"{fmt(y)} / {fmt(x)} = {fmt(r)}"
                oi, oj = j, i
            else:
                text = f"{fmt(x)} {op} {fmt(y)} = {fmt(r)}"
                oi, oj = i, j
            if text in seen:
                continue
            seen.add(text)
            new = key(rest + [r])
            out.append((f"{text} (left: {fmt_state(new)})", oi, oj, r, new))
    return out


@lru_cache(maxsize=None)
def solvable(state):
    if len(state) == 1:
        return state[0] == TARGET
    return any(solvable(m[4]) for m in moves(state))


@lru_cache(maxsize=None)
def label(state):
    """The value label of a state (a sorted tuple)."""
    if not solvable(state):
        return "impossible"
    if len(state) <= 2:
        return "sure"
    nexts = {m[4] for m in moves(state)}
    good = sum(1 for s in nexts if solvable(s))
    return "sure" if 3 * good >= len(nexts) else "likely"


def all_puzzles():
    return [tuple(p) for p in itertools.combinations_with_replacement(range(1, 14), 4)]


def held_out(puzzle):
    """The evaluation set: puzzles whose four numbers sum to a multiple of 5."""
    return sum(puzzle) % 5 == 0


def problem_text(puzzle):
    return " ".join(str(x) for x in sorted(puzzle))


class Tracker:
    """Follows a line of steps, keeping an expression for every number left, to write the answer.
    An operand whose value appears more than once refers to the most recent result of that
    value, else to an input number."""

    def __init__(self, puzzle):
        self.items = [(Fraction(x), str(x), -1) for x in sorted(puzzle)]  # value, expr, made at
        self.step = 0

    def state(self):
        return key([v for v, _, _ in self.items])

    def _take(self, value):
        best = None
        for idx, (v, _, made) in enumerate(self.items):
            if v == value and (best is None or made > self.items[best][2]):
                best = idx
        return self.items.pop(best)

    def apply(self, x, op, y, r):
        _, ex, mx = self._take(x)
        _, ey, my = self._take(y)
        wrap = lambda e, m: f"({e})" if m >= 0 else e
        self.items.append((r, f"{wrap(ex, mx)} {op} {wrap(ey, my)}", self.step))
        self.step += 1

    def answer(self):
        assert len(self.items) == 1
        return f"{ANSWER_PREFIX} {self.items[0][1]} = 24"


OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def parse_expr(text):
    """The tree of an arithmetic expression over non-negative integers, + - * / and parentheses:
    an int leaf or (op, left, right), left-associative; None if it does not parse."""
    toks = text.replace("(", " ( ").replace(")", " ) ").split()
    at = 0

    def atom():
        nonlocal at
        if at >= len(toks):
            return None
        t = toks[at]
        at += 1
        if t == "(":
            e = sum_()
            if e is None or at >= len(toks) or toks[at] != ")":
                return None
            at += 1
            return e
        return int(t) if t.isdigit() else None

    def chain(sub, ops):
        nonlocal at
        e = sub()
        while e is not None and at < len(toks) and toks[at] in ops:
            op = toks[at]
            at += 1
            r = sub()
            e = None if r is None else (op, e, r)
        return e

    product = lambda: chain(atom, "*/")
    sum_ = lambda: chain(product, "+-")
    tree = sum_()
    return tree if at == len(toks) else None


def expr_value(tree):
    """Exact value of a parse_expr tree; None on division by zero."""
    if isinstance(tree, int):
        return Fraction(tree)
    op, a, b = tree
    x, y = expr_value(a), expr_value(b)
    if x is None or y is None or (op == "/" and y == 0):
        return None
    return OPS[op](x, y)


def expr_numbers(tree):
    return [tree] if isinstance(tree, int) else expr_numbers(tree[1]) + expr_numbers(tree[2])


def expr_text(tree):
    """The tree written as Tracker writes answers: compound operands in parentheses."""
    if isinstance(tree, int):
        return str(tree)
    op, a, b = tree
    wrap = lambda e: e if isinstance(e, int) else f"({expr_text(e)})"
    return f"{wrap(a)} {op} {wrap(b)}"


def expr_nodes(tree, path=()):
    """(path, node) of every node of a parse_expr tree in pre-order; a path is the child
    indices (1 = left, 2 = right) from the root."""
    yield path, tree
    if not isinstance(tree, int):
        yield from expr_nodes(tree[1], path + (1,))
        yield from expr_nodes(tree[2], path + (2,))


def expr_replace(tree, path, node):
    """`tree` with the node at `path` replaced by `node`."""
    if not path:
        return node
    parts = list(tree)
    parts[path[0]] = expr_replace(tree[path[0]], path[1:], node)
    return tuple(parts)


def answer_right(puzzle, line):
    """True if the answer line uses exactly the puzzle's numbers once each and makes 24."""
    if not line.startswith(ANSWER_PREFIX) or not line.endswith(" = 24"):
        return False
    tree = parse_expr(line[len(ANSWER_PREFIX):-len(" = 24")])
    return (tree is not None and sorted(expr_numbers(tree)) == sorted(puzzle)
            and expr_value(tree) == TARGET)


def parse_step(text):
    """(x, op, y, result) of a step line "x op y = r (left: ...)"."""
    lhs, rest = text.split(" = ", 1)
    x, op, y = lhs.split(" ")
    r = rest.split(" (left:", 1)[0]
    return Fraction(x), op, Fraction(y), Fraction(r)
