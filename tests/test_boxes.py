import pytest
from PIL import Image

from minigptv2.boxes import (Grounding, draw_boxes, format_box, format_boxes, format_grounded, iou, parse_box,
                             parse_boxes, to_grid, to_pixels)
from minigptv2.errors import MiniGPTv2Error


def test_grid_truncates_relative_to_original_size():
    # official: int(x / W * 100), relative to the original image, not the 448 resize
    assert to_grid((468.3, 0.91, 468.3 + 171.7, 0.91 + 116.12), 640, 428) == (73, 0, 100, 27)
    assert to_grid((-5, -5, 700, 500), 640, 428) == (0, 0, 100, 100)   # clamped
    with pytest.raises(MiniGPTv2Error):
        to_grid((0, 0, 1, 1), 0, 10)


def test_format_and_parse_round_trip():
    b = (12, 40, 38, 71)
    assert format_box(b) == "{<12><40><38><71>}"
    assert parse_boxes(format_box(b)) == [Grounding(b)]
    s = format_grounded("circle", [(1, 2, 3, 4), (5, 6, 7, 8)])
    assert s == "<p>circle</p> {<1><2><3><4>}<delim>{<5><6><7><8>}"
    assert parse_boxes(s) == [Grounding((1, 2, 3, 4), "circle"), Grounding((5, 6, 7, 8), "circle")]
    text = "<p>a red circle</p> {<1><2><30><40>} and <p>a blue square</p> {<50><50><90><99>}"
    assert [g.phrase for g in parse_boxes(text)] == ["a red circle", "a blue square"]
    assert format_boxes([(0, 0, 100, 100)]) == "{<0><0><100><100>}"


@pytest.mark.parametrize("bad", ["", "{<1><2><3>}", "{<1><2><3><x>}", "<p>cat</p>", "{<1><2><3><400>}", "}{", None,
                                 "<p>unclosed {<1><2><3><4>}", "{{<1><2><3><4>"])
def test_malformed_never_crashes(bad):
    out = parse_boxes(bad)
    assert isinstance(out, list)
    assert all(0 <= c <= 100 for g in out for c in g.box)


def test_parse_box_strict():
    assert parse_box("{<1><2><3><4>}") == (1, 2, 3, 4)
    with pytest.raises(MiniGPTv2Error, match="exactly one box"):
        parse_box("{<1><2><3><4>}{<1><2><3><4>}")
    with pytest.raises(MiniGPTv2Error):
        parse_box("nothing here")
    with pytest.raises(MiniGPTv2Error, match="outside"):
        format_box((0, 0, 101, 5))


def test_pixels_and_iou():
    assert to_pixels((10, 20, 50, 100), 200, 100) == (20.0, 20.0, 100.0, 100.0)
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    # inclusive-pixel convention of the official RefCOCO eval: widths +1
    assert iou((0, 0, 9, 9), (0, 0, 9, 9), inclusive=True) == 1.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0), inclusive=True) == 1.0


def test_draw_boxes_changes_pixels_in_box_colour():
    img = Image.new("RGB", (200, 100), "white")
    out = draw_boxes(img, [Grounding((10, 10, 50, 90), "cat"), Grounding((60, 10, 90, 90), "dog")])
    assert out.size == img.size and img.getpixel((20, 10)) == (255, 255, 255)
    assert out.getpixel((20, 50)) == (255, 0, 0)            # left edge of the first box, first colour
    assert out.getpixel((120, 50)) == (0, 255, 0)           # second phrase, second colour


# ---- the 0..100 grid: truncation (training targets and eval ground truth), never rounding --------------------
@pytest.mark.parametrize("box, size, grid", [
    # each fraction >= .5, so rounding (or ceil) would give one more; expected values worked out by hand
    ((5, 3, 639, 427), (640, 428), (0, 0, 99, 99)),     # 0.78, 0.70, 99.84, 99.77: the edges stay 0 and 99
    ((3, 1, 5, 2), (7, 3), (42, 33, 71, 66)),           # 42.86, 33.33, 71.43, 66.67
    ((199, 0.9, 200, 99.5), (200, 100), (99, 0, 100, 99)),   # 99.5 -> 99, 0.9 -> 0, 100 exactly -> 100
    # the official order of operations, x / W first, then * 100: 57 / 100 * 100 = 56.99999999999999 -> 56
    ((57, 29, 100, 100), (100, 100), (56, 28, 100, 100)),
    ((64, 0, 640, 428), (640, 428), (10, 0, 100, 100)),  # exact multiples stay as they are
])
def test_grid_truncates_fractions_at_the_edges(box, size, grid):
    assert to_grid(box, *size) == grid


