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
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "lora",
                                                     "model.safetensors", "processor_config.json", "tokenizer.json",
                                                     "tokenizer.model", "tokenizer_config.json"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())          # not mkdtemp's 0700
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    m2, p2 = load(out, merge_lora=False)
    for (k, a), (k2, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    q = ["[refer] red circle", "[vqa] what color?"]
    from PIL import Image
    imgs = [Image.new("RGB", (60, 40), "red"), Image.new("RGB", (40, 60), "blue")]
    assert [r.token_ids for r in generate(model, proc, imgs, q, max_new_tokens=6)] == \
           [r.token_ids for r in generate(m2, p2, imgs, q, max_new_tokens=6)]
    with pytest.raises(MiniGPTv2Error, match="not empty"):
        save(model, proc.tok.path, out)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_sharded_save_and_dtype_auto(tmp_path):
    """Shards with an index; dtype "auto" keeps the stored dtype; the Auto classes read the folder."""
    from transformers import AutoModelForImageTextToText

    model, proc = tiny_model(tmp_path)
    model.merge_lora()
    model.to(torch.bfloat16).save_pretrained(tmp_path / "s", max_shard_size="100KB")
    proc.save_pretrained(tmp_path / "s")
    shards = sorted(p.name for p in (tmp_path / "s").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "s" / "model.safetensors.index.json").is_file()
    m2, _ = load(tmp_path / "s", dtype="auto")
    assert m2.dtype == torch.bfloat16
    m3 = AutoModelForImageTextToText.from_pretrained(tmp_path / "s", dtype="auto")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m3.state_dict().values()))


@pytest.mark.parametrize("dtype", ["bf16", "fp32", "auto"])
def test_load_reads_the_shards_and_matches_transformers(tmp_path, monkeypatch, dtype):
    """load() reads tensors with pread (no shard stays memory-mapped: benchmarks/load.py), sharded or not, with the
    LoRA adapter merged, and gives exactly transformers' own from_pretrained (which maps the shards)."""
    import safetensors
    from transformers import AutoModelForImageTextToText

    model, proc = tiny_model(tmp_path)
    model.to(torch.float16)
    save(model, proc, tmp_path / "m")
    model.merge_lora()
    model.save_pretrained(tmp_path / "s", max_shard_size="100KB")
    proc.save_pretrained(tmp_path / "s")
    backends, real = [], safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: backends.append(k.get("backend")) or real(*a, **k))
    for folder in ("m", "s"):
        got, _ = load(tmp_path / folder, dtype=dtype)
        ref = AutoModelForImageTextToText.from_pretrained(tmp_path / folder, dtype=got.dtype)
        a, b = got.state_dict(), ref.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
        assert got.generation_config.to_dict() == ref.generation_config.to_dict()
    assert backends and set(backends) == {"pread"}


def test_older_folders_are_read_and_migrated(tmp_path):
    """A folder of the format before transformers (legacy config.json, one file, `llm.` keys with peft names)."""
    from safetensors.torch import save_file as sf

    model, proc = tiny_model(tmp_path)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    old = tmp_path / "old"
    old.mkdir()
    c = model.config
    legacy = {"name": c.name, "vision": {k: getattr(c.vision_config, k) for k in
                                         ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim", "eps")},
              "llm": {k: v for k, v in c.text_config.to_dict().items() if k in (
                  "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "bos_token_id",
                  "eos_token_id", "pad_token_id", "tie_word_embeddings")},
              "lora": {"r": c.lora["r"], "alpha": c.lora["alpha"], "dropout": c.lora["dropout"],
                       "targets": c.lora["targets"]}, "group": 4, "template": "llama2", "prompt_form": "official",
              "max_context_len": c.max_context_len, "max_txt_len": c.max_txt_len, "trainable": c.trainable}
    (old / "config.json").write_text(json.dumps(legacy))
    sf({k.replace("language_model.", "llm.base_model.model.", 1): v.contiguous() for k, v in model.state_dict().items()},
       str(old / "model.safetensors"))
    proc.tok.save(old)
    m2, p2 = load(old, merge_lora=False)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in m2.state_dict().items())
    with pytest.raises(MiniGPTv2Error, match="older folder format: rewrite it first"):     # not silently one device
        load(old, device_map="auto")
    q, imgs = ["[refer] red circle"], [torch.zeros(3, 56, 56)]
    from PIL import Image
    imgs = [Image.new("RGB", (60, 40), "red")]
    want = [r.token_ids for r in generate(model, proc, imgs, q, max_new_tokens=6)]
    r = _cli("migrate", "--model", old, "--out", tmp_path / "new")
    assert r.returncode == 0, r.stderr
    m3, p3 = load(tmp_path / "new")
    assert [r.token_ids for r in generate(m3, p3, imgs, q, max_new_tokens=6)] == want


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
    with pytest.raises(MiniGPTv2Error, match="shape mismatch for llama_proj.weight"):
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


