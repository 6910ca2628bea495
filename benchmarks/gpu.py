"""Benchmark 'gpu': the official-7b shape (random weights, bf16) on one GPU, every figure side by side in one run.

    python benchmarks/gpu.py                         # on a GPU: official-7b shape, under ~8 minutes on an H100/H200
    minigptv2 bench                                  # the same, from a source checkout (minigptv2/bench.py)
    python benchmarks/gpu.py --tiny --device cpu     # the tiny config on CPU, seconds (CI)
    python benchmarks/gpu.py --only decode batch     # some sections

Prints one JSON line per section:
  env        GPU name, versions, device copy bandwidth (read + write counted) and bf16 matmul peak, measured here
  load       save_pretrained of the model, then `minigptv2.load(dtype="auto", device=...)` in a fresh process: time
             and host peak (VmHWM), against the largest shard
  vit        ViT encode at the model's image size, batch 1 and 16
  decode     time to first token; batch-1 decode tokens/s with the LoRA attached, merged, and merged + compiled
             (static KV cache, generate(compile=True)), against the weight-bandwidth bound (bandwidth / LM bytes)
  batch      32 new tokens at batch 1 / 4 / 16 / 64 (tokens/s, each also over the official-style path's tokens/s
             one request at a time, bench.official_generate, timed on 16 requests), and batch 16's time against it
  prefix     a second question about an image with the image / prefix cache against the first (20 new tokens),
             eager and (as the server on a GPU) with the compiled decode step
  quantized  8-bit and 4-bit (bitsandbytes): GPU memory of the loaded model and its decode peak (over what was
             resident before) and batch-1 tokens/s (skipped without CUDA / bitsandbytes)
  train      a LoRA stage-3 step (AdamW) at batch 4 with gradient checkpointing and batch 16 without: step time,
             samples/s, peak memory, model TFLOP/s (4 x LM params x tokens + 2 x ViT params x patches) and their
             share of the matmul peak. Frozen parts in bf16, trainable ones in fp32 (model.cast_for_training).
             Peak memory: torch.cuda.max_memory_allocated on a GPU; elsewhere the peak of live tensor bytes over
             one more step (TensorBytes), the same count made without the CUDA allocator. So the memory target
             can be checked on a CPU with enough RAM: --device cpu --only train --train 4:ckpt
Decode speed = (N - 1) / (time for N tokens - time for 1 token), with EOS suppressed so every run writes N tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

from benchmarks import common as bench  # noqa: E402
from minigptv2.checkpoint import DTYPES  # noqa: E402
from minigptv2.config import preset  # noqa: E402
from minigptv2.devices import default_device, default_dtype  # noqa: E402
from minigptv2.generate import PrefixCache, generate, generate_cached  # noqa: E402
from minigptv2.model import MiniGPTv2ForConditionalGeneration  # noqa: E402
from minigptv2.processor import build_processor  # noqa: E402
from minigptv2.tokenizers import Tokenizer  # noqa: E402

SECTIONS = ("env", "load", "vit", "decode", "batch", "prefix", "quantized", "train")


class NoEOS(LogitsProcessor):
    def __init__(self, eos: int):
        self.eos = eos

    def __call__(self, input_ids, scores):
        scores[:, self.eos] = -float("inf")
        return scores


class TensorBytes(TorchDispatchMode):
    """The peak of live tensor bytes while the mode is on: the storages of `tensors` (what exists on entry: the
    model, the batch, the optimizer state) plus every storage an op makes, each counted until it is freed. On a
    GPU, torch.cuda.max_memory_allocated counts what the same ops allocate (plus the allocator's rounding to 512
    bytes); not counted here: in-place storage resizes and the workspaces kernels allocate inside themselves, and
    CPU kernels (autocast, AdamW without foreach) are not CUDA's, so on a CPU it is an estimate of the GPU's figure."""

    def __init__(self, tensors=()):
        super().__init__()
        self.size: dict[int, int] = {}
        self.live = self.peak = 0
        for t in tensors:
            self._count(t)

    def _count(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        s = t.untyped_storage()
        key, n = s.data_ptr(), s.nbytes()
        if n == 0 or key in self.size:
            return
        self.size[key] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(s, self._free, key)        # torch keeps one Python object per storage while it lives

    def _free(self, key: int) -> None:
        self.live -= self.size.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            self._count(t)
        return out


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, device, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build(a):
    """(model, processor): the official-7b shape (or tiny) with random weights, built on the device in bf16."""
    cfg = preset("tiny" if a.tiny else "official-7b")
    tok = Tokenizer(bench.bench_tokenizer())
    cfg.text_config.vocab_size = max(cfg.text_config.vocab_size, len(tok))
    torch.manual_seed(0)
    dtype = DTYPES[a.dtype]
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(a.device):
            model = MiniGPTv2ForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(old)
    model.add_lora()
    model.to(a.device, dtype)
    return model.eval(), build_processor(tok, cfg)


def check_host_memory(p: argparse.ArgumentParser, a) -> None:
    """On a CPU the model lives in host RAM: stop before building it where it cannot fit (the full shape in fp32 is
    31 GB; `decode` and the sections after it hold a merged copy beside it)."""
    with torch.device("meta"):
        n = sum(t.numel() for t in MiniGPTv2ForConditionalGeneration(preset("official-7b")).parameters())
    need = n * DTYPES[a.dtype].itemsize * (2 if {"decode", "batch", "prefix"} & set(a.only) else 1)
    avail = int(open("/proc/meminfo").read().split("MemAvailable:")[1].split()[0]) * 1024
    if need > avail:
        p.error(f"the official-7b shape needs about {need / 1e9:.0f} GB of RAM for --only {' '.join(a.only)} in "
                f"{a.dtype} on the CPU, and {avail / 1e9:.0f} GB is available: use a GPU, --tiny, or e.g. "
                "--dtype bf16 --only train --train 4:ckpt (the training memory)")


def lm_bytes(model) -> int:
    """Bytes a decode step reads: the LM's weights less the input embedding table (one row per token is read)."""
    emb = model.language_model.get_input_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.language_model.parameters() if p is not emb)


