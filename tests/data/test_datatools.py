"""`minigptv2 data`: convert (dataconvert.py), check (datacheck.py), example, tokenizer; the `jsonl` eval bench
(eval_jsonl.py) scoring."""
import json
import os

import pytest
from PIL import Image

from helpers import tiny_model
from minigptv2 import cli
from minigptv2.boxes import to_grid
from minigptv2.data.datasets import load_mixture
from minigptv2.data.check import check_mixture
from minigptv2.data.convert import convert, split
from minigptv2.errors import MiniGPTv2Error


def image(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "white").save(path)
    return path


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def box(b, w, h):
    return "{<%d><%d><%d><%d>}" % to_grid(b, w, h)


@pytest.fixture
def imgs(tmp_path):
    image(tmp_path / "images" / "a.png", (200, 100))
    image(tmp_path / "images" / "b.png", (50, 80))
    return tmp_path / "images"


def coco(tmp_path, annotations, images=None):
    d = {"images": images or [{"id": 1, "file_name": "a.png", "width": 200, "height": 100},
                              {"id": 2, "file_name": "b.png", "width": 50, "height": 80}],
         "annotations": annotations, "categories": [{"id": 7, "name": "dog"}, {"id": 8, "name": "cat"}]}
    f = tmp_path / "instances.json"
    f.write_text(json.dumps(d))
    return f


