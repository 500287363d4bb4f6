"""``rewardflow eval``: how well does a reward agree with labels a person (or a stronger grader) gave?

:func:`evaluate` scores a JSONL file (plain or ``.gz``) through :class:`~rewardflow.engine.Engine`, reads a label
column, and returns an :class:`EvalReport`: agreement, the confusion matrix (a reward ``>= threshold`` is a
*positive*), precision and recall. Along the way it writes every row that did not agree to a JSONL file, each
tagged with a ``kind``: ``false_positive``, ``false_negative``, ``error``, ``timeout`` or ``bad_label``, and
:func:`plot_report` draws a PNG (reward histogram by label, confusion matrix) with matplotlib.

Rules that keep the numbers honest:

* Error and timeout rows are counted on their own, never as negatives (a crashed reward is not a "0" that
  happens to agree with a negative label). Agreement, precision and recall are over ``ok`` rows with a label.
* A label must be a bool, 0/1, or one of "true"/"false"/"yes"/"no"/"1"/"0" (any case); anything else (or a
  missing label) is a ``bad_label`` row, reported, not guessed.
* A label column that no row of the first chunk has is a :class:`~rewardflow.errors.ConfigError` naming the
  columns that are there (a typo in ``--label`` must not report "0 / 0" and succeed).
* Input is read in one streaming pass by :mod:`rewardflow.jsonl`: ``-`` for stdin, gzip by magic bytes, invalid
  UTF-8 an error row naming its line and byte offset.
* matplotlib is imported only to draw (``pip install 'rewardflow[eval]'``), through its object API (no pyplot,
  no global backend switch), so evaluating inside another program leaves its plotting state alone.

Out of the box, :func:`demo_input` is the packaged GSM8K example solutions (5,276 labelled rows).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from rewardflow.errors import ConfigError, InputError, MissingDependencyError
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["EvalReport", "demo_input", "evaluate", "parse_label", "plot_report", "read_jsonl"]

logger = logging.getLogger(__name__)

_TRUE = frozenset({"true", "yes", "1", "1.0", "correct"})
_FALSE = frozenset({"false", "no", "0", "0.0", "incorrect"})
_CHUNK = 1024


def demo_input() -> Path:
    """Path of the packaged GSM8K example solutions (``prompt``, ``completion``, ``answer``, ``is_correct``)."""
    from rewardflow.data import gsm8k_examples_path

    return gsm8k_examples_path()


def parse_label(value: Any) -> bool:
    """A label as a bool; raises :class:`~rewardflow.errors.InputError` for anything that is not clearly one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise InputError(f"label {value!r} is not a bool, 0/1 or true/false")


@dataclass
class EvalReport:
    """Counts and rates of one evaluation. Rates are ``None`` where their denominator is 0."""

    reward: str
    label: str
    threshold: float
    rows: int = 0
    true_positives: int = 0
    false_positives: int = 0
    true_negatives: int = 0
    false_negatives: int = 0
    errors: int = 0
    timeouts: int = 0
    bad_labels: int = 0
    disagreements_path: str | None = None
    figure_path: str | None = None
    values_positive: list[float] = field(default_factory=list, repr=False)
    values_negative: list[float] = field(default_factory=list, repr=False)

    @property
    def compared(self) -> int:
        """Rows with an ok result and a valid label: the denominator of agreement."""
        return self.true_positives + self.false_positives + self.true_negatives + self.false_negatives

    @property
    def agreed(self) -> int:
        return self.true_positives + self.true_negatives

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def precision(self) -> float | None:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else None

    @property
    def recall(self) -> float | None:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-row values)."""
        out = asdict(self)
        out.pop("values_positive")
        out.pop("values_negative")
        out.update(compared=self.compared, agreed=self.agreed)
        out.update(agreement=self.agreement, precision=self.precision, recall=self.recall)
        return out


def read_jsonl(
    path: str | Path, *, encoding_errors: str = "strict"
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line_number, object, None)`` per JSON-object line, or ``(line_number, None, problem)``; blank lines skipped.

    ``path`` may be ``-`` (stdin) or gzipped; see :mod:`rewardflow.jsonl`.
    """
    from rewardflow.jsonl import open_input, read_lines
    from rewardflow.types import json_type

    stream = open_input(path)
    try:
        for line in read_lines(stream, errors=encoding_errors):  # type: ignore[arg-type]
            if line.text is None:
                yield line.number, None, line.problem
                continue
            if not line.text.strip():
                continue
            try:
                obj = json.loads(line.text)
            except json.JSONDecodeError as exc:
                yield line.number, None, f"malformed JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(obj, dict):
                yield line.number, None, f"expected a JSON object, got {json_type(obj)}"
                continue
            yield line.number, obj, None
    finally:
        if str(path) != "-":
            stream.close()


