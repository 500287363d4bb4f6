#!/usr/bin/env bash
# Real-framework tests for AReaL: builds .venv-areal in the repository root (reused while this script is
# unchanged), then runs tests/frameworks/areal inside it.
#
# areal 1.0.4 declares ~80 dependencies (vLLM/SGLang back ends, agent SDKs, trackers) and pins torch<2.11, so it is
# installed with --no-deps plus what the driven code paths import: areal.workflow.{rlvr,vision_rlvr,multi_turn},
# areal.infra (WorkflowExecutor, GroupedRolloutWorkflow, RemoteInfEngine, RPC serialisation), the Anthropic
# math agent, and areal.dataset.hhrlhf / areal.trainer.rw for the reward-model test (HF datasets). math-verify is
# pinned to areal's 0.8.0, which rewardflow must accept.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VENV=.venv-areal
PY=$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check -q"
STAMP="$VENV/.ready-$( (cat "$0"; cat pyproject.toml) | sha256sum | cut -c1-16)"

if [ ! -f "$STAMP" ]; then
    test -x "$PY" || python3 -m venv "$VENV"
    $PIP install torch==2.13.0  # first: the local CPU build; nothing below may replace it
    $PIP install --no-deps areal==1.0.4
    $PIP install "transformers>=5.0.0,<=5.3.0" "math-verify==0.8.0" "omegaconf==2.4.0.dev2" "hydra-core==1.4.0.dev1" \
        aiohttp aiofiles requests uvloop torchdata pyyaml pydantic colorlog tenacity flask lark ray numba pillow \
        orjson einops openai "anthropic==2.14.0" "datasets==5.2.0" pytest
    $PIP install -e .
    $PY -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    rm -f "$VENV"/.ready-*
    touch "$STAMP"
fi

REWARDFLOW_FRAMEWORK_TESTS=1 exec "$PY" -m pytest -q -p no:cacheprovider tests/frameworks/areal "$@"
