"""Model files and converter inputs are validated before use: a documented MiniGPTv2Error naming the problem, never a
raw exception or a huge allocation."""
import json
import shutil

import pytest
import torch

import minigptv2
from conftest import FIXTURES
from minigptv2.checkpoint import convert_official, load
from minigptv2.errors import MiniGPTv2Error

F = FIXTURES


@pytest.fixture()
def nano_copy(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(minigptv2.NANO_DIR, d)
    return d


def _edit(folder, fn):
    cfg = json.loads((folder / "config.json").read_text())
    fn(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["text_config"].update(hidden_size=10 ** 9), "hidden_size"),
    (lambda c: c["text_config"].update(num_hidden_layers="4"), "num_hidden_layers"),
    (lambda c: c.update(max_context_len="512"), "max_context_len"),
    (lambda c: c["vision_config"].update(heads=0), "heads"),
    (lambda c: c["vision_config"].update(patch_size=13), "multiple of patch_size"),
    (lambda c: c.update(group=3), "groups of 3"),
    (lambda c: c.update(template="jinja"), "template"),
    (lambda c: c.update(image_token_id=-1), "image_token_id"),
    (lambda c: c["text_config"].update(hidden_size=512), "shape mismatches"),      # valid, but not the weights
    (lambda c: c.update(model_type="llava"), "not a minigptv2 config"),
])
def test_bad_config_json_is_refused_before_the_weights(nano_copy, edit, match):
    _edit(nano_copy, edit)
    with pytest.raises(MiniGPTv2Error, match=match):
        load(nano_copy)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[" * 100000, b"{}", b"[1, 2]", b"not json"])
def test_unreadable_config_json(nano_copy, content):
    (nano_copy / "config.json").write_bytes(content)
    with pytest.raises(MiniGPTv2Error):
        load(nano_copy)


def test_tokenizer_larger_than_the_vocabulary_is_refused(nano_copy):
    _edit(nano_copy, lambda c: c["text_config"].update(vocab_size=1000))
    with pytest.raises(MiniGPTv2Error, match="tokenizer has 1024 tokens"):
        load(nano_copy)


def test_truncated_weights_file(nano_copy):
    w = nano_copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[: 5000])
    with pytest.raises(MiniGPTv2Error):
        load(nano_copy)


def _convert(tmp_path, vit=None, ckpt=None, **kw):
    return convert_official(F / "tiny_llama", vit or F / "eva_vit_tiny_224.pth", ckpt or F / "minigptv2_tiny_ckpt.pth",
                            vit_depth=kw.pop("vit_depth", 2), vit_heads=kw.pop("vit_heads", 4), **kw)


@pytest.mark.parametrize("obj, match", [
    ([1, 2, 3], "state dict of tensors"), ({"patch_embed.proj.weight": "x"}, "state dict of tensors"),
    ({"patch_embed.proj.weight": torch.zeros(3)}, "not an EVA ViT"),
])
def test_convert_refuses_vit_files_of_the_wrong_type(tmp_path, obj, match):
    torch.save(obj, tmp_path / "vit.pth")
    with pytest.raises(MiniGPTv2Error, match=match):
        _convert(tmp_path, vit=tmp_path / "vit.pth")


def test_convert_refuses_a_huge_block_index_and_zero_heads(tmp_path):
    vit = torch.load(F / "eva_vit_tiny_224.pth", weights_only=True)
    torch.save({**vit, "blocks.100000000.norm1.weight": torch.zeros(1)}, tmp_path / "vit.pth")
    with pytest.raises(MiniGPTv2Error, match="numbered 0..n-1"):
        _convert(tmp_path, vit=tmp_path / "vit.pth")
    with pytest.raises(MiniGPTv2Error, match="--vit-heads 0"):
        _convert(tmp_path, vit_heads=0)


@pytest.mark.parametrize("model", [[1], {"llama_proj.weight": [1.0]}, "x"])
def test_convert_refuses_checkpoints_of_the_wrong_type(tmp_path, model):
    torch.save({"model": model}, tmp_path / "ck.pth")
    with pytest.raises(MiniGPTv2Error, match="state dict of tensors"):
        _convert(tmp_path, ckpt=tmp_path / "ck.pth")
