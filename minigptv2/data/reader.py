"""What every training-data reader is: a `Reader` over one annotation file, whose `sample(i, rng)` gives a `Sample`
(datasets.py: the official formats and our JSONL; synthetic_dialogs.py: conversations about synthetic scenes)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Sample:
    image: str | None                  # image file path; None = text-only
    turns: list[tuple[str, str]]       # [(instruction, answer), ...]; instruction without <Img>/[INST]
    task: str                          # one of TASKS
    source: str = ""                   # "file#record-index", for error messages
    points: list | None = None         # per turn: the 0-100 grid box of the one object it is about, a list of
                                       # [phrase, box] (the objects a caption names), or None; only the pointing
                                       # loss reads it (train/pointing.py)


class Reader:
    """Base: `self.records` (validated at open time) and `self.image_root`."""

    task = ""

    def __init__(self, path, image_root=None):
        self.path = os.fspath(path)
        root = image_root if image_root is not None else os.path.dirname(os.path.abspath(self.path))
        self.image_root = os.fspath(root)
        self.records = self._load()

    def _load(self) -> list:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {len(self)} records)"

    def _image(self, rel: str) -> str:
        return os.path.join(self.image_root, rel)

    def _source(self, i: int) -> str:
        return f"{self.path}#{i}"
