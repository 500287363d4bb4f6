"""Harvest other projects' math-grading test cases into ``tests/rules/peer/*.json`` (run by hand, not in CI).

Reads snapshots of the source repositories (git directories fetched beforehand, e.g. under
``/work/.mirror/<owner>+<name>/repo``) and copies their test *cases* (inputs and expected verdicts) as data: no
code is copied. Each output file names the repository, commit, paths and licence of its cases.

    python bench/harvest_peer.py /work/.mirror

What counts as a case, per source, is written next to each harvester below. Cases whose expected verdict comes
from something other than answer correctness (a format policy, a mocked scorer, a non-default verify option) are
left out, and the reason is recorded in the file's ``left_out`` list.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "rules" / "peer"


class Repo:
    def __init__(self, mirror: Path, slug: str, licence: str) -> None:
        self.slug, self.licence = slug, licence
        self.git = mirror / slug.replace("/", "+") / "repo"
        self.commit = self._git("rev-parse", "HEAD").strip()

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.git), *args], capture_output=True, text=True, check=True
        ).stdout

    def show(self, path: str) -> str:
        return self._git("show", f"HEAD:{path}")

    def ls(self, under: str) -> list[str]:
        return self._git("ls-tree", "-r", "--name-only", "HEAD", under).split()


def _parametrized(source: str, path: str) -> list[dict]:
    """``(gold, pred, expected)`` rows of every ``pytest.mark.parametrize`` whose names include gold and pred."""
    rows = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef):
            continue
        options: dict = {}
        for call in ast.walk(fn):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "compare_strings":
                for kw in call.keywords:
                    options[kw.arg] = ast.unparse(kw.value)
                for pos, arg in enumerate(call.args[2:], start=2):
                    options[f"arg{pos}"] = ast.unparse(arg)
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            if "gold" not in names or "pred" not in names:
                continue
            for el in dec.args[1].elts:
                try:
                    values = dict(zip(names, ast.literal_eval(el), strict=True))
                except ValueError:
                    continue  # computed at run time (f-strings): not a literal case
                expected = values.get("expected", values.get("result"))
                opts = {k: (repr(values[v]) if v in values else v) for k, v in options.items()}
                rows.append(
                    {
                        "origin": f"{path}:{el.lineno} ({fn.name})",
                        "gold": values["gold"],
                        "completion": values["pred"],
                        "expected": int(expected),
                        "language": values.get("language"),
                        "options": opts,
                    }
                )
    return rows


# Options of math-verify's own test helper that change the verdict away from verify()'s defaults.
_NON_DEFAULT = re.compile(r"allow_set_relation_comp|strict|precision|match_type|arg3")


def _keep_default(row: dict, left_out: list) -> bool:
    opts = {k: v for k, v in row["options"].items() if k != "match_types" and (k, v) != ("precision", "6")}
    if any(_NON_DEFAULT.search(k) for k in opts):
        left_out.append({"origin": row["origin"], "why": f"expected verdict under non-default options {opts}"})
        return False
    return True


def math_verify(mirror: Path) -> dict:
    """Every literal (gold, pred, expected) row of the test files; rows that need non-default verify options
    (precision, strict=False, allow_set_relation_comp) are left out; duplicates kept once."""
    repo = Repo(mirror, "huggingface/Math-Verify", "Apache-2.0")
    cases, left_out, seen = [], [], set()
    for path in repo.ls("tests"):
        if path.endswith(".py"):
            for row in _parametrized(repo.show(path), path):
                if not _keep_default(row, left_out):
                    continue
                key = (row["gold"], row["completion"])
                if key in seen:
                    continue
                seen.add(key)
                cases.append(row)
    return _doc(repo, ["tests/"], cases, left_out)


def lighteval(mirror: Path, exclude: set) -> dict:
    """English rows of the extractive-match tests not already in Math-Verify's suite (lighteval is its origin)."""
    repo = Repo(mirror, "huggingface/lighteval", "MIT")
    path = "tests/unit/metrics/test_extractive_match.py"
    cases, left_out, seen = [], [], set(exclude)
    for row in _parametrized(repo.show(path), path):
        if row["language"] not in (None, "en", "'en'") or "Language" in str(row["language"]):
            if "ENGLISH" not in str(row["language"]):
                left_out.append({"origin": row["origin"], "why": f"language {row['language']}"})
                continue
        if "NativeLetters" in json.dumps(row["options"]):
            continue  # multiple-choice letters, not math
        if not _keep_default(row, left_out):
            continue
        key = (row["gold"], row["completion"])
        if key in seen:
            continue
        seen.add(key)
        cases.append(row)
    return _doc(repo, [path], cases, left_out)


