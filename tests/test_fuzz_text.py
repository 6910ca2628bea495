"""Property-based (hypothesis) fuzzing of the text that enters the library: model answers (the box formatter and
parser), user prompts (the prompt renderer + processor) and annotation files (the dataset readers).

Derandomized (fixed seed, no example database), so CI sees the same cases on every run. Each test counts the cases
it ran against a floor (tests/fuzz_helpers.py, `CaseCounter`); `test_total_generated_cases` (last in the file)
checks them: together at least 6,080 cases. The contract: bad input raises `MiniGPTv2Error`, nothing else escapes,
and accepted input gives a correct result.
"""
import json
import pickle
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import JSON, TEXT, USER_TEXT, CaseCounter, fuzz_settings, tiny  # noqa: F401 - tiny is a fixture
from minigptv2 import boxes as bx
from minigptv2 import prompts
from minigptv2.data.datasets import KINDS, load_mixture, open_dataset
from minigptv2.errors import MiniGPTv2Error

CASES = CaseCounter()

GRID = st.integers(0, bx.GRID)
BOX = st.tuples(GRID, GRID, GRID, GRID)
PHRASE_CHARS = st.characters(codec="utf-8", exclude_characters="<>{}")
PHRASE = st.text(alphabet=PHRASE_CHARS, max_size=30)
# box-ish fragments, so the random strings actually reach the parser's interesting paths
BOX_TOKENS = ["{", "}", "<", ">", "<p>", "</p>", "<delim>", " ", "-", "\n", "<12>", "<100>", "<101>", "<-3>",
              "<0>", "<99999>", "{<1><2><3><4>}", "{<0><0><100><100>}", "{ <5> <6> <7> <8> }", "<p>x</p>"]
BOXISH = st.lists(st.sampled_from(BOX_TOKENS) | st.integers(-20, 20000).map(str) | TEXT.filter(lambda s: len(s) < 4),
                  max_size=40).map("".join)


# =============================================================================================================
# 1. boxes: round trips, and the parser never crashes
# =============================================================================================================
_box_round = CASES.counted("box_round_trip", floor=1450)


@pytest.mark.fuzz
@fuzz_settings(1500)
@given(groups=st.lists(st.tuples(PHRASE, st.lists(BOX, min_size=1, max_size=4)), min_size=1, max_size=4),
       bare=st.lists(BOX, max_size=3), sep=st.sampled_from([" ", "  ", "\n", ". ", ", and "]))
def test_box_format_parse_round_trip(groups, bare, sep):
    _box_round()
    for _, gb in groups:
        for b in gb:
            assert bx.parse_box(bx.format_box(b)) == b
    # one phrase group / bare box list at a time
    phrase, gb = groups[0]
    assert bx.parse_boxes(bx.format_grounded(phrase, gb)) == [bx.Grounding(b, phrase.strip()) for b in gb]
    assert bx.parse_boxes(bx.format_boxes(gb)) == [bx.Grounding(b) for b in gb]
    # a whole answer: several grounded phrases (in order), then bare boxes after a word (boxes that directly
    # follow a phrase's boxes belong to that phrase, by design)
    answer = sep.join(bx.format_grounded(p, b) for p, b in groups)
    if bare:
        answer += " then " + " ".join(bx.format_box(b) for b in bare)
    want = [bx.Grounding(b, p.strip()) for p, bs in groups for b in bs] + [bx.Grounding(b) for b in bare]
    assert bx.parse_boxes(answer) == want


_box_any = CASES.counted("box_parse_any_text", floor=2400)


@pytest.mark.fuzz
@fuzz_settings(2500)
@given(text=BOXISH | st.text(max_size=200))
def test_parse_boxes_never_crash_and_stay_on_the_grid(text):
    _box_any()
    found = bx.parse_boxes(text)
    assert all(isinstance(g, bx.Grounding) and len(g.box) == 4 and all(0 <= c <= 100 for c in g.box) for g in found)
    assert all(g.phrase is None or isinstance(g.phrase, str) for g in found)
    try:
        b = bx.parse_box(text)
        assert all(0 <= c <= 100 for c in b)
    except MiniGPTv2Error:
        pass


