"""`minigptv2 data`: from your annotations to a checked training mixture (docs/finetune.md).

    minigptv2 data example --out my_data --n 40            # a toy data set to follow the guide with
    minigptv2 data convert --from coco my_data/instances.json --images my_data/images --out ft_data --held-out 0.25
    minigptv2 data convert --from csv my_data/qa.csv --out ft_qa --held-out 0.25        # or --from jsonl
    minigptv2 data check ft_data/mixture.json --model nano                              # also run by `train`
    minigptv2 data tokenizer ft_data/mixture.json --out tok.model                       # for a fresh --preset

`convert`: dataconvert.py (formats, task rules, prompts). `check`: datacheck.py (what is checked). `example`
writes generated scenes (synthetic.py) as a user would have them: images/, a COCO detection file instances.json
(categories such as "red circle", boxes [x, y, w, h] in pixels) and qa.csv (image, question, answer, boxes:
questions with answers, and phrases with their box "x1 y1 x2 y2"). `tokenizer` builds a SentencePiece model from
the mixture's texts (tokenizers.build_tokenizer), as `train --preset` does when given no --tokenizer.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
from pathlib import Path

from minigptv2.errors import MiniGPTv2Error


def model_folder(spec) -> Path:
    """A model folder path, or "nano" for the embedded model (when no folder of that name is here)."""
    if str(spec) == "nano" and not os.path.exists("nano"):
        from minigptv2 import NANO_DIR

        return NANO_DIR
    d = Path(spec)
    if not (d / "config.json").is_file():
        raise MiniGPTv2Error(f"{d} is not a model folder (no config.json); give a folder written by `minigptv2 "
                             "train` / `convert`, or `nano` for the embedded model")
    return d


def load_processor(spec):
    """The processor (tokenizer + config) of a model folder, without its weights."""
    from minigptv2.processor import MiniGPTv2Processor

    d = model_folder(spec)
    try:
        return MiniGPTv2Processor.from_pretrained(d)
    except MiniGPTv2Error:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise MiniGPTv2Error(f"cannot read the processor of {d}: {str(e).splitlines()[0][:200]}") from None


def write_example(out, n: int = 40, seed: int = 0) -> Path:
    """A toy data set in the shapes users have: images/, instances.json (COCO detection), qa.csv."""
    from minigptv2.checkpoint import write_folder
    from minigptv2.synthetic import make_scene, vqa_questions

    if not isinstance(n, int) or n < 2:
        raise MiniGPTv2Error(f"--n must be at least 2 images, got {n!r}")

    def write(tmp: Path) -> None:
        (tmp / "images").mkdir()
        coco = {"images": [], "annotations": [], "categories": []}
        cats: dict[str, int] = {}
        rows = []
        for i in range(n):
            rng = random.Random(f"minigptv2-example:{seed}:{i}")
            scene = make_scene(rng)
            name = f"{i:04d}.png"
            scene.image.save(tmp / "images" / name, format="PNG", compress_level=1)
            coco["images"].append({"id": i + 1, "file_name": name, "width": scene.width, "height": scene.height})
            for o in scene.objects:
                x1, y1, x2, y2 = o.box
                cid = cats.setdefault(o.name, len(cats) + 1)
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": cid, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
                                            "area": (x2 - x1) * (y2 - y1)})
                rows.append({"image": f"images/{name}", "question": o.name, "answer": "",
                             "boxes": f"{x1} {y1} {x2} {y2}"})
            for q, a, _ in vqa_questions(scene, rng):
                rows.append({"image": f"images/{name}", "question": q, "answer": a, "boxes": ""})
        coco["categories"] = [{"id": cid, "name": c} for c, cid in cats.items()]
        (tmp / "instances.json").write_text(json.dumps(coco) + "\n")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["image", "question", "answer", "boxes"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        (tmp / "qa.csv").write_text(buf.getvalue())

    return write_folder(out, overwrite=False, write=write)


# ---- commands -------------------------------------------------------------------------------------------------
def cmd_example(a) -> int:
    out = write_example(a.out, a.n, a.seed)
    print(f"wrote {a.n} images to {out / 'images'}, their boxes as COCO detection annotations in "
          f"{out / 'instances.json'} and questions / phrases with boxes in {out / 'qa.csv'}")
    return 0


def cmd_convert(a) -> int:
    from minigptv2.data.convert import convert

    tasks = tuple(t.strip() for t in a.tasks.split(",") if t.strip())
    s = convert(a.source, a.fmt, a.out, a.images, a.held_out, a.seed, tasks, a.box_format)
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in d.items()) or "none"  # noqa: E731
    out = Path(s["out"])
    print(f"converted {a.source}: {s['images']} images -> {s['records']} records")
    print(f"  train: {out / 'train.jsonl'}  {s['n_train']} records ({fmt(s['train'])})")
    if s["n_test"]:
        print(f"  test:  {out / 'test.jsonl'}  {s['n_test']} records ({fmt(s['test'])}) on {s['test_images']} "
              f"held-out images")
    for what, k in s["skipped"].items():
        print(f"  skipped: {k} {what}")
    print(f"  mixture: {out / 'mixture.json'}")
    print(f"next: minigptv2 data check {out / 'mixture.json'} --model <model folder>")
    return 0


def cmd_check(a) -> int:
    from minigptv2.data.check import check_mixture

    proc = load_processor(a.model) if a.model else None
    report = check_mixture(a.mixture, proc, a.limit)
    print(report.text(a.show), flush=True)
    if not report.ok:
        raise MiniGPTv2Error(f"{report.n_problems} problem(s) in {a.mixture}; `minigptv2 train` refuses to start on "
                             "them (unless given --skip-data-check)")
    return 0


def cmd_tokenizer(a) -> int:
    from minigptv2.data.datasets import load_mixture
    from minigptv2.data.check import data_texts
    from minigptv2.tokenizers import Tokenizer, build_tokenizer

    if Path(a.out).exists():
        raise MiniGPTv2Error(f"{a.out} exists; choose another --out")
    texts = data_texts(load_mixture(a.mixture), a.texts)
    tok = Tokenizer(build_tokenizer(texts, a.out, a.vocab_size))
    print(f"wrote {a.out}: a {len(tok)}-piece SentencePiece tokenizer from {len(texts)} texts of {a.mixture} "
          f"(use it with `minigptv2 train --preset NAME --tokenizer {a.out}`)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="minigptv2 data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("example", help="write a toy data set (images, a COCO detection file, a CSV) to follow "
                                       "docs/finetune.md with")
    e.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    e.add_argument("--n", type=int, default=40, help="number of images (default 40)")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(fn=cmd_example)

    c = sub.add_parser("convert", help="COCO detection JSON / CSV / JSONL with pixel boxes -> train.jsonl, "
                                       "test.jsonl, mixture.json", description=_doc("data.convert"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("source", help="the annotation file")
    c.add_argument("--from", dest="fmt", required=True, choices=["coco", "csv", "jsonl"])
    c.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    c.add_argument("--images", default=None, help="the folder image paths are relative to (default: the file's)")
    c.add_argument("--held-out", type=float, default=0.0,
                   help="fraction of the images (and all their records) kept out of training in test.jsonl")
    c.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    c.add_argument("--tasks", default="refer,identify,detection", help="coco: the tasks to write (comma-separated)")
    c.add_argument("--box-format", default="xyxy", choices=["xyxy", "xywh"],
                   help="csv / jsonl boxes: x1 y1 x2 y2 (default) or x y width height, in pixels")
    c.set_defaults(fn=cmd_convert)

    k = sub.add_parser("check", help="check a mixture before training (images, boxes, answers, tokens, tasks)",
                       description=_doc("data.check"), formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("mixture", help="mixture.json")
    k.add_argument("--model", default=None, help="model folder (or `nano`) whose tokenizer and limits to count "
                   "tokens against")
    k.add_argument("--limit", type=int, default=None, help="check only the first N records of each dataset")
    k.add_argument("--show", type=int, default=20, help="problems listed (default 20; all are counted)")
    k.set_defaults(fn=cmd_check)

    t = sub.add_parser("tokenizer", help="build a SentencePiece tokenizer from a mixture's texts")
    t.add_argument("mixture", help="mixture.json")
    t.add_argument("--out", required=True, help="the tokenizer file to write, e.g. tok.model")
    t.add_argument("--vocab-size", type=int, default=1024, help="upper bound of the pieces (default 1024)")
    t.add_argument("--texts", type=int, default=20000, help="samples read from the data (default 20000)")
    t.set_defaults(fn=cmd_tokenizer)

    a = p.parse_args(argv)
    return a.fn(a)


def _doc(module: str) -> str:
    import importlib

    return importlib.import_module(f"minigptv2.{module}").__doc__


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
