"""What the tests of minigptv2/eval share: a stand-in for `generate`, and bench data folders with stand-in images."""
import json
from pathlib import Path

from PIL import Image, ImageDraw

from minigptv2.eval import harness, run
from minigptv2.generate import Result

REFCOCO = Path(__file__).parents[1] / "fixtures" / "refcoco"


class FakeGenerate:
    """Stands in for minigptv2.generate: answers from a table keyed by (image, prompt) or by prompt."""

    def __init__(self, answers, default="no box here"):
        self.answers, self.default, self.calls = answers, default, []

    def __call__(self, model, processor, images, prompts, **kw):
        self.calls.append({"images": list(images), "prompts": list(prompts), **kw})
        out = []
        for im, p in zip(images, prompts):
            text = self.answers.get((str(im), p), self.answers.get(p, self.default))
            out.append(Result(text, []))
        return out


def patch_generate(monkeypatch, fake):
    """Replace the model's generate where the benches call it (run.py) and where the harness adapter does."""
    monkeypatch.setattr(run, "generate", fake)
    monkeypatch.setattr(harness, "generate", fake)


def refcoco_root(tmp: Path, files=("refcoco_val",), n=12, images=True) -> Path:
    """ROOT with real annotation records and stand-in images of the records' size (a rectangle per bbox)."""
    root = tmp / "data"
    for name in files:
        dataset = name.rsplit("_", 1)[0]
        recs = json.loads((REFCOCO / f"{name}.json").read_text())[:n]
        (root / dataset).mkdir(parents=True, exist_ok=True)
        (root / dataset / f"{name}.json").write_text(json.dumps(recs))
        if images:
            (root / "coco" / "train2014").mkdir(parents=True, exist_ok=True)
            for r in recs:
                f = root / "coco" / "train2014" / f"{r['img_id'][:27]}.jpg"
                img = Image.open(f) if f.exists() else Image.new("RGB", (r["width"], r["height"]), (235, 235, 235))
                x, y, w, h = r["bbox"]
                ImageDraw.Draw(img).rectangle([x, y, x + w, y + h], outline=(200, 30, 30), width=3)
                img.save(f, format="JPEG")
    return root


def img_file(path: Path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 200)).save(path)


def iconvqa_root(tmp: Path) -> Path:
    root = tmp / "icon"
    recs = [{"image_id": 11, "question": "which shape?", "choices": ["circle", "square"], "answer": 0},
            {"image_id": 12, "question": "how many?", "choices": ["one", "two", "three"], "answer": 2},
            {"image_id": 13, "question": "what color?", "choices": ["red", "blue"], "answer": 1}]
    (root / "iconvqa").mkdir(parents=True)
    (root / "iconvqa" / "choose_text_val.json").write_text(json.dumps(recs))
    for r in recs:
        img_file(root / "iconvqa" / "val" / "choose_txt" / str(r["image_id"]) / "image.png")
    return root
