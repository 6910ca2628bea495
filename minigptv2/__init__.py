"""minigptv2: MiniGPT-v2 you can install, run, train, evaluate and serve.

    from minigptv2 import load, generate
    model, processor = load()                      # the embedded nano model
    [r] = generate(model, processor, ["scene.png"], ["[refer] red circle"])

    from minigptv2.llm import from_llm              # your own LLM (HF folder / .gguf) under a fresh ViT
    from minigptv2.checkpoint import export         # LoRA merged, standard HF folder for the LLM
"""
from minigptv2.boxes import Grounding, format_box, parse_boxes
from minigptv2.config import PRESETS, ModelConfig, preset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import Chat, Result, generate, stream

__all__ = ["load", "generate", "stream", "Chat", "Result", "Grounding", "parse_boxes", "format_box",
           "ModelConfig", "PRESETS", "preset", "MiniGPTv2Error", "NANO_DIR"]

from pathlib import Path

NANO_DIR = Path(__file__).parent / "assets" / "nano"


def load(model_dir=None, dtype="fp32", device=None, quantize=None):
    """Load a model folder (default: the embedded nano model). Returns (model, processor).
    dtype "fp32" | "bf16" | "fp16" (or a torch dtype); quantize "8bit" | "4bit" (bitsandbytes, CUDA only)."""
    from minigptv2.checkpoint import load as _load

    return _load(model_dir or NANO_DIR, dtype=dtype or "fp32", device=device, quantize=quantize)
