"""The training loop, one for all three stages and the nano recipe, single process or under torchrun.

Every sample of every step is drawn with an RNG seeded by (seed, step, position in the global batch)
(batches.Mixture), so the data order does not depend on the number of processes and `--resume` replays exactly.
Each rank takes its slice of the global batch; the loss is the token mean over the *global* batch, so N processes
compute the same update as one. The learning rate follows schedule.lr_at on the global step; AdamW decays only
the >=2-D weights not named bias/norm (param_groups).

Writes to OUT: checkpoint/ every `save_every` steps (checkpoints.py), log.jsonl (one line per step; a resumed run
cuts it back to the checkpoint's step), loss.png (at the end, and at a checkpoint when the last plot is a minute
old), schedule.json (kept on resume) and the final model folder in final/.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.distributed as dist

from minigptv2 import checkpoint as ckpt
from minigptv2.atomic import recover
from minigptv2.errors import MiniGPTv2Error
from minigptv2.losses import next_token_loss
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import IGNORE, MiniGPTv2Processor
from minigptv2.train.batches import Mixture, VisionCache, make_batches
from minigptv2.train.checkpoints import cut_log, full_state, load_checkpoint, save_checkpoint
from minigptv2.train.config import TrainConfig, resolve_precision
from minigptv2.train.distributed import init_distributed, wrap
from minigptv2.train.pointing import Pointing
from minigptv2.train.schedule import describe, lr_at, plot_losses, write_schedule


def param_groups(model, weight_decay: float):
    """AdamW groups of the trainable parameters: weight decay on the >=2-D weights not named bias/norm/ln."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bias" in n or "norm" in n or "ln" in n.split(".")[-2:][0] else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def loss_sum(model, batch, dtype, per: str = "token", pointing: Pointing | None = None) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropies over labelled tokens and their count (the caller divides by the global
    count). per="sample": the sum of each row's *mean* token loss and the number of labelled rows instead, so a
    one-word answer weighs as much as a long one (the default token mean favours long answers). `pointing`
    (pointing.py; per="token" only, eager attention): its auxiliary loss, a mean, is added as if every labelled
    token carried it."""
    with torch.autocast(batch["input_ids"].device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=batch.get("pixel_values"), vision_features=batch.get("vision_features"),
                    output_attentions=pointing is not None)
    labelled = batch["labels"][:, 1:] != IGNORE
    if per == "token":
        s, n = next_token_loss(out.logits, batch["labels"]), int(labelled.sum())
        aux = pointing(out.attentions, batch) if pointing is not None else None
        return (s, n) if aux is None else (s + aux * n, n)
    if pointing is not None:
        raise MiniGPTv2Error("the pointing loss is added to the token-mean loss only (loss_per 'token')")
    tok = next_token_loss(out.logits, batch["labels"], reduction="none")           # (B, L-1), 0 where unlabelled
    n = labelled.sum(1)                                                             # (B,)
    return (tok.sum(1) / n.clamp(min=1)).sum(), int((n > 0).sum())


def place_for_training(model, device: torch.device, dtype: torch.dtype) -> None:
    """Move the model to `device` in training mode. On an accelerator with a half compute dtype, as the official:
    frozen parts (ViT, LM base) in that dtype and trainable ones (LoRA, projector) in fp32, cast before the move so
    that no fp32 copy of the frozen 7B ever reaches the GPU. Elsewhere (CPU, or fp32) every weight is fp32: CPU runs
    keep fp32 weights under autocast, and a folder stored in half precision is widened."""
    if device.type != "cpu" and dtype != torch.float32:
        model.cast_for_training(dtype)
    else:
        model.float()
    model.to(device).train()


def train(model: MiniGPTv2ForConditionalGeneration, proc: MiniGPTv2Processor, mixture: Mixture, tc: TrainConfig,
          out: Path, resume: bool = False, fsdp: bool = False, progress: bool = True, stop_after: int | None = None,
          cache: VisionCache | None = None, schedule: dict | None = None,
          device: str | torch.device | None = None) -> list[float]:
    """Train in place; returns this process's per-step losses (global-batch token means). With
    `tc.cache_vision`, `cache` (a VisionCache of this model, kept from an earlier call) carries the ViT outputs
    over from one stage to the next, so no image goes through the frozen ViT twice. `schedule`: where the
    configuration came from ({"stage", "preset", "notes", "given"}, cli.main), printed and saved in schedule.json.
    `device`: cpu, cuda or cuda:N (distributed.init_distributed; default: cuda when available, else cpu)."""
    from tqdm.auto import tqdm

    rank, world, device = init_distributed(device)
    if tc.batch_size % (world * tc.grad_accum):
        raise MiniGPTv2Error(f"batch size {tc.batch_size} is not divisible by processes ({world}) × "
                             f"grad accumulation ({tc.grad_accum})")
    micro = tc.batch_size // (world * tc.grad_accum)
    if tc.loss_per not in ("token", "sample"):
        raise MiniGPTv2Error(f"loss_per must be 'token' or 'sample', got {tc.loss_per!r}")
    if tc.attention not in ("sdpa", "eager"):
        raise MiniGPTv2Error(f"attention must be 'sdpa' or 'eager', got {tc.attention!r}")
    if not 0.0 <= tc.inference_form <= 1.0:
        raise MiniGPTv2Error(f"inference_form is a share in [0, 1], got {tc.inference_form!r}")
    pointing = Pointing(tc.pointing, proc, model.config) if tc.pointing else None
    if pointing is not None and (tc.attention != "eager" or tc.loss_per != "token"):
        raise MiniGPTv2Error("the pointing loss reads the attention weights and is added to the token mean: it needs "
                             f"attention 'eager' and loss_per 'token' (got {tc.attention!r}, {tc.loss_per!r})")
    # resolved once, so checkpoints record the precision the run really used
    asked, tc = tc.precision, dataclasses.replace(tc, precision=resolve_precision(tc.precision, device))
    if asked == "auto" and rank == 0:
        print(f"precision auto -> {tc.precision}", flush=True)
    dtype = ckpt.DTYPES[tc.precision]
    model.set_trainable(tc.trainable)
    place_for_training(model, device, dtype)
    vision_trains = any(p.requires_grad for m in (model.visual_encoder, model.llama_proj) for p in m.parameters())
    if cache is not None and not tc.cache_vision:
        raise MiniGPTv2Error("a vision cache was passed but cache_vision is off")
    if tc.cache_vision:
        if any(p.requires_grad for p in model.visual_encoder.parameters()):
            raise MiniGPTv2Error("cache_vision needs a frozen ViT (trainable vit='frozen'): pass --trainable "
                                 "'{\"vit\": \"frozen\"}' or leave --cache-vision out")
        if fsdp:    # ranks would run the sharded ViT (a collective) a different number of times
            raise MiniGPTv2Error("cache_vision does not work with --fsdp; use DDP or leave the cache off")
        if cache is None:
            cache = VisionCache(model, proc, dtype, device)
        elif cache.model is not model or cache.dtype != dtype or cache.device != device:
            raise MiniGPTv2Error("the vision cache was made for another model, dtype or device "
                                 f"({cache.dtype}, {cache.device}; this run: {dtype}, {device})")
    before = model.language_model.config._attn_implementation
    model.language_model.set_attn_implementation(tc.attention)
    try:
        wrapped = wrap(model, world, fsdp)
        optimizer = torch.optim.AdamW(param_groups(wrapped, tc.weight_decay), lr=tc.lr, betas=tuple(tc.betas))
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "log.jsonl"
        if rank == 0:
            for name in ("checkpoint", "final"):
                recover(out / name)               # leftovers of a save that was killed
        if world > 1:
            dist.barrier()
        sch = schedule or {}
        if rank == 0:
            print(describe(tc, sch.get("stage"), sch.get("notes", ())), flush=True)
            if not (resume and (out / "schedule.json").is_file()):     # the run's own record stays
                write_schedule(out, tc, sch.get("stage"), sch.get("preset"), sch.get("notes", ()),
                               sch.get("given", {}))
        step = 0
        if resume:
            step = load_checkpoint(out / "checkpoint", wrapped, optimizer, rank)
            if rank == 0:
                cut_log(log_path, step)
                print(f"resuming from step {step} of {tc.steps} ({out / 'checkpoint'})" if step < tc.steps else
                      f"the checkpoint in {out / 'checkpoint'} is at the last step ({step}); nothing left to train",
                      flush=True)
        elif rank == 0:
            log_path.write_text("")
        losses: list[float] = []
        bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, dynamic_ncols=True)
        t_last = t_plot = time.perf_counter()
        while step < tc.steps:
            lr = lr_at(step, tc)
            for g in optimizer.param_groups:
                g["lr"] = lr
            js = range(rank * micro * tc.grad_accum, (rank + 1) * micro * tc.grad_accum)
            forms = [random.Random(f"{tc.seed}:form:{step}:{j}").random() < tc.inference_form for j in js] \
                if tc.inference_form else None
            batches = make_batches(proc, [mixture.draw(step, j) for j in js], micro, tc.chat_template, vision_trains,
                                   cache, forms)
            batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
            lab = [b["labels"][:, 1:] != IGNORE for b in batches]
            n_tok = torch.tensor(sum(int(m.sum() if tc.loss_per == "token" else m.any(1).sum()) for m in lab),
                                 dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(n_tok)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for b in batches:
                s, _ = loss_sum(wrapped, b, dtype, tc.loss_per, pointing)
                # gradients are averaged over processes: scale so the update is d(global token mean)
                (s * world / n_tok.clamp(min=1).item()).backward()
                total += s.detach().double()
            if world > 1:
                dist.all_reduce(total)
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = (total / n_tok.clamp(min=1)).item()
            if not math.isfinite(loss):
                raise MiniGPTv2Error(f"loss is {loss} at step {step}; lower the learning rate or check the data")
            losses.append(loss)
            step += 1
            now = time.perf_counter()
            sps = tc.batch_size / max(now - t_last, 1e-9)
            t_last = now
            line = {"step": step, "loss": loss, "lr": lr, "samples_per_s": round(sps, 2)}
            if pointing is not None:      # this step's pointing loss (mean over this process's micro-batches), turns
                last, pointing.values = pointing.values, []
                line["pointing"] = round(sum(v for v, _ in last) / max(len(last), 1), 5)
                line["pointing_turns"] = sum(k for _, k in last)
            if rank == 0:
                with log_path.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                bar.set_postfix({"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "samples/s": f"{sps:.1f}"})
                bar.update(1)            # the bar itself shows the ETA: [elapsed<remaining]
            if step % tc.save_every == 0 or step == tc.steps:
                save_checkpoint(out, model, wrapped, optimizer, proc, step, tc, world, rank)
                if rank == 0 and step < tc.steps and time.perf_counter() - t_plot > 60:
                    plot_losses(log_path, out / "loss.png")          # a curve to look at while it runs
                    t_plot = time.perf_counter()
            if stop_after is not None and step >= stop_after:
                break
        bar.close()
        if step == tc.steps:
            msd, _ = full_state(wrapped)          # collective: every rank joins the gather
            if rank == 0:
                ckpt.save(model, proc, out / "final", overwrite=True, state_dict=msd)
                plot_losses(log_path, out / "loss.png")
        return losses
    finally:                                                  # the model leaves with the attention it came with
        model.language_model.set_attn_implementation(before)
