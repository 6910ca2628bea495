"""Benchmark 'latency' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/latency.py [--tiny] [--max-new-tokens 32] [--repeats 6]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    build, meta, ntok, official_generate, ours_generate, peak_rss_mb, requests, script_main, timed,
)


def measure(args) -> dict:
    """Single request: wall time and time-to-first-token, baseline vs ours (median of --repeats)."""
    model, proc = build(args.model, args.image_size)
    ims, ps = requests(args.repeats + 1)
    # warm-up (first call pays one-off costs)
    ours_generate(model, proc, ims[:1], ps[:1], 2)
    official_generate(model, proc, ims[:1], ps[:1], 2)
    res = {"official": [], "ours": []}
    same = True
    for i in range(1, args.repeats + 1):   # alternate which path runs first: the second run is often slower
        if i % 2:
            a, ta, fa = timed(official_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
            b, tb, fb = timed(ours_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
        else:
            b, tb, fb = timed(ours_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
            a, ta, fa = timed(official_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
        same &= a == b
        res["official"].append((ta, fa, ntok(a)))
        res["ours"].append((tb, fb, ntok(b)))

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    out = {"bench": "latency", "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
           "same_token_ids": same}
    for k, v in res.items():
        out[f"{k}_latency_s"] = round(med([x[0] for x in v]), 4)
        out[f"{k}_ttft_s"] = round(med([x[1] for x in v]), 4)
        out[f"{k}_new_tokens"] = v[0][2]
        out[f"{k}_decode_tok_s"] = round(med([(x[2] - 1) / max(1e-9, x[0] - x[1]) for x in v]), 2)
    out["latency_ratio_ours_over_official"] = round(out["ours_latency_s"] / out["official_latency_s"], 3)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return meta(args, out)


def main(argv=None) -> int:
    return script_main(measure, argv, max_new_tokens=(32, 8), repeats=(6, 2))


if __name__ == "__main__":
    sys.exit(main())
