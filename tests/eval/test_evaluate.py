"""Evaluation harness: data layouts, prompts, metric plumbing (with a fake `generate`), outputs, CLI, adapters."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, ImageDraw

from helpers import tiny_model
from minigptv2.eval import run as benchrun
from minigptv2.eval import cli as ev
from minigptv2.boxes import format_box, to_grid
from minigptv2.checkpoint import save
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import Result
from minigptv2.synthetic import write_synthetic

REFCOCO = Path(__file__).parents[1] / "fixtures" / "refcoco"


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ev"), seed=2)


@pytest.fixture(scope="module")
def model_dir(mp, tmp_path_factory):
    model, proc = mp
    return save(model, proc.tok.path, tmp_path_factory.mktemp("evm") / "tiny")


class FakeGenerate:
    """Stands in for minigptv2.generate: answers from a table keyed by (image, prompt) or by prompt."""

    def __init__(self, answers, default="no box here"):
        self.answers, self.default, self.calls = answers, default, []

    def __call__(self, model, processor, images, prompts, **kw):
        self.calls.append({"images": list(images), "prompts": list(prompts), **kw})
        out = []
        for im, p in zip(images, prompts):
            text = self.answers.get((str(im), p), self.answers.get(p, self.default))
            out.append(Result(text, []))
        return out


def patch_generate(monkeypatch, fake):
    """Replace the model's generate where the benches call it (evaluate.py and the shared benchrun.py)."""
    monkeypatch.setattr(ev, "generate", fake)
    monkeypatch.setattr(benchrun, "generate", fake)


def _refcoco_root(tmp: Path, files=("refcoco_val",), n=12, images=True) -> Path:
    """ROOT with real annotation records and stand-in images of the records' size (a rectangle per bbox)."""
    root = tmp / "data"
    for name in files:
        dataset = name.rsplit("_", 1)[0]
        recs = json.loads((REFCOCO / f"{name}.json").read_text())[:n]
        (root / dataset).mkdir(parents=True, exist_ok=True)
        (root / dataset / f"{name}.json").write_text(json.dumps(recs))
        if images:
            (root / "coco" / "train2014").mkdir(parents=True, exist_ok=True)
            for r in recs:
                f = root / "coco" / "train2014" / f"{r['img_id'][:27]}.jpg"
                img = Image.open(f) if f.exists() else Image.new("RGB", (r["width"], r["height"]), (235, 235, 235))
                x, y, w, h = r["bbox"]
                ImageDraw.Draw(img).rectangle([x, y, x + w, y + h], outline=(200, 30, 30), width=3)
                img.save(f, format="JPEG")
    return root


def _iou_inclusive(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def test_refcoco_prompts_layout_and_exact_score(tmp_path, mp, monkeypatch):
    import re

    root = _refcoco_root(tmp_path, n=12)
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
    m, rows = ev.run_bench(model, proc, "refcoco_val", root, batch_size=5, progress=False)
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
    root = _refcoco_root(tmp_path, files=("refcoco+_testA",), n=30, images=False)
    with pytest.raises(MiniGPTv2Error, match=r"refcoco\+_testA: \d+ of \d+ image files are missing.*train2014"):
        ev.load_bench(root, "refcoco+_testA")
    with pytest.raises(MiniGPTv2Error, match="annotation file not found"):
        ev.load_bench(root, "refcocog_val")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "refcoco_testB.json").write_text((REFCOCO / "refcoco_testB.json").read_text())
    with pytest.raises(MiniGPTv2Error, match="missing"):
        ev.load_bench(flat, "refcoco_testB", limit=3)       # the flat eval_data layout is found


def test_expand_benches():
    assert ev.expand_benches("refcoco,refcocog_test") == ["refcoco_val", "refcoco_testA", "refcoco_testB",
                                                          "refcocog_test"]
    assert ev.expand_benches("vqa")[:2] == ["okvqa", "gqa"]
    with pytest.raises(MiniGPTv2Error, match="unknown bench"):
        ev.expand_benches("refcoco_train")


def _img(path: Path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 200)).save(path)


