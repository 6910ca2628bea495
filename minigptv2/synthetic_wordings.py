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

import functools
import random
import re

from minigptv2.prompts import (CAPTION_TEMPLATES, DETECTION_TEMPLATE, GROUNDING_TEMPLATES, IDENTIFY_TEMPLATES,
                               REFER_TEMPLATES, VQA_TEMPLATES)
from minigptv2.synthetic import VQA_PATTERNS

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
    "[refer] box the {}",
    "[refer] the {}, where?",
    "[refer] tell me where the {} lies",
    "[refer] coordinates of the {}",
    "[refer] could you show the {}?",
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
    "[identify] which object lies at {}?",
    "[identify] the object in {}?",
    "[identify] what's drawn at {}",
    "[identify] {}: what is it?",
    "[identify] say what is at {}",
]
DETECTION = [
    "[detection] {}",
    "[detection] every {}",
    "[detection] all {} objects",
    "[detection] the {} shapes",
    "[detection] detect the {}",
    "[detection] each {} in the image",
    "[detection] give boxes of all {} shapes",
    "[detection] {} shapes",
    "[detection] locate all {} shapes",
    "[detection] where are all the {}s?",
    "[detection] box each {}",
    "[detection] every {} you can find",
]
CAPTION = [
    "[caption] describe the image briefly",
    "[caption] what shapes are there?",
    "[caption] a caption for this image",
    "[caption] summarize the image",
    "[caption] short description please",
    "[caption] name the objects",
    "[caption] caption",
    "[caption] describe it",
    "[caption] what is shown here?",
    "[caption] briefly, what is in the image?",
    "[caption] write a caption for the picture",
    "[caption] tell me about this image",
    "[caption] which shapes do you notice?",
    "[caption] what objects are drawn?",
    "[caption] one-line description",
    "[caption] describe the shapes",
    "[caption] what is this picture of?",
    "[caption] I need a caption for this",
    "[caption] explain what the image contains",
    "[caption] what is visible?",
    "[caption] sum up the scene",
    "[caption] describe this",
    "[caption] what's here?",
    "[caption] brief caption",
]
GROUNDING = [
    "[grounding] describe the image and give boxes",
    "[grounding] what shapes are where?",
    "[grounding] grounded description of the image",
    "[grounding] describe each shape and its box",
    "[grounding] caption with boxes",
    "[grounding] which shapes are where?",
    "[grounding] describe it with boxes",
    "[grounding] caption and locate the shapes",
]
VQA = [
    (VQA_PATTERNS["color"], [
        "what color is the {0}?", "what is the {0}'s color?", "which color does the {0} have?", "color of the {0}?",
        "what colour is the {0}?",
        # second round (issue #31): written after the second held-out set, apart from it
        "{0} color?", "the color of the {0}", "tell the {0}'s colour", "say what color the {0} is",
        "what color is the {0} shape?", "the {0}: which color?", "what colour does the {0} have?",
        "what color was the {0} drawn in?", "which colour is used for the {0}?", "identify the color of the {0}",
        "in what color is the {0}?", "the {0}, what colour?", "what color is the {0} painted?",
        "what is the colour of the {0} in the image?", "give the {0}'s color", "how is the {0} colored?"]),
    (VQA_PATTERNS["shape"], [
        "what shape is the {0} object?", "which shape is the {0} object?", "what is the shape of the {0} object?",
        "shape of the {0} object?",
        "what is the {0} object?", "{0} object: which shape?", "the {0} object is what shape?",
        "name the {0} object's shape", "which shape has the color {0}?", "what shape is drawn in {0}?",
        "the {0} shape is a what?", "tell the shape of the {0} object", "what form does the {0} object have?",
        "the shape that is {0}?", "is the {0} object a circle, square or triangle?", "what is the {0} figure?",
        "which figure is {0}?", "the {0}-colored object's shape?"]),
    (VQA_PATTERNS["count"], [
        "how many shapes are there?", "how many shapes?", "number of shapes?", "how many shapes are in the image?",
        "how many things are drawn?",
        "how many objects are there?", "how many figures are drawn?", "total number of shapes?", "shape count?",
        "count them", "how many?", "tell me how many shapes there are", "give the number of objects",
        "how many shapes does the image have?", "how many shapes can be seen?", "how many items are in the image?",
        "what number of shapes is shown?", "how many shapes are visible?", "count how many shapes there are",
        "are there one, two or three shapes?", "the number of objects?", "objects in total?"]),
    (VQA_PATTERNS["exists"], [
        "is there a {0} {1}?", "is there any {0} {1}?", "{0} {1} in the image?", "does a {0} {1} appear?",
        "is any {0} {1} visible?",
        "is a {0} {1} shown?", "does the picture include a {0} {1}?", "yes or no: is there a {0} {1}?", "{0} {1}?",
        "is there a {0} {1} anywhere?", "would I find a {0} {1} in it?", "has the image got a {0} {1}?",
        "check for a {0} {1}", "tell me if there is a {0} {1}", "is a {0} {1} drawn?", "could you spot a {0} {1}?",
        "does it show a {0} {1}?", "is the {0} {1} there?", "is there some {0} {1}?", "{0} {1}: yes or no?",
        "are there {0} {1}s?", "can a {0} {1} be seen?"]),
]
# Third round (issue #31): written after the third held-out set (eval/heldout_wordings.py V3_*), apart from it.
# The second round's misses were answers keyed on single words ("objects" -> a shape, "see"/"have" -> a colour),
# so here every VQA kind is asked with every noun, and yes/no with many verbs, so that no word marks a kind.
NOUNS = ("shape", "object", "item", "thing", "figure", "element", "form", "piece")
PLURALS = tuple(n + "s" for n in NOUNS)
VQA_ROUND3 = {
    VQA_PATTERNS["color"]: [f.replace("NOUN", n) for n in NOUNS for f in (
        "what color is the {0} NOUN?", "which colour does the {0} NOUN have?", "the {0} NOUN: what color?",
        "color of the {0} NOUN?")],
    VQA_PATTERNS["shape"]: [f.replace("NOUN", n) for n in NOUNS for f in (
        "what shape is the {0} NOUN?", "which shape is the {0} NOUN?", "the {0} NOUN is what shape?",
        "shape of the {0} NOUN?")],
    VQA_PATTERNS["count"]: [f.replace("NOUNS", n) for n in PLURALS for f in (
        "how many NOUNS are there?", "how many NOUNS does the image have?", "number of NOUNS?", "how many NOUNS?",
        "NOUNS: how many?", "how many NOUNS in total?", "how many NOUNS are drawn?")],
    VQA_PATTERNS["exists"]: [
        *(f"does the {place} {verb} a {{0}} {{1}}?" for place in ("scene", "drawing", "photo", "frame")
          for verb in ("have", "contain", "include", "show", "feature", "hold", "depict")),
        *(f"can you {verb} a {{0}} {{1}}?" for verb in ("detect", "make out", "locate", "observe", "spot", "find")),
        *(f"do you {verb} any {{0}} {{1}}?" for verb in ("see", "find", "detect", "observe", "notice", "spot")),
        *(f"is there a {{0}} {{1}} in the {place}?" for place in ("scene", "drawing", "photo", "frame")),
        *(f"a {{0}} {{1}}: {word}?" for word in ("present", "visible", "there", "shown"))],
}
VQA = [(pattern, list(dict.fromkeys(ws + VQA_ROUND3[pattern]))) for pattern, ws in VQA]
# Fourth round (issue #31): written after the fourth held-out set (V4_*), apart from it. Round 3's misses were
# words around the question that the training wordings had tied to one kind ("could you", "do you think", "in
# this picture" -> yes/no; "figure", "thing" -> a shape even in [identify]). So any paraphrased instruction may
# get a prefix and a suffix drawn independently of its task and kind (`decorate`), and identify and detection are
# asked with the nouns too.
PREFIXES = ("could you tell me", "can you tell me", "tell me", "I wonder", "I'd like to know", "quick question:",
            "let me know", "looking at the image,", "hey,", "one question:", "so,", "now,", "answer this:",
            "in the picture,", "can you say", "just tell me")
