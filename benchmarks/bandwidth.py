"""Benchmark 'bandwidth' (see benchmarks/common.py run_bandwidth): prints one JSON line. `--tiny` for a seconds-long run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("bandwidth", sys.argv[1:]))
