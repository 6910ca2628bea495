"""Training checkpoints: OUT/checkpoint/ is a model folder plus train_state.json (step, TrainConfig, optimizer
layout), optimizer.safetensors and rng.safetensors (every rank's random state), swapped into place atomically by
checkpoint.save, so a kill at any moment leaves a complete one (SECURITY.md §2). They hold full (unsharded) state
keyed by parameter name, so a run may be resumed with another number of processes or with/without --fsdp.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from minigptv2 import checkpoint as ckpt
from minigptv2.atomic import write_file
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.train.config import TrainConfig


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


def save_checkpoint(out: Path, model: MiniGPTv2ForConditionalGeneration, wrapped, optimizer, tokenizer, step: int,
                    tc: TrainConfig, world: int, rank: int) -> None:
    """OUT/checkpoint/ at `step`. A collective under torchrun (the state is gathered): every rank calls it, rank 0
    writes."""
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


def cut_log(log_path: Path, step: int) -> None:
    """On resume: keep the lines of steps <= `step` (a kill may have logged later steps, or half a line)."""
    keep = []
    for line in log_path.read_text().splitlines() if log_path.is_file() else []:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            pass
    write_file(log_path, "".join(keep))
