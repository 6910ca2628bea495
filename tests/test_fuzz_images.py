"""Property-based (hypothesis) fuzzing of the image loader (`minigptv2.images.load_image`): random bytes, random
bytes behind 60+ format signatures, mutated and truncated valid images in accepted and refused formats, and valid
images of every mode and size. Every outcome is `MiniGPTv2Error` or a valid RGB image, never anything else; valid
images in an accepted format load exactly as the official code loads them.

Derandomized (fixed seed, no example database), so CI sees the same cases on every run. Each test counts the cases
it ran against a floor (tests/fuzz_helpers.py, `CaseCounter`); `test_total_generated_cases` (last in the file)
checks them: together at least 23,380 cases.
"""
import io
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from fuzz_helpers import REFUSED_SEEDS, SEEDS, CaseCounter, _mutate, _save, fuzz_settings, mutated
from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import load_image

CASES = CaseCounter()

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


_img_random = CASES.counted("image_random_bytes", floor=1150)


@pytest.mark.fuzz
@fuzz_settings(1200)
@given(data=st.binary(max_size=600) | st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=600)).map(b"".join))
def test_image_loader_random_bytes(data):
    _img_random()
    _check_loaded(data)



_img_mut = CASES.counted("image_mutated_valid", floor=1750)


@pytest.mark.fuzz
@fuzz_settings(1800)
@given(data=mutated())
def test_image_loader_mutated_valid_images(data):
    _img_mut()
    _check_loaded(data)


N_BULK = 20_000
_img_bulk = CASES.counted("image_bulk_signatures", floor=20_000)     # a plain loop: exact


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
_img_modes = CASES.counted("image_sizes_and_modes", floor=480)


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
@pytest.mark.fuzz
def test_total_generated_cases(request):
    """Last in this file: on a full run of the file, every counted test above reached its floor of generated cases."""
    CASES.check(request)
