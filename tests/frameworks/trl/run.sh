#!/usr/bin/env bash
# Real TRL (pinned) in its own venv: .venv-trl in the repo root, reused when present. CPU torch first, so nothing
# that asks for torch can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VENV=.venv-trl
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if [ ! -f "$VENV/.ready" ]; then
    test -x "$VENV/bin/python" || python3 -m venv "$VENV"
    $PIP install torch==2.13.0
    $PIP install "trl==1.16.0" "transformers==5.24.0" "accelerate==1.15.0" "datasets==5.2.0" tokenizers
    $PIP install -e . "pytest>=8"
    touch "$VENV/.ready"
fi
REWARDFLOW_FRAMEWORK_TESTS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/frameworks/trl "$@"
