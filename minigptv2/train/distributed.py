"""Where a training run happens: the device (`--device`: cuda when available, else cpu) and, under torchrun, the
process group (one GPU per process, cuda:LOCAL_RANK, with NCCL; gloo on CPU) and the model wrapped for DDP or FSDP2.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from minigptv2.devices import default_device
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration


def train_device(name: str | torch.device | None = None) -> torch.device:
    """--device, checked: cpu, cuda or cuda:N where that GPU exists (None: cuda when available, else cpu)."""
    try:
        device = torch.device(name if name is not None else default_device())
    except (RuntimeError, TypeError):
        raise MiniGPTv2Error(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise MiniGPTv2Error(f"--device {name}: training runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MiniGPTv2Error(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MiniGPTv2Error(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}")
    return device


def init_distributed(device: str | torch.device | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device) on `device` (train_device). Under torchrun (RANK set) the processes join one
    group: on cuda each takes the GPU of its LOCAL_RANK and they talk over NCCL, on cpu over gloo."""
    device, torchrun = train_device(device), "RANK" in os.environ
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        elif torchrun and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise MiniGPTv2Error(f"--device {device}: under torchrun every process takes the GPU of its LOCAL_RANK; "
                                 "pass --device cuda")
        torch.cuda.set_device(device)
    if not torchrun:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def wrap(model: MiniGPTv2ForConditionalGeneration, world: int, fsdp: bool):
    """The model as the processes train it: itself in one process, else DDP or (`fsdp`) FSDP2 per block."""
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