def leftovers(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- convert ------------------------------------------------------------------------------------------------
def test_coco_to_refer_identify_detection(tmp_path, imgs):
    f = coco(tmp_path, [
        {"image_id": 1, "category_id": 7, "bbox": [120, 10, 40, 50]},
        {"image_id": 1, "category_id": 7, "bbox": [10.5, 20, 30, 30]},      # a second dog: refer would be ambiguous
        {"image_id": 1, "category_id": 8, "bbox": [60, 0, 20, 100]},
        {"image_id": 1, "category_id": 8, "bbox": [0, 0, 200, 100], "iscrowd": 1},
        {"image_id": 2, "category_id": 8, "bbox": [5, 5, 40, 70]}])
    s = convert(f, "coco", tmp_path / "out", images=imgs)
    assert s["skipped"] == {"crowd annotations": 1, "refer records (the category is not alone in its image)": 2}
    recs = lines(tmp_path / "out" / "train.jsonl")
    a = "../images/a.png"
    dogs = box((10.5, 20, 40.5, 50), 200, 100) + "<delim>" + box((120, 10, 160, 60), 200, 100)   # left to right
    assert {"image": a, "task": "detection", "turns": [["[detection] dog", f"<p>dog</p> {dogs}"]]} in recs
    cat = box((60, 0, 80, 100), 200, 100)
    assert {"image": a, "task": "refer", "turns": [["[refer] give me the location of cat", cat]]} in recs
    assert {"image": a, "task": "identify", "turns": [[f"[identify] what object is in this location {cat}", "cat"]]} \
        in recs
    assert sum(r["task"] == "refer" for r in recs) == 2 and sum(r["task"] == "identify" for r in recs) == 4
    assert not (tmp_path / "out" / "test.jsonl").exists()
    [(ds, ratio)] = load_mixture(tmp_path / "out" / "mixture.json")
    assert ratio == 1 and len(ds) == len(recs) and ds.sample(0, None).image == os.path.join(tmp_path / "out", a)
    s = convert(f, "coco", tmp_path / "only", images=imgs, tasks=("detection",))
    assert s["train"] == {"detection": 3}


@pytest.mark.parametrize("ann, images, msg", [
    ({"image_id": 1, "category_id": 7, "bbox": [190, 10, 40, 50]}, None,
     r"annotations\[0\] \(image a.png\): box \[190, 10, 40, 50\] \(xywh, pixels\) reaches outside the 200x100 image"),
    ({"image_id": 1, "category_id": 7, "bbox": [10, 10, 0, 50]}, None, r"annotations\[0\].*has no area"),
    ({"image_id": 1, "category_id": 9, "bbox": [10, 10, 5, 5]}, None, r"annotations\[0\]: category_id 9 is not in"),
    ({"image_id": 3, "category_id": 7, "bbox": [10, 10, 5, 5]}, None, r"annotations\[0\]: image_id 3 is not in"),
    ({"image_id": 1, "category_id": 7, "bbox": [10, 10, 5, "x"]}, None, r"box coordinate must be a number, got 'x'"),
    ({"image_id": 1, "category_id": 7, "bbox": [10, 10, 5, 5]}, [{"id": 1, "file_name": "a.png", "width": 640}],
     r"images id 1 says width 640, the file .*a.png is 200x100"),
    ({"image_id": 1, "category_id": 7, "bbox": [10, 10, 5, 5]}, [{"id": 1, "file_name": "zz.png"}],
     r"images id 1: image not found: .*zz.png"),
])
def test_coco_errors_name_the_record_and_leave_nothing(tmp_path, imgs, ann, images, msg):
    f = coco(tmp_path, [ann], images)
    with pytest.raises(MiniGPTv2Error, match=msg):
        convert(f, "coco", tmp_path / "out", images=imgs)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_csv_task_rules(tmp_path, imgs):
    f = tmp_path / "qa.csv"
    f.write_text("image,question,answer,boxes,task\n"
                 "images/a.png,what is it?,a dog,,\n"
                 "images/a.png,the dog,,10 20 50 60,\n"
                 "images/a.png,dogs,,10 20 50 60; 100 0 150 40,\n"
                 "images/b.png,,a cat,\"5,5,45,75\",\n"
                 "images/b.png,,a white square,,\n"
                 "images/b.png,the cat,,\"[[5, 5, 45, 75]]\",detection\n"
                 "images/b.png,[vqa] colour?,white,,\n")
    convert(f, "csv", tmp_path / "out")
    r = lines(tmp_path / "out" / "train.jsonl")
    a, b = box((10, 20, 50, 60), 200, 100), box((5, 5, 45, 75), 50, 80)
    assert [x["task"] for x in r] == ["vqa", "refer", "detection", "identify", "caption", "detection", "vqa"]
    assert r[0]["turns"] == [["[vqa] Based on the image, respond to this question with a short answer: what is it?",
                              "a dog"]]
    assert r[1]["turns"] == [["[refer] give me the location of the dog", a]]
    assert r[2]["turns"][0][1] == f"<p>dogs</p> {a}<delim>{box((100, 0, 150, 40), 200, 100)}"
    assert r[3]["turns"] == [[f"[identify] what object is in this location {b}", "a cat"]]
    assert r[4]["turns"] == [["[caption] Briefly describe this image.", "a white square"]]
    assert r[5]["turns"] == [["[detection] the cat", f"<p>the cat</p> {b}"]]
    assert r[6]["turns"] == [["[vqa] colour?", "white"]]                   # the user's own identifier kept


@pytest.mark.parametrize("row, msg", [
    ("images/a.png,the dog,a dog,10 20 50 60,", r"row 2: cannot tell the task .*add a 'task' field"),
    ("images/a.png,,,,", r"row 2: cannot tell the task"),
    ("images/a.png,the dog,,10 20 50,", r"row 2: a box must be 4 numbers"),
    ("images/a.png,the dog,,50 20 10 60,", r"row 2: box \[50, 20, 10, 60\] \(xyxy\) has no area \(if your boxes are "
                                           r"\[x, y, width, height\], pass --box-format xywh\)"),
    ("images/a.png,the dog,,10 20 250 60,", r"row 2: box .* reaches outside the 200x100 image"),
    ("images/nope.png,q,a,,", r"row 2: image not found: .*nope.png"),
    ("images/a.png,q,,,refer", r"row 2: task refer needs one box, got 0"),
    ("images/a.png,q,a,,grounding", r"row 2: task 'grounding' is not one of refer, vqa, identify, detection, caption"),
])
def test_csv_errors(tmp_path, imgs, row, msg):
    f = tmp_path / "qa.csv"
    f.write_text("image,question,answer,boxes,task\n" + row + "\n")
    with pytest.raises(MiniGPTv2Error, match=msg):
        convert(f, "csv", tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_jsonl_input_xywh_and_split(tmp_path, imgs):
    f = tmp_path / "my.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"image": "images/a.png", "question": "the dog", "boxes": [[10, 20, 40, 40]]},
        {"image": "images/a.png", "question": "the cat", "boxes": [100, 0, 50, 40]},
        {"image": "images/b.png", "question": "what?", "answer": "a cat"}]) + "\n")
    s = convert(f, "jsonl", tmp_path / "out", box_format="xywh", held_out=0.5, seed=3)
    assert s["n_train"] + s["n_test"] == 3 and s["test_images"] == 1
    recs = lines(tmp_path / "out" / "train.jsonl") + lines(tmp_path / "out" / "test.jsonl")
    answers = {r["turns"][0][0]: r["turns"][0][1] for r in recs}
    assert answers == {"[refer] give me the location of the dog": box((10, 20, 50, 60), 200, 100),
                       "[refer] give me the location of the cat": box((100, 0, 150, 40), 200, 100),
                       "[vqa] Based on the image, respond to this question with a short answer: what?": "a cat"}
    f.write_text(json.dumps({"image": "images/a.png", "task": "vqa", "turns": [["q", "a"]]}) + "\n")
    with pytest.raises(MiniGPTv2Error, match=r"my.jsonl: line 1 has 'turns': the file is in the training format"):
        convert(f, "jsonl", tmp_path / "out2")


