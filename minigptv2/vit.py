"""EVA ViT in plain PyTorch, parameter names identical to the EVA / LAVIS checkpoint (docs/official-model.md §1.3,
§2.3).

patch conv (stride = patch) -> flatten row-major -> prepend CLS -> + absolute pos_embed -> pre-norm blocks
(qkv without bias param + learnable q_bias / v_bias, zero k bias; q scaled by head_dim^-0.5; exact GELU MLP)
-> no final norm. Output: all tokens, (B, 1 + grid², width).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from minigptv2.config import MiniGPTv2VisionConfig as VisionConfig


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        # through the module, not its .weight: offloading (device_map) loads a module's weights when it is called
        qkv = (self.qkv(x) + bias).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                      # (B, H, N, d)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)   # (B, H, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = Attention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)        # (B, 3, S, S) -> (B, grid², width)


class EVAViT(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid ** 2 + 1, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.gradient_checkpointing = False
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init)

    def forward(self, pixel_values):
        x = self.patch_embed(pixel_values)                                      # (B, grid², W)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)   # (B, 1 + grid², W)
        x = x + self.pos_embed
        for blk in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


def _init(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g², W) -> (1, 1 + grid², W): CLS kept, grid resized bicubic (align_corners=False) in fp32,
    as the official `interpolate_pos_embed` does (e.g. 16x16 -> 32x32 for 224 -> 448)."""
    n = pos_embed.shape[1] - 1
    g = int(round(n ** 0.5))
    if g * g != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    if g == grid:
        return pos_embed
    cls, tok = pos_embed[:, :1], pos_embed[:, 1:]
    W = tok.shape[-1]
    tok = tok.float().reshape(1, g, g, W).permute(0, 3, 1, 2)
    tok = F.interpolate(tok, size=(grid, grid), mode="bicubic", align_corners=False)
    tok = tok.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((cls.to(tok.dtype), tok), dim=1)
