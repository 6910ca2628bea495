"""Benchmark 'scaling' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/scaling.py [--tiny] [--max-new-tokens 32] [--batches 1 4 16 64] [--lengths 16 32 64]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import build, meta, ntok, ours_generate, peak_rss_mb, requests, script_main, timed  # noqa: E402


def measure(args) -> dict:
    """Ours: wall time, TTFT, tokens/s and peak RSS for each batch size (--max-new-tokens) and, at batch 1,
    each output length (--lengths). Peak RSS is the process maximum so far (rows run in increasing size)."""
    model, proc = build(args.model, args.image_size)
    ours_generate(model, proc, *requests(1), 2)
    rows = []
    runs = [(1, m) for m in args.lengths] + [(n, args.max_new_tokens) for n in args.batches]
    for n, m in sorted(set(runs)):
        ims, ps = requests(n, seed=4)
        ids, t, ttft = timed(ours_generate, model, proc, ims, ps, m)
        rows.append({"batch": n, "max_new_tokens": m, "wall_s": round(t, 3), "ttft_s": round(ttft, 3),
                     "new_tokens": ntok(ids), "tok_s": round(ntok(ids) / t, 2),
                     "decode_tok_s": round((ntok(ids) - n) / max(1e-9, t - ttft), 2),
                     "peak_rss_mb_so_far": round(peak_rss_mb(), 1)})
    return meta(args, {"bench": "scaling", "rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1)})


def main(argv=None) -> int:
    return script_main(measure, argv, max_new_tokens=(32, 8), batches=([1, 4, 16, 64], [1, 2]),
                       lengths=([16, 32, 64], [4, 8]))


if __name__ == "__main__":
    sys.exit(main())
