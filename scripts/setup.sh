#!/usr/bin/env bash
# Shared set-up of scripts/run.sh and scripts/test.sh, sourced by both: a Python 3.11/3.12
# virtual environment (.venv) with the project installed, and the LiveKit server built from its
# Go module. Re-running is cheap: llama-cpp-python's wheel and livekit-server are built once and
# kept under ~/.cache/avatar-stack. EXTRAS picks the optional dependencies, space-separated
# (default: test and bench, so a checkout that ran the tests can also run every benchmark, stock
# Pipecat's reference pipeline included; `torch` alone for a GPU machine without the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

PY=""
for candidate in python3.11 python3.12 python3; do
  # a pyenv shim can exist without its interpreter: ask the interpreter itself
  if "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' \
      >/dev/null 2>&1; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  echo "error: Python 3.11 or 3.12 is needed (kokoro and misaki do not support 3.13 yet)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip "uv==0.13.9"  # the Dockerfile's uv too
# llama-cpp-python is compiled from source (~10 min on 2 cores) for this CPU (-march=native):
# build its wheel once per CPU and keep it. Without AMX: llama.cpp's AMX kernels (0.3.36) stop
# the process with an illegal instruction (`tilezero`) on a Xeon that has AMX, seen on a 2-core
# Sapphire Rapids VM where AMX itself works; AVX-512 VNNI serves the same weight types.
WHEELS="$HOME/.cache/avatar-stack/wheels"
LLAMA_VERSION=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_CFLAGS=""
[ "$(uname -m)" = x86_64 ] && LLAMA_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
LLAMA_KEY=$( { grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m
               echo "$LLAMA_CFLAGS"; } | sha256sum | cut -c1-12)
export LLAMA_WHEELS="$WHEELS/llama-$LLAMA_KEY"  # tests/test_compose_up.py serves it to the image
if ! ls "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "== building llama-cpp-python $LLAMA_VERSION once for this CPU (about 10 minutes on 2 cores)"
  # --no-cache-dir: pip's own wheel cache would hand back a build made with other flags
  CFLAGS="${CFLAGS:-} $LLAMA_CFLAGS" CXXFLAGS="${CXXFLAGS:-} $LLAMA_CFLAGS" \
    .venv/bin/python -m pip wheel --quiet --no-cache-dir --no-deps -w "$LLAMA_WHEELS" \
    "llama-cpp-python==$LLAMA_VERSION"
fi
echo "== installing Python dependencies (the versions and hashes of uv.lock)"
# uv.lock pins every dependency; --locked stops here when pyproject.toml changed without a new
# lock (upgrading is a deliberate `uv lock --upgrade` + the tests, in one commit).
REQS=.venv/requirements.lock.txt
.venv/bin/uv export --quiet --locked --no-emit-project --no-emit-package llama-cpp-python \
  $(for extra in ${EXTRAS:-test bench}; do printf -- '--extra %s ' "$extra"; done) -o "$REQS"
.venv/bin/uv pip install --quiet --python .venv/bin/python --require-hashes -r "$REQS"
# reinstalled each time: a wheel of the same version built for another CPU may be installed
.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps \
  --reinstall-package llama-cpp-python -e . "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl

echo "== building the LiveKit server from its Go module (cached after the first build)"
LIVEKIT_VERSION=v1.13.5
export GOBIN="$HOME/.cache/avatar-stack/bin/livekit-$LIVEKIT_VERSION"
if [ ! -x "$GOBIN/server" ]; then
  command -v go >/dev/null || { echo "error: Go is needed to build livekit-server" >&2; exit 1; }
  go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_VERSION"
fi
export LIVEKIT_SERVER_BIN="$GOBIN/server"


echo "== building the web client (web/out; served by the bot)"
command -v npm >/dev/null || { echo "error: Node.js 20+ and npm are needed to build web/" >&2; exit 1; }
# npm ci only when the lock file changed since the last install
if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  npm --prefix web ci --no-audit --no-fund --loglevel=error
fi
npm --prefix web run --silent build >/dev/null
