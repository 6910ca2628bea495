"""`minigptv2 eval`: score a model on the official MiniGPT-v2 benchmarks, our synthetic benchmark or your own
held-out data; write the metrics, every prediction, a grid of examples and a report with the paper's numbers
beside ours.

    minigptv2 eval --model m7b --bench refcoco,refcoco+,refcocog --data /data/minigptv2-eval --out runs/eval-ref
    minigptv2 eval --model m7b --bench vqa --data /data/minigptv2-eval --out runs/eval-vqa
    minigptv2 eval --model m7b --bench refcoco_val --data /data/minigptv2-eval --out runs/quick --limit 200 \\
        --batch-size 16 --compare-constrained
    minigptv2 eval --bench synthetic --out runs/eval-nano                  # embedded nano model, 500 held-out scenes
    minigptv2 eval --bench synthetic_views --data DIR --out runs/eval-views  # alone, 2nd / 3rd turn, held-out wordings
    minigptv2 eval --model runs/ft/final --bench jsonl --data ft_data/test.jsonl --out runs/ft/eval

Benches (--bench, comma-separated; refcoco, refcoco+, refcocog = all splits of that family; vqa = all six):
    refcoco_val refcoco_testA refcoco_testB refcoco+_val refcoco+_testA refcoco+_testB refcocog_val refcocog_test
    okvqa gqa vsr iconvqa vizwiz hm   coco_caption   detection   grounding   synthetic   synthetic_views   jsonl

Where each bench's files go under --data, the protocols and the outputs: docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from minigptv2.atomic import write_file
from minigptv2.devices import add_device_args, load_kwargs
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval.benches import expand_benches, load_bench
from minigptv2.eval.jsonl import run_jsonl
from minigptv2.eval.report import example_grid, report_markdown
from minigptv2.eval.run import BOX_TASKS, choice_losses, run_prompts, write_predictions
from minigptv2.eval.scoring import score_bench, score_iconvqa
from minigptv2.eval.synthetic import HELDOUT_SEED, run_synthetic
from minigptv2.eval.synthetic_views import VIEWS, run_views


def run_bench(model, processor, bench: str, root: Path, limit=None, batch_size: int = 10, constrained: bool = True,
              compare_constrained: bool = False, max_new_tokens=None, progress: bool = True):
    """Load, run and score one (non-synthetic) bench. Returns (metrics, rows)."""
    items = load_bench(root, bench, limit)
    t0 = time.time()
    if bench == "iconvqa":
        return _timed(score_iconvqa(items, choice_losses(model, processor, items, batch_size, progress), batch_size),
                      t0)
    preds = run_prompts(model, processor, items, batch_size, max_new_tokens, constrained, bench, progress)
    m, rows = score_bench(bench, items, preds)
    m["constrained"] = constrained and items[0].task in BOX_TASKS
    if compare_constrained and items[0].task in BOX_TASKS:
        other = run_prompts(model, processor, items, batch_size, max_new_tokens, not constrained,
                            f"{bench} ({'un' if constrained else ''}constrained)", progress)
        m2, rows2 = score_bench(bench, items, other)
        m["unconstrained" if constrained else "constrained_run"] = _key_metrics(m2)
        for r, r2 in zip(rows, rows2):
            r["prediction_" + ("unconstrained" if constrained else "constrained")] = r2["prediction"]
    return _timed((m, rows), t0)


def _timed(mr, t0):
    mr[0]["seconds"] = round(time.time() - t0, 2)
    return mr


def _key_metrics(m: dict) -> dict:
    keys = ("accuracy", "recall", "precision", "AP50", "parse_failures", "parse_failure_rate")
    return {k: m[k] for k in keys if k in m}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minigptv2 eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the embedded nano model)")
    p.add_argument("--bench", required=True, help="comma-separated bench names (listed above)")
    p.add_argument("--data", default=None, help="data root (its layout: docs/evaluation.md); optional for synthetic; "
                   "for jsonl, the .jsonl file itself")
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.md, predictions/, examples/)")
    p.add_argument("--batch-size", type=int, default=10, help="prompts per generate call (official: 10)")
    p.add_argument("--limit", type=int, default=None, help="first N records per bench (synthetic: N scenes)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override the per-task defaults")
    p.add_argument("--no-constrain", action="store_true", help="turn constrained box decoding off")
    p.add_argument("--compare-constrained", action="store_true",
                   help="run the box benches with and without the constraint and report both")
    p.add_argument("--examples", type=int, default=8, help="examples drawn per bench in examples/*.png (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--views", default=None,
                   help="synthetic_views: comma-separated views to ask besides alone (default: all of "
                        f"{','.join(VIEWS[1:])})")
    add_device_args(p, quantize=True)
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.limit is not None and a.limit < 1:
        raise MiniGPTv2Error(f"--limit must be >= 1, got {a.limit}")
    benches = expand_benches(a.bench)
    no_data = ("synthetic", "synthetic_views")
    if a.data is None and any(b not in no_data for b in benches):
        raise MiniGPTv2Error("--data ROOT is required for " + ", ".join(b for b in benches if b not in no_data))
    views = tuple(a.views.split(",")) if a.views else VIEWS
    if set(views) - set(VIEWS):
        raise MiniGPTv2Error(f"--views: unknown view(s) {sorted(set(views) - set(VIEWS))}; known: {', '.join(VIEWS)}")
    root = Path(a.data) if a.data else None
    if "jsonl" in benches:          # --data is the file itself
        if len(benches) > 1 or not root.is_file():
            raise MiniGPTv2Error(f"--bench jsonl takes --data FILE.jsonl, alone (a held-out split in the training "
                                 f"format, e.g. test.jsonl of `minigptv2 data convert`); got {root}")
    elif root is not None and not root.is_dir():
        raise MiniGPTv2Error(f"--data folder not found: {root}")

    from minigptv2 import load

    model, processor = load(a.model, **load_kwargs(a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": a.model or "nano (embedded)", "data": a.data, "limit": a.limit, "batch_size": a.batch_size,
               "constrained": not a.no_constrain, "benches": {}}
    for bench in benches:
        kw = dict(batch_size=a.batch_size, constrained=not a.no_constrain, compare_constrained=a.compare_constrained,
                  max_new_tokens=a.max_new_tokens, progress=not a.quiet)
        if bench in no_data:
            data_dir = root or out / "synthetic_data"
            if root is None and not (data_dir / "scenes.jsonl").is_file():
                from minigptv2.synthetic import write_synthetic

                write_synthetic(data_dir, n=a.limit or 500, seed=HELDOUT_SEED)
            if bench == "synthetic":
                m, rows = run_synthetic(model, processor, data_dir, a.limit, **kw)
            else:
                m, rows = run_views(model, processor, data_dir, a.limit, a.batch_size, not a.no_constrain,
                                    views=views, progress=not a.quiet)
        elif bench == "jsonl":
            m, rows = run_jsonl(model, processor, root, a.limit, **kw)
        else:
            m, rows = run_bench(model, processor, bench, root, a.limit, **kw)
        summary["benches"][bench] = m
        write_predictions(rows, out / "predictions" / f"{bench}.jsonl")
        if a.examples:
            example_grid(rows, out / "examples" / f"{bench}.png", n=a.examples)
        write_file(out / "metrics.json", json.dumps(summary, indent=2, default=str))
        write_file(out / "report.md", report_markdown(summary["benches"], Path(a.model).name if a.model else "nano"))
        print(f"{bench}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float)), flush=True)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'predictions'}, {out / 'examples'}")
    return 0


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
