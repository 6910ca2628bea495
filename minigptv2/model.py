"""MiniGPT-v2 as a transformers model: EVA ViT -> ln_vision -> drop CLS -> concat 4 consecutive tokens -> Linear
-> the language model (any `AutoModelForCausalLM`), LoRA on it through peft.

    from transformers import AutoModelForImageTextToText, AutoProcessor
    import minigptv2                                   # registers the classes with the Auto classes
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype="auto", device_map="auto")

The 4-token grouping is a plain reshape, so an LM token is 4 horizontally adjacent patches of one patch row (not a
2x2 block); ln_vision is a LayerNorm with eps 1e-5 that the official checkpoints never contain (weight 1, bias 0)
(docs/official-model.md §1.4–1.5). The module names are the official ones (`visual_encoder`, `ln_vision`, `llama_proj`);
the LM is `language_model`, a whole causal LM with its head, so its state dict is the LM's own under a prefix.

`forward(input_ids, attention_mask, pixel_values, labels, ...)`: input_ids hold `config.image_token_id` where the
visual tokens go (processor.py); their embeddings are replaced by the image's, in order, in the prefill only.

LoRA (`config.lora`, peft): `add_lora()` puts a fresh adapter on the LM for training; a saved folder keeps it as
a standard peft adapter in `lora/`, which `from_pretrained` loads and merges (`merge_lora=False` keeps it apart).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from minigptv2.config import PARTS, MiniGPTv2Config
from minigptv2.errors import MiniGPTv2Error
from minigptv2.vit import EVAViT

LORA_DIR = "lora"


class MiniGPTv2PreTrainedModel(PreTrainedModel):
    config_class = MiniGPTv2Config
    config: MiniGPTv2Config
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]                  # a ViT block; the LM adds its own decoder layer
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True             # the LM's attention goes through transformers' registry
    _can_compile_fullgraph = True

    def _init_weights(self, module):
        """Weights absent from a file are an error (from_pretrained below); fresh models keep their own init."""


class MiniGPTv2ForConditionalGeneration(MiniGPTv2PreTrainedModel, GenerationMixin):
    def __init__(self, config: MiniGPTv2Config, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        v = config.vision_config
        self.visual_encoder = EVAViT(v)
        self.ln_vision = nn.LayerNorm(v.width, eps=1e-5)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        t = language_model.config
        if t.vocab_size != config.text_config.vocab_size or t.hidden_size != config.text_config.hidden_size:
            raise MiniGPTv2Error("the language model does not match config.text_config (vocab_size / hidden_size)")
        self.llama_proj = nn.Linear(v.width * config.group, t.hidden_size)
        self.language_model = language_model
        self._set_peft(None)                       # the peft wrapper while a LoRA adapter is attached
        self.post_init()

    # ---- parts ----------------------------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def get_decoder(self):
        return self.language_model.get_decoder()

    def _set_peft(self, peft_model) -> None:
        object.__setattr__(self, "_peft", peft_model)   # not a submodule: its parameters are the LM's

    @property
    def input_device(self) -> torch.device:
        """Where inputs go: the device of the token embeddings, or with a device_map the device they run on
        (weights offloaded to the CPU or disk run on the CPU)."""
        where = getattr(self, "hf_device_map", None)
        if where:
            name = "language_model.model.embed_tokens"
            key = max((k for k in where if k == "" or name == k or name.startswith(k + ".")), key=len, default=None)
            d = where.get(key, "cpu")
            return torch.device("cpu" if d in ("cpu", "disk") else f"cuda:{d}" if isinstance(d, int) else d)
        return self.get_input_embeddings().weight.device

    @property
    def has_lora(self) -> bool:
        return self._peft is not None

    def add_lora(self, adapter_dir=None) -> None:
        """Attach config.lora as a fresh peft adapter on the LM's attention (training), or load the adapter saved
        in `adapter_dir`. The LM stays `self.language_model` (peft injects the adapter in place)."""
        from peft import LoraConfig, PeftModel, get_peft_model

        if self._peft is not None:
            raise MiniGPTv2Error("a LoRA adapter is already attached")
        if adapter_dir is not None:
            try:
                self._set_peft(PeftModel.from_pretrained(self.language_model, str(adapter_dir), is_trainable=True))
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise MiniGPTv2Error(f"cannot load the LoRA adapter in {adapter_dir}: "
                                     f"{str(e).splitlines()[0][:300]}") from None
            return
        lc = self.config.lora
        if lc is None:
            raise MiniGPTv2Error("this model has no LoRA settings (config.lora); train the LLM with "
                                 '--trainable \'{"llm": "full"}\' or give the config a lora')
        self._set_peft(get_peft_model(self.language_model, LoraConfig(
            r=lc["r"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"], target_modules=list(lc["targets"]),
            bias="none", task_type="CAUSAL_LM")))

    def merge_lora(self) -> None:
        """Fold the attached adapter into the LM's weights (W + B·A·alpha/r) and drop it: faster inference."""
        if self._peft is not None:
            self._peft.merge_and_unload()                # replaces the LoRA layers inside self.language_model
            self._set_peft(None)

    def set_trainable(self, trainable: dict) -> None:
        """trainable = {"vit": frozen|full, "projector": frozen|full, "llm": frozen|full|lora}; "lora" attaches
        config.lora when no adapter is attached yet."""
        for part in trainable:
            if part not in PARTS or trainable[part] not in PARTS[part]:
                raise MiniGPTv2Error(f"trainable[{part!r}] must be one of {PARTS.get(part, ())} (--trainable), "
                                     f"got {trainable[part]!r}")
        mode = trainable.get("llm", "frozen")
        if mode == "lora" and self._peft is None:
            self.add_lora()
        self.visual_encoder.requires_grad_(trainable.get("vit") == "full")
        self.ln_vision.requires_grad_(False)
        self.llama_proj.requires_grad_(trainable.get("projector") == "full")
        for name, p in self.language_model.named_parameters():
            p.requires_grad_(mode == "full" or (mode == "lora" and "lora_" in name))

    def cast_for_training(self, compute_dtype: torch.dtype) -> None:
        """As the official trains: frozen parts (ViT, LM base) held in the compute dtype, trainable ones (LoRA,
        projector) in fp32 for the optimizer; run under autocast(compute_dtype)."""
        for p in self.parameters():
            p.data = p.data.float() if p.requires_grad else p.data.to(compute_dtype)

    # ---- forward --------------------------------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower up to the projector (frozen in every official stage: train/batches.py VisionCache
        keeps it)."""
        x = self.visual_encoder(pixel_values)                  # (B, 1 + P, Wv)   P = grid², e.g. 1024
        return self.ln_vision(x)[:, 1:]                        # (B, P, Wv)       drop CLS

    def project(self, features: torch.Tensor) -> torch.Tensor:
        B, P, W = features.shape                               # (B, P, Wv)
        g = self.config.group
        x = features.reshape(B, P // g, W * g)                 # (B, P/4, 4·Wv)   e.g. (B, 256, 5632)
        return self.llama_proj(x.to(self.llama_proj.weight.dtype))   # (B, P/4, D)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p = self.visual_encoder.pos_embed
        device = p.device if p.device.type != "meta" else self.input_device     # offloaded: its hook moves it
        return self.project(self.vision_features(pixel_values.to(device, p.dtype)))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_embeds: torch.Tensor | None = None, vision_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with visual embeddings at the image-token positions. The images come as pixels, as
        `vision_features` (the output of `vision_features`) or as projected `image_embeds`; without an image the
        ids are plain tokens (the processor checks that every image slot has its image)."""
        emb = self.get_input_embeddings()(input_ids)                    # (B, L, D)
        if pixel_values is None and image_embeds is None and vision_features is None:
            return emb
        is_img = input_ids == self.config.image_token_id
        n_img = int(is_img.sum())
        if image_embeds is None and vision_features is not None:
            image_embeds = self.project(vision_features)
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values)
        if image_embeds.shape[0] * image_embeds.shape[1] != n_img:
            raise MiniGPTv2Error(f"{image_embeds.shape[0]} image(s) × {image_embeds.shape[1]} tokens do not "
                                 f"fill the {n_img} image positions of the prompt")
        return emb.masked_scatter(is_img.unsqueeze(-1), image_embeds.to(emb.device, emb.dtype))

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, labels=None, inputs_embeds=None,
                vision_features=None, image_embeds=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_embeds=image_embeds,
                                       vision_features=vision_features)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                                   **kwargs)

    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, image_embeds=None,
                                      is_first_iteration=False, **kwargs):
        """The image enters at the prefill only; later steps see text tokens and the KV cache."""
        inputs = super().prepare_inputs_for_generation(input_ids, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration:
            inputs["pixel_values"], inputs["image_embeds"] = pixel_values, image_embeds
        return inputs

    # ---- weights --------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, state_dict=None, **kwargs):
        """transformers' save, with an attached LoRA adapter written apart as a standard peft adapter in `lora/`
        (the main weights are the LM's base weights under their plain names)."""
        sd = state_dict if state_dict is not None else (self.state_dict() if self._peft is not None else None)
        adapter = None
        if sd is not None and any("lora_" in k for k in sd):
            sd, adapter = split_lora(sd)
        super().save_pretrained(save_directory, state_dict=sd, **kwargs)
        if adapter is not None:
            write_adapter(adapter, self.config.lora, Path(save_directory) / LORA_DIR)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, merge_lora: bool | None = None, **kwargs):
        """transformers' loading, strict: missing, unexpected or mis-shaped tensors raise MiniGPTv2Error. A saved
        LoRA adapter (`lora/`) is loaded and merged (`merge_lora=False`: kept apart, e.g. to train on; it is
        never merged into quantized weights)."""
        want_info = kwargs.pop("output_loading_info", False)
        lenient = kwargs.pop("ignore_mismatched_sizes", False)
        source = None if kwargs.get("state_dict") is not None else pretrained_model_name_or_path   # already read
        try:       # mis-shaped tensors are reported by name below (transformers' own error only says "see above")
            model, info = super().from_pretrained(source, *args, output_loading_info=True,
                                                  ignore_mismatched_sizes=True, **kwargs)
        except MiniGPTv2Error:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors, json, OS and transformers errors of many types
            raise MiniGPTv2Error(f"cannot load {pretrained_model_name_or_path}: "
                                 f"{' '.join(str(e).split())[:400]}") from None
        missing = [k for k in info.get("missing_keys", ()) if not _regenerated(k)]
        unexpected = [k for k in info.get("unexpected_keys", ()) if not _regenerated(k)]
        if missing or unexpected or (info.get("mismatched_keys") and not lenient):
            raise MiniGPTv2Error(f"{pretrained_model_name_or_path} does not match its config.json: missing "
                                 f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, shape mismatches "
                                 f"{list(info.get('mismatched_keys', []))[:5]}")
        adapter = Path(pretrained_model_name_or_path) / LORA_DIR
        if (adapter / "adapter_config.json").is_file():
            model.add_lora(adapter)
            quantized = getattr(model.language_model, "is_quantized", False)
            if merge_lora if merge_lora is not None else not quantized:
                model.merge_lora()
        model.eval()
        return (model, info) if want_info else model


def _regenerated(key: str) -> bool:
    """Buffers transformers recomputes (RoPE inverse frequencies), never stored."""
    return "rotary_emb" in key


def split_lora(sd: dict) -> tuple[dict, dict]:
    """A state dict of the model with a peft adapter attached -> (the base weights under the model's plain names,
    the adapter tensors under peft's saved names)."""
    base, adapter = {}, {}
    prefix = "language_model."
    for k, v in sd.items():
        if "lora_" in k:
            # language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight
            #   -> base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
            adapter["base_model.model." + k[len(prefix):].replace(".default.", ".")] = v
        else:
            base[k.replace(".base_layer.", ".")] = v
    return base, adapter


def write_adapter(tensors: dict, lora: dict, folder: Path) -> None:
    """A peft adapter folder (adapter_config.json + adapter_model.safetensors) from saved-name tensors."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
               target_modules=list(lora["targets"]), bias="none", task_type="CAUSAL_LM").save_pretrained(str(folder))
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
