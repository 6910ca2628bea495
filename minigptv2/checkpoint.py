"""Weights in and out: the official files (converted strictly) and our self-describing model folder.

Our folder:   config.json (ModelConfig) + model.safetensors (every tensor of MiniGPTv2) + the tokenizer
              (tokenizer.model for SentencePiece, tokenizer/ for an HF tokenizer)
    model, processor = load("path/to/folder")
Exported:     config.json + llm/ (a standard HF folder, LoRA merged, safetensors) + vision.safetensors (ViT,
              ln_vision, projector) + the tokenizer; `export(model, processor, out)` / `minigptv2 export`.
              `load` reads it too; any HF tool reads llm/.
Official:     Llama-2 HF folder + EVA ViT .pth + MiniGPT-v2 training checkpoint (.pth, key "model")
    minigptv2 convert --llm DIR --vit FILE --checkpoint FILE --out DIR

Every .pth is read with torch.load(weights_only=True) (no pickled code runs). Loading is strict: a key that
is missing from the files or that the map does not know raises MiniGPTv2Error naming it; the only keys
allowed to be absent are ALLOWED_MISSING (ln_vision: the official checkpoints never hold it, facts §1.4).
Folders are written to a temporary sibling, synced, and swapped into place in one atomic step (Linux
renameat2 RENAME_EXCHANGE), so a crash at any moment leaves either the old or the new complete folder;
`recover(path)` tidies what a killed save left behind (see `save`).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model

from minigptv2.config import LoraSettings, ModelConfig, VisionConfig
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2
from minigptv2.processor import Processor, Tokenizer, load_tokenizer
from minigptv2.vit import interpolate_pos_embed

ALLOWED_MISSING = {"ln_vision.weight", "ln_vision.bias"}

# official MiniGPT-v2 checkpoint key -> our key (peft 0.2 LoRA names have no adapter segment; facts §2.2)
CKPT_KEY_MAP = [
    (r"^llama_proj\.(weight|bias)$", r"llama_proj.\1"),
    (r"^ln_vision\.(weight|bias)$", r"ln_vision.\1"),
    (r"^llama_model\.base_model\.model\.(model\.layers\.\d+\.self_attn\.\w+)\.lora_([AB])\.weight$",
     r"llm.base_model.model.\1.lora_\2.default.weight"),
]
CKPT_IGNORED = [r"\.rotary_emb\.inv_freq$"]          # persistent buffer in transformers 4.30, recomputed here


def torch_load(path) -> dict:
    """torch.load with weights_only=True; any failure (incl. a refused pickle) is a MiniGPTv2Error."""
    path = Path(path)
    if not path.is_file():
        raise MiniGPTv2Error(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle / zip / unpickling errors of many types
        raise MiniGPTv2Error(f"refused to load {path}: not a plain weights file "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


# ---- our folder ----------------------------------------------------------------------------------------
def save(model: MiniGPTv2, tokenizer, out_dir, overwrite: bool = False, state_dict: dict | None = None,
         extra=None) -> Path:
    """Write our model folder atomically (temp sibling + rename). `tokenizer`: a Tokenizer / HFTokenizer or a
    SentencePiece file. `state_dict` overrides the model's own (e.g. a gathered FSDP state dict);
    `extra(tmp_dir)` may add files before the rename."""
    def write(tmp: Path) -> None:
        if state_dict is None:
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            save_file(_dedupe(model, state_dict), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if extra is not None:
            extra(tmp)

    return _write_folder(model.config, tokenizer, out_dir, overwrite, write)


def _write_folder(config: ModelConfig, tokenizer, out_dir, overwrite: bool, write) -> Path:
    """config.json + tokenizer + whatever `write(tmp)` adds, into a temp sibling swapped into place atomically."""
    tokenizer = Tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MiniGPTv2Error(f"output folder {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        (tmp / "config.json").write_text(config.to_json())
        tokenizer.save(tmp)
        write(tmp)
        _fsync_dir(tmp, files=True)
        if not out.exists():
            os.replace(tmp, out)
        elif _exchange(tmp, out):                     # atomic: `out` is the old folder, then the new one
            shutil.rmtree(tmp, ignore_errors=True)   # tmp now holds the old folder
        else:                                         # no renameat2: two renames; `recover` closes the gap
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def recover(out_dir) -> None:
    """Undo what a save killed half-way left next to `out_dir`: put back the old folder if the two-rename
    fallback was cut between its renames, and delete temporary siblings. Call it only while nothing else
    is saving to `out_dir`."""
    out = Path(out_dir)
    if not out.parent.is_dir():
        return
    if not out.exists():
        olds = sorted((d / "x" for d in out.parent.glob(f".{out.name}.old*") if (d / "x").is_dir()),
                      key=lambda d: d.stat().st_mtime)
        if olds:
            os.replace(olds[-1], out)
    for d in [*out.parent.glob(f".{out.name}.tmp*"), *out.parent.glob(f".{out.name}.old*")]:
        shutil.rmtree(d, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where the OS / filesystem lacks it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(d: Path, files: bool = False) -> None:
    """Flush the files of `d` (if `files`) and the folder entry itself, so a rename never outlives the data."""
    if files:
        for f in d.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            elif f.is_dir():
                _fsync_dir(f)
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:          # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:          # some filesystems refuse fsync on a folder; the files themselves are synced
        pass
    finally:
        os.close(fd)


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


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(model_dir, dtype: torch.dtype | str = torch.float32, device=None,
         quantize: str | None = None) -> tuple[MiniGPTv2, Processor]:
    """Load a folder written by `save`, `minigptv2 convert` or `export`. Strict: every tensor the model has
    must be in the files and nothing else may be. `quantize` "8bit"/"4bit" loads the LLM with bitsandbytes
    (CUDA only); `device` moves the model (default: CPU, or cuda:0 when quantized)."""
    from minigptv2.llm import place_beside_quantized_llm, quantization_config

    d = Path(model_dir)
    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype):
        raise MiniGPTv2Error(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    exported = (d / "llm" / "config.json").is_file()
    if exported and (d / "model.safetensors").exists():
        raise MiniGPTv2Error(f"{d} holds both llm/ (exported layout) and model.safetensors: which one is meant?")
    weights = d / ("vision.safetensors" if exported else "model.safetensors")
    for f in (d / "config.json", weights):
        if not f.is_file():
            raise MiniGPTv2Error(f"{d} is not a minigptv2 model folder: {f.name} is missing")
    try:
        cfg = ModelConfig.from_dict(json.loads((d / "config.json").read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise MiniGPTv2Error(f"bad {d / 'config.json'}: {e}") from None
    tokenizer = load_tokenizer(d)
    qc = quantization_config(quantize)
    if exported or qc is not None:          # the LLM comes from an HF folder; the file holds the rest
        model = MiniGPTv2(cfg, llm=_load_llm_part(d, cfg, dtype, qc, exported))
        own = {k for k in model.state_dict() if not k.startswith("llm.") or "lora_" in k}
    else:
        with torch.device("meta"):
            model = MiniGPTv2(cfg)
        model = model.to_empty(device="cpu")
        own = set(model.state_dict())
    try:
        if exported or qc is None:
            sd = load_file(str(weights))
        else:                                          # the LLM base weights were read by _load_llm_part
            from safetensors import safe_open

            with safe_open(str(weights), "pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("llm.") or "lora_" in k}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise MiniGPTv2Error(f"cannot read {weights}: {e}") from None
    alias = {}                                        # tied tensors: the file holds one of the names
    for a, b in _tied_names(model):
        alias[a], alias[b] = b, a
    missing = sorted(k for k in own - set(sd) if alias.get(k) not in sd)
    unexpected = sorted(set(sd) - own)
    if missing or unexpected:
        raise MiniGPTv2Error(f"{weights} does not match config.json: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.load_state_dict(sd, strict=False)          # strictness checked above against `own`
    if not exported and qc is None:
        _reset_buffers(model)
    if qc is None:
        model.to(dtype)
        if device is not None:
            model.to(device)
    else:
        place_beside_quantized_llm(model, dtype, device)
    return model.eval(), Processor(tokenizer, cfg)


def _load_llm_part(d: Path, cfg: ModelConfig, dtype, qc, exported: bool):
    """The LLM of an exported folder (d/llm) or, to quantize it, of our single-file folder (its base weights
    are written as a temporary HF folder that transformers quantizes while loading)."""
    from minigptv2.llm import llm_config_dict, pretrained
    from minigptv2.model import llm_hf_config

    if exported:
        src, tmp = d / "llm", None
    else:
        from safetensors import safe_open

        tmp = Path(tempfile.mkdtemp(prefix="minigptv2-llm-"))
        prefix = "llm.base_model.model." if cfg.lora is not None else "llm."
        with safe_open(str(d / "model.safetensors"), "pt") as f:      # peft names base weights *.base_layer.*
            part = {k[len(prefix):].replace(".base_layer.", "."): f.get_tensor(k)
                    for k in f.keys() if k.startswith(prefix) and "lora_" not in k}
        if "model.embed_tokens.weight" not in part and "lm_head.weight" in part:   # tied: the file kept one name
            part["model.embed_tokens.weight"] = part.pop("lm_head.weight")
        save_file(part, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        llm_hf_config(cfg).save_pretrained(tmp)
        src = tmp
    try:
        llm = pretrained(src, dtype if qc is None else torch.float16, qc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    core = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")
    have, want = llm_config_dict(llm.config), {"model_type": "llama", **cfg.llm}
    diff = [k for k in core if k in want and have.get(k) != want[k]]
    if diff:
        raise MiniGPTv2Error(f"{src}/config.json does not match {d / 'config.json'} in {diff}")
    return llm


def export(model: MiniGPTv2, processor: Processor, out_dir, overwrite: bool = False) -> Path:
    """Write the exported layout: LoRA merged into the LLM (a standard HF folder, safetensors) + ViT/projector
    weights + config + tokenizer. The model passed in is not changed. Reload with `load(out_dir)`."""
    import copy

    cfg = ModelConfig.from_dict(model.config.to_dict())
    llm = model.llm
    if getattr(model.base_llm, "is_quantized", False):
        raise MiniGPTv2Error("export needs a model loaded without quantize= (its weights are written in full)")
    if cfg.lora is not None:
        llm = copy.deepcopy(llm).merge_and_unload()      # peft: W + B·A·(alpha/r), adapters removed
        cfg.lora = None
        if cfg.trainable.get("llm") == "lora":
            cfg.trainable = {**cfg.trainable, "llm": "frozen"}
    rest = {k: v for k, v in model.state_dict().items() if not k.startswith("llm.")}

    def write(tmp: Path) -> None:
        llm.save_pretrained(str(tmp / "llm"), safe_serialization=True)
        tok = processor.tokenizer                 # llm/ is complete for HF tools: tokenizer beside the weights
        if hasattr(tok, "hf"):
            tok.hf.save_pretrained(str(tmp / "llm"))
        else:
            tok.save(tmp / "llm")
        save_file({k: v.contiguous() for k, v in rest.items()}, str(tmp / "vision.safetensors"),
                  metadata={"format": "pt"})

    return _write_folder(cfg, processor.tokenizer, out_dir, overwrite, write)


def _reset_buffers(model: MiniGPTv2) -> None:
    """Non-persistent buffers (RoPE inv_freq) are not in the file; recompute them after a meta-device build."""
    for m in model.modules():
        if hasattr(m, "rope_init_fn") or type(m).__name__.endswith("RotaryEmbedding"):
            inv_freq, scaling = m.rope_init_fn(m.config) if hasattr(m, "rope_init_fn") and m.rope_type != "default" \
                else m.compute_default_rope_parameters(m.config)
            m.inv_freq = inv_freq
            m.original_inv_freq = inv_freq.clone()
            m.attention_scaling = scaling


# ---- official files ------------------------------------------------------------------------------------
def vit_config_from_state(sd: dict, depth: int | None, heads: int, image_size: int) -> tuple[VisionConfig, int]:
    """Read width, patch size, MLP size and block count from the EVA tensors. Returns (config, file_depth)."""
    for k in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        if k not in sd:
            raise MiniGPTv2Error(f"the ViT file has no {k!r}: not an EVA ViT state dict")
    w = sd["patch_embed.proj.weight"]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    file_depth = max(blocks) + 1 if blocks else 0
    if depth is None:
        depth = 39 if file_depth == 40 else file_depth   # the 40-block eva_vit_g.pth runs with 39 (facts §1.3)
    if not 0 < depth <= file_depth:
        raise MiniGPTv2Error(f"--vit-depth {depth} but the ViT file has {file_depth} blocks")
    if w.shape[0] % heads:
        raise MiniGPTv2Error(f"ViT width {w.shape[0]} is not divisible by --vit-heads {heads}")
    cfg = VisionConfig(image_size=image_size, patch_size=w.shape[-1], width=w.shape[0], depth=depth, heads=heads,
                       mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in sd else 4 * w.shape[0])
    return cfg, file_depth


def convert_official(llm_dir, vit_file, checkpoint_file, vit_depth: int | None = None, vit_heads: int = 16,
                     image_size: int = 448, lora_alpha: float = 16) -> tuple[MiniGPTv2, Tokenizer]:
    """Build our model from the official three inputs, strictly. LoRA rank and widths come from the tensors."""
    from transformers import LlamaForCausalLM

    from minigptv2.llm import llm_config_dict, pretrained

    llm_dir = Path(llm_dir)
    if not (llm_dir / "config.json").is_file():
        raise MiniGPTv2Error(f"{llm_dir} is not a Hugging Face LLaMA folder (config.json missing)")
    tokenizer = Tokenizer(llm_dir / "tokenizer.model")

    vit_sd = torch_load(vit_file)
    if not isinstance(vit_sd, dict):
        raise MiniGPTv2Error(f"{vit_file} does not hold a state dict")
    vcfg, file_depth = vit_config_from_state(vit_sd, vit_depth, vit_heads, image_size)

    ckpt = torch_load(checkpoint_file)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise MiniGPTv2Error(f"{checkpoint_file} is not a MiniGPT-v2 training checkpoint (no 'model' key)")
    ck = ckpt["model"]
    mapped: dict[str, torch.Tensor] = {}
    for k, t in ck.items():
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
    lora_a = [t for k, t in mapped.items() if k.endswith("lora_A.default.weight")]
    lora = None
    if lora_a:
        targets = sorted({re.search(r"self_attn\.(\w+)\.lora_A", k).group(1) for k in mapped if "lora_A" in k})
        lora = LoraSettings(r=lora_a[0].shape[0], alpha=lora_alpha, dropout=0.05, targets=tuple(targets))

    llm = pretrained(llm_dir, torch.float32, cls=LlamaForCausalLM)

    cfg = ModelConfig(name="converted", vision=vcfg, llm=llm_config_dict(llm.config), lora=lora)
    if lora is None:
        cfg.trainable = {"vit": "frozen", "projector": "full", "llm": "frozen"}
    proj = mapped["llama_proj.weight"]
    if proj.shape != (llm.config.hidden_size, vcfg.width * cfg.group):
        raise MiniGPTv2Error(f"{checkpoint_file}: llama_proj.weight has shape {tuple(proj.shape)}, expected "
                             f"{(llm.config.hidden_size, vcfg.width * cfg.group)} from the ViT and LLM")
    model = MiniGPTv2(cfg, llm=llm)

    sd = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    for k, t in vit_sd.items():
        m = re.match(r"blocks\.(\d+)\.", k)
        if m and int(m.group(1)) >= vcfg.depth:
            continue                                              # blocks past --vit-depth are not used
        if k == "pos_embed":
            t = interpolate_pos_embed(t, vcfg.grid)
        new[f"visual_encoder.{k}"] = t
    new.update(mapped)
    for k in list(new):
        if k not in sd:
            raise MiniGPTv2Error(f"unexpected weight {k!r} (from the ViT file or checkpoint)")
        if tuple(new[k].shape) != tuple(sd[k].shape):
            raise MiniGPTv2Error(f"shape mismatch for {k}: file {tuple(new[k].shape)}, model {tuple(sd[k].shape)}")
    llm_keys = {k for k in sd if k.startswith("llm.") and "lora_" not in k}
    missing = [k for k in sd if k not in new and k not in llm_keys and k not in ALLOWED_MISSING]
    if missing:
        raise MiniGPTv2Error(f"weights missing from the official files: {missing[:8]}")
    model.load_state_dict({**{k: sd[k] for k in llm_keys | ALLOWED_MISSING}, **new}, strict=True)
    with torch.no_grad():
        if "ln_vision.weight" not in new:                        # fresh identity LayerNorm (facts §1.4)
            model.ln_vision.weight.fill_(1.0)
            model.ln_vision.bias.zero_()
    return model.float().eval(), tokenizer
