"""The ``rewardflow`` command line: ``score``, ``list``, ``demo`` (and ``eval``).

Contract of ``score``: exactly one output line per input line, in input order. A line that is not a JSON object,
lacks the completion, or is not valid UTF-8 becomes an error row naming its line number; nothing is dropped.
Results go to ``-o`` (or stdout); the progress bar, warnings and the summary go to stderr, so stdout stays clean
JSONL when piped.

What users do and what happens (each is a test in ``tests/test_cli_user.py``):

* Input is streamed in one pass: a file, ``-`` for stdin, a pipe or ``<(...)``; gzip is recognised by its bytes.
* ``-o`` is written to a temporary file in its folder and renamed into place at the end: a run that fails never
  truncates an existing file, ``-o`` naming the input is refused, and an interrupted run (Ctrl-C, SIGTERM) keeps
  the rows written so far in ``<output>.partial`` and says so on stderr.
* Errors are one line on stderr (``--debug`` anywhere on the command line adds the traceback). Exit codes:
  0 success, 1 rows not ok under ``--strict`` (or agreement below ``--min-agreement``), 2 usage or configuration
  error (found before any worker starts), 3 an unexpected internal error, 130 interrupted, 141 stdout closed
  by the reader (``| head``).
* Rewards are imported from the current directory too, as ``python -m`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rewardflow.errors import ConfigError, RewardflowError
from rewardflow.server.command import serve as _serve_command
from rewardflow.types import RewardResult, Sample, Status

EXAMPLES = """Examples:

  rewardflow score rollouts.jsonl -r gsm8k -o scored.jsonl

  cat rollouts.jsonl.gz | rewardflow score - -r spec.yaml > scored.jsonl

  rewardflow score rollouts.jsonl -r my_pkg.rewards:brevity --strict

  rewardflow eval --demo

  rewardflow list

Exit codes: 0 ok, 1 rows not ok under --strict, 2 usage or config error, 3 internal error, 130 interrupted."""

app = typer.Typer(
    name="rewardflow",
    help="Score RL rollouts with rule rewards, LLM judges and reward models: never silently wrong.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False)

_OUTPUT_KEYS = ("reward", "status", "reason", "components", "latency_ms")
_BATCH = 512
EXIT_STRICT = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class _State:
    """Per-invocation flags (``--debug``), set by :func:`main` or the app callback."""

    debug = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C."""


class EncodingErrors(str, Enum):
    strict = "strict"
    replace = "replace"


class ExecutorName(str, Enum):
    process = "process"
    ray = "ray"


ExecutorOption = Annotated[
    ExecutorName | None,
    typer.Option(help="Where sync rewards run: process (worker processes here) or ray (Ray actors); default: spec's."),
]
RayAddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster for --executor ray: auto, ray://host:10001; unset: start a local one.")
]


def _error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


@contextmanager
def _handled() -> Iterator[None]:
    """Turn a :class:`RewardflowError` into one line on stderr and exit code 2 (traceback with ``--debug``)."""
    try:
        yield
    except RewardflowError as exc:
        if _State.debug:
            traceback.print_exc()
        _error(str(exc))
        raise typer.Exit(EXIT_USAGE) from exc


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"rewardflow {version('rewardflow')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also accepted after the command).")] = False,
) -> None:
    """Score RL rollouts with rule rewards, LLM judges and reward models: never silently wrong."""
    _State.debug = _State.debug or debug


def build_engine(
    reward: str,
    workers: int | None,
    timeout: float | None,
    columns: Any = None,
    executor: str | None = None,
    ray_address: str | None = None,
) -> Any:
    """An engine for ``--reward``: a spec file (``.yaml``/``.yml``) or a reward name / import path."""
    from rewardflow.engine import Engine
    from rewardflow.reward import check_timeout
    from rewardflow.spec import load_spec

    check_timeout(timeout, "--timeout")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if reward.endswith((".yaml", ".yml")):
        spec = load_spec(reward)
        updates: dict[str, Any] = {}
        if workers is not None:
            updates["workers"] = workers
        if timeout is not None:
            updates["timeout"] = timeout
        if executor is not None:
            updates["executor"] = executor
        if ray_address is not None:
            updates["ray_address"] = ray_address
        if updates:  # model_copy skips validation: the values were checked above
            spec = spec.model_copy(update=updates)
            spec.model_fields_set.update(updates)
        return Engine(spec, columns=columns)
    options: dict[str, Any] = {"workers": workers if workers is not None else 2}
    if timeout is not None:
        options["timeout"] = timeout
    if executor is not None:
        options["executor"] = executor
    options["ray_address"] = ray_address
    return Engine(reward, columns=columns, **options)


