#!/usr/bin/env bash
# Real verl (pinned) in its own venv: .venv-verl in the repo root, reused when present. CPU torch first; verl itself
# with --no-deps (its declared deps pull vllm/flash-attn/wandb...), then only what its reward path imports.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VENV=.venv-verl
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if [ ! -f "$VENV/.ready" ]; then
    test -x "$VENV/bin/python" || python3 -m venv "$VENV"
    $PIP install torch==2.13.0
    $PIP install --no-deps "verl==0.9.1"
    # verl.protocol, verl.trainer.ppo.reward, verl.experimental.reward_loop and their imports:
    # (pinned to the versions tested; verl itself asks for ray>=2.41, tensordict<=0.10, transformers<5.11)
    $PIP install "ray==2.60.0" "tensordict==0.10.0" "omegaconf==2.3.1" "hydra-core==1.3.8" aiohttp numpy packaging \
        "transformers==5.10.4" tokenizers pylatexenc codetiming
    $PIP install -e . "pytest>=8"
    touch "$VENV/.ready"
fi
REWARDFLOW_FRAMEWORK_TESTS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/frameworks/verl "$@"
