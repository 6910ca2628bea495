"""The MiniGPT-v2 conversation template, as structure rather than strings (facts §3.1–3.3).

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
Training (finetune config, `chat_template: True`, facts §3.2, §4.3):
    BOS "[INST] <Img>" IMAGE "</Img> {q}  [/INST]" "{answer}"* EOS*   (* = target; note the two spaces)
    and per later turn:  BOS "[INST] {q}  [/INST]" "{answer}"* EOS*
"""
from __future__ import annotations

from dataclasses import dataclass

TASKS = ("vqa", "caption", "grounding", "refer", "identify", "detection")
IDENTIFIERS = tuple(f"[{t}]" for t in TASKS)


@dataclass(frozen=True)
class Item:
    kind: str            # "bos" | "eos" | "image" | "text"
    text: str = ""
    target: bool = False


BOS, EOS, IMAGE = Item("bos"), Item("eos"), Item("image")
EOS_TARGET = Item("eos", target=True)


def Text(text: str, target: bool = False) -> Item:  # noqa: N802 - reads like a constructor
    return Item("text", text, target)


def with_task(task: str | None, text: str) -> str:
    """Prefix a user instruction with its task identifier (`None` / "chat" = free chat)."""
    if task in (None, "", "chat"):
        return text
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS} or 'chat'")
    return f"[{task}] {text}"


def render_inference(questions: list[str], answers: list[str], has_image: bool = True) -> list:
    """Prompt items for generating the answer to questions[-1]; answers are the earlier turns' replies."""
    assert len(answers) == len(questions) - 1, "one answer per earlier question"
    q0 = questions[0]
    items: list = [BOS, BOS]
    if has_image:
        items += [Text("[INST] <Img>"), IMAGE, Text(f"</Img> {q0} [/INST]")]
    else:
        items += [Text(f"[INST] {q0} [/INST]")]
    for a, q in zip(answers, questions[1:]):
        items += [Text(a), EOS, BOS, Text(f"[INST] {q} [/INST]")]
    return items


def render_training(turns: list[tuple[str, str]], has_image: bool = True, chat_template: bool = True) -> list:
    """Items for one training sample: instructions masked, answers + EOS as targets.

    The official datasets append a space to every instruction (`"<Img><ImageHere></Img> {q} "`, later turns
    `q + " "`) before the `[INST] {} [/INST]` wrap, hence the two spaces before `[/INST]`. `chat_template=False`
    is the official un-wrapped variant (`chat_template: False` configs)."""
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


def clean_answer(text: str) -> str:
    """Official output cleanup (facts §3.6): cut at `</s>`, drop `<s>`, keep text after the last `[/INST]`."""
    text = text.split("</s>")[0].replace("<s>", "")
    return text.split("[/INST]")[-1].strip()
