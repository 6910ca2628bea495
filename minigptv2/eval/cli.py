"""Evaluation harness: the official MiniGPT-v2 benchmark protocols, our synthetic benchmark, harness adapters.
The same, as a page with tables: docs/evaluation.md.

    minigptv2 eval --model m7b --bench refcoco,refcoco+,refcocog --data /data/minigptv2-eval --out runs/eval-ref
    minigptv2 eval --model m7b --bench okvqa,gqa,vsr,iconvqa,vizwiz,hm --data /data/minigptv2-eval --out runs/eval-vqa
    minigptv2 eval --model m7b --bench refcoco_val --data /data/minigptv2-eval --out runs/quick --limit 200 \\
        --batch-size 16 --compare-constrained
    minigptv2 eval --bench synthetic --out runs/eval-nano                  # embedded nano model, 500 held-out scenes
    minigptv2 eval --model runs/nano/final --bench synthetic --data data/synth-test --out runs/eval-nano

    from minigptv2.eval.cli import synthetic_benchmark
    scores = synthetic_benchmark(model, processor, "data/synth-test", limit=200)   # {"refer_acc": 0.91, ...}

Benches (`--bench`, comma-separated; a family name expands to its splits):
    refcoco_val refcoco_testA refcoco_testB refcoco+_val refcoco+_testA refcoco+_testB refcocog_val refcocog_test
        (refcoco / refcoco+ / refcocog = all splits of that family)
    okvqa gqa vsr iconvqa vizwiz hm   (vqa = all six)      coco_caption   detection   grounding   synthetic
    jsonl   (your own data: --data is a JSONL file in the training format, e.g. the test.jsonl of
             `minigptv2 data convert --held-out`; scored as eval_jsonl.py says)

Layout under --data ROOT (mirrors the official eval config: one folder per data set, COCO images shared):
    RefCOCO/+/g   ROOT/refcoco/refcoco_val.json ... ROOT/refcoco+/refcoco+_testB.json, ROOT/refcocog/refcocog_test.json
                  (`{dataset}/{dataset}_{split}.json` as eval_ref.py; the flat ROOT/refcoco_val.json, as shipped in
                  eval_scripts/eval_data/, is accepted too). Images: ROOT/coco/train2014/COCO_train2014_<id>.jpg
                  (`img_id[:27] + ".jpg"`).
    OKVQA         ROOT/okvqa/okvqa_test_split.json [{image_id, question, question_id}] and the answers from
                  ROOT/okvqa/mscoco_val2014_annotations_clean.json ({"annotations": [{question_id, answers:
                  [{answer}]}]}; records with their own "answers"/"answer" list need no annotation file).
                  Images: ROOT/coco/train2017/{image_id:012}.jpg (COCO-2017 names, as the official README).
    VizWiz        ROOT/vizwiz/val.json [{image, question, answers: [{answer}]}]; images ROOT/vizwiz/val/{image}
    GQA           ROOT/gqa/testdev_balanced.json [{image, question, answer}]; images ROOT/gqa/images/{image}
    VSR           ROOT/vsr/test.jsonl (cambridgeltl/vsr_zeroshot test: {image, caption, label}); images
                  ROOT/vsr/images/{image}
    Hateful Memes ROOT/hm/dev.jsonl [{img: "img/01235.png", text, label}]; images ROOT/hm/{img}
    IconVQA       ROOT/iconvqa/choose_text_val.json [{image_id, question, choices, answer (index)}]; images
                  ROOT/iconvqa/val/choose_txt/{image_id}/image.png (IconQA's own tree)
    coco_caption  ROOT/coco_caption/coco_karpathy_test.json (LAVIS: [{image: "val2014/x.jpg", caption: [..]}]);
                  images ROOT/coco/{image}
    detection     ROOT/detection/phrase_to_object.json (Flickr phrase->object format of data.py: {image or
                  image_id, phrase, bbox: "{<..>..}<delim>{..}"}); images relative to ROOT/detection/
    grounding     ROOT/grounding/grounded_caption.json (Flickr grounded-caption format: {image or image_id,
                  grounded_caption}); images relative to ROOT/grounding/
    synthetic     a folder written by `minigptv2 synth` (scenes.jsonl, refcoco.json, vqa.json, ...). Without
                  --data, OUT/synthetic_data is written with n = --limit or 500 scenes, seed HELDOUT_SEED.
A missing annotation file or image is a MiniGPTv2Error naming the file(s) and where they should be.

Protocols (docs/official-model.md §5): greedy, max_new_tokens 20 (--max-new-tokens overrides; captions 30,
detection 100, grounding 200), batched (--batch-size, left padding as the official generate).
  * RefCOCO: prompt `[refer] give me the location of {sents}`, scored per expression by
    metrics.refcoco_accuracy (the official parsing: the answer must start with the box; rescaled to the original
    W,H; inclusive-pixel IoU > 0.5; docs/evaluation-semantics.md §4). No `--resample`
    re-asking (the official one re-asks with a Python list repr in the prompt); unparsable answers count as misses
    and their number is reported (`parse_failures`).
  * OKVQA / GQA: `[vqa] Based on the image, respond to this question with a short answer: {q}`; VizWiz, VSR, HM with
    their own prompts (docs/official-model.md §5.3, typo "writting" kept); scored by
    metrics.{vqa,gqa,vizwiz,vsr,hm}_score with the official per-sample semantics, quirks included
    (docs/evaluation-semantics.md §1-2).
  * IconVQA: likelihood ranking. Each choice is scored by the model's forward pass on the official instruction
    string `<s>[INST] <Img><ImageHere></Img> [vqa] ... {q} [/INST]` + choice + `</s>` (chat_template off, so the
    sequence is the model's inference prompt: for the official prompt_form two BOS, one space before [/INST];
    `processor.training_example` would build the chat_template training form instead). loss = per-row sum of
    answer-token NLL / (padded length - 1) with the official padded length (BOS + longest prompt + longest answer
    of the batch for that choice slot), slots a question lacks are filled with "none" and get loss 9999. Note the
    official quirk this keeps: the divisor depends on the batch, so --batch-size can change a choice (use the
    official 10 to match).
  * coco_caption: `[caption] Briefly describe this image.` -> metrics.caption_scores (BLEU, METEOR, ROUGE-L, CIDEr).
  * detection: `[detection] {phrase}`; grounding: `[grounding] please describe this image in details`. Boxes are
    compared on the 0..100 grid (IoU is unchanged by scaling both axes): COCOeval's matching at IoU 0.5
    (metrics.box_recall_precision, micro-averaged) and COCO AP / AP50 / AP75 (metrics.coco_map, boxes ranked by
    generation order).
  * synthetic: see `synthetic_benchmark`.

Constrained box decoding (constrained.py) is on by default for [refer] (answer = exactly one box) and
[detection] / [grounding] (box syntax); --no-constrain turns it off. --compare-constrained runs those benches a
second time without it and reports both parse-failure rates (and scores) side by side. (It is opt-in because it
doubles the cost of those benches.)

Outputs in --out: metrics.json (updated after every bench), report.md (paper-layout tables with the paper's
numbers beside ours), predictions/{bench}.jsonl (one line per sample), examples/{bench}.png (a grid of examples
with ground-truth and predicted boxes drawn).

Harness adapters: `MiniGPTv2ForEval` answers like the official eval (task identifier added, greedy) and returns
grounding answers as normalised `[x1, y1, x2, y2]` floats (the 0..100 grid / 100), the form lmms-eval's
refcoco bbox_rec and VLMEvalKit's RefCOCO parse (docs/official-model.md §8: both mis-read raw MiniGPT-v2 boxes).
  lmms-eval: add lmms_eval/models/simple/minigptv2.py

        from lmms_eval.api.model import lmms
        from lmms_eval.api.registry import register_model
        from minigptv2.eval.cli import MiniGPTv2ForEval

        @register_model("minigptv2")
        class MiniGPTv2LMMS(MiniGPTv2ForEval, lmms):
            def __init__(self, pretrained=None, batch_size=8, **kw):
                lmms.__init__(self)
                MiniGPTv2ForEval.__init__(self, pretrained, batch_size=int(batch_size))

    (and list "minigptv2": "MiniGPTv2LMMS" in lmms_eval/models/__init__.py AVAILABLE_MODELS), then
    `lmms-eval --model minigptv2 --model_args pretrained=m7b --tasks refcoco_bbox_rec_val,gqa --batch_size 8`.
    `generate_until` reads each request's (context, gen_kwargs, doc_to_visual, doc_id, task, split), takes the
    first image, uses [refer] for the REC tasks (refcoco*_bbox_rec_*; the expression is the text after
    "describes:") and [vqa] otherwise, batching --batch_size requests per call. Log-likelihood requests are not
    supported.
  VLMEvalKit: in vlmeval/config.py add
        from minigptv2.eval.cli import MiniGPTv2ForEval
        from vlmeval.vlm.base import BaseModel
        class MiniGPTv2VLMEval(MiniGPTv2ForEval, BaseModel):
            INSTALL_REQ, INTERLEAVE = False, False
        supported_VLM["MiniGPT-v2-ours"] = partial(MiniGPTv2VLMEval, model_dir="m7b")
    then `python run.py --model MiniGPT-v2-ours --data RefCOCO GQA_TestDev_Balanced`. `generate_inner(message,
    dataset)` joins the text parts, takes the first image, and uses [refer] for the RefCOCO* datasets.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import textwrap
import time
from pathlib import Path

from minigptv2.eval import metrics
from minigptv2.boxes import Grounding, draw_boxes, format_box, parse_boxes, to_grid, to_pixels
from minigptv2.eval.run import (MAX_NEW_TOKENS, Item, _write_atomic, box_parse_failed,  # noqa: F401 - re-exported
                                 run_prompts, write_predictions)
from minigptv2.data.datasets import (CAPTION_TEMPLATES, DETECTION_TEMPLATE, GROUNDING_TEMPLATES, IDENTIFY_TEMPLATES,
                            REFER_TEMPLATES, VQA_TEMPLATES, blip_caption)
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import generate

# ---- prompts (docs/official-model.md §5.1, §5.3; identify / caption / grounding: the official training templates)
REFER_PROMPT = REFER_TEMPLATES[1]                 # "[refer] give me the location of {}"
VQA_PROMPT = VQA_TEMPLATES[1]                     # "[vqa] Based on the image, respond to this question with ..."
VIZWIZ_PROMPT = ("[vqa] The question is '{}' Based on the image, answer the question with a single word or phrase."
                 " and reply 'unanswerable' when the provided information is insufficient")
VSR_PROMPT = "[vqa] Based on the image, is this statement true or false? {}"
HM_PROMPT = "This is an image writting '{}'. Is this image hateful? Answer yes or no. Answer:"
CAPTION_PROMPT = "[caption] " + CAPTION_TEMPLATES[0]      # "[caption] Briefly describe this image."
GROUNDING_PROMPT = GROUNDING_TEMPLATES[0]                 # "[grounding] please describe this image in details"
DETECTION_PROMPT = DETECTION_TEMPLATE                     # "[detection] {}"
IDENTIFY_PROMPT = IDENTIFY_TEMPLATES[1]                   # "[identify] what object is in this location {}"

SYNTH_MAX_NEW_TOKENS = {"refer": 20, "vqa": 20, "identify": 20, "caption": 30, "detection": 64, "grounding": 96}
BOX_TASKS = ("refer", "detection", "grounding")

REFCOCO_SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
                  "refcocog": ("val", "test")}
REFCOCO_BENCHES = tuple(f"{d}_{s}" for d, splits in REFCOCO_SPLITS.items() for s in splits)
VQA_BENCHES = ("okvqa", "gqa", "vsr", "iconvqa", "vizwiz", "hm")
OTHER_BENCHES = ("coco_caption", "detection", "grounding", "synthetic", "jsonl")
ALL_BENCHES = REFCOCO_BENCHES + VQA_BENCHES + OTHER_BENCHES

HELDOUT_SEED = 777_777         # synthetic scenes made by eval; training data uses other seeds (default 0)
SYNTH_TARGETS = {"refer_acc": 0.80, "detection_recall": 0.70, "vqa_em": 0.90, "identify_em": 0.80,
                 "caption_em": 0.80}

# Paper numbers (docs/official-model.md §6): arXiv 2310.09478 as recalled, NOT verified against the PDF.
PAPER_REFCOCO = {
    "MiniGPT-v2 (7B)": (88.69, 91.65, 85.33, 79.97, 85.12, 74.45, 84.44, 84.66),
    "MiniGPT-v2-chat (7B)": (88.06, 91.29, 84.30, 79.58, 85.52, 73.32, 84.19, 84.31),
}
PAPER_VQA = {   # OKVQA, GQA, VSR, IconVQA, VizWiz, HM
    "MiniGPT-v2 (7B)": (56.9, 60.3, 60.6, 47.7, 32.9, 58.2),
    "MiniGPT-v2-chat (7B)": (57.8, 60.1, 62.9, 51.5, 53.6, 58.8),
}
PAPER_NOTE = ("† paper numbers as recalled (arXiv 2310.09478; docs/official-model.md §6); the PDF was not "
              "available, so they are unverified — check them against the paper before quoting.")


# ---- reading annotation files ------------------------------------------------------------------------------
def _read_records(path: Path) -> list:
    """A JSON list (or {"questions"/"annotations": [...]}) or a JSONL file of objects."""
    if not path.is_file():
        raise MiniGPTv2Error(f"annotation file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise MiniGPTv2Error(f"{path}: line {n} is not JSON ({e.msg})") from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MiniGPTv2Error(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if isinstance(data, dict):
        for key in ("questions", "annotations", "data"):
            if isinstance(data.get(key), list):
                return data[key]
        return list(data.values())
    if not isinstance(data, list):
        raise MiniGPTv2Error(f"{path}: expected a JSON list of records")
    return data


def _get(rec, key: str, path: Path, i: int, types=None):
    if not isinstance(rec, dict) or key not in rec:
        raise MiniGPTv2Error(f"{path}: record {i} has no field {key!r}")
    v = rec[key]
    if types is not None and not isinstance(v, types):
        raise MiniGPTv2Error(f"{path}: record {i} field {key!r} has the wrong type ({type(v).__name__})")
    return v


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
    for i, r in enumerate(_read_records(path)[:limit]):
        img_id = _get(r, "img_id", path, i, str)
        sents = _get(r, "sents", path, i, str)
        bbox = _get(r, "bbox", path, i, list)
        w, h = _get(r, "width", path, i, (int, float)), _get(r, "height", path, i, (int, float))
        if len(bbox) != 4 or w <= 0 or h <= 0:
            raise MiniGPTv2Error(f"{path}: record {i} needs bbox [x, y, w, h] and positive width/height")
        items.append(Item(str(i), str(images / f"{img_id[:27]}.jpg"), REFER_PROMPT.format(sents), "refer",
                          {"img_id": img_id, "sents": sents, "bbox": bbox, "width": w, "height": h}))
    hint = (f"RefCOCO/+/g use the COCO train2014 images: put them (or a symlink) at {images} "
            f"(ln -s /path/to/coco/train2014 {images}) and pass --data {root}.")
    return items, hint


def load_okvqa(root: Path, limit=None):
    path = root / "okvqa" / "okvqa_test_split.json"
    recs = _read_records(path)[:limit]
    ann_file = root / "okvqa" / "mscoco_val2014_annotations_clean.json"
    answers = {}
    if ann_file.is_file():
        for a in _read_records(ann_file):
            answers[a["question_id"]] = [x["answer"] if isinstance(x, dict) else x for x in a["answers"]]
    images = root / "coco" / "train2017"
    items = []
    for i, r in enumerate(recs):
        qid = _get(r, "question_id", path, i)
        ans = answers.get(qid) or r.get("answers") or r.get("answer")
        if not ans:
            raise MiniGPTv2Error(f"{path}: no answers for question_id {qid} (expected them in {ann_file})")
        ans = [x["answer"] if isinstance(x, dict) else x for x in ([ans] if isinstance(ans, str) else ans)]
        image_id = int(_get(r, "image_id", path, i))
        items.append(Item(str(qid), str(images / f"{image_id:012d}.jpg"),
                          VQA_PROMPT.format(_get(r, "question", path, i, str)), "vqa", {"answers": ans}))
    return items, f"OKVQA uses COCO images with 2017 names: put train2017 at {images}."


def load_vizwiz(root: Path, limit=None):
    path = root / "vizwiz" / "val.json"
    images = root / "vizwiz" / "val"
    items = []
    for i, r in enumerate(_read_records(path)[:limit]):
        ans = [a["answer"] if isinstance(a, dict) else a for a in _get(r, "answers", path, i, list)]
        items.append(Item(str(i), str(images / _get(r, "image", path, i, str)),
                          VIZWIZ_PROMPT.format(_get(r, "question", path, i, str)), "vqa", {"answers": ans}))
    return items, f"put the VizWiz val images at {images}."


def load_gqa(root: Path, limit=None):
    path = root / "gqa" / "testdev_balanced.json"
    images = root / "gqa" / "images"
    items = [Item(str(i), str(images / _get(r, "image", path, i, str)),
                  VQA_PROMPT.format(_get(r, "question", path, i, str)), "vqa",
                  {"answer": _get(r, "answer", path, i, str)}) for i, r in enumerate(_read_records(path)[:limit])]
    return items, f"put the GQA images at {images}."


def load_vsr(root: Path, limit=None):
    path = _first_file(root / "vsr" / "test.jsonl", root / "vsr" / "test.json")
    images = root / "vsr" / "images"
    items = [Item(str(i), str(images / _get(r, "image", path, i, str)),
                  VSR_PROMPT.format(_get(r, "caption", path, i, str)), "vqa", {"label": _get(r, "label", path, i)})
             for i, r in enumerate(_read_records(path)[:limit])]
    return items, f"put the VSR (COCO 2017) images at {images}."


def load_hm(root: Path, limit=None):
    path = _first_file(root / "hm" / "dev.jsonl", root / "hm" / "dev.json")
    items = [Item(str(r.get("id", i)), str(root / "hm" / _get(r, "img", path, i, str)),
                  HM_PROMPT.format(_get(r, "text", path, i, str)), "vqa", {"label": _get(r, "label", path, i)})
             for i, r in enumerate(_read_records(path)[:limit])]
    return items, f"put the Hateful Memes img/ folder at {root / 'hm' / 'img'}."


def load_iconvqa(root: Path, limit=None):
    path = root / "iconvqa" / "choose_text_val.json"
    images = root / "iconvqa" / "val" / "choose_txt"
    items = []
    for i, r in enumerate(_read_records(path)[:limit]):
        image_id = _get(r, "image_id", path, i)
        choices = _get(r, "choices", path, i, list)
        items.append(Item(str(image_id), str(images / str(image_id) / "image.png"),
                          VQA_PROMPT.format(_get(r, "question", path, i, str)), "rank",
                          {"choices": [str(c) for c in choices], "answer": int(_get(r, "answer", path, i))}))
    return items, f"put IconQA's val/choose_txt/<id>/image.png tree at {images}."


def load_coco_caption(root: Path, limit=None):
    path = root / "coco_caption" / "coco_karpathy_test.json"
    items = []
    for i, r in enumerate(_read_records(path)[:limit]):
        caps = _get(r, "caption", path, i, (list, str))
        items.append(Item(str(r.get("image_id", i)), str(root / "coco" / _get(r, "image", path, i, str)),
                          CAPTION_PROMPT, "caption", {"refs": [caps] if isinstance(caps, str) else caps}))
    return items, f"put the COCO images at {root / 'coco'} (e.g. {root / 'coco' / 'val2014'})."


def _flickr_image(r, path: Path, i: int) -> str:
    return r["image"] if isinstance(r, dict) and "image" in r else f"{_get(r, 'image_id', path, i)}.jpg"


def load_detection(root: Path, limit=None):
    path = root / "detection" / "phrase_to_object.json"
    items = []
    for i, r in enumerate(_read_records(path)[:limit]):
        phrase = _get(r, "phrase", path, i, str)
        gt = [g.box for g in parse_boxes(_get(r, "bbox", path, i, str))]
        if not gt:
            raise MiniGPTv2Error(f"{path}: record {i} field 'bbox' holds no box {{<x1><y1><x2><y2>}}")
        items.append(Item(str(i), str(path.parent / _flickr_image(r, path, i)), DETECTION_PROMPT.format(phrase),
                          "detection", {"phrase": phrase, "boxes": gt}))
    return items, f"put the images next to {path} (paths in the file are relative to {path.parent})."


def load_grounding(root: Path, limit=None):
    path = root / "grounding" / "grounded_caption.json"
    items = []
    for i, r in enumerate(_read_records(path)[:limit]):
        cap = _get(r, "grounded_caption", path, i, str)
        items.append(Item(str(i), str(path.parent / _flickr_image(r, path, i)), GROUNDING_PROMPT, "grounding",
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


# ---- running the model -------------------------------------------------------------------------------------
def choice_losses(model, processor, items: list[Item], batch_size: int = 10, progress: bool = True,
                  desc: str = "iconvqa") -> list[list[float]]:
    """IconVQA candidate losses with the official `multi_select` arithmetic (module docstring)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from minigptv2.images import load_image
    from minigptv2.processor import IGNORE

    tok = processor.tok
    dev = model.input_device
    out: list[list[float]] = []
    with torch.inference_mode(), tqdm(total=len(items), desc=desc, unit="sample", disable=not progress,
                                      dynamic_ncols=True) as bar:
        for s in range(0, len(items), batch_size):
            chunk = items[s: s + batch_size]
            pv = torch.stack([processor.image(load_image(it.image)) for it in chunk])
            image_embeds = model.get_image_features(pv)
            prompts = [processor.prompt_ids([it.prompt]) for it in chunk]
            # official: the choices are joined with "_" and split again (a "_" inside a choice makes several
            # candidates; no choices make one empty candidate): docs/evaluation-semantics.md §3
            choices = ["_".join(it.gt["choices"]).split("_") for it in chunk]
            losses = [[9999.0] * max(len(c), 1) for c in choices]
            for j in range(max(len(c) for c in choices)):
                answers = [c[j] if j < len(c) else "none" for c in choices]
                ans = [tok.encode(a)[: processor.config.max_txt_len] + [tok.eos_id] for a in answers]
                batch = processor.collate([{"input_ids": p + a, "labels": [IGNORE] * len(p) + a,
                                            "pixel_values": None} for p, a in zip(prompts, ans)])
                batch = {k: v.to(dev) for k, v in batch.items() if v is not None}     # where the model is
                emb = model.embed(batch["input_ids"], image_embeds=image_embeds)
                logits = model.language_model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits.float()
                nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:],
                                      ignore_index=IGNORE, reduction="none")
                # official padded length: BOS + longest prompt + longest answer; our prompt ids hold both BOS
                denom = max(len(p) for p in prompts) + max(len(a) for a in ans) - 1
                for i, c in enumerate(choices):
                    if j < len(c):
                        losses[i][j] = float(nll[i].sum()) / denom
            out += losses
            bar.update(len(chunk))
    return out


