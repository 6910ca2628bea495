"""Synthetic scenes (minigptv2.synthetic): determinism, exact boxes, formats readable by minigptv2.data.datasets."""
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minigptv2 import synthetic
from minigptv2.boxes import parse_box, parse_boxes, to_grid
from minigptv2.data.datasets import TASKS, load_mixture
from minigptv2.errors import MiniGPTv2Error
from minigptv2.synthetic import COLORS, SHAPES, Obj, Scene, make_scene, write_synthetic

N = 24


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("s") / "synth", N, seed=1)


def scenes(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "scenes.jsonl").read_text().splitlines()]


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(synth):
    names = set(tree(synth))
    assert {"scenes.jsonl", "mixture.json", "coco_caption.json", "refcoco.json", "vqa.json", "grounded_caption.json",
            "caption_to_phrase.json", "phrase_to_object.json", "conversation.json",
            "unnatural_instruction.json"} <= names
    assert len([n for n in names if n.startswith("images/") and n.endswith(".png")]) == N
    assert not [p for p in synth.parent.iterdir() if p.name.startswith(".")]     # no temp folder left


def test_deterministic(tmp_path, synth):
    again = write_synthetic(tmp_path / "again", N, seed=1)
    assert tree(again) == tree(synth)
    other = write_synthetic(tmp_path / "other", N, seed=2)
    assert tree(other)["scenes.jsonl"] != tree(synth)["scenes.jsonl"]
    fewer = write_synthetic(tmp_path / "fewer", 5, seed=1)                       # scene i does not depend on n
    assert scenes(fewer) == scenes(synth)[:5]


def test_scene_design(synth):
    for s in scenes(synth):
        W, H = s["width"], s["height"]
        assert 192 <= W <= 320 and 192 <= H <= 320
        objs = s["objects"]
        assert 1 <= len(objs) <= 3
        assert len({(o["color"], o["shape"]) for o in objs}) == len(objs)
        assert all(o["color"] in COLORS and o["shape"] in SHAPES for o in objs)
        cx = [(o["box"][0] + o["box"][2]) / 2 for o in objs]
        assert cx == sorted(cx)                                                   # left to right
        for i, o in enumerate(objs):
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert 0.25 * min(W, H) - 2 <= max(x2 - x1, y2 - y1) <= 0.45 * min(W, H) + 1
            for p in objs[i + 1:]:
                a, b = o["box"], p["box"]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]   # no overlap


def test_boxes_are_exact_pixel_bboxes(synth):
    for s in scenes(synth):
        img = np.asarray(Image.open(synth / s["image"]).convert("RGB"))
        assert img.shape == (s["height"], s["width"], 3)
        for o in s["objects"]:
            # a window of the box plus a margin: objects are >= synthetic.GAP px apart, so it holds only this one
            m = synthetic.GAP - 1
            x1, y1, x2, y2 = o["box"]
            wx, wy = max(0, x1 - m), max(0, y1 - m)
            win = img[wy:y2 + m, wx:x2 + m]
            ys, xs = np.nonzero((win == COLORS[o["color"]]).all(axis=2))
            assert [wx + xs.min(), wy + ys.min(), wx + xs.max() + 1, wy + ys.max() + 1] == o["box"], (s["image"], o)
            assert (img == COLORS[o["color"]]).all(axis=2).sum() >= len(xs) > 0.4 * (x2 - x1) * (y2 - y1)


def test_shape_repeats_in_about_half_of_multi_object_scenes():
    rng = random.Random(0)
    multi = [sc for sc in (make_scene(rng) for _ in range(400)) if len(sc.objects) > 1]
    rep = sum(len({o.shape for o in sc.objects}) < len(sc.objects) for sc in multi) / len(multi)
    assert 0.35 < rep < 0.65