def nemo_skills(mirror: Path) -> dict:
    """``test_correct_examples`` pairs (expected equal) and ``test_incorrect_examples`` (expected unequal); the
    first element as the gold, the second as the model's answer; ``None`` pairs left out."""
    repo = Repo(mirror, "NVIDIA/NeMo-Skills", "Apache-2.0")
    path = "tests/test_math_equal.py"
    cases, left_out = [], []
    for fn in ast.walk(ast.parse(repo.show(path))):
        if isinstance(fn, ast.FunctionDef) and fn.name in ("test_correct_examples", "test_incorrect_examples"):
            expected = 1 if fn.name == "test_correct_examples" else 0
            for dec in fn.decorator_list:
                for el in dec.args[1].elts:
                    a, b = ast.literal_eval(el) if not isinstance(el.elts[0], ast.BinOp) else (2.5, el.elts[1].value)
                    origin = f"{path}:{el.lineno} ({fn.name})"
                    if a is None or b is None:
                        left_out.append({"origin": origin, "why": "None is not an answer"})
                        continue
                    cases.append({"origin": origin, "gold": str(a), "completion": str(b), "expected": expected})
    return _doc(repo, [path], cases, left_out)


def hendrycks(mirror: Path) -> dict:
    """``math_equivalence_test.py``: each test's ``test_in`` as the gold, ``test_out`` as the answer."""
    repo = Repo(mirror, "hendrycks/math", "MIT")
    path = "modeling/math_equivalence_test.py"
    cases = []
    for fn in ast.walk(ast.parse(repo.show(path).replace("\t", "    "))):
        if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test"):
            values, expected = {}, None
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("assertTrue", "assertFalse"):
                    expected = int(node.func.attr == "assertTrue")
            cases.append(
                {
                    "origin": f"{path}:{fn.lineno} ({fn.name})",
                    "gold": values["test_in"],
                    "completion": values["test_out"],
                    "expected": expected,
                }
            )
    return _doc(repo, [path], cases, [])


_FINAL_RE = re.compile(r"Final Answer: The final answer is \$(.*)\$\. I hope it is correct\.")


def lm_eval(mirror: Path) -> dict:
    """Minerva few-shot solutions (``minerva_math`` and ``leaderboard/math``): each solution against its own final
    answer (1) and against the next sample's answer (0), plus each solution's text before its
    ``Final Answer:`` line (the boxed answer alone) against its answer (1)."""
    repo = Repo(mirror, "EleutherAI/lm-evaluation-harness", "MIT")
    paths = ["lm_eval/tasks/minerva_math/utils.py", "lm_eval/tasks/leaderboard/math/utils.py"]
    cases: list[dict] = []
    seen: set = set()
    for path in paths:
        samples = []
        for node in ast.walk(ast.parse(repo.show(path))):
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                if "solution" in keys and "problem" in keys:
                    if not isinstance(node.values[keys.index("solution")], ast.Constant):
                        continue
                    sol = ast.literal_eval(node.values[keys.index("solution")])
                    m = _FINAL_RE.search(sol)
                    if m:
                        samples.append((node.lineno, sol, m.group(1)))
        for i, (line, sol, answer) in enumerate(samples):
            origin = f"{path}:{line}"
            if sol in seen:
                continue  # the leaderboard task repeats the Minerva prompt
            seen.add(sol)
            other = samples[(i + 1) % len(samples)][2]
            cases.append({"origin": origin, "gold": answer, "completion": sol, "expected": 1})
            cases.append(
                {"origin": origin, "gold": other, "completion": sol, "expected": 0, "note": "gold of the next sample"}
            )
            cases.append(
                {"origin": origin, "gold": answer, "completion": sol[: sol.index("\nFinal Answer")], "expected": 1}
            )
    return _doc(repo, paths, cases, [])


