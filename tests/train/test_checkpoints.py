"""Checkpoints and --resume (minigptv2/train/checkpoints.py): a resumed run replays the uninterrupted one exactly,
and a kill at any moment (between checkpoints, inside a save, between the renames of the fallback swap) leaves a
complete checkpoint to resume from (SECURITY.md §2). Damaged checkpoint files: test_resume_errors.py; random
states: test_resume_rng.py.
"""
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minigptv2 import atomic
from minigptv2 import checkpoint as ckpt
from minigptv2.train import checkpoints
from train_helpers import (CHILD, CKPT_FILES, args, assert_same_weights, data, finish, log_rows, losses,  # noqa: F401
                          one_thread, popen, read_until_ready, ref, run_main)


def test_resume_replays_exactly(data, ref, tmp_path):
    out = tmp_path / "run"
    run_main(args(data, out), stop_after=5)          # checkpoint at 3; steps 4–5 are logged but not saved
    assert len(log_rows(out)) == 5 and json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == 3
    assert not (out / "final").exists()
    run_main(args(data, out, "--resume"))
    assert losses(out) == losses(ref)
    assert_same_weights(out / "final", ref / "final")


@pytest.fixture(scope="module")
def killed(data):
    """Two training children started together (they are mostly interpreter start-up): `between` is
    SIGKILLed by us while blocked in step 6 (steps 1–5 done, checkpoint at 3); `in_save` SIGKILLs itself
    inside the checkpoint save of step 6 (model file written, rng file not yet)."""
    runs = {name: data["root"] / f"killed-{name}" for name in ("between", "in_save")}
    ps = {"between": popen([sys.executable, "-c", CHILD, "step", "5", *args(data, runs["between"])]),
          "in_save": popen([sys.executable, "-c", CHILD, "save", "2", *args(data, runs["in_save"])])}
    ready = read_until_ready(ps["between"])
    if ready == "READY":
        ps["between"].send_signal(signal.SIGKILL)
    errs = {name: finish(p, 120) for name, p in ps.items()}
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
    moment between the renames is closed by atomic.recover)."""
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    else:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        if not atomic._exchange(tmp_path / "a", tmp_path / "b"):
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

    for mod, name in [(M, "write_adapter"), (checkpoints, "save_file"), (atomic, "_exchange"),
                      (atomic, "_fsync_dir"), (atomic.shutil, "rmtree"), (atomic.shutil, "copyfile"), (atomic.os, "replace")]:
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
