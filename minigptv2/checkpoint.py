"""Weights in and out: our model folder (transformers' format), older folders, and the official files.

Our folder = `save_pretrained` of MiniGPTv2ForConditionalGeneration + its processor:
    config.json (MiniGPTv2Config) + model.safetensors (sharded at 5 GB with an index) + tokenizer files
    (+ lora/: a peft adapter, when one is attached and not merged)
    model, processor = load("path/to/folder", dtype="bf16", device="cuda")     # or transformers' Auto classes
Older folders (config.json without model_type, a single model.safetensors with `llm.` keys, or the exported
layout llm/ + vision.safetensors) are read transparently; `minigptv2 migrate OLD NEW` rewrites one.
Official:     Llama-2 HF folder + EVA ViT .pth + MiniGPT-v2 training checkpoint (.pth, key "model")
    minigptv2 convert --llm DIR --vit FILE --checkpoint FILE --out DIR [--dtype fp16] [--merge-lora]

Every .pth is read with torch.load(weights_only=True) (no pickled code runs). Loading is strict: a key that
is missing from the files or that the map does not know raises MiniGPTv2Error naming it; the only keys
allowed to be absent from the official files are ALLOWED_MISSING (ln_vision: they never hold it).
Folders are written to a temporary sibling, synced, and swapped into place in one atomic step (Linux
renameat2 RENAME_EXCHANGE), so a crash at any moment leaves either the old or the new complete folder;
`recover(path)` tidies what a killed save left behind (see `save`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from minigptv2.atomic import write_folder
from minigptv2.config import MiniGPTv2Config, MiniGPTv2VisionConfig, from_legacy_dict
from minigptv2.errors import MiniGPTv2Error
from minigptv2.config import read_config
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import MiniGPTv2Processor, build_processor
from minigptv2.tokenizers import Tokenizer, load_tokenizer
from minigptv2.vit import interpolate_pos_embed

ALLOWED_MISSING = {"ln_vision.weight", "ln_vision.bias"}
SHARD = "5GB"

# official MiniGPT-v2 checkpoint key -> our key (peft 0.2 LoRA names have no adapter segment)
CKPT_KEY_MAP = [
    (r"^llama_proj\.(weight|bias)$", r"llama_proj.\1"),
    (r"^ln_vision\.(weight|bias)$", r"ln_vision.\1"),
    (r"^llama_model\.base_model\.model\.(model\.layers\.\d+\.self_attn\.\w+)\.lora_([AB])\.weight$",
     r"language_model.\1.lora_\2.default.weight"),
]
CKPT_IGNORED = [r"\.rotary_emb\.inv_freq$"]          # persistent buffer in transformers 4.30, recomputed here
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_load(path) -> dict:
    """torch.load with weights_only=True; any failure (incl. a refused pickle) is a MiniGPTv2Error."""
    path = Path(path)
    if not path.is_file():
        raise MiniGPTv2Error(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip file: the legacy format cannot be memory-mapped
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle / zip / unpickling errors of many types
        raise MiniGPTv2Error(f"refused to load {path}: not a plain weights file "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def dtype_of(name) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise MiniGPTv2Error(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


# ---- our folder ----------------------------------------------------------------------------------------
def save(model: MiniGPTv2ForConditionalGeneration, processor, out_dir, overwrite: bool = False,
         state_dict: dict | None = None, extra=None) -> Path:
    """Write our model folder atomically (temp sibling + rename). `processor`: the model's processor, or its
    prompt tokenizer (a Tokenizer / HFTokenizer or a SentencePiece file). `state_dict` overrides the model's own
    (e.g. a gathered FSDP state dict); `extra(tmp_dir)` may add files before the rename."""
    if isinstance(processor, (str, Path)):
        processor = Tokenizer(processor)
    if not isinstance(processor, MiniGPTv2Processor):
        processor = build_processor(processor, model.config)

    gc = model.generation_config           # transformers' generate stops and pads as our tokenizer does
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = processor.tok.eos_id, processor.tok.pad_id, processor.tok.bos_id

    def write(tmp: Path) -> None:
        sd = _dedupe(model, state_dict) if state_dict is not None else None
        model.save_pretrained(str(tmp), state_dict=sd, max_shard_size=SHARD)
        processor.save_pretrained(str(tmp))
        if extra is not None:
            extra(tmp)

    return write_folder(out_dir, overwrite, write)


def _dedupe(model, sd: dict) -> dict:
    """Drop tied duplicates (e.g. lm_head = embed_tokens) the way safetensors' save_model does."""
    tied = {n for n, _ in _tied_names(model)}
    return {k: v.contiguous() for k, v in sd.items() if k not in tied}


