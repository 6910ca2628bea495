"""recipes/nano_followup.py at toy size: the continuation phase on the old tasks plus synthetic conversations and
paraphrases, from the installed nano, saved in its own folder."""
import json

import minigptv2


def test_followup_runs_at_toy_size_on_synthetic_dialogs(tmp_path, monkeypatch):
    import torch

    from recipes import nano, nano_followup

    r = dict(nano.RECIPE, data_all=dict(nano.RECIPE["data_all"], n=6),
             followup=dict(nano.RECIPE["followup"], batch_size=4, warmup_steps=1))
    monkeypatch.setattr(nano, "RECIPE", r)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = nano_followup.run(tmp_path / "work", steps=2, log=lambda *a: None)
    finally:
        torch.set_num_threads(n)
    mix = json.loads((tmp_path / "work" / "data" / "mixture_followup.json").read_text())
    # every kind of the ratios, the new ones too; the rest (synthetic_paraphrase_vqa) at 0
    assert {e["kind"]: e["ratio"] for e in mix if e["ratio"]} == r["followup"]["ratios"]
    assert len((tmp_path / "work" / "followup" / "log.jsonl").read_text().splitlines()) == 2
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["followup"]["settings"]["steps"] == 2 and saved["followup"]["times"]["followup_s"] > 0
    assert saved["followup"]["seed"] == r["seed"] and saved["followup"]["settings"]["inference_form"] == 0.5
    # the init's record is kept: the installed model's recipe.json names the whole chain
    assert saved["recipe"] == json.loads((minigptv2.NANO_DIR / "recipe.json").read_text())["recipe"]
    model, _ = minigptv2.load(out)
    assert model.config.name == "nano" and out != minigptv2.NANO_DIR