def read_rows(
    lines: Iterable[Any], prompt_key: str, completion_key: str
) -> Iterator[tuple[dict[str, Any] | None, Any]]:
    """Yield ``(input_object_or_None, Sample_or_error_result)`` per line; never raises on bad input.

    ``lines`` holds :class:`rewardflow.jsonl.Line` items (or plain strings, numbered from 1).
    """
    from rewardflow.errors import InputError
    from rewardflow.jsonl import Line
    from rewardflow.types import json_type

    for number, item in enumerate(lines, start=1):
        line = item if isinstance(item, Line) else Line(number, item)
        number = line.number
        if line.text is None:
            yield None, RewardResult(None, Status.ERROR, f"line {number}: {line.problem}")
            continue
        try:
            obj = json.loads(line.text)
        except json.JSONDecodeError as exc:
            yield (
                None,
                RewardResult(None, Status.ERROR, f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})"),
            )
            continue
        if not isinstance(obj, dict):
            yield None, RewardResult(None, Status.ERROR, f"line {number}: expected a JSON object, got {json_type(obj)}")
            continue
        try:
            yield obj, Sample.from_row(obj, prompt_key=prompt_key, completion_key=completion_key)
        except InputError as exc:
            yield obj, RewardResult(None, Status.ERROR, f"line {number}: {exc}")


def output_row(obj: dict[str, Any] | None, result: RewardResult, line: int) -> dict[str, Any]:
    """The input object plus the result columns; a colliding input column is kept as ``input_<name>``."""
    out: dict[str, Any] = {} if obj is None else dict(obj)
    if obj is None:
        out["line"] = line
    for key in _OUTPUT_KEYS:
        if key in out:
            out[f"input_{key}"] = out.pop(key)
    out.update(result.to_dict())
    return out


class Summary:
    """Running totals for the end-of-run table (and the interruption notice)."""

    def __init__(self) -> None:
        self.rows = 0
        self.read = 0
        self.by_status: dict[str, int] = {s.value: 0 for s in Status}
        self.values: list[float] = []
        self.latencies: list[float] = []
        self.start = time.perf_counter()

    def add(self, result: RewardResult) -> None:
        self.rows += 1
        self.by_status[result.status.value] += 1
        if result.value is not None:
            self.values.append(result.value)
        if result.latency > 0:
            self.latencies.append(result.latency)

    def table(self, title: str = "rewardflow score") -> Table:
        elapsed = time.perf_counter() - self.start
        lat = sorted(self.latencies)

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))] * 1000:.2f} ms" if lat else "-"

        table = Table(title=title, show_header=False)
        table.add_row("rows", str(self.rows))
        mean = sum(self.values) / len(self.values) if self.values else float("nan")
        table.add_row("mean reward (ok rows)", f"{mean:.4f}")
        for status, count in self.by_status.items():
            table.add_row(f"status {status}", str(count))
        table.add_row("latency p50 / p99", f"{pct(0.50)} / {pct(0.99)}")
        table.add_row("throughput", f"{self.rows / elapsed:.1f} rows/s ({elapsed:.2f} s)" if elapsed > 0 else "-")
        return table


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _with_line(result: RewardResult, line: int) -> RewardResult:
    """A non-ok result's reason prefixed with its input line (reasons from rewards carry none)."""
    if result.status is Status.OK or (result.reason or "").startswith(f"line {line}:"):
        return result
    return dataclasses.replace(result, reason=f"line {line}: {result.reason or 'no reason given'}")


def score_stream(
    engine: Any,
    lines: Iterable[Any],
    out: IO[str],
    *,
    total: int | None,
    prompt_key: str,
    completion_key: str,
    summary: Summary,
    description: str = "scoring",
) -> None:
    """Score JSONL lines in batches and write one output line per input line, in order.

    Before the first batch is scored (so before any worker starts), the columns of that batch are checked
    against what the rewards require (:meth:`Engine.check_columns`): a parameter no row provides is a
    :class:`ConfigError`, not an error on every row.
    """
    with _progress() as progress:
        task = progress.add_task(description, total=total)
        batch: list[tuple[dict[str, Any] | None, Any]] = []
        line = 0
        checked = False

        def flush() -> None:
            nonlocal line, checked
            samples = [item for _, item in batch if isinstance(item, Sample)]
            if not checked and samples:
                columns: set[str] = set()
                for sample in samples:
                    columns.update(sample.row)
                engine.check_columns(columns)
                checked = True
            scored = iter(engine.score(samples)) if samples else iter(())
            results: list[RewardResult] = []
            text: list[str] = []
            for obj, item in batch:
                line += 1
                result = _with_line(next(scored), line) if isinstance(item, Sample) else item
                results.append(result)
                text.append(json.dumps(output_row(obj, result, line), ensure_ascii=False) + "\n")
            out.write("".join(text))  # one write per batch: an interruption never splits a batch's count
            out.flush()
            for result in results:
                summary.add(result)
            progress.advance(task, len(batch))
            batch.clear()

        for pair in read_rows(lines, prompt_key, completion_key):
            summary.read += 1
            batch.append(pair)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()


