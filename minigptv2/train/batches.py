"""What each training step trains on: the data mixture, drawn by a pure function of (seed, step, position), and
the samples it draws as length-sorted micro-batches; `VisionCache` keeps a frozen ViT's output per image file.
"""
from __future__ import annotations

import os
import random

import torch

from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import IGNORE, MiniGPTv2Processor


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

    def __init__(self, model: MiniGPTv2ForConditionalGeneration, proc: MiniGPTv2Processor, dtype: torch.dtype,
                 device: torch.device):
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
                 cache: VisionCache | None = None, as_inference=None) -> list[dict]:
    """Tokenize `samples` and collate them into micro-batches of `micro` rows, shortest first: rows of similar
    length share a micro-batch, so gradient accumulation pads less and sums the same gradient. With a `cache`,
    the images come as "vision_features" instead of "pixel_values". `as_inference`: per sample, whether it is
    rendered in the official inference form (TrainConfig.inference_form; None: none is). Each batch also has
    "points": per row the sample's Sample.points (the pointing loss's targets where the text has no box)."""
    ex = []
    for i, s in enumerate(samples):
        try:
            ex.append(proc.training_example(s.turns, image=s.image, chat_template=chat_template,
                                            load_image=cache is None,
                                            as_inference=bool(as_inference and as_inference[i])))
            ex[-1]["points"] = s.points
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
            b = proc.collate(part)
        else:
            images = [e["pixel_values"] for e in part if e["pixel_values"] is not None]
            b = proc.collate([{**e, "pixel_values": None} for e in part])
            b["vision_features"] = cache.features(images) if images else None
        b["points"] = [e.get("points") for e in part]       # per row: Sample.points (train/pointing.py)
        batches.append(b)
    return batches


def make_batch(proc: MiniGPTv2Processor, samples, chat_template: bool, vision_trains: bool = False) -> dict:
    return make_batches(proc, samples, len(samples), chat_template, vision_trains)[0]