_grid = CASES.counted("box_grid_conversion", floor=580)


@pytest.mark.fuzz
@fuzz_settings(600)
@given(w=st.integers(1, 10_000), h=st.integers(1, 10_000),
       fr=st.tuples(*[st.floats(-0.5, 1.5, allow_nan=False)] * 4),
       junk=st.tuples(*[st.floats(allow_nan=True, allow_infinity=True) | st.integers()] * 4))
def test_to_grid_always_on_the_grid_or_a_clear_error(w, h, fr, junk):
    _grid()
    px = (fr[0] * w, fr[1] * h, fr[2] * w, fr[3] * h)
    g = bx.to_grid(px, w, h)
    assert all(isinstance(c, int) and 0 <= c <= 100 for c in g)
    assert bx.parse_box(bx.format_box(g)) == g
    try:        # non-finite / astronomically large coordinates: refused clearly, never a crash
        g = bx.to_grid(junk, w, h)
        assert all(0 <= c <= 100 for c in g)
    except MiniGPTv2Error:
        pass


# =============================================================================================================
# 2. prompt renderer + processor: user text never changes the template structure
# =============================================================================================================
@pytest.fixture(scope="module")
def proc(tiny):
    return tiny[1]


_prompt = CASES.counted("prompt_structure", floor=1150)


def _text_runs(ids, specials):
    """Split ids at structural ids (bos/eos/image) -> the text runs between them."""
    runs, cur = [], []
    for i in ids:
        if i in specials:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(i)
    if cur:
        runs.append(cur)
    return runs


@pytest.mark.fuzz
@fuzz_settings(1200)
@given(turns=st.lists(st.tuples(USER_TEXT, USER_TEXT), min_size=1, max_size=3), has_image=st.booleans())
def test_any_user_text_keeps_one_image_slot_and_fixed_specials(proc, turns, has_image):
    _prompt()
    tok = proc.tok
    questions = [q for q, _ in turns]
    answers = [a for _, a in turns][:-1]
    ids = proc.prompt_ids(questions, answers, has_image=has_image)
    n_img = proc.config.num_image_tokens
    k = len(questions)
    # structure: exactly one contiguous image slot (or none), BOS/EOS counts fixed by the number of turns
    assert ids.count(proc.image_token_id) == (n_img if has_image else 0)
    if has_image:
        s = ids.index(proc.image_token_id)
        assert ids[s:s + n_img] == [proc.image_token_id] * n_img
    assert ids.count(tok.bos_id) == 2 + (k - 1) and ids.count(tok.eos_id) == k - 1
    assert ids[:2] == [tok.bos_id, tok.bos_id]
    assert all(i == proc.image_token_id or 0 <= i < len(tok) for i in ids)
    # the user part decodes back to the text (byte fallback: every valid Unicode string is representable)
    runs = [tok.sp.decode(r) for r in _text_runs(ids, {tok.bos_id, tok.eos_id, proc.image_token_id})]
    if has_image:
        want = ["[INST] <Img>", f"</Img> {questions[0]} [/INST]"]
    else:
        want = [f"[INST] {questions[0]} [/INST]"]
    for a, q in zip(answers, questions[1:]):     # an answer directly follows the turn's "[/INST]" text
        want[-1] += f" {a}"
        want.append(f"[INST] {q} [/INST]")
    assert runs == [w.replace("\u2581", " ") for w in want]   # "▁" (SentencePiece's space) comes back as a space
    # text that is not valid Unicode (a lone surrogate) is refused clearly, not passed to SentencePiece
    with pytest.raises(MiniGPTv2Error, match="not valid Unicode"):
        proc.prompt_ids(questions[:-1] + [questions[-1] + "\ud800"], answers, has_image=has_image)
    # the training layout is as fixed: one BOS + one target EOS per turn
    t_ids, labels = proc.encode_items(prompts.render_training(turns, has_image))
    assert t_ids.count(tok.bos_id) == k and t_ids.count(tok.eos_id) == k
    assert t_ids.count(proc.image_token_id) == (n_img if has_image else 0)
    assert [i for i, l in zip(t_ids, labels) if l == tok.eos_id] == [tok.eos_id] * k


