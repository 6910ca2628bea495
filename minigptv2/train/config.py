"""The configuration of a training run: `TrainConfig`, the three official stages as presets (`STAGES`), and the
precision that "auto" stands for on a device (`resolve_precision`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from minigptv2 import checkpoint as ckpt
from minigptv2.errors import MiniGPTv2Error


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
    # the share of samples rendered in the official *inference* prompt form (two BOS, one space before [/INST])
    # instead of the training form, drawn per sample from (seed, step, index): 0 = the official training. For
    # models trained from scratch that should answer both forms (recipes/nano.py `followup`; docs/nano.md)
    inference_form: float = 0.0
    # an auxiliary loss that teaches one attention head to look at the object a sample's box is about, e.g.
    # {"weight": 0.5, "layer": 1, "head": 0}; "points": True also points box-less turns at Sample.points,
    # "spans": True each object a many-object answer names at its own box, "words": [...] those words of a one-box
    # turn's instruction at its box too (pointing.py; needs attention "eager"; None: off)
    pointing: dict | None = None


# Paper §4 (docs/official-model.md §4.1; recalled, not checked against the PDF) for stages 1–2; stage 3 = the
# released train_configs/minigptv2_finetune.yaml (docs/official-model.md §4.2).
STAGES = {
    1: TrainConfig(steps=400_000, batch_size=96, lr=1e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=1000),
    2: TrainConfig(steps=50_000, batch_size=64, lr=1e-5, min_lr=1e-6, warmup_lr=1e-6, warmup_steps=1000),
    3: TrainConfig(steps=50_000, batch_size=24, lr=1e-5, min_lr=1e-6, warmup_lr=1e-6, warmup_steps=1000),
}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo "flags" on x86, "Features" on aarch64, over every processor);
    empty where the file cannot be read."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in info.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
            for f in line.split(":", 1)[1].split()}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware here: a CUDA device with bf16, or a CPU whose flags (cpu_flags)
    include avx512_bf16 or amx_bf16 (x86) or bf16 (aarch64). Elsewhere CPU bf16 is emulated:
    a nano training step (32 new images) took 11.8 s in bf16 against 1.18 s in fp32 on an AVX2-only AMD EPYC."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" where bf16 is native (native_bf16), else "fp32"; the other values pass through."""
    if precision not in ("auto", *ckpt.DTYPES):
        raise MiniGPTv2Error(f"precision must be auto, {', '.join(ckpt.DTYPES)}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"
