"""The embedded default model ("nano") and the exact recipe that reproduces its committed weights.

    python -m minigptv2.nano --work runs/nano          # synth data, tokenizer, train, evaluate, ~1 h on 2 CPU cores
    python -m minigptv2.nano --work runs/nano --install  # ...and copy the result to minigptv2/assets/nano

No pretrained ViT exists offline, so the tiny EVA ViT is trained together with the rest on synthetic scenes
(synthetic.py). The tokenizer is a SentencePiece BPE model we train on the synthetic texts, with single
pieces for the 0..100 coordinates, the task identifiers and the template markers, and byte fallback so any
text can be typed.
"""
from __future__ import annotations

import io
from pathlib import Path

from minigptv2.errors import MiniGPTv2Error

SYMBOLS = ([f"<{i}>" for i in range(101)] +
           ["[INST]", "[/INST]", "<Img>", "</Img>", "<ImageHere>", "[vqa]", "[caption]", "[grounding]", "[refer]",
            "[identify]", "[detection]", "<p>", "</p>", "<delim>", "{", "}", "$$"])


def build_tokenizer(texts, out_file, vocab_size: int = 1024) -> Path:
    """Train a LLaMA-style SentencePiece BPE model (unk 0, bos 1, eos 2, byte fallback) on `texts`."""
    import sentencepiece as spm

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise MiniGPTv2Error("build_tokenizer needs some text")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, user_defined_symbols=SYMBOLS, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        split_digits=True, character_coverage=1.0, num_threads=1, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", hard_vocab_limit=False,
        max_sentence_length=4096, minloglevel=2)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return out