def section_env(a, model, proc, ctx):
    n = (16 if a.tiny else 2048) * 2 ** 20 // 2
    x = torch.empty(n, dtype=torch.bfloat16, device=a.device)
    y = torch.empty_like(x)
    t = median_time(lambda: y.copy_(x), a.device, 5)
    ctx["bandwidth"] = 2 * x.numel() * x.element_size() / t
    k = 512 if a.tiny else 8192
    m1 = torch.randn(k, k, dtype=DTYPES[a.dtype], device=a.device)
    t = median_time(lambda: m1 @ m1, a.device, 5)
    ctx["matmul_flops"] = 2 * k ** 3 / t
    gpu = torch.cuda.get_device_name() if str(a.device).startswith("cuda") else "cpu"
    import transformers

    return {"gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
            "copy_bandwidth_gb_s": round(ctx["bandwidth"] / 1e9, 1),
            "matmul_peak_tflops": round(ctx["matmul_flops"] / 1e12, 2),
            "lm_params_b": round(sum(p.numel() for p in model.language_model.parameters()) / 1e9, 3),
            "lm_gb": round(lm_bytes(model) / 1e9, 2)}


CHILD_LOAD = """
import json, sys, time, torch, minigptv2
t = time.perf_counter()
m, p = minigptv2.load(sys.argv[1], dtype="auto", device=sys.argv[2])
if sys.argv[2].startswith("cuda"):
    torch.cuda.synchronize()
hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024
print(json.dumps({"load_s": time.perf_counter() - t, "host_peak_mb": hwm}))
"""