# ---- scoring: (items, predictions) -> (metrics, per-sample rows) -------------------------------------------
def _clean(text: str) -> str:
    return (text or "").replace("<unk>", "").strip()


def score_refcoco(items, preds):
    entries = [it.gt for it in items]
    r = metrics.refcoco_accuracy(preds, entries)
    rows = []
    for it, p in zip(items, preds):
        g = it.gt
        x, y, w, h = g["bbox"]
        box, reason = metrics.refcoco_parse(p, g["width"], g["height"])
        hit = metrics.refcoco_hit(p, g["bbox"], g["width"], g["height"])
        rows.append({"id": it.id, "img_id": g["img_id"], "sents": g["sents"], "image": it.image,
                     "prompt": it.prompt, "prediction": p, "gt_bbox_xywh": g["bbox"],
                     "pred_box_xyxy": [round(v, 2) for v in box] if box else None, "hit": hit,
                     "parse_error": reason,
                     "gt_boxes": [list(to_grid((x, y, x + w, y + h), g["width"], g["height"]))],
                     "pred_boxes": [list(b.box) for b in parse_boxes(p or "")]})
    m = {k: r[k] for k in ("accuracy", "hits", "total", "parse_failures", "parse_failure_rate")}
    return m, rows


def _rows(items, preds, correct, **extra):
    return [{"id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p, "correct": c,
             **{k: it.gt[k] for k in it.gt}, **extra} for it, p, c in zip(items, preds, correct)]


