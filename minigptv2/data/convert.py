"""Your annotations -> the training format (`minigptv2 data convert`; docs/finetune.md walks through it).

    minigptv2 data convert --from coco instances.json --images images/ --out ft_data --held-out 0.2
    minigptv2 data convert --from csv qa.csv --out ft_data --held-out 0.2          # or --from jsonl qa.jsonl

Writes OUT/train.jsonl (and OUT/test.jsonl, the held-out images, with --held-out F), in datasets.py's JSONL format
({"image", "task", "turns": [[instruction, answer]]}, image paths relative to OUT), and OUT/mixture.json for
`minigptv2 train --data`. The folder appears whole or not at all.

Inputs (boxes in pixels of the image file; `to_grid` of boxes.py turns them into the 0..100 grid text, the official
rule: x = int(x_pixels / width * 100)):
  coco   a COCO detection file {"images": [{"id", "file_name", "width", "height"}], "annotations": [{"image_id",
         "category_id", "bbox": [x, y, w, h], "iscrowd"}], "categories": [{"id", "name"}]}; images under --images
         (default: the JSON's folder). Per image and --tasks (default all three):
           detection  one record per category: "[detection] {name}" -> "<p>{name}</p> {box}<delim>{box}..."
           refer      one per object whose category is alone in its image: "[refer] give me the location of
                      {name}" -> "{box}" (a category seen twice in an image does not say which one is meant)
           identify   one per object: "[identify] what object is in this location {box}" -> "{name}"
         Crowd annotations (iscrowd 1) are skipped.
  csv    a header row and the columns image, question, answer, boxes, task (all but image may be empty or
         absent); images relative to --images (default: the CSV's folder). boxes: "x1 y1 x2 y2", several joined
         by ";" (or a JSON list of [x1, y1, x2, y2]); --box-format xywh for [x, y, width, height].
  jsonl  one JSON object per line with the same fields; "boxes": [[x1, y1, x2, y2], ...] (or one [x1, y1, x2, y2]).

  For csv / jsonl rows the task is the `task` field, or else follows from what is filled in:
    question + answer            -> vqa        "[vqa] Based on the image, respond ... short answer: {question}"
    question + one box           -> refer      "[refer] give me the location of {question}" -> "{box}"
    question + several boxes     -> detection  "[detection] {question}" -> "<p>{question}</p> {box}<delim>..."
    answer + one box             -> identify   "[identify] what object is in this location {box}" -> "{answer}"
    answer alone                 -> caption    "[caption] Briefly describe this image." -> "{answer}"
  A question that already starts with a task identifier ("[vqa] ...") is used as it is.

The instructions are the prompts `minigptv2 eval` asks (minigptv2/eval/benches.py), so a model is scored on what it
trained on. Every error names the file, the record and the value.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from collections import Counter
from pathlib import Path

from minigptv2.boxes import format_box, to_grid
from minigptv2.data.annotations import read_json, read_jsonl_objects, read_text
from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import image_size
from minigptv2.prompts import EVAL_PROMPTS, IDENTIFIERS

PROMPTS = {t: EVAL_PROMPTS[t] for t in ("refer", "vqa", "identify", "detection", "caption")}   # as eval asks
FORMATS = ("coco", "csv", "jsonl")
COCO_TASKS = ("refer", "identify", "detection")
PIXEL_SLACK = 1.0     # a box may reach this far past the image edge (float rounding in real annotations)


class _Images:
    """Image sizes from the file headers (images.image_size), each file read once."""

    def __init__(self, root: Path):
        self.root, self.sizes = root, {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def size(self, rel: str, where: str) -> tuple[int, int]:
        if rel not in self.sizes:
            p = self.path(rel)
            if not p.is_file():
                raise MiniGPTv2Error(f"{where}: image not found: {p}")
            try:
                self.sizes[rel] = image_size(p)
            except MiniGPTv2Error as e:
                raise MiniGPTv2Error(f"{where}: {e}") from None
        return self.sizes[rel]


def _number(v, where: str, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise MiniGPTv2Error(f"{where}: {what} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not math.isfinite(f):
        raise MiniGPTv2Error(f"{where}: {what} must be a finite number, got {v!r}")
    return f


def grid_box(box, size: tuple[int, int], where: str, box_format: str = "xyxy") -> tuple[int, int, int, int]:
    """A pixel box (x1, y1, x2, y2), or (x, y, w, h) with box_format "xywh", of an image of `size` -> the 0..100
    grid (boxes.to_grid). Refused: not 4 numbers, no area, reaching more than a pixel past the image."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise MiniGPTv2Error(f"{where}: a box must be 4 numbers, got {box!r}")
    x1, y1, a, b = (_number(v, where, "a box coordinate") for v in box)
    x2, y2 = (x1 + a, y1 + b) if box_format == "xywh" else (a, b)
    W, H = size
    shown = [int(v) if v == int(v) else round(v, 2) for v in (x1, y1, a, b)]
    if x2 <= x1 or y2 <= y1:
        hint = "" if box_format == "xywh" else " (if your boxes are [x, y, width, height], pass --box-format xywh)"
        raise MiniGPTv2Error(f"{where}: box {shown} ({box_format}) has no area{hint}")
    if x1 < -PIXEL_SLACK or y1 < -PIXEL_SLACK or x2 > W + PIXEL_SLACK or y2 > H + PIXEL_SLACK:
        raise MiniGPTv2Error(f"{where}: box {shown} ({box_format}, pixels) reaches outside the {W}x{H} image")
    return to_grid((x1, y1, x2, y2), W, H)


