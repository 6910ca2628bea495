"""The official benches: their names, their prompts, and their loaders (the annotation files under --data ROOT ->
[Item], every image checked). Where each bench's files go: docs/evaluation.md, the layout table (it mirrors the
official eval config: one folder per data set, COCO images shared). A missing annotation file or image is a
MiniGPTv2Error naming the file(s) and where they should be.
"""
from __future__ import annotations

import os
from pathlib import Path

from minigptv2.boxes import parse_boxes
from minigptv2.data.annotations import field, flickr_image, read_records
from minigptv2.prompts import EVAL_PROMPTS
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval.run import Item

# ---- prompts (docs/official-model.md §5.1, §5.3; identify / caption / grounding: the official training templates)
REFER_PROMPT = EVAL_PROMPTS["refer"]             # "[refer] give me the location of {}"
VQA_PROMPT = EVAL_PROMPTS["vqa"]                 # "[vqa] Based on the image, respond to this question with ..."
VIZWIZ_PROMPT = ("[vqa] The question is '{}' Based on the image, answer the question with a single word or phrase."
                 " and reply 'unanswerable' when the provided information is insufficient")
VSR_PROMPT = "[vqa] Based on the image, is this statement true or false? {}"
HM_PROMPT = "This is an image writting '{}'. Is this image hateful? Answer yes or no. Answer:"
CAPTION_PROMPT = EVAL_PROMPTS["caption"]                 # "[caption] Briefly describe this image."
GROUNDING_PROMPT = EVAL_PROMPTS["grounding"]             # "[grounding] please describe this image in details"
DETECTION_PROMPT = EVAL_PROMPTS["detection"]             # "[detection] {}"
IDENTIFY_PROMPT = EVAL_PROMPTS["identify"]               # "[identify] what object is in this location {}"

REFCOCO_SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
                  "refcocog": ("val", "test")}
REFCOCO_BENCHES = tuple(f"{d}_{s}" for d, splits in REFCOCO_SPLITS.items() for s in splits)
VQA_BENCHES = ("okvqa", "gqa", "vsr", "iconvqa", "vizwiz", "hm")
OTHER_BENCHES = ("coco_caption", "detection", "grounding", "synthetic", "synthetic_views", "jsonl")
ALL_BENCHES = REFCOCO_BENCHES + VQA_BENCHES + OTHER_BENCHES


def _first_file(*cands: Path) -> Path:
    for c in cands:
        if c.is_file():
            return c
    raise MiniGPTv2Error("annotation file not found; looked for " + ", ".join(str(c) for c in cands))


def check_images(items: list[Item], bench: str, hint: str) -> None:
    """Raise one MiniGPTv2Error listing the missing image files (first few + count) and where they belong."""
    paths = list(dict.fromkeys(it.image for it in items))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise MiniGPTv2Error(f"{bench}: {len(missing)} of {len(paths)} image files are missing, e.g. "
                             f"{', '.join(missing[:3])}. {hint}")


# ---- loaders: ROOT -> [Item] -------------------------------------------------------------------------------
def load_refcoco(root: Path, bench: str, limit: int | None = None) -> tuple[list[Item], str]:
    dataset = bench.rsplit("_", 1)[0]
    path = _first_file(root / dataset / f"{bench}.json", root / f"{bench}.json")
    images = root / "coco" / "train2014"
    items = []
    for i, r in enumerate(read_records(path)[:limit]):
        img_id = field(r, "img_id", str, path, i)
        sents = field(r, "sents", str, path, i)
        bbox = field(r, "bbox", list, path, i)
        w, h = field(r, "width", (int, float), path, i), field(r, "height", (int, float), path, i)
        if len(bbox) != 4 or w <= 0 or h <= 0:
            raise MiniGPTv2Error(f"{path}: record {i} needs bbox [x, y, w, h] and positive width/height")
        items.append(Item(str(i), str(images / f"{img_id[:27]}.jpg"), REFER_PROMPT.format(sents), "refer",
                          {"img_id": img_id, "sents": sents, "bbox": bbox, "width": w, "height": h}))
    hint = (f"RefCOCO/+/g use the COCO train2014 images: put them (or a symlink) at {images} "
            f"(ln -s /path/to/coco/train2014 {images}) and pass --data {root}.")
    return items, hint