def section_load(a, model, proc, ctx):
    with tempfile.TemporaryDirectory(prefix="minigptv2-gpu-", dir=a.tmp) as d:
        t = time.perf_counter()
        m = model
        m.save_pretrained(d, max_shard_size="5GB")
        proc.save_pretrained(d)
        save_s = time.perf_counter() - t
        shards = [f.stat().st_size for f in Path(d).rglob("*.safetensors")]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        if not a.tiny:           # once to fill the page cache: the figure is a load from page cache
            subprocess.run([sys.executable, "-c", CHILD_LOAD, d, a.device], capture_output=True, env=env)
        r = subprocess.run([sys.executable, "-c", CHILD_LOAD, d, a.device], capture_output=True, text=True, env=env)
        if r.returncode:
            return {"error": r.stderr[-500:]}
        got = json.loads(r.stdout.strip().splitlines()[-1])
    return {"save_s": round(save_s, 1), "folder_gb": round(sum(shards) / 1e9, 2),
            "largest_shard_gb": round(max(shards) / 1e9, 2), "load_s_page_cache": round(got["load_s"], 1),
            "host_peak_gb": round(got["host_peak_mb"] / 1024, 2),
            "target_host_peak_le_shard_plus_1gb": got["host_peak_mb"] * 2 ** 20 <= max(shards) + 2 ** 30,
            "target_load_le_20s": got["load_s"] <= 20, "note": "the LoRA is written as an adapter and merged at load"}


def section_vit(a, model, proc, ctx):
    s = model.config.vision_config.image_size
    out = {}
    for b in (1, 16):
        x = torch.randn(b, 3, s, s, device=a.device)
        with torch.inference_mode():
            model.get_image_features(x)
            out[f"batch{b}_ms"] = round(1000 * median_time(lambda: model.get_image_features(x), a.device, 5), 2)
    return out


def _decode_rate(model, proc, img, q, n, a, **kw):
    lp = LogitsProcessorList([NoEOS(proc.tok.eos_id)])
    run = lambda k: generate(model, proc, [img], [q], max_new_tokens=k, logits_processor=lp, **kw)  # noqa: E731
    run(n)                                                                   # warm-up (and compile)
    t1 = median_time(lambda: run(1), a.device, 3)
    tn = median_time(lambda: run(n), a.device, 3)
    return t1, (n - 1) / (tn - t1)


def section_decode(a, model, proc, ctx):
    import copy

    [img] = bench.images(1)
    q, n = "[caption] describe this image in detail", (8 if a.tiny else 65)
    bound = ctx.get("bandwidth", 0) / lm_bytes(model) if ctx.get("bandwidth") else None
    ttft, lora = _decode_rate(model, proc, img, q, n, a)
    merged = copy.deepcopy(model)
    merged.merge_lora()
    _, plain = _decode_rate(merged, proc, img, q, n, a)
    # the tiny run only checks the plumbing: dynamo without inductor's code generation (seconds, not minutes)
    from transformers import CompileConfig

    _, compiled = _decode_rate(merged, proc, img, q, n, a, compile=CompileConfig(backend="eager") if a.tiny else True)
    ctx["merged"] = merged
    out = {"new_tokens": n, "ttft_s": round(ttft, 3), "lora_tokens_s": round(lora, 1),
           "merged_tokens_s": round(plain, 1), "compiled_tokens_s": round(compiled, 1)}
    if bound:
        out.update(bound_tokens_s=round(bound, 1), compiled_share_of_bound=round(compiled / bound, 3),
                   target_share_ge_0_7=compiled / bound >= 0.7)
    return out


def section_batch(a, model, proc, ctx):
    m = ctx.get("merged", model)
    n = 4 if a.tiny else 32
    out = {}
    for b in ((1, 2) if a.tiny else (1, 4, 16, 64)):
        ims, ps = bench.requests(b)
        gen = lambda: bench.ours_generate(m, proc, ims, ps, n)  # noqa: E731
        gen()
        t = median_time(gen, a.device, 3)
        out[f"batch{b}_tokens_s"] = round(sum(len(r) for r in gen()) / t, 1)
    b = 2 if a.tiny else 16
    ims, ps = bench.requests(b)
    ours = median_time(lambda: bench.ours_generate(m, proc, ims, ps, n), a.device, 3)
    rows: list = []
    one = median_time(lambda: rows.extend(bench.official_generate(m, proc, [i], [p], n)[0]
                                          for i, p in zip(ims, ps)), a.device, 1)
    official = sum(len(r) for r in rows) / one     # tokens/s one request at a time: the same at every batch size
    out.update({f"batch{b}_ours_s": round(ours, 3), f"batch{b}_official_one_at_a_time_s": round(one, 3),
                "official_one_at_a_time_tokens_s": round(official, 1),
                **{f"{k[:-9]}_over_official": round(v / official, 2) for k, v in list(out.items())},
                "speedup": round(one / ours, 2), "target_speedup_ge_10": one / ours >= 10})
    return out