def _record(image: str, task: str, instruction: str, answer: str) -> dict:
    return {"image": image, "task": task, "turns": [[instruction, answer]]}


def _prompt(task: str, text: str) -> str:
    if text.lstrip().startswith(IDENTIFIERS):       # the user wrote the identifier already
        return text.strip()
    return PROMPTS[task].format(text.strip())


def _boxes_text(boxes) -> str:
    return "<delim>".join(format_box(b) for b in boxes)


# ---- COCO ---------------------------------------------------------------------------------------------------
def from_coco(path: Path, images: _Images, tasks=COCO_TASKS) -> tuple[list[tuple[str, dict]], Counter]:
    """[(image file, record)] and counts of what was skipped."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise MiniGPTv2Error(f"{path}: a COCO detection file is an object with lists 'images', 'annotations' and "
                             "'categories'")
    cats, imgs = {}, {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise MiniGPTv2Error(f"{path}: categories[{i}] needs an 'id' and a non-empty 'name', got {str(c)[:200]}")
        cats[c["id"]] = c["name"].strip()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise MiniGPTv2Error(f"{path}: images[{i}] needs an 'id' and a 'file_name', got {str(im)[:200]}")
        imgs[im["id"]] = im
    per_image: dict = {}
    skipped = Counter()
    for i, a in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict) or not all(k in a for k in ("image_id", "category_id", "bbox")):
            raise MiniGPTv2Error(f"{where} needs 'image_id', 'category_id' and 'bbox', got {str(a)[:200]}")
        if a["image_id"] not in imgs:
            raise MiniGPTv2Error(f"{where}: image_id {a['image_id']!r} is not in 'images'")
        if a["category_id"] not in cats:
            raise MiniGPTv2Error(f"{where}: category_id {a['category_id']!r} is not in 'categories'")
        if a.get("iscrowd"):
            skipped["crowd annotations"] += 1
            continue
        im = imgs[a["image_id"]]
        rel = im["file_name"]
        size = images.size(rel, f"{path}: images id {im['id']}")
        for k, actual in zip(("width", "height"), size):
            if k in im and _number(im[k], f"{path}: images id {im['id']}", k) != actual:
                raise MiniGPTv2Error(f"{path}: images id {im['id']} says {k} {im[k]}, the file {images.path(rel)} "
                                     f"is {size[0]}x{size[1]}")
        box = grid_box(a["bbox"], size, f"{where} (image {rel})", "xywh")
        per_image.setdefault(rel, []).append((cats[a["category_id"]], box))
    out = []
    for rel, objs in per_image.items():
        names = Counter(n for n, _ in objs)
        if "detection" in tasks:
            for name in names:
                boxes = sorted(b for n, b in objs if n == name)           # left to right
                out.append((rel, _record(rel, "detection", _prompt("detection", name),
                                         f"<p>{name}</p> {_boxes_text(boxes)}")))
        for name, b in objs:
            if "refer" in tasks:
                if names[name] == 1:
                    out.append((rel, _record(rel, "refer", _prompt("refer", name), format_box(b))))
                else:
                    skipped["refer records (the category is not alone in its image)"] += 1
            if "identify" in tasks:
                out.append((rel, _record(rel, "identify", PROMPTS["identify"].format(format_box(b)), name)))
    return out, skipped


# ---- CSV / simple JSONL --------------------------------------------------------------------------------------
def _csv_boxes(text: str, where: str):
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return _list_boxes(json.loads(text), where)
        except json.JSONDecodeError as e:
            raise MiniGPTv2Error(f"{where}: boxes {text[:100]!r} is not a JSON list ({e.msg})") from None
    return [part.replace(",", " ").split() for part in text.split(";") if part.strip()]


def _list_boxes(v, where: str):
    if v is None:
        return []
    if isinstance(v, str):
        return _csv_boxes(v, where)
    if isinstance(v, list) and len(v) == 4 and all(isinstance(c, (int, float)) for c in v):
        return [v]                                                   # one flat box
    if not isinstance(v, list) or not all(isinstance(b, list) for b in v):
        raise MiniGPTv2Error(f"{where}: 'boxes' must be a list of [x1, y1, x2, y2] lists, got {str(v)[:100]}")
    return v


def _text(v, where: str, key: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise MiniGPTv2Error(f"{where}: '{key}' must be a string, got {type(v).__name__}")
    return v.strip()


def simple_record(r: dict, where: str, images: _Images, box_format: str) -> tuple[str, dict]:
    """One csv / jsonl row {image, question, answer, boxes, task} -> (image file, record)."""
    rel = _text(r.get("image"), where, "image")
    if not rel:
        raise MiniGPTv2Error(f"{where}: 'image' is empty")
    q, ans = _text(r.get("question"), where, "question"), _text(r.get("answer"), where, "answer")
    task = _text(r.get("task"), where, "task").lower()
    raw = _list_boxes(r.get("boxes"), where)
    size = images.size(rel, where)
    boxes = [grid_box(b, size, where, box_format) for b in raw]
    if not task:
        if boxes:
            task = ("refer" if len(boxes) == 1 else "detection") if q and not ans else \
                   "identify" if ans and not q and len(boxes) == 1 else ""
        else:
            task = "vqa" if q and ans else "caption" if ans and not q else ""
        if not task:
            raise MiniGPTv2Error(f"{where}: cannot tell the task from what is filled in (question {bool(q)}, answer "
                                 f"{bool(ans)}, {len(boxes)} boxes); add a 'task' field: one of {', '.join(PROMPTS)}")
    need = {"vqa": (q, ans, None), "refer": (q, None, 1), "detection": (q, None, "1+"), "identify": (None, ans, 1),
            "caption": (None, ans, None)}
    if task not in need:
        raise MiniGPTv2Error(f"{where}: task {task!r} is not one of {', '.join(PROMPTS)}")
    want_q, want_a, want_boxes = need[task]
    if want_q is not None and not q:
        raise MiniGPTv2Error(f"{where}: task {task} needs a 'question'")
    if want_a is not None and not ans:
        raise MiniGPTv2Error(f"{where}: task {task} needs an 'answer'")
    if want_boxes == 1 and len(boxes) != 1 or want_boxes == "1+" and not boxes:
        raise MiniGPTv2Error(f"{where}: task {task} needs {'one box' if want_boxes == 1 else 'boxes'}, got "
                             f"{len(boxes)}")
    if task == "refer":
        rec = _record(rel, task, _prompt(task, q), format_box(boxes[0]))
    elif task == "detection":
        rec = _record(rel, task, _prompt(task, q), f"<p>{q}</p> {_boxes_text(boxes)}")
    elif task == "identify":
        rec = _record(rel, task, PROMPTS[task].format(format_box(boxes[0])), ans)
    elif task == "vqa":
        rec = _record(rel, task, _prompt(task, q), ans)
    else:
        rec = _record(rel, task, PROMPTS[task], ans)
    return rel, rec


def from_csv(path: Path, images: _Images, box_format: str = "xyxy") -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
        raise MiniGPTv2Error(f"{path}: the first row must name the columns, among them 'image' "
                             f"(image, question, answer, boxes, task); got {reader.fieldnames}")
    out = []
    try:
        for n, row in enumerate(reader, 2):
            r = {(k or "").strip(): v for k, v in row.items()}
            out.append(simple_record(r, f"{path}: row {n}", images, box_format))
    except csv.Error as e:
        raise MiniGPTv2Error(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    return out


def from_jsonl(path: Path, images: _Images, box_format: str = "xyxy") -> list[tuple[str, dict]]:
    out = []
    for _, where, r in read_jsonl_objects(path):
        if "turns" in r:
            raise MiniGPTv2Error(f"{where} has 'turns': the file is in the training format already; put it in a "
                                 "mixture.json as {\"kind\": \"jsonl\", \"path\": ..., \"ratio\": 1}")
        out.append(simple_record(r, where, images, box_format))
    return out


# ---- split and write ---------------------------------------------------------------------------------------
def split(records: list[tuple[str, dict]], held_out: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) by image: a fraction `held_out` of the images (at least one) and all their records go to
    test, drawn with `seed`; no image is in both."""
    if not 0 <= held_out < 1:
        raise MiniGPTv2Error(f"--held-out must be a fraction in [0, 1), got {held_out}")
    images = list(dict.fromkeys(rel for rel, _ in records))
    if held_out == 0:
        return [r for _, r in records], []
    if len(images) < 2:
        raise MiniGPTv2Error(f"--held-out {held_out} needs at least 2 images, the data has {len(images)}")
    k = min(len(images) - 1, max(1, round(held_out * len(images))))
    test = set(random.Random(seed).sample(images, k))
    return [r for rel, r in records if rel not in test], [r for rel, r in records if rel in test]


