"""Benchmarks: our batched `generate` vs the official-style per-sample path, on the same weights, side by side.

    python benchmarks/run.py                 # every benchmark in benchmarks/, one JSON line each
    python benchmarks/run.py --only latency generate_batch --tiny      # seconds: the tiny random model
    python benchmarks/run.py --out benchmarks/results.jsonl --plot benchmarks/bench.png
    python benchmarks/latency.py [--tiny] [--max-new-tokens 32]

Models (random weights, nothing downloaded):
    smol   LLaMA with SmolLM2-135M's shape (30 layers, hidden 576, MLP 1536, 9 heads / 3 KV heads, vocab 49152,
           tied embeddings) + a small EVA ViT (width 192, depth 6) at the official 448 px -> 256 image tokens.
    tiny   the unit-test toy (config.tiny()).

Baseline ("official"): what `minigpt_base.py::generate` does per request (docs/official-model.md §3.2, §3.6):
tokenize each text piece separately, embed it, concatenate with the image embeddings, left-pad with all-zero
vectors, then HF `generate(inputs_embeds=...)`. Training baseline (docs/official-model.md §4.3): embeddings built
per sample in Python, then one LLM forward on inputs_embeds. Every function returns a dict that the scripts print
as one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minigptv2 import prompts
from minigptv2.config import OFFICIAL_LORA, SMOLLM2_135M, MiniGPTv2Config, tiny
from minigptv2.processor import IGNORE, build_processor
from minigptv2.tokenizers import Tokenizer

BENCHMARKS = ("latency", "generate_batch", "prefix_cache", "scaling", "train_step", "bandwidth", "nano_train")

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


def _ntok(rows) -> int:
    return sum(len(r) for r in rows)


def _meta(args, extra=None) -> dict:
    d = {"model": args.model, "threads": torch.get_num_threads(), "torch": torch.__version__,
         "machine": platform.machine(), "device": "cpu"}
    d.update(extra or {})
    return d


# ---- benchmarks --------------------------------------------------------------------------------------------
def run_latency(args) -> dict:
    """Single request: wall time and time-to-first-token, baseline vs ours (median of --repeats)."""
    model, proc = build(args.model, args.image_size)
    ims, ps = requests(args.repeats + 1)
    # warm-up (first call pays one-off costs)
    ours_generate(model, proc, ims[:1], ps[:1], 2)
    official_generate(model, proc, ims[:1], ps[:1], 2)
    res = {"official": [], "ours": []}
    same = True
    for i in range(1, args.repeats + 1):   # alternate which path runs first: the second run is often slower
        if i % 2:
            a, ta, fa = timed(official_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
            b, tb, fb = timed(ours_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
        else:
            b, tb, fb = timed(ours_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
            a, ta, fa = timed(official_generate, model, proc, [ims[i]], [ps[i]], args.max_new_tokens)
        same &= a == b
        res["official"].append((ta, fa, _ntok(a)))
        res["ours"].append((tb, fb, _ntok(b)))

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    out = {"bench": "latency", "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
           "same_token_ids": same}
    for k, v in res.items():
        out[f"{k}_latency_s"] = round(med([x[0] for x in v]), 4)
        out[f"{k}_ttft_s"] = round(med([x[1] for x in v]), 4)
        out[f"{k}_new_tokens"] = v[0][2]
        out[f"{k}_decode_tok_s"] = round(med([(x[2] - 1) / max(1e-9, x[0] - x[1]) for x in v]), 2)
    out["latency_ratio_ours_over_official"] = round(out["ours_latency_s"] / out["official_latency_s"], 3)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return _meta(args, out)


def run_generate_batch(args) -> dict:
    """N requests: the baseline one request at a time vs ours as one batch."""
    model, proc = build(args.model, args.image_size)
    n = args.batch
    ims, ps = requests(n, seed=1)
    ours_generate(model, proc, ims[:1], ps[:1], 2)
    official_generate(model, proc, ims[:1], ps[:1], 2)
    t = time.perf_counter()
    base = [official_generate(model, proc, [im], [p], args.max_new_tokens)[0] for im, p in zip(ims, ps)]
    t_base = time.perf_counter() - t
    ours, t_ours, ttft = timed(ours_generate, model, proc, ims, ps, args.max_new_tokens)
    out = {"bench": "generate_batch", "batch": n, "max_new_tokens": args.max_new_tokens,
           "same_token_ids": base == ours, "n_rows_differ": sum(a != b for a, b in zip(base, ours)),
           "official_sequential_s": round(t_base, 3), "ours_batched_s": round(t_ours, 3),
           "ours_ttft_s": round(ttft, 3) if ttft else None,
           "official_tok_s": round(_ntok(base) / t_base, 2), "ours_tok_s": round(_ntok(ours) / t_ours, 2),
           "official_req_s": round(n / t_base, 3), "ours_req_s": round(n / t_ours, 3),
           "throughput_ratio": round(t_base / t_ours, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
    return _meta(args, out)


def run_prefix_cache(args) -> dict:
    """Questions about one image: plain generate vs the image/prefix cache (first = miss, later = hits)."""
    from minigptv2.generate import PrefixCache, generate, generate_cached

    model, proc = build(args.model, args.image_size)
    [im] = images(1, seed=2)
    qs = PROMPTS[: args.repeats + 1]
    generate(model, proc, [images(1, seed=3)[0]], [qs[0]], max_new_tokens=2)   # warm-up
    cache = PrefixCache()
    plain, cached, same = [], [], True
    for q in qs:
        t = time.perf_counter()
        [a] = generate(model, proc, [im], [q], max_new_tokens=args.max_new_tokens)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = generate_cached(model, proc, im, q, cache, max_new_tokens=args.max_new_tokens)
        cached.append(time.perf_counter() - t)
        same &= a.token_ids == b.token_ids
    later = sorted(cached[1:])[len(cached[1:]) // 2]
    out = {"bench": "prefix_cache", "max_new_tokens": args.max_new_tokens, "questions": len(qs),
           "same_token_ids": same, "plain_s": [round(x, 3) for x in plain], "cached_s": [round(x, 3) for x in cached],
           "first_question_s": round(cached[0], 3), "later_question_median_s": round(later, 3),
           "speedup_later_vs_first": round(cached[0] / later, 3),
           "speedup_later_vs_plain": round(sorted(plain[1:])[len(plain[1:]) // 2] / later, 3),
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return _meta(args, out)


def run_scaling(args) -> dict:
    """Ours: wall time, TTFT, tokens/s and peak RSS for each batch size (--max-new-tokens) and, at batch 1,
    each output length (--lengths). Peak RSS is the process maximum so far (rows run in increasing size)."""
    model, proc = build(args.model, args.image_size)
    ours_generate(model, proc, *requests(1), 2)
    rows = []
    runs = [(1, m) for m in args.lengths] + [(n, args.max_new_tokens) for n in args.batches]
    for n, m in sorted(set(runs)):
        ims, ps = requests(n, seed=4)
        ids, t, ttft = timed(ours_generate, model, proc, ims, ps, m)
        rows.append({"batch": n, "max_new_tokens": m, "wall_s": round(t, 3), "ttft_s": round(ttft, 3),
                     "new_tokens": _ntok(ids), "tok_s": round(_ntok(ids) / t, 2),
                     "decode_tok_s": round((_ntok(ids) - n) / max(1e-9, t - ttft), 2),
                     "peak_rss_mb_so_far": round(peak_rss_mb(), 1)})
    return _meta(args, {"bench": "scaling", "rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1)})


def plot(lines: list[dict], png: str | Path) -> None:
    """One PNG: scaling (tokens/s and TTFT vs batch) and the side-by-side ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {d["bench"]: d for d in lines if "error" not in d}
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    if "scaling" in by:
        sc = by["scaling"]
        m = max(r["max_new_tokens"] for r in sc["rows"] if r["batch"] > 1) if any(
            r["batch"] > 1 for r in sc["rows"]) else sc["rows"][0]["max_new_tokens"]
        rows = sorted((r for r in sc["rows"] if r["max_new_tokens"] == m), key=lambda r: r["batch"])
        b = [r["batch"] for r in rows]
        ax[0].plot(b, [r["tok_s"] for r in rows], "o-", label="end-to-end tokens/s")
        ax[0].plot(b, [r["decode_tok_s"] for r in rows], "s--", label="decode tokens/s (after 1st token)")
        ax[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="tokens/s",
                  title=f"ours, {sc['model']}, {m} new tokens")
        ax[0].legend()
        ax[1].plot(b, [r["ttft_s"] for r in rows], "o-", label="time to first token")
        ax[1].plot(b, [r["wall_s"] for r in rows], "s--", label="wall")
        ax[1].set(xscale="log", yscale="log", xlabel="batch size", ylabel="seconds", title="latency vs batch")
        ax[1].legend()
    names, vals = [], []
    if "generate_batch" in by:
        names.append(f"batch {by['generate_batch']['batch']}\nthroughput")
        vals.append(by["generate_batch"]["throughput_ratio"])
    if "latency" in by:
        names.append("1 request\nspeed")
        vals.append(1 / by["latency"]["latency_ratio_ours_over_official"])
    if "prefix_cache" in by:
        names.append("2nd question\nvs 1st")
        vals.append(by["prefix_cache"]["speedup_later_vs_first"])
    if "train_step" in by:
        names.append("train\nsamples/s")
        vals.append(by["train_step"]["ratio"])
    ax[2].bar(names, vals, color="tab:blue")
    ax[2].axhline(1, color="k", lw=0.8)
    for i, v in enumerate(vals):
        ax[2].text(i, v, f"{v:.2f}x", ha="center", va="bottom")
    ax[2].set(ylabel="ours ÷ official-style baseline (higher = faster)", title="speed-up vs baseline")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


