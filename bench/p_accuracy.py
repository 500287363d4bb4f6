"""Accuracy of rewardflow's ``math`` and plain math-verify, side by side, on other projects' test suites.

The suites are the cases harvested from nine public repositories into ``tests/rules/peer/*.json`` (see
``bench/harvest_peer.py``; each file names its repository, commit, paths and licence). For every case both
verifiers score the same completion against the same gold; a verdict is right when it equals the case's
expected verdict. Wrong 1.0s (a wrong answer accepted: the reward-hacking direction) and wrong 0.0s (a right
answer rejected) are counted apart; an ``error`` from rewardflow (a gold it cannot parse) counts as wrong and
is listed.

    PYTHONPATH=. python bench/p_accuracy.py [--show-wrong] [--markdown]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.rules.peer.suites import SUITES, load, math_verify_says, rewardflow_says


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show-wrong", action="store_true", help="print every case either verifier gets wrong")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--unanchored", default=None, help="math's unanchored option (default: its default)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every parse failure
    rows, totals = [], [0] * 7
    for suite in SUITES:
        source, cases = load(suite)
        ours_right = mv_right = ours_w1 = ours_w0 = mv_w1 = mv_w0 = 0
        for case in cases:
            ours, reason = rewardflow_says(case, args.unanchored)
            mv = math_verify_says(case)
            ok = ours is not None and ours == case.expected
            ours_right += ok
            mv_right += mv == case.expected
            ours_w1 += ours == 1.0 and case.expected == 0
            ours_w0 += (ours is None or ours == 0.0) and case.expected == 1
            mv_w1 += mv == 1.0 and case.expected == 0
            mv_w0 += mv == 0.0 and case.expected == 1
            if args.show_wrong and (not ok or mv != case.expected):
                print(f"[{suite}#{case.id} {case.origin}] expected {case.expected} ours {ours} mv {mv}")
                print(f"    gold={case.gold[:120]!r}\n    pred={case.completion[-160:]!r}\n    reason={reason[:160]}")
        counts = [len(cases), ours_right, mv_right, ours_w1, ours_w0, mv_w1, mv_w0]
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
        rows.append((f"{source['repo']}", *counts))
    rows.append(("**total**", *totals))
    head = ("suite", "cases", "rewardflow right", "math-verify right", "rf wrong 1.0", "rf wrong 0.0",
            "mv wrong 1.0", "mv wrong 0.0")  # fmt: skip
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
    else:
        print(" ".join(f"{h:>18}" for h in head))
        for r in rows:
            print(" ".join(f"{x!s:>18}" for x in r))


if __name__ == "__main__":
    main()
