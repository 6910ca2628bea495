"""Metrics against hand-computed examples (the arithmetic is in the comments)."""
import shutil

import pytest

from minigptv2.eval import metrics
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval.metrics import (box_recall_precision, caption_scores, coco_map, refcoco_accuracy, refcoco_hit, refcoco_iou, refcoco_parse)
from minigptv2.eval.vqa_metrics import (exact_match, gqa_correct, gqa_score, hm_label, hm_score, iconvqa_choice, okvqa_prediction, vizwiz_accuracy, vizwiz_score, vqa_accuracy, vqa_normalize, vqa_score, vsr_label, vsr_score)

# ---------------------------------------------------------------------------------------------------------------
# VQA accuracy


@pytest.mark.parametrize("m, expected", [
    # 10 answers, m of them match. Leaving out a matching answer leaves m-1 matches (m such subsets), leaving out
    # a non-matching one leaves m (10-m subsets); each subset scores min(matches/3, 1).
    (0, 0.0),
    (1, 0.3),   # (1*min(0/3,1) + 9*min(1/3,1)) / 10 = (0 + 3) / 10
    (2, 0.6),   # (2*(1/3) + 8*(2/3)) / 10 = (2/3 + 16/3) / 10 = 6 / 10
    (3, 0.9),   # (3*(2/3) + 7*1) / 10 = (2 + 7) / 10
    (4, 1.0),   # (4*1 + 6*1) / 10: every subset still has >= 3 matches
    (10, 1.0),
])
def test_vqa_accuracy_leave_one_out(m, expected):
    answers = ["cat"] * m + ["dog"] * (10 - m)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


@pytest.mark.parametrize("raw, norm", [
    ("Two", "2"),                 # number word -> digit (after lowercasing)
    ("none", "0"),
    ("a dog", "dog"),             # articles dropped
    ("The Two dogs!", "2 dogs"),  # "!" has no space beside it -> becomes a space, then stripped by split
    ("1,000", "1000"),            # digit,digit present -> every punctuation char is deleted, not spaced
    ("red/white", "red white"),   # no space beside "/" -> replaced by a space
    ("red, white", "red white"),  # ", " touches a space -> "," deleted
    ("3.5", "3.5"),               # period followed by a digit stays
    ("yes.", "yes"),              # other periods are removed
    ("dont", "don't"),            # contractions table
    ("isnt", "isn't"),
    ("couldnt've", "couldn't've"),
    ("it's", "it's"),             # apostrophes are not punctuation
    ("its", "its"),               # "its" is a word: not in the table
    ("  on\tthe\nleft ", "on left"),
    ("." * 40 + "x", "." * 8 + "x"),  # only the first 32 periods are removed (count=re.UNICODE=32)
    ("somebody'd", "somebodyd"),  # the official table maps this one backwards
    ("Im", "im"),                 # capitalised table keys never match a lowercased word
    ("1.", "1"),                  # the period is followed by the end, not a digit
])
def test_vqa_normalize(raw, norm):
    assert vqa_normalize(raw) == norm


def test_vqa_accuracy_identical_answers_skip_processing():
    # ten identical human answers: neither side is processed beyond newline/tab -> space and strip; the final
    # comparison is case-insensitive
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("the dog", ["dog"] * 10) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy(" yes\n", ["yes\t"] * 10) == 1.0
    # identical only up to case: the answers disagree as strings -> full processing of both sides
    assert vqa_accuracy("yes.", ["Yes"] * 5 + ["yes"] * 5) == 1.0
    # the lenient option normalises always
    assert vqa_accuracy("two", ["2"] * 10, lenient=True) == 1.0
    assert vqa_accuracy("the dog", ["dog"] * 10, lenient=True) == 1.0


