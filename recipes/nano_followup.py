"""The recipe's last phase, `followup` (follow-up turns and reworded instructions; issue #31), run on its own from
an already trained nano model (how the model installed before the pointing recipe was made from the one before
it; docs/nano.md research log).

    python -m recipes.nano_followup --work runs/followup --init PREVIOUS_NANO   # ~14 min on 2 CPU cores, native bf16
    python -m recipes.nano_followup --work runs/followup --steps 200            # a quick try from the installed model
    python -m recipes.nano_followup --work runs/f --init PREVIOUS_NANO --seed 1  # another draw of samples (a check)

`python -m recipes.nano` runs the same phase as its last stage. Trains RECIPE["followup"] (recipes/nano.py) on the
recipe's training scenes (RECIPE["data_all"]: the same 20,000 scenes with the synthetic_dialog /
synthetic_paraphrase kinds, data/synthetic_dialogs.py) and saves the result in WORK/model (never over the
installed model), its recipe.json the init's with this phase added. The ViT stays frozen, as in every stage of
the recipe. Score it with `minigptv2 eval --model WORK/model --bench synthetic,synthetic_views --data DIR`
(docs/nano.md).
"""
from __future__ import annotations

from pathlib import Path


def run(work, init=None, steps: int | None = None, log=print, seed: int | None = None) -> Path:
    """Train the `followup` phase in `work` from `init` (default: the installed nano); returns WORK/model.
    `seed` (default RECIPE["seed"]) draws the samples: another seed is another model, for checking the phase."""
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

    work, init = Path(work), Path(init or NANO_DIR)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = work / "data"
    if not (data / "mixture.json").is_file():
        write_synthetic(data, **RECIPE["data_all"])
    sc = dict(RECIPE["followup"], steps=steps or RECIPE["followup"]["steps"])
    mix = _mixture_with_ratios(data, sc.pop("ratios"), "mixture_followup.json")
    parts = [(ds, r) for ds, r in load_mixture(mix)]
    model, proc = ckpt.load(init, dtype=torch.float32)
    trainable = {"vit": "frozen", "projector": "full", "llm": "full"}
    tc = TrainConfig(seed=RECIPE["seed"] if seed is None else seed, **sc, trainable=trainable, weight_decay=0.05, grad_clip=1.0,
                     save_every=10 ** 9, precision=RECIPE["precision"])
    cache = VisionCache(model, proc, ckpt.DTYPES[tc.precision], init_distributed()[2])
    t = time.perf_counter()
    losses = train(model, proc, Mixture(parts, tc.seed), tc, work / "followup", cache=cache)
    times = {"data_s": t - t0, "followup_s": time.perf_counter() - t}
    model.eval()
    before = json.loads((init / "recipe.json").read_text()) if (init / "recipe.json").is_file() else {}
    record = dict(before, followup={"settings": dict(RECIPE["followup"], steps=sc["steps"]), "seed": tc.seed,
                                    "init": str(init),
                                    "times": times, "last_losses": losses[-20:],
                                    "torch_threads": torch.get_num_threads()})
    out = ckpt.save(model, proc, work / "model", overwrite=True,
                    extra=lambda d: (d / "recipe.json").write_text(json.dumps(record, indent=1)))
    log(f"follow-up phase: {sc['steps']} steps in {times['followup_s'] / 60:.1f} min -> {out}")
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m recipes.nano_followup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="working folder (data/, followup/, model/)")
    p.add_argument("--init", default=None, help="model folder to start from (default: the installed nano)")
    p.add_argument("--steps", type=int, default=None, help="steps (default: RECIPE['followup']['steps'])")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: RECIPE['seed'], the installed one)")
    a = p.parse_args(argv)
    run(a.work, a.init, a.steps, seed=a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