def test_object_weights_shift_the_object_count_and_are_checked(tmp_path):
    def counts(weights):
        rng = random.Random(0)
        n = [len(make_scene(rng, object_weights=weights).objects) for _ in range(300)]
        return [n.count(k) / len(n) for k in (1, 2, 3)]

    uniform, skewed = counts(None), counts((1, 2, 3))
    assert all(0.25 < f < 0.42 for f in uniform)
    assert skewed[0] < 0.25 and skewed[2] > 0.42            # 1/6 and 1/2 expected (a scene may lose an object)
    assert counts((1, 0, 0)) == [1, 0, 0]
    for bad in ((1, 2), (1, -1, 1), (0, 0, 0)):
        with pytest.raises(MiniGPTv2Error, match="object_weights"):
            write_synthetic(tmp_path / "w", 2, 0, object_weights=bad)
    assert not list(tmp_path.iterdir())
    # and from the CLI
    assert synthetic.main(["--out", str(tmp_path / "w"), "--n", "3", "--seed", "0", "--object-weights", "0", "1", "0"]) == 0
    assert {len(s["objects"]) for s in scenes(tmp_path / "w")} == {2}


def test_canonical_wording():
    img = Image.new("RGB", (200, 100))
    objs = [Obj("red", "circle", (0, 0, 50, 50)), Obj("blue", "square", (60, 0, 100, 40)),
            Obj("green", "circle", (120, 50, 200, 100))]
    sc = Scene(200, 100, objs, img)
    assert synthetic.caption(sc) == "a red circle, a blue square and a green circle"
    assert synthetic.caption(Scene(200, 100, objs[:2], img)) == "a red circle and a blue square"
    assert synthetic.caption(Scene(200, 100, objs[:1], img)) == "a red circle"
    assert synthetic.grounded_caption(Scene(200, 100, objs[:2], img)) == \
        "<p>a red circle</p> {<0><0><25><50>} and <p>a blue square</p> {<30><0><50><40>}"
    assert synthetic.detection(sc, "circle") == "<p>circle</p> {<0><0><25><50>}<delim>{<60><50><100><100>}"
    qs = {q: a for q, a, _ in synthetic.vqa_questions(sc, random.Random(0))}
    assert qs["what color is the square?"] == "blue" and "what color is the circle?" not in qs
    assert qs["what shape is the green object?"] == "circle"
    assert qs["how many shapes are there?"] == "three"


def test_every_task_from_the_mixture(synth):
    parts = load_mixture(synth / "mixture.json")
    rng = random.Random(0)
    seen = set()
    for ds, ratio in parts:
        assert len(ds) > 0 and ratio > 0
        for i in range(len(ds)):
            s = ds.sample(i, rng)
            seen.add(s.task)
            assert s.turns and all(q and a for q, a in s.turns)
            assert (s.image is None) == (s.task == "text")
            if s.image:
                assert Path(s.image).is_file(), s.image
    assert seen == set(TASKS)


def test_answers_match_scenes_and_parse(synth):
    """Every box-bearing answer parses back with boxes.parse_boxes to the scene's true grid boxes."""
    parts = {type(ds).__name__: ds for ds, _ in load_mixture(synth / "mixture.json")}
    by_image = {str(synth / s["image"]): s for s in scenes(synth)}
    rng = random.Random(0)

    def grid(s, o):
        return to_grid(o["box"], s["width"], s["height"])

    ds = parts["RefCOCODataset"]
    for i in range(len(ds)):
        smp = ds.sample(i, rng)
        s = by_image[smp.image]
        [(q, a)] = smp.turns
        [o] = [o for o in s["objects"] if f'{o["color"]} {o["shape"]}' in q]
        assert parse_box(a) == grid(s, o)
    ds = parts["InvRefCOCODataset"]
    for i in range(len(ds)):
        smp = ds.sample(i, rng)
        s = by_image[smp.image]
        [(q, a)] = smp.turns
        [o] = [o for o in s["objects"] if parse_box(q) == grid(s, o)]
        assert a == f'{o["color"]} {o["shape"]}'
    ds = parts["FlickrGroundedCaptionDataset"]
    for i in range(len(ds)):
        smp = ds.sample(i, rng)
        s = by_image[smp.image]
        got = [(g.phrase, g.box) for g in parse_boxes(smp.turns[0][1])]
        assert got == [(f'a {o["color"]} {o["shape"]}', grid(s, o)) for o in s["objects"]]
    ds = parts["FlickrPhraseToObjectDataset"]
    for i in range(len(ds)):
        smp = ds.sample(i, rng)
        s = by_image[smp.image]
        [(q, a)] = smp.turns
        shape = q.removeprefix("[detection] ")
        assert [(g.phrase, g.box) for g in parse_boxes(a)] == \
            [(shape, grid(s, o)) for o in s["objects"] if o["shape"] == shape]
    ds = parts["FlickrCaptionToPhraseDataset"]
    for i in range(len(ds)):
        smp = ds.sample(i, rng)
        s = by_image[smp.image]
        assert [(g.phrase, g.box) for g in parse_boxes(smp.turns[0][1])] == \
            [(f'{o["color"]} {o["shape"]}', grid(s, o)) for o in s["objects"]]
    ds = parts["VQADataset"]
    for i in range(len(ds)):
        smp = ds.sample(i, rng)
        objs = by_image[smp.image]["objects"]
        [(q, a)] = smp.turns
        if "what color is the" in q:
            assert [o["color"] for o in objs if q.endswith(f'the {o["shape"]}?')] == [a]
        elif "how many" in q:
            assert a == ("zero", "one", "two", "three")[len(objs)]
        elif "is there a" in q:
            pair = q.split("is there a ")[1].rstrip("?")
            assert a == ("yes" if pair in {f'{o["color"]} {o["shape"]}' for o in objs} else "no")


