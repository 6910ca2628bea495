#!/usr/bin/env bash
# Create .venv with everything minigptv2 needs, torch first (a bare `torch` requirement would pull a CUDA build).
#   bash scripts/setup.sh            # runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q "torch==2.13.0"
echo "torch==2.13.0" > .venv/constraints.txt
python -m pip install -q -c .venv/constraints.txt -e ".[dev]"