def score_vqa(bench: str, items, preds):
    """Per-sample scores exactly as the official eval_vqa.py (docs/evaluation-semantics.md §1-2). The rows'
    "prediction" is the text the official script saves (OKVQA: lowercased; VizWiz: "<unk>" removed, stripped)."""
    if bench == "okvqa":
        preds = [metrics.okvqa_prediction(p) for p in preds]
        answers = [it.gt["answers"] for it in items]
        acc = metrics.vqa_score(preds, answers)
        per = [metrics.vqa_accuracy(p, a) for p, a in zip(preds, answers)]
    elif bench == "vizwiz":
        answers = [it.gt["answers"] for it in items]
        acc = metrics.vizwiz_score(preds, answers)          # scored on the raw answer, as officially
        per = [metrics.vizwiz_accuracy(p, a) for p, a in zip(preds, answers)]
        preds = [_clean(p) for p in preds]
    elif bench == "gqa":
        answers = [it.gt["answer"] for it in items]
        acc = metrics.gqa_score(preds, answers)
        per = [float(metrics.gqa_correct(p, a)) for p, a in zip(preds, answers)]
    elif bench == "vsr":
        labels = [it.gt["label"] for it in items]
        acc = metrics.vsr_score(preds, labels)
        per = [float(metrics.vsr_correct(p, y)) for p, y in zip(preds, labels)]
    elif bench == "hm":
        labels = [it.gt["label"] for it in items]
        acc = metrics.hm_score(preds, labels)
        per = [float(metrics.hm_correct(p, y)) for p, y in zip(preds, labels)]
    else:
        raise MiniGPTv2Error(f"no VQA scorer for {bench!r}")
    return {"accuracy": acc, "total": len(items)}, _rows(items, preds, per)


