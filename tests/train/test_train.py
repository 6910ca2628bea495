"""The training loop (minigptv2/train/loop.py) through its CLI entry, on the tiny preset and a small synthetic set.

Most comparisons are against one uninterrupted single-process reference run (`ref`, fp32, 8 steps, global
batch 4, a checkpoint every 3 steps) on a mixture where half the samples are text-only, so that some
micro-batches carry no image (the case that used to break DDP / FSDP).
"""
import contextlib
import dataclasses
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import ROOT
from helpers import tiny_tokenizer
from minigptv2 import checkpoint as ckpt
from minigptv2 import cli
from minigptv2.train import loop as T
from minigptv2.config import preset
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.data.datasets import load_mixture
from minigptv2.errors import MiniGPTv2Error
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import Tokenizer
from minigptv2.synthetic import write_synthetic

STEPS, BATCH, EVERY = 8, 4, 3
CKPT_FILES = {"config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
              "tokenizer.model", "tokenizer_config.json", "lora", "train_state.json", "optimizer.safetensors",
              "rng.safetensors"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the children: on a busy 2-core machine, two spinning OpenMP threads
    make these tiny steps 3–10x slower. (Also makes the in-process and subprocess runs do the same math.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    tok = tiny_tokenizer(d)
    synth = write_synthetic(d / "synth", n=8, seed=0)
    mix = [{"kind": "coco_caption", "path": "coco_caption.json", "ratio": 1},
           {"kind": "refcoco", "path": "refcoco.json", "ratio": 1},
           {"kind": "vqa", "path": "vqa.json", "ratio": 1},
           {"kind": "unnatural_instruction", "path": "unnatural_instruction.json", "ratio": 3}]
    (synth / "mix.json").write_text(json.dumps(mix))
    return {"root": d, "tok": tok, "synth": synth, "mix": synth / "mix.json"}


def args(data, out, *extra, steps=STEPS, batch=BATCH, every=EVERY, mix=None, progress=False) -> list[str]:
    return ["--preset", "tiny", "--tokenizer", str(data["tok"]), "--stage", "3", "--data", str(mix or data["mix"]),
            "--out", str(out), "--steps", str(steps), "--batch-size", str(batch), "--save-every", str(every),
            "--lr", "3e-3", "--warmup-steps", "2", "--precision", "fp32", *([] if progress else ["--no-progress"]),
            *extra]


def run_main(argv, stop_after=None) -> None:
    """train.main in this process; `stop_after` ends the run there (as if it were killed after a checkpoint)."""
    orig = T.train
    if stop_after is not None:
        T.train = functools.partial(orig, stop_after=stop_after)
    try:
        assert T.main(argv) == 0
    finally:
        T.train = orig


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[float]:
    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def weights(folder: Path) -> dict:
    """Every tensor of a saved model folder: base weights and the LoRA adapter (lora/) when there is one."""
    w = load_file(str(folder / "model.safetensors"))
    if (folder / "lora" / "adapter_model.safetensors").is_file():
        w.update({"lora/" + k: v for k, v in load_file(str(folder / "lora" / "adapter_model.safetensors")).items()})
    return w


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if atol == 0:
            assert torch.equal(wa[k], wb[k]), k
        else:
            torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
             HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return e


@pytest.fixture(scope="module")
def ref(data):
    """The uninterrupted single-process run everything else is compared with."""
    out = data["root"] / "ref"
    run_main(args(data, out))
    return out


# ---- 1. end to end ---------------------------------------------------------------------------------------
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
    mix = T.Mixture(load_mixture(data["synth"] / "mixture.json"), seed=42)
    batch = T.make_batch(proc, [mix.draw(s, j) for s in range(5) for j in range(4)], chat_template=True)
    with torch.no_grad():
        (s0, n), (s1, _) = (T.loss_sum(m, batch, torch.float32) for m in (initial, final))
    assert s1 / n < s0 / n - 0.15, (s0 / n, s1 / n)

    # only the parts stage 3 trains changed: projector and LoRA; ViT, ln_vision and the base LLM bit-identical
    before, after = initial.state_dict(), final.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    lora = {k for k in before if "lora_" in k}
    assert len(lora) == 8 and changed == lora | {"llama_proj.weight", "llama_proj.bias"}


# ---- 2. resume ----------------------------------------------------------------------------------------------
def test_resume_replays_exactly(data, ref, tmp_path):
    out = tmp_path / "run"
    run_main(args(data, out), stop_after=5)          # checkpoint at 3; steps 4–5 are logged but not saved
    assert len(log_rows(out)) == 5 and json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == 3
    assert not (out / "final").exists()
    run_main(args(data, out, "--resume"))
    assert losses(out) == losses(ref)
    assert_same_weights(out / "final", ref / "final")


@contextlib.contextmanager
def vit_calls():
    """Records the batch size of every call of the vision tower (MiniGPTv2.vision_features) inside the block."""
    calls = []
    orig = MiniGPTv2ForConditionalGeneration.vision_features

    def counted(self, pixel_values):
        calls.append(pixel_values.shape[0])
        return orig(self, pixel_values)

    MiniGPTv2ForConditionalGeneration.vision_features = counted
    try:
        yield calls
    finally:
        MiniGPTv2ForConditionalGeneration.vision_features = orig


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cache_vision_is_exact(data, ref, tmp_path, precision):
    """The frozen-ViT cache changes nothing: the same losses and final weights, bit for bit, as recomputing."""
    if precision == "fp32":
        plain = ref
    else:
        plain = tmp_path / "plain"
        run_main(args(data, plain, "--precision", precision))
    out = tmp_path / "cached"
    with vit_calls() as calls:
        run_main(args(data, out, "--cache-vision", "--precision", precision))
    assert losses(out) == losses(plain)
    assert_same_weights(out / "final", plain / "final")
    assert 0 < sum(calls) <= 8                   # each of the 8 scene images went through the ViT at most once


def test_vision_cache_refuses_a_trainable_vit_and_fsdp(data, tmp_path):
    with pytest.raises(MiniGPTv2Error, match="cache_vision needs a frozen ViT"):
        run_main(args(data, tmp_path / "a", "--cache-vision", "--trainable",
                      '{"vit": "full", "projector": "full", "llm": "lora"}'))
    with pytest.raises(MiniGPTv2Error, match="does not work with --fsdp"):
        run_main(args(data, tmp_path / "b", "--cache-vision", "--fsdp"))


def test_vision_cache_carries_over_between_stages(data, tmp_path):
    """nano.run hands one cache from stage to stage: the second stage sends no image through the ViT again and
    ends bit-identical to the same stage with a cache of its own; a cache made for another model is refused."""
    from minigptv2.processor import build_processor

    cfg = preset("tiny")
    cfg.text_config.vocab_size = len(Tokenizer(data["tok"]))
    tc = T.TrainConfig(steps=3, batch_size=4, lr=3e-3, min_lr=1e-4, warmup_lr=1e-4, warmup_steps=1, seed=1,
                       precision="fp32", save_every=10**6, cache_vision=True)
    mix = load_mixture(data["mix"])

    def two_stages(shared: bool):
        torch.manual_seed(0)
        model = MiniGPTv2ForConditionalGeneration(cfg)
        proc = build_processor(Tokenizer(data["tok"]), cfg)
        cache = T.VisionCache(model, proc, torch.float32, torch.device("cpu")) if shared else None
        T.train(model, proc, T.Mixture(mix, 1), tc, tmp_path / f"{shared}1", progress=False, cache=cache)
        seen = len(cache.store) if shared else 0
        with vit_calls() as calls:
            T.train(model, proc, T.Mixture(mix, 2), tc, tmp_path / f"{shared}2", progress=False, cache=cache)
        return model, proc, seen, sum(calls), len(cache.store) if shared else 0

    own, _, _, own_calls, _ = two_stages(shared=False)
    shared, proc, seen, shared_calls, total = two_stages(shared=True)
    # only the images stage 1 had not drawn go through the ViT in stage 2, and stage 1 drew some of stage 2's
    assert seen > 0 and shared_calls == total - seen < own_calls
    assert losses(tmp_path / "True2") == losses(tmp_path / "False2")
    assert_same_weights(tmp_path / "True2" / "final", tmp_path / "False2" / "final")
    other = T.VisionCache(MiniGPTv2ForConditionalGeneration(cfg), proc, torch.float32, torch.device("cpu"))
    with pytest.raises(MiniGPTv2Error, match="made for another model"):
        T.train(shared, proc, T.Mixture(mix, 3), tc, tmp_path / "x", progress=False, cache=other)


# ---- 3. crash safety ----------------------------------------------------------------------------------------
CHILD = """
import os, signal, sys, time
import minigptv2.train.loop as T
mode, n = sys.argv[1], int(sys.argv[2])
if mode == "step":        # block at the start of step n, then wait for the parent's SIGKILL
    orig = T.lr_at
    def lr_at(step, c):
        if step == n:
            print("READY", flush=True)
            time.sleep(600)
        return orig(step, c)
    T.lr_at = lr_at
else:                     # SIGKILL ourselves in the middle of the n-th checkpoint save (rng file not written yet)
    calls = []
    orig = T.save_file
    def save_file(tensors, path, *a, **k):
        if path.endswith("rng.safetensors"):
            calls.append(path)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return orig(tensors, path, *a, **k)
    T.save_file = save_file
sys.exit(T.main(sys.argv[3:]))
"""


def _popen(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _finish(p: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a child (and its process group); returns its stderr."""
    try:
        return p.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return p.communicate()[1] + "\n(timed out)"


def read_until_ready(p, timeout: float = 120) -> str:
    """The child prints the data check's table and the schedule before READY: read the pipe itself (no buffer that
    select cannot see) until READY. Returns "READY", or the end of what was read."""
    fd, seen, deadline = p.stdout.fileno(), b"", time.monotonic() + timeout
    while b"READY\n" not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            seen += chunk
    return "READY" if b"READY\n" in seen else seen.decode(errors="replace")[-300:]


@pytest.fixture(scope="module")
def killed(data):
    """Two training children started together (they are mostly interpreter start-up): `between` is
    SIGKILLed by us while blocked in step 6 (steps 1–5 done, checkpoint at 3); `in_save` SIGKILLs itself
    inside the checkpoint save of step 6 (model file written, rng file not yet)."""
    runs = {name: data["root"] / f"killed-{name}" for name in ("between", "in_save")}
    ps = {"between": _popen([sys.executable, "-c", CHILD, "step", "5", *args(data, runs["between"])]),
          "in_save": _popen([sys.executable, "-c", CHILD, "save", "2", *args(data, runs["in_save"])])}
    ready = read_until_ready(ps["between"])
    if ready == "READY":
        ps["between"].send_signal(signal.SIGKILL)
    errs = {name: _finish(p, 120) for name, p in ps.items()}
    assert ready == "READY", errs["between"][-3000:]
    for name, p in ps.items():
        assert p.returncode == -signal.SIGKILL, errs[name][-3000:]
    return runs


def test_sigkill_between_checkpoints_then_resume(data, ref, killed):
    out = killed["between"]
    assert len(log_rows(out)) == 5
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == 3
    run_main(args(data, out, "--resume"))
    assert losses(out) == pytest.approx(losses(ref), abs=1e-6)
    assert_same_weights(out / "final", ref / "final", atol=1e-6)


def test_sigkill_during_save_leaves_previous_checkpoint(data, ref, killed):
    out = killed["in_save"]
    assert len(log_rows(out)) == 6
    d = out / "checkpoint"
    assert {f.name for f in d.iterdir()} == CKPT_FILES           # the old one, whole
    assert json.loads((d / "train_state.json").read_text())["step"] == 3
    ckpt.load(d)
    assert [x for x in out.iterdir() if x.name.startswith(".checkpoint.tmp")]   # the half-written new one
    run_main(args(data, out, "--resume"))
    assert [x.name for x in out.iterdir() if x.name.startswith(".")] == []      # tidied on resume
    assert losses(out) == pytest.approx(losses(ref), abs=1e-6)
    assert_same_weights(out / "final", ref / "final", atol=1e-6)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_checkpoint_is_never_partial(data, tmp_path, monkeypatch, exchange):
    """Check the checkpoint folder before and after every file operation of every save (= a kill at that
    point): it is always a complete checkpoint of a step that was saved (with the two-rename fallback, the
    moment between the renames is closed by checkpoint.recover)."""
    if not exchange:
        monkeypatch.setattr(ckpt, "_exchange", lambda a, b: False)
    else:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        if not ckpt._exchange(tmp_path / "a", tmp_path / "b"):
            pytest.skip("no renameat2(RENAME_EXCHANGE) here; the two-rename case covers the fallback")
    out = tmp_path / "run"
    d = out / "checkpoint"
    saved: list[int] = []

    def complete(folder: Path) -> int:
        assert {f.name for f in folder.iterdir()} == CKPT_FILES
        json.loads((folder / "config.json").read_text())
        for f in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
            load_file(str(folder / f))
        return json.loads((folder / "train_state.json").read_text())["step"]

    def check():
        if d.exists():
            step = complete(d)
        else:
            olds = [o / "x" for o in out.glob(".checkpoint.old*") if (o / "x").is_dir()]
            if not olds:
                assert not saved, "the checkpoint disappeared"
                return
            assert not exchange and len(olds) == 1
            step = complete(olds[0])
        assert step in saved or step == (saved[-1] + 1 if saved else 1), (step, saved)
        if not saved or step != saved[-1]:
            saved.append(step)

    def watched(fn):
        def f(*a, **k):
            check()
            r = fn(*a, **k)
            check()
            return r
        return f

    from minigptv2 import model as M

    for mod, name in [(M, "write_adapter"), (T, "save_file"), (ckpt, "_exchange"),
                      (ckpt, "_fsync_dir"), (ckpt.shutil, "rmtree"), (ckpt.shutil, "copyfile"), (ckpt.os, "replace")]:
        monkeypatch.setattr(mod, name, watched(getattr(mod, name)))
    run_main(args(data, out, steps=4, every=1))
    monkeypatch.undo()
    assert saved == [1, 2, 3, 4]
    assert complete(d) == 4


def test_resume_recovers_from_cut_fallback_swap(data, ref, tmp_path):
    """A save through the two-rename fallback killed between its renames: no checkpoint/, the old one in
    .checkpoint.oldXXXX/x, a complete or partial new one in .checkpoint.tmpXXXX. --resume puts the old back."""
    out = tmp_path / "run"
    run_main(args(data, out), stop_after=4)
    (out / ".checkpoint.old1234").mkdir()
    os.replace(out / "checkpoint", out / ".checkpoint.old1234" / "x")
    (out / ".checkpoint.tmp5678").mkdir()
    (out / ".checkpoint.tmp5678" / "model.safetensors").write_bytes(b"partial")
    run_main(args(data, out, "--resume"))
    assert [x.name for x in out.iterdir() if x.name.startswith(".")] == []
    assert losses(out) == losses(ref)


# ---- 4. scale-out: torchrun, 2 processes, gloo ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(argv) -> subprocess.Popen:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return _popen(cmd + ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                         "-m", "minigptv2.train.loop", *argv])


@pytest.fixture(scope="module")
def dist_runs(data):
    """`torchrun --nproc-per-node 2` (gloo) with DDP and with --fsdp, both launched at once."""
    runs = {name: data["root"] / name for name in ("ddp", "fsdp2")}
    ps = {name: _torchrun(args(data, out, *(["--fsdp"] if name == "fsdp2" else []))) for name, out in runs.items()}
    errs = {name: _finish(p) for name, p in ps.items()}
    return {name: (runs[name], p.returncode, errs[name]) for name, p in ps.items()}


def test_mixture_has_text_only_micro_batches(data):
    """The torchrun tests below only prove the text-only fix if some rank's micro-batch has no image."""
    mix = T.Mixture(load_mixture(data["mix"]), seed=42)
    half = BATCH // 2
    assert any(all(mix.draw(s, r * half + j).image is None for j in range(half))
               for s in range(STEPS) for r in range(2))


@pytest.mark.parametrize("name", ["ddp", "fsdp2"])
def test_torchrun_two_processes_match_single(data, ref, dist_runs, name):
    out, rc, err = dist_runs[name]
    assert rc == 0, err[-4000:]
    assert losses(out) == pytest.approx(losses(ref), abs=1e-5)
    assert_same_weights(out / "final", ref / "final", atol=1e-5)
    ckpt.load(out / "final")
    assert {p.name for p in (out / "checkpoint").iterdir()} == CKPT_FILES
    st = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert st["world"] == 2 and st["step"] == STEPS
    # checkpoints are process-count independent: this one (FQN-keyed optimizer state) resumes in one process
    run_main(args(data, out, "--resume"))
    assert_same_weights(out / "final", out / "checkpoint")


# ---- 5. options and errors ----------------------------------------------------------------------------------
def test_grad_accum_matches(data, ref, tmp_path):
    out = tmp_path / "run"
    run_main(args(data, out, "--grad-accum", "2"))
    assert losses(out) == pytest.approx(losses(ref), abs=1e-5)
    assert_same_weights(out / "final", ref / "final", atol=1e-5)


def test_micro_batches_group_similar_lengths(data, ref):
    model, proc = ckpt.load(ref / "final")
    mix = T.Mixture(load_mixture(data["synth"] / "mixture.json"), seed=3)
    samples = [mix.draw(0, j) for j in range(12)]
    whole = T.make_batch(proc, samples, chat_template=True)
    parts = T.make_batches(proc, samples, 3, chat_template=True)
    assert [b["input_ids"].shape[0] for b in parts] == [3, 3, 3, 3]
    lengths = [int(n) for b in parts for n in b["attention_mask"].sum(1)]
    assert lengths == sorted(int(n) for n in whole["attention_mask"].sum(1))     # every sample once, shortest first
    assert sum(b["input_ids"].numel() for b in parts) < whole["input_ids"].numel()   # less padding
    with torch.no_grad():
        s_whole, n_whole = T.loss_sum(model, whole, torch.float32)
        sums = [T.loss_sum(model, b, torch.float32) for b in parts]
    assert sum(n for _, n in sums) == n_whole
    assert float(sum(s for s, _ in sums)) == pytest.approx(float(s_whole), rel=1e-5)


def test_loss_per_sample_weighs_every_answer_the_same(data, ref, tmp_path):
    model, proc = ckpt.load(ref / "final")
    mix = T.Mixture(load_mixture(data["synth"] / "mixture.json"), seed=3)
    samples = [mix.draw(0, j) for j in range(8)]
    batch = T.make_batch(proc, samples, chat_template=True)
    with torch.no_grad():
        s, n = T.loss_sum(model, batch, torch.float32, per="sample")
        rows = [T.loss_sum(model, T.make_batch(proc, [x], chat_template=True), torch.float32) for x in samples]
        s_tok, n_tok = T.loss_sum(model, batch, torch.float32)
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
    mix = T.Mixture(load_mixture(data["mix"]), seed=0)
    tc = T.TrainConfig(steps=1, batch_size=2, lr=1e-3, min_lr=1e-4, warmup_lr=1e-4, warmup_steps=0,
                       precision="fp32", attention="eager")
    T.train(model, proc, mix, tc, tmp_path / "inproc", progress=False)
    assert model.language_model.config._attn_implementation == "sdpa"
    with pytest.raises(MiniGPTv2Error, match="attention must be 'sdpa' or 'eager', got 'flash'"):
        T.train(model, proc, mix, dataclasses.replace(tc, attention="flash"), tmp_path / "bad", progress=False)


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
        monkeypatch.setattr(T.Path, "read_text", lambda self, f=f: f"processor\t: 0\nflags\t\t: fpu {f}\n")
        assert T.native_bf16(torch.device("cpu")) is want, f
        assert T.resolve_precision("auto", torch.device("cpu")) == ("bf16" if want else "fp32")
    monkeypatch.undo()
    assert T.resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(MiniGPTv2Error, match="precision must be auto, fp32, bf16, fp16; got 'fp8'"):
        T.resolve_precision("fp8", torch.device("cpu"))
    monkeypatch.setattr(T, "native_bf16", lambda device: False)
    out = tmp_path / "run"
    run_main([a for a in args(data, out) if a not in ("--precision", "fp32")])
    assert "precision auto -> fp32" in capsys.readouterr().out
    assert losses(out) == losses(ref)            # the fp32 reference, bit for bit
    st = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert st["train_config"]["precision"] == "fp32"
    assert T.STAGES[3].precision == "auto"


def test_errors_are_clear(data, tmp_path, capsys):
    with pytest.raises(MiniGPTv2Error, match=r"batch size 6 is not divisible by processes \(1\) × grad accum"):
        T.main(args(data, tmp_path / "a", "--grad-accum", "4", batch=6))
    with pytest.raises(MiniGPTv2Error, match="no-such/mixture.json"):
        T.main(args(data, tmp_path / "b", mix=tmp_path / "no-such" / "mixture.json"))
    with pytest.raises(MiniGPTv2Error, match="--resume: no checkpoint in .*c/checkpoint"):
        T.main(args(data, tmp_path / "c", "--resume"))
    # the `minigptv2 train` command prints the message instead of a traceback
    assert cli.main(["train", *args(data, tmp_path / "d", mix=tmp_path / "no-such.json")]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "no-such.json" in err and "Traceback" not in err

    jl = tmp_path / "ds" / "data.jsonl"
    jl.parent.mkdir()
    jl.write_text(json.dumps({"image": "img/missing.png", "task": "caption", "turns": [["describe", "a circle"]]}))
    (tmp_path / "ds" / "mix.json").write_text(json.dumps([{"kind": "jsonl", "path": "data.jsonl", "ratio": 1}]))
    with pytest.raises(MiniGPTv2Error) as e:
        T.main(args(data, tmp_path / "e", mix=tmp_path / "ds" / "mix.json"))
    assert f"{jl}#0" in str(e.value) and str(tmp_path / "ds" / "img" / "missing.png") in str(e.value)
