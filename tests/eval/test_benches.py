"""The official benches (minigptv2/eval/benches.py) run end to end with a stand-in `generate` (cli.run_bench): where
their files go, the exact prompts asked, and the exact scores of known answers; the loaders' errors."""
import json
import shutil
from pathlib import Path

import pytest

from eval_helpers import REFCOCO, FakeGenerate, iconvqa_root, img_file, patch_generate, refcoco_root
from helpers import tiny_model
from minigptv2.boxes import format_box, to_grid
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval import benches, cli
from minigptv2.synthetic import write_synthetic


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ev"), seed=2)


def _iou_inclusive(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def test_refcoco_prompts_layout_and_exact_score(tmp_path, mp, monkeypatch):
    import re

    root = refcoco_root(tmp_path, n=12)
    recs = json.loads((REFCOCO / "refcoco_val.json").read_text())[:12]
    answers = {}
    for i, r in enumerate(recs):
        x, y, w, h = r["bbox"]
        prompt = f"[refer] give me the location of {r['sents']}"
        if i % 3 == 0:
            answers[prompt] = format_box(to_grid((x, y, x + w, y + h), r["width"], r["height"]))
        elif i % 3 == 1:
            answers[prompt] = "{<0><0><3><3>}"          # parses, wrong place
        # i % 3 == 2: "no box here" -> parse failure (unless the same sentence got an answer above)
    expected_hits = expected_fail = 0
    for r in recs:              # score independently: per expression, rescaled to W,H, inclusive IoU > 0.5
        text = answers.get(f"[refer] give me the location of {r['sents']}", "no box here")
        nums = [int(v) for v in re.findall(r"\d+", text)]
        if len(nums) != 4:
            expected_fail += 1
            continue
        W, H = r["width"], r["height"]
        x, y, w, h = r["bbox"]
        px = [nums[0] / 100 * W, nums[1] / 100 * H, nums[2] / 100 * W, nums[3] / 100 * H]
        expected_hits += _iou_inclusive(px, (x, y, x + w, y + h)) > 0.5
    fake = FakeGenerate(answers)
    patch_generate(monkeypatch, fake)
    model, proc = mp
    m, rows = cli.run_bench(model, proc, "refcoco_val", root, batch_size=5, progress=False)
    assert expected_hits >= 3 and expected_fail >= 3
    assert m["hits"] == expected_hits and m["total"] == 12
    assert m["accuracy"] == pytest.approx(100 * expected_hits / 12)
    assert m["parse_failures"] == expected_fail and m["parse_failure_rate"] == pytest.approx(expected_fail / 12)
    assert [len(c["prompts"]) for c in fake.calls] == [5, 5, 2]
    c = fake.calls[0]
    assert c["prompts"][0] == f"[refer] give me the location of {recs[0]['sents']}"
    assert c["images"][0] == str(root / "coco" / "train2014" / f"{recs[0]['img_id'][:27]}.jpg")
    assert c["max_new_tokens"] == 20 and c["logits_processor"] is not None
    assert sum(r["hit"] for r in rows) == expected_hits and rows[2]["parse_error"]


def test_refcoco_missing_images_and_files(tmp_path, mp):
    root = refcoco_root(tmp_path, files=("refcoco+_testA",), n=30, images=False)
    with pytest.raises(MiniGPTv2Error, match=r"refcoco\+_testA: \d+ of \d+ image files are missing.*train2014"):
        benches.load_bench(root, "refcoco+_testA")
    with pytest.raises(MiniGPTv2Error, match="annotation file not found"):
        benches.load_bench(root, "refcocog_val")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "refcoco_testB.json").write_text((REFCOCO / "refcoco_testB.json").read_text())
    with pytest.raises(MiniGPTv2Error, match="missing"):
        benches.load_bench(flat, "refcoco_testB", limit=3)       # the flat eval_data layout is found


def test_expand_benches():
    assert benches.expand_benches("refcoco,refcocog_test") == ["refcoco_val", "refcoco_testA", "refcoco_testB",
                                                          "refcocog_test"]
    assert benches.expand_benches("vqa")[:2] == ["okvqa", "gqa"]
    with pytest.raises(MiniGPTv2Error, match="unknown bench"):
        benches.expand_benches("refcoco_train")


