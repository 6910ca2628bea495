"""Config validation (MiniGPTv2VisionConfig.check, MiniGPTv2Config.check): every field's type and range, at
both edges of each range, with the field named in the message (tests/test_model.py has one case per rule)."""
import pytest

from minigptv2.config import LIMITS, MiniGPTv2Config, MiniGPTv2VisionConfig, tiny
from minigptv2.errors import MiniGPTv2Error

VISION = dict(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64)
INTS = ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim")


def vision(**kw):
    return MiniGPTv2VisionConfig(**{**VISION, **kw})


def config(**kw):
    return MiniGPTv2Config.from_dict({**tiny().to_dict(), **kw})


@pytest.mark.parametrize("key", INTS)
@pytest.mark.parametrize("value", [0, -1, "14", 14.0, True, None, "over"])
def test_vision_sizes_are_positive_ints(key, value):
    value = LIMITS[key] + 1 if value == "over" else value
    with pytest.raises(MiniGPTv2Error, match=rf"config vision_config\.{key} must be an integer in "
                                             rf"\[1, {LIMITS[key]}\], got {value!r}"):
        vision(**{key: value})


def test_vision_edges_that_are_valid():
    assert vision(depth=1, mlp_dim=1).depth == 1
    assert vision(depth=LIMITS["depth"]).depth == LIMITS["depth"]              # the upper limit itself is allowed
    assert vision(image_size=14, patch_size=14, width=3, heads=3).grid == 1
    assert vision(mean=(0, 1, 2.5), std=(1, 1e-9, 2)).std == (1, 1e-9, 2)


@pytest.mark.parametrize("kw, match", [
    (dict(image_size=57), "vision_config.image_size 57 is not a multiple of patch_size 14"),
    (dict(image_size=28, patch_size=56), "image_size 28 is not a multiple of patch_size 56"),
    (dict(width=33, heads=2), "vision_config.width 33 is not divisible by heads 2"),
    (dict(width=2, heads=4), "width 2 is not divisible by heads 4"),
    (dict(mean=(0.5, 0.5)), r"vision_config.mean must be three numbers, got \(0.5, 0.5\)"),
    (dict(mean=(0.5, 0.5, 0.5, 0.5)), "vision_config.mean must be three numbers"),
    (dict(std=(0.5, "0.5", 0.5)), "vision_config.std must be three numbers"),
    (dict(mean=(0.5, True, 0.5)), "vision_config.mean must be three numbers"),
    (dict(std=(0.5, 0.0, 0.5)), r"vision_config.std must be positive, got \(0.5, 0.0, 0.5\)"),
    (dict(std=(-1, 0.5, 0.5)), "vision_config.std must be positive"),
])
def test_vision_consistency(kw, match):
    with pytest.raises(MiniGPTv2Error, match=match):
        vision(**kw)


@pytest.mark.parametrize("key", ["group", "max_context_len", "max_txt_len"])
@pytest.mark.parametrize("value", [0, "4", 4.0, False, "over"])
def test_top_level_sizes_are_positive_ints(key, value):
    value = LIMITS[key] + 1 if value == "over" else value
    with pytest.raises(MiniGPTv2Error, match=rf"config {key} must be an integer in \[1, {LIMITS[key]}\], "
                                             rf"got {value!r}"):
        config(**{key: value})


@pytest.mark.parametrize("kw, match", [
    (dict(name=3), "config name must be a string, got 3"),
    (dict(template="llama3"), "unknown template 'llama3'; use 'llama2' or 'chat'"),
    (dict(prompt_form="Official"), "unknown prompt_form 'Official'; use 'official' or 'training'"),
    (dict(group=3), "16 patches do not split into groups of 3"),
    (dict(group=32), "16 patches do not split into groups of 32"),
    (dict(image_token_id=-1), r"config image_token_id must be an integer in \[0, 511\], got -1"),
    (dict(image_token_id=512), r"image_token_id must be an integer in \[0, 511\], got 512"),
    (dict(trainable=["llm"]), "trainable must be a dict with keys among"),
    (dict(trainable={"lm": "full"}), r"trainable must be a dict with keys among \['llm', 'projector', 'vit'\]"),
    (dict(trainable={"vit": "lora"}), r"trainable\['vit'\] must be one of \('frozen', 'full'\), got 'lora'"),
    (dict(trainable={"projector": "lora"}), r"trainable\['projector'\] must be one of"),
    (dict(trainable={"llm": "half"}), r"trainable\['llm'\] must be one of \('frozen', 'full', 'lora'\)"),
    (dict(lora={"r": 0}), r"config lora.r must be an integer in \[1, "),
    (dict(lora={"r": 8.0}), "config lora.r must be an integer"),
    (dict(lora={"alpha": "16"}), "lora alpha / dropout out of range"),
    (dict(lora={"dropout": 1.0}), "lora alpha / dropout out of range"),
    (dict(lora={"dropout": -0.01}), "lora alpha / dropout out of range"),
])
def test_config_values(kw, match):
    with pytest.raises(MiniGPTv2Error, match=match):
        config(**kw)


@pytest.mark.parametrize("key", ["vocab_size", "hidden_size", "num_hidden_layers"])
def test_text_config_sizes(key):
    t = tiny().text_config.to_dict()
    with pytest.raises(MiniGPTv2Error, match=rf"config text_config\.{key} must be an integer in \[1, "):
        config(text_config={**t, key: 0})
    with pytest.raises(MiniGPTv2Error, match=rf"text_config\.{key} must be an integer in \[1, {LIMITS[key]}\]"):
        config(text_config={**t, key: LIMITS[key] + 4})    # + 4: hidden_size stays a multiple of the heads


def test_config_edges_that_are_valid():
    assert config(image_token_id=511).image_token_id == 511 and config(image_token_id=0).image_token_id == 0
    assert config(group=1).num_image_tokens == 16 and config(group=16).num_image_tokens == 1
    assert config(max_context_len=1, max_txt_len=LIMITS["max_txt_len"]).max_context_len == 1
    assert config(lora={"r": 1, "dropout": 0.0, "alpha": 0.5}).lora["r"] == 1
    assert config(lora={"dropout": 0.999}).lora["dropout"] == 0.999
    assert config(trainable={"vit": "full", "projector": "frozen", "llm": "lora"}).trainable["vit"] == "full"
    assert config(trainable={}).trainable == {}
    assert config(template="chat", prompt_form="training").template == "chat"
    assert config(name="").name == ""
