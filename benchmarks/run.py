"""Run the benchmark scripts beside this file, each in its own process (so its peak RSS is its own), and print
the one JSON line each writes (BENCHMARKS.md):

    python benchmarks/run.py                                 # every benchmark in BENCHMARKS
    python benchmarks/run.py --only latency prefix_cache --tiny
    python benchmarks/run.py --out benchmarks/results.jsonl --plot benchmarks/bench.png
    python benchmarks/run.py --only gpu -- --device cuda     # arguments after the runner's go to every script

A script that fails gives the line {"bench": NAME, "error": "exit N"} and the runner's exit status 1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = ("latency", "generate_batch", "prefix_cache", "scaling", "train_step", "bandwidth", "nano_train")
SCRIPTS = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=BENCHMARKS + ("load", "gpu"), default=list(BENCHMARKS),
                   help="benchmarks to run; `load` and `gpu` only when named (gpu on a GPU: -- --device cuda)")
    p.add_argument("--out", default=None, help="append each JSON line to this file too")
    p.add_argument("--tiny", action="store_true", help="pass --tiny to every script: seconds-long runs")
    p.add_argument("--plot", default=None, help="write a PNG of the results here")
    a, rest = p.parse_known_args(argv)
    got = []
    rc = 0
    for name in a.only:
        cmd = [sys.executable, str(SCRIPTS / f"{name}.py")] + (["--tiny"] if a.tiny else []) + rest
        r = subprocess.run(cmd, capture_output=True, text=True)
        # every JSON line the script printed (gpu.py prints one per section), in order
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not lines:
            sys.stderr.write(r.stderr[-3000:])
            lines = [json.dumps({"bench": name, "error": f"exit {r.returncode}"})]
            rc = 1
        for line in lines:
            print(line, flush=True)
            got.append(json.loads(line))
        if a.out:
            with open(a.out, "a") as fh:
                fh.writelines(line + "\n" for line in lines)
    if a.plot:
        plot(got, a.plot)
    return rc


def plot(lines: list[dict], png: str | Path) -> None:
    """One PNG: scaling (tokens/s and TTFT vs batch) and the side-by-side ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {d["bench"]: d for d in lines if "error" not in d}
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    if "scaling" in by:
        sc = by["scaling"]
        m = max(r["max_new_tokens"] for r in sc["rows"] if r["batch"] > 1) if any(
            r["batch"] > 1 for r in sc["rows"]) else sc["rows"][0]["max_new_tokens"]
        rows = sorted((r for r in sc["rows"] if r["max_new_tokens"] == m), key=lambda r: r["batch"])
        b = [r["batch"] for r in rows]
        ax[0].plot(b, [r["tok_s"] for r in rows], "o-", label="end-to-end tokens/s")
        ax[0].plot(b, [r["decode_tok_s"] for r in rows], "s--", label="decode tokens/s (after 1st token)")
        ax[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="tokens/s",
                  title=f"ours, {sc['model']}, {m} new tokens")
        ax[0].legend()
        ax[1].plot(b, [r["ttft_s"] for r in rows], "o-", label="time to first token")
        ax[1].plot(b, [r["wall_s"] for r in rows], "s--", label="wall")
        ax[1].set(xscale="log", yscale="log", xlabel="batch size", ylabel="seconds", title="latency vs batch")
        ax[1].legend()
    names, vals = [], []
    if "generate_batch" in by:
        names.append(f"batch {by['generate_batch']['batch']}\nthroughput")
        vals.append(by["generate_batch"]["throughput_ratio"])
    if "latency" in by:
        names.append("1 request\nspeed")
        vals.append(1 / by["latency"]["latency_ratio_ours_over_official"])
    if "prefix_cache" in by:
        names.append("2nd question\nvs 1st")
        vals.append(by["prefix_cache"]["speedup_later_vs_first"])
    if "train_step" in by:
        names.append("train\nsamples/s")
        vals.append(by["train_step"]["ratio"])
    ax[2].bar(names, vals, color="tab:blue")
    ax[2].axhline(1, color="k", lw=0.8)
    for i, v in enumerate(vals):
        ax[2].text(i, v, f"{v:.2f}x", ha="center", va="bottom")
    ax[2].set(ylabel="ours ÷ official-style baseline (higher = faster)", title="speed-up vs baseline")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
