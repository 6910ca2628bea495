"""Check a training mixture before hours of training.

    minigptv2 data check data/mixture.json [--model DIR] [--limit N]      # also run at the start of `train`
    from minigptv2.data.check import check_mixture
    report = check_mixture("data/mixture.json", processor)               # report.ok, report.text()

One sample is drawn from every record of every dataset of the mixture (seeded, so the check is reproducible) and
checked for what would otherwise fail, or silently train on something else, hours into a run:

  problems (a run refuses to start)
    * the image file is missing, is not an image of an accepted format, or is over the pixel cap
      (minigptv2.images.image_size: the header only, nothing is decoded)
    * a box in the text is off the 0..100 grid or inverted (x2 < x1, y2 < y1); a pixel box of a RefCOCO-style
      record reaches outside its image, or the record's width / height are not the image file's
    * an empty instruction or answer
    * an unknown task identifier at the start of a vision task's instruction (`[refer]`, `[vqa]` ... are known)
    * with a tokenizer (a model): an answer longer than `max_txt_len` tokens (training would cut it), or a sample
      longer than `max_context_len` (training would stop on it)
  warnings (reported, no refusal)
    * a box with no area on the grid (an object under 1 % of the image: x1 == x2 or y1 == y2)
    * a vision task whose instruction does not start with its identifier (e.g. task "refer", "where is the cat")

Problems are named with the annotation file and the record (JSONL: also the line). The report has a table per
dataset: records, ratio, tasks, images, answer tokens (mean / max) and the longest sample in tokens.
"""
from __future__ import annotations

import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from minigptv2.data.datasets import KINDS, TASKS, VISION_TASKS, JsonlDataset, RefCOCODataset, load_mixture
from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import image_size
from minigptv2.prompts import IDENTIFIERS

# any {<a><b><c><d>} with integer coordinates, in or out of range (boxes.BOX_RE accepts 1-4 digits only)
LOOSE_BOX_RE = re.compile(r"\{\s*<(-?\d+)>\s*<(-?\d+)>\s*<(-?\d+)>\s*<(-?\d+)>\s*\}")
IDENTIFIER_RE = re.compile(r"\s*(\[[A-Za-z_]+\])")
PIXEL_SLACK = 1.0        # a RefCOCO-style pixel box may reach this far past the image edge (float rounding)
KEEP = 1000              # messages kept per kind (problems / warnings); all are counted


@dataclass
class SourceSummary:
    """One dataset of the mixture."""
    name: str
    kind: str
    ratio: float
    records: int = 0
    tasks: Counter = field(default_factory=Counter)
    images: set = field(default_factory=set)
    answer_tokens: list = field(default_factory=list)
    max_sample_tokens: int = 0
    problems: int = 0
    warnings: int = 0


@dataclass
class Report:
    mixture: str
    sources: list[SourceSummary]
    problems: list[str]
    warnings: list[str]
    n_problems: int = 0
    n_warnings: int = 0
    tokens: str = ""                 # what the token columns were measured with ("" = no tokenizer)

    @property
    def ok(self) -> bool:
        return self.n_problems == 0

    def table(self) -> str:
        head = ["source", "kind", "ratio", "records", "tasks", "images", "answer tokens mean/max",
                "sample tokens max", "problems", "warnings"]
        rows = []
        for s in self.sources:
            at = s.answer_tokens
            rows.append([s.name, s.kind, f"{s.ratio:g}", str(s.records),
                         ", ".join(f"{t} {n}" for t, n in s.tasks.most_common()) or "-", str(len(s.images)),
                         f"{sum(at) / len(at):.1f} / {max(at)}" if at else "-",
                         str(s.max_sample_tokens) if self.tokens else "-", str(s.problems), str(s.warnings)])
        widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])

    def text(self, show: int = 20) -> str:
        """The table, then the first `show` problems and warnings."""
        n = sum(s.records for s in self.sources)
        out = [f"data check of {self.mixture}: {len(self.sources)} dataset(s), {n} records; "
               + (f"tokens counted with {self.tokens}" if self.tokens else
                  "no tokenizer given (--model DIR counts tokens against the model's limits)"), "", self.table(), ""]
        for what, items, total in (("problem", self.problems, self.n_problems),
                                   ("warning", self.warnings, self.n_warnings)):
            if total:
                out.append(f"{total} {what}{'s' if total > 1 else ''}"
                           + (f" (the first {min(show, len(items))}):" if total > show else ":"))
                out += [f"  {m}" for m in items[:show]]
        if not self.n_problems:
            out.append(f"no problems in {n} records.")
        return "\n".join(out)


