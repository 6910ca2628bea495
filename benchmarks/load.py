"""Benchmark 'load': host memory of `minigptv2 convert` and of loading the converted folder for bf16 generation.

    python benchmarks/load.py              # official-format files of ~1.6 GB (fp16), built here, then measured
    python benchmarks/load.py --tiny       # a few MB: the same steps in seconds (CI)

Builds official-format inputs in a temporary folder (a Llama-shaped HF folder in fp16, an EVA ViT .pth in fp16, a
MiniGPT-v2 checkpoint .pth with LoRA r 64 on q/v and the projector), then runs each step in a child process and
reads its peak RSS (ru_maxrss): `convert`, and `load(dtype="bf16")` + a 4-token greedy generation. Prints one JSON
line with the sizes, peaks and the targets they are held to (convert: output <= 1.1x the inputs, peak <= 1.3x the
output + 0.8 GB; load: peak <= 1.2x the folder + 0.8 GB). Random weights: the figures are about bytes, not answers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {   # (llm hidden, layers, intermediate, vocab), (vit width, depth, mlp)
    "full": ((2048, 12, 5504, 32000), (1408, 2, 6144)),
    "tiny": ((64, 2, 128, 1024), (32, 2, 64)),
}


def build_inputs(d: Path, tiny: bool) -> dict:
    """The three official inputs, fp16, in `d`. Returns their paths and total size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from minigptv2 import NANO_DIR
    from minigptv2.config import MiniGPTv2VisionConfig
    from minigptv2.vit import EVAViT

    (h, layers, inter, vocab), (vw, vd, vm) = SIZES["tiny" if tiny else "full"]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=max(1, h // 128), num_key_value_heads=max(1, h // 128),
                      max_position_embeddings=4096, tie_word_embeddings=False)
    llm = LlamaForCausalLM._from_config(cfg, dtype=torch.float16)
    llm.save_pretrained(d / "llm")
    del llm
    (d / "llm" / "tokenizer.model").write_bytes((NANO_DIR / "tokenizer.model").read_bytes())
    vit = EVAViT(MiniGPTv2VisionConfig(image_size=224, patch_size=14, width=vw, depth=vd, heads=16 if vw % 16 == 0
                                       else 2, mlp_dim=vm))
    torch.save({k: v.half() for k, v in vit.state_dict().items()}, d / "vit.pth")
    del vit
    r = 64 if not tiny else 8
    ck = {"llama_proj.weight": torch.randn(h, vw * 4).half(), "llama_proj.bias": torch.zeros(h).half()}
    for i in range(layers):
        for m in ("q_proj", "v_proj"):
            pre = f"llama_model.base_model.model.model.layers.{i}.self_attn.{m}"
            ck[f"{pre}.lora_A.weight"] = torch.randn(r, h).half() * 0.01
            ck[f"{pre}.lora_B.weight"] = torch.zeros(h, r).half()
    torch.save({"model": ck}, d / "ckpt.pth")
    return {"llm": d / "llm", "vit": d / "vit.pth", "checkpoint": d / "ckpt.pth", "heads": 16 if vw % 16 == 0 else 2,
            "bytes": _size(d / "llm") + _size(d / "vit.pth") + _size(d / "ckpt.pth")}


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


CHILD_LOAD = """
import sys, time, json
import minigptv2, torch
from PIL import Image
hwm = lambda: int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])
t = time.perf_counter()
m, p = minigptv2.load(sys.argv[1], dtype="bf16")
load_s, after_load = time.perf_counter() - t, hwm()
r = minigptv2.generate(m, p, [Image.new("RGB", (64, 48), "red")], ["[refer] red"], max_new_tokens=4)
print(json.dumps({"load_s": load_s, "peak_after_load_kb": after_load, "peak_kb": hwm()}))
"""
CHILD_IMPORT = "import minigptv2, torch"
CHILD_BUILD = "import sys, runpy\ntry:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass"
CHILD_CONVERT = "import sys; from minigptv2.cli import main; main(sys.argv[1:])"


HWM = "print('HWM_KB', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"


def child(code: str, *args: str) -> tuple[str, float]:
    """Run `code` in a child Python; its stdout and its own peak RSS in MB (VmHWM, which a new process image starts
    afresh, unlike ru_maxrss, which inherits the parent's high-water mark across fork + exec)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code + "\n" + HWM, *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"child failed: {code[:60]!r}\n{r.stderr[-2000:]}")
    kb = int(next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("HWM_KB")))
    return r.stdout, kb / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a few MB of inputs (seconds)")
    p.add_argument("--build", default=None, help=argparse.SUPPRESS)   # the child that writes the inputs
    a, _ = p.parse_known_args(argv)
    if a.build:
        inp = build_inputs(Path(a.build), a.tiny)
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in inp.items()}))
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minigptv2-bench-load-") as tmp:
        d = Path(tmp)
        # every step in its own child, so that no child inherits this process's memory high-water mark
        out_build, _ = child(CHILD_BUILD % __file__, "--build", str(d), *(["--tiny"] if a.tiny else []))
        inp = json.loads(next(line for line in out_build.splitlines() if line.startswith("{")))
        out = d / "converted"
        import_mb = child(CHILD_IMPORT)[1]
        t = time.perf_counter()
        convert_peak = child(CHILD_CONVERT, "convert", "--llm", inp["llm"], "--vit", inp["vit"], "--checkpoint",
                             inp["checkpoint"], "--out", str(out), "--image-size", "224",
                             "--vit-heads", str(inp["heads"]))[1]
        convert_s = time.perf_counter() - t
        folder = _size(out)
        dtypes = json.loads((out / "config.json").read_text()).get("dtype")
        stdout, load_peak = child(CHILD_LOAD, str(out))
        ld = json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))
    gb = 1024 ** 3
    mb = 1024 ** 2
    res = {
        "bench": "load", "model": "tiny" if a.tiny else "llama-1.5B-fp16", "inputs_mb": round(inp["bytes"] / mb, 1),
        "folder_mb": round(folder / mb, 1), "folder_dtype": dtypes, "import_rss_mb": round(import_mb),
        "convert_s": round(convert_s, 1), "convert_peak_rss_mb": round(convert_peak),
        "load_bf16_s": round(ld["load_s"], 2), "load_peak_after_load_mb": round(ld["peak_after_load_kb"] / 1024),
        "load_generate_peak_rss_mb": round(ld["peak_kb"] / 1024),
        "target_folder_le_1.1x_inputs": folder <= 1.1 * inp["bytes"],
        "target_convert_peak_le_1.3x_folder_plus_0.8GB": convert_peak * mb <= 1.3 * folder + 0.8 * gb,
        "target_load_peak_le_1.2x_folder_plus_0.8GB": ld["peak_kb"] * 1024 <= 1.2 * folder + 0.8 * gb,
        "bench_wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
