"""The contracts of minigptv2/eval/metrics.py and vqa_metrics.py around the arithmetic that tests/eval/test_metrics.py
pins: error messages that name the function and the value, accepted label forms, options passed through, COCO mAP's
rank scores and image set, the caption scorer's text cleaning and its fallbacks (no Java, no pycocoevalcap)."""
import math
import sys

import numpy as np
import pytest
import torch

from minigptv2.eval import metrics
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval.metrics import (box_recall_precision, caption_scores, coco_map, exact_match, gqa_correct, gqa_score,
                               hm_correct, hm_score, iconvqa_choice, refcoco_accuracy, refcoco_hit, refcoco_parse,
                               vizwiz_accuracy, vizwiz_score, vqa_accuracy, vqa_score, vsr_correct, vsr_score)

SCORES = {"vqa_score": (vqa_score, [["a"] * 10]), "vizwiz_score": (vizwiz_score, [["a"] * 10]),
          "gqa_score": (gqa_score, ["a"]), "vsr_score": (vsr_score, [1]), "hm_score": (hm_score, [1]),
          "refcoco_accuracy": (refcoco_accuracy, [{"bbox": [0, 0, 5, 5], "width": 10, "height": 10}])}


@pytest.mark.parametrize("name", sorted(SCORES))
def test_score_functions_check_their_inputs_by_name(name):
    fn, one = SCORES[name]
    assert fn(["a"], one) is not None                                     # a single pair is fine
    with pytest.raises(MiniGPTv2Error, match=f"{name}: predictions and ground truth must be sequences, not single"):
        fn("a", one)
    with pytest.raises(MiniGPTv2Error, match=f"{name}: predictions and ground truth must be sequences"):
        fn(["a"], "a")
    with pytest.raises(MiniGPTv2Error, match=f"{name}: 2 predictions but 1 ground-truth items"):
        fn(["a", "b"], one)
    with pytest.raises(MiniGPTv2Error, match=rf"{name}: nothing to score \(empty lists\)"):
        fn([], [])


def test_answer_lists_and_predictions_are_checked():
    for fn, name in ((vqa_accuracy, "vqa_accuracy"), (vizwiz_accuracy, "vizwiz_accuracy")):
        with pytest.raises(MiniGPTv2Error, match=rf"{name} needs a non-empty list of human answers, got \[\]"):
            fn("a", [])
        with pytest.raises(MiniGPTv2Error, match=f"{name} needs a non-empty list of human answers, got 'yes'"):
            fn("a", "yes")
        with pytest.raises(MiniGPTv2Error, match=f"{name}: human answers must be strings, got int: 3"):
            fn("a", ["a", 3])
        with pytest.raises(MiniGPTv2Error, match="prediction must be a string, got int: 5"):
            fn(5, ["a"])
    with pytest.raises(MiniGPTv2Error, match="GQA answer must be a string, got int: 1"):
        gqa_correct("1", 1)
    with pytest.raises(MiniGPTv2Error, match="^iconvqa_choice needs at least one candidate loss$"):
        iconvqa_choice([])
    with pytest.raises(MiniGPTv2Error, match="iconvqa_choice: n_slots 1 < 2 candidate losses"):
        iconvqa_choice([1.0, 2.0], n_slots=1)


def test_binary_labels_accept_words_digits_and_scalars():
    for label in (1, True, "1", " TRUE ", np.int64(1), torch.tensor(1)):
        assert vsr_correct("true", label) and not vsr_correct("false", label)
    for label in (0, False, "0", "False", np.int64(0), torch.tensor(0)):
        assert vsr_correct("false", label)
    for label in (1, "1", "Yes", " yes", np.int64(1)):
        assert hm_correct("yes", label) and not hm_correct("no", label)
    for label in (0, "0", "NO", np.int64(0)):
        assert hm_correct("no", label)
    for bad, words in (("yes", "'true'/'false'"), (2, "'true'/'false'"), (None, "'true'/'false'")):
        with pytest.raises(MiniGPTv2Error, match=f"label must be 0/1 or {words}, got {bad!r}"):
            vsr_correct("true", bad)
    with pytest.raises(MiniGPTv2Error, match="label must be 0/1 or 'yes'/'no', got 'true'"):
        hm_correct("yes", "true")