def _vqa_root(tmp: Path) -> Path:
    root = tmp / "vqa"
    (root / "okvqa").mkdir(parents=True)
    (root / "okvqa" / "okvqa_test_split.json").write_text(json.dumps(
        [{"image_id": 9, "question": f"q{k}?", "question_id": 100 + k} for k in range(3)]))
    anns = [["dog"] * 10, ["cat"] * 3 + ["lion"] * 7, ["red"] * 10]
    (root / "okvqa" / "mscoco_val2014_annotations_clean.json").write_text(json.dumps(
        {"annotations": [{"question_id": 100 + k, "answers": [{"answer": a} for a in ans]}
                         for k, ans in enumerate(anns)]}))
    img_file(root / "coco" / "train2017" / "000000000009.jpg")
    (root / "vizwiz").mkdir()
    (root / "vizwiz" / "val.json").write_text(json.dumps([
        {"image": "v0.jpg", "question": "is it on?", "answers": [{"answer": "yes"}] * 2 + [{"answer": "no"}] * 8},
        {"image": "v1.jpg", "question": "what is it?", "answers": [{"answer": "unanswerable"}] * 10}]))
    img_file(root / "vizwiz" / "val" / "v0.jpg")
    img_file(root / "vizwiz" / "val" / "v1.jpg")
    (root / "gqa").mkdir()
    (root / "gqa" / "testdev_balanced.json").write_text(json.dumps([
        {"image": "g.jpg", "question": "left?", "answer": "cup"}, {"image": "g.jpg", "question": "right?",
                                                                  "answer": "plate"}]))
    img_file(root / "gqa" / "images" / "g.jpg")
    (root / "vsr").mkdir()
    (root / "vsr" / "test.jsonl").write_text("".join(json.dumps({"image": "s.jpg", "caption": f"cap {k}",
                                                                 "label": y}) + "\n"
                                                     for k, y in enumerate([1, 0, 1])))
    img_file(root / "vsr" / "images" / "s.jpg")
    (root / "hm").mkdir()
    (root / "hm" / "dev.jsonl").write_text("".join(json.dumps({"id": k, "img": f"img/{k}.png", "text": f"t{k}",
                                                               "label": y}) + "\n" for k, y in enumerate([1, 0])))
    for k in range(2):
        img_file(root / "hm" / "img" / f"{k}.png")
    return root


def test_vqa_benches_official_prompts_and_exact_scores(tmp_path, mp, monkeypatch):
    root = _vqa_root(tmp_path)
    vq = "[vqa] Based on the image, respond to this question with a short answer: {}"
    fake = FakeGenerate({
        vq.format("q0?"): "Dog", vq.format("q1?"): "cat", vq.format("q2?"): "blue",
        "[vqa] The question is 'is it on?' Based on the image, answer the question with a single word or phrase. "
        "and reply 'unanswerable' when the provided information is insufficient": "yes",
        "[vqa] The question is 'what is it?' Based on the image, answer the question with a single word or phrase. "
        "and reply 'unanswerable' when the provided information is insufficient": "unanswerable",
        vq.format("left?"): "cup", vq.format("right?"): "cup",
        "[vqa] Based on the image, is this statement true or false? cap 0": "true",
        "[vqa] Based on the image, is this statement true or false? cap 1": "true",
        "[vqa] Based on the image, is this statement true or false? cap 2": "False",
        "This is an image writting 't0'. Is this image hateful? Answer yes or no. Answer:": "yes",
        "This is an image writting 't1'. Is this image hateful? Answer yes or no. Answer:": "no",
    }, default="UNMATCHED")
    patch_generate(monkeypatch, fake)
    model, proc = mp
    expected = {"okvqa": 100 * (1 + 0.9 + 0) / 3, "vizwiz": 100 * (2 / 3 + 1) / 2, "gqa": 50.0,
                "vsr": 100 / 3, "hm": 100.0}
    for bench, acc in expected.items():
        m, rows = cli.run_bench(model, proc, bench, root, batch_size=4, progress=False)
        assert m["accuracy"] == pytest.approx(acc), bench
        assert all(r["prediction"] != "UNMATCHED" for r in rows)
    assert all(c["logits_processor"] is None and c["max_new_tokens"] == 20 for c in fake.calls)


