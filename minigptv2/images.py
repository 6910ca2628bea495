"""The single image loader for CLI, API, datasets, evaluation and the web demo (docs/images.md).

`load_image` does what the official code does, `Image.open(path).convert("RGB")`, with three guards:
  * only the formats in FORMATS are opened (Pillow's other plugins, e.g. ICO, decode while opening);
  * the pixel count is checked from the header, before anything is decoded;
  * every failure, including Pillow plugin bugs, is a MiniGPTv2Error naming the image.
Modes F and I (32-bit float / integer) are refused: Pillow's convert("RGB") clips them to 0..255.
"""
from __future__ import annotations

import contextlib
import io
import os

from PIL import Image, UnidentifiedImageError

from minigptv2.errors import MiniGPTv2Error

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")   # Pillow format ids, the only ones opened
MAX_PIXELS = 40_000_000  # ~6300×6300; larger images are refused from their header, never decoded
Image.MAX_IMAGE_PIXELS = MAX_PIXELS   # Pillow warns past it and refuses past twice it, for any decode in the process
# Pillow's convert("RGB") clips these to 0..255, which destroys the usual data; refused, not guessed at
REFUSED_MODES = {"F": "32-bit float: a 0..1 image would turn black",
                 "I": "32-bit integer: values over 255 would turn white"}


class ImageTooLarge(MiniGPTv2Error):
    """The header declares more pixels than allowed (the server answers 413)."""


def load_image(src, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A path, bytes or PIL image -> the RGB image `Image.open(src).convert("RGB")` gives, or MiniGPTv2Error."""
    if isinstance(src, Image.Image):
        _check(src, "<PIL image>", max_pixels)
        return _to_rgb(src, "<PIL image>")
    with _open(src, max_pixels) as (img, name):
        return _to_rgb(img, name)


def image_size(src, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a path or bytes from its header; the same checks as load_image, nothing decoded."""
    with _open(src, max_pixels) as (img, _):
        return img.size


@contextlib.contextmanager
def _open(src, max_pixels: int):
    if isinstance(src, (str, os.PathLike)):
        name = os.fspath(src)
        try:
            fp = open(src, "rb")
        except OSError as e:
            raise MiniGPTv2Error(f"cannot open image {name}: {e.strerror or e}") from None
    elif isinstance(src, (bytes, bytearray, memoryview)):
        name, fp = f"<{len(src)} bytes>", io.BytesIO(src)
    else:
        raise MiniGPTv2Error(f"an image must be a path, bytes or a PIL image, not {type(src).__name__}")
    with fp:
        try:
            img = Image.open(fp, formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageTooLarge(f"image {name} is too large for Pillow's limit ({e})") from None
        except UnidentifiedImageError:
            raise MiniGPTv2Error(f"not a readable image: {name} (accepted formats: {', '.join(FORMATS)})") from None
        except Exception as e:  # noqa: BLE001 - a plugin's parser fails in many ways on a corrupt header
            raise MiniGPTv2Error(f"corrupt image header: {name} ({type(e).__name__}: {e})") from None
        _check(img, name, max_pixels)
        yield img, name


def _check(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise MiniGPTv2Error(f"image {name} has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLarge(f"image {name} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
    if img.format == "TIFF":   # libtiff decodes whole tiles, whose size two header fields set apart from the image's
        tw, th = (img.tag_v2.get(tag, 0) for tag in (322, 323))
        if not isinstance(tw, int) or not isinstance(th, int):
            raise MiniGPTv2Error(f"corrupt image header: {name} (TIFF tile size {tw!r} x {th!r})")
        if tw * th > max_pixels:
            raise ImageTooLarge(f"image {name} is a TIFF with {tw}x{th} = {tw * th} pixel tiles, over the limit of "
                                f"{max_pixels}")
    if img.mode in REFUSED_MODES:
        raise MiniGPTv2Error(
            f"image {name} has mode {img.mode}, which has no standard 8-bit scale; the official convert('RGB') clips "
            f"it to 0..255 ({REFUSED_MODES[img.mode]}): convert it to 8-bit L or RGB first")


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    try:
        img.load()
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error …
        raise MiniGPTv2Error(f"corrupt or truncated image: {name} ({type(e).__name__}: {e})") from None
    if img.mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - e.g. mode "La", which Pillow cannot convert
        raise MiniGPTv2Error(f"cannot convert image {name} of mode {img.mode} to RGB ({type(e).__name__}: {e})") \
            from None
