import pytest
import torch

from helpers import tiny_model
from minigptv2.config import PRESETS, ModelConfig, preset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.vit import interpolate_pos_embed


def test_presets():
    c = preset("official-7b")
    assert (c.vision.width, c.vision.depth, c.vision.heads, c.vision.mlp_dim, c.vision.image_size) == (1408, 39, 16, 6144, 448)
    assert c.num_image_tokens == 256 and c.vision.width * c.group == 5632
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.targets) == (64, 16, 0.05, ("q_proj", "v_proj"))
    assert c.trainable == {"vit": "frozen", "projector": "full", "llm": "lora"}
    assert ModelConfig.from_dict(c.to_dict()) == c
    assert preset("nano").lora is None and set(PRESETS) >= {"official-7b", "nano"}
    with pytest.raises(MiniGPTv2Error):
        preset("huge")
    with pytest.raises(MiniGPTv2Error, match="unknown model config keys"):
        ModelConfig.from_dict({"bogus": 1})


def test_grouping_is_raster_order_strips(tmp_path):
    model, proc = tiny_model(tmp_path)
    v = model.config.vision
    W = v.width
    feats = torch.randn(1, 1 + v.grid ** 2, W)
    with torch.no_grad():
        model.visual_encoder.forward = lambda x: feats                  # isolate the grouping
        model.llama_proj.weight.zero_()
        model.llama_proj.bias.zero_()
        model.llama_proj.weight[:W * 4, :W * 4] = torch.eye(W * 4)[: model.llama_proj.weight.shape[0]]
        normed = model.ln_vision(feats)[:, 1:]
        out = model.encode_images(torch.zeros(1, 3, v.image_size, v.image_size))
    d = min(out.shape[-1], 4 * W)
    # LLM token j = concat(patch 4j, 4j+1, 4j+2, 4j+3): a 1x4 horizontal strip
    expect = normed.reshape(1, -1, 4 * W)[..., :d]
    assert torch.allclose(out[..., :d], expect, atol=1e-6)
    assert out.shape[1] == v.grid ** 2 // 4


def test_trainable_parts(tmp_path):
    model, _ = tiny_model(tmp_path)
    n = lambda part: sum(p.numel() for p in part.parameters() if p.requires_grad)  # noqa: E731
    assert n(model.visual_encoder) == 0 and n(model.ln_vision) == 0 and n(model.llama_proj) > 0
    lora = sum(p.numel() for k, p in model.llm.named_parameters() if p.requires_grad)
    cfg = model.config
    L, D, r = cfg.llm["num_hidden_layers"], cfg.llm["hidden_size"], cfg.lora.r
    kv = D // cfg.llm["num_attention_heads"] * cfg.llm["num_key_value_heads"]
    assert lora == L * ((D * r + r * D) + (D * r + r * kv))               # q_proj + v_proj LoRA A/B
    model.set_trainable({"vit": "full", "projector": "frozen", "llm": "full"})
    assert n(model.visual_encoder) > 0 and n(model.llama_proj) == 0
    with pytest.raises(MiniGPTv2Error):
        model.set_trainable({"vit": "lora"})


def test_pos_embed_interpolation_keeps_cls_and_grid():
    pe = torch.randn(1, 1 + 16 * 16, 8)
    out = interpolate_pos_embed(pe, 32)
    assert out.shape == (1, 1 + 32 * 32, 8) and torch.equal(out[:, 0], pe[:, 0])
    assert interpolate_pos_embed(pe, 16) is pe


def test_forward_loss_and_image_count_check(tmp_path):
    model, proc = tiny_model(tmp_path)
    ex = proc.training_example([("[vqa] color?", "red")], image=torch.zeros(3, 56, 56))
    batch = proc.collate([ex, proc.training_example([("hi", "there")])])
    out = model(**batch)
    assert out.loss.isfinite() and out.logits.shape[:2] == batch["input_ids"].shape
    batch["pixel_values"] = torch.zeros(2, 3, 56, 56)
    with pytest.raises(MiniGPTv2Error, match="image positions"):
        model(**batch)