def test_iconvqa_ranking_plumbing(tmp_path, mp, monkeypatch):
    root = iconvqa_root(tmp_path)
    fake = lambda model, proc, items, bs, progress=True: [[0.5, 1.0], [3.0, 2.0, 1.0], [0.1, 0.2]]  # noqa: E731
    monkeypatch.setattr(cli, "choice_losses", fake)
    m, rows = cli.run_bench(*mp, "iconvqa", root, progress=False)
    assert m["accuracy"] == pytest.approx(200 / 3) and [r["correct"] for r in rows] == [True, True, False]


def test_detection_grounding_caption_benches(tmp_path, mp, monkeypatch):
    root = tmp_path / "boxes"
    write_synthetic(root / "detection", n=4, seed=3)
    write_synthetic(root / "grounding", n=4, seed=3)
    det = json.loads((root / "detection" / "phrase_to_object.json").read_text())
    gro = json.loads((root / "grounding" / "grounded_caption.json").read_text())
    answers = {(str(root / "detection" / r["image"]), f"[detection] {r['phrase']}"):
               f"<p>{r['phrase']}</p> {r['bbox']}" for r in det}
    answers.update({(str(root / "grounding" / r["image"]), benches.GROUNDING_PROMPT): r["grounded_caption"]
                    for r in gro})
    patch_generate(monkeypatch, FakeGenerate(answers))
    m, rows = cli.run_bench(*mp, "detection", root, progress=False)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["parse_failures"] == 0 and m["AP50"] == pytest.approx(1)
    m, rows = cli.run_bench(*mp, "grounding", root, progress=False)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and rows[0]["gt_boxes"] == rows[0]["pred_boxes"]
    # half the detection answers empty: recall counts boxes, parse failures count answers
    half = {k: v for j, (k, v) in enumerate(answers.items()) if j % 2 == 0}
    patch_generate(monkeypatch, FakeGenerate(half, default="nothing"))
    items = benches.load_bench(root, "detection")
    m, _ = cli.run_bench(*mp, "detection", root, progress=False)
    n_gt_kept = sum(len(it.gt["boxes"]) for j, it in enumerate(items) if j % 2 == 0)
    assert m["recall"] == pytest.approx(n_gt_kept / m["n_gt"]) and m["precision"] == 1.0
    assert m["parse_failures"] == len(items) // 2

    caps = json.loads((root / "detection" / "coco_caption.json").read_text())
    (root / "coco_caption").mkdir()
    (root / "coco_caption" / "coco_karpathy_test.json").write_text(json.dumps(
        [{"image": c["image"], "caption": [c["caption"], c["caption"] + " here"]} for c in caps]))
    for c in caps:
        img_file(root / "coco" / c["image"])
    by_image = {(str(root / "coco" / c["image"]), benches.CAPTION_PROMPT): c["caption"] for c in caps}
    patch_generate(monkeypatch, FakeGenerate(by_image))
    monkeypatch.setattr(shutil, "which", lambda name: None)      # Java-free tokenizer path: fast and offline
    m, rows = cli.run_bench(*mp, "coco_caption", root, progress=False)
    assert m["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and m["total"] == 4


@pytest.mark.parametrize("bench, rel, records, message", [
    ("gqa", "gqa/testdev_balanced.json", [{"image": "g.jpg", "question": "left?"}],
     r"record 0: missing field 'answer'"),
    ("refcoco_val", "refcoco/refcoco_val.json", [{"img_id": "COCO_train2014_000000000001_1", "sents": "cup",
                                                  "bbox": [1, 2, 3, 4], "width": True, "height": 5}],
     r"record 0: field 'width' must be int or float, got bool"),
    ("detection", "detection/phrase_to_object.json", [{"phrase": "cup", "bbox": "{<1><2><3><4>}"}],
     r"record 0: missing field 'image_id' \(or 'image'\)"),
    ("vsr", "vsr/test.jsonl", "{\"image\": \"s.jpg\"}\n{oops}\n", r"line 2: invalid JSON at column 2"),
])
def test_loader_errors_name_the_file_record_and_field(tmp_path, bench, rel, records, message):
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text(records if isinstance(records, str) else json.dumps(records))
    with pytest.raises(MiniGPTv2Error, match=rf"{path.name}: {message}"):
        benches.load_bench(tmp_path, bench)
