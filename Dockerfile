# syntax=docker/dockerfile:1.7
# The bot image (docker-compose.gpu.yml builds it): Pipecat + faster-whisper + llama.cpp + Kokoro
# on CUDA, the HTTP API and the built web client. It runs `python -m stack.app`, the same command
# the tests start outside Docker. Models are not in the image: the stack's one-shot `models` step
# fetches them into the `models` volume, mounted at /models (MODELS_DIR).
#
# CUDA 12 throughout: CTranslate2 4.x (faster-whisper) loads libcublas.so.12 and cuDNN 9, so
# PyTorch comes from its cu128 wheel index (PyPI's default torch wheels are built on CUDA 13),
# and llama-cpp-python is compiled against the same toolkit. Host: an NVIDIA driver for CUDA
# 12.8 (>= 570) and the NVIDIA Container Toolkit.
#
# Without a GPU, docker-compose.cpu.yml builds the same file with the CPU build arguments below.

ARG BUILD_BASE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG RUNTIME_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# --- the web client: a static export, served by the bot (one origin) -----------------------------
FROM node:22.21.1-bookworm-slim AS web
WORKDIR /src
COPY web/package.json web/package-lock.json web/
RUN npm --prefix web ci --no-audit --no-fund --loglevel=error
# the TypeScript types are generated from the committed API and protocol schemas
COPY docs/openapi.json docs/protocol.schema.json docs/
COPY web/ web/
RUN NEXT_TELEMETRY_DISABLED=1 npm --prefix web run build

# --- llama-cpp-python, compiled with CUDA ---------------------------------------------------------
FROM ${BUILD_BASE} AS llama
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# Ampere (80, 86), Ada (89), Hopper (90), Blackwell (100, 120): fewer architectures build faster.
ARG LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90;100;120"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev build-essential cmake ninja-build git \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir --upgrade pip
# libcuda.so comes from the host's driver at run time; the toolkit's stub satisfies the linker
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
    /opt/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

# --- the bot ---------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE} AS bot
ARG TORCH_VERSION=2.9.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/.huggingface \
    MODELS_DIR=/models
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv && pip install --upgrade pip
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY --from=llama /wheels /wheels
WORKDIR /app
# the project's dependencies (pyproject.toml), not the project: the code runs from /app
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --find-links /wheels "torch==${TORCH_VERSION}" -r /tmp/requirements.txt \
    && rm -rf /wheels /tmp/requirements.txt
COPY livekit.yaml ./
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
