"""Benchmark 'generate_batch' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/generate_batch.py [--tiny] [--max-new-tokens 32] [--batch 16]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    build, meta, ntok, official_generate, ours_generate, peak_rss_mb, requests, script_main, timed,
)


def measure(args) -> dict:
    """N requests: the baseline one request at a time vs ours as one batch."""
    model, proc = build(args.model, args.image_size)
    n = args.batch
    ims, ps = requests(n, seed=1)
    ours_generate(model, proc, ims[:1], ps[:1], 2)
    official_generate(model, proc, ims[:1], ps[:1], 2)
    t = time.perf_counter()
    base = [official_generate(model, proc, [im], [p], args.max_new_tokens)[0] for im, p in zip(ims, ps)]
    t_base = time.perf_counter() - t
    ours, t_ours, ttft = timed(ours_generate, model, proc, ims, ps, args.max_new_tokens)
    out = {"bench": "generate_batch", "batch": n, "max_new_tokens": args.max_new_tokens,
           "same_token_ids": base == ours, "n_rows_differ": sum(a != b for a, b in zip(base, ours)),
           "official_sequential_s": round(t_base, 3), "ours_batched_s": round(t_ours, 3),
           "ours_ttft_s": round(ttft, 3) if ttft else None,
           "official_tok_s": round(ntok(base) / t_base, 2), "ours_tok_s": round(ntok(ours) / t_ours, 2),
           "official_req_s": round(n / t_base, 3), "ours_req_s": round(n / t_ours, 3),
           "throughput_ratio": round(t_base / t_ours, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
    return meta(args, out)


def main(argv=None) -> int:
    return script_main(measure, argv, max_new_tokens=(32, 8), batch=(16, 4))


if __name__ == "__main__":
    sys.exit(main())
