"""Benchmark metrics of MiniGPT-v2 as pure functions (no model code).

Every metric of an official benchmark gives the same per-sample score as MiniGPT-v2's official evaluation code,
quirks included; docs/evaluation-semantics.md writes those semantics down and names each quirk. Deliberate
improvements exist only as documented, non-default options.

  * VQA family (vqa_metrics.py, re-exported here): VQA accuracy (OKVQA / VQAv2), VizWiz, GQA, VSR, Hateful
    Memes, IconVQA ranking.
  * here: RefCOCO/+/g accuracy (§4), detection / grounding recall and precision with COCOeval's matching (§5),
    COCO box mAP (pycocotools) and COCO caption scores (pycocoevalcap).

Per-item functions return a value in [0, 1] (or a bool); the `*_score` aggregates return a percentage (×100,
not rounded — the official VQA tool rounds its overall number to 2 decimals). Bad input (length mismatch, empty
lists, wrong types) raises `MiniGPTv2Error`; bad *model output* never raises — it is scored as wrong.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections.abc import Mapping, Sequence

from minigptv2.boxes import iou
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval.vqa_metrics import (ICONVQA_PAD_LOSS, VQA_CONTRACTIONS, _check_pairs, _text,  # noqa: F401
                                   exact_match, gqa_correct, gqa_score, hm_correct, hm_label, hm_score,
                                   iconvqa_choice, okvqa_prediction, vizwiz_accuracy, vizwiz_score, vqa_accuracy,
                                   vqa_normalize, vqa_process_digit_article, vqa_process_punctuation, vqa_score,
                                   vsr_correct, vsr_label, vsr_score)

# ---------------------------------------------------------------------------------------------------------------
# RefCOCO / RefCOCO+ / RefCOCOg: docs/evaluation-semantics.md §4

REFCOCO_RES = 100  # grid resolution of the answer's coordinates (`--res 100`)
# The answer must *start* with this (re.match); each coordinate is 1-3 digits (any Unicode decimal digit).
REFCOCO_BOX_START = re.compile(r"\{<\d{1,3}><\d{1,3}><\d{1,3}><\d{1,3}>\}")
_NUMBER = re.compile(r"\d+")


def refcoco_clean(pred_text) -> str:
    """The official cleanup of a referring answer: remove "<unk>", then every space " " (only that character),
    then strip the ends."""
    return _text(pred_text).replace("<unk>", "").replace(" ", "").strip()


def refcoco_parse(pred_text, width, height):
    """Parse a referring answer into a pixel box of the original W×H image, as the official scorer does (§4.1).

    Returns ``(box_xyxy, None)`` or ``(None, reason)``. After `refcoco_clean`, the answer must start with
    ``{<x1><y1><x2><y2>}`` (1-3 digits each, so 101..999 pass and are not clipped); text may follow, but the whole
    answer must hold exactly four digit runs (the official scorer takes all of them and fails on a fifth).
    Coordinates -> pixels as ``x / 100 * W``, ``y / 100 * H`` (of the original image, not the 448 input).
    """
    if width <= 0 or height <= 0:
        raise MiniGPTv2Error(f"image size must be positive, got {width}x{height}")
    if pred_text is None:
        return None, "no prediction"
    text = refcoco_clean(pred_text)
    if not REFCOCO_BOX_START.match(text):
        return None, (f"the answer does not start with a box {{<x1><y1><x2><y2>}} of 1-3 digit coordinates "
                      f"(after removing spaces and <unk>): {pred_text!r}")
    numbers = _NUMBER.findall(text)
    if len(numbers) != 4:
        return None, f"{len(numbers)} numbers, the official scorer needs exactly the 4 box coordinates: {pred_text!r}"
    x1, y1, x2, y2 = (int(v) for v in numbers)
    return (x1 / REFCOCO_RES * width, y1 / REFCOCO_RES * height,
            x2 / REFCOCO_RES * width, y2 / REFCOCO_RES * height), None


def refcoco_iou(box, gt) -> float | None:
    """The official RefCOCO IoU of two xyxy boxes (§4.2): inclusive pixels (+1 on every width and height), no
    clamping of the box areas (an inverted box has a signed area). None where the union is 0 (the official
    script's division fails and the answer counts as a miss)."""
    x1, y1, x2, y2 = box
    x3, y3, x4, y4 = gt
    inter = max(0, min(x2, x4) - max(x1, x3) + 1) * max(0, min(y2, y4) - max(y1, y3) + 1)
    union = (x2 - x1 + 1) * (y2 - y1 + 1) + (x4 - x3 + 1) * (y4 - y3 + 1) - inter
    return None if union == 0 else inter / union


def _gt_xyxy(gt_bbox_xywh) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in gt_bbox_xywh)
    except (TypeError, ValueError):
        raise MiniGPTv2Error(f"ground-truth bbox must be [x, y, w, h], got {gt_bbox_xywh!r}") from None
    return (x, y, x + w, y + h)