def score_iconvqa(items, losses, batch_size: int | None = None):
    """Likelihood ranking (docs/evaluation-semantics.md §3). With the batch size the losses were computed with,
    each row is padded with loss 9999 to its batch's largest number of choices, as the official multi_select
    (it matters only when real losses are NaN or above 9999); None scores every row unpadded."""
    step = batch_size or 1
    picks = []
    for s in range(0, len(losses), step):
        chunk = losses[s: s + step]
        width = max(len(ls) for ls in chunk)
        picks += [metrics.iconvqa_choice(ls, n_slots=width) for ls in chunk]
    correct = [p == it.gt["answer"] for p, it in zip(picks, items)]
    rows = [{"id": it.id, "image": it.image, "prompt": it.prompt, "choices": it.gt["choices"],
             "answer": it.gt["answer"], "losses": [round(v, 6) for v in ls], "prediction": it.gt["choices"][p]
             if p < len(it.gt["choices"]) else None, "correct": c}
            for it, ls, p, c in zip(items, losses, picks, correct)]
    return {"accuracy": 100.0 * sum(correct) / len(items), "total": len(items)}, rows


def score_caption(items, preds):
    ids = [f"{i}" for i in range(len(items))]
    m = metrics.caption_scores(dict(zip(ids, preds)), {k: it.gt["refs"] for k, it in zip(ids, items)})
    m["total"] = len(items)
    return m, _rows(items, preds, [None] * len(items))