def _vqa_root(tmp: Path) -> Path:
    root = tmp / "vqa"
    (root / "okvqa").mkdir(parents=True)
    (root / "okvqa" / "okvqa_test_split.json").write_text(json.dumps(
        [{"image_id": 9, "question": f"q{k}?", "question_id": 100 + k} for k in range(3)]))
    anns = [["dog"] * 10, ["cat"] * 3 + ["lion"] * 7, ["red"] * 10]
    (root / "okvqa" / "mscoco_val2014_annotations_clean.json").write_text(json.dumps(
        {"annotations": [{"question_id": 100 + k, "answers": [{"answer": a} for a in ans]}
                         for k, ans in enumerate(anns)]}))
    _img(root / "coco" / "train2017" / "000000000009.jpg")
    (root / "vizwiz").mkdir()
    (root / "vizwiz" / "val.json").write_text(json.dumps([
        {"image": "v0.jpg", "question": "is it on?", "answers": [{"answer": "yes"}] * 2 + [{"answer": "no"}] * 8},
        {"image": "v1.jpg", "question": "what is it?", "answers": [{"answer": "unanswerable"}] * 10}]))
    _img(root / "vizwiz" / "val" / "v0.jpg")
    _img(root / "vizwiz" / "val" / "v1.jpg")
    (root / "gqa").mkdir()
    (root / "gqa" / "testdev_balanced.json").write_text(json.dumps([
        {"image": "g.jpg", "question": "left?", "answer": "cup"}, {"image": "g.jpg", "question": "right?",
                                                                  "answer": "plate"}]))
    _img(root / "gqa" / "images" / "g.jpg")
    (root / "vsr").mkdir()
    (root / "vsr" / "test.jsonl").write_text("".join(json.dumps({"image": "s.jpg", "caption": f"cap {k}",
                                                                 "label": y}) + "\n"
                                                     for k, y in enumerate([1, 0, 1])))
    _img(root / "vsr" / "images" / "s.jpg")
    (root / "hm").mkdir()
    (root / "hm" / "dev.jsonl").write_text("".join(json.dumps({"id": k, "img": f"img/{k}.png", "text": f"t{k}",
                                                               "label": y}) + "\n" for k, y in enumerate([1, 0])))
    for k in range(2):
        _img(root / "hm" / "img" / f"{k}.png")
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
        m, rows = ev.run_bench(model, proc, bench, root, batch_size=4, progress=False)
        assert m["accuracy"] == pytest.approx(acc), bench
        assert all(r["prediction"] != "UNMATCHED" for r in rows)
    assert all(c["logits_processor"] is None and c["max_new_tokens"] == 20 for c in fake.calls)


def _iconvqa_root(tmp: Path) -> Path:
    root = tmp / "icon"
    recs = [{"image_id": 11, "question": "which shape?", "choices": ["circle", "square"], "answer": 0},
            {"image_id": 12, "question": "how many?", "choices": ["one", "two", "three"], "answer": 2},
            {"image_id": 13, "question": "what color?", "choices": ["red", "blue"], "answer": 1}]
    (root / "iconvqa").mkdir(parents=True)
    (root / "iconvqa" / "choose_text_val.json").write_text(json.dumps(recs))
    for r in recs:
        _img(root / "iconvqa" / "val" / "choose_txt" / str(r["image_id"]) / "image.png")
    return root


def test_iconvqa_ranking_plumbing(tmp_path, mp, monkeypatch):
    root = _iconvqa_root(tmp_path)
    fake = lambda model, proc, items, bs, progress=True: [[0.5, 1.0], [3.0, 2.0, 1.0], [0.1, 0.2]]  # noqa: E731
    monkeypatch.setattr(ev, "choice_losses", fake)
    m, rows = ev.run_bench(*mp, "iconvqa", root, progress=False)
    assert m["accuracy"] == pytest.approx(200 / 3) and [r["correct"] for r in rows] == [True, True, False]


