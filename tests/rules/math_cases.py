"""Hard cases for the ``math`` reward, with what plain math-verify 0.9.0 says about each.

Each row is ``(completion, gold, expected, math_verify_0_9_0_says, comment)``:

* ``expected`` is the right score (1.0 correct, 0.0 wrong) and what rewardflow's ``math`` must return;
* ``math_verify_0_9_0_says`` is ``verify(parse(gold), parse(completion))`` with math-verify 0.9.0's defaults, as
  measured (``test_math_verify_column_is_honest`` re-measures it against the installed math-verify);
* the comment names the trap.

Golds are written as datasets ship them: most are ``$...$``-wrapped (how math-verify's README parses a gold), a
few are bare LaTeX or plain text, which is itself one of the traps (math-verify then parses only a number of it).
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    completion: str
    gold: str
    expected: float
    math_verify_0_9_0_says: bool
    comment: str


CASES: list[Case] = [
    # --- tiny magnitudes: math-verify evaluates a - b to 15 digits with chop=True, so tiny differences vanish
    Case(r"The answer is \boxed{\frac{1}{2006!}}", r"$\frac{1}{2004!}$", 0.0, True, "1/2006! is not 1/2004!"),
    Case(r"\boxed{\frac{1}{2^{98}}}", r"$\frac{1}{2^{99}}$", 0.0, True, "powers of two: 1/2^98 is not 1/2^99"),
    Case(r"\boxed{2^{-61}}", r"$2^{-60}$", 0.0, True, "negative exponent, off by one"),
    Case(r"\boxed{3^{-40}}", r"$3^{-41}$", 0.0, True, "a factor of 3 apart, both tiny"),
    Case(r"\boxed{\frac{1}{2^{64}}}", r"$\frac{1}{2^{63}}$", 0.0, True, "off by a factor of 2 at 1e-19"),
    Case(r"\boxed{10^{-20}}", r"$2\cdot 10^{-20}$", 0.0, True, "scientific magnitudes, off by a factor of 2"),
    Case(r"\boxed{e^{-50}}", r"$e^{-51}$", 0.0, True, "tiny irrational values"),
    Case(r"\boxed{2^{-100} + 2^{-200}}", r"$2^{-100}$", 0.0, True, "an extra tiny term"),
    Case(r"\boxed{\frac{1}{3^{40}}}", r"$\frac{1}{3^{40}+1}$", 0.0, True, "denominators differ by one"),
    Case(r"\boxed{\frac{1}{100!}}", r"$\frac{1}{100!+1}$", 0.0, True, "1/100! vs 1/(100!+1)"),
    Case(r"\boxed{10^{-12}}", r"$\ln(1 + 10^{-12})$", 0.0, True, "first-order approximation is not equality"),
    Case(r"\boxed{-\frac{1}{2^{70}}}", r"$\frac{1}{2^{70}}$", 0.0, True, "wrong sign at 1e-21"),
    Case(r"\boxed{x^2 + 10^{-18}}", r"$x^2$", 0.0, True, "tiny constant added to an expression"),
    Case(r"\boxed{2x + 10^{-30}}", r"$2x$", 0.0, True, "tiny constant added to a linear expression"),
    Case(r"\boxed{x = \frac{1}{2^{98}}}", r"$x = \frac{1}{2^{99}}$", 0.0, True, "tiny value inside an assignment"),
    Case(r"\boxed{\{1, 2^{-71}\}}", r"$\{1, 2^{-70}\}$", 0.0, True, "tiny value inside a set"),
    Case(r"\boxed{(1, 10^{-31})}", r"$(1, 10^{-30})$", 0.0, True, "tiny value inside a tuple"),
    # --- decimals: absolute rounding to 6 places
    Case(r"\boxed{0.0000002}", r"$0.0000001$", 0.0, True, "decimals below 1e-6 round to the same 0.000000"),
    Case(r"\boxed{0.0000029}", r"$0.0000034$", 0.0, True, "both round to 0.000003"),
    Case(r"\boxed{0.000001}", r"$0.0000014$", 0.0, True, "both round to 0.000001"),
    # --- malformed or partly parsed answers
    Case(r"The answer is $4\sqrt(2)$.", r"$4$", 0.0, True, r"\sqrt( ) mangled, only the 4 parsed"),
    Case(r"The answer is $2\sqrt(3)$.", r"$2$", 0.0, True, r"same \sqrt( ) trap with another value"),
    Case(r"\boxed{1, 3, 5, \ldots, 2n-1}", r"$1, 2, \ldots, n$", 0.0, True, r"\ldots dropped, both parse to 2"),
    Case(r"\boxed{2, 4, \ldots, 2n}", r"$1, 2, \ldots, n$", 0.0, True, "different sequences, same parse"),
    # --- plain-text golds and equations
    Case(r"The answer is x + y = 0", "x - y = 0", 0.0, True, "two plain-text equations both parse to their 0"),
    Case(r"The answer is $x + y = 1$.", "x^2 + y^2 = 1", 0.0, True, "plain-text gold parses to 1, answer's rhs is 1"),
    Case(r"\boxed{z = 3}", "y = 2x + 3", 0.0, True, "plain-text gold parses to its last number 3"),
    Case(r"\boxed{10}", r"10\sqrt{2}", 0.0, True, "bare LaTeX gold without $ is parsed as 10"),
    Case(r"\boxed{x - y = 0}", r"$0$", 0.0, True, "an equation is not the value of its right-hand side"),
    # --- hedging and unanchored answers
    Case("The answer is 70, 71, or 72.", r"$70$", 0.0, True, "hedge over three values"),
    Case("The answer is 3 or 4.", r"$3$", 0.0, True, "hedge over two values"),
    # ("Let x = 5. Then 2x = 10.", gold 10) moved to test_rules_math.py::test_unanchored_modes: its score is the
    # documented ``unanchored`` option's choice (1.0 by default, as math-verify; 0.0 with "bare" or "zero").
    Case(r"\boxed{1, 2, 2}", r"$1, 2$", 0.0, True, "a repeated element is not the same list"),
    # --- correct answers plain math-verify rejects
    Case(r"\boxed{2\,000}", r"$2000$", 1.0, False, r"thin-space thousands separator parsed as 2 \cdot 0"),
    Case(r"\boxed{1.5e3}", r"$1500$", 1.0, False, "scientific e-notation parsed as 1.5 * e * 3"),
    Case(r"\boxed{6.02e23}", r"$6.02 \times 10^{23}$", 1.0, False, "e-notation against times-ten notation"),
    Case(r"\boxed{1.5e-3}", r"$0.0015$", 1.0, False, "negative e-notation exponent"),
    # --- cases math-verify gets right, which must stay right
    Case(r"\boxed{\frac{2}{4}}", r"$\frac{1}{2}$", 1.0, True, "unreduced fraction"),
    Case(r"\boxed{0.5}", r"$\frac{1}{2}$", 1.0, True, "decimal for a fraction"),
    Case(r"\boxed{0.333333}", r"$\frac{1}{3}$", 1.0, True, "six significant digits of 1/3"),
    Case(r"\boxed{\dfrac{3}{4}}", r"$0.75$", 1.0, True, "dfrac against a decimal gold"),
    Case(r"\boxed{\frac{\sqrt{2}}{2}}", r"$\frac{1}{\sqrt{2}}$", 1.0, True, "rationalised denominator"),
    Case(r"\boxed{\sqrt{2}+\sqrt{3}}", r"$\sqrt{5+2\sqrt{6}}$", 1.0, True, "denested radical"),
    Case(r"\boxed{3\frac{1}{2}}", r"$\frac{7}{2}$", 1.0, True, "mixed number"),
    Case(r"\boxed{1,000,000}", r"$1000000$", 1.0, True, "thousands separators"),
    Case(r"\boxed{1/2004!}", r"$\frac{1}{2004!}$", 1.0, True, "the same tiny value written two ways"),
    Case(r"\boxed{\frac{2004!}{2003!}}", r"$2004$", 1.0, True, "exact factorial arithmetic"),
    Case(r"\boxed{50}", r"$50\%$", 1.0, True, "percent gold, number answer"),
    Case(r"\boxed{0.5}", r"$50\%$", 1.0, True, "percent gold, fraction answer"),
    Case(r"\boxed{5}", r"$5\text{ cm}$", 1.0, True, "units in the gold"),
    Case(r"\boxed{12}", r"$12^\circ$", 1.0, True, "degrees in the gold"),
    Case(r"\boxed{\text{Monday}}", r"$\text{Monday}$", 1.0, True, "a word answer"),
    Case(r"\boxed{\text{(B)}}", r"$B$", 1.0, True, "option letter in parentheses"),
    Case(r"\boxed{2x-y+1=0}", r"$y=2x+1$", 1.0, True, "the same line, rearranged"),
    Case(r"\boxed{x = 5}", r"$5$", 1.0, True, "assignment against a value"),
    Case(r"\boxed{x^2 - 1}", r"$(x-1)(x+1)$", 1.0, True, "expanded against factored"),
    Case(r"\boxed{\sin^2 x + \cos^2 x}", r"$1$", 1.0, True, "a trigonometric identity"),
    Case(r"\boxed{2, -2}", r"$\pm 2$", 1.0, True, r"list against \pm"),
    Case(r"\boxed{x = 3 \text{ or } x = -3}", r"$\pm 3$", 1.0, True, "both roots written as 'or'"),
    Case(r"\boxed{\{3, 1, 2\}}", r"$\{1,2,3\}$", 1.0, True, "sets ignore order"),
    Case(r"\boxed{3+4i}", r"$4i+3$", 1.0, True, "complex number, terms swapped"),
    Case(r"\boxed{[1, 2)}", r"$[1, 2)$", 1.0, True, "half-open interval"),
    Case(r"\boxed{(1, 3)}", r"$1 < x < 3$", 1.0, True, "interval against an inequality"),
    Case(r"\boxed{x \in (1, 3)}", r"$1 < x < 3$", 1.0, True, "membership against an inequality"),
    Case(r"\boxed{a = 2, b = 3}", r"$a = 2, b = 3$", 1.0, True, "a system's solution"),
    Case(
        r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}",
        r"$\begin{pmatrix}1\\\frac{4}{2}\end{pmatrix}$",
        1.0,
        True,
        "matrix",
    ),
    Case(r"The answer is $\frac{14}{3}$.", r"$\frac{14}{3}$", 1.0, True, "'the answer is' anchor with $...$"),
    Case("#### 18", r"$18$", 1.0, True, "GSM8K marker"),
    Case("I think it might be 12. Answer: 12", r"$12$", 1.0, True, "'Answer:' anchor in the middle of a line"),
    Case(r"\boxed{0.1 + 0.2}", r"$0.3$", 1.0, True, "decimal arithmetic"),
    Case(r"\boxed{1000000.3}", r"$1000000.4$", 0.0, False, "two decimals are compared exactly"),
    Case(r"\boxed{123456789012345678}", r"$123456789012345679$", 0.0, False, "large integers off by one"),
    Case(r"\boxed{100!}", r"$100! + 1$", 0.0, False, "huge values off by one"),
    Case(r"\boxed{\frac{1}{10^{10}}}", r"$\frac{1}{10^{9}}$", 0.0, False, "a factor of ten at 1e-10"),
    Case(r"\boxed{2 \cdot 10^{-7}}", r"$10^{-7}$", 0.0, False, "a factor of two at 1e-7"),
    Case(r"\boxed{5 \cdot 10^{-7}}", r"$0$", 0.0, False, "tiny is not zero"),
    Case(r"\boxed{x}", r"$x + 10^{-20}$", 0.0, False, "tiny constant against a bare symbol"),
    Case(r"\boxed{\sqrt{3} \cdot 10^{-9}}", r"$\sqrt{2} \cdot 10^{-9}$", 0.0, False, "different radicals, tiny"),
    Case(r"\boxed{-\infty}", r"$\infty$", 0.0, False, "infinities of opposite sign"),
    Case(r"\boxed{(2,1)}", r"$(1,2)$", 0.0, False, "ordered pair in the wrong order"),
    Case(r"\boxed{(1,3,2)}", r"$(1,2,3)$", 0.0, False, "tuple in the wrong order"),
    Case(r"\boxed{(1, 2]}", r"$[1,2)$", 0.0, False, "interval with the wrong ends"),
    Case(r"\boxed{a = 3, b = 2}", r"$a = 2, b = 3$", 0.0, False, "values swapped between variables"),
    Case(r"\boxed{5, 6}", r"$5$", 0.0, False, "a list where one value is expected"),
    Case(r"\boxed{5}", r"$5, 6$", 0.0, False, "one value where a list is expected"),
    Case(r"\boxed{\frac{1}{2}}", r"$\frac{1}{3}$", 0.0, False, "plainly wrong"),
]
