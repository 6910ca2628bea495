"""Dataset readers for the annotation formats of the official MiniGPT-v2 recipe (docs/official-model.md §4.2,
§4.4–4.5).

    from minigptv2.data.datasets import open_dataset, load_mixture
    ds = open_dataset("refcoco", "refcoco/refs(unc).p", image_root="coco/train2014")
    s = ds.sample(0, random.Random(0))
    s.turns   # [("[refer] where is man in red ?", "{<12><40><38><71>}")]
    parts = load_mixture("data/synth/mixture.json")   # [(dataset, ratio), ...]

Every reader is a small class with `__len__` and `sample(i, rng) -> Sample`. All random choices (instruction
template, sentence, answer) use `rng`, so a training run is reproducible. The instruction in a Sample is the
user text only ("[refer] where is red circle ?"); the processor adds `<Img><ImageHere></Img>` and `[INST]`.
Readers never open or stat images: they only build paths (the trainer reports a missing image).
Image paths are `image_root / <path from the record>`; `image_root` defaults to the annotation file's folder.

Kinds (open_dataset) and the record format each reads:
    coco_caption       LAVIS karpathy list: {"image", "caption"}                        -> task "caption"
                       (optional "points": [[phrase, box on the 0-100 grid], ...], the objects the caption
                       names, for the pointing loss's spans; `minigptv2 synth --dialogs` writes it)
    refcoco            eval JSON list {"img_id", "sents", "bbox" [x,y,w,h], "height", "width"}, image
                       `{img_id[:27]}.jpg` (or an "image" field, our extension); OR the REFER-API training
                       files `refs(unc).p` + sibling `instances.json` (train split)  -> task "refer"
    invrefcoco         the same files, box -> sentence                                  -> task "identify"
    vqa                LAVIS VQAv2 / OK-VQA list {"image", "question", "answer": [..] or str} -> "vqa"
                       (optional "point": [x1, y1, x2, y2] on the 0-100 grid, the object the question is
                       about, for the pointing loss; `minigptv2 synth --dialogs` writes it)
    aokvqa             {"image", "question", "direct_answers": [..]}                    -> "vqa"
    gqa                GQA / OCR-VQA {"image", "question", "answer": str}               -> "vqa"
    flickr_grounded_caption   {"image_id" (-> {id}.jpg) or "image", "grounded_caption"} -> "grounding"
    flickr_caption_to_phrase  {"image_id" or "image", "caption", "output"}             -> "detection"
    flickr_phrase_to_object   {"image_id" or "image", "phrase", "bbox" (box string)}   -> "detection"
    llava_conversation  LLaVA {"id" (-> COCO_train2014_{id}.jpg) or "image", "conversations"} multi-turn -> "chat"
    llava_detail / llava_reason   same file format, first turn only, instruction blip_caption'ed -> "chat"
    unnatural_instruction  [{"instances": [{"instruction_with_input", "constraints", "output"}]}] -> "text"
    jsonl              ours: one object per line
                       {"image": path-or-null, "task": "...", "turns": [["instruction", "answer"], ...]}
                       used verbatim (no templates, no text processing); image relative to image_root
                       (default: the JSONL's folder) unless absolute.
    synthetic_dialog / synthetic_paraphrase / synthetic_paraphrase_vqa   `scenes.jsonl` of `minigptv2 synth`:
                       conversations mixing every task / one task in a training paraphrase / one VQA question in
                       one (data/synthetic_dialogs.py)

`blip_caption` (docs/official-model.md §4.4) is applied exactly where the official datasets apply it: refer
sentences (twice for identify answers), VQA questions and answers, captions, LLaVA detail/reason instructions,
unnatural instructions and outputs; never to grounded captions, detection outputs, conversations or LLaVA answers.

Any missing or corrupt annotation file raises MiniGPTv2Error naming the file and the record / field.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import random
import re
from collections import Counter

from minigptv2 import prompts
from minigptv2.boxes import format_box, parse_boxes, to_grid
from minigptv2.data.annotations import field as _field, flickr_image as _flickr_image, read_json as _read_json
from minigptv2.data.annotations import read_list as _list_file, str_list as _str_list
from minigptv2.data.annotations import read_jsonl_objects, where as _where
from minigptv2.data.reader import Reader, Sample
from minigptv2.data.synthetic_dialogs import (SyntheticDialogDataset, SyntheticParaphraseDataset,
                                             SyntheticParaphraseVQADataset)
from minigptv2.errors import MiniGPTv2Error
from minigptv2.prompts import (CAPTION_TEMPLATES, DETECTION_TEMPLATE, GROUNDING_TEMPLATES, IDENTIFY_TEMPLATES, REFER_TEMPLATES, VQA_TEMPLATES)

VISION_TASKS = prompts.TASKS
TASKS = VISION_TASKS + ("chat", "text")


# ---- text processor ---------------------------------------------------------------------------------------
_PUNCT_RE = re.compile(r"([.!\"()*#:;~])")
_SPACES_RE = re.compile(r"\s{2,}")


def blip_caption(text: str, max_words: int = 50) -> str:
    """The official `blip_caption` text processor (docs/official-model.md §4.4), with the BLIP/LAVIS details kept:

    lowercase; each of . ! " ( ) * # : ; ~ -> a space; runs of 2+ whitespace characters -> one space (a single
    tab or newline is left as it is, as in the original); strip trailing newlines, then spaces; keep the first
    `max_words` space-separated words.

    >>> blip_caption("The Man (left) holds a cup.")
    'the man left holds a cup'
    """
    text = _PUNCT_RE.sub(" ", text.lower())
    text = _SPACES_RE.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


# ---- file helpers -----------------------------------------------------------------------------------------
class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler for plain data: every class/function lookup is refused, so no pickled code can run."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only plain data is allowed)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id (only plain data is allowed)")


def safe_unpickle(path: str):
    """Load a pickle that holds only lists / dicts / str / numbers (the REFER `refs(unc).p`); never runs code.

    Python-2 pickles (the original REFER files) decode their byte strings as UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MiniGPTv2Error(f"annotation file not found: {path}") from None
    except OSError as e:
        raise MiniGPTv2Error(f"cannot read annotation file {path}: {e.strerror or e}") from None
    try:
        return _NoGlobalsUnpickler(io.BytesIO(data), encoding="utf-8", errors="replace").load()
    except pickle.UnpicklingError as e:
        raise MiniGPTv2Error(f"{path}: not a plain-data pickle: {e}") from None
    except Exception as e:  # truncated / garbage input raises many types  # noqa: BLE001
        raise MiniGPTv2Error(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from None


# ---- captions ---------------------------------------------------------------------------------------------
class CocoCaptionDataset(Reader):
    """COCO Karpathy train (LAVIS): "[caption] " + one of 17 templates -> blip_caption(caption)."""

    task = "caption"

    def _load(self):
        out = []
        for i, r in enumerate(_list_file(self.path)):
            points = _field(r, "points", list, self.path, i, optional=True)
            if points is not None and not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                              and p[0].strip() and isinstance(p[1], list) and _grid_box(p[1])
                                              for p in points):
                raise MiniGPTv2Error(f"{self.path}: record {i}: points must be [[phrase, [x1, y1, x2, y2]], ...] "
                                     f"with boxes on the 0-100 grid, got {str(points)[:200]}")
            out.append((_field(r, "image", str, self.path, i), _field(r, "caption", str, self.path, i), points))
        return out

    def sample(self, i: int, rng: random.Random) -> Sample:
        image, caption, points = self.records[i]
        instruction = "[caption] " + rng.choice(CAPTION_TEMPLATES)
        pointed = None if points is None else [[[blip_caption(p), box] for p, box in points]]
        return Sample(self._image(image), [(instruction, blip_caption(caption))], self.task, self._source(i), pointed)


