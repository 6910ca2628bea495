"""Property-based tests that valid annotation files get through every dataset reader with the right samples.

tests/test_fuzz_text.py throws random and odd content at the readers and checks that only MiniGPTv2Error escapes;
that would also pass if a reader refused everything. Here every generated record is valid for its kind (any
text, any positive size, any finite box, either image field, ...), so the file must open, hold one entry per
record, and each sample must be exactly what the module docstring of minigptv2/data/datasets.py says it is.
"""
import json
import os
import pickle
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigptv2.boxes import format_box, format_boxes, parse_boxes, to_grid
from minigptv2.data.datasets import (TASKS, VISION_TASKS, blip_caption, load_mixture, open_dataset)
from minigptv2.prompts import CAPTION_TEMPLATES, DETECTION_TEMPLATE, GROUNDING_TEMPLATES, IDENTIFY_TEMPLATES, REFER_TEMPLATES, VQA_TEMPLATES

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
PATH = st.text(alphabet="abcxyz_-/.0123456789", min_size=1, max_size=20).filter(lambda p: not p.startswith("/"))
NUM = st.integers(-10_000, 10_000) | st.floats(-1e4, 1e4, allow_nan=False)
SIZE = st.integers(1, 10_000) | st.floats(0.5, 1e4)
GRID_BOX = st.tuples(*[st.integers(0, 100)] * 4)
IMAGE_ID = st.integers(0, 10 ** 12) | st.text(alphabet="0123456789abc", min_size=1, max_size=12)


def settings_(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _image_fields(key: str):
    """Either an explicit "image" path or the kind's id field (the image name is then built from it)."""
    return st.one_of(st.fixed_dictionaries({"image": PATH}), st.fixed_dictionaries({key: IMAGE_ID}))


def _conversation():
    return st.integers(1, 3).flatmap(lambda n: st.lists(TEXT, min_size=2 * n, max_size=2 * n)).map(
        lambda vs: [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(vs)])


def _merge(*parts):
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


REFCOCO = st.fixed_dictionaries({"img_id": TEXT, "sents": TEXT | st.lists(TEXT, min_size=1, max_size=3),
                                 "bbox": st.lists(NUM, min_size=4, max_size=4), "width": SIZE, "height": SIZE},
                                optional={"image": PATH})
RECORDS = {
    "coco_caption": st.fixed_dictionaries({"image": PATH, "caption": TEXT}),
    "refcoco": REFCOCO, "invrefcoco": REFCOCO,
    "vqa": st.fixed_dictionaries({"image": PATH, "question": TEXT,
                                  "answer": TEXT | st.lists(TEXT, min_size=1, max_size=4)}),
    "aokvqa": st.fixed_dictionaries({"image": PATH, "question": TEXT,
                                     "direct_answers": st.lists(TEXT, min_size=1, max_size=4)}),
    "gqa": st.fixed_dictionaries({"image": PATH, "question": TEXT, "answer": TEXT}),
    "flickr_grounded_caption": _merge(_image_fields("image_id"), st.fixed_dictionaries({"grounded_caption": TEXT})),
    "flickr_caption_to_phrase": _merge(_image_fields("image_id"),
                                       st.fixed_dictionaries({"caption": TEXT, "output": TEXT})),
    "flickr_phrase_to_object": _merge(_image_fields("image_id"), st.fixed_dictionaries(
        {"phrase": TEXT, "bbox": st.lists(GRID_BOX, min_size=1, max_size=3).map(format_boxes)})),
    "llava_conversation": _merge(_image_fields("id"), st.fixed_dictionaries({"conversations": _conversation()})),
    "llava_detail": _merge(_image_fields("id"), st.fixed_dictionaries({"conversations": _conversation()})),
    "llava_reason": _merge(_image_fields("id"), st.fixed_dictionaries({"conversations": _conversation()})),
    "unnatural_instruction": st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries(
        {"instruction_with_input": TEXT, "output": TEXT}, optional={"constraints": TEXT}), min_size=1, max_size=2)}),
    "jsonl": st.sampled_from(TASKS).flatmap(lambda task: st.fixed_dictionaries({
        "task": st.just(task), "image": st.none() if task == "text" else PATH if task in VISION_TASKS
        else st.none() | PATH, "turns": st.lists(st.tuples(TEXT, TEXT).map(list), min_size=1, max_size=3)})),
}


