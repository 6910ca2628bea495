"""Seeded synthetic scenes (coloured shapes with exact boxes) written in the official annotation formats.

    minigptv2 synth --out data/synth --n 2000 --seed 0
    python -m minigptv2.synthetic --out data/synth --n 2000 --seed 0

    from minigptv2.synthetic import make_scene, write_synthetic
    scene = make_scene(random.Random(0))      # scene.image (PIL), scene.objects [Obj(color, shape, box)]
    write_synthetic("data/synth", n=2000, seed=0)
    parts = minigptv2.data.datasets.load_mixture("data/synth/mixture.json")

A scene is a W×H canvas (each in [192, 320], not square on purpose) with a near-white tinted background,
0–3 grey distractors (short lines, small dots) that are not objects, and 1..max_objects non-overlapping
objects: shape ∈ {circle, square, triangle}, colour ∈ {red, green, blue, yellow, purple}, each (colour, shape)
pair at most once, size 25–45 % of min(W, H), centres at least ~6 % of W apart horizontally (so "left to
right" is unambiguous); about half of the multi-object scenes repeat a shape. An object's box is the exact
pixel bbox of its drawn pixels, (x1, y1, x2, y2) with x2/y2 exclusive (x2 = last column + 1, as COCO x+w).

Canonical answers (deterministic wording, objects ordered left to right by box centre):
    caption    "a red circle", "a red circle and a blue square", "a red circle, a blue square and a green triangle"
    grounding  the caption with each "a red circle" -> "<p>a red circle</p> {<x1><y1><x2><y2>}"
    refer      "red circle" -> "{box}"            identify  box -> "red circle"
    detection  "circle" -> "<p>circle</p> {box}<delim>{box}" (all circles);  caption -> "<p>red circle</p> {box} ..."
    vqa        "what color is the circle?" (shape unique) -> "red"; "what shape is the red object?" (colour
               unique) -> "circle"; "how many shapes are there?" -> "two"; "is there a red square?" -> "yes"/"no"
    chat       2–3 turns in LLaVA conversation format ("what is in this image?" -> "the image shows ...", ...)
    text       a fixed set of text-only questions about shapes and colours (unnatural-instructions format)

The readers of minigptv2.data.datasets apply the official instruction templates and text processing to these files,
so synthetic training runs through exactly the code path of the real data.

Output layout of write_synthetic(out, n, seed):
    out/images/000000.png ...           n scenes (PNG, lossless, exact colours)
    out/scenes.jsonl                     one line per image: {"image", "width", "height", "objects":
                                         [{"color", "shape", "box": [x1, y1, x2, y2] pixels}]} (left to right)
    out/coco_caption.json                LAVIS karpathy list {"image", "caption", "image_id"} (dialogs=True: also
                                         "points", [[phrase, grid box], ...] of the objects the caption names)
    out/refcoco.json                     RefCOCO eval-JSON list {"img_id", "sents", "bbox" [x,y,w,h], "height",
                                         "width", "image"} (one per object; used for refcoco and invrefcoco)
    out/vqa.json                         LAVIS VQAv2 list {"image", "question", "question_id", "answer": [..]}
                                         (dialogs=True: also "point", the 0-100 grid box of the one object a
                                         question is about, where there is one: vqa_subject; the pointing
                                         loss's target, train/pointing.py)
    out/grounded_caption.json            Flickr {"image_id", "image", "grounded_caption"}
    out/caption_to_phrase.json           Flickr {"image_id", "image", "caption", "output"}
    out/phrase_to_object.json            Flickr {"image_id", "image", "phrase", "bbox"} (one per shape present)
    out/conversation.json                LLaVA {"id", "image", "conversations": [{"from", "value"}, ...]}
    out/unnatural_instruction.json       [{"instances": [{"instruction_with_input", "constraints", "output"}]}]
    out/mixture.json                     [{"kind", "path", "ratio"}, ...] for data.load_mixture (with
                                         dialogs=True also MIXTURE_DIALOGS: the same files, three more kinds)
Same (n, seed, max_objects, object_weights, dialogs) -> byte-identical files; dialogs=False (the default) writes
what was written before it existed. The folder is written under a temporary
name and renamed into place; an existing non-empty `out` is refused.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from minigptv2.atomic import write_folder
from minigptv2.boxes import format_box, format_boxes, format_grounded, to_grid
from minigptv2.errors import MiniGPTv2Error

COLORS = {"red": (220, 30, 30), "green": (20, 160, 40), "blue": (30, 70, 225), "yellow": (240, 200, 0),
          "purple": (140, 40, 190)}
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("zero", "one", "two", "three")
MAX_OBJECTS = 3
SIZE_RANGE = (192, 320)
GAP = 6           # min pixels between two objects' boxes

# text-only questions (written in unnatural-instructions format; blip_caption is applied by the reader)
TEXT_QA = [
    ("how many sides does a triangle have?", "three"),
    ("how many sides does a square have?", "four"),
    ("how many corners does a circle have?", "zero"),
    ("which shape has three sides?", "triangle"),
    ("which shape has four equal sides?", "square"),
    ("which shape is perfectly round?", "circle"),
    ("what color do you get by mixing red and blue?", "purple"),
    ("what color do you get by mixing blue and yellow?", "green"),
    ("what is the plural of circle?", "circles"),
    ("what is the plural of square?", "squares"),
    ("what is the plural of triangle?", "triangles"),
    ("what number comes after two?", "three"),
]

# default sampling ratios of the written mixture.json (kind, file, ratio)
MIXTURE = [
    ("coco_caption", "coco_caption.json", 10),
    ("flickr_grounded_caption", "grounded_caption.json", 10),
    ("refcoco", "refcoco.json", 20),
    ("invrefcoco", "refcoco.json", 10),
    ("flickr_phrase_to_object", "phrase_to_object.json", 15),
    ("flickr_caption_to_phrase", "caption_to_phrase.json", 5),
    ("vqa", "vqa.json", 20),
    ("llava_conversation", "conversation.json", 8),
    ("unnatural_instruction", "unnatural_instruction.json", 2),
]
# added to mixture.json by write_synthetic(dialogs=True): conversations mixing every task, and paraphrased
# instructions, all read from scenes.jsonl (data/synthetic_dialogs.py; issue #31); paraphrased VQA alone is there
# for a recipe's phase to weight up (recipes/nano.py focus_vqa), off in this mixture
MIXTURE_DIALOGS = [
    ("synthetic_dialog", "scenes.jsonl", 10),
    ("synthetic_paraphrase", "scenes.jsonl", 8),
    ("synthetic_paraphrase_vqa", "scenes.jsonl", 0),
]


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    box: tuple[int, int, int, int]     # exact pixel bbox (x1, y1, x2, y2), x2/y2 exclusive

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2


@dataclass
class Scene:
    width: int
    height: int
    objects: list[Obj]                 # left to right by box centre x
    image: Image.Image

    def grid(self, obj: Obj) -> tuple[int, int, int, int]:
        return to_grid(obj.box, self.width, self.height)


# ---- drawing ----------------------------------------------------------------------------------------------
def _shape_mask(shape: str, size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    e = size - 1
    if shape == "circle":
        d.ellipse([0, 0, e, e], fill=255)
    elif shape == "square":
        d.rectangle([0, 0, e, e], fill=255)
    else:  # triangle, apex up
        d.polygon([(e / 2, 0), (0, e), (e, e)], fill=255)
    return mask


def _overlaps(a, b, gap: int) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _pick_pairs(rng: random.Random, k: int) -> list[tuple[str, str]]:
    """k distinct (colour, shape) pairs; with k >= 2, half the time two objects share a shape."""
    if k >= 2 and rng.random() < 0.5:
        s = rng.choice(SHAPES)
        shapes = [s, s] + [rng.choice(SHAPES) for _ in range(k - 2)]
    else:
        shapes = rng.sample(SHAPES, k) if k <= len(SHAPES) else [rng.choice(SHAPES) for _ in range(k)]
    pairs: list[tuple[str, str]] = []
    for s in shapes:
        colour = rng.choice([c for c in COLORS if (c, s) not in pairs])
        pairs.append((colour, s))
    return pairs


def make_scene(rng: random.Random, max_objects: int = MAX_OBJECTS, object_weights=None) -> Scene:
    """One random scene drawn with `rng` (see the module docstring for the design). The number of objects is
    uniform in 1..max_objects, or drawn with `object_weights` (one relative weight per count 1..max_objects)."""
    W, H = rng.randint(*SIZE_RANGE), rng.randint(*SIZE_RANGE)
    bg = tuple(rng.randint(236, 255) for _ in range(3))
    img = Image.new("RGB", (W, H), bg)
    side = min(W, H)
    min_dx = max(12, round(0.06 * W))
    objects: list[Obj] = []
    counts = range(1, max_objects + 1)
    k = rng.choices(counts, weights=object_weights)[0] if object_weights else rng.randint(1, max_objects)
    for colour, shape in _pick_pairs(rng, k):
        for _ in range(200):
            size = rng.randint(round(0.25 * side), round(0.45 * side))
            x, y = rng.randint(2, W - size - 2), rng.randint(2, H - size - 2)
            square = (x, y, x + size, y + size)
            if all(not _overlaps(square, o.box, GAP) and abs(x + size / 2 - o.cx) >= min_dx for o in objects):
                break
        else:
            continue   # no room left: the scene gets one object fewer
        mask = _shape_mask(shape, size)
        l, t, r, b = mask.getbbox()
        img.paste(COLORS[colour], (x, y, x + size, y + size), mask)
        objects.append(Obj(colour, shape, (x + l, y + t, x + r, y + b)))
    _draw_distractors(img, rng, objects)
    objects.sort(key=lambda o: (o.cx, o.box[1]))
    return Scene(W, H, objects, img)


def _draw_distractors(img: Image.Image, rng: random.Random, objects: list[Obj]) -> None:
    """0–3 thin grey lines or small grey dots, kept clear of every object."""
    W, H = img.size
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 3)):
        grey = rng.randint(110, 170)
        line = rng.random() < 0.5
        for _ in range(30):
            if line:
                x1, y1 = rng.randint(0, W - 1), rng.randint(0, H - 1)
                x2 = min(W - 1, max(0, x1 + rng.randint(-40, 40)))
                y2 = min(H - 1, max(0, y1 + rng.randint(-40, 40)))
                box = (min(x1, x2) - 2, min(y1, y2) - 2, max(x1, x2) + 3, max(y1, y2) + 3)
            else:
                r = rng.randint(2, 4)
                cx, cy = rng.randint(r, W - 1 - r), rng.randint(r, H - 1 - r)
                box = (cx - r, cy - r, cx + r + 1, cy + r + 1)
            if not any(_overlaps(box, o.box, 3) for o in objects):
                break
        else:
            continue
        if line:
            d.line([(x1, y1), (x2, y2)], fill=(grey,) * 3, width=rng.randint(1, 2))
        else:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(grey,) * 3)


# ---- canonical texts --------------------------------------------------------------------------------------
def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene) -> str:
    return _join([phrase for phrase, _ in caption_points(scene)])


def caption_points(scene: Scene) -> list[list]:
    """[[phrase, grid box], ...]: each object the caption names, in its order (the pointing loss's spans)."""
    return [[f"a {o.name}", list(scene.grid(o))] for o in scene.objects]


def grounded_caption(scene: Scene) -> str:
    return _join([f"<p>a {o.name}</p> {format_box(scene.grid(o))}" for o in scene.objects])


def detection(scene: Scene, shape: str) -> str:
    """`<p>shape</p> {box}<delim>{box}` over every object of that shape, left to right."""
    return format_grounded(shape, [scene.grid(o) for o in scene.objects if o.shape == shape])


def objects_answer(scene: Scene) -> str:
    """Caption -> objects answer: `<p>red circle</p> {box} <p>blue square</p> {box}`."""
    return " ".join(format_grounded(o.name, [scene.grid(o)]) for o in scene.objects)


def vqa_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """[(question, short answer, sentence answer)] for one scene."""
    objs = scene.objects
    shapes = [o.shape for o in objs]
    colours = [o.color for o in objs]
    out = []
    for o in objs:
        if shapes.count(o.shape) == 1:
            out.append((f"what color is the {o.shape}?", o.color, f"the {o.shape} is {o.color}."))
    for o in objs:
        if colours.count(o.color) == 1:
            out.append((f"what shape is the {o.color} object?", o.shape, f"the {o.color} object is a {o.shape}."))
    k = len(objs)
    out.append(("how many shapes are there?", NUMBERS[k],
                "there is one shape." if k == 1 else f"there are {NUMBERS[k]} shapes."))
    present = {(o.color, o.shape) for o in objs}
    if rng.random() < 0.5:
        c, s = rng.choice(sorted((c, s) for c in COLORS for s in SHAPES if (c, s) not in present))
        out.append((f"is there a {c} {s}?", "no", f"no, there is no {c} {s}."))
    else:
        o = rng.choice(objs)
        out.append((f"is there a {o.name}?", "yes", f"yes, there is a {o.name}."))
    return out


def vqa_subject(scene: Scene, question: str) -> Obj | None:
    """The one object a vqa_questions question is about ("what color is the circle?", "what shape is the red
    object?", "is there a red circle?" when there is), or None (counting, an absent object)."""
    for o in scene.objects:
        if question in (f"what color is the {o.shape}?", f"what shape is the {o.color} object?",
                        f"is there a {o.name}?"):
            return o
    return None


# the kinds of vqa_questions' questions, each a pattern (its groups: what the wordings modules fill in)
VQA_PATTERNS = {"color": r"what color is the (\w+)", "shape": r"what shape is the (\w+) object",
                "count": r"how many shapes are there", "exists": r"is there a (\w+) (\w+)"}


def vqa_kind(question: str) -> str | None:
    """The kind of a vqa_questions question (a key of VQA_PATTERNS), or None for any other text."""
    for kind, pattern in VQA_PATTERNS.items():
        if re.fullmatch(pattern + r"\?", question):
            return kind
    return None


def conversation(scene: Scene, rng: random.Random, questions) -> list[dict]:
    """2–3 LLaVA turns: the description question and/or VQA questions answered in sentences."""
    pool = [("what is in this image?", f"the image shows {caption(scene)}.")] + [(q, a) for q, _, a in questions]
    turns = rng.sample(pool, min(len(pool), rng.randint(2, 3)))
    conv = []
    for j, (q, a) in enumerate(turns):
        if j == 0:
            q = "<image>\n" + q if rng.random() < 0.5 else q + "\n<image>"
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return conv


# ---- writing ----------------------------------------------------------------------------------------------
def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=None) + "\n", encoding="utf-8")


