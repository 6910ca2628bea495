"""Where a command runs: `--device` (default: cuda when available, else cpu; `auto`: transformers' device_map)
and `--dtype` (default: bf16 on a GPU that supports it, else fp32), shared by every command that loads a model.

    p = argparse.ArgumentParser(); add_device_args(p, quantize=True)
    a = p.parse_args(); model, proc = load(folder, **load_kwargs(a))
"""
from __future__ import annotations

import argparse

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def add_device_args(p: argparse.ArgumentParser, quantize: bool = False) -> None:
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu); auto: spread the model over "
                        "the GPUs, then the CPU, when it does not fit one (transformers' device_map='auto')")
    p.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                   help="weights dtype (default: bf16 on a GPU that supports it, else fp32; auto: as stored)")
    if quantize:
        p.add_argument("--quantize", default=None, choices=["8bit", "4bit"],
                       help="load the language model quantized with bitsandbytes (CUDA only)")


def load_kwargs(a: argparse.Namespace) -> dict:
    """`load()` keyword arguments from parsed --device / --dtype / --quantize."""
    device = a.device or default_device()
    if device == "auto":
        kw = {"device_map": "auto", "dtype": a.dtype or default_dtype(default_device())}
    else:
        kw = {"device": device, "dtype": a.dtype or default_dtype(device)}
    if getattr(a, "quantize", None):
        kw["quantize"] = a.quantize
    return kw
