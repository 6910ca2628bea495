"""How the server decodes. Its engine reuses the image embedding and the prompt-prefix KV cache for a follow-up turn about the same
image (the OpenAI messages resent with the same image): same answers as without the cache, and a cache hit."""
from PIL import Image

from helpers import tiny_model
from minigptv2 import generate
from minigptv2.generate import GenSettings
from minigptv2.serve.engine import Engine


def test_follow_up_turn_hits_the_prefix_cache_with_the_same_answers(tmp_path):
    model, proc = tiny_model(tmp_path)
    img = Image.new("RGB", (40, 30), "red")
    first = [{"role": "user", "content": "[vqa] what color is it?"}]
    engine = Engine(model, proc, max_batch=1, batch_wait_ms=0, prefix_cache_bytes=1 << 26)
    try:
        a = engine.submit(img, first, GenSettings(6)).future.result(timeout=120)
        follow = first + [{"role": "assistant", "content": a.text}, {"role": "user", "content": "[refer] the shape"}]
        b = engine.submit(img.copy(), follow, GenSettings(6)).future.result(timeout=120)
        streamed = list(engine.stream(img.copy(), follow, GenSettings(6)))
    finally:
        engine.close()
    [a0] = generate(model, proc, [img], [first], max_new_tokens=6, constrain_boxes=True)
    [b0] = generate(model, proc, [img], [follow], max_new_tokens=6, constrain_boxes=True)
    assert a.token_ids == a0.token_ids and b.token_ids == b0.token_ids
    assert streamed[-1].token_ids == b0.token_ids
    cache = engine.prefix_cache
    assert cache.misses == 1 and cache.hits == 2 and 0 < cache.bytes <= cache.max_bytes


def test_box_constraints_are_on_by_default_and_can_be_turned_off(tmp_path):
    """With the real (random tiny) model: a [refer] answer is exactly one well-formed box by default; with
    constrain_boxes false the request decodes as the official code (plain generate)."""
    from minigptv2.boxes import parse_boxes

    model, proc = tiny_model(tmp_path)
    img = Image.new("RGB", (40, 30), "red")
    conv = [{"role": "user", "content": "[refer] the red circle"}]
    engine = Engine(model, proc, max_batch=1, batch_wait_ms=0)
    try:
        on = engine.submit(img, conv, GenSettings(20)).future.result(timeout=120)
        off = engine.submit(img, conv, GenSettings(20, constrain_boxes=False)).future.result(timeout=120)
    finally:
        engine.close()
    [plain] = generate(model, proc, [img], [conv], max_new_tokens=20)
    assert len(parse_boxes(on.text)) == 1 and on.text.strip().startswith("{")
    assert off.token_ids == plain.token_ids and on.token_ids != plain.token_ids


def test_the_embedded_model_says_what_it_knows():
    """/v1/models and the web demo state the nano model's scope (coloured shapes, not photos or chat)."""
    from fastapi.testclient import TestClient

    import minigptv2
    from minigptv2.config import NANO_SCOPE
    from minigptv2.serve.server import create_app

    model, proc = minigptv2.load()
    engine = Engine(model, proc, "nano")
    try:
        client = TestClient(create_app(engine))
        [entry] = client.get("/v1/models").json()["data"]
        assert entry["description"] == NANO_SCOPE and "photos" in NANO_SCOPE
        assert "coloured shapes" in client.get("/").text or "coloured shapes" in client.get("/config").text
    finally:
        engine.close()


def test_compiled_engine_uses_the_prefix_cache_and_compiles_in_warm_up_only(tmp_path, monkeypatch):
    """With `compile` (as the server on a GPU) a follow-up turn still hits the prefix cache, with the eager answers,
    and after `warm_up()` requests at the default max tokens (300) or at a few compile nothing more: the warm-up
    compiled the decode steps of both cache buckets (here 64-token buckets, so that 300 new tokens need a larger one
    than a few)."""
    import importlib

    import torch
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    monkeypatch.setattr(importlib.import_module("minigptv2.generate"), "CACHE_BUCKET", 64)
    model, proc = tiny_model(tmp_path)
    img = Image.new("RGB", (40, 30), "red")
    first = [{"role": "user", "content": "[refer] red circle"}]        # one box: a short answer
    torch._dynamo.reset()
    engine = Engine(model, proc, max_batch=1, batch_wait_ms=0, prefix_cache_bytes=1 << 26,
                    compile=CompileConfig(backend="eager"))
    try:
        engine.warm_up()
        compiled = counters["stats"]["unique_graphs"]
        a = engine.submit(img, first, GenSettings(300)).future.result(timeout=120)
        follow = first + [{"role": "assistant", "content": a.text}, {"role": "user", "content": "[refer] the square"}]
        b = engine.submit(img.copy(), follow, GenSettings(300)).future.result(timeout=120)
        streamed = list(engine.stream(img.copy(), follow, GenSettings(300)))
        text_only = engine.submit(None, [{"role": "user", "content": "hello"}], GenSettings(300)).future.result(120)
        short = engine.submit(img.copy(), [{"role": "user", "content": "[caption] describe"}],
                              GenSettings(6)).future.result(timeout=120)
    finally:
        engine.close()
    assert compiled >= 1 and counters["stats"]["unique_graphs"] == compiled
    [a0] = generate(model, proc, [img], [first], max_new_tokens=300, constrain_boxes=True)
    [b0] = generate(model, proc, [img], [follow], max_new_tokens=300, constrain_boxes=True)
    [t0] = generate(model, proc, [None], ["hello"], max_new_tokens=300, constrain_boxes=True)
    assert (a.token_ids, b.token_ids, streamed[-1].token_ids, text_only.token_ids) == \
        (a0.token_ids, b0.token_ids, b0.token_ids, t0.token_ids)
    [s0] = generate(model, proc, [img], ["[caption] describe"], max_new_tokens=6)
    assert short.token_ids == s0.token_ids and len(s0.token_ids) > 1      # decoded: went through the compiled step
    cache = engine.prefix_cache      # misses: the warm-up's blank image, then this image; hits: the rest
    assert cache.misses == 2 and cache.hits == 4
