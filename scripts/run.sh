#!/usr/bin/env bash
# Run the product on this machine, without Docker: set up (scripts/setup.sh), fetch the models of
# MODEL_PROFILE (default cpu) and start LiveKit + the bot (scripts/dev.py). Extra arguments go to
# scripts/dev.py, e.g. --profile test or --http-port 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python scripts/dev.py --profile "${MODEL_PROFILE:-cpu}" "$@"
