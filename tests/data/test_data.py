"""Dataset readers (minigptv2.data.datasets) on small hand-written files: templates, blip_caption, sampling, errors."""
import json
import os
import pickle
import random
from collections import Counter
from pathlib import Path

import pytest

from minigptv2.data.datasets import (Sample, blip_caption, load_mixture, open_dataset)
from minigptv2.prompts import CAPTION_TEMPLATES, GROUNDING_TEMPLATES, IDENTIFY_TEMPLATES, REFER_TEMPLATES, VQA_TEMPLATES
from minigptv2.errors import MiniGPTv2Error

REPO_REFCOCO = Path(__file__).parents[1] / "fixtures" / "refcoco" / "refcoco_val.json"   # first 200 records of the real file


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def samples(ds, i=0, n=60):
    return [ds.sample(i, random.Random(seed)) for seed in range(n)]


def filled(templates, value):
    return {t.format(value) for t in templates}


# ---- blip_caption -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("A Man (left) holds a cup.", "a man left holds a cup"),
    ('Hi! "quoted" *star* #tag: x; y~z', "hi quoted star tag x y z"),
    ("  lots    of   spaces  ", "lots of spaces"),
    ("keeps, commas? and 'quotes' - dashes/slashes", "keeps, commas? and 'quotes' - dashes/slashes"),
    ("line one\n", "line one"),
    ("a\tb", "a\tb"),                       # a single tab is not a run of 2+: kept, as in the original
    ("a\t\tb", "a b"),
    ("", ""),
])
def test_blip_caption(text, expected):
    assert blip_caption(text) == expected


def test_blip_caption_truncates_to_max_words():
    text = " ".join(f"w{i}" for i in range(60))
    assert blip_caption(text).split(" ") == [f"w{i}" for i in range(50)]
    assert blip_caption(text, max_words=3) == "w0 w1 w2"


# ---- captions ---------------------------------------------------------------------------------------------
def test_coco_caption(tmp_path):
    f = write(tmp_path / "cap.json", [{"image": "val2014/a.jpg", "caption": "A Dog, Running!  On (grass)."}])
    ds = open_dataset("coco_caption", f)
    assert len(ds) == 1
    ss = samples(ds)
    for s in ss:
        assert isinstance(s, Sample) and s.task == "caption"
        assert s.image == os.path.join(str(tmp_path), "val2014/a.jpg")
        assert s.source == f"{f}#0"
        [(instr, ans)] = s.turns
        assert instr.startswith("[caption] ") and instr[len("[caption] "):] in CAPTION_TEMPLATES
        assert ans == "a dog, running on grass"
    assert len({s.turns[0][0] for s in ss}) > 5                      # the template is drawn at random
    assert ds.sample(0, random.Random(7)) == ds.sample(0, random.Random(7))   # ... reproducibly
    ds2 = open_dataset("coco_caption", f, image_root="/data/coco")
    assert ds2.sample(0, random.Random(0)).image == "/data/coco/val2014/a.jpg"


# ---- RefCOCO ----------------------------------------------------------------------------------------------
REF = {"img_id": "COCO_train2014_000000580957_4", "sents": "Bowl, Behind (the) others",
       "bbox": [468.3, 0.91, 171.7, 116.12], "height": 428, "width": 640}
REF_BOX = "{<73><0><100><27>}"   # int(468.3/640*100), int(.91/428*100), int(640/640*100), int(117.03/428*100)


def test_refcoco_eval_json(tmp_path):
    f = write(tmp_path / "refcoco_val.json", [REF])
    ds = open_dataset("refcoco", f, image_root="/coco")
    ss = samples(ds)
    for s in ss:
        assert s.task == "refer" and s.image == "/coco/COCO_train2014_000000580957.jpg"
        [(instr, ans)] = s.turns
        assert instr in filled(REFER_TEMPLATES, "bowl, behind the others")
        assert ans == REF_BOX
    assert len({s.turns[0][0] for s in ss}) == len(REFER_TEMPLATES)


def test_invrefcoco_eval_json(tmp_path):
    f = write(tmp_path / "refcoco_val.json", [REF, dict(REF, sents=["First ONE.", "second one"])])
    ds = open_dataset("invrefcoco", f)
    ss = samples(ds, 0)
    for s in ss:
        assert s.task == "identify"
        [(instr, ans)] = s.turns
        assert instr in filled(IDENTIFY_TEMPLATES, REF_BOX)
        assert ans == "bowl, behind the others"
    assert {s.turns[0][1] for s in samples(ds, 1)} == {"first one", "second one"}   # a sentence list: one at random


