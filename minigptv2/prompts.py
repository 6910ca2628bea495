"""The MiniGPT-v2 conversation template, as structure rather than strings (docs/official-model.md §3.1–3.3).

A rendered prompt is a list of items; the processor turns each item into ids separately, exactly as the
official code tokenizes each piece in its own tokenizer call (SentencePiece adds its dummy-prefix `▁` to
every piece). Items:
    BOS / EOS            the special ids (never produced from user text: no template injection)
    IMAGE                the image's visual tokens
    Text(s, target)      a text piece; `target=True` marks answer text trained on (EOS_TARGET likewise)

Inference (official `CONV_VISION_minigptv2` + `get_context_emb`, single turn):
    BOS BOS "[INST] <Img>" IMAGE "</Img> {q} [/INST]"       # auto BOS + the literal `<s>` -> two BOS
Later turns append   "{answer}" EOS BOS "[INST] {q} [/INST]"     (the training conversation layout; the
official demo replaces earlier answers by `</s>`, which we don't copy).
A model whose config.prompt_form is "training" (the models we train from scratch, e.g. nano) is prompted in the
training form below instead: a small LLM trained from scratch answers the official form worse (docs/nano.md).
Training (finetune config, `chat_template: True`, docs/official-model.md §3.2, §4.3):
    BOS "[INST] <Img>" IMAGE "</Img> {q}  [/INST]" "{answer}"* EOS*   (* = target; note the two spaces)
    and per later turn:  BOS "[INST] {q}  [/INST]" "{answer}"* EOS*

Other LLMs (`config.template = "chat"`) use the tokenizer's own chat template (render_chat_*): the messages
are rendered with placeholders in place of every question and answer, and the rendered string is cut at
them, so template text (special tokens parsed) and user text (not parsed) stay separate items. The first
question carries the image as "<Img>" IMAGE "</Img> {q}", as in the official template. In training the
answer and the end-of-turn token right after it (the tokenizer's eos, e.g. `<|im_end|>`) are targets.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from minigptv2.errors import MiniGPTv2Error

TASKS = ("vqa", "caption", "grounding", "refer", "identify", "detection")
IDENTIFIERS = tuple(f"[{t}]" for t in TASKS)

# ---- the official instruction templates per task (docs/official-model.md §4.5, verbatim) ------------------------------------
REFER_TEMPLATES = [
    "[refer] {}",
    "[refer] give me the location of {}",
    "[refer] where is {} ?",
    "[refer] from this image, tell me the location of {}",
    "[refer] the location of {} is",
    "[refer] could you tell me the location for {} ?",
    "[refer] where can I locate the {} ?",
]
IDENTIFY_TEMPLATES = [
    "[identify] {}",
    "[identify] what object is in this location {}",
    "[identify] identify the object present at this location {}",
    "[identify] what is it in {}",
    "[identify] describe this object in {}",
    "[identify] this {} is",
    "[identify] the object in {} is",
]
VQA_TEMPLATES = [
    "[vqa] {}",
    "[vqa] Based on the image, respond to this question with a short answer: {}",
]
CAPTION_TEMPLATES = [  # used as "[caption] " + template
    "Briefly describe this image.",
    "Provide a concise depiction of this image.",
    "Present a short description of this image.",
    "Summarize this image in a few words.",
    "A short image caption:",
    "A short image description:",
    "A photo of ",
    "An image that shows ",
    "Write a short description for the image. ",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
]
GROUNDING_TEMPLATES = [
    "[grounding] please describe this image in details",
    "[grounding] describe this image as detailed as possible",
    "[grounding] summarize this image in details",
    "[grounding] give a thorough description of what you see in this image",
]
DETECTION_TEMPLATE = "[detection] {}"
# the wording the official evaluation uses per task (docs/official-model.md §5.1, §5.3), also used by `data convert`
EVAL_PROMPTS = {"refer": REFER_TEMPLATES[1], "vqa": VQA_TEMPLATES[1], "identify": IDENTIFY_TEMPLATES[1],
                "detection": DETECTION_TEMPLATE, "caption": "[caption] " + CAPTION_TEMPLATES[0],
                "grounding": GROUNDING_TEMPLATES[0]}


@dataclass(frozen=True)
class Item:
    kind: str            # "bos" | "eos" | "image" | "text"
    text: str = ""
    target: bool = False
    template: bool = False   # text written by a chat template: its special tokens are parsed


BOS, EOS, IMAGE = Item("bos"), Item("eos"), Item("image")
EOS_TARGET = Item("eos", target=True)


def Text(text: str, target: bool = False, template: bool = False) -> Item:  # noqa: N802 - reads like a constructor
    return Item("text", text, target, template)


def with_task(task: str | None, text: str) -> str:
    """Prefix a user instruction with its task identifier (`None` / "chat" = free chat)."""
    if task in (None, "", "chat"):
        return text
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS} or 'chat'")
    return f"[{task}] {text}"


def without_task(text: str) -> str:
    """The instruction without its leading task identifier ("red circle" for "[refer] red circle")."""
    task = task_of(text)
    return text.lstrip()[len(task) + 2:].lstrip() if task else text


def task_of(text: str) -> str | None:
    """The task identifier an instruction starts with ("refer" for "[refer] red circle"), or None."""
    head = text.lstrip()
    return next((t for t in TASKS if head.startswith(f"[{t}]")), None)


def render_inference(questions: list[str], answers: list[str], has_image: bool = True,
                     as_trained: bool = False) -> list:
    """Prompt items for generating the answer to questions[-1]; answers are the earlier turns' replies.
    `as_trained`: the training form instead of the official inference form (one BOS, two spaces before
    [/INST]), so the prompt is exactly what render_training (chat_template on, the default) gave the model
    (config.prompt_form "training")."""
    assert len(answers) == len(questions) - 1, "one answer per earlier question"
    q0, end = questions[0], "  [/INST]" if as_trained else " [/INST]"
    items: list = [BOS] if as_trained else [BOS, BOS]
    if has_image:
        items += [Text("[INST] <Img>"), IMAGE, Text(f"</Img> {q0}{end}")]
    else:
        items += [Text(f"[INST] {q0}{end}")]
    for a, q in zip(answers, questions[1:]):
        items += [Text(a), EOS, BOS, Text(f"[INST] {q}{end}")]
    return items


def render_training(turns: list[tuple[str, str]], has_image: bool = True, chat_template: bool = True,
                    as_inference: bool = False) -> list:
    """Items for one training sample: instructions masked, answers + EOS as targets.

    The official datasets append a space to every instruction (`"<Img><ImageHere></Img> {q} "`, later turns
    `q + " "`) before the `[INST] {} [/INST]` wrap, hence the two spaces before `[/INST]`. `chat_template=False`
    is the official un-wrapped variant (`chat_template: False` configs). `as_inference`: the sample in the
    official *inference* form instead (two BOS, one space before [/INST]: render_inference's items with the
    answers as targets), so that a model trained from scratch also answers that form (TrainConfig.inference_form,
    docs/nano.md)."""
    if as_inference:
        if not chat_template:
            raise MiniGPTv2Error("as_inference needs chat_template=True (the inference form is the wrapped one)")
        (q0, a0), rest = turns[0], turns[1:]
        items = [BOS, BOS] + ([Text("[INST] <Img>"), IMAGE, Text(f"</Img> {q0} [/INST]")] if has_image else
                              [Text(f"[INST] {q0} [/INST]")])
        items += [Text(a0, target=True), EOS_TARGET]
        for q, a in rest:
            items += [BOS, Text(f"[INST] {q} [/INST]"), Text(a, target=True), EOS_TARGET]
        return items

    def wrap(q: str) -> str:
        return f"[INST] {q}  [/INST]" if chat_template else f"{q} "

    (q0, a0), rest = turns[0], turns[1:]
    items: list = [BOS]
    if has_image:
        head = wrap("<Img><ImageHere></Img> " + q0)
        before, after = head.split("<ImageHere>", 1)     # the template's slot; user text may contain the word
        items += [Text(before), IMAGE, Text(after)]
    else:
        items += [Text(wrap(q0))]
    items += [Text(a0, target=True), EOS_TARGET]
    for q, a in rest:
        items += [BOS, Text(wrap(q)), Text(a, target=True), EOS_TARGET]
    return items


_SLOT = re.compile("\ue000([QA])(\\d+)\ue001")     # private-use placeholders for questions / answers


def _render_chat(tokenizer, turns: list, has_image: bool, generation: bool, train: bool) -> list:
    """turns = [(question, answer or None)]; the last answer is None when generating."""
    messages, expected = [], []
    for i, (_, a) in enumerate(turns):
        messages.append({"role": "user", "content": f"\ue000Q{i}\ue001"})
        expected.append(("Q", i))
        if a is not None:
            messages.append({"role": "assistant", "content": f"\ue000A{i}\ue001"})
            expected.append(("A", i))
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=generation)
    slots = list(_SLOT.finditer(rendered))
    if [(m.group(1), int(m.group(2))) for m in slots] != expected:
        raise MiniGPTv2Error("the chat template does not render every message once and in order")
    items: list = []
    pos, after_answer = 0, False
    for m in slots + [None]:
        chunk = rendered[pos: m.start() if m else len(rendered)]
        if after_answer and train:                       # the end-of-turn token is a target (it stops generation)
            cut = chunk.find(tokenizer.eos_text)
            if cut < 0 or chunk[:cut].strip():
                raise MiniGPTv2Error(f"the chat template does not end the assistant turn with {tokenizer.eos_text!r}")
            items.append(Text(chunk[: cut + len(tokenizer.eos_text)], target=True, template=True))
            chunk = chunk[cut + len(tokenizer.eos_text):]
        if chunk:
            items.append(Text(chunk, template=True))
        if m is None:
            break
        i = int(m.group(2))
        q, a = turns[i]
        if m.group(1) == "Q":
            items += [Text("<Img>"), IMAGE, Text(f"</Img> {q}")] if i == 0 and has_image else [Text(q)]
        else:
            items.append(Text(a, target=train))
        after_answer = m.group(1) == "A"
        pos = m.end()
    return items


def render_chat_inference(tokenizer, questions: list[str], answers: list[str], has_image: bool = True) -> list:
    """render_inference for `template = "chat"`: the tokenizer's chat template with the generation prompt."""
    assert len(answers) == len(questions) - 1, "one answer per earlier question"
    return _render_chat(tokenizer, list(zip(questions, list(answers) + [None])), has_image, True, False)


def render_chat_training(tokenizer, turns: list[tuple[str, str]], has_image: bool = True) -> list:
    """render_training for `template = "chat"`: answers and the eos after each are targets."""
    return _render_chat(tokenizer, turns, has_image, False, True)


def clean_answer(text: str) -> str:
    """Official output cleanup (docs/official-model.md §3.6): cut at `</s>`, drop `<s>`, keep text after the last
    `[/INST]`."""
    text = text.split("</s>")[0].replace("<s>", "")
    return text.split("[/INST]")[-1].strip()
