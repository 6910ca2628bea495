"""Readers of synthetic scenes (`scenes.jsonl` of `minigptv2 synth`) that ask every task in many wordings, and in
conversations (issue #31: follow-up turns and wordings outside the templates).

    synthetic_dialog       2–3 turns about one scene, mixing every task (refer, identify, detection, vqa,
                           caption, grounding); the first turn is a long answer (caption, grounding, detection)
                           half the time; a later refer / identify / VQA question is about an object named in an
                           earlier answer half the time, and a quarter of later VQA questions ask for the count;
                           each instruction an official template or (30 %) a training paraphrase
                           (synthetic_wordings.py)
    synthetic_paraphrase   one turn, any task, always a training paraphrase (bare forms included)
    synthetic_paraphrase_vqa   the same, VQA only (the nano recipe's focus_vqa phase: recipes/nano.py)

Answers are the canonical ones of synthetic.py (exactly what the per-task readers train on), so a dialog teaches
nothing new about a scene, only to answer the last question whatever came before, and whatever the wording. A VQA
turn about one object carries its box as the turn's point, a caption each object's phrase and box (Sample.points,
for the pointing loss: train/pointing.py).
Every random choice uses the sample's rng, as every reader of datasets.py. Listed in datasets.KINDS.
"""
from __future__ import annotations

import random

from minigptv2.boxes import format_box
from minigptv2.data.annotations import read_records
from minigptv2.data.reader import Reader, Sample
from minigptv2.errors import MiniGPTv2Error
from minigptv2.synthetic import (COLORS, MAX_OBJECTS, SHAPES, Obj, Scene, caption, caption_points, detection,
                                 grounded_caption, vqa_kind, vqa_questions, vqa_subject)
from minigptv2.synthetic_wordings import instruction

TASKS = ("refer", "identify", "detection", "vqa", "caption", "grounding")
LONG = ("caption", "grounding", "detection")
# the share of later VQA turns made to ask for the count (33 % of them are then, 12 % without it): a model asked "how
# many shapes are there?" right after a refer answer undercounted 3-object scenes (docs/nano-log-2026-12-06.md
# "Counting after a refer turn")
P_COUNT_AFTER = 0.25


def _is_scene(r) -> bool:
    """A scenes.jsonl record as write_synthetic writes it (the fields the dialogs read, with sane values)."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e6  # noqa: E731
    if not (isinstance(r, dict) and isinstance(r.get("image"), str) and num(r.get("width")) and r["width"] > 0
            and num(r.get("height")) and r["height"] > 0 and isinstance(r.get("objects"), list)
            and 1 <= len(r["objects"]) <= MAX_OBJECTS):
        return False
    return all(isinstance(o, dict) and o.get("color") in COLORS and o.get("shape") in SHAPES
               and isinstance(o.get("box"), list) and len(o["box"]) == 4 and all(map(num, o["box"]))
               for o in r["objects"])


def scene_of(record: dict) -> Scene:
    """A scenes.jsonl record -> Scene (no image: only the texts are made from it)."""
    objs = [Obj(o["color"], o["shape"], tuple(o["box"])) for o in record["objects"]]
    return Scene(record["width"], record["height"], objs, None)


def turn(scene: Scene, task: str, rng: random.Random, p_paraphrase: float,
         named: list[Obj]) -> tuple[str, str, list[int] | None]:
    """One (instruction, canonical answer, point) of `task` about the scene; `named`: objects earlier answers
    named (chosen half the time when there are any), extended with the objects this answer names. point: the grid
    box of the one object a VQA question is about (synthetic.vqa_subject); for a caption [[phrase, grid box], ...]
    of its objects in the caption's order; else None."""
    objs = scene.objects
    pick = lambda: rng.choice(named if named and rng.random() < 0.5 else objs)  # noqa: E731
    if task == "refer":
        o = pick()
        named.append(o)
        return instruction("refer", o.name, rng, p_paraphrase), format_box(scene.grid(o)), None
    if task == "identify":
        o = pick()
        named.append(o)
        return instruction("identify", format_box(scene.grid(o)), rng, p_paraphrase), o.name, None
    if task == "detection":
        shape = pick().shape
        named.extend(o for o in objs if o.shape == shape)
        return instruction("detection", shape, rng, p_paraphrase), detection(scene, shape), None
    if task == "vqa":
        qs = vqa_questions(scene, rng)
        about = [q for q in qs if named and any(o.color in q[0] or o.shape in q[0] for o in named)]
        q, a, _ = rng.choice(about if about and rng.random() < 0.5 else qs)
        if named and rng.random() < P_COUNT_AFTER:
            q, a, _ = next(t for t in qs if vqa_kind(t[0]) == "count")
        subject = vqa_subject(scene, q)
        return instruction("vqa", q, rng, p_paraphrase), a, None if subject is None else list(scene.grid(subject))
    named.extend(objs)
    if task == "caption":
        return instruction("caption", None, rng, p_paraphrase), caption(scene), caption_points(scene)
    return instruction("grounding", None, rng, p_paraphrase), grounded_caption(scene), None


def dialog(scene: Scene, rng: random.Random, n_turns: int, p_paraphrase: float,
           among: tuple[str, ...] = TASKS) -> list[tuple[str, str, list | None]]:
    """n_turns (instruction, answer, point) triples mixing the tasks `among`; the first a long answer half the
    time."""
    named: list[Obj] = []
    tasks = [rng.choice(LONG) if n_turns > 1 and rng.random() < 0.5 else rng.choice(among)]
    tasks += [rng.choice(among) for _ in range(n_turns - 1)]
    return [turn(scene, t, rng, p_paraphrase, named) for t in tasks]


class SyntheticDialogDataset(Reader):
    """scenes.jsonl -> 2–3-turn conversations mixing every task (module docstring)."""

    task = "chat"
    turns = (2, 3)
    p_paraphrase = 0.3
    among = TASKS

    def _load(self):
        recs = read_records(self.path)
        for i, r in enumerate(recs):
            if not _is_scene(r):
                raise MiniGPTv2Error(f"{self.path}: record {i} is not a synthetic scene ({{image, width, height, "
                                     f"objects: 1..{MAX_OBJECTS} of {{color, shape, box}}}}); write the folder "
                                     f"with `minigptv2 synth`")
        return [(r["image"], scene_of(r)) for r in recs]

    def sample(self, i: int, rng: random.Random) -> Sample:
        image, scene = self.records[i]
        triples = dialog(scene, rng, rng.randint(*self.turns), self.p_paraphrase, self.among)
        turns = [(q, a) for q, a, _ in triples]
        task = self.task if len(turns) > 1 else next(t for t in TASKS if turns[0][0].startswith(f"[{t}]"))
        points = [p for _, _, p in triples]
        return Sample(self._image(image), turns, task, self._source(i), points if any(points) else None)


class SyntheticParaphraseDataset(SyntheticDialogDataset):
    """scenes.jsonl -> one turn of any task, always in a training paraphrase."""

    turns = (1, 1)
    p_paraphrase = 1.0


class SyntheticParaphraseVQADataset(SyntheticParaphraseDataset):
    """scenes.jsonl -> one VQA question, always in a training paraphrase."""

    among = ("vqa",)
