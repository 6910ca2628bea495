"""A short `stage_all` pilot that measures whether nano binds names to places (issue #31), at small cost.

    python -m recipes.nano_binding_pilot --work runs/bind --steps 1500 --seed 0 --variant control
    python -m recipes.nano_binding_pilot --work runs/bind --steps 1500 --seed 0 --variant bind

Data, tokenizer and model as `recipes.nano.run` builds them (RECIPE). The ViT is pretrained once (RECIPE's
1,200 steps, seed RECIPE["seed"]) and kept in WORK/vit.safetensors, so every pilot in WORK starts from the same
ViT and only the stage differs. Then a shortened `stage_all` (RECIPE's settings, `--steps` steps, its cosine over
them; `--seed` seeds the LLM and projector init and the batches), the model saved to WORK/<variant>_s<seed>_<steps>/
model and scored by `minigptv2 eval --bench synthetic` on the first `--eval-limit` scenes of a held-out set
(write_synthetic(n=150, seed=999)). refer Acc@0.5 and refer_names_differ are the measures (docs/nano.md), and
`binding` (pilot.json): of the multi-object refer answers that land on some object, the fraction on the one asked
for, against chance (names_differ also counts noisy boxes that differ). One torch thread unless OMP_NUM_THREADS.

Variants: control = RECIPE's stage_all mixture throughout. bind = first `--bind-steps` steps on refer (refcoco) and
phrase -> box (flickr_phrase_to_object) only, on separate scenes of 2-3 objects (where the name decides the box),
each with its own warmup + cosine, then the usual mixture for the remaining steps (same number of steps in all).
point = control + the pointing loss on one attention head
(`--point-layer`, head 0; eager attention): in a sample with exactly one box (in its prompt or its answer), every
answer position should attend to the visual tokens that box overlaps (minigptv2/train/pointing.py; RECIPE's
stage_all now trains with it). The run's folder is
named after the variant, its weight and layer, the seed and the steps (e.g. point_w0.5_l1_s0_3000).

`--then focus_identify,focus_vqa` continues with RECIPE's later stages (their settings and ratios, the plain loss;
`--then-steps` shortens each), and `--from RUN` starts those from an earlier pilot's model instead of running the
pilot: the folder is then RUN+focus_identify+focus_vqa.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("control", "bind", "point")
BIND_DATA = dict(n=5000, seed=3, max_objects=3, object_weights=(0, 1, 1))   # scenes of 2-3 objects, not in data_all
BIND_RATIOS = {"refcoco": 1, "flickr_phrase_to_object": 1}


def binding(pred_file, scenes_file) -> dict:
    """Refer answers on multi-object test scenes: `on_object` = fraction whose box hits (IoU >= 0.5) some object of
    the scene, `bound` = of those, the fraction on the object asked for, `chance` = mean 1 / objects (what `bound`
    is for a model that reads boxes but ignores the name). refer_names_differ also counts noisy boxes as differing."""
    from minigptv2.boxes import iou

    objs = {Path(s["image"]).name: s["objects"] for s in map(json.loads, Path(scenes_file).read_text().splitlines())}
    n = on = right = 0
    chance = 0.0
    for r in map(json.loads, Path(pred_file).read_text().splitlines()):
        o = objs[Path(r["image"]).name]
        if r["task"] != "refer" or len(o) < 2:
            continue
        ious = [iou(r["pred_box_xyxy"], x["box"]) if r.get("pred_box_xyxy") else 0.0 for x in o]
        n, chance = n + 1, chance + 1 / len(o)
        on += max(ious) >= 0.5
        right += ious[int(r["id"].rsplit("_", 1)[1])] >= 0.5
    return {"on_object": on / max(n, 1), "bound": right / max(on, 1), "chance": chance / max(n, 1), "n": n}


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m recipes.nano_binding_pilot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="folder: data, tokenizer, vit.safetensors, one folder per pilot")
    p.add_argument("--steps", type=int, default=1500, help="stage_all steps in all (bind: including its phase)")
    p.add_argument("--seed", type=int, default=0, help="LLM / projector init and batch seed")
    p.add_argument("--variant", choices=VARIANTS, default="control")
    p.add_argument("--bind-steps", type=int, default=300, help="bind: steps of the refer + phrase -> box phase")
    p.add_argument("--point-weight", type=float, default=0.5, help="point: weight of the pointing loss")
    p.add_argument("--point-layer", type=int, default=1, help="point: the LLM layer whose head points")
    p.add_argument("--vit-steps", type=int, default=None, help="ViT pretraining steps (default RECIPE's 1,200)")
    p.add_argument("--vit-batch", type=int, default=None, help="ViT pretraining batch (default RECIPE's 64)")
    p.add_argument("--batch-size", type=int, default=None, help="stage batch (default RECIPE's 32)")
    p.add_argument("--data-n", type=int, default=None, help="scenes in data_all (default RECIPE's 20,000)")
    p.add_argument("--test-n", type=int, default=150, help="held-out scenes written (seed 999)")
    p.add_argument("--eval-limit", type=int, default=150, help="scenes scored (0: no eval)")
    p.add_argument("--tokenizer-texts", type=int, default=20000)
    p.add_argument("--then", default="", help="RECIPE stages to run after the pilot, comma-separated (e.g. "
                   "focus_identify,focus_vqa), each with its own settings and ratios, without the variant's loss")
    p.add_argument("--then-steps", type=int, default=None, help="steps of each --then stage (default: its own)")
    p.add_argument("--from", dest="from_run", default=None,
                   help="a pilot folder in WORK: start from its model/ instead of running the pilot (needs --then)")
    a = p.parse_args(argv)
    if a.steps < 1 or (a.variant == "bind" and not 0 < a.bind_steps < a.steps):
        p.error("--steps must be positive and, for bind, 0 < --bind-steps < --steps")
    from recipes.nano import RECIPE

    a.then = [x for x in a.then.split(",") if x]
    if any(x not in RECIPE["stages"] for x in a.then) or (a.from_run and not a.then):
        p.error(f"--then takes stages of RECIPE['stages'] {RECIPE['stages']}; --from needs --then")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    import torch
    from safetensors.torch import load_file, save_file

    from minigptv2 import checkpoint as ckpt
    from minigptv2.data.datasets import load_mixture
    from minigptv2.synthetic import write_synthetic
    from minigptv2.tokenizers import Tokenizer
    from minigptv2.train.batches import VisionCache
    from recipes.nano import (RECIPE, _mixture_with_ratios, build_model, pretrain_recipe_vit, recipe_tokenizer,
                              run_stage)

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    R = RECIPE
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"_w{a.point_weight:g}_l{a.point_layer}" if a.variant == "point" else ""
    run_dir = work / (a.from_run or f"{a.variant}{tag}_s{a.seed}_{a.steps}")
    if a.then:
        run_dir = run_dir.with_name(run_dir.name + "+" + "+".join(a.then))
    t0 = time.perf_counter()
    times = {}
    data_all = dict(R["data_all"], **({"n": a.data_n} if a.data_n else {}))
    for name, spec in (("data_all", data_all), ("test", dict(n=a.test_n, seed=999)),
                       *((("data_bind", BIND_DATA),) if a.variant == "bind" else ())):
        if not (work / name / "mixture.json").is_file():
            write_synthetic(work / name, **spec)
    mix_all = _mixture_with_ratios(work / "data_all", R["ratios"], "mixture_nano.json")
    if (work / "tokenizer.model").is_file():        # built by an earlier pilot in WORK
        datasets, tok = [ds for ds, _ in load_mixture(mix_all)], Tokenizer(work / "tokenizer.model")
    else:
        datasets, tok = recipe_tokenizer(mix_all, R, work / "tokenizer.model", a.tokenizer_texts)
    times["data_and_tokenizer_s"] = time.perf_counter() - t0

    torch.manual_seed(a.seed)
    model, proc = build_model(R, tok)
    vit_file = work / "vit.safetensors"
    if a.from_run:
        model, proc = ckpt.load(work / a.from_run / "model")
        print(f"from {work / a.from_run / 'model'}")
    elif vit_file.is_file():
        model.visual_encoder.load_state_dict(load_file(vit_file))
        model.visual_encoder.eval()
        print(f"ViT from {vit_file}")
    else:
        t = time.perf_counter()
        pretrain_recipe_vit(model, proc, R, steps=a.vit_steps, batch=a.vit_batch)
        save_file({k: v.contiguous() for k, v in model.visual_encoder.state_dict().items()}, vit_file)
        times["vit_pretrain_s"] = time.perf_counter() - t
        print(f"ViT pretrained in {times['vit_pretrain_s'] / 60:.1f} min -> {vit_file}")
    if not a.from_run:
        torch.manual_seed(a.seed)
        torch.nn.init.normal_(model.llama_proj.weight, std=R["proj_init_std"])
        torch.nn.init.zeros_(model.llama_proj.bias)

    trainable = {"vit": "frozen", "projector": "full", "llm": "full"}
    cache = VisionCache(model, proc, ckpt.DTYPES[R["precision"]], torch.device("cpu"))
    phases = [] if a.from_run else [("stage_all", work / "data_all", datasets, mix_all, a.steps)]
    if a.variant == "bind":
        mix_b = _mixture_with_ratios(work / "data_bind", BIND_RATIOS, "mixture_bind.json")
        phases = [("bind", work / "data_bind", [ds for ds, _ in load_mixture(mix_b)], mix_b, a.bind_steps),
                  ("stage_all", work / "data_all", datasets, mix_all, a.steps - a.bind_steps)]
    for name, data_dir, dss, mix, steps in phases:
        t = time.perf_counter()
        sc = dict(R["stage_all"], steps=steps, **({"batch_size": a.batch_size} if a.batch_size else {}))
        # the pilots ran RECIPE's stage_all of before the pointing loss (sdpa, no pointing); point adds it (eager)
        sc.update(attention="sdpa", pointing=None)
        if a.variant == "point":
            sc.update(attention="eager", pointing={"weight": a.point_weight, "layer": a.point_layer, "head": 0})
        if a.batch_size:
            sc["grad_accum"] = min(sc["grad_accum"], a.batch_size)
        run_stage(model, proc, dict(R, seed=a.seed, **{name: sc}), name, dss, data_dir, mix, run_dir / name, cache,
                  save_every=10 ** 9, progress=False)
        times[f"{name}_s"] = time.perf_counter() - t
        print(f"{name}: {steps} steps in {times[f'{name}_s'] / 60:.1f} min")
    for stage in a.then:                          # the recipe's later stages, as recipes.nano.run runs them
        t = time.perf_counter()
        run_stage(model, proc, R, stage, datasets, work / "data_all", mix_all, run_dir / stage, cache,
                  steps=a.then_steps, save_every=10 ** 9, progress=False)
        times[f"{stage}_s"] = time.perf_counter() - t
        print(f"{stage}: {a.then_steps or R[stage]['steps']} steps in {times[f'{stage}_s'] / 60:.1f} min")
    model.config.trainable = trainable
    model.eval()
    info = {"args": vars(a), "bind_data": BIND_DATA, "bind_ratios": BIND_RATIOS, "times": times,
            "torch_threads": torch.get_num_threads()}
    out = ckpt.save(model, tok, run_dir / "model", overwrite=True,
                    extra=lambda d: (d / "pilot.json").write_text(json.dumps(info, indent=1)))
    if a.eval_limit:
        t = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1")
        subprocess.run([sys.executable, "-m", "minigptv2.cli", "eval", "--model", str(out), "--bench", "synthetic",
                        "--data", str(work / "test"), "--limit", str(a.eval_limit), "--out", str(run_dir / "eval"),
                        "--batch-size", "32", "--examples", "0", "--quiet"], check=True, env=env)
        times["eval_s"] = time.perf_counter() - t
        m = json.loads((run_dir / "eval" / "metrics.json").read_text())["benches"]["synthetic"]
        keys = ("refer_acc", "refer_names_differ", "detection_recall", "identify_em", "vqa_em", "caption_em")
        info["metrics"] = {k: m.get(k) for k in keys} | {"refer_by_objects": m["by_objects"].get("refer_acc")}
        info["metrics"]["binding"] = binding(run_dir / "eval" / "predictions" / "synthetic.jsonl",
                                             work / "test" / "scenes.jsonl")
    (run_dir / "pilot.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({"run": run_dir.name, "times_min": {k: round(v / 60, 2) for k, v in times.items()},
                      **info.get("metrics", {})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
