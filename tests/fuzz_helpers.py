"""Shared pieces of the hypothesis fuzz tests (tests/test_fuzz_text.py, test_fuzz_images.py, test_fuzz_requests.py
and tests/serve/test_fuzz_server.py): the reproducible settings, the per-file case counter with its floors, the
strategies for text, JSON and user prompts, the seed images and their mutator, the tiny model fixture, and the
instant generation the server fuzz tests patch in.

Names keep the spelling they had in the single file these came from (`_save`, `_mutate`), so the test bodies read
as before.
"""
import io
import random
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import tiny_model
from minigptv2 import boxes as bx
from minigptv2.errors import MiniGPTv2Error
import minigptv2.generate  # noqa: F401 - the package's `generate` attribute is the function
from minigptv2.generate import Result
from minigptv2.serve import server as srv

gen = sys.modules["minigptv2.generate"]


def fuzz_settings(n: int):
    """Reproducible settings: fixed seed, no example database, no per-example deadline."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


class CaseCounter:
    """The generated cases each counted test of one file ran, checked against a floor per test at the end of the file.

    A file makes one (`CASES = CaseCounter()`); each counted test gets a tick at import time,
    `_tick = CASES.counted("name", floor=N)`, and calls it once per case; the file's last test,
    `test_total_generated_cases`, calls `CASES.check(request)`. The floor is what the test generates today (its
    `max_examples`, or its loop), rounded down a little, so fuzzing cut down silently (fewer examples, a filter or
    an `assume` that now rejects most cases, a test that ticks no more) fails the check. The check only looks at its
    own file, whose tests pytest runs in the order written; when only part of the file was selected (-k, a test id,
    -m) it skips.
    """

    def __init__(self):
        self.cases: Counter = Counter()         # counted name -> generated cases run
        self.floors: dict[str, int] = {}        # counted name -> the fewest cases a full run of the file must reach

    def counted(self, name: str, floor: int):
        assert name not in self.floors, f"{name!r} is counted twice"
        self.floors[name] = floor

        def tick():
            self.cases[name] += 1
        return tick

    def check(self, request) -> None:
        total = sum(self.cases.values())
        print(f"\nfuzz cases: {dict(self.cases)} total={total} (floors: total={sum(self.floors.values())})")
        module = request.module
        defined = {n for n, f in vars(module).items() if n.startswith("test_") and callable(f)}
        selected = {getattr(i, "originalname", i.name) for i in request.session.items
                    if getattr(i, "module", None) is module}
        if selected != defined:
            pytest.skip(f"only part of {module.__name__} was selected; the case counts are checked on a full run")
        short = {n: f"{self.cases[n]} < {f}" for n, f in self.floors.items() if self.cases[n] < f}
        assert not short, f"fuzz tests ran fewer cases than their floor (a failing test stops early): {short}"


# ---- shared strategies -------------------------------------------------------------------------------------
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)   # valid Unicode, no lone surrogates
SURROGATES = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.sampled_from("a <"),
                     min_size=1, max_size=4)       # lone surrogates: what a JSON "\ud800" escape decodes to
JSON_SCALAR = (st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30) | st.integers()
               | st.floats(allow_nan=True, allow_infinity=True) | TEXT | SURROGATES)
JSON = st.recursive(JSON_SCALAR, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(TEXT.filter(lambda s: len(s) < 12) | SURROGATES, kids, max_size=4), max_leaves=12)
INJECT = ["<s>", "</s>", "<unk>", "<ImageHere>", "<Img>", "</Img>", "[INST]", "[/INST]", "<p>", "$$", "\x00", "▁",
          "<0x0A>", "<image>", "\n", "  ", "{<1><2><3><4>}"]
USER_TEXT = (st.lists(st.sampled_from(INJECT) | TEXT.filter(lambda s: len(s) < 10), min_size=1, max_size=12)
             .map("".join) | TEXT).filter(lambda s: s.strip())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random model and processor (one per test module that uses it)."""
    return tiny_model(tmp_path_factory.mktemp("fuzz"), seed=1)


# ---- seed images: valid files in the accepted and in refused formats, and a mutator ------------------------
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
             _save(rgb, "JPEG", quality=80), _save(rgb, "JPEG", exif=exif.tobytes()),
             _save(rgb, "JPEG", progressive=True),
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


# ---- the server: generation patched to be instant, and numbers at the edges ----------------------------------
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


# tiny, subnormal, huge and exact-boundary numbers: what once crashed sampling or number handling
EDGE_NUMBERS = [0, -0.0, 5e-324, 1e-323, 1e-300, 1e-45, 1.4e-45, 1e-38, 1.2e-38, 9.99e-6, srv.MIN_TEMPERATURE, 0.5,
                1, 2, 2.0000000001, 1e308, 1.7976931348623157e308, -5e-324, -1e-300, 2**53 + 1, 2**63, 2**64,
                10**400, -(10**400)]
