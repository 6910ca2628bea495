"""Running a bench's prompts through the model and writing what it answered: the pieces every bench shares
(cli.py for the official benches, synthetic.py for ours, jsonl.py for a user's own data). Answers are greedy
(run_prompts); IconVQA ranks its choices by their loss instead (choice_losses).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from minigptv2.atomic import write_file
from minigptv2.constrained import box_constraint
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import generate

# the official evaluation protocol's answer lengths (docs/evaluation.md); captions 30, detection 100, grounding 200
MAX_NEW_TOKENS = {"refer": 20, "vqa": 20, "identify": 20, "caption": 30, "detection": 100, "grounding": 200}
BOX_TASKS = ("refer", "detection", "grounding")    # answered with boxes: constrained decoding applies (_constraint)


@dataclass
class Item:
    """One prompt of a bench: image path, prompt text, ground truth (bench-specific), task (-> decoding)."""
    id: str
    image: str
    prompt: str
    task: str
    gt: dict = field(default_factory=dict)
    history: tuple = ()      # earlier turns [(question, answer), ...] of the same image; empty = asked alone


def _constraint(task: str, processor, max_new_tokens: int):
    if task == "refer":
        return box_constraint(processor, max_new_tokens, single=True)
    if task in ("detection", "grounding"):
        return box_constraint(processor, max_new_tokens)
    return None


def run_prompts(model, processor, items: list[Item], batch_size: int = 10, max_new_tokens: int | None = None,
                constrained: bool = True, desc: str = "", progress: bool = True) -> list[str]:
    """Greedy answers for items (all of one task), in order; tqdm shows progress and ETA."""
    from tqdm import tqdm

    if batch_size < 1:
        raise MiniGPTv2Error(f"--batch-size must be >= 1, got {batch_size}")
    preds: list[str] = []
    with tqdm(total=len(items), desc=desc, unit="sample", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, len(items), batch_size):
            chunk = items[s: s + batch_size]
            n_new = max_new_tokens or MAX_NEW_TOKENS.get(chunk[0].task, 20)
            lp = _constraint(chunk[0].task, processor, n_new) if constrained else None
            results = generate(model, processor, [it.image for it in chunk], [_prompt(it) for it in chunk],
                               max_new_tokens=n_new, logits_processor=lp)
            preds += [r.text for r in results]
            bar.update(len(chunk))
    return preds


def _prompt(it: Item):
    """The prompt `generate` takes: the instruction, or a conversation when the item has earlier turns."""
    if not it.history:
        return it.prompt
    msgs = [m for q, a in it.history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return msgs + [{"role": "user", "content": it.prompt}]


def choice_losses(model, processor, items: list[Item], batch_size: int = 10, progress: bool = True,
                  desc: str = "iconvqa") -> list[list[float]]:
    """IconVQA candidate losses with the official `multi_select` arithmetic (docs/evaluation-semantics.md §3).

    Each choice is scored by the model's forward pass on the official instruction string
    `<s>[INST] <Img><ImageHere></Img> [vqa] ... {q} [/INST]` + choice + `</s>` (chat_template off, so the sequence
    is the model's inference prompt: for the official prompt_form two BOS, one space before [/INST];
    `processor.training_example` would build the chat_template training form instead). loss = per-row sum of
    answer-token NLL / (padded length - 1) with the official padded length (BOS + longest prompt + longest answer
    of the batch for that choice slot); slots a question lacks are filled with "none" and get loss 9999. This keeps
    an official quirk: the divisor depends on the batch, so batch_size can change a choice (the official is 10)."""
    import torch
    from minigptv2.losses import next_token_loss
    from tqdm import tqdm

    from minigptv2.images import load_image
    from minigptv2.processor import IGNORE

    tok = processor.tok
    dev = model.input_device
    out: list[list[float]] = []
    with torch.inference_mode(), tqdm(total=len(items), desc=desc, unit="sample", disable=not progress,
                                      dynamic_ncols=True) as bar:
        for s in range(0, len(items), batch_size):
            chunk = items[s: s + batch_size]
            pv = torch.stack([processor.image(load_image(it.image)) for it in chunk])
            image_embeds = model.get_image_features(pv)
            prompts = [processor.prompt_ids([it.prompt]) for it in chunk]
            # official: the choices are joined with "_" and split again (a "_" inside a choice makes several
            # candidates; no choices make one empty candidate): docs/evaluation-semantics.md §3
            choices = ["_".join(it.gt["choices"]).split("_") for it in chunk]
            losses = [[9999.0] * max(len(c), 1) for c in choices]
            for j in range(max(len(c) for c in choices)):
                answers = [c[j] if j < len(c) else "none" for c in choices]
                ans = [tok.encode(a)[: processor.config.max_txt_len] + [tok.eos_id] for a in answers]
                batch = processor.collate([{"input_ids": p + a, "labels": [IGNORE] * len(p) + a,
                                            "pixel_values": None} for p, a in zip(prompts, ans)])
                batch = {k: v.to(dev) for k, v in batch.items() if v is not None}     # where the model is
                emb = model.embed(batch["input_ids"], image_embeds=image_embeds)
                logits = model.language_model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits.float()
                nll = next_token_loss(logits, batch["labels"], reduction="none")
                # official padded length: BOS + longest prompt + longest answer; our prompt ids hold both BOS
                denom = max(len(p) for p in prompts) + max(len(a) for a in ans) - 1
                for i, c in enumerate(choices):
                    if j < len(c):
                        losses[i][j] = float(nll[i].sum()) / denom
            out += losses
            bar.update(len(chunk))
    return out


def write_predictions(rows: list[dict], path: Path) -> None:
    write_file(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