# ---- RefCOCO / RefCOCO+ / RefCOCOg ------------------------------------------------------------------------
def _finite(c) -> bool:
    """A JSON number usable as a float: not bool, not NaN / Infinity, not an integer too large for a float."""
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        return False
    try:
        return math.isfinite(float(c))
    except OverflowError:
        return False


def _grid_box(v) -> bool:
    return (len(v) == 4 and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 100 for c in v)
            and v[0] < v[2] and v[1] < v[3])


def _check_box(v, what: str):
    if not (isinstance(v, (list, tuple)) and len(v) == 4 and all(_finite(c) for c in v)):
        raise MiniGPTv2Error(f"{what}: 'bbox' must be 4 finite numbers [x, y, w, h], got {str(v)[:200]}")
    return tuple(float(c) for c in v)


def _check_size(v, key: str, what: str) -> float:
    if not _finite(v) or v <= 0:
        raise MiniGPTv2Error(f"{what}: '{key}' must be a positive number, got {str(v)[:200]}")
    return float(v)


class RefCOCODataset(Reader):
    """Referring expression comprehension: one of 7 `[refer]` templates with blip_caption(sentence) -> box.

    Reads the eval-JSON format (one record per sentence; image `{img_id[:27]}.jpg`, or the record's "image")
    or, for a `.p` / `.pkl` path, the REFER-API files: `refs(unc).p` (read with a no-globals unpickler) and
    `instances.json` in the same folder; only refs of `split` are used, one random raw sentence per sample,
    image `COCO_train2014_{image_id:012}.jpg`, image size from instances.json. Box: xywh -> xyxy -> 0..100 grid.
    """

    task = "refer"

    def __init__(self, path, image_root=None, split: str = "train"):
        self.split = split
        super().__init__(path, image_root)

    def _load(self):
        if self.path.endswith((".p", ".pkl", ".pickle")):
            return self._load_refer_api()
        out = []
        for i, r in enumerate(_list_file(self.path)):
            w = _where(self.path, i)
            img = _field(r, "image", str, self.path, i, optional=True)
            if img is None:
                img = _field(r, "img_id", str, self.path, i)[:27] + ".jpg"
            sents = _str_list(r, "sents", self.path, i, allow_str=True)
            box = _check_box(_field(r, "bbox", list, self.path, i), w)
            width = _check_size(_field(r, "width", (int, float), self.path, i), "width", w)
            height = _check_size(_field(r, "height", (int, float), self.path, i), "height", w)
            out.append((i, img, sents, box, width, height))
        return out

    def _load_refer_api(self):
        refs = safe_unpickle(self.path)
        inst_path = os.path.join(os.path.dirname(self.path), "instances.json")
        inst = _read_json(inst_path)
        if not isinstance(inst, dict):
            raise MiniGPTv2Error(f"{inst_path}: expected a JSON object with 'images' and 'annotations'")
        images, anns = {}, {}
        num = (int, float)
        for key, table, fields in (("images", images, {"id": int, "width": num, "height": num}),
                                   ("annotations", anns, {"id": int, "bbox": list})):
            rows = inst.get(key)
            if not isinstance(rows, list):
                raise MiniGPTv2Error(f"{inst_path}: missing list '{key}'")
            for j, row in enumerate(rows):
                for f, t in fields.items():
                    _field(row, f, t, f"{inst_path} ({key})", j)
                table[row["id"]] = row
        if not isinstance(refs, list):
            raise MiniGPTv2Error(f"{self.path}: expected a list of refs, got {type(refs).__name__}")
        out = []
        for i, ref in enumerate(refs):
            w = _where(self.path, i)
            if _field(ref, "split", str, self.path, i) != self.split:
                continue
            image_id = _field(ref, "image_id", int, self.path, i)
            ann_id = _field(ref, "ann_id", int, self.path, i)
            sentences = _field(ref, "sentences", list, self.path, i)
            if not sentences:
                raise MiniGPTv2Error(f"{w}: 'sentences' is empty")
            sents = [_field(s, "raw", str, self.path, i) for s in sentences]
            if image_id not in images:
                raise MiniGPTv2Error(f"{w}: image_id {image_id} is not in {inst_path}")
            if ann_id not in anns:
                raise MiniGPTv2Error(f"{w}: ann_id {ann_id} is not in {inst_path}")
            im = images[image_id]
            box = _check_box(anns[ann_id]["bbox"], f"{inst_path}: annotation {ann_id}")
            width = _check_size(im["width"], "width", f"{inst_path}: image {image_id}")
            height = _check_size(im["height"], "height", f"{inst_path}: image {image_id}")
            out.append((i, f"COCO_train2014_{image_id:012d}.jpg", sents, box, width, height))
        return out

    def _pick(self, i: int, rng: random.Random):
        idx, img, sents, (x, y, w, h), width, height = self.records[i]
        sentence = blip_caption(rng.choice(sents))
        box = format_box(to_grid((x, y, x + w, y + h), width, height))
        return idx, self._image(img), sentence, box

    def sample(self, i: int, rng: random.Random) -> Sample:
        idx, image, sentence, box = self._pick(i, rng)
        instruction = rng.choice(REFER_TEMPLATES).format(sentence)
        return Sample(image, [(instruction, box)], self.task, self._source(idx))


