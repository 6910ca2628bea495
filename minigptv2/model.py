"""MiniGPT-v2: EVA ViT -> ln_vision -> drop CLS -> concat 4 consecutive tokens -> Linear -> LLaMA (+ LoRA).

Facts §1 (minigpt_v2.py `encode_img`, minigpt_base.py): the 4-token grouping is a plain reshape, so an LLM
token is 4 horizontally adjacent patches of one patch row (not a 2×2 block); ln_vision is a LayerNorm with
eps 1e-5 that the official checkpoints never contain (weight 1, bias 0). The LLM is an HF
`LlamaForCausalLM`; LoRA is peft's.

`forward(input_ids, attention_mask, pixel_values, labels)`: input_ids hold IMAGE_TOKEN_ID where visual
tokens go (processor.py); the visual embeddings are scattered there in order.

The LLM may be any HF causal LM with input embeddings (Llama-2/3, Mistral, Qwen2, SmolLM2): `config.llm` holds
its HF config fields, `model_type` picks the architecture ("llama" when absent), see llm.py.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from minigptv2.config import ModelConfig
from minigptv2.errors import MiniGPTv2Error
from minigptv2.processor import IMAGE_TOKEN_ID
from minigptv2.vit import EVAViT


def llm_hf_config(cfg: ModelConfig):
    """The HF config of the LLM described by cfg.llm."""
    kw = dict(cfg.llm)
    try:
        return AutoConfig.for_model(kw.pop("model_type", "llama"), **kw)
    except ValueError as e:
        raise MiniGPTv2Error(f"config.llm: {e}") from None


def build_llm(cfg: ModelConfig, dtype=torch.float32) -> PreTrainedModel:
    """A randomly initialised LLM of cfg.llm's architecture and shape."""
    hf = llm_hf_config(cfg)
    hf._attn_implementation = "sdpa"
    with torch.device("cpu"):
        return AutoModelForCausalLM.from_config(hf, dtype=dtype)


class MiniGPTv2(nn.Module):
    def __init__(self, config: ModelConfig, llm: PreTrainedModel | None = None):
        super().__init__()
        self.config = config
        v = config.vision
        self.visual_encoder = EVAViT(v)
        self.ln_vision = nn.LayerNorm(v.width, eps=1e-5)
        llm = llm if llm is not None else build_llm(config)
        d_llm = llm.config.hidden_size
        if llm.config.vocab_size != config.llm["vocab_size"] or d_llm != config.llm["hidden_size"]:
            raise MiniGPTv2Error("the LLM does not match config.llm (vocab_size / hidden_size)")
        self.llama_proj = nn.Linear(v.width * config.group, d_llm)
        if config.lora is not None:
            from peft import LoraConfig, get_peft_model

            lc = config.lora
            llm = get_peft_model(llm, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                 target_modules=list(lc.targets), bias="none",
                                                 task_type="CAUSAL_LM"))
        self.llm = llm
        self.set_trainable(config.trainable)

    # ---- parts ----------------------------------------------------------------------------------------
    @property
    def base_llm(self) -> PreTrainedModel:
        """The HF causal LM under the peft wrapper (if any)."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def set_trainable(self, trainable: dict) -> None:
        """trainable = {"vit": frozen|full, "projector": frozen|full, "llm": frozen|full|lora}."""
        for part in ("vit", "projector", "llm"):
            mode = trainable.get(part, "frozen")
            ok = ("frozen", "full", "lora") if part == "llm" else ("frozen", "full")
            if mode not in ok:
                raise MiniGPTv2Error(f"trainable[{part!r}] must be one of {ok}, got {mode!r}")
        if trainable.get("llm") == "lora" and self.config.lora is None:
            raise MiniGPTv2Error("trainable llm='lora' needs a LoRA config (config.lora)")
        self.visual_encoder.requires_grad_(trainable.get("vit") == "full")
        self.ln_vision.requires_grad_(False)
        self.llama_proj.requires_grad_(trainable.get("projector") == "full")
        mode = trainable.get("llm", "frozen")
        for name, p in self.llm.named_parameters():
            p.requires_grad_(mode == "full" or (mode == "lora" and "lora_" in name))

    # ---- forward --------------------------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower up to the projector (frozen in every official stage: train.VisionCache keeps it)."""
        x = self.visual_encoder(pixel_values)                  # (B, 1 + P, Wv)   P = grid², e.g. 1024
        return self.ln_vision(x)[:, 1:]                        # (B, P, Wv)       drop CLS

    def project(self, features: torch.Tensor) -> torch.Tensor:
        B, P, W = features.shape                               # (B, P, Wv)
        g = self.config.group
        x = features.reshape(B, P // g, W * g)                 # (B, P/4, 4·Wv)   e.g. (B, 256, 5632)
        return self.llama_proj(x)                              # (B, P/4, D)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.project(self.vision_features(pixel_values))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_embeds: torch.Tensor | None = None, vision_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with visual embeddings scattered at the IMAGE_TOKEN_ID positions. The images come as
        pixels, as `vision_features` (the output of `vision_features`) or as projected `image_embeds`."""
        is_img = input_ids == IMAGE_TOKEN_ID
        emb = self.llm.get_input_embeddings()(input_ids.clamp(min=0))   # (B, L, D)
        n_img = int(is_img.sum())
        if n_img == 0:
            return emb
        if image_embeds is None and vision_features is not None:
            image_embeds = self.project(vision_features)
        if image_embeds is None:
            if pixel_values is None:
                raise MiniGPTv2Error("the prompt has image positions but no image was given")
            image_embeds = self.encode_images(pixel_values)
        if image_embeds.shape[0] * image_embeds.shape[1] != n_img:
            raise MiniGPTv2Error(f"{image_embeds.shape[0]} image(s) × {image_embeds.shape[1]} tokens do not "
                                 f"fill the {n_img} image positions of the prompt")
        return emb.masked_scatter(is_img.unsqueeze(-1), image_embeds.to(emb.dtype))

    def forward(self, input_ids, attention_mask=None, pixel_values=None, labels=None, vision_features=None, **kw):
        inputs_embeds = self.embed(input_ids, pixel_values, vision_features=vision_features)
        return self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kw)
