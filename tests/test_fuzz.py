"""Property-based (hypothesis) fuzzing of every place untrusted input enters: the box formatter/parser, the prompt
renderer + processor, the image loader, the dataset readers and the server's JSON handling.

Every test is derandomized (fixed seed, no example database), so CI sees the same cases on every run. Each test
counts the cases it ran; `test_total_generated_cases` (last in the file) asserts the file ran >= 10,000.
The contract checked everywhere: bad input raises `MiniGPTv2Error` (library) or gets a 4xx JSON error (server);
nothing else escapes, and accepted input gives a correct result.
"""
import base64
import io
import json
import pickle
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import tiny_model
from minigptv2 import boxes as bx
from minigptv2 import prompts
from minigptv2.serve import server as srv
from minigptv2.data.datasets import KINDS, load_mixture, open_dataset
from minigptv2.errors import MiniGPTv2Error
import minigptv2.generate  # noqa: F401 - the package's `generate` attribute is the function
from minigptv2.generate import Result
from minigptv2.images import load_image

gen = sys.modules["minigptv2.generate"]

CASES: Counter = Counter()          # test name -> generated cases run
EXPECTED_TESTS: set = set()         # every counted test registers here at import time
MIN_TOTAL_CASES = 10_000


def fuzz_settings(n: int):
    """Reproducible settings: fixed seed, no example database, no per-example deadline."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def counted(name: str):
    EXPECTED_TESTS.add(name)

    def tick():
        CASES[name] += 1
    return tick


# ---- shared strategies -------------------------------------------------------------------------------------
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)   # valid Unicode, no lone surrogates
SURROGATES = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.sampled_from("a <"),
                     min_size=1, max_size=4)       # lone surrogates: what a JSON "\ud800" escape decodes to
GRID = st.integers(0, bx.GRID)
BOX = st.tuples(GRID, GRID, GRID, GRID)
PHRASE_CHARS = st.characters(codec="utf-8", exclude_characters="<>{}")
PHRASE = st.text(alphabet=PHRASE_CHARS, max_size=30)
JSON_SCALAR = (st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30) | st.integers()
               | st.floats(allow_nan=True, allow_infinity=True) | TEXT | SURROGATES)
JSON = st.recursive(JSON_SCALAR, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(TEXT.filter(lambda s: len(s) < 12) | SURROGATES, kids, max_size=4), max_leaves=12)
# box-ish fragments, so the random strings actually reach the parser's interesting paths
BOX_TOKENS = ["{", "}", "<", ">", "<p>", "</p>", "<delim>", " ", "-", "\n", "<12>", "<100>", "<101>", "<-3>",
              "<0>", "<99999>", "{<1><2><3><4>}", "{<0><0><100><100>}", "{ <5> <6> <7> <8> }", "<p>x</p>"]
BOXISH = st.lists(st.sampled_from(BOX_TOKENS) | st.integers(-20, 20000).map(str) | TEXT.filter(lambda s: len(s) < 4),
                  max_size=40).map("".join)


# =============================================================================================================
# 1. boxes: round trips, and the parser never crashes
# =============================================================================================================
_box_round = counted("box_round_trip")


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


_box_any = counted("box_parse_any_text")


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


_grid = counted("box_grid_conversion")


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
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("fuzz"), seed=1)


@pytest.fixture(scope="module")
def proc(tiny):
    return tiny[1]


INJECT = ["<s>", "</s>", "<unk>", "<ImageHere>", "<Img>", "</Img>", "[INST]", "[/INST]", "<p>", "$$", "\x00", "▁",
          "<0x0A>", "<image>", "\n", "  ", "{<1><2><3><4>}"]
USER_TEXT = (st.lists(st.sampled_from(INJECT) | TEXT.filter(lambda s: len(s) < 10), min_size=1, max_size=12)
             .map("".join) | TEXT).filter(lambda s: s.strip())
_prompt = counted("prompt_structure")


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
# 3. the image loader: MiniGPTv2Error or a valid RGB image, never anything else
# =============================================================================================================
def _save(img, fmt, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def _seed_images() -> list[bytes]:
    """Small valid images in the accepted formats (images.FORMATS), many modes and variants."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (9, 13, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 255, (7, 5, 4), dtype=np.uint8), "RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = [_save(rgb, "PNG"), _save(rgba, "PNG"), _save(rgb.convert("L"), "PNG"), _save(rgb.convert("P"), "PNG"),
             _save(rgb.convert("1"), "PNG"), _save(rgba.convert("LA"), "PNG"),
             _save(Image.fromarray(rng.integers(0, 65535, (6, 4), dtype=np.uint16), "I;16"), "PNG"),
             _save(rgb, "JPEG", quality=80), _save(rgb, "JPEG", exif=exif.tobytes()), _save(rgb, "JPEG", progressive=True),
             _save(rgb.convert("L"), "JPEG"), _save(rgb.convert("CMYK"), "JPEG"),
             _save(rgb.convert("P"), "GIF"), _save(rgba, "GIF", transparency=0),
             _save(rgb, "BMP"), _save(rgb, "TIFF"), _save(rgb, "WEBP"),
             _save(rgb.convert("P"), "PNG", transparency=3), _save(rgb.convert("1"), "BMP"),
             _save(rgb.convert("P"), "BMP"),
             _save(rgb, "TIFF", compression="tiff_deflate"), _save(rgb, "TIFF", compression="tiff_lzw"),
             _save(rgb, "TIFF", compression="packbits"), _save(rgb, "TIFF", compression="jpeg"),
             _save(rgb.convert("CMYK"), "TIFF"), _save(rgba.convert("PA"), "TIFF"), _save(rgb.convert("1"), "TIFF"),
             _save(Image.fromarray(rng.integers(0, 65535, (6, 4), dtype=np.uint16), "I;16"), "TIFF"),
             _save(rgba, "WEBP", lossless=True, exact=True), _save(rgb, "MPO")]
    frames = [rgb.convert("P"), rgb.rotate(90, expand=True).convert("P")]
    seeds.append(_save(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    seeds.append(_save(rgb, "PNG", save_all=True, append_images=[rgb.rotate(180)]))       # APNG
    seeds.append(_save(rgb, "WEBP", save_all=True, append_images=[rgb.rotate(180)]))      # animated WebP
    return seeds


def _refused_seed_images() -> list[bytes]:
    """Small valid images Pillow reads, in formats outside images.FORMATS: all must be refused unopened."""
    rgb = Image.new("RGB", (32, 32), (10, 200, 30))
    return [_save(rgb, f) for f in ("ICO", "ICNS", "PPM", "TGA", "PCX", "SGI", "IM", "QOI", "DDS", "JPEG2000")] \
        + [_save(rgb.convert("P"), "BLP"), _save(rgb.convert("1"), "MSP"), _save(rgb.convert("1"), "XBM"),
           _save(rgb.convert("L"), "PPM"), _save(rgb.convert("F"), "SPIDER")]


SEEDS = _seed_images()
REFUSED_SEEDS = _refused_seed_images()
# valid headers (or their first bytes) of the accepted formats, of formats Pillow could read, and of others
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\xff\xd8\xff\xe1", b"\xff\xd8\xff\xdb", b"\xff\xd8\xff\xee", b"\xff\xd8\xff\xc0", b"\xff\xd8\xff\xc2",
    b"GIF87a", b"GIF89a", b"BM", b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
    b"II*\x00", b"MM\x00*", b"II*\x00\x08\x00\x00\x00", b"II+\x00\x08\x00\x00\x00", b"MM\x00+\x00\x08\x00\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X",
    b"\x00\x00\x01\x00", b"\x00\x00\x02\x00", b"icns", b"DDS |\x00\x00\x00", b"FTEX", b"BLP1", b"BLP2",
    b"8BPS\x00\x01", b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51", b"P1\n", b"P4\n", b"P5\n", b"P6\n",
    b"Pf\n", b"PF\n", b"P7 332\n", b"qoif", b"\x0a\x05\x01\x08", b"\x01\xda\x01\x01", b"\x59\xa6\x6a\x95",
    b"#define im_width ", b"/* XPM */", b"SIMPLE  =                    T", b"Image type: RGB image\r\n", b"DanM",
    b"LinS", b"%!PS-Adobe-3.0 EPSF-3.0", b"\xc5\xd0\xd3\xc6", b"\x00\x00\x00\x00\x11\xaf",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"%PDF-1.4", b"\xd7\xcd\xc6\x9a", b"\x00\x00\x00\x1cftypavif", b"\x00\x00\x00\x18ftypheic", b"\xb1\x68\xde\x3a",
    b"BUFR", b"GRIB", b"\x89HDF\r\n\x1a\n", b"\x80\xe8\x00\x00", b"\x00\x00\x01\xb3", b"\x1c\x01",
]
FUZZ_MAX_PIXELS = 1 << 20


def _check_loaded(data, max_pixels=FUZZ_MAX_PIXELS):
    try:
        img = load_image(data, max_pixels=max_pixels)
    except MiniGPTv2Error:
        return None
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    w, h = img.size
    assert w > 0 and h > 0 and w * h <= max_pixels
    assert np.asarray(img).shape == (h, w, 3)
    return img


def _official(data: bytes) -> np.ndarray:
    """What the official code sees: Image.open(f).convert("RGB")."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


_img_random = counted("image_random_bytes")


@pytest.mark.fuzz
@fuzz_settings(1200)
@given(data=st.binary(max_size=600) | st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=600)).map(b"".join))
def test_image_loader_random_bytes(data):
    _img_random()
    _check_loaded(data)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.choice(["flip", "set", "cut", "insert", "delete", "chunk"])
        pos = rng.randrange(max(1, len(data)))
        if op == "flip" and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == "set" and data:
            data[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == "delete":
            del data[pos:pos + rng.randint(1, 16)]
        else:   # overwrite a run, e.g. a header's width/height fields
            blob = rng.randbytes(rng.randint(1, 8))
            data[pos:pos + len(blob)] = blob
    return bytes(data)


@st.composite
def mutated(draw):
    return _mutate(draw(st.sampled_from(SEEDS + REFUSED_SEEDS)), random.Random(draw(st.integers(0, 2 ** 32))))


_img_mut = counted("image_mutated_valid")


@pytest.mark.fuzz
@fuzz_settings(1800)
@given(data=mutated())
def test_image_loader_mutated_valid_images(data):
    _img_mut()
    _check_loaded(data)


N_BULK = 20_000
_img_bulk = counted("image_bulk_signatures")


@pytest.mark.fuzz
def test_image_loader_bulk_over_many_signatures():
    """N_BULK cheap inputs from a fixed seed, in five kinds, round robin: a signature + random bytes, a valid image
    cut short + random bytes, a mutated valid image, a valid image in an accepted format (must load, exactly as the
    official code loads it), a valid image in a refused format (must be refused by name)."""
    rng = random.Random(29)
    official = [_official(s) for s in SEEDS]
    assert len(set(SIGNATURES)) >= 40 and len(SEEDS) >= 30
    loaded, used = Counter(), set()
    for i in range(N_BULK):
        _img_bulk()
        kind = i % 5
        if kind == 0:
            sig = rng.choice(SIGNATURES)
            used.add(sig)
            data = sig + rng.randbytes(rng.randrange(400))
        elif kind == 1:
            seed = rng.choice(SEEDS + REFUSED_SEEDS)
            data = seed[:rng.randrange(len(seed))] + rng.randbytes(rng.randrange(64))
        elif kind == 2:
            data = _mutate(rng.choice(SEEDS + REFUSED_SEEDS), rng)
        elif kind == 3:
            k = rng.randrange(len(SEEDS))
            img = _check_loaded(SEEDS[k])
            assert img is not None, f"valid seed image {k} was refused"
            assert np.array_equal(np.asarray(img), official[k]), k
            loaded[kind] += 1
            continue
        else:
            with pytest.raises(MiniGPTv2Error, match="not a readable image"):
                load_image(rng.choice(REFUSED_SEEDS))
            continue
        loaded[kind] += _check_loaded(data) is not None
    per_kind = N_BULK // 5
    assert used == set(SIGNATURES)
    assert loaded[3] == per_kind
    # the fuzzed kinds exercise the decoders, not just the header checks: some of them must still load
    assert loaded[1] > per_kind // 40 and loaded[2] > per_kind // 20, dict(loaded)


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "I;16B", "LA", "PA",
         "RGBX", "RGBa", "La"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", None]      # None: hand the PIL image over directly
_img_modes = counted("image_sizes_and_modes")


@pytest.mark.fuzz
@fuzz_settings(500)
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS), w=st.integers(1, 70), h=st.integers(1, 70),
       seed=st.integers(0, 2 ** 16), limit=st.sampled_from([FUZZ_MAX_PIXELS, 1000]))
def test_image_loader_random_sizes_and_modes(mode, fmt, w, h, seed, limit):
    rng = np.random.default_rng(seed)
    img = Image.new(mode, (w, h))
    if mode not in ("F", "I", "I;16", "I;16B"):
        raw = rng.integers(0, 256, len(img.tobytes()), dtype=np.uint8).tobytes()
        img.frombytes(raw)
    if mode == "P":
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
    src = img
    if fmt is not None:
        try:
            src = _save(img, fmt)
        except (OSError, ValueError, KeyError, TypeError):
            assume(False)          # PIL cannot write this mode in this format: nothing to load
    _img_modes()
    out = _check_loaded(src, limit)
    opened = img if fmt is None else Image.open(io.BytesIO(src))
    try:
        opened.load()
        readable = True
    except OSError:        # PIL writes some files it cannot read back (a 1x1 YCbCr TIFF): refused, as PIL fails
        readable = False
    if w * h > limit or fmt == "PPM" or opened.mode in ("F", "I", "La") or not readable:   # PPM: not accepted
        assert out is None
        return
    assert out is not None and out.size == (w, h)
    assert np.array_equal(np.asarray(out), np.asarray(opened.convert("RGB")))   # the official conversion


# =============================================================================================================
# 4. dataset readers: any file content -> a reader whose samples work, or MiniGPTv2Error
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
_data = counted("dataset_readers")


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
# 5. the server's JSON handling: 200 or a 4xx JSON error, never a 5xx
# =============================================================================================================
ANSWER = "<p>red circle</p> {<12><40><38><71>}"


def instant_generate(model, processor, images, prompts_, *, streamer, max_new_tokens, **kw):
    """Generation patched to be instant: the real prompt checks run (conversation shape, prompt ids, context
    window), then a fixed answer is handed to the engine's per-step streamer token by token, as HF does."""
    out = []
    tokens = processor.tok.encode(ANSWER) + [processor.tok.eos_id]
    for image, (qs, ans) in zip(images, gen._normalise(prompts_)):
        ids = processor.prompt_ids(qs, ans, has_image=image is not None)
        if len(ids) + max_new_tokens > processor.config.max_context_len:
            raise MiniGPTv2Error("context window")
        out.append(Result(ANSWER, tokens, bx.parse_boxes(ANSWER), image.size if image is not None else None))
    streamer.put(torch.zeros((len(images), 0), dtype=torch.long))      # the prompt (inputs_embeds: no ids)
    for t in tokens:
        streamer.put(torch.full((len(images),), t))
    streamer.end()
    return out


FUZZ_LIMITS = srv.Limits(max_body_bytes=100_000, max_image_pixels=50_000, max_tokens=64, default_max_tokens=16)


@pytest.fixture(scope="module")
def fuzz_client(tiny):
    model, processor = tiny
    engine = srv.Engine(model, processor, "tiny-fuzz", generate_fn=instant_generate, batch_wait_ms=0)
    try:
        with TestClient(srv.create_app(engine, FUZZ_LIMITS, webui=False), raise_server_exceptions=False) as c:
            yield c
    finally:
        engine.close()


def _data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


SMALL_PNG = _save(Image.new("RGB", (20, 10), (200, 30, 30)), "PNG")
BIG_PNG = _save(Image.new("L", (300, 300)), "PNG")            # over FUZZ_LIMITS.max_image_pixels
URLS = st.sampled_from([_data_url(SMALL_PNG), _data_url(SEEDS[7], "image/jpeg"), _data_url(SEEDS[12], "image/gif"),
                        _data_url(BIG_PNG), _data_url(b"not an image"), _data_url(b""), "data:image/png;base64,@@@",
                        "data:image/png,raw", "data:", "http://10.0.0.1/x.png", "https://127.0.0.1/a.png",
                        "file:///etc/passwd", "ftp://x/y", "", "javascript:alert(1)", "data:;base64," + "A" * 7]) \
    | mutated().map(_data_url) | TEXT
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": USER_TEXT | TEXT | JSON}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": URLS}) | URLS
                           | JSON}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "audio", "input_image", ""]) | JSON},
                          optional={"text": JSON, "image_url": JSON}),
    JSON)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "USER", ""]) | JSON},
    optional={"content": USER_TEXT | TEXT | SURROGATES | st.lists(PART, max_size=3) | JSON, "name": TEXT})