def test_scores_are_means_and_pass_their_options():
    # 2 of 4 right: 50, not 100 / 2 / 4
    assert gqa_score(["a", "b", "x", "y"], ["a", "b", "c", "d"]) == 50.0
    assert vqa_score(["two"], [["2"] * 10]) == 0.0                                # identical answers: no processing
    assert vqa_score(["two"], [["2"] * 10], lenient=True) == 100.0
    assert vqa_accuracy("red\tcar", ["red car"] * 10) == 1.0                      # a tab inside becomes a space
    assert not exact_match("ss", "ß") and exact_match("ÄB", "äb")                # lowercase, not uppercase


def test_refcoco_parse_and_hit_errors():
    for w, h in ((0, 10), (10, 0), (-1, 10), (10, -1)):
        with pytest.raises(MiniGPTv2Error, match=f"image size must be positive, got {w}x{h}"):
            refcoco_parse("{<1><2><3><4>}", w, h)
    assert refcoco_parse(None, 10, 10) == (None, "no prediction")
    with pytest.raises(MiniGPTv2Error, match=r"ground-truth bbox must be \[x, y, w, h\], got \[1, 2, 3\]"):
        refcoco_hit("{<1><2><3><4>}", [1, 2, 3], 10, 10)
    with pytest.raises(MiniGPTv2Error, match="refcoco entry 1 needs bbox, width and height"):
        refcoco_accuracy(["a", "b"], [{"bbox": [0, 0, 1, 1], "width": 5, "height": 5}, {"bbox": [0, 0, 1, 1]}])


def test_box_matching_threshold_one_and_inclusive_widths():
    # thr 1.0 is capped at 1 - 1e-10 (COCOeval): a box equal up to float noise still matches
    assert box_recall_precision([(0, 0, 10, 10)], [(0, 0, 10, 10 + 1e-10)], thr=1.0)["tp"] == 1
    # IoU 36 / 81 < 0.5 with COCO areas, (5 * 10) / (10 * 10) = 0.5 with +1 on widths and heights
    assert box_recall_precision([(0, 0, 9, 9)], [(0, 0, 4, 9)])["tp"] == 0
    assert box_recall_precision([(0, 0, 9, 9)], [(0, 0, 4, 9)], inclusive=True)["tp"] == 1
    with pytest.raises(MiniGPTv2Error, match="box_recall_precision: 1 scores for 2 predicted boxes"):
        box_recall_precision([(0, 0, 1, 1)] * 2, [(0, 0, 1, 1)], scores=[1.0])


