#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the pure-Python core: boxes, prompts, eval.metrics, eval.vqa_metrics, constrained, the
# processor's text side and the config's validation. Configuration: [tool.mutmut] in pyproject.toml; scope and
# report: scripts/mutation_report.py; results and the reason for every surviving mutant: docs/mutation-testing.md.
# Not part of the default test run: it reruns tests once per mutant (6-15 minutes on 2 shared cores).
#   bash scripts/mutation.sh                    # every module in scope, from scratch
#   bash scripts/mutation.sh boxes constrained  # some modules
#   JOBS=4 PYTHON=python3 bash scripts/mutation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mapfile -t patterns < <("$PY" scripts/mutation_report.py --patterns "$@")
rm -rf mutants                     # fresh: mutants/ caches results and the test-to-function map
# one thread per test process: the workers are forked from a process that has imported torch
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
set +e                             # the progress line without its spinner frames, and no line per killed mutant
"$PY" -m mutmut run --max-children "${JOBS:-2}" "${patterns[@]}" 2>&1 | tr '\r' '\n' | grep -Ev '^(⠋|⠙|⠹|⠸|⠼|⠴|⠦|⠧|⠇|⠏|🎉)'
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || { echo "mutmut run failed (exit $rc)" >&2; exit "$rc"; }
"$PY" scripts/mutation_report.py "$@"
"$PY" scripts/mutation_report.py --survivors "$@"
