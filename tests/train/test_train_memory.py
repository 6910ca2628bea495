"""Training memory like the official: gradient checkpointing works with LoRA and the frozen ViT (same gradients),
and frozen parts can be held in the compute dtype while the trainable ones stay fp32 (train() does it on a GPU)."""
import torch
from PIL import Image

from helpers import tiny_model
from minigptv2.train.loop import loss_sum


def _grads(model, batch, checkpointing: bool) -> dict:
    model.zero_grad()
    model.visual_encoder.gradient_checkpointing = checkpointing
    if checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.language_model.gradient_checkpointing_disable()
    s, n = loss_sum(model, batch, torch.float32)
    (s / n).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_gives_the_same_lora_and_projector_gradients(tmp_path):
    model, proc = tiny_model(tmp_path)
    model.train()
    with torch.no_grad():                      # a trained-looking adapter (B is zero at init)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ex = [proc.training_example([("[vqa] color?", "red")], image=Image.new("RGB", (40, 30), "red")),
          proc.training_example([("[refer] the circle", "{<1><2><3><4>}")], image=Image.new("RGB", (30, 40), "blue"))]
    batch = proc.collate(ex)
    plain, ckpt = _grads(model, batch, False), _grads(model, batch, True)
    assert any("lora_A" in k for k in plain) and "llama_proj.weight" in plain
    for k in plain:
        assert ckpt[k].abs().sum() > 0, k
        torch.testing.assert_close(ckpt[k], plain[k], atol=1e-6, rtol=1e-5)


def test_cast_for_training_holds_frozen_parts_in_the_compute_dtype(tmp_path):
    model, proc = tiny_model(tmp_path)
    model.cast_for_training(torch.bfloat16)
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    batch = proc.collate([proc.training_example([("[vqa] color?", "red")], image=Image.new("RGB", (40, 30), "red"))])
    s, n = loss_sum(model, batch, torch.bfloat16)
    s.backward()
    assert torch.isfinite(s) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_place_for_training_casts_before_the_move_and_keeps_cpu_runs_in_fp32(tmp_path, monkeypatch):
    """train() on a GPU: the frozen parts are already in the compute dtype when the model moves (no fp32 7B on the
    GPU); the "meta" device stands in for the GPU. On CPU every weight is fp32, even from a half-precision folder."""
    from minigptv2.train.loop import place_for_training

    model, _ = tiny_model(tmp_path)
    real_to, frozen_at_move = model.to, []
    monkeypatch.setattr(model, "to", lambda *a, **k: frozen_at_move.append(
        {p.dtype for p in model.parameters() if not p.requires_grad}) or real_to(*a, **k))
    place_for_training(model, torch.device("meta"), torch.bfloat16)
    assert frozen_at_move == [{torch.bfloat16}] and model.training
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}

    half, _ = tiny_model(tmp_path / "half")
    half.to(torch.bfloat16)
    place_for_training(half, torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.float32}