def section_prefix(a, model, proc, ctx):
    m = ctx.get("merged", model)
    [img] = bench.images(1, seed=5)
    cache = PrefixCache()
    lp = LogitsProcessorList([NoEOS(proc.tok.eos_id)])
    generate_cached(m, proc, bench.images(1, seed=6)[0], "[vqa] warm up", cache, max_new_tokens=2)
    sync(a.device)
    t = time.perf_counter()
    generate_cached(m, proc, img, "[vqa] what color is the circle?", cache, max_new_tokens=20, logits_processor=lp)
    sync(a.device)
    first = time.perf_counter() - t
    ask = lambda **kw: generate_cached(m, proc, img, "[vqa] how many shapes are there?", cache,  # noqa: E731
                                       max_new_tokens=20, logits_processor=lp, **kw)
    second = median_time(ask, a.device, 3)
    # what the server does on a GPU: the cached prefix continued by the compiled decode step (compiled in `decode`)
    from transformers import CompileConfig

    cc = CompileConfig(backend="eager") if a.tiny else True
    ask(compile=cc)
    compiled = median_time(lambda: ask(compile=cc), a.device, 3)
    return {"first_s": round(first, 3), "second_s": round(second, 3), "speedup": round(first / second, 2),
            "target_speedup_ge_3": first / second >= 3, "second_compiled_s": round(compiled, 3),
            "speedup_compiled": round(first / compiled, 2)}


