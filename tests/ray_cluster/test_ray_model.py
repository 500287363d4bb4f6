"""Model rewards on Ray: a real RewardModel (a tiny Llama generated here) and a judge-shaped callable, each in a
Ray actor with ``num_gpus=0`` on the test cluster; the GPU path is the same code with ``num_gpus=1``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rewardflow import Engine, Sample
from rewardflow.executors.ray_actor import NODE_KEY
from rewardflow.executors.ray_model import RayModel
from rewardflow.types import Status
from tests.ray_cluster import _models
from tests.ray_cluster.conftest import alive_nodes, in_thread, listed, live_reward_actors

pytestmark = pytest.mark.slow

ROWS = [
    Sample("what is two plus two?", "the answer is four."),
    Sample("what is two plus two?", "the answer is 4"),
    Sample("janet has sixteen eggs", "she sells the rest for two dollars each."),
    Sample("janet has sixteen eggs", "16 - 3 - 4 = 9 and 9 * 2 = 18."),
]


def _gone(seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while live_reward_actors() and time.monotonic() < deadline:
        time.sleep(0.5)
    return not live_reward_actors()


def _tiny_rm(directory: Path) -> tuple[str, list[Any]]:
    """A tiny Llama reward model written to ``directory``, and its scores of ROWS, computed here."""
    pytest.importorskip("torch")
    from rewardflow.models import RewardModel
    from tests.models.conftest import RM_TEMPLATE, build_llama, build_tokenizer

    tok = build_tokenizer(directory, vocab_size=320, specials=["[INST]", "[/INST]"], template=RM_TEMPLATE)
    path = str(build_llama(directory, tok, head="seq-cls"))
    with Engine(RewardModel(path, device="cpu")) as local:
        return path, local.score(ROWS)


def test_a_reward_model_in_a_ray_actor_scores_like_the_local_one(cluster: object, tmp_path: Path) -> None:
    from rewardflow.models import RewardModel

    path, expected = _tiny_rm(tmp_path)
    remote = RayModel(RewardModel, path, device="cpu", num_gpus=0, name="rm")
    with Engine(remote) as engine:
        got = in_thread(lambda: engine.score(ROWS), 600)
        # ModelActor is listed (other tests' actors may still be winding down on a loaded machine: not ==)
        assert listed(lambda actors: "ModelActor" in [a.class_name for a in actors]), [
            (a.class_name, a.state) for a in live_reward_actors()
        ]
    assert all(r.ok for r in expected) and all(r.ok for r in got)
    assert len({round(r.value, 4) for r in expected}) > 1  # a real spread of scores, not a constant
    for a, b in zip(expected, got, strict=True):
        assert b.value == pytest.approx(a.value, abs=1e-5)
        assert b.info[NODE_KEY] in alive_nodes()
    assert remote.started == 1
    assert _gone()


def test_a_spec_puts_a_reward_model_in_its_own_ray_actor(cluster: object, tmp_path: Path) -> None:
    """``ray_actor:`` on a spec's ``reward_model`` entry: the same scores as the local model, from a ModelActor."""
    from rewardflow.spec import parse_spec

    path, expected = _tiny_rm(tmp_path)
    spec = parse_spec(
        {
            "rewards": [
                {
                    "reward": "reward_model",
                    "name": "rm",
                    "timeout": 120,
                    "params": {"path": path, "device": "cpu"},
                    "ray_actor": {"num_gpus": 0, "num_cpus": 0.5},
                }
            ]
        }
    )
    with Engine(spec) as engine:
        (component,) = engine.components
        assert type(component.reward.fn).__name__ == "RayModel" and component.reward.fn.num_cpus == 0.5
        # the spec's timeout limits each batch inside RayModel; the engine's limit only backs up start + batch
        assert component.reward.fn.timeout == 120 and component.reward.timeout == 900 + 120 + 30
        got = in_thread(lambda: engine.score(ROWS), 600)
    assert all(r.ok for r in got), [r.reason for r in got]
    for a, b in zip(expected, got, strict=True):
        assert b.value == pytest.approx(a.value, abs=1e-5)
        assert b.info[NODE_KEY] in alive_nodes()
    assert _gone()


def test_a_hung_model_call_times_out_and_the_next_batch_gets_a_fresh_actor(cluster: object) -> None:
    model = RayModel(_models.LengthModel, 2.0, num_gpus=0, timeout=3.0)
    with Engine(model) as engine:
        first = in_thread(lambda: engine.score([Sample("p", "abc"), Sample("p", "hang")]), 300)
        assert [r.status for r in first] == [Status.TIMEOUT, Status.TIMEOUT]  # a batch call fails as a whole
        assert "timed out after 3s (the model's Ray actor was killed" in first[0].reason  # its own limit, not 963 s
        second = in_thread(lambda: engine.score([Sample("p", "abc"), Sample("p", "de")]), 300)
    assert [r.value for r in second] == [6.0, 4.0]
    assert model.started == 2  # the hung actor was killed, a new one built the model again
    assert _gone()


def test_a_judge_shaped_reward_runs_per_sample_inside_the_actor(cluster: object) -> None:
    judge = RayModel("tests.ray_cluster._models:AsyncJudge", "4", num_gpus=0, name="judge")
    with Engine(judge) as engine:
        got = in_thread(lambda: engine.score(ROWS), 300)
    assert [r.value for r in got] == [0.0, 1.0, 0.0, 0.0]
    assert {r.info[NODE_KEY] for r in got} <= alive_nodes()
    assert _gone()
