"""The web demo's conversation as a measure (issue #31): "how many shapes are there?" asked alone, and asked right
after a refer answer about the same scene, on fresh scenes (`make_scene` seeds 1000 onwards, never trained on).

    python -m recipes.nano_conversation                       # the installed nano model, 150 scenes
    python -m recipes.nano_conversation --model runs/nano/model --n 150

The refer turn is the web demo's ("[refer] " + the first object's name, tests/serve/test_browser.py), answered by
the model itself with constrained boxes; the count is right when the answer is the number word. The views bench
(`minigptv2 eval --bench synthetic_views`) averages this case into "VQA as the 2nd turn" over every question kind
and every earlier task, where a failure of just this case does not show (docs/nano-log-2026-12-05-a.md, "VQA pointing").
"""
from __future__ import annotations

import argparse
import json
import random

COUNT = "[vqa] how many shapes are there?"


def measure(model, processor, seeds, batch_size: int = 32) -> dict:
    """{"n", "alone", "after_refer"}: the share of scenes whose count answer is right, asked alone and as the
    second turn after the model's own refer answer."""
    from minigptv2.generate import generate
    from minigptv2.synthetic import NUMBERS, make_scene

    scenes = [make_scene(random.Random(s)) for s in seeds]
    right = {"alone": 0, "after_refer": 0}
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i:i + batch_size]
        images = [s.image for s in chunk]
        truth = [NUMBERS[len(s.objects)] for s in chunk]
        refer = [f"[refer] {s.objects[0].name}" for s in chunk]
        boxes = generate(model, processor, images, refer, max_new_tokens=20, constrain_boxes=True)
        alone = generate(model, processor, images, [COUNT] * len(chunk), max_new_tokens=10)
        turns = [[{"role": "user", "content": q}, {"role": "assistant", "content": b.text},
                  {"role": "user", "content": COUNT}] for q, b in zip(refer, boxes)]
        after = generate(model, processor, images, turns, max_new_tokens=10)
        right["alone"] += sum(r.text.strip() == t for r, t in zip(alone, truth))
        right["after_refer"] += sum(r.text.strip() == t for r, t in zip(after, truth))
    return {"n": len(scenes), **{k: v / len(scenes) for k, v in right.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.nano_conversation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the installed nano model)")
    p.add_argument("--n", type=int, default=150, help="how many fresh scenes (seeds 1000 onwards)")
    a = p.parse_args(argv)
    from minigptv2 import load

    model, processor = load(a.model)
    print(json.dumps({"model": a.model or "nano", **measure(model, processor, range(1000, 1000 + a.n))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