def test_refuses_non_empty_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MiniGPTv2Error, match="exists and is not an empty folder"):
        write_synthetic(out, 2, 0)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_synthetic(empty, 2, 0) / "mixture.json").is_file()             # an empty folder is fine
    with pytest.raises(MiniGPTv2Error):
        write_synthetic(tmp_path / "x", 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]       # nothing half-written


def test_main(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path / "m"), "--n", "100", "--seed", "3"]) == 0
    assert len(scenes(tmp_path / "m")) == 100
    assert "wrote 100 scenes" in capsys.readouterr().out


# ---- conversations and paraphrases (issue #31) ------------------------------------------------------------
def _annotation_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.glob("*.json*")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_dialogs_off_writes_what_was_written_before(tmp_path):
    # the annotation files of write_synthetic(n=6, seed=3) as written before `dialogs` existed (commit 09a4719)
    d = write_synthetic(tmp_path / "a", n=6, seed=3)
    assert _annotation_digest(d) == "dda75a765135223d4bbe6ba0e3067a6ff45bf6e73d36be6c4c61105834a6b3d8"
    on = write_synthetic(tmp_path / "b", n=6, seed=3, dialogs=True)
    assert tree(on).keys() == tree(d).keys()
    extra = ("mixture.json", "vqa.json", "coco_caption.json")
    assert {k: v for k, v in tree(on).items() if k not in extra} == {k: v for k, v in tree(d).items() if k not in extra}
    # vqa.json: the same records, those about one object with its "point" added; coco_caption.json: every record
    # with its "points" (tests/train/test_pointing.py)
    pointed = json.loads((on / "vqa.json").read_text())
    assert [{k: v for k, v in r.items() if k != "point"} for r in pointed] == json.loads((d / "vqa.json").read_text())
    assert any("point" in r for r in pointed)
    caps = json.loads((on / "coco_caption.json").read_text())
    assert [{k: v for k, v in r.items() if k != "points"} for r in caps] == \
        json.loads((d / "coco_caption.json").read_text()) and all(r["points"] for r in caps)
    mix = json.loads((on / "mixture.json").read_text())
    assert mix[: len(synthetic.MIXTURE)] == json.loads((d / "mixture.json").read_text())
    assert [(e["kind"], e["ratio"] > 0) for e in mix[len(synthetic.MIXTURE):]] == \
        [("synthetic_dialog", True), ("synthetic_paraphrase", True), ("synthetic_paraphrase_vqa", False)]
    kinds = {type(ds).__name__ for ds, _ in load_mixture(on / "mixture.json")}
    assert {"SyntheticDialogDataset", "SyntheticParaphraseDataset", "SyntheticParaphraseVQADataset"} <= kinds


def _check_answer(scene: Scene, q: str, a: str) -> None:
    """The answer of one dialog turn is the canonical answer of its task and content."""
    from minigptv2.boxes import format_box

    task = q[1: q.index("]")]
    names = {o.name: o for o in scene.objects}
    if task == "refer":
        assert a in {format_box(scene.grid(o)) for o in scene.objects} and any(n in q for n in names)
        assert format_box(scene.grid(next(o for n, o in names.items() if n in q))) == a
    elif task == "identify":
        assert a in names and format_box(scene.grid(names[a])) in q
    elif task == "detection":
        shape = next(s for s in SHAPES if s in q)
        assert a == synthetic.detection(scene, shape)
    elif task == "caption":
        assert a == synthetic.caption(scene)
    elif task == "grounding":
        assert a == synthetic.grounded_caption(scene)
    else:
        assert task == "vqa" and a in {*COLORS, *SHAPES, *synthetic.NUMBERS, "yes", "no"}


