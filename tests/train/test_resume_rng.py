"""`--resume` restores every random state: a run whose steps draw random numbers (LoRA dropout 0.2, so every
training step draws dropout masks from torch's CPU generator; samples drawn at random from the mixture) continues
after an interruption bit for bit as the uninterrupted run. The tiny preset's own LoRA has dropout 0 and draws
nothing, so the resume tests of test_checkpoints.py cannot see a random state that is not restored.

Uses the data, the run helpers and the kill machinery of train_helpers.py.
"""
import json
import signal
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigptv2 import checkpoint as ckpt
from minigptv2.config import preset
from minigptv2.model import MiniGPTv2ForConditionalGeneration
from minigptv2.processor import Tokenizer
from train_helpers import (CHILD, assert_same_weights, data, finish, log_rows, losses, one_thread,  # noqa: F401
                           popen, read_until_ready, run_main)

STEPS, BATCH, EVERY = 8, 4, 3
DROPOUT = 0.2


@pytest.fixture(scope="module")
def init(data):
    """A tiny model folder whose config asks for LoRA with dropout (attached by the trainer, stage 3)."""
    cfg = preset("tiny")
    cfg.text_config.vocab_size = len(Tokenizer(data["tok"]))
    cfg.lora = {**cfg.lora, "dropout": DROPOUT}
    torch.manual_seed(0)
    return ckpt.save(MiniGPTv2ForConditionalGeneration(cfg), data["tok"], data["root"] / "init_dropout")


def dargs(data, init, out, *extra) -> list[str]:
    return ["--init", str(init), "--stage", "3", "--data", str(data["mix"]), "--out", str(out), "--steps",
            str(STEPS), "--batch-size", str(BATCH), "--save-every", str(EVERY), "--lr", "3e-3", "--warmup-steps", "2",
            "--precision", "fp32", "--no-progress", *extra]


@pytest.fixture(scope="module")
def dref(data, init):
    out = data["root"] / "dropout-ref"
    run_main(dargs(data, init, out))
    return out


def test_the_run_draws_random_numbers(data, init, dref, tmp_path):
    """Guards the tests below: with the checkpoint's random state swapped for another, the resumed run differs
    (so they would see a state that is not restored). The trainer attached the LoRA with the dropout asked for."""
    final, _ = ckpt.load(dref / "final", merge_lora=False)
    assert final.config.lora["dropout"] == DROPOUT
    out = tmp_path / "run"
    run_main(dargs(data, init, out), stop_after=EVERY)
    rng = out / "checkpoint" / "rng.safetensors"
    state = load_file(str(rng))
    g = torch.Generator().manual_seed(12345)
    save_file({**state, "torch_rng.0": g.get_state()}, str(rng))
    run_main(dargs(data, init, out, "--resume"))
    got, want = losses(out), losses(dref)
    assert got[:EVERY] == want[:EVERY] and got[EVERY:] != want[EVERY:]


def test_resume_in_process_is_bit_identical(data, init, dref, tmp_path):
    out = tmp_path / "run"
    run_main(dargs(data, init, out), stop_after=5)        # checkpoint at 3; steps 4-5 logged, not saved
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == 3
    run_main(dargs(data, init, out, "--resume"))
    assert losses(out) == losses(dref)
    assert_same_weights(out / "final", dref / "final")
    assert_same_weights(out / "checkpoint", dref / "checkpoint")


def test_sigkill_then_resume_is_bit_identical(data, init, dref):
    """A training process SIGKILLed while in step 6 (checkpoint at 3), resumed by a new process."""
    out = data["root"] / "dropout-killed"
    p = popen([sys.executable, "-c", CHILD, "step", "5", *dargs(data, init, out)])
    ready = read_until_ready(p)
    if ready == "READY":
        p.send_signal(signal.SIGKILL)
    err = finish(p, 120)
    assert ready == "READY" and p.returncode == -signal.SIGKILL, err[-3000:]
    assert len(log_rows(out)) == 5
    run_main(dargs(data, init, out, "--resume"))
    assert losses(out) == losses(dref)
    assert_same_weights(out / "final", dref / "final")
