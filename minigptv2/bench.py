"""`minigptv2 bench`: benchmarks/gpu.py of this source checkout, the official-7b shape (random weights) on one
device, every figure of BENCHMARKS.md's "gpu" section in one run. The arguments are gpu.py's:

    minigptv2 bench                                   # on the GPU (default: cuda when available), bf16
    minigptv2 bench --device cuda:1 --only decode batch
    minigptv2 bench --tiny --device cpu               # seconds: the plumbing only
    minigptv2 bench --device cpu --dtype bf16 --only train --train 4:ckpt    # the training memory, on a CPU

The CPU benchmarks (latency, batching, the prefix cache, training steps) run with `python benchmarks/run.py`.
"""
from __future__ import annotations

import runpy
from pathlib import Path

from minigptv2.errors import MiniGPTv2Error

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _gpu() -> dict:
    """benchmarks/gpu.py's names (its parser and main)."""
    if not SCRIPT.is_file():
        raise MiniGPTv2Error(f"minigptv2 bench runs {SCRIPT.relative_to(SCRIPT.parents[1])} of a source checkout "
                             f"(git clone, then pip install -e .); this installation has none at {SCRIPT}")
    return runpy.run_path(str(SCRIPT), run_name="minigptv2_bench")


def parser():
    return _gpu()["parser"](prog="minigptv2 bench")


def main(argv=None) -> int:
    return _gpu()["main"](argv, prog="minigptv2 bench")
