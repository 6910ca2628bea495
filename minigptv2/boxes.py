"""Box text format of MiniGPT-v2 (docs/official-model.md §3.5, §3.8).

A box is written `{<x1><y1><x2><y2>}`: integers on a 0..100 grid relative to the *original* image size
(x = int(px / W * 100), truncation, as the official `ReferCOCODataset.preprocess`). Several boxes for one
phrase are joined with `<delim>`; grounded phrases are `<p>phrase</p> {…}`.

Parsing never raises on model output: malformed text yields `[]` (or the well-formed part).
`parse_box` (one box, strict) raises `MiniGPTv2Error` for callers that need exactly one box.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from minigptv2.errors import MiniGPTv2Error

GRID = 100
BOX_RE = re.compile(r"\{\s*<(-?\d{1,4})>\s*<(-?\d{1,4})>\s*<(-?\d{1,4})>\s*<(-?\d{1,4})>\s*\}")
# a phrase followed by one or more boxes joined by <delim>
PHRASE_RE = re.compile(r"<p>(.*?)</p>\s*((?:\{[^{}]*\}\s*(?:<delim>\s*)?)+)", re.S)

# 16 colours of the official demo (docs/official-model.md §3.8), as RGB
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (210, 210, 0), (255, 0, 255), (0, 255, 255),
          (114, 128, 250), (0, 165, 255), (0, 128, 0), (144, 238, 144), (238, 238, 175), (255, 191, 0),
          (0, 128, 0), (226, 43, 138), (255, 0, 255), (0, 215, 255)]


@dataclass(frozen=True)
class Grounding:
    """One parsed box: grid coordinates (0..100) and the phrase it belongs to (None for a bare box)."""
    box: tuple[int, int, int, int]
    phrase: str | None = None

    def pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        return to_pixels(self.box, width, height)

    def to_dict(self, width: int | None = None, height: int | None = None) -> dict:
        d = {"phrase": self.phrase, "box": list(self.box)}
        if width and height:
            d["box_pixels"] = [round(v, 2) for v in self.pixels(width, height)]
        return d


def to_grid(box_xyxy, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box (x1, y1, x2, y2) of an image W×H -> grid ints, truncated and clamped to 0..100."""
    if width <= 0 or height <= 0:
        raise MiniGPTv2Error(f"image size must be positive, got {width}x{height}")
    x1, y1, x2, y2 = box_xyxy
    try:
        vals = (x1 / width, y1 / height, x2 / width, y2 / height)
        return tuple(min(GRID, max(0, int(v * GRID))) for v in vals)  # type: ignore[return-value]
    except (OverflowError, ValueError):   # inf / nan / ints too large for a float
        raise MiniGPTv2Error(f"box coordinates must be finite numbers of a sensible size (image {width}x{height})"
                             ) from None


def to_pixels(grid_box, width: int, height: int) -> tuple[float, float, float, float]:
    """Grid box -> pixel box of an image W×H (as the official eval rescales, res=100)."""
    x1, y1, x2, y2 = grid_box
    return (x1 / GRID * width, y1 / GRID * height, x2 / GRID * width, y2 / GRID * height)


def format_box(grid_box) -> str:
    x1, y1, x2, y2 = (int(v) for v in grid_box)
    for v in (x1, y1, x2, y2):
        if not 0 <= v <= GRID:
            raise MiniGPTv2Error(f"box coordinate {v} is outside the 0..{GRID} grid: {tuple(grid_box)}")
    return f"{{<{x1}><{y1}><{x2}><{y2}>}}"


def format_boxes(grid_boxes) -> str:
    """Several boxes joined with `<delim>` (docs/official-model.md §3.5)."""
    if not grid_boxes:
        raise MiniGPTv2Error("format_boxes needs at least one box")
    return "<delim>".join(format_box(b) for b in grid_boxes)


def format_grounded(phrase: str, grid_boxes) -> str:
    """`<p>phrase</p> {…}<delim>{…}` as `PhraseToObjectDataset` builds it."""
    return f"<p>{phrase}</p> {format_boxes(grid_boxes)}"


