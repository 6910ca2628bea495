"""The synthetic benchmark (ours, not an official one; docs/evaluation-semantics.md §6): held-out scenes written by
`minigptv2 synth`, every task asked with the eval prompts, scored as fractions in 0..1 against SYNTH_TARGETS.
The nano model's scores: docs/nano.md.

    from minigptv2.eval.synthetic import synthetic_benchmark
    scores = synthetic_benchmark(model, processor, "data/synth-test", limit=200)   # {"refer_acc": 0.91, ...}
"""
from __future__ import annotations

import time
from pathlib import Path

from minigptv2.boxes import format_box, parse_boxes, to_grid, to_pixels
from minigptv2.data.annotations import read_records
from minigptv2.data.datasets import blip_caption
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval import metrics
from minigptv2.eval import vqa_metrics
from minigptv2.eval.benches import (CAPTION_PROMPT, DETECTION_PROMPT, GROUNDING_PROMPT, IDENTIFY_PROMPT,
                                    REFER_PROMPT, VQA_PROMPT)
from minigptv2.eval.run import BOX_TASKS, Item, run_prompts
from minigptv2.eval.scoring import box_parse_failed, score_refcoco

SYNTH_MAX_NEW_TOKENS = {"refer": 20, "vqa": 20, "identify": 20, "caption": 30, "detection": 64, "grounding": 96}
HELDOUT_SEED = 777_777         # synthetic scenes made by eval; training data uses other seeds (default 0)
SYNTH_TARGETS = {"refer_acc": 0.80, "detection_recall": 0.70, "vqa_em": 0.90, "identify_em": 0.80,
                 "caption_em": 0.80}


def synthetic_items(data_dir, limit: int | None = None) -> dict[str, list[Item]]:
    """Per task, the prompts of the first `limit` scenes of a `write_synthetic` folder (ground truth in pixels)."""
    d = Path(data_dir)
    scenes_file = d / "scenes.jsonl"
    if not scenes_file.is_file():
        raise MiniGPTv2Error(f"{d} is not a synthetic data folder (no scenes.jsonl); write one with "
                             f"`minigptv2 synth --out {d} --n 500 --seed {HELDOUT_SEED}`")
    scenes = {s["image"]: s for s in read_records(scenes_file)[:limit]}
    keep = lambda r: r.get("image") in scenes  # noqa: E731
    img = lambda rel: str(d / rel)  # noqa: E731
    tasks: dict[str, list[Item]] = {t: [] for t in ("refer", "detection", "vqa", "identify", "caption", "grounding")}
    for i, r in enumerate(filter(keep, read_records(d / "refcoco.json"))):
        x, y, w, h = r["bbox"]
        grid = to_grid((x, y, x + w, y + h), r["width"], r["height"])
        gt = {"img_id": r["img_id"], "sents": r["sents"], "bbox": r["bbox"], "width": r["width"], "height": r["height"]}
        tasks["refer"].append(Item(r["img_id"], img(r["image"]), REFER_PROMPT.format(r["sents"]), "refer", gt))
        tasks["identify"].append(Item(r["img_id"], img(r["image"]), IDENTIFY_PROMPT.format(format_box(grid)),
                                      "identify", {"answer": blip_caption(r["sents"]), "box": list(grid)}))
    for r in filter(keep, read_records(d / "phrase_to_object.json")):
        s = scenes[r["image"]]
        boxes = [o["box"] for o in s["objects"] if o["shape"] == r["phrase"]]
        tasks["detection"].append(Item(f"{r['image']}:{r['phrase']}", img(r["image"]),
                                       DETECTION_PROMPT.format(r["phrase"]), "detection",
                                       {"phrase": r["phrase"], "boxes_px": boxes, "size": (s["width"], s["height"])}))
    for r in filter(keep, read_records(d / "vqa.json")):
        tasks["vqa"].append(Item(str(r["question_id"]), img(r["image"]),
                                 VQA_PROMPT.format(blip_caption(r["question"])), "vqa",
                                 {"answer": blip_caption(r["answer"][0])}))
    for r in filter(keep, read_records(d / "coco_caption.json")):
        tasks["caption"].append(Item(r["image"], img(r["image"]), CAPTION_PROMPT, "caption",
                                     {"answer": blip_caption(r["caption"])}))
    for r in filter(keep, read_records(d / "grounded_caption.json")):
        s = scenes[r["image"]]
        tasks["grounding"].append(Item(r["image"], img(r["image"]), GROUNDING_PROMPT, "grounding",
                                       {"boxes_px": [o["box"] for o in s["objects"]],
                                        "size": (s["width"], s["height"])}))
    return tasks


