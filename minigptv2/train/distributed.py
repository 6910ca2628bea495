"""Where a training run happens: the device and, under torchrun, the process group (one GPU per process,
cuda:LOCAL_RANK, with NCCL; gloo on CPU) and the model wrapped for DDP or FSDP2.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from minigptv2.model import MiniGPTv2ForConditionalGeneration


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
