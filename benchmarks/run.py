"""Run the benchmarks, one process each, one JSON line each (BENCHMARKS.md):

    python benchmarks/run.py --out benchmarks/results.jsonl --plot benchmarks/bench.png
    python benchmarks/run.py --only latency prefix_cache --tiny
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
