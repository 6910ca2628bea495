"""What the benchmark scripts share: the models, the requests, the official-style baselines, timing and the
command line. Each script (`benchmarks/latency.py`, ...) holds its own measurement; `benchmarks/run.py` runs them.

Models (random weights, nothing downloaded):
    smol   LLaMA with SmolLM2-135M's shape (30 layers, hidden 576, MLP 1536, 9 heads / 3 KV heads, vocab 49152,
           tied embeddings) + a small EVA ViT (width 192, depth 6) at the official 448 px -> 256 image tokens.
    tiny   the unit-test toy (config.tiny()).
    nano   the installed nano model, as trained.

Baseline ("official"): what `minigpt_base.py::generate` does per request (docs/official-model.md §3.2, §3.6):
tokenize each text piece separately, embed it, concatenate with the image embeddings, left-pad with all-zero
vectors, then HF `generate(inputs_embeds=...)`. Training baseline (docs/official-model.md §4.3): embeddings built
per sample in Python, then one LLM forward on inputs_embeds. Every script's measurement returns a dict that
`script_main` prints as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minigptv2 import prompts
from minigptv2.config import OFFICIAL_LORA, SMOLLM2_135M, MiniGPTv2Config, tiny
from minigptv2.processor import IGNORE, build_processor
from minigptv2.tokenizers import Tokenizer

WORDS = ("what color is the red green blue yellow purple circle square triangle shape object how many shapes are "
         "there a an and of in this image where locate describe location give me one two three yes no it "
         "short caption detail poem write please").split()

# mixed prompts over all task identifiers (+ free chat)
PROMPTS = (
    "[vqa] what is the color of the circle?",
    "[caption] A short image caption:",
    "[grounding] describe this image in detail",
    "[refer] the red circle",
    "[identify] what is this {<4><50><30><65>}",
    "[detection] blue rectangle",
    "Please write a poem about the image",
    "[vqa] how many shapes are there",
)


# ---- models ------------------------------------------------------------------------------------------------
def bench_tokenizer() -> Path:
    from minigptv2.tokenizers import build_tokenizer

    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minigptv2-bench"
    f = d / "tok-v1.model"
    if not f.is_file():
        rng = random.Random(0)
        lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(400)] + list(PROMPTS)
        lines += ["[INST] <Img></Img> [/INST]", "<p>blue square</p> {<1><2><3><4>}<delim>{<5><6><7><8>}"]
        build_tokenizer(lines, f, vocab_size=512)
    return f


def smol_config(image_size: int = 448, lora: bool = False) -> MiniGPTv2Config:
    return MiniGPTv2Config(
        name="bench-smol",
        vision_config=dict(image_size=image_size, patch_size=14, width=192, depth=6, heads=3, mlp_dim=768),
        text_config=dict(SMOLLM2_135M),
        lora=dict(OFFICIAL_LORA) if lora else None, max_context_len=2048, max_txt_len=128,
        trainable={"vit": "frozen", "projector": "full", "llm": "lora" if lora else "full"},
    )


def build(kind: str = "smol", image_size: int | None = None, lora: bool = False, seed: int = 0):
    """(model, processor) with random weights, eval mode; "nano": the installed nano model, as trained."""
    from minigptv2.model import MiniGPTv2ForConditionalGeneration

    if kind == "nano":
        from minigptv2 import NANO_DIR
        from minigptv2 import checkpoint as ckpt

        if image_size or lora:
            raise ValueError("the nano bench model is the installed one: 112 px, no LoRA")
        model, proc = ckpt.load(NANO_DIR)
        return model.eval(), proc
    tok = Tokenizer(bench_tokenizer())
    if kind == "smol":
        cfg = smol_config(image_size or 448, lora)
    elif kind == "tiny":
        cfg = tiny()
        cfg.text_config.vocab_size = len(tok)
        if image_size:
            cfg.vision_config.image_size = image_size
        if not lora:
            cfg.lora = None
            cfg.trainable = {"vit": "frozen", "projector": "full", "llm": "full"}
    else:
        raise ValueError(f"unknown bench model {kind!r}")
    torch.manual_seed(seed)
    return MiniGPTv2ForConditionalGeneration(cfg).eval(), build_processor(tok, cfg)


def images(n: int, size: int = 320, seed: int = 0):
    """n distinct deterministic RGB images (blocky noise)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a = torch.randint(0, 256, (size // 16, size // 16, 3), generator=g, dtype=torch.uint8)
        out.append(Image.fromarray(a.numpy()).resize((size, size), Image.NEAREST))
    return out


def requests(n: int, seed: int = 0):
    ims = images(n, seed=seed)
    return ims, [PROMPTS[i % len(PROMPTS)] for i in range(n)]


# ---- the official-style baseline ---------------------------------------------------------------------------
def _gen_kw(processor, max_new_tokens: int) -> dict:
    return dict(max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=False, num_beams=1,
                eos_token_id=processor.tok.eos_id, pad_token_id=processor.config.text_config.pad_token_id or 0)


def official_context_emb(model, processor, image, prompt: str) -> torch.Tensor:
    """`get_context_emb`: one sample's (L, D) embeddings, built piece by piece (docs/official-model.md §3.2)."""
    from minigptv2.images import load_image

    tok, emb = processor.tok, model.language_model.get_input_embeddings()
    segs, piece = [], []
    for it in prompts.render_inference([prompt], [], has_image=True):
        if it.kind == "image":
            segs.append(emb(torch.tensor(piece, device=emb.weight.device)))
            piece = []
            pv = processor.image(load_image(image))[None].to(emb.weight.dtype)
            segs.append(model.get_image_features(pv)[0])
        else:
            piece += {"bos": [tok.bos_id], "eos": [tok.eos_id]}.get(it.kind) or tok.encode(it.text)
    if piece:
        segs.append(emb(torch.tensor(piece, device=emb.weight.device)))
    return torch.cat(segs)


@torch.inference_mode()
def official_generate(model, processor, images_, prompts_, max_new_tokens: int, streamer=None) -> list[list[int]]:
    """`minigpt_base.py::generate`: per-sample context embeddings, zero-vector left padding, one HF generate."""
    embs = [official_context_emb(model, processor, im, p) for im, p in zip(images_, prompts_)]
    L, D = max(e.shape[0] for e in embs), embs[0].shape[1]
    x = torch.zeros(len(embs), L, D, dtype=embs[0].dtype, device=embs[0].device)
    mask = torch.zeros(len(embs), L, dtype=torch.long, device=embs[0].device)
    for i, e in enumerate(embs):
        x[i, L - e.shape[0]:] = e
        mask[i, L - e.shape[0]:] = 1
    out = model.language_model.generate(inputs_embeds=x, attention_mask=mask, streamer=streamer,
                             **_gen_kw(processor, max_new_tokens))
    return [_cut(r, processor.tok.eos_id) for r in out.tolist()]


def _cut(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def ours_generate(model, processor, images_, prompts_, max_new_tokens: int, streamer=None) -> list[list[int]]:
    from minigptv2.generate import generate

    return [r.token_ids for r in generate(model, processor, images_, prompts_, max_new_tokens=max_new_tokens,
                                          streamer=streamer)]


# ---- the official-style training baseline ------------------------------------------------------------------
@dataclass
class _Sample:
    turns: list
    image: object
    source: str = "bench"
    points: list | None = None


def train_samples(n: int, seed: int = 0) -> list:
    ims = images(n, seed=seed)
    answers = ("red", "a red circle and a blue square", "{<12><40><38><71>}", "<p>circle</p> {<1><2><3><4>}")
    return [_Sample([(PROMPTS[i % len(PROMPTS)], answers[i % len(answers)])], ims[i]) for i in range(n)]


def official_loss_sum(model, proc, samples, dtype=torch.float32):
    """docs/official-model.md §4.3: images encoded as a batch, then per sample: tokenize each piece, embed, concat
    with the image embeddings, right-pad with zeros; one LLM forward on inputs_embeds; CE on the answer tokens."""
    from minigptv2.losses import next_token_loss

    tok, emb = proc.tok, model.language_model.get_input_embeddings()
    pix = torch.stack([proc.image(s.image) for s in samples]).to(emb.weight.dtype)
    img = model.get_image_features(pix)
    seqs, labs = [], []
    for i, s in enumerate(samples):
        turns = [(q, proc.truncate(a)) for q, a in s.turns]
        parts, lab = [], []
        for it in prompts.render_training(turns, True, True):
            if it.kind == "image":
                parts.append(img[i])
                lab += [IGNORE] * img.shape[1]
                continue
            ids = {"bos": [tok.bos_id], "eos": [tok.eos_id]}.get(it.kind) or tok.encode(it.text)
            parts.append(emb(torch.tensor(ids)))
            lab += ids if it.target else [IGNORE] * len(ids)
        seqs.append(torch.cat(parts))
        labs.append(lab)
    L, D = max(x.shape[0] for x in seqs), seqs[0].shape[1]
    x = torch.zeros(len(seqs), L, D, dtype=seqs[0].dtype)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    labels = torch.full((len(seqs), L), IGNORE, dtype=torch.long)
    for i, (e, lab) in enumerate(zip(seqs, labs)):
        x[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = 1
        labels[i, : e.shape[0]] = torch.tensor(lab)
    labels[labels == tok.pad_id] = IGNORE
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        logits = model.language_model(inputs_embeds=x, attention_mask=mask).logits
    return next_token_loss(logits, labels), int((labels[:, 1:] != IGNORE).sum())


# ---- timing ------------------------------------------------------------------------------------------------
class FirstToken:
    """HF streamer that records when the first generated token arrives."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.first = None

    def put(self, value):
        if self.first is None and value.numel() > 0:
            self.first = time.perf_counter()

    def end(self):
        pass


def timed(fn, *a, **kw):
    st = FirstToken()
    out = fn(*a, streamer=st, **kw)
    t = time.perf_counter() - st.t0
    return out, t, (st.first - st.t0) if st.first else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ntok(rows) -> int:
    return sum(len(r) for r in rows)


def meta(args, extra=None) -> dict:
    d = {"model": args.model, "threads": torch.get_num_threads(), "torch": torch.__version__,
         "machine": platform.machine(), "device": "cpu"}
    d.update(extra or {})
    return d


# ---- command line ------------------------------------------------------------------------------------------
def script_main(measure, argv=None, model: tuple = ("smol", "tiny"), **options) -> int:
    """Parse a script's command line, run `measure(args)` and print its dict as one JSON line with the wall time.

    Every script takes --tiny, --model, --image-size and --threads; `options` are its own integer options, each
    name=(default, default with --tiny), a list default making a list option; `model` is (default, with --tiny).
    Options of other scripts are ignored (with a note on stderr), so `benchmarks/run.py` can pass one set to all."""
    p = argparse.ArgumentParser(description=measure.__doc__, allow_abbrev=False)   # --batch is not --batches
    p.add_argument("--tiny", action="store_true", help="the tiny random model, short runs (for tests)")
    p.add_argument("--model", default=None, choices=["smol", "tiny", "nano"],
                   help=f"default {model[0]}, with --tiny {model[1]}")
    p.add_argument("--image-size", type=int, default=None, help="default the model's (smol: 448)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    for k, (full, small) in options.items():
        p.add_argument("--" + k.replace("_", "-"), type=int, nargs="+" if isinstance(full, list) else None,
                       default=None, help=f"default {full}, with --tiny {small}")
    a, other = p.parse_known_args(argv)
    if other:
        print(f"{p.prog}: ignoring {' '.join(other)} (not this benchmark's options)", file=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    i = 1 if a.tiny else 0
    a.model = a.model or model[i]
    for k, v in options.items():
        if getattr(a, k) is None:
            setattr(a, k, v[i])
    t = time.perf_counter()
    out = measure(a)
    out["bench_wall_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out), flush=True)
    return 0
