import pytest
import torch

from helpers import tiny_model
from minigptv2.config import PRESETS, MiniGPTv2Config, from_legacy_dict, preset
from minigptv2.errors import MiniGPTv2Error
from minigptv2.vit import interpolate_pos_embed


def test_presets():
    c = preset("official-7b")
    v = c.vision_config
    assert (v.width, v.depth, v.heads, v.mlp_dim, v.image_size) == (1408, 39, 16, 6144, 448)
    assert c.num_image_tokens == 256 and v.width * c.group == 5632
    assert c.lora == {"r": 64, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "v_proj"]}
    assert c.trainable == {"vit": "frozen", "projector": "full", "llm": "lora"}
    t = c.text_config
    assert (t.model_type, t.vocab_size, t.hidden_size, t.num_hidden_layers) == ("llama", 32000, 4096, 32)
    assert MiniGPTv2Config.from_dict(c.to_dict()).to_dict() == c.to_dict()
    assert preset("nano").lora is None and set(PRESETS) >= {"official-7b", "nano"}
    with pytest.raises(MiniGPTv2Error):
        preset("huge")
    with pytest.raises(MiniGPTv2Error, match="unknown model config keys"):
        from_legacy_dict({"bogus": 1})


def test_nano_preset_is_the_shipped_model():
    import json

    from minigptv2 import NANO_DIR

    shipped = json.loads((NANO_DIR / "config.json").read_text())
    ours = preset("nano").to_dict()
    for part in ("vision_config", "text_config"):      # the architecture; "dtype" is how the tensors are stored
        assert {k: shipped[part][k] for k in ours[part] if k in shipped[part] and k != "dtype"} == \
            {k: v for k, v in ours[part].items() if k in shipped[part] and k != "dtype"}, part
    assert {k: shipped[k] for k in ("group", "template", "prompt_form", "max_context_len", "max_txt_len")} == \
        {k: ours[k] for k in ("group", "template", "prompt_form", "max_context_len", "max_txt_len")}


@pytest.mark.parametrize("bad, match", [
    (dict(group="4"), "group"), (dict(group=0), "group"), (dict(vision_config=dict(heads=0)), "heads"),
    (dict(vision_config=dict(width=100, heads=3)), "divisible"), (dict(text_config=dict(hidden_size=10 ** 9)),
    "hidden_size"), (dict(template="x"), "template"), (dict(prompt_form="train"), "prompt_form"),
    (dict(trainable={"llm": "lora2"}), "trainable"), (dict(text_config=dict(model_type="nope")), "text_config"),
    (dict(image_token_id=10 ** 6), "image_token_id"), (dict(max_context_len="512"), "max_context_len"),
])
def test_config_is_typed_and_range_checked_before_any_allocation(bad, match):
    with pytest.raises(MiniGPTv2Error, match=match):
        MiniGPTv2Config(**bad)


def test_grouping_is_raster_order_strips(tmp_path):
    model, proc = tiny_model(tmp_path)
    v = model.config.vision_config
    W = v.width
    feats = torch.randn(1, 1 + v.grid ** 2, W)
    with torch.no_grad():
        model.visual_encoder.forward = lambda x: feats                  # isolate the grouping
        model.llama_proj.weight.zero_()
        model.llama_proj.bias.zero_()
        model.llama_proj.weight[:W * 4, :W * 4] = torch.eye(W * 4)[: model.llama_proj.weight.shape[0]]
        normed = model.ln_vision(feats)[:, 1:]
        out = model.get_image_features(torch.zeros(1, 3, v.image_size, v.image_size))
    d = min(out.shape[-1], 4 * W)
    # LLM token j = concat(patch 4j, 4j+1, 4j+2, 4j+3): a 1x4 horizontal strip
    expect = normed.reshape(1, -1, 4 * W)[..., :d]
    assert torch.allclose(out[..., :d], expect, atol=1e-6)
    assert out.shape[1] == v.grid ** 2 // 4


def test_trainable_parts(tmp_path):
    model, _ = tiny_model(tmp_path)
    n = lambda part: sum(p.numel() for p in part.parameters() if p.requires_grad)  # noqa: E731
    assert n(model.visual_encoder) == 0 and n(model.ln_vision) == 0 and n(model.llama_proj) > 0
    lora = sum(p.numel() for k, p in model.language_model.named_parameters() if p.requires_grad)
    t = model.config.text_config
    L, D, r = t.num_hidden_layers, t.hidden_size, model.config.lora["r"]
    kv = D // t.num_attention_heads * t.num_key_value_heads
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


def test_harness_view_of_the_nano_folder_auto_tokenizer_automodel_and_padded_decode():
    """What a generic harness (lmms-eval's Hugging Face chat class, scripts/lmms_eval_check.py) reads from a model
    folder: AutoTokenizer gives the model's own 1,024 pieces and pad id (not a stub of three tokens), AutoModel
    builds our class, and batch_decode of rows right-padded with that pad id gives each answer alone."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from minigptv2 import NANO_DIR
    from minigptv2.model import MiniGPTv2ForConditionalGeneration
    from minigptv2.processor import MiniGPTv2Processor

    proc = MiniGPTv2Processor.from_pretrained(NANO_DIR)
    hf = AutoTokenizer.from_pretrained(NANO_DIR)
    assert len(hf) == len(proc.tok) == 1024 and hf.pad_token_id == proc.tok.pad_id
    assert hf("red circle", add_special_tokens=False).input_ids == proc.tok.encode("red circle")
    assert AutoModel._model_mapping[type(AutoConfig.from_pretrained(NANO_DIR))] is MiniGPTv2ForConditionalGeneration
    rows = [proc.tok.encode("purple") + [proc.tok.eos_id] + [hf.pad_token_id] * 4,
            proc.tok.encode("{<9><41><50><85>}") + [proc.tok.eos_id]]
    assert proc.batch_decode(rows, skip_special_tokens=True) == ["purple", "{<9><41><50><85>}"]