def test_split_is_by_image_and_seeded():
    recs = [(f"{i % 10}.png", {"i": i}) for i in range(40)]
    train, test = split(recs, 0.2, seed=1)
    assert len(train) + len(test) == 40 and len(test) == 8                # 2 images x 4 records
    assert not {r["i"] % 10 for r in train} & {r["i"] % 10 for r in test}
    assert split(recs, 0.2, seed=1) == (train, test) and split(recs, 0.2, seed=2) != (train, test)
    with pytest.raises(MiniGPTv2Error, match="needs at least 2 images"):
        split([("a.png", {})], 0.5, 0)
    with pytest.raises(MiniGPTv2Error, match=r"--held-out must be a fraction in \[0, 1\), got 1.5"):
        split(recs, 1.5, 0)


# ---- check --------------------------------------------------------------------------------------------------
def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path.parent / "mixture.json").write_text(json.dumps([{"kind": "jsonl", "path": path.name, "ratio": 1}]))
    return path.parent / "mixture.json"


def test_check_names_every_problem_with_file_and_line(tmp_path, imgs):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    ok = {"image": "images/a.png", "task": "refer", "turns": [["[refer] the dog", "{<1><2><30><40>}"]]}
    mix = write_jsonl(tmp_path / "d.jsonl", [
        ok,
        {**ok, "image": "images/missing.png"},                                          # line 2
        {**ok, "turns": [["[refer] the dog", "{<10><2><130><40>}"]]},                     # 3 off the grid
        {**ok, "turns": [["[refer] the dog", "{<50><2><30><40>}"]]},                      # 4 inverted
        {**ok, "turns": [["[refer] the dog", "  "]]},                                     # 5 empty answer
        {**ok, "turns": [["[refr] the dog", "{<1><2><30><40>}"]]},                        # 6 unknown identifier
        {**ok, "turns": [["[refer] the dog", "{<5><2><5><40>}"]]},                        # 7 warning: no area
        {**ok, "turns": [["where is the dog", "{<1><2><30><40>}"]]},                      # 8 warning: no [refer]
        {**ok, "image": "bad.png"},                                                       # 9 not an image
        {**ok, "turns": [["[refer] the dog", "dog " * 40]]},                              # 10 long (with a model)
    ])
    r = check_mixture(mix)
    f = str(tmp_path / "d.jsonl")
    want = [f"{f}#1 (line 2): image not found: {tmp_path / 'images' / 'missing.png'}",
            f"{f}#2 (line 3): box {{<10><2><130><40>}} is off the 0..100 grid",
            f"{f}#3 (line 4): box {{<50><2><30><40>}} is inverted",
            f"{f}#4 (line 5): empty answer",
            f"{f}#5 (line 6): unknown task identifier [refr]",
            f"{f}#8 (line 9): not a readable image: {tmp_path / 'bad.png'}"]
    assert r.n_problems == len(want) and not r.ok
    for w, got in zip(want, r.problems):
        assert got.startswith(w), (got, w)
    assert [w.split(":")[0] for w in r.warnings] == [f"{f}#6 (line 7)", f"{f}#7 (line 8)"]
    assert "has no area" in r.warnings[0] and "does not start with [refer]" in r.warnings[1]
    [s] = r.sources
    assert (s.name, s.kind, s.records, dict(s.tasks), len(s.images)) == ("d.jsonl", "jsonl", 10, {"refer": 10}, 3)
    assert "d.jsonl  jsonl  1      10       refer 10" in r.table()
    # with a model: tokens against its limits (tiny: max_txt_len 128 -> 16 here)
    _, proc = tiny_model(tmp_path)
    proc.config.max_txt_len = 16
    r = check_mixture(mix, proc)
    assert r.n_problems == len(want) + 1
    assert any(p.startswith(f"{f}#9 (line 10): answer is ") and "over max_txt_len 16" in p for p in r.problems)
    assert r.sources[0].answer_tokens and r.sources[0].max_sample_tokens > 0


def test_check_refcoco_pixel_boxes_against_the_image(tmp_path, imgs):
    recs = [{"img_id": "x", "sents": "dog", "bbox": [150, 10, 60, 20], "width": 200, "height": 100,
             "image": "images/a.png"},
            {"img_id": "y", "sents": "dog", "bbox": [10, 10, 20, 20], "width": 640, "height": 480,
             "image": "images/a.png"}]
    (tmp_path / "ref.json").write_text(json.dumps(recs))
    (tmp_path / "mix.json").write_text(json.dumps([{"kind": "refcoco", "path": "ref.json", "ratio": 1}]))
    r = check_mixture(tmp_path / "mix.json")
    assert r.n_problems == 2
    assert r.problems[0] == f"{tmp_path / 'ref.json'}#0: bbox [x, y, w, h] = [150.0, 10.0, 60.0, 20.0] reaches " \
                            "outside the 200x100 image"
    assert r.problems[1].startswith(f"{tmp_path / 'ref.json'}#1: the record says the image is 640x480, the file is "
                                    "200x100")


