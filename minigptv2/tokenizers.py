"""Tokenizers behind one interface (bos_id, eos_id, pad_id, special_ids, encode, decode, token_text, save).

`load_tokenizer(folder)` picks by the files present:
  tokenizer.model   Tokenizer: SentencePiece, for the official `[INST]` template ("llama2")
  tokenizer/        HFTokenizer: any HF tokenizer folder (tokenizer.json ...), for `template = "chat"`

Tokenizer: the LLaMA SentencePiece model used directly, which reproduces the legacy (transformers 4.30)
slow-tokenizer ids MiniGPT-v2 was trained with: every separately tokenized piece gets the dummy-prefix `▁`,
specials are only ever inserted structurally (prompts.py), so `<s>`, `</s>` or `<ImageHere>` typed by a
user stay plain text. The pad id is the id of the piece `$$` (official `pad_token = "$$"`,
docs/official-model.md §1.6).

HFTokenizer: user text is encoded with `split_special_tokens=True` (typed `<|im_end|>` stays text); only text
the chat template itself produced is encoded with special-token parsing (prompts.py marks it).
"""
from __future__ import annotations

import io
import re
import shutil
import sys
import time
from pathlib import Path

from minigptv2.errors import MiniGPTv2Error

# single pieces for the 0..100 grid coordinates, the task identifiers and the template markers
SYMBOLS = ([f"<{i}>" for i in range(101)] +
           ["[INST]", "[/INST]", "<Img>", "</Img>", "<ImageHere>", "[vqa]", "[caption]", "[grounding]", "[refer]",
            "[identify]", "[detection]", "<p>", "</p>", "<delim>", "{", "}", "$$"])


class Tokenizer:
    def __init__(self, model_file: str | Path):
        import sentencepiece as spm

        path = Path(model_file)
        if not path.is_file():
            raise MiniGPTv2Error(f"tokenizer model not found: {path}")
        self.path = path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # noqa: BLE001 - sentencepiece raises bare RuntimeError/OSError
            raise MiniGPTv2Error(f"not a SentencePiece model: {path} ({e})") from None
        self.bos_id, self.eos_id, self.unk_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self.pad_id = self.sp.piece_to_id("$$")   # == unk_id when the piece is absent, as in the official code
        self.special_ids = {self.bos_id, self.eos_id, self.unk_id, self.pad_id}

    def __len__(self):
        return self.sp.get_piece_size()

    def encode(self, text: str, template: bool = False) -> list[int]:
        """One separately tokenized piece: dummy prefix added, no special-token parsing (`template` is
        ignored: SentencePiece never parses specials)."""
        if not text:
            return []
        _check_unicode(text)
        return self.sp.encode(text)

    def decode(self, ids, **_) -> str:
        """Skip special ids (bos, eos, unk, pad) as `skip_special_tokens=True`; no space clean-up."""
        return self.sp.decode([int(i) for i in ids if int(i) not in self.special_ids and 0 <= int(i) < len(self)])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def token_text(self, i: int) -> str | None:
        """The text token i spells (None for special ids); byte pieces <0xNN> give that character."""
        if i in self.special_ids:
            return None
        piece = self.sp.id_to_piece(int(i))
        m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        return chr(int(m.group(1), 16)) if m else piece.replace("\u2581", " ")

    def save(self, folder: Path) -> None:
        shutil.copyfile(self.path, Path(folder) / "tokenizer.model")


class HFTokenizer:
    """A Hugging Face tokenizer (any folder AutoTokenizer reads, or a GGUF file) behind our interface.

    `eos_id` is the token that ends an assistant turn in the chat template (found by rendering a probe
    conversation: `<|im_end|>` for ChatML, `<|eot_id|>` for Llama-3, `<end_of_turn>` for Gemma); generation
    stops there and training targets it. Without a chat template it is the tokenizer's eos."""

    def __init__(self, source: str | Path, gguf_file: str | None = None, hf=None):
        import threading

        if hf is None:
            from transformers import AutoTokenizer

            try:
                hf = AutoTokenizer.from_pretrained(str(source), gguf_file=gguf_file) if gguf_file else \
                    AutoTokenizer.from_pretrained(str(source))
            except (OSError, ValueError, ImportError) as e:
                raise MiniGPTv2Error(f"cannot load a tokenizer from {source}: {str(e).splitlines()[0]}") from None
        self.hf = hf
        self.path = Path(source)
        self._lock = threading.Lock()        # split_special_tokens is state on the shared Rust tokenizer
        self.chat_template = hf.chat_template
        if self.chat_template:
            _check_template(self.chat_template, source)
        self.eos_text = self._end_of_turn() if self.chat_template else hf.eos_token
        if self.eos_text is None:
            raise MiniGPTv2Error(f"the tokenizer from {source} has no eos token")
        self.eos_id = hf.convert_tokens_to_ids(self.eos_text)
        self.bos_id, self.unk_id = hf.bos_token_id, hf.unk_token_id
        self.pad_id = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
        self.special_ids = set(hf.all_special_ids) | {self.pad_id, self.eos_id}

    def _end_of_turn(self) -> str:
        """The special token the chat template writes right after an assistant message."""
        probe = "\ue000answer\ue001"
        text = self.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
                                        add_generation_prompt=False)
        after = text.split(probe, 1)[1].lstrip() if probe in text else ""
        for t in sorted(self.hf.all_special_tokens + [str(a) for a in self.hf.added_tokens_decoder.values()
                                                      if getattr(a, "special", False)], key=len, reverse=True):
            if t and after.startswith(t):
                return t
        raise MiniGPTv2Error(f"the chat template of {self.path} does not end an assistant turn with a special "
                             f"token (after the answer it writes {after[:30]!r}); use template 'llama2' or fix it")

    def __len__(self):
        return len(self.hf)

    def encode(self, text: str, template: bool = False) -> list[int]:
        """`template=True`: text the chat template produced (special tokens parsed); else user text (not)."""
        if not text:
            return []
        _check_unicode(text)
        with self._lock:
            return self.hf(text, add_special_tokens=False, split_special_tokens=not template).input_ids

    def decode(self, ids, **_) -> str:
        return self.hf.decode([int(i) for i in ids if 0 <= int(i) < len(self)], skip_special_tokens=True)

    def token_text(self, i: int) -> str | None:
        return None if i in self.special_ids else self.hf.decode([int(i)])

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if not self.chat_template:
            raise MiniGPTv2Error(f"the tokenizer from {self.path} has no chat template; use template 'llama2'")
        return _bounded(lambda: self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                            tokenize=False), self.path)

    def save(self, folder: Path) -> None:
        self.hf.save_pretrained(str(Path(folder) / "tokenizer"))


