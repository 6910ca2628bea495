"""Training under torchrun (minigptv2/train/distributed.py): 2 processes (gloo) under DDP and FSDP2 train what one
process trains.
"""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from minigptv2 import checkpoint as ckpt
from train_helpers import (CKPT_FILES, STEPS, args, assert_same_weights, data, finish, losses,  # noqa: F401
                          one_thread, popen, ref, run_main)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(argv) -> subprocess.Popen:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return popen(cmd + ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                        "-m", "minigptv2.train.cli", *argv])


@pytest.fixture(scope="module")
def dist_runs(data):
    """`torchrun --nproc-per-node 2` (gloo) with DDP and with --fsdp, both launched at once."""
    runs = {name: data["root"] / name for name in ("ddp", "fsdp2")}
    ps = {name: _torchrun(args(data, out, *(["--fsdp"] if name == "fsdp2" else []))) for name, out in runs.items()}
    errs = {name: finish(p) for name, p in ps.items()}
    return {name: (runs[name], p.returncode, errs[name]) for name, p in ps.items()}


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

