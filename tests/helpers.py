"""Shared test builders: a tiny tokenizer and a tiny random model (seconds on CPU)."""
from pathlib import Path

import torch

from minigptv2.config import tiny
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.tokenizers import build_tokenizer
from minigptv2.processor import build_processor
from minigptv2.tokenizers import Tokenizer

WORDS = ("what color is the red green blue yellow purple circle square triangle shape object how many shapes are "
         "there a an and of in this image where locate describe location give me one two three yes no it").split()


def tiny_tokenizer(tmp: Path) -> Path:
    f = tmp / "tok.model"
    if not f.exists():
        import random

        rng = random.Random(0)
        lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(400)]
        lines += ["[refer] red circle {<12><40><38><71>}", "<p>blue square</p> {<1><2><3><4>}<delim>{<5><6><7><8>}"]
        build_tokenizer(lines, f, vocab_size=512)
    return f


def tiny_model(tmp: Path, seed: int = 0, **cfg_overrides):
    tok = Tokenizer(tiny_tokenizer(tmp))
    cfg = tiny()
    cfg.text_config.vocab_size = len(tok)
    for k, v in cfg_overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    model = MiniGPTv2ForConditionalGeneration(cfg).eval()
    model.set_trainable(cfg.trainable)              # tiny has LoRA: attached as a training run would
    return model, build_processor(tok, cfg)
