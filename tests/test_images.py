"""The image loader (docs/images.md): official preprocessing for every mode, the format allow-list, the pixel cap
checked before any decode, and clear errors.

Expected tensors are computed here from the official definition with plain PIL + torch, never with our code:
`Image.open(f).convert("RGB")`, then BLIP's eval transform: torchvision's Resize((448, 448), BICUBIC) on the PIL
image (which is PIL's resize), ToTensor (/255) and Normalize with the CLIP mean and std.
"""
import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from minigptv2 import images
from minigptv2.config import preset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import ImageTooLarge, image_size, load_image
from minigptv2.processor import MiniGPTv2ImageProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 448
W, H = 19, 13          # small, not square, so a rotation or a transposition shows


def official_pixels(img: Image.Image) -> torch.Tensor:
    img = img.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    x = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
    return x.sub(torch.tensor(CLIP_MEAN).view(3, 1, 1)).div(torch.tensor(CLIP_STD).view(3, 1, 1))


@pytest.fixture(scope="module")
def proc():
    p = MiniGPTv2ImageProcessor.from_config(preset("official-7b"))   # the official config: 448, CLIP mean / std
    assert p.image_size == SIZE
    return p


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


# ---- fixtures: every mode, generated from a fixed seed ---------------------------------------------------------
def _mode_images() -> dict:
    rng = np.random.default_rng(28)

    def raw(mode, nbytes_per_pixel, dtype=np.uint8, hi=256):
        return Image.frombytes(mode, (W, H), rng.integers(0, hi, H * W * nbytes_per_pixel, dtype=dtype).tobytes())

    alpha = np.where(rng.random((H, W)) < 0.4, 0, rng.integers(0, 256, (H, W))).astype(np.uint8)  # 40% transparent
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    p = Image.frombytes("P", (W, H), rng.integers(0, 256, H * W, dtype=np.uint8).tobytes())
    p.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    pa = p.convert("PA")
    pa.putalpha(Image.fromarray(alpha))
    i16 = np.where(rng.random((H, W)) < 0.5, rng.integers(0, 256, (H, W)), rng.integers(0, 65536, (H, W)))
    return {
        "RGB": Image.fromarray(rgb), "RGBA": Image.fromarray(np.dstack([rgb, alpha])),
        "LA": Image.fromarray(np.dstack([grey, alpha])), "L": Image.fromarray(grey), "1": Image.fromarray(grey > 127),
        "P": p, "PA": pa, "CMYK": raw("CMYK", 4), "YCbCr": raw("YCbCr", 3), "LAB": raw("LAB", 3),
        "HSV": raw("HSV", 3), "RGBX": raw("RGBX", 4), "RGBa": raw("RGBa", 4),
        "I;16": Image.frombytes("I;16", (W, H), i16.astype("<u2").tobytes()),
        "I;16B": Image.frombytes("I;16B", (W, H), i16.astype(">u2").tobytes()),
    }