def convert(source, fmt: str, out, images=None, held_out: float = 0.0, seed: int = 0, tasks=COCO_TASKS,
            box_format: str = "xyxy") -> dict:
    """Convert `source` (fmt coco | csv | jsonl) into the folder `out` (module docstring). Returns a summary."""
    from minigptv2.atomic import write_folder

    src = Path(source)
    if fmt not in FORMATS:
        raise MiniGPTv2Error(f"--from must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if box_format not in ("xyxy", "xywh"):
        raise MiniGPTv2Error(f"--box-format must be xyxy or xywh, got {box_format!r}")
    bad = [t for t in tasks if t not in COCO_TASKS]
    if bad or not tasks:
        raise MiniGPTv2Error(f"--tasks must name some of {', '.join(COCO_TASKS)}, got {','.join(tasks)!r}")
    if not src.is_file():
        raise MiniGPTv2Error(f"{fmt} file not found: {src}")
    root = Path(images) if images is not None else src.parent
    if not root.is_dir():
        raise MiniGPTv2Error(f"--images folder not found: {root}")
    imgs = _Images(root)
    skipped = Counter()
    if fmt == "coco":
        records, skipped = from_coco(src, imgs, tasks)
    else:
        records = (from_csv if fmt == "csv" else from_jsonl)(src, imgs, box_format)
    if not records:
        raise MiniGPTv2Error(f"{src}: no records to write (nothing annotated?)")
    train, test = split(records, held_out, seed)
    shown, out = str(out), Path(out).absolute()

    def rebase(r: dict) -> dict:      # image paths relative to the output folder, where the JSONL lies
        p = os.path.abspath(imgs.path(r["image"]))
        try:
            p = os.path.relpath(p, out)
        except ValueError:            # another drive: keep it absolute
            pass
        return {**r, "image": p}

    def write(tmp: Path) -> None:
        for name, recs in (("train.jsonl", train), ("test.jsonl", test)):
            if recs:
                (tmp / name).write_text("".join(json.dumps(rebase(r), ensure_ascii=False) + "\n" for r in recs),
                                        encoding="utf-8")
        (tmp / "mixture.json").write_text(json.dumps([{"kind": "jsonl", "path": "train.jsonl", "ratio": 1}],
                                                     indent=1) + "\n")

    write_folder(out, overwrite=False, write=write)
    count = lambda rs: dict(Counter(r["task"] for r in rs))  # noqa: E731
    return {"out": shown, "records": len(records), "images": len({rel for rel, _ in records}),
            "train": count(train), "test": count(test), "n_train": len(train), "n_test": len(test),
            "test_images": len({r["image"] for r in test}), "skipped": dict(skipped)}