def test_dialog_and_paraphrase_readers(synth, monkeypatch):
    from minigptv2 import synthetic_wordings
    from minigptv2.data.datasets import open_dataset
    from minigptv2.data.synthetic_dialogs import scene_of
    from minigptv2.prompts import TASKS as VISION
    from minigptv2.synthetic_wordings import PARAPHRASES, PREFIXES, SUFFIXES

    def undecorate(q: str) -> set:
        """q and what it was before synthetic_wordings.decorate could have added a prefix and / or a suffix."""
        ident, _, body = q.partition(" ")
        out = {body}
        for p in PREFIXES:
            out |= {b[len(p) + 1:] for b in out if b.startswith(p + " ")}
        for x in SUFFIXES:
            out |= {b[: -len(x) - 1] for b in out if b.endswith(" " + x)}
            out |= {b[: -len(x) - 2] + "?" for b in out if b.endswith(f" {x}?")}
        return {f"{ident} {b}" for b in out}

    monkeypatch.setattr(synthetic_wordings, "P_NOISE", 0.0)   # word noise: test_word_noise
    recs = scenes(synth)
    dialog = open_dataset("synthetic_dialog", synth / "scenes.jsonl")
    para = open_dataset("synthetic_paraphrase", synth / "scenes.jsonl")
    assert len(dialog) == len(para) == N
    rng = random.Random(5)
    lengths, tasks, firsts = set(), set(), []
    for k in range(200):
        i = k % N
        s = dialog.sample(i, rng)
        assert s.image == str(synth / recs[i]["image"]) and s.task == "chat"
        lengths.add(len(s.turns))
        firsts.append(s.turns[0][0][1: s.turns[0][0].index("]")])
        for q, a in s.turns:
            tasks.add(q[1: q.index("]")])
            _check_answer(scene_of(recs[i]), q, a)
    assert lengths == {2, 3} and tasks == set(VISION)
    assert sum(t in ("caption", "grounding", "detection") for t in firsts) > 0.55 * len(firsts)  # long answers first
    for k in range(200):
        s = para.sample(k % N, rng)
        [(q, a)] = s.turns
        assert s.task == q[1: q.index("]")]
        _check_answer(scene_of(recs[k % N]), q, a)
        if s.task != "vqa":   # always one of the training paraphrases (the bare forms among them)
            contents = [None, *SHAPES, *(o["color"] + " " + o["shape"] for o in recs[k % N]["objects"])]
            assert any(w.format(c) in undecorate(q) for w in PARAPHRASES[s.task] for c in contents) \
                or s.task == "identify"
    a, b = dialog.sample(3, random.Random(1)), dialog.sample(3, random.Random(1))
    assert a == b                                    # every choice from the sample's rng
    para_vqa = open_dataset("synthetic_paraphrase_vqa", synth / "scenes.jsonl")
    for k in range(100):                             # VQA only, each a canonical answer
        s = para_vqa.sample(k % N, rng)
        [(q, a)] = s.turns
        assert s.task == "vqa" and q.startswith("[vqa] ")
        _check_answer(scene_of(recs[k % N]), q, a)


def test_later_vqa_turns_ask_for_the_count_more_often(monkeypatch):
    """A quarter of the VQA turns after an earlier answer ask "how many shapes are there?", on top of the ~12 % the
    choice among the scene's questions gives them (synthetic_dialogs.P_COUNT_AFTER)."""
    from minigptv2.data import synthetic_dialogs as sd

    def count_share() -> float:
        n = hits = 0
        for seed in range(1500):
            scene = synthetic.make_scene(random.Random(seed))
            for k, (q, a, _) in enumerate(sd.dialog(scene, random.Random(seed), 3, 0.0)):
                if q.startswith("[vqa]") and k > 0:
                    n, hits = n + 1, hits + (a in synthetic.NUMBERS)
        return hits / n

    with_it = count_share()
    monkeypatch.setattr(sd, "P_COUNT_AFTER", 0.0)
    without = count_share()
    assert 0.05 < without < 0.2 and abs(with_it - 0.25 - 0.75 * without) < 0.05