def _tied_names(model):
    """(name, first name) for every tensor registered under a second name. By object identity, not data
    pointer: FSDP2 parameters are DTensors, whose data_ptr() says nothing about sharing."""
    seen: dict = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) in seen:
            yield name, seen[id(t)]
        else:
            seen[id(t)] = name


def load(model_dir, dtype="fp32", device=None, quantize: str | None = None, merge_lora: bool | None = None,
         device_map=None) -> tuple[MiniGPTv2ForConditionalGeneration, MiniGPTv2Processor]:
    """(model, processor) from a model folder: `from_pretrained` in `dtype` ("fp32" | "bf16" | "fp16" | "auto" =
    as stored) straight onto `device` (or `device_map`, e.g. "auto"), with no full-precision copy on the host.
    `quantize` "8bit" / "4bit" quantizes the LM with bitsandbytes (CUDA only) while loading. A LoRA adapter in
    the folder is merged unless `merge_lora=False` (kept apart to train on). Older folders are read too."""
    from minigptv2.llm import quantization_config

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise MiniGPTv2Error(f"{d} is not a minigptv2 model folder: config.json is missing")
    if _is_legacy(d):
        if device_map is not None:
            raise MiniGPTv2Error(f"{d} is in the older folder format: rewrite it first (minigptv2 migrate {d} NEW), "
                                 "then load it with a device_map (--device auto)")
        return load_legacy(d, dtype, device, quantize, merge_lora)
    config, processor = read_config(d), MiniGPTv2Processor.from_pretrained(d)
    qc = quantization_config(quantize)
    kw = {"dtype": "auto" if dtype == "auto" else dtype_of(dtype)}
    if qc is not None:
        kw.update(quantization_config=qc, device_map=device_map or {"": device or 0})
        # the vision side stays in a half dtype beside the quantized LM (bitsandbytes keeps non-Linear layers)
        kw["dtype"] = kw["dtype"] if kw["dtype"] in (torch.float16, torch.bfloat16) else torch.float16
    elif device_map is not None:
        kw["device_map"] = device_map
    elif device is not None:
        kw["device_map"] = {"": torch.device(device)}
    if qc is None and device_map is None:
        model = _load_read(d, config, kw, merge_lora)
    else:
        model = MiniGPTv2ForConditionalGeneration.from_pretrained(d, config=config, merge_lora=merge_lora, **kw)
    return model, processor


def _load_read(d: Path, config, kw: dict, merge_lora) -> MiniGPTv2ForConditionalGeneration:
    """`from_pretrained` with the tensors read (pread) one at a time instead of memory-mapped: transformers keeps
    every shard mapped until loading ends, so each page it touched stays in the process's memory beside the
    converted copy (a bf16 load of an fp16 folder peaked at about twice the folder, a GPU load at the whole
    folder on the host). Read, a tensor's bytes are freed once it is converted or moved (`benchmarks/load.py`)."""
    from safetensors import safe_open
    from transformers import GenerationConfig

    index = d / "model.safetensors.index.json"
    if index.is_file():          # shards (the folder may hold other .safetensors: a checkpoint's optimizer, rng)
        try:
            names = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MiniGPTv2Error(f"bad {index}: {type(e).__name__}: {e}") from None
        if bad := [n for n in names if not isinstance(n, str) or Path(n).name != n or n in (".", "..")]:
            raise MiniGPTv2Error(f"bad {index}: shard names must be file names in the folder, got {bad[:3]}")
        files = sorted(d / n for n in names)
    else:
        files = [d / "model.safetensors"]
    if missing := [f.name for f in files if not f.is_file()]:
        raise MiniGPTv2Error(f"{d}: weights file(s) missing: {missing[:5]}")
    state, handles = {}, []
    try:
        for f in files:
            h = safe_open(str(f), framework="pt", device="cpu", backend="pread")
            handles.append(h)
            state.update({k: h.get_slice(k) for k in h.keys()})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged headers
        raise MiniGPTv2Error(f"cannot read the weights in {d}: {' '.join(str(e).split())[:300]}") from None
    model = MiniGPTv2ForConditionalGeneration.from_pretrained(d, config=config, merge_lora=merge_lora,
                                                              state_dict=state, **kw)
    if (d / "generation_config.json").is_file():
        try:
            model.generation_config = GenerationConfig.from_pretrained(d)
        except (OSError, ValueError, TypeError) as e:
            raise MiniGPTv2Error(f"bad {d / 'generation_config.json'}: {str(e).splitlines()[0][:300]}") from None
    return model


