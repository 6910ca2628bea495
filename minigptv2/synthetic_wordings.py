"""Training wordings of the synthetic tasks beyond the official templates (issue #31): paraphrases, bare forms.

Written after, and apart from, the held-out wordings the bench scores with (eval/heldout_wordings.py);
tests/eval/test_synthetic_views.py checks that no held-out wording is one of these. Used by the
`synthetic_dialog` / `synthetic_paraphrase` readers (data/synthetic_dialogs.py).

    from minigptv2.synthetic_wordings import instruction
    instruction("refer", "red circle", rng)          # "[refer] where is the red circle?" or an official template
    instruction("vqa", "what color is the circle?", rng)

`{}` is the task's content as in the official templates: an object name (refer), a box string (identify), a
shape (detection), nothing (caption, grounding). VQA questions are reworded per question kind
(synthetic.vqa_questions).
"""
from __future__ import annotations

import random
import re

from minigptv2.prompts import (CAPTION_TEMPLATES, DETECTION_TEMPLATE, GROUNDING_TEMPLATES, IDENTIFY_TEMPLATES,
                               REFER_TEMPLATES, VQA_TEMPLATES)

REFER = [
    "[refer] {}",
    "[refer] where is the {}?",
    "[refer] the {}",
    "[refer] give the box of the {}",
    "[refer] where in the image is the {}?",
    "[refer] box for the {}",
    "[refer] position of the {}",
    "[refer] can you give me the {} location?",
    "[refer] bounding box of {}",
]
IDENTIFY = [
    "[identify] {}",
    "[identify] what is this {}?",
    "[identify] name {}",
    "[identify] what shape is shown at {}",
    "[identify] object at {}",
    "[identify] tell me the object in {}",
    "[identify] {} is what?",
    "[identify] what color and shape is {}?",
]
DETECTION = [
    "[detection] {}",
    "[detection] every {}",
    "[detection] all {} objects",
    "[detection] the {} shapes",
    "[detection] detect the {}",
    "[detection] each {} in the image",
    "[detection] give boxes of all {} shapes",
]
CAPTION = [
    "[caption] describe the image briefly",
    "[caption] what shapes are there?",
    "[caption] a caption for this image",
    "[caption] summarize the image",
    "[caption] short description please",
    "[caption] name the objects",
]
GROUNDING = [
    "[grounding] describe the image and give boxes",
    "[grounding] what shapes are where?",
    "[grounding] grounded description of the image",
    "[grounding] describe each shape and its box",
    "[grounding] caption with boxes",
]
VQA = [
    (r"what color is the (\w+)", ["what color is the {0}?", "what is the {0}'s color?",
                                  "which color does the {0} have?", "color of the {0}?", "what colour is the {0}?"]),
    (r"what shape is the (\w+) object", ["what shape is the {0} object?", "which shape is the {0} object?",
                                         "what is the shape of the {0} object?", "shape of the {0} object?"]),
    (r"how many shapes are there", ["how many shapes are there?", "how many shapes?", "number of shapes?",
                                    "how many shapes are in the image?", "how many things are drawn?"]),
    (r"is there a (\w+) (\w+)", ["is there a {0} {1}?", "is there any {0} {1}?", "{0} {1} in the image?",
                                 "does a {0} {1} appear?", "is any {0} {1} visible?"]),
]
# the official templates, per task, in the form `instruction` fills
OFFICIAL = {"refer": REFER_TEMPLATES, "identify": IDENTIFY_TEMPLATES, "detection": [DETECTION_TEMPLATE],
            "caption": ["[caption] " + t for t in CAPTION_TEMPLATES], "grounding": GROUNDING_TEMPLATES}
PARAPHRASES = {"refer": REFER, "identify": IDENTIFY, "detection": DETECTION, "caption": CAPTION,
               "grounding": GROUNDING}


def all_wordings() -> list[str]:
    """Every training paraphrase (VQA ones with their `[vqa] ` identifier)."""
    return [w for ws in PARAPHRASES.values() for w in ws] + ["[vqa] " + w for _, ws in VQA for w in ws]


def instruction(task: str, content: str | None, rng: random.Random, p_paraphrase: float = 0.5) -> str:
    """One instruction for a synthetic task: with probability p_paraphrase a paraphrase above, else an official
    template (VQA: the question reworded, then wrapped in an official VQA template)."""
    para = rng.random() < p_paraphrase
    if task == "vqa":
        q = content or ""
        if para:
            for pattern, wordings in VQA:
                m = re.match(pattern, q)
                if m:
                    q = rng.choice(wordings).format(*m.groups())
                    break
        return rng.choice(VQA_TEMPLATES).format(q)
    return rng.choice(PARAPHRASES[task] if para else OFFICIAL[task]).format(content)