# ---- COCO mAP ------------------------------------------------------------------------------------------------
def test_coco_map_rank_scores_mix_with_given_scores():
    """Image "a": two boxes without scores (1 and 1/2), both right; image "b": one wrong box scored 0.6. Ranked
    a1 (1.0), b (0.6), a2 (0.5): TP, FP, TP -> precision 1 up to recall 0.5, then 2/3: AP = (51 + 50 * 2/3) / 101
    over COCO's 101 recall points."""
    gt = [{"image_id": "a", "bbox": [0, 0, 10, 10]}, {"image_id": "a", "bbox": [50, 50, 10, 10]}]
    preds = [{"image_id": "a", "bbox": [0, 0, 10, 10]}, {"image_id": "a", "bbox": [50, 50, 10, 10]},
             {"image_id": "b", "bbox": [20, 20, 10, 10], "score": 0.6}]
    m = coco_map(preds, gt)
    assert m["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101) and m["AP"] == pytest.approx(m["AP50"])


def test_coco_map_counts_images_without_predictions():
    gt = [{"image_id": 1, "bbox": [0, 0, 10, 10]}, {"image_id": 2, "bbox": [0, 0, 10, 10]}]
    m = coco_map([{"image_id": 1, "bbox": [0, 0, 10, 10]}], gt)
    assert m["AP50"] == pytest.approx(51 / 101)           # recall 0.5: image 2's box was missed
    assert coco_map([], gt) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_coco_map_area_is_width_times_height():
    """COCO's "all" area range is [0, 1e10] px²: a 1e6 x 1e5 box (area 1e11) is outside it and ignored."""
    big = [{"image_id": 1, "bbox": [0, 0, 1e6, 1e5]}]
    assert coco_map(big, big)["AP"] == 0.0
    ok = [{"image_id": 1, "bbox": [0, 0, 1e5, 1e5]}]
    assert coco_map(ok, ok)["AP"] == pytest.approx(1.0)


def test_coco_map_errors(monkeypatch, capsys):
    with pytest.raises(MiniGPTv2Error, match="^coco_map needs at least one ground-truth box$"):
        coco_map([], [])
    with pytest.raises(MiniGPTv2Error, match="ground-truth box needs image_id and bbox"):
        coco_map([], [{"bbox": [0, 0, 1, 1]}])
    with pytest.raises(MiniGPTv2Error, match="prediction needs image_id and bbox"):
        coco_map([{"image_id": 1}], [{"image_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(MiniGPTv2Error, match=r"prediction bbox must be \[x, y, w, h\]"):
        coco_map([{"image_id": 1, "bbox": [0, 0, 1]}], [{"image_id": 1, "bbox": [0, 0, 1, 1]}])
    coco_map([{"image_id": 1, "bbox": [0, 0, 1, 1]}], [{"image_id": 1, "bbox": [0, 0, 1, 1]}])
    assert capsys.readouterr().out == ""                                   # pycocotools' printing is swallowed
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(MiniGPTv2Error, match="^coco_map needs pycocotools: pip install pycocotools$"):
        coco_map([], [{"image_id": 1, "bbox": [0, 0, 1, 1]}])


# ---- captions ------------------------------------------------------------------------------------------------
def test_caption_input_errors(monkeypatch):
    with pytest.raises(MiniGPTv2Error, match=r"^caption_scores takes dicts: preds \{id: caption\}, refs \{id: "
                                             r"\[captions\]\}$"):
        caption_scores({"a": "x"}, [("a", ["x"])])
    with pytest.raises(MiniGPTv2Error, match="caption_scores takes dicts"):
        caption_scores([("a", "x")], {"a": ["x"]})
    # ids of mixed types are listed in the order of their str(), at most 5 of each
    with pytest.raises(MiniGPTv2Error, match=r"^caption ids differ: no prediction for \[1, 2, 3, 4, 'c'\], "
                                             r"no references for \[5, 6, 7, 8, 9\]$"):
        caption_scores({k: "x" for k in ("a", 5, 6, 7, 8, 9, "z")}, {k: ["x"] for k in (1, 2, 3, 4, "a", "c", "d")})
    with pytest.raises(MiniGPTv2Error, match="^caption_scores: nothing to score$"):
        caption_scores({}, {})
    with pytest.raises(MiniGPTv2Error, match="references of 'a' must be a non-empty list of captions"):
        caption_scores({"a": "x"}, {"a": []})
    monkeypatch.setitem(sys.modules, "pycocoevalcap.bleu.bleu", None)
    with pytest.raises(MiniGPTv2Error, match="^caption_scores needs pycocoevalcap: pip install pycocoevalcap$"):
        caption_scores({"a": "x"}, {"a": ["x"]})


def test_caption_text_cleaning_without_java(monkeypatch, capsys):
    """Line breaks inside a caption are spaces; an empty caption is scored as empty (BLEU-1 of "a dog" against
    2 + 2 reference words: precision 1, brevity penalty exp(1 - 4 / 2))."""
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    s = caption_scores({"a": "a red\ncircle", "b": "a blue\r\nsquare"}, {"a": ["a red circle"], "b": ["a blue square"]})
    assert s["BLEU-1"] == pytest.approx(1.0) and s["tokenizer"] == "simple"
    assert s["omitted"] == {"SPICE": "not computed (needs Stanford CoreNLP model downloads)",
                            "METEOR": "java not found on PATH"}
    s = caption_scores({"a": "", "b": "a dog"}, {"a": ["a cat"], "b": ["a dog"]})
    assert s["BLEU-1"] == pytest.approx(math.exp(-1), rel=1e-6)
    assert capsys.readouterr().out == ""                                      # the scorers' printing is swallowed
    assert metrics._simple_tokenize("The dog doesn't run, it's fast!") == "the dog does n't run it 's fast"