def test_data_check_command(tmp_path, imgs, capsys):
    mix = write_jsonl(tmp_path / "d.jsonl", [{"image": "images/a.png", "task": "vqa", "turns": [["[vqa] q", "a"]]}])
    assert cli.main(["data", "check", str(mix), "--model", "nano"]) == 0
    out = capsys.readouterr().out
    assert "tokens counted with the model's tokenizer (max_txt_len 128" in out and "no problems in 1 records." in out
    write_jsonl(tmp_path / "d.jsonl", [{"image": "images/zz.png", "task": "vqa", "turns": [["[vqa] q", "a"]]}])
    assert cli.main(["data", "check", str(mix)]) == 2
    cap = capsys.readouterr()
    assert "image not found" in cap.out and "error: 1 problem(s)" in cap.err and "Traceback" not in cap.err
    assert cli.main(["data", "check", str(mix), "--model", str(tmp_path)]) == 2
    assert "is not a model folder (no config.json)" in capsys.readouterr().err


def test_example_and_tokenizer_commands(tmp_path, capsys):
    assert cli.main(["data", "example", "--out", str(tmp_path / "ex"), "--n", "3"]) == 0
    c = json.loads((tmp_path / "ex" / "instances.json").read_text())
    assert len(c["images"]) == 3 and len(c["annotations"]) >= 3
    assert (tmp_path / "ex" / "qa.csv").read_text().startswith("image,question,answer,boxes\n")
    assert cli.main(["data", "example", "--out", str(tmp_path / "ex"), "--n", "3"]) == 2        # not over a folder
    convert(tmp_path / "ex" / "instances.json", "coco", tmp_path / "ft", images=tmp_path / "ex" / "images")
    assert cli.main(["data", "tokenizer", str(tmp_path / "ft" / "mixture.json"), "--out", str(tmp_path / "t.model"),
                     "--vocab-size", "512"]) == 0
    from minigptv2.tokenizers import Tokenizer

    tok = Tokenizer(tmp_path / "t.model")
    assert 400 < len(tok) <= 512 and tok.sp.piece_to_id("[refer]") != tok.unk_id


# ---- the jsonl bench ----------------------------------------------------------------------------------------
def test_jsonl_bench_scores_with_metrics(tmp_path, imgs):
    from minigptv2.eval.jsonl import _score, jsonl_items

    f = tmp_path / "t.jsonl"
    a = "images/a.png"
    f.write_text("".join(json.dumps(r) + "\n" for r in [
        {"image": a, "task": "refer", "turns": [["[refer] dog", "{<10><20><50><60>}"]]},
        {"image": a, "task": "refer", "turns": [["[refer] cat", "{<60><20><90><60>}"]]},
        {"image": a, "task": "detection", "turns": [["[detection] dog", "<p>dog</p> {<10><20><50><60>}<delim>"
                                                                          "{<60><20><90><60>}"]]},
        {"image": a, "task": "vqa", "turns": [["[vqa] what?", "A Dog"]]}]))
    items = jsonl_items(f)
    assert {k: len(v) for k, v in items.items()} == {"refer": 2, "detection": 1, "vqa": 1}
    assert items["refer"][0].gt["bbox"] == [20.0, 20.0, 80.0, 40.0] and items["refer"][0].gt["width"] == 200
    m, rows = _score("refer", items["refer"], ["{<11><21><50><60>}", "{<0><0><10><10>}"])
    assert m == {"refer_acc": 0.5, "refer_parse_failure_rate": 0.0} and [r["hit"] for r in rows] == [True, False]
    m, _ = _score("detection", items["detection"], ["<p>dog</p> {<10><20><50><60>}<delim>{<0><0><5><5>}<delim>"
                                                    "{<1><1><6><6>}"])
    assert m["detection_recall"] == 0.5 and m["detection_precision"] == pytest.approx(1 / 3)
    assert _score("vqa", items["vqa"], ["a  dog"])[0] == {"vqa_em": 1.0}
    f.write_text(json.dumps({"image": a, "task": "refer", "turns": [["[refer] dog", "left"]]}) + "\n")
    with pytest.raises(MiniGPTv2Error, match=r"t.jsonl: line 1: a refer answer must be one box"):
        jsonl_items(f)


def test_eval_jsonl_bench_takes_a_file(tmp_path, capsys):
    assert cli.main(["eval", "--bench", "jsonl", "--data", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "--bench jsonl takes --data FILE.jsonl, alone" in capsys.readouterr().err
    assert cli.main(["eval", "--bench", "jsonl,synthetic", "--data", str(tmp_path / "t.jsonl"), "--out",
                     str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists()
