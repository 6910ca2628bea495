"""What a run writes besides the metrics and predictions: report.md (tables in the paper's layout, the paper's
numbers beside ours; report_markdown) and examples/{bench}.png (a grid of examples with their ground-truth and
predicted boxes; example_grid).
"""
from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

from minigptv2.atomic import write_file
from minigptv2.boxes import Grounding, draw_boxes
from minigptv2.eval.benches import REFCOCO_BENCHES, VQA_BENCHES
from minigptv2.eval.jsonl import report as jsonl_report
from minigptv2.eval.synthetic import SYNTH_TARGETS

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
    write_file(path, buf.getvalue())
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
            out += [f"## {b} (n = {m['total']})", "", "| model | " + " | ".join(keys) + " |",
                    "|---|" + "---|" * len(keys)]
            out += [f"| {name} | " + " | ".join(_fmt(r.get(k), False) for k in keys) + " |" for name, r in runs]
            if m.get("tokenizer") == "simple":
                out.append("\nCaptions were tokenised without Java (no PTBTokenizer / METEOR): not comparable with "
                           "published numbers.")
            out.append("")
    if "jsonl" in results:
        out += jsonl_report(results["jsonl"])
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
    if "synthetic_views" in results:
        out += _views_table(results["synthetic_views"])
    return "\n".join(out) + "\n"


def _views_table(m: dict) -> list[str]:
    """The synthetic bench asked alone, as a later turn and in held-out wordings (eval/synthetic_views.py)."""
    views = list(m["views"])
    keys = [k for k in ("refer_acc", "detection_recall", "vqa_em", "identify_em", "caption_em", "grounding_recall")
            if k in m["views"].get("alone", {})]
    out = [f"## Synthetic benchmark: alone, later turns, held-out wordings ({m['scenes']} scenes, one prompt per "
           "task and scene)", "", "| metric | " + " | ".join(views) + " |", "|---|" + "---|" * len(views)]
    out += [f"| {k} | " + " | ".join(f"{m['views'][v][k]:.3f}" if k in m["views"][v] else "–" for v in views) + " |"
            for k in keys]
    kinds = m.get("vqa_kinds", {})
    if kinds:     # VQA by question kind, and as a second turn by the task of the first (eval/synthetic_views.py)
        cols = [(v, "all") for v in kinds] + [("turn2", k) for k in sorted({k for d in kinds.get("turn2", {}).values()
                                                                             for k in d} - {"all"})]
        out += ["", "VQA exact match by question kind:", "",
                "| kind | " + " | ".join(v if k == "all" else f"turn2 {k}" for v, k in cols) + " |",
                "|---|" + "---|" * len(cols)]
        out += [f"| {kind} | " + " | ".join(f"{kinds[v][kind][k]:.3f}" if k in kinds[v].get(kind, {}) else "–"
                                           for v, k in cols) + " |"
                for kind in sorted({kind for d in kinds.values() for kind in d})]
    return out + [""]
