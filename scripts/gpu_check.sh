#!/usr/bin/env bash
# The GPU checks (BENCHMARKS.md, "gpu") in one device run (DEVELOPERS.md, "When a GPU is lent").
#
#   bash scripts/gpu_check.sh --prepare    # here: the wheels the device lacks -> .device/ (gitignored, ~19 MB)
#   device run, carry [".device"], timeout_s 600:
#       bash scripts/gpu_check.sh          # there: the CUDA tests, then benchmarks/gpu.py -> $OUT
#   GPU_CHECK_TINY=1 bash scripts/gpu_check.sh    # a dry run of the same steps on this CPU (seconds)
#
# The device image (Python 3.12) has torch 2.11 and transformers 5.17 with huggingface-hub 1.x; this package needs
# transformers 5.25 (huggingface-hub >= 2.4 with httpx2 / httpcore2 / truststore, kernels with tomlkit) and
# bitsandbytes for the 8/4-bit section. The
# bitsandbytes wheel is cut to its CUDA 13.0 library to fit the 64 MiB the device run carries.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    rm -rf .device && mkdir -p .device
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .device transformers==5.25.0 \
        huggingface-hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 kernels==0.19.1 tomlkit==0.14.0 \
        click==8.5.1 idna==3.21 hf-xet==1.8.0 anyio==4.16.0 \
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
$PY -c "import torch, transformers, huggingface_hub, peft, accelerate, minigptv2.model; print('torch', \
torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'hub', \
huggingface_hub.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
# every generation path keeps its inputs on the GPU; the compiled paths give the eager ids; training memory
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py tests/train/test_train_memory.py \
    tests/test_generate.py -k "device or compile or place_for_training or cast_for_training or checkpointing" \
    2>&1 | tail -15 | tee "$OUT/tests.txt" || true
# the benchmark, one JSON line per section, the targets first (training, then inference), each call under its own
# timeout, so a slow section loses its own line and not the others'
run_bench() {   # timeout, sections...
    local t=$1; shift
    timeout "$t" $PY benchmarks/gpu.py "${BENCH[@]}" --only "$@" --out "$OUT/gpu.jsonl" 2>>"$OUT/gpu.err" \
        | cut -c1-600 || echo "gpu.py --only $*: exit $?"
}
run_bench 100 env train
run_bench 220 env decode batch prefix
run_bench 130 vit quantized load
tail -5 "$OUT/gpu.err"
