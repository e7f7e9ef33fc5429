# The bot image (docker-compose.gpu.yml builds it): Pipecat + faster-whisper + llama.cpp + Kokoro
# on CUDA, the HTTP API and the built web client. It runs `python -m stack.app`, the same command
# the tests start outside Docker. Models are not in the image: the stack's one-shot `models` step
# fetches them into the `models` volume, mounted at /models (MODELS_DIR).
#
# CUDA 12 throughout: CTranslate2 4.x (faster-whisper) loads libcublas.so.12 and cuDNN 9; the lock
# (uv.lock) pins a PyPI torch built on CUDA 12.8, and llama-cpp-python is compiled against the
# same toolkit. Host: an NVIDIA driver for CUDA 12.8 (>= 570) and the NVIDIA Container Toolkit.
#
# Without a GPU, docker-compose.cpu.yml builds this same file with the CPU build arguments below
# (an Ubuntu base, no PyTorch: Kokoro runs on ONNX there). tests/test_compose_up.py builds and
# starts that variant under a real Docker engine.
#
# No `# syntax=` line on purpose: the Dockerfile frontend built into the engine reads this file, so
# a build pulls nothing but the base images (an offline mirror of those is enough).
#
# Behind a TLS-inspecting proxy, put its CA certificate(s) in ca-certificates/*.crt: every stage
# trusts them (npm, pip, uv, and the model downloads at run time).

ARG BUILD_BASE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG RUNTIME_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG NODE_BASE=node:22.21.1-bookworm-slim
# The Python the bases' apt installs (Ubuntu 24.04: 3.12; on a Debian 12 base: python3.11).
ARG PYTHON=python3.12

# --- the web client: a static export, served by the bot (one origin) -----------------------------
FROM ${NODE_BASE} AS web
WORKDIR /src
COPY ca-certificates/ /usr/local/share/ca-certificates/extra/
COPY web/package.json web/package-lock.json web/
# node keeps its own CA list: the extra certificates go in through NODE_EXTRA_CA_CERTS
RUN cat /usr/local/share/ca-certificates/extra/*.crt > /tmp/extra-ca.pem 2>/dev/null; \
    if [ -s /tmp/extra-ca.pem ]; then export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; fi; \
    npm --prefix web ci --no-audit --no-fund --loglevel=error
# the TypeScript types are generated from the committed API and protocol schemas
COPY docs/openapi.json docs/protocol.schema.json docs/
COPY web/ web/
RUN NEXT_TELEMETRY_DISABLED=1 npm --prefix web run build

# --- llama-cpp-python, compiled with CUDA ---------------------------------------------------------
FROM ${BUILD_BASE} AS llama
ARG PYTHON
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# Ampere (80, 86), Ada (89), Hopper (90), Blackwell (100, 120): fewer architectures build faster.
ARG LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90;100;120"
# A wheelhouse (directory URL) that may hold a prebuilt llama-cpp-python wheel of this version
# for this Python: used instead of compiling (a build farm's, or the tests' from scripts/setup.sh).
ARG WHEELHOUSE=""
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        ${PYTHON} ${PYTHON}-venv ${PYTHON}-dev build-essential cmake ninja-build git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates >/dev/null
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN ${PYTHON} -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir --upgrade pip
# libcuda.so comes from the host's driver at run time; the toolkit's stub satisfies the linker.
# Without AMX, as scripts/setup.sh builds it: llama.cpp's AMX kernels stop with an illegal
# instruction on Xeons that have AMX.
RUN NO_AMX="$([ "$(uname -m)" = x86_64 ] && echo -mno-amx-tile -mno-amx-int8 -mno-amx-bf16)"; \
    CFLAGS="$NO_AMX" CXXFLAGS="$NO_AMX" \
    CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
    /opt/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels \
        ${WHEELHOUSE:+--find-links "$WHEELHOUSE"} "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

# --- the bot ---------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE} AS bot
ARG PYTHON
# Optional dependencies of pyproject.toml: `torch` runs Kokoro on PyTorch (the gpu profile's TTS).
ARG EXTRAS=torch
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/.huggingface \
    MODELS_DIR=/models
RUN apt-get update && apt-get install -y --no-install-recommends \
        ${PYTHON} ${PYTHON}-venv libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates >/dev/null
# Python's HTTP clients (pip, uv, huggingface_hub, httpx) read the system store through these
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN ${PYTHON} -m venv /opt/venv && pip install --no-cache-dir "uv==0.13.9"
WORKDIR /app
# Exactly the locked versions and hashes (uv.lock), as scripts/setup.sh installs them; the project
# itself is not installed: its code runs from /app.
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --quiet --no-emit-project --no-emit-package llama-cpp-python \
        $(for extra in ${EXTRAS}; do printf -- '--extra %s ' "$extra"; done) -o /tmp/requirements.txt \
    && uv pip install --no-cache --require-hashes -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --from=llama /wheels /wheels
RUN uv pip install --no-cache --no-deps /wheels/*.whl && rm -rf /wheels
COPY livekit.yaml ./
COPY coturn/ coturn/
COPY stack/ stack/
COPY scripts/ scripts/
COPY docs/ docs/
COPY --from=web /src/web/out web/out

# Not root. The volumes' mount points belong to the bot, so fresh named volumes do too.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin bot \
    && mkdir -p /models /run/stack && chown bot:bot /models /run/stack
USER bot
VOLUME ["/models"]
EXPOSE 8080
CMD ["python", "-m", "stack.app"]