@dataclass
class _Sample:
    turns: list
    image: object
    source: str = "bench"


def train_samples(n: int, seed: int = 0) -> list:
    ims = images(n, seed=seed)
    answers = ("red", "a red circle and a blue square", "{<12><40><38><71>}", "<p>circle</p> {<1><2><3><4>}")
    return [_Sample([(PROMPTS[i % len(PROMPTS)], answers[i % len(answers)])], ims[i]) for i in range(n)]


def official_loss_sum(model, proc, samples, dtype=torch.float32):
    """docs/official-model.md §4.3: images encoded as a batch, then per sample: tokenize each piece, embed, concat
    with the image embeddings, right-pad with zeros; one LLM forward on inputs_embeds; CE on the answer tokens."""
    import torch.nn.functional as F

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
    lg, lb = logits[:, :-1].float(), labels[:, 1:]
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=IGNORE, reduction="sum"), \
        int((lb != IGNORE).sum())


def run_train_step(args) -> dict:
    """Training step (forward + backward + AdamW) samples/s: ours (make_batch + loss_sum) vs the baseline."""
    from minigptv2.train.batches import make_batch
    from minigptv2.train.loop import loss_sum, param_groups

    model, proc = build(args.model, args.image_size, lora=True)
    model.set_trainable(model.config.trainable)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-5)
    n = args.batch
    batches = [train_samples(n, seed=10 + k) for k in range(args.steps + 1)]

    def ours(samples):
        b = make_batch(proc, samples, True, True)
        return loss_sum(model, b, torch.float32)

    def official(samples):
        return official_loss_sum(model, proc, samples)

    losses, times = {}, {}
    for name, fn in (("official", official), ("ours", ours)):
        ts, ls = [], []
        for k, samples in enumerate(batches):
            t = time.perf_counter()
            s, cnt = fn(samples)
            (s / max(cnt, 1)).backward()
            opt.zero_grad(set_to_none=True)   # identical weights for both paths: gradients computed, no update
            ts.append(time.perf_counter() - t)
            ls.append(round(float(s.detach()) / max(cnt, 1), 6))
        times[name], losses[name] = ts[1:], ls   # first step = warm-up
    sps = {k: n * len(v) / sum(v) for k, v in times.items()}
    out = {"bench": "train_step", "batch": n, "steps": args.steps, "trainable": model.config.trainable,
           "official_samples_s": round(sps["official"], 3), "ours_samples_s": round(sps["ours"], 3),
           "ratio": round(sps["ours"] / sps["official"], 3),
           "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["official"], losses["ours"])),
           "note": "forward + backward per step; optimizer step skipped so both paths see the same weights",
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return _meta(args, out)


def run_nano_train(args) -> dict:
    """The nano recipe's training step (global batch --batch in 2 length-sorted micro-batches, bf16 where native,
    cached frozen-ViT output, AdamW) with the LLM's attention as sdpa and as eager (TrainConfig.attention), from
    the same weights, interleaved so a slow moment hits both: median seconds per step of each."""
    import copy
    import statistics
    import tempfile

    from minigptv2 import checkpoint as ckpt
    from minigptv2.train.batches import Mixture, VisionCache
    from minigptv2.train.config import TrainConfig, resolve_precision
    from minigptv2.train.loop import train
    from minigptv2.data.datasets import load_mixture
    from minigptv2.synthetic import write_synthetic

    model, proc = build(args.model, args.image_size)
    start = copy.deepcopy(model.state_dict())
    precision = resolve_precision("auto", torch.device("cpu"))
    tc = TrainConfig(steps=args.steps + 1, batch_size=args.batch, grad_accum=2, lr=4e-4, min_lr=2e-5,
                     warmup_lr=4e-5, warmup_steps=0, trainable={"vit": "frozen", "projector": "full", "llm": "full"},
                     grad_clip=1.0, precision=precision, cache_vision=True, save_every=10 ** 9)
    cache = VisionCache(model, proc, ckpt.DTYPES[precision], torch.device("cpu"))
    times, losses = {"sdpa": [], "eager": []}, {}
    with tempfile.TemporaryDirectory() as d:
        write_synthetic(Path(d) / "data", n=64, seed=0, max_objects=3)
        mix = Mixture(load_mixture(Path(d) / "data" / "mixture.json"), seed=0)
        for k, attention in enumerate(("sdpa", "sdpa", "eager", "sdpa", "eager")):   # the first fills the cache
            model.load_state_dict(start)
            out = Path(d) / f"run{k}"
            with contextlib.redirect_stdout(io.StringIO()):      # train() prints its schedule: one JSON line here
                ls = train(model, proc, mix, dataclasses.replace(tc, attention=attention), out, progress=False,
                           cache=cache)
            rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
            if k:
                times[attention] += [args.batch / r["samples_per_s"] for r in rows[1:]]   # step 1: warm-up
                losses.setdefault(attention, ls)
    med = {a: statistics.median(t) for a, t in times.items()}
    out = {"bench": "nano_train", "batch": args.batch, "steps": args.steps, "precision": precision,
           "sdpa_s_per_step": round(med["sdpa"], 4), "eager_s_per_step": round(med["eager"], 4),
           "eager_speedup": round(med["sdpa"] / med["eager"], 3),
           "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["sdpa"], losses["eager"])),
           "note": "the same steps from the same weights; losses differ by rounding only",
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return _meta(args, out)


def run_bandwidth(args) -> dict:
    """Memory bandwidth (large-tensor copy) and the batch-1 decode bound: LLM weight bytes per token ÷ bandwidth."""
    n = (args.copy_mb * 2 ** 20) // 4
    a, b = torch.randn(n), torch.empty(n)
    b.copy_(a)
    best = float("inf")
    for _ in range(args.repeats + 2):
        t = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t)
    bw = 2 * a.numel() * 4 / best            # read + write
    del a, b
    model, proc = build(args.model, args.image_size)
    llm = model.language_model
    emb = llm.get_input_embeddings().weight
    # per decoded token every matrix is read once; the input embedding is one row (it is also lm_head when tied)
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
    if not llm.config.tie_word_embeddings:
        weight_bytes -= emb.numel() * emb.element_size() - emb.shape[1] * emb.element_size()
    bound_s = weight_bytes / bw
    # measured batch-1 decode step time (ours), from a timed generate
    ims, ps = requests(1, seed=5)
    ours_generate(model, proc, ims, ps, 2)
    ids, t, ttft = timed(ours_generate, model, proc, ims, ps, args.max_new_tokens)
    step = (t - ttft) / max(1, _ntok(ids) - 1)
    out = {"bench": "bandwidth", "copy_mb": args.copy_mb, "copy_bandwidth_gb_s": round(bw / 1e9, 2),
           "llm_weight_mb": round(weight_bytes / 2 ** 20, 1), "decode_bound_ms_per_token": round(bound_s * 1e3, 2),
           "decode_bound_tok_s": round(1 / bound_s, 2), "measured_decode_ms_per_token": round(step * 1e3, 2),
           "measured_decode_tok_s": round(1 / step, 2), "fraction_of_bound": float(f"{bound_s / step:.3g}"),
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    return _meta(args, out)


RUNNERS = {"latency": run_latency, "generate_batch": run_generate_batch, "prefix_cache": run_prefix_cache,
           "scaling": run_scaling, "train_step": run_train_step, "bandwidth": run_bandwidth,
           "nano_train": run_nano_train}


# ---- command line ------------------------------------------------------------------------------------------
def parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=RUNNERS[name].__doc__)
    p.add_argument("--tiny", action="store_true", help="the tiny random model, short runs (for tests)")
    p.add_argument("--model", default=None, choices=["smol", "tiny", "nano"],
                   help="default smol (nano_train: the installed nano model)")
    p.add_argument("--image-size", type=int, default=None, help="default 448 (smol; train_step 224)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--lengths", type=int, nargs="+", default=None)
    p.add_argument("--copy-mb", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    return p


DEFAULTS = {   # (full, tiny)
    "max_new_tokens": (32, 8), "repeats": (6, 2), "batch": (16, 4), "steps": (2, 1),
    "batches": ([1, 4, 16, 64], [1, 2]),
    "lengths": ([16, 32, 64], [4, 8]), "copy_mb": (512, 16),
}
FULL_DEFAULTS = {   # per benchmark, before DEFAULTS' full column (not with --tiny)
    "train_step": {"batch": 4},
    "nano_train": {"model": "nano", "batch": 32, "steps": 40},   # the recipe's batch, enough steps for a median
}


def script_main(name: str, argv=None) -> int:
    a = parser(name).parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    i = 1 if a.tiny else 0
    for k, v in ({} if a.tiny else FULL_DEFAULTS.get(name, {})).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.model = a.model or ("tiny" if a.tiny else "smol")
    for k, v in DEFAULTS.items():
        if getattr(a, k) is None:
            setattr(a, k, v[i])
    if a.image_size is None and name == "train_step" and a.model == "smol":
        a.image_size = 224
    t = time.perf_counter()
    out = RUNNERS[name](a)
    out["bench_wall_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out), flush=True)
    return 0


def main(argv=None) -> int:
    """`python benchmarks/run.py [--only NAME ...] [--out results.jsonl] [--tiny] [-- extra args for every script]`."""
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=BENCHMARKS + ("load", "gpu"), default=list(BENCHMARKS),
                   help="benchmarks to run; `load` and `gpu` (benchmarks/gpu.py: pass -- --device cuda) only when named")
    p.add_argument("--out", default=None, help="append each JSON line to this file too")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--plot", default=None, help="write a PNG of the results here")
    a, rest = p.parse_known_args(argv)
    got = []
    scripts = Path(__file__).resolve().parent
    rc = 0
    for name in a.only:
        f = scripts / f"{name}.py"
        cmd = [sys.executable, str(f)] if f.is_file() else \
            [sys.executable, "-c", f"import sys; from benchmarks.common import script_main; "
                                   f"sys.exit(script_main({name!r}, sys.argv[1:]))"]
        cmd += (["--tiny"] if a.tiny else []) + rest
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=scripts.parent)   # a process each: own peak RSS
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode != 0 or not line.startswith("{"):
            sys.stderr.write(r.stderr[-3000:])
            line = json.dumps({"bench": name, "error": f"exit {r.returncode}"})
            rc = 1
        print(line, flush=True)
        got.append(json.loads(line))
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(line + "\n")
    if a.plot:
        plot(got, a.plot)
    return rc


if __name__ == "__main__":
    sys.exit(main())