MODE_IMAGES = _mode_images()
EXIF_ROTATE = Image.Exif()
EXIF_ROTATE[0x0112] = 6        # "rotate 90° on display"; the official code does not apply it
# (id, mode of the source image, format, save options, mode Pillow opens the file as)
FILE_CASES = [
    ("RGB.png", "RGB", "PNG", {}, "RGB"), ("RGB-exif-rotated.jpg", "RGB", "JPEG", {"exif": EXIF_ROTATE}, "RGB"),
    ("RGB-progressive.jpg", "RGB", "JPEG", {"progressive": True}, "RGB"), ("RGB.bmp", "RGB", "BMP", {}, "RGB"),
    ("RGB.tiff", "RGB", "TIFF", {}, "RGB"), ("RGB-deflate.tiff", "RGB", "TIFF", {"compression": "tiff_deflate"}, "RGB"),
    ("RGB.webp", "RGB", "WEBP", {"quality": 90}, "RGB"), ("RGB.gif", "RGB", "GIF", {}, "P"),
    ("RGBA.png", "RGBA", "PNG", {}, "RGBA"), ("RGBA.tiff", "RGBA", "TIFF", {}, "RGBA"),
    ("RGBA.webp", "RGBA", "WEBP", {"lossless": True, "exact": True}, "RGBA"),
    ("LA.png", "LA", "PNG", {}, "LA"), ("LA.tiff", "LA", "TIFF", {}, "LA"), ("PA.tiff", "PA", "TIFF", {}, "PA"),
    ("P.png", "P", "PNG", {}, "P"), ("P-transparent-index.png", "P", "PNG", {"transparency": 7}, "P"),
    ("P-alpha-table.png", "P", "PNG", {"transparency": bytes(range(0, 256, 3))}, "P"),
    ("P-transparent.gif", "P", "GIF", {"transparency": 7}, "P"), ("P.bmp", "P", "BMP", {}, "P"),
    ("L.png", "L", "PNG", {}, "L"), ("L.jpg", "L", "JPEG", {}, "L"), ("L.tiff", "L", "TIFF", {}, "L"),
    ("1.png", "1", "PNG", {}, "1"), ("1.bmp", "1", "BMP", {}, "1"), ("1.tiff", "1", "TIFF", {}, "1"),
    ("I16.png", "I;16", "PNG", {}, "I;16"), ("I16.tiff", "I;16", "TIFF", {}, "I;16"),
    ("I16B.tiff", "I;16B", "TIFF", {}, "I;16B"),
    ("CMYK.jpg", "CMYK", "JPEG", {}, "CMYK"), ("CMYK.tiff", "CMYK", "TIFF", {}, "CMYK"),
    ("YCbCr.jpg", "YCbCr", "JPEG", {}, "RGB"), ("LAB.tiff", "LAB", "TIFF", {}, "LAB"),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_files_match_the_official_preprocessing(proc, case, tmp_path):
    name, mode, fmt, kw, opened_mode = case
    data = save(MODE_IMAGES[mode], fmt, **kw)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == opened_mode          # the fixture exercises the mode it is named after
        expected = official_pixels(im)
    assert torch.equal(proc.tensor(data), expected)
    (tmp_path / name).write_bytes(data)
    assert torch.equal(proc.tensor(tmp_path / name), expected)


IN_MEMORY = ["RGBA", "LA", "PA", "P", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "I;16", "I;16B"]


@pytest.mark.parametrize("mode", IN_MEMORY)
def test_pil_images_match_the_official_conversion(proc, mode):
    img = MODE_IMAGES[mode]
    assert torch.equal(proc.tensor(img), official_pixels(img))


def test_transparent_pixels_keep_their_stored_colour():
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 0))
    assert load_image(save(rgba, "PNG")).getpixel((0, 0)) == (10, 20, 30)
    assert load_image(save(rgba, "WEBP", lossless=True, exact=True)).getpixel((0, 0)) == (10, 20, 30)
    assert load_image(Image.new("LA", (5, 4), (90, 0))).getpixel((0, 0)) == (90, 90, 90)
    p = Image.new("P", (5, 4), 3)
    p.putpalette([0, 0, 0] * 3 + [200, 100, 50] + [0, 0, 0] * 252)
    assert load_image(save(p, "PNG", transparency=3)).getpixel((1, 1)) == (200, 100, 50)
    assert load_image(save(p, "GIF", transparency=3)).getpixel((1, 1)) == (200, 100, 50)


def test_16_bit_grey_is_clipped_like_pillow():
    a = Image.frombytes("I;16", (4, 1), np.array([0, 100, 255, 40000], "<u2").tobytes())
    assert [load_image(save(a, "PNG")).getpixel((x, 0)) for x in range(4)] == \
        [(0, 0, 0), (100, 100, 100), (255, 255, 255), (255, 255, 255)]


def test_exif_orientation_is_not_applied():
    data = save(Image.new("RGB", (40, 20), "red"), "JPEG", exif=EXIF_ROTATE)
    assert load_image(data).size == (40, 20)


@pytest.mark.parametrize("mode,values", [("F", np.array([[0.0, 0.5, 1.0]], np.float32)),
                                         ("I", np.array([[0, 300, 70000]], np.int32))])
