"""What each step trains on (minigptv2/train/batches.py): the mixture's draws, micro-batches of similar lengths,
and the frozen-ViT cache, which changes no loss and no weight.
"""
import contextlib

import pytest
import torch

from minigptv2 import checkpoint as ckpt
from minigptv2.config import preset
from minigptv2.data.datasets import load_mixture
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import Tokenizer
from minigptv2.train.batches import Mixture, VisionCache, make_batch, make_batches
from minigptv2.train.config import TrainConfig
from minigptv2.train.loop import loss_sum, train
from train_helpers import (BATCH, STEPS, args, assert_same_weights, data, losses, one_thread,  # noqa: F401
                          ref, run_main)


def test_mixture_has_text_only_micro_batches(data):
    """The torchrun tests (test_distributed.py) only prove the text-only fix if some rank's micro-batch has no image."""
    mix = Mixture(load_mixture(data["mix"]), seed=42)
    half = BATCH // 2
    assert any(all(mix.draw(s, r * half + j).image is None for j in range(half))
               for s in range(STEPS) for r in range(2))


def test_micro_batches_group_similar_lengths(data, ref):
    model, proc = ckpt.load(ref / "final")
    mix = Mixture(load_mixture(data["synth"] / "mixture.json"), seed=3)
    samples = [mix.draw(0, j) for j in range(12)]
    whole = make_batch(proc, samples, chat_template=True)
    parts = make_batches(proc, samples, 3, chat_template=True)
    assert [b["input_ids"].shape[0] for b in parts] == [3, 3, 3, 3]
    lengths = [int(n) for b in parts for n in b["attention_mask"].sum(1)]
    assert lengths == sorted(int(n) for n in whole["attention_mask"].sum(1))     # every sample once, shortest first
    assert sum(b["input_ids"].numel() for b in parts) < whole["input_ids"].numel()   # less padding
    with torch.no_grad():
        s_whole, n_whole = loss_sum(model, whole, torch.float32)
        sums = [loss_sum(model, b, torch.float32) for b in parts]
    assert sum(n for _, n in sums) == n_whole
    assert float(sum(s for s, _ in sums)) == pytest.approx(float(s_whole), rel=1e-5)


@contextlib.contextmanager
def vit_calls():
    """Records the batch size of every call of the vision tower (MiniGPTv2.vision_features) inside the block."""
    calls = []
    orig = MiniGPTv2ForConditionalGeneration.vision_features

    def counted(self, pixel_values):
        calls.append(pixel_values.shape[0])
        return orig(self, pixel_values)

    MiniGPTv2ForConditionalGeneration.vision_features = counted
    try:
        yield calls
    finally:
        MiniGPTv2ForConditionalGeneration.vision_features = orig


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cache_vision_is_exact(data, ref, tmp_path, precision):
    """The frozen-ViT cache changes nothing: the same losses and final weights, bit for bit, as recomputing."""
    if precision == "fp32":
        plain = ref
    else:
        plain = tmp_path / "plain"
        run_main(args(data, plain, "--precision", precision))
    out = tmp_path / "cached"
    with vit_calls() as calls:
        run_main(args(data, out, "--cache-vision", "--precision", precision))
    assert losses(out) == losses(plain)
    assert_same_weights(out / "final", plain / "final")
    assert 0 < sum(calls) <= 8                   # each of the 8 scene images went through the ViT at most once


def test_vision_cache_refuses_a_trainable_vit_and_fsdp(data, tmp_path):
    with pytest.raises(MiniGPTv2Error, match="cache_vision needs a frozen ViT"):
        run_main(args(data, tmp_path / "a", "--cache-vision", "--trainable",
                      '{"vit": "full", "projector": "full", "llm": "lora"}'))
    with pytest.raises(MiniGPTv2Error, match="does not work with --fsdp"):
        run_main(args(data, tmp_path / "b", "--cache-vision", "--fsdp"))


def test_vision_cache_carries_over_between_stages(data, tmp_path):
    """nano.run hands one cache from stage to stage: the second stage sends no image through the ViT again and
    ends bit-identical to the same stage with a cache of its own; a cache made for another model is refused."""
    from minigptv2.processor import build_processor

    cfg = preset("tiny")
    cfg.text_config.vocab_size = len(Tokenizer(data["tok"]))
    tc = TrainConfig(steps=3, batch_size=4, lr=3e-3, min_lr=1e-4, warmup_lr=1e-4, warmup_steps=1, seed=1,
                       precision="fp32", save_every=10**6, cache_vision=True)
    mix = load_mixture(data["mix"])

    def two_stages(shared: bool):
        torch.manual_seed(0)
        model = MiniGPTv2ForConditionalGeneration(cfg)
        proc = build_processor(Tokenizer(data["tok"]), cfg)
        cache = VisionCache(model, proc, torch.float32, torch.device("cpu")) if shared else None
        train(model, proc, Mixture(mix, 1), tc, tmp_path / f"{shared}1", progress=False, cache=cache)
        seen = len(cache.store) if shared else 0
        with vit_calls() as calls:
            train(model, proc, Mixture(mix, 2), tc, tmp_path / f"{shared}2", progress=False, cache=cache)
        return model, proc, seen, sum(calls), len(cache.store) if shared else 0

    own, _, _, own_calls, _ = two_stages(shared=False)
    shared, proc, seen, shared_calls, total = two_stages(shared=True)
    # only the images stage 1 had not drawn go through the ViT in stage 2, and stage 1 drew some of stage 2's
    assert seen > 0 and shared_calls == total - seen < own_calls
    assert losses(tmp_path / "True2") == losses(tmp_path / "False2")
    assert_same_weights(tmp_path / "True2" / "final", tmp_path / "False2" / "final")
    other = VisionCache(MiniGPTv2ForConditionalGeneration(cfg), proc, torch.float32, torch.device("cpu"))
    with pytest.raises(MiniGPTv2Error, match="made for another model"):
        train(shared, proc, Mixture(mix, 3), tc, tmp_path / "x", progress=False, cache=other)
