"""The training loop (minigptv2/train/loop.py) through `minigptv2 train` (minigptv2/train/cli.py), on the tiny
preset and a small synthetic set: it learns what it should and nothing else, and its options (accumulation, loss
per sample, attention kernel, precision) train the same function. Most comparisons are against the uninterrupted
single-process reference run `ref` of train_helpers.py.
"""
import dataclasses
import json

import pytest
import torch
from PIL import Image

from minigptv2 import checkpoint as ckpt
from minigptv2 import cli
from minigptv2.config import preset
from minigptv2.data.datasets import load_mixture
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import IGNORE, Tokenizer
from minigptv2.train import cli as train_cli
from minigptv2.train import config
from minigptv2.train.batches import Mixture, make_batch
from minigptv2.train.config import STAGES, TrainConfig, resolve_precision
from minigptv2.train.loop import loss_sum, train
from train_helpers import (CKPT_FILES, STEPS, args, assert_same_weights, data, log_rows, losses,  # noqa: F401
                           one_thread, ref, run_main)


def test_end_to_end_cli_stage3_tiny(data, tmp_path, capsys):
    out = tmp_path / "run"
    run_main(args(data, out, "--lr", "1e-2", "--warmup-steps", "0", steps=30, batch=4, every=10,
                  mix=data["synth"] / "mixture.json", progress=True))
    err = capsys.readouterr().err
    assert "30/30" in err and "loss=" in err                              # tqdm progress bar

    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all({"loss", "lr", "samples_per_s"} <= set(r) and r["samples_per_s"] > 0 for r in rows)
    first, last = [r["loss"] for r in rows[:5]], [r["loss"] for r in rows[-5:]]
    assert sum(last) / 5 < sum(first) / 5 - 0.05, (first, last)   # LoRA r=8 on a frozen random LLM: small steps
    with Image.open(out / "loss.png") as im:
        assert im.format == "PNG" and im.size[0] > 100

    assert {p.name for p in (out / "checkpoint").iterdir()} == CKPT_FILES
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == 30
    ckpt.load(out / "checkpoint")
    final, proc = ckpt.load(out / "final", merge_lora=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []   # no temp folders left

    cfg = preset("tiny")
    cfg.text_config.vocab_size = len(Tokenizer(data["tok"]))
    torch.manual_seed(42)                                       # what main() does before building the model
    initial = MiniGPTv2ForConditionalGeneration(cfg)
    initial.set_trainable(cfg.trainable)                        # the LoRA train() attaches

    # the objective on a fixed set of 20 samples (the first 5 steps' draws) went clearly down
    mix = Mixture(load_mixture(data["synth"] / "mixture.json"), seed=42)
    batch = make_batch(proc, [mix.draw(s, j) for s in range(5) for j in range(4)], chat_template=True)
    with torch.no_grad():
        (s0, n), (s1, _) = (loss_sum(m, batch, torch.float32) for m in (initial, final))
    assert s1 / n < s0 / n - 0.15, (s0 / n, s1 / n)

    # only the parts stage 3 trains changed: projector and LoRA; ViT, ln_vision and the base LLM bit-identical
    before, after = initial.state_dict(), final.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    lora = {k for k in before if "lora_" in k}
    assert len(lora) == 8 and changed == lora | {"llama_proj.weight", "llama_proj.bias"}


def test_grad_accum_matches(data, ref, tmp_path):
    out = tmp_path / "run"
    run_main(args(data, out, "--grad-accum", "2"))
    assert losses(out) == pytest.approx(losses(ref), abs=1e-5)
    assert_same_weights(out / "final", ref / "final", atol=1e-5)


def test_loss_per_sample_weighs_every_answer_the_same(data, ref, tmp_path):
    model, proc = ckpt.load(ref / "final")
    mix = Mixture(load_mixture(data["synth"] / "mixture.json"), seed=3)
    samples = [mix.draw(0, j) for j in range(8)]
    batch = make_batch(proc, samples, chat_template=True)
    with torch.no_grad():
        s, n = loss_sum(model, batch, torch.float32, per="sample")
        rows = [loss_sum(model, make_batch(proc, [x], chat_template=True), torch.float32) for x in samples]
        s_tok, n_tok = loss_sum(model, batch, torch.float32)
    assert n == 8 and n_tok == sum(k for _, k in rows) > 8
    assert float(s) == pytest.approx(sum(float(r) / k for r, k in rows), rel=1e-5)     # mean of the row means
    assert float(s) / n != pytest.approx(float(s_tok) / n_tok, rel=1e-3)               # not the token mean

    # the trainer divides by the global number of samples: accumulation in 2 micro-batches = one batch
    a, b = tmp_path / "a", tmp_path / "b"
    run_main(args(data, a, "--loss-per", "sample"))
    run_main(args(data, b, "--loss-per", "sample", "--grad-accum", "2"))
    assert losses(a) == pytest.approx(losses(b), abs=1e-5) and losses(a) != losses(ref)
    assert_same_weights(a / "final", b / "final", atol=1e-5)


def test_eager_attention_trains_the_same_function(data, ref, tmp_path):
    """--attention eager (nano's recipe) computes what sdpa computes: the same losses and weights up to rounding,
    and train() hands the model back with the attention it had."""
    out = tmp_path / "run"
    run_main(args(data, out, "--attention", "eager"))
    assert losses(out) == pytest.approx(losses(ref), abs=1e-5)
    assert_same_weights(out / "final", ref / "final", atol=1e-5)
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["train_config"]["attention"] == "eager"
    model, proc = ckpt.load(ref / "final")
    mix = Mixture(load_mixture(data["mix"]), seed=0)
    tc = TrainConfig(steps=1, batch_size=2, lr=1e-3, min_lr=1e-4, warmup_lr=1e-4, warmup_steps=0,
                       precision="fp32", attention="eager")
    train(model, proc, mix, tc, tmp_path / "inproc", progress=False)
    assert model.language_model.config._attn_implementation == "sdpa"
    with pytest.raises(MiniGPTv2Error, match="attention must be 'sdpa' or 'eager', got 'flash'"):
        train(model, proc, mix, dataclasses.replace(tc, attention="flash"), tmp_path / "bad", progress=False)


def test_bf16_runs_close_to_fp32(data, ref, tmp_path):
    out = tmp_path / "run"
    run_main(args(data, out, "--precision", "bf16", steps=STEPS))
    got, want = losses(out), losses(ref)
    assert all(abs(a - b) < 0.05 for a, b in zip(got, want)), (got, want)
    ckpt.load(out / "final")


def test_precision_auto_takes_bf16_only_where_it_is_native(data, ref, tmp_path, monkeypatch, capsys):
    """bf16 on a CPU without it in hardware is emulated (~10x slower than fp32 here, docs/nano.md), so the default
    "auto" trains in fp32 there, and the checkpoint records the precision that was used."""
    flags = {"avx2 fma": False, "avx2 avx512f avx512_bf16": True, "avx512f amx_bf16 amx_tile": True}
    for f, want in flags.items():
        monkeypatch.setattr(config.Path, "read_text", lambda self, f=f: f"processor\t: 0\nflags\t\t: fpu {f}\n")
        assert config.native_bf16(torch.device("cpu")) is want, f
        assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if want else "fp32")
    monkeypatch.undo()
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(MiniGPTv2Error, match="precision must be auto, fp32, bf16, fp16; got 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))
    monkeypatch.setattr(config, "native_bf16", lambda device: False)
    out = tmp_path / "run"
    run_main([a for a in args(data, out) if a not in ("--precision", "fp32")])
    assert "precision auto -> fp32" in capsys.readouterr().out
    assert losses(out) == losses(ref)            # the fp32 reference, bit for bit
    st = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert st["train_config"]["precision"] == "fp32"
    assert STAGES[3].precision == "auto"


def test_errors_are_clear(data, tmp_path, capsys):
    with pytest.raises(MiniGPTv2Error, match=r"batch size 6 is not divisible by processes \(1\) × grad accum"):
        train_cli.main(args(data, tmp_path / "a", "--grad-accum", "4", batch=6))
    with pytest.raises(MiniGPTv2Error, match="no-such/mixture.json"):
        train_cli.main(args(data, tmp_path / "b", mix=tmp_path / "no-such" / "mixture.json"))
    with pytest.raises(MiniGPTv2Error, match="--resume: no checkpoint in .*c/checkpoint"):
        train_cli.main(args(data, tmp_path / "c", "--resume"))
    # the `minigptv2 train` command prints the message instead of a traceback
    assert cli.main(["train", *args(data, tmp_path / "d", mix=tmp_path / "no-such.json")]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "no-such.json" in err and "Traceback" not in err

    jl = tmp_path / "ds" / "data.jsonl"
    jl.parent.mkdir()
    jl.write_text(json.dumps({"image": "img/missing.png", "task": "caption", "turns": [["describe", "a circle"]]}))
    (tmp_path / "ds" / "mix.json").write_text(json.dumps([{"kind": "jsonl", "path": "data.jsonl", "ratio": 1}]))
    with pytest.raises(MiniGPTv2Error) as e:
        train_cli.main(args(data, tmp_path / "e", mix=tmp_path / "ds" / "mix.json"))
    assert f"{jl}#0" in str(e.value) and str(tmp_path / "ds" / "img" / "missing.png") in str(e.value)


def test_every_argument_has_help():
    p = train_cli.parser()
    assert [a.option_strings for a in p._actions if not a.help] == []
    assert p.parse_args(["--data", "m.json", "--out", "o", "--dtype", "bf16"]).precision == "bf16"   # = --precision


def test_inference_form_share_renders_that_share_of_samples_as_the_inference_prompt(data, ref, tmp_path,
                                                                                    monkeypatch):
    """TrainConfig.inference_form: per sample, drawn from (seed, step, index), the official inference form
    (prompts.render_training as_inference) instead of the training form; 0 draws nothing (the reference run)."""
    from minigptv2.train import loop

    model, proc = ckpt.load(ref / "final")
    assert proc.config.prompt_form == "official"
    s = Mixture(load_mixture(data["mix"]), seed=0).draw(0, 0)
    ex = proc.training_example(s.turns, image=s.image, as_inference=True)
    prompt = proc.prompt_ids([s.turns[0][0]], [])
    assert ex["input_ids"][:len(prompt)] == prompt and ex["input_ids"][:2] == [proc.tok.bos_id] * 2
    assert all(lab == IGNORE for lab in ex["labels"][:len(prompt)]) and ex["labels"][len(prompt)] != IGNORE
    assert proc.training_example(s.turns, image=s.image)["input_ids"][:2] != [proc.tok.bos_id] * 2

    seen, double_bos = [], []
    real = loop.make_batches

    def recording(*a):
        seen.append(a[-1])
        out = real(*a)
        double_bos.append(sum(int((b["input_ids"][:, :2] == proc.tok.bos_id).all(1).sum()) for b in out))
        return out

    monkeypatch.setattr(loop, "make_batches", recording)
    mix = Mixture(load_mixture(data["mix"]), seed=0)
    tc = TrainConfig(steps=3, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_lr=1e-4, warmup_steps=0, precision="fp32",
                     inference_form=0.5)
    train(model, proc, mix, tc, tmp_path / "half", progress=False)
    flat = [f for step in seen for f in step]
    assert len(flat) == 24 and 0 < sum(flat) < 24
    assert double_bos == [sum(step) for step in seen]          # the drawn samples, and only they, were rendered so
    seen.clear()
    train(ckpt.load(ref / "final")[0], proc, mix, tc, tmp_path / "again", progress=False)
    assert [f for step in seen for f in step] == flat          # the same draws: a function of (seed, step, index)
    seen.clear()
    train(model, proc, mix, dataclasses.replace(tc, inference_form=0.0), tmp_path / "none", progress=False)
    assert seen == [None] * 3
    with pytest.raises(MiniGPTv2Error, match=r"inference_form is a share in \[0, 1\], got 1.5"):
        train(model, proc, mix, dataclasses.replace(tc, inference_form=1.5), tmp_path / "bad", progress=False)
