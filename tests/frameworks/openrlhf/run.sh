#!/usr/bin/env bash
# Real-framework tests for OpenRLHF: builds .venv-openrlhf in the repository root (reused while this script is
# unchanged), then runs tests/frameworks/openrlhf inside it.
#
# openrlhf 0.11.2 requires deepspeed, flash-attn and (extra) vllm, none of which the driven code needs or builds on
# a CPU machine, so it is installed with --no-deps plus what openrlhf/utils/agent.py,
# trainer/ppo_utils/{experience,samples_generator}.py, cli/train_ppo_ray.py's parser and datasets/reward_dataset.py
# import (HF datasets, for the reward-model test, which fakes the deepspeed, flash-attn and peft imports of
# models/model.py); its pinned transformers==5.15.0 is kept. rewardflow comes with its `[server]` extra, so the tests can start `rewardflow serve`
# and point OpenRLHF's own HTTP remote-RM client at it.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VENV=.venv-openrlhf
PY=$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check -q"
STAMP="$VENV/.ready-$( (cat "$0"; cat pyproject.toml) | sha256sum | cut -c1-16)"

if [ ! -f "$STAMP" ]; then
    test -x "$PY" || python3 -m venv "$VENV"
    $PIP install torch==2.13.0  # first: the local CPU build; nothing below may replace it
    $PIP install --no-deps openrlhf==0.11.2
    $PIP install "transformers==5.15.0" "datasets==5.2.0" aiohttp pylatexenc tqdm pytest
    $PIP install -e ".[server]"
    # The openrlhf wheel also installs its own test suite as a top-level package named `tests`, which shadows
    # this repository's `tests` in worker processes; it is not part of openrlhf's runtime.
    rm -rf "$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tests"
    $PY -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    rm -f "$VENV"/.ready-*
    touch "$STAMP"
fi

REWARDFLOW_FRAMEWORK_TESTS=1 exec "$PY" -m pytest -q -p no:cacheprovider tests/frameworks/openrlhf "$@"
