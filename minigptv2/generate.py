"""Generation: batched greedy / sampling through HF `generate(inputs_embeds=...)`, streaming, multi-turn chat.

    from minigptv2 import load, generate, Chat
    model, processor = load("minigptv2/assets/nano")
    [r] = generate(model, processor, ["scene.png"], ["[refer] red circle"])
    r.text, r.boxes                       # '{<12><40><38><71>}', [Grounding(box=(12, 40, 38, 71))]
    chat = Chat(model, processor, "scene.png"); chat.ask("[vqa] what color is the circle?")
    for piece in chat.stream("[identify] what is this {<12><40><38><71>}"): print(piece, end="")

Greedy is the default (as the official eval); sampling takes temperature / top_p / repetition_penalty (the
official demo uses 0.6 / 0.9 / 1.05). A batch of different images and prompts is left-padded (official
zero-vector padding is equivalent: padded positions are masked out), so batched and single runs agree.
A prompt that would not fit the context window with max_new_tokens is refused, never silently cut.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from transformers import TextIteratorStreamer

from minigptv2.boxes import Grounding, parse_boxes
from minigptv2.errors import MiniGPTv2Error
from minigptv2.images import load_image

# Sampling divides the float32 logits by the temperature: below this the quotient overflows to inf for logits as
# small as |3.4e38 * T| and sampling fails on NaN probabilities. Greedy is do_sample=False (temperature 0 to the
# server); a sampling temperature in (0, MIN_TEMPERATURE) is refused.
MIN_TEMPERATURE = 1e-5
MAX_TEMPERATURE = 2.0


@dataclass
class Result:
    text: str
    token_ids: list[int]
    boxes: list[Grounding] = field(default_factory=list)
    image_size: tuple[int, int] | None = None     # (W, H) of the original image

    def to_dict(self) -> dict:
        W, H = self.image_size or (None, None)
        return {"text": self.text, "token_ids": self.token_ids, "boxes": [b.to_dict(W, H) for b in self.boxes]}


@dataclass(frozen=True)
class GenSettings:
    """Generation settings of one request; requests with equal settings may share a batch.

    `temperature` is 0 (greedy) or in [MIN_TEMPERATURE, MAX_TEMPERATURE]; anything else raises MiniGPTv2Error."""
    max_new_tokens: int
    temperature: float = 0.0                  # 0 = greedy
    top_p: float = 1.0
    constrain_boxes: bool = True              # [refer] / [detection] / [grounding] answers: well-formed boxes only

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise MiniGPTv2Error(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        t = self.temperature
        if not (t == 0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):     # NaN fails both
            raise MiniGPTv2Error(f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], "
                                 f"got {t!r}")
        if not 0 < self.top_p <= 1:
            raise MiniGPTv2Error(f"top_p must be in (0, 1], got {self.top_p!r}")
        if t == 0:               # top_p means nothing when greedy: let such requests batch together
            object.__setattr__(self, "top_p", 1.0)

    def kwargs(self) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens, "do_sample": self.temperature > 0,
              "constrain_boxes": self.constrain_boxes}
        if kw["do_sample"]:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


def _gen_kwargs(processor, max_new_tokens, do_sample, temperature, top_p, repetition_penalty, logits_processor):
    if do_sample and not temperature > 0:
        raise MiniGPTv2Error(f"a sampling temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got "
                             f"{temperature!r} (greedy: do_sample=False)")
    s = GenSettings(max_new_tokens, temperature if do_sample else 0.0, top_p if do_sample else 1.0)
    kw = dict(max_new_tokens=s.max_new_tokens, do_sample=do_sample, num_beams=1, eos_token_id=processor.tok.eos_id,
              pad_token_id=processor.config.text_config.pad_token_id or 0, logits_processor=logits_processor)
    if repetition_penalty != 1.0:
        kw["repetition_penalty"] = repetition_penalty
    if do_sample:
        kw.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
    return kw


def _prepare(model, processor, images, conversations, max_new_tokens):
    """conversations[i] = (questions, answers) -> embeds, mask, per-row image sizes."""
    pil, ids = [], []
    for image, (questions, answers) in zip(images, conversations):
        img = load_image(image) if image is not None else None
        pil.append(img)
        p = processor.prompt_ids(questions, answers, has_image=img is not None)
        _check_context(processor, len(p), max_new_tokens)
        ids.append(p)
    batch = processor.generation_batch(ids, pil)
    dev = model.input_device                                 # inputs go where the model runs (CPU or GPU)
    pv = batch["pixel_values"].to(dev, model.dtype) if batch["pixel_values"] is not None else None
    embeds = model.embed(batch["input_ids"].to(dev), pv)
    sizes = [im.size if im is not None else None for im in pil]
    return embeds, batch["attention_mask"].to(dev), sizes


def _normalise(prompts) -> list[tuple[list[str], list[str]]]:
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(([p], []))
        else:   # a conversation: list of {"role": "user"|"assistant", "content": str}
            qs = [m["content"] for m in p if m["role"] == "user"]
            ans = [m["content"] for m in p if m["role"] == "assistant"]
            if not qs or p[-1]["role"] != "user" or len(ans) != len(qs) - 1:
                raise MiniGPTv2Error("a conversation must alternate user/assistant and end with a user message")
            out.append((qs, ans))
    return out


@torch.inference_mode()
def generate(model, processor, images, prompts, *, max_new_tokens: int = 300, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 0.9, repetition_penalty: float = 1.0,
             logits_processor=None, streamer=None, constrain_boxes: bool = False,
             compile=False) -> list[Result]:
    """One batched call: images[i] (path / bytes / PIL / None) with prompts[i] (instruction or conversation).
    `constrain_boxes`: rows asking [refer] write exactly one well-formed box, [detection] / [grounding] only
    well-formed boxes (constrained.py); off by default, as the official code. `compile`: a static KV cache and a
    compiled decode step (torch.compile; CUDA graphs on a GPU); the cache is sized to a bucket (CACHE_BUCKET) and
    the first call of each batch size and bucket compiles. A transformers `CompileConfig` instead of True chooses
    the backend / mode."""
    if len(images) != len(prompts) or not prompts:
        raise MiniGPTv2Error(f"need one image (or None) per prompt, got {len(images)} images, {len(prompts)} prompts")
    conversations = _normalise(prompts)
    if constrain_boxes:
        logits_processor = _with_box_constraints(processor, conversations, max_new_tokens, logits_processor)
    kw = _gen_kwargs(processor, max_new_tokens, do_sample, temperature, top_p, repetition_penalty, logits_processor)
    embeds, mask, sizes = _prepare(model, processor, images, conversations, max_new_tokens)
    if compile:
        kw.update(compile_config=_compile_config(compile),
                  past_key_values=_static_cache(model, processor, embeds.shape[1] + max_new_tokens))
    out = _lm_generate(model, inputs_embeds=embeds, attention_mask=mask, streamer=streamer, **kw)
    return [_result(processor, row, size) for row, size in zip(out.tolist(), sizes)]


# The smallest static KV cache; larger ones double (1024, 2048, ...) up to the context window. A compiled decode step
# has the shape of its cache, so every request in one bucket reuses one compiled step (tests/test_generate.py).
CACHE_BUCKET = 512


def _static_cache(model, processor, n_tokens: int):
    """An empty StaticCache for `n_tokens` (the longest prompt + max_new_tokens), rounded up to a bucket. A new
    one per call, as transformers' own `cache_implementation="static"` makes: on a GPU, a cache at a new address
    may make the CUDA graphs re-record for that call (not measured: no GPU run yet, BENCHMARKS.md "gpu")."""
    from transformers import StaticCache

    n = CACHE_BUCKET
    while n < n_tokens:
        n *= 2
    # _check_context has refused a prompt that does not fit the context window with its max_new_tokens
    return StaticCache(config=model.language_model.config, max_cache_len=min(n, processor.config.max_context_len))


def _compile_config(compile):
    from transformers import CompileConfig

    cc = compile if isinstance(compile, CompileConfig) else CompileConfig()
    cc._compile_all_devices = True          # transformers compiles by itself on GPUs only: here on every device
    return cc


def _lm_generate(model, **kw):
    import warnings

    with warnings.catch_warnings():   # `past_key_values` is renamed `cache` in newer transformers
        warnings.filterwarnings("ignore", ".*past_key_values", FutureWarning)
        return model.language_model.generate(**kw)


def _with_box_constraints(processor, conversations, max_new_tokens: int, logits_processor):
    from transformers import LogitsProcessorList

    from minigptv2.constrained import for_tasks
    from minigptv2.prompts import task_of

    boxes = for_tasks(processor, [task_of(qs[-1]) for qs, _ in conversations], max_new_tokens)
    if boxes is None:
        return logits_processor
    return LogitsProcessorList([*(logits_processor or []), *boxes])


def _check_context(processor, n_prompt: int, max_new_tokens: int) -> None:
    if n_prompt + max_new_tokens > processor.config.max_context_len:
        raise MiniGPTv2Error(f"prompt of {n_prompt} tokens + max_new_tokens {max_new_tokens} exceeds the "
                             f"context window of {processor.config.max_context_len} tokens")


def _result(processor, row: list[int], size) -> Result:
    """Generated ids (cut after the first EOS) -> Result with the cleaned text and parsed boxes."""
    eos = processor.tok.eos_id
    if eos in row:
        row = row[: row.index(eos) + 1]
    text = processor.decode_answer(row)
    return Result(text, row, parse_boxes(text), size)


def stream(model, processor, image, prompt, **kw):
    """Yield the answer text piece by piece as it is generated (one request)."""
    streamer = TextIteratorStreamer(processor.tok, skip_prompt=False, timeout=600)
    err: list[BaseException] = []

    def run():
        try:
            generate(model, processor, [image], [prompt], streamer=streamer, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            err.append(e)
            streamer.end()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    for piece in streamer:
        yield piece
    t.join()
    if err:
        raise err[0]


class Chat:
    """Multi-turn conversation about one image (or none). Earlier answers stay in the context."""

    def __init__(self, model, processor, image=None, **gen_kwargs):
        self.model, self.processor, self.image = model, processor, image
        self.gen_kwargs = gen_kwargs
        self.messages: list[dict] = []

    def ask(self, text: str, **kw) -> Result:
        msgs = self.messages + [{"role": "user", "content": text}]
        [r] = generate(self.model, self.processor, [self.image], [msgs], **{**self.gen_kwargs, **kw})
        self.messages = msgs + [{"role": "assistant", "content": r.text}]
        return r

    def stream(self, text: str, **kw):
        msgs = self.messages + [{"role": "user", "content": text}]
        pieces = []
        for p in stream(self.model, self.processor, self.image, msgs, **{**self.gen_kwargs, **kw}):
            pieces.append(p)
            yield p
        self.messages = msgs + [{"role": "assistant", "content": self.processor.decode_answer_text("".join(pieces))}]

    def reset(self, image=None):
        self.image, self.messages = image, []


# ---- image / prompt-prefix cache (one image, many questions) ---------------------------------------------------
class PrefixCache:
    """LRU for `generate_cached`, bounded by bytes: image content hash -> (prefix ids, image embeddings, KV cache
    of the prompt prefix `BOS BOS [INST] <Img> IMAGE`). One cache per model (entries are that model's tensors)."""

    def __init__(self, max_bytes: int = 1 << 30):
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.items: OrderedDict = OrderedDict()      # key -> (value, bytes)
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key][0]
        self.misses += 1
        return None

    def put(self, key, value, nbytes: int) -> None:
        if key in self.items:
            self.bytes -= self.items.pop(key)[1]
        if nbytes > self.max_bytes:                  # larger than the whole cache: not kept
            return
        self.items[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            self.bytes -= self.items.popitem(last=False)[1][1]


def _nbytes(*objs) -> int:
    """Bytes of the tensors in `objs` (tensors, or caches whose layers hold keys / values)."""
    n = 0
    for o in objs:
        if torch.is_tensor(o):
            n += o.numel() * o.element_size()
        else:
            for layer in getattr(o, "layers", []):
                n += sum(t.numel() * t.element_size() for t in (getattr(layer, "keys", None),
                                                                 getattr(layer, "values", None)) if torch.is_tensor(t))
    return n


@torch.inference_mode()
def generate_cached(model, processor, image, prompt, cache: PrefixCache, *, max_new_tokens: int = 300,
                    compile=False, **kw) -> Result:
    """One request like `generate([image], [prompt])`, reusing the image embeddings and the KV cache of the
    prompt prefix up to the end of the image tokens for later questions about the same image content. `compile` as
    in `generate`: the cached prefix is copied into a static KV cache that the compiled decode step continues."""
    import copy
    import hashlib
    import warnings

    from transformers import DynamicCache

    [(qs, ans)] = _normalise([prompt])
    lp = kw.pop("logits_processor", None)
    if kw.pop("constrain_boxes", False):
        lp = _with_box_constraints(processor, [(qs, ans)], max_new_tokens, lp)
    gkw = _gen_kwargs(processor, max_new_tokens, kw.pop("do_sample", False), kw.pop("temperature", 1.0),
                      kw.pop("top_p", 0.9), kw.pop("repetition_penalty", 1.0), lp)
    img = load_image(image)
    ids = processor.prompt_ids(qs, ans, has_image=True)
    _check_context(processor, len(ids), max_new_tokens)
    n = max(i for i, t in enumerate(ids) if t == processor.image_token_id) + 1     # the prefix ends with the image
    key = hashlib.sha256(f"{img.mode}{img.size}".encode() + img.tobytes()).hexdigest()
    hit = cache.get(key)
    dev = model.input_device                               # every tensor built here goes where the model runs
    if hit is None or hit[0] != ids[:n]:
        img_emb = model.get_image_features(processor.image(img)[None])
        kv = DynamicCache(config=model.language_model.config)
        with warnings.catch_warnings():   # `past_key_values` is renamed `cache` in newer transformers
            warnings.simplefilter("ignore", FutureWarning)
            model.language_model(inputs_embeds=model.embed(torch.tensor([ids[:n]], device=dev), image_embeds=img_emb),
                                 past_key_values=kv, use_cache=True)
        hit = (ids[:n], img_emb, kv)
        cache.put(key, hit, _nbytes(img_emb, kv))
    if compile:    # the prefix's keys / values fill positions 0..n-1 of a fresh static cache; the entry stays as is
        kv = _static_cache(model, processor, len(ids) + max_new_tokens)
        for i, layer in enumerate(hit[2].layers):
            kv.update(layer.keys, layer.values, i)
        gkw["compile_config"] = _compile_config(compile)
    else:
        kv = copy.deepcopy(hit[2])
    embeds = model.embed(torch.tensor([ids], device=dev), image_embeds=hit[1])
    mask = torch.ones(1, len(ids), dtype=torch.long, device=dev)
    out = _lm_generate(model, inputs_embeds=embeds, attention_mask=mask, past_key_values=kv, **gkw, **kw)
    return _result(processor, out[0].tolist(), img.size)
