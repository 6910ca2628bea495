import io

import numpy as np
import pytest
from PIL import Image

from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import load_image


def _png(img, fmt="PNG", **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def test_modes_become_rgb():
    assert load_image(_png(Image.new("L", (5, 4), 100))).getpixel((0, 0)) == (100, 100, 100)
    rgba = Image.new("RGBA", (5, 4), (255, 0, 0, 0))            # fully transparent -> white
    assert load_image(_png(rgba)).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (5, 4))
    p.putpalette([0, 0, 255] * 256)
    assert load_image(_png(p)).getpixel((1, 1)) == (0, 0, 255)
    a16 = np.full((4, 5), 65535, dtype=np.uint16)
    im16 = Image.fromarray(a16, "I;16")
    assert load_image(_png(im16)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_png(Image.new("CMYK", (3, 3)), "JPEG")).mode == "RGB"


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6                                            # rotate 90° on display
    out = load_image(_png(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(MiniGPTv2Error, match="not a readable image"):
        load_image(b"hello, not an image")
    data = _png(Image.new("RGB", (64, 64), "blue"))
    with pytest.raises(MiniGPTv2Error, match="truncated|corrupt"):
        load_image(data[: len(data) // 2])
    with pytest.raises(MiniGPTv2Error, match="cannot open image .*missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(MiniGPTv2Error, match="over the limit"):
        load_image(_png(Image.new("L", (300, 300))), max_pixels=10_000)


def test_decompression_bomb_refused_before_decoding():
    # a 20000x20000 PNG header compresses to a few hundred KB; it must be refused from the header alone
    big = _png(Image.new("1", (20000, 20000)))
    with pytest.raises(MiniGPTv2Error, match="over the limit|not a readable"):
        load_image(big)