def test_decorations_are_drawn_independently_of_task_and_question_kind():
    """synthetic_wordings round 4: a prefix or suffix must not mark a task or a VQA question kind, so each one is
    seen with every task and with every kind of VQA question."""
    from minigptv2.synthetic_wordings import PREFIXES, SUFFIXES, decorate, instruction

    rng = random.Random(0)
    assert decorate("[refer] where is the red circle?", random.Random(3), p=1.0).startswith("[refer] ")
    assert decorate("x", rng, p=0.0) == "x"
    seen = {}
    questions = {"colour": "what color is the circle?", "shape": "what shape is the red object?",
                 "count": "how many shapes are there?", "yes/no": "is there a red circle?"}
    contents = {"refer": "red circle", "identify": "{<1><2><3><4>}", "detection": "circle", "caption": None,
                "grounding": None}
    for _ in range(3000):
        for kind, text in [*(("vqa " + k, ("vqa", q)) for k, q in questions.items()),
                           *((t, (t, c)) for t, c in contents.items())]:
            got = instruction(*text, rng, p_paraphrase=1.0)
            for w in PREFIXES:
                if f" {w} " in got:
                    seen.setdefault(("prefix", w), set()).add(kind)
            for w in SUFFIXES:
                if got.rstrip("?").endswith(" " + w):
                    seen.setdefault(("suffix", w), set()).add(kind)
    every = {"vqa " + k for k in questions} | set(contents)
    assert {k: v for k, v in seen.items() if v != every} == {}
    assert len(seen) == len(PREFIXES) + len(SUFFIXES)


def test_word_noise():
    """synthetic_wordings.noise edits a paraphrase's words but never its identifier or its slots, inserts only
    words of the training wordings (never a colour, shape or number; "yes" / "no" only in the kind phrase "yes or
    no"), and puts kind words into other kinds' instructions; `instruction` noises about P_NOISE of the paraphrases."""
    from minigptv2 import synthetic_wordings as sw

    rng = random.Random(0)
    slots = lambda t: sorted(re.findall(r"\{[^}]*\}", t))  # noqa: E731
    words = lambda t: set(re.findall(r"[a-z][a-z']+", re.sub(r"\{[^}]*\}|^\[\w+\]", " ", t.lower())))  # noqa: E731
    training_text = " ".join(sw.all_wordings()).lower()
    assert all(k in training_text for k in sw.KIND_WORDS)
    assert not set(sw._vocabulary()) & {*COLORS, *SHAPES, *synthetic.NUMBERS, "yes", "no", "circles"}
    templates = [w for ws in sw.PARAPHRASES.values() for w in ws] + ["[vqa] " + w for _, ws in sw.VQA for w in ws]
    changed = 0
    for w in templates:
        for _ in range(5):
            n = sw.noise(w, rng)
            assert n.split(" ")[0] == w.split(" ")[0] and slots(n) == slots(w), (w, n)
            new = words(n) - words(w)
            assert all(x in sw._vocabulary() or x in " ".join(sw.KIND_WORDS).split() for x in new), (w, n)
            changed += n != w
    assert changed > 0.9 * 5 * len(templates)
    # a colour word in count questions and identify instructions, a count word in colour questions
    qs = [sw.instruction("vqa", "how many shapes are there?", rng, 1.0) for _ in range(2000)]
    ids = [sw.instruction("identify", "{<1><2><3><4>}", rng, 1.0) for _ in range(2000)]
    cs = [sw.instruction("vqa", "what color is the circle?", rng, 1.0) for _ in range(2000)]
    assert 0.01 < sum("color" in q for q in qs) / 2000 < 0.2
    assert 0.01 < sum("colo" in q for q in ids) / 2000 < 0.3
    assert 0.01 < sum("how many" in q for q in cs) / 2000 < 0.2
    exact = {w.format("{<1><2><3><4>}") for w in sw.IDENTIFY}
    undecorated = [q for q in ids if not any(p in q for p in sw.PREFIXES + sw.SUFFIXES)]
    share = sum(q not in exact for q in undecorated) / len(undecorated)
    assert abs(share - sw.P_NOISE) < 0.06, share
