"""Per-reward throughput of the built-in rules: 10,000 samples each, Engine(workers=2) vs. the sequential baseline.

Inputs are generated from the packaged GSM8K solutions (real chains of thought, ~300 characters), so every
reward sees realistic text; the math-style rows get seeded LaTeX answers (fractions, radicals, tuples,
polynomials) so the math path parses LaTeX instead of taking the plain-number shortcut. Rows are unique, so no
parse cache favours either side.

Baselines, run in this process on the same rows, one row at a time:

* ``gsm8k``, ``math``, ``geometry3k``: plain math-verify, ``verify(parse(gold), parse(completion))`` (what
  AReaL's and most trainers' math rewards call);
* every other reward: the same rewardflow function called sequentially in-process (there is no other
  reference implementation to compare with).

Ours: ``Engine(reward, workers=2)`` after a 200-row warm-up (worker start and imports excluded), and
``Engine(reward, kind="inline")`` (same function through the engine, one core, no processes). The three runs
are interleaved over ``--rounds`` slices of the rows, so a burst of load from elsewhere on the machine hits all
three alike; the 1-minute load average is printed before and after.

    cd bench && PYTHONPATH=.. python p_rules.py [--n 10000] [--only math,gsm8k]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from collections.abc import Callable
from typing import Any

from _common import gsm8k_rows, machine, table, timed

from rewardflow import Engine
from rewardflow.registry import resolve
from rewardflow.rules import BUILTINS
from rewardflow.rules.math import gsm8k_gold

PARAMS: dict[str, dict[str, Any]] = {
    "format": {},
    "length": {"target": 60, "tolerance": 10, "unit": "tokens"},
    "overlong": {"max_length": 120, "cache": 30},
    "repetition": {"ngram": 3},
    "json": {"schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}},
}
MATH_VERIFY_BASELINE = {"gsm8k", "math", "geometry3k"}


def _latex_pair(rng: random.Random) -> tuple[str, str]:
    """A (gold, answer) pair in one of several MATH-like shapes; about a third are wrong."""
    a, b, k = rng.randint(1, 60), rng.randint(2, 40), rng.randint(2, 9)
    wrong = rng.random() < 0.35
    shape = rng.randrange(5)
    if shape == 0:
        return f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{k * a + wrong}}}{{{k * b}}}"
    if shape == 1:
        return f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b + wrong}}}"
    if shape == 2:
        return f"({a}, {b})", f"({a}, {b + wrong})" if rng.random() < 0.5 else f"\\left({a},{b + wrong}\\right)"
    if shape == 3:
        return f"x^2 + {a + b}x + {a * b}", f"(x+{a})(x+{b + wrong})"
    return f"{a}", f"{a + wrong}" if rng.random() < 0.5 else f"\\frac{{{2 * (a + wrong)}}}{{2}}"


def build_rows(reward: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    base = gsm8k_rows()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        src = base[i % len(base)]
        cot = src["completion"].rsplit("\n", 1)[0] + f" (variant {i})"
        gold = gsm8k_gold(src["answer"])
        ids = list(range(len(src["completion"].split()) + rng.randint(0, 80)))
        row: dict[str, Any] = {"prompt": src["prompt"], "completion_ids": ids}
        if reward == "gsm8k":
            row.update(completion=src["completion"] + f"\n(variant {i})", answer=src["answer"])
        elif reward in ("math", "geometry3k"):
            latex_gold, answer = _latex_pair(rng)
            row.update(completion=f"{cot}\nSo the answer is $\\boxed{{{answer}}}$.", answer=latex_gold)
        elif reward == "clevr_count":
            count = rng.randint(0, 12)
            row.update(completion=f"{cot}\nThe number of objects is [{count + (rng.random() < 0.3)}].", answer=count)
        elif reward == "multiple_choice":
            letter = "ABCD"[rng.randrange(4)]
            said = letter if rng.random() < 0.6 else "ABCD"[rng.randrange(4)]
            row.update(completion=f"{cot}\nAnswer: ({said}) {gold}", answer=letter)
        elif reward in ("exact_match", "f1"):
            words = src["prompt"].split()
            start = rng.randrange(max(1, len(words) - 4))
            gold_text = " ".join(words[start : start + 3])
            said = gold_text if rng.random() < 0.5 else " ".join(words[start + 1 : start + 5])
            row.update(completion=f"{cot}\nAnswer: {said}", answer=[gold_text, gold_text.lower()])
        elif reward == "format":
            broken = rng.random() < 0.3
            row.update(completion=f"<think>{cot}</think>\n<answer>{gold}</answer>" + ("\nPS" if broken else ""))
        elif reward == "repetition":
            repeat = " ".join([cot.split(".")[0]] * rng.randint(1, 4))
            row.update(completion=f"{cot} {repeat}")
        elif reward == "json":
            body = json.dumps({"answer": int(gold) if gold.lstrip("-").isdigit() else gold, "steps": cot[:80]})
            row.update(completion=f"```json\n{body}\n```" if rng.random() < 0.8 else body[:-1])
        else:  # length, overlong
            row.update(completion=cot)
        rows.append(row)
    return rows


def math_verify_baseline(reward: str) -> Callable[[list[dict[str, Any]]], list[float]]:
    from math_verify import parse, verify

    def gold(row: dict[str, Any]) -> str:
        return gsm8k_gold(row["answer"]) if reward == "gsm8k" else f"${row['answer']}$"

    return lambda rows: [float(verify(parse(gold(r)), parse(r["completion"]))) for r in rows]


def sequential_baseline(fn: Callable[..., Any]) -> Callable[[list[dict[str, Any]]], list[float]]:
    from rewardflow.reward import Reward, invoke
    from rewardflow.types import Sample

    rw = Reward.wrap(fn, kind="inline")
    return lambda rows: [invoke(rw, Sample.from_row(r)).value for r in rows]  # type: ignore[misc]


def bench(reward: str, n: int, rounds: int) -> tuple[str, ...]:
    """Time the three runs on the same rows, interleaved in ``rounds`` slices so load drift hits all alike."""
    rows = build_rows(reward, n)
    fn = resolve(reward, PARAMS.get(reward))
    if reward in MATH_VERIFY_BASELINE:
        baseline, base_label = math_verify_baseline(reward), "math-verify"
    else:
        baseline, base_label = sequential_baseline(fn), "same fn"
    t_base = t_pool = t_inline = 0.0
    values: list[float | None] = []
    not_ok = 0
    with Engine({reward: fn}, workers=2, timeout=10) as engine, Engine({reward: fn}, kind="inline") as inline:
        engine.score(build_rows(reward, 200, seed=1))  # start workers, import sympy
        inline.score(build_rows(reward, 20, seed=1))
        for k in range(rounds):
            part = rows[k * n // rounds : (k + 1) * n // rounds]
            _, dt = timed(lambda part=part: baseline(part))
            t_base += dt
            results, dt = timed(lambda part=part: engine.score(part))
            t_pool += dt
            inline_results, dt = timed(lambda part=part: inline.score(part))
            t_inline += dt
            assert [r.value for r in results] == [r.value for r in inline_results]
            values += [r.value for r in results]
            not_ok += sum(not r.ok for r in results)
    mean = sum(v or 0.0 for v in values) / n
    return (
        reward,
        base_label,
        f"{n / t_base:,.0f}",
        f"{n / t_pool:,.0f}",
        f"{t_base / t_pool:.2f}x",
        f"{n / t_inline:,.0f}",
        f"{mean:.3f}",
        str(not_ok),
    )


def main() -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--only", default="")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices (evens out load drift)")
    args = parser.parse_args()
    # every built-in rule once (the AReaL-named aliases run the same code)
    names = [entry.name for entry in BUILTINS if not entry.name.endswith("_reward_fn")]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    header = ("reward", "baseline", "baseline rows/s", "2 workers rows/s", "ratio", "inline rows/s", "mean", "not ok")
    out = [header]
    load_before = os.getloadavg()
    for name in names:
        out.append(bench(name, args.n, args.rounds))
        print(f"done {name}", flush=True)
    load_after = os.getloadavg()
    print(f"per-reward throughput, {args.n:,} samples each, {machine()}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute)")
    print(table(out))


if __name__ == "__main__":
    main()