def write_synthetic(out_dir, n: int, seed: int, max_objects: int = MAX_OBJECTS, object_weights=None,
                    dialogs: bool = False) -> Path:
    """Write n scenes and their annotation files to out_dir (layout in the module docstring); returns it.
    `object_weights`: relative frequency of scenes with 1..max_objects objects (default: uniform). `dialogs`:
    mixture.json also samples conversations and paraphrases (MIXTURE_DIALOGS), vqa.json records carry their
    question's object as "point" (vqa_subject) and coco_caption.json records each object's phrase and box as
    "points"."""
    if not isinstance(n, int) or n < 1:
        raise MiniGPTv2Error(f"--n must be a positive number of scenes, got {n!r}")
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise MiniGPTv2Error(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
    if object_weights is not None and (len(object_weights) != max_objects or min(object_weights) < 0
                                       or sum(object_weights) <= 0):
        raise MiniGPTv2Error(f"object_weights must be {max_objects} non-negative numbers (one per object count "
                             f"1..{max_objects}) with a positive sum, got {object_weights!r}")
    out = Path(out_dir)
    _check_target(out)
    return write_folder(out, overwrite=False, write=lambda tmp: _write_all(tmp, n, seed, max_objects, object_weights,
                                                                                 dialogs))


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MiniGPTv2Error(f"output folder {out} exists and is not an empty folder; choose a new --out or remove it")


def _write_all(root: Path, n: int, seed: int, max_objects: int, object_weights, dialogs: bool = False) -> None:
    (root / "images").mkdir()
    width = max(6, len(str(n - 1)))
    scenes, captions, refer, vqa, grounded, cap2obj, phrase2obj, convs = ([] for _ in range(8))
    for i in range(n):
        rng = random.Random(f"minigptv2-synth:{seed}:{i}")   # per scene: scene i does not depend on n
        scene = make_scene(rng, max_objects, object_weights)
        rel = f"images/{i:0{width}d}.png"
        scene.image.save(root / rel, format="PNG", compress_level=1)
        W, H = scene.width, scene.height
        scenes.append({"image": rel, "width": W, "height": H,
                       "objects": [{"color": o.color, "shape": o.shape, "box": list(o.box)} for o in scene.objects]})
        captions.append({"image": rel, "caption": caption(scene), "image_id": i})
        if dialogs:
            captions[-1]["points"] = caption_points(scene)
        for k, o in enumerate(scene.objects):
            x1, y1, x2, y2 = o.box
            refer.append({"img_id": f"synth_{i:0{width}d}_{k}", "sents": o.name, "bbox": [x1, y1, x2 - x1, y2 - y1],
                          "height": H, "width": W, "image": rel})
        questions = vqa_questions(scene, rng)
        for q, a, _ in questions:
            vqa.append({"image": rel, "question": q, "question_id": len(vqa), "answer": [a]})
            subject = vqa_subject(scene, q) if dialogs else None
            if subject is not None:
                vqa[-1]["point"] = list(scene.grid(subject))
        grounded.append({"image_id": i, "image": rel, "grounded_caption": grounded_caption(scene)})
        cap2obj.append({"image_id": i, "image": rel, "caption": caption(scene), "output": objects_answer(scene)})
        for shape in sorted({o.shape for o in scene.objects}, key=SHAPES.index):
            boxes = [scene.grid(o) for o in scene.objects if o.shape == shape]
            phrase2obj.append({"image_id": i, "image": rel, "phrase": shape, "bbox": format_boxes(boxes)})
        convs.append({"id": f"{i:0{width}d}", "image": rel, "conversations": conversation(scene, rng, questions)})
    with open(root / "scenes.jsonl", "w", encoding="utf-8") as f:
        for s in scenes:
            f.write(json.dumps(s) + "\n")
    _dump(root / "coco_caption.json", captions)
    _dump(root / "refcoco.json", refer)
    _dump(root / "vqa.json", vqa)
    _dump(root / "grounded_caption.json", grounded)
    _dump(root / "caption_to_phrase.json", cap2obj)
    _dump(root / "phrase_to_object.json", phrase2obj)
    _dump(root / "conversation.json", convs)
    _dump(root / "unnatural_instruction.json",
          [{"instances": [{"instruction_with_input": q, "constraints": None, "output": a}]} for q, a in TEXT_QA])
    mixture = MIXTURE + (MIXTURE_DIALOGS if dialogs else [])
    _dump(root / "mixture.json", [{"kind": k, "path": p, "ratio": r} for k, p, r in mixture])


def parser() -> argparse.ArgumentParser:
    """The `minigptv2 synth` parser."""
    p = argparse.ArgumentParser(prog="minigptv2 synth", description="Write a synthetic shapes dataset "
                                "(images + annotation files in the official formats + mixture.json + scenes.jsonl).")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--n", type=int, default=1000, help="number of scenes (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the scenes (default 0)")
    p.add_argument("--max-objects", type=int, default=MAX_OBJECTS, help=f"objects per scene, 1..{MAX_OBJECTS}")
    p.add_argument("--object-weights", type=float, nargs="+", metavar="W",
                   help="relative frequency of 1..max-objects objects per scene (default: uniform), e.g. 1 2 3")
    p.add_argument("--dialogs", action="store_true",
                   help="mixture.json also samples multi-turn conversations mixing every task and paraphrased "
                        "instructions (kinds synthetic_dialog, synthetic_paraphrase)")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    out = write_synthetic(a.out, a.n, a.seed, a.max_objects, a.object_weights, a.dialogs)
    print(f"wrote {a.n} scenes to {out} (train with --data {out / 'mixture.json'})")
    return 0


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
