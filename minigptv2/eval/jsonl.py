"""The `jsonl` bench: score a model on a held-out split of your own data, in the training format.

    minigptv2 eval --model runs/ft/final --bench jsonl --data ft_data/test.jsonl --out runs/ft/eval
    minigptv2 train ... --eval-data ft_data/test.jsonl       # the same, on the final model, into OUT/eval

The file is the JSONL of minigptv2/data/datasets.py ({"image", "task", "turns": [[instruction, answer], ...]};
`minigptv2 data convert --held-out` writes test.jsonl). Each record's first turn is asked as it is written (greedy,
constrained box decoding for refer / detection / grounding as every bench) and its answer is the ground truth;
later turns are not scored.
Scores (fractions in 0..1), with metrics.py as for the other benches:
    refer        refer_acc: the answer's box against the true box with metrics.refcoco_accuracy (the official parse:
                 the answer must start with the box; IoU > 0.5 in pixels of the image file); parse failures
    detection,   recall and precision at IoU 0.5 (metrics.box_recall_precision, COCOeval's matching) of all boxes
    grounding    in the answer, micro-averaged; parse failures
    vqa, identify, caption, chat, text   exact match (metrics.exact_match: case and spaces ignored)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from minigptv2.boxes import parse_boxes, to_pixels
from minigptv2.data.datasets import JsonlDataset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval import metrics
from minigptv2.eval.run import Item, run_prompts, write_atomic, write_predictions
from minigptv2.eval.scoring import box_parse_failed
from minigptv2.images import image_size

BOX_TASKS = ("detection", "grounding")
MAX_NEW_TOKENS = {"refer": 20, "vqa": 20, "identify": 20, "caption": 30, "detection": 100, "grounding": 200,
                  "chat": 100, "text": 100}


def jsonl_items(path, limit: int | None = None) -> dict[str, list]:
    """Per task, the Items (run.Item) of the first `limit` records of a training-format JSONL."""
    ds = JsonlDataset(path)
    if len(ds) == 0:
        raise MiniGPTv2Error(f"{path}: no records to score")
    tasks: dict[str, list] = {}
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        line, image, task, turns = ds.records[i]
        where = f"{path}: line {line}"
        s = ds.sample(i, None)
        q, answer = turns[0]
        gt: dict = {"answer": answer}
        if s.image is not None and task in ("refer", *BOX_TASKS):
            try:
                w, h = image_size(s.image)
            except MiniGPTv2Error as e:
                raise MiniGPTv2Error(f"{where}: {e}") from None
            boxes = [g.box for g in parse_boxes(answer)]
            if task == "refer" and len(boxes) != 1:
                raise MiniGPTv2Error(f"{where}: a refer answer must be one box {{<x1><y1><x2><y2>}}, got {answer!r}")
            if task == "refer":
                x1, y1, x2, y2 = to_pixels(boxes[0], w, h)
                gt.update(bbox=[x1, y1, x2 - x1, y2 - y1], width=w, height=h)
            gt["boxes"] = boxes
        tasks.setdefault(task, []).append(Item(f"line {line}", s.image, q, task, gt))
    return tasks


def _score(task: str, items, preds) -> tuple[dict, list]:
    if task == "refer":
        r = metrics.refcoco_accuracy(preds, [it.gt for it in items])
        rows = [{"hit": metrics.refcoco_hit(p, it.gt["bbox"], it.gt["width"], it.gt["height"]),
                 "gt_boxes": [list(b) for b in it.gt["boxes"]]} for it, p in zip(items, preds)]
        return {"refer_acc": r["accuracy"] / 100, "refer_parse_failure_rate": r["parse_failure_rate"]}, rows
    if task in BOX_TASKS and all("boxes" in it.gt for it in items):
        tp = n_pred = n_gt = fails = 0
        rows = []
        for it, p in zip(items, preds):
            pred = [b.box for b in parse_boxes(p or "")]
            r = metrics.box_recall_precision(pred, it.gt["boxes"], thr=0.5)
            tp, n_pred, n_gt, fails = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"], fails + box_parse_failed(p)
            rows.append({"recall": r["recall"], "precision": r["precision"],
                         "gt_boxes": [list(b) for b in it.gt["boxes"]]})
        return {f"{task}_recall": tp / n_gt if n_gt else 1.0, f"{task}_precision": tp / n_pred if n_pred else 1.0,
                f"{task}_parse_failure_rate": fails / len(items)}, rows
    correct = [metrics.exact_match(p, it.gt["answer"]) for it, p in zip(items, preds)]
    return {f"{task}_em": sum(correct) / len(items)}, [{"correct": c} for c in correct]


def run_jsonl(model, processor, path, limit=None, batch_size: int = 10, constrained: bool = True,
              compare_constrained: bool = False, max_new_tokens=None, progress: bool = True):
    """Ask and score every record (module docstring). Returns (metrics, rows) as cli.run_bench."""
    t0 = time.time()
    m: dict = {"data": str(path), "n": {}}
    rows: list = []
    for task, items in jsonl_items(path, limit).items():
        n_new = max_new_tokens or MAX_NEW_TOKENS.get(task, 64)
        preds = run_prompts(model, processor, items, batch_size, n_new, constrained, f"jsonl {task}", progress)
        tm, extra = _score(task, items, preds)
        m.update(tm)
        m["n"][task] = len(items)
        rows += [{"task": task, "id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p,
                  "answer": it.gt["answer"], **x, "pred_boxes": [list(b.box) for b in parse_boxes(p or "")]}
                 for it, p, x in zip(items, preds, extra)]
    m["constrained"] = constrained
    m["seconds"] = round(time.time() - t0, 2)
    return m, rows


def report(m: dict) -> list[str]:
    """Markdown lines for report.md."""
    out = [f"## Your data: {m.get('data', 'jsonl')} (held-out records, fractions)", "",
           "| task | n | metric | value |", "|---|---|---|---|"]
    for task, n in m["n"].items():
        for k, v in m.items():
            if k.startswith(f"{task}_") and isinstance(v, float):
                out.append(f"| {task} | {n} | {k[len(task) + 1:]} | {v:.3f} |")
    return out + [""]


def evaluate_into(model_dir, path, out, batch_size: int = 10, progress: bool = False) -> dict:
    """`minigptv2 eval --bench jsonl` of a model folder on `path`, written to `out` (metrics.json, report.md,
    predictions/jsonl.jsonl); returns the metrics. Used by `train --eval-data`."""
    from minigptv2 import load

    model, processor = load(model_dir)
    m, rows = run_jsonl(model, processor, path, batch_size=batch_size, progress=progress)
    out = Path(out)
    write_predictions(rows, out / "predictions" / "jsonl.jsonl")
    write_atomic(out / "metrics.json", json.dumps({"model": str(model_dir), "benches": {"jsonl": m}}, indent=2))
    write_atomic(out / "report.md", "\n".join([f"# MiniGPT-v2 evaluation — {model_dir}", "", *report(m)]) + "\n")
    return m