def _score_synth_boxes(items, preds):
    tp = n_pred = n_gt = fails = 0
    rows = []
    for it, p in zip(items, preds):
        W, H = it.gt["size"]
        pred_grid = [b.box for b in parse_boxes(p or "")]
        r = metrics.box_recall_precision([to_pixels(b, W, H) for b in pred_grid], it.gt["boxes_px"], thr=0.5)
        tp, n_pred, n_gt = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"]
        failed = box_parse_failed(p)
        fails += failed
        rows.append({"task": it.task, "id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p,
                     "recall": r["recall"], "precision": r["precision"], "parse_failed": failed,
                     "gt_boxes": [list(to_grid(b, W, H)) for b in it.gt["boxes_px"]],
                     "pred_boxes": [list(b) for b in pred_grid]})
    return {"recall": tp / n_gt if n_gt else 1.0, "precision": tp / n_pred if n_pred else 1.0,
            "parse_failure_rate": fails / len(items) if items else 0.0}, rows


def _score_synth(task: str, items, preds):
    """One synthetic task -> (flat metrics, rows). Fractions in 0..1."""
    if not items:
        return {}, []
    if task == "refer":
        m, rows = score_refcoco(items, preds)
        for r in rows:
            r["task"] = task
        return {"refer_acc": m["accuracy"] / 100, "refer_parse_failure_rate": m["parse_failure_rate"]}, rows
    if task in ("detection", "grounding"):
        m, rows = _score_synth_boxes(items, preds)
        return {f"{task}_recall": m["recall"], f"{task}_precision": m["precision"],
                f"{task}_parse_failure_rate": m["parse_failure_rate"]}, rows
    correct = [vqa_metrics.exact_match(p, it.gt["answer"]) for it, p in zip(items, preds)]
    rows = [{"task": task, "id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p,
             "answer": it.gt["answer"], "correct": c} for it, p, c in zip(items, preds, correct)]
    return {f"{task}_em": sum(correct) / len(items)}, rows


def run_synthetic(model, processor, data_dir, limit=None, batch_size: int = 32, constrained: bool = True,
                  compare_constrained: bool = False, max_new_tokens=None, progress: bool = True):
    """The synthetic benchmark. Returns (metrics, rows); `synthetic_benchmark` returns just the metrics."""
    tasks = synthetic_items(data_dir, limit)
    t0 = time.time()
    m: dict = {}
    rows: list = []
    counts = {}
    for task, items in tasks.items():
        counts[task] = len(items)
        if not items:
            continue
        n_new = max_new_tokens or SYNTH_MAX_NEW_TOKENS[task]
        preds = run_prompts(model, processor, items, batch_size, n_new, constrained, f"synthetic {task}", progress)
        tm, trows = _score_synth(task, items, preds)
        m.update(tm)
        if compare_constrained and task in BOX_TASKS:
            other = run_prompts(model, processor, items, batch_size, n_new, not constrained,
                                f"synthetic {task} ({'un' if constrained else ''}constrained)", progress)
            om, _ = _score_synth(task, items, other)
            m.setdefault("unconstrained" if constrained else "constrained_run", {}).update(om)
        rows += trows
    # A model that ignores the name in refer prompts answers every object of a scene with the same box.
    answers: dict = {}
    for r in rows:
        if r["task"] == "refer":
            answers.setdefault(r["image"], []).append(r["prediction"])
    multi = [len(set(a)) > 1 for a in answers.values() if len(a) > 1]
    if multi:
        m["refer_names_differ"] = sum(multi) / len(multi)
    d = Path(data_dir)
    scenes = {str(d / s["image"]): s["objects"] for s in read_records(d / "scenes.jsonl")}
    same = _refer_same_shape(rows, scenes)
    if same is not None:
        m["refer_same_shape"] = same
    m["by_objects"] = _by_object_count(rows, scenes)
    m["n"] = counts
    m["constrained"] = constrained
    m["targets"] = dict(SYNTH_TARGETS)
    m["passed"] = {k: m[k] >= v for k, v in SYNTH_TARGETS.items() if k in m}
    m["all_passed"] = bool(m["passed"]) and all(m["passed"].values())
    m["seconds"] = round(time.time() - t0, 2)
    return m, rows