# tiny, subnormal, huge and exact-boundary numbers: what once crashed sampling or number handling
EDGE_NUMBERS = [0, -0.0, 5e-324, 1e-323, 1e-300, 1e-45, 1.4e-45, 1e-38, 1.2e-38, 9.99e-6, srv.MIN_TEMPERATURE, 0.5,
                1, 2, 2.0000000001, 1e308, 1.7976931348623157e308, -5e-324, -1e-300, 2**53 + 1, 2**63, 2**64,
                10**400, -(10**400)]
NUMBER = (st.sampled_from(EDGE_NUMBERS) | st.floats(allow_nan=True, allow_infinity=True) | st.integers()
          | st.integers(-(10**400), 10**400))
PARAMS = {
    "model": st.sampled_from(["tiny-fuzz", "gpt-4"]) | JSON,
    "temperature": NUMBER | JSON, "top_p": NUMBER | JSON,
    "max_tokens": st.integers(-2, 600) | NUMBER | JSON, "max_completion_tokens": st.integers(-2, 600) | NUMBER | JSON,
    "stream": st.booleans() | JSON, "stream_options": st.sampled_from([{"include_usage": True}, {}]) | JSON,
    "user": TEXT | JSON, "n": st.sampled_from([1, 2]) | JSON, "stop": st.sampled_from([[], ["x"]]) | JSON,
    "logprobs": st.booleans() | JSON, "presence_penalty": st.sampled_from([0, 1]),
    "frequency_penalty": st.sampled_from([0, 1]), "tools": JSON, "seed": st.integers(),
}
BODY = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)},
                          optional={k: v for k, v in PARAMS.items()}),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(   # well-formed conversations
        {"role": st.just("user"), "content": USER_TEXT}), min_size=1, max_size=1)},
        optional={"max_tokens": st.integers(1, 64), "stream": st.booleans(),
                  "temperature": st.sampled_from([0, 0.7]) | st.floats(srv.MIN_TEMPERATURE, 2),
                  "top_p": st.floats(0, 1, exclude_min=True)}),
    st.fixed_dictionaries({}, optional={k: v for k, v in PARAMS.items()} | {"messages": JSON}),
    JSON)
