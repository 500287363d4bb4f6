"""Module-level rewards and helpers for the integration tests (workers import the rewards by reference).

``span`` rewards record when each call started and ended in a file of their own, so a test can prove that calls
overlapped (ran in parallel) from the worker processes' own clocks instead of from a timing threshold.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def exact(completion: str, answer: str) -> float:
    """1 if the completion is the answer; 'raise' raises, 'hang' never returns, 'none' returns None."""
    if completion == "raise":
        raise ValueError("cannot score this completion")
    if completion == "hang":
        while True:  # a busy hang, like a runaway sympy computation
            pass
    if completion == "none":
        return None  # type: ignore[return-value]
    return float(completion.strip() == str(answer).strip())


def areal_exact(prompt, completions, prompt_ids, completion_ids, **data):
    """AReaL's signature and parameter names; also checks that AReaL's arguments arrive unchanged."""
    if completions == "hang":
        time.sleep(3600)
    if completions == "raise":
        raise RuntimeError("reward crashed")
    assert isinstance(prompt_ids, list) and isinstance(completion_ids, list)
    return float(completions.strip() == str(data["answer"]))


def agent_style(result, answer):
    """AReaL's agent workflows call the wrapper with keywords only: ``await wrapper(result=..., answer=...)``."""
    return float(str(result).strip() == str(answer))


def span(completion: str, span_dir: str, **_: Any) -> float:
    """Sleep for 'sleep X' seconds, recording (start, end) on the worker's clock in a file of its own."""
    start = time.time()
    if completion.startswith("sleep "):
        time.sleep(float(completion.split()[1]))
    end = time.time()
    Path(span_dir, f"{os.getpid()}-{time.monotonic_ns()}").write_text(f"{start} {end}")
    return 1.0


def verl_style(data_source, solution_str, ground_truth, extra_info=None):
    """verl's compute_score signature; the data source selects how strict the comparison is."""
    if solution_str == "hang":
        time.sleep(3600)
    if data_source == "strict":
        return float(solution_str == ground_truth)
    return float(solution_str.strip().lower() == str(ground_truth).strip().lower())


def length_bonus(completion: str) -> float:
    return min(len(completion), 10) / 10.0


def read_spans(span_dir: str | Path) -> list[tuple[float, float]]:
    spans = []
    for path in Path(span_dir).iterdir():
        start, end = path.read_text().split()
        spans.append((float(start), float(end)))
    return sorted(spans)


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The largest number of calls that were running at the same instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def hang_with_pid(prompt, completions, prompt_ids, completion_ids, pid_file):
    """AReaL signature; appends the worker's pid to pid_file, then hangs on 'hang'."""
    with open(pid_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    if completions == "hang":
        time.sleep(3600)
    return 1.0


def die_once(completion: str, marker: str) -> float:
    """The first call (no marker file yet) kills its worker process; any later call scores 1."""
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    return 1.0


def proc_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
