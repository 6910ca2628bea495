"""The synthetic benchmark (minigptv2/eval/synthetic.py) with a stand-in `generate`: exact scores of known answers."""
import json
from pathlib import Path

import pytest

from eval_helpers import FakeGenerate, patch_generate
from helpers import tiny_model
from minigptv2.boxes import format_box, to_grid
from minigptv2.eval import benches, synthetic
from minigptv2.synthetic import write_synthetic


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ev"), seed=2)


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
        key = (str(d / r["image"]), benches.VQA_PROMPT.format(r["question"]))
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
    s = synthetic.synthetic_benchmark(*mp, d, batch_size=8, progress=False)
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
    assert s["refer_same_shape"] == 1.0
    patch_generate(monkeypatch, FakeGenerate({}, default="{<10><10><60><60>}"))
    one_box = synthetic.synthetic_benchmark(*mp, d, progress=False)
    assert one_box["refer_names_differ"] == 0.0     # one box whatever the name
    patch_generate(monkeypatch, FakeGenerate(_synthetic_answers(d, wrong)))
    limited = synthetic.synthetic_benchmark(*mp, d, limit=2, progress=False)
    assert limited["n"]["caption"] == 2


def test_refer_same_shape_scores_only_where_the_colour_decides(tmp_path, mp, monkeypatch):
    """A model that finds the shape but not the colour: where another object has the asked shape it answers that
    other object's box, elsewhere the right one. refer_same_shape is then 0, refer_acc the share of the others."""
    d = write_synthetic(tmp_path / "synth", n=12, seed=4)
    scenes = {str(d / x["image"]): x for x in map(json.loads, (d / "scenes.jsonl").read_text().splitlines())}
    ans, twins = _synthetic_answers(d), 0
    for r in json.loads((d / "refcoco.json").read_text()):
        colour, shape = r["sents"].split()
        other = [o for o in scenes[str(d / r["image"])]["objects"] if o["shape"] == shape and o["color"] != colour]
        if other:
            ans[(str(d / r["image"]), f"[refer] give me the location of {r['sents']}")] = format_box(
                to_grid(other[0]["box"], r["width"], r["height"]))
            twins += 1
    refer = json.loads((d / "refcoco.json").read_text())
    assert 0 < twins < len(refer)
    patch_generate(monkeypatch, FakeGenerate(ans))
    s = synthetic.synthetic_benchmark(*mp, d, batch_size=8, progress=False)
    assert s["refer_same_shape"] == 0.0 and s["refer_acc"] == pytest.approx(1 - twins / len(refer))
