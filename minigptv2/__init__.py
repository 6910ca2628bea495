"""minigptv2: MiniGPT-v2 you can install, run, train, evaluate and serve, as a transformers model.

    import minigptv2                                # registers "minigptv2" with transformers' Auto classes
    from transformers import AutoModelForImageTextToText, AutoProcessor
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype="auto", device_map="auto")
    processor = AutoProcessor.from_pretrained(folder)

    from minigptv2 import load, generate            # the short forms
    model, processor = load()                       # the embedded nano model
    [r] = generate(model, processor, ["scene.png"], ["[refer] red circle"])

Importing is cheap: `import minigptv2` (and so `minigptv2 --help`) loads neither torch nor transformers. The names
of `__all__` are looked up on first use (`__getattr__`, PEP 562), and the registration with transformers' Auto
classes (`register()`) waits for transformers:

* if transformers is already imported, `import minigptv2` registers at once;
* otherwise a finder on `sys.meta_path` (`_RegisterOnImport`) watches the imports of `transformers` and of the
  `minigptv2.*` modules, calls `register()` as soon as one of them ends with transformers imported and none of them
  still running, then leaves `sys.meta_path`. So `import transformers` (or `from transformers import AutoConfig`)
  returns with minigptv2 registered, and so does a `minigptv2.*` import that brought transformers in. Waiting for
  the `minigptv2.*` imports is needed because the first import of transformers often comes from one of them
  (config.py starts with `from transformers import ...`), and `register()` imports config.py, model.py and
  processor.py: it runs once they can be complete.
* if `register()` raises, the import that ran it raises, and the finder stays to try again at the next such
  import; `importlib.reload(minigptv2)` keeps the one finder;
* the finder waits for the imports of every thread (registering under another thread's half-done import could
  deadlock on the import locks). Another thread's `import transformers` meanwhile waits for the import lock of
  transformers, which is held until the registration is done unless a `minigptv2.*` import brought transformers in.

A submodule import never rebinds a public name: after `import minigptv2.generate`, `minigptv2.generate` is still
the function (`_Package`).
"""
import contextlib
import importlib
import sys
import types
from pathlib import Path

__all__ = ["load", "generate", "stream", "Chat", "Result", "Grounding", "parse_boxes", "format_box",
           "MiniGPTv2Config", "MiniGPTv2VisionConfig", "MiniGPTv2ForConditionalGeneration", "MiniGPTv2Processor",
           "MiniGPTv2ImageProcessor", "PRESETS", "preset", "MiniGPTv2Error", "NANO_DIR"]

NANO_DIR = Path(__file__).parent / "assets" / "nano"

_LAZY = {   # public name -> the module that defines it
    **dict.fromkeys(["generate", "stream", "Chat", "Result"], "minigptv2.generate"),
    **dict.fromkeys(["Grounding", "parse_boxes", "format_box"], "minigptv2.boxes"),
    **dict.fromkeys(["MiniGPTv2Config", "MiniGPTv2VisionConfig", "PRESETS", "preset"], "minigptv2.config"),
    "MiniGPTv2ForConditionalGeneration": "minigptv2.model",
    **dict.fromkeys(["MiniGPTv2Processor", "MiniGPTv2ImageProcessor"], "minigptv2.processor"),
    "MiniGPTv2Error": "minigptv2.errors",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This module's class: the import system sets `minigptv2.X` to each submodule X it imports, which would make
    `minigptv2.generate` the module minigptv2/generate.py; a public name keeps its object instead."""

    def __setattr__(self, name, value):
        if not (name in _LAZY and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def register() -> None:
    """Make AutoConfig / AutoModelForImageTextToText / AutoProcessor know `model_type: "minigptv2"` (done on import,
    or when transformers is imported: the module docstring)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

    from minigptv2.config import MiniGPTv2Config, MiniGPTv2VisionConfig
    from minigptv2.model import MiniGPTv2ForConditionalGeneration
    from minigptv2.processor import MiniGPTv2ImageProcessor, MiniGPTv2Processor

    AutoConfig.register("minigptv2", MiniGPTv2Config, exist_ok=True)
    AutoConfig.register("minigptv2_vision", MiniGPTv2VisionConfig, exist_ok=True)
    AutoModelForImageTextToText.register(MiniGPTv2Config, MiniGPTv2ForConditionalGeneration, exist_ok=True)
    AutoModel.register(MiniGPTv2Config, MiniGPTv2ForConditionalGeneration, exist_ok=True)    # harnesses that use it
    AutoImageProcessor.register(MiniGPTv2Config, MiniGPTv2ImageProcessor, exist_ok=True)
    AutoProcessor.register(MiniGPTv2Config, MiniGPTv2Processor, exist_ok=True)


class _RegisterOnImport:
    """The `sys.meta_path` finder of the module docstring: it finds `transformers` and `minigptv2.*` through the
    finders after it, and gives their specs a `_SettleAfter` loader."""

    def __init__(self):
        self.running = set()        # the imports it sees that are under way, and "register()" while that runs

    def find_spec(self, name, path=None, target=None):
        if name != "transformers" and not name.startswith(__name__ + "."):
            return None
        try:
            rest = sys.meta_path[sys.meta_path.index(self) + 1:]
        except ValueError:          # another thread has just registered and removed it
            return None
        for finder in rest:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _SettleAfter(spec.loader, self)
                return spec
        return None

    def settle(self) -> None:
        """register() and leave sys.meta_path if transformers is imported and no import it sees is under way."""
        if self.running or "transformers" not in sys.modules:
            return
        self.running.add("register()")      # the imports register() makes do not settle again
        try:
            register()
        finally:
            self.running.discard("register()")
        with contextlib.suppress(ValueError):   # another thread has removed it
            sys.meta_path.remove(self)


class _SettleAfter:
    """A module's loader, wrapped: the module runs with its own loader, then the finder settles."""

    def __init__(self, loader, finder: _RegisterOnImport):
        self.loader, self.finder = loader, finder

    def __getattr__(self, name):                # get_code (python -m), get_source ...: the module's own
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.finder.running.add(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.running.discard(module.__name__)
        self.finder.settle()


def load(model_dir=None, dtype="fp32", device=None, quantize=None, merge_lora=None, device_map=None):
    """(model, processor) from a model folder (default: the embedded nano model, which knows coloured shapes on
    plain backgrounds only: it was not trained on photos or for general chat). dtype "fp32" | "bf16" | "fp16" |
    "auto" (as stored); device "cpu" | "cuda" ...; device_map "auto" spreads a model over GPUs / CPU; quantize
    "8bit" | "4bit" (bitsandbytes, CUDA only); a LoRA adapter in the folder is merged unless merge_lora=False."""
    from minigptv2.checkpoint import load as _load

    return _load(model_dir or NANO_DIR, dtype=dtype or "fp32", device=device, quantize=quantize,
                 merge_lora=merge_lora, device_map=device_map)


if "transformers" in sys.modules:
    register()
elif not any(type(f).__module__ == __name__ for f in sys.meta_path):     # one already there after a reload
    sys.meta_path.insert(0, _RegisterOnImport())
