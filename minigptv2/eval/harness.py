"""The lmms-eval / VLMEvalKit adapter (docs/evaluation.md, "Other harnesses"): `MiniGPTv2ForEval` answers like
the official eval (task identifier added, greedy) and returns grounding answers as normalised `[x1, y1, x2, y2]`
floats (the 0..100 grid / 100), the form lmms-eval's refcoco bbox_rec and VLMEvalKit's RefCOCO parse
(docs/official-model.md §8: both mis-read raw MiniGPT-v2 boxes).

  lmms-eval: add lmms_eval/models/simple/minigptv2.py

        from lmms_eval.api.model import lmms
        from lmms_eval.api.registry import register_model
        from minigptv2.eval.harness import MiniGPTv2ForEval

        @register_model("minigptv2")
        class MiniGPTv2LMMS(MiniGPTv2ForEval, lmms):
            def __init__(self, pretrained=None, batch_size=8, device=None, dtype=None, **kw):
                lmms.__init__(self)
                MiniGPTv2ForEval.__init__(self, pretrained, batch_size=int(batch_size), device=device, dtype=dtype)

    (and list "minigptv2": "MiniGPTv2LMMS" in lmms_eval/models/__init__.py AVAILABLE_MODELS), then
    `lmms-eval --model minigptv2 --model_args pretrained=m7b --tasks refcoco_bbox_rec_val,gqa --batch_size 8`
    (on the GPU in bf16 by default; `device=cpu`, `dtype=fp32` etc. in --model_args, as the commands' flags).
    `generate_until` reads each request's (context, gen_kwargs, doc_to_visual, doc_id, task, split), takes the
    first image, uses [refer] for the REC tasks (refcoco*_bbox_rec_*; the expression is the text after
    "describes:") and [vqa] otherwise, batching --batch_size requests per call. Log-likelihood requests are not
    supported.
  VLMEvalKit: in vlmeval/config.py add
        from minigptv2.eval.harness import MiniGPTv2ForEval
        from vlmeval.vlm.base import BaseModel
        class MiniGPTv2VLMEval(MiniGPTv2ForEval, BaseModel):
            INSTALL_REQ, INTERLEAVE = False, False
        supported_VLM["MiniGPT-v2-ours"] = partial(MiniGPTv2VLMEval, model_dir="m7b")
    then `python run.py --model MiniGPT-v2-ours --data RefCOCO GQA_TestDev_Balanced`. `generate_inner(message,
    dataset)` joins the text parts, takes the first image, and uses [refer] for the RefCOCO* datasets.
"""
from __future__ import annotations

from minigptv2.boxes import parse_boxes
from minigptv2.eval.benches import REFER_PROMPT, VQA_PROMPT
from minigptv2.eval.run import Item
from minigptv2.generate import generate

REFER_MARKERS = ("this sentence describes:", "describes:", "referring expression:", "expression:")


class MiniGPTv2ForEval:
    """lmms-eval / VLMEvalKit adapter (how to register it: the module docstring).

    Greedy, like the official eval; adds the task identifier ([vqa] with the official short-answer prompt,
    [refer] with the official refer prompt); grounding answers come back as "[x1, y1, x2, y2]" floats in 0..1
    (the 0..100 grid divided by 100, relative to the original image). One image per request (the first)."""

    def __init__(self, model_dir=None, model=None, processor=None, batch_size: int = 8, max_new_tokens: int = 20,
                 constrained: bool = True, device: str | None = None, dtype: str | None = None, **_):
        if model is None:         # device / dtype as the commands' --device / --dtype (devices.py)
            from argparse import Namespace

            from minigptv2 import load
            from minigptv2.devices import load_kwargs

            model, processor = load(model_dir, **load_kwargs(Namespace(device=device, dtype=dtype)))
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
