"""recipes/nano_followup.py at toy size: the continuation phase on the old tasks plus synthetic conversations and
paraphrases, from the installed nano, saved in its own folder."""
import json

import minigptv2


def test_followup_runs_at_toy_size_on_synthetic_dialogs(tmp_path, monkeypatch):
    import torch

    from recipes import nano, nano_followup

    monkeypatch.setattr(nano, "RECIPE", dict(nano.RECIPE, data_all=dict(n=6, seed=2, max_objects=3)))
    monkeypatch.setattr(nano_followup, "FOLLOWUP", dict(nano_followup.FOLLOWUP, batch_size=4, warmup_steps=1))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = nano_followup.run(tmp_path / "work", steps=2, log=lambda *a: None)
    finally:
        torch.set_num_threads(n)
    mix = json.loads((tmp_path / "work" / "data" / "mixture_followup.json").read_text())
    assert {e["kind"]: e["ratio"] for e in mix} == nano_followup.FOLLOWUP["ratios"]   # every kind, the new ones too
    assert len((tmp_path / "work" / "followup" / "log.jsonl").read_text().splitlines()) == 2
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["followup"]["steps"] == 2 and saved["times"]["followup_s"] > 0
    model, _ = minigptv2.load(out)
    assert model.config.name == "nano" and out != minigptv2.NANO_DIR
