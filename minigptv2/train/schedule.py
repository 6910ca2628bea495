"""What `minigptv2 train` does around the loop (loop.py): the schedule it uses (printed, and saved as
OUT/schedule.json), the trainable parts, a tokenizer built from the data for a fresh model, the data check before
the first step, the held-out evaluation after the last (OUT/eval) and the loss curve (OUT/loss.png).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from minigptv2.atomic import replace_file, write_file
from minigptv2.config import PARTS
from minigptv2.errors import MiniGPTv2Error

TRAINABLE_EXAMPLE = """--trainable '{"vit": "frozen", "projector": "full", "llm": "lora"}'"""
SCHEDULE_KEYS = ("steps", "batch_size", "lr", "min_lr", "warmup_lr", "warmup_steps")


# ---- the schedule ------------------------------------------------------------------------------------------------
def apply_overrides(base, given: dict, stage: int):
    """(TrainConfig, notes): stage preset `base` with the flags the user gave (`given`: name -> value, only those
    given). With --steps and no --warmup-steps the warmup keeps the preset's share of the run (stage 1: 1,000 of
    400,000 steps), so a short try is not spent warming up; a warmup as long as the run is named in a note."""
    tc = dataclasses.replace(base, **given)
    notes = []
    if "steps" in given and "warmup_steps" not in given and tc.steps != base.steps:
        tc.warmup_steps = round(base.warmup_steps * tc.steps / base.steps)
        notes.append(f"warmup scaled with --steps: the stage {stage} preset warms up {base.warmup_steps} of its "
                     f"{base.steps} steps, so this run warms up {tc.warmup_steps} of {tc.steps} (--warmup-steps N "
                     "sets it)")
    if tc.warmup_steps >= tc.steps > 0:
        notes.append(f"--warmup-steps {tc.warmup_steps} >= --steps {tc.steps}: the whole run is warmup and ends at "
                     f"lr {lr_at(tc.steps - 1, tc):.3g}, not at the peak {tc.lr:g}")
    return tc, notes


def lr_at(step: int, c) -> float:
    """The learning rate at `step` of TrainConfig `c`: linear warmup from warmup_lr, then cosine to min_lr."""
    if step < c.warmup_steps:
        return c.warmup_lr + (c.lr - c.warmup_lr) * step / max(1, c.warmup_steps)
    return (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * step / max(1, c.steps))) + c.min_lr


def describe(tc, stage: int | None = None, notes=()) -> str:
    """The schedule a run uses, in words (printed at its start)."""
    head = f"schedule{f' (stage {stage} preset + flags)' if stage else ''}: {tc.steps} steps x batch {tc.batch_size}"
    head += f" (grad accum {tc.grad_accum})" if tc.grad_accum > 1 else ""
    warm = (f"linear warmup {tc.warmup_lr:g} -> {tc.lr:g} over {tc.warmup_steps} steps, then " if tc.warmup_steps
            else "no warmup, ")
    last = max(tc.steps - 1, 0)
    line = (f"{head}; lr: {warm}cosine to {tc.min_lr:g} (lr at the first step {lr_at(0, tc):.3g}, at the last "
            f"{lr_at(last, tc):.3g}); trainable {json.dumps(tc.trainable)}; precision {tc.precision}")
    return "\n".join([line] + [f"note: {n}" for n in notes])


def write_schedule(out: Path, tc, stage: int | None, preset, notes, given: dict) -> None:
    """OUT/schedule.json: the configuration used, the preset it came from, the flags given, the notes, and the
    lr at the first, peak and last step."""
    d = {"stage": stage, "used": dataclasses.asdict(tc), "given": given, "notes": list(notes),
         "preset": {k: getattr(preset, k) for k in SCHEDULE_KEYS} if preset is not None else None,
         "lr": {"first": lr_at(0, tc), "at_warmup_end": lr_at(min(tc.warmup_steps, max(tc.steps - 1, 0)), tc),
                "last": lr_at(max(tc.steps - 1, 0), tc)}}
    write_file(out / "schedule.json", json.dumps(d, indent=1, default=str) + "\n")


# ---- trainable parts ---------------------------------------------------------------------------------------------
def parse_trainable(text: str, base: dict) -> dict:
    """--trainable JSON, merged over `base` (the model folder's or preset's trainable parts): the parts it does not
    name keep their setting. Every error says what the flag takes."""
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        msg = getattr(e, "msg", str(e)[:100])
        col = f" at column {e.colno}" if hasattr(e, "colno") else ""
        raise MiniGPTv2Error(f"--trainable is not valid JSON ({msg}{col}): {text!r}; write it as "
                             f"{TRAINABLE_EXAMPLE} (parts left out keep the model's setting)") from None
    if not isinstance(d, dict):
        raise MiniGPTv2Error(f"--trainable must be a JSON object, got {text!r}; e.g. {TRAINABLE_EXAMPLE}")
    for part, mode in d.items():
        if part not in PARTS:
            raise MiniGPTv2Error(f"--trainable: unknown part {part!r}; the parts are {', '.join(PARTS)}")
        if mode not in PARTS[part]:
            raise MiniGPTv2Error(f"--trainable: {part!r} must be one of {', '.join(PARTS[part])}, got {mode!r}")
    return {**base, **d}


# ---- tokenizer for a fresh model ---------------------------------------------------------------------------------
def tokenizer_from_data(parts, vocab_size: int, reuse: Path | None = None):
    """(Tokenizer, temp folder or None, message): a SentencePiece model built from the mixture's texts (at most
    `vocab_size` pieces) in a temp folder, which `keep_tokenizer` moves into the run folder once the data check
    passed; or `reuse` (a --resume of a run that built one)."""
    from minigptv2.data.check import data_texts
    from minigptv2.tokenizers import Tokenizer, build_tokenizer

    if reuse is not None and reuse.is_file():
        return Tokenizer(reuse), None, f"tokenizer: {reuse} (built from the data when the run started)"
    tmp = Path(tempfile.mkdtemp(prefix="minigptv2-tok-"))
    try:
        texts = data_texts(parts)
        tok = Tokenizer(build_tokenizer(texts, tmp / "tokenizer.model", vocab_size))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    msg = (f"no --tokenizer: built a {len(tok)}-piece SentencePiece tokenizer from {len(texts)} texts of the data "
           f"(at most the preset's {vocab_size}); --tokenizer FILE uses yours (`minigptv2 data tokenizer` makes one)")
    return tok, tmp, msg


def keep_tokenizer(tok, tmp: Path | None, out: Path) -> None:
    """Move a tokenizer built by tokenizer_from_data into OUT/tokenizer.model (the checkpoints copy it from there)."""
    if tmp is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "tokenizer.model"
    replace_file(dest, lambda tmp: shutil.copyfile(tok.path, tmp))
    tok.path = dest
    shutil.rmtree(tmp, ignore_errors=True)


# ---- the data check ----------------------------------------------------------------------------------------------
def check_data(parts, processor, mixture: str, eval_data: str | None, skip: bool, log=print) -> None:
    """Run the data check (data/check.py) on the mixture and the --eval-data file; print the table; refuse on
    problems."""
    from minigptv2.data.datasets import JsonlDataset
    from minigptv2.data.check import check_datasets, refuse

    if skip:
        log("data check skipped (--skip-data-check)")
        return
    base = os.path.dirname(os.path.abspath(mixture))
    for name, ps in ((mixture, parts), *(((eval_data, [(JsonlDataset(eval_data), 1.0)]),) if eval_data else ())):
        report = check_datasets(ps, processor, name=name, base=base)
        log(report.text(show=10))
        if not report.ok:
            raise refuse(report)


# ---- after the run -----------------------------------------------------------------------------------------------
def evaluate_run(out: Path, eval_data: str, log=print) -> dict:
    """Score OUT/final on the held-out JSONL into OUT/eval (eval/jsonl.py evaluate_into); print the table."""
    from minigptv2.eval.jsonl import evaluate_into, report

    m = evaluate_into(out / "final", eval_data, out / "eval")
    log("\n".join(report(m)) + f"\nwrote {out / 'eval' / 'report.md'}, {out / 'eval' / 'metrics.json'}")
    return m


def plot_losses(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (token mean)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        replace_file(png, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
