"""The `minigptv2` command.

    minigptv2 demo                                   # every task on a generated scene, embedded nano model
    minigptv2 convert --llm Llama-2-7b-chat-hf --vit eva_vit_g.pth --checkpoint minigptv2_checkpoint.pth --out m7b
    minigptv2 generate --model m7b --image cat.jpg --prompt "[refer] the cat"
    minigptv2 generate --model m7b --input-jsonl requests.jsonl          # {"image": path, "prompt": text} per line
    minigptv2 generate --model m7b --quantize 8bit --image cat.jpg --prompt "[vqa] what is it?"   # CUDA only
    minigptv2 export --model runs/small/final --out exported      # LoRA merged; llm/: the LM alone (HF folder)
    minigptv2 migrate --model old_folder --out new_folder          # a folder of the older format -> this one
    minigptv2 synth --out data/synth --n 2000 --seed 0
    minigptv2 data convert --from coco instances.json --images images/ --out ft_data --held-out 0.2
    minigptv2 data check ft_data/mixture.json --model nano
    minigptv2 train --init nano --data ft_data/mixture.json --eval-data ft_data/test.jsonl --out runs/ft
    minigptv2 train --preset nano --stage 1 --data data/synth/mixture.json --out runs/nano
    (docs/finetune.md: fine-tuning on your own data, step by step)
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from minigptv2.devices import add_device_args, load_kwargs
from minigptv2.errors import MiniGPTv2Error


def cmd_convert(a) -> None:
    from minigptv2.checkpoint import convert_official, save

    model, proc = convert_official(a.llm, a.vit, a.checkpoint, vit_depth=a.vit_depth, vit_heads=a.vit_heads,
                                   image_size=a.image_size, lora_alpha=a.lora_alpha, dtype=a.dtype,
                                   merge_lora=a.merge_lora)
    out = save(model, proc, a.out)
    print(f"wrote {out}")


def cmd_migrate(a) -> None:
    from minigptv2.checkpoint import migrate

    print(f"wrote {migrate(a.model, a.out)}")


def cmd_export(a) -> None:
    from minigptv2.checkpoint import export, load

    model, proc = load(a.model, **{**load_kwargs(a), "dtype": a.dtype or "auto"}, merge_lora=False)
    print(f"wrote {export(model, proc, a.out)}")


def _requests(a) -> list[dict]:
    if a.input_jsonl:
        path = Path(a.input_jsonl)
        if not path.is_file():
            raise MiniGPTv2Error(f"--input-jsonl file not found: {path}")
        reqs = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise MiniGPTv2Error(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(r, dict) or not isinstance(r.get("prompt"), str) or "image" not in r:
                raise MiniGPTv2Error(f'{path}:{n}: each line needs {{"image": path, "prompt": text}}')
            img = r["image"]
            if img is not None and not Path(img).is_absolute():
                img = str(path.parent / img)
            reqs.append({"image": img, "prompt": r["prompt"]})
        return reqs
    if a.prompt is None:
        raise MiniGPTv2Error("give --prompt (with --image) or --input-jsonl")
    return [{"image": a.image, "prompt": a.prompt}]


def cmd_generate(a) -> None:
    from minigptv2 import generate, load
    from minigptv2.generate import GenSettings

    model, proc = load(a.model, **load_kwargs(a))
    reqs = _requests(a)
    sampling = a.temperature is not None and not a.greedy
    kw = GenSettings(a.max_new_tokens, a.temperature if sampling else 0.0, a.top_p if sampling else 1.0,
                     a.constrain_boxes).kwargs() | {"compile": a.compile}
    as_json = a.json or bool(a.input_jsonl)
    for i in range(0, len(reqs), a.batch_size):
        chunk = reqs[i: i + a.batch_size]
        for r in generate(model, proc, [q["image"] for q in chunk], [q["prompt"] for q in chunk], **kw):
            print(json.dumps(r.to_dict()) if as_json else r.text, flush=True)


def convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", required=True, help="the Llama-2-7b-chat-hf folder (config.json, weights, tokenizer.model)")
    p.add_argument("--vit", required=True, help="EVA ViT-g weights (eva_vit_g.pth)")
    p.add_argument("--checkpoint", required=True, help="the MiniGPT-v2 training checkpoint (.pth, key 'model')")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="weights dtype of the folder (default: the LLM folder's, fp16 for Llama-2)")
    p.add_argument("--merge-lora", action="store_true", help="fold the LoRA into the LM (default: a peft adapter "
                   "in lora/, merged at load time)")
    p.add_argument("--vit-depth", type=int, default=None, help="default: all blocks in the file, 39 if it has 40")
    p.add_argument("--vit-heads", type=int, default=16, help="attention heads of the ViT (16 for ViT-g)")
    p.add_argument("--image-size", type=int, default=448, help="input size; pos_embed is resized to it")
    p.add_argument("--lora-alpha", type=float, default=16, help="LoRA alpha (not stored in the checkpoint)")


def migrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the older folder")
    p.add_argument("--out", required=True, help="the new folder")


def generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the embedded nano model)")
    p.add_argument("--image", help="image file for --prompt (omit for a text-only prompt)")
    p.add_argument("--prompt", help='instruction, e.g. "[refer] the cat" or "[vqa] what color is it?"')
    p.add_argument("--input-jsonl", help='many requests: one {"image": path, "prompt": text} per line')
    p.add_argument("--max-new-tokens", type=int, default=300, help="most tokens to generate per answer")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (the default)")
    p.add_argument("--temperature", type=float, default=None, help="sample at this temperature")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (with --temperature)")
    p.add_argument("--batch-size", type=int, default=8, help="requests per generate call")
    p.add_argument("--json", action="store_true", help="print one JSON object per answer (text, ids, boxes)")
    p.add_argument("--constrain-boxes", action="store_true", help="[refer] / [detection] / [grounding] answers "
                   "write well-formed boxes only (default off, as the official code)")
    p.add_argument("--compile", action="store_true", help="static KV cache + compiled decode step (the first call "
                   "compiles; meant for a GPU)")
    add_device_args(p, quantize=True)


def export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model folder to export")
    p.add_argument("--out", required=True, help="the folder to write")
    add_device_args(p)


# Every subcommand, in `minigptv2 --help` order: name -> (help line, where it is). Where: the module whose
# `parser()` builds its arguments and whose `main(argv)` runs it, imported only when it runs; or, for those
# defined here, (the function adding its arguments, the function running it).
SUBCOMMANDS = {
    "demo": ("every task on a generated scene, with the embedded nano model", "minigptv2.demo"),
    "generate": ("answer prompts about images", (generate_args, cmd_generate)),
    "convert": ("official LLaMA folder + EVA .pth + MiniGPT-v2 checkpoint -> our folder",
                (convert_args, cmd_convert)),
    "migrate": ("rewrite a model folder of the older format in the transformers format", (migrate_args, cmd_migrate)),
    "export": ("merge LoRA; also write llm/, the LM alone as a standard HF folder", (export_args, cmd_export)),
    "synth": ("write a synthetic shapes dataset for every task, in the official annotation formats",
              "minigptv2.synthetic"),
    "data": ("your annotations -> a checked training mixture (example, convert, check, tokenizer)",
             "minigptv2.data.cli"),
    "train": ("train or fine-tune (stages, LoRA, DDP / FSDP)", "minigptv2.train.cli"),
    "eval": ("run benchmarks and write reports", "minigptv2.eval.cli"),
    "serve": ("OpenAI-compatible HTTP API + web demo", "minigptv2.serve.server"),
    "bench": ("the official-7b shape on one device: load, ViT, decode, batching, prefix cache, 8/4-bit, training "
              "(benchmarks/gpu.py)", "minigptv2.bench"),
}


def parser() -> argparse.ArgumentParser:
    """The `minigptv2` parser. A subcommand of another module is a name and a help line here (no import): its
    arguments go on to that module's `main`."""
    p = argparse.ArgumentParser(prog="minigptv2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (text, where) in SUBCOMMANDS.items():
        if isinstance(where, str):
            sub.add_parser(name, help=text, add_help=False).set_defaults(module=where)
        else:
            add_args, fn = where
            s = sub.add_parser(name, help=text, description=text)
            add_args(s)
            s.set_defaults(module=None, fn=fn)
    return p


def main(argv=None) -> int:
    p = parser()
    a, rest = p.parse_known_args(argv)
    if a.module:
        return run(importlib.import_module(a.module).main, rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    return run(lambda _: a.fn(a))


def run(entry, argv=None) -> int:
    """Call a subcommand's `main(argv)`; a MiniGPTv2Error becomes `error: ...` on stderr and exit code 2.
    Modules run with `python -m minigptv2.X` use it too: `sys.exit(cli.run(main))`."""
    try:
        return entry(argv) or 0
    except MiniGPTv2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
