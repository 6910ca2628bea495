"""The embedded default model (minigptv2/assets/nano): it loads with no arguments and its synthetic table is
produced here by the eval CLI, on the first 60 held-out scenes (the eval's own deterministic set: seed
HELDOUT_SEED, greedy, constrained boxes).

The floors are what this model measured on exactly that set, minus MARGIN, overall and per number of objects in
the scene, so a real drop fails (the model installed before this one, trained without the official inference
form, scored identify 0.591 here in that form: test_nano_answers_both_prompt_forms). They are not the README's
500-scene table. A retrained model must re-measure them: run the eval command of
`test_synthetic_table_by_the_eval_cli` and copy metrics.json's values (truncated to 3 decimals) into MEASURED,
and the official form's VQA and identify into MEASURED_OFFICIAL.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
import minigptv2
from minigptv2.errors import MiniGPTv2Error

MARGIN = 0.03
# measured on the 60-scene set (training prompt form), truncated to 3 decimals
MEASURED = {"refer_acc": 0.9, "detection_recall": 0.936, "vqa_em": 0.989, "identify_em": 0.99,
            "caption_em": 0.933, "grounding_recall": 0.963, "refer_names_differ": 1.0}
MEASURED_BY_OBJECTS = {      # {metric: {objects in the scene: value}}
    "refer_acc": {1: 1.0, 2: 0.964, 3: 0.814},
    "detection_recall": {1: 1.0, 2: 0.964, 3: 0.888},
    "vqa_em": {1: 1.0, 2: 0.985, 3: 0.981},
    "identify_em": {1: 1.0, 2: 1.0, 3: 0.981},
    "caption_em": {1: 1.0, 2: 0.928, 3: 0.833},
    "grounding_recall": {1: 1.0, 2: 1.0, 3: 0.925},
}
# the same scenes with the same weights prompted in the official inference form (test_nano_answers_both_prompt_forms)
MEASURED_OFFICIAL = {"vqa_em": 0.989, "identify_em": 0.99}
LIMIT = 60


@pytest.fixture(scope="module")
def nano():
    assert (minigptv2.NANO_DIR / "model.safetensors").is_file(), "the embedded nano model is missing"
    return minigptv2.load()


def test_loads_with_no_arguments_and_records_its_recipe(nano):
    model, proc = nano
    assert model.config.name == "nano"
    recipe = json.loads((minigptv2.NANO_DIR / "recipe.json").read_text())
    assert recipe["recipe"]["stage_all"]["steps"] > 0 and recipe["times"]["total_s"] > 0


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """`minigptv2 eval --bench synthetic --limit 60` on the embedded model: (metrics, report, data folder)."""
    out = tmp_path_factory.mktemp("nano_eval")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "minigptv2.cli", "eval", "--bench", "synthetic", "--limit", str(LIMIT),
                        "--out", str(out), "--batch-size", "32", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())["benches"]["synthetic"]
    return m, (out / "report.md").read_text(), out / "synthetic_data"


def test_synthetic_table_by_the_eval_cli(table):
    m, report, _ = table
    print(report)
    assert "refer" in report.lower() and "|" in report
    low = {k: (round(m[k], 3), floor) for k, v in MEASURED.items() if m[k] < (floor := v - MARGIN)}
    assert not low, f"below the floor (value, floor): {low}"
    got = m["by_objects"]
    low = {(k, n): (round(got[k][str(n)], 3), floor) for k, per in MEASURED_BY_OBJECTS.items() for n, v in per.items()
           if got[k][str(n)] < (floor := v - MARGIN)}
    assert not low, f"below the floor per number of objects (value, floor): {low}"
    assert m["refer_parse_failure_rate"] == 0.0


def test_nano_answers_both_prompt_forms(nano, table):
    """nano is configured for prompt_form "training" (the form it was trained on), and its last phase also wrote
    half the samples in the official inference form (recipes/nano.py `followup`, inference_form 0.5), so that
    form holds floors too: before it, identify fell 0.841 -> 0.561 there (500 scenes, docs/nano.md). VQA and
    identify, where the forms differed, on the same scenes."""
    from minigptv2.config import MiniGPTv2Config
    from minigptv2.eval.run import run_prompts
    from minigptv2.eval.synthetic import SYNTH_MAX_NEW_TOKENS, _score_synth, synthetic_items
    from minigptv2.processor import build_processor

    model, proc = nano
    assert model.config.prompt_form == "training" and proc.config.prompt_form == "training"
    assert json.loads((minigptv2.NANO_DIR / "config.json").read_text())["prompt_form"] == "training"
    _, _, data_dir = table
    official = build_processor(proc.tok, MiniGPTv2Config.from_dict({**proc.config.to_dict(),
                                                                    "prompt_form": "official"}))
    got = {}
    for task in ("vqa", "identify"):
        items = synthetic_items(data_dir, LIMIT)[task]
        preds = run_prompts(model, official, items, 32, SYNTH_MAX_NEW_TOKENS[task], progress=False)
        got[f"{task}_em"] = _score_synth(task, items, preds)[0][f"{task}_em"]
    low = {k: (round(got[k], 3), floor) for k, v in MEASURED_OFFICIAL.items() if got[k] < (floor := v - MARGIN)}
    assert not low, f"official prompt form below the floor (value, floor): {low}"


def test_dense_vit_pretraining_learns_classes_and_boxes():
    import random

    import torch

    from minigptv2.config import tiny
    from recipes.nano import patch_targets, pretrain_vit
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

    from recipes import nano

    r = dict(nano.RECIPE, data_all=dict(nano.RECIPE["data_all"], n=6), test=dict(n=2, seed=999, max_objects=3),
             vocab_size=512, vit_steps=2, vit_batch=2,
             llm=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=64))
    for stage in r["stages"]:
        r[stage] = dict(r[stage], steps=2, batch_size=4, warmup_steps=1)
    for stage in r["stages"]:                          # the toy LLM has one layer
        if "pointing" in r[stage]:
            r[stage]["pointing"] = dict(r[stage]["pointing"], layer=0)
    monkeypatch.setattr(nano, "RECIPE", r)
    work = tmp_path / "work"

    def run1(**kw):                 # one thread, so that every run sums in the same order
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return nano.run(work, log=lambda *a: None, **kw)
        finally:
            torch.set_num_threads(n)

    out = run1()
    installed = nano.install_fp16(out["model"], tmp_path / "installed")
    for stage in r["stages"][1:]:       # each later stage trains on its own ratios
        mix = json.loads((work / "data_all" / f"mixture_{stage}.json").read_text())
        assert {e["kind"]: e["ratio"] for e in mix} == {**{e["kind"]: 0 for e in mix}, **r[stage]["ratios"]}
        assert len((work / stage / "log.jsonl").read_text().splitlines()) == 2
    for stage in r["stages"]:               # the stages with the pointing loss log it, the others do not
        log = [json.loads(x) for x in (work / stage / "log.jsonl").read_text().splitlines()]
        assert all(("pointing" in x) == ("pointing" in r[stage]) for x in log), stage
    saved = json.loads((installed / "recipe.json").read_text())
    assert saved["recipe"]["stage_mixed"]["ratios"] == r["stage_mixed"]["ratios"] and saved["times"]["total_s"] > 0
    assert set(saved["times"]) >= {f"{s}_s" for s in r["stages"]}
    assert saved["cpu"] == nano.cpu_info() and saved["cpu"]["cores"] >= 1     # what its times depend on
    model, _ = minigptv2.load(installed)
    assert model.config.name == "nano"

    # interrupted after focus_vqa: --resume trains the rest from its final/ and gives the same weights
    first = {k: v.clone() for k, v in minigptv2.load(out["model"])[0].state_dict().items()}
    losses = lambda: {s: [(x["step"], x["loss"]) for x in map(json.loads, (work / s / "log.jsonl").read_text()  # noqa: E731
                                                                  .splitlines())] for s in r["stages"]}
    logs = losses()
    for gone in ("model", "stage_mixed", "followup"):
        shutil.rmtree(work / gone)
    again = run1(resume=True)
    assert again["times"]["resumed_from"] == "focus_vqa/final" and "vit_pretrain_s" not in again["times"]
    second = minigptv2.load(again["model"])[0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert losses() == logs
    with pytest.raises(MiniGPTv2Error, match="other settings"):
        run1(resume=True, seed=5)
    with pytest.raises(MiniGPTv2Error, match="other settings"):     # every begun stage pointed at layer 0
        run1(resume=True, point_layer=1)
    shutil.rmtree(work / "followup")         # a variant of a stage not yet begun is allowed, and recorded
    monkeypatch.setitem(r, "followup", dict(r["followup"], lr=1e-4))
    run1(resume=True)
    assert json.loads((work / "recipe.json").read_text())["followup"]["lr"] == 1e-4
    with pytest.raises(MiniGPTv2Error, match="other settings"):          # ...but not of one that has
        monkeypatch.setitem(r, "followup", dict(r["followup"], lr=2e-4))
        run1(resume=True)


def test_dialog_kinds_leave_the_recipe_tokenizer_as_it_was(tmp_path):
    """data_all is written with dialogs=True for the `followup` stage; the tokenizer (and so every earlier stage)
    must be the one built without them."""
    from recipes import nano
    from minigptv2.synthetic import write_synthetic

    r = dict(nano.RECIPE, vocab_size=512)
    built = {}
    for dialogs in (False, True):
        d = write_synthetic(tmp_path / f"d{dialogs}", n=30, seed=2, dialogs=dialogs)
        mix = nano._mixture_with_ratios(d, r["ratios"], "mixture_nano.json")
        datasets, _ = nano.recipe_tokenizer(mix, r, tmp_path / f"tok{dialogs}.model")
        built[dialogs] = ((tmp_path / f"tok{dialogs}.model").read_bytes(), len(datasets))
    assert built[True][0] == built[False][0]
    assert built[True][1] == built[False][1] + 3


def test_mixture_ratios_refuse_a_kind_the_data_folder_lacks(tmp_path):
    """A recipe ratio naming a kind that data_all's mixture.json does not list (data written before the kind
    existed) is an error, not a phase trained without it."""
    import json

    from recipes import nano
    from minigptv2.synthetic import write_synthetic

    d = write_synthetic(tmp_path / "d", n=8, seed=2, dialogs=True)
    mix = json.loads((d / "mixture.json").read_text())
    (d / "mixture.json").write_text(json.dumps([e for e in mix if e["kind"] != "synthetic_paraphrase_vqa"]))
    with pytest.raises(MiniGPTv2Error, match=r"no \['synthetic_paraphrase_vqa'\] entries"):
        nano._mixture_with_ratios(d, {"vqa": 1, "synthetic_paraphrase_vqa": 1}, "m.json")
    assert not (d / "m.json").exists()


def test_install_only_copies_a_trained_folder_into_the_package_folder(tmp_path, monkeypatch, capsys):
    """`python -m recipes.nano --install-only DIR` (how the installed model was put in place) writes NANO_DIR."""
    from recipes import nano

    source = minigptv2.NANO_DIR
    monkeypatch.setattr(minigptv2, "NANO_DIR", tmp_path / "nano")
    assert nano.main(["--install-only", str(source)]) == 0
    assert f"installed to {tmp_path / 'nano'}" in capsys.readouterr().out
    assert (tmp_path / "nano" / "recipe.json").read_text() == (source / "recipe.json").read_text()
    assert minigptv2.load(tmp_path / "nano")[0].config.name == "nano"