# =============================================================================================================
# 3. dataset readers: any file content -> a reader whose samples work, or MiniGPTv2Error
# =============================================================================================================
FIELDS = ["image", "caption", "img_id", "sents", "bbox", "height", "width", "question", "answer", "direct_answers",
          "image_id", "grounded_caption", "output", "phrase", "id", "conversations", "from", "value", "instances",
          "instruction_with_input", "constraints", "task", "turns", "split", "ann_id", "sentences", "raw",
          "kind", "path", "image_root", "ratio"]
GOOD_VALUE = {   # plausible values, so random records often get past the first checks
    "image": st.sampled_from(["a.jpg", "x/y.png", "/abs/i.jpg", ""]), "img_id": st.sampled_from(["COCO_1", "7"]),
    "bbox": st.lists(st.integers(-5, 500) | st.floats(allow_nan=True, allow_infinity=True)
                     | st.integers(10 ** 300, 10 ** 400), min_size=3, max_size=5)
    | st.sampled_from(["{<1><2><3><4>}", "{<1><2><3><4>}<delim>{<5><6><7><8>}", "no box", "{<1><2><3><400>}"]),
    "width": st.integers(-2, 1000) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(10 ** 300, 10 ** 400),
    "height": st.integers(-2, 1000) | st.floats(allow_nan=True, allow_infinity=True),
    "sents": st.lists(TEXT, max_size=3) | TEXT, "answer": st.lists(TEXT, max_size=3) | TEXT,
    "direct_answers": st.lists(TEXT, max_size=3), "image_id": st.integers(-1, 10 ** 20) | TEXT,
    "id": st.integers(-1, 10 ** 20) | TEXT, "from": st.sampled_from(["human", "gpt", "system"]),
    "task": st.sampled_from(["vqa", "refer", "text", "chat", "nope"]), "split": st.sampled_from(["train", "val"]),
    "turns": st.lists(st.lists(TEXT, min_size=2, max_size=2) | JSON, max_size=3),
    "ratio": st.integers(-1, 5) | st.floats(allow_nan=True, allow_infinity=True),
    "kind": st.sampled_from(list(KINDS) + ["bogus"]), "path": st.sampled_from(["ann.json", "ann.jsonl", "nope.json",
                                                                               "", ".", "../"]),
}


def _value(key, depth):
    v = GOOD_VALUE.get(key, TEXT) | JSON
    if key in ("conversations", "instances", "sentences") and depth < 2:
        v = v | st.lists(_record(depth + 1), max_size=3)
    return v


def _record(depth=0):
    """A JSON object with a random subset of the fields any reader looks at, with plausible or random values."""
    return st.lists(st.sampled_from(FIELDS), max_size=8, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _value(k, depth) for k in keys}))


KIND_FIELDS = {   # the fields each kind needs: records with these (plus random extras) reach `sample`
    "coco_caption": ["image", "caption"], "refcoco": ["img_id", "sents", "bbox", "width", "height"],
    "invrefcoco": ["image", "sents", "bbox", "width", "height"], "vqa": ["image", "question", "answer"],
    "aokvqa": ["image", "question", "direct_answers"], "gqa": ["image", "question", "answer"],
    "flickr_grounded_caption": ["image_id", "grounded_caption"],
    "flickr_caption_to_phrase": ["image_id", "caption", "output"],
    "flickr_phrase_to_object": ["image_id", "phrase", "bbox"], "llava_conversation": ["id", "conversations"],
    "llava_detail": ["image", "conversations"], "llava_reason": ["id", "conversations"],
    "unnatural_instruction": ["instances"], "jsonl": ["image", "task", "turns"],
    "synthetic_dialog": ["image", "width", "height", "objects"],
    "synthetic_paraphrase": ["image", "width", "height", "objects"],
    "synthetic_paraphrase_vqa": ["image", "width", "height", "objects"],
    "mixture": ["kind", "path", "ratio"], "refer_api": ["split", "image_id", "ann_id", "sentences"],
}
TURN = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt"]), "value": TEXT},
                             optional={"raw": TEXT, "instruction_with_input": TEXT, "output": TEXT})