def test_refcoco_official_eval_file():
    ds = open_dataset("refcoco", REPO_REFCOCO, image_root="/coco")
    assert len(ds) == 200
    s = ds.sample(0, random.Random(0))
    assert s.image == "/coco/COCO_train2014_000000580957.jpg"
    assert s.turns[0][1] == REF_BOX


def refer_api_files(tmp_path: Path) -> Path:
    d = tmp_path / "refcoco"
    d.mkdir()
    refs = [
        {"ref_id": 0, "ann_id": 10, "image_id": 580957, "split": "train", "category_id": 1,
         "sentences": [{"raw": "The Bowl.", "sent": "the bowl"}, {"raw": "white dish", "sent": "white dish"}]},
        {"ref_id": 1, "ann_id": 11, "image_id": 7, "split": "val", "sentences": [{"raw": "val only"}]},
        {"ref_id": 2, "ann_id": 11, "image_id": 7, "split": "train", "sentences": [{"raw": "Man (left)"}]},
    ]
    with open(d / "refs(unc).p", "wb") as fp:
        pickle.dump(refs, fp, protocol=2)
    write(d / "instances.json", {
        "images": [{"id": 580957, "width": 640, "height": 428, "file_name": "x.jpg"},
                   {"id": 7, "width": 200, "height": 100}],
        "annotations": [{"id": 10, "bbox": REF["bbox"], "image_id": 580957},
                        {"id": 11, "bbox": [10, 20, 30, 40], "image_id": 7}],
    })
    return d / "refs(unc).p"


def test_refcoco_refer_api(tmp_path):
    p = refer_api_files(tmp_path)
    ds = open_dataset("refcoco", p, image_root="/coco/train2014")
    assert len(ds) == 2                                                   # train split only
    ss = samples(ds, 0)
    assert {s.image for s in ss} == {"/coco/train2014/COCO_train2014_000000580957.jpg"}
    assert {s.turns[0][1] for s in ss} == {REF_BOX}
    assert {s.turns[0][0] for s in ss} <= filled(REFER_TEMPLATES, "the bowl") | filled(REFER_TEMPLATES, "white dish")
    assert any("the bowl" in s.turns[0][0] for s in ss) and any("white dish" in s.turns[0][0] for s in ss)
    s = ds.sample(1, random.Random(0))
    assert s.turns[0][1] == "{<5><20><20><60>}" and s.source == f"{p}#2"
    inv = open_dataset("invrefcoco", p)
    assert inv.sample(1, random.Random(0)).turns[0][1] == "man left"


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_refer_pickle_with_code_is_refused(tmp_path):
    p = refer_api_files(tmp_path)
    marker = tmp_path / "pwned"
    with open(p, "wb") as fp:
        pickle.dump([{"split": "train", "evil": Evil(str(marker))}], fp)
    real = tmp_path / "payload-works"
    pickle.loads(pickle.dumps(Evil(str(real))))                      # an ordinary unpickler really runs it
    assert real.is_dir()
    with pytest.raises(MiniGPTv2Error, match=r"refs\(unc\)\.p.*refusing to load global"):
        open_dataset("refcoco", p)
    assert not marker.exists()
    with open(p, "wb") as fp:                                        # any global is refused, even harmless ones
        pickle.dump([{"split": "train", "x": Counter()}], fp)
    with pytest.raises(MiniGPTv2Error, match="refusing"):
        open_dataset("refcoco", p)
    p.write_bytes(pickle.dumps([1, 2, 3])[:-3])                       # truncated
    with pytest.raises(MiniGPTv2Error, match=r"refs\(unc\)\.p"):
        open_dataset("refcoco", p)


def test_refer_api_bad_records(tmp_path):
    p = refer_api_files(tmp_path)
    with open(p, "wb") as fp:
        pickle.dump([{"ref_id": 0, "ann_id": 99, "image_id": 580957, "split": "train",
                      "sentences": [{"raw": "x"}]}], fp)
    with pytest.raises(MiniGPTv2Error, match=r"refs\(unc\)\.p: record 0: ann_id 99"):
        open_dataset("refcoco", p)
    (p.parent / "instances.json").unlink()
    with pytest.raises(MiniGPTv2Error, match="instances.json"):
        open_dataset("refcoco", p)


