"""Benchmark 'train_step' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/train_step.py [--tiny] [--batch 4] [--steps 2] [--image-size 224]
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import build, meta, official_loss_sum, peak_rss_mb, script_main, train_samples  # noqa: E402


def measure(args) -> dict:
    """Training step (forward + backward; the optimizer step is skipped so both paths see the same weights)
    samples/s: ours (make_batch + loss_sum) vs the baseline."""
    from minigptv2.train.batches import make_batch
    from minigptv2.train.loop import loss_sum, param_groups

    size = args.image_size or (224 if args.model == "smol" else None)    # smol trains at 224 px here, not 448
    model, proc = build(args.model, size, lora=True)
    model.set_trainable(model.config.trainable)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-5)
    n = args.batch
    batches = [train_samples(n, seed=10 + k) for k in range(args.steps + 1)]

    def ours(samples):
        b = make_batch(proc, samples, True, True)
        return loss_sum(model, b, torch.float32)

    def official(samples):
        return official_loss_sum(model, proc, samples)

    losses, times = {}, {}
    for name, fn in (("official", official), ("ours", ours)):
        ts, ls = [], []
        for k, samples in enumerate(batches):
            t = time.perf_counter()
            s, cnt = fn(samples)
            (s / max(cnt, 1)).backward()
            opt.zero_grad(set_to_none=True)   # identical weights for both paths: gradients computed, no update
            ts.append(time.perf_counter() - t)
            ls.append(round(float(s.detach()) / max(cnt, 1), 6))
        times[name], losses[name] = ts[1:], ls   # first step = warm-up
    sps = {k: n * len(v) / sum(v) for k, v in times.items()}
    out = {"bench": "train_step", "batch": n, "steps": args.steps, "trainable": model.config.trainable,
           "official_samples_s": round(sps["official"], 3), "ours_samples_s": round(sps["ours"], 3),
           "ratio": round(sps["ours"] / sps["official"], 3),
           "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["official"], losses["ours"])),
           "note": "forward + backward per step; optimizer step skipped so both paths see the same weights",
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return meta(args, out)


def main(argv=None) -> int:
    return script_main(measure, argv, batch=(4, 4), steps=(2, 1))


if __name__ == "__main__":
    sys.exit(main())