def _hit(box, gt) -> bool:
    v = None if box is None else refcoco_iou(box, gt)
    return v is not None and v > 0.5


def refcoco_hit(pred_text, gt_bbox_xywh, width, height) -> bool:
    """One referring expression: True if the parsed answer box has IoU > 0.5 (strict) with the ground truth.

    GT is COCO [x, y, w, h] -> (x, y, x+w, y+h); IoU is `refcoco_iou`. An unparsable answer is a miss (use
    `refcoco_parse` / `refcoco_accuracy` for the reason).
    """
    box, _ = refcoco_parse(pred_text, width, height)
    return _hit(box, _gt_xyxy(gt_bbox_xywh))


def refcoco_accuracy(predictions: Sequence, entries: Sequence[Mapping]) -> dict:
    """RefCOCO/+/g accuracy, scored per referring expression (one prediction per entry, in order; §4.3).

    `entries` are the eval-file records: each needs ``bbox`` ([x, y, w, h] pixels), ``width`` and ``height``
    (original image). A prediction may be None (never produced). Returns ``{"accuracy": hits / total × 100,
    "hits", "total", "parse_failures", "parse_failure_rate" (0..1), "failures": [(index, reason), ...]}`` —
    unparsable answers count as misses and are reported, not hidden. (The official `--resample` re-asking is
    not done: §4.4.)
    """
    _check_pairs(predictions, entries, "refcoco_accuracy")
    hits, failures = 0, []
    for i, (pred, entry) in enumerate(zip(predictions, entries)):
        try:
            gt, width, height = _gt_xyxy(entry["bbox"]), float(entry["width"]), float(entry["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise MiniGPTv2Error(f"refcoco entry {i} needs bbox, width and height: {entry!r}") from e
        box, reason = refcoco_parse(pred, width, height)
        if box is None:
            failures.append((i, reason))
        hits += _hit(box, gt)
    total = len(entries)
    return {"accuracy": 100.0 * hits / total, "hits": hits, "total": total, "parse_failures": len(failures),
            "parse_failure_rate": len(failures) / total, "failures": failures}


# ---------------------------------------------------------------------------------------------------------------
# Detection / grounding: COCOeval matching (docs/evaluation-semantics.md §5) and COCO mAP


def box_recall_precision(pred_boxes: Sequence, gt_boxes: Sequence, thr: float = 0.5, inclusive: bool = False,
                         scores: Sequence[float] | None = None) -> dict:
    """Recall and precision of one image's predicted boxes (xyxy) against its GT boxes (xyxy), matched as
    COCOeval matches one image at one IoU threshold (§5).

    Predictions are taken in order of descending `scores` (stable; None = the given order, i.e. generation
    order). Each takes, among the GT boxes not matched yet, the one with the highest IoU, provided that IoU is
    >= min(thr, 1 - 1e-10); among equal IoUs the later GT box wins, as in COCOeval. A GT box is matched at most
    once, so a duplicate prediction is a false positive. IoU: areas (x2 - x1) * (y2 - y1), no +1 (COCO's);
    `inclusive=True` adds +1 to widths and heights (not COCO's, off by default). COCOeval's maxDets cap (100) is
    not applied. recall = tp / #GT, precision = tp / #pred; an empty denominator gives 1.0. For a data set, sum
    the counts and divide (micro average). Returns ``{"recall", "precision", "tp", "n_pred", "n_gt", "matches":
    [(pred_idx, gt_idx, iou), ...]}`` with the matches in matching order.
    """
    n_pred, n_gt = len(pred_boxes), len(gt_boxes)
    if scores is not None and len(scores) != n_pred:
        raise MiniGPTv2Error(f"box_recall_precision: {len(scores)} scores for {n_pred} predicted boxes")
    order = range(n_pred) if scores is None else sorted(range(n_pred), key=lambda i: -float(scores[i]))
    floor = min(thr, 1 - 1e-10)
    gt_taken = [False] * n_gt
    matches = []
    for i in order:
        best, best_j = floor, None
        for j, g in enumerate(gt_boxes):
            if gt_taken[j]:
                continue
            v = iou(pred_boxes[i], g, inclusive=inclusive)
            if v >= best:
                best, best_j = v, j
        if best_j is not None:
            gt_taken[best_j] = True
            matches.append((i, best_j, best))
    tp = len(matches)
    return {"recall": tp / n_gt if n_gt else 1.0, "precision": tp / n_pred if n_pred else 1.0,
            "tp": tp, "n_pred": n_pred, "n_gt": n_gt, "matches": matches}


def coco_map(predictions: Sequence[Mapping], ground_truth: Sequence[Mapping]) -> dict:
    """COCO box AP with `pycocotools.cocoeval.COCOeval` (iouType 'bbox') on in-memory data.

    ground_truth: ``{"image_id", "bbox": [x, y, w, h], "category" (optional, any label; default one class)}``.
    predictions: the same keys plus an optional ``"score"``.

    Scores: a generative model gives boxes without confidences. A prediction without "score" gets its *rank
    within its image*: the k-th box (0-based, in the given order, i.e. generation order) scores 1 / (k + 1).
    Earlier-generated boxes therefore rank higher, and across images all first boxes outrank all second boxes.
    (A constant score would make AP depend on the arbitrary image-id order in which COCOeval's stable sort breaks
    ties.) Categories that have no ground truth anywhere are ignored by COCOeval (as in COCO).

    Returns ``{"AP", "AP50", "AP75"}`` in [0, 1] (COCOeval stats[0..2]; 101-point interpolation, maxDets 100).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise MiniGPTv2Error("coco_map needs pycocotools: pip install pycocotools") from e

    if not ground_truth:
        raise MiniGPTv2Error("coco_map needs at least one ground-truth box")
    labels: dict = {}

    def cat_id(item) -> int:
        return labels.setdefault(item.get("category", None), len(labels) + 1)

    def xywh(item, what: str) -> list[float]:
        try:
            box = [float(v) for v in item["bbox"]]
            item["image_id"]
        except (KeyError, TypeError, ValueError):
            raise MiniGPTv2Error(f"{what} needs image_id and bbox [x, y, w, h]: {item!r}") from None
        if len(box) != 4:
            raise MiniGPTv2Error(f"{what} bbox must be [x, y, w, h]: {item!r}")
        return box

    anns = []
    for k, g in enumerate(ground_truth, start=1):
        b = xywh(g, "ground-truth box")
        anns.append({"id": k, "image_id": g["image_id"], "category_id": cat_id(g), "bbox": b,
                     "area": b[2] * b[3], "iscrowd": 0})
    dets, rank = [], {}
    for p in predictions:
        b = xywh(p, "prediction")
        k = rank[p["image_id"]] = rank.get(p["image_id"], -1) + 1
        score = float(p["score"]) if p.get("score") is not None else 1.0 / (k + 1)
        dets.append({"image_id": p["image_id"], "category_id": cat_id(p), "bbox": b, "score": score})
    if not dets:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}

    image_ids = sorted({a["image_id"] for a in anns} | {d["image_id"] for d in dets}, key=str)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in image_ids], "annotations": anns,
                      "categories": [{"id": c, "name": str(lbl)} for lbl, c in labels.items()]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50, ap75 = (max(0.0, float(v)) for v in ev.stats[:3])
    return {"AP": ap, "AP50": ap50, "AP75": ap75}


# ---------------------------------------------------------------------------------------------------------------
# Captioning (COCO caption protocol, pycocoevalcap)


def _simple_tokenize(caption: str) -> str:
    """Java-free stand-in for PTBTokenizer: lowercase, split off punctuation and clitics, drop punctuation."""
    toks = re.findall(r"n't|'[a-z]+|[a-z0-9]+(?=n't)|[a-z0-9]+|[^a-z0-9\s]", caption.lower())
    return " ".join(t for t in toks if re.search(r"[a-z0-9]", t))


def caption_scores(preds: Mapping, refs: Mapping) -> dict:
    """COCO caption metrics: PTBTokenizer, then BLEU-1..4, METEOR, ROUGE-L, CIDEr (CIDEr-D as in pycocoevalcap).

    preds: ``{id: caption}``; refs: ``{id: [reference captions]}`` with the same ids. PTBTokenizer and METEOR run
    on Java. If ``java`` is not on PATH, METEOR is left out and the captions are tokenised by a simple Python
    approximation of PTB (lowercase, punctuation removed); both are reported under ``"omitted"`` and
    ``"tokenizer"``, so such numbers are not comparable with published ones. SPICE is never computed (it needs
    downloads). CIDEr's IDF comes from the references of *these* ids, so a single image gives CIDEr 0 — score a
    whole split at once.
    Returns ``{"BLEU-1", ..., "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "tokenizer": "ptb" | "simple",
    "omitted": {metric: reason}}``.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as e:
        raise MiniGPTv2Error("caption_scores needs pycocoevalcap: pip install pycocoevalcap") from e

    if not isinstance(preds, Mapping) or not isinstance(refs, Mapping):
        raise MiniGPTv2Error("caption_scores takes dicts: preds {id: caption}, refs {id: [captions]}")
    if set(preds) != set(refs):
        missing, extra = set(refs) - set(preds), set(preds) - set(refs)
        raise MiniGPTv2Error(f"caption ids differ: no prediction for {sorted(missing, key=str)[:5]}, "
                             f"no references for {sorted(extra, key=str)[:5]}")
    if not preds:
        raise MiniGPTv2Error("caption_scores: nothing to score")
    for k, r in refs.items():
        if isinstance(r, str) or not r:
            raise MiniGPTv2Error(f"references of {k!r} must be a non-empty list of captions")

    # one caption per line for PTBTokenizer; an empty caption is sent as a single space
    def clean(c) -> str:
        return _text(c).replace("\n", " ").replace("\r", " ").strip() or " "

    have_java = shutil.which("java") is not None
    omitted: dict = {"SPICE": "not computed (needs Stanford CoreNLP model downloads)"}
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print progress
        if have_java:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
            tok = PTBTokenizer()
            gts = tok.tokenize({k: [{"caption": clean(c)} for c in v] for k, v in refs.items()})
            res = tok.tokenize({k: [{"caption": clean(v)}] for k, v in preds.items()})
        else:
            gts = {k: [_simple_tokenize(clean(c)) for c in v] for k, v in refs.items()}
            res = {k: [_simple_tokenize(clean(v))] for k, v in preds.items()}
            omitted["METEOR"] = "java not found on PATH"
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out: dict = {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
        if have_java:
            from pycocoevalcap.meteor.meteor import Meteor
            meteor = Meteor()
            try:
                out["METEOR"] = float(meteor.compute_score(gts, res)[0])
            finally:  # stop the java process now instead of at garbage collection
                meteor.meteor_p.stdin.close()
                meteor.meteor_p.kill()
                meteor.meteor_p.wait()
        out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["tokenizer"] = "ptb" if have_java else "simple"
    out["omitted"] = omitted
    return out