# ---- VQA --------------------------------------------------------------------------------------------------
def test_vqa_frequency_weighted_answers(tmp_path):
    f = write(tmp_path / "vqa.json", [{"image": "a.jpg", "question": "What Color is THIS?",
                                      "answer": ["Red."] * 8 + ["blue"] * 2}])
    ds = open_dataset("vqa", f)
    ss = samples(ds, n=2000)
    answers = Counter(s.turns[0][1] for s in ss)
    assert set(answers) == {"red", "blue"}                           # answers are blip_caption'ed
    assert 0.75 < answers["red"] / 2000 < 0.85
    assert {s.turns[0][0] for s in ss} == filled(VQA_TEMPLATES, "what color is this?")
    assert all(s.task == "vqa" for s in ss)


def test_aokvqa_and_gqa(tmp_path):
    a = write(tmp_path / "aok.json", [{"image": "a.jpg", "question": "Why?", "direct_answers": ["Rain"] * 10}])
    assert open_dataset("aokvqa", a).sample(0, random.Random(0)).turns[0][1] == "rain"
    g = write(tmp_path / "gqa.json", [{"image": "b.jpg", "question": "Is it ON?", "answer": "Yes"}])
    s = open_dataset("gqa", g).sample(0, random.Random(0))
    assert s.turns[0] in {(t.format("is it on?"), "yes") for t in VQA_TEMPLATES}
    g2 = write(tmp_path / "gqa2.json", [{"image": "b.jpg", "question": "q", "answer": ["yes"]}])
    with pytest.raises(MiniGPTv2Error, match=r"gqa2.json: record 0: field 'answer' must be str"):
        open_dataset("gqa", g2)


# ---- Flickr ----------------------------------------------------------------------------------------------
def test_flickr_grounded_caption_is_verbatim(tmp_path):
    cap = "<p>A Man</p> {<1><2><3><4>} walks. (Really!)"
    f = write(tmp_path / "g.json", [{"image_id": 1234, "grounded_caption": cap}])
    ss = samples(open_dataset("flickr_grounded_caption", f, image_root="/flickr"))
    assert {s.turns[0][0] for s in ss} == set(GROUNDING_TEMPLATES)
    assert {s.turns[0][1] for s in ss} == {cap} and {s.image for s in ss} == {"/flickr/1234.jpg"}
    assert ss[0].task == "grounding"


def test_flickr_detection_kinds(tmp_path):
    out = "<p>Man</p> {<1><2><3><4>}<p>dog</p> {<5><6><7><8>}"
    f = write(tmp_path / "c2p.json", [{"image_id": "9", "caption": "A Man. With a dog!", "output": out}])
    s = open_dataset("flickr_caption_to_phrase", f).sample(0, random.Random(0))
    assert s.turns == [("[detection] A Man. With a dog!", out)] and s.task == "detection"
    f = write(tmp_path / "p2o.json",
              [{"image": "x/y.png", "phrase": "Two Dogs", "bbox": "{<1><2><3><4>}<delim>{<5><6><7><8>}"}])
    s = open_dataset("flickr_phrase_to_object", f).sample(0, random.Random(0))
    assert s.turns == [("[detection] Two Dogs", "<p>Two Dogs</p> {<1><2><3><4>}<delim>{<5><6><7><8>}")]
    assert s.image == os.path.join(str(tmp_path), "x/y.png")
    f = write(tmp_path / "bad.json", [{"image_id": 1, "phrase": "x", "bbox": "nowhere"}])
    with pytest.raises(MiniGPTv2Error, match=r"bad.json: record 0: field 'bbox'"):
        open_dataset("flickr_phrase_to_object", f)


# ---- LLaVA ------------------------------------------------------------------------------------------------
CONV = [{"from": "human", "value": "<image>\nWhat is This?"}, {"from": "gpt", "value": "A Cat. (Sleeping)"},
        {"from": "human", "value": "And the COLOR?"}, {"from": "gpt", "value": "Black."}]


def test_llava_conversation(tmp_path):
    f = write(tmp_path / "conv.json", [{"id": "000000215677", "conversations": CONV},
                                       {"id": "1", "image": "own.jpg", "conversations": CONV[:2]}])
    ds = open_dataset("llava_conversation", f, image_root="/coco")
    s = ds.sample(0, random.Random(0))
    assert s.image == "/coco/COCO_train2014_000000215677.jpg" and s.task == "chat"
    assert s.turns == [("What is This?", "A Cat. (Sleeping)"), ("And the COLOR?", "Black.")]
    assert ds.sample(1, random.Random(0)).image == "/coco/own.jpg"


