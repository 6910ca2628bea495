"""The example grids of a run (minigptv2/eval/report.py): every ground-truth and predicted box labelled, no label
drawn over another."""
import pytest
from PIL import Image, ImageDraw

from minigptv2.eval.report import example_grid


def _record_labels(monkeypatch) -> list:
    """The filled rectangles drawn from now on: the box labels (box outlines are drawn unfilled)."""
    rects = []
    rectangle = ImageDraw.ImageDraw.rectangle

    def recording(self, xy, *args, **kw):
        if kw.get("fill") is not None:
            rects.append([float(v) for v in xy])
        return rectangle(self, xy, *args, **kw)

    monkeypatch.setattr(ImageDraw.ImageDraw, "rectangle", recording)
    return rects


def _intersect(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


@pytest.mark.parametrize("gt, pred", [
    ([[20, 40, 60, 80]], [[20, 40, 60, 80]]),                    # a right answer: the same box
    ([[20, 40, 60, 80]], [[21, 41, 50, 70]]),                    # nearly the same corner
    ([[20, 0, 60, 40]], [[20, 0, 60, 40]]),                      # at the top edge: no room above the box
    ([[10, 10, 40, 40], [12, 12, 30, 30], [50, 10, 90, 40]], [[10, 10, 40, 40], [11, 11, 30, 30]]),   # detection
])
def test_example_grid_never_draws_a_label_over_another(tmp_path, monkeypatch, gt, pred):
    image = tmp_path / "i.png"
    Image.new("RGB", (200, 150), "white").save(image)
    rects = _record_labels(monkeypatch)
    row = {"image": str(image), "prompt": "[refer] the cup", "prediction": "{<20><40><60><80>}", "gt_boxes": gt,
           "pred_boxes": pred}
    out = example_grid([row], tmp_path / "ex.png", n=1)
    assert len(rects) == len(gt) + len(pred)
    assert [(a, b) for k, a in enumerate(rects) for b in rects[:k] if _intersect(a, b)] == []
    colours = set(Image.open(out).convert("RGB").getdata())
    assert {(255, 0, 0), (0, 255, 0)} <= colours            # gt (first colour) and pred (second) both shown
