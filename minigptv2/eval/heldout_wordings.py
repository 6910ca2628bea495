"""Held-out instruction wordings for the synthetic bench's `paraphrase` view (eval/synthetic_views.py).

Written before any training wording (issue #31), and kept apart from them: the training paraphrases live in
minigptv2/synthetic_wordings.py, and tests/eval/test_synthetic_views.py checks that no wording here is one of
them (nor one of the official templates of prompts.py). Never import this module from training code.

Every wording keeps the task identifier, so the model still knows the task; what changes is the rest of the
instruction. `{}` is the task's content: an object name (refer: "red circle"), a box string (identify), a shape
(detection), nothing (caption, grounding). VQA questions are reworded per question kind (the four kinds of
synthetic.vqa_questions); the answer stays the short one.
"""
from __future__ import annotations

import random
import re

REFER = [
    "[refer] find the {}",
    "[refer] point to the {}",
    "[refer] show me where the {} is",
    "[refer] locate the {} in the picture",
    "[refer] which box holds the {}?",
]
IDENTIFY = [
    "[identify] what is at {}?",
    "[identify] name the object inside {}",
    "[identify] what do you see in {}",
    "[identify] tell me what {} contains",
    "[identify] which shape is in {}?",
]
DETECTION = [
    "[detection] find every {}",
    "[detection] locate each {}",
    "[detection] mark all of the {} shapes",
    "[detection] where is each {}?",
    "[detection] boxes for every {}",
]
CAPTION = [
    "[caption] what do you see?",
    "[caption] describe the picture",
    "[caption] what is in this image?",
    "[caption] tell me what this picture shows",
    "[caption] list the shapes in the image",
]
GROUNDING = [
    "[grounding] describe this image",
    "[grounding] what is in this picture, with boxes?",
    "[grounding] tell me what you see and where",
    "[grounding] describe the scene",
    "[grounding] caption this image with locations",
]
# per VQA question kind: (pattern of the synthetic question, wordings filled with the pattern's groups)
VQA = [
    (r"what color is the (\w+)", ["[vqa] which colour is the {0}?", "[vqa] tell me the color of the {0}",
                                  "[vqa] the {0} has what color?", "[vqa] what is the color of the {0}?"]),
    (r"what shape is the (\w+) object", ["[vqa] which shape is {0}?", "[vqa] what kind of shape is the {0} one?",
                                         "[vqa] the {0} object has which shape?",
                                         "[vqa] name the shape of the {0} object"]),
    (r"how many shapes are there", ["[vqa] count the shapes", "[vqa] how many objects are in the picture?",
                                    "[vqa] what is the number of shapes?", "[vqa] how many shapes do you see?"]),
    (r"is there a (\w+) (\w+)", ["[vqa] do you see a {0} {1}?", "[vqa] does the image contain a {0} {1}?",
                                 "[vqa] can you find a {0} {1} here?", "[vqa] is a {0} {1} present?"]),
]
BY_TASK = {"refer": REFER, "identify": IDENTIFY, "detection": DETECTION, "caption": CAPTION, "grounding": GROUNDING}


def all_wordings() -> list[str]:
    """Every held-out wording (for the test that keeps them out of training)."""
    return [w for ws in BY_TASK.values() for w in ws] + [w for _, ws in VQA for w in ws]


def heldout_prompt(task: str, content: str | None, rng: random.Random) -> str:
    """A held-out wording of one synthetic bench prompt: `content` is the name / box / shape / VQA question."""
    if task == "vqa":
        for pattern, wordings in VQA:
            m = re.match(pattern, content or "")
            if m:
                return rng.choice(wordings).format(*m.groups())
        raise ValueError(f"not a synthetic VQA question: {content!r}")
    return rng.choice(BY_TASK[task]).format(content)