class InvRefCOCODataset(RefCOCODataset):
    """Referring expression generation: one of 7 `[identify]` templates with the box -> the sentence
    (blip_caption applied a second time, as the official `InvReferCOCODataset`)."""

    task = "identify"

    def sample(self, i: int, rng: random.Random) -> Sample:
        idx, image, sentence, box = self._pick(i, rng)
        instruction = rng.choice(IDENTIFY_TEMPLATES).format(box)
        return Sample(image, [(instruction, blip_caption(sentence))], self.task, self._source(idx))


# ---- VQA --------------------------------------------------------------------------------------------------
class VQADataset(Reader):
    """VQAv2 / OK-VQA (LAVIS): `[vqa]` template with blip_caption(question) -> blip_caption(answer), the answer
    drawn with probability ∝ its frequency in the record's answer list (a single string is also accepted)."""

    task = "vqa"
    answer_key = "answer"
    single_answer = False   # True: the answer must be one string (GQA, OCR-VQA)

    def _load(self):
        out = []
        for i, r in enumerate(_list_file(self.path)):
            img = _field(r, "image", str, self.path, i)
            q = _field(r, "question", str, self.path, i)
            if self.single_answer:
                answers = [_field(r, self.answer_key, str, self.path, i)]
            else:
                answers = _str_list(r, self.answer_key, self.path, i, allow_str=True)
            counts = Counter(answers)   # first-seen order, as the official answer_weight dict
            point = _field(r, "point", list, self.path, i, optional=True)
            if point is not None and not _grid_box(point):
                raise MiniGPTv2Error(f"{self.path}: record {i}: point must be [x1, y1, x2, y2] on the 0-100 grid "
                                     f"with x1 < x2 and y1 < y2, got {point!r}")
            out.append((img, q, list(counts), list(counts.values()), point))
        return out

    def sample(self, i: int, rng: random.Random) -> Sample:
        img, q, answers, weights, point = self.records[i]
        answer = rng.choices(answers, weights=weights, k=1)[0]
        instruction = rng.choice(VQA_TEMPLATES).format(blip_caption(q))
        return Sample(self._image(img), [(instruction, blip_caption(answer))], self.task, self._source(i),
                      None if point is None else [point])


