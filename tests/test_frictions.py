"""Issue #32: the joints of the fine-tuning path where it used to break, one test each (`minigptv2 train` in this
process on the tiny preset, a few steps, on a converted toy set)."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from helpers import tiny_model, tiny_tokenizer
from minigptv2 import checkpoint as ckpt
from minigptv2 import cli
from minigptv2.train import cli as train_cli
from minigptv2.data.convert import convert
from minigptv2.data.cli import model_folder, write_example
from minigptv2.errors import MiniGPTv2Error
from minigptv2.train.config import STAGES
from minigptv2.train.schedule import apply_overrides, lr_at


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ft(tmp_path_factory):
    d = tmp_path_factory.mktemp("frictions")
    write_example(d / "my", n=6, seed=1)
    convert(d / "my" / "instances.json", "coco", d / "ft", images=d / "my" / "images", held_out=0.34,
            tasks=("refer", "identify"))
    return {"root": d, "mix": d / "ft" / "mixture.json", "test": d / "ft" / "test.jsonl", "tok": tiny_tokenizer(d)}


def run(ft, out, *extra, tok=True, steps=4):
    argv = ["--preset", "tiny", "--data", str(ft["mix"]), "--out", str(out), "--steps", str(steps),
            "--batch-size", "2", "--precision", "fp32", *(["--tokenizer", str(ft["tok"])] if tok else []), *extra]
    if "--progress" in argv:
        argv.remove("--progress")
    else:
        argv.append("--no-progress")
    assert train_cli.main(argv) == 0


def log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


# ---- 1. `--tokenizer tok.model`: where does it come from? ---------------------------------------------------------
def test_fresh_preset_builds_its_tokenizer_from_the_data(ft, tmp_path, capsys):
    out = tmp_path / "run"
    run(ft, out, tok=False)
    assert "no --tokenizer: built a" in capsys.readouterr().out
    built = (out / "tokenizer.model").read_bytes()
    assert (out / "final" / "tokenizer.model").read_bytes() == built
    _, proc = ckpt.load(out / "final")
    assert 380 < len(proc.tok) <= 512                                        # the tiny preset's vocab_size bounds it
    assert len(proc.tok.encode("[refer] give me the location of red circle")) < 12   # learned from the data
    # a --resume reuses it (its ids are the checkpoint's)
    run(ft, out, "--resume", tok=False, steps=4)
    assert "tokenizer: " in capsys.readouterr().out and (out / "tokenizer.model").read_bytes() == built
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("minigptv2 train --preset nano --stage 1"))
    assert "--tokenizer" not in line and "docs/finetune.md" in readme and "minigptv2 data tokenizer" in readme


# ---- 2. the preset's warmup swallowed a short run -----------------------------------------------------------------
def test_short_runs_scale_the_warmup_and_save_the_schedule(ft, tmp_path, capsys):
    tc, notes = apply_overrides(STAGES[1], {"steps": 30}, 1)
    assert tc.warmup_steps == 0 and "1000 of its 400000 steps" in notes[0]
    assert lr_at(29, tc) > 1e-5                                              # past the warmup: a cosine near min_lr
    tc, notes = apply_overrides(STAGES[3], {"steps": 5000}, 3)
    assert tc.warmup_steps == 100                                            # the preset's 2 %
    tc, notes = apply_overrides(STAGES[1], {"steps": 30, "warmup_steps": 1000}, 1)
    assert tc.warmup_steps == 1000 and notes == [
        "--warmup-steps 1000 >= --steps 30: the whole run is warmup and ends at lr 3.87e-06, not at the peak 0.0001"]

    out = tmp_path / "run"
    run(ft, out, "--stage", "1", steps=6)
    printed = capsys.readouterr().out
    assert "schedule (stage 1 preset + flags): 6 steps x batch 2; lr: no warmup, cosine to 1e-05" in printed
    assert "note: warmup scaled with --steps: the stage 1 preset warms up 1000 of its 400000 steps" in printed
    assert log(out)[0]["lr"] == 1e-4                                         # not 1e-6, the start of a warmup
    s = json.loads((out / "schedule.json").read_text())
    assert s["stage"] == 1 and s["used"]["warmup_steps"] == 0 and s["given"]["steps"] == 6
    assert s["preset"] == {"steps": 400000, "batch_size": 96, "lr": 1e-4, "min_lr": 1e-5, "warmup_lr": 1e-6,
                           "warmup_steps": 1000}
    assert s["lr"]["last"] == pytest.approx(log(out)[-1]["lr"])


# ---- 3. --init ignored the folder's trainable parts; the errors did not name the flag ------------------------------
@pytest.fixture(scope="module")
def full_llm_folder(ft):
    """A folder like the nano model's: no LoRA, the whole LLM trainable."""
    model, proc = tiny_model(ft["root"] / "tok_dir", lora=None, trainable={"vit": "frozen", "projector": "full",
                                                                           "llm": "full"})
    return ckpt.save(model, proc, ft["root"] / "full_llm")