def _is_legacy(d: Path) -> bool:
    try:
        return "model_type" not in json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError) as e:
        raise MiniGPTv2Error(f"cannot read {d / 'config.json'}: {e}") from None


def load_legacy(d: Path, dtype="fp32", device=None, quantize=None, merge_lora=None):
    """A folder written before the transformers format: built on the meta device and filled from its file(s);
    the LM keys `llm.` / `llm.base_model.model.` become `language_model.`, its LoRA an attached adapter."""
    from safetensors import safe_open

    if quantize is not None:
        raise MiniGPTv2Error(f"{d} is in the older folder format: rewrite it first (minigptv2 migrate {d} NEW), "
                             "then load it quantized")
    try:
        config = from_legacy_dict(json.loads((d / "config.json").read_text(encoding="utf-8")))
    except (TypeError, KeyError, AttributeError) as e:
        raise MiniGPTv2Error(f"bad {d / 'config.json'}: {e}") from None
    exported = (d / "llm" / "config.json").is_file()
    files = [d / "vision.safetensors", *sorted((d / "llm").glob("*.safetensors"))] if exported \
        else [d / "model.safetensors"]
    sd = {}
    for f in files:
        if not f.is_file():
            raise MiniGPTv2Error(f"{d} is not a minigptv2 model folder: {f.name} is missing")
        try:
            with safe_open(str(f), "pt") as fh:
                for k in fh.keys():
                    sd[("language_model." + k) if f.parent.name == "llm" else _legacy_key(k)] = fh.get_tensor(k)
        except MiniGPTv2Error:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
            raise MiniGPTv2Error(f"cannot read {f}: {e}") from None
    base = {k: v for k, v in sd.items() if "lora_" not in k}
    with torch.device("meta"):
        model = MiniGPTv2ForConditionalGeneration(config)
    _fill(model, base, d)
    if any("lora_" in k for k in sd):
        model.add_lora()
        lora = {k: v for k, v in sd.items() if "lora_" in k}
        missing, unexpected = model.load_state_dict(lora, strict=False)
        bad = [k for k in missing if "lora_" in k]
        if bad or unexpected:
            raise MiniGPTv2Error(f"{d}: LoRA weights do not match config.json: missing {bad[:5]}, "
                                 f"unexpected {unexpected[:5]}")
        if merge_lora is None or merge_lora:
            model.merge_lora()
    model.to(dtype_of(dtype) if dtype != "auto" else next(iter(base.values())).dtype)
    if device is not None:
        model.to(device)
    return model.eval(), build_processor(load_tokenizer(d), config)


def _legacy_key(k: str) -> str:
    for old in ("llm.base_model.model.", "llm."):
        if k.startswith(old):
            return "language_model." + k[len(old):].replace(".base_layer.", ".")
    return k