def qwen_math(mirror: Path) -> dict:
    """Few-shot solutions of ``evaluation/examples.py`` that state a boxed answer and/or "The answer is": the
    solution against that answer (1) and against the next solution's answer (0)."""
    repo = Repo(mirror, "QwenLM/Qwen2.5-Math", "MIT")
    path = "evaluation/examples.py"
    tree = ast.parse(repo.show(path))
    samples = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(isinstance(e, ast.Constant) for e in node.elts):
            sol = node.elts[1].value
            if not isinstance(sol, str):
                continue
            boxed = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", sol)
            said = re.findall(r"The answer is:? ([^\n]*?)\.?$", sol)
            answer = boxed[-1] if boxed else (said[-1] if said else None)
            if answer and not re.fullmatch(r"\(?[A-E]\)?", answer):
                samples.append((node.lineno, sol, answer))
    cases = []
    for i, (line, sol, answer) in enumerate(samples):
        other = samples[(i + 1) % len(samples)][2]
        cases.append({"origin": f"{path}:{line}", "gold": answer, "completion": sol, "expected": 1})
        if other.replace(" ", "") != answer.replace(" ", ""):
            cases.append(
                {
                    "origin": f"{path}:{line}",
                    "gold": other,
                    "completion": sol,
                    "expected": 0,
                    "note": "gold of the next sample",
                }
            )
    return _doc(repo, [path], cases, [])


def _functions(source: str, prefix: str) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name.startswith(prefix)]


def open_r1(mirror: Path) -> dict:
    """``test_accuracy_reward_*``: the completion's content, the solution, and the asserted reward."""
    repo = Repo(mirror, "huggingface/open-r1", "Apache-2.0")
    path = "tests/test_rewards.py"
    cases = []
    for fn in _functions(repo.show(path), "test_accuracy_reward"):
        values = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "assertEqual":
                values["expected"] = ast.literal_eval(node.args[1])
        if "completion" in values and len(values["solution"]) == 1:
            cases.append(
                {
                    "origin": f"{path}:{fn.lineno} ({fn.name})",
                    "gold": values["solution"][0],
                    "completion": values["completion"][0][0]["content"],
                    "expected": int(values["expected"]),
                }
            )
    return _doc(repo, [path], cases, [])


def rllm(mirror: Path) -> dict:
    """Math reward tests: the model response, the single string ground truth and the asserted correctness;
    tests whose verdict is a format policy (no ``</think>``, no ``\\boxed``) or a bonus are left out."""
    repo = Repo(mirror, "rllm-org/rllm", "Apache-2.0")
    path = "tests/rewards/test_math_reward.py"
    cases, left_out = [], []
    for fn in _functions(repo.show(path), "test_"):
        values: dict = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                if isinstance(node.value, ast.Dict):  # task_info: keep its literal entries
                    values[node.targets[0].id] = {
                        k.value: (ast.literal_eval(v) if isinstance(v, ast.Constant | ast.List) else ast.unparse(v))
                        for k, v in zip(node.value.keys, node.value.values, strict=True)
                        if isinstance(k, ast.Constant)
                    }
                    continue
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
            if isinstance(node, ast.Assert) and "is_correct" in ast.unparse(node):
                values["expected"] = int("not " not in ast.unparse(node))
        origin = f"{path}:{fn.lineno} ({fn.name})"
        info = values.get("task_info") or {}
        truth = info.get("ground_truth")
        if fn.name in ("test_custom_config_values", "test_math_orm_usage") or "is_correct, bool" in ast.unparse(fn):
            left_out.append({"origin": origin, "why": "several responses per test, or no asserted verdict (ORM)"})
            continue
        if "format" in fn.name or info.get("has_toolcall") or not isinstance(truth, str) or "expected" not in values:
            left_out.append({"origin": origin, "why": "verdict is a format policy, a bonus, or no single gold"})
            continue
        if info.get("problem_type") is not None and "MATH" not in str(info.get("problem_type")):
            continue
        cases.append(
            {"origin": origin, "gold": truth, "completion": values["model_response"], "expected": values["expected"]}
        )
    return _doc(repo, [path], cases, left_out)


