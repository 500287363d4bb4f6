"""Reading a row's tests, whatever dataset they come from, into one :class:`Suite`.

Recognised columns, first match wins:

==================================================  =========  ==============================================
columns                                             kind       from
==================================================  =========  ==============================================
``test`` + ``entry_point``                          assert     HumanEval (``check(candidate)``)
``test_list`` (+ ``test_setup_code``, imports)      assert     MBPP: each assert line is one test
``tests`` as a list of strings                      assert     generic
``input_output`` (JSON text or object)              stdio/call APPS (``fn_name`` makes it call-based)
``public_tests`` / ``private_tests`` /              stdio      CodeContests (``{"input": [...], "output":``
``generated_tests``                                            ``[...]}``)
``public_test_cases`` / ``private_test_cases``      stdio/call LiveCodeBench (``testtype``; ``fn_name`` or
                                                               ``metadata.func_name`` for functional tests)
``tests`` as ``{"inputs", "outputs", "fn_name"?}``  stdio/call generic
==================================================  =========  ==============================================

LiveCodeBench functional inputs are one JSON value per line (one per argument), as in its own runner; its
compressed private tests must be decompressed by the caller first. A row with none of these is a
:class:`~rewardflow.errors.InputError`: the engine reports ``status=error``, never a 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardflow.errors import InputError

__all__ = ["Suite", "suite_from_row"]


@dataclass(frozen=True)
class Suite:
    """The tests of one problem. ``tests`` (assert kind) or ``inputs``/``outputs`` (stdio and call kinds)."""

    kind: str  # "assert", "stdio" or "call"
    tests: tuple[str, ...] = ()
    setup: str = ""
    inputs: tuple[Any, ...] = ()
    outputs: tuple[Any, ...] = ()
    fn_name: str | None = None
    trusted: str = ""  # the problem's own code (HumanEval's prompt), run next to the tests, not the program
    entry: str | None = None  # the program's function the tests call (HumanEval's entry_point)

    def __len__(self) -> int:
        return len(self.tests) if self.kind == "assert" else len(self.inputs)


def _json(value: Any, column: str) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"column {column!r} is not valid JSON: {exc}") from exc
    return value


def _lcb_args(text: Any) -> list[Any]:
    if isinstance(text, list):
        return text
    return [json.loads(line) for line in str(text).split("\n") if line.strip()]


def _io_suite(inputs: Sequence[Any], outputs: Sequence[Any], fn_name: str | None, column: str) -> Suite:
    if len(inputs) != len(outputs):
        raise InputError(f"column {column!r}: {len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise InputError(f"column {column!r} holds no test cases")
    if fn_name:
        args = tuple(a if isinstance(a, list) else [a] for a in inputs)
        return Suite("call", inputs=args, outputs=tuple(outputs), fn_name=str(fn_name))
    return Suite(
        "stdio",
        inputs=tuple(_text(i) for i in inputs),
        outputs=tuple(_text(o) for o in outputs),
    )


def _text(value: Any) -> str:
    if isinstance(value, list):  # APPS sometimes stores lines as a list
        return "\n".join(str(v) for v in value)
    return str(value)


def suite_from_row(row: Mapping[str, Any]) -> Suite:
    """The :class:`Suite` a row describes (see the module docstring); raises InputError when it has none."""
    if row.get("test") and row.get("entry_point"):
        entry = str(row["entry_point"])
        return Suite(
            "assert", tests=(f"{row['test']}\ncheck({entry})\n",), trusted=str(row.get("prompt") or ""), entry=entry
        )
    if row.get("test_list"):
        setup = "\n".join([*list(row.get("test_imports") or []), row.get("test_setup_code") or ""])
        return Suite("assert", tests=tuple(str(t) for t in row["test_list"]), setup=setup.strip())
    tests = row.get("tests")
    if isinstance(tests, (list, tuple)) and tests and all(isinstance(t, str) for t in tests):
        return Suite("assert", tests=tuple(tests))
    if row.get("input_output"):
        io = _json(row["input_output"], "input_output")
        return _io_suite(
            io.get("inputs", []), io.get("outputs", []), io.get("fn_name") or row.get("fn_name"), "input_output"
        )
    contests = [row[c] for c in ("public_tests", "private_tests", "generated_tests") if row.get(c)]
    if contests:
        inputs: list[Any] = []
        outputs: list[Any] = []
        for block in contests:
            block = _json(block, "public_tests")
            inputs += list(block.get("input", []))
            outputs += list(block.get("output", []))
        return _io_suite(inputs, outputs, None, "public_tests")
    cases = [c for col in ("public_test_cases", "private_test_cases") for c in (_json(row.get(col) or [], col) or [])]
    if cases:
        metadata = _json(row.get("metadata") or {}, "metadata")
        fn_name = row.get("fn_name") or (metadata.get("func_name") if isinstance(metadata, dict) else None)
        functional = [c for c in cases if c.get("testtype") == "functional"]
        if functional:
            if not fn_name:
                raise InputError("functional LiveCodeBench tests need fn_name or metadata.func_name")
            return Suite(
                "call",
                inputs=tuple(_lcb_args(c["input"]) for c in functional),
                outputs=tuple(_json(c["output"], "output") for c in functional),
                fn_name=str(fn_name),
            )
        return _io_suite([c["input"] for c in cases], [c["output"] for c in cases], None, "public_test_cases")
    if isinstance(tests, Mapping):
        return _io_suite(
            tests.get("inputs", []), tests.get("outputs", []), tests.get("fn_name") or row.get("fn_name"), "tests"
        )
    raise InputError(
        "no tests in the row: expected test+entry_point, test_list, input_output, public_tests, "
        "public_test_cases or tests"
    )