def _check_paths(input: str, output: Path | None) -> None:
    from rewardflow.jsonl import same_file

    if output is not None and same_file(input, output):
        raise ConfigError(f"--output {str(output)!r} is the input file; write the results to another file")


def _name(executor: ExecutorName | None) -> str | None:
    return None if executor is None else executor.value


def _timeout_option(value: float | None) -> float | None:
    from rewardflow.reward import check_timeout

    try:
        check_timeout(value, "--timeout")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).split(": ", 1)[-1]) from exc
    return value


@app.command(epilog=EXAMPLES)
def score(
    input: Annotated[str, typer.Argument(help="JSONL input (.jsonl, .jsonl.gz, or - for stdin): one object per line.")],
    reward: Annotated[str, typer.Option("--reward", "-r", help="Reward name, import path, or spec file (.yaml).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output JSONL, written atomically (default: stdout).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Per-call timeout in seconds (finite, > 0).", callback=_timeout_option)
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes for sync rewards (>= 1).")] = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    prompt_key: Annotated[str, typer.Option(help="Column holding the prompt.")] = "prompt",
    completion_key: Annotated[str, typer.Option(help="Column holding the completion.")] = "completion",
    strict: Annotated[bool, typer.Option(help="Exit with code 1 if any row is not ok.")] = False,
    encoding_errors: Annotated[
        EncodingErrors,
        typer.Option(help="Invalid UTF-8: 'strict' makes the line an error row, 'replace' substitutes U+FFFD."),
    ] = EncodingErrors.strict,
) -> None:
    """Score every line of INPUT; write the input object plus reward, status, reason, components, latency_ms."""
    from rewardflow.jsonl import AtomicOutput, open_input, read_lines

    summary = Summary()
    with _handled():
        _check_paths(input, output)
        src = open_input(input)
        engine = build_engine(reward, workers, timeout, executor=_name(executor), ray_address=ray_address)
        sink = AtomicOutput(output) if output is not None else None
    dst: Any = sink if sink is not None else sys.stdout
    try:
        with _handled(), engine:
            score_stream(
                engine,
                read_lines(src, errors=encoding_errors.value),
                dst,
                total=None,
                prompt_key=prompt_key,
                completion_key=completion_key,
                summary=summary,
            )
    except BaseException as exc:
        _stopped(exc, sink, summary)
        raise
    finally:
        if input != "-":
            src.close()
    if sink is not None:
        sink.commit()
    err.print(summary.table())
    if strict and summary.by_status["ok"] != summary.rows:
        raise typer.Exit(EXIT_STRICT)


def _stopped(exc: BaseException, sink: Any, summary: Summary, stream: str = "stdout") -> None:
    """After a run stopped early: keep the rows written so far (``.partial``) and say so, or discard an empty file."""
    config_error = isinstance(exc, typer.Exit) and summary.rows == 0
    if sink is None:
        where = stream
    elif config_error:
        sink.discard()
        return
    else:
        partial = sink.keep_partial()
        where = str(partial)
        with open(partial, "rb") as f:  # the rows really in the file, whatever the signal interrupted
            summary.rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if isinstance(exc, KeyboardInterrupt):
        err.print(
            f"interrupted: {summary.rows} of {summary.read} rows read were written to {escape(where)}", soft_wrap=True
        )
    elif isinstance(exc, BrokenPipeError):
        pass
    elif not isinstance(exc, typer.Exit):
        err.print(
            f"stopped: {summary.rows} of {summary.read} rows read were written to {escape(where)}", soft_wrap=True
        )


@app.command("list")
def list_rewards() -> None:
    """Show the built-in rewards, one line each."""
    from rewardflow.registry import default_registry

    table = Table(title="built-in rewards")
    table.add_column("name", style="bold")
    table.add_column("what scores 1 / what it does")
    table.add_column("datasets")
    for entry in default_registry().entries():
        extra = f" [dim]{escape(f'[{entry.extra}]')}[/dim]" if entry.extra else ""
        table.add_row(escape(entry.name) + extra, escape(entry.description), escape(", ".join(entry.datasets)))
    Console().print(table)


@app.command()
def demo(
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N solutions.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (>= 1).")] = 2,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the scored rows here (atomically).")
    ] = None,
    code: Annotated[bool, typer.Option("--code", help="HumanEval in the sandbox instead (canonical + wrong).")] = False,
) -> None:
    """Score the embedded GSM8K example solutions with `gsm8k` and report agreement with their labels."""
    if code:  # HumanEval's canonical solutions must pass and broken variants fail (rewardflow.code.demo)
        from rewardflow.code.demo import run_demo

        raise typer.Exit(run_demo(workers=workers, limit=limit))
    from rewardflow.data import gsm8k_examples
    from rewardflow.engine import Engine
    from rewardflow.jsonl import AtomicOutput

    rows = list(gsm8k_examples(limit))
    err.print(f"GSM8K example model solutions (MIT, (c) 2021 OpenAI): {len(rows)} labelled rows")
    summary = Summary()
    lines = (json.dumps(r) for r in rows)
    with _handled():
        sink = AtomicOutput(output) if output is not None else None
    collector = _Collector(sink if sink is not None else _Sink())
    try:
        with Engine("gsm8k", workers=workers, timeout=10.0) as engine:
            score_stream(
                engine,
                lines,
                collector,
                total=len(rows),
                prompt_key="prompt",
                completion_key="completion",
                summary=summary,
                description="gsm8k",
            )
    except BaseException as exc:
        _stopped(exc, sink, summary, stream="no file (no --output)")
        raise
    if sink is not None:
        sink.commit()
    agree = sum(1 for r in collector.rows if r["status"] == "ok" and (r["reward"] >= 0.5) == bool(r["is_correct"]))
    err.print(summary.table(title="rewardflow demo: gsm8k"))
    Console().print(f"agreement with labels: [bold]{agree} / {len(rows)}[/bold]")
    if agree != len(rows):
        raise typer.Exit(1)