def score_boxes(items, preds, with_map: bool = True):
    """Detection / grounding: micro recall & precision at IoU 0.5 (grid space), COCO AP, parse failures."""
    tp = n_pred = n_gt = fails = 0
    rows, dets, gts = [], [], []
    for k, (it, p) in enumerate(zip(items, preds)):
        pred = [b.box for b in parse_boxes(p or "")]
        r = metrics.box_recall_precision(pred, it.gt["boxes"], thr=0.5)
        tp, n_pred, n_gt = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"]
        failed = box_parse_failed(p)
        fails += failed
        gts += [{"image_id": k, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b in it.gt["boxes"]]
        dets += [{"image_id": k, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b in pred]
        rows.append({"id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p, "recall": r["recall"],
                     "precision": r["precision"], "parse_failed": failed,
                     "gt_boxes": [list(b) for b in it.gt["boxes"]], "pred_boxes": [list(b) for b in pred]})
    m = {"recall": tp / n_gt if n_gt else 1.0, "precision": tp / n_pred if n_pred else 1.0, "tp": tp,
         "n_pred": n_pred, "n_gt": n_gt, "total": len(items), "parse_failures": fails,
         "parse_failure_rate": fails / len(items)}
    if with_map and gts:
        try:
            m.update(metrics.coco_map(dets, gts))
        except MiniGPTv2Error as e:      # pycocotools not installed: recall/precision still stand
            m["AP"] = m["AP50"] = m["AP75"] = None
            m["omitted"] = {"AP": str(e)}
    return m, rows


def score_bench(bench: str, items, preds):
    if bench in REFCOCO_BENCHES:
        return score_refcoco(items, preds)
    if bench == "iconvqa":
        return score_iconvqa(items, preds)
    if bench in VQA_BENCHES:
        return score_vqa(bench, items, preds)
    if bench == "coco_caption":
        return score_caption(items, preds)
    return score_boxes(items, preds)


def run_bench(model, processor, bench: str, root: Path, limit=None, batch_size: int = 10, constrained: bool = True,
              compare_constrained: bool = False, max_new_tokens=None, progress: bool = True):
    """Load, run and score one (non-synthetic) bench. Returns (metrics, rows)."""
    items = load_bench(root, bench, limit)
    t0 = time.time()
    if bench == "iconvqa":
        return _timed(score_iconvqa(items, choice_losses(model, processor, items, batch_size, progress), batch_size),
                      t0)
    preds = run_prompts(model, processor, items, batch_size, max_new_tokens, constrained, bench, progress)
    m, rows = score_bench(bench, items, preds)
    m["constrained"] = constrained and items[0].task in BOX_TASKS
    if compare_constrained and items[0].task in BOX_TASKS:
        other = run_prompts(model, processor, items, batch_size, max_new_tokens, not constrained,
                            f"{bench} ({'un' if constrained else ''}constrained)", progress)
        m2, rows2 = score_bench(bench, items, other)
        m["unconstrained" if constrained else "constrained_run"] = _key_metrics(m2)
        for r, r2 in zip(rows, rows2):
            r["prediction_" + ("unconstrained" if constrained else "constrained")] = r2["prediction"]
    return _timed((m, rows), t0)


def _timed(mr, t0):
    mr[0]["seconds"] = round(time.time() - t0, 2)
    return mr


def _key_metrics(m: dict) -> dict:
    keys = ("accuracy", "recall", "precision", "AP50", "parse_failures", "parse_failure_rate")
    return {k: m[k] for k in keys if k in m}


# ---- synthetic benchmark -----------------------------------------------------------------------------------
def synthetic_items(data_dir, limit: int | None = None) -> dict[str, list[Item]]:
    """Per task, the prompts of the first `limit` scenes of a `write_synthetic` folder (ground truth in pixels)."""
    d = Path(data_dir)
    scenes_file = d / "scenes.jsonl"
    if not scenes_file.is_file():
        raise MiniGPTv2Error(f"{d} is not a synthetic data folder (no scenes.jsonl); write one with "
                             f"`minigptv2 synth --out {d} --n 500 --seed {HELDOUT_SEED}`")
    scenes = {s["image"]: s for s in _read_records(scenes_file)[:limit]}
    keep = lambda r: r.get("image") in scenes  # noqa: E731
    img = lambda rel: str(d / rel)  # noqa: E731
    tasks: dict[str, list[Item]] = {t: [] for t in ("refer", "detection", "vqa", "identify", "caption", "grounding")}
    for i, r in enumerate(filter(keep, _read_records(d / "refcoco.json"))):
        x, y, w, h = r["bbox"]
        grid = to_grid((x, y, x + w, y + h), r["width"], r["height"])
        gt = {"img_id": r["img_id"], "sents": r["sents"], "bbox": r["bbox"], "width": r["width"], "height": r["height"]}
        tasks["refer"].append(Item(r["img_id"], img(r["image"]), REFER_PROMPT.format(r["sents"]), "refer", gt))
        tasks["identify"].append(Item(r["img_id"], img(r["image"]), IDENTIFY_PROMPT.format(format_box(grid)),
                                      "identify", {"answer": blip_caption(r["sents"]), "box": list(grid)}))
    for r in filter(keep, _read_records(d / "phrase_to_object.json")):
        s = scenes[r["image"]]
        boxes = [o["box"] for o in s["objects"] if o["shape"] == r["phrase"]]
        tasks["detection"].append(Item(f"{r['image']}:{r['phrase']}", img(r["image"]),
                                       DETECTION_PROMPT.format(r["phrase"]), "detection",
                                       {"phrase": r["phrase"], "boxes_px": boxes, "size": (s["width"], s["height"])}))
    for r in filter(keep, _read_records(d / "vqa.json")):
        tasks["vqa"].append(Item(str(r["question_id"]), img(r["image"]),
                                 VQA_PROMPT.format(blip_caption(r["question"])), "vqa",
                                 {"answer": blip_caption(r["answer"][0])}))
    for r in filter(keep, _read_records(d / "coco_caption.json")):
        tasks["caption"].append(Item(r["image"], img(r["image"]), CAPTION_PROMPT, "caption",
                                     {"answer": blip_caption(r["caption"])}))
    for r in filter(keep, _read_records(d / "grounded_caption.json")):
        s = scenes[r["image"]]
        tasks["grounding"].append(Item(r["image"], img(r["image"]), GROUNDING_PROMPT, "grounding",
                                       {"boxes_px": [o["box"] for o in s["objects"]],
                                        "size": (s["width"], s["height"])}))
    return tasks


def _score_synth_boxes(items, preds):
    tp = n_pred = n_gt = fails = 0
    rows = []
    for it, p in zip(items, preds):
        W, H = it.gt["size"]
        pred_grid = [b.box for b in parse_boxes(p or "")]
        r = metrics.box_recall_precision([to_pixels(b, W, H) for b in pred_grid], it.gt["boxes_px"], thr=0.5)
        tp, n_pred, n_gt = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"]
        failed = box_parse_failed(p)
        fails += failed
        rows.append({"task": it.task, "id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p,
                     "recall": r["recall"], "precision": r["precision"], "parse_failed": failed,
                     "gt_boxes": [list(to_grid(b, W, H)) for b in it.gt["boxes_px"]],
                     "pred_boxes": [list(b) for b in pred_grid]})
    return {"recall": tp / n_gt if n_gt else 1.0, "precision": tp / n_pred if n_pred else 1.0,
            "parse_failure_rate": fails / len(items) if items else 0.0}, rows


def _score_synth(task: str, items, preds):
    """One synthetic task -> (flat metrics, rows). Fractions in 0..1."""
    if not items:
        return {}, []
    if task == "refer":
        m, rows = score_refcoco(items, preds)
        for r in rows:
            r["task"] = task
        return {"refer_acc": m["accuracy"] / 100, "refer_parse_failure_rate": m["parse_failure_rate"]}, rows
    if task in ("detection", "grounding"):
        m, rows = _score_synth_boxes(items, preds)
        return {f"{task}_recall": m["recall"], f"{task}_precision": m["precision"],
                f"{task}_parse_failure_rate": m["parse_failure_rate"]}, rows
    correct = [metrics.exact_match(p, it.gt["answer"]) for it, p in zip(items, preds)]
    rows = [{"task": task, "id": it.id, "image": it.image, "prompt": it.prompt, "prediction": p,
             "answer": it.gt["answer"], "correct": c} for it, p, c in zip(items, preds, correct)]
    return {f"{task}_em": sum(correct) / len(items)}, rows


def run_synthetic(model, processor, data_dir, limit=None, batch_size: int = 32, constrained: bool = True,
                  compare_constrained: bool = False, max_new_tokens=None, progress: bool = True):
    """The synthetic benchmark. Returns (metrics, rows); `synthetic_benchmark` returns just the metrics."""
    tasks = synthetic_items(data_dir, limit)
    t0 = time.time()
    m: dict = {}
    rows: list = []
    counts = {}
    for task, items in tasks.items():
        counts[task] = len(items)
        if not items:
            continue
        n_new = max_new_tokens or SYNTH_MAX_NEW_TOKENS[task]
        preds = run_prompts(model, processor, items, batch_size, n_new, constrained, f"synthetic {task}", progress)
        tm, trows = _score_synth(task, items, preds)
        m.update(tm)
        if compare_constrained and task in BOX_TASKS:
            other = run_prompts(model, processor, items, batch_size, n_new, not constrained,
                                f"synthetic {task} ({'un' if constrained else ''}constrained)", progress)
            om, _ = _score_synth(task, items, other)
            m.setdefault("unconstrained" if constrained else "constrained_run", {}).update(om)
        rows += trows
    # A model that ignores the name in refer prompts answers every object of a scene with the same box.
    answers: dict = {}
    for r in rows:
        if r["task"] == "refer":
            answers.setdefault(r["image"], []).append(r["prediction"])
    multi = [len(set(a)) > 1 for a in answers.values() if len(a) > 1]
    if multi:
        m["refer_names_differ"] = sum(multi) / len(multi)
    m["by_objects"] = _by_object_count(rows, data_dir)
    m["n"] = counts
    m["constrained"] = constrained
    m["targets"] = dict(SYNTH_TARGETS)
    m["passed"] = {k: m[k] >= v for k, v in SYNTH_TARGETS.items() if k in m}
    m["all_passed"] = bool(m["passed"]) and all(m["passed"].values())
    m["seconds"] = round(time.time() - t0, 2)
    return m, rows


def _by_object_count(rows: list[dict], data_dir) -> dict:
    """{metric: {number of objects in the scene: value}} for refer_acc, *_recall and *_em: the multi-object
    scenes are where a model that does not bind names to places fails."""
    d = Path(data_dir)
    n_obj = {str(d / s["image"]): len(s["objects"]) for s in _read_records(d / "scenes.jsonl")}
    sums: dict = {}
    for r in rows:
        if r["task"] == "refer":
            key, num, den = "refer_acc", float(r["hit"]), 1
        elif r["task"] in ("detection", "grounding"):
            key, num, den = f"{r['task']}_recall", r["recall"] * len(r["gt_boxes"]), len(r["gt_boxes"])
        else:
            key, num, den = f"{r['task']}_em", float(r["correct"]), 1
        acc = sums.setdefault(key, {}).setdefault(n_obj[r["image"]], [0.0, 0])
        acc[0] += num
        acc[1] += den
    return {key: {k: a / b for k, (a, b) in sorted(v.items()) if b} for key, v in sums.items()}


def synthetic_benchmark(model, processor, data_dir, limit: int | None = None, batch_size: int = 32,
                        constrained: bool = True, compare_constrained: bool = False, progress: bool = True) -> dict:
    """Score a model on a held-out synthetic set (a `write_synthetic` folder; `limit` = number of scenes).

    Returns fractions in 0..1: refer_acc (Acc@0.5, metrics.refcoco_accuracy), detection_recall /
    detection_precision (IoU 0.5, one-to-one), vqa_em, identify_em, caption_em (metrics.exact_match),
    grounding_recall / grounding_precision, *_parse_failure_rate for the box tasks, refer_names_differ (of the
    scenes with several objects, the fraction whose refer answers are not all the same box), by_objects (those
    metrics per number of objects in the scene: {"refer_acc": {1: .., 2: .., 3: ..}, ...}), n (prompts per task),
    targets (SYNTH_TARGETS), passed ({metric: bool}) and all_passed. Prompts: the official eval prompts for
    refer and VQA, the first official training template for identify / caption / grounding / detection.
    """
    m, _ = run_synthetic(model, processor, data_dir, limit, batch_size, constrained, compare_constrained,
                         progress=progress)
    return m


# ---- outputs -----------------------------------------------------------------------------------------------
def example_grid(rows: list[dict], path: Path, n: int = 8, cell: int = 320, cols: int = 4) -> Path | None:
    """PNG grid of the first n examples: image with ground-truth ("gt") and predicted ("pred") boxes, the prompt
    and the answer below it."""
    from PIL import Image, ImageDraw

    from minigptv2.images import load_image

    rows = [r for r in rows if r.get("image") and os.path.isfile(r["image"])][:n]
    if not rows:
        return None
    text_h = 64
    cols = min(cols, len(rows))
    grid = Image.new("RGB", (cols * cell, ((len(rows) + cols - 1) // cols) * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for k, r in enumerate(rows):
        img = load_image(r["image"])
        marks = [Grounding(tuple(b), "gt") for b in r.get("gt_boxes") or []]
        marks += [Grounding(tuple(b), "pred") for b in r.get("pred_boxes") or []]
        img = draw_boxes(img, marks, width=max(2, img.width // 160)) if marks else img
        img.thumbnail((cell - 8, cell - 8))
        x, y = (k % cols) * cell, (k // cols) * (cell + text_h)
        grid.paste(img, (x + (cell - img.width) // 2, y + (cell - img.height) // 2))
        lines = textwrap.wrap(f"Q: {r.get('prompt', '')}", 52)[:2] + textwrap.wrap(f"A: {r.get('prediction')}", 52)[:2]
        draw.multiline_text((x + 4, y + cell), "\n".join(lines), fill=(0, 0, 0))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    _write_atomic(path, buf.getvalue())
    return path


def _fmt(v, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if pct else f"{v:.3f}"


def report_markdown(results: dict, model_name: str = "ours") -> str:
    """Markdown tables in the paper's layout (RefCOCO; VQA), our numbers beside the paper's, then the rest."""
    out = [f"# MiniGPT-v2 evaluation — {model_name}", ""]
    ref = [b for b in REFCOCO_BENCHES if b in results]
    if ref:
        out += ["## Referring expression comprehension (Acc@0.5, %)", "",
                "| model | RefCOCO val | testA | testB | RefCOCO+ val | testA | testB | RefCOCOg val | test | avg |",
                "|---|" + "---|" * (len(REFCOCO_BENCHES) + 1)]

        def row(name, vals):
            avg = sum(vals) / len(vals) if all(v is not None for v in vals) else None
            return f"| {name} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(avg)} |"

        out.append(row(model_name, [results[b]["accuracy"] if b in results else None for b in REFCOCO_BENCHES]))
        if any("unconstrained" in results[b] for b in ref):
            out.append(row(f"{model_name} (unconstrained)", [results[b].get("unconstrained", {}).get("accuracy")
                                                            if b in results else None for b in REFCOCO_BENCHES]))
        for name, vals in PAPER_REFCOCO.items():
            out.append(row(f"{name} — paper†", list(vals)))
        out += ["", "avg = mean of the eight cells (the recalled -chat cells average 83.82; the recalled -chat avg "
                "is 83.70, so one of them is misremembered)."]
        out += ["", "| split | n | decoding | parse failures |", "|---|---|---|---|"]
        for b in ref:
            m = results[b]
            runs = [("constrained" if m.get("constrained") else "unconstrained", m)]
            runs += [("unconstrained", m["unconstrained"])] if "unconstrained" in m else []
            runs += [("constrained", m["constrained_run"])] if "constrained_run" in m else []
            out += [f"| {b} | {m['total']} | {name} | {r['parse_failures']} ({100 * r['parse_failure_rate']:.1f}%) |"
                    for name, r in runs]
        out.append("")
    vqa = [b for b in VQA_BENCHES if b in results]
    if vqa:
        out += ["## VQA (top-1 accuracy, %)", "", "| model | OKVQA | GQA | VSR | IconVQA | VizWiz | HM |",
                "|---|---|---|---|---|---|---|",
                f"| {model_name} | " + " | ".join(_fmt(results[b]["accuracy"]) if b in results else "–"
                                                 for b in VQA_BENCHES) + " |"]
        for name, vals in PAPER_VQA.items():
            out.append(f"| {name} — paper† | " + " | ".join(str(v) for v in vals) + " |")
        out += ["", "n: " + ", ".join(f"{b} {results[b]['total']}" for b in vqa), ""]
    if ref or vqa:
        out += [PAPER_NOTE, ""]
    for b in ("coco_caption", "detection", "grounding"):
        if b in results:
            m = results[b]
            keys = [k for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "recall", "precision", "AP", "AP50", "AP75",
                                "parse_failure_rate") if k in m]
            runs = [(model_name, m)] + ([(f"{model_name} (unconstrained)", m["unconstrained"])]
                                        if "unconstrained" in m else [])
            out += [f"## {b} (n = {m['total']})", "", "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            out += [f"| {name} | " + " | ".join(_fmt(r.get(k), False) for k in keys) + " |" for name, r in runs]
            if m.get("tokenizer") == "simple":
                out.append("\nCaptions were tokenised without Java (no PTBTokenizer / METEOR): not comparable with "
                           "published numbers.")
            out.append("")
    if "jsonl" in results:
        from minigptv2.eval.jsonl import report

        out += report(results["jsonl"])
    if "synthetic" in results:
        m = results["synthetic"]
        out += ["## Synthetic benchmark (held-out scenes, fractions)", "", "| metric | value | target | ok |",
                "|---|---|---|---|"]
        for k, v in m.items():
            if isinstance(v, float) and k != "seconds":
                t = SYNTH_TARGETS.get(k)
                out.append(f"| {k} | {v:.3f} | {'' if t is None else t} | "
                           f"{'' if t is None else ('yes' if v >= t else 'NO')} |")
        if m.get("by_objects"):
            counts = sorted({k for v in m["by_objects"].values() for k in v})
            out += ["", "By number of objects in the scene:", "", "| metric | " + " | ".join(map(str, counts)) + " |",
                    "|---|" + "---|" * len(counts)]
            out += [f"| {key} | " + " | ".join(f"{v[k]:.3f}" if k in v else "–" for k in counts) + " |"
                    for key, v in m["by_objects"].items()]
        if "unconstrained" in m:
            out += ["", "Unconstrained decoding: " + ", ".join(f"{k} {v:.3f}" for k, v in m["unconstrained"].items())]
        out += ["", "prompts per task: " + ", ".join(f"{k} {v}" for k, v in m["n"].items()), ""]
    return "\n".join(out) + "\n"


# ---- CLI ---------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="minigptv2 eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the embedded nano model)")
    p.add_argument("--bench", required=True, help="comma-separated bench names (see above)")
    p.add_argument("--data", default=None, help="data root (layout above); optional for `synthetic`")
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.md, predictions/, examples/)")
    p.add_argument("--batch-size", type=int, default=10, help="prompts per generate call (official: 10)")
    p.add_argument("--limit", type=int, default=None, help="first N records per bench (synthetic: N scenes)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override the per-task defaults")
    p.add_argument("--no-constrain", action="store_true", help="turn constrained box decoding off")
    p.add_argument("--compare-constrained", action="store_true",
                   help="run the box benches with and without the constraint and report both")
    p.add_argument("--examples", type=int, default=8, help="examples drawn per bench in examples/*.png (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from minigptv2.devices import add_device_args, load_kwargs

    add_device_args(p, quantize=True)
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        raise MiniGPTv2Error(f"--limit must be >= 1, got {a.limit}")
    benches = expand_benches(a.bench)
    if a.data is None and any(b != "synthetic" for b in benches):
        raise MiniGPTv2Error("--data ROOT is required for " + ", ".join(b for b in benches if b != "synthetic"))
    root = Path(a.data) if a.data else None
    if "jsonl" in benches:          # --data is the file itself
        if len(benches) > 1 or not root.is_file():
            raise MiniGPTv2Error(f"--bench jsonl takes --data FILE.jsonl, alone (a held-out split in the training "
                                 f"format, e.g. test.jsonl of `minigptv2 data convert`); got {root}")
    elif root is not None and not root.is_dir():
        raise MiniGPTv2Error(f"--data folder not found: {root}")

    from minigptv2 import load

    model, processor = load(a.model, **load_kwargs(a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": a.model or "nano (embedded)", "data": a.data, "limit": a.limit, "batch_size": a.batch_size,
               "constrained": not a.no_constrain, "benches": {}}
    for bench in benches:
        kw = dict(batch_size=a.batch_size, constrained=not a.no_constrain, compare_constrained=a.compare_constrained,
                  max_new_tokens=a.max_new_tokens, progress=not a.quiet)
        if bench == "synthetic":
            data_dir = root or out / "synthetic_data"
            if root is None and not (data_dir / "scenes.jsonl").is_file():
                from minigptv2.synthetic import write_synthetic

                write_synthetic(data_dir, n=a.limit or 500, seed=HELDOUT_SEED)
            m, rows = run_synthetic(model, processor, data_dir, a.limit, **kw)
        elif bench == "jsonl":
            from minigptv2.eval.jsonl import run_jsonl

            m, rows = run_jsonl(model, processor, root, a.limit, **kw)
        else:
            m, rows = run_bench(model, processor, bench, root, a.limit, **kw)
        summary["benches"][bench] = m
        write_predictions(rows, out / "predictions" / f"{bench}.jsonl")
        if a.examples:
            example_grid(rows, out / "examples" / f"{bench}.png", n=a.examples)
        _write_atomic(out / "metrics.json", json.dumps(summary, indent=2, default=str))
        _write_atomic(out / "report.md", report_markdown(summary["benches"], Path(a.model).name if a.model else "nano"))
        print(f"{bench}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float)), flush=True)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'predictions'}, {out / 'examples'}")
    return 0


# ---- harness adapter ---------------------------------------------------------------------------------------
REFER_MARKERS = ("this sentence describes:", "describes:", "referring expression:", "expression:")


class MiniGPTv2ForEval:
    """lmms-eval / VLMEvalKit adapter (registration in the module docstring).

    Greedy, like the official eval; adds the task identifier ([vqa] with the official short-answer prompt,
    [refer] with the official refer prompt); grounding answers come back as "[x1, y1, x2, y2]" floats in 0..1
    (the 0..100 grid divided by 100, relative to the original image). One image per request (the first)."""

    def __init__(self, model_dir=None, model=None, processor=None, batch_size: int = 8, max_new_tokens: int = 20,
                 constrained: bool = True, **_):
        if model is None:
            from minigptv2 import load

            model, processor = load(model_dir)
        self.model, self.processor = model, processor
        self.batch_size, self.max_new_tokens, self.constrained = int(batch_size), int(max_new_tokens), constrained

    @staticmethod
    def is_grounding(name) -> bool:
        """REC tasks: lmms-eval `refcoco*_bbox_rec_*`, VLMEvalKit `RefCOCO*`. (lmms-eval's `refcoco_bbox_*` /
        `refcoco_seg_*` without "rec" are region *captioning* and get the [vqa] path.)"""
        n = (name or "").lower()
        return "_rec" in n or ("refcoco" in n and "bbox" not in n and "seg" not in n)

    @staticmethod
    def expression(text: str) -> str:
        """The referring expression inside a harness prompt (text after 'describes:' etc., else the whole text)."""
        low = text.lower()
        for m in REFER_MARKERS:
            k = low.rfind(m)
            if k >= 0:
                return text[k + len(m):].strip()
        return text.strip()

    def answer(self, images, questions, task: str = "vqa", max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers; task "vqa" wraps each question in the official VQA prompt, "refer" in the refer prompt."""
        prompts = [VQA_PROMPT.format(q.strip()) if task == "vqa" else REFER_PROMPT.format(self.expression(q))
                   for q in questions]
        items = [Item(str(i), im, pr, task) for i, (im, pr) in enumerate(zip(images, prompts))]
        n_new = max_new_tokens or self.max_new_tokens
        out = []
        for s in range(0, len(items), self.batch_size):
            chunk = items[s: s + self.batch_size]
            out += [r.text for r in generate(self.model, self.processor, [it.image for it in chunk],
                                             [it.prompt for it in chunk], max_new_tokens=n_new,
                                             constrain_boxes=self.constrained)]
        return out

    def ground(self, images, expressions) -> list[list[float] | None]:
        """Normalised [x1, y1, x2, y2] (0..1) per expression, None when the answer has no box."""
        return [self.normalised_box(t) for t in self.answer(images, expressions, task="refer")]

    @staticmethod
    def normalised_box(text: str) -> list[float] | None:
        found = parse_boxes(text or "")
        return [v / 100 for v in found[0].box] if found else None

    def _reply(self, images, texts, grounding: bool, max_new_tokens=None) -> list[str]:
        """Text for the harness; grounding answers as "[x1, y1, x2, y2]" in 0..1 (raw text if no box)."""
        if not grounding:
            return self.answer(images, texts, "vqa", max_new_tokens)
        replies = []
        for text in self.answer(images, texts, "refer"):
            box = self.normalised_box(text)
            replies.append(text if box is None else "[" + ", ".join(f"{v:.2f}" for v in box) + "]")
        return replies

    # VLMEvalKit: message = [{"type": "image" | "text", "value": ...}, ...]
    def generate_inner(self, message, dataset=None) -> str:
        images = [m["value"] for m in message if m.get("type") == "image"]
        text = "\n".join(m["value"] for m in message if m.get("type") == "text")
        return self._reply([images[0] if images else None], [text], self.is_grounding(dataset))[0]

    # lmms-eval: request.args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)
    def generate_until(self, requests) -> list[str]:
        out: list = [None] * len(requests)
        for s in range(0, len(requests), self.batch_size):
            groups: dict = {}
            for k in range(s, min(s + self.batch_size, len(requests))):
                context, gen_kwargs, doc_to_visual, doc_id, task, split = requests[k].args
                visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
                visuals = [v for v in (visuals or []) if v is not None]
                key = (self.is_grounding(task), (gen_kwargs or {}).get("max_new_tokens"))
                groups.setdefault(key, []).append((k, visuals[0] if visuals else None, context))
            for (grounding, n_new), entries in groups.items():
                replies = self._reply([e[1] for e in entries], [e[2] for e in entries], grounding, n_new)
                for (k, _, _), reply in zip(entries, replies):
                    out[k] = reply
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("MiniGPTv2ForEval answers generation requests only (generate_until)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("multi-round requests are not supported")


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