def _refer_same_shape(rows: list[dict], scenes: dict) -> float | None:
    """refer Acc@0.5 over the prompts whose scene holds another object of the asked object's shape, where only the
    colour tells them apart (a model that binds shapes and not colours scores about 0.5 here: docs/nano.md).
    `scenes`: {image path: its objects}."""
    hits = [r["hit"] for r in rows if r["task"] == "refer"
            and [o["shape"] for o in scenes[r["image"]]].count(r["sents"].split()[-1]) > 1]
    return sum(hits) / len(hits) if hits else None


def _by_object_count(rows: list[dict], scenes: dict) -> dict:
    """{metric: {number of objects in the scene: value}} for refer_acc, *_recall and *_em: the multi-object
    scenes are where a model that does not bind names to places fails. `scenes`: {image path: its objects}."""
    sums: dict = {}
    for r in rows:
        if r["task"] == "refer":
            key, num, den = "refer_acc", float(r["hit"]), 1
        elif r["task"] in ("detection", "grounding"):
            key, num, den = f"{r['task']}_recall", r["recall"] * len(r["gt_boxes"]), len(r["gt_boxes"])
        else:
            key, num, den = f"{r['task']}_em", float(r["correct"]), 1
        acc = sums.setdefault(key, {}).setdefault(len(scenes[r["image"]]), [0.0, 0])
        acc[0] += num
        acc[1] += den
    return {key: {k: a / b for k, (a, b) in sorted(v.items()) if b} for key, v in sums.items()}


def synthetic_benchmark(model, processor, data_dir, limit: int | None = None, batch_size: int = 32,
                        constrained: bool = True, compare_constrained: bool = False, progress: bool = True) -> dict:
    """Score a model on a held-out synthetic set (a `write_synthetic` folder; `limit` = number of scenes).

    Returns fractions in 0..1: refer_acc (Acc@0.5, metrics.refcoco_accuracy), detection_recall /
    detection_precision (IoU 0.5, one-to-one), vqa_em, identify_em, caption_em (vqa_metrics.exact_match),
    grounding_recall / grounding_precision, *_parse_failure_rate for the box tasks, refer_names_differ (of the
    scenes with several objects, the fraction whose refer answers are not all the same box), refer_same_shape
    (refer_acc where another object has the asked object's shape, so only the colour decides), by_objects (those
    metrics per number of objects in the scene: {"refer_acc": {1: .., 2: .., 3: ..}, ...}), n (prompts per task),
    targets (SYNTH_TARGETS), passed ({metric: bool}) and all_passed. Prompts: the official eval prompts for
    refer and VQA, the first official training template for identify / caption / grounding / detection.
    """
    m, _ = run_synthetic(model, processor, data_dir, limit, batch_size, constrained, compare_constrained,
                         progress=progress)
    return m