KIND_VALUE = {"conversations": st.lists(TURN, max_size=4), "instances": st.lists(
    st.fixed_dictionaries({"instruction_with_input": TEXT, "output": TEXT}, optional={"constraints": TEXT | JSON}),
    max_size=2), "sentences": st.lists(st.fixed_dictionaries({"raw": TEXT}), max_size=2)}


def _kind_record(kind):
    fields = KIND_FIELDS[kind]
    return st.fixed_dictionaries({k: KIND_VALUE.get(k, GOOD_VALUE.get(k, TEXT)) for k in fields},
                                 optional={k: _value(k, 1) for k in FIELDS if k not in fields})


RECORDS = st.lists(_record(), max_size=4)
RAW_FILES = st.sampled_from([b"", b"[", b"[" * 100_000, b"{" * 5000, b"1" * 5000, b"[" + b"9" * 5000 + b"]",
                             b"\xff\xfe\x00", b"NaN", b"[NaN]", b"[Infinity]", b'"\\ud800"', b"[]", b"{}", b"null",
                             b"[1, 2", b"\n\n", b'{"task": "vqa"}\n{"turns": 1}'])
_data = CASES.counted("dataset_readers", floor=500)


def _write(path: Path, value) -> None:
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        path.write_text(json.dumps(value), encoding="utf-8")


@pytest.mark.fuzz
@fuzz_settings(500)
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS) + ["mixture", "refer_api"]),
       content=RECORDS | JSON | RAW_FILES, jsonl=st.lists(_record() | JSON, max_size=4),
       inst=st.fixed_dictionaries({"images": st.lists(_record(), max_size=3) | JSON,
                                   "annotations": st.lists(_record(), max_size=3) | JSON}) | JSON,
       seed=st.integers(0, 99))
def test_dataset_readers_only_raise_the_documented_error(tmp_path_factory, data, kind, content, jsonl, inst, seed):
    _data()
    if data.draw(st.booleans(), "mostly well-formed records"):     # deep cases: reach sample() with odd values
        content = jsonl = data.draw(st.lists(_kind_record(kind), min_size=1, max_size=3))
        if kind == "refer_api":
            small = st.integers(0, 3)
            for r in content:
                r.update(image_id=data.draw(small), ann_id=data.draw(small))
            inst = data.draw(st.fixed_dictionaries({
                "images": st.lists(st.fixed_dictionaries({"id": small, "width": GOOD_VALUE["width"],
                                                          "height": GOOD_VALUE["height"]}), max_size=4),
                "annotations": st.lists(st.fixed_dictionaries({"id": small, "bbox": GOOD_VALUE["bbox"]}),
                                        max_size=4)}))
    d = _fuzz_dir(tmp_path_factory)
    ann, lines = d / "ann.json", d / "ann.jsonl"
    _write(ann, content)
    lines.write_text("\n".join(json.dumps(v) for v in jsonl) if not isinstance(content, bytes) else
                     content.decode("utf-8", "replace"), encoding="utf-8")
    try:
        if kind == "mixture":
            parts = load_mixture(ann)
            readers = [ds for ds, _ in parts]
        elif kind == "refer_api":
            (d / "refs.p").write_bytes(pickle.dumps(content if not isinstance(content, bytes) else jsonl))
            _write(d / "instances.json", inst)
            readers = [open_dataset("refcoco", d / "refs.p"), open_dataset("invrefcoco", d / "refs.p")]
        else:
            readers = [open_dataset(kind, lines if kind == "jsonl" else ann)]
        for ds in readers:
            for i in range(min(len(ds), 4)):
                s = ds.sample(i, random.Random(seed))
                assert s.turns and all(isinstance(q, str) and isinstance(a, str) for q, a in s.turns)
                assert s.image is None or isinstance(s.image, str)
    except MiniGPTv2Error:
        pass


_FUZZ_DIR: list = []


def _fuzz_dir(factory) -> Path:
    if not _FUZZ_DIR:
        _FUZZ_DIR.append(factory.mktemp("fuzzdata"))
    return _FUZZ_DIR[0]



# =============================================================================================================
@pytest.mark.fuzz
def test_total_generated_cases(request):
    """Last in this file: on a full run of the file, every counted test above reached its floor of generated cases."""
    CASES.check(request)
