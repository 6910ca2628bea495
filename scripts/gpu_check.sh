#!/usr/bin/env bash
# The GPU checks (BENCHMARKS.md, "gpu") in one device run (DEVELOPERS.md, "When a GPU is lent").
#
#   bash scripts/gpu_check.sh --prepare    # here: the wheels the device lacks -> .device/ (gitignored, ~19 MB)
#   device run, carry [".device"], timeout_s 600:
#       bash scripts/gpu_check.sh          # there: the CUDA tests, then benchmarks/gpu.py -> $OUT
#   GPU_CHECK_TINY=1 bash scripts/gpu_check.sh    # a dry run of the same steps on this CPU (seconds)
#
# The device image (Python 3.12) has torch 2.11 and transformers 5.17 with huggingface-hub 1.x; this package needs
# transformers 5.25 (huggingface-hub >= 2.4, kernels) and bitsandbytes for the 8/4-bit section. The
# bitsandbytes wheel is cut to its CUDA 13.0 library to fit the 64 MiB the device run carries.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    rm -rf .device && mkdir -p .device
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .device transformers==5.25.0 huggingface-hub==2.4.0 kernels==0.19.1 \
        bitsandbytes==0.50.2
    python - <<'EOF'
import pathlib, zipfile
[w] = pathlib.Path(".device").glob("bitsandbytes-*.whl")
keep = [i for i in zipfile.ZipFile(w).infolist()        # the CUDA 13.0 and CPU libraries, not the 20 others
        if not i.filename.startswith("bitsandbytes/libbitsandbytes_") or i.filename.endswith(("cuda130.so", "cpu.so"))]
tmp = w.with_suffix(".tmp")
with zipfile.ZipFile(w) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for i in keep:             # RECORD still lists the dropped libraries: pip installs without checking it
        dst.writestr(i, src.read(i.filename))
tmp.replace(w)
EOF
    du -sh .device && ls .device
    exit 0
fi

OUT="${OUT:-out}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD"
if [ -n "${GPU_CHECK_TINY:-}" ]; then
    PY=${PYTHON:-.venv/bin/python}; BENCH=(--tiny --device cpu)
else
    PY=python3; BENCH=()
    $PY -m pip install -q --no-deps --no-index .device/*.whl
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
# every generation path keeps its inputs on the GPU; the compiled paths give the eager ids; training memory
timeout 100 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py tests/train/test_train_memory.py \
    tests/test_generate.py -k "device or compile or place_for_training or cast_for_training or checkpointing" \
    2>&1 | tail -15 | tee "$OUT/tests.txt" || true
# the benchmark, one JSON line per section, the targets first; a section cut by its timeout is lost, not the rest
timeout 300 $PY benchmarks/gpu.py "${BENCH[@]}" --only env decode batch prefix train --out "$OUT/gpu.jsonl" \
    2>"$OUT/gpu.err" | cut -c1-600 || echo "gpu.py (targets): exit $?"
timeout 150 $PY benchmarks/gpu.py "${BENCH[@]}" --only vit quantized load --out "$OUT/gpu.jsonl" \
    2>>"$OUT/gpu.err" | cut -c1-600 || echo "gpu.py (rest): exit $?"
tail -5 "$OUT/gpu.err"
