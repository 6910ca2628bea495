import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, ROOT
from helpers import tiny_model
from minigptv2 import generate
from minigptv2.checkpoint import convert_official, load, save, torch_load
from minigptv2.errors import MiniGPTv2Error

F = FIXTURES


def test_save_load_round_trip_identical_outputs(tmp_path):
    model, proc = tiny_model(tmp_path)
    out = save(model, proc.tok.path, tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.model"]
    m2, p2 = load(out)
    for (k, a), (k2, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    q = ["[refer] red circle", "[vqa] what color?"]
    from PIL import Image
    imgs = [Image.new("RGB", (60, 40), "red"), Image.new("RGB", (40, 60), "blue")]
    assert [r.token_ids for r in generate(model, proc, imgs, q, max_new_tokens=6)] == \
           [r.token_ids for r in generate(m2, p2, imgs, q, max_new_tokens=6)]
    with pytest.raises(MiniGPTv2Error, match="not empty"):
        save(model, proc.tok.path, out)


def test_load_is_strict(tmp_path):
    model, proc = tiny_model(tmp_path)
    out = save(model, proc.tok.path, tmp_path / "m")
    sd = load_file(str(out / "model.safetensors"))
    sd.pop("llama_proj.bias")
    save_file(sd, str(out / "model.safetensors"))
    with pytest.raises(MiniGPTv2Error, match="llama_proj.bias"):
        load(out)
    os.remove(out / "config.json")
    with pytest.raises(MiniGPTv2Error, match="config.json is missing"):
        load(out)


def test_failed_save_leaves_nothing(tmp_path):
    model, proc = tiny_model(tmp_path)
    with pytest.raises(MiniGPTv2Error, match="tokenizer model not found"):
        save(model, tmp_path / "no-such-tokenizer.model", tmp_path / "m")

    def disk_full(d):
        assert (d / "model.safetensors").is_file()      # fails after the weights were written
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        save(model, proc.tok, tmp_path / "m", extra=disk_full)
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m")] == []


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_malicious_pickle_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    bad = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, bad)
    with pytest.raises(MiniGPTv2Error, match="refused to load"):
        torch_load(bad)
    assert not marker.exists()


def _copy_fixture_files(tmp_path):
    d = tmp_path / "official"
    shutil.copytree(F / "tiny_llama", d / "tiny_llama")
    shutil.copy(F / "eva_vit_tiny_224.pth", d)
    shutil.copy(F / "minigptv2_tiny_ckpt.pth", d)
    return d


def test_convert_errors_name_the_key(tmp_path):
    d = _copy_fixture_files(tmp_path)
    ck = torch.load(d / "minigptv2_tiny_ckpt.pth", weights_only=True)
    ck["model"]["llama_model.base_model.model.model.layers.0.mlp.gate_proj.weight"] = torch.zeros(1)
    torch.save(ck, d / "extra.pth")
    with pytest.raises(MiniGPTv2Error, match="mlp.gate_proj.weight"):
        convert_official(d / "tiny_llama", d / "eva_vit_tiny_224.pth", d / "extra.pth", vit_depth=2, vit_heads=4)
    ck = torch.load(d / "minigptv2_tiny_ckpt.pth", weights_only=True)
    ck["model"]["llama_proj.weight"] = torch.zeros(64, 100)
    torch.save(ck, d / "shape.pth")
    with pytest.raises(MiniGPTv2Error, match="llama_proj.weight has shape"):
        convert_official(d / "tiny_llama", d / "eva_vit_tiny_224.pth", d / "shape.pth", vit_depth=2, vit_heads=4)
    vit = torch.load(d / "eva_vit_tiny_224.pth", weights_only=True)
    vit.pop("blocks.1.mlp.fc2.bias")
    torch.save(vit, d / "vit_missing.pth")
    with pytest.raises(MiniGPTv2Error, match="blocks.1.mlp.fc2.bias"):
        convert_official(d / "tiny_llama", d / "vit_missing.pth", d / "minigptv2_tiny_ckpt.pth", vit_depth=2, vit_heads=4)
    with pytest.raises(MiniGPTv2Error, match="--vit-depth 3"):
        convert_official(d / "tiny_llama", d / "eva_vit_tiny_224.pth", d / "minigptv2_tiny_ckpt.pth", vit_depth=3, vit_heads=4)


def test_vit_depth_default_uses_39_of_40(tmp_path):
    from minigptv2.checkpoint import vit_config_from_state
    sd = {"patch_embed.proj.weight": torch.zeros(8, 3, 14, 14), "pos_embed": torch.zeros(1, 257, 8),
          "cls_token": torch.zeros(1, 1, 8), "blocks.0.mlp.fc1.weight": torch.zeros(20, 8)}
    sd.update({f"blocks.{i}.norm1.weight": torch.zeros(8) for i in range(40)})
    cfg, file_depth = vit_config_from_state(sd, None, 4, 448)
    assert (file_depth, cfg.depth, cfg.mlp_dim, cfg.patch_size, cfg.width) == (40, 39, 20, 14, 8)
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.3")}
    assert vit_config_from_state({k: v for k, v in sd.items() if not any(k.startswith(f"blocks.{i}.") for i in range(3, 40))},
                                 None, 4, 448)[0].depth == 3


def _cli(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minigptv2.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_convert_then_generate_matches_official(tmp_path):
    d = _copy_fixture_files(tmp_path)
    flags = json.loads((F / "bar.json").read_text())["flags"]
    r = _cli("convert", "--llm", d / "tiny_llama", "--vit", d / "eva_vit_tiny_224.pth",
             "--checkpoint", d / "minigptv2_tiny_ckpt.pth", "--out", tmp_path / "conv", *flags)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(d)                                         # the converted folder needs nothing else
    gen = json.loads((F / "outputs/generation.json").read_text())
    instr = json.loads((F / "inputs/prompts.json").read_text())["instructions"]
    pairs = gen["pairs"][:6]
    jl = tmp_path / "req.jsonl"
    jl.write_text("\n".join(json.dumps({"image": str(F / "inputs/images" / p["image"]), "prompt": instr[p["prompt_index"]]})
                            for p in pairs))
    r = _cli("generate", "--model", tmp_path / "conv", "--input-jsonl", jl, "--max-new-tokens", "20", "--greedy")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == len(pairs)
    for row, p in zip(rows, pairs):
        ids = p["generated_ids"][1:]
        assert row["token_ids"] == (ids[: ids.index(2) + 1] if 2 in ids else ids)
        assert row["text"] == p["generated_text"] and isinstance(row["boxes"], list)
    r = _cli("generate", "--model", tmp_path / "conv", "--image", F / "inputs/images" / pairs[0]["image"],
             "--prompt", instr[0], "--max-new-tokens", "20", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["text"] == pairs[0]["generated_text"]


def test_cli_errors_are_clear(tmp_path):
    r = _cli("generate", "--model", tmp_path / "nope", "--image", "x.png", "--prompt", "hi")
    assert r.returncode == 2 and "not a minigptv2 model folder" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    model, proc = tiny_model(tmp_path)
    save(model, proc.tok.path, tmp_path / "m")
    r = _cli("generate", "--model", tmp_path / "m", "--input-jsonl", bad)
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr
    r = _cli("generate", "--model", tmp_path / "m", "--image", tmp_path / "missing.png", "--prompt", "[vqa] hi")
    assert r.returncode == 2 and "missing.png" in r.stderr