def test_refcoco_training_target_is_truncated(tmp_path):
    """The refer training answer built by the RefCOCO reader (eval-JSON format) from an [x, y, w, h] box."""
    import json
    import random

    from minigptv2.data.datasets import open_dataset

    rec = {"img_id": "COCO_train2014_000000000001_1", "sents": "the cup", "bbox": [5, 3, 634, 424], "width": 640,
           "height": 428}
    (tmp_path / "ref.json").write_text(json.dumps([rec]))
    s = open_dataset("refcoco", tmp_path / "ref.json").sample(0, random.Random(0))
    assert s.turns[0][1] == "{<0><0><99><99>}"           # x2 = 639, y2 = 427: 99.84 and 99.77 truncated


# ---- the parser's bounds: 0..100 inclusive, no sign -----------------------------------------------------------
@pytest.mark.parametrize("text", ["{<-1><2><3><4>}", "{<1><-2><3><4>}", "{<1><2><-3><4>}", "{<1><2><3><-4>}",
                                  "{<-100><0><100><100>}", "{<-0><0><10><10>}", "{<101><0><5><5>}",
                                  "{<0><0><100><101>}", "{<1000><1><2><3>}"])
def test_parser_refuses_coordinates_off_the_grid(text):
    assert parse_boxes(text) == []
    assert parse_boxes(f"<p>cup</p> {text}") == []
    with pytest.raises(MiniGPTv2Error, match="found 0"):
        parse_box(text)


def test_parser_accepts_the_grid_edges_and_keeps_the_good_boxes():
    assert parse_box("{<0><0><100><100>}") == (0, 0, 100, 100)
    assert parse_box("{ <0> <100> <0> <100> }") == (0, 100, 0, 100)
    text = "<p>cup</p> {<-1><2><3><4>}<delim>{<1><2><3><4>} and {<5><6><7><101>} {<100><99><98><97>}"
    assert parse_boxes(text) == [Grounding((1, 2, 3, 4), "cup"), Grounding((100, 99, 98, 97))]


def test_draw_boxes_outline_width_and_label_geometry():
    """Labels: a filled box of the phrase's colour from (x1, y1 - 12) to (x1 + text width + 4, y1 - 1), text at
    (x1 + 2, y1 - 12) in white, or in black on a light colour; at the top edge the label starts at row 0."""
    from PIL import ImageDraw

    img = Image.new("RGB", (400, 100), "white")
    gs = [Grounding((5, 40, 8, 90), "a long phrase"), Grounding((50, 5, 55, 50), "b"), Grounding((70, 60, 75, 95), "c"),
          Grounding((85, 60, 95, 95), "yellow")]
    out = draw_boxes(img, gs)
    red, yellow, white = (255, 0, 0), (210, 210, 0), (255, 255, 255)
    tw = ImageDraw.Draw(img).textlength("a long phrase")
    right = int(20 + 2 + tw + 2)                    # x1 = 20 px, y1 = 40 px: the label is x 20..right, y 28..39
    assert out.getpixel((20, 28)) == red and out.getpixel((19, 28)) == white and out.getpixel((20, 27)) == white
    assert out.getpixel((right, 30)) == red and out.getpixel((right + 1, 30)) == white
    assert out.getpixel((50, 39)) == red and out.getpixel((50, 40)) == white       # right of the box: label only
    assert out.getpixel((22, 60)) == red and out.getpixel((23, 60)) == white       # outline: 3 px inward
    assert out.getpixel((200, 0)) == (0, 255, 0)                                   # y1 = 5 px: label from row 0

    def colours(x0, y0, x1, y1):
        return {out.getpixel((x, y)) for x in range(x0, x1) for y in range(y0, y1)}

    # anti-aliased text: white ink on red keeps R = 255 and G = B; black ink on yellow keeps R = G and B = 0
    on_red = colours(22, 28, right - 2, 40)
    assert all(r == 255 and g == b for r, g, b in on_red) and max(g for _, g, _ in on_red) > 200
    on_yellow = colours(342, 48, 372, 60)
    assert out.getpixel((340, 48)) == yellow
    assert all(r == g and b == 0 for r, g, b in on_yellow) and min(r for r, _, _ in on_yellow) < 50
    assert draw_boxes(img.convert("L"), gs[:1]).mode == "RGB"


