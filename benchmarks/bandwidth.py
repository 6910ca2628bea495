"""Benchmark 'bandwidth' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/bandwidth.py [--tiny] [--copy-mb 512] [--max-new-tokens 32] [--repeats 6]
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import build, meta, ntok, ours_generate, peak_rss_mb, requests, script_main, timed  # noqa: E402


def measure(args) -> dict:
    """Memory bandwidth (large-tensor copy) and the batch-1 decode bound: LLM weight bytes per token ÷ bandwidth."""
    n = (args.copy_mb * 2 ** 20) // 4
    a, b = torch.randn(n), torch.empty(n)
    b.copy_(a)
    best = float("inf")
    for _ in range(args.repeats + 2):
        t = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t)
    bw = 2 * a.numel() * 4 / best            # read + write
    del a, b
    model, proc = build(args.model, args.image_size)
    llm = model.language_model
    emb = llm.get_input_embeddings().weight
    # per decoded token every matrix is read once; the input embedding is one row (it is also lm_head when tied)
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
    if not llm.config.tie_word_embeddings:
        weight_bytes -= emb.numel() * emb.element_size() - emb.shape[1] * emb.element_size()
    bound_s = weight_bytes / bw
    # measured batch-1 decode step time (ours), from a timed generate
    ims, ps = requests(1, seed=5)
    ours_generate(model, proc, ims, ps, 2)
    ids, t, ttft = timed(ours_generate, model, proc, ims, ps, args.max_new_tokens)
    step = (t - ttft) / max(1, ntok(ids) - 1)
    out = {"bench": "bandwidth", "copy_mb": args.copy_mb, "copy_bandwidth_gb_s": round(bw / 1e9, 2),
           "llm_weight_mb": round(weight_bytes / 2 ** 20, 1), "decode_bound_ms_per_token": round(bound_s * 1e3, 2),
           "decode_bound_tok_s": round(1 / bound_s, 2), "measured_decode_ms_per_token": round(step * 1e3, 2),
           "measured_decode_tok_s": round(1 / step, 2), "fraction_of_bound": float(f"{bound_s / step:.3g}"),
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return meta(args, out)


def main(argv=None) -> int:
    return script_main(measure, argv, max_new_tokens=(32, 8), repeats=(6, 2), copy_mb=(512, 16))


if __name__ == "__main__":
    sys.exit(main())
