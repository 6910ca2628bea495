"""Where training runs (minigptv2/train/distributed.py): `--device`, and torchrun with 2 processes (gloo) under
DDP and FSDP2, which must train what one process trains.
"""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigptv2 import checkpoint as ckpt
from minigptv2 import cli
from minigptv2.errors import MiniGPTv2Error
from minigptv2.train import cli as train_cli
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


def test_device_cpu_trains_there(data, ref, tmp_path, monkeypatch):
    """--device cpu: the model trains on the CPU; on a machine without CUDA (the default's cpu), the reference run
    bit for bit."""
    seen = []
    orig = train_cli.train

    def spy(model, *a, **k):
        out = orig(model, *a, **k)
        seen.append({p.device for p in model.parameters()})
        return out

    monkeypatch.setattr(train_cli, "train", spy)
    out = tmp_path / "run"
    assert train_cli.main(args(data, out, "--device", "cpu")) == 0
    assert seen == [{torch.device("cpu")}]
    if not torch.cuda.is_available():
        assert losses(out) == losses(ref)
        assert_same_weights(out / "final", ref / "final")


@pytest.mark.parametrize("device, message", [
    ("tpu9", "--device 'tpu9' is not a device; use cpu, cuda or cuda:N"),
    ("meta", "--device meta: training runs on cpu or cuda"),
    ("cuda:99", r"--device cuda:99: (CUDA is not available here; use --device cpu|this machine has \d+ GPU)"),
])
def test_a_bad_device_is_a_clear_error(data, tmp_path, capsys, device, message):
    """Refused before the data is read or a model is built: nothing is written; the command exits 2."""
    with pytest.raises(MiniGPTv2Error, match=message):
        train_cli.main(args(data, tmp_path / "a", "--device", device))
    assert cli.main(["train", *args(data, tmp_path / "b", "--device", device)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device ") and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