def test_vqa_accuracy_disagreeing_answers_are_processed():
    other = ["something else"]
    assert vqa_accuracy("Two", ["2"] * 9 + other) == 1.0
    assert vqa_accuracy("a dog", ["dog"] * 9 + other) == 1.0
    assert vqa_accuracy("dont", ["don't"] * 9 + other) == 1.0
    assert vqa_accuracy("1,000", ["1000"] * 9 + other) == 1.0
    assert vqa_accuracy("its", ["it's"] * 9 + other) == 0.0
    assert vqa_accuracy("3.5", ["35"] * 9 + other) == 0.0
    # "two" matches 3 of 10 ("2", "two", "Two") -> 0.9 as in the table above
    assert vqa_accuracy("two", ["2", "two", "Two"] + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy(None, ["2"] * 10) == 0.0  # no prediction never matches


def test_vqa_accuracy_single_answer():
    # leaving the only answer out leaves nothing to match: always 0, as officially; lenient: min(1/3, 1)
    assert vqa_accuracy("2", ["2"]) == 0.0
    assert vqa_accuracy("2", ["2"], lenient=True) == pytest.approx(1 / 3)


def test_okvqa_prediction():
    # lowercase first, then "<unk>" removed (so "<UNK>" goes too), then strip
    assert okvqa_prediction("<UNK> Dog <unk>") == "dog"
    assert okvqa_prediction(None) == ""


def test_vqa_score():
    # per question 1.0, 0.3, 0.0 -> mean 1.3 / 3 * 100 = 43.333...
    preds = ["yes", "cat", "blue"]
    answers = [["yes"] * 10, ["cat"] + ["dog"] * 9, ["red"] * 10]
    assert vqa_score(preds, answers) == pytest.approx(130 / 3)
    with pytest.raises(MiniGPTv2Error):
        vqa_score(["a"], [])
    with pytest.raises(MiniGPTv2Error):
        vqa_accuracy("a", [])


# ---------------------------------------------------------------------------------------------------------------
# VizWiz, GQA, VSR, HM, IconVQA, exact match


def test_vizwiz():
    answers = ["Red", "RED", "blue"] + ["unanswerable"] * 7
    assert vizwiz_accuracy("red", answers) == pytest.approx(2 / 3)      # 2 case-insensitive matches / 3
    assert vizwiz_accuracy("red", answers + ["red"]) == 1.0              # 3 matches -> capped at 1
    assert vizwiz_accuracy("unanswerable", answers) == 1.0               # 7 matches, no leave-one-out
    assert vizwiz_accuracy("a red", ["red"] * 10) == 0.0                 # no VQA normalisation
    assert vizwiz_accuracy("Blue", answers) == pytest.approx(1 / 3)
    assert vizwiz_accuracy("Blue ", answers) == 0.0                      # raw answer: no strip
    # answers are joined with "_" and split again: "red_blue" counts as "red" and "blue"
    assert vizwiz_accuracy("blue", ["red_blue", "blue", "x"]) == pytest.approx(2 / 3)
    # (2/3 + 0) / 2 * 100 = 33.33
    assert vizwiz_score(["red", "green"], [answers, answers]) == pytest.approx(100 / 3)


def test_exact_match_and_gqa():
    assert exact_match("  The   Cat ", "the cat")
    assert not exact_match("the cats", "the cat")
    # prediction.lower() == answer as it is: "left " != "left", 1 of 3 correct -> 33.33
    assert gqa_score(["Yes", "left ", "red"], ["yes", "left", "blue"]) == pytest.approx(100 / 3)
    assert not gqa_correct("yes", "Yes")       # the answer is not lowercased


def test_vsr():
    assert vsr_label("True") == 1 and vsr_label("FALSE") == 0 and vsr_label("true.") is None
    assert vsr_label(" true") is None          # lower() only, no strip
    # labels may be ints or words; "maybe" is wrong -> 2 of 3 correct
    assert vsr_score(["true", "false", "maybe"], [1, "false", 0]) == pytest.approx(200 / 3)
    with pytest.raises(MiniGPTv2Error):
        vsr_score(["true"], [2])


def test_hateful_memes_non_yes_no_is_wrong():
    assert hm_label("Yes") == 1 and hm_label(" no ") == 0
    assert hm_label("yes.") is None and hm_label("I think so") is None and hm_label(None) is None
    # yes/1 right, no/1 wrong, "maybe"/0 wrong (not mapped to anything), "no"/0 right -> 2/4
    assert hm_score(["yes", "no", "maybe", "no"], [1, 1, 0, 0]) == 50.0


def test_iconvqa_choice():
    assert iconvqa_choice([2.3, 1.1, 9999.0]) == 1        # argmin; padded slots have loss 9999
    assert iconvqa_choice([1.0, 1.0, 2.0]) == 0           # first on ties
    nan, inf = float("nan"), float("inf")
    assert iconvqa_choice([nan, 3.0]) == 1                # NaN sorts after everything
    assert iconvqa_choice([nan, nan]) == 0
    assert iconvqa_choice([inf, 5.0]) == 1
    # padded to the batch's 3 slots with 9999: a NaN or above-9999 row loses to the padding
    assert iconvqa_choice([nan, 1e4], n_slots=3) == 2
    assert iconvqa_choice([inf, inf], n_slots=3) == 2
    assert iconvqa_choice([nan, 9998.0], n_slots=3) == 1
    with pytest.raises(MiniGPTv2Error):
        iconvqa_choice([])
    with pytest.raises(MiniGPTv2Error):
        iconvqa_choice([1.0, 2.0], n_slots=1)


# ---------------------------------------------------------------------------------------------------------------
# RefCOCO


def test_refcoco_strict_boundary():
    # 100x100 image: grid units == pixels. GT xywh [0,0,99,99] -> xyxy (0,0,99,99), inclusive area 100*100 = 10000
    gt = [0, 0, 99, 99]
    assert refcoco_hit("{<0><0><99><99>}", gt, 100, 100)          # IoU 1
    # pred (0,0,49,99): inclusive area 50*100 = 5000 = intersection -> IoU 5000/10000 = 0.5 exactly -> miss
    assert not refcoco_hit("{<0><0><49><99>}", gt, 100, 100)
    # pred (0,0,50,99): 51*100 = 5100 -> IoU 0.51 -> hit
    assert refcoco_hit("{<0><0><50><99>}", gt, 100, 100)


def test_refcoco_inclusive_pixel_convention():
    # GT xywh [10,10,2,2] -> (10,10,12,12): inclusive area 3*3 = 9. Pred (10,10,11,12): inclusive 2*3 = 6, all
    # inside -> IoU 6/9 = 0.667 -> hit. (Without +1: 1*2 / (2*2) = 0.5 -> would be a miss.)
    assert refcoco_hit("{<10><10><11><12>}", [10, 10, 2, 2], 100, 100)


def test_refcoco_scales_to_original_size():
    # 640x428 image: {<50><50><100><100>} -> (320, 214, 640, 428) == GT [320, 214, 320, 214] in xyxy -> IoU 1
    box, reason = refcoco_parse("{<50><50><100><100>}", 640, 428)
    assert reason is None and box == pytest.approx((320, 214, 640, 428))
    assert refcoco_hit("<unk>{ <50> <50> <100> <100> }", [320, 214, 320, 214], 640, 428)


@pytest.mark.parametrize("text", ["the dog on the left", "{<1><2><3>}", "{<1><2><3><1000>}",
                                  "{<1><2><3><4>}<delim>{<5><6><7><8>}", "2 dogs {<1><2><30><40>}", "", None,
                                  "{<1><2><3><4>} 5", "{<-1><2><3><4>}", "{<1>\t<2><3><4>}", "{<1><2><3><4>"])
def test_refcoco_unparsable_is_a_miss_with_reason(text):
    box, reason = refcoco_parse(text, 100, 100)
    assert box is None and isinstance(reason, str) and reason
    assert not refcoco_hit(text, [0, 0, 99, 99], 100, 100)


def test_refcoco_official_parsing_quirks():
    # the box must start the answer; anything without digits may follow; coordinates 1-3 digits, not clipped;
    # any Unicode decimal digit counts; only " " is removed inside, other whitespace only at the ends
    assert refcoco_parse("{<1><2><3><4>} the dog", 100, 100)[0] == (1, 2, 3, 4)
    assert refcoco_parse(" \n{ <1> <2> <3> <4> }\t", 100, 100)[0] == (1, 2, 3, 4)
    assert refcoco_parse("{<007><0><150><999>}", 200, 100)[0] == pytest.approx((14, 0, 300, 999))
    assert refcoco_parse("{<\u0661><2><3><4>}", 100, 100)[0] == (1, 2, 3, 4)      # ARABIC-INDIC DIGIT ONE
    assert refcoco_parse("<u nk>{<1><2><3><4>}", 100, 100)[0] is None           # "<unk>" only after removal
    assert refcoco_parse("{<1><2><3><4>}<unk>", 100, 100)[0] == (1, 2, 3, 4)


def test_refcoco_iou_official_formula():
    # (0,0,9,9) vs (5,0,14,9): +1 on widths: inter 5*10 = 50, union 100 + 100 - 50 -> 1/3
    assert refcoco_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(1 / 3)
    # zero union (two boxes of signed area 0, disjoint): the official division fails -> None, a miss
    assert refcoco_iou((1, 1, 0, 0), (10, 10, 9, 9)) is None
    # areas are not clamped: (10,0)-(8,9) has signed area (8-10+1)*(9-0+1) = -10, the GT 10*1 = 10, no overlap ->
    # union 0 -> None (with clamped areas it would be 0/10)
    assert refcoco_iou((10, 0, 8, 9), (20, 0, 29, 0)) is None
    assert not refcoco_hit("{<1><1><0><0>}", [10, 10, -1, -1], 100, 100)


def test_refcoco_accuracy_reports_parse_failures():
    entry = {"bbox": [0, 0, 99, 99], "width": 100, "height": 100}
    preds = ["{<0><0><99><99>}",   # hit (IoU 1)
             "{<0><0><50><99>}",   # hit (IoU 0.51)
             "{<0><0><49><99>}",   # parsed, miss (IoU 0.5)
             "a bowl"]             # parse failure -> miss
    r = refcoco_accuracy(preds, [entry] * 4)
    assert r["hits"] == 2 and r["total"] == 4 and r["accuracy"] == 50.0
    assert r["parse_failures"] == 1 and r["parse_failure_rate"] == 0.25
    assert r["failures"][0][0] == 3 and "start with a box" in r["failures"][0][1]
    with pytest.raises(MiniGPTv2Error):
        refcoco_accuracy(["x"], [{"bbox": [0, 0, 1, 1]}])   # no width/height
    with pytest.raises(MiniGPTv2Error):
        refcoco_accuracy(["x", "y"], [entry])


# ---------------------------------------------------------------------------------------------------------------
# Detection


def test_recall_precision_duplicates_and_misses():
    gts = [(0, 0, 10, 10), (20, 20, 30, 30)]
    preds = [(0, 0, 10, 10),    # matches GT 0 (IoU 1)
             (0, 0, 10, 10),    # duplicate of GT 0 -> false positive (one-to-one)
             (1, 0, 11, 10),    # IoU with GT 0 = 90/110 = 0.82, but GT 0 is taken -> false positive
             (50, 50, 60, 60)]  # nothing there -> false positive; GT 1 is missed
    r = box_recall_precision(preds, gts)
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 4, 2)
    assert r["recall"] == 0.5 and r["precision"] == 0.25          # 1/2, 1/4
    assert r["matches"] == [(0, 0, 1.0)]


