#!/usr/bin/env bash
# One short run on a lent CUDA GPU that measures what CPU-only tests can only stand in for (with the meta device):
# pinned host copies and transfer rate, device memory back to baseline after every call (cpu and release offload),
# GPU scores equal to the CPU per-sample loop within 1e-4, the device per rank, and GRPO prefix sharing >= 2x at the
# full shape. The checks themselves are in bench/gpu_check.py (its docstring lists them). Estimated a minute on one
# GPU (not yet run on one); the last line is `gpu_check: PASS` or `gpu_check: FAIL: ...` (exit 0 / 1; 2 = cannot run).
#
#   bash bench/gpu_check.sh              # from anywhere; on a machine with a CUDA build of torch
#   bash bench/gpu_check.sh --dry-run    # the same code on the CPU, small shapes (what the test suite runs)
#
# Python: $PYTHON, else the repository's .venv (make setup; a CPU torch, good for --dry-run only), else python3.
# It needs torch, transformers, tokenizers, safetensors and pydantic. On a lent GPU machine whose python3 lacks
# pydantic, download the wheels here once (cp312 example) and name .whl in the run's carry:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl pydantic pydantic-core annotated-types typing-inspection
# This script installs ./.whl/*.whl into a private folder when it finds them and pydantic is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x ../.venv/bin/python ] && [[ " $* " == *" --dry-run "* ]]; then PY=../.venv/bin/python
else PY=python3
fi
if ! "$PY" -c "import pydantic" 2>/dev/null && compgen -G "../.whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site ../.whl/*.whl
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
PYTHONPATH="..${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 exec "$PY" gpu_check.py "$@"
