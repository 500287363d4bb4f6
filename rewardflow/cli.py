"""The ``rewardflow`` command line: ``score``, ``list``, ``demo`` (and ``eval``).

Contract of ``score``: exactly one output line per input line, in input order. A line that is not a JSON object,
or lacks the completion, becomes an error row naming its line number; nothing is dropped. Results go to ``-o``
(or stdout); the progress bar and the summary go to stderr, so stdout stays clean JSONL when piped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rewardflow.errors import RewardflowError
from rewardflow.types import RewardResult, Sample, Status

app = typer.Typer(
    name="rewardflow",
    help="Score RL rollouts with rule rewards, LLM judges and reward models: never silently wrong.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

_OUTPUT_KEYS = ("reward", "status", "reason", "components", "latency_ms")
_BATCH = 512


def build_engine(reward: str, workers: int | None, timeout: float | None) -> Any:
    """An engine for ``--reward``: a spec file (``.yaml``/``.yml``) or a reward name / import path."""
    from rewardflow.engine import Engine
    from rewardflow.spec import load_spec

    if reward.endswith((".yaml", ".yml")):
        spec = load_spec(reward)
        updates: dict[str, Any] = {}
        if workers is not None:
            updates["workers"] = workers
        if timeout is not None:
            updates["timeout"] = timeout
        return Engine(spec.model_copy(update=updates) if updates else spec)
    return Engine(reward, workers=workers or 2, timeout=timeout if timeout is not None else 10.0)


def read_rows(
    lines: Iterator[str], prompt_key: str, completion_key: str
) -> Iterator[tuple[dict[str, Any] | None, Any]]:
    """Yield ``(input_object_or_None, Sample_or_error_result)`` per line; never raises on bad input."""
    from rewardflow.errors import InputError

    for number, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield (
                None,
                RewardResult(
                    None,
                    Status.ERROR,
                    f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})"
                    if isinstance(exc, json.JSONDecodeError)
                    else f"line {number}: {exc}",
                ),
            )
            continue
        if not isinstance(obj, dict):
            yield (
                None,
                RewardResult(None, Status.ERROR, f"line {number}: expected a JSON object, got {type(obj).__name__}"),
            )
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
    """Running totals for the end-of-run table."""

    def __init__(self) -> None:
        self.rows = 0
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


def _count_lines(path: Path, *, skip_blank: bool) -> int | None:
    """Lines of a (possibly gzipped) JSONL file, for the progress bar; ``None`` if it cannot be read."""
    import gzip

    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            return sum(1 for line in f if not skip_blank or line.strip())
    except OSError:
        return None


def _engine_for(input: Path, reward: str, workers: int | None, timeout: float | None) -> Any:
    """Check the input exists and build the engine, or exit with code 2 and a one-line error."""
    if not input.exists():
        err.print(f"[red]error:[/red] input file {str(input)!r} does not exist")
        raise typer.Exit(2)
    try:
        return build_engine(reward, workers, timeout)
    except RewardflowError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def score_stream(
    engine: Any,
    lines: Iterator[str],
    out: IO[str],
    *,
    total: int | None,
    prompt_key: str,
    completion_key: str,
    summary: Summary,
    description: str = "scoring",
) -> None:
    """Score JSONL lines in batches and write one output line per input line, in order."""
    with _progress() as progress:
        task = progress.add_task(description, total=total)
        batch: list[tuple[dict[str, Any] | None, Any]] = []
        line = 0

        def flush() -> None:
            nonlocal line
            samples = [item for _, item in batch if isinstance(item, Sample)]
            scored = iter(engine.score(samples)) if samples else iter(())
            for obj, item in batch:
                line += 1
                result = next(scored) if isinstance(item, Sample) else item
                summary.add(result)
                out.write(json.dumps(output_row(obj, result, line), ensure_ascii=False) + "\n")
            progress.advance(task, len(batch))
            batch.clear()

        for pair in read_rows(lines, prompt_key, completion_key):
            batch.append(pair)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()


@app.command()
def score(
    input: Annotated[Path, typer.Argument(help="JSONL file: one object per line with `prompt`, `completion`, ...")],
    reward: Annotated[str, typer.Option("--reward", "-r", help="Reward name, import path, or spec file (.yaml).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output JSONL (default: stdout).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-call timeout in seconds.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes for sync rewards.")] = None,
    prompt_key: Annotated[str, typer.Option(help="Column holding the prompt.")] = "prompt",
    completion_key: Annotated[str, typer.Option(help="Column holding the completion.")] = "completion",
    strict: Annotated[bool, typer.Option(help="Exit with code 1 if any row is not ok.")] = False,
) -> None:
    """Score every line of INPUT; write the input object plus reward, status, reason, components, latency_ms."""
    engine = _engine_for(input, reward, workers, timeout)
    summary = Summary()
    with (
        engine,
        input.open("r", encoding="utf-8", errors="replace") as src,
        output.open("w", encoding="utf-8") if output else nullcontext(sys.stdout) as dst,
    ):
        score_stream(
            engine,
            src,
            dst,
            total=_count_lines(input, skip_blank=False),
            prompt_key=prompt_key,
            completion_key=completion_key,
            summary=summary,
        )
    err.print(summary.table())
    if strict and summary.by_status["ok"] != summary.rows:
        raise typer.Exit(1)


@app.command("list")
def list_rewards() -> None:
    """Show the built-in rewards, one line each."""
    from rewardflow.registry import default_registry

    table = Table(title="built-in rewards")
    table.add_column("name", style="bold")
    table.add_column("what scores 1 / what it does")
    table.add_column("datasets")
    for entry in default_registry().entries():
        extra = f" [dim]\\[{entry.extra}][/dim]" if entry.extra else ""
        table.add_row(entry.name + extra, entry.description, ", ".join(entry.datasets))
    Console().print(table)


@app.command()
def demo(
    limit: Annotated[int | None, typer.Option(help="Score only the first N solutions.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the scored rows here.")] = None,
    code: Annotated[bool, typer.Option("--code", help="HumanEval in the sandbox instead (canonical + wrong).")] = False,
) -> None:
    """Score the embedded GSM8K example solutions with `gsm8k` and report agreement with their labels."""
    if code:  # HumanEval's canonical solutions must pass and broken variants fail (rewardflow.code.demo)
        from rewardflow.code.demo import run_demo

        raise typer.Exit(run_demo(workers=workers, limit=limit))
    from rewardflow.data import gsm8k_examples
    from rewardflow.engine import Engine

    rows = list(gsm8k_examples(limit))
    err.print(f"GSM8K example model solutions (MIT, (c) 2021 OpenAI): {len(rows)} labelled rows")
    summary = Summary()
    lines = (json.dumps(r) for r in rows)
    buffer: IO[str]
    with (
        Engine("gsm8k", workers=workers, timeout=10.0) as engine,
        output.open("w", encoding="utf-8") if output else _Sink() as buffer,
    ):
        collector = _Collector(buffer)
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
    agree = sum(1 for r in collector.rows if r["status"] == "ok" and (r["reward"] >= 0.5) == bool(r["is_correct"]))
    err.print(summary.table(title="rewardflow demo: gsm8k"))
    Console().print(f"agreement with labels: [bold]{agree} / {len(rows)}[/bold]")
    if agree != len(rows):
        raise typer.Exit(1)


@app.command("eval")
def eval_command(
    input: Annotated[
        Path | None, typer.Argument(help="JSONL (or .jsonl.gz) with completions and a label column.")
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
    workers: Annotated[int | None, typer.Option(help="Worker processes for sync rewards.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-call timeout in seconds.")] = None,
    prompt_key: Annotated[str, typer.Option(help="Column holding the prompt.")] = "prompt",
    completion_key: Annotated[str, typer.Option(help="Column holding the completion.")] = "completion",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a table.")] = False,
    min_agreement: Annotated[
        float | None, typer.Option(help="Exit with code 1 if agreement is below this fraction.")
    ] = None,
) -> None:
    """Agreement of a reward with a label column: confusion matrix, precision/recall, disagreements, PNG."""
    from rewardflow.evaluate import demo_input, evaluate, plot_report

    if demo:
        input = input or demo_input()
        reward = reward or "gsm8k"
        err.print("GSM8K example model solutions (MIT, (c) 2021 OpenAI): 5,276 labelled rows")
    if input is None or reward is None:
        err.print("[red]error:[/red] give INPUT and --reward (or --demo for the embedded GSM8K solutions)")
        raise typer.Exit(2)
    engine = _engine_for(input, reward, workers, timeout)
    with engine, _progress() as progress:
        task = progress.add_task(f"eval {reward}", total=_count_lines(input, skip_blank=True))
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
        )
    if not no_figure:
        try:
            plot_report(report, figure)
        except RewardflowError as exc:
            err.print(f"[red]error:[/red] {exc} (or pass --no-figure)")
            raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        Console().print(_eval_table(report))
    if min_agreement is not None and (report.agreement or 0.0) < min_agreement:
        raise typer.Exit(1)


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
        self.rows.append(json.loads(text))
        return self.target.write(text)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
