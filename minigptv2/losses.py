"""The next-token loss: the cross-entropy of each position's logits against the token that follows it, in fp32,
with the positions labelled `processor.IGNORE` (prompt, image slots, padding) left out. Training sums it
(train/loop.py `loss_sum`); the official code's loss is its mean over the batch's labelled tokens
(docs/official-model.md §4.3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigptv2.processor import IGNORE


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Cross-entropy of logits[:, t] (B, L, V) against labels[:, t + 1] (B, L), IGNORE labels adding nothing.
    reduction "sum" or "mean" (over the labelled tokens): a scalar; "none": (B, L - 1), 0 where unlabelled."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                           reduction=reduction)
    return loss.view(labels.shape) if reduction == "none" else loss