@pytest.mark.parametrize("kind", ["llava_detail", "llava_reason"])
def test_llava_detail_reason(tmp_path, kind):
    conv = [{"from": "human", "value": "Describe the Image.\n<image>"}, {"from": "gpt", "value": "It Shows (a) cat."}]
    f = write(tmp_path / "d.json", [{"id": "5", "conversations": conv + CONV[2:]}])
    s = open_dataset(kind, f).sample(0, random.Random(0))
    assert s.turns == [("describe the image", "It Shows (a) cat.")]   # instruction processed, answer verbatim


def test_llava_bad_roles(tmp_path):
    f = write(tmp_path / "c.json", [{"id": "1", "conversations": CONV[:1]}])
    with pytest.raises(MiniGPTv2Error, match=r"c.json: record 0: 'conversations'"):
        open_dataset("llava_conversation", f)
    f = write(tmp_path / "c.json", [{"id": "1", "conversations": [CONV[1], CONV[0]]}])
    with pytest.raises(MiniGPTv2Error, match=r"record 0: conversations\[0\] is from 'gpt'"):
        open_dataset("llava_conversation", f)


# ---- text only / jsonl ------------------------------------------------------------------------------------
def test_unnatural_instruction(tmp_path):
    f = write(tmp_path / "u.json", [
        {"instances": [{"instruction_with_input": "Sort: B, A.", "constraints": "Use (commas)!", "output": "A, B."}]},
        {"instances": [{"instruction_with_input": "Say Hi", "constraints": None, "output": "HI"}]}])
    ds = open_dataset("unnatural_instruction", f)
    s = ds.sample(0, random.Random(0))
    assert s.image is None and s.task == "text"
    assert s.turns == [("sort b, a use commas", "a, b")]
    assert ds.sample(1, random.Random(0)).turns == [("say hi", "hi")]


