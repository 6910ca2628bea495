"""Benchmark 'prefix_cache' (BENCHMARKS.md): prints one JSON line; `--tiny` for a seconds-long run.

    python benchmarks/prefix_cache.py [--tiny] [--max-new-tokens 32] [--repeats 6]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import PROMPTS, build, images, meta, peak_rss_mb, script_main  # noqa: E402


def measure(args) -> dict:
    """Questions about one image: plain generate vs the image/prefix cache (first = miss, later = hits)."""
    from minigptv2.generate import PrefixCache, generate, generate_cached

    model, proc = build(args.model, args.image_size)
    [im] = images(1, seed=2)
    qs = PROMPTS[: args.repeats + 1]
    generate(model, proc, [images(1, seed=3)[0]], [qs[0]], max_new_tokens=2)   # warm-up
    cache = PrefixCache()
    plain, cached, same = [], [], True
    for q in qs:
        t = time.perf_counter()
        [a] = generate(model, proc, [im], [q], max_new_tokens=args.max_new_tokens)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = generate_cached(model, proc, im, q, cache, max_new_tokens=args.max_new_tokens)
        cached.append(time.perf_counter() - t)
        same &= a.token_ids == b.token_ids
    later = sorted(cached[1:])[len(cached[1:]) // 2]
    out = {"bench": "prefix_cache", "max_new_tokens": args.max_new_tokens, "questions": len(qs),
           "same_token_ids": same, "plain_s": [round(x, 3) for x in plain], "cached_s": [round(x, 3) for x in cached],
           "first_question_s": round(cached[0], 3), "later_question_median_s": round(later, 3),
           "speedup_later_vs_first": round(cached[0] / later, 3),
           "speedup_later_vs_plain": round(sorted(plain[1:])[len(plain[1:]) // 2] / later, 3),
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return meta(args, out)


def main(argv=None) -> int:
    return script_main(measure, argv, max_new_tokens=(32, 8), repeats=(6, 2))


if __name__ == "__main__":
    sys.exit(main())