def test_grounding_to_dict():
    g = Grounding((10, 20, 33, 40), "cup")
    assert g.to_dict() == {"phrase": "cup", "box": [10, 20, 33, 40]}
    assert g.to_dict(640, 428) == {"phrase": "cup", "box": [10, 20, 33, 40],
                                   "box_pixels": [64.0, 85.6, 211.2, 171.2]}
    assert Grounding((1, 2, 3, 3)).to_dict(7, 3) == {"phrase": None, "box": [1, 2, 3, 3],
                                                     "box_pixels": [0.07, 0.06, 0.21, 0.09]}   # rounded to 2 places
    for size in ((0, 0), (640, None), (None, 428)):                                            # no size, no pixels
        assert Grounding((1, 2, 3, 4)).to_dict(*size) == {"phrase": None, "box": [1, 2, 3, 4]}


def test_errors_name_the_problem_and_edges_are_valid():
    with pytest.raises(MiniGPTv2Error, match="^format_boxes needs at least one box$"):
        format_boxes([])
    for w, h in ((0, 10), (10, 0), (-1, 5), (5, -1)):
        with pytest.raises(MiniGPTv2Error, match=f"image size must be positive, got {w}x{h}"):
            to_grid((0, 0, 1, 1), w, h)
    with pytest.raises(MiniGPTv2Error, match=r"box coordinates must be finite numbers .*\(image 10x10\)"):
        to_grid((float("nan"), 0, 1, 1), 10, 10)
    assert to_grid((0, 0, 1, 1), 1, 1) == (0, 0, 100, 100) and to_grid((0.5, 0, 1, 1), 1, 2) == (50, 0, 100, 50)


def test_iou_edges():
    assert iou((0, 0, 10, 10), (20, 0, 30, 10)) == 0.0          # overlapping rows, disjoint columns
    assert iou((0, 0, 10, 10), (0, 20, 10, 30)) == 0.0
    assert iou((0, 0, 9, 9), (0, 0, 4, 9), inclusive=True) == 0.5     # (5 * 10) / (10 * 10): +1 on widths
    assert iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == 1.0               # boxes under one pixel (float pixels)
    assert iou((0, 0, 0.5, 0.25), (0, 0, 0.25, 0.5)) == pytest.approx(0.0625 / (0.125 + 0.125 - 0.0625))


def test_draw_boxes_labels_of_boxes_sharing_a_corner_do_not_overlap():
    """The first label keeps its place above the box; the next takes the nearest free row (here just below it,
    inside the box), so a prediction drawn on its ground truth leaves both labels readable."""
    from PIL import ImageDraw

    img = Image.new("RGB", (200, 100), "white")
    out = draw_boxes(img, [Grounding((20, 40, 60, 90), "gt"), Grounding((20, 40, 60, 90), "pred")])
    red, green, white = (255, 0, 0), (0, 255, 0), (255, 255, 255)
    right_gt, right_pred = (int(40 + ImageDraw.Draw(img).textlength(t) + 4) for t in ("gt", "pred"))
    # x1 = 40 px, y1 = 40 px: "gt" at rows 28..39 (above the box), "pred" at rows 40..51 (inside its top edge)
    assert out.getpixel((right_gt, 28)) == red and out.getpixel((right_gt, 39)) == red
    assert out.getpixel((right_gt + 1, 30)) == white
    assert out.getpixel((right_pred, 40)) == green and out.getpixel((right_pred, 51)) == green
    assert out.getpixel((right_pred, 52)) == white and out.getpixel((right_pred + 1, 45)) == white
