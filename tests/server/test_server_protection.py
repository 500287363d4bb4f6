"""Protection against a real ``rewardflow serve`` subprocess: auth, sizes, back-pressure, dead workers, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import REWARDS, ROOT, Server, free_port, write_spec

SLEEPY = "tests._rewards:sleepy"  # sleeps for "sleep X" completions, else scores 1


def test_token_required_401_without_403_wrong_probes_open(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"workers: 1\nrewards:\n  - reward: {REWARDS}:row_id\n    name: id\n")
    body = {"samples": [{"completion": "x", "id": 1}]}
    with Server(spec, env={"REWARDFLOW_TOKEN": "s3cret"}) as server:
        missing = httpx.post(server.url + "/v1/score", json=body)
        assert missing.status_code == 401 and "Authorization" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(server.url + "/get_reward", json={"query": []}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert httpx.get(server.url + "/metrics").status_code == 401
        ok = httpx.post(server.url + "/v1/score", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["results"][0]["reward"] == 1.0
        assert httpx.get(server.url + "/readyz").status_code == 200  # probes need no token (Kubernetes)
        assert httpx.get(server.url + "/healthz").status_code == 200


def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", "rewards:\n  - reward: gsm8k\n")
    env = {k: v for k, v in os.environ.items() if k != "REWARDFLOW_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "rewardflow.cli", "serve", str(spec), "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "REWARDFLOW_TOKEN" in proc.stderr


def test_oversized_body_and_batch_are_413(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"workers: 1\nrewards:\n  - reward: {REWARDS}:row_id\n    name: id\n")
    with Server(spec, "--max-body-mb", "0.01", "--max-batch", "8", "--max-queue", "8") as server:
        big = {"samples": [{"completion": "x" * 20_000, "id": 1}]}
        r = httpx.post(server.url + "/v1/score", json=big)
        assert r.status_code == 413 and "limit" in r.json()["error"]

        def chunked() -> object:  # no Content-Length: the limit is enforced while reading
            yield b'{"samples": [{"completion": "'
            for _ in range(30):
                yield b"y" * 1000
            yield b'", "id": 1}]}'

        r = httpx.post(server.url + "/v1/score", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        many = {"samples": [{"completion": "x", "id": i} for i in range(9)]}
        r = httpx.post(server.url + "/v1/score", json=many)
        assert r.status_code == 413 and "9 samples" in r.json()["error"]
        r = httpx.post(server.url + "/get_reward", json={"query": ["q"] * 9})
        assert r.status_code == 413
        ok = httpx.post(server.url + "/v1/score", json={"samples": many["samples"][:8]})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 8


def test_full_queue_is_429_with_retry_after(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"workers: 2\ntimeout: 60\nrewards:\n  - reward: {SLEEPY}\n")
    with Server(spec, "--max-batch", "2", "--max-queue", "2") as server:
        slow = {"samples": [{"completion": "sleep 3"}, {"completion": "sleep 3"}]}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, server.url + "/v1/score", json=slow, timeout=60)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # wait until the server holds the two samples
                if httpx.get(server.url + "/readyz").json()["queue_depth"] == 2:
                    break
                time.sleep(0.05)
            busy = httpx.post(server.url + "/v1/score", json={"samples": [{"completion": "now"}]})
            assert busy.status_code == 429
            assert int(busy.headers["retry-after"]) >= 1
            assert "queue full" in busy.json()["error"]
            rm = httpx.post(server.url + "/rm", json={"response": "now"})
            assert rm.status_code == 429
            assert first.result().status_code == 200
        after = httpx.post(server.url + "/v1/score", json={"samples": [{"completion": "now"}]})
        assert after.status_code == 200
        # the request deadline: what is not scored by then comes back as a timeout, typed, not as an HTTP error
        late = httpx.post(server.url + "/v1/score", json={"samples": [{"completion": "sleep 5"}], "timeout": 0.5})
        (result,) = late.json()["results"]
        assert (late.status_code, result["status"], result["reward"]) == (200, "timeout", None)
        assert "deadline of 0.5s" in result["reason"]
        header = httpx.post(server.url + "/rm", json={"response": "sleep 5"}, headers={"X-Rewardflow-Timeout": "0.5"})
        assert header.status_code == 424 and "timeout" in header.text  # slime's dialect: a number, or a failure
        metrics = httpx.get(server.url + "/metrics").text
        assert 'rewardflow_requests_total{code="429",route="/v1/score"} 1.0' in metrics


def test_a_worker_killed_mid_request_fails_only_its_sample(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml", "workers: 2\nretries: 0\ntimeout: 60\nrewards:\n  - reward: tests._rewards:report_pid\n"
    )
    done = [tmp_path / f"done{i}" for i in range(6)]
    for p in done:
        p.write_text("x")  # report_pid scores 1 at once when its path exists
    victim = tmp_path / "victim.pid"  # ... and otherwise writes its worker pid there and sleeps
    completions = [str(p) for p in done[:3]] + [str(victim)] + [str(p) for p in done[3:]]
    with Server(spec) as server, ThreadPoolExecutor(1) as pool:
        body = {"samples": [{"completion": c} for c in completions]}
        reply = pool.submit(httpx.post, server.url + "/v1/score", json=body, timeout=60)
        deadline = time.monotonic() + 30
        while not (victim.exists() and victim.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(victim.read_text()), signal.SIGKILL)
        results = reply.result().json()["results"]
    statuses = [r["status"] for r in results]
    assert statuses == ["ok"] * 3 + ["error"] + ["ok"] * 3
    assert "SIGKILL" in results[3]["reason"] or "signal" in results[3]["reason"].lower()


def test_sigterm_while_busy_answers_every_accepted_request(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"workers: 2\ntimeout: 60\nrewards:\n  - reward: {SLEEPY}\n")
    server = Server(spec, "--grace", "30").start()
    try:
        replies: list[httpx.Response | Exception] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            body = {"samples": [{"completion": "sleep 1"}, {"completion": f"row {i}"}]}
            try:
                r = httpx.post(server.url + "/v1/score", json=body, timeout=60)
            except Exception as exc:  # recorded, asserted below
                r = exc
            with lock:
                replies.append(r)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        depth = 0
        while time.monotonic() < deadline and depth < 24:  # every request accepted and queued
            depth = httpx.get(server.url + "/readyz").json()["queue_depth"]
            time.sleep(0.02)
        assert depth == 24  # 12 requests x 2 samples in flight (6 s of work on 2 workers) when SIGTERM comes
        server.terminate()
        for t in threads:
            t.join(60)
        code = server.proc.wait(60)  # type: ignore[union-attr]
    finally:
        server.stop()
    assert code == 0
    assert len(replies) == 12
    for r in replies:
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 200
        assert [x["status"] for x in r.json()["results"]] == ["ok", "ok"]
    with pytest.raises(httpx.TransportError):  # and it is gone: nothing accepts new work
        httpx.get(server.url + "/healthz", timeout=2)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_failure_value_is_refused_at_start(tmp_path: Path, value: str) -> None:
    """JSON has no NaN: a NaN stand-in used to be accepted, then every failed sample answered 500."""
    spec = write_spec(tmp_path / "spec.yaml", "rewards:\n  - reward: gsm8k\n")
    argv = [sys.executable, "-m", "rewardflow.cli", "serve", str(spec), "--port", str(free_port())]
    proc = subprocess.run(
        [*argv, "--failure-value", value],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "failure_value must be a finite number" in proc.stderr


def test_serve_without_the_server_extra_names_it(tmp_path: Path) -> None:
    """A bare `pip install rewardflow` has no FastAPI: exit 2 and the install line with its `[server]` intact
    (it was exit 3, "internal error: No module named 'uvicorn'", then a hint whose `[server]` rich swallowed)."""
    spec = write_spec(tmp_path / "spec.yaml", "rewards:\n  - reward: gsm8k\n")
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "fastapi.py").write_text("raise ImportError('No module named fastapi (hidden by the test)')\n")
    argv = [sys.executable, "-m", "rewardflow.cli", "serve", str(spec), "--port", str(free_port())]
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'rewardflow[server]'" in proc.stderr
    assert "Traceback" not in proc.stderr