@app.command("eval", epilog=EXAMPLES)
def eval_command(
    input: Annotated[
        str | None, typer.Argument(help="JSONL (.jsonl, .jsonl.gz, or - for stdin) with completions and labels.")
    ] = None,
    reward: Annotated[
        str | None, typer.Option("--reward", "-r", help="Reward name, import path, or spec file (.yaml).")
    ] = None,
    label: Annotated[str, typer.Option("--label", "-l", help="Column with the true label (bool, 0/1, true/false).")] = (
        "is_correct"
    ),
    threshold: Annotated[float, typer.Option(help="A reward >= threshold counts as positive.")] = 0.5,
    disagreements: Annotated[
        Path, typer.Option(help="Where to write the rows that disagree (and error/timeout rows).")
    ] = Path("rewardflow-eval-disagreements.jsonl"),
    figure: Annotated[Path, typer.Option(help="Where to draw the PNG (histogram + confusion matrix).")] = Path(
        "rewardflow-eval.png"
    ),
    no_figure: Annotated[bool, typer.Option("--no-figure", help="Skip the PNG (no matplotlib needed).")] = False,
    demo: Annotated[
        bool, typer.Option("--demo", help="Use the embedded GSM8K example solutions (reward gsm8k, label is_correct).")
    ] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes for sync rewards (>= 1).")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Per-call timeout in seconds (finite, > 0).", callback=_timeout_option)
    ] = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    prompt_key: Annotated[str, typer.Option(help="Column holding the prompt.")] = "prompt",
    completion_key: Annotated[str, typer.Option(help="Column holding the completion.")] = "completion",
    encoding_errors: Annotated[
        EncodingErrors,
        typer.Option(help="Invalid UTF-8: 'strict' makes the line an error row, 'replace' substitutes U+FFFD."),
    ] = EncodingErrors.strict,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a table.")] = False,
    min_agreement: Annotated[
        float | None, typer.Option(help="Exit with code 1 if agreement is below this fraction.")
    ] = None,
) -> None:
    """Agreement of a reward with a label column: confusion matrix, precision/recall, disagreements, PNG."""
    from rewardflow.evaluate import demo_input, evaluate, plot_report
    from rewardflow.jsonl import same_file

    if demo:
        input = input or str(demo_input())
        reward = reward or "gsm8k"
        err.print("GSM8K example model solutions (MIT, (c) 2021 OpenAI): 5,276 labelled rows")
    if input is None or reward is None:
        _error("give INPUT and --reward (or --demo for the embedded GSM8K solutions)")
        raise typer.Exit(EXIT_USAGE)
    with _handled():
        if input != "-" and not Path(input).is_file():
            raise ConfigError(f"input {input!r} does not exist or is not a file")
        for path in (disagreements, figure):
            if same_file(input, path):
                raise ConfigError(f"{str(path)!r} is the input file; choose another path")
        if not no_figure:
            _needs_matplotlib()
        engine = build_engine(reward, workers, timeout, executor=_name(executor), ray_address=ray_address)
    with _handled(), engine, _progress() as progress:
        task = progress.add_task(f"eval {reward}", total=None)
        report = evaluate(
            input,
            reward,
            label=label,
            threshold=threshold,
            disagreements=disagreements,
            engine=engine,
            prompt_key=prompt_key,
            completion_key=completion_key,
            progress=lambda done: progress.update(task, completed=done),
            encoding_errors=encoding_errors.value,
        )
    if not no_figure:
        with _handled():
            plot_report(report, figure)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        Console().print(_eval_table(report))
    if min_agreement is not None and (report.agreement or 0.0) < min_agreement:
        raise typer.Exit(1)