def evaluate(
    input_path: str | Path,
    reward: Any,
    *,
    label: str = "is_correct",
    threshold: float = 0.5,
    disagreements: str | Path | None = None,
    engine: Any = None,
    workers: int = 2,
    timeout: float | None = 10.0,
    prompt_key: str = "prompt",
    completion_key: str = "completion",
    progress: Any = None,
    encoding_errors: str = "strict",
) -> EvalReport:
    """Score ``input_path`` with ``reward`` and compare with the ``label`` column (see the module docstring).

    ``reward`` is anything :class:`~rewardflow.engine.Engine` accepts (a name such as ``"gsm8k"``, a callable,
    a spec); pass ``engine=`` to reuse an open engine instead (it is then not closed here). ``progress`` is an
    optional callable receiving the number of rows done after each chunk.
    """
    from rewardflow.engine import Engine

    name = reward if isinstance(reward, str) else getattr(reward, "__name__", type(reward).__name__)
    report = EvalReport(reward=str(name), label=label, threshold=threshold)
    owned = engine is None
    if owned:
        engine = Engine(reward, workers=workers, timeout=timeout)
    sink: IO[str] | None = None
    try:
        if disagreements is not None:
            Path(disagreements).parent.mkdir(parents=True, exist_ok=True)
            sink = open(disagreements, "w", encoding="utf-8")  # closed in the finally below
            report.disagreements_path = str(disagreements)
        chunk: list[tuple[int, dict[str, Any] | None, str | None]] = []
        first = True
        for item in read_jsonl(input_path, encoding_errors=encoding_errors):
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                if first:
                    _check_label(chunk, label)
                    first = False
                _score_chunk(engine, chunk, report, sink, prompt_key, completion_key)
                chunk = []
                if progress is not None:
                    progress(report.rows)
        if chunk:
            if first:
                _check_label(chunk, label)
            _score_chunk(engine, chunk, report, sink, prompt_key, completion_key)
            if progress is not None:
                progress(report.rows)
    finally:
        if sink is not None:
            sink.close()
        if owned:
            engine.close()
    return report


def _check_label(chunk: list[tuple[int, dict[str, Any] | None, str | None]], label: str) -> None:
    """Raise :class:`ConfigError` when rows were read but none of them has the label column."""
    objects = [obj for _, obj, _ in chunk if obj is not None]
    if objects and not any(label in obj for obj in objects):
        columns = sorted({key for obj in objects for key in obj})
        raise ConfigError(
            f"label column {label!r} is in none of the first {len(objects)} rows; columns: {', '.join(columns)} "
            "(choose one with --label)"
        )


def _score_chunk(
    engine: Any,
    chunk: list[tuple[int, dict[str, Any] | None, str | None]],
    report: EvalReport,
    sink: IO[str] | None,
    prompt_key: str,
    completion_key: str,
) -> None:
    prepared: list[tuple[int, dict[str, Any] | None, Sample | RewardResult]] = []
    for number, obj, problem in chunk:
        if obj is None:
            prepared.append((number, None, RewardResult(None, Status.ERROR, f"line {number}: {problem}")))
            continue
        try:
            prepared.append((number, obj, Sample.from_row(obj, prompt_key=prompt_key, completion_key=completion_key)))
        except InputError as exc:
            prepared.append((number, obj, RewardResult(None, Status.ERROR, f"line {number}: {exc}")))
    samples = [item for _, _, item in prepared if isinstance(item, Sample)]
    scored = iter(engine.score(samples)) if samples else iter(())
    for number, obj, item in prepared:
        result = next(scored) if isinstance(item, Sample) else item
        kind = _tally(report, obj, result)
        if kind is not None and sink is not None:
            sink.write(json.dumps(_disagreement(number, obj, result, kind, report.label), ensure_ascii=False) + "\n")


