"""Scoring a bench: (items, the model's answers) -> (metrics, one row per sample for predictions/{bench}.jsonl),
with the official evaluators' per-sample semantics, quirks included (metrics.py; docs/evaluation-semantics.md).
"""
from __future__ import annotations

from minigptv2.boxes import parse_boxes, to_grid
from minigptv2.constrained import well_formed
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval import metrics
from minigptv2.eval.benches import REFCOCO_BENCHES, VQA_BENCHES


def box_parse_failed(text: str) -> bool:
    """A box answer that holds no box, or a malformed one."""
    return not parse_boxes(text or "") or not well_formed(text or "")


def _clean(text: str) -> str:
    return (text or "").replace("<unk>", "").strip()


def score_refcoco(items, preds):
    entries = [it.gt for it in items]
    r = metrics.refcoco_accuracy(preds, entries)
    rows = []
    for it, p in zip(items, preds):
        g = it.gt
        x, y, w, h = g["bbox"]
        box, reason = metrics.refcoco_parse(p, g["width"], g["height"])
        hit = metrics.refcoco_hit(p, g["bbox"], g["width"], g["height"])
        rows.append({"id": it.id, "img_id": g["img_id"], "sents": g["sents"], "image": it.image,
                     "prompt": it.prompt, "prediction": p, "gt_bbox_xywh": g["bbox"],
                     "pred_box_xyxy": [round(v, 2) for v in box] if box else None, "hit": hit,
                     "parse_error": reason,
                     "gt_boxes": [list(to_grid((x, y, x + w, y + h), g["width"], g["height"]))],
                     "pred_boxes": [list(b.box) for b in parse_boxes(p or "")]})
    m = {k: r[k] for k in ("accuracy", "hits", "total", "parse_failures", "parse_failure_rate")}
    return m, rows


def _rows(items, preds, correct):
    return [{"id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p, "correct": c,
             **{k: it.gt[k] for k in it.gt}} for it, p, c in zip(items, preds, correct)]


def score_vqa(bench: str, items, preds):
    """Per-sample scores exactly as the official eval_vqa.py (docs/evaluation-semantics.md §1-2). The rows'
    "prediction" is the text the official script saves (OKVQA: lowercased; VizWiz: "<unk>" removed, stripped)."""
    if bench == "okvqa":
        preds = [metrics.okvqa_prediction(p) for p in preds]
        answers = [it.gt["answers"] for it in items]
        acc = metrics.vqa_score(preds, answers)
        per = [metrics.vqa_accuracy(p, a) for p, a in zip(preds, answers)]
    elif bench == "vizwiz":
        answers = [it.gt["answers"] for it in items]
        acc = metrics.vizwiz_score(preds, answers)          # scored on the raw answer, as officially
        per = [metrics.vizwiz_accuracy(p, a) for p, a in zip(preds, answers)]
        preds = [_clean(p) for p in preds]
    elif bench == "gqa":
        answers = [it.gt["answer"] for it in items]
        acc = metrics.gqa_score(preds, answers)
        per = [float(metrics.gqa_correct(p, a)) for p, a in zip(preds, answers)]
    elif bench == "vsr":
        labels = [it.gt["label"] for it in items]
        acc = metrics.vsr_score(preds, labels)
        per = [float(metrics.vsr_correct(p, y)) for p, y in zip(preds, labels)]
    elif bench == "hm":
        labels = [it.gt["label"] for it in items]
        acc = metrics.hm_score(preds, labels)
        per = [float(metrics.hm_correct(p, y)) for p, y in zip(preds, labels)]
    else:
        raise MiniGPTv2Error(f"no VQA scorer for {bench!r}")
    return {"accuracy": acc, "total": len(items)}, _rows(items, preds, per)


def score_iconvqa(items, losses, batch_size: int | None = None):
    """Likelihood ranking (docs/evaluation-semantics.md §3). With the batch size the losses were computed with,
    each row is padded with loss 9999 to its batch's largest number of choices, as the official multi_select
    (it matters only when real losses are NaN or above 9999); None scores every row unpadded."""
    step = batch_size or 1
    picks = []
    for s in range(0, len(losses), step):
        chunk = losses[s: s + step]
        width = max(len(ls) for ls in chunk)
        picks += [metrics.iconvqa_choice(ls, n_slots=width) for ls in chunk]
    correct = [p == it.gt["answer"] for p, it in zip(picks, items)]
    rows = [{"id": it.id, "image": it.image, "prompt": it.prompt, "choices": it.gt["choices"],
             "answer": it.gt["answer"], "losses": [round(v, 6) for v in ls], "prediction": it.gt["choices"][p]
             if p < len(it.gt["choices"]) else None, "correct": c}
            for it, ls, p, c in zip(items, losses, picks, correct)]
    return {"accuracy": 100.0 * sum(correct) / len(items), "total": len(items)}, rows


def score_caption(items, preds):
    ids = [f"{i}" for i in range(len(items))]
    m = metrics.caption_scores(dict(zip(ids, preds)), {k: it.gt["refs"] for k, it in zip(ids, items)})
    m["total"] = len(items)
    return m, _rows(items, preds, [None] * len(items))


def score_boxes(items, preds, with_map: bool = True):
    """Detection / grounding: micro recall & precision at IoU 0.5 (grid space), COCO AP, parse failures."""
    tp = n_pred = n_gt = fails = 0
    rows, dets, gts = [], [], []
    for k, (it, p) in enumerate(zip(items, preds)):
        pred = [b.box for b in parse_boxes(p or "")]
        r = metrics.box_recall_precision(pred, it.gt["boxes"], thr=0.5)
        tp, n_pred, n_gt = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"]
        failed = box_parse_failed(p)
        fails += failed
        gts += [{"image_id": k, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b in it.gt["boxes"]]
        dets += [{"image_id": k, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b in pred]
        rows.append({"id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p, "recall": r["recall"],
                     "precision": r["precision"], "parse_failed": failed,
                     "gt_boxes": [list(b) for b in it.gt["boxes"]], "pred_boxes": [list(b) for b in pred]})
    m = {"recall": tp / n_gt if n_gt else 1.0, "precision": tp / n_pred if n_pred else 1.0, "tp": tp,
         "n_pred": n_pred, "n_gt": n_gt, "total": len(items), "parse_failures": fails,
         "parse_failure_rate": fails / len(items)}
    if with_map and gts:
        try:
            m.update(metrics.coco_map(dets, gts))
        except MiniGPTv2Error as e:      # pycocotools not installed: recall/precision still stand
            m["AP"] = m["AP50"] = m["AP75"] = None
            m["omitted"] = {"AP": str(e)}
    return m, rows


def score_bench(bench: str, items, preds):
    if bench in REFCOCO_BENCHES:
        return score_refcoco(items, preds)
    if bench == "iconvqa":
        return score_iconvqa(items, preds)
    if bench in VQA_BENCHES:
        return score_vqa(bench, items, preds)
    if bench == "coco_caption":
        return score_caption(items, preds)
    return score_boxes(items, preds)