def test_jsonl(tmp_path):
    lines = [{"image": "img/a.png", "task": "refer", "turns": [["[refer] red circle", "{<1><2><3><4>}"]]},
             {"image": "/abs/b.png", "task": "chat", "turns": [["Hi There.", "Hello."], ["more?", "no"]]},
             {"image": None, "task": "text", "turns": [["2+2?", "4"]]}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    ds = open_dataset("jsonl", f)
    assert len(ds) == 3
    a, b, c = (ds.sample(i, random.Random(0)) for i in range(3))
    assert a.image == os.path.join(str(tmp_path), "img/a.png") and a.task == "refer"
    assert b.image == "/abs/b.png" and b.turns == [("Hi There.", "Hello."), ("more?", "no")]   # verbatim
    assert c.image is None and c.task == "text" and c.source == f"{f}#2"


@pytest.mark.parametrize("line, msg", [
    ('{"image": "a.png", "task": "refer"', "line 2: invalid JSON"),
    ('{"image": "a.png", "task": "nope", "turns": [["a", "b"]]}', "line 2: field 'task'"),
    ('{"image": null, "task": "refer", "turns": [["a", "b"]]}', "line 2: task 'refer' needs an 'image'"),
    ('{"image": "a.png", "task": "text", "turns": [["a", "b"]]}', "line 2: task 'text'"),
    ('{"image": "a.png", "task": "vqa", "turns": [["a"]]}', "line 2: field 'turns'"),
    ('{"image": "a.png", "turns": [["a", "b"]]}', "line 2: missing field 'task'"),
    ('[1, 2]', "line 2: expected a JSON object"),
])
def test_jsonl_errors(tmp_path, line, msg):
    f = tmp_path / "d.jsonl"
    f.write_text('{"image": "a.png", "task": "vqa", "turns": [["q", "a"]]}\n' + line + "\n")
    with pytest.raises(MiniGPTv2Error, match=f"d.jsonl: {msg}"):
        open_dataset("jsonl", f)


# ---- errors common to the JSON readers --------------------------------------------------------------------
GOOD = {
    "coco_caption": {"image": "a.jpg", "caption": "c"},
    "refcoco": REF,
    "vqa": {"image": "a.jpg", "question": "q", "answer": ["a"]},
    "aokvqa": {"image": "a.jpg", "question": "q", "direct_answers": ["a"]},
    "gqa": {"image": "a.jpg", "question": "q", "answer": "a"},
    "flickr_grounded_caption": {"image_id": 1, "grounded_caption": "g"},
    "flickr_caption_to_phrase": {"image_id": 1, "caption": "c", "output": "o"},
    "flickr_phrase_to_object": {"image_id": 1, "phrase": "p", "bbox": "{<1><2><3><4>}"},
    "llava_conversation": {"id": "1", "conversations": CONV},
    "unnatural_instruction": {"instances": [{"instruction_with_input": "i", "constraints": None, "output": "o"}]},
}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_missing_field_and_wrong_type_name_file_record_field(tmp_path, kind):
    good = GOOD[kind]
    assert len(open_dataset(kind, write(tmp_path / "ok.json", [good, good]))) == 2
    key = next(k for k in good if k not in ("image_id", "id", "constraints"))
    broken = {k: v for k, v in good.items() if k != key}
    f = write(tmp_path / "ann.json", [good, broken])
    with pytest.raises(MiniGPTv2Error, match=rf"ann.json: record 1: missing field '{key}'"):
        open_dataset(kind, f)
    f = write(tmp_path / "ann.json", [good, dict(good, **{key: 12345})])
    with pytest.raises(MiniGPTv2Error, match=rf"ann.json: record 1: .*'{key}'"):
        open_dataset(kind, f)
    with pytest.raises(MiniGPTv2Error, match=r"ann.json: record 1: expected a JSON object"):
        open_dataset(kind, write(tmp_path / "ann.json", [good, "oops"]))


@pytest.mark.parametrize("kind", ["coco_caption", "refcoco", "vqa", "llava_detail", "jsonl"])
def test_missing_and_corrupt_files(tmp_path, kind):
    with pytest.raises(MiniGPTv2Error, match=r"not found: .*missing.json"):
        open_dataset(kind, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image": "a.jpg",\n "caption": }]')
    with pytest.raises(MiniGPTv2Error, match=r"bad.json: .*invalid JSON"):
        open_dataset(kind, bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MiniGPTv2Error, match="bad.json"):
        open_dataset(kind, bad)


def test_not_a_list(tmp_path):
    with pytest.raises(MiniGPTv2Error, match=r"x.json: expected a JSON list"):
        open_dataset("vqa", write(tmp_path / "x.json", {"annotations": []}))


def test_unknown_kind():
    with pytest.raises(MiniGPTv2Error, match="unknown dataset kind 'coco'.*coco_caption"):
        open_dataset("coco", "x.json")


# ---- mixture ----------------------------------------------------------------------------------------------
def test_load_mixture(tmp_path):
    (tmp_path / "ann").mkdir()
    write(tmp_path / "ann" / "cap.json", [GOOD["coco_caption"]])
    write(tmp_path / "ann" / "vqa.json", [GOOD["vqa"]] * 3)
    m = write(tmp_path / "mixture.json", [
        {"kind": "coco_caption", "path": "ann/cap.json", "image_root": "imgs", "ratio": 10},
        {"kind": "vqa", "path": "ann/vqa.json", "ratio": 2.5}])
    (cap, r1), (vqa, r2) = load_mixture(m)
    assert (r1, r2) == (10.0, 2.5) and len(cap) == 1 and len(vqa) == 3
    assert cap.sample(0, random.Random(0)).image == os.path.join(str(tmp_path), "imgs", "a.jpg")
    assert vqa.sample(0, random.Random(0)).image == os.path.join(str(tmp_path), "ann", "a.jpg")


@pytest.mark.parametrize("entry, msg", [
    ({"kind": "vqa", "path": "v.json"}, r"record 1: missing field 'ratio'"),
    ({"kind": "vqa", "path": "v.json", "ratio": -1}, r"entry 1: 'ratio' must be >= 0"),
    ({"kind": "vqa", "path": "v.json", "ratio": "1"}, r"record 1: field 'ratio' must be"),
    ({"kind": "nope", "path": "v.json", "ratio": 1}, r"entry 1: unknown dataset kind 'nope'"),
])
def test_load_mixture_errors(tmp_path, entry, msg):
    write(tmp_path / "v.json", [GOOD["vqa"]])
    m = write(tmp_path / "mixture.json", [{"kind": "vqa", "path": "v.json", "ratio": 1}, entry])
    with pytest.raises(MiniGPTv2Error, match=rf"mixture.json: {msg}"):
        load_mixture(m)
    m = write(tmp_path / "mixture.json", [{"kind": "vqa", "path": "gone.json", "ratio": 1}])
    with pytest.raises(MiniGPTv2Error, match="not found: .*gone.json"):
        load_mixture(m)