def load_okvqa(root: Path, limit=None):
    path = root / "okvqa" / "okvqa_test_split.json"
    recs = read_records(path)[:limit]
    ann_file = root / "okvqa" / "mscoco_val2014_annotations_clean.json"
    answers = {}
    if ann_file.is_file():
        for a in read_records(ann_file):
            answers[a["question_id"]] = [x["answer"] if isinstance(x, dict) else x for x in a["answers"]]
    images = root / "coco" / "train2017"
    items = []
    for i, r in enumerate(recs):
        qid = field(r, "question_id", None, path, i)
        ans = answers.get(qid) or r.get("answers") or r.get("answer")
        if not ans:
            raise MiniGPTv2Error(f"{path}: no answers for question_id {qid} (expected them in {ann_file})")
        ans = [x["answer"] if isinstance(x, dict) else x for x in ([ans] if isinstance(ans, str) else ans)]
        image_id = int(field(r, "image_id", None, path, i))
        items.append(Item(str(qid), str(images / f"{image_id:012d}.jpg"),
                          VQA_PROMPT.format(field(r, "question", str, path, i)), "vqa", {"answers": ans}))
    return items, f"OKVQA uses COCO images with 2017 names: put train2017 at {images}."


def load_vizwiz(root: Path, limit=None):
    path = root / "vizwiz" / "val.json"
    images = root / "vizwiz" / "val"
    items = []
    for i, r in enumerate(read_records(path)[:limit]):
        ans = [a["answer"] if isinstance(a, dict) else a for a in field(r, "answers", list, path, i)]
        items.append(Item(str(i), str(images / field(r, "image", str, path, i)),
                          VIZWIZ_PROMPT.format(field(r, "question", str, path, i)), "vqa", {"answers": ans}))
    return items, f"put the VizWiz val images at {images}."


def load_gqa(root: Path, limit=None):
    path = root / "gqa" / "testdev_balanced.json"
    images = root / "gqa" / "images"
    items = [Item(str(i), str(images / field(r, "image", str, path, i)),
                  VQA_PROMPT.format(field(r, "question", str, path, i)), "vqa",
                  {"answer": field(r, "answer", str, path, i)}) for i, r in enumerate(read_records(path)[:limit])]
    return items, f"put the GQA images at {images}."


def load_vsr(root: Path, limit=None):
    path = _first_file(root / "vsr" / "test.jsonl", root / "vsr" / "test.json")
    images = root / "vsr" / "images"
    items = [Item(str(i), str(images / field(r, "image", str, path, i)),
                  VSR_PROMPT.format(field(r, "caption", str, path, i)), "vqa",
                  {"label": field(r, "label", None, path, i)})
             for i, r in enumerate(read_records(path)[:limit])]
    return items, f"put the VSR (COCO 2017) images at {images}."


def load_hm(root: Path, limit=None):
    path = _first_file(root / "hm" / "dev.jsonl", root / "hm" / "dev.json")
    items = [Item(str(r.get("id", i)), str(root / "hm" / field(r, "img", str, path, i)),
                  HM_PROMPT.format(field(r, "text", str, path, i)), "vqa",
                  {"label": field(r, "label", None, path, i)})
             for i, r in enumerate(read_records(path)[:limit])]
    return items, f"put the Hateful Memes img/ folder at {root / 'hm' / 'img'}."


