"""The installed ``rewardflow`` command driven the way users drive it: pipes, ``.gz``, same-file output, signals.

Every test runs the console script in a subprocess, from a scratch directory, and checks behaviour (rows,
exit codes, files, messages), never wall-clock speed. Tests that interrupt a run wait for the first scored rows
to reach the output before they send the signal, so a loaded machine only makes them slower, not flaky.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("rewardflow")

pytestmark = pytest.mark.skipif(not EXE.exists(), reason="the rewardflow console script is not installed")

ROW_OK = {"prompt": "q", "completion": "so #### 18", "answer": "#### 18"}
ROW_WRONG = {"prompt": "q", "completion": "so #### 7", "answer": "#### 8"}

SLOW_REWARD = """
import time

def slow(completion, answer):
    time.sleep(0.005)
    return 1.0
"""


def default_sigint() -> None:
    """Children start with Ctrl-C handled, as in a terminal, even when pytest runs in a background job
    (where the shell hands down SIGINT as ignored, and an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("PYTHONPATH", None)  # the installed command must find its rewards without help
    return out


def rf(*args: str, cwd: Path, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(EXE), *args], cwd=cwd, input=stdin, capture_output=True, env=env(), timeout=timeout, check=False
    )


def write_rows(path: Path, rows: list[dict], *, gz: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read_out(data: bytes | str) -> list[dict]:
    text = data.decode() if isinstance(data, bytes) else data
    return [json.loads(line) for line in text.splitlines()]


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = proc.stderr.decode()
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


# ----------------------------------------------------------------------------------- output safety


def test_output_naming_the_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "rows.jsonl", [ROW_OK] * 50)
    before = src.read_bytes()
    proc = rf("score", "rows.jsonl", "-r", "gsm8k", "-o", "rows.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert "is the input file" in one_line_error(proc)
    assert src.read_bytes() == before
    # the same file under another name (a hard link: same inode) is refused too
    os.link(src, tmp_path / "alias.jsonl")
    proc = rf("score", "rows.jsonl", "-r", "gsm8k", "-o", "alias.jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and src.read_bytes() == before


def test_a_failed_start_leaves_an_existing_output_alone(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", [ROW_OK])
    out = tmp_path / "scored.jsonl"
    out.write_text("precious\n")
    proc = rf("score", "rows.jsonl", "-r", "no_such_reward", "-o", "scored.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "scored.jsonl"]  # no temp file left


def test_output_is_replaced_only_by_a_complete_file(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", [ROW_OK, ROW_WRONG])
    (tmp_path / "scored.jsonl").write_text("old\n")
    proc = rf("score", "rows.jsonl", "-r", "gsm8k", "-o", "scored.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r["reward"] for r in read_out((tmp_path / "scored.jsonl").read_text())] == [1.0, 0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "scored.jsonl"]


# ----------------------------------------------------------------------------------- input


def test_piped_input_with_dash_and_dev_stdin(tmp_path: Path) -> None:
    data = "".join(json.dumps(r) + "\n" for r in [ROW_OK, ROW_WRONG] * 300).encode()
    for name in ("-", "/dev/stdin"):
        proc = rf("score", name, "-r", "gsm8k", cwd=tmp_path, stdin=data)
        assert proc.returncode == 0, proc.stderr.decode()
        rows = read_out(proc.stdout)
        assert len(rows) == 600 and [r["reward"] for r in rows[:2]] == [1.0, 0.0]
    # a real shell pipe and process substitution, as in the issue
    write_rows(tmp_path / "rows.jsonl", [ROW_OK] * 100)
    for command in (
        f"cat rows.jsonl | '{EXE}' score /dev/stdin -r gsm8k --strict",
        f"'{EXE}' score <(cat rows.jsonl) -r gsm8k --strict",
    ):
        proc = subprocess.run(
            command, shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, env=env(), timeout=300
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert len(read_out(proc.stdout)) == 100


def test_gzip_input_as_file_and_stream(tmp_path: Path) -> None:
    rows = [ROW_OK, ROW_WRONG] * 50
    write_rows(tmp_path / "rows.jsonl.gz", rows, gz=True)
    proc = rf("score", "rows.jsonl.gz", "-r", "gsm8k", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    out = read_out(proc.stdout)
    assert len(out) == 100 and all(r["status"] == "ok" for r in out)
    piped = rf("score", "-", "-r", "gsm8k", cwd=tmp_path, stdin=(tmp_path / "rows.jsonl.gz").read_bytes())
    assert [(r["reward"], r["status"]) for r in read_out(piped.stdout)] == [(r["reward"], r["status"]) for r in out]
    # eval reads .gz and stdin the same way
    labelled = [dict(ROW_OK, is_correct=True), dict(ROW_WRONG, is_correct=False)] * 10
    write_rows(tmp_path / "labelled.jsonl.gz", labelled, gz=True)
    proc = rf("eval", "labelled.jsonl.gz", "-r", "gsm8k", "--no-figure", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert (report["rows"], report["agreed"], report["compared"]) == (20, 20, 20)
    data = (tmp_path / "labelled.jsonl.gz").read_bytes()
    proc = rf("eval", "-", "-r", "gsm8k", "--no-figure", "--json", cwd=tmp_path, stdin=data)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["agreed"] == 20


def test_invalid_utf8_is_an_error_row_unless_replace(tmp_path: Path) -> None:
    good = json.dumps(ROW_OK).encode()
    bad = b'{"prompt": "q", "completion": "caf\xe9 #### 18", "answer": "#### 18"}'
    (tmp_path / "rows.jsonl").write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
    proc = rf("score", "rows.jsonl", "-r", "gsm8k", cwd=tmp_path)
    rows = read_out(proc.stdout)
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    offset = bad.index(b"\xe9")
    assert rows[1]["line"] == 2
    assert (
        f"line 2: invalid UTF-8 (byte 0xe9 at byte offset {offset} of the line, {len(good) + 1 + offset}"
        in (rows[1]["reason"])
    )
    proc = rf("score", "rows.jsonl", "-r", "gsm8k", "--encoding-errors", "replace", cwd=tmp_path)
    rows = read_out(proc.stdout)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"] and "\ufffd" in rows[1]["completion"]


def test_a_lone_carriage_return_does_not_split_a_line(tmp_path: Path) -> None:
    line = b'{"prompt": "q",\r"completion": "#### 18",\r"answer": "#### 18"}\n'
    (tmp_path / "rows.jsonl").write_bytes(line + b"\r\n".join([json.dumps(ROW_OK).encode()] * 2) + b"\r\n")
    proc = rf("score", "rows.jsonl", "-r", "gsm8k", "--strict", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout.decode()
    assert [r["reward"] for r in read_out(proc.stdout)] == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------------- interruption


def _start_slow_run(tmp_path: Path, rows: int = 20_000) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp_path / "slow_reward.py").write_text(SLOW_REWARD)
    write_rows(tmp_path / "rows.jsonl", [ROW_OK] * rows)
    out = tmp_path / "scored.jsonl"
    out.write_text("previous run\n")
    proc = subprocess.Popen(
        [str(EXE), "score", "rows.jsonl", "-r", "slow_reward:slow", "-o", "scored.jsonl", "--workers", "2"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for the first scored batch to reach the temporary file
        tmp = [p for p in tmp_path.glob(".scored.jsonl.*.tmp") if p.stat().st_size > 0]
        if tmp:
            return proc, out
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no rows were scored within 240 s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_the_rows_it_wrote(tmp_path: Path, sig: signal.Signals) -> None:
    proc, out = _start_slow_run(tmp_path)
    proc.send_signal(sig)
    _, stderr_bytes = proc.communicate(timeout=120)
    stderr = stderr_bytes.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert out.read_text() == "previous run\n"  # the earlier output is untouched
    partial = tmp_path / "scored.jsonl.partial"
    rows = read_out(partial.read_text())
    assert rows and len(rows) < 20_000 and all(r["status"] == "ok" for r in rows)
    notice = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert notice and notice[0].startswith(f"interrupted: {len(rows)} of ")
    assert "scored.jsonl.partial" in stderr
    assert not list(tmp_path.glob(".scored.jsonl.*.tmp"))


# ----------------------------------------------------------------------------------- exit codes and errors


def test_exit_codes(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", [ROW_OK, ROW_WRONG])
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROW_OK) + "\n{oops\n")
    assert rf("score", "rows.jsonl", "-r", "gsm8k", "--strict", cwd=tmp_path).returncode == 0
    strict = rf("score", "bad.jsonl", "-r", "gsm8k", "--strict", cwd=tmp_path)
    assert strict.returncode == 1 and len(read_out(strict.stdout)) == 2
    assert rf("score", "bad.jsonl", "-r", "gsm8k", cwd=tmp_path).returncode == 0  # error rows without --strict
    usage = [
        ("score", "rows.jsonl"),  # no --reward
        ("score", "rows.jsonl", "-r", "gsm8k", "--workers", "0"),
        ("score", "rows.jsonl", "-r", "gsm8k", "--workers", "-2"),
        ("score", "rows.jsonl", "-r", "gsm8k", "--timeout", "nan"),
        ("score", "rows.jsonl", "-r", "gsm8k", "--timeout", "inf"),
        ("score", "rows.jsonl", "-r", "gsm8k", "--timeout", "0"),
        ("score", "rows.jsonl", "-r", "gsm8k", "--no-such-option"),
    ]
    for args in usage:
        proc = rf(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr.decode())
        assert "Traceback" not in proc.stderr.decode()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["score", ".", "-r", "gsm8k"], "is a directory"),
        (["score", "missing.jsonl", "-r", "gsm8k"], "does not exist"),
        (["score", "rows.jsonl", "-r", "gsm8k", "-o", "no/such/dir/out.jsonl"], "folder 'no/such/dir' does not exist"),
        (["score", "rows.jsonl", "-r", "gsm8k", "-o", "/sys/out.jsonl"], "cannot write to '/sys'"),
        (["score", "rows.jsonl", "-r", "broken_mod:fn"], "importing 'broken_mod' for reward 'broken_mod:fn' failed"),
        (["score", "rows.jsonl", "-r", "gsm8"], "did you mean 'gsm8k'?"),
        (["score", "rows.jsonl", "-r", "needs_extra:fn"], "pip install 'rewardflow[judge]'"),
        (["score", "rows.jsonl", "-r", "spec_inf.yaml"], "weight"),
        (["score", "rows.jsonl", "-r", "spec_params.yaml"], "unknown params ['tolerance']"),
        (["score", "rows.jsonl", "-r", "typo_reward:r"], "parameter 'pred' names no sample field and no column"),
        (["eval", "rows.jsonl", "-r", "gsm8k", "--no-figure"], "label column 'is_correct' is in none of"),
    ],
    ids=[
        "input-dir",
        "input-missing",
        "output-folder-missing",
        "output-unwritable",
        "module-raises",
        "did-you-mean",
        "missing-extra",
        "inf-weight",
        "unknown-param",
        "unbound-parameter",
        "eval-no-label",
    ],
)
def test_configuration_errors_are_one_line_with_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    write_rows(tmp_path / "rows.jsonl", [ROW_OK])
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "needs_extra.py").write_text(
        "from rewardflow.errors import MissingDependencyError\nraise MissingDependencyError('aiohttp', 'judge')\n"
    )
    (tmp_path / "typo_reward.py").write_text("def r(pred, answer):\n    return float(pred == answer)\n")
    (tmp_path / "spec_inf.yaml").write_text("rewards:\n  - reward: gsm8k\n    weight: .inf\n")
    (tmp_path / "spec_params.yaml").write_text("rewards:\n  - reward: math\n    params: {tolerance: 0.1}\n")
    proc = rf(*args, cwd=tmp_path)  # /sys: a folder nobody, not even root, can create files in
    assert proc.returncode == 2, proc.stderr.decode()
    line = one_line_error(proc)
    assert expected in line, line
    if expected.startswith("did you mean"):
        assert line.count("'gsm8k'") == 1  # a name that is also a dataset alias is offered once
    if expected.startswith("parameter 'pred'"):
        assert "available columns: answer" in line
    assert proc.stdout == b""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", [ROW_OK])
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    proc = rf("score", "rows.jsonl", "-r", "broken_mod:fn", "--debug", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr.decode() and "boom at import" in proc.stderr.decode()


def test_reader_closing_stdout_gives_no_traceback(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", [ROW_OK] * 5000)
    proc = subprocess.run(
        f"'{EXE}' score rows.jsonl -r gsm8k | head -n 1",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        env=env(),
        timeout=300,
        check=False,
        executable="/bin/bash",
    )
    assert len(read_out(proc.stdout)) == 1
    assert "Traceback" not in proc.stderr.decode() and "BrokenPipeError" not in proc.stderr.decode()


def test_version_and_help_with_examples(tmp_path: Path) -> None:
    from importlib.metadata import version

    proc = rf("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == f"rewardflow {version('rewardflow')}"
    for args in (["--help"], ["score", "--help"]):
        text = rf(*args, cwd=tmp_path).stdout.decode()
        assert "Examples:" in text and "rewardflow score rollouts.jsonl -r gsm8k -o scored.jsonl" in text
        assert "Exit codes:" in text


def test_list_keeps_bracketed_text(tmp_path: Path) -> None:
    proc = rf("list", cwd=tmp_path)
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert "[judge]" in text and "[models]" in text


# ----------------------------------------------------------------------------------- rewards users write


def test_reward_from_the_current_directory_in_workers(tmp_path: Path) -> None:
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "rewards.py").write_text("def brevity(completion):\n    return 1.0 / (1 + len(completion))\n")
    write_rows(tmp_path / "rows.jsonl", [ROW_OK] * 3)
    proc = rf("score", "rows.jsonl", "-r", "my_pkg.rewards:brevity", "--strict", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r["reward"] for r in read_out(proc.stdout)] == [1.0 / 11] * 3
    assert "warning" not in proc.stderr.decode()  # it ran in worker processes, not inline


def test_reward_error_reasons_carry_the_line(tmp_path: Path) -> None:
    rows = [ROW_OK, {"prompt": "q", "completion": "#### 3"}, {"prompt": "q", "completion": None}]
    write_rows(tmp_path / "rows.jsonl", rows)
    out = read_out(rf("score", "rows.jsonl", "-r", "gsm8k", cwd=tmp_path).stdout)
    assert [r["status"] for r in out] == ["ok", "error", "error"]
    assert out[1]["reason"].startswith("line 2: ")
    assert out[2]["reason"] == "line 3: field 'completion' must be a string, got null"


def test_inline_reward_with_a_timeout_warns_once(tmp_path: Path) -> None:
    (tmp_path / "inline_r.py").write_text(
        "from rewardflow import reward\n\n@reward(kind='inline', timeout=2)\ndef r(completion):\n    return 1.0\n"
    )
    write_rows(tmp_path / "rows.jsonl", [ROW_OK] * 1200)
    proc = rf("score", "rows.jsonl", "-r", "inline_r:r", "--strict", cwd=tmp_path)
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.decode().splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "cannot be enforced" in warnings[0]


def test_reward_defined_in_a_stdin_script_runs_inline_with_a_warning(tmp_path: Path) -> None:
    # `python - <<EOF` (and notebook cells): workers cannot import __main__, so the reward runs inline
    script = (
        "import warnings\n"
        "from rewardflow import Engine\n"
        "def r(completion, answer):\n"
        "    return float(completion == answer)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    with Engine(r, workers=1) as engine:\n"
        "        res = engine.score([{'completion': '4', 'answer': '4'}, {'completion': '5', 'answer': '4'}])\n"
        "print([x.value for x in res], [x.status.value for x in res])\n"
        "print(len(caught), 'runs inline' in str(caught[0].message))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-"], input=script, text=True, cwd=tmp_path, capture_output=True, env=env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[1.0, 0.0] ['ok', 'ok']", "1 True"]
