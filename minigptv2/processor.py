"""Where strings and images become tensors: the image processor and the processor (transformers classes).

    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "[refer] red circle"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")

Image: resize to image_size×image_size with PIL bicubic (aspect not kept), /255, -mean, /std (docs/images.md).

Text: the official prompt is built from structure (prompts.py), and every text piece is tokenized on its own
as the official code does (tokenizers.py). `apply_chat_template` returns a `Prompt`: a str that keeps that
structure, so `processor(text=prompt)` encodes user text as text (it never becomes BOS/EOS or an image slot).
A plain str is split at the markers `<s>`, `</s>` and `<ImageHere>` (what a rendered prompt shows), which is
then structure by definition.

`processor.tokenizer` is a transformers tokenizer (AutoTokenizer loads it from the folder); `processor.tok`
is the one that builds our prompts (tokenizers.Tokenizer for "llama2", HFTokenizer for "chat").
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from minigptv2 import prompts
from minigptv2.config import CLIP_MEAN, CLIP_STD, MiniGPTv2Config
from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import load_image
from minigptv2.tokenizers import HFTokenizer, Tokenizer, load_tokenizer

IGNORE = -100
# tokenizer_config.json keys that record how a tokenizer was loaded, not what it is (save_pretrained drops them)
LOAD_TIME_KEYS = ("local_files_only", "is_local")
IMAGE_MARK, BOS_MARK, EOS_MARK = "<ImageHere>", "<s>", "</s>"


class MiniGPTv2ImageProcessor(BaseImageProcessor):
    """The official BLIP-2 eval transform: PIL bicubic resize to a square, /255, normalise by mean / std."""
    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 448, image_mean=CLIP_MEAN, image_std=CLIP_STD, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.image_mean, self.image_std = int(image_size), list(image_mean), list(image_std)

    @classmethod
    def from_config(cls, config: MiniGPTv2Config) -> "MiniGPTv2ImageProcessor":
        v = config.vision_config
        return cls(image_size=v.image_size, image_mean=v.mean, image_std=v.std)

    def tensor(self, image) -> torch.Tensor:
        """Path / bytes / PIL -> (3, S, S) float32."""
        img = image if isinstance(image, Image.Image) and image.mode == "RGB" else load_image(image)
        s = self.image_size
        img = img.resize((s, s), resample=Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
        return ((x / 255.0) - mean) / std

    def preprocess(self, images, return_tensors="pt", **kwargs) -> BatchFeature:
        images = images if isinstance(images, (list, tuple)) else [images]
        return BatchFeature({"pixel_values": torch.stack([self.tensor(im) for im in images])},
                            tensor_type=return_tensors)

    def __call__(self, images, *args, **kwargs) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)


class Prompt(str):
    """A rendered prompt that remembers its structure (the prompt items of prompts.py)."""
    items: tuple = ()


class MiniGPTv2Processor(ProcessorMixin):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, config: MiniGPTv2Config = None,
                 tok=None):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        if config is None or tok is None:
            raise MiniGPTv2Error("MiniGPTv2Processor needs the model config and its prompt tokenizer: use "
                                 "MiniGPTv2Processor.from_pretrained(folder) or build_processor(tok, config)")
        self.config, self.tok = config, tok
        if config.template == "chat" and not getattr(tok, "chat_template", None):
            raise MiniGPTv2Error("template 'chat' needs a tokenizer with a chat template (an HF tokenizer folder)")
        if config.template == "llama2" and not isinstance(tok, Tokenizer):
            raise MiniGPTv2Error("template 'llama2' needs the SentencePiece tokenizer.model")
        if len(tok) > config.text_config.vocab_size:
            raise MiniGPTv2Error(f"the tokenizer has {len(tok)} tokens but the model's vocab_size is "
                                 f"{config.text_config.vocab_size}")
        self.image_token_id = config.image_token_id
        # padding (attention 0) never reads as an image position, even where the pad id is the unk id
        self._fill_id = tok.pad_id if tok.pad_id != self.image_token_id else tok.eos_id

    # ---- folders --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"processor_class": type(self).__name__}

    def save_pretrained(self, save_directory, **kwargs):
        """The prompt tokenizer's files (tokenizer.model or tokenizer/) and the transformers tokenizer's, without
        the keys that only say how this copy was loaded (transformers writes `local_files_only: true` when it was
        loaded under HF_HUB_OFFLINE=1, so a folder would record the environment that saved it)."""
        import json

        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tok.save(d)
        if isinstance(self.tok, Tokenizer):
            self.tokenizer.save_pretrained(str(d))
            cfg = d / "tokenizer_config.json"
            if cfg.is_file():
                kept = {k: v for k, v in json.loads(cfg.read_text()).items() if k not in LOAD_TIME_KEYS}
                cfg.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        (d / "processor_config.json").write_text(self.to_json_string())
        return [str(d / "processor_config.json")]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "MiniGPTv2Processor":
        from minigptv2.config import read_config

        d = Path(pretrained_model_name_or_path)
        return build_processor(load_tokenizer(d), read_config(d))

    # ---- the transformers surface ---------------------------------------------------------------------------
    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, tokenize: bool = False,
                            return_dict: bool = False, return_tensors="pt", **kwargs):
        """OpenAI / transformers messages ({"type": "image"} and {"type": "text"} parts, or str contents) -> the
        prompt the official code builds (config.template / prompt_form). The last message must be the user's."""
        if conversation and isinstance(conversation[0], (list, tuple)):
            prompts = [self.apply_chat_template(c, add_generation_prompt) for c in conversation]
            if not tokenize:
                return prompts
            turns = [_turns(c) for c in conversation]
            if any(t[2] and t[3] is None for t in turns):
                raise MiniGPTv2Error('apply_chat_template(tokenize=True) needs the image itself in its part: '
                                     '{"type": "image", "image": PIL image or path}')
            return self(text=prompts, images=[t[3] for t in turns if t[2]] or None, return_tensors=return_tensors)
        questions, answers, has_image, image = _turns(conversation)
        items = tuple(self._render(questions, answers, has_image))
        prompt = Prompt("".join(self._mark(it) for it in items))
        prompt.items = items
        if not tokenize:
            return prompt
        if has_image and image is None:
            raise MiniGPTv2Error('apply_chat_template(tokenize=True) needs the image itself in its part: '
                                 '{"type": "image", "image": PIL image or path}')
        return self(text=[prompt], images=[image] if has_image else None, return_tensors=return_tensors)

    def __call__(self, images=None, text=None, return_tensors="pt", padding_side: str = "left", **kwargs):
        """text: a prompt (a `Prompt` from apply_chat_template, or a str with the markers) or a list of them;
        images: one per prompt that has an image slot. -> input_ids, attention_mask, pixel_values."""
        texts = [text] if isinstance(text, str) else list(text or [])
        if not texts:
            raise MiniGPTv2Error("the processor needs text: a prompt from apply_chat_template")
        imgs = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
        imgs = [im for im in imgs if im is not None]
        rows = []
        for t in texts:
            items = t.items if isinstance(t, Prompt) and t.items else self._parse(t)
            rows.append(self.encode_items(items)[0])
        n_slots = sum(1 for r in rows if self.image_token_id in r)
        if n_slots != len(imgs):
            raise MiniGPTv2Error(f"{n_slots} prompt(s) with an image slot but {len(imgs)} image(s)")
        out = self._pad(rows, imgs or None, padding_side)
        return out

    def _pad(self, rows, images, padding_side: str = "left") -> BatchFeature:
        batch = self.generation_batch(rows, images or [], padding_side)
        if batch["pixel_values"] is None:
            batch.pop("pixel_values")
        return BatchFeature(batch)

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.tok.decode([i for i in ids if i != self.image_token_id])

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return [self.decode(s) for s in sequences]

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs) -> list[str]:
        rows = generated_outputs.tolist() if hasattr(generated_outputs, "tolist") else generated_outputs
        rows = [rows] if rows and isinstance(rows[0], int) else rows
        return [self.decode_answer(r) for r in rows]

    def post_process_generation(self, text: str, image_size=None) -> dict:
        """Answer text -> {"text", "boxes": [{"phrase", "box" (0-100 grid), "box_pixels" (when image_size=(W, H))}]}."""
        from minigptv2.boxes import parse_boxes

        W, H = image_size or (None, None)
        clean = prompts.clean_answer(text)
        return {"text": clean, "boxes": [g.to_dict(W, H) for g in parse_boxes(clean)]}

    # ---- structure <-> text ---------------------------------------------------------------------------------
    def _mark(self, it) -> str:
        return {"bos": BOS_MARK, "eos": EOS_MARK, "image": IMAGE_MARK}.get(it.kind, it.text)

    def _parse(self, text: str) -> list:
        """A plain prompt string -> items: the markers are structure, the rest is text (for "chat" prompts the
        text is the template's, so its special tokens are parsed)."""
        if not isinstance(text, str):
            raise MiniGPTv2Error(f"a prompt must be a string, got {type(text).__name__}")
        items = []
        chat = self.config.template == "chat"
        for part in re.split(f"({re.escape(IMAGE_MARK)}|{re.escape(BOS_MARK)}|{re.escape(EOS_MARK)})", text):
            if part == IMAGE_MARK:
                items.append(prompts.IMAGE)
            elif part in (BOS_MARK, EOS_MARK) and not chat:
                items.append(prompts.BOS if part == BOS_MARK else prompts.EOS)
            elif part:
                items.append(prompts.Text(part, template=chat))
        return items

    def image(self, image) -> torch.Tensor:
        """Path / bytes / PIL -> (3, S, S) float32 (the image processor's transform)."""
        return self.image_processor.tensor(image)

    # ---- text ---------------------------------------------------------------------------------------
    def encode_items(self, items) -> tuple[list[int], list[int]]:
        """Prompt items -> (ids, labels); image items expand to num_image_tokens placeholders."""
        tok = self.tok
        ids: list[int] = []
        labels: list[int] = []
        for it in items:
            if it.kind == "bos":
                new = [tok.bos_id]
            elif it.kind == "eos":
                new = [tok.eos_id]
            elif it.kind == "image":
                new = [self.image_token_id] * self.config.num_image_tokens
            else:
                new = tok.encode(it.text, template=it.template)
                if self.image_token_id in new:
                    raise MiniGPTv2Error(f"the text {it.text[:40]!r} encodes to the image token id "
                                         f"{self.image_token_id}, which marks image positions")
            ids += new
            labels += new if it.target else [IGNORE] * len(new)
        return ids, labels

    def prompt_ids(self, questions: list[str], answers: list[str] = (), has_image: bool = True) -> list[int]:
        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise MiniGPTv2Error("the prompt text is empty")
        ids, _ = self.encode_items(self._render(list(questions), list(answers), has_image))
        return ids

    def _render(self, questions, answers, has_image):
        if self.config.template == "chat":
            return prompts.render_chat_inference(self.tok, questions, answers, has_image)
        return prompts.render_inference(questions, answers, has_image, self.config.prompt_form == "training")

    def generation_batch(self, prompt_ids: list[list[int]], images: list, padding_side: str = "left") -> dict:
        """Pad prompts (pad id, attention 0; left for generation) and stack the images that appear in them."""
        L = max(len(p) for p in prompt_ids)
        input_ids = torch.full((len(prompt_ids), L), self._fill_id, dtype=torch.long)
        mask = torch.zeros((len(prompt_ids), L), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            at = slice(L - len(p), L) if padding_side == "left" else slice(0, len(p))
            input_ids[i, at] = torch.tensor(p, dtype=torch.long)
            mask[i, at] = 1
        pix = [self.image(im) for im in images if im is not None]
        return {"input_ids": input_ids, "attention_mask": mask,
                "pixel_values": torch.stack(pix) if pix else None}

    def training_example(self, turns, image=None, chat_template: bool = True, load_image: bool = True,
                         as_inference: bool = False) -> dict:
        """One training sample -> ids/labels. `image`: path / PIL / bytes / preprocessed (3,S,S) tensor / None.
        Each answer is cut to max_txt_len tokens (as the official code); an over-long sample is refused.
        load_image=False leaves `image` as it is in "pixel_values" (train/batches.py VisionCache loads it if it
        must). as_inference: the sample in the official inference form (prompts.render_training)."""
        turns = [(q, self.truncate(a)) for q, a in turns]
        if self.config.template == "chat":
            if not chat_template:
                raise MiniGPTv2Error("chat_template=False (the official un-wrapped stage-1/2 format) needs "
                                     "template 'llama2'; a 'chat' model always uses its chat template")
            if as_inference:
                raise MiniGPTv2Error("the official inference form (inference_form) needs template 'llama2'; a "
                                     "'chat' model always uses its chat template")
            items = prompts.render_chat_training(self.tok, list(turns), image is not None)
        else:
            items = prompts.render_training(list(turns), image is not None, chat_template, as_inference)
        ids, labels = self.encode_items(items)
        if len(ids) > self.config.max_context_len:
            raise MiniGPTv2Error(f"training sample is {len(ids)} tokens, over max_context_len "
                                 f"{self.config.max_context_len}")
        pv = image if isinstance(image, torch.Tensor) or image is None or not load_image else self.image(image)
        return {"input_ids": ids, "labels": labels, "pixel_values": pv}

    def truncate(self, answer: str) -> str:
        ids = self.tok.encode(answer)
        return answer if len(ids) <= self.config.max_txt_len else self.tok.decode(ids[: self.config.max_txt_len])

    def collate(self, examples: list[dict]) -> dict:
        """Right-pad a list of training examples (pad id, mask 0, label -100)."""
        L = max(len(e["input_ids"]) for e in examples)
        B = len(examples)
        input_ids = torch.full((B, L), self._fill_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            mask[i, :n] = 1
        if self.config.template == "llama2":   # official: pad-id answer tokens are not trained on. Not for chat
            labels[labels == self.tok.pad_id] = IGNORE   # templates, whose pad may be the eos (SmolLM2)
        pix = [e["pixel_values"] for e in examples if e["pixel_values"] is not None]
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
                "pixel_values": torch.stack(pix) if pix else None}

    def decode_answer(self, ids) -> str:
        return prompts.clean_answer(self.tok.decode(ids))

    def decode_answer_text(self, text: str) -> str:
        return prompts.clean_answer(text)


def build_processor(tok, config: MiniGPTv2Config) -> MiniGPTv2Processor:
    """The processor of a model: its prompt tokenizer `tok` (tokenizers.py) and config."""
    return MiniGPTv2Processor(MiniGPTv2ImageProcessor.from_config(config), hf_tokenizer(tok), config=config,
                              tok=tok)


def hf_tokenizer(tok):
    """The transformers tokenizer beside our prompt tokenizer: a LlamaTokenizer converted from tokenizer.model (what
    `AutoTokenizer` and harnesses such as lmms-eval read from a saved folder). The same pieces and ids; transformers'
    conversion differs from SentencePiece only in not writing a lone "▁" before text that starts with one of the
    model's own symbols (`[refer]`, `{`, `<p>`: tokenizers.SYMBOLS), which is why prompts are encoded by `tok`."""
    if isinstance(tok, HFTokenizer):
        return tok.hf
    import shutil
    import tempfile

    from transformers import LlamaTokenizer

    try:      # from_pretrained converts the file; the constructor's vocab_file is ignored by transformers 5
        with tempfile.TemporaryDirectory() as d:
            shutil.copyfile(tok.path, Path(d) / "tokenizer.model")
            hf = LlamaTokenizer.from_pretrained(d, legacy=True, add_bos_token=True, add_eos_token=False)
    except Exception as e:  # noqa: BLE001 - the sentencepiece -> tokenizers conversion raises several types
        raise MiniGPTv2Error(f"cannot build a transformers tokenizer from {tok.path}: {e}") from None
    if len(hf) != len(tok):
        raise MiniGPTv2Error(f"the transformers tokenizer built from {tok.path} has {len(hf)} pieces, not {len(tok)}")
    if tok.pad_id != tok.unk_id:
        hf.pad_token = tok.id_to_piece(tok.pad_id)
    return hf


def _turns(conversation) -> tuple[list[str], list[str], bool, object]:
    """transformers / OpenAI messages -> (questions, answers, has_image, the image when the part holds one)."""
    questions, answers, has_image, image = [], [], False, None
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise MiniGPTv2Error("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(conversation):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise MiniGPTv2Error(f"message {i}: role must be 'user' or 'assistant' (MiniGPT-v2 has no system prompt)")
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise MiniGPTv2Error(f"message {i}: content must be a string or a list of parts")
        texts = []
        for p in parts:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind in ("image", "image_url"):
                if m["role"] != "user" or questions or has_image:
                    raise MiniGPTv2Error(f"message {i}: MiniGPT-v2 takes one image, in the first user message")
                has_image = True
                image = next((p[k] for k in ("image", "path", "url") if p.get(k) is not None), None)
            elif kind == "text" and isinstance(p.get("text"), str):
                texts.append(p["text"])
            else:
                raise MiniGPTv2Error(f"message {i}: unknown content part {p!r:.80}")
        (questions if m["role"] == "user" else answers).append(" ".join(texts))
    if conversation[-1]["role"] != "user" or len(answers) != len(questions) - 1:
        raise MiniGPTv2Error("messages must alternate user / assistant, starting and ending with the user")
    return questions, answers, has_image, image
