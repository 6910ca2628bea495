"""Benchmark metrics of MiniGPT-v2 as pure functions (no model code).

Protocols (facts §5): VQA accuracy (OKVQA, official VQA eval), VizWiz / GQA / VSR / Hateful-Memes scorers of
`eval_vqa.py`, IconVQA likelihood ranking, RefCOCO/+/g accuracy of `eval_ref.py`, plus generic box
recall/precision, COCO box mAP (pycocotools) and COCO caption scores (pycocoevalcap).

Per-item functions return a value in [0, 1] (or a bool); the `*_score` aggregates return a percentage (×100,
not rounded — the official VQA tool rounds its overall number to 2 decimals). Bad input (length mismatch, empty
lists, wrong types) raises `MiniGPTv2Error`; bad *model output* never raises — it is scored as wrong.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from collections.abc import Mapping, Sequence

from minigptv2.boxes import iou, parse_boxes, to_pixels
from minigptv2.errors import MiniGPTv2Error

# ---------------------------------------------------------------------------------------------------------------
# small helpers


def _check_pairs(preds, gts, what: str) -> None:
    if isinstance(preds, (str, bytes)) or isinstance(gts, (str, bytes)):
        raise MiniGPTv2Error(f"{what}: predictions and ground truth must be sequences, not single strings")
    if len(preds) != len(gts):
        raise MiniGPTv2Error(f"{what}: {len(preds)} predictions but {len(gts)} ground-truth items")
    if len(preds) == 0:
        raise MiniGPTv2Error(f"{what}: nothing to score (empty lists)")


def _text(pred) -> str:
    """Model output as text; None (no prediction) becomes '' so it simply never matches."""
    if pred is None:
        return ""
    if not isinstance(pred, str):
        raise MiniGPTv2Error(f"prediction must be a string, got {type(pred).__name__}: {pred!r}")
    return pred


def exact_match(pred, gt) -> bool:
    """Exact match after stripping, lowercasing and collapsing runs of whitespace on both sides."""
    norm = lambda s: " ".join(_text(s).lower().split())  # noqa: E731
    return norm(pred) == norm(gt)


# ---------------------------------------------------------------------------------------------------------------
# VQA accuracy (OKVQA / VQAv2) — the official VQA evaluation (GT-Vision-Lab `vqaEval.py`, LAVIS copy used by
# MiniGPT-v2's `eval_vqa.py` with VQAEval(n=2)).

# Punctuation that is removed, or turned into a space (the official list: no apostrophe, no colon, no period).
_VQA_PUNCT = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA = re.compile(r"\d,\d")
# A period is dropped unless a digit follows ("3.5" stays, "dog." -> "dog"). The official regex
# "(?!<=\d)(\.)(?!\d)" has a malformed look-behind that never triggers, so this is its actual behaviour.
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}


def _contractions() -> dict[str, str]:
    """Apostrophe-less spellings -> the contraction (the official VQA contraction table, built by rule).

    One-apostrophe forms are reached from the fully stripped spelling ("dont" -> "don't"); forms with several
    apostrophes from each spelling that misses exactly one ("couldnt've", "couldn'tve" -> "couldn't've").
    Words whose stripped spelling is a real word ("we'll" -> "well", "it's" -> "its") are not listed. Same key set
    as the official table except: its capitalised "Im"/"Ive"/"Id've" keys (unreachable after lowercasing) and
    identity entries are dropped, and its reversed entry "somebody'd" -> "somebodyd" is "somebodyd" ->
    "somebody'd" here.
    """
    one = ("ain't aren't can't could've couldn't didn't doesn't don't hadn't hasn't haven't he'd he's how'd how'll "
           "how's isn't it'd it'll ma'am mightn't might've mustn't must've needn't not've o'clock oughtn't shan't "
           "should've shouldn't somebody'd somebody'll somebody's someone'd someone'll someone's something'd "
           "something'll that's there'd there're there's they'd they'll they're they've 'twas wasn't we've "
           "weren't what'll what're what's what've when's where'd where's where've who'd who'll who's who've "
           "why'll why're why's won't would've wouldn't y'all you'd you'll you're you've")
    several = ("couldn't've hadn't've he'd've it'd've mightn't've she'd've shouldn't've somebody'd've "
               "someone'd've something'd've there'd've they'd've we'd've who'd've wouldn't've y'all'll "
               "y'all'd've you'd've 'ow's'at")
    table = {w.replace("'", ""): w for w in one.split()}
    for w in several.split():
        for i, ch in enumerate(w):
            if ch == "'":
                table[w[:i] + w[i + 1:]] = w
    return table


_CONTRACTIONS = _contractions()


def vqa_normalize(answer: str) -> str:
    """Normalise an answer as the official VQA evaluation does.

    1. newlines/tabs -> spaces, strip;
    2. punctuation: each character of ``;/[]"{}()=+\\_-><@`,?!`` is *deleted* if it touches a space anywhere in the
       answer (e.g. "red, white") or if the answer contains a digit-comma-digit ("1,000" -> "1000"; this rule then
       deletes every punctuation character), otherwise it becomes a space ("red/white" -> "red white");
       a period is removed unless a digit follows it ("3.5" stays, "yes." -> "yes");
    3. lowercase, split on whitespace, number words zero..ten (and "none") -> digits, drop the articles
       a/an/the, expand apostrophe-less contractions ("dont" -> "don't"), join with single spaces.
    """
    text = _text(answer).replace("\n", " ").replace("\t", " ").strip()
    delete = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in _VQA_PUNCT:
        touches_space = (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if (delete or touches_space) else " ")
    out = _PERIOD.sub("", out)
    words = []
    for w in out.lower().split():
        w = _NUMBER_WORDS.get(w, w)
        if w not in _ARTICLES:
            words.append(_CONTRACTIONS.get(w, w))
    return " ".join(words)


def vqa_accuracy(prediction, answers: Sequence[str]) -> float:
    """Standard VQA accuracy of one answer against the human answers (normally 10), in [0, 1].

    accuracy = mean over the n leave-one-out subsets (10 choose 9) of min(#answers in the subset equal to the
    prediction / 3, 1), after `vqa_normalize` of the prediction and of every human answer. With 10 answers and m
    of them matching: m=0 -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.0.

    Deviation from the official script (deliberate): it normalises the human answers only by the punctuation step
    and only when they disagree, relying on the annotation files being pre-normalised; here both sides always get
    the full normalisation, so e.g. prediction "none" (-> "0") still matches a human "none". On the cleaned
    OKVQA / VQAv2 annotations the two agree. With a single human answer there is no subset to leave out; this
    returns min(matches / 3, 1) (the official loop would always give 0).
    """
    if isinstance(answers, (str, bytes)) or len(answers) == 0:
        raise MiniGPTv2Error(f"vqa_accuracy needs a non-empty list of human answers, got {answers!r}")
    pred = vqa_normalize(prediction)
    matches = [vqa_normalize(a) == pred for a in answers]
    total = sum(matches)
    n = len(answers)
    if n == 1:
        return min(total / 3.0, 1.0)
    # leaving out answer i keeps total - matches[i] matching answers among the other n - 1
    return sum(min((total - int(m)) / 3.0, 1.0) for m in matches) / n


def vqa_score(preds: Sequence, answer_lists: Sequence[Sequence[str]]) -> float:
    """Mean `vqa_accuracy` × 100 (the official tool prints this rounded to 2 decimals)."""
    _check_pairs(preds, answer_lists, "vqa_score")
    return 100.0 * sum(vqa_accuracy(p, a) for p, a in zip(preds, answer_lists)) / len(preds)


# ---------------------------------------------------------------------------------------------------------------
# VizWiz, GQA, VSR, Hateful Memes, IconVQA — `eval_vqa.py` (facts §5.3)


def vizwiz_accuracy(prediction, answers: Sequence[str]) -> float:
    """VizWiz as MiniGPT-v2 scores it: min(#annotator answers equal to the prediction / 3, 1).

    Equality is case-insensitive exact string match (surrounding whitespace ignored); no VQA normalisation and
    no leave-one-out averaging (facts §5.3). So 3 of 10 annotators matching already gives 1.0.
    """
    if isinstance(answers, (str, bytes)) or len(answers) == 0:
        raise MiniGPTv2Error(f"vizwiz_accuracy needs a non-empty list of annotator answers, got {answers!r}")
    pred = _text(prediction).strip().lower()
    count = sum(1 for a in answers if _text(a).strip().lower() == pred)
    return min(count / 3.0, 1.0)


def vizwiz_score(preds: Sequence, answer_lists: Sequence[Sequence[str]]) -> float:
    """Mean `vizwiz_accuracy` × 100."""
    _check_pairs(preds, answer_lists, "vizwiz_score")
    return 100.0 * sum(vizwiz_accuracy(p, a) for p, a in zip(preds, answer_lists)) / len(preds)


def gqa_score(preds: Sequence, answers: Sequence[str]) -> float:
    """GQA: exact-match accuracy × 100 (`exact_match`: lowercase, strip, collapse whitespace).

    The official script compares `prediction.lower() == answer` without lowercasing the answer; GQA answers are
    lowercase already, so that is the same on the real data.
    """
    _check_pairs(preds, answers, "gqa_score")
    return 100.0 * sum(exact_match(p, a) for p, a in zip(preds, answers)) / len(preds)


def _binary_label(label, true_word: str, false_word: str) -> int:
    """Ground-truth label as 0/1: accepts 0/1, bool, or the words ('true'/'false', 'yes'/'no')."""
    if isinstance(label, str):
        word = label.strip().lower()
        if word in (true_word, "1"):
            return 1
        if word in (false_word, "0"):
            return 0
    elif isinstance(label, (bool, int)) or hasattr(label, "item"):  # ints, bools, numpy/torch scalars
        value = int(label)
        if value in (0, 1):
            return value
    raise MiniGPTv2Error(f"label must be 0/1 or '{true_word}'/'{false_word}', got {label!r}")


def vsr_label(prediction) -> int | None:
    """VSR answer -> 1 ('true'), 0 ('false'), None (anything else, scored wrong). Case-insensitive, stripped."""
    word = _text(prediction).strip().lower()
    return {"true": 1, "false": 0}.get(word)


def vsr_score(preds: Sequence, labels: Sequence) -> float:
    """VSR: accuracy × 100 of `vsr_label(pred)` against the 0/1 label (official: lowercase compare with
    'true'/'false')."""
    _check_pairs(preds, labels, "vsr_score")
    return 100.0 * sum(vsr_label(p) == _binary_label(y, "true", "false") for p, y in zip(preds, labels)) / len(preds)


def hm_label(prediction) -> int | None:
    """Hateful-Memes answer -> 1 ('yes'), 0 ('no'), None (anything else).

    Matching is exact after lower()/strip(), as the official script ("Yes." is not "yes"). Unlike the official
    script, which keeps an unrecognised answer as a raw string in its results, anything that is not yes/no is
    simply None and is always scored wrong.
    """
    word = _text(prediction).strip().lower()
    return {"yes": 1, "no": 0}.get(word)


def hm_score(preds: Sequence, labels: Sequence) -> float:
    """Hateful Memes: accuracy × 100 of `hm_label(pred)` against the 0/1 label (1 = hateful)."""
    _check_pairs(preds, labels, "hm_score")
    return 100.0 * sum(hm_label(p) == _binary_label(y, "yes", "no") for p, y in zip(preds, labels)) / len(preds)


def iconvqa_choice(losses: Sequence[float]) -> int:
    """IconVQA likelihood ranking: index of the candidate answer with the lowest loss (first one on ties).

    The official `multi_select` pads missing candidate slots with a loss of 9999, so they never win; NaN losses
    are treated as +inf here. Accuracy = #(choice == answer index) / N × 100.
    """
    values = [float(v) for v in losses]
    if not values:
        raise MiniGPTv2Error("iconvqa_choice needs at least one candidate loss")
    values = [math.inf if math.isnan(v) else v for v in values]
    return min(range(len(values)), key=values.__getitem__)


# ---------------------------------------------------------------------------------------------------------------
# RefCOCO / RefCOCO+ / RefCOCOg — `eval_ref.py` (facts §5.1)

REFCOCO_RES = 100  # grid resolution of the answer's coordinates (`--res 100`)


def refcoco_parse(pred_text, width: int, height: int):
    """Parse a referring answer into a pixel box of the original W×H image.

    Returns ``(box_xyxy, None)`` or ``(None, reason)``. The answer (after removing ``<unk>``) must contain exactly
    one well-formed ``{<x1><y1><x2><y2>}`` box with coordinates in 0..100 and no other number (the official
    scorer takes *all* integer runs of the answer and needs exactly four). Coordinates -> pixels as
    ``x / 100 * W``, ``y / 100 * H`` (relative to the original image, not the 448 input).
    """
    if width <= 0 or height <= 0:
        raise MiniGPTv2Error(f"image size must be positive, got {width}x{height}")
    if pred_text is None:
        return None, "no prediction"
    text = _text(pred_text).replace("<unk>", "")
    boxes = parse_boxes(text)
    if not boxes:
        return None, f"no {{<x1><y1><x2><y2>}} box with coordinates 0..{REFCOCO_RES} in {pred_text!r}"
    if len(boxes) > 1:
        return None, f"{len(boxes)} boxes, expected one, in {pred_text!r}"
    n_numbers = len(re.findall(r"\d+", text))
    if n_numbers != 4:
        return None, f"{n_numbers} numbers, expected exactly the 4 box coordinates, in {pred_text!r}"
    return to_pixels(boxes[0].box, width, height), None


def _gt_xyxy(gt_bbox_xywh) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in gt_bbox_xywh)
    except (TypeError, ValueError):
        raise MiniGPTv2Error(f"ground-truth bbox must be [x, y, w, h], got {gt_bbox_xywh!r}") from None
    return (x, y, x + w, y + h)


def refcoco_hit(pred_text, gt_bbox_xywh, width: int, height: int) -> bool:
    """One referring expression: True if the parsed answer box has IoU > 0.5 (strict) with the ground truth.

    GT is COCO [x, y, w, h] -> (x, y, x+w, y+h); IoU uses the official inclusive-pixel convention (+1 on widths
    and heights). An unparsable answer is a miss (use `refcoco_parse` / `refcoco_accuracy` for the reason).
    """
    gt = _gt_xyxy(gt_bbox_xywh)
    box, _ = refcoco_parse(pred_text, width, height)
    return box is not None and iou(box, gt, inclusive=True) > 0.5


def refcoco_accuracy(predictions: Sequence, entries: Sequence[Mapping]) -> dict:
    """RefCOCO/+/g accuracy, scored per referring expression (one prediction per entry, in order).

    `entries` are the eval-file records (facts §5.2): each needs ``bbox`` ([x, y, w, h] pixels), ``width`` and
    ``height`` (original image). A prediction may be None (never produced). Returns
    ``{"accuracy": hits / total × 100, "hits", "total", "parse_failures", "parse_failure_rate" (0..1),
    "failures": [(index, reason), ...]}`` — unparsable answers count as misses and are reported, not hidden.
    """
    _check_pairs(predictions, entries, "refcoco_accuracy")
    hits, failures = 0, []
    for i, (pred, entry) in enumerate(zip(predictions, entries)):
        try:
            gt, width, height = _gt_xyxy(entry["bbox"]), int(entry["width"]), int(entry["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise MiniGPTv2Error(f"refcoco entry {i} needs bbox, width and height: {entry!r}") from e
        box, reason = refcoco_parse(pred, width, height)
        if box is None:
            failures.append((i, reason))
        elif iou(box, gt, inclusive=True) > 0.5:
            hits += 1
    total = len(entries)
    return {"accuracy": 100.0 * hits / total, "hits": hits, "total": total, "parse_failures": len(failures),
            "parse_failure_rate": len(failures) / total, "failures": failures}


# ---------------------------------------------------------------------------------------------------------------
# Detection: greedy recall / precision and COCO mAP


def box_recall_precision(pred_boxes: Sequence, gt_boxes: Sequence, thr: float = 0.5,
                         inclusive: bool = False) -> dict:
    """Recall and precision of one image's predicted boxes (xyxy) against its GT boxes (xyxy).

    Matching is greedy and one-to-one: all (prediction, GT) pairs with IoU >= `thr` are sorted by IoU (highest
    first; ties by prediction then GT index) and a pair is accepted when neither box is matched yet. So a duplicate
    prediction of an already matched object is a false positive, and one prediction can cover only one object.
    recall = tp / #GT, precision = tp / #pred; an empty denominator gives 1.0 (nothing to find / nothing wrong).
    For a data set, sum the returned counts and divide (micro average) rather than averaging the ratios.
    Returns ``{"recall", "precision", "tp", "n_pred", "n_gt", "matches": [(pred_idx, gt_idx, iou), ...]}``.
    """
    pairs = []
    for i, p in enumerate(pred_boxes):
        for j, g in enumerate(gt_boxes):
            v = iou(p, g, inclusive=inclusive)
            if v >= thr and v > 0:
                pairs.append((-v, i, j))
    pairs.sort()
    used_p, used_g, matches = set(), set(), []
    for neg_v, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            matches.append((i, j, -neg_v))
    tp, n_pred, n_gt = len(matches), len(pred_boxes), len(gt_boxes)
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