RAW_BODY = st.sampled_from([b"", b"{", b"[" * 50_000, b'{"messages": ' + b"[" * 50_000, b"\xff\xfe", b"nul",
                            b'{"messages": [{"role": "user", "content": "\\ud800 hi"}]}', b'{"\\udfff": 1}',
                            b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": '
                            b'{"url": "http://\\ud800/"}}, {"type": "\\ud800"}]}]}',
                            b'{"messages": [{"role": "\\ud800", "content": "x"}], "n": "\\ud800"}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + b"0" * 5000 + b"}",
                            b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e-300}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 5e-324, "stream": true}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1' + b"0" * 400 + b"}",
                            b'{"messages": [{"role": "user", "content": "hi"}]}',              # valid: a 200
                            b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}']) | st.binary(
    max_size=200)
_server = counted("server_json")


SERVER_OUTCOMES: Counter = Counter()      # (test, status) -> replies


def _check_reply(r, body, test: str):
    SERVER_OUTCOMES[test, r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text[:500], json.dumps(body)[:500] if body is not None else None)
    if r.status_code == 200:
        if r.headers["content-type"].startswith("text/event-stream"):
            lines = [ln for ln in r.text.splitlines() if ln]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
            assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == ANSWER
        else:
            reply = r.json()
            assert reply["choices"][0]["message"]["content"] == ANSWER
            assert reply["boxes"][0]["box"] == [12, 40, 38, 71]
    else:
        assert 400 <= r.status_code < 500
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and isinstance(err["message"], str) and err["message"]