class AOKVQADataset(VQADataset):
    """A-OKVQA: answers from `direct_answers`."""

    answer_key = "direct_answers"


class GQADataset(VQADataset):
    """GQA balanced / OCR-VQA: a single `answer` string."""

    single_answer = True


# ---- Flickr30k-entities style -----------------------------------------------------------------------------
class FlickrGroundedCaptionDataset(Reader):
    """One of 4 `[grounding]` templates -> `grounded_caption` verbatim (no text processing)."""

    task = "grounding"

    def _load(self):
        return [(_flickr_image(r, self.path, i), _field(r, "grounded_caption", str, self.path, i))
                for i, r in enumerate(_list_file(self.path))]

    def sample(self, i: int, rng: random.Random) -> Sample:
        img, answer = self.records[i]
        return Sample(self._image(img), [(rng.choice(GROUNDING_TEMPLATES), answer)], self.task, self._source(i))


class FlickrCaptionToPhraseDataset(Reader):
    """`[detection] {caption}` -> `output` verbatim (the official CaptionToObjectDataset)."""

    task = "detection"

    def _load(self):
        return [(_flickr_image(r, self.path, i), _field(r, "caption", str, self.path, i),
                 _field(r, "output", str, self.path, i)) for i, r in enumerate(_list_file(self.path))]

    def sample(self, i: int, rng: random.Random) -> Sample:
        img, caption, output = self.records[i]
        return Sample(self._image(img), [(DETECTION_TEMPLATE.format(caption), output)], self.task,
                      self._source(i))


