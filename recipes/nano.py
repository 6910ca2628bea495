"""The embedded default model ("nano") and the recipe of its committed weights (seed 0 of RECIPE on a 2-core AMD
EPYC Zen 4, two threads: docs/nano.md "Time and hardware").

    python -m recipes.nano --work runs/nano          # data, tokenizer, ViT, RECIPE['stages'] (docs/nano.md: times)
    OMP_NUM_THREADS=2 python -m recipes.nano --work runs/nano --install  # train, install the fp16 copy
    python -m recipes.nano --install-only runs/nano/model   # install an already trained folder
    python -m recipes.nano --work runs/nano --precision fp32  # CPUs without native bf16 (not bit-identical)
    python -m recipes.nano --work runs/nano_s1 --seed 1       # another seed (a check that the recipe is not luck)
    python -m recipes.nano --work runs/nano --resume          # go on after an interruption (same weights)
    python -m recipes.nano --work runs/nano_l1 --point-layer 1  # the pointing loss on layer 1 (the earlier recipe)

No pretrained ViT exists offline, so the tiny EVA ViT is trained together with the rest on synthetic scenes
(synthetic.py). The tokenizer is a SentencePiece BPE model we train on the synthetic texts, with single
pieces for the 0..100 coordinates, the task identifiers and the template markers, and byte fallback so any
text can be typed.
"""
from __future__ import annotations

from pathlib import Path

from minigptv2.errors import MiniGPTv2Error
from minigptv2.synthetic import COLORS
# the tokenizer builder lives in tokenizers.py (`minigptv2 train` builds one from a user's data too)
from minigptv2.tokenizers import SYMBOLS, build_tokenizer  # noqa: F401


# ---- stage 0: dense pretraining of the tiny ViT ------------------------------------------------------------
def patch_targets(objects, width: int, height: int, grid: int, classes: dict) -> tuple:
    """Per patch: the class of the object under the patch centre (0 = background) and that object's box
    (x1, y1, x2, y2) / (W, H). `objects` = [(class_name, (x1, y1, x2, y2) pixels)], later ones on top."""
    import torch

    cls = torch.zeros(grid * grid, dtype=torch.long)
    box = torch.zeros(grid * grid, 4)
    for name, (x1, y1, x2, y2) in objects:
        for r in range(grid):
            cy = (r + 0.5) / grid * height
            if not y1 <= cy < y2:
                continue
            for c in range(grid):
                cx = (c + 0.5) / grid * width
                if x1 <= cx < x2:
                    cls[r * grid + c] = classes[name]
                    box[r * grid + c] = torch.tensor([x1 / width, y1 / height, x2 / width, y2 / height])
    return cls, box