TEMPLATE_SECONDS = 2.0        # one chat-template rendering: a few messages take well under a millisecond


class _TemplateTimeout(Exception):
    pass


def _check_template(template, source) -> None:
    """Refuse what tracing cannot interrupt: `**` (a huge power runs in C, even while Jinja compiles the template,
    which folds constants). Lexing is linear in the template's length."""
    import jinja2

    for t in (template.values() if isinstance(template, dict) else [template]):
        try:
            if any(kind == "operator" and value == "**" for _, kind, value in jinja2.Environment().lex(t)):
                raise MiniGPTv2Error(f"the chat template of {source} uses the power operator `**`, which is refused "
                                     "(it can run for ever; SECURITY.md)")
        except jinja2.TemplateSyntaxError as e:
            raise MiniGPTv2Error(f"the chat template of {source} does not parse: {e}") from None


def _bounded(render, source):
    """render() with Python execution bounded to TEMPLATE_SECONDS: a trace function on this thread raises once the
    deadline has passed (Jinja compiles templates to Python, so every loop runs Python lines). Any failure of the
    template is a MiniGPTv2Error naming the folder."""
    deadline = time.monotonic() + TEMPLATE_SECONDS

    def trace(frame, event, arg):
        if time.monotonic() > deadline:
            raise _TemplateTimeout
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        return render()
    except _TemplateTimeout:
        raise MiniGPTv2Error(f"the chat template of {source} took more than {TEMPLATE_SECONDS:g} s to render "
                             "(refused; SECURITY.md)") from None
    except (RecursionError, MemoryError, OverflowError) as e:
        raise MiniGPTv2Error(f"the chat template of {source} failed: {type(e).__name__}") from None
    except Exception as e:
        import jinja2

        if isinstance(e, jinja2.TemplateError):
            raise MiniGPTv2Error(f"the chat template of {source} failed: {e}") from None
        raise
    finally:
        sys.settrace(previous)


def build_tokenizer(texts, out_file, vocab_size: int = 1024) -> Path:
    """Train a LLaMA-style SentencePiece BPE model (unk 0, bos 1, eos 2, byte fallback) on `texts` and write it to
    `out_file` (atomically). Used for the nano model (recipes/nano.py), for `minigptv2 train --preset` without
    --tokenizer (built from the training data) and by `minigptv2 data tokenizer`. `vocab_size` is an upper bound:
    a small corpus gives fewer pieces."""
    import sentencepiece as spm

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise MiniGPTv2Error("build_tokenizer needs some text")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, user_defined_symbols=SYMBOLS, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            split_digits=True, character_coverage=1.0, num_threads=1, add_dummy_prefix=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity", hard_vocab_limit=False,
            max_sentence_length=4096, minloglevel=2)
    except RuntimeError as e:           # e.g. a vocab_size below the required pieces
        raise MiniGPTv2Error(f"cannot build a tokenizer of {vocab_size} pieces from {len(texts)} texts: "
                             f"{str(e).strip().splitlines()[-1][:300]}") from None
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return out


def load_tokenizer(folder: str | Path):
    """Our model folder's tokenizer: `tokenizer/` (HF) or `tokenizer.model` (SentencePiece)."""
    d = Path(folder)
    if (d / "tokenizer").is_dir():
        return HFTokenizer(d / "tokenizer")
    if (d / "tokenizer.model").is_file():
        return Tokenizer(d / "tokenizer.model")
    raise MiniGPTv2Error(f"{d} has no tokenizer (tokenizer.model or tokenizer/)")


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:   # a lone surrogate (e.g. JSON "\ud800"): tokenizers cannot take it
        raise MiniGPTv2Error(f"the text is not valid Unicode ({e.reason} at position {e.start})") from None