def on_grid(coords) -> bool:
    """Box coordinates as written (digit strings of a BOX_RE match) are on the grid: unsigned and 0..100. The
    regex admits a sign so that a negative box is seen and refused (not read from the digits after the sign);
    "-0" is refused too, as the constraint grammar and the official RefCOCO parser refuse it."""
    return all(not c.startswith("-") and int(c) <= GRID for c in coords)


def _boxes_in(text: str) -> list[tuple[int, int, int, int]]:
    return [tuple(int(g) for g in m.groups()) for m in BOX_RE.finditer(text) if on_grid(m.groups())]


def parse_boxes(text: str) -> list[Grounding]:
    """All boxes in a model answer, with phrases where the answer uses `<p>…</p>`. Never raises."""
    if not isinstance(text, str):
        return []
    out: list[Grounding] = []
    spans = []
    for m in PHRASE_RE.finditer(text):
        phrase = m.group(1).strip()
        for b in _boxes_in(m.group(2)):
            out.append(Grounding(b, phrase))
        spans.append(m.span())
    # bare boxes outside any <p>…</p> group (refer answers)
    rest = text
    for s, e in reversed(spans):
        rest = rest[:s] + " " * (e - s) + rest[e:]
    out.extend(Grounding(b) for b in _boxes_in(rest))
    return out


def parse_box(text: str) -> tuple[int, int, int, int]:
    """Exactly one well-formed box in `text`, else MiniGPTv2Error."""
    boxes = _boxes_in(text or "")
    if len(boxes) != 1:
        raise MiniGPTv2Error(f"expected exactly one box {{<x1><y1><x2><y2>}} in {text!r}, found {len(boxes)}")
    return boxes[0]


def iou(a, b, inclusive: bool = False) -> float:
    """IoU of two xyxy boxes. `inclusive=True` is the official RefCOCO convention (+1 on widths)."""
    e = 1.0 if inclusive else 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0]) + e
    ih = min(a[3], b[3]) - max(a[1], b[1]) + e
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda r: max(0.0, r[2] - r[0] + e) * max(0.0, r[3] - r[1] + e)  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


LABEL_H = 12      # rows of a label: the default font's text with its filled background


def _label_top(left: float, right: float, top: float, height: int, placed: list) -> float:
    """The row nearest `top` (below first on a tie) where a label spanning columns left..right covers none of the
    labels in `placed` ([l, t, r, b] rectangles); `top` itself when no row of the image is free."""
    blocking = [(t, b) for l, t, r, b in placed if l <= right and left <= r]
    rows = [top] + [c for t, b in blocking for c in (b + 1, t - LABEL_H)]
    rows = sorted((c for c in rows if 0 <= c <= height - LABEL_H), key=lambda c: (abs(c - top), -c))
    return next((c for c in rows if all(c > b or c + LABEL_H - 1 < t for t, b in blocking)), top)


def draw_boxes(image, groundings: list[Grounding], width: int = 3):
    """A copy of a PIL image with each box and its phrase label drawn; colours cycle per phrase. A label sits above
    its box's top-left corner, or, where an earlier label already is, at the nearest free row (no label covers
    another: boxes sharing a corner, as a prediction on its ground truth, keep both labels readable)."""
    from PIL import ImageDraw

    img = image.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    W, H = img.size
    colour_of: dict = {}
    placed: list = []
    for g in groundings:
        colour = colour_of.setdefault(g.phrase, COLORS[len(colour_of) % len(COLORS)])
        x1, y1, x2, y2 = g.pixels(W, H)
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=width)
        if g.phrase:
            right = x1 + draw.textlength(g.phrase) + 4
            ty = _label_top(x1, right, max(0, y1 - LABEL_H), H, placed)
            placed.append([x1, ty, right, ty + LABEL_H - 1])
            draw.rectangle(placed[-1], fill=colour)
            draw.text((x1 + 2, ty), g.phrase, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
    return img