def test_device_map_auto_with_disk_offload_gives_the_same_answer(tmp_path):
    """device_map="auto" over a small memory budget offloads whole ViT blocks and the LM to disk (the split points
    `_no_split_modules` declares); the answer is the one of the model held in memory."""
    import random

    from transformers import AutoModelForImageTextToText

    import minigptv2
    from minigptv2.synthetic import make_scene

    scene = make_scene(random.Random(1000))
    q = "[refer] " + scene.objects[0].name
    model, proc = minigptv2.load()
    [want] = generate(model, proc, [scene.image], [q], max_new_tokens=20)
    off = AutoModelForImageTextToText.from_pretrained(minigptv2.NANO_DIR, dtype=torch.float32, device_map="auto",
                                                      max_memory={"cpu": "12MB"}, offload_folder=str(tmp_path))
    assert "disk" in set(off.hf_device_map.values()) and "cpu" in set(off.hf_device_map.values())
    assert not any(k.count(".") > 2 for k in off.hf_device_map)      # no split inside a ViT block
    [got] = generate(off, proc, [scene.image], [q], max_new_tokens=20)
    assert got.token_ids == want.token_ids and want.boxes


def test_saving_into_a_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    """A folder the user cannot write (simulated: these tests run as root, whom permission bits do not stop)."""
    import tempfile

    from minigptv2 import checkpoint as ck

    model, proc = tiny_model(tmp_path)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(MiniGPTv2Error, match="permission denied"):
        save(model, proc, tmp_path / "ro" / "m")
    monkeypatch.undo()

    def denied_late(tmp):
        raise PermissionError(13, "Permission denied", str(tmp / "x"))
    with pytest.raises(MiniGPTv2Error, match="permission denied"):
        ck.save(model, proc, tmp_path / "m2", extra=denied_late)
    assert not (tmp_path / "m2").exists() and not list(tmp_path.glob(".m2.tmp*"))


def test_load_reads_only_the_model_weights_and_checks_the_shard_index(tmp_path):
    """A folder may hold other .safetensors files (a training checkpoint's optimizer and rng state): load() reads
    model.safetensors or the shards its index names, and refuses an index naming files outside the folder."""
    model, proc = tiny_model(tmp_path)
    save(model, proc, tmp_path / "m")
    save_file({"step": torch.zeros(1)}, str(tmp_path / "m" / "optimizer.safetensors"))
    load(tmp_path / "m")
    (tmp_path / "m" / "generation_config.json").write_text("{not json")
    with pytest.raises(MiniGPTv2Error, match="bad .*generation_config.json"):
        load(tmp_path / "m")
    model.merge_lora()
    model.save_pretrained(tmp_path / "s", max_shard_size="100KB")
    proc.save_pretrained(tmp_path / "s")
    index = tmp_path / "s" / "model.safetensors.index.json"
    d = json.loads(index.read_text())
    d["weight_map"][next(iter(d["weight_map"]))] = "../m/model.safetensors"
    index.write_text(json.dumps(d))
    with pytest.raises(MiniGPTv2Error, match="shard names must be file names in the folder"):
        load(tmp_path / "s")


def test_a_saved_folder_does_not_record_how_its_tokenizer_was_loaded(tmp_path):
    """transformers writes local_files_only: true into tokenizer_config.json of a tokenizer loaded under
    HF_HUB_OFFLINE=1 (the tests' setting); a saved folder must not carry that, and must tokenize the same."""
    import minigptv2
    from minigptv2 import checkpoint as ckpt
    from minigptv2.processor import LOAD_TIME_KEYS

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model, proc = minigptv2.load()
    out = ckpt.save(model, proc, tmp_path / "copy")
    saved = json.loads((out / "tokenizer_config.json").read_text())
    installed = json.loads((minigptv2.NANO_DIR / "tokenizer_config.json").read_text())
    assert not set(LOAD_TIME_KEYS) & set(saved) and not set(LOAD_TIME_KEYS) & set(installed)
    assert installed == saved
    _, again = minigptv2.load(out)
    text = "[refer] red circle {<1><2><3><4>} [/INST] héllo"
    assert again.tokenizer.encode(text) == proc.tokenizer.encode(text)
