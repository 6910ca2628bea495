"""minigptv2: MiniGPT-v2 you can install, run, train, evaluate and serve, as a transformers model.

    import minigptv2                                # registers "minigptv2" with transformers' Auto classes
    from transformers import AutoModelForImageTextToText, AutoProcessor
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype="auto", device_map="auto")
    processor = AutoProcessor.from_pretrained(folder)

    from minigptv2 import load, generate            # the short forms
    model, processor = load()                       # the embedded nano model
    [r] = generate(model, processor, ["scene.png"], ["[refer] red circle"])
"""
from pathlib import Path

from minigptv2.boxes import Grounding, format_box, parse_boxes
from minigptv2.config import PRESETS, MiniGPTv2Config, MiniGPTv2VisionConfig, preset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import Chat, Result, generate, stream
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import MiniGPTv2ImageProcessor, MiniGPTv2Processor

__all__ = ["load", "generate", "stream", "Chat", "Result", "Grounding", "parse_boxes", "format_box",
           "MiniGPTv2Config", "MiniGPTv2VisionConfig", "MiniGPTv2ForConditionalGeneration", "MiniGPTv2Processor",
           "MiniGPTv2ImageProcessor", "PRESETS", "preset", "MiniGPTv2Error", "NANO_DIR"]

NANO_DIR = Path(__file__).parent / "assets" / "nano"


def register() -> None:
    """Make AutoConfig / AutoModelForImageTextToText / AutoProcessor know `model_type: "minigptv2"` (done on import)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    AutoConfig.register("minigptv2", MiniGPTv2Config, exist_ok=True)
    AutoConfig.register("minigptv2_vision", MiniGPTv2VisionConfig, exist_ok=True)
    AutoModelForImageTextToText.register(MiniGPTv2Config, MiniGPTv2ForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(MiniGPTv2Config, MiniGPTv2ImageProcessor, exist_ok=True)
    AutoProcessor.register(MiniGPTv2Config, MiniGPTv2Processor, exist_ok=True)


register()


def load(model_dir=None, dtype="fp32", device=None, quantize=None, merge_lora=None, device_map=None):
    """(model, processor) from a model folder (default: the embedded nano model, which knows coloured shapes on
    plain backgrounds only: it was not trained on photos or for general chat). dtype "fp32" | "bf16" | "fp16" |
    "auto" (as stored); device "cpu" | "cuda" ...; device_map "auto" spreads a model over GPUs / CPU; quantize
    "8bit" | "4bit" (bitsandbytes, CUDA only); a LoRA adapter in the folder is merged unless merge_lora=False."""
    from minigptv2.checkpoint import load as _load

    return _load(model_dir or NANO_DIR, dtype=dtype or "fp32", device=device, quantize=quantize,
                 merge_lora=merge_lora, device_map=device_map)