def _flickr_image(r):
    return r["image"] if "image" in r else f"{r['image_id']}.jpg"


def _llava_image(r):
    return r["image"] if "image" in r else f"COCO_train2014_{r['id']}.jpg"


def _box(r):
    x, y, w, h = r["bbox"]
    return format_box(to_grid((x, y, x + w, y + h), r["width"], r["height"]))


def _sents(r):
    return [r["sents"]] if isinstance(r["sents"], str) else r["sents"]


def _one_of(templates, values):
    return {t.format(v) for t in templates for v in values}


def expected(kind: str, r: dict):
    """(image path relative to the root or None, a predicate on the sample's turns) for one valid record."""
    if kind == "coco_caption":
        return r["image"], lambda t: len(t) == 1 and t[0][0] in {"[caption] " + c for c in CAPTION_TEMPLATES} \
            and t[0][1] == blip_caption(r["caption"])
    if kind in ("refcoco", "invrefcoco"):
        image = r.get("image", r["img_id"][:27] + ".jpg")
        sents = [blip_caption(s) for s in _sents(r)]
        if kind == "refcoco":
            return image, lambda t: t[0][0] in _one_of(REFER_TEMPLATES, sents) and t[0][1] == _box(r) \
                and len(parse_boxes(t[0][1])) == 1
        return image, lambda t: t[0][0] in _one_of(IDENTIFY_TEMPLATES, [_box(r)]) and \
            t[0][1] in {blip_caption(s) for s in sents}
    if kind in ("vqa", "aokvqa", "gqa"):
        answers = r.get("answer", r.get("direct_answers"))
        answers = [answers] if isinstance(answers, str) else answers
        return r["image"], lambda t: t[0][0] in _one_of(VQA_TEMPLATES, [blip_caption(r["question"])]) and \
            t[0][1] in {blip_caption(a) for a in answers}
    if kind == "flickr_grounded_caption":
        return _flickr_image(r), lambda t: t == [(t[0][0], r["grounded_caption"])] and t[0][0] in GROUNDING_TEMPLATES
    if kind == "flickr_caption_to_phrase":
        return _flickr_image(r), lambda t: t == [(DETECTION_TEMPLATE.format(r["caption"]), r["output"])]
    if kind == "flickr_phrase_to_object":
        return _flickr_image(r), lambda t: t == [(DETECTION_TEMPLATE.format(r["phrase"]),
                                                  f"<p>{r['phrase']}</p> {r['bbox']}")]
    if kind.startswith("llava"):
        v = [c["value"] for c in r["conversations"]]
        first = v[0].replace("<image>", "").replace("\n", "").strip()
        if kind == "llava_conversation":
            want = [(first, v[1])] + [(v[k], v[k + 1]) for k in range(2, len(v), 2)]
        else:
            want = [(blip_caption(first), v[1])]
        return _llava_image(r), lambda t: t == want
    if kind == "unnatural_instruction":
        i = r["instances"][0]
        q = i["instruction_with_input"] + (" " + i["constraints"] if "constraints" in i else "")
        return None, lambda t: t == [(blip_caption(q), blip_caption(i["output"]))]
    if kind == "jsonl":
        return r["image"], lambda t: t == [tuple(x) for x in r["turns"]]
    raise AssertionError(kind)