def test_float_and_32_bit_integer_images_are_refused(mode, values):
    img = Image.fromarray(values)
    assert img.mode == mode
    for src in (img, save(img, "TIFF")):
        with pytest.raises(MiniGPTv2Error, match=f"has mode {mode}, which has no standard 8-bit scale"):
            load_image(src)


def test_a_mode_pillow_cannot_convert_is_refused():
    with pytest.raises(MiniGPTv2Error, match="cannot convert image .* of mode La to RGB"):
        load_image(Image.new("La", (3, 3)))


# ---- allow-list, pixel cap, no decode before the cap -----------------------------------------------------------
@pytest.fixture
def decodes(monkeypatch):
    """Counts every decode Pillow starts (ImageFile.load)."""
    calls = []
    real = ImageFile.ImageFile.load

    def load(self):
        calls.append(self.format)
        return real(self)
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


def png_header(w: int, h: int, mode_byte: int = 0) -> bytes:
    """A PNG declaring w×h (1-bit grey) with one tiny IDAT: cheap to build, refused or failing before a full decode."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 1, mode_byte, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ico_holding(png: bytes) -> bytes:
    """An ICO whose one entry declares 256×256 (0, 0) and holds `png`."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


REFUSED_FORMATS = [("ICO", "RGBA"), ("ICNS", "RGBA"), ("PPM", "RGB"), ("TGA", "RGB"), ("PCX", "RGB"),
                   ("SGI", "RGB"), ("IM", "RGB"), ("QOI", "RGB"), ("DDS", "RGB"), ("BLP", "P"), ("MSP", "1"),
                   ("XBM", "1"), ("SPIDER", "F"), ("JPEG2000", "RGB")]


@pytest.mark.parametrize("fmt,mode", REFUSED_FORMATS, ids=[f for f, _ in REFUSED_FORMATS])
def test_formats_outside_the_allow_list_are_refused_unopened(fmt, mode, decodes):
    data = save(Image.new(mode, (32, 32)), fmt)
    with Image.open(io.BytesIO(data)) as im:        # a real image Pillow reads …
        assert im.format == fmt
    decodes.clear()
    with pytest.raises(MiniGPTv2Error, match="not a readable image: <.* bytes> .accepted formats: PNG, JPEG"):
        load_image(data)                             # … that we refuse without running its plugin
    assert decodes == []


def test_an_ico_holding_a_huge_png_is_never_decoded(decodes):
    data = ico_holding(png_header(13000, 13000))
    with pytest.raises(MiniGPTv2Error, match="not a readable image"):
        load_image(data)
    assert decodes == []


@pytest.mark.parametrize("fmt", images.FORMATS)
def test_the_cap_is_checked_from_the_header_before_decoding(fmt, decodes):
    data = save(Image.new("RGB", (40, 30), "red"), fmt)
    with pytest.raises(ImageTooLarge, match=r"is 40x30 = 1200 pixels, over the limit of 1000"):
        load_image(data, max_pixels=1000)
    with pytest.raises(ImageTooLarge):
        image_size(data, max_pixels=1000)
    assert decodes == []
    assert image_size(data) == (40, 30) and decodes == []
    assert load_image(data, max_pixels=1200).size == (40, 30) and set(decodes) == {fmt}


def test_header_only_bombs_are_refused_without_decoding(decodes):
    with pytest.raises(ImageTooLarge, match="8000x8000 = 64000000 pixels, over the limit of 16000000"):
        load_image(png_header(8000, 8000), max_pixels=16_000_000)
    with pytest.raises(ImageTooLarge, match="too large for Pillow's limit .*400000000 pixels"):  # > 2 × MAX_PIXELS
        load_image(png_header(20000, 20000))
    assert decodes == []
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS


def test_a_gif_frame_larger_than_its_screen_counts():
    data = bytearray(save(Image.new("P", (100, 80)), "GIF"))
    data[6:10] = struct.pack("<HH", 10, 10)                   # logical screen 10×10, the frame stays 100×80
    with pytest.raises(ImageTooLarge, match="100x80"):
        load_image(bytes(data), max_pixels=1000)