def _answered(test: str) -> int:
    return sum(n for (t, status), n in SERVER_OUTCOMES.items() if t == test and status == 200)


@given(body=BODY)
def _random_json_body(fuzz_client, body):
    _server()
    raw = json.dumps(body).encode()
    r = fuzz_client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    _check_reply(r, body, "json")


@pytest.mark.fuzz
def test_server_random_json_bodies_get_200_or_4xx(fuzz_client):
    fuzz_settings(1000)(_random_json_body)(fuzz_client)
    assert _answered("json") >= 100, SERVER_OUTCOMES        # valid requests get through, not only refusals


_server_raw = counted("server_raw_bodies")


@given(raw=RAW_BODY, ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                            "", "application/x-www-form-urlencoded", "APPLICATION/JSON"]))
def _raw_body(fuzz_client, raw, ctype):
    _server_raw()
    headers = {"content-type": ctype} if ctype else {}
    r = fuzz_client.post("/v1/chat/completions", content=raw, headers=headers)
    _check_reply(r, None, "raw")
    if not ctype or ctype.split(";")[0].strip().lower() != "application/json":
        assert r.status_code == 415


@pytest.mark.fuzz
def test_server_raw_bodies_get_200_or_4xx(fuzz_client):
    fuzz_settings(300)(_raw_body)(fuzz_client)
    assert _answered("raw") >= 3, SERVER_OUTCOMES