def _write(d, kind: str, records: list) -> str:
    if kind == "jsonl":
        path = d / "ann.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    else:
        path = d / "ann.json"
        path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def _check(ds, kind: str, records: list, root: str, seed: int) -> None:
    assert len(ds) == len(records)
    for i, r in enumerate(records):
        s = ds.sample(i, random.Random(seed))
        image, ok = expected(kind, r)
        assert s.image == (None if image is None else os.path.join(root, image)), (s.image, image)
        assert ok(s.turns), (kind, r, s.turns)
        task = r["task"] if kind == "jsonl" else {"refcoco": "refer", "invrefcoco": "identify"}.get(kind, s.task)
        assert s.task == task and s.task in TASKS


@pytest.mark.fuzz
@settings_(400)
@given(data=st.data(), kind=st.sampled_from(sorted(RECORDS)), seed=st.integers(0, 99))
def test_valid_records_get_through_every_reader(tmp_path_factory, data, kind, seed):
    records = data.draw(st.lists(RECORDS[kind], min_size=1, max_size=3), "records")
    d = tmp_path_factory.mktemp("valid")
    path = _write(d, kind, records)
    _check(open_dataset(kind, path), kind, records, str(d), seed)


@pytest.mark.fuzz
@settings_(60)
@given(data=st.data(), kinds=st.lists(st.sampled_from(sorted(RECORDS)), min_size=1, max_size=3, unique=True),
       ratio=st.integers(0, 5) | st.floats(0, 5))
def test_valid_mixtures_get_through(tmp_path_factory, data, kinds, ratio):
    d = tmp_path_factory.mktemp("mix")
    entries, recs = [], {}
    for k in kinds:
        (d / k).mkdir()
        recs[k] = data.draw(st.lists(RECORDS[k], min_size=1, max_size=2), k)
        entries.append({"kind": k, "path": os.path.relpath(_write(d / k, k, recs[k]), d), "image_root": "img",
                        "ratio": ratio})
    (d / "mixture.json").write_text(json.dumps(entries))
    parts = load_mixture(d / "mixture.json")
    assert [r for _, r in parts] == [float(ratio)] * len(kinds)
    for (ds, _), k in zip(parts, kinds):
        _check(ds, k, recs[k], str(d / "img"), 0)


@pytest.mark.fuzz
@settings_(80)
@given(data=st.data(), n=st.integers(1, 4), seed=st.integers(0, 99))
def test_valid_refer_api_files_get_through(tmp_path_factory, data, n, seed):
    """REFER-API training files: refs(unc).p (plain-data pickle) + instances.json; only the train split is read."""
    images = [{"id": i, "width": data.draw(SIZE), "height": data.draw(SIZE)} for i in range(n)]
    anns = [{"id": 100 + i, "bbox": data.draw(st.lists(NUM, min_size=4, max_size=4))} for i in range(n)]
    refs = [{"split": data.draw(st.sampled_from(["train", "val"])), "image_id": data.draw(st.integers(0, n - 1)),
             "ann_id": 100 + data.draw(st.integers(0, n - 1)),
             "sentences": data.draw(st.lists(st.fixed_dictionaries({"raw": TEXT}), min_size=1, max_size=2))}
            for _ in range(data.draw(st.integers(1, 5)))]
    d = tmp_path_factory.mktemp("refer")
    (d / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=data.draw(st.sampled_from([2, 4]))))
    (d / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))
    train = [r for r in refs if r["split"] == "train"]
    for kind in ("refcoco", "invrefcoco"):
        ds = open_dataset(kind, d / "refs(unc).p", image_root="/coco")
        records = []
        for r in train:
            im = images[r["image_id"]]
            records.append({"img_id": "", "image": f"COCO_train2014_{r['image_id']:012d}.jpg",
                            "sents": [s["raw"] for s in r["sentences"]], "bbox": anns[r["ann_id"] - 100]["bbox"],
                            "width": im["width"], "height": im["height"]})
        _check(ds, kind, records, "/coco", seed)