def pretrain_vit(vit, processor, scenes, classes: dict, steps: int, batch_size: int = 64, lr: float = 1e-3,
                 seed: int = 0, log=print, precision: str = "bf16") -> list[float]:
    """Train the ViT alone to tell, at every patch, which object covers it and where that object's box is.
    `scenes(i)` -> (image, [(class_name, box_pixels), ...]). A linear head is used and then thrown away.
    `precision`: the autocast dtype ("bf16" | "fp32")."""
    import math
    import random

    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    grid = vit.cfg.grid
    nc = len(classes) + 1
    head = torch.nn.Linear(vit.cfg.width, nc + 4)
    params = list(vit.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    vit.train()
    rng = random.Random(seed)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        pix, cls, box = [], [], []
        for _ in range(batch_size):
            img, objs = scenes(rng.randrange(1 << 30))
            pix.append(processor.tensor(img))
            c, b = patch_targets(objs, img.width, img.height, grid, classes)
            cls.append(c)
            box.append(b)
        pix, cls, box = torch.stack(pix), torch.stack(cls), torch.stack(box)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = head(vit(pix)[:, 1:]).float()                      # (B, grid², classes + 1 + 4)
        ce = F.cross_entropy(out[..., :nc].reshape(-1, nc), cls.reshape(-1))
        fg = cls > 0
        l1 = F.l1_loss(out[..., nc: nc + 4][fg], box[fg]) if fg.any() else out.sum() * 0
        loss = ce + 5 * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if log and (step % 50 == 0 or step == steps - 1):
            acc = (out[..., :nc].argmax(-1) == cls).float().mean().item()
            log(f"vit pretrain step {step}: loss {loss.item():.4f} patch acc {acc:.3f} box L1 {l1.item():.4f}")
    vit.eval()
    return losses


# ---- the recipe ----------------------------------------------------------------------------------------------
# Every number here is part of the recipe that produced minigptv2/assets/nano (see its recipe.json).
# The pointing loss of every stage that has it. Layer 2, not 1: on a draw whose stage_all bound at chance with
# layer 1 (bound 0.40), layer 2 bound 0.72 and the whole recipe met every floor (docs/nano-log-2026-12-06.md
# "Pointing on layer 2")
POINT = {"weight": 0.5, "layer": 2, "head": 0, "points": True}
# after stage_all the colour words of a one-box instruction are pointed at that box too ("words",
# train/pointing.py): without it seeds 0 and 1 picked among objects of one shape at about chance on some draws
# (0.46 / 0.68), with it 0.98 / 0.82 (docs/nano-log-2026-12-06.md "The shorter schedule with and without words").
# From stage_all on it stopped the binding of shapes too (names differ 0.14), so stage_all points as before.
POINT_WORDS = dict(POINT, words=list(COLORS))
RECIPE = dict(
    seed=0,
    # autocast dtype of every stage. bf16 needs a CPU with native bf16 (avx512_bf16): the installed model was
    # trained on one; on an AVX2-only CPU a bf16 step is ~10x slower than fp32 (docs/nano.md), so use --precision fp32
    precision="bf16",
    vocab_size=1024,
    llm=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=768),
    # No single-object warm-up stage: with one object the name never matters, and the model trained after one
    # answered every name of a multi-object scene with the same box (docs/nano.md: 0.119 -> 0.944 without it).
    # 1–3 objects; dialogs: also the synthetic_dialog / synthetic_paraphrase(_vqa) kinds (read from the same scenes,
    # trained on from `focus_vqa` on), and vqa.json's questions about one object carry its box
    # ("point", for the pointing loss); every text is byte for byte what is written without them
    data_all=dict(n=20000, seed=2, max_objects=3, dialogs=True),
    test=dict(n=600, seed=999, max_objects=3),           # held out, never trained on
    # sampling ratios per dataset kind (grounding tasks weighted up: they are the hard part). Two ~59 min variants
    # that gave VQA ~21 % lost box reading (refer 0.17 / 0.25): docs/nano.md, research log.
    ratios={"refcoco": 30, "flickr_phrase_to_object": 22, "invrefcoco": 10, "vqa": 12, "coco_caption": 8,
            "flickr_grounded_caption": 8, "flickr_caption_to_phrase": 4, "llava_conversation": 4,
            "unnatural_instruction": 2},
    vit_steps=1200, vit_batch=64, vit_lr=1e-3,   # patch acc 0.91 -> 0.99, box L1 0.075 -> 0.014 vs 400 steps
    proj_init_std=0.0007,        # visual tokens start at the text embeddings' scale (default init: ~30x larger)
    # grad_accum 2: each batch in two length-sorted halves (less padding, the same update). cache_vision: the frozen
    # ViT's output is kept per image (bit-identical losses, fewer seconds per step)
    # attention: the LLM's attention kernel (TrainConfig.attention). "eager" computes what "sdpa" does and takes
    # ~0.67x the time a step here (PyTorch's fused CPU attention backward is slow at these sizes: benchmarks/
    # nano_train.py), but rounds differently.
    # pointing (train/pointing.py): head 0 of POINT's layer is taught to look at the object of every one-box sample
    # (needs eager). Without it stage_all bound names to places on some seeds only, and only after 5,500 steps (refer
    # 0.754 / names differ 0.951 with sdpa, 0.479 / 0.853 rerun with eager); with it (on layer 1), 3,000-step
    # pilots bound on both seeds tried (docs/nano-log-2026-12-05-b.md "Two auxiliary losses for binding").
    # points: VQA questions about one object (what color is the circle? what shape is the red object? is there a red
    # circle?, when there is) are pointed at that object too (vqa.json's "point", written with dialogs): without it,
    # a from-scratch draw answered such questions without looking (VQA 0.849: docs/nano-log-2026-12-05-a.md
    # "VQA pointing")
    stage_all=dict(steps=3000, batch_size=32, grad_accum=2, lr=1.5e-3, min_lr=5e-5, warmup_lr=1e-4, warmup_steps=100,
                   cache_vision=True, attention="eager", pointing=POINT),
    # Focus phases: in the mixture neither identify nor yes/no VQA is learned (docs/nano.md), so after stage_all the LLM
    # trains on identify alone (it then answers every prompt with a name), then on VQA alone (colour-of-a-shape
    # questions are learned only there: 0.59 with refer and identify kept in, 0.87 without; docs/nano.md), then on the
    # whole mixture again to bring refer, detection, identify and caption back. 800 / 1,000 / 4,000 steps (1,200 /
    # 1,200 / 6,000 before `words`) and eager attention in focus_identify: the recipe within 60 min on 2 cores
    # (docs/nano.md "Time and hardware").
    focus_identify=dict(steps=800, batch_size=32, grad_accum=2, lr=1e-3, min_lr=5e-5, warmup_lr=1e-4,
                        warmup_steps=50, cache_vision=True, attention="eager", ratios={"invrefcoco": 1}),
    # focus_vqa: half its samples a VQA question in a training paraphrase (synthetic_paraphrase_vqa): with the
    # template questions alone, held-out wordings missed 0.9 of alone in 2-5 task x set cells (sets 4-10) over three
    # draws; with them 0-2 in three (docs/nano-log-2026-12-07.md)
    focus_vqa=dict(steps=1000, batch_size=32, grad_accum=2, lr=1e-3, min_lr=5e-5, warmup_lr=1e-4, warmup_steps=50,
                   cache_vision=True, attention="eager", pointing=POINT_WORDS,
                   ratios={"vqa": 1, "synthetic_paraphrase_vqa": 1}),
    # caption, VQA and identify above stage_all's share, chat and text down (VQA 15 / caption 14 / refer 25 /
    # phrase 18 here left caption at 0.790 and VQA at 0.894: docs/nano.md). pointing again: without it a draw whose
    # stage_all bound weakly lost the binding here (refer 0.53; docs/nano-log-2026-12-05-a.md "Seed 0 again with two
    # threads"). synthetic_paraphrase (one turn of any task in a training paraphrase, word noise included): with
    # paraphrases only in `followup`, the template words learned here decided the answer's kind in other wordings
    # (held-out VQA 0.895 / identify 0.913 of alone on average over sets 4-10, seed 0; with them here 0.958 / 0.967:
    # docs/nano-log-2026-12-06.md "Paraphrases from stage_mixed on")
    stage_mixed=dict(steps=4000, batch_size=32, grad_accum=2, lr=4e-4, min_lr=2e-5, warmup_lr=4e-5, warmup_steps=50,
                     cache_vision=True, attention="eager", pointing=POINT_WORDS,
                     ratios={"refcoco": 23, "flickr_phrase_to_object": 16, "invrefcoco": 12, "vqa": 18,
                             "coco_caption": 16, "flickr_grounded_caption": 9, "flickr_caption_to_phrase": 2,
                             "llava_conversation": 2, "unnatural_instruction": 2, "synthetic_paraphrase": 20}),
    # Follow-up turns and other wordings (issue #31): the old tasks at identify-heavy ratios (refer and phrase -> box
    # down; the recipe before the pointing loss ran three 1,200-step phases at them after stage_mixed, for identify:
    # docs/nano.md; with pointing, identify met its floor without them) plus conversations
    # mixing every task (synthetic_dialog; a quarter of its later VQA turns ask the count: P_COUNT_AFTER in
    # data/synthetic_dialogs.py) and instructions in training paraphrases (synthetic_paraphrase,
    # synthetic_wordings.py). Before it, a caption asked after a box answer scored 0.00 (docs/nano.md).
    # inference_form: half the samples in the official inference prompt form, so both prompt forms are answered
    followup=dict(steps=1500, batch_size=32, grad_accum=2, lr=3e-4, min_lr=2e-5, warmup_lr=3e-5, warmup_steps=50,
                  cache_vision=True, attention="eager", inference_form=0.5,
                  pointing=POINT_WORDS,   # per turn: each answer at its own turn's box
                  ratios={"refcoco": 15, "flickr_phrase_to_object": 10, "invrefcoco": 30, "vqa": 22,
                          "coco_caption": 12, "flickr_grounded_caption": 6, "flickr_caption_to_phrase": 1,
                          "llava_conversation": 2, "unnatural_instruction": 2, "synthetic_dialog": 60,
                          "synthetic_paraphrase": 50}),
    stages=("stage_all", "focus_identify", "focus_vqa", "stage_mixed", "followup"),
)


