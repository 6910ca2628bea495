"""Benchmark 'cli_help': wall time of `minigptv2 --help` and of `import minigptv2`, each in a fresh interpreter.

    python benchmarks/cli_help.py                      # median of 10 runs of each
    python benchmarks/cli_help.py --runs 20 --root ../other_checkout

Runs `python -m minigptv2.cli --help`, `python -c "import minigptv2"` and, for the interpreter's own start-up,
`python -c pass`, interleaved, in the checkout's folder (first on sys.path: its minigptv2 is the one measured,
whatever is installed). Prints one JSON line: the median and min seconds of each, the target (`--help`
under 0.5 s, issue #30) and whether `import minigptv2` left torch and transformers unimported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python_s": ["-c", "pass"],
    "import_s": ["-c", "import minigptv2"],
    "help_s": ["-m", "minigptv2.cli", "--help"],
}
HEAVY = "import json, sys, minigptv2; print(json.dumps(sorted({'torch', 'transformers'} & set(sys.modules))))"


def timed(args: list[str], root: str, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="runs of each command (default 10)")
    p.add_argument("--root", default=str(ROOT), help="the checkout whose minigptv2 is measured (default: this one)")
    a = p.parse_args(argv)
    root = str(Path(a.root).resolve())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    times = {k: [] for k in COMMANDS}
    for _ in range(a.runs):
        for k, args in COMMANDS.items():
            times[k].append(timed(args, root, env))
    heavy = subprocess.run([sys.executable, "-c", HEAVY], cwd=root, env=env, check=True, capture_output=True,
                           text=True)
    out = {"bench": "cli_help", "root": root, "runs": a.runs}
    for k, ts in times.items():
        out[k] = round(statistics.median(ts), 3)
        out[k.replace("_s", "_min_s")] = round(min(ts), 3)
    out.update({"target_help_s": 0.5, "help_under_target": out["help_s"] < 0.5,
                "import_loads": json.loads(heavy.stdout)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