def test_recall_precision_coco_matching_order_and_threshold():
    gts = [(0, 0, 10, 10), (0, 0, 10, 12)]
    # P0 (0,0,10,11): IoU GT0 = 100/110 = .909, GT1 = 110/120 = .917; P1 (0,0,10,10): GT0 = 1.0, GT1 = .833.
    # COCOeval: predictions in order, each takes its best free GT: P0 -> GT1, then P1 -> GT0.
    r = box_recall_precision([(0, 0, 10, 11), (0, 0, 10, 10)], gts)
    assert r["tp"] == 2 and [(i, j) for i, j, _ in r["matches"]] == [(0, 1), (1, 0)]
    # P0 (0,0,16,10) has IoU 100/160 = .625 with both GT0 (0,0,10,10) and GT1 (3,0,13,10): the later GT wins the
    # tie. P1 (4,0,13,10) then finds GT1 taken and GT0 at 60/130 = .46 < .5: 1 match. (Matching pairs by
    # highest IoU first would give 2: P1-GT1 .9, then P0-GT0.)
    preds, gts2 = [(0, 0, 16, 10), (4, 0, 13, 10)], [(0, 0, 10, 10), (3, 0, 13, 10)]
    assert [(i, j) for i, j, _ in box_recall_precision(preds, gts2)["matches"]] == [(0, 1)]
    # scores reorder the predictions (descending): P1 first takes GT1 (.9), then P0 takes GT0 (.625)
    r = box_recall_precision(preds, gts2, scores=[0.1, 0.9])
    assert [(i, j) for i, j, _ in r["matches"]] == [(1, 1), (0, 0)]
    # IoU exactly 0.5 (50/100) counts at thr 0.5 (>=), not at 0.6
    assert box_recall_precision([(0, 0, 5, 10)], [(0, 0, 10, 10)])["tp"] == 1
    assert box_recall_precision([(0, 0, 5, 10)], [(0, 0, 10, 10)], thr=0.6)["tp"] == 0
    # empty sides: no prediction -> recall 0, precision 1 (vacuous); no GT -> recall 1, precision 0
    assert box_recall_precision([], gts)["recall"] == 0.0 and box_recall_precision([], gts)["precision"] == 1.0
    assert box_recall_precision(gts, [])["recall"] == 1.0 and box_recall_precision(gts, [])["precision"] == 0.0


