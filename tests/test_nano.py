"""The embedded default model (minigptv2/assets/nano): it loads with no arguments and its synthetic table is
produced here by the eval CLI. The README's numbers come from a 500-scene run of the same code; the floors
below sit well under those numbers (60 scenes are noisy) and well above what an untrained model scores (0)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
import minigptv2

# README (500 scenes): refer 0.848, detection recall 0.809, VQA 0.907, identify 0.655, caption 0.820
FLOORS = {"refer_acc": 0.50, "detection_recall": 0.45, "vqa_em": 0.45, "identify_em": 0.28, "caption_em": 0.50,
          "refer_names_differ": 0.60}


@pytest.fixture(scope="module")
def nano():
    assert (minigptv2.NANO_DIR / "model.safetensors").is_file(), "the embedded nano model is missing"
    return minigptv2.load()


def test_loads_with_no_arguments_and_records_its_recipe(nano):
    model, proc = nano
    assert model.config.name == "nano"
    recipe = json.loads((minigptv2.NANO_DIR / "recipe.json").read_text())
    assert recipe["recipe"]["stage_all"]["steps"] > 0 and recipe["times"]["total_s"] > 0


def test_synthetic_table_by_the_eval_cli(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "minigptv2.cli", "eval", "--bench", "synthetic", "--limit", "60",
                        "--out", str(tmp_path), "--batch-size", "32", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())["benches"]["synthetic"]
    report = (tmp_path / "report.md").read_text()
    print(report)
    assert "refer" in report.lower() and "|" in report
    for k, floor in FLOORS.items():
        assert m[k] >= floor, (k, m[k])
    assert m["refer_parse_failure_rate"] == 0.0


def test_dense_vit_pretraining_learns_classes_and_boxes():
    import random

    import torch

    from minigptv2.config import tiny
    from minigptv2.nano import patch_targets, pretrain_vit
    from minigptv2.processor import MiniGPTv2ImageProcessor
    from minigptv2.synthetic import COLORS, SHAPES, make_scene
    from minigptv2.vit import EVAViT

    cfg = tiny()
    torch.manual_seed(0)
    vit = EVAViT(cfg.vision_config)
    classes = {f"{c} {s}": i + 1 for i, (c, s) in enumerate((c, s) for c in COLORS for s in SHAPES)}

    def scenes(seed):
        sc = make_scene(random.Random(seed))
        return sc.image, [(o.name, o.box) for o in sc.objects]

    img, objs = scenes(0)
    cls, box = patch_targets(objs, img.width, img.height, cfg.vision_config.grid, classes)
    assert (cls > 0).any() and ((box >= 0) & (box <= 1)).all()
    logs = []
    losses = pretrain_vit(vit, MiniGPTv2ImageProcessor.from_config(cfg), scenes, classes, steps=40, batch_size=8, lr=2e-3,
                          log=logs.append)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert "patch acc" in logs[-1] and not vit.training


def test_recipe_runs_end_to_end_at_toy_size(tmp_path, monkeypatch):
    """nano.run with every count shrunk: data, tokenizer, ViT, every stage of RECIPE["stages"] (the later ones with
    their own ratios, all with the frozen-ViT cache), recipe.json, install."""
    import torch

    from minigptv2 import nano

    r = dict(nano.RECIPE, data_all=dict(n=6, seed=2, max_objects=3), test=dict(n=2, seed=999, max_objects=3),
             vocab_size=512, vit_steps=2, vit_batch=2,
             llm=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=64))
    for stage in r["stages"]:
        r[stage] = dict(r[stage], steps=2, batch_size=4, warmup_steps=1)
    monkeypatch.setattr(nano, "RECIPE", r)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = nano.run(tmp_path / "work", log=lambda *a: None)
        installed = nano.install_fp16(out["model"], tmp_path / "installed")
    finally:
        torch.set_num_threads(n)
    work = tmp_path / "work"
    for stage in r["stages"][1:]:       # each later stage trains on its own ratios
        mix = json.loads((work / "data_all" / f"mixture_{stage}.json").read_text())
        assert {e["kind"]: e["ratio"] for e in mix} == {**{e["kind"]: 0 for e in mix}, **r[stage]["ratios"]}
        assert len((work / stage / "log.jsonl").read_text().splitlines()) == 2
    saved = json.loads((installed / "recipe.json").read_text())
    assert saved["recipe"]["stage_mixed"]["ratios"] == r["stage_mixed"]["ratios"] and saved["times"]["total_s"] > 0
    assert set(saved["times"]) >= {f"{s}_s" for s in r["stages"]}
    model, _ = minigptv2.load(installed)
    assert model.config.name == "nano"