def _name(ds, base: str) -> str:
    try:
        return os.path.relpath(ds.path, base)
    except ValueError:           # another drive
        return ds.path


def _kind(ds) -> str:
    return next((k for k, c in KINDS.items() if type(ds) is c), type(ds).__name__)


class _Checker:
    def __init__(self, processor=None):
        self.proc = processor
        self.sizes: dict[str, tuple[int, int] | str] = {}     # image path -> (W, H) or the error message
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.n_problems = self.n_warnings = 0
        self.src: SourceSummary | None = None

    def problem(self, where: str, msg: str) -> None:
        self.n_problems += 1
        self.src.problems += 1
        if len(self.problems) < KEEP:
            self.problems.append(f"{where}: {msg}")

    def warn(self, where: str, msg: str) -> None:
        self.n_warnings += 1
        self.src.warnings += 1
        if len(self.warnings) < KEEP:
            self.warnings.append(f"{where}: {msg}")

    def image(self, path: str) -> tuple[int, int] | str:
        if path not in self.sizes:
            if not os.path.isfile(path):
                self.sizes[path] = f"image not found: {path}"
            else:
                try:
                    self.sizes[path] = image_size(path)
                except MiniGPTv2Error as e:
                    self.sizes[path] = str(e)
        return self.sizes[path]

    def boxes(self, where: str, text: str) -> None:
        for m in LOOSE_BOX_RE.finditer(text):
            x1, y1, x2, y2 = (int(g) for g in m.groups())
            if not all(0 <= v <= 100 for v in (x1, y1, x2, y2)):
                self.problem(where, f"box {m.group(0)} is off the 0..100 grid (boxes are written relative to the "
                                    f"image: x = int(pixel x / width * 100); `minigptv2 data convert` does it)")
            elif x2 < x1 or y2 < y1:
                self.problem(where, f"box {m.group(0)} is inverted (want {{<x1><y1><x2><y2>}}, x1 <= x2, y1 <= y2)")
            elif x1 == x2 or y1 == y2:
                self.warn(where, f"box {m.group(0)} has no area on the 0..100 grid (an object under 1 % of the image)")

    def refcoco_record(self, where: str, rec, size) -> None:
        """A RefCOCO-style record keeps its box in pixels with the image size it was drawn on."""
        _, _, _, (x, y, w, h), width, height = rec
        if w <= 0 or h <= 0:
            self.problem(where, f"bbox [x, y, w, h] = {[x, y, w, h]} has no area")
        elif x < -PIXEL_SLACK or y < -PIXEL_SLACK or x + w > width + PIXEL_SLACK or y + h > height + PIXEL_SLACK:
            self.problem(where, f"bbox [x, y, w, h] = {[x, y, w, h]} reaches outside the {width:g}x{height:g} image")
        if isinstance(size, tuple) and (abs(size[0] - width) > 0.5 or abs(size[1] - height) > 0.5):
            self.problem(where, f"the record says the image is {width:g}x{height:g}, the file is "
                                f"{size[0]}x{size[1]}: its boxes would land in the wrong place")

    def sample(self, ds, i: int) -> None:
        s = ds.sample(i, random.Random(f"data-check:{i}"))
        where = s.source or f"{ds.path}#{i}"
        if isinstance(ds, JsonlDataset):
            where += f" (line {ds.records[i][0]})"
        src = self.src
        src.records += 1
        src.tasks[s.task] += 1
        if s.task not in TASKS:
            self.problem(where, f"unknown task {s.task!r}; known: {', '.join(TASKS)}")
        size = None
        if s.image is not None:
            src.images.add(s.image)
            size = self.image(s.image)
            if isinstance(size, str):
                self.problem(where, size)
        if isinstance(ds, RefCOCODataset):
            self.refcoco_record(where, ds.records[i], size)
        unknown = False
        for k, (q, a) in enumerate(s.turns):
            turn = f" (turn {k + 1})" if len(s.turns) > 1 else ""
            if not q.strip():
                self.problem(where, f"empty instruction{turn}")
            if not a.strip():
                self.problem(where, f"empty answer{turn}")
            m = IDENTIFIER_RE.match(q)
            if s.task in VISION_TASKS and m and m.group(1) not in IDENTIFIERS:
                unknown = True
                self.problem(where, f"unknown task identifier {m.group(1)}{turn}; known: {' '.join(IDENTIFIERS)}")
            self.boxes(where, q)
            self.boxes(where, a)
            if self.proc is not None:
                n = len(self.proc.tok.encode(a))
                src.answer_tokens.append(n)
                if n > self.proc.config.max_txt_len:
                    self.problem(where, f"answer{turn} is {n} tokens, over max_txt_len "
                                        f"{self.proc.config.max_txt_len}: training would cut it")
        if s.task in VISION_TASKS and not unknown and not s.turns[0][0].lstrip().startswith(f"[{s.task}]"):
            self.warn(where, f"task {s.task!r} but the instruction does not start with [{s.task}]: "
                             f"{s.turns[0][0][:60]!r}")
        if self.proc is not None:
            try:
                ex = self.proc.training_example(s.turns, image=s.image, load_image=False)
                src.max_sample_tokens = max(src.max_sample_tokens, len(ex["input_ids"]))
            except MiniGPTv2Error as e:
                self.problem(where, str(e))