GT2 = [{"image_id": 1, "bbox": [0, 0, 10, 10]}, {"image_id": 1, "bbox": [20, 20, 10, 10]}]
AP_HALF = 51 / 101   # 101 recall points 0, .01, ..., 1: precision 1 up to recall .5 (51 points), 0 beyond


def test_coco_map_perfect_and_missed():
    assert coco_map([dict(g) for g in GT2], GT2) == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    r = coco_map([{"image_id": 1, "bbox": [0, 0, 10, 10]}], GT2)      # one of two GT found
    assert r["AP"] == pytest.approx(AP_HALF) and r["AP50"] == pytest.approx(AP_HALF)
    assert coco_map([], GT2)["AP"] == 0.0


def test_coco_map_iou_thresholds():
    # pred [0,0,10,6.2] vs GT [0,0,10,10]: IoU 62/100 = .62 -> TP at thresholds .50 .55 .60 only (3 of 10)
    r = coco_map([{"image_id": 1, "bbox": [0, 0, 10, 6.2]}], [{"image_id": 1, "bbox": [0, 0, 10, 10]}])
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == 0.0 and r["AP"] == pytest.approx(0.3)


def test_coco_map_scores_from_generation_order():
    # No scores: the k-th box of an image scores 1/(k+1). False positive generated first (score 1, TP .5):
    # PR = (p 0, r 0), (p .5, r .5) -> interpolated precision .5 up to recall .5 -> AP = 51 * .5 / 101
    fp, tp = {"image_id": 1, "bbox": [50, 50, 10, 10]}, {"image_id": 1, "bbox": [0, 0, 10, 10]}
    assert coco_map([fp, tp], GT2)["AP"] == pytest.approx(AP_HALF / 2)
    # TP first: precision 1 at recall .5 -> AP = 51/101
    assert coco_map([tp, fp], GT2)["AP"] == pytest.approx(AP_HALF)
    # explicit scores override the order
    assert coco_map([dict(fp, score=0.1), dict(tp, score=0.9)], GT2)["AP"] == pytest.approx(AP_HALF)