def test_init_keeps_the_folders_trainable_parts(ft, full_llm_folder, tmp_path):
    out = tmp_path / "run"
    assert train_cli.main(["--init", str(full_llm_folder), "--stage", "3", "--data", str(ft["mix"]), "--out",
                           str(out), "--steps", "2", "--batch-size", "2", "--lr", "1e-3", "--precision", "fp32",
                           "--no-progress"]) == 0
    before, after = load_file(str(full_llm_folder / "model.safetensors")), load_file(str(out / "final" /
                                                                                          "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("language_model.") and "layers.0.mlp" in k for k in changed)   # the LLM itself trained
    assert not any(k.startswith("visual_encoder.") for k in changed)
    assert json.loads((out / "final" / "config.json").read_text())["trainable"]["llm"] == "full"
    assert model_folder("nano").name == "nano" and (model_folder("nano") / "config.json").is_file()


def test_trainable_errors_name_the_flag(ft, full_llm_folder, tmp_path, capsys):
    base = ["--init", str(full_llm_folder), "--data", str(ft["mix"]), "--steps", "1", "--batch-size", "2",
            "--precision", "fp32", "--no-progress"]
    with pytest.raises(MiniGPTv2Error, match=r"no LoRA settings \(config.lora\); train the LLM with --trainable"):
        train_cli.main([*base, "--out", str(tmp_path / "a"), "--trainable", '{"llm": "lora"}'])
    assert cli.main(["train", *base, "--out", str(tmp_path / "b"), "--trainable", "{llm: full}"]) == 2
    err = capsys.readouterr().err
    assert "error: --trainable is not valid JSON (Expecting property name enclosed in double quotes at column 2): " \
           "'{llm: full}'; write it as --trainable '{\"vit\": \"frozen\"" in err and "Traceback" not in err
    for bad, msg in (('["llm"]', "--trainable must be a JSON object"),
                     ('{"lm": "full"}', "--trainable: unknown part 'lm'; the parts are vit, projector, llm"),
                     ('{"vit": "lora"}', "--trainable: 'vit' must be one of frozen, full, got 'lora'")):
        with pytest.raises(MiniGPTv2Error, match=re.escape(msg)):
            train_cli.main([*base, "--out", str(tmp_path / "c"), "--trainable", bad])
    with pytest.raises(MiniGPTv2Error, match=r"cache_vision needs a frozen ViT .*--trainable '\{\"vit\": \"frozen\"\}"):
        train_cli.main([*base, "--out", str(tmp_path / "d"), "--trainable", '{"vit": "full"}', "--cache-vision"])
    # a partial --trainable changes only what it names
    train_cli.main([*base, "--out", str(tmp_path / "e"), "--trainable", '{"projector": "frozen"}'])
    assert json.loads((tmp_path / "e" / "schedule.json").read_text())["used"]["trainable"] == \
        {"vit": "frozen", "projector": "frozen", "llm": "full"}
    assert not [p for p in tmp_path.iterdir() if p.name in "abcd"]           # refused runs leave no folder


# ---- 4. nothing checked the data before hours of training ---------------------------------------------------------
def test_train_checks_the_data_first(ft, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    recs = [json.loads(x) for x in (ft["root"] / "ft" / "train.jsonl").read_text().splitlines()]
    recs[2]["turns"][0][1] = "{<10><20><120><40>}"
    (bad / "train.jsonl").write_text("".join(json.dumps({**r, "image": str((ft["root"] / "ft" / r["image"]))}) + "\n"
                                             for r in recs))
    (bad / "mixture.json").write_text(json.dumps([{"kind": "jsonl", "path": "train.jsonl", "ratio": 1}]))
    out = tmp_path / "run"
    with pytest.raises(MiniGPTv2Error) as e:
        run({**ft, "mix": bad / "mixture.json"}, out)
    msg = str(e.value)
    assert msg.startswith("the training data has 1 problem(s):\n") and f"{bad / 'train.jsonl'}#2 (line 3): box " \
        "{<10><20><120><40>} is off the 0..100 grid" in msg and "--skip-data-check" in msg
    assert not out.exists()
    assert "source       kind   ratio  records" in capsys.readouterr().out      # the table was shown
    run({**ft, "mix": bad / "mixture.json"}, out, "--skip-data-check", steps=1)
    assert "data check skipped (--skip-data-check)" in capsys.readouterr().out and (out / "final").is_dir()


# ---- 5. progress: the bar, the loss curve, the eval table, --resume -----------------------------------------------
def test_progress_curve_eval_table_and_resume(ft, tmp_path, capsys):
    out = tmp_path / "run"
    orig = train_cli.train
    train_cli.train = lambda *a, **k: orig(*a, **k, stop_after=3)
    try:
        run(ft, out, "--save-every", "3", steps=6)                  # "killed" after the checkpoint at step 3
    finally:
        train_cli.train = orig
    assert not (out / "final").exists()
    run(ft, out, "--save-every", "3", "--resume", "--eval-data", str(ft["test"]), "--progress", steps=6)
    cap = capsys.readouterr()
    assert f"resuming from step 3 of 6 ({out / 'checkpoint'})" in cap.out
    bar = cap.err.replace("\r", "\n").splitlines()
    assert any(re.search(r"6/6 \[\d\d:\d\d<\d\d:\d\d, .*loss=\d+\.\d{4}, lr=\d\.\d\de-\d\d, samples/s=\d+\.\d\]", b)
               for b in bar), cap.err[-2000:]
    assert (out / "loss.png").stat().st_size > 1000
    m = json.loads((out / "eval" / "metrics.json").read_text())["benches"]["jsonl"]
    assert set(m["n"]) == {"refer", "identify"} and 0 <= m["refer_acc"] <= 1
    report = (out / "eval" / "report.md").read_text()
    assert "| refer |" in report and "| identify |" in report and "| refer |" in cap.out
    rows = (out / "eval" / "predictions" / "jsonl.jsonl").read_text().splitlines()
    assert len(rows) == sum(m["n"].values())