def verl(mirror: Path) -> dict:
    """``tests/interactions/test_gsm8k_interaction.py``: the last assistant message against the ground truth,
    with the verdict the test asserts. These tests mock verl's GSM8K scorer, so only rows where the mocked
    verdict is also what verl's strict scorer gives (an answer after ``#### ``) are kept; verl has no other
    verdict-bearing math-grading tests at this commit (its reward_score tests cover code sandboxes)."""
    repo = Repo(mirror, "volcengine/verl", "Apache-2.0")
    path = "tests/interactions/test_gsm8k_interaction.py"
    cases, left_out = [], []
    for fn in ast.walk(ast.parse(repo.show(path))):
        if not isinstance(fn, ast.AsyncFunctionDef | ast.FunctionDef) or not fn.name.startswith("test_generate"):
            continue
        truth = content = verdict = None
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id == "ground_truth":
                    truth = ast.literal_eval(node.value)
                if node.targets[0].id == "messages":
                    messages = ast.literal_eval(node.value)
                    said = [m["content"] for m in messages if m["role"] == "assistant"]
                    content = said[-1] if said else None
            if isinstance(node, ast.keyword) and node.arg == "return_value":
                verdict = ast.literal_eval(node.value)
        origin = f"{path}:{fn.lineno} ({fn.name})"
        if truth is None or content is None or verdict is None:
            continue
        strict = re.findall(r"#### (-?[0-9.,]+)", content)
        if float(bool(strict) and strict[-1].replace(",", "") == truth) != verdict:
            left_out.append({"origin": origin, "why": "mocked verdict differs from verl's strict GSM8K scorer"})
            continue
        cases.append({"origin": origin, "gold": truth, "completion": content, "expected": int(verdict)})
    return _doc(repo, [path], cases, left_out)


def _doc(repo: Repo, paths: list[str], cases: list[dict], left_out: list[dict]) -> dict:
    for i, case in enumerate(cases):
        case["id"] = i
        for key in ("language", "options"):
            case.pop(key, None)
    return {
        "source": {"repo": repo.slug, "commit": repo.commit, "paths": paths, "licence": repo.licence},
        "how": "",
        "cases": cases,
        "left_out": left_out,
    }


def main() -> None:
    mirror = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror")
    OUT.mkdir(parents=True, exist_ok=True)
    mv = math_verify(mirror)
    seen = {(c["gold"], c["completion"]) for c in mv["cases"]}
    docs = {
        "math_verify": (mv, math_verify),
        "lighteval": (lighteval(mirror, seen), lighteval),
        "nemo_skills": (nemo_skills(mirror), nemo_skills),
        "hendrycks_math": (hendrycks(mirror), hendrycks),
        "lm_eval_minerva": (lm_eval(mirror), lm_eval),
        "qwen25_math": (qwen_math(mirror), qwen_math),
        "open_r1": (open_r1(mirror), open_r1),
        "rllm": (rllm(mirror), rllm),
        "verl": (verl(mirror), verl),
    }
    for name, (doc, fn) in docs.items():
        doc["how"] = " ".join((fn.__doc__ or "").split())
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(f"{name}: {len(doc['cases'])} cases, {len(doc['left_out'])} left out")


if __name__ == "__main__":
    main()