# =============================================================================================================
# 6. over-long prompts: refused with a clear error, never silently cut (library, cached path and server)
# =============================================================================================================
_ctx = counted("context_window")


@pytest.mark.fuzz
@fuzz_settings(40)
@given(words=st.integers(1, 600), max_new=st.integers(1, 64), has_image=st.booleans())
def test_over_long_prompts_are_refused_exactly_at_the_context_window(tiny, fuzz_client, words, max_new, has_image):
    _ctx()
    model, processor = tiny
    ctx = processor.config.max_context_len
    text = "[vqa] " + " ".join(["red"] * words)       # no outer spaces: the server strips message text
    n = len(processor.prompt_ids([text], has_image=has_image))
    image = Image.new("RGB", (20, 10)) if has_image else None
    fits = n + max_new <= ctx

    def no_model_generate(*a, **kw):      # stop right after the checks: the model itself is not run here
        raise _Reached()

    orig = model.language_model.generate
    model.language_model.generate = no_model_generate
    try:
        try:
            gen.generate(model, processor, [image], [text], max_new_tokens=max_new)
            raise AssertionError("unreachable")
        except _Reached:
            assert fits
        except MiniGPTv2Error as e:
            assert not fits and "context window" in str(e) and str(n) in str(e)
    finally:
        model.language_model.generate = orig
    msg = [{"role": "user", "content": ([{"type": "image_url", "image_url": {"url": _data_url(SMALL_PNG)}}]
                                        if has_image else []) + [{"type": "text", "text": text}]}]
    r = fuzz_client.post("/v1/chat/completions", json={"messages": msg, "max_tokens": max_new})
    if fits and max_new <= FUZZ_LIMITS.max_tokens:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert str(n) in r.json()["error"]["message"]