def _fill(model, sd: dict, where) -> None:
    """Strictly put `sd` into a model built on the meta device (tied tensors may appear under one name)."""
    own = set(model.state_dict())
    alias = {}
    for a, b in _tied_names(model):
        alias[a], alias[b] = b, a
    missing = sorted(k for k in own - set(sd) if alias.get(k) not in sd and "rotary_emb" not in k)
    unexpected = sorted(set(sd) - own)
    if missing or unexpected:
        raise MiniGPTv2Error(f"{where} does not match its config.json: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    for k in list(sd):
        if alias.get(k) in own and alias[k] not in sd:
            sd[alias[k]] = sd[k]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    bad = [k for k in sd if tuple(sd[k].shape) != shapes[k]]
    if bad:
        raise MiniGPTv2Error(f"{where}: shape mismatch for {bad[:5]}")
    model.load_state_dict(sd, strict=False, assign=True)
    model.tie_weights()
    for m in model.modules():            # RoPE inverse frequencies are not stored: recompute them
        if type(m).__name__.endswith("RotaryEmbedding"):
            fn = m.rope_init_fn if getattr(m, "rope_type", "default") != "default" and hasattr(m, "rope_init_fn") \
                else m.compute_default_rope_parameters
            inv_freq, m.attention_scaling = fn(m.config)
            m.register_buffer("inv_freq", inv_freq, persistent=False)
            m.original_inv_freq = inv_freq.clone()


def migrate(src, dst, overwrite: bool = False) -> Path:
    """Rewrite a folder of the older format in this one (same tensors, same dtype, LoRA kept as an adapter)."""
    model, processor = load(src, dtype="auto", merge_lora=False)
    return save(model, processor, dst, overwrite=overwrite)


def export(model: MiniGPTv2ForConditionalGeneration, processor, out_dir, overwrite: bool = False) -> Path:
    """The model with its LoRA merged, as our folder, plus `llm/`: the LM alone as a standard transformers
    folder with its tokenizer (AutoModelForCausalLM / AutoTokenizer read it). The model passed in is unchanged."""
    import copy

    if getattr(model.language_model, "is_quantized", False):
        raise MiniGPTv2Error("export needs a model loaded without quantize= (its weights are written in full)")
    merged = copy.deepcopy(model)
    merged.merge_lora()
    merged.config.lora = None
    if merged.config.trainable.get("llm") == "lora":
        merged.config.trainable = {**merged.config.trainable, "llm": "frozen"}

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp), max_shard_size=SHARD)
        processor.save_pretrained(str(tmp))
        merged.language_model.save_pretrained(str(tmp / "llm"), max_shard_size=SHARD)
        processor.tokenizer.save_pretrained(str(tmp / "llm"))

    return write_folder(out_dir, overwrite, write)

# ---- official files ------------------------------------------------------------------------------------
def _tensor_dict(obj, name) -> dict:
    """A state dict of tensors, or a MiniGPTv2Error naming the file."""
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise MiniGPTv2Error(f"{name} does not hold a state dict of tensors")
    return obj


def vit_config_from_state(sd: dict, depth: int | None, heads: int, image_size: int):
    """Read width, patch size, MLP size and block count from the EVA tensors. Returns (config, file_depth)."""
    for k in ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.mlp.fc1.weight"):
        if k not in sd:
            raise MiniGPTv2Error(f"the ViT file has no {k!r}: not an EVA ViT state dict")
    w = sd["patch_embed.proj.weight"]
    if w.dim() != 4 or w.shape[-1] != w.shape[-2] or sd["blocks.0.mlp.fc1.weight"].dim() != 2:
        raise MiniGPTv2Error(f"the ViT file's patch_embed.proj.weight has shape {tuple(w.shape)}: not an EVA ViT")
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))):
        raise MiniGPTv2Error(f"the ViT file's blocks are not numbered 0..n-1 (found {blocks[:3]}...{blocks[-3:]})")
    file_depth = len(blocks)
    if depth is None:
        # the 40-block eva_vit_g.pth runs with 39 (docs/official-model.md §1.3)
        depth = 39 if file_depth == 40 else file_depth
    if not 0 < depth <= file_depth:
        raise MiniGPTv2Error(f"--vit-depth {depth} but the ViT file has {file_depth} blocks")
    if not isinstance(heads, int) or heads < 1 or w.shape[0] % heads:
        raise MiniGPTv2Error(f"ViT width {w.shape[0]} is not divisible by --vit-heads {heads}")
    cfg = MiniGPTv2VisionConfig(image_size=image_size, patch_size=w.shape[-1], width=w.shape[0], depth=depth,
                                heads=heads, mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0])
    return cfg, file_depth


