"""Registry (names, dataset names, import paths, entry points, near misses) and spec validation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rewardflow import Engine, load_spec
from rewardflow.errors import ConfigError, UnknownRewardError
from rewardflow.registry import Entry, Registry, resolve
from rewardflow.rules.math import gsm8k_reward, math_reward


def test_builtin_and_dataset_names() -> None:
    assert resolve("gsm8k") is gsm8k_reward
    assert resolve("openai/gsm8k") is gsm8k_reward
    assert resolve("OpenAI/GSM8K") is gsm8k_reward  # dataset names are case-insensitive
    assert resolve("HuggingFaceH4/MATH-500") is math_reward


def test_import_paths_both_spellings() -> None:
    assert resolve("rewardflow.rules.math:gsm8k_reward") is gsm8k_reward
    assert resolve("rewardflow.rules.math.gsm8k_reward") is gsm8k_reward


def test_near_miss_lists_close_matches() -> None:
    with pytest.raises(UnknownRewardError) as info:
        resolve("gsm8")
    assert "did you mean 'gsm8k'" in str(info.value)


def test_bad_import_path_says_why() -> None:
    with pytest.raises(UnknownRewardError, match="no module named 'no_such_pkg'"):
        resolve("no_such_pkg.rewards:fn")
    with pytest.raises(UnknownRewardError, match="has no attribute 'nope'"):
        resolve("rewardflow.rules.math:nope")


def test_params_are_bound_to_plain_functions() -> None:
    fn = resolve("tests._rewards:counting", {"counter_dir": "/tmp"})
    assert fn.keywords == {"counter_dir": "/tmp"}  # type: ignore[attr-defined]


def test_factory_entries_are_called_with_params() -> None:
    def make(threshold: int) -> object:
        return lambda completion: float(len(completion) > threshold)

    reg = Registry([Entry("longer", make, "longer than threshold", factory=True)])
    assert reg.resolve("longer", {"threshold": 2})("abc") == 1.0
    with pytest.raises(ConfigError, match="bad params"):
        reg.resolve("longer", {"wrong": 1})


def test_entry_point_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a third-party distribution declaring a reward in the `rewardflow.rewards` entry-point group
    pkg = tmp_path / "acme_rewards.py"
    pkg.write_text("def brevity(completion):\n    return float(len(completion) < 10)\n")
    dist = tmp_path / "acme_rewards-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rewards\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rewardflow.rewards]\nbrevity = acme_rewards:brevity\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    fn = reg.resolve("brevity")
    assert fn("short") == 1.0
    with pytest.raises(UnknownRewardError, match="did you mean 'brevity'"):
        reg.resolve("brevty")
    sys.modules.pop("acme_rewards", None)


SPEC = """
workers: 1
timeout: 5
rewards:
  - reward: gsm8k
    name: accuracy
    weight: 1.0
  - reward: tests._rewards:length_reward
    name: length
    weight: 0.001
    kind: inline
"""


def test_spec_drives_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    assert spec.workers == 1 and [r.component_name for r in spec.rewards] == ["accuracy", "length"]
    with Engine.from_spec(path) as engine:
        result = engine.score([{"prompt": "q", "completion": "#### 42", "answer": "#### 42"}])[0]
    assert result.components == {"accuracy": 1.0, "length": 7.0}
    assert result.value == pytest.approx(1.007)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rewards: []", "rewards: List should have at least 1 item"),
        ("rewards:\n  - reward: gsm8k\n    weight: heavy", "rewards.0.weight: Input should be a valid number"),
        ("rewards:\n  - reward: gsm8k\n    wieght: 1", "rewards.0.wieght: Extra inputs are not permitted"),
        ("workers: 0\nrewards:\n  - reward: gsm8k", "workers: Input should be greater than or equal to 1"),
        ("rewards:\n  - reward: gsm8k\n  - reward: gsm8k", "component names must be unique"),
        ("rewards: [unclosed", "not valid YAML"),
        ("- just a list", "a spec must be a mapping"),
        ("rewards:\n  - reward: gsm8k\n    kind: threads", "rewards.0.kind: Input should be"),
    ],
)
def test_spec_errors_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_reward_in_spec_fails_at_engine_build(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("rewards:\n  - reward: gms8k\n")
    with pytest.raises(UnknownRewardError, match="did you mean 'gsm8k'"):
        Engine.from_spec(path)


def test_missing_spec_file() -> None:
    with pytest.raises(ConfigError, match="cannot read spec file"):
        load_spec("/nonexistent/spec.yaml")


def test_ray_actor_is_for_model_rewards_only() -> None:
    from rewardflow.spec import parse_spec

    spec = parse_spec({"rewards": [{"reward": "gsm8k", "ray_actor": {"num_gpus": 0}}]})
    with pytest.raises(ConfigError, match="ray_actor applies to model rewards"):
        spec.components()
    plain = parse_spec({"rewards": [{"reward": "tests._rewards:length_reward", "ray_actor": {}}]})
    with pytest.raises(ConfigError, match="ray_actor applies to model rewards"):
        plain.components()
    with pytest.raises(ConfigError, match=r"rewards\.0\.ray_actor\.gpus: Extra inputs are not permitted"):
        parse_spec({"rewards": [{"reward": "reward_model", "ray_actor": {"gpus": 1}}]})
    assert spec.rewards[0].ray_actor is not None and spec.rewards[0].ray_actor.start_timeout == 900.0