def test_iconvqa_loss_is_official_padded_mean(tmp_path, mp):
    import torch

    model, proc = mp
    root = _iconvqa_root(tmp_path)
    items = ev.load_bench(root, "iconvqa")
    losses = ev.choice_losses(model, proc, items, batch_size=2, progress=False)
    assert [len(x) for x in losses] == [2, 3, 2] and all(0 < v < 9999 for x in losses for v in x)
    assert items[0].prompt == "[vqa] Based on the image, respond to this question with a short answer: which shape?"
    # one question alone: the divisor is its own length - 1, so loss = HF token-mean loss * n_answer / (L - 1)
    [single] = ev.choice_losses(model, proc, items[:1], batch_size=1, progress=False)
    tok = proc.tok
    p = proc.prompt_ids([items[0].prompt])
    a = tok.encode("circle") + [tok.eos_id]
    batch = proc.collate([{"input_ids": p + a, "labels": [-100] * len(p) + a,
                           "pixel_values": proc.image(Image.open(items[0].image).convert("RGB"))}])
    with torch.no_grad():
        hf = model(**batch).loss.item()
    assert single[0] == pytest.approx(hf * len(a) / (len(p) + len(a) - 1), rel=1e-4)


def test_detection_grounding_caption_benches(tmp_path, mp, monkeypatch):
    root = tmp_path / "boxes"
    write_synthetic(root / "detection", n=4, seed=3)
    write_synthetic(root / "grounding", n=4, seed=3)
    det = json.loads((root / "detection" / "phrase_to_object.json").read_text())
    gro = json.loads((root / "grounding" / "grounded_caption.json").read_text())
    answers = {(str(root / "detection" / r["image"]), f"[detection] {r['phrase']}"):
               f"<p>{r['phrase']}</p> {r['bbox']}" for r in det}
    answers.update({(str(root / "grounding" / r["image"]), ev.GROUNDING_PROMPT): r["grounded_caption"] for r in gro})
    patch_generate(monkeypatch, FakeGenerate(answers))
    m, rows = ev.run_bench(*mp, "detection", root, progress=False)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["parse_failures"] == 0 and m["AP50"] == pytest.approx(1)
    m, rows = ev.run_bench(*mp, "grounding", root, progress=False)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and rows[0]["gt_boxes"] == rows[0]["pred_boxes"]
    # half the detection answers empty: recall counts boxes, parse failures count answers
    half = {k: v for j, (k, v) in enumerate(answers.items()) if j % 2 == 0}
    patch_generate(monkeypatch, FakeGenerate(half, default="nothing"))
    items = ev.load_bench(root, "detection")
    m, _ = ev.run_bench(*mp, "detection", root, progress=False)
    n_gt_kept = sum(len(it.gt["boxes"]) for j, it in enumerate(items) if j % 2 == 0)
    assert m["recall"] == pytest.approx(n_gt_kept / m["n_gt"]) and m["precision"] == 1.0
    assert m["parse_failures"] == len(items) // 2

    caps = json.loads((root / "detection" / "coco_caption.json").read_text())
    (root / "coco_caption").mkdir()
    (root / "coco_caption" / "coco_karpathy_test.json").write_text(json.dumps(
        [{"image": c["image"], "caption": [c["caption"], c["caption"] + " here"]} for c in caps]))
    for c in caps:
        _img(root / "coco" / c["image"])
    by_image = {(str(root / "coco" / c["image"]), ev.CAPTION_PROMPT): c["caption"] for c in caps}
    patch_generate(monkeypatch, FakeGenerate(by_image))
    monkeypatch.setattr(shutil, "which", lambda name: None)      # Java-free tokenizer path: fast and offline
    m, rows = ev.run_bench(*mp, "coco_caption", root, progress=False)
    assert m["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and m["total"] == 4


def _synthetic_answers(d: Path, wrong_vqa=()):
    """(image path, prompt) -> ground-truth answer, straight from the synthetic files."""
    ans = {}
    for r in json.loads((d / "refcoco.json").read_text()):
        x, y, w, h = r["bbox"]
        grid = to_grid((x, y, x + w, y + h), r["width"], r["height"])
        ans[(str(d / r["image"]), f"[refer] give me the location of {r['sents']}")] = format_box(grid)
        ans[(str(d / r["image"]), f"[identify] what object is in this location {format_box(grid)}")] = r["sents"]
    for r in json.loads((d / "phrase_to_object.json").read_text()):
        ans[(str(d / r["image"]), f"[detection] {r['phrase']}")] = f"<p>{r['phrase']}</p> {r['bbox']}"
    for r in json.loads((d / "vqa.json").read_text()):
        key = (str(d / r["image"]), ev.VQA_PROMPT.format(r["question"]))
        ans[key] = "wrong" if r["question_id"] in wrong_vqa else r["answer"][0]
    for r in json.loads((d / "coco_caption.json").read_text()):
        ans[(str(d / r["image"]), "[caption] Briefly describe this image.")] = r["caption"]
    for r in json.loads((d / "grounded_caption.json").read_text()):
        ans[(str(d / r["image"]), "[grounding] please describe this image in details")] = r["grounded_caption"]
    return ans


def test_synthetic_benchmark_exact_scores(tmp_path, mp, monkeypatch):
    d = write_synthetic(tmp_path / "synth", n=6, seed=11)
    vqa = json.loads((d / "vqa.json").read_text())
    wrong = {r["question_id"] for r in vqa[::4]}
    patch_generate(monkeypatch, FakeGenerate(_synthetic_answers(d, wrong)))
    s = ev.synthetic_benchmark(*mp, d, batch_size=8, progress=False)
    assert s["refer_acc"] == 1.0 and s["identify_em"] == 1.0 and s["caption_em"] == 1.0
    assert s["detection_recall"] == 1.0 and s["detection_precision"] == 1.0 and s["grounding_recall"] == 1.0
    assert s["vqa_em"] == pytest.approx(1 - len(wrong) / len(vqa))
    assert s["refer_parse_failure_rate"] == 0.0 and s["n"]["caption"] == 6 and s["n"]["vqa"] == len(vqa)
    assert s["passed"]["refer_acc"] and s["passed"]["vqa_em"] == (s["vqa_em"] >= 0.9)
    assert s["refer_names_differ"] == 1.0           # each object of a multi-object scene got its own box
    scenes = [json.loads(line) for line in (d / "scenes.jsonl").read_text().splitlines()]
    n_obj = {str(d / x["image"]): len(x["objects"]) for x in scenes}      # 1, 2 and 3 objects in this set
    by = s["by_objects"]
    assert set(by["refer_acc"]) == set(n_obj.values()) and set(by["refer_acc"].values()) == {1.0}
    for k in set(n_obj.values()):                   # the wrong VQA answers, counted per object count
        qs = [r for r in vqa if n_obj[str(d / r["image"])] == k]
        assert by["vqa_em"][k] == pytest.approx(1 - sum(r["question_id"] in wrong for r in qs) / len(qs))
    patch_generate(monkeypatch, FakeGenerate({}, default="{<10><10><60><60>}"))
    assert ev.synthetic_benchmark(*mp, d, progress=False)["refer_names_differ"] == 0.0   # one box whatever the name
    patch_generate(monkeypatch, FakeGenerate(_synthetic_answers(d, wrong)))
    limited = ev.synthetic_benchmark(*mp, d, limit=2, progress=False)
    assert limited["n"]["caption"] == 2


def test_cli_end_to_end_with_tiny_model(tmp_path, model_dir):
    from minigptv2.cli import main as cli_main

    root = _refcoco_root(tmp_path, files=("refcoco_val", "refcocog_test"), n=3)
    out = tmp_path / "out"
    rc = cli_main(["eval", "--model", str(model_dir), "--bench", "refcoco_val,refcocog_test", "--data", str(root),
                   "--out", str(out), "--limit", "3", "--batch-size", "3", "--compare-constrained", "--quiet",
                   "--max-new-tokens", "14"])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    for b in ("refcoco_val", "refcocog_test"):
        m = summary["benches"][b]
        assert m["total"] == 3 and m["parse_failures"] == 0          # constrained: every answer is a box
        assert "unconstrained" in m and 0 <= m["unconstrained"]["parse_failure_rate"] <= 1
        lines = (out / "predictions" / f"{b}.jsonl").read_text().splitlines()
        assert len(lines) == 3 and "prediction_unconstrained" in json.loads(lines[0])
        assert Image.open(out / "examples" / f"{b}.png").size[0] > 0
    report = (out / "report.md").read_text()
    assert "88.69" in report and "paper†" in report and "unverified" in report and "refcocog_test" in report


def test_cli_synthetic_without_data_writes_heldout_set(tmp_path, model_dir, monkeypatch):
    out = tmp_path / "o"
    patch_generate(monkeypatch, FakeGenerate({}, default="{<10><10><60><60>}"))   # wiring only: fast
    assert ev.main(["--model", str(model_dir), "--bench", "synthetic", "--out", str(out), "--limit", "2",
                    "--quiet", "--examples", "2", "--max-new-tokens", "14"]) == 0
    assert len((out / "synthetic_data" / "scenes.jsonl").read_text().splitlines()) == 2
    m = json.loads((out / "metrics.json").read_text())["benches"]["synthetic"]
    assert {"refer_acc", "detection_recall", "vqa_em", "identify_em", "caption_em", "grounding_recall"} <= set(m)
    assert m["refer_parse_failure_rate"] == 0.0
    assert "Synthetic benchmark" in (out / "report.md").read_text()
    with pytest.raises(MiniGPTv2Error, match="--data ROOT is required"):
        ev.main(["--bench", "refcoco_val", "--out", str(out)])


def test_adapter_call_shapes(tmp_path, mp, monkeypatch):
    img = tmp_path / "a.png"
    _img(img)
    fake = FakeGenerate({"[refer] give me the location of the man on the left": "{<10><20><35><40>}",
                         "[vqa] Based on the image, respond to this question with a short answer: what is it?": "a cat"})
    patch_generate(monkeypatch, fake)
    a = ev.MiniGPTv2ForEval(model=mp[0], processor=mp[1])
    # VLMEvalKit
    msg = [{"type": "image", "value": str(img)},
           {"type": "text", "value": "Please provide the bounding box coordinate of the region this sentence "
                                     "describes: the man on the left"}]
    assert a.generate_inner(msg, dataset="RefCOCO_testA") == "[0.10, 0.20, 0.35, 0.40]"
    assert a.generate_inner([msg[0], {"type": "text", "value": "what is it?"}], dataset="GQA") == "a cat"
    assert fake.calls[0]["constrain_boxes"] is True      # generate() constrains the [refer] rows only
    # lmms-eval
    a.task_dict = {"refcoco_bbox_rec_val": {"val": {0: {"img": img}}}, "gqa": {"testdev": {5: {"img": img}}}}
    reqs = [SimpleNamespace(args=("... describes: the man on the left", {"max_new_tokens": 16},
                                  lambda doc: [Image.open(doc["img"])], 0, "refcoco_bbox_rec_val", "val")),
            SimpleNamespace(args=("what is it?", {}, lambda doc: [Image.open(doc["img"])], 5, "gqa", "testdev"))]
    assert a.generate_until(reqs) == ["[0.10, 0.20, 0.35, 0.40]", "a cat"]
    assert a.ground([str(img)], ["the man on the left"]) == [[0.10, 0.20, 0.35, 0.40]]
    assert [a.is_grounding(n) for n in ("refcoco_bbox_rec_val", "RefCOCO_testA", "refcoco_bbox_val", "gqa")] == \
        [True, True, False, False]


def test_iconvqa_choices_are_joined_and_split_on_underscores_as_officially(tmp_path, mp):
    """A choice containing "_" becomes several candidates (shifting later indices); no choices make one empty
    candidate (docs/evaluation-semantics.md §3)."""
    model, proc = mp
    img = tmp_path / "i.png"
    Image.new("RGB", (20, 20), "red").save(img)
    items = [ev.Item("a", str(img), "[vqa] which?", "vqa", {"choices": ["red_circle", "blue"], "answer": 1}),
             ev.Item("b", str(img), "[vqa] which?", "vqa", {"choices": [], "answer": 0})]
    losses = ev.choice_losses(model, proc, items, batch_size=2, progress=False)
    assert [len(x) for x in losses] == [3, 1]