def load_iconvqa(root: Path, limit=None):
    path = root / "iconvqa" / "choose_text_val.json"
    images = root / "iconvqa" / "val" / "choose_txt"
    items = []
    for i, r in enumerate(read_records(path)[:limit]):
        image_id = field(r, "image_id", None, path, i)
        choices = field(r, "choices", list, path, i)
        items.append(Item(str(image_id), str(images / str(image_id) / "image.png"),
                          VQA_PROMPT.format(field(r, "question", str, path, i)), "rank",
                          {"choices": [str(c) for c in choices], "answer": int(field(r, "answer", None, path, i))}))
    return items, f"put IconQA's val/choose_txt/<id>/image.png tree at {images}."


def load_coco_caption(root: Path, limit=None):
    path = root / "coco_caption" / "coco_karpathy_test.json"
    items = []
    for i, r in enumerate(read_records(path)[:limit]):
        caps = field(r, "caption", (list, str), path, i)
        items.append(Item(str(r.get("image_id", i)), str(root / "coco" / field(r, "image", str, path, i)),
                          CAPTION_PROMPT, "caption", {"refs": [caps] if isinstance(caps, str) else caps}))
    return items, f"put the COCO images at {root / 'coco'} (e.g. {root / 'coco' / 'val2014'})."


def load_detection(root: Path, limit=None):
    path = root / "detection" / "phrase_to_object.json"
    items = []
    for i, r in enumerate(read_records(path)[:limit]):
        phrase = field(r, "phrase", str, path, i)
        gt = [g.box for g in parse_boxes(field(r, "bbox", str, path, i))]
        if not gt:
            raise MiniGPTv2Error(f"{path}: record {i} field 'bbox' holds no box {{<x1><y1><x2><y2>}}")
        items.append(Item(str(i), str(path.parent / flickr_image(r, path, i)), DETECTION_PROMPT.format(phrase),
                          "detection", {"phrase": phrase, "boxes": gt}))
    return items, f"put the images next to {path} (paths in the file are relative to {path.parent})."


def load_grounding(root: Path, limit=None):
    path = root / "grounding" / "grounded_caption.json"
    items = []
    for i, r in enumerate(read_records(path)[:limit]):
        cap = field(r, "grounded_caption", str, path, i)
        items.append(Item(str(i), str(path.parent / flickr_image(r, path, i)), GROUNDING_PROMPT, "grounding",
                          {"grounded_caption": cap, "boxes": [g.box for g in parse_boxes(cap)]}))
    return items, f"put the images next to {path} (paths in the file are relative to {path.parent})."


LOADERS = {"okvqa": load_okvqa, "vizwiz": load_vizwiz, "gqa": load_gqa, "vsr": load_vsr, "hm": load_hm,
           "iconvqa": load_iconvqa, "coco_caption": load_coco_caption, "detection": load_detection,
           "grounding": load_grounding}


def load_bench(root: Path, bench: str, limit: int | None = None) -> list[Item]:
    """Items of one bench, after checking that every image file exists."""
    if bench in REFCOCO_BENCHES:
        items, hint = load_refcoco(root, bench, limit)
    elif bench in LOADERS:
        items, hint = LOADERS[bench](root, limit)
    else:
        raise MiniGPTv2Error(f"unknown bench {bench!r}; choose from {', '.join(ALL_BENCHES)}")
    if not items:
        raise MiniGPTv2Error(f"{bench}: the annotation file under {root} has no records")
    check_images(items, bench, hint)
    return items


def expand_benches(spec: str) -> list[str]:
    out: list[str] = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name in REFCOCO_SPLITS:
            out += [f"{name}_{s}" for s in REFCOCO_SPLITS[name]]
        elif name == "vqa":
            out += VQA_BENCHES
        elif name in ALL_BENCHES:
            out.append(name)
        else:
            raise MiniGPTv2Error(f"unknown bench {name!r}; choose from refcoco, refcoco+, refcocog, vqa, "
                                 f"{', '.join(ALL_BENCHES)}")
    if not out:
        raise MiniGPTv2Error("--bench is empty")
    return list(dict.fromkeys(out))
