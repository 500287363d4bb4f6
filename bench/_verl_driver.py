"""Driven by bench/integrations_trl_verl.py inside .venv-verl: one measurement, printed as one JSON line.

.venv-verl/bin/python bench/_verl_driver.py {first-inline,first-process,manager-hang,own-hang} WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "frameworks" / "verl"), str(HERE.parent)]

from test_verl_real import ROWS, build_tiny, fake_batch, verl_config  # noqa: E402
from verl.experimental.reward_loop import RewardLoopWorker  # noqa: E402

GSM8K = "workers: 2\ntimeout: 10\nrewards:\n  - reward: gsm8k\n    kind: {kind}\n"
HANG = "workers: 2\ntimeout: 2\nrewards:\n  - reward: verl_test_rewards:hang_on_gold\n"
HANG_ROWS = [*ROWS[:3], ("Natalia sold 48 clips.", "#### 72", "hang")]


def worker(overrides: list[str], tiny: Path) -> RewardLoopWorker:
    return RewardLoopWorker(verl_config([*overrides, f"actor_rollout_ref.model.path={tiny}"]))


def main() -> None:
    what, workdir = sys.argv[1], Path(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny(workdir / "tiny") if not (workdir / "tiny" / "config.json").exists() else workdir / "tiny"
    spec = workdir / f"{what}.yaml"
    rewardflow_fn = [
        "reward.custom_reward_function.path=pkg://rewardflow.integrations.verl",
        "reward.custom_reward_function.name=compute_score",
    ]
    manager = [
        "reward.reward_manager.source=importlib",
        "reward.reward_manager.name=RewardflowRewardManager",
        "reward.reward_manager.module.path=pkg://rewardflow.integrations.verl_manager",
        f"+reward.reward_kwargs.rewardflow_spec={spec}",
        "+reward.reward_kwargs.rewardflow_failure_score=-1.0",
    ]
    if what.startswith("first-"):
        spec.write_text(GSM8K.format(kind=what.removeprefix("first-")))
        import os

        os.environ["REWARDFLOW_SPEC"] = str(spec)
        w, data = worker(rewardflow_fn, tiny), fake_batch(tiny, ROWS * 4)
    elif what == "manager-hang":
        spec.write_text(HANG)
        w, data = worker(manager, tiny), fake_batch(tiny, HANG_ROWS * 4)
    else:  # verl's own reward loop with a plain compute_score: nothing stops the hung call
        plain = HERE.parent / "tests" / "frameworks" / "verl" / "verl_test_rewards.py"
        overrides = [
            f"reward.custom_reward_function.path={plain}",
            "reward.custom_reward_function.name=plain_compute_score",
        ]
        w, data = worker(overrides, tiny), fake_batch(tiny, HANG_ROWS * 4)
    start = time.monotonic()
    outputs = w.loop.run_until_complete(w.compute_score_batch(data))
    wall = time.monotonic() - start
    scores = [o["reward_score"] for o in outputs]
    failed = [o["reward_extra_info"].get("rewardflow_failed", 0.0) for o in outputs]
    print(json.dumps({"what": what, "wall_s": wall, "scores": scores, "failed": failed}), flush=True)


if __name__ == "__main__":
    main()
