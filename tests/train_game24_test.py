#!/usr/bin/python3
"""Checks of the training data's slips (tools/train_game24.py --checks) and of the Python answer
judge they rely on, against independent arithmetic (Python's own evaluation of the expression
over exact fractions)."""

import ast
import os
import random
import sys
import unittest
from fractions import Fraction

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import game24 as g  # noqa: E402
import train_game24 as t  # noqa: E402


def independent_value(expr):
    """The expression evaluated by Python's parser over Fractions, or None."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return Fraction(n.value)
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if a is None or b is None:
                return None
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, ast.Div):
                return None if b == 0 else a / b
        return None

    return ev(tree)


class AnswerJudgeTest(unittest.TestCase):
    def test_known_answers(self):
        self.assertTrue(g.answer_right((4, 9, 10, 13), "Answer: (10 - (13 - 9)) * 4 = 24"))
        self.assertTrue(g.answer_right((1, 5, 5, 5), "Answer: (5 - (1 / 5)) * 5 = 24"))
        self.assertFalse(g.answer_right((4, 9, 10, 13), "Answer: (10 - (13 - 9)) * 5 = 24"))
        self.assertFalse(g.answer_right((1, 1, 1, 12), "Answer: (12 / 1) * (1 / 1) = 24"))
        for bad in ("Answer: (1 + 2 = 24", "Answer: 1 + + 2 = 24", "Answer: = 24", "24",
                    "Answer: 4 / (1 - 1) * 6 * 1 = 24"):
            self.assertFalse(g.answer_right((1, 1, 4, 6), bad), bad)

    def test_matches_independent_arithmetic(self):
        rng = random.Random(5)
        for _ in range(300):
            p = tuple(sorted(rng.randint(1, 13) for _ in range(4)))
            steps, _, answer = t.play(p, rng, solve=g.solvable(g.key(map(Fraction, p))))
            if not answer:
                continue
            self.assertTrue(g.answer_right(p, answer), answer)
            expr = answer[len(g.ANSWER_PREFIX) + 1:-len(" = 24")]
            self.assertEqual(independent_value(expr), g.TARGET, answer)


class StepExpressionsTest(unittest.TestCase):
    def test_each_step_carries_the_expression_of_its_number(self):
        rng = random.Random(11)
        t.STEP_EXPRESSIONS = True
        try:
            for _ in range(200):
                p = tuple(sorted(rng.randint(1, 13) for _ in range(4)))
                steps, _, answer = t.play(p, rng, solve=True)
                for text in steps:
                    _, _, _, r = g.parse_step(text)  # the step format still parses
                    expr = text[text.rindex(" [") + 2:-1]
                    self.assertEqual(independent_value(expr), r, text)
                if answer:
                    self.assertEqual(answer, f"{g.ANSWER_PREFIX} {expr} = 24")
        finally:
            t.STEP_EXPRESSIONS = False


class SlipsTest(unittest.TestCase):
    def test_slipped_steps_are_never_legal_steps(self):
        rng = random.Random(7)
        for _ in range(400):
            p = tuple(sorted(rng.randint(1, 13) for _ in range(4)))
            _, states, _ = t.play(p, rng, solve=False)
            for d in range(3):
                legal = {m[0] for m in g.moves(states[d])}
                slip = t.slipped_step(states[d], d == 2, rng)
                self.assertNotIn(slip, legal, (states[d], slip))
                x, op, y, r = g.parse_step(slip)  # still in the step format
                self.assertIn(op, "+-*/")

    def test_wrong_answers_are_wrong_by_independent_arithmetic(self):
        rng = random.Random(9)
        made = 0
        for _ in range(300):
            p = tuple(sorted(rng.randint(1, 13) for _ in range(4)))
            if not g.solvable(g.key(map(Fraction, p))):
                continue
            _, _, answer = t.play(p, rng, solve=True)
            wrong = t.wrong_answer(p, answer, rng)
            if wrong is None:
                continue
            made += 1
            expr = wrong[len(g.ANSWER_PREFIX) + 1:-len(" = 24")]
            nums = sorted(int(x) for x in expr.replace("(", " ").replace(")", " ").split()
                          if x.isdigit())
            self.assertTrue(independent_value(expr) != g.TARGET or nums != sorted(p), wrong)
        self.assertGreater(made, 200)

    def test_slips_train_only_their_label(self):
        class FakeSp:
            def encode(self, text):
                return [ord(c) % 500 + 10 for c in text]

            def piece_to_id(self, piece):
                return 3

        enc = t.Encoder(FakeSp())
        rng = random.Random(3)
        ids, tgt, branch, cut, pos = t.build_row(enc, (4, 9, 10, 13), rng, True, checks=1.0)
        value_first = enc.line(g.VALUE[:-1])[0]
        sides = sorted(set(branch) - {0})
        self.assertGreaterEqual(len(sides), 4 + 3)  # a value per line, a slip per step
        slips = 0
        for b in sides:
            at = [i for i, x in enumerate(branch) if x == b]
            targets = [tgt[i] for i in at if tgt[i] != -100]
            # Only the label and its newline are targets, never the slipped line or the prompt.
            written = {lab: enc.line(lab) + [enc.nl] for lab in g.LABELS}
            self.assertIn(targets, list(written.values()), b)
            if ids[at[0]] != value_first:  # a slipped line first: labelled impossible
                slips += 1
                self.assertEqual(targets, written["impossible"])
            self.assertEqual(pos[at[0]], cut[b])  # placed right after its cut on the main line
        self.assertGreaterEqual(slips, 3)


if __name__ == "__main__":
    unittest.main()
