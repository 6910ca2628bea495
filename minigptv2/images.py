"""The single image loader for CLI, API, datasets and demo.

Accepts a path, raw bytes or a PIL image; applies EXIF orientation; converts any mode (L, LA, P, RGBA,
I;16, CMYK …) to RGB (transparent pixels composited on white); refuses more than `max_pixels` pixels
*before* decoding (decompression bombs), and turns truncated / non-image input into MiniGPTv2Error.
"""
from __future__ import annotations

import io
import os
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from minigptv2.errors import MiniGPTv2Error

MAX_PIXELS = 40_000_000  # ~6300×6300; larger images are refused, not decoded


def load_image(src, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return an RGB PIL image from a path, bytes or PIL image, or raise MiniGPTv2Error naming the problem."""
    name = src if isinstance(src, (str, os.PathLike)) else "<bytes>"
    if isinstance(src, Image.Image):
        img = src
        _check_size(img, name, max_pixels)
        img.load()
    else:
        try:
            fp = open(src, "rb") if isinstance(src, (str, os.PathLike)) else io.BytesIO(bytes(src))
        except OSError as e:
            raise MiniGPTv2Error(f"cannot open image {name}: {e.strerror or e}") from None
        with fp:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    img = Image.open(fp)
                    _check_size(img, name, max_pixels)
                    img.load()
            except MiniGPTv2Error:
                raise
            except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise MiniGPTv2Error(f"not a readable image: {name} ({type(e).__name__}: {e})") from None
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise MiniGPTv2Error(f"corrupt or truncated image: {name} ({e})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the image  # noqa: BLE001
        pass
    return to_rgb(img)


def _check_size(img: Image.Image, name, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise MiniGPTv2Error(f"image {name} has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise MiniGPTv2Error(f"image {name} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB; a mode PIL cannot convert (e.g. "La") is a MiniGPTv2Error."""
    try:
        return _to_rgb(img)
    except (ValueError, OSError) as e:
        raise MiniGPTv2Error(f"cannot convert an image of mode {img.mode} to RGB ({e})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bit
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray((a / hi * 255).clip(0, 255).astype("uint8"), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")