def convert_official(llm_dir, vit_file, checkpoint_file, vit_depth: int | None = None, vit_heads: int = 16,
                     image_size: int = 448, lora_alpha: float = 16, dtype=None, merge_lora: bool = False):
    """Build our model from the official three inputs, strictly, in `dtype` (default: the LLM folder's stored
    dtype, fp16 for Llama-2; no full-precision copy is made). LoRA rank and targets come from the tensors; the
    LoRA is attached as a peft adapter (`merge_lora=True`: folded into the LM). Returns (model, processor)."""
    from transformers import LlamaForCausalLM

    from minigptv2.llm import llm_config_dict, pretrained

    llm_dir = Path(llm_dir)
    if not (llm_dir / "config.json").is_file():
        raise MiniGPTv2Error(f"{llm_dir} is not a Hugging Face LLaMA folder (config.json missing)")
    tokenizer = Tokenizer(llm_dir / "tokenizer.model")
    vit_sd = _tensor_dict(torch_load(vit_file), vit_file)
    vcfg, _ = vit_config_from_state(vit_sd, vit_depth, vit_heads, image_size)

    ckpt = torch_load(checkpoint_file)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise MiniGPTv2Error(f"{checkpoint_file} is not a MiniGPT-v2 training checkpoint (no 'model' key)")
    mapped: dict[str, torch.Tensor] = {}
    for k, t in _tensor_dict(ckpt["model"], f"{checkpoint_file} ['model']").items():
        if any(re.search(p, k) for p in CKPT_IGNORED):
            continue
        for pat, rep in CKPT_KEY_MAP:
            if re.match(pat, k):
                mapped[re.sub(pat, rep, k)] = t
                break
        else:
            raise MiniGPTv2Error(f"{checkpoint_file}: unknown key {k!r} (not in the official key map)")
    if "llama_proj.weight" not in mapped:
        raise MiniGPTv2Error(f"{checkpoint_file}: no llama_proj.weight")
    lora = None
    lora_a = [t for k, t in mapped.items() if k.endswith("lora_A.default.weight")]
    if lora_a:
        targets = sorted({re.search(r"self_attn\.(\w+)\.lora_A", k).group(1) for k in mapped if "lora_A" in k})
        lora = {"r": int(lora_a[0].shape[0]), "alpha": lora_alpha, "dropout": 0.05, "targets": targets}

    llm = pretrained(llm_dir, dtype_of(dtype) if dtype is not None else "auto", cls=LlamaForCausalLM)
    dtype = llm.dtype
    cfg = MiniGPTv2Config(name="converted", vision_config=vcfg, text_config=llm_config_dict(llm.config), lora=lora,
                          trainable={"vit": "frozen", "projector": "full", "llm": "lora" if lora else "frozen"})
    with torch.device("meta"):
        model = MiniGPTv2ForConditionalGeneration(cfg, language_model=llm)     # ViT, projector: empty
    vision: dict[str, torch.Tensor] = {}
    for k, t in vit_sd.items():
        m = re.match(r"blocks\.(\d+)\.", k)
        if m and int(m.group(1)) >= vcfg.depth:
            continue                                              # blocks past --vit-depth are not used
        vision[f"visual_encoder.{k}"] = interpolate_pos_embed(t, vcfg.grid) if k == "pos_embed" else t
    vision.update({k: v for k, v in mapped.items() if "lora_" not in k})
    for k in ALLOWED_MISSING - set(vision):                       # a fresh identity LayerNorm
        vision[k] = torch.ones(vcfg.width) if k.endswith("weight") else torch.zeros(vcfg.width)
    want = {k: v for k, v in model.state_dict().items() if not k.startswith("language_model.")}
    for k in vision:
        if k not in want:
            raise MiniGPTv2Error(f"unexpected weight {k!r} (from the ViT file or checkpoint)")
        if tuple(vision[k].shape) != tuple(want[k].shape):
            raise MiniGPTv2Error(f"shape mismatch for {k}: file {tuple(vision[k].shape)}, model {tuple(want[k].shape)}")
    missing = sorted(set(want) - set(vision))
    if missing:
        raise MiniGPTv2Error(f"weights missing from the official files: {missing[:8]}")
    model.load_state_dict({k: v.to(dtype) for k, v in vision.items()}, strict=False, assign=True)
    if lora is not None:
        model.add_lora()
        lora_sd = {k: v for k, v in mapped.items() if "lora_" in k}
        own = {k for k in model.state_dict() if "lora_" in k}
        if set(lora_sd) != own:
            raise MiniGPTv2Error(f"{checkpoint_file}: LoRA tensors do not cover the model's LoRA layers: missing "
                                 f"{sorted(own - set(lora_sd))[:4]}, unexpected {sorted(set(lora_sd) - own)[:4]}")
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k in own}
        bad = [k for k in lora_sd if tuple(lora_sd[k].shape) != shapes[k]]
        if bad:
            raise MiniGPTv2Error(f"{checkpoint_file}: LoRA shape mismatch for {bad[:4]}")
        model.load_state_dict(lora_sd, strict=False)
        if merge_lora:
            model.merge_lora()
    return model.eval(), build_processor(tokenizer, cfg)

