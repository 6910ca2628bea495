"""Every generation path puts every tensor it builds on the model's device (CUDA where a GPU exists, else CPU).

A forward pre-hook on the model, its vision tower and its language model fails the test as soon as any tensor
argument lives on another device than that module's weights: plain, batched, streamed, compiled (static cache),
cached, constrained and chat generation (asked and streamed), transformers' own generate, the synthetic eval,
IconVQA scoring, a training step and a whole `train()` run (which builds its own batches on its device).
"""
import importlib

import pytest
import torch
from PIL import Image

from helpers import tiny_model
from minigptv2.constrained import box_constraint

G = importlib.import_module("minigptv2.generate")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _tensors(x):
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


def _watch(model) -> tuple[list, list]:
    """Forward pre-hooks that fail on a tensor argument off the module's device; (names seen, hook handles)."""
    seen = []

    def check(module, args, kwargs):
        want = next(module.parameters()).device
        for t in _tensors((args, kwargs)):
            assert t.device == want, f"{type(module).__name__} got a tensor on {t.device}, weights on {want}"
        seen.append(type(module).__name__)

    return seen, [m.register_forward_pre_hook(check, with_kwargs=True)
                  for m in (model, model.visual_encoder, model.language_model)]


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    model, proc = tiny_model(tmp_path_factory.mktemp("dev"))
    model.to(DEVICE)
    seen, hooks = _watch(model)
    yield model, proc, seen
    for h in hooks:
        h.remove()


IMG = Image.new("RGB", (40, 30), "red")


def test_generation_paths_keep_inputs_on_the_model_device(placed):
    model, proc, seen = placed
    seen.clear()
    G.generate(model, proc, [IMG], ["[refer] red circle"], max_new_tokens=4)
    G.generate(model, proc, [IMG, None], ["[vqa] color?", "hello"], max_new_tokens=4)
    G.generate(model, proc, [IMG, IMG], ["[refer] a", "[detection] b"], max_new_tokens=6, constrain_boxes=True)
    G.generate(model, proc, [IMG], ["[refer] a"], max_new_tokens=6,
               logits_processor=box_constraint(proc, 6, single=True))
    G.generate(model, proc, [IMG], ["[vqa] color?"], max_new_tokens=4, do_sample=True, temperature=0.7)
    assert "".join(G.stream(model, proc, IMG, "[caption] describe", max_new_tokens=4)) is not None
    from transformers import CompileConfig      # dynamo without inductor's code generation: seconds on CPU

    G.generate(model, proc, [IMG, None], ["[vqa] color?", "hello"], max_new_tokens=3,
               compile=CompileConfig(backend="eager"))
    chat = G.Chat(model, proc, IMG, max_new_tokens=4)
    chat.ask("[vqa] color?")
    assert "".join(chat.stream("and the shape?")) is not None
    cache = G.PrefixCache()
    for q in ("[vqa] color?", "[refer] red"):
        G.generate_cached(model, proc, IMG, q, cache, max_new_tokens=4)
    assert cache.hits == 1
    inputs = proc(images=[IMG], text=[proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "[refer] red"}]}])])
    model.generate(**{k: v.to(DEVICE) for k, v in inputs.items()}, max_new_tokens=3, do_sample=False)
    assert {"MiniGPTv2ForConditionalGeneration", "EVAViT"} <= set(seen) and \
        any(name.endswith("ForCausalLM") for name in seen)


@pytest.mark.skipif(DEVICE != "cuda", reason="inductor and CUDA graphs: where a GPU exists (scripts/gpu_check.sh)")
def test_compiled_decode_on_a_gpu_gives_the_eager_ids(placed):
    """The real compiled step (transformers' default CompileConfig: inductor, CUDA graphs) in fp32 gives the eager
    greedy ids, batched and after the prefix cache. On CPU the compile tests use dynamo's eager backend."""
    model, proc, _ = placed
    qs = ["[refer] red circle", "[caption] describe"]
    eager = [r.token_ids for r in G.generate(model, proc, [IMG, IMG], qs, max_new_tokens=8)]
    for _ in range(2):                                     # the second call replays the recorded graphs
        assert [r.token_ids for r in G.generate(model, proc, [IMG, IMG], qs, max_new_tokens=8, compile=True)] == eager
    cache = G.PrefixCache()
    for q in qs:
        [alone] = G.generate(model, proc, [IMG], [q], max_new_tokens=8)
        assert G.generate_cached(model, proc, IMG, q, cache, max_new_tokens=8, compile=True).token_ids == \
            alone.token_ids
    assert cache.hits == 1


def test_eval_scorers_and_training_step_keep_inputs_on_the_model_device(placed, tmp_path):
    from minigptv2.eval.run import Item, choice_losses
    from minigptv2.eval.synthetic import run_synthetic
    from minigptv2.train.loop import loss_sum
    from minigptv2.synthetic import write_synthetic

    model, proc, seen = placed
    write_synthetic(tmp_path / "s", n=2, seed=3, max_objects=2)
    run_synthetic(model, proc, tmp_path / "s", limit=2, batch_size=4, progress=False)
    IMG.save(tmp_path / "i.png")
    items = [Item("q1", str(tmp_path / "i.png"), "[vqa] which?", "vqa", {"choices": ["a", "bb"]})]
    assert len(choice_losses(model, proc, items, progress=False)[0]) == 2
    ex = [proc.training_example([("[vqa] color?", "red")], image=IMG), proc.training_example([("hi", "there")])]
    batch = {k: v.to(DEVICE) if v is not None else None for k, v in proc.collate(ex).items()}
    loss, n = loss_sum(model, batch, torch.float32)
    loss.backward()
    assert n > 0 and torch.isfinite(loss)


def test_a_train_run_keeps_its_batches_on_the_model_device(tmp_path):
    """train() builds its batches from the mixture (images, ids, masks, labels) and moves them itself."""
    from minigptv2.data.datasets import load_mixture
    from minigptv2.synthetic import write_synthetic
    from minigptv2.train.batches import Mixture
    from minigptv2.train.config import TrainConfig
    from minigptv2.train.loop import train

    model, proc = tiny_model(tmp_path / "m")
    seen, hooks = _watch(model)
    write_synthetic(tmp_path / "s", n=4, seed=1, max_objects=2)
    tc = TrainConfig(steps=1, batch_size=2, lr=1e-3, min_lr=1e-4, warmup_lr=1e-4, warmup_steps=0, precision="fp32")
    try:
        train(model, proc, Mixture(load_mixture(tmp_path / "s" / "mixture.json"), seed=0), tc, tmp_path / "run",
              progress=False, device=DEVICE)
    finally:
        for h in hooks:
            h.remove()
    assert next(model.parameters()).device.type == DEVICE and "MiniGPTv2ForConditionalGeneration" in seen