def check_datasets(parts, processor=None, limit: int | None = None, name: str = "", base: str = "") -> Report:
    """Check [(dataset, ratio), ...] (data.load_mixture's result); `limit`: the first N records of each."""
    c = _Checker(processor)
    sources = []
    for ds, ratio in parts:
        c.src = SourceSummary(_name(ds, base or os.getcwd()), _kind(ds), ratio)
        sources.append(c.src)
        for i in range(len(ds) if limit is None else min(limit, len(ds))):
            c.sample(ds, i)
    tokens = ""
    if processor is not None:
        cfg = processor.config
        tokens = f"the model's tokenizer (max_txt_len {cfg.max_txt_len}, max_context_len {cfg.max_context_len})"
    return Report(name, sources, c.problems, c.warnings, c.n_problems, c.n_warnings, tokens)


def check_mixture(path, processor=None, limit: int | None = None) -> Report:
    """Check every dataset of a mixture.json (see the module docstring)."""
    path = os.fspath(path)
    return check_datasets(load_mixture(path), processor, limit, path, os.path.dirname(os.path.abspath(path)))


def refuse(report: Report, show: int = 5) -> MiniGPTv2Error:
    """The error `train` stops with when the check found problems."""
    first = "\n".join(f"  {m}" for m in report.problems[:show])
    more = f"\n  ... and {report.n_problems - show} more" if report.n_problems > show else ""
    return MiniGPTv2Error(f"the training data has {report.n_problems} problem(s):\n{first}{more}\n"
                          f"`minigptv2 data check {report.mixture}` lists them all; fix them, or pass "
                          f"--skip-data-check to train anyway")


def data_texts(parts, n: int = 20000, seed: int = 0) -> list[str]:
    """Texts for a tokenizer built from the data: instructions and answers of up to `n` samples (one per record,
    records of all datasets in turn) and the template markers."""
    rng = random.Random(seed)
    texts = ["[INST] <Img><ImageHere></Img> [/INST]"]
    per = max(1, n // max(1, len(parts)))
    for ds, _ in parts:
        for i in range(min(per, len(ds))):
            for q, a in ds.sample(i, rng).turns:
                texts += [q, a]
    return texts