def test_coco_map_categories_and_errors():
    gt = [{"image_id": "a", "bbox": [0, 0, 10, 10], "category": "cat"},
          {"image_id": "a", "bbox": [20, 20, 10, 10], "category": "dog"}]
    # right box, wrong label for the dog: cat AP 1, dog AP 0 -> mean .5
    preds = [{"image_id": "a", "bbox": [0, 0, 10, 10], "category": "cat"},
             {"image_id": "a", "bbox": [20, 20, 10, 10], "category": "cat"}]
    # cat: TP (score 1) then FP (score .5) -> AP 1; dog: no detection -> AP 0
    assert coco_map(preds, gt)["AP"] == pytest.approx(0.5)
    with pytest.raises(MiniGPTv2Error):
        coco_map(preds, [])
    with pytest.raises(MiniGPTv2Error):
        coco_map([{"image_id": 1, "bbox": [1, 2, 3]}], GT2)


# ---------------------------------------------------------------------------------------------------------------
# Captions

CAPS = {1: "a man riding a horse on a beach", 2: "two dogs playing in the snow", 3: "a plate of food with broccoli"}


@pytest.mark.skipif(shutil.which("java") is None, reason="PTBTokenizer and METEOR need java")
def test_caption_scores_identical_with_java():
    # line breaks inside a caption are spaces (PTBTokenizer reads one caption per line)
    r = caption_scores({**CAPS, 4: "a red\ncircle\r\non grass"}, {**{k: [v] for k, v in CAPS.items()},
                                                                  4: ["a red circle on grass"]})
    assert r["tokenizer"] == "ptb"
    assert r["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and r["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert r["METEOR"] == pytest.approx(1.0, abs=1e-3)
    assert r["ROUGE-L"] == pytest.approx(1.0)
    assert r["CIDEr"] > 0
    assert "METEOR" not in r["omitted"] and "SPICE" in r["omitted"]


def test_caption_scores_without_java(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    r = caption_scores(CAPS, {k: [v, "something else entirely"] for k, v in CAPS.items()})
    assert r["tokenizer"] == "simple" and "METEOR" not in r and "METEOR" in r["omitted"]
    assert r["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and r["CIDEr"] > 0
    # one image: CIDEr's IDF is log(1/1) = 0 for every n-gram -> CIDEr 0 even for a perfect caption
    one = caption_scores({7: "a cat"}, {7: ["a cat"]})
    assert one["CIDEr"] == 0.0
    with pytest.raises(MiniGPTv2Error):
        caption_scores({1: "x"}, {2: ["x"]})
    with pytest.raises(MiniGPTv2Error):
        caption_scores({1: "x"}, {1: "x"})