class FlickrPhraseToObjectDataset(Reader):
    """`[detection] {phrase}` -> `<p>{phrase}</p> {bbox}`; `bbox` is the box string (`{<..>..}<delim>{..}`)."""

    task = "detection"

    def _load(self):
        out = []
        for i, r in enumerate(_list_file(self.path)):
            phrase = _field(r, "phrase", str, self.path, i)
            bbox = _field(r, "bbox", str, self.path, i)
            if not parse_boxes(bbox):
                raise MiniGPTv2Error(f"{_where(self.path, i)}: field 'bbox' holds no box {{<x1><y1><x2><y2>}}: "
                                     f"{bbox!r}")
            out.append((_flickr_image(r, self.path, i), phrase, bbox))
        return out

    def sample(self, i: int, rng: random.Random) -> Sample:
        img, phrase, bbox = self.records[i]
        answer = "<p>" + phrase + "</p> " + bbox
        return Sample(self._image(img), [(DETECTION_TEMPLATE.format(phrase), answer)], self.task,
                      self._source(i))


# ---- LLaVA ------------------------------------------------------------------------------------------------
class LlavaConversationDataset(Reader):
    """LLaVA conversation_58k / multitask_conversation: all turns, no identifier, no text processing.

    The first human turn has `<image>` and newlines removed and is stripped; later turns are verbatim.
    Image: the record's "image" (LLaVA's own field) if present, else `COCO_train2014_{id}.jpg` (official)."""

    task = "chat"

    def _load(self):
        out = []
        for i, r in enumerate(_list_file(self.path)):
            w = _where(self.path, i)
            img = _field(r, "image", str, self.path, i, optional=True)
            if img is None:
                if not isinstance(r, dict) or "id" not in r:
                    raise MiniGPTv2Error(f"{w}: missing field 'image' (or 'id')")
                img = f"COCO_train2014_{_field(r, 'id', (str, int), self.path, i)}.jpg"
            conv = _field(r, "conversations", list, self.path, i)
            if len(conv) < 2 or len(conv) % 2:
                raise MiniGPTv2Error(f"{w}: 'conversations' must hold human/gpt pairs, got {len(conv)} turns")
            values = []
            for j, turn in enumerate(conv):
                who = _field(turn, "from", str, f"{self.path}: record {i} conversations", j)
                want = "human" if j % 2 == 0 else "gpt"
                if who != want:
                    raise MiniGPTv2Error(f"{w}: conversations[{j}] is from {who!r}, expected {want!r}")
                values.append(_field(turn, "value", str, f"{self.path}: record {i} conversations", j))
            out.append((img, values))
        return out

    @staticmethod
    def _first(text: str) -> str:
        return text.replace("<image>", "").replace("\n", "").strip()

    def sample(self, i: int, rng: random.Random) -> Sample:
        img, v = self.records[i]
        turns = [(self._first(v[0]), v[1])] + [(v[k], v[k + 1]) for k in range(2, len(v), 2)]
        return Sample(self._image(img), turns, self.task, self._source(i))


class LlavaDetailDataset(LlavaConversationDataset):
    """LLaVA detail_23k: first turn only; blip_caption on the instruction, answer verbatim."""

    def sample(self, i: int, rng: random.Random) -> Sample:
        img, v = self.records[i]
        return Sample(self._image(img), [(blip_caption(self._first(v[0])), v[1])], self.task, self._source(i))


class LlavaReasonDataset(LlavaDetailDataset):
    """LLaVA complex_reasoning_77k: as LlavaDetailDataset."""


# ---- text only --------------------------------------------------------------------------------------------
class UnnaturalInstructionDataset(Reader):
    """Unnatural Instructions: instances[0].instruction_with_input (+ " " + constraints) -> output, both
    blip_caption'ed; no image."""

    task = "text"

    def _load(self):
        out = []
        for i, r in enumerate(_list_file(self.path)):
            inst = _field(r, "instances", list, self.path, i)
            if not inst:
                raise MiniGPTv2Error(f"{_where(self.path, i)}: 'instances' is empty")
            where = f"{self.path}: record {i} instances"
            instruction = _field(inst[0], "instruction_with_input", str, where, 0)
            constraints = _field(inst[0], "constraints", str, where, 0, optional=True)
            output = _field(inst[0], "output", str, where, 0)
            if constraints is not None:
                instruction = instruction + " " + constraints
            out.append((instruction, output))
        return out

    def sample(self, i: int, rng: random.Random) -> Sample:
        instruction, output = self.records[i]
        return Sample(None, [(blip_caption(instruction), blip_caption(output))], self.task, self._source(i))