def _tally(report: EvalReport, obj: Mapping[str, Any] | None, result: RewardResult) -> str | None:
    """Count one row; return its disagreement kind, or ``None`` when reward and label agree."""
    report.rows += 1
    if result.status is Status.TIMEOUT:
        report.timeouts += 1
        return "timeout"
    if result.status is not Status.OK or result.value is None:
        report.errors += 1
        return "error"
    try:
        if obj is None or report.label not in obj:
            raise InputError(f"missing label column {report.label!r}")
        truth = parse_label(obj[report.label])
    except InputError:
        report.bad_labels += 1
        return "bad_label"
    positive = result.value >= report.threshold
    (report.values_positive if truth else report.values_negative).append(result.value)
    if positive and truth:
        report.true_positives += 1
    elif positive:
        report.false_positives += 1
        return "false_positive"
    elif truth:
        report.false_negatives += 1
        return "false_negative"
    else:
        report.true_negatives += 1
    return None


def _disagreement(
    number: int, obj: Mapping[str, Any] | None, result: RewardResult, kind: str, label: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"line": number, "kind": kind}
    out.update(result.to_dict())
    if obj is not None:
        out["label"] = obj.get(label)
        out["row"] = dict(obj)
    return out


def plot_report(report: EvalReport, path: str | Path) -> Path:
    """Draw the reward histogram (split by label) and the confusion matrix into a PNG at ``path``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "eval") from exc

    fig = Figure(figsize=(11, 4.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    hist, matrix = fig.subplots(1, 2, width_ratios=[1.5, 1])
    _draw_histogram(hist, report)
    _draw_confusion(fig, matrix, report)
    agreement = f"{report.agreed:,}/{report.compared:,} ({report.agreement:.2%})" if report.compared else "n/a"
    fig.suptitle(
        f"reward {report.reward!r} vs label {report.label!r}: agreement {agreement}; "
        f"precision {_pct(report.precision)}, recall {_pct(report.recall)}; "
        f"errors {report.errors}, timeouts {report.timeouts}, bad labels {report.bad_labels}",
        fontsize=10,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    report.figure_path = str(out)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _draw_histogram(ax: Any, report: EvalReport) -> None:
    values = report.values_positive + report.values_negative
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    bins = [lo + (hi - lo) * i / 20 for i in range(21)]
    ax.hist(
        [report.values_positive, report.values_negative],
        bins=bins,
        stacked=True,
        color=["#2e7d32", "#c62828"],
        label=[f"label true (n={len(report.values_positive):,})", f"label false (n={len(report.values_negative):,})"],
    )
    ax.axvline(report.threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {report.threshold:g}")
    ax.set_xlabel("reward (ok rows)")
    ax.set_ylabel("rows")
    ax.set_title("reward distribution by label")
    ax.legend(loc="upper center", fontsize=8)


def _draw_confusion(fig: Any, ax: Any, report: EvalReport) -> None:
    cells = [
        [report.true_positives, report.false_negatives],
        [report.false_positives, report.true_negatives],
    ]
    names = [["true positive", "false negative"], ["false positive", "true negative"]]
    total = max(report.compared, 1)
    image = ax.imshow(cells, cmap="Blues")
    peak = max(max(row) for row in cells)
    for i in range(2):
        for j in range(2):
            count = cells[i][j]
            color = "white" if peak and count > 0.6 * peak else "black"
            text = f"{names[i][j]}\n{count:,}\n({count / total:.1%})"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks([0, 1], [f"reward >= {report.threshold:g}", f"reward < {report.threshold:g}"])
    ax.set_yticks([0, 1], ["label true", "label false"])
    ax.set_title("confusion matrix (ok rows)")
    fig.colorbar(image, ax=ax, shrink=0.8)
