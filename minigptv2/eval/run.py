"""Running a bench's prompts through the model and writing what it answered: the pieces every bench shares
(evaluate.py for the official and synthetic benches, eval_jsonl.py for a user's own data).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from minigptv2.boxes import parse_boxes
from minigptv2.constrained import box_constraint, well_formed
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import generate

# the official evaluation protocol's answer lengths (docs/evaluation.md); captions 30, detection 100, grounding 200
MAX_NEW_TOKENS = {"refer": 20, "vqa": 20, "identify": 20, "caption": 30, "detection": 100, "grounding": 200}


@dataclass
class Item:
    """One prompt of a bench: image path, prompt text, ground truth (bench-specific), task (-> decoding)."""
    id: str
    image: str
    prompt: str
    task: str
    gt: dict = field(default_factory=dict)


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
            results = generate(model, processor, [it.image for it in chunk], [it.prompt for it in chunk],
                               max_new_tokens=n_new, logits_processor=lp)
            preds += [r.text for r in results]
            bar.update(len(chunk))
    return preds


def box_parse_failed(text: str) -> bool:
    """A box answer that holds no box, or a malformed one."""
    return not parse_boxes(text or "") or not well_formed(text or "")


def _write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)
    os.replace(tmp, path)


def write_predictions(rows: list[dict], path: Path) -> None:
    _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
