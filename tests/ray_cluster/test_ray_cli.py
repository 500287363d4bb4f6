"""Selecting the Ray executor from the outside: ``rewardflow score --executor ray --ray-address ...`` and
``rewardflow serve`` with ``executor: ray`` in the spec, both against the test cluster, in real subprocesses.
A reward module in the user's current directory (not installed) is shipped to the actors by the runtime
environment (``py_modules``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from rewardflow import Engine
from rewardflow.errors import ConfigError
from rewardflow.spec import parse_spec
from tests.ray_cluster.conftest import alive_nodes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

USER_REWARD = textwrap.dedent(
    """
    import os, sys
    from rewardflow import Score

    def where(completion: str) -> Score:
        # copies of this module that the runtime environment extracted on the actor's node (on one machine the
        # driver's directory is on the actor's path too, and Python may import either copy)
        shipped = [p for p in sys.path if "runtime_resources" in p and os.path.isfile(os.path.join(p, "my_rewards.py"))]
        return Score(float(len(completion)), info={"shipped": shipped})
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("PYTHONPATH", None)
    env.pop("RAY_ADDRESS", None)  # only --ray-address says where the cluster is
    return env


def test_score_with_executor_ray_ships_a_reward_from_the_current_directory(cluster: object, tmp_path: Path) -> None:
    (tmp_path / "my_rewards.py").write_text(USER_REWARD, encoding="utf-8")
    rows = [{"prompt": "p", "completion": "x" * n} for n in range(1, 41)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cmd = [sys.executable, "-m", "rewardflow.cli", "score", "in.jsonl", "-r", "my_rewards:where"]
    cmd += ["--executor", "ray", "--ray-address", cluster.address, "--workers", "3", "-o", "out.jsonl"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["reward"] for o in out] == [float(n) for n in range(1, 41)]
    assert all(o["status"] == "ok" for o in out)
    assert all(o["info"]["shipped"] for o in out), out[0]
    assert {o["info"]["ray_node_id"] for o in out} <= alive_nodes()


def test_eval_with_executor_ray_on_the_embedded_solutions(cluster: object, tmp_path: Path) -> None:
    """``rewardflow eval`` takes the same executor options as ``score``; the figures equal the process pool's."""
    from rewardflow.data import gsm8k_examples

    rows = list(gsm8k_examples(60))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    reports = {}
    for extra in ([], ["--executor", "ray", "--ray-address", cluster.address]):
        cmd = [sys.executable, "-m", "rewardflow.cli", "eval", "in.jsonl", "-r", "gsm8k", "--no-figure", "--json"]
        cmd += ["--disagreements", "d.jsonl", *extra]
        env = dict(_env(), PYTHONPATH=str(ROOT))
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[bool(extra)] = json.loads(proc.stdout.splitlines()[-1])
    assert reports[True]["rows"] == 60 and reports[True] == reports[False]


def test_without_an_address_the_cli_starts_a_local_ray_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from tests._procs import wait_gone

    marker = f"RF_RAY_LOCAL_{uuid.uuid4().hex}"
    rows = [{"prompt": "q", "completion": "The answer is 18.", "answer": "#### 18"}] * 30
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cmd = [sys.executable, "-m", "rewardflow.cli", "score", "in.jsonl", "-r", "gsm8k", "--executor", "ray"]
    env = dict(_env(), PYTHONPATH=str(ROOT), **{marker: "1"})  # Ray's processes inherit the marker
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["reward"] for o in out] == [1.0] * 30
    assert len({o["info"]["ray_node_id"] for o in out}) == 1  # one local node
    assert wait_gone(marker, 120) == []  # the local Ray (raylet, GCS, workers) ended with the command


def test_serve_with_executor_ray_in_the_spec(cluster: object, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from tests.server.conftest import Server, write_spec

    httpx = pytest.importorskip("httpx")
    spec = write_spec(
        tmp_path / "spec.yaml",
        f"workers: 2\nexecutor: ray\nray_address: {cluster.address}\nrewards:\n  - reward: gsm8k\n",
    )
    rows = [{"prompt": "q", "completion": "The answer is 18.", "answer": "#### 18"}] * 20
    with Server(spec, env={"RAY_USAGE_STATS_ENABLED": "0"}) as server:
        reply = httpx.post(server.url + "/v1/score", json={"samples": rows}, timeout=120)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["reward"] for r in results] == [1.0] * 20
    assert {r["info"]["ray_node_id"] for r in results} <= alive_nodes()


def test_an_unknown_executor_in_the_spec_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"spec: executor: Input should be 'process' or 'ray'"):
        parse_spec({"executor": "dask", "rewards": [{"reward": "gsm8k"}]})


def test_spec_selects_the_executor() -> None:
    spec = parse_spec({"executor": "ray", "ray_address": "auto", "ray_num_cpus": 2, "rewards": [{"reward": "gsm8k"}]})
    engine = Engine(spec)
    assert engine.executor == "ray" and engine._pool_args["ray_address"] == "auto"
    assert engine._pool_args["ray_num_cpus"] == 2
    engine.close()