def _mixture_with_ratios(data_dir: Path, ratios: dict, name: str) -> Path:
    """data_dir/name: data_dir's mixture.json with `ratios` (0 for the kinds not in them), written by replacing the
    file, so a work folder made with hard links to another run's (`cp -al`) does not rewrite that run's copy."""
    import json

    from minigptv2.atomic import write_file

    entries = json.loads((data_dir / "mixture.json").read_text())
    missing = set(ratios) - {e["kind"] for e in entries}
    if missing:
        raise MiniGPTv2Error(f"{data_dir / 'mixture.json'} has no {sorted(missing)} entries; the recipe's "
                             f"ratios name them (data written by an older version: delete the folder's data_all)")
    for e in entries:
        e["ratio"] = ratios.get(e["kind"], 0)
    return write_file(data_dir / name, json.dumps(entries, indent=1))


def _texts(datasets: list, n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    texts = ["[INST] <Img><ImageHere></Img> [/INST]"]
    for ds in datasets:
        for _ in range(max(1, n // len(datasets))):
            s = ds.sample(rng.randrange(len(ds)), rng)
            for q, a in s.turns:
                texts += [q, a]
    return texts


def recipe_tokenizer(mix_all: Path, R: dict, path: Path, n_texts: int = 20000):
    """Read the mixture's datasets (once; each stage only re-weights them) and build the tokenizer from the kinds
    of R["ratios"] only, so the dialog kinds (trained on from `focus_vqa` on) leave it as it was.
    -> (datasets, Tokenizer)"""
    import json

    from minigptv2.data.datasets import load_mixture
    from minigptv2.tokenizers import Tokenizer

    datasets = [ds for ds, _ in load_mixture(mix_all)]
    kinds = [e["kind"] for e in json.loads(Path(mix_all).read_text())]
    base = [ds for ds, kind in zip(datasets, kinds, strict=True) if kind in R["ratios"]]
    return datasets, Tokenizer(build_tokenizer(_texts(base, n_texts, R["seed"]), path, R["vocab_size"]))


def build_model(R: dict, tok):
    """A fresh nano-shaped model with the recipe's LLM sizes (R["llm"]) and the tokenizer's vocabulary, and its
    processor. -> (model, processor)"""
    from minigptv2.config import nano
    from minigptv2.model import MiniGPTv2ForConditionalGeneration
    from minigptv2.processor import build_processor

    cfg = nano()
    for k, v in {**R["llm"], "vocab_size": len(tok)}.items():
        setattr(cfg.text_config, k, v)
    return MiniGPTv2ForConditionalGeneration(cfg), build_processor(tok, cfg)


def pretrain_recipe_vit(model, proc, R: dict, log=print, steps: int | None = None, batch: int | None = None):
    """pretrain_vit on fresh synthetic scenes, one class per colour + shape, with R's settings (vit_steps,
    vit_batch, vit_lr, seed, precision; `steps` / `batch` override the first two)."""
    import random

    from minigptv2.synthetic import COLORS, SHAPES, make_scene

    classes = {f"{c} {s}": i + 1 for i, (c, s) in enumerate((c, s) for c in COLORS for s in SHAPES)}

    def scenes(seed):
        sc = make_scene(random.Random(seed))
        return sc.image, [(o.name, o.box) for o in sc.objects]

    pretrain_vit(model.visual_encoder, proc.image_processor, scenes, classes, steps or R["vit_steps"],
                 batch or R["vit_batch"], R["vit_lr"], seed=R["seed"], log=log, precision=R["precision"])


def run_stage(model, proc, R: dict, stage: str, datasets: list, data_dir: Path, mix_all: Path, out: Path, cache,
              steps: int | None = None, save_every: int = 500, progress: bool = True, resume: bool = False):
    """Train one stage of R in place, as `run` does: R[stage]'s settings (`steps` overrides its steps), its
    sampling ratios over `datasets` (read from data_dir's mixture; none given: those of `mix_all`), seed R["seed"],
    the frozen ViT's outputs from `cache` if the stage caches them; logs and checkpoints in `out` (`resume`: go on
    from out/checkpoint, train's --resume)."""
    import json

    from minigptv2.train.batches import Mixture
    from minigptv2.train.config import TrainConfig
    from minigptv2.train.loop import train

    sc = dict(R[stage], **({"steps": steps} if steps else {}))
    mix = _mixture_with_ratios(data_dir, sc.pop("ratios"), f"mixture_{stage}.json") if "ratios" in sc else mix_all
    parts = [(ds, float(e["ratio"])) for ds, e in zip(datasets, json.loads(mix.read_text()), strict=True)]
    tc = TrainConfig(**{"seed": R["seed"], **sc}, trainable={"vit": "frozen", "projector": "full", "llm": "full"},
                     weight_decay=0.05, grad_clip=1.0, save_every=save_every, precision=R["precision"])
    return train(model, proc, Mixture(parts, tc.seed), tc, out, cache=cache if tc.cache_vision else None,
                 progress=progress, resume=resume)


def cpu_info() -> dict:
    """What the run's times and bits depend on: the CPU model and its bf16 / AMX flags (Linux /proc/cpuinfo, first
    processor; {} elsewhere), recorded in recipe.json."""
    import os

    from minigptv2.train.config import cpu_flags

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    fields = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in reversed(lines)) if _)
    return {"model": fields.get("model name", ""), "family": fields.get("cpu family", ""),
            "cpu_model": fields.get("model", ""), "cores": os.cpu_count(),
            "flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})}


def run(work, install: bool = False, log=print, precision: str | None = None, seed: int | None = None,
        resume: bool = False, point_layer: int | None = None) -> dict:
    """Reproduce the nano model from scratch in `work` (synthetic data, tokenizer, ViT pretraining, R["stages"]).
    `precision` overrides RECIPE["precision"], `seed` RECIPE["seed"] (the tokenizer's text sample, every
    initialisation, the ViT's scenes and every stage's batches; not the data, which has its own seeds); both are
    recorded in recipe.json, and either makes a model other than the installed one; so does a `point_layer` other
    than POINT's, the LLM layer whose head 0 the pointing loss trains in every stage that has it. `resume`: start
    from what an interrupted run left in `work` (the last finished stage's final/, else vit_pretrained/; a stage
    cut short goes on from its checkpoint); the weights are those of an uninterrupted run, `times` covers this
    process only.
    Stages not yet begun may have other settings than when `work` was started (a variant of the later stages)."""
    import json
    import time

    import torch

    from minigptv2 import checkpoint as ckpt
    from minigptv2.train.batches import VisionCache
    from minigptv2.train.distributed import init_distributed
    from minigptv2.synthetic import write_synthetic

    R = dict(RECIPE, precision=precision or RECIPE["precision"], seed=RECIPE["seed"] if seed is None else seed)
    if point_layer is not None:
        R.update({s: dict(R[s], pointing=dict(R[s]["pointing"], layer=point_layer))
                  for s in R["stages"] if R[s].get("pointing")})
    if R["precision"] not in ("bf16", "fp32"):
        raise MiniGPTv2Error(f"precision must be bf16 or fp32, got {R['precision']!r}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times = {}
    torch.manual_seed(R["seed"])
    for name in ("data_all", "test"):
        if not (work / name / "mixture.json").is_file():
            write_synthetic(work / name, **R[name])
    mix_all = _mixture_with_ratios(work / "data_all", R["ratios"], "mixture_nano.json")
    datasets, tok = recipe_tokenizer(mix_all, R, work / "tokenizer.model")
    times["data_and_tokenizer_s"] = time.perf_counter() - t0

    finished = [s for s in R["stages"] if (work / s / "final").is_dir()] if resume else []
    if finished != list(R["stages"][:len(finished)]):
        raise MiniGPTv2Error(f"cannot resume {work}: finished stages {finished} are not the first of {R['stages']}")
    start = work / finished[-1] / "final" if finished else work / "vit_pretrained"
    resumed = resume and start.is_dir()
    if resumed:
        # the settings that made what is there must be R's; stages not yet begun may differ (a variant of them)
        begun = finished + [s for s in R["stages"][len(finished):len(finished) + 1] if (work / s).is_dir()]
        same = lambda r: {k: v for k, v in json.loads(json.dumps(r)).items()  # noqa: E731
                          if k != "stages" and (k not in R["stages"] or k in begun)}
        if not (work / "recipe.json").is_file():
            raise MiniGPTv2Error(f"cannot resume {work}: it has no recipe.json (the settings it was started with)")
        if same(json.loads((work / "recipe.json").read_text())) != same(R):
            raise MiniGPTv2Error(f"cannot resume {work}: what is there was trained with other settings than this "
                                 f"recipe's ({work / 'recipe.json'})")
        model, proc = ckpt.load(start)
        log(f"resuming from {start}")
        times["resumed_from"] = str(start.relative_to(work))
    else:
        finished = []
    (work / "recipe.json").write_text(json.dumps(R, indent=1))       # the settings of this folder's run
    if not resumed:
        model, proc = build_model(R, tok)
        t = time.perf_counter()
        pretrain_recipe_vit(model, proc, R, log)
        times["vit_pretrain_s"] = time.perf_counter() - t
        if R["proj_init_std"]:      # start visual tokens at the scale of the text embeddings, not ~30x above it
            torch.nn.init.normal_(model.llama_proj.weight, std=R["proj_init_std"])
            torch.nn.init.zeros_(model.llama_proj.bias)
        ckpt.save(model, proc, work / "vit_pretrained", overwrite=True)

    trainable = {"vit": "frozen", "projector": "full", "llm": "full"}
    # the ViT is frozen from here on: its output per image is computed once and kept over all stages
    cache = VisionCache(model, proc, ckpt.DTYPES[R["precision"]], init_distributed()[2])
    for stage in R["stages"][len(finished):]:
        t = time.perf_counter()
        run_stage(model, proc, R, stage, datasets, work / "data_all", mix_all, work / stage, cache,
                  resume=resume and (work / stage / "checkpoint").is_dir())
        times[f"{stage}_s"] = time.perf_counter() - t
        log(f"{stage}: {times[f'{stage}_s']:.0f} s")
    model.config.trainable = trainable
    model.eval()
    times["total_s"] = time.perf_counter() - t0
    out = ckpt.save(model, proc, work / "model", overwrite=True,
                    extra=lambda d: (d / "recipe.json").write_text(json.dumps(
                        {"recipe": R, "times": times, "torch_threads": torch.get_num_threads(), "cpu": cpu_info()},
                        indent=1)))
    log(f"trained in {times['total_s'] / 60:.1f} min -> {out}")
    if install:
        log(f"installed to {install_fp16(out)}")
    return {"model": str(out), "times": times}


def install_fp16(model_dir, dest=None) -> Path:
    """Copy a trained nano folder into minigptv2/assets/nano with fp16 weights (half the size; loading casts
    back to fp32). Atomic like every save."""
    import shutil

    import torch

    from minigptv2 import NANO_DIR
    from minigptv2 import checkpoint as ckpt

    dest = Path(dest) if dest else NANO_DIR
    model, proc = ckpt.load(model_dir, dtype=torch.float16)
    return ckpt.save(model, proc, dest, overwrite=True,
                     extra=lambda d: shutil.copyfile(Path(model_dir) / "recipe.json", d / "recipe.json"))


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m recipes.nano", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="working folder (data, logs, checkpoints, model/)")
    p.add_argument("--install", action="store_true", help="copy the result to minigptv2/assets/nano (fp16)")
    p.add_argument("--install-only", metavar="MODEL_DIR", help="just install this trained folder (fp16)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="override the recipe's autocast dtype (bf16); fp32 on CPUs without native bf16")
    p.add_argument("--seed", type=int, default=None, help="override RECIPE['seed'] (0): another draw of the recipe")
    p.add_argument("--resume", action="store_true", help="go on from what an interrupted run left in --work")
    p.add_argument("--point-layer", type=int, default=None,
                   help="override the pointing loss's layer (POINT, 2) in every stage that has it: a variant")
    a = p.parse_args(argv)
    if a.install_only:
        print(f"installed to {install_fp16(a.install_only)}")
    elif not a.work:
        p.error("--work is required")
    else:
        run(a.work, install=a.install, precision=a.precision, seed=a.seed, resume=a.resume,
            point_layer=a.point_layer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