SUFFIXES = ("in the image", "in this picture", "here", "in the scene", "if you can", "thanks", "for me",
            "in this drawing")
IDENTIFY += [f.replace("NOUN", n) for n in NOUNS for f in ("[identify] what NOUN is at {}?",
                                                          "[identify] which NOUN lies in {}?",
                                                          "[identify] the NOUN at {}: name it")]
DETECTION += [f"[detection] every {{}} {n}" for n in NOUNS] + [f"[detection] boxes of the {{}} {n}s" for n in NOUNS]


def decorate(text: str, rng: random.Random, p: float = 0.4) -> str:
    """`[task] body` with, each with probability p, a PREFIXES entry before the body and a SUFFIXES entry at its
    end (before a final "?"), whatever the task or question kind."""
    ident, _, body = text.partition(" ") if text.startswith("[") else ("", "", text)
    if rng.random() < p:
        body = f"{rng.choice(PREFIXES)} {body}"
    if rng.random() < p:
        q = body.endswith("?")
        body = f"{body.rstrip('?')} {rng.choice(SUFFIXES)}" + ("?" if q else "")
    return f"{ident} {body}" if ident else body


# Word noise (issue #31; not a new round of wordings): rounds 5–7 of wordings showed the misses are single words
# that decide the answer's kind ("... {box}? give its color" -> a colour in [identify]), and a few more wordings
# do not outweigh them. So a share (P_NOISE) of the paraphrased instructions get words inserted, dropped or
# swapped before their content is filled in: inserted words come from the training wordings themselves, half of
# them words that mark a task or question kind elsewhere (KIND_WORDS). What tells the kind apart is then the task
# identifier and the content: a colour question names a shape, a shape question a colour, a count question
# nothing, a yes/no question both. Colours, shapes and numbers are never inserted, "yes" and "no" only as the
# kind phrase "yes or no"; the identifier and `{…}` slots are never touched.
P_NOISE = 0.5
P_KIND = 0.5      # the share of inserted words drawn from KIND_WORDS
KIND_WORDS = ("color", "colour", "shape", "how many", "number", "count", "name", "what", "which", "where", "box",
              "is there", "yes or no", "object", "describe", "caption", "locate", "all", "every", "tell me")