def _needs_matplotlib() -> None:
    """Fail before scoring, not after, when the PNG cannot be drawn."""
    from rewardflow.errors import MissingDependencyError

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{MissingDependencyError('matplotlib', 'eval')} (or pass --no-figure)") from exc


def _eval_table(report: Any) -> Table:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table = Table(title=f"rewardflow eval: {report.reward} vs {report.label}", show_header=False)
    table.add_row("rows", f"{report.rows:,}")
    table.add_row(
        "agreement (ok rows with a label)", f"{report.agreed:,} / {report.compared:,} ({rate(report.agreement)})"
    )
    table.add_row("true / false positives", f"{report.true_positives:,} / {report.false_positives:,}")
    table.add_row("true / false negatives", f"{report.true_negatives:,} / {report.false_negatives:,}")
    table.add_row("precision / recall", f"{rate(report.precision)} / {rate(report.recall)}")
    table.add_row("errors / timeouts / bad labels", f"{report.errors} / {report.timeouts} / {report.bad_labels}")
    table.add_row("disagreements written to", str(report.disagreements_path))
    table.add_row("figure", str(report.figure_path or "-"))
    return table


class _Sink:
    """A write-only sink used when the demo has no ``--output``."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Collector:
    """Passes lines through to ``target`` and keeps the parsed rows (for the demo's agreement count)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.rows: list[dict[str, Any]] = []

    def write(self, text: str) -> int:
        self.rows.extend(json.loads(line) for line in text.splitlines())
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()


# `rewardflow serve` lives in rewardflow/server (needs the `server` extra only when run).
app.command("serve")(_serve_command)


def _one_line_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _import_from_cwd() -> None:
    """Make rewards importable from the current directory, as ``python -m`` and pytest do (workers too)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get("PYTHONPATH", "")
    if cwd not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = cwd + (os.pathsep + paths if paths else "")


def _click_exceptions() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Abort and usage-error classes: typer >= 0.16 vendors click (``typer._click``), older releases use click."""
    aborts: list[type[BaseException]] = [typer.Abort]
    usage: list[type[BaseException]] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    usage.append(type(typer.BadParameter("x")).__mro__[1])  # UsageError of the click typer runs on
    try:
        import click

        aborts.append(click.exceptions.Abort)
        usage.append(click.ClickException)
    except ImportError:
        pass
    return tuple(aborts), tuple(usage)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit codes, one-line errors, SIGTERM as an orderly stop."""
    aborts, usage_errors = _click_exceptions()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args.remove("--debug")
        _State.debug = True
    _import_from_cwd()
    if not _State.debug:
        warnings.showwarning = _one_line_warning
    signal.signal(signal.SIGTERM, _on_sigterm)
    code: Any
    try:
        code = app(args=args, prog_name="rewardflow", standalone_mode=False)
    except aborts:  # Ctrl-C / SIGTERM outside a scoring loop (click wraps KeyboardInterrupt)
        err.print("interrupted")
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except usage_errors as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            _error(str(exc))
        code = EXIT_USAGE
    except BrokenPipeError:
        # the reader of stdout went away (`| head`): stop quietly, without Python's "Exception ignored" at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    except RewardflowError as exc:
        if _State.debug:
            traceback.print_exc()
        _error(str(exc))
        code = EXIT_USAGE
    except Exception as exc:
        if _State.debug:
            traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