# ---- our generic format -----------------------------------------------------------------------------------
class JsonlDataset(Reader):
    """One JSON object per line: {"image": path-or-null, "task": "...", "turns": [["instruction", "answer"], ...]}.

    Used verbatim: write identifiers yourself ("[refer] red circle"). `task` is one of TASKS; the vision
    tasks need an image, "text" must have none. Blank lines are skipped; errors name the line number."""

    def _load(self):
        out = []
        for n, where, r in read_jsonl_objects(self.path):
            for key in ("task", "turns"):
                if key not in r:
                    raise MiniGPTv2Error(f"{where}: missing field '{key}'")
            task, turns, image = r["task"], r["turns"], r.get("image")
            if task not in TASKS:
                raise MiniGPTv2Error(f"{where}: field 'task' must be one of {', '.join(TASKS)}, got {task!r}")
            if image is not None and not isinstance(image, str):
                raise MiniGPTv2Error(f"{where}: field 'image' must be a path string or null")
            if image is None and task in VISION_TASKS:
                raise MiniGPTv2Error(f"{where}: task {task!r} needs an 'image'")
            if image is not None and task == "text":
                raise MiniGPTv2Error(f"{where}: task 'text' must have \"image\": null")
            if not (isinstance(turns, list) and turns and all(
                    isinstance(t, list) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in turns)):
                raise MiniGPTv2Error(f"{where}: field 'turns' must be a non-empty list of "
                                     f"[\"instruction\", \"answer\"] string pairs")
            out.append((n, image, task, [tuple(t) for t in turns]))
        return out

    def sample(self, i: int, rng: random.Random) -> Sample:
        _, image, task, turns = self.records[i]
        path = None if image is None else self._image(image)   # join keeps absolute paths as they are
        return Sample(path, list(turns), task, f"{self.path}#{i}")


# ---- entry points -----------------------------------------------------------------------------------------
KINDS = {
    "coco_caption": CocoCaptionDataset,
    "refcoco": RefCOCODataset,
    "invrefcoco": InvRefCOCODataset,
    "vqa": VQADataset,
    "aokvqa": AOKVQADataset,
    "gqa": GQADataset,
    "flickr_grounded_caption": FlickrGroundedCaptionDataset,
    "flickr_caption_to_phrase": FlickrCaptionToPhraseDataset,
    "flickr_phrase_to_object": FlickrPhraseToObjectDataset,
    "llava_conversation": LlavaConversationDataset,
    "llava_detail": LlavaDetailDataset,
    "llava_reason": LlavaReasonDataset,
    "unnatural_instruction": UnnaturalInstructionDataset,
    "jsonl": JsonlDataset,
    "synthetic_dialog": SyntheticDialogDataset,           # the synthetic scenes asked in conversations
    "synthetic_paraphrase": SyntheticParaphraseDataset,   # ... and in training paraphrases (data/synthetic_dialogs.py)
    "synthetic_paraphrase_vqa": SyntheticParaphraseVQADataset,   # ... VQA only
}


def open_dataset(kind: str, path, image_root=None):
    """A reader for annotation file `path` of the given kind (see KINDS and the module docstring)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise MiniGPTv2Error(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    return cls(path, image_root)


def load_mixture(path) -> list:
    """Read a mixture.json: a list of {"kind", "path", "image_root" (optional), "ratio"}; `path` and
    `image_root` are relative to the mixture file's folder. Returns [(dataset, ratio), ...]."""
    path = os.fspath(path)
    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        raise MiniGPTv2Error(f"{path}: a mixture must be a non-empty JSON list of "
                             "{\"kind\", \"path\", \"image_root\", \"ratio\"} objects")
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: entry {i}"
        kind = _field(e, "kind", str, path, i)
        file = _field(e, "path", str, path, i)
        root = _field(e, "image_root", str, path, i, optional=True)
        ratio = _field(e, "ratio", (int, float), path, i)
        if ratio < 0:
            raise MiniGPTv2Error(f"{where}: 'ratio' must be >= 0, got {ratio}")
        if kind not in KINDS:
            raise MiniGPTv2Error(f"{where}: unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
        ds = open_dataset(kind, os.path.join(base, file), None if root is None else os.path.join(base, root))
        out.append((ds, float(ratio)))
    return out


__all__ = ["Sample", "TASKS", "KINDS", "blip_caption", "safe_unpickle", "open_dataset", "load_mixture",
           *(c.__name__ for c in KINDS.values())]
