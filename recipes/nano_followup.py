"""A short continuation of the installed nano model on follow-up turns and reworded instructions (issue #31).

    python -m recipes.nano_followup --work runs/followup           # ~15 min on 2 CPU cores with native bf16
    python -m recipes.nano_followup --work runs/followup --steps 200  # a quick try

Starts from minigptv2/assets/nano (or --init), trains one phase on the recipe's training scenes (recipes/nano.py
RECIPE["data_all"]: the same 20,000 scenes, written with `dialogs=True`) mixing the old tasks with the
synthetic_dialog / synthetic_paraphrase kinds (data/synthetic_dialogs.py), and saves the result in WORK/model
(never over the installed model). The ViT stays frozen, as in every stage of the recipe. Score it with
`minigptv2 eval --model WORK/model --bench synthetic,synthetic_views --data DIR` (docs/nano.md).
"""
from __future__ import annotations

from pathlib import Path

# the old tasks at the ratios of recipes/nano.py `mixed_identify` (its last phases), then the new kinds
FOLLOWUP = dict(
    steps=2400, batch_size=32, grad_accum=2, lr=3e-4, min_lr=2e-5, warmup_lr=3e-5, warmup_steps=50,
    cache_vision=True, attention="eager",
    ratios={"refcoco": 15, "flickr_phrase_to_object": 10, "invrefcoco": 30, "vqa": 22, "coco_caption": 12,
            "flickr_grounded_caption": 6, "flickr_caption_to_phrase": 1, "llava_conversation": 2,
            "unnatural_instruction": 2, "synthetic_dialog": 60, "synthetic_paraphrase": 50},
)


def run(work, init=None, steps: int | None = None, log=print) -> Path:
    """Train the continuation phase in `work` from `init` (default: the installed nano); returns WORK/model."""
    import json
    import time

    import torch

    from minigptv2 import NANO_DIR
    from minigptv2 import checkpoint as ckpt
    from minigptv2.data.datasets import load_mixture
    from minigptv2.synthetic import write_synthetic
    from minigptv2.train.batches import Mixture, VisionCache
    from minigptv2.train.config import TrainConfig
    from minigptv2.train.distributed import init_distributed
    from minigptv2.train.loop import train
    from recipes.nano import RECIPE, _mixture_with_ratios

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = work / "data"
    if not (data / "mixture.json").is_file():
        write_synthetic(data, **RECIPE["data_all"], dialogs=True)
    sc = dict(FOLLOWUP, steps=steps or FOLLOWUP["steps"])
    mix = _mixture_with_ratios(data, sc.pop("ratios"), "mixture_followup.json")
    parts = [(ds, r) for ds, r in load_mixture(mix)]
    model, proc = ckpt.load(init or NANO_DIR, dtype=torch.float32)
    trainable = {"vit": "frozen", "projector": "full", "llm": "full"}
    tc = TrainConfig(seed=RECIPE["seed"], **sc, trainable=trainable, weight_decay=0.05, grad_clip=1.0,
                     save_every=10 ** 9, precision=RECIPE["precision"])
    cache = VisionCache(model, proc, ckpt.DTYPES[tc.precision], init_distributed()[2])
    t = time.perf_counter()
    losses = train(model, proc, Mixture(parts, tc.seed), tc, work / "followup", cache=cache)
    times = {"data_s": t - t0, "followup_s": time.perf_counter() - t}
    model.eval()
    out = ckpt.save(model, proc, work / "model", overwrite=True, extra=lambda d: (d / "recipe.json").write_text(
        json.dumps({"followup": dict(FOLLOWUP, steps=sc["steps"]), "init": str(init or NANO_DIR), "times": times,
                    "last_losses": losses[-20:], "torch_threads": torch.get_num_threads()}, indent=1)))
    log(f"follow-up phase: {sc['steps']} steps in {times['followup_s'] / 60:.1f} min -> {out}")
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m recipes.nano_followup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="working folder (data/, followup/, model/)")
    p.add_argument("--init", default=None, help="model folder to start from (default: the installed nano)")
    p.add_argument("--steps", type=int, default=None, help=f"steps (default {FOLLOWUP['steps']})")
    a = p.parse_args(argv)
    run(a.work, a.init, a.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