@functools.cache
def _vocabulary() -> tuple[str, ...]:
    """The words of the training wordings (identifiers, slots, colours, shapes and answer words left out)."""
    from minigptv2.synthetic import COLORS, NUMBERS, SHAPES

    texts = [re.sub(r"\[\w+\]|\{[^}]*\}", " ", w) for w in all_wordings()] + list(PREFIXES + SUFFIXES)
    banned = {*COLORS, *SHAPES, *(s + "s" for s in SHAPES), *NUMBERS, "yes", "no"}
    return tuple(sorted({w for t in texts for w in re.findall(r"[a-z][a-z']+", t.lower())} - banned))


def noise(template: str, rng: random.Random) -> str:
    """template (`[task] body` with `{}` / `{0}` slots) with 1–3 word edits to its body: insert a word (60 %; a
    KIND_WORDS entry with probability P_KIND, else a word of the training wordings), drop one, or swap two
    neighbours. Words holding a slot and the identifier stay."""
    ident, _, body = template.partition(" ") if template.startswith("[") else ("", "", template)
    words = body.split()
    vocab = _vocabulary()
    for _ in range(rng.randint(1, 3)):
        free = [i for i, w in enumerate(words) if "{" not in w]
        op = rng.random()
        if op < 0.6 or not free:
            word = rng.choice(KIND_WORDS) if rng.random() < P_KIND else rng.choice(vocab)
            words.insert(rng.randint(0, len(words)), word)
        elif op < 0.8 and len(words) > 1:
            del words[rng.choice(free)]
        elif len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    body = " ".join(words)
    return f"{ident} {body}" if ident else body


# the official templates, per task, in the form `instruction` fills
OFFICIAL = {"refer": REFER_TEMPLATES, "identify": IDENTIFY_TEMPLATES, "detection": [DETECTION_TEMPLATE],
            "caption": ["[caption] " + t for t in CAPTION_TEMPLATES], "grounding": GROUNDING_TEMPLATES}
PARAPHRASES = {"refer": REFER, "identify": IDENTIFY, "detection": DETECTION, "caption": CAPTION,
               "grounding": GROUNDING}


def all_wordings() -> list[str]:
    """Every training paraphrase (VQA ones with their `[vqa] ` identifier)."""
    return [w for ws in PARAPHRASES.values() for w in ws] + ["[vqa] " + w for _, ws in VQA for w in ws]


def instruction(task: str, content: str | None, rng: random.Random, p_paraphrase: float = 0.5) -> str:
    """One instruction for a synthetic task: with probability p_paraphrase a paraphrase above (with probability
    P_NOISE edited word by word: `noise`; decorated: `decorate`), else an official template (VQA: the question
    reworded, then wrapped in an official VQA template)."""
    para = rng.random() < p_paraphrase
    if task == "vqa":
        q = content or ""
        if para:
            for pattern, wordings in VQA:
                m = re.match(pattern, q)
                if m:
                    w = rng.choice(wordings)
                    q = decorate((noise(w, rng) if rng.random() < P_NOISE else w).format(*m.groups()), rng)
                    break
        return rng.choice(VQA_TEMPLATES).format(q)
    if para:
        w = rng.choice(PARAPHRASES[task])
        return decorate((noise(w, rng) if rng.random() < P_NOISE else w).format(content), rng)
    return rng.choice(OFFICIAL[task]).format(content)