def section_quantized(a, model, proc, ctx):
    import importlib.util

    if not str(a.device).startswith("cuda") or importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "needs CUDA and bitsandbytes"}
    import minigptv2

    out = {}
    m = ctx.get("merged", model)
    [img] = bench.images(1)
    with tempfile.TemporaryDirectory(prefix="minigptv2-gpu-q-", dir=a.tmp) as d:
        m.save_pretrained(d)
        proc.save_pretrained(d)
        for q in ("8bit", "4bit"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()          # the bf16 model (and its merged copy) stay resident
            qm, qp = minigptv2.load(d, quantize=q, device=a.device)
            held = torch.cuda.memory_allocated() - base
            _, rate = _decode_rate(qm, qp, img, "[caption] describe", 17, a)
            out[q] = {"weights_gb": round(held / 1e9, 2),
                      "peak_gb": round((torch.cuda.max_memory_allocated() - base) / 1e9, 2),
                      "tokens_s": round(rate, 1)}
            del qm
    return out


def section_train(a, model, proc, ctx):
    from minigptv2.train.batches import make_batch
    from minigptv2.train.loop import loss_sum, param_groups

    ctx.pop("merged", None)
    cdtype = DTYPES[a.dtype]
    model.set_trainable(model.config.trainable)
    model.cast_for_training(cdtype)
    model.train()
    lm_params = sum(p.numel() for p in model.language_model.parameters())
    vit_params = sum(p.numel() for p in model.visual_encoder.parameters())
    patches = model.config.vision_config.grid ** 2 + 1
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-5)
    out = {}
    for b, ckpt in a.train:
        model.visual_encoder.gradient_checkpointing = ckpt
        if ckpt:
            model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.language_model.gradient_checkpointing_disable()
        batch = make_batch(proc, bench.train_samples(b), True, True)
        batch = {k: v.to(a.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        tokens = int(batch["attention_mask"].sum())

        def step():
            s, cnt = loss_sum(model, batch, cdtype)
            (s / max(cnt, 1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        cuda = str(a.device).startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = median_time(step, a.device, 3)
        if cuda:
            peak = torch.cuda.max_memory_allocated()
        else:                                         # one more step, untimed: the count slows every op
            state = [v for st in opt.state.values() for v in st.values()]
            with TensorBytes([*model.parameters(), *model.buffers(), *batch.values(), *state]) as count:
                step()
            peak = count.peak
        flops = (4 * lm_params * tokens + 2 * vit_params * patches * b) / t
        out[f"batch{b}"] = {"checkpointing": ckpt, "step_s": round(t, 3), "samples_s": round(b / t, 1),
                            "tokens": tokens, "model_tflops": round(flops / 1e12, 2),
                            "share_of_matmul_peak": round(flops / ctx["matmul_flops"], 3)
                            if ctx.get("matmul_flops") else None,
                            "peak_gb": round(peak / 1e9, 3),
                            "peak_counted_by": "torch.cuda.max_memory_allocated" if cuda else "TensorBytes"}
        if ckpt:
            out[f"batch{b}"]["target_peak_le_24gb"] = peak <= 24e9
        elif out[f"batch{b}"]["share_of_matmul_peak"] is not None:
            out[f"batch{b}"]["target_share_ge_0_4"] = flops / ctx["matmul_flops"] >= 0.4
    return out


def train_spec(text: str) -> tuple[int, bool]:
    """'4:ckpt' -> (4, True): batch 4 with gradient checkpointing; '16' -> (16, False)."""
    b, _, flag = text.partition(":")
    if not b.isdigit() or int(b) < 1 or flag not in ("", "ckpt"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a batch size, optionally with ':ckpt' (e.g. 4:ckpt)")
    return int(b), flag == "ckpt"


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the tiny config (seconds)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default=None, choices=list(DTYPES), help="default: bf16 on a GPU, fp32 on CPU")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="the sections to run, in their fixed order (default: all; decode and train add env)")
    p.add_argument("--tmp", default=None, help="folder for the saved model (default: the system temp folder)")
    p.add_argument("--out", default=None, help="append each JSON line to this file too")
    p.add_argument("--train", nargs="+", type=train_spec, default=None, metavar="B[:ckpt]",
                   help="training steps to measure (default: 4:ckpt 16; --tiny: 2:ckpt 4)")
    return p


def main(argv=None, prog: str | None = None) -> int:
    p = parser(prog)
    a, other = p.parse_known_args(argv)
    if other and prog:           # `minigptv2 bench`: a mistyped option is an error
        p.error(f"unrecognized arguments: {' '.join(other)}")
    if other:                    # benchmarks/run.py passes one set of options to every script
        print(f"{p.prog}: ignoring {' '.join(other)} (not this benchmark's options)", file=sys.stderr)
    a.device = a.device or default_device()
    try:
        kind = torch.device(a.device).type
    except RuntimeError:
        p.error(f"--device {a.device!r} is not a device; use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {a.device}: CUDA is not available here; use --device cpu")
    a.dtype = a.dtype or default_dtype(a.device)
    a.train = a.train or ([(2, True), (4, False)] if a.tiny else [(4, True), (16, False)])
    if kind == "cpu" and not a.tiny:
        check_host_memory(p, a)
    t0 = time.perf_counter()
    model, proc = build(a)
    ctx: dict = {}
    only = set(a.only) | ({"env"} if {"decode", "train"} & set(a.only) else set())
    for name in SECTIONS:
        if name not in only:
            continue
        t = time.perf_counter()
        try:
            with torch.inference_mode(name != "train"):
                res = globals()[f"section_{name}"](a, model, proc, ctx)
        except torch.OutOfMemoryError:
            res = {"error": "out of memory"}
        line = {"bench": "gpu", "section": name, "model": "tiny" if a.tiny else "official-7b", "device": a.device,
                "dtype": a.dtype, **res, "section_s": round(time.perf_counter() - t, 1),
                "total_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(line), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