def test_tiff_tiles_count_against_the_cap(decodes):
    """A 16×16 deflate TIFF declaring 16384×16384 tiles: libtiff would allocate the whole tile (256 MB)."""
    payload = zlib.compress(bytes(4096))
    tags = [(256, 4, 16), (257, 4, 16), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
            (322, 4, 16384), (323, 4, 16384), (324, 4, 8 + 2 + 12 * 10 + 4), (325, 4, len(payload))]
    ifd = b"".join(struct.pack("<HHI", t, typ, 1) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
                   for t, typ, v in tags)
    data = b"II*\x00" + struct.pack("<IH", 8, len(tags)) + ifd + struct.pack("<I", 0) + payload
    with pytest.raises(ImageTooLarge, match="TIFF with 16384x16384 = 268435456 pixel tiles"):
        load_image(data)
    assert decodes == []


# ---- bad input: always MiniGPTv2Error, naming the problem ------------------------------------------------------
@pytest.mark.parametrize("magic", [b"DDS ", b"FTEX", b"BLP1", b"II+\x00", b"MM\x00+", b"\x00\x00\x01\x00",
                                   b"icns", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP"])
def test_plugin_failures_become_minigptv2_errors(magic):
    rng = np.random.default_rng(len(magic))
    for _ in range(20):
        with pytest.raises(MiniGPTv2Error):
            load_image(magic + rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(MiniGPTv2Error, match="not a readable image"):
        load_image(b"hello, not an image")
    data = save(Image.new("RGB", (64, 64), "blue"), "PNG")
    with pytest.raises(MiniGPTv2Error, match="corrupt or truncated image"):
        load_image(data[: len(data) // 2])
    with pytest.raises(MiniGPTv2Error, match="cannot open image .*missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(MiniGPTv2Error, match="must be a path, bytes or a PIL image, not int"):
        load_image(7)
    os.mkdir(tmp_path / "dir.png")
    with pytest.raises(MiniGPTv2Error, match="cannot open image .*dir.png"):
        load_image(tmp_path / "dir.png")


# ---- the two call sites with their own handling: the server (413 vs 400) and the web demo -------------------------
def test_server_answers_413_for_the_cap_and_400_for_refused_formats():
    import base64

    from minigptv2.serve import server as srv

    limits = srv.Limits(max_image_pixels=10_000)
    url = lambda data: "data:image/png;base64," + base64.b64encode(data).decode()   # noqa: E731
    with pytest.raises(srv.ApiError) as e:
        srv._load_image_url(url(png_header(8000, 8000)), limits, "m")
    assert e.value.status == 413 and "64000000 pixels, over the limit of 10000" in str(e.value)
    with pytest.raises(srv.ApiError) as e:
        srv._load_image_url(url(ico_holding(png_header(13000, 13000))), limits, "m")
    assert e.value.status == 400 and "not a readable image" in str(e.value)
    assert srv._load_image_url(url(save(Image.new("RGB", (20, 10)), "PNG")), limits, "m").size == (20, 10)


def test_web_demo_editor_checks_uploads_before_gradio_decodes_them(decodes, tmp_path):
    import gradio as gr
    from gradio.data_classes import FileData

    from minigptv2.serve.webui import capped_editor

    editor = capped_editor(10_000, type="pil", image_mode="RGBA")
    big = tmp_path / "big.png"
    big.write_bytes(png_header(8000, 8000))
    for upload in (png_header(8000, 8000), FileData(path=str(big))):
        with pytest.raises(gr.Error, match="64000000 pixels, over the limit of 10000"):
            editor.convert_and_format_image(upload, flatten_on_white=True)
    with pytest.raises(gr.Error, match="not a readable image"):
        editor.convert_and_format_image(ico_holding(png_header(13000, 13000)))
    assert decodes == []
    out = editor.convert_and_format_image(save(Image.new("RGBA", (20, 10), (1, 2, 3, 0)), "PNG"))
    assert out.size == (20, 10) and set(decodes) == {"PNG"}