class _Reached(Exception):
    pass


@pytest.mark.fuzz
def test_over_long_prompt_boundary_with_the_real_model(tiny):
    """At the boundary the real generate accepts, and the output never goes past the context window."""
    model, processor = tiny
    ctx = processor.config.max_context_len
    text = "[vqa] " + "red " * 400
    n = len(processor.prompt_ids([text], has_image=False))
    assert n < ctx
    [r] = gen.generate(model, processor, [None], [text], max_new_tokens=ctx - n)
    assert len(r.token_ids) <= ctx - n
    with pytest.raises(MiniGPTv2Error, match="context window"):
        gen.generate(model, processor, [None], [text], max_new_tokens=ctx - n + 1)
    with pytest.raises(MiniGPTv2Error, match="context window"):
        gen.generate_cached(model, processor, Image.new("RGB", (8, 8)), text, gen.PrefixCache(),
                            max_new_tokens=ctx)
    chat = gen.Chat(model, processor, None, max_new_tokens=ctx - n + 1)
    with pytest.raises(MiniGPTv2Error, match="context window"):
        chat.ask(text)
    assert chat.messages == []          # a refused turn leaves the history as it was


# =============================================================================================================
@pytest.mark.fuzz
def test_total_generated_cases():
    ran = set(CASES)
    total = sum(CASES.values())
    print(f"\nfuzz cases: {dict(CASES)} total={total}")
    if ran != EXPECTED_TESTS:
        pytest.skip(f"only part of the file ran ({sorted(ran)}); the total is checked on a full run")
    assert total >= MIN_TOTAL_CASES, dict(CASES)
