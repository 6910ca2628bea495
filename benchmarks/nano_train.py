"""Benchmark 'nano_train' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/nano_train.py [--tiny] [--model nano] [--batch 32] [--steps 40]
"""
import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import build, meta, peak_rss_mb, script_main  # noqa: E402


def measure(args) -> dict:
    """The nano recipe's training step (global batch --batch in 2 length-sorted micro-batches, bf16 where native,
    cached frozen-ViT output, AdamW) with the LLM's attention as sdpa and as eager (TrainConfig.attention), from
    the same weights, interleaved so a slow moment hits both: median seconds per step of each."""
    import copy
    import statistics
    import tempfile

    from minigptv2 import checkpoint as ckpt
    from minigptv2.train.batches import Mixture, VisionCache
    from minigptv2.train.config import TrainConfig, resolve_precision
    from minigptv2.train.loop import train
    from minigptv2.data.datasets import load_mixture
    from minigptv2.synthetic import write_synthetic

    model, proc = build(args.model, args.image_size)
    start = copy.deepcopy(model.state_dict())
    precision = resolve_precision("auto", torch.device("cpu"))
    tc = TrainConfig(steps=args.steps + 1, batch_size=args.batch, grad_accum=2, lr=4e-4, min_lr=2e-5,
                     warmup_lr=4e-5, warmup_steps=0, trainable={"vit": "frozen", "projector": "full", "llm": "full"},
                     grad_clip=1.0, precision=precision, cache_vision=True, save_every=10 ** 9)
    cache = VisionCache(model, proc, ckpt.DTYPES[precision], torch.device("cpu"))
    times, losses = {"sdpa": [], "eager": []}, {}
    with tempfile.TemporaryDirectory() as d:
        write_synthetic(Path(d) / "data", n=64, seed=0, max_objects=3)
        mix = Mixture(load_mixture(Path(d) / "data" / "mixture.json"), seed=0)
        for k, attention in enumerate(("sdpa", "sdpa", "eager", "sdpa", "eager")):   # the first fills the cache
            model.load_state_dict(start)
            out = Path(d) / f"run{k}"
            with contextlib.redirect_stdout(io.StringIO()):      # train() prints its schedule: one JSON line here
                ls = train(model, proc, mix, dataclasses.replace(tc, attention=attention), out, progress=False,
                           cache=cache)
            rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
            if k:
                times[attention] += [args.batch / r["samples_per_s"] for r in rows[1:]]   # step 1: warm-up
                losses.setdefault(attention, ls)
    med = {a: statistics.median(t) for a, t in times.items()}
    out = {"bench": "nano_train", "batch": args.batch, "steps": args.steps, "precision": precision,
           "sdpa_s_per_step": round(med["sdpa"], 4), "eager_s_per_step": round(med["eager"], 4),
           "eager_speedup": round(med["sdpa"] / med["eager"], 3),
           "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["sdpa"], losses["eager"])),
           "note": "the same steps from the same weights; losses differ by rounding only",
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return meta(args, out)


def main(argv=None) -> int:
    return script_main(measure, argv, model=("nano", "tiny"), batch=(32, 4), steps=(40, 1))


if __name__ == "__main__":
    sys.exit(main())
